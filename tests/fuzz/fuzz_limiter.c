/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_limiter - decoding the rate-limit script's reply: the octets Redis
 * sends back, through hiredis's reader, into limiter_decode.
 *
 * Input: one octet, the number of checks of the call (nc, 0..255), then the
 * bytes of one or more RESP replies.  Every reply the reader yields is
 * decoded; a decoded one must be consistent (stop at most nc, an error
 * message for everything refused).  The reader's own errors end the input.
 *
 * Inputs that announce an aggregate of more than MAX_ELEMENTS elements are
 * skipped: hiredis 0.14 allocates the element array as soon as it reads the
 * header ("*2000000000\r\n" is a 16 GB calloc), which libFuzzer would report
 * as a crash of ours; the daemon trusts its Redis for that much.
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <hiredis/hiredis.h>

#include "milter/limiter.h"
#include "tests/fuzz/fuzzlib.h"

#define MAX_ELEMENTS 4096

/* Does any line that starts with '*' announce more than MAX_ELEMENTS? */
static bool
huge_aggregate(const uint8_t *d, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned long long v = 0;
		size_t k;

		if (d[i] != '*' || (i > 0 && d[i - 1] != '\n'))
			continue;
		for (k = i + 1; k < n && isdigit(d[k]) && v <= MAX_ELEMENTS; k++)
			v = v * 10 + (unsigned)(d[k] - '0');
		if (v > MAX_ELEMENTS)
			return true;
	}
	return false;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct limiter_result res[256];
	redisReader *rd;
	void *reply;
	size_t nc;

	if (size < 1)
		return 0;
	nc = data[0];
	if (huge_aggregate(data + 1, size - 1))
		return -1;
	if ((rd = redisReaderCreate()) == NULL)
		fz_fail("redisReaderCreate failed");
	if (redisReaderFeed(rd, (const char *)data + 1, size - 1) != REDIS_OK)
		fz_fail("redisReaderFeed refused %zu octets", size - 1);
	while (redisReaderGetReply(rd, &reply) == REDIS_OK && reply != NULL) {
		bool refused = false;
		size_t stop = (size_t)-1;
		char err[512] = "";

		memset(res, 0xa5, sizeof(res));
		if (limiter_decode(reply, nc, &refused, &stop, res, err, sizeof(err)) == 0) {
			FZ_CHECK(stop <= nc, "stop %zu with %zu checks", stop, nc);
			for (size_t i = 0; i < nc; i++)
				FZ_CHECK(!(res[i].failed && res[i].over),
				    "check %zu both failed and over", i);
		} else {
			FZ_CHECK(err[0] != '\0', "limiter_decode failed without a reason");
		}
		freeReplyObject(reply);
	}
	redisReaderFree(rd);
	return 0;
}
