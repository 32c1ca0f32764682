# SPDX-License-Identifier: BSD-2-Clause
# shellcheck shell=bash
#
# mta.sh - one SMTP client and two MTAs behind one interface, so that one
# list of scenarios (scenarios.sh) runs unchanged against Postfix and
# against Sendmail (mta-postfix.sh, mta-sendmail.sh).
#
# Sourced (bash only) after nothing: it sources lib.sh itself and uses its
# Redis, milter, TAP and transcript functions (smtp_reply, smtp_count, ...).
#
#   mta_setup postfix|sendmail   checks, temporary directory, EXIT trap, ports
#   mta_start                    start the MTA (Postfix) or write its .cf (Sendmail)
#   mta_session [options]        one SMTP session; prints the transcript
#   mta_use DESC CONF            run the milter with CONF: start it the first
#                                time, reload it (SIGUSR1) after that
#   mta_auth_start               a stand-in SASL password checker (user any
#                                name, password "secret") the MTA asks
#
# The MTAs
#
# Postfix: the private instance of lib.sh on 127.0.0.1:$SMTP_PORT (plus SASL
# through a stand-in for Dovecot's auth socket); the client talks TCP to it.
#
# Sendmail: Debian's sendmail-bin 8.17, unpacked (dpkg -x) and never
# installed, because it conflicts with Postfix as a package.  Where it is:
# $PM_SENDMAIL_ROOT, default /var/cache/policy-milter-tests/sendmail/root,
# which scripts/install-deps.sh fills.  Its .cf is built with m4 from
# Debian's sendmail-cf files; queue, pid and statistics files live in
# $PM_TMP/sendmail.  Each session is one "sendmail -bs" run in a private UTS
# and mount namespace (unshare -u -m) whose host name is mx.test.example and
# whose /etc/hosts resolves it (IPv4 and IPv6): without a resolvable fully
# qualified name Sendmail waits 60 s before its banner.  No session asks
# the host's DNS resolver (a slow one would stall it): the .cf makes
# Sendmail look host names up in files only (its own service switch file,
# "hosts files": no MX, A or AAAA query for the domains of the addresses),
# without canonifying them (nocanonify, no search list), and the
# namespace's /etc/resolv.conf names only 127.0.0.1, where nothing answers
# DNS (a query would be refused at once), and hides nscd's socket (an nscd
# of the host would resolve with the host's files and resolver).  The same
# namespace bind-mounts a Sendmail.conf for Cyrus SASL over /usr/lib/sasl2
# (and /etc/sasl2 if it exists) and, on request, a socket directory over
# /srv.  Nothing on the host changes.
#
# Sendmail's stdin and stdout are one end of a TCP connection on loopback
# (as inetd would run "sendmail -bs"): Sendmail then reads the client's
# address from the socket and hands it to the milter, as its daemon does.
# With MTA_SM_MODE=pipe they are pipes instead, like a local program that
# submits with "sendmail -bs": Sendmail has no client address then.
#
# Debian's Sendmail refuses commands sent before it has answered the
# previous ones ("554 5.5.0 SMTP protocol error"): the client sends one
# command, reads its whole reply, then sends the next.
#
# The transcript format is lib.sh's (swaks'): " -> " client lines, "<-  "
# replies, "<** " refusals, so smtp_reply TRANSCRIPT STAGE N picks the reply
# to the Nth command of a stage: CONNECT (banner), EHLO, MAIL, RCPT, DATA
# (the 354), DOT (the reply to the message), QUIT.

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MTA=                    # postfix | sendmail
MTA_SM_MODE=${MTA_SM_MODE:-inetd}
PM_SENDMAIL_CACHE=${PM_SENDMAIL_CACHE:-/var/cache/policy-milter-tests/sendmail}
PM_SENDMAIL_ROOT=${PM_SENDMAIL_ROOT:-$PM_SENDMAIL_CACHE/root}
SM_BIN=$PM_SENDMAIL_ROOT/usr/libexec/sendmail/sendmail
SM_CFDIR=$PM_SENDMAIL_ROOT/usr/share/sendmail/cf
SM_DIR=                 # $PM_TMP/sendmail: .mc/.cf files, queues, hosts, sasl/
SM_CF=                  # the .cf the sessions use
SM_SRV=                 # directory bind-mounted over /srv in sessions, if set
MTA_AUTH_SOCK=
MTA_EXTRA_PIDS=         # other processes to stop at exit

