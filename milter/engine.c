/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * engine - policy evaluation and decisions (see engine.h).
 *
 * A stage is evaluated in two steps so that it costs at most one Redis
 * round trip and still means exactly "policies in file order, first
 * decisive one wins":
 *
 *   1. plan: every applicable policy is looked at in file order.  In-memory
 *      policies are checked at once (pure functions); counting policies say
 *      what they would count.  The first in-memory policy that refuses ends
 *      the plan: nothing after it can matter.  So does one that accepts,
 *      except at RCPT, where an accept covers only its recipient: the plan
 *      goes on with the message-level policies (per_recipient false).
 *   2. one limiter call checks the counting policies and live lists planned,
 *      all at once and atomically, and reserves their units unless the
 *      stage is going to refuse anyway (a refused attempt never counts).
 *      An accept found in Redis covers the checks after it the same way.
 *   3. walk: the plan is walked in file order with all results known;
 *      statistics, log lines and the verdict come from the walk.
 *
 * With delay_mail (README "Live lists in Redis"), a MAIL whose outcome
 * only its live lists can change is not run at MAIL: its plan is kept, the
 * first RCPT plans after it and makes the one call for both (MAIL's lookups
 * first, an accept among them stopping the call like a refusal, since it
 * covers the RCPT checks too), and walks MAIL, then RCPT unless MAIL ended
 * it.  A MAIL refusal found then is the answer to every RCPT of the message.
 *
 * What an accept covers (README "What an accept covers"): at CONNECT and
 * HELO the connection, at MAIL the message, at RCPT that recipient.  A
 * discard or quarantine decided earlier stands whatever accepts later.
 *
 * Reservations live in the message's ledger (milter/ledger.h): given back
 * when it does not end in acceptance (engine_release), settled and kept at
 * end of message.
 */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/engine.h"
#include "milter/ledger.h"
#include "milter/limiter.h"
#include "milter/log.h"
#include "milter/stats.h"
#include "milter/store_redis.h"
#include "milter/units.h"

/* One policy of the stage being evaluated. */
struct item {
	const struct cfg_policy *p;
	bool counting;
	bool active;               /* counting: something to check at this stage */
	bool hit;                  /* in-memory: the policy is hit */
	bool lookup;               /* not hit in memory: look up its live list */
	bool outlives;             /* at RCPT, not covered by an accept (message-level) */
	bool after_refusal;        /* at RCPT, after a refusal of the recipient:
	                            * an accept here comes too late to cover it */
	bool delayed;              /* a MAIL item looked up with the first RCPT */
	struct policy_members *mem;       /* ... these members of it */
	char found[300];                  /* the live-list member that matched */
	struct policy_hit info;
	struct {                   /* a count: what its policy_count said */
		const char *key;          /* the policy's own key: key's end */
		size_t keylen;
		enum policy_unit unit;
		uint64_t amount, limit, window_ms;
	} cnt;
	char *key;                 /* the full Redis key, in the work space's keys */
	size_t keylen;
	size_t check;              /* index into the limiter call */
	uint64_t held;             /* peeking: units this message would hold */
};

static bool
client_in(const struct session *s, const struct cfg_exempt *e)
{
	if (!s->has_client_addr)
		return false;
	for (size_t i = 0; i < e->nclients; i++)
		if (addr_in_net(&s->client_addr, &e->clients[i]))
			return true;
	return false;
}

bool
engine_client_exempt(struct session *s)
{
	s->exempt = s->cfg != NULL && client_in(s, &s->cfg->exempt);
	return s->exempt;
}

static bool
policy_exempt(const struct session *s, const struct cfg_policy *p)
{
	return client_in(s, &p->exempt) || (p->exempt.authenticated &&
	    s->msg.sasl_user != NULL && s->msg.sasl_user[0] != '\0');
}

/*
 * Copy network text into a log field: printable ASCII without quotes or
 * backslashes, cut at 256 octets, so that one log line stays one line and
 * key="value" stays parseable.
 */
static void
log_field(char *dst, size_t len, const char *src)
{
	size_t n = 0;

	for (; src != NULL && *src != '\0' && n + 1 < len && n < 256; src++) {
		unsigned char c = (unsigned char)*src;
		dst[n++] = (c >= 0x20 && c <= 0x7e && c != '"' && c != '\\') ? (char)c : '?';
	}
	dst[n] = '\0';
}

