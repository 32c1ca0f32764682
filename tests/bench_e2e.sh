#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
#
# bench_e2e.sh - the end-to-end benchmark (make bench-e2e): real SMTP
# through a private Postfix, with no milter, with a null milter and with
# policy-milter, in interleaved rounds.  Prints numbers, asserts nothing;
# exits non-zero only when the set-up fails or mail went missing.
#
# What runs: a private Redis (unix socket), a private Postfix (two smtpd
# listeners on 127.0.0.1: one with smtpd_milters, one without; mail is
# relayed to the discard: transport, and the queue, the log and every
# socket live in a directory on tmpfs, /dev/shm, so that the disk is not
# measured), and smtp-source, Postfix's load generator: SESSIONS sessions
# at a time, one message per session (a new SMTP and milter connection per
# message), RCPTS recipients (numbered: smtp-source -N), SIZE octets of
# body, MESSAGES messages per run.
#
# Configurations, per policy set P (tests/bench/P.conf; POLICIES lists them):
#   none      Postfix without a milter
#   null-P    tests/null_milter -c P.conf: libmilter, every callback
#             answers at once, negotiating exactly the stages and "no
#             reply" flags policy-milter negotiates for P.conf (the
#             stage-equivalent baseline; its flags are printed)
#   pm-P      policy-milter with P.conf
#   base-P    with BASE_DAEMON set: that binary (an older build) with P.conf
# Each round runs every configuration once, in an order rotated from round
# to round.  Per run: the milter (when there is one) is started afresh (so
# VmHWM is that run's peak), WARMUP messages are sent and not measured,
# Redis is emptied (FLUSHALL: no rate-limit count carries over; every limit
# is far above what is sent, so nothing is refused), then MESSAGES are sent
# and measured, and the queue is waited for until empty.
#
# Per configuration it prints the median over ROUNDS and [min-max] of:
#   msgs/s       MESSAGES / wall time of smtp-source
#   x null       the same round's msgs/s divided by null-P's (none: by the
#                first null-P's)
#   milter us/m  the milter process's CPU (user+sys, all its threads) per
#                message; x null as above
#   redis us/m   Redis's CPU per message (INFO cpu: used_cpu_user+sys)
#   mta us/m     Postfix's CPU per message (master and every child: smtpd,
#                cleanup, qmgr, discard, ...) including the delivery
#                (only where a cgroup can be made, see below)
#   VmHWM        the milter's peak resident set (MiB); threads, the most
#                threads it had (libmilter: one per connection), sampled
#                five times a second
#   calls/m      Redis round trips per message: the commands a client
#                sends (EVALSHA, SCRIPT LOAD, ...; INFO commandstats, less
#                the benchmark's own INFO and FLUSHALL); cmds/m every
#                command Redis ran, those inside scripts too (Redis 7
#                counts them; TIME is counted as a script's); evalsha/m;
#                us/evalsha Redis's own time per script call
#   warnings     the milter's warnings while measured: a Redis call given
#                up after its timeout (a message accepted without its Redis
#                policies, on_redis_error), the most frequent are shown
# CPU time is read from cgroup cpuacct.usage (v1) or cpu.stat usage_usec
# (v2) of a cgroup made for the run, to the nanosecond and including
# threads that have exited; without a writable cgroup hierarchy, from
# /proc/PID/stat (10 ms ticks: use more MESSAGES) and the MTA's CPU is not
# shown.
#
# Environment: MESSAGES (2000), SESSIONS (20), ROUNDS (5), RCPTS (1),
# SIZE (2048), WARMUP (200), POLICIES ("default heavy"), LIVE_MEMBERS
# (1000: members put in each live list of a policy set that has one),
# PERF (0; 1: after the rounds, one more run of each pm-P under
# perf record -g, and its 15 hottest symbols; or a list of configurations,
# "pm-default null-default"), top_srcdir, top_builddir,
# BENCH_TMPDIR (/dev/shm).  SESSIONS=200: make bench-e2e-200.
#
# Needs root: Postfix's master runs as root (tests/integration/lib.sh, whose
# Postfix and Redis helpers this script uses).  Everything it starts is
# stopped on exit, also on Ctrl-C.
#
# shellcheck disable=SC2317  # functions called by the trap and by name
set -u

