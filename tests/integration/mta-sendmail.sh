#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
#
# mta-sendmail.sh - the shared scenario list (scenarios.sh) through a real
# Sendmail 8.17 (Debian's binary, unpacked, never installed: see mta.sh),
# then what only Sendmail has, each claim of README's "Attach it to
# Sendmail" section checked:
#
#   0. README's INPUT_MAIL_FILTER line is the one the scenarios ran with;
#      a quarantined message is listed by mailq -qQ with its reason and
#      released by sendmail -qQ -Q -qI<id>
#   1. the milter unreachable with F=T, F=R and no F= flag: what the client
#      sees (and that without a flag mail passes unfiltered: a sender the
#      milter's block list always refuses is accepted)
#   2. a milter that hangs: T=R bounds the wait, then F=T applies
#   3. a .cf without any confMILTER_MACROS_* line: the macros the milter
#      reads ({auth_authen} at MAIL, i at RCPT) still arrive, because the
#      milter asks for them itself (smfi_setsymlist)
#   4. "sendmail -bs" over pipes, as a local program submits mail: no client
#      address reaches the milter, so exempt.clients, client lists and
#      client_ip rate limits do not apply (and the log says client=unknown)
#   5. a unix socket: Sendmail connects as root, so a socket of mode 0600
#      owned by the milter's user works; a socket in a group-writable
#      directory is refused by Sendmail itself ("unsafe")
#
# Needs root (private namespaces), python3, m4, unshare, mount, hostname,
# redis-server and Debian's sendmail-bin and sendmail-cf unpacked by
# scripts/install-deps.sh; skips (77) without them, or fails (99) when
# PM_REQUIRE_SENDMAIL=1.  TAP on stdout.  Runs in about 20 s (a Sendmail
# session costs about 0.2 s).

# shellcheck source-path=SCRIPTDIR source=scenarios.sh
. "$(dirname "${BASH_SOURCE[0]}")/scenarios.sh"

# SC2016: reply templates hold ${...} for the milter, not for the shell.
# shellcheck disable=SC2016

mta_setup sendmail
redis_start || pm_bail "cannot start Redis"
mta_start || pm_bail "cannot build a sendmail.cf with m4"
mta_auth_start || pm_bail "cannot start the stand-in saslauthd"
echo "# $(paste -sd ' ' "$PM_SENDMAIL_ROOT/.complete" 2>/dev/null)"

scenarios_run

MAIN_CF=$SM_CF

# A port of 127.0.0.1 that refuses connections, below the ephemeral range:
# a connection from an ephemeral port to that same port would succeed
# (TCP simultaneous open).
dead_port() {
	python3 - <<'PY'
import random, socket
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
for p in random.sample(range(20000, low if low > 21000 else 32768), 200):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", p))
    except ConnectionRefusedError:
        print(p)
        break
    except OSError:
        pass
    finally:
        s.close()
PY
}
DEAD_PORT=$(dead_port)
[ -n "$DEAD_PORT" ] || pm_bail "no port of 127.0.0.1 below the ephemeral range refuses connections"
echo "# dead port $DEAD_PORT"

# The scenarios ran with README's filter line, but for the socket.
readme_line=$(grep -m1 '^INPUT_MAIL_FILTER(`policy-milter' "$top_srcdir/README.md")
assert_eq "the filter line of the scenarios is README's, but for S=" \
	"$(printf '%s\n' "$readme_line" | sed 's/S=[^,]*,/S=inet:'"$MILTER_PORT"'@127.0.0.1,/')" \
	"$(grep '^INPUT_MAIL_FILTER' "$MAIN_CF.mc" | sed 's/dnl$//')"
assert_eq "m4 turns it into the filter definition and InputMailFilters" \
	"O InputMailFilters=policy-milter|Xpolicy-milter, S=inet:$MILTER_PORT@127.0.0.1, F=T, T=C:10s;S:10s;R:10s;E:1m" \
	"$(grep -E '^(O InputMailFilters|Xpolicy-milter)' "$MAIN_CF" | paste -sd '|')"

# ------------------------------------------------------------ 0. quarantine

# The scenarios left one message quarantined by hold-senders
# (hold@example.org), and two by hold-helo (sc_accept_scope): mailq -qQ
# lists the first with its reason, and "sendmail -qQ -Q -qI<id>" releases it.
held=$(cd "$SM_DIR/mqueue" && grep -l 'policy hold-senders' hf* 2>/dev/null)
assert_eq "quarantine: one held queue file (hf<id>) for hold-senders" 1 \
	"$(printf '%s\n' "$held" | grep -c '^hf')" "$(ls -l "$SM_DIR/mqueue")"