mta_skip() {    # mta_skip REASON : the whole test is skipped (automake: 77)
	echo "1..0 # SKIP $1"
	exit 77
}

# A Sendmail test that cannot run: skipped (77), or, with
# PM_REQUIRE_SENDMAIL=1 (scripts/run-tests.sh sets it), a hard error
# (automake: 99), so that CI never passes without running it.
mta_sm_skip() {  # mta_sm_skip REASON
	if [ "${PM_REQUIRE_SENDMAIL:-0}" = 1 ]; then
		echo "Bail out! PM_REQUIRE_SENDMAIL=1 but the Sendmail test cannot run: $1"
		exit 99
	fi
	mta_skip "$1"
}

# Is Debian's Sendmail unpacked where the tests look for it?
mta_sendmail_present() {
	[ -x "$SM_BIN" ] && [ -f "$SM_CFDIR/m4/cf.m4" ]
}

# shellcheck disable=SC2317 # called from the EXIT trap
mta_cleanup() {
	local pid
	for pid in $MTA_EXTRA_PIDS; do
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	MTA_EXTRA_PIDS=
}

mta_trap() {
	# shellcheck disable=SC2154 # pm_rc is assigned inside the trap
	trap 'pm_rc=$?; mta_cleanup; pm_cleanup; exit $pm_rc' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# The temporary directory, the trap and the ports.  For Postfix that is
# lib.sh's pm_setup; Sendmail needs neither Postfix nor swaks, so it does
# the same steps with its own list of requirements.
mta_setup() {   # mta_setup postfix|sendmail
	local t
	MTA=$1
	case $MTA in
	postfix)
		pm_setup
		mta_trap
		;;
	sendmail)
		for t in python3 redis-server redis-cli unshare mount hostname m4; do
			command -v "$t" >/dev/null 2>&1 || mta_sm_skip "$t is not installed"
		done
		[ "$(id -u)" = 0 ] || mta_sm_skip "Sendmail in a private namespace needs root"
		[ -x "$PM_MILTER_BIN" ] || mta_skip "$PM_MILTER_BIN is not built"
		mta_sendmail_present || mta_sm_skip "Debian's Sendmail is not unpacked in \
$PM_SENDMAIL_ROOT (run scripts/install-deps.sh as root, or set PM_SENDMAIL_ROOT)"
		unshare -u -m true 2>/dev/null ||
			mta_sm_skip "unshare -u -m does not work here (no private namespaces)"
		PM_TMP=$(mktemp -d "${TMPDIR:-/tmp}/pm-it.XXXXXX") || pm_bail "mktemp failed"
		mta_trap        # from here on a bail-out removes $PM_TMP
		chmod 755 "$PM_TMP"     # the milter may run as nobody (socket tests)
		local ports
		ports=$(pm_free_ports 1) || pm_bail "cannot find a free port"
		MILTER_PORT=$ports
		PM_MILTER_N=0
		PM_REDIS_SOCK=$PM_TMP/redis/redis.sock
		SM_DIR=$PM_TMP/sendmail
		echo "# workdir $PM_TMP milter port $MILTER_PORT sendmail $SM_BIN"
		;;
	*)
		pm_bail "mta_setup: unknown MTA '$MTA'"
		;;
	esac
}

# ---------------------------------------------------------------- Sendmail

