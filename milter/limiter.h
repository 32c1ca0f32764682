/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * limiter - sliding-window counters in Redis, checked and reserved for all
 * the rate limits of a stage in one atomic script call.
 *
 * A key's usage lives in one Redis hash: field = start of a sub-bucket
 * (Unix time in ms, a multiple of the bucket width), value = units in it.
 * The bucket width is window/60 (at least 1 ms).  A check counts every
 * bucket that reaches into the last window, so it counts at most one bucket
 * width of units too many and never one too few: in any interval of one
 * window at most limit units are accepted, across every MTA, by Redis's
 * clock.  Every key written gets a TTL of window + bucket in the same call;
 * a give-back never creates a key and never goes below zero.
 *
 * A check may instead be a lookup in a live list (a sorted set: member =
 * list entry, score = expiry in Unix seconds, +inf for never): it is "over"
 * when one of its members is in the set and not expired.  Expired members
 * count as absent; those looked up, and up to 16 others per lookup, are
 * deleted.  A key that is not a sorted set fails that check alone
 * (failed), not the call; with on_fail 'r' (its policy tempfails then) it
 * stops the call as a refusal would, so that no later check reserves.
 *
 * One call (limiter_run) does, atomically, in this order:
 *   1. the checks, in the order given, stopping at the first one over its
 *      limit (or found in its list) whose policy refuses ("r"), or a failed
 *      lookup with on_fail "r"; a check with "s" (dry run, discard,
 *      quarantine) is reported and passed over.  One over its limit whose
 *      policy accepts ("a") covers the checks after it: they are skipped,
 *      except those with outlives_accept, which go on (an accept at RCPT
 *      covers its recipient, not the message);
 *   2. if a refusing check stopped it: the "if refused" give-backs, and
 *      nothing else (they return whole reservations, so the "always" ones,
 *      parts of the same reservations, are not returned twice);
 *   3. else, as reserve says, a reservation for every count examined and
 *      not over, and then the "always" give-backs.
 *
 * Deadline: a call with checks that reaches Redis after the caller stopped
 * waiting for it (now + the store's timeout, in Redis's clock) changes
 * nothing and fails with "LATE": what it reserved would never be confirmed
 * nor given back.  A call of give-backs alone is carried out whenever it
 * arrives.
 *
 * A key must not appear in two checks of one call (each check sums its key
 * before any reservation); the engine never does that, since every key
 * holds its policy's name.  The TTL set is window + bucket + 1 ms.  The
 * results of checks after the stop are not examined (over false, field -1).
 *
 * Threads: any; the script is loaded once per Redis (store_eval).
 */
#ifndef PM_LIMITER_H
#define PM_LIMITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <hiredis/hiredis.h>

struct store;

/* What a check over its limit (or found in its list) does to the call. */
enum limiter_over {
	LIMITER_SOFT = 's',        /* reported, passed over (dry run, discard...) */
	LIMITER_REFUSE = 'r',      /* stops the call, refused: nothing reserved */
	LIMITER_ACCEPT = 'a',      /* covers the checks after it */
};

struct limiter_check {
	const char *key;           /* full Redis key, binary safe */
	size_t keylen;
	uint64_t limit;
	uint64_t window_ms;
	uint64_t amount;
	enum limiter_over on_over;
	/* A lookup instead of a count when nmembers > 0: key is the sorted
	 * set, limit, window_ms and amount are not used. */
	const char *const *members;
	const size_t *memberlens;
	size_t nmembers;
	enum limiter_over on_fail; /* lookups whose key is not a sorted set:
	                            * LIMITER_REFUSE, else soft (0 too) */
	bool outlives_accept;      /* an accept earlier in the call does not
	                            * cover this check (message-level at RCPT) */
	/*
	 * Counts: the policy's override hash (limiter_keys) whose field
	 * key[keyoff..] holds a limit for this key that replaces limit, and
	 * its refusal record, where a refusal of this check is noted (member
	 * key[keyoff..]).  NULL: none.
	 */
	const char *override_key;
	const char *top_key;       /* the record ... */
	const char *topn_key;      /* ... and its counts; set with top_key */
	size_t keyoff;
};

struct limiter_back {
	const char *key;
	size_t keylen;
	int64_t field;             /* the bucket the units went into */
	uint64_t amount;
};

enum limiter_reserve {
	LIMITER_CHECK_ONLY = 0,    /* reserve nothing */
	LIMITER_RESERVE = 1,       /* reserve unless a check refuses */
	/* Reserve only if a check with 'a' stops the call: used when a later
	 * in-memory policy will refuse unless an allow-list hit comes first. */
	LIMITER_RESERVE_IF_ACCEPTED = 2,
	/* Change nothing at all, not even expired buckets, members or
	 * overrides, record no refusal, give nothing back; report in field
	 * what LIMITER_RESERVE would have reserved (policy-milter-ctl show and
	 * explain). */
	LIMITER_PEEK = 3,
};

struct limiter_result {
	bool skipped;              /* covered by an accept: not examined */
	bool failed;               /* lookups: the key is not a sorted set */
	bool over;                 /* lookups: a member was found */
	uint64_t count;            /* units in the window before this check;
	                            * lookups: 1 + index of the member found */
	uint64_t retry_ms;         /* when over: until there is room (0: never);
	                            * lookups: the member's expiry (0: never) */
	int64_t field;             /* when reserved: the bucket, else -1 */
	uint64_t limit;            /* counts: the limit in force (an override's) */
};

/*
 * The Redis keys that belong to a counting policy beside its counters,
 * under prefix: its override hash "<prefix>override:<policy>" (field: the
 * policy's key, value: "<limit> <expiry ms>", expiry 0 for never), its
 * refusal record "<prefix>top:<policy>" (sorted set: member the key, score
 * the last refusal in ms) and the record's counts "<prefix>topn:<policy>"
 * (hash: member, refusals).
 */
struct limiter_keys {
	char override_key[400];
	char top_key[400];
	char topn_key[400];
};
/* Fills k; returns 0, or -1 when prefix and policy are too long. */
int limiter_keys(const char *prefix, const char *policy, struct limiter_keys *k);

/* The counter key of a policy's own key: "<prefix>rl:<policy>:<key>".
 * Returns where key starts in it (its keyoff), or 0 when it does not fit. */
size_t limiter_counter_key(const char *prefix, const char *policy, const char *key,
    size_t keylen, char *buf, size_t len, size_t *total);

/* The bucket width for a window. */
uint64_t limiter_bucket_ms(uint64_t window_ms);

/*
 * Run one atomic call as described above.  On success returns 0, sets
 * *refused, *stop (index of the check that stopped, or nc) and res[0..nc).
 * On Redis failure returns -1 with err; nothing is known to have changed.
 */
int limiter_run(struct store *st, const struct limiter_check *checks, size_t nc,
    enum limiter_reserve reserve, const struct limiter_back *always, size_t na,
    const struct limiter_back *if_refused, size_t nr,
    bool *refused, size_t *stop, struct limiter_result *res, char *err, size_t errlen);

/*
 * Decode the script's reply r for a call with nc checks into *refused, *stop
 * and res[0..nc).  Any reply of another shape (an error raised by the
 * script, a wrong count or type of elements, a stop past nc) is -1 with err.
 */
int limiter_decode(const redisReply *r, size_t nc, bool *refused, size_t *stop,
    struct limiter_result *res, char *err, size_t errlen);

/* The script's text (for tests that read it). */
extern const char limiter_script[];

#endif
