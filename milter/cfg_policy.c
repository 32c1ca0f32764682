/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * cfg_policy - the policy, exempt and reply groups of the configuration, and
 * the enumerations they use (see cfg_int.h).
 *
 * A policy is parsed in the order a reader checks it: name and type, the
 * type's own fields (its table), the type's validation (its errors name the
 * setting's own line), its list file, then the common settings, exemptions,
 * action and reply.  A list file's modification time is taken before it is
 * read, so that a write during the read is seen as a change.
 */
#include "config.h"

#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "milter/cfg.h"
#include "milter/cfg_int.h"
#include "milter/reply.h"

/* ---- enumerations */

int
cfg_parse_on_error(struct loader *ld, const config_setting_t *s, enum cfg_on_error *out)
{
	const char *v = cfg_get_string(ld, s);

	if (v == NULL)
		return -1;
	if (strcmp(v, "accept") == 0)
		*out = CFG_ON_ERROR_ACCEPT;
	else if (strcmp(v, "tempfail") == 0)
		*out = CFG_ON_ERROR_TEMPFAIL;
	else {
		ERR(ld, s, "on_redis_error must be \"accept\" or \"tempfail\", not \"%s\"", v);
		return -1;
	}
	return 0;
}

static const char *const action_names[] = {
	"accept", "reject", "tempfail", "discard", "quarantine", NULL,
};

static int
parse_action(struct loader *ld, const config_setting_t *s, enum policy_action *out)
{
	static const enum policy_action values[] = {
		POLICY_ACCEPT, POLICY_REJECT, POLICY_TEMPFAIL, POLICY_DISCARD,
		POLICY_QUARANTINE,
	};
	const char *v = cfg_get_string(ld, s);

	if (v == NULL)
		return -1;
	for (size_t i = 0; action_names[i] != NULL; i++) {
		if (strcmp(v, action_names[i]) == 0) {
			*out = values[i];
			return 0;
		}
	}
	const char *near = cfg_suggest(v, action_names);
	ERR(ld, s, "unknown action \"%s\"%s%s%s (accept, reject, tempfail, discard, "
	    "quarantine)", v, near ? "; did you mean \"" : "", near ? near : "",
	    near ? "\"?" : "");
	return -1;
}

/* ---- exempt */

static const struct policy_field exempt_fields[] = {
	{ "authenticated", PF_BOOL, offsetof(struct cfg_exempt, authenticated), 0, 0, false },
	{ NULL, 0, 0, 0, 0, false },
};

void
cfg_parse_exempt(struct loader *ld, const config_setting_t *s, struct cfg_exempt *c)
{
	static const char *const known[] = { "clients", "authenticated", NULL };
	const config_setting_t *list;

	if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
		ERR(ld, s, "exempt must be a group { clients = [...]; }, not %s",
		    cfg_type_name(config_setting_type(s)));
		return;
	}
	cfg_check_unknown_keys(ld, s, "exempt", known);
	cfg_parse_fields(ld, s, "exempt", exempt_fields, c);
	if ((list = config_setting_get_member(s, "clients")) == NULL)
		return;
	if (config_setting_type(list) != CONFIG_TYPE_ARRAY &&
	    config_setting_type(list) != CONFIG_TYPE_LIST) {
		ERR(ld, list, "clients must be an array of addresses [ \"192.0.2.0/24\", ... ]");
		return;
	}
	int n = config_setting_length(list);
	c->clients = calloc((size_t)n + 1, sizeof(*c->clients));
	if (c->clients == NULL)
		return;
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
		const char *v = cfg_get_string(ld, e);
		char why[256];

		if (v == NULL)
			continue;
		if (addr_parse_net(v, &c->clients[c->nclients], why, sizeof(why)) != 0)
			ERR(ld, e, "exempt clients: %s", why);
		else
			c->nclients++;
	}
}

/* ---- policies */

/* A policy type's own file reports "path:line: message" ready made. */
static void
report_loaded(void *arg, const char *msg)
{
	struct loader *ld = arg;

	ld->report(ld->arg, true, msg);
}

static long long
mtime_ns(const char *path)
{
	struct stat sb;

	if (stat(path, &sb) != 0)
		return -1;
	return (long long)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec;
}

bool
cfg_files_changed(const struct cfg *c, long long *stamp)
{
	bool changed = false;
	unsigned long long h = 0;  /* unsigned: the hash may wrap */

	for (size_t i = 0; i < c->nwatch; i++) {
		long long t = mtime_ns(c->watch[i].path);
		changed |= t != c->watch[i].mtime_ns;
		h = h * 31 + (unsigned long long)t;
	}
	*stamp = (long long)(h >> 1);
	return changed;
}

