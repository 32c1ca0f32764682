/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * store_redis - the only way policy-milter talks to Redis.
 *
 * A store is a bounded pool of hiredis connections to one Redis server, shared
 * by every thread.  Every command is sent as an argv vector (never as text
 * built from network data).  Connect and command timeouts are applied after
 * every connect and reconnect (hiredis 0.14 drops the command timeout on
 * redisReconnect), followed by AUTH and SELECT.
 *
 * Every new connection checks the server's version (INFO server; older than
 * STORE_MIN_REDIS_MAJOR fails the connection, with a message saying so) and
 * measures the offset of Redis's clock from ours (TIME) for script deadlines.
 *
 * Sentinel: with sentinels instead of an address, the master is asked of
 * the Sentinels (SENTINEL get-master-addr-by-name, in order, the one that
 * answered moved to the front) before every new connection, which must then
 * say ROLE master (if not, the call retries a moment later within its
 * timeout).  A -READONLY or -LOADING reply drops that connection and every
 * idle one, so the next call asks again.  One thread per store, started by
 * the first call, subscribes to +switch-master on a Sentinel and moves the
 * pool at once: idle connections to the old master are closed, in-flight
 * ones when they come back, and an open circuit breaker may probe at once.
 *
 * Failure: a command that fails (connection refused, timeout, protocol or
 * server error) returns -1 with the reason in err.  After a run of failed
 * connections a circuit breaker opens and calls fail at once with
 * "circuit open" until a probe succeeds, so a dead Redis costs the MTA
 * nothing but the first timeouts.  A connection that saw an error is closed,
 * never returned to the pool.  Warnings about Redis are logged at most once
 * per 10 s.
 *
 * Timeouts bound each socket read and write, not a whole call: a pipeline
 * whose replies trickle in may take a multiple of timeout_ms.  Length arrays
 * (argvlen, keylens, arglens) may be NULL, and strlen() is used.  The store
 * sets SIGPIPE to ignored if it is at its default: hiredis writes with
 * write(), and a Redis that closed the socket must not kill the daemon.
 *
 * Ownership: replies handed out are the caller's, freed with
 * store_reply_free().  Threads: all functions are thread-safe; a store must
 * outlive every call on it.
 */
#ifndef PM_STORE_REDIS_H
#define PM_STORE_REDIS_H

#include <stddef.h>
#include <stdbool.h>
#include <hiredis/hiredis.h>

struct store;

/* The oldest Redis the store connects to (the script writes after TIME). */
#define STORE_MIN_REDIS_MAJOR 5

struct store_options {
	const char *address;       /* "unix:/path", "/path", "127.0.0.1:6379", "[::1]:6379" */
	int database;              /* SELECT n when n != 0 */
	const char *username;      /* Redis 6 ACL user, or NULL */
	const char *password;      /* or NULL; never logged */
	unsigned connect_timeout_ms;
	unsigned timeout_ms;       /* per command; also the wait for a free pool slot */
	unsigned pool;             /* maximum number of connections, >= 1 */
	/*
	 * Or, instead of address, the Sentinels that know the master: IP:port
	 * each, asked in order (see "Sentinel" above).  sentinel_password is
	 * for AUTH to them (or NULL); username/password are for the master.
	 */
	const char *const *sentinels;
	size_t nsentinels;
	const char *master_name;
	const char *sentinel_password;
};

/* One command of a pipeline: argc arguments with explicit lengths (binary safe). */
struct store_cmd {
	int argc;
	const char **argv;
	const size_t *argvlen;
};

/*
 * A Lua script known by its body; the store caches its SHA1 after SCRIPT LOAD.
 * With deadline set, ARGV[1] is the latest moment at which the script may
 * start and still be heard (Unix time in ms, in Redis's clock: now +
 * timeout_ms, less the connect-time round trip and a tenth of timeout_ms,
 * plus the offset of Redis's clock from our monotonic clock measured with
 * TIME at connect), and the caller's args follow from ARGV[2]: a script that
 * Redis only gets to after it (Redis stalled) can then do nothing, since
 * nobody will hear its result.  A "LATE ..." error reply that arrives while
 * we still wait means the offset is off: that connection is dropped, and
 * the next one measures again.
 */
struct store_script {
	const char *body;
	bool deadline;
	char sha[41];              /* filled by the store; zero-initialise */
	int loaded;                /* internal: the store's, read atomically */
};

/*
 * Create a store.  No connection is made yet (the first command connects), so
 * a daemon starts even while Redis is down.  Returns NULL with err filled on
 * a bad address or option.
 */
struct store *store_new(const struct store_options *opts, char *err, size_t errlen);

/* Close every connection and free the store; accepts NULL. */
void store_free(struct store *st);

/*
 * Send ncmds commands in one round trip and wait for all replies.  On success
 * returns 0 and replies[i] holds each reply (a reply may itself be of type
 * REDIS_REPLY_ERROR: that is a per-command result, not a failure of the
 * call).  On failure returns -1, sets every replies[i] to NULL and fills err.
 */
int store_pipeline(struct store *st, size_t ncmds, const struct store_cmd *cmds,
    redisReply **replies, char *err, size_t errlen);

/* One command; same rules as store_pipeline with ncmds = 1. */
redisReply *store_command(struct store *st, int argc, const char **argv,
    const size_t *argvlen, char *err, size_t errlen);

/*
 * EVALSHA script with nkeys keys followed by nargs args (all binary safe);
 * loads the script on first use and again on a NOSCRIPT reply (Redis restarted
 * or SCRIPT FLUSH), then retries once.  Returns the reply (which may be an
 * error reply raised by the script) or NULL with err filled.
 */
redisReply *store_eval(struct store *st, struct store_script *script,
    int nkeys, const char **keys, const size_t *keylens,
    int nargs, const char **args, const size_t *arglens,
    char *err, size_t errlen);

void store_reply_free(redisReply *r);

/* Is the circuit breaker open right now (Redis considered down)?  Also true
 * while one caller probes whether Redis is back. */
bool store_is_down(struct store *st);

/* Connections opened so far (for tests and benchmarks). */
unsigned long store_connects(struct store *st);

/*
 * The master the store uses now, as "IP:port" (an address store: the
 * address), into buf; "" before a Sentinel store has found one.  For tests
 * and logs.  Returns how many times the master has changed.
 */
unsigned long store_master(struct store *st, char *buf, size_t len);

/*
 * Is addr a valid "IP:port" or "[IPv6]:port" (tcp) or any store address
 * (!tcp)?  Fills err when not.  For the configuration, which checks
 * addresses without making a store.
 */
int store_check_address(const char *addr, bool tcp, char *err, size_t errlen);

#endif
