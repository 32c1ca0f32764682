#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
#
# run.sh - run every libFuzzer target for FUZZ_SECONDS (default 5) from its
# seed corpus, printing TAP: "ok N - fuzz_config 5 s, 12345 runs (2469/s)"
# or "not ok N - ..." with the end of the fuzzer's output and the input that
# failed.  Exit 0 when every target ran clean, 1 if not, 77 (skipped) when
# configure found no clang that builds libFuzzer targets.
#
# make check runs it as a test (a few seconds per target); `make fuzz`
# builds the targets and runs it with FUZZ_SECONDS=60.  Seeds are read from
# $top_srcdir/tests/fuzz/corpus/<target> and never written: what a run
# finds goes to $top_builddir/tests/fuzz/work/<target>/ (the fuzzer's log,
# crash-* files, new inputs).  With FUZZ_RESUME=1 (make fuzz) the new inputs
# are kept in corpus/ there and the next run starts from them too (make
# fuzz-clean forgets them); otherwise each run starts from the seeds alone,
# so that a short run spends its seconds fuzzing, not replaying.
# A dictionary tests/fuzz/<target>.dict (words the mutations insert) is used
# when there is one.  The targets are those with a corpus directory (every
# target needs one);
# FUZZ_TARGETS="fuzz_reply fuzz_matcher" runs only those.
set -u

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
seconds=${FUZZ_SECONDS:-5}
targets=${FUZZ_TARGETS:-$(cd "$top_srcdir/tests/fuzz/corpus" && ls -d fuzz_*)}

if [ -z "${PM_FUZZ_CC:-}" ]; then
	echo "1..0 # SKIP configure found no clang that builds libFuzzer targets" \
		"(Debian packages clang and libclang-rt-14-dev)"
	exit 77
fi

n=0
failed=0
for t in $targets; do
	n=$((n + 1))
	bin=$top_builddir/tests/fuzz/$t
	seeds=$top_srcdir/tests/fuzz/corpus/$t
	work=$top_builddir/tests/fuzz/work/$t
	if [ ! -x "$bin" ]; then
		printf 'not ok %d - %s: %s not built (make fuzz builds it)\n' "$n" "$t" "$bin"
		failed=$((failed + 1))
		continue
	fi
	if [ ! -d "$seeds" ] || [ -z "$(ls -A "$seeds")" ]; then
		printf 'not ok %d - %s: no seeds in %s\n' "$n" "$t" "$seeds"
		failed=$((failed + 1))
		continue
	fi
	if [ "${FUZZ_RESUME:-0}" = 1 ]; then
		corpus=$work/corpus
	else
		corpus=$work/new
		rm -rf "$corpus"
	fi
	mkdir -p "$corpus"
	rm -f "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*
	dict=()
	[ -f "$top_srcdir/tests/fuzz/$t.dict" ] && dict=(-dict="$top_srcdir/tests/fuzz/$t.dict")
	# New inputs go to the first directory; the seeds are only read.
	"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$work/" "${dict[@]}" \
		"$corpus" "$seeds" >"$work/fuzz.log" 2>&1
	rc=$?
	runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$work/fuzz.log" | tail -n 1)
	rate=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log" | tail -n 1)
	secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$work/fuzz.log" | tail -n 1)
	per=""
	if [ -n "$rate" ] && [ -n "$secs" ] && [ "$secs" -gt 0 ]; then
		per=" ($((rate / secs))/s)"
	fi
	if [ $rc -eq 0 ] && [ -n "$runs" ]; then
		printf 'ok %d - %s %s s, %s runs%s\n' "$n" "$t" "${secs:-$seconds}" "$runs" "$per"
	else
		printf 'not ok %d - %s %s s: exit %d\n' "$n" "$t" "$seconds" "$rc"
		failed=$((failed + 1))
		tail -n 40 "$work/fuzz.log" | sed 's/^/# /'
		for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
			[ -f "$a" ] && printf '# input: %s (replay: %s %s)\n' "$a" "$bin" "$a"
		done
	fi
done
printf '1..%d\n' "$n"
[ $failed -eq 0 ]
