#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
#
# ratelimit.sh - the ratelimit policy type behind a real Postfix, counting in
# a real Redis (issue 3, acceptance items 1-7).
#
# Every outcome is counted on the client side (tests/integration/smtp_load.py
# records the reply to each RCPT and to each message) and, where it matters,
# compared with what Redis holds: the hash <prefix>rl:<policy>:<key> whose
# fields are bucket starts (Unix ms) and whose values are units.
#
#   1. exactness under concurrency: 16 parallel clients, 800 attempts from
#      one sender, limit 100 per 60 s -> exactly 100 accepted and 700 refused
#      at RCPT with the configured reply; 5 rounds with one MTA, 5 more with
#      two Postfix instances, each with its own milter, sharing one Redis;
#      every other round sends the RCPTs in waves of 16 at once
#   2. sliding window: 10 per 4 s, one attempt every 100-150 ms for 12 s; the
#      client's own log of accept times has no 4 s span with 11 accepts, and
#      accepts resume as old units age out
#   3. give-back: RSET, QUIT or a dropped connection after RCPT, a message
#      refused at end of message by a size policy, recipients refused by a
#      recipients policy: none of them stays counted
#   4. recipients: 30 recipients against 25 -> 25 accepted, 5 refused, the
#      message delivered to the 25
#   5. bytes: SIZE= within the limit, real body over it -> refused at end of
#      message, nothing left reserved
#   6. TTL hygiene: 10,000 distinct senders; every key has a TTL while it
#      exists (sampled during the run) and none is left once window + bucket
#      has passed
#   7. Redis shut down, and Redis hung (SIGSTOP): on_redis_error accept
#      accepts, tempfail answers 451 4.3.0 at RCPT, every RCPT reply comes in
#      under a second (one client alone: within the 100 ms timeout + 50 ms),
#      the milter keeps running, counting resumes when Redis is back
#
# Needs root (Postfix's master), postfix, swaks, redis-server, python3;
# skips (77) without them.  TAP on stdout.  Runs in about two minutes.

# SC2016: reply templates hold ${...} for the milter, not for the shell.
# SC2030, SC2031: postfix2 changes the harness' variables in a subshell on
# purpose, for the second Postfix instance only.
# shellcheck disable=SC2016,SC2030,SC2031

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pm_setup

LOAD=$top_srcdir/tests/integration/smtp_load.py
[ -f "$LOAD" ] || pm_bail "$LOAD is missing"
QUEUED='^250 2\.0\.0 Ok: queued as [0-9A-Za-z]+$'
RCPT_OK='250 2.1.5 Ok'
REDIS_ERR_REPLY='451 4.3.0 Temporary policy failure; try again later'

# The second MTA of item 1: its own Postfix instance and milter.
ports=$(pm_free_ports 2) || pm_bail "cannot find free ports"
SMTP_PORT2=$(echo "$ports" | sed -n 1p)
MILTER_PORT2=$(echo "$ports" | sed -n 2p)
PF2_DIR=$PM_TMP/postfix2
M2_PID=
M2_LOG=$PM_TMP/milter2.log
PM_SAMPLER_PID=

# Runs before the harness' cleanup: a Redis left stopped (SIGSTOP) would
# hang its shutdown; the second MTA and the TTL sampler are ours to stop.
# shellcheck disable=SC2317 # called from the EXIT trap
rl_cleanup() {
	[ -n "$PM_REDIS_PID" ] && kill -CONT "$PM_REDIS_PID" 2>/dev/null
	if [ -n "$PM_SAMPLER_PID" ]; then
		kill "$PM_SAMPLER_PID" 2>/dev/null
		wait "$PM_SAMPLER_PID" 2>/dev/null
	fi
	if [ -n "$M2_PID" ] && kill -0 "$M2_PID" 2>/dev/null; then
		kill -TERM "$M2_PID"
		pm_wait_gone "$M2_PID" 50 || kill -KILL "$M2_PID" 2>/dev/null
		wait "$M2_PID" 2>/dev/null
	fi
	postfix2 postfix_stop
}
trap 'pm_rc=$?; rl_cleanup; pm_cleanup; exit $pm_rc' EXIT

echo "# second MTA: smtp port $SMTP_PORT2 milter port $MILTER_PORT2"

# Run a harness function for the second Postfix instance (in a subshell,
# so that the first instance's variables stay as they are).
postfix2() {
	(
		SMTP_PORT=$SMTP_PORT2 MILTER_PORT=$MILTER_PORT2 PF_DIR=$PF2_DIR
		PF_CONF=$PF_DIR/etc PF_QUEUE=$PF_DIR/spool PF_MAILLOG=$PF_DIR/maillog
		"$@"
	)
}

redis_start || pm_bail "cannot start Redis"
postfix_start || pm_bail "cannot start Postfix"

# ---------------------------------------------------------------- helpers

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

section_start() { SECTION_T0=$(now_ms); }
section_end() { pm_diag "$1 took $(( $(now_ms) - SECTION_T0 )) ms"; }

# The sum of the values of a rate-limit hash (0 when the key does not exist).
rl_sum() {  # rl_sum KEY
	redis_cli --raw hvals "$1" | awk '{ s += $1 } END { print s + 0 }'
}