static void
log_decision(const struct session *s, const struct cfg_policy *p,
    enum policy_stage stage, enum policy_action action, bool dry_run,
    const char *key, const struct reply_out *reply)
{
	char sender[260], rcpt[260], keyf[260] = "", text[1100] = "";
	bool show_rcpt = stage == POLICY_RCPT && s->msg.rcpt != NULL;

	log_field(sender, sizeof(sender), s->msg.sender);
	log_field(rcpt, sizeof(rcpt), s->msg.rcpt);
	if (key != NULL)
		log_field(keyf, sizeof(keyf), key);
	if (reply != NULL) {
		char raw[1100];
		reply_format(reply, raw, sizeof(raw));
		log_field(text, sizeof(text), raw);
	}
	log_msg(LOG_NOTICE, "%s: client=%s: policy=%s stage=%s action=%s%s "
	    "sender=\"%s\"%s%s%s%s%s%s%s%s%s",
	    s->msg.queue_id, s->client_ip[0] ? s->client_ip : "unknown", p->name,
	    policy_stage_name(stage), policy_action_name(action),
	    dry_run ? " dry_run=yes (would have acted; no action taken)" : "",
	    sender,
	    show_rcpt ? " rcpt=\"" : "", show_rcpt ? rcpt : "", show_rcpt ? "\"" : "",
	    key != NULL ? " key=\"" : "", keyf, key != NULL ? "\"" : "",
	    reply != NULL ? " reply=\"" : "", text, reply != NULL ? "\"" : "");
}

static void
build_msg(const struct session *s, struct policy_msg *m)
{
	m->client_ip = s->client_ip;
	m->helo = s->helo != NULL ? s->helo : "";
	m->sender = s->msg.sender != NULL ? s->msg.sender : "";
	m->rcpt = s->msg.rcpt != NULL ? s->msg.rcpt : "";
	m->sasl_user = s->msg.sasl_user != NULL ? s->msg.sasl_user : "";
	m->declared_size = s->msg.declared_size;
	m->has_declared_size = s->msg.has_declared_size;
	m->size = s->msg.size;
	m->rcpts = s->msg.rcpts;
}

/* What a counting hit says in its reply. */
struct count_vars {
	const char *key;
	uint64_t window_ms;
	uint64_t retry_ms;
};

static void
expand_reply(const struct session *s, const struct reply_tmpl *t, const char *policy,
    const struct policy_hit *hit, const struct count_vars *cv,
    enum policy_stage stage, struct reply_out *out)
{
	char limit[32], size[32], window[32] = "", retry[32] = "";
	struct reply_vars vars = { 0 };

	if (hit->limit_is_size)
		units_format_size(hit->limit, limit, sizeof(limit));
	else
		snprintf(limit, sizeof(limit), "%llu", (unsigned long long)hit->limit);
	snprintf(size, sizeof(size), "%llu", (unsigned long long)
	    (stage == POLICY_EOM || !s->msg.has_declared_size ? s->msg.size :
	    s->msg.declared_size));
	if (cv != NULL) {
		units_format_duration(cv->window_ms, window, sizeof(window));
		/* 0: more than the limit at once never fits; say a window. */
		units_format_duration(cv->retry_ms ? cv->retry_ms : cv->window_ms, retry,
		    sizeof(retry));
		vars.key = cv->key;
		vars.window = window;
		vars.retry_after = retry;
	}
	vars.policy = policy;
	vars.limit = limit;
	vars.size = size;
	/* Canonical: the spelling the key was made of; <> for the null sender. */
	vars.sender = s->msg.sender;
	vars.rcpt = stage == POLICY_RCPT ? s->msg.rcpt : "";
	vars.client_ip = s->client_ip;
	reply_expand(t, &vars, out);
}

static enum stats_field
outcome_field(enum policy_action a)
{
	switch (a) {
	case POLICY_REJECT: return STATS_REJECTED;
	case POLICY_TEMPFAIL: return STATS_TEMPFAILED;
	case POLICY_DISCARD: return STATS_DISCARDED;
	case POLICY_QUARANTINE: return STATS_QUARANTINED;
	default: return STATS_ACCEPTED;
	}
}

static bool
refuses(enum policy_action a)
{
	return a == POLICY_REJECT || a == POLICY_TEMPFAIL;
}

static enum cfg_on_error
on_redis_error(const struct session *s, const struct cfg_policy *p)
{
	return p->on_redis_error != CFG_ON_ERROR_INHERIT ? p->on_redis_error :
	    s->cfg->on_redis_error;
}

static void
redis_trouble(const char *what, const char *err)
{
	static struct log_throttle throttle;

	log_ratelimited(&throttle, 10, LOG_WARNING, "redis: %s: %s", what, err);
}

/*
 * The work space for one stage, allocated once per connection (the SMTP
 * path allocates nothing): an item, a limiter check and a result per
 * policy, and the members to look up per live-list policy.  Work spaces of
 * ended connections are kept for the next ones (at most SPARE_MAX): tens of
 * kilobytes allocated and freed per connection would otherwise be mapped,
 * faulted in and given back to the kernel each time.
 */