: "${top_srcdir:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
MESSAGES=${MESSAGES:-2000}
SESSIONS=${SESSIONS:-20}
ROUNDS=${ROUNDS:-5}
RCPTS=${RCPTS:-1}
SIZE=${SIZE:-2048}
WARMUP=${WARMUP:-200}
POLICIES=${POLICIES:-default heavy}
LIVE_MEMBERS=${LIVE_MEMBERS:-1000}
PERF=${PERF:-0}

# shellcheck source=tests/integration/lib.sh
. "$top_srcdir/tests/integration/lib.sh"

DAEMON=$top_builddir/policy-milter
# BASE_DAEMON: another policy-milter binary (an older build), run as base-P
# in the same rounds: a before/after comparison under the same conditions.
BASE_DAEMON=${BASE_DAEMON:-}
NULL_MILTER=$top_builddir/tests/null_milter

say() { printf '%s\n' "$*"; }
die() { printf 'bench_e2e: %s\n' "$*" >&2; exit 1; }

for bin in "$DAEMON" "$NULL_MILTER"; do
	[ -x "$bin" ] || die "$bin is not built (make bench-e2e builds it)"
done
for t in redis-server redis-cli postfix postconf; do
	command -v "$t" >/dev/null 2>&1 || { echo "bench_e2e: $t not found: skipped"; exit 77; }
done
if [ -n "$PM_POSTFIX_ROOT" ]; then
	smtp_source() { LD_LIBRARY_PATH=$PM_POSTFIX_ROOT/usr/lib/postfix "$PM_POSTFIX_ROOT/usr/sbin/smtp-source" "$@"; }
	SMTP_SOURCE_BIN=$PM_POSTFIX_ROOT/usr/sbin/smtp-source
else
	smtp_source() { command smtp-source "$@"; }
	SMTP_SOURCE_BIN=$(command -v smtp-source || echo /usr/sbin/smtp-source)
fi
[ -x "$SMTP_SOURCE_BIN" ] || { echo "bench_e2e: smtp-source (Postfix) not found: skipped"; exit 77; }
[ "$(id -u)" = 0 ] || { echo "bench_e2e: a private Postfix needs root: skipped"; exit 77; }
for p in $POLICIES; do
	[ -f "$top_srcdir/tests/bench/$p.conf" ] || die "no policy set tests/bench/$p.conf"
done

# ---------------------------------------------------------------- set-up

