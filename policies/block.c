/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * block - block lists and allow lists: refuse (or accept, discard,
 * quarantine) what matches an entry of a static list.
 *
 * The list is `entries` in the configuration plus the lines of `file`,
 * compiled into a matcher (policies/matcher.h) when the configuration
 * loads, so a bad entry fails the load with its file and line, and a reload
 * with a bad file keeps the old list.  The policy decides at the earliest
 * stage that has its data: the client at connect, the HELO name at HELO,
 * the sender and SASL user at MAIL, each recipient at RCPT.
 *
 * With redis = true the policy also consults a live list, the Redis sorted
 * set <prefix>block:<policy> (member = an entry in the syntax above except
 * regexes, score = its expiry in Unix seconds, +inf for never).  The static
 * list is matched first, in memory; when it does not match, block_members
 * names every member that would match the value, and the engine looks them
 * up with the other Redis work of the stage (milter/limiter.h).
 */
#include "config.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <stdlib.h>

#include "milter/addr.h"
#include "policies/canon.h"
#include "policies/matcher.h"
#include "policies/policy.h"

enum block_match {
	BM_SENDER, BM_SENDER_DOMAIN, BM_CLIENT, BM_HELO, BM_RCPT, BM_RCPT_DOMAIN,
	BM_SASL_USER, BM_COUNT
};

static const struct {
	const char *name;
	enum matcher_kind kind;
	enum policy_stage stage;
} matches[BM_COUNT] = {
	{ "sender", MATCHER_ADDRESS, POLICY_MAIL },
	{ "sender_domain", MATCHER_DOMAIN, POLICY_MAIL },
	{ "client", MATCHER_CLIENT, POLICY_CONNECT },
	{ "helo", MATCHER_NAME, POLICY_HELO },
	{ "rcpt", MATCHER_ADDRESS, POLICY_RCPT },
	{ "rcpt_domain", MATCHER_DOMAIN, POLICY_RCPT },
	{ "sasl_user", MATCHER_NAME, POLICY_MAIL },
};

struct block_settings {
	char *match;
	struct policy_strlist entries;
	char *file;
	bool redis;
	/* built by validate and load */
	enum block_match bm;
	struct matcher *m;
};

static const struct policy_field block_fields[] = {
	{ "match", PF_STRING, offsetof(struct block_settings, match), 0, 0, true },
	{ "entries", PF_STRLIST, offsetof(struct block_settings, entries), 0, 0, false },
	{ "file", PF_STRING, offsetof(struct block_settings, file), 0, 0, false },
	{ "redis", PF_BOOL, offsetof(struct block_settings, redis), 0, 0, false },
	{ NULL, 0, 0, 0, 0, false },
};

static int
block_validate(void *settings, struct policy_invalid *inv)
{
	char *why = inv->why;
	size_t whylen = sizeof(inv->why);
	struct block_settings *s = settings;
	size_t i;

	for (i = 0; i < BM_COUNT && strcmp(s->match, matches[i].name) != 0; i++)
		;
	if (i == BM_COUNT) {
		inv->field = "match";
		snprintf(why, whylen, "match must be one of sender, sender_domain, client, "
		    "helo, rcpt, rcpt_domain, sasl_user, not \"%s\"", s->match);
		return -1;
	}
	s->bm = (enum block_match)i;
	if (s->entries.n == 0 && s->file == NULL && !s->redis) {
		snprintf(why, whylen, "a block policy needs entries, a file or redis = true");
		return -1;
	}
	if ((s->m = matcher_new(matches[i].kind)) == NULL) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	for (size_t e = 0; e < s->entries.n; e++) {
		char reason[sizeof(inv->why) - 16];
		if (matcher_add(s->m, s->entries.v[e], reason, sizeof(reason)) != 0) {
			inv->field = "entries";
			inv->index = (int)e;
			snprintf(why, whylen, "entries: %s", reason);
			return -1;
		}
	}
	return 0;
}

static int
block_load(void *settings, void (*report)(void *arg, const char *msg), void *arg)
{
	struct block_settings *s = settings;

	if (s->file == NULL || s->m == NULL)
		return 0;
	return matcher_load_file(s->m, s->file, report, arg);
}

static const char *
block_watch_file(const void *settings)
{
	return ((const struct block_settings *)settings)->file;
}

