/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * log - the daemon's one way to say something.
 *
 * Messages go to syslog (facility mail, ident policy-milter) or, in the
 * foreground, to stderr with a timestamp.  When stderr is systemd's journal
 * (JOURNAL_STREAM names it), lines carry no timestamp of their own: each
 * starts with its "<N>" syslog level, which journald reads as the priority
 * (the unit's SyslogFacility=mail gives the facility).  Decision lines are built by the
 * engine as "queue_id: client=...: policy=... action=..." key=value text;
 * this module only routes and filters them.
 *
 * Thread safety: every function may be called from any thread after
 * log_open().  log_ratelimited() keeps its own state per call site.
 */
#ifndef PM_LOG_H
#define PM_LOG_H

#include <stdbool.h>
#include <syslog.h>
#include <time.h>

/* Route messages to stderr (to_stderr) or syslog; debug enables LOG_DEBUG. */
void log_open(bool to_stderr, bool debug);
void log_close(void);
bool log_debug_enabled(void);
/* Drop notices and below from now on (the ctl tool: only trouble). */
void log_quiet(void);

/* priority is a syslog level: LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG. */
void log_msg(int priority, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * At most one message per interval_s seconds per throttle; the ones held
 * back are counted and the count is added to the next message that goes out.
 * A throttle is a static zero-initialised struct at the call site.
 */
struct log_throttle {
	time_t last;
	unsigned long suppressed;
	int lock;   /* spin flag: the slow path is rare */
};
void log_ratelimited(struct log_throttle *t, int interval_s, int priority,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
