/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * ctl - policy-milter-ctl (see ctl.h): options, and every command but
 * explain (ctl_explain.c).
 *
 * Round trips to Redis per command: stats 1 (one pipeline for every
 * policy), show 2 (the script in peek mode, and the override's expiry),
 * reset 1, top 2 per screen (the record, then the usage of what it names in
 * one peek call), block and override: 1 each.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "milter/check.h"
#include "milter/ctl.h"
#include "milter/engine.h"
#include "milter/limiter.h"
#include "milter/log.h"
#include "milter/stats.h"
#include "milter/store_redis.h"
#include "milter/units.h"

#ifndef PM_SYSCONFDIR
#define PM_SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONFIG PM_SYSCONFDIR "/policy-milter/policy-milter.conf"

#define MAX_PARTS 8
#define TOP_DEFAULT 10

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: policy-milter-ctl [-c FILE] [--json] COMMAND [ARGS]\n"
	    "\n"
	    "See and steer what the policy-milter daemons share in Redis.\n"
	    "\n"
	    "  stats [POLICY]                     outcome counters of every MTA\n"
	    "  show POLICY KEY...                 usage of a rate-limit key, the limit\n"
	    "                                     in force, when there is room\n"
	    "  reset POLICY KEY...                forget that key's usage\n"
	    "  top POLICY [-n N] [--watch SECS]   keys refused most, most recently\n"
	    "  block add POLICY ENTRY [--for DURATION]\n"
	    "  block del POLICY ENTRY\n"
	    "  block list POLICY                  a live list and its expiry times\n"
	    "  override set POLICY KEY... --limit N [--for DURATION]\n"
	    "  override del POLICY KEY...\n"
	    "  override list POLICY               per-key limits, read by the next\n"
	    "                                     transaction without a reload\n"
	    "  explain --client IP [--helo NAME] [--sender ADDR] [--rcpt ADDR]...\n"
	    "          [--size N] [--sasl USER]   run the policies, counting nothing\n"
	    "  check [--connect]                  the same as policy-milter -n\n"
	    "\n"
	    "  -c FILE   configuration file (default %s)\n"
	    "  --json    one JSON document on stdout (read commands)\n"
	    "\n"
	    "KEY is one argument per part of the policy's key, in its order, written\n"
	    "as you like: it is made canonical as the daemon makes it.  DURATION is\n"
	    "seconds or a number with ms, s, m, h or d.\n"
	    "Exit status: 0 ok, 1 not found, refused or Redis failed, 2 usage or\n"
	    "configuration error.\n", DEFAULT_CONFIG);
}

int
ctl_error(int status, const char *fmt, ...)
{
	va_list ap;

	fputs("policy-milter-ctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return status;
}

/*
 * The length of the UTF-8 sequence at s[0..len) (2 to 4), or 0 when it is
 * not one, or one for a C1 control character (U+0080 to U+009F), which a
 * terminal would obey.
 */
static size_t
utf8_seq(const unsigned char *s, size_t len)
{
	size_t n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 :
	    s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
	uint32_t cp;

	if (n == 0 || n > len)
		return 0;
	cp = s[0] & (0x7f >> n);
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	/* overlong, surrogates, beyond U+10FFFF, C1 controls */
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp < 0xa0)
		return 0;
	return n;
}

/* JSON text is UTF-8: an octet that is not part of a UTF-8 character is
 * written as the code point of the same number (\u00XX), like Latin-1. */
void
ctl_json_str(const char *s, size_t len)
{
	putchar('"');
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		size_t n;

		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch == '\n')
			fputs("\\n", stdout);
		else if (ch < 0x20 || ch == 0x7f)
			printf("\\u%04x", ch);
		else if (ch < 0x80)
			putchar(ch);
		else if ((n = utf8_seq((const unsigned char *)s + i, len - i)) > 0) {
			fwrite(s + i, 1, n, stdout);
			i += n - 1;
		} else
			printf("\\u%04x", ch);
	}
	putchar('"');
}

void
ctl_print_text(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		size_t n;

		if (ch >= 0x20 && ch < 0x7f && ch != '\\')
			putchar(ch);
		else if (ch >= 0x80 && (n = utf8_seq((const unsigned char *)s + i, len - i)) > 0) {
			fwrite(s + i, 1, n, stdout);
			i += n - 1;
		} else
			printf("\\x%02x", ch);
	}
}

void
ctl_format_time(uint64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	localtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S %Z", &tm);
}

static void
report_stderr(void *arg, bool is_error, const char *msg)
{
	(void)arg;
	(void)is_error;
	fprintf(stderr, "%s\n", msg);
}

/* ---- policies, keys and arguments */

static const struct cfg_policy *
find_policy(struct ctl *c, const char *name)
{
	const char *names[64];
	size_t n = 0;
	const char *guess;

	for (size_t i = 0; i < c->cfg->npolicies; i++)
		if (strcmp(c->cfg->policies[i].name, name) == 0)
			return &c->cfg->policies[i];
	for (size_t i = 0; i < c->cfg->npolicies && n + 1 < 64; i++)
		names[n++] = c->cfg->policies[i].name;
	names[n] = NULL;
	guess = cfg_suggest(name, names);
	ctl_error(CTL_USAGE, "%s has no policy \"%s\"%s%s%s", c->path, name,
	    guess ? " (did you mean \"" : "", guess ? guess : "", guess ? "\"?)" : "");
	return NULL;
}

