/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_size - unit tests of policies/size through the engine: the SIZE=
 * parameter of MAIL FROM decides at RCPT, the real size at end of message.
 *
 * Each case loads a real configuration (no Redis) and sends one message
 * with two recipients the way milter/callbacks.c drives a session: MAIL
 * with its ESMTP parameters, RCPT twice (a recipient counted only when not
 * refused), the header and body octets, then end of message, which is not
 * reached when every recipient was refused.
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

#define SIZE_CONF \
	"policies = ( { name = \"max-size\"; type = \"size\"; max = \"10K\";\n" \
	"  action = \"reject\"; reply = \"552 5.3.4 ${size} over ${limit}\"; } );\n"

struct size_case {
	const char *label;
	const char *args[3];       /* MAIL FROM parameters, NULL-terminated */
	uint64_t data;             /* header and body octets */
	enum policy_action at_rcpt;   /* for each of the two recipients */
	enum policy_action at_eom;    /* POLICY_NONE too when EOM is not reached */
	const char *reply;         /* reply_format of the refusal; NULL: any */
};

static const struct size_case size_cases[] = {
	/* declared size, max = 10K = 10240 */
	{ "declared max-1", { "SIZE=10239" }, 10239, POLICY_NONE, POLICY_NONE, NULL },
	{ "declared max", { "SIZE=10240" }, 10240, POLICY_NONE, POLICY_NONE, NULL },
	{ "declared max+1", { "SIZE=10241" }, 10241, POLICY_REJECT, POLICY_NONE,
	    "552 5.3.4 10241 over 10K" },
	{ "declared far over", { "SIZE=26214400" }, 0, POLICY_REJECT, POLICY_NONE,
	    "552 5.3.4 26214400 over 10K" },
	{ "lowercase size=", { "size=10241" }, 0, POLICY_REJECT, POLICY_NONE,
	    "552 5.3.4 10241 over 10K" },
	{ "mixed case Size=", { "Size=10241" }, 0, POLICY_REJECT, POLICY_NONE,
	    "552 5.3.4 10241 over 10K" },
	{ "lowercase size= at max", { "size=10240" }, 100, POLICY_NONE, POLICY_NONE, NULL },
	{ "after another parameter", { "BODY=8BITMIME", "SIZE=10241" }, 0,
	    POLICY_REJECT, POLICY_NONE, "552 5.3.4 10241 over 10K" },
	{ "before another parameter", { "SIZE=10241", "SMTPUTF8" }, 0,
	    POLICY_REJECT, POLICY_NONE, "552 5.3.4 10241 over 10K" },
	{ "leading zeros", { "SIZE=0000000010241" }, 0, POLICY_REJECT, POLICY_NONE,
	    "552 5.3.4 10241 over 10K" },
	{ "many leading zeros", { "SIZE=000000000000000000000000000001" }, 1,
	    POLICY_NONE, POLICY_NONE, NULL },
	{ "largest value that fits, minus 9", { "SIZE=18446744073709551606" }, 0,
	    POLICY_REJECT, POLICY_NONE, "552 5.3.4 18446744073709551606 over 10K" },
	/* a declared size that does not fit in 64 bits is over any limit */
	{ "SIZE=UINT64_MAX", { "SIZE=18446744073709551615" }, 0,
	    POLICY_REJECT, POLICY_NONE, NULL },
	{ "20-digit SIZE over 2^64", { "SIZE=99999999999999999999" }, 0,
	    POLICY_REJECT, POLICY_NONE, NULL },
	/* real size at end of message */
	{ "no SIZE=, real max-1", { NULL }, 10239, POLICY_NONE, POLICY_NONE, NULL },
	{ "no SIZE=, real max", { NULL }, 10240, POLICY_NONE, POLICY_NONE, NULL },
	{ "no SIZE=, real max+1", { NULL }, 10241, POLICY_NONE, POLICY_REJECT,
	    "552 5.3.4 10241 over 10K" },
	{ "SIZE=0, empty message", { "SIZE=0" }, 0, POLICY_NONE, POLICY_NONE, NULL },
	{ "SIZE=0, real max+1", { "SIZE=0" }, 10241, POLICY_NONE, POLICY_REJECT,
	    "552 5.3.4 10241 over 10K" },
	{ "declared under, real over", { "SIZE=100" }, 20000, POLICY_NONE, POLICY_REJECT,
	    "552 5.3.4 20000 over 10K" },
	{ "declared max, real max+1", { "SIZE=10240" }, 10241, POLICY_NONE,
	    POLICY_REJECT, "552 5.3.4 10241 over 10K" },
	/* not a size: as if absent, the real size still counts */
	{ "garbage SIZE=12a", { "SIZE=12a" }, 100, POLICY_NONE, POLICY_NONE, NULL },
	{ "garbage SIZE=12a, real max+1", { "SIZE=12a" }, 10241, POLICY_NONE,
	    POLICY_REJECT, "552 5.3.4 10241 over 10K" },
	{ "garbage after a big number", { "SIZE=99999x" }, 100, POLICY_NONE,
	    POLICY_NONE, NULL },
	{ "empty SIZE=", { "SIZE=" }, 100, POLICY_NONE, POLICY_NONE, NULL },
	{ "signed SIZE=+10241", { "SIZE=+10241" }, 100, POLICY_NONE, POLICY_NONE, NULL },
	{ "negative SIZE=-1", { "SIZE=-1" }, 100, POLICY_NONE, POLICY_NONE, NULL },
	{ "space after =", { "SIZE= 10241" }, 100, POLICY_NONE, POLICY_NONE, NULL },
	{ "other parameter named SIZEX", { "SIZEX=10241" }, 100, POLICY_NONE,
	    POLICY_NONE, NULL },
};

