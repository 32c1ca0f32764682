/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * ctl_explain - policy-milter-ctl explain: one SMTP transaction, made up
 * from the options, through the loaded policies and live Redis, with
 * nothing counted or changed (the engine's peek mode, engine.h).
 *
 * It drives the session and the engine exactly as the milter callbacks do
 * (connect, HELO, MAIL, each RCPT, end of message), so the verdicts and
 * reply lines are the daemon's; the engine reports every policy it looks
 * at through its trace.  Round trips: one per stage that needs Redis, as
 * in the daemon.
 */
#include "config.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/ctl.h"
#include "milter/engine.h"
#include "milter/session.h"
#include "milter/units.h"

#define MAX_RCPTS 100

/* One policy's part in a stage, copied out of the engine's trace. */
struct step {
	struct engine_step e;
	char key[POLICY_KEY_MAX + 8];
	char reply[1200];
};

struct steps {
	struct step *v;
	size_t n, cap;
};

/* The lines as the client reads them: 550-... then 550 ... */
static void
format_reply(const struct reply_out *r, char *buf, size_t len)
{
	size_t n = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < r->nlines && n < len; i++) {
		const char *l = r->lines[i];
		n += (size_t)snprintf(buf + n, len - n, "%s%s%c%s%s", i ? "\n" : "", r->code,
		    i + 1 < r->nlines ? '-' : ' ', r->xcode[0] ? r->xcode : "",
		    r->xcode[0] ? " " : "");
		for (; *l != '\0' && n + 1 < len; l++) {
			buf[n++] = *l;
			if (l[0] == '%' && l[1] == '%')
				l++;          /* doubled for libmilter */
		}
		buf[n < len ? n : len - 1] = '\0';
	}
}

static void
collect(void *arg, const struct engine_step *e)
{
	struct steps *st = arg;
	struct step *s;

	if (st->n == st->cap) {
		size_t cap = st->cap ? st->cap * 2 : 8;
		struct step *v = realloc(st->v, cap * sizeof(*v));
		if (v == NULL)
			return;
		st->v = v;
		st->cap = cap;
	}
	s = &st->v[st->n++];
	s->e = *e;
	snprintf(s->key, sizeof(s->key), "%s", e->key != NULL ? e->key : "");
	s->reply[0] = '\0';
	if (e->reply != NULL)
		format_reply(e->reply, s->reply, sizeof(s->reply));
	if (e->key != NULL)
		s->e.key = s->key;
}

static const char *
what_it_did(const struct step *s)
{
	if (s->e.skipped)
		return "covered by an accept before it: not examined";
	if (s->e.redis_failed)
		return "Redis could not answer";
	if (s->e.action == POLICY_NONE)
		return s->e.hit ? "hit, passed over" : s->e.counting ? "within the limit" :
		    "not listed";
	return NULL;
}

static void
print_step_text(const struct step *s)
{
	const struct cfg_policy *p = s->e.policy;
	const char *did = what_it_did(s);
	char window[32], retry[32];

	printf("  %-20s %-10s ", p->name, p->type->name);
	if (s->e.counting) {
		units_format_duration(s->e.window_ms, window, sizeof(window));
		printf("key ");
		ctl_print_text(s->key, strlen(s->key));
		if (!s->e.skipped && !s->e.redis_failed)
			printf(": %" PRIu64 " of %" PRIu64 " in %s, this one %" PRIu64,
			    s->e.count, s->e.limit, window, s->e.amount);
		printf("; ");
	} else if (s->e.lookup && s->e.hit) {
		printf("listed in its live list as ");
		ctl_print_text(s->key + 5, strlen(s->key + 5));   /* "live:" */
		printf("; ");
	} else if (s->e.hit) {
		printf("listed; ");
	}
	if (did != NULL) {
		printf("%s\n", did);
	} else {
		printf("%s%s", s->e.dry_run ? "dry run: would " : "", policy_action_name(s->e.action));
		if (s->e.counting && s->e.hit && s->e.retry_ms) {
			units_format_duration(s->e.retry_ms, retry, sizeof(retry));
			printf(" (room again in %s)", retry);
		}
		printf("\n");
	}
	if (s->reply[0] != '\0') {
		for (const char *l = s->reply; *l != '\0';) {
			size_t len = strcspn(l, "\n");
			printf("      ");
			ctl_print_text(l, len);
			printf("\n");
			l += len + (l[len] == '\n');
		}
	}
}

