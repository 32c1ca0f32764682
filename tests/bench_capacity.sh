#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
#
# bench_capacity.sh - how many messages a second one Redis sustains for
# policy-milter's rate limits (issue 11, item 4).  Prints numbers, asserts
# nothing.
#
# One private redis-server (unix socket); P processes of
# tests/bench_ratelimit -s (4 rate-limit policies per message, 3 recipients,
# the milter's own engine and store, no MTA) drive it together, for P = 1,
# 2, 4, ... until Redis's CPU stops growing.  Per run: messages a second
# over all processes, Redis's CPU (INFO cpu, user + sys) as a share of one
# core, and Redis CPU per message.  1 / (CPU per message) is what one Redis
# core sustains when it is the bottleneck: Redis runs commands on one
# thread, so that is the ceiling of one Redis, however many MTAs.
#
#   tests/bench_capacity.sh [MESSAGES-PER-PROCESS] [PROCESSES...]
#   (defaults: 4000; 1 2 4 8); top_builddir selects the build (default .)

set -u
builddir=${top_builddir:-.}
BENCH=$builddir/tests/bench_ratelimit
N=${1:-4000}
shift 2>/dev/null
PROCS=${*:-1 2 4 8}

[ -x "$BENCH" ] || { echo "build $BENCH first (make tests/bench_ratelimit)" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "no redis-server: skipped" >&2; exit 77; }

D=$(mktemp -d /tmp/pm-capacity.XXXXXX)
SOCK=$D/redis.sock
cleanup() {
	redis-cli -s "$SOCK" shutdown nosave >/dev/null 2>&1
	rm -rf "$D"
}
trap cleanup EXIT
redis-server --port 0 --unixsocket "$SOCK" --save '' --appendonly no \
	--daemonize yes --pidfile "$D/redis.pid" --dir "$D" --logfile "$D/redis.log" || exit 2
for _ in $(seq 100); do
	redis-cli -s "$SOCK" ping 2>/dev/null | grep -q PONG && break
	sleep 0.05
done

cpu() {  # Redis CPU seconds so far (user + sys, all its threads)
	redis-cli -s "$SOCK" info cpu | tr -d '\r' |
		awk -F: '$1 == "used_cpu_user" || $1 == "used_cpu_sys" { s += $2 } END { printf "%.6f\n", s }'
}
now() { date +%s.%N; }

echo "bench_capacity: Redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "per message: 3 recipients, 4 rate-limit policies (one script call per RCPT, one at end of message)"
printf '%6s %10s %12s %14s %18s\n' procs msgs/s redis-cpu redis-us/msg 'msgs/s-at-1-core'
for p in $PROCS; do
	c0=$(cpu)
	t0=$(now)
	pids=
	for i in $(seq "$p"); do
		"$BENCH" -s "$SOCK" -M -t 4 -n "$N" >"$D/bench.$p.$i.out" 2>&1 &
		pids="$pids $!"
	done
	fail=0
	for pid in $pids; do
		wait "$pid" || fail=1
	done
	t1=$(now)
	c1=$(cpu)
	[ "$fail" = 0 ] || { echo "a bench process failed:"; tail -n 5 "$D"/bench."$p".*.out; exit 1; }
	awk -v p="$p" -v n="$N" -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" 'BEGIN {
		m = p * n; wall = t1 - t0; cpu = c1 - c0
		printf "%6d %10.0f %11.0f%% %14.1f %18.0f\n", p, m / wall, 100 * cpu / wall,
		    1e6 * cpu / m, m / cpu }'
done
