#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
# Try policy-milter on this machine in one command (Debian 12, as root):
# installs the packages it needs, builds it, makes sure a local Redis runs,
# prints the lines to paste into Postfix's main.cf, then runs the milter in
# the foreground with the example policies (etc/policy-milter.conf) until
# Ctrl-C.  Nothing is installed outside this directory but the Debian
# packages needed to build and run it and Redis (no MTA, no test tools:
# scripts/install-deps.sh --run) and, if missing, the system user
# "policy-milter".
#
# Environment: PORT (default 8890) for the milter, REDIS (default
# 127.0.0.1:6379).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
port=${PORT:-8890}
redis=${REDIS:-127.0.0.1:6379}

bash scripts/install-deps.sh --run

if [ ! -x build/policy-milter ]; then
  echo "quickstart: building"
  autoreconf -fi >/dev/null 2>&1
  mkdir -p build
  (cd build && ../configure -q && make -j"$(nproc)" >/dev/null)
fi

# A Redis on the address the config names: the system's, or one started here.
host=${redis%:*} rport=${redis##*:}
if ! redis-cli -h "$host" -p "$rport" ping >/dev/null 2>&1; then
  echo "quickstart: starting redis-server on $redis"
  service redis-server start >/dev/null 2>&1 ||
    redis-server --bind "$host" --port "$rport" --daemonize yes --save '' >/dev/null
  for _ in $(seq 50); do
    redis-cli -h "$host" -p "$rport" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

getent passwd policy-milter >/dev/null ||
  useradd --system --no-create-home --home-dir /nonexistent \
          --shell /usr/sbin/nologin policy-milter

# The example configuration, listening on TCP (so no socket group: there
# may be no Postfix here) and using this Redis.
conf=build/quickstart.conf
sed -e "s|^listen = .*|listen = \"inet:$port@127.0.0.1\";|" \
    -e "s|^socket_mode = .*||" \
    -e "s|^group = .*||" \
    -e "s|^\( *address = \)\"[^\"]*\";|\1\"$redis\";|" \
    -e "s|clients = \[ \"127.0.0.0/8\", \"::1\" \];|clients = [ ];   # quickstart: test from localhost too|" \
    etc/policy-milter.conf > "$conf"
build/policy-milter -n -c "$conf"

cat <<EOT

policy-milter is starting with the example policies of etc/policy-milter.conf.
Paste these lines into /etc/postfix/main.cf, then run "postfix reload":

    smtpd_milters = inet:127.0.0.1:$port
    non_smtpd_milters = \$smtpd_milters
    milter_default_action = accept

Try it:      swaks --server 127.0.0.1 --to "\$(seq -s, -f 'u%g@example.org' 101)"
             (swaks: apt-get install swaks)
             (the 101st recipient gets "452 4.5.3 Too many recipients ...")
Statistics:  redis-cli -h $host -p $rport hgetall pm:stats:max-size
Stop:        Ctrl-C

EOT
exec build/policy-milter -f -c "$conf"
