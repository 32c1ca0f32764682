/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_live - live block and allow lists: the `redis = true` setting of
 * the block policy type (policies/block.c) and its lookups in the sorted
 * set <prefix>block:<policy>, made by the engine in the stage's one script
 * call (milter/limiter.c), against a real, private Redis.
 *
 * Covered: the members looked up for every match kind (most specific
 * first, lowercased, networks of every prefix length); permanent,
 * temporary and expired entries and their removal; client networks in
 * both families; the static list deciding without Redis and the live list
 * following on_redis_error when Redis is unreachable; allow lists before
 * block lists across the two kinds; dry run; one script call per stage for
 * every live list and rate limit of the stage; hostile values.
 *
 * Redis is changed and read with redis-cli, never through the code under
 * test.  Every case uses its own key prefix.
 */
#include "config.h"

#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "milter/cfg.h"
#include "milter/engine.h"
#include "milter/session.h"
#include "milter/stats.h"
#include "tests/testlib.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const char *redis_sock;     /* the private Redis, set by main() */
static char prefix[64];            /* this case's key prefix */

static void
new_prefix(void)
{
	static unsigned n;

	snprintf(prefix, sizeof(prefix), "live%ld.%u:", (long)getpid(), n++);
}

/* Config text: the Redis head (address addr, or the private Redis) and body. */
static struct cfg *
load(const char *label, const char *addr, const char *on_error, const char *body)
{
	char text[8192];

	snprintf(text, sizeof(text), "redis = { address = \"%s%s\"; prefix = \"%s\"; "
	    "timeout = \"200ms\"; };\non_redis_error = \"%s\";\n%s",
	    addr != NULL ? "" : "unix:", addr != NULL ? addr : redis_sock, prefix,
	    on_error, body);
	return tl_load_config(label, text);
}

/* ---- the members each match kind looks up */

static const struct {
	const char *label, *match, *value;
	const char *first;        /* the first members, joined with '|' */
	size_t n;                 /* how many there are */
	const char *also;         /* one more member that must be among them */
} member_cases[] = {
	{ "sender", "sender", "Alice@Mail.Example.COM.",
	  "alice@mail.example.com|@mail.example.com|.mail.example.com|.example.com|.com",
	  5, NULL },
	{ "null sender", "sender", "", "<>", 1, NULL },
	{ "null sender, rcpt", "rcpt", "", "", 0, NULL },
	{ "rcpt", "rcpt", "bob@b.C", "bob@b.c|@b.c|.b.c|.c", 4, NULL },
	{ "quoted local part", "rcpt", "\"john doe\"@example.com",
	  "\"john doe\"@example.com|@example.com|.example.com|.com", 4, NULL },
	{ "no domain", "sender", "postmaster", "postmaster", 1, NULL },
	{ "empty domain", "sender", "user@", "user@", 1, NULL },
	{ "sender_domain", "sender_domain", "bob@Example.org",
	  "example.org|@example.org|.example.org|.org", 4, NULL },
	{ "rcpt_domain", "rcpt_domain", "x@a.b.c", "a.b.c|@a.b.c|.a.b.c|.b.c|.c", 5, NULL },
	{ "sender_domain, null sender", "sender_domain", "", "", 0, NULL },
	{ "helo", "helo", "MX.Example.com",
	  "mx.example.com|.mx.example.com|.example.com|.com", 4, NULL },
	{ "sasl_user with domain", "sasl_user", "Alice@Example.com",
	  "alice@example.com|.example.com|.com", 3, NULL },
	{ "sasl_user", "sasl_user", "alice", "alice|.alice", 2, NULL },
	{ "client IPv4", "client", "192.0.2.77",
	  "192.0.2.77|192.0.2.77/32|192.0.2.76/31|192.0.2.76/30|192.0.2.72/29",
	  34, "192.0.2.0/24" },
	{ "client IPv4, last", "client", "192.0.2.77", NULL, 34, "0.0.0.0/0" },
	{ "client IPv4-mapped", "client", "::ffff:192.0.2.77",
	  "192.0.2.77|192.0.2.77/32", 34, "192.0.0.0/16" },
	{ "client IPv6", "client", "IPv6:2001:DB8::1",
	  "2001:db8::1|2001:db8::1/128|2001:db8::/127", 130, "2001:db8::/32" },
	{ "client IPv6, last", "client", "2001:db8::1", NULL, 130, "::/0" },
	{ "client not an address", "client", "unknown", "", 0, NULL },
};

START_TEST(members)
{
	const char *label = member_cases[_i].label;
	char body[512], joined[4096] = "";
	struct policy_msg m = { "", "", "", "", "", 0, false, 0, 0 };
	struct policy_members *out = malloc(sizeof(*out));
	const struct cfg_policy *p;
	struct cfg *c;
	size_t n, k;

	ck_assert(out != NULL);
	new_prefix();
	snprintf(body, sizeof(body), "policies = ( { name = \"l\"; type = \"block\"; "
	    "match = \"%s\"; redis = true; action = \"reject\"; } );\n",
	    member_cases[_i].match);
	c = load(label, NULL, "accept", body);
	p = &c->policies[0];
	ck_assert_msg(p->live && c->nlive == 1, "%s: the policy is not live", label);
	m.sender = m.rcpt = m.client_ip = m.helo = m.sasl_user = member_cases[_i].value;
	n = p->type->members(p->settings, POLICY_RCPT, &m, out);
	ck_assert_msg(n == out->n && n == member_cases[_i].n, "%s: %zu members, want %zu",
	    label, n, member_cases[_i].n);
	for (k = 0; member_cases[_i].first != NULL && k < n; k++) {
		size_t used = strlen(joined);
		snprintf(joined + used, sizeof(joined) - used, "%s%.*s", k ? "|" : "",
		    (int)out->len[k], out->v[k]);
		if (strlen(joined) >= strlen(member_cases[_i].first))
			break;
	}
	if (member_cases[_i].first != NULL)
		ck_assert_msg(strcmp(joined, member_cases[_i].first) == 0,
		    "%s: members start \"%s\", want \"%s\"", label, joined,
		    member_cases[_i].first);
	if (member_cases[_i].also != NULL) {
		const char *also = member_cases[_i].also;
		for (k = 0; k < n; k++)
			if (out->len[k] == strlen(also) && memcmp(out->v[k], also, out->len[k]) == 0)
				break;
		ck_assert_msg(k < n, "%s: \"%s\" is not looked up", label, also);
		if (strcmp(also, "0.0.0.0/0") == 0 || strcmp(also, "::/0") == 0)
			ck_assert_msg(k == n - 1, "%s: %s is not the last member", label, also);
	}
	free(out);
	cfg_unref(c);
	stats_reset();
}
END_TEST

