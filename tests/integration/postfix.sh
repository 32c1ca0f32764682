#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
#
# postfix.sh - policy-milter behind a real Postfix, with a real Redis.
#
# What a client sees is what is tested: every check compares the exact SMTP
# reply (code, enhanced code and text) at the stage where it must come, and,
# where it matters, what Postfix did with the message (delivered, dropped,
# held) and what the milter logged and counted in Redis.  Covered: the size
# and recipients policies, every action, multi-line replies, "%" and
# ${...} in replies, dry runs, exempt clients, statistics, Redis going away
# and coming back, reload (good and bad file), the -n config check, the
# warning about a listen on every interface and a clean stop on SIGTERM.
#
# Needs root (Postfix's master), postfix, swaks, redis-server; skips (77)
# without them or without a built policy-milter.  TAP on stdout.
# Runs in about half a minute.

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pm_setup

# The replies the policies are configured with, as the client must see them.
SIZE_REPLY='552 5.3.4 Message too big (limit 10K)'
RCPTS_REPLY='452 4.5.3 Too many recipients'
RCPT_OK='250 2.1.5 Ok'
QUEUED='^250 2\.0\.0 Ok: queued as [0-9A-Za-z]+$'
NO_MILTER='451 4.7.1 Service unavailable - try again later'

# The two policies of the issue.  $1: the recipients limit (default 3).
base_policies() {
	cat <<EOF
policies = (
  { name = "max-size"; type = "size"; max = "10K"; action = "reject";
    reply = "552 5.3.4 Message too big (limit \${limit})"; },
  { name = "max-rcpts"; type = "recipients"; max = ${1:-3}; action = "tempfail";
    reply = "452 4.5.3 Too many recipients"; }
);
EOF
}

# A complete config: head (prefix $2), exempt list $3, base policies
# with recipients limit $1.
base_config() {
	milter_config_head "${2:-pmtest:}"
	echo "exempt = { clients = [ ${3:-\"10.9.9.9\"} ]; authenticated = false; };"
	base_policies "${1:-3}"
}

# Line number of the first line of FILE containing TEXT.
line_of() {  # line_of FILE TEXT
	grep -nF -- "$2" "$1" | head -n 1 | cut -d: -f1
}

# A decision line of the milter log, as an ERE: queue id, client, policy,
# stage, action, then (other key=value fields may sit in between) the reply.
# The logger may put a time stamp and severity before the queue id.
decision_re() {  # decision_re POLICY STAGE ACTION [REPLY]
	local re="(^| )[^ ]+: client=127\.0\.0\.1: policy=$1 stage=$2 action=$3( |$)"
	[ -n "${4:-}" ] && re="$re.* reply=\"$(pm_ere_quote "$4")\"( |$)"
	printf '%s' "$re"
}

# Send to N recipients again and again (up to 5 s) until the reply to
# RCPT #IDX is EXPECTED: a reload is asynchronous.  Leaves the last
# transcript in T.
poll_rcpt_reply() {  # poll_rcpt_reply N IDX EXPECTED
	local i=0
	while :; do
		T=$(smtp_send_n_rcpts "$1")
		[ "$(smtp_reply "$T" RCPT "$2")" = "$3" ] && return 0
		[ "$i" -ge 15 ] && return 1
		sleep 0.3
		i=$((i + 1))
	done
}

redis_start || pm_bail "cannot start Redis"
postfix_start || pm_bail "cannot start Postfix"

# ------------------------------------------------------------ the harness
# Postfix must really ask the milter: with none listening it tempfails.
T=$(smtp_send)
assert_reply "no milter listening: Postfix tempfails MAIL FROM (milter_default_action)" \
	"$T" MAIL 1 "$NO_MILTER"

