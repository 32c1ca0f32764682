#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
#
# block.sh - the block policy type (static and live lists) behind a real
# Postfix (issue 4, acceptance items 1 to 5).
#
# Every check compares the exact SMTP replies a client sees, at the stage
# where the refusal must come and at the stages before it:
#
#   1. a table of cases through one milter with a policy of every match kind
#      (helo, client, sender, sender_domain, sasl_user, rcpt, rcpt_domain) and
#      every entry kind (exact address, @domain, .domain, the null sender,
#      quoted local parts, upper case, regexes /.../i), blocking what it
#      should and nothing else, near-misses included; client entries one by
#      one (over loopback the client is always 127.0.0.1), each with its own
#      configuration
#   2. an allow list (action accept) before a block list: a trusted client
#      passes although its sender is blocked
#   3. live lists in Redis (redis = true): entries added, removed and
#      expiring while one SMTP session goes on take effect at the next
#      transaction; client networks at the next connection.  A live sender
#      list is looked up with the first RCPT (delay_mail_lookups, on by
#      default, and a policy decides at RCPT here): MAIL FROM gets 250 and
#      the first RCPT the list's reply
#   4. Redis down: static entries still refuse, live lists follow
#      on_redis_error (accept: pass; tempfail: 451 4.3.0), and decide again
#      once Redis is back
#   5. a list file with one bad line: -n and start-up refuse it with
#      file:line; a running milter whose file goes bad (new mtime, and
#      SIGUSR1) logs file:line and keeps blocking with the old list; the
#      fixed file takes effect within about 2 s without SIGUSR1
#
# What Postfix (3.7) does with a milter's refusal before MAIL, as observed
# and asserted below:
#   - at connect, 5xx: the client gets Postfix's own banner "554 <myhostname>
#     ESMTP not accepting connections"; the milter's text is only in
#     Postfix's log ("milter-reject: CONNECT from ...: <the milter's reply>")
#   - at connect, 421: "421 <myhostname> Service unavailable - try again
#     later", and the connection is closed
#   - at connect, other 4xx: the 220 banner, 250 to EHLO, then the milter's
#     reply to every MAIL FROM
#   - at HELO, 5xx or 4xx other than 421: 250 to EHLO, then the milter's
#     reply to MAIL FROM (Postfix defers it, like smtpd_delay_reject)
#   - at HELO, 421: the milter's reply to EHLO, and the connection is closed
#
# The sasl_user cases authenticate through a stand-in for Dovecot's auth
# socket (a few lines of Python speaking its protocol, any user with the
# password "secret"), so no SASL server needs to be installed.
#
# Needs root (Postfix's master), postfix, swaks, redis-server, python3;
# skips (77) without them.  TAP on stdout.  Runs in well under a minute.

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pm_setup

MAIL_OK='250 2.1.0 Ok'
RCPT_OK='250 2.1.5 Ok'
EHLO_OK='250-mx.test.example'
QUEUED='^250 2\.0\.0 Ok: queued as [0-9A-Za-z]+$'
BANNER='220 mx.test.example ESMTP Postfix'
# Postfix's own words for a 5xx milter refusal at connect.
CONNECT_REFUSED='554 mx.test.example ESMTP not accepting connections'
CONNECT_421='421 mx.test.example Service unavailable - try again later'

AUTH_SOCK=$PM_TMP/dovecot-auth.sock

# ---------------------------------------------------------------- helpers

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# Reloads are asynchronous: count their outcomes in the milter's log.
reload_outcomes() {
	grep -cE 'configuration reloaded|reload failed' "$MILTER_LOG" 2>/dev/null
}

