/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * metrics_http - the Prometheus endpoint: GET /metrics over HTTP, served
 * by libmicrohttpd on a thread of its own (the daemon only; the core and
 * its other programs do not link libmicrohttpd).
 *
 * Two steps, because the daemon forks (daemon()) after binding its sockets
 * and threads do not survive a fork: metrics_http_bind() opens the
 * listening socket before (so that a port in use stops the start with a
 * clear message on the terminal), metrics_http_start() starts the server
 * thread after.  The server answers GET (and HEAD) /metrics with
 * metrics_render() as text/plain; version=0.0.4, other paths with 404 and
 * other methods with 405.  It serves a few connections at once, each with
 * a short timeout: it is for a scraper, not for the world.
 *
 * Failure: bind and start return NULL / -1 with the reason in err.
 * Ownership: metrics_http_stop() stops the thread, closes the socket and
 * frees everything; it accepts NULL.  Threads: call these from one thread.
 */
#ifndef PM_METRICS_HTTP_H
#define PM_METRICS_HTTP_H

#include <stddef.h>

struct metrics_http;

/* Bind and listen on spec ("inet:PORT@ADDRESS", as the configuration
 * checked it); NULL with err filled. */
struct metrics_http *metrics_http_bind(const char *spec, char *err, size_t errlen);

/* Start serving on the thread of libmicrohttpd.  0, or -1 with err. */
int metrics_http_start(struct metrics_http *h, char *err, size_t errlen);

/* Stop serving, close the socket, free h.  Accepts NULL. */
void metrics_http_stop(struct metrics_http *h);

#endif
