/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * milter_load - load generator for a milter, speaking the protocol as an MTA
 * does (tests/mproto.c): N connections in parallel, one thread each, share
 * M messages.  Each connection negotiates (version 6, every action and
 * protocol step offered), sends the connect macros, connect and HELO, then
 * messages: the MAIL macros and MAIL FROM with SIZE=, R recipients with
 * their macros, a header, the end of header, the body in chunks of at most
 * 65535 octets, end of message; between two messages an abort, as Postfix
 * sends.  Stages the milter declined (SMFIP_NO*) are not sent, and no reply
 * is awaited where it negotiated none (SMFIP_NR_*).  A message whose MAIL is
 * refused ends there; one whose every recipient is refused is aborted.
 *
 * With -k K a connection carries at most K messages and is then closed
 * (QUIT) and a new one opened, negotiated and sent connect and HELO again:
 * -k 1 makes one milter connection, one SMTP session, per message.
 *
 * It prints messages per second, the time from MAIL to the reply of end of
 * message (p50, p99, max), the outcomes and a count of every reply packet.
 * It asserts nothing, but exits 1 on a protocol error: a reply no MTA would
 * accept, a missing reply, a connection closed by the milter.
 *
 *   milter_load -t HOST:PORT|unix:/path [-c CONNECTIONS] [-m MESSAGES]
 *               [-r RECIPIENTS] [-b BODY_OCTETS] [-s SENDERS] [-l LABEL]
 *               [-w TIMEOUT_MS] [-k MESSAGES_PER_CONNECTION]
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/mproto.h"

struct options {
	const char *target, *label;
	unsigned conns, messages, rcpts, senders, per_conn;
	size_t body;
	int timeout_ms;
};

enum outcome { OUT_ACCEPTED, OUT_MAIL, OUT_RCPT, OUT_EOM, OUT_DISCARDED, OUT_N };

static const char *const outcome_names[OUT_N] = {
	"accepted", "refused at MAIL", "every RCPT refused", "refused at end",
	"discarded",
};

struct worker {
	pthread_t tid;
	unsigned id;
	const struct options *o;
	double *lat;              /* ms per completed transaction */
	size_t nlat;
	uint64_t outcomes[OUT_N];
	uint64_t replies[256];    /* by command octet */
	uint64_t noreply;         /* stages sent without a reply awaited */
	uint32_t protocol, actions;
	uint64_t sessions;        /* milter connections opened */
	int failed;
	char err[600];
};

static atomic_uint next_message;
static char *body;            /* the body, CRLF lines */

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Count a stage's result; false (and the reason kept) on a protocol error. */
static bool
count(struct worker *w, struct mproto *mp, const char *stage, int rc)
{
	if (rc > 0 && rc < 256) {
		w->replies[rc]++;
		return true;
	}
	if (rc == MP_NONE) {
		w->noreply++;
		return true;
	}
	snprintf(w->err, sizeof(w->err), "connection %u, %s: %s", w->id, stage,
	    mp_error(mp));
	w->failed = 1;
	return false;
}

static bool
passes(int rc)
{
	return rc == MP_NONE || rc == SMFIR_CONTINUE;
}

