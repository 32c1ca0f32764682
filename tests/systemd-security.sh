#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
# The systemd unit's sandbox: systemd-analyze must score it 2.0 or lower
# (lower is safer; 10 is an unsandboxed root service), and the sysusers.d
# and tmpfiles.d files must be accepted by their tools.  TAP output.
set -u
: "${top_srcdir:=$(cd "$(dirname "$0")/.." && pwd)}"
unit=$top_srcdir/systemd/policy-milter.service
n=0 failed=0
ok()     { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; printf '# %s\n' "$@"; }

if ! command -v systemd-analyze >/dev/null; then
  not_ok "systemd-analyze is installed (Debian package systemd)"
  echo "1..$n"; exit 1
fi

out=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1)
score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p' | tail -n 1)
if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
  ok "systemd-analyze security scores the unit $score (<= 2.0)"
else
  not_ok "systemd-analyze security scores the unit <= 2.0 (got '${score:-none}')" "$(printf '%s\n' "$out" | tail -n 5)"
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc"
printf 'postfix:x:120:\n' > "$root/etc/group"
: > "$root/etc/passwd"
if systemd-sysusers --root="$root" "$top_srcdir/systemd/policy-milter.sysusers" >/dev/null 2>&1 &&
   grep -q '^policy-milter:' "$root/etc/passwd"; then
  ok "systemd-sysusers creates the policy-milter user"
else
  not_ok "systemd-sysusers creates the policy-milter user"
fi
if systemd-tmpfiles --root="$root" --create "$top_srcdir/systemd/policy-milter.tmpfiles" >/dev/null 2>&1 &&
   [ "$(stat -c %a "$root/var/spool/postfix/policy-milter" 2>/dev/null)" = 2750 ]; then
  ok "systemd-tmpfiles creates the socket directory with mode 2750 (set-group-ID)"
else
  not_ok "systemd-tmpfiles creates the socket directory with mode 2750 (set-group-ID)"
fi
echo "1..$n"
[ $failed -eq 0 ]
