//! The `redis` peer of the benchmark: the same logical read-state operations as Lua
//! scripts over one Redis, holding the same state with the same caps as the engine.
//! It is what many teams build instead of readstate; it must never be a straw man.
//!
//! Layout (every key under a prefix, so a run can clear exactly its own keys):
//! - `{prefix}:u:{user}`: hash, channel id → last read message id. Small hashes stay
//!   in Redis' compact listpack encoding (≤ 128 fields by default).
//! - `{prefix}:c:{channel}`: sorted set of the channel's newest message ids (member
//!   and score are the id), trimmed to the engine's window `2·(unread_cap + 1)`.
//! - `{prefix}:m:{user}:{channel}`: sorted set of the newest mention ids of that read
//!   state, trimmed to `2·(mention_cap + 1)`.
//!
//! Every operation is one `EVALSHA` (one round trip, atomic); concurrent callers share
//! one multiplexed connection, which pipelines their requests on the wire as a real
//! client does. Bulk population is pipelined in chunks. Reads compute the derived
//! fields in the script (`ZCOUNT` over the windows), never from stored counters.
//!
//! Semantics are those of [`readstate::domain::Model`] for the operations used here:
//! - ack moves the position forward only (max), creating the state when missing;
//! - mark unread sets the position to `message - 1`. The engine starts a new unread
//!   epoch instead, but the bench sends acks without an `at` stamp, and such an ack
//!   merges within the current epoch: its effect is `max(position, message)` in both;
//! - message created adds the id to the channel window, acks it for the author and
//!   records a mention for each distinct mentioned user other than the author,
//!   creating their state at position 0 when missing.
//!
//! Acks and message creates are idempotent and order-insensitive here as in the
//! engine (`ZADD` of a present id is a no-op, trimming keeps the top of a set, ack
//! is a max). The bench never deletes messages, so the channel head is the largest
//! id ever added and every mention id is at most the head: a state with nothing
//! unread has no unread mention either, and the scripts skip counting it.
//!
//! Limits: scores are doubles, so ids must stay below 2^53 for windows and counts
//! to be exact (the bench's ids do; positions themselves are compared as decimal
//! strings, exactly). The read scripts build channel and mention keys from the
//! user's hash, which a single Redis allows but a Redis Cluster would not without
//! hash tags; the bench runs against a single local Redis.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script};

use readstate::domain::Caps;

/// A bulk load: commands pipelined, sent every [`PIPELINE_CHUNK`] of them and once
/// more at the end, their replies ignored.
struct Bulk {
    con: MultiplexedConnection,
    pipe: redis::Pipeline,
    queued: usize,
    what: &'static str,
}

impl Bulk {
    fn new(con: MultiplexedConnection, what: &'static str) -> Self {
        Self {
            con,
            pipe: redis::pipe(),
            queued: 0,
            what,
        }
    }

    async fn add(&mut self, command: redis::Cmd) -> anyhow::Result<()> {
        self.pipe.add_command(command).ignore();
        self.queued += 1;
        if self.queued >= PIPELINE_CHUNK {
            self.send().await?;
        }
        Ok(())
    }

    async fn send(&mut self) -> anyhow::Result<()> {
        if self.queued > 0 {
            self.pipe
                .exec_async(&mut self.con)
                .await
                .context(self.what)?;
            self.pipe.clear();
            self.queued = 0;
        }
        Ok(())
    }

    async fn finish(mut self) -> anyhow::Result<()> {
        self.send().await
    }
}

/// Commands per pipeline round trip during bulk population.
const PIPELINE_CHUNK: usize = 2_048;
/// Keys per `SCAN` step and per `UNLINK` while clearing.
const SCAN_COUNT: usize = 1_000;

/// Exact `>` on canonical decimal strings (no sign, no leading zeros): a longer
/// string is a larger number, equal lengths compare bytewise. Exact for every u64,
/// unlike Lua's doubles.
const LUA_GT: &str = r"
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
";