PM_TMP=$(mktemp -d "${BENCH_TMPDIR:-/dev/shm}/pm-bench.XXXXXX") || die "mktemp failed"
chmod 755 "$PM_TMP"     # Postfix's unprivileged daemons walk through it
MILTER_PID=
CG_ROOT=
CG_KIND=none
perf_pid=
bench_cleanup() {
	local pid
	if [ -n "$perf_pid" ] && kill -0 "$perf_pid" 2>/dev/null; then
		kill -INT "$perf_pid" 2>/dev/null
		wait "$perf_pid" 2>/dev/null
	fi
	if [ -n "$MILTER_PID" ] && kill -0 "$MILTER_PID" 2>/dev/null; then
		kill -TERM "$MILTER_PID" 2>/dev/null
		pm_wait_gone "$MILTER_PID" 50 || kill -KILL "$MILTER_PID" 2>/dev/null
		wait "$MILTER_PID" 2>/dev/null
	fi
	MILTER_PID=
	pm_cleanup      # Postfix, Redis, the directory (PM_KEEP_TMP=1 keeps it)
	if [ -n "$CG_ROOT" ] && [ -d "$CG_ROOT" ]; then
		# Anything of ours still in a cgroup (it should all be gone).
		for pid in $(cat "$CG_ROOT"/*/cgroup.procs 2>/dev/null); do
			kill -KILL "$pid" 2>/dev/null
		done
		sleep 0.2
		rmdir "$CG_ROOT"/* "$CG_ROOT" 2>/dev/null
	fi
}
# shellcheck disable=SC2154 # bench_rc is assigned inside the trap
trap 'bench_rc=$?; bench_cleanup; exit $bench_rc' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ports=$(pm_free_ports 2) || die "cannot find free ports"
SMTP_PORT=$(echo "$ports" | sed -n 1p)         # smtpd with the milter
PLAIN_PORT=$(echo "$ports" | sed -n 2p)        # smtpd without
# shellcheck disable=SC2034 # lib.sh's postfix_configure reads it (smtpd_milters is set again below)
MILTER_PORT=0
MILTER_SOCK=$PM_TMP/milter/milter.sock
PM_REDIS_SOCK=$PM_TMP/redis/redis.sock
PF_DIR=$PM_TMP/postfix
PF_CONF=$PF_DIR/etc
PF_QUEUE=$PF_DIR/spool
PF_MAILLOG=$PF_DIR/maillog
mkdir -p "$PM_TMP/milter" "$PM_TMP/res" && chmod 755 "$PM_TMP/milter"

# One cgroup per measured party: milter, postfix.  cgroup v1's cpuacct if
# mounted and writable, else a cgroup v2 hierarchy, else none.
cg_setup() {
	local base
	for base in /sys/fs/cgroup/cpuacct /sys/fs/cgroup/cpu,cpuacct; do
		if [ -f "$base/cpuacct.usage" ] && mkdir "$base/pm-bench.$$" 2>/dev/null; then
			CG_ROOT=$base/pm-bench.$$
			CG_KIND=v1
			break
		fi
	done
	if [ "$CG_KIND" = none ]; then
		for base in /sys/fs/cgroup/unified /sys/fs/cgroup; do
			if [ -f "$base/cgroup.procs" ] && [ ! -f "$base/cpuacct.usage" ] &&
			    mkdir "$base/pm-bench.$$" 2>/dev/null; then
				if [ -f "$base/pm-bench.$$/cpu.stat" ]; then
					CG_ROOT=$base/pm-bench.$$
					CG_KIND=v2
					break
				fi
				rmdir "$base/pm-bench.$$"
			fi
		done
	fi
	[ "$CG_KIND" = none ] && return 0
	mkdir "$CG_ROOT/milter" "$CG_ROOT/postfix" || { CG_KIND=none; return 0; }
}
cg_setup

# CPU seconds so far of cgroup NAME (9 decimals), or of PID from
# /proc/PID/stat without cgroups (utime + stime, clock ticks).
cg_cpu() {     # cg_cpu NAME [PID]
	case $CG_KIND in
	v1) awk '{ printf "%.9f\n", $1 / 1e9 }' "$CG_ROOT/$1/cpuacct.usage" ;;
	v2) awk '$1 == "usage_usec" { printf "%.9f\n", $2 / 1e6 }' "$CG_ROOT/$1/cpu.stat" ;;
	*)  if [ -n "${2:-}" ] && [ -r "/proc/$2/stat" ]; then
		    sed 's/.*) //' "/proc/$2/stat" | awk -v hz="$(getconf CLK_TCK)" \
		        '{ printf "%.9f\n", ($12 + $13) / hz }'
	    else
		    echo 0
	    fi ;;
	esac
}
# Run ARGS... inside cgroup NAME (exec: same pid), or just run it.
in_cg() {      # in_cg NAME CMD ARGS...
	local cg=$1
	shift
	if [ "$CG_KIND" != none ]; then
		echo "$BASHPID" >"$CG_ROOT/$cg/cgroup.procs" || return 1
	fi
	# A shell function (an unpacked Postfix's commands) cannot be exec'd.
	[ "$(type -t "$1")" = function ] && { "$@"; return; }
	exec "$@"
}

redis_start || die "redis-server does not start"
rcli() { redis-cli -s "$PM_REDIS_SOCK" "$@"; }

# Postfix as tests/integration/lib.sh configures it (discard: transport,
# no chroot, postlogd to a file), plus: the milter on a unix socket, a
# second smtpd without it, process limits above SESSIONS, no anvil limits,
# long-lived smtpd processes (max_use) so that process start-up is rare.
procs=$((SESSIONS + 20))
[ "$procs" -lt 100 ] && procs=100
postfix_configure
postconf -c "$PF_CONF" -e \
	"smtpd_milters = unix:$MILTER_SOCK" \
	"default_process_limit = $procs" \
	"smtpd_client_connection_count_limit = 0" \
	"smtpd_client_connection_rate_limit = 0" \
	"smtpd_client_message_rate_limit = 0" \
	"max_use = 100000" \
	"milter_connect_timeout = 10s" || die "postconf failed"
echo "127.0.0.1:$PLAIN_PORT inet n - n - - smtpd -o smtpd_milters=" >>"$PF_CONF/master.cf"
postfix -c "$PF_CONF" check || die "postfix check failed"
(in_cg postfix postfix -c "$PF_CONF" start) >"$PM_TMP/postfix.start" 2>&1 ||
	die "postfix does not start: $(cat "$PM_TMP/postfix.start")"
for port in "$SMTP_PORT" "$PLAIN_PORT"; do
	i=0
	until pm_port_open "$port"; do
		[ "$i" -ge 100 ] && die "postfix: port $port not open after 10 s"
		sleep 0.1
		i=$((i + 1))
	done
done

# The policy sets, filled in.
for p in $POLICIES; do
	sed -e "s|@LISTEN@|unix:$MILTER_SOCK|" -e "s|@REDIS@|unix:$PM_REDIS_SOCK|" \
		"$top_srcdir/tests/bench/$p.conf" >"$PM_TMP/$p.conf"
	"$DAEMON" -n -c "$PM_TMP/$p.conf" >/dev/null || die "tests/bench/$p.conf: errors"
done

# ---------------------------------------------------------------- one run

wait_milter_socket() {
	local i=0
	until [ -S "$MILTER_SOCK" ]; do
		kill -0 "$MILTER_PID" 2>/dev/null || return 1
		[ "$i" -ge 100 ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

start_milter() {   # start_milter CONFIG-NAME
	local kind=${1%%-*} set=${1#*-} log=$PM_TMP/milter.$1.log
	MILTER_PID=
	rm -f "$MILTER_SOCK"
	case $kind in
	none) return 0 ;;
	null) (umask 0; in_cg milter "$NULL_MILTER" -p "unix:$MILTER_SOCK" -c "$PM_TMP/$set.conf") \
	          >>"$log" 2>&1 &
	      MILTER_PID=$! ;;
	pm)   (in_cg milter "$DAEMON" -f -c "$PM_TMP/$set.conf") >>"$log" 2>&1 &
	      MILTER_PID=$! ;;
	base) (in_cg milter "$BASE_DAEMON" -f -c "$PM_TMP/$set.conf") >>"$log" 2>&1 &
	      MILTER_PID=$! ;;
	esac
	wait_milter_socket || die "$1 does not start: $(tail -n 5 "$log")"
}

stop_milter() {
	[ -n "$MILTER_PID" ] || return 0
	kill -TERM "$MILTER_PID" 2>/dev/null
	pm_wait_gone "$MILTER_PID" 100 || kill -KILL "$MILTER_PID" 2>/dev/null
	wait "$MILTER_PID" 2>/dev/null
	MILTER_PID=
}

# Empty Redis, then fill the live lists of policy set $1 (if it has any).
redis_reset() {    # redis_reset SET
	local p
	rcli flushall >/dev/null
	[ "$LIVE_MEMBERS" -gt 0 ] || return 0
	for p in $(sed -n 's/.*name = "\([^"]*\)"; type = "block".*/\1/p' "$PM_TMP/$1.conf"); do
		awk -v p="$p" -v n="$LIVE_MEMBERS" 'BEGIN {
			printf "ZADD pm:block:%s", p
			for (i = 1; i <= n; i++) printf " +inf live%d@listed%d.example", i, i % 97
			printf "\n" }' | rcli >/dev/null
	done
}

