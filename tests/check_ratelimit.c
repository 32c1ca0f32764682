/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_ratelimit - unit tests of the ratelimit policy type
 * (policies/ratelimit.c) as the engine runs it against a real, private
 * Redis: its settings and their errors, the Redis key each message is
 * counted under, and what is counted, reserved, confirmed and given back.
 *
 * main() starts one private redis-server (tl_redis_start) before any test
 * runs; every case uses its own key prefix in it, built at run time, so no
 * case sees another's counters.  Engine cases drive one session the way
 * milter/callbacks.c does: engine_release before a new MAIL, a recipient
 * counted only when it was not refused, header and body octets added to
 * the size, the message reset after end of message and at abort (after
 * engine_release).  What Redis holds is checked independently of the code
 * under test, with redis-cli: the sum of a key's bucket values (HGETALL),
 * its absence, its TTL (PTTL), the keys under a prefix (KEYS).
 *
 * Cases are tables run with tcase_add_loop_test; each failure message
 * starts with the case label.  Sessions and configurations are freed
 * (tl_teardown), also after a failure, so the suite is clean under ASan.
 */
#include "config.h"

#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "milter/cfg.h"
#include "milter/engine.h"
#include "milter/log.h"
#include "milter/reply.h"
#include "milter/session.h"
#include "milter/stats.h"
#include "tests/testlib.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define ANY TL_ANY                 /* a counter a case does not pin down */

/* TTL bound of a key written with a window: window + window/60 + 1 ms. */
#define TTL_OF(window_ms) ((window_ms) + (window_ms) / 60 + 1)
#define HOUR_TTL TTL_OF(3600000ULL)

static const char *redis_sock;     /* the private Redis, set by main() */

/* ---- Redis, read without the code under test */

#define LINE_LEN 2200

/* s in single quotes for sh. */
static const char *
shell_quote(const char *s, char *buf, size_t len)
{
	size_t n = 0;

	buf[n++] = '\'';
	for (; *s != '\0' && n + 6 < len; s++) {
		if (*s == '\'') {
			memcpy(buf + n, "'\\''", 4);
			n += 4;
		} else {
			buf[n++] = *s;
		}
	}
	buf[n++] = '\'';
	buf[n] = '\0';
	return buf;
}

/*
 * Every non-empty line redis-cli prints for "cmd quoted(arg)" into
 * lines[0..max); returns how many there were.  redis-cli writes raw
 * strings when its output is not a terminal.
 */
static size_t
redis_lines(const char *label, const char *cmd, const char *arg,
    char (*lines)[LINE_LEN], size_t max)
{
	char q[LINE_LEN * 2], sh[LINE_LEN * 3], buf[LINE_LEN];
	size_t n = 0;
	FILE *fp;
	int status;

	snprintf(sh, sizeof(sh), "redis-cli -s %s %s %s", redis_sock, cmd,
	    shell_quote(arg, q, sizeof(q)));
	fp = popen(sh, "r");
	ck_assert_msg(fp != NULL, "%s: popen %s: %s", label, sh, strerror(errno));
	while (fgets(buf, sizeof(buf), fp) != NULL) {
		buf[strcspn(buf, "\n")] = '\0';
		if (buf[0] == '\0')
			continue;
		if (n < max)
			snprintf(lines[n], LINE_LEN, "%s", buf);
		n++;
	}
	status = pclose(fp);
	ck_assert_msg(status == 0, "%s: %s exited with %d", label, sh, status);
	return n;
}

/* Units held by a rate-limit key: the sum of its bucket values. */
static uint64_t
key_units(const char *label, const char *key, size_t *nbuckets)
{
	static char lines[64][LINE_LEN];
	size_t n = redis_lines(label, "HGETALL", key, lines, NELEM(lines));
	uint64_t sum = 0;

	ck_assert_msg(n % 2 == 0 && n <= NELEM(lines), "%s: HGETALL %s: %zu lines",
	    label, key, n);
	for (size_t i = 1; i < n; i += 2) {
		char *end;
		unsigned long long v = strtoull(lines[i], &end, 10);
		ck_assert_msg(*end == '\0' && end != lines[i], "%s: %s: bucket %s holds "
		    "\"%s\"", label, key, lines[i - 1], lines[i]);
		sum += v;
	}
	*nbuckets = n / 2;
	return sum;
}

static void
assert_key_gone(const char *label, size_t k, const char *key)
{
	char q[LINE_LEN * 2];
	const char *line;

	shell_quote(key, q, sizeof(q));
	line = tl_redis_command("HGETALL %s", q);
	ck_assert_msg(line[0] == '\0', "%s: step %zu: %s still has bucket %s", label, k,
	    key, line);
	line = tl_redis_command("EXISTS %s", q);
	ck_assert_msg(strcmp(line, "0") == 0, "%s: step %zu: EXISTS %s = \"%s\"", label,
	    k, key, line);
}

static void
assert_key_ttl(const char *label, size_t k, const char *key, uint64_t max_ms)
{
	char q[LINE_LEN * 2];
	const char *line;
	long long ttl;

	shell_quote(key, q, sizeof(q));
	line = tl_redis_command("PTTL %s", q);
	ttl = strtoll(line, NULL, 10);
	ck_assert_msg(ttl > 0 && (uint64_t)ttl <= max_ms, "%s: step %zu: PTTL %s = "
	    "\"%s\", expected 1 to %llu", label, k, key, line, (unsigned long long)max_ms);
}

/* ---- configuration text */

/* The redis group for prefix (at address, or the private Redis), then rest. */
static void
conf_text(char *buf, size_t len, const char *address, const char *prefix,
    const char *rest)
{
	char addr[400];

	if (address != NULL)
		snprintf(addr, sizeof(addr), "%s", address);
	else
		snprintf(addr, sizeof(addr), "unix:%s", redis_sock);
	snprintf(buf, len, "redis = { address = \"%s\"; prefix = \"%s\"; };\n%s", addr,
	    prefix, rest);
}

/*
 * Does got equal want, where '#' in want is one or more digits (the first
 * such number goes to *num) and a final '*' any rest?
 */
static bool
reply_matches(const char *got, const char *want, unsigned long long *num)
{
	bool first = true;

	for (; *want != '\0'; want++) {
		if (*want == '*' && want[1] == '\0')
			return true;
		if (*want == '#') {
			if (!isdigit((unsigned char)*got))
				return false;
			if (first)
				*num = strtoull(got, NULL, 10);
			first = false;
			while (isdigit((unsigned char)*got))
				got++;
			continue;
		}
		if (*got++ != *want)
			return false;
	}
	return *got == '\0';
}

/* ---- 1. configuration errors */

static int
write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	if (fp == NULL)
		return -1;
	fputs(text, fp);
	return fclose(fp);
}

struct reports {
	int nerr, nwarn;
	char text[8192];
};

static void
collect(void *arg, bool is_error, const char *msg)
{
	struct reports *r = arg;
	size_t n = strlen(r->text);

	if (is_error)
		r->nerr++;
	else
		r->nwarn++;
	snprintf(r->text + n, sizeof(r->text) - n, "%s%s\n", is_error ? "" : "warning: ",
	    msg);
}