/* A rate limit by name, with Redis; NULL after saying why. */
static const struct cfg_policy *
find_counting(struct ctl *c, const char *name)
{
	const struct cfg_policy *p = find_policy(c, name);

	if (p != NULL && p->type->key_of == NULL) {
		ctl_error(CTL_USAGE, "policy \"%s\" is a %s policy, not a rate limit", name,
		    p->type->name);
		return NULL;
	}
	return p;
}

/* The policy's own key from the parts given; -1 after saying why. */
static int
key_of(const struct cfg_policy *p, char **parts, size_t n, struct policy_count *cnt)
{
	char why[512];

	if (p->type->key_of(p->settings, (const char *const *)parts, n, cnt, why,
	    sizeof(why)) != 0) {
		const char *names[MAX_PARTS];
		size_t k = p->type->parts_of(p->settings, names, MAX_PARTS);

		ctl_error(CTL_USAGE, "policy \"%s\": %s", p->name, why);
		fprintf(stderr, "policy-milter-ctl: give its key as:");
		for (size_t i = 0; i < k; i++)
			fprintf(stderr, " %s", names[i]);
		fputc('\n', stderr);
		return -1;
	}
	return 0;
}

/*
 * Split argv into positional arguments and the options a command takes
 * (given in opts as "--limit", "--for", "-n", "--watch": each with a value;
 * "--json" anywhere).  Returns the number of positionals in pos, or -1
 * after saying why.
 */
struct opt_val {
	const char *name;
	const char *value;         /* NULL: not given */
};

static int
split_args(struct ctl *c, int argc, char **argv, struct opt_val *opts, size_t nopts,
    char **pos, size_t maxpos)
{
	size_t n = 0;

	for (int i = 0; i < argc; i++) {
		size_t j;

		if (strcmp(argv[i], "--json") == 0) {
			c->json = true;
			continue;
		}
		if (strcmp(argv[i], "--") == 0) {
			for (i++; i < argc && n < maxpos; i++)
				pos[n++] = argv[i];
			break;
		}
		for (j = 0; j < nopts && strcmp(argv[i], opts[j].name) != 0; j++)
			;
		if (j < nopts) {
			if (i + 1 >= argc) {
				ctl_error(CTL_USAGE, "%s needs a value", argv[i]);
				return -1;
			}
			opts[j].value = argv[++i];
			continue;
		}
		if (argv[i][0] == '-' && argv[i][1] != '\0') {
			ctl_error(CTL_USAGE, "unknown option %s (see --help)", argv[i]);
			return -1;
		}
		if (n == maxpos) {
			ctl_error(CTL_USAGE, "too many arguments (see --help)");
			return -1;
		}
		pos[n++] = argv[i];
	}
	return (int)n;
}

/* A DURATION option (NULL: 0, for ever).  -1 after saying why. */
static int
duration_opt(const char *text, uint64_t *ms)
{
	char why[256];

	*ms = 0;
	if (text == NULL)
		return 0;
	if (units_duration_ms(text, ms, why, sizeof(why)) != 0) {
		ctl_error(CTL_USAGE, "--for %s: %s", text, why);
		return -1;
	}
	if (*ms == 0) {
		ctl_error(CTL_USAGE, "--for %s: must be more than 0", text);
		return -1;
	}
	return 0;
}

static int
number_opt(const char *name, const char *text, uint64_t max, uint64_t *v)
{
	char *end;

	errno = 0;
	*v = text != NULL ? strtoull(text, &end, 10) : 0;
	if (text == NULL || text[0] < '0' || text[0] > '9' || *end != '\0' ||
	    errno != 0 || *v > max) {
		ctl_error(CTL_USAGE, "%s must be a number from 0 to %" PRIu64, name, max);
		return -1;
	}
	return 0;
}

/* ---- Redis */

/* A reply, or NULL after saying why: no reply (err), or an error reply. */
static redisReply *
checked(redisReply *r, const char *err)
{
	if (r == NULL)
		ctl_error(CTL_NO, "redis: %s", err);
	else if (r->type == REDIS_REPLY_ERROR) {
		ctl_error(CTL_NO, "redis: %s", r->str);
		store_reply_free(r);
		r = NULL;
	}
	return r;
}

static redisReply *
command(struct ctl *c, int argc, const char **argv, const size_t *lens)
{
	char err[512] = "";

	return checked(store_command(c->cfg->redis->store, argc, argv, lens, err,
	    sizeof(err)), err);
}

static redisReply *
eval(struct ctl *c, struct store_script *script, int nkeys, const char **keys,
    int nargs, const char **args)
{
	char err[512] = "";

	return checked(store_eval(c->cfg->redis->store, script, nkeys, keys, NULL,
	    nargs, args, NULL, err, sizeof(err)), err);
}

static uint64_t
reply_u64(const redisReply *r)
{
	if (r == NULL)
		return 0;
	if (r->type == REDIS_REPLY_INTEGER)
		return r->integer > 0 ? (uint64_t)r->integer : 0;
	if (r->type == REDIS_REPLY_STRING)
		return strtoull(r->str, NULL, 10);
	return 0;
}

/* Redis's clock in ms from a TIME reply. */
static uint64_t
time_ms(const redisReply *r)
{
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
		return 0;
	return reply_u64(r->element[0]) * 1000 + reply_u64(r->element[1]) / 1000;
}

