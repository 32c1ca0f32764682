#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
#
# faults.sh - faults injected while a real Postfix with the milter carries
# 50 parallel SMTP sessions (issue 9, item 6).
#
# The milter has a per-sender rate limit (messages, 20 per 60 s) and a live
# block list in Redis (block policy, match = sender, redis = true), Redis
# timeout 100 ms, on_redis_error = accept.  The load (fault_load.py: 50
# threads, sessions of up to 3 transactions; every 10th attempt from a
# listed sender) runs for a fixed time in each phase; the fault starts once
# mail flows (20 messages delivered, usually 1-2 s into it):
#
#   0. no fault (the reference figures)
#   1. Redis stopped with SIGSTOP for 10 s, then SIGCONT
#   2. Redis killed with SIGKILL, started again 2 s later on the same socket
#      (empty: the test Redis keeps nothing on disk; the live entry is added
#      again, as persistence would have kept it)
#   3. Redis slowed: DEBUG SLEEP 0.5 three times, 1 s apart (a stall
#      shorter than the budget: it checks that connections with a late
#      reply in flight are not reused, by the exact counts afterwards)
#   4. the milter killed with SIGKILL and started again 1 s later
#
# For each phase it asserts:
#   - no accepted message is lost: every message the client saw accepted
#     (250 after the data, with its queue id) is delivered (status=sent in
#     the maillog, to the discard transport), and the maillog has no more
#     deliveries to the phase's recipient than the client saw accepted
#   - no client error: every command got a reply, no session was dropped
#   - no SMTP command waited longer than the budget (below), measured from
#     sending it to the end of its reply, for every command of the phase
#     (banner, EHLO, MAIL, RCPT, DATA, the data, RSET, QUIT)
#   - once the fault is over (and counting has resumed: the circuit breaker
#     waits up to 8 s after a long outage before it probes again), a fresh
#     key at limit 20 gets exactly 20 accepted of 25 attempts (10 clients at
#     once), and the live list refuses the listed sender again (MAIL FROM
#     accepted, the first RCPT refused with the list's reply: the sender
#     list is looked up with the first RCPT, delay_mail_lookups)
#   - the milter is still running (Redis faults) or started again (phase 4)
#   - with no fault, the statistics in Redis equal the refusals the clients
#     saw (live list "rejected", rate limit "tempfailed")
# and prints p50/p99/max of the command latencies of every phase.  Last, one
# message while Redis is stopped and nothing else runs: accepted, and its
# decisions counted once in the statistics.
#
# The budget.  A stage that waits for Redis makes one call (one script call
# per message here: the live sender list is looked up with the first RCPT,
# in the rate limit's call, delay_mail_lookups; MAIL FROM waits for nothing
# and the end of message of a messages-limit needs none).  A call waits at most `timeout` for a free pool
# connection and then at most `timeout` for its reply (connect on a unix
# socket does not block; after a restart a NOSCRIPT reply costs one SCRIPT
# LOAD and a retry, with Redis answering).  So the milter itself may hold a
# command 2 x 100 ms; Postfix adds its own work (starting smtpd processes,
# the queue file and its fsync, the milter round trips) and the shared
# 2-core machine adds scheduling delays: FAULT_MARGIN_MS, 1800 ms by
# default, on top, so the budget is 2 s.  Measured here, 50 sessions, with
# other engineers' builds and tests running (load average 18-22): plain
# build, max 380-510 ms in every phase (p99 230-320 ms); ASan build, max
# 450-810 ms with the Redis faults, but 1.5 s (the data of a message, p99
# 1.1 s) just after the ASan milter was restarted.  A command held for 2 s
# or more fails the test: the 10 s SIGSTOP does that to any Redis call made
# without its timeout (which would hold it up to Postfix's
# milter_command_timeout, 30 s).  With the milter killed, Postfix answers at
# once from milter_default_action (tempfail here): the same budget applies.
#
# Needs root (Postfix's master), postfix, swaks, redis-server, python3;
# skips (77) without them.  TAP on stdout.  Runs in about 100 s (130 s
# under ASan; up to 150 s on a busy machine).  FAULT_MARGIN_MS=N changes the
# margin.

