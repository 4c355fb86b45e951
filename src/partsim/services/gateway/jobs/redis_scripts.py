"""The Lua scripts of the Redis back end (``redis_queue.py``): each runs atomically in Redis.

Key names (``K`` the job hash ``<prefix>:job:{<id>}``): ``K:done`` the accounted item indexes,
``K:failures`` the failures list (JSON ``[track_id, message]``), ``K:retry`` the failed items kept
for a retry (item index -> JSON of its stream entry fields plus ``failure``, its failures entry).
An item's uploaded bytes live at ``<prefix>:upload:{<id>}:<index>`` (same hash tag as ``K``).
"""

# Count an item once: KEYS job hash, accounted set, failures list, retry hash;
# ARGV item index, "1"|"0", failure JSON, now, ttl, the item's retry record (JSON).
# Returns 1 counted, 0 already counted, -1 job gone. A finished job's keys (and the uploads of its
# failed items) expire after ttl.
ACCOUNT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
if ARGV[2] == '1' then
  redis.call('HINCRBY', KEYS[1], 'succeeded', 1)
else
  redis.call('HINCRBY', KEYS[1], 'failed', 1)
  redis.call('RPUSH', KEYS[3], ARGV[3])
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[6])
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[4])
local v = redis.call('HMGET', KEYS[1], 'total', 'succeeded', 'failed')
if tonumber(v[2]) + tonumber(v[3]) >= tonumber(v[1]) then
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[4])
  for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
  for _, rec in ipairs(redis.call('HVALS', KEYS[4])) do
    local audio = cjson.decode(rec)['audio']
    if audio then redis.call('EXPIRE', audio, ARGV[5]) end
  end
end
return 1
"""

# KEYS job hash, accounted set; ARGV item index, now. Returns 1 if the item needs no processing.
BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 1 end
if redis.call('HSETNX', KEYS[1], 'started_at', ARGV[2]) == 1 then
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
end
return 0
"""

# Acknowledge an entry: KEYS stream, job hash, accounted set, retry hash; ARGV group, entry id, item
# index, upload key or ''. The upload is deleted unless still needed: kept for a retry (a failed item)
# or queued again (a retried item not yet accounted); the job gone, nothing needs it.
ACK = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[4] == '' then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('HEXISTS', KEYS[4], ARGV[3]) == 1 then return 0 end
  if redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 0 then return 0 end
end
return redis.call('DEL', ARGV[4])
"""

# Queue a job's failed items again: KEYS job hash, accounted set, failures list, retry hash, stream;
# ARGV now. Each failed item gets a new stream entry (same fields), leaves the accounted set and the
# failures list; the failed count drops by their number and the job is unfinished again (no expiry).
# Returns the number queued, -1 for an unknown job.
RETRY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local kept = redis.call('HGETALL', KEYS[4])
local n = 0
for i = 1, #kept, 2 do
  local idx, rec = kept[i], cjson.decode(kept[i + 1])
  local entry = {'job', rec['job'], 'idx', idx, 'track', rec['track'], 'meta', rec['meta']}
  if rec['audio'] then
    table.insert(entry, 'audio'); table.insert(entry, rec['audio'])
    redis.call('PERSIST', rec['audio'])
  else
    table.insert(entry, 'uri'); table.insert(entry, rec['uri'])
  end
  redis.call('XADD', KEYS[5], '*', unpack(entry))
  redis.call('SREM', KEYS[2], idx)
  redis.call('LREM', KEYS[3], 1, rec['failure'])
  n = n + 1
end
if n > 0 then
  redis.call('DEL', KEYS[4])
  redis.call('HINCRBY', KEYS[1], 'failed', -n)
  redis.call('HDEL', KEYS[1], 'finished_at')
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[1])
  for i = 1, 3 do redis.call('PERSIST', KEYS[i]) end
end
return n
"""

# The job index ``<prefix>:jobs`` (a sorted set: job id scored by its created_at, added in the same MULTI as
# the job hash) is read and trimmed by the two scripts below. They build job keys from the prefix (ARGV),
# so, like RETRY (which spans the stream and a job's keys), they need one Redis, not a Redis Cluster.

# One page of ListIngestJobs: KEYS the job index; ARGV the position's created_at ('+inf' for the first
# page), the position's job id ('' for the first page), limit, key prefix. Jobs run newest first: score
# descending, then member descending (Redis orders equal scores by member bytes), strictly after the
# position. Returns up to limit {job id, job hash as a flat list, failures list}; an index entry whose job
# hash expired is skipped and removed from the index.
LIST = """
local function bytes_before(a, b)  -- a < b byte by byte (Lua's own < follows the locale)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local limit, after = tonumber(ARGV[3]), ARGV[2]
local top = after ~= '' and tonumber(ARGV[1]) or nil
local out, gone, offset, batch = {}, {}, 0, math.max(limit, 100)
while #out < limit do
  local rows = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '-inf', 'WITHSCORES', 'LIMIT', offset, batch)
  for i = 1, #rows, 2 do
    local id = rows[i]
    if top == nil or tonumber(rows[i + 1]) < top or bytes_before(id, after) then
      local key = ARGV[4] .. ':job:{' .. id .. '}'
      local h = redis.call('HGETALL', key)
      if #h == 0 then
        table.insert(gone, id)
      else
        table.insert(out, {id, h, redis.call('LRANGE', key .. ':failures', 0, -1)})
        if #out >= limit then break end
      end
    end
  end
  if #rows < 2 * batch then break end
  offset = offset + batch
end
for i = 1, #gone, 1000 do redis.call('ZREM', KEYS[1], unpack(gone, i, math.min(i + 999, #gone))) end
return out
"""

# Drop expired jobs from the index, so that it stays bounded when nobody lists: KEYS the job index; ARGV
# the newest created_at an expired job can have (now minus the TTL: a job expires the TTL after it finished,
# so no sooner than that after it was created), key prefix, how many of the oldest entries to look at.
# Returns the number removed.
TRIM = """
local gone = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])) do
  if redis.call('EXISTS', ARGV[2] .. ':job:{' .. id .. '}') == 0 then table.insert(gone, id) end
end
for i = 1, #gone, 1000 do redis.call('ZREM', KEYS[1], unpack(gone, i, math.min(i + 999, #gone))) end
return #gone
"""
