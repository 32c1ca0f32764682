/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_limiter - unit tests of the rate-limit script (milter/limiter.c)
 * against a private Redis: boundaries, all or nothing across checks,
 * give-backs, windows of 1 s and 30 d, sliding (not fixed) windows, removal
 * of stale buckets, exactness under concurrency and binary-safe keys; per-key
 * overrides, the bounded record of refusals, peek calls that change nothing
 * (DEBUG DIGEST-VALUE and PEXPIRETIME of every key before and after), and
 * the names limiter_keys and limiter_counter_key make.
 *
 * main() starts the Redis (tests/testlib) before any test runs, so that
 * Check's forked children share it.  Every case writes keys of its own,
 * "lim:<test>:<case>..." (the newer ones "lim:rl:<policy>:<key>" and the
 * policy's "lim:override:", "lim:top:", "lim:topn:<policy>").  What Redis
 * holds is read back through redis-cli (tl_redis_command) with small Lua
 * snippets built on HGETALL, HGET and PTTL, or plain commands, never through
 * the code under test.  Cases that wait for a window to pass
 * use windows of 1 and 2 s, so the whole program runs in a few seconds.
 *
 * Cases are tables run with tcase_add_loop_test; each failure message starts
 * with the case label.  The store is made by a checked fixture and freed by
 * its teardown, also after a failed assertion (with CK_FORK=no).
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "milter/limiter.h"
#include "milter/store_redis.h"
#include "tests/testlib.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))
#define SEC		1000ULL
#define MIN		(60 * SEC)
#define DAY		(86400 * SEC)
#define HUGE_LIMIT	1000000000ULL
#define TTL_SLACK	300	/* ms between a reservation and our PTTL */

/* A string literal with its length, NULs included. */
#define BYTES(s)	s, sizeof(s) - 1

static char address[400];
static struct store *st;

static void
setup(void)
{
	struct store_options o = {
		.address = address, .connect_timeout_ms = 1000,
		.timeout_ms = 5000, .pool = 8,
	};
	char err[256] = "";

	st = store_new(&o, err, sizeof(err));
	ck_assert_msg(st != NULL, "setup: store_new(%s): %s", address, err);
}

static void
teardown(void)
{
	store_free(st);
	st = NULL;
}

/* ---- time */

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(int64_t ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = (time_t)(ms / 1000);
	ts.tv_nsec = (long)(ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* Redis's clock in ms, the one the script uses. */
static int64_t
redis_now_ms(const char *label)
{
	const char *out = tl_redis_command("EVAL 'local t = redis.call(\"TIME\") "
	    "return t[1] * 1000 + math.floor(t[2] / 1000)' 0");
	long long v = 0;

	ck_assert_msg(sscanf(out, "%lld", &v) == 1 && v > 0,
	    "%s: Redis TIME: \"%s\"", label, out);
	return v;
}

/* ---- reading Redis independently (redis-cli + Lua) */

/* Bytes as a double-quoted Lua literal of decimal escapes: binary safe. */
static void
lua_quote(char *buf, size_t size, const char *s, size_t len)
{
	size_t n = 0;

	ck_assert_msg(len * 4 + 3 <= size, "lua_quote: key too long");
	buf[n++] = '"';
	for (size_t i = 0; i < len; i++)
		n += (size_t)snprintf(buf + n, size - n, "\\%03u",
		    (unsigned)(unsigned char)s[i]);
	buf[n++] = '"';
	buf[n] = '\0';
}

struct hash {
	int exists;
	long long fields;
	long long sum;		/* of the numeric values */
	long long min;		/* smallest value (0 when none) */
	long long bad;		/* values that are not numbers */
	long long pttl;		/* PTTL: -2 no key, -1 no TTL */
};

static struct hash
inspect(const char *label, const char *key, size_t len)
{
	char k[4 * 200 + 3];
	struct hash h;
	const char *out;

	lua_quote(k, sizeof(k), key, len);
	out = tl_redis_command("EVAL 'local k = %s "
	    "local a = redis.call(\"HGETALL\", k) "
	    "local s, m, bad = 0, nil, 0 "
	    "for i = 2, #a, 2 do local v = tonumber(a[i]) "
	    "if v == nil then bad = bad + 1 else s = s + v "
	    "if m == nil or v < m then m = v end end end "
	    "return redis.call(\"EXISTS\", k) .. \" \" .. #a / 2 .. \" \" .. s "
	    ".. \" \" .. (m or 0) .. \" \" .. bad .. \" \" .. "
	    "redis.call(\"PTTL\", k)' 0", k);
	ck_assert_msg(sscanf(out, "%d %lld %lld %lld %lld %lld", &h.exists,
	    &h.fields, &h.sum, &h.min, &h.bad, &h.pttl) == 6,
	    "%s: reading the hash: \"%s\"", label, out);
	return h;
}

/* A field's value, or -1 when the field (or the key) does not exist. */
static long long
hget(const char *label, const char *key, size_t len, int64_t field)
{
	char k[4 * 200 + 3];
	const char *out;
	long long v = 0;

	lua_quote(k, sizeof(k), key, len);
	out = tl_redis_command("EVAL 'return redis.call(\"HGET\", %s, "
	    "\"%" PRId64 "\") or \"-1\"' 0", k, field);
	ck_assert_msg(sscanf(out, "%lld", &v) == 1,
	    "%s: HGET %" PRId64 ": \"%s\"", label, field, out);
	return v;
}

static long long
count_keys(const char *label, const char *pattern)
{
	const char *out = tl_redis_command("EVAL 'return #redis.call(\"KEYS\", "
	    "\"%s\")' 0", pattern);
	long long v = -1;

	ck_assert_msg(sscanf(out, "%lld", &v) == 1,
	    "%s: KEYS %s: \"%s\"", label, pattern, out);
	return v;
}

/* The hash holds want units in total, none negative or zero, with a TTL. */
static void
assert_units(const char *label, const char *what, const char *key, size_t len,
    long long want, uint64_t max_ttl)
{
	struct hash h = inspect(label, key, len);

	ck_assert_msg(h.bad == 0, "%s: %s: %lld non-numeric values", label,
	    what, h.bad);
	ck_assert_msg(h.sum == want, "%s: %s holds %lld units, expected %lld",
	    label, what, h.sum, want);
	if (want == 0) {
		ck_assert_msg(!h.exists, "%s: %s exists with no units (%lld "
		    "fields)", label, what, h.fields);
		return;
	}
	ck_assert_msg(h.min >= 1, "%s: %s has a field of %lld units", label,
	    what, h.min);
	ck_assert_msg(h.pttl > 0 && (uint64_t)h.pttl <= max_ttl,
	    "%s: %s has PTTL %lld, expected 1..%" PRIu64, label, what, h.pttl,
	    max_ttl);
}

/* ---- calling the code under test */

static struct limiter_check
check_of(const char *key, size_t len, uint64_t limit, uint64_t window,
    uint64_t amount, char on_over)
{
	struct limiter_check c = { key, len, limit, window, amount, on_over, NULL, NULL, 0,
	    LIMITER_SOFT, false, NULL, NULL, NULL, 0 };

	return c;
}

static void
run(const char *label, const struct limiter_check *c, size_t nc, bool reserve,
    const struct limiter_back *always, size_t na,
    const struct limiter_back *if_refused, size_t nr,
    bool *refused, size_t *stop, struct limiter_result *res)
{
	char err[256] = "";
	int rc;

	*refused = true;
	*stop = (size_t)-1;
	rc = limiter_run(st, c, nc, reserve, always, na, if_refused, nr,
	    refused, stop, res, err, sizeof(err));
	ck_assert_msg(rc == 0, "%s: limiter_run failed: %s", label, err);
}

/* One refusing check; asserts the reply is consistent with itself. */
static struct limiter_result
run1(const char *label, const char *key, size_t len, uint64_t limit,
    uint64_t window, uint64_t amount, bool reserve)
{
	struct limiter_check c = check_of(key, len, limit, window, amount, 'r');
	struct limiter_result res;
	bool refused;
	size_t stop;

	run(label, &c, 1, reserve, NULL, 0, NULL, 0, &refused, &stop, &res);
	ck_assert_msg(refused == res.over, "%s: refused %d but over %d", label,
	    refused, res.over);
	ck_assert_msg(stop == (res.over ? 0 : 1), "%s: stop %zu, over %d",
	    label, stop, res.over);
	return res;
}

/* Reserve amount units, which must fit. */
static int64_t
fill(const char *label, const char *key, size_t len, uint64_t window,
    uint64_t amount)
{
	struct limiter_result res = run1(label, key, len, HUGE_LIMIT, window,
	    amount, true);

	ck_assert_msg(!res.over && res.field >= 0,
	    "%s: filling %s with %" PRIu64 " failed", label, key, amount);
	return res.field;
}

/* ---- boundaries */

static const struct {
	const char *label;
	uint64_t limit;
	uint64_t pre;		/* reserved first, in one call */
	uint64_t amounts[8];
	size_t n;
	const char *want;	/* per call: '+' accepted, '-' over */
} bounds[] = {
	{ "1 by 1: limit-1, limit, limit+1", 3, 0, { 1, 1, 1, 1 }, 4, "+++-" },
	{ "1 by 1: limit 1", 1, 0, { 1, 1, 1 }, 3, "+--" },
	{ "1 by 1 after 99 of 100", 100, 99, { 1, 1 }, 2, "+-" },
	{ "1 by 1 after 98 of 100", 100, 98, { 1, 1, 1 }, 3, "++-" },
	{ "by 3: 9 of 10 then 12", 10, 0, { 3, 3, 3, 3 }, 4, "+++-" },
	{ "by 5: exactly at the limit", 10, 0, { 5, 5, 5 }, 3, "++-" },
	{ "by 2 after 9 of 10, then 1 fits", 10, 9, { 2, 1, 1 }, 3, "-+-" },
	{ "by 4 after 6 of 10 (limit-0)", 10, 6, { 4, 1 }, 2, "+-" },
	{ "by 5 after 6 of 10 (limit+1)", 10, 6, { 5, 3, 2 }, 3, "-+-" },
	{ "amount = limit", 7, 0, { 7, 1 }, 2, "+-" },
	{ "amount > limit on an empty key", 5, 0, { 6, 5, 1 }, 3, "-+-" },
	{ "amount > limit on a used key", 5, 2, { 6, 3, 1 }, 3, "-+-" },
	{ "limit 0", 0, 0, { 1, 1 }, 2, "--" },
	{ "amount 0 at the limit", 2, 2, { 0, 1 }, 2, "+-" },
	{ "bytes", 10000000, 0, { 4000000, 6000000, 1 }, 3, "++-" },
};

START_TEST(test_boundary)
{
	const char *label = bounds[_i].label;
	uint64_t window = MIN, bucket = limiter_bucket_ms(window);
	uint64_t limit = bounds[_i].limit, used = bounds[_i].pre;
	char key[64];

	snprintf(key, sizeof(key), "lim:bound:%d", _i);
	if (used > 0)
		fill(label, key, strlen(key), window, used);
	for (size_t k = 0; k < bounds[_i].n; k++) {
		uint64_t amount = bounds[_i].amounts[k];
		bool want_over = bounds[_i].want[k] == '-';
		struct limiter_result res = run1(label, key, strlen(key), limit,
		    window, amount, true);

		ck_assert_msg(res.over == want_over, "%s: call %zu (%" PRIu64
		    " more on %" PRIu64 " of %" PRIu64 "): over %d, expected %d",
		    label, k, amount, used, limit, res.over, want_over);
		ck_assert_msg(res.count == used, "%s: call %zu: count %" PRIu64
		    ", expected %" PRIu64, label, k, res.count, used);
		if (!want_over) {
			ck_assert_msg(res.field >= 0 &&
			    (uint64_t)res.field % bucket == 0,
			    "%s: call %zu: field %" PRId64 " not a bucket",
			    label, k, res.field);
			ck_assert_msg(res.retry_ms == 0, "%s: call %zu: "
			    "accepted with retry %" PRIu64, label, k,
			    res.retry_ms);
			used += amount;
		} else if (amount > limit) {
			ck_assert_msg(res.field == -1 && res.retry_ms == 0,
			    "%s: call %zu: more than the limit: field %" PRId64
			    " retry %" PRIu64 ", expected -1 and 0 (never)",
			    label, k, res.field, res.retry_ms);
		} else {
			ck_assert_msg(res.field == -1, "%s: call %zu: over but "
			    "field %" PRId64, label, k, res.field);
			ck_assert_msg(res.retry_ms > 0 &&
			    res.retry_ms <= window + bucket,
			    "%s: call %zu: retry %" PRIu64 " not in 1..%" PRIu64,
			    label, k, res.retry_ms, window + bucket);
		}
		assert_units(label, "the key", key, strlen(key),
		    (long long)used, window + bucket + 1);
	}
}
END_TEST

/* ---- all or nothing */

struct spec {
	uint64_t limit, pre, amount;
	char on_over;
	uint64_t window;	/* 0: 60 s */
};

static const struct {
	const char *label;
	size_t nc;
	struct spec c[3];
	bool reserve;
	bool refused;
	size_t stop;
	const char *over;	/* per check: 'o' over, '.' not, '-' not examined */
	uint64_t added[3];	/* units reserved by the call */
} aons[] = {
	{ "two within", 2, { { 10, 0, 1, 'r', 0 }, { 10, 0, 1, 'r', 0 } },
	    true, false, 2, "..", { 1, 1 } },
	{ "two, second r over", 2, { { 10, 0, 1, 'r', 0 },
	    { 10, 10, 1, 'r', 0 } }, true, true, 1, ".o", { 0, 0 } },
	{ "two, second r over by its amount", 2, { { 10, 3, 4, 'r', 0 },
	    { 10, 7, 4, 'r', 0 } }, true, true, 1, ".o", { 0, 0 } },
	{ "two, first r over", 2, { { 10, 10, 1, 'r', 0 },
	    { 10, 0, 1, 'r', 0 } }, true, true, 0, "o-", { 0, 0 } },
	{ "three within", 3, { { 10, 0, 1, 'r', 0 }, { 5, 3, 2, 'r', 0 },
	    { 3, 2, 1, 'r', 0 } }, true, false, 3, "...", { 1, 2, 1 } },
	{ "three, third r over", 3, { { 10, 0, 1, 'r', 0 },
	    { 5, 0, 2, 'r', 0 }, { 3, 3, 1, 'r', 0 } }, true, true, 2, "..o",
	    { 0, 0, 0 } },
	{ "three, second r over", 3, { { 10, 0, 1, 'r', 0 },
	    { 5, 5, 1, 'r', 0 }, { 3, 0, 1, 'r', 0 } }, true, true, 1, ".o-",
	    { 0, 0, 0 } },
	{ "three, second a over", 3, { { 10, 0, 1, 'a', 0 },
	    { 5, 5, 1, 'a', 0 }, { 3, 0, 1, 'r', 0 } }, true, false, 1, ".o-",
	    { 1, 0, 0 } },
	{ "three, third a over", 3, { { 10, 0, 1, 'r', 0 },
	    { 10, 0, 2, 'r', 0 }, { 1, 1, 1, 'a', 0 } }, true, false, 2, "..o",
	    { 1, 2, 0 } },
	{ "three, first a over", 3, { { 1, 1, 1, 'a', 0 }, { 10, 0, 1, 'r', 0 },
	    { 10, 0, 1, 'r', 0 } }, true, false, 0, "o--", { 0, 0, 0 } },
	{ "three, s over is passed over", 3, { { 10, 0, 1, 'r', 0 },
	    { 5, 5, 1, 's', 0 }, { 10, 0, 1, 'r', 0 } }, true, false, 3, ".o.",
	    { 1, 0, 1 } },
	{ "three, s over then r over", 3, { { 10, 0, 1, 'r', 0 },
	    { 5, 5, 1, 's', 0 }, { 3, 3, 1, 'r', 0 } }, true, true, 2, ".oo",
	    { 0, 0, 0 } },
	{ "three, s over then a over", 3, { { 10, 0, 1, 'r', 0 },
	    { 5, 5, 1, 's', 0 }, { 3, 3, 1, 'a', 0 } }, true, false, 2, ".oo",
	    { 1, 0, 0 } },
	{ "three, all s over", 3, { { 1, 1, 1, 's', 0 }, { 1, 1, 1, 's', 0 },
	    { 1, 1, 1, 's', 0 } }, true, false, 3, "ooo", { 0, 0, 0 } },
	{ "three, s over by more than the limit", 3, { { 10, 0, 1, 'r', 0 },
	    { 5, 0, 6, 's', 0 }, { 10, 0, 1, 'r', 0 } }, true, false, 3, ".o.",
	    { 1, 0, 1 } },
	{ "reserve false, all within", 2, { { 10, 0, 1, 'r', 0 },
	    { 10, 4, 1, 'r', 0 } }, false, false, 2, "..", { 0, 0 } },
	{ "reserve false, second r over", 2, { { 10, 0, 1, 'r', 0 },
	    { 10, 10, 1, 'r', 0 } }, false, true, 1, ".o", { 0, 0 } },
	{ "reserve false, second a over", 2, { { 10, 0, 1, 'r', 0 },
	    { 10, 10, 1, 'a', 0 } }, false, false, 1, ".o", { 0, 0 } },
	{ "windows 1 s, 30 d, 60 s within", 3, { { 10, 0, 1, 'r', SEC },
	    { 10, 0, 2, 'r', 30 * DAY }, { 10, 0, 3, 'r', MIN } }, true, false,
	    3, "...", { 1, 2, 3 } },
	{ "windows 1 s, 30 d: second r over", 2, { { 10, 0, 1, 'r', SEC },
	    { 10, 10, 1, 'r', 30 * DAY } }, true, true, 1, ".o", { 0, 0 } },
};

START_TEST(test_all_or_nothing)
{
	const char *label = aons[_i].label;
	size_t nc = aons[_i].nc;
	struct limiter_check c[3];
	struct limiter_result res[3];
	char key[3][64];
	uint64_t window[3];
	bool refused;
	size_t stop;

	for (size_t i = 0; i < nc; i++) {
		const struct spec *s = &aons[_i].c[i];

		snprintf(key[i], sizeof(key[i]), "lim:aon:%d:%zu", _i, i);
		window[i] = s->window != 0 ? s->window : MIN;
		if (s->pre > 0)
			fill(label, key[i], strlen(key[i]), window[i], s->pre);
		c[i] = check_of(key[i], strlen(key[i]), s->limit, window[i],
		    s->amount, s->on_over);
	}
	run(label, c, nc, aons[_i].reserve, NULL, 0, NULL, 0, &refused, &stop,
	    res);
	ck_assert_msg(refused == aons[_i].refused, "%s: refused %d, expected %d",
	    label, refused, aons[_i].refused);
	ck_assert_msg(stop == aons[_i].stop, "%s: stop %zu, expected %zu",
	    label, stop, aons[_i].stop);
	for (size_t i = 0; i < nc; i++) {
		const struct spec *s = &aons[_i].c[i];
		char o = aons[_i].over[i], what[32];
		uint64_t bucket = limiter_bucket_ms(window[i]);
		uint64_t added = aons[_i].added[i];

		snprintf(what, sizeof(what), "check %zu", i);
		ck_assert_msg(res[i].over == (o == 'o'), "%s: %s: over %d, "
		    "expected %d", label, what, res[i].over, o == 'o');
		ck_assert_msg(res[i].count == (o == '-' ? 0 : s->pre),
		    "%s: %s: count %" PRIu64 ", expected %" PRIu64, label, what,
		    res[i].count, o == '-' ? 0 : s->pre);
		if (o == 'o' && s->amount <= s->limit)
			ck_assert_msg(res[i].retry_ms > 0 &&
			    res[i].retry_ms <= window[i] + bucket,
			    "%s: %s: retry %" PRIu64 " not in 1..%" PRIu64,
			    label, what, res[i].retry_ms, window[i] + bucket);
		else
			ck_assert_msg(res[i].retry_ms == 0, "%s: %s: retry %"
			    PRIu64 ", expected 0", label, what,
			    res[i].retry_ms);
		if (added > 0) {
			ck_assert_msg(res[i].field >= 0 &&
			    (uint64_t)res[i].field % bucket == 0,
			    "%s: %s: reserved in field %" PRId64 ", not a "
			    "bucket of %" PRIu64, label, what, res[i].field,
			    bucket);
			ck_assert_msg(hget(label, key[i], strlen(key[i]),
			    res[i].field) >= (long long)added,
			    "%s: %s: field %" PRId64 " lacks the %" PRIu64
			    " units", label, what, res[i].field, added);
		} else {
			ck_assert_msg(res[i].field == -1, "%s: %s: field %"
			    PRId64 " but nothing reserved", label, what,
			    res[i].field);
		}
		assert_units(label, what, key[i], strlen(key[i]),
		    (long long)(s->pre + added), window[i] + bucket + 1);
	}
}
END_TEST

/* ---- give-backs */

enum trigger {
	T_NONE,		/* no check in the call */
	T_PASS,		/* a check that passes */
	T_REFUSE,	/* a check over, 'r' */
	T_ACCEPT,	/* a check over, 'a' */
	T_SOFT,		/* a check over, 's' */
};

enum list { L_ALWAYS, L_IF_REFUSED, L_BOTH };

static const struct {
	const char *label;
	uint64_t pre;		/* reserved first; 0: the key is never created */
	bool other;		/* a second field of 6 units, written by hand */
	enum list list;		/* the lists the give-back is in */
	enum trigger trigger;	/* the check in the same call */
	bool missing_field;	/* give back into a field holding nothing */
	uint64_t amount;
	unsigned times;		/* identical give-backs in each list */
	long long want;		/* units left in the reserved field */
} backs[] = {
	{ "always: part", 5, false, L_ALWAYS, T_NONE, false, 2, 1, 3 },
	{ "always: all (field and key go)", 5, false, L_ALWAYS, T_NONE, false,
	    5, 1, 0 },
	{ "always: more than reserved stops at zero", 5, false, L_ALWAYS,
	    T_NONE, false, 9, 1, 0 },
	{ "always: twice in one call stops at zero", 5, false, L_ALWAYS,
	    T_NONE, false, 3, 2, 0 },
	{ "always: twice in one call", 5, false, L_ALWAYS, T_NONE, false, 2,
	    2, 1 },
	{ "always: one field of two", 5, true, L_ALWAYS, T_NONE, false, 5, 1,
	    0 },
	{ "always: more than the field, other field kept", 5, true, L_ALWAYS,
	    T_NONE, false, 20, 1, 0 },
	{ "always: part, other field kept", 5, true, L_ALWAYS, T_NONE, false,
	    1, 1, 4 },
	{ "always: missing key not created", 0, false, L_ALWAYS, T_NONE, false,
	    3, 1, 0 },
	{ "always: missing field not created", 5, false, L_ALWAYS, T_NONE,
	    true, 3, 1, 5 },
	{ "always: amount 0", 5, false, L_ALWAYS, T_NONE, false, 0, 1, 5 },
	/* Refused: the "if refused" list returns whole reservations, so the
	 * "always" one (a part of the same) must not be returned as well. */
	{ "always: not when refused", 5, false, L_ALWAYS, T_REFUSE, false, 2,
	    1, 5 },
	{ "always: also when passed", 5, false, L_ALWAYS, T_PASS, false, 2, 1,
	    3 },
	{ "always: also when accepted over", 5, false, L_ALWAYS, T_ACCEPT,
	    false, 2, 1, 3 },
	{ "always: also when soft over", 5, false, L_ALWAYS, T_SOFT, false, 2,
	    1, 3 },
	{ "if refused: refused", 5, false, L_IF_REFUSED, T_REFUSE, false, 5,
	    1, 0 },
	{ "if refused: refused, part", 5, true, L_IF_REFUSED, T_REFUSE, false,
	    2, 1, 3 },
	{ "if refused: refused, more than reserved", 5, false, L_IF_REFUSED,
	    T_REFUSE, false, 8, 1, 0 },
	{ "if refused: refused, missing key not created", 0, false,
	    L_IF_REFUSED, T_REFUSE, false, 3, 1, 0 },
	{ "if refused: refused, missing field not created", 5, true,
	    L_IF_REFUSED, T_REFUSE, true, 3, 1, 5 },
	{ "if refused: passed", 5, false, L_IF_REFUSED, T_PASS, false, 5, 1,
	    5 },
	{ "if refused: accepted over", 5, false, L_IF_REFUSED, T_ACCEPT, false,
	    5, 1, 5 },
	{ "if refused: soft over", 5, false, L_IF_REFUSED, T_SOFT, false, 5, 1,
	    5 },
	{ "if refused: no check", 5, false, L_IF_REFUSED, T_NONE, false, 5, 1,
	    5 },
	{ "both lists: refused, given back once", 5, false, L_BOTH, T_REFUSE,
	    false, 2, 1, 3 },
	{ "both lists: passed", 5, false, L_BOTH, T_PASS, false, 2, 1, 3 },
	{ "both lists: refused, once, other field kept", 5, true, L_BOTH,
	    T_REFUSE, false, 3, 1, 2 },
};

START_TEST(test_give_back)
{
	const char *label = backs[_i].label;
	uint64_t window = MIN, bucket = limiter_bucket_ms(window);
	struct limiter_back b[2];
	struct limiter_check c;
	struct limiter_result res;
	char key[64], tkey[64];
	int64_t field, other_field;
	size_t nc, na, nr, n = backs[_i].times;
	bool refused;
	size_t stop;

	snprintf(key, sizeof(key), "lim:back:%d", _i);
	snprintf(tkey, sizeof(tkey), "lim:back:%d:check", _i);
	if (backs[_i].pre > 0) {
		field = fill(label, key, strlen(key), window, backs[_i].pre);
	} else {
		field = redis_now_ms(label);
		field -= field % (int64_t)bucket;
	}
	other_field = field - 5 * (int64_t)bucket;
	if (backs[_i].other)
		tl_redis_command("HSET %s %" PRId64 " 6", key, other_field);
	for (size_t j = 0; j < n; j++) {
		b[j].key = key;
		b[j].keylen = strlen(key);
		b[j].field = backs[_i].missing_field ?
		    field - 7 * (int64_t)bucket : field;
		b[j].amount = backs[_i].amount;
	}
	c = check_of(tkey, strlen(tkey), backs[_i].trigger == T_PASS ? 10 : 0,
	    window, 1, backs[_i].trigger == T_ACCEPT ? 'a' :
	    backs[_i].trigger == T_SOFT ? 's' : 'r');
	nc = backs[_i].trigger == T_NONE ? 0 : 1;
	na = backs[_i].list != L_IF_REFUSED ? n : 0;
	nr = backs[_i].list != L_ALWAYS ? n : 0;
	run(label, &c, nc, true, b, na, b, nr, &refused, &stop, &res);
	ck_assert_msg(refused == (backs[_i].trigger == T_REFUSE),
	    "%s: refused %d, expected %d", label, refused,
	    backs[_i].trigger == T_REFUSE);
	ck_assert_msg(hget(label, key, strlen(key), field) ==
	    (backs[_i].want > 0 ? backs[_i].want : -1),
	    "%s: the reserved field holds %lld, expected %lld (-1: gone)",
	    label, hget(label, key, strlen(key), field),
	    backs[_i].want > 0 ? backs[_i].want : -1);
	if (backs[_i].missing_field)
		ck_assert_msg(hget(label, key, strlen(key), b[0].field) == -1,
		    "%s: the give-back created field %" PRId64 " (%lld)",
		    label, b[0].field, hget(label, key, strlen(key),
		    b[0].field));
	if (backs[_i].other)
		ck_assert_msg(hget(label, key, strlen(key), other_field) == 6,
		    "%s: the other field holds %lld, expected 6", label,
		    hget(label, key, strlen(key), other_field));
	assert_units(label, "the key", key, strlen(key),
	    backs[_i].want + (backs[_i].other ? 6 : 0), window + bucket + 1);
	assert_units(label, "the checked key", tkey, strlen(tkey),
	    backs[_i].trigger == T_PASS ? 1 : 0, window + bucket + 1);
}
END_TEST

/* ---- windows: bucket width, TTL, retry */

static const struct {
	const char *label;
	uint64_t window, want;
} bucket_widths[] = {
	{ "1 ms", 1, 1 },
	{ "59 ms", 59, 1 },
	{ "60 ms", 60, 1 },
	{ "119 ms", 119, 1 },
	{ "120 ms", 120, 2 },
	{ "1 s", SEC, 16 },
	{ "60 s", MIN, 1000 },
	{ "1 h", 60 * MIN, MIN },
	{ "30 d", 30 * DAY, 12 * 60 * MIN },
};

START_TEST(test_bucket_width)
{
	uint64_t got = limiter_bucket_ms(bucket_widths[_i].window);

	ck_assert_msg(got == bucket_widths[_i].want, "%s: bucket %" PRIu64
	    " ms, expected %" PRIu64, bucket_widths[_i].label, got,
	    bucket_widths[_i].want);
}
END_TEST

static const struct {
	const char *label;
	uint64_t window;
	bool wait;		/* short enough to wait for the retry */
} windows[] = {
	{ "1 s", SEC, true },
	{ "60 s", MIN, false },
	{ "30 d", 30 * DAY, false },
};

START_TEST(test_window)
{
	const char *label = windows[_i].label;
	uint64_t window = windows[_i].window, bucket = limiter_bucket_ms(window);
	uint64_t ttl = window + bucket + 1;
	struct limiter_result res;
	int64_t before, after, t_over;
	struct hash h;
	char key[64];

	snprintf(key, sizeof(key), "lim:window:%d", _i);
	before = redis_now_ms(label);
	res = run1(label, key, strlen(key), 3, window, 1, true);
	h = inspect(label, key, strlen(key));
	after = redis_now_ms(label);
	ck_assert_msg(!res.over && res.field >= 0 &&
	    (uint64_t)res.field % bucket == 0 &&
	    res.field > before - (int64_t)bucket && res.field <= after,
	    "%s: reserved in field %" PRId64 ", expected a multiple of %"
	    PRIu64 " in (%" PRId64 ", %" PRId64 "]", label, res.field, bucket,
	    before - (int64_t)bucket, after);
	ck_assert_msg(h.sum == 1 && h.pttl > (long long)(ttl - TTL_SLACK) &&
	    h.pttl <= (long long)ttl, "%s: %lld units, PTTL %lld, expected 1 "
	    "and %" PRIu64 " - %d..%" PRIu64, label, h.sum, h.pttl, ttl,
	    TTL_SLACK, ttl);

	/* Fill to the limit; one more is over until the first unit leaves. */
	res = run1(label, key, strlen(key), 3, window, 2, true);
	ck_assert_msg(!res.over && res.count == 1, "%s: filling: over %d "
	    "count %" PRIu64, label, res.over, res.count);
	assert_units(label, "the key", key, strlen(key), 3, ttl);
	res = run1(label, key, strlen(key), 3, window, 1, true);
	t_over = mono_ms();
	ck_assert_msg(res.over && res.count == 3, "%s: at the limit: over %d "
	    "count %" PRIu64, label, res.over, res.count);
	ck_assert_msg(res.retry_ms > 0 && res.retry_ms <= window + bucket,
	    "%s: retry %" PRIu64 " not in 1..%" PRIu64, label, res.retry_ms,
	    window + bucket);
	ck_assert_msg(res.retry_ms + TTL_SLACK > window, "%s: retry %" PRIu64
	    " but the first unit stays for %" PRIu64 " ms", label, res.retry_ms,
	    window);
	if (!windows[_i].wait)
		return;

	sleep_ms((int64_t)res.retry_ms - 100 - (mono_ms() - t_over));
	res = run1(label, key, strlen(key), 3, window, 1, true);
	ck_assert_msg(res.over, "%s: accepted 100 ms before the retry time",
	    label);
	sleep_ms((int64_t)res.retry_ms);
	res = run1(label, key, strlen(key), 3, window, 1, true);
	ck_assert_msg(!res.over && res.count <= 2, "%s: after the retry time: "
	    "over %d count %" PRIu64, label, res.over, res.count);
}
END_TEST

/* Fill a short window, let it pass: the whole limit is free again. */
static const struct {
	const char *label;
	uint64_t window, limit, amount;
} refills[] = {
	{ "1 s, 5 by 1", SEC, 5, 1 },
};

START_TEST(test_refill)
{
	const char *label = refills[_i].label;
	uint64_t window = refills[_i].window, limit = refills[_i].limit;
	uint64_t amount = refills[_i].amount, bucket = limiter_bucket_ms(window);
	uint64_t n = limit / amount;
	struct limiter_result res;
	char key[64];

	snprintf(key, sizeof(key), "lim:refill:%d", _i);
	for (int pass = 0; pass < 2; pass++) {
		for (uint64_t k = 0; k < n; k++) {
			res = run1(label, key, strlen(key), limit, window,
			    amount, true);
			ck_assert_msg(!res.over && res.count == k * amount,
			    "%s: pass %d, call %" PRIu64 ": over %d count %"
			    PRIu64, label, pass, k, res.over, res.count);
		}
		res = run1(label, key, strlen(key), limit, window, amount,
		    true);
		ck_assert_msg(res.over, "%s: pass %d: over the limit "
		    "accepted", label, pass);
		assert_units(label, "the key", key, strlen(key),
		    (long long)(n * amount), window + bucket + 1);
		if (pass == 0)
			sleep_ms((int64_t)(window + bucket) + 100);
	}
}
END_TEST

/* ---- sliding, not fixed */

static const struct {
	const char *label;
	uint64_t window, limit;
} slides[] = {
	{ "2 s, limit 5", 2 * SEC, 5 },
};

START_TEST(test_sliding)
{
	const char *label = slides[_i].label;
	uint64_t window = slides[_i].window, limit = slides[_i].limit;
	uint64_t bucket = limiter_bucket_ms(window);
	int64_t w = (int64_t)window, phase, t_fill, t_mono, t_check;
	struct limiter_result res;
	char key[64];

	snprintf(key, sizeof(key), "lim:slide:%d", _i);
	/*
	 * Fill late in a fixed window (Redis time aligned to the window), so
	 * that 1.2 s later a fixed-window counter would have started afresh.
	 */
	phase = redis_now_ms(label) % w;
	if (phase < w / 2 - 100 || phase > w - 300)
		sleep_ms((w / 2 - phase + w) % w);
	t_fill = redis_now_ms(label);
	t_mono = mono_ms();
	res = run1(label, key, strlen(key), limit, window, limit, true);
	ck_assert_msg(!res.over, "%s: filling refused", label);
	res = run1(label, key, strlen(key), limit, window, 1, true);
	ck_assert_msg(res.over && res.count == limit, "%s: at once: over %d "
	    "count %" PRIu64, label, res.over, res.count);

	sleep_ms(1200 - (mono_ms() - t_mono));
	t_check = redis_now_ms(label);
	ck_assert_msg(t_fill / w != t_check / w, "%s: no fixed-window boundary "
	    "between %" PRId64 " and %" PRId64 " (test timing)", label, t_fill,
	    t_check);
	res = run1(label, key, strlen(key), limit, window, 1, true);
	ck_assert_msg(res.over && res.count == limit, "%s: 1.2 s later, past a "
	    "fixed-window boundary: over %d count %" PRIu64 " (2x burst)",
	    label, res.over, res.count);
	ck_assert_msg(res.retry_ms > 0 && res.retry_ms <= window + bucket -
	    1000, "%s: 1.2 s later: retry %" PRIu64 ", expected 1..%" PRIu64,
	    label, res.retry_ms, window + bucket - 1000);

	sleep_ms((int64_t)(window + bucket) + 50 - (mono_ms() - t_mono));
	res = run1(label, key, strlen(key), limit, window, limit, true);
	ck_assert_msg(!res.over && res.count == 0, "%s: a window later: over %d "
	    "count %" PRIu64, label, res.over, res.count);
	assert_units(label, "the key", key, strlen(key), (long long)limit,
	    window + bucket + 1);
}
END_TEST

/* ---- stale buckets */

struct entry {
	int64_t offset;		/* from Redis's now, ms */
	long long units;
	bool live;		/* still in the window */
};

static const struct {
	const char *label;
	uint64_t window;
	struct entry e[3];
	size_t n;
	bool junk;		/* also a field that is not a number */
} stales[] = {
	{ "60 s: one stale, one live", MIN, { { -63000, 5, false },
	    { -30000, 3, true } }, 2, false },
	{ "60 s: just over a bucket out, 3 s in", MIN, { { -61500, 4, false },
	    { -57000, 2, true }, { 0, 1, true } }, 3, false },
	{ "60 s: all stale, key removed", MIN, { { -70000, 5, false },
	    { -120000, 1, false } }, 2, false },
	{ "60 s: non-numeric field removed", MIN, { { -10000, 2, true } }, 1,
	    true },
	{ "1 s: stale and live", SEC, { { -1100, 2, false }, { -500, 1, true },
	    { -40, 2, true } }, 3, false },
	{ "30 d: 31 d old removed, 29 d kept", 30 * DAY,
	    { { -31 * (int64_t)DAY, 7, false }, { -29 * (int64_t)DAY, 4, true } },
	    2, false },
};

START_TEST(test_stale)
{
	const char *label = stales[_i].label;
	uint64_t window = stales[_i].window, bucket = limiter_bucket_ms(window);
	int64_t now, f[3];
	long long live = 0, nlive = 0;
	struct limiter_result res;
	char key[64], cmd[512];
	size_t len;
	struct hash h;

	snprintf(key, sizeof(key), "lim:stale:%d", _i);
	now = redis_now_ms(label);
	len = (size_t)snprintf(cmd, sizeof(cmd), "HSET %s%s", key,
	    stales[_i].junk ? " junk 3" : "");
	for (size_t j = 0; j < stales[_i].n; j++) {
		const struct entry *e = &stales[_i].e[j];

		f[j] = now + e->offset;
		f[j] -= f[j] % (int64_t)bucket;
		len += (size_t)snprintf(cmd + len, sizeof(cmd) - len,
		    " %" PRId64 " %lld", f[j], e->units);
		if (e->live) {
			live += e->units;
			nlive++;
		}
	}
	tl_redis_command("%s", cmd);
	tl_redis_command("PEXPIRE %s %" PRIu64, key, 2 * window);
	h = inspect(label, key, strlen(key));
	ck_assert_msg(h.fields == (long long)stales[_i].n + stales[_i].junk,
	    "%s: wrote %lld fields by hand", label, h.fields);

	res = run1(label, key, strlen(key), HUGE_LIMIT, window, 1, false);
	ck_assert_msg(!res.over && res.count == (uint64_t)live, "%s: over %d "
	    "count %" PRIu64 ", expected %lld", label, res.over, res.count, live);
	h = inspect(label, key, strlen(key));
	ck_assert_msg(h.fields == nlive && h.sum == live && h.bad == 0,
	    "%s: after the check: %lld fields, %lld units, %lld non-numeric; "
	    "expected %lld, %lld, 0", label, h.fields, h.sum, h.bad, nlive,
	    live);
	ck_assert_msg(h.exists == (nlive > 0), "%s: key exists %d", label,
	    h.exists);
	for (size_t j = 0; j < stales[_i].n; j++) {
		long long v = hget(label, key, strlen(key), f[j]);
		long long want = stales[_i].e[j].live ? stales[_i].e[j].units : -1;

		ck_assert_msg(v == want, "%s: field at %" PRId64 " ms holds "
		    "%lld, expected %lld", label, stales[_i].e[j].offset, v,
		    want);
	}
}
END_TEST

/* ---- concurrency */

struct worker {
	pthread_t tid;
	const char *key;
	uint64_t limit, amount;
	unsigned n;
	unsigned accepted, over, odd, failed;
	char err[256];
};

static void *
worker_run(void *arg)
{
	struct worker *w = arg;
	struct limiter_check c = check_of(w->key, strlen(w->key), w->limit,
	    MIN, w->amount, 'r');

	for (unsigned i = 0; i < w->n; i++) {
		struct limiter_result res;
		bool refused;
		size_t stop;

		if (limiter_run(st, &c, 1, true, NULL, 0, NULL, 0, &refused,
		    &stop, &res, w->err, sizeof(w->err)) != 0)
			w->failed++;
		else if (!refused && !res.over && stop == 1 && res.field >= 0)
			w->accepted++;
		else if (refused && res.over && stop == 0 && res.field == -1)
			w->over++;
		else
			w->odd++;
	}
	return NULL;
}

static const struct {
	const char *label;
	unsigned threads, per_thread;
	uint64_t amount, limit;
	unsigned want;		/* calls accepted */
} races[] = {
	{ "8 x 200 of 1, limit 500", 8, 200, 1, 500, 500 },
	{ "8 x 100 of 1, limit 1000 (room for all)", 8, 100, 1, 1000, 800 },
	{ "8 x 50 of 3, limit 100", 8, 50, 3, 100, 33 },
};

START_TEST(test_concurrency)
{
	const char *label = races[_i].label;
	struct worker w[8];
	unsigned nt = races[_i].threads, accepted = 0, over = 0;
	char key[64];

	ck_assert_msg(nt <= NELEM(w), "%s: too many threads", label);
	snprintf(key, sizeof(key), "lim:race:%d", _i);
	memset(w, 0, sizeof(w));
	for (unsigned t = 0; t < nt; t++) {
		w[t].key = key;
		w[t].limit = races[_i].limit;
		w[t].amount = races[_i].amount;
		w[t].n = races[_i].per_thread;
		ck_assert_msg(pthread_create(&w[t].tid, NULL, worker_run,
		    &w[t]) == 0, "%s: pthread_create", label);
	}
	for (unsigned t = 0; t < nt; t++)
		pthread_join(w[t].tid, NULL);
	for (unsigned t = 0; t < nt; t++) {
		ck_assert_msg(w[t].failed == 0 && w[t].odd == 0, "%s: thread "
		    "%u: %u calls failed (%s), %u inconsistent replies", label,
		    t, w[t].failed, w[t].err, w[t].odd);
		accepted += w[t].accepted;
		over += w[t].over;
	}
	ck_assert_msg(accepted == races[_i].want &&
	    accepted + over == nt * races[_i].per_thread,
	    "%s: %u accepted and %u over, expected %u and %u", label, accepted,
	    over, races[_i].want, nt * races[_i].per_thread - races[_i].want);
	assert_units(label, "the key", key, strlen(key),
	    (long long)(races[_i].want * races[_i].amount),
	    MIN + limiter_bucket_ms(MIN) + 1);
}
END_TEST

/* ---- binary-safe keys */

static const struct {
	const char *label;
	const char *bytes;
	size_t len;
} bins[] = {
	{ "NUL inside", BYTES("a\0b") },
	{ "NUL alone", BYTES("\0") },
	{ "CR LF", BYTES("a\r\nDEL x\r\n") },
	{ "RESP injection", BYTES("\r\n*1\r\n$8\r\nFLUSHALL\r\n") },
	{ "percent", BYTES("%s%n%d%%") },
	{ "spaces", BYTES(" a b  ") },
	{ "all together", BYTES("\0 %s\r\n \0") },
	{ "high bytes", BYTES("\xff\xfe\x80") },
};

START_TEST(test_binary_key)
{
	const char *label = bins[_i].label;
	uint64_t window = MIN, ttl = window + limiter_bucket_ms(window) + 1;
	char prefix[32], pattern[40], key[128], sib[128];
	struct limiter_back b;
	struct limiter_check c;
	struct limiter_result res;
	size_t plen, len;
	int64_t field;
	bool refused;
	size_t stop;

	plen = (size_t)snprintf(prefix, sizeof(prefix), "lim:bin:%d:", _i);
	snprintf(pattern, sizeof(pattern), "%s*", prefix);
	len = plen + bins[_i].len + 2;
	ck_assert_msg(len <= sizeof(key), "%s: key too long", label);
	memcpy(key, prefix, plen);
	memcpy(key + plen, bins[_i].bytes, bins[_i].len);
	memcpy(key + plen + bins[_i].len, ":k", 2);
	memcpy(sib, key, len);
	sib[len - 1] = 'j';	/* a sibling differing in the last byte */

	field = fill(label, key, len, window, 3);
	fill(label, sib, len, window, 2);
	res = run1(label, key, len, 3, window, 1, true);
	ck_assert_msg(res.over && res.count == 3, "%s: the key: over %d count %"
	    PRIu64 ", expected over and 3", label, res.over, res.count);
	res = run1(label, sib, len, 3, window, 1, true);
	ck_assert_msg(!res.over && res.count == 2, "%s: the sibling: over %d "
	    "count %" PRIu64 ", expected 2", label, res.over, res.count);
	assert_units(label, "the key", key, len, 3, ttl);
	assert_units(label, "the sibling", sib, len, 3, ttl);
	ck_assert_msg(count_keys(label, pattern) == 2, "%s: %lld keys under %s, "
	    "expected 2", label, count_keys(label, pattern), pattern);

	b.key = key;
	b.keylen = len;
	b.field = field;
	b.amount = 3;
	c = check_of(sib, len, 3, window, 1, 'r');
	run(label, &c, 1, true, NULL, 0, &b, 1, &refused, &stop, &res);
	ck_assert_msg(refused && res.over, "%s: the sibling at its limit "
	    "accepted", label);
	assert_units(label, "the key after give-back", key, len, 0, ttl);
	assert_units(label, "the sibling after give-back", sib, len, 3, ttl);
	ck_assert_msg(count_keys(label, pattern) == 1, "%s: %lld keys under %s, "
	    "expected 1", label, count_keys(label, pattern), pattern);
}
END_TEST

/* ---- every key left behind has a TTL (runs last) */

START_TEST(test_all_keys_expire)
{
	const char *out = tl_redis_command("EVAL 'local n, bad = 0, 0 "
	    "for _, k in ipairs(redis.call(\"KEYS\", \"lim:*\")) do n = n + 1 "
	    "if redis.call(\"PTTL\", k) < 0 then bad = bad + 1 end end "
	    "return n .. \" \" .. bad' 0");
	long long n = -1, bad = -1;

	ck_assert_msg(sscanf(out, "%lld %lld", &n, &bad) == 2,
	    "all keys: reading: \"%s\"", out);
	ck_assert_msg(bad == 0, "all keys: %lld of %lld keys have no TTL", bad,
	    n);
}
END_TEST

/* ---- deadlines: a call that reaches Redis too late changes nothing */

/* The script with ARGV[1] given by the test, not by the store. */
static struct store_script raw_script = { limiter_script, false, "", 0 };

static redisReply *
raw_call(const char *label, const char *deadline, const char *key, bool give_back,
    int64_t field)
{
	char fieldtext[24], err[256] = "";
	const char *keys[1] = { key };
	const char *check[15] = { deadline, "1", "1", "0", "0", "16",
	    "c", "10", "60000", "1000", "1", "r", "0", "0", "0" };
	const char *back[8] = { deadline, "0", "0", "1", "0", "7", fieldtext, "1" };
	redisReply *r;

	snprintf(fieldtext, sizeof(fieldtext), "%" PRId64, field);
	r = store_eval(st, &raw_script, 1, keys, NULL, give_back ? 8 : 15,
	    give_back ? back : check, NULL, err, sizeof(err));
	ck_assert_msg(r != NULL, "%s: store_eval: %s", label, err);
	return r;
}

START_TEST(test_deadline_script)
{
	char past[24], future[24];
	int64_t now = redis_now_ms("deadline"), field;
	redisReply *r;

	snprintf(past, sizeof(past), "%" PRId64, now - 1000);
	snprintf(future, sizeof(future), "%" PRId64, now + 60000);

	r = raw_call("past", past, "lim:late:a", false, 0);
	ck_assert_msg(r->type == REDIS_REPLY_ERROR && strstr(r->str, "LATE") != NULL,
	    "a call past its deadline: reply type %d %s", r->type,
	    r->type == REDIS_REPLY_ERROR ? r->str : "");
	store_reply_free(r);
	ck_assert_msg(count_keys("past", "lim:late:a") == 0,
	    "a call past its deadline created its key");

	r = raw_call("future", future, "lim:late:a", false, 0);
	ck_assert_msg(r->type == REDIS_REPLY_ARRAY && r->elements == 7,
	    "a call before its deadline: reply type %d", r->type);
	field = r->element[5]->integer;
	store_reply_free(r);
	assert_units("future", "the key", BYTES("lim:late:a"), 1, 61100);

	/* Returning units is always right, late or not. */
	r = raw_call("give-back", past, "lim:late:a", true, field);
	ck_assert_msg(r->type == REDIS_REPLY_ARRAY, "a late give-back: reply "
	    "type %d %s", r->type, r->type == REDIS_REPLY_ERROR ? r->str : "");
	store_reply_free(r);
	assert_units("give-back", "the key", BYTES("lim:late:a"), 0, 61100);
}
END_TEST

static void *
stall_redis(void *arg)
{
	(void)arg;
	tl_redis_command("DEBUG SLEEP 1");
	return NULL;
}

/*
 * Redis stalls longer than the store's timeout: the caller gives up (and
 * follows on_redis_error), and the call that Redis runs once it wakes up
 * must reserve nothing.  Before deadlines it reserved a unit that nobody
 * would ever confirm or give back.
 */
START_TEST(test_deadline_stall)
{
	struct store_options o = {
		.address = address, .connect_timeout_ms = 1000,
		.timeout_ms = 100, .pool = 1,
	};
	struct limiter_check c = check_of(BYTES("lim:late:stall"), 10, MIN, 1, 'r');
	struct limiter_check warm = check_of(BYTES("lim:late:warm"), 10, MIN, 1, 'r');
	struct limiter_result res;
	char err[256] = "";
	struct store *fast = store_new(&o, err, sizeof(err));
	struct timespec pause = { 0, 300 * 1000000L };
	pthread_t th;
	bool refused;
	size_t stop;

	ck_assert_msg(fast != NULL, "store_new: %s", err);
	/* Connected, script loaded: the stalled call is the EVALSHA itself. */
	ck_assert_msg(limiter_run(fast, &warm, 1, LIMITER_RESERVE, NULL, 0, NULL, 0,
	    &refused, &stop, &res, err, sizeof(err)) == 0, "warm-up: %s", err);
	ck_assert_int_eq(pthread_create(&th, NULL, stall_redis, NULL), 0);
	nanosleep(&pause, NULL);
	ck_assert_msg(limiter_run(fast, &c, 1, LIMITER_RESERVE, NULL, 0, NULL, 0,
	    &refused, &stop, &res, err, sizeof(err)) != 0,
	    "a call during a 1 s stall succeeded with timeout 100 ms");
	ck_assert_msg(strstr(err, "timeout after 100 ms") != NULL, "err: %s", err);
	pthread_join(th, NULL);
	/* Redis has run the queued call by now (it answers in order). */
	ck_assert_msg(strcmp(tl_redis_command("PING"), "PONG") == 0, "Redis is not back");
	ck_assert_msg(count_keys("stall", "lim:late:stall") == 0,
	    "the call Redis ran after the caller gave up reserved a unit");
	assert_units("stall", "the warm-up key", BYTES("lim:late:warm"), 1, MIN + 2000);
	store_free(fast);
}
END_TEST

/* ---- overrides, the refusal record and peek (limiter.h, limiter_keys) */

/*
 * The keys of a policy's own key as the engine names them under the prefix
 * "lim:", built here by hand (not by limiter_keys or limiter_counter_key,
 * tested on their own below): the counter "lim:rl:<policy>:<key>", where
 * key starts at keyoff, and "lim:override:", "lim:top:", "lim:topn:<policy>".
 */
struct pkeys {
	struct limiter_keys k;
	char counter[128];
	size_t len, keyoff;
};

static void
policy_keys(struct pkeys *p, const char *policy, const char *key)
{
	snprintf(p->k.override_key, sizeof(p->k.override_key), "lim:override:%s", policy);
	snprintf(p->k.top_key, sizeof(p->k.top_key), "lim:top:%s", policy);
	snprintf(p->k.topn_key, sizeof(p->k.topn_key), "lim:topn:%s", policy);
	p->keyoff = (size_t)snprintf(p->counter, sizeof(p->counter), "lim:rl:%s:", policy);
	p->len = p->keyoff + (size_t)snprintf(p->counter + p->keyoff,
	    sizeof(p->counter) - p->keyoff, "%s", key);
}

/* A count of p's key that names its override hash and/or its record. */
static struct limiter_check
pcheck(const struct pkeys *p, uint64_t limit, uint64_t window, uint64_t amount,
    char on_over, bool override, bool record)
{
	struct limiter_check c = check_of(p->counter, p->len, limit, window, amount, on_over);

	c.override_key = override ? p->k.override_key : NULL;
	c.top_key = record ? p->k.top_key : NULL;
	c.topn_key = record ? p->k.topn_key : NULL;
	c.keyoff = p->keyoff;
	return c;
}

/* run() with any reserve mode (LIMITER_PEEK among them). */
static void
run_mode(const char *label, const struct limiter_check *c, size_t nc,
    enum limiter_reserve mode, const struct limiter_back *always, size_t na,
    const struct limiter_back *if_refused, size_t nr,
    bool *refused, size_t *stop, struct limiter_result *res)
{
	char err[256] = "";

	*refused = true;
	*stop = (size_t)-1;
	ck_assert_msg(limiter_run(st, c, nc, mode, always, na, if_refused, nr,
	    refused, stop, res, err, sizeof(err)) == 0,
	    "%s: limiter_run failed: %s", label, err);
}

/* One integer answered by redis-cli (nil, an empty line, is -1). */
static long long redis_int(const char *label, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static long long
redis_int(const char *label, const char *fmt, ...)
{
	char cmd[2048];
	const char *out;
	long long v = 0;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	out = tl_redis_command("%s", cmd);
	if (out[0] == '\0')
		return -1;
	ck_assert_msg(sscanf(out, "%lld", &v) == 1, "%s: %s: \"%s\"", label,
	    cmd, out);
	return v;
}

/* ---- overrides */

static const struct {
	const char *label;
	const char *text;	/* the override's value; NULL: "limit expiry" */
	uint64_t ov_limit;
	int64_t ov_expiry;	/* ms from Redis's now; 0: never */
	bool named;		/* the check names the override hash */
	bool other;		/* the override is for another key of the policy */
	uint64_t limit;		/* the configured one */
	const char *want;	/* per call of 1: '+' accepted, '-' over */
	uint64_t want_limit;	/* result.limit of every call */
	int kept;		/* the field is there after: 1, 0, -1 not asked */
} overrides[] = {
	{ "5 replaces 2", NULL, 5, 0, true, false, 2, "+++++-", 5, 1 },
	{ "1 replaces 3 (lower)", NULL, 1, 0, true, false, 3, "+-", 1, 1 },
	{ "0 0: the first is over", NULL, 0, 0, true, false, 2, "--", 0, 1 },
	{ "expiry in a minute", NULL, 4, 60 * SEC, true, false, 2, "++++-", 4, 1 },
	{ "expired a second ago: ignored and deleted", NULL, 5, -1000, true,
	    false, 2, "++-", 2, 0 },
	{ "expired a day ago: ignored and deleted", NULL, 0, -(int64_t)DAY, true,
	    false, 2, "++-", 2, 0 },
	{ "malformed: abc", "abc", 0, 0, true, false, 2, "++-", 2, -1 },
	{ "malformed: no expiry", "5", 0, 0, true, false, 2, "++-", 2, -1 },
	{ "malformed: negative", "-5 0", 0, 0, true, false, 2, "++-", 2, -1 },
	{ "malformed: a third word", "5 0 x", 0, 0, true, false, 2, "++-", 2, -1 },
	{ "malformed: leading space", " 5 0", 0, 0, true, false, 2, "++-", 2, -1 },
	{ "malformed: empty", "", 0, 0, true, false, 2, "++-", 2, -1 },
	{ "the check names no override hash", NULL, 5, 0, false, false, 2,
	    "++-", 2, 1 },
	{ "an override of another key (a prefix of it)", NULL, 5, 0, true, true,
	    2, "++-", 2, 1 },
};

/*
 * A count whose check names its policy's override hash runs under the limit
 * of the field that is its own key (from keyoff on), "<limit> <expiry ms>",
 * and reports it in result.limit; an override that has expired (Redis's
 * clock), is malformed, belongs to another key, or that the check does not
 * name leaves the configured limit in force; a normal call deletes an
 * expired one, and nothing else.
 */
START_TEST(test_override)
{
	const char *label = overrides[_i].label, *want = overrides[_i].want;
	uint64_t window = MIN;
	char policy[32], value[64], after[64];
	long long accepted = 0;
	struct pkeys p;
	const char *field;

	snprintf(policy, sizeof(policy), "ov%d", _i);
	policy_keys(&p, policy, "user@example.com");
	field = overrides[_i].other ? "user@example.co" : "user@example.com";
	if (overrides[_i].text != NULL)
		snprintf(value, sizeof(value), "%s", overrides[_i].text);
	else
		snprintf(value, sizeof(value), "%" PRIu64 " %" PRId64,
		    overrides[_i].ov_limit, overrides[_i].ov_expiry == 0 ? 0 :
		    redis_now_ms(label) + overrides[_i].ov_expiry);
	ck_assert_msg(redis_int(label, "HSET %s %s '%s'", p.k.override_key, field,
	    value) == 1, "%s: HSET of the override", label);
	tl_redis_command("PEXPIRE %s 600000", p.k.override_key);

	for (size_t j = 0; want[j] != '\0'; j++) {
		struct limiter_check c = pcheck(&p, overrides[_i].limit, window, 1, 'r',
		    overrides[_i].named, false);
		struct limiter_result res;
		bool refused;
		size_t stop;

		run(label, &c, 1, true, NULL, 0, NULL, 0, &refused, &stop, &res);
		ck_assert_msg(res.over == (want[j] == '-') && refused == res.over,
		    "%s: call %zu: over %d refused %d, expected \"%s\"", label,
		    j + 1, res.over, refused, want);
		ck_assert_msg(res.limit == overrides[_i].want_limit, "%s: call "
		    "%zu: limit %" PRIu64 " reported, expected %" PRIu64, label,
		    j + 1, res.limit, overrides[_i].want_limit);
		if (res.over && overrides[_i].want_limit == 0)
			ck_assert_msg(res.retry_ms == 0, "%s: call %zu: limit 0 "
			    "but retry in %" PRIu64 " ms", label, j + 1, res.retry_ms);
		else if (res.over)
			ck_assert_msg(res.retry_ms > 0 && res.retry_ms <= window +
			    limiter_bucket_ms(window), "%s: call %zu: retry %"
			    PRIu64 " ms", label, j + 1, res.retry_ms);
		accepted += !res.over;
	}
	assert_units(label, "the counter", p.counter, p.len, accepted,
	    window + limiter_bucket_ms(window) + 1);
	snprintf(after, sizeof(after), "%s", tl_redis_command("HGET %s %s",
	    p.k.override_key, field));
	if (overrides[_i].kept == 1)
		ck_assert_msg(strcmp(after, value) == 0, "%s: the override is "
		    "now \"%s\", expected \"%s\" kept", label, after, value);
	else if (overrides[_i].kept == 0)
		ck_assert_msg(redis_int(label, "HEXISTS %s %s", p.k.override_key,
		    field) == 0, "%s: the expired override \"%s\" is still "
		    "there", label, after);
}
END_TEST

/*
 * A peek reads an expired override as absent (the configured limit in
 * force) but leaves it where it is; the next normal call deletes it.
 */
START_TEST(test_override_expired_peek)
{
	const char *label = "expired override, peek then check";
	struct pkeys p;
	struct limiter_check c;
	struct limiter_result res;
	bool refused;
	size_t stop;

	policy_keys(&p, "ovpeek", "k");
	ck_assert_msg(redis_int(label, "HSET %s k '9 %" PRId64 "'", p.k.override_key,
	    redis_now_ms(label) - 1000) == 1, "%s: HSET", label);
	tl_redis_command("PEXPIRE %s 600000", p.k.override_key);
	c = pcheck(&p, 3, MIN, 1, 'r', true, false);

	run_mode(label, &c, 1, LIMITER_PEEK, NULL, 0, NULL, 0, &refused, &stop, &res);
	ck_assert_msg(!refused && !res.over && res.limit == 3, "%s: peek: refused %d "
	    "over %d limit %" PRIu64 ", expected 0 0 3", label, refused, res.over,
	    res.limit);
	ck_assert_msg(redis_int(label, "HEXISTS %s k", p.k.override_key) == 1,
	    "%s: a peek deleted the expired override", label);

	run_mode(label, &c, 1, LIMITER_CHECK_ONLY, NULL, 0, NULL, 0, &refused, &stop, &res);
	ck_assert_msg(!refused && !res.over && res.limit == 3, "%s: check: refused %d "
	    "over %d limit %" PRIu64 ", expected 0 0 3", label, refused, res.over,
	    res.limit);
	ck_assert_msg(redis_int(label, "HEXISTS %s k", p.k.override_key) == 0,
	    "%s: a normal call left the expired override", label);
	ck_assert_msg(count_keys(label, "lim:rl:ovpeek:*") == 0, "%s: a call that "
	    "reserves nothing created the counter", label);
}
END_TEST

/*
 * Several policies in one call, each with its override hash and record, and
 * a give-back before them in KEYS: every check reads its own hash (all have
 * a field "k", with different limits), a refusal is recorded in its own
 * policy's record only, and the give-back still reaches its key.
 */
START_TEST(test_override_many)
{
	const char *label = "four policies in one call";
	static const struct {
		const char *policy;
		const char *override;	/* NULL: none */
		uint64_t limit, pre;
		char on_over;
		bool record;
		bool over;
		uint64_t want_limit;
	} pol[] = {
		{ "oma", "1 0", 5, 1, 's', false, true, 1 },
		{ "omb", NULL, 7, 0, 'r', true, false, 7 },
		{ "omc", "3 0", 1, 2, 's', true, false, 3 },
		{ "omd", "2 0", 9, 2, 'r', true, true, 2 },
	};
	struct pkeys p[4], g;
	struct limiter_check c[4];
	struct limiter_result res[4];
	struct limiter_back back;
	bool refused;
	size_t stop;

	policy_keys(&g, "omg", "k");
	back.key = g.counter;
	back.keylen = g.len;
	back.field = fill(label, g.counter, g.len, MIN, 2);
	back.amount = 1;
	for (size_t i = 0; i < 4; i++) {
		policy_keys(&p[i], pol[i].policy, "k");
		if (pol[i].override != NULL) {
			tl_redis_command("HSET %s k '%s'", p[i].k.override_key, pol[i].override);
			tl_redis_command("PEXPIRE %s 600000", p[i].k.override_key);
		}
		if (pol[i].pre > 0)
			fill(label, p[i].counter, p[i].len, MIN, pol[i].pre);
		c[i] = pcheck(&p[i], pol[i].limit, MIN, 1, pol[i].on_over,
		    pol[i].override != NULL, pol[i].record);
	}
	run(label, c, 4, true, NULL, 0, &back, 1, &refused, &stop, res);
	ck_assert_msg(refused && stop == 3, "%s: refused %d stop %zu, expected 1 3",
	    label, refused, stop);
	for (size_t i = 0; i < 4; i++) {
		ck_assert_msg(res[i].over == pol[i].over && res[i].limit ==
		    pol[i].want_limit, "%s: %s: over %d limit %" PRIu64 ", expected "
		    "%d %" PRIu64, label, pol[i].policy, res[i].over, res[i].limit,
		    pol[i].over, pol[i].want_limit);
		ck_assert_msg(count_keys(label, p[i].k.top_key) == (i == 3) &&
		    count_keys(label, p[i].k.topn_key) == (i == 3), "%s: %s: "
		    "record keys %lld %lld", label, pol[i].policy,
		    count_keys(label, p[i].k.top_key), count_keys(label,
		    p[i].k.topn_key));
	}
	ck_assert_msg(redis_int(label, "HGET %s k", p[3].k.topn_key) == 1 &&
	    redis_int(label, "ZCARD %s", p[3].k.top_key) == 1 &&
	    redis_int(label, "ZSCORE %s k", p[3].k.top_key) > 0,
	    "%s: the refusal is not recorded as member k", label);
	assert_units(label, "the given-back key", g.counter, g.len, 1,
	    MIN + limiter_bucket_ms(MIN) + 1);
}
END_TEST

/* ---- the refusal record */

static const struct {
	const char *label;
	char on_over;
	uint64_t limit;		/* 1 unit is reserved first: over when < 2 */
	enum limiter_reserve mode;
	unsigned calls;
	bool recorded;
} records[] = {
	{ "refused once", 'r', 1, LIMITER_RESERVE, 1, true },
	{ "refused 3 times", 'r', 1, LIMITER_RESERVE, 3, true },
	{ "refused twice, check only", 'r', 1, LIMITER_CHECK_ONLY, 2, true },
	{ "refused, amount above the limit", 'r', 0, LIMITER_RESERVE, 2, true },
	{ "over, soft (dry run)", 's', 1, LIMITER_RESERVE, 2, false },
	{ "over, accept", 'a', 1, LIMITER_RESERVE, 2, false },
	{ "passes", 'r', 10, LIMITER_RESERVE, 2, false },
	{ "refused, peek", 'r', 1, LIMITER_PEEK, 2, false },
};

/*
 * A count that refuses, and only one that refuses (not soft, not accept,
 * not one that passes, not in a peek), is noted in its policy's record:
 * member = the policy's own key (the counter key from keyoff), score = the
 * time of the refusal (Redis's clock), count = refusals in a row; both keys
 * with a TTL of at most the window.
 */
START_TEST(test_record)
{
	const char *label = records[_i].label;
	uint64_t window = MIN;
	int64_t t0, t1;
	char policy[32];
	struct pkeys p;
	long long score, n;

	snprintf(policy, sizeof(policy), "rec%d", _i);
	/* A key with ':' in it: the member is all of it, from keyoff. */
	policy_keys(&p, policy, "a:b@c");
	fill(label, p.counter, p.len, window, 1);
	t0 = redis_now_ms(label);
	for (unsigned j = 0; j < records[_i].calls; j++) {
		struct limiter_check c = pcheck(&p, records[_i].limit, window, 1,
		    records[_i].on_over, false, true);
		struct limiter_result res;
		bool refused;
		size_t stop;

		run_mode(label, &c, 1, records[_i].mode, NULL, 0, NULL, 0, &refused,
		    &stop, &res);
		ck_assert_msg(res.over == (records[_i].limit < 2), "%s: call %u: "
		    "over %d", label, j + 1, res.over);
	}
	t1 = redis_now_ms(label);
	if (!records[_i].recorded) {
		ck_assert_msg(count_keys(label, p.k.top_key) == 0 &&
		    count_keys(label, p.k.topn_key) == 0, "%s: recorded: %lld "
		    "members, %lld counts", label,
		    redis_int(label, "ZCARD %s", p.k.top_key),
		    redis_int(label, "HLEN %s", p.k.topn_key));
		return;
	}
	score = redis_int(label, "ZSCORE %s a:b@c", p.k.top_key);
	ck_assert_msg(score >= t0 && score <= t1, "%s: score %lld, expected %"
	    PRId64 "..%" PRId64 " (ZRANGE: %s)", label, score, t0, t1,
	    tl_redis_command("ZRANGE %s 0 -1", p.k.top_key));
	n = redis_int(label, "HGET %s a:b@c", p.k.topn_key);
	ck_assert_msg(n == (long long)records[_i].calls, "%s: count %lld, expected %u",
	    label, n, records[_i].calls);
	ck_assert_msg(redis_int(label, "ZCARD %s", p.k.top_key) == 1 &&
	    redis_int(label, "HLEN %s", p.k.topn_key) == 1, "%s: more than one "
	    "member", label);
	for (int k = 0; k < 2; k++) {
		const char *key = k == 0 ? p.k.top_key : p.k.topn_key;
		long long pttl = redis_int(label, "PTTL %s", key);

		ck_assert_msg(pttl > 0 && (uint64_t)pttl <= window, "%s: %s has "
		    "PTTL %lld, expected 1..%" PRIu64, label, key, pttl, window);
	}
}
END_TEST

/*
 * The record is bounded: after 300 refusals of 300 keys, the 256 most
 * recent are in both keys and the 44 oldest in neither.  (Refusals in the
 * same ms tie on the score; the members sort by name in the order they came.)
 */
START_TEST(test_record_bounded)
{
	const char *label = "300 keys refused";
	struct pkeys p;
	const char *out;
	long long zcard = -1, hlen = -1, old = -1, missing = -1, notone = -1;

	for (int i = 0; i < 300; i++) {
		char key[16];
		struct limiter_check c;
		struct limiter_result res;
		bool refused;
		size_t stop;

		snprintf(key, sizeof(key), "k%03d", i);
		policy_keys(&p, "recbound", key);
		c = pcheck(&p, 0, MIN, 1, 'r', false, true);
		run(label, &c, 1, true, NULL, 0, NULL, 0, &refused, &stop, &res);
		ck_assert_msg(refused, "%s: %s not refused", label, key);
	}
	out = tl_redis_command("EVAL 'local old, missing, notone = 0, 0, 0 "
	    "for i = 0, 299 do local m = string.format(\"k%%03d\", i) "
	    "local z = redis.call(\"ZSCORE\", KEYS[1], m) "
	    "local h = redis.call(\"HGET\", KEYS[2], m) "
	    "if i < 44 then if z or h then old = old + 1 end "
	    "else if not z or not h then missing = missing + 1 "
	    "elseif h ~= \"1\" then notone = notone + 1 end end end "
	    "return redis.call(\"ZCARD\", KEYS[1]) .. \" \" .. "
	    "redis.call(\"HLEN\", KEYS[2]) .. \" \" .. old .. \" \" .. missing "
	    ".. \" \" .. notone' 2 %s %s", p.k.top_key, p.k.topn_key);
	ck_assert_msg(sscanf(out, "%lld %lld %lld %lld %lld", &zcard, &hlen, &old,
	    &missing, &notone) == 5, "%s: reading the record: \"%s\"", label, out);
	ck_assert_msg(zcard == 256 && hlen == 256, "%s: ZCARD %lld HLEN %lld, "
	    "expected 256 256", label, zcard, hlen);
	ck_assert_msg(old == 0 && missing == 0 && notone == 0, "%s: %lld of the 44 "
	    "oldest kept, %lld of the 256 newest missing, %lld counts not 1",
	    label, old, missing, notone);
}
END_TEST

/*
 * A member's count runs while its refusals come less than a window apart,
 * and starts again at 1 after a pause of a whole window, even when the
 * record lived on through another member.
 */
START_TEST(test_record_pause)
{
	const char *label = "a pause of a window";
	uint64_t window = 2 * SEC;
	struct pkeys x, y;
	struct limiter_check cx, cy;
	struct limiter_result res;
	bool refused;
	size_t stop;

	policy_keys(&x, "recpause", "x");
	policy_keys(&y, "recpause", "y");
	cx = pcheck(&x, 0, window, 1, 'r', false, true);
	cy = pcheck(&y, 0, window, 1, 'r', false, true);
	run(label, &cx, 1, true, NULL, 0, NULL, 0, &refused, &stop, &res);
	run(label, &cx, 1, true, NULL, 0, NULL, 0, &refused, &stop, &res);
	ck_assert_msg(redis_int(label, "HGET %s x", x.k.topn_key) == 2,
	    "%s: x refused twice: count %lld", label,
	    redis_int(label, "HGET %s x", x.k.topn_key));
	sleep_ms(1200);
	run(label, &cy, 1, true, NULL, 0, NULL, 0, &refused, &stop, &res);
	sleep_ms(1200);
	run(label, &cx, 1, true, NULL, 0, NULL, 0, &refused, &stop, &res);
	ck_assert_msg(redis_int(label, "HGET %s y", x.k.topn_key) == 1,
	    "%s: the record did not live on through y (too slow a machine?)", label);
	ck_assert_msg(redis_int(label, "HGET %s x", x.k.topn_key) == 1,
	    "%s: x refused 2.4 s after its last refusal (window 2 s): count %lld, "
	    "expected 1", label, redis_int(label, "HGET %s x", x.k.topn_key));
}
END_TEST

/* ---- peek */

#define PEEK_KEYS 8

/* What a key is: DEBUG DIGEST-VALUE (value and type) and PEXPIRETIME. */
struct snap {
	char digest[PEEK_KEYS][64];
	long long expire[PEEK_KEYS];
};

static void
snapshot(const char *label, const char *const *keys, struct snap *s)
{
	for (size_t i = 0; i < PEEK_KEYS; i++) {
		snprintf(s->digest[i], sizeof(s->digest[i]), "%s",
		    tl_redis_command("DEBUG DIGEST-VALUE %s", keys[i]));
		ck_assert_msg(strlen(s->digest[i]) == 40, "%s: DEBUG DIGEST-VALUE %s: "
		    "\"%s\"", label, keys[i], s->digest[i]);
		s->expire[i] = redis_int(label, "PEXPIRETIME %s", keys[i]);
	}
}

/*
 * A peek changes nothing at all: not a stale bucket, not an expired member
 * of a live list (the one looked up nor the others), not an expired
 * override, no refusal record, no give-back, no counter created; every key
 * has the same value and expiry time after it.  It reports what a normal
 * call reports (count of the buckets in the window only, over, retry,
 * limit), and in field the bucket LIMITER_RESERVE would have reserved.  A
 * normal call after it does change what the peek left: the setup had
 * something to change.
 */
START_TEST(test_peek)
{
	const char *label = "peek";
	uint64_t window = MIN, bucket = limiter_bucket_ms(window);
	struct pkeys pc, pd, pn, pg;
	const char *list = "lim:list:peek";
	const char *members[2] = { "gone", "here" };
	const size_t memberlens[2] = { 4, 4 };
	struct limiter_check c1[3], c2;
	struct limiter_back back;
	struct limiter_result r1[3], r2, n1[3], n2;
	struct snap before, after;
	int64_t now, old, live, here, t0, t1, tn;
	bool refused;
	size_t stop;

	policy_keys(&pc, "peek", "c");
	policy_keys(&pd, "peek", "d");
	policy_keys(&pn, "peek", "new");
	policy_keys(&pg, "peek", "g");
	const char *keys[PEEK_KEYS] = { pc.counter, pd.counter, pn.counter,
	    pg.counter, list, pc.k.override_key, pc.k.top_key, pc.k.topn_key };

	now = redis_now_ms(label);
	old = now - 2 * (int64_t)window;
	old -= old % (int64_t)bucket;
	live = now - 5000;
	live -= live % (int64_t)bucket;
	here = now / 1000 + 3600;
	/* c: 7 stale units and 2 live; d the same with 4 stale; g: 3 live. */
	tl_redis_command("HSET %s %" PRId64 " 7 %" PRId64 " 2", pc.counter, old, live);
	tl_redis_command("HSET %s %" PRId64 " 4 %" PRId64 " 2", pd.counter, old, live);
	tl_redis_command("HSET %s %" PRId64 " 3", pg.counter, live);
	tl_redis_command("ZADD %s %" PRId64 " gone %" PRId64 " x1 %" PRId64 " x2 %"
	    PRId64 " here", list, now / 1000 - 10, now / 1000 - 20, now / 1000 - 30,
	    here);
	tl_redis_command("HSET %s c '9 %" PRId64 "' d '9 %" PRId64 "'",
	    pc.k.override_key, now - 1000, now - 1000);
	for (size_t i = 0; i < 6; i++)
		if (i != 2)
			tl_redis_command("PEXPIRE %s %" PRIu64, keys[i], 2 * window);

	/* 1: a lookup (soft) found, c fits, a new key fits; a give-back. */
	memset(&c1[0], 0, sizeof(c1[0]));
	c1[0].key = list;
	c1[0].keylen = strlen(list);
	c1[0].members = members;
	c1[0].memberlens = memberlens;
	c1[0].nmembers = 2;
	c1[0].on_over = LIMITER_SOFT;
	c1[0].on_fail = LIMITER_REFUSE;
	c1[1] = pcheck(&pc, 5, window, 1, 'r', true, true);
	c1[2] = pcheck(&pn, 5, window, 1, 'r', true, true);
	back.key = pg.counter;
	back.keylen = pg.len;
	back.field = live;
	back.amount = 1;
	/* 2: d over its limit, refused: an "if refused" give-back. */
	c2 = pcheck(&pd, 2, window, 1, 'r', true, true);

	snapshot(label, keys, &before);
	t0 = redis_now_ms(label);
	run_mode(label, c1, 3, LIMITER_PEEK, &back, 1, NULL, 0, &refused, &stop, r1);
	ck_assert_msg(!refused && stop == 3, "%s: call 1: refused %d stop %zu",
	    label, refused, stop);
	run_mode(label, &c2, 1, LIMITER_PEEK, NULL, 0, &back, 1, &refused, &stop, &r2);
	ck_assert_msg(refused && stop == 0, "%s: call 2: refused %d stop %zu",
	    label, refused, stop);
	t1 = redis_now_ms(label);
	snapshot(label, keys, &after);
	for (size_t i = 0; i < PEEK_KEYS; i++)
		ck_assert_msg(strcmp(before.digest[i], after.digest[i]) == 0 &&
		    before.expire[i] == after.expire[i], "%s: %s changed: digest %s "
		    "-> %s, expiry %lld -> %lld", label, keys[i], before.digest[i],
		    after.digest[i], before.expire[i], after.expire[i]);
	ck_assert_msg(count_keys(label, "lim:*:peek*") == 5, "%s: %lld keys, "
	    "expected 5", label, count_keys(label, "lim:*:peek*"));

	/* What the peek reported. */
	ck_assert_msg(r1[0].over && !r1[0].failed && r1[0].count == 2 &&
	    r1[0].retry_ms == (uint64_t)here && r1[0].field == -1, "%s: lookup: "
	    "over %d failed %d count %" PRIu64 " retry %" PRIu64 " field %" PRId64,
	    label, r1[0].over, r1[0].failed, r1[0].count, r1[0].retry_ms, r1[0].field);
	for (size_t i = 1; i < 3; i++) {
		uint64_t want = i == 1 ? 2 : 0;

		ck_assert_msg(!r1[i].over && r1[i].count == want && r1[i].limit == 5,
		    "%s: count %zu: over %d count %" PRIu64 " limit %" PRIu64
		    ", expected 0 %" PRIu64 " 5", label, i, r1[i].over, r1[i].count,
		    r1[i].limit, want);
		ck_assert_msg(r1[i].field >= t0 - (int64_t)bucket && r1[i].field <= t1 &&
		    r1[i].field % (int64_t)bucket == 0, "%s: count %zu: field %" PRId64
		    ", expected the bucket of %" PRId64 "..%" PRId64, label, i,
		    r1[i].field, t0, t1);
	}
	ck_assert_msg(r2.over && r2.count == 2 && r2.limit == 2 && r2.field == -1 &&
	    r2.retry_ms > 0 && (int64_t)r2.retry_ms <= live + (int64_t)(bucket +
	    window) - t0, "%s: over: over %d count %" PRIu64 " limit %" PRIu64
	    " field %" PRId64 " retry %" PRIu64, label, r2.over, r2.count, r2.limit,
	    r2.field, r2.retry_ms);

	/* The same calls, normal: the same report, and the changes. */
	run_mode(label, c1, 3, LIMITER_CHECK_ONLY, &back, 1, NULL, 0, &refused, &stop, n1);
	ck_assert_msg(!refused && stop == 3, "%s: normal call 1: refused %d stop %zu",
	    label, refused, stop);
	run_mode(label, &c2, 1, LIMITER_CHECK_ONLY, NULL, 0, &back, 1, &refused, &stop, &n2);
	ck_assert_msg(refused && stop == 0, "%s: normal call 2: refused %d stop %zu",
	    label, refused, stop);
	tn = redis_now_ms(label);
	for (size_t i = 0; i < 3; i++)
		ck_assert_msg(n1[i].over == r1[i].over && n1[i].count == r1[i].count &&
		    n1[i].retry_ms == r1[i].retry_ms && n1[i].limit == r1[i].limit,
		    "%s: check %zu: peek over %d count %" PRIu64 " retry %" PRIu64
		    " limit %" PRIu64 ", normal %d %" PRIu64 " %" PRIu64 " %" PRIu64,
		    label, i, r1[i].over, r1[i].count, r1[i].retry_ms, r1[i].limit,
		    n1[i].over, n1[i].count, n1[i].retry_ms, n1[i].limit);
	ck_assert_msg(n2.over && n2.count == r2.count && n2.limit == r2.limit &&
	    n2.retry_ms <= r2.retry_ms && r2.retry_ms - n2.retry_ms <=
	    (uint64_t)(tn - t0), "%s: over: peek retry %" PRIu64 ", normal %"
	    PRIu64 " (%" PRId64 " ms later)", label, r2.retry_ms, n2.retry_ms, tn - t0);
	ck_assert_msg(hget(label, pc.counter, pc.len, old) == -1 &&
	    hget(label, pd.counter, pd.len, old) == -1, "%s: the normal call kept "
	    "a stale bucket", label);
	ck_assert_msg(redis_int(label, "ZCARD %s", list) == 1, "%s: the normal "
	    "call left %lld members, expected here alone", label,
	    redis_int(label, "ZCARD %s", list));
	ck_assert_msg(redis_int(label, "HLEN %s", pc.k.override_key) == 0,
	    "%s: the normal calls left an expired override", label);
	ck_assert_msg(redis_int(label, "HGET %s d", pd.k.topn_key) == 1,
	    "%s: the normal refusal is not recorded", label);
	ck_assert_msg(hget(label, pg.counter, pg.len, live) == 1, "%s: the normal "
	    "give-backs left %lld units of 3, expected 1", label,
	    hget(label, pg.counter, pg.len, live));
	ck_assert_msg(count_keys(label, pn.counter) == 0, "%s: a check-only call "
	    "created a counter", label);
}
END_TEST

/* ---- limiter_keys and limiter_counter_key */

/*
 * limiter_keys names a policy's override hash, record and counts under the
 * prefix, and refuses (-1) when the longest, the override hash's name,
 * does not fit its 400 bytes with its NUL: 399 octets fit, 400 do not.
 */
START_TEST(test_keys)
{
	static const struct {
		const char *prefix, *policy;
		const char *ov, *top, *topn;
	} cases[] = {
		{ "lim:", "p", "lim:override:p", "lim:top:p", "lim:topn:p" },
		{ "", "x", "override:x", "top:x", "topn:x" },
		{ "pm:{a}:", "per sender", "pm:{a}:override:per sender",
		    "pm:{a}:top:per sender", "pm:{a}:topn:per sender" },
	};
	struct limiter_keys k;
	char prefix[400], policy[32];

	for (size_t i = 0; i < NELEM(cases); i++) {
		memset(&k, 'z', sizeof(k));
		ck_assert_msg(limiter_keys(cases[i].prefix, cases[i].policy, &k) == 0,
		    "%s: -1", cases[i].ov);
		ck_assert_str_eq(k.override_key, cases[i].ov);
		ck_assert_str_eq(k.top_key, cases[i].top);
		ck_assert_str_eq(k.topn_key, cases[i].topn);
	}
	/* "<380 x>override:<10 p>" is 399 octets; one more p is 400. */
	memset(prefix, 'x', 380);
	prefix[380] = '\0';
	snprintf(policy, sizeof(policy), "pppppppppp");
	ck_assert_msg(limiter_keys(prefix, policy, &k) == 0, "399 octets refused");
	ck_assert_uint_eq(strlen(k.override_key), 399);
	ck_assert_msg(strncmp(k.override_key + 380, "override:pppppppppp", 20) == 0 &&
	    strcmp(k.topn_key + 380, "topn:pppppppppp") == 0, "399 octets: %s",
	    k.override_key + 380);
	snprintf(policy, sizeof(policy), "ppppppppppp");
	ck_assert_msg(limiter_keys(prefix, policy, &k) == -1, "400 octets accepted");
	memset(prefix, 'x', 399);
	prefix[399] = '\0';
	ck_assert_msg(limiter_keys(prefix, "p", &k) == -1, "a 399-octet prefix accepted");
}
END_TEST

/*
 * limiter_counter_key writes "<prefix>rl:<policy>:<key>" (key binary safe)
 * with its NUL, sets total to its length and returns where key starts; a
 * buffer one octet too short is 0, and so is a prefix longer than it.
 */
START_TEST(test_counter_key)
{
	char buf[64], prefix[100];
	size_t total = 0, off;

	off = limiter_counter_key("lim:", "p", BYTES("k"), buf, sizeof(buf), &total);
	ck_assert_uint_eq(off, 9);
	ck_assert_uint_eq(total, 10);
	ck_assert_str_eq(buf, "lim:rl:p:k");

	off = limiter_counter_key("pm:", "per sender", BYTES("a\0b:c"), buf,
	    sizeof(buf), &total);
	ck_assert_uint_eq(off, 17);
	ck_assert_uint_eq(total, 22);
	ck_assert_msg(memcmp(buf, "pm:rl:per sender:a\0b:c", 23) == 0,
	    "binary key: \"%.*s\"", (int)total, buf);

	/* "lim:rl:p:" + "abc" + NUL: 13 octets fit in 13, not in 12. */
	total = 0;
	off = limiter_counter_key("lim:", "p", BYTES("abc"), buf, 13, &total);
	ck_assert_uint_eq(off, 9);
	ck_assert_uint_eq(total, 12);
	ck_assert_str_eq(buf, "lim:rl:p:abc");
	total = 77;
	off = limiter_counter_key("lim:", "p", BYTES("abc"), buf, 12, &total);
	ck_assert_uint_eq(off, 0);
	ck_assert_uint_eq(total, 77);

	memset(prefix, 'x', 99);
	prefix[99] = '\0';
	off = limiter_counter_key(prefix, "p", BYTES("k"), buf, sizeof(buf), &total);
	ck_assert_uint_eq(off, 0);
}
END_TEST

static Suite *
limiter_suite(void)
{
	Suite *s = suite_create("limiter");
	TCase *tc;

	tc = tcase_create("script");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_boundary, 0, (int)NELEM(bounds));
	tcase_add_loop_test(tc, test_all_or_nothing, 0, (int)NELEM(aons));
	tcase_add_loop_test(tc, test_give_back, 0, (int)NELEM(backs));
	tcase_add_loop_test(tc, test_bucket_width, 0, (int)NELEM(bucket_widths));
	tcase_add_loop_test(tc, test_stale, 0, (int)NELEM(stales));
	tcase_add_loop_test(tc, test_binary_key, 0, (int)NELEM(bins));
	tcase_add_loop_test(tc, test_concurrency, 0, (int)NELEM(races));
	tcase_add_test(tc, test_deadline_script);
	tcase_add_test(tc, test_deadline_stall);
	tcase_add_loop_test(tc, test_override, 0, (int)NELEM(overrides));
	tcase_add_test(tc, test_override_expired_peek);
	tcase_add_test(tc, test_override_many);
	tcase_add_loop_test(tc, test_record, 0, (int)NELEM(records));
	tcase_add_test(tc, test_record_bounded);
	tcase_add_test(tc, test_peek);
	tcase_add_test(tc, test_keys);
	tcase_add_test(tc, test_counter_key);
	suite_add_tcase(s, tc);

	tc = tcase_create("time");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_loop_test(tc, test_window, 0, (int)NELEM(windows));
	tcase_add_loop_test(tc, test_refill, 0, (int)NELEM(refills));
	tcase_add_loop_test(tc, test_sliding, 0, (int)NELEM(slides));
	tcase_add_test(tc, test_record_pause);
	suite_add_tcase(s, tc);

	tc = tcase_create("hygiene");
	tcase_add_test(tc, test_all_keys_expire);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	snprintf(address, sizeof(address), "unix:%s", tl_redis_start());
	return tl_run(limiter_suite());
}
