/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * cfg - load, validate and hold configuration snapshots (see cfg.h).
 *
 * Parsing is table-driven: each group of settings is a table of
 * struct policy_field {name, kind, offset, min, max, required} filled into a
 * struct by one generic function.  The few settings with a shape of their
 * own (lists, enumerations, replies) have their own small parsers and are
 * named in the "known keys" arrays, so that an unknown key is always
 * reported with the nearest known one.
 *
 * Every problem is reported and counted; nothing is committed unless the
 * count is zero.  Messages say what is wrong and what would be right.
 */
#include "config.h"

#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "milter/cfg.h"
#include "milter/log.h"
#include "milter/stats.h"
#include "milter/store_redis.h"
#include "milter/units.h"

struct loader {
	const char *path;
	const char *include_dir;   /* where libconfig resolves @include, or NULL */
	cfg_report_fn *report;
	void *arg;
	int errors;
};

static void report_at(struct loader *ld, const config_setting_t *s, bool is_error,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
report_at(struct loader *ld, const config_setting_t *s, bool is_error,
    const char *fmt, ...)
{
	char msg[PATH_MAX + 1024], text[1024];
	const char *file = s != NULL ? config_setting_source_file(s) : NULL;
	unsigned line = s != NULL ? config_setting_source_line(s) : 0;
	va_list ap;

	if (file == NULL)
		file = ld->path;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	/* An included file is named as written in @include: make the name one
	 * that can be opened from anywhere (systemd starts us in /). */
	if (file[0] != '/' && file != ld->path && strcmp(file, ld->path) != 0 &&
	    ld->include_dir != NULL)
		snprintf(msg, sizeof(msg), "%s/%s:%u: %s%s", ld->include_dir, file, line,
		    is_error ? "" : "warning: ", text);
	else
		snprintf(msg, sizeof(msg), "%s:%u: %s%s", file, line,
		    is_error ? "" : "warning: ", text);
	if (is_error)
		ld->errors++;
	ld->report(ld->arg, is_error, msg);
}

/* The member field of s (element index of it unless -1), for its line;
 * s itself when there is none.  (libconfig dates a list element by the
 * token after it: the last element of a list written one a line is
 * reported on the line of the closing bracket.) */
static const config_setting_t *
setting_at(const config_setting_t *s, const char *field, int index)
{
	config_setting_t *m = field != NULL ? config_setting_get_member(s, field) : NULL;
	config_setting_t *e;

	if (m == NULL)
		return s;
	if (index >= 0 && config_setting_is_aggregate(m) &&
	    (e = config_setting_get_elem(m, (unsigned)index)) != NULL)
		return e;
	return m;
}

#define ERR(ld, s, ...)  report_at((ld), (s), true, __VA_ARGS__)
#define WARN(ld, s, ...) report_at((ld), (s), false, __VA_ARGS__)

/* ---- "did you mean" */

static size_t
edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[65];

	if (la > 64 || lb > 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

const char *
cfg_suggest(const char *word, const char *const *candidates)
{
	const char *best = NULL;
	size_t best_d = SIZE_MAX, limit = strlen(word) / 3 + 1;

	for (size_t i = 0; candidates[i] != NULL; i++) {
		size_t d = edit_distance(word, candidates[i]);
		if (d < best_d) {
			best_d = d;
			best = candidates[i];
		}
	}
	return best_d <= (limit < 3 ? limit : 3) ? best : NULL;
}

static void
check_unknown_keys(struct loader *ld, const config_setting_t *group,
    const char *where, const char *const *known)
{
	int n = config_setting_length(group);

	for (int i = 0; i < n; i++) {
		const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
		const char *name = config_setting_name(s);
		bool found = false;

		for (size_t k = 0; known[k] != NULL && !found; k++)
			found = strcmp(known[k], name) == 0;
		if (found)
			continue;
		const char *near = cfg_suggest(name, known);
		if (near != NULL)
			ERR(ld, s, "unknown setting \"%s\" in %s; did you mean \"%s\"?",
			    name, where, near);
		else
			ERR(ld, s, "unknown setting \"%s\" in %s", name, where);
	}
}

/* ---- typed values */

static const char *
type_name(int type)
{
	switch (type) {
	case CONFIG_TYPE_GROUP: return "a group { ... }";
	case CONFIG_TYPE_INT: case CONFIG_TYPE_INT64: return "a number";
	case CONFIG_TYPE_FLOAT: return "a decimal number";
	case CONFIG_TYPE_STRING: return "a string";
	case CONFIG_TYPE_BOOL: return "true or false";
	case CONFIG_TYPE_ARRAY: return "an array [ ... ]";
	case CONFIG_TYPE_LIST: return "a list ( ... )";
	default: return "an unknown type";
	}
}

static bool
is_int(const config_setting_t *s)
{
	int t = config_setting_type(s);
	return t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
}

/* What to call a setting in a message: its name, or "element N of NAME". */
static const char *
setting_label(const config_setting_t *s, char *buf, size_t len)
{
	const config_setting_t *parent;

	if (config_setting_name(s) != NULL)
		return config_setting_name(s);
	parent = config_setting_parent(s);
	snprintf(buf, len, "element %d of %s", config_setting_index(s) + 1,
	    parent != NULL && config_setting_name(parent) != NULL ?
	    config_setting_name(parent) : "a list");
	return buf;
}

/* A string setting or NULL, with an error for any other type. */
static const char *
get_string(struct loader *ld, const config_setting_t *s)
{
	char label[128];

	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		ERR(ld, s, "%s must be a string, not %s",
		    setting_label(s, label, sizeof(label)),
		    type_name(config_setting_type(s)));
		return NULL;
	}
	return config_setting_get_string(s);
}

/* Sizes and durations: a number, or a string with a unit. */
static int
get_units(struct loader *ld, const config_setting_t *s, enum policy_field_kind kind,
    uint64_t *out)
{
	char why[256];
	const char *name = config_setting_name(s);

	if (is_int(s)) {
		long long v = config_setting_get_int64(s);
		if (v < 0) {
			ERR(ld, s, "%s must not be negative", name);
			return -1;
		}
		*out = kind == PF_DURATION ? (uint64_t)v * 1000 : (uint64_t)v;
		if (kind == PF_DURATION && (uint64_t)v > UINT64_MAX / 1000) {
			ERR(ld, s, "%s is too large", name);
			return -1;
		}
		return 0;
	}
	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		ERR(ld, s, "%s must be %s, not %s", name,
		    kind == PF_DURATION ? "a duration such as \"10m\"" : "a size such as \"25M\"",
		    type_name(config_setting_type(s)));
		return -1;
	}
	int rc = kind == PF_DURATION
	    ? units_duration_ms(config_setting_get_string(s), out, why, sizeof(why))
	    : units_size(config_setting_get_string(s), out, why, sizeof(why));
	if (rc != 0)
		ERR(ld, s, "%s: %s", name, why);
	return rc;
}

