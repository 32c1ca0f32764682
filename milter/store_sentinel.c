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
 *  - one watcher thread per store subscribes on every Sentinel to
 *    +switch-master, and moves the pool the moment a failover is
 *    announced; and to +failover-state-send-slaveof-noone, which the
 *    Sentinel leading a failover sends as it promotes the replica: from
 *    then on new connections go to that replica (once it says ROLE master)
 *    and idle ones to the old master are closed.  This matters: the old
 *    master stays a writable master for seconds (about 1 s until the
 *    announcement, 7-11 s until it is made a replica), and units counted
 *    there after the promotion vanish when it resyncs, so a limit would
 *    over-admit.  The watcher is not needed to recover after an error; it
 *    is what makes the switch exact.
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
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "milter/log.h"
#include "milter/store_int.h"
#include "milter/store_redis.h"

#define ROLE_RETRY_MS		50	/* a replica where the master should be */
#define SENTINEL_MIN_SHARE_MS	20	/* the least time one Sentinel gets */
#define WATCH_POLL_MS		1000	/* the watcher's longest sleep */
#define WATCH_RETRY_MS		500	/* after a Sentinel failed the watcher */
#define FAILOVER_HINT_MS	5000	/* the longest a promotion is trusted
					 * without +switch-master */

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
			store_set_master(st, host, *port, "Sentinel", false);
			return 0;
		}
	}
	free(order);
	store_seterr(err, errlen, "Redis %s: no Sentinel answered (last: %s)",
	    st->address, why);
	return -1;
}

/* The promoted replica while a failover is under way: true with host/port. */
static bool
failover_target(struct store *st, char host[INET6_ADDRSTRLEN], int *port)
{
	bool on;

	pthread_mutex_lock(&st->lock);
	on = st->target_until > store_now_ms();
	if (on) {
		memcpy(host, st->target_host, INET6_ADDRSTRLEN);
		*port = st->target_port;
	}
	pthread_mutex_unlock(&st->lock);
	return on;
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
		bool current;

		if (!failover_target(st, host, &port) &&
		    sentinel_resolve(st, deadline, host, &port, err, errlen) == -1)
			return NULL;
		/*
		 * The connection belongs to the epoch in which host:port is
		 * where connections go (a switch while we connect drops it when
		 * it comes back).  If a promotion or switch came in while we
		 * asked, the answer is already stale: choose again.
		 */
		pthread_mutex_lock(&st->lock);
		if (st->target_until > store_now_ms())
			current = strcmp(st->target_host, host) == 0 &&
			    st->target_port == port;
		else
			current = strcmp(st->host, host) == 0 && st->port == port;
		*epoch = st->epoch;
		pthread_mutex_unlock(&st->lock);
		if (!current) {
			if (store_now_ms() >= deadline) {
				store_seterr(err, errlen, "Redis %s: the master "
				    "changed while connecting", st->address);
				return NULL;
			}
			continue;
		}
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

/* ---- the watcher */

/* A message on one of our channels. */
static void
watch_message(struct store *st, const redisReply *r)
{
	char name[256], oldip[64], newip[64], kind[16], id[128];
	int oldport, newport;
	unsigned char buf[sizeof(struct in6_addr)];
	const char *chan, *msg;

	if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(r->element[0]->str, "message") != 0 ||
	    r->element[1]->type != REDIS_REPLY_STRING ||
	    r->element[2]->type != REDIS_REPLY_STRING)
		return;
	chan = r->element[1]->str;
	msg = r->element[2]->str;
	if (strcmp(chan, "+switch-master") == 0) {
		/* "<name> <old-ip> <old-port> <new-ip> <new-port>" */
		if (sscanf(msg, "%255s %63s %d %63s %d", name, oldip, &oldport,
		    newip, &newport) != 5)
			return;
	} else if (strcmp(chan, "+failover-state-send-slaveof-noone") == 0) {
		/* "slave <ip:port> <ip> <port> @ <name> <master-ip> <master-port>" */
		if (sscanf(msg, "%15s %127s %63s %d @ %255s %63s %d", kind, id,
		    newip, &newport, name, oldip, &oldport) != 7 ||
		    strcmp(kind, "slave") != 0)
			return;
	} else {
		return;
	}
	if (strcmp(name, st->master_name) != 0 ||
	    (inet_pton(AF_INET, newip, buf) != 1 &&
	    inet_pton(AF_INET6, newip, buf) != 1) || newport < 1 || newport > 65535)
		return;
	if (chan[1] == 's')
		store_set_master(st, newip, newport, "+switch-master", true);
	else
		store_failover_hint(st, newip, newport, FAILOVER_HINT_MS);
}

/* Connect to s and subscribe; NULL (logged) on failure. */
static redisContext *
watch_subscribe(struct store *st, const struct store_sentinel *s)
{
	const char *argv[3] = { "SUBSCRIBE", "+switch-master",
	    "+failover-state-send-slaveof-noone" };
	unsigned timeout_ms = st->timeout_ms < 1000 ? 1000 : st->timeout_ms;
	char err[256];
	redisContext *c;
	redisReply *r;
	int i;

	c = sentinel_connect(st, s, (unsigned)(st->connect_tv.tv_sec * 1000 +
	    st->connect_tv.tv_usec / 1000), timeout_ms, err, sizeof(err));
	if (c == NULL) {
		log_ratelimited(&sentinel_warn, 10, LOG_WARNING,
		    "Redis %s: cannot watch for failovers: %s", st->address, err);
		return NULL;
	}
	if (redisAppendCommandArgv(c, 3, argv, NULL) != REDIS_OK)
		goto fail;
	/* One confirmation per channel. */
	for (i = 0; i < 2; i++) {
		if (redisGetReply(c, (void **)&r) != REDIS_OK || r == NULL)
			goto fail;
		if (r->type != REDIS_REPLY_ARRAY) {
			freeReplyObject(r);
			goto fail;
		}
		freeReplyObject(r);
	}
	return c;
fail:
	log_ratelimited(&sentinel_warn, 10, LOG_WARNING,
	    "Redis %s: Sentinel %s:%d: SUBSCRIBE failed: %s", st->address,
	    s->host, s->port, c->errstr[0] != '\0' ? c->errstr : "unexpected reply");
	redisFree(c);
	return NULL;
}