/* One message; false on a protocol error. */
static bool
message(struct worker *w, struct mproto *mp, unsigned n)
{
	const struct options *o = w->o;
	char qid[32], sender[64], rcpt[64], size[40], msgid[80];
	const char *args[] = { size, "BODY=8BITMIME", NULL };
	struct mp_reply r;
	unsigned accepted = 0;
	double t0 = now();
	int rc;

	snprintf(qid, sizeof(qid), "L%08X", n);
	snprintf(sender, sizeof(sender), "<sender%u@example.org>", n % o->senders);
	snprintf(size, sizeof(size), "SIZE=%zu", o->body + 100);
	if (mp_wants(mp, SMFIC_MAIL)) {
		if (mp_macro(mp, SMFIC_MAIL, "i", qid, "{mail_addr}", sender + 1, NULL) != 0 ||
		    !count(w, mp, "MAIL", rc = mp_mail(mp, sender, args, &r)))
			return false;
		if (!passes(rc)) {
			w->outcomes[OUT_MAIL]++;
			goto done;
		}
	}
	for (unsigned i = 0; i < o->rcpts; i++) {
		snprintf(rcpt, sizeof(rcpt), "<rcpt%u@example.net>", i);
		if (!mp_wants(mp, SMFIC_RCPT)) {
			accepted++;
			continue;
		}
		if (mp_macro(mp, SMFIC_RCPT, "i", qid, "{rcpt_addr}", rcpt + 1, NULL) != 0 ||
		    !count(w, mp, "RCPT", rc = mp_rcpt(mp, rcpt, NULL, &r)))
			return false;
		if (passes(rc))
			accepted++;
	}
	if (accepted == 0) {
		w->outcomes[OUT_RCPT]++;
		goto done;
	}
	/* Header values with their leading space when the milter asked so. */
	snprintf(msgid, sizeof(msgid), "%s<%s@load.example>",
	    (mp_protocol(mp) & SMFIP_HDR_LEADSPC) ? " " : "", qid);
	if (mp_wants(mp, SMFIC_HEADER) &&
	    (!count(w, mp, "header", mp_header(mp, "Message-ID", msgid, &r)) ||
	    !count(w, mp, "header", mp_header(mp, "Subject",
	    (mp_protocol(mp) & SMFIP_HDR_LEADSPC) ? " load" : "load", &r))))
		return false;
	if (mp_wants(mp, SMFIC_EOH) && !count(w, mp, "EOH", mp_eoh(mp, &r)))
		return false;
	if (mp_wants(mp, SMFIC_BODY))
		for (size_t off = 0; off < o->body; off += MILTER_CHUNK_SIZE) {
			size_t len = o->body - off < MILTER_CHUNK_SIZE ? o->body - off :
			    MILTER_CHUNK_SIZE;

			if (!count(w, mp, "body", mp_body(mp, body + off, len, &r)))
				return false;
		}
	if (mp_macro(mp, SMFIC_BODYEOB, "i", qid, NULL) != 0 ||
	    !count(w, mp, "end of message", rc = mp_eom(mp, NULL, 0, &r)))
		return false;
	for (size_t i = 0; i < r.nmods && i < sizeof(r.mods) - 1; i++)
		w->replies[(unsigned char)r.mods[i]]++;
	if (rc == SMFIR_CONTINUE || rc == SMFIR_ACCEPT)
		w->outcomes[OUT_ACCEPTED]++;
	else if (rc == SMFIR_DISCARD)
		w->outcomes[OUT_DISCARDED]++;
	else
		w->outcomes[OUT_EOM]++;
done:
	w->lat[w->nlat++] = (now() - t0) * 1000.0;
	return true;
}

/*
 * One milter connection: negotiate, connect, HELO, then messages until the
 * shared count runs out or per_conn of them were sent.  Returns false when
 * the worker must stop (a protocol error, or no message left).
 */
static bool
session(struct worker *w)
{
	const struct options *o = w->o;
	char err[256], host[64], addr[64];
	struct mproto *mp;
	struct mp_reply r;
	unsigned n, done = 0;
	bool more = true;
	int rc;

	if ((mp = mp_open(o->target, o->timeout_ms, err, sizeof(err))) == NULL) {
		snprintf(w->err, sizeof(w->err), "connection %u: %s", w->id, err);
		w->failed = 1;
		return false;
	}
	w->sessions++;
	if (mp_negotiate(mp, SMFI_PROT_VERSION, MP_ALL_ACTIONS, MP_ALL_PROTOCOL) !=
	    SMFIC_OPTNEG) {
		count(w, mp, "negotiation", MP_ERR);
		more = false;
		goto out;
	}
	w->protocol = mp_protocol(mp);
	w->actions = mp_actions(mp);
	snprintf(host, sizeof(host), "client%u.example", w->id);
	snprintf(addr, sizeof(addr), "198.51.100.%u", w->id % 250 + 1);
	if (mp_wants(mp, SMFIC_CONNECT)) {
		if (mp_macro(mp, SMFIC_CONNECT, "j", "mx.load.example", "{daemon_name}",
		    "smtpd", "v", "milter_load", NULL) != 0 ||
		    !count(w, mp, "connect", rc = mp_connect(mp, host, SMFIA_INET,
		    (uint16_t)(40000 + w->id), addr, &r))) {
			more = false;
			goto out;
		}
		if (!passes(rc)) {
			more = false;   /* refused for the whole connection */
			goto out;
		}
	}
	if (mp_wants(mp, SMFIC_HELO)) {
		if (!count(w, mp, "HELO", rc = mp_helo(mp, host, &r)) || !passes(rc)) {
			more = false;
			goto out;
		}
	}
	while (o->per_conn == 0 || done < o->per_conn) {
		if ((n = atomic_fetch_add(&next_message, 1)) >= o->messages) {
			more = false;
			break;
		}
		if (done++ > 0 && mp_abort(mp) != 0) {
			count(w, mp, "abort", MP_ERR);
			more = false;
			break;
		}
		if (!message(w, mp, n)) {
			w->failed = 1;  /* a protocol error (count() said which) or a send */
			more = false;
			break;
		}
	}
	mp_quit(mp);
out:
	mp_close(mp);
	return more;
}

static void *
run(void *arg)
{
	struct worker *w = arg;

	while (session(w))
		;
	return NULL;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double
percentile(const double *v, size_t n, double p)
{
	size_t i;

	if (n == 0)
		return 0;
	i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

static void
usage(void)
{
	fprintf(stderr, "usage: milter_load -t HOST:PORT|unix:/path [-c CONNECTIONS] "
	    "[-m MESSAGES] [-r RECIPIENTS]\n"
	    "                   [-b BODY_OCTETS] [-s SENDERS] [-l LABEL] [-w TIMEOUT_MS]\n"
	    "                   [-k MESSAGES_PER_CONNECTION]\n");
	exit(64);
}

static unsigned
number(const char *s, unsigned min)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > 100000000)
		usage();
	return (unsigned)v;
}

