/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_reply - unit tests of milter/reply: template checks at load time,
 * safe expansion of network values, the log form of a reply and the table
 * of standard refusal codes.
 *
 * Every expansion, whatever the input, is checked against what libmilter
 * and the MTAs accept (assert_safe): printable ASCII only, every '%'
 * doubled (an even run of '%' everywhere, also where a line was cut),
 * "code xcode text" at most REPLY_MAX_LINE octets per line, and at most
 * REPLY_MAX_TOTAL octets for the whole reply counting each line's
 * "code xcode " prefix and CRLF.
 */
#include "config.h"

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/reply.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/*
 * What a test allocates.  A checked teardown frees it, also after a failed
 * assertion (which, with CK_FORK=no, skips the rest of the test), so that
 * the suite stays leak-free under ASan either way.
 */
static struct reply_tmpl *cur_tmpl;
static char *cur_mem[REPLY_MAX_LINES + 1];

static void
teardown(void)
{
	reply_free(cur_tmpl);
	cur_tmpl = NULL;
	for (size_t i = 0; i < NELEM(cur_mem); i++) {
		free(cur_mem[i]);
		cur_mem[i] = NULL;
	}
}

/* Octets a line costs on the wire besides its text: "code xcode " and CRLF. */
static size_t
line_overhead(const struct reply_out *out)
{
	return strlen(out->code) + 1 + (out->xcode[0] != '\0' ? strlen(out->xcode) + 1 : 0) + 2;
}

static void
assert_safe(const char *label, const struct reply_out *out)
{
	size_t prefix = line_overhead(out) - 2, total = 0;

	ck_assert_msg(strlen(out->code) == 3, "%s: code \"%s\" is not 3 digits",
	    label, out->code);
	ck_assert_msg(out->nlines >= 1 && out->nlines <= REPLY_MAX_LINES,
	    "%s: %zu lines", label, out->nlines);
	for (size_t i = 0; i < out->nlines; i++) {
		const char *l = out->lines[i];
		size_t len = strlen(l), run = 0;

		for (size_t k = 0; k < len; k++) {
			unsigned char c = (unsigned char)l[k];
			ck_assert_msg(c >= 0x20 && c <= 0x7e, "%s: line %zu has octet "
			    "0x%02x at offset %zu", label, i, c, k);
			if (c == '%') {
				run++;
				continue;
			}
			ck_assert_msg(run % 2 == 0, "%s: line %zu has a lone '%%' "
			    "(run of %zu) before offset %zu", label, i, run, k);
			run = 0;
		}
		ck_assert_msg(run % 2 == 0, "%s: line %zu ends in an odd run of %zu "
		    "'%%' (a doubled %% was split)", label, i, run);
		ck_assert_msg(prefix + len <= REPLY_MAX_LINE, "%s: line %zu is %zu "
		    "octets with its prefix, over %d", label, i, prefix + len,
		    REPLY_MAX_LINE);
		total += prefix + len + 2;
	}
	ck_assert_msg(total <= REPLY_MAX_TOTAL, "%s: reply is %zu octets on the "
	    "wire, over %d", label, total, REPLY_MAX_TOTAL);
}

/* Lines of a table entry: up to NULL, or fill lines (the first, then "more"). */
static size_t
table_lines(const char *const *in, size_t fill, const char **out, size_t cap)
{
	size_t n = 0;

	if (fill == 0) {
		while (n < cap && in[n] != NULL) {
			out[n] = in[n];
			n++;
		}
		return n;
	}
	for (; n < fill && n < cap; n++)
		out[n] = n == 0 ? in[0] : "more";
	return n;
}

/* ---- reply_compile */

struct compile_case {
	const char *label;
	enum policy_action action;
	const char *lines[4];      /* NULL-terminated, unless fill */
	size_t fill;               /* > 0: lines[0], then "more", fill lines in all */
	const char *err;           /* NULL: must compile; else part of why */
	const char *warn;          /* NULL: no warning; else part of warn */
	int code;
	const char *xcode;         /* expanded, with every variable empty */
	const char *text;          /* line 0, expanded likewise */
	const char *uses;          /* the variables reply_uses reports */
};