START_TEST(members_of_huge_value)
{
	char *big = malloc(2000), body[512];
	struct policy_msg m = { "", "", "", "", "", 0, false, 0, 0 };
	struct policy_members *out = malloc(sizeof(*out));
	struct cfg *c;

	ck_assert(big != NULL && out != NULL);
	memset(big, 'a', 1999);
	big[1999] = '\0';
	big[1500] = '@';
	new_prefix();
	snprintf(body, sizeof(body), "policies = ( { name = \"l\"; type = \"block\"; "
	    "match = \"sender\"; redis = true; action = \"reject\"; } );\n");
	c = load("huge", NULL, "accept", body);
	m.sender = big;
	ck_assert_msg(c->policies[0].type->members(c->policies[0].settings, POLICY_MAIL,
	    &m, out) == 0, "a 1999-octet sender is looked up");
	big[1000] = '\0';          /* 1000 octets: looked up, within the buffer */
	big[900] = '@';
	ck_assert_msg(c->policies[0].type->members(c->policies[0].settings, POLICY_MAIL,
	    &m, out) == 3, "a 1000-octet sender: %zu members", out->n);
	free(big);
	free(out);
	cfg_unref(c);
	stats_reset();
}
END_TEST

/* ---- through the engine, against Redis */

static long long
now_s(void)
{
	return (long long)time(NULL);
}

/* ZADD <prefix>block:<policy> score member */
static void
zadd(const char *policy, const char *score, const char *member)
{
	const char *r = tl_redis_command("ZADD '%sblock:%s' %s '%s'", prefix, policy,
	    score, member);
	ck_assert_msg(strcmp(r, "1") == 0 || strcmp(r, "0") == 0, "ZADD %s %s: %s",
	    policy, member, r);
}

static long
zcard(const char *policy)
{
	return atol(tl_redis_command("ZCARD '%sblock:%s'", prefix, policy));
}

/* A fresh session's verdict for one message: connect, MAIL, one RCPT. */
struct msg {
	const char *client, *sender, *rcpt;
};

static enum policy_action
verdict(const char *label, struct cfg *c, const struct msg *msg, const char **by)
{
	struct session *s = session_new(c);
	struct engine_verdict v;
	enum policy_action got = POLICY_NONE;
	enum policy_stage stages[] = { POLICY_CONNECT, POLICY_MAIL, POLICY_RCPT };

	ck_assert_msg(s != NULL, "%s: session_new", label);
	tl_set_client(label, s, msg->client != NULL ? msg->client : "198.51.100.7");
	*by = NULL;
	for (size_t i = 0; i < NELEM(stages) && got == POLICY_NONE; i++) {
		if (stages[i] == POLICY_MAIL)
			session_msg_start(s, msg->sender != NULL ? msg->sender : "a@example.org",
			    NULL, NULL);
		if (stages[i] == POLICY_RCPT)
			session_set_rcpt(s, msg->rcpt != NULL ? msg->rcpt : "r@example.net");
		memset(&v, 0, sizeof(v));
		got = engine_run(s, stages[i], &v);
		if (got != POLICY_NONE && v.policy != NULL)
			*by = v.policy->name;
	}
	engine_release(s);
	session_free(s);
	return got;
}

static void
expect(const char *label, struct cfg *c, const struct msg *msg, enum policy_action want,
    const char *want_by)
{
	const char *by;
	enum policy_action got = verdict(label, c, msg, &by);

	ck_assert_msg(got == want, "%s: %s/%s/%s: %s, want %s", label,
	    msg->client ? msg->client : "-", msg->sender ? msg->sender : "-",
	    msg->rcpt ? msg->rcpt : "-", policy_action_name(got), policy_action_name(want));
	if (want_by != NULL)
		ck_assert_msg(by != NULL && strcmp(by, want_by) == 0, "%s: decided by %s, "
		    "want %s", label, by ? by : "(none)", want_by);
}

#define SENDER_BLOCK(name, extra) \
	"{ name = \"" name "\"; type = \"block\"; match = \"sender\"; redis = true; " \
	"action = \"reject\"; " extra " }"

START_TEST(permanent_entry_and_removal)
{
	struct cfg *c;
	struct msg spam = { NULL, "x@Spam.Example", NULL };
	struct msg near = { NULL, "x@notspam.example", NULL };
	struct msg sub = { NULL, "y@mx.spam.example", NULL };

	new_prefix();
	c = load("permanent", NULL, "accept", "policies = ( " SENDER_BLOCK("bad", "") " );\n");
	expect("empty set", c, &spam, POLICY_NONE, NULL);
	zadd("bad", "+inf", "@spam.example");
	expect("added", c, &spam, POLICY_REJECT, "bad");
	expect("near miss", c, &near, POLICY_NONE, NULL);
	expect("subdomain of @", c, &sub, POLICY_NONE, NULL);
	zadd("bad", "+inf", ".spam.example");
	expect("subdomain of .", c, &sub, POLICY_REJECT, "bad");
	expect("near miss of .", c, &near, POLICY_NONE, NULL);
	tl_redis_command("ZREM '%sblock:bad' @spam.example .spam.example", prefix);
	expect("removed", c, &spam, POLICY_NONE, NULL);
	expect("removed .", c, &sub, POLICY_NONE, NULL);
	tl_assert_count("permanent", "bad", STATS_REJECTED, 2);
	tl_assert_count("permanent", "bad", STATS_REDIS_ERRORS, 0);
	cfg_unref(c);
	stats_reset();
}
END_TEST

