/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzzlib - helpers shared by the fuzz targets (see fuzzlib.h).
 */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tests/fuzz/fuzzlib.h"
#include "tests/mproto.h"

void
fz_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("fuzz: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

const char *
fz_file(const void *data, size_t size)
{
	static int fd = -1;
	static char path[64];
	const char *p = data;

	if (fd == -1) {
		if ((fd = memfd_create("fuzz-input", MFD_CLOEXEC)) == -1)
			fz_fail("memfd_create: %m");
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) == -1)
		fz_fail("ftruncate: %m");
	for (size_t done = 0; done < size; ) {
		ssize_t n = pwrite(fd, p + done, size - done, (off_t)done);
		if (n <= 0)
			fz_fail("writing the input: %m");
		done += (size_t)n;
	}
	return path;
}

bool
fz_contains(const void *data, size_t size, const char *word)
{
	const unsigned char *d = data;
	size_t n = strlen(word);

	for (size_t i = 0; n <= size && i <= size - n; i++) {
		size_t k = 0;
		while (k < n && tolower(d[i + k]) == tolower((unsigned char)word[k]))
			k++;
		if (k == n)
			return true;
	}
	return false;
}

char *
fz_strndup(const void *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s == NULL)
		fz_fail("out of memory");
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/* libmilter's own check of an enhanced code: d.ddd.ddd, class 2, 4 or 5. */
static bool
enhanced_code(const char *s)
{
	size_t digits;

	if (s[0] != '2' && s[0] != '4' && s[0] != '5')
		return false;
	if (s[1] != '.')
		return false;
	s += 2;
	for (int part = 0; part < 2; part++) {
		for (digits = 0; isdigit((unsigned char)s[digits]); digits++)
			;
		if (digits == 0 || digits > 3)
			return false;
		s += digits;
		if (part == 0 && *s++ != '.')
			return false;
	}
	return *s == '\0';
}

int
fz_milter_reply(const char *rcode, const char *xcode, const char *const *lines,
    size_t n, char *wire, size_t wiresize, size_t *wirelen, char *why, size_t whylen)
{
	size_t len = 0;

	if (rcode == NULL || strlen(rcode) != 3 || (rcode[0] != '4' && rcode[0] != '5') ||
	    !isdigit((unsigned char)rcode[1]) || !isdigit((unsigned char)rcode[2])) {
		snprintf(why, whylen, "libmilter refuses reply code \"%s\"",
		    rcode ? rcode : "(null)");
		return -1;
	}
	if (xcode != NULL && (!enhanced_code(xcode) || xcode[0] != rcode[0])) {
		snprintf(why, whylen, "libmilter refuses enhanced code \"%s\" with %s",
		    xcode, rcode);
		return -1;
	}
	if (n == 0 || n > 32) {
		snprintf(why, whylen, "libmilter refuses %zu lines", n);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		const char *l = lines[i] != NULL ? lines[i] : "";
		int w;

		if (strpbrk(l, "\r\n") != NULL || strlen(l) > 980) {
			snprintf(why, whylen, "libmilter refuses line %zu \"%.60s\"", i, l);
			return -1;
		}
		/* smfi_setreply without an enhanced code sends none; the
		 * multi-line form sends class.0.0 */
		if (n == 1)
			w = snprintf(wire + len, wiresize - len, "%s%s%s %s", rcode,
			    xcode ? " " : "", xcode ? xcode : "", l);
		else
			w = snprintf(wire + len, wiresize - len, "%s%c%s %s%s", rcode,
			    i + 1 < n ? '-' : ' ', xcode ? xcode : rcode[0] == '4' ?
			    "4.0.0" : "5.0.0", l, i + 1 < n ? "\r\n" : "");
		if (w < 0 || (size_t)w >= wiresize - len) {
			snprintf(why, whylen, "reply longer than %zu octets", wiresize);
			return -1;
		}
		len += (size_t)w;
	}
	*wirelen = len + 1;
	return mp_reply_check(SMFIR_REPLYCODE, wire, len + 1, why, whylen);
}
