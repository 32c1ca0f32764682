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
 * CANON_SIZE(len); its second half is scratch).  Returns the length written; *bad names a malformed
 * spelling.
 */
static size_t
canon_into(const char *p, size_t len, unsigned flags, char *w, const char **bad)
{
	const char *end = p + len, *at = NULL, *q, *lim;
	char *raw;
	bool quoted = false, escaped = false;
	size_t n = 0, nraw = 0, d0;

	*bad = NULL;
	/* A source route, "@a,@b:user@domain": the mailbox is after the colon,
	 * and has an @ of its own ("@[ipv6:::1]" is a domain, not a route). */
	if (p < end && *p == '@' && (q = memchr(p, ':', len)) != NULL &&
	    memchr(q + 1, '@', (size_t)(end - q - 1)) != NULL)
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

	/* The local part: quotes and escapes resolved and case folded, into
	 * the second half of w (the first half's writes never reach it), then
	 * the extension cut, then written with the characters that would read
	 * differently again kept escaped. */
	raw = w + len + 2;
	quoted = false;
	lim = at != NULL ? at : end;
	for (q = p; q < lim; q++) {
		char c = *q;

		if (c == '"') {
			quoted = !quoted;
			continue;
		}
		if (c == '\\') {
			if (q + 1 >= lim)
				continue;
			c = *++q;
		}
		raw[nraw++] = lower(c);
	}
	if (flags & CANON_STRIP_EXTENSION) {
		for (size_t i = 1; i < nraw; i++)
			if (raw[i] == '+') {
				nraw = i;
				break;
			}
	}
	for (size_t i = 0; i < nraw; i++) {
		char c = raw[i];

		/* White space at either end would be trimmed, a leading < read
		 * as a bracket, the others as syntax. */
		if (c == '"' || c == '\\' || c == '@' ||
		    ((c == ' ' || c == '\t') && (i == 0 || i + 1 == nraw)) ||
		    (c == '<' && i == 0))
			w[n++] = '\\';
		w[n++] = c;
	}
	if (at == NULL)
		return n;

	/* The domain: lower case, no trailing dots (nor the white space they
	 * may hide).  Quotes, backslashes and @ have no place in a domain and
	 * would change how the result reads again: they are dropped. */
	w[n++] = '@';
	d0 = n;
	for (const char *d = at + 1; d < end; d++)
		if (*d != '"' && *d != '\\' && *d != '@')
			w[n++] = lower(*d);
	while (n > d0 && (w[n - 1] == '.' || w[n - 1] == ' ' || w[n - 1] == '\t'))
		n--;
	return n;
}

/* len without the white space at the end of p (an escaped one stays). */
static size_t
trim_end(const char *p, size_t len)
{
	while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t')) {
		size_t k = 0;

		while (k + 1 < len && p[len - 2 - k] == '\\')
			k++;
		if (k % 2 == 1)
			break;
		len--;
	}
	return len;
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
	len = trim_end(p, strlen(p));
	if (len >= 2 && p[0] == '<' && p[len - 1] == '>') {
		p++;
		len -= 2;
		/* "< a@d >": white space inside the brackets too. */
		while (len > 0 && (*p == ' ' || *p == '\t')) {
			p++;
			len--;
		}
		len = trim_end(p, len);
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
	if (n == 0) {
		/* Nothing left ("", a lone pair of quotes): as empty as <>. */
		memcpy(w, "<>", 2);
		n = 2;
	}
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

/* The @ before the domain of a canonical value (escapes remain, quotes are
 * gone), or NULL when it has none. */
static const char *
last_at(const char *canonical)
{
	const char *at = NULL;
	bool escaped = false;

	for (const char *q = canonical; *q != '\0'; q++) {
		if (escaped)
			escaped = false;
		else if (*q == '\\')
			escaped = true;
		else if (*q == '@')
			at = q;
	}
	return at;
}

void
canon_strip_extension(const char *canonical, char *out, size_t outlen)
{
	const char *at, *plus = NULL;
	size_t len;

	canonical = canonical != NULL ? canonical : "";
	len = strlen(canonical);
	at = last_at(canonical);
	/* The first + of the local part that is not its first character. */
	for (const char *q = canonical + 1; at != NULL && q < at; q++)
		if (*q == '+' && q[-1] != '\\') {
			plus = q;
			break;
		}
	if (plus == NULL || outlen == 0) {
		put_tail(canonical, len, out, outlen);
		return;
	}
	if ((size_t)(plus - canonical) + strlen(at) >= outlen) {
		/* Cut: keep the end, the domain. */
		size_t keep = outlen - 1, dl = strlen(at);
		size_t ll = keep > dl ? keep - dl : 0;
		memcpy(out, plus - ll, ll);
		memcpy(out + ll, at + (dl > keep ? dl - keep : 0), dl > keep ? keep : dl);
		out[keep] = '\0';
		return;
	}
	memcpy(out, canonical, (size_t)(plus - canonical));
	strcpy(out + (plus - canonical), at);
}

void
canon_domain_of(const char *canonical, char *out, size_t outlen)
{
	const char *at;

	if (canonical == NULL || canonical[0] == '\0' || strcmp(canonical, "<>") == 0) {
		put_tail("<>", 2, out, outlen);
		return;
	}
	at = last_at(canonical);
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
