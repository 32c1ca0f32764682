/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * testlib - helpers shared by the unit tests: the Check runner, collecting
 * the reports of cfg_load, removing a test's directory, and for the tests
 * that drive the engine (check_engine, check_block, check_ratelimit, ...)
 * loading a configuration, the test's one session with the checked teardown
 * that frees it, setting the client address, checking a step's verdict and
 * the counters.
 *
 * Failure messages start with the case label the caller passes.
 */
#ifndef PM_TESTLIB_H
#define PM_TESTLIB_H

#include <check.h>
#include <stdbool.h>
#include <stdint.h>

#include "milter/engine.h"
#include "milter/stats.h"

struct cfg;
struct session;

/* Run every test of s; EXIT_SUCCESS when none failed, else EXIT_FAILURE. */
int tl_run(Suite *s);

/*
 * The reports of a cfg_load: pass tl_collect and a zeroed struct tl_reports.
 * Every report is counted; the first TL_MAX_REPORTS of each kind are kept.
 */
#define TL_MAX_REPORTS 128
#define TL_REPORT_LEN 8192

struct tl_reports {
	int nerr, nwarn;
	char err[TL_MAX_REPORTS][TL_REPORT_LEN];
	char warn[TL_MAX_REPORTS][TL_REPORT_LEN];
};

void tl_collect(void *arg, bool is_error, const char *msg);

/* Every kept report of r, one a line with at most width octets each, for
 * failure messages (static buffer). */
const char *tl_reports_text(const struct tl_reports *r, int width);

/* Remove dir and everything below it. */
void tl_rmtree(const char *dir);

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

/* The pending counts of a policy after a scenario; TL_ANY leaves one open. */
#define TL_ANY UINT64_MAX

struct tl_counts {
	const char *policy;
	uint64_t checked, rejected, tempfailed, discarded, quarantined, accepted, dry_run;
};

/* want->policy has statistics, and each count not TL_ANY (Redis errors: 0). */
void tl_assert_counts(const char *label, const struct tl_counts *want);

/*
 * Step k connects from ip, as cb_connect does: false when the client is
 * exempt (cb_connect answers at once and the engine never runs), which only a
 * step that wants no verdict may be.
 */
bool tl_step_connect(const char *label, size_t k, struct session *s, const char *ip,
    enum policy_action want);

/*
 * Run the engine at stage for step k (what, on arg), into *v: it returns its
 * verdict's action, which must be want and, unless NULL, come from policy.
 */
enum policy_action tl_engine_step(const char *label, size_t k, const char *what,
    const char *arg, struct session *s, enum policy_stage stage,
    struct engine_verdict *v, enum policy_action want, const char *policy);

/* Step k (what) got a decisive verdict v: it came from policy, unless NULL. */
void tl_assert_decided_by(const char *label, size_t k, const char *what,
    enum policy_action got, const struct engine_verdict *v, const char *policy);

/*
 * After the engine decided got at stage, as callbacks.c goes on: cb_envrcpt
 * counts the recipients the MTA will accept; cb_eom resets the message.
 */
void tl_step_done(struct session *s, enum policy_stage stage, enum policy_action got);

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
