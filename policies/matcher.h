/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * matcher - a static list of block/allow entries that one value is matched
 * against, with lookups that do not slow down as the list grows.
 *
 * A matcher holds the entries of one `block` policy (its `entries` and its
 * `file`) for one kind of value.  Entry syntax, one entry per line or per
 * matcher_add call:
 *
 *   user@example.com   that address                       (ADDRESS)
 *   "john doe"@ex.com  quoted local parts too             (ADDRESS)
 *   @example.com       any address at exactly that domain (ADDRESS)
 *                      that domain                        (DOMAIN)
 *   example.com        that domain                        (DOMAIN)
 *   .example.com       that domain and all its subdomains (ADDRESS, DOMAIN, NAME)
 *   <>                 the null sender                    (ADDRESS)
 *   192.0.2.0/24       a network; a bare IP is one host   (CLIENT)
 *   2001:db8::/32
 *   mail.example.com   that name                          (NAME)
 *   /regex/  /regex/i  PCRE2, on the value's bytes        (all kinds)
 *
 * Names, domains and addresses compare ASCII case-insensitively (local
 * parts too, quoted ones included, as policies/canon does); a single
 * trailing dot of a value is ignored.  `.example.com` matches example.com
 * and a.b.example.com, never notexample.com.  An IPv4 client given as
 * ::ffff:a.b.c.d matches IPv4 networks (milter/addr maps both families into
 * one space).  Regexes see the value exactly as passed, so without /i they
 * are case-sensitive; the null sender is shown to them as "<>".
 *
 * Cost of a lookup: a hash probe for the exact value, one per label of its
 * domain for the suffix walk, one per distinct prefix length for networks,
 * then each regex in list order.  Only the regexes grow with the list.  A
 * regex that hits its match limit (a hostile value against a backtracking
 * pattern) counts as no match.
 *
 * Ownership: the matcher copies every entry; values are only borrowed for
 * the call.  Threads: build the matcher (matcher_add, matcher_load_file) in
 * one thread; after that matcher_match and matcher_count may be called from
 * any number of threads at once.
 */
#ifndef PM_MATCHER_H
#define PM_MATCHER_H

#include <stdbool.h>
#include <stddef.h>

enum matcher_kind {
	MATCHER_ADDRESS,        /* match = sender, rcpt */
	MATCHER_DOMAIN,         /* match = sender_domain, rcpt_domain */
	MATCHER_CLIENT,         /* match = client: an IP address */
	MATCHER_NAME,           /* match = helo, sasl_user */
};

struct matcher;

/* An empty list.  NULL when out of memory or kind is not a matcher_kind. */
struct matcher *matcher_new(enum matcher_kind kind);

/* Frees the matcher and all it holds.  Accepts NULL. */
void matcher_free(struct matcher *m);

/*
 * Adds one entry (surrounding white space ignored).  0, or -1 with the
 * reason in why, which names the entry (the caller adds "file:line: ").
 * Adding an entry that is already there is not an error.
 */
int matcher_add(struct matcher *m, const char *entry, char *why, size_t whylen);

/*
 * Adds every entry of the file at path: one entry a line; blank lines,
 * lines whose first non-space character is '#' and space around entries are
 * ignored.  Each bad line is reported as report(arg, "path:line: reason")
 * (a file that cannot be opened or read as "path: reason"); after 100 bad
 * lines one last report says how many more there were.  report may be NULL.
 * Returns the number of errors, 0 when every line loaded.  The good lines
 * are added even when some are bad: a caller that refuses a list with
 * errors frees the matcher (and keeps the old one, on a reload).
 */
int matcher_load_file(struct matcher *m, const char *path,
    void (*report)(void *arg, const char *msg), void *arg);

/*
 * Does value match any entry?  value as the engine has it: an address
 * without <> ("" or "<>" is the null sender), a domain (for DOMAIN, an
 * address stands for its domain), an IP address in text (an "IPv6:" prefix
 * is allowed), a HELO name or SASL user (for NAME, `.example.com` entries
 * look at the part after the last '@' of a user such as alice@example.com).
 * NULL is taken as "".
 */
bool matcher_match(const struct matcher *m, const char *value);

/* Distinct entries held (a repeated entry counts once). */
size_t matcher_count(const struct matcher *m);

/*
 * PCRE2's JIT for regexes compiled from now on: off by default.  The JIT
 * needs memory that is writable and then executable, which the systemd
 * unit forbids (MemoryDenyWriteExecute=yes); the interpreter costs 5 to 9 ns
 * more per regex and value (make bench, README).  The first
 * regex compiled logs which of the two runs.  Call before loading.
 */
void matcher_set_jit(bool on);

#endif
