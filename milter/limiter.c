/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * limiter - the rate-limit script and its one call per stage (limiter.h).
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/limiter.h"
#include "milter/store_redis.h"

#define BUCKETS_PER_WINDOW 60

/* The script's text, limiter_script[], is milter/limiter.lua compiled in
 * (limiter-script.c, made by the build). */


static struct store_script script = { limiter_script, true, "", 0 };

/* The script's word for what an over check does: the one place it is spelt. */
static char
wire(enum limiter_over o)
{
	switch (o) {
	case LIMITER_REFUSE: return 'r';
	case LIMITER_ACCEPT: return 'a';
	default: return 's';
	}
}

uint64_t
limiter_bucket_ms(uint64_t window_ms)
{
	uint64_t b = window_ms / BUCKETS_PER_WINDOW;
	return b > 0 ? b : 1;
}

int
limiter_keys(const char *prefix, const char *policy, struct limiter_keys *k)
{
	size_t len = sizeof(k->override_key);

	if ((size_t)snprintf(k->override_key, len, "%soverride:%s", prefix, policy) >= len ||
	    (size_t)snprintf(k->top_key, len, "%stop:%s", prefix, policy) >= len ||
	    (size_t)snprintf(k->topn_key, len, "%stopn:%s", prefix, policy) >= len)
		return -1;
	return 0;
}

size_t
limiter_counter_key(const char *prefix, const char *policy, const char *key,
    size_t keylen, char *buf, size_t len, size_t *total)
{
	int n = snprintf(buf, len, "%srl:%s:", prefix, policy);

	if (n < 0 || (size_t)n + keylen + 1 > len)
		return 0;
	memcpy(buf + n, key, keylen);
	buf[(size_t)n + keylen] = '\0';
	*total = (size_t)n + keylen;
	return (size_t)n;
}

int
limiter_decode(const redisReply *r, size_t nc, bool *refused, size_t *stop,
    struct limiter_result *res, char *err, size_t errlen)
{
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, "policy script: %.*s", (int)(r->len < 400 ? r->len : 400),
		    r->str);
		return -1;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 + nc * 5) {
		snprintf(err, errlen, "policy script: unexpected reply");
		return -1;
	}
	for (size_t i = 0; i < r->elements; i++) {
		if (r->element[i]->type != REDIS_REPLY_INTEGER) {
			snprintf(err, errlen, "policy script: unexpected reply");
			return -1;
		}
	}
	if (r->element[1]->integer < 0 || (size_t)r->element[1]->integer > nc) {
		snprintf(err, errlen, "policy script: unexpected reply");
		return -1;
	}
	*refused = r->element[0]->integer != 0;
	*stop = (size_t)r->element[1]->integer;
	for (size_t i = 0; i < nc; i++) {
		redisReply **e = r->element + 2 + i * 5;
		res[i].skipped = e[0]->integer == -2;
		res[i].failed = e[0]->integer == -1;
		res[i].over = e[0]->integer > 0;
		res[i].count = e[1]->integer > 0 ? (uint64_t)e[1]->integer : 0;
		res[i].retry_ms = e[2]->integer > 0 ? (uint64_t)e[2]->integer : 0;
		res[i].field = e[3]->integer;
		res[i].limit = e[4]->integer > 0 ? (uint64_t)e[4]->integer : 0;
	}
	return 0;
}

