/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * units - durations and sizes.  Every multiplication is checked: a value
 * that does not fit in 64 bits is an error, never a silent wrap to a small
 * limit.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "milter/units.h"

struct unit {
	const char *suffix;
	uint64_t factor;
};

static const struct unit duration_units[] = {
	{ "ms", 1 }, { "s", 1000 }, { "m", 60 * 1000 }, { "h", 3600 * 1000 },
	{ "d", 86400ULL * 1000 }, { "", 1000 }, { NULL, 0 },
};

static const struct unit size_units[] = {
	{ "K", 1024 }, { "M", 1024 * 1024 }, { "G", 1024ULL * 1024 * 1024 },
	{ "", 1 }, { NULL, 0 },
};

static int
parse_with_units(const char *s, const struct unit *units, uint64_t *out,
    const char *what, const char *expected, char *why, size_t whylen)
{
	const char *p = s;
	uint64_t n = 0;

	if (s == NULL || !isdigit((unsigned char)*p)) {
		snprintf(why, whylen, "%s \"%s\" must start with a number (%s)",
		    what, s ? s : "", expected);
		return -1;
	}
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');
		if (n > (UINT64_MAX - d) / 10)
			goto overflow;
		n = n * 10 + d;
	}
	for (const struct unit *u = units; u->suffix != NULL; u++) {
		if (strcmp(p, u->suffix) != 0)
			continue;
		if (n != 0 && u->factor > UINT64_MAX / n)
			goto overflow;
		*out = n * u->factor;
		return 0;
	}
	snprintf(why, whylen, "%s \"%s\" has an unknown unit \"%s\" (%s)", what, s, p,
	    expected);
	return -1;
overflow:
	snprintf(why, whylen, "%s \"%s\" is too large", what, s);
	return -1;
}

int
units_duration_ms(const char *s, uint64_t *ms, char *why, size_t whylen)
{
	return parse_with_units(s, duration_units, ms, "duration",
	    "units: ms, s, m, h, d", why, whylen);
}

int
units_size(const char *s, uint64_t *bytes, char *why, size_t whylen)
{
	return parse_with_units(s, size_units, bytes, "size",
	    "units: K, M, G, 1024-based; none for bytes", why, whylen);
}

void
units_format_duration(uint64_t ms, char *buf, size_t buflen)
{
	static const struct { uint64_t ms; const char *unit; } steps[] = {
		{ 86400ULL * 1000, "d" }, { 3600 * 1000, "h" }, { 60 * 1000, "m" },
	};

	/* Below two of a unit the next smaller one reads better: "90s", not "2m". */
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		if (ms >= 2 * steps[i].ms) {
			snprintf(buf, buflen, "%llu%s", (unsigned long long)
			    (ms / steps[i].ms + (ms % steps[i].ms != 0)), steps[i].unit);
			return;
		}
	}
	snprintf(buf, buflen, "%llus", (unsigned long long)(ms / 1000 + (ms % 1000 != 0)));
}

void
units_format_size(uint64_t bytes, char *buf, size_t buflen)
{
	static const struct { uint64_t n; const char *unit; } steps[] = {
		{ 1024ULL * 1024 * 1024, "G" }, { 1024 * 1024, "M" }, { 1024, "K" },
	};

	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		if (bytes >= steps[i].n && bytes % steps[i].n == 0) {
			snprintf(buf, buflen, "%llu%s",
			    (unsigned long long)(bytes / steps[i].n), steps[i].unit);
			return;
		}
	}
	snprintf(buf, buflen, "%llu", (unsigned long long)bytes);
}
