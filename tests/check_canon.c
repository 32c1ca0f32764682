/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_canon - the one canonical address (policies/canon.c) and everything
 * that must agree on it: the session's values, rate-limit keys and list
 * entries.
 *
 * A table of spellings with their canonical forms, then a property test:
 * thousands of generated spellings of one mailbox (case, quotes, backslash
 * escapes, source routes, brackets, trailing dots, white space) must give
 * one canonical form, one rate-limit key and one list match, through the
 * same code the daemon runs (session_msg_start, the ratelimit and block
 * policy types of a loaded configuration).  The generator's seed is printed
 * in every failure.
 */
#include "config.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/cfg.h"
#include "milter/session.h"
#include "policies/canon.h"
#include "policies/policy.h"
#include "tests/testlib.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const struct {
	const char *label;
	const char *in;
	unsigned flags;
	const char *want;
	int rc;
} cases[] = {
	{ "plain", "k1@d.example", 0, "k1@d.example", 0 },
	{ "trailing dot", "k1@d.example.", 0, "k1@d.example", 0 },
	{ "two trailing dots", "k1@d.example..", 0, "k1@d.example", 0 },
	{ "brackets", "<k1@d.example>", 0, "k1@d.example", 0 },
	{ "white space around", "  <k1@d.example> \t", 0, "k1@d.example", 0 },
	{ "case", "K1@D.Example", 0, "k1@d.example", 0 },
	{ "quoted dot-atom", "\"k1\"@d.example", 0, "k1@d.example", 0 },
	{ "quoted with dots", "\"q.blocked\"@d.example", 0, "q.blocked@d.example", 0 },
	{ "escape outside quotes", "k\\1@d.example", 0, "k1@d.example", 0 },
	{ "escape inside quotes", "\"k\\1\"@d.example", 0, "k1@d.example", 0 },
	{ "partly quoted", "j.\"doe\"@d.example", 0, "j.doe@d.example", 0 },
	{ "quoted space", "\"John Doe\"@Example.COM", 0, "john doe@example.com", 0 },
	{ "quoted @ stays escaped", "\"a@b\"@example.com", 0, "a\\@b@example.com", 0 },
	{ "quoted leading @ stays escaped", "\"@a:b\"@example.com", 0,
	  "\\@a:b@example.com", 0 },
	{ "escaped quote stays escaped", "\"a\\\"b\"@x.example", 0, "a\\\"b@x.example", 0 },
	{ "escaped backslash stays escaped", "\"a\\\\b\"@x.example", 0,
	  "a\\\\b@x.example", 0 },
	{ "source route", "<@a.example,@b.example:k1@d.example>", 0, "k1@d.example", 0 },
	{ "source route, one hop", "@a.example:K1@D.example.", 0, "k1@d.example", 0 },
	{ "null sender <>", "<>", 0, "<>", 0 },
	{ "null sender empty", "", 0, "<>", 0 },
	{ "null sender NULL", NULL, 0, "<>", 0 },
	{ "null sender with spaces", " <> ", 0, "<>", 0 },
	{ "no domain", "Postmaster", 0, "postmaster", 0 },
	{ "@domain", "@D.Example.", 0, "@d.example", 0 },
	{ "extension kept", "a+tag@x.example", 0, "a+tag@x.example", 0 },
	{ "extension stripped", "a+tag@x.example", CANON_STRIP_EXTENSION, "a@x.example", 0 },
	{ "extension in quotes stripped", "\"a+tag\"@x.example", CANON_STRIP_EXTENSION,
	  "a@x.example", 0 },
	{ "leading + kept", "+a@x.example", CANON_STRIP_EXTENSION, "+a@x.example", 0 },
	{ "domain literal", "k1@[192.0.2.1]", 0, "k1@[192.0.2.1]", 0 },
	{ "8-bit local part untouched", "J\xc3\x9cRGEN@x.example", 0,
	  "j\xc3\x9crgen@x.example", 0 },
	{ "leading space stays escaped", "\" k1\"@d.example", 0, "\\ k1@d.example", 0 },
	{ "spaces at both ends, no domain", "\" k1 \"", 0, "\\ k1\\ ", 0 },
	{ "leading < stays escaped", "\"<k1\"@d.example", 0, "\\<k1@d.example", 0 },
	{ "empty local part, IPv6 literal is no route", "\"\"@[IPv6:::1]", 0,
	  "@[ipv6:::1]", 0 },
	{ "space inside the brackets", "< k1@d.example >", 0, "k1@d.example", 0 },
	{ "unterminated quote", "\"k1@d.example", 0, "k1\\@d.example", -1 },
	{ "backslash at the end (no domain holds one)", "k1@d.example\\", 0, "k1@d.example", -1 },
	{ "quotes and @ dropped from a domain", "a@\"x@y\"", 0, "a@xy", 0 },
	{ "extension cut before white space", "\"a\tb +x\"@d", CANON_STRIP_EXTENSION,
	  "a\tb\\ @d", 0 },
	{ "a lone pair of quotes is empty", "\"\"", 0, "<>", 0 },
	{ "escaped @: no domain", "k1\\@d.example", 0, "k1\\@d.example", 0 },
};

