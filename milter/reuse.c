/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * reuse - negotiated flags by milter connection (see reuse.h).
 *
 * A plain array scanned under the mutex: it holds the open connections and
 * the recently closed ones (at most REUSE_KEEP_CLOSED), and is touched
 * three times per connection (negotiate, close, and the rare session after
 * QUIT_NC).  The scan is a few microseconds at thousands of entries.
 */
#include "config.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "milter/reuse.h"

struct entry {
	const void *conn;
	unsigned long flags;
	struct cfg *cfg;
	uint64_t closed_at;        /* monotonic ms; 0 while open */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *tab;
static unsigned n, cap;

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 + 1;
}

static struct entry *
find(const void *conn)
{
	for (unsigned i = 0; i < n; i++)
		if (tab[i].conn == conn)
			return &tab[i];
	return NULL;
}

static unsigned nclosed;

/* Drop entries closed before cutoff, and the oldest closed ones beyond
 * REUSE_KEEP_CLOSED; their snapshots go to *dead for unref outside the
 * lock (at most max per call). */
static unsigned
sweep(uint64_t cutoff, struct cfg **dead, unsigned max)
{
	unsigned ndead = 0;

	while (nclosed > REUSE_KEEP_CLOSED && ndead < max) {
		unsigned oldest = n;
		for (unsigned i = 0; i < n; i++)
			if (tab[i].closed_at != 0 &&
			    (oldest == n || tab[i].closed_at < tab[oldest].closed_at))
				oldest = i;
		if (oldest == n)
			break;
		dead[ndead++] = tab[oldest].cfg;
		tab[oldest] = tab[--n];
		nclosed--;
	}
	for (unsigned i = 0; i < n && ndead < max;) {
		if (tab[i].closed_at != 0 && tab[i].closed_at < cutoff) {
			dead[ndead++] = tab[i].cfg;
			tab[i] = tab[--n];
			nclosed--;
		} else {
			i++;
		}
	}
	return ndead;
}

void
reuse_negotiated(const void *conn, unsigned long flags, struct cfg *c)
{
	struct cfg *old = NULL;
	struct entry *e;

	if (c != NULL)
		cfg_ref(c);
	pthread_mutex_lock(&lock);
	if ((e = find(conn)) == NULL) {
		if (n == cap) {
			unsigned ncap = cap ? cap * 2 : 64;
			struct entry *t = realloc(tab, ncap * sizeof(*t));
			if (t == NULL) {
				/* Without memory the connection is simply unknown
				 * after QUIT_NC (reuse_lookup: false). */
				pthread_mutex_unlock(&lock);
				cfg_unref(c);
				return;
			}
			tab = t;
			cap = ncap;
		}
		e = &tab[n++];
	} else {
		old = e->cfg;
		if (e->closed_at != 0)
			nclosed--;
	}
	*e = (struct entry){ conn, flags, c, 0 };
	pthread_mutex_unlock(&lock);
	cfg_unref(old);
}

void
reuse_closed(const void *conn)
{
	struct cfg *dead[32];
	unsigned ndead;
	struct entry *e;
	uint64_t now = now_ms();

	pthread_mutex_lock(&lock);
	if ((e = find(conn)) != NULL && e->closed_at == 0) {
		e->closed_at = now;
		nclosed++;
	}
	ndead = sweep(now > REUSE_KEEP_MS ? now - REUSE_KEEP_MS : 0, dead, 32);
	pthread_mutex_unlock(&lock);
	for (unsigned i = 0; i < ndead; i++)
		cfg_unref(dead[i]);
}

bool
reuse_lookup(const void *conn, unsigned long *flags, struct cfg **c)
{
	struct entry *e;
	bool found = false;

	pthread_mutex_lock(&lock);
	if ((e = find(conn)) != NULL) {
		if (e->closed_at != 0)
			nclosed--;
		e->closed_at = 0;          /* open again */
		*flags = e->flags;
		*c = e->cfg;
		if (*c != NULL)
			cfg_ref(*c);
		found = true;
	}
	pthread_mutex_unlock(&lock);
	return found;
}

void
reuse_clear(void)
{
	pthread_mutex_lock(&lock);
	for (unsigned i = 0; i < n; i++)
		cfg_unref(tab[i].cfg);
	free(tab);
	tab = NULL;
	n = cap = nclosed = 0;
	pthread_mutex_unlock(&lock);
}

unsigned
reuse_count(void)
{
	unsigned k;

	pthread_mutex_lock(&lock);
	k = n;
	pthread_mutex_unlock(&lock);
	return k;
}
