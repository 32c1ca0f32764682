# SPDX-License-Identifier: BSD-2-Clause
# shellcheck shell=bash
#
# scenarios.sh - the one list of scenarios every MTA must pass.
#
# Sourced by mta-postfix.sh and mta-sendmail.sh after mta_setup, redis_start,
# mta_start and mta_auth_start; scenarios_run runs them all, with one
# milter that each scenario gives its configuration (mta_use: start, then
# SIGUSR1 reloads).  Every check compares what the client saw (code,
# enhanced code and text of the reply, at the stage where it must come),
# and where it matters what the MTA did with the message (queued,
# delivered to whom, dropped, held) and what the milter logged or counted.
#
# The scenarios: the MTA really asks the milter; size (SIZE= refused at
# RCPT, the real size at end of message); the recipients limit; every
# action (reject, tempfail, 421, discard, quarantine, accept); reply text
# and codes (multi-line, "%", with and without Sendmail's address prefix);
# dry run; exemptions (client network, authenticated sender); a rate limit;
# block lists (sender, @domain, sender_domain, rcpt, rcpt_domain, helo,
# sasl_user, client); a live sender list looked up with the first RCPT
# (delay_mail_lookups) and, with it off, at MAIL FROM.
#
# Where the MTAs differ the expected reply comes from mta.sh (mta_refusal,
# mta_mail_ok, ...) or from the MTA-specific lines below, each saying what
# that MTA does; both were observed with Postfix 3.7 and Sendmail 8.17.

# shellcheck source-path=SCRIPTDIR source=mta.sh
. "$(dirname "${BASH_SOURCE[0]}")/mta.sh"

# SC2016: reply templates hold ${...} for the milter, not for the shell.
# shellcheck disable=SC2016

SC_SIZE_NO='552 5.3.4 Message too big (limit 10K)'

# A configuration file: the shared head (Redis prefix $2) and the rest from
# standard input.
sc_conf() {     # sc_conf NAME PREFIX < rest
	local f=$PM_TMP/$1.conf
	{
		milter_config_head "$2"
		cat
	} >"$f"
	echo "$f"
}

# ------------------------------------------------------------ the harness

# With no milter listening the MTA must refuse for now: proof that it
# really asks one (F=T for Sendmail, milter_default_action = tempfail for
# Postfix).  Their own words: Postfix "451 4.7.1 Service unavailable - try
# again later", Sendmail "451 4.3.2 Please try again later", both at MAIL.
sc_no_milter() {
	local t want
	case $MTA in
	postfix) want='451 4.7.1 Service unavailable - try again later' ;;
	sendmail) want='451 4.3.2 Please try again later' ;;
	esac
	t=$(mta_session)
	assert_reply_match "$MTA: banner" "$t" CONNECT 1 "$(mta_banner_re)"
	assert_reply "no milter listening: $MTA tempfails MAIL FROM" "$t" MAIL 1 "$want"
}

# ------------------------------------------------------------ size, recipients

