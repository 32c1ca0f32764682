#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
#
# ctl.sh - policy-milter-ctl against a real Redis, with the daemon serving a
# real Postfix (issue 10).  Every change made with the tool is shown to take
# effect on the next SMTP transaction, with no reload (the milter's log is
# checked for none):
#
#   1. check: the same verdicts as policy-milter -n (0, or 1 with file:line)
#   2. show, top (and top --watch) and stats after 5 messages from one sender (in four
#      spellings) against a limit of 3: usage 3 of 3, full, retry within the
#      window; top names the key with 2 refusals; stats counts 5 checked
#      and 2 rejected; --json forms parsed
#   3. override: 5 for one key lets 2 more through and the refusal says
#      "at most 5"; list, del (then exit 1 for a second del) and the limit
#      of 3 again; 0 refuses a key at once; --for expires by itself
#   4. reset: the key's usage forgotten, a message accepted again
#   5. block: add (any spelling) refuses the next message (at its first
#      RCPT: the live list is looked up there, delay_mail_lookups), list
#      and --json list show it, del lets it through, --for expires by
#      itself; entries that can never match are refused (exit 2)
#   6. explain: the verdict and the exact reply line the client got, the
#      same recipients accepted as by the daemon when a list refuses one,
#      exit 1 for a refusal and 0 for an acceptance, and DEBUG DIGEST
#      unchanged across it, with an expired live entry and an expired
#      override present that a counting call would have deleted
#   7. usage errors exit 2
#
# Needs root (Postfix's master), postfix, swaks, redis-server, python3;
# skips (77) without them.  TAP on stdout.  Runs in about half a minute.

# SC2016: reply templates hold ${...} for the milter, not for the shell.
# shellcheck disable=SC2016

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PM_REDIS_ARGS="--enable-debug-command yes"
pm_setup

CTL_BIN=${PM_CTL_BIN:-$top_builddir/policy-milter-ctl}
[ -x "$CTL_BIN" ] || pm_bail "$CTL_BIN is not built"
QUEUED='^250 2\.0\.0 Ok: queued as [0-9A-Za-z]+$'

redis_start || pm_bail "cannot start Redis"
postfix_start || pm_bail "cannot start Postfix"
redis_cli DEBUG DIGEST >/dev/null 2>&1 || pm_bail "DEBUG DIGEST is not available"

CONF=$PM_TMP/ctl.conf
{
	milter_config_head pmctl:
	cat <<'EOF'
policies = (
  { name = "blocked-senders"; type = "block"; match = "sender";
    entries = [ "static@bad.example" ]; redis = true; action = "reject"; },
  { name = "per-sender"; type = "ratelimit"; key = [ "sender" ];
    count = "messages"; limit = 3; window = "1h"; action = "reject";
    reply = "550 5.7.1 ${sender}: at most ${limit} messages per ${window}"; },
  { name = "per-domain"; type = "ratelimit"; key = [ "sender_domain", "rcpt_domain" ];
    count = "recipients"; limit = 1000; window = "10m"; action = "tempfail"; }
);
EOF
} >"$CONF"

# ctl ARGS... : run the tool on our configuration; its output in OUT, status in RC.
ctl() {
	OUT=$("$CTL_BIN" -c "$CONF" "$@" 2>&1)
	RC=$?
}

# json EXPR : evaluate a Python expression on the JSON document in $OUT (as d).
json() {
	printf '%s' "$OUT" | python3 -c 'import json, sys; d = json.load(sys.stdin); print('"$1"')' 2>&1
}

# One message from FROM to rcpt@example.net; prints the RCPT reply.
rcpt_reply() {  # rcpt_reply FROM
	local t
	t=$(smtp_send --from "$1")
	smtp_reply "$t" RCPT
}

# Is the message from FROM accepted (queued)?
queued_from() {  # queued_from FROM
	local t
	t=$(smtp_send --from "$1")
	printf '%s\n' "$t" | grep -Eq "^<-  ${QUEUED#^}"
}

digest() { redis_cli DEBUG DIGEST; }