# SC2016: reply templates hold ${...} for the milter, not for the shell.
# SC2317: the fault functions are called by name (phase's 4th argument).
# shellcheck disable=SC2016,SC2317

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# DEBUG SLEEP needs Redis's debug command, off by default since Redis 7;
# lib.sh's redis_start runs "redis-server": allow it there, from local
# (unix socket) clients only.
redis-server() { command redis-server "$@" --enable-debug-command local; }

pm_setup

LOAD=$top_srcdir/tests/integration/fault_load.py
BURST=$top_srcdir/tests/integration/smtp_load.py
if [ ! -f "$LOAD" ] || [ ! -f "$BURST" ]; then
	pm_bail "fault_load.py or smtp_load.py is missing"
fi
# The interpreter itself: a version manager's "python3" shim can take a
# second and more to start on a busy machine, and this test starts many.
PYTHON=$(python3 -c 'import sys; print(sys.executable)') || pm_bail "python3 does not run"

TIMEOUT_MS=100
FAULT_MARGIN_MS=${FAULT_MARGIN_MS:-1800}
BUDGET_MS=$((2 * TIMEOUT_MS + FAULT_MARGIN_MS))
LIMIT=20
LISTED=listed@blocked.example
LISTED_REPLY="550 5.7.1 Sender $LISTED is listed"
QUEUED='^250 2\.0\.0 Ok: queued as [0-9A-Za-z]+$'
LOAD_PID=

# Runs before the harness' cleanup: a Redis left stopped would hang its
# shutdown; the load client is ours to stop.
# shellcheck disable=SC2317 # called from the EXIT trap
faults_cleanup() {
	[ -n "$PM_REDIS_PID" ] && kill -CONT "$PM_REDIS_PID" 2>/dev/null
	if [ -n "$LOAD_PID" ]; then
		kill "$LOAD_PID" 2>/dev/null
		wait "$LOAD_PID" 2>/dev/null
	fi
}
trap 'pm_rc=$?; faults_cleanup; pm_cleanup; exit $pm_rc' EXIT

redis_start || pm_bail "cannot start Redis"
postfix_start || pm_bail "cannot start Postfix"

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

rl_sum() {  # rl_sum KEY : the units a rate-limit hash holds (0 if none)
	redis_cli --raw hvals "$1" | awk '{ s += $1 } END { print s + 0 }'
}

list_add() { redis_cli zadd pmfault:block:live-block +inf "$LISTED" >/dev/null; }

CONF=$PM_TMP/faults.conf
{
	milter_config_head pmfault:
	cat <<EOF
policies = (
  { name = "live-block"; type = "block"; match = "sender"; redis = true;
    action = "reject"; reply = "550 5.7.1 Sender \${sender} is listed"; },
  { name = "per-sender"; type = "ratelimit"; key = [ "sender" ]; count = "messages";
    limit = $LIMIT; window = "60s"; action = "tempfail";
    reply = "451 4.7.1 Rate limit for \${key}: \${limit} per \${window}"; }
);
EOF
} >"$CONF"
grep -q "timeout = \"${TIMEOUT_MS}ms\"" "$CONF" || pm_bail "the config's Redis timeout is not ${TIMEOUT_MS}ms"
rl_reply() { echo "451 4.7.1 Rate limit for $1: $LIMIT per 60s"; }

# ---------------------------------------------------------------- the checks

# Send one message at a time (up to 40 s) until SENDER's key holds a unit:
# the circuit breaker probes Redis again 1, 2, 4, 8 s after failures.
wait_counting() {  # wait_counting SENDER
	local i=0 t0
	t0=$(now_ms)
	while [ "$(rl_sum "pmfault:rl:per-sender:$1")" = 0 ]; do
		[ "$i" -ge 160 ] && return 1
		smtp_send --from "$1" --to probe@example.net --body x >/dev/null
		sleep 0.25
		i=$((i + 1))
	done
	pm_diag "counting: a probe counted $(( $(now_ms) - t0 )) ms after the load ended"
}

