/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_units - unit tests of milter/units: durations and sizes as the
 * configuration writes them, parsed with overflow checks, and formatted
 * back for replies and messages.
 *
 * Every group of cases is a table {label, input, want} run with
 * tcase_add_loop_test; each failure message starts with the case label.
 * Invalid inputs also name a substring of the reason the parser gives,
 * since that reason is what an operator reads after "file:line:".
 */
#include "config.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/units.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- durations */

static const struct {
	const char *label;
	const char *in;
	uint64_t want;                 /* milliseconds */
} good_durations[] = {
	{ "bare zero is seconds", "0", 0 },
	{ "bare number is seconds", "30", 30000 },
	{ "leading zeros", "007s", 7000 },
	{ "zero ms", "0ms", 0 },
	{ "milliseconds", "200ms", 200 },
	{ "seconds", "10s", 10000 },
	{ "minutes", "10m", 600000 },
	{ "hours", "1h", 3600000 },
	{ "days", "2d", 172800000 },
	{ "largest ms", "18446744073709551615ms", UINT64_MAX },
	{ "largest s", "18446744073709551s", 18446744073709551000ULL },
	{ "largest d", "213503982334d", 213503982334ULL * 86400000ULL },
};

static const struct {
	const char *label;
	const char *in;
	const char *why;               /* substring of the reason */
} bad_durations[] = {
	{ "empty", "", "must start with a number" },
	{ "negative", "-1", "must start with a number" },
	{ "plus sign", "+5s", "must start with a number" },
	{ "leading space", " 5s", "must start with a number" },
	{ "unit only", "ms", "must start with a number" },
	{ "decimal", "1.5m", "unknown unit \".5m\"" },
	{ "space before unit", "10 ms", "unknown unit \" ms\"" },
	{ "trailing space", "5s ", "unknown unit \"s \"" },
	{ "uppercase H", "1H", "unknown unit \"H\"" },
	{ "uppercase S", "5S", "unknown unit \"S\"" },
	{ "uppercase M", "1M", "unknown unit \"M\"" },
	{ "word unit", "5sec", "unknown unit \"sec\"" },
	{ "size unit", "5K", "unknown unit \"K\"" },
	{ "digits overflow", "99999999999999999999s", "is too large" },
	{ "2^64 ms", "18446744073709551616ms", "is too large" },
	{ "bare max is seconds", "18446744073709551615", "is too large" },
	{ "seconds overflow", "18446744073709552s", "is too large" },
	{ "days overflow", "213503982335d", "is too large" },
};

START_TEST(duration_good)
{
	const char *label = good_durations[_i].label;
	char why[256] = "";
	uint64_t ms = 12345;

	ck_assert_msg(units_duration_ms(good_durations[_i].in, &ms, why, sizeof(why)) == 0,
	    "%s: \"%s\" refused: %s", label, good_durations[_i].in, why);
	ck_assert_msg(ms == good_durations[_i].want, "%s: \"%s\" gave %llu, want %llu",
	    label, good_durations[_i].in, (unsigned long long)ms,
	    (unsigned long long)good_durations[_i].want);
}
END_TEST

START_TEST(duration_bad)
{
	const char *label = bad_durations[_i].label;
	char why[256] = "";
	uint64_t ms = 0;

	ck_assert_msg(units_duration_ms(bad_durations[_i].in, &ms, why, sizeof(why)) == -1,
	    "%s: \"%s\" accepted as %llu ms", label, bad_durations[_i].in,
	    (unsigned long long)ms);
	ck_assert_msg(strstr(why, bad_durations[_i].why) != NULL,
	    "%s: reason \"%s\" lacks \"%s\"", label, why, bad_durations[_i].why);
	ck_assert_msg(strstr(why, "units: ms, s, m, h, d") != NULL ||
	    strstr(why, "too large") != NULL,
	    "%s: reason \"%s\" does not say what would be right", label, why);
}
END_TEST

