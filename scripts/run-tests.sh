#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
# Build policy-milter and run the whole test suite, as CI does:
#   1. install the Debian packages it needs (as root; skipped when present),
#   2. build with warnings as errors and run the unit and integration tests
#      (private Redis and Postfix instances on loopback, started by the tests),
#   3. build again with AddressSanitizer and UndefinedBehaviorSanitizer and
#      run every test again,
#   4. make distcheck (the release tarball builds and its unit tests pass).
# Steps 2 and 3 run side by side, part by part, and 4 after them (see
# below); within each build the tests run one at a time.  Ends with one line "N passed, N failed"; exits non-zero if
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
# make check in parts.  check_build DIR builds the test programs (a make
# check with no TESTS).  check_part DIR integration|others then runs that
# part of TESTS (as this build's Makefile has it, configure's choices
# applied), one test at a time, with its own suite log: "integration" is
# tests/integration/* (each starts its own Postfix, Redis and milter, and
# some measure reply times), "units" the unit tests (tests/check_*, some
# time Redis timeouts), "others" the rest (check_protocol, the package,
# systemd and fuzz tests).  Every test writes its .log and .trs as in a
# plain make check; the PASS/FAIL lines are shown, and the end of the log
# of each test that failed.
check_build() {
  make -C "$1" -j"$jobs" check TESTS= >"$1/check.out" 2>&1 || { cat "$1/check.out"; return 1; }
}
check_part() {  # check_part DIR PART [reverse]
  local dir=$1 part=$2 order=${3:-} t tests list=() rc
  # shellcheck disable=SC2016 # $(TESTS) is make's
  tests=$(printf 'pm-print-tests:\n\t@echo $(TESTS)\n' |
    make -s --no-print-directory -C "$dir" -f Makefile -f - pm-print-tests) || return 1
  for t in $tests; do
    case $part:$t in
    integration:tests/integration/*) list+=("$t") ;;
    units:tests/check_protocol) ;;
    units:tests/check_*) list+=("$t") ;;
    others:tests/check_protocol) list+=("$t") ;;
    others:tests/integration/* | others:tests/check_*) ;;
    others:*) list+=("$t") ;;
    esac
  done
  if [ "$order" = reverse ]; then
    for ((t = 0; t < ${#list[@]} / 2; t++)); do
      local x=${list[t]}
      list[t]=${list[${#list[@]} - 1 - t]}
      list[${#list[@]} - 1 - t]=$x
    done
  fi
  make -C "$dir" -j1 check TESTS="${list[*]}" TEST_SUITE_LOG="test-suite-$part.log" \
    >"$dir/check-$part.out" 2>&1
  rc=$?
  grep -E '^(PASS|FAIL|ERROR|XFAIL|XPASS|SKIP):|^# (TOTAL|PASS|FAIL|ERROR)' "$dir/check-$part.out"
  if [ $rc -ne 0 ]; then
    for t in "${list[@]}"; do
      grep -qE '^:test-result: (FAIL|ERROR)' "$dir/$t.trs" 2>/dev/null || continue
      echo "---- $dir/$t.log"; tail -n 60 "$dir/$t.log"
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

# The steps run side by side (see below) and write their reports to files,
# shown in order once all are done: build's in $reports/1, build-san's in 2,
# distcheck's in 3; a piece that fails leaves a file N.failed.  Meanwhile one
# line says when each piece ends and how long it took.
reports=$(mktemp -d "${TMPDIR:-/tmp}/pm-ci.XXXXXX") || exit 1
trap 'rm -rf "$reports"' EXIT
t0=$SECONDS
run() {  # run N LABEL COMMAND... : COMMAND's output to report N.LABEL
  local n=$1 label=$2 t=$SECONDS rc name; shift 2
  "$@" >"$reports/$n.$label" 2>&1
  rc=$?
  [ $rc = 0 ] || echo "$label" >>"$reports/$n.failed"
  case $n in 1) name="build " ;; 2) name="build-san " ;; *) name= ;; esac
  printf '  [%2d:%02d] %s%s: %s (%d s)\n' $(((SECONDS - t0) / 60)) $(((SECONDS - t0) % 60)) \
    "$name" "$label" "$([ $rc = 0 ] && echo "done" || echo "failed, exit $rc")" $((SECONDS - t))
  return $rc
}
report() {  # report N LABEL... : show step N's reports; a failed step counts
  local n=$1 label; shift
  for label in "$@"; do
    [ -f "$reports/$n.$label" ] && cat "$reports/$n.$label"
  done
  [ -f "$reports/$n.failed" ] && failed_steps=$((failed_steps + 1))
  return 0
}

if $quick; then
  step "build with -Werror, unit and integration tests"
  if configure_dir build && compile_dir build && check_build build; then
    rc=0
    for part in units others integration; do
      env_ports 1 check_part build $part || rc=1
    done
    [ $rc = 0 ] || failed_steps=$((failed_steps + 1))
  else
    failed_steps=$((failed_steps + 1))
  fi
else
  # First both builds are configured and compiled, side by side, test
  # programs included.  Then the unit tests of both, side by side, and
  # nothing else: some time Redis timeouts (100 ms, a few 0.5 s) and fail
  # when compilers or the integration scripts compete with them for the
  # CPU.  Then the integration scripts, the long part, mostly waiting (on
  # Postfix, Redis, Sentinel, timers): each build's one after the other,
  # the two builds side by side (the second in the reverse order).  Then
  # the other tests of both, side by side; then make distcheck alone.
  # Every test has its own temporary directory, Redis, Postfix and ports
  # (each build its own range), so that the streams share nothing.
  step "configure and build both, then the tests of both side by side"
  {
    run 1 configure configure_dir build && run 1 compile compile_dir build &&
      run 1 "test-programs" check_build build
  } &
  c1=$!
  {
    run 2 configure san configure_dir build-san \
      --enable-sanitizers --disable-fuzz CFLAGS="-O1 -g" &&
      run 2 compile san compile_dir build-san &&
      run 2 "test-programs" san check_build build-san
  } &
  c2=$!
  wait $c1; built1=$?
  wait $c2; built2=$?
  pids=()
  [ $built1 = 0 ] && { run 1 units env_ports 1 check_part build units & pids+=($!); }
  [ $built2 = 0 ] && { run 2 units env_ports 2 san check_part build-san units & pids+=($!); }
  [ ${#pids[@]} -gt 0 ] && wait "${pids[@]}"
  pids=()
  if [ $built1 = 0 ]; then
    run 1 integration env_ports 1 check_part build integration &
    pids+=($!)
  fi
  if [ $built2 = 0 ]; then
    # In the reverse order: the two streams do not run the same script
    # (the same timing checks) at the same time.
    run 2 integration env_ports 2 san check_part build-san integration reverse &
    pids+=($!)
  fi
  [ ${#pids[@]} -gt 0 ] && wait "${pids[@]}"
  # Then the other tests of both (the package build, fuzzing, the milter
  # protocol client), side by side, and make distcheck alone: its unit
  # tests time Redis timeouts too.
  pids=()
  [ $built1 = 0 ] && { run 1 others env_ports 1 check_part build others & pids+=($!); }
  [ $built2 = 0 ] && { run 2 others env_ports 2 san check_part build-san others & pids+=($!); }
  [ ${#pids[@]} -gt 0 ] && wait "${pids[@]}"
  if [ $built1 = 0 ]; then
    run 3 distcheck distcheck_build
  else
    echo "FAIL: distcheck (the first build failed)" >"$reports/3.distcheck"
  fi

  step "build with -Werror, unit and integration tests"
  report 1 configure compile test-programs units others integration
  step "build with AddressSanitizer + UBSan, unit and integration tests"
  report 2 configure compile test-programs units others integration
  step "make distcheck"
  cat "$reports/3.distcheck"
  grep -qx 'PASS: distcheck' "$reports/3.distcheck" && distcheck=pass || distcheck=fail
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
