/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * log_quiet - milter/log.c for the fuzz targets: every message is formatted
 * (so that a bad argument still reaches the sanitizers) and dropped.  The
 * real module writes to syslog until log_open() says otherwise, and a
 * fuzzer must neither fill the system's log nor spend its time writing.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>

#include "milter/log.h"

void
log_open(bool to_stderr, bool debug)
{
	(void)to_stderr;
	(void)debug;
}

void
log_close(void)
{
}

/* Debug lines too: code behind "if (log_debug_enabled())" is code to test. */
bool
log_debug_enabled(void)
{
	return true;
}

static void
drop(const char *fmt, va_list ap)
{
	char buf[2048];

	vsnprintf(buf, sizeof(buf), fmt, ap);
}

void
log_msg(int priority, const char *fmt, ...)
{
	va_list ap;

	(void)priority;
	va_start(ap, fmt);
	drop(fmt, ap);
	va_end(ap);
}

void
log_ratelimited(struct log_throttle *t, int interval_s, int priority,
    const char *fmt, ...)
{
	va_list ap;

	(void)t;
	(void)interval_s;
	(void)priority;
	va_start(ap, fmt);
	drop(fmt, ap);
	va_end(ap);
}
