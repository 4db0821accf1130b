//! Where a session's messages wait for its client: the replay log and the attach/detach record.
//!
//! Each gateway session numbers its messages (`seq` 1, 2, 3, ...) and [appends](ReplayLog::append) them, already
//! rendered as JSON text, to its log; the connection attached to the session reads them back with
//! [`replay_after`](ReplayLog::replay_after) and writes them out. The log keeps the most recent messages up to its
//! limit, and drops an old one only once the client has been sent it: an append that would push out a message the
//! client has not been sent waits instead (backpressure), so nothing is ever lost.
//!
//! The connection code talks to the log only through the [`ReplayLog`] trait, so that another implementation (a
//! Redis Stream per session, for several gateway processes) can take the place of [`MemoryReplayLog`], the
//! embedded default.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The text of a [`LoggedMessage`]: UTF-8 bytes shared by reference count (axum's own text-frame type, named here so
/// that a [`ReplayLog`] can be written without depending on axum).
pub use axum::extract::ws::Utf8Bytes;
use core_registry::async_trait;
use tokio::sync::Notify;

/// How many messages a session's replay log holds unless configured otherwise.
pub const DEFAULT_REPLAY_LIMIT: usize = 4096;

/// How many bytes of messages a session's in-memory replay log holds unless configured otherwise (a message longer
/// than that is still held, alone).
pub const DEFAULT_REPLAY_BYTES: usize = 1024 * 1024;

/// A gateway session's public id: 128 random bits from the operating system's generator, written as 32 lowercase
/// hex digits. Unguessable, so that it can be shown to the client and sent back on resume.
///
/// ```
/// use chat_gateway::replay::SessionKey;
///
/// let key = SessionKey::random();
/// let text = key.to_string();
/// assert_eq!(text.len(), 32);
/// assert_eq!(text.parse::<SessionKey>().unwrap(), key);
/// assert!("not-hex".parse::<SessionKey>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey([u8; 16]);

impl SessionKey {
    /// A fresh id from the operating system's random number generator (`getrandom`).
    ///
    /// # Panics
    ///
    /// If the operating system has no random number generator to offer, which no supported platform lacks.
    pub fn random() -> SessionKey {
        let mut bytes = [0; 16];
        getrandom::fill(&mut bytes).unwrap_or_else(|err| panic!("the OS random number generator failed: {err}"));
        SessionKey(bytes)
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({self})")
    }
}

/// The text is not 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a session id; session ids are 32 lowercase hex digits")]
pub struct ParseSessionKeyError(String);

impl FromStr for SessionKey {
    type Err = ParseSessionKeyError;

    fn from_str(text: &str) -> Result<SessionKey, ParseSessionKeyError> {
        let digit = |byte: u8| match byte {
            b'0'..=b'9' => Some(byte - b'0'),
            b'a'..=b'f' => Some(byte - b'a' + 10),
            _ => None,
        };
        let bytes = text.as_bytes();
        if bytes.len() != 32 {
            return Err(ParseSessionKeyError(text.to_owned()));
        }
        let mut key = [0; 16];
        for (n, pair) in bytes.chunks_exact(2).enumerate() {
            match (digit(pair[0]), digit(pair[1])) {
                (Some(high), Some(low)) => key[n] = high << 4 | low,
                _ => return Err(ParseSessionKeyError(text.to_owned())),
            }
        }
        Ok(SessionKey(key))
    }
}

/// One message of a session, as the client receives it: its `seq` and its JSON text (which carries the `seq` too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedMessage {
    /// The message's number in its session: 1, 2, 3, ... with no gaps.
    pub seq: u64,
    /// The text frame, ready to send (cloning it shares the bytes, so every connection that sends it and the log
    /// hold one copy).
    pub text: Utf8Bytes,
}

impl LoggedMessage {
    /// Message `seq` with the JSON `text`, which is kept without spare capacity (a log may hold it a while).
    pub fn new(seq: u64, mut text: String) -> LoggedMessage {
        text.shrink_to_fit();
        LoggedMessage { seq, text: text.into() }
    }
}

/// How a connection attaches to a session's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// Creates the record of a new session, owned by the user, with an empty log.
    Open,
    /// Resumes an existing session of the user: its client has every message up to and including `after`.
    Resume {
        /// The seq of the last message the client has (0 for none).
        after: u64,
    },
}