/*
 * One subscription per Sentinel (the failover-state events come only from
 * the one leading a failover), all in this one thread: poll them and the
 * wake-up pipe; a Sentinel that fails is tried again after WATCH_RETRY_MS.
 */
static void *
watch_main(void *arg)
{
	struct store *st = arg;
	unsigned n = st->nsentinels, i;
	redisContext **ctx = calloc(n, sizeof(*ctx));
	struct store_sentinel *sent = calloc(n, sizeof(*sent));
	struct pollfd *pfd = calloc(n + 1, sizeof(*pfd));
	uint64_t *retry_at = calloc(n, sizeof(*retry_at));

	if (ctx == NULL || sent == NULL || pfd == NULL || retry_at == NULL)
		goto out;
	/* The configured order; the store reorders its own copy. */
	pthread_mutex_lock(&st->lock);
	memcpy(sent, st->sentinels, n * sizeof(*sent));
	pthread_mutex_unlock(&st->lock);
	for (;;) {
		bool stop, subscribed = false;
		unsigned np = 0;
		int timeout = WATCH_POLL_MS;
		uint64_t now = store_now_ms();

		for (i = 0; i < n; i++) {
			if (ctx[i] != NULL || now < retry_at[i])
				continue;
			if ((ctx[i] = watch_subscribe(st, &sent[i])) == NULL)
				retry_at[i] = store_now_ms() + WATCH_RETRY_MS;
			else
				subscribed = true;
		}
		if (subscribed) {
			/* A failover while nobody listened: ask once now. */
			char host[INET6_ADDRSTRLEN], err[256];
			int port;

			if (!failover_target(st, host, &port) &&
			    sentinel_resolve(st, store_now_ms() + st->timeout_ms,
			    host, &port, err, sizeof(err)) == -1)
				log_ratelimited(&sentinel_warn, 10, LOG_WARNING,
				    "%s", err);
		}
		pfd[np].fd = st->watch_wake[0];
		pfd[np++].events = POLLIN;
		for (i = 0; i < n; i++) {
			if (ctx[i] == NULL) {
				timeout = WATCH_RETRY_MS;
				continue;
			}
			pfd[np].fd = ctx[i]->fd;
			pfd[np++].events = POLLIN;
		}
		if (poll(pfd, np, timeout) == -1 && errno != EINTR)
			break;
		pthread_mutex_lock(&st->lock);
		stop = st->watch_stop;
		pthread_mutex_unlock(&st->lock);
		if (stop)
			break;
		for (i = 0, np = 1; i < n; i++) {
			redisReply *r;

			if (ctx[i] == NULL)
				continue;
			if ((pfd[np++].revents & (POLLIN | POLLHUP | POLLERR)) == 0)
				continue;
			if (redisGetReply(ctx[i], (void **)&r) != REDIS_OK ||
			    r == NULL) {
				log_ratelimited(&sentinel_warn, 10, LOG_WARNING,
				    "Redis %s: Sentinel %s:%d: watching for "
				    "failovers: %s", st->address, sent[i].host,
				    sent[i].port, ctx[i]->errstr);
				redisFree(ctx[i]);
				ctx[i] = NULL;
				retry_at[i] = store_now_ms() + WATCH_RETRY_MS;
				continue;
			}
			watch_message(st, r);
			freeReplyObject(r);
			/* hiredis may hold more complete replies than poll sees. */
			while (ctx[i]->reader->len > ctx[i]->reader->pos &&
			    redisGetReplyFromReader(ctx[i], (void **)&r) == REDIS_OK &&
			    r != NULL) {
				watch_message(st, r);
				freeReplyObject(r);
			}
		}
	}
out:
	for (i = 0; ctx != NULL && i < n; i++)
		if (ctx[i] != NULL)
			redisFree(ctx[i]);
	free(ctx);
	free(sent);
	free(pfd);
	free(retry_at);
	return NULL;
}

void
store_watch_start(struct store *st)
{
	sigset_t all, old;

	if (st->watch_wake[0] == -1 && pipe2(st->watch_wake, O_CLOEXEC) != 0) {
		log_ratelimited(&sentinel_warn, 10, LOG_WARNING, "Redis %s: cannot "
		    "start the failover watcher: pipe: %s", st->address,
		    strerror(errno));
		return;		/* the next call tries again */
	}
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
	pthread_mutex_unlock(&st->lock);
	if (started) {
		if (write(st->watch_wake[1], "x", 1) < 0)
			log_msg(LOG_WARNING, "Redis %s: waking the failover "
			    "watcher: %s", st->address, strerror(errno));
		pthread_join(st->watcher, NULL);
	}
	if (st->watch_wake[0] != -1) {
		close(st->watch_wake[0]);
		close(st->watch_wake[1]);
		st->watch_wake[0] = st->watch_wake[1] = -1;
	}
}
