/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * ctl - policy-milter-ctl, the operator's tool: what the daemons share in
 * Redis (statistics, usage, refusals, live lists, overrides), seen and
 * steered, and a dry evaluation of the policies (explain).
 *
 * It loads the daemon's configuration for Redis, the key prefix and the
 * policies, and reaches the same keys with the same canonical forms
 * (policies/canon.h) and the same script (milter/limiter.lua), so what it
 * shows is what the daemon would see.  It never holds mail.
 *
 * Exit status: CTL_OK, CTL_NO (not found, refused, Redis failed), CTL_USAGE
 * (usage or configuration error).
 */
#ifndef PM_CTL_H
#define PM_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "milter/cfg.h"

enum { CTL_OK = 0, CTL_NO = 1, CTL_USAGE = 2 };

struct ctl {
	struct cfg *cfg;
	const char *path;          /* the configuration file */
	bool json;                 /* one JSON document on stdout */
};

/* "policy-milter-ctl: <message>" on stderr; returns status. */
int ctl_error(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* s[0..len) as a JSON string, quoted, on stdout. */
void ctl_json_str(const char *s, size_t len);

/* s[0..len) for a terminal: non-printable octets as \xNN. */
void ctl_print_text(const char *s, size_t len);

/* A Unix time in ms as local "YYYY-MM-DD HH:MM:SS TZ". */
void ctl_format_time(uint64_t ms, char *buf, size_t len);

/* policy-milter-ctl explain ARGS (ctl_explain.c). */
int ctl_explain(struct ctl *c, int argc, char **argv);

#endif
