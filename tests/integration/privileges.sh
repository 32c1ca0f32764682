#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
#
# privileges.sh - start-up as root the way a package starts it: a unix
# socket (a stale one left by a crash is replaced) with socket_mode and
# owner user:group, privileges dropped completely (uid, gid, supplementary
# groups), Postfix talking to the socket, the socket removed at SIGTERM;
# a warning when running as root; a missing user refused.

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pm_setup
redis_start || pm_bail "cannot start Redis"
postfix_start || pm_bail "cannot start Postfix"

RUN_USER=nobody
RUN_GROUP=postfix
uid=$(id -u "$RUN_USER")
gid=$(getent group "$RUN_GROUP" | cut -d: -f3)
SOCK_DIR=$PM_TMP/run
SOCK=$SOCK_DIR/milter.sock
mkdir -p "$SOCK_DIR"
chown "$RUN_USER:$RUN_GROUP" "$SOCK_DIR"
chmod 0750 "$SOCK_DIR"

# A stale socket, as a crashed daemon leaves it: nobody listens on it.
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$SOCK"

CONF=$PM_TMP/privileges.conf
{
	echo "listen = \"unix:$SOCK\";"
	echo "socket_mode = \"0660\";"
	echo "user = \"$RUN_USER\"; group = \"$RUN_GROUP\";"
	echo "redis = { address = \"unix:$PM_REDIS_SOCK\"; prefix = \"pmpriv:\"; };"
	echo 'policies = ( { name = "max-size"; type = "size"; max = "10K"; action = "reject";'
	echo '  reply = "552 5.3.4 Message too big (limit ${limit})"; } );'
} >"$CONF"

MILTER_LOG=$PM_TMP/milter.priv.log
# The pid file lives where only root may write: it is opened before the drop.
PID_DIR=$PM_TMP/piddir
mkdir -p "$PID_DIR" && chmod 0755 "$PID_DIR"
"$PM_MILTER_BIN" -f -c "$CONF" -p "$PID_DIR/pm.pid" >"$MILTER_LOG" 2>&1 &
MILTER_PID=$!
for _ in $(seq 100); do
	[ -S "$SOCK" ] && grep -q "listening on" "$MILTER_LOG" && break
	kill -0 "$MILTER_PID" 2>/dev/null || break
	sleep 0.1
done
if assert_grep "starts over a stale socket and listens" "listening on unix:$SOCK" "$MILTER_LOG"; then
	assert_eq "socket is $RUN_USER:$RUN_GROUP, mode 660" "$RUN_USER:$RUN_GROUP 660" \
		"$(stat -c '%U:%G %a' "$SOCK")"
	status=/proc/$MILTER_PID/status
	assert_eq "real, effective, saved and file uid are $RUN_USER's" \
		"$uid $uid $uid $uid" "$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "$status")"
	assert_eq "real, effective, saved and file gid are $RUN_GROUP's" \
		"$gid $gid $gid $gid" "$(awk '/^Gid:/ { print $2, $3, $4, $5 }' "$status")"
	assert_eq "supplementary groups are only $RUN_GROUP" "$gid" \
		"$(awk '/^Groups:/ { $1 = ""; sub(/^ /, ""); sub(/ $/, ""); print }' "$status")"
	if grep -q "running as root" "$MILTER_LOG"; then
		pm_not_ok "dropped privileges are not reported as root"
	else
		pm_ok "dropped privileges are not reported as root"
	fi

	postconf -c "$PF_CONF" -e "smtpd_milters = unix:$SOCK"
	postfix -c "$PF_CONF" reload >/dev/null 2>&1
	sleep 1
	t=$(smtp_send --to a@example.net --size 20000 --quit-after RCPT)
	assert_reply "Postfix reaches the milter over the socket after the drop" "$t" RCPT 1 \
		"552 5.3.4 Message too big (limit 10K)"

	assert_eq "pid file written in a root-only directory" "$MILTER_PID" \
		"$(cat "$PID_DIR/pm.pid" 2>/dev/null)"

	# A second instance with the same pid file stops before it binds:
	# in the foreground and as a daemon (which says so on stderr too).
	out=$("$PM_MILTER_BIN" -f -c "$CONF" -p "$PID_DIR/pm.pid" 2>&1)
	rc=$?
	assert_eq "a second instance exits 1" 1 "$rc" "$out"
	assert_contains "and says the first one's PID" "already running as PID $MILTER_PID" "$out"
	out=$("$PM_MILTER_BIN" -c "$CONF" -p "$PID_DIR/pm.pid" 2>&1 >/dev/null)
	rc=$?
	assert_eq "a second daemon exits 1" 1 "$rc" "$out"
	assert_contains "and says so on stderr" "already running as PID $MILTER_PID" "$out"
	if [ -S "$SOCK" ]; then
		pm_ok "the first instance's socket is still there"
	else
		pm_not_ok "the first instance's socket is still there" "$(ls -la "$SOCK_DIR")"
	fi
	assert_eq "the pid file still names the first instance" "$MILTER_PID" \
		"$(cat "$PID_DIR/pm.pid" 2>/dev/null)"

	# A reload that names another socket changes nothing until a restart,
	# and the stop must not remove whatever is at the new path.
	OTHER=$SOCK_DIR/other.sock
	echo "not a socket" >"$OTHER"
	sed "s|^listen = .*|listen = \"unix:$OTHER\";|" "$CONF" >"$CONF.new" && mv "$CONF.new" "$CONF"
	kill -USR1 "$MILTER_PID"
	wait_for_milter_log 'configuration reloaded' 5 >/dev/null
	assert_grep "a new listen waits for a restart" 'take effect only after a restart' "$MILTER_LOG"

	kill -TERM "$MILTER_PID"
	wait "$MILTER_PID"
	assert_eq "SIGTERM: exit status 0" 0 "$?"
	MILTER_PID=
	if [ -e "$SOCK" ]; then
		pm_not_ok "socket removed at stop" "$(ls -l "$SOCK")"
	else
		pm_ok "socket removed at stop"
	fi
	assert_eq "the file at the reloaded listen path is untouched" "not a socket" \
		"$(cat "$OTHER" 2>/dev/null)"
