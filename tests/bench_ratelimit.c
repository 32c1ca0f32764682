/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench_ratelimit - what rate limits cost: Redis round trips per message,
 * time per RCPT callback, Redis memory per key.  Prints numbers, asserts
 * nothing; exits 0 when it ran (77 when no redis-server is installed).
 *
 *   tests/bench_ratelimit [-n MESSAGES] [-t THREADS[,THREADS...]] [-r RCPTS] [-M]
 *                         [-s SOCKET]
 *
 * A private redis-server on a unix socket in a fresh temporary directory is
 * started and shut down at exit.  One configuration with 4 ratelimit
 * policies, limits far above the traffic so that nothing is refused, is
 * loaded with cfg_load() and sessions are driven without libmilter, the way
 * milter/callbacks.c drives them: client and exemption at connect, HELO,
 * engine_release() then MAIL, per recipient engine_run(POLICY_RCPT) and the
 * recipient counted unless refused, header and body octets added to the
 * size, engine_run(POLICY_EOM), session_msg_reset(); engine_release() and
 * session_free() at the end of each connection (5 messages).  Each thread
 * owns its sessions.
 *
 * Per thread count (-t, default 1 and 4), N messages (-n, default 20000) of
 * 3 recipients (-r) are sent, split between the threads:
 *  - time: the wall time of every engine_run(POLICY_RCPT) call
 *    (CLOCK_MONOTONIC), i.e. what the milter adds to a RCPT callback beyond
 *    libmilter; mean, p50, p99, max in microseconds; the same for EOM; and
 *    messages per second over the whole phase;
 *  - round trips: INFO commandstats right before and after the phase.
 *    Commands issued inside the Lua script (redis.call in limiter_script)
 *    are counted by Redis too; they are told apart by name, so "client
 *    commands" are the ones the milter sent, each one round trip (the store
 *    sends no pipelines on this path).  Budget: one per RCPT plus at most
 *    one at end of message.
 * Then (unless -M) Redis memory per key: FLUSHALL, used_memory, 5000
 * messages from distinct senders (one bucket per key), used_memory again,
 * divided by DBSIZE, and MEMORY USAGE of a sample of keys per policy; then
 * the same for keys holding 60 buckets: a 6 s window (100 ms buckets) and
 * one message per sender every 100 ms for 6 s.
 *
 * With -s SOCKET the Redis already listening there is used (not started,
 * not flushed, not shut down) and only the rate-limit phases run: several
 * processes can then drive one Redis (tests/bench_capacity.sh).
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "milter/cfg.h"
#include "milter/engine.h"
#include "milter/limiter.h"
#include "milter/log.h"
#include "milter/session.h"
#include "milter/stats.h"
#include "milter/store_redis.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_THREADS 64
#define MSGS_PER_CONN 5

/* ---- the private Redis */

static char redis_dir[] = "/tmp/pm-bench.XXXXXX";
static char redis_sock[128];
static bool redis_own = true;     /* started here (not -s) */
static pid_t redis_starter;
static volatile pid_t redis_pid;
static redisContext *rc;          /* the benchmark's own connection */

static void
redis_cleanup(void)
{
	char sh[512];

	if (getpid() != redis_starter)
		return;
	if (rc != NULL) {
		redisFree(rc);
		rc = NULL;
	}
	if (redis_own)
		snprintf(sh, sizeof(sh), "redis-cli -s %s shutdown nosave >/dev/null "
		    "2>&1; rm -rf '%s'", redis_sock, redis_dir);
	else
		snprintf(sh, sizeof(sh), "rm -rf '%s'", redis_dir);
	if (system(sh) == -1)
		perror("system");
}

static void
on_signal(int sig)
{
	(void)sig;
	if (redis_pid > 0)
		kill(redis_pid, SIGTERM);
	_exit(130);
}

