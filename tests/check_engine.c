/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_engine - unit tests of milter/engine: policy order, dry runs,
 * accept/discard/quarantine, exemptions, statistics and reply expansion.
 *
 * Each scenario loads a real configuration file (no Redis) and drives one
 * session through SMTP steps the way milter/callbacks.c does: the client
 * from a sockaddr, exemption at connect, the authenticated-sender exemption
 * at MAIL, a recipient counted only when it was not refused, header and
 * body octets added to the size, and the message reset after end of
 * message.  Every step states the verdict it must get; every scenario ends
 * with the statistics of its policies, exact except where marked ANY (what
 * a discard or quarantine still waiting for end of message does to the
 * counters of later evaluations is left open).
 */
#include "config.h"

#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "milter/cfg.h"
#include "milter/engine.h"
#include "milter/log.h"
#include "milter/reply.h"
#include "milter/session.h"
#include "milter/stats.h"
#include "tests/testlib.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define ANY TL_ANY                 /* a counter the scenario does not pin down */

enum step_kind { ST_END = 0, ST_CONNECT, ST_HELO, ST_MAIL, ST_RCPT, ST_DATA, ST_EOM, ST_RSET };

struct step {
	enum step_kind kind;
	const char *arg;           /* client address, HELO name, sender or recipient */
	const char *esmtp;         /* MAIL: one parameter ("SIZE=20480"), or NULL */
	const char *sasl;          /* MAIL: authenticated user, or NULL */
	uint64_t bytes;            /* DATA: header and body octets */
	enum policy_action want;
	const char *policy;        /* the deciding policy, when want is not NONE */
	const char *reply;         /* reply_format of a reject or tempfail */
	const char *line0;         /* the first line as sent ('%' doubled), or NULL */
};

#define CONNECT(ip)          { .kind = ST_CONNECT, .arg = (ip) }
#define HELO(name)           { .kind = ST_HELO, .arg = (name) }
#define MAIL(from, param)    { .kind = ST_MAIL, .arg = (from), .esmtp = (param) }
#define MAIL_AUTH(from, user) { .kind = ST_MAIL, .arg = (from), .sasl = (user) }
#define RCPT(to)             { .kind = ST_RCPT, .arg = (to) }
#define RCPT_HIT(to, act, pol, rep) \
	{ .kind = ST_RCPT, .arg = (to), .want = (act), .policy = (pol), .reply = (rep) }
#define RCPT_SENT(to, act, pol, rep, sent) { .kind = ST_RCPT, .arg = (to), \
	.want = (act), .policy = (pol), .reply = (rep), .line0 = (sent) }
#define DATA(n)              { .kind = ST_DATA, .bytes = (n) }
#define EOM                  { .kind = ST_EOM }
#define EOM_HIT(act, pol, rep) { .kind = ST_EOM, .want = (act), .policy = (pol), .reply = (rep) }
#define RSET                 { .kind = ST_RSET }

struct scenario {
	const char *label;
	const char *conf;          /* after listen = ...; */
	struct step steps[24];
	struct tl_counts counts[3];
};

#define LIMIT1_REJECT \
	"{ name = \"limit\"; type = \"recipients\"; max = 1; action = \"reject\"; " \
	"reply = \"550 5.5.3 at most ${limit}\"; }"
#define SIZE10K_REJECT \
	"{ name = \"max-size\"; type = \"size\"; max = \"10K\"; action = \"reject\"; " \
	"reply = \"552 5.3.4 Too big (limit ${limit})\"; }"
#define EXEMPT_POLICIES \
	"exempt = { clients = [ \"192.0.2.0/24\", \"2001:db8::/32\" ]; };\n" \
	"policies = ( " LIMIT1_REJECT ", " SIZE10K_REJECT " );\n"