# sendmail_cf OUT [--flags F] [--socket SPEC] [--timeouts T] [--no-macros]
# Writes OUT.mc and builds OUT (a sendmail.cf) with m4.  The filter line is
#   INPUT_MAIL_FILTER(`policy-milter', `S=SPEC, F=F, T=T')
# default S=inet:$MILTER_PORT@127.0.0.1, F=T, T=C:10s;S:10s;R:10s;E:1m;
# "--flags ''" leaves F= out.  --no-macros empties every
# confMILTER_MACROS_* (Debian's cf files otherwise send a default list), so
# that only the macros the milter asks for itself reach it.
sendmail_cf() {
	local out=$1 flags=T socket="inet:$MILTER_PORT@127.0.0.1"
	local timeouts='C:10s;S:10s;R:10s;E:1m' macros=yes m spec
	shift
	while [ $# -gt 0 ]; do
		case $1 in
		--flags) flags=$2; shift 2 ;;
		--socket) socket=$2; shift 2 ;;
		--timeouts) timeouts=$2; shift 2 ;;
		--no-macros) macros=no; shift ;;
		*) echo "sendmail_cf: unknown option $1" >&2; return 2 ;;
		esac
	done
	mkdir -p "$SM_DIR/mqueue" "$SM_DIR/clientmqueue"
	chmod 700 "$SM_DIR/mqueue" "$SM_DIR/clientmqueue"
	spec="S=$socket${flags:+, F=$flags}, T=$timeouts"
	{
		echo "divert(-1)"
		echo "include(\`$SM_CFDIR/m4/cf.m4')"
		echo "divert(0)dnl"
		echo "OSTYPE(\`linux')dnl"
		echo "define(\`confDOMAIN_NAME', \`mx.test.example')dnl"
		echo "define(\`QUEUE_DIR', \`$SM_DIR/mqueue')dnl"
		echo "define(\`MSP_QUEUE_DIR', \`$SM_DIR/clientmqueue')dnl"
		echo "define(\`confPID_FILE', \`$SM_DIR/sendmail.pid')dnl"
		echo "define(\`STATUS_FILE', \`$SM_DIR/statistics')dnl"
		echo "define(\`ALIAS_FILE', \`')dnl"
		echo "define(\`confDELIVERY_MODE', \`queueonly')dnl"
		echo "define(\`confDONT_PROBE_INTERFACES', \`True')dnl"
		echo "define(\`confAUTH_MECHANISMS', \`PLAIN')dnl"
		echo "FEATURE(\`accept_unresolvable_domains')dnl"
		echo "FEATURE(\`accept_unqualified_senders')dnl"
		# no DNS: host names from files only, addresses not canonified,
		# names not searched
		echo "define(\`confSERVICE_SWITCH_FILE', \`$SM_DIR/service.switch')dnl"
		echo "FEATURE(\`nocanonify')dnl"
		echo "define(\`confBIND_OPTS', \`-DNSRCH -DEFNAMES')dnl"
		if [ "$macros" = no ]; then
			for m in CONNECT HELO ENVFROM ENVRCPT DATA EOH EOM; do
				echo "define(\`confMILTER_MACROS_$m', \`')dnl"
			done
		fi
		echo "INPUT_MAIL_FILTER(\`policy-milter', \`$spec')dnl"
		echo "MAILER(\`local')dnl"
		echo "MAILER(\`smtp')dnl"
	} >"$out.mc"
	m4 "$out.mc" >"$out" 2>"$out.m4err" || { cat "$out.m4err" >&2; return 1; }
}

# The files every Sendmail session needs: /etc/hosts and /etc/resolv.conf
# for the namespace, Sendmail's service switch (no DNS), Cyrus SASL's
# Sendmail.conf (PLAIN, checked by the saslauthd stand-in), the default .cf.
sendmail_prepare() {
	mkdir -p "$SM_DIR/sasl" "$SM_DIR/empty"
	chmod 755 "$SM_DIR" "$SM_DIR/sasl" "$SM_DIR/empty"
	printf '127.0.0.1 localhost mx.test.example mx\n::1 localhost ip6-localhost mx.test.example mx\n' \
		>"$SM_DIR/hosts"
	# nothing listens on 127.0.0.1:53: a DNS query is refused at once
	printf 'nameserver 127.0.0.1\n' >"$SM_DIR/resolv.conf"
	printf 'hosts\tfiles\naliases\tfiles\n' >"$SM_DIR/service.switch"
	chmod 644 "$SM_DIR/hosts" "$SM_DIR/resolv.conf" "$SM_DIR/service.switch"
	MTA_AUTH_SOCK=$SM_DIR/saslauthd.mux
	cat >"$SM_DIR/sasl/Sendmail.conf" <<EOF
pwcheck_method: saslauthd
saslauthd_path: $MTA_AUTH_SOCK
mech_list: PLAIN
EOF
	chmod 644 "$SM_DIR/sasl/Sendmail.conf"
	SM_CF=$SM_DIR/test.cf
	sendmail_cf "$SM_CF"
}