static void
redis_start(const char *existing)
{
	char sh[1200], path[160];
	FILE *fp;
	long pid = 0;

	if (existing != NULL) {
		/* Someone else's Redis: only a directory for our files. */
		if (mkdtemp(redis_dir) == NULL) {
			perror("mkdtemp");
			exit(2);
		}
		snprintf(redis_sock, sizeof(redis_sock), "%s", existing);
		redis_own = false;
		redis_starter = getpid();
		atexit(redis_cleanup);
		rc = redisConnectUnix(redis_sock);
		if (rc == NULL || rc->err != 0) {
			fprintf(stderr, "bench_ratelimit: connect %s: %s\n", redis_sock,
			    rc != NULL ? rc->errstr : "out of memory");
			exit(2);
		}
		return;
	}
	if (system("command -v redis-server >/dev/null 2>&1") != 0) {
		fprintf(stderr, "bench_ratelimit: no redis-server in PATH: skipped\n");
		exit(77);
	}
	if (mkdtemp(redis_dir) == NULL) {
		perror("mkdtemp");
		exit(2);
	}
	snprintf(redis_sock, sizeof(redis_sock), "%s/redis.sock", redis_dir);
	redis_starter = getpid();
	atexit(redis_cleanup);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	snprintf(sh, sizeof(sh), "redis-server --port 0 --unixsocket %s --save '' "
	    "--appendonly no --daemonize yes --pidfile %s/redis.pid --dir %s "
	    "--logfile %s/redis.log && for i in $(seq 100); do "
	    "redis-cli -s %s ping 2>/dev/null | grep -q PONG && exit 0; sleep 0.05; "
	    "done; exit 1", redis_sock, redis_dir, redis_dir, redis_dir, redis_sock);
	if (system(sh) != 0) {
		fprintf(stderr, "bench_ratelimit: cannot start a private redis-server: %s\n",
		    sh);
		exit(2);
	}
	snprintf(path, sizeof(path), "%s/redis.pid", redis_dir);
	if ((fp = fopen(path, "r")) != NULL) {
		if (fscanf(fp, "%ld", &pid) == 1)
			redis_pid = (pid_t)pid;
		fclose(fp);
	}
	rc = redisConnectUnix(redis_sock);
	if (rc == NULL || rc->err) {
		fprintf(stderr, "bench_ratelimit: connect %s: %s\n", redis_sock,
		    rc != NULL ? rc->errstr : "out of memory");
		exit(2);
	}
}

/* One command of up to 8 string arguments, NULL-terminated; exits on I/O error. */
static redisReply *
rq(const char *a0, ...)
{
	const char *argv[8];
	int argc = 0;
	va_list ap;
	redisReply *r;

	argv[argc++] = a0;
	va_start(ap, a0);
	while (argc < (int)NELEM(argv) && (argv[argc] = va_arg(ap, const char *)) != NULL)
		argc++;
	va_end(ap);
	r = redisCommandArgv(rc, argc, argv, NULL);
	if (r == NULL) {
		fprintf(stderr, "bench_ratelimit: redis %s: %s\n", a0, rc->errstr);
		exit(2);
	}
	return r;
}

static long long
rq_int(const char *a0, const char *a1, const char *a2)
{
	redisReply *r = rq(a0, a1, a2, (const char *)NULL);
	long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;

	freeReplyObject(r);
	return v;
}

/* A number from an INFO section: "name:value". */
static long long
info_value(const char *section, const char *name)
{
	redisReply *r = rq("INFO", section, (const char *)NULL);
	long long v = -1;
	char pat[80];
	const char *p;

	snprintf(pat, sizeof(pat), "\r\n%s:", name);
	if (r->type == REDIS_REPLY_STRING) {
		if ((p = strstr(r->str, pat)) != NULL)
			v = strtoll(p + strlen(pat), NULL, 10);
	}
	freeReplyObject(r);
	return v;
}

/* Redis's CPU time so far (used_cpu_sys + used_cpu_user), seconds. */
static double
redis_cpu_s(void)
{
	redisReply *r = rq("INFO", "cpu", (const char *)NULL);
	double v = 0;
	const char *p;

	if (r->type == REDIS_REPLY_STRING) {
		if ((p = strstr(r->str, "\r\nused_cpu_sys:")) != NULL)
			v += strtod(p + strlen("\r\nused_cpu_sys:"), NULL);
		if ((p = strstr(r->str, "\r\nused_cpu_user:")) != NULL)
			v += strtod(p + strlen("\r\nused_cpu_user:"), NULL);
	}
	freeReplyObject(r);
	return v;
}

static void
info_string(const char *section, const char *name, char *out, size_t outlen)
{
	redisReply *r = rq("INFO", section, (const char *)NULL);
	char pat[80];
	const char *p;

	snprintf(out, outlen, "?");
	snprintf(pat, sizeof(pat), "\r\n%s:", name);
	if (r->type == REDIS_REPLY_STRING &&
	    (p = strstr(r->str, pat)) != NULL) {
		p += strlen(pat);
		snprintf(out, outlen, "%.*s", (int)strcspn(p, "\r\n"), p);
	}
	freeReplyObject(r);
}

/* ---- INFO commandstats */

struct cmdstat {
	char name[48];
	long long calls, failed, rejected, usec;
};

struct snap {
	struct cmdstat c[256];
	size_t n;
};

static long long
field_ll(const char *line, const char *field)
{
	const char *p = strstr(line, field);

	return p != NULL ? strtoll(p + strlen(field), NULL, 10) : 0;
}

