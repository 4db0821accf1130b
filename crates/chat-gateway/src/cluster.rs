//! Several gateway processes sharing Redis: sessions resumable on any node, runs ended once when a node dies.
//!
//! Each session stays where it was opened (its *owner* node): its registry session, its runs and its pump live
//! there, and the owner's in-memory [`ReplayLog`](crate::replay::ReplayLog) stays the authority on who is attached.
//! Redis carries the rest:
//!
//! - `cg:log:{session}`, a Stream: the pump appends every message under the id `{seq}-0`, a batch of what is ready
//!   at a time in one script, before any client can read it (so a client never holds a seq that Redis lacks, while
//!   Redis answers), trimmed to about the replay limit plus a batch. An entry `{seq}-1` with an `end` field, after message `seq`, ends a session that will get no more
//!   messages.
//! - `cg:session:{session}`, a hash: `user` and `owner` (empty once the owner is gone). It and the log have no
//!   expiry while the session is attached, and expire a resume window after a detach or after the session's end;
//!   the owner deletes both when the session's window runs out.
//! - `cg:inbox:{node}`, a Stream per node: what other nodes ask of it (attach, abandon, a client frame, delivered,
//!   detach) and what they tell it (the attach reply, "taken over", a ring: a session it reads has more, "lost":
//!   a node's sessions were ended). It expires a minute after its last write unless its
//!   node renews its lease meanwhile.
//! - `cg:lease:{node}` (a token of the process, renewed every third of the lease), `cg:nodes`,
//!   `cg:sessions:{node}` (the sessions a node owns) and `cg:runs:{node}` (its runs in progress, as
//!   `{session} {run}` -> request id).
//!
//! A client resuming on another node reads the log there with `XRANGE`; to follow it live, the owner's append also
//! writes a "ring" to that node's inbox (in the same script), which the node's one `XREAD BLOCK` on its inbox reads:
//! one entry per batch, however many sessions the node follows.
//! Its frames go to the owner's inbox, where they are judged as the owner's own connections' are, so `cancel` and
//! `duplicate_request` hold across nodes.
//!
//! When a node's lease expires, one surviving node claims it (atomically, in a script; the claim itself expires, so
//! that another node finishes the work of a claimer that died) and, in one script per session, appends one
//! `agent_completed` (`failed`, "gateway node lost") per run still open, with the next seqs, then the end marker:
//! every run ends exactly once, wherever its client is attached. A node stopped cleanly does the same for its own
//! sessions on its way out (after letting their runs end). A node that finds it was claimed while alive (cut off
//! from Redis longer than its lease) is *fenced*: it writes nothing more to Redis, and the gateway stops.
//!
//! While Redis is unreachable, the owner's connections keep working from memory (their messages are not mirrored:
//! a resume elsewhere of a message in that stretch gets `409 resume_gap`), resumes that need Redis get `503`, and
//! the connection manager reconnects with backoff.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, RedisError, Script};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::connection::Frame;
use crate::protocol::MAX_FRAME_BYTES;
use crate::replay::{AttachError, Attached, LoggedMessage, SessionKey};
use crate::server::Gateway;

/// How long a node's lease lives unless configured otherwise; it is renewed every third of that.
pub const DEFAULT_NODE_LEASE: Duration = Duration::from_secs(3);

/// How many entries a node's inbox keeps at most (approximately); it is trimmed as it is read, too.
const INBOX_LENGTH: usize = 10_000;

/// How long an inbox lives after the last write to it, unless its node renews its lease meanwhile.
const INBOX_TTL_SECS: i64 = 60;

/// How long one `XREAD BLOCK` of the follower waits before it looks after its other duties (holders of lost nodes,
/// a resync).
const FOLLOW_BLOCK: Duration = Duration::from_millis(1000);

/// How long a remote reader waits for a ring before reading its log again anyway: a backstop for a ring lost (the
/// follower reconnected, a write to its inbox failed, or the owner rang the session's previous holder).
const POLL_FALLBACK: Duration = Duration::from_secs(5);

/// The same, during the first [`POLL_FALLBACK`] after the reader attached (when a ring may have gone to the previous
/// holder).
const FIRST_POLL: Duration = Duration::from_millis(100);

/// How long a command waits for Redis before it counts as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many frames from a remote client may wait for the owner to judge them.
const REMOTE_FRAMES: usize = 256;

/// How long a claim on a lost node holds: a claimer that dies leaves the rest of the work to another node then.
const CLAIM_MILLIS: u64 = 30_000;

/// How long a stopped or lost node's id stays fenced, so that a process of it cut off meanwhile stops.
const TOMBSTONE_SECS: u64 = 86_400;

/// Why [`RedisEventLog::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not a Redis URL.
    #[error("`{url}` is not a Redis URL ({source}); write redis://HOST:PORT[/DB]")]
    Url {
        /// The URL given, without its password.
        url: String,
        /// What the client library said.
        source: RedisError,
    },
    /// Redis did not answer.
    #[error("cannot reach Redis at {url}: {source}; start it, or check --event-log")]
    Unreachable {
        /// The URL given, without its password.
        url: String,
        /// What the client library said.
        source: RedisError,
    },
    /// Another live gateway process holds this node id's lease.
    #[error("node id `{node}` holds a live lease in Redis: another gateway process uses it; give each its own id")]
    NodeInUse {
        /// The node id.
        node: String,
    },
}

/// `url` with its password, if any, replaced by `***`: what logs and errors show.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => url.to_owned(),
    }
}

/// The event log shared through Redis by several gateway processes: give it to [`Gateway::redis_event_log`].
///
/// Cloning yields a handle on the same connection and node.
#[derive(Clone)]
pub struct RedisEventLog(Arc<Inner>);

impl fmt::Debug for RedisEventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEventLog").field("node", &self.0.node).field("up", &self.is_up()).finish_non_exhaustive()
    }
}

struct Inner {
    node: Box<str>,
    // This process's lease token: another process of the same node id holds another.
    token: String,
    conn: ConnectionManager,
    client: redis::Client,
    lease: Duration,
    trim: usize,
    // The resume window, in seconds: how long ended sessions stay readable.
    window_secs: AtomicU64,
    up: AtomicBool,
    // Set when Redis answers again after failing: the follower writes this node's sessions' records again.
    resync: AtomicBool,
    errors: AtomicU64,
    // Cancelled when another node claimed this one while it was alive: its sessions were ended elsewhere, and
    // nothing more may be written.
    fenced: CancellationToken,
    next_call: AtomicU64,
    // Attach requests sent to owners, waiting for their reply.
    calls: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    // The remote sessions read on this node, by session: every connection attached to one.
    feeds: Mutex<HashMap<SessionKey, Vec<Arc<Feed>>>>,
    // Taken by the one follower of this node's inbox.
    follower: AtomicBool,
    // As owner: the sessions attached from another node.
    holders: Mutex<HashMap<SessionKey, Holder>>,
    control: mpsc::UnboundedSender<Control>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn log_key(key: SessionKey) -> String {
    format!("cg:log:{key}")
}

fn session_key(key: SessionKey) -> String {
    format!("cg:session:{key}")
}

fn inbox_key(node: &str) -> String {
    format!("cg:inbox:{node}")
}

fn lease_key(node: &str) -> String {
    format!("cg:lease:{node}")
}

fn sessions_key(node: &str) -> String {
    format!("cg:sessions:{node}")
}

fn runs_key(node: &str) -> String {
    format!("cg:runs:{node}")
}

fn reaped_key(node: &str) -> String {
    format!("cg:reaped:{node}")
}

fn claim_key(node: &str) -> String {
    format!("cg:claim:{node}")
}

const NODES: &str = "cg:nodes";

/// Renews this process's lease and keeps the node listed, its inbox without expiry; 0 when another node claimed
/// it or another process of its id holds the lease (this one is fenced).
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('PERSIST', KEYS[4])
return 1
",
    )
});

