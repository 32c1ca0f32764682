/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * log - syslog or stderr, with a per-call-site rate limit for warnings
 * that would otherwise repeat once per SMTP transaction (Redis down).
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "milter/log.h"

static bool log_stderr;
static bool log_journal;         /* stderr is journald's stream */
static bool log_debug;
static int log_threshold = LOG_DEBUG;   /* log_quiet() raises it */

/*
 * systemd sets JOURNAL_STREAM to "device:inode" of the stream it connects
 * to stdout/stderr.  A child that inherits the variable but writes
 * elsewhere (a terminal, a file) does not match, and keeps its timestamps.
 */
static bool
stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (e == NULL || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) != 0)
		return false;
	return (unsigned long long)st.st_dev == dev &&
	    (unsigned long long)st.st_ino == ino;
}

void
log_open(bool to_stderr, bool debug)
{
	log_stderr = to_stderr;
	log_journal = to_stderr && stderr_is_journal();
	log_debug = debug;
	if (!to_stderr)
		openlog("policy-milter", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void
log_close(void)
{
	if (!log_stderr)
		closelog();
}

void
log_quiet(void)
{
	log_threshold = LOG_WARNING;
}

bool
log_debug_enabled(void)
{
	return log_debug;
}

static const char *
level_name(int priority)
{
	switch (priority) {
	case LOG_EMERG: case LOG_ALERT: case LOG_CRIT: return "fatal";
	case LOG_ERR: return "error";
	case LOG_WARNING: return "warning";
	case LOG_NOTICE: return "notice";
	case LOG_INFO: return "info";
	default: return "debug";
	}
}

static void
log_v(int priority, const char *fmt, va_list ap)
{
	char buf[2048];

	if ((priority == LOG_DEBUG && !log_debug) || (priority & LOG_PRIMASK) > log_threshold)
		return;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	if (log_journal) {
		/* journald stamps the line and takes the priority from <N>. */
		fprintf(stderr, "<%d>%s: %s\n", priority & LOG_PRIMASK,
		    level_name(priority), buf);
	} else if (log_stderr) {
		struct timespec ts;
		struct tm tm;
		char stamp[32];

		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
		/* One fprintf per line so that threads do not interleave inside a line. */
		fprintf(stderr, "%s.%03ld policy-milter: %s: %s\n", stamp,
		    ts.tv_nsec / 1000000L, level_name(priority), buf);
	} else {
		syslog(priority, "%s: %s", level_name(priority), buf);
	}
}

void
log_msg(int priority, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_v(priority, fmt, ap);
	va_end(ap);
}

void
log_ratelimited(struct log_throttle *t, int interval_s, int priority,
    const char *fmt, ...)
{
	struct timespec now;
	unsigned long suppressed = 0;
	bool emit = false;
	va_list ap;

	clock_gettime(CLOCK_MONOTONIC, &now);
	while (__atomic_exchange_n(&t->lock, 1, __ATOMIC_ACQUIRE))
		;
	if (t->last == 0 || now.tv_sec - t->last >= interval_s) {
		emit = true;
		suppressed = t->suppressed;
		t->suppressed = 0;
		t->last = now.tv_sec;
	} else {
		t->suppressed++;
	}
	__atomic_store_n(&t->lock, 0, __ATOMIC_RELEASE);
	if (!emit)
		return;

	char buf[1800];
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (suppressed > 0)
		log_msg(priority, "%s (%lu similar messages suppressed)", buf, suppressed);
	else
		log_msg(priority, "%s", buf);
}