static void
snap_take(struct snap *s)
{
	redisReply *r = rq("INFO", "commandstats", (const char *)NULL);
	const char *p;

	s->n = 0;
	if (r->type != REDIS_REPLY_STRING) {
		freeReplyObject(r);
		return;
	}
	for (p = r->str; (p = strstr(p, "cmdstat_")) != NULL && s->n < NELEM(s->c); ) {
		struct cmdstat *c = &s->c[s->n++];
		size_t len = strcspn(p, "\r\n");
		char line[512];
		size_t nl;

		snprintf(line, sizeof(line), "%.*s", (int)len, p);
		nl = strcspn(line + 8, ":");
		snprintf(c->name, sizeof(c->name), "%.*s", (int)nl, line + 8);
		c->calls = field_ll(line, "calls=");
		c->failed = field_ll(line, "failed_calls=");
		c->rejected = field_ll(line, "rejected_calls=");
		c->usec = field_ll(line, "usec=");
		p += len;
	}
	freeReplyObject(r);
}

static const struct cmdstat *
snap_find(const struct snap *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->c[i].name, name) == 0)
			return &s->c[i];
	return NULL;
}

/* Commands the rate-limit script runs itself: redis.call('NAME' in its text. */
static char script_cmds[32][24];
static size_t nscript_cmds;

static void
find_script_cmds(void)
{
	const char *p = limiter_script;

	while ((p = strstr(p, "redis.call('")) != NULL && nscript_cmds < NELEM(script_cmds)) {
		char name[24];
		size_t n = strcspn(p + 12, "'"), i;

		p += 12;
		if (n >= sizeof(name))
			continue;
		for (i = 0; i < n; i++)
			name[i] = (char)(p[i] >= 'A' && p[i] <= 'Z' ? p[i] - 'A' + 'a' : p[i]);
		name[n] = '\0';
		for (i = 0; i < nscript_cmds && strcmp(script_cmds[i], name) != 0; i++)
			;
		if (i == nscript_cmds)
			snprintf(script_cmds[nscript_cmds++], sizeof(script_cmds[0]), "%s", name);
	}
}

static bool
in_script(const char *name)
{
	for (size_t i = 0; i < nscript_cmds; i++)
		if (strcmp(script_cmds[i], name) == 0)
			return true;
	return false;
}

struct cmddelta {
	long long evalsha, scriptload, client, inside, total;
	long long evalsha_usec;        /* Redis's time in the script, all calls */
	char client_list[1024], inside_list[1024];
};

/* The difference after - before, leaving out the benchmark's own INFO. */
static void
snap_delta(const struct snap *before, const struct snap *after, struct cmddelta *d)
{
	memset(d, 0, sizeof(*d));
	for (size_t i = 0; i < after->n; i++) {
		const struct cmdstat *a = &after->c[i], *b = snap_find(before, a->name);
		long long calls = a->calls - (b ? b->calls : 0);
		long long failed = a->failed - (b ? b->failed : 0);
		long long rejected = a->rejected - (b ? b->rejected : 0);
		char *list;
		size_t used;

		if (calls == 0 || strcmp(a->name, "info") == 0)
			continue;
		d->total += calls;
		if (strcmp(a->name, "evalsha") == 0) {
			d->evalsha = calls;
			d->evalsha_usec = a->usec - (b ? b->usec : 0);
		}
		if (strcmp(a->name, "script|load") == 0)
			d->scriptload = calls;
		if (in_script(a->name)) {
			d->inside += calls;
			list = d->inside_list;
		} else {
			d->client += calls;
			list = d->client_list;
		}
		used = strlen(list);
		snprintf(list + used, sizeof(d->client_list) - used, "%s%s %lld%s",
		    used ? ", " : "", a->name, calls,
		    failed || rejected ? " (" : "");
		if (failed || rejected) {
			used = strlen(list);
			snprintf(list + used, sizeof(d->client_list) - used,
			    "failed %lld, rejected %lld)", failed, rejected);
		}
	}
}

/* ---- configuration */

static const char conf_main[] =
    "  { name = \"sender-msgs\"; type = \"ratelimit\"; key = [ \"sender\" ];\n"
    "    count = \"messages\"; limit = 1000000; window = \"1h\"; action = \"tempfail\"; },\n"
    "  { name = \"sdomain-rcpts\"; type = \"ratelimit\"; key = [ \"sender_domain\" ];\n"
    "    count = \"recipients\"; limit = 1000000; window = \"1h\"; action = \"tempfail\"; },\n"
    "  { name = \"rdomain-rcpts\"; type = \"ratelimit\"; key = [ \"rcpt_domain\" ];\n"
    "    count = \"recipients\"; limit = 1000000; window = \"1d\"; action = \"tempfail\"; },\n"
    "  { name = \"sender-bytes\"; type = \"ratelimit\"; key = [ \"sender\" ];\n"
    "    count = \"bytes\"; limit = \"10G\"; window = \"1d\"; action = \"tempfail\"; }\n";