/// A connection's hold on a session: [`ReplayLog::attach`] gives one out, and each later call of that connection
/// names it, so that a connection that was taken over can no longer read or detach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    /// Which attachment of the session this is (a newer one takes over from an older one).
    pub generation: u64,
    /// The seq of the last message the session has produced so far (0 for none).
    pub last_seq: u64,
    /// Whether another connection was attached and has been taken over.
    pub took_over: bool,
}

/// Why [`ReplayLog::attach`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// No such session, or it expired, or it belongs to another user: one answer, so that ids cannot be probed.
    #[error("no such session: it is unknown, expired or not yours; open a new one")]
    Unknown,
    /// The log no longer holds `after + 1` (or `after` is beyond the last message).
    #[error("the replay log no longer holds the messages after the given seq; resume with after={}", first_seq - 1)]
    Gap {
        /// The first seq the log holds: resuming with `after = first_seq - 1` works.
        first_seq: u64,
    },
    /// [`Attach::Open`] named an id that is already in use.
    #[error("a session with this id already exists; open it with a fresh id")]
    Exists,
}

/// Why [`ReplayLog::append`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The session is unknown or expired: nobody can receive its messages any more; stop producing them.
    #[error("the session expired; its messages can no longer be delivered")]
    Expired,
    /// The seq does not follow the last one appended (a bug of the caller: the log keeps `seq` gap-free).
    #[error("seq {got} does not follow the last appended seq {last}; append seq {} next", last + 1)]
    OutOfOrder {
        /// The seq given.
        got: u64,
        /// The last seq in the log.
        last: u64,
    },
}

/// Why [`ReplayLog::replay_after`] stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The session is unknown or expired.
    #[error("the session expired")]
    Expired,
    /// Another connection attached to the session; this one must close (code 4000).
    #[error("the session was resumed elsewhere")]
    TakenOver,
    /// The log no longer holds the message after `after` (only possible for a caller that skipped messages).
    #[error("the replay log no longer holds seq {}; the first held is {first_seq}", first_seq)]
    Gap {
        /// The first seq the log holds.
        first_seq: u64,
    },
}

/// A store of sessions' replay logs and attach state. [`MemoryReplayLog`] is the embedded default; an
/// implementation over a shared store lets a client resume on another gateway process.
///
/// Contract: per session, `seq` is appended gap-free from 1; a message leaves the log only when the log is at its
/// limit and the client has been sent that message (a [`replay_after`](ReplayLog::replay_after) with a later
/// `after` says so); otherwise `append` waits.
#[async_trait]
pub trait ReplayLog: Send + Sync + fmt::Debug + 'static {
    /// Appends the session's next message, waiting while the log is full of messages its client has not been sent.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the message was not appended.
    async fn append(&self, session: SessionKey, message: LoggedMessage) -> Result<(), AppendError>;

    /// Appends the session's next messages, in order, as [`append`](ReplayLog::append) does each (waiting while the
    /// log is full); an implementation may wake its readers once for all of them.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it completes, a first part of the messages may have been appended, the
    /// rest not.
    async fn append_all(&self, session: SessionKey, messages: Vec<LoggedMessage>) -> Result<(), AppendError> {
        for message in messages {
            self.append(session, message).await?;
        }
        Ok(())
    }

    /// Waits until the log holds messages with a seq after `after`, and returns up to `max` of them, in order.
    /// Calling it says that the client has been sent every message up to `after`, which may then leave the log.
    /// Fails once `attached` is no longer the session's attachment (taken over) or the session expired.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads; call it again with the same `after`.
    async fn replay_after(
        &self,
        session: SessionKey,
        attached: &Attached,
        after: u64,
        max: usize,
    ) -> Result<Vec<LoggedMessage>, ReplayError>;

    /// Says that the client of `attached` has been sent every message up to `after` (which may then leave the
    /// log), without reading: for a connection that reads the messages elsewhere (another gateway process, from a
    /// shared log). Unlike [`replay_after`](ReplayLog::replay_after), `after` may be beyond the log's last message
    /// (the shared log gets messages first): those leave the log as soon as they come.
    fn acknowledge(&self, session: SessionKey, attached: &Attached, after: u64) -> Result<(), ReplayError>;

    /// Attaches a connection of `user` to the session: creates its record ([`Attach::Open`]) or checks that it
    /// is the user's and that its log still holds every message after `after` ([`Attach::Resume`]). A connection
    /// attached before is taken over (its `replay_after` fails with [`ReplayError::TakenOver`]).
    fn attach(&self, session: SessionKey, user: &str, how: Attach) -> Result<Attached, AttachError>;

    /// Answers what `attach(session, user, Attach::Resume { after })` would, changing nothing (no takeover, no new
    /// attachment): the session's last seq, or why a resume would be refused.
    fn probe(&self, session: SessionKey, user: &str, after: u64) -> Result<u64, AttachError>;

    /// Detaches the connection: the session's messages wait in the log. Returns whether `attached` was still the
    /// session's attachment (`false` once taken over, or for an expired session).
    fn detach(&self, session: SessionKey, attached: &Attached) -> bool;

    /// Forgets the session and its log if it is still detached since the detach of `attached` (nobody attached
    /// since). Returns whether it was forgotten; waiting `append`s and `replay_after`s then fail.
    fn expire(&self, session: SessionKey, attached: &Attached) -> bool;
}

