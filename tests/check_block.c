/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check_block - unit tests of the block policy type (policies/block.c) as
 * the daemon uses it: loaded by milter/cfg from `entries` and `file`,
 * evaluated by milter/engine at the SMTP stage its match kind names.
 *
 * What the matcher itself matches is check_matcher's business; here:
 *  - configuration errors, each as "path:line: " of the configuration, or of
 *    the list file's line for a bad line in `file`;
 *  - decisions through the engine, driven the way milter/callbacks.c drives
 *    it: the client at connect, the HELO name at HELO, the sender and SASL
 *    user at MAIL, each recipient at RCPT; every step states the verdict it
 *    must get, so a policy that decides at the wrong stage fails;
 *  - allow lists (action accept) before block lists, across stages and
 *    within one stage in file order;
 *  - reply expansion, statistics counters, dry runs and exemptions;
 *  - reload semantics at the cfg level: a changed list file with a bad line
 *    fails cfg_load with "path:LINE:" and the snapshot in force still
 *    decides with the old list; cfg_files_changed sees modification times.
 *
 * Cases are tables run with tcase_add_loop_test; each failure message starts
 * with the case label.  Every file lives in a private mkdtemp directory that
 * main() makes before the tests and removes after them.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "milter/cfg.h"
#include "milter/engine.h"
#include "milter/log.h"
#include "milter/reply.h"
#include "milter/session.h"
#include "milter/stats.h"
#include "tests/testlib.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static char tmpdir[] = "/tmp/check_block.XXXXXX";

/* ---- files and loading */

#define LISTEN "listen = \"unix:/run/policy-milter/test.sock\";\n"
static struct tl_reports rep;

/* Every report of the last load, one a line, for failure messages. */
static const char *
all_reports(void)
{
	return tl_reports_text(&rep, 500);
}

static void
path_of(const char *name, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/%s", tmpdir, name);
}

/*
 * Write text to tmpdir/name; "@LIST@" in it stands for list (may be NULL
 * when the text has none).  Returns the path (static buffer).
 */
static const char *
write_file(const char *label, const char *name, const char *text, const char *list)
{
	static char path[4096];
	FILE *fp;

	path_of(name, path, sizeof(path));
	fp = fopen(path, "w");
	ck_assert_msg(fp != NULL, "%s: %s: %s", label, path, strerror(errno));
	for (const char *p = text; *p != '\0'; p++) {
		if (list != NULL && strncmp(p, "@LIST@", 6) == 0) {
			fputs(list, fp);
			p += 5;
		} else {
			fputc(*p, fp);
		}
	}
	ck_assert_msg(fclose(fp) == 0, "%s: %s: %s", label, path, strerror(errno));
	return path;
}

/* Load tmpdir/name holding LISTEN + text, collecting reports into rep. */
static struct cfg *
load_conf(const char *label, const char *name, const char *text, const char *list,
    struct cfg *prev, char *path, size_t pathlen)
{
	char *full;
	size_t n = strlen(LISTEN) + strlen(text) + 1;

	full = malloc(n);
	ck_assert_msg(full != NULL, "%s: out of memory", label);
	snprintf(full, n, "%s%s", LISTEN, text);
	snprintf(path, pathlen, "%s", write_file(label, name, full, list));
	free(full);
	memset(&rep, 0, sizeof(rep));
	return cfg_load(path, prev, tl_collect, &rep);
}

/* Set a file's modification time to sec.nsec. */
static void
set_mtime(const char *label, const char *path, time_t sec, long nsec)
{
	struct timespec ts[2] = { { sec, nsec }, { sec, nsec } };

	ck_assert_msg(utimensat(AT_FDCWD, path, ts, 0) == 0, "%s: utimensat %s: %s",
	    label, path, strerror(errno));
}

/* ---- configuration errors */

/* One policy on line 2 of the configuration. */
#define POL(body) "policies = ( { name = \"blocked\"; type = \"block\"; " body " } );\n"

static const struct {
	const char *label;
	const char *list;          /* contents of the list file @LIST@, or NULL */
	const char *conf;          /* after LISTEN */
	bool in_list;              /* the first error names the list file, else the conf */
	unsigned line;             /* its line; 0: "path: " without a line */
	const char *want;          /* in the first error */
	int nerrors;
	unsigned line2;            /* the second error's line in the list file, if any */
	const char *want2;
} bad[] = {
	{ "bad match", NULL,
	    POL("match = \"envelope\"; entries = [ \"a@example.com\" ]; action = \"reject\";"),
	    false, 2, "match must be one of sender, sender_domain, client, helo, rcpt, "
	    "rcpt_domain, sasl_user, not \"envelope\"", 1, 0, NULL },
	{ "match in upper case", NULL,
	    POL("match = \"Sender\"; entries = [ \"a@example.com\" ]; action = \"reject\";"),
	    false, 2, "not \"Sender\"", 1, 0, NULL },
	{ "match missing", NULL,
	    POL("entries = [ \"a@example.com\" ]; action = \"reject\";"),
	    false, 2, "required setting \"match\" is missing", 1, 0, NULL },
	{ "match a number", NULL,
	    POL("match = 1; entries = [ \"a@example.com\" ]; action = \"reject\";"),
	    false, 2, "match must be a string, not a number", 1, 0, NULL },
	{ "no entries and no file", NULL,
	    POL("match = \"sender\"; action = \"reject\";"),
	    false, 2, "a block policy needs entries, a file or redis = true", 1, 0, NULL },
	{ "empty entries and no file", NULL,
	    POL("match = \"sender\"; entries = [ ]; action = \"reject\";"),
	    false, 2, "a block policy needs entries, a file or redis = true", 1, 0, NULL },
	{ "inline, one entry a line: the bad entry's own line", NULL,
	    "policies = ( { name = \"blocked\"; type = \"block\"; match = \"sender\";\n"
	    "  entries = [\n"
	    "    \"a@example.com\",\n"
	    "    \"not an address\",\n"
	    "    \"@example.org\"\n"
	    "  ]; action = \"reject\"; } );\n",
	    false, 5, "entries: \"not an address\" contains white space", 1, 0, NULL },
	{ "inline: an IP address in a sender list", NULL,
	    POL("match = \"sender\"; entries = [ \"a@example.com\", \"192.0.2.1\" ]; "
	    "action = \"reject\";"),
	    false, 2, "entries: \"192.0.2.1\" is an IP address or network", 1, 0, NULL },
	{ "inline: host bits set in a client network", NULL,
	    POL("match = \"client\"; entries = [ \"192.0.2.1/24\" ]; action = \"reject\";"),
	    false, 2, "did you mean 192.0.2.0/24?", 1, 0, NULL },
	{ "inline: not an IP address in a client list", NULL,
	    POL("match = \"client\"; entries = [ \"mail.example.com\" ]; action = \"reject\";"),
	    false, 2, "\"mail.example.com\" is not an IP address or network", 1, 0, NULL },
	{ "inline: the null sender in a sender_domain list", NULL,
	    POL("match = \"sender_domain\"; entries = [ \"<>\" ]; action = \"reject\";"),
	    false, 2, "the null sender", 1, 0, NULL },
	{ "inline: an address in a rcpt_domain list", NULL,
	    POL("match = \"rcpt_domain\"; entries = [ \"a@example.com\" ]; "
	    "action = \"reject\";"),
	    false, 2, "\"a@example.com\" is an address", 1, 0, NULL },
	{ "inline: a bad regex", NULL,
	    POL("match = \"helo\"; entries = [ \"/a(b/\" ]; action = \"reject\";"),
	    false, 2, "bad regex", 1, 0, NULL },
	{ "inline: an unknown regex flag", NULL,
	    POL("match = \"helo\"; entries = [ \"/ab/x\" ]; action = \"reject\";"),
	    false, 2, "unknown flag 'x'", 1, 0, NULL },
	{ "inline: white space inside an entry", NULL,
	    POL("match = \"sender\"; entries = [ \"john doe@example.com\" ]; "
	    "action = \"reject\";"),
	    false, 2, "white space", 1, 0, NULL },
	{ "inline: an empty entry", NULL,
	    POL("match = \"sender\"; entries = [ \"  \" ]; action = \"reject\";"),
	    false, 2, "empty entry", 1, 0, NULL },
	{ "unknown setting", NULL,
	    POL("match = \"sender\"; entry = [ \"a@example.com\" ]; action = \"reject\";"),
	    false, 2, "unknown setting \"entry\"", 1, 0, NULL },
	{ "reply with action accept", NULL,
	    POL("match = \"client\"; entries = [ \"192.0.2.0/24\" ]; action = \"accept\"; "
	    "reply = \"550 5.7.1 no\";"),
	    false, 2, "reply is only sent with action reject or tempfail", 1, 0, NULL },
	{ "reject with a 4xx reply", NULL,
	    POL("match = \"sender\"; entries = [ \"a@example.com\" ]; action = \"reject\"; "
	    "reply = \"450 4.7.1 later\";"),
	    false, 2, "needs a 5xx", 1, 0, NULL },
	{ "unknown variable in the reply", NULL,
	    POL("match = \"sender\"; entries = [ \"a@example.com\" ]; action = \"reject\"; "
	    "reply = \"550 5.7.1 ${helo} refused\";"),
	    false, 2, "unknown variable ${helo}", 1, 0, NULL },

	/* List files: the error is the file's own path and line. */
	{ "file: one bad line after comments and blanks",
	    "# blocked senders\n"
	    "\n"
	    "spam@example.com\n"
	    "  @bad.example  \n"
	    "bad entry here\n"
	    ".bad2.example\n",
	    POL("match = \"sender\"; file = \"@LIST@\"; action = \"reject\";"),
	    true, 5, "white space", 1, 0, NULL },
	{ "file: an IP address in a sender list",
	    "spam@example.com\n192.0.2.1\n",
	    POL("match = \"sender\"; file = \"@LIST@\"; action = \"reject\";"),
	    true, 2, "\"192.0.2.1\" is an IP address or network", 1, 0, NULL },
	{ "file: a bad regex",
	    "mail.example.com\n/x[/i\n",
	    POL("match = \"helo\"; file = \"@LIST@\"; action = \"reject\";"),
	    true, 2, "bad regex", 1, 0, NULL },
	{ "file: host bits set in a client network",
	    "192.0.2.0/24\n# more\n2001:db8::1/32\n",
	    POL("match = \"client\"; file = \"@LIST@\"; action = \"reject\";"),
	    true, 3, "host bits", 1, 0, NULL },
	{ "file: every bad line in one run",
	    "@\n"
	    "ok@example.com\n"
	    "x@y@z.example\n",
	    POL("match = \"rcpt\"; file = \"@LIST@\"; action = \"reject\";"),
	    true, 1, "the domain is empty", 2, 3, "more than one @" },
	{ "file: bad line with good inline entries",
	    "<>\n",
	    POL("match = \"rcpt_domain\"; entries = [ \"example.com\" ]; "
	    "file = \"@LIST@\"; action = \"reject\";"),
	    true, 1, "the null sender", 1, 0, NULL },
	{ "file: CRLF line ends still name the line",
	    "a@example.com\r\nb@example.com\r\n<a@example.com>\r\n",
	    POL("match = \"sender\"; file = \"@LIST@\"; action = \"reject\";"),
	    true, 3, "<a@example.com>", 1, 0, NULL },
	{ "file: missing", NULL,       /* no list: @LIST@ names a file that is not there */
	    POL("match = \"sender\"; file = \"@LIST@\"; action = \"reject\";"),
	    true, 0, "cannot open: No such file or directory", 1, 0, NULL },
};