# Exact counting again: LIMIT + 5 attempts from a fresh sender, 10 clients.
assert_exact() {  # assert_exact LABEL SENDER
	local log=$PM_TMP/exact.$2.log counts
	"$PYTHON" "$BURST" burst --port "$SMTP_PORT" --threads 10 --count $((LIMIT + 5)) \
		--from "$2" --to exact@example.net >"$log" 2>&1
	counts=$(awk -F'\t' -v want="$(rl_reply "$2")" -v q="$QUEUED" '
		/^#/ { next }
		{ n++ }
		$6 ~ q { a++; next }
		$5 == want && $6 == "-" { r++; next }
		{ o++ }
		END { printf "%d %d %d %d\n", n, a, r, o }' "$log")
	SEEN_RL=$((SEEN_RL + $(echo "$counts" | awk '{ print $3 }')))
	assert_eq "$1: a fresh key at limit $LIMIT: $((LIMIT + 5)) attempts -> $LIMIT accepted, 5 refused at RCPT, 0 other" \
		"$((LIMIT + 5)) $LIMIT 5 0" "$counts" "$(head -n 30 "$log")"
	assert_eq "$1: Redis holds exactly $LIMIT units for the fresh key" "$LIMIT" \
		"$(rl_sum "pmfault:rl:per-sender:$2")"
}

# MAIL FROM is accepted; the list's reply comes at the first RCPT.
assert_listed_refused() {  # assert_listed_refused LABEL
	local t
	t=$(smtp_send --from "$LISTED" --to listed@example.net --body x)
	assert_eq "$1: the live list refuses $LISTED again (MAIL 250, RCPT the list's reply)" \
		"250 2.1.0 Ok / $LISTED_REPLY" "$(smtp_reply "$t" MAIL 1) / $(smtp_reply "$t" RCPT 1)" "$t"
	[ "$(smtp_reply "$t" RCPT 1)" = "$LISTED_REPLY" ] && SEEN_LISTED=$((SEEN_LISTED + 1))
}

# Every accepted queue id delivered once; nothing more delivered to RCPT.
assert_delivered() {  # assert_delivered LABEL LOG RCPT
	local accepted delivered missing i=0 ids=$PM_TMP/ids.$3
	awk -F'\t' '$1 == "M" && $4 == "accepted" { print $5 }' "$2" | sort -u >"$ids"
	accepted=$(wc -l <"$ids")
	# Deliveries are asynchronous: up to 30 s for the queue to drain.
	while :; do
		delivered=$(grep -E ": to=<$(pm_ere_quote "$3")>,.* status=sent" "$PF_MAILLOG" |
			sed 's/^.*: \([0-9A-Za-z]*\): to=.*/\1/' | sort -u | tee "$ids.sent" | wc -l)
		[ "$delivered" -ge "$accepted" ] || [ "$i" -ge 300 ] && break
		sleep 0.1
		i=$((i + 1))
	done
	missing=$(comm -23 "$ids" "$ids.sent" | head -n 5 | paste -sd ' ')
	assert_eq "$1: delivered = accepted ($accepted accepted by the client, every one delivered)" \
		"$accepted 0" "$delivered $(comm -23 "$ids" "$ids.sent" | wc -l)" \
		"not delivered: ${missing:-none}; $(grep -E "${missing%% *}" "$PF_MAILLOG" | tail -n 5)"
}

# ---------------------------------------------------------------- statistics

# Refusals the clients saw so far, and what the milter's statistics say:
# the live list's "rejected" (RCPT refused with its 550: the list is looked
# up with the first RCPT, and the load sends one RCPT a message) and the
# rate limit's "tempfailed" (RCPT refused with its 451; the load's 451 at
# RCPT are all the rate limit's until the milter is killed).  Prints
# "clients-live stats-live clients-rate stats-rate".
SEEN_LISTED=0   # assert_listed_refused sessions refused
SEEN_RL=0       # assert_exact attempts refused
stats_vs_clients() {
	local live rate
	live=$(cat "$PM_TMP"/load.*.log "$PM_TMP/warmup.log" | grep -cP '^M\t.*\tRCPT:550\t')
	rate=$(cat "$PM_TMP"/load.*.log "$PM_TMP/warmup.log" | grep -cP '^M\t.*\tRCPT:451\t')
	# Counts reach Redis once a second.
	sleep 1.5
	echo "$((live + SEEN_LISTED)) $(redis_hget pmfault:stats:live-block rejected)" \
		"$((rate + SEEN_RL)) $(redis_hget pmfault:stats:per-sender tempfailed)"
}

# ---------------------------------------------------------------- a phase

# A sleep that a signal interrupts (the trap then runs at once; bash runs
# it only after a foreground command ends).
nap() { sleep "$1" & wait $!; }

# Run the load; FAULT (a function) starts once mail flows (usually 1-2 s
# in), in the foreground; the load goes on for TAIL seconds after it.  Then
# the phase's assertions on the load itself (after_fault has the others).
phase() {  # phase N LABEL TAIL FAULT
	local n=$1 label=$2 log=$PM_TMP/load.$1.log sum lat p50 p99 max t0 i
	t0=$(now_ms)
	rm -f "$PM_TMP/load.stop"
	"$PYTHON" "$LOAD" run --port "$SMTP_PORT" --threads 50 --duration 60 --per-conn 3 \
		--until "$PM_TMP/load.stop" \
		--from "u{n}.p$n@load.example" --senders 40 --listed "$LISTED" \
		--listed-every 10 --rcpt "fault-$n@example.net" --timeout 15 \
		>"$log" 2>"$log.err" &
	LOAD_PID=$!
	# The fault comes once mail flows (20 deliveries), at most 10 s in.
	for ((i = 0; i < 100; i++)); do
		[ "$(grep -c ": to=<fault-$n@example.net>,.* status=sent" "$PF_MAILLOG")" -ge 20 ] && break
		sleep 0.1
	done
	pm_diag "$label: fault $(( $(now_ms) - t0 )) ms after the load started"
	"$4"
	nap "$3"
	touch "$PM_TMP/load.stop"
	wait "$LOAD_PID"
	LOAD_PID=
	PHASE_T1=$(now_ms)
	[ -s "$log.err" ] && pm_diag "fault_load.py: $(tail -n 5 "$log.err")"
	sum=$("$PYTHON" "$LOAD" summary "$log")
	lat=$(printf '%s\n' "$sum" | sed -n 's/^latency //p')
	p50=$(echo "$lat" | awk '{ print $4 }')
	p99=$(echo "$lat" | awk '{ print $6 }')
	max=$(echo "$lat" | awk '{ print $8 }')
	pm_diag "$label: $(printf '%s\n' "$sum" | head -n 1)"
	pm_diag "$label: per-command latency: p50 $p50 ms, p99 $p99 ms, max $max ms ($(echo "$lat" | awk '{ print $2 }') commands)"
	printf '%s\n' "$sum" | sed -n 's/^cmd \([A-Z]*\) n \([0-9]*\) p50 \([0-9.]*\) p99 \([0-9.]*\) max \([0-9.]*\)/# \1 (\2): p50 \3, p99 \4, max \5 ms/p'
	pm_diag "$label: slowest: $(printf '%s\n' "$sum" | sed -n 's/^slow //p' | paste -sd ';' | sed 's/;/; /g')"
	# shellcheck disable=SC2046 # split on purpose
	set -- $(printf '%s\n' "$sum" | head -n 1)
	# attempts A accepted B mail_refused C rcpt_refused D dot_refused E errors F
	assert_true "$label: load ran ($2 attempts, $4 accepted)" [ "$2" -ge 100 -a "$4" -ge 1 ]
	assert_eq "$label: no client error (every command answered, no session dropped)" 0 "${12}" \
		"$(grep -P '^M\t.*\tERR:' "$log" | head -n 5)"
	assert_true "$label: no command waited over ${BUDGET_MS} ms (max $max ms)" \
		awk -v m="$max" -v b="$BUDGET_MS" 'BEGIN { exit !(m <= b) }'
	[ "$n" -gt 0 ] && fault_seen "$label" "$log"
	PHASE_FIGURES="$PHASE_FIGURES
$label: p50 $p50 p99 $p99 max $max ms; $2 attempts, $4 accepted"
	PHASE_T0=$t0
}

after_fault() {  # after_fault N LABEL : counting, exactness, live list, milter
	assert_true "$2: the milter is running" milter_alive
	if wait_counting "probe.p$1@load.example"; then
		pm_ok "$2: counting resumes within 40 s"
		assert_exact "$2" "fresh.p$1@load.example"
	else
		pm_not_ok "$2: counting resumes within 40 s"
	fi
	assert_listed_refused "$2"
	# Last: Postfix delivers the phase's messages meanwhile.
	assert_delivered "$2" "$PM_TMP/load.$1.log" "fault-$1@example.net"
	# Exact with no fault; shown after the Redis faults (a restart empties
	# the statistics, and a stall may count twice: the known bug below).
	if [ "$1" = 0 ]; then
		local sv
		sv=$(stats_vs_clients)
		# shellcheck disable=SC2086 # split on purpose
		assert_eq "$2: statistics = what the clients saw (live list rejected, rate limit tempfailed)" \
			"$(set -- $sv; echo "$1 $1 $3 $3")" "$sv"
	elif [ "$1" -lt 4 ]; then
		pm_diag "$2: refusals seen by the clients / counted in the statistics since the start: live list $(stats_vs_clients |
			awk '{ print $1 " / " $2 ", rate limit " $3 " / " $4 }')"
	fi
	pm_diag "$2: phase took $(( $(now_ms) - PHASE_T0 )) ms, $(( $(now_ms) - PHASE_T1 )) ms of them after the load"
}

