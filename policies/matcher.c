/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * matcher - block and allow lists (the contract is in matcher.h).
 *
 * Names, domains and addresses are one open-addressing hash table of
 * lowercased strings, kept in an arena; each key carries the roles it was
 * entered with (ROLE_WHOLE, ROLE_DOMAIN, ROLE_SUFFIX), so "@example.com"
 * and ".example.com" share one key.  The hash is FNV-1a run from the last
 * byte to the first: the state after byte j is then the hash of the suffix
 * value[j..], and one backward pass over a value yields the hash of every
 * candidate of the suffix walk (each label of the domain, the domain, the
 * whole value).  A lookup costs one pass over the value plus one probe per
 * candidate, whatever the size of the list.
 *
 * Networks are a second table keyed by (address with host bits cleared,
 * prefix length), with the set of prefix lengths present: a lookup masks the
 * client address once per length that exists and probes.  Real lists use a
 * handful of lengths (/32, /24, /16, /128, /64, /48), so that is a handful of
 * probes at any size, with no ordering or overlap bookkeeping at load time.
 *
 * Regexes are compiled once (to PCRE2's interpreter unless matcher_set_jit
 * asked for the JIT) and only read
 * afterwards; each lookup takes its own match data, and one read-only match
 * context bounds the work a value can cause.
 *
 * Threads: everything is written while loading only; matcher_match reads.
 */
#include "config.h"

#define PCRE2_CODE_UNIT_WIDTH 8

#include <errno.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "milter/addr.h"
#include "milter/log.h"
#include "policies/canon.h"
#include "policies/matcher.h"

#define KEY_MAX 1000             /* longest name, domain or address entry */
#define DOMAIN_MAX 255
#define REPORT_MAX 100           /* bad lines reported per file */
#define CHUNK_SIZE (256 * 1024)  /* arena chunk for key bytes */

/*
 * Bounds on one regex against one value.  Ordinary patterns need a few
 * hundred steps on an address; the limit stops catastrophic backtracking
 * (/^(a+)+$/ on "aaaa...!") after about a millisecond.  Depth and heap
 * apply to the interpreter; JIT honours the match limit and its own stack.
 */
#define REGEX_MATCH_LIMIT 100000
#define REGEX_DEPTH_LIMIT 5000
#define REGEX_HEAP_LIMIT_KIB 1024

enum {
	ROLE_WHOLE = 1,          /* the whole value: an address, a name */
	ROLE_DOMAIN = 2,         /* the value's domain is exactly this */
	ROLE_SUFFIX = 4,         /* the value's domain is this or ends in ".this" */
};

#define NO_DOMAIN SIZE_MAX

struct chunk {
	struct chunk *next;
	size_t used;
	char data[];
};

struct strslot {
	const char *key;         /* NULL: free slot; lowercase, in the arena */
	uint32_t hash;
	uint16_t len;
	uint8_t roles;
};

struct netslot {
	uint8_t b[16];           /* host bits cleared */
	uint8_t prefix;          /* 0..128 in the mapped space */
	uint8_t used;
};

struct matcher {
	enum matcher_kind kind;
	size_t count;
	bool null_sender;

	struct strslot *strs;    /* capacity a power of two, at most 3/4 full */
	size_t strcap, strused;
	unsigned roles;          /* union of the roles present */
	struct chunk *chunks;

	struct netslot *nets;
	size_t netcap, netused;
	bool has_len[129];
	uint8_t lens[129];       /* the prefix lengths present */
	unsigned nlens;

	pcre2_code **regexes;
	size_t nregex, regexcap;
	pcre2_match_context *mctx;
};

/* ---- helpers */

static unsigned char
lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

static bool
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static bool
is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* The entry as it may appear in a message: shortened, control bytes as '?'. */
static void
show(const char *s, size_t len, char *out, size_t outlen)
{
	size_t n = 0, max = outlen - 4;

	for (size_t i = 0; i < len && n < max; i++)
		out[n++] = is_ctl((unsigned char)s[i]) ? '?' : s[i];
	if (n < len)
		memcpy(out + n, "...", 3), n += 3;
	out[n] = '\0';
}

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t
hstep(uint64_t h, char c)
{
	return (h ^ lower((unsigned char)c)) * FNV_PRIME;
}

