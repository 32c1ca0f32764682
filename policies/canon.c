/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * canon - canonical addresses, names and networks (see canon.h).
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policies/canon.h"

/* Inputs up to this size are worked on the stack; longer ones on the heap. */
#define STACK_INPUT 2048

static char
lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static void
set_why(char *why, size_t whylen, const char *text)
{
	if (why != NULL && whylen > 0)
		snprintf(why, whylen, "%s", text);
}

/* Copy src[0..len) into out, keeping its end if it does not fit. */
static bool
put_tail(const char *src, size_t len, char *out, size_t outlen)
{
	bool fits = len < outlen;

	if (outlen == 0)
		return false;
	if (!fits) {
		src += len - (outlen - 1);
		len = outlen - 1;
	}
	memcpy(out, src, len);
	out[len] = '\0';
	return fits;
}

/*
 * The work: p[0..len) with brackets already gone, into w (room for
 * CANON_SIZE(len)).  Returns the length written; *bad names a malformed
 * spelling.
 */
static size_t
canon_into(const char *p, size_t len, unsigned flags, char *w, const char **bad)
{
	const char *end = p + len, *at = NULL, *q;
	bool quoted = false, escaped = false;
	size_t n = 0, local_start, ext = 0;

	*bad = NULL;
	/* A source route, "@a,@b:user@domain": the mailbox is after the colon. */
	if (p < end && *p == '@' && (q = memchr(p, ':', len)) != NULL)
		p = q + 1;
	/* The domain starts after the last @ that is neither quoted nor escaped. */
	for (q = p; q < end; q++) {
		if (escaped)
			escaped = false;
		else if (*q == '\\')
			escaped = true;
		else if (*q == '"')
			quoted = !quoted;
		else if (*q == '@' && !quoted)
			at = q;
	}
	if (quoted)
		*bad = "the quoted local part is not closed";
	else if (escaped)
		*bad = "a backslash escapes nothing at the end";

	/* The local part: quotes and escapes resolved, case folded, and the
	 * characters that would read differently again kept escaped. */
	local_start = n;
	quoted = false;
	for (q = p; q < (at != NULL ? at : end); q++) {
		char c = *q;

		if (c == '"') {
			quoted = !quoted;
			continue;
		}
		if (c == '\\') {
			if (q + 1 >= (at != NULL ? at : end))
				continue;
			c = *++q;
		}
		c = lower(c);
		if ((flags & CANON_STRIP_EXTENSION) && c == '+' && ext == 0 &&
		    n > local_start)
			ext = n;
		if (c == '"' || c == '\\' || c == '@')
			w[n++] = '\\';
		w[n++] = c;
	}
	if (ext > 0)
		n = ext;
	if (at == NULL)
		return n;

	/* The domain: lower case, no trailing dots. */
	w[n++] = '@';
	q = end;
	while (q > at + 1 && q[-1] == '.')
		q--;
	for (const char *d = at + 1; d < q; d++)
		w[n++] = lower(*d);
	return n;
}

int
canon_address(const char *addr, unsigned flags, char *out, size_t outlen,
    char *why, size_t whylen)
{
	const char *p = addr != NULL ? addr : "", *bad;
	char stack[CANON_SIZE(STACK_INPUT)], *w = stack;
	size_t len, n;
	bool fits;

	while (*p == ' ' || *p == '\t')
		p++;
	len = strlen(p);
	while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
		len--;
	if (len >= 2 && p[0] == '<' && p[len - 1] == '>') {
		p++;
		len -= 2;
	}
	if (len == 0) {
		put_tail("<>", 2, out, outlen);
		return 0;
	}
	if (len > STACK_INPUT && (w = malloc(CANON_SIZE(len))) == NULL) {
		/* No memory: the input as it is, rather than nothing. */
		put_tail(p, len, out, outlen);
		set_why(why, whylen, "out of memory");
		return -1;
	}
	n = canon_into(p, len, flags, w, &bad);
	fits = put_tail(w, n, out, outlen);
	if (w != stack)
		free(w);
	if (bad == NULL && !fits)
		bad = "the address is too long";
	if (bad != NULL) {
		set_why(why, whylen, bad);
		return -1;
	}
	return 0;
}

void
canon_domain_of(const char *canonical, char *out, size_t outlen)
{
	const char *at = NULL;
	bool escaped = false;

	if (canonical == NULL || canonical[0] == '\0' || strcmp(canonical, "<>") == 0) {
		put_tail("<>", 2, out, outlen);
		return;
	}
	/* Canonical: quotes are gone, escapes remain. */
	for (const char *q = canonical; *q != '\0'; q++) {
		if (escaped)
			escaped = false;
		else if (*q == '\\')
			escaped = true;
		else if (*q == '@')
			at = q;
	}
	at = at != NULL ? at + 1 : "";
	put_tail(at, strlen(at), out, outlen);
}

void
canon_domain(const char *name, char *out, size_t outlen)
{
	size_t len, n = 0;

	if (outlen == 0)
		return;
	name = name != NULL ? name : "";
	len = strlen(name);
	while (len > 1 && name[len - 1] == '.')
		len--;
	for (; n < len && n + 1 < outlen; n++)
		out[n] = lower(name[n]);
	out[n] = '\0';
}

void
canon_lower(const char *s, char *out, size_t outlen)
{
	size_t n = 0;

	if (outlen == 0)
		return;
	for (; s != NULL && *s != '\0' && n + 1 < outlen; s++)
		out[n++] = lower(*s);
	out[n] = '\0';
}

void
canon_client_net(const char *client_ip, unsigned v4_prefix, unsigned v6_prefix,
    char *out, size_t outlen)
{
	unsigned char b[16];
	char text[INET6_ADDRSTRLEN];
	int family = AF_INET;
	unsigned prefix = v4_prefix, bits = 32;

	if (outlen > 0)
		out[0] = '\0';
	if (client_ip == NULL || inet_pton(AF_INET, client_ip, b) != 1) {
		if (client_ip == NULL || inet_pton(AF_INET6, client_ip, b) != 1)
			return;
		family = AF_INET6;
		prefix = v6_prefix;
		bits = 128;
	}
	if (prefix > bits)
		prefix = bits;
	for (unsigned i = 0; i < bits / 8; i++) {
		unsigned keep = prefix >= (i + 1) * 8 ? 8 : prefix > i * 8 ? prefix - i * 8 : 0;
		b[i] &= keep == 0 ? 0 : (unsigned char)(0xff << (8 - keep));
	}
	inet_ntop(family, b, text, sizeof(text));
	snprintf(out, outlen, "%s/%u", text, prefix);
}