sc_size_rcpts() {
	local conf t q
	conf=$(sc_conf size-rcpts pmsize: <<'EOF'
policies = (
  { name = "max-size"; type = "size"; max = "10K"; action = "reject";
    reply = "552 5.3.4 Message too big (limit ${limit})"; },
  { name = "max-rcpts"; type = "recipients"; max = 3; action = "tempfail";
    reply = "452 4.5.3 Too many recipients (at most ${limit})"; }
);
EOF
)
	mta_use "milter runs with a size and a recipients policy" "$conf" || return

	t=$(mta_session --size 20000 --to r1@example.net --to r2@example.net)
	assert_reply "size: SIZE=20000 over 10K: MAIL FROM accepted" "$t" MAIL 1 \
		"$(mta_mail_ok sender@example.org)"
	assert_reply "size: SIZE=20000 refused at RCPT 1, \${limit} expanded" "$t" RCPT 1 \
		"$(mta_refusal r1@example.net "$SC_SIZE_NO")"
	assert_reply "size: SIZE=20000 refused at RCPT 2 too" "$t" RCPT 2 \
		"$(mta_refusal r2@example.net "$SC_SIZE_NO")"
	assert_eq "size: no DATA after the refused recipients" 0 "$(smtp_ncmds "$t" DATA)" "$t"
	assert_grep "size: decision logged (max-size, rcpt, reject, the reply)" \
		"$(mta_decision_re max-size rcpt reject "$SC_SIZE_NO")" "$MILTER_LOG"

	t=$(mta_session --body-bytes 20000)
	assert_reply "size: 20000 octets without SIZE=: RCPT accepted" "$t" RCPT 1 \
		"$(mta_rcpt_ok rcpt@example.net)"
	assert_reply "size: 20000 octets without SIZE=: refused at end of data" "$t" DOT 1 \
		"$SC_SIZE_NO"
	assert_grep "size: decision logged at eom" \
		"$(mta_decision_re max-size eom reject "$SC_SIZE_NO")" "$MILTER_LOG"

	t=$(mta_session --size 2000 --body-bytes 1000)
	assert_reply_match "size: SIZE=2000 and 1000 octets: accepted" "$t" DOT 1 "$(mta_queued_re)"
	t=$(mta_session --body-bytes 9000)
	assert_reply_match "size: 9000 octets without SIZE=: accepted" "$t" DOT 1 "$(mta_queued_re)"

	t=$(mta_session --to r1@example.net --to r2@example.net --to r3@example.net \
		--to r4@example.net --to r5@example.net)
	assert_eq "recipients: 5 recipients, max 3: RCPT 1-3 accepted" \
		"$(mta_rcpt_ok r1@example.net)|$(mta_rcpt_ok r2@example.net)|$(mta_rcpt_ok r3@example.net)" \
		"$(smtp_reply "$t" RCPT 1)|$(smtp_reply "$t" RCPT 2)|$(smtp_reply "$t" RCPT 3)" "$t"
	assert_reply "recipients: RCPT 4 gets the 452 reply" "$t" RCPT 4 \
		"$(mta_refusal r4@example.net '452 4.5.3 Too many recipients (at most 3)')"
	assert_reply "recipients: RCPT 5 gets the 452 reply" "$t" RCPT 5 \
		"$(mta_refusal r5@example.net '452 4.5.3 Too many recipients (at most 3)')"
	assert_reply_match "recipients: the message is accepted" "$t" DOT 1 "$(mta_queued_re)"
	q=$(mta_queue_id "$t")
	assert_eq "recipients: the message goes to r1 r2 r3 only" \
		"r1@example.net r2@example.net r3@example.net" "$(mta_message_rcpts "$q")" "$t"
}

# ------------------------------------------------------------ actions, replies, lists

