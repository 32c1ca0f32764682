/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_milter - a milter packet stream through milter/callbacks.c, the
 * engine and every policy type, with Redis unreachable.
 *
 * Input: one octet choosing the configuration (configs[], octet % 2), then
 * the octets an MTA sends on one milter connection: packets of a 4-octet
 * big-endian length (command octet + data), the command octet and the data
 * (tests/mproto.h).  They are dispatched as libmilter 8.17 does, so that the
 * callbacks see only sequences libmilter lets through:
 *   - its state table (mi_engine): a command that is not allowed in the
 *     current state aborts the message in progress and is taken as if after
 *     HELO, or ignored if not allowed there either; after an accept or a
 *     refusal (except at RCPT) the state goes back to HELO;
 *   - its argument checks: data that libmilter would refuse ends the
 *     connection (abort, then close), as do an unknown command and the end
 *     of the input; a HELO or macro packet it cannot split is skipped;
 *   - 'E' with data calls the body callback first, and the end-of-message
 *     callback only if that one returned SMFIS_CONTINUE;
 *   - 'Q' closes and ends, 'K' closes and a new session follows.
 * The smfi_* functions callbacks.c calls are milter_shim.c's.
 *
 * What is checked besides the sanitizers: the flags negotiated are among
 * those offered; a stage answers SMFIS_NOREPLY only if it negotiated "no
 * reply" (else the MTA would wait for ever); a reply is set only right
 * before the refusal that sends it (libmilter keeps a reply set and not
 * used, and sends it with a later refusal); every reply set is one
 * libmilter and the MTAs take (milter_shim.c); quarantine only at end of
 * message; close leaves no private data behind.
 *
 * callbacks.c keeps the flags of the latest negotiation in a static (for
 * QUIT_NC, see there): an input without 'O' inherits the flags of the input
 * before, as a connection of the daemon would; the checks on "no reply"
 * apply only to inputs that negotiate.
 *
 * Redis: the configurations point at a unix socket that does not exist, so
 * every Redis call fails at once (connect: no such file) and then the
 * store's circuit breaker answers without trying; the policies that need
 * Redis follow on_redis_error, as when Redis is down.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "milter/callbacks.h"
#include "milter/cfg.h"
#include "tests/fuzz/fuzzlib.h"
#include "tests/fuzz/milter_shim.h"

#define REDIS "unix:/nonexistent/policy-milter-fuzz/redis.sock"

static const char list_file[] =
	"# a list file\n"
	"listed@example.org\n"
	".listed.example\n"
	"/^admin[0-9]*@/i\n";

/* Every policy type, every action, every block match, exemptions, dry runs,
 * a multi-line reply and one with every variable.  @LIST@ is the list file. */