static void
print_step_json(const struct step *s, bool first)
{
	printf("%s{\"policy\":", first ? "" : ",");
	ctl_json_str(s->e.policy->name, strlen(s->e.policy->name));
	printf(",\"stage\":\"%s\",\"type\":\"%s\",\"examined\":%s,\"redis_failed\":%s,"
	    "\"hit\":%s", policy_stage_name(s->e.stage), s->e.policy->type->name,
	    s->e.skipped ? "false" : "true",
	    s->e.redis_failed ? "true" : "false", s->e.hit ? "true" : "false");
	if (s->e.counting)
		printf(",\"count\":%" PRIu64 ",\"amount\":%" PRIu64 ",\"limit\":%" PRIu64
		    ",\"window_seconds\":%" PRIu64 ",\"retry_after_seconds\":%" PRIu64,
		    s->e.count, s->e.amount, s->e.limit, s->e.window_ms / 1000,
		    (s->e.retry_ms + 999) / 1000);
	if (s->key[0] != '\0') {
		printf(",\"key\":");
		ctl_json_str(s->key, strlen(s->key));
	}
	printf(",\"action\":\"%s\",\"dry_run\":%s,\"reply\":",
	    policy_action_name(s->e.action), s->e.dry_run ? "true" : "false");
	if (s->reply[0] != '\0')
		ctl_json_str(s->reply, strlen(s->reply));
	else
		printf("null");
	printf("}");
}

/* What the transaction comes to so far. */
struct outcome {
	bool refused;              /* the connection or the message */
	bool held;                 /* discarded or quarantined */
	unsigned rcpts_ok, rcpts;
	char text[1400];
};

/* Run one stage and print it with its verdict.  true: the stage refused. */
static bool
stage(struct ctl *c, struct session *s, enum policy_stage st, const char *what,
    struct steps *steps, struct outcome *o, bool *first_stage)
{
	struct engine_verdict v;
	bool refused, delayed;
	char reply[1200] = "";

