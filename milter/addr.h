/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * addr - IP addresses and networks as policy-milter compares them.
 *
 * Addresses are kept as 16 bytes; an IPv4 address is stored as its
 * IPv4-mapped IPv6 form (::ffff:a.b.c.d) so that one comparison serves
 * both families, and an IPv4 network /n becomes a mapped /96+n.
 */
#ifndef PM_ADDR_H
#define PM_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct addr_ip {
	uint8_t b[16];
};

struct addr_net {
	struct addr_ip ip;     /* host bits cleared */
	unsigned prefix;       /* 0..128, in the mapped space */
};

/* "192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1".  0 or -1. */
int addr_parse_ip(const char *s, struct addr_ip *ip);

/*
 * "192.0.2.0/24", "2001:db8::/32", or a single address.  Host bits set
 * below the prefix are an error ("192.0.2.1/24": did you mean .0/24?), as in
 * most firewalls, because they usually mean a typo.  0, or -1 with why.
 */
int addr_parse_net(const char *s, struct addr_net *net, char *why, size_t whylen);

bool addr_in_net(const struct addr_ip *ip, const struct addr_net *net);

#endif