/// Claims a node whose lease expired, for a while: 1 for the one caller that may end its sessions now. Fences the
/// node (its tombstone) at the same time.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[3])
return 1
",
    )
});

/// Ends one session of a node that is gone, at once (nobody else can append in between): unless its log already
/// ends, appends one message per run still open (`ARGV[3..]`, each the text after the seq, `ARGV[2]` the text
/// before it) with the next seqs, then the end marker; then the session has no owner and expires after `ARGV[1]`
/// seconds. Returns the seq of its last message.
static END_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local seq = 0
local ended = false
if #last > 0 then
  local id = last[1][1]
  local dash = string.find(id, '-', 1, true)
  seq = tonumber(string.sub(id, 1, dash - 1))
  ended = string.sub(id, dash + 1) ~= '0'
end
if not ended then
  for i = 3, #ARGV do
    seq = seq + 1
    redis.call('XADD', KEYS[1], seq .. '-0', 'm', ARGV[2] .. seq .. ARGV[i])
  end
  redis.call('XADD', KEYS[1], seq .. '-1', 'end', 'node gone')
end
redis.call('HSET', KEYS[2], 'owner', '')
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return seq
",
    )
});

/// Appends messages `ARGV[3]`, `ARGV[3] + 1`, ... (their texts `ARGV[7..7 + ARGV[2]]`) to a session's log, trimmed
/// to about `ARGV[1]`, then applies the changes to the node's runs in progress that follow (`+ field value` or
/// `- field _`), and rings the connection of another node that reads the session (`KEYS[3]`, its node's inbox,
/// with the session id `ARGV[4]`, kept to about `ARGV[5]` entries and `ARGV[6]` seconds), all at once. -1 when the
/// log already goes as far or has ended (another node ended the session: this one was taken for lost); 0, writing nothing, when the log is gone (the session was forgotten, or
/// Redis restarted empty) and these are not its first messages; 1 once written.
static MIRROR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local count = tonumber(ARGV[2])
local first = tonumber(ARGV[3])
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local id = last[1][1]
  local dash = string.find(id, '-', 1, true)
  if tonumber(string.sub(id, 1, dash - 1)) >= first or string.sub(id, dash + 1) ~= '0' then return -1 end
elseif first > 1 then
  return 0
end
for i = 0, count - 1 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], (first + i) .. '-0', 'm', ARGV[7 + i])
end
for j = 7 + count, #ARGV, 3 do
  if ARGV[j] == '+' then
    redis.call('HSET', KEYS[2], ARGV[j + 1], ARGV[j + 2])
  else
    redis.call('HDEL', KEYS[2], ARGV[j + 1])
  end
end
if #KEYS >= 3 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 't', 'ring', 's', ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[6])
end
return 1
",
    )
});

/// What a run change means for the node's list of runs in progress.
#[derive(Debug)]
pub(crate) enum RunChange<'a> {
    None,
    Started { run: &'a str, request_id: Option<&'a str> },
    Ended { run: &'a str },
}

/// The pump's append to Redis failed because another node already appended: the session was ended elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("another node ended this session (this node was taken for lost)")]
pub(crate) struct EndedElsewhere;

/// The Redis work that sessions ask for from plain (non-async) code, done in order by one task.
#[derive(Debug)]
enum Control {
    Opened {
        key: SessionKey,
        user: Box<str>,
    },
    Attached {
        key: SessionKey,
    },
    Detached {
        key: SessionKey,
        ttl: Duration,
    },
    Forgotten {
        key: SessionKey,
    },
    Ended {
        key: SessionKey,
        last_seq: u64,
        runs: Vec<String>,
    },
    Send {
        node: Box<str>,
        fields: Vec<(&'static str, String)>,
    },
    /// Answers once everything sent before it is done.
    Flush(oneshot::Sender<()>),
}

/// An owner's answer to an attach request.
#[derive(Debug)]
enum Reply {
    Attached { generation: u64, last_seq: u64 },
    Unknown,
    Gap { first_seq: u64 },
}

/// A connection of another node attached to a session this node owns.
pub(crate) struct Holder {
    node: Box<str>,
    /// The attach request it answered (the requester may give up on it).
    call: u64,
    attached: Attached,
    frames: mpsc::Sender<Frame>,
}

/// What a resume of a session owned elsewhere would find, from Redis.
#[derive(Debug)]
pub(crate) struct Probe {
    owner: Option<String>,
    pub(crate) last_seq: u64,
}

/// Why a resume was refused (before the upgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResumeError {
    Unknown,
    Gap { first_seq: u64 },
    Unavailable,
}

impl From<AttachError> for ResumeError {
    fn from(err: AttachError) -> Self {
        match err {
            AttachError::Gap { first_seq } => ResumeError::Gap { first_seq },
            _ => ResumeError::Unknown,
        }
    }
}

/// Why a remote reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FeedEnd {
    TakenOver,
    Ended,
    Gap,
}

/// A connection on this node reading a session owned by another node (or by none, once its node was lost).
pub(crate) struct Feed {
    pub(crate) key: SessionKey,
    /// The owner node; `None` once it was lost (the log is read to its end marker, and frames go nowhere).
    owner: Option<Box<str>>,
    pub(crate) generation: u64,
    pub(crate) last_seq: u64,
    doorbell: Notify,
    attached_at: tokio::time::Instant,
    over: CancellationToken,
    log: RedisEventLog,
}

impl fmt::Debug for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feed").field("key", &self.key).field("owner", &self.owner).finish_non_exhaustive()
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

/// The seq and sub-id of a log entry id `{seq}-{sub}`.
fn entry_id(id: &str) -> Option<(u64, u64)> {
    let (seq, sub) = id.split_once('-')?;
    Some((seq.parse().ok()?, sub.parse().ok()?))
}

/// One entry of a session's log.
enum Entry {
    Message(LoggedMessage),
    /// The end marker, after message `seq`.
    End {
        seq: u64,
    },
}

type StreamEntries = Vec<(String, Vec<(String, String)>)>;

fn parse_entries(entries: StreamEntries) -> Vec<Entry> {
    entries
        .into_iter()
        .filter_map(|(id, fields)| {
            let (seq, _) = entry_id(&id)?;
            if field(&fields, "end").is_some() {
                return Some(Entry::End { seq });
            }
            let text = field(&fields, "m")?.to_owned();
            Some(Entry::Message(LoggedMessage::new(seq, text)))
        })
        .collect()
}

/// The seq of the last message of a log whose last entry is `last` (an end marker carries the seq it follows).
fn last_seq_of(last: &StreamEntries) -> u64 {
    last.first().and_then(|(id, _)| entry_id(id)).map_or(0, |(seq, _)| seq)
}

fn is_connection_error(err: &RedisError) -> bool {
    err.is_io_error() || err.is_timeout() || err.is_connection_dropped() || err.is_connection_refusal()
}

