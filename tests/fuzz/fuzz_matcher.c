/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_matcher - block-list entries and lookups (policies/matcher.h).
 *
 * Input: one octet choosing the matcher kind (octet % 4), then a list file's
 * text, then optionally a NUL and NUL-separated values to look up.  The
 * text is loaded twice: with matcher_load_file (through an in-memory file,
 * fz_file) and line by line with matcher_add, as the loader's contract says
 * it reads a file (a UTF-8 byte order mark on line 1, blank lines and '#'
 * comments skipped).  Both lists must agree: the same number of bad lines,
 * the same count, the same answer for every value.  The values looked up are
 * the given ones and, for each line, the line itself and spellings that the
 * matcher's rules say are equivalent or close: upper case, a trailing dot,
 * a subdomain, the part after '@', an address at the line.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policies/matcher.h"
#include "tests/fuzz/fuzzlib.h"

#define MAX_LINES 64            /* each line costs a lookup per variant */

struct both {
	struct matcher *file, *added;
	unsigned reports;
	bool case_blind;        /* no regex (nor '/' at all) in the list */
};

static void
count_report(void *arg, const char *msg)
{
	struct both *b = arg;

	FZ_CHECK(msg != NULL && msg[0] != '\0', "an empty report");
	b->reports++;
}

static void
same_answer(const struct both *b, const char *value)
{
	bool f = matcher_match(b->file, value), a = matcher_match(b->added, value);

	FZ_CHECK(f == a, "\"%s\": %d from the file, %d from matcher_add", value, f, a);
}

/* value and the spellings derived from it. */
static void
look_up(const struct both *b, const char *value)
{
	size_t len = strlen(value);
	char *v = malloc(len + 16);
	const char *at;

	if (v == NULL)
		fz_fail("out of memory");
	same_answer(b, value);
	for (size_t i = 0; i <= len; i++)
		v[i] = (char)toupper((unsigned char)value[i]);
	same_answer(b, v);
	FZ_CHECK(!b->case_blind || matcher_match(b->file, v) ==
	    matcher_match(b->file, value), "\"%s\": case changes the answer", value);
	snprintf(v, len + 16, "%s.", value);
	same_answer(b, v);
	snprintf(v, len + 16, "x.%s", value[0] == '.' ? value + 1 : value);
	same_answer(b, v);
	snprintf(v, len + 16, "u@%s", value[0] == '@' || value[0] == '.' ? value + 1 : value);
	same_answer(b, v);
	if ((at = strrchr(value, '@')) != NULL)
		same_answer(b, at + 1);
	free(v);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct both b = { NULL, NULL, 0, false };
	enum matcher_kind kind;
	const uint8_t *nul;
	size_t textlen;
	char *text, *line, *next, why[512];
	int errors, added_errors = 0;
	unsigned lineno = 0;

	if (size < 1)
		return 0;
	kind = (enum matcher_kind)(data[0] % 4);
	data++;
	size--;
	nul = memchr(data, '\0', size);
	textlen = nul != NULL ? (size_t)(nul - data) : size;
	text = fz_strndup(data, textlen);
	for (const char *p = text; (p = strchr(p, '\n')) != NULL; p++)
		if (++lineno > MAX_LINES) {
			free(text);
			return -1;
		}

	b.case_blind = kind != MATCHER_CLIENT && strchr(text, '/') == NULL;
	if ((b.file = matcher_new(kind)) == NULL || (b.added = matcher_new(kind)) == NULL)
		fz_fail("matcher_new(%d) failed", (int)kind);
	errors = matcher_load_file(b.file, fz_file(text, textlen), count_report, &b);
	FZ_CHECK(errors >= 0 && (unsigned)errors <= b.reports, "%d errors, %u reports",
	    errors, b.reports);

	lineno = 0;
	for (line = text; line != NULL; line = next) {
		char *p = line;

		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		else if (*line == '\0')
			break;              /* the text ended with its last newline */
		if (++lineno == 1 && strncmp(p, "\xef\xbb\xbf", 3) == 0)
			p += 3;
		p += strspn(p, " \t\r\n\v\f");
		if (*p == '\0' || *p == '#')
			continue;
		if (matcher_add(b.added, p, why, sizeof(why)) != 0) {
			FZ_CHECK(why[0] != '\0', "matcher_add failed without a reason");
			added_errors++;
		}
	}
	FZ_CHECK(errors == added_errors, "%d bad lines in the file, %d by matcher_add",
	    errors, added_errors);
	FZ_CHECK(matcher_count(b.file) == matcher_count(b.added), "%zu entries from the "
	    "file, %zu by matcher_add", matcher_count(b.file), matcher_count(b.added));

	/* The lines (now NUL-terminated, trimmed by the matcher) as values. */
	for (line = text; line < text + textlen; line += strlen(line) + 1)
		look_up(&b, line + strspn(line, " \t"));
	if (nul != NULL) {
		char *values = fz_strndup(nul + 1, size - textlen - 1);
		for (char *v = values; v <= values + (size - textlen - 1); v += strlen(v) + 1)
			look_up(&b, v);
		free(values);
	}
	same_answer(&b, NULL);
	same_answer(&b, "");
	same_answer(&b, "<>");

	matcher_free(b.file);
	matcher_free(b.added);
	free(text);
	return 0;
}