	steps->n = 0;
	engine_run(s, st, &v);
	delayed = st == POLICY_MAIL && s->msg.delayed;
	refused = v.action == POLICY_REJECT || v.action == POLICY_TEMPFAIL;
	for (size_t i = 0; i < steps->n; i++)
		if (steps->v[i].e.policy == v.policy && steps->v[i].reply[0] != '\0' && refused)
			snprintf(reply, sizeof(reply), "%s", steps->v[i].reply);
	/* A later recipient of a message a delayed MAIL refused: no policy
	 * runs again, the reply is the first recipient's. */
	if (refused && steps->n == 0)
		format_reply(&v.reply, reply, sizeof(reply));
	if (c->json) {
		printf("%s{\"stage\":\"%s\",\"input\":", *first_stage ? "" : ",",
		    policy_stage_name(st));
		ctl_json_str(what, strlen(what));
		printf(",\"policies\":[");
		for (size_t i = 0; i < steps->n; i++)
			print_step_json(&steps->v[i], i == 0);
		printf("]%s,\"verdict\":\"%s\"", delayed ? ",\"delayed\":true" : "",
		    v.action == POLICY_NONE ? "continue" : policy_action_name(v.action));
		if (v.policy != NULL) {
			printf(",\"by\":");
			ctl_json_str(v.policy->name, strlen(v.policy->name));
		}
		printf(",\"reply\":");
		if (reply[0] != '\0')
			ctl_json_str(reply, strlen(reply));
		else
			printf("null");
		printf("}");
	} else {
		printf("%s%s\n", *first_stage ? "" : "\n", what);
		if (delayed)
			printf("  its live lists wait for the first RCPT "
			    "(delay_mail_lookups): see there\n");
		else if (st == POLICY_MAIL && s->no_delay && s->cfg->delay_mail)
			printf("  (no --rcpt: decided here; with a recipient the daemon "
			    "looks MAIL's live lists up at the first RCPT)\n");
		else if (steps->n == 0 && refused && st == POLICY_RCPT) {
			printf("  the message is refused (see the first RCPT): the same reply\n");
			for (const char *l = reply; *l != '\0';) {
				size_t len = strcspn(l, "\n");
				printf("      ");
				ctl_print_text(l, len);
				printf("\n");
				l += len + (l[len] == '\n');
			}
		} else if (steps->n == 0)
			printf("  no policy decides here\n");
		for (size_t i = 0; i < steps->n; i++) {
			/* A delayed MAIL's policies come first, under their stage. */
			enum policy_stage was = i > 0 ? steps->v[i - 1].e.stage : st;
			if (steps->v[i].e.stage != was)
				printf("  %s:\n", steps->v[i].e.stage == POLICY_MAIL ?
				    "MAIL FROM, delayed to this recipient" : "this recipient");
			print_step_text(&steps->v[i]);
		}
		if (v.action != POLICY_NONE)
			printf("  => %s by %s\n", policy_action_name(v.action),
			    v.policy != NULL ? v.policy->name : "?");
	}
	*first_stage = false;
	if (st == POLICY_RCPT) {
		o->rcpts++;
		if (!refused)
			o->rcpts_ok++;
		/* A delayed MAIL refused the message: say so, not "every
		 * recipient refused". */
		if (refused && s->msg.mail_refused && o->text[0] == '\0')
			snprintf(o->text, sizeof(o->text), "refused at the first RCPT by %s "
			    "(MAIL's live list, delay_mail_lookups): %s",
			    v.policy != NULL ? v.policy->name : "?", reply);
	} else if (refused) {
		o->refused = true;
		snprintf(o->text, sizeof(o->text), "refused at %s by %s: %s",
		    policy_stage_name(st), v.policy != NULL ? v.policy->name : "?", reply);
	}
	if (st == POLICY_EOM && (v.action == POLICY_DISCARD || v.action == POLICY_QUARANTINE)) {
		o->held = true;
		snprintf(o->text, sizeof(o->text), "%s by %s (the client sees it accepted)",
		    v.action == POLICY_DISCARD ? "discarded" : "quarantined",
		    v.policy != NULL ? v.policy->name : "?");
	}
	return refused;
}