# ------------------------------------------------------------ -n
CONF=$PM_TMP/base.conf
base_config >"$CONF"
out=$("$PM_MILTER_BIN" -n -c "$CONF" 2>&1)
rc=$?
assert_eq "-n on a good file exits 0" 0 "$rc" "$out"
assert_contains "-n on a good file prints 'configuration OK'" "configuration OK" "$out"

BAD=$PM_TMP/bad-semantic.conf
{
	milter_config_head
	echo 'policies = ('
	echo '  { name = "big"; type = "size"; max = "10Q"; action = "reject"; reply = "552 5.3.4 Too big"; },'
	echo '  { name = "many"; type = "recipients"; max = 3; action = "reject"; reply = "452 4.5.3 Too many recipients"; }'
	echo ');'
} >"$BAD"
out=$("$PM_MILTER_BIN" -n -c "$BAD" 2>&1 >/dev/null)
rc=$?
assert_eq "-n on a file with two errors exits 1" 1 "$rc" "$out"
assert_contains "-n reports the bad size as $BAD:LINE:" \
	"$BAD:$(line_of "$BAD" '"10Q"'):" "$out"
assert_contains "-n reports reject with a 4xx reply as $BAD:LINE: in the same run" \
	"$BAD:$(line_of "$BAD" '"452 4.5.3'):" "$out"

BAD=$PM_TMP/bad-syntax.conf
{
	milter_config_head
	echo 'policies = ('
	echo '  { name = "max-rcpts"; type = "recipients"; max = = 3; action = "tempfail"; }'
	echo ');'
} >"$BAD"
out=$("$PM_MILTER_BIN" -n -c "$BAD" 2>&1)
rc=$?
assert_eq "-n on a file with a syntax error exits 1" 1 "$rc" "$out"
assert_contains "-n reports the syntax error as $BAD:LINE:" \
	"$BAD:$(line_of "$BAD" 'max = = 3'):" "$out"
assert_not_contains "-n on a bad file does not say 'configuration OK'" "configuration OK" "$out"

# A listen on every interface loads, with a warning that names its line:
# at -n and again when the daemon starts (in its log).
WIDE=$PM_TMP/wide.conf
base_config | sed "s|^listen = .*|listen = \"inet:$MILTER_PORT\";|" >"$WIDE"
WIDE_WARN="$WIDE:$(line_of "$WIDE" 'listen = '): warning: listen \"inet:$MILTER_PORT\" accepts connections on every interface: anyone who reaches port $MILTER_PORT can spend rate-limit units; bind it to 127.0.0.1 (inet:$MILTER_PORT@127.0.0.1) or use a unix socket"
out=$("$PM_MILTER_BIN" -n -c "$WIDE" 2>&1)
rc=$?
assert_eq "-n on a listen on every interface exits 0" 0 "$rc" "$out"
assert_contains "-n warns about a listen on every interface as $WIDE:LINE:" "$WIDE_WARN" "$out"
if assert_milter_start "the milter starts with a listen on every interface" "$WIDE"; then
	assert_contains "at start the log warns about a listen on every interface as $WIDE:LINE:" \
		"$WIDE_WARN" "$(cat "$MILTER_LOG")"
	assert_milter_stop "the milter on every interface stops cleanly"
fi

# ------------------------------------------------------------ size, recipients
assert_milter_start "milter starts with the size and recipients policies" "$CONF" ||
	pm_bail "the milter does not start; the remaining tests need it"

T=$(smtp_send --size 20000 --to r1@example.net --to r2@example.net)
assert_reply "reject: SIZE=20000 over 10K refused at RCPT 1 with \${limit} expanded" \
	"$T" RCPT 1 "$SIZE_REPLY"
assert_reply "reject: SIZE=20000 over 10K refused at RCPT 2 too" "$T" RCPT 2 "$SIZE_REPLY"
assert_grep "decision logged: max-size at rcpt, reject, with the reply" \
	"$(decision_re max-size rcpt reject "$SIZE_REPLY")" "$MILTER_LOG"