/* A client of EXEMPT_POLICIES sends two messages; exempt, nothing may refuse. */
#define EXEMPT_STEPS(ip) { CONNECT(ip), HELO("mx.example.org"), \
	MAIL("<s@example.org>", "SIZE=99999"), RCPT("<a@example.net>"), \
	RCPT("<b@example.net>"), RCPT("<c@example.net>"), DATA(50000), EOM, \
	MAIL("<s@example.org>", NULL), RCPT("<a@example.net>"), \
	RCPT("<b@example.net>"), DATA(50000), EOM }
#define EXEMPT_COUNTS { { "limit", 0, 0, 0, 0, 0, 0, 0 }, \
	{ "max-size", 0, 0, 0, 0, 0, 0, 0 } }
/* Not exempt: the declared size is refused at the first recipient. */
#define NOT_EXEMPT_STEPS(ip) { CONNECT(ip), MAIL("<s@example.org>", "SIZE=99999"), \
	RCPT_HIT("<a@example.net>", POLICY_REJECT, "max-size", \
	    "552 5.3.4 Too big (limit 10K)"), RSET }
#define NOT_EXEMPT_COUNTS { { "limit", 1, 0, 0, 0, 0, 0, 0 }, \
	{ "max-size", 1, 1, 0, 0, 0, 0, 0 } }