# The digest once the daemon has stopped writing: it flushes its statistics
# a second after traffic, and that must not pass for a change by explain.
quiet_digest() {
	local d1 d2 i=0
	d2=$(digest)
	until [ "$d1" = "$d2" ] || [ "$i" -ge 10 ]; do
		d1=$d2
		sleep 1.2
		d2=$(digest)
		i=$((i + 1))
	done
	echo "$d2"
}

assert_milter_start "the milter starts" "$CONF" || pm_bail "no milter"

# ---------------------------------------------------------------- 1. check
ctl check
assert_eq "check: exit 0 on a good configuration" 0 "$RC" "$OUT"
assert_contains "check: says so" "configuration OK: $CONF" "$OUT"
BAD=$PM_TMP/bad.conf
sed 's/limit = 3;/limit = "three";/' "$CONF" >"$BAD"
OUT=$("$CTL_BIN" -c "$BAD" check 2>&1); RC=$?
assert_eq "check: exit 1 on a bad configuration" 1 "$RC" "$OUT"
assert_match "check: the error names file:line" "^$(pm_ere_quote "$BAD"):[0-9]+: " "$OUT"
"$PM_MILTER_BIN" -n -c "$BAD" >/dev/null 2>&1
assert_eq "check: the same status as policy-milter -n" 1 "$?"

# ---------------------------------------------------------------- 2. show, top, stats
replies=()
for from in alice@example.org Alice@Example.ORG '"alice"@example.org' \
	ALICE@example.org. alice@EXAMPLE.org; do
	replies+=("$(rcpt_reply "$from")")
done
ok=0 refused=0
for r in "${replies[@]}"; do
	case $r in
	'250 2.1.5 Ok') ok=$((ok + 1)) ;;
	'550 5.7.1 alice@example.org: at most 3 messages per 60m') refused=$((refused + 1)) ;;
	esac
done
assert_eq "traffic: 3 of 5 spellings of one sender accepted, 2 refused" "3 2" "$ok $refused" \
	"$(printf '%s\n' "${replies[@]}")"

ctl show per-sender 'Alice@Example.ORG.'
assert_eq "show: exit 0" 0 "$RC" "$OUT"
assert_contains "show: the canonical key" "key     alice@example.org" "$OUT"
assert_contains "show: usage 3 of 3" "usage   3 of 3 in the last 60m" "$OUT"
assert_contains "show: full, with when there is room" "full    the next one is refused; room again in" "$OUT"
ctl --json show per-sender '"alice"@example.org'
assert_eq "show --json: count, limit, full, no override" "3 3 True None" \
	"$(json 'd["count"], d["limit"], d["full"], d["override"]')" "$OUT"
retry=$(json 'd["retry_after_seconds"]')
# At most a window and one bucket (1/60 of it): the oldest bucket leaves
# the window when its whole width has.
assert_true "show --json: retry after within the window (3500-3660 s): $retry" \
	test "$retry" -gt 3500 -a "$retry" -le 3660

ctl --json top per-sender
assert_eq "top --json: the key refused, 2 refusals, usage 3 of 3" \
	"alice@example.org 2 3 3" \
	"$(json 'd["keys"][0]["key"], d["keys"][0]["refusals"], d["keys"][0]["count"], d["keys"][0]["limit"]')" "$OUT"
ctl top per-sender -n 5
assert_match "top: a table row for the key" '^ +2 +[0-9]+s ago +3/3 +alice@example\.org$' "$OUT"
ctl top per-domain
assert_contains "top: a policy with no refusal says so" "no key of per-domain was refused" "$OUT"
# --watch redraws (clear screen, home) until interrupted: 2.5 s at 1 s.
OUT=$(timeout -s INT 2.5 "$CTL_BIN" -c "$CONF" top per-sender --watch 1 2>&1)
assert_true "top --watch: at least 2 screens in 2.5 s, each with the key" \
	test "$(printf '%s' "$OUT" | grep -o $'\033\[H\033\[2J' | wc -l)" -ge 2 -a \
	"$(printf '%s\n' "$OUT" | grep -c 'alice@example\.org$')" -ge 2