struct scratch {
	size_t size;               /* of the whole block */
	struct item *items;
	struct limiter_check *checks;
	struct limiter_result *res;
	struct policy_members *members;
	size_t nitems, nmembers;   /* room in items (checks, res), in members */
	struct policy_count count; /* what a rate limit counts, at plan */
	char *keys;                /* the items' Redis keys, one after another */
	size_t key_room, keys_used;   /* room for one key; in use */
	/* MAIL delayed to the first RCPT (cfg delay_mail): its plan, kept
	 * in items[0, ndelayed), members[0, ndelayed_mem) and the keys'
	 * first ndelayed_keys octets until then. */
	size_t ndelayed, ndelayed_mem, ndelayed_keys;
	struct engine_verdict mail_refusal;   /* s->msg.mail_refused */
};

#define SPARE_MAX 128
static struct {
	pthread_mutex_t lock;
	struct scratch *v[SPARE_MAX];
	size_t n;
} spare = { PTHREAD_MUTEX_INITIALIZER, { NULL }, 0 };

static struct scratch *
scratch(struct session *s)
{
	/* Room for the largest stage (a delayed MAIL with the first RCPT).
	 * A key: prefix, "rl:" or "block:", the policy's name (at most 64),
	 * ':', the policy's own key, NUL. */
	size_t n = s->cfg->stage_items, nlive = s->cfg->stage_live, size;
	size_t room = s->cfg->redis != NULL ?
	    strlen(s->cfg->redis->prefix) + 80 + POLICY_KEY_MAX : 0;
	struct scratch *w = NULL;

	if (s->scratch != NULL || n == 0)
		return s->scratch;
	size = sizeof(*w) + nlive * sizeof(struct policy_members) +
	    n * (sizeof(struct item) + sizeof(struct limiter_check) +
	    sizeof(struct limiter_result) + room);
	pthread_mutex_lock(&spare.lock);
	if (spare.n > 0)
		w = spare.v[--spare.n];
	pthread_mutex_unlock(&spare.lock);
	/* Every part is written before it is read, at each stage. */
	if (w != NULL && w->size != size) {
		free(w);
		w = NULL;
	}
	if (w == NULL && (w = malloc(size)) == NULL)
		return NULL;
	w->size = size;
	/* One block: members and items (the largest alignments) first. */
	w->members = (struct policy_members *)(void *)(w + 1);
	w->nitems = n;
	w->nmembers = nlive;
	w->items = (struct item *)(void *)(w->members + nlive);
	w->checks = (struct limiter_check *)(void *)(w->items + n);
	w->res = (struct limiter_result *)(void *)(w->checks + n);
	/* Keys last: only what a stage writes of them is ever touched. */
	w->keys = (char *)(void *)(w->res + n);
	w->key_room = room;
	w->keys_used = 0;
	s->scratch = w;
	return w;
}

void
engine_session_end(struct session *s)
{
	struct scratch *w = s->scratch;

	s->scratch = NULL;
	if (w == NULL)
		return;
	pthread_mutex_lock(&spare.lock);
	if (spare.n < SPARE_MAX) {
		spare.v[spare.n++] = w;
		w = NULL;
	}
	pthread_mutex_unlock(&spare.lock);
	free(w);
}

void
engine_spare_free(void)
{
	pthread_mutex_lock(&spare.lock);
	while (spare.n > 0)
		free(spare.v[--spare.n]);
	pthread_mutex_unlock(&spare.lock);
}

/* At RCPT, a policy that judges the recipient rather than the message. */
static bool
per_recipient(const struct cfg_policy *p)
{
	return p->type->per_recipient != NULL && p->type->per_recipient(p->settings);
}

/*
 * A decisive hit: count it, log it, and either end the stage (refusal,
 * accept) or remember it for the end of the message (discard, quarantine).
 * Returns true when evaluation of the stage ends here.
 */
