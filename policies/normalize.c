/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * normalize - canonical forms of addresses for matching and counting.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "policies/normalize.h"

void
norm_lower(const char *s, char *out, size_t outlen)
{
	size_t n = 0;

	if (outlen == 0)
		return;
	for (; s != NULL && *s != '\0' && n + 1 < outlen; s++)
		out[n++] = (char)tolower((unsigned char)*s);
	out[n] = '\0';
}

void
norm_address(const char *addr, bool strip_extension, char *out, size_t outlen)
{
	const char *at, *plus;

	if (addr == NULL || addr[0] == '\0') {
		snprintf(out, outlen, "<>");
		return;
	}
	at = strrchr(addr, '@');
	plus = strip_extension ? strchr(addr, '+') : NULL;
	if (plus != NULL && at != NULL && plus < at && plus > addr) {
		/* local+ext@domain -> local@domain */
		char local[1024];
		size_t n = (size_t)(plus - addr) < sizeof(local) - 1 ?
		    (size_t)(plus - addr) : sizeof(local) - 1;
		memcpy(local, addr, n);
		local[n] = '\0';
		char both[2048];
		snprintf(both, sizeof(both), "%s%s", local, at);
		norm_lower(both, out, outlen);
		return;
	}
	norm_lower(addr, out, outlen);
}

void
norm_domain(const char *addr, char *out, size_t outlen)
{
	const char *at;

	if (addr == NULL || addr[0] == '\0') {
		snprintf(out, outlen, "<>");
		return;
	}
	at = strrchr(addr, '@');
	norm_lower(at != NULL ? at + 1 : "", out, outlen);
}

void
norm_client_net(const char *client_ip, unsigned v4_prefix, unsigned v6_prefix,
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
