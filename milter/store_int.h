/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * store_int - what the files of the store share (not an interface for
 * other modules: they use store_redis.h).
 *
 * store_redis.c  the pool of connections, connecting, the circuit breaker,
 *                store_pipeline and store_command;
 * store_script.c Lua scripts: SCRIPT LOAD, EVALSHA, NOSCRIPT, deadlines;
 * store_sentinel.c finding the master through Sentinels, and the
 *                +switch-master watcher thread.
 *
 * A call is store_call_begin (breaker admission and a connection), any
 * number of store_run_pipeline on call->ctx, then store_call_end with what
 * the call learnt about Redis.  Threads and ownership as in store_redis.c.
 */
#ifndef PM_STORE_INT_H
#define PM_STORE_INT_H

#include <sys/time.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "milter/store_redis.h"

struct store_sentinel {
	char host[INET6_ADDRSTRLEN];	/* numeric, without brackets */
	int port;
};

struct store {
	char *address;		/* as configured, or "master NAME"; for messages */
	char *path;		/* unix socket path, or NULL for TCP */
	/* The server: fixed for an address; with Sentinels the current
	 * master, under lock (host[0] == '\0' until one is known). */
	char host[INET6_ADDRSTRLEN];	/* numeric, without brackets */
	int port;
	int database;
	char *username;
	char *password;
	struct timeval connect_tv;
	struct timeval command_tv;
	unsigned timeout_ms;
	unsigned pool;

	pthread_mutex_t lock;	/* guards everything below */
	pthread_cond_t slot_cv;	/* a connection or a slot came free */
	redisContext **idle;	/* nidle clean connections, used LIFO */
	unsigned nidle;
	unsigned nopen;		/* in use, idle or being opened */
	unsigned long connects;

	/* Redis's clock minus our CLOCK_MONOTONIC, in ms, as measured with
	 * TIME by the latest connect (monotonic: a step of our wall clock
	 * changes nothing), and that round trip's length; both read and
	 * written atomically. */
	int64_t clock_offset_ms;
	int64_t clock_rtt_ms;

	/* Sentinel mode when nsentinels > 0; the order changes, under lock. */
	struct store_sentinel *sentinels;
	unsigned nsentinels;
	char *master_name;
	char *sentinel_password;
	unsigned long epoch;	/* bumped when the master changes (or must be asked again) */
	unsigned long probe_epoch;	/* epoch when the breaker's probe began */
	unsigned long *idle_epoch;	/* the epoch each idle connection was opened in */
	unsigned long switches;	/* times the master changed */
	bool watch_started, watch_stop;
	int watch_wake[2];	/* pipe: store_free wakes the watcher */
	pthread_t watcher;
	/* A failover under way (a Sentinel is promoting target): until
	 * +switch-master or target_until, new connections go to the target. */
	char target_host[INET6_ADDRSTRLEN];
	int target_port;
	uint64_t target_until;	/* monotonic ms; 0: none */

	unsigned failures;	/* consecutive failed calls while closed */
	bool open;		/* breaker open (or half-open while probing) */
	bool probing;		/* one caller is testing Redis right now */
	uint64_t open_until;	/* monotonic ms */
	unsigned open_ms;	/* length of the current open period */
};

/* What a call learnt about Redis, for the breaker. */
enum outcome {
	CALL_OK,	/* Redis answered (maybe with an error reply) */
	CALL_FAILED	/* Redis could not be reached or did not answer */
};

struct call {
	redisContext *ctx;
	unsigned long epoch;	/* of ctx: another one at the end drops it */
	bool probe;
	uint64_t t0_ns;		/* when it began, for redis_duration_seconds */
};

void store_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* CLOCK_MONOTONIC in ms. */
uint64_t store_now_ms(void);


/* Describe c's error in err; saved_errno is errno right after the failing
 * hiredis call (EAGAIN: the socket timeout). */
void store_ctx_error(const struct store *st, const redisContext *c,
    int saved_errno, const char *what, char *err, size_t errlen);

/*
 * Admit a call through the breaker and give it a connection in call->ctx.
 * On failure returns -1 with err filled; the breaker has been told already,
 * and the metrics (milter/metrics.h) have the error's kind.
 */
int store_call_begin(struct store *st, struct call *call, char *err,
    size_t errlen);

/* Return call->ctx to the pool (or free it if it saw an error) and tell the
 * breaker how the call went; why is the error text for the log.  The call's
 * time goes to the metrics. */
void store_call_end(struct store *st, struct call *call, enum outcome o,
    const char *why);

/* Send ncmds commands in one write and read every reply; -1 with err filled
 * and c->err set on an I/O error (replies then all NULL), counted in the
 * metrics as a timeout or an I/O error. */
int store_run_pipeline(const struct store *st, redisContext *c, size_t ncmds,
    const struct store_cmd *cmds, redisReply **replies, char *err,
    size_t errlen);

/* After a call's replies came: -READONLY / -LOADING with Sentinels drops
 * call->ctx and the idle connections (the master must be asked again). */
void store_check_replies(struct store *st, struct call *call,
    redisReply **replies, size_t n);

/* timeval of ms milliseconds. */
struct timeval store_ms_to_tv(unsigned ms);

/* Split "IP:port" / "[IPv6]:port" / "unix:/path" into path (strdup'd) or
 * host and port; tcp refuses a path. */
int store_parse_address(const char *addr, bool tcp, char **path,
    char host[INET6_ADDRSTRLEN], int *port, char *err, size_t errlen);

/*
 * Connect to path or host:port and prepare the connection (timeouts,
 * keepalive, AUTH, SELECT; with need_master, ROLE; then INFO and TIME).
 * Returns 0 with *out set, 1 when need_master and the server is not a
 * master (err says its role), -1 with err filled on any other failure.
 */
int store_conn_connect(struct store *st, const char *path, const char *host,
    int port, bool need_master, redisContext **out, char *err, size_t errlen);

/*
 * Make host:port the master (from a Sentinel's answer, or announced by
 * +switch-master; why says which, for the log).  When it changed: epoch
 * bumped, idle connections closed, an open breaker may probe at once.  An
 * answer (not announced) is ignored while a failover is under way: it may
 * still name the old master.  Takes the lock.
 */
void store_set_master(struct store *st, const char *host, int port,
    const char *why, bool announced);

/*
 * A Sentinel is promoting host:port now (+failover-state-send-slaveof-noone):
 * close the idle connections to the old master and send new ones to the
 * promoted replica (which must say ROLE master) until +switch-master, for
 * at most ms.  Units counted on the old master from now on would vanish.
 */
void store_failover_hint(struct store *st, const char *host, int port,
    unsigned ms);

/* Forget every idle connection and bump the epoch (-READONLY, -LOADING:
 * the master must be asked again).  Takes the lock. */
void store_master_suspect(struct store *st);

/* Sentinel mode: find the master, connect, confirm ROLE master, retrying
 * within timeout_ms.  *epoch receives the epoch the connection belongs to. */
redisContext *store_sentinel_open(struct store *st, unsigned long *epoch,
    char *err, size_t errlen);

/* Start the +switch-master watcher (lock held; once per store) / stop it
 * (store_free, lock not held). */
void store_watch_start(struct store *st);
void store_watch_stop(struct store *st);

#endif