/*
 * A ratelimit policy with one setting per line, so that each error can be
 * tied to its line:
 *   1 listen, 2 redis, 3 policies = (, 4 the policy's "{", name, type and
 *   action, 5 key, 6 count, 7 limit, 8 window, 9 extra settings and "}".
 */
#define WITH_REDIS "redis = { address = \"unix:/nonexistent/redis.sock\"; };\n"
#define RL_CONF(redis, key, count, limit, window, extra) \
	"listen = \"unix:/run/policy-milter/test.sock\";\n" \
	redis \
	"policies = (\n" \
	"  { name = \"rl\"; type = \"ratelimit\"; action = \"tempfail\";\n" \
	"    key = " key ";\n" \
	"    count = " count ";\n" \
	"    limit = " limit ";\n" \
	"    window = " window ";\n" \
	"    " extra " }\n" \
	");\n"
#define RL_GOOD(key, count, limit, window, extra) \
	RL_CONF(WITH_REDIS, key, count, limit, window, extra)

struct cfg_case {
	const char *label;
	const char *text;
	unsigned line;             /* of the error; 0: the file must load */
	const char *want;          /* in the message after "path:line: " */
};

static const struct cfg_case cfg_cases[] = {
	{ "control: the template loads",
	    RL_GOOD("[ \"sender\", \"rcpt_domain\" ]", "\"messages\"", "10", "\"1m\"",
		"client_net_v4 = 16; client_net_v6 = 48; strip_extension = true;"),
	    0, NULL },
	{ "control: edges of the ranges load",
	    RL_GOOD("\"client_net\"", "\"bytes\"", "1", "\"30d\"",
		"client_net_v4 = 32; client_net_v6 = 128;"), 0, NULL },
	{ "control: a one-second window loads",
	    RL_GOOD("\"client_net\"", "\"recipients\"", "\"25M\"", "1",
		"client_net_v4 = 1; client_net_v6 = 1;"), 0, NULL },
	{ "unknown count",
	    RL_GOOD("\"sender\"", "\"mails\"", "10", "\"1m\"", ""), 6,
	    "count must be \"messages\", \"recipients\" or \"bytes\", not \"mails\"" },
	{ "unknown key part",
	    RL_GOOD("[ \"sender\", \"ip\" ]", "\"messages\"", "10", "\"1m\"", ""), 5,
	    "unknown key part \"ip\"" },
	{ "empty key list",
	    RL_GOOD("[ ]", "\"messages\"", "10", "\"1m\"", ""), 5,
	    "key must name 1 to 8 parts" },
	{ "duplicate key part",
	    RL_GOOD("[ \"sender\", \"rcpt\", \"sender\" ]", "\"messages\"", "10", "\"1m\"",
		""), 5, "key part \"sender\" is named twice" },
	{ "window of 500ms",
	    RL_GOOD("\"sender\"", "\"messages\"", "10", "\"500ms\"", ""), 8,
	    "window is out of range (1s to 30d)" },
	{ "window of 31d",
	    RL_GOOD("\"sender\"", "\"messages\"", "10", "\"31d\"", ""), 8,
	    "window is out of range (1s to 30d)" },
	{ "limit 0",
	    RL_GOOD("\"sender\"", "\"messages\"", "0", "\"1m\"", ""), 7,
	    "limit must be at least 1" },
	{ "ratelimit without a redis group",
	    RL_CONF("# no redis group\n", "\"sender\"", "\"messages\"", "10", "\"1m\"",
		""), 4, "type \"ratelimit\" counts in Redis" },
	{ "client_net_v4 = 33",
	    RL_GOOD("\"client_net\"", "\"messages\"", "10", "\"1m\"",
		"client_net_v4 = 33;"), 9, "client_net_v4 = 33 is out of range (1 to 32)" },
	{ "client_net_v6 = 129",
	    RL_GOOD("\"client_net\"", "\"messages\"", "10", "\"1m\"",
		"client_net_v6 = 129;"), 9,
	    "client_net_v6 = 129 is out of range (1 to 128)" },
};

START_TEST(test_config)
{
	const struct cfg_case *tc = &cfg_cases[_i];
	char dir[] = "/tmp/check_ratelimit.XXXXXX", path[64], head[128];
	static struct reports rep;
	struct cfg *c;
	bool found = false;

	memset(&rep, 0, sizeof(rep));
	ck_assert_msg(mkdtemp(dir) != NULL, "%s: mkdtemp: %s", tc->label, strerror(errno));
	snprintf(path, sizeof(path), "%s/policy-milter.conf", dir);
	ck_assert_msg(write_file(path, tc->text) == 0, "%s: %s: %s", tc->label, path,
	    strerror(errno));
	c = cfg_load(path, NULL, collect, &rep);
	unlink(path);
	rmdir(dir);
	if (tc->line == 0) {
		bool ok = c != NULL && rep.nerr == 0 && rep.nwarn == 0;
		cfg_unref(c);
		stats_reset();
		ck_assert_msg(ok, "%s: refused or warned:\n%s", tc->label, rep.text);
		return;
	}
	cfg_unref(c);
	ck_assert_msg(c == NULL, "%s: loaded; expected line %u: %s", tc->label, tc->line,
	    tc->want);
	snprintf(head, sizeof(head), "%s:%u: ", path, tc->line);
	for (const char *p = rep.text; p != NULL && *p != '\0' && !found;
	    p = strchr(p, '\n') != NULL ? strchr(p, '\n') + 1 : NULL) {
		size_t len = strcspn(p, "\n");
		char one[2048];
		snprintf(one, sizeof(one), "%.*s", (int)len, p);
		found = strncmp(one, head, strlen(head)) == 0 && strstr(one, tc->want) != NULL;
	}
	ck_assert_msg(found, "%s: no error \"%s%s\" in:\n%s", tc->label, head, tc->want,
	    rep.text);
}
END_TEST

/* ---- 2. the key a message is counted under */

struct key_case {
	const char *label;
	const char *settings;      /* key = ...; and other ratelimit settings */
	const char *client, *helo, *sender, *sasl, *rcpt;
	const char *want;          /* the policy's key; NULL: the policy does not apply */
};

#define C4 "198.51.100.77"
#define C6 "2001:db8:1:2:3:4:5:6"

