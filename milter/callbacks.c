/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * callbacks - libmilter callbacks (see callbacks.h).
 *
 * libmilter's API takes "char *" where it only reads; this file is the one
 * place that casts const away for it (macro names, reply strings).
 *
 * Replies are set immediately before returning SMFIS_REJECT or
 * SMFIS_TEMPFAIL and never otherwise: libmilter keeps a reply that was set
 * and not used and sends it with a later refusal of the same connection.
 *
 * Stages that never decide are negotiated as "no reply" (SMFIP_NR_*) when
 * the MTA offers it, so that it does not wait for us; stages that no policy
 * needs are not sent at all (SMFIP_NO*).
 *
 * Metrics: each callback but negotiate is timed from entry to return (the
 * Redis round trips it waits for included) into
 * stage_duration_seconds{stage}: every return goes through timed().  The
 * sessions gauge counts the sessions made here until close frees them.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <libmilter/mfapi.h>

#include "milter/callbacks.h"
#include "milter/engine.h"
#include "milter/log.h"
#include "milter/metrics.h"
#include "milter/reuse.h"
#include "milter/session.h"

#define UNCONST(s) ((char *)(uintptr_t)(const void *)(s))

/* A session for ctx on snapshot cfg (a reference is taken), or NULL. */
static struct session *
new_session(SMFICTX *ctx, struct cfg *cfg, unsigned long nr_flags)
{
	struct session *s = session_new(cfg);

	if (s == NULL) {
		log_msg(LOG_ERR, "out of memory for a new connection");
		return NULL;
	}
	s->nr_flags = nr_flags;
	smfi_setpriv(ctx, s);
	metrics_sessions_add(1);
	return s;
}

/* rc, after recording how long the callback of stage took since t0. */
static sfsistat
timed(enum metrics_stage stage, uint64_t t0, sfsistat rc)
{
	metrics_stage_observe(stage, metrics_now_ns() - t0);
	return rc;
}

/*
 * The connection's session.  The first callback of a connection is
 * cb_negotiate, which makes it; a session that starts without one follows
 * SMFIC_QUIT_NC on a connection that negotiated before (milter/reuse.h),
 * and keeps what that negotiation was made for.
 */
static struct session *
get_session(SMFICTX *ctx)
{
	struct session *s = smfi_getpriv(ctx);
	unsigned long flags = 0;
	struct cfg *c;

	if (s != NULL)
		return s;
	if (!reuse_lookup(ctx, &flags, &c)) {
		static struct log_throttle throttle;

		/* Forgotten (closed long ago): answer every stage; libmilter
		 * drops the answers its negotiation said the MTA does not want. */
		log_ratelimited(&throttle, 60, LOG_WARNING, "a session on a milter "
		    "connection that negotiated too long ago to remember: answering "
		    "every stage");
		c = cfg_acquire();
	}
	s = new_session(ctx, c, flags);
	cfg_unref(c);
	return s;
}