static void
block_free(void *settings)
{
	matcher_free(((struct block_settings *)settings)->m);
}

static unsigned
block_stages(const void *settings, unsigned *needs)
{
	const struct block_settings *s = settings;

	*needs = POLICY_STAGE(matches[s->bm].stage);
	return POLICY_STAGE(matches[s->bm].stage);
}

/* The part of the message that the policy's match kind compares. */
static const char *
value_of(const struct block_settings *s, const struct policy_msg *msg)
{
	switch (s->bm) {
	case BM_SENDER:
	case BM_SENDER_DOMAIN: return msg->sender;
	case BM_CLIENT: return msg->client_ip;
	case BM_HELO: return msg->helo;
	case BM_RCPT:
	case BM_RCPT_DOMAIN: return msg->rcpt;
	case BM_SASL_USER: return msg->sasl_user;
	case BM_COUNT: break;
	}
	return "";
}

static bool
block_check(const void *settings, enum policy_stage stage,
    const struct policy_msg *msg, struct policy_hit *hit)
{
	const struct block_settings *s = settings;
	const char *value;

	(void)stage;
	hit->limit = 0;
	hit->limit_is_size = false;
	value = value_of(s, msg);
	/* Nothing to compare (no client address, not authenticated): no match.
	 * The null sender is "<>" (policies/canon.h). */
	if (value[0] == '\0' && s->bm != BM_SENDER && s->bm != BM_SENDER_DOMAIN)
		return false;
	return matcher_match(s->m, value);
}

static bool
block_live(const void *settings)
{
	return ((const struct block_settings *)settings)->redis;
}

/* ---- live-list members */

/*
 * Appends prefix (may be "") and then value[0..len), lowercased and without
 * one trailing dot, to out's buffer as one member.  Returns the copy of value
 * inside it (len updated), or NULL when the buffer is full.
 */
