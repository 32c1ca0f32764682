# SPDX-License-Identifier: BSD-2-Clause
# shellcheck shell=bash
#
# lib.sh - harness for the integration tests: a private Redis, a private
# Postfix on loopback, the milter under test, an SMTP client and TAP output.
#
# Sourced (bash only) by tests/integration/*.sh, which call pm_setup first.
# Everything lives in one temporary directory and is torn down by an EXIT
# trap, also when a test fails or the script is interrupted: the milter,
# Postfix and Redis are stopped and, if they do not go, killed by pid.
# Nothing outside that directory is touched (the system's /etc/postfix and
# Redis are not used); every socket is on 127.0.0.1 or in the directory.
#
# Results are TAP: "ok N - text" / "not ok N - text", diagnostics on "# "
# lines, the plan "1..N" at the end (pm_finish), exit 1 when a test failed.
# A check that cannot fail is never reported as "ok": every ok line comes
# from a comparison in one of the assert_* functions.
#
# Set PM_KEEP_TMP=1 to keep the directory (logs, queue, configs) for a look.

: "${top_srcdir:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
export top_srcdir top_builddir

PM_MILTER_BIN=${PM_MILTER_BIN:-$top_builddir/policy-milter}

# Which Postfix: PM_POSTFIX_ROOT if set, else the system's if installed,
# else Debian's unpacked (dpkg -x, never installed, so that no MTA of the
# host is replaced) by scripts/install-deps.sh into
# /var/cache/policy-milter-tests/postfix/root.  An unpacked Postfix runs
# from there: main.cf names its directories (postfix_configure) and its
# libraries are found through LD_LIBRARY_PATH, which master passes on to
# its daemons (import_environment).
PM_POSTFIX_CACHE=${PM_POSTFIX_CACHE:-/var/cache/policy-milter-tests/postfix}
if [ -z "${PM_POSTFIX_ROOT:-}" ] && ! command -v postfix >/dev/null 2>&1 &&
	[ -f "$PM_POSTFIX_CACHE/root/.complete" ]; then
	PM_POSTFIX_ROOT=$PM_POSTFIX_CACHE/root
fi
PM_POSTFIX_ROOT=${PM_POSTFIX_ROOT:-}
if [ -n "$PM_POSTFIX_ROOT" ]; then
	pm_postfix_cmd() {  # pm_postfix_cmd NAME ARGS... : the unpacked command NAME
		local c=$1
		shift
		LD_LIBRARY_PATH=$PM_POSTFIX_ROOT/usr/lib/postfix "$PM_POSTFIX_ROOT/usr/sbin/$c" "$@"
	}
	# The commands the tests run, by their usual names.
	postfix()   { pm_postfix_cmd postfix "$@"; }
	postconf()  { pm_postfix_cmd postconf "$@"; }
	postqueue() { pm_postfix_cmd postqueue "$@"; }
	postsuper() { pm_postfix_cmd postsuper "$@"; }
	postcat()   { pm_postfix_cmd postcat "$@"; }
fi

PM_T_N=0        # tests run
PM_T_FAIL=0     # tests failed
PM_TMP=         # the temporary directory
PM_CLEANED=0

# ---------------------------------------------------------------- TAP output

pm_diag() {     # pm_diag TEXT... : each line of TEXT as a "# " line
	printf '%s\n' "$*" | sed 's/^/# /'
}

pm_ok() {       # pm_ok DESCRIPTION
	PM_T_N=$((PM_T_N + 1))
	printf 'ok %d - %s\n' "$PM_T_N" "$1"
}

pm_not_ok() {   # pm_not_ok DESCRIPTION [DIAGNOSTIC...]
	local desc=$1
	shift
	PM_T_N=$((PM_T_N + 1))
	PM_T_FAIL=$((PM_T_FAIL + 1))
	printf 'not ok %d - %s\n' "$PM_T_N" "$desc"
	local d
	for d in "$@"; do
		pm_diag "$d"
	done
}

# The last lines of a transcript or log, for a failure's diagnostics.
pm_tail() {     # pm_tail TEXT [LINES]
	printf '%s\n' "$1" | tail -n "${2:-25}"
}

pm_bail() {     # pm_bail REASON : the harness itself is broken, stop here
	echo "Bail out! $1"
	[ -n "${PF_MAILLOG:-}" ] && [ -f "$PF_MAILLOG" ] &&
		pm_diag "maillog:" "$(tail -n 20 "$PF_MAILLOG")"
	exit 1
}

pm_finish() {   # print the plan and the totals; exit 1 if anything failed
	printf '1..%d\n' "$PM_T_N"
	printf '# passed %d failed %d\n' "$((PM_T_N - PM_T_FAIL))" "$PM_T_FAIL"
	[ "$PM_T_FAIL" -eq 0 ] && [ "$PM_T_N" -gt 0 ] && exit 0
	exit 1
}

