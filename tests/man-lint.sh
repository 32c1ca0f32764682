#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
# The man pages (man/*.[58]): mandoc's lint finds nothing at warning level
# or above ("referenced manual not found" is a STYLE message, below it),
# groff -ww with the mdoc macros is silent, and man -l renders each page
# with its NAME line.  TAP output.  Skips (77) only when mandoc is missing.
set -u
: "${top_srcdir:=$(cd "$(dirname "$0")/.." && pwd)}"
pages="man/policy-milter.8 man/policy-milter.conf.5 man/policy-milter-ctl.8"
n=0 failed=0
ok()     { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; [ $# -gt 0 ] && printf '%s\n' "$@" | head -n 20 | sed 's/^/# /'; }

if ! command -v mandoc >/dev/null; then
  echo "1..0 # SKIP mandoc is not installed (Debian package mandoc)"
  exit 77
fi

for page in $pages; do
  file=$top_srcdir/$page
  name=${page##*/}
  if [ ! -f "$file" ]; then
    not_ok "$name exists" "no $file"
    continue
  fi

  # mandoc prints its messages on stdout with -T lint; keep stderr too.
  out=$(mandoc -T lint -W warning "$file" 2>&1)
  if [ -z "$out" ]; then
    ok "mandoc -T lint -W warning: $name"
  else
    not_ok "mandoc -T lint -W warning: $name" "$out"
  fi

  if command -v groff >/dev/null; then
    out=$(groff -ww -z -mdoc "$file" 2>&1)
    if [ -z "$out" ]; then
      ok "groff -ww -z -mdoc: $name"
    else
      not_ok "groff -ww -z -mdoc: $name" "$out"
    fi
  else
    not_ok "groff -ww -z -mdoc: $name" "groff is not installed (Debian package groff-base)"
  fi

  if command -v man >/dev/null; then
    # man -l renders the file itself; no pager, a fixed width, and stderr
    # apart (mandoc may mention its database there).
    out=$(MANWIDTH=80 MANPAGER=cat PAGER=cat man -l "$file" 2>/dev/null)
    want=${name%.[0-9]}
    line=$(printf '%s\n' "$out" | grep -A1 '^NAME$' | sed -n '2s/^ *//p')
    if [ "${line%% *}" = "$want" ]; then
      ok "man -l renders $name with its NAME line ($(printf '%s\n' "$out" | wc -l) lines)"
    else
      not_ok "man -l renders $name with its NAME line" "$(printf '%s\n' "$out" | head -n 8)"
    fi
  else
    not_ok "man -l renders $name" "man is not installed (Debian package man-db)"
  fi
done

echo "1..$n"
[ $failed -eq 0 ]