START_TEST(test_table)
{
	char out[CANON_SIZE(300)], why[128] = "";
	int rc = canon_address(cases[_i].in, cases[_i].flags, out, sizeof(out), why,
	    sizeof(why));

	ck_assert_msg(strcmp(out, cases[_i].want) == 0, "%s: \"%s\", expected \"%s\"",
	    cases[_i].label, out, cases[_i].want);
	ck_assert_msg(rc == cases[_i].rc, "%s: rc %d, expected %d (%s)", cases[_i].label,
	    rc, cases[_i].rc, why);
	if (rc == -1)
		ck_assert_msg(why[0] != '\0', "%s: no reason given", cases[_i].label);
}
END_TEST

/* The canonical form reads the same a second time. */
START_TEST(test_idempotent)
{
	char once[CANON_SIZE(300)], twice[CANON_SIZE(CANON_SIZE(300))];

	if (cases[_i].rc != 0)
		return;
	canon_address(cases[_i].in, cases[_i].flags, once, sizeof(once), NULL, 0);
	ck_assert_msg(canon_address(once, 0, twice, sizeof(twice), NULL, 0) == 0,
	    "%s: \"%s\" is not well-formed", cases[_i].label, once);
	ck_assert_msg(strcmp(once, twice) == 0, "%s: \"%s\" became \"%s\"",
	    cases[_i].label, once, twice);
}
END_TEST

static const struct {
	const char *canonical, *want;
} strips[] = {
	{ "a+tag@x.example", "a@x.example" },
	{ "a+b+c@x.example", "a@x.example" },
	{ "+a@x.example", "+a@x.example" },
	{ "a@x+y.example", "a@x+y.example" },
	{ "a\\@b+c@x.example", "a\\@b@x.example" },
	{ "<>", "<>" },
	{ "postmaster+x", "postmaster+x" },
};

/* Stripping a canonical value agrees with canonicalising with the flag. */
START_TEST(test_strip_extension)
{
	char out[128], direct[128];

	canon_strip_extension(strips[_i].canonical, out, sizeof(out));
	ck_assert_msg(strcmp(out, strips[_i].want) == 0, "\"%s\": \"%s\", expected \"%s\"",
	    strips[_i].canonical, out, strips[_i].want);
	if (strchr(strips[_i].canonical, '@') != NULL) {
		canon_address(strips[_i].canonical, CANON_STRIP_EXTENSION, direct,
		    sizeof(direct), NULL, 0);
		ck_assert_msg(strcmp(out, direct) == 0, "\"%s\": \"%s\" but canon_address "
		    "says \"%s\"", strips[_i].canonical, out, direct);
	}
}
END_TEST

START_TEST(test_too_long_keeps_the_domain)
{
	char in[3000], out[64];

	memset(in, 'a', 2900);
	strcpy(in + 2900, "@blocked.example.");
	ck_assert_int_eq(canon_address(in, 0, out, sizeof(out), NULL, 0), -1);
	ck_assert_msg(strstr(out, "@blocked.example") != NULL &&
	    strlen(out) == sizeof(out) - 1, "cut: \"%s\"", out);
}
END_TEST

