-- The Redis store's atomic transitions (src/store/redis.rs loads them with EVALSHA).
--
-- Every script is this prelude followed by one section below ("--@@ name" starts a
-- section). Redis 7.0 commands only, so Valkey runs them too.
--
-- Every invocation passes the same four leading arguments:
--   ARGV[1] the key prefix "{namespace}:" (one hash tag: every key in one Cluster slot)
--   ARGV[2] how many events the change feed keeps (XADD MAXLEN ~)
--   ARGV[3] max_retained_finished (0: no cap)
--   ARGV[4] seconds a finished task's keys live (cleanup threshold plus a margin)
-- and KEYS[1] = "{namespace}:tasks", so that a Cluster client routes the call to the
-- namespace's slot. Script arguments start at ARGV[5].
--
-- Key layout (P is the prefix):
--   P.."t:"..id       hash: one task (fields below); P.."t:"..id..":s" / ":e" its segment
--                     and error bodies (lists: an append never rewrites what is there)
--   P.."tasks"        zset id -> seq: every retained task, in submission order
--   P.."q"            zset of every PENDING task: score -priority, member fifo..id
--   P.."qh:"..h       the same for the named tasks of handler h
--   P.."qw:"..w       the same for the function tasks owned by worker w
--   P.."prio"         hash priority -> number of PENDING tasks
--   P.."finished"     zset state..id -> completed_at (retention, oldest first)
--   P.."deadlines"    zset id -> deadline of every unfinished task that has one
--   P.."counts"       hash r1..r4 retained by state (PENDING is ZCARD q), t0..t4 totals,
--                     runs/runus (run times); P.."runmax" zset: the longest run (ZADD GT)
--   P.."ev"           stream: the change feed; entry id = seq.."-0"; P.."evseq" its counter
--   P.."workers"      zset worker id -> heartbeat expiry (server ms)
--   P.."w:"..w        hash: pid, host, machine, started;  P.."wh:"..w set: its handlers
--   P.."h:"..h        set: live workers that registered handler h
--   P.."mh:"..m       hash handler -> live workers of machine m serving it
--   P.."own:"..w      set: what worker w holds (its pending function tasks, its running task)
--   P.."m:"..m        string: the task PROCESSING on machine m (the machine's one slot; held
--                     exactly while a task with mid = m is leased, so whoever holds the
--                     lease may delete it)
--
-- Task hash fields: seq, state (0 PENDING .. 4 CANCELLED), handler, payload, owner, runner,
-- token (the lease), mid (machine), attempt, checkpoint, progress, nseg, nerr, created,
-- started, completed, message, rev, cancel, dlr (cancel asked by the deadline), prio,
-- deadline, yields, resuming (it yielded: its next start keeps its attempt), resumed (the
-- last claim was such a start), next (the task claimed with its finish), qm (queue
-- member), op / sop / cop / ftoken (ids of the last submit, append, cancel and finish, so
-- that a call retried after a lost reply is not done twice).
--
-- The queue's order: a sorted set orders by score, then by member bytes. The score is
-- -priority (higher priority first) and the member starts with 16 fixed-width characters:
-- "1" and the submission seq for a new task, "0" and a falling counter for a task put back
-- (requeued or yielded), so within one priority the newest put-back task is first and then
-- submission order. Both fit a double exactly, which Lua numbers are.

local P = ARGV[1]
local EVENT_CAP = ARGV[2]
local KEEP = tonumber(ARGV[3])
local TTL = tonumber(ARGV[4])
local A = 5
local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local NOW_S = clock[1] .. '.' .. string.format('%06d', tonumber(clock[2]))
local NOW_MS = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- Event kinds, as src/store/redis.rs numbers them.
local EV_SUBMITTED, EV_STARTED, EV_PROGRESS, EV_SEGMENT, EV_ERROR, EV_CANCEL, EV_FINISHED, EV_YIELDED = 0, 1, 2, 3, 4, 5, 6, 7