/* ${limit} as replies show it, and the default replies. */
struct limit_case {
	const char *label;
	const char *policy;        /* the settings after type = "size"; */
	const char *param;         /* MAIL FROM parameter just over the limit */
	enum policy_action want;
	const char *reply;
};

static const struct limit_case limit_cases[] = {
	{ "bytes", "max = 1000; action = \"reject\"; reply = \"552 5.3.4 ${limit}\";",
	    "SIZE=1001", POLICY_REJECT, "552 5.3.4 1000" },
	{ "10240 written as a number", "max = 10240; action = \"reject\"; "
	    "reply = \"552 5.3.4 ${limit}\";", "SIZE=10241", POLICY_REJECT, "552 5.3.4 10K" },
	{ "not a multiple of 1K", "max = 1536; action = \"reject\"; "
	    "reply = \"552 5.3.4 ${limit}\";", "SIZE=1537", POLICY_REJECT, "552 5.3.4 1536" },
	{ "25M", "max = \"25M\"; action = \"reject\"; reply = \"552 5.3.4 ${limit}\";",
	    "SIZE=26214401", POLICY_REJECT, "552 5.3.4 25M" },
	{ "1G", "max = \"1G\"; action = \"reject\"; reply = \"552 5.3.4 ${limit}\";",
	    "SIZE=1073741825", POLICY_REJECT, "552 5.3.4 1G" },
	{ "1025K", "max = \"1025K\"; action = \"reject\"; reply = \"552 5.3.4 ${limit}\";",
	    "SIZE=1049601", POLICY_REJECT, "552 5.3.4 1025K" },
	{ "default reject reply", "max = \"10K\"; action = \"reject\";", "SIZE=10241",
	    POLICY_REJECT, "552 5.3.4 Message too big for this system (limit 10K)" },
	{ "default tempfail reply", "max = \"10K\"; action = \"tempfail\";", "SIZE=10241",
	    POLICY_TEMPFAIL,
	    "452 4.3.1 Message too big for now (limit 10K)" },
};

/* ---- one message, driven as callbacks.c does */

static struct session *
connect_client(const char *label, struct cfg *c)
{
	struct session *s = tl_session_new(label, c);

	tl_set_client(label, s, "198.51.100.7");
	ck_assert_msg(!engine_client_exempt(s), "%s: client exempt", label);
	return s;
}

/* Run stage and check the verdict; a refusal's reply is checked when want_reply. */
static enum policy_action
stage_verdict(const char *label, const char *what, struct session *s,
    enum policy_stage stage, enum policy_action want, const char *want_reply)
{
	struct engine_verdict v;
	enum policy_action got;
	char text[2048];

	got = engine_run(s, stage, &v);
	ck_assert_msg(got == want, "%s: %s: %s, expected %s", label, what,
	    policy_action_name(got), policy_action_name(want));
	if ((got == POLICY_REJECT || got == POLICY_TEMPFAIL) && want_reply != NULL) {
		reply_format(&v.reply, text, sizeof(text));
		ck_assert_msg(strcmp(text, want_reply) == 0, "%s: %s: reply \"%s\", "
		    "expected \"%s\"", label, what, text, want_reply);
	}
	return got;
}