static const struct scenario scenarios[] = {
	{ "first decisive hit wins",
	    "policies = (\n"
	    "  { name = \"first\"; type = \"recipients\"; max = 1; action = \"reject\";\n"
	    "    reply = \"550 5.5.3 ${policy}: at most ${limit}\"; },\n"
	    "  { name = \"second\"; type = \"recipients\"; max = 1; action = \"tempfail\";\n"
	    "    reply = \"452 4.5.3 second\"; }\n"
	    ");\n",
	    { CONNECT("198.51.100.7"), MAIL("<s@example.org>", NULL),
	      RCPT("<r1@example.net>"),
	      RCPT_HIT("<r2@example.net>", POLICY_REJECT, "first",
		  "550 5.5.3 first: at most 1"),
	      RCPT_HIT("<r3@example.net>", POLICY_REJECT, "first",
		  "550 5.5.3 first: at most 1"),
	      DATA(100), EOM },
	    { { "first", 3, 2, 0, 0, 0, 0, 0 }, { "second", 1, 0, 0, 0, 0, 0, 0 } } },

	{ "dry-run hit is counted, the next real hit decides",
	    "policies = (\n"
	    "  { name = \"trial\"; type = \"recipients\"; max = 1; action = \"reject\";\n"
	    "    reply = \"550 5.5.3 DRY\"; dry_run = true; },\n"
	    "  { name = \"real\"; type = \"recipients\"; max = 2; action = \"tempfail\";\n"
	    "    reply = \"452 4.5.3 real ${limit}\"; }\n"
	    ");\n",
	    { CONNECT("198.51.100.7"), MAIL("<s@example.org>", NULL),
	      RCPT("<r1@example.net>"), RCPT("<r2@example.net>"),
	      RCPT_HIT("<r3@example.net>", POLICY_TEMPFAIL, "real", "452 4.5.3 real 2"),
	      RCPT_HIT("<r4@example.net>", POLICY_TEMPFAIL, "real", "452 4.5.3 real 2"),
	      DATA(100), EOM },
	    { { "trial", 4, 0, 0, 0, 0, 0, 3 }, { "real", 4, 0, 2, 0, 0, 0, 0 } } },

	{ "dry-run discard never acts",
	    "policies = ( { name = \"trial\"; type = \"recipients\"; max = 1;\n"
	    "  action = \"discard\"; dry_run = true; } );\n",
	    { CONNECT("198.51.100.7"), MAIL("<s@example.org>", NULL),
	      RCPT("<r1@example.net>"), RCPT("<r2@example.net>"), RCPT("<r3@example.net>"),
	      DATA(100), EOM },
	    { { "trial", 3, 0, 0, 0, 0, 0, 2 } } },

	/* README "What an accept covers": at RCPT, that recipient only.  Each
	 * recipient is decided afresh, and the end of message runs again. */
	{ "accept at RCPT covers that recipient only",
	    "policies = (\n"
	    "  { name = \"big-ok\"; type = \"size\"; max = 1000; action = \"accept\"; },\n"
	    "  " LIMIT1_REJECT "\n"
	    ");\n",
	    { CONNECT("198.51.100.7"),
	      MAIL("<s@example.org>", "SIZE=5000"),
	      RCPT_HIT("<r1@example.net>", POLICY_ACCEPT, "big-ok", NULL),
	      RCPT_HIT("<r2@example.net>", POLICY_ACCEPT, "big-ok", NULL),
	      RCPT_HIT("<r3@example.net>", POLICY_ACCEPT, "big-ok", NULL), RSET,
	      MAIL("<s@example.org>", NULL), RCPT("<r1@example.net>"),
	      RCPT_HIT("<r2@example.net>", POLICY_REJECT, "limit", "550 5.5.3 at most 1"),
	      DATA(10), EOM,
	      MAIL("<s@example.org>", "SIZE=5000"),
	      RCPT_HIT("<r1@example.net>", POLICY_ACCEPT, "big-ok", NULL),
	      RCPT_HIT("<r2@example.net>", POLICY_ACCEPT, "big-ok", NULL), DATA(5000),
	      EOM_HIT(POLICY_ACCEPT, "big-ok", NULL),
	      MAIL("<s@example.org>", NULL), RCPT("<r1@example.net>"),
	      RCPT_HIT("<r2@example.net>", POLICY_REJECT, "limit", "550 5.5.3 at most 1"),
	      RSET },
	    { { "big-ok", 11, 0, 0, 0, 0, 6, 0 }, { "limit", 4, 2, 0, 0, 0, 0, 0 } } },

	{ "discard at RCPT is applied at end of message",
	    "policies = ( { name = \"drop\"; type = \"recipients\"; max = 1;\n"
	    "  action = \"discard\"; } );\n",
	    { CONNECT("198.51.100.7"), MAIL("<s@example.org>", NULL),
	      RCPT("<r1@example.net>"), RCPT("<r2@example.net>"), RCPT("<r3@example.net>"),
	      DATA(100), EOM_HIT(POLICY_DISCARD, "drop", NULL),
	      MAIL("<s@example.org>", NULL), RCPT("<r1@example.net>"), DATA(100), EOM },
	    { { "drop", ANY, 0, 0, 1, 0, 0, 0 } } },

	{ "quarantine at RCPT is applied at end of message",
	    "policies = ( { name = \"hold\"; type = \"recipients\"; max = 2;\n"
	    "  action = \"quarantine\"; } );\n",
	    { CONNECT("198.51.100.7"), MAIL("<s@example.org>", NULL),
	      RCPT("<r1@example.net>"), RCPT("<r2@example.net>"), RCPT("<r3@example.net>"),
	      RCPT("<r4@example.net>"), DATA(100),
	      EOM_HIT(POLICY_QUARANTINE, "hold", NULL),
	      MAIL("<s@example.org>", NULL), RCPT("<r1@example.net>"), DATA(100), EOM },
	    { { "hold", ANY, 0, 0, 0, 1, 0, 0 } } },

	/* "discarded" counts messages really dropped: none here. */
	{ "pending discard lost at abort",
	    "policies = ( { name = \"drop\"; type = \"recipients\"; max = 1;\n"
	    "  action = \"discard\"; } );\n",
	    { CONNECT("198.51.100.7"), MAIL("<s@example.org>", NULL),
	      RCPT("<r1@example.net>"), RCPT("<r2@example.net>"), RSET,
	      MAIL("<s@example.org>", NULL), RCPT("<r1@example.net>"), DATA(100), EOM },
	    { { "drop", 3, 0, 0, 0, 0, 0, 0 } } },

	{ "discard decided at end of message",
	    "policies = ( { name = \"big-drop\"; type = \"size\"; max = \"10K\";\n"
	    "  action = \"discard\"; } );\n",
	    { CONNECT("198.51.100.7"), MAIL("<s@example.org>", NULL),
	      RCPT("<r1@example.net>"), DATA(10241),
	      EOM_HIT(POLICY_DISCARD, "big-drop", NULL),
	      MAIL("<s@example.org>", "SIZE=20000"), RCPT("<r1@example.net>"),
	      RCPT("<r2@example.net>"), DATA(20000),
	      EOM_HIT(POLICY_DISCARD, "big-drop", NULL) },
	    { { "big-drop", ANY, 0, 0, 2, 0, 0, 0 } } },

	{ "pending discard applies when nothing refuses at EOM",
	    "policies = ( { name = \"drop\"; type = \"recipients\"; max = 1;\n"
	    "  action = \"discard\"; }, " SIZE10K_REJECT " );\n",
	    { CONNECT("198.51.100.7"), MAIL("<s@example.org>", NULL),
	      RCPT("<r1@example.net>"), RCPT("<r2@example.net>"), DATA(10240),
	      EOM_HIT(POLICY_DISCARD, "drop", NULL) },
	    { { "drop", ANY, 0, 0, 1, 0, 0, 0 }, { "max-size", ANY, 0, 0, 0, 0, 0, 0 } } },

	{ "reject at EOM wins over a pending discard",
	    "policies = ( { name = \"drop\"; type = \"recipients\"; max = 1;\n"
	    "  action = \"discard\"; }, " SIZE10K_REJECT " );\n",
	    { CONNECT("198.51.100.7"), MAIL("<s@example.org>", NULL),
	      RCPT("<r1@example.net>"), RCPT("<r2@example.net>"), DATA(20000),
	      EOM_HIT(POLICY_REJECT, "max-size", "552 5.3.4 Too big (limit 10K)") },
	    { { "drop", ANY, 0, 0, ANY, 0, 0, 0 }, { "max-size", ANY, 1, 0, 0, 0, 0, 0 } } },

	/* accept ends evaluation but does not cancel a pending drop. */
	{ "accept at EOM keeps a pending discard",
	    "policies = ( { name = \"drop\"; type = \"recipients\"; max = 1;\n"
	    "  action = \"discard\"; },\n"
	    "  { name = \"ok-big\"; type = \"size\"; max = \"1K\"; action = \"accept\"; } );\n",
	    { CONNECT("198.51.100.7"), MAIL("<s@example.org>", NULL),
	      RCPT("<r1@example.net>"), RCPT("<r2@example.net>"), DATA(2000),
	      EOM_HIT(POLICY_DISCARD, "drop", NULL) },
	    { { "drop", ANY, 0, 0, 1, 0, 0, 0 }, { "ok-big", ANY, 0, 0, 0, 0, 1, 0 } } },

	{ "tempfail at EOM wins over a pending quarantine",
	    "policies = ( { name = \"hold\"; type = \"recipients\"; max = 1;\n"
	    "  action = \"quarantine\"; },\n"
	    "  { name = \"max-size\"; type = \"size\"; max = \"10K\"; action = \"tempfail\";\n"
	    "    reply = \"452 4.3.1 Too big for now\"; } );\n",
	    { CONNECT("198.51.100.7"), MAIL("<s@example.org>", NULL),
	      RCPT("<r1@example.net>"), RCPT("<r2@example.net>"), DATA(20000),
	      EOM_HIT(POLICY_TEMPFAIL, "max-size", "452 4.3.1 Too big for now") },
	    { { "hold", ANY, 0, 0, 0, ANY, 0, 0 }, { "max-size", ANY, 0, 1, 0, 0, 0, 0 } } },

	{ "exempt IPv4 client", EXEMPT_POLICIES, EXEMPT_STEPS("192.0.2.77"),
	    EXEMPT_COUNTS },
	{ "exempt IPv6 client", EXEMPT_POLICIES, EXEMPT_STEPS("2001:db8:ffff::1"),
	    EXEMPT_COUNTS },
	{ "exempt IPv4-mapped IPv6 client", EXEMPT_POLICIES,
	    EXEMPT_STEPS("::ffff:192.0.2.200"), EXEMPT_COUNTS },
	{ "IPv4 client next to the exempt network", EXEMPT_POLICIES,
	    NOT_EXEMPT_STEPS("192.0.3.1"), NOT_EXEMPT_COUNTS },
	{ "IPv6 client next to the exempt network", EXEMPT_POLICIES,
	    NOT_EXEMPT_STEPS("2001:db9::1"), NOT_EXEMPT_COUNTS },
	{ "unknown client address", EXEMPT_POLICIES, NOT_EXEMPT_STEPS(NULL),
	    NOT_EXEMPT_COUNTS },

	{ "authenticated sender exempt",
	    "exempt = { authenticated = true; };\n"
	    "policies = ( " LIMIT1_REJECT " );\n",
	    { CONNECT("198.51.100.7"), MAIL_AUTH("<s@example.org>", "alice"),
	      RCPT("<r1@example.net>"), RCPT("<r2@example.net>"), RCPT("<r3@example.net>"),
	      DATA(100), EOM,
	      MAIL("<s@example.org>", NULL), RCPT("<r1@example.net>"),
	      RCPT_HIT("<r2@example.net>", POLICY_REJECT, "limit", "550 5.5.3 at most 1"),
	      RSET },
	    { { "limit", 2, 1, 0, 0, 0, 0, 0 } } },

	{ "authenticated sender not exempt by default",
	    "policies = ( " LIMIT1_REJECT " );\n",
	    { CONNECT("198.51.100.7"), MAIL_AUTH("<s@example.org>", "alice"),
	      RCPT("<r1@example.net>"),
	      RCPT_HIT("<r2@example.net>", POLICY_REJECT, "limit", "550 5.5.3 at most 1"),
	      DATA(100), EOM },
	    { { "limit", 2, 1, 0, 0, 0, 0, 0 } } },

	{ "counters by stage",
	    "policies = (\n"
	    "  { name = \"few\"; type = \"recipients\"; max = 3; action = \"tempfail\"; },\n"
	    "  { name = \"max-size\"; type = \"size\"; max = 10240; action = \"reject\"; }\n"
	    ");\n",
	    { CONNECT("198.51.100.7"), HELO("mx.example.org"), MAIL("<s@example.org>", NULL),
	      RCPT("<r1@example.net>"), RCPT("<r2@example.net>"), RCPT("<r3@example.net>"),
	      RCPT_HIT("<r4@example.net>", POLICY_TEMPFAIL, "few",
		  "452 4.5.3 Too many recipients (at most 3 per message)"),
	      DATA(10241),
	      EOM_HIT(POLICY_REJECT, "max-size",
		  "552 5.3.4 Message too big for this system (limit 10K)") },
	    { { "few", 4, 0, 1, 0, 0, 0, 0 }, { "max-size", 4, 1, 0, 0, 0, 0, 0 } } },

	{ "size variables",
	    "policies = ( { name = \"max-size\"; type = \"size\"; max = 10240;\n"
	    "  action = \"reject\";\n"
	    "  reply = \"552 5.3.4 ${size} > ${limit} for <${sender}> "
	    "<${rcpt}> (${policy})\"; } );\n",
	    { CONNECT("198.51.100.7"), MAIL("<s@example.org>", "SIZE=20480"),
	      RCPT_HIT("<r@example.net>", POLICY_REJECT, "max-size",
		  "552 5.3.4 20480 > 10K for <s@example.org> <r@example.net> (max-size)"),
	      RSET, MAIL("<s@example.org>", NULL), RCPT("<r@example.net>"), DATA(10241),
	      EOM_HIT(POLICY_REJECT, "max-size",
		  "552 5.3.4 10241 > 10K for <s@example.org> <> (max-size)") },
	    { { "max-size", 3, 2, 0, 0, 0, 0, 0 } } },

	/* ---- what an accept covers (README) */
	{ "accept at RCPT: postmaster does not lift the recipient count",
	    "policies = (\n"
	    "  { name = \"postmaster\"; type = \"block\"; match = \"rcpt\";\n"
	    "    entries = [ \"postmaster@d.example\" ]; action = \"accept\"; },\n"
	    "  { name = \"max3\"; type = \"recipients\"; max = 3; action = \"tempfail\";\n"
	    "    reply = \"452 4.5.3 at most ${limit}\"; }\n"
	    ");\n",
	    { CONNECT("198.51.100.7"), MAIL("<s@example.org>", NULL),
	      RCPT_HIT("<postmaster@d.example>", POLICY_ACCEPT, "postmaster", NULL),
	      RCPT("<r2@d.example>"), RCPT("<r3@d.example>"),
	      RCPT_HIT("<r4@d.example>", POLICY_TEMPFAIL, "max3", "452 4.5.3 at most 3"),
	      RCPT_HIT("<r5@d.example>", POLICY_TEMPFAIL, "max3", "452 4.5.3 at most 3"),
	      RCPT_HIT("<r6@d.example>", POLICY_TEMPFAIL, "max3", "452 4.5.3 at most 3"),
	      DATA(100), EOM },
	    { { "postmaster", 6, 0, 0, 0, 0, 1, 0 }, { "max3", 5, 0, 3, 0, 0, 0, 0 } } },
	{ "accept at RCPT: the size at end of message still applies",
	    "policies = (\n"
	    "  { name = \"postmaster\"; type = \"block\"; match = \"rcpt\";\n"
	    "    entries = [ \"postmaster@d.example\" ]; action = \"accept\"; },\n"
	    "  { name = \"max-size\"; type = \"size\"; max = \"20K\"; action = \"reject\";\n"
	    "    reply = \"552 5.3.4 Too big (limit ${limit})\"; }\n"
	    ");\n",
	    { CONNECT("198.51.100.7"), MAIL("<s@example.org>", NULL),
	      RCPT_HIT("<postmaster@d.example>", POLICY_ACCEPT, "postmaster", NULL),
	      RCPT("<other@d.example>"), DATA(60000),
	      EOM_HIT(POLICY_REJECT, "max-size", "552 5.3.4 Too big (limit 20K)"),
	      MAIL("<s@example.org>", "SIZE=60000"),
	      RCPT_HIT("<postmaster@d.example>", POLICY_REJECT, "max-size",
		  "552 5.3.4 Too big (limit 20K)"), RSET },
	    { { "postmaster", 3, 0, 0, 0, 0, 2, 0 }, { "max-size", 4, 2, 0, 0, 0, 0, 0 } } },
	{ "accept at MAIL covers the message, the next message is judged again",
	    "policies = (\n"
	    "  { name = \"trusted\"; type = \"block\"; match = \"sender\";\n"
	    "    entries = [ \"@trusted.example\" ]; action = \"accept\"; },\n"
	    "  " LIMIT1_REJECT ",\n"
	    "  " SIZE10K_REJECT "\n"
	    ");\n",
	    { CONNECT("198.51.100.7"),
	      { .kind = ST_MAIL, .arg = "<a@Trusted.Example.>", .want = POLICY_ACCEPT,
		.policy = "trusted" },
	      RCPT("<r1@example.net>"), RCPT("<r2@example.net>"), DATA(50000), EOM,
	      MAIL("<a@other.example>", NULL), RCPT("<r1@example.net>"),
	      RCPT_HIT("<r2@example.net>", POLICY_REJECT, "limit", "550 5.5.3 at most 1"),
	      DATA(50000), EOM_HIT(POLICY_REJECT, "max-size", "552 5.3.4 Too big (limit 10K)") },
	    { { "trusted", 2, 0, 0, 0, 0, 1, 0 }, { "limit", 2, 1, 0, 0, 0, 0, 0 },
	      { "max-size", 2, 1, 0, 0, 0, 0, 0 } } },
	{ "a discard at connect is not undone by an allowed sender",
	    "policies = (\n"
	    "  { name = \"drop\"; type = \"block\"; match = \"client\";\n"
	    "    entries = [ \"198.51.100.0/24\" ]; action = \"discard\"; },\n"
	    "  { name = \"trusted\"; type = \"block\"; match = \"sender\";\n"
	    "    entries = [ \"@trusted.example\" ]; action = \"accept\"; }\n"
	    ");\n",
	    { CONNECT("198.51.100.7"),
	      { .kind = ST_MAIL, .arg = "<a@trusted.example>", .want = POLICY_ACCEPT,
		.policy = "trusted" },
	      RCPT("<r@example.net>"), DATA(100), EOM_HIT(POLICY_DISCARD, "drop", NULL) },
	    { { "drop", 1, 0, 0, 1, 0, 0, 0 }, { "trusted", 1, 0, 0, 0, 0, 1, 0 } } },
	{ "a quarantine at connect is not undone by an allowed HELO",
	    "policies = (\n"
	    "  { name = \"hold\"; type = \"block\"; match = \"client\";\n"
	    "    entries = [ \"198.51.100.0/24\" ]; action = \"quarantine\"; },\n"
	    "  { name = \"known\"; type = \"block\"; match = \"helo\";\n"
	    "    entries = [ \"mx.known.example\" ]; action = \"accept\"; }\n"
	    ");\n",
	    { CONNECT("198.51.100.7"),
	      { .kind = ST_HELO, .arg = "MX.Known.Example.", .want = POLICY_ACCEPT,
		.policy = "known" },
	      MAIL("<a@example.org>", NULL), RCPT("<r@example.net>"), DATA(100),
	      EOM_HIT(POLICY_QUARANTINE, "hold", NULL),
	      MAIL("<b@example.org>", NULL), RCPT("<r@example.net>"), DATA(100),
	      EOM_HIT(POLICY_QUARANTINE, "hold", NULL) },
	    { { "hold", 1, 0, 0, 0, 2, 0, 0 }, { "known", 1, 0, 0, 0, 0, 1, 0 } } },

	{ "hostile sender and recipient",
	    "policies = ( { name = \"limit\"; type = \"recipients\"; max = 1;\n"
	    "  action = \"reject\";\n"
	    "  reply = \"550 5.5.3 ${sender} -> ${rcpt} from ${client_ip}: 100% full\"; } );\n",
	    { CONNECT("2001:db8::25"),
	      MAIL("<evil%s\r\n250 2.0.0 ok\x01@example.org>", NULL),
	      RCPT("<a@example.net>"),
	      RCPT_SENT("<x%n%\r\n.\r\nQUIT\x01j\xc3\xbc@y>", POLICY_REJECT, "limit",
		  "550 5.5.3 evil%s??250 2.0.0 ok?@example.org -> x%n%??.??quit?j??@y "
		  "from 2001:db8::25: 100% full",
		  "evil%%s??250 2.0.0 ok?@example.org -> x%%n%%??.??quit?j??@y "
		  "from 2001:db8::25: 100%% full"),
	      RSET },
	    { { "limit", 2, 1, 0, 0, 0, 0, 0 } } },
};