static const struct key_case key_cases[] = {
	{ "sender lowercased", "key = \"sender\";",
	    C4, "mx", "<Alice.Smith@Example.ORG>", NULL, "<r@example.net>",
	    "alice.smith@example.org" },
	{ "sender_domain lowercased", "key = \"sender_domain\";",
	    C4, "mx", "<a@Mail.Example.ORG>", NULL, "<r@example.net>", "mail.example.org" },
	{ "rcpt lowercased", "key = \"rcpt\";",
	    C4, "mx", "<s@example.org>", NULL, "<Bob@Example.NET>", "bob@example.net" },
	{ "rcpt_domain lowercased", "key = \"rcpt_domain\";",
	    C4, "mx", "<s@example.org>", NULL, "<bob@EXAMPLE.net>", "example.net" },
	{ "helo lowercased", "key = \"helo\";",
	    C4, "MX.Example.ORG", "<s@example.org>", NULL, "<r@example.net>",
	    "mx.example.org" },
	{ "client_ip", "key = \"client_ip\";",
	    C4, "mx", "<s@example.org>", NULL, "<r@example.net>", C4 },
	{ "sasl_user", "key = \"sasl_user\";",
	    C4, "mx", "<s@example.org>", "alice", "<r@example.net>", "alice" },
	{ "sender +extension stripped", "key = \"sender\"; strip_extension = true;",
	    C4, "mx", "<A+Tag@X.Example>", NULL, "<r@example.net>", "a@x.example" },
	{ "sender +extension kept when not asked", "key = \"sender\";",
	    C4, "mx", "<a+tag@x.example>", NULL, "<r@example.net>", "a+tag@x.example" },
	{ "sender +extension kept with strip_extension = false",
	    "key = \"sender\"; strip_extension = false;",
	    C4, "mx", "<a+tag@x.example>", NULL, "<r@example.net>", "a+tag@x.example" },
	{ "rcpt +extension stripped", "key = \"rcpt\"; strip_extension = true;",
	    C4, "mx", "<s@example.org>", NULL, "<B+Lists@Example.net>", "b@example.net" },
	{ "null sender as sender", "key = \"sender\";",
	    C4, "mx", "<>", NULL, "<r@example.net>", "<>" },
	{ "null sender as sender_domain", "key = \"sender_domain\";",
	    C4, "mx", "<>", NULL, "<r@example.net>", "<>" },
	{ "client_net IPv4 /24 by default", "key = \"client_net\";",
	    C4, "mx", "<s@example.org>", NULL, "<r@example.net>", "198.51.100.0/24" },
	{ "client_net IPv6 /64 by default", "key = \"client_net\";",
	    C6, "mx", "<s@example.org>", NULL, "<r@example.net>", "2001:db8:1:2::/64" },
	{ "client_net IPv4 /16", "key = \"client_net\"; client_net_v4 = 16;",
	    C4, "mx", "<s@example.org>", NULL, "<r@example.net>", "198.51.0.0/16" },
	{ "client_net IPv6 /48", "key = \"client_net\"; client_net_v6 = 48;",
	    C6, "mx", "<s@example.org>", NULL, "<r@example.net>", "2001:db8:1::/48" },
	{ "client_net IPv4-mapped client is IPv4", "key = \"client_net\";",
	    "::ffff:192.0.2.130", "mx", "<s@example.org>", NULL, "<r@example.net>",
	    "192.0.2.0/24" },
	{ "composite key in the listed order",
	    "key = [ \"rcpt_domain\", \"client_net\", \"sender\" ];",
	    C4, "mx", "<S@Example.org>", NULL, "<r@Example.NET>",
	    "example.net|198.51.100.0/24|s@example.org" },
	{ "composite key escapes | and \\ in parts",
	    "key = [ \"helo\", \"sasl_user\", \"sender\" ];",
	    C4, "A|B\\c", "<s@example.org>", "us|er\\", "<r@example.net>",
	    "a\\|b\\\\c|us\\|er\\\\|s@example.org" },
	{ "no SASL user: sasl_user policy does not apply", "key = \"sasl_user\";",
	    C4, "mx", "<s@example.org>", NULL, "<r@example.net>", NULL },
	{ "no SASL user: composite with sasl_user does not apply",
	    "key = [ \"sender\", \"sasl_user\" ];",
	    C4, "mx", "<s@example.org>", NULL, "<r@example.net>", NULL },
};

START_TEST(test_key)
{
	const struct key_case *tc = &key_cases[_i];
	char prefix[32], policies[512], text[2048], want[1200], pattern[64];
	static char keys[8][LINE_LEN];
	const char *const esmtp[] = { NULL };
	struct engine_verdict v;
	struct session *s;
	struct cfg *c;
	size_t n, nbuckets;

	snprintf(prefix, sizeof(prefix), "key%d:", _i);
	snprintf(policies, sizeof(policies), "policies = ( { name = \"k\"; "
	    "type = \"ratelimit\"; %s count = \"messages\"; limit = 100; window = \"1h\"; "
	    "action = \"tempfail\"; } );\n", tc->settings);
	conf_text(text, sizeof(text), NULL, prefix, policies);
	c = tl_load_config(tc->label, text);
	s = tl_session_new(tc->label, c);
	cfg_unref(c);

	tl_set_client(tc->label, s, tc->client);
	ck_assert_msg(!engine_client_exempt(s), "%s: client exempt", tc->label);
	session_set_helo(s, tc->helo);
	engine_release(s);
	session_msg_start(s, tc->sender, esmtp, tc->sasl);
	ck_assert_msg(engine_run(s, POLICY_MAIL, &v) == POLICY_NONE, "%s: MAIL: %s",
	    tc->label, policy_action_name(v.action));
	session_set_rcpt(s, tc->rcpt);
	ck_assert_msg(engine_run(s, POLICY_RCPT, &v) == POLICY_NONE, "%s: RCPT: %s",
	    tc->label, policy_action_name(v.action));
	s->msg.rcpts++;

	snprintf(pattern, sizeof(pattern), "%s*", prefix);
	n = redis_lines(tc->label, "KEYS", pattern, keys, NELEM(keys));
	if (tc->want == NULL) {
		ck_assert_msg(n == 0, "%s: %zu keys under %s, e.g. \"%s\"; expected none",
		    tc->label, n, prefix, keys[0]);
		tl_assert_count(tc->label, "k", STATS_CHECKED, 0);
	} else {
		snprintf(want, sizeof(want), "%srl:k:%s", prefix, tc->want);
		ck_assert_msg(n == 1, "%s: %zu keys under %s (first \"%s\"), expected \"%s\"",
		    tc->label, n, prefix, n > 0 ? keys[0] : "", want);
		ck_assert_msg(strcmp(keys[0], want) == 0, "%s: key \"%s\", expected \"%s\"",
		    tc->label, keys[0], want);
		ck_assert_msg(key_units(tc->label, want, &nbuckets) == 1, "%s: %s does "
		    "not hold 1 unit", tc->label, want);
		assert_key_ttl(tc->label, 0, want, HOUR_TTL);
		tl_assert_count(tc->label, "k", STATS_CHECKED, 1);
	}
	ck_assert_msg(engine_run(s, POLICY_EOM, &v) == POLICY_NONE, "%s: EOM: %s",
	    tc->label, policy_action_name(v.action));
	session_msg_reset(s);
}
END_TEST

/* ---- 3-7. counting through the engine */

enum step_kind {
	ST_END = 0, ST_CONNECT, ST_MAIL, ST_RCPT, ST_DATA, ST_EOM, ST_ABORT,
	ST_UNITS, ST_GONE, ST_TTL, ST_SEED,
};

