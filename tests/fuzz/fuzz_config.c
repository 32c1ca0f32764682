/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_config - the configuration loader (cfg_load) on arbitrary text.
 *
 * The input is the whole configuration file, handed to the public loader
 * through an in-memory file (fz_file): the loader is tested exactly as the
 * daemon calls it.  A snapshot that loads must be one the daemon can use:
 * every policy has a name, a type and settings, and a reply when it refuses.
 *
 * Inputs that name other files are skipped: "@include" (libconfig would open
 * any path the input names, relative to /proc/self/fd, which can be a pipe or
 * a terminal and block forever) and "file" (password_file and a block list's
 * file: the same with /dev/zero or a FIFO).  Both words are refused in any
 * case, so that no spelling slips through; list files have their own target
 * (fuzz_matcher), which reads them from the input.
 */
#include "config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "milter/cfg.h"
#include "milter/stats.h"
#include "tests/fuzz/fuzzlib.h"

/*
 * libconfig 1.5 (Debian 12) leaks the text of a string token when a syntax
 * error follows it (input: L""): its bug, fixed in 1.7, not ours.
 */
const char *__lsan_default_suppressions(void);
const char *
__lsan_default_suppressions(void)
{
	return "leak:libconfig_yylex\n";
}

const char *__lsan_default_options(void);
const char *
__lsan_default_options(void)
{
	return "print_suppressions=0";
}

struct reports {
	unsigned errors, warnings;
};

static void
count(void *arg, bool is_error, const char *msg)
{
	struct reports *r = arg;

	FZ_CHECK(msg != NULL && msg[0] != '\0', "an empty report");
	if (is_error)
		r->errors++;
	else
		r->warnings++;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct reports r = { 0, 0 };
	struct cfg *c;

	if (fz_contains(data, size, "@include") || fz_contains(data, size, "file"))
		return -1;      /* not added to the corpus */
	c = cfg_load(fz_file(data, size), NULL, count, &r);
	if (c == NULL) {
		FZ_CHECK(r.errors > 0, "cfg_load failed and reported no error");
	} else {
		FZ_CHECK(r.errors == 0, "cfg_load reported %u errors and loaded", r.errors);
		for (size_t i = 0; i < c->npolicies; i++) {
			const struct cfg_policy *p = &c->policies[i];
			FZ_CHECK(p->name != NULL && p->type != NULL, "policy %zu: no name or type", i);
			FZ_CHECK(p->reply != NULL || (p->action != POLICY_REJECT &&
			    p->action != POLICY_TEMPFAIL), "policy %s refuses without a reply",
			    p->name);
		}
		cfg_unref(c);
	}
	stats_reset();          /* loads create a statistics entry per policy name */
	return 0;
}