START_TEST(bad_config)
{
	const char *label = bad[_i].label;
	char name[64], listname[64], list[4096], path[4096], prefix[8300];
	const char *target;
	struct cfg *c;

	snprintf(listname, sizeof(listname), "bad-%02d.list", _i);
	path_of(listname, list, sizeof(list));
	unlink(list);
	if (bad[_i].list != NULL)
		write_file(label, listname, bad[_i].list, NULL);
	snprintf(name, sizeof(name), "bad-%02d.conf", _i);
	c = load_conf(label, name, bad[_i].conf, list, NULL, path, sizeof(path));
	if (c != NULL)
		cfg_unref(c);
	ck_assert_msg(c == NULL, "%s: loaded; reports:%s", label, all_reports());
	ck_assert_msg(rep.nerr == bad[_i].nerrors, "%s: %d errors, want %d:%s", label,
	    rep.nerr, bad[_i].nerrors, all_reports());
	target = bad[_i].in_list ? list : path;
	if (bad[_i].line != 0)
		snprintf(prefix, sizeof(prefix), "%s:%u: ", target, bad[_i].line);
	else
		snprintf(prefix, sizeof(prefix), "%s: ", target);
	ck_assert_msg(strncmp(rep.err[0], prefix, strlen(prefix)) == 0,
	    "%s: error does not start with \"%s\":%s", label, prefix, all_reports());
	ck_assert_msg(strstr(rep.err[0], bad[_i].want) != NULL,
	    "%s: error lacks \"%s\":%s", label, bad[_i].want, all_reports());
	if (bad[_i].want2 != NULL) {
		snprintf(prefix, sizeof(prefix), "%s:%u: ", list, bad[_i].line2);
		ck_assert_msg(strncmp(rep.err[1], prefix, strlen(prefix)) == 0 &&
		    strstr(rep.err[1], bad[_i].want2) != NULL, "%s: second error is not "
		    "\"%s...%s\":%s", label, prefix, bad[_i].want2, all_reports());
	}
	stats_reset();
}
END_TEST

/* A file of more than 100 bad lines: 100 reported, then how many more. */
START_TEST(many_bad_lines)
{
	const char *label = "file: 150 bad lines";
	char list[4096], path[4096], prefix[4200], *text;
	size_t n = 0, cap = 150 * 16 + 1;
	struct cfg *c;

	text = malloc(cap);
	ck_assert(text != NULL);
	for (int i = 0; i < 150; i++)
		n += (size_t)snprintf(text + n, cap - n, "bad%d\n", i);
	snprintf(list, sizeof(list), "%s", write_file(label, "many.list", text, NULL));
	free(text);
	c = load_conf(label, "many.conf",
	    POL("match = \"sender\"; file = \"@LIST@\"; action = \"reject\";"), list,
	    NULL, path, sizeof(path));
	if (c != NULL)
		cfg_unref(c);
	ck_assert_msg(c == NULL, "%s: loaded", label);
	ck_assert_msg(rep.nerr == 101, "%s: %d reports, want 100 lines and a summary",
	    label, rep.nerr);
	for (int i = 0; i < 100; i++) {
		snprintf(prefix, sizeof(prefix), "%s:%d: \"bad%d\"", list, i + 1, i);
		ck_assert_msg(strncmp(rep.err[i], prefix, strlen(prefix)) == 0,
		    "%s: report %d is \"%s\", want \"%s...\"", label, i, rep.err[i], prefix);
	}
	snprintf(prefix, sizeof(prefix), "%s: 50 more bad lines not shown", list);
	ck_assert_msg(strcmp(rep.err[100], prefix) == 0, "%s: last report \"%s\", want "
	    "\"%s\"", label, rep.err[100], prefix);
	stats_reset();
}
END_TEST

/* ---- decisions through the engine */

enum step_kind { ST_END = 0, ST_CONNECT, ST_HELO, ST_MAIL, ST_RCPT, ST_EOM, ST_RSET };

struct step {
	enum step_kind kind;
	const char *arg;           /* client address, HELO name, sender or recipient */
	const char *sasl;          /* MAIL: the authenticated user, or NULL */
	enum policy_action want;
	const char *policy;        /* the deciding policy when want is not NONE */
	const char *reply;         /* reply_format of a reject or tempfail, or NULL */
};

#define CONNECT(ip)               { .kind = ST_CONNECT, .arg = (ip) }
#define CONNECT_HIT(ip, a, p, r)  { .kind = ST_CONNECT, .arg = (ip), .want = (a), \
	.policy = (p), .reply = (r) }
#define HELO(n)                   { .kind = ST_HELO, .arg = (n) }
#define HELO_HIT(n, a, p, r)      { .kind = ST_HELO, .arg = (n), .want = (a), \
	.policy = (p), .reply = (r) }
#define MAIL(f)                   { .kind = ST_MAIL, .arg = (f) }
#define MAIL_HIT(f, a, p, r)      { .kind = ST_MAIL, .arg = (f), .want = (a), \
	.policy = (p), .reply = (r) }
