/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * store_redis - a bounded pool of hiredis connections with a circuit breaker.
 *
 * Every call takes one connection from the pool (opening it lazily, at most
 * `pool` of them ever exist), sends its commands as argv vectors in one write,
 * reads every reply, and puts the connection back.  A connection is only put
 * back when it is clean: hiredis errors are sticky and a reply may still be in
 * flight after a timeout, so a connection that saw any error is freed.
 *
 * Connecting means: connect with the connect timeout, set the command timeout
 * (SO_RCVTIMEO/SO_SNDTIMEO; hiredis 0.14 does not), enable TCP keepalive, then
 * AUTH and SELECT as argv commands.  A new context is made for every connect;
 * redisReconnect is never used, so nothing can silently drop the timeout.
 *
 * Circuit breaker: three consecutive calls that failed to reach Redis
 * (connect, AUTH/SELECT, I/O error, timeout; error replies do not count) open
 * it.  While open, calls fail at once with "Redis circuit open".  When the
 * open period (1 s, doubled after every failed probe, at most 30 s) has
 * passed, exactly one caller is let through as a probe; its success closes
 * the breaker, its failure starts a longer open period.
 *
 * Failure: functions return -1 or NULL with a reason in the caller's err.
 * Nothing here is fatal.  The password is never logged nor put in err.
 *
 * Metrics (milter/metrics.h): every call admitted by the breaker is timed
 * from its start (the pool wait and any connect included) to store_call_end;
 * every failed call is counted once, by the kind of its failure, and so is
 * every error reply handed to a caller.
 *
 * Ownership: the store copies the options it keeps; replies belong to the
 * caller (store_reply_free).  A struct store_script belongs to the caller and
 * must outlive the calls that use it; the store only fills in its sha.
 *
 * Threads: one mutex guards the pool and the breaker; it is never held while
 * talking to Redis or logging.  A connection is used by one thread at a time.
 *
 * Scripts (store_eval) live in store_script.c; what the two files share is
 * in store_int.h.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "milter/log.h"
#include "milter/metrics.h"
#include "milter/store_int.h"
#include "milter/store_redis.h"

#define BREAKER_THRESHOLD	3	/* consecutive failures that open it */
#define BREAKER_MIN_MS		1000
#define BREAKER_MAX_MS		30000
#define WARN_INTERVAL_S		10

/* One throttle for every Redis warning: a dead Redis must not flood the log. */
static struct log_throttle redis_warn;

void
store_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

uint64_t
store_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct timeval
store_ms_to_tv(unsigned ms)
{
	struct timeval tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	return tv;
}

/* A decimal TCP port, 1..65535, and nothing after it. */
static int
parse_port(const char *s, int *port)
{
	long v = 0;

	if (*s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
		if (v > 65535)
			return -1;
	}
	if (v == 0)
		return -1;
	*port = (int)v;
	return 0;
}

/*
 * Split an address into a socket path or a numeric host and port.  Only IP
 * literals are accepted: a host name would mean a DNS lookup inside an SMTP
 * transaction, with its own unbounded latency and failure modes.
 */
int
store_parse_address(const char *addr, bool tcp, char **pathp,
    char host[INET6_ADDRSTRLEN], int *portp_out, char *err, size_t errlen)
{
	const char *path = NULL, *hostp, *portp;
	size_t hostlen;
	unsigned char buf[sizeof(struct in6_addr)];
	struct sockaddr_un sun;

	if (addr == NULL || *addr == '\0') {
		store_seterr(err, errlen, "empty Redis address");
		return -1;
	}
	if (strncmp(addr, "unix:", 5) == 0)
		path = addr + 5;
	else if (addr[0] == '/')
		path = addr;
	if (path != NULL && tcp) {
		store_seterr(err, errlen, "address \"%s\": expected IP:port or "
		    "[IPv6]:port", addr);
		return -1;
	}
	if (path != NULL) {
		if (path[0] != '/') {
			store_seterr(err, errlen, "Redis address \"%s\": unix socket "
			    "path must be absolute", addr);
			return -1;
		}
		if (strlen(path) >= sizeof(sun.sun_path)) {
			store_seterr(err, errlen, "Redis address \"%s\": unix socket "
			    "path longer than %zu bytes", addr,
			    sizeof(sun.sun_path) - 1);
			return -1;
		}
		if ((*pathp = strdup(path)) == NULL) {
			store_seterr(err, errlen, "out of memory");
			return -1;
		}
		return 0;
	}

	if (addr[0] == '[') {
		const char *close = strchr(addr, ']');

		if (close == NULL || close[1] != ':') {
			store_seterr(err, errlen, "Redis address \"%s\": expected "
			    "[IPv6]:port", addr);
			return -1;
		}
		hostp = addr + 1;
		hostlen = (size_t)(close - hostp);
		portp = close + 2;
	} else {
		const char *colon = strrchr(addr, ':');

		if (colon == NULL) {
			store_seterr(err, errlen, "Redis address \"%s\": expected "
			    "IP:port, [IPv6]:port or unix:/path", addr);
			return -1;
		}
		hostp = addr;
		hostlen = (size_t)(colon - hostp);
		portp = colon + 1;
		if (memchr(hostp, ':', hostlen) != NULL) {
			store_seterr(err, errlen, "Redis address \"%s\": an IPv6 "
			    "address must be written [IPv6]:port", addr);
			return -1;
		}
	}
	if (hostlen == 0 || hostlen >= INET6_ADDRSTRLEN) {
		store_seterr(err, errlen, "Redis address \"%s\": host must be an IP "
		    "address (no DNS lookups at run time)", addr);
		return -1;
	}
	memcpy(host, hostp, hostlen);
	host[hostlen] = '\0';
	if (inet_pton(addr[0] == '[' ? AF_INET6 : AF_INET, host, buf) != 1) {
		store_seterr(err, errlen, "Redis address \"%s\": host must be an IP "
		    "address (no DNS lookups at run time)", addr);
		return -1;
	}
	if (parse_port(portp, portp_out) == -1) {
		store_seterr(err, errlen, "Redis address \"%s\": port must be "
		    "1..65535", addr);
		return -1;
	}
	return 0;
}