static void
format_limit(enum policy_field_kind kind, long long v, char *buf, size_t len)
{
	if (kind == PF_DURATION && v % 1000 != 0)
		snprintf(buf, len, "%lldms", v);
	else if (kind == PF_DURATION)
		units_format_duration((uint64_t)v, buf, len);
	else if (kind == PF_SIZE)
		units_format_size((uint64_t)v, buf, len);
	else
		snprintf(buf, len, "%lld", v);
}

/*
 * Fill base from the settings of group that fields name.  Missing required
 * settings are errors; others keep what base holds (its defaults).
 */
static void
parse_fields(struct loader *ld, const config_setting_t *group, const char *where,
    const struct policy_field *fields, void *base)
{
	for (const struct policy_field *f = fields; f->name != NULL; f++) {
		const config_setting_t *s = config_setting_get_member(group, f->name);
		char *dst = (char *)base + f->offset;
		uint64_t u;

		if (s == NULL) {
			if (f->required)
				ERR(ld, group, "%s: required setting \"%s\" is missing",
				    where, f->name);
			continue;
		}
		switch (f->kind) {
		case PF_STRING: {
			const char *v = get_string(ld, s);
			if (v != NULL) {
				char **slot = (char **)(void *)dst;
				free(*slot);
				*slot = strdup(v);
			}
			break;
		}
		case PF_STRLIST: {
			struct policy_strlist *l = (struct policy_strlist *)(void *)dst;
			int t = config_setting_type(s), n;
			if (t == CONFIG_TYPE_STRING) {
				if ((l->v = calloc(2, sizeof(char *))) != NULL &&
				    (l->v[0] = strdup(config_setting_get_string(s))) != NULL)
					l->n = 1;
				break;
			}
			if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) {
				ERR(ld, s, "%s must be a string or a list of strings, not %s",
				    f->name, type_name(t));
				break;
			}
			n = config_setting_length(s);
			if ((l->v = calloc((size_t)n + 1, sizeof(char *))) == NULL)
				break;
			for (int i = 0; i < n; i++) {
				const char *v = get_string(ld, config_setting_get_elem(s, (unsigned)i));
				if (v != NULL && (l->v[l->n] = strdup(v)) != NULL)
					l->n++;
			}
			break;
		}
		case PF_BOOL:
			if (config_setting_type(s) != CONFIG_TYPE_BOOL)
				ERR(ld, s, "%s must be true or false, not %s", f->name,
				    type_name(config_setting_type(s)));
			else
				*(bool *)(void *)dst = config_setting_get_bool(s) != 0;
			break;
		case PF_INT: {
			if (!is_int(s)) {
				ERR(ld, s, "%s must be a whole number, not %s", f->name,
				    type_name(config_setting_type(s)));
				break;
			}
			long long v = config_setting_get_int64(s);
			if (v < f->min || v > f->max) {
				ERR(ld, s, "%s = %lld is out of range (%lld to %lld)",
				    f->name, v, f->min, f->max);
				break;
			}
			*(long long *)(void *)dst = v;
			break;
		}
		case PF_SIZE:
		case PF_DURATION:
			if (get_units(ld, s, f->kind, &u) != 0)
				break;
			if (u < (uint64_t)f->min || (f->max > 0 && u > (uint64_t)f->max)) {
				char lo[32], hi[32];
				format_limit(f->kind, f->min, lo, sizeof(lo));
				format_limit(f->kind, f->max, hi, sizeof(hi));
				if (f->max > 0)
					ERR(ld, s, "%s is out of range (%s to %s)", f->name, lo, hi);
				else
					ERR(ld, s, "%s must be at least %s", f->name, lo);
				break;
			}
			*(uint64_t *)(void *)dst = u;
			break;
		}
	}
}

