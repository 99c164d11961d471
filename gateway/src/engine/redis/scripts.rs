//! The Lua scripts: every step that must be atomic is one script over keys of one slot.
//!
//! Numbers cross into Lua as doubles: `seq`, versions and millisecond times stay far below
//! 2^53, and Lua prints integers below 10^14 without an exponent, which stream ids need.

use std::sync::LazyLock;

use redis::Script;

/// Appends a message: site and author checks, dedup by `role:id:cid`, the next `seq`, `XADD`
/// to the capped log, activity, TTLs and the publish, in one step (stream order is channel
/// order). The `msg` frame and the bus envelope are built here from the parts the caller
/// encoded around `seq`, which only this script knows.
///
/// KEYS: meta, log, cids. ARGV: site, role, author id, cid key (`""`: none), envelope head,
/// envelope middle (after `seq`), frame prefix, frame suffix, max log, ts, ttl seconds,
/// channel, sharded (`"1"`: SPUBLISH), the visitor text's start (listings show it), archive
/// (`"1"`: the log keeps what is not archived yet, whatever its cap).
///
/// Returns `{"ok", seq, state, started_unanswered}`, `{"dup", frame}`, `{"dup_gone", seq}`
/// (the retried message was trimmed from the log), `{"nf"}`,
/// `{"closed"}` or `{"forbidden"}`.
pub static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local m, log, cids = KEYS[1], KEYS[2], KEYS[3]
local f = redis.call('HMGET', m, 'site', 'state', 'visitor', 'op', 'unans', 'seq')
local site, state = f[1], f[2]
if (not site) or site ~= ARGV[1] then return {'nf'} end
local role, who, ckey = ARGV[2], ARGV[3], ARGV[4]
local seq = tonumber(f[6] or '0') + 1
-- One command on the common path: the cid is claimed for this seq, or found taken. A retry
-- is answered before the checks below, so a message stored before the conversation closed
-- is still acknowledged after.
if ckey ~= '' and redis.call('HSETNX', cids, ckey, seq) == 0 then
  local old = redis.call('HGET', cids, ckey)
  local e = redis.call('XRANGE', log, old .. '-0', old .. '-0')
  if #e > 0 then return {'dup', e[1][2][2]} end
  -- Trimmed from the log since: still the same message, never stored twice.
  return {'dup_gone', tonumber(old)}
end
local refused = false
if role == 'visitor' then
  if f[3] ~= who then refused = 'forbidden'
  elseif state == 'closed' then refused = 'closed' end
elseif role == 'operator' or role == 'supervisor' then
  -- A supervisor writes into a conversation they took over (they are its operator then).
  if f[4] ~= who then refused = 'forbidden'
  elseif state == 'closed' then refused = 'closed'
  elseif state ~= 'active' then refused = 'forbidden' end
elseif role ~= 'system' then
  refused = 'forbidden'
end
if refused then
  if ckey ~= '' then redis.call('HDEL', cids, ckey) end
  return {refused}
end
local p = cmsgpack.pack(seq)
local frame = ARGV[7] .. p .. ARGV[8]
local added = redis.pcall('XADD', log, seq .. '-0', 'f', frame)
if type(added) == 'table' and added.err then
  -- The log is ahead of the record's seq (it should never be): nothing is stored, the cid
  -- is free again (the retry must not be taken for a stored message), and the record's seq
  -- catches up with the log, so that the retry succeeds.
  if ckey ~= '' then redis.call('HDEL', cids, ckey) end
  local top = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
  if #top > 0 then
    redis.call('HSET', m, 'seq', tonumber(string.match(top[1][1], '^(%d+)')))
  end
  return redis.error_reply(added.err)
end
-- The log's cap: the oldest messages go, but with an archive (ARGV[15] = '1') none it does
-- not hold yet (up to 'arch').
local cut = seq - tonumber(ARGV[9]) + 1
if ARGV[15] == '1' then cut = math.min(cut, tonumber(redis.call('HGET', m, 'arch') or '0') + 1) end
if cut > 1 then redis.call('XTRIM', log, 'MINID', cut .. '-0') end
local ts = ARGV[10]
local started = 0
-- Activity, as core::Activity::record keeps it: the wait for an answer, each side's last
-- message and first message.
if role == 'visitor' then
  -- ARGV[14]: the start of the text, what listings show of the visitor's last message.
  if tonumber(f[5] or '0') == 0 then
    redis.call('HSET', m, 'seq', seq, 'last_ts', ts, 'v_ts', ts, 'v_text', ARGV[14], 'unans', ts)
    started = 1
  else
    redis.call('HSET', m, 'seq', seq, 'last_ts', ts, 'v_ts', ts, 'v_text', ARGV[14])
  end
  redis.call('HSETNX', m, 'v1_ts', ts)