struct step {
	enum step_kind kind;
	const char *arg;           /* client, sender, recipient; Redis steps: the
	                              key after "<prefix>rl:" */
	const char *esmtp;         /* MAIL: "SIZE=n" or NULL */
	const char *sasl;          /* MAIL: authenticated user or NULL */
	uint64_t n;                /* DATA octets; UNITS, SEED units; TTL most ms */
	unsigned ago;              /* SEED: the bucket starts this many s ago */
	enum policy_action want;
	const char *policy;        /* the deciding policy */
	const char *reply;         /* reply_format; '#' digits, final '*' anything */
	unsigned long long lo, hi; /* when hi > 0: range of the reply's first '#' */
};

#define CONNECT(ip)            { .kind = ST_CONNECT, .arg = (ip) }
#define MAIL(from, param)      { .kind = ST_MAIL, .arg = (from), .esmtp = (param) }
#define MAIL_AUTH(from, user)  { .kind = ST_MAIL, .arg = (from), .sasl = (user) }
#define RCPT(to)               { .kind = ST_RCPT, .arg = (to) }
#define RCPT_HIT(to, act, pol, rep) \
	{ .kind = ST_RCPT, .arg = (to), .want = (act), .policy = (pol), .reply = (rep) }
#define DATA(octets)           { .kind = ST_DATA, .n = (octets) }
#define EOM                    { .kind = ST_EOM }
#define EOM_HIT(act, pol, rep) { .kind = ST_EOM, .want = (act), .policy = (pol), \
	.reply = (rep) }
#define ABORT                  { .kind = ST_ABORT }
#define UNITS(key, units)      { .kind = ST_UNITS, .arg = (key), .n = (units) }
#define GONE(key)              { .kind = ST_GONE, .arg = (key) }
#define TTL(key, ms)           { .kind = ST_TTL, .arg = (key), .n = (ms) }
/* Units put into key by hand, in a bucket that started secs ago (Redis time). */
#define SEED(key, units, secs) { .kind = ST_SEED, .arg = (key), .n = (units), \
	.ago = (secs) }
#define RCPT_RETRY(to, act, pol, rep, min, max) { .kind = ST_RCPT, .arg = (to), \
	.want = (act), .policy = (pol), .reply = (rep), .lo = (min), .hi = (max) }

struct counts {
	const char *policy;
	uint64_t checked, rejected, tempfailed, dry_run, redis_errors, discarded,
	    quarantined;
};

struct scenario {
	const char *label;
	const char *address;       /* redis address; NULL: the private Redis */
	const char *conf;          /* after the redis group */
	struct step steps[32];
	struct counts counts[3];
};

/* A ratelimit policy; more holds optional settings ("reply = ...;"). */
#define RL(name, key, count, limit, window, action, more) \
	"{ name = \"" name "\"; type = \"ratelimit\"; key = " key "; count = \"" count \
	"\"; limit = " limit "; window = \"" window "\"; action = \"" action "\"; " \
	more " }"
#define MSGS   RL("msgs", "\"sender\"", "messages", "100", "1h", "tempfail", "")
#define RCPTS  RL("rcpts", "\"sender\"", "recipients", "100", "1h", "tempfail", "")
#define MAX2   "{ name = \"max2\"; type = \"recipients\"; max = 2; action = \"tempfail\"; }"
#define SIZE1000 "{ name = \"max-size\"; type = \"size\"; max = 1000; action = \"reject\"; }"
#define BYTES(limit, action, more) \
	RL("bytes", "\"sender\"", "bytes", limit, "2h", action, more)
#define BYTES_TTL TTL_OF(7200000ULL)

#define FROM "<s@example.org>"
#define SKEY(pol) pol ":s@example.org"
#define DOWN "unix:/nonexistent/redis.sock"
#define CLIENT CONNECT("198.51.100.7")