START_TEST(expiry)
{
	struct cfg *c;
	struct msg m = { NULL, "temp@example.com", NULL };
	char score[32];

	new_prefix();
	c = load("expiry", NULL, "accept", "policies = ( " SENDER_BLOCK("t", "") " );\n");
	snprintf(score, sizeof(score), "%lld", now_s() - 5);
	zadd("t", score, "temp@example.com");
	expect("expired 5 s ago", c, &m, POLICY_NONE, NULL);
	ck_assert_msg(zcard("t") == 0, "the expired entry was not pruned: ZCARD %ld",
	    zcard("t"));
	/* Until two seconds from now: applies, then stops applying. */
	snprintf(score, sizeof(score), "%lld", now_s() + 2);
	zadd("t", score, "temp@example.com");
	zadd("t", "+inf", "other@example.com");
	expect("before its expiry", c, &m, POLICY_REJECT, "t");
	sleep(3);
	expect("after its expiry", c, &m, POLICY_NONE, NULL);
	ck_assert_msg(zcard("t") == 1, "ZCARD %ld after expiry, want 1 (the permanent "
	    "entry)", zcard("t"));
	cfg_unref(c);
	stats_reset();
}
END_TEST

START_TEST(client_networks)
{
	struct cfg *c;
	static const struct {
		const char *client;
		enum policy_action want;
	} cases[] = {
		{ "192.0.2.200", POLICY_REJECT }, { "192.0.2.0", POLICY_REJECT },
		{ "192.0.3.0", POLICY_NONE }, { "192.0.1.255", POLICY_NONE },
		{ "::ffff:192.0.2.9", POLICY_REJECT }, { "198.51.100.9", POLICY_REJECT },
		{ "198.51.100.10", POLICY_NONE },
		{ "2001:db8:1::5", POLICY_REJECT }, { "2001:DB8::", POLICY_REJECT },
		{ "2001:db9::1", POLICY_NONE }, { "2001:db7:ffff::1", POLICY_NONE },
	};

	new_prefix();
	c = load("client", NULL, "accept", "policies = ( { name = \"nets\"; "
	    "type = \"block\"; match = \"client\"; redis = true; action = \"reject\"; } );\n");
	zadd("nets", "+inf", "192.0.2.0/24");
	zadd("nets", "+inf", "198.51.100.9");
	zadd("nets", "+inf", "2001:db8::/32");
	for (size_t i = 0; i < NELEM(cases); i++) {
		struct msg m = { cases[i].client, NULL, NULL };
		expect(cases[i].client, c, &m, cases[i].want, NULL);
	}
	cfg_unref(c);
	stats_reset();
}
END_TEST

/* Redis unreachable: the static list decides; the live one follows
 * on_redis_error (accept: no verdict; tempfail: the Redis-error reply). */
START_TEST(redis_down)
{
	static const char *const modes[] = { "accept", "tempfail" };
	struct msg listed = { NULL, "static@example.com", NULL };
	struct msg other = { NULL, "live@example.com", NULL };

	for (size_t i = 0; i < NELEM(modes); i++) {
		struct cfg *c;
		new_prefix();
		c = load(modes[i], "unix:/nonexistent/redis.sock", modes[i], "policies = ( "
		    SENDER_BLOCK("mixed", "entries = [ \"static@example.com\" ];") " );\n");
		expect(modes[i], c, &listed, POLICY_REJECT, "mixed");
		expect(modes[i], c, &other, i == 0 ? POLICY_NONE : POLICY_TEMPFAIL,
		    i == 0 ? NULL : "mixed");
		tl_assert_count(modes[i], "mixed", STATS_REDIS_ERRORS, 1);
		cfg_unref(c);
		stats_reset();
	}
}
END_TEST

/* Allow lists before block lists, static and live in either role. */
START_TEST(allow_before_block)
{
	struct cfg *c;
	struct msg trusted = { "192.0.2.10", "blocked@example.com", NULL };
	struct msg stranger = { "192.0.2.11", "blocked@example.com", NULL };
	struct msg friend = { "192.0.2.11", "friend@example.com", "r@example.net" };

	new_prefix();
	c = load("allow", NULL, "accept", "policies = (\n"
	    "{ name = \"relays\"; type = \"block\"; match = \"client\"; redis = true; "
	    "action = \"accept\"; },\n"
	    "{ name = \"friends\"; type = \"block\"; match = \"sender\"; redis = true; "
	    "action = \"accept\"; },\n"
	    "{ name = \"blocked\"; type = \"block\"; match = \"sender\"; "
	    "entries = [ \"blocked@example.com\" ]; action = \"reject\"; },\n"
	    "{ name = \"no-rcpt\"; type = \"block\"; match = \"rcpt_domain\"; redis = true; "
	    "action = \"reject\"; }\n);\n");
	expect("no live entries", c, &trusted, POLICY_REJECT, "blocked");
	zadd("relays", "+inf", "192.0.2.10");
	expect("trusted client", c, &trusted, POLICY_ACCEPT, "relays");
	expect("other client", c, &stranger, POLICY_REJECT, "blocked");
	zadd("no-rcpt", "+inf", "example.net");
	expect("rcpt domain blocked", c, &friend, POLICY_REJECT, "no-rcpt");
	zadd("friends", "+inf", "@example.com");
	/* The live allow list at MAIL comes before the static block list and
	 * ends the message's evaluation: no RCPT policy runs. */
	expect("friend's domain", c, &friend, POLICY_ACCEPT, "friends");
	expect("friend's domain, statically blocked", c, &stranger, POLICY_ACCEPT, "friends");
	cfg_unref(c);
	stats_reset();
}
END_TEST

START_TEST(dry_run)
{
	struct cfg *c;
	struct msg m = { NULL, "x@example.com", NULL };

	new_prefix();
	c = load("dry", NULL, "accept", "policies = ( "
	    SENDER_BLOCK("d", "dry_run = true;") " );\n");
	zadd("d", "+inf", "x@example.com");
	expect("dry run", c, &m, POLICY_NONE, NULL);
	tl_assert_count("dry", "d", STATS_DRY_RUN, 1);
	tl_assert_count("dry", "d", STATS_REJECTED, 0);
	cfg_unref(c);
	stats_reset();
}
END_TEST

