/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * cfg - the configuration file, loaded into an immutable snapshot.
 *
 * cfg_load() parses a libconfig file, validates every setting and reports
 * every problem as "file:line: message" through a callback, all in one run;
 * it returns NULL if there was any error.  A snapshot never changes after
 * loading.  The daemon keeps one current snapshot (cfg_install); each SMTP
 * connection takes a reference when it starts (cfg_acquire) and keeps that
 * one to its end, so a reload never changes the rules under a live session.
 *
 * A snapshot also carries the Redis store built from its redis settings.
 * When a reload leaves those settings unchanged the new snapshot shares the
 * old store (and its open connections).
 *
 * Threads: cfg_install/cfg_acquire/cfg_release are thread-safe; a snapshot
 * is read-only and may be read from any thread while referenced.
 */
#ifndef PM_CFG_H
#define PM_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "milter/addr.h"
#include "milter/reply.h"
#include "policies/policy.h"

struct store;
struct stats_entry;
struct limiter_keys;
struct cfg_store;

enum cfg_on_error {
	CFG_ON_ERROR_INHERIT = -1,  /* policy level only: use the global one */
	CFG_ON_ERROR_ACCEPT = 0,
	CFG_ON_ERROR_TEMPFAIL,
};

struct cfg_watch {
	char *path;
	long long mtime_ns;            /* -1: missing when loaded */
};

struct cfg_exempt {
	struct addr_net *clients;
	size_t nclients;
	bool authenticated;            /* SASL-authenticated senders */
};

struct cfg_policy {
	char *name;
	const struct policy_type *type;
	void *settings;                /* the type's settings struct */
	enum policy_action action;
	struct reply_tmpl *reply;      /* reject and tempfail only, else NULL */
	bool dry_run;
	bool live;                     /* also consults its live list in Redis */
	enum cfg_on_error on_redis_error;
	struct cfg_exempt exempt;      /* clients and senders this policy skips */
	long long watch_mtime;         /* its list file's time, taken before reading it */
	unsigned stages;               /* POLICY_STAGE bits where it decides */
	unsigned needs;                /* ... and where it reads data */
	struct stats_entry *stats;     /* owned by the stats registry */
	struct limiter_keys *keys;     /* counting policies with Redis: their
	                                * override and refusal keys */
	unsigned line;
};

struct cfg_redis {
	char *address;                 /* or sentinels + master_name */
	struct policy_strlist sentinels;   /* "IP:port" each, asked in order */
	char *master_name;
	char *sentinel_password_file;
	char *sentinel_password;       /* read from sentinel_password_file */
	long long database;
	char *username;
	char *password_file;
	char *password;                /* read from password_file; never logged */
	char *prefix;
	uint64_t connect_timeout_ms;
	uint64_t timeout_ms;
	long long pool;
	struct store *store;           /* shared->store, for convenience */
	struct cfg_store *shared;      /* the store and its reference count */
};

struct cfg {
	char *path;
	char *listen;
	char *socket_mode_text;
	int socket_mode;               /* -1 when not set */
	char *user;
	char *group;
	char *metrics;                 /* "inet:PORT@ADDRESS" of the endpoint, or NULL (off) */
	struct cfg_redis *redis;       /* NULL: no Redis configured */
	enum cfg_on_error on_redis_error;
	struct reply_tmpl *redis_error_reply;  /* tempfail when Redis fails */
	struct cfg_exempt exempt;
	bool delay_mail_lookups;       /* the setting (default true) */
	bool delay_mail;               /* in force: it is set, a live list decides
	                                * at MAIL and some policy at RCPT (so the
	                                * RCPT callback can refuse) */
	struct cfg_policy *policies;
	size_t npolicies;
	size_t nlive;                  /* policies with live lists */
	size_t stage_items;            /* most policies one stage runs (engine.c) */
	size_t stage_live;             /* ... and of them, most live lists */
	struct cfg_watch *watch;       /* files whose change reloads the configuration */
	size_t nwatch;
	unsigned stages_decide;        /* POLICY_STAGE bits where some policy decides */
	unsigned stages_need;          /* ... or reads data */
	int refs;
};

/* Called once per problem: "file:line: message"; is_error false for warnings. */
typedef void cfg_report_fn(void *arg, bool is_error, const char *msg);

/*
 * Load path.  prev, when not NULL, is the snapshot in force: its Redis store
 * is shared if the redis settings did not change.  Returns a snapshot with
 * one reference, or NULL after reporting every error.
 */
struct cfg *cfg_load(const char *path, struct cfg *prev, cfg_report_fn *report,
    void *arg);

void cfg_ref(struct cfg *c);
void cfg_unref(struct cfg *c);          /* accepts NULL */

/* Make c (whose reference the call takes over) the current snapshot. */
void cfg_install(struct cfg *c);
/* The current snapshot with a reference for the caller, or NULL. */
struct cfg *cfg_acquire(void);

/*
 * Has a list file of c changed (modification time, or appeared/vanished)
 * since c was loaded?  *stamp receives a value that changes whenever one of
 * the files does, so that a caller can try a broken file once, not every
 * second.  A stat() per file: call it at most once a second.
 */
bool cfg_files_changed(const struct cfg *c, long long *stamp);

/* The path of a unix socket listen spec, or NULL for inet sockets. */
const char *cfg_unix_socket_path(const char *listen);

/* The nearest of candidates to word (for "did you mean"), or NULL. */
const char *cfg_suggest(const char *word, const char *const *candidates);

#endif