static const char conf_buckets[] =
    "  { name = \"sender-6s\"; type = \"ratelimit\"; key = [ \"sender\" ];\n"
    "    count = \"messages\"; limit = 1000000; window = \"6s\"; action = \"tempfail\"; }\n";

static void
report_cfg_error(void *arg, bool is_error, const char *msg)
{
	(void)arg;
	fprintf(stderr, "%s: %s\n", is_error ? "error" : "warning", msg);
}

/* Write policies into a configuration file in the Redis directory and load it. */
static struct cfg *
load_or_die(const char *name, const char *policies)
{
	char path[200];
	struct cfg *c;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", redis_dir, name);
	if ((fp = fopen(path, "w")) == NULL) {
		perror(path);
		exit(2);
	}
	fprintf(fp, "listen = \"inet:8890@127.0.0.1\";\n"
	    "redis = { address = \"unix:%s\"; };\n"
	    "policies = (\n%s);\n", redis_sock, policies);
	fclose(fp);
	if ((c = cfg_load(path, NULL, report_cfg_error, NULL)) == NULL)
		exit(2);
	return c;
}

static uint64_t
redis_errors(const struct cfg *c)
{
	uint64_t n = 0;

	for (size_t i = 0; i < c->npolicies; i++)
		n += stats_pending(c->policies[i].stats, STATS_REDIS_ERRORS);
	return n;
}

/* ---- the workload */

struct workload {
	struct cfg *cfg;
	unsigned long first, count;    /* message numbers (global) */
	unsigned rcpts;
	unsigned long nsenders;        /* distinct senders (message g: g % nsenders) */
	const char *tag;               /* sender <TAGn@TAGdm.example> */
};

struct tresult {
	uint64_t *rcpt_ns;             /* one per RCPT call */
	uint64_t *eom_ns;              /* one per message */
	size_t nrcpt, neom;
	unsigned long refused;         /* verdicts other than NONE */
};

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct session *
connect_session(struct cfg *cfg, unsigned long conn)
{
	struct session *s = session_new(cfg);
	struct sockaddr_in sin;
	struct engine_verdict v;
	char helo[64];

	if (s == NULL) {
		fprintf(stderr, "bench_ratelimit: out of memory\n");
		exit(2);
	}
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(25);
	sin.sin_addr.s_addr = htonl((198u << 24) | (51u << 16) |
	    ((100u + (unsigned)(conn % 4)) << 8) | (1u + (unsigned)(conn % 250)));
	session_set_client(s, (const struct sockaddr *)&sin);
	if (!engine_client_exempt(s)) {
		engine_run(s, POLICY_CONNECT, &v);
		snprintf(helo, sizeof(helo), "mx%lu.example.net", conn % 250);
		session_set_helo(s, helo);
		engine_run(s, POLICY_HELO, &v);
	}
	return s;
}

static void
run_message(struct session *s, const struct workload *w, unsigned long g,
    struct tresult *tr)
{
	struct engine_verdict v;
	char sender[128], size_arg[40], rcpt[128];
	const char *args[2] = { size_arg, NULL };
	unsigned long sn = g % w->nsenders;
	uint64_t declared = 2000 + (g * 7919) % 60000, t0;

	/* As cb_envfrom: the previous message, if unfinished, gives back. */
	engine_release(s);
	snprintf(sender, sizeof(sender), "<%s%lu@%sd%lu.example>", w->tag, sn, w->tag,
	    sn % 100);
	snprintf(size_arg, sizeof(size_arg), "SIZE=%" PRIu64, declared);
	session_msg_start(s, sender, args, NULL);
	engine_run(s, POLICY_MAIL, &v);
	for (unsigned j = 0; j < w->rcpts; j++) {
		snprintf(rcpt, sizeof(rcpt), "<rcpt%lu@rd%lu.example>",
		    (g * w->rcpts + j) % 5000, (g + j) % 50);
		session_set_rcpt(s, rcpt);
		t0 = now_ns();
		engine_run(s, POLICY_RCPT, &v);
		tr->rcpt_ns[tr->nrcpt++] = now_ns() - t0;
		if (v.action != POLICY_REJECT && v.action != POLICY_TEMPFAIL)
			s->msg.rcpts++;
		if (v.action != POLICY_NONE)
			tr->refused++;
	}
	/* Header and body octets: a little under the declared SIZE=. */
	s->msg.size += declared - 1 - g % 512;
	t0 = now_ns();
	engine_run(s, POLICY_EOM, &v);
	tr->eom_ns[tr->neom++] = now_ns() - t0;
	if (v.action != POLICY_NONE)
		tr->refused++;
	session_msg_reset(s);
}