#define MAIL_AUTH(f, u)           { .kind = ST_MAIL, .arg = (f), .sasl = (u) }
#define MAIL_AUTH_HIT(f, u, a, p, r) { .kind = ST_MAIL, .arg = (f), .sasl = (u), \
	.want = (a), .policy = (p), .reply = (r) }
#define RCPT(t)                   { .kind = ST_RCPT, .arg = (t) }
#define RCPT_HIT(t, a, p, r)      { .kind = ST_RCPT, .arg = (t), .want = (a), \
	.policy = (p), .reply = (r) }
#define EOM                       { .kind = ST_EOM }
#define EOM_HIT(a, p)             { .kind = ST_EOM, .want = (a), .policy = (p) }
#define RSET                      { .kind = ST_RSET }

#define REJ POLICY_REJECT
#define TMP POLICY_TEMPFAIL
#define ACC POLICY_ACCEPT
#define ANY TL_ANY                 /* a counter the scenario leaves open */

struct scenario {
	const char *label;
	const char *list;          /* contents of @LIST@, or NULL */
	const char *conf;          /* after LISTEN */
	struct step steps[20];
	struct tl_counts counts[3];
};

/* One block policy "b" of match kind m with entries e (a libconfig list). */
#define BLOCK(m, e, rest) \
	"policies = ( { name = \"b\"; type = \"block\"; match = \"" m "\";\n" \
	"  entries = " e "; " rest " } );\n"
#define B_REPLY "action = \"reject\"; reply = \"550 5.7.1 ${policy} refused it\";"
#define B_HIT "550 5.7.1 b refused it"

/* Sender list: every entry kind an address list takes. */
#define SENDERS BLOCK("sender", "[ \"spam@example.com\", \"@bad.example\", " \
	"\".bad2.example\", \"<>\", \"\\\"john doe\\\"@example.com\", " \
	"\"UPPER@Example.ORG\", \"/^bounce-[0-9]+@lists\\\\.example$/i\" ]", B_REPLY)

/* Sender: the whole message flow, the policy hit only at MAIL. */
#define SENDER_HIT(from) { CONNECT("198.51.100.7"), HELO("mx.example.org"), \
	MAIL_HIT(from, REJ, "b", B_HIT), MAIL("<ok@example.org>"), RCPT("<r@example.net>"), \
	EOM }
#define SENDER_MISS(from) { CONNECT("198.51.100.7"), HELO("mx.example.org"), \
	MAIL(from), RCPT("<r@example.net>"), EOM }
#define C_HIT1 { { "b", 2, 1, 0, 0, 0, 0, 0 } }
#define C_MISS1 { { "b", 1, 0, 0, 0, 0, 0, 0 } }

#define SENDER_DOMAINS BLOCK("sender_domain", "[ \"sd.example\", \"@sdat.example\", " \
	"\".sdtree.example\", \"/\\\\.sdre\\\\.example$/\" ]", B_REPLY)

#define CLIENTS BLOCK("client", "[ \"192.0.2.0/24\", \"198.51.100.7\", " \
	"\"2001:DB8:0:0::/32\", \"::ffff:203.0.113.0/120\", \"/^100\\\\.64\\\\./\" ]", \
	"action = \"reject\"; reply = \"554 5.7.1 ${client_ip} refused by ${policy}\";")
/* A client hit at connect; nothing later is asked (the MTA ends the session). */
#define CLIENT_HIT(ip, shown) { CONNECT_HIT(ip, REJ, "b", \
	"554 5.7.1 " shown " refused by b") }
#define CLIENT_MISS(ip) { CONNECT(ip), HELO("192.0.2.1"), MAIL("<a@192.0.2.1>"), \
	RCPT("<b@example.net>"), EOM }

#define HELOS BLOCK("helo", "[ \"mail.bad.example\", \".helotree.example\", " \
	"\"/^dyn-[0-9]+\\\\.isp\\\\.example$/i\" ]", B_REPLY)
#define HELO_HIT_STEPS(name) { CONNECT("198.51.100.7"), HELO_HIT(name, REJ, "b", B_HIT) }
#define HELO_MISS_STEPS(name) { CONNECT("198.51.100.7"), HELO(name), \
	MAIL("<a@mail.bad.example>"), RCPT("<b@mail.bad.example>"), EOM }

#define RCPTS BLOCK("rcpt", "[ \"abuse@victim.example\", \"@rat.example\", " \
	"\".rtree.example\", \"\\\"x y\\\"@victim.example\", \"/^postmaster@/i\" ]", \
	"action = \"reject\"; reply = \"550 5.7.1 ${rcpt} refused for ${sender}\";")

#define RCPT_DOMAINS BLOCK("rcpt_domain", "[ \"rd.example\", \".example.com\", " \
	"\"/\\\\.rdre\\\\.example$/i\" ]", B_REPLY)

#define SASL BLOCK("sasl_user", "[ \"mallory\", \".evil.example\", \"/^test-/i\" ]", \
	B_REPLY)