/* An override value "<limit> <expiry ms>"; false when malformed. */
static bool
parse_override(const char *v, uint64_t *limit, uint64_t *expiry)
{
	char *end;

	*limit = strtoull(v, &end, 10);
	if (end == v || *end != ' ')
		return false;
	*expiry = strtoull(end + 1, &end, 10);
	return *end == '\0';
}

/* ---- stats */

struct stats_row {
	const char *name;
	char key[300];
	const char *argv[2];
	uint64_t v[STATS_NFIELDS];
};

static int
cmd_stats(struct ctl *c, int argc, char **argv)
{
	struct stats_row *rows;
	struct store_cmd *cmds;
	redisReply **replies;
	char *pos[2], err[512];
	size_t n = 0, w = 6;
	int np = split_args(c, argc, argv, NULL, 0, pos, 2), rc = CTL_OK;

	if (np < 0 || np > 1)
		return np < 0 ? CTL_USAGE : ctl_error(CTL_USAGE, "usage: stats [POLICY]");
	if (np == 1 && find_policy(c, pos[0]) == NULL)
		return CTL_USAGE;
	rows = calloc(c->cfg->npolicies + 1, sizeof(*rows));
	cmds = calloc(c->cfg->npolicies + 1, sizeof(*cmds));
	replies = calloc(c->cfg->npolicies + 1, sizeof(*replies));
	if (rows == NULL || cmds == NULL || replies == NULL) {
		rc = ctl_error(CTL_NO, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < c->cfg->npolicies; i++) {
		struct stats_row *r = &rows[n];

		r->name = c->cfg->policies[i].name;
		if (np == 1 && strcmp(r->name, pos[0]) != 0)
			continue;
		snprintf(r->key, sizeof(r->key), "%sstats:%s", c->cfg->redis->prefix, r->name);
		r->argv[0] = "HGETALL";
		r->argv[1] = r->key;
		cmds[n] = (struct store_cmd){ 2, r->argv, NULL };
		if (strlen(r->name) > w)
			w = strlen(r->name);
		n++;
	}
	if (n > 0 && store_pipeline(c->cfg->redis->store, n, cmds, replies, err,
	    sizeof(err)) != 0) {
		rc = ctl_error(CTL_NO, "redis: %s", err);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; replies[i]->type == REDIS_REPLY_ARRAY &&
		    j + 1 < replies[i]->elements; j += 2)
			for (int f = 0; f < STATS_NFIELDS; f++)
				if (replies[i]->element[j]->type == REDIS_REPLY_STRING &&
				    strcmp(replies[i]->element[j]->str,
				    stats_field_name((enum stats_field)f)) == 0)
					rows[i].v[f] = reply_u64(replies[i]->element[j + 1]);
		store_reply_free(replies[i]);
	}
	if (c->json) {
		printf("{\"policies\":[");
		for (size_t i = 0; i < n; i++) {
			printf("%s{\"policy\":", i ? "," : "");
			ctl_json_str(rows[i].name, strlen(rows[i].name));
			for (int f = 0; f < STATS_NFIELDS; f++)
				printf(",\"%s\":%" PRIu64, stats_field_name((enum stats_field)f),
				    rows[i].v[f]);
			printf("}");
		}
		printf("]}\n");
		goto out;
	}
	printf("%-*s", (int)w, "POLICY");
	for (int f = 0; f < STATS_NFIELDS; f++)
		printf("  %12s", stats_field_name((enum stats_field)f));
	printf("\n");
	for (size_t i = 0; i < n; i++) {
		printf("%-*s", (int)w, rows[i].name);
		for (int f = 0; f < STATS_NFIELDS; f++)
			printf("  %12" PRIu64, rows[i].v[f]);
		printf("\n");
	}
out:
	free(rows);
	free(cmds);
	free(replies);
	return rc;
}

/* ---- show, reset */

/* A rate limit's configured limit and (window not NULL) window: what it
 * counts for a message with every key part set. */
static uint64_t
policy_limit(const struct cfg_policy *p, uint64_t *window)
{
	struct policy_msg m = { "192.0.2.1", "x", "x@x", "x@x", "x", 0, false, 0, 0 };
	struct policy_count *cnt = calloc(1, sizeof(*cnt));
	uint64_t limit = 0;

	if (cnt != NULL && p->type->count(p->settings, POLICY_RCPT, &m, cnt)) {
		limit = cnt->limit;
		if (window != NULL)
			*window = cnt->window_ms;
	}
	free(cnt);
	return limit;
}

/* The counter key of policy p for the key parts pos[0..n). */
struct counted {
	struct policy_count cnt;
	char key[POLICY_KEY_MAX + 160];
	size_t keylen, keyoff;
};

static int
counted_of(struct ctl *c, const struct cfg_policy *p, char **parts, size_t n,
    struct counted *k)
{
	if (key_of(p, parts, n, &k->cnt) != 0)
		return -1;
	k->keyoff = limiter_counter_key(c->cfg->redis->prefix, p->name, k->cnt.key,
	    k->cnt.keylen, k->key, sizeof(k->key), &k->keylen);
	if (k->keyoff == 0) {
		ctl_error(CTL_USAGE, "the key is too long");
		return -1;
	}
	return 0;
}

/* One peek of the script for keys k[0..n) of p: usage, limit in force,
 * retry.  -1 after saying why. */
static int
peek(struct ctl *c, const struct cfg_policy *p, const struct counted *k, size_t n,
    struct limiter_result *res)
{
	struct limiter_check *chk = calloc(n ? n : 1, sizeof(*chk));
	char err[512];
	bool refused;
	size_t stop;
	int rc;