# Seconds since the epoch, ns.
now() { date +%s.%N; }

redis_cpu() {
	rcli info cpu | tr -d '\r' |
		awk -F: '$1 == "used_cpu_user" || $1 == "used_cpu_sys" { s += $2 } END { printf "%.6f\n", s }'
}
# INFO commandstats as "name calls usec" lines, without the benchmark's
# own INFO and FLUSHALL (and the ZADDs of redis_reset, made before a snapshot).
redis_cmdstats() {
	rcli info commandstats | tr -d '\r' | awk -F'[:=,]' '/^cmdstat_/ {
		cmd = substr($1, 9)
		if (cmd != "info" && cmd != "flushall") print cmd, $3, $5 }'
}
# The commands a client sends (round trips); every other command counted
# in commandstats ran inside a script (Redis 7 counts those too).  TIME
# counts as a script's: the rate-limit script reads it on every call, the
# store sends its own only when it opens a connection (in the warm-up).
CLIENT_CMDS=' evalsha eval evalsha_ro eval_ro fcall fcall_ro script|load script|exists role auth select ping hello client|setname client|setinfo '
# Deltas between two snapshots: "calls cmds evalsha-calls evalsha-usec",
# and every command's calls in the file $3.
cmdstats_delta() {  # cmdstats_delta BEFORE AFTER BREAKDOWN
	awk -v client="$CLIENT_CMDS" -v out="$3" '
		NR == FNR { c0[$1] = $2; u0[$1] = $3; next }
		{ dc = $2 - c0[$1]; du = $3 - u0[$1]
		  if (dc <= 0) next
		  cmds += dc
		  if (index(client, " " $1 " ")) calls += dc
		  if ($1 == "evalsha") { ec = dc; eu = du }
		  printf "%s %d\n", $1, dc >out }
		END { printf "%d %d %d %d\n", calls, cmds, ec, eu }' "$1" "$2"
}

