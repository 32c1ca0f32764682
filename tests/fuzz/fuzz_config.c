/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_config - the configuration loader (cfg_load) on arbitrary text.
 *
 * The input is the whole configuration file, handed to the public loader
 * through an in-memory file (fz_file): the loader is tested exactly as the
 * daemon calls it.  A snapshot that loads must be one the daemon can use:
 * every policy has a name, a type and settings, and a reply when it refuses;
 * loaded again as a reload, it shares the first snapshot's Redis store.
 *
 * Nothing in the input may make the loader open another file: libconfig
 * opens any path an "@include" names (relative to /proc/self/fd here), and
 * password_file and a block list's file are opened too; a FIFO, a terminal
 * or /dev/zero there would block or never end.  So inputs containing
 * "@include" are refused, and every "file" (in any case) is spelt "fil_"
 * before loading: the setting becomes an unknown one, comments stay
 * comments, and a seed such as etc/policy-milter.conf, whose comments
 * mention files, still loads.  List files have their own target
 * (fuzz_matcher), which reads them from its input.
 */
#include "config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "milter/cfg.h"
#include "milter/stats.h"
#include "tests/fuzz/fuzzlib.h"

/*
 * libconfig 1.5 (Debian 12) leaks in its scanner: the text of a string
 * token that a syntax error follows (input: L""), and the buffer of a string
 * still open at the end of the input.  Its bugs (fixed in 1.7), not ours.
 */
const char *__lsan_default_suppressions(void);
const char *
__lsan_default_suppressions(void)
{
	return "leak:libconfig_yylex\nleak:strbuf_append\n";
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
	struct reports r = { 0, 0 }, again = { 0, 0 };
	struct cfg *c, *c2;
	char *text;

	if (fz_contains(data, size, "@include"))
		return -1;      /* not added to the corpus */
	text = fz_strndup(data, size);
	for (size_t i = 0; i + 4 <= size; i++)
		if (fz_contains(text + i, 4, "file"))
			text[i + 3] = '_';
	c = cfg_load(fz_file(text, size), NULL, count, &r);
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
		/* A reload of the same text shares the Redis store of the
		 * snapshot in force (cfg.h): the reference counting path. */
		c2 = cfg_load(fz_file(text, size), c, count, &again);
		FZ_CHECK(c2 != NULL, "the same text loaded once, not twice");
		FZ_CHECK((c->redis == NULL) == (c2->redis == NULL) && (c->redis == NULL ||
		    c->redis->store == c2->redis->store), "a reload did not share the store");
		cfg_unref(c);
		cfg_unref(c2);
	}
	free(text);
	stats_reset();          /* loads create a statistics entry per policy name */
	return 0;
}