static char *
strdup_or_null(const char *s, bool *oom)
{
	char *p;

	if (s == NULL)
		return NULL;
	if ((p = strdup(s)) == NULL)
		*oom = true;
	return p;
}

struct store *
store_new(const struct store_options *opts, char *err, size_t errlen)
{
	struct store *st;
	pthread_condattr_t ca;
	struct sigaction sa;
	bool oom = false;

	if (opts == NULL) {
		store_seterr(err, errlen, "no Redis options");
		return NULL;
	}
	if (opts->pool < 1) {
		store_seterr(err, errlen, "Redis pool must be at least 1");
		return NULL;
	}
	if (opts->timeout_ms < 1) {
		/* 0 would mean "block forever" to the socket layer. */
		store_seterr(err, errlen, "Redis timeout must be at least 1 ms");
		return NULL;
	}
	if (opts->database < 0) {
		store_seterr(err, errlen, "Redis database must not be negative");
		return NULL;
	}
	if (opts->username != NULL && opts->password == NULL) {
		store_seterr(err, errlen, "Redis username given without a password");
		return NULL;
	}
	if (opts->nsentinels > 0 && opts->address != NULL) {
		store_seterr(err, errlen, "give either a Redis address or Sentinels");
		return NULL;
	}
	if (opts->nsentinels > 0 && (opts->master_name == NULL ||
	    opts->master_name[0] == '\0' || opts->nsentinels > 1024)) {
		store_seterr(err, errlen, "Sentinels need a master name");
		return NULL;
	}
	if ((st = calloc(1, sizeof(*st))) == NULL) {
		store_seterr(err, errlen, "out of memory");
		return NULL;
	}
	st->watch_wake[0] = st->watch_wake[1] = -1;
	if (opts->nsentinels > 0) {
		char label[300];

		st->sentinels = calloc(opts->nsentinels, sizeof(*st->sentinels));
		if (st->sentinels == NULL) {
			store_seterr(err, errlen, "out of memory");
			goto err_nolock;
		}
		st->nsentinels = (unsigned)opts->nsentinels;
		for (size_t i = 0; i < opts->nsentinels; i++) {
			char why[256];

			if (store_parse_address(opts->sentinels[i], true, NULL,
			    st->sentinels[i].host, &st->sentinels[i].port, why,
			    sizeof(why)) == -1) {
				store_seterr(err, errlen, "Sentinel %s", why);
				goto err_nolock;
			}
		}
		snprintf(label, sizeof(label), "master %.200s", opts->master_name);
		st->address = strdup_or_null(label, &oom);
		st->master_name = strdup_or_null(opts->master_name, &oom);
		st->sentinel_password = strdup_or_null(opts->sentinel_password, &oom);
	} else {
		if (store_parse_address(opts->address, false, &st->path, st->host,
		    &st->port, err, errlen) == -1)
			goto err_nolock;
		st->address = strdup_or_null(opts->address, &oom);
	}
	st->username = strdup_or_null(opts->username, &oom);
	st->password = strdup_or_null(opts->password, &oom);
	st->idle = calloc(opts->pool, sizeof(*st->idle));
	st->idle_epoch = calloc(opts->pool, sizeof(*st->idle_epoch));
	if (oom || st->idle == NULL || st->idle_epoch == NULL) {
		store_seterr(err, errlen, "out of memory");
		goto err_nolock;
	}
	st->database = opts->database;
	/* An unset connect timeout falls back to the command timeout. */
	st->connect_tv = store_ms_to_tv(opts->connect_timeout_ms != 0 ?
	    opts->connect_timeout_ms : opts->timeout_ms);
	st->command_tv = store_ms_to_tv(opts->timeout_ms);
	st->timeout_ms = opts->timeout_ms;
	st->pool = opts->pool;
	st->open_ms = BREAKER_MIN_MS;

	/* The pool wait must not jump when the wall clock is set. */
	if (pthread_condattr_init(&ca) != 0) {
		store_seterr(err, errlen, "pthread_condattr_init failed");
		goto err_nolock;
	}
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (pthread_cond_init(&st->slot_cv, &ca) != 0) {
		pthread_condattr_destroy(&ca);
		store_seterr(err, errlen, "pthread_cond_init failed");
		goto err_nolock;
	}
	pthread_condattr_destroy(&ca);
	if (pthread_mutex_init(&st->lock, NULL) != 0) {
		pthread_cond_destroy(&st->slot_cv);
		store_seterr(err, errlen, "pthread_mutex_init failed");
		goto err_nolock;
	}

	/*
	 * hiredis writes with write(), not send(MSG_NOSIGNAL): a Redis that
	 * closed the connection would kill the daemon with SIGPIPE.  libmilter
	 * ignores SIGPIPE in smfi_main, but a store must be safe without it.
	 */
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
		sa.sa_handler = SIG_IGN;
		sigaction(SIGPIPE, &sa, NULL);
	}
	return st;

