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
 * KEYS: the nc checked keys (counters or live lists), then the na "always"
 * and nr "if refused" give-back keys.  ARGV: nc, reserve mode, na, nr, the
 * index of the first give-back argument; then per check either
 *   'c', limit, window ms, bucket ms, amount, on-over      (a count)
 *   'l', on-over, m, member 1 .. member m                   (a lookup)
 * and per give-back: field, amount.
 * Returns { refused, stop, then per check: over, count, retry ms, field };
 * over is -1 for a lookup whose key is not a sorted set.
 *
 * Numbers are Lua doubles: exact for integers below 2^53, far above any
 * millisecond timestamp or byte count here; "%.0f" writes them back as
 * integers (tostring would use an exponent).
 */
const char limiter_script[] =
"local t = redis.call('TIME')\n"
"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
"local nc, mode = tonumber(ARGV[1]), ARGV[2]\n"
"local na, nr, gb = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])\n"
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
/*
 * The first member of ARGV[a + 1 .. a + m] in the live list, with its
 * expiry (0: never); -1 when the key is not a sorted set.  A member whose
 * time has come counts as absent and is deleted, and so are at most 16
 * other expired members: the set does not grow without bound, and a call
 * never has a large deletion to make.
 */
"local function lookup(key, a, m)\n"
"  local ty = redis.call('TYPE', key)['ok']\n"
"  if ty ~= 'zset' then return (ty == 'none') and 0 or -1, 0 end\n"
"  local nows = now / 1000\n"
"  local old = redis.call('ZRANGEBYSCORE', key, '-inf', string.format('%.3f', nows), 'LIMIT', 0, 16)\n"
"  if #old > 0 then redis.call('ZREM', key, unpack(old)) end\n"
"  for j = 1, m do\n"
"    local score = redis.call('ZSCORE', key, ARGV[a + j])\n"
"    if score then\n"
"      local e = tonumber(score)\n"
"      if e == nil or e > nows then\n"
"        if e == nil or e >= 9e15 then e = 0 end\n"
"        return j, math.floor(e)\n"
"      end\n"
"      redis.call('ZREM', key, ARGV[a + j])\n"
"    end\n"
"  end\n"
"  return 0, 0\n"
"end\n"
"local function give_back(key, field, amount)\n"
"  local v = tonumber(redis.call('HGET', key, field) or '0')\n"
"  local n = math.min(v, amount)\n"
"  if n <= 0 then return end\n"
"  if v - n == 0 then redis.call('HDEL', key, field)\n"
"  else redis.call('HINCRBY', key, field, int(-n)) end\n"
"end\n"
"local res, over, counts, retries, at = { 0, nc }, {}, {}, {}, {}\n"
"local stop, refused, accepted = nc, false, false\n"
"local a = 6\n"
"for i = 1, nc do\n"
"  local on_over\n"
"  at[i], counts[i], retries[i], over[i] = a, 0, 0, false\n"
"  if ARGV[a] == 'l' then\n"
"    local m = tonumber(ARGV[a + 2])\n"
"    on_over = ARGV[a + 1]\n"
"    counts[i], retries[i] = lookup(KEYS[i], a + 2, m)\n"
"    over[i] = counts[i] > 0\n"
"    if counts[i] < 0 then over[i], counts[i] = -1, 0 end\n"
"    a = a + 3 + m\n"
"  else\n"
"    local limit, window, bucket = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])\n"
"    local amount = tonumber(ARGV[a + 4])\n"
"    local sum, live = usage(KEYS[i], window, bucket)\n"
"    on_over = ARGV[a + 5]\n"
"    counts[i] = sum\n"
"    if sum + amount > limit then\n"
"      over[i] = true\n"
"      if amount <= limit then retries[i] = retry(live, sum + amount - limit, window, bucket) end\n"
"    end\n"
"    a = a + 6\n"
"  end\n"
"  if over[i] == true and on_over ~= 's' then\n"
"    stop = i - 1\n"
"    refused = on_over == 'r'\n"
"    accepted = on_over == 'a'\n"
"    break\n"
"  end\n"
"end\n"
"local fields = {}\n"
"if refused then\n"
"  for j = 1, nr do\n"
"    local g = gb + na * 2 + (j - 1) * 2\n"
"    give_back(KEYS[nc + na + j], ARGV[g], tonumber(ARGV[g + 1]))\n"
"  end\n"
"elseif mode == '1' or (mode == '2' and accepted) then\n"
"  for i = 1, stop do\n"
"    local c = at[i]\n"
"    if over[i] == false and ARGV[c] == 'c' then\n"
"      local window, bucket, amount = tonumber(ARGV[c + 2]), tonumber(ARGV[c + 3]), tonumber(ARGV[c + 4])\n"
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
"  local g = gb + (j - 1) * 2\n"
"  give_back(KEYS[nc + j], ARGV[g], tonumber(ARGV[g + 1]))\n"
"end\n"
"res[1] = refused and 1 or 0\n"
"res[2] = stop\n"
"for i = 1, nc do\n"
"  res[#res + 1] = (over[i] == -1) and -1 or (over[i] and 1 or 0)\n"
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
limiter_decode(const redisReply *r, size_t nc, bool *refused, size_t *stop,
    struct limiter_result *res, char *err, size_t errlen)
{
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, "policy script: %.*s", (int)(r->len < 400 ? r->len : 400),
		    r->str);
		return -1;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 + nc * 4) {
		snprintf(err, errlen, "policy script: unexpected reply");
		return -1;
	}
	for (size_t i = 0; i < r->elements; i++) {
		if (r->element[i]->type != REDIS_REPLY_INTEGER) {
			snprintf(err, errlen, "policy script: unexpected reply");
			return -1;
		}
	}
	if (r->element[1]->integer < 0 || (size_t)r->element[1]->integer > nc) {
		snprintf(err, errlen, "policy script: unexpected reply");
		return -1;
	}
	*refused = r->element[0]->integer != 0;
	*stop = (size_t)r->element[1]->integer;
	for (size_t i = 0; i < nc; i++) {
		redisReply **e = r->element + 2 + i * 4;
		res[i].failed = e[0]->integer < 0;
		res[i].over = e[0]->integer > 0;
		res[i].count = e[1]->integer > 0 ? (uint64_t)e[1]->integer : 0;
		res[i].retry_ms = e[2]->integer > 0 ? (uint64_t)e[2]->integer : 0;
		res[i].field = e[3]->integer;
	}
	return 0;
}