/* FNV's low bits are weak for short keys; a finaliser spreads them. */
static uint32_t
hfinal(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return (uint32_t)h;
}

/* Backwards, as the walk in str_walk computes it. */
static uint32_t
hash_key(const char *s, size_t len)
{
	uint64_t h = FNV_OFFSET;

	while (len > 0)
		h = hstep(h, s[--len]);
	return hfinal(h);
}

/* key is lowercase already; s is a value in any case. */
static bool
eq_lower(const char *key, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)key[i] != lower((unsigned char)s[i]))
			return false;
	return true;
}

/* ---- the string table */

static char *
arena_copy(struct matcher *m, const char *s, size_t len)
{
	struct chunk *c = m->chunks;
	char *p;

	if (c == NULL || CHUNK_SIZE - c->used < len + 1) {
		c = malloc(sizeof(*c) + CHUNK_SIZE);
		if (c == NULL)
			return NULL;
		c->next = m->chunks;
		c->used = 0;
		m->chunks = c;
	}
	p = c->data + c->used;
	memcpy(p, s, len);
	p[len] = '\0';
	c->used += len + 1;
	return p;
}

/* The slot holding s, or the free slot where it would go. */
static struct strslot *
str_slot(struct strslot *slots, size_t cap, const char *s, size_t len, uint32_t hash)
{
	size_t mask = cap - 1;

	for (size_t i = hash & mask;; i = (i + 1) & mask) {
		struct strslot *sl = &slots[i];
		if (sl->key == NULL || (sl->hash == hash && sl->len == len &&
		    eq_lower(sl->key, s, len)))
			return sl;
	}
}

static unsigned
str_find(const struct matcher *m, const char *s, size_t len, uint32_t hash)
{
	const struct strslot *sl = str_slot(m->strs, m->strcap, s, len, hash);

	return sl->key != NULL ? sl->roles : 0;
}

static int
str_grow(struct matcher *m)
{
	size_t cap = m->strcap != 0 ? m->strcap * 2 : 64;
	struct strslot *slots = calloc(cap, sizeof(*slots));

	if (slots == NULL)
		return -1;
	for (size_t i = 0; i < m->strcap; i++) {
		const struct strslot *old = &m->strs[i];
		if (old->key != NULL)
			*str_slot(slots, cap, old->key, old->len, old->hash) = *old;
	}
	free(m->strs);
	m->strs = slots;
	m->strcap = cap;
	return 0;
}

/* key lowercase.  0, or -1 when out of memory. */
static int
str_add(struct matcher *m, const char *key, size_t len, unsigned role)
{
	struct strslot *sl;
	uint32_t hash = hash_key(key, len);

	if ((m->strused + 1) * 4 > m->strcap * 3 && str_grow(m) != 0)
		return -1;
	sl = str_slot(m->strs, m->strcap, key, len, hash);
	if (sl->key == NULL) {
		if ((sl->key = arena_copy(m, key, len)) == NULL)
			return -1;
		sl->hash = hash;
		sl->len = (uint16_t)len;
		sl->roles = 0;
		m->strused++;
	}
	if ((sl->roles & role) == 0) {
		sl->roles |= (uint8_t)role;
		m->roles |= role;
		m->count++;
	}
	return 0;
}

/*
 * The candidates of value v: the whole value (ROLE_WHOLE), its domain, from
 * domain index d (ROLE_DOMAIN, ROLE_SUFFIX), each parent domain at a label
 * boundary (ROLE_SUFFIX).  One trailing dot is not part of any of them.
 */
static bool
str_walk(const struct matcher *m, const char *v, bool whole, size_t d)
{
	size_t end = strlen(v);
	uint64_t h = FNV_OFFSET;

	if (m->strused == 0)
		return false;
	if ((m->roles & ROLE_WHOLE) == 0)
		whole = false;
	if (end > 1 && v[end - 1] == '.')
		end--;
	for (size_t j = end; j-- > 0;) {
		unsigned want = 0;

		h = hstep(h, v[j]);
		if (j == 0 && whole)
			want |= ROLE_WHOLE;
		if (d != NO_DOMAIN && j >= d) {
			if (j == d)
				want |= ROLE_DOMAIN | ROLE_SUFFIX;
			else if (v[j - 1] == '.')
				want |= ROLE_SUFFIX;
		}
		want &= m->roles;
		if (want != 0 && end - j <= KEY_MAX &&
		    (str_find(m, v + j, end - j, hfinal(h)) & want) != 0)
			return true;
		if (!whole && (d == NO_DOMAIN || j <= d))
			break;
	}
	return false;
}

