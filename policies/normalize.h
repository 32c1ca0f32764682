/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * normalize - envelope addresses and client addresses in the one form that
 * policies compare and count them in.
 *
 * Addresses are lowercased whole (local part too: no mail system worth
 * its name delivers Alice@ and alice@ to different people, and a limit must
 * not be dodged by changing case); "+extension" is removed from the local
 * part when asked; the null sender is "<>".  Output is always
 * NUL-terminated and cut at the buffer's size.
 */
#ifndef PM_NORMALIZE_H
#define PM_NORMALIZE_H

#include <stdbool.h>
#include <stddef.h>

/* The address addr ("" for the null sender) normalised into out. */
void norm_address(const char *addr, bool strip_extension, char *out, size_t outlen);

/* Its domain, lowercased ("<>" for the null sender, "" when there is none). */
void norm_domain(const char *addr, char *out, size_t outlen);

/* Lowercase copy. */
void norm_lower(const char *s, char *out, size_t outlen);

/*
 * The network of client_ip: "192.0.2.0/24" for IPv4 with v4_prefix 24,
 * "2001:db8::/64" for IPv6 with v6_prefix 64.  "" when the address is not
 * an IP address.
 */
void norm_client_net(const char *client_ip, unsigned v4_prefix, unsigned v6_prefix,
    char *out, size_t outlen);

#endif
