/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * policy - the one interface every policy type implements.
 *
 * A policy type is a table (struct policy_type): the SMTP stages at which it
 * may decide, the settings it takes (struct policy_field, parsed and
 * range-checked by the configuration loader), and a check function that
 * looks at the message so far and says whether the policy is hit.  What
 * happens on a hit (action, reply, dry run, statistics, logging) is the
 * engine's business, the same for every type.
 *
 * Policies never include libmilter: they see the message through struct
 * policy_msg, so that unit tests can drive them directly.
 *
 * Threads: check functions are called concurrently for different
 * connections; the policy and its settings are read-only after loading.
 */
#ifndef PM_POLICY_H
#define PM_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* SMTP stages in the order the MTA reports them. */
enum policy_stage {
	POLICY_CONNECT,
	POLICY_HELO,
	POLICY_MAIL,
	POLICY_RCPT,
	POLICY_HEADER,
	POLICY_BODY,
	POLICY_EOM,
	POLICY_NSTAGES
};
#define POLICY_STAGE(s) (1u << (s))

enum policy_action {
	POLICY_NONE = 0,        /* not decisive: go on with the next policy */
	POLICY_ACCEPT,
	POLICY_REJECT,
	POLICY_TEMPFAIL,
	POLICY_DISCARD,
	POLICY_QUARANTINE,
};

/* The message as far as the MTA has shown it.  Strings are never NULL. */
struct policy_msg {
	const char *client_ip;     /* "" when the MTA gave none */
	const char *helo;
	const char *sender;        /* envelope sender, canonical (policies/canon.h):
	                            * "<>" is the null sender */
	const char *rcpt;          /* the recipient being decided (RCPT stage),
	                            * canonical, else "" */
	const char *sasl_user;     /* "" when not authenticated */
	uint64_t declared_size;    /* SIZE= of MAIL FROM */
	bool has_declared_size;
	uint64_t size;             /* header and body octets seen so far; final at EOM */
	unsigned rcpts;            /* recipients accepted before this one */
};

/* What a hit reports for the reply template (${limit} ...). */
struct policy_hit {
	uint64_t limit;
	bool limit_is_size;        /* format ${limit} as a size ("25M") */
};

/* What a counting policy (rate limit) counts. */
enum policy_unit {
	POLICY_UNIT_MESSAGES,      /* once per message and key */
	POLICY_UNIT_RECIPIENTS,    /* once per accepted recipient */
	POLICY_UNIT_BYTES,         /* SIZE= at RCPT, the real size at end of message */
};

#define POLICY_KEY_MAX 2048

/*
 * A count that a policy asks the engine to check and reserve in Redis, all
 * the policies of a stage in one atomic call (see milter/limiter.h).
 */
struct policy_count {
	char key[POLICY_KEY_MAX];  /* the counted key, e.g. "alice|example.net" */
	size_t keylen;
	enum policy_unit unit;
	uint64_t amount;           /* units this stage adds */
	uint64_t limit;            /* most units in any window */
	uint64_t window_ms;
};

/*
 * The members of a live list (a Redis sorted set) that would match the
 * message, most specific first: the engine looks them all up in the stage's
 * one script call.  v[i] points into buf and is not NUL-terminated.
 */
#define POLICY_MEMBER_VALUE_MAX 1024  /* longer values are not looked up */
/* A domain of 1024 octets has at most 512 labels: a member each, and the
 * address, "@domain" and "<>"; an IPv6 client needs 130. */
#define POLICY_MEMBERS_MAX (POLICY_MEMBER_VALUE_MAX / 2 + 8)
#define POLICY_MEMBERS_BUF (2 * POLICY_MEMBER_VALUE_MAX + 6 * 1024)

struct policy_members {
	size_t n;
	const char *v[POLICY_MEMBERS_MAX];
	size_t len[POLICY_MEMBERS_MAX];
	char buf[POLICY_MEMBERS_BUF];
};

/* Why validate refused the settings, and where: the setting named field
 * (NULL: the policy as a whole), and its element index (-1: the setting). */
struct policy_invalid {
	char why[512];
	const char *field;
	int index;
};

/* Kinds of setting a policy type may declare. */
enum policy_field_kind {
	PF_INT,        /* long long, within [min, max] */
	PF_SIZE,       /* uint64_t bytes: integer or "25M" */
	PF_DURATION,   /* uint64_t milliseconds: integer seconds or "10m" */
	PF_BOOL,       /* bool */
	PF_STRING,     /* char *, owned by the settings struct */
	PF_STRLIST,    /* struct policy_strlist, a string or a list of strings */
};