int
ctl_explain(struct ctl *c, int argc, char **argv)
{
	const char *client = NULL, *helo = NULL, *sender = NULL, *sasl = NULL, *size = NULL;
	const char *rcpts[MAX_RCPTS];
	size_t nrcpts = 0;
	struct sockaddr_storage ss;
	struct steps steps = { NULL, 0, 0 };
	struct outcome o;
	struct session *s;
	uint64_t bytes = 0;
	char why[256], what[1400], sizearg[40];
	const char *esmtp[2] = { NULL, NULL };
	bool first = true;

	for (int i = 0; i < argc; i++) {
		const char **slot = NULL;

		if (strcmp(argv[i], "--json") == 0) {
			c->json = true;
			continue;
		}
		if (strcmp(argv[i], "--client") == 0) slot = &client;
		else if (strcmp(argv[i], "--helo") == 0) slot = &helo;
		else if (strcmp(argv[i], "--sender") == 0) slot = &sender;
		else if (strcmp(argv[i], "--sasl") == 0) slot = &sasl;
		else if (strcmp(argv[i], "--size") == 0) slot = &size;
		else if (strcmp(argv[i], "--rcpt") == 0) {
			if (nrcpts == MAX_RCPTS)
				return ctl_error(CTL_USAGE, "at most %d --rcpt", MAX_RCPTS);
			slot = &rcpts[nrcpts++];
		} else {
			return ctl_error(CTL_USAGE, "explain: unknown argument %s (see --help)",
			    argv[i]);
		}
		if (i + 1 >= argc)
			return ctl_error(CTL_USAGE, "%s needs a value", argv[i]);
		*slot = argv[++i];
	}
	if (client == NULL)
		return ctl_error(CTL_USAGE, "usage: explain --client IP [--helo NAME] "
		    "[--sender ADDR] [--rcpt ADDR]... [--size N] [--sasl USER]");
	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, client, &((struct sockaddr_in *)(void *)&ss)->sin_addr) == 1)
		ss.ss_family = AF_INET;
	else if (inet_pton(AF_INET6, client,
	    &((struct sockaddr_in6 *)(void *)&ss)->sin6_addr) == 1)
		ss.ss_family = AF_INET6;
	else
		return ctl_error(CTL_USAGE, "--client %s: not an IP address", client);
	if (size != NULL) {
		if (units_size(size, &bytes, why, sizeof(why)) != 0)
			return ctl_error(CTL_USAGE, "--size %s: %s", size, why);
		snprintf(sizearg, sizeof(sizearg), "SIZE=%" PRIu64, bytes);
		esmtp[0] = sizearg;
	}
	if ((s = session_new(c->cfg)) == NULL)
		return ctl_error(CTL_NO, "out of memory");
	s->peek = true;
	/* Without a recipient, MAIL is decided at MAIL: a delayed MAIL would
	 * never be looked up. */
	s->no_delay = nrcpts == 0;
	s->trace = collect;
	s->trace_arg = &steps;
	memset(&o, 0, sizeof(o));
	if (c->json)
		printf("{\"stages\":[");

	session_set_client(s, (const struct sockaddr *)&ss);
	snprintf(what, sizeof(what), "CONNECT from %s", client);
	if (engine_client_exempt(s)) {
		if (!c->json)
			printf("%s\n  the client is exempt (exempt_clients): no policy applies\n",
			    what);
		first = false;
	} else if (stage(c, s, POLICY_CONNECT, what, &steps, &o, &first)) {
		goto done;
	}
	if (helo != NULL) {
		session_set_helo(s, helo);
		snprintf(what, sizeof(what), "HELO %s", helo);
		if (stage(c, s, POLICY_HELO, what, &steps, &o, &first))
			goto done;
	}
	session_msg_start(s, sender != NULL ? sender : "<>", esmtp, sasl);
	session_set_queue_id(s, "explain");
	snprintf(what, sizeof(what), "MAIL FROM:<%s>%s%s%s%s", sender != NULL ? sender : "",
	    esmtp[0] ? " " : "", esmtp[0] ? esmtp[0] : "", sasl ? " AUTH as " : "",
	    sasl ? sasl : "");
	if (stage(c, s, POLICY_MAIL, what, &steps, &o, &first))
		goto done;
	for (size_t i = 0; i < nrcpts; i++) {
		session_set_rcpt(s, rcpts[i]);
		snprintf(what, sizeof(what), "RCPT TO:<%s>", rcpts[i]);
		stage(c, s, POLICY_RCPT, what, &steps, &o, &first);
		if (o.rcpts_ok > s->msg.rcpts)
			s->msg.rcpts++;
	}
	if (nrcpts > 0 && o.rcpts_ok == 0) {
		o.refused = true;
		if (o.text[0] == '\0')
			snprintf(o.text, sizeof(o.text), "every recipient refused");
		goto done;
	}
	s->msg.size = bytes;
	snprintf(what, sizeof(what), "end of message (%" PRIu64 " bytes)", bytes);
	stage(c, s, POLICY_EOM, what, &steps, &o, &first);
done:
	if (!o.refused && !o.held)
		snprintf(o.text, sizeof(o.text), "accepted%s",
		    nrcpts == 0 ? " (no --rcpt: recipients not tried)" : "");
	if (c->json) {
		printf("],\"accepted_recipients\":%u,\"recipients\":%u,\"verdict\":",
		    o.rcpts_ok, o.rcpts);
		ctl_json_str(o.refused ? "refused" : o.held ? "held" : "accepted",
		    strlen(o.refused ? "refused" : o.held ? "held" : "accepted"));
		printf(",\"summary\":");
		ctl_json_str(o.text, strlen(o.text));
		printf(",\"changed\":false}\n");
	} else {
		printf("\nverdict: %s", o.text);
		if (!o.refused && o.rcpts > o.rcpts_ok)
			printf(" for %u of %u recipients", o.rcpts_ok, o.rcpts);
		printf("\n(nothing was counted or changed in Redis)\n");
	}
	engine_release(s);
	session_free(s);
	free(steps.v);
	return o.refused || o.held ? CTL_NO : CTL_OK;
}