# The daemon flushes its counts once a second.
PM_STATS_TIMEOUT=5 assert_stats "stats: the daemon's counts are in Redis" \
	pmctl:stats:per-sender rejected=2 checked=5 >/dev/null
ctl --json stats per-sender
assert_eq "stats --json: 5 checked, 2 rejected, 0 accepted" "5 2 0" \
	"$(json 'd["policies"][0]["checked"], d["policies"][0]["rejected"], d["policies"][0]["accepted"]')" "$OUT"
ctl stats
assert_match "stats: a row per policy" '^per-sender +5 +2 ' "$OUT"

# ---------------------------------------------------------------- 3. override
ctl override set per-sender ALICE@example.org --limit 5
assert_eq "override set: exit 0" 0 "$RC" "$OUT"
assert_true "override 5: the next message is accepted with no reload" queued_from alice@example.org
assert_true "override 5: and one more" queued_from alice@example.org
assert_eq "override 5: the 6th is refused, the reply names the limit in force" \
	'550 5.7.1 alice@example.org: at most 5 messages per 60m' "$(rcpt_reply alice@example.org)"
ctl show per-sender alice@example.org
assert_contains "show: the override" "limit   5: override until removed (configured: 3)" "$OUT"
ctl --json override list per-sender
assert_eq "override list --json: the key, its limit, no expiry" "alice@example.org 5 None" \
	"$(json 'd["overrides"][0]["key"], d["overrides"][0]["limit"], d["overrides"][0]["expires"]')" "$OUT"
ctl override del per-sender alice@example.org
assert_eq "override del: exit 0" 0 "$RC" "$OUT"
ctl override del per-sender alice@example.org
assert_eq "override del again: exit 1 (not found)" 1 "$RC" "$OUT"
assert_eq "override removed: the configured limit again" \
	'550 5.7.1 alice@example.org: at most 3 messages per 60m' "$(rcpt_reply alice@example.org)"
ctl override set per-sender bob@example.org --limit 0
assert_eq "override 0: the first message of a fresh key is refused" \
	'550 5.7.1 bob@example.org: at most 0 messages per 60m' "$(rcpt_reply bob@example.org)"
ctl override set per-sender carol@example.org --limit 0 --for 2s
assert_eq "override 0 for 2 s: refused meanwhile" \
	'550 5.7.1 carol@example.org: at most 0 messages per 60m' "$(rcpt_reply carol@example.org)"
sleep 2.3
assert_true "override for 2 s: gone by itself afterwards" queued_from carol@example.org

# ---------------------------------------------------------------- 4. reset
ctl reset per-sender alice@example.org
assert_eq "reset: exit 0" 0 "$RC" "$OUT"
assert_true "reset: the key's next message is accepted" queued_from alice@example.org
ctl --json show per-sender alice@example.org
assert_eq "reset: usage 1 after that message" 1 "$(json 'd["count"]')" "$OUT"
ctl reset per-sender nobody@example.org
assert_eq "reset of a key with no usage: exit 1" 1 "$RC" "$OUT"

# ---------------------------------------------------------------- 5. block
assert_true "block: dave is accepted before" queued_from dave@evil.example
ctl block add blocked-senders 'Dave@Evil.Example.'
assert_eq "block add: exit 0" 0 "$RC" "$OUT"
# The sender list waits for the first RCPT (delay_mail_lookups, on by
# default; the rate limits decide at RCPT): MAIL FROM passes, RCPT gets
# the list's reply.
t=$(smtp_send --from dave@evil.example)
assert_eq "block add: the next message is refused at RCPT, no reload" \
	'250 2.1.0 Ok / 550 5.7.1 Access denied by policy blocked-senders' \
	"$(smtp_reply "$t" MAIL) / $(smtp_reply "$t" RCPT)" "$t"
# explain shows the same: MAIL delayed, the first RCPT refused with the
# list's reply (the one the client just got), the second with the same.
LIST_NO='550 5.7.1 Access denied by policy blocked-senders'
ctl --json explain --client 127.0.0.1 --sender dave@evil.example --rcpt a@example.net \
	--rcpt b@example.net