err_nolock:
	free(st->idle);
	free(st->idle_epoch);
	free(st->sentinels);
	free(st->master_name);
	if (st->sentinel_password != NULL)
		explicit_bzero(st->sentinel_password, strlen(st->sentinel_password));
	free(st->sentinel_password);
	if (st->password != NULL)
		explicit_bzero(st->password, strlen(st->password));
	free(st->password);
	free(st->username);
	free(st->address);
	free(st->path);
	free(st);
	return NULL;
}

void
store_free(struct store *st)
{
	unsigned i;

	if (st == NULL)
		return;
	store_watch_stop(st);
	for (i = 0; i < st->nidle; i++)
		redisFree(st->idle[i]);
	free(st->idle);
	free(st->idle_epoch);
	free(st->sentinels);
	free(st->master_name);
	if (st->sentinel_password != NULL)
		explicit_bzero(st->sentinel_password, strlen(st->sentinel_password));
	free(st->sentinel_password);
	pthread_mutex_destroy(&st->lock);
	pthread_cond_destroy(&st->slot_cv);

	if (st->password != NULL)
		explicit_bzero(st->password, strlen(st->password));
	free(st->password);
	free(st->username);
	free(st->address);
	free(st->path);
	free(st);
}

void
store_reply_free(redisReply *r)
{
	if (r != NULL)
		freeReplyObject(r);
}

/*
 * Describe a context error.  errno is taken from the caller right after the
 * failing hiredis call: a blocking read that hit SO_RCVTIMEO reports EAGAIN,
 * which hiredis words as "Resource temporarily unavailable".
 */
void
store_ctx_error(const struct store *st, const redisContext *c, int saved_errno,
    const char *what, char *err, size_t errlen)
{
	if (c->err == REDIS_ERR_IO &&
	    (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK))
		store_seterr(err, errlen, "Redis %s: %s: timeout after %u ms",
		    st->address, what, st->timeout_ms);
	else
		store_seterr(err, errlen, "Redis %s: %s: %s", st->address, what,
		    c->errstr[0] != '\0' ? c->errstr : "I/O error");
}

/*
 * Run one setup command (AUTH, SELECT) on a fresh connection.  Any error
 * makes the connection unusable for us, so both an I/O error and an error
 * reply fail.  name is what err shows: never the arguments (the password).
 */
static int
setup_command(const struct store *st, redisContext *c, const char *name,
    int argc, const char **argv, char *err, size_t errlen)
{
	redisReply *r;
	int rc = -1;

	r = redisCommandArgv(c, argc, argv, NULL);
	if (r == NULL) {
		store_ctx_error(st, c, errno, name, err, errlen);
		return -1;
	}
	if (r->type == REDIS_REPLY_ERROR)
		store_seterr(err, errlen, "Redis %s: %s failed: %.*s", st->address,
		    name, (int)r->len, r->str);
	else if (r->type == REDIS_REPLY_STATUS)
		rc = 0;
	else
		store_seterr(err, errlen, "Redis %s: %s: unexpected reply type %d",
		    st->address, name, r->type);
	freeReplyObject(r);
	return rc;
}

