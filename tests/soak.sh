#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
#
# soak.sh - the daemon over many sessions (make soak; by hand, not in CI;
# issue 9, item 7).
#
#   1. SESSIONS (100,000) SMTP sessions, each on a fresh milter connection
#      (tests/milter_load -k 1: negotiate, connect, HELO, one message with
#      RCPTS recipients, QUIT), CONNS (8) at a time, against the daemon with
#      a private Redis and the example's policy set (live and static sender
#      block list, size, recipients, two rate limits, one of them a dry run)
#      plus a per-sender rate limit that refuses part of the load.  After
#      every STEP (10,000) sessions it prints the daemon's VmRSS and VmHWM
#      (from /proc/PID/status) and that step's outcomes.
#   2. VG_SESSIONS (10,000) sessions with the daemon under valgrind
#      (memcheck, --leak-check=full), stopped with SIGTERM so that valgrind
#      writes its leak summary; prints the summary lines (skipped for a
#      sanitizer build, or without valgrind).  "Possibly lost" blocks are
#      shown but not errors: libmilter never joins its own threads (the
#      control thread, the pool controller, its workers), whose thread-local
#      blocks (272 bytes each) valgrind finds at exit whatever the load.
#
# Exits 1 when milter_load saw a protocol error, the daemon did not exit
# with status 0 after SIGTERM, or valgrind reported errors or definitely
# lost bytes; the figures are for a person to read.
#
# Environment: top_builddir (default: the directory above this script),
# SESSIONS, STEP, VG_SESSIONS, CONNS, RCPTS (2), BODY (2048), SENDERS (1000),
# VG_SENDERS (100); VG_SESSIONS=0 skips the valgrind run.
#
# shellcheck disable=SC2317  # functions called by the trap
set -u

: "${top_builddir:=$(cd "$(dirname "$0")/.." && pwd)}"
SESSIONS=${SESSIONS:-100000}
STEP=${STEP:-10000}
VG_SESSIONS=${VG_SESSIONS:-10000}
CONNS=${CONNS:-8}
RCPTS=${RCPTS:-2}
BODY=${BODY:-2048}
SENDERS=${SENDERS:-1000}
VG_SENDERS=${VG_SENDERS:-100}

LOAD=$top_builddir/tests/milter_load
DAEMON=$top_builddir/policy-milter
for bin in "$LOAD" "$DAEMON"; do
	if [ ! -x "$bin" ]; then
		echo "soak: $bin is not built" >&2
		exit 1
	fi
done
if ! command -v redis-server >/dev/null 2>&1; then
	echo "soak: redis-server not found" >&2
	exit 1
fi

TMP=$(mktemp -d /tmp/soak.XXXXXX) || exit 1
SOCK=$TMP/milter.sock
PID=
cleanup() {
	if [ -n "$PID" ]; then
		kill -KILL "$PID" 2>/dev/null
		wait "$PID" 2>/dev/null
	fi
	if [ -f "$TMP/redis.pid" ]; then
		local rpid _
		rpid=$(cat "$TMP/redis.pid")
		kill "$rpid" 2>/dev/null
		for _ in $(seq 50); do     # it writes its log as it goes
			kill -0 "$rpid" 2>/dev/null || break
			sleep 0.1
		done
	fi
	if [ "${SOAK_KEEP_TMP:-0}" = 1 ]; then
		echo "soak: kept $TMP"
	else
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

redis-server --port 0 --unixsocket "$TMP/redis.sock" --save '' --appendonly no \
	--daemonize yes --pidfile "$TMP/redis.pid" --dir "$TMP" --logfile "$TMP/redis.log" ||
	exit 1
for _ in $(seq 100); do
	redis-cli -s "$TMP/redis.sock" ping 2>/dev/null | grep -q PONG && break
	sleep 0.05
done
# Two senders on the live list (one for good, one until an hour from now).
redis-cli -s "$TMP/redis.sock" zadd soak:block:blocked-senders +inf sender7@example.org \
	"$(( $(date +%s) + 3600 ))" sender8@example.org >/dev/null

# The example's policies (etc/policy-milter.conf) and a per-sender limit of
# one message a second that the load reaches all along: milter_load sends
# from its senders in turn, so each comes back every SENDERS / rate
# seconds (1000 / ~1,700 here: about 0.6 s, and 4 in 10 messages refused at
# RCPT; the valgrind run uses VG_SENDERS, 100, for the same mix at its
# slower pace).  3 in 1000 are refused by the lists at MAIL.  So accepted
# messages, refusals and give-backs all run throughout.
write_conf() {
	cat >"$TMP/soak.conf" <<EOF
listen = "unix:$SOCK";
redis = { address = "unix:$TMP/redis.sock"; prefix = "soak:"; connect_timeout = "200ms";
          timeout = "100ms"; pool = 16; };
on_redis_error = "accept";
exempt = { clients = [ "127.0.0.0/8", "::1" ]; authenticated = false; };
policies = (
  { name = "blocked-senders"; type = "block"; match = "sender"; redis = true;
    entries = [ "sender9@example.org", ".bad.example" ];
    action = "reject"; reply = "550 5.7.1 Sender \${sender} is not accepted here"; },
  { name = "max-size"; type = "size"; max = "25M"; action = "reject";
    reply = "552 5.3.4 Message too big for this system (limit \${limit})"; },
  { name = "max-rcpts"; type = "recipients"; max = 100; action = "tempfail";
    reply = "452 4.5.3 Too many recipients; send the rest in another message"; },
  { name = "per-user-hour"; type = "ratelimit"; key = [ "sasl_user" ]; count = "recipients";
    limit = 500; window = "1h"; action = "tempfail";
    reply = "451 4.7.1 \${key} sent too much mail; try again in \${retry_after}"; },
  { name = "per-sender"; type = "ratelimit"; key = [ "sender" ]; count = "messages";
    limit = 1; window = "1s"; action = "tempfail";
    reply = "451 4.7.1 \${sender}: rate limit reached, retry in \${retry_after}"; },
  { name = "per-network"; type = "ratelimit"; key = [ "client_net" ]; count = "messages";
    limit = 2000; window = "10m"; action = "tempfail";
    reply = "421 4.7.0 Too many messages from your network"; dry_run = true; }
);
EOF
	"$DAEMON" -n -c "$TMP/soak.conf" >/dev/null || { "$DAEMON" -n -c "$TMP/soak.conf"; exit 1; }
}
write_conf

start_daemon() {  # start_daemon [WRAPPER...] : the daemon in the foreground, its pid in PID
	rm -f "$SOCK"
	"$@" "$DAEMON" -f -c "$TMP/soak.conf" >"$TMP/daemon.log" 2>&1 &
	PID=$!
	for _ in $(seq 600); do
		[ -S "$SOCK" ] && return 0
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "soak: the daemon does not start:" >&2
	tail -n 20 "$TMP/daemon.log" >&2
	return 1
}

stop_daemon() {  # SIGTERM, wait (up to 120 s); 0 when it exits with status 0
	local rc
	kill -TERM "$PID"
	for _ in $(seq 1200); do
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$PID" 2>/dev/null; then
		echo "soak: no exit within 120 s of SIGTERM" >&2
		return 1
	fi
	wait "$PID"
	rc=$?
	PID=
	[ "$rc" -eq 0 ] || echo "soak: daemon exit status $rc" >&2
	return "$rc"
}

mem() {  # the daemon's VmRSS and VmHWM, in kB
	awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 } END { printf "VmRSS %d kB, VmHWM %d kB", r, h }' \
		"/proc/$PID/status"
}

