/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_canon - the one canonical address (policies/canon.c) and what is
 * built from it: rate-limit keys and live-list members.
 *
 * Input: one octet of options (bit 0: strip extensions; bits 1-3: the size
 * of a small output buffer), then the address as the MTA would pass it
 * (any octet; a NUL ends it, as it ends a C string from libmilter).
 *
 * Promises checked:
 *  - the output is NUL-terminated inside its buffer, and a well-formed
 *    result reads the same a second time (canon_address of it is itself);
 *  - a buffer too small keeps the end of the result (the domain);
 *  - canon_domain_of gives "<>", "" or a tail of the canonical form;
 *  - a rate-limit key made of sender, rcpt_domain, helo and sasl_user parts
 *    fits its buffer, and so do the members a live list looks up.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/cfg.h"
#include "milter/session.h"
#include "policies/canon.h"
#include "policies/policy.h"
#include "tests/fuzz/fuzzlib.h"

static struct cfg *conf;

static void
quiet(void *arg, bool is_error, const char *msg)
{
	(void)arg;
	if (is_error)
		fprintf(stderr, "fuzz_canon: %s\n", msg);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char text[] =
	    "listen = \"inet:8890@127.0.0.1\";\n"
	    "redis = { address = \"unix:/nonexistent/redis.sock\"; };\n"
	    "policies = (\n"
	    "  { name = \"rl\"; type = \"ratelimit\";\n"
	    "    key = [ \"sender\", \"rcpt_domain\", \"helo\", \"sasl_user\" ];\n"
	    "    count = \"messages\"; limit = 10; window = \"1h\"; action = \"tempfail\"; },\n"
	    "  { name = \"live\"; type = \"block\"; match = \"sender\"; redis = true;\n"
	    "    action = \"reject\"; }\n"
	    ");\n";

	(void)argc;
	(void)argv;
	conf = cfg_load(fz_file(text, sizeof(text) - 1), NULL, quiet, NULL);
	if (conf == NULL)
		fz_fail("the target's own configuration does not load");
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in, *out, *again, small[32], dom[CANON_SIZE(1100)];
	size_t len, outlen, smalllen;
	unsigned flags;
	int rc;

	if (size < 1)
		return 0;
	flags = (data[0] & 1) ? CANON_STRIP_EXTENSION : 0;
	smalllen = 2 + ((data[0] >> 1) & 7) * 4;
	in = fz_strndup(data + 1, size - 1);
	len = strlen(in);
	outlen = CANON_SIZE(len);
	out = malloc(outlen);
	again = malloc(CANON_SIZE(outlen));
	if (out == NULL || again == NULL)
		fz_fail("out of memory");

	rc = canon_address(in, flags, out, outlen, NULL, 0);
	FZ_CHECK(strlen(out) < outlen, "output not terminated inside its buffer");
	if (rc == 0) {
		FZ_CHECK(canon_address(out, flags, again, CANON_SIZE(outlen), NULL, 0) == 0,
		    "the canonical form \"%s\" is not well-formed", out);
		FZ_CHECK(strcmp(out, again) == 0, "\"%s\" reads as \"%s\" again", out, again);
	}
	/* Too small a buffer keeps the end. */
	canon_address(in, flags, small, smalllen, NULL, 0);
	FZ_CHECK(strlen(out) < smalllen ? strcmp(small, out) == 0 :
	    strcmp(small, out + strlen(out) - (smalllen - 1)) == 0,
	    "a %zu-octet buffer holds \"%s\", not the end of \"%s\"", smalllen, small, out);

	if (strlen(out) < sizeof(dom) / 2) {
		canon_domain_of(out, dom, sizeof(dom));
		FZ_CHECK(strcmp(dom, "<>") == 0 || dom[0] == '\0' ||
		    (strlen(dom) <= strlen(out) &&
		    strcmp(out + strlen(out) - strlen(dom), dom) == 0),
		    "domain \"%s\" of \"%s\"", dom, out);

		/* As the session keeps it: cut to its last 1024 octets. */
		const char *value = strlen(out) > 1024 ? out + strlen(out) - 1024 : out;
		struct policy_msg m = { .client_ip = "192.0.2.1", .helo = in,
		    .sender = value, .rcpt = value, .sasl_user = in };
		const struct cfg_policy *rl = &conf->policies[0], *live = &conf->policies[1];
		struct policy_count cnt;
		struct policy_members *mem = malloc(sizeof(*mem));

		if (mem == NULL)
			fz_fail("out of memory");
		if (rl->type->count(rl->settings, POLICY_RCPT, &m, &cnt))
			FZ_CHECK(cnt.keylen < sizeof(cnt.key) && cnt.key[cnt.keylen] == '\0',
			    "key of %zu octets in a %zu-octet buffer", cnt.keylen,
			    sizeof(cnt.key));
		live->type->members(live->settings, POLICY_MAIL, &m, mem);
		FZ_CHECK(mem->n <= POLICY_MEMBERS_MAX, "%zu members", mem->n);
		for (size_t i = 0; i < mem->n; i++)
			FZ_CHECK(mem->len[i] <= POLICY_MEMBERS_BUF,
			    "member %zu is %zu octets", i, mem->len[i]);
		free(mem);
	}
	free(in);
	free(out);
	free(again);
	return 0;
}
