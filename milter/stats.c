/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * stats - in-memory counters flushed to Redis hashes (see stats.h).
 *
 * The registry is a short linked list guarded by a mutex taken only at
 * configuration load and flush; counting itself is two atomic adds (the
 * pending count and the total).  A new entry is published at the head with
 * a release store, so that stats_each can walk the list without the lock
 * (the flush holds it during a Redis round trip; a scrape must not wait).
 */
#include "config.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "milter/stats.h"
#include "milter/store_redis.h"

struct stats_entry {
	struct stats_entry *next;
	uint64_t pending[STATS_NFIELDS];
	uint64_t total[STATS_NFIELDS];   /* never reset by a flush */
	char name[];
};

static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static struct stats_entry *stats_head;

static const char *const field_names[STATS_NFIELDS] = {
	"checked", "rejected", "tempfailed", "discarded", "quarantined",
	"accepted", "dry_run", "redis_errors",
};

const char *
stats_field_name(enum stats_field f)
{
	return f < STATS_NFIELDS ? field_names[f] : "?";
}

struct stats_entry *
stats_get(const char *policy)
{
	struct stats_entry *e;

	pthread_mutex_lock(&stats_lock);
	for (e = stats_head; e != NULL; e = e->next)
		if (strcmp(e->name, policy) == 0)
			break;
	if (e == NULL && (e = calloc(1, sizeof(*e) + strlen(policy) + 1)) != NULL) {
		strcpy(e->name, policy);
		e->next = stats_head;
		__atomic_store_n(&stats_head, e, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&stats_lock);
	return e;
}

void
stats_add(struct stats_entry *e, enum stats_field f, uint64_t n)
{
	if (e != NULL) {
		__atomic_add_fetch(&e->pending[f], n, __ATOMIC_RELAXED);
		__atomic_add_fetch(&e->total[f], n, __ATOMIC_RELAXED);
	}
}

uint64_t
stats_total(const struct stats_entry *e, enum stats_field f)
{
	return __atomic_load_n(&e->total[f], __ATOMIC_RELAXED);
}

void
stats_each(void (*fn)(void *arg, const char *policy, const struct stats_entry *e),
    void *arg)
{
	for (const struct stats_entry *e = __atomic_load_n(&stats_head, __ATOMIC_ACQUIRE);
	    e != NULL; e = e->next)
		fn(arg, e->name, e);
}

uint64_t
stats_pending(const struct stats_entry *e, enum stats_field f)
{
	return __atomic_load_n(&e->pending[f], __ATOMIC_RELAXED);
}

/*
 * One flush is one script call, applied at most once: it carries this
 * process's id and a sequence number, and Redis keeps the last number it
 * applied for the process (<prefix>statsflush:<id>, one hour).  A call that
 * timed out may still run later (Redis was only stalled); the counts it
 * carried are sent again with the same number, before any newer ones, so
 * whichever copy runs first counts and the other does nothing.
 *
 * KEYS: the marker, then the hashes.  ARGV: the number, then per hash the
 * number of fields and field/value pairs.
 */
static const char flush_body[] =
    "local last = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local seq = tonumber(ARGV[1])\n"
    "if seq <= last then return 0 end\n"
    "local a = 2\n"
    "for k = 2, #KEYS do\n"
    "  local n = tonumber(ARGV[a])\n"
    "  for j = 1, n do\n"
    "    redis.call('HINCRBY', KEYS[k], ARGV[a + 2 * j - 1], ARGV[a + 2 * j])\n"
    "  end\n"
    "  a = a + 1 + 2 * n\n"
    "end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'EX', 3600)\n"
    "return 1\n";
static struct store_script flush_script = { flush_body, false, "", 0 };

/* Counts taken from the entries for one flush, kept until Redis has them. */
struct taken {
	struct stats_entry *e;
	enum stats_field f;
	uint64_t v;
};

static struct {
	struct taken *t;           /* the batch not known to be applied */
	size_t n;
	uint64_t seq;
	char id[40];               /* this process, for the marker key */
} held;

static uint64_t next_seq = 1;

static void
make_id(void)
{
	uint64_t r = 0;
	int fd;

	if (held.id[0] != '\0')
		return;
	if ((fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)) >= 0) {
		if (read(fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
			r = 0;
		close(fd);
	}
	snprintf(held.id, sizeof(held.id), "%ld-%016llx", (long)getpid(),
	    (unsigned long long)(r ^ (uint64_t)time(NULL)));
}

/* Send the held batch.  0 when Redis has it (now or before), -1 with err. */
static int
send_held(struct store *st, const char *prefix, char *err, size_t errlen)
{
	size_t nkeys = 1, nargs = 1, k = 0, a = 0;
	const char **keys = NULL, **args = NULL;
	char *text = NULL, marker[300];
	redisReply *r;
	int rc = -1;

	for (size_t i = 0; i < held.n; i++) {
		if (i == 0 || held.t[i].e != held.t[i - 1].e) {
			nkeys++;
			nargs++;
		}
		nargs += 2;
	}
	keys = calloc(nkeys, sizeof(*keys));
	args = calloc(nargs, sizeof(*args));
	/* Key names and numbers, 320 octets each at most. */
	text = calloc(nkeys + nargs, 320);
	if (keys == NULL || args == NULL || text == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
#define PUT(arr, idx, ...) (snprintf(text + 320 * (k + a), 320, __VA_ARGS__), \
	arr[idx] = text + 320 * (k + a), (idx)++)
	snprintf(marker, sizeof(marker), "%sstatsflush:%s", prefix, held.id);
	keys[k++] = marker;
	PUT(args, a, "%llu", (unsigned long long)held.seq);
	for (size_t i = 0; i < held.n;) {
		size_t j = i;

		while (j < held.n && held.t[j].e == held.t[i].e)
			j++;
		PUT(keys, k, "%sstats:%s", prefix, held.t[i].e->name);
		PUT(args, a, "%zu", j - i);
		for (; i < j; i++) {
			args[a++] = field_names[held.t[i].f];
			PUT(args, a, "%llu", (unsigned long long)held.t[i].v);
		}
	}
#undef PUT
	r = store_eval(st, &flush_script, (int)k, keys, NULL, (int)a, args, NULL, err,
	    errlen);
	if (r == NULL)
		goto out;
	if (r->type == REDIS_REPLY_ERROR)
		snprintf(err, errlen, "statistics: %s", r->str);
	else
		rc = 0;
	store_reply_free(r);
out:
	free(keys);
	free(args);
	free(text);
	return rc;
}

const char *
stats_script_text(void)
{
	return flush_body;
}

int
stats_check(struct store *st, const char *prefix, char *err, size_t errlen)
{
	char marker[300], id[64];
	const char *keys[1] = { marker }, *args[1] = { "1" };
	redisReply *r;
	int rc = -1;

	/* A marker of its own, one hour: nothing else is written. */
	snprintf(id, sizeof(id), "check-%ld", (long)getpid());
	snprintf(marker, sizeof(marker), "%sstatsflush:%s", prefix, id);
	if ((r = store_eval(st, &flush_script, 1, keys, NULL, 1, args, NULL, err,
	    errlen)) == NULL)
		return -1;
	if (r->type == REDIS_REPLY_ERROR)
		snprintf(err, errlen, "statistics: %s", r->str);
	else
		rc = 0;
	store_reply_free(r);
	return rc;
}

int
stats_flush(struct store *st, const char *prefix, char *err, size_t errlen)
{
	struct stats_entry *e;
	size_t cap = 0;
	int rc = 0;

	pthread_mutex_lock(&stats_lock);
	make_id();
	/* A batch that may or may not have arrived goes first, as it was. */
	if (held.n > 0) {
		if (send_held(st, prefix, err, errlen) != 0) {
			rc = -1;
			goto out;
		}
		held.n = 0;
	}
	for (e = stats_head; e != NULL; e = e->next)
		cap += STATS_NFIELDS;
	if (cap == 0)
		goto out;
	free(held.t);
	if ((held.t = calloc(cap, sizeof(*held.t))) == NULL) {
		snprintf(err, errlen, "out of memory");
		rc = -1;
		goto out;
	}
	/* Take the counts now; what arrives during the round trip waits for the next flush. */
	for (e = stats_head; e != NULL; e = e->next) {
		for (int f = 0; f < STATS_NFIELDS; f++) {
			uint64_t v = __atomic_exchange_n(&e->pending[f], 0, __ATOMIC_RELAXED);
			if (v != 0)
				held.t[held.n++] = (struct taken){ e, (enum stats_field)f, v };
		}
	}
	if (held.n == 0)
		goto out;
	held.seq = next_seq++;
	/* On failure the batch stays held, and goes again with its number. */
	if (send_held(st, prefix, err, errlen) != 0) {
		rc = -1;
		goto out;
	}
	held.n = 0;
out:
	pthread_mutex_unlock(&stats_lock);
	return rc;
}

void
stats_reset(void)
{
	pthread_mutex_lock(&stats_lock);
	free(held.t);
	held.t = NULL;
	held.n = 0;
	while (stats_head != NULL) {
		struct stats_entry *next = stats_head->next;
		free(stats_head);
		stats_head = next;
	}
	pthread_mutex_unlock(&stats_lock);
}
