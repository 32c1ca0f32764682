/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * store_sentinel - follow a Redis master that Sentinels manage (see
 * store_redis.h, "Sentinel").
 *
 * Two paths move the pool to a new master, as the Sentinel client
 * guidelines ask:
 *  - every new connection first asks the Sentinels, in order, with
 *    SENTINEL get-master-addr-by-name; the first that answers goes to the
 *    front of the list, and its answer becomes the master (if it changed:
 *    idle connections to the old one are closed).  The connection must then
 *    say ROLE master; if not (the Sentinels have not caught up), the call
 *    asks again a moment later, as long as its timeout allows.  Connections
 *    are opened again after any error, and after -READONLY or -LOADING
 *    every idle one is closed (store_check_replies), so an error always
 *    leads to a fresh answer;
 *  - one watcher thread per store subscribes to +switch-master on one
 *    Sentinel and moves the pool the moment a failover is announced.  This
 *    matters: after a planned failover the old master stays a writable
 *    master for seconds, and units counted there vanish when it resyncs.
 *    The watcher is not needed for correctness after an error; it is what
 *    makes the switch exact.
 *
 * Time: one resolution shares timeout_ms between the Sentinels still to be
 * asked (a dead one cannot eat the whole budget), each connect bounded by
 * min(connect_timeout, that share).  ROLE retries stay within timeout_ms
 * from the start of the connect.
 *
 * Threads: the Sentinel order and the master are under the store's lock,
 * never held while talking to a server.  The watcher is started by the first
 * call (never before: the daemon may fork after loading its configuration)
 * with every signal blocked, and stopped by store_free, which shuts its
 * socket down to wake it.
 */
#include "config.h"

#include <sys/socket.h>
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "milter/log.h"
#include "milter/store_int.h"
#include "milter/store_redis.h"

#define ROLE_RETRY_MS		50	/* a replica where the master should be */
#define SENTINEL_MIN_SHARE_MS	20	/* the least time one Sentinel gets */
#define WATCH_POLL_MS		1000	/* the watcher looks at its stop flag */
#define WATCH_RETRY_MS		500	/* after a Sentinel failed the watcher */