# ---------------------------------------------------------------- faults

# The fault was real: with Redis away the live list follows on_redis_error
# (accept), so some messages from the listed sender get through; with the
# milter away Postfix answers from milter_default_action (tempfail, 451).
fault_seen() {  # fault_seen LABEL LOG
	local n
	case $1 in
	milter*)
		n=$(grep -cP '^M\t.*\t(MAIL|RCPT|DATA|DOT):451\t' "$2")
		assert_true "$1: the fault was seen: $n attempts tempfailed by Postfix (milter_default_action)" \
			[ "$n" -ge 1 ]
		;;
	*)
		n=$(grep -cP "^M\t[0-9]+\t$(pm_ere_quote "$LISTED")\taccepted\t" "$2")
		assert_true "$1: the fault was seen: $n messages from the listed sender accepted (on_redis_error = accept)" \
			[ "$n" -ge 1 ]
		;;
	esac
}

no_fault() { nap 2; }

redis_sigstop() {
	kill -STOP "$PM_REDIS_PID"
	nap 10
	kill -CONT "$PM_REDIS_PID"
}

redis_sigkill() {
	local pid=$PM_REDIS_PID
	kill -KILL "$pid"
	pm_wait_gone "$pid" 50
	PM_REDIS_PID=
	sleep 2
	redis_start || pm_bail "cannot start Redis again"
	list_add
}

