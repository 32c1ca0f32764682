/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_metrics - milter/metrics.c: histogram bucket maths, the Prometheus
 * text (HELP and TYPE before every family, cumulative buckets, _sum and
 * _count, label values escaped), decisions from the statistics totals, the
 * metrics setting's parser, and the store's error kinds and call times
 * against a Redis that is not there and a private one (tl_redis_start)
 * that answers with errors and stalls.
 *
 * Cases are tables run with tcase_add_loop_test; each failure message
 * starts with the case label.  Every test resets the metrics and the
 * statistics registry, so that none sees another's values.
 */
#include "config.h"

#include <check.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/metrics.h"
#include "milter/stats.h"
#include "milter/store_redis.h"
#include "tests/testlib.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static void
fresh(void)
{
	metrics_reset();
	stats_reset();
}

static char *
render(bool breaker)
{
	size_t len = 0;
	char *text = metrics_render(breaker, &len);

	ck_assert_msg(text != NULL, "metrics_render: NULL");
	ck_assert_msg(strlen(text) == len, "length %zu, strlen %zu", len, strlen(text));
	return text;
}

/* The value of the sample line that starts with "name{labels} " (or "name "). */
static const char *
sample(const char *text, const char *series)
{
	static char value[64];
	size_t n = strlen(series);

	for (const char *p = text; p != NULL && *p != '\0'; ) {
		const char *nl = strchr(p, '\n');
		if (strncmp(p, series, n) == 0 && p[n] == ' ') {
			size_t vlen = (size_t)((nl ? nl : p + strlen(p)) - (p + n + 1));
			snprintf(value, sizeof(value), "%.*s", (int)vlen, p + n + 1);
			return value;
		}
		p = nl ? nl + 1 : NULL;
	}
	return NULL;
}

static void
want_sample(const char *label, const char *text, const char *series, const char *want)
{
	const char *got = sample(text, series);

	ck_assert_msg(got != NULL, "%s: no sample %s in:\n%s", label, series, text);
	ck_assert_msg(strcmp(got, want) == 0, "%s: %s is %s, want %s", label, series,
	    got, want);
}

/* ---- bucket maths */

static const struct {
	const char *label;
	uint64_t ns;
	unsigned bucket;
} buckets[] = {
	{ "zero", 0, 0 },
	{ "1 ns", 1, 0 },
	{ "exactly 0.1 ms (le is <=)", 100000, 0 },
	{ "just over 0.1 ms", 100001, 1 },
	{ "exactly 0.25 ms", 250000, 1 },
	{ "0.3 ms", 300000, 2 },
	{ "exactly 1 ms", 1000000, 3 },
	{ "7 ms", 7000000, 6 },
	{ "exactly 1 s", 1000000000, 12 },
	{ "exactly 2.5 s", 2500000000ULL, 13 },
	{ "just over 2.5 s: +Inf", 2500000001ULL, 14 },
	{ "an hour: +Inf", 3600000000000ULL, 14 },
};

START_TEST(bucket_of)
{
	unsigned got = metrics_bucket(buckets[_i].ns);

	ck_assert_msg(got == buckets[_i].bucket, "%s: bucket %u, want %u",
	    buckets[_i].label, got, buckets[_i].bucket);
}
END_TEST

/* ---- histograms as rendered: cumulative buckets, _sum, _count */

