/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_reply - reply templates: reply_compile on arbitrary lines, then
 * reply_expand of what compiled with arbitrary variable values.
 *
 * Input: one octet, then NUL-separated strings.  The octet chooses the
 * action (bit 0: reject or tempfail) and the number of template lines
 * (1 + (octet >> 1) % 34, so past libmilter's 32 too); the first strings are
 * the lines, the next nine the variables in REPLY_VARS order (missing ones
 * are NULL).  Values come from the network: any octet but NUL.
 *
 * What reply.h promises and is checked here: reply_expand cannot fail and
 * its result is one that libmilter takes and Postfix and Sendmail accept
 * (printable ASCII, '%' doubled, no CR/LF, lines of at most 510 octets,
 * 980 in all, an enhanced code of the reply code's class), with the code
 * reply_code gives; reply_format fits any buffer.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/reply.h"
#include "tests/fuzz/fuzzlib.h"

#define MAX_STRINGS (REPLY_MAX_LINES + 2 + 9)

static void
check_expansion(const struct reply_tmpl *t, const struct reply_out *out)
{
	char wire[2048], why[256], line[1100], small[8];
	size_t wirelen, total = 0;
	char code[8];

	snprintf(code, sizeof(code), "%d", reply_code(t));
	FZ_CHECK(strcmp(out->code, code) == 0, "code %s, template says %s", out->code, code);
	FZ_CHECK(out->nlines >= 1 && out->nlines <= REPLY_MAX_LINES, "%zu lines",
	    out->nlines);
	for (size_t i = 0; i < out->nlines; i++) {
		size_t len = strlen(out->lines[i]);
		size_t sent = 3 + 1 + strlen(out->xcode) + 1 + len;   /* "550 5.7.1 text" */

		FZ_CHECK(sent <= REPLY_MAX_LINE, "line %zu: %zu octets as sent", i, sent);
		total += sent + 2;
	}
	FZ_CHECK(total <= REPLY_MAX_TOTAL + 2, "%zu octets in all", total);
	if (fz_milter_reply(out->code, out->xcode[0] ? out->xcode : NULL, out->lines,
	    out->nlines, wire, sizeof(wire), &wirelen, why, sizeof(why)) != 0)
		fz_fail("expanded reply not usable: %s", why);
	reply_format(out, line, sizeof(line));
	FZ_CHECK(strlen(line) < sizeof(line), "reply_format overran");
	for (size_t n = 0; n <= sizeof(small); n++) {
		reply_format(out, small, n);
		FZ_CHECK(n == 0 || strlen(small) < n, "reply_format(%zu) overran", n);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s[MAX_STRINGS] = { 0 };
	size_t ns = 0, nlines;
	enum policy_action action;
	struct reply_tmpl *t;
	struct reply_vars vars;
	struct reply_out out;
	char why[512], warn[512];
	char *text, *p, *end;

	if (size < 1)
		return 0;
	action = (data[0] & 1) ? POLICY_TEMPFAIL : POLICY_REJECT;
	nlines = 1 + (size_t)(data[0] >> 1) % (REPLY_MAX_LINES + 2);
	text = fz_strndup(data + 1, size - 1);
	for (p = text, end = text + size - 1; p <= end && ns < MAX_STRINGS; p += strlen(p) + 1)
		s[ns++] = p;
	if (ns < nlines) {
		free(text);
		return -1;
	}
	t = reply_compile(s, nlines, action, why, sizeof(why), warn, sizeof(warn));
	if (t == NULL) {
		FZ_CHECK(why[0] != '\0', "reply_compile failed without a reason");
		free(text);
		return 0;
	}
	FZ_CHECK(nlines <= REPLY_MAX_LINES, "%zu lines compiled", nlines);
	FZ_CHECK(reply_code(t) / 100 == (action == POLICY_REJECT ? 5 : 4),
	    "code %d for %s", reply_code(t), action == POLICY_REJECT ? "reject" : "tempfail");
	{
		const char *v[9] = { 0 };
		for (size_t i = 0; i < 9 && nlines + i < ns; i++)
			v[i] = s[nlines + i];
		vars = (struct reply_vars){ v[0], v[1], v[2], v[3], v[4], v[5], v[6],
		    v[7], v[8] };
	}
	reply_expand(t, &vars, &out);
	check_expansion(t, &out);
	/* No values at all: every variable expands to "". */
	memset(&vars, 0, sizeof(vars));
	reply_expand(t, &vars, &out);
	check_expansion(t, &out);
	(void)reply_uses(t, "sender");
	reply_free(t);
	free(text);
	return 0;
}