/* calls of EVAL + EVALSHA so far, from INFO commandstats */
static long
script_calls(void)
{
	char cmd[600], line[512];
	long total = 0;
	FILE *fp;

	snprintf(cmd, sizeof(cmd), "redis-cli -s %s INFO commandstats", redis_sock);
	fp = popen(cmd, "r");
	ck_assert(fp != NULL);
	while (fgets(line, sizeof(line), fp) != NULL) {
		const char *calls = strstr(line, "calls=");
		if (calls != NULL && (strncmp(line, "cmdstat_evalsha:", 16) == 0 ||
		    strncmp(line, "cmdstat_eval:", 13) == 0))
			total += atol(calls + 6);
	}
	pclose(fp);
	return total;
}

/* Two live lists and a rate limit at RCPT, one live list at MAIL: one
 * script call per stage, and the lists still decide in file order. */
START_TEST(one_call_per_stage)
{
	struct cfg *c;
	struct msg m = { NULL, "s@example.org", "r@example.net" };
	struct msg hit = { NULL, "s@example.org", "r@blocked.example" };
	long before, after;

	new_prefix();
	c = load("calls", NULL, "accept", "policies = (\n"
	    SENDER_BLOCK("senders", "") ",\n"
	    "{ name = \"rcpts\"; type = \"block\"; match = \"rcpt\"; redis = true; "
	    "action = \"reject\"; },\n"
	    "{ name = \"per-sender\"; type = \"ratelimit\"; key = \"sender\"; "
	    "count = \"messages\"; limit = 100; window = \"1h\"; action = \"tempfail\"; },\n"
	    "{ name = \"domains\"; type = \"block\"; match = \"rcpt_domain\"; redis = true; "
	    "action = \"reject\"; }\n);\n");
	expect("warm-up", c, &m, POLICY_NONE, NULL);    /* loads the script */
	before = script_calls();
	expect("passes", c, &m, POLICY_NONE, NULL);
	after = script_calls();
	/* MAIL's live list is looked up in the first RCPT's call
	 * (delay_mail_lookups, on by default). */
	ck_assert_msg(after - before == 2, "%ld script calls for MAIL and RCPT "
	    "(+ the give-back at release), want 2", after - before);
	zadd("domains", "+inf", "blocked.example");
	expect("rcpt domain", c, &hit, POLICY_REJECT, "domains");
	/* The refused RCPT left nothing counted. */
	ck_assert_msg(strcmp(tl_redis_command("EXISTS '%srl:per-sender:s@example.org'",
	    prefix), "0") == 0, "the refused message is counted");
	cfg_unref(c);
	stats_reset();
}
END_TEST

/* ---- delay_mail_lookups: MAIL's live lists looked up with the first RCPT */

#define DELAY_BODY(delay) \
	"delay_mail_lookups = " delay ";\npolicies = (\n" \
	SENDER_BLOCK("senders", "reply = \"550 5.7.1 Sender ${sender} refused\";") ",\n" \
	"{ name = \"per-sender\"; type = \"ratelimit\"; key = \"sender\"; " \
	"count = \"recipients\"; limit = 100; window = \"1h\"; action = \"tempfail\"; }\n);\n"

static struct session *
mail_from(const char *label, struct cfg *c, const char *sender, const char *const *esmtp)
{
	struct session *s = session_new(c);
	struct engine_verdict v;

	ck_assert_msg(s != NULL, "%s: session_new", label);
	tl_set_client(label, s, "198.51.100.7");
	memset(&v, 0, sizeof(v));
	ck_assert_msg(engine_run(s, POLICY_CONNECT, &v) == POLICY_NONE, "%s: connect", label);
	session_msg_start(s, sender, esmtp, NULL);
	return s;
}

static enum policy_action
rcpt_to(struct session *s, const char *rcpt, struct engine_verdict *v)
{
	session_set_rcpt(s, rcpt);
	memset(v, 0, sizeof(*v));
	return engine_run(s, POLICY_RCPT, v);
}

/*
 * A listed sender: MAIL passes; the first RCPT and every later one get the
 * list's reply, decided and counted once, and nothing is reserved.  One
 * script call for MAIL and RCPT together.  delay_mail_lookups = false:
 * refused at MAIL, as before.
 */
