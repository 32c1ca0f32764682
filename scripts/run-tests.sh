#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
# Build policy-milter and run the whole test suite, as CI does:
#   1. install the Debian packages it needs (as root; skipped when present),
#   2. build with warnings as errors and run the unit and integration tests
#      (private Redis and Postfix instances on loopback, started by the tests),
#   3. build again with AddressSanitizer and UndefinedBehaviorSanitizer and
#      run every test again,
#   4. make distcheck (the release tarball builds and its unit tests pass).
# Ends with one line "N passed, N failed"; exits non-zero if anything failed.
#
# Usage: scripts/run-tests.sh [--quick]   (--quick: step 2 only)
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
quick=false
[ "${1:-}" = "--quick" ] && quick=true
jobs=$(nproc 2>/dev/null || echo 2)
failed_steps=0

step() { printf '\n==== %s\n' "$*"; }

step "dependencies"
bash scripts/install-deps.sh || exit 1
# Here the Sendmail test must run: a missing Sendmail or namespace support
# fails it instead of skipping it.
export PM_REQUIRE_SENDMAIL=1

step "autoreconf"
autoreconf -fi >/dev/null 2>&1 || { autoreconf -fi; exit 1; }

# build DIR CONFIGURE-ARGS...: configure out of tree, build, run make check.
build_and_check() {
  local dir=$1; shift
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && "$top/configure" -q "$@" >configure.out 2>&1) ||
    { cat "$dir/configure.out"; return 1; }
  make -C "$dir" -j"$jobs" >"$dir/build.out" 2>&1 || { cat "$dir/build.out"; return 1; }
  make -C "$dir" -j1 check >"$dir/check.out" 2>&1
  local rc=$?
  grep -E '^(PASS|FAIL|ERROR|XFAIL|XPASS|SKIP):|^# (TOTAL|PASS|FAIL|ERROR)' "$dir/check.out"
  if [ $rc -ne 0 ]; then
    for log in "$dir"/tests/*.log "$dir"/tests/integration/*.log "$dir"/tests/fuzz/*.log; do
      [ -f "$log" ] || continue
      grep -qE '^(FAIL|ERROR)' "${log%.log}.trs" 2>/dev/null || continue
      echo "---- $log"; tail -n 60 "$log"
    done
  fi
  return $rc
}

step "build with -Werror, unit and integration tests"
build_and_check build || failed_steps=$((failed_steps + 1))

if ! $quick; then
  step "build with AddressSanitizer + UBSan, unit and integration tests"
  # The fuzz targets carry ASan and UBSan already, and the package is
  # the same: both ran in the first build.
  PM_SKIP_PACKAGE_TEST="it ran in the first build" PM_TTL_SENDERS=3000 \
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    build_and_check build-san --enable-sanitizers --disable-fuzz CFLAGS="-O1 -g" ||
    failed_steps=$((failed_steps + 1))

  step "make distcheck"
  if make -C build -j"$jobs" distcheck \
      DISTCHECK_CONFIGURE_FLAGS="--disable-integration-tests --disable-fuzz" \
      >build/distcheck.out 2>&1; then
    echo "PASS: distcheck"
    distcheck=pass
  else
    tail -n 40 build/distcheck.out
    echo "FAIL: distcheck"
    distcheck=fail
  fi
fi

# Count individual checks: Check prints "Checks: N, Failures: F, Errors: E";
# the integration scripts and tests/fuzz/run.sh print TAP "ok"/"not ok" lines.
passed=0 failed=0
for log in build/tests/*.log build/tests/integration/*.log build/tests/fuzz/*.log \
           build-san/tests/*.log build-san/tests/integration/*.log \
           build-san/tests/fuzz/*.log; do
  [ -f "$log" ] || continue
  read -r p f < <(awk '
    /Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+/ {
      match($0, /Checks: [0-9]+/);   c = substr($0, RSTART + 8, RLENGTH - 8)
      match($0, /Failures: [0-9]+/); x = substr($0, RSTART + 10, RLENGTH - 10)
      match($0, /Errors: [0-9]+/);   e = substr($0, RSTART + 8, RLENGTH - 8)
      p += c - x - e; f += x + e }
    /^ok [0-9]/ { p++ }
    /^not ok [0-9]/ { f++ }
    END { print p + 0, f + 0 }' "$log")
  # A test program that crashed before printing its summary still failed.
  if [ "$p" -eq 0 ] && [ "$f" -eq 0 ] && grep -qE '^:test-result: (FAIL|ERROR)' "${log%.log}.trs" 2>/dev/null; then
    f=1
  fi
  passed=$((passed + p)); failed=$((failed + f))
done
if ! $quick; then
  if [ "$distcheck" = pass ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
fi
[ $failed_steps -gt 0 ] && [ $failed -eq 0 ] && failed=$failed_steps

echo
echo "$passed passed, $failed failed"
[ $failed -eq 0 ] && [ $failed_steps -eq 0 ]
