/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * metrics - counters, gauges and histograms in plain atomics, and their
 * Prometheus text rendering (see metrics.h).
 *
 * A histogram keeps one count per bucket (not cumulative) and the sum of
 * its observations in nanoseconds; rendering adds the buckets up, so a
 * _bucket line can never be lower than the one before it and _count is
 * always the +Inf bucket.  Bucket bounds are kept both as nanoseconds (to
 * place an observation with integer compares) and as the text that the
 * scrape shows, so that no float formatting can print "0.00025000000001".
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "milter/metrics.h"
#include "milter/stats.h"

struct hist {
	uint64_t buckets[METRICS_NBUCKETS];
	uint64_t sum_ns;
};

static const uint64_t bound_ns[METRICS_NBUCKETS - 1] = {
	100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 25000000,
	50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000ULL,
};
static const char *const bound_text[METRICS_NBUCKETS] = {
	"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
	"0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf",
};

static const char *const stage_names[METRICS_NSTAGES] = {
	"connect", "helo", "mail", "rcpt", "header", "body", "eom", "abort", "close",
};
static const char *const redis_error_names[METRICS_REDIS_NERRORS] = {
	"connect", "timeout", "io", "circuit_open", "pool", "reply", "late",
};

static struct hist stage_hist[METRICS_NSTAGES];
static struct hist redis_hist;
static uint64_t redis_errors[METRICS_REDIS_NERRORS];
static uint64_t reloads_ok, reloads_failed;
static int64_t sessions;
static double start_time;

uint64_t
metrics_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
metrics_set_start_time(double unix_seconds)
{
	start_time = unix_seconds;
}

unsigned
metrics_bucket(uint64_t ns)
{
	unsigned i = 0;

	/* "le": a value equal to a bound belongs to that bound's bucket. */
	while (i < METRICS_NBUCKETS - 1 && ns > bound_ns[i])
		i++;
	return i;
}

static void
hist_observe(struct hist *h, uint64_t ns)
{
	__atomic_add_fetch(&h->buckets[metrics_bucket(ns)], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&h->sum_ns, ns, __ATOMIC_RELAXED);
}

void
metrics_stage_observe(enum metrics_stage stage, uint64_t ns)
{
	if (stage < METRICS_NSTAGES)
		hist_observe(&stage_hist[stage], ns);
}

void
metrics_redis_observe(uint64_t ns)
{
	hist_observe(&redis_hist, ns);
}

void
metrics_redis_error(enum metrics_redis_error kind)
{
	if (kind < METRICS_REDIS_NERRORS)
		__atomic_add_fetch(&redis_errors[kind], 1, __ATOMIC_RELAXED);
}

void
metrics_reload(bool ok)
{
	__atomic_add_fetch(ok ? &reloads_ok : &reloads_failed, 1, __ATOMIC_RELAXED);
}

void
metrics_sessions_add(int delta)
{
	__atomic_add_fetch(&sessions, delta, __ATOMIC_RELAXED);
}

const char *
metrics_stage_name(enum metrics_stage stage)
{
	return stage < METRICS_NSTAGES ? stage_names[stage] : "?";
}

const char *
metrics_redis_error_name(enum metrics_redis_error kind)
{
	return kind < METRICS_REDIS_NERRORS ? redis_error_names[kind] : "?";
}

void
metrics_reset(void)
{
	for (unsigned s = 0; s < METRICS_NSTAGES; s++)
		memset(&stage_hist[s], 0, sizeof(stage_hist[s]));
	memset(&redis_hist, 0, sizeof(redis_hist));
	memset(redis_errors, 0, sizeof(redis_errors));
	reloads_ok = reloads_failed = 0;
	sessions = 0;
	start_time = 0;
}

/* ---- rendering */