queued() { find "$PF_QUEUE/incoming" "$PF_QUEUE/active" "$PF_QUEUE/deferred" \
	"$PF_QUEUE/maildrop" -type f 2>/dev/null | wc -l; }
wait_drained() {
	local i=0
	while [ "$(queued)" -gt 0 ]; do
		[ "$i" -ge 600 ] && { echo "bench_e2e: queue not empty after 60 s" >&2; return 1; }
		sleep 0.1
		i=$((i + 1))
	done
}
delivered() { awk '/status=sent/ { n++ } END { print n + 0 }' "$PF_MAILLOG" 2>/dev/null || echo 0; }
# Postfix logs through postlogd, a little after the queue file is gone.
wait_delivered() {  # wait_delivered COUNT: until COUNT deliveries are logged (5 s at most)
	local i=0
	while [ "$(delivered)" -lt "$1" ] && [ "$i" -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
}

SENT=0             # deliveries expected in the log so far
send() {           # send PORT COUNT
	SENT=$((SENT + $2 * RCPTS))
	smtp_source -4 -s "$SESSIONS" -m "$2" -l "$SIZE" -r "$RCPTS" -N -C 5 \
		-M client.bench.example -f sender@bench.example -t rcpt@dest.example \
		"127.0.0.1:$1" >>"$PM_TMP/smtp-source.log" 2>&1
}

# run CONFIG ROUND: one measured run; appends one line to res/CONFIG.
run() {
	local cfg=$1 round=$2 set port t0 t1 m0 m1 p0 p1 r0 r1 c1 d0 d1 hwm sampler threads mlog l0 warns
	set=${cfg#*-}
	[ "$cfg" = none ] && set=${POLICIES%% *}
	port=$SMTP_PORT
	[ "$cfg" = none ] && port=$PLAIN_PORT
	start_milter "$cfg"
	redis_reset "$set"
	if [ "$WARMUP" -gt 0 ]; then
		send "$port" "$WARMUP" || echo "bench_e2e: smtp-source failed (warm-up, $cfg)" >&2
		wait_drained
		wait_delivered "$SENT"
	fi
	redis_reset "$set"
	d0=$(delivered)
	r0=$(redis_cpu)
	redis_cmdstats >"$PM_TMP/cmd0"
	p0=$(cg_cpu postfix)
	m0=$(cg_cpu milter "$MILTER_PID")
	mlog=$PM_TMP/milter.$cfg.log
	l0=0
	[ -f "$mlog" ] && l0=$(wc -l <"$mlog")
	sampler=
	if [ -n "$MILTER_PID" ]; then
		# The milter's threads (libmilter: one per connection) five times
		# a second: how many connections it held at once.
		while kill -0 "$MILTER_PID" 2>/dev/null; do
			awk '$1 == "Threads:" { print $2 }' "/proc/$MILTER_PID/status"
			sleep 0.2
		done >"$PM_TMP/threads" 2>/dev/null &
		sampler=$!
	fi
	t0=$(now)
	send "$port" "$MESSAGES" || echo "bench_e2e: smtp-source failed ($cfg, round $round)" >&2
	t1=$(now)
	threads=0
	if [ -n "$sampler" ]; then
		kill "$sampler" 2>/dev/null
		wait "$sampler" 2>/dev/null
		threads=$(sort -n "$PM_TMP/threads" | tail -n 1)
	fi
	m1=$(cg_cpu milter "$MILTER_PID")
	r1=$(redis_cpu)
	redis_cmdstats >"$PM_TMP/cmd1"
	: >"$PM_TMP/res/$cfg.cmds"
	c1=$(cmdstats_delta "$PM_TMP/cmd0" "$PM_TMP/cmd1" "$PM_TMP/res/$cfg.cmds")
	# The milter's warnings while measured (Redis too slow: the message is
	# accepted per on_redis_error without its Redis policies).
	warns=0
	if [ -f "$mlog" ]; then
		tail -n +"$((l0 + 1))" "$mlog" | grep -E ': (warning|error|crit|alert):' |
			sed 's/^[^ ]* //' >"$PM_TMP/warn.run"
		warns=$(wc -l <"$PM_TMP/warn.run")
		cat "$PM_TMP/warn.run" >>"$PM_TMP/res/$cfg.warnings"
	fi
	hwm=0
	[ -n "$MILTER_PID" ] && hwm=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$MILTER_PID/status")
	wait_drained
	p1=$(cg_cpu postfix)
	wait_delivered "$SENT"
	d1=$(delivered)
	stop_milter
	[ "$cfg" = none ] && { m0=0; m1=0; hwm=0; }
	# round msgs/s milter-s redis-s mta-s hwm-kB calls cmds evalsha
	# evalsha-usec delivered threads warnings
	echo "$round $t0 $t1 $m0 $m1 $r0 $r1 $p0 $p1 $hwm $c1 $((d1 - d0)) ${threads:-0} $warns" |
	    awk -v n="$MESSAGES" '{
		printf "%d %.3f %.9f %.9f %.9f %d %d %d %d %d %d %d %d\n", $1, n / ($3 - $2), $5 - $4,
		    $7 - $6, $9 - $8, $10, $11, $12, $13, $14, $15, $16, $17 }' \
		>>"$PM_TMP/res/$cfg"
	if [ "$((d1 - d0))" -ne "$((MESSAGES * RCPTS))" ]; then
		echo "bench_e2e: $cfg round $round: $((d1 - d0)) deliveries, expected $((MESSAGES * RCPTS))" >&2
		MISSING=1
	fi
}

# ---------------------------------------------------------------- the rounds

CONFIGS=none
for p in $POLICIES; do
	CONFIGS="$CONFIGS null-$p pm-$p"
	[ -n "$BASE_DAEMON" ] && CONFIGS="$CONFIGS base-$p"
done
# shellcheck disable=SC2206
CFG_LIST=($CONFIGS)
NCFG=${#CFG_LIST[@]}
MISSING=0

say "bench_e2e: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), $(awk '$1 == "MemTotal:" { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
say "  Postfix $(postconf -d -h mail_version 2>/dev/null), $(redis-server --version | sed -n 's/.*\(v=[^ ]*\).*/Redis \1/p' | tr -d 'v='), $(gcc --version 2>/dev/null | head -n 1)"
say "  load average before: $(cut -d' ' -f1-3 /proc/loadavg); CPU time from: $([ "$CG_KIND" = none ] && echo "/proc/PID/stat (10 ms ticks)" || echo "cgroup $CG_KIND")"
say "  $ROUNDS rounds x {$CONFIGS}; per run $MESSAGES messages (after $WARMUP unmeasured),"
say "  $SESSIONS sessions at a time, one message per session, $RCPTS recipient(s), $SIZE-octet body"
for p in $POLICIES; do
	say "  null-$p negotiates: $("$NULL_MILTER" -n -c "$PM_TMP/$p.conf")"
done

# Postfix's own processes (smtpd on both ports, cleanup, trivial-rewrite,
# ...) start before anything is measured.
if [ "$WARMUP" -gt 0 ]; then
	start_milter "null-${POLICIES%% *}"
	send "$SMTP_PORT" "$((WARMUP * 2))"
	send "$PLAIN_PORT" "$((WARMUP * 2))"
	wait_drained
	stop_milter
fi

for round in $(seq "$ROUNDS"); do
	order=
	for i in $(seq 0 $((NCFG - 1))); do
		order="$order ${CFG_LIST[$(( (i + round - 1) % NCFG ))]}"
	done
	say "  round $round/$ROUNDS:$order (load $(cut -d' ' -f1 /proc/loadavg))"
	for cfg in $order; do
		run "$cfg" "$round"
	done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- the table

# Ratios per round: column COL of CONFIG over the same round's column of BASE.
ratios() {         # ratios CONFIG BASE COL
	awk -v col="$3" 'NR == FNR { base[$1] = $col; next }
		base[$1] > 0 { printf "%.6f\n", $col / base[$1] }' \
		"$PM_TMP/res/$2" "$PM_TMP/res/$1"
}
# median [min-max] of the numbers on stdin, with printf format FMT.
stat() {           # stat FMT [SCALE]
	sort -g | awk -v fmt="$1" -v k="${2:-1}" '{ v[NR] = $1 * k } END {
		if (NR == 0) { printf "-"; exit }
		m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		printf fmt " [" fmt "-" fmt "]", m, v[1], v[NR] }'
}
col() { awk -v c="$2" '{ print $c }' "$PM_TMP/res/$1"; }
med() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit }
	print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
