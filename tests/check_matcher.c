/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_matcher - unit tests of policies/matcher: the block and allow list
 * entries of each kind, what they match and what they must not (the
 * near-misses of issue 4), the errors a bad entry gives, list files, and
 * the same answers from many threads at once.
 *
 * Cases are tables {label, ...} run with tcase_add_loop_test; each failure
 * message starts with the case label.  Error cases name a substring of the
 * reason, since that reason is what an operator reads after "file:line:".
 */
#include "config.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "policies/canon.h"
#include "policies/matcher.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

#define A MATCHER_ADDRESS
#define D MATCHER_DOMAIN
#define C MATCHER_CLIENT
#define N MATCHER_NAME

/* ---- what matches */

static const struct {
	const char *label;
	enum matcher_kind kind;
	const char *entries[5];        /* up to the first NULL */
	const char *value;
	bool want;
} match_cases[] = {
	/* addresses */
	{ "address exact", A, { "user@example.com" }, "user@example.com", true },
	{ "address uppercase value", A, { "user@example.com" }, "User@EXAMPLE.Com", true },
	{ "address uppercase entry", A, { "USER@Example.COM" }, "user@example.com", true },
	{ "address other user", A, { "user@example.com" }, "other@example.com", false },
	{ "address longer local", A, { "user@example.com" }, "xuser@example.com", false },
	{ "address at subdomain", A, { "user@example.com" }, "user@sub.example.com", false },
	{ "address trailing dot", A, { "user@example.com" }, "user@example.com.", true },
	{ "address quoted local", A, { "\"john doe\"@example.com" },
	  "\"John Doe\"@Example.com", true },
	{ "address quoted vs unquoted", A, { "\"john doe\"@example.com" },
	  "johndoe@example.com", false },
	{ "address quoted with @", A, { "\"a@b\"@example.com" }, "\"a@b\"@example.com", true },
	{ "@domain any local", A, { "@example.com" }, "anyone@example.com", true },
	{ "@domain uppercase", A, { "@Example.COM" }, "Anyone@EXAMPLE.com", true },
	{ "@domain not subdomain", A, { "@example.com" }, "a@sub.example.com", false },
	{ "@domain not notexample", A, { "@example.com" }, "a@notexample.com", false },
	{ "@domain not null sender", A, { "@example.com" }, "", false },
	{ "@domain value without @", A, { "@example.com" }, "example.com", false },
	{ ".domain itself", A, { ".example.com" }, "a@example.com", true },
	{ ".domain subdomain", A, { ".example.com" }, "a@b.c.example.com", true },
	{ ".domain uppercase", A, { ".EXAMPLE.com" }, "a@MX.Example.COM", true },
	{ ".domain not notexample", A, { ".example.com" }, "a@notexample.com", false },
	{ ".domain not as a prefix", A, { ".example.com" }, "a@example.com.evil.net", false },
	{ ".domain not in local part", A, { ".example.com" }, "x.example.com@evil.net", false },
	{ ".domain local equals domain", A, { ".example.com" }, "example.com@evil.net", false },
	{ "null sender", A, { "<>" }, "", true },
	{ "null sender written <>", A, { "<>" }, "<>", true },
	{ "null sender entry, real sender", A, { "<>" }, "user@example.com", false },
	{ "mixed list, suffix hit", A, { "a@x.org", "@y.org", ".z.org", "<>" }, "b@w.z.org", true },
	{ "mixed list, miss", A, { "a@x.org", "@y.org", ".z.org", "<>" }, "b@w.y.org", false },
	{ "address regex", A, { "/^spam[0-9]+@/" }, "spam12@example.org", true },
	/* Regexes see the canonical value: lower case, so a lower-case pattern
	 * catches every spelling, and an upper-case one none. */
	{ "address regex sees the canonical value", A, { "/^spam[0-9]+@/" },
	  "SPAM12@example.org", true },
	{ "address regex sees no upper case", A, { "/^SPAM/" }, "SPAM12@example.org", false },
	{ "address regex /i", A, { "/^spam[0-9]+@/i" }, "SPAM12@example.org", true },
	{ "address regex with slash", A, { "/a\\/b|c/d@/" }, "c/d@example.org", true },
	{ "address regex sees <>", A, { "/^<>$/" }, "", true },
	{ "address regex no hit", A, { "/^spam/", "@x.org" }, "ham@example.org", false },

	/* domains */
	{ "domain exact", D, { "example.com" }, "example.com", true },
	{ "domain uppercase", D, { "example.com" }, "EXAMPLE.COM", true },
	{ "domain not subdomain", D, { "example.com" }, "sub.example.com", false },
	{ "domain @ form", D, { "@example.com" }, "example.com", true },
	{ "domain suffix itself", D, { ".example.com" }, "example.com", true },
	{ "domain suffix deep", D, { ".example.com" }, "a.b.example.com", true },
	{ "domain suffix notexample", D, { ".example.com" }, "notexample.com", false },
	{ "domain suffix tld", D, { ".com" }, "example.com", true },
	{ "domain given an address", D, { ".example.com" }, "user@sub.example.com", true },
	{ "domain not from the local part", D, { "example.com" }, "example.com@x.org", false },
	{ "domain trailing dot", D, { "example.com" }, "example.com.", true },
	{ "domain regex", D, { "/\\.ru$/" }, "mail.example.ru", true },
	{ "domain regex sees the canonical value", D, { "/\\.ru$/" }, "mail.example.RU", true },
	{ "domain regex /i", D, { "/\\.ru$/i" }, "mail.example.RU", true },

	/* clients */
	{ "cidr inside", C, { "192.0.2.0/24" }, "192.0.2.255", true },
	{ "cidr network address", C, { "192.0.2.0/24" }, "192.0.2.0", true },
	{ "cidr just above", C, { "192.0.2.0/24" }, "192.0.3.0", false },
	{ "cidr just below", C, { "192.0.2.0/24" }, "192.0.1.255", false },
	{ "cidr /31", C, { "192.0.2.4/31" }, "192.0.2.5", true },
	{ "cidr /31 next", C, { "192.0.2.4/31" }, "192.0.2.6", false },
	{ "ipv4 host", C, { "192.0.2.1" }, "192.0.2.1", true },
	{ "ipv4 host other", C, { "192.0.2.1" }, "192.0.2.10", false },
	{ "mapped ipv4 client", C, { "192.0.2.0/24" }, "::ffff:192.0.2.7", true },
	{ "mapped ipv4 entry", C, { "::ffff:192.0.2.7" }, "192.0.2.7", true },
	{ "ipv6 cidr", C, { "2001:db8::/32" }, "2001:db8:ffff::1", true },
	{ "ipv6 cidr uppercase", C, { "2001:db8::/32" }, "2001:DB8::1", true },
	{ "ipv6 cidr outside", C, { "2001:db8::/32" }, "2001:db9::1", false },
	{ "ipv6 host other spelling", C, { "2001:db8::1" }, "2001:db8:0:0:0:0:0:1", true },
	{ "ipv6 sendmail prefix", C, { "2001:db8::/32" }, "IPv6:2001:db8::5", true },
	{ "ipv4 /0 not ipv6", C, { "0.0.0.0/0" }, "2001:db8::1", false },
	{ "ipv4 /0 any ipv4", C, { "0.0.0.0/0" }, "203.0.113.9", true },
	{ "ipv6 ::/0 holds mapped ipv4", C, { "::/0" }, "203.0.113.9", true },
	{ "many lengths hit", C, { "10.0.0.0/8", "192.0.2.0/24", "198.51.100.7", "2001:db8::/48" },
	  "10.255.255.255", true },
	{ "many lengths miss", C, { "10.0.0.0/8", "192.0.2.0/24", "198.51.100.7", "2001:db8::/48" },
	  "198.51.100.8", false },
	{ "many lengths ipv6", C, { "10.0.0.0/8", "2001:db8::/48" }, "2001:db8:0:ffff::1", true },
	{ "client not an ip", C, { "192.0.2.0/24" }, "unknown", false },
	{ "client regex", C, { "/^10\\./" }, "10.1.2.3", true },
	{ "client regex miss", C, { "/^10\\./" }, "110.1.2.3", false },

	/* names */
	{ "helo exact", N, { "mail.example.com" }, "mail.example.com", true },
	{ "helo uppercase", N, { "mail.example.com" }, "MAIL.Example.COM", true },
	{ "helo trailing dot", N, { "mail.example.com" }, "mail.example.com.", true },
	{ "helo longer", N, { "mail.example.com" }, "xmail.example.com", false },
	{ "helo not subdomain of exact", N, { "example.com" }, "mail.example.com", false },
	{ "helo suffix", N, { ".example.com" }, "mx1.example.com", true },
	{ "helo suffix itself", N, { ".example.com" }, "example.com", true },
	{ "helo suffix notexample", N, { ".example.com" }, "notexample.com", false },
	{ "helo address literal", N, { "[192.0.2.1]" }, "[192.0.2.1]", true },
	{ "helo bare ip", N, { "192.0.2.1" }, "192.0.2.1", true },
	{ "helo regex", N, { "/^localhost$/i" }, "LOCALHOST", true },
	{ "helo regex case", N, { "/^localhost$/" }, "LOCALHOST", false },
	{ "sasl user", N, { "alice" }, "Alice", true },
	{ "sasl user other", N, { "alice" }, "alice2", false },
	{ "sasl user with domain", N, { "alice@example.com" }, "alice@example.com", true },
	{ "sasl user suffix", N, { ".example.com" }, "alice@mail.example.com", true },
	{ "sasl user suffix miss", N, { ".example.com" }, "alice@example.org", false },
	{ "empty list", N, { NULL }, "anything", false },
};