/// Adds `msg` to a sorted set and keeps only its newest `window` ids. Trimming
/// only when `ZADD` added something keeps repeats at two calls.
const LUA_ADD_CAPPED: &str = r"
local function add_capped(key, msg, window)
  if redis.call('ZADD', key, msg, msg) == 1 then
    local n = redis.call('ZCARD', key)
    if n > window then
      redis.call('ZREMRANGEBYRANK', key, 0, n - window - 1)
    end
  end
end
";

/// KEYS[1] user hash; ARGV[1] channel, ARGV[2] message.
const ACK_BODY: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur or gt(ARGV[2], cur) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
";

/// KEYS[1] user hash; ARGV[1] channel, ARGV[2] the new position (message - 1).
const MARK_UNREAD_BODY: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// KEYS[1] channel set, KEYS[2] author hash, then pairs (user hash, mention set)
/// per mentioned user; ARGV[1] channel, ARGV[2] message, ARGV[3] channel window,
/// ARGV[4] mention window.
const MESSAGE_CREATED_BODY: &str = r"
local channel, msg = ARGV[1], ARGV[2]
add_capped(KEYS[1], msg, tonumber(ARGV[3]))
local cur = redis.call('HGET', KEYS[2], channel)
if not cur or gt(msg, cur) then
  redis.call('HSET', KEYS[2], channel, msg)
end
local mention_window = tonumber(ARGV[4])
for i = 3, #KEYS, 2 do
  redis.call('HSETNX', KEYS[i], channel, '0')
  add_capped(KEYS[i + 1], msg, mention_window)
end
return 1
";

/// KEYS[1] user hash; ARGV[1] key prefix, ARGV[2] user. Returns one
/// `{channel, last_read, head, unread, mentions}` per read state, counts uncapped
/// (at most the windows); the client applies the caps and sorts.
const READ_STATES_BODY: &str = r"
local prefix, user = ARGV[1], ARGV[2]
local states = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #states, 2 do
  local channel, read = states[i], states[i + 1]
  local ckey = prefix .. ':c:' .. channel
  local head = redis.call('ZRANGE', ckey, -1, -1)[1] or '0'
  local unread, mentions = 0, 0
  if gt(head, read) then
    unread = redis.call('ZCOUNT', ckey, '(' .. read, '+inf')
    mentions = redis.call('ZCOUNT', prefix .. ':m:' .. user .. ':' .. channel, '(' .. read, '+inf')
  end
  out[#out + 1] = {channel, read, head, unread, mentions}
end
return out
";

/// KEYS[1] user hash; ARGV[1] key prefix, ARGV[2] user, ARGV[3] mention cap.
/// Returns `{unread_channels, mentions}` with each state's mentions capped.
const SUMMARY_BODY: &str = r"
local prefix, user, cap = ARGV[1], ARGV[2], tonumber(ARGV[3])
local states = redis.call('HGETALL', KEYS[1])
local unread_channels, mentions = 0, 0
for i = 1, #states, 2 do
  local channel, read = states[i], states[i + 1]
  local head = redis.call('ZRANGE', prefix .. ':c:' .. channel, -1, -1)[1] or '0'
  if gt(head, read) then
    unread_channels = unread_channels + 1
    local m = redis.call('ZCOUNT', prefix .. ':m:' .. user .. ':' .. channel, '(' .. read, '+inf')
    if m > cap then m = cap end
    mentions = mentions + m
  end
end
return {unread_channels, mentions}
";

fn script(parts: &[&str]) -> Script {
    Script::new(&parts.concat())
}

static ACK: LazyLock<Script> = LazyLock::new(|| script(&[LUA_GT, ACK_BODY]));
static MARK_UNREAD: LazyLock<Script> = LazyLock::new(|| script(&[MARK_UNREAD_BODY]));
static MESSAGE_CREATED: LazyLock<Script> =
    LazyLock::new(|| script(&[LUA_GT, LUA_ADD_CAPPED, MESSAGE_CREATED_BODY]));
static READ_STATES: LazyLock<Script> = LazyLock::new(|| script(&[LUA_GT, READ_STATES_BODY]));
static SUMMARY: LazyLock<Script> = LazyLock::new(|| script(&[LUA_GT, SUMMARY_BODY]));

/// One read state with its derived fields, as the engine's `ReadStateView` computes
/// them (`has_unread` is `last_message_id > last_read_message_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisReadState {
    pub channel_id: u64,
    pub last_read_message_id: u64,
    pub last_message_id: u64,
    pub unread_count: u32,
    pub unread_capped: bool,
    pub mention_count: u32,
    pub mention_capped: bool,
}