START_TEST(test_names)
{
	char out[64];

	canon_domain("MX.Example.COM.", out, sizeof(out));
	ck_assert_str_eq(out, "mx.example.com");
	canon_domain("[192.0.2.1]", out, sizeof(out));
	ck_assert_str_eq(out, "[192.0.2.1]");
	canon_lower("Alice@Example.COM", out, sizeof(out));
	ck_assert_str_eq(out, "alice@example.com");
	canon_domain_of("k1@d.example", out, sizeof(out));
	ck_assert_str_eq(out, "d.example");
	canon_domain_of("a\\@b@d.example", out, sizeof(out));
	ck_assert_str_eq(out, "d.example");
	canon_domain_of("<>", out, sizeof(out));
	ck_assert_str_eq(out, "<>");
	canon_domain_of("postmaster", out, sizeof(out));
	ck_assert_str_eq(out, "");
}
END_TEST

/* ---- many spellings of one mailbox */

static uint64_t rng;

static unsigned
next(unsigned n)
{
	/* xorshift64*: reproducible from the printed seed. */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return (unsigned)((rng * 2685821657736338717ULL) >> 33) % n;
}

static char
random_case(char c)
{
	if (c >= 'a' && c <= 'z' && next(2))
		return (char)(c - 'a' + 'A');
	return c;
}

/* Characters that a local part may hold unquoted and unescaped. */
static bool
atext(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	    (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL);
}

/*
 * One random spelling of local@domain (local as the mailbox's characters,
 * lower case) into out.
 */
static void
spell(const char *local, const char *domain, char *out, size_t outlen)
{
	size_t n = 0;
	bool quoted = false, brackets = next(2);

#define PUT(c) do { if (n + 1 < outlen) out[n++] = (c); } while (0)
	if (next(5) == 0)
		for (const char *s = " \t"; *s != '\0' && next(2); s++)
			PUT(*s);
	if (brackets)
		PUT('<');
	if (next(5) == 0)
		for (const char *s = "@Relay.example,@b.example:"; *s != '\0'; s++)
			PUT(*s);
	for (const char *p = local; *p != '\0'; p++) {
		char c = random_case(*p);

		/* Open or close a quoted stretch now and then. */
		if (next(4) == 0) {
			PUT('"');
			quoted = !quoted;
		}
		if (quoted) {
			if (c == '"' || c == '\\' || next(6) == 0)
				PUT('\\');
		} else if (!atext(*p) || next(6) == 0) {
			PUT('\\');
		}
		PUT(c);
	}
	if (quoted)
		PUT('"');
	PUT('@');
	for (const char *p = domain; *p != '\0'; p++)
		PUT(random_case(*p));
	for (unsigned dots = next(3); dots > 0; dots--)
		PUT('.');
	if (brackets)
		PUT('>');
	if (next(5) == 0)
		PUT(' ');
	out[n] = '\0';
#undef PUT
}

static const struct {
	const char *local, *domain, *canonical;
} mailboxes[] = {
	{ "k1", "d.example", "k1@d.example" },
	{ "john.doe", "mx.example.org", "john.doe@mx.example.org" },
	{ "q.blocked", "d.example", "q.blocked@d.example" },
	{ "john doe", "example.com", "john doe@example.com" },
	{ "o'brien+tag", "ex.example", "o'brien+tag@ex.example" },
	{ "we\"ird\\one", "x.example", "we\\\"ird\\\\one@x.example" },
	{ "a@b", "example.net", "a\\@b@example.net" },
};

#define SPELLINGS 3000

/*
 * Through the daemon's own path: the session canonicalises MAIL FROM, a
 * rate limit keyed on the sender makes its key, and a block list with the
 * mailbox written in another spelling matches it.
 */