T=$(smtp_send --body-bytes 20000)
assert_reply "real size over 10K (no SIZE=): RCPT accepted" "$T" RCPT 1 "$RCPT_OK"
assert_reply "real size over 10K (no SIZE=): refused after DATA" "$T" DOT 1 "$SIZE_REPLY"
assert_grep "decision logged: max-size at eom, reject" \
	"$(decision_re max-size eom reject "$SIZE_REPLY")" "$MILTER_LOG"

T=$(smtp_send --size 2000 --body-bytes 1000)
assert_reply_match "under the limit with SIZE=2000: message accepted" "$T" DOT 1 "$QUEUED"
T=$(smtp_send --body-bytes 5000)
assert_reply_match "under the limit without SIZE= (5000 bytes): message accepted" "$T" DOT 1 "$QUEUED"

T=$(smtp_send_n_rcpts 5 --body 'five recipients')
assert_eq "tempfail: 5 recipients, max 3: RCPT 1-3 get 250" 3 \
	"$(smtp_count "$T" RCPT "$RCPT_OK")" "$T"
assert_reply "tempfail: RCPT 4 gets the reply" "$T" RCPT 4 "$RCPTS_REPLY"
assert_reply "tempfail: RCPT 5 gets the reply" "$T" RCPT 5 "$RCPTS_REPLY"
assert_reply_match "tempfail: the message still goes to the first 3 (250 after DATA)" \
	"$T" DOT 1 "$QUEUED"
qid=$(smtp_queue_id "$T")
wait_for_maillog "${qid:-none}: removed"
delivered=$(grep -E "${qid:-none}: to=<r[0-9]@example.net>.* status=sent" "$PF_MAILLOG" |
	sed 's/.* to=<\([^>]*\)>.*/\1/' | sort | paste -sd ' ')
assert_eq "Postfix delivered the message to r1 r2 r3 only" "r1@example.net r2@example.net r3@example.net" \
	"$delivered" "$(grep -F "${qid:-none}" "$PF_MAILLOG")"
assert_grep "decision logged: max-rcpts at rcpt, tempfail, with the reply" \
	"$(decision_re max-rcpts rcpt tempfail "$RCPTS_REPLY")" "$MILTER_LOG"

assert_milter_stop "SIGTERM: exit status 0 (size and recipients run)"