/// Unread channels and the sum of capped mention counts of one user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisSummary {
    pub unread_channels: u64,
    pub mentions: u64,
}

/// The Redis implementation of the read-state operations. Cloning is cheap and
/// shares the one multiplexed connection, whose requests from all clones are
/// pipelined on the wire.
#[derive(Clone)]
pub struct RedisTarget {
    con: MultiplexedConnection,
    /// Key prefix without the trailing `:`.
    prefix: Arc<str>,
    caps: Caps,
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("prefix", &self.prefix)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

impl RedisTarget {
    /// Opens a new multiplexed connection to `url` (e.g. `redis://127.0.0.1:6379`)
    /// and loads the scripts. Keys live under `{key_prefix}:`; the caps give the
    /// windows exactly as the engine's [`Caps`] does.
    ///
    /// # Errors
    /// A bad URL, an unreachable server, or a server that refuses the scripts.
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        unread_cap: u32,
        mention_cap: u32,
    ) -> anyhow::Result<Self> {
        if key_prefix.is_empty() {
            bail!("the Redis key prefix must not be empty");
        }
        let client = redis::Client::open(url).with_context(|| format!("redis url {url}"))?;
        // The default 500 ms response timeout would turn a long bulk-load pipeline or a
        // saturated server into errors; latency is what the bench measures, not a limit.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(120)));
        let mut con = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .with_context(|| format!("connecting to Redis at {url}"))?;
        let mut pipe = redis::pipe();
        for s in [&ACK, &MARK_UNREAD, &MESSAGE_CREATED, &READ_STATES, &SUMMARY] {
            pipe.load_script(s).ignore();
        }
        pipe.exec_async(&mut con)
            .await
            .context("loading the Lua scripts into Redis")?;
        Ok(Self {
            con,
            prefix: Arc::from(key_prefix),
            caps: Caps {
                unread: unread_cap,
                mention: mention_cap,
            },
        })
    }

    fn user_key(&self, user: u64) -> String {
        format!("{}:u:{user}", self.prefix)
    }

    fn channel_key(&self, channel: u64) -> String {
        format!("{}:c:{channel}", self.prefix)
    }

    fn mention_key(&self, user: u64, channel: u64) -> String {
        format!("{}:m:{user}:{channel}", self.prefix)
    }