fi

# A pid file planted as a symbolic link is not followed: what it points to
# stays as it was, and the daemon does not start.
VICTIM=$PM_TMP/victim
echo "precious" >"$VICTIM"
ln -s "$VICTIM" "$PID_DIR/link.pid"
out=$("$PM_MILTER_BIN" -f -c "$CONF" -p "$PID_DIR/link.pid" 2>&1)
rc=$?
assert_eq "a symlinked pid file is refused (exit 1)" 1 "$rc" "$out"
assert_contains "and named as a symbolic link" "is a symbolic link" "$out"
assert_eq "the file it points to is untouched" "precious" "$(cat "$VICTIM")"
ln "$VICTIM" "$PID_DIR/hard.pid"
out=$("$PM_MILTER_BIN" -f -c "$CONF" -p "$PID_DIR/hard.pid" 2>&1)
assert_contains "a pid file with a second name (hard link) is refused" \
	"not a plain file with one name" "$out"
assert_eq "and the file is untouched" "precious" "$(cat "$VICTIM")"

# A configuration error when starting as a daemon reaches the terminal too,
# with file:line, not only syslog.
BAD=$PM_TMP/bad.conf
printf 'listen = "inet:%s@127.0.0.1";\npolicies = ( { name = "x"; type = "sise"; } );\n' \
	"$MILTER_PORT" >"$BAD"
out=$("$PM_MILTER_BIN" -c "$BAD" 2>&1 >/dev/null)
rc=$?
assert_eq "a daemon with a bad configuration exits 78 (EX_CONFIG)" 78 "$rc" "$out"
assert_contains "and prints the error with file:line on stderr" "$BAD:2:" "$out"
assert_contains "and that it does not start" "configuration has errors; not starting" "$out"

# Started as root without a user: it runs, and says so.
CONF2=$PM_TMP/root.conf
{
	echo "listen = \"inet:$MILTER_PORT@127.0.0.1\";"
	echo 'policies = ( { name = "max-size"; type = "size"; max = "10K"; action = "reject"; } );'
} >"$CONF2"
if assert_milter_start "starts as root without user" "$CONF2"; then
	assert_grep "warns that it runs as root" 'warning: running as root' "$MILTER_LOG"
	assert_milter_stop "stops cleanly"
fi

# A user that does not exist: refused, nothing left listening.
CONF3=$PM_TMP/nouser.conf
sed 's/^user = .*/user = "no-such-user-pm"; group = "postfix";/' "$CONF" >"$CONF3"
out=$("$PM_MILTER_BIN" -f -c "$CONF3" 2>&1)
rc=$?
assert_eq "a missing user is fatal (exit 1)" 1 "$rc" "$out"
assert_contains "and named in the error" 'user "no-such-user-pm" does not exist' "$out"

pm_finish
