/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * mproto - the MTA side of the milter protocol (see mproto.h).
 *
 * The socket is non-blocking; every wait is a poll(2) bounded by a deadline
 * on the monotonic clock, so that a milter that never answers costs a test
 * its timeout, not the whole run.  Input is buffered (a reply is a few
 * octets: one recv usually brings the whole packet); each packet sent is
 * built in one buffer and sent with one send(2) (MSG_NOSIGNAL: a milter
 * that closed the connection is an EPIPE, not a SIGPIPE).
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tests/mproto.h"

#define MP_MAX_PACKET (1024 * 1024)   /* largest data accepted (SMFIP_MDS_1M) */
#define MP_MAX_REPLY 980              /* libmilter's MAXREPLYLEN */

struct mproto {
	int fd;
	int timeout_ms;
	char err[512];
	uint32_t version, actions, protocol;
	char *symlist[MP_NSTAGES];
	unsigned char *in;                /* received, not yet consumed: [head, tail) */
	size_t incap, head, tail;
	unsigned char *pkt;               /* the last packet's data, plus a NUL */
	size_t pktcap;
	unsigned char *out;               /* the packet being sent */
	size_t outcap;
};

static void
set_err(struct mproto *mp, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(mp->err, sizeof(mp->err), fmt, ap);
	va_end(ap);
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
grow(unsigned char **buf, size_t *cap, size_t need)
{
	unsigned char *p;
	size_t n = *cap ? *cap : 4096;

	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	if ((p = realloc(*buf, n)) == NULL)
		return -1;
	*buf = p;
	*cap = n;
	return 0;
}

/* ---- connecting */

/* Split target into a unix path or host and port; 0 or -1. */
static int
parse_target(const char *target, char *host, size_t hostlen, char *port, size_t portlen,
    bool *is_unix)
{
	const char *p, *colon;
	size_t n;

	*is_unix = false;
	if (strncmp(target, "unix:", 5) == 0 || target[0] == '/') {
		p = target[0] == '/' ? target : target + 5;
		if (strlen(p) >= hostlen)
			return -1;
		snprintf(host, hostlen, "%s", p);
		*is_unix = true;
		return 0;
	}
	if (strncmp(target, "inet:", 5) == 0 || strncmp(target, "inet6:", 6) == 0) {
		/* libmilter's spelling, PORT@HOST */
		const char *at;

		p = strchr(target, ':') + 1;
		if ((at = strchr(p, '@')) == NULL || (size_t)(at - p) >= portlen ||
		    strlen(at + 1) >= hostlen)
			return -1;
		snprintf(port, portlen, "%.*s", (int)(at - p), p);
		snprintf(host, hostlen, "%s", at + 1);
		return 0;
	}
	if (target[0] == '[') {
		const char *end = strchr(target, ']');

		if (end == NULL || end[1] != ':')
			return -1;
		n = (size_t)(end - target - 1);
		if (n >= hostlen || strlen(end + 2) >= portlen)
			return -1;
		snprintf(host, hostlen, "%.*s", (int)n, target + 1);
		snprintf(port, portlen, "%s", end + 2);
		return 0;
	}
	if ((colon = strrchr(target, ':')) == NULL)
		return -1;
	n = (size_t)(colon - target);
	if (n >= hostlen || strlen(colon + 1) >= portlen)
		return -1;
	snprintf(host, hostlen, "%.*s", (int)n, target);
	snprintf(port, portlen, "%s", colon + 1);
	return 0;
}

/* Non-blocking connect bounded by timeout_ms; fd stays non-blocking. */
static int
connect_fd(int fd, const struct sockaddr *sa, socklen_t salen, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	int soerr = 0;
	socklen_t len = sizeof(soerr);

	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == -1)
		return -1;
	if (connect(fd, sa, salen) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EAGAIN)
		return -1;
	if (poll(&pfd, 1, timeout_ms) != 1) {
		errno = ETIMEDOUT;
		return -1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == -1)
		return -1;
	if (soerr != 0) {
		errno = soerr;
		return -1;
	}
	return 0;
}

