//! The gateway's sessions: each outlives its connections.
//!
//! A gateway session is one registry session plus a pump task. The pump is the session's only writer of messages: it
//! merges the registry's events with the refusals its connections send it, numbers each with the session's `seq`,
//! renders it and appends it to the session's replay log (waiting while the log is full of messages the client has
//! not been sent). Connections attach to the session, read the log from their client's `after` and write out what
//! they read; when a connection ends, the session detaches and is closed if nobody resumes it within the resume
//! window.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use core_registry::{EventStream, OpenError, RunId, Session};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::cluster::{RedisEventLog, RunChange};
use crate::metrics::Metrics;
use crate::protocol::{Body, ServerMessage};
use crate::replay::{Attach, AttachError, Attached, LoggedMessage, ReplayLog, SessionKey};

/// How many refusals may wait for the pump before a connection's receive task stops reading (backpressure on a
/// client that floods bad messages without reading the answers).
const REFUSAL_BUFFER: usize = 16;

/// How many of a session's latest request ids are remembered for `duplicate_request`: enough for every run a client
/// may resend after a drop (those it has no answer to), bounded so that a long session's memory is too.
pub(crate) const REQUEST_IDS_KEPT: usize = 1024;

/// How long the sessions' pumps get to append the terminal events of their cancelled runs at the end of a drain.
const FINISH_GRACE: Duration = Duration::from_secs(2);

/// How long a session stays resumable after its connection ended, unless configured otherwise.
pub const DEFAULT_RESUME_WINDOW: Duration = Duration::from_secs(30);

/// An `error` message on its way to the pump.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) request_id: Option<String>,
    pub(crate) body: Body,
}

/// One gateway session, shared by its pump and the connections attached to it.
pub(crate) struct LiveSession {
    pub(crate) key: SessionKey,
    pub(crate) core: Session,
    // Boxed: the channel allocates its first block of slots up front, and every idle session has one.
    pub(crate) refusals: mpsc::Sender<Box<Refusal>>,
    // Invariant: the latest REQUEST_IDS_KEPT request ids that started a run in this session, with that run (for
    // `duplicate_request`).
    request_ids: Mutex<RequestIds>,
    // Invariant: at least the number of runs started whose terminal event the pump has not appended yet.
    // Incremented before a run is started (and decremented again if it was refused).
    runs_in_flight: AtomicUsize,
    runs_idle: Notify,
    // Cancelled when the session is closed for good (expired, `close`d, or shut down): the pump stops.
    closed: CancellationToken,
    // Cancelled once the pump has appended its last message; `last_seq` is final from then on.
    pub(crate) finished: CancellationToken,
    // The seq of the last message appended to the log.
    last_seq: AtomicU64,
}

impl fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveSession").field("key", &self.key).field("core", &self.core).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Request ids and the runs they started, oldest forgotten first.
#[derive(Default)]
struct RequestIds {
    runs: HashMap<Arc<str>, RunId>,
    // Invariant: the keys of `runs`, oldest first.
    order: std::collections::VecDeque<Arc<str>>,
}

impl RequestIds {
    fn insert(&mut self, request_id: &str, run: RunId) {
        if self.order.len() >= REQUEST_IDS_KEPT
            && let Some(oldest) = self.order.pop_front()
        {
            self.runs.remove(&oldest);
        }
        let request_id: Arc<str> = Arc::from(request_id);
        self.runs.insert(Arc::clone(&request_id), run);
        self.order.push_back(request_id);
    }
}

/// What [`LiveSession::start_run`] decided.
pub(crate) enum RunStart {
    Started(RunId),
    /// The request id was used before, by this run.
    Duplicate(RunId),
    Refused(core_registry::RunError),
}

impl LiveSession {
    /// The seq of the last message the session has appended so far.
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// Starts a run tagged with its request id, unless the request id was used before in this session.
    pub(crate) fn start_run(&self, agent: &str, input: String, request_id: Option<&str>) -> RunStart {
        let Some(request_id) = request_id else {
            self.run_starting();
            return match self.core.run(agent, input) {
                Ok(run) => RunStart::Started(run),
                Err(err) => {
                    self.run_done();
                    RunStart::Refused(err)
                }
            };
        };
        // Held while the run starts (a plain, non-async call), so that two connections sending the same request
        // at once start it once.
        let mut request_ids = lock(&self.request_ids);
        if let Some(run) = request_ids.runs.get(request_id) {
            return RunStart::Duplicate(*run);
        }
        self.run_starting();
        match self.core.run_tagged(agent, input, request_id) {
            Ok(run) => {
                request_ids.insert(request_id, run);
                RunStart::Started(run)
            }
            Err(err) => {
                self.run_done();
                RunStart::Refused(err)
            }
        }
    }

