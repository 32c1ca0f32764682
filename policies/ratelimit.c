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

#include <arpa/inet.h>

#include "milter/addr.h"
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

/* A domain part from an operator: a domain, or an address for its domain. */
static int
domain_part(const char *given, char *buf, size_t len, char *why, size_t whylen)
{
	char addr[CANON_SIZE(1100)];

	if (strchr(given, '@') == NULL) {
		canon_domain(given, buf, len);
		return 0;
	}
	if (canon_address(given, 0, addr, sizeof(addr), why, whylen) != 0)
		return -1;
	canon_domain_of(addr, buf, len);
	return 0;
}

static int
ratelimit_key_of(const void *settings, const char *const *parts, size_t nparts,
    struct policy_count *c, char *why, size_t whylen)
{
	const struct ratelimit_settings *s = settings;
	char buf[CANON_SIZE(1100)], ip[64];
	struct addr_ip a;

	if (nparts != s->nparts) {
		snprintf(why, whylen, "the key has %zu part%s (", s->nparts,
		    s->nparts == 1 ? "" : "s");
		for (size_t i = 0; i < s->nparts; i++)
			snprintf(why + strlen(why), whylen - strlen(why), "%s%s",
			    i ? ", " : "", part_names[s->parts[i]]);
		snprintf(why + strlen(why), whylen - strlen(why), "), %zu given", nparts);
		return -1;
	}
	c->keylen = 0;
	c->key[0] = '\0';
	for (size_t i = 0; i < nparts; i++) {
		const char *p = parts[i];
		int rc = 0;

		if (strlen(p) > 1024) {
			snprintf(why, whylen, "%s: longer than 1024 octets", part_names[s->parts[i]]);
			return -1;
		}
		switch (s->parts[i]) {
		case KP_CLIENT_IP:
		case KP_CLIENT_NET:
			/* As the session writes it: inet_ntop, IPv4 without ::ffff:. */
			snprintf(ip, sizeof(ip), "%.*s", (int)strcspn(p, "/"), p);
			if (addr_parse_ip(ip, &a) != 0) {
				snprintf(why, whylen, "%s: \"%s\" is not an IP address",
				    part_names[s->parts[i]], p);
				return -1;
			}
			if (memcmp(a.b, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0)
				inet_ntop(AF_INET, a.b + 12, ip, sizeof(ip));
			else
				inet_ntop(AF_INET6, a.b, ip, sizeof(ip));
			if (s->parts[i] == KP_CLIENT_IP)
				snprintf(buf, sizeof(buf), "%s", ip);
			else
				canon_client_net(ip, (unsigned)s->client_net_v4,
				    (unsigned)s->client_net_v6, buf, sizeof(buf));
			break;
		case KP_HELO: canon_domain(p, buf, sizeof(buf)); break;
		case KP_SENDER:
		case KP_RCPT:
			rc = canon_address(p, s->strip_extension ? CANON_STRIP_EXTENSION : 0,
			    buf, sizeof(buf), why, whylen);
			break;
		case KP_SENDER_DOMAIN:
		case KP_RCPT_DOMAIN:
			rc = domain_part(p, buf, sizeof(buf), why, whylen);
			break;
		case KP_SASL_USER: canon_lower(p, buf, sizeof(buf)); break;
		case KP_COUNT: buf[0] = '\0'; break;
		}
		if (rc != 0)
			return -1;
		if (!append_part(c, buf, i == 0)) {
			snprintf(why, whylen, "%s: empty", part_names[s->parts[i]]);
			return -1;
		}
	}
	c->unit = s->unit;
	c->amount = 1;
	c->limit = s->limit;
	c->window_ms = s->window_ms;
	return 0;
}

static size_t
ratelimit_parts_of(const void *settings, const char **names, size_t max)
{
	const struct ratelimit_settings *s = settings;
	size_t n = 0;

	for (; n < s->nparts && n < max; n++)
		names[n] = part_names[s->parts[n]];
	return n;
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
	.key_of = ratelimit_key_of,
	.parts_of = ratelimit_parts_of,
	.uses_store = true,
	.default_reject = "550 5.7.1 Rate limit of ${limit} per ${window} reached for ${key}",
	.default_tempfail = "451 4.7.1 Rate limit reached for ${key}; try again in ${retry_after}",
};
