#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
#
# bench_protocol.sh - the milter protocol under load (make bench): the same
# load from tests/milter_load against tests/null_milter (libmilter, every
# callback continues, nothing negotiated) and against policy-milter with a
# size limit, a recipient limit and a rate limit counted in a private Redis
# (never reached: every message is accepted).  Prints both; asserts nothing,
# but exits non-zero when milter_load saw a protocol error.
#
# Environment: top_builddir (default: the directory above this script),
# CONNS (8), MESSAGES (20000), RCPTS (2), BODY (2048 octets), SENDERS (1000).
#
# shellcheck disable=SC2317  # functions called by the trap and by name
set -u

: "${top_builddir:=$(cd "$(dirname "$0")/.." && pwd)}"
CONNS=${CONNS:-8}
MESSAGES=${MESSAGES:-20000}
RCPTS=${RCPTS:-2}
BODY=${BODY:-2048}
SENDERS=${SENDERS:-1000}

LOAD=$top_builddir/tests/milter_load
NULL_MILTER=$top_builddir/tests/null_milter
DAEMON=$top_builddir/policy-milter

for bin in "$LOAD" "$NULL_MILTER" "$DAEMON"; do
	if [ ! -x "$bin" ]; then
		echo "bench_protocol: $bin is not built" >&2
		exit 1
	fi
done
if ! command -v redis-server >/dev/null 2>&1; then
	echo "bench_protocol: redis-server not found: protocol benchmark skipped"
	exit 0
fi

TMP=$(mktemp -d /tmp/bench_protocol.XXXXXX) || exit 1
MILTER_PID=
cleanup() {
	if [ -n "$MILTER_PID" ]; then
		kill "$MILTER_PID" 2>/dev/null
		wait "$MILTER_PID" 2>/dev/null
	fi
	if [ -f "$TMP/redis.pid" ]; then
		kill "$(cat "$TMP/redis.pid")" 2>/dev/null
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# A loopback port nobody listens on (a connect there is refused), below
# Linux's range for outgoing connections (32768-60999), which could take it.
free_port() {
	port=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom) % 12000 ))
	until "$LOAD" -t "127.0.0.1:$port" -c 1 -m 1 -w 200 2>&1 |
	    grep -q 'Connection refused'; do
		port=$((port + 1))
	done
	echo "$port"
}

# Wait until something answers on port (10 s at most).
wait_port() {
	for _ in $(seq 100); do
		if "$LOAD" -t "127.0.0.1:$1" -c 1 -m 1 -r 1 -b 0 -l probe >/dev/null 2>&1; then
			return 0
		fi
		if ! kill -0 "$MILTER_PID" 2>/dev/null; then
			return 1
		fi
		sleep 0.1
	done
	return 1
}

stop_milter() {
	kill "$MILTER_PID" 2>/dev/null
	wait "$MILTER_PID" 2>/dev/null
	MILTER_PID=
}

run_load() {    # run_load LABEL PORT : milter_load's status, its output shown
	local rc=0
	"$LOAD" -t "127.0.0.1:$2" -c "$CONNS" -m "$MESSAGES" -r "$RCPTS" -b "$BODY" \
	    -s "$SENDERS" -l "$1" >"$TMP/run.out" 2>&1 || rc=$?
	cat "$TMP/run.out" >>"$TMP/results"
	cat "$TMP/run.out"
	return "$rc"
}

status=0
echo "milter protocol: $CONNS connections, $MESSAGES messages, $RCPTS recipients," \
    "$BODY-octet body"

start_null() {
	port=$(free_port)
	"$NULL_MILTER" -p "inet:$port@127.0.0.1" 2>"$TMP/null.log" &
	MILTER_PID=$!
	wait_port "$port"
}

start_policy() {
	port=$(free_port)
	cat >"$TMP/policy-milter.conf" <<EOF
listen = "inet:$port@127.0.0.1";
redis = { address = "unix:$TMP/redis.sock"; prefix = "bench:"; timeout = "100ms"; };
on_redis_error = "accept";
policies = (
  { name = "max-size"; type = "size"; max = "25M"; action = "reject"; },
  { name = "max-rcpts"; type = "recipients"; max = 100; action = "tempfail"; },
  { name = "per-sender"; type = "ratelimit"; key = [ "sender" ];
    count = "messages"; limit = 100000000; window = "1h"; action = "tempfail"; }
);
EOF
	"$DAEMON" -f -c "$TMP/policy-milter.conf" 2>"$TMP/policy-milter.log" &
	MILTER_PID=$!
	wait_port "$port"
}

# start_milter NAME LOG: three tries, in case another process took the port.
start_milter() {
	for _ in 1 2 3; do
		if "start_$1"; then
			return 0
		fi
		stop_milter
	done
	echo "bench_protocol: the $1 milter does not start:" >&2
	cat "$2" >&2
	return 1
}

# ---- the null milter
if start_milter null "$TMP/null.log"; then
	run_load null-milter "$port" || status=1
else
	status=1
fi
stop_milter

# ---- policy-milter, with its private Redis
redis-server --port 0 --unixsocket "$TMP/redis.sock" --save '' --appendonly no \
    --daemonize yes --pidfile "$TMP/redis.pid" --dir "$TMP" --logfile "$TMP/redis.log"
for _ in $(seq 100); do
	[ -S "$TMP/redis.sock" ] && break
	sleep 0.05
done
if start_milter policy "$TMP/policy-milter.log"; then
	run_load policy-milter "$port" || status=1
	keys=$(redis-cli -s "$TMP/redis.sock" --scan --pattern 'bench:rl:*' | wc -l)
	echo "policy-milter: rate-limit keys in Redis: $keys"
else
	status=1
fi
stop_milter

echo "---- summary"
grep -E 'msgs/s|p50' "$TMP/results"
exit $status
