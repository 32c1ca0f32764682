/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * reply - compile and expand SMTP reply templates (see reply.h).
 *
 * Why so strict at load time: Postfix treats a milter reply whose enhanced
 * code does not match its reply code as a protocol error and tempfails the
 * whole session, and libmilter refuses (returns MI_FAILURE for) replies with
 * CR/LF or more than 980 octets, after which the MTA would send a generic
 * reply instead of the administrator's.  Everything that can be checked
 * before the first message is checked here.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/reply.h"

struct reply_tmpl {
	int code;
	char xcode[16];
	size_t nlines;
	char **lines;              /* text only; the code is added at expansion */
	unsigned uses;             /* bit i: variable i of REPLY_VARS is used */
};

static const char *const var_names[] = {
	"policy", "key", "limit", "window", "retry_after",
	"sender", "rcpt", "client_ip", "size", NULL,
};

/* Refusal codes that an RFC defines: 5321, 7504 (521, 556), 4954 (auth). */
static const int standard_codes[] = {
	421, 450, 451, 452, 455, 500, 501, 502, 503, 504,
	550, 551, 552, 553, 554, 555, 521, 556,
	432, 454, 530, 534, 535, 538, 0,
};

/* Codes seen in the wild that no RFC defines, and what means the same. */
static const struct { int code, standard; } nonstandard_codes[] = {
	{ 420, 451 },   /* "timeout / connection problem" */
	{ 422, 452 },   /* "mailbox full": insufficient storage */
	{ 431, 452 },   /* "out of memory/disk" */
	{ 441, 451 }, { 442, 451 }, { 446, 451 }, { 447, 451 }, { 449, 451 },
	{ 471, 450 },   /* "local policy / spam filter" */
	{ 510, 550 }, { 511, 550 }, { 512, 550 }, { 513, 553 }, { 515, 553 },
	{ 517, 550 },
	{ 523, 552 },   /* "message too big" */
	{ 525, 550 },   /* "account disabled" */
	{ 531, 554 }, { 541, 550 }, { 542, 550 }, { 543, 550 },
	{ 0, 0 },
};

int
reply_code_is_standard(int code, int *standard)
{
	for (size_t i = 0; standard_codes[i] != 0; i++)
		if (standard_codes[i] == code)
			return 1;
	if (standard != NULL) {
		*standard = code / 100 == 4 ? 451 : 550;
		for (size_t i = 0; nonstandard_codes[i].code != 0; i++)
			if (nonstandard_codes[i].code == code)
				*standard = nonstandard_codes[i].standard;
	}
	return 0;
}

static int
var_index(const char *name, size_t len)
{
	for (int i = 0; var_names[i] != NULL; i++)
		if (strlen(var_names[i]) == len && memcmp(var_names[i], name, len) == 0)
			return i;
	return -1;
}

/* Check one line of template text: printable ASCII, $ syntax, known names. */
static int
check_text(const char *s, unsigned *uses, char *why, size_t whylen)
{
	for (const char *p = s; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		if (c < 0x20 || c > 0x7e) {
			snprintf(why, whylen, "reply may hold only printable ASCII "
			    "(character 0x%02x at offset %zu)", c, (size_t)(p - s));
			return -1;
		}
		if (c != '$')
			continue;
		if (p[1] == '$') {
			p++;
			continue;
		}
		const char *close = p[1] == '{' ? strchr(p + 2, '}') : NULL;
		if (close == NULL) {
			snprintf(why, whylen, "reply has a '$' that starts no ${name}; "
			    "write $$ for a dollar sign");
			return -1;
		}
		int v = var_index(p + 2, (size_t)(close - p - 2));
		if (v < 0) {
			snprintf(why, whylen, "reply uses unknown variable ${%.*s} "
			    "(known: %s)", (int)(close - p - 2), p + 2, REPLY_VARS);
			return -1;
		}
		*uses |= 1u << v;
		p = close;
	}
	return 0;
}

