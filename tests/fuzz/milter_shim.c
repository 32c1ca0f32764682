/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * milter_shim - libmilter stand-in for fuzz_milter (see milter_shim.h).
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzzlib.h"
#include "tests/fuzz/milter_shim.h"

struct smfiDesc fz_filter;
bool fz_registered;

int
smfi_register(struct smfiDesc d)
{
	fz_filter = d;
	fz_registered = true;
	return MI_SUCCESS;
}

void *
smfi_getpriv(SMFICTX *ctx)
{
	return ctx->priv;
}

int
smfi_setpriv(SMFICTX *ctx, void *priv)
{
	ctx->priv = priv;
	return MI_SUCCESS;
}

void
fz_clear_macros(SMFICTX *ctx, int from)
{
	for (int i = from; i < FZ_MACRO_STAGES; i++) {
		free(ctx->mac_buf[i]);
		free(ctx->mac_argv[i]);
		ctx->mac_buf[i] = NULL;
		ctx->mac_argv[i] = NULL;
	}
}

void
fz_set_macros(SMFICTX *ctx, int stage, char *buf, size_t len)
{
	size_t n = 0, k = 0;
	char **argv;

	for (size_t i = 0; i < len; i++)
		n += buf[i] == '\0';
	if ((argv = calloc(n + 2, sizeof(*argv))) == NULL)
		fz_fail("out of memory");
	/* As libmilter splits them: a string starts after each NUL. */
	for (size_t i = 0; i < len && k < n; i++) {
		if (i == 0 || buf[i - 1] == '\0')
			argv[k++] = buf + i;
	}
	fz_clear_macros(ctx, stage);
	ctx->mac_buf[stage] = buf;
	ctx->mac_argv[stage] = argv;
}

/* libmilter: "i" finds "{i}" and the other way round. */
char *
smfi_getsymval(SMFICTX *ctx, char *name)
{
	char one[2] = "", braced[4] = "";

	if (name == NULL)
		fz_fail("smfi_getsymval(NULL)");
	if (strlen(name) == 3 && name[0] == '{' && name[2] == '}')
		one[0] = name[1];
	else if (strlen(name) == 1)
		snprintf(braced, sizeof(braced), "{%c}", name[0]);
	for (int i = 0; i < FZ_MACRO_STAGES; i++) {
		char **v = ctx->mac_argv[i];
		for (size_t k = 0; v != NULL && v[k] != NULL; k += 2) {
			if (strcmp(v[k], name) == 0 || (one[0] && strcmp(v[k], one) == 0) ||
			    (braced[0] && strcmp(v[k], braced) == 0))
				return v[k + 1];
		}
	}
	return NULL;
}

static int
set_reply(SMFICTX *ctx, const char *rcode, const char *xcode, const char *const *lines,
    size_t n)
{
	char wire[2048], why[256];
	size_t len;

	if (fz_milter_reply(rcode, xcode, lines, n, wire, sizeof(wire), &len, why,
	    sizeof(why)) != 0)
		fz_fail("callbacks.c set a reply the MTA would not get: %s", why);
	free(ctx->reply);
	ctx->reply = fz_strndup(wire, len);
	return MI_SUCCESS;
}

int
smfi_setreply(SMFICTX *ctx, char *rcode, char *xcode, char *message)
{
	const char *l[1] = { message != NULL ? message : "" };

	return set_reply(ctx, rcode, xcode, l, 1);
}

int
smfi_setmlreply(SMFICTX *ctx, const char *rcode, const char *xcode, ...)
{
	const char *l[33];
	size_t n = 0;
	va_list ap;

	va_start(ap, xcode);
	while (n < 33 && (l[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	return set_reply(ctx, rcode, xcode, l, n);
}

int
smfi_quarantine(SMFICTX *ctx, char *reason)
{
	FZ_CHECK(ctx->at_eom, "smfi_quarantine outside the end of message");
	/* libmilter refuses what the MTA did not offer (callbacks.c then logs
	 * and accepts the message), and an empty reason. */
	if (reason == NULL || reason[0] == '\0' || !(ctx->actions & SMFIF_QUARANTINE))
		return MI_FAILURE;
	return MI_SUCCESS;
}

int
smfi_setsymlist(SMFICTX *ctx, int stage, char *macros)
{
	(void)ctx;
	FZ_CHECK(stage >= SMFIM_FIRST && stage <= SMFIM_LAST, "smfi_setsymlist stage %d",
	    stage);
	FZ_CHECK(macros != NULL && macros[0] != '\0', "smfi_setsymlist without macros");
	return MI_SUCCESS;
}

void
fz_take_reply(SMFICTX *ctx, sfsistat r)
{
	/* libmilter sends a set reply with the refusal of its class, and keeps
	 * it otherwise: the next refusal of that class sends it. */
	if (ctx->reply != NULL && ((r == SMFIS_REJECT && ctx->reply[0] == '5') ||
	    (r == SMFIS_TEMPFAIL && ctx->reply[0] == '4'))) {
		free(ctx->reply);
		ctx->reply = NULL;
	}
}

void
fz_ctx_free(SMFICTX *ctx)
{
	fz_clear_macros(ctx, 0);
	free(ctx->reply);
	ctx->reply = NULL;
}