sc_actions() {
	local conf t q want
	conf=$(sc_conf actions pmact: <<'EOF'
policies = (
  { name = "vip"; type = "block"; match = "sender";
    entries = [ "vip@example.org" ]; action = "accept"; },
  { name = "blocked-helos"; type = "block"; match = "helo";
    entries = [ "bad-helo.example" ]; action = "reject";
    reply = "550 5.7.1 HELO name not accepted (${policy})"; },
  { name = "blocked-senders"; type = "block"; match = "sender";
    entries = [ "spam@example.com", "@bad.example" ]; action = "reject";
    reply = "550 5.7.1 Sender ${sender} is not accepted here"; },
  { name = "blocked-domains"; type = "block"; match = "sender_domain";
    entries = [ "spam.example", ".spamtree.example" ]; action = "reject";
    reply = "554 5.7.1 Mail from ${sender} refused (${policy})"; },
  { name = "dry-senders"; type = "block"; match = "sender";
    entries = [ "dry@example.org" ]; action = "reject";
    reply = "550 5.7.1 Would refuse ${sender}"; dry_run = true; },
  { name = "discard-senders"; type = "block"; match = "sender";
    entries = [ "discard@example.org" ]; action = "discard"; },
  { name = "hold-senders"; type = "block"; match = "sender";
    entries = [ "hold@example.org" ]; action = "quarantine"; },
  { name = "later-senders"; type = "block"; match = "sender";
    entries = [ "later@example.org" ]; action = "tempfail";
    reply = "451 4.7.1 Sender ${sender} try again later"; },
  { name = "blocked-rcpts"; type = "block"; match = "rcpt";
    entries = [ "abuse@victim.example" ]; action = "reject";
    reply = "550 5.7.1 Recipient ${rcpt} refused by ${policy}"; },
  { name = "busy-rcpts"; type = "block"; match = "rcpt";
    entries = [ "busy@example.net" ]; action = "tempfail";
    reply = "450 4.2.1 Mailbox ${rcpt} busy, try later"; },
  { name = "closing-rcpts"; type = "block"; match = "rcpt";
    entries = [ "close@example.net" ]; action = "tempfail";
    reply = "421 4.7.0 Too many errors, closing connection"; },
  { name = "multi-line"; type = "block"; match = "rcpt";
    entries = [ "ml@example.net" ]; action = "reject";
    reply = [ "550 5.7.1 Recipient not accepted here",
              "Contact postmaster@example.net if this is wrong" ]; },
  { name = "percent"; type = "block"; match = "rcpt";
    entries = [ "quota@example.net" ]; action = "reject";
    reply = "550 5.2.2 Mailbox quota 100% used"; },
  { name = "no-relay"; type = "block"; match = "rcpt_domain";
    entries = [ "relay.example" ]; action = "reject";
    reply = "553 5.7.1 Relaying to ${rcpt} denied"; },
  { name = "small-only"; type = "size"; max = "1K"; action = "reject";
    reply = "552 5.3.4 Message too big (limit ${limit})"; }
);
EOF
)
	mta_use "milter runs with a policy of every action and reply kind" "$conf" || return

	# accept: an allow list ends evaluation; the size policy after it would refuse.
	t=$(mta_session --body-bytes 5000)
	assert_reply "accept, control: 5000 octets from another sender refused at end of data" \
		"$t" DOT 1 '552 5.3.4 Message too big (limit 1K)'
	t=$(mta_session --from vip@example.org --body-bytes 5000)
	assert_reply_match "accept: vip@example.org skips the later size policy" "$t" DOT 1 \
		"$(mta_queued_re)"
	assert_grep "accept: decision logged" "$(mta_decision_re vip mail accept)" "$MILTER_LOG"

	# reject at MAIL
	t=$(mta_session --from spam@example.com)
	want=$(mta_refusal spam@example.com '550 5.7.1 Sender spam@example.com is not accepted here')
	assert_reply "reject: blocked sender refused at MAIL FROM" "$t" MAIL 1 "$want"
	assert_eq "reject: no RCPT after the refused MAIL" 0 "$(smtp_ncmds "$t" RCPT)" "$t"
	assert_grep "reject: decision logged with the reply" \
		"$(mta_decision_re blocked-senders mail reject \
			'550 5.7.1 Sender spam@example.com is not accepted here')" "$MILTER_LOG"
	t=$(mta_session --from anyone@bad.example)
	assert_reply "block sender: @domain entry" "$t" MAIL 1 \
		"$(mta_refusal anyone@bad.example '550 5.7.1 Sender anyone@bad.example is not accepted here')"
	t=$(mta_session --from x@spam.example)
	assert_reply "block sender_domain: 554 reply (no address prefix on either MTA)" "$t" MAIL 1 \
		"$(mta_refusal x@spam.example '554 5.7.1 Mail from x@spam.example refused (blocked-domains)')"
	t=$(mta_session --from x@a.spamtree.example)
	assert_reply "block sender_domain: .domain entry covers subdomains" "$t" MAIL 1 \
		"$(mta_refusal x@a.spamtree.example '554 5.7.1 Mail from x@a.spamtree.example refused (blocked-domains)')"
	t=$(mta_session --from x@notspam.example)
	assert_reply_match "block sender_domain: near miss notspam.example passes" "$t" DOT 1 \
		"$(mta_queued_re)"

	# tempfail at MAIL (451) and at RCPT (450)
	t=$(mta_session --from later@example.org)
	assert_reply "tempfail: 451 at MAIL FROM" "$t" MAIL 1 \
		"$(mta_refusal later@example.org '451 4.7.1 Sender later@example.org try again later')"
	t=$(mta_session --to ok@example.net --to busy@example.net)
	assert_reply "tempfail: 450 at RCPT" "$t" RCPT 2 \
		"$(mta_refusal busy@example.net '450 4.2.1 Mailbox busy@example.net busy, try later')"

	# reject at RCPT; the message still goes to the other recipient
	t=$(mta_session --to ok@example.net --to abuse@victim.example)
	assert_reply "block rcpt: the listed recipient is refused" "$t" RCPT 2 \
		"$(mta_refusal abuse@victim.example '550 5.7.1 Recipient abuse@victim.example refused by blocked-rcpts')"
	assert_reply_match "block rcpt: the message is accepted for the other" "$t" DOT 1 \
		"$(mta_queued_re)"
	q=$(mta_queue_id "$t")
	assert_eq "block rcpt: the message goes to ok@example.net only" "ok@example.net" \
		"$(mta_message_rcpts "$q")" "$t"
	t=$(mta_session --to x@relay.example)
	assert_reply "block rcpt_domain: 553 reply" "$t" RCPT 1 \
		"$(mta_refusal x@relay.example '553 5.7.1 Relaying to x@relay.example denied')"

	# reply texts
	t=$(mta_session --to ok@example.net --to ml@example.net)
	assert_reply "multi-line reply: both lines, code and enhanced code on each" "$t" RCPT 2 \
		"$(mta_refusal ml@example.net '550 5.7.1 Recipient not accepted here' \
			'Contact postmaster@example.net if this is wrong')"
	t=$(mta_session --to quota@example.net)
	assert_reply "% in a reply: the client sees one %" "$t" RCPT 1 \
		"$(mta_refusal quota@example.net '550 5.2.2 Mailbox quota 100% used')"

	# 421: the reply, then the MTA closes the session
	t=$(mta_session --to ok@example.net --to close@example.net --to other@example.net)
	assert_reply "tempfail 421: RCPT 1 accepted" "$t" RCPT 1 "$(mta_rcpt_ok ok@example.net)"
	assert_reply "tempfail 421: RCPT 2 gets the 421 reply" "$t" RCPT 2 \
		"$(mta_refusal close@example.net '421 4.7.0 Too many errors, closing connection')"
	assert_true "tempfail 421: the MTA closed the session" smtp_closed_by_server "$t"

	# discard: the client is told "accepted", the MTA drops the message
	t=$(mta_session --from discard@example.org)
	assert_reply_match "discard: the client gets 250 after DATA" "$t" DOT 1 "$(mta_queued_re)"
	q=$(mta_queue_id "$t")
	assert_eq "discard: $MTA dropped the message" discarded "$(mta_message_fate "$q")" "$t"
	assert_grep "discard: decision logged" \
		"$(mta_decision_re discard-senders mail discard)" "$MILTER_LOG"

	# quarantine: accepted and held
	t=$(mta_session --from hold@example.org)
	assert_reply_match "quarantine: the client gets 250 after DATA" "$t" DOT 1 "$(mta_queued_re)"
	q=$(mta_queue_id "$t")
	assert_eq "quarantine: $MTA holds the message" held "$(mta_message_fate "$q")" "$t"
	# Sendmail keeps the milter's reason in the queue file; Postfix logs its
	# own words and drops the reason.
	case $MTA in
	postfix) want='milter triggers HOLD action' ;;
	sendmail) want='policy-milter policy hold-senders' ;;
	esac
	assert_contains "quarantine: $MTA records the hold ($want)" "$want" \
		"$(mta_quarantine_reason "$q")"

	# dry run: logged, not enforced
	t=$(mta_session --from dry@example.org)
	assert_reply "dry run: MAIL FROM accepted" "$t" MAIL 1 "$(mta_mail_ok dry@example.org)"
	assert_reply_match "dry run: the message is accepted" "$t" DOT 1 "$(mta_queued_re)"
	assert_grep "dry run: logged with dry_run=yes and the reply it would have sent" \
		'policy=dry-senders stage=mail action=reject dry_run=yes .*reply="550 5\.7\.1 Would refuse dry@example\.org"' \
		"$MILTER_LOG"

	# The EHLO reply of a session the milter does not refuse offers AUTH
	# (control for the refusals below, which offer no extension but one).
	assert_match "EHLO, control: a client the milter does not refuse is offered AUTH PLAIN" \
		'(^|\|)AUTH PLAIN(\||$)' "$(mta_ehlo_ext "$t")" "$t"

	# helo: refused at HELO, seen by the client at the next command the MTA
	# lets the milter answer
	t=$(mta_session --helo bad-helo.example --before-mail NOOP --before-mail RSET)
	sc_helo_refusal "$t" '550 5.7.1 HELO name not accepted (blocked-helos)'
}

