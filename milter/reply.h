/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * reply - SMTP reply templates: checked when the configuration loads,
 * expanded when a policy decides.
 *
 * A template is one or more lines; the first starts with the reply code and
 * an optional RFC 3463 enhanced code ("552 5.3.4 Message too big"), the
 * others are text.  Without an enhanced code, class.0.0 is sent.  ${name} expands to a value of the decision (REPLY_VARS
 * lists them); $$ is a dollar sign.
 *
 * Load time (reply_compile) enforces what Postfix and Sendmail need: a 4xx or
 * 5xx code whose class matches the action, an enhanced code of the same
 * class, printable ASCII, known variables.  A code no RFC defines loads with
 * a warning naming the standard one that means the same.
 *
 * Run time (reply_expand) makes values from the network safe for libmilter:
 * anything outside printable ASCII becomes '?', '%' is doubled, and each
 * line and the whole reply are cut to what libmilter and RFC 5321 accept.
 * It cannot fail.
 */
#ifndef PM_REPLY_H
#define PM_REPLY_H

#include <stddef.h>

#include "policies/policy.h"

#define REPLY_MAX_LINES 32     /* libmilter's MAXREPLIES */
#define REPLY_MAX_TOTAL 980    /* libmilter's MAXREPLYLEN */
#define REPLY_MAX_LINE 510     /* RFC 5321 reply line, without CRLF */

/* The variables a template may use, in struct reply_vars order. */
#define REPLY_VARS "policy key limit window retry_after sender rcpt client_ip size"

struct reply_vars {
	const char *policy, *key, *limit, *window, *retry_after;
	const char *sender, *rcpt, *client_ip, *size;
};

struct reply_tmpl;

/*
 * Check and compile nlines template lines for action (POLICY_REJECT or
 * POLICY_TEMPFAIL).  Returns NULL with the reason in why; a usable template
 * with something worth saying puts it in warn (else warn[0] = '\0').
 * The result is the caller's; free with reply_free().
 */
struct reply_tmpl *reply_compile(const char *const *lines, size_t nlines,
    enum policy_action action, char *why, size_t whylen, char *warn, size_t warnlen);
void reply_free(struct reply_tmpl *t);

/* The reply code (421, 550, ...) and whether a template uses a variable. */
int reply_code(const struct reply_tmpl *t);
int reply_uses(const struct reply_tmpl *t, const char *var);

struct reply_out {
	char code[4];
	char xcode[16];            /* always set: "5.0.0" when the template has none */
	size_t nlines;
	const char *lines[REPLY_MAX_LINES];   /* point into buf */
	char buf[REPLY_MAX_TOTAL + REPLY_MAX_LINES];
};

/* Expand t with vars (NULL members expand to ""). */
void reply_expand(const struct reply_tmpl *t, const struct reply_vars *vars,
    struct reply_out *out);

/*
 * The whole reply on one line as the client would see its last line, for
 * logs: "552 5.3.4 text" (percent signs not doubled).
 */
void reply_format(const struct reply_out *out, char *buf, size_t buflen);

/*
 * Is code one that an RFC defines for refusals?  If not, and standard is
 * not NULL, *standard is set to the code to use instead.
 */
int reply_code_is_standard(int code, int *standard);

#endif
