/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * addr - parsing and matching of IPv4/IPv6 addresses and networks.
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/addr.h"

int
addr_parse_ip(const char *s, struct addr_ip *ip)
{
	struct in_addr v4;

	if (inet_pton(AF_INET, s, &v4) == 1) {
		memset(ip->b, 0, 10);
		ip->b[10] = 0xff;
		ip->b[11] = 0xff;
		memcpy(ip->b + 12, &v4, 4);
		return 0;
	}
	if (inet_pton(AF_INET6, s, ip->b) == 1)
		return 0;
	return -1;
}

static void
mask_host_bits(struct addr_ip *ip, unsigned prefix, bool *had_host_bits)
{
	*had_host_bits = false;
	for (unsigned i = 0; i < 16; i++) {
		unsigned keep = prefix >= (i + 1) * 8 ? 8 : prefix > i * 8 ? prefix - i * 8 : 0;
		uint8_t mask = keep == 0 ? 0 : (uint8_t)(0xff << (8 - keep));
		if (ip->b[i] & ~mask)
			*had_host_bits = true;
		ip->b[i] &= mask;
	}
}

int
addr_parse_net(const char *s, struct addr_net *net, char *why, size_t whylen)
{
	char buf[64];
	const char *slash = strchr(s, '/');
	size_t len = slash ? (size_t)(slash - s) : strlen(s);
	bool v4, host_bits;

	if (len == 0 || len >= sizeof(buf)) {
		snprintf(why, whylen, "\"%s\" is not an IP address or network", s);
		return -1;
	}
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (addr_parse_ip(buf, &net->ip) != 0) {
		snprintf(why, whylen, "\"%s\" is not an IP address or network", s);
		return -1;
	}
	v4 = strchr(buf, ':') == NULL;
	net->prefix = 128;
	if (slash != NULL) {
		char *end;
		unsigned long p = strtoul(slash + 1, &end, 10);
		unsigned max = v4 ? 32 : 128;
		if (slash[1] == '\0' || *end != '\0' || p > max) {
			snprintf(why, whylen, "\"%s\": prefix length must be 0 to %u", s, max);
			return -1;
		}
		net->prefix = v4 ? 96 + (unsigned)p : (unsigned)p;
	}
	mask_host_bits(&net->ip, net->prefix, &host_bits);
	if (host_bits) {
		char fixed[INET6_ADDRSTRLEN];
		if (v4)
			inet_ntop(AF_INET, net->ip.b + 12, fixed, sizeof(fixed));
		else
			inet_ntop(AF_INET6, net->ip.b, fixed, sizeof(fixed));
		snprintf(why, whylen, "\"%s\" has host bits set; did you mean %s%s?", s,
		    fixed, slash);
		return -1;
	}
	return 0;
}

bool
addr_in_net(const struct addr_ip *ip, const struct addr_net *net)
{
	unsigned full = net->prefix / 8, rest = net->prefix % 8;

	if (memcmp(ip->b, net->ip.b, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (ip->b[full] & mask) == net->ip.b[full];
}
