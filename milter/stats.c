/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * stats - in-memory counters flushed to Redis hashes (see stats.h).
 *
 * The registry is a short linked list guarded by a mutex taken only at
 * configuration load and flush; counting itself is one atomic add.
 */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/stats.h"
#include "milter/store_redis.h"

struct stats_entry {
	struct stats_entry *next;
	uint64_t pending[STATS_NFIELDS];
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
		stats_head = e;
	}
	pthread_mutex_unlock(&stats_lock);
	return e;
}

void
stats_add(struct stats_entry *e, enum stats_field f, uint64_t n)
{
	if (e != NULL)
		__atomic_add_fetch(&e->pending[f], n, __ATOMIC_RELAXED);
}

uint64_t
stats_pending(const struct stats_entry *e, enum stats_field f)
{
	return __atomic_load_n(&e->pending[f], __ATOMIC_RELAXED);
}

int
stats_flush(struct store *st, const char *prefix, char *err, size_t errlen)
{
	struct cmd_buf {
		char key[300];
		char num[24];
		const char *argv[4];
		size_t argvlen[4];
	};
	struct stats_entry *e;
	struct cmd_buf *bufs = NULL;
	struct store_cmd *cmds = NULL;
	redisReply **replies = NULL;
	struct { struct stats_entry *e; enum stats_field f; uint64_t v; } *taken = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	pthread_mutex_lock(&stats_lock);
	for (e = stats_head; e != NULL; e = e->next)
		cap += STATS_NFIELDS;
	if (cap == 0)
		goto out;
	bufs = calloc(cap, sizeof(*bufs));
	cmds = calloc(cap, sizeof(*cmds));
	replies = calloc(cap, sizeof(*replies));
	taken = calloc(cap, sizeof(*taken));
	if (bufs == NULL || cmds == NULL || replies == NULL || taken == NULL) {
		snprintf(err, errlen, "out of memory");
		rc = -1;
		goto out;
	}
	/* Take the counts now; what arrives during the round trip waits for the next flush. */
	for (e = stats_head; e != NULL; e = e->next) {
		for (int f = 0; f < STATS_NFIELDS; f++) {
			uint64_t v = __atomic_exchange_n(&e->pending[f], 0, __ATOMIC_RELAXED);
			if (v == 0)
				continue;
			struct cmd_buf *b = &bufs[n];
			snprintf(b->key, sizeof(b->key), "%sstats:%s", prefix, e->name);
			snprintf(b->num, sizeof(b->num), "%llu", (unsigned long long)v);
			b->argv[0] = "HINCRBY";
			b->argv[1] = b->key;
			b->argv[2] = field_names[f];
			b->argv[3] = b->num;
			for (int i = 0; i < 4; i++)
				b->argvlen[i] = strlen(b->argv[i]);
			cmds[n].argc = 4;
			cmds[n].argv = b->argv;
			cmds[n].argvlen = b->argvlen;
			taken[n].e = e;
			taken[n].f = (enum stats_field)f;
			taken[n].v = v;
			n++;
		}
	}
	if (n == 0)
		goto out;
	if (store_pipeline(st, n, cmds, replies, err, errlen) != 0) {
		/* Put the counts back so that they are sent once Redis answers again. */
		for (size_t i = 0; i < n; i++)
			__atomic_add_fetch(&taken[i].e->pending[taken[i].f], taken[i].v,
			    __ATOMIC_RELAXED);
		rc = -1;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (replies[i] != NULL && replies[i]->type == REDIS_REPLY_ERROR) {
			snprintf(err, errlen, "HINCRBY %s: %s", bufs[i].key, replies[i]->str);
			rc = -1;
		}
		store_reply_free(replies[i]);
	}
out:
	pthread_mutex_unlock(&stats_lock);
	free(bufs);
	free(cmds);
	free(replies);
	free(taken);
	return rc;
}

void
stats_reset(void)
{
	pthread_mutex_lock(&stats_lock);
	while (stats_head != NULL) {
		struct stats_entry *next = stats_head->next;
		free(stats_head);
		stats_head = next;
	}
	pthread_mutex_unlock(&stats_lock);
}