per_msg_us() { awk -v c="$2" -v n="$MESSAGES" '{ print 1e6 * $c / n }' "$PM_TMP/res/$1"; }

say ""
say "load average after: $LOAD_AFTER"
say "median [min-max] over $ROUNDS rounds; us/m: CPU microseconds per message"
printf '%-13s %-18s %-22s %-24s %-22s %-22s %s\n' config msgs/s 'x null' \
	'milter us/m' 'x null' 'redis us/m' 'mta us/m'
for cfg in $CONFIGS; do
	set=${cfg#*-}
	base=null-$set
	[ "$cfg" = none ] && base=null-${POLICIES%% *}
	tput=$(col "$cfg" 2 | stat '%.0f')
	xt=$(ratios "$cfg" "$base" 2 | stat '%.3f')
	if [ "$cfg" = none ]; then
		mcpu=-; xm=-
	else
		mcpu=$(per_msg_us "$cfg" 3 | stat '%.1f')
		xm=$(ratios "$cfg" "$base" 3 | stat '%.3f')
	fi
	rcpu=$(per_msg_us "$cfg" 4 | stat '%.1f')
	pcpu=-
	[ "$CG_KIND" = none ] || pcpu=$(per_msg_us "$cfg" 5 | stat '%.0f')
	printf '%-13s %-18s %-22s %-24s %-22s %-22s %s\n' "$cfg" "$tput" "$xt" \
		"$mcpu" "$xm" "$rcpu" "$pcpu"
done
say ""
printf '%-13s %-20s %-8s %-9s %-9s %-10s %-11s %s\n' config 'VmHWM MiB' 'threads' calls/m cmds/m \
	evalsha/m 'us/evalsha' warnings
for cfg in $CONFIGS; do
	f=$PM_TMP/res/$cfg
	hwm=-
	thr=-
	warns=$(awk '{ n += $13 } END { print n + 0 }' "$f")
	if [ "$cfg" != none ]; then
		hwm=$(awk '{ print $6 / 1024 }' "$f" | stat '%.1f')
		thr=$(awk '{ print $12 }' "$f" | sort -n | tail -n 1)
	fi
	calls=$(awk -v n="$MESSAGES" '{ print $7 / n }' "$f" | med)
	cmds=$(awk -v n="$MESSAGES" '{ print $8 / n }' "$f" | med)
	ecalls=$(awk -v n="$MESSAGES" '{ print $9 / n }' "$f" | med)
	eus=$(awk '$9 > 0 { print $10 / $9 }' "$f" | med)
	[ "$eus" = - ] || eus=$(printf '%.1f' "$eus")
	printf '%-13s %-20s %-8s %-9.2f %-9.2f %-10.2f %-11s %s\n' "$cfg" "$hwm" "$thr" "$calls" "$cmds" \
		"$ecalls" "$eus" "$warns"
done
say "calls/m: Redis round trips per message (commands a client sends: EVALSHA, SCRIPT LOAD...);"
say "cmds/m: every command Redis ran, those inside scripts included; us/evalsha: Redis's"
say "time per script call (commandstats usec_per_call, median of the runs); threads: the"
say "most threads the milter had (sampled 5 times a second; libmilter runs one per connection);"
say "warnings: the milter's warnings while measured, all rounds (a Redis call given up after"
say "its timeout: that message was accepted without its Redis policies, on_redis_error)."
say "Redis commands per message, by name (last round):"
for cfg in $CONFIGS; do
	[ -s "$PM_TMP/res/$cfg.cmds" ] || continue
	say "  $cfg: $(sort -k2,2nr "$PM_TMP/res/$cfg.cmds" | awk -v n="$MESSAGES" \
		'$2 / n >= 0.005 { printf "%s%s %.2f", sep, $1, $2 / n; sep = ", " }')"
done
for cfg in $CONFIGS; do
	[ -s "$PM_TMP/res/$cfg.warnings" ] || continue
	say "$cfg: the milter's warnings while measured (most frequent first):"
	sed -e 's/address=[^ ]*//' -e 's/Redis [^ ]*: /Redis: /' -e 's/([0-9]* similar messages suppressed)//' \
		"$PM_TMP/res/$cfg.warnings" | cut -c1-150 | sort | uniq -c | sort -rn | head -n 5
done
say "(x null: against the same round's null-P of the same policy set; none against null-${POLICIES%% *})"

# ---------------------------------------------------------------- perf

if [ -n "$PERF" ] && [ "$PERF" != 0 ]; then
	[ "$PERF" = 1 ] && PERF=$(for p in $POLICIES; do printf 'pm-%s ' "$p"; done)
	if ! command -v perf >/dev/null 2>&1; then
		say "PERF: perf is not installed"
		PERF=
	fi
	for cfg in $PERF; do
		case $cfg in null-*|pm-*) ;; *) continue ;; esac
		set=${cfg#*-}
		start_milter "$cfg"
		redis_reset "$set"
		send "$SMTP_PORT" "$WARMUP"
		wait_drained
		redis_reset "$set"
		rcli config resetstat >/dev/null
		perf record -g -o "$PM_TMP/perf.$cfg.data" -p "$MILTER_PID" \
			>"$PM_TMP/perf.$cfg.log" 2>&1 &
		perf_pid=$!
		sleep 1
		send "$SMTP_PORT" "$MESSAGES"
		kill -INT "$perf_pid" 2>/dev/null || cat "$PM_TMP/perf.$cfg.log" >&2
		wait "$perf_pid"
		perf_pid=
		say ""
		say "perf record -g -p (the milter), $cfg, $MESSAGES messages:" \
			"the 15 hottest symbols (self time)"
		perf report -i "$PM_TMP/perf.$cfg.data" --no-children --sort dso,symbol \
			--stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -n 15 |
			sed 's/[[:space:]]*-[[:space:]]*-[[:space:]]*$//'
		say "Redis, the same run:"
		rcli info commandstats | tr -d '\r' | grep -E '^cmdstat_(evalsha|time|script)'
		wait_drained
		stop_milter
	done
fi

[ "$MISSING" = 0 ] || { echo "bench_e2e: some runs delivered fewer messages than sent" >&2; exit 1; }
exit 0
