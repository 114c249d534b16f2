"""The Lua scripts the queue runs inside Redis, each atomic: recording results (first write wins),
the cached-result check, reading records for export (by index, and by point key for records
written before format 3), and clearing failed points for a retry.
Their keys and arguments are described above each one; `swarmrun.execution.queue` calls them."""

from __future__ import annotations

# The task's sole sweep (`sole` in `origins`; only `sweep` if given) is one no longer: it goes
# into the `unindexed` set, for `swarmrun.execution.keyindex` to put its records in the key index.
# `must_index`: before `asker` (a sweep, or '') looks points up by key, the sole sweep is demoted
# unless it is the asker (whose own records are found by index); true when sweeps other than the
# asker wait to be indexed.
_DEMOTE_LUA = """
local function demote(origins, unindexed, sweep)
  local sole = redis.call('HGET', origins, 'sole')
  if sole and (sweep == nil or sole == sweep) then
    redis.call('HDEL', origins, 'sole')
    redis.call('SADD', unindexed, sole)
  end
  return sole
end
local function must_index(origins, unindexed, asker)
  if redis.call('HGET', origins, 'sole') ~= asker then demote(origins, unindexed, nil) end
  local waiting = redis.call('SCARD', unindexed)
  return waiting > 1 or (waiting == 1 and redis.call('SISMEMBER', unindexed, asker) == 0)
end
"""

# KEYS: origins, the unindexed set; ARGV: a sweep. Demotes that sweep if it is the task's sole one.
DEMOTE_LUA = _DEMOTE_LUA + "\ndemote(KEYS[1], KEYS[2], ARGV[1])\nreturn 1\n"

# KEYS: origins, the unindexed set; ARGV: the asking sweep (or ''). `must_index`: 1 or 0.
MUST_INDEX_LUA = _DEMOTE_LUA + "\nreturn must_index(KEYS[1], KEYS[2], ARGV[1]) and 1 or 0\n"