START_TEST(histogram_lines)
{
	char *text;

	fresh();
	metrics_stage_observe(METRICS_STAGE_RCPT, 50000);        /* 0.05 ms */
	metrics_stage_observe(METRICS_STAGE_RCPT, 100000);       /* on the bound */
	metrics_stage_observe(METRICS_STAGE_RCPT, 100001);
	metrics_stage_observe(METRICS_STAGE_RCPT, 3000000000ULL); /* 3 s */
	metrics_stage_observe(METRICS_STAGE_EOM, 20000000);      /* 20 ms */
	metrics_redis_observe(400000);
	text = render(false);
#define R "policy_milter_stage_duration_seconds"
	want_sample("rcpt", text, R "_bucket{stage=\"rcpt\",le=\"0.0001\"}", "2");
	want_sample("rcpt", text, R "_bucket{stage=\"rcpt\",le=\"0.00025\"}", "3");
	want_sample("rcpt", text, R "_bucket{stage=\"rcpt\",le=\"1\"}", "3");
	want_sample("rcpt", text, R "_bucket{stage=\"rcpt\",le=\"2.5\"}", "3");
	want_sample("rcpt", text, R "_bucket{stage=\"rcpt\",le=\"+Inf\"}", "4");
	want_sample("rcpt", text, R "_count{stage=\"rcpt\"}", "4");
	want_sample("rcpt", text, R "_sum{stage=\"rcpt\"}", "3.000250001");
	want_sample("eom", text, R "_bucket{stage=\"eom\",le=\"0.01\"}", "0");
	want_sample("eom", text, R "_bucket{stage=\"eom\",le=\"0.025\"}", "1");
	want_sample("eom", text, R "_sum{stage=\"eom\"}", "0.020000000");
	want_sample("untouched stage", text, R "_count{stage=\"helo\"}", "0");
	want_sample("untouched stage", text, R "_sum{stage=\"helo\"}", "0.000000000");
#undef R
	want_sample("redis", text, "policy_milter_redis_duration_seconds_bucket{le=\"0.00025\"}", "0");
	want_sample("redis", text, "policy_milter_redis_duration_seconds_bucket{le=\"0.0005\"}", "1");
	want_sample("redis", text, "policy_milter_redis_duration_seconds_count", "1");
	want_sample("redis", text, "policy_milter_redis_duration_seconds_sum", "0.000400000");
	free(text);
}
END_TEST

/* ---- the exposition format, line by line */

START_TEST(format)
{
	static const char *const families[] = {
		"policy_milter_build_info gauge", "policy_milter_start_time_seconds gauge",
		"policy_milter_decisions_total counter", "policy_milter_checks_total counter",
		"policy_milter_policy_redis_failures_total counter",
		"policy_milter_sessions gauge",
		"policy_milter_stage_duration_seconds histogram",
		"policy_milter_redis_duration_seconds histogram",
		"policy_milter_redis_errors_total counter",
		"policy_milter_redis_breaker_open gauge",
		"policy_milter_config_reloads_total counter",
	};
	regex_t line_re;
	char typed[64] = "", *text, *save = NULL;
	int nfam = 0;

	fresh();
	stats_add(stats_get("p1"), STATS_REJECTED, 1);
	metrics_set_start_time(1700000000.25);
	text = render(false);
	/* name{label="value",...} value: values escaped, no spaces in names. */
	ck_assert(regcomp(&line_re, "^[a-z_]+(\\{([a-z_]+=\"([^\"\\\\]|\\\\.)*\",?)+\\})? "
	    "(-?[0-9]+(\\.[0-9]+)?|\\+Inf)$", REG_EXTENDED | REG_NOSUB) == 0);
	for (char *ln = strtok_r(text, "\n", &save); ln != NULL;
	    ln = strtok_r(NULL, "\n", &save)) {
		if (strncmp(ln, "# HELP ", 7) == 0)
			continue;
		if (strncmp(ln, "# TYPE ", 7) == 0) {
			ck_assert_msg(nfam < (int)NELEMS(families), "format: more families than "
			    "expected: %s", ln);
			ck_assert_msg(strcmp(ln + 7, families[nfam]) == 0, "format: family %d is "
			    "\"%s\", want \"%s\"", nfam, ln + 7, families[nfam]);
			snprintf(typed, sizeof(typed), "%.*s", (int)strcspn(ln + 7, " "), ln + 7);
			nfam++;
			continue;
		}
		ck_assert_msg(regexec(&line_re, ln, 0, NULL, 0) == 0, "format: bad line: %s", ln);
		ck_assert_msg(typed[0] != '\0' && strncmp(ln, typed, strlen(typed)) == 0,
		    "format: sample \"%s\" outside its family (last TYPE %s)", ln, typed);
	}
	ck_assert_msg(nfam == (int)NELEMS(families), "format: %d families, want %zu", nfam,
	    NELEMS(families));
	regfree(&line_re);
	free(text);
	fresh();
}
END_TEST

/* ---- label values: escaped, although they come from the configuration */

static const struct {
	const char *label;
	const char *policy;
	const char *escaped;
} escapes[] = {
	{ "plain", "per-sender", "per-sender" },
	{ "backslash", "a\\b", "a\\\\b" },
	{ "quote", "say \"hi\"", "say \\\"hi\\\"" },
	{ "newline", "two\nlines", "two\\nlines" },
	{ "all three", "\\\"\n", "\\\\\\\"\\n" },
};

