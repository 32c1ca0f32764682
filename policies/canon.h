/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * canon - the one form in which policy-milter compares and counts envelope
 * addresses, names and client networks.
 *
 * Every place that compares or counts an address calls canon_address: the
 * MAIL and RCPT values of a session (session.c), rate-limit key parts
 * (ratelimit.c), static list entries at load (matcher.c) and what an
 * operator gives a tool.  Two spellings of one mailbox must never give two
 * keys: that would multiply every limit and let a listed sender through.
 *
 * The canonical address:
 *  - no surrounding white space or <>; a source route (@a,@b:) is dropped;
 *  - the local part with quotes and backslash escapes resolved ("j.doe",
 *    j\.doe and j.doe are one mailbox, as the MTA delivers them), then
 *    folded to lower case (ASCII): no mail system worth the name delivers
 *    Alice@ and alice@ to different people, and a limit must not be dodged
 *    by changing case;
 *  - the domain lower case, without trailing dots (and without the quotes,
 *    backslashes and @ that no domain holds);
 *  - with CANON_STRIP_EXTENSION, "+extension" removed from the local part;
 *  - the null sender (empty, or <>) is "<>".
 * The result is itself a valid spelling of the same mailbox, and
 * canon_address of it gives it back unchanged: the characters that would
 * read differently a second time (a quote, a backslash, an @ in the local
 * part, white space at its ends, a < at its start) stay escaped with a
 * backslash.  Callers that hold a canonical value do not parse it again
 * (canon_strip_extension, canon_domain_of work on it as it is).
 *
 * Failure: a spelling no MTA would accept as one mailbox (an unterminated
 * quote, a backslash at the end) returns -1 with the reason in why; out
 * still holds a best-effort form, so that a value from the network is
 * always counted somewhere, while a list entry so written is refused at
 * load (it could never match).  Output is always NUL-terminated; a result
 * longer than outlen keeps its end (the domain) and returns -1.
 *
 * Threads: every function is pure and reentrant.
 */
#ifndef PM_CANON_H
#define PM_CANON_H

#include <stdbool.h>
#include <stddef.h>

#define CANON_STRIP_EXTENSION  0x1    /* local+ext@d -> local@d */

/* Room for the canonical form of an input of len octets. */
#define CANON_SIZE(len)  (2 * (len) + 4)

/* addr as above into out.  0, or -1 with why (may be NULL). */
int canon_address(const char *addr, unsigned flags, char *out, size_t outlen,
    char *why, size_t whylen);

/*
 * A canonical address without its "+extension" (alice+news@d: alice@d),
 * as canon_address with CANON_STRIP_EXTENSION would give it; for values
 * that are canonical already (the session's), which are not parsed again.
 */
void canon_strip_extension(const char *canonical, char *out, size_t outlen);

/*
 * The domain of a canonical address ("" when it has none; "<>" for the
 * null sender, so that bounces share one key).
 */
void canon_domain_of(const char *canonical, char *out, size_t outlen);

/* A host name (HELO) or domain: lower case, without trailing dots. */
void canon_domain(const char *name, char *out, size_t outlen);

/* A user name (SASL): lower case. */
void canon_lower(const char *s, char *out, size_t outlen);

/*
 * The network of client_ip: "192.0.2.0/24" for IPv4 with v4_prefix 24,
 * "2001:db8::/64" for IPv6 with v6_prefix 64.  "" when the address is not
 * an IP address.
 */
void canon_client_net(const char *client_ip, unsigned v4_prefix, unsigned v6_prefix,
    char *out, size_t outlen);

#endif