/* ---- the network table */

static uint32_t
net_hash(const uint8_t *b, unsigned prefix)
{
	uint64_t x, y;

	memcpy(&x, b, 8);
	memcpy(&y, b + 8, 8);
	x = (x ^ prefix) * 0x9e3779b97f4a7c15ULL;
	y = (y ^ (y >> 29)) * 0xbf58476d1ce4e5b9ULL;
	return hfinal(x ^ y ^ (y >> 32));
}

static struct netslot *
net_slot(struct netslot *slots, size_t cap, const uint8_t *b, unsigned prefix)
{
	size_t mask = cap - 1;

	for (size_t i = net_hash(b, prefix) & mask;; i = (i + 1) & mask) {
		struct netslot *sl = &slots[i];
		if (!sl->used || (sl->prefix == prefix && memcmp(sl->b, b, 16) == 0))
			return sl;
	}
}

static int
net_grow(struct matcher *m)
{
	size_t cap = m->netcap != 0 ? m->netcap * 2 : 64;
	struct netslot *slots = calloc(cap, sizeof(*slots));

	if (slots == NULL)
		return -1;
	for (size_t i = 0; i < m->netcap; i++) {
		const struct netslot *old = &m->nets[i];
		if (old->used)
			*net_slot(slots, cap, old->b, old->prefix) = *old;
	}
	free(m->nets);
	m->nets = slots;
	m->netcap = cap;
	return 0;
}

static int
net_add(struct matcher *m, const struct addr_net *net)
{
	struct netslot *sl;

	if ((m->netused + 1) * 4 > m->netcap * 3 && net_grow(m) != 0)
		return -1;
	sl = net_slot(m->nets, m->netcap, net->ip.b, net->prefix);
	if (sl->used)
		return 0;
	memcpy(sl->b, net->ip.b, 16);
	sl->prefix = (uint8_t)net->prefix;
	sl->used = 1;
	m->netused++;
	m->count++;
	if (!m->has_len[net->prefix]) {
		m->has_len[net->prefix] = true;
		m->lens[m->nlens++] = (uint8_t)net->prefix;
	}
	return 0;
}

static bool
net_match(const struct matcher *m, const char *value)
{
	struct addr_ip ip;
	uint8_t b[16];

	if (m->netused == 0)
		return false;
	/* Sendmail writes IPv6 clients as "IPv6:2001:db8::1". */
	if (strncasecmp(value, "ipv6:", 5) == 0)
		value += 5;
	if (addr_parse_ip(value, &ip) != 0)
		return false;
	for (unsigned k = 0; k < m->nlens; k++) {
		unsigned prefix = m->lens[k], full = prefix / 8, rest = prefix % 8;

		memcpy(b, ip.b, full);
		memset(b + full, 0, 16 - full);
		if (rest != 0)
			b[full] = ip.b[full] & (uint8_t)(0xff << (8 - rest));
		if (net_slot(m->nets, m->netcap, b, prefix)->used)
			return true;
	}
	return false;
}

/* ---- regexes */


static bool regex_jit;           /* matcher_set_jit */
static int regex_jit_logged;

void
matcher_set_jit(bool on)
{
	regex_jit = on;
}

/*
 * The JIT is off by default because under MemoryDenyWriteExecute it could
 * not allocate its code anyway: say once which engine runs, rather than
 * leave a failed JIT to be found by profiling.
 */