static const char *const config_texts[] = {
	"listen = \"inet:8890@127.0.0.1\";\n"
	"redis = { address = \"" REDIS "\"; connect_timeout = \"5ms\"; timeout = \"5ms\";\n"
	"  pool = 2; };\n"
	"on_redis_error = \"accept\";\n"
	"exempt = { clients = [ \"192.0.2.1\", \"2001:db8::1\" ]; authenticated = true; };\n"
	"policies = (\n"
	" { name = \"max-size\"; type = \"size\"; max = \"10K\"; action = \"reject\";\n"
	"   reply = \"552 5.3.4 Too big: ${size} > ${limit} from ${sender} to ${rcpt}\"; },\n"
	" { name = \"max-rcpts\"; type = \"recipients\"; max = 3; action = \"tempfail\";\n"
	"   reply = \"452 4.5.3 Too many recipients (${limit}) for ${client_ip}\"; },\n"
	" { name = \"senders\"; type = \"block\"; match = \"sender\";\n"
	"   entries = [ \"spam@example.com\", \"@bad.example\", \".worse.example\", \"<>\",\n"
	"     \"\\\"john doe\\\"@example.com\", \"/^x+@/i\" ]; file = \"@LIST@\";\n"
	"   action = \"reject\";\n"
	"   reply = [ \"550 5.7.1 Sender ${sender} is not accepted here\",\n"
	"     \"policy ${policy}, 100% sure, $$5\" ]; },\n"
	" { name = \"clients\"; type = \"block\"; match = \"client\";\n"
	"   entries = [ \"198.51.100.0/24\", \"2001:db8:bad::/48\", \"203.0.113.7\" ];\n"
	"   action = \"reject\"; reply = \"554 5.7.1 ${client_ip} is blocked\"; },\n"
	" { name = \"helos\"; type = \"block\"; match = \"helo\";\n"
	"   entries = [ \".dyn.example\", \"localhost\" ]; action = \"tempfail\";\n"
	"   reply = \"421 4.7.0 Go away, ${client_ip}\"; },\n"
	" { name = \"discards\"; type = \"block\"; match = \"rcpt_domain\";\n"
	"   entries = [ \"discard.example\" ]; action = \"discard\"; },\n"
	" { name = \"holds\"; type = \"block\"; match = \"rcpt\";\n"
	"   entries = [ \"hold@example.com\" ]; action = \"quarantine\"; },\n"
	" { name = \"trusted\"; type = \"block\"; match = \"sasl_user\";\n"
	"   entries = [ \"trusted\", \".example.com\" ]; action = \"accept\"; },\n"
	" { name = \"sender-domains\"; type = \"block\"; match = \"sender_domain\";\n"
	"   entries = [ \"blocked.example\" ]; redis = true; action = \"reject\";\n"
	"   reply = \"550 5.7.1 ${sender} no\"; },\n"
	" { name = \"per-sender\"; type = \"ratelimit\"; key = [ \"sender\", \"client_net\" ];\n"
	"   count = \"recipients\"; limit = 10; window = \"1m\"; action = \"tempfail\";\n"
	"   reply = \"451 4.7.1 ${key}: ${limit} per ${window}; retry in ${retry_after}\"; },\n"
	" { name = \"per-client-bytes\"; type = \"ratelimit\"; key = [ \"client_ip\" ];\n"
	"   count = \"bytes\"; limit = 100000; window = \"1h\"; action = \"reject\";\n"
	"   reply = \"550 5.7.1 Too much\"; }\n"
	");\n",

	"listen = \"unix:/nonexistent/policy-milter-fuzz/milter.sock\";\n"
	"redis = { address = \"" REDIS "\"; connect_timeout = \"5ms\"; timeout = \"5ms\";\n"
	"  pool = 1; prefix = \"fz:\"; };\n"
	"on_redis_error = \"tempfail\";\n"
	"policies = (\n"
	" { name = \"relays\"; type = \"block\"; match = \"client\";\n"
	"   entries = [ \"192.0.2.0/24\", \"::ffff:198.51.100.0/120\" ]; action = \"accept\"; },\n"
	" { name = \"helo-accept\"; type = \"block\"; match = \"helo\";\n"
	"   entries = [ \"relay.example\" ]; action = \"accept\"; },\n"
	" { name = \"helo-hold\"; type = \"block\"; match = \"helo\";\n"
	"   entries = [ \".hold.example\" ]; action = \"quarantine\"; },\n"
	" { name = \"helo-discard\"; type = \"block\"; match = \"helo\";\n"
	"   entries = [ \".discard.example\" ]; action = \"discard\"; },\n"
	" { name = \"dry-size\"; type = \"size\"; max = 100; action = \"reject\"; dry_run = true; },\n"
	" { name = \"size\"; type = \"size\"; max = \"1K\"; action = \"tempfail\";\n"
	"   reply = \"452 4.3.4 ${size} > ${limit}\"; },\n"
	" { name = \"rcpts\"; type = \"recipients\"; max = 1; action = \"reject\"; dry_run = true; },\n"
	" { name = \"rcpt-block\"; type = \"block\"; match = \"rcpt\"; file = \"@LIST@\";\n"
	"   redis = true; action = \"reject\"; },\n"
	" { name = \"users\"; type = \"block\"; match = \"sasl_user\"; entries = [ \"bad\" ];\n"
	"   action = \"tempfail\"; on_redis_error = \"accept\"; },\n"
	" { name = \"per-user\"; type = \"ratelimit\"; key = [ \"sasl_user\", \"rcpt_domain\" ];\n"
	"   count = \"messages\"; limit = 2; window = \"10s\"; action = \"reject\";\n"
	"   strip_extension = true; },\n"
	" { name = \"per-helo\"; type = \"ratelimit\"; key = [ \"helo\", \"sender_domain\", \"rcpt\" ];\n"
	"   count = \"recipients\"; limit = 5; window = \"1h\"; action = \"tempfail\";\n"
	"   dry_run = true; client_net_v4 = 16; client_net_v6 = 48; }\n"
	");\n",
};
#define NCONFIGS (sizeof(config_texts) / sizeof(config_texts[0]))

