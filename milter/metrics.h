/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * metrics - the process's own counters, gauges and histograms, and their
 * Prometheus text rendering (exposition format 0.0.4).
 *
 * Everything here is plain memory updated with atomics: recording on the
 * SMTP path takes no lock and allocates nothing.  The HTTP endpoint that
 * serves metrics_render() lives in the daemon (milter/metrics_http.c, with
 * libmicrohttpd); this module needs no HTTP library, so every program that
 * links the core (tests, policy-milter-ctl) can record and render.
 *
 * Per-policy decisions come from the statistics registry (milter/stats.h),
 * which keeps never-reset totals beside the counts waiting for Redis.
 *
 * Labels are fixed enumerations (stages, Redis error kinds, reload
 * results) or names from the configuration (policies); never a value from
 * the network.  Values are per process and reset only when it restarts.
 *
 * Threads: every function is thread-safe.  metrics_render reads while
 * others record: a scrape may see a histogram's _sum and its _count from
 * two instants a few nanoseconds apart, never a bucket count that goes down.
 */
#ifndef PM_METRICS_H
#define PM_METRICS_H

#include <sys/socket.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The libmilter callbacks we time: label stage="connect" ... "close". */
enum metrics_stage {
	METRICS_STAGE_CONNECT,
	METRICS_STAGE_HELO,
	METRICS_STAGE_MAIL,
	METRICS_STAGE_RCPT,
	METRICS_STAGE_HEADER,      /* each header line, and the end of headers */
	METRICS_STAGE_BODY,        /* each body chunk */
	METRICS_STAGE_EOM,
	METRICS_STAGE_ABORT,
	METRICS_STAGE_CLOSE,
	METRICS_NSTAGES
};

/* Why a Redis call failed: label kind="connect" ... (README, "Metrics"). */
enum metrics_redis_error {
	METRICS_REDIS_CONNECT,       /* no connection (connect, AUTH, SELECT, Sentinel) */
	METRICS_REDIS_TIMEOUT,       /* a command's read or write timed out */
	METRICS_REDIS_IO,            /* the connection broke (reset, closed, protocol) */
	METRICS_REDIS_CIRCUIT_OPEN,  /* refused at once: the circuit breaker is open */
	METRICS_REDIS_POOL,          /* no free pool connection within the timeout */
	METRICS_REDIS_REPLY,         /* Redis answered with an error (script error, NOPERM...) */
	METRICS_REDIS_LATE,          /* a script found its deadline passed (LATE) */
	METRICS_REDIS_NERRORS
};

/* Histogram buckets: upper bounds 0.1 ms ... 2.5 s, then +Inf. */
#define METRICS_NBUCKETS 15

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t metrics_now_ns(void);

/* The start time (Unix seconds) to report; set once at start-up. */
void metrics_set_start_time(double unix_seconds);

/* A callback of stage took ns nanoseconds. */
void metrics_stage_observe(enum metrics_stage stage, uint64_t ns);
/* A Redis call (store_pipeline, store_command, store_eval) took ns. */
void metrics_redis_observe(uint64_t ns);
void metrics_redis_error(enum metrics_redis_error kind);
/* A reload of the configuration succeeded (ok) or was refused. */
void metrics_reload(bool ok);
/* A milter connection opened (+1) or closed (-1). */
void metrics_sessions_add(int delta);

/* The bucket (0 .. METRICS_NBUCKETS - 1, the last one +Inf) for ns. */
unsigned metrics_bucket(uint64_t ns);

/* Label values, for tests and docs. */
const char *metrics_stage_name(enum metrics_stage stage);
const char *metrics_redis_error_name(enum metrics_redis_error kind);

/*
 * The whole scrape as Prometheus text: HELP and TYPE lines, then samples.
 * breaker_open is policy_milter_redis_breaker_open (the caller knows the
 * store in force).  Returns a NUL-terminated string of *len octets that
 * the caller frees, or NULL without memory.
 */
char *metrics_render(bool breaker_open, size_t *len);

/* Forget every value (tests). */
void metrics_reset(void);

/*
 * Parse the metrics setting: "inet:PORT@IPv4" or "inet6:PORT@IPv6" (the
 * IPv6 address with or without brackets), an IP literal, no host name.
 * Fills *sa (sizeof(struct sockaddr_storage)) and *salen; *loopback says
 * whether only this host can reach it.  0, or -1 with why filled.
 */
int metrics_parse_address(const char *spec, struct sockaddr_storage *sa,
    socklen_t *salen, bool *loopback, char *why, size_t whylen);

#endif