int
limiter_run(struct store *st, const struct limiter_check *checks, size_t nc,
    enum limiter_reserve reserve, const struct limiter_back *always, size_t na,
    const struct limiter_back *if_refused, size_t nr,
    bool *refused, size_t *stop, struct limiter_result *res, char *err, size_t errlen)
{
	size_t nkeys = nc + na + nr, nargs = 5 + (na + nr) * 2, first_back;
	const char **keys, **args;
	size_t *keylens, *arglens;
	char (*num)[24];
	void *block;
	redisReply *r = NULL;
	size_t k = 0, a = 0, u = 0;
	int rc = -1;

	for (size_t i = 0; i < nc; i++)
		nargs += checks[i].nmembers > 0 ? 3 + checks[i].nmembers : 6;
	first_back = nargs - (na + nr) * 2 + 1;       /* Lua counts from 1 */
	/* One allocation: key and argument pointers, their lengths, then the
	 * text of the numbers (at most one per argument). */
	block = calloc(1, (nkeys + 1 + nargs) * (sizeof(char *) + sizeof(size_t)) +
	    nargs * sizeof(*num));
	if (block == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	keys = block;
	args = keys + nkeys + 1;
	keylens = (size_t *)(void *)(args + nargs);
	arglens = keylens + nkeys + 1;
	num = (char (*)[24])(void *)(arglens + nargs);
	/* Numbers and one-letter words go through num[]; members as they are. */
#define ARG_F(fmt, v) (snprintf(num[u], sizeof(num[u]), fmt, v), \
	args[a] = num[u], arglens[a++] = strlen(num[u++]))
#define ARG_U(v) ARG_F("%" PRIu64, (uint64_t)(v))
#define ARG_I(v) ARG_F("%" PRId64, (int64_t)(v))
#define ARG_C(c) ARG_F("%c", c)
	ARG_U(nc);
	ARG_U(reserve);
	ARG_U(na);
	ARG_U(nr);
	ARG_U(first_back);
	for (size_t i = 0; i < nc; i++) {
		const struct limiter_check *c = &checks[i];

		keys[k] = c->key;
		keylens[k++] = c->keylen;
		if (c->nmembers > 0) {
			ARG_C('l');
			ARG_C(c->on_over);
			ARG_U(c->nmembers);
			for (size_t j = 0; j < c->nmembers; j++) {
				args[a] = c->members[j];
				arglens[a++] = c->memberlens[j];
			}
			continue;
		}
		ARG_C('c');
		ARG_U(c->limit);
		ARG_U(c->window_ms);
		ARG_U(limiter_bucket_ms(c->window_ms));
		ARG_U(c->amount);
		ARG_C(c->on_over);
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
#undef ARG_F
#undef ARG_U
#undef ARG_I
#undef ARG_C
	r = store_eval(st, &script, (int)nkeys, keys, keylens, (int)nargs, args, arglens,
	    err, errlen);
	if (r == NULL)
		goto out;
	if (limiter_decode(r, nc, refused, stop, res, err, errlen) != 0)
		goto out;
	rc = 0;
out:
	store_reply_free(r);
	free(block);
	return rc;
}
