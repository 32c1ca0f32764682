#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
# Install what policy-milter needs on Debian 12, as Debian packages.
# Idempotent: does nothing (not even apt-get update) when all is there.
#
#   install-deps.sh --run     to build and run it, and Redis (the quickstart)
#   install-deps.sh           the above and all the tests need: test tools,
#                             the Debian packaging tools, and Debian's
#                             Postfix and Sendmail unpacked for the tests
#   install-deps.sh --no-sendmail   the same without Sendmail
#
# No MTA is ever installed, so none the host has is replaced: apt would
# remove exim4, Sendmail or nullmailer to install postfix.  The tests use
# the host's Postfix if it is installed, else Debian's, downloaded (apt-get
# download) and unpacked (dpkg -x) into a cache directory; Sendmail always
# that way (it conflicts with Postfix as a package).
set -euo pipefail

mode=tests
case ${1:-} in
--run) mode=run ;;
--no-sendmail) mode=tests-no-sendmail ;;
"") ;;
*) echo "usage: $0 [--run | --no-sendmail]" >&2; exit 2 ;;
esac

# Build and run: the compiler and autotools, the libraries, and Redis.
PACKAGES=(
  build-essential autoconf automake libtool pkg-config m4 xz-utils
  libmilter-dev libhiredis-dev libconfig-dev libpcre2-dev libmicrohttpd-dev
  redis-server redis-tools
)
if [ "$mode" != run ]; then
  PACKAGES+=(
    check swaks python3 procps systemd valgrind
    # The metrics endpoint test reads it with curl; the man pages are
    # linted with mandoc and rendered with man (groff).
    curl mandoc groff-base man-db
    # The fuzz targets (make fuzz, tests/fuzz/run.sh): clang and its libFuzzer
    # and sanitizer runtimes, which clang only recommends.
    clang libclang-rt-14-dev
    # tests/package/deb-check.sh: build the .deb and lint it.
    debhelper lintian dpkg-dev
    # What Debian's Postfix and Sendmail binaries need at run time: the
    # tests run them unpacked from their packages (see fetch_unpacked).
    libdb5.3 libicu72 libldap-2.5-0 libnsl2 libsasl2-2 libsasl2-modules
    libssl3 libwrap0 netbase
  )
fi

# Debian's Sendmail (for tests/integration/mta-sendmail.sh) and, where no
# Postfix is installed, Debian's Postfix (for the Postfix tests) are
# downloaded (apt-get download) and unpacked (dpkg -x) into CACHE/root,
# never installed.  tests/integration/mta.sh and lib.sh look for them there
# (PM_SENDMAIL_ROOT, PM_POSTFIX_ROOT override that).  Done once;
# root/.complete marks a finished unpack.
SM_CACHE=${PM_SENDMAIL_CACHE:-/var/cache/policy-milter-tests/sendmail}
PF_CACHE=${PM_POSTFIX_CACHE:-/var/cache/policy-milter-tests/postfix}

# fetch_unpacked CACHE BINARY LIBDIR PACKAGE...: BINARY (relative to the
# root) must find all its libraries (LIBDIR, relative, is searched first).
fetch_unpacked() {
  local cache=$1 bin=$1/root/$2 libdir=$1/root/$3
  shift 3
  # A finished unpack whose binary finds all its libraries (not one left by
  # another release): nothing to do.
  if [ -f "$cache/root/.complete" ] && [ -x "$bin" ] &&
      ! LD_LIBRARY_PATH=$libdir ldd "$bin" 2>/dev/null | grep -q 'not found'; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: $* for the tests is not in $cache; run as root to" \
      "fetch it (until then its integration tests are skipped)" >&2
    return 0
  fi
  echo "install-deps: fetching Debian's $* into $cache (not installing them)"
  mkdir -p "$(dirname "$cache")"
  rm -rf "$cache".new.*            # left by an interrupted run
  local tmp log f
  tmp=$(mktemp -d "$cache.new.XXXXXX")
  log=$tmp/apt.log
  # A fresh system may have no package lists yet: update once and retry.
  if ! (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$@") >"$log" 2>&1; then
    apt-get update -q >>"$log" 2>&1 || true
    if ! (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$@") >>"$log" 2>&1; then
      cat "$log" >&2
      rm -rf "$tmp"
      echo "install-deps: could not download $* (see above);" \
        "their integration tests cannot run" >&2
      return 1
    fi
  fi
  for f in "$tmp"/*.deb; do
    # shellcheck disable=SC2016 # dpkg-deb's format, not the shell's
    if ! dpkg -x "$f" "$tmp/root" ||
        ! dpkg-deb -W --showformat='${Package} ${Version}\n' "$f" >>"$tmp/root.complete"; then
      rm -rf "$tmp"
      return 1
    fi
  done
  mv "$tmp/root.complete" "$tmp/root/.complete"
  rm -rf "$cache"
  mkdir -p "$cache"
  mv "$tmp"/*.deb "$tmp/root" "$cache/"
  rm -rf "$tmp"
  echo "install-deps: $(paste -sd ' ' "$cache/root/.complete") unpacked in $cache/root"
}

# The users and groups an unpacked Postfix runs with (mail_owner postfix,
# setgid_group postdrop), made as Debian's postfix package makes them, so
# that a Postfix installed later finds them as it expects.
postfix_ids() {
  [ "$(id -u)" -eq 0 ] || return 0
  getent group postfix >/dev/null || groupadd --system postfix
  getent group postdrop >/dev/null || groupadd --system postdrop
  getent passwd postfix >/dev/null ||
    useradd --system --gid postfix --home-dir /var/spool/postfix --no-create-home \
      --shell /usr/sbin/nologin postfix
}

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]}; run as root (sudo)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "install-deps: installing ${missing[*]}"
  apt-get update -q >/dev/null
  # --no-remove: should a package ever need another one removed (an MTA, a
  # conflicting library), apt stops instead of removing it.
  if ! apt-get install -y -q --no-install-recommends --no-remove "${missing[@]}" >/dev/null; then
    echo "install-deps: apt-get could not install ${missing[*]} without removing" \
      "a package (see above); nothing was removed" >&2
    exit 1
  fi
fi

[ "$mode" = run ] && exit 0
if ! dpkg-query -W -f='${Status}' postfix 2>/dev/null | grep -q "install ok installed"; then
  fetch_unpacked "$PF_CACHE" usr/sbin/postfix usr/lib/postfix postfix
  postfix_ids
fi
[ "$mode" = tests-no-sendmail ] ||
  fetch_unpacked "$SM_CACHE" usr/libexec/sendmail/sendmail . sendmail-bin sendmail-cf