static struct log_throttle sentinel_warn;

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* Connect to one Sentinel and AUTH; NULL with err filled. */
static redisContext *
sentinel_connect(struct store *st, const struct store_sentinel *s,
    unsigned connect_ms, unsigned timeout_ms, char *err, size_t errlen)
{
	redisContext *c;

	c = redisConnectWithTimeout(s->host, s->port, store_ms_to_tv(connect_ms));
	if (c == NULL) {
		store_seterr(err, errlen, "Sentinel %s:%d: cannot allocate a "
		    "context", s->host, s->port);
		return NULL;
	}
	if (c->err != 0) {
		store_seterr(err, errlen, "Sentinel %s:%d: connect: %s", s->host,
		    s->port, c->errstr);
		redisFree(c);
		return NULL;
	}
	if (redisSetTimeout(c, store_ms_to_tv(timeout_ms)) != REDIS_OK) {
		store_seterr(err, errlen, "Sentinel %s:%d: setting the timeout: %s",
		    s->host, s->port, c->errstr);
		redisFree(c);
		return NULL;
	}
	if (st->sentinel_password != NULL) {
		const char *argv[2] = { "AUTH", st->sentinel_password };
		redisReply *r = redisCommandArgv(c, 2, argv, NULL);
		bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;

		if (!ok)
			store_seterr(err, errlen, "Sentinel %s:%d: AUTH failed: %.100s",
			    s->host, s->port, r == NULL ? c->errstr :
			    r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		if (r != NULL)
			freeReplyObject(r);
		if (!ok) {
			redisFree(c);
			return NULL;
		}
	}
	return c;
}

/* Ask one Sentinel; 0 with host/port filled, -1 with err filled. */
static int
sentinel_ask(struct store *st, const struct store_sentinel *s,
    unsigned connect_ms, unsigned timeout_ms, char host[INET6_ADDRSTRLEN],
    int *port, char *err, size_t errlen)
{
	const char *argv[3] = { "SENTINEL", "get-master-addr-by-name",
	    st->master_name };
	unsigned char buf[sizeof(struct in6_addr)];
	redisContext *c;
	redisReply *r;
	int rc = -1;

	if ((c = sentinel_connect(st, s, connect_ms, timeout_ms, err, errlen)) == NULL)
		return -1;
	r = redisCommandArgv(c, 3, argv, NULL);
	if (r == NULL) {
		if (c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
			store_seterr(err, errlen, "Sentinel %s:%d: timeout after %u ms",
			    s->host, s->port, timeout_ms);
		else
			store_seterr(err, errlen, "Sentinel %s:%d: %s", s->host,
			    s->port, c->errstr);
	} else if (r->type == REDIS_REPLY_NIL) {
		store_seterr(err, errlen, "Sentinel %s:%d does not know master "
		    "\"%s\"", s->host, s->port, st->master_name);
	} else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    r->element[1]->type != REDIS_REPLY_STRING) {
		store_seterr(err, errlen, "Sentinel %s:%d: unexpected reply%s%.100s",
		    s->host, s->port, r->type == REDIS_REPLY_ERROR ? ": " : "",
		    r->type == REDIS_REPLY_ERROR ? r->str : "");
	} else if (r->element[0]->len >= INET6_ADDRSTRLEN ||
	    (inet_pton(AF_INET, r->element[0]->str, buf) != 1 &&
	    inet_pton(AF_INET6, r->element[0]->str, buf) != 1) ||
	    (*port = atoi(r->element[1]->str)) < 1 || *port > 65535) {
		/* resolve-hostnames: we never look names up at run time. */
		store_seterr(err, errlen, "Sentinel %s:%d: master address "
		    "\"%.64s:%.8s\" is not IP:port", s->host, s->port,
		    r->element[0]->str, r->element[1]->str);
	} else {
		memcpy(host, r->element[0]->str, r->element[0]->len + 1);
		rc = 0;
	}
	if (r != NULL)
		freeReplyObject(r);
	redisFree(c);
	return rc;
}

/* Move the Sentinel at host:port to the front (lock not held). */
static void
sentinel_to_front(struct store *st, const struct store_sentinel *s)
{
	pthread_mutex_lock(&st->lock);
	for (unsigned i = 1; i < st->nsentinels; i++) {
		if (st->sentinels[i].port == s->port &&
		    strcmp(st->sentinels[i].host, s->host) == 0) {
			struct store_sentinel t = st->sentinels[i];

			memmove(&st->sentinels[1], &st->sentinels[0],
			    i * sizeof(st->sentinels[0]));
			st->sentinels[0] = t;
			break;
		}
	}
	pthread_mutex_unlock(&st->lock);
}

/*
 * Ask the Sentinels in order until one answers, by the monotonic deadline.
 * 0 with host and port of the master (and the store moved to it), -1 with
 * err filled.
 */
static int
sentinel_resolve(struct store *st, uint64_t deadline,
    char host[INET6_ADDRSTRLEN], int *port, char *err, size_t errlen)
{
	struct store_sentinel *order;
	unsigned n, i, connect_ms;
	char why[256] = "no time left to ask";

	connect_ms = (unsigned)(st->connect_tv.tv_sec * 1000 +
	    st->connect_tv.tv_usec / 1000);
	pthread_mutex_lock(&st->lock);
	n = st->nsentinels;
	order = malloc(n * sizeof(*order));
	if (order != NULL)
		memcpy(order, st->sentinels, n * sizeof(*order));
	pthread_mutex_unlock(&st->lock);
	if (order == NULL) {
		store_seterr(err, errlen, "out of memory");
		return -1;
	}
	for (i = 0; i < n; i++) {
		uint64_t now = store_now_ms();
		unsigned share;

		if (now >= deadline)
			break;
		share = (unsigned)((deadline - now) / (n - i));
		if (share < SENTINEL_MIN_SHARE_MS)
			share = (unsigned)(deadline - now);
		if (sentinel_ask(st, &order[i], share < connect_ms ? share :
		    connect_ms, share, host, port, why, sizeof(why)) == 0) {
			if (i > 0)
				sentinel_to_front(st, &order[i]);
			free(order);
			store_set_master(st, host, *port, "Sentinel");
			return 0;
		}
	}
	free(order);
	store_seterr(err, errlen, "Redis %s: no Sentinel answered (last: %s)",
	    st->address, why);
	return -1;
}

redisContext *
store_sentinel_open(struct store *st, unsigned long *epoch, char *err,
    size_t errlen)
{
	uint64_t deadline = store_now_ms() + st->timeout_ms;
	char host[INET6_ADDRSTRLEN];
	redisContext *c;
	int port;

	for (;;) {
		if (sentinel_resolve(st, deadline, host, &port, err, errlen) == -1)
			return NULL;
		/* The epoch of the answer: a switch while we connect drops c. */
		pthread_mutex_lock(&st->lock);
		*epoch = st->epoch;
		pthread_mutex_unlock(&st->lock);
		switch (store_conn_connect(st, NULL, host, port, true, &c, err,
		    errlen)) {
		case 0:
			return c;
		case 1:
			break;		/* not a master (yet): ask again shortly */
		default:
			return NULL;
		}
		if (store_now_ms() + ROLE_RETRY_MS >= deadline)
			return NULL;
		sleep_ms(ROLE_RETRY_MS);
	}
}

/* ---- the +switch-master watcher */

/* Wait ms or until store_free wakes us; true when told to stop. */
static bool
watch_pause(struct store *st, unsigned ms)
{
	uint64_t end = store_now_ms() + ms;
	struct timespec ts = { (time_t)(end / 1000), (long)(end % 1000) * 1000000L };
	bool stop;

	pthread_mutex_lock(&st->lock);
	while (!st->watch_stop &&
	    pthread_cond_timedwait(&st->watch_cv, &st->lock, &ts) == 0)
		;
	stop = st->watch_stop;
	pthread_mutex_unlock(&st->lock);
	return stop;
}

/* "+switch-master" payload: "<name> <old-ip> <old-port> <new-ip> <new-port>". */
static void
watch_message(struct store *st, const redisReply *r)
{
	char name[256], oldip[64], newip[64];
	int oldport, newport;
	unsigned char buf[sizeof(struct in6_addr)];

	if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(r->element[0]->str, "message") != 0 ||
	    r->element[2]->type != REDIS_REPLY_STRING)
		return;
	if (sscanf(r->element[2]->str, "%255s %63s %d %63s %d", name, oldip,
	    &oldport, newip, &newport) != 5 || strcmp(name, st->master_name) != 0)
		return;
	if ((inet_pton(AF_INET, newip, buf) != 1 &&
	    inet_pton(AF_INET6, newip, buf) != 1) || newport < 1 || newport > 65535)
		return;
	store_set_master(st, newip, newport, "+switch-master");
}