redis_slow() {
	local i
	for i in 1 2 3; do
		redis_cli debug sleep 0.5 >"$PM_TMP/debug-sleep.out" 2>&1
		sleep 1
	done
}

milter_sigkill() {
	kill -KILL "$MILTER_PID"
	wait "$MILTER_PID" 2>/dev/null
	MILTER_PID=
	sleep 1
	milter_start "$CONF" >"$PM_TMP/milter_restart.out" 2>&1
	MILTER_RESTARTED=$?
}

# ---------------------------------------------------------------- the run

PHASE_FIGURES=
list_add
assert_milter_start "milter starts (live list + $LIMIT per 60s per sender, timeout ${TIMEOUT_MS}ms)" \
	"$CONF" || pm_bail "the milter does not start"
assert_listed_refused "before the faults"
# Postfix starts its smtpd processes on demand, and slowly on a busy
# machine (5 a second was seen here): until 50 run, a new session waits for
# one to start.  Warm up, not measured, until 50 run (at most 15 s).
smtpd_count() { pgrep -c -x -P "$(postfix_master_pid)" smtpd; }
rm -f "$PM_TMP/load.stop"
"$PYTHON" "$LOAD" run --port "$SMTP_PORT" --threads 50 --duration 15 --per-conn 3 \
	--until "$PM_TMP/load.stop" --from "warm{n}@load.example" --rcpt warm@example.net \
	>"$PM_TMP/warmup.log" 2>&1 &
