/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_store - unit tests of milter/store_redis against real, private Redis
 * servers.
 *
 * main() starts three redis-server instances in a mkdtemp directory before
 * any test runs, and an atexit handler (run only by the process that started
 * them, not by Check's forked children) shuts them down and removes the
 * directory, also when tests fail:
 *   main  unix socket, DEBUG allowed (timeouts), shared by most tests;
 *   auth  requirepass, an ACL user, and TCP on 127.0.0.1 and ::1;
 *   brk   stopped and restarted by the circuit breaker test.
 * Tests run in forked children (CK_FORK), one at a time, so a test that
 * blocks Redis with DEBUG SLEEP waits for it to recover before returning.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "milter/log.h"
#include "milter/store_redis.h"
#include "tests/testlib.h"

#define PASSWORD	"s3cret-%\r\n"	/* odd bytes on purpose */
#define ACL_USER	"bob"
#define ACL_PASSWORD	"bobpw"

struct instance {
	const char *name;
	const char *extra;	/* extra redis-server arguments */
	const char *password;	/* for redis-cli and the readiness check */
	int port;		/* 0: unix socket only */
	char sock[256];
	char pid[256];
};

static char tmpdir[] = "/tmp/check_store.XXXXXX";
static pid_t starter;
static bool have_ipv6;

static struct instance r_main = { "main", "", NULL, 0, "", "" };
static struct instance r_auth = {
	"auth",
	"--requirepass '" PASSWORD "' "
	"--user " ACL_USER " on '>" ACL_PASSWORD "' '~*' '&*' '+@all'",
	PASSWORD, 1, "", ""
};
static struct instance r_brk = { "brk", "", NULL, 0, "", "" };
static struct instance *instances[] = { &r_main, &r_auth, &r_brk };

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* A port nobody listens on right now (tiny race with other programs). */
static int
free_port(void)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd, port;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd == -1 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) == -1) {
		perror("free_port");
		exit(2);
	}
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

static bool
ipv6_loopback(void)
{
	struct sockaddr_in6 sin6;
	int fd, ok;

	if ((fd = socket(AF_INET6, SOCK_STREAM, 0)) == -1)
		return false;
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_addr = in6addr_loopback;
	ok = bind(fd, (struct sockaddr *)&sin6, sizeof(sin6)) == 0;
	close(fd);
	return ok;
}

/* PING through plain hiredis (not the code under test) until it answers. */
static bool
redis_ready(const struct instance *in, unsigned wait_ms)
{
	double end = now_ms() + wait_ms;

	do {
		redisContext *c = redisConnectUnix(in->sock);
		redisReply *r = NULL;

		if (c != NULL && c->err == 0) {
			if (in->password != NULL) {
				const char *argv[2] = { "AUTH", in->password };

				r = redisCommandArgv(c, 2, argv, NULL);
				if (r != NULL)
					freeReplyObject(r);
			}
			r = redisCommand(c, "PING");
		}
		bool ok = r != NULL && r->type == REDIS_REPLY_STATUS &&
		    strcmp(r->str, "PONG") == 0;
		if (r != NULL)
			freeReplyObject(r);
		if (c != NULL)
			redisFree(c);
		if (ok)
			return true;
		sleep_ms(10);
	} while (now_ms() < end);
	return false;
}

static void
redis_start(struct instance *in)
{
	char sh[2048];

	snprintf(sh, sizeof(sh),
	    "redis-server --port %d %s --unixsocket %s --save '' "
	    "--appendonly no --daemonize yes --pidfile %s --dir %s "
	    "--logfile %s/%s.log --enable-debug-command local %s",
	    in->port, in->port != 0 ? "--bind 127.0.0.1 -::1" : "",
	    in->sock, in->pid, tmpdir, tmpdir, in->name, in->extra);
	if (system(sh) != 0 || !redis_ready(in, 5000)) {
		fprintf(stderr, "cannot start redis %s: %s\n", in->name, sh);
		exit(2);
	}
}

/* Stop an instance and wait until it has really gone. */
static void
redis_stop(const struct instance *in)
{
	char sh[1024];
	double end = now_ms() + 3000;

	snprintf(sh, sizeof(sh), "redis-cli -s %s %s%s%s --no-auth-warning "
	    "shutdown nosave >/dev/null 2>&1", in->sock,
	    in->password != NULL ? "-a '" : "",
	    in->password != NULL ? in->password : "",
	    in->password != NULL ? "'" : "");
	if (system(sh) == -1)
		perror("system");
	while (access(in->pid, F_OK) == 0 && now_ms() < end)
		sleep_ms(10);
}

static void
teardown_all(void)
{
	char sh[512];
	size_t i;

	if (getpid() != starter)	/* a forked test child */
		return;
	for (i = 0; i < sizeof(instances) / sizeof(instances[0]); i++)
		redis_stop(instances[i]);
	snprintf(sh, sizeof(sh), "rm -rf '%s'", tmpdir);
	if (system(sh) == -1)
		perror("system");
}

static void
setup_all(void)
{
	size_t i;

	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		exit(2);
	}
	starter = getpid();
	atexit(teardown_all);
	have_ipv6 = ipv6_loopback();
	for (i = 0; i < sizeof(instances) / sizeof(instances[0]); i++) {
		struct instance *in = instances[i];

		snprintf(in->sock, sizeof(in->sock), "%s/%s.sock", tmpdir,
		    in->name);
		snprintf(in->pid, sizeof(in->pid), "%s/%s.pid", tmpdir,
		    in->name);
		if (in->port != 0)
			in->port = free_port();
		redis_start(in);
	}
}

/* ---- helpers ---- */

static struct store *
open_store(const char *label, const char *address, int db,
    const char *user, const char *password, unsigned timeout_ms,
    unsigned pool)
{
	struct store_options o = {
		.address = address, .database = db, .username = user,
		.password = password, .connect_timeout_ms = 500,
		.timeout_ms = timeout_ms, .pool = pool,
	};
	char err[256] = "";
	struct store *st = store_new(&o, err, sizeof(err));

	ck_assert_msg(st != NULL, "%s: store_new(%s): %s", label, address, err);
	return st;
}

static char main_addr[300], brk_addr[300], auth_addr[300];

/* A command from NUL-terminated C strings, for the tests' own plumbing. */
static redisReply *
cmd(struct store *st, char *err, size_t errlen, ...)
    __attribute__((sentinel));
#define CMD(st, err, ...) \
	cmd((st), (err), sizeof(err), __VA_ARGS__, (const char *)NULL)