static const struct scenario scenarios[] = {
	/* ---- sender, decided at MAIL */
	{ "sender: exact address", NULL, SENDERS, SENDER_HIT("<spam@example.com>"), C_HIT1 },
	{ "sender: exact address, upper case", NULL, SENDERS,
	    SENDER_HIT("<SPAM@Example.COM>"), C_HIT1 },
	{ "sender: exact address, trailing dot", NULL, SENDERS,
	    SENDER_HIT("<spam@example.com.>"), C_HIT1 },
	{ "sender: other local part", NULL, SENDERS, SENDER_MISS("<spam2@example.com>"),
	    C_MISS1 },
	{ "sender: same local part, subdomain", NULL, SENDERS,
	    SENDER_MISS("<spam@mail.example.com>"), C_MISS1 },
	{ "sender: @domain", NULL, SENDERS, SENDER_HIT("<anyone@bad.example>"), C_HIT1 },
	{ "sender: @domain does not cover subdomains", NULL, SENDERS,
	    SENDER_MISS("<anyone@sub.bad.example>"), C_MISS1 },
	{ "sender: .domain itself", NULL, SENDERS, SENDER_HIT("<x@BAD2.example>"), C_HIT1 },
	{ "sender: .domain subdomain", NULL, SENDERS, SENDER_HIT("<x@a.b.bad2.example>"),
	    C_HIT1 },
	{ "sender: .domain near miss", NULL, SENDERS, SENDER_MISS("<x@notbad2.example>"),
	    C_MISS1 },
	{ "sender: null sender", NULL, SENDERS, SENDER_HIT("<>"), C_HIT1 },
	{ "sender: quoted local part", NULL, SENDERS,
	    SENDER_HIT("<\"John Doe\"@EXAMPLE.com>"), C_HIT1 },
	{ "sender: quoted local part near miss", NULL, SENDERS,
	    SENDER_MISS("<\"john  doe\"@example.com>"), C_MISS1 },
	/* RFC 5322 3.2.4: a quoted-string is the same local part as the atom;
	 * Postfix delivers "spam"@example.com to spam@example.com. */
	{ "sender: needlessly quoted local part is the same address", NULL, SENDERS,
	    SENDER_HIT("<\"spam\"@example.com>"), C_HIT1 },
	{ "sender: quoted-pair in a quoted local part is the same address", NULL, SENDERS,
	    SENDER_HIT("<\"john\\ doe\"@example.com>"), C_HIT1 },
	{ "sender: entry in upper case", NULL, SENDERS, SENDER_HIT("<upper@example.org>"),
	    C_HIT1 },
	{ "sender: regex /i", NULL, SENDERS, SENDER_HIT("<Bounce-12@Lists.Example>"),
	    C_HIT1 },
	{ "sender: regex near miss", NULL, SENDERS, SENDER_MISS("<bounce-x@lists.example>"),
	    C_MISS1 },
	{ "sender: a sender list does not look at recipients", NULL, SENDERS,
	    { CONNECT("198.51.100.7"), MAIL("<ok@example.org>"),
	      RCPT("<spam@example.com>"), RCPT("<x@bad.example>"), EOM },
	    C_MISS1 },

	/* ---- sender_domain, decided at MAIL */
	{ "sender_domain: exact domain", NULL, SENDER_DOMAINS, SENDER_HIT("<x@sd.example>"),
	    C_HIT1 },
	{ "sender_domain: exact domain, upper case", NULL, SENDER_DOMAINS,
	    SENDER_HIT("<X@SD.Example>"), C_HIT1 },
	{ "sender_domain: plain domain does not cover subdomains", NULL, SENDER_DOMAINS,
	    SENDER_MISS("<x@sub.sd.example>"), C_MISS1 },
	{ "sender_domain: @domain", NULL, SENDER_DOMAINS, SENDER_HIT("<x@sdat.example>"),
	    C_HIT1 },
	{ "sender_domain: .domain", NULL, SENDER_DOMAINS,
	    SENDER_HIT("<x@deep.sdtree.example>"), C_HIT1 },
	{ "sender_domain: .domain near miss", NULL, SENDER_DOMAINS,
	    SENDER_MISS("<x@notsdtree.example>"), C_MISS1 },
	{ "sender_domain: regex", NULL, SENDER_DOMAINS,
	    SENDER_HIT("<x@host.sdre.example>"), C_HIT1 },
	{ "sender_domain: regex near miss", NULL, SENDER_DOMAINS,
	    SENDER_MISS("<x@sdre.example.net>"), C_MISS1 },
	{ "sender_domain: the null sender has no domain", NULL, SENDER_DOMAINS,
	    SENDER_MISS("<>"), C_MISS1 },

	/* ---- client, decided at connect */
	{ "client: network, last address", NULL, CLIENTS,
	    CLIENT_HIT("192.0.2.255", "192.0.2.255"), { { "b", 1, 1, 0, 0, 0, 0, 0 } } },
	{ "client: next network", NULL, CLIENTS, CLIENT_MISS("192.0.3.0"),
	    { { "b", 1, 0, 0, 0, 0, 0, 0 } } },
	{ "client: network before", NULL, CLIENTS, CLIENT_MISS("192.0.1.255"),
	    { { "b", 1, 0, 0, 0, 0, 0, 0 } } },
	{ "client: one host", NULL, CLIENTS, CLIENT_HIT("198.51.100.7", "198.51.100.7"),
	    { { "b", 1, 1, 0, 0, 0, 0, 0 } } },
	{ "client: next host", NULL, CLIENTS, CLIENT_MISS("198.51.100.8"),
	    { { "b", 1, 0, 0, 0, 0, 0, 0 } } },
	{ "client: IPv6 network", NULL, CLIENTS,
	    CLIENT_HIT("2001:db8:ffff::1", "2001:db8:ffff::1"),
	    { { "b", 1, 1, 0, 0, 0, 0, 0 } } },
	{ "client: IPv6 next network", NULL, CLIENTS, CLIENT_MISS("2001:db9::1"),
	    { { "b", 1, 0, 0, 0, 0, 0, 0 } } },
	{ "client: IPv4 in an IPv4-mapped entry", NULL, CLIENTS,
	    CLIENT_HIT("203.0.113.9", "203.0.113.9"), { { "b", 1, 1, 0, 0, 0, 0, 0 } } },
	{ "client: regex", NULL, CLIENTS, CLIENT_HIT("100.64.1.2", "100.64.1.2"),
	    { { "b", 1, 1, 0, 0, 0, 0, 0 } } },
	{ "client: regex near miss", NULL, CLIENTS, CLIENT_MISS("100.65.1.2"),
	    { { "b", 1, 0, 0, 0, 0, 0, 0 } } },
	{ "client: unknown address", NULL,
	    BLOCK("client", "[ \"0.0.0.0/0\", \"::/0\", \"/.*/\" ]", B_REPLY),
	    CLIENT_MISS(NULL), { { "b", 1, 0, 0, 0, 0, 0, 0 } } },

	/* ---- helo, decided at HELO */
	{ "helo: exact name", NULL, HELOS, HELO_HIT_STEPS("mail.bad.example"),
	    { { "b", 1, 1, 0, 0, 0, 0, 0 } } },
	{ "helo: upper case and trailing dot", NULL, HELOS,
	    HELO_HIT_STEPS("MAIL.Bad.EXAMPLE."), { { "b", 1, 1, 0, 0, 0, 0, 0 } } },
	{ "helo: exact name does not cover subdomains", NULL, HELOS,
	    HELO_MISS_STEPS("x.mail.bad.example"), { { "b", 1, 0, 0, 0, 0, 0, 0 } } },
	{ "helo: .domain", NULL, HELOS, HELO_HIT_STEPS("a.b.helotree.example"),
	    { { "b", 1, 1, 0, 0, 0, 0, 0 } } },
	{ "helo: .domain near miss", NULL, HELOS, HELO_MISS_STEPS("nothelotree.example"),
	    { { "b", 1, 0, 0, 0, 0, 0, 0 } } },
	{ "helo: regex /i", NULL, HELOS, HELO_HIT_STEPS("DYN-42.isp.example"),
	    { { "b", 1, 1, 0, 0, 0, 0, 0 } } },
	{ "helo: regex near miss", NULL, HELOS, HELO_MISS_STEPS("dyn-42.isp.example.net"),
	    { { "b", 1, 0, 0, 0, 0, 0, 0 } } },

	/* ---- rcpt, decided per recipient */
	{ "rcpt: one refused, the others pass", NULL, RCPTS,
	    { CONNECT("198.51.100.7"), HELO("abuse@victim.example"),
	      MAIL("<abuse@victim.example>"),
	      RCPT("<ok@victim.example>"),
	      RCPT_HIT("<Abuse@Victim.Example>", REJ, "b",
		  "550 5.7.1 abuse@victim.example refused for abuse@victim.example"),
	      RCPT("<abuse@sub.victim.example>"),
	      RCPT_HIT("<x@rat.example>", REJ, "b",
		  "550 5.7.1 x@rat.example refused for abuse@victim.example"),
	      RCPT("<x@sub.rat.example>"),
	      RCPT_HIT("<x@a.rtree.example>", REJ, "b", NULL),
	      RCPT("<x@notrtree.example>"),
	      RCPT_HIT("<\"X Y\"@victim.example>", REJ, "b", NULL),
	      RCPT_HIT("<PostMaster@anything.example>", REJ, "b", NULL),
	      RCPT("<mypostmaster@anything.example>"),
	      EOM },
	    { { "b", 10, 5, 0, 0, 0, 0, 0 } } },

	/* ---- rcpt_domain, decided per recipient */
	{ "rcpt_domain: domains, suffixes and a regex", NULL, RCPT_DOMAINS,
	    { CONNECT("198.51.100.7"), HELO("rd.example"), MAIL("<x@rd.example>"),
	      RCPT_HIT("<a@RD.example>", REJ, "b", B_HIT),
	      RCPT("<a@sub.rd.example>"),
	      RCPT_HIT("<a@example.com>", REJ, "b", B_HIT),
	      RCPT_HIT("<a@mail.example.com>", REJ, "b", B_HIT),
	      RCPT("<a@notexample.com>"),
	      RCPT("<a@example.com.au>"),
	      RCPT_HIT("<a@mx.RDRE.example>", REJ, "b", B_HIT),
	      RCPT("<a@rdre.example>"),
	      RCPT("<>"),
	      EOM },
	    { { "b", 9, 4, 0, 0, 0, 0, 0 } } },

	/* ---- sasl_user, decided at MAIL */
	{ "sasl_user: users, a domain suffix and a regex", NULL, SASL,
	    { CONNECT("198.51.100.7"), HELO("mallory"),
	      MAIL_AUTH_HIT("<a@example.org>", "mallory", REJ, "b", B_HIT),
	      MAIL_AUTH_HIT("<a@example.org>", "Mallory", REJ, "b", B_HIT),
	      MAIL_AUTH("<a@example.org>", "mallory2"),
	      MAIL_AUTH_HIT("<a@example.org>", "eve@evil.example", REJ, "b", B_HIT),
	      MAIL_AUTH_HIT("<a@example.org>", "eve@mx.evil.example", REJ, "b", B_HIT),
	      MAIL_AUTH("<a@example.org>", "eve@notevil.example"),
	      MAIL_AUTH_HIT("<a@example.org>", "TEST-1", REJ, "b", B_HIT),
	      MAIL_AUTH("<a@example.org>", "a-test-1"),
	      MAIL("<mallory@example.org>"),
	      RCPT("<mallory@example.org>"), EOM },
	    { { "b", 9, 5, 0, 0, 0, 0, 0 } } },
	{ "sasl_user: no SASL user, no match even for /.*/", NULL,
	    BLOCK("sasl_user", "[ \"/.*/\" ]", B_REPLY),
	    { CONNECT("198.51.100.7"), MAIL("<a@example.org>"), RCPT("<b@example.org>"),
	      EOM, MAIL_AUTH_HIT("<a@example.org>", "anyone", REJ, "b", B_HIT) },
	    { { "b", 2, 1, 0, 0, 0, 0, 0 } } },

	/* ---- a list file: comments, blank lines, space, CRLF, a BOM */
	{ "list file entries decide like inline ones",
	    "\xef\xbb\xbf# blocked senders\r\n"
	    "\r\n"
	    "   spam@example.com   \r\n"
	    "\t@bad.example\n"
	    "# .commented.example\n"
	    ".bad2.example",
	    "policies = ( { name = \"b\"; type = \"block\"; match = \"sender\";\n"
	    "  entries = [ \"inline@example.com\" ]; file = \"@LIST@\"; " B_REPLY " } );\n",
	    { CONNECT("198.51.100.7"),
	      MAIL_HIT("<spam@example.com>", REJ, "b", B_HIT),
	      MAIL_HIT("<x@bad.example>", REJ, "b", B_HIT),
	      MAIL_HIT("<x@y.bad2.example>", REJ, "b", B_HIT),
	      MAIL_HIT("<inline@example.com>", REJ, "b", B_HIT),
	      MAIL("<x@commented.example>"),
	      MAIL("<#@example.com>"),
	      RCPT("<r@example.net>"), EOM },
	    { { "b", 6, 4, 0, 0, 0, 0, 0 } } },

	/* ---- allow lists before block lists */
	{ "allow: trusted client passes although its sender is blocked", NULL,
	    "policies = (\n"
	    "  { name = \"trusted\"; type = \"block\"; match = \"client\";\n"
	    "    entries = [ \"192.0.2.0/24\", \"2001:db8::/32\" ]; action = \"accept\"; },\n"
	    "  { name = \"blocked-senders\"; type = \"block\"; match = \"sender\";\n"
	    "    entries = [ \"spam@example.com\", \"@bad.example\" ]; action = \"reject\";\n"
	    "    reply = \"550 5.7.1 Sender ${sender} is not accepted here\"; }\n"
	    ");\n",
	    { CONNECT_HIT("192.0.2.10", ACC, "trusted", NULL), HELO("x"),
	      MAIL("<spam@example.com>"), RCPT("<r@example.net>"), EOM,
	      MAIL("<x@bad.example>"), RCPT("<r@example.net>"), EOM },
	    { { "trusted", 1, 0, 0, 0, 0, 1, 0 }, { "blocked-senders", 0, 0, 0, 0, 0, 0, 0 } } },
	{ "allow: trusted IPv6 client passes although its sender is blocked", NULL,
	    "policies = (\n"
	    "  { name = \"trusted\"; type = \"block\"; match = \"client\";\n"
	    "    entries = [ \"192.0.2.0/24\", \"2001:db8::/32\" ]; action = \"accept\"; },\n"
	    "  { name = \"blocked-senders\"; type = \"block\"; match = \"sender\";\n"
	    "    entries = [ \"spam@example.com\" ]; action = \"reject\"; }\n"
	    ");\n",
	    { CONNECT_HIT("2001:db8::25", ACC, "trusted", NULL),
	      MAIL("<spam@example.com>"), RCPT("<r@example.net>"), EOM },
	    { { "trusted", 1, 0, 0, 0, 0, 1, 0 }, { "blocked-senders", 0, 0, 0, 0, 0, 0, 0 } } },
	{ "allow: untrusted client, its blocked sender is refused", NULL,
	    "policies = (\n"
	    "  { name = \"trusted\"; type = \"block\"; match = \"client\";\n"
	    "    entries = [ \"192.0.2.0/24\", \"2001:db8::/32\" ]; action = \"accept\"; },\n"
	    "  { name = \"blocked-senders\"; type = \"block\"; match = \"sender\";\n"
	    "    entries = [ \"spam@example.com\" ]; action = \"reject\";\n"
	    "    reply = \"550 5.7.1 Sender ${sender} is not accepted here\"; }\n"
	    ");\n",
	    { CONNECT("192.0.3.10"),
	      MAIL_HIT("<spam@example.com>", REJ, "blocked-senders",
		  "550 5.7.1 Sender spam@example.com is not accepted here"),
	      MAIL("<ham@example.com>"), RCPT("<r@example.net>"), EOM },
	    { { "trusted", 1, 0, 0, 0, 0, 0, 0 }, { "blocked-senders", 2, 1, 0, 0, 0, 0, 0 } } },
	/* The allow list decides at connect, before any sender is known: its
	 * place in the file does not matter against a later stage. */
	{ "allow: a client allow list after the sender block still wins", NULL,
	    "policies = (\n"
	    "  { name = \"blocked-senders\"; type = \"block\"; match = \"sender\";\n"
	    "    entries = [ \"spam@example.com\" ]; action = \"reject\"; },\n"
	    "  { name = \"trusted\"; type = \"block\"; match = \"client\";\n"
	    "    entries = [ \"192.0.2.0/24\" ]; action = \"accept\"; }\n"
	    ");\n",
	    { CONNECT_HIT("192.0.2.10", ACC, "trusted", NULL),
	      MAIL("<spam@example.com>"), RCPT("<r@example.net>"), EOM },
	    { { "trusted", 1, 0, 0, 0, 0, 1, 0 }, { "blocked-senders", 0, 0, 0, 0, 0, 0, 0 } } },
	{ "allow: a trusted HELO name covers the connection", NULL,
	    "policies = (\n"
	    "  { name = \"trusted-helo\"; type = \"block\"; match = \"helo\";\n"
	    "    entries = [ \".relay.example\" ]; action = \"accept\"; },\n"
	    "  { name = \"blocked-senders\"; type = \"block\"; match = \"sender\";\n"
	    "    entries = [ \"spam@example.com\" ]; action = \"reject\"; }\n"
	    ");\n",
	    { CONNECT("198.51.100.7"), HELO_HIT("mx1.relay.example", ACC, "trusted-helo", NULL),
	      MAIL("<spam@example.com>"), RCPT("<r@example.net>"), EOM,
	      MAIL("<spam@example.com>"), EOM },
	    { { "trusted-helo", 1, 0, 0, 0, 0, 1, 0 },
	      { "blocked-senders", 0, 0, 0, 0, 0, 0, 0 } } },
	/* Same stage: file order.  The sender allow list is for one message. */
	{ "allow: sender allow list before a domain block, one message at a time", NULL,
	    "policies = (\n"
	    "  { name = \"partners\"; type = \"block\"; match = \"sender\";\n"
	    "    entries = [ \"ceo@bad.example\" ]; action = \"accept\"; },\n"
	    "  { name = \"bad-domains\"; type = \"block\"; match = \"sender_domain\";\n"
	    "    entries = [ \".bad.example\" ]; action = \"reject\"; }\n"
	    ");\n",
	    { CONNECT("198.51.100.7"),
	      MAIL_HIT("<CEO@bad.example>", ACC, "partners", NULL),
	      RCPT("<r@example.net>"), EOM,
	      MAIL_HIT("<intern@bad.example>", REJ, "bad-domains",
		  "550 5.7.1 Access denied by policy bad-domains"),
	      MAIL_HIT("<ceo@bad.example>", ACC, "partners", NULL), RSET,
	      MAIL_HIT("<x@mx.bad.example>", REJ, "bad-domains", NULL) },
	    { { "partners", 4, 0, 0, 0, 0, 2, 0 }, { "bad-domains", 2, 2, 0, 0, 0, 0, 0 } } },
	{ "allow: a domain block before the sender allow list wins", NULL,
	    "policies = (\n"
	    "  { name = \"bad-domains\"; type = \"block\"; match = \"sender_domain\";\n"
	    "    entries = [ \".bad.example\" ]; action = \"reject\"; },\n"
	    "  { name = \"partners\"; type = \"block\"; match = \"sender\";\n"
	    "    entries = [ \"ceo@bad.example\" ]; action = \"accept\"; }\n"
	    ");\n",
	    { CONNECT("198.51.100.7"),
	      MAIL_HIT("<ceo@bad.example>", REJ, "bad-domains", NULL),
	      MAIL("<ceo@good.example>"), RCPT("<r@example.net>"), EOM },
	    { { "bad-domains", 2, 1, 0, 0, 0, 0, 0 }, { "partners", 1, 0, 0, 0, 0, 0, 0 } } },
	{ "allow: client allow and block lists at connect, in file order", NULL,
	    "policies = (\n"
	    "  { name = \"trusted\"; type = \"block\"; match = \"client\";\n"
	    "    entries = [ \"192.0.2.7\" ]; action = \"accept\"; },\n"
	    "  { name = \"bad-net\"; type = \"block\"; match = \"client\";\n"
	    "    entries = [ \"192.0.2.0/24\" ]; action = \"reject\"; }\n"
	    ");\n",
	    { CONNECT_HIT("192.0.2.7", ACC, "trusted", NULL), HELO("x"),
	      MAIL("<a@example.org>"), RCPT("<r@example.net>"), EOM },
	    { { "trusted", 1, 0, 0, 0, 0, 1, 0 }, { "bad-net", 0, 0, 0, 0, 0, 0, 0 } } },
	/* README "What an accept covers": an allowed recipient is that recipient
	 * only; the recipients after it are judged as if it had not come. */
	{ "allow: a recipient allow list covers that recipient only", NULL,
	    "policies = (\n"
	    "  { name = \"postmaster\"; type = \"block\"; match = \"rcpt\";\n"
	    "    entries = [ \"postmaster@example.net\" ]; action = \"accept\"; },\n"
	    "  { name = \"bad-rcpt-domains\"; type = \"block\"; match = \"rcpt_domain\";\n"
	    "    entries = [ \"example.net\" ]; action = \"reject\"; }\n"
	    ");\n",
	    { CONNECT("198.51.100.7"), MAIL("<a@example.org>"),
	      RCPT_HIT("<postmaster@example.net>", ACC, "postmaster", NULL),
	      RCPT_HIT("<other@example.net>", REJ, "bad-rcpt-domains", NULL), EOM,
	      MAIL("<a@example.org>"),
	      RCPT_HIT("<other@example.net>", REJ, "bad-rcpt-domains", NULL),
	      RCPT_HIT("<postmaster@example.net>", ACC, "postmaster", NULL), EOM },
	    { { "postmaster", 4, 0, 0, 0, 0, 2, 0 },
	      { "bad-rcpt-domains", 2, 2, 0, 0, 0, 0, 0 } } },

	/* ---- replies */
	{ "reply: default reject reply names the policy", NULL,
	    BLOCK("sender", "[ \"spam@example.com\" ]", "action = \"reject\";"),
	    { CONNECT("198.51.100.7"), MAIL_HIT("<spam@example.com>", REJ, "b",
		  "550 5.7.1 Access denied by policy b") },
	    { { "b", 1, 1, 0, 0, 0, 0, 0 } } },
	{ "reply: default tempfail reply names the policy", NULL,
	    BLOCK("rcpt", "[ \"a@example.net\" ]", "action = \"tempfail\";"),
	    { CONNECT("198.51.100.7"), MAIL("<x@example.org>"),
	      RCPT_HIT("<a@example.net>", TMP, "b",
		  "450 4.7.1 Access temporarily denied by policy b") },
	    { { "b", 1, 0, 1, 0, 0, 0, 0 } } },
	{ "reply: variables at connect", NULL,
	    BLOCK("client", "[ \"192.0.2.0/24\" ]", "action = \"reject\";\n"
	    "  reply = \"554 5.7.1 ${client_ip} [${sender}] [${rcpt}] ${policy}\";"),
	    { CONNECT_HIT("192.0.2.55", REJ, "b", "554 5.7.1 192.0.2.55 [] [] b") },
	    { { "b", 1, 1, 0, 0, 0, 0, 0 } } },
	{ "reply: variables at MAIL show the canonical sender", NULL,
	    BLOCK("sender", "[ \"spam@example.com\" ]", "action = \"reject\";\n"
	    "  reply = \"550 5.7.1 Sender ${sender} is not accepted here (${client_ip})\";"),
	    { CONNECT("2001:db8::7"), MAIL_HIT("<SPAM@Example.COM>", REJ, "b",
		  "550 5.7.1 Sender spam@example.com is not accepted here (2001:db8::7)") },
	    { { "b", 1, 1, 0, 0, 0, 0, 0 } } },
	{ "reply: the null sender expands to <>", NULL,
	    BLOCK("sender", "[ \"<>\" ]", "action = \"reject\";\n"
	    "  reply = \"550 5.7.1 Sender ${sender} is not accepted here\";"),
	    { CONNECT("198.51.100.7"), MAIL_HIT("<>", REJ, "b",
		  "550 5.7.1 Sender <> is not accepted here") },
	    { { "b", 1, 1, 0, 0, 0, 0, 0 } } },
	{ "reply: multi-line with variables at RCPT", NULL,
	    BLOCK("rcpt_domain", "[ \"blocked.example\" ]", "action = \"reject\";\n"
	    "  reply = [ \"550 5.7.1 No mail to ${rcpt}\", \"from ${sender} (${policy})\" ];"),
	    { CONNECT("198.51.100.7"), MAIL("<a@example.org>"),
	      RCPT_HIT("<x@blocked.example>", REJ, "b",
		  "550 5.7.1 No mail to x@blocked.example / from a@example.org (b)") },
	    { { "b", 1, 1, 0, 0, 0, 0, 0 } } },
	{ "reply: 421 at HELO", NULL,
	    BLOCK("helo", "[ \"localhost\" ]", "action = \"tempfail\";\n"
	    "  reply = \"421 4.7.0 ${client_ip} said HELO localhost\";"),
	    { CONNECT("198.51.100.7"), HELO_HIT("LOCALHOST", TMP, "b",
		  "421 4.7.0 198.51.100.7 said HELO localhost") },
	    { { "b", 1, 0, 1, 0, 0, 0, 0 } } },

	/* ---- other actions, dry runs, exemptions */
	{ "discard: a sender decided at MAIL is dropped at end of message", NULL,
	    BLOCK("sender", "[ \"@drop.example\" ]", "action = \"discard\";"),
	    { CONNECT("198.51.100.7"), MAIL("<a@drop.example>"), RCPT("<r@example.net>"),
	      EOM_HIT(POLICY_DISCARD, "b"),
	      MAIL("<a@keep.example>"), RCPT("<r@example.net>"), EOM },
	    { { "b", 2, 0, 0, 1, 0, 0, 0 } } },
	{ "quarantine: a recipient decided at RCPT holds the message", NULL,
	    BLOCK("rcpt", "[ \"@hold.example\" ]", "action = \"quarantine\";"),
	    { CONNECT("198.51.100.7"), MAIL("<a@example.org>"), RCPT("<r@example.net>"),
	      RCPT("<r@hold.example>"), EOM_HIT(POLICY_QUARANTINE, "b") },
	    { { "b", 2, 0, 0, 0, 1, 0, 0 } } },
	/* The client is known at connect, the MTA can drop only at end of
	 * message: every message of the connection must be dropped. */
	{ "discard: a client decided at connect drops each of its messages", NULL,
	    BLOCK("client", "[ \"192.0.2.0/24\" ]", "action = \"discard\";"),
	    { CONNECT("192.0.2.1"), HELO("x"), MAIL("<a@example.org>"), RCPT("<r@example.net>"),
	      EOM_HIT(POLICY_DISCARD, "b"),
	      MAIL("<b@example.org>"), RCPT("<r@example.net>"),
	      EOM_HIT(POLICY_DISCARD, "b") },
	    { { "b", ANY, 0, 0, 2, 0, 0, 0 } } },
	{ "quarantine: a HELO name decided at HELO holds the message", NULL,
	    BLOCK("helo", "[ \".hold.example\" ]", "action = \"quarantine\";"),
	    { CONNECT("198.51.100.7"), HELO("mx.hold.example"), MAIL("<a@example.org>"),
	      RCPT("<r@example.net>"), EOM_HIT(POLICY_QUARANTINE, "b") },
	    { { "b", ANY, 0, 0, 0, 1, 0, 0 } } },
	{ "dry run: counted and logged, the next policy decides", NULL,
	    "policies = (\n"
	    "  { name = \"trial\"; type = \"block\"; match = \"sender\";\n"
	    "    entries = [ \"@example.com\" ]; action = \"reject\"; dry_run = true; },\n"
	    "  { name = \"real\"; type = \"block\"; match = \"sender\";\n"
	    "    entries = [ \"spam@example.com\" ]; action = \"reject\"; }\n"
	    ");\n",
	    { CONNECT("198.51.100.7"),
	      MAIL("<ham@example.com>"),
	      MAIL_HIT("<spam@example.com>", REJ, "real", NULL),
	      MAIL("<x@example.org>"), RCPT("<r@example.net>"), EOM },
	    { { "trial", 3, 0, 0, 0, 0, 0, 2 }, { "real", 3, 1, 0, 0, 0, 0, 0 } } },
	{ "exempt: a client exempt from the policy", NULL,
	    BLOCK("sender", "[ \"spam@example.com\" ]",
	    "action = \"reject\"; exempt = { clients = [ \"192.0.2.0/24\" ]; };"),
	    { CONNECT("192.0.2.200"), MAIL("<spam@example.com>"), RCPT("<r@example.net>"),
	      EOM },
	    { { "b", 0, 0, 0, 0, 0, 0, 0 } } },
	{ "exempt: authenticated senders exempt from the policy", NULL,
	    BLOCK("sender", "[ \"spam@example.com\" ]",
	    "action = \"reject\"; exempt = { authenticated = true; };"),
	    { CONNECT("198.51.100.7"), MAIL_AUTH("<spam@example.com>", "alice"),
	      RCPT("<r@example.net>"), EOM,
	      MAIL_HIT("<spam@example.com>", REJ, "b", NULL) },
	    { { "b", 1, 1, 0, 0, 0, 0, 0 } } },
	{ "exempt: a client exempt from every policy", NULL,
	    "exempt = { clients = [ \"192.0.2.0/24\" ]; };\n"
	    BLOCK("client", "[ \"192.0.2.0/24\" ]", "action = \"reject\";"),
	    { CONNECT("192.0.2.9"), HELO("x"), MAIL("<a@example.org>"), RCPT("<r@example.net>"),
	      EOM },
	    { { "b", 0, 0, 0, 0, 0, 0, 0 } } },
};