static bool
decide(struct session *s, const struct cfg_policy *p, enum policy_action action,
    enum policy_stage stage, const char *key, const struct reply_tmpl *reply_t,
    const struct policy_hit *info, const struct count_vars *cv, struct engine_verdict *v)
{
	if (reply_t != NULL)
		expand_reply(s, reply_t, p->name, info, cv, stage, &v->reply);
	log_decision(s, p, stage, action, false, key, reply_t ? &v->reply : NULL);
	s->traced = action;
	switch (action) {
	case POLICY_DISCARD:
	case POLICY_QUARANTINE:
		/* Remembered for the end of the message; a refusal before then
		 * still wins, so evaluation goes on. */
		if (stage <= POLICY_HELO && s->pending == POLICY_NONE) {
			/* Decided for the connection: every message of it. */
			s->pending = action;
			s->pending_policy = p;
		} else if (stage > POLICY_HELO && s->msg.pending == POLICY_NONE) {
			s->msg.pending = action;
			s->msg.pending_policy = p;
		}
		return false;
	case POLICY_ACCEPT:
		/* At RCPT the accept covers its recipient: nothing to remember. */
		if (stage <= POLICY_HELO)
			s->accepted = true;
		else if (stage == POLICY_MAIL)
			s->msg.accepted = true;
		break;
	default:
		break;
	}
	stats_add(p->stats, outcome_field(action), 1);
	v->policy = p;
	v->action = action;
	return true;
}

static void
dry_hit(struct session *s, const struct cfg_policy *p, enum policy_stage stage,
    const char *key, const struct policy_hit *info, const struct count_vars *cv,
    struct engine_verdict *v)
{
	stats_add(p->stats, STATS_DRY_RUN, 1);
	if (p->reply != NULL)
		expand_reply(s, p->reply, p->name, info, cv, stage, &v->reply);
	log_decision(s, p, stage, p->action, true, key, p->reply ? &v->reply : NULL);
	s->traced = p->action;
	s->traced_dry = true;
}

void
engine_release(struct session *s)
{
	if (s->cfg != NULL)
		ledger_give_back(s);
}

/* ---- one stage: plan, one limiter call, walk */

/* Copy a verdict; the reply's lines point into its own buffer. */
static void
engine_verdict_copy(struct engine_verdict *dst, const struct engine_verdict *src)
{
	*dst = *src;
	for (size_t i = 0; i < src->reply.nlines && i < REPLY_MAX_LINES; i++)
		dst->reply.lines[i] = dst->reply.buf + (src->reply.lines[i] - src->reply.buf);
}

/*
 * Plan the stage into items[first, *end), its live-list members from
 * members[*nmemp] on (*nmemp is moved past them).  *mode tells the limiter
 * whether to reserve: not when an in-memory refusal ends the plan (a
 * refused attempt never counts), unless an accept found in Redis before it
 * could cover that refusal.
 */
static void
plan(struct session *s, enum policy_stage stage, const struct policy_msg *m,
    struct scratch *w, size_t first, size_t *end, size_t *nmemp,
    enum limiter_reserve *mode)
{
	const struct cfg *c = s->cfg;
	struct item *items = w->items;
	bool decided = false, covered = false, rcpt_refused = false;
	size_t n = first, nmem = *nmemp;

	*mode = LIMITER_RESERVE;
	for (size_t i = 0; i < c->npolicies && !decided; i++) {
		const struct cfg_policy *p = &c->policies[i];
		struct item *it;

		if (!(p->stages & POLICY_STAGE(stage)) || policy_exempt(s, p))
			continue;
		/* The recipient is decided: an accept before covers it, or a
		 * refusal before refuses it; only message-level policies go on. */
		if ((covered || rcpt_refused) && per_recipient(p))
			continue;
		if (n == w->nitems)        /* cannot happen: cfg counted them */
			break;
		it = &items[n++];
		it->p = p;
		it->counting = p->type->count != NULL;
		it->active = false;
		it->hit = false;
		it->lookup = false;
		it->outlives = stage == POLICY_RCPT && !per_recipient(p);
		it->after_refusal = rcpt_refused;
		it->delayed = false;
		memset(&it->info, 0, sizeof(it->info));
		if (it->counting) {
			const struct policy_count *pc = &w->count;

			if (!p->type->count(p->settings, stage, m, &w->count))
				continue;
			it->key = w->keys + w->keys_used;
			it->keylen = (size_t)snprintf(it->key, w->key_room, "%srl:%s:",
			    c->redis->prefix, p->name);
			memcpy(it->key + it->keylen, pc->key, pc->keylen);
			it->cnt.key = it->key + it->keylen;
			it->cnt.keylen = pc->keylen;
			it->cnt.unit = pc->unit;
			it->cnt.amount = pc->amount;
			it->cnt.limit = pc->limit;
			it->cnt.window_ms = pc->window_ms;
			it->keylen += pc->keylen;
			it->key[it->keylen] = '\0';
			w->keys_used += it->keylen + 1;
			/* Messages and bytes count once per message and key. */
			it->active = it->cnt.unit == POLICY_UNIT_RECIPIENTS ||
			    !ledger_holds(s, p, it->key, it->keylen);
			it->info.limit = it->cnt.limit;
			it->info.limit_is_size = it->cnt.unit == POLICY_UNIT_BYTES;
			continue;
		}
		it->hit = p->type->check(p->settings, stage, m, &it->info);
		if (it->hit && !p->dry_run && refuses(p->action)) {
			if (stage == POLICY_RCPT && per_recipient(p)) {
				/* Refuses the recipient unless an accept found in Redis
				 * before it covers the recipient: reserve only then.  The
				 * message-level policies after it run either way. */
				rcpt_refused = true;
				if (*mode == LIMITER_RESERVE)
					*mode = LIMITER_RESERVE_IF_ACCEPTED;
			} else {
				/* Nothing after it can matter.  At RCPT no accept covers a
				 * message-level refusal: it stands whatever Redis says. */
				decided = true;
				*mode = stage == POLICY_RCPT ? LIMITER_CHECK_ONLY :
				    LIMITER_RESERVE_IF_ACCEPTED;
			}
		} else if (it->hit && !p->dry_run && p->action == POLICY_ACCEPT) {
			if (stage != POLICY_RCPT)
				decided = true;
			else if (!rcpt_refused)     /* first decisive wins */
				covered = true;
		}
		/* Not in the static list: maybe in the live one. */
		if (!it->hit && p->live && nmem < w->nmembers) {
			it->mem = &w->members[nmem];
			if (p->type->members(p->settings, stage, m, it->mem) == 0)
				continue;
			nmem++;
			it->lookup = it->active = true;
			it->key = w->keys + w->keys_used;
			it->keylen = (size_t)snprintf(it->key, w->key_room, "%sblock:%s",
			    c->redis->prefix, p->name);
			w->keys_used += it->keylen + 1;
		}
	}
	*end = n;
	*nmemp = nmem;
}