static redisReply *
cmd(struct store *st, char *err, size_t errlen, ...)
{
	const char *argv[16];
	const char *a;
	int argc = 0;
	va_list ap;

	va_start(ap, errlen);
	while ((a = va_arg(ap, const char *)) != NULL && argc < 16)
		argv[argc++] = a;
	va_end(ap);
	return store_command(st, argc, argv, NULL, err, errlen);
}

static void
expect_status(const char *label, redisReply *r, const char *err,
    const char *want)
{
	ck_assert_msg(r != NULL, "%s: call failed: %s", label, err);
	ck_assert_msg(r->type == REDIS_REPLY_STATUS && strcmp(r->str, want) == 0,
	    "%s: want status %s, got type %d \"%s\"", label, want, r->type,
	    r->str != NULL ? r->str : "");
	store_reply_free(r);
}

static long long
expect_integer(const char *label, redisReply *r, const char *err)
{
	long long v;

	ck_assert_msg(r != NULL, "%s: call failed: %s", label, err);
	ck_assert_msg(r->type == REDIS_REPLY_INTEGER,
	    "%s: want integer, got type %d \"%s\"", label, r->type,
	    r->str != NULL ? r->str : "");
	v = r->integer;
	store_reply_free(r);
	return v;
}

/* Wait until the shared instance has finished a DEBUG SLEEP. */
static void
wait_main_free(void)
{
	ck_assert_msg(redis_ready(&r_main, 3000), "main redis stuck");
}

/* ---- addresses and options ---- */