# SIGUSR1, then wait (up to 5 s) for the reload to end, well or not.
milter_reload_wait() {
	local before i=0
	before=$(reload_outcomes)
	milter_reload
	while [ "$(reload_outcomes)" -le "$before" ]; do
		[ "$i" -ge 50 ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

# One SMTP session through swaks.  AUTH "-" for none, else that user with
# the password "secret".  Extra swaks options may follow.
swaks_session() {  # swaks_session HELO AUTH FROM TO [swaks options...]
	local args=(--server "127.0.0.1:$SMTP_PORT" --helo "$1" --from "$3" --to "$4"
		--timeout 20 --suppress-data)
	[ "$2" != - ] && args+=(--auth PLAIN --auth-user "$2" --auth-password secret)
	shift 4
	swaks "${args[@]}" "$@" 2>&1
}

# The replies of one session as one line: EHLO (first line), AUTH, MAIL, RCPT.
replies_of() {  # replies_of TRANSCRIPT
	local auth
	auth=$(printf '%s\n' "$1" | awk '/^ -> AUTH/ { a = 1; next }
		a && /^(<-  |<\*\* )/ { print substr($0, 5); exit }')
	printf 'EHLO %s |%s MAIL %s | RCPT %s' "$(smtp_reply "$1" EHLO | head -n 1)" \
		"${auth:+ AUTH $auth |}" "$(smtp_reply "$1" MAIL)" "$(smtp_reply "$1" RCPT)"
}

# One row of the table: the session must get exactly these replies; "-"
# for a RCPT that is never sent (swaks quits after a refused MAIL).
row() {  # row LABEL HELO AUTH FROM TO MAIL-REPLY RCPT-REPLY
	local t want auth=''
	t=$(swaks_session "$2" "$3" "$4" "$5" --quit-after RCPT)
	[ "$3" != - ] && auth=' AUTH 235 2.7.0 Authentication successful |'
	want="EHLO $EHLO_OK |$auth MAIL $6 | RCPT ${7#-}"
	assert_eq "$1" "$want" "$(replies_of "$t")" "$t"
}

# ---------------------------------------------------------------- set-up

redis_start || pm_bail "cannot start Redis"
# SASL for the sasl_user cases: Postfix asks the stand-in for Dovecot.
auth_stub_start dovecot "$AUTH_SOCK" || pm_bail "cannot start the stand-in auth service"
postfix_start smtpd_sasl_auth_enable=yes smtpd_sasl_type=dovecot \
	"smtpd_sasl_path=$AUTH_SOCK" || pm_bail "cannot start Postfix"
sasl_offered() {
	swaks --server "127.0.0.1:$SMTP_PORT" --quit-after EHLO 2>&1 | grep -q '^<-  250-AUTH .*PLAIN'
}
i=0
until sasl_offered || [ "$i" -ge 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
# Without it the sasl_user rows below fail too; this says why.
assert_true "set-up: Postfix offers AUTH PLAIN through the stand-in auth socket" sasl_offered

# ---------------------------------------------------------------- 5: at start
# A list file whose line 4 is bad: -n and start-up refuse it, naming the line.
LIST=$PM_TMP/senders.list
printf '# blocked senders\nspam@example.com\n\n@bad..example\n.bad2.example\n' >"$LIST"
CONF=$PM_TMP/start.conf
{
	milter_config_head pmstart:
	cat <<EOF
policies = (
  { name = "blocked-senders"; type = "block"; match = "sender";
    file = "$LIST"; action = "reject"; }
);
EOF
} >"$CONF"
out=$("$PM_MILTER_BIN" -n -c "$CONF" 2>&1)
rc=$?
assert_eq "bad list file: -n exits 1" 1 "$rc" "$out"
assert_match "bad list file: -n reports $LIST:4: and what is wrong" \
	"^$(pm_ere_quote "$LIST"):4: \"@bad\.\.example\": the domain has an empty label$" "$out"
assert_not_contains "bad list file: -n does not say 'configuration OK'" "configuration OK" "$out"
out=$(timeout 10 "$PM_MILTER_BIN" -f -c "$CONF" 2>&1)
rc=$?
assert_eq "bad list file: the daemon does not start (exit 78, EX_CONFIG)" 78 "$rc" "$out"
assert_contains "bad list file: start-up reports $LIST:4:" "$LIST:4: " "$out"
sed "s|$LIST|$PM_TMP/no-such.list|" "$CONF" >"$PM_TMP/start-missing.conf"
out=$("$PM_MILTER_BIN" -n -c "$PM_TMP/start-missing.conf" 2>&1)
rc=$?
assert_eq "missing list file: -n exits 1 and names the file" \
	"1 $PM_TMP/no-such.list: cannot open: No such file or directory" "$rc $out"
sed -i '4d' "$LIST"
out=$("$PM_MILTER_BIN" -n -c "$CONF" 2>&1)
rc=$?
assert_eq "list file fixed: -n says configuration OK" \
	"0 configuration OK: $CONF, 1 policies" "$rc $out"

# ---------------------------------------------------------------- 1: the table
CONF=$PM_TMP/table.conf
{
	milter_config_head pmtable:
	cat <<'EOF'
policies = (
  { name = "helo-allow"; type = "block"; match = "helo";
    entries = [ "trusted-helo.example" ]; action = "accept"; },
  { name = "blocked-helos"; type = "block"; match = "helo";
    entries = [ "helo.bad.example", ".helotree.example", "/^dyn-[0-9]+\\.isp\\.example$/i" ];
    action = "reject"; reply = "550 5.7.1 HELO name refused by ${policy}"; },
  { name = "later-helos"; type = "block"; match = "helo"; entries = [ "later.helo.example" ];
    action = "tempfail"; reply = "450 4.7.1 HELO ${client_ip} try later"; },
  { name = "closing-helos"; type = "block"; match = "helo"; entries = [ "close.helo.example" ];
    action = "tempfail"; reply = "421 4.7.0 HELO name not welcome, closing"; },
  { name = "other-clients"; type = "block"; match = "client";
    entries = [ "127.0.0.2", "127.0.1.0/24", "126.0.0.0/8", "::1", "2001:db8::/32",
                "::ffff:127.0.0.2", "/^10\\./" ];
    action = "reject"; reply = "554 5.7.1 Client ${client_ip} refused by ${policy}"; },
  { name = "partners"; type = "block"; match = "sender";
    entries = [ "ceo@allow3.example" ]; action = "accept"; },
  { name = "blocked-senders"; type = "block"; match = "sender";
    entries = [ "spam@example.com", "@bad.example", ".bad2.example", "<>",
                "\"john doe\"@example.com", "UPPER@Example.ORG",
                "/^bounce-[0-9]+@lists\\.example$/i" ];
    action = "reject"; reply = "550 5.7.1 Sender ${sender} is not accepted here"; },
  { name = "allow3-domain"; type = "block"; match = "sender_domain";
    entries = [ "allow3.example" ]; action = "reject";
    reply = "550 5.7.1 Domain refused by ${policy}"; },
  { name = "order4-domain"; type = "block"; match = "sender_domain";
    entries = [ "order4.example" ]; action = "reject";
    reply = "550 5.7.1 Domain refused by ${policy}"; },
  { name = "order4-allow"; type = "block"; match = "sender";
    entries = [ "ceo@order4.example" ]; action = "accept"; },
  { name = "blocked-sender-domains"; type = "block"; match = "sender_domain";
    entries = [ "sd.example", "@sdat.example", ".sdtree.example", "/\\.sdre\\.example$/" ];
    action = "reject"; reply = "550 5.7.1 Mail from the domain of ${sender} refused"; },
  { name = "blocked-sasl-users"; type = "block"; match = "sasl_user";
    entries = [ "mallory", ".evil.example", "/^test-[0-9]+$/i" ];
    action = "reject"; reply = "550 5.7.1 Submission refused for this account (${policy})"; },
  { name = "blocked-rcpts"; type = "block"; match = "rcpt";
    entries = [ "abuse@victim.example", "@rat.example", ".rtree.example",
                "\"x y\"@victim.example", "/^postmaster@/i" ];
    action = "reject"; reply = "550 5.7.1 Recipient ${rcpt} refused by ${policy}"; },
  { name = "blocked-rcpt-domains"; type = "block"; match = "rcpt_domain";
    entries = [ "rd.example", ".example.com", "/\\.rdre\\.example$/i" ];
    action = "reject"; reply = "550 5.7.1 No mail for ${rcpt} (${policy})"; }
);
EOF
} >"$CONF"

if assert_milter_start "milter starts with a block policy of every match kind" "$CONF"; then
	H=client.test.example
	HELO_NO='550 5.7.1 HELO name refused by blocked-helos'
	SD_NO() { echo "550 5.7.1 Mail from the domain of $1 refused"; }
	S_NO() { echo "550 5.7.1 Sender $1 is not accepted here"; }
	SASL_NO='550 5.7.1 Submission refused for this account (blocked-sasl-users)'
	R_NO() { echo "550 5.7.1 Recipient $1 refused by blocked-rcpts"; }
	RD_NO() { echo "550 5.7.1 No mail for $1 (blocked-rcpt-domains)"; }

	# helo: Postfix answers EHLO with 250 and refuses MAIL with the reply
	row "helo: exact name, refused at MAIL" helo.bad.example - ok@example.org r@example.net "$HELO_NO" -
	row "helo: upper case and a trailing dot" HELO.Bad.EXAMPLE. - ok@example.org r@example.net "$HELO_NO" -
	row "helo: subdomain of an exact name passes" x.helo.bad.example - ok@example.org r@example.net "$MAIL_OK" "$RCPT_OK"
	row "helo: exact name plus a label passes" helo.bad.example.net - ok@example.org r@example.net "$MAIL_OK" "$RCPT_OK"
	row "helo: .domain matches the domain itself" helotree.example - ok@example.org r@example.net "$HELO_NO" -
	row "helo: .domain matches a deep subdomain" a.b.helotree.example - ok@example.org r@example.net "$HELO_NO" -
	row "helo: .domain near miss (nothelotree.example) passes" nothelotree.example - ok@example.org r@example.net "$MAIL_OK" "$RCPT_OK"
	row "helo: regex /i" DYN-42.ISP.example - ok@example.org r@example.net "$HELO_NO" -
	row "helo: regex is anchored (dyn-42.isp.example.net passes)" dyn-42.isp.example.net - ok@example.org r@example.net "$MAIL_OK" "$RCPT_OK"
	row "helo: tempfail 450 at HELO, the reply comes at MAIL" later.helo.example - ok@example.org r@example.net "450 4.7.1 HELO 127.0.0.1 try later" -
	T=$(swaks_session close.helo.example - ok@example.org r@example.net --quit-after RCPT)
	assert_eq "helo: tempfail 421 at HELO, the reply comes at EHLO" \
		"EHLO 421 4.7.0 HELO name not welcome, closing | MAIL  | RCPT " "$(replies_of "$T")" "$T"
	assert_true "helo: tempfail 421 at HELO, the server closed the session" \
		smtp_closed_by_server "$T"
	row "helo: allow list covers the connection (blocked sender passes)" trusted-helo.example - spam@example.com r@example.net "$MAIL_OK" "$RCPT_OK"

	# sender (the client list above holds only near-misses of 127.0.0.1:
	# every case that passes shows that none of them matches)
	row "sender: exact address" $H - spam@example.com r@example.net "$(S_NO spam@example.com)" -
	row "sender: exact address in upper case" $H - SPAM@EXAMPLE.COM r@example.net "$(S_NO spam@example.com)" -
	row "sender: exact address with a trailing dot" $H - spam@example.com. r@example.net "$(S_NO spam@example.com)" -
	row "sender: other local part passes" $H - spam2@example.com r@example.net "$MAIL_OK" "$RCPT_OK"
	row "sender: same local part at a subdomain passes" $H - spam@mail.example.com r@example.net "$MAIL_OK" "$RCPT_OK"
	row "sender: @domain" $H - anyone@bad.example r@example.net "$(S_NO anyone@bad.example)" -
	row "sender: @domain does not cover subdomains" $H - anyone@sub.bad.example r@example.net "$MAIL_OK" "$RCPT_OK"
	row "sender: .domain matches the domain itself" $H - x@bad2.example r@example.net "$(S_NO x@bad2.example)" -
	row "sender: .domain matches a deep subdomain" $H - x@deep.sub.bad2.example r@example.net "$(S_NO x@deep.sub.bad2.example)" -
	row "sender: .domain near miss (notbad2.example) passes" $H - x@notbad2.example r@example.net "$MAIL_OK" "$RCPT_OK"
	row "sender: null sender <>" $H - '<>' r@example.net "$(S_NO '<>')" -
	row "sender: quoted local part" $H - '"john doe"@example.com' r@example.net "$(S_NO 'john doe@example.com')" -
	row "sender: quoted local part in other case" $H - '"John Doe"@EXAMPLE.com' r@example.net "$(S_NO 'john doe@example.com')" -
	row "sender: other quoted local part passes" $H - '"john.doe"@example.com' r@example.net "$MAIL_OK" "$RCPT_OK"
	# RFC 5322 3.2.4: "spam" quoted is the local part spam; Postfix queues
	# it as from=<spam@example.com>.  A blocked sender must not get through
	# by quoting its local part.
	row "sender: needlessly quoted local part is the blocked address" $H - '"spam"@example.com' r@example.net "$(S_NO 'spam@example.com')" -
	row "sender: entry written in upper case" $H - upper@example.org r@example.net "$(S_NO upper@example.org)" -
	row "sender: regex /i" $H - Bounce-123@Lists.Example r@example.net "$(S_NO bounce-123@lists.example)" -
	row "sender: regex near miss (letters) passes" $H - bounce-abc@lists.example r@example.net "$MAIL_OK" "$RCPT_OK"
	row "sender: regex is anchored (lists.example.net passes)" $H - bounce-123@lists.example.net r@example.net "$MAIL_OK" "$RCPT_OK"

	# sender_domain
	row "sender_domain: exact domain" $H - x@sd.example r@example.net "$(SD_NO x@sd.example)" -
	row "sender_domain: exact domain in upper case" $H - x@SD.EXAMPLE r@example.net "$(SD_NO x@sd.example)" -
	row "sender_domain: a plain domain does not cover subdomains" $H - x@sub.sd.example r@example.net "$MAIL_OK" "$RCPT_OK"
	row "sender_domain: @domain" $H - x@sdat.example r@example.net "$(SD_NO x@sdat.example)" -
	row "sender_domain: .domain subdomain" $H - x@a.sdtree.example r@example.net "$(SD_NO x@a.sdtree.example)" -
	row "sender_domain: .domain near miss (notsdtree.example) passes" $H - x@notsdtree.example r@example.net "$MAIL_OK" "$RCPT_OK"
	row "sender_domain: regex" $H - x@mx.sdre.example r@example.net "$(SD_NO x@mx.sdre.example)" -
	row "sender_domain: regex near miss passes" $H - x@sdre.example r@example.net "$MAIL_OK" "$RCPT_OK"

	# one stage, file order: an allow list before a block list, and after
	row "order: sender allow list before the domain block passes" $H - ceo@allow3.example r@example.net "$MAIL_OK" "$RCPT_OK"
	row "order: other senders of that domain are refused" $H - intern@allow3.example r@example.net "550 5.7.1 Domain refused by allow3-domain" -
	row "order: domain block before the sender allow list refuses" $H - ceo@order4.example r@example.net "550 5.7.1 Domain refused by order4-domain" -

	# sasl_user
	row "sasl_user: listed user" $H mallory ok@example.org r@example.net "$SASL_NO" -
	row "sasl_user: listed user in upper case" $H MALLORY ok@example.org r@example.net "$SASL_NO" -
	row "sasl_user: other user passes" $H alice ok@example.org r@example.net "$MAIL_OK" "$RCPT_OK"
	row "sasl_user: .domain after the @ of a user" $H eve@evil.example ok@example.org r@example.net "$SASL_NO" -
	row "sasl_user: .domain, subdomain" $H eve@mx.evil.example ok@example.org r@example.net "$SASL_NO" -
	row "sasl_user: .domain near miss (notevil.example) passes" $H eve@notevil.example ok@example.org r@example.net "$MAIL_OK" "$RCPT_OK"
	row "sasl_user: regex /i" $H Test-42 ok@example.org r@example.net "$SASL_NO" -
	row "sasl_user: regex is anchored (test-42x passes)" $H test-42x ok@example.org r@example.net "$MAIL_OK" "$RCPT_OK"
	row "sasl_user: not authenticated, a listed name as sender passes" $H - mallory@example.org r@example.net "$MAIL_OK" "$RCPT_OK"

	# rcpt
	row "rcpt: exact address, refused at RCPT" $H - ok@example.org abuse@victim.example "$MAIL_OK" "$(R_NO abuse@victim.example)"
	row "rcpt: exact address in other case" $H - ok@example.org ABUSE@Victim.EXAMPLE "$MAIL_OK" "$(R_NO abuse@victim.example)"
	row "rcpt: exact address at a subdomain passes" $H - ok@example.org abuse@sub.victim.example "$MAIL_OK" "$RCPT_OK"
	row "rcpt: @domain" $H - ok@example.org x@rat.example "$MAIL_OK" "$(R_NO x@rat.example)"
	row "rcpt: @domain does not cover subdomains" $H - ok@example.org x@sub.rat.example "$MAIL_OK" "$RCPT_OK"
	row "rcpt: .domain subdomain" $H - ok@example.org x@a.rtree.example "$MAIL_OK" "$(R_NO x@a.rtree.example)"
	row "rcpt: .domain near miss (notrtree.example) passes" $H - ok@example.org x@notrtree.example "$MAIL_OK" "$RCPT_OK"
	row "rcpt: quoted local part" $H - ok@example.org '"x y"@victim.example' "$MAIL_OK" "$(R_NO 'x y@victim.example')"
	row "rcpt: quoted local part in other case" $H - ok@example.org '"X Y"@Victim.Example' "$MAIL_OK" "$(R_NO 'x y@victim.example')"
	row "rcpt: regex /i" $H - ok@example.org PostMaster@anything.example "$MAIL_OK" "$(R_NO postmaster@anything.example)"
	row "rcpt: regex is anchored (mypostmaster@ passes)" $H - ok@example.org mypostmaster@anything.example "$MAIL_OK" "$RCPT_OK"
	row "rcpt: a listed address as sender passes" $H - abuse@victim.example r@example.net "$MAIL_OK" "$RCPT_OK"

	# rcpt_domain
	row "rcpt_domain: exact domain" $H - ok@example.org x@rd.example "$MAIL_OK" "$(RD_NO x@rd.example)"
	row "rcpt_domain: a plain domain does not cover subdomains" $H - ok@example.org x@sub.rd.example "$MAIL_OK" "$RCPT_OK"
	row "rcpt_domain: .example.com matches example.com" $H - ok@example.org x@example.com "$MAIL_OK" "$(RD_NO x@example.com)"
	row "rcpt_domain: .example.com matches mail.example.com" $H - ok@example.org x@mail.example.com "$MAIL_OK" "$(RD_NO x@mail.example.com)"
	row "rcpt_domain: .example.com near miss (notexample.com) passes" $H - ok@example.org x@notexample.com "$MAIL_OK" "$RCPT_OK"
	row "rcpt_domain: .example.com near miss (example.com.au) passes" $H - ok@example.org x@example.com.au "$MAIL_OK" "$RCPT_OK"
	row "rcpt_domain: regex /i" $H - ok@example.org x@mx.RDRE.example "$MAIL_OK" "$(RD_NO x@mx.rdre.example)"
	row "rcpt_domain: regex near miss passes" $H - ok@example.org x@rdre.example "$MAIL_OK" "$RCPT_OK"

	# one message, three recipients: only the blocked one is refused
	T=$(swaks_session $H - ok@example.org 'abuse@victim.example,ok@victim.example,x@notexample.com')
	assert_eq "mixed recipients: RCPT replies" \
		"$(R_NO abuse@victim.example) / $RCPT_OK / $RCPT_OK" \
		"$(smtp_reply "$T" RCPT 1) / $(smtp_reply "$T" RCPT 2) / $(smtp_reply "$T" RCPT 3)" "$T"
	assert_reply_match "mixed recipients: the message is accepted" "$T" DOT 1 "$QUEUED"
	qid=$(smtp_queue_id "$T")
	wait_for_maillog "${qid:-none}: removed"
	delivered=$(grep -E "${qid:-none}: to=<[^>]*>.* status=sent" "$PF_MAILLOG" |
		sed 's/.* to=<\([^>]*\)>.*/\1/' | sort | paste -sd ' ')
	assert_eq "mixed recipients: delivered to the two others only" \
		"ok@victim.example x@notexample.com" "$delivered" "$(grep -F "${qid:-none}" "$PF_MAILLOG")"

	assert_grep "decision logged: sender refused at mail" \
		'(^| )[^ ]+: client=127\.0\.0\.1: policy=blocked-senders stage=mail action=reject sender="spam@example\.com" reply="550 5\.7\.1 Sender spam@example\.com is not accepted here"' \
		"$MILTER_LOG"
	assert_grep "decision logged: recipient refused at rcpt" \
		'policy=blocked-rcpts stage=rcpt action=reject sender="ok@example\.org" rcpt="abuse@victim\.example"' \
		"$MILTER_LOG"
	assert_grep "decision logged: HELO name refused at helo" \
		'policy=blocked-helos stage=helo action=reject ' "$MILTER_LOG"
	assert_milter_stop "SIGTERM: exit status 0 (table run)"
fi

# ---------------------------------------------------------------- 1: clients
# Over loopback the client is 127.0.0.1: one client entry (or action) per
# configuration, installed with SIGUSR1.  A refusal at connect shows as
# Postfix's own banner; the milter's reply is checked in Postfix's log.
client_conf() {  # client_conf N ENTRY [ACTION [REPLY-CODE]]
	local reply=''
	[ -n "${4:-}" ] &&
		reply=" reply = \"$4 Client \${client_ip} blocked by \${policy} (case $1)\";"
	milter_config_head pmclient:
	cat <<EOF
policies = (
  { name = "clients"; type = "block"; match = "client"; entries = [ "$2" ];
    action = "${3:-reject}";$reply }
);
EOF
}

CASE_N=0
# A client case: the replies to the banner, MAIL and RCPT, and for a refusal
# at connect the reply Postfix logged from the milter.
client_case() {  # client_case LABEL ENTRY HIT(yes|no)
	local t got want logged=''
	CASE_N=$((CASE_N + 1))
	client_conf "$CASE_N" "$2" reject '554 5.7.1' >"$CONF"
	if ! milter_reload_wait; then
		pm_not_ok "$1" "no reload within 5 s" "$(tail -n 5 "$MILTER_LOG")"
		return
	fi
	t=$(swaks_session client.test.example - ok@example.org r@example.net --quit-after RCPT)
	if [ "$3" = yes ]; then
		wait_for_maillog "\(case $CASE_N\);" 5
		logged=$(sed -n "s/.*milter-reject: CONNECT from localhost\[127\.0\.0\.1\]: \(.*(case $CASE_N)\);.*/\1/p" \
			"$PF_MAILLOG" | head -n 1)
		want="$CONNECT_REFUSED | MAIL  | RCPT  | logged 554 5.7.1 Client 127.0.0.1 blocked by clients (case $CASE_N)"
	else
		want="$BANNER | MAIL $MAIL_OK | RCPT $RCPT_OK | logged "
	fi
	got="$(smtp_reply "$t" CONNECT) | MAIL $(smtp_reply "$t" MAIL) | RCPT $(smtp_reply "$t" RCPT) | logged $logged"
	assert_eq "$1" "$want" "$got" "$t"
}

CONF=$PM_TMP/client.conf
client_conf 0 192.0.2.1 >"$CONF"
if assert_milter_start "milter starts (client lists)" "$CONF"; then
	client_case "client: the address itself" 127.0.0.1 yes
	client_case "client: its /8" 127.0.0.0/8 yes
	client_case "client: a /31 that holds it" 127.0.0.0/31 yes
	client_case "client: the /32 of it" 127.0.0.1/32 yes
	client_case "client: next address (127.0.0.2) passes" 127.0.0.2 no
	client_case "client: next /31 (127.0.0.2/31) passes" 127.0.0.2/31 no
	client_case "client: the /32 before (127.0.0.0/32) passes" 127.0.0.0/32 no
	client_case "client: neighbour /24 (127.0.1.0/24) passes" 127.0.1.0/24 no
	client_case "client: network before (126.0.0.0/8) passes" 126.0.0.0/8 no
	client_case "client: every IPv4 address (0.0.0.0/0)" 0.0.0.0/0 yes
	client_case "client: IPv6 notation of it (::ffff:127.0.0.1)" ::ffff:127.0.0.1 yes
	client_case "client: IPv6 notation in hex, upper case (::FFFF:7F00:1)" ::FFFF:7F00:1 yes
	client_case "client: IPv4-mapped network (::ffff:127.0.0.0/104)" ::ffff:127.0.0.0/104 yes
	client_case "client: IPv4-mapped next address (::ffff:127.0.0.2) passes" ::ffff:127.0.0.2 no
	client_case "client: IPv6 loopback (::1) is not IPv4 loopback" ::1 no
	client_case "client: an IPv6 network (2001:db8::/32) passes" 2001:db8::/32 no
	client_case "client: regex" '/^127\\.0\\.0\\.1$/' yes
	client_case "client: regex near miss passes" '/^127\\.0\\.0\\.10$/' no

	# Other replies at connect (see the top of this file).
	client_conf x 127.0.0.1 tempfail '450 4.7.1' >"$CONF"
	milter_reload_wait
	T=$(swaks_session client.test.example - ok@example.org r@example.net --quit-after RCPT)
	assert_eq "client: tempfail 450 at connect: 220, 250 to EHLO, the reply to MAIL" \
		"$BANNER | $EHLO_OK | 450 4.7.1 Client 127.0.0.1 blocked by clients (case x)" \
		"$(smtp_reply "$T" CONNECT) | $(smtp_reply "$T" EHLO | head -n 1) | $(smtp_reply "$T" MAIL)" "$T"
	client_conf y 127.0.0.1 tempfail '421 4.7.0' >"$CONF"
	milter_reload_wait
	T=$(swaks_session client.test.example - ok@example.org r@example.net --quit-after RCPT)
	assert_eq "client: tempfail 421 at connect: Postfix's 421 banner" \
		"$CONNECT_421" "$(smtp_reply "$T" CONNECT)" "$T"
	assert_true "client: tempfail 421 at connect: the server closed the session" \
		smtp_closed_by_server "$T"
	client_conf z 127.0.0.1 reject >"$CONF"
	milter_reload_wait
	T=$(swaks_session client.test.example - ok@example.org r@example.net --quit-after RCPT)
	assert_eq "client: default reply at connect: Postfix's 554 banner" \
		"$CONNECT_REFUSED" "$(smtp_reply "$T" CONNECT)" "$T"
	wait_for_maillog 'CONNECT from localhost\[127\.0\.0\.1\]: 550 5\.7\.1 Access denied by policy clients;'
	assert_grep "client: default reply at connect: Postfix logged the milter's default reply" \
		'milter-reject: CONNECT from localhost\[127\.0\.0\.1\]: 550 5\.7\.1 Access denied by policy clients;' \
		"$PF_MAILLOG"

	# discard decided at connect: the MTA can drop only at end of message,
	# so the message must be dropped there.
	client_conf d 127.0.0.1 discard >"$CONF"
	milter_reload_wait
	T=$(swaks_session client.test.example - ok@example.org r@example.net)
	assert_reply_match "client: discard: the client gets 250 after DATA" "$T" DOT 1 "$QUEUED"
	qid=$(smtp_queue_id "$T")
	wait_for_maillog "${qid:-none}: (milter-discard|removed)"
	assert_grep "client: discard: Postfix dropped the message (milter-discard)" \
		"${qid:-none}: milter-discard" "$PF_MAILLOG"
	assert_milter_stop "SIGTERM: exit status 0 (client run)"
fi

# ---------------------------------------------------------------- 2: allow first
allow_conf() {  # allow_conf TRUSTED-ENTRIES
	milter_config_head pmallow:
	cat <<EOF
policies = (
  { name = "trusted-clients"; type = "block"; match = "client";
    entries = [ $1 ]; action = "accept"; },
  { name = "blocked-senders"; type = "block"; match = "sender";
    entries = [ "spam@example.com", "@bad.example" ]; action = "reject";
    reply = "550 5.7.1 Sender \${sender} is not accepted here"; }
);
EOF
}
CONF=$PM_TMP/allow.conf
allow_conf '"192.0.2.0/24", "2001:db8::/32"' >"$CONF"
if assert_milter_start "milter starts (allow list that does not hold 127.0.0.1)" "$CONF"; then
	T=$(swaks_session client.test.example - spam@example.com r@example.net)
	assert_reply "untrusted client: its blocked sender is refused at MAIL" "$T" MAIL 1 \
		"550 5.7.1 Sender spam@example.com is not accepted here"
	T=$(swaks_session client.test.example - '<>' r@example.net)
	assert_reply_match "untrusted client: an unlisted (null) sender is accepted" "$T" DOT 1 "$QUEUED"

	allow_conf '"192.0.2.0/24", "127.0.0.0/8", "2001:db8::/32"' >"$CONF"
	milter_reload_wait
	T=$(swaks_session client.test.example - spam@example.com r@example.net)
	assert_eq "trusted client: its blocked sender passes MAIL and RCPT" \
		"$MAIL_OK / $RCPT_OK" "$(smtp_reply "$T" MAIL) / $(smtp_reply "$T" RCPT)" "$T"
	assert_reply_match "trusted client: the message is accepted" "$T" DOT 1 "$QUEUED"
	qid=$(smtp_queue_id "$T")
	wait_for_maillog "${qid:-none}: to=<r@example.net>.* status=sent"
	assert_grep "trusted client: the message is delivered" \
		"${qid:-none}: to=<r@example.net>.* status=sent" "$PF_MAILLOG"
	T=$(swaks_session client.test.example - x@bad.example r@example.net)
	assert_reply_match "trusted client: another blocked sender passes too" "$T" DOT 1 "$QUEUED"
	assert_grep "trusted client: accept logged at connect" \
		'policy=trusted-clients stage=connect action=accept' "$MILTER_LOG"
	# before the reload: 2 connections checked, 2 senders checked, 1 refused;
	# after it: 2 connections accepted, no sender looked at
	assert_stats "stats: trusted-clients checked 4, accepted 2" pmallow:stats:trusted-clients \
		accepted=2 checked=4 rejected=0
	assert_stats "stats: blocked-senders checked 2, rejected 1" pmallow:stats:blocked-senders \
		rejected=1 checked=2 accepted=0
	assert_milter_stop "SIGTERM: exit status 0 (allow run)"
fi

# ---------------------------------------------------------------- 3: live lists
# Live entries in the sorted sets pmlive:block:<policy>, changed with
# redis-cli while one SMTP session goes on: each transaction (and each new
# connection, for the client list) sees the set as it is at that moment.
# The sender list is looked up with the first RCPT (delay_mail_lookups, on
# by default; live-rcpts decides at RCPT): a listed sender gets 250 to MAIL
# FROM and the list's reply to RCPT.  A static entry of the same policy is
# found in memory and still refuses MAIL FROM itself.
CONF=$PM_TMP/live.conf
live_conf() {  # live_conf : live lists of every stage, one with a static entry too
	milter_config_head pmlive:
	cat <<EOF
policies = (
  { name = "live-clients"; type = "block"; match = "client"; redis = true;
    action = "reject"; },
  { name = "live-senders"; type = "block"; match = "sender"; redis = true;
    entries = [ "static@live.example" ];
    action = "reject"; reply = "550 5.7.1 Sender \${sender} is blocked"; },
  { name = "live-rcpts"; type = "block"; match = "rcpt_domain"; redis = true;
    on_redis_error = "tempfail";
    action = "reject"; reply = "550 5.7.1 Recipient \${rcpt} is blocked"; }
);
EOF
}
live_conf >"$CONF"
LIVE_NO='550 5.7.1 Sender spam@live.example is blocked'
STATIC_NO='550 5.7.1 Sender static@live.example is blocked'
LIVE_SET=pmlive:block:live-senders

# One SMTP session, one transaction after another; between two of them the
# session runs a shell command (redis-cli) or sleeps.  Script lines:
#   mail ADDR    MAIL FROM, then RCPT, DATA and the message if it is accepted,
#                else RSET
#   sh COMMAND   run COMMAND
#   sleep SECS
# Prints one line per transaction: the reply to MAIL FROM, and " / " and the
# reply to RCPT when it refused, or to the end of data when there was one.
live_session() {  # live_session < SCRIPT
	python3 -c '
import socket, subprocess, sys, time
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port), timeout=20)
f = s.makefile("rb")
def reply():
    while True:
        ln = f.readline().decode("latin-1").rstrip("\r\n")
        if len(ln) < 4 or ln[3] != "-":
            return ln
def cmd(line):
    s.sendall(line.encode() + b"\r\n")
    return reply()
reply()
cmd("EHLO client.test.example")
for line in sys.stdin:
    verb, _, arg = line.strip().partition(" ")
    if verb == "sh":
        subprocess.run(arg, shell=True, check=True, stdout=subprocess.DEVNULL)
    elif verb == "sleep":
        time.sleep(float(arg))
    elif verb == "mail":
        m = cmd("MAIL FROM:<%s>" % arg)
        if not m.startswith("250"):
            print(m)
            cmd("RSET")
            continue
        r = cmd("RCPT TO:<r@example.net>")
        if not r.startswith("250"):
            print(m + " / " + r)
            cmd("RSET")
            continue
        cmd("DATA")
        s.sendall(b"Subject: live\r\n\r\nlive list test\r\n.\r\n")
        print(m + " / " + reply())
cmd("QUIT")
' "$SMTP_PORT"
}

if assert_milter_start "milter starts (live lists)" "$CONF"; then
	T=$(live_session <<EOF
mail spam@live.example
sh redis-cli -s $PM_REDIS_SOCK ZADD $LIVE_SET +inf spam@live.example
mail spam@live.example
mail other@live.example
mail static@live.example
sh redis-cli -s $PM_REDIS_SOCK ZREM $LIVE_SET spam@live.example
mail spam@live.example
sh redis-cli -s $PM_REDIS_SOCK ZADD $LIVE_SET \$((\$(date +%s) + 4)) @live.example
mail spam@live.example
mail other@live.example
mail x@sub.live.example
sleep 4.5
mail other@live.example
sh redis-cli -s $PM_REDIS_SOCK ZADD $LIVE_SET +inf .live.example
mail x@sub.live.example
mail x@notlive.example
EOF
)
	mapfile -t R <<<"$T"
	assert_match "before the entry: accepted" "^$MAIL_OK / ${QUEUED#^}" "${R[0]:-}" "$T"
	assert_eq "permanent entry added mid-session: the next transaction is refused at RCPT" \
		"$MAIL_OK / $LIVE_NO" "${R[1]:-}" "$T"
	assert_match "permanent entry: another sender passes" "^$MAIL_OK / ${QUEUED#^}" "${R[2]:-}" "$T"
	assert_eq "the static entry of the same policy decides" "$STATIC_NO" "${R[3]:-}" "$T"
	assert_match "entry removed: the next MAIL passes at once" "^$MAIL_OK / ${QUEUED#^}" \
		"${R[4]:-}" "$T"
	assert_eq "temporary @domain entry: refused at RCPT before its expiry" \
		"$MAIL_OK / $LIVE_NO" "${R[5]:-}" "$T"
	assert_eq "temporary @domain entry: the domain's other senders too" \
		"$MAIL_OK / 550 5.7.1 Sender other@live.example is blocked" "${R[6]:-}" "$T"
	assert_match "temporary @domain entry: a subdomain passes" "^$MAIL_OK / ${QUEUED#^}" \
		"${R[7]:-}" "$T"
	assert_match "temporary entry: after its expiry the sender passes" \
		"^$MAIL_OK / ${QUEUED#^}" "${R[8]:-}" "$T"
	assert_eq ".domain entry: a subdomain is refused at RCPT" \
		"$MAIL_OK / 550 5.7.1 Sender x@sub.live.example is blocked" "${R[9]:-}" "$T"
	assert_match ".domain entry: a near miss passes" "^$MAIL_OK / ${QUEUED#^}" "${R[10]:-}" "$T"
	assert_eq "the expired entry was pruned from the set" 1 "$(redis_cli ZCARD "$LIVE_SET")"
	assert_grep "a live hit is logged with the entry that matched" \
		'policy=live-senders stage=mail action=reject .*key="live:spam@live.example"' \
		"$MILTER_LOG"

	# Recipient domains, at RCPT.
	redis_cli ZADD pmlive:block:live-rcpts +inf blocked.example >/dev/null
	T=$(swaks_session client.test.example - a@example.org u@Blocked.Example --quit-after RCPT)
	assert_reply "live rcpt_domain: refused at RCPT" "$T" RCPT 1 \
		'550 5.7.1 Recipient u@blocked.example is blocked'
	T=$(swaks_session client.test.example - a@example.org u@example.net --quit-after RCPT)
	assert_reply "live rcpt_domain: another domain passes" "$T" RCPT 1 "$RCPT_OK"

	# The client list, at connect: over loopback the client is 127.0.0.1.
	redis_cli ZADD pmlive:block:live-clients +inf 127.0.0.0/8 >/dev/null
	T=$(swaks_session client.test.example - a@example.org r@example.net --quit-after RCPT)
	assert_match "live client network: the connection is refused" \
		'^554 .* not accepting connections' "$(smtp_reply "$T" CONNECT)" "$T"
	redis_cli ZREM pmlive:block:live-clients 127.0.0.0/8 >/dev/null
	T=$(swaks_session client.test.example - a@example.org r@example.net --quit-after RCPT)
	assert_reply_match "live client network removed: the next connection is served" \
		"$T" CONNECT 1 '^220 '

	# ------------------------------------------------------------ 4: Redis down
	redis_stop
	T=$(swaks_session client.test.example - static@live.example r@example.net --quit-after MAIL)
	assert_reply "Redis down: the static entry still refuses" "$T" MAIL 1 "$STATIC_NO"
	T=$(swaks_session client.test.example - spam@live.example u@example.net --quit-after RCPT)
	assert_eq "Redis down: live sender list (on_redis_error accept) lets MAIL pass" \
		"$MAIL_OK" "$(smtp_reply "$T" MAIL)" "$T"
	assert_reply "Redis down: live rcpt list (on_redis_error tempfail) tempfails RCPT" \
		"$T" RCPT 1 '451 4.3.0 Temporary policy failure; try again later'
	# Both lists were asked in RCPT's one call: the sender list's failure
	# passed (accept), the rcpt list's decided.
	assert_grep "Redis down: the tempfail at RCPT is the rcpt list's" \
		'policy=live-rcpts stage=rcpt action=tempfail' "$MILTER_LOG"
	assert_true "Redis down: the milter is still running" milter_alive
	redis_start || pm_bail "cannot restart Redis"
	redis_cli ZADD "$LIVE_SET" +inf spam@live.example >/dev/null
	t0=$(now_ms)
	got=
	while [ $(( $(now_ms) - t0 )) -lt 5000 ]; do
		got=$(smtp_reply "$(swaks_session client.test.example - spam@live.example r@example.net --quit-after RCPT)" RCPT)
		[ "$got" = "$LIVE_NO" ] && break
		sleep 0.2
	done
	assert_eq "Redis back: live entries decide again, at RCPT (after $(( $(now_ms) - t0 )) ms)" \
		"$LIVE_NO" "$got"
	assert_milter_stop "SIGTERM: exit status 0 (live run)"
fi

# ---------------------------------------------------------------- 5: reload
LIST=$PM_TMP/reload.list
printf '# blocked senders\nold@reload.example\n' >"$LIST"
CONF=$PM_TMP/reload.conf
{
	milter_config_head pmreload:
	cat <<EOF
policies = (
  { name = "reload-senders"; type = "block"; match = "sender"; file = "$LIST";
    action = "reject"; reply = "550 5.7.1 Sender \${sender} is blocked"; }
);
EOF
} >"$CONF"
LIST_RE=$(pm_ere_quote "$LIST")
OLD_NO='550 5.7.1 Sender old@reload.example is blocked'
NEW_NO='550 5.7.1 Sender new@reload.example is blocked'
# Replace the list at once (rename), as an operator should: a file
# rewritten in place may be read half written.
replace_list() {  # replace_list PRINTF-FORMAT
	# shellcheck disable=SC2059 # the format is the content
	printf "$1" >"$LIST.new" && mv -f "$LIST.new" "$LIST"
}
mail_reply() {  # mail_reply SENDER : the reply to MAIL FROM
	smtp_reply "$(swaks_session client.test.example - "$1" r@example.net --quit-after MAIL)" MAIL
}
if assert_milter_start "milter starts (list file)" "$CONF"; then
	assert_eq "first list: old@ refused, new@ accepted" "$OLD_NO / $MAIL_OK" \
		"$(mail_reply old@reload.example) / $(mail_reply new@reload.example)"

	# The file goes bad (line 4); its new mtime triggers a reload.
	replace_list '# blocked senders\nnew@reload.example\n\nnot an address\n'
	wait_for_milter_log "^.*$LIST_RE:4: " 4
	assert_grep "bad list (mtime): the error is logged as $LIST:4:" \
		"$LIST_RE:4: \"not an address\" contains white space" "$MILTER_LOG"
	assert_grep "bad list (mtime): the reload was refused" \
		'reload failed: keeping the old configuration' "$MILTER_LOG"
	assert_eq "bad list (mtime): old list still in force" "$OLD_NO / $MAIL_OK" \
		"$(mail_reply old@reload.example) / $(mail_reply new@reload.example)"
	sleep 2.2
	assert_eq "bad list (mtime): reported once, not every second" 1 \
		"$(grep -cE "$LIST_RE:4: " "$MILTER_LOG")"

	milter_reload_wait
	assert_eq "bad list (SIGUSR1): the error is logged again" 2 \
		"$(grep -cE "$LIST_RE:4: " "$MILTER_LOG")"
	assert_eq "bad list (SIGUSR1): old list still in force" "$OLD_NO / $MAIL_OK" \
		"$(mail_reply old@reload.example) / $(mail_reply new@reload.example)"
	assert_true "bad list: the milter is still running" milter_alive

	# Fixed, no signal: the new list must decide within about 2 s.
	replace_list '# blocked senders\nnew@reload.example\n'
	t0=$(now_ms)
	got=
	while [ $(( $(now_ms) - t0 )) -lt 5000 ]; do
		got=$(mail_reply new@reload.example)
		[ "$got" = "$NEW_NO" ] && break
		sleep 0.1
	done
	took=$(( $(now_ms) - t0 ))
	assert_eq "fixed list (mtime, no SIGUSR1): new@ refused" "$NEW_NO" "$got"
	assert_true "fixed list: in force within 2.5 s (took ${took} ms)" [ "$took" -le 2500 ]
	assert_reply "fixed list: old@ is no longer refused" \
		"$(swaks_session client.test.example - old@reload.example r@example.net --quit-after MAIL)" \
		MAIL 1 "$MAIL_OK"
	assert_grep "fixed list: logged as a reload for a changed list file" \
		'reloading .* \(a list file changed\)' "$MILTER_LOG"

	# The file vanishes: logged, the list in force stays.
	rm -f "$LIST"
	wait_for_milter_log "$LIST_RE: cannot open" 4
	assert_grep "vanished list: the error names the file" \
		"$LIST_RE: cannot open: No such file or directory" "$MILTER_LOG"
	assert_reply "vanished list: the list in force stays" \
		"$(swaks_session client.test.example - new@reload.example r@example.net --quit-after MAIL)" \
		MAIL 1 "$NEW_NO"
	assert_milter_stop "SIGTERM: exit status 0 (reload run)"
fi

pm_finish
