"""The Lua scripts the queue runs inside Redis, each atomic: recording results (first write wins),
the cached-result check, reading records for export, and clearing failed points for a retry.
Their keys and arguments are described above each one; `swarmrun.execution.queue` calls them."""

from __future__ import annotations

# ARGV: seconds, isolated flag, then one blob of lines `index TAB point-key TAB status TAB record`,
# then the store's bucket prefix and the origin (`SWEEP WORKER`) of the ok records.
# One argument instead of four per point: packing arguments was the worker's largest cost on tiny
# points. Fields never hold a TAB or a newline: records are JSON (control characters escaped),
# point keys are hex, statuses are words. An ok record arrives without its origin id: the script
# interns the origin (atomically with the write, so an id never goes stale) and prepends it.
RECORD_LUA = """
local done, counts, origins, errors, meta, inflight = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local executed, duplicates, fresh, entries = 0, 0, 0, 0
local tally = {}
local isolated = ARGV[2] == '1'
local prefix, origin = ARGV[4], nil
local function origin_id()
  if origin then return origin end
  origin = redis.call('HGET', origins, ARGV[5])
  if not origin then
    origin = redis.call('HINCRBY', origins, '#next', 1)
    redis.call('HSET', origins, ARGV[5], origin, '#' .. origin, ARGV[5])
  end
  origin = '[' .. origin .. ','
  return origin
end
for idx, pkey, status, rec in string.gmatch(ARGV[3], '(%d+)\\t([^\\t\\n]*)\\t([^\\t\\n]*)\\t([^\\n]*)\\n') do
  local cached = status == 'cached'
  entries = entries + 1
  if not cached then executed = executed + 1 end
  if redis.call('SETBIT', done, idx, 1) == 0 then
    fresh = fresh + 1
    if cached then
      tally['ok'] = (tally['ok'] or 0) + 1
      tally['cached'] = (tally['cached'] or 0) + 1
    else
      tally[status] = (tally[status] or 0) + 1
      if status == 'ok' then
        redis.call('HSETNX', prefix .. string.sub(pkey, 1, 4), string.sub(pkey, 5), origin_id() .. rec)
      else
        redis.call('HSET', errors, idx, rec)
      end
    end
  elseif not cached then
    duplicates = duplicates + 1
  end
  if isolated then redis.call('HDEL', inflight, idx) end
end
for k, v in pairs(tally) do redis.call('HINCRBY', counts, k, v) end
if executed > 0 then redis.call('HINCRBY', counts, 'executions', executed) end
if duplicates > 0 then redis.call('HINCRBY', counts, 'duplicates', duplicates) end
if entries > 0 then
  redis.call('HINCRBY', counts, 'processed', entries)
  redis.call('HINCRBYFLOAT', counts, 'seconds', ARGV[1])
end
return {fresh, redis.call('HGET', meta, 'state') or ''}
"""

# KEYS: the format-1 store, the origins hash; ARGV[1]: point keys, one a line; ARGV[2]: the bucket
# prefix. Returns the 1-based positions of those with a stored result. Only the hits travel back:
# on a fresh sweep the answer is empty, not one nil per point. A task without an origin has no
# ok record yet (the first record writes its origin), so nothing is looked up.
CACHED_LUA = """
local out, position, prefix = {}, 0, ARGV[2]
local legacy = redis.call('EXISTS', KEYS[1]) == 1
if not legacy and redis.call('EXISTS', KEYS[2]) == 0 then return out end
for pkey in string.gmatch(ARGV[1], '[^\\n]+') do
  position = position + 1
  if redis.call('HEXISTS', prefix .. string.sub(pkey, 1, 4), string.sub(pkey, 5)) == 1
      or (legacy and redis.call('HEXISTS', KEYS[1], pkey) == 1) then
    out[#out + 1] = position
  end
end
return out
"""

# KEYS: the sweep's errors, the format-1 store; ARGV: the bucket prefix, then indices and point
# keys, one a line each. Returns every point's record joined by commas (`0` where none), so a
# block of results crosses as one string and is decoded by one `json.loads`.
EXPORT_LUA = """
local errors, legacy_key, prefix = KEYS[1], KEYS[2], ARGV[1]
local failures = redis.call('HLEN', errors) > 0
local legacy = redis.call('EXISTS', legacy_key) == 1
local indices, out, n = {}, {}, 0
if failures then
  for idx in string.gmatch(ARGV[2], '[^\\n]+') do indices[#indices + 1] = idx end
end
for pkey in string.gmatch(ARGV[3], '[^\\n]+') do
  n = n + 1
  local rec = false
  if failures then rec = redis.call('HGET', errors, indices[n]) end
  if not rec then rec = redis.call('HGET', prefix .. string.sub(pkey, 1, 4), string.sub(pkey, 5)) end
  if not rec and legacy then rec = redis.call('HGET', legacy_key, pkey) end
  out[n] = rec or '0'
end
return table.concat(out, ',')
"""

CLEAR_FAILED_LUA = """
local done, counts, errors = KEYS[1], KEYS[2], KEYS[3]
local fields = redis.call('HGETALL', errors)
for i = 1, #fields, 2 do
  local status = cjson.decode(fields[i + 1])['s']
  redis.call('SETBIT', done, fields[i], 0)
  redis.call('HINCRBY', counts, status, -1)
end
redis.call('DEL', errors)
return #fields / 2
"""


# ARGV: point indices; forgets the failed/timed-out result of each (others are left alone).
CLEAR_POINTS_LUA = """
local done, counts, errors = KEYS[1], KEYS[2], KEYS[3]
local cleared = 0
for i = 1, #ARGV do
  local rec = redis.call('HGET', errors, ARGV[i])
  if rec then
    redis.call('SETBIT', done, ARGV[i], 0)
    redis.call('HINCRBY', counts, cjson.decode(rec)['s'], -1)
    redis.call('HDEL', errors, ARGV[i])
    cleared = cleared + 1
  end
end
return cleared
"""
