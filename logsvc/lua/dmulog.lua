#!lua name=dmulog_v1
--[[
The dmulog dirty-log state machine: one Redis Function per kernel request.

KEYS, in this order; they all carry the log's hash tag, so a log lives in
one Redis Cluster slot and every call stays atomic on one shard:

  log        hash    geometry, type, counters, recovery assignment, jobs
  inst       hash    instance id "<node>/<luid>" -> instance record (cjson)
  sync       string  bitmap, bit r = 1: region r in sync
  dirty      string  bitmap, bit r = 1: region r dirty (the persisted "not clean")
  marks      hash    region -> "|node|node|": which nodes have it marked
  prio       list    regions writers wait for, recovered first
  nodemarks  zset    "<node>|<region>", score 0: the same marks by node
  scratch    string  work space of a bulk job; absent between jobs

Arguments of the kernel-request functions (dmulog_v3_<name>): ARGV[1] node
name, ARGV[2] its boot id, ARGV[3] luid (a decimal string: a kernel pointer
does not fit a Lua double), ARGV[4] the request's deadline on the Redis
clock in microseconds since the epoch (0: none), ARGV[5] the node's lease
epoch (0: a node without a lease), ARGV[6] the generation of the log this
node was last answered (0: none known, see Generations), then the request's
own arguments; CTR's own argument is one JSON object (new_instance names its
fields). A dmulog_v4_ function answers {reply, generation}. The same
functions are also registered as dmulog_v3_<name> (no ARGV[6], the bare
reply) for services that predate generations, as dmulog_v2_<name> with the
arguments of services that predate leases (no ARGV[5] either) and as
dmulog_v1_<name> with those of services that predate deadlines (no ARGV[4]
either, CTR's fields positional), so older replicas keep working during a
rolling upgrade.

Generations. Field gen:<node> of the log counts the writing requests of that
node that succeeded here, and every dmulog_v4_ reply carries it; the node's
bridge remembers the largest it was answered, per log, and sends it back with
each request. A Redis failover can promote a replica that lacks the last
writes (asynchronous replication); the node whose acknowledged writes went
finds the log's generation below the one it sends. Then nothing is answered
from that state: the call refuses (ELOST), logsvc calls `lost`, which turns
every region of the log out of sync and dirty and ends the latches, and asks
again. A CTR that finds no log at all while the node remembers one creates
it that way too, whatever its sync option says. Only the node that lost
writes can tell: another node's lost marks show when that node next asks
(docs/durability.md says what guarantees more: durable replicas).

Incarnations. A node's lease (lua/leases.lua, its own slot) gives each of its
incarnations an epoch from one counter, so a later incarnation always has a
larger one; its instances carry it. Order between incarnations is decided
here by epoch, never by arrival: an instance is never replaced by an older
incarnation's CTR, and when a node's lease expires, expire_node removes that
incarnation's instances, turns every region it had marked out of sync, and
records a fence (field fence:<node> of the log) that refuses the fenced
epoch and every older one from then on.

Errors start with a fixed word that logsvc/errors.py maps to a gRPC status:
EINVAL (bad argument), ENOENT (unknown instance), EEXIST (same instance,
other arguments), EBUSY (conflicts with the log's state), ETIMEDOUT (the
request's deadline passed before it ran: nothing was done), ESTEP (the log
has bulk work pending: call dmulog_v2_step until it answers 0, then ask
again; nothing was done except queueing that work), ELOST (the log lost
writes the caller was answered: call lost, then ask again; nothing was done).

Fail-safe rule: when in doubt, dirty. Bits of single regions change only
through the four helpers set_dirty, set_out_of_sync, set_clean_if_safe and
set_in_sync (the first three take a list of regions and make one command of
it); the "clean" and "in sync" directions are the guarded ones.

Bounded work. Redis runs one call at a time, so a call that worked through a
whole 2^28-region log would stall every other log for as long. No call here
writes a bitmap-sized payload (SET/SETRANGE of built strings, GETRANGE then
SET): bulk bitmap changes are C passes (SETBIT to size a zeroed string, BITOP,
range BITCOUNT), whose AOF entry is the command alone. And bulk work is a job,
kept in the log hash (field `jobs`) and done in steps of at most BUDGET bytes
of bitmap or STEP_REGIONS regions per call. Every request of a log first
finishes the log's jobs, as far as its own call's budget goes, and answers
ESTEP while any is left: so no answer ever comes from a state in the middle
of a job, and a job interrupted by any crash is continued by the next call.
Every place that writes a bitmap in bulk:

  fill      a bitmap all 0 or all 1            CTR of a new log, a master resume
                                               that starts the bits over
  invert    sync := NOT dirty, recount          master resume of a persistent log
  resize    dirty bits of grown regions := 1,   master resume of a persistent log
            of dropped regions := 0             whose table changed size
  unmark    drop one node's marks, optionally   a node's new boot (its old one
            setting their regions out of sync   crashed), a node's last DTR
  reindex   build nodemarks from marks          logs stored before nodemarks
  UNLINK    marks, prio, nodemarks              master resume; the log itself at
                                               its last DTR (freed in the background)
--]]