static const struct scenario scenarios[] = {
	/* 3. what is counted */
	{ "messages: one unit per message, however many recipients", NULL,
	    "policies = ( " MSGS " );\n",
	    { CLIENT, MAIL("<S@Example.ORG>", NULL), RCPT("<r1@example.net>"),
	      RCPT("<r2@example.net>"), RCPT("<r3@example.net>"), RCPT("<r4@example.net>"),
	      RCPT("<r5@example.net>"), UNITS(SKEY("msgs"), 1), DATA(100), EOM,
	      UNITS(SKEY("msgs"), 1), TTL(SKEY("msgs"), HOUR_TTL),
	      MAIL(FROM, NULL), RCPT("<r1@example.net>"), RCPT("<r2@example.net>"),
	      DATA(100), EOM, UNITS(SKEY("msgs"), 2) },
	    { { "msgs", 2, 0, 0, 0, 0, 0, 0 } } },

	{ "recipients: one unit per accepted recipient", NULL,
	    "policies = ( " RCPTS " );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r1@example.net>"), RCPT("<r2@example.net>"),
	      RCPT("<r3@example.net>"), UNITS(SKEY("rcpts"), 3), DATA(100), EOM,
	      UNITS(SKEY("rcpts"), 3), TTL(SKEY("rcpts"), HOUR_TTL) },
	    { { "rcpts", 3, 0, 0, 0, 0, 0, 0 } } },

	{ "recipients: limit reached within a message refuses the rest", NULL,
	    "policies = ( " RL("rcpts", "\"sender\"", "recipients", "3", "1h", "tempfail",
		"reply = \"451 4.7.1 ${key}: ${limit} per ${window}\";") " );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r1@example.net>"), RCPT("<r2@example.net>"),
	      RCPT("<r3@example.net>"),
	      RCPT_HIT("<r4@example.net>", POLICY_TEMPFAIL, "rcpts",
		  "451 4.7.1 s@example.org: 3 per 60m"),
	      RCPT_HIT("<r5@example.net>", POLICY_TEMPFAIL, "rcpts",
		  "451 4.7.1 s@example.org: 3 per 60m"),
	      UNITS(SKEY("rcpts"), 3), DATA(100), EOM, UNITS(SKEY("rcpts"), 3) },
	    { { "rcpts", 5, 0, 2, 0, 0, 0, 0 } } },

	{ "RCPT refused by an earlier in-memory policy reserves nothing", NULL,
	    "policies = ( " MAX2 ", " RCPTS " );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r1@example.net>"), RCPT("<r2@example.net>"),
	      RCPT_HIT("<r3@example.net>", POLICY_TEMPFAIL, "max2", NULL),
	      RCPT_HIT("<r4@example.net>", POLICY_TEMPFAIL, "max2", NULL),
	      UNITS(SKEY("rcpts"), 2), DATA(100), EOM, UNITS(SKEY("rcpts"), 2) },
	    { { "max2", 4, 0, 2, 0, 0, 0, 0 }, { "rcpts", 2, 0, 0, 0, 0, 0, 0 } } },

	{ "RCPT refused by a later in-memory policy reserves nothing", NULL,
	    "policies = ( " RCPTS ", " MAX2 " );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r1@example.net>"), RCPT("<r2@example.net>"),
	      RCPT_HIT("<r3@example.net>", POLICY_TEMPFAIL, "max2", NULL),
	      RCPT_HIT("<r4@example.net>", POLICY_TEMPFAIL, "max2", NULL),
	      UNITS(SKEY("rcpts"), 2), DATA(100), EOM, UNITS(SKEY("rcpts"), 2) },
	    { { "max2", 4, 0, 2, 0, 0, 0, 0 }, { "rcpts", ANY, 0, 0, 0, 0, 0, 0 } } },

	{ "messages: every RCPT refused by a later size policy reserves nothing", NULL,
	    "policies = ( " MSGS ", " SIZE1000 " );\n",
	    { CLIENT, MAIL(FROM, "SIZE=2000"),
	      RCPT_HIT("<r1@example.net>", POLICY_REJECT, "max-size", NULL),
	      RCPT_HIT("<r2@example.net>", POLICY_REJECT, "max-size", NULL),
	      GONE(SKEY("msgs")), MAIL(FROM, NULL), GONE(SKEY("msgs")),
	      RCPT("<r1@example.net>"), UNITS(SKEY("msgs"), 1), DATA(100), EOM,
	      UNITS(SKEY("msgs"), 1) },
	    { { "msgs", ANY, 0, 0, 0, 0, 0, 0 }, { "max-size", ANY, 2, 0, 0, 0, 0, 0 } } },

	{ "all or nothing: the second limit over, the first reserves nothing", NULL,
	    "policies = ( "
	    RL("wide", "\"sender_domain\"", "messages", "100", "1h", "tempfail", "") ", "
	    RL("narrow", "\"sender\"", "messages", "1", "1h", "tempfail",
		"reply = \"451 4.7.1 ${policy} ${key}\";") " );\n",
	    { CLIENT, MAIL("<a@example.org>", NULL), RCPT("<r1@example.net>"), DATA(10), EOM,
	      UNITS("wide:example.org", 1), UNITS("narrow:a@example.org", 1),
	      MAIL("<a@example.org>", NULL),
	      RCPT_HIT("<r1@example.net>", POLICY_TEMPFAIL, "narrow",
		  "451 4.7.1 narrow a@example.org"),
	      UNITS("wide:example.org", 1), UNITS("narrow:a@example.org", 1), ABORT,
	      UNITS("wide:example.org", 1),
	      MAIL("<b@example.org>", NULL), RCPT("<r1@example.net>"), DATA(10), EOM,
	      UNITS("wide:example.org", 2), UNITS("narrow:b@example.org", 1),
	      UNITS("narrow:a@example.org", 1) },
	    { { "wide", 3, 0, 0, 0, 0, 0, 0 }, { "narrow", 3, 0, 1, 0, 0, 0, 0 } } },

	{ "limit reached exactly, then refused with its variables", NULL,
	    "policies = ( " RL("per-client", "\"client_ip\"", "messages", "2", "60s",
		"tempfail", "reply = \"451 4.7.1 ${key} sent ${limit} per ${window}; "
		"retry in ${retry_after}\";") " );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r@example.net>"), DATA(10), EOM,
	      MAIL(FROM, NULL), RCPT("<r@example.net>"), DATA(10), EOM,
	      UNITS("per-client:198.51.100.7", 2),
	      TTL("per-client:198.51.100.7", TTL_OF(60000ULL)),
	      MAIL(FROM, NULL),
	      RCPT_HIT("<r@example.net>", POLICY_TEMPFAIL, "per-client",
		  "451 4.7.1 198.51.100.7 sent 2 per 60s; retry in #s"),
	      UNITS("per-client:198.51.100.7", 2), ABORT,
	      UNITS("per-client:198.51.100.7", 2) },
	    { { "per-client", 3, 0, 1, 0, 0, 0, 0 } } },

	/* The first unit may be reserved just before a bucket ends: 59 to 61 s. */
	{ "limit reached: retry_after is about one window", NULL,
	    "policies = ( " RL("per-client", "\"client_ip\"", "messages", "1", "60s",
		"tempfail", "reply = \"451 4.7.1 retry in ${retry_after}\";") " );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r@example.net>"), DATA(10), EOM,
	      MAIL(FROM, NULL),
	      RCPT_RETRY("<r@example.net>", POLICY_TEMPFAIL, "per-client",
		  "451 4.7.1 retry in #s", 58, 61), ABORT },
	    { { "per-client", 2, 0, 1, 0, 0, 0, 0 } } },

	/* Sliding window: units 30 s old fill it until they are 60 s old. */
	{ "units inside the window count; retry_after says when they leave", NULL,
	    "policies = ( " RL("per-client", "\"client_ip\"", "messages", "2", "60s",
		"tempfail", "reply = \"451 4.7.1 retry in ${retry_after}\";") " );\n",
	    { CLIENT, SEED("per-client:198.51.100.7", 2, 30), MAIL(FROM, NULL),
	      RCPT_RETRY("<r@example.net>", POLICY_TEMPFAIL, "per-client",
		  "451 4.7.1 retry in #s", 27, 31),
	      UNITS("per-client:198.51.100.7", 2), ABORT,
	      UNITS("per-client:198.51.100.7", 2) },
	    { { "per-client", 1, 0, 1, 0, 0, 0, 0 } } },

	{ "units older than the window neither count nor stay", NULL,
	    "policies = ( " RL("per-client", "\"client_ip\"", "messages", "2", "60s",
		"tempfail", "") " );\n",
	    { CLIENT, SEED("per-client:198.51.100.7", 5, 62), MAIL(FROM, NULL),
	      RCPT("<r@example.net>"), UNITS("per-client:198.51.100.7", 1), DATA(10), EOM,
	      UNITS("per-client:198.51.100.7", 1),
	      TTL("per-client:198.51.100.7", TTL_OF(60000ULL)) },
	    { { "per-client", 1, 0, 0, 0, 0, 0, 0 } } },

	{ "limit reached, reject with the default reply", NULL,
	    "policies = ( " RL("per-sender", "\"sender\"", "messages", "1", "2h", "reject",
		"") " );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r@example.net>"), DATA(10), EOM,
	      MAIL(FROM, NULL),
	      RCPT_HIT("<r@example.net>", POLICY_REJECT, "per-sender",
		  "550 5.7.1 Rate limit of 1 per 2h reached for s@example.org"),
	      UNITS(SKEY("per-sender"), 1) },
	    { { "per-sender", 2, 1, 0, 0, 0, 0, 0 } } },

	{ "dry run over the limit passes and reserves nothing", NULL,
	    "policies = ( " RL("trial", "\"sender\"", "messages", "1", "1h", "tempfail",
		"dry_run = true;") " );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r@example.net>"), DATA(10), EOM,
	      UNITS(SKEY("trial"), 1), MAIL(FROM, NULL), RCPT("<r@example.net>"),
	      UNITS(SKEY("trial"), 1), DATA(10), EOM, UNITS(SKEY("trial"), 1) },
	    { { "trial", 2, 0, 0, 1, 0, 0, 0 } } },

	{ "dry run over its limit does not stop the next limit", NULL,
	    "policies = ( " RL("trial", "\"sender\"", "messages", "1", "1h", "tempfail",
		"dry_run = true;") ", " MSGS " );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r@example.net>"), DATA(10), EOM,
	      MAIL(FROM, NULL), RCPT("<r@example.net>"), DATA(10), EOM,
	      UNITS(SKEY("trial"), 1), UNITS(SKEY("msgs"), 2) },
	    { { "trial", 2, 0, 0, 1, 0, 0, 0 }, { "msgs", 2, 0, 0, 0, 0, 0, 0 } } },

	/* 4. give-back */
	{ "abort after RCPT gives the units back", NULL,
	    "policies = ( " RCPTS ", " MSGS " );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r1@example.net>"), RCPT("<r2@example.net>"),
	      UNITS(SKEY("rcpts"), 2), UNITS(SKEY("msgs"), 1), ABORT,
	      GONE(SKEY("rcpts")), GONE(SKEY("msgs")),
	      MAIL(FROM, NULL), RCPT("<r1@example.net>"), DATA(10), EOM,
	      UNITS(SKEY("rcpts"), 1), UNITS(SKEY("msgs"), 1) },
	    { { "rcpts", 3, 0, 0, 0, 0, 0, 0 }, { "msgs", 2, 0, 0, 0, 0, 0, 0 } } },

	{ "a new MAIL without abort gives the units back", NULL,
	    "policies = ( " MSGS " );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r1@example.net>"), UNITS(SKEY("msgs"), 1),
	      MAIL(FROM, NULL), GONE(SKEY("msgs")), RCPT("<r1@example.net>"),
	      UNITS(SKEY("msgs"), 1), DATA(10), EOM, UNITS(SKEY("msgs"), 1) },
	    { { "msgs", 2, 0, 0, 0, 0, 0, 0 } } },

	{ "message refused at end of message by a size policy gives everything back", NULL,
	    "policies = ( " MSGS ", " RCPTS ", " SIZE1000 " );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r1@example.net>"), RCPT("<r2@example.net>"),
	      UNITS(SKEY("msgs"), 1), UNITS(SKEY("rcpts"), 2), DATA(2000),
	      EOM_HIT(POLICY_REJECT, "max-size", NULL),
	      GONE(SKEY("msgs")), GONE(SKEY("rcpts")),
	      MAIL(FROM, NULL), RCPT("<r1@example.net>"), DATA(10), EOM,
	      UNITS(SKEY("msgs"), 1), UNITS(SKEY("rcpts"), 1) },
	    { { "msgs", 2, 0, 0, 0, 0, 0, 0 }, { "rcpts", 3, 0, 0, 0, 0, 0, 0 },
	      { "max-size", ANY, 1, 0, 0, 0, 0, 0 } } },

	{ "accepted message keeps its units after the session", NULL,
	    "policies = ( " MSGS ", " RCPTS " );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r1@example.net>"), RCPT("<r2@example.net>"),
	      DATA(10), EOM, ABORT, MAIL(FROM, NULL), ABORT,
	      UNITS(SKEY("msgs"), 1), UNITS(SKEY("rcpts"), 2),
	      TTL(SKEY("msgs"), HOUR_TTL), TTL(SKEY("rcpts"), HOUR_TTL) },
	    { { "msgs", 1, 0, 0, 0, 0, 0, 0 }, { "rcpts", 2, 0, 0, 0, 0, 0, 0 } } },

	/* 5. bytes */
	{ "bytes: SIZE= reserved at RCPT, a larger real size counted at the end", NULL,
	    "policies = ( " BYTES("\"1M\"", "tempfail", "") " );\n",
	    { CLIENT, MAIL(FROM, "SIZE=1000"), RCPT("<r1@example.net>"),
	      RCPT("<r2@example.net>"), UNITS(SKEY("bytes"), 1000), DATA(1500), EOM,
	      UNITS(SKEY("bytes"), 1500), TTL(SKEY("bytes"), BYTES_TTL) },
	    { { "bytes", 2, 0, 0, 0, 0, 0, 0 } } },

	{ "bytes: a smaller real size given back at the end", NULL,
	    "policies = ( " BYTES("\"1M\"", "tempfail", "") " );\n",
	    { CLIENT, MAIL(FROM, "SIZE=1000"), RCPT("<r1@example.net>"),
	      UNITS(SKEY("bytes"), 1000), DATA(400), EOM, UNITS(SKEY("bytes"), 400),
	      TTL(SKEY("bytes"), BYTES_TTL) },
	    { { "bytes", 1, 0, 0, 0, 0, 0, 0 } } },

	{ "bytes: real size over the limit tempfailed at the end, nothing left", NULL,
	    "policies = ( " BYTES("2000", "tempfail",
		"reply = \"451 4.7.1 ${limit} per ${window} for ${key}\";") " );\n",
	    { CLIENT, MAIL(FROM, "SIZE=1000"), RCPT("<r1@example.net>"),
	      UNITS(SKEY("bytes"), 1000), DATA(5000),
	      EOM_HIT(POLICY_TEMPFAIL, "bytes", "451 4.7.1 2000 per 2h for s@example.org"),
	      GONE(SKEY("bytes")),
	      MAIL(FROM, "SIZE=500"), RCPT("<r1@example.net>"), DATA(500), EOM,
	      UNITS(SKEY("bytes"), 500) },
	    { { "bytes", 3, 0, 1, 0, 0, 0, 0 } } },

	{ "bytes: real size over the limit rejected at the end, nothing left", NULL,
	    "policies = ( " RCPTS ", " BYTES("2000", "reject", "") " );\n",
	    { CLIENT, MAIL(FROM, "SIZE=1000"), RCPT("<r1@example.net>"),
	      RCPT("<r2@example.net>"), UNITS(SKEY("bytes"), 1000),
	      UNITS(SKEY("rcpts"), 2), DATA(5000),
	      EOM_HIT(POLICY_REJECT, "bytes",
		  "550 5.7.1 Rate limit of 2000 per 2h reached for s@example.org"),
	      GONE(SKEY("bytes")), GONE(SKEY("rcpts")) },
	    { { "bytes", 2, 1, 0, 0, 0, 0, 0 }, { "rcpts", 2, 0, 0, 0, 0, 0, 0 } } },

	/* discard and quarantine act at end of message, as at RCPT (README). */
	{ "bytes: real size over the limit with action discard is discarded", NULL,
	    "policies = ( " BYTES("2000", "discard", "") " );\n",
	    { CLIENT, MAIL(FROM, "SIZE=1000"), RCPT("<r1@example.net>"), DATA(5000),
	      EOM_HIT(POLICY_DISCARD, "bytes", NULL) },
	    { { "bytes", 2, 0, 0, 0, 0, 1, 0 } } },

	{ "bytes: real size over the limit with action quarantine is held", NULL,
	    "policies = ( " BYTES("2000", "quarantine", "") " );\n",
	    { CLIENT, MAIL(FROM, "SIZE=1000"), RCPT("<r1@example.net>"), DATA(5000),
	      EOM_HIT(POLICY_QUARANTINE, "bytes", NULL) },
	    { { "bytes", 2, 0, 0, 0, 0, 0, 1 } } },

	{ "bytes: real size over the limit in a dry run passes, excess not counted", NULL,
	    "policies = ( " BYTES("2000", "tempfail", "dry_run = true;") " );\n",
	    { CLIENT, MAIL(FROM, "SIZE=1000"), RCPT("<r1@example.net>"), DATA(5000), EOM,
	      UNITS(SKEY("bytes"), 1000) },
	    { { "bytes", 2, 0, 0, 1, 0, 0, 0 } } },

	{ "bytes per recipient domain: reserved once per key, each reconciled", NULL,
	    "policies = ( " RL("bytes", "\"rcpt_domain\"", "bytes", "\"1M\"", "2h",
		"tempfail", "") " );\n",
	    { CLIENT, MAIL(FROM, "SIZE=1000"), RCPT("<a@example.net>"),
	      RCPT("<b@example.net>"), RCPT("<c@example.com>"),
	      UNITS("bytes:example.net", 1000), UNITS("bytes:example.com", 1000),
	      DATA(1500), EOM,
	      UNITS("bytes:example.net", 1500), UNITS("bytes:example.com", 1500) },
	    { { "bytes", 4, 0, 0, 0, 0, 0, 0 } } },

	/* A later allow-list hit ends evaluation, but the bytes the limit
	 * reserved before it must still be the real size, not SIZE= (or 0). */
	{ "bytes: a later accept policy does not stop the real size counting", NULL,
	    "policies = ( " BYTES("\"1M\"", "tempfail", "") ",\n"
	    "  { name = \"many-ok\"; type = \"recipients\"; max = 1; action = \"accept\"; } );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r1@example.net>"),
	      RCPT_HIT("<r2@example.net>", POLICY_ACCEPT, "many-ok", NULL),
	      DATA(50000), EOM, UNITS(SKEY("bytes"), 50000) },
	    { { "bytes", ANY, 0, 0, 0, 0, 0, 0 } } },

	{ "bytes: over the limit together with an earlier message", NULL,
	    "policies = ( " BYTES("2000", "tempfail", "") " );\n",
	    { CLIENT, MAIL(FROM, "SIZE=1000"), RCPT("<r1@example.net>"), DATA(1000), EOM,
	      UNITS(SKEY("bytes"), 1000),
	      MAIL(FROM, "SIZE=500"), RCPT("<r1@example.net>"), UNITS(SKEY("bytes"), 1500),
	      DATA(1500), EOM_HIT(POLICY_TEMPFAIL, "bytes", NULL),
	      UNITS(SKEY("bytes"), 1000) },
	    { { "bytes", 3, 0, 1, 0, 0, 0, 0 } } },

	{ "bytes: declared SIZE= over the limit refused at RCPT", NULL,
	    "policies = ( " BYTES("2000", "tempfail", "") " );\n",
	    { CLIENT, MAIL(FROM, "SIZE=3000"),
	      RCPT_HIT("<r1@example.net>", POLICY_TEMPFAIL, "bytes", NULL),
	      GONE(SKEY("bytes")), ABORT, GONE(SKEY("bytes")) },
	    { { "bytes", 1, 0, 1, 0, 0, 0, 0 } } },

	{ "bytes: no SIZE= reserves 0, the real size counted at the end", NULL,
	    "policies = ( " BYTES("\"1M\"", "tempfail", "") " );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r1@example.net>"), GONE(SKEY("bytes")),
	      DATA(700), EOM, UNITS(SKEY("bytes"), 700), TTL(SKEY("bytes"), BYTES_TTL) },
	    { { "bytes", 2, 0, 0, 0, 0, 0, 0 } } },

	/* 6. Redis unavailable */
	{ "Redis down, on_redis_error accept by default", DOWN,
	    "policies = ( " MSGS " );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r1@example.net>"), DATA(10), EOM },
	    { { "msgs", 1, 0, 0, 0, 1, 0, 0 } } },

	{ "Redis down, on_redis_error tempfail", DOWN,
	    "on_redis_error = \"tempfail\";\npolicies = ( " MSGS " );\n",
	    { CLIENT, MAIL(FROM, NULL),
	      RCPT_HIT("<r1@example.net>", POLICY_TEMPFAIL, "msgs", "451 4.3.0 *"), ABORT },
	    { { "msgs", 1, 0, 1, 0, 1, 0, 0 } } },

	{ "Redis down, a policy's accept beats the global tempfail", DOWN,
	    "on_redis_error = \"tempfail\";\npolicies = ( "
	    RL("msgs", "\"sender\"", "messages", "100", "1h", "tempfail",
		"on_redis_error = \"accept\";") " );\n",
	    { CLIENT, MAIL(FROM, NULL), RCPT("<r1@example.net>"), DATA(10), EOM },
	    { { "msgs", 1, 0, 0, 0, 1, 0, 0 } } },

	{ "Redis down, a policy's tempfail beats the global accept", DOWN,
	    "on_redis_error = \"accept\";\npolicies = ( "
	    RL("msgs", "\"sender\"", "messages", "100", "1h", "tempfail",
		"on_redis_error = \"tempfail\";") " );\n",
	    { CLIENT, MAIL(FROM, NULL),
	      RCPT_HIT("<r1@example.net>", POLICY_TEMPFAIL, "msgs", "451 4.3.0 *"), ABORT },
	    { { "msgs", 1, 0, 1, 0, 1, 0, 0 } } },

	/* 7. per-policy exemptions */
	{ "per-policy exempt IPv4 client skips only that policy", NULL,
	    "policies = ( " RL("a", "\"sender\"", "messages", "100", "1h", "tempfail",
		"exempt = { clients = [ \"192.0.2.0/24\", \"2001:db8::/32\" ]; };") ", "
	    RL("b", "\"sender\"", "messages", "100", "1h", "tempfail", "") " );\n",
	    { CONNECT("192.0.2.9"), MAIL(FROM, NULL), RCPT("<r1@example.net>"), DATA(10),
	      EOM, GONE(SKEY("a")), UNITS(SKEY("b"), 1) },
	    { { "a", 0, 0, 0, 0, 0, 0, 0 }, { "b", 1, 0, 0, 0, 0, 0, 0 } } },

	{ "per-policy exempt IPv6 client skips only that policy", NULL,
	    "policies = ( " RL("a", "\"sender\"", "messages", "100", "1h", "tempfail",
		"exempt = { clients = [ \"192.0.2.0/24\", \"2001:db8::/32\" ]; };") ", "
	    RL("b", "\"sender\"", "messages", "100", "1h", "tempfail", "") " );\n",
	    { CONNECT("2001:db8:7::1"), MAIL(FROM, NULL), RCPT("<r1@example.net>"),
	      DATA(10), EOM, GONE(SKEY("a")), UNITS(SKEY("b"), 1) },
	    { { "a", 0, 0, 0, 0, 0, 0, 0 }, { "b", 1, 0, 0, 0, 0, 0, 0 } } },

	{ "client outside a policy's exempt networks is counted", NULL,
	    "policies = ( " RL("a", "\"sender\"", "messages", "100", "1h", "tempfail",
		"exempt = { clients = [ \"192.0.2.0/24\", \"2001:db8::/32\" ]; };") ", "
	    RL("b", "\"sender\"", "messages", "100", "1h", "tempfail", "") " );\n",
	    { CONNECT("192.0.3.9"), MAIL(FROM, NULL), RCPT("<r1@example.net>"), DATA(10),
	      EOM, UNITS(SKEY("a"), 1), UNITS(SKEY("b"), 1) },
	    { { "a", 1, 0, 0, 0, 0, 0, 0 }, { "b", 1, 0, 0, 0, 0, 0, 0 } } },

	{ "per-policy exempt authenticated skips only that policy", NULL,
	    "policies = ( " RL("a", "\"sender\"", "messages", "100", "1h", "tempfail",
		"exempt = { authenticated = true; };") ", "
	    RL("b", "\"sender\"", "messages", "100", "1h", "tempfail", "") " );\n",
	    { CLIENT, MAIL_AUTH(FROM, "alice"), RCPT("<r1@example.net>"), DATA(10), EOM,
	      GONE(SKEY("a")), UNITS(SKEY("b"), 1),
	      MAIL(FROM, NULL), RCPT("<r1@example.net>"), DATA(10), EOM,
	      UNITS(SKEY("a"), 1), UNITS(SKEY("b"), 2) },
	    { { "a", 1, 0, 0, 0, 0, 0, 0 }, { "b", 2, 0, 0, 0, 0, 0, 0 } } },
};