struct policy_strlist {
	char **v;
	size_t n;
};

struct policy_field {
	const char *name;
	enum policy_field_kind kind;
	size_t offset;             /* into the type's settings struct */
	long long min, max;        /* for PF_INT, PF_SIZE, PF_DURATION (max 0: none) */
	bool required;
};

struct policy_type {
	const char *name;                       /* the config's type = "..." */
	unsigned stages;                        /* POLICY_STAGE() bits where check may decide */
	unsigned needs;                         /* stages whose data it reads (counts, bytes) */
	size_t settings_size;                   /* zeroed, then filled from fields */
	const struct policy_field *fields;      /* terminated by { NULL } */
	/* Cross-field checks after parsing; 0, or -1 with why filled in.  May
	 * be NULL. */
	int (*validate)(void *settings, struct policy_invalid *why);
	/* Free what validate or the strings allocated (not the struct).  May be NULL. */
	void (*free_settings)(void *settings);
	/* When set, the stages this policy decides at, and in *needs those
	 * whose data it reads: narrower than stages/needs for some settings. */
	unsigned (*stages_of)(const void *settings, unsigned *needs);
	/*
	 * After validate: read external data (list files).  Each problem is
	 * reported as report(arg, "path:line: message"); returns their number.
	 * May be NULL.
	 */
	int (*load)(void *settings, void (*report)(void *arg, const char *msg), void *arg);
	/* The file whose changes should reload the configuration, or NULL. */
	const char *(*watch_file)(const void *settings);
	bool uses_store;                        /* needs the redis settings */
	/* true when the policy is hit at this stage (fills hit).  NULL for
	 * counting types. */
	bool (*check)(const void *settings, enum policy_stage stage,
	    const struct policy_msg *msg, struct policy_hit *hit);
	/* Counting types: true when the policy counts something at this stage
	 * (fills c); false when it does not apply (e.g. no SASL user for a
	 * sasl_user key).  NULL for the others. */
	bool (*count)(const void *settings, enum policy_stage stage,
	    const struct policy_msg *msg, struct policy_count *c);
	/* Live lists: true when these settings also consult the Redis sorted
	 * set <prefix>block:<policy>.  May be NULL (never). */
	bool (*live)(const void *settings);
	/* Live lists: the members to look up for this message at this stage
	 * (fills out); 0 when there is nothing to look up. */
	size_t (*members)(const void *settings, enum policy_stage stage,
	    const struct policy_msg *msg, struct policy_members *out);
	/*
	 * true when the policy judges the recipient being decided rather than
	 * the message (a recipient count, a recipient list, a rate limit that
	 * counts recipients): an accept at RCPT covers that recipient, so such
	 * policies are skipped for it, while message-level ones (size, message
	 * and byte rate limits) still run.  NULL: false.
	 */
	bool (*per_recipient)(const void *settings);
	/*
	 * policy-milter-ctl.  Counting types: the key for the parts an operator
	 * gives (one per key part, in the order of the policy's settings),
	 * canonical as count() makes it, into c->key and c->keylen; the names
	 * of the parts are in parts_of.  0, or -1 with why.  NULL: none.
	 */
	int (*key_of)(const void *settings, const char *const *parts, size_t nparts,
	    struct policy_count *c, char *why, size_t whylen);
	size_t (*parts_of)(const void *settings, const char **names, size_t max);
	/*
	 * Live lists: the member that stands for an operator's entry, written
	 * as members() writes the members it looks up (so that it is found).
	 * 0, or -1 with why.  NULL: none.
	 */
	int (*live_entry)(const void *settings, const char *entry, char *out,
	    size_t outlen, char *why, size_t whylen);
	const char *default_reject;             /* reply when none is configured */
	const char *default_tempfail;
};

/* Every policy type, terminated by NULL (policies/registry.c). */
extern const struct policy_type *const policy_types[];
const struct policy_type *policy_type_find(const char *name);

extern const struct policy_type policy_type_size;
extern const struct policy_type policy_type_recipients;
extern const struct policy_type policy_type_ratelimit;
extern const struct policy_type policy_type_block;

const char *policy_stage_name(enum policy_stage stage);
const char *policy_action_name(enum policy_action action);

#endif