elseif role == 'operator' or role == 'supervisor' then
  redis.call('HSET', m, 'seq', seq, 'last_ts', ts, 'op_ts', ts, 'unans', 0)
  redis.call('HSETNX', m, 'op1_ts', ts)
else
  redis.call('HSET', m, 'seq', seq)
end
if state ~= 'closed' and seq % 32 == 1 then
  -- Open conversations' keys live for weeks; refreshing them now and then is enough.
  redis.call('EXPIRE', m, ARGV[11])
  redis.call('EXPIRE', log, ARGV[11])
  redis.call('EXPIRE', cids, ARGV[11])
end
local env = ARGV[5] .. p .. ARGV[6] .. frame
if ARGV[13] == '1' then
  redis.call('SPUBLISH', ARGV[12], env)
else
  redis.call('PUBLISH', ARGV[12], env)
end
return {'ok', seq, state, started}
"#,
    )
});

/// The archive holds a conversation's messages up to a seq: raises the watermark, lets the log
/// go down to its cap, and, when it was archived whole after its close, lets the keys expire.
///
/// KEYS: meta, log, cids. ARGV: seq, max_log, closed ('1'), retention seconds.
pub static MARK_ARCHIVED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local arch = math.max(tonumber(redis.call('HGET', KEYS[1], 'arch') or '0'), tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'arch', arch)
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local cut = math.min(seq - tonumber(ARGV[2]) + 1, arch + 1)
if cut > 1 then redis.call('XTRIM', KEYS[2], 'MINID', cut .. '-0') end
if ARGV[3] == '1' then
  for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
end
return 1
"#,
    )
});

/// Stores a conversation record unless one from a later site version is there.
///
/// KEYS: meta, log, cids. ARGV: version, site, visitor, operator (`""`: none), state,
/// snapshot, ttl seconds. Returns 1 when stored.
pub static PUT_META: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if v > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'site', ARGV[2], 'visitor', ARGV[3], 'op', ARGV[4],
  'state', ARGV[5], 'snap', ARGV[6])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[7]) end
return 1
"#,
    )
});

/// Every message after a cursor, or `{"lost"}` when the log no longer reaches back to it.
///
/// KEYS: meta, log. ARGV: after. Returns `{"ok", seq, frame, seq, frame…}` or `{"lost"}`.
pub static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local last = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local after = tonumber(ARGV[1])
if after > last then return {'lost'} end
if after == last then return {'ok'} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first == 0 then return {'lost'} end
local fseq = tonumber(string.match(first[1][1], '^(%d+)'))
if fseq > after + 1 then return {'lost'} end
local out = {'ok'}
for _, e in ipairs(redis.call('XRANGE', KEYS[2], (after + 1) .. '-0', '+')) do
  out[#out + 1] = tonumber(string.match(e[1], '^(%d+)'))
  out[#out + 1] = e[2][2]
end
return out
"#,
    )
});

/// One page of history before a `seq` (or the newest), oldest first.
///
/// KEYS: log. ARGV: before (`-1`: the newest), limit. Returns `{complete, frame…}`.
pub static HISTORY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local before, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #first == 0 then return {1} end
local fseq = tonumber(string.match(first[1][1], '^(%d+)'))
local hi = '+'
if before >= 0 then
  if before <= fseq then return {1} end
  hi = (before - 1) .. '-0'
end
local page = redis.call('XREVRANGE', KEYS[1], hi, '-', 'COUNT', limit)
local out = {0}
local oldest = nil
for i = #page, 1, -1 do
  out[#out + 1] = page[i][2][2]
  if not oldest then oldest = tonumber(string.match(page[i][1], '^(%d+)')) end
end
if oldest == nil or oldest <= fseq then out[1] = 1 end
return out
"#,
    )
});

/// Brings a node's copy of a site's state up to date: nothing, the fields changed since its
/// version, or everything.
///
/// KEYS: state, log. ARGV: the version the node has, the epoch of its copy. Returns `{ver}`,
/// `{ver, "delta", {field…}, {value…}}` or `{ver, "full", {field, value, …}, epoch}`: full
/// also when the stored state is of another epoch (Redis lost its data since).
pub static CATCH_UP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local have = tonumber(ARGV[1])
local ver = tonumber(redis.call('HGET', KEYS[1], 'ver') or '0')
local ep = redis.call('HGET', KEYS[1], 'ep')
local same = (ep == ARGV[2]) or ((not ep) and ver == 0)
if same and ver == have then return {ver} end
if same and ver > have and have > 0 and ver - have <= 5000 then
  local entries = redis.call('XRANGE', KEYS[2], (have + 1) .. '-0', '+')
  if #entries == ver - have and entries[1][1] == (have + 1) .. '-0' then
    local seen, names = {qc = true}, {'qc'}
    for _, e in ipairs(entries) do
      for name in string.gmatch(e[2][2], '[^\n]+') do
        if not seen[name] then
          seen[name] = true
          names[#names + 1] = name
        end
      end
    end
    local vals = {}
    for i = 1, #names, 500 do
      local chunk = {}
      for j = i, math.min(i + 499, #names) do chunk[#chunk + 1] = names[j] end
      for _, v in ipairs(redis.call('HMGET', KEYS[1], unpack(chunk))) do
        vals[#vals + 1] = v
      end
    end
    return {ver, 'delta', names, vals}
  end
end
return {ver, 'full', redis.call('HGETALL', KEYS[1]), ep or ''}
"#,
    )
});