START_TEST(escaping)
{
	char series[256], *text;

	fresh();
	stats_add(stats_get(escapes[_i].policy), STATS_TEMPFAILED, 3);
	text = render(false);
	snprintf(series, sizeof(series),
	    "policy_milter_decisions_total{policy=\"%s\",action=\"tempfail\"}",
	    escapes[_i].escaped);
	want_sample(escapes[_i].label, text, series, "3");
	free(text);
	fresh();
}
END_TEST

/* ---- decisions, checks, gauges and counters */

START_TEST(values)
{
	struct stats_entry *a, *b;
	char *text;

	fresh();
	a = stats_get("limit");
	b = stats_get("blocked");
	stats_add(a, STATS_CHECKED, 5);
	stats_add(a, STATS_ACCEPTED, 0);
	stats_add(a, STATS_REJECTED, 2);
	stats_add(a, STATS_REDIS_ERRORS, 1);
	stats_add(b, STATS_CHECKED, 2);
	stats_add(b, STATS_REJECTED, 2);
	stats_add(b, STATS_DRY_RUN, 4);
	stats_add(b, STATS_DISCARDED, 1);
	stats_add(b, STATS_QUARANTINED, 6);
	stats_add(b, STATS_ACCEPTED, 7);
	metrics_sessions_add(1);
	metrics_sessions_add(1);
	metrics_sessions_add(-1);
	metrics_reload(true);
	metrics_reload(true);
	metrics_reload(false);
	metrics_redis_error(METRICS_REDIS_TIMEOUT);
	metrics_redis_error(METRICS_REDIS_LATE);
	metrics_redis_error(METRICS_REDIS_LATE);
	metrics_set_start_time(1700000000.25);
	text = render(true);
#define D "policy_milter_decisions_total"
	want_sample("limit", text, D "{policy=\"limit\",action=\"reject\"}", "2");
	want_sample("limit", text, D "{policy=\"limit\",action=\"accept\"}", "0");
	want_sample("limit", text, D "{policy=\"limit\",action=\"dry_run\"}", "0");
	want_sample("blocked", text, D "{policy=\"blocked\",action=\"reject\"}", "2");
	want_sample("blocked", text, D "{policy=\"blocked\",action=\"accept\"}", "7");
	want_sample("blocked", text, D "{policy=\"blocked\",action=\"tempfail\"}", "0");
	want_sample("blocked", text, D "{policy=\"blocked\",action=\"discard\"}", "1");
	want_sample("blocked", text, D "{policy=\"blocked\",action=\"quarantine\"}", "6");
	want_sample("blocked", text, D "{policy=\"blocked\",action=\"dry_run\"}", "4");
#undef D
	want_sample("checks", text, "policy_milter_checks_total{policy=\"limit\"}", "5");
	want_sample("checks", text, "policy_milter_checks_total{policy=\"blocked\"}", "2");
	want_sample("policy redis failures", text,
	    "policy_milter_policy_redis_failures_total{policy=\"limit\"}", "1");
	want_sample("sessions", text, "policy_milter_sessions", "1");
	want_sample("reloads", text, "policy_milter_config_reloads_total{result=\"ok\"}", "2");
	want_sample("reloads", text, "policy_milter_config_reloads_total{result=\"failed\"}", "1");
	want_sample("redis errors", text, "policy_milter_redis_errors_total{kind=\"timeout\"}", "1");
	want_sample("redis errors", text, "policy_milter_redis_errors_total{kind=\"late\"}", "2");
	want_sample("redis errors", text, "policy_milter_redis_errors_total{kind=\"connect\"}", "0");
	want_sample("breaker", text, "policy_milter_redis_breaker_open", "1");
	want_sample("build", text, "policy_milter_build_info{version=\"" PACKAGE_VERSION "\"}", "1");
	want_sample("start", text, "policy_milter_start_time_seconds", "1700000000.250");
	free(text);
	/* Totals survive what resets the pending counts. */
	ck_assert_msg(stats_total(a, STATS_CHECKED) == 5 && stats_pending(a, STATS_CHECKED) == 5,
	    "totals: checked %llu", (unsigned long long)stats_total(a, STATS_CHECKED));
	text = render(false);
	want_sample("breaker closed", text, "policy_milter_redis_breaker_open", "0");
	free(text);
	fresh();
}
END_TEST

/* ---- the store: error kinds and call times, with no Redis there */