# ---------------------------------------------------------------- assertions
# Each prints exactly one TAP line and returns 0 when it passed, 1 if not.
# CONTEXT arguments (transcripts, logs) are shown, tail only, on failure.

assert_eq() {   # assert_eq DESC EXPECTED ACTUAL [CONTEXT]
	if [ "$2" = "$3" ]; then
		pm_ok "$1"
		return 0
	fi
	pm_not_ok "$1" "expected: $2" "got:      $3" ${4:+"context:"} ${4:+"$(pm_tail "$4")"}
	return 1
}

assert_match() {  # assert_match DESC ERE ACTUAL [CONTEXT] : ACTUAL matches ERE
	if printf '%s\n' "$3" | grep -Eq -- "$2"; then
		pm_ok "$1"
		return 0
	fi
	pm_not_ok "$1" "expected to match: $2" "got: $3" ${4:+"context:"} ${4:+"$(pm_tail "$4")"}
	return 1
}

assert_contains() {  # assert_contains DESC FIXED-TEXT HAYSTACK [CONTEXT]
	case $3 in
	*"$2"*)
		pm_ok "$1"
		return 0
		;;
	esac
	pm_not_ok "$1" "expected to contain: $2" "in:" "$(pm_tail "${4:-$3}")"
	return 1
}

assert_not_contains() {  # assert_not_contains DESC FIXED-TEXT HAYSTACK
	case $3 in
	*"$2"*)
		pm_not_ok "$1" "must not contain: $2" "in:" "$(pm_tail "$3")"
		return 1
		;;
	esac
	pm_ok "$1"
	return 0
}

assert_grep() {  # assert_grep DESC ERE FILE : some line of FILE matches
	if grep -Eq -- "$2" "$3" 2>/dev/null; then
		pm_ok "$1"
		return 0
	fi
	pm_not_ok "$1" "no line of $3 matches: $2" "$(tail -n 15 "$3" 2>/dev/null)"
	return 1
}

assert_true() {  # assert_true DESC COMMAND... : COMMAND exits 0
	local desc=$1
	shift
	if "$@"; then
		pm_ok "$desc"
		return 0
	fi
	pm_not_ok "$desc" "command failed: $*"
	return 1
}

# The reply to the Nth command of a stage (see smtp_reply) equals EXPECTED;
# a multi-line reply is compared whole, its lines joined with newlines.
assert_reply() {  # assert_reply DESC TRANSCRIPT STAGE N EXPECTED
	local got
	got=$(smtp_reply "$2" "$3" "$4")
	if [ "$got" = "$5" ]; then
		pm_ok "$1"
		return 0
	fi
	pm_not_ok "$1" "reply to $3 #$4" "expected: $5" "got:      ${got:-<no reply>}" \
		"transcript:" "$(pm_tail "$2" 30)"
	return 1
}

assert_reply_match() {  # assert_reply_match DESC TRANSCRIPT STAGE N ERE
	local got
	got=$(smtp_reply "$2" "$3" "$4")
	if [ -n "$got" ] && printf '%s\n' "$got" | grep -Eq -- "$5"; then
		pm_ok "$1"
		return 0
	fi
	pm_not_ok "$1" "reply to $3 #$4" "expected to match: $5" "got: ${got:-<no reply>}" \
		"transcript:" "$(pm_tail "$2" 30)"
	return 1
}

# ---------------------------------------------------------------- set-up

# Ports: the kernel hands out free ones; all are asked for while the
# earlier sockets are still bound, so they differ from each other.  With
# PM_PORT_RANGE=LOW-HIGH (scripts/run-tests.sh gives each build its own,
# below the kernel's range for outgoing connections and for port 0) they
# are picked at random from that range instead, among those that can be
# bound right now: test runs side by side then never pick the same port.
# The ports handed out are listed in $PM_TMP/ports, and a later call of the
# same test never hands them out again (they may not be bound yet).
pm_free_ports() {  # pm_free_ports N : N free TCP ports on 127.0.0.1, one a line
	python3 - "$1" "${PM_PORT_RANGE:-}" "${PM_TMP:+$PM_TMP/ports}" <<'PY'
import random, socket, sys
n, rng, given_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
given = set()
if given_file:
    try:
        with open(given_file) as f:
            given = {int(x) for x in f.read().split()}
    except OSError:
        pass
if rng:
    low, high = (int(x) for x in rng.split("-"))
    candidates = random.sample(range(low, high + 1), min(high - low + 1, 1000))
else:
    candidates = [0] * (n + len(given) + 10)
socks, held = [], []   # held: bound to a port given before, so that port 0 skips it
for p in candidates:
    if len(socks) == n:
        break
    if p in given:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close()
        continue
    (held if s.getsockname()[1] in given else socks).append(s)
if len(socks) < n:
    sys.exit("no %d free ports%s" % (n, " in " + rng if rng else ""))
ports = [s.getsockname()[1] for s in socks]
if given_file:
    with open(given_file, "a") as f:
        f.write("".join("%d\n" % p for p in ports))
for p in ports:
    print(p)
PY
}

