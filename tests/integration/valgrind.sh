#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
#
# valgrind.sh - the daemon under valgrind, behind a real Postfix and Redis:
# a few transactions that exercise every decision path (accepted, refused at
# RCPT, refused at end of message, too many recipients), a reload, then
# SIGTERM.  Asserts a clean exit, no memory errors and no leak report.
# Then tests/check_protocol's sequences with its daemons under valgrind.
#
# Skipped (77) without valgrind, or for a sanitizer build (valgrind and
# AddressSanitizer do not mix; that build checks leaks itself).

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! command -v valgrind >/dev/null; then
	echo "1..0 # SKIP valgrind is not installed"
	exit 77
fi
real_bin=${PM_MILTER_BIN}
if ldd "$real_bin" 2>/dev/null | grep -q libasan; then
	echo "1..0 # SKIP sanitizer build"
	exit 77
fi

pm_setup
VG_LOG=$PM_TMP/valgrind.log
# The harness runs $PM_MILTER_BIN; make that valgrind running the daemon.
cat >"$PM_TMP/vg-milter" <<WRAPPER
#!/bin/sh
exec valgrind --quiet --leak-check=full --show-leak-kinds=definite,indirect \
  --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
  --log-file="$VG_LOG" "$real_bin" "\$@"
WRAPPER
chmod +x "$PM_TMP/vg-milter"
PM_MILTER_BIN=$PM_TMP/vg-milter

redis_start || pm_bail "cannot start Redis"
postfix_start || pm_bail "cannot start Postfix"

CONF=$PM_TMP/valgrind.conf
{
	milter_config_head pmvg:
	cat <<'POLICIES'
policies = (
  { name = "max-size"; type = "size"; max = "10K"; action = "reject";
    reply = [ "552 5.3.4 Message too big (limit ${limit})", "100% sure" ]; },
  { name = "max-rcpts"; type = "recipients"; max = 2; action = "tempfail";
    reply = "452 4.5.3 Too many recipients for ${sender}"; }
);
POLICIES
} >"$CONF"

if assert_milter_start "milter starts under valgrind" "$CONF"; then
	t=$(smtp_send --to a@example.net --body-bytes 500)
	assert_reply_match "small message accepted" "$t" DOT 1 '^250 2\.0\.0 Ok: queued as '
	t=$(smtp_send --to a@example.net --size 20000 --quit-after RCPT)
	assert_reply_match "SIZE= over the limit refused at RCPT" "$t" RCPT 1 '^552'
	t=$(smtp_send --to a@example.net --body-bytes 20000)
	assert_reply_match "real size over the limit refused at end of message" "$t" DOT 1 '^552'
	t=$(smtp_send --to a@example.net --to b@example.net --to c@example.net --body-bytes 100)
	assert_reply_match "third recipient tempfailed" "$t" RCPT 3 '^452 4\.5\.3'
	milter_reload
	wait_for_milter_log 'configuration reloaded' 20 >/dev/null
	assert_grep "reload logged" 'configuration reloaded' "$MILTER_LOG"
	t=$(smtp_send --to a@example.net --body-bytes 100)
	assert_reply_match "message accepted after the reload" "$t" DOT 1 '^250 2\.0\.0 Ok: queued as '
	assert_milter_stop "SIGTERM: exit status 0 under valgrind"
	assert_eq "valgrind reports no errors and no definite or indirect leaks" "" \
		"$(grep -v '^==[0-9]*== *$' "$VG_LOG" | head -n 40)"
fi

# The milter protocol sequences no MTA makes (aborts everywhere, malformed
# packets, QUIT_NC ...), with both of check_protocol's daemons under
# valgrind: any memory error or leak makes a daemon exit 3, which fails it.
proto=$top_builddir/tests/check_protocol
if [ -x "$proto" ]; then
	PM_DAEMON_WRAPPER="valgrind -q --error-exitcode=3 --leak-check=full \
--show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect" \
		"$proto" >"$PM_TMP/protocol.out" 2>&1
	rc=$?
	assert_eq "protocol sequences with the daemons under valgrind: exit status" 0 "$rc" \
		"$(tail -n 40 "$PM_TMP/protocol.out")"
else
	pm_not_ok "protocol sequences under valgrind: $proto is not built"
fi

pm_finish
