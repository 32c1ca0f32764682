/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * callbacks - the libmilter glue: the only module (with main.c) that
 * includes libmilter.  It maps each milter callback to session and engine
 * calls and each verdict to an SMFIS_* code and SMTP reply.
 */
#ifndef PM_CALLBACKS_H
#define PM_CALLBACKS_H

/* Register the filter with libmilter (smfi_register).  0 or -1. */
int callbacks_register(void);

#endif
