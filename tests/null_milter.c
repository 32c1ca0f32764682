/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * null_milter - a libmilter milter that does nothing: every callback
 * continues.  The baseline of the protocol benchmark (tests/bench_protocol.sh):
 * what libmilter itself costs per message, against which policy-milter's
 * own cost is read.  It negotiates nothing (no "no reply" flags, every stage
 * sent), as a naive milter does, so it is the slow end of the protocol.
 *
 *   null_milter -p SOCKET [-t SECONDS]
 *
 * SOCKET is libmilter's spelling: inet:PORT@ADDRESS or unix:/path.  It runs
 * in the foreground until SIGTERM, SIGINT or SIGHUP and exits 0.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

static sfsistat
cb_connect(SMFICTX *ctx, char *hostname, struct sockaddr *sa)
{
	(void)ctx;
	(void)hostname;
	(void)sa;
	return SMFIS_CONTINUE;
}

static sfsistat
cb_string(SMFICTX *ctx, char *s)
{
	(void)ctx;
	(void)s;
	return SMFIS_CONTINUE;
}

static sfsistat
cb_argv(SMFICTX *ctx, char **argv)
{
	(void)ctx;
	(void)argv;
	return SMFIS_CONTINUE;
}

static sfsistat
cb_header(SMFICTX *ctx, char *name, char *value)
{
	(void)ctx;
	(void)name;
	(void)value;
	return SMFIS_CONTINUE;
}

static sfsistat
cb_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
	(void)ctx;
	(void)chunk;
	(void)len;
	return SMFIS_CONTINUE;
}

static sfsistat
cb_ctx(SMFICTX *ctx)
{
	(void)ctx;
	return SMFIS_CONTINUE;
}

static sfsistat
cb_unknown(SMFICTX *ctx, const char *cmd)
{
	(void)ctx;
	(void)cmd;
	return SMFIS_CONTINUE;
}

static char name[] = "null-milter";

static struct smfiDesc filter = {
	.xxfi_name = name,
	.xxfi_version = SMFI_VERSION,
	.xxfi_flags = 0,               /* modifies nothing */
	.xxfi_connect = cb_connect,
	.xxfi_helo = cb_string,
	.xxfi_envfrom = cb_argv,
	.xxfi_envrcpt = cb_argv,
	.xxfi_header = cb_header,
	.xxfi_eoh = cb_ctx,
	.xxfi_body = cb_body,
	.xxfi_eom = cb_ctx,
	.xxfi_abort = cb_ctx,
	.xxfi_close = cb_ctx,
	.xxfi_unknown = cb_unknown,
	.xxfi_data = cb_ctx,
	.xxfi_negotiate = NULL,        /* libmilter's default: every stage, every reply */
};

static void
usage(void)
{
	fprintf(stderr, "usage: null_milter -p inet:PORT@ADDRESS|unix:/path [-t SECONDS]\n");
	exit(64);
}

int
main(int argc, char **argv)
{
	char *sock = NULL;
	int c, timeout = 0;

	while ((c = getopt(argc, argv, "p:t:")) != -1) {
		switch (c) {
		case 'p':
			sock = optarg;
			break;
		case 't':
			timeout = atoi(optarg);
			break;
		default:
			usage();
		}
	}
	if (sock == NULL || optind != argc)
		usage();
	if (smfi_setconn(sock) != MI_SUCCESS || smfi_register(filter) != MI_SUCCESS) {
		fprintf(stderr, "null_milter: cannot use %s\n", sock);
		return 1;
	}
	if (timeout > 0)
		smfi_settimeout(timeout);
	/* Create the socket now, so that a busy port is an error here. */
	if (smfi_opensocket(1) != MI_SUCCESS) {
		fprintf(stderr, "null_milter: cannot listen on %s\n", sock);
		return 1;
	}
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