# KEYS: done, counts, origins, errors, meta, inflight, the format-1 store, the unindexed set.
# ARGV: seconds, isolated
# flag, then one blob of lines `index TAB point-key TAB status TAB record`, then the store's bucket
# prefix, the origin (`SWEEP WORKER`) of the ok records and the sweep id.
# One argument instead of four per point: packing arguments was the worker's largest cost on tiny
# points. Fields never hold a TAB or a newline: records are JSON (control characters escaped),
# point keys are hex, statuses are words. An ok record arrives without its origin id: the script
# interns the origin (atomically with the write, so an id never goes stale) and prepends it.
# Format 3 (see `swarmrun.execution.results`): an ok record goes into this sweep's index bucket
# `<prefix>i<s>:<index // 128>` (field `index % 128`; `s` the sweep interned in `origins`), and a
# pointer `<s><index as 9 digits>` into the key index `<prefix><key[:4]>` (field `key[4:]`; the
# first writer of a point key wins). A `cached` point gets a copy of what the key index holds
# for its key (a pointer, or a record written before format 3) in this sweep's index bucket.
# `sole` in origins names the task's only sweep with results, set when the task's first result
# interns its sweep. Nobody looks that sweep's points up by key (the cached check skips its own
# lookups), so its ok records get no key index entry: about half the script's cost and memory.
# When another sweep's first result is interned (or another sweep asks, `CACHED_LUA`, or the
# sweep is purged), `sole` is dropped and the sweep goes into the task's `unindexed` set
# (KEYS[8]): from then on its records are indexed here, and the ones before by
# `swarmrun.execution.keyindex` (which needs the sweep's spec for their point keys).
# ARGV[7], ARGV[8]: the lowest and highest index of the blob. The done bits of that span are read
# with one GETRANGE, tested and set in Lua, and written back with one SETRANGE: one command (and
# one append-only-file entry) a flush instead of a SETBIT a point. A span over `DONE_SPAN` bits
# (2^20: indices far apart in one blob) goes bit by bit.
RECORD_LUA = (
    _DEMOTE_LUA
    + """
local DONE_SPAN = 1048576
local done, counts, origins, errors, meta, inflight = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local executed, duplicates, fresh, entries = 0, 0, 0, 0
local tally = {}
local isolated = ARGV[2] == '1'
local prefix, origin, number, base, legacy = ARGV[4], nil, nil, nil, nil
local bucket, fields, filled = -1, {}, 0  -- the index bucket being filled, its field-value pairs
local untouched = nil  -- the origins hash did not exist before this script first wrote to it
local function new_id()
  if untouched == nil then untouched = redis.call('EXISTS', origins) == 0 end
  return redis.call('HINCRBY', origins, '#next', 1)
end
local function origin_id()
  if origin then return origin end
  origin = redis.call('HGET', origins, ARGV[5])
  if not origin then
    origin = new_id()
    redis.call('HSET', origins, ARGV[5], origin, '#' .. origin, ARGV[5])
  end
  origin = '[' .. origin .. ','
  return origin
end
local indexed = true  -- this sweep's ok records go into the key index: it is not the sole one
local function index_base()
  if base then return base end
  number = redis.call('HGET', origins, ARGV[6])
  if not number then  -- a sweep's first result: it is the task's only sweep, or no longer is
    number = new_id()
    redis.call('HSET', origins, ARGV[6], number)
    if untouched then
      redis.call('HSET', origins, 'sole', ARGV[6])
      indexed = false
    else
      demote(origins, KEYS[8], nil)
    end
  else
    indexed = redis.call('HGET', origins, 'sole') ~= ARGV[6]
  end
  base = prefix .. 'i' .. number .. ':'
  return base
end
local function flush()
  if filled > 0 then redis.call('HSET', base .. bucket, unpack(fields, 1, filled)) end
  filled = 0
end
-- the ok records of one index bucket go in one HSET (points of a chunk come in index order)
local function store(i, rec)
  local b = math.floor(i / 128)
  if b ~= bucket then
    flush()
    bucket = b
    index_base()
  end
  fields[filled + 1] = i - b * 128
  fields[filled + 2] = rec
  filled = filled + 2
end
-- the done bits of [lo, hi] as byte values, first byte `low_byte` (nil: bit by bit)
local lo, hi = tonumber(ARGV[7]), tonumber(ARGV[8])
local bits, low_byte, flipped = nil, nil, false
if lo and hi and hi >= lo and hi - lo < DONE_SPAN then
  low_byte = math.floor(lo / 8)
  local count = math.floor(hi / 8) - low_byte + 1
  local text = redis.call('GETRANGE', done, low_byte, low_byte + count - 1)
  bits = {}
  for k = 1, #text, 4096 do  -- string.byte returns its values on the stack: a slice at a time
    local slice = {string.byte(text, k, math.min(#text, k + 4095))}
    for j = 1, #slice do bits[k + j - 1] = slice[j] end
  end
  for k = #text + 1, count do bits[k] = 0 end  -- past the bitmap's end: zeros
end
local function flip(i)  -- set point i's done bit; true when it was clear
  if not bits then return redis.call('SETBIT', done, i, 1) == 0 end
  local k, mask = math.floor(i / 8) - low_byte + 1, bit.rshift(128, i % 8)
  if bits[k] == nil then return redis.call('SETBIT', done, i, 1) == 0 end  -- outside [lo, hi]
  if bit.band(bits[k], mask) ~= 0 then return false end
  bits[k] = bit.bor(bits[k], mask)
  flipped = true
  return true
end
for idx, pkey, status, rec in string.gmatch(ARGV[3], '(%d+)\\t([^\\t\\n]*)\\t([^\\t\\n]*)\\t([^\\n]*)\\n') do
  local cached = status == 'cached'
  entries = entries + 1
  if not cached then executed = executed + 1 end
  if flip(tonumber(idx)) then
    fresh = fresh + 1
    local i = tonumber(idx)
    if cached then
      tally['ok'] = (tally['ok'] or 0) + 1
      tally['cached'] = (tally['cached'] or 0) + 1
      local held = redis.call('HGET', prefix .. string.sub(pkey, 1, 4), string.sub(pkey, 5))
      if not held then
        if legacy == nil then legacy = redis.call('EXISTS', KEYS[7]) == 1 end
        if legacy then held = redis.call('HGET', KEYS[7], pkey) end
      end
      if held then redis.call('HSETNX', index_base() .. math.floor(i / 128), i % 128, held) end
    else
      tally[status] = (tally[status] or 0) + 1
      if status == 'ok' then
        store(i, origin_id() .. rec)
        if indexed and pkey ~= '' then
          redis.call('HSETNX', prefix .. string.sub(pkey, 1, 4), string.sub(pkey, 5),
            number .. string.format('%09d', i))
        end
      else
        redis.call('HSET', errors, idx, rec)
      end
    end
  elseif not cached then
    duplicates = duplicates + 1
  end
  if isolated then redis.call('HDEL', inflight, idx) end
end
flush()
if flipped then
  local parts = {}
  for k = 1, #bits, 4096 do parts[#parts + 1] = string.char(unpack(bits, k, math.min(#bits, k + 4095))) end
  redis.call('SETRANGE', done, low_byte, table.concat(parts))
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
)

# KEYS: the format-1 store, the origins hash, the unindexed set; ARGV[1]: point keys, one a line;
# ARGV[2]: the bucket prefix; ARGV[3]: the asking sweep (or ''); ARGV[4]: 'now' to look up what
# the key index holds even while sweeps wait to be indexed. Returns the 1-based positions of the
# keys with a stored result: only the hits travel back (on a fresh sweep the answer is empty, not
# one nil per point); or -1 when another sweep's records are not all in the key index yet (the
# caller indexes them, `swarmrun.execution.keyindex`, and asks again with 'now').
# A task without an origin has no ok record yet (the first record writes its origin), and a task
# whose only sweep (`sole`, see RECORD_LUA) is the asking one has none for its points without a
# result: nothing is looked up. Any other asker demotes the sole sweep (it must be indexed now).
# A key index entry is a format-3 pointer or a format-2 record: either is a result.
CACHED_LUA = (
    _DEMOTE_LUA
    + """
local out, position, prefix, asker = {}, 0, ARGV[2], ARGV[3]
local legacy = redis.call('EXISTS', KEYS[1]) == 1
if not legacy and redis.call('EXISTS', KEYS[2]) == 0 then return out end
if redis.call('HGET', KEYS[2], 'sole') == asker then return out end
if must_index(KEYS[2], KEYS[3], asker) and ARGV[4] ~= 'now' then return -1 end
for pkey in string.gmatch(ARGV[1], '[^\\n]+') do
  position = position + 1
  if redis.call('HEXISTS', prefix .. string.sub(pkey, 1, 4), string.sub(pkey, 5)) == 1
      or (legacy and redis.call('HEXISTS', KEYS[1], pkey) == 1) then
    out[#out + 1] = position
  end
end
return out
"""
)

# ARGV: the bucket prefix, the sweep's number `s`, START, STOP. The indices in [START, STOP) of
# the sweep's own ok records (not the pointers of its cached points), joined by commas.
OWN_RECORDS_LUA = """
local prefix, number, start, stop = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for b = math.floor(start / 128), math.floor((stop - 1) / 128) do
  local kv = redis.call('HGETALL', prefix .. 'i' .. number .. ':' .. b)
  for j = 1, #kv, 2 do
    local i = b * 128 + tonumber(kv[j])
    local c = string.byte(kv[j + 1], 1)
    if i >= start and i < stop and (c < 48 or c > 57) then out[#out + 1] = i end
  end
end
return table.concat(out, ',')
"""

# ARGV: the bucket prefix, then lines `pointer TAB point-key`: each key's entry in the key index
# (`<s><index as 9 digits>`, a record of sweep `s`), unless the key has one (the first wins).
INDEX_LUA = """
local prefix, sub, n = ARGV[1], string.sub, 0
for pointer, pkey in string.gmatch(ARGV[2], '(%d+)\\t([^\\n]+)\\n') do
  n = n + redis.call('HSETNX', prefix .. sub(pkey, 1, 4), sub(pkey, 5), pointer)
end
return n
"""

# The record a stored value stands for: a record itself (`[...]` or `{...}`), or a format-3
# pointer `<s><index as 9 digits>` resolved in sweep `s`'s index bucket (one level: what it
# names must be a record, else false). `prefix` is the task's bucket prefix.
_RESOLVE_LUA = """
local function resolve(prefix, rec)
  local c = string.byte(rec, 1)
  if c < 48 or c > 57 then return rec end
  local i = tonumber(string.sub(rec, -9))
  local bucket = prefix .. 'i' .. string.sub(rec, 1, -10) .. ':' .. math.floor(i / 128)
  local found = redis.call('HGET', bucket, i % 128)
  if found then
    c = string.byte(found, 1)
    if c < 48 or c > 57 then return found end
  end
  return false
end
"""

# KEYS: the sweep's errors, the format-1 store; ARGV: the bucket prefix, then indices and point
# keys, one a line each. Returns every point's record joined by commas (`0` where none), so a
# block of results crosses as one string and is decoded by one `json.loads`. By point key: what
# records written before format 3 need (a point key's entry is then the record itself).
EXPORT_LUA = (
    _RESOLVE_LUA
    + """
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
  if not rec then
    rec = redis.call('HGET', prefix .. string.sub(pkey, 1, 4), string.sub(pkey, 5))
    if rec then rec = resolve(prefix, rec) end
  end
  if not rec and legacy then rec = redis.call('HGET', legacy_key, pkey) end
  out[n] = rec or '0'
end
return table.concat(out, ',')
"""
)

# KEYS: the sweep's errors, the task's origins, the sweep's done bitmap; ARGV: the bucket prefix,
# the sweep id, then either `range START STOP` or `points` and indices, one a line. Every point's
# record by its index (format 3): this sweep's index bucket entry (a pointer resolved), else, for
# a done point, its failure; joined by commas, `0` where none (as `EXPORT_LUA`). A range reads
# the few buckets covering it whole, but none without a done point: a range with no done point
# is answered with an empty string, so the cost follows the points recorded, not the range.
INDEX_EXPORT_LUA = (
    _RESOLVE_LUA
    + """
local errors, prefix, done = KEYS[1], ARGV[1], KEYS[3]
local number = redis.call('HGET', KEYS[2], ARGV[2])
local base = number and (prefix .. 'i' .. number .. ':')
local byte, find, sub, floor = string.byte, string.find, string.sub, math.floor
local out, indices, n, start, filled, pointers = {}, {}, 0, 0, 0, false
local mask, first = '', 0
if ARGV[3] == 'range' then
  start = tonumber(ARGV[4])
  n = tonumber(ARGV[5]) - start
  first = floor(start / 8)
  mask = redis.call('GETRANGE', done, first, floor((start + n - 1) / 8))
  if not find(mask, '[^%z]') then return '' end
  for b = floor(start / 128), base and floor((start + n - 1) / 128) or -1 do
    local lo, hi = math.max(b * 128, start), math.min(b * 128 + 127, start + n - 1)
    if find(sub(mask, floor(lo / 8) - first + 1, floor(hi / 8) - first + 1), '[^%z]') then
      local kv = redis.call('HGETALL', base .. b)
      local shift = b * 128 - start + 1
      for j = 1, #kv, 2 do
        local pos = shift + tonumber(kv[j])
        if pos >= 1 and pos <= n then
          local rec = kv[j + 1]
          out[pos] = rec
          filled = filled + 1
          if byte(rec, 1) < 58 then pointers = true end  -- a digit: a pointer
        end
      end
    end
  end
else
  for idx in string.gmatch(ARGV[4], '[^\\n]+') do
    local i = tonumber(idx)
    n = n + 1
    indices[n] = idx
    out[n] = base and redis.call('HGET', base .. floor(i / 128), i % 128)
  end
  pointers = true
end
if filled == n and not pointers then return table.concat(out, ',') end
local failures = redis.call('HLEN', errors) > 0
for pos = 1, n do
  local rec = out[pos]
  if rec and byte(rec, 1) < 58 then
    rec = resolve(prefix, rec)
    out[pos] = rec
  end
  if not rec then
    if failures then
      local i = indices[pos]
      if not i then  -- in a range: a failure only for a done point
        local k = start + pos - 1
        if bit.band(byte(mask, floor(k / 8) - first + 1) or 0, bit.rshift(128, k % 8)) ~= 0 then i = k end
      end
      if i then rec = redis.call('HGET', errors, i) end
    end
    out[pos] = rec or '0'
  end
end
return table.concat(out, ',')
"""
)

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