START_TEST(test_size)
{
	const struct size_case *c = &size_cases[_i];
	struct cfg *cfg = tl_load_config(c->label, SIZE_CONF);
	struct session *s = connect_client(c->label, cfg);
	static const char *const rcpts[] = { "<a@example.net>", "<b@example.net>" };
	uint64_t checked = 0, rejected = 0;

	cfg_unref(cfg);
	session_msg_start(s, "<s@example.org>", c->args, NULL);
	for (size_t i = 0; i < NELEM(rcpts); i++) {
		session_set_rcpt(s, rcpts[i]);
		checked++;
		if (stage_verdict(c->label, rcpts[i], s, POLICY_RCPT, c->at_rcpt,
		    c->reply) == POLICY_NONE)
			s->msg.rcpts++;
		else
			rejected++;
	}
	if (s->msg.rcpts > 0) {
		s->msg.size += c->data;
		checked++;
		if (stage_verdict(c->label, "end of message", s, POLICY_EOM, c->at_eom,
		    c->reply) != POLICY_NONE)
			rejected++;
		session_msg_reset(s);
	}
	tl_assert_count(c->label, "max-size", STATS_CHECKED, checked);
	tl_assert_count(c->label, "max-size", STATS_REJECTED, rejected);
}
END_TEST

START_TEST(test_limit)
{
	const struct limit_case *c = &limit_cases[_i];
	const char *const args[] = { c->param, NULL };
	char conf[512];
	struct cfg *cfg;
	struct session *s;

	snprintf(conf, sizeof(conf), "policies = ( { name = \"max-size\"; "
	    "type = \"size\"; %s } );\n", c->policy);
	cfg = tl_load_config(c->label, conf);
	s = connect_client(c->label, cfg);
	cfg_unref(cfg);
	session_msg_start(s, "<s@example.org>", args, NULL);
	session_set_rcpt(s, "<a@example.net>");
	stage_verdict(c->label, "rcpt", s, POLICY_RCPT, c->want, c->reply);
}
END_TEST

/* The size of one message never leaks into the next. */
START_TEST(test_reset)
{
	static const char *const big[] = { "SIZE=10241", NULL };
	const char *label = "size reset per message";
	struct cfg *cfg = tl_load_config(label, SIZE_CONF);
	struct session *s = connect_client(label, cfg);

	cfg_unref(cfg);
	/* Declared too big, refused, then RSET: the next message declares nothing. */
	session_msg_start(s, "<s@example.org>", big, NULL);
	session_set_rcpt(s, "<a@example.net>");
	stage_verdict(label, "rcpt 1", s, POLICY_RCPT, POLICY_REJECT, NULL);
	session_msg_reset(s);
	session_msg_start(s, "<s@example.org>", NULL, NULL);
	session_set_rcpt(s, "<a@example.net>");
	stage_verdict(label, "rcpt 2", s, POLICY_RCPT, POLICY_NONE, NULL);
	s->msg.rcpts++;
	s->msg.size += 10000;
	stage_verdict(label, "eom 2", s, POLICY_EOM, POLICY_NONE, NULL);
	session_msg_reset(s);
	/* 10000 octets again: the sum of two messages is over, each is not. */
	session_msg_start(s, "<s@example.org>", NULL, NULL);
	session_set_rcpt(s, "<a@example.net>");
	stage_verdict(label, "rcpt 3", s, POLICY_RCPT, POLICY_NONE, NULL);
	s->msg.rcpts++;
	s->msg.size += 10000;
	stage_verdict(label, "eom 3", s, POLICY_EOM, POLICY_NONE, NULL);
	session_msg_reset(s);
	tl_assert_count(label, "max-size", STATS_CHECKED, 5);
	tl_assert_count(label, "max-size", STATS_REJECTED, 1);
}
END_TEST

static Suite *
size_suite(void)
{
	Suite *s = suite_create("size");
	TCase *tc = tcase_create("size");

	tcase_add_checked_fixture(tc, NULL, tl_teardown);
	tcase_add_loop_test(tc, test_size, 0, NELEM(size_cases));
	tcase_add_loop_test(tc, test_limit, 0, NELEM(limit_cases));
	tcase_add_test(tc, test_reset);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	log_open(true, false);
	return tl_run(size_suite());
}