static const struct {
	const char *label, *address, *want;
} bad_addresses[] = {
	{ "null", NULL, "empty" },
	{ "empty", "", "empty" },
	{ "unix without path", "unix:", "absolute" },
	{ "unix relative", "unix:redis.sock", "absolute" },
	{ "unix too long", "unix:/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "/redis.sock", "longer" },
	{ "hostname", "localhost:6379", "IP address" },
	{ "fqdn", "redis.example.com:6379", "IP address" },
	{ "bracketed hostname", "[localhost]:6379", "IP address" },
	{ "short ipv4", "1.2.3:6379", "IP address" },
	{ "ipv4 out of range", "256.1.1.1:6379", "IP address" },
	{ "leading space", " 127.0.0.1:6379", "IP address" },
	{ "no port", "127.0.0.1", "expected" },
	{ "empty port", "127.0.0.1:", "port" },
	{ "port zero", "127.0.0.1:0", "port" },
	{ "port too big", "127.0.0.1:65536", "port" },
	{ "port not a number", "127.0.0.1:redis", "port" },
	{ "port trailing junk", "127.0.0.1:6379x", "port" },
	{ "negative port", "127.0.0.1:-1", "port" },
	{ "bare ipv6", "::1:6379", "[IPv6]:port" },
	{ "ipv6 no port", "[::1]", "[IPv6]:port" },
	{ "ipv6 empty port", "[::1]:", "port" },
	{ "ipv6 unclosed", "[::1:6379", "[IPv6]:port" },
	{ "ipv6 empty", "[]:6379", "IP address" },
	{ "ipv4 in brackets", "[127.0.0.1]:6379", "IP address" },
	{ "ipv6 scope", "[fe80::1%eth0]:6379", "IP address" },
	{ "empty host", ":6379", "IP address" },
};

START_TEST(test_bad_address)
{
	const char *label = bad_addresses[_i].label;
	struct store_options o = {
		.address = bad_addresses[_i].address, .timeout_ms = 100,
		.pool = 1,
	};
	char err[256] = "";
	struct store *st = store_new(&o, err, sizeof(err));

	ck_assert_msg(st == NULL, "%s: store_new accepted \"%s\"", label,
	    o.address);
	ck_assert_msg(strstr(err, bad_addresses[_i].want) != NULL,
	    "%s: err \"%s\" does not mention \"%s\"", label, err,
	    bad_addresses[_i].want);
}
END_TEST

static const struct {
	const char *label, *address;
} good_addresses[] = {
	{ "unix prefix", "unix:/run/redis/redis.sock" },
	{ "bare path", "/run/redis/redis.sock" },
	{ "ipv4", "127.0.0.1:6379" },
	{ "ipv4 high port", "10.1.2.3:65535" },
	{ "ipv6 loopback", "[::1]:6379" },
	{ "ipv6 full", "[2001:db8::17]:1" },
	{ "ipv4-mapped ipv6", "[::ffff:127.0.0.1]:6379" },
};

START_TEST(test_good_address)
{
	const char *label = good_addresses[_i].label;
	struct store *st = open_store(label, good_addresses[_i].address, 0,
	    NULL, NULL, 100, 1);

	/* Lazy: a daemon must start while Redis is down. */
	ck_assert_msg(store_connects(st) == 0, "%s: connected at store_new",
	    label);
	ck_assert_msg(!store_is_down(st), "%s: down before any call", label);
	store_free(st);
}
END_TEST

static const char *const one_sentinel[] = { "127.0.0.1:26379" };
static const char *const unix_sentinel[] = { "unix:/run/sentinel.sock" };
static const char *const named_sentinel[] = { "sentinel.example:26379" };

static const struct {
	const char *label;
	struct store_options o;
	const char *want;
} bad_options[] = {
	{ "pool 0", { .address = "/x", .connect_timeout_ms = 100,
	    .timeout_ms = 100, .pool = 0 }, "pool" },
	{ "timeout 0", { .address = "/x", .connect_timeout_ms = 100,
	    .timeout_ms = 0, .pool = 1 }, "timeout" },
	{ "negative db", { .address = "/x", .database = -1,
	    .connect_timeout_ms = 100, .timeout_ms = 100, .pool = 1 }, "database" },
	{ "user without password", { .address = "/x", .username = "bob",
	    .connect_timeout_ms = 100, .timeout_ms = 100, .pool = 1 }, "password" },
	{ "address and Sentinels", { .address = "/x", .sentinels = one_sentinel,
	    .nsentinels = 1, .master_name = "mail", .connect_timeout_ms = 100,
	    .timeout_ms = 100, .pool = 1 }, "either a Redis address or Sentinels" },
	{ "neither address nor Sentinels", { .connect_timeout_ms = 100,
	    .timeout_ms = 100, .pool = 1 }, "empty Redis address" },
	{ "Sentinels without a master name", { .sentinels = one_sentinel,
	    .nsentinels = 1, .connect_timeout_ms = 100, .timeout_ms = 100,
	    .pool = 1 }, "master name" },
	{ "a Sentinel on a unix socket", { .sentinels = unix_sentinel,
	    .nsentinels = 1, .master_name = "mail", .connect_timeout_ms = 100,
	    .timeout_ms = 100, .pool = 1 }, "expected IP:port" },
	{ "a Sentinel by name", { .sentinels = named_sentinel,
	    .nsentinels = 1, .master_name = "mail", .connect_timeout_ms = 100,
	    .timeout_ms = 100, .pool = 1 }, "host must be an IP address" },
};

START_TEST(test_bad_option)
{
	char err[256] = "";

	ck_assert_msg(store_new(&bad_options[_i].o, err, sizeof(err)) == NULL,
	    "%s: accepted", bad_options[_i].label);
	ck_assert_msg(strstr(err, bad_options[_i].want) != NULL,
	    "%s: err \"%s\"", bad_options[_i].label, err);
	ck_assert_msg(store_new(NULL, err, sizeof(err)) == NULL, "NULL opts");
	store_free(NULL);
}
END_TEST

/* ---- commands ---- */

START_TEST(test_binary_roundtrip)
{
	static const char key[] = "bin:k\0ey\r\n%s";
	static const char val[] = "a\0b\r\nc%s%n%%\x80\xff\r\n*1\r\n$3\r\nDEL";
	const char *set[3] = { "SET", key, val };
	size_t setlen[3] = { 3, sizeof(key) - 1, sizeof(val) - 1 };
	const char *get[2] = { "GET", key };
	size_t getlen[2] = { 3, sizeof(key) - 1 };
	char err[256] = "";
	struct store *st = open_store("binary", main_addr, 0, NULL, NULL,
	    1000, 1);
	redisReply *r;

	r = store_command(st, 3, set, setlen, err, sizeof(err));
	expect_status("binary SET", r, err, "OK");
	r = store_command(st, 2, get, getlen, err, sizeof(err));
	ck_assert_msg(r != NULL, "binary GET: %s", err);
	ck_assert_msg(r->type == REDIS_REPLY_STRING, "binary GET: type %d",
	    r->type);
	ck_assert_msg(r->len == sizeof(val) - 1 &&
	    memcmp(r->str, val, r->len) == 0,
	    "binary GET: value changed (len %zu, want %zu)", r->len,
	    sizeof(val) - 1);
	store_reply_free(r);

	/* The key itself, NUL and all, must be what Redis stored. */
	r = CMD(st, err, "EXISTS", "bin:k");
	ck_assert_msg(expect_integer("prefix key", r, err) == 0,
	    "binary key was cut at the NUL");
	ck_assert_msg(store_connects(st) == 1, "connection not reused: %lu",
	    store_connects(st));
	store_free(st);
}
END_TEST

START_TEST(test_pipeline)
{
	static const char *del[] = { "DEL", "pl:list", "pl:str" };
	static const char *push[] = { "RPUSH", "pl:list", "a", "b\0c", "d" };
	static const size_t pushlen[] = { 5, 7, 1, 3, 1 };
	static const char *range[] = { "LRANGE", "pl:list", "0", "-1" };
	static const char *wrong[] = { "INCR", "pl:list" };
	static const char *missing[] = { "GET", "pl:str" };
	static const char *set[] = { "SET", "pl:str", "v" };
	struct store_cmd cmds[] = {
		{ 3, del, NULL },
		{ 5, push, pushlen },
		{ 4, range, NULL },
		{ 2, wrong, NULL },
		{ 2, missing, NULL },
		{ 3, set, NULL },
		{ 2, missing, NULL },
	};
	const size_t n = sizeof(cmds) / sizeof(cmds[0]);
	redisReply *rep[sizeof(cmds) / sizeof(cmds[0])];
	char err[256] = "";
	struct store *st = open_store("pipeline", main_addr, 0, NULL, NULL,
	    1000, 1);
	int round;

	for (round = 0; round < 2; round++) {
		ck_assert_msg(store_pipeline(st, n, cmds, rep, err,
		    sizeof(err)) == 0, "pipeline round %d: %s", round, err);
		ck_assert_msg(rep[0]->type == REDIS_REPLY_INTEGER &&
		    rep[0]->integer == 2 * round, "round %d DEL: %lld", round,
		    rep[0]->integer);
		ck_assert_msg(rep[1]->type == REDIS_REPLY_INTEGER &&
		    rep[1]->integer == 3, "round %d RPUSH", round);
		ck_assert_msg(rep[2]->type == REDIS_REPLY_ARRAY &&
		    rep[2]->elements == 3 && rep[2]->element[1]->len == 3 &&
		    memcmp(rep[2]->element[1]->str, "b\0c", 3) == 0,
		    "round %d LRANGE", round);
		/* An error reply is a per-command result, not a failure. */
		ck_assert_msg(rep[3]->type == REDIS_REPLY_ERROR &&
		    strncmp(rep[3]->str, "WRONGTYPE", 9) == 0,
		    "round %d INCR on a list: type %d", round, rep[3]->type);
		ck_assert_msg(rep[4]->type == REDIS_REPLY_NIL,
		    "round %d GET missing: type %d", round, rep[4]->type);
		ck_assert_msg(rep[5]->type == REDIS_REPLY_STATUS,
		    "round %d SET", round);
		/* Replies come back in order: the GET sees the SET before it. */
		ck_assert_msg(rep[6]->type == REDIS_REPLY_STRING &&
		    strcmp(rep[6]->str, "v") == 0, "round %d GET after SET",
		    round);
		for (size_t i = 0; i < n; i++)
			store_reply_free(rep[i]);
	}
	ck_assert_msg(store_connects(st) == 1, "pipeline connects %lu",
	    store_connects(st));
	ck_assert_msg(store_pipeline(st, 0, cmds, rep, err, sizeof(err)) == 0,
	    "empty pipeline");
	store_free(st);
}
END_TEST

START_TEST(test_eval)
{
	struct store_script incr = {
		.body = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
	};
	struct store_script raise = {
		.body = "return redis.error_reply('boom')"
	};
	struct store_script broken = { .body = "this is not lua" };
	struct store_script count = { .body = "return #KEYS * 1000 + #ARGV" };
	const char *keys[1] = { "ev:n" };
	const char *args[1] = { "5" };
	const char *many[40];
	char err[256] = "", sha[41];
	struct store *st = open_store("eval", main_addr, 0, NULL, NULL,
	    1000, 1);
	redisReply *r;
	int i;

	r = CMD(st, err, "DEL", "ev:n");
	expect_integer("DEL", r, err);

	r = store_eval(st, &incr, 1, keys, NULL, 1, args, NULL, err,
	    sizeof(err));
	ck_assert_msg(expect_integer("first eval", r, err) == 5, "first eval");
	ck_assert_msg(incr.loaded && strlen(incr.sha) == 40, "sha not cached");
	memcpy(sha, incr.sha, sizeof(sha));

	r = CMD(st, err, "SCRIPT", "FLUSH");
	expect_status("SCRIPT FLUSH", r, err, "OK");
	r = store_eval(st, &incr, 1, keys, NULL, 1, args, NULL, err,
	    sizeof(err));
	ck_assert_msg(expect_integer("eval after flush", r, err) == 10,
	    "eval after flush");
	ck_assert_msg(strcmp(sha, incr.sha) == 0, "sha changed");
	r = store_eval(st, &incr, 1, keys, NULL, 1, args, NULL, err,
	    sizeof(err));
	ck_assert_msg(expect_integer("cached eval", r, err) == 15,
	    "cached eval");

	/* Errors raised by a script, or by loading it, are replies. */
	r = store_eval(st, &raise, 0, NULL, NULL, 0, NULL, NULL, err,
	    sizeof(err));
	ck_assert_msg(r != NULL && r->type == REDIS_REPLY_ERROR &&
	    strstr(r->str, "boom") != NULL, "script error: %s",
	    r != NULL ? r->str : err);
	store_reply_free(r);
	r = store_eval(st, &broken, 0, NULL, NULL, 0, NULL, NULL, err,
	    sizeof(err));
	ck_assert_msg(r != NULL && r->type == REDIS_REPLY_ERROR,
	    "broken script: %s", r != NULL ? r->str : err);
	ck_assert_msg(!broken.loaded, "broken script marked loaded");
	store_reply_free(r);

	/* More arguments than the stack array holds. */
	for (i = 0; i < 40; i++)
		many[i] = "x";
	r = store_eval(st, &count, 3, many, NULL, 37, many + 3, NULL, err,
	    sizeof(err));
	ck_assert_msg(expect_integer("many args", r, err) == 3037, "many args");
	ck_assert_msg(store_connects(st) == 1, "eval connects %lu",
	    store_connects(st));
	store_free(st);
}
END_TEST

START_TEST(test_stale_idle)
{
	char err[256] = "", id[32];
	struct store *st = open_store("stale", main_addr, 0, NULL, NULL,
	    1000, 1);
	struct store *killer = open_store("killer", main_addr, 0, NULL, NULL,
	    1000, 1);
	redisReply *r;

	r = CMD(st, err, "CLIENT", "ID");
	snprintf(id, sizeof(id), "%lld", expect_integer("CLIENT ID", r, err));
	r = CMD(killer, err, "CLIENT", "KILL", "ID", id);
	ck_assert_msg(expect_integer("CLIENT KILL", r, err) == 1, "not killed");
	/* The idle connection is dead: the store must notice, not fail. */
	r = CMD(st, err, "PING");
	expect_status("PING after kill", r, err, "PONG");
	ck_assert_msg(store_connects(st) == 2, "connects %lu",
	    store_connects(st));
	store_free(st);
	store_free(killer);
}
END_TEST

/* ---- the version check at connect, against a fake server ---- */

/*
 * A fake Redis: a thread serving one unix socket, one connection at a time,
 * that answers INFO with a canned reply (a bulk string with redis_version,
 * or an error reply), TIME with the current time, and every other command
 * with +PONG.  Just enough RESP to see what the store does at connect.
 */
struct fake {
	char path[100];
	int lfd;
	const char *info;	/* INFO's bulk reply; "-..." an error line */
	pthread_t thread;
	int infos;		/* INFO commands answered */
};

/* Parse one RESP array of bulk strings from buf[0..len); returns the bytes
 * it takes (0: incomplete) and the first element in name (upper-cased). */
static size_t
fake_parse(const char *buf, size_t len, char *name, size_t namelen)
{
	const char *p = buf, *end = buf + len, *nl;
	long n, i, blen;

	if (len == 0 || *p != '*' || (nl = memchr(p, '\n', len)) == NULL)
		return 0;
	n = strtol(p + 1, NULL, 10);
	p = nl + 1;
	name[0] = '\0';
	for (i = 0; i < n; i++) {
		if (p >= end || *p != '$' ||
		    (nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			return 0;
		blen = strtol(p + 1, NULL, 10);
		p = nl + 1;
		if (end - p < blen + 2)
			return 0;
		if (i == 0) {
			size_t k, m = (size_t)blen < namelen - 1 ? (size_t)blen :
			    namelen - 1;
			for (k = 0; k < m; k++)
				name[k] = (char)(p[k] >= 'a' && p[k] <= 'z' ?
				    p[k] - 32 : p[k]);
			name[m] = '\0';
		}
		p += blen + 2;
	}
	return (size_t)(p - buf);
}

static void
fake_write(int fd, const char *s, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, s, len);

		if (n <= 0)
			return;
		s += n;
		len -= (size_t)n;
	}
}

static void *
fake_serve(void *arg)
{
	struct fake *f = arg;
	int fd;

	while ((fd = accept(f->lfd, NULL, NULL)) != -1) {
		char buf[4096], name[32];
		size_t have = 0, used;
		ssize_t n;

		while ((n = read(fd, buf + have, sizeof(buf) - have)) > 0) {
			have += (size_t)n;
			while ((used = fake_parse(buf, have, name, sizeof(name))) > 0) {
				if (strcmp(name, "INFO") == 0) {
					char hd[32];
					__atomic_add_fetch(&f->infos, 1, __ATOMIC_RELAXED);
					if (f->info[0] != '-') {	/* a bulk string */
						snprintf(hd, sizeof(hd), "$%zu\r\n", strlen(f->info));
						fake_write(fd, hd, strlen(hd));
					}
					fake_write(fd, f->info, strlen(f->info));
					if (f->info[0] != '-')
						fake_write(fd, "\r\n", 2);
				} else if (strcmp(name, "TIME") == 0) {
					char t[128], sec[32], usec[32];
					struct timespec ts;
					clock_gettime(CLOCK_REALTIME, &ts);
					snprintf(sec, sizeof(sec), "%lld", (long long)ts.tv_sec);
					snprintf(usec, sizeof(usec), "%06ld", ts.tv_nsec / 1000);
					snprintf(t, sizeof(t), "*2\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n",
					    strlen(sec), sec, strlen(usec), usec);
					fake_write(fd, t, strlen(t));
				} else {
					fake_write(fd, "+PONG\r\n", 7);
				}
				memmove(buf, buf + used, have - used);
				have -= used;
			}
			if (have == sizeof(buf))
				break;
		}
		close(fd);
	}
	return NULL;
}

static void
fake_start(struct fake *f, const char *label, const char *info)
{
	struct sockaddr_un sun;

	memset(f, 0, sizeof(*f));
	f->info = info;
	snprintf(f->path, sizeof(f->path), "%.60s/fake-%d.sock", tmpdir, (int)getpid());
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", f->path);
	unlink(f->path);
	f->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_msg(f->lfd != -1 && bind(f->lfd, (struct sockaddr *)&sun,
	    sizeof(sun)) == 0 && listen(f->lfd, 8) == 0, "%s: fake server: %s",
	    label, strerror(errno));
	ck_assert_msg(pthread_create(&f->thread, NULL, fake_serve, f) == 0,
	    "%s: pthread_create", label);
}

static void
fake_stop(struct fake *f)
{
	shutdown(f->lfd, SHUT_RDWR);	/* ends accept() in the thread */
	close(f->lfd);
	pthread_join(f->thread, NULL);
	unlink(f->path);
}

static const struct {
	const char *label;
	const char *info;	/* the fake's reply to INFO server */
	const char *want_err;	/* NULL: the connection must work */
} version_cases[] = {
	{ "Redis 4.0.14 is refused",
	    "# Server\r\nredis_version:4.0.14\r\nredis_git_sha1:00000000\r\n"
	    "redis_mode:x\r\n",
	    "version 4.0.14 is too old: policy-milter needs Redis 5.0 or later" },
	{ "Redis 5.0.0 is accepted",
	    "# Server\r\nredis_version:5.0.0\r\nredis_git_sha1:00000000\r\n"
	    "redis_mode:x\r\n", NULL },
	{ "NOPERM to INFO does not fail the connection",
	    "-NOPERM this user has no permissions to run the 'info' command\r\n", NULL },
	{ "INFO renamed away does not fail the connection",
	    "-ERR unknown command 'INFO'\r\n", NULL },
	{ "NOAUTH to INFO fails it",
	    "-NOAUTH Authentication required.\r\n", "INFO failed: NOAUTH" },
};

START_TEST(test_version_check)
{
	const char *label = version_cases[_i].label;
	const char *want = version_cases[_i].want_err;
	char addr[320], err[256] = "";
	struct fake f;
	struct store *st;
	redisReply *r;

	fake_start(&f, label, version_cases[_i].info);
	snprintf(addr, sizeof(addr), "unix:%s", f.path);
	st = open_store(label, addr, 0, NULL, NULL, 1000, 1);
	r = CMD(st, err, "PING");
	ck_assert_msg(__atomic_load_n(&f.infos, __ATOMIC_RELAXED) == 1,
	    "%s: INFO asked %d times, want once at connect", label, f.infos);
	if (want == NULL) {
		expect_status(label, r, err, "PONG");
		ck_assert_msg(store_connects(st) == 1, "%s: connects %lu", label,
		    store_connects(st));
	} else {
		ck_assert_msg(r == NULL, "%s: the call succeeded", label);
		ck_assert_msg(strstr(err, want) != NULL, "%s: error \"%s\" lacks \"%s\"",
		    label, err, want);
		ck_assert_msg(store_connects(st) == 0, "%s: connects %lu", label,
		    store_connects(st));
	}
	store_free(st);
	fake_stop(&f);
}
END_TEST

/* ---- AUTH and SELECT ---- */

static const struct {
	const char *label;
	int tcp;		/* 0 unix, 4 127.0.0.1, 6 [::1] */
	const char *user, *password;
	int db;
	const char *want;	/* "PONG", "NOAUTH" (error reply) or err text */
} auth_cases[] = {
	{ "no password", 0, NULL, NULL, 0, "NOAUTH" },
	{ "right password", 0, NULL, PASSWORD, 0, "PONG" },
	{ "wrong password", 0, NULL, "nope-secret", 0, "AUTH failed" },
	{ "default user", 0, "default", PASSWORD, 0, "PONG" },
	{ "acl user", 0, ACL_USER, ACL_PASSWORD, 0, "PONG" },
	{ "acl user wrong password", 0, ACL_USER, "nope-secret", 0,
	    "AUTH failed" },
	{ "unknown user", 0, "mallory", "nope-secret", 0, "AUTH failed" },
	{ "password and select", 0, NULL, PASSWORD, 3, "PONG" },
	{ "tcp ipv4", 4, NULL, PASSWORD, 2, "PONG" },
	{ "tcp ipv4 wrong password", 4, NULL, "nope-secret", 0,
	    "AUTH failed" },
	{ "tcp ipv6", 6, NULL, PASSWORD, 0, "PONG" },
	{ "select out of range", 0, NULL, PASSWORD, 99, "SELECT 99 failed" },
};

START_TEST(test_auth)
{
	const char *label = auth_cases[_i].label;
	char addr[300], err[256] = "";
	struct store *st;
	redisReply *r;

	if (auth_cases[_i].tcp == 6 && !have_ipv6)
		return;		/* no ::1 here */
	if (auth_cases[_i].tcp == 4)
		snprintf(addr, sizeof(addr), "127.0.0.1:%d", r_auth.port);
	else if (auth_cases[_i].tcp == 6)
		snprintf(addr, sizeof(addr), "[::1]:%d", r_auth.port);
	else
		snprintf(addr, sizeof(addr), "%s", auth_addr);
	st = open_store(label, addr, auth_cases[_i].db, auth_cases[_i].user,
	    auth_cases[_i].password, 1000, 1);
	r = CMD(st, err, "PING");
	if (strcmp(auth_cases[_i].want, "PONG") == 0) {
		expect_status(label, r, err, "PONG");
		r = CMD(st, err, "CLIENT", "INFO");
		ck_assert_msg(r != NULL && r->type == REDIS_REPLY_STRING,
		    "%s: CLIENT INFO: %s", label, err);
		char want[32];
		snprintf(want, sizeof(want), " db=%d ", auth_cases[_i].db);
		ck_assert_msg(strstr(r->str, want) != NULL,
		    "%s: not in db %d: %s", label, auth_cases[_i].db, r->str);
		store_reply_free(r);
	} else if (strcmp(auth_cases[_i].want, "NOAUTH") == 0) {
		/* The connection's set-up (INFO) meets it first. */
		ck_assert_msg(r == NULL && strstr(err, ": INFO failed: NOAUTH") != NULL,
		    "%s: want NOAUTH, %s", label, r != NULL ? r->str : err);
		store_reply_free(r);
	} else {
		ck_assert_msg(r == NULL, "%s: call succeeded", label);
		ck_assert_msg(strstr(err, auth_cases[_i].want) != NULL,
		    "%s: err \"%s\"", label, err);
		ck_assert_msg(store_connects(st) == 0, "%s: failed connect "
		    "counted", label);
	}
	/* Neither password may ever appear in an error. */
	ck_assert_msg(strstr(err, "nope-secret") == NULL &&
	    strstr(err, "s3cret") == NULL && strstr(err, ACL_PASSWORD) == NULL,
	    "%s: password in err \"%s\"", label, err);
	store_free(st);
}
END_TEST

START_TEST(test_select)
{
	char err[256] = "";
	struct store *db3 = open_store("db3", main_addr, 3, NULL, NULL, 1000,
	    1);
	struct store *db0 = open_store("db0", main_addr, 0, NULL, NULL, 1000,
	    1);
	redisReply *r;

	r = CMD(db0, err, "DEL", "sel:k");
	expect_integer("db0 DEL", r, err);
	r = CMD(db3, err, "SET", "sel:k", "three");
	expect_status("db3 SET", r, err, "OK");
	r = CMD(db0, err, "GET", "sel:k");
	ck_assert_msg(r != NULL && r->type == REDIS_REPLY_NIL,
	    "db3 write visible in db0");
	store_reply_free(r);

	/* Check with plain hiredis that the key is in database 3. */
	redisContext *c = redisConnectUnix(r_main.sock);
	ck_assert_msg(c != NULL && c->err == 0, "raw connect");
	r = redisCommand(c, "SELECT 3");
	ck_assert_msg(r != NULL && r->type == REDIS_REPLY_STATUS, "raw SELECT");
	freeReplyObject(r);
	r = redisCommand(c, "GET sel:k");
	ck_assert_msg(r != NULL && r->type == REDIS_REPLY_STRING &&
	    strcmp(r->str, "three") == 0, "key not in db 3");
	freeReplyObject(r);
	redisFree(c);
	store_free(db3);
	store_free(db0);
}
END_TEST

/* ---- failures ---- */

START_TEST(test_timeout_reconnect)
{
	char err[256] = "";
	struct store *st = open_store("timeout", main_addr, 0, NULL, NULL,
	    100, 1);
	redisReply *r;
	int i;

	/* The second attempt runs on a new connection: is it bounded too? */
	for (i = 0; i < 2; i++) {
		double t0 = now_ms(), dt;

		r = CMD(st, err, "DEBUG", "SLEEP", "0.5");
		dt = now_ms() - t0;
		fprintf(stderr, "timeout: attempt %d failed after %.1f ms: %s\n",
		    i + 1, dt, err);
		ck_assert_msg(r == NULL, "attempt %d: DEBUG SLEEP succeeded",
		    i + 1);
		ck_assert_msg(strstr(err, "timeout after 100 ms") != NULL,
		    "attempt %d: err \"%s\"", i + 1, err);
		ck_assert_msg(dt >= 90 && dt <= 250, "attempt %d took %.1f ms",
		    i + 1, dt);
		/* The second connection's own set-up (INFO, TIME) meets the
		 * sleeping Redis: it is bounded by the same timeout and is not
		 * counted as a connect. */
		ck_assert_msg(store_connects(st) == 1,
		    "attempt %d: connects %lu", i + 1, store_connects(st));
	}
	ck_assert_msg(!store_is_down(st), "two failures opened the breaker");
	wait_main_free();
	r = CMD(st, err, "PING");
	expect_status("PING after timeouts", r, err, "PONG");
	ck_assert_msg(store_connects(st) == 2, "connects %lu",
	    store_connects(st));
	store_free(st);
}
END_TEST

struct holder {
	struct store *st;
	int rc;
	char err[256];
};

static void *
hold_slot(void *arg)
{
	struct holder *h = arg;
	/*
	 * Not DEBUG SLEEP: Redis would write both replies after both sleeps.
	 * Blocked, the second BLPOP waits in the query buffer, so each reply
	 * comes 0.3-0.4 s after the previous one.
	 */
	static const char *sl[] = { "BLPOP", "pw:none", "0.3" };
	struct store_cmd cmds[2] = { { 3, sl, NULL }, { 3, sl, NULL } };
	redisReply *rep[2];

	h->rc = store_pipeline(h->st, 2, cmds, rep, h->err, sizeof(h->err));
	if (h->rc == 0) {
		store_reply_free(rep[0]);
		store_reply_free(rep[1]);
	}
	return NULL;
}

START_TEST(test_pool_wait)
{
	struct holder h = { NULL, -1, "" };
	char err[256] = "";
	pthread_t t;
	redisReply *r;
	double t0, dt;

	/* Each reply comes within 500 ms, the slot is held for >= 600 ms. */
	h.st = open_store("pool wait", main_addr, 0, NULL, NULL, 500, 1);
	pthread_create(&t, NULL, hold_slot, &h);
	sleep_ms(50);
	t0 = now_ms();
	r = CMD(h.st, err, "PING");
	dt = now_ms() - t0;
	ck_assert_msg(r == NULL, "pool wait: got a connection after %.1f ms",
	    dt);
	fprintf(stderr, "pool wait: failed after %.1f ms: %s\n", dt, err);
	ck_assert_msg(strstr(err, "no free Redis connection within 500 ms") !=
	    NULL, "pool wait: err \"%s\"", err);
	ck_assert_msg(dt >= 490 && dt <= 560, "pool wait took %.1f ms", dt);
	pthread_join(t, NULL);
	ck_assert_msg(h.rc == 0, "holder: %s", h.err);
	ck_assert_msg(!store_is_down(h.st), "pool wait counted as a failure");
	r = CMD(h.st, err, "PING");
	expect_status("PING after wait", r, err, "PONG");
	store_free(h.st);
}
END_TEST

static void
expect_fail(const char *label, struct store *st, bool want_open,
    double max_ms)
{
	char err[256] = "";
	double t0 = now_ms(), dt;
	redisReply *r = CMD(st, err, "PING");

	dt = now_ms() - t0;
	fprintf(stderr, "breaker: %s: failed after %.2f ms: %s\n", label, dt,
	    err);
	ck_assert_msg(r == NULL, "%s: call succeeded", label);
	ck_assert_msg((strcmp(err, "Redis circuit open") == 0) == want_open,
	    "%s: err \"%s\"", label, err);
	ck_assert_msg(dt < max_ms, "%s: took %.2f ms", label, dt);
}

START_TEST(test_breaker_restart)
{
	char err[256] = "";
	struct store *st = open_store("breaker", brk_addr, 0, NULL, NULL,
	    200, 2);
	redisReply *r;
	double opened;

	r = CMD(st, err, "PING");
	expect_status("PING before stop", r, err, "PONG");
	redis_stop(&r_brk);

	expect_fail("failure 1", st, false, 250);
	ck_assert_msg(!store_is_down(st), "open after 1 failure");
	expect_fail("failure 2", st, false, 250);
	ck_assert_msg(!store_is_down(st), "open after 2 failures");
	expect_fail("failure 3", st, false, 250);
	opened = now_ms();
	ck_assert_msg(store_is_down(st), "not open after 3 failures");
	expect_fail("open 1", st, true, 5);
	expect_fail("open 2", st, true, 5);

	redis_start(&r_brk);
	if (now_ms() - opened < 900)	/* the period is not over yet */
		expect_fail("open after restart", st, true, 5);
	while (now_ms() - opened < 1050)
		sleep_ms(10);
	r = CMD(st, err, "PING");
	fprintf(stderr, "breaker: probe %.0f ms after opening: %s\n",
	    now_ms() - opened, r != NULL ? "ok" : err);
	expect_status("probe", r, err, "PONG");
	ck_assert_msg(!store_is_down(st), "still open after a good probe");
	r = CMD(st, err, "PING");
	expect_status("after close", r, err, "PONG");
	store_free(st);
}
END_TEST

START_TEST(test_breaker_backoff)
{
	char addr[300];
	struct store *st;
	double t;

	snprintf(addr, sizeof(addr), "unix:%s/nobody.sock", tmpdir);
	st = open_store("backoff", addr, 0, NULL, NULL, 200, 1);
	expect_fail("failure 1", st, false, 250);
	expect_fail("failure 2", st, false, 250);
	expect_fail("failure 3", st, false, 250);
	ck_assert_msg(store_is_down(st), "not open");
	expect_fail("open", st, true, 5);

	/* 1 s later one probe goes through, fails, and doubles the period. */
	sleep_ms(1050);
	expect_fail("probe 1", st, false, 250);
	t = now_ms();
	expect_fail("open after probe 1", st, true, 5);
	sleep_ms(1050);
	expect_fail("1 s into the 2 s period", st, true, 5);
	while (now_ms() - t < 2050)
		sleep_ms(10);
	expect_fail("probe 2", st, false, 250);
	expect_fail("open after probe 2", st, true, 5);
	ck_assert_msg(store_is_down(st), "closed without success");
	store_free(st);
}
END_TEST

/* A "Redis" that accepts connections and never answers: the kernel does. */
static int
hung_listener(const char *path)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	ck_assert_msg(strlen(path) < sizeof(sun.sun_path), "path too long");
	memcpy(sun.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_msg(fd != -1 && bind(fd, (struct sockaddr *)&sun,
	    sizeof(sun)) == 0 && listen(fd, 64) == 0, "hung listener: %s",
	    strerror(errno));
	return fd;
}

struct prober {
	struct store *st;
	pthread_barrier_t *go;
	double ms;
	char err[256];
};

static void *
probe_once(void *arg)
{
	struct prober *p = arg;
	double t0;

	pthread_barrier_wait(p->go);
	t0 = now_ms();
	store_reply_free(CMD(p->st, p->err, "PING"));
	p->ms = now_ms() - t0;
	return NULL;
}

START_TEST(test_breaker_hung)
{
	char path[300], addr[310];
	struct prober p[4];
	pthread_t t[4];
	pthread_barrier_t go;
	struct store *st;
	int fd, i, probes = 0;

	snprintf(path, sizeof(path), "%s/hung.sock", tmpdir);
	unlink(path);
	fd = hung_listener(path);
	snprintf(addr, sizeof(addr), "unix:%s", path);
	st = open_store("hung", addr, 0, NULL, NULL, 100, 4);

	/* A hung Redis costs three timeouts, then nothing. */
	expect_fail("timeout 1", st, false, 250);
	expect_fail("timeout 2", st, false, 250);
	expect_fail("timeout 3", st, false, 250);
	ck_assert_msg(store_is_down(st), "not open after 3 timeouts");
	expect_fail("open", st, true, 5);

	/* Half-open: of four simultaneous callers exactly one probes. */
	sleep_ms(1050);
	pthread_barrier_init(&go, NULL, 4);
	for (i = 0; i < 4; i++) {
		p[i].st = st;
		p[i].go = &go;
		p[i].err[0] = '\0';
		pthread_create(&t[i], NULL, probe_once, &p[i]);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		fprintf(stderr, "breaker: half-open caller %d: %.2f ms: %s\n",
		    i, p[i].ms, p[i].err);
		if (strcmp(p[i].err, "Redis circuit open") == 0)
			ck_assert_msg(p[i].ms < 5, "caller %d waited %.2f ms",
			    i, p[i].ms);
		else
			probes++;
	}
	pthread_barrier_destroy(&go);
	ck_assert_msg(probes == 1, "%d probes at once", probes);
	ck_assert_msg(store_is_down(st), "closed by a failed probe");
	store_free(st);
	close(fd);
	unlink(path);
}
END_TEST

/* ---- threads ---- */

#define HAMMER_THREADS	8
#define HAMMER_INCRS	500

struct hammer {
	struct store *st;
	struct store_script *script;
	int ok, errors, noscript;
	char err[256];
};

static void *
hammer_incr(void *arg)
{
	struct hammer *h = arg;
	int i;

	for (i = 0; i < HAMMER_INCRS; i++) {
		redisReply *r = CMD(h->st, h->err, "INCR", "pool:n");

		if (r != NULL && r->type == REDIS_REPLY_INTEGER)
			h->ok++;
		else
			h->errors++;
		store_reply_free(r);
	}
	return NULL;
}

START_TEST(test_pool_bound)
{
	struct hammer h[HAMMER_THREADS];
	pthread_t t[HAMMER_THREADS];
	char err[256] = "";
	struct store *st = open_store("pool", main_addr, 0, NULL, NULL, 2000,
	    2);
	redisReply *r;
	int i;

	r = CMD(st, err, "DEL", "pool:n");
	expect_integer("DEL", r, err);
	for (i = 0; i < HAMMER_THREADS; i++) {
		memset(&h[i], 0, sizeof(h[i]));
		h[i].st = st;
		pthread_create(&t[i], NULL, hammer_incr, &h[i]);
	}
	for (i = 0; i < HAMMER_THREADS; i++) {
		pthread_join(t[i], NULL);
		ck_assert_msg(h[i].errors == 0, "thread %d: %d errors, last %s",
		    i, h[i].errors, h[i].err);
	}
	r = CMD(st, err, "GET", "pool:n");
	ck_assert_msg(r != NULL && r->type == REDIS_REPLY_STRING &&
	    atoi(r->str) == HAMMER_THREADS * HAMMER_INCRS,
	    "count %s, want %d", r != NULL ? r->str : err,
	    HAMMER_THREADS * HAMMER_INCRS);
	store_reply_free(r);
	ck_assert_msg(store_connects(st) <= 2, "%lu connections with pool 2",
	    store_connects(st));
	store_free(st);
}
END_TEST

static volatile int flushing;

static void *
flusher(void *arg)
{
	struct store *st = arg;
	char err[256];

	while (__atomic_load_n(&flushing, __ATOMIC_ACQUIRE)) {
		store_reply_free(CMD(st, err, "SCRIPT", "FLUSH"));
		sleep_ms(3);
	}
	return NULL;
}

static void *
hammer_eval(void *arg)
{
	struct hammer *h = arg;
	const char *keys[1] = { "conc:n" };
	const char *args[1] = { "1" };
	int i;

	for (i = 0; i < HAMMER_INCRS; i++) {
		redisReply *r;

		if (i % 2 == 0) {
			r = store_eval(h->st, h->script, 1, keys, NULL, 1, args,
			    NULL, h->err, sizeof(h->err));
		} else {
			static const char *incr[] = { "INCR", "conc:n" };
			static const char *ping[] = { "PING" };
			struct store_cmd cmds[2] = {
				{ 2, incr, NULL }, { 1, ping, NULL }
			};
			redisReply *rep[2];

			r = NULL;
			if (store_pipeline(h->st, 2, cmds, rep, h->err,
			    sizeof(h->err)) == 0) {
				r = rep[0];
				store_reply_free(rep[1]);
			}
		}
		if (r == NULL)
			h->errors++;
		else if (r->type == REDIS_REPLY_INTEGER)
			h->ok++;
		else if (r->type == REDIS_REPLY_ERROR &&
		    strncmp(r->str, "NOSCRIPT", 8) == 0)
			h->noscript++;	/* flushed between reload and retry */
		else
			h->errors++;
		store_reply_free(r);
	}
	return NULL;
}

START_TEST(test_concurrency)
{
	struct store_script script = {
		.body = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
	};
	struct hammer h[HAMMER_THREADS];
	pthread_t t[HAMMER_THREADS], ft;
	char err[256] = "";
	struct store *st = open_store("conc", main_addr, 0, NULL, NULL, 2000,
	    3);
	struct store *fst = open_store("flusher", main_addr, 0, NULL, NULL,
	    2000, 1);
	redisReply *r;
	int i, ok = 0, noscript = 0;

	r = CMD(st, err, "DEL", "conc:n");
	expect_integer("DEL", r, err);
	flushing = 1;
	pthread_create(&ft, NULL, flusher, fst);
	for (i = 0; i < HAMMER_THREADS; i++) {
		memset(&h[i], 0, sizeof(h[i]));
		h[i].st = st;
		h[i].script = &script;	/* shared, not loaded yet: races on load */
		pthread_create(&t[i], NULL, hammer_eval, &h[i]);
	}
	for (i = 0; i < HAMMER_THREADS; i++) {
		pthread_join(t[i], NULL);
		ck_assert_msg(h[i].errors == 0, "thread %d: %d errors, last %s",
		    i, h[i].errors, h[i].err);
		ok += h[i].ok;
		noscript += h[i].noscript;
	}
	__atomic_store_n(&flushing, 0, __ATOMIC_RELEASE);
	pthread_join(ft, NULL);
	fprintf(stderr, "concurrency: %d increments, %d NOSCRIPT after retry, "
	    "%lu connections\n", ok, noscript, store_connects(st));
	/* Evidence that the NOSCRIPT path ran: EVALSHA calls that failed. */
	r = CMD(st, err, "INFO", "commandstats");
	if (r != NULL && r->type == REDIS_REPLY_STRING) {
		const char *line = strstr(r->str, "cmdstat_evalsha:");

		fprintf(stderr, "concurrency: %.*s\n", line != NULL ?
		    (int)strcspn(line, "\r\n") : 0, line != NULL ? line : "");
	}
	store_reply_free(r);
	r = CMD(st, err, "GET", "conc:n");
	ck_assert_msg(r != NULL && r->type == REDIS_REPLY_STRING &&
	    atoi(r->str) == ok, "count %s, want %d", r != NULL ? r->str : err,
	    ok);
	store_reply_free(r);
	ck_assert_msg(ok + noscript == HAMMER_THREADS * HAMMER_INCRS,
	    "lost calls");
	ck_assert_msg(store_connects(st) <= 3, "%lu connections with pool 3",
	    store_connects(st));
	store_free(st);
	store_free(fst);
}
END_TEST

static Suite *
store_suite(void)
{
	Suite *s = suite_create("store_redis");
	TCase *tc;

	tc = tcase_create("address");
	tcase_add_loop_test(tc, test_bad_address, 0,
	    sizeof(bad_addresses) / sizeof(bad_addresses[0]));
	tcase_add_loop_test(tc, test_good_address, 0,
	    sizeof(good_addresses) / sizeof(good_addresses[0]));
	tcase_add_loop_test(tc, test_bad_option, 0,
	    sizeof(bad_options) / sizeof(bad_options[0]));
	suite_add_tcase(s, tc);

	tc = tcase_create("commands");
	tcase_add_test(tc, test_binary_roundtrip);
	tcase_add_test(tc, test_pipeline);
	tcase_add_test(tc, test_eval);
	tcase_add_test(tc, test_stale_idle);
	tcase_add_loop_test(tc, test_auth, 0,
	    sizeof(auth_cases) / sizeof(auth_cases[0]));
	tcase_add_test(tc, test_select);
	tcase_add_loop_test(tc, test_version_check, 0,
	    sizeof(version_cases) / sizeof(version_cases[0]));
	suite_add_tcase(s, tc);

	tc = tcase_create("failures");
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, test_timeout_reconnect);
	tcase_add_test(tc, test_pool_wait);
	tcase_add_test(tc, test_breaker_restart);
	tcase_add_test(tc, test_breaker_backoff);
	tcase_add_test(tc, test_breaker_hung);
	suite_add_tcase(s, tc);

	tc = tcase_create("threads");
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, test_pool_bound);
	tcase_add_test(tc, test_concurrency);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	log_open(true, false);
	setup_all();
	snprintf(main_addr, sizeof(main_addr), "unix:%s", r_main.sock);
	snprintf(auth_addr, sizeof(auth_addr), "%s", r_auth.sock);
	snprintf(brk_addr, sizeof(brk_addr), "unix:%s", r_brk.sock);

	return tl_run(store_suite());
}