static void
run_step(const char *label, size_t k, struct session *s, const struct step *st)
{
	static const char *const kind_names[] = {
		"end", "connect", "helo", "mail", "rcpt", "eom", "rset",
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
	case ST_MAIL:
		/* As cb_envfrom: give back, start the message, then decide. */
		engine_release(s);
		session_msg_start(s, st->arg, NULL, st->sasl);
		stage = POLICY_MAIL;
		break;
	case ST_RCPT:
		session_set_rcpt(s, st->arg);
		stage = POLICY_RCPT;
		break;
	case ST_EOM:
		stage = POLICY_EOM;
		break;
	case ST_RSET:
		engine_release(s);
		session_msg_reset(s);
		return;
	}

	memset(&v, 0, sizeof(v));
	got = engine_run(s, stage, &v);
	ck_assert_msg(got == st->want, "%s: step %zu (%s %s%s%s): %s, expected %s", label, k,
	    what, st->arg ? st->arg : "", st->sasl ? " auth=" : "", st->sasl ? st->sasl : "",
	    policy_action_name(got), policy_action_name(st->want));
	tl_assert_decided_by(label, k, what, got, &v, st->policy);
	if ((got == POLICY_REJECT || got == POLICY_TEMPFAIL) && st->reply != NULL) {
		reply_format(&v.reply, text, sizeof(text));
		ck_assert_msg(strcmp(text, st->reply) == 0, "%s: step %zu (%s): reply \"%s\", "
		    "expected \"%s\"", label, k, what, text, st->reply);
	}
	tl_step_done(s, stage, got);
}