/* Which live-list entry matched, for the log: "live:<member>". */
static void
live_found(struct item *it, const struct limiter_result *r)
{
	size_t j = (size_t)r->count - 1, len;

	if (r->count == 0 || j >= it->mem->n) {
		snprintf(it->found, sizeof(it->found), "live");
		return;
	}
	len = it->mem->len[j];
	if (len > sizeof(it->found) - 6)
		len = sizeof(it->found) - 6;
	memcpy(it->found, "live:", 5);
	memcpy(it->found + 5, it->mem->v[j], len);
	it->found[5 + len] = '\0';
}

/* The limiter call for the items that need Redis.  true when it failed. */
static bool
call_limiter(struct session *s, struct scratch *w, size_t n, enum limiter_reserve mode)
{
	struct item *items = w->items;
	size_t nc = 0, stop;
	bool refused;
	char err[256];

	for (size_t i = 0; i < n; i++) {
		struct item *it = &items[i];
		struct limiter_check *c;

		if (!it->active)
			continue;
		it->check = nc;
		c = &w->checks[nc++];
		*c = (struct limiter_check){ .key = it->key, .keylen = it->keylen,
		    .on_over = ledger_on_over(it->p), .outlives_accept = it->outlives };
		if (it->after_refusal && c->on_over == LIMITER_ACCEPT)
			c->on_over = LIMITER_SOFT;
		/* A delayed MAIL's accept covers the whole message, the RCPT
		 * checks after it included: stop there, reserving nothing. */
		if (it->delayed && c->on_over == LIMITER_ACCEPT)
			c->on_over = LIMITER_REFUSE;
		if (it->lookup) {
			c->members = it->mem->v;
			c->memberlens = it->mem->len;
			c->nmembers = it->mem->n;
			/* A list that cannot answer, for a policy that then
			 * tempfails, refuses the call: nothing after it reserves. */
			c->on_fail = on_redis_error(s, it->p) == CFG_ON_ERROR_TEMPFAIL &&
			    !it->p->dry_run ? LIMITER_REFUSE : LIMITER_SOFT;
		} else {
			c->limit = it->cnt.limit;
			c->window_ms = it->cnt.window_ms;
			c->amount = it->cnt.amount;
			c->keyoff = it->keylen - it->cnt.keylen;
			if (it->p->keys != NULL) {
				c->override_key = it->p->keys->override_key;
				c->top_key = it->p->keys->top_key;
				c->topn_key = it->p->keys->topn_key;
			}
			/* Peeking, the units of earlier recipients were not reserved
			 * in Redis: check as if they had been. */
			it->held = s->peek ? ledger_held(s, it->key, it->keylen) : 0;
			c->amount += it->held;
		}
	}
	if (nc == 0)
		return false;
	if (limiter_run(s->cfg->redis->store, w->checks, nc, s->peek ? LIMITER_PEEK : mode,
	    NULL, 0, NULL, 0, &refused, &stop, w->res, err, sizeof(err)) != 0) {
		redis_trouble("check failed", err);
		return true;
	}
	/* Peeking reports what LIMITER_RESERVE would reserve: keep only what
	 * the daemon's mode would have (nothing when checking only, or when
	 * reserving only after an accept that did not come). */
	if (s->peek && (mode == LIMITER_CHECK_ONLY ||
	    (mode == LIMITER_RESERVE_IF_ACCEPTED && (refused || stop == nc))))
		for (size_t i = 0; i < nc; i++)
			w->res[i].field = -1;
	return false;
}