# ------------------------------------------------------------ statistics
# A fresh prefix and a known pattern:
#   A: 5 recipients, small body -> size checked at 5 RCPT + EOM, recipients
#      checked 5 times, tempfailed 2
#   B: SIZE=20000, 1 recipient  -> size checked and rejected at RCPT; the
#      recipients policy comes after the decision and is not evaluated
#   C: 20000 bytes, 1 recipient -> size checked at RCPT and at EOM, rejected
#      at EOM; recipients checked once
CONF=$PM_TMP/stats.conf
base_config 3 pmstats: >"$CONF"
if assert_milter_start "milter starts (statistics run, prefix pmstats:)" "$CONF"; then
	smtp_send_n_rcpts 5 --body 'stats A' >/dev/null
	smtp_send --size 20000 >/dev/null
	smtp_send --body-bytes 20000 >/dev/null
	assert_stats "stats: pmstats:stats:max-rcpts has exact counts" pmstats:stats:max-rcpts \
		checked=6 tempfailed=2 rejected=0 discarded=0 quarantined=0 accepted=0 dry_run=0 \
		redis_errors=0
	assert_stats "stats: pmstats:stats:max-size has exact counts" pmstats:stats:max-size \
		checked=9 rejected=2 tempfailed=0 discarded=0 quarantined=0 accepted=0 dry_run=0 \
		redis_errors=0

	# ---------------------------------------------------- Redis goes away
	redis_stop
	start=$(date +%s%N)
	T=$(smtp_send_n_rcpts 5 --body 'redis down')
	ms=$(( ($(date +%s%N) - start) / 1000000 ))
	assert_eq "Redis down: 5 recipients, max 3: RCPT 1-3 get 250" 3 \
		"$(smtp_count "$T" RCPT "$RCPT_OK")" "$T"
	assert_eq "Redis down: RCPT 4 and 5 get the reply" 2 \
		"$(smtp_count "$T" RCPT "$RCPTS_REPLY")" "$T"
	assert_reply_match "Redis down: the message is accepted" "$T" DOT 1 "$QUEUED"
	assert_true "Redis down: the session took under 3 s (took ${ms} ms)" [ "$ms" -lt 3000 ]
	T=$(smtp_send --size 20000)
	assert_reply "Redis down: SIZE=20000 still refused at RCPT" "$T" RCPT 1 "$SIZE_REPLY"
	assert_true "Redis down: the milter is still running" milter_alive

	# Redis comes back empty (--save ''): what arrives is what the milter
	# counted while it was away.
	redis_start || pm_bail "cannot restart Redis"
	PM_STATS_TIMEOUT=10 assert_stats \
		"Redis back: counts made while it was down arrive (max-rcpts)" pmstats:stats:max-rcpts \
		tempfailed=2 checked=5 rejected=0
	PM_STATS_TIMEOUT=10 assert_stats \
		"Redis back: counts made while it was down arrive (max-size)" pmstats:stats:max-size \
		rejected=1 checked=7

	# ---------------------------------------------------- reload
	base_config 1 pmstats: >"$CONF"
	milter_reload
	poll_rcpt_reply 3 2 "$RCPTS_REPLY"
	assert_reply "reload (max-rcpts 3 -> 1): RCPT 1 gets 250" "$T" RCPT 1 "$RCPT_OK"
	assert_reply "reload (max-rcpts 3 -> 1): RCPT 2 gets the reply" "$T" RCPT 2 "$RCPTS_REPLY"
	assert_reply "reload (max-rcpts 3 -> 1): RCPT 3 gets the reply" "$T" RCPT 3 "$RCPTS_REPLY"
	assert_reply_match "reload: the message still goes to the first" "$T" DOT 1 "$QUEUED"

	# A broken file that would raise the limit to 5 if any of it were taken.
	base_config 5 pmstats: >"$CONF"
	echo 'broken = = ;' >>"$CONF"
	bad_line=$(line_of "$CONF" 'broken = = ;')
	milter_reload
	wait_for_milter_log "$(pm_ere_quote "$CONF"):$bad_line:"
	assert_grep "bad reload (syntax): error logged as FILE:LINE:" \
		"$(pm_ere_quote "$CONF"):$bad_line:" "$MILTER_LOG"
	T=$(smtp_send_n_rcpts 3)
	assert_reply "bad reload (syntax): old limit kept, RCPT 1 gets 250" "$T" RCPT 1 "$RCPT_OK"
	assert_reply "bad reload (syntax): old limit kept, RCPT 2 gets the reply" "$T" RCPT 2 "$RCPTS_REPLY"
	assert_true "bad reload (syntax): the milter is still running" milter_alive

	# Well-formed, but reject with a 4xx reply is invalid.
	{
		milter_config_head pmstats:
		echo 'policies = ('
		echo '  { name = "max-size"; type = "size"; max = "10K"; action = "reject"; reply = "452 4.3.1 Too big"; },'
		echo '  { name = "max-rcpts"; type = "recipients"; max = 5; action = "tempfail"; reply = "452 4.5.3 Too many recipients"; }'
		echo ');'
	} >"$CONF"
	bad_line=$(line_of "$CONF" '452 4.3.1 Too big')
	milter_reload
	wait_for_milter_log "$(pm_ere_quote "$CONF"):$bad_line:"
	assert_grep "bad reload (invalid reply): error logged as FILE:LINE:" \
		"$(pm_ere_quote "$CONF"):$bad_line:" "$MILTER_LOG"
	T=$(smtp_send_n_rcpts 3)
	assert_reply "bad reload (invalid reply): old limit kept, RCPT 2 gets the reply" \
		"$T" RCPT 2 "$RCPTS_REPLY"
	assert_true "bad reload (invalid reply): the milter is still running" milter_alive

	assert_milter_stop "SIGTERM: exit status 0 (after Redis outage and reloads)"
