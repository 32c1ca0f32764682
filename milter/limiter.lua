-- SPDX-License-Identifier: BSD-2-Clause
-- limiter.lua - the one script call per SMTP stage (milter/limiter.h).
--
-- Compiled into the daemon at build time (limiter-script.c); it can be run
-- by hand with redis-cli --eval.
--
-- KEYS: the nc checked keys (counters or live lists), then the na "always"
-- and nr "if refused" give-back keys, then the counts' override and top
-- keys.
-- ARGV: deadline, nc, reserve mode, na, nr, the index of the first
-- give-back argument; then per check either
--   'c', limit, window ms, bucket ms, amount, on-over, o, t, k   (a count)
--   'l', on-over, on-fail, m, member 1 .. member m               (a lookup)
-- and per give-back: field, amount.
-- For a count, o is the index in KEYS of its policy's override hash and t
-- of its refusal record (t + 1: the record's counts), 0 for none; k is where
-- the policy's own key starts in the counted key (the field or member
-- that stands for it there).
-- Reserve mode: 0 reserve nothing, 1 reserve unless refused, 2 only if an
-- accept stopped the call, 3 peek: change nothing at all (the ctl tool's
-- show and explain), report what mode 1 would have reserved.
-- Returns { refused, stop, then per check: over, count, retry ms, field,
-- limit }; over is -1 for a lookup whose key is not a sorted set, -2 for a
-- check an accept covered (not examined); limit is the one in force (an
-- override's, if any; 0 for lookups).  stop is the index of the refusing
-- check, else of the first accepting one, else nc.
--
-- deadline is when the caller stops waiting, in Redis's clock (ms).  A call
-- with checks that Redis only reaches after it (Redis was stalled) changes
-- nothing and fails: the caller has already followed on_redis_error, so
-- whatever it reserved would never be confirmed nor given back.  A call of
-- give-backs alone is still carried out: returning units is always right.
--
-- Numbers are Lua doubles: exact for integers below 2^53, far above any
-- millisecond timestamp or byte count here; "%.0f" writes them back as
-- integers (tostring would use an exponent).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[1])
local nc, mode = tonumber(ARGV[2]), ARGV[3]
local na, nr, gb = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if nc > 0 and deadline ~= nil and now > deadline then
  return redis.error_reply('LATE the call reached Redis ' .. (now - deadline) ..
    ' ms after its deadline; nothing was changed')
end
local function int(x) return string.format('%.0f', x) end

-- The error of a redis.pcall of command name, raised again unless it is
-- WRONGTYPE (a key of another type, made by hand: the caller goes on
-- without it).  An ACL that denies the command must fail the call, not
-- pass for a wrong type; "[NAME]" names the command in the error.
local function wrongtype(r, name)
  if type(r) ~= 'table' or not r.err then return false end
  if string.find(r.err, 'WRONGTYPE', 1, true) then return true end
  error({ err = r.err .. ' [' .. name .. ']' })
end
local writes = mode ~= '3'
local zmscore = redis.REDIS_VERSION_NUM ~= nil

-- Units in the buckets that reach into the last window; drop older ones.
-- Also returns the key's fields and values as HGETALL gave them, for retry.
local function usage(key, window, bucket)
  local oldest = math.floor((now - window) / bucket) * bucket
  local all = redis.call('HGETALL', key)
  local sum = 0
  for i = 1, #all, 2 do
    local f, v = tonumber(all[i]), tonumber(all[i + 1])
    if f == nil or v == nil or f < oldest then
      if writes then redis.call('HDEL', key, all[i]) end
    else
      sum = sum + v
    end
  end
  return sum, all, oldest
end

