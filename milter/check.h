/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check - policy-milter -n and policy-milter-ctl check: load a
 * configuration and say whether it is good, and with connect, whether
 * Redis runs what the daemon will run there.
 */
#ifndef PM_CHECK_H
#define PM_CHECK_H

#include <stdbool.h>

/*
 * Load path and print "configuration OK: ..." on stdout, or every error as
 * FILE:LINE: message on stderr.  With connect, then reach Redis as the
 * daemon would (see check.c).  Returns 0, or 1 after saying why.
 */
int check_config(const char *path, bool connect);

#endif