/*
 * Two checks on a new connection, in one round trip:
 *  - the server's version: the policy script writes after reading TIME,
 *    which Redis allows from 5.0 on (effects replication by default).  An
 *    older server fails the connection with a line that says so, rather
 *    than every script call with Redis's own puzzling error.  A server that
 *    hides INFO from this ACL user (NOPERM) is given the benefit of the
 *    doubt: the script would fail loudly anyway.
 *  - how far Redis's clock is from ours (TIME; error at most half the round
 *    trip).  Script deadlines are sent in Redis's clock, so clocks that
 *    drift apart do not turn every call into a late one.
 */
static int
check_server(struct store *st, redisContext *c, char *err, size_t errlen)
{
	const char *info[2] = { "INFO", "server" }, *time[1] = { "TIME" };
	int64_t before, after, redis_ms;
	redisReply *r[2] = { NULL, NULL };
	const char *v;
	int rc = -1;

	before = (int64_t)store_now_ms();
	if (redisAppendCommandArgv(c, 2, info, NULL) != REDIS_OK ||
	    redisAppendCommandArgv(c, 1, time, NULL) != REDIS_OK ||
	    redisGetReply(c, (void **)&r[0]) != REDIS_OK ||
	    redisGetReply(c, (void **)&r[1]) != REDIS_OK) {
		store_ctx_error(st, c, errno, "INFO server and TIME", err, errlen);
		goto out;
	}
	after = (int64_t)store_now_ms();
	/* Only a refusal to talk to us at all fails here; an INFO hidden from
	 * this user (NOPERM) or renamed away (unknown command) skips the check. */
	if (r[0]->type == REDIS_REPLY_ERROR && (strncmp(r[0]->str, "NOAUTH", 6) == 0 ||
	    strncmp(r[0]->str, "WRONGPASS", 9) == 0)) {
		store_seterr(err, errlen, "Redis %s: INFO failed: %.*s", st->address,
		    (int)r[0]->len, r[0]->str);
		goto out;
	}
	if (r[0]->type == REDIS_REPLY_STRING &&
	    (v = strstr(r[0]->str, "redis_version:")) != NULL &&
	    strtoul(v + 14, NULL, 10) < STORE_MIN_REDIS_MAJOR) {
		int n = (int)strcspn(v + 14, "\r\n");
		store_seterr(err, errlen, "Redis %s: version %.*s is too old: "
		    "policy-milter needs Redis %d.0 or later", st->address,
		    n > 32 ? 32 : n, v + 14, STORE_MIN_REDIS_MAJOR);
		goto out;
	}
	if (r[1]->type == REDIS_REPLY_ERROR) {
		store_seterr(err, errlen, "Redis %s: TIME failed: %.*s", st->address,
		    (int)r[1]->len, r[1]->str);
		goto out;
	}
	if (r[1]->type != REDIS_REPLY_ARRAY || r[1]->elements != 2 ||
	    r[1]->element[0]->type != REDIS_REPLY_STRING ||
	    r[1]->element[1]->type != REDIS_REPLY_STRING) {
		store_seterr(err, errlen, "Redis %s: TIME: unexpected reply", st->address);
		goto out;
	}
	redis_ms = strtoll(r[1]->element[0]->str, NULL, 10) * 1000 +
	    strtoll(r[1]->element[1]->str, NULL, 10) / 1000;
	__atomic_store_n(&st->clock_offset_ms, redis_ms - (before + after) / 2,
	    __ATOMIC_RELAXED);
	__atomic_store_n(&st->clock_rtt_ms, after - before, __ATOMIC_RELAXED);
	rc = 0;
out:
	if (r[0] != NULL)
		freeReplyObject(r[0]);
	if (r[1] != NULL)
		freeReplyObject(r[1]);
	return rc;
}

/*
 * ROLE on a connection the Sentinels called the master: right after a
 * failover they may still name one that is, or has become, a replica.
 * Returns 0 for a master, 1 for anything else (err names the role), -1 on
 * failure.
 */