static char *
member_add(struct policy_members *out, size_t *used, const char *prefix,
    const char *value, size_t *len)
{
	size_t plen = strlen(prefix);
	char *dst = out->buf + *used;

	if (*len > 1 && value[*len - 1] == '.')
		(*len)--;
	if (out->n == POLICY_MEMBERS_MAX || plen + *len > sizeof(out->buf) - *used)
		return NULL;
	memcpy(dst, prefix, plen);
	for (size_t i = 0; i < *len; i++) {
		char c = value[i];
		dst[plen + i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
	}
	*used += plen + *len;
	out->v[out->n] = dst;
	out->len[out->n++] = plen + *len;
	return dst + plen;
}

/* A member that is already in the buffer (a part of an earlier one). */
static void
member_ref(struct policy_members *out, const char *p, size_t len)
{
	if (out->n < POLICY_MEMBERS_MAX) {
		out->v[out->n] = p;
		out->len[out->n++] = len;
	}
}

/* ".example.com", ".com": the entries for d and for each domain above it. */
static void
member_suffixes(struct policy_members *out, size_t *used, const char *d, size_t len)
{
	char *copy = len > 0 ? member_add(out, used, ".", d, &len) : NULL;

	for (size_t i = 1; copy != NULL && i + 1 < len; i++)
		if (copy[i] == '.')
			member_ref(out, copy + i, len - i);
}

/* The part after the last '@' of v[0..len), or NULL when there is none. */
static const char *
after_last_at(const char *v, size_t len)
{
	const char *at = NULL;

	for (size_t i = 0; i < len; i++)
		if (v[i] == '@')
			at = v + i;
	return at != NULL ? at + 1 : NULL;
}

/* 192.0.2.1, then 192.0.2.1/32, 192.0.2.0/31 ... 0.0.0.0/0 (IPv6 alike). */
static void
member_networks(struct policy_members *out, size_t *used, const char *value)
{
	struct addr_ip ip;
	bool v4;
	char text[INET6_ADDRSTRLEN + 8];
	unsigned bits;
	size_t len;

	if (strncasecmp(value, "ipv6:", 5) == 0)
		value += 5;
	if (addr_parse_ip(value, &ip) != 0)
		return;
	v4 = memcmp(ip.b, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0;
	bits = v4 ? 32 : 128;
	for (unsigned prefix = bits + 1; prefix-- > 0;) {
		uint8_t b[16];
		unsigned mapped = v4 ? prefix + 96 : prefix, full = mapped / 8, rest = mapped % 8;
		int n;

		memcpy(b, ip.b, full);
		memset(b + full, 0, 16 - full);
		if (rest != 0)
			b[full] = ip.b[full] & (uint8_t)(0xff << (8 - rest));
		if (inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? b + 12 : b, text,
		    INET6_ADDRSTRLEN) == NULL)
			return;
		len = strlen(text);
		if (prefix == bits)
			member_add(out, used, "", text, &len);
		n = (int)len;
		snprintf(text + n, sizeof(text) - (size_t)n, "/%u", prefix);
		len = strlen(text);
		member_add(out, used, "", text, &len);
	}
}

static size_t
block_members(const void *settings, enum policy_stage stage,
    const struct policy_msg *msg, struct policy_members *out)
{
	const struct block_settings *s = settings;
	const char *value, *d;
	char *m;
	size_t used = 0, len;

	(void)stage;
	out->n = 0;
	if (!s->redis)
		return 0;
	value = value_of(s, msg);
	if (strlen(value) > POLICY_MEMBER_VALUE_MAX)
		return 0;
	if (value[0] == '\0' || strcmp(value, "<>") == 0) {
		if (s->bm == BM_SENDER)
			member_ref(out, "<>", 2);
		return out->n;
	}
	len = strlen(value);
	switch (matches[s->bm].kind) {
	case MATCHER_ADDRESS:
		/* user@example.com, @example.com, .example.com, .com */
		if ((m = member_add(out, &used, "", value, &len)) == NULL)
			break;
		if ((d = after_last_at(m, len)) != NULL && d < m + len) {
			member_ref(out, d - 1, len - (size_t)(d - 1 - m));
			member_suffixes(out, &used, d, len - (size_t)(d - m));
		}
		break;
	case MATCHER_DOMAIN:
		/* example.com, @example.com, .example.com, .com */
		if ((d = after_last_at(value, len)) != NULL) {
			len -= (size_t)(d - value);
			value = d;
		}
		if (len == 0 || (m = member_add(out, &used, "@", value, &len)) == NULL)
			break;
		out->v[out->n - 1] = m;     /* the domain first, then "@" + domain */
		out->len[out->n - 1] = len;
		member_ref(out, m - 1, len + 1);
		member_suffixes(out, &used, m, len);
		break;
	case MATCHER_NAME:
		/* mx.example.com (or alice@example.com), .example.com, .com */
		if ((m = member_add(out, &used, "", value, &len)) == NULL)
			break;
		if ((d = after_last_at(m, len)) != NULL)
			member_suffixes(out, &used, d, len - (size_t)(d - m));
		else
			member_suffixes(out, &used, m, len);
		break;
	case MATCHER_CLIENT:
		member_networks(out, &used, value);
		break;
	}
	return out->n;
}

/* ---- live-list entries from an operator (policy-milter-ctl block) */

/* prefix + canonical domain d into out. */
static void
domain_entry(const char *prefix, const char *d, char *out, size_t outlen)
{
	char buf[CANON_SIZE(1100)];

	canon_domain(d, buf, sizeof(buf));
	snprintf(out, outlen, "%s%s", prefix, buf);
}

/*
 * The member for entry: the entry in the syntax of the static lists
 * (policies/matcher.h; no regular expressions), written as block_members
 * writes the members it looks up.  A value it should match (probe) is then
 * run through block_members, which must name the member: an entry the
 * milter would never look up is refused rather than stored in vain.
 */
static int
block_live_entry(const void *settings, const char *entry, char *out, size_t outlen,
    char *why, size_t whylen)
{
	const struct block_settings *s = settings;
	enum matcher_kind kind = matches[s->bm].kind;
	char probe[CANON_SIZE(1100) + 8];
	struct policy_msg msg = { "", "", "", "", "", 0, false, 0, 0 };
	struct policy_members *mem;
	struct matcher *m;
	int rc;

	if (!s->redis) {
		snprintf(why, whylen, "the policy has no live list (redis = true)");
		return -1;
	}
	if (entry[0] == '/') {
		snprintf(why, whylen, "\"%s\": regular expressions are not looked up in "
		    "live lists", entry);
		return -1;
	}
	if (strlen(entry) > POLICY_MEMBER_VALUE_MAX) {
		snprintf(why, whylen, "longer than %d octets", POLICY_MEMBER_VALUE_MAX);
		return -1;
	}
	/* The static lists' syntax decides what is an entry. */
	if ((m = matcher_new(kind)) == NULL) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	rc = matcher_add(m, entry, why, whylen);
	matcher_free(m);
	if (rc != 0)
		return -1;
	switch (kind) {
	case MATCHER_CLIENT: {
		struct addr_net net;
		char ip[INET6_ADDRSTRLEN];
		bool v4;

		if (addr_parse_net(entry, &net, why, whylen) != 0)
			return -1;
		v4 = memcmp(net.ip.b, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0;
		inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? net.ip.b + 12 : net.ip.b, ip, sizeof(ip));
		if (strchr(entry, '/') == NULL)
			snprintf(out, outlen, "%s", ip);
		else
			snprintf(out, outlen, "%s/%u", ip, v4 ? net.prefix - 96 : net.prefix);
		snprintf(probe, sizeof(probe), "%s", ip);
		break;
	}
	case MATCHER_ADDRESS:
		if (strcmp(entry, "<>") == 0) {
			snprintf(out, outlen, "<>");
			snprintf(probe, sizeof(probe), "<>");
		} else if (entry[0] == '@' || entry[0] == '.') {
			domain_entry(entry[0] == '@' ? "@" : ".", entry + 1, out, outlen);
			snprintf(probe, sizeof(probe), "x@%s", out + 1);
		} else {
			if (canon_address(entry, 0, out, outlen, why, whylen) != 0)
				return -1;
			snprintf(probe, sizeof(probe), "%s", out);
		}
		break;
	case MATCHER_DOMAIN:
		if (entry[0] == '@' || entry[0] == '.')
			domain_entry(entry[0] == '@' ? "@" : ".", entry + 1, out, outlen);
		else
			domain_entry("", entry, out, outlen);
		snprintf(probe, sizeof(probe), "x@%s", out + (out[0] == '@' || out[0] == '.'));
		break;
	case MATCHER_NAME:
		if (entry[0] == '.')
			domain_entry(".", entry + 1, out, outlen);
		else
			domain_entry("", entry, out, outlen);
		snprintf(probe, sizeof(probe), "%s", out + (out[0] == '.'));
		break;
	}
	switch (s->bm) {
	case BM_SENDER: case BM_SENDER_DOMAIN: msg.sender = probe; break;
	case BM_CLIENT: msg.client_ip = probe; break;
	case BM_HELO: msg.helo = probe; break;
	case BM_RCPT: case BM_RCPT_DOMAIN: msg.rcpt = probe; break;
	case BM_SASL_USER: msg.sasl_user = probe; break;
	case BM_COUNT: break;
	}
	if ((mem = malloc(sizeof(*mem))) == NULL) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	rc = -1;
	for (size_t i = 0, n = block_members(s, matches[s->bm].stage, &msg, mem); i < n; i++)
		if (mem->len[i] == strlen(out) && memcmp(mem->v[i], out, mem->len[i]) == 0)
			rc = 0;
	free(mem);
	if (rc != 0)
		snprintf(why, whylen, "\"%s\" (as \"%s\") would never be looked up for "
		    "match = \"%s\"", entry, out, matches[s->bm].name);
	return rc;
}

/* Recipient lists judge the recipient; the others are decided before RCPT. */
static bool
block_per_recipient(const void *settings)
{
	return matches[((const struct block_settings *)settings)->bm].stage == POLICY_RCPT;
}

const struct policy_type policy_type_block = {
	.name = "block",
	.stages = POLICY_STAGE(POLICY_CONNECT) | POLICY_STAGE(POLICY_HELO) |
	    POLICY_STAGE(POLICY_MAIL) | POLICY_STAGE(POLICY_RCPT),
	.needs = 0,
	.settings_size = sizeof(struct block_settings),
	.fields = block_fields,
	.validate = block_validate,
	.free_settings = block_free,
	.stages_of = block_stages,
	.load = block_load,
	.watch_file = block_watch_file,
	.check = block_check,
	.live = block_live,
	.members = block_members,
	.per_recipient = block_per_recipient,
	.live_entry = block_live_entry,
	.default_reject = "550 5.7.1 Access denied by policy ${policy}",
	.default_tempfail = "450 4.7.1 Access temporarily denied by policy ${policy}",
};