/*
 * A value as the session hands it to a block policy: envelope addresses in
 * their canonical form (policies/canon.h), names and addresses as they are.
 * buf must have room for CANON_SIZE(strlen(v)).
 */
static const char *
as_session(enum matcher_kind kind, const char *v, char *buf, size_t len)
{
	if (kind != MATCHER_ADDRESS && kind != MATCHER_DOMAIN)
		return v;
	(void)canon_address(v, 0, buf, len, NULL, 0);
	return buf;
}

/* A matcher with the entries of match case i; fails the test on a refusal. */
static struct matcher *
case_matcher(size_t i)
{
	struct matcher *m = matcher_new(match_cases[i].kind);
	char why[512];

	ck_assert_msg(m != NULL, "%s: matcher_new failed", match_cases[i].label);
	for (size_t e = 0; e < NELEMS(match_cases[i].entries) &&
	    match_cases[i].entries[e] != NULL; e++)
		ck_assert_msg(matcher_add(m, match_cases[i].entries[e], why, sizeof(why)) == 0,
		    "%s: entry \"%s\" refused: %s", match_cases[i].label,
		    match_cases[i].entries[e], why);
	return m;
}

START_TEST(match)
{
	struct matcher *m = case_matcher((size_t)_i);
	char buf[CANON_SIZE(300)];
	const char *v = as_session(match_cases[_i].kind, match_cases[_i].value, buf,
	    sizeof(buf));

	ck_assert_msg(matcher_match(m, v) == match_cases[_i].want,
	    "%s: \"%s\" %s", match_cases[_i].label, match_cases[_i].value,
	    match_cases[_i].want ? "did not match" : "matched");
	matcher_free(m);
}
END_TEST