static int
check_role(const struct store *st, redisContext *c, const char *host, int port,
    char *err, size_t errlen)
{
	const char *argv[1] = { "ROLE" };
	redisReply *r = redisCommandArgv(c, 1, argv, NULL);
	int rc;

	if (r == NULL) {
		store_ctx_error(st, c, errno, "ROLE", err, errlen);
		return -1;
	}
	if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
	    r->element[0]->type == REDIS_REPLY_STRING &&
	    strcmp(r->element[0]->str, "master") == 0) {
		rc = 0;
	} else if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
	    r->element[0]->type == REDIS_REPLY_STRING) {
		store_seterr(err, errlen, "Redis %s: %s:%d is not a master "
		    "(ROLE %.32s)", st->address, host, port, r->element[0]->str);
		rc = 1;
	} else {
		store_seterr(err, errlen, "Redis %s: %s:%d: ROLE: unexpected "
		    "reply %.64s", st->address, host, port,
		    r->type == REDIS_REPLY_ERROR ? r->str : "");
		rc = 1;
	}
	freeReplyObject(r);
	return rc;
}

int
store_conn_connect(struct store *st, const char *path, const char *host,
    int port, bool need_master, redisContext **out, char *err, size_t errlen)
{
	redisContext *c;
	int rc = -1;

	*out = NULL;
	if (path != NULL)
		c = redisConnectUnixWithTimeout(path, st->connect_tv);
	else
		c = redisConnectWithTimeout(host, port, st->connect_tv);
	if (c == NULL) {
		store_seterr(err, errlen, "Redis %s: cannot allocate a context",
		    st->address);
		return -1;
	}
	if (c->err != 0) {
		if (st->nsentinels > 0)
			store_seterr(err, errlen, "Redis %s: connect to %s:%d: %s",
			    st->address, host, port, c->errstr);
		else
			store_seterr(err, errlen, "Redis %s: connect: %s",
			    st->address, c->errstr);
		goto err;
	}
	/* redisConnectWithTimeout bounds connect() only. */
	if (redisSetTimeout(c, st->command_tv) != REDIS_OK) {
		store_ctx_error(st, c, errno, "setting the timeout", err, errlen);
		goto err;
	}
	/* Notice a Redis host that vanished without a FIN. */
	if (path == NULL && redisEnableKeepAlive(c) != REDIS_OK) {
		store_ctx_error(st, c, errno, "enabling keepalive", err, errlen);
		goto err;
	}
	if (st->password != NULL) {
		const char *argv[3];
		int argc = 0;

		argv[argc++] = "AUTH";
		if (st->username != NULL)
			argv[argc++] = st->username;
		argv[argc++] = st->password;
		if (setup_command(st, c, "AUTH", argc, argv, err, errlen) == -1)
			goto err;
	}
	if (st->database != 0) {
		char db[16], name[32];
		const char *argv[2] = { "SELECT", db };

		snprintf(db, sizeof(db), "%d", st->database);
		snprintf(name, sizeof(name), "SELECT %d", st->database);
		if (setup_command(st, c, name, 2, argv, err, errlen) == -1)
			goto err;
	}
	if (need_master && (rc = check_role(st, c, host, port, err, errlen)) != 0)
		goto err;
	rc = -1;
	if (check_server(st, c, err, errlen) == -1)
		goto err;
	*out = c;
	return 0;

err:
	redisFree(c);
	return rc;
}

/* Open and prepare one connection; NULL with err filled on failure. */
static redisContext *
conn_open(struct store *st, unsigned long *epoch, char *err, size_t errlen)
{
	redisContext *c;

	if (st->nsentinels > 0)
		return store_sentinel_open(st, epoch, err, errlen);
	*epoch = 0;
	if (store_conn_connect(st, st->path, st->host, st->port, false, &c, err,
	    errlen) != 0)
		return NULL;
	return c;
}

/*
 * An idle connection has nothing to read.  If poll says otherwise, Redis
 * closed it (restart, idle timeout, CLIENT KILL): drop it now rather than
 * fail the caller's command, which a reused connection cannot safely retry.
 */
static bool
conn_stale(const redisContext *c)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

	return poll(&pfd, 1, 0) != 0;
}

/*
 * Admit a call through the breaker and give it a connection.  On failure
 * returns -1 with err filled; the breaker has then been told already.
 */
