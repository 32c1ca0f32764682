/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench_matcher - the budget of issue 4 for policies/matcher: load time and
 * memory of a 1,000,000-entry list file, and the time of one lookup (hits
 * and misses) at 1,000 and at 1,000,000 entries.  Prints numbers, asserts
 * nothing; run it by hand on an idle machine: bench_matcher [entries...]
 *
 * A matcher holds one kind of value, so the "mix of addresses, domains and
 * CIDRs" is two lists of the given size: a sender list (60% addresses, 20%
 * @domain, 20% .domain) and a client list (IPv4 /32, /24, /16 and IPv6
 * /128, /48).  Each measurement runs in a child process of its own, so that
 * the resident-size growth it reports is that list's alone.  Lookup values
 * are drawn in random order from a pool larger than the caches, so the 1M
 * figures include the memory misses a busy daemon would see.
 */
#include "config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "policies/matcher.h"

#define POOL 65536               /* distinct lookup values per run */
#define LOOKUPS 2000000
#define VALUE_MAX 96

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t
rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double
rss_mb(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, resident = 0;

	if (f == NULL)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return (double)resident * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

/* ---- the lists: entry i, a value that hits it, a value that hits nothing */

static void
sender_entry(uint32_t i, char *out)
{
	switch (i % 10) {
	case 0: case 1: case 2: case 3: case 4: case 5:
		sprintf(out, "u%x.sales@h%x.example.com", i, i / 7);
		break;
	case 6: case 7:
		sprintf(out, "@d%x.example.org", i);
		break;
	default:
		sprintf(out, ".s%x.example.net", i);
		break;
	}
}

static void
sender_hit(uint32_t i, char *out)
{
	switch (i % 10) {
	case 0: case 1: case 2: case 3: case 4: case 5:
		sprintf(out, "U%x.Sales@H%x.Example.COM", i, i / 7);
		break;
	case 6: case 7:
		sprintf(out, "anyone%x@d%x.example.org", rnd(), i);
		break;
	default:
		sprintf(out, "x@mail.relay.s%x.example.net", i);
		break;
	}
}

static void
sender_miss(uint32_t i, char *out)
{
	/* Every candidate of the walk is probed: address, domain, 3 parents. */
	sprintf(out, "nobody%x@mx.m%x.example.org", rnd(), i);
}

static void
client_entry(uint32_t i, char *out)
{
	uint32_t c = i / 20;

	switch (i % 20) {
	default:                               /* 9 of 20: IPv4 hosts in 10/8 */
		sprintf(out, "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
		break;
	case 9: case 10: case 11: case 12: case 13: case 14:   /* /24 in 20/8.. */
		sprintf(out, "%u.%u.%u.0/24", 20 + (i >> 16), (i >> 8) & 255, i & 255);
		break;
	case 15:                               /* /16 in 100/8.., else hosts in 11/8 */
		if (c % 4 == 0)
			sprintf(out, "%u.%u.0.0/16", 100 + (c / 4 >> 8), c / 4 & 255);
		else
			sprintf(out, "11.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
		break;
	case 16: case 17: case 18:
		sprintf(out, "2001:db8:%x:%x::1", i >> 16, i & 0xffff);
		break;
	case 19:
		sprintf(out, "2001:%x:%x::/48", 0xdb9 + (c >> 16), c & 0xffff);
		break;
	}
}

static void
client_hit(uint32_t i, char *out)
{
	uint32_t c = i / 20;

	switch (i % 20) {
	default:
		sprintf(out, "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
		break;
	case 9: case 10: case 11: case 12: case 13: case 14:
		sprintf(out, "%u.%u.%u.%u", 20 + (i >> 16), (i >> 8) & 255, i & 255, rnd() & 255);
		break;
	case 15:
		if (c % 4 == 0)
			sprintf(out, "%u.%u.%u.%u", 100 + (c / 4 >> 8), c / 4 & 255,
			    rnd() & 255, rnd() & 255);
		else
			sprintf(out, "11.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
		break;
	case 16: case 17: case 18:
		sprintf(out, "2001:db8:%x:%x:0::1", i >> 16, i & 0xffff);
		break;
	case 19:
		sprintf(out, "2001:%x:%x:%x::%x", 0xdb9 + (c >> 16), c & 0xffff,
		    rnd() & 0xffff, rnd() & 0xffff);
		break;
	}
}

static void
client_miss(uint32_t i, char *out)
{
	if (i % 4 == 0)
		sprintf(out, "2001:ffff:%x::%x", rnd() & 0xffff, rnd() & 0xffff);
	else
		sprintf(out, "198.%u.%u.%u", 18 + (rnd() & 1), rnd() & 255, rnd() & 255);
}

struct list {
	const char *name;
	enum matcher_kind kind;
	void (*entry)(uint32_t, char *);
	void (*hit)(uint32_t, char *);
	void (*miss)(uint32_t, char *);
};

static const struct list lists[] = {
	{ "sender", MATCHER_ADDRESS, sender_entry, sender_hit, sender_miss },
	{ "client", MATCHER_CLIENT, client_entry, client_hit, client_miss },
};

/* ---- one run */

static void
report(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "bench: %s\n", msg);
}

/* ns per lookup over LOOKUPS lookups of the pool; *hits counts matches. */
static double
time_lookups(const struct matcher *m, char (*pool)[VALUE_MAX], size_t *hits)
{
	double t0 = now();
	size_t h = 0;

	for (size_t k = 0; k < LOOKUPS; k++)
		h += matcher_match(m, pool[k % POOL]);
	*hits = h;
	return (now() - t0) * 1e9 / LOOKUPS;
}

static int
run(const struct list *l, uint32_t n, int regexes, bool jit)
{
	char path[] = "/tmp/bench_matcher.XXXXXX", entry[VALUE_MAX], why[256];
	char (*pool)[VALUE_MAX] = malloc(sizeof(*pool) * POOL);
	struct matcher *m;
	double rss0, rss1, t0, load, ns_hit, ns_miss;
	size_t hits, misses;
	int fd, errors;
	FILE *f;

	if (pool == NULL || (fd = mkstemp(path)) == -1 || (f = fdopen(fd, "w")) == NULL) {
		perror("bench");
		return 1;
	}
	fprintf(f, "# %s list, %u entries\n", l->name, n);
	for (uint32_t i = 0; i < n; i++) {
		l->entry(i, entry);
		fprintf(f, "%s\n", entry);
	}
	fclose(f);

	matcher_set_jit(jit);
	m = matcher_new(l->kind);
	rss0 = rss_mb();
	t0 = now();
	errors = matcher_load_file(m, path, report, NULL);
	load = now() - t0;
	rss1 = rss_mb();
	unlink(path);
	for (int r = 0; r < regexes; r++) {
		snprintf(entry, sizeof(entry), l->kind == MATCHER_CLIENT ?
		    "/^203\\.0\\.%d\\./" : "/^spam-?%d[0-9]*@/i", r);
		if (matcher_add(m, entry, why, sizeof(why)) != 0)
			fprintf(stderr, "bench: %s\n", why);
	}

	for (size_t k = 0; k < POOL; k++)
		l->hit(rnd() % n, pool[k]);
	ns_hit = time_lookups(m, pool, &hits);
	for (size_t k = 0; k < POOL; k++)
		l->miss(rnd(), pool[k]);
	ns_miss = time_lookups(m, pool, &misses);

	printf("%-7s %9u %8zu %7d %3s %9.1f %9.1f %9.1f %9.1f  %s\n", l->name, n,
	    matcher_count(m), regexes, regexes == 0 ? "-" : jit ? "on" : "off", load * 1000, rss1 - rss0, ns_hit, ns_miss,
	    errors != 0 ? "LOAD ERRORS" : hits != LOOKUPS ? "HITS MISSED" :
	    misses != 0 ? "MISSES HIT" : "");
	fflush(stdout);           /* the child leaves through _exit */
	matcher_free(m);
	free(pool);
	return errors != 0;
}

int
main(int argc, char **argv)
{
	uint32_t sizes[8] = { 1000, 1000000 };
	int nsizes = 2, failed = 0;

	if (argc > 1) {
		nsizes = 0;
		for (int a = 1; a < argc && nsizes < 8; a++)
			sizes[nsizes++] = (uint32_t)strtoul(argv[a], NULL, 10);
	}
	printf("%-7s %9s %8s %7s %3s %9s %9s %9s %9s\n", "list", "lines", "entries",
	    "regexes", "jit", "load_ms", "rss_MB", "hit_ns", "miss_ns");
	fflush(stdout);
	for (size_t li = 0; li < sizeof(lists) / sizeof(lists[0]); li++) {
		for (int s = 0; s < nsizes; s++) {
			/* 10 regexes twice: PCRE2's JIT off (the daemon's
			 * default, see matcher_set_jit) and on. */
			for (int c = 0; c < 3; c++) {
				int regexes = c == 0 ? 0 : 10;
				pid_t pid = fork();
				int status;

				if (pid == 0) {
					rng ^= sizes[s] * 0x2545f4914f6cdd1dULL;
					_exit(run(&lists[li], sizes[s], regexes, c == 2));
				}
				if (pid < 0 || waitpid(pid, &status, 0) != pid ||
				    !WIFEXITED(status) || WEXITSTATUS(status) != 0)
					failed = 1;
			}
		}
	}
	return failed;
}
