/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_stats - the statistics flush (milter/stats.c) against a private
 * Redis: counts arrive once, also when a flush timed out while Redis was
 * stalled and ran its commands afterwards, and they wait in memory while
 * Redis is away.  Redis is read back through redis-cli (tl_redis_command).
 */
#include "config.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "milter/stats.h"
#include "milter/store_redis.h"
#include "tests/testlib.h"

static char address[400];

static struct store *
open_store(unsigned timeout_ms)
{
	struct store_options o = {
		.address = address, .connect_timeout_ms = 1000,
		.timeout_ms = timeout_ms, .pool = 2,
	};
	char err[256] = "";
	struct store *st = store_new(&o, err, sizeof(err));

	ck_assert_msg(st != NULL, "store_new: %s", err);
	return st;
}

static long
hget(const char *key, const char *field)
{
	return atol(tl_redis_command("HGET %s %s", key, field));
}

START_TEST(test_flush_once)
{
	struct store *st = open_store(1000);
	struct stats_entry *e = stats_get("once");
	char err[256] = "";

	stats_add(e, STATS_CHECKED, 3);
	stats_add(e, STATS_REJECTED, 2);
	ck_assert_msg(stats_flush(st, "st1:", err, sizeof(err)) == 0, "flush: %s", err);
	ck_assert_int_eq(hget("st1:stats:once", "checked"), 3);
	ck_assert_int_eq(hget("st1:stats:once", "rejected"), 2);
	ck_assert_msg(stats_pending(e, STATS_CHECKED) == 0, "counts still pending");
	/* Nothing new: nothing sent, nothing doubled. */
	ck_assert_msg(stats_flush(st, "st1:", err, sizeof(err)) == 0, "flush: %s", err);
	ck_assert_int_eq(hget("st1:stats:once", "checked"), 3);
	stats_add(e, STATS_CHECKED, 1);
	ck_assert_msg(stats_flush(st, "st1:", err, sizeof(err)) == 0, "flush: %s", err);
	ck_assert_int_eq(hget("st1:stats:once", "checked"), 4);
	store_free(st);
	stats_reset();
}
END_TEST

static void *
stall(void *arg)
{
	(void)arg;
	tl_redis_command("DEBUG SLEEP 1");
	return NULL;
}

/*
 * The flush times out while Redis sleeps; Redis runs it when it wakes up.
 * The next flush sends the same counts again: they must count once.
 */
START_TEST(test_flush_after_stall)
{
	struct store *st = open_store(100);
	struct stats_entry *e = stats_get("stall");
	struct timespec pause = { 0, 300 * 1000000L }, rest = { 1, 0 };
	char err[256] = "";
	pthread_t th;

	stats_add(e, STATS_CHECKED, 1);
	ck_assert_msg(stats_flush(st, "st2:", err, sizeof(err)) == 0, "warm-up: %s", err);
	stats_add(e, STATS_CHECKED, 5);
	ck_assert_int_eq(pthread_create(&th, NULL, stall, NULL), 0);
	nanosleep(&pause, NULL);
	ck_assert_msg(stats_flush(st, "st2:", err, sizeof(err)) != 0,
	    "a flush during a 1 s stall succeeded with timeout 100 ms");
	pthread_join(th, NULL);
	nanosleep(&rest, NULL);
	/* Redis ran the timed-out flush by now; the retry must not add again. */
	stats_add(e, STATS_CHECKED, 10);
	ck_assert_msg(stats_flush(st, "st2:", err, sizeof(err)) == 0, "retry: %s", err);
	ck_assert_msg(stats_flush(st, "st2:", err, sizeof(err)) == 0, "next: %s", err);
	ck_assert_int_eq(hget("st2:stats:stall", "checked"), 16);
	store_free(st);
	stats_reset();
}
END_TEST

/* Redis away: the counts wait, then arrive once. */
START_TEST(test_flush_redis_down)
{
	struct store_options o = {
		.address = "unix:/nonexistent/redis.sock", .connect_timeout_ms = 100,
		.timeout_ms = 100, .pool = 1,
	};
	char err[256] = "";
	struct store *down = store_new(&o, err, sizeof(err)), *st = open_store(1000);
	struct stats_entry *e = stats_get("down");

	ck_assert(down != NULL);
	stats_add(e, STATS_TEMPFAILED, 7);
	ck_assert_msg(stats_flush(down, "st3:", err, sizeof(err)) != 0, "flush to nowhere");
	ck_assert_msg(stats_flush(down, "st3:", err, sizeof(err)) != 0, "again");
	stats_add(e, STATS_TEMPFAILED, 1);
	ck_assert_msg(stats_flush(st, "st3:", err, sizeof(err)) == 0, "flush: %s", err);
	ck_assert_msg(stats_flush(st, "st3:", err, sizeof(err)) == 0, "flush: %s", err);
	ck_assert_int_eq(hget("st3:stats:down", "tempfailed"), 8);
	store_free(down);
	store_free(st);
	stats_reset();
}
END_TEST

static Suite *
stats_suite(void)
{
	Suite *s = suite_create("stats");
	TCase *tc = tcase_create("flush");

	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_flush_once);
	tcase_add_test(tc, test_flush_after_stall);
	tcase_add_test(tc, test_flush_redis_down);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	snprintf(address, sizeof(address), "unix:%s", tl_redis_start());
	return tl_run(stats_suite());
}
