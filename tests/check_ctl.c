/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_ctl - what policy-milter-ctl makes of an operator's words: rate-limit
 * keys from key parts (policy_type.key_of) and live-list members from
 * entries (policy_type.live_entry).  No Redis: both are pure functions.
 *
 *  - key_of: a table of parts for every kind of key part, each spelling
 *    giving the key the daemon counts under, and the errors (wrong number
 *    of parts, not an IP address, an empty part, a bad address);
 *  - the same key as the daemon's: for many spellings of an address, the
 *    key from the operator's spelling equals the key count() makes from a
 *    session fed the same spelling the way the MTA gives it;
 *  - live_entry: a table per match kind (the canonical member, or the
 *    error for an entry that can never be looked up: regexes, bare domains
 *    for addresses, networks with host bits, a policy without live list).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/cfg.h"
#include "milter/session.h"
#include "testlib.h"

static const char conf[] =
    "redis = { address = \"unix:/nonexistent/redis.sock\"; };\n"
    "policies = (\n"
    "  { name = \"rl-sender\"; type = \"ratelimit\"; key = [ \"sender\" ];\n"
    "    count = \"messages\"; limit = 10; window = \"1h\"; action = \"reject\"; },\n"
    "  { name = \"rl-sender-noext\"; type = \"ratelimit\"; key = [ \"sender\" ];\n"
    "    strip_extension = true; count = \"messages\"; limit = 10; window = \"1h\";\n"
    "    action = \"reject\"; },\n"
    "  { name = \"rl-net\"; type = \"ratelimit\"; key = [ \"client_net\" ];\n"
    "    client_net_v6 = 48; count = \"recipients\"; limit = 10; window = \"1h\";\n"
    "    action = \"reject\"; },\n"
    "  { name = \"rl-ip\"; type = \"ratelimit\"; key = [ \"client_ip\" ];\n"
    "    count = \"messages\"; limit = 10; window = \"1h\"; action = \"reject\"; },\n"
    "  { name = \"rl-mixed\"; type = \"ratelimit\";\n"
    "    key = [ \"sender_domain\", \"rcpt_domain\", \"helo\", \"sasl_user\", \"rcpt\" ];\n"
    "    count = \"recipients\"; limit = 10; window = \"1h\"; action = \"reject\"; },\n"
    "  { name = \"b-sender\"; type = \"block\"; match = \"sender\"; entries = [ ];\n"
    "    redis = true; action = \"reject\"; },\n"
    "  { name = \"b-sdomain\"; type = \"block\"; match = \"sender_domain\"; entries = [ ];\n"
    "    redis = true; action = \"reject\"; },\n"
    "  { name = \"b-client\"; type = \"block\"; match = \"client\"; entries = [ ];\n"
    "    redis = true; action = \"accept\"; },\n"
    "  { name = \"b-helo\"; type = \"block\"; match = \"helo\"; entries = [ ];\n"
    "    redis = true; action = \"reject\"; },\n"
    "  { name = \"b-sasl\"; type = \"block\"; match = \"sasl_user\"; entries = [ ];\n"
    "    redis = true; action = \"reject\"; },\n"
    "  { name = \"b-rcpt\"; type = \"block\"; match = \"rcpt\"; entries = [ ];\n"
    "    redis = true; action = \"reject\"; },\n"
    "  { name = \"b-static\"; type = \"block\"; match = \"sender\";\n"
    "    entries = [ \"x@example.org\" ]; action = \"reject\"; }\n"
    ");\n";

static struct cfg *c;

static void
setup(void)
{
	c = tl_load_config("check_ctl", conf);
}

static void
teardown(void)
{
	cfg_unref(c);
	c = NULL;
	tl_teardown();
}

static const struct cfg_policy *
policy(const char *name)
{
	for (size_t i = 0; i < c->npolicies; i++)
		if (strcmp(c->policies[i].name, name) == 0)
			return &c->policies[i];
	ck_abort_msg("no policy %s", name);
	return NULL;
}

/* ---- key_of */

struct key_case {
	const char *policy;
	const char *parts[6];      /* NULL-terminated */
	const char *want;          /* the key, or NULL for an error ... */
	const char *why;           /* ... whose text contains this */
};