/*
 * Walk an in-memory policy or a live list.  Returns true when the stage
 * ends here; *covered is set by an accept at RCPT.
 */
static bool
walk_list(struct session *s, enum policy_stage stage, struct item *it,
    const struct limiter_result *r, bool redis_failed, bool *covered,
    struct engine_verdict *v)
{
	const struct cfg_policy *p = it->p;
	const char *key = NULL;

	if (it->lookup && (redis_failed || r->failed)) {
		if (!redis_failed) {
			char why[POLICY_KEY_MAX + 200];
			snprintf(why, sizeof(why), "%.*s is not a sorted set "
			    "(see README: live lists)", (int)it->keylen, it->key);
			redis_trouble(p->name, why);
		}
		/* The static list said no; the live one cannot answer. */
		stats_add(p->stats, STATS_REDIS_ERRORS, 1);
		return on_redis_error(s, p) == CFG_ON_ERROR_TEMPFAIL && !p->dry_run &&
		    decide(s, p, POLICY_TEMPFAIL, stage, NULL, s->cfg->redis_error_reply,
		    &it->info, NULL, v);
	}
	if (it->lookup && r->over) {
		live_found(it, r);
		it->hit = true;
		key = it->found;
	}
	if (!it->hit)
		return false;
	if (p->dry_run) {
		dry_hit(s, p, stage, key, &it->info, NULL, v);
		return false;
	}
	if (p->action == POLICY_ACCEPT && stage == POLICY_RCPT) {
		decide(s, p, POLICY_ACCEPT, stage, key, p->reply, &it->info, NULL, v);
		*covered = true;
		return false;
	}
	return decide(s, p, p->action, stage, key, p->reply, &it->info, NULL, v);
}

/* Walk a rate limit.  Returns true when the stage ends here. */
static bool
walk_count(struct session *s, enum policy_stage stage, struct item *it,
    const struct limiter_result *r, bool redis_failed, bool *covered,
    struct engine_verdict *v)
{
	const struct cfg_policy *p = it->p;
	struct count_vars cv = { it->cnt.key, it->cnt.window_ms, r->retry_ms };

	if (redis_failed) {
		stats_add(p->stats, STATS_REDIS_ERRORS, 1);
		return on_redis_error(s, p) == CFG_ON_ERROR_TEMPFAIL && !p->dry_run &&
		    decide(s, p, POLICY_TEMPFAIL, stage, it->cnt.key,
		    s->cfg->redis_error_reply, &it->info, NULL, v);
	}
	/* ${limit} is the limit in force: an override's, if any. */
	it->info.limit = r->limit;
	if (r->over) {
		if (p->dry_run) {
			dry_hit(s, p, stage, it->cnt.key, &it->info, &cv, v);
			return false;
		}
		if (p->action == POLICY_ACCEPT && stage == POLICY_RCPT) {
			decide(s, p, POLICY_ACCEPT, stage, it->cnt.key, p->reply, &it->info,
			    &cv, v);
			*covered = true;
			return false;
		}
		return decide(s, p, p->action, stage, it->cnt.key, p->reply, &it->info,
		    &cv, v);
	}
	/* The script reserved exactly the checks it returns a bucket for. */
	if (r->field >= 0) {
		struct session_resv add = { p, it->key, it->keylen,
		    it->keylen - it->cnt.keylen, r->field, it->cnt.amount,
		    it->cnt.limit, it->cnt.window_ms };
		if (ledger_add(s, &add) != 0)
			log_msg(LOG_ERR, "out of memory: a reservation will not be given back");
	}
	return false;
}

