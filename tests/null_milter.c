/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * null_milter - a libmilter milter that does nothing: every callback
 * continues.  The baseline of the benchmarks: what libmilter and the MTA's
 * milter conversation cost per message, against which policy-milter's own
 * cost is read.
 *
 *   null_milter -p SOCKET [-t SECONDS] [-c CONFIG] [-v]
 *   null_milter -c CONFIG -n
 *
 * SOCKET is libmilter's spelling: inet:PORT@ADDRESS or unix:/path.  It runs
 * in the foreground until SIGTERM, SIGINT or SIGHUP and exits 0.
 *
 * Without -c it negotiates nothing (no "no reply" flags, every stage sent),
 * as a naive milter does: the slow end of the protocol
 * (tests/bench_protocol.sh).
 *
 * With -c it loads policy-milter's configuration CONFIG with the daemon's
 * own loader (libpmcore: cfg_load) and negotiates exactly what policy-milter
 * negotiates for it: the same stages left out (SMFIP_NO*), the same stages
 * without reply (SMFIP_NR_*), the same actions and macro lists; every
 * stage it is sent then answers as quietly as that allows.  That is the
 * stage-equivalent baseline of tests/bench_e2e.sh: the difference to
 * policy-milter is policy-milter's own work, not the protocol's.
 * callbacks_want() below is cb_negotiate() of milter/callbacks.c, which is
 * static there: keep the two in step.  -n prints the flags (hex, the
 * SMFIP_* names) for CONFIG and exits; -v prints what each connection
 * negotiated on stderr, once.
 */
#include "config.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

#include "milter/callbacks.h"
#include "milter/cfg.h"
#include "policies/policy.h"

#define UNCONST(s) ((char *)(uintptr_t)(const void *)(s))

static unsigned long cfg_want;         /* the SMFIP_* flags it asks for */
static bool verbose;
static atomic_ulong nr_flags;          /* what the MTA granted (the same for
                                        * every connection of one MTA) */
static atomic_int told;

static void
print_flags(FILE *fp, unsigned long f)
{
	static const struct { unsigned long bit; const char *name; } names[] = {
		{ SMFIP_NOCONNECT, "NOCONNECT" }, { SMFIP_NOHELO, "NOHELO" },
		{ SMFIP_NOMAIL, "NOMAIL" }, { SMFIP_NORCPT, "NORCPT" },
		{ SMFIP_NOBODY, "NOBODY" }, { SMFIP_NOHDRS, "NOHDRS" },
		{ SMFIP_NOEOH, "NOEOH" }, { SMFIP_NR_HDR, "NR_HDR" },
		{ SMFIP_NOUNKNOWN, "NOUNKNOWN" }, { SMFIP_NODATA, "NODATA" },
		{ SMFIP_SKIP, "SKIP" }, { SMFIP_RCPT_REJ, "RCPT_REJ" },
		{ SMFIP_NR_CONN, "NR_CONN" }, { SMFIP_NR_HELO, "NR_HELO" },
		{ SMFIP_NR_MAIL, "NR_MAIL" }, { SMFIP_NR_RCPT, "NR_RCPT" },
		{ SMFIP_NR_DATA, "NR_DATA" }, { SMFIP_NR_UNKN, "NR_UNKN" },
		{ SMFIP_NR_EOH, "NR_EOH" }, { SMFIP_NR_BODY, "NR_BODY" },
		{ SMFIP_HDR_LEADSPC, "HDR_LEADSPC" },
	};

	fprintf(fp, "0x%06lx", f);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (f & names[i].bit)
			fprintf(fp, " %s", names[i].name);
	fputc('\n', fp);
}

/* SMFIS_NOREPLY where the MTA agreed to no reply, else SMFIS_CONTINUE. */
static sfsistat
quiet(unsigned long nr_flag)
{
	return (atomic_load_explicit(&nr_flags, memory_order_relaxed) & nr_flag) ?
	    SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat
cb_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
    unsigned long f2, unsigned long f3, unsigned long *pf0,
    unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
	(void)f2;
	(void)f3;
	*pf1 = cfg_want & f1;
	atomic_store(&nr_flags, *pf1);
	*pf0 = f0 & (SMFIF_QUARANTINE | SMFIF_SETSYMLIST);
	*pf2 = 0;
	*pf3 = 0;
	if (f0 & SMFIF_SETSYMLIST) {
		/* The macros policy-milter asks for (its cb_negotiate). */
		smfi_setsymlist(ctx, SMFIM_ENVFROM, UNCONST("i {auth_authen}"));
		smfi_setsymlist(ctx, SMFIM_ENVRCPT, UNCONST("i"));
		smfi_setsymlist(ctx, SMFIM_EOM, UNCONST("i"));
	}
	if (verbose && atomic_exchange(&told, 1) == 0) {
		fprintf(stderr, "null_milter: MTA offered ");
		print_flags(stderr, f1);
		fprintf(stderr, "null_milter: negotiated ");
		print_flags(stderr, *pf1);
	}
	return SMFIS_CONTINUE;
}