START_TEST(scenario)
{
	const struct scenario *sc = &scenarios[_i];
	char listname[64], list[4096] = "", *conf;
	struct cfg *c;
	struct session *s;
	size_t n;

	if (sc->list != NULL) {
		snprintf(listname, sizeof(listname), "scenario-%02d.list", _i);
		snprintf(list, sizeof(list), "%s",
		    write_file(sc->label, listname, sc->list, NULL));
	}
	/* tl_load_config takes the text as it is: put the list path in. */
	n = strlen(sc->conf) + strlen(list) + 1;
	conf = malloc(n);
	ck_assert(conf != NULL);
	{
		const char *at = strstr(sc->conf, "@LIST@");
		if (at != NULL)
			snprintf(conf, n, "%.*s%s%s", (int)(at - sc->conf), sc->conf, list, at + 6);
		else
			snprintf(conf, n, "%s", sc->conf);
	}
	c = tl_load_config(sc->label, conf);
	free(conf);
	s = tl_session_new(sc->label, c);
	cfg_unref(c);              /* the session holds its own reference */
	for (size_t k = 0; k < NELEM(sc->steps) && sc->steps[k].kind != ST_END; k++)
		run_step(sc->label, k, s, &sc->steps[k]);
	for (size_t i = 0; i < NELEM(sc->counts) && sc->counts[i].policy != NULL; i++)
		tl_assert_counts(sc->label, &sc->counts[i]);
}
END_TEST