START_TEST(delayed_mail_refusal)
{
	struct cfg *c;
	struct session *s;
	struct engine_verdict v;
	long before;
	char line[300];

	new_prefix();
	c = load("delay", NULL, "accept", DELAY_BODY("true"));
	ck_assert_msg(c->delay_mail, "delay_mail is not in force");
	zadd("senders", "+inf", "spam@example.org");

	/* A clean sender: one call for MAIL and the first RCPT. */
	s = mail_from("clean", c, "ok@example.org", NULL);
	before = script_calls();
	memset(&v, 0, sizeof(v));
	ck_assert(engine_run(s, POLICY_MAIL, &v) == POLICY_NONE);
	ck_assert_msg(script_calls() == before, "MAIL made a call: it was not delayed");
	ck_assert(s->msg.delayed);
	ck_assert(rcpt_to(s, "r1@example.net", &v) == POLICY_NONE);
	ck_assert_msg(script_calls() - before == 1, "%ld calls for MAIL and RCPT, want 1",
	    script_calls() - before);
	ck_assert(!s->msg.delayed);
	ck_assert(rcpt_to(s, "r2@example.net", &v) == POLICY_NONE);
	ck_assert_str_eq(tl_redis_command("HVALS '%srl:per-sender:ok@example.org'", prefix), "2");
	tl_assert_count("clean", "senders", STATS_CHECKED, 1);
	tl_assert_count("clean", "per-sender", STATS_CHECKED, 2);
	engine_release(s);
	session_free(s);

	/* The listed sender, any spelling. */
	s = mail_from("listed", c, "<Spam@Example.ORG>", NULL);
	memset(&v, 0, sizeof(v));
	ck_assert(engine_run(s, POLICY_MAIL, &v) == POLICY_NONE);
	for (int i = 0; i < 3; i++) {
		snprintf(line, sizeof(line), "r%d@example.net", i);
		ck_assert_msg(rcpt_to(s, line, &v) == POLICY_REJECT, "RCPT %d not refused", i);
		ck_assert(v.policy != NULL && strcmp(v.policy->name, "senders") == 0);
		ck_assert_str_eq(v.reply.code, "550");
		ck_assert_uint_eq(v.reply.nlines, 1);
		ck_assert_str_eq(v.reply.lines[0], "Sender spam@example.org refused");
	}
	/* Counts since the clean message: one more check, one refusal. */
	tl_assert_count("listed", "senders", STATS_CHECKED, 2);
	tl_assert_count("listed", "senders", STATS_REJECTED, 1);
	tl_assert_count("listed", "per-sender", STATS_CHECKED, 2);
	engine_release(s);
	session_free(s);
	ck_assert_str_eq(tl_redis_command("EXISTS '%srl:per-sender:spam@example.org'",
	    prefix), "0");
	/* The next message of another sender is not refused by it. */
	s = mail_from("next", c, "ok2@example.org", NULL);
	memset(&v, 0, sizeof(v));
	ck_assert(engine_run(s, POLICY_MAIL, &v) == POLICY_NONE);
	ck_assert(rcpt_to(s, "r@example.net", &v) == POLICY_NONE);
	engine_release(s);
	session_free(s);
	cfg_unref(c);
	stats_reset();

	c = load("no delay", NULL, "accept", DELAY_BODY("false"));
	ck_assert(!c->delay_mail);
	s = mail_from("no delay", c, "spam@example.org", NULL);
	before = script_calls();
	memset(&v, 0, sizeof(v));
	ck_assert(engine_run(s, POLICY_MAIL, &v) == POLICY_REJECT);
	ck_assert_msg(script_calls() - before == 1, "MAIL made no call");
	session_free(s);
	cfg_unref(c);
	stats_reset();
}
END_TEST

/*
 * When MAIL cannot wait: no policy decides at RCPT (the RCPT callback
 * could not refuse), or something in memory decides MAIL already (here a
 * static list after the live one).
 */
START_TEST(mail_not_delayed)
{
	struct cfg *c;
	struct session *s;
	struct engine_verdict v;

	new_prefix();
	c = load("alone", NULL, "accept", "policies = ( " SENDER_BLOCK("senders", "") " );\n");
	ck_assert_msg(!c->delay_mail, "no policy at RCPT, yet MAIL is delayed");
	zadd("senders", "+inf", "spam@example.org");
	s = mail_from("alone", c, "spam@example.org", NULL);
	memset(&v, 0, sizeof(v));
	ck_assert(engine_run(s, POLICY_MAIL, &v) == POLICY_REJECT);
	session_free(s);
	cfg_unref(c);
	stats_reset();

	c = load("static", NULL, "accept", "policies = (\n" SENDER_BLOCK("senders", "") ",\n"
	    "{ name = \"static\"; type = \"block\"; match = \"sender\"; "
	    "entries = [ \"bad@example.org\", \"spam@example.org\" ]; action = \"reject\"; },\n"
	    "{ name = \"rcpts\"; type = \"recipients\"; max = 10; action = \"reject\"; }\n);\n");
	ck_assert(c->delay_mail);
	s = mail_from("static", c, "bad@example.org", NULL);
	memset(&v, 0, sizeof(v));
	ck_assert(engine_run(s, POLICY_MAIL, &v) == POLICY_REJECT);
	ck_assert_str_eq(v.policy->name, "static");
	ck_assert(!s->msg.delayed);
	session_free(s);
	/* ... and the live list, before it, still wins. */
	zadd("senders", "+inf", "spam@example.org");
	s = mail_from("static, listed", c, "spam@example.org", NULL);
	memset(&v, 0, sizeof(v));
	ck_assert(engine_run(s, POLICY_MAIL, &v) == POLICY_REJECT);
	ck_assert_str_eq(v.policy->name, "senders");
	session_free(s);
	cfg_unref(c);
	stats_reset();
}
END_TEST

/*
 * A delayed live allow list covers the whole message: no RCPT policy runs
 * and nothing is reserved; a delayed list that Redis cannot answer, with
 * on_redis_error = "tempfail", tempfails every recipient and reserves
 * nothing.
 */
START_TEST(delayed_mail_allow_and_failure)
{
	struct cfg *c;
	struct session *s;
	struct engine_verdict v;

	new_prefix();
	c = load("allow", NULL, "accept", "policies = (\n"
	    "{ name = \"friends\"; type = \"block\"; match = \"sender\"; redis = true; "
	    "action = \"accept\"; },\n"
	    "{ name = \"per-sender\"; type = \"ratelimit\"; key = \"sender\"; "
	    "count = \"recipients\"; limit = 1; window = \"1h\"; action = \"tempfail\"; }\n);\n");
	ck_assert(c->delay_mail);
	zadd("friends", "+inf", "@example.org");
	s = mail_from("friend", c, "f@example.org", NULL);
	memset(&v, 0, sizeof(v));
	ck_assert(engine_run(s, POLICY_MAIL, &v) == POLICY_NONE);
	ck_assert(rcpt_to(s, "r1@example.net", &v) == POLICY_ACCEPT);
	ck_assert_str_eq(v.policy->name, "friends");
	/* Over the limit of 1 were it counted. */
	ck_assert(rcpt_to(s, "r2@example.net", &v) == POLICY_NONE);
	ck_assert(rcpt_to(s, "r3@example.net", &v) == POLICY_NONE);
	memset(&v, 0, sizeof(v));
	ck_assert(engine_run(s, POLICY_EOM, &v) == POLICY_NONE);
	session_free(s);
	ck_assert_str_eq(tl_redis_command("EXISTS '%srl:per-sender:f@example.org'",
	    prefix), "0");
	tl_assert_count("friend", "friends", STATS_ACCEPTED, 1);
	tl_assert_count("friend", "per-sender", STATS_CHECKED, 0);
	cfg_unref(c);
	stats_reset();

	c = load("down", "unix:/nonexistent/redis.sock", "tempfail", DELAY_BODY("true"));
	s = mail_from("down", c, "x@example.org", NULL);
	memset(&v, 0, sizeof(v));
	ck_assert(engine_run(s, POLICY_MAIL, &v) == POLICY_NONE);
	ck_assert(rcpt_to(s, "r1@example.net", &v) == POLICY_TEMPFAIL);
	ck_assert_str_eq(v.reply.code, "451");
	ck_assert(rcpt_to(s, "r2@example.net", &v) == POLICY_TEMPFAIL);
	ck_assert_str_eq(v.policy->name, "senders");
	tl_assert_count("down", "senders", STATS_REDIS_ERRORS, 1);
	session_free(s);
	cfg_unref(c);
	stats_reset();
}
END_TEST

