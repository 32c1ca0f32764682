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
 */
#include "config.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

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
	/* built by validate and load */
	enum block_match bm;
	struct matcher *m;
};

static const struct policy_field block_fields[] = {
	{ "match", PF_STRING, offsetof(struct block_settings, match), 0, 0, true },
	{ "entries", PF_STRLIST, offsetof(struct block_settings, entries), 0, 0, false },
	{ "file", PF_STRING, offsetof(struct block_settings, file), 0, 0, false },
	{ NULL, 0, 0, 0, 0, false },
};

static int
block_validate(void *settings, char *why, size_t whylen)
{
	struct block_settings *s = settings;
	size_t i;

	for (i = 0; i < BM_COUNT && strcmp(s->match, matches[i].name) != 0; i++)
		;
	if (i == BM_COUNT) {
		snprintf(why, whylen, "match must be one of sender, sender_domain, client, "
		    "helo, rcpt, rcpt_domain, sasl_user, not \"%s\"", s->match);
		return -1;
	}
	s->bm = (enum block_match)i;
	if (s->entries.n == 0 && s->file == NULL) {
		snprintf(why, whylen, "a block policy needs entries, a file, or both");
		return -1;
	}
	if ((s->m = matcher_new(matches[i].kind)) == NULL) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	for (size_t e = 0; e < s->entries.n; e++) {
		char reason[512];
		if (matcher_add(s->m, s->entries.v[e], reason, sizeof(reason)) != 0) {
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

static bool
block_check(const void *settings, enum policy_stage stage,
    const struct policy_msg *msg, struct policy_hit *hit)
{
	const struct block_settings *s = settings;
	const char *value = "";

	(void)stage;
	hit->limit = 0;
	hit->limit_is_size = false;
	switch (s->bm) {
	case BM_SENDER:
	case BM_SENDER_DOMAIN: value = msg->sender; break;
	case BM_CLIENT: value = msg->client_ip; break;
	case BM_HELO: value = msg->helo; break;
	case BM_RCPT:
	case BM_RCPT_DOMAIN: value = msg->rcpt; break;
	case BM_SASL_USER: value = msg->sasl_user; break;
	case BM_COUNT: break;
	}
	/* Nothing to compare (no client address, not authenticated): no match.
	 * The null sender is "" too, and is matched by "<>". */
	if (value[0] == '\0' && s->bm != BM_SENDER && s->bm != BM_SENDER_DOMAIN)
		return false;
	return matcher_match(s->m, value);
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
	.default_reject = "550 5.7.1 Access denied by policy ${policy}",
	.default_tempfail = "450 4.7.1 Access temporarily denied by policy ${policy}",
};