assert_eq "explain --json, listed sender: MAIL delayed; RCPT 1 and 2 refused with the client's reply" \
	"mail True continue | rcpt reject blocked-senders mail $LIST_NO | rcpt reject $LIST_NO 1" \
	"$(json '" | ".join(["%s %s %s" % (d["stages"][1]["stage"], d["stages"][1].get("delayed"), d["stages"][1]["verdict"]), "%s %s %s %s %s" % (d["stages"][2]["stage"], d["stages"][2]["verdict"], d["stages"][2]["by"], d["stages"][2]["policies"][0]["stage"], d["stages"][2]["reply"]), "%s %s %s" % (d["stages"][3]["stage"], d["stages"][3]["verdict"], d["stages"][3]["reply"])])') $RC" "$OUT"
ctl explain --client 127.0.0.1 --sender dave@evil.example --rcpt a@example.net \
	--rcpt b@example.net
assert_eq "explain, listed sender: MAIL waits, the list shown under the first RCPT" \
	"  its live lists wait for the first RCPT (delay_mail_lookups): see there|  MAIL FROM, delayed to this recipient:|  the message is refused (see the first RCPT): the same reply" \
	"$(printf '%s\n' "$OUT" | grep -E '^  (its live lists|MAIL FROM, delayed|the message is refused)' | paste -sd '|')" "$OUT"
assert_match "explain, listed sender: the verdict names the list and its reply" \
	"^verdict: refused at the first RCPT by blocked-senders \\(MAIL's live list, delay_mail_lookups\\): $LIST_NO\$" \
	"$(printf '%s\n' "$OUT" | grep '^verdict:')" "$OUT"
# Without --rcpt, MAIL is decided at MAIL (a delayed lookup would never run).
ctl explain --client 127.0.0.1 --sender dave@evil.example
assert_eq "explain without --rcpt, listed sender: refused at MAIL, exit 1" \
	"verdict: refused at mail by blocked-senders: $LIST_NO 1" \
	"$(printf '%s\n' "$OUT" | grep '^verdict:') $RC" "$OUT"
ctl block list blocked-senders
assert_match "block list: the canonical entry, never expiring" '^never +dave@evil\.example$' "$OUT"
ctl --json block list blocked-senders
assert_eq "block list --json" "dave@evil.example None" \
	"$(json 'd["entries"][0]["entry"], d["entries"][0]["expires"]')" "$OUT"
ctl block del blocked-senders DAVE@evil.example
assert_eq "block del: exit 0" 0 "$RC" "$OUT"
assert_true "block del: accepted again" queued_from dave@evil.example
ctl block del blocked-senders dave@evil.example
assert_eq "block del again: exit 1 (not found)" 1 "$RC" "$OUT"
ctl block add blocked-senders .spam.example --for 2s
t=$(smtp_send --from x@mx.spam.example)
assert_eq "block add .domain --for 2s: a subdomain refused meanwhile (at RCPT)" \
	'250 2.1.0 Ok / 550 5.7.1 Access denied by policy blocked-senders' \
	"$(smtp_reply "$t" MAIL) / $(smtp_reply "$t" RCPT)" "$t"
sleep 2.3
assert_true "block --for 2s: gone by itself afterwards" queued_from x@mx.spam.example
ctl block add blocked-senders '/regex/'
assert_eq "block add: a regular expression is refused (exit 2)" 2 "$RC" "$OUT"
ctl block add blocked-senders example.org
assert_eq "block add: a bare domain for match = sender is refused (exit 2)" 2 "$RC" "$OUT"
ctl block add per-sender x@example.org
assert_eq "block add: a rate limit has no live list (exit 2)" 2 "$RC" "$OUT"

# ---------------------------------------------------------------- 6. explain
# Things a counting call would delete: an expired live entry that the
# lookup of erin's MAIL passes, and an expired override of her key.
for i in 1 2 3; do queued_from erin@example.org >/dev/null; done
ctl block add blocked-senders erin@example.org --for 1s
ctl override set per-sender erin@example.org --limit 9 --for 1s
sleep 1.3
before=$(quiet_digest)
ctl explain --client 127.0.0.1 --helo client.test.example --sender Erin@Example.ORG \
	--rcpt rcpt@example.net
