//! Several gateway processes sharing Redis: sessions resumable on any node, runs ended once when a node dies.
//!
//! Each session stays where it was opened (its *owner* node): its registry session, its runs and its pump live
//! there, and the owner's in-memory [`ReplayLog`](crate::replay::ReplayLog) stays the authority on who is attached.
//! Redis carries the rest:
//!
//! - `cg:log:{session}`, a Stream: the pump appends every message with `XADD` under the id `{seq}-0` before any
//!   client can read it (so a client never holds a seq that Redis lacks), trimmed to the replay limit. An entry
//!   `{seq}-1` with an `end` field marks the end of a session that will get no more messages.
//! - `cg:session:{session}`, a hash: `user` and `owner`. It and the log have no expiry while the session is
//!   attached, and expire a resume window after a detach; the owner deletes both when it closes the session.
//! - `cg:inbox:{node}`, a Stream per node: what other nodes ask of it (attach, a client frame, delivered, detach)
//!   and what they answer it (the attach reply, "taken over").
//! - `cg:lease:{node}` (renewed every third of the lease), `cg:nodes`, `cg:sessions:{node}` (the sessions a node
//!   owns) and `cg:runs:{node}` (its runs in progress, as `{session} {run}` -> request id).
//!
//! A client resuming on another node reads the log there: the log is replayed with `XRANGE` and followed with one
//! `XREAD BLOCK` per node over its inbox and every log it follows (a new entry rings the connection's doorbell).
//! Its frames go to the owner's inbox, where they are judged as the owner's own connections' are, so `cancel` and
//! `duplicate_request` hold across nodes.
//!
//! When a node's lease expires, one surviving node claims it (atomically, in a script), appends to each of its
//! sessions one `agent_completed` (`failed`, "gateway node lost") per run still open, with the next seqs, then the
//! end marker: every run ends exactly once, wherever its client is attached. A node that finds it was claimed while
//! alive (a partition longer than its lease) is *fenced*: its appends fail, and the gateway stops.
//!
//! While Redis is unreachable, the owner's connections keep working from memory (their messages are not mirrored:
//! a resume elsewhere of a message in that stretch gets `409 resume_gap`), resumes that need Redis get `503`, and
//! the connection manager reconnects with backoff.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, RedisError, Script};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::connection::Frame;
use crate::replay::{Attached, LoggedMessage, SessionKey};
use crate::server::Gateway;

/// How long a node's lease lives unless configured otherwise; it is renewed every third of that.
pub const DEFAULT_NODE_LEASE: Duration = Duration::from_secs(3);

/// How many entries a node's inbox keeps at most (approximately): far more than are ever waiting.
const INBOX_LENGTH: usize = 100_000;

/// How long one `XREAD BLOCK` of the follower waits before looking at its list of logs again.
const FOLLOW_BLOCK: Duration = Duration::from_millis(1000);

/// How long a remote reader waits for a doorbell before reading its log again anyway (a doorbell can be lost when
/// the follower reconnects).
const POLL_FALLBACK: Duration = Duration::from_secs(1);

/// How long a command waits for Redis before it counts as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many frames from a remote client may wait for the owner to judge them.
const REMOTE_FRAMES: usize = 256;