static sfsistat
cb_connect(SMFICTX *ctx, char *hostname, struct sockaddr *sa)
{
	(void)ctx;
	(void)hostname;
	(void)sa;
	return quiet(SMFIP_NR_CONN);
}

static sfsistat
cb_helo(SMFICTX *ctx, char *s)
{
	(void)ctx;
	(void)s;
	return quiet(SMFIP_NR_HELO);
}

static sfsistat
cb_envfrom(SMFICTX *ctx, char **argv)
{
	(void)ctx;
	(void)argv;
	return quiet(SMFIP_NR_MAIL);
}

static sfsistat
cb_envrcpt(SMFICTX *ctx, char **argv)
{
	(void)ctx;
	(void)argv;
	return quiet(SMFIP_NR_RCPT);
}

static sfsistat
cb_header(SMFICTX *ctx, char *name, char *value)
{
	(void)ctx;
	(void)name;
	(void)value;
	return quiet(SMFIP_NR_HDR);
}

static sfsistat
cb_eoh(SMFICTX *ctx)
{
	(void)ctx;
	return quiet(SMFIP_NR_EOH);
}

static sfsistat
cb_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
	(void)ctx;
	(void)chunk;
	(void)len;
	return quiet(SMFIP_NR_BODY);
}

static sfsistat
cb_data(SMFICTX *ctx)
{
	(void)ctx;
	return quiet(SMFIP_NR_DATA);
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
	return quiet(SMFIP_NR_UNKN);
}

static char name[] = "null-milter";

static struct smfiDesc filter = {
	.xxfi_name = name,
	.xxfi_version = SMFI_VERSION,
	.xxfi_flags = 0,               /* modifies nothing */
	.xxfi_connect = cb_connect,
	.xxfi_helo = cb_helo,
	.xxfi_envfrom = cb_envfrom,
	.xxfi_envrcpt = cb_envrcpt,
	.xxfi_header = cb_header,
	.xxfi_eoh = cb_eoh,
	.xxfi_body = cb_body,
	.xxfi_eom = cb_ctx,
	.xxfi_abort = cb_ctx,
	.xxfi_close = cb_ctx,
	.xxfi_unknown = cb_unknown,
	.xxfi_data = cb_data,
	.xxfi_negotiate = NULL,        /* libmilter's default: every stage, every reply */
};

static void
report_cfg(void *arg, bool is_error, const char *msg)
{
	(void)arg;
	fprintf(stderr, "null_milter: %s%s\n", is_error ? "" : "warning: ", msg);
}

static void
usage(void)
{
	fprintf(stderr, "usage: null_milter -p inet:PORT@ADDRESS|unix:/path "
	    "[-t SECONDS] [-c CONFIG] [-v]\n"
	    "       null_milter -c CONFIG -n\n");
	exit(64);
}

int
main(int argc, char **argv)
{
	char *sock = NULL;
	const char *config = NULL;
	bool print_only = false;
	int c, timeout = 0;

	while ((c = getopt(argc, argv, "c:np:t:v")) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 'n':
			print_only = true;
			break;
		case 'p':
			sock = optarg;
			break;
		case 't':
			timeout = atoi(optarg);
			break;
		case 'v':
			verbose = true;
			break;
		default:
			usage();
		}
	}
	if (optind != argc || (print_only ? config == NULL : sock == NULL))
		usage();
	if (config != NULL) {
		struct cfg *cf = cfg_load(config, NULL, report_cfg, NULL);

		if (cf == NULL) {
			fprintf(stderr, "null_milter: %s: configuration has errors\n", config);
			return 78;
		}
		cfg_want = callbacks_want(cf);
		cfg_unref(cf);
		if (print_only) {
			print_flags(stdout, cfg_want);
			return 0;
		}
		/* As policy-milter: actions it may ask for, and its negotiation. */
		filter.xxfi_flags = SMFIF_QUARANTINE | SMFIF_SETSYMLIST;
		filter.xxfi_negotiate = cb_negotiate;
		filter.xxfi_unknown = NULL;
		filter.xxfi_data = NULL;
	}
	if (smfi_setconn(sock) != MI_SUCCESS || smfi_register(filter) != MI_SUCCESS) {
		fprintf(stderr, "null_milter: cannot use %s\n", sock);
		return 1;
	}
	if (timeout > 0)
		smfi_settimeout(timeout);
	/* Create the socket now, so that a busy port is an error here; remove
	 * a unix socket left by an earlier run. */
	if (smfi_opensocket(1) != MI_SUCCESS) {
		fprintf(stderr, "null_milter: cannot listen on %s\n", sock);
		return 1;
	}
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