static const struct policy_field common_fields[] = {
	{ "dry_run", PF_BOOL, offsetof(struct cfg_policy, dry_run), 0, 0, false },
	{ NULL, 0, 0, 0, 0, false },
};

static const char *const common_keys[] = {
	"name", "type", "action", "reply", "dry_run", "on_redis_error", "exempt", NULL,
};

static bool
valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64)
		return false;
	return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

static struct reply_tmpl *
parse_reply(struct loader *ld, const config_setting_t *s, const char *fallback,
    enum policy_action action)
{
	const char *lines[REPLY_MAX_LINES + 1];
	size_t n = 0;
	char why[512], warn[512];
	struct reply_tmpl *t;

	if (s == NULL) {
		lines[n++] = fallback;
	} else if (config_setting_type(s) == CONFIG_TYPE_STRING) {
		lines[n++] = config_setting_get_string(s);
	} else if (config_setting_type(s) == CONFIG_TYPE_ARRAY ||
	    config_setting_type(s) == CONFIG_TYPE_LIST) {
		int len = config_setting_length(s);
		if (len > REPLY_MAX_LINES) {
			ERR(ld, s, "reply has %d lines; libmilter sends at most %d", len,
			    REPLY_MAX_LINES);
			return NULL;
		}
		for (int i = 0; i < len; i++) {
			const char *v = cfg_get_string(ld, config_setting_get_elem(s, (unsigned)i));
			if (v == NULL)
				return NULL;
			lines[n++] = v;
		}
	} else {
		ERR(ld, s, "reply must be a string or a list of strings, not %s",
		    cfg_type_name(config_setting_type(s)));
		return NULL;
	}
	t = reply_compile(lines, n, action, why, sizeof(why), warn, sizeof(warn));
	if (t == NULL)
		ERR(ld, s, "%s", why);
	else if (warn[0] != '\0')
		WARN(ld, s, "%s", warn);
	return t;
}

void
cfg_policy_clear(struct cfg_policy *p)
{
	if (p->settings != NULL) {
		if (p->type->free_settings != NULL)
			p->type->free_settings(p->settings);
		for (const struct policy_field *f = p->type->fields; f->name != NULL; f++)
			if (f->kind == PF_STRING) {
				free(*(char **)(void *)((char *)p->settings + f->offset));
			} else if (f->kind == PF_STRLIST) {
				struct policy_strlist *l = (struct policy_strlist *)(void *)
				    ((char *)p->settings + f->offset);
				for (size_t i = 0; i < l->n; i++)
					free(l->v[i]);
				free(l->v);
			}
		free(p->settings);
	}
	reply_free(p->reply);
	free(p->exempt.clients);
	free(p->keys);
	free(p->name);
}

