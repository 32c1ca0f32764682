/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * testlib - helpers shared by the unit tests (see testlib.h).
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <stdarg.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "milter/cfg.h"
#include "milter/session.h"
#include "milter/stats.h"
#include "tests/testlib.h"

int
tl_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ---- loading a configuration */

struct loaded {
	char msgs[4096];
};

static void
collect(void *arg, bool is_error, const char *msg)
{
	struct loaded *l = arg;
	size_t n = strlen(l->msgs);

	snprintf(l->msgs + n, sizeof(l->msgs) - n, "%s%s\n", is_error ? "error: " : "", msg);
}

struct cfg *
tl_load_config(const char *label, const char *text)
{
	char dir[] = "/tmp/testlib.XXXXXX", path[64];
	struct loaded l = { "" };
	struct cfg *c;
	FILE *fp;

	ck_assert_msg(mkdtemp(dir) != NULL, "%s: mkdtemp: %s", label, strerror(errno));
	snprintf(path, sizeof(path), "%s/policy-milter.conf", dir);
	fp = fopen(path, "w");
	ck_assert_msg(fp != NULL, "%s: %s: %s", label, path, strerror(errno));
	fprintf(fp, "listen = \"unix:/run/policy-milter/test.sock\";\n%s", text);
	ck_assert_msg(fclose(fp) == 0, "%s: %s: %s", label, path, strerror(errno));
	c = cfg_load(path, NULL, collect, &l);
	unlink(path);
	rmdir(dir);
	ck_assert_msg(c != NULL, "%s: configuration refused:\n%s", label, l.msgs);
	if (l.msgs[0] != '\0') {
		cfg_unref(c);
		ck_abort_msg("%s: configuration warned:\n%s", label, l.msgs);
	}
	return c;
}

/* ---- the test's session */

static struct session *cur;

struct session *
tl_session_new(const char *label, struct cfg *c)
{
	cur = session_new(c);
	ck_assert_msg(cur != NULL, "%s: session_new", label);
	return cur;
}

void
tl_teardown(void)
{
	session_free(cur);
	cur = NULL;
	stats_reset();
}

void
tl_set_client(const char *label, struct session *s, const char *ip)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;

	memset(&sin, 0, sizeof(sin));
	memset(&sin6, 0, sizeof(sin6));
	if (ip == NULL) {
		session_set_client(s, NULL);
	} else if (inet_pton(AF_INET, ip, &sin.sin_addr) == 1) {
		sin.sin_family = AF_INET;
		session_set_client(s, (const struct sockaddr *)&sin);
	} else if (inet_pton(AF_INET6, ip, &sin6.sin6_addr) == 1) {
		sin6.sin6_family = AF_INET6;
		session_set_client(s, (const struct sockaddr *)&sin6);
	} else {
		ck_abort_msg("%s: bad test address %s", label, ip);
	}
}

/* ---- statistics */

void
tl_assert_count(const char *label, const char *policy, enum stats_field f, uint64_t want)
{
	uint64_t got = stats_pending(stats_get(policy), f);

	ck_assert_msg(got == want, "%s: %s %s = %llu, expected %llu", label, policy,
	    stats_field_name(f), (unsigned long long)got, (unsigned long long)want);
}

/* ---- a private Redis */

static char redis_dir[] = "/tmp/testlib-redis.XXXXXX";
static char redis_sock[300];
static pid_t redis_starter;

static void
redis_cleanup(void)
{
	char sh[700];

	if (getpid() != redis_starter)     /* a forked test child */
		return;
	snprintf(sh, sizeof(sh), "redis-cli -s %s shutdown nosave >/dev/null 2>&1; "
	    "rm -rf '%s'", redis_sock, redis_dir);
	if (system(sh) == -1)
		perror("system");
}

const char *
tl_redis_start(void)
{
	char sh[1200];

	if (redis_sock[0] != '\0')
		return redis_sock;
	if (mkdtemp(redis_dir) == NULL) {
		perror("mkdtemp");
		exit(2);
	}
	snprintf(redis_sock, sizeof(redis_sock), "%s/redis.sock", redis_dir);
	redis_starter = getpid();
	atexit(redis_cleanup);
	snprintf(sh, sizeof(sh), "redis-server --port 0 --unixsocket %s --save '' "
	    "--appendonly no --daemonize yes --pidfile %s/redis.pid --dir %s "
	    "--logfile %s/redis.log && for i in $(seq 100); do "
	    "redis-cli -s %s ping 2>/dev/null | grep -q PONG && exit 0; sleep 0.05; "
	    "done; exit 1", redis_sock, redis_dir, redis_dir, redis_dir, redis_sock);
	if (system(sh) != 0) {
		fprintf(stderr, "cannot start a private redis-server: %s\n", sh);
		exit(2);
	}
	return redis_sock;
}

const char *
tl_redis_command(const char *fmt, ...)
{
	static char line[4096];
	char cmd[2048], sh[2400];
	va_list ap;
	FILE *fp;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	snprintf(sh, sizeof(sh), "redis-cli -s %s %s", tl_redis_start(), cmd);
	line[0] = '\0';
	if ((fp = popen(sh, "r")) != NULL) {
		if (fgets(line, sizeof(line), fp) == NULL)
			line[0] = '\0';
		line[strcspn(line, "\n")] = '\0';
		pclose(fp);
	}
	return line;
}
