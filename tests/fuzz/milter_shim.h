/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * milter_shim - the part of libmilter that milter/callbacks.c calls,
 * without sockets or threads, for fuzz_milter.
 *
 * smfi_register keeps the filter description (fz_filter); one SMFICTX
 * stands for one milter connection.  The functions check their arguments
 * as libmilter does, and stop the process (fz_fail) where libmilter would
 * refuse what callbacks.c asks for: a reply libmilter or an MTA would not
 * take, a macro list for a stage that does not exist, quarantine outside the
 * end of message.  Where libmilter returns MI_FAILURE for something the MTA
 * did not offer (quarantine), so do they.
 */
#ifndef PM_MILTER_SHIM_H
#define PM_MILTER_SHIM_H

#include <stdbool.h>
#include <stddef.h>

#include <libmilter/mfapi.h>
#include <libmilter/mfdef.h>

#define FZ_MACRO_STAGES 7          /* SMFIM_CONNECT .. SMFIM_EOH */

struct smfi_str {
	void *priv;
	/* Macros the MTA sent for each stage: the packet's data (owned) and
	 * its name/value pointers, NULL-terminated. */
	char *mac_buf[FZ_MACRO_STAGES];
	char **mac_argv[FZ_MACRO_STAGES];
	char *reply;                  /* what smfi_setreply set, owned */
	bool at_eom;                  /* only there may actions be asked for */
	unsigned long actions;        /* SMFIF_* the milter asked for */
};

/* The filter callbacks.c registered; callbacks_register() fills it. */
extern struct smfiDesc fz_filter;
extern bool fz_registered;

/* Macros of stage (SMFIM_*): take over buf (len octets, name/value pairs). */
void fz_set_macros(SMFICTX *ctx, int stage, char *buf, size_t len);
/* Forget the macros of stage and every later one (libmilter's mi_clr_macros). */
void fz_clear_macros(SMFICTX *ctx, int from);

/* The reply a refusal sends: take the one set, if its class matches. */
void fz_take_reply(SMFICTX *ctx, sfsistat r);
void fz_ctx_free(SMFICTX *ctx);

#endif