struct targ {
	struct workload w;
	struct tresult r;
};

static void *
worker(void *arg)
{
	struct targ *t = arg;
	struct session *s = NULL;

	for (unsigned long i = 0; i < t->w.count; i++) {
		unsigned long g = t->w.first + i;
		if (i % MSGS_PER_CONN == 0) {
			if (s != NULL) {
				engine_release(s);
				session_free(s);
			}
			s = connect_session(t->w.cfg, g / MSGS_PER_CONN);
		}
		run_message(s, &t->w, g, &t->r);
	}
	if (s != NULL) {
		engine_release(s);
		session_free(s);
	}
	return NULL;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

struct lat {
	double mean, p50, p99, max;    /* microseconds */
};

static void
latency(uint64_t *v, size_t n, struct lat *l)
{
	double sum = 0;

	memset(l, 0, sizeof(*l));
	if (n == 0)
		return;
	qsort(v, n, sizeof(*v), cmp_u64);
	for (size_t i = 0; i < n; i++)
		sum += (double)v[i];
	l->mean = sum / (double)n / 1000.0;
	/* nearest rank */
	l->p50 = (double)v[(size_t)((double)n * 0.50 + 0.999999) - 1] / 1000.0;
	l->p99 = (double)v[(size_t)((double)n * 0.99 + 0.999999) - 1] / 1000.0;
	l->max = (double)v[n - 1] / 1000.0;
}

struct phase_out {
	double secs;
	struct lat rcpt, eom;
	unsigned long refused;
	size_t nrcpt, neom;
};

/* Send count messages from number first on, split between nthreads threads. */
static void
run_phase(const struct workload *base, unsigned nthreads, struct phase_out *out)
{
	struct targ *t = calloc(nthreads, sizeof(*t));
	pthread_t tid[MAX_THREADS];
	uint64_t *rcpt_all, *eom_all, t0;
	size_t nr = 0, ne = 0;
	unsigned long per = base->count / nthreads, extra = base->count % nthreads;
	unsigned long next = base->first;

	memset(out, 0, sizeof(*out));
	rcpt_all = calloc(base->count * base->rcpts + 1, sizeof(*rcpt_all));
	eom_all = calloc(base->count + 1, sizeof(*eom_all));
	if (t == NULL || rcpt_all == NULL || eom_all == NULL) {
		fprintf(stderr, "bench_ratelimit: out of memory\n");
		exit(2);
	}
	for (unsigned k = 0; k < nthreads; k++) {
		t[k].w = *base;
		t[k].w.first = next;
		t[k].w.count = per + (k < extra ? 1 : 0);
		next += t[k].w.count;
		t[k].r.rcpt_ns = rcpt_all + nr;
		t[k].r.eom_ns = eom_all + ne;
		nr += t[k].w.count * base->rcpts;
		ne += t[k].w.count;
	}
	t0 = now_ns();
	for (unsigned k = 0; k < nthreads; k++) {
		if (pthread_create(&tid[k], NULL, worker, &t[k]) != 0) {
			fprintf(stderr, "bench_ratelimit: pthread_create failed\n");
			exit(2);
		}
	}
	for (unsigned k = 0; k < nthreads; k++)
		pthread_join(tid[k], NULL);
	out->secs = (double)(now_ns() - t0) / 1e9;
	for (unsigned k = 0; k < nthreads; k++) {
		out->refused += t[k].r.refused;
		out->nrcpt += t[k].r.nrcpt;
		out->neom += t[k].r.neom;
	}
	latency(rcpt_all, out->nrcpt, &out->rcpt);
	latency(eom_all, out->neom, &out->eom);
	free(rcpt_all);
	free(eom_all);
	free(t);
}

/* ---- memory */

struct memgroup {
	char policy[48];
	unsigned long keys, sampled;
	long long usage_sum, fields_sum;
	char encoding[24];
};

/* Keys per policy (pm:rl:<policy>:...), MEMORY USAGE and HLEN of up to 200 each. */
static size_t
mem_sample(struct memgroup *g, size_t maxg)
{
	char cursor[32] = "0";
	size_t ng = 0;

	do {
		redisReply *r = rq("SCAN", cursor, "COUNT", "1000", (const char *)NULL);
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
			freeReplyObject(r);
			break;
		}
		snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
		for (size_t i = 0; i < r->element[1]->elements; i++) {
			const char *key = r->element[1]->element[i]->str, *p, *e;
			char pol[48];
			size_t k;

			if (strncmp(key, "pm:rl:", 6) != 0)
				continue;
			p = key + 6;
			e = strchr(p, ':');
			snprintf(pol, sizeof(pol), "%.*s", (int)(e ? e - p : 0), p);
			for (k = 0; k < ng && strcmp(g[k].policy, pol) != 0; k++)
				;
			if (k == ng) {
				if (ng == maxg)
					continue;
				memset(&g[ng], 0, sizeof(g[ng]));
				snprintf(g[ng].policy, sizeof(g[ng].policy), "%s", pol);
				ng++;
			}
			g[k].keys++;
			if (g[k].sampled >= 200)
				continue;
			g[k].sampled++;
			g[k].usage_sum += rq_int("MEMORY", "USAGE", key);
			g[k].fields_sum += rq_int("HLEN", key, NULL);
			if (g[k].encoding[0] == '\0') {
				redisReply *x = rq("OBJECT", "ENCODING", key, (const char *)NULL);
				snprintf(g[k].encoding, sizeof(g[k].encoding), "%s",
				    x->type == REDIS_REPLY_STRING ? x->str : "?");
				freeReplyObject(x);
			}
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0);
	return ng;
}

static void
mem_report(const char *label, long long before, long long after)
{
	struct memgroup g[8];
	long long keys = rq_int("DBSIZE", NULL, NULL);
	size_t ng = mem_sample(g, NELEM(g));

	printf("  %-22s %7lld keys  used_memory +%lld B = %.1f B/key\n", label, keys,
	    after - before, keys > 0 ? (double)(after - before) / (double)keys : 0.0);
	for (size_t i = 0; i < ng; i++)
		printf("    %-20s %7lu keys  MEMORY USAGE %6.1f B/key  %5.1f buckets/key  %s"
		    "  (sample %lu)\n", g[i].policy, g[i].keys,
		    (double)g[i].usage_sum / (double)g[i].sampled,
		    (double)g[i].fields_sum / (double)g[i].sampled, g[i].encoding,
		    g[i].sampled);
}

static void
sleep_until(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void
memory_phases(struct cfg *cmain)
{
	struct phase_out po;
	struct workload w;
	long long before, after;
	struct cfg *cb;
	const unsigned long distinct = 5000, bsenders = 500, rounds = 60;
	struct tresult tr;
	struct session *s;
	uint64_t t0;

	printf("\nRedis memory per key (used_memory delta / DBSIZE; MEMORY USAGE of a sample)\n");

	/* 1 bucket per key: every sender sends once. */
	freeReplyObject(rq("FLUSHALL", (const char *)NULL));
	before = info_value("memory", "used_memory");
	w = (struct workload){ cmain, 10000000, distinct, 1, distinct,
	    "s" };
	run_phase(&w, 1, &po);
	after = info_value("memory", "used_memory");
	mem_report("1 bucket (5000 senders)", before, after);
	if (po.refused)
		printf("    (refused %lu)\n", po.refused);

	/* 60 buckets per key: window 6 s, bucket 100 ms, one message per sender
	 * every 100 ms for 6 s. */
	cb = load_or_die("bench-buckets.conf", conf_buckets);
	freeReplyObject(rq("FLUSHALL", (const char *)NULL));
	before = info_value("memory", "used_memory");
	w = (struct workload){ cb, 0, 1, 1, bsenders, "w" };
	tr.rcpt_ns = calloc(bsenders, sizeof(uint64_t));
	tr.eom_ns = calloc(bsenders, sizeof(uint64_t));
	if (tr.rcpt_ns == NULL || tr.eom_ns == NULL)
		exit(2);
	tr.refused = 0;
	s = connect_session(cb, 0);
	t0 = now_ns();
	for (unsigned long r = 0; r < rounds; r++) {
		sleep_until(t0 + r * 100000000u);
		tr.nrcpt = tr.neom = 0;
		for (unsigned long i = 0; i < bsenders; i++)
			run_message(s, &w, i, &tr);
	}
	engine_release(s);
	session_free(s);
	after = info_value("memory", "used_memory");
	mem_report("60 buckets (500 senders)", before, after);
	if (tr.refused || redis_errors(cb))
		printf("    (refused %lu, redis errors %" PRIu64 ")\n", tr.refused,
		    redis_errors(cb));
	free(tr.rcpt_ns);
	free(tr.eom_ns);
	cfg_unref(cb);
}

/* ---- live lists: one script call at MAIL, with lists of 1k and 1M members */

static const char conf_live[] =
    "  { name = \"live-senders\"; type = \"block\"; match = \"sender\"; redis = true;\n"
    "    action = \"reject\"; },\n"
    "  { name = \"live-domains\"; type = \"block\"; match = \"sender_domain\";\n"
    "    redis = true; action = \"reject\"; }\n";

/* Fill both live sets with n members (half addresses, half domains), in
 * Redis itself: "user<i>@d<i % 1000>.example" for even i, ".blk<i>.example"
 * (that domain and its subdomains) for odd i. */
static void
live_fill(unsigned long n)
{
	char count[32];
	redisReply *r;

	snprintf(count, sizeof(count), "%lu", n);
	r = rq("EVAL",
	    "for i = 1, tonumber(ARGV[1]) do\n"
	    "  if i % 2 == 0 then redis.call('ZADD', KEYS[1], 'inf', 'user' .. i .. '@d' .. (i % 1000) .. '.example')\n"
	    "  else redis.call('ZADD', KEYS[2], 'inf', '.blk' .. i .. '.example') end\n"
	    "end\nreturn 0", "2", "pm:block:live-senders", "pm:block:live-domains", count,
	    (const char *)NULL);
	if (r->type == REDIS_REPLY_ERROR) {
		fprintf(stderr, "bench_ratelimit: fill: %s\n", r->str);
		exit(2);
	}
	freeReplyObject(r);
}

static void
live_phase(unsigned long nmembers, unsigned long nmsgs)
{
	struct cfg *c = load_or_die("bench-live.conf", conf_live);
	uint64_t *ns = calloc(nmsgs, sizeof(uint64_t));
	long long mem0, mem1;
	unsigned long refused = 0;
	struct snap before, after;
	struct cmddelta d;
	struct lat l;
	struct session *s;
	uint64_t t0;

	if (ns == NULL)
		exit(2);
	freeReplyObject(rq("FLUSHALL", (const char *)NULL));
	mem0 = info_value("memory", "used_memory");
	t0 = now_ns();
	live_fill(nmembers);
	t0 = now_ns() - t0;
	mem1 = info_value("memory", "used_memory");
	s = connect_session(c, 0);
	snap_take(&before);
	for (unsigned long i = 0; i < nmsgs; i++) {
		struct engine_verdict v;
		char sender[96];
		/* One sender in four is listed (as an address or by its domain). */
		unsigned long k = 2 * ((i * 7919) % (nmembers / 2)) + 1;
		if (i % 8 == 0)
			snprintf(sender, sizeof(sender), "user%lu@d%lu.example", k + 1,
			    (k + 1) % 1000);
		else if (i % 8 == 4)
			snprintf(sender, sizeof(sender), "x@mx.blk%lu.example", k);
		else
			snprintf(sender, sizeof(sender), "nobody%lu@mx.d%lu.example", i, i % 1000);
		engine_release(s);
		session_msg_reset(s);
		session_msg_start(s, sender, NULL, NULL);
		uint64_t t = now_ns();
		if (engine_run(s, POLICY_MAIL, &v) != POLICY_NONE)
			refused++;
		ns[i] = now_ns() - t;
	}
	snap_take(&after);
	snap_delta(&before, &after, &d);
	latency(ns, nmsgs, &l);
	printf("%9lu members (filled in %.1f s, %.0f B/member) | MAIL us: mean %.1f p50 %.1f "
	    "p99 %.1f max %.1f | evalsha/MAIL %.3f | refused %lu of %lu (want %lu)\n",
	    nmembers, (double)t0 / 1e9,
	    (double)(mem1 - mem0) / (double)nmembers, l.mean, l.p50, l.p99, l.max,
	    (double)d.evalsha / (double)nmsgs, refused, nmsgs, (nmsgs + 3) / 4);
	engine_release(s);
	session_free(s);
	free(ns);
	cfg_unref(c);
}

/* ---- main */

static void
usage(void)
{
	fprintf(stderr, "usage: bench_ratelimit [-n MESSAGES] [-t THREADS[,THREADS...]] "
	    "[-r RCPTS] [-M]\n"
	    "  -n  messages per thread count (default 20000)\n"
	    "  -t  thread counts to run, 1..%d (default 1,4)\n"
	    "  -r  recipients per message (default 3)\n"
	    "  -M  skip the memory measurements\n"
	    "  -s  use the Redis on this unix socket; rate-limit phases only\n",
	    MAX_THREADS);
	exit(2);
}

int
main(int argc, char **argv)
{
	unsigned long nmsgs = 20000;
	unsigned threads[16] = { 1, 4 }, nthr = 2, rcpts = 3;
	bool memory = true;
	const char *existing = NULL;
	struct cfg *cmain;
	char version[64], *end;
	int opt;

	while ((opt = getopt(argc, argv, "n:t:r:Ms:h")) != -1) {
		switch (opt) {
		case 'n':
			nmsgs = strtoul(optarg, &end, 10);
			if (*end != '\0' || nmsgs == 0)
				usage();
			break;
		case 't': {
			char *p = optarg;
			nthr = 0;
			while (*p != '\0' && nthr < NELEM(threads)) {
				unsigned long t = strtoul(p, &end, 10);
				if (end == p || t == 0 || t > MAX_THREADS ||
				    (*end != ',' && *end != '\0'))
					usage();
				threads[nthr++] = (unsigned)t;
				p = *end == ',' ? end + 1 : end;
			}
			if (nthr == 0)
				usage();
			break;
		}
		case 'r':
			rcpts = (unsigned)strtoul(optarg, &end, 10);
			if (*end != '\0' || rcpts == 0 || rcpts > 1000)
				usage();
			break;
		case 'M':
			memory = false;
			break;
		case 's':
			existing = optarg;
			memory = false;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();

	log_open(true, false);
	find_script_cmds();
	redis_start(existing);
	cmain = load_or_die("bench.conf", conf_main);
	info_string("server", "redis_version", version, sizeof(version));

	printf("bench_ratelimit: Redis %s on a unix socket; %lu messages x %u recipients "
	    "per run, %d messages per connection\n", version, nmsgs, rcpts, MSGS_PER_CONN);
	printf("policies (all tempfail, limits never reached): sender-msgs (sender, "
	    "messages, 1000000/1h), sdomain-rcpts (sender_domain, recipients, 1000000/1h),\n"
	    "  rdomain-rcpts (rcpt_domain, recipients, 1000000/1d), sender-bytes (sender, "
	    "bytes, 10G/1d; SIZE= declared, real size a little smaller)\n");
	printf("time: wall time of engine_run(RCPT) / engine_run(EOM), microseconds.  "
	    "Round trips: INFO commandstats delta;\n  budget per message = %u RCPT + at "
	    "most 1 EOM = %u\n\n", rcpts, rcpts + 1);
	printf("thr  msgs/s   | RCPT us: mean    p50    p99     max | EOM us: mean    p99 "
	    "| evalsha/msg /rcpt | client cmds/msg | redis cmds/msg | refused  redis-err\n");

	for (unsigned i = 0; i < nthr; i++) {
		struct workload w = { cmain, (unsigned long)i * nmsgs, nmsgs, rcpts, 1000,
		    "user" };
		struct snap before, after;
		struct cmddelta d;
		struct phase_out po;
		uint64_t errs0 = redis_errors(cmain);
		double m = (double)nmsgs;
		long long budget;

		double cpu0 = redis_cpu_s(), cpu1;

		snap_take(&before);
		run_phase(&w, threads[i], &po);
		snap_take(&after);
		cpu1 = redis_cpu_s();
		snap_delta(&before, &after, &d);
		printf("%3u %8.0f  | %16.1f %6.1f %6.1f %7.1f | %12.1f %6.1f | %11.4f %5.4f "
		    "| %15.4f | %14.2f | %7lu %9" PRIu64 "\n",
		    threads[i], m / po.secs, po.rcpt.mean, po.rcpt.p50, po.rcpt.p99,
		    po.rcpt.max, po.eom.mean, po.eom.p99, (double)d.evalsha / m,
		    (double)d.evalsha / (m * rcpts), (double)d.client / m,
		    (double)d.total / m, po.refused, redis_errors(cmain) - errs0);
		printf("     client commands: %s\n", d.client_list);
		printf("     inside the script: %s\n", d.inside_list);
		printf("     Redis: %.1f us per script call (INFO commandstats), %.1f us of CPU "
		    "per message (INFO cpu)\n", d.evalsha ? (double)d.evalsha_usec /
		    (double)d.evalsha : 0.0, (cpu1 - cpu0) * 1e6 / m);
		budget = (long long)nmsgs * (rcpts + 1);
		if (d.client > budget)
			printf("     OVER BUDGET: %lld client commands for %lu messages, budget "
			    "%lld: %+lld%s\n", d.client, nmsgs, budget, d.client - budget,
			    d.client - budget <= d.scriptload ? " = SCRIPT LOAD at the "
			    "script's first use in this process (once per thread that got "
			    "there first)" : "");
	}
	printf("(Redis connections opened by the milter's store: %lu)\n",
	    store_connects(cmain->redis->store));
	if (existing != NULL) {
		cfg_unref(cmain);
		stats_reset();
		log_close();
		return 0;
	}

	printf("\nLive lists (block, redis = true): two sorted sets looked up at MAIL in one "
	    "script call\n  (sender: 5 members looked up, sender_domain: 5), 1 thread\n");
	live_phase(1000, nmsgs);
	live_phase(1000000, nmsgs);
	if (memory)
		memory_phases(cmain);
	cfg_unref(cmain);
	stats_reset();
	log_close();
	return 0;
}