fi

# ------------------------------------------------------------ actions
# One milter per configuration; each run ends with a SIGTERM check.

CONF=$PM_TMP/421.conf
{
	milter_config_head
	cat <<'EOF'
policies = (
  { name = "rcpts-421"; type = "recipients"; max = 1; action = "tempfail";
    reply = "421 4.7.0 Too many recipients, closing connection"; }
);
EOF
} >"$CONF"
if assert_milter_start "milter starts (tempfail with 421)" "$CONF"; then
	T=$(smtp_send_n_rcpts 3)
	assert_reply "tempfail 421: RCPT 1 gets 250" "$T" RCPT 1 "$RCPT_OK"
	assert_reply "tempfail 421: RCPT 2 gets the 421 reply" "$T" RCPT 2 \
		"421 4.7.0 Too many recipients, closing connection"
	assert_true "tempfail 421: the server closed the session" smtp_closed_by_server "$T"
	assert_milter_stop "SIGTERM: exit status 0 (421 run)"
fi

CONF=$PM_TMP/discard.conf
{
	milter_config_head
	cat <<'EOF'
policies = (
  { name = "big-discard"; type = "size"; max = "1K"; action = "discard"; }
);
EOF
} >"$CONF"
if assert_milter_start "milter starts (discard)" "$CONF"; then
	T=$(smtp_send --body-bytes 5000)
	assert_reply_match "discard: the client gets 250 after DATA" "$T" DOT 1 "$QUEUED"
	qid=$(smtp_queue_id "$T")
	wait_for_maillog "${qid:-none}: milter-discard"
	assert_grep "discard: Postfix dropped the message (milter-discard)" \
		"${qid:-none}: milter-discard" "$PF_MAILLOG"
	assert_grep "discard: decision logged with Postfix's queue id at eom" \
		"(^| )${qid:-none}: client=127\.0\.0\.1: policy=big-discard stage=eom action=discard( |$)" \
		"$MILTER_LOG"
	T=$(smtp_send --body-bytes 500)
	assert_reply_match "discard: a small message is accepted" "$T" DOT 1 "$QUEUED"
	qid2=$(smtp_queue_id "$T")
	wait_for_maillog "${qid2:-none}: to=<rcpt@example.net>.* status=sent"
	assert_grep "discard: the small message is delivered" \
		"${qid2:-none}: to=<rcpt@example.net>.* status=sent" "$PF_MAILLOG"
	assert_milter_stop "SIGTERM: exit status 0 (discard run)"
fi

CONF=$PM_TMP/quarantine.conf
{
	milter_config_head
	cat <<'EOF'
policies = (
  { name = "big-hold"; type = "size"; max = "1K"; action = "quarantine"; }
);
EOF
} >"$CONF"
if assert_milter_start "milter starts (quarantine)" "$CONF"; then
	T=$(smtp_send --body-bytes 5000)
	assert_reply_match "quarantine: the client gets 250 after DATA" "$T" DOT 1 "$QUEUED"
	qid=$(smtp_queue_id "$T")
	wait_for_maillog "${qid:-none}: milter-hold"
	assert_true "quarantine: the message is in Postfix's hold queue" \
		test -f "$PF_QUEUE/hold/${qid:-none}"
	assert_match "quarantine: postqueue -p marks it held (!)" "^${qid:-none}!" \
		"$(postqueue -c "$PF_CONF" -p 2>&1)"
	assert_grep "quarantine: decision logged" \
		"$(decision_re big-hold eom quarantine)" "$MILTER_LOG"
	assert_milter_stop "SIGTERM: exit status 0 (quarantine run)"
