/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * units - durations ("200ms", "10m", "1h") and sizes ("25M") as written in
 * the configuration, parsed with overflow checks, and durations formatted
 * back for replies ("37s", "4m").
 *
 * Parsers return 0, or -1 with a reason in why (the caller adds file:line).
 */
#ifndef PM_UNITS_H
#define PM_UNITS_H

#include <stddef.h>
#include <stdint.h>

/* "<digits><unit>" with unit ms, s, m, h or d; a bare number is seconds. */
int units_duration_ms(const char *s, uint64_t *ms, char *why, size_t whylen);

/* "<digits>[K|M|G]", 1024-based; a bare number is bytes. */
int units_size(const char *s, uint64_t *bytes, char *why, size_t whylen);

/* Largest whole unit that fits, rounded up: 37000 -> "37s", 230000 -> "4m". */
void units_format_duration(uint64_t ms, char *buf, size_t buflen);

/* Sizes for humans in replies: exact multiples keep their unit, "25M", else bytes. */
void units_format_size(uint64_t bytes, char *buf, size_t buflen);

#endif