-- Time until count + amount fits: the oldest buckets leave the window.
-- Only a refusal needs it, so only then are the buckets sorted.
local function retry(all, oldest, excess, window, bucket)
  local live = {}
  for i = 1, #all, 2 do
    local f, v = tonumber(all[i]), tonumber(all[i + 1])
    if f ~= nil and v ~= nil and f >= oldest then live[#live + 1] = { f, v } end
  end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  local freed = 0
  for _, fv in ipairs(live) do
    freed = freed + fv[2]
    if freed >= excess then
      local at = fv[1] + bucket + window - now
      if at < 1 then at = 1 end
      return at
    end
  end
  return 0
end

-- The first member of ARGV[a + 1 .. a + m] in the live list, with its
-- expiry (0: never); -1 when the key is not a sorted set.  A member whose
-- time has come counts as absent and is deleted, and so are at most 16
-- other expired members: the set does not grow without bound, and a call
-- never has a large deletion to make.
local function lookup(key, a, m)
  local nows = now / 1000
  local scores
  -- A key of another type fails the first command on it (no TYPE first).
  if writes then
    local old = redis.pcall('ZRANGEBYSCORE', key, '-inf', string.format('%.3f', nows), 'LIMIT', 0, 16)
    if wrongtype(old, 'ZRANGEBYSCORE') then return -1, 0 end
    if #old > 0 then redis.call('ZREM', key, unpack(old)) end
  end
  -- Every member's score in one command where Redis has ZMSCORE (6.2; a
  -- Redis that says its version to scripts is 7.0 or later).
  if zmscore then
    scores = redis.pcall('ZMSCORE', key, unpack(ARGV, a + 1, a + m))
    if wrongtype(scores, 'ZMSCORE') then return -1, 0 end
  end
  for j = 1, m do
    local score
    if zmscore then
      score = scores[j]
    else
      score = redis.pcall('ZSCORE', key, ARGV[a + j])
      if wrongtype(score, 'ZSCORE') then return -1, 0 end
    end
    if score then
      local e = tonumber(score)
      if e == nil or e > nows then
        if e == nil or e >= 9e15 then e = 0 end
        return j, math.floor(e)
      end
      if writes then redis.call('ZREM', key, ARGV[a + j]) end
    end
  end
  return 0, 0
end

-- The limit in force for field (the policy's own key) of a count: an
-- override set with policy-milter-ctl, "<limit> <expiry ms>" (0: never) in
-- the policy's override hash, else the configured one.  An expired override
-- counts as absent and is deleted.
local function limit_of(ovk, field, limit)
  -- pcall: an override key of another type (a mistake by hand) must not
  -- fail the whole call; the configured limit applies.
  local v = redis.pcall('HGET', ovk, field)
  if wrongtype(v, 'HGET') or type(v) ~= 'string' then return limit end
  local l, e = string.match(v, '^(%d+) (%d+)$')
  -- More than 15 digits: beyond what a double and Redis's integers carry.
  if l == nil or #l > 15 or #e > 15 then return limit end
  e = tonumber(e)
  if e > 0 and e <= now then
    if writes then redis.call('HDEL', ovk, field) end
    return limit
  end
  return tonumber(l)
end

-- A refusal of member by a count, for policy-milter-ctl top: the sorted set
-- topk (score: time of the last refusal, ms) and the hash topn (refusals
-- since the member's last pause of a whole window), both at most TOP
-- members (the least recent go) and gone a window after the last refusal.
local TOP = 256
local function record(topk, topn, member, window)
  -- Keys of another type (a mistake by hand) are left alone: the record
  -- is for the operator, the refusal stands without it.
  local tk, tn = redis.call('TYPE', topk)['ok'], redis.call('TYPE', topn)['ok']
  if (tk ~= 'zset' and tk ~= 'none') or (tn ~= 'hash' and tn ~= 'none') then return end
  local last = tonumber(redis.call('ZSCORE', topk, member))
  if last ~= nil and last >= now - window then
    redis.call('HINCRBY', topn, member, 1)
  else
    redis.call('HSET', topn, member, 1)
  end
  redis.call('ZADD', topk, int(now), member)
  local n = redis.call('ZCARD', topk)
  if n > TOP then
    local old = redis.call('ZRANGE', topk, 0, n - TOP - 1)
    redis.call('ZREMRANGEBYRANK', topk, 0, n - TOP - 1)
    redis.call('HDEL', topn, unpack(old))
  end
  redis.call('PEXPIRE', topk, int(window))
  redis.call('PEXPIRE', topn, int(window))
end

local function give_back(key, field, amount)
  local v = tonumber(redis.call('HGET', key, field) or '0')
  local n = math.min(v, amount)
  if n <= 0 then return end
  if v - n == 0 then redis.call('HDEL', key, field)
  else redis.call('HINCRBY', key, field, int(-n)) end
end

-- 1. The checks, in order.  on-over is 'r' (refuse), 'a' (accept) or 's'
-- (soft: reported, passed over), followed by '+' for a check that an accept
-- does not cover (a message-level limit at RCPT, where an accept covers
-- only its recipient).  The first refusal ends the call: over its limit (or
-- found in its list) with 'r', or a lookup that failed with on-fail 'r'
-- (its policy tempfails then).  An accept ends it for every check that it
-- covers: those are not examined (over -2); the others go on.
local res, over, counts, retries, at, limits = { 0, nc }, {}, {}, {}, {}, {}
local stop, refused, accepted = nc, false, false
local a = 7
for i = 1, nc do
  local lookup_check = ARGV[a] == 'l'
  local on_over = lookup_check and ARGV[a + 1] or ARGV[a + 5]
  local act, outlives = string.sub(on_over, 1, 1), string.sub(on_over, 2, 2) == '+'
  local failed_stops, next_a = false, a + 9
  at[i], counts[i], retries[i], over[i], limits[i] = a, 0, 0, false, 0
  if lookup_check then next_a = a + 4 + tonumber(ARGV[a + 3]) end
  if accepted and not outlives then
    over[i] = -2
  elseif lookup_check then
    counts[i], retries[i] = lookup(KEYS[i], a + 3, tonumber(ARGV[a + 3]))
    over[i] = counts[i] > 0
    if counts[i] < 0 then
      over[i], counts[i] = -1, 0
      failed_stops = ARGV[a + 2] == 'r'
    end
  else
    local limit, window, bucket = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local amount, ovk, k = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 6]), tonumber(ARGV[a + 8])
    if ovk > 0 then limit = limit_of(KEYS[ovk], string.sub(KEYS[i], k + 1), limit) end
    local sum, all, oldest = usage(KEYS[i], window, bucket)
    counts[i], limits[i] = sum, limit
    if sum + amount > limit then
      over[i] = true
      if amount <= limit then
        retries[i] = retry(all, oldest, sum + amount - limit, window, bucket)
      end
    end
  end
  if over[i] == true and act == 'r' and not lookup_check and writes then
    local t = tonumber(ARGV[a + 7])
    if t > 0 then
      record(KEYS[t], KEYS[t + 1], string.sub(KEYS[i], tonumber(ARGV[a + 8]) + 1),
        tonumber(ARGV[a + 2]))
    end
  end
  a = next_a
  if failed_stops or (over[i] == true and act == 'r') then
    stop, refused = i - 1, true
    break
  end
  if over[i] == true and act == 'a' and not accepted then
    stop, accepted = i - 1, true
  end
