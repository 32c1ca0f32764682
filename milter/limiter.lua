-- SPDX-License-Identifier: BSD-2-Clause
-- limiter.lua - the one script call per SMTP stage (milter/limiter.h).
--
-- Compiled into the daemon at build time (limiter-script.c); it can be run
-- by hand with redis-cli --eval.
--
-- KEYS: the nc checked keys (counters or live lists), then the na "always"
-- and nr "if refused" give-back keys.
-- ARGV: deadline, nc, reserve mode, na, nr, the index of the first
-- give-back argument; then per check either
--   'c', limit, window ms, bucket ms, amount, on-over        (a count)
--   'l', on-over, on-fail, m, member 1 .. member m           (a lookup)
-- and per give-back: field, amount.
-- Returns { refused, stop, then per check: over, count, retry ms, field };
-- over is -1 for a lookup whose key is not a sorted set, -2 for a check an
-- accept covered (not examined).  stop is the index of the refusing check,
-- else of the first accepting one, else nc.
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

-- Units in the buckets that reach into the last window; drop older ones.
local function usage(key, window, bucket)
  local oldest = math.floor((now - window) / bucket) * bucket
  local all = redis.call('HGETALL', key)
  local sum, live = 0, {}
  for i = 1, #all, 2 do
    local f, v = tonumber(all[i]), tonumber(all[i + 1])
    if f == nil or v == nil or f < oldest then
      redis.call('HDEL', key, all[i])
    else
      sum = sum + v
      live[#live + 1] = { f, v }
    end
  end
  return sum, live
end

-- Time until count + amount fits: the oldest buckets leave the window.
local function retry(live, excess, window, bucket)
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
  local ty = redis.call('TYPE', key)['ok']
  if ty ~= 'zset' then return (ty == 'none') and 0 or -1, 0 end
  local nows = now / 1000
  local old = redis.call('ZRANGEBYSCORE', key, '-inf', string.format('%.3f', nows), 'LIMIT', 0, 16)
  if #old > 0 then redis.call('ZREM', key, unpack(old)) end
  for j = 1, m do
    local score = redis.call('ZSCORE', key, ARGV[a + j])
    if score then
      local e = tonumber(score)
      if e == nil or e > nows then
        if e == nil or e >= 9e15 then e = 0 end
        return j, math.floor(e)
      end
      redis.call('ZREM', key, ARGV[a + j])
    end
  end
  return 0, 0
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
local res, over, counts, retries, at = { 0, nc }, {}, {}, {}, {}
local stop, refused, accepted = nc, false, false
local a = 7
for i = 1, nc do
  local lookup_check = ARGV[a] == 'l'
  local on_over = lookup_check and ARGV[a + 1] or ARGV[a + 5]
  local act, outlives = string.sub(on_over, 1, 1), string.sub(on_over, 2, 2) == '+'
  local failed_stops, next_a = false, a + 6
  at[i], counts[i], retries[i], over[i] = a, 0, 0, false
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
    local amount = tonumber(ARGV[a + 4])
    local sum, live = usage(KEYS[i], window, bucket)
    counts[i] = sum
    if sum + amount > limit then
      over[i] = true
      if amount <= limit then retries[i] = retry(live, sum + amount - limit, window, bucket) end
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
if refused then
  for j = 1, nr do
    local g = gb + na * 2 + (j - 1) * 2
    give_back(KEYS[nc + na + j], ARGV[g], tonumber(ARGV[g + 1]))
  end
else
  if mode == '1' or (mode == '2' and accepted) then
    for i = 1, nc do
      local c = at[i]
      if over[i] == false and ARGV[c] == 'c' then
        local window, bucket, amount = tonumber(ARGV[c + 2]), tonumber(ARGV[c + 3]), tonumber(ARGV[c + 4])
        local f = math.floor(now / bucket) * bucket
        if amount > 0 then
          redis.call('HINCRBY', KEYS[i], int(f), int(amount))
          redis.call('PEXPIRE', KEYS[i], int(window + bucket + 1))
        elseif redis.call('EXISTS', KEYS[i]) == 1 then
          redis.call('PEXPIRE', KEYS[i], int(window + bucket + 1))
        end
        fields[i] = f
      end
    end
  end
  for j = 1, na do
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
end
return res
