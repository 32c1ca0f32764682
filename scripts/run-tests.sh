#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
# Build policy-milter and run the whole test suite, as CI does:
#   1. install the Debian packages it needs (as root; skipped when present),
#   2. build with warnings as errors and run the unit and integration tests
#      (private Redis and Postfix instances on loopback, started by the tests),
#   3. build again with AddressSanitizer and UndefinedBehaviorSanitizer and
#      run every test again,
#   4. make distcheck (the release tarball builds and its unit tests pass).
# Steps 2 and 3 run side by side, and 4 after 2 (see below); within each
# build the integration scripts run one at a time, the other tests beside
# them.  Ends with one line "N passed, N failed"; exits non-zero if
# anything failed.
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

# configure_dir DIR CONFIGURE-ARGS...: a fresh build directory, configured
# out of tree.  compile_dir DIR: make.  check_dir DIR: make check.  Each
# shows its output only when it fails.
configure_dir() {
  local dir=$1; shift
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && "$top/configure" -q "$@" >configure.out 2>&1) ||
    { cat "$dir/configure.out"; return 1; }
}
compile_dir() {
  make -C "$1" -j"$jobs" >"$1/build.out" 2>&1 || { cat "$1/build.out"; return 1; }
}
# check_dir DIR: make check, in two parts side by side.  The integration
# scripts (tests/integration/*) run one at a time, in the order of TESTS, as
# in a plain make check: each starts its own Postfix, Redis and milter, and
# some measure reply times.  Beside them, one at a time too, the other tests
# (unit tests, check_protocol, the package and fuzz tests).  Every test
# writes its .log and .trs as usual; each part has its own suite log.
check_dir() {
  local dir=$1 t tests serial=() others=() rc rc2 pid
  # TESTS as this build's Makefile has it (configure's choices applied).
  tests=$(printf 'pm-print-tests:\n\t@echo $(TESTS)\n' |
    make -s --no-print-directory -C "$dir" -f Makefile -f - pm-print-tests) || return 1
  for t in $tests; do
    case $t in
    tests/integration/*) serial+=("$t") ;;
    *) others+=("$t") ;;
    esac
  done
  # The test programs first (TESTS empty: nothing runs), so that the two
  # makes below find everything built.
  make -C "$dir" -j"$jobs" check TESTS= >"$dir/check.out" 2>&1 || { cat "$dir/check.out"; return 1; }
  make -C "$dir" -j1 check TESTS="${serial[*]}" TEST_SUITE_LOG=test-suite-integration.log \
    >"$dir/check-integration.out" 2>&1 &
  pid=$!
  make -C "$dir" -j1 check TESTS="${others[*]}" TEST_SUITE_LOG=test-suite-others.log \
    >"$dir/check-others.out" 2>&1
  rc=$?
  wait $pid
  rc2=$?
  [ $rc -eq 0 ] && rc=$rc2
  cat "$dir/check-others.out" "$dir/check-integration.out" >>"$dir/check.out"
  grep -E '^(PASS|FAIL|ERROR|XFAIL|XPASS|SKIP):|^# (TOTAL|PASS|FAIL|ERROR)' "$dir/check-others.out"
  grep -E '^(PASS|FAIL|ERROR|XFAIL|XPASS|SKIP):|^# (TOTAL|PASS|FAIL|ERROR)' "$dir/check-integration.out"
  if [ $rc -ne 0 ]; then
    for log in "$dir"/tests/*.log "$dir"/tests/integration/*.log "$dir"/tests/fuzz/*.log; do
      [ -f "$log" ] || continue
      grep -qE '^(FAIL|ERROR)' "${log%.log}.trs" 2>/dev/null || continue
      echo "---- $log"; tail -n 60 "$log"
    done
  fi
  return $rc
}

# The sanitizer build: its environment.  The fuzz targets carry ASan and
# UBSan already, and the package is the same: both ran in the first build.
san() {
  PM_SKIP_PACKAGE_TEST="it ran in the first build" PM_TTL_SENDERS=3000 \
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 "$@"
}

# The integration scripts' ports (tests/integration/lib.sh): each build
# its own range, below the kernel's for outgoing connections (32768-).
env_ports() {  # env_ports 1|2 COMMAND...
  PM_PORT_RANGE=$([ "$1" = 1 ] && echo 10000-14999 || echo 15000-19999) "${@:2}"
}

distcheck_build() {
  if make -C build -j"$jobs" distcheck \
      DISTCHECK_CONFIGURE_FLAGS="--disable-integration-tests --disable-fuzz" \
      >build/distcheck.out 2>&1; then
    echo "PASS: distcheck"
  else
    tail -n 40 build/distcheck.out
    echo "FAIL: distcheck"
    return 1
  fi
}

# Steps that run side by side write their report to a file (step N's in
# $reports/N, its exit status in $reports/N.rc), shown in order once all
# are done; meanwhile one line says when each piece ends and how long it took.
reports=$(mktemp -d "${TMPDIR:-/tmp}/pm-ci.XXXXXX") || exit 1
trap 'rm -rf "$reports"' EXIT
t0=$SECONDS
run() {  # run N LABEL COMMAND... : COMMAND's output to report N, its status to N.rc
  local n=$1 label=$2 t=$SECONDS rc; shift 2
  "$@" >>"$reports/$n" 2>&1
  rc=$?
  echo "$rc" >"$reports/$n.rc"
  printf '  [%3d:%02d] %s: %s (%d s)\n' $(((SECONDS - t0) / 60)) $(((SECONDS - t0) % 60)) \
    "$label" "$([ $rc = 0 ] && echo done || echo "failed, exit $rc")" $((SECONDS - t))
  return $rc
}
report() {  # report N : show step N's report; a failed step counts
  cat "$reports/$1"
  [ "$(cat "$reports/$1.rc" 2>/dev/null)" = 0 ] || failed_steps=$((failed_steps + 1))
}

if $quick; then
  step "build with -Werror, unit and integration tests"
  { configure_dir build && compile_dir build && env_ports 1 check_dir build; } ||
    failed_steps=$((failed_steps + 1))
else
  # Both builds are configured at once; the first is compiled; then its
  # tests run, and make distcheck after them, while the sanitizer build is
  # compiled and its tests run.  Every test has its own temporary
  # directory, Redis, Postfix and free ports, so the two do not meet.
  step "configure and build both, then run the tests of both side by side"
  run 1 "configure build" configure_dir build &
  c1=$!
  run 2 "configure build-san" san configure_dir build-san \
    --enable-sanitizers --disable-fuzz CFLAGS="-O1 -g" &
  c2=$!
  wait $c1; rc1=$?
  wait $c2; rc2=$?
  [ $rc1 = 0 ] && { run 1 "compile build" compile_dir build; rc1=$?; }
  pids=()
  if [ $rc1 = 0 ]; then
    { run 1 "tests of build" env_ports 1 check_dir build
      run 3 "make distcheck" distcheck_build; } &
    pids+=($!)
  else
    echo "FAIL: distcheck (the first build failed)" >"$reports/3"
  fi
  if [ $rc2 = 0 ]; then
    { run 2 "compile build-san" san compile_dir build-san &&
      run 2 "tests of build-san" env_ports 2 san check_dir build-san; } &
    pids+=($!)
  fi
  [ ${#pids[@]} -gt 0 ] && wait "${pids[@]}"

  step "build with -Werror, unit and integration tests"
  report 1
  step "build with AddressSanitizer + UBSan, unit and integration tests"
  report 2
  step "make distcheck"
  cat "$reports/3"
  grep -qx 'PASS: distcheck' "$reports/3" && distcheck=pass || distcheck=fail
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