/* Tell explain what the policy of it did (engine_step). */
static void
trace(const struct session *s, enum policy_stage stage, const struct item *it,
    const struct limiter_result *r, bool redis_failed, bool skipped,
    const struct engine_verdict *v)
{
	struct engine_step st;

	/* The daemon's path: no trace, nothing to build. */
	if (s->trace == NULL)
		return;
	st = (struct engine_step){ .stage = stage, .policy = it->p, .counting = it->counting,
	    .lookup = it->lookup, .skipped = skipped, .redis_failed = redis_failed && it->active,
	    .action = skipped ? POLICY_NONE : s->traced, .dry_run = s->traced_dry };
	st.redis_failed |= !redis_failed && it->lookup && r->failed;
	if (it->counting) {
		st.key = it->cnt.key;
		st.count = r->count + it->held;
		st.amount = it->cnt.amount;
		st.limit = skipped || redis_failed ? it->cnt.limit : r->limit;
		st.window_ms = it->cnt.window_ms;
		st.retry_ms = r->retry_ms;
		st.hit = r->over;
	} else {
		st.hit = it->hit;
		st.key = it->lookup && it->hit ? it->found : NULL;
	}
	if (st.action == POLICY_REJECT || st.action == POLICY_TEMPFAIL ||
	    (st.dry_run && it->p->reply != NULL))
		st.reply = &v->reply;
	s->trace(s->trace_arg, &st);
}

/*
 * MAIL may wait for the first RCPT (cfg delay_mail) when only its live
 * lists are left to decide it: nothing hit in memory (no refusal, accept,
 * discard or dry run to act on now) and nothing to count.
 */
static bool
delayable(const struct scratch *w, size_t n, enum limiter_reserve mode)
{
	bool lookup = false;

	if (mode != LIMITER_RESERVE)
		return false;
	for (size_t i = 0; i < n; i++) {
		const struct item *it = &w->items[i];

		if (it->hit || (it->counting && it->active))
			return false;
		lookup |= it->lookup;
	}
	return lookup;
}

/* Walk items [from, to) of stage with the call's results.  true: it ended. */
static bool
walk(struct session *s, enum policy_stage stage, struct scratch *w, size_t from,
    size_t to, bool redis_failed, struct engine_verdict *v)
{
	static const struct limiter_result none = { .field = -1 };
	bool covered = false;

	for (size_t i = from; i < to; i++) {
		struct item *it = &w->items[i];
		/* Redis failed: no result was written. */
		const struct limiter_result *r = it->active && !redis_failed ?
		    &w->res[it->check] : &none;
		bool ends;

		if (it->counting && !it->active)
			continue;
		if ((covered && !it->outlives) || (!redis_failed && r->skipped)) {
			trace(s, stage, it, r, redis_failed, true, v);
			continue;
		}
		stats_add(it->p->stats, STATS_CHECKED, 1);
		s->traced = POLICY_NONE;
		s->traced_dry = false;
		if (it->counting)
			ends = walk_count(s, stage, it, r, redis_failed, &covered, v);
		else
			ends = walk_list(s, stage, it, r, redis_failed, &covered, v);
		trace(s, stage, it, r, redis_failed, false, v);
		if (ends)
			return true;
	}
	return false;
}

/*
 * One stage: plan, one limiter call, walk.  A MAIL that only live lists
 * can decide is delayed, with delay_mail, to the first RCPT: that stage
 * plans after it, makes one call for both, and walks MAIL first.  A MAIL
 * refusal found then refuses every recipient of the message.
 */
static enum policy_action
run_stage(struct session *s, enum policy_stage stage, struct engine_verdict *v)
{
	struct scratch *w = scratch(s);
	enum limiter_reserve mode;
	struct policy_msg m;
	bool redis_failed;
	size_t first = 0, n, nmem = 0;

	if (w == NULL)
		return POLICY_NONE;
	build_msg(s, &m);
	w->keys_used = 0;
	if (stage == POLICY_RCPT && s->msg.delayed) {
		first = w->ndelayed;
		nmem = w->ndelayed_mem;
		w->keys_used = w->ndelayed_keys;
		s->msg.delayed = false;
	}
	plan(s, stage, &m, w, first, &n, &nmem, &mode);
	if (stage == POLICY_MAIL && s->cfg->delay_mail && !s->no_delay &&
	    delayable(w, n, mode)) {
		for (size_t i = 0; i < n; i++)
			w->items[i].delayed = true;
		w->ndelayed = n;
		w->ndelayed_mem = nmem;
		w->ndelayed_keys = w->keys_used;
		s->msg.delayed = true;
		return POLICY_NONE;
	}
	redis_failed = call_limiter(s, w, n, mode);
	if (first > 0 && walk(s, POLICY_MAIL, w, 0, first, redis_failed, v)) {
		if (refuses(v->action)) {
			s->msg.mail_refused = true;
			engine_verdict_copy(&w->mail_refusal, v);
		}
		return v->action;
	}
	/* (An accept found for a delayed MAIL covers the message: it ended
	 * the walk above, and RCPT's policies do not run.) */
	walk(s, stage, w, first, n, redis_failed, v);
	return v->action;
}

/* ---- end of message: byte counts reconciled, reservations settled */