/* One subscription on one Sentinel, until it fails or we are stopped. */
static void
watch_one(struct store *st, const struct store_sentinel *s)
{
	const char *argv[2] = { "SUBSCRIBE", "+switch-master" };
	unsigned timeout_ms = st->timeout_ms < 1000 ? 1000 : st->timeout_ms;
	char err[256], host[INET6_ADDRSTRLEN];
	redisContext *c;
	redisReply *r;
	int port;
	bool stop;

	c = sentinel_connect(st, s, (unsigned)(st->connect_tv.tv_sec * 1000 +
	    st->connect_tv.tv_usec / 1000), timeout_ms, err, sizeof(err));
	if (c == NULL) {
		log_ratelimited(&sentinel_warn, 10, LOG_WARNING,
		    "Redis %s: cannot watch for failovers: %s", st->address, err);
		return;
	}
	pthread_mutex_lock(&st->lock);
	stop = st->watch_stop;
	if (!stop)
		st->watch_fd = c->fd;
	pthread_mutex_unlock(&st->lock);
	if (stop) {
		redisFree(c);
		return;
	}
	r = redisCommandArgv(c, 2, argv, NULL);
	if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
		log_ratelimited(&sentinel_warn, 10, LOG_WARNING,
		    "Redis %s: Sentinel %s:%d: SUBSCRIBE +switch-master failed: %s",
		    st->address, s->host, s->port, r == NULL ? c->errstr :
		    r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		goto out;
	}
	freeReplyObject(r);
	r = NULL;
	/* A failover while nobody listened: ask once now that we do. */
	if (sentinel_resolve(st, store_now_ms() + st->timeout_ms, host, &port,
	    err, sizeof(err)) == -1)
		log_ratelimited(&sentinel_warn, 10, LOG_WARNING, "%s", err);
	for (;;) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		int n = poll(&pfd, 1, WATCH_POLL_MS);

		pthread_mutex_lock(&st->lock);
		stop = st->watch_stop;
		pthread_mutex_unlock(&st->lock);
		if (stop || (n == -1 && errno != EINTR))
			break;
		if (n <= 0)
			continue;
		if (redisGetReply(c, (void **)&r) != REDIS_OK || r == NULL) {
			log_ratelimited(&sentinel_warn, 10, LOG_WARNING,
			    "Redis %s: Sentinel %s:%d: watching for failovers: %s",
			    st->address, s->host, s->port, c->errstr);
			break;
		}
		watch_message(st, r);
		freeReplyObject(r);
		r = NULL;
	}
out:
	if (r != NULL)
		freeReplyObject(r);
	pthread_mutex_lock(&st->lock);
	st->watch_fd = -1;
	pthread_mutex_unlock(&st->lock);
	redisFree(c);
}

static void *
watch_main(void *arg)
{
	struct store *st = arg;
	unsigned k = 0;

	for (;;) {
		struct store_sentinel s;

		pthread_mutex_lock(&st->lock);
		if (st->watch_stop) {
			pthread_mutex_unlock(&st->lock);
			break;
		}
		/* The front one answered last; after a failure try the next. */
		s = st->sentinels[k % st->nsentinels];
		pthread_mutex_unlock(&st->lock);
		watch_one(st, &s);
		k++;
		if (watch_pause(st, WATCH_RETRY_MS))
			break;
	}
	return NULL;
}

void
store_watch_start(struct store *st)
{
	sigset_t all, old;

	st->watch_started = true;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	if (pthread_create(&st->watcher, NULL, watch_main, st) != 0) {
		st->watch_started = false;	/* the next call tries again */
		log_ratelimited(&sentinel_warn, 10, LOG_WARNING, "Redis %s: cannot "
		    "start the failover watcher", st->address);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void
store_watch_stop(struct store *st)
{
	bool started;

	pthread_mutex_lock(&st->lock);
	started = st->watch_started;
	st->watch_stop = true;
	if (st->watch_fd != -1)
		shutdown(st->watch_fd, SHUT_RDWR);
	pthread_cond_broadcast(&st->watch_cv);
	pthread_mutex_unlock(&st->lock);
	if (started)
		pthread_join(st->watcher, NULL);
}