	if (chk == NULL) {
		ctl_error(CTL_NO, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		chk[i] = (struct limiter_check){ .key = k[i].key, .keylen = k[i].keylen,
		    .limit = k[i].cnt.limit, .window_ms = k[i].cnt.window_ms, .amount = 1,
		    .on_over = LIMITER_SOFT, .override_key = p->keys->override_key,
		    .keyoff = k[i].keyoff };
	rc = limiter_run(c->cfg->redis->store, chk, n, LIMITER_PEEK, NULL, 0, NULL, 0,
	    &refused, &stop, res, err, sizeof(err));
	free(chk);
	if (rc != 0)
		ctl_error(CTL_NO, "redis: %s", err);
	return rc;
}

static int
cmd_show(struct ctl *c, int argc, char **argv)
{
	char *pos[MAX_PARTS + 1], window[32], retry[32], when[64];
	const struct cfg_policy *p;
	struct counted k;
	struct limiter_result res;
	redisReply *ov;
	uint64_t ov_limit = 0, ov_exp = 0;
	bool has_ov = false;
	int np = split_args(c, argc, argv, NULL, 0, pos, MAX_PARTS + 1);

	if (np < 2)
		return np < 0 ? CTL_USAGE : ctl_error(CTL_USAGE, "usage: show POLICY KEY...");
	if ((p = find_counting(c, pos[0])) == NULL ||
	    counted_of(c, p, pos + 1, (size_t)np - 1, &k) != 0)
		return CTL_USAGE;
	if (peek(c, p, &k, 1, &res) != 0)
		return CTL_NO;
	{
		const char *a[3] = { "HGET", p->keys->override_key, k.cnt.key };
		size_t l[3] = { 4, strlen(a[1]), k.cnt.keylen };
		if ((ov = command(c, 3, a, l)) == NULL)
			return CTL_NO;
		has_ov = ov->type == REDIS_REPLY_STRING &&
		    parse_override(ov->str, &ov_limit, &ov_exp) && res.limit == ov_limit &&
		    ov_limit != k.cnt.limit;
		store_reply_free(ov);
	}
	units_format_duration(k.cnt.window_ms, window, sizeof(window));
	units_format_duration(res.retry_ms ? res.retry_ms : k.cnt.window_ms, retry,
	    sizeof(retry));
	if (c->json) {
		printf("{\"policy\":");
		ctl_json_str(p->name, strlen(p->name));
		printf(",\"key\":");
		ctl_json_str(k.cnt.key, k.cnt.keylen);
		printf(",\"count\":%" PRIu64 ",\"limit\":%" PRIu64 ",\"configured_limit\":%"
		    PRIu64 ",\"window_seconds\":%" PRIu64 ",\"full\":%s,\"retry_after_seconds\":%"
		    PRIu64, res.count, res.limit, k.cnt.limit, k.cnt.window_ms / 1000,
		    res.over ? "true" : "false",
		    res.over ? (res.retry_ms + 999) / 1000 : 0);
		if (has_ov && ov_exp > 0)
			printf(",\"override\":{\"limit\":%" PRIu64 ",\"expires\":%.3f}",
			    ov_limit, (double)ov_exp / 1000);
		else if (has_ov)
			printf(",\"override\":{\"limit\":%" PRIu64 ",\"expires\":null}", ov_limit);
		else
			printf(",\"override\":null");
		printf("}\n");
		return CTL_OK;
	}
	printf("policy  %s (%s per %s)\nkey     ", p->name,
	    k.cnt.unit == POLICY_UNIT_BYTES ? "bytes" : k.cnt.unit ==
	    POLICY_UNIT_RECIPIENTS ? "recipients" : "messages", window);
	ctl_print_text(k.cnt.key, k.cnt.keylen);
	printf("\nusage   %" PRIu64 " of %" PRIu64 " in the last %s\n", res.count, res.limit,
	    window);
	if (has_ov) {
		if (ov_exp)
			ctl_format_time(ov_exp, when, sizeof(when));
		printf("limit   %" PRIu64 ": override until %s (configured: %" PRIu64 ")\n",
		    ov_limit, ov_exp ? when : "removed", k.cnt.limit);
	} else {
		printf("limit   %" PRIu64 " (configured)\n", k.cnt.limit);
	}
	if (res.over && res.retry_ms == 0 && has_ov && ov_exp > 0)
		printf("full    the next one is refused; no room while the override "
		    "lasts (until %s)\n", when);
	else if (res.over && res.retry_ms == 0)
		printf("full    the next one is refused; no room while the limit is %" PRIu64
		    "\n", res.limit);
	else if (res.over)
		printf("full    the next one is refused; room again in %s\n", retry);
	else
		printf("room    %" PRIu64 " more\n", res.limit - res.count);
	return CTL_OK;
}

static int
cmd_reset(struct ctl *c, int argc, char **argv)
{
	char *pos[MAX_PARTS + 1], err[512];
	const struct cfg_policy *p;
	struct counted k;
	redisReply *r[3];
	int np = split_args(c, argc, argv, NULL, 0, pos, MAX_PARTS + 1), rc;

	if (np < 2)
		return np < 0 ? CTL_USAGE : ctl_error(CTL_USAGE, "usage: reset POLICY KEY...");
	if ((p = find_counting(c, pos[0])) == NULL ||
	    counted_of(c, p, pos + 1, (size_t)np - 1, &k) != 0)
		return CTL_USAGE;
	{
		/* The usage, and the key's place in the refusal record. */
		const char *a0[2] = { "DEL", k.key }, *a1[3] = { "ZREM", p->keys->top_key,
		    k.cnt.key }, *a2[3] = { "HDEL", p->keys->topn_key, k.cnt.key };
		size_t l0[2] = { 3, k.keylen }, l1[3] = { 4, strlen(a1[1]), k.cnt.keylen },
		    l2[3] = { 4, strlen(a2[1]), k.cnt.keylen };
		struct store_cmd cmds[3] = { { 2, a0, l0 }, { 3, a1, l1 }, { 3, a2, l2 } };
		if (store_pipeline(c->cfg->redis->store, 3, cmds, r, err, sizeof(err)) != 0)
			return ctl_error(CTL_NO, "redis: %s", err);
	}
	rc = r[0]->type == REDIS_REPLY_INTEGER && r[0]->integer == 1 ? CTL_OK : CTL_NO;
	for (int i = 0; i < 3; i++)
		store_reply_free(r[i]);
	printf("%s: ", p->name);
	ctl_print_text(k.cnt.key, k.cnt.keylen);
	printf(rc == CTL_OK ? ": usage forgotten\n" : ": no usage recorded\n");
	return rc;
}

/* ---- top */

struct top_row {
	const char *key;
	size_t len;
	uint64_t last_ms, refusals;
};

static int
top_cmp(const void *a, const void *b)
{
	const struct top_row *x = a, *y = b;

	if (x->refusals != y->refusals)
		return x->refusals < y->refusals ? 1 : -1;
	return x->last_ms < y->last_ms ? 1 : x->last_ms > y->last_ms ? -1 : 0;
}

/* One screen of top: the record, then one peek for the usage of the rows. */
static int
top_once(struct ctl *c, const struct cfg_policy *p, size_t limit, bool watching)
{
	const char *a0[5] = { "ZREVRANGE", p->keys->top_key, "0", "-1", "WITHSCORES" },
	    *a1[2] = { "HGETALL", p->keys->topn_key }, *a2[1] = { "TIME" };
	struct store_cmd cmds[3] = { { 5, a0, NULL }, { 2, a1, NULL }, { 1, a2, NULL } };
	redisReply *r[3];
	struct top_row *rows = NULL;
	struct counted *k = NULL;
	struct limiter_result *res = NULL;
	uint64_t now, window = 0;
	size_t n = 0;
	char err[512], ago[32], win[32];
	int rc = CTL_NO;

	if (store_pipeline(c->cfg->redis->store, 3, cmds, r, err, sizeof(err)) != 0)
		return ctl_error(CTL_NO, "redis: %s", err);
	now = time_ms(r[2]);
	policy_limit(p, &window);
	if (r[0]->type != REDIS_REPLY_ARRAY || r[1]->type != REDIS_REPLY_ARRAY) {
		ctl_error(CTL_NO, "redis: %s is not a sorted set", p->keys->top_key);
		goto out;
	}
	rows = calloc(r[0]->elements / 2 + 1, sizeof(*rows));
	if (rows == NULL) {
		ctl_error(CTL_NO, "out of memory");
		goto out;
	}
	for (size_t i = 0; i + 1 < r[0]->elements; i += 2) {
		struct top_row *row = &rows[n];

		row->key = r[0]->element[i]->str;
		row->len = r[0]->element[i]->len;
		row->last_ms = reply_u64(r[0]->element[i + 1]);
		if (window > 0 && row->last_ms + window < now)
			continue;       /* not refused in the last window */
		for (size_t j = 0; j + 1 < r[1]->elements; j += 2)
			if (r[1]->element[j]->len == row->len &&
			    memcmp(r[1]->element[j]->str, row->key, row->len) == 0)
				row->refusals = reply_u64(r[1]->element[j + 1]);
		n++;
	}
	qsort(rows, n, sizeof(*rows), top_cmp);
	if (n > limit)
		n = limit;
	k = calloc(n + 1, sizeof(*k));
	res = calloc(n + 1, sizeof(*res));
	if (k == NULL || res == NULL) {
		ctl_error(CTL_NO, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		size_t len = rows[i].len < POLICY_KEY_MAX - 1 ? rows[i].len : POLICY_KEY_MAX - 1;

		k[i].cnt.limit = policy_limit(p, &k[i].cnt.window_ms);
		memcpy(k[i].cnt.key, rows[i].key, len);
		k[i].cnt.keylen = len;
		k[i].keyoff = limiter_counter_key(c->cfg->redis->prefix, p->name, rows[i].key,
		    len, k[i].key, sizeof(k[i].key), &k[i].keylen);
	}
	if (n > 0 && peek(c, p, k, n, res) != 0)
		goto out;
	units_format_duration(window, win, sizeof(win));
	if (c->json) {
		printf("{\"policy\":");
		ctl_json_str(p->name, strlen(p->name));
		printf(",\"window_seconds\":%" PRIu64 ",\"keys\":[", window / 1000);
		for (size_t i = 0; i < n; i++) {
			printf("%s{\"key\":", i ? "," : "");
			ctl_json_str(rows[i].key, rows[i].len);
			printf(",\"refusals\":%" PRIu64 ",\"last_refused\":%.3f,\"count\":%" PRIu64
			    ",\"limit\":%" PRIu64 "}", rows[i].refusals,
			    (double)rows[i].last_ms / 1000, res[i].count, res[i].limit);
		}
		printf("]}\n");
	} else {
		if (watching) {
			char t[64];
			ctl_format_time(now, t, sizeof(t));
			printf("\033[H\033[2J%s: keys refused in the last %s, at %s\n\n", p->name,
			    win, t);
		}
		if (n == 0)
			printf("no key of %s was refused in the last %s\n", p->name, win);
		else
			printf("%8s  %9s  %15s  %s\n", "REFUSALS", "LAST", "USAGE/LIMIT", "KEY");
		for (size_t i = 0; i < n; i++) {
			char usage[48];
			units_format_duration(now > rows[i].last_ms ? now - rows[i].last_ms : 0,
			    ago, sizeof(ago));
			snprintf(usage, sizeof(usage), "%" PRIu64 "/%" PRIu64, res[i].count,
			    res[i].limit);
			printf("%8" PRIu64 "  %5s ago  %15s  ", rows[i].refusals, ago, usage);
			ctl_print_text(rows[i].key, rows[i].len);
			printf("\n");
		}
	}
	fflush(stdout);
	rc = CTL_OK;
out:
	free(rows);
	free(k);
	free(res);
	for (int i = 0; i < 3; i++)
		store_reply_free(r[i]);
	return rc;
}

static int
cmd_top(struct ctl *c, int argc, char **argv)
{
	struct opt_val o[2] = { { "-n", NULL }, { "--watch", NULL } };
	char *pos[2];
	const struct cfg_policy *p;
	uint64_t n = TOP_DEFAULT, every = 0;
	int np = split_args(c, argc, argv, o, 2, pos, 2), rc;

	if (np != 1)
		return np < 0 ? CTL_USAGE : ctl_error(CTL_USAGE,
		    "usage: top POLICY [-n N] [--watch SECONDS]");
	if (o[0].value != NULL && number_opt("-n", o[0].value, 256, &n) != 0)
		return CTL_USAGE;
	if (o[1].value != NULL && number_opt("--watch", o[1].value, 86400, &every) != 0)
		return CTL_USAGE;
	if (o[1].value != NULL && every == 0)
		return ctl_error(CTL_USAGE, "--watch must be at least 1 second");
	if ((p = find_counting(c, pos[0])) == NULL)
		return CTL_USAGE;
	for (;;) {
		rc = top_once(c, p, (size_t)n, every > 0);
		if (every == 0 || rc != CTL_OK)
			return rc;
		sleep((unsigned)every);
	}
}

/* ---- block */

/* ZADD with the expiry in Redis's clock: ARGV member, ms from now (0: never). */
static struct store_script block_add_script = { "local t = redis.call('TIME')\n"
    "local score = '+inf'\n"
    "if tonumber(ARGV[2]) > 0 then\n"
    "  score = string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1e6 + "
    "tonumber(ARGV[2]) / 1000)\n"
    "end\n"
    "return { redis.call('ZADD', KEYS[1], score, ARGV[1]), score }\n", false, "", 0 };

static const struct cfg_policy *
find_live(struct ctl *c, const char *name)
{
	const struct cfg_policy *p = find_policy(c, name);

	if (p != NULL && (p->type->live_entry == NULL || !p->live)) {
		ctl_error(CTL_USAGE, "policy \"%s\" has no live list (a block policy with "
		    "redis = true)", name);
		return NULL;
	}
	return p;
}

static int
cmd_block(struct ctl *c, int argc, char **argv)
{
	struct opt_val o[1] = { { "--for", NULL } };
	char *pos[3], key[400], member[POLICY_MEMBER_VALUE_MAX * 2 + 8], why[512];
	const struct cfg_policy *p;
	uint64_t for_ms;
	int np = split_args(c, argc, argv, o, 1, pos, 3), rc = CTL_OK;
	redisReply *r;

	if (np < 2 || !((strcmp(pos[0], "add") == 0 && np == 3) ||
	    (strcmp(pos[0], "del") == 0 && np == 3 && o[0].value == NULL) ||
	    (strcmp(pos[0], "list") == 0 && np == 2 && o[0].value == NULL)))
		return np < 0 ? CTL_USAGE : ctl_error(CTL_USAGE, "usage: block add POLICY "
		    "ENTRY [--for DURATION] | block del POLICY ENTRY | block list POLICY");
	if ((p = find_live(c, pos[1])) == NULL || duration_opt(o[0].value, &for_ms) != 0)
		return CTL_USAGE;
	snprintf(key, sizeof(key), "%sblock:%s", c->cfg->redis->prefix, p->name);
	if (np == 3 && p->type->live_entry(p->settings, pos[2], member, sizeof(member),
	    why, sizeof(why)) != 0)
		return ctl_error(CTL_USAGE, "policy \"%s\": %s", p->name, why);

	if (strcmp(pos[0], "add") == 0) {
		char ms[24];
		const char *keys[1] = { key }, *args[2] = { member, ms };

		snprintf(ms, sizeof(ms), "%" PRIu64, for_ms);
		if ((r = eval(c, &block_add_script, 1, keys, 2, args)) == NULL)
			return CTL_NO;
		printf("%s: %s %s", p->name, reply_u64(r->element[0]) ? "added" : "updated",
		    member);
		if (for_ms > 0) {
			char when[64];
			ctl_format_time((uint64_t)(strtod(r->element[1]->str, NULL) * 1000), when,
			    sizeof(when));
			printf(", until %s\n", when);
		} else {
			printf(", for good\n");
		}
		store_reply_free(r);
		return CTL_OK;
	}
	if (strcmp(pos[0], "del") == 0) {
		const char *a[3] = { "ZREM", key, member };
		if ((r = command(c, 3, a, NULL)) == NULL)
			return CTL_NO;
		rc = r->integer == 1 ? CTL_OK : CTL_NO;
		printf("%s: %s %s\n", p->name, member, rc == CTL_OK ? "removed" :
		    "is not in the live list");
		store_reply_free(r);
		return rc;
	}
	{
		const char *a0[5] = { "ZRANGE", key, "0", "-1", "WITHSCORES" }, *a1[1] = { "TIME" };
		struct store_cmd cmds[2] = { { 5, a0, NULL }, { 1, a1, NULL } };
		redisReply *rs[2];
		uint64_t now;
		size_t shown = 0;

		if (store_pipeline(c->cfg->redis->store, 2, cmds, rs, why, sizeof(why)) != 0)
			return ctl_error(CTL_NO, "redis: %s", why);
		now = time_ms(rs[1]);
		if (rs[0]->type != REDIS_REPLY_ARRAY) {
			rc = ctl_error(CTL_NO, "redis: %s: %s", key, rs[0]->type ==
			    REDIS_REPLY_ERROR ? rs[0]->str : "not a sorted set");
			goto list_out;
		}
		if (c->json) {
			printf("{\"policy\":");
			ctl_json_str(p->name, strlen(p->name));
			printf(",\"entries\":[");
		}
		for (size_t i = 0; i + 1 < rs[0]->elements; i += 2) {
			const redisReply *m = rs[0]->element[i];
			double score = strtod(rs[0]->element[i + 1]->str, NULL);
			bool never = score >= 9e15;
			char when[64];

			if (!never && score * 1000 <= (double)now)
				continue;       /* expired: ignored, deleted as lookups pass */
			if (c->json) {
				printf("%s{\"entry\":", shown ? "," : "");
				ctl_json_str(m->str, m->len);
				if (never)
					printf(",\"expires\":null}");
				else
					printf(",\"expires\":%.3f}", score);
			} else {
				if (never)
					snprintf(when, sizeof(when), "never");
				else
					ctl_format_time((uint64_t)(score * 1000), when, sizeof(when));
				printf("%-26s  ", when);
				ctl_print_text(m->str, m->len);
				printf("\n");
			}
			shown++;
		}
		if (c->json)
			printf("]}\n");
		else if (shown == 0)
			printf("the live list of %s is empty\n", p->name);
list_out:
		store_reply_free(rs[0]);
		store_reply_free(rs[1]);
		return rc;
	}
}

/* ---- override */

/* HSET "<limit> <expiry ms>" with the expiry in Redis's clock. */
static struct store_script override_script = { "local t = redis.call('TIME')\n"
    "local exp = 0\n"
    "if tonumber(ARGV[3]) > 0 then\n"
    "  exp = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + "
    "tonumber(ARGV[3])\n"
    "end\n"
    "local v = ARGV[2] .. ' ' .. string.format('%.0f', exp)\n"
    "redis.call('HSET', KEYS[1], ARGV[1], v)\n"
    "return v\n", false, "", 0 };

static int
cmd_override(struct ctl *c, int argc, char **argv)
{
	struct opt_val o[2] = { { "--limit", NULL }, { "--for", NULL } };
	char *pos[MAX_PARTS + 2], when[64], err[512];
	const struct cfg_policy *p;
	struct counted k;
	uint64_t limit = 0, for_ms = 0, l, e;
	int np = split_args(c, argc, argv, o, 2, pos, MAX_PARTS + 2), rc = CTL_OK;
	redisReply *r;
	bool set, del, list;

	set = np >= 3 && strcmp(pos[0], "set") == 0 && o[0].value != NULL;
	del = np >= 3 && strcmp(pos[0], "del") == 0 && o[0].value == NULL && o[1].value == NULL;
	list = np == 2 && strcmp(pos[0], "list") == 0 && o[0].value == NULL && o[1].value == NULL;
	if (!set && !del && !list)
		return np < 0 ? CTL_USAGE : ctl_error(CTL_USAGE, "usage: override set POLICY "
		    "KEY... --limit N [--for DURATION] | override del POLICY KEY... | "
		    "override list POLICY");
	if ((p = find_counting(c, pos[1])) == NULL)
		return CTL_USAGE;
	if (set && (number_opt("--limit", o[0].value, (1ULL << 53) - 1, &limit) != 0 ||
	    duration_opt(o[1].value, &for_ms) != 0))
		return CTL_USAGE;
	if (!list && counted_of(c, p, pos + 2, (size_t)np - 2, &k) != 0)
		return CTL_USAGE;

	if (set) {
		char lim[24], ms[24];
		const char *keys[1] = { p->keys->override_key }, *args[3] = { k.cnt.key, lim, ms };

		snprintf(lim, sizeof(lim), "%" PRIu64, limit);
		snprintf(ms, sizeof(ms), "%" PRIu64, for_ms);
		if ((r = eval(c, &override_script, 1, keys, 3, args)) == NULL)
			return CTL_NO;
		printf("%s: ", p->name);
		ctl_print_text(k.cnt.key, k.cnt.keylen);
		if (r->type == REDIS_REPLY_STRING && parse_override(r->str, &l, &e) && e > 0) {
			ctl_format_time(e, when, sizeof(when));
			printf(": limit %" PRIu64 " until %s (configured: %" PRIu64 ")\n", limit,
			    when, k.cnt.limit);
		} else {
			printf(": limit %" PRIu64 " until removed (configured: %" PRIu64 ")\n",
			    limit, k.cnt.limit);
		}
		store_reply_free(r);
		return CTL_OK;
	}
	if (del) {
		const char *a[3] = { "HDEL", p->keys->override_key, k.cnt.key };
		size_t lens[3] = { 4, strlen(a[1]), k.cnt.keylen };
		if ((r = command(c, 3, a, lens)) == NULL)
			return CTL_NO;
		rc = r->integer == 1 ? CTL_OK : CTL_NO;
		printf("%s: ", p->name);
		ctl_print_text(k.cnt.key, k.cnt.keylen);
		printf(rc == CTL_OK ? ": override removed (limit %" PRIu64 " again)\n" :
		    ": has no override (limit %" PRIu64 ")\n", k.cnt.limit);
		store_reply_free(r);
		return rc;
	}
	{
		const char *a0[2] = { "HGETALL", p->keys->override_key }, *a1[1] = { "TIME" };
		struct store_cmd cmds[2] = { { 2, a0, NULL }, { 1, a1, NULL } };
		redisReply *rs[2];
		uint64_t now;
		size_t shown = 0;

		if (store_pipeline(c->cfg->redis->store, 2, cmds, rs, err, sizeof(err)) != 0)
			return ctl_error(CTL_NO, "redis: %s", err);
		now = time_ms(rs[1]);
		if (c->json) {
			printf("{\"policy\":");
			ctl_json_str(p->name, strlen(p->name));
			printf(",\"configured_limit\":%" PRIu64 ",\"overrides\":[",
			    policy_limit(p, NULL));
		}
		for (size_t i = 0; rs[0]->type == REDIS_REPLY_ARRAY &&
		    i + 1 < rs[0]->elements; i += 2) {
			const redisReply *f = rs[0]->element[i], *v = rs[0]->element[i + 1];

			if (!parse_override(v->str, &l, &e) || (e > 0 && e <= now))
				continue;       /* not in force */
			if (c->json) {
				printf("%s{\"key\":", shown ? "," : "");
				ctl_json_str(f->str, f->len);
				printf(",\"limit\":%" PRIu64 ",\"expires\":", l);
				if (e > 0)
					printf("%.3f}", (double)e / 1000);
				else
					printf("null}");
			} else {
				if (e > 0)
					ctl_format_time(e, when, sizeof(when));
				printf("%10" PRIu64 "  %-26s  ", l, e > 0 ? when : "until removed");
				ctl_print_text(f->str, f->len);
				printf("\n");
			}
			shown++;
		}
		if (c->json)
			printf("]}\n");
		else if (shown == 0)
			printf("%s has no override (limit %" PRIu64 ")\n", p->name,
			    policy_limit(p, NULL));
		store_reply_free(rs[0]);
		store_reply_free(rs[1]);
		return CTL_OK;
	}
}

/* ---- main */

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "json", no_argument, NULL, 'J' },
		{ NULL, 0, NULL, 0 },
	};
	static const struct {
		const char *name;
		int (*run)(struct ctl *, int, char **);
	} cmds[] = {
		{ "stats", cmd_stats }, { "show", cmd_show }, { "reset", cmd_reset },
		{ "top", cmd_top }, { "block", cmd_block }, { "override", cmd_override },
		{ "explain", ctl_explain },
	};
	struct ctl c = { NULL, DEFAULT_CONFIG, false };
	const char *cmd;
	int ch, rc;
	size_t i;