/* "5.7.1": class.subject.detail, subject and detail 1-3 digits (RFC 3463). */
static int
parse_xcode(const char *s, size_t len, char *out, size_t outlen)
{
	size_t i = 0, part = 0, digits = 0;

	if (len >= outlen)
		return -1;
	for (i = 0; i < len; i++) {
		if (isdigit((unsigned char)s[i])) {
			if (++digits > (part == 0 ? 1 : 3))
				return -1;
		} else if (s[i] == '.' && digits > 0 && part < 2) {
			part++;
			digits = 0;
		} else {
			return -1;
		}
	}
	if (part != 2 || digits == 0)
		return -1;
	memcpy(out, s, len);
	out[len] = '\0';
	return 0;
}

void
reply_free(struct reply_tmpl *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->nlines; i++)
		free(t->lines[i]);
	free(t->lines);
	free(t);
}

struct reply_tmpl *
reply_compile(const char *const *lines, size_t nlines, enum policy_action action,
    char *why, size_t whylen, char *warn, size_t warnlen)
{
	struct reply_tmpl *t = NULL;
	const char *p;
	int standard;

	warn[0] = '\0';
	if (nlines == 0 || nlines > REPLY_MAX_LINES) {
		snprintf(why, whylen, "reply must have 1 to %d lines", REPLY_MAX_LINES);
		return NULL;
	}
	p = lines[0];
	if (!(isdigit((unsigned char)p[0]) && isdigit((unsigned char)p[1]) &&
	    isdigit((unsigned char)p[2])) || (p[3] != ' ' && p[3] != '\0')) {
		if (p[0] != '\0' && strlen(p) >= 4 && p[3] == '-')
			snprintf(why, whylen, "reply \"%s\": for a multi-line reply "
			    "write a list of strings, not \"%.3s-\"", p, p);
		else
			snprintf(why, whylen, "reply \"%s\" must start with a "
			    "three-digit code such as 550 or 451", p);
		return NULL;
	}
	int code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
	if (p[0] == '2' || p[0] == '3') {
		snprintf(why, whylen, "reply code %d is not a refusal: a milter can "
		    "only refuse (4xx or 5xx); success replies are the MTA's to give", code);
		return NULL;
	}
	if ((p[0] != '4' && p[0] != '5') || p[1] > '5') {
		snprintf(why, whylen, "reply code %d is not an SMTP refusal code "
		    "(4xx or 5xx, second digit 0-5)", code);
		return NULL;
	}
	if (action == POLICY_REJECT && p[0] != '5') {
		snprintf(why, whylen, "action \"reject\" needs a 5xx reply code, not %d "
		    "(use action \"tempfail\" for 4xx)", code);
		return NULL;
	}
	if (action == POLICY_TEMPFAIL && p[0] != '4') {
		snprintf(why, whylen, "action \"tempfail\" needs a 4xx reply code, not %d "
		    "(use action \"reject\" for 5xx)", code);
		return NULL;
	}

	t = calloc(1, sizeof(*t));
	if (t == NULL || (t->lines = calloc(nlines, sizeof(char *))) == NULL)
		goto nomem;
	t->code = code;
	p += 3;
	while (*p == ' ')
		p++;
	if (isdigit((unsigned char)*p)) {
		size_t len = strcspn(p, " ");
		if (memchr(p, '.', len) != NULL) {
			if (parse_xcode(p, len, t->xcode, sizeof(t->xcode)) != 0) {
				snprintf(why, whylen, "\"%.*s\" is not an enhanced status "
				    "code (class.subject.detail, e.g. 5.7.1)", (int)len, p);
				goto err;
			}
			if (t->xcode[0] != lines[0][0]) {
				snprintf(why, whylen, "enhanced code %s does not match reply "
				    "code %d: its first digit must be %c (Postfix tempfails "
				    "the session on a mismatch)", t->xcode, code, lines[0][0]);
				goto err;
			}
			p += len;
			while (*p == ' ')
				p++;
		}
	}
	/*
	 * Always send an enhanced code.  Without one Postfix reads the start of
	 * the text as one, and text that starts with a digit of the other class
	 * ("550 4x@example.org ...", from ${sender}) makes it drop the milter
	 * for the session: a client could choose its way past every policy.
	 */
	if (t->xcode[0] == '\0')
		snprintf(t->xcode, sizeof(t->xcode), "%c.0.0", lines[0][0]);
	for (size_t i = 0; i < nlines; i++) {
		const char *text = i == 0 ? p : lines[i];
		if (check_text(text, &t->uses, why, whylen) != 0)
			goto err;
		if ((t->lines[i] = strdup(text)) == NULL)
			goto nomem;
		t->nlines++;
	}
	if (!reply_code_is_standard(code, &standard))
		snprintf(warn, warnlen, "reply code %d is not defined by any RFC; "
		    "clients may misread it: %d means the same and is standard",
		    code, standard);
	return t;
nomem:
	snprintf(why, whylen, "out of memory");
err:
	reply_free(t);
	return NULL;
}