end

-- 2. Refused: the "if refused" give-backs and nothing else (they return
-- every reservation of the message in full, so the "always" ones, parts of
-- the same reservations, must not be returned a second time).  Otherwise the
-- reservations the mode asks for, then 3. the "always" give-backs.
local fields = {}
if refused and writes then
  for j = 1, nr do
    local g = gb + na * 2 + (j - 1) * 2
    give_back(KEYS[nc + na + j], ARGV[g], tonumber(ARGV[g + 1]))
  end
elseif not refused then
  if mode == '1' or mode == '3' or (mode == '2' and accepted) then
    for i = 1, nc do
      local c = at[i]
      if over[i] == false and ARGV[c] == 'c' then
        local window, bucket, amount = tonumber(ARGV[c + 2]), tonumber(ARGV[c + 3]), tonumber(ARGV[c + 4])
        local f = math.floor(now / bucket) * bucket
        if not writes then
          -- peek: what mode 1 would have reserved, nothing written
        elseif amount > 0 then
          redis.call('HINCRBY', KEYS[i], int(f), int(amount))
          redis.call('PEXPIRE', KEYS[i], int(window + bucket + 1))
        elseif redis.call('EXISTS', KEYS[i]) == 1 then
          redis.call('PEXPIRE', KEYS[i], int(window + bucket + 1))
        end
        fields[i] = f
      end
    end
  end
  for j = 1, writes and na or 0 do
    local g = gb + (j - 1) * 2
    give_back(KEYS[nc + j], ARGV[g], tonumber(ARGV[g + 1]))
  end
end

res[1] = refused and 1 or 0
res[2] = stop
for i = 1, nc do
  local o = over[i]
  res[#res + 1] = (o == -1 or o == -2) and o or (o and 1 or 0)
  res[#res + 1] = counts[i] or 0
  res[#res + 1] = retries[i] or 0
  res[#res + 1] = fields[i] or -1
  res[#res + 1] = limits[i] or 0
end
return res
