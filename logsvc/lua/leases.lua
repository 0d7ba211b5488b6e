#!lua name=dmulog_leases
--[[
Node leases: who is alive, and which incarnation of each node that is.

Every key here carries one hash tag, {leases}, so the whole table of nodes is
one Redis Cluster slot (a log's keys are in the log's slot: the two never meet
in one call). Time is Redis's own clock (TIME), in milliseconds, so every
logsvc replica judges expiry by the same clock.

KEYS, in this order, for every function:

  nodes    hash    node -> lease record (cjson): boot, epoch, state, expires,
                   renewed, since
  expiry   zset    node -> expiry time of its live lease
  pending  zset    "<node>|<epoch>" -> time from which a reaper may claim it:
                   incarnations that expired and whose logs are not all
                   handed over yet (a reaper that dies mid-way is replaced
                   when its claim times out)
  counter  string  the last epoch given out: epochs only grow, across nodes
  reaped   string  when a reaper last looked for expired leases
  logs     set     (leases_join and leases_done only; else any key of the
                   slot) UUIDs of the logs the node has joined: where its
                   instances can be, so an expiry visits those logs only

A lease record's state: live (renewed in time), expiring (expired, its logs
being handed over), dead (handed over). An incarnation is fenced from the
instant its lease expires: it can be renewed no more, it may join no log, and
expire_node (lua/dmulog.lua) refuses it in each log it is handed over in.

A lease never expires because the lease table itself was out of reach.
Every logsvc replica looks for expired leases at least once a second; when no
one did for OUTAGE_MS (Redis was down or every logsvc was), nobody could renew
either, so the next look first gives every live lease its full time to live
again (and renewals meanwhile are taken as in time). Otherwise a Redis restart
after a longer outage would expire every node at once.

Errors: EINVAL (bad argument), ENOENT (no such live lease: the caller must
take a new one).
--]]

local function err(word, msg)
  return redis.error_reply(word .. ' ' .. msg)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local OUTAGE_MS = 3000

local function named(K)
  return {nodes = K[1], expiry = K[2], pending = K[3], counter = K[4], reaped = K[5], logs = K[6]}
end

-- Whether no reaper looked for OUTAGE_MS: the table was out of reach for everyone.
local function after_outage(k, now)
  return now - (tonumber(redis.call('GET', k.reaped)) or 0) > OUTAGE_MS
end

local function load(k, node)
  local raw = redis.call('HGET', k.nodes, node)
  return raw and cjson.decode(raw) or nil
end

local function save(k, node, lease)
  redis.call('HSET', k.nodes, node, cjson.encode(lease))
end

local function positive(raw, what)
  local n = tonumber(raw)
  if not n or n <= 0 or n ~= math.floor(n) then return nil, err('EINVAL', what .. ' must be a positive integer') end
  return n, nil
end