int
store_call_begin(struct store *st, struct call *call, char *err, size_t errlen)
{
	redisContext *c = NULL;

	call->ctx = NULL;
	call->probe = false;
	call->epoch = 0;
	call->t0_ns = metrics_now_ns();
	pthread_mutex_lock(&st->lock);
	if (st->nsentinels > 0 && !st->watch_started)
		store_watch_start(st);
	if (st->open) {
		if (st->probing || store_now_ms() < st->open_until) {
			pthread_mutex_unlock(&st->lock);
			/* Not timed: no Redis was asked. */
			metrics_redis_error(METRICS_REDIS_CIRCUIT_OPEN);
			store_seterr(err, errlen, "Redis circuit open");
			return -1;
		}
		st->probing = true;
		call->probe = true;
		st->probe_epoch = st->epoch;
	}
	if (st->nidle == 0 && st->nopen >= st->pool) {
		uint64_t end = store_now_ms() + st->timeout_ms;
		struct timespec deadline;
		int rc = 0;

		deadline.tv_sec = (time_t)(end / 1000);
		deadline.tv_nsec = (long)(end % 1000) * 1000000L;
		while (st->nidle == 0 && st->nopen >= st->pool && rc == 0)
			rc = pthread_cond_timedwait(&st->slot_cv, &st->lock,
			    &deadline);
		if (st->nidle == 0 && st->nopen >= st->pool) {
			/* Says nothing about Redis: leave the breaker alone. */
			if (call->probe)
				st->probing = false;
			pthread_mutex_unlock(&st->lock);
			metrics_redis_error(METRICS_REDIS_POOL);
			metrics_redis_observe(metrics_now_ns() - call->t0_ns);
			store_seterr(err, errlen, "Redis %s: no free Redis connection "
			    "within %u ms", st->address, st->timeout_ms);
			return -1;
		}
	}
	if (st->nidle > 0) {
		c = st->idle[--st->nidle];
		call->epoch = st->idle_epoch[st->nidle];
	} else {
		st->nopen++;	/* reserve the slot we are about to fill */
	}
	pthread_mutex_unlock(&st->lock);

	if (c != NULL && conn_stale(c)) {
		redisFree(c);	/* its slot stays reserved for us */
		c = NULL;
	}
	if (c == NULL) {
		c = conn_open(st, &call->epoch, err, errlen);
		if (c == NULL) {
			metrics_redis_error(METRICS_REDIS_CONNECT);
			store_call_end(st, call, CALL_FAILED, err);
			return -1;
		}
		pthread_mutex_lock(&st->lock);
		st->connects++;
		pthread_mutex_unlock(&st->lock);
	}
	call->ctx = c;
	return 0;
}

/*
 * Return the connection (or free it if it saw an error) and tell the
 * breaker how the call went.  why is the error text for the log.
 */
void
store_call_end(struct store *st, struct call *call, enum outcome o, const char *why)
{
	redisContext *dead = NULL;
	bool went_down = false, still_down = false, back = false;
	unsigned open_ms = 0;

	pthread_mutex_lock(&st->lock);
	if (call->ctx != NULL && o == CALL_OK && call->ctx->err == 0 &&
	    call->epoch == st->epoch) {
		st->idle_epoch[st->nidle] = call->epoch;
		st->idle[st->nidle++] = call->ctx;
	} else {
		dead = call->ctx;
		st->nopen--;
	}
	pthread_cond_signal(&st->slot_cv);

	if (o == CALL_OK) {
		st->failures = 0;
		if (st->open) {
			/* The probe, or a call admitted before it opened. */
			st->open = false;
			st->open_ms = BREAKER_MIN_MS;
			back = true;
		}
	} else if (st->open) {
		/* Failures of calls admitted before it opened change nothing. */
		if (call->probe && st->epoch != st->probe_epoch) {
			/* It probed a master that has been replaced since
			 * (Sentinel): try the new one now. */
			st->open_until = store_now_ms();
		} else if (call->probe) {
			st->open_ms = st->open_ms * 2 > BREAKER_MAX_MS ?
			    BREAKER_MAX_MS : st->open_ms * 2;
			st->open_until = store_now_ms() + st->open_ms;
			still_down = true;
			open_ms = st->open_ms;
		}
	} else if (++st->failures >= BREAKER_THRESHOLD) {
		st->open = true;
		st->failures = 0;
		st->open_until = store_now_ms() + st->open_ms;
		went_down = true;
		open_ms = st->open_ms;
	}
	if (call->probe)
		st->probing = false;
	pthread_mutex_unlock(&st->lock);

	call->ctx = NULL;
	if (dead != NULL)
		redisFree(dead);
	metrics_redis_observe(metrics_now_ns() - call->t0_ns);
	if (went_down || still_down) {
		/* why is only meaningful after a failure: read it only then. */
		size_t alen = strlen(st->address);

		if (why == NULL)
			why = "";
		/* err starts "Redis <address>: "; the log line names it once. */
		if (strncmp(why, "Redis ", 6) == 0 &&
		    strncmp(why + 6, st->address, alen) == 0 &&
		    strncmp(why + 6 + alen, ": ", 2) == 0)
			why += 6 + alen + 2;
	}
	if (went_down)
		log_ratelimited(&redis_warn, WARN_INTERVAL_S, LOG_WARNING,
		    "Redis is down: address=%s error=\"%s\" retry_in_ms=%u",
		    st->address, why, open_ms);
	else if (still_down)
		log_ratelimited(&redis_warn, WARN_INTERVAL_S, LOG_WARNING,
		    "Redis is still down: address=%s error=\"%s\" "
		    "retry_in_ms=%u", st->address, why, open_ms);
	else if (back)
		log_msg(LOG_NOTICE, "Redis is back: address=%s", st->address);
}