/* Parse one policy group into p (zeroed).  Returns -1 when p is unusable. */
static int
parse_policy(struct loader *ld, const config_setting_t *s, struct cfg_policy *p,
    unsigned index)
{
	const config_setting_t *v;
	const char *type_name_s, *known[40];
	char where[128];
	int before = ld->errors;

	if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
		ERR(ld, s, "policy %u must be a group { name = ...; type = ...; }", index + 1);
		return -1;
	}
	p->line = config_setting_source_line(s);
	p->on_redis_error = CFG_ON_ERROR_INHERIT;
	v = config_setting_get_member(s, "name");
	if (v == NULL) {
		ERR(ld, s, "policy %u has no name", index + 1);
	} else if (cfg_get_string(ld, v) != NULL) {
		const char *name = config_setting_get_string(v);
		if (!valid_name(name))
			ERR(ld, v, "policy name \"%s\" must be 1 to 64 of a-z 0-9 _ -", name);
		p->name = strdup(name);
	}
	snprintf(where, sizeof(where), "policy \"%s\"", p->name ? p->name : "?");

	v = config_setting_get_member(s, "type");
	if (v == NULL) {
		ERR(ld, s, "%s has no type", where);
		return -1;
	}
	if ((type_name_s = cfg_get_string(ld, v)) == NULL)
		return -1;
	if ((p->type = policy_type_find(type_name_s)) == NULL) {
		const char *names[16];
		char list[256] = "";
		size_t n = 0;
		for (; policy_types[n] != NULL && n < 15; n++) {
			names[n] = policy_types[n]->name;
			strncat(list, n ? ", " : "", sizeof(list) - strlen(list) - 1);
			strncat(list, names[n], sizeof(list) - strlen(list) - 1);
		}
		names[n] = NULL;
		const char *near = cfg_suggest(type_name_s, names);
		ERR(ld, v, "%s: unknown type \"%s\"%s%s%s (known: %s)", where, type_name_s,
		    near ? "; did you mean \"" : "", near ? near : "", near ? "\"?" : "", list);
		return -1;
	}
	cfg_known_from_fields(p->type->fields, common_keys, known, 40);
	cfg_check_unknown_keys(ld, s, where, known);

	if ((p->settings = calloc(1, p->type->settings_size)) == NULL)
		return -1;
	cfg_parse_fields(ld, s, where, p->type->fields, p->settings);
	if (ld->errors == before && p->type->validate != NULL) {
		struct policy_invalid inv = { "", NULL, -1 };
		if (p->type->validate(p->settings, &inv) != 0)
			ERR(ld, cfg_setting_at(s, inv.field, inv.index), "%s: %s", where, inv.why);
	}
	/* The time first: a write during the read is then seen as a change. */
	if (ld->errors == before && p->type->watch_file != NULL &&
	    p->type->watch_file(p->settings) != NULL)
		p->watch_mtime = mtime_ns(p->type->watch_file(p->settings));
	if (ld->errors == before && p->type->load != NULL)
		ld->errors += p->type->load(p->settings, report_loaded, ld);
	p->live = ld->errors == before && p->type->live != NULL &&
	    p->type->live(p->settings);

	cfg_parse_fields(ld, s, where, common_fields, p);
	if ((v = config_setting_get_member(s, "on_redis_error")) != NULL) {
		cfg_parse_on_error(ld, v, &p->on_redis_error);
		if (!p->live && !p->type->uses_store)
			WARN(ld, v, "%s: on_redis_error has no effect: type \"%s\" needs "
			    "no Redis", where, p->type->name);
	}
	if ((v = config_setting_get_member(s, "exempt")) != NULL)
		cfg_parse_exempt(ld, v, &p->exempt);
	p->stages = p->type->stages;
	p->needs = p->type->needs;
	if (ld->errors == before && p->type->stages_of != NULL)
		p->stages = p->type->stages_of(p->settings, &p->needs);

	if ((v = config_setting_get_member(s, "action")) == NULL) {
		ERR(ld, s, "%s has no action (accept, reject, tempfail, discard, "
		    "quarantine)", where);
		return ld->errors == before ? 0 : -1;
	}
	if (parse_action(ld, v, &p->action) != 0)
		return -1;
	const config_setting_t *r = config_setting_get_member(s, "reply");
	if (p->action == POLICY_REJECT || p->action == POLICY_TEMPFAIL) {
		const char *fallback = p->action == POLICY_REJECT ?
		    p->type->default_reject : p->type->default_tempfail;
		p->reply = parse_reply(ld, r, fallback, p->action);
	} else if (r != NULL) {
		ERR(ld, r, "%s: reply is only sent with action reject or tempfail; "
		    "action \"%s\" accepts the message", where,
		    policy_action_name(p->action));
	}
	return ld->errors == before ? 0 : -1;
}

void
cfg_parse_policies(struct loader *ld, const config_setting_t *s, struct cfg *c)
{
	int n;

	if (config_setting_type(s) != CONFIG_TYPE_LIST) {
		ERR(ld, s, "policies must be a list ( { ... }, { ... } ), not %s",
		    cfg_type_name(config_setting_type(s)));
		return;
	}
	n = config_setting_length(s);
	if ((c->policies = calloc((size_t)n + 1, sizeof(*c->policies))) == NULL)
		return;
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		struct cfg_policy *p = &c->policies[c->npolicies];

		parse_policy(ld, e, p, (unsigned)i);
		if (p->type == NULL) {
			cfg_policy_clear(p);
			memset(p, 0, sizeof(*p));
			continue;
		}
		for (size_t j = 0; p->name != NULL && j < c->npolicies; j++) {
			if (c->policies[j].name != NULL &&
			    strcmp(c->policies[j].name, p->name) == 0) {
				ERR(ld, config_setting_get_member(e, "name"),
				    "policy name \"%s\" is already used at line %u; names "
				    "must be unique (they name Redis keys and log lines)",
				    p->name, c->policies[j].line);
				break;
			}
		}
		c->npolicies++;
	}
}