# The shell that runs Sendmail inside the private namespace.
# $1 $SM_DIR (hosts, resolv.conf, sasl/, empty/), $2 sendmail, $3 .cf, $4
# dir for /srv (or empty), then Sendmail's arguments.  A missing (or
# dangling) /etc/resolv.conf is left alone: the resolver then asks
# 127.0.0.1 anyway.
# shellcheck disable=SC2016 # expanded by that shell
SM_NS_SCRIPT='hostname mx.test.example &&
mount --bind "$1/hosts" /etc/hosts &&
{ [ ! -e /etc/resolv.conf ] || mount --bind "$1/resolv.conf" /etc/resolv.conf; } &&
{ [ ! -d /var/run/nscd ] || mount --bind "$1/empty" /var/run/nscd; } &&
{ [ ! -d /usr/lib/sasl2 ] || mount --bind "$1/sasl" /usr/lib/sasl2; } &&
{ [ ! -d /etc/sasl2 ] || mount --bind "$1/sasl" /etc/sasl2; } &&
{ [ -z "$4" ] || mount --bind "$4" /srv; } &&
bin=$2 cf=$3 && shift 4 && exec "$bin" -C "$cf" "$@"'

# Run Sendmail with ARGS (mailq -bp, queue commands) in the same kind of
# namespace as the sessions, with the current .cf.
sendmail_cmd() {  # sendmail_cmd ARGS...
	unshare -u -m sh -c "$SM_NS_SCRIPT" sh "$SM_DIR" "$SM_BIN" "$SM_CF" \
		"${SM_SRV:-}" "$@"
}

# ---------------------------------------------------------------- both

mta_start() {
	case $MTA in
	postfix) mta_postfix_start ;;
	sendmail) sendmail_prepare ;;
	esac
}

# lib.sh's postfix_start plus SASL through the stand-in for Dovecot's auth
# service (configured before the start: no reload to wait for).  The
# stand-in starts first: postfix_start's wait for the port is a connection,
# and an smtpd that finds no auth socket exits, after which master holds
# smtpd back for a minute (the first sessions would time out).
mta_postfix_start() {
	MTA_AUTH_SOCK=$PM_TMP/dovecot-auth.sock
	mta_auth_start || return 1
	postfix_start smtpd_sasl_auth_enable=yes smtpd_sasl_type=dovecot \
		"smtpd_sasl_path=$MTA_AUTH_SOCK"
}

# The password checker the MTA asks (lib.sh's stand-in): Postfix asks it
# as Dovecot's auth service; Sendmail (Cyrus SASL) as saslauthd.  Once.
mta_auth_start() {
	local kind=dovecot
	[ -n "$AUTH_STUB_PID" ] && kill -0 "$AUTH_STUB_PID" 2>/dev/null && return 0
	[ "$MTA" = sendmail ] && kind=saslauthd
	auth_stub_start "$kind" "$MTA_AUTH_SOCK"
}

# mta_session [--helo NAME] [--auth USER] [--before-mail CMD]... [--from ADDR]
#             [--to ADDR]... [--size N] [--body-bytes N]
#             [--quit-after CONNECT|EHLO|MAIL|RCPT]
# One SMTP session with the MTA under test; prints the transcript.  Flow:
# banner; EHLO (also after a refusing banner: the tests show what the MTA
# does next); AUTH PLAIN with the password "secret" if --auth; each
# --before-mail command (NOOP, RSET, ...: smtp_reply's stage OTHER, RSET),
# whatever its reply; MAIL FROM
# (with SIZE=N if --size); QUIT after a refused MAIL; one RCPT per --to;
# QUIT when none was accepted; DATA and a message of --body-bytes octets
# (default 100) as CRLF lines; QUIT.  A server that closes the connection
# is reported as swaks does.  Defaults: from sender@example.org, to
# rcpt@example.net.  Sendmail's standard error goes to $PM_TMP/sendmail.err.
mta_session() {
	local target
	case $MTA in
	postfix) target=(tcp "$SMTP_PORT") ;;
	sendmail)
		target=("sendmail-$MTA_SM_MODE" "$SM_NS_SCRIPT" "$SM_DIR" "$SM_BIN"
			"$SM_CF" "${SM_SRV:-}" -bs)
		;;
	esac
	python3 - "${target[@]}" -- "$@" 2>>"$PM_TMP/client.err" <<'PY'
