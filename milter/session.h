/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * session - what policy-milter knows about one SMTP connection and the
 * message in progress.
 *
 * A session is created by the first callback of a connection (negotiate,
 * or connect when negotiation is skipped), holds a reference to the
 * configuration snapshot in force at that moment for its whole life, and is
 * freed at close.  Message state is reset at MAIL, at end of message and at
 * abort (which the MTA does not always send, hence the reset at MAIL too).
 *
 * All strings are copies: libmilter's arguments live only for one callback.
 *
 * Threads: libmilter runs one connection's callbacks one at a time, but
 * possibly on different threads; a session is reached only through the
 * connection's private pointer, never through thread-local state.
 */
#ifndef PM_SESSION_H
#define PM_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "milter/addr.h"
#include "milter/cfg.h"
#include "policies/policy.h"

/* Units a rate limit reserved for the message in progress (ledger.h). */
struct engine_step;

struct session_resv {
	const struct cfg_policy *policy;
	char *key;                 /* the full Redis key */
	size_t keylen;
	size_t keyoff;             /* where the policy's own key starts in it */
	int64_t field;             /* the bucket */
	uint64_t amount;
	uint64_t limit, window_ms; /* of the policy, for the end of message */
};

struct session_msg {
	bool active;               /* MAIL seen, no end of message or abort yet */
	char queue_id[32];         /* "-" until the MTA tells */
	char *sender;              /* canonical (policies/canon.h); "<>": null sender */
	char *sasl_user;
	char *rcpt;                /* the recipient being decided, canonical */
	uint64_t declared_size;
	bool has_declared_size;
	uint64_t size;             /* header and body octets received */
	unsigned rcpts;            /* recipients accepted so far */
	bool exempt;               /* authenticated sender exempt */
	bool accepted;             /* an accept at MAIL covers the message */
	bool delayed;              /* MAIL waits for the first RCPT (engine.c) */
	bool mail_refused;         /* ... which found it refused: every RCPT is */
	enum policy_action pending;   /* discard or quarantine, applied at end */
	const struct cfg_policy *pending_policy;
	struct session_resv *resv;    /* given back unless the message is accepted */
	size_t nresv, resv_cap;
};

struct session {
	struct cfg *cfg;
	char client_ip[46];        /* "" when unknown (sendmail -bs) */
	struct addr_ip client_addr;
	bool has_client_addr;
	char *helo;
	bool exempt;               /* client exempt: no policy for this connection */
	bool accepted;             /* an accept at connect/helo covers the connection */
	enum policy_action pending;   /* discard/quarantine at connect/helo: every message */
	const struct cfg_policy *pending_policy;
	unsigned long nr_flags;    /* SMFIP_NR_* the MTA agreed to (callbacks.c) */
	struct session_msg msg;
	void *scratch;             /* the engine's per-stage work space */
	/* policy-milter-ctl explain (engine.h): change nothing in Redis, and
	 * report each policy's part through trace. */
	bool peek;
	bool no_delay;             /* decide MAIL at MAIL (explain without RCPT) */
	void (*trace)(void *arg, const struct engine_step *step);
	void *trace_arg;
	enum policy_action traced;     /* what the policy being walked did */
	bool traced_dry;
};

/* A new session holding a reference to cfg (may be NULL: no config). */
struct session *session_new(struct cfg *cfg);
void session_free(struct session *s);        /* accepts NULL */

/* Client address from the connect callback's sockaddr (NULL: unknown). */
void session_set_client(struct session *s, const struct sockaddr *sa);
void session_set_helo(struct session *s, const char *helo);

/*
 * Forget the message in progress; a new one starts at MAIL.  Reservations
 * still held are dropped from memory only: give them back first
 * (engine_release, ledger_give_back).
 */
void session_msg_reset(struct session *s);


/*
 * Start a message: sender as in MAIL FROM ("<a@b>" or "<>"), esmtp_args the
 * MAIL parameters ("SIZE=123", ...; NULL-terminated, may be NULL), sasl_user
 * the authenticated user or NULL (exempts the message when the
 * configuration exempts authenticated senders).
 */
void session_msg_start(struct session *s, const char *sender,
    const char *const *esmtp_args, const char *sasl_user);
void session_set_rcpt(struct session *s, const char *rcpt);
void session_set_queue_id(struct session *s, const char *qid);

#endif