static const struct compile_case compile_cases[] = {
	/* good */
	{ "reject with enhanced code", POLICY_REJECT,
	    { "550 5.7.1 Sender blocked", NULL }, 0, NULL, NULL,
	    550, "5.7.1", "Sender blocked", "" },
	{ "tempfail with enhanced code", POLICY_TEMPFAIL,
	    { "451 4.7.1 Try again later", NULL }, 0, NULL, NULL,
	    451, "4.7.1", "Try again later", "" },
	{ "421 closes the session", POLICY_TEMPFAIL,
	    { "421 4.7.0 Go away", NULL }, 0, NULL, NULL, 421, "4.7.0", "Go away", "" },
	/* Without an enhanced code class.0.0 is sent: Postfix would read text
	 * starting with a digit as one and drop the milter on a mismatch. */
	{ "code only", POLICY_REJECT, { "550", NULL }, 0, NULL, NULL, 550, "5.0.0", "", "" },
	{ "code and text, no enhanced code", POLICY_TEMPFAIL,
	    { "452 Too many recipients", NULL }, 0, NULL, NULL,
	    452, "4.0.0", "Too many recipients", "" },
	{ "text starting with a number is text", POLICY_REJECT,
	    { "550 5 recipients at most", NULL }, 0, NULL, NULL,
	    550, "5.0.0", "5 recipients at most", "" },
	{ "extra spaces", POLICY_REJECT, { "550  5.7.1  spaced", NULL }, 0, NULL, NULL,
	    550, "5.7.1", "spaced", "" },
	{ "three-digit subject and detail", POLICY_TEMPFAIL,
	    { "450 4.7.28 Flood", NULL }, 0, NULL, NULL, 450, "4.7.28", "Flood", "" },
	{ "longest enhanced code", POLICY_REJECT,
	    { "550 5.999.999 x", NULL }, 0, NULL, NULL, 550, "5.999.999", "x", "" },
	{ "every variable", POLICY_REJECT,
	    { "552 5.3.4 ${policy}${key}${limit}${window}${retry_after}"
	      "${sender}${rcpt}${client_ip}${size}", NULL }, 0, NULL, NULL,
	    552, "5.3.4", "", REPLY_VARS },
	{ "some variables", POLICY_REJECT,
	    { "550 5.7.1 ${sender} to ${rcpt}", NULL }, 0, NULL, NULL,
	    550, "5.7.1", " to ", "sender rcpt" },
	{ "$$ is a dollar", POLICY_REJECT, { "550 5.7.1 costs $$5", NULL }, 0, NULL, NULL,
	    550, "5.7.1", "costs $5", "" },
	{ "$${name} is literal", POLICY_REJECT,
	    { "550 5.7.1 $${sender}", NULL }, 0, NULL, NULL,
	    550, "5.7.1", "${sender}", "" },
	{ "percent in the template", POLICY_REJECT,
	    { "550 5.7.1 100% sure", NULL }, 0, NULL, NULL,
	    550, "5.7.1", "100%% sure", "" },
	{ "multi-line", POLICY_REJECT,
	    { "550 5.7.1 first", "second ${sender}", "third", NULL }, 0, NULL, NULL,
	    550, "5.7.1", "first", "sender" },
	{ "32 lines", POLICY_REJECT, { "550 5.7.1 first", NULL }, 32, NULL, NULL,
	    550, "5.7.1", "first", "" },
	{ "nonstandard 422 warns", POLICY_TEMPFAIL,
	    { "422 4.2.2 Mailbox full", NULL }, 0, NULL, "452",
	    422, "4.2.2", "Mailbox full", "" },
	{ "nonstandard 523 warns", POLICY_REJECT,
	    { "523 5.3.4 Too big", NULL }, 0, NULL, "552", 523, "5.3.4", "Too big", "" },
	{ "nonstandard 525 warns", POLICY_REJECT,
	    { "525 5.7.13 Disabled", NULL }, 0, NULL, "550", 525, "5.7.13", "Disabled", "" },
	{ "nonstandard 420 warns", POLICY_TEMPFAIL,
	    { "420 4.4.2 Timeout", NULL }, 0, NULL, "451", 420, "4.4.2", "Timeout", "" },
	/* bad code */
	{ "no lines", POLICY_REJECT, { NULL }, 0, "1 to 32 lines", NULL, 0, NULL, NULL, NULL },
	{ "33 lines", POLICY_REJECT, { "550 5.7.1 first", NULL }, 33, "1 to 32 lines",
	    NULL, 0, NULL, NULL, NULL },
	{ "empty", POLICY_REJECT, { "", NULL }, 0, "three-digit code", NULL,
	    0, NULL, NULL, NULL },
	{ "two digits", POLICY_REJECT, { "55 5.7.1 x", NULL }, 0, "three-digit code",
	    NULL, 0, NULL, NULL, NULL },
	{ "four digits", POLICY_REJECT, { "5500 x", NULL }, 0, "three-digit code",
	    NULL, 0, NULL, NULL, NULL },
	{ "letters", POLICY_REJECT, { "abc def", NULL }, 0, "three-digit code",
	    NULL, 0, NULL, NULL, NULL },
	{ "leading space", POLICY_REJECT, { " 550 x", NULL }, 0, "three-digit code",
	    NULL, 0, NULL, NULL, NULL },
	{ "dash for multi-line", POLICY_REJECT, { "550-5.7.1 first", NULL }, 0,
	    "list of strings", NULL, 0, NULL, NULL, NULL },
	{ "250 is success", POLICY_REJECT, { "250 2.0.0 OK", NULL }, 0,
	    "not a refusal", NULL, 0, NULL, NULL, NULL },
	{ "354 is success", POLICY_TEMPFAIL, { "354 go ahead", NULL }, 0,
	    "not a refusal", NULL, 0, NULL, NULL, NULL },
	{ "1xx", POLICY_REJECT, { "150 x", NULL }, 0, "not an SMTP refusal code",
	    NULL, 0, NULL, NULL, NULL },
	{ "6xx", POLICY_REJECT, { "650 x", NULL }, 0, "not an SMTP refusal code",
	    NULL, 0, NULL, NULL, NULL },
	{ "second digit 6", POLICY_REJECT, { "560 5.6.0 x", NULL }, 0,
	    "second digit 0-5", NULL, 0, NULL, NULL, NULL },
	{ "571 (5.7.1 written as a code)", POLICY_REJECT, { "571 5.7.1 x", NULL }, 0,
	    "second digit 0-5", NULL, 0, NULL, NULL, NULL },
	{ "second digit 9", POLICY_TEMPFAIL, { "490 4.0.0 x", NULL }, 0,
	    "second digit 0-5", NULL, 0, NULL, NULL, NULL },
	{ "reject with 4xx", POLICY_REJECT, { "451 4.7.1 x", NULL }, 0,
	    "\"reject\" needs a 5xx", NULL, 0, NULL, NULL, NULL },
	{ "tempfail with 5xx", POLICY_TEMPFAIL, { "550 5.7.1 x", NULL }, 0,
	    "\"tempfail\" needs a 4xx", NULL, 0, NULL, NULL, NULL },
	/* bad enhanced code */
	{ "enhanced class 4 on 550", POLICY_REJECT, { "550 4.7.1 x", NULL }, 0,
	    "does not match reply code 550", NULL, 0, NULL, NULL, NULL },
	{ "enhanced class 5 on 451", POLICY_TEMPFAIL, { "451 5.7.1 x", NULL }, 0,
	    "does not match reply code 451", NULL, 0, NULL, NULL, NULL },
	{ "enhanced class 2 on 451", POLICY_TEMPFAIL, { "451 2.0.0 x", NULL }, 0,
	    "does not match", NULL, 0, NULL, NULL, NULL },
	{ "enhanced code with two parts", POLICY_REJECT, { "550 5.7 x", NULL }, 0,
	    "not an enhanced status code", NULL, 0, NULL, NULL, NULL },
	{ "enhanced code with four parts", POLICY_REJECT, { "550 5.7.1.1 x", NULL }, 0,
	    "not an enhanced status code", NULL, 0, NULL, NULL, NULL },
	{ "enhanced class of two digits", POLICY_REJECT, { "550 55.7.1 x", NULL }, 0,
	    "not an enhanced status code", NULL, 0, NULL, NULL, NULL },
	{ "enhanced subject of four digits", POLICY_REJECT,
	    { "550 5.1234.1 x", NULL }, 0, "not an enhanced status code", NULL,
	    0, NULL, NULL, NULL },
	{ "enhanced detail of four digits", POLICY_REJECT,
	    { "550 5.7.1000 x", NULL }, 0, "not an enhanced status code", NULL,
	    0, NULL, NULL, NULL },
	{ "enhanced detail empty", POLICY_REJECT, { "550 5.7. x", NULL }, 0,
	    "not an enhanced status code", NULL, 0, NULL, NULL, NULL },
	{ "enhanced code with a letter", POLICY_REJECT, { "550 5.7.1a x", NULL }, 0,
	    "not an enhanced status code", NULL, 0, NULL, NULL, NULL },
	/* bad text */
	{ "unknown variable", POLICY_REJECT, { "550 5.7.1 ${nope}", NULL }, 0,
	    "unknown variable ${nope}", NULL, 0, NULL, NULL, NULL },
	{ "variable names are case-sensitive", POLICY_REJECT,
	    { "550 5.7.1 ${Sender}", NULL }, 0, "unknown variable ${Sender}", NULL,
	    0, NULL, NULL, NULL },
	{ "empty variable", POLICY_REJECT, { "550 5.7.1 ${}", NULL }, 0,
	    "unknown variable ${}", NULL, 0, NULL, NULL, NULL },
	{ "unknown variable on line 2", POLICY_REJECT,
	    { "550 5.7.1 ok", "${bogus}", NULL }, 0, "unknown variable ${bogus}",
	    NULL, 0, NULL, NULL, NULL },
	{ "lone dollar", POLICY_REJECT, { "550 5.7.1 costs $5", NULL }, 0,
	    "write $$ for a dollar sign", NULL, 0, NULL, NULL, NULL },
	{ "dollar at the end", POLICY_REJECT, { "550 5.7.1 end$", NULL }, 0,
	    "write $$ for a dollar sign", NULL, 0, NULL, NULL, NULL },
	{ "unclosed ${", POLICY_REJECT, { "550 5.7.1 ${sender", NULL }, 0,
	    "starts no ${name}", NULL, 0, NULL, NULL, NULL },
	{ "tab", POLICY_REJECT, { "550 5.7.1 a\tb", NULL }, 0,
	    "printable ASCII (character 0x09", NULL, 0, NULL, NULL, NULL },
	{ "CR LF on line 2", POLICY_REJECT, { "550 5.7.1 ok", "bad\r\n250 ok", NULL },
	    0, "printable ASCII (character 0x0d", NULL, 0, NULL, NULL, NULL },
	{ "UTF-8", POLICY_REJECT, { "550 5.7.1 caf\xc3\xa9", NULL }, 0,
	    "printable ASCII (character 0xc3", NULL, 0, NULL, NULL, NULL },
	{ "DEL", POLICY_REJECT, { "550 5.7.1 a\x7f", NULL }, 0,
	    "printable ASCII (character 0x7f", NULL, 0, NULL, NULL, NULL },
};