fi

# accept covers what it was decided for: at MAIL the message (the size
# policy after it is not evaluated), at RCPT that recipient only (the size
# of the message is still checked at end of data).
CONF=$PM_TMP/accept.conf
{
	milter_config_head
	cat <<'EOF'
policies = (
  { name = "allow-sender"; type = "block"; match = "sender";
    entries = [ "trusted@example.org" ]; action = "accept"; },
  { name = "allow-multi"; type = "recipients"; max = 1; action = "accept"; },
  { name = "small-only"; type = "size"; max = "1K"; action = "reject";
    reply = "552 5.3.4 Message too big (limit ${limit})"; }
);
EOF
} >"$CONF"
if assert_milter_start "milter starts (accept)" "$CONF"; then
	T=$(smtp_send --body-bytes 5000)
	assert_reply "accept, control: 1 recipient, 5000 bytes: the later policy rejects" \
		"$T" DOT 1 "552 5.3.4 Message too big (limit 1K)"
	T=$(smtp_send --from trusted@example.org --body-bytes 5000)
	assert_reply_match "accept at MAIL: 5000 bytes: the later policy is not evaluated" \
		"$T" DOT 1 "$QUEUED"
	assert_grep "accept at MAIL: decision logged" "$(decision_re allow-sender mail accept)" \
		"$MILTER_LOG"
	T=$(smtp_send_n_rcpts 2 --body-bytes 5000)
	assert_eq "accept at RCPT: 2 recipients, both get 250" 2 \
		"$(smtp_count "$T" RCPT "$RCPT_OK")" "$T"
	assert_reply "accept at RCPT covers the recipient, not the message: 5000 bytes refused" \
		"$T" DOT 1 "552 5.3.4 Message too big (limit 1K)"
	assert_grep "accept at RCPT: decision logged" "$(decision_re allow-multi rcpt accept)" \
		"$MILTER_LOG"
	assert_milter_stop "SIGTERM: exit status 0 (accept run)"
fi

# ------------------------------------------------------------ reply texts

CONF=$PM_TMP/multiline.conf
{
	milter_config_head
	cat <<'EOF'
policies = (
  { name = "rcpts-ml"; type = "recipients"; max = 1; action = "reject";
    reply = [ "550 5.7.1 Too many recipients for one message",
              "Send the others in a second message" ]; }
);
EOF
} >"$CONF"
if assert_milter_start "milter starts (multi-line reply)" "$CONF"; then
	T=$(smtp_send_n_rcpts 2)
	assert_reply "multi-line reply: RCPT 2 gets both lines with code and enhanced code" \
		"$T" RCPT 2 $'550-5.7.1 Too many recipients for one message\n550 5.7.1 Send the others in a second message'
	assert_reply_match "multi-line reply: the message goes to the first" "$T" DOT 1 "$QUEUED"
	assert_milter_stop "SIGTERM: exit status 0 (multi-line run)"
fi

CONF=$PM_TMP/percent.conf
{
	milter_config_head
	cat <<'EOF'
policies = (
  { name = "rcpts-pct"; type = "recipients"; max = 1; action = "reject";
    reply = "550 5.7.1 Recipient quota 100% used"; }
);
EOF
} >"$CONF"
if assert_milter_start "milter starts (% in a reply)" "$CONF"; then
	T=$(smtp_send_n_rcpts 2)
	assert_reply "% in a reply: the client sees a single %" "$T" RCPT 2 \
		"550 5.7.1 Recipient quota 100% used"
	assert_milter_stop "SIGTERM: exit status 0 (% run)"
fi