START_TEST(duration_null)
{
	char why[256] = "";
	uint64_t ms = 0;

	ck_assert_msg(units_duration_ms(NULL, &ms, why, sizeof(why)) == -1,
	    "NULL duration accepted");
	ck_assert_msg(strstr(why, "must start with a number") != NULL,
	    "NULL duration: reason \"%s\"", why);
}
END_TEST

/* ---- sizes */

static const struct {
	const char *label;
	const char *in;
	uint64_t want;
} good_sizes[] = {
	{ "zero", "0", 0 },
	{ "bare is bytes", "1", 1 },
	{ "bare 1024", "1024", 1024 },
	{ "one K", "1K", 1024 },
	{ "25M", "25M", 25ULL * 1024 * 1024 },
	{ "2G", "2G", 2ULL * 1024 * 1024 * 1024 },
	{ "largest bytes", "18446744073709551615", UINT64_MAX },
	{ "largest K", "18014398509481983K", 18446744073709550592ULL },
	{ "largest G", "17179869183G", 18446744072635809792ULL },
};

static const struct {
	const char *label;
	const char *in;
	const char *why;
} bad_sizes[] = {
	{ "empty", "", "must start with a number" },
	{ "negative", "-1", "must start with a number" },
	{ "unit only", "K", "must start with a number" },
	{ "hex", "0x10", "unknown unit \"x10\"" },
	{ "decimal", "1.5M", "unknown unit \".5M\"" },
	{ "space before unit", "25 M", "unknown unit \" M\"" },
	{ "lowercase k", "1k", "unknown unit \"k\"" },
	{ "lowercase m", "25m", "unknown unit \"m\"" },
	{ "MB", "25MB", "unknown unit \"MB\"" },
	{ "terabytes", "1T", "unknown unit \"T\"" },
	{ "max K overflows", "18446744073709551615K", "is too large" },
	{ "2^54 K", "18014398509481984K", "is too large" },
	{ "2^34 G", "17179869184G", "is too large" },
	{ "2^64 bytes", "18446744073709551616", "is too large" },
	{ "digits overflow", "99999999999999999999", "is too large" },
};

START_TEST(size_good)
{
	const char *label = good_sizes[_i].label;
	char why[256] = "";
	uint64_t n = 12345;

	ck_assert_msg(units_size(good_sizes[_i].in, &n, why, sizeof(why)) == 0,
	    "%s: \"%s\" refused: %s", label, good_sizes[_i].in, why);
	ck_assert_msg(n == good_sizes[_i].want, "%s: \"%s\" gave %llu, want %llu",
	    label, good_sizes[_i].in, (unsigned long long)n,
	    (unsigned long long)good_sizes[_i].want);
}
END_TEST

START_TEST(size_bad)
{
	const char *label = bad_sizes[_i].label;
	char why[256] = "";
	uint64_t n = 0;

	ck_assert_msg(units_size(bad_sizes[_i].in, &n, why, sizeof(why)) == -1,
	    "%s: \"%s\" accepted as %llu bytes", label, bad_sizes[_i].in,
	    (unsigned long long)n);
	ck_assert_msg(strstr(why, bad_sizes[_i].why) != NULL,
	    "%s: reason \"%s\" lacks \"%s\"", label, why, bad_sizes[_i].why);
}
END_TEST

/* ---- formatting */

static const struct {
	const char *label;
	uint64_t ms;
	const char *want;
} format_durations[] = {
	{ "zero", 0, "0s" },
	{ "1 ms rounds up", 1, "1s" },
	{ "999 ms", 999, "1s" },
	{ "one second", 1000, "1s" },
	{ "1.5 s rounds up", 1500, "2s" },
	{ "37 s", 37000, "37s" },
	{ "90 s stays seconds", 90000, "90s" },
	{ "just under 2 min", 119999, "120s" },
	{ "2 min", 120000, "2m" },
	{ "230 s rounds up", 230000, "4m" },
	{ "10 min", 600000, "10m" },
	{ "1 h stays minutes", 3600000, "60m" },
	{ "just under 2 h", 7199999, "120m" },
	{ "2 h", 7200000, "2h" },
	{ "1 day stays hours", 86400000, "24h" },
	{ "2 days", 172800000, "2d" },
	{ "2 days and 1 ms", 172800001, "3d" },
	/* Rounding up must not wrap past 2^64 into a small number. */
	{ "largest", UINT64_MAX, "213503982335d" },
};