/// The replay logs of one gateway process, in memory: the embedded default.
///
/// ```
/// use std::sync::Arc;
/// use chat_gateway::replay::{Attach, LoggedMessage, MemoryReplayLog, ReplayLog, SessionKey};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let log = MemoryReplayLog::new(2);
/// let key = SessionKey::random();
/// let first = log.attach(key, "alice", Attach::Open).unwrap();
/// for seq in 1..=2 {
///     log.append(key, LoggedMessage { seq, text: format!("message {seq}").into() }).await.unwrap();
/// }
/// log.detach(key, &first);
/// // The client saw message 1 before the drop; it resumes after it and gets message 2.
/// let second = log.attach(key, "alice", Attach::Resume { after: 1 }).unwrap();
/// let replayed = log.replay_after(key, &second, 1, 16).await.unwrap();
/// assert_eq!(replayed.iter().map(|message| message.seq).collect::<Vec<_>>(), [2]);
/// // Another user cannot resume it.
/// assert!(log.attach(key, "mallory", Attach::Resume { after: 0 }).is_err());
/// # }
/// ```
#[derive(Debug)]
pub struct MemoryReplayLog {
    limit: usize,
    byte_limit: usize,
    sessions: Mutex<HashMap<SessionKey, Arc<Record>>>,
}

/// One session's record.
#[derive(Debug)]
struct Record {
    state: Mutex<RecordState>,
    // Notified when a message is appended, the session is taken over or expires (wakes `replay_after`).
    changed: Notify,
    // Notified when messages become deliverable-and-delivered or the session expires (wakes `append`).
    room: Notify,
}

#[derive(Debug)]
struct RecordState {
    user: Box<str>,
    // Invariant: consecutive seqs, the last one is `last_seq`; at most `limit` of them, and at most `byte_limit`
    // bytes of text in all unless there is only one.
    messages: VecDeque<LoggedMessage>,
    // Invariant: the length of every text in `messages`, summed.
    bytes: usize,
    last_seq: u64,
    // Invariant: every message with a seq up to `delivered` has been sent to the client (it may be ahead of
    // `last_seq` when the client reads a shared log, which gets messages first); only those may be dropped.
    delivered: u64,
    generation: u64,
    attached: bool,
    expired: bool,
}

impl RecordState {
    /// Notes that the client of `attached` has every message up to `after`; refuses a connection taken over.
    fn deliver(&mut self, record: &Record, attached: &Attached, after: u64) -> Result<(), ReplayError> {
        if self.expired {
            return Err(ReplayError::Expired);
        }
        if !self.attached || self.generation != attached.generation {
            return Err(ReplayError::TakenOver);
        }
        if after > self.delivered {
            self.delivered = after.min(self.last_seq);
            record.room.notify_one();
        }
        Ok(())
    }

    fn first_held(&self) -> u64 {
        self.messages.front().map_or(self.last_seq + 1, |message| message.seq)
    }