/* SMFIS code for a stage that does not decide: no reply if negotiated so. */
static sfsistat
quiet(const struct session *s, unsigned long nr_flag)
{
	return (s != NULL && (s->nr_flags & nr_flag)) ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static bool
set_reply(SMFICTX *ctx, const struct engine_verdict *v)
{
	const struct reply_out *r = &v->reply;
	char *xcode = r->xcode[0] ? UNCONST(r->xcode) : NULL;
	const char *l[REPLY_MAX_LINES + 1] = { 0 };
	int rc;

	for (size_t i = 0; i < r->nlines; i++)
		l[i] = r->lines[i];
	if (r->nlines <= 1)
		rc = smfi_setreply(ctx, UNCONST(r->code), xcode, UNCONST(l[0] ? l[0] : ""));
	else
		/* smfi_setmlreply stops at the first NULL line. */
		rc = smfi_setmlreply(ctx, r->code, xcode, l[0], l[1], l[2], l[3], l[4],
		    l[5], l[6], l[7], l[8], l[9], l[10], l[11], l[12], l[13], l[14],
		    l[15], l[16], l[17], l[18], l[19], l[20], l[21], l[22], l[23], l[24],
		    l[25], l[26], l[27], l[28], l[29], l[30], l[31], (char *)NULL);
	if (rc != MI_SUCCESS) {
		log_msg(LOG_WARNING, "policy=%s: libmilter refused the reply; the MTA "
		    "sends its default", v->policy ? v->policy->name : "?");
		return false;
	}
	return true;
}

/* Turn the engine's verdict into what libmilter returns at this stage. */
static sfsistat
respond(SMFICTX *ctx, struct session *s, enum policy_stage stage,
    const struct engine_verdict *v, unsigned long nr_flag)
{
	switch (v->action) {
	case POLICY_REJECT:
		set_reply(ctx, v);
		return SMFIS_REJECT;
	case POLICY_TEMPFAIL:
		set_reply(ctx, v);
		return SMFIS_TEMPFAIL;
	case POLICY_ACCEPT:
		/* A connection accepted at connect/HELO needs no more callbacks,
		 * unless a discard or quarantine decided before the accept waits
		 * for the end of each message (an accept never undoes one). */
		if (stage <= POLICY_HELO && s->pending == POLICY_NONE &&
		    !(s->nr_flags & nr_flag))
			return SMFIS_ACCEPT;
		break;
	case POLICY_DISCARD:
		if (stage == POLICY_EOM)
			return SMFIS_DISCARD;
		break;
	case POLICY_QUARANTINE:
		if (stage == POLICY_EOM) {
			char reason[128];
			snprintf(reason, sizeof(reason), "policy-milter policy %s",
			    v->policy ? v->policy->name : "?");
			if (smfi_quarantine(ctx, reason) != MI_SUCCESS)
				log_msg(LOG_WARNING, "%s: the MTA refused to quarantine "
				    "(policy=%s); message accepted", s->msg.queue_id,
				    v->policy ? v->policy->name : "?");
			return SMFIS_CONTINUE;
		}
		break;
	case POLICY_NONE:
		break;
	}
	return quiet(s, nr_flag);
}

unsigned long
callbacks_want(const struct cfg *c)
{
	unsigned long want = SMFIP_NOUNKNOWN | SMFIP_NODATA;
	unsigned need = c != NULL ? c->stages_need : 0;
	unsigned decide = c != NULL ? c->stages_decide : 0;

	if (!(need & POLICY_STAGE(POLICY_HELO)))
		want |= SMFIP_NOHELO;
	if (!(need & POLICY_STAGE(POLICY_HEADER)))
		want |= SMFIP_NOHDRS | SMFIP_NOEOH;
	if (!(need & POLICY_STAGE(POLICY_BODY)))
		want |= SMFIP_NOBODY;
	/* Exemption of clients answers at connect (SMFIS_ACCEPT): that is a decision. */
	if (!(decide & POLICY_STAGE(POLICY_CONNECT)) &&
	    (c == NULL || c->exempt.nclients == 0))
		want |= SMFIP_NR_CONN;
	if (!(decide & POLICY_STAGE(POLICY_HELO)))
		want |= SMFIP_NR_HELO;
	if (!(decide & POLICY_STAGE(POLICY_MAIL)))
		want |= SMFIP_NR_MAIL;
	if (!(decide & POLICY_STAGE(POLICY_RCPT)))
		want |= SMFIP_NR_RCPT;
	return want | SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY | SMFIP_HDR_LEADSPC;
}

static sfsistat
cb_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
    unsigned long f2, unsigned long f3, unsigned long *pf0,
    unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
	struct session *s = smfi_getpriv(ctx);
	unsigned long want;

	(void)f2;
	(void)f3;
	/* A negotiation starts a connection: the snapshot in force now. */
	if (s == NULL) {
		struct cfg *c = cfg_acquire();
		s = new_session(ctx, c, 0);
		cfg_unref(c);
	}
	if (s == NULL)
		return SMFIS_TEMPFAIL;
	want = callbacks_want(s->cfg);
	*pf1 = want & f1;
	s->nr_flags = *pf1;
	reuse_negotiated(ctx, s->nr_flags, s->cfg);

	*pf0 = f0 & (SMFIF_QUARANTINE | SMFIF_SETSYMLIST);
	*pf2 = 0;
	*pf3 = 0;
	if (f0 & SMFIF_SETSYMLIST) {
		/*
		 * Only what we read.  The client address comes from the connect
		 * callback (neither MTA sends {client_addr} by default), and the
		 * envelope addresses from the commands themselves: Sendmail's
		 * {rcpt_addr} is the address as resolved for delivery (a bare
		 * user name for local mail), so the two MTAs would differ.
		 */
		smfi_setsymlist(ctx, SMFIM_ENVFROM, UNCONST("i {auth_authen}"));
		smfi_setsymlist(ctx, SMFIM_ENVRCPT, UNCONST("i"));
		smfi_setsymlist(ctx, SMFIM_EOM, UNCONST("i"));
	}
	return SMFIS_CONTINUE;
}