START_TEST(format_duration)
{
	const char *label = format_durations[_i].label;
	char buf[64];

	memset(buf, 'x', sizeof(buf));
	units_format_duration(format_durations[_i].ms, buf, sizeof(buf));
	ck_assert_msg(strcmp(buf, format_durations[_i].want) == 0,
	    "%s: %llu ms formatted \"%.63s\", want \"%s\"", label,
	    (unsigned long long)format_durations[_i].ms, buf, format_durations[_i].want);
}
END_TEST

static const struct {
	const char *label;
	uint64_t bytes;
	const char *want;
} format_sizes[] = {
	{ "zero", 0, "0" },
	{ "one", 1, "1" },
	{ "1023", 1023, "1023" },
	{ "1K", 1024, "1K" },
	{ "1025", 1025, "1025" },
	{ "1.5K stays bytes", 1536, "1536" },
	{ "1M", 1024 * 1024, "1M" },
	{ "25M", 25ULL * 1024 * 1024, "25M" },
	{ "1G", 1024ULL * 1024 * 1024, "1G" },
	{ "3G", 3ULL * 1024 * 1024 * 1024, "3G" },
	{ "1G + 1K", 1024ULL * 1024 * 1024 + 1024, "1048577K" },
	{ "1G + 1", 1024ULL * 1024 * 1024 + 1, "1073741825" },
	{ "largest G", 18446744072635809792ULL, "17179869183G" },
	{ "largest", UINT64_MAX, "18446744073709551615" },
};

/* A formatted size also reads back as the same number of bytes. */
START_TEST(format_size)
{
	const char *label = format_sizes[_i].label;
	char buf[64], why[256] = "";
	uint64_t back = 0;

	units_format_size(format_sizes[_i].bytes, buf, sizeof(buf));
	ck_assert_msg(strcmp(buf, format_sizes[_i].want) == 0,
	    "%s: %llu bytes formatted \"%s\", want \"%s\"", label,
	    (unsigned long long)format_sizes[_i].bytes, buf, format_sizes[_i].want);
	ck_assert_msg(units_size(buf, &back, why, sizeof(why)) == 0,
	    "%s: \"%s\" does not parse back: %s", label, buf, why);
	ck_assert_msg(back == format_sizes[_i].bytes, "%s: \"%s\" parses back as %llu",
	    label, buf, (unsigned long long)back);
}
END_TEST

START_TEST(format_truncates)
{
	char buf[4];

	units_format_duration(119999, buf, sizeof(buf));
	ck_assert_msg(strcmp(buf, "120") == 0, "short buffer duration: \"%s\"", buf);
	units_format_size(1025, buf, sizeof(buf));
	ck_assert_msg(strcmp(buf, "102") == 0, "short buffer size: \"%s\"", buf);
}
END_TEST

static Suite *
units_suite(void)
{
	Suite *s = suite_create("units");
	TCase *tc;

	tc = tcase_create("durations");
	tcase_add_loop_test(tc, duration_good, 0, (int)NELEMS(good_durations));
	tcase_add_loop_test(tc, duration_bad, 0, (int)NELEMS(bad_durations));
	tcase_add_test(tc, duration_null);
	suite_add_tcase(s, tc);

	tc = tcase_create("sizes");
	tcase_add_loop_test(tc, size_good, 0, (int)NELEMS(good_sizes));
	tcase_add_loop_test(tc, size_bad, 0, (int)NELEMS(bad_sizes));
	suite_add_tcase(s, tc);

	tc = tcase_create("format");
	tcase_add_loop_test(tc, format_duration, 0, (int)NELEMS(format_durations));
	tcase_add_loop_test(tc, format_size, 0, (int)NELEMS(format_sizes));
	tcase_add_test(tc, format_truncates);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(units_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