    /// Deletes every key under the prefix (`SCAN` + `UNLINK`, so Redis frees the
    /// memory in the background without blocking other clients).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn clear(&self) -> anyhow::Result<()> {
        let mut con = self.con.clone();
        let pattern = format!("{}:*", glob_escape(&self.prefix));
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut con)
                .await
                .context("SCAN")?;
            if !keys.is_empty() {
                redis::cmd("UNLINK")
                    .arg(&keys)
                    .exec_async(&mut con)
                    .await
                    .context("UNLINK")?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Bulk population of channels: `(channel, message ids)`, pipelined. Each channel
    /// keeps its newest `2·(unread_cap + 1)` ids, as if every id had been created.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn load_channels(&self, channels: &[(u64, Vec<u64>)]) -> anyhow::Result<()> {
        let window = self.caps.channel_window();
        let mut bulk = Bulk::new(self.con.clone(), "loading channels");
        for (channel, ids) in channels {
            if ids.is_empty() {
                continue;
            }
            let mut newest = ids.clone();
            newest.sort_unstable_by(|a, b| b.cmp(a));
            newest.dedup();
            newest.truncate(window);
            let key = self.channel_key(*channel);
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&key);
            for id in &newest {
                zadd.arg(*id).arg(*id);
            }
            bulk.add(zadd).await?;
            // Ids already present may push the set past the window: keep the top.
            let stop = -i64::try_from(window).unwrap_or(i64::MAX) - 1;
            let mut trim = redis::cmd("ZREMRANGEBYRANK");
            trim.arg(&key).arg(0).arg(stop);
            bulk.add(trim).await?;
        }
        bulk.finish().await
    }

    /// Bulk population of read states: `(user, channel, last_read)`, pipelined, one
    /// `HSET` per run of consecutive entries of the same user. It sets the positions
    /// (it is a population of a cleared prefix, not an ack).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn load_read_states(&self, states: &[(u64, u64, u64)]) -> anyhow::Result<()> {
        let mut bulk = Bulk::new(self.con.clone(), "loading read states");
        for run in states.chunk_by(|a, b| a.0 == b.0) {
            let mut hset = redis::cmd("HSET");
            hset.arg(self.user_key(run[0].0));
            for &(_, channel, last_read) in run {
                hset.arg(channel).arg(last_read);
            }
            bulk.add(hset).await?;
        }
        bulk.finish().await
    }

    /// Ack: the read position of (user, channel) moves forward to `message`, never
    /// backward; the state is created when missing.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn ack(&self, user: u64, channel: u64, message: u64) -> anyhow::Result<()> {
        let mut con = self.con.clone();
        ACK.key(self.user_key(user))
            .arg(channel)
            .arg(message)
            .invoke_async::<()>(&mut con)
            .await
            .context("ack")
    }

    /// Message created: the channel learns `message`, the author has read it, each
    /// distinct mentioned user other than the author gets the mention.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn message_created(
        &self,
        channel: u64,
        message: u64,
        author: u64,
        mentions: &[u64],
    ) -> anyhow::Result<()> {
        let mut mentioned: Vec<u64> = mentions.iter().copied().filter(|&u| u != author).collect();
        mentioned.sort_unstable();
        mentioned.dedup();
        let mut invocation = MESSAGE_CREATED.prepare_invoke();
        invocation
            .key(self.channel_key(channel))
            .key(self.user_key(author));
        for &user in &mentioned {
            invocation
                .key(self.user_key(user))
                .key(self.mention_key(user, channel));
        }
        invocation
            .arg(channel)
            .arg(message)
            .arg(self.caps.channel_window())
            .arg(self.caps.mention_window());
        let mut con = self.con.clone();
        invocation
            .invoke_async::<()>(&mut con)
            .await
            .context("message created")
    }

    /// Every read state of `user` with its derived fields, ascending by channel, in
    /// one round trip.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn read_states(&self, user: u64) -> anyhow::Result<Vec<RedisReadState>> {
        let mut con = self.con.clone();
        let rows: Vec<(u64, u64, u64, u64, u64)> = READ_STATES
            .key(self.user_key(user))
            .arg(&*self.prefix)
            .arg(user)
            .invoke_async(&mut con)
            .await
            .context("read states")?;
        let mut states: Vec<RedisReadState> = rows
            .into_iter()
            .map(|(channel, read, head, unread, mentions)| RedisReadState {
                channel_id: channel,
                last_read_message_id: read,
                last_message_id: head,
                unread_count: capped(unread, self.caps.unread),
                unread_capped: unread > u64::from(self.caps.unread),
                mention_count: capped(mentions, self.caps.mention),
                mention_capped: mentions > u64::from(self.caps.mention),
            })
            .collect();
        // Hash fields come back in no useful order; sorting here keeps the work off
        // Redis' single thread.
        states.sort_unstable_by_key(|s| s.channel_id);
        Ok(states)
    }

    /// The summary of `user` (unread channels, sum of capped mention counts), in one
    /// round trip.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn summary(&self, user: u64) -> anyhow::Result<RedisSummary> {
        let mut con = self.con.clone();
        let (unread_channels, mentions): (u64, u64) = SUMMARY
            .key(self.user_key(user))
            .arg(&*self.prefix)
            .arg(user)
            .arg(self.caps.mention)
            .invoke_async(&mut con)
            .await
            .context("summary")?;
        Ok(RedisSummary {
            unread_channels,
            mentions,
        })
    }

    /// Mark unread: the read position becomes `message - 1`, so that message and
    /// later ones count as unread again (mentions included).
    ///
    /// # Errors
    /// `message` is 0, or Redis errors.
    pub async fn mark_unread(&self, user: u64, channel: u64, message: u64) -> anyhow::Result<()> {
        let Some(position) = message.checked_sub(1) else {
            bail!("mark unread needs a message id of at least 1");
        };
        let mut con = self.con.clone();
        MARK_UNREAD
            .key(self.user_key(user))
            .arg(channel)
            .arg(position)
            .invoke_async::<()>(&mut con)
            .await
            .context("mark unread")
    }

    /// Redis' `used_memory` (bytes allocated for the whole dataset, all prefixes).
    ///
    /// # Errors
    /// Redis errors, or an `INFO` answer without the figure.
    pub async fn used_memory(&self) -> anyhow::Result<u64> {
        let info = self.info("memory").await?;
        info_u64(&info, "used_memory").context("INFO memory has no used_memory line")
    }

    /// Redis' `used_memory_rss`: the resident set of the Redis process, allocator
    /// fragmentation included.
    ///
    /// # Errors
    /// Redis errors, or an `INFO` answer without the figure.
    pub async fn used_memory_rss(&self) -> anyhow::Result<u64> {
        let info = self.info("memory").await?;
        info_u64(&info, "used_memory_rss").context("INFO memory has no used_memory_rss line")
    }

    /// The server's `process_id` and `redis_version` (`INFO server`).
    ///
    /// # Errors
    /// Redis errors, or an `INFO` answer without them.
    pub async fn server_process(&self) -> anyhow::Result<(u32, String)> {
        let info = self.info("server").await?;
        let pid = info_u64(&info, "process_id")
            .and_then(|p| u32::try_from(p).ok())
            .context("INFO server has no process_id line")?;
        let version = info_field(&info, "redis_version").unwrap_or("unknown");
        Ok((pid, version.to_owned()))
    }

    async fn info(&self, section: &str) -> anyhow::Result<String> {
        let mut con = self.con.clone();
        redis::cmd("INFO")
            .arg(section)
            .query_async(&mut con)
            .await
            .with_context(|| format!("INFO {section}"))
    }
}

fn capped(count: u64, cap: u32) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX).min(cap)
}

/// The value of field `name` of an `INFO` answer (`name:value` lines).
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim())
    })
}

/// A numeric field of an `INFO` answer.
fn info_u64(info: &str, name: &str) -> Option<u64> {
    info_field(info, name)?.parse().ok()
}

/// Escapes the glob characters of `SCAN MATCH` so the prefix matches literally.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_memory_is_read_from_the_info_answer() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nused_memory_rss:4096000\r\n";
        let server = "# Server\r\nredis_version:7.0.15\r\nprocess_id:2236\r\n";

        assert_eq!(info_u64(info, "used_memory"), Some(1_048_576));
        assert_eq!(info_u64(info, "used_memory_rss"), Some(4_096_000));
        assert_eq!(info_u64("# Memory\r\n", "used_memory"), None);
        assert_eq!(info_u64(server, "process_id"), Some(2236));
        assert_eq!(info_field(server, "redis_version"), Some("7.0.15"));
    }

    #[test]
    fn glob_characters_in_the_prefix_match_literally() {
        assert_eq!(glob_escape("bench:a*b?[c]\\"), "bench:a\\*b\\?\\[c\\]\\\\");
    }
}