# Poll until KEY sums to EXPECTED (give-backs reach the milter after the
# client's reply); up to TENTHS/10 s.  The last sum read is in RL_LAST.
wait_sum() {  # wait_sum KEY EXPECTED [TENTHS]
	local i=0
	while :; do
		RL_LAST=$(rl_sum "$1")
		[ "$RL_LAST" = "$2" ] && return 0
		[ "$i" -ge "${3:-30}" ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

# Sum of every hash whose name matches PATTERN.
rl_sum_pattern() {  # rl_sum_pattern PATTERN
	redis_cli --raw eval "local s = 0
		for _, k in ipairs(redis.call('KEYS', ARGV[1])) do
		  for _, v in ipairs(redis.call('HVALS', k)) do s = s + tonumber(v) end
		end
		return s" 0 "$1"
}

# A ratelimit policy line.
rl_policy() {  # rl_policy NAME KEY-PARTS COUNT LIMIT WINDOW ACTION REPLY
	printf '  { name = "%s"; type = "ratelimit"; key = [ %s ]; count = "%s"; limit = %s;\n' \
		"$1" "$2" "$3" "$4"
	printf '    window = "%s"; action = "%s"; reply = "%s"; }' "$5" "$6" "$7"
}

# Summarise a smtp_load.py burst/pace log against the expected refusal:
# prints "attempts accepted refused other" (accepted: 250 after DATA;
# refused: the RCPT reply is exactly REPLY and no DATA was sent).
load_counts() {  # load_counts FILE REPLY
	awk -F'\t' -v want="$2" -v q="$QUEUED" '
	/^#/ { next }
	{ n++ }
	$6 ~ q { a++; next }
	$5 == want && $6 == "-" { r++; next }
	{ o++ }
	END { printf "%d %d %d %d\n", n, a, r, o }' "$1"
}

# The first lines that are neither accepted nor refused as expected.
load_others() {  # load_others FILE REPLY
	awk -F'\t' -v want="$2" -v q="$QUEUED" '
	/^#/ { next }
	$6 ~ q { next }
	$5 == want && $6 == "-" { next }
	{ print; if (++o >= 8) exit }' "$1"
}

# The slowest RCPT reply of a log, in ms (integer).
load_max_rcpt_ms() {  # load_max_rcpt_ms FILE
	awk -F'\t' '!/^#/ && $3 != "-" { d = $4 - $3; if (d > m) m = d }
		END { printf "%d\n", m }' "$1"
}

load_elapsed() { sed -n 's/^# elapsed_ms //p' "$1"; }

burst() {  # burst OUTFILE smtp_load.py-burst-options...
	local out=$1
	shift
	python3 "$LOAD" burst "$@" >"$out" 2>"$out.err" ||
		pm_diag "smtp_load.py failed: $(tail -n 5 "$out.err")"
}

session() {  # session STEP... : one scripted session with the first MTA
	python3 "$LOAD" session --port "$SMTP_PORT" --redis "$PM_REDIS_SOCK" "$@" 2>&1
}

probe_of() {  # probe_of TRANSCRIPT KEY : the sum a PROBE:KEY step read
	printf '%s\n' "$1" | awk -v k="$2" '$1 == "===" && $2 == "probe" && $3 == k { print $4 }' |
		tail -n 1
}

# The second milter: started and stopped by hand (the harness knows one).
milter2_start() {  # milter2_start CONF
	local i=0
	"$PM_MILTER_BIN" -f -c "$1" >"$M2_LOG" 2>&1 &
	M2_PID=$!
	until pm_port_open "$MILTER_PORT2"; do
		kill -0 "$M2_PID" 2>/dev/null || { M2_PID=; return 1; }
		[ "$i" -ge 100 ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

milter2_stop() {  # SIGTERM; 0 when it exits with status 0 within 10 s
	local rc
	[ -n "$M2_PID" ] && kill -0 "$M2_PID" 2>/dev/null || return 1
	kill -TERM "$M2_PID"
	if ! pm_wait_gone "$M2_PID" 100; then
		kill -KILL "$M2_PID" 2>/dev/null
		wait "$M2_PID" 2>/dev/null
		M2_PID=
		return 1
	fi
	wait "$M2_PID"
	rc=$?
	M2_PID=
	[ "$rc" -eq 0 ] && ! grep -Eq 'AddressSanitizer|LeakSanitizer|runtime error' "$M2_LOG"
}

# ------------------------------------------------------------ 1. exactness

# ${key}, ${limit} and ${window} are filled in: the client must see them.
CONC_REPLY_T='451 4.7.1 Rate limit for ${key}: ${limit} per ${window}'
conc_reply() { echo "451 4.7.1 Rate limit for $1: 100 per 60s"; }

# Exactness under contention, not Redis timeouts, is what these rounds
# measure: a timeout (on_redis_error = accept lets that message through
# uncounted, by design) is made unlikely on a loaded machine with 2 s.
conc_config() {  # conc_config MILTER-PORT
	MILTER_PORT=$1 milter_config_head pmconc: | sed 's/timeout = "100ms"/timeout = "2s"/'
	echo 'policies = ('
	rl_policy per-sender '"sender"' messages 100 60s tempfail "$CONC_REPLY_T"
	echo
	echo ');'
}

# One round: 800 attempts from SENDER by 16 clients over the given ports.
# Odd rounds run free; in even rounds the clients go in waves of 16 whose
# RCPTs leave together (smtp_load.py --sync), the most contention there is.
conc_round() {  # conc_round LABEL ROUND SENDER PORT...
	local label=$1 sender=$3 log counts pargs=() p
	[ $(($2 % 2)) = 0 ] && { pargs+=(--sync); label="$label (RCPTs in waves of 16)"; }
	shift 3
	log=$PM_TMP/conc.$sender.log
	for p in "$@"; do pargs+=(--port "$p"); done
	burst "$log" "${pargs[@]}" --threads 16 --count 800 --from "$sender"
	counts=$(load_counts "$log" "$(conc_reply "$sender")")
	assert_eq "$label: 800 attempts -> 100 accepted (250 after DATA), 700 refused at RCPT with the reply, 0 other" \
		"800 100 700 0" "$counts" "$(load_others "$log" "$(conc_reply "$sender")")"
	assert_eq "$label: Redis holds exactly 100 units for the key" 100 \
		"$(rl_sum "pmconc:rl:per-sender:$sender")" \
		"$(redis_cli hgetall "pmconc:rl:per-sender:$sender" | paste -sd ' ')"
	pm_diag "$label: $(load_elapsed "$log") ms, slowest RCPT reply $(load_max_rcpt_ms "$log") ms"
	CONC_LOG=$log
}

section_start
CONF=$PM_TMP/conc.conf
conc_config "$MILTER_PORT" >"$CONF"
if assert_milter_start "milter starts (100 per 60s per sender)" "$CONF"; then
	for r in 1 2 3 4 5; do
		conc_round "one MTA, round $r" "$r" "one$r@example.org" "$SMTP_PORT"
	done
	assert_true "one MTA: the milter is still running" milter_alive

	CONF2=$PM_TMP/conc2.conf
	conc_config "$MILTER_PORT2" >"$CONF2"
	if ! postfix2 postfix_start >"$PM_TMP/postfix2.out" 2>&1; then
		pm_not_ok "second Postfix instance starts" "$(cat "$PM_TMP/postfix2.out")"
	elif ! milter2_start "$CONF2"; then
		pm_not_ok "second milter starts" "$(tail -n 20 "$M2_LOG")"
	else
		pm_ok "second Postfix instance and second milter start (same Redis, same prefix)"
		for r in 1 2 3 4 5; do
			conc_round "two MTAs, round $r" "$r" "two$r@example.org" "$SMTP_PORT" "$SMTP_PORT2"
			# Both MTAs took part: each accepted some of the 100.
			per_mta=$(awk -F'\t' -v q="$QUEUED" -v p1="$SMTP_PORT" -v p2="$SMTP_PORT2" '
				$6 ~ q { a[$2]++ } END { printf "%d %d\n", a[p1], a[p2] }' "$CONC_LOG")
			assert_match "two MTAs, round $r: both MTAs accepted some (MTA1 MTA2: $per_mta)" \
				'^[1-9][0-9]* [1-9][0-9]*$' "$per_mta"
		done
		if milter2_stop; then
			pm_ok "SIGTERM: the second milter exits with status 0"
		else
			pm_not_ok "SIGTERM: the second milter exits with status 0" "$(tail -n 20 "$M2_LOG")"
		fi
		postfix2 postfix_stop
	fi
	assert_milter_stop "SIGTERM: exit status 0 (concurrency runs)"
fi
section_end "item 1 (exactness)"

# ------------------------------------------------------------ 2. sliding window

section_start
SLIDE_REPLY_T='451 4.7.1 Slow down; retry in ${retry_after}'
CONF=$PM_TMP/slide.conf
{
	milter_config_head pmslide:
	echo 'policies = ('
	rl_policy slide '"sender"' messages 10 4s tempfail "$SLIDE_REPLY_T"
	echo
	echo ');'
} >"$CONF"
if assert_milter_start "milter starts (10 per 4s)" "$CONF"; then
	log=$PM_TMP/slide.log
	python3 "$LOAD" pace --port "$SMTP_PORT" --every-ms 100-150 --duration 12 \
		--from slide@example.org >"$log" 2>"$log.err"
	# Accepts as the client saw them: each has an interval [RCPT sent, RCPT
	# reply] in which the limiter decided.  11 accepts whose intervals all
	# lie within 4 s are a violation for sure.
	read -r attempts accepted others first_refused after_refused violations min_span \
		bad_retry < <(python3 - "$log" "$QUEUED" <<'PY'
import re, sys
queued = re.compile(sys.argv[2])
retry = re.compile(r"^451 4\.7\.1 Slow down; retry in ([0-9]+)s$")
acc, att, other, bad_retry, first_ref = [], 0, 0, 0, None
for ln in open(sys.argv[1]):
    if ln.startswith("#"):
        continue
    n, port, t0, t1, rr, dr = ln.rstrip("\n").split("\t")
    att += 1
    if queued.search(dr):
        acc.append((int(n), float(t0), float(t1)))
        continue
    m = retry.match(rr)
    if m and dr == "-":
        if first_ref is None:
            first_ref = int(n)
        if not 1 <= int(m.group(1)) <= 5:
            bad_retry += 1
        continue
    other += 1
after = sum(1 for a in acc if first_ref is not None and a[0] > first_ref)
viol = sum(1 for i in range(len(acc) - 10) if acc[i + 10][2] - acc[i][1] <= 4000)
span = min((acc[i + 10][1] - acc[i][2] for i in range(len(acc) - 10)), default=-1)
print(att, len(acc), other, first_ref if first_ref else 0, after, viol, int(span), bad_retry)
PY
	)
	pm_diag "pace: $attempts attempts, $accepted accepted, first refusal at attempt $first_refused," \
		"shortest span of 11 consecutive accepts ${min_span} ms"
	assert_eq "sliding: every attempt accepted or refused at RCPT with the reply (0 other)" 0 \
		"$others" "$(head -n 20 "$log")"
	assert_true "sliding: at least 60 attempts in 12 s (got $attempts)" [ "${attempts:-0}" -ge 60 ]
	assert_eq "sliding: attempts 1-10 accepted, attempt 11 refused" 11 "$first_refused" \
		"$(head -n 12 "$log")"
	assert_eq "sliding: no 4 s span holds 11 accepts (client's log)" 0 "$violations" \
		"$(grep -E 'queued as' "$log" | cut -f1,3,4)"
	assert_true "sliding: accepts resume as old units age out ($after_refused accepts after the first refusal, $accepted in all, want >= 20)" \
		[ "${accepted:-0}" -ge 20 -a "${after_refused:-0}" -ge 10 ]
	assert_eq "sliding: \${retry_after} is 1s-5s in every refusal" 0 "$bad_retry"
	assert_milter_stop "SIGTERM: exit status 0 (sliding window)"
fi
section_end "item 2 (sliding window)"

# ------------------------------------------------------------ 3. give-back

section_start
CONF=$PM_TMP/giveback.conf
{
	milter_config_head pmgb:
	echo 'policies = ('
	# The rate limits come first: they reserve before the later policies
	# refuse, so every refusal below has something to give back.
	rl_policy gb-msgs '"sender"' messages 1000 60s tempfail '451 4.7.1 Too many messages'
	echo ','
	rl_policy gb-rcpts '"sender"' recipients 1000 60s tempfail '451 4.7.1 Too many recipients'
	echo ','
	rl_policy gb-bytes '"sender"' bytes '"10M"' 60s tempfail '451 4.7.1 Too many bytes'
	echo ','
	cat <<'EOF'
  { name = "max-size"; type = "size"; max = "10K"; action = "reject";
    reply = "552 5.3.4 Message too big"; },
  { name = "max-rcpts"; type = "recipients"; max = 3; action = "tempfail";
    reply = "452 4.5.3 Too many recipients"; }
);
EOF
} >"$CONF"

# The three keys of a sender, as "msgs rcpts bytes".
gb_sums() {  # gb_sums SENDER
	echo "$(rl_sum "pmgb:rl:gb-msgs:$1") $(rl_sum "pmgb:rl:gb-rcpts:$1") $(rl_sum "pmgb:rl:gb-bytes:$1")"
}
gb_probes() {  # gb_probes TRANSCRIPT SENDER : what was reserved during the session
	echo "$(probe_of "$1" "pmgb:rl:gb-msgs:$2") $(probe_of "$1" "pmgb:rl:gb-rcpts:$2") $(probe_of "$1" "pmgb:rl:gb-bytes:$2")"
}
gb_probe_steps() {  # the PROBE steps for SENDER's three keys
	echo "PROBE:pmgb:rl:gb-msgs:$1 PROBE:pmgb:rl:gb-rcpts:$1 PROBE:pmgb:rl:gb-bytes:$1"
}
# Wait until the three sums match ERE ("msgs rcpts bytes"), up to 3 s;
# prints the last sums read.
gb_wait() {  # gb_wait SENDER ERE
	local i=0
	until gb_sums "$1" | grep -Eq -- "$2" || [ "$i" -ge 30 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	gb_sums "$1"
}

if assert_milter_start "milter starts (rate limits, then size and recipients policies)" "$CONF"; then
	# RSET after two RCPTs.
	s=gb-rset@example.org
	# shellcheck disable=SC2046 # the probe steps are words
	T=$(session "MAIL FROM:<$s> SIZE=1000" "RCPT TO:<a@example.net>" "RCPT TO:<b@example.net>" \
		$(gb_probe_steps $s) RSET QUIT)
	assert_eq "RSET: reserved during the transaction (msgs rcpts bytes)" "1 2 1000" \
		"$(gb_probes "$T" $s)" "$T"
	assert_reply "RSET: the server answers 250" "$T" RSET 1 "250 2.0.0 Ok"
	assert_eq "RSET: nothing stays counted" "0 0 0" "$(gb_wait $s "^0 0 0$")"

	# RSET, then a complete message in the same session: only it counts.
	s=gb-rset2@example.org
	T=$(session "MAIL FROM:<$s> SIZE=1000" "RCPT TO:<a@example.net>" "RCPT TO:<b@example.net>" \
		RSET "MAIL FROM:<$s> SIZE=600" "RCPT TO:<c@example.net>" DATA:500 QUIT)
	assert_reply_match "RSET then a new message: accepted" "$T" DOT 1 "$QUEUED"
	sums=$(gb_wait $s "^1 1 [1-9]")
	assert_match "RSET then a new message: 1 message, 1 recipient and its real size (500-1000 bytes) counted" \
		'^1 1 ([5-9][0-9][0-9]|1000)$' "$sums" "$T"

	# QUIT after RCPT.
	s=gb-quit@example.org
	# shellcheck disable=SC2046
	T=$(session "MAIL FROM:<$s> SIZE=1000" "RCPT TO:<a@example.net>" "RCPT TO:<b@example.net>" \
		$(gb_probe_steps $s) QUIT)
	assert_eq "QUIT after RCPT: reserved during the transaction" "1 2 1000" "$(gb_probes "$T" $s)" "$T"
	assert_eq "QUIT after RCPT: nothing stays counted" "0 0 0" "$(gb_wait $s "^0 0 0$")"

	# The same through swaks' --quit-after RCPT.
	s=gb-swaks@example.org
	T=$(smtp_send --from $s --to a@example.net --quit-after RCPT)
	assert_reply "swaks --quit-after RCPT: RCPT accepted" "$T" RCPT 1 "$RCPT_OK"
	assert_eq "swaks --quit-after RCPT: nothing stays counted" "0 0 0" "$(gb_wait $s "^0 0 0$")"

	# The client drops the connection after RCPT, without QUIT.
	s=gb-drop@example.org
	# shellcheck disable=SC2046
	T=$(session "MAIL FROM:<$s> SIZE=1000" "RCPT TO:<a@example.net>" "RCPT TO:<b@example.net>" \
		$(gb_probe_steps $s) DROP)
	assert_eq "connection dropped after RCPT: reserved during the transaction" "1 2 1000" \
		"$(gb_probes "$T" $s)" "$T"
	assert_eq "connection dropped after RCPT: nothing stays counted" "0 0 0" "$(gb_wait $s "^0 0 0$")"

	# Refused at end of message by the size policy: SIZE=5000 passes at RCPT,
	# the real body (20000) does not.
	s=gb-big@example.org
	# shellcheck disable=SC2046
	T=$(session "MAIL FROM:<$s> SIZE=5000" "RCPT TO:<a@example.net>" $(gb_probe_steps $s) \
		DATA:20000 QUIT)
	assert_eq "refused at end of message: reserved at RCPT" "1 1 5000" "$(gb_probes "$T" $s)" "$T"
	assert_reply "refused at end of message: max-size's reply after DATA" "$T" DOT 1 \
		"552 5.3.4 Message too big"
	assert_eq "refused at end of message: nothing stays counted" "0 0 0" "$(gb_wait $s "^0 0 0$")"

	# Recipients 4 and 5 refused by max-rcpts (after the rate limits in file
	# order); the message goes to the first three.
	s=gb-rcpts@example.org
	# shellcheck disable=SC2046
	T=$(session "MAIL FROM:<$s> SIZE=600" "RCPT TO:<r1@example.net>" "RCPT TO:<r2@example.net>" \
		"RCPT TO:<r3@example.net>" "RCPT TO:<r4@example.net>" "RCPT TO:<r5@example.net>" \
		$(gb_probe_steps $s) DATA:500 QUIT)
	assert_eq "recipients refused by another policy: RCPT 1-3 accepted" 3 \
		"$(smtp_count "$T" RCPT "$RCPT_OK")" "$T"
	assert_eq "recipients refused by another policy: RCPT 4-5 get its reply" 2 \
		"$(smtp_count "$T" RCPT "452 4.5.3 Too many recipients")" "$T"
	assert_eq "recipients refused by another policy: only 3 reserved" "1 3 600" \
		"$(gb_probes "$T" $s)" "$T"
	assert_reply_match "recipients refused by another policy: message accepted" "$T" DOT 1 "$QUEUED"
	sums=$(gb_wait $s "^1 3 [1-9]")
	assert_match "recipients refused by another policy: 1 message and 3 recipients counted" \
		'^1 3 [0-9]+$' "$sums"

	# All keys of the run together: only the two accepted messages count.
	assert_eq "give-back: all gb-msgs keys sum to the 2 accepted messages" 2 \
		"$(rl_sum_pattern 'pmgb:rl:gb-msgs:*')"
	assert_eq "give-back: all gb-rcpts keys sum to their 4 accepted recipients" 4 \
		"$(rl_sum_pattern 'pmgb:rl:gb-rcpts:*')"
	assert_milter_stop "SIGTERM: exit status 0 (give-back)"
fi
section_end "item 3 (give-back)"

# ------------------------------------------------------------ 4. recipients

section_start
CONF=$PM_TMP/rcpts.conf
{
	milter_config_head pmrcpt:
	echo 'policies = ('
	rl_policy rcpt-limit '"sender"' recipients 25 60s tempfail \
		'452 4.5.3 At most ${limit} recipients per ${window}; retry in ${retry_after}'
	echo
	echo ');'
} >"$CONF"
if assert_milter_start "milter starts (25 recipients per 60s)" "$CONF"; then
	T=$(smtp_send_n_rcpts 30 --from rc@example.org --body 'thirty recipients')
	assert_eq "30 recipients: RCPT 1-25 get 250" 25 "$(smtp_count "$T" RCPT "$RCPT_OK")" "$T"
	refused=0
	for i in 26 27 28 29 30; do
		smtp_reply "$T" RCPT "$i" |
			grep -Eqx '452 4\.5\.3 At most 25 recipients per 60s; retry in 6[01]s' &&
			refused=$((refused + 1))
	done
	assert_eq "30 recipients: RCPT 26-30 get the reply (with \${retry_after} 60s/61s)" 5 \
		"$refused" "$T"
	assert_reply_match "30 recipients: the message is accepted" "$T" DOT 1 "$QUEUED"
	qid=$(smtp_queue_id "$T")
	wait_for_maillog "${qid:-none}: removed" 10
	delivered=$(grep -E "${qid:-none}: to=<r[0-9]+@example.net>.* status=sent" "$PF_MAILLOG" |
		sed 's/.* to=<r\([0-9]*\)@.*/\1/' | sort -n | paste -sd ' ')
	assert_eq "30 recipients: Postfix delivered to r1..r25" "$(seq -s ' ' 1 25)" "$delivered"
	assert_eq "30 recipients: Redis counts 25" 25 "$(rl_sum pmrcpt:rl:rcpt-limit:rc@example.org)"
	assert_milter_stop "SIGTERM: exit status 0 (recipients)"
fi
section_end "item 4 (recipients)"

# ------------------------------------------------------------ 5. bytes

section_start
CONF=$PM_TMP/bytes.conf
BYTES_REPLY='550 5.7.1 Byte limit 10K per 60s exceeded'
{
	milter_config_head pmbytes:
	echo 'policies = ('
	rl_policy byte-limit '"sender"' bytes '"10K"' 60s reject \
		'550 5.7.1 Byte limit ${limit} per ${window} exceeded'
	echo
	echo ');'
} >"$CONF"
if assert_milter_start "milter starts (10K per 60s)" "$CONF"; then
	s=bytes@example.org
	key=pmbytes:rl:byte-limit:$s
	T=$(session "MAIL FROM:<$s> SIZE=5000" "RCPT TO:<a@example.net>" "PROBE:$key" DATA:20000 QUIT)
	assert_reply "SIZE=5000, real body 20000: RCPT accepted" "$T" RCPT 1 "$RCPT_OK"
	assert_eq "SIZE=5000, real body 20000: 5000 reserved at RCPT" 5000 "$(probe_of "$T" "$key")" "$T"
	assert_reply "SIZE=5000, real body 20000: refused at end of message with the reply" \
		"$T" DOT 1 "$BYTES_REPLY"
	wait_sum "$key" 0
	assert_eq "SIZE=5000, real body 20000: nothing stays reserved" 0 "$RL_LAST" \
		"$(redis_cli hgetall "$key" | paste -sd ' ')"

	# Control: a message that fits is counted by its real size.
	T=$(smtp_send --from $s --size 5000 --body-bytes 3000)
	assert_reply_match "SIZE=5000, real body 3000: accepted" "$T" DOT 1 "$QUEUED"
	used=$(rl_sum "$key")
	assert_true "SIZE=5000, real body 3000: its real size is counted (3000-3500: $used)" \
		[ "$used" -ge 3000 -a "$used" -le 3500 ]

	# Used + real size over 10K, declared size not: refused at the end,
	# the count stays what it was.
	T=$(smtp_send --from $s --size 5000 --body-bytes 8000)
	assert_reply "SIZE=5000, real 8000 on top of $used: refused at end of message" "$T" DOT 1 \
		"$BYTES_REPLY"
	wait_sum "$key" "$used"
	assert_eq "SIZE=5000, real 8000: the count is unchanged" "$used" "$RL_LAST"

	# Used + declared size over 10K: refused at RCPT, before any data.
	T=$(smtp_send --from $s --size 9000 --body-bytes 100)
	assert_reply "SIZE=9000 on top of $used: refused at RCPT" "$T" RCPT 1 "$BYTES_REPLY"
	assert_eq "SIZE=9000: the count is unchanged" "$used" "$(rl_sum "$key")"
	assert_milter_stop "SIGTERM: exit status 0 (bytes)"
fi
section_end "item 5 (bytes)"

# ------------------------------------------------------------ 6. TTL hygiene

section_start
CONF=$PM_TMP/ttl.conf
{
	milter_config_head pmttl:
	echo 'policies = ('
	rl_policy ttl-3s '"sender"' messages 5 3s tempfail '451 4.7.1 Slow down'
	echo
	echo ');'
} >"$CONF"
# Longest window + bucket: 3000 + 3000/60 ms; the key's TTL is set to that
# (+1 ms) on every write.
TTL_MAX=3051

# Every 0.2 s: how many rate-limit keys exist, how many have no TTL (or a
# TTL longer than window + bucket), and whether any key under the prefix
# other than the statistics hash lacks a TTL.  One line per sample.
ttl_sample() {  # ttl_sample OUTFILE
	redis_cli --raw eval "local n, none, long, other = 0, 0, 0, 0
			for _, k in ipairs(redis.call('KEYS', ARGV[1] .. '*')) do
			  local p = redis.call('PTTL', k)
			  if string.sub(k, 1, #ARGV[1] + 3) == ARGV[1] .. 'rl:' then
			    n = n + 1
			    if p < 0 then none = none + 1 elseif p > tonumber(ARGV[2]) then long = long + 1 end
			  elseif k ~= ARGV[1] .. 'stats:ttl-3s' and p < 0 then
			    other = other + 1
			  end
			end
			return n .. ' ' .. none .. ' ' .. long .. ' ' .. other" 0 pmttl: "$TTL_MAX" >>"$1"
}
ttl_sampler() {  # ttl_sampler OUTFILE STOPFILE : a sample every 0.2 s while STOPFILE exists
	while [ -e "$2" ]; do
		ttl_sample "$1"
		sleep 0.2
	done
}

# PM_TTL_SENDERS: fewer in the sanitizer build of CI (the same code runs;
# the full 10,000 run in the first build).
TTL_N=${PM_TTL_SENDERS:-10000}
if assert_milter_start "milter starts (5 per 3s, $TTL_N senders)" "$CONF"; then
	samples=$PM_TMP/ttl.samples
	: >"$samples"
	touch "$PM_TMP/ttl.run"
	ttl_sampler "$samples" "$PM_TMP/ttl.run" &
	PM_SAMPLER_PID=$!
	log=$PM_TMP/ttl.log
	burst "$log" --port "$SMTP_PORT" --threads 16 --count "$TTL_N" --per-conn 25 \
		--from 'ttl{n}@example.org' --body-bytes 100
	end=$(now_ms)
	# Right after the run: every key left has a TTL.
	rm -f "$PM_TMP/ttl.run"
	wait "$PM_SAMPLER_PID"
	PM_SAMPLER_PID=
	ttl_sample "$samples"
	pm_diag "$TTL_N senders in $(load_elapsed "$log") ms; samples (keys, no TTL, TTL too long, others without TTL):" \
		"$(sort -n "$samples" | tail -n 3)"
	counts=$(load_counts "$log" '451 4.7.1 Slow down')
	assert_eq "$TTL_N senders: every message accepted" "$TTL_N $TTL_N 0 0" "$counts" \
		"$(load_others "$log" '451 4.7.1 Slow down')"
	nsamples=$(wc -l <"$samples")
	most=$(awk '{ if ($1 > m) m = $1 } END { print m + 0 }' "$samples")
	assert_true "TTL: sampled $nsamples times while keys existed (up to $most keys at once)" \
		[ "$nsamples" -ge 5 -a "$most" -ge 100 ]
	assert_eq "TTL: no rate-limit key was ever seen without a TTL" 0 \
		"$(awk '{ s += $2 } END { print s + 0 }' "$samples")"
	assert_eq "TTL: no rate-limit key had a TTL above window + bucket ($TTL_MAX ms)" 0 \
		"$(awk '{ s += $3 } END { print s + 0 }' "$samples")"
	assert_eq "TTL: no other key under the prefix (but the statistics hash) lacks a TTL" 0 \
		"$(awk '{ s += $4 } END { print s + 0 }' "$samples")"
	# The last write came before the client's last reply: by end + 4 s
	# every key has passed its TTL (3051 ms).
	left=$(( end + 4000 - $(now_ms) ))
	[ "$left" -gt 0 ] && sleep "$(printf '%d.%03d' $((left / 1000)) $((left % 1000)))"
	remaining=$(redis_cli --scan --pattern 'pmttl:rl:*' | wc -l)
	assert_eq "TTL: 4 s after the run SCAN finds no rate-limit key" 0 "$remaining" \
		"$(redis_cli --scan --pattern 'pmttl:rl:*' | head -n 5)"
	assert_eq "TTL: only the statistics hash (and the flush marker) is left under the prefix" \
		"pmttl:stats:ttl-3s" \
		"$(redis_cli --scan --pattern 'pmttl:*' | grep -v '^pmttl:statsflush:' | sort | paste -sd ' ')"
	marker=$(redis_cli --scan --pattern 'pmttl:statsflush:*' | head -n 1)
	ttl=$(redis_cli pttl "${marker:-none}")
	assert_true "TTL: the statistics flush marker expires within an hour ($ttl ms)" \
		test "${ttl:--2}" -gt 0 -a "${ttl:--2}" -le 3600000
	assert_milter_stop "SIGTERM: exit status 0 (TTL hygiene)"
fi
section_end "item 6 (TTL hygiene)"

# ------------------------------------------------------------ 7. Redis fails

REDOWN_REPLY='451 4.7.1 Rate limited'
redown_config() {  # redown_config ON-REDIS-ERROR
	milter_config_head pmdown: | sed "s/^on_redis_error = .*/on_redis_error = \"$1\";/"
	echo 'policies = ('
	rl_policy down '"sender"' messages 1000 60s tempfail "$REDOWN_REPLY"
	echo
	echo ');'
}

# A burst of 40 attempts (8 clients) while Redis is away; every message
# must get WANT ("accepted" or the Redis error reply at RCPT) and every
# RCPT reply must come in under a second.
redown_burst() {  # redown_burst LABEL SENDER WANT
	local log=$PM_TMP/redown.$2.log counts want max
	burst "$log" --port "$SMTP_PORT" --threads 8 --count 40 --from "$2"
	if [ "$3" = accepted ]; then
		counts=$(load_counts "$log" "$REDOWN_REPLY")
		want="40 40 0 0"
	else
		counts=$(load_counts "$log" "$REDIS_ERR_REPLY")
		want="40 0 40 0"
	fi
	assert_eq "$1: 40 attempts, all $3" "$want" "$counts" "$(head -n 8 "$log")"
	max=$(load_max_rcpt_ms "$log")
	assert_true "$1: every RCPT reply within 1 s (slowest $max ms)" [ "$max" -lt 1000 ]
	assert_true "$1: the milter is still running" milter_alive
}

# One client, 5 attempts in a row, right after Redis went away: the first
# calls wait for the command timeout (100 ms) before the breaker opens; the
# RCPT reply, which contains the whole callback, must come within timeout +
# 50 ms.
redown_seq() {  # redown_seq LABEL SENDER WANT
	local log=$PM_TMP/redown.seq.$2.log counts want max
	burst "$log" --port "$SMTP_PORT" --threads 1 --count 5 --from "$2"
	if [ "$3" = accepted ]; then
		counts=$(load_counts "$log" "$REDOWN_REPLY")
		want="5 5 0 0"
	else
		counts=$(load_counts "$log" "$REDIS_ERR_REPLY")
		want="5 0 5 0"
	fi
	assert_eq "$1: 5 attempts in a row, all $3" "$want" "$counts" "$(cat "$log")"
	max=$(load_max_rcpt_ms "$log")
	assert_true "$1: every RCPT reply within timeout + 50 ms = 150 ms (slowest $max ms)" \
		[ "$max" -lt 150 ]
}

# Send one message at a time (up to 40 s) until SENDER's key shows one:
# the breaker probes again 1, 2, 4 ... s after failures.
redown_wait_counting() {  # redown_wait_counting SENDER
	local i=0 t0
	t0=$(now_ms)
	while [ "$(rl_sum "pmdown:rl:down:$1")" = 0 ]; do
		[ "$i" -ge 160 ] && return 1
		smtp_send --from "$1" --body x >/dev/null
		sleep 0.25
		i=$((i + 1))
	done
	pm_diag "counting resumed $(( $(now_ms) - t0 )) ms after Redis came back"
}

# After Redis is back: 3 messages from a fresh sender, its key sums to 3.
redown_resumed() {  # redown_resumed LABEL PROBE-SENDER FRESH-SENDER
	local i ok=0 T
	if ! redown_wait_counting "$2"; then
		pm_not_ok "$1: counting resumes within 40 s"
		return 1
	fi
	for i in 1 2 3; do
		T=$(smtp_send --from "$3" --body "after $i")
		[ "$(smtp_reply "$T" RCPT 1)" = "$RCPT_OK" ] && ok=$((ok + 1))
	done
	assert_eq "$1: 3 messages from a fresh sender accepted" 3 "$ok" "$T"
	assert_eq "$1: a new key with exactly 3" 3 "$(rl_sum "pmdown:rl:down:$3")" \
		"$(redis_cli hgetall "pmdown:rl:down:$3" | paste -sd ' ')"
}

section_start
CONF=$PM_TMP/redown-accept.conf
redown_config accept >"$CONF"
if assert_milter_start "milter starts (on_redis_error = accept)" "$CONF"; then
	for i in 1 2 3; do smtp_send --from up@example.org --body "up $i" >/dev/null; done
	assert_eq "accept: with Redis up, 3 messages counted" 3 "$(rl_sum pmdown:rl:down:up@example.org)"

	# Hung twice, so that each run starts with the breaker closed and its
	# first calls wait for the timeout: 8 clients at once, then one.
	kill -STOP "$PM_REDIS_PID"
	redown_burst "accept, Redis hung (SIGSTOP)" hung-a@example.org accepted
	kill -CONT "$PM_REDIS_PID"
	redown_resumed "accept, Redis resumed (SIGCONT)" probe-a1@example.org fresh-a1@example.org
	kill -STOP "$PM_REDIS_PID"
	redown_seq "accept, Redis hung again" seq-a@example.org accepted
	kill -CONT "$PM_REDIS_PID"
	redown_resumed "accept, Redis resumed again" probe-a3@example.org fresh-a3@example.org
	# Scripts whose reply timed out run when Redis resumes: the units they
	# reserved stay (for refused messages too, with tempfail).  Shown, not
	# asserted.
	pm_diag "units Redis holds for the senders of the hung phases: $(rl_sum \
		pmdown:rl:down:hung-a@example.org) (8 clients), $(rl_sum pmdown:rl:down:seq-a@example.org) (one)"

	redis_stop
	redown_burst "accept, Redis shut down" down-a@example.org accepted
	redis_start || pm_bail "cannot restart Redis"
	redown_resumed "accept, Redis restarted" probe-a2@example.org fresh-a2@example.org
	assert_milter_stop "SIGTERM: exit status 0 (Redis failures, accept)"
fi

CONF=$PM_TMP/redown-tempfail.conf
redown_config tempfail >"$CONF"
if assert_milter_start "milter starts (on_redis_error = tempfail)" "$CONF"; then
	T=$(smtp_send --from up-t@example.org --body up)
	assert_reply_match "tempfail: with Redis up, a message is accepted" "$T" DOT 1 "$QUEUED"

	# Hung twice, so that each run starts with the breaker closed and its
	# first calls wait for the timeout: 8 clients at once, then one.
	kill -STOP "$PM_REDIS_PID"
	redown_burst "tempfail, Redis hung (SIGSTOP)" hung-t@example.org "refused with $REDIS_ERR_REPLY"
	kill -CONT "$PM_REDIS_PID"
	redown_resumed "tempfail, Redis resumed (SIGCONT)" probe-t1@example.org fresh-t1@example.org
	kill -STOP "$PM_REDIS_PID"
	redown_seq "tempfail, Redis hung again" seq-t@example.org "refused with $REDIS_ERR_REPLY"
	kill -CONT "$PM_REDIS_PID"
	redown_resumed "tempfail, Redis resumed again" probe-t3@example.org fresh-t3@example.org
	# Scripts whose reply timed out run when Redis resumes: the units they
	# reserved stay (for refused messages too, with tempfail).  Shown, not
	# asserted.
	pm_diag "units Redis holds for the senders of the hung phases: $(rl_sum \
		pmdown:rl:down:hung-t@example.org) (8 clients), $(rl_sum pmdown:rl:down:seq-t@example.org) (one)"

	redis_stop
	redown_burst "tempfail, Redis shut down" down-t@example.org "refused with $REDIS_ERR_REPLY"
	T=$(smtp_send --from down-t@example.org --body x)
	assert_reply "tempfail, Redis shut down: the client sees $REDIS_ERR_REPLY at RCPT" \
		"$T" RCPT 1 "$REDIS_ERR_REPLY"
	redis_start || pm_bail "cannot restart Redis"
	redown_resumed "tempfail, Redis restarted" probe-t2@example.org fresh-t2@example.org
	assert_milter_stop "SIGTERM: exit status 0 (Redis failures, tempfail)"
fi
section_end "item 7 (Redis failures)"

pm_finish
