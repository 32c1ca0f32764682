/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * metrics_http - the Prometheus endpoint on libmicrohttpd (see
 * metrics_http.h).
 *
 * We bind the socket ourselves (socket, bind, listen) and hand it to
 * libmicrohttpd with MHD_OPTION_LISTEN_SOCKET: the bind happens before
 * daemon() forks, the server thread after.  libmicrohttpd does all of
 * HTTP; the handler only picks the answer.  A scrape renders the metrics
 * into a fresh buffer that libmicrohttpd frees once sent; the SMTP path
 * never waits for it (metrics.h: recording is lock-free).
 *
 * The thread inherits main's signal mask (SIGTERM, SIGHUP, SIGINT and
 * SIGUSR1 blocked): signals stay with the threads meant for them.
 */
#include "config.h"

#include <sys/socket.h>
#include <netinet/in.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

#include "milter/cfg.h"
#include "milter/log.h"
#include "milter/metrics.h"
#include "milter/metrics_http.h"
#include "milter/store_redis.h"

#define HTTP_MAX_CONNECTIONS	8
#define HTTP_TIMEOUT_S		10

struct metrics_http {
	int fd;                    /* ours until MHD_start_daemon takes it */
	struct MHD_Daemon *mhd;
	char spec[128];
};

struct metrics_http *
metrics_http_bind(const char *spec, char *err, size_t errlen)
{
	struct sockaddr_storage sa;
	socklen_t salen;
	bool loopback;
	struct metrics_http *h;
	char why[256];
	int one = 1;

	if (metrics_parse_address(spec, &sa, &salen, &loopback, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "metrics \"%s\": %s", spec, why);
		return NULL;
	}
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(h->spec, sizeof(h->spec), "%s", spec);
	h->fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (h->fd < 0) {
		snprintf(err, errlen, "metrics \"%s\": socket: %s", spec, strerror(errno));
		free(h);
		return NULL;
	}
	/* A restart must not wait for the last scrape's TIME_WAIT. */
	setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (sa.ss_family == AF_INET6)
		setsockopt(h->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(h->fd, (struct sockaddr *)&sa, salen) != 0 || listen(h->fd, 16) != 0) {
		snprintf(err, errlen, "cannot listen for metrics on %s: %s", spec,
		    strerror(errno));
		close(h->fd);
		free(h);
		return NULL;
	}
	return h;
}

static void
mhd_log(void *arg, const char *fmt, va_list ap)
{
	char msg[512];

	(void)arg;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	log_msg(LOG_WARNING, "metrics endpoint: %s", msg);
}

static enum MHD_Result
reply(struct MHD_Connection *conn, unsigned status, const char *type,
    char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
	enum MHD_Result rc;

	if (r == NULL) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	rc = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return rc;
}

static bool
breaker_open(void)
{
	struct cfg *c = cfg_acquire();
	bool open = c != NULL && c->redis != NULL && store_is_down(c->redis->store);

	cfg_unref(c);
	return open;
}

static enum MHD_Result
handle(void *arg, struct MHD_Connection *conn, const char *url, const char *method,
    const char *version, const char *upload_data, size_t *upload_data_size,
    void **con_cls)
{
	static char not_found[] = "Not found: the metrics are at /metrics\n";
	static char not_allowed[] = "Only GET and HEAD\n";
	static const char text[] = "text/plain; charset=utf-8";
	char *body;
	size_t len;

	(void)arg;
	(void)version;
	(void)upload_data;
	(void)con_cls;
	/* A request body (never wanted) is read and dropped. */
	*upload_data_size = 0;
	if (strcmp(url, "/metrics") != 0)
		return reply(conn, MHD_HTTP_NOT_FOUND, text, not_found,
		    sizeof(not_found) - 1, MHD_RESPMEM_PERSISTENT);
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
	    strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, text, not_allowed,
		    sizeof(not_allowed) - 1, MHD_RESPMEM_PERSISTENT);
	if ((body = metrics_render(breaker_open(), &len)) == NULL)
		return MHD_NO;     /* out of memory: libmicrohttpd closes the connection */
	return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
	    body, len, MHD_RESPMEM_MUST_FREE);
}

int
metrics_http_start(struct metrics_http *h, char *err, size_t errlen)
{
	/* AUTO: epoll or poll, not select, whose FD_SETSIZE a busy daemon's
	 * descriptors (milter connections, the Redis pool) may pass. */
	h->mhd = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG,
	    0, NULL, NULL, handle, NULL,
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	    MHD_OPTION_LISTEN_SOCKET, (MHD_socket)h->fd,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNECTIONS,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_TIMEOUT_S,
	    MHD_OPTION_END);
	if (h->mhd == NULL) {
		snprintf(err, errlen, "cannot start the metrics endpoint on %s", h->spec);
		return -1;
	}
	h->fd = -1;                /* libmicrohttpd's now: MHD_stop_daemon closes it */
	return 0;
}

void
metrics_http_stop(struct metrics_http *h)
{
	if (h == NULL)
		return;
	if (h->mhd != NULL)
		MHD_stop_daemon(h->mhd);
	if (h->fd >= 0)
		close(h->fd);
	free(h);
}