# What a milter's 5xx at HELO looks like: both MTAs answer EHLO with 250
# and send the milter's reply, unchanged (Sendmail adds no address: none
# has been parsed yet), to MAIL FROM, as Postfix does with
# smtpd_delay_reject, also after an RSET.  Both EHLO replies then offer no
# extension but ENHANCEDSTATUSCODES (no SIZE, no AUTH, no PIPELINING);
# NOOP and RSET get their usual replies.
sc_helo_refusal() {  # sc_helo_refusal TRANSCRIPT REPLY
	assert_eq "block helo: EHLO answered 250 as usual" \
		"$(mta_ehlo_first)" "$(mta_ehlo_greeting "$1")" "$1"
	assert_eq "block helo: EHLO offers no extension but ENHANCEDSTATUSCODES" \
		ENHANCEDSTATUSCODES "$(mta_ehlo_ext "$1")" "$1"
	assert_reply "block helo: NOOP answered as usual" "$1" OTHER 1 "$(mta_noop_ok)"
	assert_reply "block helo: RSET answered as usual" "$1" RSET 1 "$(mta_rset_ok)"
	assert_reply "block helo: MAIL FROM (after RSET) gets the milter's reply as it is" \
		"$1" MAIL 1 "$2"
}

# ------------------------------------------------------------ client blocks (connect)

