/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * limiter - the rate-limit script and its one call per stage (limiter.h).
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/limiter.h"
#include "milter/store_redis.h"

#define BUCKETS_PER_WINDOW 60

/*
 * KEYS: the nc checked keys, then the na "always" and nr "if refused"
 * give-back keys.  ARGV: nc, reserve mode, na, nr; per check: limit,
 * window ms, bucket ms, amount, on-over; per give-back: field, amount.
 * Returns { refused, stop, then per check: over, count, retry ms, field }.
 *
 * Numbers are Lua doubles: exact for integers below 2^53, far above any
 * millisecond timestamp or byte count here; "%.0f" writes them back as
 * integers (tostring would use an exponent).
 */
const char limiter_script[] =
"local t = redis.call('TIME')\n"
"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
"local nc, mode = tonumber(ARGV[1]), ARGV[2]\n"
"local na, nr = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
"local function int(x) return string.format('%.0f', x) end\n"
/* Units in the buckets that reach into the last window; drop older ones. */
"local function usage(key, window, bucket)\n"
"  local oldest = math.floor((now - window) / bucket) * bucket\n"
"  local all = redis.call('HGETALL', key)\n"
"  local sum, live = 0, {}\n"
"  for i = 1, #all, 2 do\n"
"    local f, v = tonumber(all[i]), tonumber(all[i + 1])\n"
"    if f == nil or v == nil or f < oldest then\n"
"      redis.call('HDEL', key, all[i])\n"
"    else\n"
"      sum = sum + v\n"
"      live[#live + 1] = { f, v }\n"
"    end\n"
"  end\n"
"  return sum, live\n"
"end\n"
/* Time until count + amount fits: the oldest buckets leave the window. */
"local function retry(live, excess, window, bucket)\n"
"  table.sort(live, function(a, b) return a[1] < b[1] end)\n"
"  local freed = 0\n"
"  for _, fv in ipairs(live) do\n"
"    freed = freed + fv[2]\n"
"    if freed >= excess then\n"
"      local at = fv[1] + bucket + window - now\n"
"      if at < 1 then at = 1 end\n"
"      return at\n"
"    end\n"
"  end\n"
"  return 0\n"
"end\n"
"local function give_back(key, field, amount)\n"
"  local v = tonumber(redis.call('HGET', key, field) or '0')\n"
"  local n = math.min(v, amount)\n"
"  if n <= 0 then return end\n"
"  if v - n == 0 then redis.call('HDEL', key, field)\n"
"  else redis.call('HINCRBY', key, field, int(-n)) end\n"
"end\n"
"local res, over, counts, retries = { 0, nc }, {}, {}, {}\n"
"local stop, refused, accepted = nc, false, false\n"
"for i = 1, nc do\n"
"  local a = 4 + (i - 1) * 5\n"
"  local limit, window, bucket = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])\n"
"  local amount, on_over = tonumber(ARGV[a + 4]), ARGV[a + 5]\n"
"  local sum, live = usage(KEYS[i], window, bucket)\n"
"  counts[i], retries[i], over[i] = sum, 0, false\n"
"  if sum + amount > limit then\n"
"    over[i] = true\n"
"    if amount <= limit then retries[i] = retry(live, sum + amount - limit, window, bucket) end\n"
"    if on_over ~= 's' then\n"
"      stop = i - 1\n"
"      refused = on_over == 'r'\n"
"      accepted = on_over == 'a'\n"
"      break\n"
"    end\n"
"  end\n"
"end\n"
"local fields = {}\n"
"if refused then\n"
"  for j = 1, nr do\n"
"    local a = 4 + nc * 5 + na * 2 + (j - 1) * 2\n"
"    give_back(KEYS[nc + na + j], ARGV[a + 1], tonumber(ARGV[a + 2]))\n"
"  end\n"
"elseif mode == '1' or (mode == '2' and accepted) then\n"
"  for i = 1, stop do\n"
"    if not over[i] then\n"
"      local a = 4 + (i - 1) * 5\n"
"      local window, bucket, amount = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])\n"
"      local f = math.floor(now / bucket) * bucket\n"
"      if amount > 0 then\n"
"        redis.call('HINCRBY', KEYS[i], int(f), int(amount))\n"
"        redis.call('PEXPIRE', KEYS[i], int(window + bucket + 1))\n"
"      elseif redis.call('EXISTS', KEYS[i]) == 1 then\n"
"        redis.call('PEXPIRE', KEYS[i], int(window + bucket + 1))\n"
"      end\n"
"      fields[i] = f\n"
"    end\n"
"  end\n"
"end\n"
"for j = 1, na do\n"
"  local a = 4 + nc * 5 + (j - 1) * 2\n"
"  give_back(KEYS[nc + j], ARGV[a + 1], tonumber(ARGV[a + 2]))\n"
"end\n"
"res[1] = refused and 1 or 0\n"
"res[2] = stop\n"
"for i = 1, nc do\n"
"  res[#res + 1] = over[i] and 1 or 0\n"
"  res[#res + 1] = counts[i] or 0\n"
"  res[#res + 1] = retries[i] or 0\n"
"  res[#res + 1] = fields[i] or -1\n"
"end\n"
"return res\n";