assert_eq "quarantine: two for hold-helo" 2 \
	"$(cd "$SM_DIR/mqueue" && grep -l 'policy hold-helo' hf* 2>/dev/null | grep -c '^hf')" \
	"$(ls -l "$SM_DIR/mqueue")"
held=${held#hf}
out=$(sendmail_cmd -bp -qQ 2>&1)
assert_match "quarantine: mailq -qQ lists it with the reason" \
	"QUARANTINE: policy-milter policy hold-senders" "$out"
out=$(sendmail_cmd -qQ -Q "-qI$held" 2>&1)
assert_eq "quarantine: sendmail -qQ -Q -qI<id> releases it (hf renamed qf)" "qf" \
	"$(for p in hf qf; do [ -f "$SM_DIR/mqueue/$p$held" ] && echo "$p"; done)" "$out"

# ------------------------------------------------------------ 1. milter unreachable

# blocked@example.org is on a block list: through the milter it is always
# refused, so a message from it accepted below was not filtered.
conf=$(sc_conf control pmctl: <<'EOF'
policies = (
  { name = "blocked-control"; type = "block"; match = "sender";
    entries = [ "blocked@example.org" ]; action = "reject";
    reply = "550 5.7.1 Sender ${sender} refused (${policy})"; }
);
EOF
)
mta_use "milter runs with a block list that always refuses blocked@example.org" "$conf"
BLOCKED_NO=$(mta_refusal blocked@example.org \
	'550 5.7.1 Sender blocked@example.org refused (blocked-control)')
t=$(mta_session --from blocked@example.org)
assert_reply "milter up: blocked@example.org refused at MAIL FROM (control for the cases below)" \
	"$t" MAIL 1 "$BLOCKED_NO"

SM_CF=$SM_DIR/down-T.cf
sendmail_cf "$SM_CF" --socket "inet:$DEAD_PORT@127.0.0.1" --flags T
t=$(mta_session --from blocked@example.org)
assert_reply_match "milter down, F=T: banner 220" "$t" CONNECT 1 "$(mta_banner_re)"
assert_reply "milter down, F=T: MAIL FROM tempfailed (451 4.3.2)" "$t" MAIL 1 \
	'451 4.3.2 Please try again later'

# F=R: Sendmail's own 554 banner; EHLO, HELO, NOOP, RSET and QUIT get their
# usual replies (EHLO offering no extension but ENHANCEDSTATUSCODES), MAIL
# (and RCPT, DATA, VRFY, EXPN, ETRN, VERB, HELP, AUTH, STARTTLS) gets
# "550 5.0.0 Command rejected".
SM_CF=$SM_DIR/down-R.cf
sendmail_cf "$SM_CF" --socket "inet:$DEAD_PORT@127.0.0.1" --flags R
t=$(mta_session --from blocked@example.org --before-mail NOOP --before-mail RSET)
assert_reply "milter down, F=R: the banner is a 554" "$t" CONNECT 1 \
	'554 mx.test.example ESMTP not accepting messages'
assert_eq "milter down, F=R: EHLO answered 250 as usual" \
	"$(mta_ehlo_first)" "$(mta_ehlo_greeting "$t")" "$t"
assert_eq "milter down, F=R: EHLO offers no extension but ENHANCEDSTATUSCODES" \
	ENHANCEDSTATUSCODES "$(mta_ehlo_ext "$t")" "$t"
assert_reply "milter down, F=R: NOOP answered as usual" "$t" OTHER 1 "$(mta_noop_ok)"
assert_reply "milter down, F=R: RSET answered as usual" "$t" RSET 1 "$(mta_rset_ok)"
assert_reply "milter down, F=R: MAIL FROM rejected (550 5.0.0)" "$t" MAIL 1 \
	'550 5.0.0 Command rejected'

SM_CF=$SM_DIR/down-none.cf
sendmail_cf "$SM_CF" --socket "inet:$DEAD_PORT@127.0.0.1" --flags ''
assert_true "no F= flag: the filter line has no F=" \
	grep -qx "Xpolicy-milter, S=inet:$DEAD_PORT@127.0.0.1, T=C:10s;S:10s;R:10s;E:1m" "$SM_CF"
t=$(mta_session --from blocked@example.org)
assert_reply_match "milter down, no F= flag: the message from blocked@example.org is accepted unfiltered" \
	"$t" DOT 1 "$(mta_queued_re)"

# ------------------------------------------------------------ 2. milter hangs

SM_CF=$SM_DIR/hang.cf
sendmail_cf "$SM_CF" --flags T --timeouts 'C:2s;S:2s;R:1s;E:2s'
kill -STOP "$MILTER_PID"
start=$(date +%s%N)
t=$(mta_session --from hang@example.org)
ms=$(( ($(date +%s%N) - start) / 1000000 ))
kill -CONT "$MILTER_PID"
assert_reply "milter hangs (SIGSTOP), T=R:1s, F=T: MAIL FROM tempfailed" "$t" MAIL 1 \
	'451 4.3.2 Please try again later'
# shellcheck disable=SC2317 # called through assert_true
between() { [ "$1" -ge "$2" ] && [ "$1" -lt "$3" ]; }
assert_true "milter hangs: the session took 1-5 s (R:1s; took ${ms} ms)" between "$ms" 1000 5000
SM_CF=$MAIN_CF
t=$(mta_session --from blocked@example.org)
assert_reply "milter continued (SIGCONT): it answers again (blocked@example.org refused)" \
	"$t" MAIL 1 "$BLOCKED_NO"

# ------------------------------------------------------------ 3. no confMILTER_MACROS lines

SM_CF=$SM_DIR/no-macros.cf
sendmail_cf "$SM_CF" --no-macros
assert_eq "the default .cf (m4) sends Debian's macro lists: i and {auth_authen} at MAIL" \
	1 "$(grep -c '^O Milter\.macros\.envfrom=i, .*{auth_authen}' "$MAIN_CF")"
assert_eq "the no-macros .cf asks Sendmail to send no macro at any stage" \
	"0" "$(grep -c '^O Milter\.macros\.[a-z]*=.' "$SM_CF")" "$(grep 'Milter' "$SM_CF")"
conf=$(sc_conf no-macros pmnm: <<'EOF'
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
mta_use "milter runs with a sasl_user list and an authenticated exemption" "$conf"
t=$(mta_session --auth mallory --from m@example.org)
assert_reply "no macro lines: {auth_authen} arrives (mallory refused at MAIL FROM)" "$t" MAIL 1 \
	'550 5.7.1 <m@example.org>... Account not allowed to send (blocked-users)'
t=$(mta_session --auth alice --to r1@example.net --to r2@example.net)
assert_reply "no macro lines: {auth_authen} arrives (alice exempt, RCPT 2 accepted)" "$t" RCPT 2 \
	"$(mta_rcpt_ok r2@example.net)"
t=$(mta_session --to r1@example.net --to r2@example.net)
assert_reply "no macro lines: unauthenticated RCPT 2 refused" "$t" RCPT 2 \
	'550 5.5.3 <r2@example.net>... Authenticate to send to more than 1 recipient'
q=$(mta_queue_id "$t")
assert_grep "no macro lines: i arrives (the RCPT decision is logged with queue id ${q:-?})" \
	"(^| )${q:-none}: client=127\.0\.0\.1: policy=anon-rcpts stage=rcpt action=reject" "$MILTER_LOG"
SM_CF=$MAIN_CF

# ------------------------------------------------------------ 4. -bs over pipes

conf=$(sc_conf pipe pmpipe: <<'EOF'
exempt = { clients = [ "127.0.0.0/8" ]; };
policies = (
  { name = "blocked-clients"; type = "block"; match = "client";
    entries = [ "127.0.0.0/8" ]; action = "reject";
    reply = "554 5.7.1 Client ${client_ip} refused"; },
  { name = "per-client"; type = "ratelimit"; key = "client_ip"; count = "messages";
    limit = 1; window = "1m"; action = "tempfail";
    reply = "451 4.7.1 Rate limit reached for ${key}"; },
  { name = "max-rcpts"; type = "recipients"; max = 1; action = "reject";
    reply = "550 5.5.3 Too many recipients"; }
);
EOF
)
mta_use "milter runs with 127.0.0.0/8 exempt, a client list and a client_ip rate limit" "$conf"
t=$(mta_session --to r1@example.net --to r2@example.net)
assert_reply "over TCP: the client 127.0.0.1 is exempt (RCPT 2 accepted)" "$t" RCPT 2 \
	"$(mta_rcpt_ok r2@example.net)"
MTA_SM_MODE=pipe
t=$(mta_session --to r1@example.net --to r2@example.net)
assert_reply_match "over pipes: banner 220 (no client address: the client list cannot match)" \
	"$t" CONNECT 1 "$(mta_banner_re)"
assert_reply "over pipes: not exempt, the recipients policy refuses RCPT 2" "$t" RCPT 2 \
	'550 5.5.3 <r2@example.net>... Too many recipients'
assert_grep "over pipes: the milter logs client=unknown" \
	'(^| )[0-9A-Za-z]+: client=unknown: policy=max-rcpts stage=rcpt action=reject' "$MILTER_LOG"
t=$(mta_session)
assert_reply_match "over pipes: a client_ip rate limit (1 a minute) does not apply, message 2 accepted" \
	"$t" DOT 1 "$(mta_queued_re)"
MTA_SM_MODE=inetd

# ------------------------------------------------------------ 5. unix socket

# A second milter, as nobody, on a unix socket in a directory owned by
# nobody, mode 0750 (as systemd's RuntimeDirectory for the unit); the socket
# is 0600 nobody.  Sessions see the directory as /srv (a path with no group-
# or world-writable directory: Sendmail checks).
SOCK_DIR=$PM_TMP/sock
mkdir -p "$SOCK_DIR"
chown nobody:nogroup "$SOCK_DIR"
chmod 750 "$SOCK_DIR"
cat >"$PM_TMP/unix.conf" <<EOF
listen = "unix:$SOCK_DIR/milter.sock";
socket_mode = "0600";
user = "nobody";
policies = (
  { name = "max-rcpts"; type = "recipients"; max = 1; action = "reject";
    reply = "550 5.5.3 Too many recipients (unix socket)"; }
);
EOF
"$PM_MILTER_BIN" -f -c "$PM_TMP/unix.conf" >"$PM_TMP/milter-unix.log" 2>&1 &
UNIX_PID=$!
MTA_EXTRA_PIDS="$MTA_EXTRA_PIDS $UNIX_PID"
i=0
until [ -S "$SOCK_DIR/milter.sock" ] || [ "$i" -ge 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
# The socket exists before its owner and mode are set: up to 5 s more.
i=0
until mode=$(stat -c '%A %U' "$SOCK_DIR/milter.sock" 2>&1) &&
	[ "$mode" = "srw------- nobody" ] || [ "$i" -ge 50 ]; do
	sleep 0.1
	i=$((i + 1))
done
assert_eq "unix socket: mode 0600, owned by nobody" "srw------- nobody" "$mode" \
	"$(cat "$PM_TMP/milter-unix.log")"
SM_CF=$SM_DIR/unix.cf
sendmail_cf "$SM_CF" --socket local:/srv/milter.sock
SM_SRV=$SOCK_DIR
t=$(mta_session --to r1@example.net --to r2@example.net)
assert_reply "unix socket 0600 nobody, directory 0750 nobody: Sendmail (root) connects, the milter refuses RCPT 2" \
	"$t" RCPT 2 '550 5.5.3 <r2@example.net>... Too many recipients (unix socket)'
chmod 770 "$SOCK_DIR"
t=$(mta_session --to r1@example.net --to r2@example.net)
assert_reply_match "unix socket in a group-writable directory: Sendmail refuses the path" \
	"$t" CONNECT 1 \
	"^451 4\\.0\\.0 .*: Xpolicy-milter: local socket name /srv/milter\\.sock unsafe: Group writable directory$"
SM_SRV=
SM_CF=$MAIN_CF

# Both milters get SIGTERM and stop side by side.
kill -TERM "$UNIX_PID" 2>/dev/null
assert_milter_stop "SIGTERM: the milter exits with status 0 after every scenario"
if pm_wait_gone "$UNIX_PID" 100; then
	wait "$UNIX_PID"
	rc=$?
else
	kill -KILL "$UNIX_PID" 2>/dev/null
	wait "$UNIX_PID" 2>/dev/null
	rc="no exit within 10 s of SIGTERM (killed)"
fi
MTA_EXTRA_PIDS=${MTA_EXTRA_PIDS/ $UNIX_PID/}
assert_eq "unix-socket milter: SIGTERM, exit status 0" 0 "$rc" \
	"$(tail -n 30 "$PM_TMP/milter-unix.log")"
assert_eq "unix-socket milter: no sanitizer report in its log" "" \
	"$(grep -E 'AddressSanitizer|LeakSanitizer|runtime error' "$PM_TMP/milter-unix.log" | head -n 20)"

mta_assert_no_sanitizer_reports
pm_finish