START_TEST(store_errors)
{
	struct store_options o = { .address = "unix:/nonexistent/pm-metrics.sock",
	    .connect_timeout_ms = 100, .timeout_ms = 100, .pool = 1 };
	const char *ping[1] = { "PING" };
	char err[256] = "", *text, want[32];
	struct store *st = store_new(&o, err, sizeof(err));

	fresh();
	ck_assert_msg(st != NULL, "store_new: %s", err);
	/* Three failed connects open the breaker; the next calls fail at once. */
	for (int i = 0; i < 5; i++)
		ck_assert_msg(store_command(st, 1, ping, NULL, err, sizeof(err)) == NULL,
		    "store errors: call %d answered", i);
	ck_assert_msg(store_is_down(st), "store errors: breaker not open");
	text = render(store_is_down(st));
	want_sample("connect", text, "policy_milter_redis_errors_total{kind=\"connect\"}", "3");
	want_sample("circuit open", text,
	    "policy_milter_redis_errors_total{kind=\"circuit_open\"}", "2");
	/* Timed: the calls that tried; not the ones the breaker refused. */
	snprintf(want, sizeof(want), "%d", 3);
	want_sample("timed", text, "policy_milter_redis_duration_seconds_count", want);
	want_sample("breaker", text, "policy_milter_redis_breaker_open", "1");
	free(text);
	store_free(st);
	fresh();
}
END_TEST

static void *
stall(void *arg)
{
	(void)arg;
	tl_redis_command("DEBUG SLEEP 2");
	return NULL;
}

START_TEST(store_kinds)
{
	static struct store_script late = {
		"return redis.error_reply('LATE the call reached Redis 5 ms late')", false, "", 0 };
	static struct store_script oops = { "return redis.error_reply('oops')", false, "", 0 };
	const char *ping[1] = { "PING" }, *nosuch[1] = { "NOSUCHCOMMAND" };
	struct timespec pause = { 0, 100 * 1000000L };
	char address[400], err[256] = "", ncalls[16], *text;
	bool timed_out = false;
	int calls = 4;
	struct store_options o = { .address = address, .connect_timeout_ms = 1000,
	    .timeout_ms = 100, .pool = 2 };
	struct store *st;
	redisReply *r;
	pthread_t th;

	snprintf(address, sizeof(address), "unix:%s", tl_redis_start());
	fresh();
	ck_assert_msg((st = store_new(&o, err, sizeof(err))) != NULL, "store_new: %s", err);
	r = store_command(st, 1, ping, NULL, err, sizeof(err));
	ck_assert_msg(r != NULL && r->type == REDIS_REPLY_STATUS, "kinds: PING: %s", err);
	store_reply_free(r);
	r = store_command(st, 1, nosuch, NULL, err, sizeof(err));
	ck_assert_msg(r != NULL && r->type == REDIS_REPLY_ERROR, "kinds: unknown command");
	store_reply_free(r);
	r = store_eval(st, &late, 0, NULL, NULL, 0, NULL, NULL, err, sizeof(err));
	ck_assert_msg(r != NULL && r->type == REDIS_REPLY_ERROR, "kinds: LATE: %s", err);
	store_reply_free(r);
	r = store_eval(st, &oops, 0, NULL, NULL, 0, NULL, NULL, err, sizeof(err));
	ck_assert_msg(r != NULL && r->type == REDIS_REPLY_ERROR, "kinds: oops: %s", err);
	store_reply_free(r);
	/* Redis busy for 2 s, the store waits 100 ms: PING until one times
	 * out (redis-cli may take a while to start on a loaded machine). */
	ck_assert_int_eq(pthread_create(&th, NULL, stall, NULL), 0);
	for (int k = 0; k < 40 && !timed_out; k++) {
		nanosleep(&pause, NULL);
		r = store_command(st, 1, ping, NULL, err, sizeof(err));
		calls++;
		timed_out = r == NULL;
		store_reply_free(r);
	}
	pthread_join(th, NULL);
	ck_assert_msg(timed_out, "kinds: no PING timed out during a 2 s stall");
	snprintf(ncalls, sizeof(ncalls), "%d", calls);
	text = render(false);
	want_sample("reply", text, "policy_milter_redis_errors_total{kind=\"reply\"}", "2");
	want_sample("late", text, "policy_milter_redis_errors_total{kind=\"late\"}", "1");
	want_sample("timeout", text, "policy_milter_redis_errors_total{kind=\"timeout\"}", "1");
	want_sample("io", text, "policy_milter_redis_errors_total{kind=\"io\"}", "0");
	want_sample("connect", text, "policy_milter_redis_errors_total{kind=\"connect\"}", "0");
	/* Each call timed once (a script's SCRIPT LOAD is part of its call). */
	want_sample("timed", text, "policy_milter_redis_duration_seconds_count", ncalls);
	/* The stalled call waited for the timeout (100 ms). */
	ck_assert_msg(atof(sample(text, "policy_milter_redis_duration_seconds_sum")) >= 0.1,
	    "kinds: the calls took %s s in all", sample(text,
	    "policy_milter_redis_duration_seconds_sum"));
	free(text);
	store_free(st);
	fresh();
}
END_TEST