static struct cfg *configs[NCONFIGS];
static bool trace;             /* FUZZ_TRACE set: each packet and its answer */

/* A new in-memory file holding text; its /proc path (static buffer). */
static const char *
memfile(const char *text)
{
	static char path[64];
	int fd = memfd_create("fuzz-config", 0);

	if (fd == -1 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		fz_fail("memfd: %m");
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return path;
}

static void
report(void *arg, bool is_error, const char *msg)
{
	(void)arg;
	if (is_error)
		fz_fail("configuration: %s", msg);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char list_path[64];

	(void)argc;
	(void)argv;
	trace = getenv("FUZZ_TRACE") != NULL;
	snprintf(list_path, sizeof(list_path), "%s", memfile(list_file));
	for (size_t i = 0; i < NCONFIGS; i++) {
		const char *t = config_texts[i], *at = strstr(t, "@LIST@");
		size_t len = strlen(t) + strlen(list_path);
		char *text = malloc(len + 1);

		if (text == NULL)
			fz_fail("out of memory");
		text[0] = '\0';
		while (at != NULL) {
			strncat(text, t, (size_t)(at - t));
			strcat(text, list_path);
			t = at + strlen("@LIST@");
			at = strstr(t, "@LIST@");
		}
		strcat(text, t);
		configs[i] = cfg_load(memfile(text), NULL, report, NULL);
		free(text);
		FZ_CHECK(configs[i] != NULL, "configuration %zu did not load", i);
	}
	if (callbacks_register() != 0 || !fz_registered)
		fz_fail("callbacks_register failed");
	return 0;
}

/* ---- libmilter's state table (engine.c, version 8.14 and later) */

enum {
	ST_INIT, ST_OPTS, ST_CONN, ST_HELO, ST_MAIL, ST_RCPT, ST_DATA, ST_HDRS,
	ST_EOHS, ST_BODY, ST_ENDM, ST_QUIT, ST_ABRT, ST_UNKN, ST_Q_NC, ST_NONE = -1
};
#define M(s) (1u << (s))
static const unsigned next_states[] = {
	[ST_INIT] = M(ST_OPTS),
	[ST_OPTS] = M(ST_CONN) | M(ST_UNKN),
	[ST_CONN] = M(ST_HELO) | M(ST_MAIL) | M(ST_UNKN),
	[ST_HELO] = M(ST_HELO) | M(ST_MAIL) | M(ST_UNKN),
	[ST_MAIL] = M(ST_RCPT) | M(ST_ABRT) | M(ST_UNKN),
	[ST_RCPT] = M(ST_HDRS) | M(ST_EOHS) | M(ST_DATA) | M(ST_BODY) | M(ST_ENDM) |
	    M(ST_RCPT) | M(ST_ABRT) | M(ST_UNKN),
	[ST_DATA] = M(ST_EOHS) | M(ST_HDRS) | M(ST_ABRT),
	[ST_HDRS] = M(ST_EOHS) | M(ST_HDRS) | M(ST_ABRT),
	[ST_EOHS] = M(ST_BODY) | M(ST_ENDM) | M(ST_ABRT),
	[ST_BODY] = M(ST_ENDM) | M(ST_BODY) | M(ST_ABRT),
	[ST_ENDM] = M(ST_QUIT) | M(ST_MAIL) | M(ST_UNKN) | M(ST_Q_NC),
	[ST_QUIT] = 0,
	[ST_ABRT] = 0,
	[ST_UNKN] = M(ST_HELO) | M(ST_MAIL) | M(ST_RCPT) | M(ST_ABRT) | M(ST_DATA) |
	    M(ST_BODY) | M(ST_UNKN) | M(ST_QUIT) | M(ST_Q_NC),
	[ST_Q_NC] = M(ST_CONN) | M(ST_UNKN),
};

#define IN_MAIL(st) ((st) >= ST_MAIL && (st) < ST_ENDM)

struct command {
	char cmd;
	int state;                 /* the state it leads to */
	bool needs_data;           /* libmilter's CM_BUF: no data ends the connection */
	bool ignore_refusal;       /* CT_IGNO: a refusal keeps the state */
	int macros;                /* its macro stage, or -1 */
	unsigned long nr;          /* its "no reply" flag, or 0 */
};

static const struct command commands[] = {
	{ SMFIC_ABORT, ST_ABRT, false, false, -1, 0 },
	{ SMFIC_MACRO, ST_NONE, true, false, -1, 0 },
	{ SMFIC_BODY, ST_BODY, true, false, -1, SMFIP_NR_BODY },
	{ SMFIC_CONNECT, ST_CONN, true, false, SMFIM_CONNECT, SMFIP_NR_CONN },
	{ SMFIC_BODYEOB, ST_ENDM, false, false, SMFIM_EOM, 0 },
	{ SMFIC_HELO, ST_HELO, true, false, SMFIM_HELO, SMFIP_NR_HELO },
	{ SMFIC_HEADER, ST_HDRS, true, false, -1, SMFIP_NR_HDR },
	{ SMFIC_MAIL, ST_MAIL, true, false, SMFIM_ENVFROM, SMFIP_NR_MAIL },
	{ SMFIC_OPTNEG, ST_OPTS, true, false, -1, 0 },
	{ SMFIC_EOH, ST_EOHS, false, false, SMFIM_EOH, SMFIP_NR_EOH },
	{ SMFIC_QUIT, ST_QUIT, false, false, -1, 0 },
	{ SMFIC_DATA, ST_DATA, false, false, SMFIM_DATA, SMFIP_NR_DATA },
	{ SMFIC_RCPT, ST_RCPT, true, true, SMFIM_ENVRCPT, SMFIP_NR_RCPT },
	{ SMFIC_UNKNOWN, ST_UNKN, true, true, -1, SMFIP_NR_UNKN },
	{ SMFIC_QUIT_NC, ST_Q_NC, false, false, -1, 0 },
};

/* What a packet's handler tells the loop besides an SMFIS_* code. */
#define R_ABORT (-100)          /* libmilter's _SMFIS_ABORT: end the connection */
#define R_SKIP (-101)           /* no callback, no reply; go on */

struct conn {
	SMFICTX ctx;
	bool negotiated;
	unsigned long pflags;      /* protocol flags the milter chose */
};

/* Split data into NUL-terminated strings as libmilter's dec_argv does:
 * NULL if there is none.  The array is the caller's. */
static char **
split(char *data, size_t len)
{
	size_t n = 0, k = 0;
	char **argv;

	for (size_t i = 0; i < len; i++)
		n += data[i] == '\0';
	if (n == 0)
		return NULL;
	if ((argv = calloc(n + 1, sizeof(*argv))) == NULL)
		fz_fail("out of memory");
	for (size_t i = 0; i < len && k < n; i++)
		if (i == 0 || data[i - 1] == '\0')
			argv[k++] = data + i;
	return argv;
}

static uint32_t
get32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;

	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static int
do_negotiate(struct conn *c, char *data, size_t len)
{
	unsigned long f0, f1, a = 0, p = 0, x2 = 0, x3 = 0;
	sfsistat r;

	if (len < 12 || get32(data) < 2)
		return R_ABORT;
	f0 = get32(data + 4) ? get32(data + 4) : SMFI_V1_ACTS;
	f1 = get32(data + 8) ? get32(data + 8) : SMFI_V1_PROT;
	f1 &= ~0xf0000000UL;        /* SMFI_INTERNAL: libmilter's own bits */
	r = fz_filter.xxfi_negotiate(&c->ctx, f0, f1, 0, 0, &a, &p, &x2, &x3);
	if (r == SMFIS_ALL_OPTS)
		return SMFIS_CONTINUE;
	if (r != SMFIS_CONTINUE)
		return R_ABORT;
	FZ_CHECK((a & ~f0) == 0, "negotiated actions %#lx, offered %#lx", a, f0);
	FZ_CHECK((p & ~f1) == 0, "negotiated protocol %#lx, offered %#lx", p, f1);
	c->ctx.actions = a;
	c->pflags = p;
	c->negotiated = true;
	return SMFIS_CONTINUE;
}

static int
do_connect(struct conn *c, char *data, size_t len)
{
	union {
		struct sockaddr sa;
		struct sockaddr_in sin;
		struct sockaddr_in6 sin6;
		struct sockaddr_un sun;
	} sa;
	size_t i = strnlen(data, len);
	char family;
	uint16_t port;
	const char *addr;

	/* hostname NUL family [port address NUL] */
	if (i + 1 >= len)
		return R_ABORT;
	family = data[i + 1];
	if (family == SMFIA_UNKNOWN)
		return fz_filter.xxfi_connect(&c->ctx, data, NULL);
	if (i + 4 >= len || data[len - 1] != '\0')
		return R_ABORT;
	memcpy(&port, data + i + 2, 2);
	addr = data + i + 4;
	memset(&sa, 0, sizeof(sa));
	switch (family) {
	case SMFIA_INET:
		if (inet_pton(AF_INET, addr, &sa.sin.sin_addr) != 1)
			return R_ABORT;
		sa.sin.sin_family = AF_INET;
		sa.sin.sin_port = port;
		break;
	case SMFIA_INET6:
		if (inet_pton(AF_INET6, addr, &sa.sin6.sin6_addr) != 1)
			return R_ABORT;
		sa.sin6.sin6_family = AF_INET6;
		sa.sin6.sin6_port = port;
		break;
	case SMFIA_UNIX:
		if (strlen(addr) >= sizeof(sa.sun.sun_path))
			return R_ABORT;
		strcpy(sa.sun.sun_path, addr);
		sa.sun.sun_family = AF_UNIX;
		break;
	default:
		return R_ABORT;
	}
	return fz_filter.xxfi_connect(&c->ctx, data, &sa.sa);
}

static int
do_macros(struct conn *c, char *data, size_t len)
{
	static const char stages[] = {
		[SMFIM_CONNECT] = SMFIC_CONNECT, [SMFIM_HELO] = SMFIC_HELO,
		[SMFIM_ENVFROM] = SMFIC_MAIL, [SMFIM_ENVRCPT] = SMFIC_RCPT,
		[SMFIM_DATA] = SMFIC_DATA, [SMFIM_EOM] = SMFIC_BODYEOB,
		[SMFIM_EOH] = SMFIC_EOH,
	};
	const char *s = len > 0 ? memchr(stages, data[0], sizeof(stages)) : NULL;

	if (s == NULL || memchr(data + 1, '\0', len - 1) == NULL)
		return R_SKIP;
	fz_set_macros(&c->ctx, (int)(s - stages), fz_strndup(data + 1, len - 1), len - 1);
	return R_SKIP;
}

static int
do_argv(sfsistat (*cb)(SMFICTX *, char **), struct conn *c, char *data, size_t len)
{
	char **argv = split(data, len);
	int r;

	if (argv == NULL)
		return R_ABORT;
	r = cb(&c->ctx, argv);
	free(argv);
	return r;
}

static int
do_header(struct conn *c, char *data, size_t len)
{
	size_t i = strnlen(data, len);

	if (len == 0 || data[len - 1] != '\0' || i == 0 || i >= len - 1)
		return R_ABORT;
	return fz_filter.xxfi_header(&c->ctx, data, data + i + 1);
}

static void check_answer(const struct conn *c, const struct command *k, int r);

static int
do_eom(struct conn *c, char *data, size_t len)
{
	int r;

	if (len > 0) {
		/* No MTA sends data with 'E'.  libmilter answers the body
		 * callback then, and calls xxfi_eom only if it said
		 * SMFIS_CONTINUE: with SMFIP_NR_BODY the MTA gets no answer
		 * to 'E' (README: the one known limitation). */
		r = fz_filter.xxfi_body(&c->ctx, (unsigned char *)data, len);
		check_answer(c, &commands[2], r);
		if (r != SMFIS_CONTINUE)
			return R_SKIP;
	}
	c->ctx.at_eom = true;
	r = fz_filter.xxfi_eom(&c->ctx);
	c->ctx.at_eom = false;
	return r;
}

/* Run one packet's handler; an SMFIS_* code, R_ABORT or R_SKIP. */
static int
dispatch(struct conn *c, const struct command *k, char *data, size_t len)
{
	switch (k->cmd) {
	case SMFIC_OPTNEG:
		return do_negotiate(c, data, len);
	case SMFIC_MACRO:
		return do_macros(c, data, len);
	case SMFIC_CONNECT:
		return do_connect(c, data, len);
	case SMFIC_HELO:
		if (len == 0 || data[len - 1] != '\0')
			return R_SKIP;          /* st_helo: MI_FAILURE, no reply */
		return fz_filter.xxfi_helo(&c->ctx, data);
	case SMFIC_MAIL:
		return do_argv(fz_filter.xxfi_envfrom, c, data, len);
	case SMFIC_RCPT:
		return do_argv(fz_filter.xxfi_envrcpt, c, data, len);
	case SMFIC_HEADER:
		return do_header(c, data, len);
	case SMFIC_EOH:
		return fz_filter.xxfi_eoh(&c->ctx);
	case SMFIC_BODY:
		return fz_filter.xxfi_body(&c->ctx, (unsigned char *)data, len);
	case SMFIC_BODYEOB:
		return do_eom(c, data, len);
	case SMFIC_ABORT:
		fz_filter.xxfi_abort(&c->ctx);
		return R_SKIP;
	case SMFIC_QUIT:
	case SMFIC_QUIT_NC:
		fz_filter.xxfi_close(&c->ctx);
		FZ_CHECK(c->ctx.priv == NULL, "close left private data");
		fz_clear_macros(&c->ctx, 0);
		return R_SKIP;
	case SMFIC_DATA:
	case SMFIC_UNKNOWN:
		return SMFIS_CONTINUE;      /* xxfi_data and xxfi_unknown are NULL */
	}
	return R_ABORT;
}

/* What libmilter does with the handler's answer r to command k. */
static void
check_answer(const struct conn *c, const struct command *k, int r)
{
	if (r == SMFIS_NOREPLY && c->negotiated)
		FZ_CHECK(k->nr != 0 && (c->pflags & k->nr), "'%c' answered SMFIS_NOREPLY "
		    "without negotiating it (flags %#lx): the MTA would wait", k->cmd,
		    c->pflags);
	if (c->negotiated && k->nr != 0 && (c->pflags & k->nr))
		FZ_CHECK(r == SMFIS_NOREPLY || r == R_SKIP, "'%c' answered %d after "
		    "negotiating no reply: libmilter drops the answer", k->cmd, r);
	if (r != SMFIS_REJECT && r != SMFIS_TEMPFAIL)
		FZ_CHECK(c->ctx.reply == NULL, "'%c': a reply was set and not used "
		    "(answer %d): a later refusal would send it", k->cmd, r);
	else if (c->ctx.reply != NULL)
		FZ_CHECK(c->ctx.reply[0] == (r == SMFIS_REJECT ? '5' : '4'),
		    "'%c': reply \"%.40s\" with answer %d", k->cmd, c->ctx.reply, r);
	FZ_CHECK(r == R_SKIP || (r >= SMFIS_CONTINUE && r <= SMFIS_TEMPFAIL) ||
	    r == SMFIS_NOREPLY, "'%c': answer %d", k->cmd, r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conn c;
	int state = ST_INIT;
	bool ended = false;
	size_t off = 1;

	if (size < 1)
		return 0;
	cfg_ref(configs[data[0] % NCONFIGS]);
	cfg_install(configs[data[0] % NCONFIGS]);
	memset(&c, 0, sizeof(c));

	while (!ended) {
		const struct command *k = NULL;
		uint32_t plen;
		char *pkt;
		int r;

		if (size - off < 5 || (plen = get32((const char *)data + off)) == 0 ||
		    plen > size - off - 4)
			break;              /* end of input or a bad length: EOF */
		for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
			if (commands[i].cmd == (char)data[off + 4])
				k = &commands[i];
		if (k == NULL)
			break;              /* unknown command: libmilter gives up */
		/* Exactly the data, not NUL-terminated: overreads are caught. */
		pkt = plen > 1 ? fz_strndup(data + off + 5, plen - 1) : NULL;
		off += 4 + plen;
		if (k->needs_data && pkt == NULL)
			break;
		if (k->state != ST_NONE &&
		    !(next_states[state] & M(k->state))) {
			if (IN_MAIL(state))
				fz_filter.xxfi_abort(&c.ctx);
			state = ST_HELO;
			if (!(next_states[state] & M(k->state))) {
				free(pkt);
				continue;
			}
		}
		if (k->state != ST_NONE)
			state = k->state;
		if (k->macros >= 0)
			fz_clear_macros(&c.ctx, k->macros + 1);
		r = dispatch(&c, k, pkt, plen - 1);
		free(pkt);
		if (trace)
			fprintf(stderr, "fuzz_milter: '%c' %u octets, state %d: %s\n", k->cmd,
			    plen - 1, state, r == R_ABORT ? "abort" : r == R_SKIP ? "-" :
			    (const char *[]){ "continue", "reject", "discard", "accept",
			    "tempfail", "?", "?", "noreply", "skip" }[r >= 0 && r <= 8 ? r : 5]);
		if (r == R_ABORT)
			break;
		check_answer(&c, k, r);
		fz_take_reply(&c.ctx, r);
		if (k->cmd == SMFIC_QUIT)
			ended = true;
		else if (r == SMFIS_ACCEPT)
			state = ST_HELO;
		else if ((r == SMFIS_REJECT || r == SMFIS_DISCARD || r == SMFIS_TEMPFAIL) &&
		    !k->ignore_refusal)
			state = ST_HELO;
	}
	if (!ended) {
		/* libmilter's end of a connection that did not QUIT. */
		if (IN_MAIL(state))
			fz_filter.xxfi_abort(&c.ctx);
		fz_filter.xxfi_close(&c.ctx);
		FZ_CHECK(c.ctx.priv == NULL, "close left private data");
	}
	fz_ctx_free(&c.ctx);
	return 0;
}