static void
regex_jit_compile(pcre2_code *code)
{
	int rc = regex_jit ? pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) : 0;
	bool first = __atomic_exchange_n(&regex_jit_logged, 1, __ATOMIC_RELAXED) == 0;

	if (!first)
		return;
	if (!regex_jit)
		log_msg(LOG_INFO, "regex: PCRE2 JIT off (MemoryDenyWriteExecute), "
		    "regexes run in the PCRE2 interpreter");
	else if (rc != 0)
		log_msg(LOG_WARNING, "regex: PCRE2 JIT unavailable (error %d), "
		    "regexes run in the PCRE2 interpreter", rc);
}
static int
regex_add(struct matcher *m, const char *s, size_t len, const char *shown,
    char *why, size_t whylen)
{
	size_t close = len - 1;
	uint32_t options = 0;
	pcre2_code *code;
	int err;
	PCRE2_SIZE off;

	while (close > 0 && s[close] != '/')
		close--;
	if (close == 0) {
		snprintf(why, whylen, "\"%s\": a regex ends with / or /i", shown);
		return -1;
	}
	for (size_t i = close + 1; i < len; i++) {
		if (s[i] != 'i') {
			snprintf(why, whylen, "\"%s\": a regex ends with / or /i "
			    "(unknown flag '%c')", shown, is_ctl((unsigned char)s[i]) ? '?' : s[i]);
			return -1;
		}
		options |= PCRE2_CASELESS;
	}
	if (close == 1) {
		snprintf(why, whylen, "\"%s\": the regex is empty", shown);
		return -1;
	}
	code = pcre2_compile((PCRE2_SPTR)(s + 1), close - 1, options, &err, &off, NULL);
	if (code == NULL) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(err, msg, sizeof(msg));
		snprintf(why, whylen, "\"%s\": bad regex: %s at offset %zu", shown,
		    (const char *)msg, (size_t)off);
		return -1;
	}
	regex_jit_compile(code);

	if (m->mctx == NULL) {
		if ((m->mctx = pcre2_match_context_create(NULL)) == NULL)
			goto nomem;
		pcre2_set_match_limit(m->mctx, REGEX_MATCH_LIMIT);
		pcre2_set_depth_limit(m->mctx, REGEX_DEPTH_LIMIT);
		pcre2_set_heap_limit(m->mctx, REGEX_HEAP_LIMIT_KIB);
	}
	if (m->nregex == m->regexcap) {
		size_t cap = m->regexcap != 0 ? m->regexcap * 2 : 8;
		pcre2_code **r = realloc(m->regexes, cap * sizeof(*r));
		if (r == NULL)
			goto nomem;
		m->regexes = r;
		m->regexcap = cap;
	}
	m->regexes[m->nregex++] = code;
	m->count++;
	return 0;
nomem:
	pcre2_code_free(code);
	snprintf(why, whylen, "\"%s\": out of memory", shown);
	return -1;
}

/* Errors (the limits included) are no match: a list never blocks by accident. */
static bool
regex_match(const struct matcher *m, const char *value)
{
	pcre2_match_data *md;
	size_t len;
	bool hit = false;

	if (m->nregex == 0)
		return false;
	if ((md = pcre2_match_data_create(1, NULL)) == NULL)
		return false;
	len = strlen(value);
	for (size_t i = 0; i < m->nregex && !hit; i++)
		hit = pcre2_match(m->regexes[i], (PCRE2_SPTR)value, len, 0, 0, md,
		    m->mctx) >= 0;
	pcre2_match_data_free(md);
	return hit;
}

/* ---- entries */

static bool
is_ip_or_net(const char *s)
{
	struct addr_net net;
	char why[128];

	return addr_parse_net(s, &net, why, sizeof(why)) == 0;
}

/* Validates the domain d[0..len) of entry shown.  0 or -1 with why. */
static int
domain_check(const char *d, size_t len, const char *shown, char *why, size_t whylen)
{
	if (len == 0) {
		snprintf(why, whylen, "\"%s\": the domain is empty", shown);
		return -1;
	}
	if (len > DOMAIN_MAX) {
		snprintf(why, whylen, "\"%s\": the domain is longer than %d characters",
		    shown, DOMAIN_MAX);
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)d[i];

		if (c == '.' && (i == 0 || d[i - 1] == '.')) {
			snprintf(why, whylen, "\"%s\": the domain has an empty label", shown);
			return -1;
		}
		if (is_space((char)c)) {
			snprintf(why, whylen, "\"%s\" contains white space (one entry a line; "
			    "comments go on lines of their own)", shown);
			return -1;
		}
		if (is_ctl(c)) {
			snprintf(why, whylen, "\"%s\": a control character is not allowed "
			    "in a domain", shown);
			return -1;
		}
		if (strchr("@\"<>(),;\\/", c) != NULL) {
			snprintf(why, whylen, "\"%s\": '%c' is not allowed in a domain", shown, c);
			return -1;
		}
	}
	return 0;
}