static const struct key_case key_cases[] = {
	{ "rl-sender", { "alice@example.org" }, "alice@example.org", NULL },
	{ "rl-sender", { "Alice@Example.ORG." }, "alice@example.org", NULL },
	{ "rl-sender", { "<alice@example.org>" }, "alice@example.org", NULL },
	{ "rl-sender", { "\"alice\"@example.org" }, "alice@example.org", NULL },
	{ "rl-sender", { "@relay.example:alice@example.org" }, "alice@example.org", NULL },
	{ "rl-sender", { "alice+news@example.org" }, "alice+news@example.org", NULL },
	{ "rl-sender", { "<>" }, "<>", NULL },
	{ "rl-sender", { "" }, "<>", NULL },
	{ "rl-sender-noext", { "Alice+News@example.org" }, "alice@example.org", NULL },
	{ "rl-sender-noext", { "alice@example.org" }, "alice@example.org", NULL },
	{ "rl-net", { "192.0.2.77" }, "192.0.2.0/24", NULL },
	{ "rl-net", { "192.0.2.0/24" }, "192.0.2.0/24", NULL },
	{ "rl-net", { "::ffff:192.0.2.77" }, "192.0.2.0/24", NULL },
	{ "rl-net", { "2001:DB8:0:1::77" }, "2001:db8::/48", NULL },
	{ "rl-ip", { "192.0.2.77" }, "192.0.2.77", NULL },
	{ "rl-ip", { "::FFFF:192.0.2.77" }, "192.0.2.77", NULL },
	{ "rl-ip", { "2001:0db8:0000::0001" }, "2001:db8::1", NULL },
	{ "rl-mixed", { "Example.ORG.", "bob@Example.NET", "MX.Example.com.", "Alice",
	    "Bob@Example.NET" }, "example.org|example.net|mx.example.com|alice|bob@example.net",
	    NULL },
	{ "rl-mixed", { "someone@Example.ORG", "example.net", "mx", "a|b", "b@x" },
	    "example.org|example.net|mx|a\\|b|b@x", NULL },
	/* errors */
	{ "rl-sender", { "a@b", "c@d" }, NULL, "the key has 1 part (sender), 2 given" },
	{ "rl-mixed", { "example.org" }, NULL,
	    "(sender_domain, rcpt_domain, helo, sasl_user, rcpt), 1 given" },
	{ "rl-net", { "not-an-ip" }, NULL, "client_net: \"not-an-ip\" is not an IP address" },
	{ "rl-ip", { "192.0.2.300" }, NULL, "is not an IP address" },
	{ "rl-mixed", { "example.org", "example.net", "mx", "", "b@x" }, NULL, "sasl_user: empty" },
};

START_TEST(test_key_of)
{
	const struct key_case *k = &key_cases[_i];
	const struct cfg_policy *p = policy(k->policy);
	struct policy_count *cnt = calloc(1, sizeof(*cnt));
	char why[512] = "";
	size_t n = 0;
	int rc;

	ck_assert_ptr_nonnull(cnt);
	while (n < 6 && k->parts[n] != NULL)
		n++;
	rc = p->type->key_of(p->settings, k->parts, n, cnt, why, sizeof(why));
	if (k->want != NULL) {
		ck_assert_msg(rc == 0, "case %d (%s %s): refused: %s", _i, k->policy,
		    k->parts[0], why);
		ck_assert_msg(cnt->keylen == strlen(cnt->key) && strcmp(cnt->key, k->want) == 0,
		    "case %d (%s %s): key \"%s\", want \"%s\"", _i, k->policy, k->parts[0],
		    cnt->key, k->want);
	} else {
		ck_assert_msg(rc == -1, "case %d (%s %s): accepted as \"%s\"", _i, k->policy,
		    k->parts[0], cnt->key);
		ck_assert_msg(strstr(why, k->why) != NULL, "case %d: why \"%s\", want \"%s\"",
		    _i, why, k->why);
	}
	free(cnt);
}
END_TEST

/*
 * The operator's spelling and the MTA's spelling of one mailbox give one
 * key: the session canonicalises what the MTA sends, count() keys it; the
 * tool canonicalises what the operator types.
 */