/* ---- the metrics setting */

static const struct {
	const char *spec;
	bool ok;
	bool loopback;
	const char *why;           /* in the error, when not ok */
} specs[] = {
	{ "inet:9717@127.0.0.1", true, true, NULL },
	{ "inet:1@127.0.0.2", true, true, NULL },
	{ "inet:65535@192.0.2.1", true, false, NULL },
	{ "inet:9717@0.0.0.0", true, false, NULL },
	{ "inet6:9717@::1", true, true, NULL },
	{ "inet6:9717@[::1]", true, true, NULL },
	{ "inet6:9717@2001:db8::1", true, false, NULL },
	{ "inet6:9717@::", true, false, NULL },
	{ "inet:9717", false, false, "expected inet:PORT@ADDRESS" },
	{ "inet:9717@", false, false, "expected inet:PORT@ADDRESS" },
	{ "inet:0@127.0.0.1", false, false, "port of 1 to 65535" },
	{ "inet:65536@127.0.0.1", false, false, "port of 1 to 65535" },
	{ "inet:99999999999999999999@127.0.0.1", false, false, "port of 1 to 65535" },
	{ "inet:@127.0.0.1", false, false, "expected inet:PORT@ADDRESS" },
	{ "inet:9717@localhost", false, false, "\"localhost\" is not an IPv4 address" },
	{ "inet:9717@::1", false, false, "is not an IPv4 address (an IP literal, no "
	    "host name; inet6: for IPv6)" },
	{ "inet6:9717@127.0.0.1", false, false, "is not an IPv6 address" },
	{ "inet:127.0.0.1:9717", false, false, "expected inet:PORT@ADDRESS" },
	{ "unix:/run/metrics.sock", false, false, "expected \"inet:PORT@ADDRESS\"" },
	{ "9717", false, false, "expected \"inet:PORT@ADDRESS\"" },
	{ "", false, false, "expected \"inet:PORT@ADDRESS\"" },
};

START_TEST(parse_address)
{
	struct sockaddr_storage sa;
	socklen_t salen = 0;
	bool loopback = false;
	char why[256] = "";
	int rc = metrics_parse_address(specs[_i].spec, &sa, &salen, &loopback, why,
	    sizeof(why));

	ck_assert_msg((rc == 0) == specs[_i].ok, "\"%s\": rc %d (%s)", specs[_i].spec, rc,
	    why);
	if (specs[_i].ok) {
		ck_assert_msg(loopback == specs[_i].loopback, "\"%s\": loopback %d",
		    specs[_i].spec, loopback);
		ck_assert_msg(salen > 0, "\"%s\": no address length", specs[_i].spec);
	} else {
		ck_assert_msg(strstr(why, specs[_i].why) != NULL, "\"%s\": \"%s\" lacks "
		    "\"%s\"", specs[_i].spec, why, specs[_i].why);
	}
}
END_TEST

static Suite *
metrics_suite(void)
{
	Suite *s = suite_create("metrics");
	TCase *tc = tcase_create("metrics");

	tcase_set_timeout(tc, 20);
	tcase_add_loop_test(tc, bucket_of, 0, (int)NELEMS(buckets));
	tcase_add_test(tc, histogram_lines);
	tcase_add_test(tc, format);
	tcase_add_loop_test(tc, escaping, 0, (int)NELEMS(escapes));
	tcase_add_test(tc, values);
	tcase_add_test(tc, store_errors);
	tcase_add_test(tc, store_kinds);
	tcase_add_loop_test(tc, parse_address, 0, (int)NELEMS(specs));
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return tl_run(metrics_suite());
}
