/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * cfg - load configuration snapshots and share them (see cfg.h).
 *
 * cfg_load reads the file, parses the top level and the redis group here
 * and the policies in cfg_policy.c (through the field parser of
 * cfg_parse.c), then, only when no error was counted, commits: statistics
 * entries, and the Redis store, shared with the snapshot in force when the
 * connection settings did not change.  Snapshots are reference counted; the
 * current one is swapped under a lock.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "milter/cfg.h"
#include "milter/cfg_int.h"
#include "milter/limiter.h"
#include "milter/metrics.h"
#include "milter/stats.h"
#include "milter/store_redis.h"

/* ---- the redis group */

static const struct policy_field redis_fields[] = {
	{ "address", PF_STRING, offsetof(struct cfg_redis, address), 0, 0, false },
	{ "sentinels", PF_STRLIST, offsetof(struct cfg_redis, sentinels), 0, 0, false },
	{ "master_name", PF_STRING, offsetof(struct cfg_redis, master_name), 0, 0, false },
	{ "sentinel_password_file", PF_STRING,
	    offsetof(struct cfg_redis, sentinel_password_file), 0, 0, false },
	{ "database", PF_INT, offsetof(struct cfg_redis, database), 0, 1000000, false },
	{ "username", PF_STRING, offsetof(struct cfg_redis, username), 0, 0, false },
	{ "password_file", PF_STRING, offsetof(struct cfg_redis, password_file), 0, 0, false },
	{ "prefix", PF_STRING, offsetof(struct cfg_redis, prefix), 0, 0, false },
	{ "connect_timeout", PF_DURATION, offsetof(struct cfg_redis, connect_timeout_ms), 1, 60000, false },
	{ "timeout", PF_DURATION, offsetof(struct cfg_redis, timeout_ms), 1, 60000, false },
	{ "pool", PF_INT, offsetof(struct cfg_redis, pool), 1, 1024, false },
	{ NULL, 0, 0, 0, 0, false },
};

/* A Redis store shared by the snapshots whose connection settings are equal. */
struct cfg_store {
	struct store *store;
	int refs;
};