int
limiter_run(struct store *st, const struct limiter_check *checks, size_t nc,
    enum limiter_reserve reserve, const struct limiter_back *always, size_t na,
    const struct limiter_back *if_refused, size_t nr,
    bool *refused, size_t *stop, struct limiter_result *res, char *err, size_t errlen)
{
	size_t nkeys = nc + na + nr, nargs = 5 + (na + nr) * 2, first_back, next;
	/* ARGV[1], the deadline, is the store's (store_script.deadline). */
	const char **keys, **args;
	size_t *keylens, *arglens;
	char (*num)[24];
	void *block;
	redisReply *r = NULL;
	size_t k = 0, a = 0, u = 0;
	int rc = -1;

	for (size_t i = 0; i < nc; i++) {
		nargs += checks[i].nmembers > 0 ? 4 + checks[i].nmembers : 9;
		if (checks[i].nmembers == 0)
			nkeys += (checks[i].override_key != NULL) + 2 * (checks[i].top_key != NULL);

	}
	/* Lua counts from 1, and the deadline comes first. */
	first_back = nargs - (na + nr) * 2 + 2;
	/* One allocation: key and argument pointers, their lengths, then the
	 * text of the numbers (at most one per argument). */
	block = calloc(1, (nkeys + 1 + nargs) * (sizeof(char *) + sizeof(size_t)) +
	    nargs * sizeof(*num));
	if (block == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	keys = block;
	args = keys + nkeys + 1;
	keylens = (size_t *)(void *)(args + nargs);
	arglens = keylens + nkeys + 1;
	num = (char (*)[24])(void *)(arglens + nargs);
	/* Numbers and one-letter words go through num[]; members as they are. */
#define ARG_F(fmt, v) (snprintf(num[u], sizeof(num[u]), fmt, v), \
	args[a] = num[u], arglens[a++] = strlen(num[u++]))
#define ARG_U(v) ARG_F("%" PRIu64, (uint64_t)(v))
#define ARG_I(v) ARG_F("%" PRId64, (int64_t)(v))
#define ARG_C(c) ARG_F("%c", c)
#define ARG_ON_OVER(c) (c->outlives_accept ? ARG_F("%c+", wire(c->on_over)) : \
	ARG_C(wire(c->on_over)))
	next = nc + na + nr;
	ARG_U(nc);
	ARG_U(reserve);
	ARG_U(na);
	ARG_U(nr);
	ARG_U(first_back);
	for (size_t i = 0; i < nc; i++) {
		const struct limiter_check *c = &checks[i];

		keys[k] = c->key;
		keylens[k++] = c->keylen;
		if (c->nmembers > 0) {
			ARG_C('l');
			ARG_ON_OVER(c);
			ARG_C(c->on_fail == LIMITER_REFUSE ? 'r' : 's');
			ARG_U(c->nmembers);
			for (size_t j = 0; j < c->nmembers; j++) {
				args[a] = c->members[j];
				arglens[a++] = c->memberlens[j];
			}
			continue;
		}
		ARG_C('c');
		ARG_U(c->limit);
		ARG_U(c->window_ms);
		ARG_U(limiter_bucket_ms(c->window_ms));
		ARG_U(c->amount);
		ARG_ON_OVER(c);
		/* The override and record keys go after the give-backs' (Lua
		 * counts from 1: KEYS[next + 1] is keys[next]). */
		ARG_U(c->override_key != NULL ? next + 1 : 0);
		if (c->override_key != NULL) {
			keys[next] = c->override_key;
			keylens[next++] = strlen(c->override_key);
		}
		ARG_U(c->top_key != NULL ? next + 1 : 0);
		if (c->top_key != NULL) {
			keys[next] = c->top_key;
			keylens[next++] = strlen(c->top_key);
			keys[next] = c->topn_key;
			keylens[next++] = strlen(c->topn_key);
		}
		ARG_U(c->keyoff);
	}
	for (size_t pass = 0; pass < 2; pass++) {
		const struct limiter_back *b = pass == 0 ? always : if_refused;
		for (size_t i = 0; i < (pass == 0 ? na : nr); i++) {
			keys[k] = b[i].key;
			keylens[k++] = b[i].keylen;
			ARG_I(b[i].field);
			ARG_U(b[i].amount);
		}
	}
#undef ARG_F
#undef ARG_U
#undef ARG_I
#undef ARG_C
#undef ARG_ON_OVER
	r = store_eval(st, &script, (int)nkeys, keys, keylens, (int)nargs, args, arglens,
	    err, errlen);
	if (r == NULL)
		goto out;
	if (limiter_decode(r, nc, refused, stop, res, err, errlen) != 0)
		goto out;
	rc = 0;
out:
	store_reply_free(r);
	free(block);
	return rc;
}