static void
assert_reply_safe(const char *label, size_t k, const struct reply_out *out)
{
	size_t prefix = strlen(out->code) + 1 + (out->xcode[0] ? strlen(out->xcode) + 1 : 0);
	size_t total = 0;

	for (size_t i = 0; i < out->nlines; i++) {
		size_t run = 0, len = strlen(out->lines[i]);
		for (const char *p = out->lines[i]; *p != '\0'; p++) {
			unsigned char c = (unsigned char)*p;
			ck_assert_msg(c >= 0x20 && c <= 0x7e, "%s: step %zu: reply octet "
			    "0x%02x", label, k, c);
			if (c == '%') {
				run++;
				continue;
			}
			ck_assert_msg(run % 2 == 0, "%s: step %zu: lone '%%' in reply",
			    label, k);
			run = 0;
		}
		ck_assert_msg(run % 2 == 0, "%s: step %zu: reply ends in a lone '%%'",
		    label, k);
		ck_assert_msg(prefix + len <= REPLY_MAX_LINE, "%s: step %zu: reply line "
		    "too long", label, k);
		total += prefix + len + 2;
	}
	ck_assert_msg(total <= REPLY_MAX_TOTAL, "%s: step %zu: reply of %zu octets",
	    label, k, total);
}

static void
run_step(const char *label, size_t k, struct session *s, const struct step *st)
{
	static const char *const kind_names[] = {
		"end", "connect", "helo", "mail", "rcpt", "data", "eom", "rset",
	};
	const char *what = kind_names[st->kind];
	struct engine_verdict v;
	enum policy_stage stage = POLICY_CONNECT;
	enum policy_action got;
	char text[2048];

	switch (st->kind) {
	case ST_END:
		return;
	case ST_CONNECT:
		if (!tl_step_connect(label, k, s, st->arg, st->want))
			return;
		stage = POLICY_CONNECT;
		break;
	case ST_HELO:
		session_set_helo(s, st->arg);
		stage = POLICY_HELO;
		break;
	case ST_MAIL: {
		const char *const args[] = { st->esmtp, NULL };
		session_msg_start(s, st->arg, args, st->sasl);
		/* As cb_envfrom does. */
		if (s->cfg->exempt.authenticated && s->msg.sasl_user[0] != '\0')
			s->msg.exempt = true;
		stage = POLICY_MAIL;
		break;
	}
	case ST_RCPT:
		session_set_rcpt(s, st->arg);
		stage = POLICY_RCPT;
		break;
	case ST_DATA:
		s->msg.size += st->bytes;
		return;
	case ST_EOM:
		stage = POLICY_EOM;
		break;
	case ST_RSET:
		session_msg_reset(s);
		return;
	}

	got = tl_engine_step(label, k, what, st->arg, s, stage, &v, st->want, st->policy);
	if (got == POLICY_REJECT || got == POLICY_TEMPFAIL) {
		assert_reply_safe(label, k, &v.reply);
		reply_format(&v.reply, text, sizeof(text));
		if (st->reply != NULL)
			ck_assert_msg(strcmp(text, st->reply) == 0, "%s: step %zu (%s): "
			    "reply \"%s\", expected \"%s\"", label, k, what, text, st->reply);
		if (st->line0 != NULL)
			ck_assert_msg(v.reply.nlines >= 1 &&
			    strcmp(v.reply.lines[0], st->line0) == 0, "%s: step %zu (%s): "
			    "sent \"%s\", expected \"%s\"", label, k, what,
			    v.reply.nlines ? v.reply.lines[0] : "", st->line0);
	}
	tl_step_done(s, stage, got);
}

START_TEST(test_scenario)
{
	const struct scenario *sc = &scenarios[_i];
	struct cfg *c = tl_load_config(sc->label, sc->conf);
	struct session *s = tl_session_new(sc->label, c);

	cfg_unref(c);              /* the session holds its own reference */
	for (size_t k = 0; k < NELEM(sc->steps) && sc->steps[k].kind != ST_END; k++)
		run_step(sc->label, k, s, &sc->steps[k]);
	for (size_t i = 0; i < NELEM(sc->counts) && sc->counts[i].policy != NULL; i++)
		tl_assert_counts(sc->label, &sc->counts[i]);
}
END_TEST

static Suite *
engine_suite(void)
{
	Suite *s = suite_create("engine");
	TCase *tc = tcase_create("scenarios");

	tcase_add_checked_fixture(tc, NULL, tl_teardown);
	tcase_add_loop_test(tc, test_scenario, 0, NELEM(scenarios));
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	log_open(true, false);
	return tl_run(engine_suite());
}