struct mproto *
mp_open(const char *target, int timeout_ms, char *err, size_t errlen)
{
	char host[256], port[32];
	bool is_unix;
	struct mproto *mp;
	int fd = -1, one = 1;

	if (parse_target(target, host, sizeof(host), port, sizeof(port), &is_unix) == -1) {
		snprintf(err, errlen, "%s: not host:port, [address]:port or unix:/path",
		    target);
		return NULL;
	}
	if (is_unix) {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };

		if (strlen(host) >= sizeof(sun.sun_path)) {
			snprintf(err, errlen, "%s: path too long", target);
			return NULL;
		}
		memcpy(sun.sun_path, host, strlen(host) + 1);
		if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1 ||
		    connect_fd(fd, (struct sockaddr *)&sun, sizeof(sun), timeout_ms) == -1) {
			snprintf(err, errlen, "%s: %s", target, strerror(errno));
			if (fd != -1)
				close(fd);
			return NULL;
		}
	} else {
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
		    .ai_flags = AI_NUMERICSERV }, *res, *ai;
		int rc;

		if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
			snprintf(err, errlen, "%s: %s", target, gai_strerror(rc));
			return NULL;
		}
		snprintf(err, errlen, "%s: no address", target);
		for (ai = res; ai != NULL; ai = ai->ai_next) {
			if ((fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol)) == -1)
				continue;
			if (connect_fd(fd, ai->ai_addr, ai->ai_addrlen, timeout_ms) == 0)
				break;
			snprintf(err, errlen, "%s: %s", target, strerror(errno));
			close(fd);
			fd = -1;
		}
		freeaddrinfo(res);
		if (fd == -1)
			return NULL;
		/* Packets are small and each waits for an answer: no Nagle delay. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	if ((mp = calloc(1, sizeof(*mp))) == NULL) {
		snprintf(err, errlen, "out of memory");
		close(fd);
		return NULL;
	}
	mp->fd = fd;
	mp->timeout_ms = timeout_ms;
	return mp;
}

void
mp_close(struct mproto *mp)
{
	if (mp == NULL)
		return;
	if (mp->fd != -1)
		close(mp->fd);
	for (int i = 0; i < MP_NSTAGES; i++)
		free(mp->symlist[i]);
	free(mp->in);
	free(mp->pkt);
	free(mp->out);
	free(mp);
}

const char *
mp_error(const struct mproto *mp)
{
	return mp->err;
}

int
mp_fd(const struct mproto *mp)
{
	return mp->fd;
}

/* ---- sending */

static int
write_all(struct mproto *mp, const unsigned char *p, size_t len)
{
	int64_t deadline = now_ms() + mp->timeout_ms;

	while (len > 0) {
		ssize_t n = send(mp->fd, p, len, MSG_NOSIGNAL);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pfd = { .fd = mp->fd, .events = POLLOUT };
			int64_t left = deadline - now_ms();

			if (left <= 0 || poll(&pfd, 1, (int)left) == 0) {
				set_err(mp, "send: the milter reads nothing for %d ms",
				    mp->timeout_ms);
				return -1;
			}
			continue;
		}
		set_err(mp, "send: %s", strerror(errno));
		return -1;
	}
	return 0;
}

int
mp_send_lying(struct mproto *mp, uint32_t length, int cmd, const void *data, size_t len)
{
	size_t total = 5 + len;

	mp->err[0] = '\0';
	if (grow(&mp->out, &mp->outcap, total) == -1) {
		set_err(mp, "out of memory");
		return -1;
	}
	mp->out[0] = (unsigned char)(length >> 24);
	mp->out[1] = (unsigned char)(length >> 16);
	mp->out[2] = (unsigned char)(length >> 8);
	mp->out[3] = (unsigned char)length;
	mp->out[4] = (unsigned char)cmd;
	if (len > 0)
		memcpy(mp->out + 5, data, len);
	return write_all(mp, mp->out, total);
}

