/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * ledger - reservations of the message in progress (see ledger.h).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/ledger.h"
#include "milter/log.h"
#include "milter/store_redis.h"

enum limiter_over
ledger_on_over(const struct cfg_policy *p)
{
	if (p->dry_run)
		return LIMITER_SOFT;
	if (p->action == POLICY_REJECT || p->action == POLICY_TEMPFAIL)
		return LIMITER_REFUSE;
	return p->action == POLICY_ACCEPT ? LIMITER_ACCEPT : LIMITER_SOFT;
}

int
ledger_add(struct session *s, const struct session_resv *add)
{
	struct session_resv *r;

	if (s->msg.nresv == s->msg.resv_cap) {
		size_t cap = s->msg.resv_cap ? s->msg.resv_cap * 2 : 4;
		r = realloc(s->msg.resv, cap * sizeof(*r));
		if (r == NULL)
			return -1;
		s->msg.resv = r;
		s->msg.resv_cap = cap;
	}
	r = &s->msg.resv[s->msg.nresv];
	*r = *add;
	if ((r->key = malloc(add->keylen + 1)) == NULL)
		return -1;
	memcpy(r->key, add->key, add->keylen);
	r->key[add->keylen] = '\0';
	s->msg.nresv++;
	return 0;
}

uint64_t
ledger_held(const struct session *s, const char *key, size_t keylen)
{
	uint64_t n = 0;

	for (size_t i = 0; i < s->msg.nresv; i++) {
		const struct session_resv *r = &s->msg.resv[i];
		if (r->keylen == keylen && memcmp(r->key, key, keylen) == 0)
			n += r->amount;
	}
	return n;
}

bool
ledger_holds(const struct session *s, const struct cfg_policy *p, const char *key,
    size_t keylen)
{
	for (size_t i = 0; i < s->msg.nresv; i++) {
		const struct session_resv *r = &s->msg.resv[i];
		if (r->policy == p && r->keylen == keylen && memcmp(r->key, key, keylen) == 0)
			return true;
	}
	return false;
}

void
ledger_forget(struct session *s)
{
	for (size_t i = 0; i < s->msg.nresv; i++)
		free(s->msg.resv[i].key);
	s->msg.nresv = 0;
}

static void
redis_trouble(const char *what, const char *err)
{
	static struct log_throttle throttle;

	log_ratelimited(&throttle, 10, LOG_WARNING, "redis: %s: %s", what, err);
}

void
ledger_give_back(struct session *s)
{
	struct limiter_back *b;
	char err[256];
	bool refused;
	size_t stop;

	if (s->msg.nresv == 0)
		return;
	/* Peeking, nothing was reserved in Redis: nothing goes back. */
	if (!s->peek && s->cfg != NULL && s->cfg->redis != NULL &&
	    (b = calloc(s->msg.nresv, sizeof(*b))) != NULL) {
		for (size_t i = 0; i < s->msg.nresv; i++)
			b[i] = (struct limiter_back){ s->msg.resv[i].key, s->msg.resv[i].keylen,
			    s->msg.resv[i].field, s->msg.resv[i].amount };
		if (limiter_run(s->cfg->redis->store, NULL, 0, LIMITER_CHECK_ONLY, b,
		    s->msg.nresv, NULL, 0, &refused, &stop, NULL, err, sizeof(err)) != 0)
			redis_trouble("cannot give back units", err);
		free(b);
	}
	ledger_forget(s);
}

int
ledger_settle(struct session *s, bool covered, struct ledger_check *out,
    size_t *nout, bool *refused, char *err, size_t errlen)
{
	size_t nres = s->msg.nresv, nc = 0, na = 0, stop;
	struct limiter_check *checks;
	struct limiter_back *always, *all;
	struct limiter_result *res;
	void *block;
	int rc = -1;

	*nout = 0;
	*refused = false;
	if (nres == 0)
		return 0;
	/* One allocation for the call's four arrays. */
	block = calloc(nres, sizeof(*checks) + sizeof(*res) + 2 * sizeof(*always));
	if (block == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	checks = block;
	res = (struct limiter_result *)(void *)(checks + nres);
	always = (struct limiter_back *)(void *)(res + nres);
	all = always + nres;
	for (size_t i = 0; i < nres; i++) {
		const struct session_resv *r = &s->msg.resv[i];

		all[i] = (struct limiter_back){ r->key, r->keylen, r->field, r->amount };
		if (!(r->policy->stages & POLICY_STAGE(POLICY_EOM)))
			continue;
		if (s->msg.size > r->amount) {
			out[nc].resv = r;
			checks[nc++] = (struct limiter_check){ .key = r->key,
			    .keylen = r->keylen, .limit = r->limit, .window_ms = r->window_ms,
			    .amount = s->msg.size - r->amount,
			    .on_over = covered ? LIMITER_SOFT : ledger_on_over(r->policy),
			    .keyoff = r->keyoff };
			if (r->policy->keys != NULL) {
				checks[nc - 1].override_key = r->policy->keys->override_key;
				checks[nc - 1].top_key = r->policy->keys->top_key;
				checks[nc - 1].topn_key = r->policy->keys->topn_key;
			}
		} else if (s->msg.size < r->amount) {
			always[na++] = (struct limiter_back){ r->key, r->keylen, r->field,
			    r->amount - s->msg.size };
		}
	}
	*nout = nc;
	if (nc + na == 0) {
		rc = 0;
		goto out;
	}
	if (limiter_run(s->cfg->redis->store, checks, nc,
	    s->peek ? LIMITER_PEEK : LIMITER_RESERVE, always, na,
	    all, nres, refused, &stop, res, err, errlen) != 0)
		goto out;
	for (size_t j = 0; j < nc; j++)
		out[j].res = res[j];
	rc = 0;
out:
	free(block);
	return rc;
}
