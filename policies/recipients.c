/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * recipients - at most max recipients per message.
 *
 * Recipients up to max go through; every further RCPT gets the reply, so
 * the client (per RFC 5321 §4.5.3.1.8) sends the rest in a new transaction.
 * Only recipients that the MTA and every policy accepted are counted (the
 * session counts them), so a recipient refused for another reason does not
 * use up a place.
 */
#include "config.h"

#include <stddef.h>

#include "policies/policy.h"

struct recipients_settings {
	long long max;
};

static const struct policy_field recipients_fields[] = {
	{ "max", PF_INT, offsetof(struct recipients_settings, max), 1, 1000000, true },
	{ NULL, 0, 0, 0, 0, false },
};

static bool
recipients_check(const void *settings, enum policy_stage stage,
    const struct policy_msg *msg, struct policy_hit *hit)
{
	const struct recipients_settings *s = settings;

	(void)stage;
	hit->limit = (uint64_t)s->max;
	hit->limit_is_size = false;
	return msg->rcpts >= (unsigned long long)s->max;
}

static bool
recipients_per_recipient(const void *settings)
{
	(void)settings;
	return true;
}

const struct policy_type policy_type_recipients = {
	.name = "recipients",
	.stages = POLICY_STAGE(POLICY_RCPT),
	.needs = 0,
	.settings_size = sizeof(struct recipients_settings),
	.fields = recipients_fields,
	.check = recipients_check,
	.per_recipient = recipients_per_recipient,
	.default_reject = "550 5.5.3 Too many recipients (at most ${limit} per message)",
	.default_tempfail = "452 4.5.3 Too many recipients (at most ${limit} per message)",
};