/* A domain entry d[0..len) with its leading '@' or '.' already removed. */
static int
domain_add(struct matcher *m, const char *d, size_t len, unsigned role,
    const char *shown, char *why, size_t whylen)
{
	if (len > 1 && d[len - 1] == '.')
		len--;
	if (domain_check(d, len, shown, why, whylen) != 0)
		return -1;
	if (str_add(m, d, len, role) != 0) {
		snprintf(why, whylen, "\"%s\": out of memory", shown);
		return -1;
	}
	return 0;
}

static int
local_check(const char *l, size_t len, const char *shown, char *why, size_t whylen)
{
	if (len == 0) {
		snprintf(why, whylen, "\"%s\": the local part before @ is empty", shown);
		return -1;
	}
	if (l[0] == '"') {
		if (len < 2 || l[len - 1] != '"') {
			snprintf(why, whylen, "\"%s\": the quoted local part does not end "
			    "with a quote before @", shown);
			return -1;
		}
		for (size_t i = 1; i < len - 1; i++) {
			unsigned char c = (unsigned char)l[i];
			if (c == '\\' && i + 1 < len - 1)
				i++;
			else if (c == '"' || (is_ctl(c) && c != '\t')) {
				snprintf(why, whylen, "\"%s\": %s in the quoted local part",
				    shown, c == '"' ? "a stray quote" : "a control character");
				return -1;
			}
		}
		return 0;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)l[i];

		if (is_space((char)c)) {
			snprintf(why, whylen, "\"%s\" contains white space (one entry a line; "
			    "comments go on lines of their own; quote a local part with "
			    "spaces)", shown);
			return -1;
		}
		if (c == '@') {
			snprintf(why, whylen, "\"%s\" has more than one @ (quote a local part "
			    "that contains one)", shown);
			return -1;
		}
		if (is_ctl(c)) {
			snprintf(why, whylen, "\"%s\": a control character is not allowed "
			    "in a local part", shown);
			return -1;
		}
		if (strchr("\"<>(),;:\\[]", c) != NULL) {
			snprintf(why, whylen, "\"%s\": '%c' is not allowed in an unquoted "
			    "local part", shown, c);
			return -1;
		}
	}
	return 0;
}

static int
address_add(struct matcher *m, char *key, size_t len, const char *shown,
    char *why, size_t whylen)
{
	char canon[CANON_SIZE(KEY_MAX)], reason[128];
	char *at;

	if (strcmp(key, "<>") == 0) {
		if (!m->null_sender) {
			m->null_sender = true;
			m->count++;
		}
		return 0;
	}
	if (key[0] == '@')
		return domain_add(m, key + 1, len - 1, ROLE_DOMAIN, shown, why, whylen);
	if (key[0] == '.')
		return domain_add(m, key + 1, len - 1, ROLE_SUFFIX, shown, why, whylen);
	if ((at = strrchr(key, '@')) == NULL) {
		if (strpbrk(key, " \t\v\f\r\n") != NULL)
			snprintf(why, whylen, "\"%s\" contains white space (one entry a line; "
			    "comments go on lines of their own)", shown);
		else if (is_ip_or_net(key))
			snprintf(why, whylen, "\"%s\" is an IP address or network: those fit "
			    "only match = \"client\"", shown);
		else
			snprintf(why, whylen, "\"%s\" is not an address: write @%s for that "
			    "domain or .%s for it and its subdomains", shown, shown, shown);
		return -1;
	}
	if (local_check(key, (size_t)(at - key), shown, why, whylen) != 0)
		return -1;
	if (len > (size_t)(at - key) + 2 && key[len - 1] == '.')
		key[--len] = '\0';
	if (domain_check(at + 1, len - (size_t)(at - key) - 1, shown, why, whylen) != 0)
		return -1;
	/* Stored as values are compared: in the one canonical form. */
	if (canon_address(key, 0, canon, sizeof(canon), reason, sizeof(reason)) != 0) {
		snprintf(why, whylen, "\"%s\" can never match: %s", shown, reason);
		return -1;
	}
	if (str_add(m, canon, strlen(canon), ROLE_WHOLE) != 0) {
		snprintf(why, whylen, "\"%s\": out of memory", shown);
		return -1;
	}
	return 0;
}