-- Every call to the server inside a script costs about a microsecond beyond the command
-- itself, which is most of a transition's cost: a task's fields are read with one HMGET,
-- written with one HSET, and what the reads gave is passed on rather than read again.
local FIELDS = {'state', 'token', 'runner', 'mid', 'owner', 'handler', 'prio', 'seq', 'qm', 'rev', 'attempt', 'cancel',
  'dlr', 'deadline', 'started', 'message', 'ftoken', 'resuming', 'nseg', 'nerr', 'yields', 'cop'}
-- And what a claim hands over (up to max_extra_json_bytes each: read only then).
local BODY_FIELDS = {'payload', 'checkpoint'}

local function tkey(id) return P .. 't:' .. id end

-- The task's fields by name (with its payload and checkpoint if `body`), or nil if there
-- is no such task.
local function load(k, body)
  local names = FIELDS
  if body then
    names = {unpack(FIELDS)}
    for _, name in ipairs(BODY_FIELDS) do names[#names + 1] = name end
  end
  local values = redis.call('HMGET', k, unpack(names))
  if not values[1] then return nil end
  local t = {}
  for i, name in ipairs(names) do t[name] = values[i] end
  return t
end

local function event(id, kind, state, rev)
  local seq = redis.call('INCR', P .. 'evseq')
  redis.call('XADD', P .. 'ev', 'MAXLEN', '~', EVENT_CAP, seq .. '-0', 'e', kind .. ' ' .. state .. ' ' .. rev .. ' ' .. id)
  return seq
end

-- PENDING is not counted: it is the size of the queue.
local function counts(from, to)
  if from and from ~= 0 then redis.call('HINCRBY', P .. 'counts', 'r' .. from, -1) end
  if to ~= 0 then redis.call('HINCRBY', P .. 'counts', 'r' .. to, 1) end
  if (not from) or to >= 2 then redis.call('HINCRBY', P .. 'counts', 't' .. to, 1) end
end

local function queue_of(handler, owner)
  if handler then return P .. 'qh:' .. handler end
  return P .. 'qw:' .. owner
end

-- Puts a task in the queue: at its priority's head when `head`, else by its seq. Returns
-- its queue member, which the caller stores as the task's `qm`.
local function enqueue(id, t, head)
  local fifo
  if head then
    fifo = '0' .. string.format('%015d', 999999999999999 - redis.call('INCR', P .. 'headseq'))
  else
    fifo = '1' .. string.format('%015d', tonumber(t.seq))
  end
  local member = fifo .. id
  local score = -tonumber(t.prio)
  redis.call('ZADD', P .. 'q', score, member)
  redis.call('ZADD', queue_of(t.handler, t.owner), score, member)
  redis.call('HINCRBY', P .. 'prio', t.prio, 1)
  return member
end

-- Takes a PENDING task out of the queue (the caller clears its `qm`).
local function dequeue(t)
  if not t.qm then return end
  redis.call('ZREM', P .. 'q', t.qm)
  redis.call('ZREM', queue_of(t.handler, t.owner), t.qm)
  if redis.call('HINCRBY', P .. 'prio', t.prio, -1) <= 0 then redis.call('HDEL', P .. 'prio', t.prio) end
end

-- Gives up the lease of a running task: its runner's hold and its machine's slot.
local function release(id, t)
  if t.mid then redis.call('DEL', P .. 'm:' .. t.mid) end
  if t.runner and t.runner ~= t.owner then redis.call('SREM', P .. 'own:' .. t.runner, id) end
end

local function drop_task(id, state)
  local k = tkey(id)
  redis.call('DEL', k, k .. ':s', k .. ':e')
  redis.call('ZREM', P .. 'tasks', id)
  redis.call('ZREM', P .. 'finished', state .. id)
  redis.call('ZREM', P .. 'deadlines', id)
  redis.call('HINCRBY', P .. 'counts', 'r' .. state, -1)
end

-- Evicts the oldest finished tasks past max_retained_finished, at most a batch.
local function enforce_cap()
  if KEEP <= 0 then return 0 end
  local excess = redis.call('ZCARD', P .. 'finished') - KEEP
  if excess <= 0 then return 0 end
  local oldest = redis.call('ZRANGE', P .. 'finished', 0, math.min(excess, 64) - 1)
  for _, member in ipairs(oldest) do
    drop_task(string.sub(member, 2), tonumber(string.sub(member, 1, 1)))
  end
  return #oldest
end

-- Moves a PENDING (already dequeued) or PROCESSING task to a final state. `extra` is the
-- revisions the caller already spent in this script (a progress written with the end).
local function finalize(id, k, t, to, message, extra)
  release(id, t)
  if t.owner then redis.call('SREM', P .. 'own:' .. t.owner, id) end
  local rev = tonumber(t.rev) + 1 + (extra or 0)
  if message then
    redis.call('HSET', k, 'state', to, 'completed', NOW_S, 'rev', rev, 'message', message)
  else
    redis.call('HSET', k, 'state', to, 'completed', NOW_S, 'rev', rev)
  end
  redis.call('HDEL', k, 'runner', 'token', 'mid', 'qm', 'resuming')
  if t.deadline then redis.call('ZREM', P .. 'deadlines', id) end
  counts(tonumber(t.state), to)
  redis.call('ZADD', P .. 'finished', NOW, to .. id)
  -- Retention deletes the keys in its sweep; the TTL is the server's own backstop for a
  -- namespace no process sweeps any more.
  redis.call('EXPIRE', k, TTL)
  if t.nseg ~= '0' then redis.call('EXPIRE', k .. ':s', TTL) end
  if t.nerr ~= '0' then redis.call('EXPIRE', k .. ':e', TTL) end
  event(id, EV_FINISHED, to, rev)
  enforce_cap()
  return rev
end

-- Hands a running task back to the head of its priority (`yielded`: after a yield, which
-- keeps its attempt; else after an interruption).
local function put_back(id, k, t, yielded, extra)
  release(id, t)
  local rev = tonumber(t.rev) + 1 + (extra or 0)
  local member = enqueue(id, t, true)
  if yielded then
    redis.call('HSET', k, 'state', 0, 'rev', rev, 'qm', member, 'yields', tonumber(t.yields) + 1, 'resuming', 1)
  else
    redis.call('HSET', k, 'state', 0, 'rev', rev, 'qm', member)
  end
  redis.call('HDEL', k, 'runner', 'token', 'mid', 'started')
  counts(1, 0)
  if yielded then event(id, EV_YIELDED, 0, rev) else event(id, EV_SUBMITTED, 0, rev) end
  return rev
end

-- A task that may still be changed: PENDING or PROCESSING, and if `token` is given,
-- leased under it. Returns its state and fields, or nil and the refusal.
local function changeable(k, token)
  local f = redis.call('HMGET', k, 'state', 'token', 'rev')
  if not f[1] then return nil, {'notfound'} end
  local state = tonumber(f[1])
  if state >= 2 then return nil, {'finished', state} end
  if token ~= '' and f[2] ~= token then return nil, {'lease', state} end
  return state, tonumber(f[3])
end

-- Everything worker `w` holds is given up, as if its process died: its running named
-- task back to the head (or FAILED out of attempts), its function tasks FAILED, its
-- identity and handlers removed. Returns the ids requeued and failed.
local function release_worker(w, max_attempts)
  local requeued, failed = {}, {}
  for _, id in ipairs(redis.call('SMEMBERS', P .. 'own:' .. w)) do
    local k = tkey(id)
    local t = load(k)
    local state = t and tonumber(t.state)
    if state == 1 and t.runner == w then
      local attempt = tonumber(t.attempt)
      if t.handler and attempt < max_attempts then
        put_back(id, k, t, false)
        requeued[#requeued + 1] = id
      elseif t.handler then
        finalize(id, k, t, 3, 'it kept being interrupted: the process running it exited during each of its '
          .. attempt .. ' starts (max_attempts is ' .. max_attempts .. ')')
        failed[#failed + 1] = id
      else
        finalize(id, k, t, 3, 'its process exited while it was running')
        failed[#failed + 1] = id
      end
    elseif state == 0 and t.owner == w then
      dequeue(t)
      finalize(id, k, t, 3, 'its process exited before it ran')
      failed[#failed + 1] = id
    end
  end
  local machine = redis.call('HGET', P .. 'w:' .. w, 'machine')
  for _, h in ipairs(redis.call('SMEMBERS', P .. 'wh:' .. w)) do
    if redis.call('SREM', P .. 'h:' .. h, w) == 1 and machine then
      if redis.call('HINCRBY', P .. 'mh:' .. machine, h, -1) <= 0 then redis.call('HDEL', P .. 'mh:' .. machine, h) end
    end
  end
  redis.call('DEL', P .. 'own:' .. w, P .. 'wh:' .. w, P .. 'w:' .. w)
  redis.call('ZREM', P .. 'workers', w)
  return {requeued, failed}
end

-- 1 if the task is PROCESSING and a PENDING task of a higher priority waits that a live
-- worker of the task's machine can run (a handler one of its workers registered, or a
-- function task of one of its processes), else 0. Yielding to a task that another, idle
-- machine would take anyway gains nothing, so only the task's own machine counts.
local function yield_wanted(id)
  local f = redis.call('HMGET', tkey(id), 'state', 'prio', 'mid')
  if f[1] ~= '1' or not f[3] then return 0 end
  local machine = f[3]
  local ahead = redis.call('ZRANGEBYSCORE', P .. 'q', '-inf', '(' .. (-tonumber(f[2])), 'LIMIT', 0, 64)
  for _, member in ipairs(ahead) do
    local g = redis.call('HMGET', tkey(string.sub(member, 17)), 'handler', 'owner')
    if g[1] then
      if tonumber(redis.call('HGET', P .. 'mh:' .. machine, g[1]) or '0') > 0 then return 1 end
    elseif g[2] and redis.call('HGET', P .. 'w:' .. g[2], 'machine') == machine then
      return 1
    end
  end
  return 0
end

-- The first task by (priority, fifo) among worker `w`'s own function tasks and the named
-- tasks of its handlers (ARGV[first_handler..]), if nothing runs on its machine: claimed
-- under `token`. A task found past its deadline on the way is FAILED instead.
local function claim_for(w, machine, token, deadline_text, first_handler)
  if not redis.call('ZSCORE', P .. 'workers', w) then return {'dead'} end
  local slot = P .. 'm:' .. machine
  local held = redis.call('GET', slot)
  if held then
    -- The same claim again, after its reply was lost: it was done; handed over again.
    local n = load(tkey(held), true)
    if n and n.state == '1' and n.token == token then
      return {'ok', held, n.handler or false, n.payload or false, tonumber(n.attempt), n.checkpoint or false, tonumber(n.yields),
        tonumber(n.prio)}
    end
    return {'busy'}
  end
  local queues = {P .. 'qw:' .. w}
  for i = first_handler, #ARGV do queues[#queues + 1] = P .. 'qh:' .. ARGV[i] end
  while true do
    local best, best_score
    for _, q in ipairs(queues) do
      local head = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
      if head[1] then
        local score = tonumber(head[2])
        if (not best) or score < best_score or (score == best_score and head[1] < best) then
          best, best_score = head[1], score
        end
      end
    end
    if not best then return {'empty'} end
    local id = string.sub(best, 17)
    local k = tkey(id)
    local t = load(k, true)
    dequeue(t)
    if t.deadline and tonumber(t.deadline) <= NOW then
      finalize(id, k, t, 3, deadline_text)
    else
      -- A task that yielded goes on with its attempt: a yield is not an interruption.
      -- `resumed` remembers it, should the claim be handed back unused.
      local attempt = tonumber(t.attempt)
      local resumed = 1
      if not t.resuming then
        attempt = attempt + 1
        resumed = 0
      end
      local rev = tonumber(t.rev) + 1
      redis.call('HSET', k, 'state', 1, 'runner', w, 'token', token, 'mid', machine, 'started', NOW_S, 'attempt', attempt,
        'rev', rev, 'resumed', resumed)
      redis.call('HDEL', k, 'qm', 'resuming')
      redis.call('SET', slot, id)
      redis.call('SADD', P .. 'own:' .. w, id)
      counts(0, 1)
      event(id, EV_STARTED, 1, rev)
      return {'ok', id, t.handler or false, t.payload or false, attempt, t.checkpoint or false, tonumber(t.yields), tonumber(t.prio)}
    end
  end
end

--@@ register_worker
-- ARGV: worker id, lease ms, pid, host, machine
local w = ARGV[A]
redis.call('ZADD', P .. 'workers', NOW_MS + tonumber(ARGV[A + 1]), w)
redis.call('HSET', P .. 'w:' .. w, 'pid', ARGV[A + 2], 'host', ARGV[A + 3], 'machine', ARGV[A + 4], 'started', NOW_S)
return NOW_S

--@@ register_handler
-- ARGV: worker id, handler
local w, h = ARGV[A], ARGV[A + 1]
if not redis.call('ZSCORE', P .. 'workers', w) then return 0 end
redis.call('SADD', P .. 'wh:' .. w, h)
if redis.call('SADD', P .. 'h:' .. h, w) == 1 then
  redis.call('HINCRBY', P .. 'mh:' .. redis.call('HGET', P .. 'w:' .. w, 'machine'), h, 1)
end
return 1

--@@ heartbeat
-- ARGV: worker id, lease ms. 0: this worker was found dead and its tasks recovered.
if not redis.call('ZSCORE', P .. 'workers', ARGV[A]) then return 0 end
redis.call('ZADD', P .. 'workers', 'XX', NOW_MS + tonumber(ARGV[A + 1]), ARGV[A])
return 1

--@@ reap
-- ARGV: max_attempts, the worker calling (never reaped by itself here)
local dead = redis.call('ZRANGEBYSCORE', P .. 'workers', '-inf', NOW_MS, 'LIMIT', 0, 16)
local out = {}
for _, w in ipairs(dead) do
  if w ~= ARGV[A + 1] then
    local r = release_worker(w, tonumber(ARGV[A]))
    out[#out + 1] = {w, r[1], r[2]}
  end
end
return out

--@@ release_worker
-- ARGV: worker id, max_attempts
return release_worker(ARGV[A], tonumber(ARGV[A + 1]))

--@@ submit
-- ARGV: id, handler ('' for a function task), payload, owner, priority, deadline (''),
--       max_pending, op, deadline-passed text
local id = ARGV[A]
local k = tkey(id)
if redis.call('EXISTS', k) == 1 then
  if redis.call('HGET', k, 'op') == ARGV[A + 7] then return {'ok'} end
  return {'dup'}
end
local max_pending = tonumber(ARGV[A + 6])
if max_pending > 0 then
  local pending = redis.call('ZCARD', P .. 'q')
  if pending >= max_pending then return {'full', pending} end
end
local seq = redis.call('INCR', P .. 'seq')
local t = {seq = seq, prio = ARGV[A + 4], rev = '1', state = '0', nseg = '0', nerr = '0'}
local fields = {'seq', seq, 'state', 0, 'created', NOW_S, 'rev', 1, 'attempt', 0, 'prio', ARGV[A + 4],
  'yields', 0, 'nseg', 0, 'nerr', 0, 'cancel', 0, 'op', ARGV[A + 7]}
if ARGV[A + 1] ~= '' then
  t.handler = ARGV[A + 1]
  fields[#fields + 1] = 'handler'
  fields[#fields + 1] = ARGV[A + 1]
  fields[#fields + 1] = 'payload'
  fields[#fields + 1] = ARGV[A + 2]
else
  t.owner = ARGV[A + 3]
  fields[#fields + 1] = 'owner'
  fields[#fields + 1] = ARGV[A + 3]
  redis.call('SADD', P .. 'own:' .. ARGV[A + 3], id)
end
local deadline = ARGV[A + 5]
local late = deadline ~= '' and tonumber(deadline) <= NOW
if deadline ~= '' then
  t.deadline = deadline
  fields[#fields + 1] = 'deadline'
  fields[#fields + 1] = deadline
  if not late then redis.call('ZADD', P .. 'deadlines', deadline, id) end
end
if not late then
  fields[#fields + 1] = 'qm'
  fields[#fields + 1] = enqueue(id, t, false)
end
redis.call('HSET', k, unpack(fields))
redis.call('ZADD', P .. 'tasks', seq, id)
counts(nil, 0)
event(id, EV_SUBMITTED, 0, 1)
if late then
  -- Accepted (the clocks may disagree), and failed at once: it never starts.
  t.deadline = nil
  finalize(id, k, t, 3, ARGV[A + 8])
end
return {'ok'}

--@@ claim
-- ARGV: worker id, machine, lease token, deadline-passed text, handlers...
return claim_for(ARGV[A], ARGV[A + 1], ARGV[A + 2], ARGV[A + 3], A + 4)

--@@ append
-- ARGV: id, token ('' if not leased here), body, 's' (segment) or 'e' (error), cap, op
local id, token, body, which = ARGV[A], ARGV[A + 1], ARGV[A + 2], ARGV[A + 3]
local k = tkey(id)
local field = 'nerr'
local kind = EV_ERROR
if which == 's' then field, kind = 'nseg', EV_SEGMENT end
local f = redis.call('HMGET', k, 'state', 'token', 'rev', field, 'sop')
if not f[1] then return {'notfound'} end
local state = tonumber(f[1])
if state >= 2 then return {'finished', state} end
if token ~= '' and f[2] ~= token then return {'lease', state} end
if f[5] == ARGV[A + 5] then return {'ok'} end
local n = tonumber(f[4])
if n >= tonumber(ARGV[A + 4]) then return {'cap', n} end
local rev = tonumber(f[3]) + 1
redis.call('RPUSH', k .. ':' .. which, body)
redis.call('HSET', k, field, n + 1, 'sop', ARGV[A + 5], 'rev', rev)
event(id, kind, state, rev)
return {'ok'}

--@@ set_field
-- ARGV: id, token, field ('checkpoint', 'progress' or 'message'), value
local id, token, field = ARGV[A], ARGV[A + 1], ARGV[A + 2]
local k = tkey(id)
local state, rev = changeable(k, token)
if not state then return rev end
-- The failure message shows only once the task failed: no revision, no event.
if field == 'message' then
  redis.call('HSET', k, field, ARGV[A + 3])
else
  redis.call('HSET', k, field, ARGV[A + 3], 'rev', rev + 1)
  event(id, EV_PROGRESS, state, rev + 1)
end
return {'ok'}

--@@ flush_progress
-- ARGV: (id, token, progress)... of the tasks this process runs; returns the ids written
local written = {}
for i = A, #ARGV, 3 do
  local id, token = ARGV[i], ARGV[i + 1]
  local k = tkey(id)
  local f = redis.call('HMGET', k, 'state', 'token', 'rev')
  if f[1] == '1' and f[2] == token then
    local rev = tonumber(f[3]) + 1
    redis.call('HSET', k, 'progress', ARGV[i + 2], 'rev', rev)
    event(id, EV_PROGRESS, 1, rev)
    written[#written + 1] = id
  end
end
return written

--@@ cancel
-- ARGV: id, op
local id = ARGV[A]
local k = tkey(id)
local t = load(k)
if not t then return {'notfound'} end
local state = tonumber(t.state)
if state == 0 then
  dequeue(t)
  redis.call('HSET', k, 'cop', ARGV[A + 1])
  finalize(id, k, t, 4, 'cancelled before it started')
  return {'ok', 4}
elseif state == 1 then
  if t.cancel ~= '1' then
    local rev = tonumber(t.rev) + 1
    redis.call('HSET', k, 'cancel', 1, 'rev', rev)
    event(id, EV_CANCEL, 1, rev)
  end
  return {'ok', 1}
end
-- The same cancel again, after its reply was lost: it was done.
if t.cop == ARGV[A + 1] then return {'ok', state} end
return {'finished', state}

--@@ finish
-- ARGV: id, token, outcome ('c' completed, 'f' failed, 'y' yielded), message ('' none),
--       fallback message (''), latest coalesced progress (''), deadline-passed texts
--       (running, pending), worker id, machine, next lease token ('': claim nothing),
--       handlers...
-- Returns {'ok', new state} and, with a next token, what a claim returns (a worker's next
-- task with the same round trip: the end of one run and the start of the next).
local id, token, outcome = ARGV[A], ARGV[A + 1], ARGV[A + 2]
local k = tkey(id)
local function done(state)
  if ARGV[A + 10] == '' then return {'ok', state} end
  local claimed = claim_for(ARGV[A + 8], ARGV[A + 9], ARGV[A + 10], ARGV[A + 7], A + 11)
  if claimed[1] == 'ok' then redis.call('HSET', k, 'next', claimed[2]) end
  return {'ok', state, claimed}
end
local t = load(k)
if not t then return {'notfound'} end
local state = tonumber(t.state)
if state ~= 1 or t.token ~= token then
  -- The same finish again, after its reply was lost: it was done, and so was the claim
  -- that came with it, which is handed over again.
  if t.ftoken == token then
    local next_id = redis.call('HGET', k, 'next')
    local n = next_id and load(tkey(next_id), true)
    if n and n.state == '1' and n.token == ARGV[A + 10] then
      return {'ok', state, {'ok', next_id, n.handler or false, n.payload or false, tonumber(n.attempt), n.checkpoint or false,
        tonumber(n.yields), tonumber(n.prio)}}
    end
    return {'ok', state}
  end
  return {'lease', state}
end
local extra = 0
if ARGV[A + 5] ~= '' then
  redis.call('HSET', k, 'progress', ARGV[A + 5], 'ftoken', token)
  extra = 1
else
  redis.call('HSET', k, 'ftoken', token)
end
if t.cancel == '1' then
  local message = 'cancelled while running'
  if t.dlr == '1' then message = ARGV[A + 6] end
  finalize(id, k, t, 4, message, extra)
  return done(4)
end
if outcome == 'y' then
  put_back(id, k, t, true, extra)
  return done(0)
end
-- Run times in whole microseconds: integer sums stay exact.
local ran = math.max(math.floor((NOW - tonumber(t.started or NOW)) * 1000000 + 0.5), 0)
redis.call('HINCRBY', P .. 'counts', 'runs', 1)
redis.call('HINCRBY', P .. 'counts', 'runus', ran)
redis.call('ZADD', P .. 'runmax', 'GT', ran, 'us')
if outcome == 'c' then
  finalize(id, k, t, 2, nil, extra)
  return done(2)
end
local message = ARGV[A + 3]
if message == '' then message = t.message or ARGV[A + 4] end
finalize(id, k, t, 3, message, extra)
return done(3)

--@@ unclaim
-- ARGV: id, token. Hands back a task claimed with a finish and never started: at the head
-- of its priority, its attempt as before the claim.
local id = ARGV[A]
local k = tkey(id)
local t = load(k)
if not t or t.state ~= '1' or t.token ~= ARGV[A + 1] then return 0 end
put_back(id, k, t, false)
if redis.call('HGET', k, 'resumed') == '1' then
  redis.call('HSET', k, 'resuming', 1)
else
  redis.call('HINCRBY', k, 'attempt', -1)
end
return 1

--@@ deadlines
-- ARGV: pending text. Fails the PENDING tasks whose deadline passed and asks the
-- PROCESSING ones to cancel; returns how many it handled.
local due = redis.call('ZRANGEBYSCORE', P .. 'deadlines', '-inf', NOW, 'LIMIT', 0, 64)
for _, id in ipairs(due) do
  local k = tkey(id)
  local t = load(k)
  redis.call('ZREM', P .. 'deadlines', id)
  if t and t.state == '0' then
    dequeue(t)
    t.deadline = nil
    finalize(id, k, t, 3, ARGV[A])
  elseif t and t.state == '1' then
    if t.cancel ~= '1' then
      local rev = tonumber(t.rev) + 1
      redis.call('HSET', k, 'dlr', 1, 'cancel', 1, 'rev', rev)
      event(id, EV_CANCEL, 1, rev)
    else
      redis.call('HSET', k, 'dlr', 1)
    end
  end
end
return #due

--@@ yield_wanted
-- ARGV: ids... Per task: 1 if a higher-priority task waits that its machine could run,
-- 0 if not, -1 if there is no such task.
local out = {}
for i = A, #ARGV do
  if redis.call('EXISTS', tkey(ARGV[i])) == 0 then
    out[#out + 1] = -1
  else
    out[#out + 1] = yield_wanted(ARGV[i])
  end
end
return out

--@@ status
-- ARGV: ids... Per id: false if unknown, else {fields, segments, errors, queue position,
-- yield wanted}.
local out = {}
for i = A, #ARGV do
  local k = tkey(ARGV[i])
  local f = redis.call('HMGET', k, 'state', 'progress', 'created', 'started', 'completed', 'message', 'rev', 'cancel',
    'handler', 'attempt', 'checkpoint', 'prio', 'deadline', 'yields', 'qm', 'nseg', 'nerr', 'seq')
  if not f[1] then
    out[#out + 1] = false
  else
    local segments, errors = {}, {}
    if f[16] ~= '0' then segments = redis.call('LRANGE', k .. ':s', 0, -1) end
    if f[17] ~= '0' then errors = redis.call('LRANGE', k .. ':e', 0, -1) end
    local position = false
    local wanted = 0
    if f[1] == '1' then wanted = yield_wanted(ARGV[i]) end
    if f[1] == '0' and f[15] then
      -- A named task no live worker serves waits outside the line: no position.
      if (not f[9]) or redis.call('SCARD', P .. 'h:' .. f[9]) > 0 then
        position = redis.call('ZRANK', P .. 'q', f[15])
      end
    end
    out[#out + 1] = {f, segments, errors, position, wanted}
  end
end
return out

--@@ peek
-- ARGV: id. {state, revision} or false.
local f = redis.call('HMGET', tkey(ARGV[A]), 'state', 'rev', 'cancel')
if not f[1] then return false end
return {tonumber(f[1]), tonumber(f[2]), tonumber(f[3])}

--@@ collect
-- ARGV: cutoff (epoch seconds). Deletes finished tasks older than it, a batch at a time.
local old = redis.call('ZRANGEBYSCORE', P .. 'finished', '-inf', ARGV[A], 'LIMIT', 0, 64)
for _, member in ipairs(old) do
  drop_task(string.sub(member, 2), tonumber(string.sub(member, 1, 1)))
end
return #old + enforce_cap()