/// Why [`RedisEventLog::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not a Redis URL.
    #[error("`{url}` is not a Redis URL ({source}); write redis://HOST:PORT[/DB]")]
    Url {
        /// The URL given.
        url: String,
        /// What the client library said.
        source: RedisError,
    },
    /// Redis did not answer.
    #[error("cannot reach Redis at {url}: {source}; start it, or check --event-log")]
    Unreachable {
        /// The URL given.
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
    conn: ConnectionManager,
    client: redis::Client,
    lease: Duration,
    trim: usize,
    // The resume window, in seconds: how long the sessions of a lost node stay readable after their end.
    window_secs: AtomicU64,
    up: AtomicBool,
    errors: AtomicU64,
    // Cancelled when another node claimed this one while it was alive: its sessions were ended elsewhere.
    fenced: CancellationToken,
    next_call: AtomicU64,
    // Attach requests sent to owners, waiting for their reply.
    calls: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    // The remote sessions read on this node, by session: every connection attached to one.
    feeds: Mutex<HashMap<SessionKey, Vec<Arc<Feed>>>>,
    // Logs the follower must add to its `XREAD` (with the seq to follow from).
    follow: mpsc::UnboundedSender<(SessionKey, u64)>,
    follow_rx: Mutex<Option<mpsc::UnboundedReceiver<(SessionKey, u64)>>>,
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

const NODES: &str = "cg:nodes";

/// Renews this node's lease and keeps it listed, with an inbox (other nodes write to existing inboxes only, so
/// that the inbox of a lost node is not made again), unless another node claimed it (then 0).
const RENEW: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
if redis.call('EXISTS', KEYS[4]) == 0 then redis.call('XADD', KEYS[4], '*', 't', 'wake') end
return 1
";

/// Claims a node whose lease expired, once: 1 for the one caller that may end its sessions.
const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', 86400) then return 1 end
return 0
";

/// What a run change means for the node's list of runs in progress.
#[derive(Debug)]
pub(crate) enum RunChange<'a> {
    None,
    Started { run: &'a str, request_id: Option<&'a str> },
    Ended { run: &'a str },
}

/// The Redis work that sessions ask for from plain (non-async) code, done in order by one task.
#[derive(Debug)]
enum Control {
    Opened { key: SessionKey, user: Box<str> },
    Attached { key: SessionKey },
    Detached { key: SessionKey, ttl: Duration },
    Forgotten { key: SessionKey },
    Ended { key: SessionKey, last_seq: u64, reason: &'static str },
    Send { node: Box<str>, fields: Vec<(&'static str, String)> },
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
    attached: Attached,
    frames: mpsc::Sender<Frame>,
}

/// Why a resume on this node of a session owned elsewhere was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RemoteAttachError {
    Unknown,
    Gap { first_seq: u64 },
    Unavailable,
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
    End,
}

type StreamEntries = Vec<(String, Vec<(String, String)>)>;

fn parse_entries(entries: StreamEntries) -> Vec<Entry> {
    entries
        .into_iter()
        .filter_map(|(id, fields)| {
            let (seq, _) = entry_id(&id)?;
            if field(&fields, "end").is_some() {
                return Some(Entry::End);
            }
            let text = field(&fields, "m")?.to_owned();
            Some(Entry::Message(LoggedMessage::new(seq, text)))
        })
        .collect()
}

fn is_connection_error(err: &RedisError) -> bool {
    err.is_io_error() || err.is_timeout() || err.is_connection_dropped() || err.is_connection_refusal()
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
        let client = redis::Client::open(url).map_err(|source| ConnectError::Url { url: url.to_owned(), source })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let unreachable = |source| ConnectError::Unreachable { url: url.to_owned(), source };
        let mut conn = ConnectionManager::new_with_config(client.clone(), config).await.map_err(unreachable)?;
        let () = redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop).map_err(unreachable)?;
        let node: Box<str> = match node {
            Some(node) => node.into(),
            None => format!("node-{}", &crate::replay::SessionKey::random().to_string()[..8]).into(),
        };
        let (control, control_rx) = mpsc::unbounded_channel();
        let (follow, follow_rx) = mpsc::unbounded_channel();
        let log = RedisEventLog(Arc::new(Inner {
            node,
            conn,
            client,
            lease: lease.max(Duration::from_millis(300)),
            trim: replay_limit.max(1),
            window_secs: AtomicU64::new(crate::sessions::DEFAULT_RESUME_WINDOW.as_secs()),
            up: AtomicBool::new(true),
            errors: AtomicU64::new(0),
            fenced: CancellationToken::new(),
            next_call: AtomicU64::new(1),
            calls: Mutex::default(),
            feeds: Mutex::default(),
            follow,
            follow_rx: Mutex::new(Some(follow_rx)),
            holders: Mutex::default(),
            control,
        }));
        log.start_node().await.map_err(|err| match err {
            StartError::InUse => ConnectError::NodeInUse { node: log.0.node.to_string() },
            StartError::Redis(source) => unreachable(source),
        })?;
        tokio::spawn(log.clone().control_loop(control_rx));
        tokio::spawn(log.clone().lease_loop());
        tracing::info!(node = &*log.0.node, "event log: Redis at {url}, this node is `{}`", log.0.node);
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

    async fn start_node(&self) -> Result<(), StartError> {
        let node = &*self.0.node;
        let mut conn = self.conn();
        let alive: bool = conn.exists(lease_key(node)).await?;
        if alive {
            return Err(StartError::InUse);
        }
        // A node id used again: whatever its previous process left (it died) is ended first, as any lost node's.
        let left: usize = conn.scard(sessions_key(node)).await?;
        if left > 0 {
            let _: bool = conn
                .set_options(
                    reaped_key(node),
                    node,
                    redis::SetOptions::default().with_expiration(redis::SetExpiry::EX(86_400)),
                )
                .await?;
            self.end_sessions_of(node).await?;
        }
        let _: () = conn.del(reaped_key(node)).await?;
        self.renew().await.map_err(StartError::Redis)?;
        Ok(())
    }

    /// Renews the lease; `Ok(false)` once another node claimed this one.
    async fn renew(&self) -> Result<bool, RedisError> {
        let node = &*self.0.node;
        let millis = u64::try_from(self.0.lease.as_millis()).unwrap_or(u64::MAX);
        let renewed: i64 = Script::new(RENEW)
            .key(lease_key(node))
            .key(reaped_key(node))
            .key(NODES)
            .key(inbox_key(node))
            .arg(millis)
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
                        "this node's lease expired and another node ended its sessions; stopping"
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
                    self.reap_if_lost(&node).await;
                }
            }
        }
    }

    async fn reap_if_lost(&self, node: &str) {
        let claimed: Result<i64, _> = Script::new(CLAIM)
            .key(lease_key(node))
            .key(reaped_key(node))
            .arg(&*self.0.node)
            .invoke_async(&mut self.conn())
            .await;
        self.note(&claimed);
        if claimed != Ok(1) {
            return;
        }
        tracing::warn!(lost = node, "gateway node lost: ending its runs");
        let ended = self.end_sessions_of(node).await;
        self.note(&ended);
        if let Ok(ended) = ended {
            tracing::info!(lost = node, sessions = ended, "ended the sessions of a lost node");
        }
    }

    /// Appends to each session of `node` one failed `agent_completed` per run still open, then the end marker, and
    /// lets the session expire a while later (time for its clients to read them). Returns how many sessions.
    async fn end_sessions_of(&self, node: &str) -> Result<usize, RedisError> {
        let mut conn = self.conn();
        let sessions: Vec<String> = conn.smembers(sessions_key(node)).await?;
        let runs: Vec<(String, String)> = conn.hgetall(runs_key(node)).await?;
        let error = format!("gateway node lost: `{node}` stopped while the run was in progress");
        for session in &sessions {
            let Ok(key) = session.parse::<SessionKey>() else { continue };
            let log = log_key(key);
            let last: StreamEntries =
                redis::cmd("XREVRANGE").arg(&log).arg("+").arg("-").arg("COUNT").arg(1).query_async(&mut conn).await?;
            let mut seq = last.first().and_then(|(id, _)| entry_id(id)).map_or(0, |(seq, _)| seq);
            let ended_already = last.first().is_some_and(|(_, fields)| field(fields, "end").is_some());
            if ended_already {
                continue;
            }
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (entry, request_id) in &runs {
                let Some((owner_session, run)) = entry.split_once(' ') else { continue };
                if owner_session != session {
                    continue;
                }
                seq += 1;
                let request_id: Option<String> = serde_json::from_str(request_id).unwrap_or(None);
                let text = crate::protocol::lost_run_completed(seq, run, request_id.as_deref(), &error);
                pipe.cmd("XADD").arg(&log).arg(format!("{seq}-0")).arg("m").arg(text).ignore();
            }
            pipe.cmd("XADD").arg(&log).arg(format!("{seq}-1")).arg("end").arg("node lost").ignore();
            pipe.hset(session_key(key), "owner", "").ignore();
            let ttl = i64::try_from(self.0.window_secs.load(Ordering::Relaxed).saturating_add(1)).unwrap_or(i64::MAX);
            pipe.expire(session_key(key), ttl).ignore().expire(&log, ttl).ignore();
            let _: () = pipe.query_async(&mut conn).await?;
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
        Ok(sessions.len())
    }

    /// The pump's write, before the message is in the owner's memory: appends it to the session's Redis log and
    /// keeps the node's list of runs in progress. `Err` when the log already has this seq: another node ended the
    /// session (this node was taken for lost), so the session must stop. While Redis is down the message stays
    /// in memory only.
    pub(crate) async fn mirror(&self, key: SessionKey, message: &LoggedMessage, run: RunChange<'_>) -> Result<(), ()> {
        if !self.is_up() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("XADD")
            .arg(log_key(key))
            .arg("MAXLEN")
            .arg("~")
            .arg(self.0.trim)
            .arg(format!("{}-0", message.seq))
            .arg("m")
            .arg(message.text.as_str())
            .ignore();
        let runs = runs_key(&self.0.node);
        match run {
            RunChange::None => {}
            RunChange::Started { run, request_id } => {
                let value = serde_json::to_string(&request_id).unwrap_or_else(|_| "null".to_owned());
                pipe.hset(&runs, format!("{key} {run}"), value).ignore();
            }
            RunChange::Ended { run } => {
                pipe.hdel(&runs, format!("{key} {run}")).ignore();
            }
        }
        let written: Result<(), RedisError> = pipe.query_async(&mut self.conn()).await;
        self.note(&written);
        match written {
            Err(err) if !is_connection_error(&err) && err.to_string().contains("equal or smaller") => {
                tracing::error!(session = %key, "another node appended to this session's log: it was taken for lost");
                Err(())
            }
            _ => Ok(()),
        }
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

    pub(crate) fn ended(&self, key: SessionKey, last_seq: u64, reason: &'static str) {
        let _ = self.0.control.send(Control::Ended { key, last_seq, reason });
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
            self.send(
                &old.node,
                vec![("t", "over".into()), ("s", key.to_string()), ("g", old.attached.generation.to_string())],
            );
        }
    }

    fn send(&self, node: &str, fields: Vec<(&'static str, String)>) {
        let _ = self.0.control.send(Control::Send { node: node.into(), fields });
    }

    async fn control_loop(self, mut ops: mpsc::UnboundedReceiver<Control>) {
        while let Some(op) = ops.recv().await {
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
                    let seconds = i64::try_from(ttl.as_secs().saturating_add(1)).unwrap_or(i64::MAX);
                    redis::pipe()
                        .expire(session_key(*key), seconds)
                        .ignore()
                        .expire(log_key(*key), seconds)
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
                Control::Ended { key, last_seq, reason } => {
                    // NOMKSTREAM: a session already forgotten keeps no log.
                    redis::cmd("XADD")
                        .arg(log_key(*key))
                        .arg("NOMKSTREAM")
                        .arg(format!("{last_seq}-1"))
                        .arg("end")
                        .arg(*reason)
                        .query_async::<redis::Value>(&mut conn)
                        .await
                        .map(drop)
                }
                Control::Send { node, fields } => {
                    let mut cmd = redis::cmd("XADD");
                    cmd.arg(inbox_key(node)).arg("NOMKSTREAM").arg("MAXLEN").arg("~").arg(INBOX_LENGTH).arg("*");
                    for (name, value) in fields {
                        cmd.arg(*name).arg(value);
                    }
                    cmd.query_async::<redis::Value>(&mut conn).await.map(drop)
                }
            };
            if let Err(err) = &done {
                tracing::debug!(%err, ?op, "a Redis write was lost");
            }
            self.note(&done);
        }
    }

    /// Attaches a connection of `user` on this node to session `key`, owned by another node (or by a lost one):
    /// the owner checks and takes over as it does for its own connections.
    pub(crate) async fn attach_remote(
        &self,
        user: &str,
        key: SessionKey,
        after: u64,
    ) -> Result<Arc<Feed>, RemoteAttachError> {
        if !self.is_up() {
            return Err(RemoteAttachError::Unavailable);
        }
        let mut conn = self.conn();
        let record: Result<HashMap<String, String>, _> = conn.hgetall(session_key(key)).await;
        self.note(&record);
        let record = record.map_err(|_| RemoteAttachError::Unavailable)?;
        if record.get("user").map(String::as_str) != Some(user) {
            return Err(RemoteAttachError::Unknown);
        }
        let owner = record.get("owner").filter(|owner| !owner.is_empty()).cloned();
        if owner.as_deref() == Some(&*self.0.node) {
            // This node's own session, gone from memory: expired here, the record just not deleted yet.
            return Err(RemoteAttachError::Unknown);
        }
        // The log must hold the message after `after`, if there is one.
        let next: Result<StreamEntries, _> = redis::cmd("XRANGE")
            .arg(log_key(key))
            .arg(format!("{}-0", after + 1))
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await;
        self.note(&next);
        let next = next.map_err(|_| RemoteAttachError::Unavailable)?;
        if let Some((seq, sub)) = next.first().and_then(|(id, _)| entry_id(id))
            && sub == 0
            && seq != after + 1
        {
            return Err(RemoteAttachError::Gap { first_seq: seq });
        }
        let (generation, last_seq) = match &owner {
            None => {
                let last: StreamEntries = redis::cmd("XREVRANGE")
                    .arg(log_key(key))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await
                    .map_err(|_| RemoteAttachError::Unavailable)?;
                (0, last.first().and_then(|(id, _)| entry_id(id)).map_or(0, |(seq, _)| seq))
            }
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
                    Ok(Ok(Reply::Attached { generation, last_seq })) => (generation, last_seq),
                    Ok(Ok(Reply::Unknown)) => return Err(RemoteAttachError::Unknown),
                    Ok(Ok(Reply::Gap { first_seq })) => return Err(RemoteAttachError::Gap { first_seq }),
                    // No answer within a lease: the owner is gone or unreachable; try again.
                    Ok(Err(_)) | Err(_) => return Err(RemoteAttachError::Unavailable),
                }
            }
        };
        let feed = Arc::new(Feed {
            key,
            owner: owner.map(Into::into),
            generation,
            last_seq,
            doorbell: Notify::new(),
            over: CancellationToken::new(),
            log: self.clone(),
        });
        lock(&self.0.feeds).entry(key).or_default().push(Arc::clone(&feed));
        let _ = self.0.follow.send((key, after));
        // Wake the follower, so that it adds this log to its `XREAD` now.
        self.send(&self.0.node, vec![("t", "wake".into())]);
        Ok(feed)
    }

    /// Reads this node's inbox and follows the logs its remote connections read, until the gateway stops. Owner
    /// requests are served with `gateway`'s sessions.
    pub(crate) async fn follow(self, gateway: Gateway) {
        let Some(mut follow_rx) = lock(&self.0.follow_rx).take() else { return };
        let inbox = inbox_key(&self.0.node);
        // The inbox from its current end: what an earlier process of this node id left is not ours.
        let mut inbox_id = "$".to_owned();
        let mut logs: HashMap<SessionKey, String> = HashMap::new();
        let mut conn: Option<redis::aio::MultiplexedConnection> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            while let Ok((key, after)) = follow_rx.try_recv() {
                logs.entry(key).or_insert_with(|| format!("{after}-1"));
            }
            {
                let feeds = lock(&self.0.feeds);
                logs.retain(|key, _| feeds.contains_key(key));
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
                            self.note::<()>(&Err(err));
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
                match last {
                    Ok(last) => inbox_id = last.first().map_or_else(|| "0-0".to_owned(), |(id, _)| id.clone()),
                    Err(err) => {
                        self.note::<()>(&Err(err));
                        conn = None;
                        continue;
                    }
                }
            }
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT").arg(256).arg("BLOCK").arg(FOLLOW_BLOCK.as_millis() as u64).arg("STREAMS").arg(&inbox);
            let keys: Vec<SessionKey> = logs.keys().copied().collect();
            for key in &keys {
                cmd.arg(log_key(*key));
            }
            cmd.arg(&inbox_id);
            for key in &keys {
                cmd.arg(&logs[key]);
            }
            let read: Result<Option<Vec<(String, StreamEntries)>>, RedisError> = cmd.query_async(connection).await;
            self.note(&read);
            let read = match read {
                Ok(read) => read.unwrap_or_default(),
                Err(_) => {
                    conn = None;
                    // The doorbells may have missed entries: every reader looks again.
                    for feeds in lock(&self.0.feeds).values() {
                        feeds.iter().for_each(|feed| feed.doorbell.notify_one());
                    }
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            for (stream, entries) in read {
                let Some(last) = entries.last().map(|(id, _)| id.clone()) else { continue };
                if stream == inbox {
                    inbox_id = last;
                    for (_, fields) in entries {
                        self.serve_request(&gateway, &fields);
                    }
                } else if let Some(key) = stream.strip_prefix("cg:log:").and_then(|key| key.parse().ok()) {
                    logs.insert(key, last);
                    if let Some(feeds) = lock(&self.0.feeds).get(&key) {
                        feeds.iter().for_each(|feed| feed.doorbell.notify_one());
                    }
                }
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
                    (session(), field(fields, "u"), number("a"), field(fields, "n"), field(fields, "c"))
                else {
                    return;
                };
                let reply = match gateway.sessions.resume_for(gateway, self, user, key, after, node) {
                    Ok(attached) => vec![
                        ("r", "ok".into()),
                        ("g", attached.generation.to_string()),
                        ("l", attached.last_seq.to_string()),
                    ],
                    Err(crate::replay::AttachError::Gap { first_seq }) => {
                        vec![("r", "gap".into()), ("f", first_seq.to_string())]
                    }
                    Err(_) => vec![("r", "unknown".into())],
                };
                let mut reply = reply;
                reply.push(("t", "reply".into()));
                reply.push(("c", call.to_owned()));
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
            Some("over") => {
                let (Some(key), Some(generation)) = (session(), number("g")) else { return };
                if let Some(feeds) = lock(&self.0.feeds).get(&key) {
                    feeds.iter().filter(|feed| feed.generation == generation).for_each(|feed| feed.over.cancel());
                }
            }
            Some(kind @ ("text" | "binary")) => {
                let (Some(key), Some(generation)) = (session(), number("g")) else { return };
                let frame = match kind {
                    "text" => Frame::Text(field(fields, "x").unwrap_or_default().to_owned().into()),
                    _ => Frame::Binary,
                };
                let holders = lock(&self.0.holders);
                let Some(holder) = holders.get(&key).filter(|holder| holder.attached.generation == generation) else {
                    return;
                };
                if holder.frames.try_send(frame).is_err() {
                    // A remote client that floods the owner faster than its session answers: cut it off.
                    let node = holder.node.clone();
                    drop(holders);
                    tracing::debug!(session = %key, "too many frames from a remote client waiting; taking it over");
                    if let Some(old) = lock(&self.0.holders).remove(&key) {
                        self.send(
                            &node,
                            vec![
                                ("t", "over".into()),
                                ("s", key.to_string()),
                                ("g", old.attached.generation.to_string()),
                            ],
                        );
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

    /// A holder for a remote connection's attachment, with the task that judges its frames.
    pub(crate) fn holder(
        &self,
        gateway: &Gateway,
        live: Arc<crate::sessions::LiveSession>,
        node: &str,
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
        Holder { node: node.into(), attached, frames }
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
                    let mut messages = Vec::new();
                    let mut expect = cursor + 1;
                    for entry in parse_entries(entries) {
                        match entry {
                            Entry::Message(message) if message.seq == expect => {
                                expect += 1;
                                messages.push(message);
                            }
                            Entry::End if messages.is_empty() => return Err(FeedEnd::Ended),
                            // A hole (messages that were never mirrored): nothing past it can be delivered in order.
                            Entry::Message(_) if messages.is_empty() => return Err(FeedEnd::Gap),
                            _ => break,
                        }
                    }
                    if !messages.is_empty() {
                        return Ok(messages);
                    }
                    tokio::select! {
                        () = self.doorbell.notified() => {}
                        () = self.over.cancelled() => {}
                        () = tokio::time::sleep(POLL_FALLBACK) => {}
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

    /// Tells the owner that the client has every message up to `seq` (room in the owner's log).
    pub(crate) fn delivered(&self, seq: u64) {
        if let Some(owner) = &self.owner {
            self.log.send(
                owner,
                vec![
                    ("t", "delivered".into()),
                    ("s", self.key.to_string()),
                    ("g", self.generation.to_string()),
                    ("q", seq.to_string()),
                ],
            );
        }
    }

    /// Forwards a client frame to the owner, which judges it as its own connections' frames.
    pub(crate) fn forward(&self, frame: Frame) {
        if let Some(owner) = &self.owner {
            let mut fields = vec![("s", self.key.to_string()), ("g", self.generation.to_string())];
            match frame {
                Frame::Text(text) => {
                    fields.push(("t", "text".into()));
                    fields.push(("x", text.as_str().to_owned()));
                }
                Frame::Binary => fields.push(("t", "binary".into())),
            }
            self.log.send(owner, fields);
        }
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
        if let Some(owner) = &self.owner {
            self.log.send(
                owner,
                vec![
                    ("t", "detach".into()),
                    ("s", self.key.to_string()),
                    ("g", self.generation.to_string()),
                    ("z", if close_now { "1" } else { "0" }.into()),
                ],
            );
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
                Entry::End => "end".to_owned(),
            })
            .collect();
        assert_eq!(kinds, [r#"3:{"seq":3}"#, r#"4:{"seq":4}"#, "end"]);
    }

    #[test]
    fn a_lost_run_ends_like_any_failed_run() {
        let text = crate::protocol::lost_run_completed(7, "run-3", Some("r1"), "gateway node lost: `a`");
        assert_eq!(
            text,
            r#"{"type":"agent_completed","seq":7,"run_id":"run-3","request_id":"r1","outcome":"failed","error":"gateway node lost: `a`"}"#
        );
        let untagged = crate::protocol::lost_run_completed(8, "run-4", None, "e");
        assert!(untagged.contains(r#""request_id":null"#), "{untagged}");
    }
}