int
mp_send(struct mproto *mp, int cmd, const void *data, size_t len)
{
	if (len >= UINT32_MAX) {
		set_err(mp, "packet too long");
		return -1;
	}
	return mp_send_lying(mp, (uint32_t)len + 1, cmd, data, len);
}

int
mp_send_raw(struct mproto *mp, const void *bytes, size_t len)
{
	mp->err[0] = '\0';
	return write_all(mp, bytes, len);
}

int
mp_shutdown_write(struct mproto *mp)
{
	if (shutdown(mp->fd, SHUT_WR) == -1) {
		set_err(mp, "shutdown: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* ---- reading */

/*
 * Have at least need octets buffered by the deadline: 1, 0 on timeout,
 * MP_EOF or MP_ERR.
 */
static int
fill(struct mproto *mp, size_t need, int64_t deadline)
{
	while (mp->tail - mp->head < need) {
		struct pollfd pfd = { .fd = mp->fd, .events = POLLIN };
		int64_t left;
		ssize_t n;

		if (mp->head > 0) {
			memmove(mp->in, mp->in + mp->head, mp->tail - mp->head);
			mp->tail -= mp->head;
			mp->head = 0;
		}
		if (grow(&mp->in, &mp->incap, need < 4096 ? 4096 : need) == -1) {
			set_err(mp, "out of memory");
			return MP_ERR;
		}
		n = recv(mp->fd, mp->in + mp->tail, mp->incap - mp->tail, 0);
		if (n > 0) {
			mp->tail += (size_t)n;
			continue;
		}
		if (n == 0) {
			set_err(mp, "the milter closed the connection");
			return MP_EOF;
		}
		if (errno == EINTR)
			continue;
		if (errno == ECONNRESET) {
			set_err(mp, "the milter reset the connection");
			return MP_EOF;
		}
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			set_err(mp, "recv: %s", strerror(errno));
			return MP_ERR;
		}
		left = deadline - now_ms();
		if (left <= 0)
			return 0;
		if (poll(&pfd, 1, (int)left) == -1 && errno != EINTR) {
			set_err(mp, "poll: %s", strerror(errno));
			return MP_ERR;
		}
	}
	return 1;
}

int
mp_read(struct mproto *mp, struct mp_reply *r, int timeout_ms)
{
	struct mp_reply dummy;
	int64_t deadline = now_ms() + (timeout_ms < 0 ? mp->timeout_ms : timeout_ms);
	uint32_t length;
	size_t len;
	int rc, cmd;
	char why[256];

	if (r == NULL)
		r = &dummy;
	r->cmd = MP_ERR;
	r->len = 0;
	r->data = "";
	mp->err[0] = '\0';
	if ((rc = fill(mp, 5, deadline)) <= 0) {
		if (rc == 0 && mp->tail > mp->head) {
			set_err(mp, "a partial packet header, then nothing");
			rc = MP_ERR;
		}
		return r->cmd = rc;
	}
	length = (uint32_t)mp->in[mp->head] << 24 | (uint32_t)mp->in[mp->head + 1] << 16 |
	    (uint32_t)mp->in[mp->head + 2] << 8 | mp->in[mp->head + 3];
	cmd = mp->in[mp->head + 4];
	if (length == 0 || length - 1 > MP_MAX_PACKET) {
		set_err(mp, "reply packet with length %lu", (unsigned long)length);
		return r->cmd = MP_ERR;
	}
	len = length - 1;
	if ((rc = fill(mp, 5 + len, deadline)) <= 0) {
		if (rc == 0) {
			set_err(mp, "a packet of %zu octets, only %zu came", len,
			    mp->tail - mp->head - 5);
			rc = MP_ERR;
		}
		return r->cmd = rc;
	}
	if (grow(&mp->pkt, &mp->pktcap, len + 1) == -1) {
		set_err(mp, "out of memory");
		return r->cmd = MP_ERR;
	}
	memcpy(mp->pkt, mp->in + mp->head + 5, len);
	mp->pkt[len] = '\0';
	mp->head += 5 + len;
	r->len = len;
	r->data = (const char *)mp->pkt;
	if (mp_reply_check(cmd, r->data, len, why, sizeof(why)) == -1) {
		set_err(mp, "invalid reply '%c' (%zu octets): %s", isprint(cmd) ? cmd : '?',
		    len, why);
		return r->cmd = MP_ERR;
	}
	return r->cmd = cmd;
}

/* ---- checking replies */

/* data is n strings, each NUL-terminated, filling len exactly. */
static bool
strings(const char *data, size_t len, int n)
{
	size_t off = 0;

	for (int i = 0; i < n; i++) {
		const char *nul = memchr(data + off, '\0', len - off);

		if (off >= len || nul == NULL)
			return false;
		off = (size_t)(nul - data) + 1;
	}
	return off == len;
}

static int
check_text_reply(const char *data, size_t len, char *why, size_t whylen)
{
	const char *line, *end;
	size_t tlen;

	if (len == 0 || data[len - 1] != '\0' || strlen(data) + 1 != len) {
		snprintf(why, whylen, "text not one NUL-terminated string");
		return -1;
	}
	tlen = len - 1;
	if (tlen > MP_MAX_REPLY) {
		snprintf(why, whylen, "%zu octets, more than %d", tlen, MP_MAX_REPLY);
		return -1;
	}
	for (line = data; ; line = end + 2) {
		const char *p, *x;
		bool last;

		end = strstr(line, "\r\n");
		last = end == NULL;
		if (last)
			end = data + tlen;
		if (end - line < 3 || !isdigit((unsigned char)line[0]) ||
		    !isdigit((unsigned char)line[1]) || !isdigit((unsigned char)line[2])) {
			snprintf(why, whylen, "line \"%.40s\" does not start with a code", line);
			return -1;
		}
		if ((line[0] != '4' && line[0] != '5') || line[1] > '5') {
			snprintf(why, whylen, "code %.3s is not a 4xx/5xx refusal", line);
			return -1;
		}
		if (memcmp(line, data, 3) != 0) {
			snprintf(why, whylen, "code %.3s after %.3s", line, data);
			return -1;
		}
		if (end - line > 3 && line[3] != (last ? ' ' : '-')) {
			snprintf(why, whylen, "'%c' after the code of a %s line", line[3],
			    last ? "last" : "continued");
			return -1;
		}
		if (!last && end - line == 3) {
			snprintf(why, whylen, "continued line without '-'");
			return -1;
		}
		for (p = line; p < end; p++) {
			if (*p < 0x20 || *p > 0x7e) {
				snprintf(why, whylen, "octet 0x%02x in \"%.40s\"",
				    (unsigned char)*p, line);
				return -1;
			}
			if (*p == '%') {
				if (p + 1 >= end || p[1] != '%') {
					snprintf(why, whylen, "a single %% in \"%.60s\"", line);
					return -1;
				}
				p++;
			}
		}
		/* An enhanced status code must be of the reply code's class. */
		x = line + 4;
		if (end - line > 5 && isdigit((unsigned char)x[0]) && x[1] == '.' &&
		    x[0] != line[0]) {
			snprintf(why, whylen, "enhanced code %c.x.x with reply code %.3s",
			    x[0], line);
			return -1;
		}
		if (last)
			break;
	}
	return 0;
}

static int
check_optneg(const char *data, size_t len, char *why, size_t whylen)
{
	size_t off = 12;

	if (len < 12) {
		snprintf(why, whylen, "negotiation reply of %zu octets", len);
		return -1;
	}
	while (off < len) {
		uint32_t stage;
		const char *nul;

		if (len - off < 5) {
			snprintf(why, whylen, "truncated macro list");
			return -1;
		}
		stage = (uint32_t)(unsigned char)data[off] << 24 |
		    (uint32_t)(unsigned char)data[off + 1] << 16 |
		    (uint32_t)(unsigned char)data[off + 2] << 8 | (unsigned char)data[off + 3];
		if (stage >= MP_NSTAGES) {
			snprintf(why, whylen, "macro list for stage %lu", (unsigned long)stage);
			return -1;
		}
		off += 4;
		if ((nul = memchr(data + off, '\0', len - off)) == NULL) {
			snprintf(why, whylen, "macro list without NUL");
			return -1;
		}
		off = (size_t)(nul - data) + 1;
	}
	return 0;
}

int
mp_reply_check(int cmd, const char *data, size_t len, char *why, size_t whylen)
{
	bool ok;

	why[0] = '\0';
	switch (cmd) {
	case SMFIR_CONTINUE:
	case SMFIR_REJECT:
	case SMFIR_TEMPFAIL:
	case SMFIR_ACCEPT:
	case SMFIR_DISCARD:
	case SMFIR_SKIP:
	case SMFIR_PROGRESS:
	case SMFIR_CONN_FAIL:
	case SMFIR_SHUTDOWN:
		ok = len == 0;
		break;
	case SMFIR_REPLYCODE:
		return check_text_reply(data, len, why, whylen);
	case SMFIC_OPTNEG:
		return check_optneg(data, len, why, whylen);
	case SMFIR_ADDHEADER:
		ok = strings(data, len, 2);
		break;
	case SMFIR_INSHEADER:
	case SMFIR_CHGHEADER:
		ok = len > 4 && strings(data + 4, len - 4, 2);
		break;
	case SMFIR_ADDRCPT:
	case SMFIR_DELRCPT:
	case SMFIR_QUARANTINE:
		ok = strings(data, len, 1);
		break;
	case SMFIR_ADDRCPT_PAR:
	case SMFIR_CHGFROM:
		ok = strings(data, len, 1) || strings(data, len, 2);
		break;
	case SMFIR_REPLBODY:
		ok = true;
		break;
	default:
		snprintf(why, whylen, "unknown reply command 0x%02x", (unsigned)cmd & 0xff);
		return -1;
	}
	if (!ok)
		snprintf(why, whylen, "malformed data");
	return ok ? 0 : -1;
}

/* ---- negotiation */

static uint32_t
get32(const char *p)
{
	return (uint32_t)(unsigned char)p[0] << 24 | (uint32_t)(unsigned char)p[1] << 16 |
	    (uint32_t)(unsigned char)p[2] << 8 | (unsigned char)p[3];
}

static void
put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

int
mp_negotiate(struct mproto *mp, uint32_t version, uint32_t actions, uint32_t protocol)
{
	unsigned char buf[12];
	struct mp_reply r;
	int rc;

	put32(buf, version);
	put32(buf + 4, actions);
	put32(buf + 8, protocol);
	if (mp_send(mp, SMFIC_OPTNEG, buf, sizeof(buf)) == -1)
		return MP_ERR;
	if ((rc = mp_read(mp, &r, -1)) <= 0) {
		if (rc == MP_NONE) {
			set_err(mp, "no answer to the negotiation within %d ms", mp->timeout_ms);
			rc = MP_ERR;
		}
		return rc;
	}
	if (rc != SMFIC_OPTNEG) {
		set_err(mp, "'%c' in answer to the negotiation", rc);
		return MP_ERR;
	}
	mp->version = get32(r.data);
	mp->actions = get32(r.data + 4);
	mp->protocol = get32(r.data + 8);
	for (int i = 0; i < MP_NSTAGES; i++) {
		free(mp->symlist[i]);
		mp->symlist[i] = NULL;
	}
	for (size_t off = 12; off < r.len; ) {   /* checked by mp_reply_check */
		uint32_t stage = get32(r.data + off);

		off += 4;
		free(mp->symlist[stage]);
		mp->symlist[stage] = strdup(r.data + off);
		off += strlen(r.data + off) + 1;
	}
	return rc;
}

uint32_t
mp_version(const struct mproto *mp)
{
	return mp->version;
}

uint32_t
mp_actions(const struct mproto *mp)
{
	return mp->actions;
}

uint32_t
mp_protocol(const struct mproto *mp)
{
	return mp->protocol;
}

const char *
mp_symlist(const struct mproto *mp, int stage)
{
	return stage >= 0 && stage < MP_NSTAGES ? mp->symlist[stage] : NULL;
}

static const struct {
	int cmd;
	uint32_t no, noreply;
} stage_flags[] = {
	{ SMFIC_CONNECT, SMFIP_NOCONNECT, SMFIP_NR_CONN },
	{ SMFIC_HELO, SMFIP_NOHELO, SMFIP_NR_HELO },
	{ SMFIC_MAIL, SMFIP_NOMAIL, SMFIP_NR_MAIL },
	{ SMFIC_RCPT, SMFIP_NORCPT, SMFIP_NR_RCPT },
	{ SMFIC_DATA, SMFIP_NODATA, SMFIP_NR_DATA },
	{ SMFIC_HEADER, SMFIP_NOHDRS, SMFIP_NR_HDR },
	{ SMFIC_EOH, SMFIP_NOEOH, SMFIP_NR_EOH },
	{ SMFIC_BODY, SMFIP_NOBODY, SMFIP_NR_BODY },
	{ SMFIC_UNKNOWN, SMFIP_NOUNKNOWN, SMFIP_NR_UNKN },
};

bool
mp_expects_reply(const struct mproto *mp, int cmd)
{
	switch (cmd) {
	case SMFIC_MACRO:
	case SMFIC_ABORT:
	case SMFIC_QUIT:
	case SMFIC_QUIT_NC:
		return false;
	default:
		break;
	}
	for (size_t i = 0; i < sizeof(stage_flags) / sizeof(stage_flags[0]); i++)
		if (stage_flags[i].cmd == cmd)
			return !(mp->protocol & stage_flags[i].noreply);
	return true;     /* OPTNEG, end of message, and what we do not know */
}

bool
mp_wants(const struct mproto *mp, int cmd)
{
	for (size_t i = 0; i < sizeof(stage_flags) / sizeof(stage_flags[0]); i++)
		if (stage_flags[i].cmd == cmd)
			return !(mp->protocol & stage_flags[i].no);
	return true;
}

/* ---- stages */

/* The replies that may end a stage: end of message, the body, the others. */
static bool
final_reply(int stage, int cmd)
{
	if (cmd > 0 && strchr("crtady", cmd) != NULL)
		return true;
	return cmd == SMFIR_SKIP && stage == SMFIC_BODY;
}

/* Modifications and progress: only at end of message, before its reply. */
static bool
eom_interim(int cmd)
{
	return cmd > 0 && strchr("him+-2ebqp", cmd) != NULL;
}

int
mp_stage(struct mproto *mp, int cmd, const void *data, size_t len, struct mp_reply *r)
{
	struct mp_reply dummy;
	int rc;

	if (r == NULL)
		r = &dummy;
	r->cmd = MP_NONE;
	r->len = 0;
	r->data = "";
	r->nmods = 0;
	r->mods[0] = '\0';
	if (mp_send(mp, cmd, data, len) == -1)
		return r->cmd = MP_ERR;
	if (!mp_expects_reply(mp, cmd))
		return MP_NONE;
	for (;;) {
		rc = mp_read(mp, r, -1);
		if (rc == MP_NONE) {
			set_err(mp, "no reply to '%c' within %d ms", cmd, mp->timeout_ms);
			return r->cmd = MP_ERR;
		}
		if (rc < 0)
			return rc;
		if (final_reply(cmd, rc))
			return rc;
		if (cmd != SMFIC_BODYEOB || !eom_interim(rc)) {
			set_err(mp, "reply '%c' to '%c'", isprint(rc) ? rc : '?', cmd);
			return r->cmd = MP_ERR;
		}
		if (r->nmods < sizeof(r->mods) - 1) {
			r->mods[r->nmods] = (char)rc;
			r->mods[r->nmods + 1] = '\0';
		}
		r->nmods++;
	}
}

/* The stage cmd with data "s1\0s2\0..." from n strings (NULLs skipped). */
static int
stage_strings(struct mproto *mp, int cmd, const char *const *v, size_t n,
    struct mp_reply *r)
{
	size_t total = 0, off = 0;
	unsigned char *buf;
	int rc;

	for (size_t i = 0; i < n; i++)
		if (v[i] != NULL)
			total += strlen(v[i]) + 1;
	if ((buf = malloc(total ? total : 1)) == NULL) {
		set_err(mp, "out of memory");
		return MP_ERR;
	}
	for (size_t i = 0; i < n; i++)
		if (v[i] != NULL) {
			size_t l = strlen(v[i]) + 1;

			memcpy(buf + off, v[i], l);
			off += l;
		}
	rc = mp_stage(mp, cmd, buf, total, r);
	free(buf);
	return rc;
}

int
mp_macrov(struct mproto *mp, int stage, const char *const *namevalue, size_t n)
{
	size_t total = 1, off = 1;
	unsigned char *buf;
	int rc;

	for (size_t i = 0; i < n; i++)
		total += strlen(namevalue[i]) + 1;
	if ((buf = malloc(total)) == NULL) {
		set_err(mp, "out of memory");
		return MP_ERR;
	}
	buf[0] = (unsigned char)stage;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(namevalue[i]) + 1;

		memcpy(buf + off, namevalue[i], l);
		off += l;
	}
	rc = mp_send(mp, SMFIC_MACRO, buf, total);
	free(buf);
	return rc == -1 ? MP_ERR : MP_NONE;
}

int
mp_macro(struct mproto *mp, int stage, ...)
{
	const char *v[64];
	size_t n = 0;
	va_list ap;
	const char *s;

	va_start(ap, stage);
	while (n < sizeof(v) / sizeof(v[0]) && (s = va_arg(ap, const char *)) != NULL)
		v[n++] = s;
	va_end(ap);
	if (n % 2 != 0) {
		set_err(mp, "mp_macro: a name without a value");
		return MP_ERR;
	}
	return mp_macrov(mp, stage, v, n);
}

int
mp_connect(struct mproto *mp, const char *hostname, int family, uint16_t port,
    const char *address, struct mp_reply *r)
{
	size_t hl = strlen(hostname) + 1, al = address ? strlen(address) + 1 : 1;
	size_t len = hl + 1 + (family == SMFIA_UNKNOWN ? 0 : 2 + al);
	unsigned char *buf = malloc(len), *p;
	int rc;

	if (buf == NULL) {
		set_err(mp, "out of memory");
		return MP_ERR;
	}
	memcpy(buf, hostname, hl);
	p = buf + hl;
	*p++ = (unsigned char)family;
	if (family != SMFIA_UNKNOWN) {
		*p++ = (unsigned char)(port >> 8);
		*p++ = (unsigned char)port;
		memcpy(p, address ? address : "", al);
	}
	rc = mp_stage(mp, SMFIC_CONNECT, buf, len, r);
	free(buf);
	return rc;
}

int
mp_helo(struct mproto *mp, const char *helo, struct mp_reply *r)
{
	return stage_strings(mp, SMFIC_HELO, &helo, 1, r);
}

static int
envelope(struct mproto *mp, int cmd, const char *addr, const char *const *args,
    struct mp_reply *r)
{
	const char *v[34];
	size_t n = 0;

	v[n++] = addr;
	for (size_t i = 0; args != NULL && args[i] != NULL && n < sizeof(v) / sizeof(v[0]); i++)
		v[n++] = args[i];
	return stage_strings(mp, cmd, v, n, r);
}

int
mp_mail(struct mproto *mp, const char *addr, const char *const *args, struct mp_reply *r)
{
	return envelope(mp, SMFIC_MAIL, addr, args, r);
}

int
mp_rcpt(struct mproto *mp, const char *addr, const char *const *args, struct mp_reply *r)
{
	return envelope(mp, SMFIC_RCPT, addr, args, r);
}

int
mp_header(struct mproto *mp, const char *name, const char *value, struct mp_reply *r)
{
	const char *v[2] = { name, value };

	return stage_strings(mp, SMFIC_HEADER, v, 2, r);
}

int
mp_eoh(struct mproto *mp, struct mp_reply *r)
{
	return mp_stage(mp, SMFIC_EOH, NULL, 0, r);
}

int
mp_body(struct mproto *mp, const void *chunk, size_t len, struct mp_reply *r)
{
	return mp_stage(mp, SMFIC_BODY, chunk, len, r);
}

int
mp_eom(struct mproto *mp, const void *chunk, size_t len, struct mp_reply *r)
{
	return mp_stage(mp, SMFIC_BODYEOB, chunk, len, r);
}

int
mp_data(struct mproto *mp, struct mp_reply *r)
{
	return mp_stage(mp, SMFIC_DATA, NULL, 0, r);
}

int
mp_unknown(struct mproto *mp, const char *command, struct mp_reply *r)
{
	return stage_strings(mp, SMFIC_UNKNOWN, &command, 1, r);
}

int
mp_abort(struct mproto *mp)
{
	return mp_send(mp, SMFIC_ABORT, NULL, 0) == -1 ? MP_ERR : MP_NONE;
}

int
mp_quit(struct mproto *mp)
{
	return mp_send(mp, SMFIC_QUIT, NULL, 0) == -1 ? MP_ERR : MP_NONE;
}

int
mp_quit_nc(struct mproto *mp)
{
	return mp_send(mp, SMFIC_QUIT_NC, NULL, 0) == -1 ? MP_ERR : MP_NONE;
}

const char *
mp_result_name(int result)
{
	static const char *const names[] = {
		[SMFIR_CONTINUE] = "c", [SMFIR_REJECT] = "r", [SMFIR_TEMPFAIL] = "t",
		[SMFIR_ACCEPT] = "a", [SMFIR_DISCARD] = "d", [SMFIR_REPLYCODE] = "y",
		[SMFIR_SKIP] = "s", [SMFIR_PROGRESS] = "p", [SMFIR_ADDHEADER] = "h",
		[SMFIR_CHGHEADER] = "m", [SMFIR_INSHEADER] = "i", [SMFIR_ADDRCPT] = "+",
		[SMFIR_DELRCPT] = "-", [SMFIR_ADDRCPT_PAR] = "2", [SMFIR_CHGFROM] = "e",
		[SMFIR_REPLBODY] = "b", [SMFIR_QUARANTINE] = "q", [SMFIR_CONN_FAIL] = "f",
		[SMFIR_SHUTDOWN] = "4", [SMFIC_OPTNEG] = "O",
	};

	if (result == MP_NONE)
		return "none";
	if (result == MP_ERR)
		return "error";
	if (result == MP_EOF)
		return "EOF";
	if (result > 0 && (size_t)result < sizeof(names) / sizeof(names[0]) &&
	    names[result] != NULL)
		return names[result];
	return "?";
}
