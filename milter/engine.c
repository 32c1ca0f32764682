/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * engine - policy evaluation and decisions (see engine.h).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "milter/engine.h"
#include "milter/log.h"
#include "milter/stats.h"
#include "milter/units.h"

bool
engine_client_exempt(struct session *s)
{
	const struct cfg *c = s->cfg;

	s->exempt = false;
	if (c == NULL || !s->has_client_addr)
		return false;
	for (size_t i = 0; i < c->nexempt_clients; i++) {
		if (addr_in_net(&s->client_addr, &c->exempt_clients[i])) {
			s->exempt = true;
			break;
		}
	}
	return s->exempt;
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
    enum policy_stage stage, bool dry_run, const struct reply_out *reply)
{
	char sender[260], rcpt[260], text[1100] = "";

	log_field(sender, sizeof(sender), s->msg.sender);
	log_field(rcpt, sizeof(rcpt), s->msg.rcpt);
	if (reply != NULL) {
		char raw[1100];
		reply_format(reply, raw, sizeof(raw));
		log_field(text, sizeof(text), raw);
	}
	log_msg(LOG_NOTICE, "%s: client=%s: policy=%s stage=%s action=%s%s "
	    "sender=\"%s\"%s%s%s%s%s%s",
	    s->msg.queue_id, s->client_ip[0] ? s->client_ip : "unknown", p->name,
	    policy_stage_name(stage), policy_action_name(p->action),
	    dry_run ? " dry_run=yes (would have acted; no action taken)" : "",
	    sender,
	    stage == POLICY_RCPT && s->msg.rcpt ? " rcpt=\"" : "",
	    stage == POLICY_RCPT && s->msg.rcpt ? rcpt : "",
	    stage == POLICY_RCPT && s->msg.rcpt ? "\"" : "",
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

static void
expand_reply(const struct session *s, const struct cfg_policy *p,
    const struct policy_hit *hit, enum policy_stage stage, struct reply_out *out)
{
	char limit[32], size[32];
	struct reply_vars vars = { 0 };

	if (hit->limit_is_size)
		units_format_size(hit->limit, limit, sizeof(limit));
	else
		snprintf(limit, sizeof(limit), "%llu", (unsigned long long)hit->limit);
	snprintf(size, sizeof(size), "%llu", (unsigned long long)
	    (stage == POLICY_EOM || !s->msg.has_declared_size ? s->msg.size :
	    s->msg.declared_size));
	vars.policy = p->name;
	vars.limit = limit;
	vars.size = size;
	vars.sender = s->msg.sender;
	vars.rcpt = stage == POLICY_RCPT ? s->msg.rcpt : "";
	vars.client_ip = s->client_ip;
	reply_expand(p->reply, &vars, out);
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

enum policy_action
engine_run(struct session *s, enum policy_stage stage, struct engine_verdict *v)
{
	const struct cfg *c = s->cfg;
	struct policy_msg m;

	v->action = POLICY_NONE;
	v->policy = NULL;
	if (c == NULL || s->exempt || s->accepted || s->msg.exempt)
		return POLICY_NONE;
	if (!s->msg.decided && (c->stages_decide & POLICY_STAGE(stage))) {
		build_msg(s, &m);
		for (size_t i = 0; i < c->npolicies; i++) {
			const struct cfg_policy *p = &c->policies[i];
			struct policy_hit hit = { 0 };

			if (!(p->type->stages & POLICY_STAGE(stage)))
				continue;
			stats_add(p->stats, STATS_CHECKED, 1);
			if (!p->type->check(p->settings, stage, &m, &hit))
				continue;
			if (p->reply != NULL)
				expand_reply(s, p, &hit, stage, &v->reply);
			if (p->dry_run) {
				stats_add(p->stats, STATS_DRY_RUN, 1);
				log_decision(s, p, stage, true, p->reply ? &v->reply : NULL);
				continue;
			}
			log_decision(s, p, stage, false, p->reply ? &v->reply : NULL);
			switch (p->action) {
			case POLICY_DISCARD:
			case POLICY_QUARANTINE:
				/* Remembered for the end of the message; a refusal
				 * before then still wins, so evaluation goes on. */
				if (s->msg.pending == POLICY_NONE) {
					s->msg.pending = p->action;
					s->msg.pending_policy = p;
				}
				continue;
			case POLICY_ACCEPT:
				if (stage <= POLICY_HELO)
					s->accepted = true;
				else
					s->msg.decided = true;
				break;
			default:
				break;
			}
			stats_add(p->stats, outcome_field(p->action), 1);
			v->policy = p;
			v->action = p->action;
			break;
		}
	}
	/* A pending drop or hold stands unless the message is refused. */
	if (stage == POLICY_EOM && s->msg.pending != POLICY_NONE &&
	    v->action != POLICY_REJECT && v->action != POLICY_TEMPFAIL) {
		/* Counted when done, so that the counter says what happened. */
		stats_add(s->msg.pending_policy->stats, outcome_field(s->msg.pending), 1);
		v->action = s->msg.pending;
		v->policy = s->msg.pending_policy;
	}
	return v->action;
}