load() {  # load LABEL N SENDERS [milter_load options] : N sessions, one message each
	local label=$1 n=$2 senders=$3
	shift 3
	"$LOAD" -t "unix:$SOCK" -c "$CONNS" -m "$n" -k 1 -r "$RCPTS" -b "$BODY" \
		-s "$senders" -l "$label" "$@" >"$TMP/load.out" 2>&1
	local rc=$?
	cat "$TMP/load.out" >>"$TMP/load.all"
	return "$rc"
}

status=0
echo "soak: $SESSIONS sessions (one milter connection each), $CONNS at a time," \
	"$RCPTS recipients, $BODY-octet body, $SENDERS senders"
t0=$(now)
start_daemon || exit 1
echo "soak: started: $(mem)"
done_n=0
while [ "$done_n" -lt "$SESSIONS" ]; do
	n=$STEP
	[ $((done_n + n)) -gt "$SESSIONS" ] && n=$((SESSIONS - done_n))
	load "soak" "$n" "$SENDERS" || { status=1; tail -n 3 "$TMP/load.out"; }
	done_n=$((done_n + n))
	printf 'soak: %6d sessions: %s (%s s; %s; %s)\n' "$done_n" "$(mem)" "$(since "$t0")" \
		"$(sed -n 's/^soak: .* in \([0-9.]* s: [0-9]* msgs\/s\)/\1/p' "$TMP/load.out")" \
		"$(sed -n 's/^soak: outcomes: accepted \([0-9]*\), refused at MAIL \([0-9]*\), every RCPT refused \([0-9]*\).*/\1 accepted, \2 refused at MAIL, \3 at RCPT/p' \
		"$TMP/load.out")"
done
echo "soak: Redis keys: $(redis-cli -s "$TMP/redis.sock" dbsize)"
stop_daemon || status=1
echo "soak: $SESSIONS sessions in $(since "$t0") s"

if [ "$VG_SESSIONS" -eq 0 ]; then
	echo "soak: VG_SESSIONS=0: the valgrind run is skipped"
elif ! command -v valgrind >/dev/null 2>&1; then
	echo "soak: valgrind not found: the valgrind run is skipped"
elif ldd "$DAEMON" 2>/dev/null | grep -q libasan; then
	echo "soak: sanitizer build: the valgrind run is skipped"
else
	echo "soak: $VG_SESSIONS sessions with the daemon under valgrind (memcheck)"
	t1=$(now)
	if start_daemon valgrind --leak-check=full --show-leak-kinds=definite,indirect,possible \
		--errors-for-leak-kinds=definite,indirect \
		--error-exitcode=99 --log-file="$TMP/valgrind.log"; then
		load "soak-valgrind" "$VG_SESSIONS" "$VG_SENDERS" -w 60000 || { status=1; tail -n 3 "$TMP/load.out"; }
		grep -E 'msgs/s|outcomes' "$TMP/load.out"
		stop_daemon || status=1
		echo "soak: valgrind run: $(since "$t1") s; its summary:"
		grep -E 'definitely lost|indirectly lost|possibly lost|still reachable|suppressed|ERROR SUMMARY|All heap blocks' \
			"$TMP/valgrind.log" | sed 's/^==[0-9]*== */    /'
		if grep -Eq 'definitely lost: [1-9]' "$TMP/valgrind.log" ||
			! grep -q 'ERROR SUMMARY: 0 errors' "$TMP/valgrind.log"; then
			status=1
			sed -n '/lost in loss record/,/^==[0-9]*== $/p' "$TMP/valgrind.log" | head -n 60
		fi
	else
		status=1
	fi
fi
echo "soak: done in $(since "$t0") s, status $status"
exit "$status"
