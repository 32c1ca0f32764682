/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * cfg_parse - the table-driven field parser and its error reporting (see
 * cfg_int.h).
 *
 * Each group of settings is a table of struct policy_field {name, kind,
 * offset, min, max, required} filled into a struct by cfg_parse_fields.  The
 * few settings with a shape of their own (lists, enumerations, replies) have
 * their own small parsers and are named in "known keys" arrays, so that an
 * unknown key is always reported with the nearest known one.
 *
 * Every problem is reported as "file:line: message" and counted.  Messages
 * say what is wrong and what would be right.
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
#include "milter/units.h"

void
cfg_report_at(struct loader *ld, const config_setting_t *s, bool is_error,
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
const config_setting_t *
cfg_setting_at(const config_setting_t *s, const char *field, int index)
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

void
cfg_check_unknown_keys(struct loader *ld, const config_setting_t *group,
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

const char *
cfg_type_name(int type)
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

const char *
cfg_get_string(struct loader *ld, const config_setting_t *s)
{
	char label[128];

	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		ERR(ld, s, "%s must be a string, not %s",
		    setting_label(s, label, sizeof(label)),
		    cfg_type_name(config_setting_type(s)));
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
		    cfg_type_name(config_setting_type(s)));
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
void
cfg_parse_fields(struct loader *ld, const config_setting_t *group, const char *where,
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
			const char *v = cfg_get_string(ld, s);
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
				    f->name, cfg_type_name(t));
				break;
			}
			n = config_setting_length(s);
			if ((l->v = calloc((size_t)n + 1, sizeof(char *))) == NULL)
				break;
			for (int i = 0; i < n; i++) {
				const char *v = cfg_get_string(ld, config_setting_get_elem(s, (unsigned)i));
				if (v != NULL && (l->v[l->n] = strdup(v)) != NULL)
					l->n++;
			}
			break;
		}
		case PF_BOOL:
			if (config_setting_type(s) != CONFIG_TYPE_BOOL)
				ERR(ld, s, "%s must be true or false, not %s", f->name,
				    cfg_type_name(config_setting_type(s)));
			else
				*(bool *)(void *)dst = config_setting_get_bool(s) != 0;
			break;
		case PF_INT: {
			if (!is_int(s)) {
				ERR(ld, s, "%s must be a whole number, not %s", f->name,
				    cfg_type_name(config_setting_type(s)));
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

void
cfg_known_from_fields(const struct policy_field *fields, const char *const *extra,
    const char **out, size_t cap)
{
	size_t n = 0;

	for (; extra != NULL && *extra != NULL && n + 1 < cap; extra++)
		out[n++] = *extra;
	for (; fields != NULL && fields->name != NULL && n + 1 < cap; fields++)
		out[n++] = fields->name;
	out[n] = NULL;
}