static void
redis_free(struct cfg_redis *r)
{
	if (r == NULL)
		return;
	/* Snapshots are freed by whichever thread drops the last reference. */
	if (r->shared != NULL &&
	    __atomic_sub_fetch(&r->shared->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		store_free(r->shared->store);
		free(r->shared);
	}
	free(r->address);
	for (size_t i = 0; i < r->sentinels.n; i++)
		free(r->sentinels.v[i]);
	free(r->sentinels.v);
	free(r->master_name);
	free(r->sentinel_password_file);
	if (r->sentinel_password != NULL) {
		explicit_bzero(r->sentinel_password, strlen(r->sentinel_password));
		free(r->sentinel_password);
	}
	free(r->username);
	free(r->password_file);
	if (r->password != NULL) {
		explicit_bzero(r->password, strlen(r->password));
		free(r->password);
	}
	free(r->prefix);
	free(r);
}

static char *
read_password(struct loader *ld, const config_setting_t *s, const char *what,
    const char *path)
{
	char buf[1024];
	struct stat sb;
	FILE *fp = fopen(path, "re");

	if (fp == NULL) {
		ERR(ld, s, "%s \"%s\": %s", what, path, strerror(errno));
		return NULL;
	}
	if (fstat(fileno(fp), &sb) == 0 && (sb.st_mode & S_IROTH))
		WARN(ld, s, "%s \"%s\" is readable by everyone; "
		    "chmod o-r it", what, path);
	if (fgets(buf, sizeof(buf), fp) == NULL)
		buf[0] = '\0';
	fclose(fp);
	buf[strcspn(buf, "\r\n")] = '\0';
	if (buf[0] == '\0') {
		ERR(ld, s, "%s \"%s\" is empty (the password is its "
		    "first line)", what, path);
		return NULL;
	}
	char *pw = strdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return pw;
}

/*
 * sentinels = [ "IP:port", ... ]; master_name; sentinel_password_file: the
 * alternative to address.  Both, or sentinels without master_name (or the
 * other way round), is an error at the line of the setting that is too many.
 */
static void
parse_sentinels(struct loader *ld, const config_setting_t *s, struct cfg_redis *r)
{
	const config_setting_t *sl = config_setting_get_member(s, "sentinels");
	const config_setting_t *mn = config_setting_get_member(s, "master_name");
	const config_setting_t *pf = config_setting_get_member(s,
	    "sentinel_password_file");

	if (r->address != NULL && sl != NULL) {
		ERR(ld, sl, "redis: set either address or sentinels, not both");
		return;
	}
	if (r->address == NULL && sl == NULL) {
		ERR(ld, s, "redis: required setting \"address\" is missing (or "
		    "sentinels and master_name)");
		return;
	}
	if (sl == NULL) {
		if (mn != NULL)
			ERR(ld, mn, "redis: master_name applies only with sentinels");
		if (pf != NULL)
			ERR(ld, pf, "redis: sentinel_password_file applies only with "
			    "sentinels");
		return;
	}
	if (r->sentinels.n == 0 && config_setting_length(sl) == 0)
		ERR(ld, sl, "redis: sentinels is empty; list at least one "
		    "\"IP:port\"");
	for (size_t i = 0; i < r->sentinels.n; i++) {
		char why[256];

		if (store_check_address(r->sentinels.v[i], true, why, sizeof(why)) != 0)
			ERR(ld, cfg_setting_at(s, "sentinels", (int)i),
			    "redis sentinels: %s", why);
	}
	if (mn == NULL)
		ERR(ld, sl, "redis: sentinels need master_name (the name in the "
		    "Sentinels' \"sentinel monitor NAME ...\")");
	else if (r->master_name != NULL && (r->master_name[0] == '\0' ||
	    strlen(r->master_name) > 200 ||
	    r->master_name[strcspn(r->master_name, " \t\r\n")] != '\0'))
		ERR(ld, mn, "redis: master_name \"%s\" must be 1 to 200 characters "
		    "without spaces", r->master_name);
	if (r->sentinel_password_file != NULL)
		r->sentinel_password = read_password(ld, pf, "sentinel_password_file",
		    r->sentinel_password_file);
}

static struct cfg_redis *
parse_redis(struct loader *ld, const config_setting_t *s)
{
	const char *known[16];
	struct cfg_redis *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->connect_timeout_ms = 200;
	r->timeout_ms = 100;
	r->pool = 16;
	if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
		ERR(ld, s, "redis must be a group { address = ...; }, not %s",
		    cfg_type_name(config_setting_type(s)));
		return r;
	}
	cfg_known_from_fields(redis_fields, NULL, known, 16);
	/* Where the master is: address, or sentinels and master_name. */
	cfg_check_unknown_keys(ld, s, "redis", known);
	cfg_parse_fields(ld, s, "redis", redis_fields, r);
	if (r->prefix == NULL)
		r->prefix = strdup("pm:");
	else if (strlen(r->prefix) > 64 || strspn(r->prefix,
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:._-/{}") !=
	    strlen(r->prefix))
		ERR(ld, config_setting_get_member(s, "prefix"), "redis prefix \"%s\" must "
		    "be at most 64 of A-Z a-z 0-9 : . _ - / { }", r->prefix);
	if (r->password_file != NULL)
		r->password = read_password(ld,
		    config_setting_get_member(s, "password_file"), "password_file",
		    r->password_file);
	if (r->username != NULL && r->password_file == NULL)
		ERR(ld, config_setting_get_member(s, "username"),
		    "redis: username needs password_file");
	parse_sentinels(ld, s, r);
	if (r->address != NULL) {
		/* Let the store judge the address now, so that a typo fails the load. */
		char why[256];
		struct store_options o = { .address = r->address, .pool = 1,
		    .timeout_ms = 1, .connect_timeout_ms = 1 };
		struct store *probe = store_new(&o, why, sizeof(why));
		if (probe == NULL)
			ERR(ld, config_setting_get_member(s, "address"), "redis address: %s", why);
		store_free(probe);
	}
	return r;
}

static bool
same_str(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Connection settings equal: the store and its connections can be shared. */
static bool
redis_same(const struct cfg_redis *a, const struct cfg_redis *b)
{
	if (a->sentinels.n != b->sentinels.n)
		return false;
	for (size_t i = 0; i < a->sentinels.n; i++)
		if (strcmp(a->sentinels.v[i], b->sentinels.v[i]) != 0)
			return false;
	return same_str(a->address, b->address) && a->database == b->database &&
	    same_str(a->master_name, b->master_name) &&
	    same_str(a->sentinel_password, b->sentinel_password) &&
	    same_str(a->username, b->username) && same_str(a->password, b->password) &&
	    a->connect_timeout_ms == b->connect_timeout_ms &&
	    a->timeout_ms == b->timeout_ms && a->pool == b->pool;
}

/* ---- top level */

static const struct policy_field top_fields[] = {
	{ "listen", PF_STRING, offsetof(struct cfg, listen), 0, 0, true },
	{ "socket_mode", PF_STRING, offsetof(struct cfg, socket_mode_text), 0, 0, false },
	{ "user", PF_STRING, offsetof(struct cfg, user), 0, 0, false },
	{ "group", PF_STRING, offsetof(struct cfg, group), 0, 0, false },
	{ "metrics", PF_STRING, offsetof(struct cfg, metrics), 0, 0, false },
	{ "delay_mail_lookups", PF_BOOL, offsetof(struct cfg, delay_mail_lookups), 0, 0,
	    false },
	{ NULL, 0, 0, 0, 0, false },
};

static const char *const top_custom[] = {
	"redis", "on_redis_error", "exempt", "policies", NULL,
};

static void
cfg_free(struct cfg *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->npolicies; i++)
		cfg_policy_clear(&c->policies[i]);
	free(c->policies);
	for (size_t i = 0; i < c->nwatch; i++)
		free(c->watch[i].path);
	free(c->watch);
	free(c->exempt.clients);
	reply_free(c->redis_error_reply);
	redis_free(c->redis);
	free(c->path);
	free(c->listen);
	free(c->socket_mode_text);
	free(c->user);
	free(c->group);
	free(c->metrics);
	free(c);
}

const char *
cfg_unix_socket_path(const char *spec)
{
	if (strncmp(spec, "unix:", 5) == 0)
		return spec + 5;
	if (strncmp(spec, "local:", 6) == 0)
		return spec + 6;
	return spec[0] == '/' ? spec : NULL;
}

/*
 * Is host (after the @ of a libmilter inet spec) the wildcard address?
 * libmilter binds INADDR_ANY / in6addr_any for it, as for no address at all.
 */
static bool
listen_any(const char *host)
{
	char buf[INET6_ADDRSTRLEN + 2];
	unsigned char a[sizeof(struct in6_addr)];
	size_t len = strlen(host);

	if (len >= sizeof(buf))
		return false;
	if (host[0] == '[' && len >= 2 && host[len - 1] == ']') {
		memcpy(buf, host + 1, len - 2);
		buf[len - 2] = '\0';
	} else {
		memcpy(buf, host, len + 1);
	}
	if (strcmp(buf, "*") == 0 || strcmp(buf, "0") == 0)
		return true;
	if (inet_pton(AF_INET, buf, a) == 1)
		return memcmp(a, "\0\0\0\0", 4) == 0;
	if (inet_pton(AF_INET6, buf, a) == 1)
		return IN6_IS_ADDR_UNSPECIFIED((struct in6_addr *)(void *)a);
	return false;
}

static void
check_listen(struct loader *ld, const config_setting_t *s, const char *spec,
    bool socket_mode_set)
{
	const char *path = cfg_unix_socket_path(spec);

	if (path != NULL) {
		if (path[0] != '/')
			ERR(ld, s, "listen \"%s\": the socket path must be absolute", spec);
		return;
	}
	if (socket_mode_set)
		WARN(ld, s, "socket_mode applies to unix sockets only; ignored for \"%s\"",
		    spec);
	if (strncmp(spec, "inet:", 5) == 0 || strncmp(spec, "inet6:", 6) == 0) {
		const char *port = strchr(spec, ':') + 1;
		char *end;
		long n = strtol(port, &end, 10);
		if (end == port || n < 1 || n > 65535 || (*end != '\0' && *end != '@') ||
		    (*end == '@' && (end[1] == '\0' || (strchr(end + 1, ':') != NULL &&
		    strncmp(spec, "inet6:", 6) != 0)))) {
			ERR(ld, s, "listen \"%s\": expected inet:PORT@ADDRESS such as "
			    "\"inet:8890@127.0.0.1\" (libmilter's order, not Postfix's "
			    "inet:host:port)", spec);
		} else if (*end == '\0' || listen_any(end + 1)) {
			bool v6 = strncmp(spec, "inet6:", 6) == 0;
			WARN(ld, s, "listen \"%s\" accepts connections on every interface: "
			    "anyone who reaches port %ld can spend rate-limit units; bind it "
			    "to %s (%s:%ld@%s) or use a unix socket", spec, n,
			    v6 ? "::1" : "127.0.0.1", v6 ? "inet6" : "inet", n,
			    v6 ? "::1" : "127.0.0.1");
		}
		return;
	}
	ERR(ld, s, "listen \"%s\" must be \"unix:/path\" or \"inet:PORT@ADDRESS\"", spec);
}

/*
 * metrics = "inet:PORT@ADDRESS": the Prometheus endpoint (milter/metrics.h
 * parses it, for the daemon too).  It shows policy names and traffic
 * counts: anywhere but loopback deserves a word.
 */
static void
check_metrics(struct loader *ld, const config_setting_t *s, const char *spec)
{
	struct sockaddr_storage sa;
	socklen_t salen;
	bool loopback;
	char why[256];

	if (metrics_parse_address(spec, &sa, &salen, &loopback, why, sizeof(why)) != 0)
		ERR(ld, s, "metrics \"%s\": %s", spec, why);
	else if (!loopback)
		WARN(ld, s, "metrics \"%s\" can be reached from other hosts: anyone "
		    "who reaches it reads policy names and traffic counts; bind it to "
		    "%s or let a firewall guard the port", spec,
		    sa.ss_family == AF_INET6 ? "::1" : "127.0.0.1");
}

struct cfg *
cfg_load(const char *path, struct cfg *prev, cfg_report_fn *report, void *arg)
{
	struct loader ld = { path, NULL, report, arg, 0 };
	struct cfg *c = NULL;
	config_t lc;
	const config_setting_t *root, *s;
	const char *known[16];
	char dir[PATH_MAX];

	config_init(&lc);
	/* libconfig 1.5 resolves every @include, nested ones too, against one
	 * directory: the main file's. */
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash != NULL) {
		*slash = '\0';
		if (dir[0] == '\0')
			strcpy(dir, "/");
		config_set_include_dir(&lc, dir);
		ld.include_dir = dir;
	}
	if (config_read_file(&lc, path) != CONFIG_TRUE) {
		char msg[PATH_MAX + 1024];
		const char *file = config_error_file(&lc) ? config_error_file(&lc) : path;
		bool included = file[0] != '/' && strcmp(file, path) != 0 &&
		    ld.include_dir != NULL;

		if (config_error_type(&lc) == CONFIG_ERR_FILE_IO)
			snprintf(msg, sizeof(msg), "%s: cannot read: %s", path,
			    errno ? strerror(errno) : "file I/O error");
		else
			snprintf(msg, sizeof(msg), "%s%s%s:%d: %s",
			    included ? ld.include_dir : "", included ? "/" : "", file,
			    config_error_line(&lc), config_error_text(&lc));
		report(arg, true, msg);
		config_destroy(&lc);
		return NULL;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL || (c->path = strdup(path)) == NULL)
		goto fail;
	c->refs = 1;
	c->socket_mode = -1;
	c->on_redis_error = CFG_ON_ERROR_ACCEPT;
	c->delay_mail_lookups = true;
	root = config_root_setting(&lc);

	cfg_known_from_fields(top_fields, top_custom, known, 16);
	cfg_check_unknown_keys(&ld, root, "the top level", known);
	cfg_parse_fields(&ld, root, "the top level", top_fields, c);
	if (c->listen != NULL)
		check_listen(&ld, config_setting_get_member(root, "listen"), c->listen,
		    c->socket_mode_text != NULL);
	if (c->metrics != NULL)
		check_metrics(&ld, config_setting_get_member(root, "metrics"), c->metrics);
	if (c->socket_mode_text != NULL) {
		char *end;
		long m = strtol(c->socket_mode_text, &end, 8);
		if (*end != '\0' || end == c->socket_mode_text || m < 0 || m > 0777)
			ERR(&ld, config_setting_get_member(root, "socket_mode"),
			    "socket_mode \"%s\" must be an octal mode such as \"0660\"",
			    c->socket_mode_text);
		else
			c->socket_mode = (int)m;
	}
	if (c->user == NULL && c->group != NULL)
		ERR(&ld, config_setting_get_member(root, "group"),
		    "group is set but user is not: set both to drop privileges");
	if ((s = config_setting_get_member(root, "redis")) != NULL)
		c->redis = parse_redis(&ld, s);
	if ((s = config_setting_get_member(root, "on_redis_error")) != NULL)
		cfg_parse_on_error(&ld, s, &c->on_redis_error);
	if ((s = config_setting_get_member(root, "exempt")) != NULL)
		cfg_parse_exempt(&ld, s, &c->exempt);
	if ((s = config_setting_get_member(root, "policies")) != NULL)
		cfg_parse_policies(&ld, s, c);
	else
		WARN(&ld, root, "no policies: every message is accepted");

	if ((c->watch = calloc(c->npolicies + 1, sizeof(*c->watch))) == NULL)
		goto fail;
	for (size_t i = 0; i < c->npolicies; i++) {
		const struct cfg_policy *p = &c->policies[i];
		const char *file = p->type->watch_file != NULL && p->settings != NULL ?
		    p->type->watch_file(p->settings) : NULL;
		if (file != NULL && (c->watch[c->nwatch].path = strdup(file)) != NULL)
			c->watch[c->nwatch++].mtime_ns = p->watch_mtime;
	}
	for (size_t i = 0; i < c->npolicies; i++) {
		const struct cfg_policy *p = &c->policies[i];
		c->stages_decide |= p->stages;
		c->stages_need |= p->needs | p->stages;
		if (p->type->uses_store && c->redis == NULL)
			ERR(&ld, config_setting_get_elem(config_setting_get_member(root,
			    "policies"), (unsigned)i), "policy \"%s\": type \"%s\" counts "
			    "in Redis: add redis = { address = ...; }", p->name, p->type->name);
		else if (p->live && c->redis == NULL)
			ERR(&ld, config_setting_get_elem(config_setting_get_member(root,
			    "policies"), (unsigned)i), "policy \"%s\": redis = true needs the "
			    "top-level redis = { address = ...; }", p->name);
		if (p->live)
			c->nlive++;
		if (p->live && (p->stages & POLICY_STAGE(POLICY_MAIL)))
			c->delay_mail = true;
	}
	c->delay_mail = c->delay_mail && c->delay_mail_lookups &&
	    (c->stages_decide & POLICY_STAGE(POLICY_RCPT));
	{
		/* The engine's work space at one stage: the policies deciding
		 * there, and their live lists (MAIL's and RCPT's together when
		 * MAIL waits for RCPT). */
		size_t n[POLICY_NSTAGES] = { 0 }, live[POLICY_NSTAGES] = { 0 };

		for (size_t i = 0; i < c->npolicies; i++)
			for (int st = 0; st < POLICY_NSTAGES; st++)
				if (c->policies[i].stages & POLICY_STAGE(st)) {
					n[st]++;
					live[st] += c->policies[i].live;
				}
		if (c->delay_mail) {
			n[POLICY_RCPT] += n[POLICY_MAIL];
			live[POLICY_RCPT] += live[POLICY_MAIL];
		}
		for (int st = 0; st < POLICY_NSTAGES; st++) {
			if (n[st] > c->stage_items)
				c->stage_items = n[st];
			if (live[st] > c->stage_live)
				c->stage_live = live[st];
		}
	}
	{
		/* What a Redis failure with on_redis_error = "tempfail" answers. */
		static const char *const text[] = {
			"451 4.3.0 Temporary policy failure; try again later",
		};
		char why[256], warn[256];
		c->redis_error_reply = reply_compile(text, 1, POLICY_TEMPFAIL, why,
		    sizeof(why), warn, sizeof(warn));
	}
	if (ld.errors > 0)
		goto fail;

	for (size_t i = 0; i < c->npolicies; i++) {
		struct cfg_policy *p = &c->policies[i];

		p->stats = stats_get(p->name);
		if (c->redis != NULL && p->type->count != NULL &&
		    ((p->keys = malloc(sizeof(*p->keys))) == NULL ||
		    limiter_keys(c->redis->prefix, p->name, p->keys) != 0)) {
			ERR(&ld, NULL, "policy \"%s\": out of memory", p->name);
			goto fail;
		}
	}
	if (c->redis != NULL) {
		if (prev != NULL && prev->redis != NULL && redis_same(prev->redis, c->redis)) {
			c->redis->shared = prev->redis->shared;
			__atomic_add_fetch(&c->redis->shared->refs, 1, __ATOMIC_RELAXED);
		} else {
			char why[256];
			struct store_options o = {
				.address = c->redis->address,
				.database = (int)c->redis->database,
				.username = c->redis->username,
				.password = c->redis->password,
				.connect_timeout_ms = (unsigned)c->redis->connect_timeout_ms,
				.timeout_ms = (unsigned)c->redis->timeout_ms,
				.pool = (unsigned)c->redis->pool,
				.sentinels = (const char *const *)c->redis->sentinels.v,
				.nsentinels = c->redis->sentinels.n,
				.master_name = c->redis->master_name,
				.sentinel_password = c->redis->sentinel_password,
			};
			if ((c->redis->shared = calloc(1, sizeof(*c->redis->shared))) == NULL)
				goto fail;
			c->redis->shared->refs = 1;
			c->redis->shared->store = store_new(&o, why, sizeof(why));
			if (c->redis->shared->store == NULL) {
				ERR(&ld, config_setting_get_member(root, "redis"), "redis: %s", why);
				goto fail;
			}
		}
		c->redis->store = c->redis->shared->store;
	}
	config_destroy(&lc);
	return c;
fail:
	if (ld.errors == 0)
		report(arg, true, "out of memory");
	config_destroy(&lc);
	cfg_free(c);
	return NULL;
}

/* ---- snapshots */

static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cfg *current;

void
cfg_ref(struct cfg *c)
{
	__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

void
cfg_unref(struct cfg *c)
{
	if (c != NULL && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
		cfg_free(c);
}

void
cfg_install(struct cfg *c)
{
	struct cfg *old;

	pthread_mutex_lock(&current_lock);
	old = current;
	current = c;
	pthread_mutex_unlock(&current_lock);
	cfg_unref(old);
}

struct cfg *
cfg_acquire(void)
{
	struct cfg *c;

	/* A lock, not a bare atomic load: the reference must be taken before a
	 * concurrent cfg_install can drop the last one.  Once per connection. */
	pthread_mutex_lock(&current_lock);
	c = current;
	if (c != NULL)
		cfg_ref(c);
	pthread_mutex_unlock(&current_lock);
	return c;
}