sc_client_block() {
	local conf t want
	conf=$(sc_conf client-554 pmcl: <<'EOF'
policies = (
  { name = "blocked-clients"; type = "block"; match = "client";
    entries = [ "127.0.0.0/8" ]; action = "reject";
    reply = "554 5.7.1 Client ${client_ip} refused"; }
);
EOF
)
	mta_use "milter runs with a client block list (554)" "$conf" || return
	t=$(mta_session --before-mail NOOP --before-mail RSET)
	assert_grep "client block: decision logged at connect with the milter's reply" \
		"$(mta_decision_re blocked-clients connect reject '554 5.7.1 Client 127.0.0.1 refused')" \
		"$MILTER_LOG"
	# A 5xx at connect: neither MTA shows the milter's text in its banner.
	# Both send their own 554 banner, answer EHLO with 250 offering no
	# extension but ENHANCEDSTATUSCODES, and NOOP and RSET as usual; then
	# Postfix refuses MAIL with the milter's reply, Sendmail with its own
	# "550 5.0.0 Command rejected" (as it does MAIL, RCPT, DATA, VRFY,
	# EXPN, ETRN, VERB, HELP, AUTH, STARTTLS).
	case $MTA in
	postfix)
		assert_reply "client block 554: Postfix's own 554 banner" "$t" CONNECT 1 \
			'554 mx.test.example ESMTP not accepting connections'
		;;
	sendmail)
		assert_reply "client block 554: Sendmail's own 554 banner" "$t" CONNECT 1 \
			'554 mx.test.example ESMTP not accepting messages'
		;;
	esac
	assert_eq "client block 554: EHLO still answered 250" \
		"$(mta_ehlo_first)" "$(mta_ehlo_greeting "$t")" "$t"
	assert_eq "client block 554: EHLO offers no extension but ENHANCEDSTATUSCODES" \
		ENHANCEDSTATUSCODES "$(mta_ehlo_ext "$t")" "$t"
	assert_reply "client block 554: NOOP answered as usual" "$t" OTHER 1 "$(mta_noop_ok)"
	assert_reply "client block 554: RSET answered as usual" "$t" RSET 1 "$(mta_rset_ok)"
	case $MTA in
	postfix)
		assert_reply "client block 554: MAIL FROM gets the milter's reply" "$t" MAIL 1 \
			'554 5.7.1 Client 127.0.0.1 refused'
		;;
	sendmail)
		assert_reply "client block 554: Sendmail refuses MAIL FROM with its own 550" "$t" MAIL 1 \
			'550 5.0.0 Command rejected'
		;;
	esac

	conf=$(sc_conf client-421 pmcl: <<'EOF'
policies = (
  { name = "closing-clients"; type = "block"; match = "client";
    entries = [ "127.0.0.1" ]; action = "tempfail";
    reply = "421 4.7.1 Client ${client_ip} not welcome"; }
);
EOF
)
	mta_use "milter runs with a client block list (421)" "$conf" || return
	t=$(mta_session)
	case $MTA in
	postfix) want='421 mx.test.example Service unavailable - try again later' ;;
	sendmail) want='421 4.7.0 mx.test.example closing connection' ;;
	esac
	assert_reply "client block 421: $MTA's own 421 banner" "$t" CONNECT 1 "$want"
	assert_true "client block 421: the MTA closed the session" smtp_closed_by_server "$t"

	conf=$(sc_conf client-450 pmcl: <<'EOF'
policies = (
  { name = "later-clients"; type = "block"; match = "client";
    entries = [ "127.0.0.1" ]; action = "tempfail";
    reply = "450 4.7.1 Client ${client_ip} try later"; }
);
EOF
)
	mta_use "milter runs with a client block list (450)" "$conf" || return
	t=$(mta_session)
	assert_reply_match "client block 450: banner 220 (the refusal comes later)" "$t" CONNECT 1 \
		"$(mta_banner_re)"
	case $MTA in
	postfix)
		assert_reply "client block 450: Postfix sends the milter's reply to MAIL FROM" \
			"$t" MAIL 1 '450 4.7.1 Client 127.0.0.1 try later'
		;;
	sendmail)
		assert_reply "client block 450: Sendmail sends its own 451 to MAIL FROM" \
			"$t" MAIL 1 '451 4.3.2 Please try again later'
		;;
	esac
}

# ------------------------------------------------------------ exemptions

