/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * reuse - what a milter connection negotiated, kept for the SMTP sessions
 * that follow on it after SMFIC_QUIT_NC.
 *
 * After QUIT_NC an MTA goes on with a new SMTP session on the same milter
 * connection without negotiating again.  libmilter calls the close callback
 * in between (which cannot tell that from a real end), so the session and
 * its private data are gone; libmilter itself goes on with the flags it
 * negotiated.  The new session must answer by those same flags: a "no
 * reply" the connection did not negotiate leaves the MTA waiting.  So each
 * negotiation is remembered here, by connection, with the configuration
 * snapshot it was made for, and a session that starts without negotiation
 * takes both: the connection keeps the configuration it negotiated with
 * (a reload applies to new connections, as to sessions in progress).
 *
 * A connection is known by libmilter's context pointer.  An entry is kept
 * while the connection is open and after its close callback: an MTA may
 * keep a connection idle between sessions for a while.  Closed entries go
 * after REUSE_KEEP_MS, or the oldest first beyond REUSE_KEEP_CLOSED of
 * them (a real end looks the same as QUIT_NC to us); a new connection that
 * gets the same pointer negotiates first and replaces the entry.
 *
 * Threads: every function is thread-safe (one mutex, never held while
 * calling out).  Ownership: the table holds a reference to each snapshot.
 */
#ifndef PM_REUSE_H
#define PM_REUSE_H

#include <stdbool.h>

#include "milter/cfg.h"

#define REUSE_KEEP_MS (10 * 60 * 1000)
#define REUSE_KEEP_CLOSED 4096

/* conn negotiated flags for snapshot c (a reference is taken). */
void reuse_negotiated(const void *conn, unsigned long flags, struct cfg *c);

/* conn's session has closed; entries closed long enough ago are dropped. */
void reuse_closed(const void *conn);

/*
 * A session starts on conn without negotiating: true with the flags it
 * negotiated and a new reference to its snapshot (the caller's to drop);
 * false when the connection is unknown.
 */
bool reuse_lookup(const void *conn, unsigned long *flags, struct cfg **c);

/* Drop every entry (at exit). */
void reuse_clear(void);

/* Entries held (for tests). */
unsigned reuse_count(void);

#endif
