/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_sentinel - the store following a Redis master through Sentinels,
 * against real redis-server processes (and, where a Sentinel must lie or
 * hang, small fake ones: a thread on a loopback port).
 *
 * Each failover test builds its own set in a mkdtemp directory: a master, a
 * replica and one Sentinel (quorum 1, down-after 1000 ms) on free loopback
 * ports.  Every process writes a pid file there; the atexit handler of the
 * process that made the directory (not Check's forked children) kills every
 * one of them and removes the directory, also when a test failed.
 *
 * Times are measured and printed; the assertions leave room for a loaded
 * 2-core machine (and ASan) yet fail on a store that waits for an error
 * instead of following the announcement, or on a call that hangs.
 */
#include "config.h"

#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
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

#define TIMEOUT_MS	100	/* the store's timeout, as in the default config */
#define CONNECT_MS	200
/* No call may take longer: a connect, a resolution and a few command
 * timeouts, with room for a loaded machine.  A store that waits on a dead
 * master (no timeout) or loops would take seconds. */
#define CALL_BOUND_MS	1500

static char tmpdir[] = "/tmp/check_sentinel.XXXXXX";
static pid_t starter;

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

/* Kill every process with a pid file in tmpdir, then remove it. */
static void
teardown_all(void)
{
	DIR *d;
	struct dirent *e;
	char sh[512];

	if (getpid() != starter)
		return;
	if ((d = opendir(tmpdir)) != NULL) {
		while ((e = readdir(d)) != NULL) {
			size_t n = strlen(e->d_name);
			char path[600];
			FILE *fp;
			long pid;

			if (n < 4 || strcmp(e->d_name + n - 4, ".pid") != 0)
				continue;
			snprintf(path, sizeof(path), "%s/%s", tmpdir, e->d_name);
			if ((fp = fopen(path, "r")) == NULL)
				continue;
			if (fscanf(fp, "%ld", &pid) == 1 && pid > 1)
				kill((pid_t)pid, SIGKILL);
			fclose(fp);
		}
		closedir(d);
	}
	snprintf(sh, sizeof(sh), "rm -rf '%s'", tmpdir);
	if (system(sh) == -1)
		perror("system");
}

/* One command to 127.0.0.1:port through plain hiredis; NULL on failure. */
static redisReply *
admin(int port, const char *fmt, ...)
{
	struct timeval tv = { 1, 0 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	redisReply *r = NULL;
	va_list ap;

	if (c == NULL || c->err != 0) {
		if (c != NULL)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	va_start(ap, fmt);
	r = redisvCommand(c, fmt, ap);
	va_end(ap);
	redisFree(c);
	return r;
}

/* Does the reply (a string, or an array of strings, nested) contain text? */
static bool
reply_has(const redisReply *r, const char *text)
{
	if (r == NULL)
		return false;
	if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
		return strstr(r->str, text) != NULL;
	if (r->type == REDIS_REPLY_ARRAY)
		for (size_t i = 0; i < r->elements; i++)
			if (reply_has(r->element[i], text))
				return true;
	return false;
}

/* The port Sentinel names as the master, 0 when it cannot say. */
static int
announced_port(int sport)
{
	redisReply *r = admin(sport, "SENTINEL get-master-addr-by-name mail");
	int port = 0;

	if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
		port = atoi(r->element[1]->str);
	if (r != NULL)
		freeReplyObject(r);
	return port;
}

struct topo {
	int master, replica, sentinel;
	char sentinel_addr[32];
	const char *sentinels[1];
};

static void
start_redis(const char *label, const char *name, int port, const char *extra)
{
	char sh[1024];
	double end = now_ms() + 5000;

	snprintf(sh, sizeof(sh), "redis-server --port %d --bind 127.0.0.1 "
	    "--save '' --appendonly no --daemonize yes --pidfile %s/%s.pid "
	    "--logfile %s/%s.log --dir %s %s", port, tmpdir, name, tmpdir, name,
	    tmpdir, extra);
	ck_assert_msg(system(sh) == 0, "%s: %s", label, sh);
	for (;;) {
		redisReply *r = admin(port, "PING");
		bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;

		if (r != NULL)
			freeReplyObject(r);
		if (ok)
			return;
		ck_assert_msg(now_ms() < end, "%s: %s does not answer", label, name);
		sleep_ms(20);
	}
}

/*
 * master + replica + one Sentinel, ready for a failover: the replica in
 * sync and known to the Sentinel.  Names carry a per-test tag so that pid
 * files never collide.
 */
static void
topo_start(const char *label, const char *tag, struct topo *t)
{
	char name[64], extra[700], path[600];
	double end;
	FILE *fp;

	t->master = free_port();
	t->replica = free_port();
	t->sentinel = free_port();
	snprintf(name, sizeof(name), "%s-master", tag);
	start_redis(label, name, t->master, "");
	snprintf(name, sizeof(name), "%s-replica", tag);
	snprintf(extra, sizeof(extra), "--replicaof 127.0.0.1 %d", t->master);
	start_redis(label, name, t->replica, extra);

	snprintf(path, sizeof(path), "%s/%s-sentinel.conf", tmpdir, tag);
	fp = fopen(path, "w");
	ck_assert_msg(fp != NULL, "%s: %s", label, path);
	fprintf(fp, "port %d\nbind 127.0.0.1\ndaemonize yes\n"
	    "pidfile %s/%s-sentinel.pid\nlogfile %s/%s-sentinel.log\ndir %s\n"
	    "sentinel resolve-hostnames no\n"
	    "sentinel monitor mail 127.0.0.1 %d 1\n"
	    "sentinel down-after-milliseconds mail 1000\n"
	    "sentinel failover-timeout mail 5000\n"
	    "sentinel parallel-syncs mail 1\n", t->sentinel, tmpdir, tag, tmpdir,
	    tag, tmpdir, t->master);
	fclose(fp);
	snprintf(extra, sizeof(extra), "redis-server %s --sentinel", path);
	ck_assert_msg(system(extra) == 0, "%s: %s", label, extra);

	/* Ready: the replica in sync, and the Sentinel knows it. */
	end = now_ms() + 15000;
	for (;;) {
		redisReply *a = admin(t->replica, "INFO replication");
		redisReply *b = admin(t->sentinel, "SENTINEL replicas mail");
		char port[16];
		bool ok;

		snprintf(port, sizeof(port), "%d", t->replica);
		ok = reply_has(a, "master_link_status:up") && reply_has(b, port) &&
		    !reply_has(b, "disconnected") && !reply_has(b, "s_down");
		if (a != NULL)
			freeReplyObject(a);
		if (b != NULL)
			freeReplyObject(b);
		if (ok)
			break;
		ck_assert_msg(now_ms() < end, "%s: the set is not ready after 15 s",
		    label);
		sleep_ms(50);
	}
	snprintf(t->sentinel_addr, sizeof(t->sentinel_addr), "127.0.0.1:%d",
	    t->sentinel);
	t->sentinels[0] = t->sentinel_addr;
}

static struct store *
sentinel_store(const char *label, const char *const *sentinels, size_t n,
    unsigned pool)
{
	struct store_options o = {
		.sentinels = sentinels, .nsentinels = n, .master_name = "mail",
		.connect_timeout_ms = CONNECT_MS, .timeout_ms = TIMEOUT_MS,
		.pool = pool,
	};
	char err[256] = "";
	struct store *st = store_new(&o, err, sizeof(err));

	ck_assert_msg(st != NULL, "%s: store_new: %s", label, err);
	return st;
}

/*
 * One counting call, as the limiter makes them: INCR a key and learn which
 * server answered (its port).  Returns the port, 0 when the call failed or
 * got an error reply (err then says why); *ms gets its duration.
 */
static int
count_call(struct store *st, const char *key, double *ms, char *err,
    size_t errlen)
{
	const char *incr[2] = { "INCR", key };
	const char *port[3] = { "CONFIG", "GET", "port" };
	struct store_cmd cmds[2] = { { 2, incr, NULL }, { 3, port, NULL } };
	redisReply *r[2];
	double t0 = now_ms();
	int got = 0;

	err[0] = '\0';
	if (store_pipeline(st, 2, cmds, r, err, errlen) == 0) {
		if (r[0]->type == REDIS_REPLY_INTEGER &&
		    r[1]->type == REDIS_REPLY_ARRAY && r[1]->elements == 2)
			got = atoi(r[1]->element[1]->str);
		else if (r[0]->type == REDIS_REPLY_ERROR)
			snprintf(err, errlen, "%s", r[0]->str);
		store_reply_free(r[0]);
		store_reply_free(r[1]);
	}
	*ms = now_ms() - t0;
	return got;
}

/* ---- fake Sentinels: one that answers what we say, one that never does */

struct fake {
	int lfd, port;
	int answer;		/* the master port it names; 0: never answers */
	int queries;		/* get-master-addr-by-name asked */
	pthread_t thread;
};

static void *
fake_serve(void *arg)
{
	struct fake *f = arg;
	int fd, held[64], nheld = 0;

	while ((fd = accept(f->lfd, NULL, NULL)) != -1) {
		char buf[512], reply[128], port[16];
		int answer = __atomic_load_n(&f->answer, __ATOMIC_RELAXED);
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n = 0;

		/* Count the questions for the master, not the watcher's SUBSCRIBE. */
		if (poll(&pfd, 1, 500) == 1 && (n = read(fd, buf, sizeof(buf) - 1)) > 0) {
			buf[n] = '\0';
			if (strstr(buf, "get-master-addr-by-name") != NULL)
				__atomic_add_fetch(&f->queries, 1, __ATOMIC_RELAXED);
		}
		if (answer == 0) {
			/* A hung Sentinel: accepts, reads, never answers. */
			if (nheld < 64)
				held[nheld++] = fd;
			else
				close(fd);
			continue;
		}
		if (n > 0) {
			snprintf(port, sizeof(port), "%d", answer);
			snprintf(reply, sizeof(reply),
			    "*2\r\n$9\r\n127.0.0.1\r\n$%zu\r\n%s\r\n", strlen(port), port);
			if (write(fd, reply, strlen(reply)) < 0)
				perror("fake write");
		}
		close(fd);
	}
	while (nheld > 0)
		close(held[--nheld]);
	return NULL;
}

static void
fake_start(const char *label, struct fake *f, int answer)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	memset(f, 0, sizeof(*f));
	f->answer = answer;
	f->lfd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_msg(f->lfd != -1 && bind(f->lfd, (struct sockaddr *)&sin,
	    sizeof(sin)) == 0 && listen(f->lfd, 16) == 0 &&
	    getsockname(f->lfd, (struct sockaddr *)&sin, &len) == 0,
	    "%s: fake Sentinel: %s", label, strerror(errno));
	f->port = ntohs(sin.sin_port);
	ck_assert_msg(pthread_create(&f->thread, NULL, fake_serve, f) == 0,
	    "%s: pthread_create", label);
}

static void
fake_stop(struct fake *f)
{
	shutdown(f->lfd, SHUT_RDWR);
	close(f->lfd);
	pthread_join(f->thread, NULL);
}

/* ---- tests */

/*
 * Sentinels are asked in order; one that hangs costs a share of the first
 * call's timeout, is moved behind the one that answered, and is not asked
 * again by the next connection.
 */
START_TEST(test_order)
{
	const char *label = "order";
	struct topo t;
	struct fake hung, good;
	char a_hung[32], a_good[32], master[64], want[64], err[256];
	const char *list[2] = { a_hung, a_good };
	struct store *st;
	double ms;
	int port;

	t.master = free_port();
	start_redis(label, "order-master", t.master, "");
	fake_start(label, &hung, 0);
	fake_start(label, &good, t.master);
	snprintf(a_hung, sizeof(a_hung), "127.0.0.1:%d", hung.port);
	snprintf(a_good, sizeof(a_good), "127.0.0.1:%d", good.port);
	st = sentinel_store(label, list, 2, 2);

	port = count_call(st, "order", &ms, err, sizeof(err));
	printf("%s: first call (a hung Sentinel first) took %.1f ms\n", label, ms);
	ck_assert_msg(port == t.master, "%s: first call: port %d (%s)", label,
	    port, err);
	ck_assert_msg(ms < CALL_BOUND_MS, "%s: first call took %.0f ms", label, ms);
	ck_assert_msg(hung.queries == 1 && good.queries == 1,
	    "%s: asked hung %d, good %d times", label, hung.queries, good.queries);
	snprintf(want, sizeof(want), "127.0.0.1:%d", t.master);
	store_master(st, master, sizeof(master));
	ck_assert_msg(strcmp(master, want) == 0, "%s: master %s", label, master);

	/* The server closes the connection: the next call opens another one,
	 * which asks the Sentinels again, the good one first now. */
	{
		redisReply *r = admin(t.master, "CLIENT KILL TYPE normal");
		if (r != NULL)
			freeReplyObject(r);
	}
	port = count_call(st, "order", &ms, err, sizeof(err));
	ck_assert_msg(port == t.master, "%s: second call: port %d (%s)", label,
	    port, err);
	ck_assert_msg(store_connects(st) == 2, "%s: %lu connects", label,
	    store_connects(st));
	ck_assert_msg(good.queries == 2 && hung.queries == 1,
	    "%s: after reconnect asked hung %d, good %d times (want 1, 2)", label,
	    hung.queries, good.queries);
	store_free(st);
	fake_stop(&hung);
	fake_stop(&good);
}
END_TEST

/*
 * A Sentinel that names a replica: the connection is refused (ROLE), within
 * the call's time, and the call says why; once it names the master the next
 * call works.
 */
START_TEST(test_not_master)
{
	const char *label = "not master";
	struct topo t;
	struct fake f;
	char addr[32], err[256], extra[64];
	const char *list[1] = { addr };
	struct store *st;
	double ms;
	int port;

	t.master = free_port();
	t.replica = free_port();
	start_redis(label, "nm-master", t.master, "");
	snprintf(extra, sizeof(extra), "--replicaof 127.0.0.1 %d", t.master);
	start_redis(label, "nm-replica", t.replica, extra);
	fake_start(label, &f, t.replica);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", f.port);
	st = sentinel_store(label, list, 1, 1);

	port = count_call(st, "nm", &ms, err, sizeof(err));
	printf("%s: refused in %.1f ms: %s\n", label, ms, err);
	ck_assert_msg(port == 0, "%s: the call to a replica worked", label);
	ck_assert_msg(strstr(err, "is not a master (ROLE slave)") != NULL,
	    "%s: error \"%s\"", label, err);
	ck_assert_msg(ms < CALL_BOUND_MS, "%s: took %.0f ms", label, ms);
	/* It retried a moment later within its timeout: asked twice or more. */
	ck_assert_msg(f.queries >= 2, "%s: asked %d times", label, f.queries);

	__atomic_store_n(&f.answer, t.master, __ATOMIC_RELAXED);
	port = count_call(st, "nm", &ms, err, sizeof(err));
	ck_assert_msg(port == t.master, "%s: after the Sentinel caught up: port "
	    "%d (%s)", label, port, err);
	store_free(st);
	fake_stop(&f);
}
END_TEST

struct failover {
	int sentinel, want;
	double t_announced;	/* when get-master-addr-by-name named want */
};

static void *
failover_thread(void *arg)
{
	struct failover *fo = arg;
	redisReply *r = admin(fo->sentinel, "SENTINEL FAILOVER mail");
	double end = now_ms() + 20000;

	if (r != NULL)
		freeReplyObject(r);
	while (now_ms() < end) {
		if (announced_port(fo->sentinel) == fo->want) {
			double t = now_ms();
			__atomic_store(&fo->t_announced, &t, __ATOMIC_RELEASE);
			break;
		}
		sleep_ms(5);
	}
	return NULL;
}

/*
 * Planned failover (SENTINEL FAILOVER) under a steady stream of calls: the
 * store must count on the new master within 2 s of the announcement, while
 * the old one still accepts writes, and never on the old one after that.
 */
START_TEST(test_planned)
{
	const char *label = "planned failover";
	struct topo t;
	struct store *st;
	struct failover fo;
	pthread_t th;
	double t0, first_new = 0, max_ms = 0, ms, announced;
	int port, fails = 0, old_after = 0, calls = 0, counted = 1;
	char err[256], lasterr[256] = "";

	topo_start(label, "planned", &t);
	st = sentinel_store(label, t.sentinels, 1, 4);
	port = count_call(st, "planned", &ms, err, sizeof(err));
	ck_assert_msg(port == t.master, "%s: before: port %d (%s)", label, port, err);
	sleep_ms(300);	/* the watcher subscribes */

	fo.sentinel = t.sentinel;
	fo.want = t.replica;
	fo.t_announced = 0;
	t0 = now_ms();
	ck_assert(pthread_create(&th, NULL, failover_thread, &fo) == 0);
	while (now_ms() - t0 < 20000) {
		__atomic_load(&fo.t_announced, &announced, __ATOMIC_ACQUIRE);
		port = count_call(st, "planned", &ms, err, sizeof(err));
		calls++;
		if (ms > max_ms)
			max_ms = ms;
		if (port == 0) {
			fails++;
			snprintf(lasterr, sizeof(lasterr), "%s", err);
		} else {
			counted++;
			if (port == t.replica && first_new == 0)
				first_new = now_ms();
			else if (port == t.master && first_new != 0)
				old_after++;
		}
		if (first_new != 0 && announced != 0 && now_ms() - first_new > 500)
			break;
		sleep_ms(10);
	}
	pthread_join(th, NULL);
	announced = fo.t_announced;
	printf("%s: announced %.0f ms after SENTINEL FAILOVER; first call on the "
	    "new master %.0f ms after the announcement; %d calls, %d failed "
	    "(last: %s), slowest %.1f ms\n", label, announced - t0,
	    first_new - announced, calls, fails, lasterr, max_ms);
	ck_assert_msg(announced != 0, "%s: no announcement within 20 s", label);
	ck_assert_msg(first_new != 0, "%s: never counted on the new master", label);
	/* Within 2 s of the announcement (a store waiting for an error would
	 * go on counting on the old master for 7-11 s). */
	ck_assert_msg(first_new - announced < 2000, "%s: followed %.0f ms after "
	    "the announcement", label, first_new - announced);
	ck_assert_msg(old_after == 0, "%s: %d calls on the old master after the "
	    "switch", label, old_after);
	ck_assert_msg(max_ms < CALL_BOUND_MS, "%s: a call took %.0f ms", label,
	    max_ms);
	{
		/* Every INCR that succeeded is on the new master: none was made
		 * on the old one after the replica's promotion (it would be lost
		 * when the old master resyncs). */
		const char *get[2] = { "GET", "planned" };
		redisReply *r = store_command(st, 2, get, NULL, err, sizeof(err));
		ck_assert_msg(r != NULL && r->type == REDIS_REPLY_STRING &&
		    atoi(r->str) == counted, "%s: the new master counts %s, want %d",
		    label, r != NULL && r->str != NULL ? r->str : err, counted);
		store_reply_free(r);
	}
	store_free(st);
}
END_TEST

/*
 * Unplanned: SIGKILL the master.  Calls fail fast (timeouts, the breaker)
 * until the Sentinel promotes the replica; then counting resumes there
 * within 15 s of the kill, with what the replica had.
 */
START_TEST(test_unplanned)
{
	const char *label = "unplanned failover";
	struct topo t;
	struct store *st;
	double t0, t_promoted = 0, first_new = 0, max_ms = 0, ms;
	int port, fails = 0, calls = 0;
	char err[256], lasterr[256] = "", path[600];
	long pid = 0;
	FILE *fp;

	topo_start(label, "unplanned", &t);
	st = sentinel_store(label, t.sentinels, 1, 4);
	for (int i = 0; i < 5; i++) {
		port = count_call(st, "unplanned", &ms, err, sizeof(err));
		ck_assert_msg(port == t.master, "%s: before: port %d (%s)", label,
		    port, err);
	}
	/* The replica has the count before the master dies. */
	{
		redisReply *r = admin(t.master, "WAIT 1 1000");
		if (r != NULL)
			freeReplyObject(r);
	}
	sleep_ms(300);
	snprintf(path, sizeof(path), "%s/unplanned-master.pid", tmpdir);
	fp = fopen(path, "r");
	ck_assert_msg(fp != NULL && fscanf(fp, "%ld", &pid) == 1, "%s: pid", label);
	fclose(fp);
	t0 = now_ms();
	kill((pid_t)pid, SIGKILL);

	while (now_ms() - t0 < 20000) {
		if (t_promoted == 0 && announced_port(t.sentinel) == t.replica)
			t_promoted = now_ms();
		port = count_call(st, "unplanned", &ms, err, sizeof(err));
		calls++;
		if (ms > max_ms)
			max_ms = ms;
		if (port == 0) {
			fails++;
			snprintf(lasterr, sizeof(lasterr), "%s", err);
		} else if (port == t.replica) {
			first_new = now_ms();
			break;
		}
		sleep_ms(20);
	}
	printf("%s: promoted %.0f ms after the kill; first call on the new "
	    "master %.0f ms after the kill (%.0f ms after the promotion was "
	    "seen); %d calls, %d failed (last: %s), slowest %.1f ms\n", label,
	    t_promoted - t0, first_new - t0, first_new - t_promoted, calls, fails,
	    lasterr, max_ms);
	ck_assert_msg(first_new != 0 && first_new - t0 < 15000,
	    "%s: no call on the new master within 15 s of the kill", label);
	ck_assert_msg(max_ms < CALL_BOUND_MS, "%s: a call took %.0f ms", label,
	    max_ms);
	{
		/* The count carried over: 5 before, 1 now (and none lost). */
		const char *get[2] = { "GET", "unplanned" };
		redisReply *r = store_command(st, 2, get, NULL, err, sizeof(err));
		ck_assert_msg(r != NULL && r->type == REDIS_REPLY_STRING &&
		    atoi(r->str) == 6, "%s: count %s after the failover, want 6",
		    label, r != NULL && r->str != NULL ? r->str : err);
		store_reply_free(r);
	}
	store_free(st);
}
END_TEST

static Suite *
sentinel_suite(void)
{
	Suite *s = suite_create("store_sentinel");
	TCase *tc;

	tc = tcase_create("resolve");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_order);
	tcase_add_test(tc, test_not_master);
	suite_add_tcase(s, tc);

	tc = tcase_create("failover");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_planned);
	tcase_add_test(tc, test_unplanned);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	if (system("command -v redis-server >/dev/null 2>&1") != 0) {
		printf("redis-server is not installed: skipped\n");
		return 77;
	}
	log_open(true, false);
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 2;
	}
	starter = getpid();
	atexit(teardown_all);
	setvbuf(stdout, NULL, _IOLBF, 0);
	return tl_run(sentinel_suite());
}
