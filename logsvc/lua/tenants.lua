#!lua name=dmulog_tenants
--[[
A tenant's capacity quota: how many logs it has and how many regions they
hold together (logsvc/capacity.py calls these before a CTR; the log itself is
in another slot, so admission and construction are two calls).

KEYS[1]  hash  stored log name -> its region count: the logs admitted and
               not known to be gone. A log deleted since, or a CTR that
               failed after its admission, leaves its name here until the
               next refusal makes logsvc look (dmulog_tenants_forget): the
               count may be high for a while, never low.

Errors: EQUOTA, with a message that starts "quota exceeded: " (the bridge
answers the kernel EDQUOT at once: dmulog/quotas.py); EINVAL.
--]]

-- ARGV: tenant, log name, its regions, most logs (-1: any), most regions (-1: any).
local function admit(K, A)
  local tenant, name = A[1], A[2]
  local regions, max_logs, max_regions = tonumber(A[3]), tonumber(A[4]), tonumber(A[5])
  if not (regions and max_logs and max_regions) then
    return redis.error_reply('EINVAL regions and quotas must be numbers')
  end
  if redis.call('HEXISTS', K[1], name) == 1 then return 0 end
  local logs = redis.call('HLEN', K[1])
  if max_logs >= 0 and logs + 1 > max_logs then
    return redis.error_reply('EQUOTA quota exceeded: tenant ' .. tenant .. ' has ' .. logs .. ' of its ' ..
      max_logs .. ' logs')
  end
  if max_regions >= 0 then
    local total = 0
    for _, v in ipairs(redis.call('HVALS', K[1])) do total = total + tonumber(v) end
    if total + regions > max_regions then
      return redis.error_reply('EQUOTA quota exceeded: tenant ' .. tenant .. ' has ' .. total .. ' of its ' ..
        max_regions .. ' regions, and this log needs ' .. regions)
    end
  end
  redis.call('HSET', K[1], name, regions)
  return 1
end

-- ARGV: the names of logs that are gone.
local function forget(K, A)
  if #A == 0 then return 0 end
  return redis.call('HDEL', K[1], unpack(A))
end

local function names(K)
  return redis.call('HKEYS', K[1])
end

redis.register_function{function_name = 'dmulog_tenants_admit', callback = admit}
redis.register_function{function_name = 'dmulog_tenants_forget', callback = forget}
redis.register_function{function_name = 'dmulog_tenants_names', callback = names, flags = {'no-writes'}}