/*
 * Send ncmds commands in one write and read every reply.  On an I/O error
 * frees what was read, clears replies and returns -1; the context then has
 * err set, so call_end drops it.
 */
int
store_run_pipeline(const struct store *st, redisContext *c, size_t ncmds,
    const struct store_cmd *cmds, redisReply **replies, char *err,
    size_t errlen)
{
	size_t i, got;
	void *r;
	int e;

	for (i = 0; i < ncmds; i++) {
		if (redisAppendCommandArgv(c, cmds[i].argc, cmds[i].argv,
		    cmds[i].argvlen) != REDIS_OK) {
			store_ctx_error(st, c, errno, "sending", err, errlen);
			metrics_redis_error(METRICS_REDIS_IO);
			/* A half-built output buffer must not go back. */
			if (c->err == 0)
				c->err = REDIS_ERR_OTHER;
			return -1;
		}
	}
	for (got = 0; got < ncmds; got++) {
		if (redisGetReply(c, &r) != REDIS_OK || r == NULL) {
			e = errno;
			store_ctx_error(st, c, e, "reading reply", err, errlen);
			/* SO_RCVTIMEO/SO_SNDTIMEO expired: EAGAIN (see store_ctx_error). */
			metrics_redis_error(c->err == REDIS_ERR_IO &&
			    (e == EAGAIN || e == EWOULDBLOCK) ? METRICS_REDIS_TIMEOUT :
			    METRICS_REDIS_IO);
			if (c->err == 0)
				c->err = REDIS_ERR_OTHER;
			for (i = 0; i < got; i++) {
				freeReplyObject(replies[i]);
				replies[i] = NULL;
			}
			return -1;
		}
		replies[got] = r;
	}
	return 0;
}

int
store_pipeline(struct store *st, size_t ncmds, const struct store_cmd *cmds,
    redisReply **replies, char *err, size_t errlen)
{
	char local[256];
	struct call call;
	size_t i;
	int rc;

	/* Even a caller that wants no reason: the log does. */
	if (err == NULL || errlen == 0) {
		err = local;
		errlen = sizeof(local);
	}
	for (i = 0; i < ncmds; i++)
		replies[i] = NULL;
	if (ncmds == 0)
		return 0;
	for (i = 0; i < ncmds; i++) {
		if (cmds[i].argc < 1 || cmds[i].argv == NULL) {
			store_seterr(err, errlen, "Redis command %zu is empty", i);
			return -1;
		}
	}
	if (store_call_begin(st, &call, err, errlen) == -1)
		return -1;
	rc = store_run_pipeline(st, call.ctx, ncmds, cmds, replies, err, errlen);
	if (rc == 0) {
		store_check_replies(st, &call, replies, ncmds);
		for (i = 0; i < ncmds; i++)
			if (replies[i]->type == REDIS_REPLY_ERROR)
				metrics_redis_error(METRICS_REDIS_REPLY);
	}
	store_call_end(st, &call, rc == 0 ? CALL_OK : CALL_FAILED, err);
	return rc;
}

redisReply *
store_command(struct store *st, int argc, const char **argv,
    const size_t *argvlen, char *err, size_t errlen)
{
	struct store_cmd cmd = { argc, argv, argvlen };
	redisReply *r;

	if (store_pipeline(st, 1, &cmd, &r, err, errlen) == -1)
		return NULL;
	return r;
}

bool
store_is_down(struct store *st)
{
	bool down;

	pthread_mutex_lock(&st->lock);
	down = st->open;
	pthread_mutex_unlock(&st->lock);
	return down;
}

unsigned long
store_connects(struct store *st)
{
	unsigned long n;

	pthread_mutex_lock(&st->lock);
	n = st->connects;
	pthread_mutex_unlock(&st->lock);
	return n;
}

/*
 * A -READONLY or -LOADING reply means this server is no longer (or not yet)
 * the master: with Sentinels, drop the connection and every idle one so that
 * the next call asks the Sentinels again.  The reply itself goes to the
 * caller, who treats it as the Redis error it is.
 */