sc_exempt() {
	local conf t
	conf=$(sc_conf exempt-clients pmex: <<'EOF'
exempt = { clients = [ "127.0.0.0/8" ]; };
policies = (
  { name = "max-size"; type = "size"; max = "10K"; action = "reject";
    reply = "552 5.3.4 Message too big (limit ${limit})"; },
  { name = "max-rcpts"; type = "recipients"; max = 1; action = "reject";
    reply = "550 5.5.3 Too many recipients"; }
);
EOF
)
	mta_use "milter runs with 127.0.0.0/8 exempt" "$conf" || return
	t=$(mta_session --size 20000 --body-bytes 20000 --to r1@example.net --to r2@example.net \
		--to r3@example.net)
	assert_eq "exempt client: 3 recipients and SIZE=20000, all accepted" \
		"$(mta_rcpt_ok r1@example.net)|$(mta_rcpt_ok r2@example.net)|$(mta_rcpt_ok r3@example.net)" \
		"$(smtp_reply "$t" RCPT 1)|$(smtp_reply "$t" RCPT 2)|$(smtp_reply "$t" RCPT 3)" "$t"
	assert_reply_match "exempt client: 20000 octets accepted" "$t" DOT 1 "$(mta_queued_re)"

	# Per policy: authenticated senders skip the recipients limit; the
	# sasl_user block list applies to them.
	conf=$(sc_conf exempt-auth pmex: <<'EOF'
policies = (
  { name = "blocked-users"; type = "block"; match = "sasl_user";
    entries = [ "mallory" ]; action = "reject";
    reply = "550 5.7.1 Account not allowed to send (${policy})"; },
  { name = "anon-rcpts"; type = "recipients"; max = 1; action = "reject";
    reply = "550 5.5.3 Authenticate to send to more than ${limit} recipient";
    exempt = { authenticated = true; }; }
);
EOF
)
	mta_use "milter runs with an authenticated exemption and a sasl_user list" "$conf" || return
	t=$(mta_session --to r1@example.net --to r2@example.net)
	assert_reply "not authenticated: RCPT 2 refused" "$t" RCPT 2 \
		"$(mta_refusal r2@example.net '550 5.5.3 Authenticate to send to more than 1 recipient')"
	t=$(mta_session --auth alice --to r1@example.net --to r2@example.net --to r3@example.net)
	assert_reply_match "AUTH PLAIN as alice succeeds" "$t" OTHER 1 '^235 '
	assert_eq "authenticated (alice): exempt, 3 recipients accepted" \
		"$(mta_rcpt_ok r1@example.net)|$(mta_rcpt_ok r2@example.net)|$(mta_rcpt_ok r3@example.net)" \
		"$(smtp_reply "$t" RCPT 1)|$(smtp_reply "$t" RCPT 2)|$(smtp_reply "$t" RCPT 3)" "$t"
	assert_reply_match "authenticated (alice): message accepted" "$t" DOT 1 "$(mta_queued_re)"
	t=$(mta_session --auth mallory --from m@example.org)
	assert_reply "block sasl_user: mallory refused at MAIL FROM" "$t" MAIL 1 \
		"$(mta_refusal m@example.org '550 5.7.1 Account not allowed to send (blocked-users)')"
}

# ------------------------------------------------------------ rate limit

sc_ratelimit() {
	local conf t n used
	conf=$(sc_conf ratelimit pmrl: <<'EOF'
policies = (
  { name = "per-sender"; type = "ratelimit"; key = "sender"; count = "messages";
    limit = 3; window = "1m"; action = "tempfail";
    reply = "451 4.7.1 Rate limit reached for ${key}; try again in ${retry_after}"; }
);
EOF
)
	mta_use "milter runs with a rate limit of 3 messages a minute per sender" "$conf" || return
	for n in 1 2 3; do
		t=$(mta_session --from rl@example.org)
		assert_reply_match "ratelimit: message $n of 3 accepted" "$t" DOT 1 "$(mta_queued_re)"
	done
	t=$(mta_session --from rl@example.org)
	assert_reply_match "ratelimit: message 4 refused at RCPT with the 451 reply" "$t" RCPT 1 \
		'^451 4\.7\.1 Rate limit reached for rl@example\.org; try again in [0-9]+s$'
	# Other spellings of the same mailbox are the same key (README
	# "Addresses: one canonical form"): none of them gets a fourth message in.
	for spelling in 'RL@Example.ORG.' '"rl"@example.org' '@relay.example:rl@example.org'; do
		t=$(mta_session --from "$spelling")
		assert_reply_match "ratelimit: $spelling is rl@example.org, refused" "$t" RCPT 1 \
			'^451 4\.7\.1 Rate limit reached for rl@example\.org; try again in [0-9]+s$'
	done
	t=$(mta_session --from other@example.org)
	assert_reply_match "ratelimit: another sender is not limited" "$t" DOT 1 "$(mta_queued_re)"
	used=$(redis_cli --raw hvals 'pmrl:rl:per-sender:rl@example.org' | awk '{ s += $1 } END { print s + 0 }')
	assert_eq "ratelimit: Redis holds exactly 3 units for rl@example.org" 3 "$used"
}

# ------------------------------------------------------------ what an accept covers

