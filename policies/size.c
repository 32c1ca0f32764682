/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * size - refuse messages larger than max.
 *
 * The cheap and kind decision comes first: a client that declares SIZE=
 * above the limit in MAIL FROM is refused at RCPT, before it sends a byte of
 * data (refusing at end of message makes Postfix stall later sessions, see
 * README).  Otherwise the real size (header and body octets as the milter
 * receives them) is compared at end of message.  Needs no Redis.
 */
#include "config.h"

#include <stddef.h>

#include "policies/policy.h"

struct size_settings {
	uint64_t max;
};

static const struct policy_field size_fields[] = {
	{ "max", PF_SIZE, offsetof(struct size_settings, max), 1, 0, true },
	{ NULL, 0, 0, 0, 0, false },
};

static bool
size_check(const void *settings, enum policy_stage stage,
    const struct policy_msg *msg, struct policy_hit *hit)
{
	const struct size_settings *s = settings;
	bool over;

	if (stage == POLICY_RCPT)
		over = msg->has_declared_size && msg->declared_size > s->max;
	else
		over = msg->size > s->max;
	hit->limit = s->max;
	hit->limit_is_size = true;
	return over;
}

const struct policy_type policy_type_size = {
	.name = "size",
	.stages = POLICY_STAGE(POLICY_RCPT) | POLICY_STAGE(POLICY_EOM),
	.needs = POLICY_STAGE(POLICY_MAIL) | POLICY_STAGE(POLICY_HEADER) |
	    POLICY_STAGE(POLICY_BODY),
	.settings_size = sizeof(struct size_settings),
	.fields = size_fields,
	.check = size_check,
	.default_reject = "552 5.3.4 Message too big for this system (limit ${limit})",
	.default_tempfail = "452 4.3.1 Message too big for now (limit ${limit})",
};