static const char *const kind_names[] = {
	"end", "connect", "mail", "rcpt", "data", "eom", "abort", "units", "gone", "ttl",
	"seed",
};

static void
run_step(const char *label, const char *prefix, size_t k, struct session *s,
    const struct step *st)
{
	const char *what = kind_names[st->kind];
	struct engine_verdict v;
	enum policy_stage stage = POLICY_CONNECT;
	enum policy_action got;
	char key[LINE_LEN], text[2048];
	size_t nbuckets;
	uint64_t units;

	snprintf(key, sizeof(key), "%srl:%s", prefix, st->arg != NULL ? st->arg : "");
	switch (st->kind) {
	case ST_END:
		return;
	case ST_CONNECT:
		tl_set_client(label, s, st->arg);
		ck_assert_msg(!engine_client_exempt(s), "%s: step %zu: client exempt",
		    label, k);
		stage = POLICY_CONNECT;
		break;
	case ST_MAIL: {
		const char *const args[] = { st->esmtp, NULL };
		engine_release(s);  /* as cb_envfrom: a MAIL without RSET */
		session_msg_start(s, st->arg, args, st->sasl);
		stage = POLICY_MAIL;
		break;
	}
	case ST_RCPT:
		session_set_rcpt(s, st->arg);
		stage = POLICY_RCPT;
		break;
	case ST_DATA:
		s->msg.size += st->n;
		return;
	case ST_EOM:
		stage = POLICY_EOM;
		break;
	case ST_ABORT:
		engine_release(s);
		session_msg_reset(s);
		return;
	case ST_UNITS:
		units = key_units(label, key, &nbuckets);
		ck_assert_msg(units == st->n, "%s: step %zu: %s holds %llu units (%zu "
		    "buckets), expected %llu", label, k, key, (unsigned long long)units,
		    nbuckets, (unsigned long long)st->n);
		return;
	case ST_GONE:
		assert_key_gone(label, k, key);
		return;
	case ST_TTL:
		assert_key_ttl(label, k, key, st->n);
		return;
	case ST_SEED: {
		char q[LINE_LEN * 2];
		long long now = strtoll(tl_redis_command("TIME"), NULL, 10);
		const char *line;

		ck_assert_msg(now > 1000000000LL, "%s: step %zu: Redis TIME", label, k);
		line = tl_redis_command("HSET %s %lld %llu", shell_quote(key, q, sizeof(q)),
		    (now - (long long)st->ago) * 1000, (unsigned long long)st->n);
		ck_assert_msg(strcmp(line, "1") == 0, "%s: step %zu: HSET %s: \"%s\"",
		    label, k, key, line);
		return;
	}
	}

	got = tl_engine_step(label, k, what, st->arg, s, stage, &v, st->want, st->policy);
	if ((got == POLICY_REJECT || got == POLICY_TEMPFAIL) && st->reply != NULL) {
		unsigned long long num = 0;
		reply_format(&v.reply, text, sizeof(text));
		ck_assert_msg(reply_matches(text, st->reply, &num), "%s: step %zu (%s): "
		    "reply \"%s\", expected \"%s\"", label, k, what, text, st->reply);
		ck_assert_msg(st->hi == 0 || (num >= st->lo && num <= st->hi), "%s: step %zu "
		    "(%s): reply \"%s\": %llu not within %llu to %llu", label, k, what, text,
		    num, st->lo, st->hi);
	}
	tl_step_done(s, stage, got);
}