pm_port_open() {  # pm_port_open PORT : something accepts TCP on 127.0.0.1:PORT
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pm_need() {     # skip (exit 77, automake's SKIP) when a tool is missing
	local t
	for t in "$@"; do
		if ! command -v "$t" >/dev/null 2>&1; then
			echo "1..0 # SKIP $t is not installed"
			exit 77
		fi
	done
}

# Tear everything down.  Runs from the EXIT trap; safe to call twice.
pm_cleanup() {
	[ "$PM_CLEANED" = 1 ] && return 0
	PM_CLEANED=1
	if [ -n "${MILTER_PID:-}" ] && kill -0 "$MILTER_PID" 2>/dev/null; then
		kill -TERM "$MILTER_PID" 2>/dev/null
		pm_wait_gone "$MILTER_PID" 50 || kill -KILL "$MILTER_PID" 2>/dev/null
		wait "$MILTER_PID" 2>/dev/null
	fi
	MILTER_PID=
	[ -n "${PF_DIR:-}" ] && postfix_stop
	auth_stub_stop
	redis_stop
	redis_reap
	if [ -n "$PM_TMP" ] && [ -d "$PM_TMP" ]; then
		if [ "${PM_KEEP_TMP:-0}" = 1 ]; then
			echo "# kept $PM_TMP"
		else
			rm -rf "$PM_TMP"
		fi
	fi
}

pm_wait_gone() {  # pm_wait_gone PID TENTHS : wait up to TENTHS/10 s for PID to exit
	local i=0
	while kill -0 "$1" 2>/dev/null; do
		[ "$i" -ge "$2" ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
	return 0
}

# Creates the directory, installs the trap, picks the ports.  Skips (77)
# when a tool is missing or when not root (Postfix's master must be root).
pm_setup() {
	pm_need postfix postconf swaks redis-server redis-cli python3
	if [ "$(id -u)" != 0 ]; then
		echo "1..0 # SKIP a private Postfix needs root"
		exit 77
	fi
	if [ ! -x "$PM_MILTER_BIN" ]; then
		echo "1..0 # SKIP $PM_MILTER_BIN is not built"
		exit 77
	fi
	PM_TMP=$(mktemp -d "${TMPDIR:-/tmp}/pm-it.XXXXXX") || pm_bail "mktemp failed"
	chmod 755 "$PM_TMP"     # Postfix's unprivileged daemons walk through it
	# shellcheck disable=SC2154 # pm_rc is assigned inside the trap
	trap 'pm_rc=$?; pm_cleanup; exit $pm_rc' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	local ports
	ports=$(pm_free_ports 2) || pm_bail "cannot find free ports"
	SMTP_PORT=$(echo "$ports" | sed -n 1p)
	MILTER_PORT=$(echo "$ports" | sed -n 2p)
	PM_MILTER_N=0
	PM_REDIS_SOCK=$PM_TMP/redis/redis.sock
	PF_DIR=$PM_TMP/postfix
	PF_CONF=$PF_DIR/etc
	PF_QUEUE=$PF_DIR/spool
	PF_MAILLOG=$PF_DIR/maillog
	echo "# workdir $PM_TMP smtp port $SMTP_PORT milter port $MILTER_PORT"
}

# ---------------------------------------------------------------- Redis

PM_REDIS_SOCK=
PM_REDIS_PID=

# PM_REDIS_ARGS: more redis-server options (word-split), e.g.
# "--enable-debug-command yes" for DEBUG DIGEST on Redis 7.
redis_start() {  # start (or start again) the private Redis on $PM_TMP/redis/redis.sock
	local d=${PM_REDIS_SOCK%/*} i=0
	mkdir -p "$d"
	# shellcheck disable=SC2086 # PM_REDIS_ARGS is split into options
	redis-server --port 0 --unixsocket "$PM_REDIS_SOCK" --unixsocketperm 700 \
		--save '' --appendonly no --daemonize yes \
		--pidfile "$d/redis.pid" --dir "$d" --logfile "$d/redis.log" \
		${PM_REDIS_ARGS:-} ||
		return 1
	until redis-cli -s "$PM_REDIS_SOCK" ping 2>/dev/null | grep -q PONG; do
		[ "$i" -ge 50 ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
	PM_REDIS_PID=$(cat "$d/redis.pid")
}

# Mid-test stops return once the socket is gone (Redis takes a second or
# two more to exit); pm_cleanup waits for every process stopped this way.
redis_stop() {   # shut the private Redis down (nothing saved); kill it if it hangs
	local i=0
	[ -n "$PM_REDIS_SOCK" ] || return 0
	if [ -z "$PM_REDIS_PID" ] && [ -f "${PM_REDIS_SOCK%/*}/redis.pid" ]; then
		PM_REDIS_PID=$(cat "${PM_REDIS_SOCK%/*}/redis.pid")
	fi
	[ -n "$PM_REDIS_PID" ] || return 0
	redis-cli -s "$PM_REDIS_SOCK" shutdown nosave >/dev/null 2>&1
	while [ -S "$PM_REDIS_SOCK" ] && kill -0 "$PM_REDIS_PID" 2>/dev/null; do
		if [ "$i" -ge 50 ]; then
			kill -KILL "$PM_REDIS_PID" 2>/dev/null
			break
		fi
		sleep 0.1
		i=$((i + 1))
	done
	PM_REDIS_OLD_PIDS="${PM_REDIS_OLD_PIDS:-} $PM_REDIS_PID"
	PM_REDIS_PID=
	rm -f "$PM_REDIS_SOCK"
}

redis_reap() {   # wait for (or kill) every Redis stopped so far
	local pid
	for pid in ${PM_REDIS_OLD_PIDS:-}; do
		pm_wait_gone "$pid" 50 || kill -KILL "$pid" 2>/dev/null
	done
	PM_REDIS_OLD_PIDS=
}

# A stand-in for the SASL password checker an MTA asks, so that no SASL
# server needs to be installed: any user name, password "secret".  KIND is
# dovecot (Dovecot's auth protocol, as Postfix speaks it) or saslauthd (as
# Cyrus SASL, Sendmail's, speaks it).  Every query is logged to
# $PM_TMP/auth.log.  pm_cleanup stops it.
AUTH_STUB_PID=
auth_stub_start() {  # auth_stub_start dovecot|saslauthd SOCKET
	local i=0
	python3 - "$1" "$2" 2>>"$PM_TMP/auth.log" <<'PY' &
import base64, os, socket, struct, sys, threading

kind, path = sys.argv[1], sys.argv[2]
try:
    os.unlink(path)
except FileNotFoundError:
    pass
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
os.chmod(path, 0o666)
srv.listen(16)

def log(text):
    sys.stderr.write(text + "\n")
    sys.stderr.flush()

def saslauthd(conn):
    # Four strings, each after its length in two octets (network order):
    # user, password, service, realm.  The answer is one such string.
    f = conn.makefile("rb")
    parts = []
    for _ in range(4):
        n = f.read(2)
        if len(n) < 2:
            return
        parts.append(f.read(struct.unpack("!H", n)[0]))
    ok = parts[1] == b"secret" and parts[0] != b""
    log("saslauthd user=%r %s" % (parts[0], "OK" if ok else "NO"))
    ans = b"OK" if ok else b"NO authentication failed"
    conn.sendall(struct.pack("!H", len(ans)) + ans)

def dovecot_answer(req, resp):
    try:
        parts = base64.b64decode(resp).split(b"\0")
    except Exception:
        return "FAIL\t%s\n" % req
    ok = len(parts) == 3 and parts[2] == b"secret" and parts[1] != b""
    log("dovecot user=%r %s" % (parts[1] if len(parts) > 1 else b"", "OK" if ok else "FAIL"))
    if ok:
        return "OK\t%s\tuser=%s\n" % (req, parts[1].decode("latin-1"))
    return "FAIL\t%s\n" % req

def dovecot(conn):
    # The server side of Dovecot's auth protocol, as much as Postfix uses.
    conn.sendall(("VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t%d\nCUID\t1\n"
                  "COOKIE\t%s\nDONE\n" % (os.getpid(), "0" * 32)).encode())
    for raw in conn.makefile("rb"):
        f = raw.decode("latin-1").rstrip("\n").split("\t")
        if f[0] == "AUTH" and len(f) > 2:
            resp = [x[5:] for x in f if x.startswith("resp=")]
            out = dovecot_answer(f[1], resp[0]) if resp else "CONT\t%s\t\n" % f[1]
            conn.sendall(out.encode())
        elif f[0] == "CONT" and len(f) > 2:
            conn.sendall(dovecot_answer(f[1], f[2]).encode())

def serve(conn):
    with conn:
        try:
            (saslauthd if kind == "saslauthd" else dovecot)(conn)
        except OSError:
            pass

while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
	AUTH_STUB_PID=$!
	until [ -S "$2" ]; do
		[ "$i" -ge 50 ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

auth_stub_stop() {
	[ -n "$AUTH_STUB_PID" ] || return 0
	kill "$AUTH_STUB_PID" 2>/dev/null
	wait "$AUTH_STUB_PID" 2>/dev/null
	AUTH_STUB_PID=
}

redis_cli() {    # redis_cli ARGS... : one command to the private Redis
	redis-cli -s "$PM_REDIS_SOCK" "$@"
}

redis_hget() {   # redis_hget KEY FIELD : the value, empty when unset
	redis-cli -s "$PM_REDIS_SOCK" --raw hget "$1" "$2" 2>/dev/null
}

# Stats reach Redis asynchronously: poll until KEY's FIELD equals EXPECTED
# (an absent field counts as "0").  Returns 1 after TIMEOUT seconds (default
# 5); the last value read is left in PM_LAST_VALUE for the caller's message.
wait_for_hash_field() {  # wait_for_hash_field KEY FIELD EXPECTED [TIMEOUT]
	local tenths=$(( ${4:-5} * 10 )) i=0
	while :; do
		PM_LAST_VALUE=$(redis_hget "$1" "$2")
		[ "${PM_LAST_VALUE:-0}" = "$3" ] && return 0
		[ "$i" -ge "$tenths" ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

# Exact counters: wait until FIELD=VALUE appears, then a little longer (a
# flush that would overshoot has time to land), then compare every pair.
# A counter that was never incremented may be absent from the hash: "0"
# matches an absent field.
assert_stats() {  # assert_stats DESC KEY FIELD=VALUE...
	local desc=$1 key=$2 first=$3 f want got bad=() all
	shift 2
	wait_for_hash_field "$key" "${first%%=*}" "${first#*=}" "${PM_STATS_TIMEOUT:-5}"
	sleep 1.2
	for f in "$@"; do
		want=${f#*=}
		got=$(redis_hget "$key" "${f%%=*}")
		[ "${got:-0}" = "$want" ] || bad+=("${f%%=*}: expected $want, got ${got:-<absent>}")
	done
	if [ "${#bad[@]}" -eq 0 ]; then
		pm_ok "$desc"
		return 0
	fi
	all=$(redis_cli hgetall "$key" 2>&1 | paste -sd ' ')
	pm_not_ok "$desc" "${bad[@]}" "HGETALL $key: $all"
	return 1
}

# ---------------------------------------------------------------- Postfix

# Set by pm_setup:
# PF_DIR      instance directory: etc/ spool/ data/ maillog
# PF_CONF     its config directory (postfix -c)
# PF_QUEUE    its queue directory
# PF_MAILLOG  its log file (there is no syslog daemon)

# Writes main.cf and master.cf for an instance that listens on
# 127.0.0.1:$SMTP_PORT, relays everything to the discard transport and asks
# the milter on 127.0.0.1:$MILTER_PORT about every session; when the milter
# does not answer, Postfix tempfails (milter_default_action).
postfix_configure() {
	mkdir -p "$PF_CONF" "$PF_QUEUE" "$PF_DIR/data"
	chmod 755 "$PF_DIR"
	chown postfix "$PF_DIR/data"
	cat >"$PF_CONF/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF_QUEUE
data_directory = $PF_DIR/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.test.example
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
default_transport = discard
relay_transport = discard
biff = no
# No syslog here: Postfix logs through postlogd into this file.
maillog_file_prefixes = $PF_DIR
maillog_file = $PF_MAILLOG
smtpd_milters = inet:127.0.0.1:$MILTER_PORT
milter_protocol = 6
milter_default_action = tempfail
# Tests refuse on purpose: no tarpitting, no flow-control stalls.
smtpd_error_sleep_time = 0s
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
in_flow_delay = 0s
EOF
	# Only the services this test needs, none chrooted (no chroot jail is
	# set up under the private queue directory), plus postlogd for maillog_file.
	if [ -n "$PM_POSTFIX_ROOT" ]; then
		local r=$PM_POSTFIX_ROOT
		cat >>"$PF_CONF/main.cf" <<EOF
# Debian's Postfix unpacked in $r, not installed.
command_directory = $r/usr/sbin
daemon_directory = $r/usr/lib/postfix/sbin
shlib_directory = $r/usr/lib/postfix
meta_directory = $r/etc/postfix
sendmail_path = $r/usr/sbin/sendmail
newaliases_path = $r/usr/bin/newaliases
mailq_path = $r/usr/bin/mailq
manpage_directory = $r/usr/share/man
readme_directory = no
html_directory = no
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME LD_LIBRARY_PATH=$r/usr/lib/postfix
EOF
	fi
	cat >"$PF_CONF/master.cf" <<EOF
127.0.0.1:$SMTP_PORT inet n - n - - smtpd
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF
}

# Configure, check and start the instance; wait up to 10 s for its port.
# Errors go to stderr; a start that fails quietly is explained in the maillog.
# shellcheck disable=SC2120 # the settings are optional
postfix_start() {  # postfix_start [NAME=VALUE...] : extra main.cf settings
	local i=0
	postfix_configure
	if [ $# -gt 0 ]; then
		postconf -c "$PF_CONF" -e "$@" || return 1
	fi
	postfix -c "$PF_CONF" check || return 1
	postfix -c "$PF_CONF" start || return 1
	until pm_port_open "$SMTP_PORT"; do
		[ "$i" -ge 100 ] && { echo "postfix: port $SMTP_PORT not open after 10 s" >&2; return 1; }
		sleep 0.1
		i=$((i + 1))
	done
}

postfix_master_pid() {
	local f=$PF_QUEUE/pid/master.pid
	[ -f "$f" ] && tr -dc '0-9' <"$f"
}

postfix_stop() {  # stop the instance; the master's children go with it
	local pid
	[ -n "${PF_CONF:-}" ] && [ -f "$PF_CONF/main.cf" ] || return 0
	pid=$(postfix_master_pid)
	postfix -c "$PF_CONF" stop >/dev/null 2>&1
	if [ -n "$pid" ] && ! pm_wait_gone "$pid" 100; then
		kill -KILL "$pid" 2>/dev/null
	fi
}

# Wait until Postfix's log has a line matching ERE (deliveries are async).
wait_for_maillog() {  # wait_for_maillog ERE [TIMEOUT]
	local tenths=$(( ${2:-5} * 10 )) i=0
	until grep -Eq -- "$1" "$PF_MAILLOG" 2>/dev/null; do
		[ "$i" -ge "$tenths" ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

# ---------------------------------------------------------------- the milter

MILTER_PID=
MILTER_LOG=     # stderr (and stdout) of the current milter process
MILTER_CONF=

# The part of a config every test shares: listen, redis, on_redis_error.
# PREFIX (default "pmtest:") starts every Redis key.
milter_config_head() {  # milter_config_head [PREFIX]
	cat <<EOF
listen = "inet:$MILTER_PORT@127.0.0.1";
redis = { address = "unix:$PM_REDIS_SOCK"; prefix = "${1:-pmtest:}"; timeout = "100ms"; };
on_redis_error = "accept";
EOF
}

# Start the milter in the foreground mode (-f) as a background job of this
# shell (so that `wait` gets its exit status) and wait up to 10 s until its
# port accepts TCP.  Each start logs to a new file, $MILTER_LOG.
milter_start() {  # milter_start CONF
	local i=0
	MILTER_CONF=$1
	PM_MILTER_N=$((PM_MILTER_N + 1))
	MILTER_LOG=$PM_TMP/milter.$PM_MILTER_N.log
	"$PM_MILTER_BIN" -f -c "$MILTER_CONF" >"$MILTER_LOG" 2>&1 &
	MILTER_PID=$!
	until pm_port_open "$MILTER_PORT"; do
		if ! kill -0 "$MILTER_PID" 2>/dev/null; then
			wait "$MILTER_PID"
			echo "milter exited with status $? before listening"
			MILTER_PID=
			return 1
		fi
		[ "$i" -ge 100 ] && { echo "milter not listening after 10 s"; return 1; }
		sleep 0.1
		i=$((i + 1))
	done
}

# Start with a config and report it as a test (the later tests depend on it).
# No $( ) around milter_start: in a subshell the milter would be out of
# reach of `wait`, and its exit status lost.
assert_milter_start() {  # assert_milter_start DESC CONF
	if milter_start "$2" >"$PM_TMP/milter_start.out" 2>&1; then
		pm_ok "$1"
		return 0
	fi
	pm_not_ok "$1" "$(cat "$PM_TMP/milter_start.out")" "milter log:" \
		"$(tail -n 20 "$MILTER_LOG" 2>/dev/null)" "config:" "$(cat "$2")"
	return 1
}

milter_alive() {
	[ -n "$MILTER_PID" ] && kill -0 "$MILTER_PID" 2>/dev/null
}

milter_reload() {  # SIGUSR1: re-read the config file
	kill -USR1 "$MILTER_PID"
}

# SIGTERM, then wait up to 10 s.  Returns 0 when the process exited with
# status 0 and its log has no sanitizer report; otherwise 1, with the reason
# in PM_STOP_WHY.  A milter that does not exit is killed.
milter_stop() {
	local rc
	PM_STOP_WHY=
	if ! milter_alive; then
		PM_STOP_WHY="milter was not running"
		[ -n "$MILTER_PID" ] && { wait "$MILTER_PID"; PM_STOP_WHY="$PM_STOP_WHY (exit status $?)"; }
		MILTER_PID=
		return 1
	fi
	kill -TERM "$MILTER_PID"
	if ! pm_wait_gone "$MILTER_PID" 100; then
		kill -KILL "$MILTER_PID" 2>/dev/null
		wait "$MILTER_PID" 2>/dev/null
		MILTER_PID=
		PM_STOP_WHY="no exit within 10 s of SIGTERM (killed)"
		return 1
	fi
	wait "$MILTER_PID"
	rc=$?
	MILTER_PID=
	if [ "$rc" -ne 0 ]; then
		PM_STOP_WHY="exit status $rc"
		return 1
	fi
	if grep -Eq 'AddressSanitizer|LeakSanitizer|runtime error' "$MILTER_LOG"; then
		PM_STOP_WHY="sanitizer report in the log"
		return 1
	fi
	return 0
}

assert_milter_stop() {  # assert_milter_stop DESC
	if milter_stop; then
		pm_ok "$1"
		return 0
	fi
	pm_not_ok "$1" "$PM_STOP_WHY" "milter log:" "$(tail -n 30 "$MILTER_LOG" 2>/dev/null)"
	return 1
}

# Wait until the current milter log has a line matching ERE.
wait_for_milter_log() {  # wait_for_milter_log ERE [TIMEOUT]
	local tenths=$(( ${2:-5} * 10 )) i=0
	until grep -Eq -- "$1" "$MILTER_LOG" 2>/dev/null; do
		[ "$i" -ge "$tenths" ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

# Regex-quote fixed text for grep -E.
pm_ere_quote() {
	printf '%s' "$1" | sed 's/[][\.*^$+?(){}|/]/\\&/g'
}

# ---------------------------------------------------------------- SMTP client

# smtp_send [--from ADDR] [--to ADDR]... [--size N] [--body-bytes N]
#           [--body TEXT] [--quit-after STAGE]
# One SMTP session with the private Postfix; prints the whole transcript.
# Client lines start with " -> ", server replies with "<-  " (or "<** "
# when they are refusals), as swaks prints them.  The message data is not
# shown (" -> N lines sent").  swaks cannot add ESMTP parameters to MAIL
# FROM, so --size (MAIL FROM ... SIZE=N) goes through a small client of
# our own (pm_smtp_client) that prints the same transcript format.
# --body-bytes N makes a body of N octets as sent on the wire (CRLF lines).
# Defaults: from sender@example.org, to rcpt@example.net.
smtp_send() {
	local from=sender@example.org size='' body_bytes='' body='' quit_after=''
	local to=() args
	while [ $# -gt 0 ]; do
		case $1 in
		--from) from=$2; shift 2 ;;
		--to) to+=("$2"); shift 2 ;;
		--size) size=$2; shift 2 ;;
		--body-bytes) body_bytes=$2; shift 2 ;;
		--body) body=$2; shift 2 ;;
		--quit-after) quit_after=$2; shift 2 ;;
		*) echo "smtp_send: unknown option $1" >&2; return 2 ;;
		esac
	done
	[ "${#to[@]}" -gt 0 ] || to=(rcpt@example.net)
	if [ -n "$size" ]; then
		pm_smtp_client --from "$from" --size "$size" --body-bytes "${body_bytes:-100}" \
			--quit-after "${quit_after:-}" "${to[@]}"
		return
	fi
	args=(--server "127.0.0.1:$SMTP_PORT" --protocol ESMTP --helo client.test.example
		--from "$from" --to "$(IFS=,; echo "${to[*]}")" --timeout 20 --suppress-data)
	if [ -n "$body_bytes" ]; then
		pm_body_file "$body_bytes"
		args+=(--body "@$PM_TMP/body.$body_bytes")
	elif [ -n "$body" ]; then
		args+=(--body "$body")
	fi
	[ -n "$quit_after" ] && args+=(--quit-after "$quit_after")
	swaks "${args[@]}" 2>&1
	return 0
}

# smtp_send_n_rcpts N [smtp_send options] : one message to r1..rN@example.net
smtp_send_n_rcpts() {
	local n=$1 i to=()
	shift
	for ((i = 1; i <= n; i++)); do
		to+=(--to "r$i@example.net")
	done
	smtp_send "${to[@]}" "$@"
}

# A body of exactly N octets once swaks turns its LF line ends into CRLF:
# lines of 78 "x" plus CRLF, the last line shorter.  N >= 2.
pm_body_file() {
	local f=$PM_TMP/body.$1
	[ -f "$f" ] || python3 - "$1" "$f" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
lines, left = [], n
while left > 0:
    k = min(78, left - 2)
    lines.append("x" * max(k, 0))
    left -= max(k, 0) + 2
with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
PY
}

# The SIZE= client.  Without pipelining: one command, its whole reply, the
# next.  Follows swaks' flow: QUIT after a refused MAIL, after the RCPTs when
# none was accepted or with --quit-after RCPT, and after the data.  When the
# server closes the connection it says so the way swaks does.
pm_smtp_client() {
	python3 - "$SMTP_PORT" "$@" <<'PY'
import socket, sys

port = int(sys.argv[1])
args = sys.argv[2:]
opts = {"--from": "", "--size": "", "--body-bytes": "100", "--quit-after": ""}
rcpts = []
i = 0
while i < len(args):
    if args[i] in opts:
        opts[args[i]] = args[i + 1]
        i += 2
    else:
        rcpts.append(args[i])
        i += 1

out = sys.stdout
try:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
except OSError as e:
    out.write("*** Error connecting to 127.0.0.1:%d: %s\n" % (port, e))
    sys.exit(0)
f = sock.makefile("rb")

class Closed(Exception):
    pass

def reply():
    lines = []
    while True:
        ln = f.readline()
        if not ln:
            raise Closed()
        ln = ln.decode("latin-1").rstrip("\r\n")
        lines.append(ln)
        if len(ln) < 4 or ln[3] != "-":
            break
    mark = "<** " if lines[0][:1] in ("4", "5") else "<-  "
    for ln in lines:
        out.write(mark + ln + "\n")
    return int(lines[0][:3]) if lines[0][:3].isdigit() else 0

def cmd(line):
    out.write(" -> " + line + "\n")
    sock.sendall(line.encode() + b"\r\n")
    return reply()

def message(nbytes):
    head = ("From: <%s>\r\nTo: <%s>\r\nSubject: size test\r\n"
            "Message-Id: <size-test@client.test.example>\r\n\r\n"
            % (opts["--from"], rcpts[0]))
    body = []
    left = max(nbytes, 2)
    while left > 0:
        k = max(min(78, left - 2), 0)
        body.append("x" * k + "\r\n")
        left -= k + 2
    return (head + "".join(body)).encode()

try:
    out.write("=== Connected to 127.0.0.1.\n")
    code = reply()
    if code != 220:
        cmd("QUIT")
        sys.exit(0)
    cmd("EHLO client.test.example")
    code = cmd("MAIL FROM:<%s> SIZE=%s" % (opts["--from"], opts["--size"]))
    if code != 250:
        cmd("QUIT")
        sys.exit(0)
    ok = 0
    for r in rcpts:
        if cmd("RCPT TO:<%s>" % r) // 100 == 2:
            ok += 1
    if ok == 0 or opts["--quit-after"].upper() == "RCPT":
        cmd("QUIT")
        sys.exit(0)
    if cmd("DATA") == 354:
        data = message(int(opts["--body-bytes"]))
        out.write(" -> %d bytes sent\n" % len(data))
        sock.sendall(data + b".\r\n")
        reply()
    cmd("QUIT")
    out.write("=== Connection closed with remote host.\n")
except Closed:
    out.write("*** Remote host closed connection unexpectedly.\n")
except OSError as e:
    out.write("*** %s\n" % e)
PY
}

# smtp_reply TRANSCRIPT STAGE [N]
# The server's reply to the Nth (default 1st) command of STAGE, without
# swaks' prefixes; a multi-line reply comes out as several lines; nothing
# when the command got no reply.  STAGE is CONNECT (the banner), EHLO, MAIL,
# RCPT, DATA (the 354), DOT (the reply to the message data), RSET or QUIT.
smtp_reply() {
	printf '%s\n' "$1" | awk -v want="$2" -v n="${3:-1}" '
	function stage_of(c) {
		if (c ~ /^(EHLO|HELO|LHLO) /) return "EHLO"
		if (c ~ /^MAIL FROM:/) return "MAIL"
		if (c ~ /^RCPT TO:/) return "RCPT"
		if (c == "DATA") return "DATA"
		if (c == "QUIT") return "QUIT"
		if (c == "RSET") return "RSET"
		if (cur == "DATA" || cur == "DOT") return "DOT"
		return "OTHER"
	}
	BEGIN { cur = "CONNECT"; count["CONNECT"] = 1; replied = 0 }
	/^ -> / {
		s = stage_of(substr($0, 5))
		# the data lines of one message are one DOT command
		if (s == "DOT" && cur == "DOT" && !replied) next
		cur = s; count[cur]++; replied = 0
		next
	}
	/^(<-  |<\*\* |<~  |<~\* )/ {
		replied = 1
		if (cur == want && count[cur] == n) print substr($0, 5)
	}'
}

# How many commands of STAGE got exactly the (one-line) reply TEXT.
smtp_count() {  # smtp_count TRANSCRIPT STAGE TEXT
	local i n c=0
	n=$(smtp_ncmds "$1" "$2")
	for ((i = 1; i <= n; i++)); do
		[ "$(smtp_reply "$1" "$2" "$i")" = "$3" ] && c=$((c + 1))
	done
	echo "$c"
}

smtp_ncmds() {  # smtp_ncmds TRANSCRIPT STAGE : how many commands of STAGE were sent
	case $2 in
	RCPT) printf '%s\n' "$1" | grep -c '^ -> RCPT TO:' ;;
	MAIL) printf '%s\n' "$1" | grep -c '^ -> MAIL FROM:' ;;
	*) printf '%s\n' "$1" | grep -c "^ -> $2" ;;
	esac
}

# The queue id from "250 2.0.0 Ok: queued as ID" (empty if none).
smtp_queue_id() {  # smtp_queue_id TRANSCRIPT
	smtp_reply "$1" DOT | sed -n 's/^250 .*queued as \([0-9A-Za-z]*\).*/\1/p' | head -n 1
}

# The server dropped the connection (after a 421, say): the client saw the
# close before it could end the session with QUIT.
smtp_closed_by_server() {  # smtp_closed_by_server TRANSCRIPT
	printf '%s\n' "$1" | grep -q 'Remote host closed connection unexpectedly' &&
		[ -z "$(smtp_reply "$1" QUIT)" ]
}