/// Appends an entry to `node`'s inbox, which then lives a while even if nobody reads it (a node that went away).
fn inbox_write(node: &str, fields: &[(&'static str, String)]) -> redis::Pipeline {
    let inbox = inbox_key(node);
    let mut pipe = redis::pipe();
    pipe.cmd("XADD").arg(&inbox).arg("MAXLEN").arg("~").arg(INBOX_LENGTH).arg("*");
    for (name, value) in fields {
        pipe.arg(*name).arg(value);
    }
    pipe.ignore().expire(&inbox, INBOX_TTL_SECS).ignore();
    pipe
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs().saturating_add(1)).unwrap_or(i64::MAX)
}

impl RedisEventLog {
    /// Connects to Redis at `url` as node `node` (any id unique among the gateway processes sharing that Redis;
    /// `None` picks a random one), holding a lease of `lease` (renewed every third of it; a node whose lease
    /// expires is taken for lost). Its logs keep about `replay_limit` messages each.
    ///
    /// Fails when the URL is not one, Redis does not answer, or another live process holds the node id. Needs a
    /// Tokio runtime: the lease and the Redis writes run on tasks of their own.
    pub async fn connect(
        url: &str,
        node: Option<&str>,
        lease: Duration,
        replay_limit: usize,
    ) -> Result<RedisEventLog, ConnectError> {
        let shown = redacted(url);
        let client = redis::Client::open(url).map_err(|source| ConnectError::Url { url: shown.clone(), source })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let unreachable = |source| ConnectError::Unreachable { url: shown.clone(), source };
        let mut conn = ConnectionManager::new_with_config(client.clone(), config).await.map_err(unreachable)?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(unreachable)?;
        let node: Box<str> = match node {
            Some(node) => node.into(),
            None => format!("node-{}", &SessionKey::random().to_string()[..8]).into(),
        };
        let (control, control_rx) = mpsc::unbounded_channel();
        let log = RedisEventLog(Arc::new(Inner {
            node,
            token: SessionKey::random().to_string(),
            conn,
            client,
            lease: lease.max(Duration::from_millis(300)),
            trim: replay_limit.max(1),
            window_secs: AtomicU64::new(crate::sessions::DEFAULT_RESUME_WINDOW.as_secs()),
            up: AtomicBool::new(true),
            resync: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            fenced: CancellationToken::new(),
            next_call: AtomicU64::new(1),
            calls: Mutex::default(),
            feeds: Mutex::default(),
            follower: AtomicBool::new(false),
            holders: Mutex::default(),
            control,
        }));
        log.start_node().await.map_err(|err| match err {
            StartError::InUse => ConnectError::NodeInUse { node: log.0.node.to_string() },
            StartError::Redis(source) => unreachable(source),
        })?;
        tokio::spawn(log.clone().control_loop(control_rx));
        tokio::spawn(log.clone().lease_loop());
        tracing::info!(node = &*log.0.node, "event log: Redis at {shown}, this node is `{}`", log.0.node);
        Ok(log)
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.0.node
    }

    /// Whether Redis answered the last command sent to it.
    pub fn is_up(&self) -> bool {
        self.0.up.load(Ordering::Relaxed)
    }

    /// How many Redis commands failed since start.
    pub fn errors(&self) -> u64 {
        self.0.errors.load(Ordering::Relaxed)
    }

    /// How long a session stays resumable after its connection ended, as this node's gateway is configured.
    pub(crate) fn set_resume_window(&self, window: Duration) {
        self.0.window_secs.store(window.as_secs(), Ordering::Relaxed);
    }

    fn window(&self) -> i64 {
        seconds(Duration::from_secs(self.0.window_secs.load(Ordering::Relaxed)))
    }

    pub(crate) fn fenced(&self) -> &CancellationToken {
        &self.0.fenced
    }

    fn conn(&self) -> ConnectionManager {
        self.0.conn.clone()
    }

    /// Notes the outcome of a command: Redis is up, or a failure is counted (and logged once when it goes down).
    fn note<T>(&self, result: &Result<T, RedisError>) {
        match result {
            Ok(_) => {
                if !self.0.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("Redis answers again");
                    self.0.resync.store(true, Ordering::Relaxed);
                }
            }
            Err(err) => {
                self.0.errors.fetch_add(1, Ordering::Relaxed);
                if is_connection_error(err) {
                    if self.0.up.swap(false, Ordering::Relaxed) {
                        tracing::warn!(%err, "lost Redis: resumes on other nodes are refused until it is back");
                    }
                } else {
                    tracing::warn!(%err, "a Redis command failed");
                }
            }
        }
    }

    /// Counts a failure of the follower's own connection, which does not say Redis is down for the rest (a slow
    /// `XREAD BLOCK` times out).
    fn note_follower<T>(&self, result: &Result<T, RedisError>) {
        if let Err(err) = result {
            self.0.errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%err, "the follower's Redis connection failed; connecting again");
        }
    }

    async fn start_node(&self) -> Result<(), StartError> {
        let node = &*self.0.node;
        let mut conn = self.conn();
        let millis = u64::try_from(self.0.lease.as_millis()).unwrap_or(u64::MAX);
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(millis));
        let taken: Option<String> = conn.set_options(lease_key(node), &self.0.token, options).await?;
        if taken.is_none() {
            return Err(StartError::InUse);
        }
        // A node id used again: another node may still be ending what its previous process left; then this
        // process ends the rest (each session once: the script skips an ended log).
        let deadline = tokio::time::Instant::now() + Duration::from_millis(CLAIM_MILLIS);
        while conn.exists::<_, bool>(claim_key(node)).await? && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let error = format!("gateway node lost: `{node}` stopped while the run was in progress");
        self.end_sessions_of(node, &error).await?;
        let _: () = conn.del(reaped_key(node)).await?;
        if !self.renew().await? {
            return Err(StartError::InUse);
        }
        Ok(())
    }

    /// Renews the lease; `Ok(false)` once another node claimed this one, or another process holds its id.
    async fn renew(&self) -> Result<bool, RedisError> {
        let node = &*self.0.node;
        let millis = u64::try_from(self.0.lease.as_millis()).unwrap_or(u64::MAX);
        let renewed: i64 = RENEW
            .key(lease_key(node))
            .key(reaped_key(node))
            .key(NODES)
            .key(inbox_key(node))
            .arg(millis)
            .arg(&self.0.token)
            .arg(node)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(renewed == 1)
    }

    /// Renews the lease every third of it, and ends the sessions of every node whose lease expired.
    async fn lease_loop(self) {
        let mut tick = tokio::time::interval(self.0.lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // No node is judged before this instant: at start, and after Redis was unreachable (to this node, or to
        // every node while it restarted, their leases lapsing meanwhile), every live node gets a whole lease to
        // renew first.
        let mut judge_from = tokio::time::Instant::now() + self.0.lease;
        loop {
            tick.tick().await;
            let renewed = self.renew().await;
            self.note(&renewed);
            match renewed {
                Ok(true) if tokio::time::Instant::now() < judge_from => continue,
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(
                        node = &*self.0.node,
                        "this node's lease lapsed and another node ended its sessions (or another process took its \
                         id); stopping"
                    );
                    self.0.fenced.cancel();
                    return;
                }
                Err(_) => {
                    judge_from = tokio::time::Instant::now() + self.0.lease;
                    continue;
                }
            }
            let nodes: Result<Vec<String>, _> = self.conn().smembers(NODES).await;
            self.note(&nodes);
            for node in nodes.unwrap_or_default() {
                if node != *self.0.node {
                    // Its own task: ending many sessions must not hold up this node's renewals.
                    let log = self.clone();
                    tokio::spawn(async move { log.reap_if_lost(&node).await });
                }
            }
        }
    }

    async fn reap_if_lost(&self, node: &str) {
        let claimed: Result<i64, _> = CLAIM
            .key(lease_key(node))
            .key(claim_key(node))
            .key(reaped_key(node))
            .arg(&*self.0.node)
            .arg(CLAIM_MILLIS)
            .arg(TOMBSTONE_SECS)
            .invoke_async(&mut self.conn())
            .await;
        self.note(&claimed);
        if claimed != Ok(1) {
            return;
        }
        tracing::warn!(lost = node, "gateway node lost: ending its runs");
        let error = format!("gateway node lost: `{node}` stopped while the run was in progress");
        let ended = self.end_sessions_of(node, &error).await;
        self.note(&ended);
        if let Ok(ended) = ended {
            let _: Result<(), _> = self.conn().del(claim_key(node)).await;
            tracing::info!(lost = node, sessions = ended, "ended the sessions of a lost node");
        }
    }

    /// Appends to each session of `node` one failed `agent_completed` per run still open (`error` its error), then
    /// the end marker, and lets the session expire a resume window later (time for its clients to read them);
    /// forgets the node. Returns how many sessions.
    async fn end_sessions_of(&self, node: &str, error: &str) -> Result<usize, RedisError> {
        let mut conn = self.conn();
        let sessions: Vec<String> = conn.smembers(sessions_key(node)).await?;
        let runs: Vec<(String, String)> = conn.hgetall(runs_key(node)).await?;
        let mut open: HashMap<&str, Vec<(&str, Option<String>)>> = HashMap::new();
        for (entry, request_id) in &runs {
            if let Some((session, run)) = entry.split_once(' ') {
                open.entry(session).or_default().push((run, serde_json::from_str(request_id).unwrap_or(None)));
            }
        }
        for session in &sessions {
            let Ok(key) = session.parse::<SessionKey>() else { continue };
            let mut script = END_SESSION.key(log_key(key));
            script.key(session_key(key)).arg(self.window());
            let (before, _) = crate::protocol::lost_run_completed_around_seq("", None, error);
            script.arg(before);
            for (run, request_id) in open.get(session.as_str()).map_or(&[][..], Vec::as_slice) {
                let (_, after) = crate::protocol::lost_run_completed_around_seq(run, request_id.as_deref(), error);
                script.arg(after);
            }
            let _: u64 = script.invoke_async(&mut conn).await?;
        }
        let _: () = redis::pipe()
            .del(sessions_key(node))
            .ignore()
            .del(runs_key(node))
            .ignore()
            .del(inbox_key(node))
            .ignore()
            .srem(NODES, node)
            .ignore()
            .query_async(&mut conn)
            .await?;
        // The connections reading those sessions anywhere read their ends now.
        let nodes: Vec<String> = conn.smembers(NODES).await?;
        for other in nodes {
            self.send(&other, vec![("t", "lost".into()), ("n", node.to_owned())]);
        }
        Ok(sessions.len())
    }

    /// On a clean stop, after the sessions' last messages: ends this node's sessions as a lost node's are (a run
    /// still open gets a failed `agent_completed`), then gives up the lease, so that the node id can start again
    /// at once.
    pub(crate) async fn leave(&self) {
        if self.0.fenced.is_cancelled() {
            return;
        }
        let (flushed, done) = oneshot::channel();
        let _ = self.0.control.send(Control::Flush(flushed));
        let _ = tokio::time::timeout(RESPONSE_TIMEOUT * 2, done).await;
        let node = &*self.0.node;
        let error = format!("gateway node `{node}` stopped while the run was in progress");
        let ended = self.end_sessions_of(node, &error).await;
        self.note(&ended);
        // What that queued (the "lost" notices, rings of the ends) goes out before the process does.
        let (flushed, done) = oneshot::channel();
        let _ = self.0.control.send(Control::Flush(flushed));
        let _ = tokio::time::timeout(RESPONSE_TIMEOUT * 2, done).await;
        // Fenced at once (a process of this id cut off meanwhile stops); the next process of the id lifts it.
        let left: Result<(), _> = redis::pipe()
            .del(lease_key(node))
            .ignore()
            .set_ex(reaped_key(node), node, TOMBSTONE_SECS)
            .ignore()
            .query_async(&mut self.conn())
            .await;
        self.note(&left);
    }

    /// The pump's write, before the messages are in the owner's memory: appends them to the session's Redis log
    /// (in one round trip, atomically) and keeps the node's list of runs in progress. `Err` when the log already
    /// has one of these seqs: another node ended the session (this node was taken for lost), so the session must
    /// stop. While Redis is down the messages stay in memory only.
    pub(crate) async fn mirror(
        &self,
        key: SessionKey,
        messages: &[(&LoggedMessage, RunChange<'_>)],
    ) -> Result<(), EndedElsewhere> {
        if self.0.fenced.is_cancelled() {
            return Err(EndedElsewhere);
        }
        if !self.is_up() {
            return Ok(());
        }
        let Some((first, _)) = messages.first() else { return Ok(()) };
        let mut script = MIRROR.key(log_key(key));
        script.key(runs_key(&self.0.node));
        // A connection of another node reads the session: its node is told there is more (one entry in its inbox,
        // which its follower reads, whatever the number of sessions it follows).
        if let Some(holder) = lock(&self.0.holders).get(&key) {
            script.key(inbox_key(&holder.node));
        }
        // The limit plus a batch: Redis gets each batch before the owner's memory log does.
        let trim = self.0.trim + crate::sessions::PUMP_BATCH;
        script.arg(trim).arg(messages.len()).arg(first.seq).arg(key.to_string());
        script.arg(INBOX_LENGTH).arg(INBOX_TTL_SECS);
        for (message, _) in messages {
            script.arg(message.text.as_str());
        }
        for (_, run) in messages {
            match run {
                RunChange::None => {}
                RunChange::Started { run, request_id } => {
                    let value = serde_json::to_string(request_id).unwrap_or_else(|_| "null".to_owned());
                    script.arg("+").arg(format!("{key} {run}")).arg(value);
                }
                RunChange::Ended { run } => {
                    script.arg("-").arg(format!("{key} {run}")).arg("");
                }
            }
        }
        let written: Result<i64, RedisError> = script.invoke_async(&mut self.conn()).await;
        self.note(&written);
        if written == Ok(-1) {
            tracing::error!(session = %key, "another node appended to this session's log: it was taken for lost");
            return Err(EndedElsewhere);
        }
        Ok(())
    }

    pub(crate) fn opened(&self, key: SessionKey, user: &str) {
        let _ = self.0.control.send(Control::Opened { key, user: user.into() });
    }

    pub(crate) fn detached(&self, key: SessionKey, ttl: Duration) {
        let _ = self.0.control.send(Control::Detached { key, ttl });
    }

    pub(crate) fn forgotten(&self, key: SessionKey) {
        let _ = self.0.control.send(Control::Forgotten { key });
    }

    /// The session's pump appended its last message, `last_seq`; `runs` are those it started and saw no end of
    /// (cancelled with the session): they leave the list of runs in progress.
    pub(crate) fn ended(&self, key: SessionKey, last_seq: u64, runs: Vec<String>) {
        let _ = self.0.control.send(Control::Ended { key, last_seq, runs });
    }

    /// A connection attached to the session: its log and record no longer expire, and a connection of another
    /// node that held it is taken over (`holder`: the new one, when it is remote too).
    pub(crate) fn attached(&self, key: SessionKey, holder: Option<Holder>) {
        let _ = self.0.control.send(Control::Attached { key });
        let old = match holder {
            Some(holder) => lock(&self.0.holders).insert(key, holder),
            None => lock(&self.0.holders).remove(&key),
        };
        if let Some(old) = old {
            self.send_over(&old.node, key, old.attached.generation);
        }
    }

    fn send(&self, node: &str, fields: Vec<(&'static str, String)>) {
        let _ = self.0.control.send(Control::Send { node: node.into(), fields });
    }

    /// Tells node `node` that its connection holding `generation` of the session was taken over.
    fn send_over(&self, node: &str, key: SessionKey, generation: u64) {
        self.send(node, vec![("t", "over".into()), ("s", key.to_string()), ("g", generation.to_string())]);
    }

    async fn control_loop(self, mut ops: mpsc::UnboundedReceiver<Control>) {
        while let Some(op) = ops.recv().await {
            if self.0.fenced.is_cancelled() {
                // The sessions were ended by another node: nothing more of this node's may reach Redis.
                continue;
            }
            let mut conn = self.conn();
            let done: Result<(), RedisError> = match &op {
                Control::Opened { key, user } => {
                    redis::pipe()
                        .hset_multiple(session_key(*key), &[("user", &**user), ("owner", &*self.0.node)])
                        .ignore()
                        .sadd(sessions_key(&self.0.node), key.to_string())
                        .ignore()
                        .query_async(&mut conn)
                        .await
                }
                Control::Attached { key } => {
                    redis::pipe()
                        .persist(session_key(*key))
                        .ignore()
                        .persist(log_key(*key))
                        .ignore()
                        .query_async(&mut conn)
                        .await
                }
                Control::Detached { key, ttl } => {
                    redis::pipe()
                        .expire(session_key(*key), seconds(*ttl))
                        .ignore()
                        .expire(log_key(*key), seconds(*ttl))
                        .ignore()
                        .query_async(&mut conn)
                        .await
                }
                Control::Forgotten { key } => {
                    redis::pipe()
                        .del(session_key(*key))
                        .ignore()
                        .del(log_key(*key))
                        .ignore()
                        .srem(sessions_key(&self.0.node), key.to_string())
                        .ignore()
                        .query_async(&mut conn)
                        .await
                }
                Control::Ended { key, last_seq, runs } => {
                    let mut pipe = redis::pipe();
                    // NOMKSTREAM: a session already forgotten keeps no log.
                    pipe.cmd("XADD")
                        .arg(log_key(*key))
                        .arg("NOMKSTREAM")
                        .arg(format!("{last_seq}-1"))
                        .arg("end")
                        .arg("closed")
                        .ignore();
                    // It can be read for a resume window more, by a client that was away.
                    pipe.expire(log_key(*key), self.window())
                        .ignore()
                        .expire(session_key(*key), self.window())
                        .ignore();
                    for run in runs {
                        pipe.hdel(runs_key(&self.0.node), format!("{key} {run}")).ignore();
                    }
                    // A connection of another node reading the session reads its end now (queued after this).
                    let holder = lock(&self.0.holders).get(key).map(|holder| holder.node.clone());
                    if let Some(node) = holder {
                        self.send(&node, vec![("t", "ring".into()), ("s", key.to_string())]);
                    }
                    pipe.query_async(&mut conn).await
                }
                Control::Send { node, fields } => inbox_write(node, fields).query_async(&mut conn).await,
                Control::Flush(_) => Ok(()),
            };
            if let Err(err) = &done {
                tracing::debug!(%err, ?op, "a Redis write was lost");
            }
            self.note(&done);
            if let Control::Flush(flushed) = op {
                let _ = flushed.send(());
            }
        }
    }

    /// What a resume on this node of `user`'s session `key`, owned by another node (or by a lost one), would be
    /// answered, from Redis alone, changing nothing: its owner (`None` once lost) and its last seq.
    pub(crate) async fn probe_remote(&self, user: &str, key: SessionKey, after: u64) -> Result<Probe, ResumeError> {
        if !self.is_up() {
            return Err(ResumeError::Unavailable);
        }
        let mut conn = self.conn();
        let range = |pipe: &mut redis::Pipeline, command: &str, from: &str, to: &str| {
            pipe.cmd(command).arg(log_key(key)).arg(from).arg(to).arg("COUNT").arg(1);
        };
        let mut pipe = redis::pipe();
        pipe.hgetall(session_key(key));
        // The message after `after` (the log must hold it, if there is one yet), the first and the last entry.
        range(&mut pipe, "XRANGE", &format!("{}-0", after.saturating_add(1)), "+");
        range(&mut pipe, "XRANGE", "-", "+");
        range(&mut pipe, "XREVRANGE", "+", "-");
        let read: Result<(HashMap<String, String>, StreamEntries, StreamEntries, StreamEntries), _> =
            pipe.query_async(&mut conn).await;
        self.note(&read);
        let (record, next, first, last) = read.map_err(|_| ResumeError::Unavailable)?;
        if record.get("user").map(String::as_str) != Some(user) {
            return Err(ResumeError::Unknown);
        }
        let owner = record.get("owner").filter(|owner| !owner.is_empty()).cloned();
        if owner.as_deref() == Some(&*self.0.node) {
            // This node's own session, gone from memory: expired here, the record just not deleted yet.
            return Err(ResumeError::Unknown);
        }
        let last_seq = last_seq_of(&last);
        let first_seq = first.first().and_then(|(id, _)| entry_id(id)).map_or(last_seq + 1, |(seq, _)| seq);
        let next_seq = next.first().and_then(|(id, _)| entry_id(id)).filter(|(_, sub)| *sub == 0);
        // Beyond the last message, or the next one is not there: as on one node, 409 with what is held.
        if after > last_seq || next_seq.is_some_and(|(seq, _)| seq != after + 1) {
            return Err(ResumeError::Gap { first_seq: next_seq.map_or(first_seq, |(seq, _)| seq) });
        }
        Ok(Probe { owner, last_seq })
    }

    /// Attaches a connection of `user` on this node to session `key`, owned by another node (or by a lost one):
    /// the owner checks and takes over as it does for its own connections.
    pub(crate) async fn attach_remote(
        &self,
        user: &str,
        key: SessionKey,
        after: u64,
    ) -> Result<Arc<Feed>, ResumeError> {
        let Probe { owner, last_seq } = self.probe_remote(user, key, after).await?;
        let (generation, last_seq) = match &owner {
            None => (0, last_seq),
            Some(owner) => {
                let call = self.0.next_call.fetch_add(1, Ordering::Relaxed);
                let (reply, replied) = oneshot::channel();
                lock(&self.0.calls).insert(call, reply);
                self.send(
                    owner,
                    vec![
                        ("t", "attach".into()),
                        ("s", key.to_string()),
                        ("u", user.to_owned()),
                        ("a", after.to_string()),
                        ("n", self.0.node.to_string()),
                        ("c", call.to_string()),
                    ],
                );
                let replied = tokio::time::timeout(self.0.lease, replied).await;
                lock(&self.0.calls).remove(&call);
                match replied {
                    // Redis may be ahead of the owner's memory: the session frame says the larger.
                    Ok(Ok(Reply::Attached { generation, last_seq: owner_last })) => {
                        (generation, owner_last.max(last_seq))
                    }
                    Ok(Ok(Reply::Unknown)) => return Err(ResumeError::Unknown),
                    Ok(Ok(Reply::Gap { first_seq })) => return Err(ResumeError::Gap { first_seq }),
                    // No answer within a lease: the owner is gone or unreachable; if it attached meanwhile, it
                    // lets go of this attachment.
                    Ok(Err(_)) | Err(_) => {
                        self.send(
                            owner,
                            vec![("t", "abandon".into()), ("s", key.to_string()), ("c", call.to_string())],
                        );
                        return Err(ResumeError::Unavailable);
                    }
                }
            }
        };
        let feed = Arc::new(Feed {
            key,
            owner: owner.map(Into::into),
            generation,
            last_seq,
            doorbell: Notify::new(),
            attached_at: tokio::time::Instant::now(),
            over: CancellationToken::new(),
            log: self.clone(),
        });
        lock(&self.0.feeds).entry(key).or_default().push(Arc::clone(&feed));
        Ok(feed)
    }

    /// Reads this node's inbox until the gateway stops: owner requests are served with `gateway`'s sessions, rings
    /// wake the connections reading a session owned elsewhere.
    pub(crate) async fn follow(self, gateway: Gateway) {
        if self.0.follower.swap(true, Ordering::Relaxed) {
            tracing::error!("a second follower for one event log: the first one goes on alone");
            return;
        }
        let inbox = inbox_key(&self.0.node);
        // The inbox from its current end: what an earlier process of this node id left is not ours.
        let mut inbox_id = "$".to_owned();
        let mut conn: Option<redis::aio::MultiplexedConnection> = None;
        let mut backoff = Duration::from_millis(100);
        let mut holders_checked = tokio::time::Instant::now();
        loop {
            if self.0.resync.swap(false, Ordering::Relaxed) {
                self.resync(&gateway).await;
            }
            if holders_checked.elapsed() >= self.0.lease / 3 {
                holders_checked = tokio::time::Instant::now();
                self.drop_holders_of_lost_nodes(&gateway).await;
            }
            let connection = match &mut conn {
                Some(connection) => connection,
                None => {
                    let config = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
                        .set_response_timeout(Some(FOLLOW_BLOCK + RESPONSE_TIMEOUT));
                    match self.0.client.get_multiplexed_async_connection_with_config(&config).await {
                        Ok(connection) => {
                            backoff = Duration::from_millis(100);
                            conn.insert(connection)
                        }
                        Err(err) => {
                            self.note_follower::<()>(&Err(err));
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                            continue;
                        }
                    }
                }
            };
            if inbox_id == "$" {
                // Resolved once to a real id: `$` again on the next read would skip what came in between.
                let last: Result<StreamEntries, _> = redis::cmd("XREVRANGE")
                    .arg(&inbox)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(connection)
                    .await;
                self.note_follower(&last);
                match last {
                    Ok(last) => inbox_id = last.first().map_or_else(|| "0-0".to_owned(), |(id, _)| id.clone()),
                    Err(_) => {
                        conn = None;
                        continue;
                    }
                }
            }
            let block = u64::try_from(FOLLOW_BLOCK.as_millis()).unwrap_or(u64::MAX);
            let read: Result<Option<Vec<(String, StreamEntries)>>, RedisError> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(256)
                .arg("BLOCK")
                .arg(block)
                .arg("STREAMS")
                .arg(&inbox)
                .arg(&inbox_id)
                .query_async(connection)
                .await;
            self.note_follower(&read);
            let read = match read {
                Ok(read) => read.unwrap_or_default(),
                Err(_) => {
                    conn = None;
                    // Rings may have been missed: every reader looks again.
                    for feeds in lock(&self.0.feeds).values() {
                        feeds.iter().for_each(|feed| feed.doorbell.notify_one());
                    }
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            for (_, entries) in read {
                let Some(last) = entries.last().map(|(id, _)| id.clone()) else { continue };
                for (_, fields) in &entries {
                    self.serve_request(&gateway, fields);
                }
                // Read: those entries need not stay.
                let trimmed: Result<i64, _> = redis::cmd("XTRIM")
                    .arg(&inbox)
                    .arg("MINID")
                    .arg("~")
                    .arg(&last)
                    .query_async(&mut *connection)
                    .await;
                self.note_follower(&trimmed);
                inbox_id = last;
            }
        }
    }

    /// After Redis was unreachable (writes were lost, or Redis restarted empty): writes the records of this node's
    /// sessions again, with the expiry each should have, and deletes those of sessions it no longer holds.
    async fn resync(&self, gateway: &Gateway) {
        // Listed first, held second: a session opened in between is held (written), not deleted; one closed in
        // between is listed and not held (deleted).
        let listed: Result<Vec<String>, _> = self.conn().smembers(sessions_key(&self.0.node)).await;
        self.note(&listed);
        let Ok(listed) = listed else {
            self.0.resync.store(true, Ordering::Relaxed);
            return;
        };
        let held = gateway.sessions.snapshot();
        let mut pipe = redis::pipe();
        for session in &listed {
            if let Ok(key) = session.parse::<SessionKey>()
                && !held.iter().any(|(held, _, _)| *held == key)
            {
                pipe.del(session_key(key)).ignore().del(log_key(key)).ignore();
                pipe.srem(sessions_key(&self.0.node), session).ignore();
            }
        }
        for (key, user, detached) in &held {
            pipe.hset_multiple(session_key(*key), &[("user", &**user), ("owner", &*self.0.node)]).ignore();
            pipe.sadd(sessions_key(&self.0.node), key.to_string()).ignore();
            if *detached {
                let window = self.window();
                pipe.expire(session_key(*key), window).ignore().expire(log_key(*key), window).ignore();
            } else {
                pipe.persist(session_key(*key)).ignore().persist(log_key(*key)).ignore();
            }
        }
        let written: Result<(), _> = pipe.query_async(&mut self.conn()).await;
        self.note(&written);
        match written {
            Ok(()) => tracing::info!(sessions = held.len(), "wrote this node's sessions to Redis again"),
            Err(_) => self.0.resync.store(true, Ordering::Relaxed),
        }
    }

    /// As owner: lets go of the sessions held by connections of nodes whose lease lapsed (they detach, their
    /// resume window starts), as their `detach` will never come.
    async fn drop_holders_of_lost_nodes(&self, gateway: &Gateway) {
        let nodes: HashSet<Box<str>> = lock(&self.0.holders).values().map(|holder| holder.node.clone()).collect();
        for node in nodes {
            let alive: Result<bool, _> = self.conn().exists(lease_key(&node)).await;
            self.note(&alive);
            if alive != Ok(false) {
                continue;
            }
            let lost: Vec<(SessionKey, Attached)> = {
                let mut holders = lock(&self.0.holders);
                let keys: Vec<SessionKey> =
                    holders.iter().filter(|(_, holder)| holder.node == node).map(|(key, _)| *key).collect();
                keys.into_iter().filter_map(|key| Some((key, holders.remove(&key)?.attached))).collect()
            };
            for (key, attached) in lost {
                tracing::debug!(session = %key, node = &*node, "the node holding the session is gone: detached");
                gateway.sessions.detach(key, attached, false);
            }
        }
    }

    /// Serves one entry of this node's inbox.
    fn serve_request(&self, gateway: &Gateway, fields: &[(String, String)]) {
        let session = || field(fields, "s").and_then(|key| key.parse::<SessionKey>().ok());
        let number = |name: &str| field(fields, name).and_then(|value| value.parse::<u64>().ok());
        match field(fields, "t") {
            Some("attach") => {
                let (Some(key), Some(user), Some(after), Some(node), Some(call)) =
                    (session(), field(fields, "u"), number("a"), field(fields, "n"), number("c"))
                else {
                    return;
                };
                let mut reply = match gateway.sessions.resume_for(gateway, user, key, after, node, call) {
                    Ok(attached) => vec![
                        ("r", "ok".into()),
                        ("g", attached.generation.to_string()),
                        ("l", attached.last_seq.to_string()),
                    ],
                    Err(AttachError::Gap { first_seq }) => vec![("r", "gap".into()), ("f", first_seq.to_string())],
                    Err(_) => vec![("r", "unknown".into())],
                };
                reply.push(("t", "reply".into()));
                reply.push(("c", call.to_string()));
                self.send(node, reply);
            }
            Some("reply") => {
                let Some(call) = number("c") else { return };
                let reply = match field(fields, "r") {
                    Some("ok") => {
                        Reply::Attached { generation: number("g").unwrap_or(0), last_seq: number("l").unwrap_or(0) }
                    }
                    Some("gap") => Reply::Gap { first_seq: number("f").unwrap_or(0) },
                    _ => Reply::Unknown,
                };
                if let Some(waiting) = lock(&self.0.calls).remove(&call) {
                    let _ = waiting.send(reply);
                }
            }
            Some("abandon") => {
                let (Some(key), Some(call)) = (session(), number("c")) else { return };
                let mut holders = lock(&self.0.holders);
                if holders.get(&key).is_some_and(|holder| holder.call == call)
                    && let Some(holder) = holders.remove(&key)
                {
                    drop(holders);
                    gateway.sessions.detach(key, holder.attached, false);
                }
            }
            Some("ring") => {
                // The session's log has more: its readers here read it.
                if let Some(key) = session()
                    && let Some(feeds) = lock(&self.0.feeds).get(&key)
                {
                    feeds.iter().for_each(|feed| feed.doorbell.notify_one());
                }
            }
            Some("lost") => {
                // Node `n`'s sessions were ended (it was lost, or left): their readers here read to the end.
                let Some(node) = field(fields, "n") else { return };
                for feeds in lock(&self.0.feeds).values() {
                    feeds
                        .iter()
                        .filter(|feed| feed.owner.as_deref() == Some(node))
                        .for_each(|feed| feed.doorbell.notify_one());
                }
            }
            Some("over") => {
                let (Some(key), Some(generation)) = (session(), number("g")) else { return };
                if let Some(feeds) = lock(&self.0.feeds).get(&key) {
                    feeds.iter().filter(|feed| feed.generation == generation).for_each(|feed| feed.over.cancel());
                }
            }
            Some(kind @ ("text" | "binary" | "large")) => {
                let (Some(key), Some(generation)) = (session(), number("g")) else { return };
                let frame = match kind {
                    "text" => Frame::Text(field(fields, "x").unwrap_or_default().to_owned().into()),
                    "large" => Frame::TooLarge(number("l").unwrap_or(0).try_into().unwrap_or(usize::MAX)),
                    _ => Frame::Binary,
                };
                let holders = lock(&self.0.holders);
                let Some(holder) = holders.get(&key).filter(|holder| holder.attached.generation == generation) else {
                    drop(holders);
                    // From a connection that was taken over (its notice lost, or on its way): it must close.
                    if let Some(node) = field(fields, "n") {
                        self.send_over(node, key, generation);
                    }
                    return;
                };
                if holder.frames.try_send(frame).is_err() {
                    // A remote client that floods the owner faster than its session answers: cut it off.
                    drop(holders);
                    tracing::debug!(session = %key, "too many frames from a remote client waiting; taking it over");
                    let old = lock(&self.0.holders).remove(&key);
                    if let Some(old) = old {
                        self.send_over(&old.node, key, old.attached.generation);
                        gateway.sessions.detach(key, old.attached, false);
                    }
                }
            }
            Some("delivered") => {
                let (Some(key), Some(generation), Some(seq)) = (session(), number("g"), number("q")) else { return };
                let attached = lock(&self.0.holders)
                    .get(&key)
                    .map(|holder| holder.attached)
                    .filter(|attached| attached.generation == generation);
                if let Some(attached) = attached {
                    gateway.sessions.acknowledge(key, &attached, seq);
                }
            }
            Some("detach") => {
                let (Some(key), Some(generation)) = (session(), number("g")) else { return };
                let mut holders = lock(&self.0.holders);
                if holders.get(&key).is_some_and(|holder| holder.attached.generation == generation)
                    && let Some(holder) = holders.remove(&key)
                {
                    drop(holders);
                    gateway.sessions.detach(key, holder.attached, field(fields, "z") == Some("1"));
                }
            }
            _ => {}
        }
    }

    /// A holder for a remote connection's attachment (answering attach request `call` of node `node`), with the
    /// task that judges its frames.
    pub(crate) fn holder(
        &self,
        gateway: &Gateway,
        live: Arc<crate::sessions::LiveSession>,
        node: &str,
        call: u64,
        attached: Attached,
    ) -> Holder {
        let (frames, mut frames_rx) = mpsc::channel::<Frame>(REMOTE_FRAMES);
        let gateway = gateway.clone();
        tokio::spawn(async move {
            while let Some(frame) = frames_rx.recv().await {
                // `close` is handled where the connection is.
                if let Ok(Some(refusal)) = crate::connection::judge(&frame, &live, &gateway)
                    && live.refusals.send(Box::new(refusal)).await.is_err()
                {
                    return;
                }
            }
        });
        Holder { node: node.into(), call, attached, frames }
    }
}

enum StartError {
    InUse,
    Redis(RedisError),
}

impl From<RedisError> for StartError {
    fn from(err: RedisError) -> Self {
        StartError::Redis(err)
    }
}

/// What `entries` (in log order) give a reader whose client has every message up to `cursor`: up to `max` messages
/// that continue it, or how its feed ends; `None` when they say nothing yet (empty).
fn continuation(entries: Vec<Entry>, cursor: u64, max: usize) -> Option<Result<Vec<LoggedMessage>, FeedEnd>> {
    let mut messages: Vec<LoggedMessage> = Vec::new();
    let mut expect = cursor + 1;
    for entry in entries {
        match entry {
            Entry::Message(message) if message.seq == expect && messages.len() < max.max(1) => {
                expect += 1;
                messages.push(message);
            }
            // The end, right after what this client has.
            Entry::End { seq } if seq + 1 == expect && messages.is_empty() => return Some(Err(FeedEnd::Ended)),
            // A hole (messages that were never written to Redis): nothing past it can be delivered in order.
            _ if messages.is_empty() => return Some(Err(FeedEnd::Gap)),
            _ => break,
        }
    }
    if messages.is_empty() { None } else { Some(Ok(messages)) }
}

impl Feed {
    /// Waits until the log holds messages after `cursor`, and returns up to `max` of them, in order.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub(crate) async fn read_after(&self, cursor: u64, max: usize) -> Result<Vec<LoggedMessage>, FeedEnd> {
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.over.is_cancelled() {
                return Err(FeedEnd::TakenOver);
            }
            // From `{cursor}-1`: the end marker after message `cursor`, or the messages after it.
            let read: Result<StreamEntries, RedisError> = redis::cmd("XRANGE")
                .arg(log_key(self.key))
                .arg(format!("{cursor}-1"))
                .arg("+")
                .arg("COUNT")
                .arg(max.max(1))
                .query_async(&mut self.log.conn())
                .await;
            self.log.note(&read);
            match read {
                Ok(entries) => {
                    backoff = Duration::from_millis(50);
                    if let Some(messages) = continuation(parse_entries(entries), cursor, max) {
                        return messages;
                    }
                    // Right after the attach, a ring may have gone to the node that held the session before (the
                    // owner's append looked its holder up just before this one's attach): look again soon.
                    let fallback = if self.attached_at.elapsed() < POLL_FALLBACK { FIRST_POLL } else { POLL_FALLBACK };
                    tokio::select! {
                        () = self.doorbell.notified() => {}
                        () = self.over.cancelled() => {}
                        () = tokio::time::sleep(fallback) => {}
                    }
                }
                Err(_) => {
                    tokio::select! {
                        () = self.over.cancelled() => {}
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn to_owner(&self, kind: &'static str) -> Option<(&str, Vec<(&'static str, String)>)> {
        let owner = self.owner.as_deref()?;
        let fields = vec![
            ("t", kind.into()),
            ("s", self.key.to_string()),
            ("g", self.generation.to_string()),
            ("n", self.log.0.node.to_string()),
        ];
        Some((owner, fields))
    }

    /// Tells the owner that the client has every message up to `seq` (room in the owner's log).
    pub(crate) fn delivered(&self, seq: u64) {
        if let Some((owner, mut fields)) = self.to_owner("delivered") {
            fields.push(("q", seq.to_string()));
            self.log.send(owner, fields);
        }
    }

    /// Forwards a client frame to the owner, which judges it as its own connections' frames; waits until Redis
    /// has it (a client sending faster than that is slowed down, as on the owner). A frame over the size limit
    /// travels as its length only.
    pub(crate) async fn forward(&self, frame: Frame) {
        let kind = match &frame {
            Frame::Text(text) if text.len() > MAX_FRAME_BYTES => "large",
            Frame::Text(_) => "text",
            Frame::TooLarge(_) => "large",
            Frame::Binary => "binary",
        };
        let Some((owner, mut fields)) = self.to_owner(kind) else { return };
        match frame {
            Frame::Text(text) if kind == "text" => fields.push(("x", text.as_str().to_owned())),
            Frame::Text(text) => fields.push(("l", text.len().to_string())),
            Frame::TooLarge(len) => fields.push(("l", len.to_string())),
            Frame::Binary => {}
        }
        let sent: Result<(), _> = inbox_write(owner, &fields).query_async(&mut self.log.conn()).await;
        self.log.note(&sent);
    }

    /// The connection ended: the owner detaches the session (or closes it, if its client said `close`).
    pub(crate) fn detach(self: &Arc<Self>, close_now: bool) {
        {
            let mut feeds = lock(&self.log.0.feeds);
            if let Some(list) = feeds.get_mut(&self.key) {
                list.retain(|feed| !Arc::ptr_eq(feed, self));
                if list.is_empty() {
                    feeds.remove(&self.key);
                }
            }
        }
        if let Some((owner, mut fields)) = self.to_owner("detach") {
            fields.push(("z", if close_now { "1" } else { "0" }.into()));
            self.log.send(owner, fields);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, fields: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
        (id.to_owned(), fields.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect())
    }

    #[test]
    fn entry_ids_are_seq_and_sub_id() {
        assert_eq!(entry_id("42-0"), Some((42, 0)));
        assert_eq!(entry_id("42-1"), Some((42, 1)));
        assert_eq!(entry_id("1733000000000-3"), Some((1_733_000_000_000, 3)));
        assert_eq!(entry_id("42"), None);
        assert_eq!(entry_id("x-0"), None);
    }

    #[test]
    fn log_entries_are_messages_then_the_end_marker() {
        let entries = vec![
            entry("3-0", &[("m", r#"{"seq":3}"#)]),
            entry("4-0", &[("m", r#"{"seq":4}"#)]),
            entry("4-1", &[("end", "node lost")]),
            // Neither a message nor a marker (a field written by a newer version): skipped.
            entry("5-0", &[("other", "x")]),
        ];
        let parsed = parse_entries(entries);
        let kinds: Vec<String> = parsed
            .iter()
            .map(|entry| match entry {
                Entry::Message(message) => format!("{}:{}", message.seq, message.text.as_str()),
                Entry::End { seq } => format!("end after {seq}"),
            })
            .collect();
        assert_eq!(kinds, [r#"3:{"seq":3}"#, r#"4:{"seq":4}"#, "end after 4"]);
    }

    #[test]
    fn a_reader_gets_what_continues_its_cursor_and_nothing_past_a_hole() {
        let message = |seq: u64| Entry::Message(LoggedMessage::new(seq, seq.to_string()));
        let seqs = |got: Option<Result<Vec<LoggedMessage>, FeedEnd>>| {
            got.map(|got| got.map(|messages| messages.iter().map(|message| message.seq).collect::<Vec<_>>()))
        };
        assert_eq!(seqs(continuation(vec![message(3), message(4)], 2, 64)), Some(Ok(vec![3, 4])));
        assert_eq!(seqs(continuation(vec![message(3), message(4)], 2, 1)), Some(Ok(vec![3])), "at most max");
        // The end marker after message 4: the messages first, the end on the next read.
        assert_eq!(seqs(continuation(vec![message(4), Entry::End { seq: 4 }], 3, 64)), Some(Ok(vec![4])));
        assert_eq!(seqs(continuation(vec![Entry::End { seq: 4 }], 4, 64)), Some(Err(FeedEnd::Ended)));
        // A hole, or an end that does not follow the cursor: a gap, never a skip.
        assert_eq!(seqs(continuation(vec![message(5)], 3, 64)), Some(Err(FeedEnd::Gap)));
        assert_eq!(seqs(continuation(vec![Entry::End { seq: 9 }], 3, 64)), Some(Err(FeedEnd::Gap)));
        assert_eq!(seqs(continuation(vec![message(4), message(6)], 3, 64)), Some(Ok(vec![4])), "up to the hole");
        assert_eq!(seqs(continuation(Vec::new(), 3, 64)), None);
    }

    #[test]
    fn a_lost_run_ends_like_any_failed_run() {
        let around = |run, request_id, error| {
            let (before, after) = crate::protocol::lost_run_completed_around_seq(run, request_id, error);
            move |seq: u64| format!("{before}{seq}{after}")
        };
        let text = around("run-3", Some("r1"), "gateway node lost: `a`")(7);
        assert_eq!(
            text,
            r#"{"type":"agent_completed","seq":7,"run_id":"run-3","request_id":"r1","outcome":"failed","error":"gateway node lost: `a`"}"#
        );
        let untagged = around("run-4", None, "e")(8);
        assert!(untagged.contains(r#""request_id":null"#), "{untagged}");
    }
}