/* Values from the network go to Redis as arguments, byte for byte. */
START_TEST(hostile_values)
{
	struct cfg *c;
	static const char *const senders[] = {
		"a%s%n@example.com", "a\r\nQUIT\r\n@example.com", "'; FLUSHALL; '@x.example",
		"@@@", "a@[192.0.2.1]", "\"quoted\\\"\"@example.com", "a@.",
	};

	new_prefix();
	c = load("hostile", NULL, "accept", "policies = ( " SENDER_BLOCK("h", "") " );\n");
	zadd("h", "+inf", "@x.example");
	tl_redis_command("SET '%ssentinel' 1", prefix);
	for (size_t i = 0; i < NELEM(senders); i++) {
		struct msg m = { NULL, senders[i], NULL };
		expect(senders[i], c, &m, i == 2 ? POLICY_REJECT : POLICY_NONE, NULL);
	}
	ck_assert_msg(strcmp(tl_redis_command("GET '%ssentinel'", prefix), "1") == 0,
	    "a key vanished");
	cfg_unref(c);
	stats_reset();
}
END_TEST

/* A domain of 300 labels: the parent domains are looked up too. */
START_TEST(many_labels)
{
	struct cfg *c;
	char sender[1024], helo[1024];
	struct msg m = { NULL, sender, NULL };
	size_t n = 0;

	n += (size_t)snprintf(sender, sizeof(sender), "x@");
	for (int i = 0; i < 300; i++)
		n += (size_t)snprintf(sender + n, sizeof(sender) - n, "a.");
	snprintf(sender + n, sizeof(sender) - n, "bad.example");
	snprintf(helo, sizeof(helo), "%s", sender + 2);
	new_prefix();
	c = load("labels", NULL, "accept", "policies = ( " SENDER_BLOCK("s", "") ",\n"
	    "{ name = \"h\"; type = \"block\"; match = \"helo\"; redis = true; "
	    "action = \"reject\"; } );\n");
	zadd("s", "+inf", ".bad.example");
	expect("300 labels", c, &m, POLICY_REJECT, "s");
	{
		struct policy_members *out = malloc(sizeof(*out));
		struct policy_msg pm = { "", helo, "", "", "", 0, false, 0, 0 };
		const struct cfg_policy *p = &c->policies[1];
		ck_assert(out != NULL);
		ck_assert_msg(p->type->members(p->settings, POLICY_HELO, &pm, out) == 303,
		    "helo of 302 labels: %zu members, want 303", out->n);
		ck_assert_msg(out->len[302] == 8 && memcmp(out->v[302], ".example", 8) == 0,
		    "the last member is \"%.*s\", not .example", (int)out->len[302],
		    out->v[302]);
		free(out);
	}
	cfg_unref(c);
	stats_reset();
}
END_TEST

/* A live-list key of another type fails that policy alone: the rate limit
 * of the same stage still counts and refuses. */
START_TEST(wrong_type)
{
	struct cfg *c;
	struct msg m = { NULL, "s@example.org", "r@example.net" };

	new_prefix();
	c = load("type", NULL, "accept", "policies = (\n"
	    "{ name = \"domains\"; type = \"block\"; match = \"rcpt_domain\"; redis = true; "
	    "action = \"reject\"; },\n"
	    "{ name = \"one\"; type = \"ratelimit\"; key = \"sender\"; count = \"messages\"; "
	    "limit = 1; window = \"1h\"; action = \"tempfail\"; }\n);\n");
	tl_redis_command("SADD '%sblock:domains' example.net", prefix);
	{
		/* the first message is accepted and its unit confirmed */
		struct session *s = session_new(c);
		struct engine_verdict v;
		tl_set_client("type", s, "198.51.100.7");
		session_msg_start(s, "s@example.org", NULL, NULL);
		ck_assert(engine_run(s, POLICY_MAIL, &v) == POLICY_NONE);
		session_set_rcpt(s, "r@example.net");
		ck_assert_msg(engine_run(s, POLICY_RCPT, &v) == POLICY_NONE, "first message");
		ck_assert(engine_run(s, POLICY_EOM, &v) == POLICY_NONE);
		session_msg_reset(s);
		session_free(s);
	}
	expect("second message", c, &m, POLICY_TEMPFAIL, "one");
	tl_assert_count("type", "domains", STATS_REDIS_ERRORS, 2);
	cfg_unref(c);
	stats_reset();
}
END_TEST

/* Expired members are deleted a few at a time, never all at once. */
START_TEST(bounded_pruning)
{
	struct cfg *c;
	struct msg m = { NULL, "x@example.com", NULL };
	char score[32];

	new_prefix();
	c = load("prune", NULL, "accept", "policies = ( " SENDER_BLOCK("p", "") " );\n");
	snprintf(score, sizeof(score), "%lld", now_s() - 60);
	tl_redis_command("EVAL \"for i = 1, 100 do redis.call('ZADD', KEYS[1], ARGV[1], "
	    "'old' .. i .. '@example.com') end\" 1 '%sblock:p' %s", prefix, score);
	zadd("p", score, "x@example.com");
	ck_assert_msg(zcard("p") == 101, "ZCARD %ld before, want 101", zcard("p"));
	expect("expired", c, &m, POLICY_NONE, NULL);
	ck_assert_msg(zcard("p") == 84, "ZCARD %ld after one lookup, want 84 (16 others "
	    "and the one looked up deleted)", zcard("p"));
	cfg_unref(c);
	stats_reset();
}
END_TEST