# No enhanced code, and text that starts with a client-chosen digit: Postfix
# would read "4x..." as an enhanced code of the wrong class, call the milter
# broken and apply milter_default_action (with accept: skip every policy).
# The milter sends class.0.0, so the reply stands as configured.
CONF=$PM_TMP/digit.conf
{
	milter_config_head
	cat <<'EOF'
policies = (
  { name = "rcpts-digit"; type = "recipients"; max = 1; action = "reject";
    reply = "550 ${sender} may send to one recipient at a time"; }
);
EOF
} >"$CONF"
if assert_milter_start "milter starts (reply without enhanced code)" "$CONF"; then
	T=$(smtp_send --from '4x%y@example.org' --to a@example.net --to b@example.net --body-bytes 100)
	assert_reply "a sender starting with a digit cannot break the reply (class.0.0 added, % kept)" \
		"$T" RCPT 2 "550 5.0.0 4x%y@example.org may send to one recipient at a time"
	assert_reply_match "and the first recipient still gets the message" "$T" DOT 1 "$QUEUED"
	assert_milter_stop "SIGTERM: exit status 0 (digit run)"
fi

CONF=$PM_TMP/vars.conf
{
	milter_config_head
	cat <<'EOF'
policies = (
  { name = "vars-size"; type = "size"; max = "10K"; action = "reject";
    reply = "552 5.3.4 ${size} bytes from ${sender} over ${limit} (${policy})"; },
  { name = "vars-rcpts"; type = "recipients"; max = 1; action = "reject";
    reply = "550 5.5.3 ${policy} refused ${rcpt} from ${sender} at ${client_ip} (limit ${limit})"; }
);
EOF
} >"$CONF"
if assert_milter_start "milter starts (reply variables)" "$CONF"; then
	T=$(smtp_send --size 20000)
	assert_reply "variables: \${size} \${sender} \${limit} \${policy} in a size reply" "$T" RCPT 1 \
		"552 5.3.4 20000 bytes from sender@example.org over 10K (vars-size)"
	T=$(smtp_send_n_rcpts 2)
	assert_reply "variables: \${policy} \${rcpt} \${sender} \${client_ip} \${limit} in a recipients reply" \
		"$T" RCPT 2 \
		"550 5.5.3 vars-rcpts refused r2@example.net from sender@example.org at 127.0.0.1 (limit 1)"
	assert_milter_stop "SIGTERM: exit status 0 (variables run)"
fi

# ------------------------------------------------------------ dry run
CONF=$PM_TMP/dryrun.conf
{
	milter_config_head pmdry:
	cat <<'EOF'
policies = (
  { name = "dry-rcpts"; type = "recipients"; max = 1; action = "reject";
    reply = "550 5.5.3 Too many recipients"; dry_run = true; }
);
EOF
} >"$CONF"
if assert_milter_start "milter starts (dry run)" "$CONF"; then
	T=$(smtp_send_n_rcpts 3)
	assert_eq "dry run: all 3 recipients get 250" 3 "$(smtp_count "$T" RCPT "$RCPT_OK")" "$T"
	assert_reply_match "dry run: the message is accepted" "$T" DOT 1 "$QUEUED"
	assert_grep "dry run: logged with policy=dry-rcpts and dry_run=yes" \
		'policy=dry-rcpts .*dry_run=yes' "$MILTER_LOG"
	assert_stats "dry run: stats count dry_run=2 and no rejection" pmdry:stats:dry-rcpts \
		checked=3 dry_run=2 rejected=0
	assert_milter_stop "SIGTERM: exit status 0 (dry-run run)"
fi