static struct store_script script = { limiter_script, "", 0 };

uint64_t
limiter_bucket_ms(uint64_t window_ms)
{
	uint64_t b = window_ms / BUCKETS_PER_WINDOW;
	return b > 0 ? b : 1;
}

int
limiter_run(struct store *st, const struct limiter_check *checks, size_t nc,
    enum limiter_reserve reserve, const struct limiter_back *always, size_t na,
    const struct limiter_back *if_refused, size_t nr,
    bool *refused, size_t *stop, struct limiter_result *res, char *err, size_t errlen)
{
	size_t nkeys = nc + na + nr, nargs = 4 + nc * 5 + (na + nr) * 2;
	const char **keys = calloc(nkeys + 1, sizeof(*keys));
	size_t *keylens = calloc(nkeys + 1, sizeof(*keylens));
	const char **args = calloc(nargs, sizeof(*args));
	char (*num)[24] = calloc(nargs, sizeof(*num));
	redisReply *r = NULL;
	size_t k = 0, a = 0;
	int rc = -1;

	if (keys == NULL || keylens == NULL || args == NULL || num == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
#define ARG_U(v) (snprintf(num[a], sizeof(num[a]), "%" PRIu64, (uint64_t)(v)), \
	args[a] = num[a], a++)
#define ARG_I(v) (snprintf(num[a], sizeof(num[a]), "%" PRId64, (int64_t)(v)), \
	args[a] = num[a], a++)
	ARG_U(nc);
	ARG_U(reserve);
	ARG_U(na);
	ARG_U(nr);
	for (size_t i = 0; i < nc; i++) {
		keys[k] = checks[i].key;
		keylens[k++] = checks[i].keylen;
		ARG_U(checks[i].limit);
		ARG_U(checks[i].window_ms);
		ARG_U(limiter_bucket_ms(checks[i].window_ms));
		ARG_U(checks[i].amount);
		snprintf(num[a], sizeof(num[a]), "%c", checks[i].on_over);
		args[a] = num[a];
		a++;
	}
	for (size_t pass = 0; pass < 2; pass++) {
		const struct limiter_back *b = pass == 0 ? always : if_refused;
		for (size_t i = 0; i < (pass == 0 ? na : nr); i++) {
			keys[k] = b[i].key;
			keylens[k++] = b[i].keylen;
			ARG_I(b[i].field);
			ARG_U(b[i].amount);
		}
	}
#undef ARG_U
#undef ARG_I
	r = store_eval(st, &script, (int)nkeys, keys, keylens, (int)nargs, args, NULL,
	    err, errlen);
	if (r == NULL)
		goto out;
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, "rate-limit script: %s", r->str);
		goto out;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 + nc * 4) {
		snprintf(err, errlen, "rate-limit script: unexpected reply");
		goto out;
	}
	for (size_t i = 0; i < r->elements; i++) {
		if (r->element[i]->type != REDIS_REPLY_INTEGER) {
			snprintf(err, errlen, "rate-limit script: unexpected reply");
			goto out;
		}
	}
	*refused = r->element[0]->integer != 0;
	*stop = (size_t)r->element[1]->integer;
	for (size_t i = 0; i < nc; i++) {
		redisReply **e = r->element + 2 + i * 4;
		res[i].over = e[0]->integer != 0;
		res[i].count = (uint64_t)e[1]->integer;
		res[i].retry_ms = (uint64_t)e[2]->integer;
		res[i].field = e[3]->integer;
	}
	rc = 0;
out:
	store_reply_free(r);
	free(keys);
	free(keylens);
	free(args);
	free(num);
	return rc;
}
