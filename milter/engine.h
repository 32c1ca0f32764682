/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * engine - runs the policies of a session's configuration at one SMTP stage
 * and turns the first decisive hit into a verdict.
 *
 * Rules (README "How policies are evaluated"):
 *  - policies run in file order; only those whose type decides at the stage;
 *  - the first hit that is not a dry run decides; a dry-run hit is logged
 *    ("would have") and counted, and evaluation goes on;
 *  - accept ends evaluation: for the connection at connect/HELO, for the
 *    message at later stages;
 *  - discard and quarantine are remembered (the first one) and applied at
 *    end of message, the only stage where the MTA can do them, unless a
 *    policy refuses the message first: evaluation goes on meanwhile;
 *  - with the configuration's delay_mail, a MAIL that only live lists can
 *    decide is decided at the first RCPT, in that stage's Redis call
 *    (engine_run at MAIL returns POLICY_NONE; a refusal found then is
 *    returned for every RCPT of the message);
 *  - an exempt client (engine_client_exempt), or an authenticated sender
 *    when authenticated senders are exempt (session_msg_start), skips every
 *    policy.
 * Every evaluation and outcome is counted in the policy's statistics and
 * every decision is logged as one line.
 *
 * The engine knows nothing of libmilter: callbacks.c maps verdicts to
 * SMFIS_* codes and sets the reply.
 */
#ifndef PM_ENGINE_H
#define PM_ENGINE_H

#include "milter/reply.h"
#include "milter/session.h"

struct engine_verdict {
	enum policy_action action;            /* POLICY_NONE: carry on */
	const struct cfg_policy *policy;      /* the policy that decided */
	struct reply_out reply;               /* reject and tempfail */
};

/*
 * What policy-milter-ctl explain shows of one policy at one stage: with
 * s->trace set, engine_run reports every policy it looks at, in file order,
 * after deciding what it does.  With s->peek also set, Redis is only read
 * (limiter.h LIMITER_PEEK): counts look as they would for this message,
 * units it would have reserved at earlier stages included, and nothing is
 * counted, recorded or given back.
 */
struct engine_step {
	enum policy_stage stage;
	const struct cfg_policy *policy;
	bool counting;             /* a rate limit */
	bool lookup;               /* its live list was looked up */
	bool skipped;              /* an accept before it covers it: not examined */
	bool redis_failed;         /* Redis could not answer for it */
	bool hit;                  /* in its list, or over its limit */
	const char *key;           /* counts: its key; live hits: "live:<member>" */
	uint64_t count;            /* counts: units in the window (and this
	                            * message's, peeking), before this one */
	uint64_t amount, limit, window_ms, retry_ms;
	enum policy_action action; /* what it did (POLICY_NONE: nothing) */
	bool dry_run;              /* action is what it would have done */
	const struct reply_out *reply;  /* the reply of a refusal, else NULL */
};

/*
 * Run stage for session s.  Returns v->action.  At POLICY_EOM a pending
 * discard or quarantine is returned when nothing refuses the message.
 */
enum policy_action engine_run(struct session *s, enum policy_stage stage,
    struct engine_verdict *v);

/* Called once the client is known: true when it is exempt (and records it). */
bool engine_client_exempt(struct session *s);

/*
 * The message in progress ends without acceptance (abort, RSET, a new MAIL,
 * disconnect): give back the units its rate limits reserved.  At end of
 * message engine_run() settles them itself.
 */
void engine_release(struct session *s);

/*
 * The session ends: its work space is kept for a later session (or freed).
 * session_free calls it.  engine_spare_free frees what is kept (at exit,
 * so that leak checkers see nothing).
 */
void engine_session_end(struct session *s);
void engine_spare_free(void);

#endif