static void
known_from_fields(const struct policy_field *fields, const char *const *extra,
    const char **out, size_t cap)
{
	size_t n = 0;

	for (; extra != NULL && *extra != NULL && n + 1 < cap; extra++)
		out[n++] = *extra;
	for (; fields != NULL && fields->name != NULL && n + 1 < cap; fields++)
		out[n++] = fields->name;
	out[n] = NULL;
}

/* ---- the redis group */

static const struct policy_field redis_fields[] = {
	{ "address", PF_STRING, offsetof(struct cfg_redis, address), 0, 0, true },
	{ "database", PF_INT, offsetof(struct cfg_redis, database), 0, 1000000, false },
	{ "username", PF_STRING, offsetof(struct cfg_redis, username), 0, 0, false },
	{ "password_file", PF_STRING, offsetof(struct cfg_redis, password_file), 0, 0, false },
	{ "prefix", PF_STRING, offsetof(struct cfg_redis, prefix), 0, 0, false },
	{ "connect_timeout", PF_DURATION, offsetof(struct cfg_redis, connect_timeout_ms), 1, 60000, false },
	{ "timeout", PF_DURATION, offsetof(struct cfg_redis, timeout_ms), 1, 60000, false },
	{ "pool", PF_INT, offsetof(struct cfg_redis, pool), 1, 1024, false },
	{ NULL, 0, 0, 0, 0, false },
};

/* A Redis store shared by the snapshots whose connection settings are equal. */
struct cfg_store {
	struct store *store;
	int refs;
};