int
reply_code(const struct reply_tmpl *t)
{
	return t->code;
}

int
reply_uses(const struct reply_tmpl *t, const char *var)
{
	int v = var_index(var, strlen(var));
	return v >= 0 && (t->uses & (1u << v)) != 0;
}

static const char *
var_value(const struct reply_vars *vars, int v)
{
	const char *const values[] = {
		vars->policy, vars->key, vars->limit, vars->window, vars->retry_after,
		vars->sender, vars->rcpt, vars->client_ip, vars->size,
	};
	return values[v] != NULL ? values[v] : "";
}

/*
 * Append src to out, made safe: printable ASCII only, '%' doubled.  Stops
 * before going past end; never splits a doubled '%'.
 */
static char *
append_safe(char *out, const char *end, const char *src, size_t srclen)
{
	for (size_t i = 0; i < srclen; i++) {
		unsigned char c = (unsigned char)src[i];
		if (c == '%') {
			if (end - out < 2)
				break;
			*out++ = '%';
			*out++ = '%';
			continue;
		}
		if (out >= end)
			break;
		*out++ = (c >= 0x20 && c <= 0x7e) ? (char)c : '?';
	}
	return out;
}

void
reply_expand(const struct reply_tmpl *t, const struct reply_vars *vars,
    struct reply_out *out)
{
	char *w = out->buf;
	size_t total = 0;
	/* Each line as sent: "code xcode text\r\n". */
	size_t prefix = 3 + 1 + (t->xcode[0] != '\0' ? strlen(t->xcode) + 1 : 0);

	snprintf(out->code, sizeof(out->code), "%d", t->code);
	snprintf(out->xcode, sizeof(out->xcode), "%s", t->xcode);
	out->nlines = 0;
	for (size_t i = 0; i < t->nlines; i++) {
		size_t room = REPLY_MAX_TOTAL - total;
		if (room < prefix + 2 + 1)
			break;
		room -= prefix + 2;
		if (room > REPLY_MAX_LINE - prefix)
			room = REPLY_MAX_LINE - prefix;
		char *start = w, *end = w + room;
		for (const char *p = t->lines[i]; *p != '\0' && w < end; p++) {
			if (p[0] == '$' && p[1] == '$') {
				w = append_safe(w, end, "$", 1);
				p++;
			} else if (p[0] == '$' && p[1] == '{') {
				const char *close = strchr(p, '}');
				const char *val = var_value(vars, var_index(p + 2,
				    (size_t)(close - p - 2)));
				w = append_safe(w, end, val, strlen(val));
				p = close;
			} else {
				w = append_safe(w, end, p, 1);
			}
		}
		*w++ = '\0';
		out->lines[out->nlines++] = start;
		total += prefix + (size_t)(w - 1 - start) + 2;
	}
}

void
reply_format(const struct reply_out *out, char *buf, size_t buflen)
{
	size_t n = 0;

	n += (size_t)snprintf(buf, buflen, "%s%s%s", out->code,
	    out->xcode[0] ? " " : "", out->xcode);
	for (size_t i = 0; i < out->nlines && n < buflen; i++) {
		const char *s = out->lines[i];
		n += (size_t)snprintf(buf + n, buflen - n, "%s", i == 0 ? " " : " / ");
		/* Undo the doubling: logs show what the client sees. */
		for (; *s != '\0' && n + 1 < buflen; s++) {
			buf[n++] = *s;
			if (s[0] == '%' && s[1] == '%')
				s++;
		}
		if (n < buflen)
			buf[n] = '\0';
	}
	if (buflen > 0)
		buf[buflen - 1 < n ? buflen - 1 : n] = '\0';
}