/* ---- the stages each match kind decides at (what the milter negotiates) */

static const struct {
	const char *match;
	const char *entry;
	enum policy_stage stage;
} stages[] = {
	{ "client", "192.0.2.0/24", POLICY_CONNECT },
	{ "helo", "mail.example.com", POLICY_HELO },
	{ "sender", "a@example.com", POLICY_MAIL },
	{ "sender_domain", "example.com", POLICY_MAIL },
	{ "sasl_user", "alice", POLICY_MAIL },
	{ "rcpt", "a@example.com", POLICY_RCPT },
	{ "rcpt_domain", "example.com", POLICY_RCPT },
};

START_TEST(stage_of_match)
{
	char conf[512], path[4096];
	struct cfg *c;
	unsigned want = POLICY_STAGE(stages[_i].stage);

	snprintf(conf, sizeof(conf), "policies = ( { name = \"b\"; type = \"block\"; "
	    "match = \"%s\"; entries = [ \"%s\" ]; action = \"reject\"; } );\n",
	    stages[_i].match, stages[_i].entry);
	c = load_conf(stages[_i].match, "stages.conf", conf, NULL, NULL, path, sizeof(path));
	ck_assert_msg(c != NULL, "%s: load failed:%s", stages[_i].match, all_reports());
	ck_assert_msg(rep.nwarn == 0, "%s: warnings:%s", stages[_i].match, all_reports());
	ck_assert_msg(c->stages_decide == want && c->policies[0].stages == want,
	    "%s: decides at stages 0x%x, want 0x%x (%s only)", stages[_i].match,
	    c->stages_decide, want, policy_stage_name(stages[_i].stage));
	/* It needs the data of its stage (HELO is sent only when asked for)
	 * and nothing of the message content. */
	ck_assert_msg(c->stages_need == want, "%s: needs stages 0x%x, want 0x%x",
	    stages[_i].match, c->stages_need, want);
	cfg_unref(c);
	stats_reset();
}
END_TEST

/* ---- reload semantics at the cfg level */

/* The verdict of c for one message from sender, from a fresh session. */
static enum policy_action
verdict_for_sender(const char *label, struct cfg *c, const char *sender)
{
	struct session *s = session_new(c);
	struct engine_verdict v;
	enum policy_action got;

	ck_assert_msg(s != NULL, "%s: session_new", label);
	tl_set_client(label, s, "198.51.100.7");
	session_msg_start(s, sender, NULL, NULL);
	memset(&v, 0, sizeof(v));
	got = engine_run(s, POLICY_MAIL, &v);
	session_free(s);
	return got;
}

#define RELOAD_CONF \
	"policies = ( { name = \"blocked\"; type = \"block\"; match = \"sender\"; " \
	"file = \"@LIST@\"; action = \"reject\"; } );\n"

static void
assert_list(const char *label, struct cfg *c, const char *blocked, const char *passes)
{
	ck_assert_msg(verdict_for_sender(label, c, blocked) == POLICY_REJECT,
	    "%s: %s is not refused", label, blocked);
	ck_assert_msg(verdict_for_sender(label, c, passes) == POLICY_NONE,
	    "%s: %s is refused", label, passes);
}

