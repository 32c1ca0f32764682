/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * ratelimit - at most limit units per window for each key, shared by every
 * MTA that uses the same Redis.
 *
 * This file knows what is counted: the key (a list of parts of the
 * message, normalised and joined with '|'), the unit and the amount.  How
 * it is counted - a sliding window of sub-buckets in one Redis hash per key,
 * checked and reserved for every policy of a stage in one atomic script,
 * given back when the transaction does not end in acceptance - is the
 * engine's and the limiter's (milter/limiter.c), the same for every counting
 * policy.
 */
#include "config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policies/canon.h"
#include "policies/policy.h"

enum key_part {
	KP_CLIENT_IP, KP_CLIENT_NET, KP_HELO, KP_SENDER, KP_SENDER_DOMAIN,
	KP_SASL_USER, KP_RCPT, KP_RCPT_DOMAIN, KP_COUNT
};

static const char *const part_names[KP_COUNT] = {
	"client_ip", "client_net", "helo", "sender", "sender_domain",
	"sasl_user", "rcpt", "rcpt_domain",
};

#define MAX_PARTS 8

struct ratelimit_settings {
	struct policy_strlist key;
	char *count;
	uint64_t limit;
	uint64_t window_ms;
	bool strip_extension;
	long long client_net_v4;
	long long client_net_v6;
	/* derived by validate */
	enum key_part parts[MAX_PARTS];
	size_t nparts;
	enum policy_unit unit;
};

static const struct policy_field ratelimit_fields[] = {
	{ "key", PF_STRLIST, offsetof(struct ratelimit_settings, key), 0, 0, true },
	{ "count", PF_STRING, offsetof(struct ratelimit_settings, count), 0, 0, true },
	{ "limit", PF_SIZE, offsetof(struct ratelimit_settings, limit), 1, 0, true },
	{ "window", PF_DURATION, offsetof(struct ratelimit_settings, window_ms),
	    1000, 30LL * 86400 * 1000, true },
	{ "strip_extension", PF_BOOL, offsetof(struct ratelimit_settings, strip_extension),
	    0, 0, false },
	{ "client_net_v4", PF_INT, offsetof(struct ratelimit_settings, client_net_v4),
	    1, 32, false },
	{ "client_net_v6", PF_INT, offsetof(struct ratelimit_settings, client_net_v6),
	    1, 128, false },
	{ NULL, 0, 0, 0, 0, false },
};

static int
ratelimit_validate(void *settings, struct policy_invalid *inv)
{
	char *why = inv->why;
	size_t whylen = sizeof(inv->why);
	struct ratelimit_settings *s = settings;
	static const char *const units[] = { "messages", "recipients", "bytes" };
	size_t u;

	for (u = 0; u < 3 && strcmp(s->count, units[u]) != 0; u++)
		;
	if (u == 3) {
		inv->field = "count";
		snprintf(why, whylen, "count must be \"messages\", \"recipients\" or "
		    "\"bytes\", not \"%s\"", s->count);
		return -1;
	}
	s->unit = (enum policy_unit)u;
	if (s->key.n == 0 || s->key.n > MAX_PARTS) {
		inv->field = "key";
		snprintf(why, whylen, "key must name 1 to %d parts", MAX_PARTS);
		return -1;
	}
	for (size_t i = 0; i < s->key.n; i++) {
		size_t k;
		for (k = 0; k < KP_COUNT && strcmp(s->key.v[i], part_names[k]) != 0; k++)
			;
		if (k == KP_COUNT) {
			inv->field = "key";
			inv->index = (int)i;
			snprintf(why, whylen, "unknown key part \"%s\" (client_ip, "
			    "client_net, helo, sender, sender_domain, sasl_user, rcpt, "
			    "rcpt_domain)", s->key.v[i]);
			return -1;
		}
		for (size_t j = 0; j < i; j++) {
			if (s->parts[j] == (enum key_part)k) {
				inv->field = "key";
				inv->index = (int)i;
				snprintf(why, whylen, "key part \"%s\" is named twice",
				    s->key.v[i]);
				return -1;
			}
		}
		s->parts[s->nparts++] = (enum key_part)k;
	}
	if (s->client_net_v4 == 0)
		s->client_net_v4 = 24;
	if (s->client_net_v6 == 0)
		s->client_net_v6 = 64;
	return 0;
}