-- Whether `lease` is live at `now` (an expired one not yet claimed counts as
-- expired: the reaper's claim only notices what already happened).
local function live(lease, now, k)
  if not (lease and lease.state == 'live') then return false end
  return lease.expires >= now or (k ~= nil and after_outage(k, now))
end

-- The incarnation of `lease` is over: queue it for handing over.
local function retire(k, node, lease, now)
  redis.call('ZREM', k.expiry, node)
  redis.call('ZADD', k.pending, now, node .. '|' .. lease.epoch)
  lease.state = 'expiring'
end

-- ARGV: node, boot, ttl (ms). Returns {epoch, ttl, 1 if a new incarnation}.
local function acquire(K, A)
  local k, node, boot = named(K), A[1], A[2]
  local ttl, e = positive(A[3], 'ttl')
  if e then return e end
  local now, lease = now_ms(), load(k, A[1])
  if live(lease, now, k) and lease.boot == boot then
    lease.expires, lease.renewed = now + ttl, now
    save(k, node, lease)
    redis.call('ZADD', k.expiry, lease.expires, node)
    return {lease.epoch, ttl, 0}
  end
  if lease and lease.state == 'live' then retire(k, node, lease, now) end
  local epoch = redis.call('INCR', k.counter)
  save(k, node, {boot = boot, epoch = epoch, state = 'live', expires = now + ttl, renewed = now, since = now})
  redis.call('ZADD', k.expiry, now + ttl, node)
  return {epoch, ttl, 1}
end

-- ARGV: node, boot, epoch, ttl (ms). Returns {epoch, ttl}, or ENOENT when that
-- incarnation's lease is not live any more.
local function renew(K, A)
  local k, node, boot = named(K), A[1], A[2]
  local epoch, e = positive(A[3], 'epoch')
  if e then return e end
  local ttl
  ttl, e = positive(A[4], 'ttl')
  if e then return e end
  local now, lease = now_ms(), load(k, node)
  if not (lease and lease.epoch == epoch and lease.boot == boot) then
    return err('ENOENT', 'lease lost: node ' .. node .. ' epoch ' .. epoch .. ' is not its current incarnation')
  end
  if not live(lease, now, k) then
    return err('ENOENT', 'lease lost: node ' .. node .. ' epoch ' .. epoch .. ' expired ' ..
      (now - lease.expires) .. ' ms ago')
  end
  lease.expires, lease.renewed = now + ttl, now
  save(k, node, lease)
  redis.call('ZADD', k.expiry, lease.expires, node)
  return {epoch, ttl}
end

-- ARGV: node, boot, epoch, uuid. Records that the incarnation may have
-- instances in the log (before its CTR), or ENOENT if it is fenced. One call,
-- so a reaper that claims the incarnation later finds the log in `logs`.
local function join(K, A)
  local k, node, boot, uuid = named(K), A[1], A[2], A[4]
  local epoch, e = positive(A[3], 'epoch')
  if e then return e end
  local lease = load(k, node)
  if not (lease and lease.epoch == epoch and lease.boot == boot and live(lease, now_ms(), k)) then
    return err('ENOENT', 'node ' .. node .. ' epoch ' .. epoch .. ' is fenced (its lease expired or was ' ..
      'replaced): it must take a new lease')
  end
  redis.call('SADD', k.logs, uuid)
  return 0
end

-- ARGV: limit, claim (ms), ttl (ms). Retires every lease that expired, then
-- claims up to `limit` incarnations to hand over, each for `claim` ms. Returns
-- a flat list {node, epoch, ...}. After an outage it only gives every live
-- lease `ttl` again.
local function claim(K, A)
  local k = named(K)
  local limit, e = positive(A[1], 'limit')
  if e then return e end
  local hold, ttl
  hold, e = positive(A[2], 'claim')
  if e then return e end
  ttl, e = positive(A[3], 'ttl')
  if e then return e end
  local now = now_ms()
  local outage = after_outage(k, now)
  redis.call('SET', k.reaped, now)
  if outage then
    for _, node in ipairs(redis.call('ZRANGE', k.expiry, 0, -1)) do
      local lease = load(k, node)
      if lease and lease.state == 'live' and lease.expires < now + ttl then
        lease.expires = now + ttl
        save(k, node, lease)
        redis.call('ZADD', k.expiry, lease.expires, node)
      end
    end
    return {}
  end
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', k.expiry, '-inf', now - 1, 'LIMIT', 0, limit)) do
    local lease = load(k, node)
    if lease and lease.state == 'live' then
      retire(k, node, lease, now)
      save(k, node, lease)
    else
      redis.call('ZREM', k.expiry, node)
    end
  end
  local out = {}
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', k.pending, '-inf', now, 'LIMIT', 0, limit)) do
    redis.call('ZADD', k.pending, now + hold, member)
    local node, epoch = string.match(member, '^(.*)|(%d+)$')
    out[#out + 1], out[#out + 2] = node, tonumber(epoch)
  end
  return out
end

-- ARGV: node, epoch. Every log of that incarnation was handed over. If it is
-- still the node's current incarnation, the node is dead and its log index
-- goes (a later incarnation joins its logs again; one that already exists
-- keeps the index).
local function done(K, A)
  local k, node = named(K), A[1]
  local epoch, e = positive(A[2], 'epoch')
  if e then return e end
  redis.call('ZREM', k.pending, node .. '|' .. epoch)
  local lease = load(k, node)
  if lease and lease.epoch == epoch and lease.state == 'expiring' then
    lease.state = 'dead'
    save(k, node, lease)
    redis.call('DEL', k.logs)
  end
  return 0
end

-- Every lease record, the pending incarnations and Redis's time:
-- {flat nodes hash, flat pending zset without scores, now}.
local function list(K)
  local k = named(K)
  return {redis.call('HGETALL', k.nodes), redis.call('ZRANGE', k.pending, 0, -1), now_ms()}
end

redis.register_function{function_name = 'dmulog_leases_acquire', callback = acquire}
redis.register_function{function_name = 'dmulog_leases_renew', callback = renew}
redis.register_function{function_name = 'dmulog_leases_join', callback = join}
redis.register_function{function_name = 'dmulog_leases_claim', callback = claim}
redis.register_function{function_name = 'dmulog_leases_done', callback = done}
redis.register_function{function_name = 'dmulog_leases_list', callback = list, flags = {'no-writes'}}