static void
settle_eom(struct session *s, struct engine_verdict *v)
{
	struct ledger_check *out;
	size_t nout;
	bool refused;
	char err[256];

	if (s->msg.nresv == 0)
		return;
	if (refuses(v->action)) {
		ledger_give_back(s);
		return;
	}
	if ((out = calloc(s->msg.nresv, sizeof(*out))) == NULL) {
		ledger_forget(s);
		return;
	}
	if (ledger_settle(s, s->msg.accepted, out, &nout, &refused, err, sizeof(err)) != 0) {
		redis_trouble("end of message", err);
		for (size_t j = 0; j < nout; j++) {
			const struct cfg_policy *p = out[j].resv->policy;
			struct policy_hit info = { out[j].resv->limit, true };

			stats_add(p->stats, STATS_REDIS_ERRORS, 1);
			if (on_redis_error(s, p) == CFG_ON_ERROR_TEMPFAIL && !p->dry_run &&
			    !s->msg.accepted) {
				decide(s, p, POLICY_TEMPFAIL, POLICY_EOM, NULL,
				    s->cfg->redis_error_reply, &info, NULL, v);
				ledger_give_back(s);
				free(out);
				return;
			}
		}
		ledger_forget(s);
		free(out);
		return;
	}
	for (size_t j = 0; j < nout; j++) {
		const struct session_resv *r = out[j].resv;
		const struct cfg_policy *p = r->policy;
		struct policy_hit info = { out[j].res.limit, true };
		const char *key = r->key + r->keyoff;
		struct count_vars cv = { key, r->window_ms, out[j].res.retry_ms };

		bool ends = false;

		stats_add(p->stats, STATS_CHECKED, 1);
		s->traced = POLICY_NONE;
		s->traced_dry = false;
		if (out[j].res.over && p->dry_run)
			dry_hit(s, p, POLICY_EOM, key, &info, &cv, v);
		/* A refusal acts only if it is the one that stopped the call;
		 * discard, quarantine and accept act as at RCPT. */
		else if (out[j].res.over && !s->msg.accepted &&
		    (!refuses(p->action) || refused))
			ends = decide(s, p, p->action, POLICY_EOM, key, p->reply, &info, &cv, v);
		if (s->trace != NULL) {
			struct engine_step st = { .stage = POLICY_EOM, .policy = p,
			    .counting = true, .hit = out[j].res.over, .key = key,
			    .count = out[j].res.count, .amount = s->msg.size - r->amount,
			    .limit = out[j].res.limit, .window_ms = r->window_ms,
			    .retry_ms = out[j].res.retry_ms, .action = s->traced,
			    .dry_run = s->traced_dry };
			if (refuses(s->traced) || (s->traced_dry && p->reply != NULL))
				st.reply = &v->reply;
			s->trace(s->trace_arg, &st);
		}
		if (ends)
			break;
	}
	/* Refused: the ledger is empty already (given back in the call). */
	ledger_forget(s);
	free(out);
}

enum policy_action
engine_run(struct session *s, enum policy_stage stage, struct engine_verdict *v)
{
	const struct cfg *c = s->cfg;

	v->action = POLICY_NONE;
	v->policy = NULL;
	if (c == NULL || s->exempt)
		return POLICY_NONE;
	/* A delayed MAIL refused the message at its first recipient: the
	 * same answer to every other (decided, counted and logged once). */
	if (stage == POLICY_RCPT && s->msg.mail_refused && s->scratch != NULL) {
		engine_verdict_copy(v, &((struct scratch *)s->scratch)->mail_refusal);
		return v->action;
	}
	if (!s->accepted && !s->msg.exempt && !s->msg.accepted &&
	    (c->stages_decide & POLICY_STAGE(stage)))
		run_stage(s, stage, v);
	if (stage == POLICY_EOM) {
		/* No MTA sends DATA without a recipient the milter saw. */
		if (s->msg.delayed) {
			s->msg.delayed = false;
			log_msg(LOG_WARNING, "%s: end of message without a recipient: "
			    "MAIL's live lists were not looked up", s->msg.queue_id);
		}
		settle_eom(s, v);
		/* A drop or hold decided earlier stands unless the message is
		 * refused: no accept, of the connection or of the message, undoes it. */
		if (s->msg.pending == POLICY_NONE && s->pending != POLICY_NONE) {
			s->msg.pending = s->pending;
			s->msg.pending_policy = s->pending_policy;
		}
		if (s->msg.pending != POLICY_NONE && !refuses(v->action)) {
			/* Counted when done, so that the counter says what happened. */
			stats_add(s->msg.pending_policy->stats, outcome_field(s->msg.pending), 1);
			v->action = s->msg.pending;
			v->policy = s->msg.pending_policy;
		}
	}
	return v->action;
}
