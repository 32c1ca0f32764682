#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
# Install what policy-milter needs to build, run and be tested on Debian 12.
# Idempotent: does nothing (not even apt-get update) when all is there.
# Also fetches Debian's Sendmail for the tests, unpacked, not installed
# (--no-sendmail: not that).
set -euo pipefail

PACKAGES=(
  build-essential autoconf automake libtool pkg-config m4 xz-utils
  libmilter-dev libhiredis-dev libconfig-dev libpcre2-dev check
  redis-server redis-tools postfix swaks python3 procps systemd valgrind
  # The fuzz targets (make fuzz, tests/fuzz/run.sh): clang and its libFuzzer
  # and sanitizer runtimes, which clang only recommends.
  clang libclang-rt-14-dev
  # What Debian's Sendmail binary needs at run time: the Sendmail test runs
  # it unpacked from its packages (see fetch_sendmail below).
  libdb5.3 libldap-2.5-0 libnsl2 libsasl2-2 libsasl2-modules libssl3 libwrap0
)

# Debian's Sendmail for tests/integration/mta-sendmail.sh.  Sendmail and
# Postfix conflict as packages, so Sendmail is never installed: its two
# packages are downloaded (apt-get download) and unpacked (dpkg -x) into
# $SM_CACHE/root, where the test looks for it (PM_SENDMAIL_ROOT overrides
# that there).  Done once; root/.complete marks a finished unpack.
SM_CACHE=${PM_SENDMAIL_CACHE:-/var/cache/policy-milter-tests/sendmail}

fetch_sendmail() {
  local bin=$SM_CACHE/root/usr/libexec/sendmail/sendmail
  # A finished unpack whose binary finds all its libraries (not one left by
  # another release): nothing to do.
  if [ -f "$SM_CACHE/root/.complete" ] && [ -x "$bin" ] &&
      ! ldd "$bin" 2>/dev/null | grep -q 'not found'; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: Sendmail for the tests is not in $SM_CACHE; run as root to" \
      "fetch it (until then the Sendmail integration test is skipped)" >&2
    return 0
  fi
  echo "install-deps: fetching Debian's sendmail-bin and sendmail-cf into $SM_CACHE (not installing them)"
  mkdir -p "$(dirname "$SM_CACHE")"
  rm -rf "$SM_CACHE".new.*            # left by an interrupted run
  local tmp log f
  tmp=$(mktemp -d "$SM_CACHE.new.XXXXXX")
  log=$tmp/apt.log
  # A fresh system may have no package lists yet: update once and retry.
  if ! (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root \
        sendmail-bin sendmail-cf) >"$log" 2>&1; then
    apt-get update -q >>"$log" 2>&1 || true
    if ! (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root \
          sendmail-bin sendmail-cf) >>"$log" 2>&1; then
      cat "$log" >&2
      rm -rf "$tmp"
      echo "install-deps: could not download sendmail-bin and sendmail-cf (see above);" \
        "the Sendmail integration test cannot run" >&2
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
  rm -rf "$SM_CACHE"
  mkdir -p "$SM_CACHE"
  mv "$tmp"/*.deb "$tmp/root" "$SM_CACHE/"
  rm -rf "$tmp"
  echo "install-deps: $(paste -sd ' ' "$SM_CACHE/root/.complete") unpacked in $SM_CACHE/root"
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
  # Postfix must not configure itself as the system's mail server here.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  echo "install-deps: installing ${missing[*]}"
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# The quickstart runs the milter; only the tests need Sendmail.
[ "${1:-}" = "--no-sendmail" ] || fetch_sendmail