    fn run_starting(&self) {
        self.runs_in_flight.fetch_add(1, Ordering::AcqRel);
    }

    fn run_done(&self) {
        if self.runs_in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.runs_idle.notify_waiters();
        }
    }

    /// Waits until no run of this session is in progress.
    pub(crate) async fn runs_done(&self) {
        loop {
            let notified = self.runs_idle.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.runs_in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Closes the session for good: its runs are cancelled and the pump stops.
    fn shut(&self) {
        self.closed.cancel();
        self.core.close();
    }
}

/// Every gateway session of this process, and where their messages wait.
pub(crate) struct Sessions {
    pub(crate) log: Arc<dyn ReplayLog>,
    pub(crate) resume_window: Duration,
    /// Where the sessions are shared with other gateway processes, if they are.
    pub(crate) cluster: Option<RedisEventLog>,
    live: Mutex<Live>,
}

/// The sessions of this process, by key and by user.
#[derive(Default)]
struct Live {
    sessions: HashMap<SessionKey, Entry>,
    // Invariant: each user's keys, oldest first, are exactly the keys of `sessions` with that user.
    by_user: HashMap<Box<str>, Vec<SessionKey>>,
    // Invariant: per user, the live `Reservation`s (new sessions on their way through the upgrade); no zero entry.
    pending: HashMap<Box<str>, usize>,
}

/// A place for a new session of `user` under the per-user cap, held from before the upgrade until the session is
/// open (or the upgrade failed).
pub(crate) struct Reservation {
    sessions: Arc<Sessions>,
    user: Box<str>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut live = lock(&self.sessions.live);
        if let Some(pending) = live.pending.get_mut(&self.user) {
            *pending -= 1;
            if *pending == 0 {
                live.pending.remove(&self.user);
            }
        }
    }
}

struct Entry {
    live: Arc<LiveSession>,
    user: Box<str>,
    /// The hold its last connection had, while no connection holds it (so it can be closed early to make room).
    detached: Option<Attached>,
    /// The task that closes it at the end of its resume window, while detached.
    timer: Option<tokio::task::AbortHandle>,
}

