/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * stats - per-policy outcome counters that operators read in Redis.
 *
 * Decisions add to in-memory atomic counters (no lock, no Redis round trip
 * on the SMTP path).  stats_flush() sends what accumulated since the last
 * flush to the hashes <prefix>stats:<policy> (HINCRBY per non-zero field),
 * in one script call that Redis applies at most once; the daemon calls it
 * once a second from its own thread.  If Redis is down the counts stay in
 * memory and go out with the next successful flush, and a flush that timed
 * out is sent again as it was, so no decision is lost from the statistics
 * and none is counted twice (<prefix>statsflush:<process> holds the last
 * flush applied, for an hour).
 *
 * Beside the pending counts each entry keeps per-process totals that a
 * flush never resets, for the metrics endpoint (milter/metrics.h).
 *
 * Entries are created by name when a configuration loads and live until
 * stats_reset(); a reload keeps a policy's pending counts and totals, also
 * of a policy the new configuration no longer has.
 */
#ifndef PM_STATS_H
#define PM_STATS_H

#include <stddef.h>
#include <stdint.h>

struct store;

enum stats_field {
	STATS_CHECKED,
	STATS_REJECTED,
	STATS_TEMPFAILED,
	STATS_DISCARDED,
	STATS_QUARANTINED,
	STATS_ACCEPTED,
	STATS_DRY_RUN,
	STATS_REDIS_ERRORS,
	STATS_NFIELDS
};

struct stats_entry;

/* The entry for a policy name, created on first use; NULL only without memory. */
struct stats_entry *stats_get(const char *policy);

void stats_add(struct stats_entry *e, enum stats_field f, uint64_t n);

/* Counts not yet flushed (for tests). */
uint64_t stats_pending(const struct stats_entry *e, enum stats_field f);

/* Everything counted for e since the process started (or stats_reset). */
uint64_t stats_total(const struct stats_entry *e, enum stats_field f);

/*
 * Call fn for every entry, newest first, without a lock: entries are only
 * added (at the head) until stats_reset, which must not run at the same
 * time (shutdown, after the metrics endpoint stopped; tests).
 */
void stats_each(void (*fn)(void *arg, const char *policy,
    const struct stats_entry *e), void *arg);

const char *stats_field_name(enum stats_field f);

/*
 * Send pending counts under prefix.  0 on success (or nothing to send); -1
 * with err when Redis failed, in which case the counts are kept and sent
 * first (with the same flush number) next time.  Call from one thread.
 */
int stats_flush(struct store *st, const char *prefix, char *err, size_t errlen);

/*
 * Run the flush script once with nothing to count (policy-milter -n
 * --connect): 0, or -1 with err (a NOPERM error names the command).
 */
int stats_check(struct store *st, const char *prefix, char *err, size_t errlen);

/* The flush script's text (to name the command on a line of it). */
const char *stats_script_text(void);

/* Forget every entry (tests, shutdown). */
void stats_reset(void);

#endif