int
main(int argc, char **argv)
{
	struct options o = { .conns = 8, .messages = 10000, .rcpts = 1, .senders = 1000,
	    .body = 1024, .timeout_ms = 10000, .label = "milter" };
	struct worker *w;
	double t0, secs, *lat;
	size_t nlat = 0, minper = 0, maxper = 0;
	uint64_t outcomes[OUT_N] = { 0 }, replies[256] = { 0 }, noreply = 0, sessions = 0;
	int c, failed = 0;

	while ((c = getopt(argc, argv, "t:c:m:r:b:s:l:w:k:")) != -1) {
		switch (c) {
		case 't': o.target = optarg; break;
		case 'c': o.conns = number(optarg, 1); break;
		case 'm': o.messages = number(optarg, 1); break;
		case 'r': o.rcpts = number(optarg, 1); break;
		case 'b': o.body = number(optarg, 0); break;
		case 's': o.senders = number(optarg, 1); break;
		case 'l': o.label = optarg; break;
		case 'w': o.timeout_ms = (int)number(optarg, 1); break;
		case 'k': o.per_conn = number(optarg, 1); break;
		default: usage();
		}
	}
	if (o.target == NULL || optind != argc || o.conns > 4096)
		usage();
	if ((body = malloc(o.body + 1)) == NULL ||
	    (w = calloc(o.conns, sizeof(*w))) == NULL) {
		perror("milter_load");
		return 2;
	}
	for (size_t i = 0; i < o.body; i++)   /* 76 characters and CRLF a line */
		body[i] = i % 78 == 76 ? '\r' : i % 78 == 77 ? '\n' : (char)('a' + i % 26);
	t0 = now();
	for (unsigned i = 0; i < o.conns; i++) {
		w[i].id = i;
		w[i].o = &o;
		if ((w[i].lat = malloc(o.messages * sizeof(double))) == NULL ||
		    pthread_create(&w[i].tid, NULL, run, &w[i]) != 0) {
			perror("milter_load");
			return 2;
		}
	}
	for (unsigned i = 0; i < o.conns; i++)
		pthread_join(w[i].tid, NULL);
	secs = now() - t0;

	if ((lat = malloc(o.messages * sizeof(double) + 1)) == NULL) {
		perror("milter_load");
		return 2;
	}
	for (unsigned i = 0; i < o.conns; i++) {
		if (i == 0 || w[i].nlat < minper)
			minper = w[i].nlat;
		if (w[i].nlat > maxper)
			maxper = w[i].nlat;
		memcpy(lat + nlat, w[i].lat, w[i].nlat * sizeof(double));
		nlat += w[i].nlat;
		for (int k = 0; k < OUT_N; k++)
			outcomes[k] += w[i].outcomes[k];
		for (int k = 0; k < 256; k++)
			replies[k] += w[i].replies[k];
		noreply += w[i].noreply;
		sessions += w[i].sessions;
		if (w[i].failed) {
			failed = 1;
			fprintf(stderr, "%s: protocol error: %s\n", o.label, w[i].err);
		}
	}
	qsort(lat, nlat, sizeof(double), cmp_double);

	printf("%s: %u connections, %zu of %u messages (%u rcpt, %zu-octet body) in "
	    "%.3f s: %.0f msgs/s\n", o.label, o.conns, nlat, o.messages, o.rcpts, o.body,
	    secs, secs > 0 ? (double)nlat / secs : 0.0);
	printf("%s: MAIL to end-of-message reply: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, "
	    "p99.9 %.3f ms, max %.3f ms\n", o.label, percentile(lat, nlat, 50),
	    percentile(lat, nlat, 90), percentile(lat, nlat, 99), percentile(lat, nlat, 99.9),
	    nlat ? lat[nlat - 1] : 0.0);
	printf("%s: messages per thread: min %zu, max %zu; milter connections: %" PRIu64 "\n",
	    o.label, minper, maxper, sessions);
	printf("%s: outcomes:", o.label);
	for (int k = 0; k < OUT_N; k++)
		printf("%s %s %" PRIu64, k ? "," : "", outcome_names[k], outcomes[k]);
	printf("\n%s: replies:", o.label);
	for (int k = 1; k < 256; k++)
		if (replies[k] > 0)
			printf(" %s=%" PRIu64, mp_result_name(k), replies[k]);
	printf(" (stages without a reply: %" PRIu64 ")\n", noreply);
	printf("%s: negotiated protocol 0x%08" PRIx32 ", actions 0x%08" PRIx32 "\n",
	    o.label, w[0].protocol, w[0].actions);

	for (unsigned i = 0; i < o.conns; i++)
		free(w[i].lat);
	free(w);
	free(lat);
	free(body);
	return failed;
}
