#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
#
# deb-check.sh - the cheap checks of the Debian package, for make check and
# CI: dpkg-buildpackage builds it from a copy of this tree (make distdir plus
# debian/), dpkg -c shows the files it must ship, and lintian reports no
# error.  TAP output.  tests/package/install-test.sh (by hand, root) is the
# real test: install, start, upgrade and purge in a clean Debian root.
#
# Skips (77) only when no package can be built here: not Debian
# (no dpkg-buildpackage), no debian/ directory (a release tarball), or
# missing build dependencies (scripts/install-deps.sh installs them).
# The build runs with DEB_BUILD_OPTIONS=nocheck (make check runs the unit
# tests already) and within PM_DEB_TIMEOUT seconds (default 300).
set -u
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
n=0 failed=0
ok()     { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; [ $# -gt 0 ] && printf '%s\n' "$@" | tail -n 30 | sed 's/^/# /'; }
skip()   { echo "1..0 # SKIP $1"; exit 77; }

[ -z "${PM_SKIP_PACKAGE_TEST:-}" ] || skip "$PM_SKIP_PACKAGE_TEST"
command -v dpkg-buildpackage >/dev/null || skip "dpkg-buildpackage is not installed (not Debian?)"
[ -f "$top_srcdir/debian/control" ] || skip "no debian/ directory in $top_srcdir"
deps=$(cd "$top_srcdir" && dpkg-checkbuilddeps -Pnocheck 2>&1) ||
	skip "build dependencies missing (scripts/install-deps.sh installs them): ${deps##*: }"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pm-deb.XXXXXX") || exit 1
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
src=$tmp/src
# The release tree (what make dist would pack), with debian/ added.
if ! out=$(make -C "$top_builddir" -s distdir distdir="$src" 2>&1); then
	not_ok "make distdir" "$out"
	echo "1..$n"; exit 1
fi
cp -R "$top_srcdir/debian" "$src/debian"
version=$(cd "$src" && dpkg-parsechangelog -SVersion)
arch=$(dpkg --print-architecture)
deb=$tmp/policy-milter_${version}_${arch}.deb

out=$(cd "$src" && DEB_BUILD_OPTIONS=nocheck timeout "${PM_DEB_TIMEOUT:-300}" \
	dpkg-buildpackage -b -us -uc -Pnocheck 2>&1)
rc=$?
if [ $rc -eq 0 ] && [ -f "$deb" ]; then
	ok "dpkg-buildpackage -b builds ${deb##*/}"
else
	not_ok "dpkg-buildpackage -b builds ${deb##*/} (exit $rc${rc/124/: timed out})" "$out"
	echo "1..$n"; exit 1
fi

contents=$(dpkg -c "$deb" | awk '{ print $1, $2, $NF }')
# mode owner path: what the package must ship, and how.
while read -r mode path; do
	if printf '%s\n' "$contents" | grep -qxF -- "$mode root/root ./$path"; then
		ok "the package ships /$path ($mode root:root)"
	else
		not_ok "the package ships /$path ($mode root:root)" \
			"$(printf '%s\n' "$contents" | grep -F -- "${path##*/}" || echo "not in dpkg -c")"
	fi
done <<'LIST'
-rwxr-xr-x usr/sbin/policy-milter
-rwxr-xr-x usr/sbin/policy-milter-ctl
-rw-r--r-- etc/policy-milter/policy-milter.conf
-rw-r--r-- lib/systemd/system/policy-milter.service
-rw-r--r-- usr/lib/sysusers.d/policy-milter.conf
-rw-r--r-- usr/lib/tmpfiles.d/policy-milter.conf
-rw-r--r-- usr/share/doc/policy-milter/README.Debian
-rw-r--r-- usr/share/doc/policy-milter/README.md
-rw-r--r-- usr/share/doc/policy-milter/copyright
-rw-r--r-- usr/share/man/man8/policy-milter.8.gz
-rw-r--r-- usr/share/man/man8/policy-milter-ctl.8.gz
-rw-r--r-- usr/share/man/man5/policy-milter.conf.5.gz
LIST

ctl=$tmp/control
dpkg-deb -e "$deb" "$ctl"
if grep -qx /etc/policy-milter/policy-milter.conf "$ctl/conffiles" 2>/dev/null; then
	ok "/etc/policy-milter/policy-milter.conf is a conffile"
else
	not_ok "/etc/policy-milter/policy-milter.conf is a conffile" "$(cat "$ctl/conffiles" 2>&1)"
fi
for want in "systemd-sysusers" "systemd-tmpfiles" "deb-systemd-helper enable" "deb-systemd-invoke"; do
	if grep -qF -- "$want" "$ctl/postinst" 2>/dev/null; then
		ok "postinst runs $want"
	else
		not_ok "postinst runs $want" "$(cat "$ctl/postinst" 2>&1)"
	fi
done
if grep -q 'userdel policy-milter' "$ctl/postrm" 2>/dev/null &&
   grep -q 'deb-systemd-helper purge' "$ctl/postrm"; then
	ok "postrm purge removes the unit's state and the user"
else
	not_ok "postrm purge removes the unit's state and the user" "$(cat "$ctl/postrm" 2>&1)"
fi
x=$tmp/x
dpkg -x "$deb" "$x"
if cmp -s "$x/lib/systemd/system/policy-milter.service" "$top_srcdir/systemd/policy-milter.service"; then
	ok "the packaged unit is systemd/policy-milter.service"
else
	not_ok "the packaged unit is systemd/policy-milter.service"
fi

if command -v lintian >/dev/null; then
	# Errors fail; warnings are shown.
	out=$(timeout 120 lintian --fail-on error \
		"$tmp"/policy-milter_"${version}"_"${arch}".changes 2>&1)
	rc=$?
	if [ $rc -eq 0 ]; then
		ok "lintian reports no error$(printf '%s\n' "$out" | grep -c '^W:' |
			sed 's/^0$//; s/^1$/ (1 warning)/; s/^[0-9][0-9]*$/ (& warnings)/')"
		printf '%s\n' "$out" | grep '^[WE]:' | sed 's/^/# /'
	else
		not_ok "lintian reports no error (exit $rc)" "$out"
	fi
else
	not_ok "lintian reports no error" "lintian is not installed (scripts/install-deps.sh installs it)"
fi

echo "1..$n"
[ $failed -eq 0 ]