/* ---- what is refused */

static const struct {
	const char *label;
	enum matcher_kind kind;
	const char *entry;
	const char *why;               /* substring of the reason */
} bad_entries[] = {
	{ "empty", A, "", "empty entry" },
	{ "blank", A, "  \t ", "empty entry" },
	{ "network in sender list", A, "192.0.2.0/24",
	  "\"192.0.2.0/24\" is an IP address or network: those fit only match = \"client\"" },
	{ "ip in sender list", A, "192.0.2.1", "fit only match = \"client\"" },
	{ "bare domain in sender list", A, "example.com",
	  "\"example.com\" is not an address: write @example.com for that domain or "
	  ".example.com for it and its subdomains" },
	{ "empty domain", A, "user@", "\"user@\": the domain is empty" },
	{ "@ alone", A, "@", "the domain is empty" },
	{ "dot alone", A, ".", "the domain is empty" },
	{ "double @ domain", A, "@@example.com", "'@' is not allowed in a domain" },
	{ "empty label", A, "@ex..com", "\"@ex..com\": the domain has an empty label" },
	{ "double dot suffix", A, "..example.com", "the domain has an empty label" },
	{ "space in domain", A, "@exa mple.com", "contains white space" },
	{ "trailing comment", A, "user@example.com # spammer",
	  "comments go on lines of their own" },
	{ "two @", A, "a@b@example.com", "has more than one @" },
	{ "comma", A, "@example.com,", "',' is not allowed in a domain" },
	{ "angle brackets", A, "<user@example.com>", "'<' is not allowed in an unquoted local part" },
	{ "unterminated quote", A, "\"john doe@example.com",
	  "the quoted local part does not end with a quote" },
	{ "stray quote", A, "\"a\"b\"@example.com", "a stray quote in the quoted local part" },
	{ "two words", A, "bad entry", "\"bad entry\" contains white space" },
	{ "control in domain", A, "@exa\001mple.com",
	  "\"@exa?mple.com\": a control character is not allowed in a domain" },
	{ "control in local part", A, "a\001b@example.com",
	  "a control character is not allowed in a local part" },
	{ "unquoted space", A, "john doe@example.com", "quote a local part with spaces" },
	{ "regex unclosed", A, "/abc", "\"/abc\": a regex ends with / or /i" },
	{ "regex unknown flag", A, "/abc/x", "unknown flag 'x'" },
	{ "regex empty", A, "//", "\"//\": the regex is empty" },
	{ "regex bad", A, "/(abc/", "\"/(abc/\": bad regex: missing closing parenthesis" },
	{ "domain list null sender", D, "<>", "has no domain: list it under match = \"sender\"" },
	{ "domain list address", D, "user@example.com", "is an address" },
	{ "domain list ip", D, "192.0.2.1", "fit only match = \"client\"" },
	{ "domain list slash", D, "example.com/24", "'/' is not allowed in a domain" },
	{ "client domain", C, "example.com",
	  "\"example.com\" is not an IP address or network: a client list takes" },
	{ "client suffix", C, ".example.com", "is not an IP address or network" },
	{ "client null sender", C, "<>", "is not an IP address or network" },
	{ "client host bits", C, "192.0.2.1/24", "host bits set; did you mean 192.0.2.0/24?" },
	{ "client prefix too long", C, "192.0.2.0/33", "prefix length must be 0 to 32" },
	{ "client ipv6 prefix too long", C, "2001:db8::/129", "prefix length must be 0 to 128" },
	{ "client regex bad", C, "/[0-9/", "bad regex" },
	{ "name null sender", N, "<>", "\"<>\" is the null sender: list it under match = \"sender\"" },
	{ "name @domain", N, "@example.com", "write .example.com" },
	{ "name network", N, "192.0.2.0/24", "networks fit only match = \"client\"" },
	{ "name space", N, "mail example.com", "contains white space" },
	{ "name control", N, "mail\001", "contains a control character" },
	{ "name empty suffix", N, ".", "the domain is empty" },
};

