/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_recipients - unit tests of policies/recipients through the engine:
 * the first max recipients of a message pass, every further one gets the
 * reply, and the count starts again with each message.
 *
 * Each case loads a real configuration (no Redis) and sends three messages
 * the way milter/callbacks.c drives a session: the first ends with end of
 * message, the second with an abort, the third with a new MAIL FROM and no
 * abort at all (the MTA does not always send one).  A recipient counts only
 * when nothing refused it; "refused" marks recipients that another policy
 * or the MTA refuses, which callbacks.c therefore does not count.
 */
#include "config.h"

#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "milter/cfg.h"
#include "milter/engine.h"
#include "milter/log.h"
#include "milter/session.h"
#include "milter/stats.h"
#include "tests/testlib.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define BIT(n) (UINT64_C(1) << (n))
#define NMESSAGES 3

struct rcpt_case {
	const char *label;
	const char *policy;        /* the settings after type = "recipients"; */
	unsigned max;
	unsigned nrcpts;           /* recipients per message */
	uint64_t refused;          /* bit i: recipient i is refused elsewhere */
	enum policy_action action;
	const char *reply;         /* reply_format of our refusal */
};

static const struct rcpt_case rcpt_cases[] = {
	{ "max 1", "max = 1; action = \"reject\"; reply = \"550 5.5.3 at most ${limit}\";",
	    1, 4, 0, POLICY_REJECT, "550 5.5.3 at most 1" },
	{ "max 3", "max = 3; action = \"reject\"; reply = \"550 5.5.3 at most ${limit}\";",
	    3, 6, 0, POLICY_REJECT, "550 5.5.3 at most 3" },
	{ "max 100", "max = 100; action = \"tempfail\"; "
	    "reply = \"452 4.5.3 ${policy}: at most ${limit}\";",
	    100, 103, 0, POLICY_TEMPFAIL, "452 4.5.3 rcpts: at most 100" },
	{ "max 3, exactly 3", "max = 3; action = \"reject\";", 3, 3, 0, POLICY_REJECT, NULL },
	{ "max 3, two refused elsewhere", "max = 3; action = \"reject\";",
	    3, 7, BIT(1) | BIT(2), POLICY_REJECT,
	    "550 5.5.3 Too many recipients (at most 3 per message)" },
	{ "max 1, first refused elsewhere", "max = 1; action = \"tempfail\";",
	    1, 3, BIT(0), POLICY_TEMPFAIL,
	    "452 4.5.3 Too many recipients (at most 1 per message)" },
	{ "max 2, every one refused elsewhere", "max = 2; action = \"reject\";",
	    2, 5, BIT(0) | BIT(1) | BIT(2) | BIT(3) | BIT(4), POLICY_REJECT, NULL },
	{ "max 100, refused ones spread out", "max = 100; action = \"reject\";",
	    100, 110, BIT(0) | BIT(7) | BIT(50) | BIT(63), POLICY_REJECT,
	    "550 5.5.3 Too many recipients (at most 100 per message)" },
};

START_TEST(test_recipients)
{
	const struct rcpt_case *c = &rcpt_cases[_i];
	char conf[512], rcpt[64], text[1024];
	struct cfg *cfg;
	struct session *s;
	uint64_t replies = 0;

	snprintf(conf, sizeof(conf), "policies = ( { name = \"rcpts\"; "
	    "type = \"recipients\"; %s } );\n", c->policy);
	cfg = tl_load_config(c->label, conf);
	s = tl_session_new(c->label, cfg);
	cfg_unref(cfg);
	tl_set_client(c->label, s, "198.51.100.7");
	ck_assert_msg(!engine_client_exempt(s), "%s: client exempt", c->label);

	for (unsigned m = 0; m < NMESSAGES; m++) {
		unsigned accepted = 0;

		session_msg_start(s, "<s@example.org>", NULL, NULL);
		for (unsigned i = 0; i < c->nrcpts; i++) {
			bool elsewhere = i < 64 && (c->refused & BIT(i)) != 0;
			enum policy_action want = accepted >= c->max ? c->action : POLICY_NONE;
			struct engine_verdict v;
			enum policy_action got;

			snprintf(rcpt, sizeof(rcpt), "<r%u@example.net>", i);
			session_set_rcpt(s, rcpt);
			got = engine_run(s, POLICY_RCPT, &v);
			ck_assert_msg(got == want, "%s: message %u, recipient %u (%u accepted "
			    "before): %s, expected %s", c->label, m + 1, i + 1, accepted,
			    policy_action_name(got), policy_action_name(want));
			if (got != POLICY_NONE) {
				replies++;
				ck_assert_msg(v.policy != NULL && strcmp(v.policy->name,
				    "rcpts") == 0, "%s: message %u, recipient %u: decided by "
				    "%s", c->label, m + 1, i + 1,
				    v.policy ? v.policy->name : "nothing");
				reply_format(&v.reply, text, sizeof(text));
				if (c->reply != NULL)
					ck_assert_msg(strcmp(text, c->reply) == 0, "%s: message "
					    "%u, recipient %u: reply \"%s\", expected \"%s\"",
					    c->label, m + 1, i + 1, text, c->reply);
				continue;
			}
			/* callbacks.c counts what nobody refused. */
			if (!elsewhere) {
				s->msg.rcpts++;
				accepted++;
			}
		}
		if (m == 0) {
			struct engine_verdict v;

			s->msg.size += 100;
			ck_assert_msg(engine_run(s, POLICY_EOM, &v) == POLICY_NONE,
			    "%s: message %u: refused at end of message", c->label, m + 1);
			session_msg_reset(s);          /* as cb_eom */
		} else if (m == 1) {
			session_msg_reset(s);          /* as cb_abort */
		}
		/* m == 2: the next MAIL FROM alone must start the count again. */
	}
	tl_assert_count(c->label, "rcpts", STATS_CHECKED, (uint64_t)NMESSAGES * c->nrcpts);
	tl_assert_count(c->label, "rcpts", c->action == POLICY_REJECT ? STATS_REJECTED :
	    STATS_TEMPFAILED, replies);
	tl_assert_count(c->label, "rcpts", c->action == POLICY_REJECT ? STATS_TEMPFAILED :
	    STATS_REJECTED, 0);
}
END_TEST

static Suite *
recipients_suite(void)
{
	Suite *s = suite_create("recipients");
	TCase *tc = tcase_create("recipients");

	tcase_add_checked_fixture(tc, NULL, tl_teardown);
	tcase_add_loop_test(tc, test_recipients, 0, NELEM(rcpt_cases));
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	log_open(true, false);
	return tl_run(recipients_suite());
}
