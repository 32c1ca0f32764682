#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
# Install what policy-milter needs to build, run and be tested on Debian 12.
# Idempotent: does nothing (not even apt-get update) when all is there.
set -euo pipefail

PACKAGES=(
  build-essential autoconf automake libtool pkg-config m4 xz-utils
  libmilter-dev libhiredis-dev libconfig-dev libpcre2-dev check
  redis-server redis-tools postfix swaks python3 procps systemd valgrind
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

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