static int
domain_entry_add(struct matcher *m, char *key, size_t len, const char *shown,
    char *why, size_t whylen)
{
	if (strcmp(key, "<>") == 0) {
		snprintf(why, whylen, "\"<>\" (the null sender) has no domain: list it "
		    "under match = \"sender\"");
		return -1;
	}
	if (key[0] == '@')
		return domain_add(m, key + 1, len - 1, ROLE_DOMAIN, shown, why, whylen);
	if (key[0] == '.')
		return domain_add(m, key + 1, len - 1, ROLE_SUFFIX, shown, why, whylen);
	if (strchr(key, '@') != NULL) {
		snprintf(why, whylen, "\"%s\" is an address: addresses fit match = \"sender\" "
		    "or \"rcpt\"; a domain list takes example.com or .example.com", shown);
		return -1;
	}
	if (is_ip_or_net(key)) {
		snprintf(why, whylen, "\"%s\" is an IP address or network: those fit "
		    "only match = \"client\"", shown);
		return -1;
	}
	return domain_add(m, key, len, ROLE_DOMAIN, shown, why, whylen);
}

static int
client_add(struct matcher *m, const char *key, const char *shown, char *why,
    size_t whylen)
{
	struct addr_net net;
	char reason[256];

	if (addr_parse_net(key, &net, reason, sizeof(reason)) != 0) {
		if (strstr(reason, "not an IP address") != NULL)
			snprintf(why, whylen, "\"%s\" is not an IP address or network: a client "
			    "list takes 192.0.2.1, 192.0.2.0/24, 2001:db8::/32 or a /regex/",
			    shown);
		else
			snprintf(why, whylen, "%s", reason);
		return -1;
	}
	if (net_add(m, &net) != 0) {
		snprintf(why, whylen, "\"%s\": out of memory", shown);
		return -1;
	}
	return 0;
}

static int
name_add(struct matcher *m, char *key, size_t len, const char *shown, char *why,
    size_t whylen)
{
	if (strcmp(key, "<>") == 0) {
		snprintf(why, whylen, "\"<>\" is the null sender: list it under "
		    "match = \"sender\"");
		return -1;
	}
	if (key[0] == '.')
		return domain_add(m, key + 1, len - 1, ROLE_SUFFIX, shown, why, whylen);
	if (key[0] == '@') {
		snprintf(why, whylen, "\"%s\": for a domain and its subdomains write .%s "
		    "(or a /regex/)", shown, shown + 1);
		return -1;
	}
	if (strchr(key, '/') != NULL && is_ip_or_net(key)) {
		snprintf(why, whylen, "\"%s\" is a network: networks fit only "
		    "match = \"client\"", shown);
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		if (is_space(key[i])) {
			snprintf(why, whylen, "\"%s\" contains white space (one entry a line; "
			    "comments go on lines of their own)", shown);
			return -1;
		}
		if (is_ctl((unsigned char)key[i])) {
			snprintf(why, whylen, "\"%s\" contains a control character", shown);
			return -1;
		}
	}
	if (len > 1 && key[len - 1] == '.')
		len--;
	if (str_add(m, key, len, ROLE_WHOLE) != 0) {
		snprintf(why, whylen, "\"%s\": out of memory", shown);
		return -1;
	}
	return 0;
}

/* ---- the interface */

struct matcher *
matcher_new(enum matcher_kind kind)
{
	struct matcher *m;

	if (kind != MATCHER_ADDRESS && kind != MATCHER_DOMAIN &&
	    kind != MATCHER_CLIENT && kind != MATCHER_NAME)
		return NULL;
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return NULL;
	m->kind = kind;
	return m;
}

void
matcher_free(struct matcher *m)
{
	struct chunk *c, *next;

	if (m == NULL)
		return;
	for (c = m->chunks; c != NULL; c = next) {
		next = c->next;
		free(c);
	}
	free(m->strs);
	free(m->nets);
	for (size_t i = 0; i < m->nregex; i++)
		pcre2_code_free(m->regexes[i]);
	free(m->regexes);
	pcre2_match_context_free(m->mctx);
	free(m);
}