static bool
word_in(const char *word, const char *list)
{
	size_t len = strlen(word);

	for (const char *p = list; (p = strstr(p, word)) != NULL; p += len)
		if ((p == list || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0'))
			return true;
	return false;
}

START_TEST(test_compile)
{
	const struct compile_case *c = &compile_cases[_i];
	const char *lines[REPLY_MAX_LINES + 2];
	size_t n = table_lines(c->lines, c->fill, lines, NELEM(lines));
	char why[512] = "", warn[512] = "x";
	struct reply_tmpl *t;
	struct reply_vars vars = { 0 };
	struct reply_out out;

	t = cur_tmpl = reply_compile(lines, n, c->action, why, sizeof(why), warn,
	    sizeof(warn));
	if (c->err != NULL) {
		ck_assert_msg(t == NULL, "%s: compiled, expected \"%s\"", c->label, c->err);
		ck_assert_msg(strstr(why, c->err) != NULL, "%s: why \"%s\" lacks \"%s\"",
		    c->label, why, c->err);
		return;
	}
	ck_assert_msg(t != NULL, "%s: refused: %s", c->label, why);
	if (c->warn == NULL)
		ck_assert_msg(warn[0] == '\0', "%s: unexpected warning \"%s\"", c->label, warn);
	else
		ck_assert_msg(strstr(warn, c->warn) != NULL, "%s: warning \"%s\" lacks "
		    "\"%s\"", c->label, warn, c->warn);
	ck_assert_msg(reply_code(t) == c->code, "%s: code %d, expected %d", c->label,
	    reply_code(t), c->code);

	char names[] = REPLY_VARS;
	for (char *save = NULL, *v = strtok_r(names, " ", &save); v != NULL;
	    v = strtok_r(NULL, " ", &save))
		ck_assert_msg((reply_uses(t, v) != 0) == word_in(v, c->uses), "%s: "
		    "reply_uses(%s) = %d", c->label, v, reply_uses(t, v));

	reply_expand(t, &vars, &out);
	assert_safe(c->label, &out);
	ck_assert_msg(out.nlines == n, "%s: %zu lines expanded, expected %zu",
	    c->label, out.nlines, n);
	ck_assert_msg(atoi(out.code) == c->code, "%s: expanded code %s", c->label, out.code);
	ck_assert_msg(strcmp(out.xcode, c->xcode) == 0, "%s: xcode \"%s\", expected "
	    "\"%s\"", c->label, out.xcode, c->xcode);
	ck_assert_msg(strcmp(out.lines[0], c->text) == 0, "%s: text \"%s\", expected "
	    "\"%s\"", c->label, out.lines[0], c->text);
}
END_TEST

/* ---- reply_expand and reply_format */

struct expand_case {
	const char *label;
	const char *lines[4];      /* NULL-terminated */
	struct reply_vars vars;
	const char *want[4];       /* expanded lines, as sent ('%' doubled) */
	const char *formatted;     /* reply_format */
};

static const struct expand_case expand_cases[] = {
	{ "every variable",
	    { "552 5.3.4 ${policy}|${key}|${limit}|${window}|${retry_after}|"
	      "${sender}|${rcpt}|${client_ip}|${size}", NULL },
	    { .policy = "max-size", .key = "k", .limit = "10K", .window = "1h",
	      .retry_after = "37s", .sender = "a@b.example", .rcpt = "c@d.example",
	      .client_ip = "192.0.2.1", .size = "20480" },
	    { "max-size|k|10K|1h|37s|a@b.example|c@d.example|192.0.2.1|20480" },
	    "552 5.3.4 max-size|k|10K|1h|37s|a@b.example|c@d.example|192.0.2.1|20480" },
	{ "unset variables are empty", { "550 5.7.1 <${sender}><${rcpt}>", NULL },
	    { .policy = "p" }, { "<><>" }, "550 5.7.1 <><>" },
	{ "same variable twice", { "550 5.7.1 ${rcpt} ${rcpt}", NULL },
	    { .rcpt = "x@y" }, { "x@y x@y" }, "550 5.7.1 x@y x@y" },
	{ "percent in the template", { "550 5.7.1 100% sure", NULL }, { 0 },
	    { "100%% sure" }, "550 5.7.1 100% sure" },
	{ "percent in a value", { "550 5.7.1 ${sender}", NULL },
	    { .sender = "a%b@x" }, { "a%%b@x" }, "550 5.7.1 a%b@x" },
	{ "doubled percent in a value", { "550 5.7.1 ${sender}", NULL },
	    { .sender = "%%s%n" }, { "%%%%s%%n" }, "550 5.7.1 %%s%n" },
	{ "CR LF in a value", { "550 5.7.1 ${sender} end", NULL },
	    { .sender = "a\r\n250 2.0.0 ok\r\n" }, { "a??250 2.0.0 ok?? end" },
	    "550 5.7.1 a??250 2.0.0 ok?? end" },
	{ "control characters in a value", { "550 5.7.1 ${rcpt}", NULL },
	    { .rcpt = "\x01x\ty\x1f\x7f" }, { "?x?y??" }, "550 5.7.1 ?x?y??" },
	{ "UTF-8 in a value", { "550 5.7.1 ${sender}", NULL },
	    { .sender = "caf\xc3\xa9@\xff" }, { "caf??@?" }, "550 5.7.1 caf??@?" },
	{ "dollar", { "550 5.7.1 costs $$5", NULL }, { 0 }, { "costs $5" },
	    "550 5.7.1 costs $5" },
	{ "$${name} stays literal", { "550 5.7.1 $${sender}", NULL },
	    { .sender = "s@x" }, { "${sender}" }, "550 5.7.1 ${sender}" },
	{ "a value is not expanded again", { "550 5.7.1 ${sender}", NULL },
	    { .sender = "${rcpt}$$" , .rcpt = "no" }, { "${rcpt}$$" },
	    "550 5.7.1 ${rcpt}$$" },
	{ "no enhanced code", { "451 later ${policy}", NULL }, { .policy = "p%" },
	    { "later p%%" }, "451 4.0.0 later p%" },
	{ "multi-line", { "550 5.7.1 first ${sender}", "100% ${rcpt}", "third", NULL },
	    { .sender = "a%", .rcpt = "b\n" }, { "first a%%", "100%% b?", "third" },
	    "550 5.7.1 first a% / 100% b? / third" },
};

START_TEST(test_expand)
{
	const struct expand_case *c = &expand_cases[_i];
	const char *lines[4];
	size_t n = table_lines(c->lines, 0, lines, NELEM(lines));
	char why[512], warn[512], log[2048];
	struct reply_tmpl *t;
	struct reply_out out;
	size_t want_n = 0;

	t = cur_tmpl = reply_compile(lines, n,
	    lines[0][0] == '4' ? POLICY_TEMPFAIL : POLICY_REJECT, why, sizeof(why),
	    warn, sizeof(warn));
	ck_assert_msg(t != NULL, "%s: refused: %s", c->label, why);
	reply_expand(t, &c->vars, &out);
	assert_safe(c->label, &out);
	while (want_n < NELEM(c->want) && c->want[want_n] != NULL)
		want_n++;
	ck_assert_msg(out.nlines == want_n, "%s: %zu lines, expected %zu", c->label,
	    out.nlines, want_n);
	for (size_t i = 0; i < want_n; i++)
		ck_assert_msg(strcmp(out.lines[i], c->want[i]) == 0, "%s: line %zu "
		    "\"%s\", expected \"%s\"", c->label, i, out.lines[i], c->want[i]);
	reply_format(&out, log, sizeof(log));
	ck_assert_msg(strcmp(log, c->formatted) == 0, "%s: formatted \"%s\", expected "
	    "\"%s\"", c->label, log, c->formatted);
}
END_TEST

/* ---- limits: long values and many lines */

struct cut_case {
	const char *label;
	const char *code;          /* "550 5.7.1" or "550" */
	size_t nlines;             /* each: text_len 'x', then ${sender} if with_sender */
	size_t text_len;
	bool with_sender;
	size_t pad, npct;          /* the sender: pad 'a', then npct '%' */
	size_t want_len0;          /* 0: no exact length for line 0 */
	size_t intact;             /* leading lines that must come out whole */
};

static const struct cut_case cut_cases[] = {
	/* "550 5.7.1 " leaves 510 - 10 = 500 octets of text on a line. */
	{ "5000-byte sender", "550 5.7.1", 1, 7, true, 5000, 0, 500, 0 },
	{ "5000-byte sender, no enhanced code", "550", 1, 7, true, 5000, 0, 500, 0 },
	{ "5000-byte sender, long enhanced code", "550 5.7.999", 1, 7, true, 5000, 0,
	    498, 0 },
	{ "template line of 600 octets", "550 5.7.1", 1, 600, false, 0, 0, 500, 0 },
	{ "doubled % fits at the cut", "550 5.7.1", 1, 7, true, 491, 10, 500, 0 },
	{ "doubled % would be split at the cut", "550 5.7.1", 1, 7, true, 492, 10,
	    499, 0 },
	{ "value ending in % at the cut", "550 5.7.1", 1, 7, true, 492, 1, 499, 0 },
	{ "value of 5000 %", "550 5.7.1", 1, 7, true, 0, 5000, 499, 0 },
	{ "value of 5000 %, even start", "550 5.7.1", 1, 8, true, 0, 5000, 500, 0 },
	{ "32 short lines all fit", "550 5.7.1", 32, 10, false, 0, 0, 10, 32 },
	{ "32 lines of 100", "550 5.7.1", 32, 100, false, 0, 0, 100, 8 },
	{ "32 lines of 100, no enhanced code", "550", 32, 100, false, 0, 0, 100, 8 },
	{ "32 lines of 480", "550 5.7.1", 32, 480, false, 0, 0, 480, 1 },
	{ "32 lines with a 5000-byte value", "550 5.7.1", 32, 0, true, 5000, 0, 500, 0 },
	{ "32 lines of 100 with 5000 %", "550 5.7.1", 32, 99, true, 0, 5000, 0, 0 },
};

START_TEST(test_cut)
{
	const struct cut_case *c = &cut_cases[_i];
	const char *lines[REPLY_MAX_LINES];
	char *text[REPLY_MAX_LINES];
	char *sender, why[512], warn[512];
	struct reply_vars vars = { 0 };
	struct reply_tmpl *t;
	struct reply_out out;

	ck_assert(c->nlines <= REPLY_MAX_LINES);
	for (size_t i = 0; i < c->nlines; i++) {
		size_t head = i == 0 ? strlen(c->code) + 1 : 0;
		text[i] = cur_mem[i] = malloc(head + c->text_len + sizeof("${sender}"));
		ck_assert(text[i] != NULL);
		if (head > 0)
			sprintf(text[i], "%s ", c->code);
		memset(text[i] + head, 'x', c->text_len);
		strcpy(text[i] + head + c->text_len, c->with_sender ? "${sender}" : "");
		lines[i] = text[i];
	}
	sender = cur_mem[REPLY_MAX_LINES] = malloc(c->pad + c->npct + 1);
	ck_assert(sender != NULL);
	memset(sender, 'a', c->pad);
	memset(sender + c->pad, '%', c->npct);
	sender[c->pad + c->npct] = '\0';
	vars.sender = sender;

	t = cur_tmpl = reply_compile(lines, c->nlines, POLICY_REJECT, why, sizeof(why),
	    warn, sizeof(warn));
	ck_assert_msg(t != NULL, "%s: refused: %s", c->label, why);
	reply_expand(t, &vars, &out);
	assert_safe(c->label, &out);
	if (c->want_len0 > 0)
		ck_assert_msg(strlen(out.lines[0]) == c->want_len0, "%s: line 0 is %zu "
		    "octets, expected %zu", c->label, strlen(out.lines[0]), c->want_len0);
	ck_assert_msg(out.nlines >= c->intact, "%s: %zu lines, expected at least %zu",
	    c->label, out.nlines, c->intact);
	for (size_t i = 0; i < c->intact; i++)
		ck_assert_msg(strlen(out.lines[i]) == c->text_len, "%s: line %zu cut to "
		    "%zu octets", c->label, i, strlen(out.lines[i]));
	/* A line that does not fit whole is cut, and nothing follows it. */
	for (size_t i = 0; !c->with_sender && i + 1 < out.nlines; i++)
		ck_assert_msg(strlen(out.lines[i]) == c->text_len, "%s: line %zu cut "
		    "but line %zu follows", c->label, i, i + 1);
}
END_TEST

/* reply_format into every buffer size: a NUL-terminated prefix of the whole. */
START_TEST(test_format_buffer)
{
	static const char *const lines[] = { "550 5.7.1 a%b ${sender}", "second %" };
	const char *want = "550 5.7.1 a%b x%%y / second %";
	size_t buflen = (size_t)_i + 1;
	char why[512], warn[512], buf[64];
	struct reply_vars vars = { .sender = "x%%y" };
	struct reply_tmpl *t;
	struct reply_out out;

	t = cur_tmpl = reply_compile(lines, 2, POLICY_REJECT, why, sizeof(why), warn,
	    sizeof(warn));
	ck_assert_msg(t != NULL, "buflen %zu: refused: %s", buflen, why);
	reply_expand(t, &vars, &out);
	memset(buf, '#', sizeof(buf));
	reply_format(&out, buf, buflen);
	size_t len = strnlen(buf, buflen);
	size_t expect = strlen(want) < buflen - 1 ? strlen(want) : buflen - 1;
	ck_assert_msg(len == expect, "buflen %zu: \"%.*s\" is %zu octets, expected %zu",
	    buflen, (int)len, buf, len, expect);
	ck_assert_msg(memcmp(buf, want, len) == 0, "buflen %zu: \"%s\" is not a prefix "
	    "of \"%s\"", buflen, buf, want);
	ck_assert_msg(buf[buflen] == '#', "buflen %zu: wrote past the buffer", buflen);
}
END_TEST
#define FORMAT_MAX_BUFLEN 40

/* ---- reply_code_is_standard */

struct code_case {
	int code;
	int standard;              /* 0: standard; else the code to use instead */
};

static const struct code_case code_cases[] = {
	/* RFC 5321 */
	{ 421, 0 }, { 450, 0 }, { 451, 0 }, { 452, 0 }, { 455, 0 },
	{ 500, 0 }, { 501, 0 }, { 502, 0 }, { 503, 0 }, { 504, 0 },
	{ 550, 0 }, { 551, 0 }, { 552, 0 }, { 553, 0 }, { 554, 0 }, { 555, 0 },
	/* RFC 7504 */
	{ 521, 0 }, { 556, 0 },
	/* RFC 4954 */
	{ 432, 0 }, { 454, 0 }, { 530, 0 }, { 534, 0 }, { 535, 0 }, { 538, 0 },
	/* invented, with a known meaning */
	{ 422, 452 }, { 431, 452 }, { 441, 451 }, { 442, 451 }, { 471, 450 },
	{ 510, 550 }, { 511, 550 }, { 513, 553 }, { 523, 552 }, { 525, 550 },
	{ 541, 550 },
	/* anything else keeps its class */
	{ 400, 451 }, { 420, 451 }, { 453, 451 }, { 499, 451 },
	{ 505, 550 }, { 520, 550 }, { 557, 550 }, { 571, 550 }, { 599, 550 },
};

START_TEST(test_code)
{
	const struct code_case *c = &code_cases[_i];
	int standard = -1;
	int rc = reply_code_is_standard(c->code, &standard);

	if (c->standard == 0) {
		ck_assert_msg(rc == 1, "code %d: not standard", c->code);
		ck_assert_msg(reply_code_is_standard(c->code, NULL) == 1, "code %d: "
		    "not standard without a pointer", c->code);
		return;
	}
	ck_assert_msg(rc == 0, "code %d: standard", c->code);
	ck_assert_msg(standard == c->standard, "code %d: use %d, expected %d",
	    c->code, standard, c->standard);
	ck_assert_msg(reply_code_is_standard(c->code, NULL) == 0, "code %d: standard "
	    "without a pointer", c->code);
}
END_TEST

static Suite *
reply_suite(void)
{
	Suite *s = suite_create("reply");
	TCase *tc;

	tc = tcase_create("compile");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_loop_test(tc, test_compile, 0, NELEM(compile_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("expand");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_loop_test(tc, test_expand, 0, NELEM(expand_cases));
	tcase_add_loop_test(tc, test_cut, 0, NELEM(cut_cases));
	tcase_add_loop_test(tc, test_format_buffer, 0, FORMAT_MAX_BUFLEN);
	suite_add_tcase(s, tc);

	tc = tcase_create("codes");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_loop_test(tc, test_code, 0, NELEM(code_cases));
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(reply_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