START_TEST(bad_entry)
{
	struct matcher *m = matcher_new(bad_entries[_i].kind);
	char why[512] = "";

	ck_assert_msg(matcher_add(m, bad_entries[_i].entry, why, sizeof(why)) == -1,
	    "%s: \"%s\" accepted", bad_entries[_i].label, bad_entries[_i].entry);
	ck_assert_msg(strstr(why, bad_entries[_i].why) != NULL,
	    "%s: reason \"%s\" lacks \"%s\"", bad_entries[_i].label, why, bad_entries[_i].why);
	ck_assert_msg(matcher_count(m) == 0, "%s: count %zu after a refusal",
	    bad_entries[_i].label, matcher_count(m));
	matcher_free(m);
}
END_TEST

START_TEST(entry_too_long)
{
	struct matcher *m = matcher_new(MATCHER_ADDRESS);
	char entry[1100], why[512] = "";

	memset(entry, 'a', sizeof(entry));
	memcpy(entry + 1001 - 12, "@example.com", 13);   /* 1001 characters */
	ck_assert_msg(matcher_add(m, entry, why, sizeof(why)) == -1, "1001 characters accepted");
	ck_assert_msg(strstr(why, "is longer than 1000 characters") != NULL &&
	    strstr(why, "...") != NULL, "too long: reason \"%s\"", why);
	entry[1000 - 12] = '\0';
	strcat(entry, "@example.com");                       /* 1000 characters */
	ck_assert_msg(matcher_add(m, entry, why, sizeof(why)) == 0, "1000 characters: %s", why);
	ck_assert_msg(matcher_match(m, entry), "1000 characters do not match");
	matcher_free(m);
}
END_TEST

START_TEST(counts)
{
	struct matcher *m = matcher_new(MATCHER_ADDRESS);
	const char *entries[] = { "a@x.org", "A@X.ORG", " a@x.org ", "@x.org", ".x.org",
	    "@X.org", "<>", "<>", "/a/", "/a/" };
	char why[512];

	for (size_t i = 0; i < NELEMS(entries); i++)
		ck_assert_msg(matcher_add(m, entries[i], why, sizeof(why)) == 0,
		    "counts: \"%s\" refused: %s", entries[i], why);
	/* a@x.org, @x.org, .x.org, <>, and each regex (not deduplicated) */
	ck_assert_msg(matcher_count(m) == 6, "counts: %zu, want 6", matcher_count(m));
	matcher_free(m);

	m = matcher_new(MATCHER_CLIENT);
	ck_assert(matcher_add(m, "192.0.2.0/24", why, sizeof(why)) == 0);
	ck_assert(matcher_add(m, "::ffff:192.0.2.0/120", why, sizeof(why)) == 0);
	ck_assert(matcher_add(m, "192.0.2.1", why, sizeof(why)) == 0);
	ck_assert_msg(matcher_count(m) == 2, "counts: mapped duplicate counted: %zu",
	    matcher_count(m));
	matcher_free(m);

	ck_assert_msg(matcher_new((enum matcher_kind)42) == NULL, "bad kind accepted");
	matcher_free(NULL);
}
END_TEST

