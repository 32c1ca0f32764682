/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * store_script - Lua scripts through the store's pool (see store_redis.h).
 *
 * A script is known by its body; its SHA1 is learnt with SCRIPT LOAD on first
 * use and published once (release/acquire) so that the hot path of
 * store_eval reads it without a lock.  A NOSCRIPT reply (Redis restarted,
 * SCRIPT FLUSH, or a new master after a failover) loads the script again on
 * that connection and retries once.  With a deadline, ARGV[1] is the moment
 * the caller stops waiting, in Redis's clock (the offset measured with TIME
 * when the connection was opened).
 *
 * Failure: NULL with err filled; an error reply raised by the script is a
 * result, handed to the caller.  Threads: as store_redis.c; script_lock only
 * serialises the one-time publication of a SHA.
 */
#include "config.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/log.h"
#include "milter/metrics.h"
#include "milter/store_int.h"
#include "milter/store_redis.h"

#define EVAL_STACK_ARGS		32	/* store_eval argv before malloc */

/* Serialises writers of struct store_script; readers go lock-free. */
static pthread_mutex_t script_lock = PTHREAD_MUTEX_INITIALIZER;


/* Publish a SHA once; it never changes afterwards, so readers need no lock. */
static void
script_publish(struct store_script *script, const char *sha)
{
	pthread_mutex_lock(&script_lock);
	if (!__atomic_load_n(&script->loaded, __ATOMIC_ACQUIRE)) {
		memcpy(script->sha, sha, 41);
		__atomic_store_n(&script->loaded, 1, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&script_lock);
}

/*
 * SCRIPT LOAD on c.  Returns 0 with sha filled, 1 with *errreply set when
 * Redis refused the script (handed to the caller as the result), -1 with
 * *io set on an I/O error, or -1 with err filled on a nonsensical reply.
 */
static int
script_load(const struct store *st, redisContext *c,
    struct store_script *script, char sha[41], redisReply **errreply,
    bool *io, char *err, size_t errlen)
{
	const char *argv[3] = { "SCRIPT", "LOAD", script->body };
	size_t argvlen[3] = { 6, 4, strlen(script->body) };
	struct store_cmd cmd = { 3, argv, argvlen };
	redisReply *r;

	if (store_run_pipeline(st, c, 1, &cmd, &r, err, errlen) == -1) {
		*io = true;
		return -1;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		*errreply = r;
		return 1;
	}
	if (r->type != REDIS_REPLY_STRING || r->len != 40) {
		store_seterr(err, errlen, "Redis %s: SCRIPT LOAD: unexpected reply "
		    "type %d", st->address, r->type);
		freeReplyObject(r);
		return -1;
	}
	memcpy(sha, r->str, 40);
	sha[40] = '\0';
	freeReplyObject(r);
	script_publish(script, sha);
	return 0;
}

/*
 * The moment we stop waiting for a call sent now, in Redis's clock (ms),
 * less a margin: a script that starts just before it must still have its
 * reply back before we give up, or what it reserved would never be seen.
 * The margin is the connect-time round trip (the offset's error is half
 * of it, the reply's way back the other half) plus a tenth of the timeout.
 */
static int64_t
deadline_ms(const struct store *st)
{
	int64_t rtt = __atomic_load_n(&st->clock_rtt_ms, __ATOMIC_RELAXED);

	return (int64_t)store_now_ms() + (int64_t)st->timeout_ms -
	    (rtt + (int64_t)st->timeout_ms / 10) +
	    __atomic_load_n(&st->clock_offset_ms, __ATOMIC_RELAXED);
}

static bool
is_late(const redisReply *r)
{
	return r->type == REDIS_REPLY_ERROR && r->len >= 5 &&
	    strncmp(r->str, "LATE ", 5) == 0;
}

static bool
is_noscript(const redisReply *r)
{
	return r->type == REDIS_REPLY_ERROR && r->len >= 8 &&
	    strncmp(r->str, "NOSCRIPT", 8) == 0;
}

/* The body of store_eval, on one connection; *io tells the breaker. */
static redisReply *
eval_on(const struct store *st, redisContext *c, struct store_script *script,
    int nkeys, const char **keys, const size_t *keylens,
    int nargs, const char **args, const size_t *arglens,
    bool *io, char *err, size_t errlen)
{
	const char *sargv[EVAL_STACK_ARGS], **argv = sargv;
	size_t sargvlen[EVAL_STACK_ARGS], *argvlen = sargvlen;
	size_t n = 3 + (size_t)nkeys + (size_t)nargs + (script->deadline ? 1 : 0);
	size_t a0 = 3 + (size_t)nkeys + (script->deadline ? 1 : 0);
	struct store_cmd cmd;
	redisReply *r = NULL;
	char sha[41], nk[16], deadline[24];
	int i, attempt;

	if (__atomic_load_n(&script->loaded, __ATOMIC_ACQUIRE)) {
		memcpy(sha, script->sha, sizeof(sha));
	} else {
		switch (script_load(st, c, script, sha, &r, io, err, errlen)) {
		case 0:
			break;
		case 1:
			return r;
		default:
			return NULL;
		}
	}
	if (n > EVAL_STACK_ARGS) {
		argv = malloc(n * sizeof(*argv));
		argvlen = malloc(n * sizeof(*argvlen));
		if (argv == NULL || argvlen == NULL) {
			store_seterr(err, errlen, "out of memory");
			r = NULL;
			goto out;
		}
	}
	snprintf(nk, sizeof(nk), "%d", nkeys);
	argv[0] = "EVALSHA";
	argvlen[0] = 7;
	argv[1] = sha;
	argvlen[1] = 40;
	argv[2] = nk;
	argvlen[2] = strlen(nk);
	for (i = 0; i < nkeys; i++) {
		argv[3 + i] = keys[i];
		argvlen[3 + i] = keylens != NULL ? keylens[i] : strlen(keys[i]);
	}
	for (i = 0; i < nargs; i++) {
		argv[a0 + (size_t)i] = args[i];
		argvlen[a0 + (size_t)i] = arglens != NULL ? arglens[i] :
		    strlen(args[i]);
	}
	cmd.argc = (int)n;
	cmd.argv = argv;
	cmd.argvlen = argvlen;

	/* NOSCRIPT: Redis restarted or SCRIPT FLUSH; load again, retry once. */
	for (attempt = 0; attempt < 2; attempt++) {
		if (script->deadline) {
			snprintf(deadline, sizeof(deadline), "%" PRId64, deadline_ms(st));
			argv[3 + nkeys] = deadline;
			argvlen[3 + nkeys] = strlen(deadline);
		}
		if (store_run_pipeline(st, c, 1, &cmd, &r, err, errlen) == -1) {
			*io = true;
			r = NULL;
			goto out;
		}
		if (script->deadline && is_late(r)) {
			/* We were still waiting, yet Redis found the call late:
			 * the clock offset is off (Redis's clock stepped).  A new
			 * connection measures it again. */
			static struct log_throttle late_warn;

			log_ratelimited(&late_warn, 60, LOG_WARNING, "Redis %s: a call "
			    "arrived in time but Redis's clock says late: measuring the "
			    "clocks again", st->address);
			c->err = REDIS_ERR_OTHER;
			goto out;
		}
		if (attempt == 1 || !is_noscript(r))
			goto out;
		freeReplyObject(r);
		r = NULL;
		switch (script_load(st, c, script, sha, &r, io, err, errlen)) {
		case 0:
			break;
		case 1:
			goto out;
		default:
			r = NULL;
			goto out;
		}
	}
out:
	if (argv != sargv)
		free(argv);
	if (argvlen != sargvlen)
		free(argvlen);
	return r;
}

redisReply *
store_eval(struct store *st, struct store_script *script,
    int nkeys, const char **keys, const size_t *keylens,
    int nargs, const char **args, const size_t *arglens,
    char *err, size_t errlen)
{
	char local[256];
	struct call call;
	redisReply *r;
	bool io = false;

	if (err == NULL || errlen == 0) {
		err = local;
		errlen = sizeof(local);
	}
	if (script == NULL || script->body == NULL || nkeys < 0 || nargs < 0 ||
	    (nkeys > 0 && keys == NULL) || (nargs > 0 && args == NULL)) {
		store_seterr(err, errlen, "bad arguments to store_eval");
		return NULL;
	}
	if (store_call_begin(st, &call, err, errlen) == -1)
		return NULL;
	r = eval_on(st, call.ctx, script, nkeys, keys, keylens, nargs, args,
	    arglens, &io, err, errlen);
	if (r != NULL)
		store_check_replies(st, &call, &r, 1);
	/* I/O errors and timeouts were counted where they happened. */
	if (r != NULL && r->type == REDIS_REPLY_ERROR)
		metrics_redis_error(is_late(r) ? METRICS_REDIS_LATE : METRICS_REDIS_REPLY);
	else if (r == NULL && !io)
		metrics_redis_error(METRICS_REDIS_REPLY);
	/*
	 * A nonsensical reply to SCRIPT LOAD is not an I/O error but leaves
	 * nothing to trust on this connection: drop it without blaming Redis
	 * availability.
	 */
	if (r == NULL && !io && call.ctx->err == 0)
		call.ctx->err = REDIS_ERR_OTHER;
	store_call_end(st, &call, io ? CALL_FAILED : CALL_OK, err);
	return r;
}
