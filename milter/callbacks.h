/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * callbacks - the libmilter glue: the only module (with main.c) that
 * includes libmilter.  It maps each milter callback to session and engine
 * calls and each verdict to an SMFIS_* code and SMTP reply.
 */
#ifndef PM_CALLBACKS_H
#define PM_CALLBACKS_H

struct cfg;

/* Register the filter with libmilter (smfi_register).  0 or -1. */
int callbacks_register(void);

/*
 * The SMFIP_* protocol flags asked for with configuration c (NULL: none):
 * no stage the policies do not read, no reply where none decides.  Also
 * what tests/null_milter negotiates, to cost the MTA what we do.
 */
unsigned long callbacks_want(const struct cfg *c);

#endif