START_TEST(regex_limit)
{
	struct matcher *m = matcher_new(MATCHER_ADDRESS);
	char value[64], why[512];
	struct timespec t0, t1;
	double secs;

	ck_assert(matcher_add(m, "/^(a+)+$/", why, sizeof(why)) == 0);
	memset(value, 'a', sizeof(value) - 2);
	value[sizeof(value) - 2] = '!';
	value[sizeof(value) - 1] = '\0';
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ck_assert_msg(!matcher_match(m, value), "backtracking regex: matched");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	ck_assert_msg(secs < 1.0, "backtracking regex: took %.3f s", secs);
	ck_assert_msg(matcher_match(m, "aaaa"), "backtracking regex: plain hit lost");
	matcher_free(m);
}
END_TEST

/* ---- files */

struct reports {
	int n;
	char first[1024];
};

static void
collect(void *arg, const char *msg)
{
	struct reports *r = arg;

	if (r->n++ == 0)
		snprintf(r->first, sizeof(r->first), "%s", msg);
}

static void
write_file(char *path, size_t pathlen, const char *text)
{
	int fd;

	snprintf(path, pathlen, "/tmp/check_matcher.XXXXXX");
	fd = mkstemp(path);
	ck_assert_msg(fd >= 0, "mkstemp failed");
	ck_assert_msg(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write failed");
	close(fd);
}

START_TEST(file_loads)
{
	char path[64];
	struct reports r = { 0, "" };
	struct matcher *m = matcher_new(MATCHER_ADDRESS);

	write_file(path, sizeof(path),
	    "\xef\xbb\xbf# blocked senders\n"
	    "\n"
	    "spam@example.com\n"
	    "   \t\n"
	    "   # indented comment\n"
	    "  @bad.example  \n"
	    "\t.worse.example\t\r\n"
	    "<>\n"
	    "\"john doe\"@example.com\n"
	    "/^x-.*@/i\n"
	    "last@example.org");         /* no final newline */
	ck_assert_msg(matcher_load_file(m, path, collect, &r) == 0,
	    "file: errors, first \"%s\"", r.first);
	ck_assert_msg(r.n == 0, "file: %d reports", r.n);
	ck_assert_msg(matcher_count(m) == 7, "file: count %zu, want 7", matcher_count(m));
	ck_assert_msg(matcher_match(m, "spam@example.com"), "file: spam@example.com");
	ck_assert_msg(matcher_match(m, "a@bad.example"), "file: a@bad.example");
	ck_assert_msg(matcher_match(m, "a@b.worse.example"), "file: a@b.worse.example");
	ck_assert_msg(matcher_match(m, ""), "file: <>");
	ck_assert_msg(matcher_match(m, "john doe@example.com"), "file: quoted (canonical)");
	ck_assert_msg(matcher_match(m, "X-Y@example.net"), "file: regex");
	ck_assert_msg(matcher_match(m, "last@example.org"), "file: last line");
	ck_assert_msg(!matcher_match(m, "ham@example.com"), "file: ham@example.com");
	unlink(path);
	matcher_free(m);
}
END_TEST

START_TEST(file_bad_line)
{
	char path[64], want[128];
	struct reports r = { 0, "" };
	struct matcher *m = matcher_new(MATCHER_CLIENT);

	write_file(path, sizeof(path),
	    "# trusted relays\n"
	    "192.0.2.0/24\n"
	    "\n"
	    "198.51.100.1/24\n"
	    "2001:db8::/32\n");
	ck_assert_msg(matcher_load_file(m, path, collect, &r) == 1, "bad line: not 1 error");
	ck_assert_msg(r.n == 1, "bad line: %d reports", r.n);
	snprintf(want, sizeof(want), "%s:4: \"198.51.100.1/24\" has host bits set", path);
	ck_assert_msg(strncmp(r.first, want, strlen(want)) == 0,
	    "bad line: report \"%s\", want \"%s...\"", r.first, want);
	unlink(path);
	matcher_free(m);
}
END_TEST

START_TEST(file_many_bad_lines)
{
	char path[64], *text;
	struct reports r = { 0, "" };
	struct matcher *m = matcher_new(MATCHER_DOMAIN);
	size_t len = 0;

	text = malloc(150 * 8 + 1);
	for (int i = 0; i < 150; i++)
		len += (size_t)sprintf(text + len, "a@b.%03d\n", i);
	write_file(path, sizeof(path), text);
	ck_assert_msg(matcher_load_file(m, path, collect, &r) == 150,
	    "many bad lines: not 150 errors");
	ck_assert_msg(r.n == 101, "many bad lines: %d reports, want 100 and a summary", r.n);
	unlink(path);
	free(text);
	matcher_free(m);
}
END_TEST

START_TEST(file_missing)
{
	struct reports r = { 0, "" };
	struct matcher *m = matcher_new(MATCHER_ADDRESS);
	const char *path = "/nonexistent/check_matcher.list";

	ck_assert_msg(matcher_load_file(m, path, collect, &r) == 1, "missing file: not 1 error");
	ck_assert_msg(r.n == 1 && strcmp(r.first, "/nonexistent/check_matcher.list: cannot "
	    "open: No such file or directory") == 0, "missing file: report \"%s\"", r.first);
	matcher_free(m);
}
END_TEST

START_TEST(file_nul_byte)
{
	char path[64];
	struct reports r = { 0, "" };
	struct matcher *m = matcher_new(MATCHER_ADDRESS);
	FILE *f;

	write_file(path, sizeof(path), "");
	f = fopen(path, "w");
	fwrite("a@x.org\nb@x\0.org\n", 1, 17, f);
	fclose(f);
	ck_assert_msg(matcher_load_file(m, path, collect, &r) == 1, "NUL: not 1 error");
	ck_assert_msg(strstr(r.first, ":2: the line contains a NUL byte") != NULL,
	    "NUL: report \"%s\"", r.first);
	unlink(path);
	matcher_free(m);
}
END_TEST

/* ---- threads */

#define THREADS 8
#define ROUNDS 300

static struct matcher *shared[NELEMS(match_cases)];

static void *
reader(void *arg)
{
	size_t *wrong = arg;
	char buf[CANON_SIZE(300)];

	for (int r = 0; r < ROUNDS; r++)
		for (size_t i = 0; i < NELEMS(match_cases); i++)
			if (matcher_match(shared[i], as_session(match_cases[i].kind,
			    match_cases[i].value, buf, sizeof(buf))) != match_cases[i].want)
				(*wrong)++;
	return NULL;
}

START_TEST(threads)
{
	pthread_t t[THREADS];
	size_t wrong[THREADS] = { 0 };

	for (size_t i = 0; i < NELEMS(match_cases); i++)
		shared[i] = case_matcher(i);
	for (int k = 0; k < THREADS; k++)
		ck_assert(pthread_create(&t[k], NULL, reader, &wrong[k]) == 0);
	for (int k = 0; k < THREADS; k++) {
		pthread_join(t[k], NULL);
		ck_assert_msg(wrong[k] == 0, "thread %d: %zu wrong answers", k, wrong[k]);
	}
	for (size_t i = 0; i < NELEMS(match_cases); i++)
		matcher_free(shared[i]);
}
END_TEST

static Suite *
matcher_suite(void)
{
	Suite *s = suite_create("matcher");
	TCase *tc;

	tc = tcase_create("match");
	tcase_add_loop_test(tc, match, 0, (int)NELEMS(match_cases));
	tcase_add_test(tc, regex_limit);
	suite_add_tcase(s, tc);

	tc = tcase_create("entries");
	tcase_add_loop_test(tc, bad_entry, 0, (int)NELEMS(bad_entries));
	tcase_add_test(tc, entry_too_long);
	tcase_add_test(tc, counts);
	suite_add_tcase(s, tc);

	tc = tcase_create("files");
	tcase_add_test(tc, file_loads);
	tcase_add_test(tc, file_bad_line);
	tcase_add_test(tc, file_many_bad_lines);
	tcase_add_test(tc, file_missing);
	tcase_add_test(tc, file_nul_byte);
	suite_add_tcase(s, tc);

	tc = tcase_create("threads");
	tcase_add_test(tc, threads);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(matcher_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