local SCHEMA = '2'
-- Bytes of bitmap one call may pass over (at least one whole-bitmap pass is
-- always allowed, so a 2^28-region log's 32 MiB bitmap takes one pass a call:
-- about 20 ms where this was written).
local BUDGET = 16 * 1024 * 1024
-- Regions of per-region work (a node's marks) one call may do.
local STEP_REGIONS = 1024  -- at most BATCH
-- A log whose bitmaps or marks are larger than this is read in ranges
-- (ReadLogState), never in one call.
local STATE_INLINE_BYTES = 1024 * 1024
local STATE_INLINE_MARKS = 65536
local NO_INSTANCE = {}

local function err(word, msg)
  return redis.error_reply(word .. ' ' .. msg)
end

local function bytes_of(nbits)
  return math.floor((nbits + 7) / 8)
end

-- Per-call state --------------------------------------------------------------

-- What the current call may still spend; reset by every entry point.
local budget = {bytes = BUDGET, regions = STEP_REGIONS, fresh = true}

-- `unbounded`: services that predate jobs cannot drive them (they know no
-- ESTEP), so a call under a v1 name finishes whatever work it finds, as every
-- call did then.
local function reset_budget(unbounded)
  if unbounded then
    budget.bytes, budget.regions, budget.fresh = math.huge, 2 ^ 40, true
  else
    budget.bytes, budget.regions, budget.fresh = BUDGET, STEP_REGIONS, true
  end
end

-- Whether a pass over `nbytes` bytes fits this call (the first pass always
-- does, so a bitmap larger than the budget still gets one pass a call);
-- takes it if so.
local function spend(nbytes)
  if nbytes == 0 then return true end
  if budget.fresh or nbytes <= budget.bytes then
    budget.bytes, budget.fresh = budget.bytes - nbytes, false
    return true
  end
  return false
end

-- Bitmaps ------------------------------------------------------------------------

-- Bits from nbits to the end of their last byte: kept 0 so that reads stay exact.
local function clear_padding(key, nbits)
  for b = nbits, bytes_of(nbits) * 8 - 1 do
    redis.call('SETBIT', key, b, 0)
  end
end

-- A string of nbits zero bits: one allocation, and only the command in the AOF.
local function zeros(key, nbits)
  redis.call('UNLINK', key)
  if nbits > 0 then redis.call('SETBIT', key, bytes_of(nbits) * 8 - 1, 0) end
end

local function getbit(key, r)
  return redis.call('GETBIT', key, r)
end

-- Ones in the first nbits of key (bits past nbits are left as they are).
local function count_ones(key, nbits)
  if nbits == 0 then return 0 end
  return redis.call('BITCOUNT', key, 0, nbits - 1, 'BIT')
end

-- The batch helpers below make one command of a list of regions; Lua's
-- unpack takes at most a few thousand values, so a longer list goes through
-- them in slices of BATCH (see in_batches).
local BATCH = 1024

local function in_batches(regions, fn)
  for first = 1, #regions, BATCH do
    fn({unpack(regions, first, math.min(#regions, first + BATCH - 1))})
  end
end

-- Bits of `key` at `regions` (a list; repeats are fine) all set to `value`,
-- in one command; how many of them changed.
local function set_bits(key, regions, value)
  if #regions == 0 then return 0 end
  local args = {}
  for _, r in ipairs(regions) do
    args[#args + 1], args[#args + 2], args[#args + 3], args[#args + 4] = 'SET', 'u1', r, value
  end
  local changed = 0
  for _, old in ipairs(redis.call('BITFIELD', key, unpack(args))) do
    if old ~= value then changed = changed + 1 end
  end
  return changed
end

-- The bits of `key` at `regions`, in one command.
local function get_bits(key, regions)
  if #regions == 0 then return {} end
  local args = {}
  for _, r in ipairs(regions) do args[#args + 1], args[#args + 2], args[#args + 3] = 'GET', 'u1', r end
  return redis.call('BITFIELD', key, unpack(args))
end

-- The dirty direction: always allowed.
local function set_dirty(k, regions)
  local n = set_bits(k.dirty, regions, 1)
  if n > 0 then redis.call('HINCRBY', k.log, 'dirty_count', n) end
end

-- The out-of-sync direction: always allowed, and the regions become dirty
-- too, so a crash before their resync still resyncs them.
local function set_out_of_sync(k, regions)
  set_dirty(k, regions)
  local n = set_bits(k.sync, regions, 0)
  if n > 0 then
    redis.call('HINCRBY', k.log, 'sync_count', -n)
    local low, floor = math.min(unpack(regions)), tonumber(redis.call('HGET', k.log, 'sync_floor')) or 0
    if low < floor then redis.call('HSET', k.log, 'sync_floor', low) end
  end
end

-- The clean direction: only for regions no node has marked and whose legs
-- are known to agree (a clean bit is what survives a crash; clean but out of
-- sync would come back in sync).
local function set_clean_if_safe(k, regions)
  if #regions == 0 then return end
  local lists, synced = redis.call('HMGET', k.marks, unpack(regions)), get_bits(k.sync, regions)
  local safe = {}
  for i, r in ipairs(regions) do
    if not lists[i] and synced[i] == 1 then safe[#safe + 1] = r end
  end
  local n = set_bits(k.dirty, safe, 0)
  if n > 0 then redis.call('HINCRBY', k.log, 'dirty_count', -n) end
end

-- The in-sync direction. Returns true when the log became fully in sync.
local function set_in_sync(k, r)
  if redis.call('SETBIT', k.sync, r, 1) == 1 then return false end
  local count = redis.call('HINCRBY', k.log, 'sync_count', 1)
  return count >= tonumber(redis.call('HGET', k.log, 'region_count'))
end

-- Marks ------------------------------------------------------------------------

local function has_mark(list, node)
  return list and string.find(list, '|' .. node .. '|', 1, true) ~= nil
end

local function member(node, r)
  return node .. '|' .. r
end

-- node marks `regions`: each becomes dirty (a marked region always is).
local function add_marks(k, node, regions)
  local lists, fields, members = redis.call('HMGET', k.marks, unpack(regions)), {}, {}
  for i, r in ipairs(regions) do
    if not has_mark(lists[i], node) then
      fields[#fields + 1], fields[#fields + 2] = r, (lists[i] or '|') .. node .. '|'
      members[#members + 1], members[#members + 2] = 0, member(node, r)
    end
  end
  if #fields > 0 then
    redis.call('HSET', k.marks, unpack(fields))
    redis.call('ZADD', k.nodemarks, unpack(members))
  end
  set_dirty(k, regions)
end

-- node's marks on `regions` go; returns the regions no node has marked any more.
local function drop_marks(k, node, regions)
  if #regions == 0 then return {} end
  local lists, gone, kept, members = redis.call('HMGET', k.marks, unpack(regions)), {}, {}, {}
  local mine = '|' .. node:gsub('%p', '%%%0') .. '|'
  for i, r in ipairs(regions) do
    members[i] = member(node, r)
    local list = lists[i]
    local rest = list and string.gsub(list, mine, '|', 1)
    if not list or rest == '|' then
      gone[#gone + 1] = r
    elseif rest ~= list then
      kept[#kept + 1], kept[#kept + 2] = r, rest
    end
  end
  redis.call('ZREM', k.nodemarks, unpack(members))
  if #gone > 0 then redis.call('HDEL', k.marks, unpack(gone)) end
  if #kept > 0 then redis.call('HSET', k.marks, unpack(kept)) end
  return gone
end

-- Up to `limit` regions node has marked, in no particular order.
local function marked_by(k, node, limit)
  -- Node names are [A-Za-z0-9._-]: every member of node sorts in [node|, node}).
  local members = redis.call('ZRANGEBYLEX', k.nodemarks, '[' .. node .. '|', '(' .. node .. '}', 'LIMIT', 0, limit)
  local regions = {}
  for i, m in ipairs(members) do regions[i] = tonumber(string.sub(m, #node + 2)) end
  return regions
end

-- Jobs -------------------------------------------------------------------------

local function load_jobs(k)
  local raw = redis.call('HGET', k.log, 'jobs')
  if not raw or raw == '' then return {} end
  return cjson.decode(raw)
end

local function save_jobs(k, jobs)
  if #jobs == 0 then
    redis.call('HDEL', k.log, 'jobs')
  else
    redis.call('HSET', k.log, 'jobs', cjson.encode(jobs))
  end
end

-- What each kind of job does, as a list of phases done in order. A phase is
-- {cost, run}: cost(job) is the bytes of bitmap it passes over (0 for
-- per-region work, which counts against budget.regions instead), and run(k,
-- job) does it, keeping any progress in `job`; a per-region phase returns
-- false while it is not finished. A call runs phases while its budget lasts.
local phases = {}

local function bits_of(field)
  return function(job) return bytes_of(job[field]) end
end
local function free() return 0 end

-- {key = 'sync'|'dirty', bits = n, one = bool}: the bitmap all `one`; its
-- count (sync_count or dirty_count) follows.
phases.fill = {
  {bits_of('bits'), function(k, job) zeros(k[job.key], job.bits) end},
  {function(job) return job.one and bytes_of(job.bits) or 0 end, function(k, job)
    if job.one then
      redis.call('BITOP', 'NOT', k[job.key], k[job.key])
      clear_padding(k[job.key], job.bits)
    end
    redis.call('HSET', k.log, job.key .. '_count', job.one and job.bits or 0)
    if job.key == 'sync' then redis.call('HSET', k.log, 'sync_floor', 0) end
  end},
}

-- {bits = n}: sync := NOT dirty (so sync_count = bits - dirty_count).
phases.invert = {
  {bits_of('bits'), function(k, job)
    redis.call('BITOP', 'NOT', k.sync, k.dirty)
    clear_padding(k.sync, job.bits)
    local dirty = tonumber(redis.call('HGET', k.log, 'dirty_count')) or 0
    redis.call('HSET', k.log, 'sync_count', job.bits - dirty, 'sync_floor', 0)
  end},
}

-- {from = n, to = n}: the dirty bitmap of a table that went from `from` to
-- `to` regions. Grown regions are new, so dirty; dropped ones are cleared, so
-- that bits past the region count stay 0. A mask is built in scratch (grow:
-- ones from `from` to `to`; shrink: ones below `to`), then ORed or ANDed in.
local function low(job) return math.min(job.from, job.to) end
phases.resize = {
  {function(job) return bytes_of(low(job)) end, function(k, job) zeros(k.scratch, low(job)) end},
  {function(job) return bytes_of(low(job)) end, function(k, job)
    redis.call('BITOP', 'NOT', k.scratch, k.scratch)
    clear_padding(k.scratch, low(job))
  end},
  -- Grow: below `from` ones, up to `to` zeros, which NOT turns into the mask.
  {function(job) return job.to > job.from and bytes_of(job.to) or 0 end, function(k, job)
    if job.to > job.from then redis.call('SETBIT', k.scratch, bytes_of(job.to) * 8 - 1, 0) end
  end},
  {function(job) return job.to > job.from and bytes_of(job.to) or 0 end, function(k, job)
    if job.to > job.from then
      redis.call('BITOP', 'NOT', k.scratch, k.scratch)
      clear_padding(k.scratch, job.to)
    end
  end},
  -- Shrink: the dropped regions' dirty bits leave the count.
  {function(job) return job.to < job.from and bytes_of(job.from - job.to) or 0 end, function(k, job)
    job.change = job.to - job.from
    if job.to < job.from then job.change = -redis.call('BITCOUNT', k.dirty, job.to, job.from - 1, 'BIT') end
  end},
  {function(job) return bytes_of(math.max(job.from, job.to)) end, function(k, job)
    redis.call('BITOP', job.to > job.from and 'OR' or 'AND', k.dirty, k.dirty, k.scratch)
    redis.call('UNLINK', k.scratch)
    redis.call('HINCRBY', k.log, 'dirty_count', job.change)
    redis.call('HSET', k.log, 'region_count', job.to)
  end},
}

-- {node = name, desync = bool}: drop the node's marks; with desync every
-- region it had marked may differ between the legs, so it goes out of sync.
phases.unmark = {
  {free, function(k, job)
    while budget.regions > 0 do
      local regions = marked_by(k, job.node, math.min(budget.regions, BATCH))
      if #regions == 0 then return true end
      budget.regions = budget.regions - #regions
      drop_marks(k, job.node, regions)
      if job.desync then
        set_out_of_sync(k, regions)
        -- The recovery cursor may have passed them: it goes back, so they are
        -- handed out again without waiting for the next resume.
        local low = math.min(unpack(regions))
        if low < (tonumber(redis.call('HGET', k.log, 'sync_search')) or 0) then
          redis.call('HSET', k.log, 'sync_search', low)
        end
      end
    end
    return #marked_by(k, job.node, 1) == 0
  end},
}

-- {bits = n}: dirty_count of a log stored before it was counted.
phases.count = {
  {bits_of('bits'), function(k, job) redis.call('HSET', k.log, 'dirty_count', count_ones(k.dirty, job.bits)) end},
}

-- {cursor = '0'}: index the marks of a log stored before nodemarks existed.
phases.reindex = {
  {free, function(k, job)
    repeat
      local page = redis.call('HSCAN', k.marks, job.cursor, 'COUNT', 256)
      job.cursor = page[1]
      local fields, members = page[2], {}
      for i = 1, #fields, 2 do
        for node in string.gmatch(fields[i + 1], '[^|]+') do
          members[#members + 1], members[#members + 2] = 0, member(node, fields[i])
        end
      end
      if #members > 0 then redis.call('ZADD', k.nodemarks, unpack(members)) end
      budget.regions = budget.regions - #fields / 2
    until job.cursor == '0' or budget.regions <= 0
    if job.cursor ~= '0' then return false end
    redis.call('HSET', k.log, 'schema', SCHEMA)
  end},
}

-- Does as much of `job` as the call's budget allows; true when it is finished.
local function run_job(k, job)
  local list = phases[job.kind]
  job.phase = job.phase or 1
  while job.phase <= #list do
    local cost, run = list[job.phase][1], list[job.phase][2]
    if not spend(cost(job)) or run(k, job) == false then return false end
    job.phase = job.phase + 1
  end
  return true
end

-- Runs the log's jobs in order while the budget lasts; true when none is left.
local function run_jobs(k)
  local jobs = load_jobs(k)
  local before = #jobs
  while #jobs > 0 and run_job(k, jobs[1]) do table.remove(jobs, 1) end
  if before > 0 then save_jobs(k, jobs) end
  return #jobs == 0
end

local function add_jobs(k, new)
  local jobs = load_jobs(k)
  for _, job in ipairs(new) do jobs[#jobs + 1] = job end
  save_jobs(k, jobs)
end

-- Logs stored before this schema get their dirty count and nodemarks index first.
local function upgrade(k)
  local log = redis.call('HMGET', k.log, 'schema', 'jobs', 'region_count')
  if log[1] and log[1] ~= SCHEMA and not log[2] then
    add_jobs(k, {{kind = 'count', bits = tonumber(log[3])}, {kind = 'reindex', cursor = '0'}})
  end
end

local ESTEP = {}
local function estep(k)
  return err('ESTEP', 'log ' .. tostring(redis.call('HGET', k.log, 'uuid')) .. ' has bulk work pending')
end

-- Instances --------------------------------------------------------------------

-- Instance records written before full field names.
local OLD_NAMES = {ts = 'target_sectors', rs = 'region_size', rc = 'region_count', type = 'log_type'}

local function decode_inst(raw)
  local inst = cjson.decode(raw)
  for old, new in pairs(OLD_NAMES) do
    if inst[old] ~= nil and inst[new] == nil then inst[new], inst[old] = inst[old], nil end
  end
  return inst
end

local function load_inst(k, id)
  local raw = redis.call('HGET', k.inst, id)
  if not raw then return nil end
  return decode_inst(raw)
end

local function save_inst(k, id, inst)
  redis.call('HSET', k.inst, id, cjson.encode(inst))
end

local function all_instances(k)
  local flat, out = redis.call('HGETALL', k.inst), {}
  for i = 1, #flat, 2 do out[#out + 1] = {id = flat[i], inst = decode_inst(flat[i + 1])} end
  return out
end

local function is_active(inst)
  return inst.state == 'resumed' or inst.state == 'presuspended'
end

local function other_active(k, id)
  for _, e in ipairs(all_instances(k)) do
    if e.id ~= id and is_active(e.inst) then return e.inst end
  end
  return nil
end

-- The caller's live instance, or nil plus an error reply.
local function require_inst(k, c)
  local inst = load_inst(k, c.id)
  if not inst then
    return nil, err('ENOENT', 'no instance ' .. c.id .. ' of this log')
  end
  if inst.boot ~= c.boot then
    return nil, err('ENOENT', 'instance ' .. c.id .. ' belongs to an earlier boot of its node')
  end
  local epoch = inst.epoch or 0
  if epoch > c.epoch then
    return nil, err('ENOENT', 'instance ' .. c.id .. ' belongs to a newer incarnation (epoch ' .. epoch ..
      ') of its node than epoch ' .. c.epoch)
  elseif epoch < c.epoch then
    return nil, err('ENOENT', 'instance ' .. c.id .. ' belongs to an earlier incarnation (epoch ' .. epoch ..
      ') of its node: construct it again')
  end
  return inst, nil
end

local function check_region(inst, raw)
  local r = tonumber(raw)
  if not r or r < 0 or r ~= math.floor(r) or r >= inst.region_count then
    return nil, err('EINVAL', 'region ' .. tostring(raw) .. ' is out of range: the instance has ' ..
      inst.region_count .. ' regions')
  end
  return r, nil
end

-- All regions of a batch are checked before any changes: a bad request
-- changes nothing.
local function check_regions(inst, args)
  local regions = {}
  for i = 1, #args do
    local r, e = check_region(inst, args[i])
    if e then return nil, e end
    regions[i] = r
  end
  return regions, nil
end

-- Geometry ---------------------------------------------------------------------

local function log_geometry(k)
  local g = redis.call('HMGET', k.log, 'type', 'region_size', 'region_count')
  return {log_type = g[1], region_size = tonumber(g[2]), region_count = tonumber(g[3])}
end

local function same_geometry(g, inst)
  return g.log_type == inst.log_type and g.region_size == inst.region_size and g.region_count == inst.region_count
end

local function busy_error(other, g)
  return err('EBUSY', 'node ' .. other.node .. ' runs this log as ' .. g.log_type .. ' with ' ..
    g.region_count .. ' regions of ' .. g.region_size .. ' sectors')
end

local function set_geometry(k, inst)
  redis.call('HSET', k.log,
    'type', inst.log_type, 'region_size', inst.region_size, 'region_count', inst.region_count,
    'target_sectors', inst.target_sectors, 'args', inst.args, 'device', inst.device)
end

-- Initial bits of a log that has no history: core logs and persistent logs
-- seen for the first time (or with an explicit sync/nosync, as the kernel's
-- disk log does). Default and "sync" resync everything; "nosync" trusts the
-- legs. Core logs start clean like the kernel's; persistent ones start dirty
-- where out of sync, so a crash before the first resync still resyncs.
local function init_jobs(inst)
  local nosync = inst.sync == 'nosync'
  return {
    {kind = 'fill', key = 'sync', bits = inst.region_count, one = nosync},
    {kind = 'fill', key = 'dirty', bits = inst.region_count, one = inst.persistent and not nosync},
  }
end

-- Recovery ---------------------------------------------------------------------

local function clear_recovery(k)
  redis.call('HSET', k.log, 'rec_region', '', 'rec_inst', '')
end

-- The recoverer went away mid-recovery: its region is still out of sync and
-- the cursor has passed it, so it goes first in line for the next asker.
local function abandon_recovery(k)
  local r = redis.call('HGET', k.log, 'rec_region')
  if r and r ~= '' then redis.call('LPUSH', k.prio, r) end
  clear_recovery(k)
end

local function forget_instance(k, id)
  redis.call('HDEL', k.inst, id)
  if redis.call('HGET', k.log, 'rec_inst') == id then abandon_recovery(k) end
end

-- The highest epoch of `node` this log refuses (0: none).
local function fence_of(k, node)
  return tonumber(redis.call('HGET', k.log, 'fence:' .. node)) or 0
end

local function raise_fence(k, node, epoch)
  if epoch > fence_of(k, node) then redis.call('HSET', k.log, 'fence:' .. node, epoch) end
end

-- Every in-sync latch of the log ends now (see latched): the regions a dead
-- incarnation had marked are out of sync, and every node must learn it.
local function end_latches(k)
  redis.call('HSET', k.log, 'latch_floor', redis.call('HINCRBY', k.log, 'clock', 1))
end

-- Removes the instances for which `dead(inst)` holds, all of one node; their
-- regions may differ between the legs, so an unmark job turns them out of
-- sync. Returns how many there were.
local function reap(k, node, dead)
  local gone = 0
  for _, e in ipairs(all_instances(k)) do
    if e.inst.node == node and dead(e.inst) then
      forget_instance(k, e.id)
      raise_fence(k, node, e.inst.epoch or 0)
      gone = gone + 1
    end
  end
  if gone > 0 then
    add_jobs(k, {{kind = 'unmark', node = node, desync = true}})
    end_latches(k)
  end
  return gone
end

-- The caller is a later incarnation of its node than some instances here:
-- another boot (the old one crashed or rebooted) or, on the same boot, a
-- smaller epoch (its lease expired: a partition, a paused VM, a bridge that
-- was down too long). Those instances are dead. Returns whether there were any.
local function reap_old_incarnations(k, c)
  if reap(k, c.node, function(inst) return inst.boot ~= c.boot or (inst.epoch or 0) < c.epoch end) == 0 then
    return false
  end
  -- The other nodes must hear of it as of an expiry (their latches end, their
  -- kernels must resume to take the regions): the CTR or RESUME that did this
  -- says so in its reply (see register) until logsvc announced it.
  redis.call('HSET', k.log, 'announce', redis.call('HGET', k.log, 'latch_floor'))
  return true
end

-- Nil when the caller's incarnation may construct an instance here, else the
-- error: an incarnation whose lease expired is refused (fenced), and so is
-- one older than an instance of its node already here (order is decided by
-- epoch, not by arrival).
local function incarnation_error(k, c)
  if c.epoch > 0 and c.epoch <= fence_of(k, c.node) then
    return err('ENOENT', 'node ' .. c.node .. ' epoch ' .. c.epoch .. ' is fenced (its lease expired): ' ..
      'it must take a new lease')
  end
  for _, e in ipairs(all_instances(k)) do
    if e.inst.node == c.node and (e.inst.epoch or 0) > c.epoch then
      return err('ENOENT', 'a newer incarnation (epoch ' .. e.inst.epoch .. ') of node ' .. c.node ..
        ' holds this log than epoch ' .. c.epoch)
    end
  end
  return nil
end

-- Functions ----------------------------------------------------------------------

-- The instance a CTR describes. Its JSON carries exactly these fields.
local function new_instance(c, spec)
  return {
    node = c.node, boot = c.boot, epoch = c.epoch, luid = c.luid, state = 'constructed',
    target_sectors = spec.target_sectors, log_type = spec.log_type,
    region_size = spec.region_size, region_count = spec.region_count,
    sync = spec.sync, args = spec.args, device = spec.device,
    persistent = spec.persistent, resumed_at = 0,
  }
end

-- Generations (see the header) -------------------------------------------------

local function generation(k, node)
  return tonumber(redis.call('HGET', k.log, 'gen:' .. node)) or 0
end

-- The bulk work of a log that lost writes: every region out of sync and dirty.
local function lost_jobs(n)
  return {{kind = 'fill', key = 'sync', bits = n, one = false}, {kind = 'fill', key = 'dirty', bits = n, one = true}}
end

-- The log lost writes `node` was answered up to generation `seen`: nothing it
-- says can be trusted, so every region resyncs, and no latch survives.
local function lose(k, node, seen)
  add_jobs(k, lost_jobs(tonumber(redis.call('HGET', k.log, 'region_count')) or 0))
  end_latches(k)
  redis.call('HSET', k.log, 'gen:' .. node, seen)
  redis.call('HINCRBY', k.log, 'lost_writes', 1)
end

-- A new log; `lost`: the caller's node had been answered by a log of this
-- name that is gone (a failover lost it), so it is not fresh, whatever the
-- sync option: every region resyncs (and a persistent log's first resume,
-- sync := NOT dirty, keeps them so).
local function create_log(k, inst, uuid, c)
  local lost = c.seen > 0
  redis.call('HSET', k.log, 'uuid', uuid, 'schema', SCHEMA, 'sync_search', 0, 'clock', 0,
    'completed_at', 0, 'rec_region', '', 'rec_inst', '', 'fresh', lost and 0 or 1)
  set_geometry(k, inst)
  if lost then
    add_jobs(k, lost_jobs(inst.region_count))
    redis.call('HSET', k.log, 'gen:' .. c.node, c.seen, 'lost_writes', 1)
  else
    add_jobs(k, init_jobs(inst))
  end
end

local function ctr(k, c, _, args)
  local spec = cjson.decode(args[1])
  local inst = new_instance(c, spec)
  local refused = incarnation_error(k, c)
  if refused then return refused end
  local old = load_inst(k, c.id)
  if old and old.boot == c.boot and (old.epoch or 0) == c.epoch then
    if old.args == inst.args and old.target_sectors == inst.target_sectors then return inst.device end
    return err('EEXIST', 'instance ' .. c.id .. ' exists with arguments "' .. old.args .. '"')
  end
  if reap_old_incarnations(k, c) and not run_jobs(k) then return ESTEP end
  if redis.call('EXISTS', k.log) == 1 then
    local g = log_geometry(k)
    if not same_geometry(g, inst) then
      local other = other_active(k, c.id)
      if other and other.node ~= c.node then return busy_error(other, g) end
    end
  else
    create_log(k, inst, spec.uuid, c)
  end
  save_inst(k, c.id, inst)
  if not run_jobs(k) then return ESTEP end
  return inst.device
end

-- A log that no instance uses any more goes with its last table when it keeps
-- nothing a new CTR would not recreate: a core log, or a persistent log that
-- no table ever activated (a table the kernel refused after its CTR: a bad
-- leg, a wrong leg count). Unless someone marked regions: when in doubt, dirty.
local function log_unused(k, inst)
  if redis.call('HLEN', k.inst) > 0 then return false end
  if not inst.persistent then return true end
  return redis.call('HGET', k.log, 'fresh') == '1' and redis.call('HLEN', k.marks) == 0
end

local function delete_log(k)
  redis.call('UNLINK', k.log, k.inst, k.sync, k.dirty, k.marks, k.prio, k.nodemarks, k.scratch)
end

local function node_has_instances(k, node)
  for _, e in ipairs(all_instances(k)) do
    if e.inst.node == node then return true end
  end
  return false
end

local function dtr(k, c)
  local inst = load_inst(k, c.id)
  -- Nothing of the caller's: none, another boot's, or a newer incarnation's.
  if not inst or inst.boot ~= c.boot or (inst.epoch or 0) > c.epoch then return 0 end
  forget_instance(k, c.id)
  if log_unused(k, inst) then
    delete_log(k)
    return 0
  end
  if not node_has_instances(k, c.node) then
    -- The node's writes are drained (DTR follows a suspend). Its marks go;
    -- the dirty bits stay, so the next activation still resyncs them.
    add_jobs(k, {{kind = 'unmark', node = c.node, desync = false}})
    if not run_jobs(k) then return ESTEP end
  end
  return 0
end

local function presuspend(k, c, inst)
  if inst.state == 'resumed' then inst.state = 'presuspended' end
  save_inst(k, c.id, inst)
  return 0
end

local function postsuspend(k, c, inst)
  inst.state = 'suspended'
  save_inst(k, c.id, inst)
  if redis.call('HGET', k.log, 'rec_inst') == c.id then abandon_recovery(k) end
  return 0
end

-- The jobs that bring the shared bits to this activation when `inst` is the
-- first active instance.
local function master_resume_jobs(k, inst)
  local log = redis.call('HMGET', k.log, 'type', 'region_size', 'region_count', 'fresh')
  local same_kind = log[1] == inst.log_type and tonumber(log[2]) == inst.region_size
  local fresh = log[4] == '1'
  if not same_kind then
    return init_jobs(inst)
  elseif not inst.persistent then
    -- The kernel's core log: a new table starts from scratch, the same table
    -- resumed after a suspend keeps its bits.
    if inst.resumed_at == 0 or tonumber(log[3]) ~= inst.region_count then return init_jobs(inst) end
    return {}
  elseif inst.sync == 'sync' or (inst.sync == 'nosync' and fresh) then
    -- An explicit "sync" resyncs everything at every resume, as in the
    -- kernel's disk log. "nosync" trusts the legs only for a log that was
    -- never active: unlike the disk log, a crash is never forgiven.
    return init_jobs(inst)
  end
  -- The disk log's rule: whatever was dirty (a write may have been in flight
  -- at a crash) is out of sync now; what was clean is in sync. Regions added
  -- by a grown table are new, so dirty.
  local jobs, old_count = {}, tonumber(log[3])
  if old_count ~= inst.region_count then
    jobs[1] = {kind = 'resize', from = old_count, to = inst.region_count}
  end
  jobs[#jobs + 1] = {kind = 'invert', bits = inst.region_count}
  return jobs
end

-- First active instance: bring the shared bits to this activation.
local function master_resume(k, inst)
  add_jobs(k, master_resume_jobs(k, inst))
  set_geometry(k, inst)
  redis.call('HSET', k.log, 'fresh', 0)
  -- No other instance is active, so no write is in flight anywhere: the
  -- remaining marks are history, already folded into the dirty bits.
  redis.call('UNLINK', k.marks, k.prio, k.nodemarks)
  clear_recovery(k)
end

local function resume(k, c, inst)
  if reap_old_incarnations(k, c) and not run_jobs(k) then return ESTEP end
  if not is_active(inst) then
    local other = other_active(k, c.id)
    if not other then
      master_resume(k, inst)
    else
      local g = log_geometry(k)
      if not same_geometry(g, inst) then return busy_error(other, g) end
    end
  end
  -- A replayed RESUME of an active instance (the kernel's reconnect loop)
  -- keeps every bit and only restarts the recovery cursor, as a resume does.
  inst.state = 'resumed'
  inst.resumed_at = redis.call('HINCRBY', k.log, 'clock', 1)
  save_inst(k, c.id, inst)
  redis.call('HSET', k.log, 'sync_search', 0)
  if not run_jobs(k) then return ESTEP end
  return 0
end

local function get_region_size(_, _, inst)
  return inst.region_size
end

local function is_clean(k, _, inst, args)
  local r, e = check_region(inst, args[1])
  if e then return e end
  return 1 - getbit(k.dirty, r)
end

-- cmirrord's in-sync latch (LVM commit 53670b18f): once the whole log
-- reached sync during this instance's activation, IN_SYNC answers 1 until
-- the instance resumes again, so a region another node marks out of sync
-- after a leg failure keeps being written to every leg here.
local function latched(k, inst)
  if not is_active(inst) then return false end
  local log = redis.call('HMGET', k.log, 'completed_at', 'latch_floor')
  return tonumber(log[1]) > math.max(inst.resumed_at, tonumber(log[2]) or 0)
end

-- {answer, latched} for IN_SYNC, or nil plus an error reply.
local function in_sync_answer(k, inst, args)
  local r, e = check_region(inst, args[1])
  if e then return nil, e end
  if latched(k, inst) then return {1, 1} end
  return {getbit(k.sync, r), 0}
end

local function in_sync(k, _, inst, args)
  local answer, e = in_sync_answer(k, inst, args)
  if e then return e end
  return answer[1]
end

-- IN_SYNC with the latch said out loud: {answer, latched}. A latch ends only
-- by the instance's own node's lifecycle requests or by an incarnation's
-- expiry (end_latches), which logsvc announces to every bridge (WatchLogs):
-- that lets a bridge answer IN_SYNC from it without asking (bridge/latch.py).
-- The plain in_sync stays for services that predate this one.
local function in_sync_latch(k, _, inst, args)
  local answer, e = in_sync_answer(k, inst, args)
  if e then return e end
  return answer
end

local function mark(k, c, inst, args)
  local regions, e = check_regions(inst, args)
  if e then return e end
  in_batches(regions, function(batch) add_marks(k, c.node, batch) end)
  return 0
end

local function clear(k, c, inst, args)
  local regions, e = check_regions(inst, args)
  if e then return e end
  in_batches(regions, function(batch) set_clean_if_safe(k, drop_marks(k, c.node, batch)) end)
  return 0
end

-- FLUSH: with integrated flush its payload is marks. Each mark is durable
-- when its write command is (appendfsync always), so the marks made by
-- earlier MARK_REGION calls need nothing more here.
local function flush(k, c, inst, args)
  return mark(k, c, inst, args)
end

-- GET_RESYNC_WORK in three steps: the caller's own assignment, then regions
-- writers wait for, then the next out-of-sync region after the cursor.

-- One recovery at a time per log: {1, r} again for the instance already
-- recovering r (the kernel retried), {0, 0} for anyone else; nil when free.
local function assigned_recovery(log, id)
  if log.rec_inst == '' then return nil end
  if log.rec_inst == id then return {1, tonumber(log.rec_region)} end
  return {0, 0}
end

-- Regions writers wait for (and abandoned recoveries) first, even when the
-- cursor has passed them; those already in sync are dropped.
local function next_priority_region(k, rc)
  while true do
    local p = redis.call('LPOP', k.prio)
    if not p then return nil end
    p = tonumber(p)
    if p < rc and getbit(k.sync, p) == 0 then return p end
  end
end

-- The first out-of-sync region from the cursor, advancing it; nil when none is
-- left, after parking the cursor past the end so IS_REMOTE_RECOVERING stops
-- delaying writes (LVM commit 34cbedcea).
local function next_unsynced_region(k, rc, search)
  if search >= rc then return nil end
  local found = redis.call('BITPOS', k.sync, 0, search, rc - 1, 'BIT')
  if found < 0 or found >= rc then
    redis.call('HSET', k.log, 'sync_search', rc + 1)
    return nil
  end
  redis.call('HSET', k.log, 'sync_search', found + 1)
  return found
end

-- After an incarnation expired, no region goes out as resync work until every
-- other active instance resumed since (end_latches set latch_floor): a kernel
-- told earlier that every region below some hint was in sync writes those
-- regions without asking whether another node recovers them, and only its
-- resume makes it forget the hint (docs/protocol.md §4.4). The recoverer
-- itself needs no such reset: its own region hash holds back its writes to the
-- region it recovers. A survivor's bridge resumes its mirror when it hears of
-- the expiry (bridge/mirrors.py).
local function survivors_not_resumed(k, c, floor)
  if floor == 0 then return false end
  for _, e in ipairs(all_instances(k)) do
    if e.id ~= c.id and is_active(e.inst) and e.inst.resumed_at < floor then return true end
  end
  return false
end

local function get_resync_work(k, c, inst)
  if inst.state ~= 'resumed' then return {0, 0} end
  local raw = redis.call('HMGET', k.log, 'region_count', 'sync_search', 'rec_region', 'rec_inst', 'latch_floor')
  local log = {region_count = tonumber(raw[1]), sync_search = tonumber(raw[2]), rec_region = raw[3],
    rec_inst = raw[4]}
  local assigned = assigned_recovery(log, c.id)
  if assigned then return assigned end
  if survivors_not_resumed(k, c, tonumber(raw[5]) or 0) then return {0, 0} end
  local r = next_priority_region(k, log.region_count) or next_unsynced_region(k, log.region_count, log.sync_search)
  if not r then return {0, 0} end
  redis.call('HSET', k.log, 'rec_region', r, 'rec_inst', c.id)
  return {1, r}
end

local function set_region_sync(k, c, inst, args)
  local r, e = check_region(inst, args[1])
  if e then return e end
  local log = redis.call('HMGET', k.log, 'rec_region', 'rec_inst')
  if log[2] == c.id or (log[1] ~= '' and tonumber(log[1]) == r) then clear_recovery(k) end
  if args[2] == '1' then
    if set_in_sync(k, r) then
      redis.call('HSET', k.log, 'completed_at', redis.call('HINCRBY', k.log, 'clock', 1))
    end
  else
    set_out_of_sync(k, {r})
  end
  return 0
end

local function get_sync_count(k)
  return tonumber(redis.call('HGET', k.log, 'sync_count'))
end

local function is_remote_recovering(k, _, inst, args)
  local r, e = check_region(inst, args[1])
  if e then return e end
  local log = redis.call('HMGET', k.log, 'region_count', 'sync_count', 'rec_region', 'sync_floor')
  local rc, count = tonumber(log[1]), tonumber(log[2])
  if inst.state ~= 'resumed' then
    -- Recovery is halted on this instance until it resumes.
    return {0, inst.region_count}
  end
  -- The hint says every region below it is in sync (the kernel then writes
  -- them without asking): the first out-of-sync region, found from
  -- sync_floor, below which every region is known in sync (set_out_of_sync
  -- lowers it, a bulk job resets it), so the scan is paid once per region.
  local hint = rc
  if count < rc then
    local floor = tonumber(log[4]) or 0
    hint = redis.call('BITPOS', k.sync, 0, floor, rc - 1, 'BIT')
    if hint < 0 then hint = rc end
    -- Written only when it moved: most calls find the floor where it was.
    if hint ~= floor then redis.call('HSET', k.log, 'sync_floor', hint) end
  end
  if r >= rc or getbit(k.sync, r) == 1 then return {0, hint} end
  if log[3] == '' or tonumber(log[3]) ~= r then
    redis.call('LREM', k.prio, 0, r)
    redis.call('LPUSH', k.prio, r)
    redis.call('LTRIM', k.prio, 0, 1023)
  end
  return {1, hint}
end

-- Instance and log facts for STATUS_INFO / STATUS_TABLE.
local function describe(_, _, inst)
  return cjson.encode(inst)
end

-- Admin ------------------------------------------------------------------------

-- The whole log, read at one instant: meta, instances, sync, dirty, marks,
-- priority list, dirty count. With args[2] = 'head', or for a log too large
-- for one reply, the bitmaps and marks come back as false, for the caller to
-- read in ranges.
local function state(k, args)
  if redis.call('EXISTS', k.log) == 0 then
    return err('ENOENT', 'no log ' .. tostring(args[1]))
  end
  local rc = tonumber(redis.call('HGET', k.log, 'region_count')) or 0
  local head = args[2] == 'head'
  local small = not head and bytes_of(rc) <= STATE_INLINE_BYTES
  local few = not head and redis.call('HLEN', k.marks) <= STATE_INLINE_MARKS
  return {
    redis.call('HGETALL', k.log),
    redis.call('HGETALL', k.inst),
    small and (redis.call('GETRANGE', k.sync, 0, bytes_of(rc) - 1)) or false,
    small and (redis.call('GETRANGE', k.dirty, 0, bytes_of(rc) - 1)) or false,
    few and redis.call('HGETALL', k.marks) or false,
    redis.call('LRANGE', k.prio, 0, -1),
    tonumber(redis.call('HGET', k.log, 'dirty_count')) or 0,
  }
end

local function summary(k)
  if redis.call('EXISTS', k.log) == 0 then return false end
  local rc = tonumber(redis.call('HGET', k.log, 'region_count')) or 0
  return {
    redis.call('HGETALL', k.log),
    redis.call('HVALS', k.inst),
    tonumber(redis.call('HGET', k.log, 'dirty_count')) or 0,
  }
end

-- Registration -------------------------------------------------------------------

local KEY_NAMES = {'log', 'inst', 'sync', 'dirty', 'marks', 'prio', 'nodemarks', 'scratch'}

local function named(K)
  local k = {}
  for i, name in ipairs(KEY_NAMES) do k[name] = K[i] end
  return k
end

local function caller(A)
  return {node = A[1], boot = A[2], luid = A[3], id = A[1] .. '/' .. A[3], deadline = tonumber(A[4]) or 0,
    epoch = tonumber(A[5]) or 0, seen = tonumber(A[6]) or 0}
end
local CALLER_ARGS = 6

local function is_error(reply)
  return type(reply) == 'table' and reply.err ~= nil
end

local function past_deadline(c)
  if c.deadline <= 0 then return false end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2]) > c.deadline
end

-- The prologue every kernel request shares: the deadline (writers only: a
-- read done late changes nothing), the log's jobs (finished as far as this
-- call's budget goes; a reader cannot write, so it only asks for them), and
-- the caller's instance (`needs` = NO_INSTANCE for CTR and DTR, which find it
-- themselves).
local function kernel_request(fn, writes, needs)
  return function(K, A, unbounded)
    local k, c = named(K), caller(A)
    reset_budget(unbounded)
    if writes and past_deadline(c) then
      return err('ETIMEDOUT', 'request abandoned: its deadline passed before it ran')
    end
    if writes then upgrade(k) end
    if redis.call('HEXISTS', k.log, 'jobs') == 1 and not (writes and run_jobs(k)) then
      -- A reader cannot write, so it cannot finish them. A v1 caller knows no
      -- ESTEP: it gets Redis's own LOADING, the one reply services of its
      -- version retry (their client takes it for a connection error).
      if unbounded then return redis.error_reply('LOADING log has bulk work pending') end
      return estep(k)
    end
    if c.seen > 0 and redis.call('EXISTS', k.log) == 1 then
      local had = generation(k, c.node)
      if c.seen > had then
        return err('ELOST', 'log ' .. tostring(redis.call('HGET', k.log, 'uuid')) .. ' lost writes: node ' ..
          c.node .. ' was answered generation ' .. c.seen .. ', the log has ' .. had)
      end
    end
    local inst = nil
    if needs ~= NO_INSTANCE then
      local e
      inst, e = require_inst(k, c)
      if e then return e end
    end
    local args = {}
    for i = CALLER_ARGS + 1, #A do args[#args + 1] = A[i] end
    local reply = fn(k, c, inst, args)
    if reply == ESTEP then return estep(k) end
    if writes and not is_error(reply) and redis.call('EXISTS', k.log) == 1 then
      redis.call('HINCRBY', k.log, 'gen:' .. c.node, 1)
    end
    return reply
  end
end

-- The same call with the arguments of services that predate generations (none known).
local function v3_arguments(A)
  return {A[1], A[2], A[3], A[4], A[5], '0', unpack(A, 6)}
end

-- ... and of services that predate leases (epoch 0).
local function v2_arguments(A)
  return v3_arguments({A[1], A[2], A[3], A[4], '0', unpack(A, 5)})
end

-- ... and of services that predate deadlines.
local function v1_arguments(A)
  return v2_arguments({A[1], A[2], A[3], '0', unpack(A, 4)})
end

-- v1 CTR: ARGV[4] target sectors, [5] type, [6] region size, [7] region count,
-- [8] sync option, [9] canonical args, [10] device, [11] persistent, [12] uuid.
local function v1_ctr_arguments(A)
  local spec = {target_sectors = A[4], log_type = A[5], region_size = tonumber(A[6]),
    region_count = tonumber(A[7]), sync = A[8], args = A[9], device = A[10], persistent = A[11] == '1',
    uuid = A[12]}
  return v2_arguments({A[1], A[2], A[3], '0', cjson.encode(spec)})
end

-- Services that predate deadlines pass the first six keys only; the others are
-- named after the log key (same hash tag, so the same slot).
local function v1_keys(K)
  local k = {unpack(K)}
  for i = #k + 1, #KEY_NAMES do k[i] = string.gsub(K[1], ':log$', ':' .. KEY_NAMES[i]) end
  return k
end

-- The v3 replies of CTR and RESUME add the log's pending announcement (the
-- latch floor of an old incarnation those requests replaced, 0 for none):
-- logsvc announces it on the event stream, then calls `announced`. Older
-- services get the replies they know.
local ANNOUNCING = {
  ctr = function(K, reply) return {reply, tonumber(redis.call('HGET', K[1], 'announce')) or 0} end,
  resume = function(K) return tonumber(redis.call('HGET', K[1], 'announce')) or 0 end,
}

local function register(name, callback, writes, adapt)
  local flags = writes and {} or {'no-writes'}
  local announcing = ANNOUNCING[name]
  local function announced(K, reply)
    if announcing and not is_error(reply) then return announcing(K, reply) end
    return reply
  end
  redis.register_function{
    function_name = 'dmulog_v4_' .. name,
    callback = function(K, A)
      local reply = announced(K, callback(K, A))
      if is_error(reply) then return reply end
      return {reply, tonumber(redis.call('HGET', K[1], 'gen:' .. A[1])) or 0}
    end,
    flags = flags,
  }
  redis.register_function{
    function_name = 'dmulog_v3_' .. name,
    callback = function(K, A) return announced(K, callback(K, v3_arguments(A))) end,
    flags = flags,
  }
  redis.register_function{
    function_name = 'dmulog_v2_' .. name,
    callback = function(K, A) return callback(K, v2_arguments(A)) end,
    flags = flags,
  }
  redis.register_function{
    function_name = 'dmulog_v1_' .. name,
    callback = function(K, A) return callback(v1_keys(K), (adapt or v1_arguments)(A), true) end,
    flags = flags,
  }
end

local function writer(name, fn, needs, adapt)
  register(name, kernel_request(fn, true, needs), true, adapt)
end

local function reader(name, fn)
  register(name, kernel_request(fn, false), false)
end

writer('ctr', ctr, NO_INSTANCE, v1_ctr_arguments)
writer('dtr', dtr, NO_INSTANCE)
writer('presuspend', presuspend)
writer('postsuspend', postsuspend)
writer('resume', resume)
writer('flush', flush)
writer('mark_region', mark)
writer('clear_region', clear)
writer('get_resync_work', get_resync_work)
writer('set_region_sync', set_region_sync)
writer('is_remote_recovering', is_remote_recovering)
reader('get_region_size', get_region_size)
reader('is_clean', is_clean)
reader('in_sync', in_sync)
reader('in_sync_latch', in_sync_latch)
reader('get_sync_count', get_sync_count)
reader('describe', describe)

-- Admin and maintenance functions take no caller; the v1 names are theirs too.
local function plain(name, fn, writes)
  local callback = function(K, A, unbounded)
    reset_budget(unbounded)
    return fn(named(K), A)
  end
  local flags = writes and {} or {'no-writes'}
  -- (Only the redis table is there while a library loads: no ipairs.)
  redis.register_function{function_name = 'dmulog_v4_' .. name, callback = callback, flags = flags}
  redis.register_function{function_name = 'dmulog_v3_' .. name, callback = callback, flags = flags}
  redis.register_function{function_name = 'dmulog_v2_' .. name, callback = callback, flags = flags}
  redis.register_function{
    function_name = 'dmulog_v1_' .. name,
    callback = function(K, A) return callback(v1_keys(K), A, true) end,
    flags = flags,
  }
end

-- An incarnation of a node (ARGV[1] name, ARGV[2] epoch) whose lease expired:
-- its instances here are dead (a recovery it had goes back to the queue),
-- every region it had marked turns out of sync and dirty (an unmark job), every
-- latch ends, and the fence refuses that epoch and older ones from now on.
-- Idempotent: a second call for the same or an older epoch does nothing. A
-- later incarnation's instances are never touched. Returns {instances
-- removed, 1 if bulk work is left (run step)}.
local function expire_node(k, A)
  if redis.call('EXISTS', k.log) == 0 then return {0, 0} end
  upgrade(k)
  if not run_jobs(k) then return {0, 1} end
  local node, epoch = A[1], tonumber(A[2])
  if not epoch or epoch <= 0 then return err('EINVAL', 'epoch must be a positive integer') end
  if epoch <= fence_of(k, node) then return {0, 0} end
  raise_fence(k, node, epoch)
  local gone = reap(k, node, function(inst) return (inst.epoch or 0) > 0 and inst.epoch <= epoch end)
  return {gone, run_jobs(k) and 0 or 1}
end

-- One budget's worth of the log's jobs: 1 while some are left, 0 when none is.
plain('step', function(k)
  if redis.call('EXISTS', k.log) == 0 then return 0 end
  upgrade(k)
  return run_jobs(k) and 0 or 1
end, true)
plain('expire_node', expire_node, true)
-- ARGV[1] a node, ARGV[2] the generation it was answered, above the log's
-- (ELOST): the log lost writes; lose() them. Idempotent: nothing when the
-- log has that generation already. Returns {1 if it did, the generation the
-- log had, 1 if bulk work is left (run step)}.
plain('lost', function(k, A)
  if redis.call('EXISTS', k.log) == 0 then return {0, 0, 0} end
  upgrade(k)
  if not run_jobs(k) then return {0, 0, 1} end
  local node, seen = A[1], tonumber(A[2])
  if not seen or seen <= 0 then return err('EINVAL', 'generation must be a positive integer') end
  local had = generation(k, node)
  if seen <= had then return {0, had, 0} end
  lose(k, node, seen)
  return {1, had, run_jobs(k) and 0 or 1}
end, true)
-- ARGV[1]: the announcement logsvc made (see ANNOUNCING); it is done unless a newer one came meanwhile.
plain('announced', function(k, A)
  if redis.call('HGET', k.log, 'announce') == A[1] then redis.call('HDEL', k.log, 'announce') end
  return 0
end, true)
plain('state', state)
plain('summary', summary)
plain('version', function() return SCHEMA end)