void
store_check_replies(struct store *st, struct call *call, redisReply **replies,
    size_t n)
{
	size_t i;

	if (st->nsentinels == 0)
		return;
	for (i = 0; i < n; i++) {
		const redisReply *r = replies[i];

		if (r != NULL && r->type == REDIS_REPLY_ERROR && r->len >= 7 &&
		    (strncmp(r->str, "READONLY", 8) == 0 ||
		    strncmp(r->str, "LOADING", 7) == 0)) {
			if (call->ctx->err == 0)
				call->ctx->err = REDIS_ERR_OTHER;
			log_ratelimited(&redis_warn, WARN_INTERVAL_S, LOG_WARNING,
			    "Redis %s answered \"%.*s\": asking the Sentinels again",
			    st->address, (int)(r->len > 60 ? 60 : r->len), r->str);
			store_master_suspect(st);
			return;
		}
	}
}

/* Close idle connections; the caller holds the lock and frees them after. */
static unsigned
take_idle(struct store *st, redisContext **out)
{
	unsigned n = st->nidle;

	memcpy(out, st->idle, n * sizeof(*out));
	st->nopen -= n;
	st->nidle = 0;
	pthread_cond_broadcast(&st->slot_cv);
	return n;
}

static void
free_conns(redisContext **v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		redisFree(v[i]);
	free(v);
}

/*
 * The breaker's record was about the old master: forget it, and let the
 * next call probe the new one at once.  Caller holds st->lock.
 */
static void
breaker_rearm(struct store *st)
{
	st->failures = 0;
	st->open_ms = BREAKER_MIN_MS;
	if (st->open && !st->probing)
		st->open_until = store_now_ms();
}

void
store_set_master(struct store *st, const char *host, int port, const char *why,
    bool announced)
{
	redisContext **old = calloc(st->pool, sizeof(*old));
	char was[INET6_ADDRSTRLEN + 8];
	unsigned n = 0;
	bool changed;

	pthread_mutex_lock(&st->lock);
	if (!announced && st->target_until > store_now_ms()) {
		pthread_mutex_unlock(&st->lock);
		free(old);
		return;
	}
	if (announced)
		st->target_until = 0;
	changed = strcmp(st->host, host) != 0 || st->port != port;
	if (changed) {
		snprintf(was, sizeof(was), "%s:%d", st->host[0] != '\0' ? st->host :
		    "none", st->port);
		snprintf(st->host, sizeof(st->host), "%s", host);
		st->port = port;
		st->epoch++;
		st->switches++;
		if (old != NULL)
			n = take_idle(st, old);
		breaker_rearm(st);
	}
	pthread_mutex_unlock(&st->lock);
	if (old != NULL)
		free_conns(old, n);
	if (changed)
		log_msg(LOG_NOTICE, "Redis %s is now %s:%d (was %s; from %s)",
		    st->address, host, port, strncmp(was, "none", 4) == 0 ? "unknown" :
		    was, why);
}

void
store_failover_hint(struct store *st, const char *host, int port, unsigned ms)
{
	redisContext **old = calloc(st->pool, sizeof(*old));
	unsigned n = 0;
	bool fresh;

	pthread_mutex_lock(&st->lock);
	fresh = st->target_until == 0 || strcmp(st->target_host, host) != 0 ||
	    st->target_port != port;
	snprintf(st->target_host, sizeof(st->target_host), "%s", host);
	st->target_port = port;
	st->target_until = store_now_ms() + ms;
	st->epoch++;
	if (old != NULL)
		n = take_idle(st, old);
	breaker_rearm(st);
	pthread_mutex_unlock(&st->lock);
	if (old != NULL)
		free_conns(old, n);
	if (fresh)
		log_msg(LOG_NOTICE, "Redis %s: failover to %s:%d under way; new "
		    "connections go there", st->address, host, port);
}

void
store_master_suspect(struct store *st)
{
	redisContext **old = calloc(st->pool, sizeof(*old));
	unsigned n = 0;

	pthread_mutex_lock(&st->lock);
	st->epoch++;
	if (old != NULL)
		n = take_idle(st, old);
	pthread_mutex_unlock(&st->lock);
	if (old != NULL)
		free_conns(old, n);
}

unsigned long
store_master(struct store *st, char *buf, size_t len)
{
	unsigned long n;

	pthread_mutex_lock(&st->lock);
	if (st->path != NULL)
		snprintf(buf, len, "unix:%s", st->path);
	else if (st->host[0] == '\0')
		snprintf(buf, len, "%s", "");
	else if (strchr(st->host, ':') != NULL)
		snprintf(buf, len, "[%s]:%d", st->host, st->port);
	else
		snprintf(buf, len, "%s:%d", st->host, st->port);
	n = st->switches;
	pthread_mutex_unlock(&st->lock);
	return n;
}

int
store_check_address(const char *addr, bool tcp, char *err, size_t errlen)
{
	char host[INET6_ADDRSTRLEN], *path = NULL;
	int port;

	if (store_parse_address(addr, tcp, &path, host, &port, err, errlen) == -1)
		return -1;
	free(path);
	return 0;
}
