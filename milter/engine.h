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

#endif
