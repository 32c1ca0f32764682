#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
#
# install-test.sh - the Debian package as a postmaster meets it, in a clean
# Debian 12 root: build the .deb from this checkout, install it with apt
# (dependencies pulled from the mirror) first without Postfix (a Sendmail
# host: install, run on /run/policy-milter, purge), then on a Postfix host:
# check the user, files and permissions, "policy-milter -n" on the shipped
# configuration, start the daemon as the unit would (there is no systemd in
# the root) and connect to its socket as Postfix, reinstall, upgrade to a +1
# version, purge.
#
# Run by hand, as root, with the network to the Debian mirror this machine's
# apt uses; not run by make check or CI (tests/package/deb-check.sh is the
# cheap part).  It needs debootstrap and the build dependencies
# (scripts/install-deps.sh).  The minimal root made by debootstrap is kept as
# a tar file in $PM_DEBOOTSTRAP_CACHE (default
# /var/cache/policy-milter-tests/debootstrap) and unpacked afresh each run;
# everything else lives in a temporary directory, removed at the end
# (PM_KEEP_TMP=1 keeps it).  Mounts (/proc, /dev) are made in a private mount
# namespace and vanish with it.  Nothing on the host is installed or changed
# but that cache.
#
# Output: TAP lines, then "N passed, N failed"; exit 1 if anything failed.
set -uo pipefail

if [ "$(id -u)" -ne 0 ]; then
	echo "install-test: run as root (debootstrap, chroot)" >&2
	exit 2
fi
# Private mounts: re-run in a mount namespace of our own.
if [ -z "${PM_INSTALL_TEST_NS:-}" ]; then
	PM_INSTALL_TEST_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi

top=$(cd "$(dirname "$0")/../.." && pwd)
cache=${PM_DEBOOTSTRAP_CACHE:-/var/cache/policy-milter-tests/debootstrap}
suite=bookworm
n=0 failed=0
ok()     { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; [ $# -gt 0 ] && printf '%s\n' "$@" | tail -n 25 | sed 's/^/# /'; }
check()  { local d=$1; shift; if out=$("$@" 2>&1); then ok "$d"; else not_ok "$d" "$out"; fi; }
step()   { echo "# ---- $*"; }
bail()   { echo "Bail out! $*"; exit 1; }

work=$(mktemp -d /var/tmp/pm-install-test.XXXXXX) || exit 1
root=$work/root
daemon_pid=
cleanup() {
	[ -n "$daemon_pid" ] && kill -KILL "$daemon_pid" 2>/dev/null
	# Anything still running in the root (nothing should be).
	local p
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && kill -KILL "${p#/proc/}" 2>/dev/null
	done
	umount -R "$root/dev" "$root/proc" 2>/dev/null
	if [ "${PM_KEEP_TMP:-0}" = 1 ]; then echo "# kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }

# ---------------------------------------------------------------- the .deb
step "build the package from $top"
command -v dpkg-buildpackage >/dev/null || bail "dpkg-buildpackage is missing: scripts/install-deps.sh"
command -v debootstrap >/dev/null || bail "debootstrap is missing: apt-get install debootstrap"
src=$work/build/src
mkdir -p "$src"
# The checkout as it is (committed or not; ignored files left out), so that
# the build also shows it works from git: debian/rules runs autoreconf.
(cd "$top" && git ls-files -co --exclude-standard -z | cpio -0pdm --quiet "$src") ||
	bail "cannot copy the checkout (is $top a git checkout?)"
version=$(cd "$src" && dpkg-parsechangelog -SVersion)
arch=$(dpkg --print-architecture)
deb=policy-milter_${version}_${arch}.deb
if out=$(cd "$src" && DEB_BUILD_OPTIONS=nocheck dpkg-buildpackage -b -us -uc -Pnocheck 2>&1) &&
   [ -f "$work/build/$deb" ]; then
	ok "dpkg-buildpackage -b builds $deb"
else
	not_ok "dpkg-buildpackage -b builds $deb" "$out"
	bail "no package to test"
fi
# The +1 version for the upgrade: the same files, repacked with a higher
# version (what a rebuild with a new changelog entry makes).
v2=${version}+1
deb2=policy-milter_${v2}_${arch}.deb
rm -rf "$work/repack" && dpkg-deb -R "$work/build/$deb" "$work/repack" &&
	sed -i "s/^Version: .*/Version: $v2/" "$work/repack/DEBIAN/control" &&
	dpkg-deb -b --root-owner-group "$work/repack" "$work/build/$deb2" >/dev/null ||
	bail "cannot repack $deb as $v2"

# ---------------------------------------------------------------- the root
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
: "${mirror:=http://deb.debian.org/debian}"
tarball=$cache/$suite-minbase.tar
if [ ! -f "$tarball" ]; then
	step "debootstrap $suite from $mirror (once; kept in $tarball)"
	mkdir -p "$cache"
	rm -rf "$cache/root.new"
	debootstrap --variant=minbase "$suite" "$cache/root.new" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$cache/debootstrap.log"; bail "debootstrap failed (log: $cache/debootstrap.log)"; }
	tar -C "$cache/root.new" --numeric-owner -cf "$tarball.new" . && mv "$tarball.new" "$tarball" ||
		bail "cannot write $tarball"
	rm -rf "$cache/root.new"
fi
step "a clean $suite root from $tarball in $root"
mkdir -p "$root"
tar -C "$root" --numeric-owner -xf "$tarball" || bail "cannot unpack $tarball"
mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" || bail "cannot mount /proc, /dev in the root"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null
# The same archive this machine's apt uses (so the same mirror answers).
if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
	rm -f "$root/etc/apt/sources.list"
	cp /etc/apt/sources.list.d/*.sources "$root/etc/apt/sources.list.d/"
fi
# As in any chroot: maintainer scripts of dependencies (redis-server) must
# not start services here.  policy-milter's own postinst starts it only
# under a running systemd, which this root does not have.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
cp "$work/build/$deb" "$work/build/$deb2" "$root/tmp/"

out=$(in_root apt-get update -q 2>&1) || bail "apt-get update in the root failed: $(echo "$out" | tail -n 5)"

# ---------------------------------------------------------------- no Postfix
# First as on a Sendmail host: no group postfix.  The package installs (the
# tmpfiles.d line for /var/spool/postfix is skipped) and the daemon runs
# with the configuration changes README.Debian gives, the unit unchanged.
step "a host without Postfix (Sendmail): install, run on /run/policy-milter, purge"
if out=$(in_root apt-get install -y -q "/tmp/$deb" 2>&1); then
	ok "without Postfix: apt-get install ./$deb (dependencies from the mirror)"
	pulled=$(printf '%s\n' "$out" | sed -n '/^The following NEW packages/,/^[0-9]* upgraded/p' |
		sed '1d;$d' | tr -s ' \n' ' ')
	echo "# pulled in:$pulled"
else
	not_ok "without Postfix: apt-get install ./$deb" "$out"
fi
check "without Postfix: system user policy-milter" in_root getent passwd policy-milter
check "without Postfix: no /var/spool/postfix/policy-milter made" test ! -e "$root/var/spool/postfix/policy-milter"
sed -e 's|^listen = .*|listen = "unix:/run/policy-milter/milter.sock";|' -e '/^group = /d' \
	"$root/etc/policy-milter/policy-milter.conf" >"$root/etc/policy-milter/sendmail.conf"
# What RuntimeDirectory= (policy-milter, 0750) makes under systemd.
install -d -m 0750 -o "$(in_root id -u policy-milter)" -g "$(in_root id -g policy-milter)" "$root/run/policy-milter"
# timeout stops it with SIGTERM after 2 s (and so exits 124).
out=$(chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin sh -c 'umask 0007 &&
	exec setpriv --reuid=policy-milter --regid=policy-milter --init-groups \
		timeout -s TERM 2 /usr/sbin/policy-milter -f -c /etc/policy-milter/sendmail.conf' 2>&1)
if printf '%s\n' "$out" | grep -q 'listening on unix:/run/policy-milter/milter.sock' &&
   printf '%s\n' "$out" | grep -q 'notice: stopping'; then
	ok "without Postfix: the daemon runs as policy-milter on /run/policy-milter/milter.sock"
else
	not_ok "without Postfix: the daemon runs as policy-milter on /run/policy-milter/milter.sock" "$out"
fi
rm -f "$root/etc/policy-milter/sendmail.conf"
check "without Postfix: apt-get purge" in_root apt-get purge -y -q policy-milter
check "without Postfix: purge removed the user and /run/policy-milter" \
	sh -c "! chroot '$root' getent passwd policy-milter && test ! -e '$root/run/policy-milter'"

step "install postfix (a Postfix host: group postfix, /var/spool/postfix)"
echo "postfix postfix/main_mailer_type select No configuration" | in_root debconf-set-selections
out=$(in_root apt-get install -y -q --no-install-recommends postfix 2>&1) ||
	bail "cannot install postfix in the root: $(echo "$out" | tail -n 5)"

# ---------------------------------------------------------------- install
step "apt-get install ./$deb"
if out=$(in_root apt-get install -y -q "/tmp/$deb" 2>&1); then
	ok "apt-get install ./$deb"
else
	not_ok "apt-get install ./$deb" "$out"
	bail "not installed"
fi
check "dpkg reports policy-milter $version installed" \
	test "$(in_root dpkg-query -W -f='${Status} ${Version}' policy-milter)" = "install ok installed $version"

pw=$(in_root getent passwd policy-milter)
uid=$(echo "$pw" | cut -d: -f3)
if [ -n "$pw" ] && [ "$uid" -lt 1000 ] && [ "$(echo "$pw" | cut -d: -f6-)" = "/nonexistent:/usr/sbin/nologin" ]; then
	ok "system user policy-milter (uid $uid, home /nonexistent, shell nologin)"
else
	not_ok "system user policy-milter (uid < 1000, home /nonexistent, shell nologin)" "passwd: $pw"
fi
check "group policy-milter exists and is the user's primary group" \
	test "$(in_root id -gn policy-milter)" = policy-milter

# stat format: mode owner:group path
perms() { in_root stat -c '%A %U:%G' "$1" 2>&1; }
while read -r mode owner path; do
	want="$mode $owner"
	got=$(perms "$path")
	if [ "$got" = "$want" ]; then ok "$path is $want"; else not_ok "$path is $want" "got: $got"; fi
done <<'LIST'
-rwxr-xr-x root:root /usr/sbin/policy-milter
drwxr-xr-x root:root /etc/policy-milter
-rw-r--r-- root:root /etc/policy-milter/policy-milter.conf
-rw-r--r-- root:root /lib/systemd/system/policy-milter.service
-rw-r--r-- root:root /usr/lib/sysusers.d/policy-milter.conf
-rw-r--r-- root:root /usr/lib/tmpfiles.d/policy-milter.conf
drwxr-s--- policy-milter:postfix /var/spool/postfix/policy-milter
LIST
check "the conffile is the shipped example" cmp "$root/etc/policy-milter/policy-milter.conf" "$top/etc/policy-milter.conf"
check "the unit is enabled (deb-systemd-helper, without a running systemd)" \
	test -L "$root/etc/systemd/system/multi-user.target.wants/policy-milter.service"
check "policy-milter -n on the shipped configuration" \
	in_root /usr/sbin/policy-milter -n -c /etc/policy-milter/policy-milter.conf

# ---------------------------------------------------------------- start
step "start the daemon as the unit does: user and group policy-milter, UMask 0007, -f"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin sh -c 'umask 0007 &&
	exec setpriv --reuid=policy-milter --regid=policy-milter --init-groups \
		/usr/sbin/policy-milter -f -c /etc/policy-milter/policy-milter.conf' \
	>"$work/daemon.log" 2>&1 &
daemon_pid=$!
sock=/var/spool/postfix/policy-milter/milter.sock
for _ in $(seq 50); do [ -S "$root$sock" ] && break; kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
if [ -S "$root$sock" ] && kill -0 "$daemon_pid" 2>/dev/null; then
	ok "the daemon starts and listens on $sock"
else
	not_ok "the daemon starts and listens on $sock" "$(cat "$work/daemon.log")"
fi
# Numbers: the host's user names need not match the root's.
check "it runs as policy-milter:policy-milter" \
	test "$(ps -o uid=,gid= -p "$daemon_pid" | tr -s ' ' | sed 's/^ //')" = \
	"$uid $(in_root getent group policy-milter | cut -d: -f3)"
got=$(perms "$sock")
if [ "$got" = "srw-rw---- policy-milter:postfix" ]; then ok "the socket is $got"; else not_ok "the socket is srw-rw---- policy-milter:postfix" "got: $got"; fi
check "user postfix can connect to the socket" \
	in_root setpriv --reuid=postfix --regid=postfix --init-groups \
	perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect: $!\n"' "$sock"
kill -TERM "$daemon_pid" 2>/dev/null
for _ in $(seq 50); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
if ! kill -0 "$daemon_pid" 2>/dev/null && wait "$daemon_pid"; then
	ok "SIGTERM stops it cleanly (exit 0)"
else
	not_ok "SIGTERM stops it cleanly (exit 0)" "$(cat "$work/daemon.log")"
fi
daemon_pid=
echo "# daemon log:"; sed 's/^/#   /' "$work/daemon.log"

# ---------------------------------------------------------------- upgrade
step "reinstall $version, then upgrade to $v2, with an edited configuration"
echo '# edited by install-test' >>"$root/etc/policy-milter/policy-milter.conf"
check "apt-get install --reinstall ./$deb" in_root apt-get install -y -q --reinstall "/tmp/$deb"
check "apt-get install ./$deb2 (upgrade)" in_root apt-get install -y -q "/tmp/$deb2"
check "dpkg reports $v2 installed" \
	test "$(in_root dpkg-query -W -f='${Status} ${Version}' policy-milter)" = "install ok installed $v2"
check "the edited configuration is kept" grep -q '^# edited by install-test' "$root/etc/policy-milter/policy-milter.conf"
check "the user keeps its uid" test "$(in_root id -u policy-milter)" = "$uid"
check "policy-milter -n after the upgrade" in_root /usr/sbin/policy-milter -n -c /etc/policy-milter/policy-milter.conf

# ---------------------------------------------------------------- purge
step "apt-get purge policy-milter"
check "apt-get purge -y policy-milter" in_root apt-get purge -y -q policy-milter
check "dpkg no longer knows the package" \
	sh -c "! chroot '$root' dpkg-query -W -f='\${Status}' policy-milter 2>/dev/null | grep -q installed"
for path in /etc/policy-milter /var/spool/postfix/policy-milter /usr/sbin/policy-milter \
	/lib/systemd/system/policy-milter.service /etc/systemd/system/multi-user.target.wants/policy-milter.service \
	/var/lib/systemd/deb-systemd-helper-enabled/policy-milter.service.dsh-also; do
	check "purge removed $path" test ! -e "$root$path" -a ! -L "$root$path"
done
check "purge removed the user policy-milter" sh -c "! chroot '$root' getent passwd policy-milter"
check "purge removed the group policy-milter" sh -c "! chroot '$root' getent group policy-milter"
check "postfix is still installed" \
	test "$(in_root dpkg-query -W -f='${Status}' postfix)" = "install ok installed"

echo "1..$n"
echo "$((n - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