static unsigned
ratelimit_stages(const void *settings, unsigned *needs)
{
	const struct ratelimit_settings *s = settings;

	*needs = POLICY_STAGE(POLICY_RCPT);
	if (s->unit == POLICY_UNIT_BYTES) {
		/* Declared size at RCPT, the real size reconciled at the end. */
		*needs |= POLICY_STAGE(POLICY_MAIL) | POLICY_STAGE(POLICY_HEADER) |
		    POLICY_STAGE(POLICY_BODY) | POLICY_STAGE(POLICY_EOM);
		return POLICY_STAGE(POLICY_RCPT) | POLICY_STAGE(POLICY_EOM);
	}
	return POLICY_STAGE(POLICY_RCPT);
}

/* Append part to the key, '|' before it, escaping '|' and '\' in it. */
static bool
append_part(struct policy_count *c, const char *part, bool first)
{
	if (part[0] == '\0')
		return false;
	if (!first && c->keylen + 1 < sizeof(c->key))
		c->key[c->keylen++] = '|';
	for (; *part != '\0' && c->keylen + 2 < sizeof(c->key); part++) {
		if (*part == '|' || *part == '\\')
			c->key[c->keylen++] = '\\';
		c->key[c->keylen++] = *part;
	}
	c->key[c->keylen] = '\0';
	return true;
}

/*
 * An address key part, from the session's value, which is canonical
 * already (policies/canon.h): it is not parsed again, only its extension
 * goes when the policy asks.
 */
static void
address_part(const char *addr, const struct ratelimit_settings *s, char *buf,
    size_t len)
{
	if (s->strip_extension)
		canon_strip_extension(addr, buf, len);
	else
		snprintf(buf, len, "%s", addr != NULL ? addr : "");
}

static bool
ratelimit_count(const void *settings, enum policy_stage stage,
    const struct policy_msg *msg, struct policy_count *c)
{
	const struct ratelimit_settings *s = settings;
	char buf[CANON_SIZE(1100)];

	if (stage != POLICY_RCPT)
		return false;
	c->keylen = 0;
	c->key[0] = '\0';
	for (size_t i = 0; i < s->nparts; i++) {
		switch (s->parts[i]) {
		case KP_CLIENT_IP: snprintf(buf, sizeof(buf), "%s", msg->client_ip); break;
		case KP_CLIENT_NET:
			canon_client_net(msg->client_ip, (unsigned)s->client_net_v4,
			    (unsigned)s->client_net_v6, buf, sizeof(buf));
			break;
		case KP_HELO: canon_domain(msg->helo, buf, sizeof(buf)); break;
		case KP_SENDER: address_part(msg->sender, s, buf, sizeof(buf)); break;
		case KP_SENDER_DOMAIN: canon_domain_of(msg->sender, buf, sizeof(buf)); break;
		case KP_SASL_USER: canon_lower(msg->sasl_user, buf, sizeof(buf)); break;
		case KP_RCPT: address_part(msg->rcpt, s, buf, sizeof(buf)); break;
		case KP_RCPT_DOMAIN: canon_domain_of(msg->rcpt, buf, sizeof(buf)); break;
		case KP_COUNT: buf[0] = '\0'; break;
		}
		/* An empty part (no SASL user, no client address): not counted. */
		if (!append_part(c, buf, i == 0))
			return false;
	}
	c->unit = s->unit;
	c->amount = s->unit == POLICY_UNIT_BYTES ?
	    (msg->has_declared_size ? msg->declared_size : 0) : 1;
	c->limit = s->limit;
	c->window_ms = s->window_ms;
	return true;
}

static bool
ratelimit_per_recipient(const void *settings)
{
	return ((const struct ratelimit_settings *)settings)->unit == POLICY_UNIT_RECIPIENTS;
}

const struct policy_type policy_type_ratelimit = {
	.name = "ratelimit",
	.stages = POLICY_STAGE(POLICY_RCPT) | POLICY_STAGE(POLICY_EOM),
	.needs = POLICY_STAGE(POLICY_RCPT),
	.settings_size = sizeof(struct ratelimit_settings),
	.fields = ratelimit_fields,
	.validate = ratelimit_validate,
	.stages_of = ratelimit_stages,
	.count = ratelimit_count,
	.per_recipient = ratelimit_per_recipient,
	.uses_store = true,
	.default_reject = "550 5.7.1 Rate limit of ${limit} per ${window} reached for ${key}",
	.default_tempfail = "451 4.7.1 Rate limit reached for ${key}; try again in ${retry_after}",
};
