/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * ledger - the units that the rate limits of the message in progress have
 * reserved, from reservation to their end.
 *
 * A unit is reserved when its policy decides (first RCPT for messages and
 * bytes, each RCPT for recipients: milter/limiter.h), written here
 * (ledger_add), and then ends one of two ways:
 *  - the message is accepted at end of message: ledger_settle reconciles
 *    byte counts with the real size (one atomic call that adds what is over
 *    the declared SIZE=, possibly refusing the message, and gives back what
 *    is under it), and the rest is kept (ledger_forget);
 *  - the message ends otherwise (refused by any policy, RSET, abort, a new
 *    MAIL, disconnect): every unit goes back (ledger_give_back).
 * Each reservation is returned at most once: the ledger forgets what it
 * gave back or kept, and a refused settle returns whole reservations
 * only (never also the part that a smaller real size would have returned).
 *
 * Threads: a ledger is part of its session; the same rules apply.
 */
#ifndef PM_LEDGER_H
#define PM_LEDGER_H

#include <stdbool.h>
#include <stddef.h>

#include "milter/limiter.h"
#include "milter/session.h"

/* What an over check of policy p does in a limiter call (dry run: soft). */
enum limiter_over ledger_on_over(const struct cfg_policy *p);

/* Remember a reservation (copies r->key).  0, or -1 without memory. */
int ledger_add(struct session *s, const struct session_resv *r);

/* The units the message holds under this full key (of any policy). */
uint64_t ledger_held(const struct session *s, const char *key, size_t keylen);
/* Does the message hold units of policy p under this key already? */
bool ledger_holds(const struct session *s, const struct cfg_policy *p,
    const char *key, size_t keylen);

/*
 * Give every reservation back (one Redis call) and forget them.  On
 * failure the units stay counted until their keys expire (too strict for a
 * while, never too lenient); the failure is logged.
 */
void ledger_give_back(struct session *s);

/*
 * The reservations have ended without a give-back of ours: the message was
 * accepted (the units stay counted), or a refused ledger_settle gave them
 * back already.  Forget them.
 */
void ledger_forget(struct session *s);

/* A byte check made at end of message, for the engine to judge. */
struct ledger_check {
	const struct session_resv *resv;     /* the reservation it extends */
	struct limiter_result res;
};

/*
 * End of message, for a message nothing has refused.  For each byte
 * reservation of a limit that looks at the end of message, the real size
 * replaces the declared one, in one atomic call:
 *  - more than declared: the excess is checked against the limit and added
 *    (covered: the message is accepted already, so the excess is counted
 *    and nothing refuses);
 *  - less: the difference goes back.
 * out[0..*nout) are the checks made (room for s->msg.nresv).  Returns 0
 * with *refused when a refusing limit was passed (then every reservation
 * has been given back, once: forget them after reading out[]); -1 with err when Redis failed (nothing
 * changed; out and *nout still name the checks).  Reservations are not
 * forgotten here: the caller forgets them (ledger_forget) or gives them back.
 */
int ledger_settle(struct session *s, bool covered, struct ledger_check *out,
    size_t *nout, bool *refused, char *err, size_t errlen);

#endif