/// Commits a transition if the site is still at the version it was read at, with the timer
/// changes it made and its outbox entries (the timers and the outbox live in the site's slot,
/// so they are part of the same step).
///
/// KEYS: state, log, timers, outbox. ARGV: expected version, changed names
/// (newline-separated), log cap, the commit's token, the copy's epoch, then counts
/// `nset ndel ntset ntdel`, then `field, value` per set, the fields to delete,
/// `member, deadline` per timer set, the timer members to remove, then the number of outbox
/// entries and the entries. Returns the new version, or -1 when another node committed first (or
/// the store is of another epoch). The first commit of a store sets its epoch.
///
/// The token goes into the change log's entry: a node that lost the answer can look for it
/// and learn whether its commit landed (`COMMITTED`).
pub static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = tonumber(redis.call('HGET', KEYS[1], 'ver') or '0')
if cur ~= tonumber(ARGV[1]) then return -1 end
local ep = redis.call('HGET', KEYS[1], 'ep')
if ep and ep ~= ARGV[5] then return -1 end
if not ep then redis.call('HSET', KEYS[1], 'ep', ARGV[5]) end
local new = cur + 1
local id = new .. '-0'
local added = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id, 'f', ARGV[2], 't', ARGV[4])
if type(added) == 'table' and added.err then
  -- The change log is ahead of the state (the state was lost): start it again.
  redis.call('DEL', KEYS[2])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id, 'f', ARGV[2], 't', ARGV[4])
end
local nset, ndel = tonumber(ARGV[6]), tonumber(ARGV[7])
local ntset, ntdel = tonumber(ARGV[8]), tonumber(ARGV[9])
local i = 10
for _ = 1, nset do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, ndel do
  redis.call('HDEL', KEYS[1], ARGV[i])
  i = i + 1
end
for _ = 1, ntset do
  redis.call('ZADD', KEYS[3], ARGV[i + 1], ARGV[i])
  i = i + 2
end
for _ = 1, ntdel do
  redis.call('ZREM', KEYS[3], ARGV[i])
  i = i + 1
end
local nout = tonumber(ARGV[i])
i = i + 1
for _ = 1, nout do
  redis.call('XADD', KEYS[4], '*', 'e', ARGV[i])
  i = i + 1
end
redis.call('HSET', KEYS[1], 'ver', new)
return new
"#,
    )
});

/// Whether the commit with this token produced this version (its answer was lost).
///
/// KEYS: log. ARGV: version, token. Returns 1 or 0.
pub static COMMITTED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local e = redis.call('XRANGE', KEYS[1], ARGV[1] .. '-0', ARGV[1] .. '-0')
if #e == 0 then return 0 end
local f = e[1][2]
for i = 1, #f, 2 do
  if f[i] == 't' and f[i + 1] == ARGV[2] then return 1 end
end
return 0
"#,
    )
});

/// Claims due timers: each is pushed back by the lease, so it is handed out once unless
/// its claimer fails to finish it.
///
/// KEYS: timers. ARGV: now, limit, lease deadline. Returns the members.
pub static CLAIM_TIMERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[3], m) end
return due
"#,
    )
});

/// Removes a fired timer unless it was set again after the claim.
///
/// KEYS: timers. ARGV: member, lease deadline.
pub static FINISH_TIMER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"#,
    )
});

/// A node's heartbeat, timed by Redis' clock so that nodes' clocks do not matter.
///
/// KEYS: nodes, dead. ARGV: node, mode (`"beat"`: only if still registered; `"join"`:
/// register). Returns `"alive"` or `"evicted"`.
pub static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 'evicted' end
if ARGV[2] == 'beat' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 'evicted' end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], ARGV[1], t[1] * 1000 + math.floor(t[2] / 1000))
return 'alive'
"#,
    )
});

/// Moves nodes whose heartbeat is older than the timeout to the dead set; returns the dead
/// set (nodes still to be swept).
///
/// KEYS: nodes, dead. ARGV: timeout ms.
pub static DEAD_NODES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if now - tonumber(all[i + 1]) > tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('SADD', KEYS[2], all[i])
  end
end
return redis.call('SMEMBERS', KEYS[2])
"#,
    )
});

/// Raises one side's read mark of a conversation (never lowers it); nothing for a
/// conversation that is not stored.
pub static SET_READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"#,
    )
});