# An allow entry covers what it matched and no more (README "What an accept
# covers"): an allowed recipient is that recipient, not the message; and a
# quarantine decided earlier is not undone by an accept after it.
sc_accept_scope() {
	local conf t q
	conf=$(sc_conf accept-scope pmacc: <<'EOF'
policies = (
  { name = "postmaster"; type = "block"; match = "rcpt";
    entries = [ "postmaster@d.example" ]; action = "accept"; },
  { name = "max-rcpts"; type = "recipients"; max = 3; action = "tempfail";
    reply = "452 4.5.3 Too many recipients (at most ${limit})"; },
  { name = "max-size"; type = "size"; max = "20K"; action = "reject";
    reply = "552 5.3.4 Message too big (limit ${limit})"; }
);
EOF
)
	mta_use "milter runs with an allowed postmaster, a recipients and a size policy" \
		"$conf" || return
	t=$(mta_session --to postmaster@d.example --to r2@d.example --to r3@d.example \
		--to r4@d.example --to r5@d.example --to r6@d.example)
	assert_eq "accept at RCPT: postmaster, r2 and r3 accepted" \
		"$(mta_rcpt_ok postmaster@d.example)|$(mta_rcpt_ok r2@d.example)|$(mta_rcpt_ok r3@d.example)" \
		"$(smtp_reply "$t" RCPT 1)|$(smtp_reply "$t" RCPT 2)|$(smtp_reply "$t" RCPT 3)" "$t"
	assert_reply "accept at RCPT: the allowed postmaster does not lift the limit for r4" \
		"$t" RCPT 4 "$(mta_refusal r4@d.example '452 4.5.3 Too many recipients (at most 3)')"
	assert_reply "accept at RCPT: nor for r6" "$t" RCPT 6 \
		"$(mta_refusal r6@d.example '452 4.5.3 Too many recipients (at most 3)')"
	assert_reply_match "accept at RCPT: the message is accepted" "$t" DOT 1 "$(mta_queued_re)"
	q=$(mta_queue_id "$t")
	assert_eq "accept at RCPT: the message goes to postmaster, r2 and r3" \
		"postmaster@d.example r2@d.example r3@d.example" "$(mta_message_rcpts "$q")" "$t"

	t=$(mta_session --to postmaster@d.example --to other@d.example --body-bytes 60000)
	assert_reply "accept at RCPT: postmaster accepted" "$t" RCPT 1 \
		"$(mta_rcpt_ok postmaster@d.example)"
	assert_reply "accept at RCPT: 60 kB to postmaster and another refused at end of data" \
		"$t" DOT 1 '552 5.3.4 Message too big (limit 20K)'

	conf=$(sc_conf accept-held pmhold: <<'EOF'
policies = (
  { name = "hold-helo"; type = "block"; match = "helo";
    entries = [ "held.example" ]; action = "quarantine"; },
  { name = "known-helo"; type = "block"; match = "helo";
    entries = [ "held.example" ]; action = "accept"; },
  { name = "vip"; type = "block"; match = "sender";
    entries = [ "vip@example.org" ]; action = "accept"; }
);
EOF
)
	mta_use "milter runs with a held HELO that an allow list also accepts" "$conf" || return
	t=$(mta_session --helo held.example)
	assert_reply_match "held, then accepted at HELO: the client gets 250 after DATA" \
		"$t" DOT 1 "$(mta_queued_re)"
	q=$(mta_queue_id "$t")
	assert_eq "held, then accepted at HELO: $MTA still holds the message" held \
		"$(mta_message_fate "$q")" "$t"
	t=$(mta_session --helo held.example --from vip@example.org)
	q=$(mta_queue_id "$t")
	assert_eq "held at HELO, allowed sender: $MTA still holds the message" held \
		"$(mta_message_fate "$q")" "$t"
}

# ------------------------------------------------------------ a live sender list, delayed

