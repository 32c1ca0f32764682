/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * cfg_int - what the files of the configuration loader share (other modules
 * use cfg.h):
 *
 * cfg_parse.c   the table-driven field parser, typed values, unknown keys
 *               with "did you mean", and error reporting as file:line;
 * cfg_policy.c  the policy, exempt and reply groups and the enumerations;
 * cfg.c         the top level and the redis group, cfg_load, and the
 *               snapshots with the Redis store they share.
 *
 * Every parser reports through ERR/WARN with the setting whose line is meant
 * and counts errors in the loader; nothing is committed unless the count is
 * zero.  Not thread-safe: one loader belongs to one cfg_load call.
 */
#ifndef PM_CFG_INT_H
#define PM_CFG_INT_H

#include <libconfig.h>
#include <stdbool.h>
#include <stddef.h>

#include "milter/cfg.h"
#include "policies/policy.h"

struct loader {
	const char *path;
	const char *include_dir;   /* where libconfig resolves @include, or NULL */
	cfg_report_fn *report;
	void *arg;
	int errors;
};

void cfg_report_at(struct loader *ld, const config_setting_t *s, bool is_error,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define ERR(ld, s, ...)  cfg_report_at((ld), (s), true, __VA_ARGS__)
#define WARN(ld, s, ...) cfg_report_at((ld), (s), false, __VA_ARGS__)

/* The member field of s (element index of it unless -1), for its line;
 * s itself when there is none. */
const config_setting_t *cfg_setting_at(const config_setting_t *s,
    const char *field, int index);

/* An error for every member of group whose name is not in known (NULL
 * terminated), with the nearest known one; where names the group. */
void cfg_check_unknown_keys(struct loader *ld, const config_setting_t *group,
    const char *where, const char *const *known);

/* "a string", "a number", ... for messages. */
const char *cfg_type_name(int type);

/* A string setting or NULL, with an error for any other type. */
const char *cfg_get_string(struct loader *ld, const config_setting_t *s);

/* Fill base from the settings of group that fields name.  Missing required
 * settings are errors; others keep what base holds (its defaults). */
void cfg_parse_fields(struct loader *ld, const config_setting_t *group,
    const char *where, const struct policy_field *fields, void *base);

/* extra then the names of fields into out (cap entries, NULL terminated). */
void cfg_known_from_fields(const struct policy_field *fields,
    const char *const *extra, const char **out, size_t cap);

/* on_redis_error = "accept" | "tempfail"; -1 after an error. */
int cfg_parse_on_error(struct loader *ld, const config_setting_t *s,
    enum cfg_on_error *out);

/* exempt = { clients = [...]; authenticated = bool; }, global or per policy. */
void cfg_parse_exempt(struct loader *ld, const config_setting_t *s,
    struct cfg_exempt *c);

/* policies = ( {...}, ... ) into c->policies and c->npolicies. */
void cfg_parse_policies(struct loader *ld, const config_setting_t *s,
    struct cfg *c);

/* Free what a policy holds (not p itself). */
void cfg_policy_clear(struct cfg_policy *p);

#endif