import base64, os, select, signal, socket, subprocess, sys

argv = sys.argv[1:]
sep = argv.index("--")
target, args = argv[:sep], argv[sep + 1:]
opts = {"--helo": "client.test.example", "--auth": "", "--from": "sender@example.org",
        "--size": "", "--body-bytes": "100", "--quit-after": ""}
rcpts = []
before_mail = []
i = 0
while i < len(args):
    if args[i] == "--to":
        rcpts.append(args[i + 1])
    elif args[i] == "--before-mail":
        before_mail.append(args[i + 1])
    elif args[i] in opts:
        opts[args[i]] = args[i + 1]
    else:
        sys.exit("mta_session: unknown option %s" % args[i])
    i += 2
if not rcpts:
    rcpts = ["rcpt@example.net"]
quit_after = opts["--quit-after"].upper()
out = sys.stdout
proc = None

class Closed(Exception):
    pass

class Timeout(Exception):
    pass

def on_alarm(signum, frame):
    raise Timeout()

signal.signal(signal.SIGALRM, on_alarm)
signal.alarm(60)        # the whole session; a hung MTA must not hang the test

if target[0] == "tcp":
    try:
        sock = socket.create_connection(("127.0.0.1", int(target[1])), timeout=30)
    except OSError as e:
        out.write("*** Error connecting to 127.0.0.1:%s: %s\n" % (target[1], e))
        sys.exit(0)
    rfile = sock.makefile("rb")
    send = sock.sendall
else:
    cmd = ["unshare", "-u", "-m", "sh", "-c", target[1], "sh"] + target[2:]
    err = open(os.environ.get("PM_TMP", "/tmp") + "/sendmail.err", "ab")
    if target[0] == "sendmail-inetd":
        # stdin and stdout are a TCP connection: Sendmail sees the peer.
        lsn = socket.socket()
        lsn.bind(("127.0.0.1", 0))
        lsn.listen(1)
        sock = socket.create_connection(lsn.getsockname(), timeout=30)
        server_end, _ = lsn.accept()
        lsn.close()
        proc = subprocess.Popen(cmd, stdin=server_end, stdout=server_end, stderr=err)
        server_end.close()
        rfile = sock.makefile("rb")
        send = sock.sendall
    else:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err)
        rfile = proc.stdout

        def send(data):
            proc.stdin.write(data)
            proc.stdin.flush()

def reply():
    lines = []
    while True:
        ln = rfile.readline()
        if not ln:
            raise Closed()
        ln = ln.decode("latin-1").rstrip("\r\n")
        lines.append(ln)
        if len(ln) < 4 or ln[3] != "-":
            break
    mark = "<** " if lines[0][:1] in ("4", "5") else "<-  "
    for ln in lines:
        out.write(mark + ln + "\n")
    out.flush()
    return int(lines[0][:3]) if lines[0][:3].isdigit() else 0

def cmd(line):
    out.write(" -> " + line + "\n")
    out.flush()
    send(line.encode() + b"\r\n")
    return reply()

def message(nbytes):
    head = ("From: <%s>\r\nTo: <%s>\r\nSubject: policy-milter test\r\n"
            "Message-Id: <test.%d@client.test.example>\r\n\r\n"
            % (opts["--from"], rcpts[0], os.getpid()))
    body, left = [], max(nbytes, 2)
    while left > 0:
        k = max(min(78, left - 2), 0)
        body.append("x" * k + "\r\n")
        left -= k + 2
    return (head + "".join(body)).encode()