/* A live allow list before a rate limit at the same stage: what it lets
 * through is not counted. */
START_TEST(allow_before_ratelimit)
{
	struct cfg *c;
	struct msg trusted = { NULL, "s@example.org", "boss@example.net" };

	new_prefix();
	c = load("allowrl", NULL, "accept", "policies = (\n"
	    "{ name = \"vip\"; type = \"block\"; match = \"rcpt\"; redis = true; "
	    "action = \"accept\"; },\n"
	    "{ name = \"one\"; type = \"ratelimit\"; key = \"sender\"; count = \"recipients\"; "
	    "limit = 1; window = \"1h\"; action = \"tempfail\"; }\n);\n");
	zadd("vip", "+inf", "boss@example.net");
	for (int i = 0; i < 3; i++)
		expect("trusted recipient", c, &trusted, POLICY_ACCEPT, "vip");
	ck_assert_msg(strcmp(tl_redis_command("EXISTS '%srl:one:s@example.org'", prefix),
	    "0") == 0, "an allowed recipient was counted");
	tl_assert_count("allowrl", "one", STATS_CHECKED, 0);
	cfg_unref(c);
	stats_reset();
}
END_TEST

/*
 * A live list that cannot answer (not a sorted set) for a policy that then
 * tempfails refuses the stage: a rate limit after it in the same call must
 * not keep a unit for an attempt that was refused.
 */
START_TEST(failed_list_leaks_no_unit)
{
	struct cfg *c;

	new_prefix();
	c = load("leak", NULL, "tempfail", "policies = (\n"
	    "{ name = \"domains\"; type = \"block\"; match = \"rcpt_domain\"; redis = true; "
	    "action = \"reject\"; },\n"
	    "{ name = \"msgs\"; type = \"ratelimit\"; key = \"sender\"; count = \"messages\"; "
	    "limit = 5; window = \"1h\"; action = \"tempfail\"; },\n"
	    "{ name = \"rcpts\"; type = \"ratelimit\"; key = \"sender\"; count = \"recipients\"; "
	    "limit = 5; window = \"1h\"; action = \"tempfail\"; }\n);\n");
	tl_redis_command("SADD '%sblock:domains' example.net", prefix);
	{
		struct session *s = session_new(c);
		struct engine_verdict v;

		tl_set_client("leak", s, "198.51.100.7");
		session_msg_start(s, "s@example.org", NULL, NULL);
		ck_assert(engine_run(s, POLICY_MAIL, &v) == POLICY_NONE);
		session_set_rcpt(s, "r@example.net");
		ck_assert_msg(engine_run(s, POLICY_RCPT, &v) == POLICY_TEMPFAIL &&
		    v.policy != NULL && strcmp(v.policy->name, "domains") == 0,
		    "the failed list did not tempfail the recipient");
		/* Before the give-back of the abandoned message: nothing held. */
		ck_assert_msg(s->msg.nresv == 0, "%zu units reserved for a refused recipient",
		    s->msg.nresv);
		ck_assert_msg(strcmp(tl_redis_command("EXISTS '%srl:msgs:s@example.org' "
		    "'%srl:rcpts:s@example.org'", prefix, prefix), "0") == 0,
		    "a rate limit after the failed list counted the refused attempt");
		engine_release(s);
		session_free(s);
	}
	cfg_unref(c);
	stats_reset();
}
END_TEST

/*
 * An accept at RCPT covers that recipient: recipient-level limits after it
 * skip it, message-level ones still count the message and may refuse it.
 */
START_TEST(allowed_rcpt_message_limit)
{
	struct cfg *c;
	struct session *s;
	struct engine_verdict v;

	new_prefix();
	c = load("allowmsg", NULL, "accept", "policies = (\n"
	    "{ name = \"vip\"; type = \"block\"; match = \"rcpt\"; redis = true; "
	    "action = \"accept\"; },\n"
	    "{ name = \"rcpts\"; type = \"ratelimit\"; key = \"sender\"; count = \"recipients\"; "
	    "limit = 1; window = \"1h\"; action = \"tempfail\"; },\n"
	    "{ name = \"msgs\"; type = \"ratelimit\"; key = \"sender\"; count = \"messages\"; "
	    "limit = 1; window = \"1h\"; action = \"tempfail\"; }\n);\n");
	zadd("vip", "+inf", "boss@example.net");
	for (int k = 0; k < 2; k++) {
		s = session_new(c);
		tl_set_client("allowmsg", s, "198.51.100.7");
		session_msg_start(s, "s@example.org", NULL, NULL);
		ck_assert(engine_run(s, POLICY_MAIL, &v) == POLICY_NONE);
		session_set_rcpt(s, "Boss@Example.NET.");
		memset(&v, 0, sizeof(v));
		if (k == 0) {
			ck_assert_msg(engine_run(s, POLICY_RCPT, &v) == POLICY_ACCEPT &&
			    strcmp(v.policy->name, "vip") == 0, "first message: boss not "
			    "accepted by vip");
			ck_assert_msg(strcmp(tl_redis_command("EXISTS '%srl:msgs:s@example.org'",
			    prefix), "1") == 0, "the message limit did not count the message");
			ck_assert_msg(strcmp(tl_redis_command("EXISTS '%srl:rcpts:s@example.org'",
			    prefix), "0") == 0, "the recipient limit counted an allowed recipient");
			ck_assert(engine_run(s, POLICY_EOM, &v) == POLICY_NONE);
		} else {
			ck_assert_msg(engine_run(s, POLICY_RCPT, &v) == POLICY_TEMPFAIL &&
			    strcmp(v.policy->name, "msgs") == 0, "second message: the message "
			    "limit did not refuse it (%s)", policy_action_name(v.action));
			engine_release(s);
		}
		session_msg_reset(s);
		session_free(s);
	}
	tl_assert_count("allowmsg", "rcpts", STATS_CHECKED, 0);
	cfg_unref(c);
	stats_reset();
}
END_TEST

