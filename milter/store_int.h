/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * store_int - what the files of the store share (not an interface for
 * other modules: they use store_redis.h).
 *
 * store_redis.c  the pool of connections, connecting, the circuit breaker,
 *                store_pipeline and store_command;
 * store_script.c Lua scripts: SCRIPT LOAD, EVALSHA, NOSCRIPT, deadlines.
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

struct store {
	char *address;		/* as configured; for messages */
	char *path;		/* unix socket path, or NULL for TCP */
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

	/* Redis's clock minus ours (CLOCK_REALTIME), in ms, as measured with
	 * TIME by the latest connect; read and written atomically. */
	int64_t clock_offset_ms;

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
	bool probe;
};

void store_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* CLOCK_REALTIME in ms (Redis's TIME is compared with it). */
int64_t store_wall_ms(void);

/* Describe c's error in err; saved_errno is errno right after the failing
 * hiredis call (EAGAIN: the socket timeout). */
void store_ctx_error(const struct store *st, const redisContext *c,
    int saved_errno, const char *what, char *err, size_t errlen);

/*
 * Admit a call through the breaker and give it a connection in call->ctx.
 * On failure returns -1 with err filled; the breaker has been told already.
 */
int store_call_begin(struct store *st, struct call *call, char *err,
    size_t errlen);

/* Return call->ctx to the pool (or free it if it saw an error) and tell the
 * breaker how the call went; why is the error text for the log. */
void store_call_end(struct store *st, struct call *call, enum outcome o,
    const char *why);

/* Send ncmds commands in one write and read every reply; -1 with err filled
 * and c->err set on an I/O error (replies then all NULL). */
int store_run_pipeline(const struct store *st, redisContext *c, size_t ncmds,
    const struct store_cmd *cmds, redisReply **replies, char *err,
    size_t errlen);

#endif