START_TEST(test_spellings)
{
	const char *local = mailboxes[_i].local, *domain = mailboxes[_i].domain;
	char entry[300], text[1200], spelling[300], label[64];
	struct policy_count want, got;
	struct policy_msg m = { 0 };
	const struct cfg_policy *limit, *list;
	struct policy_hit hit;
	struct session *s;
	struct cfg *c;
	uint64_t seed = 0x9e3779b97f4a7c15ULL ^ (uint64_t)_i;

	snprintf(label, sizeof(label), "mailbox %d (seed %#llx)", _i,
	    (unsigned long long)seed);
	rng = seed;
	/* The list entry is one more spelling: entries go through the same
	 * canonicaliser at load.  Quoted fully, as a postmaster would write it. */
	{
		size_t n = 0;
		entry[n++] = '"';
		for (const char *p = local; *p != '\0'; p++) {
			if (*p == '"' || *p == '\\')
				entry[n++] = '\\';
			entry[n++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
		}
		snprintf(entry + n, sizeof(entry) - n, "\"@%s.", domain);
	}
	{
		/* libconfig strings: escape the entry's quotes and backslashes. */
		char esc[700];
		size_t n = 0;
		for (const char *p = entry; *p != '\0' && n + 2 < sizeof(esc); p++) {
			if (*p == '"' || *p == '\\')
				esc[n++] = '\\';
			esc[n++] = *p;
		}
		esc[n] = '\0';
		snprintf(text, sizeof(text),
		    "redis = { address = \"unix:/nonexistent/redis.sock\"; };\n"
		    "policies = (\n"
		    "  { name = \"per-sender\"; type = \"ratelimit\"; key = [ \"sender\" ];\n"
		    "    count = \"messages\"; limit = 3; window = \"1h\"; action = \"tempfail\"; },\n"
		    "  { name = \"list\"; type = \"block\"; match = \"sender\";\n"
		    "    entries = [ \"%s\" ]; action = \"reject\"; }\n"
		    ");\n", esc);
	}
	c = tl_load_config(label, text);
	limit = &c->policies[0];
	list = &c->policies[1];
	s = tl_session_new(label, c);
	cfg_unref(c);              /* the session holds it now */

	m.client_ip = "192.0.2.1";
	m.helo = m.rcpt = m.sasl_user = "";
	session_msg_start(s, mailboxes[_i].canonical, NULL, NULL);
	ck_assert_msg(strcmp(s->msg.sender, mailboxes[_i].canonical) == 0,
	    "%s: the canonical form \"%s\" reads as \"%s\"", label,
	    mailboxes[_i].canonical, s->msg.sender);
	m.sender = s->msg.sender;
	ck_assert_msg(limit->type->count(limit->settings, POLICY_RCPT, &m, &want),
	    "%s: no key for the canonical form", label);

	for (int k = 0; k < SPELLINGS; k++) {
		spell(local, domain, spelling, sizeof(spelling));
		session_msg_start(s, spelling, NULL, NULL);
		ck_assert_msg(strcmp(s->msg.sender, mailboxes[_i].canonical) == 0,
		    "%s: spelling %d \"%s\" gave \"%s\", expected \"%s\"", label, k,
		    spelling, s->msg.sender, mailboxes[_i].canonical);
		m.sender = s->msg.sender;
		ck_assert_msg(limit->type->count(limit->settings, POLICY_RCPT, &m, &got) &&
		    got.keylen == want.keylen && memcmp(got.key, want.key, want.keylen) == 0,
		    "%s: spelling %d \"%s\" gave the key \"%.*s\", expected \"%.*s\"",
		    label, k, spelling, (int)got.keylen, got.key, (int)want.keylen, want.key);
		ck_assert_msg(list->type->check(list->settings, POLICY_MAIL, &m, &hit),
		    "%s: spelling %d \"%s\" (\"%s\") not matched by the entry %s", label, k,
		    spelling, s->msg.sender, entry);
	}
}
END_TEST

static Suite *
canon_suite(void)
{
	Suite *s = suite_create("canon");
	TCase *tc = tcase_create("table");

	tcase_add_loop_test(tc, test_table, 0, (int)NELEMS(cases));
	tcase_add_loop_test(tc, test_idempotent, 0, (int)NELEMS(cases));
	tcase_add_test(tc, test_too_long_keeps_the_domain);
	tcase_add_loop_test(tc, test_strip_extension, 0, (int)NELEMS(strips));
	tcase_add_test(tc, test_names);
	suite_add_tcase(s, tc);

	tc = tcase_create("spellings");
	tcase_add_checked_fixture(tc, NULL, tl_teardown);
	tcase_add_loop_test(tc, test_spellings, 0, (int)NELEMS(mailboxes));
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return tl_run(canon_suite());
}