after=$(digest)
assert_eq "explain: DEBUG DIGEST unchanged (nothing counted, nothing deleted)" \
	"$before" "$after" "$OUT"
assert_eq "explain: exit 1 for a refused message" 1 "$RC" "$OUT"
assert_contains "explain: the usage against the limit" \
	"per-sender           ratelimit  key erin@example.org: 3 of 3 in 60m, this one 1; reject" "$OUT"
t=$(smtp_send --from erin@example.org)
got=$(smtp_reply "$t" RCPT)
assert_contains "explain: the exact reply line the client gets ($got)" "      $got" "$OUT"
ctl --json explain --client 127.0.0.1 --sender frank@example.org --rcpt a@example.net \
	--rcpt b@example.net --size 20K
assert_eq "explain --json: accepted, 2 of 2 recipients, nothing changed, exit 0" \
	"accepted 2 2 False 0" \
	"$(json 'd["verdict"], d["accepted_recipients"], d["recipients"], d["changed"]') $RC" \
	"$OUT"
before=$(quiet_digest)
ctl explain --client 127.0.0.1 --sender dave@evil.example --rcpt a@example.net
after=$(digest)
assert_eq "explain (accepted): DEBUG DIGEST unchanged" "$before" "$after" "$OUT"
assert_eq "explain (accepted): exit 0" 0 "$RC" "$OUT"

# A recipient that a list refuses reserves nothing in the daemon (the
# count before it in the file is only checked): explain must not count it
# either.  Its own configuration, so that the limit of 2 meets no other test.
assert_milter_stop "the milter stops for the next configuration"
CONF2=$PM_TMP/ctl2.conf
{
	milter_config_head pmctl2:
	cat <<'EOF'
policies = (
  { name = "per-sender-rcpts"; type = "ratelimit"; key = [ "sender" ];
    count = "recipients"; limit = 2; window = "1h"; action = "reject"; },
  { name = "blocked-rcpts"; type = "block"; match = "rcpt";
    entries = [ "listed@example.net" ]; action = "reject"; }
);
EOF
} >"$CONF2"
assert_milter_start "the milter starts with a recipient limit and list" "$CONF2" ||
	pm_bail "no milter"
OUT=$("$CTL_BIN" -c "$CONF2" explain --client 127.0.0.1 --sender grace@example.org \
	--rcpt listed@example.net --rcpt a@example.net --rcpt b@example.net 2>&1)
assert_contains "explain: a recipient refused by a list counts nothing (2 of 3 accepted)" \
	"verdict: accepted for 2 of 3 recipients" "$OUT"
t=$(smtp_send --from grace@example.org --to listed@example.net --to a@example.net \
	--to b@example.net)
assert_eq "explain: ... as the daemon serving Postfix does" \
	"2 550 5.7.1 Access denied by policy blocked-rcpts" \
	"$(smtp_count "$t" RCPT '250 2.1.5 Ok') $(smtp_reply "$t" RCPT 1)" "$t"

# ---------------------------------------------------------------- 7. usage
ctl show per-sender
assert_eq "usage: show without a key: exit 2" 2 "$RC" "$OUT"
ctl show per-domain example.org
assert_eq "usage: a key with too few parts: exit 2, names the parts" "2" "$RC" "$OUT"
assert_contains "usage: ... naming them" "give its key as: sender_domain rcpt_domain" "$OUT"
ctl show no-such-policy x
assert_eq "usage: an unknown policy: exit 2" 2 "$RC" "$OUT"
OUT=$("$CTL_BIN" -c "$PM_TMP/missing.conf" stats 2>&1); RC=$?
assert_eq "usage: a missing configuration: exit 2" 2 "$RC" "$OUT"
ctl frobnicate
assert_eq "usage: an unknown command: exit 2" 2 "$RC" "$OUT"

assert_eq "no reload was needed for any of it" 0 \
	"$(grep -cE 'configuration reloaded|reload' "$MILTER_LOG")"
assert_milter_stop "the milter stops cleanly"
pm_finish