START_TEST(reload_bad_file_keeps_old_list)
{
	char list[4096], path[4096], prefix[4200];
	struct cfg *c1, *c2, *bad_c;

	snprintf(list, sizeof(list), "%s", write_file("reload", "reload.list",
	    "old@reload.example\n", NULL));
	c1 = load_conf("reload: first load", "reload.conf", RELOAD_CONF, list, NULL,
	    path, sizeof(path));
	ck_assert_msg(c1 != NULL, "reload: first load failed:%s", all_reports());
	assert_list("reload: first list", c1, "<old@reload.example>", "<new@reload.example>");

	/* The list changes, with one bad line: the load fails at that line. */
	write_file("reload", "reload.list",
	    "new@reload.example\n# a comment\n\nnot an address\n", NULL);
	memset(&rep, 0, sizeof(rep));
	bad_c = cfg_load(path, c1, tl_collect, &rep);
	if (bad_c != NULL)
		cfg_unref(bad_c);
	ck_assert_msg(bad_c == NULL, "reload: a list with a bad line loaded");
	snprintf(prefix, sizeof(prefix), "%s:4: ", list);
	ck_assert_msg(rep.nerr == 1 && strncmp(rep.err[0], prefix, strlen(prefix)) == 0,
	    "reload: want one error starting \"%s\":%s", prefix, all_reports());
	ck_assert_msg(strstr(rep.err[0], "not an address") != NULL,
	    "reload: the error does not show the line:%s", all_reports());
	/* The snapshot in force still has the old list, none of the new. */
	assert_list("reload: after the failed load", c1, "<old@reload.example>",
	    "<new@reload.example>");

	/* Fixed: the new list replaces the old one entirely. */
	write_file("reload", "reload.list", "new@reload.example\n# a comment\n", NULL);
	c2 = cfg_load(path, c1, tl_collect, &rep);
	ck_assert_msg(c2 != NULL, "reload: the fixed list did not load:%s", all_reports());
	assert_list("reload: new snapshot", c2, "<new@reload.example>", "<old@reload.example>");
	/* A connection that started before keeps the list it started with. */
	assert_list("reload: old snapshot unchanged", c1, "<old@reload.example>",
	    "<new@reload.example>");

	/* A list file that vanished: the load fails, naming the file. */
	ck_assert(unlink(list) == 0);
	memset(&rep, 0, sizeof(rep));
	bad_c = cfg_load(path, c2, tl_collect, &rep);
	if (bad_c != NULL)
		cfg_unref(bad_c);
	snprintf(prefix, sizeof(prefix), "%s: cannot open", list);
	ck_assert_msg(bad_c == NULL && rep.nerr == 1 &&
	    strncmp(rep.err[0], prefix, strlen(prefix)) == 0,
	    "reload: a vanished list: want \"%s\":%s", prefix, all_reports());
	assert_list("reload: after the vanished list", c2, "<new@reload.example>",
	    "<old@reload.example>");

	cfg_unref(c1);
	cfg_unref(c2);
	stats_reset();
}
END_TEST

START_TEST(files_changed)
{
	char l1[4096], l2[4096], path[4096];
	long long s0, s1, s2, st;
	struct cfg *c, *none;
	const time_t t0 = 1700000000;

	snprintf(l1, sizeof(l1), "%s", write_file("watch", "watch1.list", "a@example.com\n",
	    NULL));
	snprintf(l2, sizeof(l2), "%s", write_file("watch", "watch2.list", "b@example.com\n",
	    NULL));
	set_mtime("watch", l1, t0, 0);
	set_mtime("watch", l2, t0, 0);
	{
		char conf[9000];
		snprintf(conf, sizeof(conf), "policies = (\n"
		    "  { name = \"one\"; type = \"block\"; match = \"sender\"; file = \"%s\";\n"
		    "    action = \"reject\"; },\n"
		    "  { name = \"inline\"; type = \"block\"; match = \"sender\";\n"
		    "    entries = [ \"c@example.com\" ]; action = \"reject\"; },\n"
		    "  { name = \"two\"; type = \"block\"; match = \"rcpt\"; file = \"%s\";\n"
		    "    action = \"reject\"; }\n"
		    ");\n", l1, l2);
		c = load_conf("watch", "watch.conf", conf, NULL, NULL, path, sizeof(path));
	}
	ck_assert_msg(c != NULL, "watch: load failed:%s", all_reports());
	ck_assert_msg(c->nwatch == 2, "watch: %zu files watched, want 2", c->nwatch);

	ck_assert_msg(!cfg_files_changed(c, &s0), "watch: changed right after loading");
	ck_assert_msg(!cfg_files_changed(c, &st) && st == s0, "watch: stamp not stable");

	/* One second later. */
	set_mtime("watch", l1, t0 + 1, 0);
	ck_assert_msg(cfg_files_changed(c, &s1), "watch: mtime +1 s not seen");
	ck_assert_msg(s1 != s0, "watch: the stamp did not change");
	ck_assert_msg(cfg_files_changed(c, &st) && st == s1, "watch: stamp not stable");
	/* Changed again while still changed: a new stamp, so a caller that
	 * tried (and failed with) the first change tries again. */
	set_mtime("watch", l1, t0 + 2, 0);
	ck_assert_msg(cfg_files_changed(c, &s2) && s2 != s1, "watch: second change");
	/* One nanosecond, and an older time, count too. */
	set_mtime("watch", l1, t0, 1);
	ck_assert_msg(cfg_files_changed(c, &st) && st != s0, "watch: +1 ns not seen");
	set_mtime("watch", l1, t0 - 60, 0);
	ck_assert_msg(cfg_files_changed(c, &st), "watch: an older mtime not seen");
	/* Back to the loaded time: unchanged again. */
	set_mtime("watch", l1, t0, 0);
	ck_assert_msg(!cfg_files_changed(c, &st) && st == s0, "watch: restored mtime");

	/* The second file alone. */
	set_mtime("watch", l2, t0 + 5, 0);
	ck_assert_msg(cfg_files_changed(c, &st) && st != s0, "watch: second file");
	set_mtime("watch", l2, t0, 0);

	/* Gone, and back. */
	ck_assert(unlink(l1) == 0);
	ck_assert_msg(cfg_files_changed(c, &st) && st != s0, "watch: removal not seen");
	write_file("watch", "watch1.list", "a@example.com\n", NULL);
	set_mtime("watch", l1, t0, 0);
	ck_assert_msg(!cfg_files_changed(c, &st) && st == s0, "watch: recreated file");

	/* Rewritten now: a real write changes the time. */
	write_file("watch", "watch1.list", "z@example.com\n", NULL);
	ck_assert_msg(cfg_files_changed(c, &st) && st != s0, "watch: rewrite not seen");
	cfg_unref(c);

	/* No list file: never changed. */
	none = load_conf("watch: none", "none.conf", BLOCK("sender", "[ \"a@example.com\" ]",
	    "action = \"reject\";"), NULL, NULL, path, sizeof(path));
	ck_assert_msg(none != NULL, "watch: none: load failed:%s", all_reports());
	ck_assert_msg(none->nwatch == 0 && !cfg_files_changed(none, &st),
	    "watch: none: changed without files");
	cfg_unref(none);
	stats_reset();
}
END_TEST

/* ---- the suite */

static Suite *
block_suite(void)
{
	Suite *s = suite_create("block");
	TCase *tc;

	tc = tcase_create("errors");
	tcase_add_loop_test(tc, bad_config, 0, (int)NELEM(bad));
	tcase_add_test(tc, many_bad_lines);
	suite_add_tcase(s, tc);

	tc = tcase_create("stages");
	tcase_add_loop_test(tc, stage_of_match, 0, (int)NELEM(stages));
	suite_add_tcase(s, tc);

	tc = tcase_create("engine");
	tcase_add_checked_fixture(tc, NULL, tl_teardown);
	tcase_add_loop_test(tc, scenario, 0, (int)NELEM(scenarios));
	suite_add_tcase(s, tc);

	tc = tcase_create("reload");
	tcase_add_test(tc, reload_bad_file_keeps_old_list);
	tcase_add_test(tc, files_changed);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	int status;

	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return EXIT_FAILURE;
	}
	log_open(true, false);
	status = tl_run(block_suite());
	tl_rmtree(tmpdir);
	return status;
}