static sfsistat
cb_connect(SMFICTX *ctx, char *hostname, struct sockaddr *hostaddr)
{
	uint64_t t0 = metrics_now_ns();
	struct session *s = get_session(ctx);
	struct engine_verdict v;

	(void)hostname;
	if (s == NULL)
		return timed(METRICS_STAGE_CONNECT, t0, SMFIS_TEMPFAIL);
	session_set_client(s, hostaddr);
	if (engine_client_exempt(s)) {
		log_msg(LOG_DEBUG, "-: client=%s: exempt", s->client_ip);
		return timed(METRICS_STAGE_CONNECT, t0,
		    (s->nr_flags & SMFIP_NR_CONN) ? SMFIS_NOREPLY : SMFIS_ACCEPT);
	}
	engine_run(s, POLICY_CONNECT, &v);
	return timed(METRICS_STAGE_CONNECT, t0,
	    respond(ctx, s, POLICY_CONNECT, &v, SMFIP_NR_CONN));
}

static sfsistat
cb_helo(SMFICTX *ctx, char *helo)
{
	uint64_t t0 = metrics_now_ns();
	struct session *s = get_session(ctx);
	struct engine_verdict v;

	if (s == NULL)
		return timed(METRICS_STAGE_HELO, t0, SMFIS_TEMPFAIL);
	session_set_helo(s, helo);
	engine_run(s, POLICY_HELO, &v);
	return timed(METRICS_STAGE_HELO, t0,
	    respond(ctx, s, POLICY_HELO, &v, SMFIP_NR_HELO));
}

static sfsistat
cb_envfrom(SMFICTX *ctx, char **argv)
{
	uint64_t t0 = metrics_now_ns();
	struct session *s = get_session(ctx);
	struct engine_verdict v;

	if (s == NULL)
		return timed(METRICS_STAGE_MAIL, t0, SMFIS_TEMPFAIL);
	engine_release(s);      /* MAIL without RSET: the last one ended unaccepted */
	session_msg_start(s, argv[0], (const char *const *)(argv + 1),
	    smfi_getsymval(ctx, UNCONST("{auth_authen}")));
	session_set_queue_id(s, smfi_getsymval(ctx, UNCONST("i")));
	engine_run(s, POLICY_MAIL, &v);
	return timed(METRICS_STAGE_MAIL, t0,
	    respond(ctx, s, POLICY_MAIL, &v, SMFIP_NR_MAIL));
}

static sfsistat
cb_envrcpt(SMFICTX *ctx, char **argv)
{
	uint64_t t0 = metrics_now_ns();
	struct session *s = get_session(ctx);
	struct engine_verdict v;

	if (s == NULL)
		return timed(METRICS_STAGE_RCPT, t0, SMFIS_TEMPFAIL);
	session_set_queue_id(s, smfi_getsymval(ctx, UNCONST("i")));
	session_set_rcpt(s, argv[0]);
	engine_run(s, POLICY_RCPT, &v);
	if (v.action != POLICY_REJECT && v.action != POLICY_TEMPFAIL)
		s->msg.rcpts++;
	return timed(METRICS_STAGE_RCPT, t0,
	    respond(ctx, s, POLICY_RCPT, &v, SMFIP_NR_RCPT));
}

