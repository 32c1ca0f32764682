/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * registry - the list of policy types the configuration may name.
 * A new type is one file in policies/ and one line here.
 */
#include "config.h"

#include <string.h>

#include "policies/policy.h"

const struct policy_type *const policy_types[] = {
	&policy_type_size,
	&policy_type_recipients,
	&policy_type_ratelimit,
	&policy_type_block,
	NULL,
};

const struct policy_type *
policy_type_find(const char *name)
{
	for (size_t i = 0; policy_types[i] != NULL; i++)
		if (strcmp(policy_types[i]->name, name) == 0)
			return policy_types[i];
	return NULL;
}

const char *
policy_stage_name(enum policy_stage stage)
{
	static const char *const names[POLICY_NSTAGES] = {
		"connect", "helo", "mail", "rcpt", "header", "body", "eom",
	};
	return stage < POLICY_NSTAGES ? names[stage] : "?";
}

const char *
policy_action_name(enum policy_action action)
{
	switch (action) {
	case POLICY_ACCEPT: return "accept";
	case POLICY_REJECT: return "reject";
	case POLICY_TEMPFAIL: return "tempfail";
	case POLICY_DISCARD: return "discard";
	case POLICY_QUARANTINE: return "quarantine";
	case POLICY_NONE: break;
	}
	return "none";
}