START_TEST(test_same_key_as_daemon)
{
	static const char *const spellings[] = {
		"alice@example.org", "Alice@Example.ORG", "ALICE@EXAMPLE.ORG.",
		"\"alice\"@example.org", "\"Alice\"@Example.Org..", "@a.example,@b.example:alice@example.org",
		"alice+tag@example.org", "\"alice+tag\"@EXAMPLE.org", "\"al ice\"@example.org",
		"\"al\\\"ice\"@example.org", "al\\ice@example.org", "bob@[192.0.2.1]",
		"bob@[IPv6:2001:DB8::1]", "\"\"@example.org", "<>",
	};
	const char *names[] = { "rl-sender", "rl-sender-noext" };

	for (size_t i = 0; i < sizeof(spellings) / sizeof(spellings[0]); i++) {
		for (size_t j = 0; j < 2; j++) {
			const struct cfg_policy *p = policy(names[j]);
			struct session *s = session_new(c);
			struct policy_count *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
			struct policy_msg m = { "192.0.2.1", "mx", "", "r@example.net", "", 0,
			    false, 0, 0 };
			char mail[300], why[512] = "";
			bool counted;
			int rc;

			ck_assert_ptr_nonnull(s);
			ck_assert_ptr_nonnull(a);
			ck_assert_ptr_nonnull(b);
			snprintf(mail, sizeof(mail), "<%s>", spellings[i]);
			if (strcmp(spellings[i], "<>") == 0)
				snprintf(mail, sizeof(mail), "<>");
			session_msg_start(s, mail, NULL, NULL);
			m.sender = s->msg.sender;
			counted = p->type->count(p->settings, POLICY_RCPT, &m, a);
			rc = p->type->key_of(p->settings, &spellings[i], 1, b, why, sizeof(why));
			ck_assert_msg(counted && rc == 0, "%s %s: counted %d, key_of %d (%s)",
			    names[j], spellings[i], counted, rc, why);
			ck_assert_msg(a->keylen == b->keylen && memcmp(a->key, b->key, a->keylen) == 0,
			    "%s %s: the daemon counts \"%s\", the tool names \"%s\"", names[j],
			    spellings[i], a->key, b->key);
			free(a);
			free(b);
			session_free(s);
		}
	}
}
END_TEST

/* ---- live_entry */

struct entry_case {
	const char *policy, *entry;
	const char *want;          /* the member, or NULL for an error ... */
	const char *why;           /* ... whose text contains this */
};

static const struct entry_case entry_cases[] = {
	{ "b-sender", "Spam@Bad.Example.", "spam@bad.example", NULL },
	{ "b-sender", "\"spam\"@bad.example", "spam@bad.example", NULL },
	{ "b-sender", "\"John Doe\"@Example.com", "john doe@example.com", NULL },
	{ "b-sender", "@Bad.Example", "@bad.example", NULL },
	{ "b-sender", ".Bad.Example.", ".bad.example", NULL },
	{ "b-sender", "<>", "<>", NULL },
	{ "b-sender", "bad.example", NULL, "" },
	{ "b-sender", "/spam.*/i", NULL, "regular expressions are not looked up" },
	{ "b-sdomain", "Bad.Example", "bad.example", NULL },
	{ "b-sdomain", "@Bad.Example", "@bad.example", NULL },
	{ "b-sdomain", ".Bad.Example", ".bad.example", NULL },
	{ "b-client", "192.0.2.7", "192.0.2.7", NULL },
	{ "b-client", "192.0.2.0/24", "192.0.2.0/24", NULL },
	{ "b-client", "::ffff:192.0.2.7", "192.0.2.7", NULL },
	{ "b-client", "2001:DB8:0::/32", "2001:db8::/32", NULL },
	{ "b-client", "2001:db8::0001", "2001:db8::1", NULL },
	{ "b-client", "192.0.2.7/24", NULL, "host bits" },
	{ "b-client", "mail.example.org", NULL, "" },
	{ "b-helo", "MX.Example.COM.", "mx.example.com", NULL },
	{ "b-helo", ".Example.COM", ".example.com", NULL },
	{ "b-sasl", "Alice", "alice", NULL },
	{ "b-rcpt", "Postmaster@Example.NET", "postmaster@example.net", NULL },
	{ "b-rcpt", ".example.net", ".example.net", NULL },
	{ "b-static", "x@example.org", NULL, "has no live list" },
};

START_TEST(test_live_entry)
{
	const struct entry_case *e = &entry_cases[_i];
	const struct cfg_policy *p = policy(e->policy);
	char out[2048] = "", why[512] = "";
	int rc = p->type->live_entry(p->settings, e->entry, out, sizeof(out), why, sizeof(why));

	if (e->want != NULL) {
		ck_assert_msg(rc == 0, "case %d (%s %s): refused: %s", _i, e->policy, e->entry, why);
		ck_assert_msg(strcmp(out, e->want) == 0, "case %d (%s %s): \"%s\", want \"%s\"",
		    _i, e->policy, e->entry, out, e->want);
	} else {
		ck_assert_msg(rc == -1, "case %d (%s %s): accepted as \"%s\"", _i, e->policy,
		    e->entry, out);
		ck_assert_msg(strstr(why, e->why) != NULL && why[0] != '\0',
		    "case %d: why \"%s\", want \"%s\"", _i, why, e->why);
	}
}
END_TEST

static Suite *
ctl_suite(void)
{
	Suite *s = suite_create("ctl");
	TCase *tc = tcase_create("words");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_key_of, 0, (int)(sizeof(key_cases) / sizeof(key_cases[0])));
	tcase_add_test(tc, test_same_key_as_daemon);
	tcase_add_loop_test(tc, test_live_entry, 0,
	    (int)(sizeof(entry_cases) / sizeof(entry_cases[0])));
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return tl_run(ctl_suite());
}