static sfsistat
cb_header(SMFICTX *ctx, char *name, char *value)
{
	uint64_t t0 = metrics_now_ns();
	struct session *s = get_session(ctx);

	if (s != NULL) {
		/* "Name:" value CRLF; without HDR_LEADSPC the MTA ate one space. */
		s->msg.size += strlen(name) + 1 + strlen(value) + 2 +
		    ((s->nr_flags & SMFIP_HDR_LEADSPC) ? 0 : 1);
	}
	return timed(METRICS_STAGE_HEADER, t0, quiet(s, SMFIP_NR_HDR));
}

static sfsistat
cb_eoh(SMFICTX *ctx)
{
	uint64_t t0 = metrics_now_ns();
	struct session *s = get_session(ctx);

	if (s != NULL)
		s->msg.size += 2;          /* the empty line after the header */
	return timed(METRICS_STAGE_HEADER, t0, quiet(s, SMFIP_NR_EOH));
}

static sfsistat
cb_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
	uint64_t t0 = metrics_now_ns();
	struct session *s = get_session(ctx);

	(void)chunk;
	if (s != NULL)
		s->msg.size += len;
	return timed(METRICS_STAGE_BODY, t0, quiet(s, SMFIP_NR_BODY));
}

static sfsistat
cb_eom(SMFICTX *ctx)
{
	uint64_t t0 = metrics_now_ns();
	struct session *s = get_session(ctx);
	struct engine_verdict v;
	sfsistat rc;

	if (s == NULL)
		return timed(METRICS_STAGE_EOM, t0, SMFIS_TEMPFAIL);
	session_set_queue_id(s, smfi_getsymval(ctx, UNCONST("i")));
	engine_run(s, POLICY_EOM, &v);
	rc = respond(ctx, s, POLICY_EOM, &v, 0);
	session_msg_reset(s);
	return timed(METRICS_STAGE_EOM, t0, rc);
}

static sfsistat
cb_abort(SMFICTX *ctx)
{
	uint64_t t0 = metrics_now_ns();
	struct session *s = smfi_getpriv(ctx);

	if (s != NULL) {
		engine_release(s);
		session_msg_reset(s);
	}
	return timed(METRICS_STAGE_ABORT, t0, SMFIS_CONTINUE);
}

static sfsistat
cb_close(SMFICTX *ctx)
{
	uint64_t t0 = metrics_now_ns();
	struct session *s = smfi_getpriv(ctx);

	if (s != NULL) {
		engine_release(s);      /* disconnect in the middle of a message */
		metrics_sessions_add(-1);
	}
	session_free(s);
	smfi_setpriv(ctx, NULL);
	reuse_closed(ctx);              /* or QUIT_NC: a session may follow */
	return timed(METRICS_STAGE_CLOSE, t0, SMFIS_CONTINUE);
}

static struct smfiDesc filter = {
	.xxfi_name = UNCONST("policy-milter"),
	.xxfi_version = SMFI_VERSION,
	/* Actions we may ask for; negotiate narrows them per connection. */
	.xxfi_flags = SMFIF_QUARANTINE | SMFIF_SETSYMLIST,
	.xxfi_connect = cb_connect,     /* client address, exemptions */
	.xxfi_helo = cb_helo,           /* HELO name */
	.xxfi_envfrom = cb_envfrom,     /* new message: sender, SIZE=, SASL user */
	.xxfi_envrcpt = cb_envrcpt,     /* recipient count, early size check */
	.xxfi_header = cb_header,       /* size: header octets */
	.xxfi_eoh = cb_eoh,             /* size: the blank line */
	.xxfi_body = cb_body,           /* size: body octets */
	.xxfi_eom = cb_eom,             /* final size; discard, quarantine */
	.xxfi_abort = cb_abort,         /* message abandoned: reset */
	.xxfi_close = cb_close,         /* connection gone: free */
	.xxfi_unknown = NULL,           /* never negotiated */
	.xxfi_data = NULL,              /* never negotiated */
	.xxfi_negotiate = cb_negotiate, /* stages and macros we need */
};

int
callbacks_register(void)
{
	return smfi_register(filter) == MI_SUCCESS ? 0 : -1;
}