LOAD_PID=$!
t0=$(now_ms)
for ((i = 0; i < 150; i++)); do
	[ "$(smtpd_count)" -ge 50 ] && break
	sleep 0.1
done
touch "$PM_TMP/load.stop"
wait "$LOAD_PID"
LOAD_PID=
pm_diag "warm-up: $(( $(now_ms) - t0 )) ms, $(smtpd_count) smtpd processes"

phase 0 "no fault" 1 no_fault
after_fault 0 "no fault"

phase 1 "Redis SIGSTOP 10 s" 1 redis_sigstop
after_fault 1 "Redis SIGSTOP 10 s"

phase 2 "Redis SIGKILL and restart" 2 redis_sigkill
after_fault 2 "Redis SIGKILL and restart"

phase 3 "Redis DEBUG SLEEP 0.5 s x3" 1 redis_slow
assert_eq "Redis DEBUG SLEEP: the command was allowed" "OK" \
	"$(tail -n 1 "$PM_TMP/debug-sleep.out")"
after_fault 3 "Redis DEBUG SLEEP 0.5 s x3"

MILTER_RESTARTED=1
phase 4 "milter SIGKILL and restart" 2 milter_sigkill
assert_eq "milter SIGKILL: the milter starts again" 0 "$MILTER_RESTARTED" \
	"$(cat "$PM_TMP/milter_restart.out")"
after_fault 4 "milter SIGKILL and restart"

# ---------------------------------------------------------------- statistics and a stall

# One message while Redis is stopped, no other traffic: the statistics must
# count its decisions once (checked +1, redis_errors +1 for each policy).
# A statistics flush sent during the stall times out, yet Redis runs it when
# it resumes; the flush sent again later carries the same number and Redis
# applies it once (milter/stats.c).  This found the daemon counting them 2
# or 3 times.
stat() { local v; v=$(redis_hget "pmfault:stats:$1" "$2"); echo "${v:-0}"; }
stall_stats() {
	echo "$(stat live-block checked) $(stat live-block redis_errors)" \
		"$(stat per-sender checked) $(stat per-sender redis_errors)"
}
smtp_send --from warm.stall@load.example --to stall@example.net --body x >/dev/null
sleep 1.5
before=$(stall_stats)
kill -STOP "$PM_REDIS_PID"
t=$(smtp_send --from stall@load.example --to stall@example.net --body x)
nap 2
kill -CONT "$PM_REDIS_PID"
assert_reply_match "Redis stopped, no other traffic: the message is accepted (on_redis_error = accept)" \
	"$t" DOT 1 "$QUEUED"
# The breaker lets a flush through up to 4 s after the stall.
for ((i = 0; i < 120; i++)); do
	[ "$(stall_stats)" != "$before" ] && break
	sleep 0.1
done
sleep 1.5
after=$(stall_stats)
# shellcheck disable=SC2086 # split on purpose
stall_want=$(set -- $before; echo "$(($1 + 1)) $(($2 + 1)) $(($3 + 1)) $(($4 + 1))")
pm_diag "statistics (live-block checked, redis_errors; per-sender checked, redis_errors):" \
	"before the stall: $before; after one message in it: $after; expected: $stall_want"
assert_eq "statistics count a decision made during a Redis stall once" "$stall_want" "$after"

assert_milter_stop "SIGTERM: exit status 0, no sanitizer report"
# The milter killed in phase 4 had its own log: UBSan reports and carries on.
assert_eq "no sanitizer report in any milter log" "" \
	"$(grep -lE 'AddressSanitizer|LeakSanitizer|runtime error' "$PM_TMP"/milter.*.log)"
pm_diag "per-command latency (budget ${BUDGET_MS} ms):$PHASE_FIGURES"

pm_finish