# ------------------------------------------------------------ exemption
# The refusals above all came from 127.0.0.1; exempt 127.0.0.0/8 and the
# same traffic passes.
CONF=$PM_TMP/exempt.conf
base_config 3 pmexempt: '"127.0.0.0/8"' >"$CONF"
if assert_milter_start "milter starts (127.0.0.0/8 exempt)" "$CONF"; then
	T=$(smtp_send_n_rcpts 5)
	assert_eq "exempt client: all 5 recipients get 250" 5 "$(smtp_count "$T" RCPT "$RCPT_OK")" "$T"
	assert_reply_match "exempt client: 5 recipients, message accepted" "$T" DOT 1 "$QUEUED"
	T=$(smtp_send --size 20000)
	assert_reply "exempt client: SIZE=20000 accepted at RCPT" "$T" RCPT 1 "$RCPT_OK"
	T=$(smtp_send --body-bytes 20000)
	assert_reply_match "exempt client: 20000 bytes accepted after DATA" "$T" DOT 1 "$QUEUED"
	assert_milter_stop "SIGTERM: clean exit, status 0 (last run)"
fi

# ------------------------------------------------------------ -n --connect, Redis down at start

# -n --connect reaches Redis and runs what the daemon runs there; an ACL
# that denies a command is named.
CONF=$PM_TMP/connect.conf
base_config 3 pmconn: >"$CONF"
out=$("$PM_MILTER_BIN" -n --connect -c "$CONF" 2>&1)
assert_eq "-n --connect: exit 0 with a reachable Redis" 0 "$?" "$out"
assert_contains "-n --connect: says Redis is OK" "Redis OK: connected" "$out"
redis_cli ACL SETUSER pm-nohincr on '>pm-nohincr-pw' '~*' '+@all' '-hincrby' >/dev/null
redis_cli ACL SETUSER pm-noset on '>pm-noset-pw' '~*' '+@all' '-set' >/dev/null
# What only a refusal (its record) or a live lookup runs: ZADD, ZMSCORE.
redis_cli ACL SETUSER pm-nozadd on '>pm-nozadd-pw' '~*' '+@all' '-zadd' >/dev/null
redis_cli ACL SETUSER pm-nozmscore on '>pm-nozmscore-pw' '~*' '+@all' '-zmscore' >/dev/null
for u in nohincr:HINCRBY noset:SET nozadd:ZADD nozmscore:ZMSCORE; do
	echo "pm-${u%%:*}-pw" >"$PM_TMP/${u%%:*}.pass"
	chmod 600 "$PM_TMP/${u%%:*}.pass"
	sed "s|^redis = { address = \\([^;]*\\);|redis = { address = \\1; username = \"pm-${u%%:*}\"; password_file = \"$PM_TMP/${u%%:*}.pass\";|" \
		"$CONF" >"$PM_TMP/acl-${u%%:*}.conf"
	out=$("$PM_MILTER_BIN" -n --connect -c "$PM_TMP/acl-${u%%:*}.conf" 2>&1)
	assert_eq "-n --connect: an ACL without ${u#*:}: exit 1" 1 "$?" "$out"
	assert_contains "-n --connect: names ${u#*:} as denied" \
		"the Redis user may not run ${u#*:}" "$out"
done
sed "s|unix:$PM_REDIS_SOCK|unix:$PM_TMP/no-redis.sock|" "$CONF" >"$PM_TMP/down.conf"
out=$("$PM_MILTER_BIN" -n --connect -c "$PM_TMP/down.conf" 2>&1)
assert_eq "-n --connect: exit 1 without Redis" 1 "$?" "$out"
assert_contains "-n --connect: says why" "no-redis.sock: connect: No such file" "$out"

# Started with Redis unreachable: an error-level line that says what to
# check, again after 1 s and 2 s (the pause doubles), until Redis answers.
if assert_milter_start "milter starts with Redis unreachable" "$PM_TMP/down.conf"; then
	wait_for_milter_log 'Trying again in 2 s' 8 >/dev/null
	assert_eq "Redis unreachable at start: error lines at 1 s, then 2 s" 2 \
		"$(grep -cE 'error: Redis does not answer: .*Check that redis-server runs .*Trying again in (1|2) s' "$MILTER_LOG")" \
		"$(tail -n 5 "$MILTER_LOG")"
	assert_milter_stop "SIGTERM: exit status 0 (Redis unreachable)"
fi

pm_finish