def session():
    out.write("=== Connected to %s.\n" % ("127.0.0.1" if target[0] == "tcp" else target[0]))
    reply()
    if quit_after == "CONNECT":
        return cmd("QUIT")
    if cmd("EHLO " + opts["--helo"]) // 100 != 2 or quit_after == "EHLO":
        return cmd("QUIT")
    if opts["--auth"]:
        tok = base64.b64encode(b"\0" + opts["--auth"].encode() + b"\0secret").decode()
        out.write(" -> AUTH PLAIN %s\n" % tok)
        send(("AUTH PLAIN %s\r\n" % tok).encode())
        reply()
    for c in before_mail:
        cmd(c)
    mail = "MAIL FROM:<%s>" % opts["--from"]
    if opts["--size"]:
        mail += " SIZE=" + opts["--size"]
    if cmd(mail) // 100 != 2 or quit_after == "MAIL":
        return cmd("QUIT")
    ok = 0
    for r in rcpts:
        if cmd("RCPT TO:<%s>" % r) // 100 == 2:
            ok += 1
    if ok == 0 or quit_after == "RCPT":
        return cmd("QUIT")
    if cmd("DATA") == 354:
        data = message(int(opts["--body-bytes"]))
        out.write(" -> %d bytes sent\n" % len(data))
        send(data + b".\r\n")
        reply()
    cmd("QUIT")
    out.write("=== Connection closed with remote host.\n")

try:
    session()
except (Closed, ConnectionResetError, BrokenPipeError):
    # after a 421 the next command may meet the closed socket or its reset
    out.write("*** Remote host closed connection unexpectedly.\n")
except Timeout:
    out.write("*** Timeout: no answer within 60 s\n")
except OSError as e:
    out.write("*** %s\n" % e)
signal.alarm(0)
if proc is not None:
    try:
        sock.close()
    except NameError:
        if proc.stdin:
            proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        out.write("*** sendmail did not exit within 10 s of the end of the session: killed\n")
PY
}

# ---------------------------------------------------------------- the milter

# Run the milter with CONF: the first call starts it (and reports that as a
# test), later calls replace the configuration with SIGUSR1 and wait for
# the daemon to say it took it: one daemon for the whole list of scenarios
# (a libmilter daemon takes seconds to stop once it has served a session).
# The daemon reads $PM_TMP/milter.conf, a copy of the scenario's file.
# A daemon that died since the previous call is a failure (reported with
# its exit status and log), and a new one is started for what follows.
mta_use() {     # mta_use DESC CONF
	local before i=0 live=$PM_TMP/milter.conf rc
	cp "$2" "$live.new" && mv "$live.new" "$live"
	if [ -n "${MILTER_PID:-}" ] && ! milter_alive; then
		wait "$MILTER_PID"
		rc=$?
		pm_not_ok "$1: the milter of the previous scenarios is still running" \
			"it exited with status $rc; milter log ($MILTER_LOG):" \
			"$(tail -n 30 "$MILTER_LOG" 2>/dev/null)"
		MILTER_PID=
	fi
	if ! milter_alive; then
		assert_milter_start "$1" "$live"
		return
	fi
	before=$(grep -c 'configuration reloaded' "$MILTER_LOG")
	milter_reload
	while [ "$(grep -c 'configuration reloaded' "$MILTER_LOG")" -le "$before" ]; do
		if [ "$i" -ge 50 ] || grep -q 'reload failed' "$MILTER_LOG"; then
			pm_not_ok "$1 (reload)" "milter log:" "$(tail -n 20 "$MILTER_LOG")"
			return 1
		fi
		sleep 0.1
		i=$((i + 1))
	done
	pm_ok "$1 (reloaded)"
}

# A decision line of the milter log, as an ERE: queue id, client, policy,
# stage, action, and (other fields may come between) the reply.
mta_decision_re() {  # mta_decision_re POLICY STAGE ACTION [REPLY]
	local re
	re="(^| )[^ ]+: client=$(pm_ere_quote "$(mta_client)"): policy=$1 stage=$2 action=$3( |$)"
	[ -n "${4:-}" ] && re="$re.* reply=\"$(pm_ere_quote "$4")\"( |$)"
	printf '%s' "$re"
}

