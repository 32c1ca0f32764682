/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check - the configuration check shared by the daemon and the ctl tool
 * (see check.h).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "milter/cfg.h"
#include "milter/check.h"
#include "milter/limiter.h"
#include "milter/stats.h"
#include "milter/store_redis.h"

/*
 * The command an ACL refused, from Redis's error: named outright ("no
 * permissions to run the 'hincrby' command"), or inside a script only by
 * its line ("... script: <sha>, on @user_script:168."), which names the
 * redis.call (or redis.pcall) on that line of the policy or statistics
 * script.
 */
static const char *
denied_command(const char *err, char *out, size_t outlen)
{
	const char *p, *text;
	unsigned long line;

	if ((p = strstr(err, "permissions to run the '")) != NULL) {
		p += strlen("permissions to run the '");
		snprintf(out, outlen, "%.*s", (int)strcspn(p, "'"), p);
		return out;
	}
	if (strstr(err, "can't run this command") == NULL)
		return NULL;
	/* Raised again by the policy script, which names it: "... [ZMSCORE]" */
	if ((p = strchr(err, '[')) != NULL && strchr(p, ']') != NULL) {
		snprintf(out, outlen, "%.*s", (int)strcspn(p + 1, "]"), p + 1);
		return out;
	}
	if ((p = strstr(err, "@user_script:")) == NULL)
		return NULL;
	line = strtoul(p + strlen("@user_script:"), NULL, 10);
	text = strstr(err, "statistics:") != NULL ? stats_script_text() : limiter_script;
	for (unsigned long n = 1; n < line && text != NULL; n++)
		if ((text = strchr(text, '\n')) != NULL)
			text++;
	/* redis.call(' or redis.pcall(' */
	if (text == NULL || (p = strstr(text, "call('")) == NULL ||
	    (strchr(text, '\n') != NULL && p > strchr(text, '\n')))
		return NULL;
	p += strlen("call('");
	snprintf(out, outlen, "%.*s", (int)strcspn(p, "'"), p);
	for (char *q = out; *q != '\0'; q++)
		*q = (char)(*q >= 'a' && *q <= 'z' ? *q - 'a' + 'A' : *q);
	return out;
}

/*
 * -n --connect: reach Redis as the daemon would and run, on scratch keys
 * that vanish by themselves, what the daemon runs: the connection's
 * set-up (AUTH, SELECT, the version check, TIME), SCRIPT LOAD and EVALSHA
 * of the policy script with a count (HGETALL, HGET of its override,
 * HINCRBY, PEXPIRE, then a give-back: HGET, HDEL) and a live-list lookup
 * (ZRANGEBYSCORE, ZMSCORE or ZSCORE), a count that refuses (its record:
 * TYPE, ZSCORE, HSET, ZADD, ZCARD, PEXPIRE), and the statistics flush (GET,
 * SET).  Says which command an ACL denies.  0, or 1 after printing why.
 */
static int
check_redis(struct cfg *c)
{
	char key[400], key0[400], lkey[300], err[512] = "", scratch[64];
	struct limiter_keys keys;
	struct limiter_check chk[2];
	struct limiter_result res[2];
	struct limiter_back back;
	const char *member = "x";
	size_t memberlen = 1, stop, keylen, key0len, off, off0;
	bool refused;
	const char *denied;
	char cmd[32];

	if (c->redis == NULL) {
		printf("no redis settings: nothing to connect to\n");
		return 0;
	}
	snprintf(scratch, sizeof(scratch), "__policy-milter-check__:%ld", (long)getpid());
	if (limiter_keys(c->redis->prefix, scratch, &keys) != 0 ||
	    (off = limiter_counter_key(c->redis->prefix, scratch, "k", 1, key, sizeof(key),
	    &keylen)) == 0 ||
	    (off0 = limiter_counter_key(c->redis->prefix, scratch, "refused", 7, key0,
	    sizeof(key0), &key0len)) == 0) {
		fprintf(stderr, "Redis: the key prefix is too long\n");
		return 1;
	}
	chk[0] = (struct limiter_check){ .key = key, .keylen = keylen, .limit = 10,
	    .window_ms = 60000, .amount = 1, .on_over = LIMITER_REFUSE,
	    .override_key = keys.override_key, .top_key = keys.top_key,
	    .topn_key = keys.topn_key, .keyoff = off };
	snprintf(lkey, sizeof(lkey), "%sblock:%s", c->redis->prefix, scratch);
	chk[1] = (struct limiter_check){ .key = lkey, .keylen = strlen(lkey),
	    .on_over = LIMITER_REFUSE, .members = &member, .memberlens = &memberlen,
	    .nmembers = 1 };
	if (limiter_run(c->redis->store, chk, 2, LIMITER_RESERVE, NULL, 0, NULL, 0,
	    &refused, &stop, res, err, sizeof(err)) != 0)
		goto fail;
	if (res[1].failed) {
		snprintf(err, sizeof(err), "the live-list lookup on %s failed", lkey);
		goto fail;
	}
	back = (struct limiter_back){ key, keylen, res[0].field, 1 };
	if (res[0].field >= 0 && limiter_run(c->redis->store, NULL, 0,
	    LIMITER_CHECK_ONLY, &back, 1, NULL, 0, &refused, &stop, NULL, err,
	    sizeof(err)) != 0)
		goto fail;
	/* A count over its limit (0): refused, and noted in its record. */
	chk[0].key = key0;
	chk[0].keylen = key0len;
	chk[0].keyoff = off0;
	chk[0].limit = 0;
	if (limiter_run(c->redis->store, chk, 1, LIMITER_RESERVE, NULL, 0, NULL, 0,
	    &refused, &stop, res, err, sizeof(err)) != 0)
		goto fail;
	if (!refused) {
		snprintf(err, sizeof(err), "a count over its limit was not refused");
		goto fail;
	}
	if (stats_check(c->redis->store, c->redis->prefix, err, sizeof(err)) != 0)
		goto fail;
	printf("Redis OK: connected, version checked, the policy script (counting, "
	    "refusing, a live list) and the statistics flush ran\n");
	return 0;
fail:
	fprintf(stderr, "Redis: %s\n", err);
	if ((denied = denied_command(err, cmd, sizeof(cmd))) != NULL)
		fprintf(stderr, "the Redis user may not run %s: allow it in its ACL "
		    "(README: Redis)\n", denied);
	return 1;
}

static void
report_stderr(void *arg, bool is_error, const char *msg)
{
	(void)arg;
	(void)is_error;
	fprintf(stderr, "%s\n", msg);
}

int
check_config(const char *path, bool connect)
{
	struct cfg *c;
	int rc;

	if ((c = cfg_load(path, NULL, report_stderr, NULL)) == NULL)
		return 1;
	printf("configuration OK: %s, %zu policies\n", path, c->npolicies);
	rc = connect ? check_redis(c) : 0;
	cfg_unref(c);
	stats_reset();
	return rc;
}
