/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_config - unit tests of milter/cfg: loading, validation messages,
 * defaults, @include, reload sharing and snapshot reference counting.
 *
 * Each case writes a small configuration into a private mkdtemp directory
 * (made by main() before any test runs and removed by main() afterwards, so
 * it goes away also when tests fail in Check's forked children) and loads it
 * with cfg_load(), collecting every report.  "@DIR@" in a case's text stands
 * for that directory.  Error cases check what an operator reads: the report
 * starts with "<path>:<line>: ", says what is wrong, and the load fails.
 *
 * Cases are tables run with tcase_add_loop_test; each failure message starts
 * with the case label.  Tests that load configurations free them with
 * cfg_unref and call stats_reset(), so that the suite is clean under
 * AddressSanitizer's leak checker.
 */
#include "config.h"

#include <sys/stat.h>
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "milter/addr.h"
#include "milter/cfg.h"
#include "milter/reply.h"
#include "milter/stats.h"
#include "milter/store_redis.h"
#include "policies/policy.h"
#include "tests/testlib.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static char tmpdir[] = "/tmp/check_config.XXXXXX";

/* ---- helpers */

static struct tl_reports rep;

/* All reports on one line each, for failure messages. */
static const char *
all_reports(void)
{
	return tl_reports_text(&rep, 600);
}

/* Write text (with "@DIR@" replaced by tmpdir) to path; 0 or -1 with errno. */
static int
write_raw(const char *path, const char *text, mode_t mode)
{
	FILE *fp = fopen(path, "w");

	if (fp == NULL)
		return -1;
	for (const char *p = text; *p != '\0'; p++) {
		if (strncmp(p, "@DIR@", 5) == 0) {
			fputs(tmpdir, fp);
			p += 4;
		} else {
			fputc(*p, fp);
		}
	}
	if (fclose(fp) != 0)
		return -1;
	return chmod(path, mode);
}

/* The same for tmpdir/name inside a test; returns the path. */
static const char *
write_file(const char *name, const char *text, mode_t mode)
{
	static char path[4096];

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	ck_assert_msg(write_raw(path, text, mode) == 0, "%s: %s", path, strerror(errno));
	return path;
}

static struct cfg *
load_text(const char *name, const char *text, struct cfg *prev, char *path,
    size_t pathlen)
{
	const char *p = write_file(name, text, 0644);

	snprintf(path, pathlen, "%s", p);
	memset(&rep, 0, sizeof(rep));
	return cfg_load(path, prev, tl_collect, &rep);
}

static void
make_dir(const char *name)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	ck_assert_msg(mkdir(path, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", path,
	    strerror(errno));
}

/* Pieces of configuration text.  The line numbers in the tables count on them. */
#define LISTEN "listen = \"unix:/run/pm/milter.sock\";\n"
#define REDIS_ADDR "unix:/nonexistent/redis.sock"
/* One policy on line 3. */
#define POL(x) LISTEN "policies = (\n  { " x " }\n);\n"
#define SIZEP "name = \"p\"; type = \"size\"; max = \"25M\"; "
#define REJ(r) POL(SIZEP "action = \"reject\"; reply = " r ";")
#define TMPF(r) POL(SIZEP "action = \"tempfail\"; reply = " r ";")
/* A redis group whose line 3 is x. */
#define REDIS(x) LISTEN "redis = {\n  address = \"" REDIS_ADDR "\";\n  " x "\n};\n"
#define ONE_POLICY "policies = ( { " SIZEP "action = \"reject\"; } );\n"
#define X4 ", \"x\", \"x\", \"x\", \"x\""
#define X32 X4 X4 X4 X4 X4 X4 X4 X4
#define NAME65 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

/* ---- bad configurations */

static const struct {
	const char *label;
	const char *text;
	unsigned line;             /* of the first error */
	const char *want;          /* in the first error */
	int nerrors;               /* errors reported in all */
	const char *unwanted;      /* must not be in the first error, or NULL */
} bad[] = {
	/* review findings: keys that would collide, specs that fail only at start */
	{ "prefix too long", REDIS("prefix = \"" NAME65 "\";") ONE_POLICY, 4,
	    "must be at most 64 of", 1, NULL },
	{ "prefix with a space", REDIS("prefix = \"pm x:\";") ONE_POLICY, 4,
	    "redis prefix \"pm x:\"", 1, NULL },
	{ "inet listen with host:port after @",
	    "listen = \"inet:8890@127.0.0.1:99\";\n" ONE_POLICY, 1,
	    "expected inet:PORT@ADDRESS", 1, NULL },
	{ "inet listen with nothing after @", "listen = \"inet:8890@\";\n" ONE_POLICY, 1,
	    "expected inet:PORT@ADDRESS", 1, NULL },

	/* libconfig syntax */
	{ "syntax error", LISTEN "foo = ;\n", 2, "syntax error", 1, NULL },
	{ "syntax error later line", LISTEN "\n\npolicies = ( { name = \"a\" );\n",
	    4, "syntax error", 1, NULL },
	{ "duplicate setting", LISTEN LISTEN, 2, "duplicate setting", 1, NULL },
	{ "include missing file", LISTEN "@include \"missing.conf\"\n", 2,
	    "cannot open include file", 1, NULL },

	/* top level */
	{ "unknown key suggests", "lisen = \"unix:/run/pm/milter.sock\";\n", 1,
	    "unknown setting \"lisen\" in the top level; did you mean \"listen\"?", 2, NULL },
	{ "unknown key policies typo", LISTEN "polices = ();\n", 2,
	    "did you mean \"policies\"?", 1, NULL },
	{ "unknown key no suggestion", LISTEN "frobnicate = 1;\n", 2,
	    "unknown setting \"frobnicate\" in the top level", 1, "did you mean" },
	{ "missing listen", ONE_POLICY, 0, "required setting \"listen\" is missing", 1, NULL },
	{ "empty file", "", 0, "required setting \"listen\" is missing", 1, NULL },
	{ "listen postfix order", "listen = \"inet:127.0.0.1:8890\";\n", 1,
	    "expected inet:PORT@ADDRESS such as \"inet:8890@127.0.0.1\" (libmilter's "
	    "order, not Postfix's inet:host:port)", 1, NULL },
	{ "listen port out of range", "listen = \"inet:70000@127.0.0.1\";\n", 1,
	    "expected inet:PORT@ADDRESS", 1, NULL },
	{ "listen relative socket", "listen = \"unix:milter.sock\";\n", 1,
	    "the socket path must be absolute", 1, NULL },
	{ "listen unknown scheme", "listen = \"tcp:8890\";\n", 1,
	    "must be \"unix:/path\" or \"inet:PORT@ADDRESS\"", 1, NULL },
	{ "listen not a string", "listen = 8890;\n", 1,
	    "listen must be a string, not a number", 1, NULL },
	{ "metrics without an address", LISTEN "metrics = \"inet:9717\";\n", 2,
	    "metrics \"inet:9717\": expected inet:PORT@ADDRESS with a port of 1 to 65535 "
	    "and an IP address, such as \"inet:9717@127.0.0.1\"", 1, NULL },
	{ "metrics with a host name", LISTEN "metrics = \"inet:9717@localhost\";\n", 2,
	    "metrics \"inet:9717@localhost\": \"localhost\" is not an IPv4 address (an IP "
	    "literal, no host name", 1, NULL },
	{ "metrics IPv6 under inet:", LISTEN "metrics = \"inet:9717@::1\";\n", 2,
	    "inet6: for IPv6", 1, NULL },
	{ "metrics port out of range", LISTEN "metrics = \"inet:0@127.0.0.1\";\n", 2,
	    "a port of 1 to 65535", 1, NULL },
	{ "metrics as a unix socket", LISTEN "metrics = \"unix:/run/pm/metrics.sock\";\n",
	    2, "expected \"inet:PORT@ADDRESS\" or \"inet6:PORT@ADDRESS\"", 1, NULL },
	{ "metrics not a string", LISTEN "metrics = 9717;\n", 2,
	    "metrics must be a string, not a number", 1, NULL },
	{ "metrics misspelt", LISTEN "metric = \"inet:9717@127.0.0.1\";\n", 2,
	    "unknown setting \"metric\" in the top level; did you mean \"metrics\"?", 1,
	    NULL },
	{ "socket_mode not octal", LISTEN "socket_mode = \"0999\";\n", 2,
	    "socket_mode \"0999\" must be an octal mode such as \"0660\"", 1, NULL },
	{ "socket_mode too large", LISTEN "socket_mode = \"01777\";\n", 2,
	    "must be an octal mode", 1, NULL },
	{ "socket_mode empty", LISTEN "socket_mode = \"\";\n", 2,
	    "must be an octal mode", 1, NULL },
	{ "socket_mode a number", LISTEN "socket_mode = 660;\n", 2,
	    "socket_mode must be a string, not a number", 1, NULL },
	{ "group without user", LISTEN "group = \"postfix\";\n", 2,
	    "group is set but user is not", 1, NULL },
	{ "on_redis_error unknown", LISTEN "on_redis_error = \"reject\";\n", 2,
	    "on_redis_error must be \"accept\" or \"tempfail\", not \"reject\"", 1, NULL },

	/* redis */
	{ "redis not a group", LISTEN "redis = \"127.0.0.1:6379\";\n", 2,
	    "redis must be a group { address = ...; }, not a string", 1, NULL },
	{ "redis unknown key suggests", REDIS("timout = \"100ms\";"), 4,
	    "unknown setting \"timout\" in redis; did you mean \"timeout\"?", 1, NULL },
	{ "redis missing address", LISTEN "redis = {\n  pool = 4;\n};\n", 2,
	    "redis: required setting \"address\" is missing", 1, NULL },
	/* redis: Sentinels instead of an address */
	{ "redis address and sentinels", LISTEN "redis = {\n  address = \"" REDIS_ADDR
	    "\";\n  sentinels = [ \"127.0.0.1:26379\" ];\n  master_name = \"mail\";\n};\n",
	    4, "redis: set either address or sentinels, not both", 1, NULL },
	{ "redis sentinels without master_name", LISTEN "redis = {\n  sentinels = "
	    "[ \"127.0.0.1:26379\" ];\n};\n", 3,
	    "redis: sentinels need master_name", 1, NULL },
	{ "redis master_name without sentinels", REDIS("master_name = \"mail\";"), 4,
	    "redis: master_name applies only with sentinels", 1, NULL },
	{ "redis sentinel_password_file without sentinels",
	    REDIS("sentinel_password_file = \"/x\";"), 4,
	    "redis: sentinel_password_file applies only with sentinels", 1, NULL },
	{ "redis sentinel host name", LISTEN "redis = {\n  master_name = \"mail\";\n"
	    "  sentinels = [ \"127.0.0.1:26379\",\n    \"sentinel.example:26379\" ];\n};\n",
	    5, "redis sentinels: Redis address \"sentinel.example:26379\": host must be "
	    "an IP address", 1, NULL },
	{ "redis sentinel on a unix socket", LISTEN "redis = { master_name = \"mail\"; "
	    "sentinels = [ \"unix:/run/s.sock\" ]; };\n", 2,
	    "expected IP:port or [IPv6]:port", 1, NULL },
	{ "redis sentinels empty", LISTEN "redis = {\n  master_name = \"mail\";\n"
	    "  sentinels = [ ];\n};\n", 4, "redis: sentinels is empty", 1, NULL },
	{ "redis master_name with a space", LISTEN "redis = {\n  sentinels = "
	    "[ \"127.0.0.1:26379\" ];\n  master_name = \"my mail\";\n};\n", 4,
	    "master_name \"my mail\" must be 1 to 200 characters without spaces", 1, NULL },
	{ "redis sentinel password file missing", LISTEN "redis = {\n  sentinels = "
	    "[ \"127.0.0.1:26379\" ];\n  master_name = \"mail\";\n"
	    "  sentinel_password_file = \"/nonexistent/s.pass\";\n};\n", 5,
	    "sentinel_password_file \"/nonexistent/s.pass\": No such file", 1, NULL },
	{ "redis host name", LISTEN "redis = { address = \"redis.example:6379\"; };\n", 2,
	    "redis address: Redis address \"redis.example:6379\": host must be an IP "
	    "address (no DNS lookups at run time)", 1, NULL },
	{ "redis bare IPv6", LISTEN "redis = { address = \"::1:6379\"; };\n", 2,
	    "an IPv6 address must be written [IPv6]:port", 1, NULL },
	{ "redis port zero", LISTEN "redis = { address = \"127.0.0.1:0\"; };\n", 2,
	    "port must be 1..65535", 1, NULL },
	{ "redis no port", LISTEN "redis = { address = \"127.0.0.1\"; };\n", 2,
	    "expected IP:port, [IPv6]:port or unix:/path", 1, NULL },
	{ "redis relative socket", LISTEN "redis = { address = \"unix:redis.sock\"; };\n", 2,
	    "unix socket path must be absolute", 1, NULL },
	{ "timeout unit with space", REDIS("timeout = \"100 ms\";"), 4,
	    "timeout: duration \"100 ms\" has an unknown unit \" ms\"", 1, NULL },
	{ "timeout uppercase unit", REDIS("timeout = \"1S\";"), 4,
	    "unknown unit \"S\"", 1, NULL },
	/* The lower limit is 1 ms; "1s" would tell the operator 500ms is invalid. */
	{ "timeout zero", REDIS("timeout = \"0ms\";"), 4,
	    "timeout is out of range (1ms to 60s)", 1, NULL },
	{ "timeout too long", REDIS("timeout = \"2m\";"), 4,
	    "timeout is out of range", 1, NULL },
	{ "timeout bare seconds too long", REDIS("timeout = 61;"), 4,
	    "timeout is out of range", 1, NULL },
	{ "timeout negative", REDIS("timeout = -1;"), 4,
	    "timeout must not be negative", 1, NULL },
	{ "timeout overflow", REDIS("timeout = \"99999999999999999999s\";"), 4,
	    "is too large", 1, NULL },
	{ "timeout wrong type", REDIS("timeout = true;"), 4,
	    "timeout must be a duration such as \"10m\", not true or false", 1, NULL },
	{ "connect_timeout too long", REDIS("connect_timeout = \"61s\";"), 4,
	    "connect_timeout is out of range", 1, NULL },
	{ "connect_timeout decimal", REDIS("connect_timeout = 0.5;"), 4,
	    "connect_timeout must be a duration such as \"10m\", not a decimal number",
	    1, NULL },
	{ "pool zero", REDIS("pool = 0;"), 4, "pool = 0 is out of range (1 to 1024)", 1, NULL },
	{ "pool too large", REDIS("pool = 1025;"), 4,
	    "pool = 1025 is out of range (1 to 1024)", 1, NULL },
	{ "pool a string", REDIS("pool = \"16\";"), 4,
	    "pool must be a whole number, not a string", 1, NULL },
	{ "database negative", REDIS("database = -1;"), 4,
	    "database = -1 is out of range (0 to 1000000)", 1, NULL },
	{ "username without password_file", REDIS("username = \"pm\";"), 4,
	    "redis: username needs password_file", 1, NULL },
	{ "password_file missing", REDIS("password_file = \"@DIR@/nonexistent.pass\";"), 4,
	    "nonexistent.pass\": No such file or directory", 1, NULL },
	{ "password_file empty", REDIS("password_file = \"@DIR@/empty.pass\";"), 4,
	    "empty.pass\" is empty", 1, NULL },
	{ "prefix not a string", REDIS("prefix = 1;"), 4,
	    "prefix must be a string, not a number", 1, NULL },

	/* exempt */
	{ "exempt not a group", LISTEN "exempt = [ \"127.0.0.1\" ];\n", 2,
	    "exempt must be a group { clients = [...]; }, not an array", 1, NULL },
	{ "exempt unknown key suggests", LISTEN "exempt = { client = [ \"::1\" ]; };\n", 2,
	    "unknown setting \"client\" in exempt; did you mean \"clients\"?", 1, NULL },
	{ "exempt host bits", LISTEN "exempt = {\n  clients = [ \"192.0.2.1/24\" ];\n};\n",
	    3, "exempt clients: \"192.0.2.1/24\" has host bits set; did you mean "
	    "192.0.2.0/24?", 1, NULL },
	{ "exempt host bits IPv6", LISTEN "exempt = { clients = [ \"2001:db8::1/32\" ]; };\n",
	    2, "did you mean 2001:db8::/32?", 1, NULL },
	{ "exempt invalid IP", LISTEN "exempt = { clients = [ \"::1\", \"300.1.2.3\" ]; };\n",
	    2, "\"300.1.2.3\" is not an IP address or network", 1, NULL },
	{ "exempt prefix too long", LISTEN "exempt = { clients = [ \"192.0.2.0/33\" ]; };\n",
	    2, "prefix length must be 0 to 32", 1, NULL },
	{ "exempt clients a string", LISTEN "exempt = { clients = \"127.0.0.1\"; };\n", 2,
	    "clients must be an array", 1, NULL },
	{ "exempt client a number", LISTEN "exempt = { clients = [ 1 ]; };\n", 2,
	    "must be a string, not a number", 1, "(null)" },
	{ "exempt authenticated not bool", LISTEN "exempt = { authenticated = \"yes\"; };\n",
	    2, "authenticated must be true or false", 1, NULL },

	/* policies */
	{ "policies a group", LISTEN "policies = { name = \"a\"; };\n", 2,
	    "policies must be a list ( { ... }, { ... } ), not a group", 1, NULL },
	{ "policies an array", LISTEN "policies = [ \"a\" ];\n", 2,
	    "policies must be a list ( { ... }, { ... } ), not an array", 1, NULL },
	{ "policy not a group", LISTEN "policies = (\n  \"max-size\" );\n", 3,
	    "policy 1 must be a group", 1, NULL },
	{ "policy missing name",
	    POL("type = \"size\"; max = \"1M\"; action = \"reject\";"), 3,
	    "policy 1 has no name", 1, NULL },
	{ "policy name uppercase",
	    POL("name = \"Max-Size\"; type = \"size\"; max = \"1M\"; action = \"reject\";"), 3,
	    "policy name \"Max-Size\" must be 1 to 64 of a-z 0-9 _ -", 1, NULL },
	{ "policy name space",
	    POL("name = \"max size\"; type = \"size\"; max = \"1M\"; action = \"reject\";"), 3,
	    "policy name \"max size\" must be 1 to 64", 1, NULL },
	{ "policy name 65 chars",
	    POL("name = \"" NAME65 "\"; type = \"size\"; max = \"1M\"; action = \"reject\";"), 3,
	    "must be 1 to 64 of a-z 0-9 _ -", 1, NULL },
	{ "policy name empty",
	    POL("name = \"\"; type = \"size\"; max = \"1M\"; action = \"reject\";"), 3,
	    "policy name \"\" must be 1 to 64", 1, NULL },
	{ "policy name a number",
	    POL("name = 5; type = \"size\"; max = \"1M\"; action = \"reject\";"), 3,
	    "name must be a string, not a number", 1, NULL },
	{ "policy name duplicate", LISTEN "policies = (\n"
	    "  { name = \"a\"; type = \"size\"; max = \"1M\"; action = \"reject\"; },\n"
	    "  { name = \"a\"; type = \"recipients\"; max = 5; action = \"reject\"; }\n);\n",
	    4, "policy name \"a\" is already used at line 3", 1, NULL },
	{ "policy missing type", POL("name = \"a\"; max = \"1M\"; action = \"reject\";"), 3,
	    "policy \"a\" has no type", 1, NULL },
	{ "policy unknown type suggests",
	    POL("name = \"a\"; type = \"szie\"; max = \"1M\"; action = \"reject\";"), 3,
	    "policy \"a\": unknown type \"szie\"; did you mean \"size\"? (known: size, "
	    "recipients, ratelimit, block)", 1, NULL },
	{ "policy unknown type",
	    POL("name = \"a\"; type = \"greylist\"; action = \"reject\";"), 3,
	    "unknown type \"greylist\" (known: size, recipients, ratelimit, block)", 1, NULL },
	{ "policy unknown key suggests", REJ("\"552 5.3.4 Too big\"; replay = 1"), 3,
	    "unknown setting \"replay\" in policy \"p\"; did you mean \"reply\"?", 1, NULL },
	{ "policy unknown key max typo",
	    POL("name = \"a\"; type = \"recipients\"; max = 5; maxx = 6; action = \"reject\";"),
	    3, "unknown setting \"maxx\" in policy \"a\"; did you mean \"max\"?", 1, NULL },
	{ "policy missing max", POL("name = \"a\"; type = \"size\"; action = \"reject\";"), 3,
	    "policy \"a\": required setting \"max\" is missing", 1, NULL },
	{ "size max wrong type",
	    POL("name = \"a\"; type = \"size\"; max = true; action = \"reject\";"), 3,
	    "max must be a size such as \"25M\", not true or false", 1, NULL },
	{ "recipients max wrong type",
	    POL("name = \"a\"; type = \"recipients\"; max = \"100\"; action = \"reject\";"), 3,
	    "max must be a whole number, not a string", 1, NULL },
	{ "recipients max out of range",
	    POL("name = \"a\"; type = \"recipients\"; max = 1000001; action = \"reject\";"), 3,
	    "max = 1000001 is out of range (1 to 1000000)", 1, NULL },
	{ "recipients max zero",
	    POL("name = \"a\"; type = \"recipients\"; max = 0; action = \"reject\";"), 3,
	    "max = 0 is out of range (1 to 1000000)", 1, NULL },
	{ "size max zero", POL("name = \"a\"; type = \"size\"; max = 0; action = \"reject\";"),
	    3, "max must be at least 1", 1, NULL },
	{ "size max negative",
	    POL("name = \"a\"; type = \"size\"; max = -5; action = \"reject\";"), 3,
	    "max must not be negative", 1, NULL },
	{ "size bad unit",
	    POL("name = \"a\"; type = \"size\"; max = \"25MB\"; action = \"reject\";"), 3,
	    "max: size \"25MB\" has an unknown unit \"MB\" (units: K, M, G, 1024-based", 1, NULL },
	{ "size overflow",
	    POL("name = \"a\"; type = \"size\"; max = \"18446744073709551615K\"; "
	    "action = \"reject\";"), 3,
	    "max: size \"18446744073709551615K\" is too large", 1, NULL },
	{ "policy missing action", POL(SIZEP), 3,
	    "policy \"p\" has no action (accept, reject, tempfail, discard, quarantine)",
	    1, NULL },
	{ "policy unknown action suggests", POL(SIZEP "action = \"rejct\";"), 3,
	    "unknown action \"rejct\"; did you mean \"reject\"?", 1, NULL },
	{ "policy unknown action", POL(SIZEP "action = \"bounce\";"), 3,
	    "unknown action \"bounce\" (accept, reject, tempfail, discard, quarantine)",
	    1, NULL },
	{ "policy action a number", POL(SIZEP "action = 1;"), 3,
	    "action must be a string, not a number", 1, NULL },
	{ "dry_run not bool", POL(SIZEP "action = \"reject\"; dry_run = \"yes\";"), 3,
	    "dry_run must be true or false", 1, NULL },
	{ "policy on_redis_error unknown",
	    POL(SIZEP "action = \"reject\"; on_redis_error = \"fail\";"), 3,
	    "on_redis_error must be \"accept\" or \"tempfail\", not \"fail\"", 1, NULL },

	/* replies */
	{ "reply 2xx", REJ("\"250 2.0.0 OK\""), 3,
	    "reply code 250 is not a refusal: a milter can only refuse (4xx or 5xx); "
	    "success replies are the MTA's to give", 1, NULL },
	{ "reply 3xx", REJ("\"354 Go ahead\""), 3,
	    "reply code 354 is not a refusal: a milter can only refuse", 1, NULL },
	{ "reject with 4xx", REJ("\"451 4.7.1 Later\""), 3,
	    "action \"reject\" needs a 5xx reply code, not 451 (use action \"tempfail\" "
	    "for 4xx)", 1, NULL },
	{ "tempfail with 5xx", TMPF("\"550 5.7.1 No\""), 3,
	    "action \"tempfail\" needs a 4xx reply code, not 550 (use action \"reject\" "
	    "for 5xx)", 1, NULL },
	{ "enhanced class mismatch", REJ("\"550 4.7.1 No\""), 3,
	    "enhanced code 4.7.1 does not match reply code 550: its first digit must be 5",
	    1, NULL },
	{ "enhanced code two parts", REJ("\"550 5.7 No\""), 3,
	    "\"5.7\" is not an enhanced status code (class.subject.detail, e.g. 5.7.1)",
	    1, NULL },
	{ "enhanced detail four digits", REJ("\"550 5.7.1000 No\""), 3,
	    "\"5.7.1000\" is not an enhanced status code", 1, NULL },
	{ "second digit above 5", REJ("\"571 5.7.1 No\""), 3,
	    "reply code 571 is not an SMTP refusal code (4xx or 5xx, second digit 0-5)",
	    1, NULL },
	{ "first digit 6", REJ("\"650 No\""), 3,
	    "reply code 650 is not an SMTP refusal code", 1, NULL },
	{ "reply without code", REJ("\"Go away\""), 3,
	    "reply \"Go away\" must start with a three-digit code such as 550 or 451",
	    1, NULL },
	{ "reply unknown variable", REJ("\"550 5.7.1 Hello ${user}\""), 3,
	    "reply uses unknown variable ${user} (known: policy key limit", 1, NULL },
	{ "reply lone dollar", REJ("\"550 5.7.1 That costs $5\""), 3,
	    "reply has a '$' that starts no ${name}; write $$ for a dollar sign", 1, NULL },
	{ "reply unclosed variable", REJ("\"550 5.7.1 over ${limit\""), 3,
	    "reply has a '$' that starts no ${name}", 1, NULL },
	{ "reply non-ASCII", REJ("\"550 5.7.1 Caf\xc3\xa9 closed\""), 3,
	    "reply may hold only printable ASCII (character 0xc3", 1, NULL },
	{ "reply tab", REJ("\"550 5.7.1 a\\tb\""), 3,
	    "reply may hold only printable ASCII (character 0x09", 1, NULL },
	{ "reply non-ASCII second line", REJ("( \"550 5.7.1 No\", \"Caf\xc3\xa9\" )"), 3,
	    "printable ASCII (character 0xc3", 1, NULL },
	{ "reply with accept", POL(SIZEP "action = \"accept\"; reply = \"550 5.7.1 No\";"),
	    3, "policy \"p\": reply is only sent with action reject or tempfail; action "
	    "\"accept\"", 1, NULL },
	{ "reply with quarantine",
	    POL(SIZEP "action = \"quarantine\"; reply = \"550 5.7.1 No\";"), 3,
	    "reply is only sent with action reject or tempfail", 1, NULL },
	{ "reply multi-line dash", REJ("\"550-5.7.1 First line\""), 3,
	    "for a multi-line reply write a list of strings, not \"550-\"", 1, NULL },
	{ "reply 33 lines", REJ("( \"550 5.7.1 No\"" X32 " )"), 3,
	    "reply has 33 lines; libmilter sends at most 32", 1, NULL },
	{ "reply empty list", REJ("()"), 3, "reply must have 1 to 32 lines", 1, NULL },
	{ "reply a number", REJ("550"), 3,
	    "reply must be a string or a list of strings, not a number", 1, NULL },
	{ "reply line a number", REJ("( \"550 5.7.1 No\", 5 )"), 3,
	    "must be a string, not a number", 1, "(null)" },
};

START_TEST(bad_config)
{
	const char *label = bad[_i].label;
	char name[64], path[4096], prefix[4200];
	struct cfg *c;

	snprintf(name, sizeof(name), "bad-%02d.conf", _i);
	c = load_text(name, bad[_i].text, NULL, path, sizeof(path));
	if (c != NULL)
		cfg_unref(c);
	ck_assert_msg(c == NULL, "%s: loaded; reports:%s", label, all_reports());
	ck_assert_msg(rep.nerr == bad[_i].nerrors, "%s: %d errors, want %d:%s", label,
	    rep.nerr, bad[_i].nerrors, all_reports());
	snprintf(prefix, sizeof(prefix), "%s:%u: ", path, bad[_i].line);
	ck_assert_msg(strncmp(rep.err[0], prefix, strlen(prefix)) == 0,
	    "%s: error does not start with \"%s\":%s", label, prefix, all_reports());
	ck_assert_msg(strstr(rep.err[0], bad[_i].want) != NULL,
	    "%s: error lacks \"%s\":%s", label, bad[_i].want, all_reports());
	ck_assert_msg(bad[_i].unwanted == NULL || strstr(rep.err[0], bad[_i].unwanted) == NULL,
	    "%s: error holds \"%s\":%s", label, bad[_i].unwanted, all_reports());
	stats_reset();
}
END_TEST

/* ---- every error in one run */

static const struct {
	const char *label;
	const char *text;
	int nerrors;
	unsigned lines[8];
	const char *want[8];
} multi[] = {
	{ "five top-level errors",
	    LISTEN
	    "socket_mode = \"999\";\n"
	    "group = \"postfix\";\n"
	    "on_redis_error = \"maybe\";\n"
	    "exempt = { clients = [ \"10.0.0.1/8\" ]; };\n"
	    "policies = ( { name = \"a\"; type = \"size\"; max = \"1M\"; action = \"rejct\"; } );\n",
	    5, { 2, 3, 4, 5, 6 },
	    { "socket_mode", "group is set", "on_redis_error", "host bits", "rejct" } },
	{ "errors in several policies and redis",
	    LISTEN
	    "redis = { address = \"redis.example:6379\"; };\n"
	    "policies = (\n"
	    "  { name = \"a\"; type = \"size\"; max = \"1X\"; action = \"reject\"; },\n"
	    "  { name = \"b\"; type = \"recipients\"; max = 5; action = \"reject\";\n"
	    "    reply = \"450 4.5.3 Too many\"; },\n"
	    "  { name = \"c\"; type = \"nosuch\"; },\n"
	    "  { name = \"d\"; type = \"size\"; max = \"1M\"; action = \"reject\"; dry_run = 1; }\n"
	    ");\n",
	    5, { 2, 4, 6, 7, 8 },
	    { "host must be an IP address", "unknown unit \"X\"", "needs a 5xx",
	      "unknown type \"nosuch\"", "dry_run must be true or false" } },
};

START_TEST(all_errors_in_one_run)
{
	const char *label = multi[_i].label;
	char name[64], path[4096], prefix[4200];
	struct cfg *c;

	snprintf(name, sizeof(name), "multi-%d.conf", _i);
	c = load_text(name, multi[_i].text, NULL, path, sizeof(path));
	if (c != NULL)
		cfg_unref(c);
	ck_assert_msg(c == NULL, "%s: loaded", label);
	ck_assert_msg(rep.nerr == multi[_i].nerrors, "%s: %d errors, want %d:%s", label,
	    rep.nerr, multi[_i].nerrors, all_reports());
	for (int k = 0; k < multi[_i].nerrors; k++) {
		snprintf(prefix, sizeof(prefix), "%s:%u: ", path, multi[_i].lines[k]);
		ck_assert_msg(strncmp(rep.err[k], prefix, strlen(prefix)) == 0,
		    "%s: error %d does not start with \"%s\":%s", label, k + 1, prefix,
		    all_reports());
		ck_assert_msg(strstr(rep.err[k], multi[_i].want[k]) != NULL,
		    "%s: error %d lacks \"%s\":%s", label, k + 1, multi[_i].want[k],
		    all_reports());
	}
	ck_assert_msg(rep.nwarn == 0, "%s: warnings:%s", label, all_reports());
	stats_reset();
}
END_TEST

/* ---- warnings: the configuration loads, and the operator is told */

static const struct {
	const char *label;
	const char *text;
	unsigned line;
	const char *want;          /* NULL: no warning at all */
} warnings[] = {
	{ "socket_mode with an inet socket",
	    "listen = \"inet:8890@127.0.0.1\";\nsocket_mode = \"0660\";\n" ONE_POLICY, 1,
	    "warning: socket_mode applies to unix sockets only" },
	{ "541 is not standard", REJ("\"541 5.7.1 Sender refused\""), 3,
	    "warning: reply code 541 is not defined by any RFC; clients may misread it: "
	    "550 means the same and is standard" },
	{ "422 is not standard", TMPF("\"422 4.2.2 Mailbox full\""), 3,
	    "reply code 422 is not defined by any RFC; clients may misread it: 452 means "
	    "the same" },
	{ "523 is not standard", REJ("\"523 5.3.4 Too big\""), 3,
	    "reply code 523 is not defined by any RFC; clients may misread it: 552 means "
	    "the same" },
	{ "459 falls back to 451", TMPF("\"459 4.5.9 Later\""), 3,
	    "reply code 459 is not defined by any RFC; clients may misread it: 451 means "
	    "the same" },
	{ "559 falls back to 550", REJ("\"559 5.7.1 No\""), 3,
	    "reply code 559 is not defined by any RFC; clients may misread it: 550 means "
	    "the same" },
	{ "world-readable password file",
	    REDIS("password_file = \"@DIR@/world.pass\";") ONE_POLICY, 4,
	    "world.pass\" is readable by everyone; chmod o-r it" },
	{ "no policies", LISTEN, 0, "warning: no policies: every message is accepted" },
	{ "listen on every interface: no address",
	    "# a comment\n\nlisten = \"inet:8890\";\n" ONE_POLICY, 3,
	    "warning: listen \"inet:8890\" accepts connections on every interface: anyone "
	    "who reaches port 8890 can spend rate-limit units; bind it to 127.0.0.1 "
	    "(inet:8890@127.0.0.1) or use a unix socket" },
	{ "listen on every interface: 0.0.0.0", "listen = \"inet:25252@0.0.0.0\";\n"
	    ONE_POLICY, 1, "listen \"inet:25252@0.0.0.0\" accepts connections on every "
	    "interface: anyone who reaches port 25252" },
	{ "listen on every interface: ::", "listen = \"inet6:8890@::\";\n" ONE_POLICY, 1,
	    "every interface: anyone who reaches port 8890 can spend rate-limit units; "
	    "bind it to ::1 (inet6:8890@::1)" },
	{ "listen on every interface: [::]", "listen = \"inet6:8890@[::]\";\n" ONE_POLICY, 1,
	    "listen \"inet6:8890@[::]\" accepts connections on every interface" },
	{ "listen on every interface: inet6 without address", "listen = \"inet6:8890\";\n"
	    ONE_POLICY, 1, "listen \"inet6:8890\" accepts connections on every interface" },
	{ "listen on loopback", "listen = \"inet:8890@127.0.0.1\";\n" ONE_POLICY, 0, NULL },
	{ "listen on IPv6 loopback", "listen = \"inet6:8890@::1\";\n" ONE_POLICY, 0, NULL },
	{ "listen on one address", "listen = \"inet:8890@192.0.2.1\";\n" ONE_POLICY, 0, NULL },
	{ "metrics on every interface", LISTEN "metrics = \"inet:9717@0.0.0.0\";\n"
	    ONE_POLICY, 2, "warning: metrics \"inet:9717@0.0.0.0\" can be reached from other "
	    "hosts: anyone who reaches it reads policy names and traffic counts; bind it to "
	    "127.0.0.1 or let a firewall guard the port" },
	{ "metrics on an IPv6 address", LISTEN "metrics = \"inet6:9717@2001:db8::1\";\n"
	    ONE_POLICY, 2, "can be reached from other hosts: anyone who reaches it reads "
	    "policy names and traffic counts; bind it to ::1" },
	{ "metrics on loopback", LISTEN "metrics = \"inet:9717@127.0.0.1\";\n" ONE_POLICY,
	    0, NULL },
	{ "metrics on IPv6 loopback", LISTEN "metrics = \"inet6:9717@[::1]\";\n"
	    ONE_POLICY, 0, NULL },
	{ "standard 550", REJ("\"550 5.7.1 Sender refused\""), 0, NULL },
	{ "standard 421", TMPF("\"421 4.7.0 Try later\""), 0, NULL },
	{ "32 reply lines",
	    REJ("( \"550 5.7.1 No\"" X4 X4 X4 X4 X4 X4 X4 ", \"x\", \"x\", \"x\" )"), 0, NULL },
	{ "standard 556 (RFC 7504)", REJ("\"556 5.1.10 No mail here\""), 0, NULL },
	{ "private password file",
	    REDIS("password_file = \"@DIR@/secret.pass\";") ONE_POLICY, 0, NULL },
};

START_TEST(warning)
{
	const char *label = warnings[_i].label;
	char name[64], path[4096], prefix[4200];
	struct cfg *c;

	snprintf(name, sizeof(name), "warn-%02d.conf", _i);
	c = load_text(name, warnings[_i].text, NULL, path, sizeof(path));
	ck_assert_msg(c != NULL, "%s: not loaded:%s", label, all_reports());
	cfg_unref(c);
	ck_assert_msg(rep.nerr == 0, "%s: errors:%s", label, all_reports());
	if (warnings[_i].want == NULL) {
		ck_assert_msg(rep.nwarn == 0, "%s: unexpected warning:%s", label, all_reports());
	} else {
		ck_assert_msg(rep.nwarn == 1, "%s: %d warnings, want 1:%s", label, rep.nwarn,
		    all_reports());
		snprintf(prefix, sizeof(prefix), "%s:%u: warning: ", path, warnings[_i].line);
		ck_assert_msg(strncmp(rep.warn[0], prefix, strlen(prefix)) == 0,
		    "%s: warning does not start with \"%s\":%s", label, prefix, all_reports());
		ck_assert_msg(strstr(rep.warn[0], warnings[_i].want) != NULL,
		    "%s: warning lacks \"%s\":%s", label, warnings[_i].want, all_reports());
	}
	stats_reset();
}
END_TEST

/* ---- a good configuration, read back */

static const char good_text[] =
    "# policy-milter, DESIGN.md section 3 with the policy types that exist\n"
    "listen = \"unix:/var/spool/postfix/policy-milter/milter.sock\";\n"
    "socket_mode = \"0660\";\n"
    "user = \"policy-milter\";  group = \"postfix\";  metrics = \"inet:9717@127.0.0.1\";\n"
    "\n"
    "redis = {\n"
    "  address = \"" REDIS_ADDR "\";\n"
    "  database = 2;\n"
    "  prefix = \"mx1:\";\n"
    "  connect_timeout = \"1s\";\n"
    "  timeout = \"250ms\";\n"
    "  pool = 4;\n"
    "};\n"
    "on_redis_error = \"tempfail\";\n"
    "\n"
    "exempt = { clients = [ \"127.0.0.0/8\", \"::1\", \"2001:db8::/32\" ]; "
    "authenticated = true; };\n"
    "\n"
    "policies = (\n"
    "  { name = \"max-size\"; type = \"size\"; max = \"25M\";\n"
    "    action = \"reject\"; reply = \"552 5.3.4 Message too big for this system "
    "(limit ${limit})\"; },\n"
    "\n"
    "  { name = \"max-rcpts\"; type = \"recipients\"; max = 100;\n"
    "    action = \"tempfail\"; dry_run = true;\n"
    "    reply = [ \"452 4.5.3 Too many recipients\", \"send the rest later\" ]; },\n"
    "  { name = \"per-user\"; type = \"ratelimit\"; key = [ \"sasl_user\" ];\n"
    "    count = \"recipients\"; limit = 500; window = \"1h\"; action = \"tempfail\";\n"
    "    on_redis_error = \"accept\"; exempt = { clients = [ \"192.0.2.0/24\" ]; }; }\n"
    ");\n";

static bool
exempt_has(const struct cfg *c, const char *ip)
{
	struct addr_ip a;

	if (addr_parse_ip(ip, &a) != 0)
		return false;
	for (size_t i = 0; i < c->exempt.nclients; i++)
		if (addr_in_net(&a, &c->exempt.clients[i]))
			return true;
	return false;
}

static bool
size_hit(const struct cfg_policy *p, enum policy_stage stage, uint64_t size)
{
	struct policy_msg m = { "", "", "", "", "", 0, false, 0, 0 };
	struct policy_hit h;

	m.size = size;
	m.declared_size = size;
	m.has_declared_size = true;
	return p->type->check(p->settings, stage, &m, &h);
}

static bool
rcpt_hit(const struct cfg_policy *p, unsigned rcpts)
{
	struct policy_msg m = { "", "", "", "", "", 0, false, 0, 0 };
	struct policy_hit h;

	m.rcpts = rcpts;
	return p->type->check(p->settings, POLICY_RCPT, &m, &h);
}

START_TEST(good_config)
{
	char path[4096];
	struct cfg *c = load_text("good.conf", good_text, NULL, path, sizeof(path));
	const struct cfg_policy *p;

	ck_assert_msg(c != NULL, "good: not loaded:%s", all_reports());
	ck_assert_msg(rep.nerr == 0 && rep.nwarn == 0, "good: reports:%s", all_reports());
	ck_assert_msg(strcmp(c->path, path) == 0, "good: path %s", c->path);
	ck_assert_msg(c->refs == 1, "good: refs %d", c->refs);
	ck_assert_msg(strcmp(c->listen, "unix:/var/spool/postfix/policy-milter/milter.sock") == 0,
	    "good: listen %s", c->listen);
	ck_assert_msg(c->socket_mode == 0660, "good: socket_mode %o", c->socket_mode);
	ck_assert_msg(strcmp(c->user, "policy-milter") == 0 && strcmp(c->group, "postfix") == 0,
	    "good: user %s group %s", c->user, c->group);
	ck_assert_msg(c->metrics != NULL && strcmp(c->metrics, "inet:9717@127.0.0.1") == 0,
	    "good: metrics %s", c->metrics ? c->metrics : "(unset)");

	ck_assert_msg(c->redis != NULL, "good: no redis");
	ck_assert_msg(strcmp(c->redis->address, REDIS_ADDR) == 0, "good: redis address %s",
	    c->redis->address);
	ck_assert_msg(c->redis->database == 2, "good: database %lld", c->redis->database);
	ck_assert_msg(strcmp(c->redis->prefix, "mx1:") == 0, "good: prefix %s",
	    c->redis->prefix);
	ck_assert_msg(c->redis->connect_timeout_ms == 1000, "good: connect_timeout_ms %llu",
	    (unsigned long long)c->redis->connect_timeout_ms);
	ck_assert_msg(c->redis->timeout_ms == 250, "good: timeout_ms %llu",
	    (unsigned long long)c->redis->timeout_ms);
	ck_assert_msg(c->redis->pool == 4, "good: pool %lld", c->redis->pool);
	ck_assert_msg(c->redis->username == NULL && c->redis->password == NULL,
	    "good: credentials set");
	ck_assert_msg(c->redis->store != NULL, "good: no store");
	ck_assert_msg(store_connects(c->redis->store) == 0, "good: connected at load");
	ck_assert_msg(c->on_redis_error == CFG_ON_ERROR_TEMPFAIL, "good: on_redis_error %d",
	    c->on_redis_error);

	ck_assert_msg(c->exempt.nclients == 3, "good: %zu exempt clients",
	    c->exempt.nclients);
	ck_assert_msg(c->exempt.authenticated, "good: authenticated not exempt");
	ck_assert_msg(exempt_has(c, "127.1.2.3") && exempt_has(c, "::1") &&
	    exempt_has(c, "2001:db8:1::25") && !exempt_has(c, "192.0.2.1") &&
	    !exempt_has(c, "::2"), "good: exempt clients wrong");

	ck_assert_msg(c->npolicies == 3, "good: %zu policies", c->npolicies);
	p = &c->policies[0];
	ck_assert_msg(strcmp(p->name, "max-size") == 0 && p->type == &policy_type_size,
	    "good: policy 1 is %s", p->name);
	ck_assert_msg(p->line == 19, "good: policy 1 line %u", p->line);
	ck_assert_msg(p->action == POLICY_REJECT, "good: policy 1 action %d", p->action);
	ck_assert_msg(p->reply != NULL && reply_code(p->reply) == 552 &&
	    reply_uses(p->reply, "limit"), "good: policy 1 reply");
	ck_assert_msg(!p->dry_run, "good: policy 1 dry_run");
	ck_assert_msg(p->on_redis_error == CFG_ON_ERROR_INHERIT,
	    "good: policy 1 on_redis_error %d", p->on_redis_error);
	ck_assert_msg(p->stats != NULL, "good: policy 1 has no stats");
	ck_assert_msg(!size_hit(p, POLICY_EOM, 25 * 1024 * 1024) &&
	    size_hit(p, POLICY_EOM, 25 * 1024 * 1024 + 1) &&
	    size_hit(p, POLICY_RCPT, 25 * 1024 * 1024 + 1),
	    "good: size max is not 25M");

	p = &c->policies[1];
	ck_assert_msg(strcmp(p->name, "max-rcpts") == 0 && p->type == &policy_type_recipients,
	    "good: policy 2 is %s", p->name);
	ck_assert_msg(p->line == 22, "good: policy 2 line %u", p->line);
	ck_assert_msg(p->action == POLICY_TEMPFAIL, "good: policy 2 action %d", p->action);
	ck_assert_msg(p->reply != NULL && reply_code(p->reply) == 452,
	    "good: policy 2 reply");
	ck_assert_msg(p->dry_run, "good: policy 2 not dry_run");
	ck_assert_msg(p->on_redis_error == CFG_ON_ERROR_INHERIT,
	    "good: policy 2 on_redis_error %d", p->on_redis_error);
	ck_assert_msg(!rcpt_hit(p, 99) && rcpt_hit(p, 100), "good: recipients max is not 100");

	p = &c->policies[2];
	ck_assert_msg(strcmp(p->name, "per-user") == 0 && p->type == &policy_type_ratelimit,
	    "good: policy 3 is %s", p->name);
	ck_assert_msg(p->on_redis_error == CFG_ON_ERROR_ACCEPT,
	    "good: policy 3 on_redis_error %d", p->on_redis_error);
	ck_assert_msg(p->exempt.nclients == 1 && !p->exempt.authenticated,
	    "good: policy 3 exempt %zu", p->exempt.nclients);
	ck_assert_msg(p->stages == POLICY_STAGE(POLICY_RCPT), "good: policy 3 stages %#x",
	    p->stages);

	ck_assert_msg((c->stages_decide & POLICY_STAGE(POLICY_RCPT)) &&
	    (c->stages_decide & POLICY_STAGE(POLICY_EOM)), "good: stages_decide %#x",
	    c->stages_decide);
	cfg_unref(c);
	stats_reset();
}
END_TEST

/* Everything optional left out. */
/* Sentinels instead of an address: loaded, a store made, nothing connected. */
START_TEST(sentinel_config)
{
	char path[4096], master[64];
	struct cfg *c = load_text("sentinel.conf",
	    LISTEN "redis = {\n  sentinels = [ \"127.0.0.1:26379\", \"[::1]:26380\" ];\n"
	    "  master_name = \"mail\";\n};\n"
	    "policies = ( { name = \"a\"; type = \"recipients\"; max = 5; "
	    "action = \"reject\"; } );\n", NULL, path, sizeof(path));

	ck_assert_msg(c != NULL, "sentinels: not loaded:%s", all_reports());
	ck_assert_msg(rep.nerr == 0 && rep.nwarn == 0, "sentinels: reports:%s",
	    all_reports());
	ck_assert_msg(c->redis->address == NULL && c->redis->sentinels.n == 2 &&
	    strcmp(c->redis->sentinels.v[1], "[::1]:26380") == 0 &&
	    strcmp(c->redis->master_name, "mail") == 0, "sentinels: settings");
	ck_assert_msg(c->redis->store != NULL, "sentinels: no store");
	ck_assert_msg(store_master(c->redis->store, master, sizeof(master)) == 0 &&
	    master[0] == '\0', "sentinels: a master known before any call: %s", master);
	cfg_unref(c);
	stats_reset();
}
END_TEST

START_TEST(defaults)
{
	char path[4096];
	struct cfg *c = load_text("defaults.conf",
	    REDIS("") "policies = ( { name = \"a\"; type = \"recipients\"; max = 5; "
	    "action = \"reject\"; } );\n", NULL, path, sizeof(path));

	ck_assert_msg(c != NULL, "defaults: not loaded:%s", all_reports());
	ck_assert_msg(rep.nerr == 0 && rep.nwarn == 0, "defaults: reports:%s", all_reports());
	ck_assert_msg(c->socket_mode == -1, "defaults: socket_mode %d", c->socket_mode);
	ck_assert_msg(c->user == NULL && c->group == NULL, "defaults: user or group set");
	ck_assert_msg(c->metrics == NULL, "defaults: metrics \"%s\"", c->metrics);
	ck_assert_msg(c->on_redis_error == CFG_ON_ERROR_ACCEPT, "defaults: on_redis_error %d",
	    c->on_redis_error);
	ck_assert_msg(c->exempt.nclients == 0 && !c->exempt.authenticated,
	    "defaults: exempt set");
	ck_assert_msg(strcmp(c->redis->prefix, "pm:") == 0, "defaults: prefix \"%s\"",
	    c->redis->prefix);
	ck_assert_msg(c->redis->timeout_ms == 100, "defaults: timeout_ms %llu",
	    (unsigned long long)c->redis->timeout_ms);
	ck_assert_msg(c->redis->connect_timeout_ms == 200, "defaults: connect_timeout_ms %llu",
	    (unsigned long long)c->redis->connect_timeout_ms);
	ck_assert_msg(c->redis->pool == 16, "defaults: pool %lld", c->redis->pool);
	ck_assert_msg(c->redis->database == 0, "defaults: database %lld", c->redis->database);
	ck_assert_msg(c->npolicies == 1 && !c->policies[0].dry_run &&
	    c->policies[0].on_redis_error == CFG_ON_ERROR_INHERIT,
	    "defaults: policy defaults");
	cfg_unref(c);

	c = load_text("defaults-noredis.conf", LISTEN, NULL, path, sizeof(path));
	ck_assert_msg(c != NULL, "defaults without redis: not loaded:%s", all_reports());
	ck_assert_msg(c->redis == NULL && c->npolicies == 0 && c->stages_decide == 0,
	    "defaults without redis: redis %p, %zu policies", (void *)c->redis, c->npolicies);
	cfg_unref(c);
	stats_reset();
}
END_TEST

/* The reply a policy gets when it configures none (policies/size.c, recipients.c). */
static const struct {
	const char *label;
	const char *policy;        /* type and max */
	const char *action;
	int want;                  /* reply code; 0: no reply at all */
} default_replies[] = {
	{ "size reject", "type = \"size\"; max = \"25M\";", "reject", 552 },
	{ "size tempfail", "type = \"size\"; max = \"25M\";", "tempfail", 452 },
	{ "recipients reject", "type = \"recipients\"; max = 100;", "reject", 550 },
	{ "recipients tempfail", "type = \"recipients\"; max = 100;", "tempfail", 452 },
	{ "size accept", "type = \"size\"; max = \"25M\";", "accept", 0 },
	{ "size discard", "type = \"size\"; max = \"25M\";", "discard", 0 },
	{ "size quarantine", "type = \"size\"; max = \"25M\";", "quarantine", 0 },
};

START_TEST(default_reply)
{
	const char *label = default_replies[_i].label;
	char text[512], name[64], path[4096];
	struct cfg *c;

	snprintf(text, sizeof(text), LISTEN "policies = ( { name = \"a\"; %s action = \"%s\"; } );\n",
	    default_replies[_i].policy, default_replies[_i].action);
	snprintf(name, sizeof(name), "reply-%d.conf", _i);
	c = load_text(name, text, NULL, path, sizeof(path));
	ck_assert_msg(c != NULL, "%s: not loaded:%s", label, all_reports());
	ck_assert_msg(rep.nerr == 0 && rep.nwarn == 0, "%s: reports:%s", label, all_reports());
	if (default_replies[_i].want == 0) {
		ck_assert_msg(c->policies[0].reply == NULL, "%s: has a reply", label);
	} else {
		ck_assert_msg(c->policies[0].reply != NULL, "%s: no reply", label);
		ck_assert_msg(reply_code(c->policies[0].reply) == default_replies[_i].want,
		    "%s: reply code %d, want %d", label, reply_code(c->policies[0].reply),
		    default_replies[_i].want);
		ck_assert_msg(reply_uses(c->policies[0].reply, "limit"),
		    "%s: default reply does not name the limit", label);
	}
	cfg_unref(c);
	stats_reset();
}
END_TEST

/* Which stages the daemon must negotiate for a set of policies. */
#define SIZE_POLICY "{ name = \"s\"; type = \"size\"; max = \"1M\"; action = \"reject\"; }"
#define RCPT_POLICY "{ name = \"r\"; type = \"recipients\"; max = 5; action = \"reject\"; }"
static const struct {
	const char *label;
	const char *policies;
	unsigned must, must_not;
} stages[] = {
	{ "size only", SIZE_POLICY,
	    POLICY_STAGE(POLICY_RCPT) | POLICY_STAGE(POLICY_EOM), 0 },
	{ "recipients only", RCPT_POLICY, POLICY_STAGE(POLICY_RCPT),
	    POLICY_STAGE(POLICY_EOM) | POLICY_STAGE(POLICY_BODY) | POLICY_STAGE(POLICY_HEADER) },
	{ "both", RCPT_POLICY ", " SIZE_POLICY,
	    POLICY_STAGE(POLICY_RCPT) | POLICY_STAGE(POLICY_EOM), 0 },
	{ "none", "", 0, ~0u },
};

START_TEST(stages_decide)
{
	const char *label = stages[_i].label;
	char text[512], name[64], path[4096];
	struct cfg *c;

	snprintf(text, sizeof(text), LISTEN "policies = ( %s );\n", stages[_i].policies);
	snprintf(name, sizeof(name), "stages-%d.conf", _i);
	c = load_text(name, text, NULL, path, sizeof(path));
	ck_assert_msg(c != NULL, "%s: not loaded:%s", label, all_reports());
	ck_assert_msg((c->stages_decide & stages[_i].must) == stages[_i].must,
	    "%s: stages_decide %#x lacks %#x", label, c->stages_decide, stages[_i].must);
	ck_assert_msg((c->stages_decide & stages[_i].must_not) == 0,
	    "%s: stages_decide %#x has %#x", label, c->stages_decide,
	    c->stages_decide & stages[_i].must_not);
	ck_assert_msg((c->stages_need & c->stages_decide) == c->stages_decide,
	    "%s: stages_need %#x lacks a deciding stage of %#x", label, c->stages_need,
	    c->stages_decide);
	cfg_unref(c);
	stats_reset();
}
END_TEST

/* ---- @include and file names in messages */

START_TEST(include_relative)
{
	char main_path[4096];
	struct cfg *c;

	make_dir("inc");
	write_file("inc/policies.conf", "policies = ( " SIZE_POLICY " );\n", 0644);
	write_file("inc/main.conf", LISTEN "@include \"policies.conf\"\n", 0644);
	snprintf(main_path, sizeof(main_path), "%s/inc/main.conf", tmpdir);
	ck_assert_msg(chdir("/") == 0, "chdir: %s", strerror(errno));
	memset(&rep, 0, sizeof(rep));
	c = cfg_load(main_path, NULL, tl_collect, &rep);
	ck_assert_msg(c != NULL, "include: not loaded:%s", all_reports());
	ck_assert_msg(c->npolicies == 1 && strcmp(c->policies[0].name, "s") == 0,
	    "include: %zu policies", c->npolicies);
	cfg_unref(c);
	stats_reset();
}
END_TEST

/*
 * libconfig 1.5 resolves every @include against one directory: the main
 * file's (README says so).  A file in a subdirectory therefore names its
 * neighbour by the path from the main file's directory.
 */
START_TEST(include_nested)
{
	char main_path[4096];
	struct cfg *c;

	make_dir("nest");
	make_dir("nest/sub");
	write_file("nest/sub/inner.conf", "policies = ( " SIZE_POLICY " );\n", 0644);
	write_file("nest/sub/outer.conf", "@include \"sub/inner.conf\"\n", 0644);
	write_file("nest/main.conf", LISTEN "@include \"sub/outer.conf\"\n", 0644);
	snprintf(main_path, sizeof(main_path), "%s/nest/main.conf", tmpdir);
	memset(&rep, 0, sizeof(rep));
	c = cfg_load(main_path, NULL, tl_collect, &rep);
	ck_assert_msg(c != NULL, "nested include: not loaded:%s", all_reports());
	ck_assert_msg(c->npolicies == 1, "nested include: %zu policies", c->npolicies);
	cfg_unref(c);
	stats_reset();
}
END_TEST

/* An error in an included file names that file by a path one can open. */
START_TEST(include_error_names_file)
{
	char main_path[4096], prefix[4200];
	struct cfg *c;

	make_dir("incerr");
	make_dir("incerr/sub");
	write_file("incerr/sub/bad.conf", "\npolicies = ( { name = \"a\"; type = \"size\"; "
	    "max = \"1X\"; action = \"reject\"; } );\n", 0644);
	write_file("incerr/main.conf", LISTEN "@include \"sub/bad.conf\"\n", 0644);
	snprintf(main_path, sizeof(main_path), "%s/incerr/main.conf", tmpdir);
	ck_assert_msg(chdir("/") == 0, "chdir: %s", strerror(errno));
	memset(&rep, 0, sizeof(rep));
	c = cfg_load(main_path, NULL, tl_collect, &rep);
	cfg_unref(c);
	ck_assert_msg(c == NULL, "include error: loaded");
	ck_assert_msg(rep.nerr == 1, "include error: %d errors:%s", rep.nerr, all_reports());
	snprintf(prefix, sizeof(prefix), "%s/incerr/sub/bad.conf:2: ", tmpdir);
	ck_assert_msg(strncmp(rep.err[0], prefix, strlen(prefix)) == 0,
	    "include error: does not start with \"%s\":%s", prefix, all_reports());
	stats_reset();
}
END_TEST

START_TEST(missing_file)
{
	char path[4096];
	struct cfg *c;

	snprintf(path, sizeof(path), "%s/no-such.conf", tmpdir);
	memset(&rep, 0, sizeof(rep));
	c = cfg_load(path, NULL, tl_collect, &rep);
	ck_assert_msg(c == NULL, "missing file: loaded");
	ck_assert_msg(rep.nerr == 1, "missing file: %d errors:%s", rep.nerr, all_reports());
	ck_assert_msg(strncmp(rep.err[0], path, strlen(path)) == 0 &&
	    strstr(rep.err[0], "cannot read") != NULL &&
	    strstr(rep.err[0], "No such file or directory") != NULL,
	    "missing file:%s", all_reports());
}
END_TEST

/* The example shipped in etc/ (what quickstart and make install use) loads
 * without an error or a warning, with every policy it describes. */
START_TEST(example_config)
{
	const char *top = getenv("top_srcdir");
	char path[4096];
	struct cfg *c;

	snprintf(path, sizeof(path), "%s/etc/policy-milter.conf", top ? top : "..");
	memset(&rep, 0, sizeof(rep));
	c = cfg_load(path, NULL, tl_collect, &rep);
	ck_assert_msg(c != NULL && rep.nerr == 0 && rep.nwarn == 0, "%s:%s", path,
	    all_reports());
	ck_assert_msg(c->npolicies == 5 && c->nlive == 1, "%s: %zu policies, %zu live",
	    path, c->npolicies, c->nlive);
	cfg_unref(c);
}
END_TEST

/* Paths may be up to PATH_MAX: the message after a long one is not lost. */
START_TEST(long_path)
{
	char rel[2048] = "", name[300], prefix[4200], path[4096];
	struct cfg *c;

	memset(name, 'd', 200);
	name[200] = '\0';
	for (int i = 0; i < 6; i++) {
		strcat(rel, i ? "/" : "");
		strcat(rel, name);
		make_dir(rel);
	}
	strcat(rel, "/long.conf");
	c = load_text(rel, LISTEN "socket_mode = \"999\";\n" ONE_POLICY, NULL, path,
	    sizeof(path));
	cfg_unref(c);
	ck_assert_msg(c == NULL, "long path: loaded");
	ck_assert_msg(rep.nerr == 1, "long path: %d errors", rep.nerr);
	snprintf(prefix, sizeof(prefix), "%s:2: ", path);
	ck_assert_msg(strncmp(rep.err[0], prefix, strlen(prefix)) == 0,
	    "long path (%zu bytes): error does not start with path:2: (%zu bytes reported)",
	    strlen(path), strlen(rep.err[0]));
	ck_assert_msg(strstr(rep.err[0], "must be an octal mode") != NULL,
	    "long path (%zu bytes): the message is lost: \"...%s\"", strlen(path),
	    rep.err[0] + strlen(rep.err[0]) - (strlen(rep.err[0]) > 40 ? 40 : 0));
	stats_reset();
}
END_TEST

/* ---- reload: the Redis store is shared while its settings are unchanged */

#define RELOAD_BASE LISTEN \
	"redis = { address = \"" REDIS_ADDR "\"; timeout = \"100ms\"; };\n" ONE_POLICY

static const struct {
	const char *label;
	const char *text;
	int shared;                /* 1 shared, 0 not, -1 not checked */
	const char *prefix;        /* the new snapshot's prefix; NULL: no redis */
} reloads[] = {
	{ "unchanged", RELOAD_BASE, 1, "pm:" },
	{ "defaults spelt out", LISTEN "redis = { address = \"" REDIS_ADDR "\"; "
	    "timeout = \"100ms\"; connect_timeout = \"200ms\"; pool = 16; database = 0; "
	    "prefix = \"pm:\"; };\n" ONE_POLICY, 1, "pm:" },
	{ "only policies changed", LISTEN "redis = { address = \"" REDIS_ADDR "\"; "
	    "timeout = \"100ms\"; };\npolicies = ( " RCPT_POLICY " );\n", 1, "pm:" },
	{ "timeout changed", LISTEN "redis = { address = \"" REDIS_ADDR "\"; "
	    "timeout = \"250ms\"; };\n" ONE_POLICY, 0, "pm:" },
	{ "connect_timeout changed", LISTEN "redis = { address = \"" REDIS_ADDR "\"; "
	    "timeout = \"100ms\"; connect_timeout = \"1s\"; };\n" ONE_POLICY, 0, "pm:" },
	{ "pool changed", LISTEN "redis = { address = \"" REDIS_ADDR "\"; "
	    "timeout = \"100ms\"; pool = 2; };\n" ONE_POLICY, 0, "pm:" },
	{ "database changed", LISTEN "redis = { address = \"" REDIS_ADDR "\"; "
	    "timeout = \"100ms\"; database = 3; };\n" ONE_POLICY, 0, "pm:" },
	{ "address changed", LISTEN "redis = { address = \"unix:/nonexistent/other.sock\"; "
	    "timeout = \"100ms\"; };\n" ONE_POLICY, 0, "pm:" },
	{ "password added", LISTEN "redis = { address = \"" REDIS_ADDR "\"; "
	    "timeout = \"100ms\"; password_file = \"@DIR@/secret.pass\"; };\n" ONE_POLICY,
	    0, "pm:" },
	/* Every key is built with the prefix: a reload must not keep the old one. */
	{ "prefix changed", LISTEN "redis = { address = \"" REDIS_ADDR "\"; "
	    "timeout = \"100ms\"; prefix = \"mx2:\"; };\n" ONE_POLICY, -1, "mx2:" },
	{ "redis removed", LISTEN ONE_POLICY, 0, NULL },
};

START_TEST(reload)
{
	const char *label = reloads[_i].label;
	char name[64], path1[4096], path2[4096], prefix[64] = "";
	struct cfg *c1, *c2;
	struct cfg_redis *r1;

	snprintf(name, sizeof(name), "reload-base-%d.conf", _i);
	c1 = load_text(name, RELOAD_BASE, NULL, path1, sizeof(path1));
	ck_assert_msg(c1 != NULL, "%s: base not loaded:%s", label, all_reports());
	r1 = c1->redis;
	snprintf(name, sizeof(name), "reload-new-%d.conf", _i);
	c2 = load_text(name, reloads[_i].text, c1, path2, sizeof(path2));
	ck_assert_msg(c2 != NULL, "%s: new not loaded:%s", label, all_reports());
	ck_assert_msg(c1->redis == r1 && r1->store != NULL, "%s: prev changed", label);

	/* Each snapshot has its own redis settings; equal connection settings
	 * share the store (and its connections). */
	ck_assert_msg(c2->redis != r1, "%s: redis settings shared", label);
	if (reloads[_i].shared == 1) {
		ck_assert_msg(c2->redis->store == r1->store, "%s: store not shared", label);
	} else if (reloads[_i].shared == 0) {
		ck_assert_msg(c2->redis == NULL || c2->redis->store != r1->store,
		    "%s: store shared", label);
	}
	if (reloads[_i].prefix == NULL)
		ck_assert_msg(c2->redis == NULL, "%s: redis kept", label);
	else
		snprintf(prefix, sizeof(prefix), "%s",
		    c2->redis != NULL ? c2->redis->prefix : "(no redis)");
	/* A policy keeps its statistics across a reload. */
	if (c2->npolicies > 0 && strcmp(c2->policies[0].name, c1->policies[0].name) == 0)
		ck_assert_msg(c2->policies[0].stats == c1->policies[0].stats,
		    "%s: stats entry not kept", label);

	/* The old snapshot goes; the new one, and a shared store, stay usable. */
	cfg_unref(c1);
	if (c2->redis != NULL) {
		ck_assert_msg(c2->redis->store != NULL && strlen(c2->redis->address) > 0 &&
		    !store_is_down(c2->redis->store), "%s: store unusable", label);
	}
	cfg_unref(c2);
	stats_reset();
	/* Checked last so that a failure leaks nothing into ASan's report. */
	ck_assert_msg(reloads[_i].prefix == NULL || strcmp(prefix, reloads[_i].prefix) == 0,
	    "%s: prefix \"%s\", want \"%s\"", label, prefix, reloads[_i].prefix);
}
END_TEST

/* ---- snapshots */

START_TEST(install_acquire)
{
	char path[4096];
	struct cfg *c1, *c2, *a, *b;

	ck_assert_msg(cfg_acquire() == NULL, "acquire before install");
	c1 = load_text("snap-1.conf", LISTEN ONE_POLICY, NULL, path, sizeof(path));
	c2 = load_text("snap-2.conf", "listen = \"inet:8890@127.0.0.1\";\n" ONE_POLICY,
	    NULL, path, sizeof(path));
	ck_assert_msg(c1 != NULL && c2 != NULL, "snapshots not loaded:%s", all_reports());

	cfg_install(c1);
	ck_assert_msg(c1->refs == 1, "install took a reference: %d", c1->refs);
	a = cfg_acquire();
	ck_assert_msg(a == c1, "acquire returned %p, installed %p", (void *)a, (void *)c1);
	ck_assert_msg(c1->refs == 2, "acquire: refs %d", c1->refs);

	/* A new snapshot comes in while a session still holds the old one. */
	cfg_install(c2);
	ck_assert_msg(a->refs == 1, "old snapshot after install: refs %d", a->refs);
	ck_assert_msg(strcmp(a->listen, "unix:/run/pm/milter.sock") == 0 && a->npolicies == 1,
	    "old snapshot changed under its holder");
	b = cfg_acquire();
	ck_assert_msg(b == c2, "acquire after second install returned %p", (void *)b);
	ck_assert_msg(c2->refs == 2, "second snapshot refs %d", c2->refs);
	cfg_unref(a);                  /* frees c1: ASan would catch a later use */
	cfg_unref(b);
	ck_assert_msg(c2->refs == 1, "second snapshot refs %d after release", c2->refs);

	cfg_install(NULL);
	ck_assert_msg(cfg_acquire() == NULL, "acquire after uninstall");
	cfg_unref(NULL);
	stats_reset();
}
END_TEST

/* Sessions acquire and release on worker threads while reloads install. */
struct acquirer {
	pthread_t tid;
	volatile bool *stop;
	unsigned long got, bad;
};

static void *
acquire_loop(void *arg)
{
	struct acquirer *a = arg;

	while (!__atomic_load_n(a->stop, __ATOMIC_ACQUIRE)) {
		struct cfg *c = cfg_acquire();
		if (c == NULL)
			continue;
		if (c->npolicies != 1 || c->listen[0] == '\0' || c->refs < 1)
			__atomic_add_fetch(&a->bad, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&a->got, 1, __ATOMIC_RELAXED);
		cfg_unref(c);
	}
	return NULL;
}

static bool
all_got(struct acquirer *th, size_t n, unsigned long min)
{
	for (size_t i = 0; i < n; i++)
		if (__atomic_load_n(&th[i].got, __ATOMIC_RELAXED) < min)
			return false;
	return true;
}

START_TEST(install_concurrent)
{
	char path[4096];
	struct cfg *snap[2];
	struct acquirer th[4];
	volatile bool stop = false;

	snap[0] = load_text("conc-1.conf", LISTEN ONE_POLICY, NULL, path, sizeof(path));
	snap[1] = load_text("conc-2.conf", LISTEN "redis = { address = \"" REDIS_ADDR
	    "\"; };\n" ONE_POLICY, NULL, path, sizeof(path));
	ck_assert_msg(snap[0] != NULL && snap[1] != NULL, "not loaded:%s", all_reports());
	cfg_ref(snap[0]);
	cfg_install(snap[0]);
	for (size_t i = 0; i < NELEMS(th); i++) {
		th[i] = (struct acquirer){ .stop = &stop };
		ck_assert_msg(pthread_create(&th[i].tid, NULL, acquire_loop, &th[i]) == 0,
		    "pthread_create");
	}
	/* At least 2000 reloads, and until every thread has seen a few snapshots. */
	for (int k = 1; k <= 2000 || !all_got(th, NELEMS(th), 100); k++) {
		cfg_ref(snap[k % 2]);
		cfg_install(snap[k % 2]);
		if (k % 100 == 0)
			sched_yield();
	}
	__atomic_store_n(&stop, true, __ATOMIC_RELEASE);
	unsigned long got = 0;
	for (size_t i = 0; i < NELEMS(th); i++) {
		pthread_join(th[i].tid, NULL);
		ck_assert_msg(th[i].bad == 0, "thread %zu saw %lu bad snapshots", i, th[i].bad);
		got += th[i].got;
	}
	ck_assert_msg(got >= 100 * NELEMS(th), "threads acquired only %lu snapshots", got);
	cfg_install(NULL);
	ck_assert_msg(snap[0]->refs == 1 && snap[1]->refs == 1,
	    "refs after the storm: %d and %d", snap[0]->refs, snap[1]->refs);
	cfg_unref(snap[0]);
	cfg_unref(snap[1]);
	stats_reset();
}
END_TEST

/* ---- did you mean */

static const char *const top_keys[] = {
	"listen", "socket_mode", "user", "group", "redis", "on_redis_error", "exempt",
	"policies", NULL,
};
static const char *const actions[] = {
	"accept", "reject", "tempfail", "discard", "quarantine", NULL,
};
static const char *const types[] = { "size", "recipients", NULL };
static const char *const tie[] = { "ab", "ac", NULL };
static const char *const none[] = { NULL };
static const char *const far3[] = { "abcxyz", NULL };
static const char *const far3b[] = { "abxyz", NULL };
static const char *const long12[] = { "abcdefghwxyz", "abcdefghixyz", NULL };
static const char *const long12far[] = { "abcdefghwxyz", NULL };

static const struct {
	const char *label;
	const char *word;
	const char *const *candidates;
	const char *want;          /* NULL: no suggestion */
} suggests[] = {
	{ "dropped letter", "lisen", top_keys, "listen" },
	{ "exact", "listen", top_keys, "listen" },
	{ "dropped i", "polices", top_keys, "policies" },
	{ "dropped e", "exmpt", top_keys, "exempt" },
	{ "short word", "usr", top_keys, "user" },
	{ "short word two edits", "grp", top_keys, "group" },
	{ "swap in a long word", "on_redis_erorr", top_keys, "on_redis_error" },
	{ "missing underscore", "socketmode", top_keys, "socket_mode" },
	{ "unrelated", "frobnicate", top_keys, NULL },
	{ "empty word", "", top_keys, NULL },
	{ "one letter", "x", top_keys, NULL },
	{ "longer than 64", "policiespoliciespoliciespoliciespoliciespoliciespoliciespolicies",
	    top_keys, NULL },
	{ "action typo", "rejct", actions, "reject" },
	{ "action transposed", "tempfial", actions, "tempfail" },
	{ "action capitalised", "Reject", actions, "reject" },
	{ "type swapped", "szie", types, "size" },
	{ "type singular", "recipient", types, "recipients" },
	{ "tie takes the first", "aa", tie, "ab" },
	{ "no candidates", "listen", none, NULL },
	{ "limit len/3+1 reached", "abcdef", far3, "abcxyz" },
	{ "limit len/3+1 exceeded", "abcde", far3b, NULL },
	{ "limit capped at 3", "abcdefghijkl", long12, "abcdefghixyz" },
	{ "cap exceeded", "abcdefghijkl", long12far, NULL },
};

START_TEST(suggest)
{
	const char *label = suggests[_i].label;
	const char *got = cfg_suggest(suggests[_i].word, suggests[_i].candidates);
	const char *want = suggests[_i].want;

	ck_assert_msg((got == NULL && want == NULL) ||
	    (got != NULL && want != NULL && strcmp(got, want) == 0),
	    "%s: \"%s\" suggests \"%s\", want \"%s\"", label, suggests[_i].word,
	    got ? got : "(none)", want ? want : "(none)");
}
END_TEST

static Suite *
config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc;

	tc = tcase_create("errors");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, bad_config, 0, (int)NELEMS(bad));
	tcase_add_loop_test(tc, all_errors_in_one_run, 0, (int)NELEMS(multi));
	tcase_add_test(tc, missing_file);
	tcase_add_test(tc, long_path);
	suite_add_tcase(s, tc);

	tc = tcase_create("warnings");
	tcase_add_loop_test(tc, warning, 0, (int)NELEMS(warnings));
	suite_add_tcase(s, tc);

	tc = tcase_create("values");
	tcase_add_test(tc, good_config);
	tcase_add_test(tc, example_config);
	tcase_add_test(tc, defaults);
	tcase_add_test(tc, sentinel_config);
	tcase_add_loop_test(tc, default_reply, 0, (int)NELEMS(default_replies));
	tcase_add_loop_test(tc, stages_decide, 0, (int)NELEMS(stages));
	suite_add_tcase(s, tc);

	tc = tcase_create("include");
	tcase_add_test(tc, include_relative);
	tcase_add_test(tc, include_nested);
	tcase_add_test(tc, include_error_names_file);
	suite_add_tcase(s, tc);

	tc = tcase_create("snapshots");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, reload, 0, (int)NELEMS(reloads));
	tcase_add_test(tc, install_acquire);
	tcase_add_test(tc, install_concurrent);
	suite_add_tcase(s, tc);

	tc = tcase_create("suggest");
	tcase_add_loop_test(tc, suggest, 0, (int)NELEMS(suggests));
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	int status;

	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return EXIT_FAILURE;
	}
	static const struct { const char *name, *text; mode_t mode; } files[] = {
		{ "empty.pass", "", 0600 },
		{ "secret.pass", "s3cret\n", 0600 },
		{ "world.pass", "s3cret\n", 0644 },
	};
	for (size_t i = 0; i < NELEMS(files); i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", tmpdir, files[i].name);
		if (write_raw(path, files[i].text, files[i].mode) != 0) {
			perror(path);
			return EXIT_FAILURE;
		}
	}

	status = tl_run(config_suite());
	stats_reset();
	tl_rmtree(tmpdir);
	return status;
}