# ---------------------------------------------------------------- what the client sees
# The replies differ between the MTAs in their wording; the scenarios ask
# these functions what the client must see.

mta_client() {  # the client address the milter logs
	if [ "$MTA" = sendmail ] && [ "$MTA_SM_MODE" = pipe ]; then
		echo unknown
	else
		echo 127.0.0.1
	fi
}

mta_banner_re() {
	case $MTA in
	postfix) echo '^220 mx\.test\.example ESMTP Postfix$' ;;
	sendmail) echo '^220 mx\.test\.example ESMTP Sendmail 8\.17\.[0-9.]+/8\.17\.[0-9.]+; .+$' ;;
	esac
}

# The first line of the reply to EHLO from 127.0.0.1 (not over pipes), as
# the MTA sends it; mta_ehlo_greeting picks it from a transcript.
mta_ehlo_first() {
	case $MTA in
	postfix) echo '250-mx.test.example' ;;
	sendmail) echo '250-mx.test.example Hello localhost [127.0.0.1], pleased to meet you' ;;
	esac
}

mta_ehlo_greeting() {  # mta_ehlo_greeting TRANSCRIPT [N]
	smtp_reply "$1" EHLO "${2:-1}" | head -n 1
}

# The extensions an EHLO reply offers (its lines after the first, without
# "250-"/"250 "), joined with "|"; empty for a one-line or missing reply.
mta_ehlo_ext() {  # mta_ehlo_ext TRANSCRIPT [N]
	smtp_reply "$1" EHLO "${2:-1}" | sed -n '2,$s/^250[- ]//p' | paste -sd '|'
}

mta_noop_ok() {  # the reply to NOOP
	case $MTA in
	postfix) echo '250 2.0.0 Ok' ;;
	sendmail) echo '250 2.0.0 OK' ;;
	esac
}

mta_rset_ok() {  # the reply to RSET
	case $MTA in
	postfix) echo '250 2.0.0 Ok' ;;
	sendmail) echo '250 2.0.0 Reset state' ;;
	esac
}

mta_mail_ok() {  # mta_mail_ok ADDR
	case $MTA in
	postfix) echo '250 2.1.0 Ok' ;;
	sendmail) echo "250 2.1.0 <$1>... Sender ok" ;;
	esac
}

mta_rcpt_ok() {  # mta_rcpt_ok ADDR
	case $MTA in
	postfix) echo '250 2.1.5 Ok' ;;
	sendmail) echo "250 2.1.5 <$1>... Recipient ok" ;;
	esac
}

mta_queued_re() {  # the reply to an accepted message, as an ERE
	case $MTA in
	postfix) echo '^250 2\.0\.0 Ok: queued as [0-9A-Za-z]+$' ;;
	sendmail) echo '^250 2\.0\.0 [0-9A-Za-z]+ Message accepted for delivery$' ;;
	esac
}

mta_queue_id() {  # mta_queue_id TRANSCRIPT : from the reply to the message
	case $MTA in
	postfix) smtp_reply "$1" DOT | sed -n 's/^250 .*queued as \([0-9A-Za-z]*\).*/\1/p' ;;
	sendmail) smtp_reply "$1" DOT | sed -n 's/^250 2\.0\.0 \([0-9A-Za-z]*\) Message accepted.*/\1/p' ;;
	esac | head -n 1
}