/*
 * A live allow entry covers a recipient that a static list after it would
 * refuse; the message limit after both still counts every message.
 */
START_TEST(allowed_rcpt_over_static_refusal)
{
	struct cfg *c;

	new_prefix();
	c = load("allowstatic", NULL, "accept", "policies = (\n"
	    "{ name = \"allow-pm\"; type = \"block\"; match = \"rcpt\"; redis = true; "
	    "action = \"accept\"; },\n"
	    "{ name = \"no-d\"; type = \"block\"; match = \"rcpt_domain\"; "
	    "entries = [ \"d.example\" ]; action = \"reject\"; },\n"
	    "{ name = \"per-sender\"; type = \"ratelimit\"; key = \"sender\"; "
	    "count = \"messages\"; limit = 3; window = \"1h\"; action = \"tempfail\"; }\n);\n");
	zadd("allow-pm", "+inf", "postmaster@d.example");
	for (int k = 0; k < 5; k++) {
		struct session *s = session_new(c);
		struct engine_verdict v;
		enum policy_action got;

		tl_set_client("allowstatic", s, "198.51.100.7");
		session_msg_start(s, "s@example.org", NULL, NULL);
		ck_assert(engine_run(s, POLICY_MAIL, &v) == POLICY_NONE);
		session_set_rcpt(s, "postmaster@d.example");
		memset(&v, 0, sizeof(v));
		got = engine_run(s, POLICY_RCPT, &v);
		if (k < 3) {
			ck_assert_msg(got == POLICY_ACCEPT && strcmp(v.policy->name, "allow-pm") == 0,
			    "message %d: %s, want accept by allow-pm", k + 1, policy_action_name(got));
			ck_assert(engine_run(s, POLICY_EOM, &v) == POLICY_NONE);
		} else {
			ck_assert_msg(got == POLICY_TEMPFAIL && strcmp(v.policy->name, "per-sender") == 0,
			    "message %d: %s, want tempfail by per-sender", k + 1,
			    policy_action_name(got));
			engine_release(s);
		}
		session_msg_reset(s);
		session_free(s);
	}
	/* And the static list still refuses another recipient at d.example. */
	{
		struct msg other = { NULL, "t@example.org", "someone@d.example" };
		expect("not allowed", c, &other, POLICY_REJECT, "no-d");
	}
	cfg_unref(c);
	stats_reset();
}
END_TEST

/* A sender longer than the 1024 octets kept keeps its end: the domain. */
START_TEST(long_sender_keeps_domain)
{
	struct cfg *c;
	static char sender[1200];
	struct msg m = { NULL, sender, NULL };

	memset(sender, 'a', 1100);
	snprintf(sender + 1100, sizeof(sender) - 1100, "@static.example");
	new_prefix();
	c = load("long", NULL, "accept", "policies = ( " SENDER_BLOCK("s",
	    "entries = [ \"@static.example\" ];") " );\n");
	expect("static @domain", c, &m, POLICY_REJECT, "s");
	snprintf(sender + 1100, sizeof(sender) - 1100, "@mx.live.example");
	expect("not listed", c, &m, POLICY_NONE, NULL);
	zadd("s", "+inf", ".live.example");
	expect("live .domain", c, &m, POLICY_REJECT, "s");
	cfg_unref(c);
	stats_reset();
}
END_TEST

START_TEST(needs_redis)
{
	char dir[] = "/tmp/check_live.XXXXXX", path[128];
	struct tl_reports *r = calloc(1, sizeof(*r));
	struct cfg *c;
	FILE *fp;

	ck_assert(r != NULL && mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/p.conf", dir);
	fp = fopen(path, "w");
	ck_assert(fp != NULL);
	fprintf(fp, "listen = \"unix:/run/x.sock\";\npolicies = (\n"
	    "  { name = \"l\"; type = \"block\"; match = \"sender\"; redis = true; "
	    "action = \"reject\"; }\n);\n");
	fclose(fp);
	c = cfg_load(path, NULL, tl_collect, r);
	unlink(path);
	rmdir(dir);
	ck_assert_msg(c == NULL && r->nerr == 1, "loaded, or %d errors", r->nerr);
	ck_assert_msg(strstr(r->err[0], "p.conf:3:") != NULL &&
	    strstr(r->err[0], "redis = true needs the top-level redis") != NULL,
	    "error: %s", r->err[0]);
	free(r);
}
END_TEST

static Suite *
live_suite(void)
{
	Suite *s = suite_create("live");
	TCase *tc = tcase_create("live");

	tcase_add_checked_fixture(tc, NULL, tl_teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_loop_test(tc, members, 0, NELEM(member_cases));
	tcase_add_test(tc, members_of_huge_value);
	tcase_add_test(tc, permanent_entry_and_removal);
	tcase_add_test(tc, expiry);
	tcase_add_test(tc, client_networks);
	tcase_add_test(tc, redis_down);
	tcase_add_test(tc, allow_before_block);
	tcase_add_test(tc, dry_run);
	tcase_add_test(tc, one_call_per_stage);
	tcase_add_test(tc, delayed_mail_refusal);
	tcase_add_test(tc, mail_not_delayed);
	tcase_add_test(tc, delayed_mail_allow_and_failure);
	tcase_add_test(tc, hostile_values);
	tcase_add_test(tc, many_labels);
	tcase_add_test(tc, wrong_type);
	tcase_add_test(tc, bounded_pruning);
	tcase_add_test(tc, allow_before_ratelimit);
	tcase_add_test(tc, failed_list_leaks_no_unit);
	tcase_add_test(tc, allowed_rcpt_message_limit);
	tcase_add_test(tc, allowed_rcpt_over_static_refusal);
	tcase_add_test(tc, needs_redis);
	tcase_add_test(tc, long_sender_keeps_domain);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	redis_sock = tl_redis_start();
	return tl_run(live_suite());
}