static void
redis_free(struct cfg_redis *r)
{
	if (r == NULL)
		return;
	/* Snapshots are freed by whichever thread drops the last reference. */
	if (r->shared != NULL &&
	    __atomic_sub_fetch(&r->shared->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		store_free(r->shared->store);
		free(r->shared);
	}
	free(r->address);
	free(r->username);
	free(r->password_file);
	if (r->password != NULL) {
		explicit_bzero(r->password, strlen(r->password));
		free(r->password);
	}
	free(r->prefix);
	free(r);
}

static char *
read_password(struct loader *ld, const config_setting_t *s, const char *path)
{
	char buf[1024];
	struct stat sb;
	FILE *fp = fopen(path, "re");

	if (fp == NULL) {
		ERR(ld, s, "password_file \"%s\": %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fileno(fp), &sb) == 0 && (sb.st_mode & S_IROTH))
		WARN(ld, s, "password_file \"%s\" is readable by everyone; "
		    "chmod o-r it", path);
	if (fgets(buf, sizeof(buf), fp) == NULL)
		buf[0] = '\0';
	fclose(fp);
	buf[strcspn(buf, "\r\n")] = '\0';
	if (buf[0] == '\0') {
		ERR(ld, s, "password_file \"%s\" is empty (the password is its "
		    "first line)", path);
		return NULL;
	}
	char *pw = strdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return pw;
}

static struct cfg_redis *
parse_redis(struct loader *ld, const config_setting_t *s)
{
	const char *known[16];
	struct cfg_redis *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->connect_timeout_ms = 200;
	r->timeout_ms = 100;
	r->pool = 16;
	if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
		ERR(ld, s, "redis must be a group { address = ...; }, not %s",
		    type_name(config_setting_type(s)));
		return r;
	}
	known_from_fields(redis_fields, NULL, known, 16);
	check_unknown_keys(ld, s, "redis", known);
	parse_fields(ld, s, "redis", redis_fields, r);
	if (r->prefix == NULL)
		r->prefix = strdup("pm:");
	else if (strlen(r->prefix) > 64 || strspn(r->prefix,
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:._-/{}") !=
	    strlen(r->prefix))
		ERR(ld, config_setting_get_member(s, "prefix"), "redis prefix \"%s\" must "
		    "be at most 64 of A-Z a-z 0-9 : . _ - / { }", r->prefix);
	if (r->password_file != NULL)
		r->password = read_password(ld,
		    config_setting_get_member(s, "password_file"), r->password_file);
	if (r->username != NULL && r->password_file == NULL)
		ERR(ld, config_setting_get_member(s, "username"),
		    "redis: username needs password_file");
	if (r->address != NULL) {
		/* Let the store judge the address now, so that a typo fails the load. */
		char why[256];
		struct store_options o = { .address = r->address, .pool = 1,
		    .timeout_ms = 1, .connect_timeout_ms = 1 };
		struct store *probe = store_new(&o, why, sizeof(why));
		if (probe == NULL)
			ERR(ld, config_setting_get_member(s, "address"), "redis address: %s", why);
		store_free(probe);
	}
	return r;
}

static bool
same_str(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Connection settings equal: the store and its connections can be shared. */
static bool
redis_same(const struct cfg_redis *a, const struct cfg_redis *b)
{
	return same_str(a->address, b->address) && a->database == b->database &&
	    same_str(a->username, b->username) && same_str(a->password, b->password) &&
	    a->connect_timeout_ms == b->connect_timeout_ms &&
	    a->timeout_ms == b->timeout_ms && a->pool == b->pool;
}

/* ---- enumerations */

static int
parse_on_error(struct loader *ld, const config_setting_t *s, enum cfg_on_error *out)
{
	const char *v = get_string(ld, s);

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
	const char *v = get_string(ld, s);

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

/* exempt = { clients = [...]; authenticated = bool; }, global or per policy. */
static void
parse_exempt(struct loader *ld, const config_setting_t *s, struct cfg_exempt *c)
{
	static const char *const known[] = { "clients", "authenticated", NULL };
	const config_setting_t *list;

	if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
		ERR(ld, s, "exempt must be a group { clients = [...]; }, not %s",
		    type_name(config_setting_type(s)));
		return;
	}
	check_unknown_keys(ld, s, "exempt", known);
	parse_fields(ld, s, "exempt", exempt_fields, c);
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
		const char *v = get_string(ld, e);
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
			const char *v = get_string(ld, config_setting_get_elem(s, (unsigned)i));
			if (v == NULL)
				return NULL;
			lines[n++] = v;
		}
	} else {
		ERR(ld, s, "reply must be a string or a list of strings, not %s",
		    type_name(config_setting_type(s)));
		return NULL;
	}
	t = reply_compile(lines, n, action, why, sizeof(why), warn, sizeof(warn));
	if (t == NULL)
		ERR(ld, s, "%s", why);
	else if (warn[0] != '\0')
		WARN(ld, s, "%s", warn);
	return t;
}

static void
policy_clear(struct cfg_policy *p)
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
	} else if (get_string(ld, v) != NULL) {
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
	if ((type_name_s = get_string(ld, v)) == NULL)
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
	known_from_fields(p->type->fields, common_keys, known, 40);
	check_unknown_keys(ld, s, where, known);

	if ((p->settings = calloc(1, p->type->settings_size)) == NULL)
		return -1;
	parse_fields(ld, s, where, p->type->fields, p->settings);
	if (ld->errors == before && p->type->validate != NULL) {
		struct policy_invalid inv = { "", NULL, -1 };
		if (p->type->validate(p->settings, &inv) != 0)
			ERR(ld, setting_at(s, inv.field, inv.index), "%s: %s", where, inv.why);
	}
	/* The time first: a write during the read is then seen as a change. */
	if (ld->errors == before && p->type->watch_file != NULL &&
	    p->type->watch_file(p->settings) != NULL)
		p->watch_mtime = mtime_ns(p->type->watch_file(p->settings));
	if (ld->errors == before && p->type->load != NULL)
		ld->errors += p->type->load(p->settings, report_loaded, ld);
	p->live = ld->errors == before && p->type->live != NULL &&
	    p->type->live(p->settings);

	parse_fields(ld, s, where, common_fields, p);
	if ((v = config_setting_get_member(s, "on_redis_error")) != NULL) {
		parse_on_error(ld, v, &p->on_redis_error);
		if (!p->live && !p->type->uses_store)
			WARN(ld, v, "%s: on_redis_error has no effect: type \"%s\" needs "
			    "no Redis", where, p->type->name);
	}
	if ((v = config_setting_get_member(s, "exempt")) != NULL)
		parse_exempt(ld, v, &p->exempt);
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

static void
parse_policies(struct loader *ld, const config_setting_t *s, struct cfg *c)
{
	int n;

	if (config_setting_type(s) != CONFIG_TYPE_LIST) {
		ERR(ld, s, "policies must be a list ( { ... }, { ... } ), not %s",
		    type_name(config_setting_type(s)));
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
			policy_clear(p);
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

/* ---- top level */

static const struct policy_field top_fields[] = {
	{ "listen", PF_STRING, offsetof(struct cfg, listen), 0, 0, true },
	{ "socket_mode", PF_STRING, offsetof(struct cfg, socket_mode_text), 0, 0, false },
	{ "user", PF_STRING, offsetof(struct cfg, user), 0, 0, false },
	{ "group", PF_STRING, offsetof(struct cfg, group), 0, 0, false },
	{ NULL, 0, 0, 0, 0, false },
};

static const char *const top_custom[] = {
	"redis", "on_redis_error", "exempt", "policies", NULL,
};

static void
cfg_free(struct cfg *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->npolicies; i++)
		policy_clear(&c->policies[i]);
	free(c->policies);
	for (size_t i = 0; i < c->nwatch; i++)
		free(c->watch[i].path);
	free(c->watch);
	free(c->exempt.clients);
	reply_free(c->redis_error_reply);
	redis_free(c->redis);
	free(c->path);
	free(c->listen);
	free(c->socket_mode_text);
	free(c->user);
	free(c->group);
	free(c);
}

const char *
cfg_unix_socket_path(const char *spec)
{
	if (strncmp(spec, "unix:", 5) == 0)
		return spec + 5;
	if (strncmp(spec, "local:", 6) == 0)
		return spec + 6;
	return spec[0] == '/' ? spec : NULL;
}

static void
check_listen(struct loader *ld, const config_setting_t *s, const char *spec,
    bool socket_mode_set)
{
	const char *path = cfg_unix_socket_path(spec);

	if (path != NULL) {
		if (path[0] != '/')
			ERR(ld, s, "listen \"%s\": the socket path must be absolute", spec);
		return;
	}
	if (socket_mode_set)
		WARN(ld, s, "socket_mode applies to unix sockets only; ignored for \"%s\"",
		    spec);
	if (strncmp(spec, "inet:", 5) == 0 || strncmp(spec, "inet6:", 6) == 0) {
		const char *port = strchr(spec, ':') + 1;
		char *end;
		long n = strtol(port, &end, 10);
		if (end == port || n < 1 || n > 65535 || (*end != '\0' && *end != '@') ||
		    (*end == '@' && (end[1] == '\0' || (strchr(end + 1, ':') != NULL &&
		    strncmp(spec, "inet6:", 6) != 0)))) {
			ERR(ld, s, "listen \"%s\": expected inet:PORT@ADDRESS such as "
			    "\"inet:8890@127.0.0.1\" (libmilter's order, not Postfix's "
			    "inet:host:port)", spec);
		}
		return;
	}
	ERR(ld, s, "listen \"%s\" must be \"unix:/path\" or \"inet:PORT@ADDRESS\"", spec);
}

struct cfg *
cfg_load(const char *path, struct cfg *prev, cfg_report_fn *report, void *arg)
{
	struct loader ld = { path, NULL, report, arg, 0 };
	struct cfg *c = NULL;
	config_t lc;
	const config_setting_t *root, *s;
	const char *known[16];
	char dir[PATH_MAX];

	config_init(&lc);
	/* libconfig 1.5 resolves every @include, nested ones too, against one
	 * directory: the main file's. */
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash != NULL) {
		*slash = '\0';
		if (dir[0] == '\0')
			strcpy(dir, "/");
		config_set_include_dir(&lc, dir);
		ld.include_dir = dir;
	}
	if (config_read_file(&lc, path) != CONFIG_TRUE) {
		char msg[PATH_MAX + 1024];
		const char *file = config_error_file(&lc) ? config_error_file(&lc) : path;
		bool included = file[0] != '/' && strcmp(file, path) != 0 &&
		    ld.include_dir != NULL;

		if (config_error_type(&lc) == CONFIG_ERR_FILE_IO)
			snprintf(msg, sizeof(msg), "%s: cannot read: %s", path,
			    errno ? strerror(errno) : "file I/O error");
		else
			snprintf(msg, sizeof(msg), "%s%s%s:%d: %s",
			    included ? ld.include_dir : "", included ? "/" : "", file,
			    config_error_line(&lc), config_error_text(&lc));
		report(arg, true, msg);
		config_destroy(&lc);
		return NULL;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL || (c->path = strdup(path)) == NULL)
		goto fail;
	c->refs = 1;
	c->socket_mode = -1;
	c->on_redis_error = CFG_ON_ERROR_ACCEPT;
	root = config_root_setting(&lc);

	known_from_fields(top_fields, top_custom, known, 16);
	check_unknown_keys(&ld, root, "the top level", known);
	parse_fields(&ld, root, "the top level", top_fields, c);
	if (c->listen != NULL)
		check_listen(&ld, config_setting_get_member(root, "listen"), c->listen,
		    c->socket_mode_text != NULL);
	if (c->socket_mode_text != NULL) {
		char *end;
		long m = strtol(c->socket_mode_text, &end, 8);
		if (*end != '\0' || end == c->socket_mode_text || m < 0 || m > 0777)
			ERR(&ld, config_setting_get_member(root, "socket_mode"),
			    "socket_mode \"%s\" must be an octal mode such as \"0660\"",
			    c->socket_mode_text);
		else
			c->socket_mode = (int)m;
	}
	if (c->user == NULL && c->group != NULL)
		ERR(&ld, config_setting_get_member(root, "group"),
		    "group is set but user is not: set both to drop privileges");
	if ((s = config_setting_get_member(root, "redis")) != NULL)
		c->redis = parse_redis(&ld, s);
	if ((s = config_setting_get_member(root, "on_redis_error")) != NULL)
		parse_on_error(&ld, s, &c->on_redis_error);
	if ((s = config_setting_get_member(root, "exempt")) != NULL)
		parse_exempt(&ld, s, &c->exempt);
	if ((s = config_setting_get_member(root, "policies")) != NULL)
		parse_policies(&ld, s, c);
	else
		WARN(&ld, root, "no policies: every message is accepted");

	if ((c->watch = calloc(c->npolicies + 1, sizeof(*c->watch))) == NULL)
		goto fail;
	for (size_t i = 0; i < c->npolicies; i++) {
		const struct cfg_policy *p = &c->policies[i];
		const char *file = p->type->watch_file != NULL && p->settings != NULL ?
		    p->type->watch_file(p->settings) : NULL;
		if (file != NULL && (c->watch[c->nwatch].path = strdup(file)) != NULL)
			c->watch[c->nwatch++].mtime_ns = p->watch_mtime;
	}
	for (size_t i = 0; i < c->npolicies; i++) {
		const struct cfg_policy *p = &c->policies[i];
		c->stages_decide |= p->stages;
		c->stages_need |= p->needs | p->stages;
		if (p->type->uses_store && c->redis == NULL)
			ERR(&ld, config_setting_get_elem(config_setting_get_member(root,
			    "policies"), (unsigned)i), "policy \"%s\": type \"%s\" counts "
			    "in Redis: add redis = { address = ...; }", p->name, p->type->name);
		else if (p->live && c->redis == NULL)
			ERR(&ld, config_setting_get_elem(config_setting_get_member(root,
			    "policies"), (unsigned)i), "policy \"%s\": redis = true needs the "
			    "top-level redis = { address = ...; }", p->name);
		if (p->live)
			c->nlive++;
	}
	{
		/* What a Redis failure with on_redis_error = "tempfail" answers. */
		static const char *const text[] = {
			"451 4.3.0 Temporary policy failure; try again later",
		};
		char why[256], warn[256];
		c->redis_error_reply = reply_compile(text, 1, POLICY_TEMPFAIL, why,
		    sizeof(why), warn, sizeof(warn));
	}
	if (ld.errors > 0)
		goto fail;

	for (size_t i = 0; i < c->npolicies; i++)
		c->policies[i].stats = stats_get(c->policies[i].name);
	if (c->redis != NULL) {
		if (prev != NULL && prev->redis != NULL && redis_same(prev->redis, c->redis)) {
			c->redis->shared = prev->redis->shared;
			__atomic_add_fetch(&c->redis->shared->refs, 1, __ATOMIC_RELAXED);
		} else {
			char why[256];
			struct store_options o = {
				.address = c->redis->address,
				.database = (int)c->redis->database,
				.username = c->redis->username,
				.password = c->redis->password,
				.connect_timeout_ms = (unsigned)c->redis->connect_timeout_ms,
				.timeout_ms = (unsigned)c->redis->timeout_ms,
				.pool = (unsigned)c->redis->pool,
			};
			if ((c->redis->shared = calloc(1, sizeof(*c->redis->shared))) == NULL)
				goto fail;
			c->redis->shared->refs = 1;
			c->redis->shared->store = store_new(&o, why, sizeof(why));
			if (c->redis->shared->store == NULL) {
				ERR(&ld, config_setting_get_member(root, "redis"), "redis: %s", why);
				goto fail;
			}
		}
		c->redis->store = c->redis->shared->store;
	}
	config_destroy(&lc);
	return c;
fail:
	if (ld.errors == 0)
		report(arg, true, "out of memory");
	config_destroy(&lc);
	cfg_free(c);
	return NULL;
}

/* ---- snapshots */

static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cfg *current;

void
cfg_ref(struct cfg *c)
{
	__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

void
cfg_unref(struct cfg *c)
{
	if (c != NULL && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
		cfg_free(c);
}

void
cfg_install(struct cfg *c)
{
	struct cfg *old;

	pthread_mutex_lock(&current_lock);
	old = current;
	current = c;
	pthread_mutex_unlock(&current_lock);
	cfg_unref(old);
}

struct cfg *
cfg_acquire(void)
{
	struct cfg *c;

	/* A lock, not a bare atomic load: the reference must be taken before a
	 * concurrent cfg_install can drop the last one.  Once per connection. */
	pthread_mutex_lock(&current_lock);
	c = current;
	if (c != NULL)
		cfg_ref(c);
	pthread_mutex_unlock(&current_lock);
	return c;
}
