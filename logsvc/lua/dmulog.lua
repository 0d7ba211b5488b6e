#!lua name=dmulog_v1
--[[
The dmulog dirty-log state machine, one Redis Function per kernel request.

Every function takes the same six keys, all sharing the log's hash tag so the
whole log lives in one slot (Redis Cluster keeps it on one shard and every
call stays atomic):

  KEYS[1] log    hash    geometry, type, counters, recovery assignment
  KEYS[2] inst   hash    table instance id "<node>/<luid>" -> cjson record
  KEYS[3] sync   string  bitmap, bit r = 1: region r in sync
  KEYS[4] dirty  string  bitmap, bit r = 1: region r dirty (persisted "clean" = 0)
  KEYS[5] marks  hash    region -> "|node|node|": who has the region marked
  KEYS[6] prio   list    regions writers wait for, recovered first

ARGV[1] node name, ARGV[2] node boot id, ARGV[3] luid (decimal string: a
kernel pointer does not fit a Lua double), then the request's own arguments.

Errors start with a fixed word the service maps to a gRPC status:
EINVAL (bad argument), ENOENT (unknown instance), EEXIST (same instance,
other arguments), EBUSY (conflicts with the log's state).

Fail-safe rule: when in doubt, dirty. Bits change only through the four
helpers below; the "clean" and "in sync" directions are the guarded ones.
--]]

local SCHEMA = '1'

local function err(word, msg)
  return redis.error_reply(word .. ' ' .. msg)
end

-- Bitmap helpers -------------------------------------------------------------

local function nbytes(nbits)
  return math.floor((nbits + 7) / 8)
end

-- Zero the bits past the last region so BITCOUNT and BITPOS stay exact.
local function clear_padding(key, nbits)
  for b = nbits, nbytes(nbits) * 8 - 1 do
    redis.call('SETBIT', key, b, 0)
  end
end

-- Pre-size a bitmap with every region set to `one`.
local function fill(key, nbits, one)
  if nbits == 0 then
    redis.call('DEL', key)
    return
  end
  redis.call('SET', key, string.rep(one and '\255' or '\0', nbytes(nbits)))
  if one then clear_padding(key, nbits) end
end

-- Resize a bitmap to `new_bits`, new regions set to `one`.
local function resize(key, old_bits, new_bits, one)
  if new_bits <= old_bits then
    local keep = redis.call('GETRANGE', key, 0, nbytes(new_bits) - 1)
    redis.call('SET', key, keep)
    clear_padding(key, new_bits)
    return
  end
  -- Grow: pad to whole bytes, fill the tail of the last old byte, append.
  redis.call('SETBIT', key, nbytes(new_bits) * 8 - 1, 0)
  if one then
    local whole = nbytes(old_bits)
    for b = old_bits, whole * 8 - 1 do redis.call('SETBIT', key, b, 1) end
    local tail = nbytes(new_bits) - whole
    if tail > 0 then redis.call('SETRANGE', key, whole, string.rep('\255', tail)) end
    clear_padding(key, new_bits)
  end
end

local function getbit(key, r)
  return redis.call('GETBIT', key, r)
end

-- The dirty direction: always allowed.
local function set_dirty(k, r)
  redis.call('SETBIT', k[4], r, 1)
end

-- The out-of-sync direction: always allowed, and the region becomes dirty
-- too, so a crash before its resync still resyncs it.
local function set_out_of_sync(k, r)
  set_dirty(k, r)
  if redis.call('SETBIT', k[3], r, 0) == 1 then
    redis.call('HINCRBY', k[1], 'sync_count', -1)
  end
end

-- The clean direction: only when no node has the region marked and its legs
-- are known to agree (a clean bit is what survives a crash; clean but out of
-- sync would come back in sync).
local function set_clean_if_safe(k, r)
  if redis.call('HEXISTS', k[5], r) == 1 then return end
  if getbit(k[3], r) == 0 then return end
  redis.call('SETBIT', k[4], r, 0)
end

-- The in-sync direction. Returns true when the log became fully in sync.
local function set_in_sync(k, r)
  if redis.call('SETBIT', k[3], r, 1) == 1 then return false end
  local count = redis.call('HINCRBY', k[1], 'sync_count', 1)
  return count >= tonumber(redis.call('HGET', k[1], 'region_count'))
end

-- Instances --------------------------------------------------------------------

local function inst_id(argv)
  return argv[1] .. '/' .. argv[3]
end

local function load_inst(k, argv)
  local raw = redis.call('HGET', k[2], inst_id(argv))
  if not raw then return nil end
  return cjson.decode(raw)
end

local function save_inst(k, id, inst)
  redis.call('HSET', k[2], id, cjson.encode(inst))
end

-- The caller's live instance, or nil plus an error reply.
local function require_inst(k, argv)
  local inst = load_inst(k, argv)
  if not inst then
    return nil, err('ENOENT', 'no instance ' .. inst_id(argv) .. ' of this log')
  end
  if inst.boot ~= argv[2] then
    return nil, err('ENOENT', 'instance ' .. inst_id(argv) .. ' belongs to an earlier boot of its node')
  end
  return inst, nil
end

local function check_region(inst, raw)
  local r = tonumber(raw)
  if not r or r < 0 or r ~= math.floor(r) or r >= inst.rc then
    return nil, err('EINVAL', 'region ' .. tostring(raw) .. ' is out of range: the instance has ' .. inst.rc .. ' regions')
  end
  return r, nil
end

-- All regions of a batch are checked before any changes: a bad request
-- changes nothing.
local function check_regions(inst, argv, first)
  local regions = {}
  for i = first, #argv do
    local r, e = check_region(inst, argv[i])
    if e then return nil, e end
    regions[#regions + 1] = r
  end
  return regions, nil
end

local function is_active(inst)
  return inst.state == 'resumed' or inst.state == 'presuspended'
end

-- Marks ------------------------------------------------------------------------

local function has_mark(list, node)
  return list and string.find(list, '|' .. node .. '|', 1, true) ~= nil
end

local function add_mark(k, node, r)
  local list = redis.call('HGET', k[5], r)
  if has_mark(list, node) then return end
  redis.call('HSET', k[5], r, (list or '|') .. node .. '|')
  set_dirty(k, r)
end

-- Returns the remaining mark list ('' when none).
local function drop_mark(k, node, r)
  local list = redis.call('HGET', k[5], r)
  if not list then return '' end
  local rest = string.gsub(list, '|' .. node:gsub('%p', '%%%0') .. '|', '|', 1)
  if rest == '|' then
    redis.call('HDEL', k[5], r)
    return ''
  end
  if rest ~= list then redis.call('HSET', k[5], r, rest) end
  return rest
end

local function clear_recovery(k)
  redis.call('HSET', k[1], 'rec_region', '', 'rec_inst', '')
end

-- The recoverer went away mid-recovery: its region is still out of sync and
-- the cursor has passed it, so it goes first in line for the next asker.
local function abandon_recovery(k)
  local r = redis.call('HGET', k[1], 'rec_region')
  if r and r ~= '' then redis.call('LPUSH', k[6], r) end
  clear_recovery(k)
end

-- A node whose boot id changed crashed or rebooted: its old instances are
-- gone, and every region it had marked may differ between the legs.
local function reap_dead(k, node, boot)
  local all = redis.call('HGETALL', k[2])
  local dead = false
  local rec_inst = redis.call('HGET', k[1], 'rec_inst')
  for i = 1, #all, 2 do
    local inst = cjson.decode(all[i + 1])
    if inst.node == node and inst.boot ~= boot then
      redis.call('HDEL', k[2], all[i])
      if rec_inst == all[i] then abandon_recovery(k) end
      dead = true
    end
  end
  if not dead then return end
  local marks = redis.call('HGETALL', k[5])
  for i = 1, #marks, 2 do
    if has_mark(marks[i + 1], node) then
      local r = tonumber(marks[i])
      drop_mark(k, node, r)
      set_out_of_sync(k, r)
    end
  end
end

local function other_active(k, id)
  local all = redis.call('HGETALL', k[2])
  for i = 1, #all, 2 do
    if all[i] ~= id and is_active(cjson.decode(all[i + 1])) then
      return cjson.decode(all[i + 1])
    end
  end
  return nil
end

-- Initial bits of a log that has no history: core logs and persistent logs
-- seen for the first time (or with an explicit sync/nosync, as the kernel's
-- disk log does). Default and "sync" resync everything; "nosync" trusts the
-- legs.
local function init_bits(k, inst)
  local nosync = inst.sync == 'nosync'
  fill(k[3], inst.rc, nosync)
  -- Core logs start clean like the kernel's; persistent ones start dirty
  -- where out of sync, so a crash before the first resync still resyncs.
  fill(k[4], inst.rc, inst.persistent and not nosync)
  redis.call('HSET', k[1], 'sync_count', nosync and inst.rc or 0)
end

local function set_geometry(k, inst)
  redis.call('HSET', k[1],
    'type', inst.type, 'region_size', inst.rs, 'region_count', inst.rc,
    'target_sectors', inst.ts, 'args', inst.args, 'device', inst.device)
end

-- Functions ----------------------------------------------------------------------

-- ARGV[4] target sectors, [5] type, [6] region size, [7] region count,
-- [8] sync option ('', 'sync', 'nosync'), [9] canonical args, [10] device,
-- [11] persistent ('1' or '0'), [12] uuid.
local function ctr(k, argv)
  local node, boot, id = argv[1], argv[2], inst_id(argv)
  local inst = {
    node = node, boot = boot, luid = argv[3], state = 'constructed',
    ts = argv[4], type = argv[5], rs = tonumber(argv[6]),
    rc = tonumber(argv[7]), sync = argv[8], args = argv[9], device = argv[10],
    persistent = argv[11] == '1', resumed_at = 0,
  }
  local old = load_inst(k, argv)
  if old and old.boot == boot then
    if old.args == inst.args and old.ts == inst.ts then return inst.device end
    return err('EEXIST', 'instance ' .. id .. ' exists with arguments "' .. old.args .. '"')
  end
  reap_dead(k, node, boot)
  if redis.call('EXISTS', k[1]) == 1 then
    local log = redis.call('HMGET', k[1], 'type', 'region_size', 'region_count')
    if log[1] ~= inst.type or tonumber(log[2]) ~= inst.rs or tonumber(log[3]) ~= inst.rc then
      local other = other_active(k, id)
      if other and other.node ~= node then
        return err('EBUSY', 'node ' .. other.node .. ' runs this log as ' .. log[1] .. ' with ' ..
          log[3] .. ' regions of ' .. log[2] .. ' sectors')
      end
    end
  else
    redis.call('HSET', k[1], 'uuid', argv[12], 'schema', SCHEMA, 'sync_search', 0, 'clock', 0,
      'completed_at', 0, 'rec_region', '', 'rec_inst', '', 'fresh', 1)
    set_geometry(k, inst)
    init_bits(k, inst)
  end
  save_inst(k, id, inst)
  return inst.device
end

local function dtr(k, argv)
  local inst = load_inst(k, argv)
  if not inst then return 0 end
  local id = inst_id(argv)
  redis.call('HDEL', k[2], id)
  if redis.call('HGET', k[1], 'rec_inst') == id then abandon_recovery(k) end
  local all = redis.call('HGETALL', k[2])
  local node_left = false
  for i = 1, #all, 2 do
    if cjson.decode(all[i + 1]).node == argv[1] then node_left = true end
  end
  -- A persistent log that no table ever activated holds nothing a new CTR
  -- would not recreate, so it goes with its last table like a core log: a
  -- table the kernel refused after its CTR (a bad leg, a wrong leg count)
  -- leaves nothing behind. Unless someone marked regions: when in doubt, dirty.
  local never_active = redis.call('HGET', k[1], 'fresh') == '1' and redis.call('HLEN', k[5]) == 0
  if #all == 0 and (not inst.persistent or never_active) then
    redis.call('DEL', k[1], k[2], k[3], k[4], k[5], k[6])
    return 0
  end
  if not node_left then
    -- The node's writes are drained (DTR follows a suspend). Its marks go;
    -- the dirty bits stay, so the next activation still resyncs them.
    local marks = redis.call('HGETALL', k[5])
    for i = 1, #marks, 2 do
      if has_mark(marks[i + 1], argv[1]) then drop_mark(k, argv[1], tonumber(marks[i])) end
    end
  end
  return 0
end

local function presuspend(k, argv)
  local inst, e = require_inst(k, argv)
  if e then return e end
  if inst.state == 'resumed' then inst.state = 'presuspended' end
  save_inst(k, inst_id(argv), inst)
  return 0
end

local function postsuspend(k, argv)
  local inst, e = require_inst(k, argv)
  if e then return e end
  inst.state = 'suspended'
  save_inst(k, inst_id(argv), inst)
  if redis.call('HGET', k[1], 'rec_inst') == inst_id(argv) then abandon_recovery(k) end
  return 0
end

-- First active instance: bring the shared bits to this activation.
local function master_resume(k, inst)
  local log = redis.call('HMGET', k[1], 'type', 'region_size', 'region_count', 'fresh')
  local same_kind = log[1] == inst.type and tonumber(log[2]) == inst.rs
  local fresh = log[4] == '1'
  if not same_kind then
    init_bits(k, inst)
  elseif not inst.persistent then
    -- The kernel's core log: a new table starts from scratch, the same table
    -- resumed after a suspend keeps its bits.
    if inst.resumed_at == 0 or tonumber(log[3]) ~= inst.rc then init_bits(k, inst) end
  elseif inst.sync == 'sync' or (inst.sync == 'nosync' and fresh) then
    -- An explicit "sync" resyncs everything at every resume, as in the
    -- kernel's disk log. "nosync" trusts the legs only for a log that was
    -- never active: unlike the disk log, a crash is never forgiven.
    init_bits(k, inst)
  else
    -- The disk log's rule: whatever was dirty (a write may have been in
    -- flight at a crash) is out of sync now; what was clean is in sync.
    -- Regions added by a grown table are new, so dirty.
    local old_rc = tonumber(log[3])
    if old_rc ~= inst.rc then resize(k[4], old_rc, inst.rc, true) end
    redis.call('BITOP', 'NOT', k[3], k[4])
    clear_padding(k[3], inst.rc)
    redis.call('HSET', k[1], 'sync_count', redis.call('BITCOUNT', k[3]))
  end
  set_geometry(k, inst)
  redis.call('HSET', k[1], 'fresh', 0)
  -- No other instance is active, so no write is in flight anywhere: the
  -- remaining marks are history, already folded into the dirty bits.
  redis.call('DEL', k[5], k[6])
  clear_recovery(k)
end

local function resume(k, argv)
  local inst, e = require_inst(k, argv)
  if e then return e end
  local id = inst_id(argv)
  reap_dead(k, argv[1], argv[2])
  if not is_active(inst) then
    local other = other_active(k, id)
    if not other then
      master_resume(k, inst)
    else
      local log = redis.call('HMGET', k[1], 'type', 'region_size', 'region_count')
      if log[1] ~= inst.type or tonumber(log[2]) ~= inst.rs or tonumber(log[3]) ~= inst.rc then
        return err('EBUSY', 'node ' .. other.node .. ' runs this log as ' .. log[1] .. ' with ' ..
          log[3] .. ' regions of ' .. log[2] .. ' sectors')
      end
    end
  end
  -- A replayed RESUME of an active instance (the kernel's reconnect loop)
  -- keeps every bit and only restarts the recovery cursor, as a resume does.
  inst.state = 'resumed'
  inst.resumed_at = redis.call('HINCRBY', k[1], 'clock', 1)
  save_inst(k, id, inst)
  redis.call('HSET', k[1], 'sync_search', 0)
  return 0
end

local function get_region_size(k, argv)
  local inst, e = require_inst(k, argv)
  if e then return e end
  return inst.rs
end

local function is_clean(k, argv)
  local inst, e = require_inst(k, argv)
  if e then return e end
  local r, e2 = check_region(inst, argv[4])
  if e2 then return e2 end
  return 1 - getbit(k[4], r)
end

-- cmirrord's in-sync latch (LVM commit 53670b18f): once the whole log
-- reached sync during this instance's activation, IN_SYNC answers 1 until
-- the instance resumes again, so a region another node marks out of sync
-- after a leg failure keeps being written to every leg here.
local function latched(k, inst)
  if not is_active(inst) then return false end
  return tonumber(redis.call('HGET', k[1], 'completed_at')) > inst.resumed_at
end

-- {answer, latched} for IN_SYNC, or nil plus an error reply.
local function in_sync_answer(k, argv)
  local inst, e = require_inst(k, argv)
  if e then return nil, e end
  local r, e2 = check_region(inst, argv[4])
  if e2 then return nil, e2 end
  if latched(k, inst) then return {1, 1} end
  return {getbit(k[3], r), 0}
end

local function in_sync(k, argv)
  local answer, e = in_sync_answer(k, argv)
  if e then return e end
  return answer[1]
end

-- IN_SYNC with the latch said out loud: {answer, latched}. While latched is
-- 1 the answer is 1 for every region of this instance, whatever happens to
-- the bits, until the instance itself suspends, resumes or goes (only its own
-- node's requests end a latch; completed_at never goes back). That is what
-- lets a bridge answer IN_SYNC from the latch without asking (bridge/latch.py).
-- The plain in_sync stays for services that predate this one.
local function in_sync_latch(k, argv)
  local answer, e = in_sync_answer(k, argv)
  if e then return e end
  return answer
end

local function mark(k, argv)
  local inst, e = require_inst(k, argv)
  if e then return e end
  local regions, e2 = check_regions(inst, argv, 4)
  if e2 then return e2 end
  for _, r in ipairs(regions) do add_mark(k, argv[1], r) end
  return 0
end

local function clear(k, argv)
  local inst, e = require_inst(k, argv)
  if e then return e end
  local regions, e2 = check_regions(inst, argv, 4)
  if e2 then return e2 end
  for _, r in ipairs(regions) do
    if drop_mark(k, argv[1], r) == '' then set_clean_if_safe(k, r) end
  end
  return 0
end

-- FLUSH: with integrated flush its payload is marks. Each mark is durable
-- when its write command is (appendfsync always), so the marks made by
-- earlier MARK_REGION calls need nothing more here.
local function flush(k, argv)
  return mark(k, argv)
end

local function get_resync_work(k, argv)
  local inst, e = require_inst(k, argv)
  if e then return e end
  if inst.state ~= 'resumed' then return {0, 0} end
  local id = inst_id(argv)
  local log = redis.call('HMGET', k[1], 'region_count', 'sync_search', 'rec_region', 'rec_inst')
  local rc, search = tonumber(log[1]), tonumber(log[2])
  if log[4] ~= '' then
    -- One recovery at a time per log. The same instance asking again
    -- (the kernel retried) gets the same region again.
    if log[4] == id then return {1, tonumber(log[3])} end
    return {0, 0}
  end
  -- Regions writers wait for (and abandoned recoveries) first, even when
  -- the cursor has passed them.
  local r = nil
  while true do
    local p = redis.call('LPOP', k[6])
    if not p then break end
    p = tonumber(p)
    if p < rc and getbit(k[3], p) == 0 then r = p break end
  end
  if not r and search >= rc then return {0, 0} end
  if not r then
    local found = redis.call('BITPOS', k[3], 0, search, rc - 1, 'BIT')
    if found < 0 or found >= rc then
      -- Nothing left: park the cursor past the end, so IS_REMOTE_RECOVERING
      -- stops delaying writes (LVM commit 34cbedcea).
      redis.call('HSET', k[1], 'sync_search', rc + 1)
      return {0, 0}
    end
    r = found
    redis.call('HSET', k[1], 'sync_search', r + 1)
  end
  redis.call('HSET', k[1], 'rec_region', r, 'rec_inst', id)
  return {1, r}
end

local function set_region_sync(k, argv)
  local inst, e = require_inst(k, argv)
  if e then return e end
  local r, e2 = check_region(inst, argv[4])
  if e2 then return e2 end
  local id = inst_id(argv)
  local log = redis.call('HMGET', k[1], 'rec_region', 'rec_inst')
  if log[2] == id or (log[1] ~= '' and tonumber(log[1]) == r) then clear_recovery(k) end
  if argv[5] == '1' then
    if set_in_sync(k, r) then
      redis.call('HSET', k[1], 'completed_at', redis.call('HINCRBY', k[1], 'clock', 1))
    end
  else
    set_out_of_sync(k, r)
  end
  return 0
end

local function get_sync_count(k, argv)
  local _, e = require_inst(k, argv)
  if e then return e end
  return tonumber(redis.call('HGET', k[1], 'sync_count'))
end

local function is_remote_recovering(k, argv)
  local inst, e = require_inst(k, argv)
  if e then return e end
  local r, e2 = check_region(inst, argv[4])
  if e2 then return e2 end
  local log = redis.call('HMGET', k[1], 'region_count', 'sync_search', 'sync_count', 'rec_region')
  local rc, search, count = tonumber(log[1]), tonumber(log[2]), tonumber(log[3])
  if inst.state ~= 'resumed' then
    -- Recovery is halted on this instance until it resumes.
    return {0, inst.rc}
  end
  local hint
  if count >= rc then
    hint = rc
  else
    -- Below the cursor every region was visited; the hint may say "all" only
    -- when all really are in sync.
    hint = math.min(math.max(search - 1, 0), rc - 1)
  end
  if r >= rc or getbit(k[3], r) == 1 then return {0, hint} end
  if log[4] == '' or tonumber(log[4]) ~= r then
    redis.call('LREM', k[6], 0, r)
    redis.call('LPUSH', k[6], r)
    redis.call('LTRIM', k[6], 0, 1023)
  end
  return {1, hint}
end

-- Instance and log facts for STATUS_INFO / STATUS_TABLE.
local function describe(k, argv)
  local inst, e = require_inst(k, argv)
  if e then return e end
  return cjson.encode(inst)
end

-- The whole log, read at one instant (admin).
local function state(k, argv)
  if redis.call('EXISTS', k[1]) == 0 then
    return err('ENOENT', 'no log ' .. tostring(argv[1]))
  end
  return {
    redis.call('HGETALL', k[1]),
    redis.call('HGETALL', k[2]),
    redis.call('GET', k[3]) or '',
    redis.call('GET', k[4]) or '',
    redis.call('HGETALL', k[5]),
    redis.call('LRANGE', k[6], 0, -1),
  }
end

local function summary(k, argv)
  if redis.call('EXISTS', k[1]) == 0 then return false end
  return {
    redis.call('HGETALL', k[1]),
    redis.call('HVALS', k[2]),
    redis.call('BITCOUNT', k[4]),
  }
end

local function version()
  return SCHEMA
end

-- Registration. Read-only functions carry 'no-writes' so FCALL_RO (and
-- replicas) can serve them.
local function writer(name, fn)
  redis.register_function('dmulog_v1_' .. name, function(k, a) return fn(k, a) end)
end
local function reader(name, fn)
  redis.register_function{
    function_name = 'dmulog_v1_' .. name,
    callback = function(k, a) return fn(k, a) end,
    flags = {'no-writes'},
  }
end

writer('ctr', ctr)
writer('dtr', dtr)
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
reader('state', state)
reader('summary', summary)
reader('version', version)