/* A growing text buffer; once out of memory it stays failed. */
struct buf {
	char *p;
	size_t len, cap;
	bool failed;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
put(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (int attempt = 0; attempt < 2 && !b->failed; attempt++) {
		size_t room = b->cap - b->len;

		va_start(ap, fmt);
		n = vsnprintf(b->p != NULL ? b->p + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = true;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap * 2 > b->len + (size_t)n + 1 ? b->cap * 2 :
		    b->len + (size_t)n + 256;
		char *p = realloc(b->p, cap);
		if (p == NULL) {
			b->failed = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
}

/* A label value as the format wants it: \ " and newline escaped. */
static void
put_label_value(struct buf *b, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\')
			put(b, "\\\\");
		else if (*v == '"')
			put(b, "\\\"");
		else if (*v == '\n')
			put(b, "\\n");
		else
			put(b, "%c", *v);
	}
}

static void
put_family(struct buf *b, const char *name, const char *type, const char *help)
{
	put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{label="value"} or name with no labels when label is NULL. */
static void
put_sample_u(struct buf *b, const char *name, const char *label,
    const char *value, uint64_t v)
{
	put(b, "%s", name);
	if (label != NULL) {
		put(b, "{%s=\"", label);
		put_label_value(b, value);
		put(b, "\"}");
	}
	put(b, " %llu\n", (unsigned long long)v);
}

/* A histogram's lines for one label (or none when label is NULL). */
static void
put_hist(struct buf *b, const char *name, const char *label, const char *value,
    const struct hist *h)
{
	uint64_t cum = 0, sum = __atomic_load_n(&h->sum_ns, __ATOMIC_RELAXED);

	for (unsigned i = 0; i < METRICS_NBUCKETS; i++) {
		cum += __atomic_load_n(&h->buckets[i], __ATOMIC_RELAXED);
		put(b, "%s_bucket{", name);
		if (label != NULL) {
			put(b, "%s=\"", label);
			put_label_value(b, value);
			put(b, "\",");
		}
		put(b, "le=\"%s\"} %llu\n", bound_text[i], (unsigned long long)cum);
	}
	if (label != NULL) {
		put(b, "%s_sum{%s=\"", name, label);
		put_label_value(b, value);
		put(b, "\"} %llu.%09llu\n", (unsigned long long)(sum / 1000000000u),
		    (unsigned long long)(sum % 1000000000u));
		put(b, "%s_count{%s=\"", name, label);
		put_label_value(b, value);
		put(b, "\"} %llu\n", (unsigned long long)cum);
	} else {
		put(b, "%s_sum %llu.%09llu\n", name, (unsigned long long)(sum / 1000000000u),
		    (unsigned long long)(sum % 1000000000u));
		put(b, "%s_count %llu\n", name, (unsigned long long)cum);
	}
}

/* The decisions of one policy; the action labels in the order of README. */
static const struct {
	enum stats_field field;
	const char *action;
} decision_fields[] = {
	{ STATS_ACCEPTED, "accept" },
	{ STATS_REJECTED, "reject" },
	{ STATS_TEMPFAILED, "tempfail" },
	{ STATS_DISCARDED, "discard" },
	{ STATS_QUARANTINED, "quarantine" },
	{ STATS_DRY_RUN, "dry_run" },
};

struct policy_walk {
	struct buf *b;
	int what;            /* 0 decisions, 1 checks, 2 Redis failures */
};

static void
put_policy(void *arg, const char *policy, const struct stats_entry *e)
{
	struct policy_walk *w = arg;
	struct buf *b = w->b;

	if (w->what == 0) {
		for (size_t i = 0; i < sizeof(decision_fields) / sizeof(decision_fields[0]); i++) {
			put(b, "policy_milter_decisions_total{policy=\"");
			put_label_value(b, policy);
			put(b, "\",action=\"%s\"} %llu\n", decision_fields[i].action,
			    (unsigned long long)stats_total(e, decision_fields[i].field));
		}
	} else {
		put_sample_u(b, w->what == 1 ? "policy_milter_checks_total" :
		    "policy_milter_policy_redis_failures_total", "policy", policy,
		    stats_total(e, w->what == 1 ? STATS_CHECKED : STATS_REDIS_ERRORS));
	}
}

char *
metrics_render(bool breaker_open, size_t *len)
{
	struct buf b = { NULL, 0, 0, false };
	struct policy_walk w = { &b, 0 };

	put_family(&b, "policy_milter_build_info", "gauge",
	    "Always 1; the version of policy-milter that runs.");
	put(&b, "policy_milter_build_info{version=\"");
	put_label_value(&b, PACKAGE_VERSION);
	put(&b, "\"} 1\n");
	put_family(&b, "policy_milter_start_time_seconds", "gauge",
	    "When the process started, in seconds since the Unix epoch.");
	put(&b, "policy_milter_start_time_seconds %.3f\n", start_time);

	put_family(&b, "policy_milter_decisions_total", "counter",
	    "Decisive verdicts of each policy by action (dry_run: would have acted).");
	stats_each(put_policy, &w);
	put_family(&b, "policy_milter_checks_total", "counter",
	    "Times each policy was evaluated.");
	w.what = 1;
	stats_each(put_policy, &w);
	put_family(&b, "policy_milter_policy_redis_failures_total", "counter",
	    "Checks of each policy that Redis could not answer (on_redis_error applied).");
	w.what = 2;
	stats_each(put_policy, &w);

	put_family(&b, "policy_milter_sessions", "gauge",
	    "Milter sessions open now (one per SMTP session in progress).");
	put(&b, "policy_milter_sessions %lld\n",
	    (long long)__atomic_load_n(&sessions, __ATOMIC_RELAXED));
	put_family(&b, "policy_milter_stage_duration_seconds", "histogram",
	    "Time spent in each milter callback, Redis waits included.");
	for (unsigned s = 0; s < METRICS_NSTAGES; s++)
		put_hist(&b, "policy_milter_stage_duration_seconds", "stage", stage_names[s],
		    &stage_hist[s]);

	put_family(&b, "policy_milter_redis_duration_seconds", "histogram",
	    "Time of each Redis call, from asking the pool to the last reply.");
	put_hist(&b, "policy_milter_redis_duration_seconds", NULL, NULL, &redis_hist);
	put_family(&b, "policy_milter_redis_errors_total", "counter",
	    "Redis calls that failed, by kind.");
	for (unsigned k = 0; k < METRICS_REDIS_NERRORS; k++)
		put_sample_u(&b, "policy_milter_redis_errors_total", "kind",
		    redis_error_names[k], __atomic_load_n(&redis_errors[k], __ATOMIC_RELAXED));
	put_family(&b, "policy_milter_redis_breaker_open", "gauge",
	    "1 while the Redis circuit breaker is open (Redis considered down).");
	put(&b, "policy_milter_redis_breaker_open %d\n", breaker_open ? 1 : 0);

	put_family(&b, "policy_milter_config_reloads_total", "counter",
	    "Reloads of the configuration (SIGUSR1, a changed list file) by result.");
	put_sample_u(&b, "policy_milter_config_reloads_total", "result", "ok",
	    __atomic_load_n(&reloads_ok, __ATOMIC_RELAXED));
	put_sample_u(&b, "policy_milter_config_reloads_total", "result", "failed",
	    __atomic_load_n(&reloads_failed, __ATOMIC_RELAXED));

	if (b.failed || b.p == NULL) {
		free(b.p);
		return NULL;
	}
	if (len != NULL)
		*len = b.len;
	return b.p;
}

/* ---- the setting */

int
metrics_parse_address(const char *spec, struct sockaddr_storage *sa,
    socklen_t *salen, bool *loopback, char *why, size_t whylen)
{
	bool v6 = strncmp(spec, "inet6:", 6) == 0;
	const char *port, *at;
	char host[INET6_ADDRSTRLEN + 2];
	size_t hlen;
	long n = 0;

	if (!v6 && strncmp(spec, "inet:", 5) != 0) {
		snprintf(why, whylen, "expected \"inet:PORT@ADDRESS\" or "
		    "\"inet6:PORT@ADDRESS\" such as \"inet:9717@127.0.0.1\"");
		return -1;
	}
	port = spec + (v6 ? 6 : 5);
	for (at = port; *at >= '0' && *at <= '9' && n <= 65535; at++)
		n = n * 10 + (*at - '0');
	if (at == port || n < 1 || n > 65535 || *at != '@' || at[1] == '\0') {
		snprintf(why, whylen, "expected %s:PORT@ADDRESS with a port of 1 to "
		    "65535 and an IP address, such as \"%s\"", v6 ? "inet6" : "inet",
		    v6 ? "inet6:9717@::1" : "inet:9717@127.0.0.1");
		return -1;
	}
	hlen = strlen(at + 1);
	if (v6 && hlen >= 2 && at[1] == '[' && at[hlen] == ']') {
		memcpy(host, at + 2, hlen - 2);
		host[hlen - 2] = '\0';
	} else if (hlen < sizeof(host)) {
		memcpy(host, at + 1, hlen + 1);
	} else {
		host[0] = '\0';
	}
	memset(sa, 0, sizeof(*sa));
	if (!v6) {
		struct sockaddr_in *in = (struct sockaddr_in *)(void *)sa;

		if (inet_pton(AF_INET, host, &in->sin_addr) != 1) {
			snprintf(why, whylen, "\"%s\" is not an IPv4 address (an IP "
			    "literal, no host name; inet6: for IPv6)", at + 1);
			return -1;
		}
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)n);
		*salen = sizeof(*in);
		*loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)(void *)sa;

		if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1) {
			snprintf(why, whylen, "\"%s\" is not an IPv6 address (an IP "
			    "literal, no host name)", at + 1);
			return -1;
		}
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)n);
		*salen = sizeof(*in6);
		*loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
	}
	return 0;
}