static void
assert_counts(const char *label, const struct counts *want)
{
	const struct {
		enum stats_field f;
		uint64_t n;
	} fields[] = {
		{ STATS_CHECKED, want->checked }, { STATS_REJECTED, want->rejected },
		{ STATS_TEMPFAILED, want->tempfailed }, { STATS_DRY_RUN, want->dry_run },
		{ STATS_REDIS_ERRORS, want->redis_errors },
		{ STATS_DISCARDED, want->discarded }, { STATS_QUARANTINED, want->quarantined },
		{ STATS_ACCEPTED, 0 },
	};

	for (size_t i = 0; i < NELEM(fields); i++)
		if (fields[i].n != ANY)
			tl_assert_count(label, want->policy, fields[i].f, fields[i].n);
}

START_TEST(test_scenario)
{
	const struct scenario *sc = &scenarios[_i];
	char prefix[32], text[4096];
	struct session *s;
	struct cfg *c;

	snprintf(prefix, sizeof(prefix), "sc%d:", _i);
	conf_text(text, sizeof(text), sc->address, prefix, sc->conf);
	c = tl_load_config(sc->label, text);
	s = tl_session_new(sc->label, c);
	cfg_unref(c);              /* the session holds its own reference */
	for (size_t k = 0; k < NELEM(sc->steps) && sc->steps[k].kind != ST_END; k++)
		run_step(sc->label, prefix, k, s, &sc->steps[k]);
	for (size_t i = 0; i < NELEM(sc->counts) && sc->counts[i].policy != NULL; i++)
		assert_counts(sc->label, &sc->counts[i]);
	engine_release(s);         /* as cb_close */
}
END_TEST

static Suite *
ratelimit_suite(void)
{
	Suite *s = suite_create("ratelimit");
	TCase *tc;

	tc = tcase_create("config");
	tcase_add_loop_test(tc, test_config, 0, (int)NELEM(cfg_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("keys");
	tcase_add_checked_fixture(tc, NULL, tl_teardown);
	tcase_add_loop_test(tc, test_key, 0, (int)NELEM(key_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("counting");
	tcase_add_checked_fixture(tc, NULL, tl_teardown);
	tcase_add_loop_test(tc, test_scenario, 0, (int)NELEM(scenarios));
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	log_open(true, false);
	/* Started here, not in a forked test, so that it outlives every test. */
	redis_sock = tl_redis_start();
	return tl_run(ratelimit_suite());
}