	/* '+': options after the command are the command's. */
	while ((ch = getopt_long(argc, argv, "+c:hV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': c.path = optarg; break;
		case 'J': c.json = true; break;
		case 'V':
			printf("policy-milter-ctl %s\n", PACKAGE_VERSION);
			return CTL_OK;
		case 'h':
			usage(stdout);
			return CTL_OK;
		default:
			usage(stderr);
			return CTL_USAGE;
		}
	}
	if (optind == argc) {
		usage(stderr);
		return CTL_USAGE;
	}
	cmd = argv[optind++];
	if (strcmp(cmd, "check") == 0) {
		bool connect = optind < argc && strcmp(argv[optind], "--connect") == 0;
		if (optind + (connect ? 1 : 0) != argc)
			return ctl_error(CTL_USAGE, "usage: check [--connect]");
		return check_config(c.path, connect);
	}
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]) && strcmp(cmds[i].name, cmd) != 0; i++)
		;
	if (i == sizeof(cmds) / sizeof(cmds[0]))
		return ctl_error(CTL_USAGE, "unknown command \"%s\" (see --help)", cmd);

	log_open(true, false);
	log_quiet();
	if ((c.cfg = cfg_load(c.path, NULL, report_stderr, NULL)) == NULL)
		return ctl_error(CTL_USAGE, "%s: configuration has errors", c.path);
	if (c.cfg->redis == NULL)
		rc = ctl_error(CTL_USAGE, "%s has no redis settings: nothing is shared",
		    c.path);
	else
		rc = cmds[i].run(&c, argc - optind, argv + optind);
	cfg_unref(c.cfg);
	engine_spare_free();
	stats_reset();
	log_close();
	return rc;
}