# Redis's MONITOR in the background, into FILE: every command Redis runs,
# with its arguments, so that the milter's script calls can be told apart
# from its statistics flushes (INFO commandstats counts both as EVALSHA,
# and a flush comes about a second after traffic, whenever that is).
sc_monitor_start() {  # sc_monitor_start FILE
	local i=0
	redis-cli -s "$PM_REDIS_SOCK" MONITOR >"$1" 2>&1 &
	SC_MONITOR_PID=$!
	until grep -q '^OK' "$1" 2>/dev/null; do
		[ "$i" -ge 50 ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

sc_monitor_stop() {
	sleep 0.3       # the last commands' lines reach the file
	kill "$SC_MONITOR_PID" 2>/dev/null
	wait "$SC_MONITOR_PID" 2>/dev/null
}

# The script calls in a MONITOR capture, the statistics flushes left out
# (their first key is <prefix>statsflush:<process id>, milter/stats.c).
sc_script_calls() {  # sc_script_calls FILE
	grep -i '"evalsha"' "$1" | grep -vc 'statsflush:'
}

# One clean message (one recipient) after a warm-up message: prints the
# script calls Redis saw for it.
sc_clean_calls() {  # sc_clean_calls FROM
	local mon=$PM_TMP/monitor.$1 t
	mta_session --from "warm.$1" >/dev/null
	sc_monitor_start "$mon" || { echo "no MONITOR"; return; }
	t=$(mta_session --from "$1")
	sc_monitor_stop
	if ! printf '%s\n' "$t" | grep -Eq "^<-  ${SC_QUEUED_RE#^}"; then
		echo "not accepted: $(smtp_reply "$t" DOT)"
		return
	fi
	sc_script_calls "$mon"
}

# A live sender list (redis = true) and a policy that decides at RCPT: the
# list waits for the first RCPT (delay_mail_lookups, on by default), so a
# message costs one script call.  A listed sender gets 250 to MAIL FROM and
# the list's reply to every RCPT, decided, logged and counted once.  With
# delay_mail_lookups = false the list refuses MAIL FROM itself, and a
# message costs two calls.
sc_live_sender() {
	local conf t want n spelling policies
	SC_QUEUED_RE=$(mta_queued_re)
	want='550 5.7.1 Sender spam@example.org is listed'
	# shellcheck disable=SC2016  # ${sender} is the milter's, not the shell's
	policies='policies = (
  { name = "live-senders"; type = "block"; match = "sender"; redis = true;
    action = "reject"; reply = "550 5.7.1 Sender ${sender} is listed"; },
  { name = "per-sender"; type = "ratelimit"; key = "sender"; count = "recipients";
    limit = 1000; window = "1h"; action = "tempfail"; }
);'
	conf=$(printf '%s\n' "$policies" | sc_conf live-delayed pmdelay:)
	redis_cli ZADD pmdelay:block:live-senders +inf spam@example.org >/dev/null
	mta_use "milter runs with a live sender list and a rate limit at RCPT" "$conf" || return

	t=$(mta_session --from spam@example.org --to r1@example.net --to r2@example.net)
	assert_reply "delayed list: MAIL FROM of the listed sender accepted" "$t" MAIL 1 \
		"$(mta_mail_ok spam@example.org)"
	assert_reply "delayed list: RCPT 1 gets the list's reply" "$t" RCPT 1 \
		"$(mta_refusal r1@example.net "$want")"
	assert_reply "delayed list: RCPT 2 gets the same reply" "$t" RCPT 2 \
		"$(mta_refusal r2@example.net "$want")"
	assert_eq "delayed list: no DATA, nothing accepted" 0 "$(smtp_ncmds "$t" DATA)" "$t"
	wait_for_milter_log "$(mta_decision_re live-senders mail reject "$want")"
	assert_eq "delayed list: one decision line (stage=mail, the reply), none at rcpt" "1 0" \
		"$(grep -cE "$(mta_decision_re live-senders mail reject "$want")" "$MILTER_LOG") $(grep -c 'policy=live-senders stage=rcpt' "$MILTER_LOG")" \
		"$(grep 'policy=live-senders' "$MILTER_LOG")"
	assert_stats "delayed list: counted once (live-senders rejected 1, checked 1)" \
		pmdelay:stats:live-senders rejected=1 checked=1
	assert_eq "delayed list: the rate limit counted nothing for the refused message" 0 \
		"$(redis_cli EXISTS pmdelay:rl:per-sender:spam@example.org)"

	n=$(sc_clean_calls clean@example.org)
	assert_eq "delayed list: a clean message costs one script call (MAIL's lookup in RCPT's)" \
		1 "$n" "$(grep -i evalsha "$PM_TMP/monitor.clean@example.org" 2>/dev/null)"

	# Other spellings of the listed address are the same entry.
	for spelling in '"Spam"@EXAMPLE.org.' '@relay.example:SPAM@Example.ORG'; do
		t=$(mta_session --from "$spelling")
		assert_eq "delayed list: $spelling is spam@example.org: MAIL 250, RCPT refused" \
			"250 | $(mta_refusal rcpt@example.net "$want")" \
			"$(smtp_reply "$t" MAIL | cut -c1-3) | $(smtp_reply "$t" RCPT)" "$t"
	done

	conf=$(printf 'delay_mail_lookups = false;\n%s\n' "$policies" |
		sc_conf live-at-mail pmnodelay:)
	redis_cli ZADD pmnodelay:block:live-senders +inf spam@example.org >/dev/null
	mta_use "milter runs with delay_mail_lookups = false" "$conf" || return
	t=$(mta_session --from spam@example.org)
	assert_reply "not delayed: the listed sender refused at MAIL FROM, the same reply" \
		"$t" MAIL 1 "$(mta_refusal spam@example.org "$want")"
	assert_eq "not delayed: no RCPT after the refused MAIL" 0 "$(smtp_ncmds "$t" RCPT)" "$t"
	n=$(sc_clean_calls clean2@example.org)
	assert_eq "not delayed: a clean message costs two script calls (MAIL, RCPT)" \
		2 "$n" "$(grep -i evalsha "$PM_TMP/monitor.clean2@example.org" 2>/dev/null)"
}

scenarios_run() {
	sc_no_milter
	sc_size_rcpts
	sc_actions
	sc_client_block
	sc_exempt
	sc_ratelimit
	sc_accept_scope
	sc_live_sender
}
