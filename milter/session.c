/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * session - per-connection and per-message state (see session.h).
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "milter/engine.h"
#include "milter/session.h"
#include "policies/canon.h"

/*
 * Longer than any legal address; protects logs and Redis keys from huge
 * input.  A longer value keeps its last FIELD_MAX octets: the domain, which
 * block lists and rate-limit keys look at, is at the end, so padding the
 * local part cannot push a blocked domain out of sight.
 */
#define FIELD_MAX 1024

/* The last FIELD_MAX octets of p[0..len), as a new string. */
static char *
tail_copy(const char *p, size_t len)
{
	return len > FIELD_MAX ? strndup(p + len - FIELD_MAX, FIELD_MAX) : strndup(p, len);
}

static char *
copy_field(const char *s)
{
	s = s != NULL ? s : "";
	return tail_copy(s, strlen(s));
}

struct session *
session_new(struct cfg *cfg)
{
	struct session *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	if (cfg != NULL)
		cfg_ref(cfg);
	s->cfg = cfg;
	s->pending = POLICY_NONE;
	s->msg.pending = POLICY_NONE;
	strcpy(s->msg.queue_id, "-");
	return s;
}

void
session_msg_reset(struct session *s)
{
	for (size_t i = 0; i < s->msg.nresv; i++)
		free(s->msg.resv[i].key);
	free(s->msg.resv);
	free(s->msg.sender);
	free(s->msg.sasl_user);
	free(s->msg.rcpt);
	memset(&s->msg, 0, sizeof(s->msg));
	s->msg.pending = POLICY_NONE;
	strcpy(s->msg.queue_id, "-");
}

void
session_free(struct session *s)
{
	if (s == NULL)
		return;
	session_msg_reset(s);
	free(s->helo);
	engine_session_end(s);
	cfg_unref(s->cfg);
	free(s);
}

void
session_set_client(struct session *s, const struct sockaddr *sa)
{
	s->client_ip[0] = '\0';
	s->has_client_addr = false;
	if (sa == NULL)
		return;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, s->client_ip, sizeof(s->client_ip));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, s->client_ip, sizeof(s->client_ip));
		/* Show a mapped IPv4 client as the IPv4 address it is. */
		if (strncasecmp(s->client_ip, "::ffff:", 7) == 0 && strchr(s->client_ip, '.'))
			memmove(s->client_ip, s->client_ip + 7, strlen(s->client_ip + 7) + 1);
	}
	if (s->client_ip[0] != '\0' && addr_parse_ip(s->client_ip, &s->client_addr) == 0)
		s->has_client_addr = true;
}

void
session_set_helo(struct session *s, const char *helo)
{
	free(s->helo);
	s->helo = copy_field(helo);
}

/*
 * The canonical form of an envelope address (policies/canon.h), as a new
 * string; NULL without memory.  A huge value is cut after canonicalising, to
 * its last FIELD_MAX octets, so the domain stays in sight.
 */
static char *
canonical_copy(const char *addr)
{
	size_t len = addr != NULL ? strlen(addr) : 0;
	char stack[CANON_SIZE(FIELD_MAX)], *buf = stack, *out;

	if (CANON_SIZE(len) > sizeof(stack) && (buf = malloc(CANON_SIZE(len))) == NULL)
		return NULL;
	/* A malformed spelling is still counted, in its best-effort form. */
	(void)canon_address(addr, 0, buf, CANON_SIZE(len), NULL, 0);
	out = tail_copy(buf, strlen(buf));
	if (buf != stack)
		free(buf);
	return out;
}

static bool
parse_size_param(const char *arg, uint64_t *out)
{
	uint64_t n = 0;
	const char *p;

	if (strncasecmp(arg, "SIZE=", 5) != 0 || !isdigit((unsigned char)arg[5]))
		return false;
	for (p = arg + 5; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');
		/* RFC 1870 allows 20 digits: a size past 64 bits is simply huge. */
		n = n > (UINT64_MAX - d) / 10 ? UINT64_MAX : n * 10 + d;
	}
	if (*p != '\0')
		return false;
	*out = n;
	return true;
}

void
session_msg_start(struct session *s, const char *sender,
    const char *const *esmtp_args, const char *sasl_user)
{
	session_msg_reset(s);
	s->msg.active = true;
	s->msg.sender = canonical_copy(sender);
	s->msg.sasl_user = copy_field(sasl_user);
	if (s->cfg != NULL && s->cfg->exempt.authenticated && s->msg.sasl_user != NULL &&
	    s->msg.sasl_user[0] != '\0')
		s->msg.exempt = true;
	for (size_t i = 0; esmtp_args != NULL && esmtp_args[i] != NULL; i++)
		if (parse_size_param(esmtp_args[i], &s->msg.declared_size))
			s->msg.has_declared_size = true;
}

void
session_set_rcpt(struct session *s, const char *rcpt)
{
	free(s->msg.rcpt);
	s->msg.rcpt = canonical_copy(rcpt);
}

void
session_set_queue_id(struct session *s, const char *qid)
{
	if (qid == NULL || qid[0] == '\0')
		return;
	/* Queue ids are short alphanumerics; anything else is shown sanitised. */
	size_t i = 0;
	for (; qid[i] != '\0' && i + 1 < sizeof(s->msg.queue_id); i++)
		s->msg.queue_id[i] = isalnum((unsigned char)qid[i]) ? qid[i] : '_';
	s->msg.queue_id[i] = '\0';
}