int
matcher_add(struct matcher *m, const char *entry, char *why, size_t whylen)
{
	char key[KEY_MAX + 1], shown[96];
	const char *s = entry != NULL ? entry : "";
	size_t len;

	while (is_space(*s))
		s++;
	len = strlen(s);
	while (len > 0 && is_space(s[len - 1]))
		len--;
	show(s, len, shown, sizeof(shown));
	if (len == 0) {
		snprintf(why, whylen, "empty entry");
		return -1;
	}
	if (s[0] == '/')
		return regex_add(m, s, len, shown, why, whylen);
	if (len > KEY_MAX) {
		snprintf(why, whylen, "\"%s\" is longer than %d characters", shown, KEY_MAX);
		return -1;
	}
	for (size_t i = 0; i < len; i++)
		key[i] = (char)lower((unsigned char)s[i]);
	key[len] = '\0';

	switch (m->kind) {
	case MATCHER_ADDRESS:
		return address_add(m, key, len, shown, why, whylen);
	case MATCHER_DOMAIN:
		return domain_entry_add(m, key, len, shown, why, whylen);
	case MATCHER_CLIENT:
		return client_add(m, key, shown, why, whylen);
	case MATCHER_NAME:
		return name_add(m, key, len, shown, why, whylen);
	}
	snprintf(why, whylen, "bad matcher kind");
	return -1;
}

int
matcher_load_file(struct matcher *m, const char *path,
    void (*report)(void *arg, const char *msg), void *arg)
{
	char msg[4096 + 512], why[512];
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	unsigned long lineno = 0;
	int errors = 0;
	FILE *f;

	if ((f = fopen(path, "re")) == NULL) {
		snprintf(msg, sizeof(msg), "%s: cannot open: %s", path, strerror(errno));
		if (report != NULL)
			report(arg, msg);
		return 1;
	}
	while ((n = getline(&line, &cap, f)) != -1) {
		char *p = line;

		lineno++;
		if (strlen(line) != (size_t)n) {
			snprintf(why, sizeof(why), "the line contains a NUL byte");
		} else {
			/* A UTF-8 byte order mark, as some editors write. */
			if (lineno == 1 && strncmp(p, "\xef\xbb\xbf", 3) == 0)
				p += 3;
			while (is_space(*p))
				p++;
			if (*p == '\0' || *p == '#' || matcher_add(m, p, why, sizeof(why)) == 0)
				continue;
		}
		if (++errors <= REPORT_MAX) {
			snprintf(msg, sizeof(msg), "%s:%lu: %s", path, lineno, why);
			if (report != NULL)
				report(arg, msg);
		}
	}
	if (ferror(f)) {
		snprintf(msg, sizeof(msg), "%s: read error: %s", path, strerror(errno));
		if (report != NULL)
			report(arg, msg);
		errors++;
	}
	if (errors > REPORT_MAX) {
		snprintf(msg, sizeof(msg), "%s: %d more bad lines not shown", path,
		    errors - REPORT_MAX);
		if (report != NULL)
			report(arg, msg);
	}
	free(line);
	fclose(f);
	return errors;
}

bool
matcher_match(const struct matcher *m, const char *value)
{
	const char *at;
	size_t d;

	if (value == NULL)
		value = "";
	switch (m->kind) {
	case MATCHER_ADDRESS:
		if (value[0] == '\0' || strcmp(value, "<>") == 0)
			return m->null_sender || regex_match(m, "<>");
		at = strrchr(value, '@');
		d = at != NULL ? (size_t)(at - value) + 1 : NO_DOMAIN;
		return str_walk(m, value, true, d) || regex_match(m, value);
	case MATCHER_DOMAIN:
	case MATCHER_NAME:
		at = strrchr(value, '@');
		d = at != NULL ? (size_t)(at - value) + 1 : 0;
		return str_walk(m, value, m->kind == MATCHER_NAME, d) || regex_match(m, value);
	case MATCHER_CLIENT:
		return net_match(m, value) || regex_match(m, value);
	}
	return false;
}

size_t
matcher_count(const struct matcher *m)
{
	return m->count;
}