impl Live {
    fn remove(&mut self, key: SessionKey) -> Option<Arc<LiveSession>> {
        let entry = self.sessions.remove(&key)?;
        if let Some(timer) = &entry.timer {
            timer.abort();
        }
        if let Some(keys) = self.by_user.get_mut(&entry.user) {
            keys.retain(|other| *other != key);
            if keys.is_empty() {
                self.by_user.remove(&entry.user);
            }
        }
        Some(entry.live)
    }
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("log", &self.log)
            .field("resume_window", &self.resume_window)
            .field("live", &lock(&self.live).sessions.len())
            .finish()
    }
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenSessionError {
    #[error(transparent)]
    Registry(#[from] OpenError),
    #[error(transparent)]
    Log(#[from] AttachError),
}

/// The user holds as many sessions as allowed, each attached to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManySessions;

impl Sessions {
    pub(crate) fn new(log: Arc<dyn ReplayLog>, resume_window: Duration, cluster: Option<RedisEventLog>) -> Sessions {
        if let Some(cluster) = &cluster {
            cluster.set_resume_window(resume_window);
        }
        Sessions { log, resume_window, cluster, live: Mutex::default() }
    }

    /// Every session of this process: its key, its user, and whether it waits for a resume (detached).
    pub(crate) fn snapshot(&self) -> Vec<(SessionKey, Box<str>, bool)> {
        let live = lock(&self.live);
        live.sessions.iter().map(|(key, entry)| (*key, entry.user.clone(), entry.detached.is_some())).collect()
    }

    /// Whether this process holds the session (attached or within its resume window).
    pub(crate) fn holds(&self, key: SessionKey) -> bool {
        lock(&self.live).sessions.contains_key(&key)
    }

    /// How many sessions are attached or within their resume window.
    pub(crate) fn len(&self) -> usize {
        lock(&self.live).sessions.len()
    }

    /// Makes room for one more session of `user` under `limit`: closes the user's oldest detached sessions (those
    /// waiting for a resume) until fewer than `limit` are left, or says that every one is attached.
    /// The place is reserved until the returned guard is dropped (once the session is open, or the upgrade failed),
    /// so that upgrades in flight at once cannot all take the last place.
    pub(crate) fn make_room(self: &Arc<Self>, user: &str, limit: usize) -> Result<Reservation, TooManySessions> {
        loop {
            let oldest_detached = {
                let mut live = lock(&self.live);
                let keys = live.by_user.get(user).map_or(0, Vec::len);
                let pending = live.pending.get(user).copied().unwrap_or(0);
                if keys + pending < limit {
                    *live.pending.entry(user.into()).or_insert(0) += 1;
                    return Ok(Reservation { sessions: Arc::clone(self), user: user.into() });
                }
                let keys = live.by_user.get(user).map_or(&[][..], Vec::as_slice);
                keys.iter().find_map(|key| Some((*key, live.sessions.get(key)?.detached?)))
            };
            let Some((key, attached)) = oldest_detached else {
                return Err(TooManySessions);
            };
            tracing::debug!(session = %key, user, "closing the user's oldest detached session to make room");
            if !self.expire(key, &attached) {
                // Resumed meanwhile: its entry says so now; look again.
                let mut live = lock(&self.live);
                if let Some(entry) = live.sessions.get_mut(&key)
                    && entry.detached == Some(attached)
                {
                    // The log has no such hold any more (closed elsewhere): do not try it again.
                    entry.detached = None;
                }
            }
        }
    }

    /// Opens a new session for `user`, attached to the calling connection, and starts its pump.
    pub(crate) fn open(
        &self,
        registry: &core_registry::AgentRegistry,
        metrics: &Arc<Metrics>,
        user: &str,
    ) -> Result<(Arc<LiveSession>, Attached), OpenSessionError> {
        let (core, events) = registry.open_session(user)?;
        let key = SessionKey::random();
        let attached = self.log.attach(key, user, Attach::Open)?;
        let (refusals, refusals_rx) = mpsc::channel(REFUSAL_BUFFER);
        let live = Arc::new(LiveSession {
            key,
            core,
            refusals,
            request_ids: Mutex::default(),
            runs_in_flight: AtomicUsize::new(0),
            runs_idle: Notify::new(),
            closed: CancellationToken::new(),
            finished: CancellationToken::new(),
            last_seq: AtomicU64::new(0),
        });
        let mut sessions = lock(&self.live);
        let entry = Entry { live: Arc::clone(&live), user: user.into(), detached: None, timer: None };
        sessions.sessions.insert(key, entry);
        sessions.by_user.entry(user.into()).or_default().push(key);
        drop(sessions);
        if let Some(cluster) = &self.cluster {
            cluster.opened(key, user);
        }
        // Debug level, like the connection span: disabled (free) at the default level.
        let span = tracing::debug_span!("session", user, session = %key);
        tokio::spawn(
            pump(
                Arc::clone(&live),
                events,
                refusals_rx,
                Arc::clone(&self.log),
                self.cluster.clone(),
                Arc::clone(metrics),
            )
            .instrument(span),
        );
        Ok((live, attached))
    }

    /// Attaches the calling connection to `user`'s session `key`, whose client has every message up to `after`.
    pub(crate) fn resume(
        &self,
        user: &str,
        key: SessionKey,
        after: u64,
    ) -> Result<(Arc<LiveSession>, Attached), AttachError> {
        let resumed = self.attach_ahead(user, key, after)?;
        if let Some(cluster) = &self.cluster {
            // A connection of another node that held it is taken over.
            cluster.attached(key, None);
        }
        Ok(resumed)
    }

    /// Attaches a client that has every message up to `after`. With a shared log, the client may have read messages
    /// in Redis that this log is yet to get (the pump writes them there first, up to a batch ahead): it attaches at
    /// this log's last message and the rest counts as sent.
    fn attach_ahead(
        &self,
        user: &str,
        key: SessionKey,
        after: u64,
    ) -> Result<(Arc<LiveSession>, Attached), AttachError> {
        let here = match (self.log.probe(key, user, after), &self.cluster) {
            (Ok(_), _) => after,
            // Ahead of this log (its first held message is not after `after`), by no more than Redis can be.
            (Err(AttachError::Gap { first_seq }), Some(_)) if first_seq <= after => {
                let last = self.log.probe(key, user, first_seq - 1)?;
                if after > last + PUMP_BATCH as u64 {
                    return Err(AttachError::Gap { first_seq });
                }
                last
            }
            (Err(err), _) => return Err(err),
        };
        let (live, attached) = self.attach(user, key, here)?;
        if here < after {
            let _ = self.log.acknowledge(key, &attached, after);
        }
        Ok((live, attached))
    }

    /// Attaches a connection of node `node` (another gateway process) to `user`'s session `key`, as
    /// [`resume`](Sessions::resume) does for this process's own connections.
    pub(crate) fn resume_for(
        &self,
        gateway: &crate::server::Gateway,
        user: &str,
        key: SessionKey,
        after: u64,
        node: &str,
        call: u64,
    ) -> Result<Attached, AttachError> {
        // That the client has no more than Redis, the node that asks checked before asking.
        let (live, attached) = self.attach_ahead(user, key, after)?;
        if let Some(cluster) = &self.cluster {
            cluster.attached(key, Some(cluster.holder(gateway, live, node, call, attached)));
        }
        Ok(attached)
    }

    /// The client of a connection of another node holding `attached` has every message up to `seq`.
    pub(crate) fn acknowledge(&self, key: SessionKey, attached: &Attached, seq: u64) {
        // It may be ahead of the log (the client read Redis, which gets messages first): the log takes it as is.
        let _ = self.log.acknowledge(key, attached, seq);
    }

    fn attach(&self, user: &str, key: SessionKey, after: u64) -> Result<(Arc<LiveSession>, Attached), AttachError> {
        let attached = self.log.attach(key, user, Attach::Resume { after })?;
        let live = lock(&self.live).sessions.get_mut(&key).map(|entry| {
            entry.detached = None;
            // Attached again: its window's timer has nothing to do (its expire would see the newer attachment).
            if let Some(timer) = entry.timer.take() {
                timer.abort();
            }
            Arc::clone(&entry.live)
        });
        match live {
            Some(live) => Ok((live, attached)),
            None => {
                // Closed between the two look-ups: gone, like any expired session.
                self.log.detach(key, &attached);
                Err(AttachError::Unknown)
            }
        }
    }

    /// What [`resume`](Sessions::resume) would answer, changing nothing: the session's last seq.
    pub(crate) fn probe(&self, user: &str, key: SessionKey, after: u64) -> Result<u64, AttachError> {
        let last_seq = self.log.probe(key, user, after)?;
        if lock(&self.live).sessions.contains_key(&key) { Ok(last_seq) } else { Err(AttachError::Unknown) }
    }

    /// The connection holding `attached` has ended: the session waits for a resume, or is closed at once if its
    /// client said `close`.
    pub(crate) fn detach(self: &Arc<Self>, key: SessionKey, attached: Attached, close_now: bool) {
        if !self.log.detach(key, &attached) {
            // Taken over: the session is someone else's business now.
            return;
        }
        if close_now {
            let _ = self.expire(key, &attached);
            return;
        }
        if let Some(cluster) = &self.cluster {
            cluster.detached(key, self.resume_window);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            let _ = self.expire(key, &attached);
            return;
        };
        let sessions = Arc::clone(self);
        let window = self.resume_window;
        let timer = runtime.spawn(async move {
            tokio::time::sleep(window).await;
            let _ = sessions.expire(key, &attached);
        });
        // One timer per session: a newer detach replaces the older one's, so connecting and leaving over and over
        // leaves one sleeping task, not one per cycle.
        let mut live = lock(&self.live);
        match live.sessions.get_mut(&key) {
            Some(entry) => {
                entry.detached = Some(attached);
                if let Some(older) = entry.timer.replace(timer.abort_handle()) {
                    older.abort();
                }
            }
            None => timer.abort(),
        }
    }

    /// Closes the session if nobody attached since `attached` detached; says whether it did.
    fn expire(&self, key: SessionKey, attached: &Attached) -> bool {
        if !self.log.expire(key, attached) {
            return false;
        }
        let live = lock(&self.live).remove(key);
        if let Some(cluster) = &self.cluster {
            cluster.forgotten(key);
        }
        if let Some(live) = live {
            tracing::debug!(session = %key, "session closed: not resumed in time, closed by its client, or evicted");
            live.shut();
        }
        true
    }

    /// Lets the runs of every session go on until `deadline` (or until `stop_now`), then cancels them and waits
    /// (briefly) for each session's pump to append their terminal events.
    pub(crate) async fn finish_all(&self, deadline: tokio::time::Instant, stop_now: &CancellationToken) {
        let live: Vec<Arc<LiveSession>> =
            lock(&self.live).sessions.values().map(|entry| Arc::clone(&entry.live)).collect();
        let runs_done = futures_util::future::join_all(live.iter().map(|live| live.runs_done()));
        tokio::select! {
            _ = tokio::time::timeout_at(deadline, runs_done) => {}
            () = stop_now.cancelled() => {}
        }
        for live in &live {
            live.core.close();
        }
        let finished = futures_util::future::join_all(live.iter().map(|live| live.finished.cancelled()));
        let _ = tokio::time::timeout(FINISH_GRACE, finished).await;
    }

    /// Closes every session (at the end of a shutdown): their runs are cancelled.
    pub(crate) fn close_all(&self) {
        let live: Vec<Arc<LiveSession>> = {
            let mut live = lock(&self.live);
            live.by_user.clear();
            live.sessions.drain().map(|(_, entry)| entry.live).collect()
        };
        for live in live {
            live.shut();
        }
    }
}

/// One message the pump appends.
enum Outgoing {
    Event(core_registry::Event),
    Refusal(Box<Refusal>),
}

/// How many messages ready at once the pump appends together (and writes to a shared log in one round trip).
pub(crate) const PUMP_BATCH: usize = 64;

/// A message numbered and rendered by the pump.
struct Numbered {
    message: LoggedMessage,
    terminal: bool,
    is_event: bool,
    /// The run it starts or ends, with the run's request id (with a shared log only, which lists runs in progress).
    run: Option<(String, Option<String>)>,
}

impl Numbered {
    fn new(seq: u64, outgoing: Outgoing, shared: bool) -> Numbered {
        match outgoing {
            Outgoing::Event(event) => {
                let terminal = event.kind().is_terminal();
                let starts = matches!(event.kind(), core_registry::EventKind::AgentStarted { .. });
                let run = (shared && (terminal || starts))
                    .then(|| (event.run_id().to_string(), event.tag().map(str::to_owned)));
                let body = Body::Event(event);
                let text = ServerMessage { seq, request_id: body.run_tag(), body: &body }.to_json();
                Numbered { message: LoggedMessage::new(seq, text), terminal, is_event: true, run }
            }
            Outgoing::Refusal(refusal) => {
                let message = ServerMessage { seq, request_id: refusal.request_id.as_deref(), body: &refusal.body };
                Numbered {
                    message: LoggedMessage::new(seq, message.to_json()),
                    terminal: false,
                    is_event: false,
                    run: None,
                }
            }
        }
    }

    fn run_change(&self) -> RunChange<'_> {
        match &self.run {
            None => RunChange::None,
            Some((run, _)) if self.terminal => RunChange::Ended { run },
            Some((run, request_id)) => RunChange::Started { run, request_id: request_id.as_deref() },
        }
    }
}

/// The session's only writer: numbers every message and appends it to the log, until the session is closed.
async fn pump(
    live: Arc<LiveSession>,
    mut events: EventStream,
    mut refusals: mpsc::Receiver<Box<Refusal>>,
    log: Arc<dyn ReplayLog>,
    cluster: Option<RedisEventLog>,
    metrics: Arc<Metrics>,
) {
    // Invariant: the seq of the last message appended; the next gets the next one, so the client sees 1, 2, 3, ...
    // with no gaps, across reconnects.
    let mut seq = 0u64;
    // With a shared log: the runs started and not ended yet, as the node's list of runs in progress has them.
    let mut open_runs: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Made once, not twice per message (each registers with the token when first polled).
    let mut closed = std::pin::pin!(live.closed.cancelled());
    // Every message ready at once goes in together: into the memory log with one wake-up of the connection that
    // reads it, and with a shared log to Redis in one round trip (one at a time, a session would get one message
    // per round trip at most).
    'pump: loop {
        let first = tokio::select! {
            biased;
            () = closed.as_mut() => break,
            Some(refusal) = refusals.recv() => Outgoing::Refusal(refusal),
            event = events.recv() => match event {
                Some(event) => Outgoing::Event(event),
                // The session was closed and every run has delivered its terminal event.
                None => break,
            },
        };
        let mut outgoing = vec![first];
        while outgoing.len() < PUMP_BATCH {
            if let Ok(refusal) = refusals.try_recv() {
                outgoing.push(Outgoing::Refusal(refusal));
            } else if let Ok(event) = events.try_recv() {
                outgoing.push(Outgoing::Event(event));
            } else {
                break;
            }
        }
        let batch: Vec<Numbered> = outgoing
            .into_iter()
            .map(|outgoing| {
                seq += 1;
                Numbered::new(seq, outgoing, cluster.is_some())
            })
            .collect();
        if let Some(cluster) = &cluster {
            let writes: Vec<(&LoggedMessage, RunChange<'_>)> =
                batch.iter().map(|numbered| (&numbered.message, numbered.run_change())).collect();
            // Not cut short by `closed`: the script runs or not, and `seq` must say which (the end marker follows the
            // last message Redis has). It is bounded by the response timeout.
            let mirrored = cluster.mirror(live.key, &writes).await;
            if mirrored.is_err() {
                // Another node ended this session (it took this one for lost): nothing more may be appended.
                seq -= batch.len() as u64;
                break;
            }
            for numbered in &batch {
                match &numbered.run {
                    Some((run, _)) if numbered.terminal => {
                        open_runs.remove(run);
                    }
                    Some((run, _)) => {
                        open_runs.insert(run.clone());
                    }
                    None => {}
                }
            }
        }
        let (events_in, terminals) = batch.iter().fold((0, 0), |(events, terminals), numbered| {
            (events + u64::from(numbered.is_event), terminals + usize::from(numbered.terminal))
        });
        let (count, last) = (batch.len() as u64, seq);
        let messages: Vec<LoggedMessage> = batch.into_iter().map(|numbered| numbered.message).collect();
        let appended = tokio::select! {
            biased;
            () = closed.as_mut() => break 'pump,
            appended = log.append_all(live.key, messages) => appended,
        };
        if let Err(err) = appended {
            tracing::debug!(%err, "session's messages can no longer be delivered");
            break 'pump;
        }
        live.last_seq.store(last, Ordering::Release);
        metrics.sent(events_in, count - events_in);
        for _ in 0..terminals {
            live.run_done();
        }
    }
    live.finished.cancel();
    if let Some(cluster) = &cluster {
        cluster.ended(live.key, seq, open_runs.into_iter().collect());
    }
    // Dropping the stream cancels whatever still runs (the session was closed for good, nobody can receive it).
    drop(events);
    tracing::debug!(last_seq = seq, "session's pump ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_reserved_for_a_new_session_counts_until_released() {
        let log = Arc::new(crate::replay::MemoryReplayLog::default());
        let sessions = Arc::new(Sessions::new(log, DEFAULT_RESUME_WINDOW, None));
        // Two upgrades at once for the last place: the second sees the first's reservation.
        let first = sessions.make_room("alice", 1).ok().unwrap();
        assert!(sessions.make_room("alice", 1).is_err());
        assert!(sessions.make_room("bob", 1).is_ok(), "per user");
        drop(first);
        assert!(sessions.make_room("alice", 1).is_ok());
        assert!(lock(&sessions.live).pending.is_empty(), "no entry left behind");
    }

    #[test]
    fn only_the_latest_request_ids_are_kept() {
        let mut ids = RequestIds::default();
        for n in 0..REQUEST_IDS_KEPT + 2 {
            ids.insert(&format!("r{n}"), format!("run-{n}").parse().unwrap());
        }
        assert_eq!((ids.runs.len(), ids.order.len()), (REQUEST_IDS_KEPT, REQUEST_IDS_KEPT));
        assert!(!ids.runs.contains_key("r0") && !ids.runs.contains_key("r1"), "the two oldest are forgotten");
        let latest = format!("r{}", REQUEST_IDS_KEPT + 1);
        assert_eq!(
            ids.runs.get(latest.as_str()).map(ToString::to_string),
            Some(format!("run-{}", REQUEST_IDS_KEPT + 1))
        );
    }
}