# A milter's refusal of MAIL or RCPT as the client sees it.  REPLY is the
# policy's reply after expansion, "CODE X.Y.Z text" (a list: its lines,
# one argument each).  Postfix sends it as it is.  Sendmail puts
# "<ADDR>... " before the text of the first line when the code is 450, 550
# or 553 (its message formatter names the address only with those codes;
# 451, 452, 552, 554 ... come without it).
mta_refusal() {  # mta_refusal ADDR REPLY [LINE...]
	local addr=$1 first=$2 code xcode text n l
	shift 2
	code=${first%% *}
	text=${first#* }
	xcode=${text%% *}
	text=${text#* }
	if [ "$MTA" = sendmail ]; then
		case $code in
		450 | 550 | 553) text="<$addr>... $text" ;;
		esac
	fi
	n=$#
	if [ "$n" -eq 0 ]; then
		echo "$code $xcode $text"
		return
	fi
	echo "$code-$xcode $text"
	for l in "$@"; do
		n=$((n - 1))
		if [ "$n" -eq 0 ]; then
			echo "$code $xcode $l"
		else
			echo "$code-$xcode $l"
		fi
	done
}

# What happened to an accepted message: delivered (Postfix: delivered to
# every recipient; Sendmail: in its queue, which this test never runs),
# discarded (gone), held (Postfix's hold queue, Sendmail's quarantine),
# or "unknown" with the evidence on standard error (also when QUEUE-ID is
# empty: no message was accepted).  Waits up to 5 s for Postfix, which
# delivers asynchronously.
mta_message_fate() {  # mta_message_fate QUEUE-ID
	local q=$1 i=0
	if [ -z "$q" ]; then
		echo "mta_message_fate: no queue id" >&2
		echo unknown
		return
	fi
	case $MTA in
	postfix)
		while [ "$i" -lt 50 ]; do
			if grep -q "$q: milter-discard" "$PF_MAILLOG" 2>/dev/null; then
				echo discarded
				return
			elif [ -f "$PF_QUEUE/hold/$q" ]; then
				echo held
				return
			elif grep -q "$q: removed" "$PF_MAILLOG" 2>/dev/null; then
				echo delivered
				return
			fi
			sleep 0.1
			i=$((i + 1))
		done
		grep -F "$q" "$PF_MAILLOG" >&2
		;;
	sendmail)
		# queueonly: an accepted message stays as qf+df; a quarantined one
		# is renamed hf (held); a discarded one leaves nothing.
		if [ -f "$SM_DIR/mqueue/qf$q" ]; then
			echo delivered
			return
		elif [ -f "$SM_DIR/mqueue/hf$q" ]; then
			echo held
			return
		elif ! ls "$SM_DIR/mqueue/"*"$q" >/dev/null 2>&1; then
			echo discarded
			return
		fi
		ls -l "$SM_DIR/mqueue" >&2
		;;
	esac
	echo unknown
}

# The recipients an accepted message goes to, sorted, space-separated.
mta_message_rcpts() {  # mta_message_rcpts QUEUE-ID
	local q=${1:-none}
	case $MTA in
	postfix)
		wait_for_maillog "$q: removed"
		grep -E "$q: to=<[^>]*>.* status=sent" "$PF_MAILLOG" |
			sed 's/.* to=<\([^>]*\)>.*/\1/'
		;;
	sendmail)
		# qf lines "rRFC822; addr" are the envelope recipients.
		sed -n 's/^r[^;]*; *//p' "$SM_DIR/mqueue/qf$q" "$SM_DIR/mqueue/hf$q" 2>/dev/null
		;;
	esac | sort | paste -sd ' '
}

# The reason a held message was quarantined with: Postfix logs it with
# "milter-hold:", Sendmail writes it in the queue file's "q" line.
mta_quarantine_reason() {  # mta_quarantine_reason QUEUE-ID
	local q=${1:-none}
	case $MTA in
	postfix) grep -F "$q: milter-hold:" "$PF_MAILLOG" ;;
	sendmail) sed -n 's/^q//p' "$SM_DIR/mqueue/hf$q" 2>/dev/null ;;
	esac
}

# ---------------------------------------------------------------- at the end

# No milter started by the test (a new one after a crash, the unix-socket
# one, ...) logged a sanitizer report, also those no longer running.
mta_assert_no_sanitizer_reports() {
	local logs=() f hits
	for f in "$PM_TMP"/milter*.log; do
		[ -f "$f" ] && logs+=("$f")
	done
	if [ "${#logs[@]}" -eq 0 ]; then
		hits="no milter log in $PM_TMP"
	else
		hits=$(grep -EH 'AddressSanitizer|LeakSanitizer|runtime error' "${logs[@]}" | head -n 20)
	fi
	assert_eq "no sanitizer report in any milter log (${#logs[@]}: ${logs[*]##*/})" "" "$hits"
}
