/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * testlib - helpers shared by the unit tests (see testlib.h).
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <stdarg.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "milter/cfg.h"
#include "milter/engine.h"
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

/* ---- the reports of cfg_load */

void
tl_collect(void *arg, bool is_error, const char *msg)
{
	struct tl_reports *r = arg;

	if (is_error) {
		if (r->nerr < TL_MAX_REPORTS)
			snprintf(r->err[r->nerr], TL_REPORT_LEN, "%s", msg);
		r->nerr++;
	} else {
		if (r->nwarn < TL_MAX_REPORTS)
			snprintf(r->warn[r->nwarn], TL_REPORT_LEN, "%s", msg);
		r->nwarn++;
	}
}

const char *
tl_reports_text(const struct tl_reports *r, int width)
{
	static char buf[16384];
	size_t n = 0;

	buf[0] = '\0';
	for (int i = 0; i < r->nerr && i < TL_MAX_REPORTS && n < sizeof(buf); i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\n    error: %.*s", width,
		    r->err[i]);
	for (int i = 0; i < r->nwarn && i < TL_MAX_REPORTS && n < sizeof(buf); i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\n    warning: %.*s", width,
		    r->warn[i]);
	return buf;
}

/* ---- a test's directory */

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void
tl_rmtree(const char *dir)
{
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
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

void
tl_assert_counts(const char *label, const struct tl_counts *want)
{
	const struct { enum stats_field f; uint64_t n; } fields[] = {
		{ STATS_CHECKED, want->checked }, { STATS_REJECTED, want->rejected },
		{ STATS_TEMPFAILED, want->tempfailed }, { STATS_DISCARDED, want->discarded },
		{ STATS_QUARANTINED, want->quarantined }, { STATS_ACCEPTED, want->accepted },
		{ STATS_DRY_RUN, want->dry_run }, { STATS_REDIS_ERRORS, 0 },
	};

	ck_assert_msg(stats_get(want->policy) != NULL, "%s: no statistics for %s", label,
	    want->policy);
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (fields[i].n != TL_ANY)
			tl_assert_count(label, want->policy, fields[i].f, fields[i].n);
}

/* ---- a step's verdict */

bool
tl_step_connect(const char *label, size_t k, struct session *s, const char *ip,
    enum policy_action want)
{
	tl_set_client(label, s, ip);
	if (!engine_client_exempt(s))
		return true;
	ck_assert_msg(want == POLICY_NONE, "%s: step %zu: client exempt", label, k);
	return false;
}

enum policy_action
tl_engine_step(const char *label, size_t k, const char *what, const char *arg,
    struct session *s, enum policy_stage stage, struct engine_verdict *v,
    enum policy_action want, const char *policy)
{
	enum policy_action got;

	memset(v, 0, sizeof(*v));
	got = engine_run(s, stage, v);
	ck_assert_msg(got == v->action, "%s: step %zu (%s): returned %s, verdict %s",
	    label, k, what, policy_action_name(got), policy_action_name(v->action));
	ck_assert_msg(got == want, "%s: step %zu (%s %s): %s, expected %s", label, k,
	    what, arg != NULL ? arg : "", policy_action_name(got), policy_action_name(want));
	tl_assert_decided_by(label, k, what, got, v, policy);
	return got;
}

void
tl_assert_decided_by(const char *label, size_t k, const char *what,
    enum policy_action got, const struct engine_verdict *v, const char *policy)
{
	if (got != POLICY_NONE && policy != NULL)
		ck_assert_msg(v->policy != NULL && strcmp(v->policy->name, policy) == 0,
		    "%s: step %zu (%s): decided by %s, expected %s", label, k, what,
		    v->policy != NULL ? v->policy->name : "nothing", policy);
}

void
tl_step_done(struct session *s, enum policy_stage stage, enum policy_action got)
{
	if (stage == POLICY_RCPT && got != POLICY_REJECT && got != POLICY_TEMPFAIL)
		s->msg.rcpts++;
	if (stage == POLICY_EOM)
		session_msg_reset(s);
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
	    "--logfile %s/redis.log --enable-debug-command local && for i in $(seq 100); do "
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