    /// Whether a client that has every message up to `after` may resume now.
    fn resumable_after(&self, after: u64) -> Result<(), AttachError> {
        // Expired between a look-up and now: gone, as an unknown session is.
        if self.expired {
            return Err(AttachError::Unknown);
        }
        let first_held = self.first_held();
        if after > self.last_seq || after.saturating_add(1) < first_held {
            return Err(AttachError::Gap { first_seq: first_held });
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent across a panic (every update is a few assignments), so a poisoned lock is usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryReplayLog {
    /// A store whose logs hold up to `limit` messages each (at least 1), and up to [`DEFAULT_REPLAY_BYTES`] of them.
    pub fn new(limit: usize) -> MemoryReplayLog {
        MemoryReplayLog { limit: limit.max(1), byte_limit: DEFAULT_REPLAY_BYTES, sessions: Mutex::default() }
    }

    /// Holds up to `bytes` of message text per log instead (a longer message is still held, alone): what bounds the
    /// memory of a session whose messages are long, such as runs echoing 64 KiB inputs to a client that reads nothing.
    #[must_use]
    pub fn byte_limit(mut self, bytes: usize) -> MemoryReplayLog {
        self.byte_limit = bytes;
        self
    }

    /// How many sessions it holds (attached or detached).
    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Whether it holds no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many messages its logs hold in all.
    pub fn retained_messages(&self) -> usize {
        let records: Vec<Arc<Record>> = lock(&self.sessions).values().cloned().collect();
        records.iter().map(|record| lock(&record.state).messages.len()).sum()
    }

    fn record(&self, session: SessionKey) -> Option<Arc<Record>> {
        lock(&self.sessions).get(&session).cloned()
    }
}

impl MemoryReplayLog {
    /// Appends `message` to the record's log unless it is full of messages the client has not been sent (then gives
    /// it back). Wakes no reader.
    fn push(&self, record: &Record, message: LoggedMessage) -> Result<Option<LoggedMessage>, AppendError> {
        let mut state = lock(&record.state);
        if state.expired {
            return Err(AppendError::Expired);
        }
        if message.seq != state.last_seq + 1 {
            return Err(AppendError::OutOfOrder { got: message.seq, last: state.last_seq });
        }
        let len = message.text.len();
        let full = |state: &RecordState| {
            state.messages.len() >= self.limit || (!state.messages.is_empty() && state.bytes + len > self.byte_limit)
        };
        // Make room by dropping what the client has been sent, oldest first.
        while full(&state) && state.messages.front().is_some_and(|oldest| oldest.seq <= state.delivered) {
            if let Some(oldest) = state.messages.pop_front() {
                state.bytes -= oldest.text.len();
            }
        }
        if full(&state) {
            return Ok(Some(message));
        }
        state.last_seq = message.seq;
        state.bytes += len;
        state.messages.push_back(message);
        Ok(None)
    }
}

impl Default for MemoryReplayLog {
    fn default() -> MemoryReplayLog {
        MemoryReplayLog::new(DEFAULT_REPLAY_LIMIT)
    }
}

#[async_trait]
impl ReplayLog for MemoryReplayLog {
    async fn append(&self, session: SessionKey, message: LoggedMessage) -> Result<(), AppendError> {
        self.append_all(session, vec![message]).await
    }

    async fn append_all(&self, session: SessionKey, messages: Vec<LoggedMessage>) -> Result<(), AppendError> {
        let Some(record) = self.record(session) else { return Err(AppendError::Expired) };
        // Readers are woken once for what went in together, not once per message.
        let mut unannounced = false;
        for message in messages {
            let mut message = message;
            loop {
                let room = record.room.notified();
                let mut room = std::pin::pin!(room);
                room.as_mut().enable();
                match self.push(&record, message) {
                    Ok(None) => {
                        unannounced = true;
                        break;
                    }
                    Ok(Some(back)) => message = back,
                    Err(err) => {
                        if unannounced {
                            record.changed.notify_waiters();
                        }
                        return Err(err);
                    }
                }
                // Full of messages the client has not been sent: let it have what is in, and wait for it to be
                // sent some.
                if std::mem::take(&mut unannounced) {
                    record.changed.notify_waiters();
                }
                room.await;
            }
        }
        if unannounced {
            record.changed.notify_waiters();
        }
        Ok(())
    }

    async fn replay_after(
        &self,
        session: SessionKey,
        attached: &Attached,
        after: u64,
        max: usize,
    ) -> Result<Vec<LoggedMessage>, ReplayError> {
        let Some(record) = self.record(session) else { return Err(ReplayError::Expired) };
        loop {
            let changed = record.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = lock(&record.state);
                state.deliver(&record, attached, after)?;
                let first_held = state.first_held();
                if after.saturating_add(1) < first_held {
                    return Err(ReplayError::Gap { first_seq: first_held });
                }
                if after < state.last_seq {
                    let skip = usize::try_from(after + 1 - first_held).unwrap_or(usize::MAX);
                    return Ok(state.messages.iter().skip(skip).take(max.max(1)).cloned().collect());
                }
            }
            changed.await;
        }
    }

    fn acknowledge(&self, session: SessionKey, attached: &Attached, after: u64) -> Result<(), ReplayError> {
        let Some(record) = self.record(session) else { return Err(ReplayError::Expired) };
        let mut state = lock(&record.state);
        // Not held to the messages this log has: a client reading a shared log may have messages this log is yet
        // to get (the pump writes there first), and they may leave it as soon as they come.
        let last_seq = state.last_seq;
        state.deliver(&record, attached, after.min(last_seq))?;
        state.delivered = state.delivered.max(after);
        Ok(())
    }

    fn attach(&self, session: SessionKey, user: &str, how: Attach) -> Result<Attached, AttachError> {
        let mut sessions = lock(&self.sessions);
        match how {
            Attach::Open => {
                if sessions.contains_key(&session) {
                    return Err(AttachError::Exists);
                }
                let state = RecordState {
                    user: user.into(),
                    messages: VecDeque::new(),
                    bytes: 0,
                    last_seq: 0,
                    delivered: 0,
                    generation: 1,
                    attached: true,
                    expired: false,
                };
                let record = Record { state: Mutex::new(state), changed: Notify::new(), room: Notify::new() };
                sessions.insert(session, Arc::new(record));
                Ok(Attached { generation: 1, last_seq: 0, took_over: false })
            }
            Attach::Resume { after } => {
                let record = sessions.get(&session).filter(|record| &*lock(&record.state).user == user);
                let Some(record) = record.cloned() else { return Err(AttachError::Unknown) };
                drop(sessions);
                let mut state = lock(&record.state);
                state.resumable_after(after)?;
                let took_over = state.attached;
                state.attached = true;
                state.generation += 1;
                // The client has exactly what it says: what it was sent after `after` before the drop it may not
                // have received, so that stays in the log.
                state.delivered = after;
                let attached = Attached { generation: state.generation, last_seq: state.last_seq, took_over };
                drop(state);
                record.changed.notify_waiters();
                // What the client has may free room in a full log: a pump waiting for it must look again (the next
                // `replay_after` marks nothing new when the client already has everything).
                record.room.notify_one();
                Ok(attached)
            }
        }
    }

    fn probe(&self, session: SessionKey, user: &str, after: u64) -> Result<u64, AttachError> {
        let record = self.record(session).ok_or(AttachError::Unknown)?;
        let state = lock(&record.state);
        if &*state.user != user {
            return Err(AttachError::Unknown);
        }
        state.resumable_after(after)?;
        Ok(state.last_seq)
    }

    fn detach(&self, session: SessionKey, attached: &Attached) -> bool {
        let Some(record) = self.record(session) else { return false };
        let mut state = lock(&record.state);
        let current = state.attached && state.generation == attached.generation && !state.expired;
        if current {
            state.attached = false;
        }
        current
    }

    fn expire(&self, session: SessionKey, attached: &Attached) -> bool {
        let mut sessions = lock(&self.sessions);
        let Some(record) = sessions.get(&session).cloned() else { return false };
        let mut state = lock(&record.state);
        if state.attached || state.generation != attached.generation {
            return false;
        }
        state.expired = true;
        state.messages = VecDeque::new();
        state.bytes = 0;
        drop(state);
        sessions.remove(&session);
        drop(sessions);
        record.changed.notify_waiters();
        record.room.notify_one();
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn message(seq: u64) -> LoggedMessage {
        LoggedMessage { seq, text: seq.to_string().into() }
    }

    fn seqs(messages: &[LoggedMessage]) -> Vec<u64> {
        messages.iter().map(|message| message.seq).collect()
    }

    /// A session whose log (limit 2) holds messages 1 and 2, none sent, and a task appending message 3.
    async fn full_log_with_a_waiting_append()
    -> (Arc<MemoryReplayLog>, SessionKey, Attached, tokio::task::JoinHandle<Result<(), AppendError>>) {
        let log = Arc::new(MemoryReplayLog::new(2));
        let key = SessionKey::random();
        let attached = log.attach(key, "alice", Attach::Open).unwrap();
        log.append(key, message(1)).await.unwrap();
        log.append(key, message(2)).await.unwrap();
        let third = tokio::spawn({
            let log = Arc::clone(&log);
            async move { log.append(key, message(3)).await }
        });
        tokio::task::yield_now().await;
        (log, key, attached, third)
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_readable_up_to_a_full_log_and_goes_on_as_it_is_sent() {
        let log = Arc::new(MemoryReplayLog::new(2));
        let key = SessionKey::random();
        let attached = log.attach(key, "alice", Attach::Open).unwrap();
        let batch = tokio::spawn({
            let log = Arc::clone(&log);
            async move { log.append_all(key, (1..=3).map(message).collect()).await }
        });
        // The first two are in (and announced) while the third waits for room.
        assert_eq!(seqs(&log.replay_after(key, &attached, 0, 8).await.unwrap()), [1, 2]);
        assert!(!batch.is_finished());
        // Sent: room for the third.
        assert_eq!(seqs(&log.replay_after(key, &attached, 2, 8).await.unwrap()), [3]);
        assert_eq!(batch.await.unwrap(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_of_a_shared_log_may_acknowledge_past_this_one() {
        let log = Arc::new(MemoryReplayLog::new(2));
        let key = SessionKey::random();
        let attached = log.attach(key, "alice", Attach::Open).unwrap();
        log.append(key, message(1)).await.unwrap();
        log.append(key, message(2)).await.unwrap();
        // The client read 1..=3 elsewhere (the pump writes there first): 3 may leave this log as soon as it comes.
        log.acknowledge(key, &attached, 3).unwrap();
        for seq in 3..=5 {
            tokio::time::timeout(Duration::from_secs(1), log.append(key, message(seq))).await.unwrap().unwrap();
        }
        // 4 and 5 have not been sent: 6 waits.
        let sixth = tokio::spawn({
            let log = Arc::clone(&log);
            async move { log.append(key, message(6)).await }
        });
        tokio::task::yield_now().await;
        assert!(!sixth.is_finished());
        log.acknowledge(key, &attached, 4).unwrap();
        assert_eq!(sixth.await.unwrap(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn append_waits_while_full_of_unsent_messages() {
        let (log, key, attached, third) = full_log_with_a_waiting_append().await;
        assert!(!third.is_finished(), "the third message must wait: nothing has been sent");
        assert_eq!(seqs(&log.replay_after(key, &attached, 0, 8).await.unwrap()), [1, 2]);
        assert!(!third.is_finished(), "still nothing has been sent");
        // Sending message 1 makes room for message 3.
        assert_eq!(seqs(&log.replay_after(key, &attached, 1, 8).await.unwrap()), [2]);
        third.await.unwrap().unwrap();
        assert_eq!(seqs(&log.replay_after(key, &attached, 2, 8).await.unwrap()), [3]);
        assert_eq!(log.append(key, message(5)).await, Err(AppendError::OutOfOrder { got: 5, last: 3 }));
    }

    #[tokio::test(start_paused = true)]
    async fn the_byte_limit_bounds_a_log_of_long_messages() {
        let log = Arc::new(MemoryReplayLog::new(100).byte_limit(10));
        let key = SessionKey::random();
        let attached = log.attach(key, "alice", Attach::Open).unwrap();
        let long = |seq: u64, len: usize| LoggedMessage { seq, text: "x".repeat(len).into() };
        // One message longer than the limit is still held, alone; a second one waits until the first is sent.
        log.append(key, long(1, 25)).await.unwrap();
        let second = tokio::spawn({
            let log = Arc::clone(&log);
            async move { log.append(key, long(2, 4)).await }
        });
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "25 bytes held, unsent: a 4-byte message would go over 10");
        assert_eq!(seqs(&log.replay_after(key, &attached, 0, 8).await.unwrap()), [1]);
        // Once message 1 is sent, it makes room: message 2 goes in.
        assert_eq!(seqs(&log.replay_after(key, &attached, 1, 8).await.unwrap()), [2]);
        second.await.unwrap().unwrap();
        // 4 + 6 fit in 10; a third message of 1 byte does not, until message 2 is sent.
        log.append(key, long(3, 6)).await.unwrap();
        let fourth = tokio::spawn({
            let log = Arc::clone(&log);
            async move { log.append(key, long(4, 1)).await }
        });
        tokio::task::yield_now().await;
        assert!(!fourth.is_finished());
        assert_eq!(seqs(&log.replay_after(key, &attached, 2, 8).await.unwrap()), [3]);
        fourth.await.unwrap().unwrap();
        assert_eq!(log.retained_messages(), 2, "messages 3 and 4: 7 bytes");
    }

    #[tokio::test]
    async fn a_probe_answers_as_a_resume_would_and_changes_nothing() {
        let log = MemoryReplayLog::new(2);
        let key = SessionKey::random();
        let first = log.attach(key, "alice", Attach::Open).unwrap();
        for seq in 1..=3 {
            if seq == 3 {
                // Message 1 was sent: it may leave to make room for message 3.
                log.replay_after(key, &first, 1, 8).await.unwrap();
            }
            log.append(key, message(seq)).await.unwrap();
        }
        assert_eq!(log.probe(key, "alice", 1), Ok(3));
        assert_eq!(log.probe(key, "alice", 0), Err(AttachError::Gap { first_seq: 2 }));
        assert_eq!(log.probe(key, "alice", 4), Err(AttachError::Gap { first_seq: 2 }));
        assert_eq!(log.probe(key, "mallory", 1), Err(AttachError::Unknown));
        assert_eq!(log.probe(SessionKey::random(), "alice", 1), Err(AttachError::Unknown));
        // Nothing changed: the first connection is still attached and reads on.
        assert_eq!(seqs(&log.replay_after(key, &first, 1, 8).await.unwrap()), [2, 3]);
        assert!(log.detach(key, &first));
    }

    #[tokio::test]
    async fn resume_checks_user_and_gap_and_takes_over() {
        let log = MemoryReplayLog::new(2);
        let key = SessionKey::random();
        let first = log.attach(key, "alice", Attach::Open).unwrap();
        for seq in 1..=3 {
            if seq == 3 {
                assert_eq!(seqs(&log.replay_after(key, &first, 1, 8).await.unwrap()), [2]);
            }
            log.append(key, message(seq)).await.unwrap();
        }
        assert_eq!(log.attach(key, "bob", Attach::Resume { after: 3 }), Err(AttachError::Unknown));
        assert_eq!(log.attach(SessionKey::random(), "alice", Attach::Resume { after: 0 }), Err(AttachError::Unknown));
        assert_eq!(log.attach(key, "alice", Attach::Resume { after: 0 }), Err(AttachError::Gap { first_seq: 2 }));
        assert_eq!(log.attach(key, "alice", Attach::Resume { after: 4 }), Err(AttachError::Gap { first_seq: 2 }));
        let second = log.attach(key, "alice", Attach::Resume { after: 1 }).unwrap();
        assert_eq!(second, Attached { generation: 2, last_seq: 3, took_over: true });
        assert_eq!(log.replay_after(key, &first, 1, 8).await, Err(ReplayError::TakenOver));
        assert!(!log.detach(key, &first), "a connection taken over cannot detach the session");
        assert!(!log.expire(key, &second), "an attached session does not expire");
        assert!(log.detach(key, &second));
        assert!(!log.expire(key, &first), "only the latest detach counts");
        assert!(log.expire(key, &second));
        assert!(log.is_empty());
        assert_eq!(log.attach(key, "alice", Attach::Resume { after: 3 }), Err(AttachError::Unknown));
    }

    /// A pump waiting on a log full of messages the client turns out to have (it resumes after the last one) goes on.
    #[tokio::test(start_paused = true)]
    async fn a_resume_after_everything_wakes_the_waiting_append() {
        let (log, key, first, third) = full_log_with_a_waiting_append().await;
        assert!(!third.is_finished(), "the log is full of unsent messages");
        assert!(log.detach(key, &first));
        let second = log.attach(key, "alice", Attach::Resume { after: 2 }).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), third)
            .await
            .expect("the append goes on once the client says it has everything")
            .unwrap()
            .unwrap();
        assert_eq!(seqs(&log.replay_after(key, &second, 2, 8).await.unwrap()), [3]);
        // An `after` at the top of the range is a gap, not an overflow.
        assert_eq!(
            log.attach(key, "alice", Attach::Resume { after: u64::MAX }),
            Err(AttachError::Gap { first_seq: 2 })
        );
    }

    #[test]
    fn session_keys_are_random_hex() {
        let (a, b) = (SessionKey::random(), SessionKey::random());
        assert_ne!(a, b);
        let text = a.to_string();
        assert!(text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(text.parse::<SessionKey>(), Ok(a));
        for bad in ["", "00", &text.to_uppercase().replace(char::is_numeric, "A"), &format!("{text}0")] {
            assert!(bad.parse::<SessionKey>().is_err(), "{bad}");
        }
    }
}
