/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * testlib - helpers shared by the unit tests: the Check runner, and for the
 * tests that drive the engine (check_engine, check_size, check_recipients)
 * loading a configuration, the test's one session with the checked teardown
 * that frees it, setting the client address and checking a counter.
 *
 * Failure messages start with the case label the caller passes.
 */
#ifndef PM_TESTLIB_H
#define PM_TESTLIB_H

#include <check.h>
#include <stdint.h>

#include "milter/stats.h"

struct cfg;
struct session;

/* Run every test of s; EXIT_SUCCESS when none failed, else EXIT_FAILURE. */
int tl_run(Suite *s);

/* Load listen + text from a private file; no error and no warning allowed. */
struct cfg *tl_load_config(const char *label, const char *text);

/*
 * The test's session on c (c keeps its own reference).  tl_teardown, as a
 * checked fixture, frees it and forgets the counters, also after a failed
 * assertion (which, with CK_FORK=no, skips the rest of the test), so that no
 * case sees another's counters or leaks under ASan.
 */
struct session *tl_session_new(const char *label, struct cfg *c);
void tl_teardown(void);

/* Set the client as callbacks.c does: IPv4 or IPv6 text, or NULL for unknown. */
void tl_set_client(const char *label, struct session *s, const char *ip);

/* The pending count f of policy must be want. */
void tl_assert_count(const char *label, const char *policy, enum stats_field f,
    uint64_t want);

/*
 * A private Redis for the whole test program, on a unix socket in a fresh
 * temporary directory: started on first call (exit 2 if it cannot be),
 * stopped and removed when the process that started it exits.  Returns the
 * socket path.  tl_redis_command runs one command through redis-cli and
 * returns its first output line (static buffer), for assertions that must
 * not trust the code under test.
 */
const char *tl_redis_start(void);
const char *tl_redis_command(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
