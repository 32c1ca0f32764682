/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * mproto - the MTA side of the Sendmail milter protocol, version 6, for
 * tests and the load generator: it plays Postfix or Sendmail towards a
 * milter, one stage at a time, and lets a test break every rule on purpose.
 *
 * Framing (libmilter's mfdef.h): every packet is a 4-octet big-endian length
 * covering the command octet and the data, the command octet, the data.
 * Strings in the data end with a NUL.  The milter answers a stage with one
 * reply packet ('c' continue, 'r' reject, 't' tempfail, 'a' accept,
 * 'd' discard, 'y' reply code and text, ...), except for the stages it
 * negotiated as "no reply" (SMFIP_NR_*) and for macros, abort and quit,
 * which are never answered.  At end of message modification packets ('h',
 * 'm', '+', ...) and progress packets ('p') may come before the reply.
 *
 * One struct mproto is one connection; it is not thread-safe (one thread
 * per connection).  Every reply packet read is checked (mp_reply_check): one
 * that no MTA would accept is a protocol error, MP_ERR, whose reason
 * mp_error() gives.  Memory returned by mp_ functions belongs to the
 * connection and stays valid as documented below.
 */
#ifndef PM_MPROTO_H
#define PM_MPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libmilter/mfdef.h>

/* Results of the reading functions besides a reply's command octet (> 0). */
#define MP_NONE 0        /* no reply expected, or none came within the wait */
#define MP_ERR (-1)      /* I/O error, timeout for a required reply, bad reply */
#define MP_EOF (-2)      /* the milter closed the connection */

/* The MTA's offer by default: version 6, every action, every protocol step. */
#define MP_ALL_ACTIONS SMFI_CURR_ACTS
#define MP_ALL_PROTOCOL SMFI_CURR_PROT

#define MP_NSTAGES 7     /* macro lists: SMFIM_CONNECT .. SMFIM_EOH */

struct mproto;

struct mp_reply {
	int cmd;             /* SMFIR_* octet, or MP_NONE/MP_ERR/MP_EOF */
	size_t len;          /* octets of data */
	const char *data;    /* the data plus a NUL; valid until the next read */
	size_t nmods;        /* end of message: packets before the final reply */
	char mods[64];       /* their command octets (the first 63), NUL-terminated */
};

/*
 * Connect to "host:port", "[v6addr]:port" or "unix:/path"; timeout_ms bounds
 * the connect and, from then on, the wait for each required reply.  Returns
 * NULL with the reason in err.  Free with mp_close(), which accepts NULL.
 */
struct mproto *mp_open(const char *target, int timeout_ms, char *err, size_t errlen);
void mp_close(struct mproto *mp);

/* Why the last call failed ("" when it did not). */
const char *mp_error(const struct mproto *mp);
int mp_fd(const struct mproto *mp);

/* ---- raw packets: nothing checked, nothing read */

/* One well-framed packet: length = len + 1, cmd, data.  0 or -1. */
int mp_send(struct mproto *mp, int cmd, const void *data, size_t len);
/* A packet whose header claims length (it may lie), then len octets of data. */
int mp_send_lying(struct mproto *mp, uint32_t length, int cmd, const void *data,
    size_t len);
/* Any octets at all. */
int mp_send_raw(struct mproto *mp, const void *bytes, size_t len);
/* Half-close: the milter reads end of file after what was sent. */
int mp_shutdown_write(struct mproto *mp);

/*
 * Read one packet, waiting at most timeout_ms (< 0: the connection's
 * timeout).  Returns its command octet, MP_NONE when nothing came in time,
 * MP_EOF, or MP_ERR (I/O error, or a reply no MTA would accept).
 * r may be NULL.
 */
int mp_read(struct mproto *mp, struct mp_reply *r, int timeout_ms);

/*
 * Is reply data of len octets under command cmd one that Postfix and
 * Sendmail accept?  'y': NUL-terminated, a 4xx or 5xx code, an enhanced
 * code of the same class if any, printable ASCII, '%' only doubled, lines
 * "NNN-"/"NNN " joined by CRLF, at most 980 octets; 'c' 'r' 't' 'a' 'd'
 * 's': no data; modifications well-formed.  0, or -1 with the reason.
 */
int mp_reply_check(int cmd, const char *data, size_t len, char *why, size_t whylen);

/* ---- negotiation */

/*
 * Send SMFIC_OPTNEG (version, actions, protocol) and read the answer, which
 * is stored: the stage helpers then honour it.  Returns 'O', or MP_ERR/MP_EOF.
 */
int mp_negotiate(struct mproto *mp, uint32_t version, uint32_t actions,
    uint32_t protocol);
/* What the milter answered (0 before mp_negotiate). */
uint32_t mp_version(const struct mproto *mp);
uint32_t mp_actions(const struct mproto *mp);
uint32_t mp_protocol(const struct mproto *mp);
/* The macros it asked for at stage (SMFIM_*), or NULL.  SMFIC_QUIT_NC keeps
 * all of this: the next session on the connection is not renegotiated. */
const char *mp_symlist(const struct mproto *mp, int stage);

/* Does the milter answer cmd, and does it want cmd sent at all? */
bool mp_expects_reply(const struct mproto *mp, int cmd);
bool mp_wants(const struct mproto *mp, int cmd);

/* ---- stages: each sends its packet and, if a reply is expected, reads it
 * into r (which may be NULL).  They return the reply's command octet,
 * MP_NONE when no reply is expected, MP_ERR or MP_EOF.
 */

/* SMFIC_MACRO for stage (SMFIC_CONNECT, SMFIC_MAIL, ...): name, value, ...,
 * NULL.  Never answered: returns 0 or MP_ERR. */
int mp_macro(struct mproto *mp, int stage, ...);
/* The same from an array of 2n strings. */
int mp_macrov(struct mproto *mp, int stage, const char *const *namevalue, size_t n);

/* family: SMFIA_INET, SMFIA_INET6, SMFIA_UNIX or SMFIA_UNKNOWN (no port, no address). */
int mp_connect(struct mproto *mp, const char *hostname, int family, uint16_t port,
    const char *address, struct mp_reply *r);
int mp_helo(struct mproto *mp, const char *helo, struct mp_reply *r);
/* addr as the MTA sends it ("<a@b>"); args: ESMTP parameters, NULL-terminated or NULL. */
int mp_mail(struct mproto *mp, const char *addr, const char *const *args,
    struct mp_reply *r);
int mp_rcpt(struct mproto *mp, const char *addr, const char *const *args,
    struct mp_reply *r);
int mp_header(struct mproto *mp, const char *name, const char *value,
    struct mp_reply *r);
int mp_eoh(struct mproto *mp, struct mp_reply *r);
int mp_body(struct mproto *mp, const void *chunk, size_t len, struct mp_reply *r);
/* End of message, with an optional last chunk; reads modifications and
 * progress packets up to the final reply (recorded in r->mods). */
int mp_eom(struct mproto *mp, const void *chunk, size_t len, struct mp_reply *r);
int mp_data(struct mproto *mp, struct mp_reply *r);
int mp_unknown(struct mproto *mp, const char *command, struct mp_reply *r);
/* Never answered: 0 or MP_ERR. */
int mp_abort(struct mproto *mp);
int mp_quit(struct mproto *mp);
int mp_quit_nc(struct mproto *mp);

/* Any stage packet, answered as cmd would be: send, then read if expected. */
int mp_stage(struct mproto *mp, int cmd, const void *data, size_t len,
    struct mp_reply *r);

/* Printable name of a result (static strings): "c", "y", "none", "EOF", ... */
const char *mp_result_name(int result);

#endif
