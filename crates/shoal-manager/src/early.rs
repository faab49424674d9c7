//! Early AppendEntries: the leader sends its new entries to the followers
//! while it writes and syncs them itself, instead of after.
//!
//! openraft 0.9 appends to the leader's log inside RaftCore and only then
//! starts replication, so a write waits for the leader's sync and then for a
//! follower's, one after the other. Here the log store hands each append the
//! leader makes ([`LeaderAppend`]) to [`Early`] before writing it, and
//! `Early` sends followers the AppendEntries request that replication would
//! send for exactly those entries: same vote, same previous log id, same
//! entries. When openraft's replication then asks for that same request, the
//! follower's answer is already there (or on its way) and is returned
//! instead of asking again.
//!
//! Why this is safe (Raft allows the leader to write its log in parallel
//! with replication; Ongaro's thesis, §10.2.1):
//! - The early request is one the leader would send: its entries are the
//!   leader's own entries of its current term, at the end of its log, and
//!   its vote is the leader's committed vote, which is durable before any
//!   entry of the term is appended. The follower's openraft checks it like
//!   any other request.
//! - A follower's success answer means it holds those entries durably; it is
//!   used only for a request with the same vote, previous log id and last
//!   entry, and it is no different from a delayed answer to that request.
//!   Whether an entry is committed is still decided by openraft, which counts
//!   the leader only once its own write is durable.
//! - If the leader crashes before its own sync, a follower may hold entries
//!   the leader lost: they were never committed, and no other entry can take
//!   their (term, index), since a restarted manager needs a new term to lead.
//!   openraft 0.9 alone would restart a leader as leader of the same term, so
//!   the manager turns its committed vote for itself back into a plain vote
//!   at every start (`never_lead_again_in_an_old_term` in `manager.rs`);
//!   without that, `cluster.rs`'s kill test saw followers keep one entry and
//!   the restarted leader commit another under the same log id.
//!
//! Targets are the followers whose replication client has sent entries
//! (openraft also makes clients for votes and leadership checks; those never
//! register). Each target has one early connection, and early requests are
//! pipelined on it: each is written as soon as its append is made, in the
//! order of the appends, and the answers, which come back in that order, are
//! read by a task of their own. So a follower gets every entry in order,
//! even one still busy with the previous entries, instead of getting some
//! the usual way and the next ones early, out of order (it refused those,
//! and was then left to the usual replication until in step again). Up to
//! [`MAX_IN_FLIGHT`] requests wait for their answer at once; appends made
//! beyond that are left to the normal replication, and so is a follower that
//! did not accept an early request, until a normal request succeeds again.

use crate::peers::Peers;
use crate::raft_stream::StreamError;
use openraft::raft::AppendEntriesResponse;
use shoal_net::frame;
use shoal_store::{LeaderAppend, LeaderAppends, LogId, Vote};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

/// How long an early request may wait for its answer before its
/// connection is dropped.
const EARLY_TTL: Duration = Duration::from_secs(2);

/// At most this many early requests wait for their answer per target.
const MAX_IN_FLIGHT: usize = 8;

/// How many early requests per target are kept for matching openraft's.
const REMEMBERED: usize = 2 * MAX_IN_FLIGHT;

/// Whether a follower accepted an early request (answered `Success`).
type Accepted = bool;

/// Sends the leader's appends to its replication targets early.
pub struct Early {
    peers: Arc<Peers>,
    targets: Mutex<HashMap<u64, Arc<Target>>>,
    next_reg: AtomicU64,
}

/// One replication target.
struct Target {
    /// Which registration it belongs to (replication restarts re-register).
    reg: u64,
    id: u64,
    addr: String,
    /// The early connection's sending side. Held while a request is
    /// written, and while the connection is made: requests leave in the
    /// order their appends were made (tokio's lock is first come, first
    /// served, and each request asks for it in `appending`).
    out: tokio::sync::Mutex<Option<Outgoing>>,
    state: Mutex<TargetState>,
    /// Bumped at every append the leader makes (sent early to this target
    /// or not): wakes [`Registration::answer_for_commit`].
    appends: watch::Sender<u64>,
}

impl Drop for Target {
    fn drop(&mut self) {
        // Stop the connection's reader, which would otherwise wait for the
        // follower to close it.
        if let Some(conn) = self.out.get_mut().as_ref().map(|o| o.conn.clone()) {
            conn.fail(self);
        }
    }
}

#[derive(Default)]
struct TargetState {
    /// Early requests started and not answered yet.
    in_flight: usize,
    /// The target did not accept an early request: wait for normal
    /// replication to succeed before sending more.
    lagging: bool,
    /// The latest early requests, oldest first, each with its answer once
    /// it came.
    sent: VecDeque<Sent>,
    /// The latest append sent early: its number in `Target::appends`, and
    /// what it carried.
    latest: Option<(u64, Sent)>,
}

impl TargetState {
    /// Records an append not sent early to `t` (called under `t.state`).
    fn skip(&mut self, t: &Target) {
        t.appends.send_modify(|n| *n += 1);
    }

    /// Records the early request `s` to `t` as in flight (under `t.state`).
    fn start(&mut self, t: &Target, s: Sent) {
        self.skip(t);
        self.in_flight += 1;
        self.latest = Some((*t.appends.borrow(), s.clone()));
        if self.sent.len() == REMEMBERED {
            self.sent.pop_front();
        }
        self.sent.push_back(s);
    }
}

impl Target {
    /// An early request to this target ended: `accepted` or not.
    fn finish(&self, answer: &watch::Sender<Option<Accepted>>, accepted: Accepted) {
        {
            let mut st = self.state.lock().expect("early target");
            st.in_flight = st.in_flight.saturating_sub(1);
            st.lagging |= !accepted;
        }
        let _ = answer.send(Some(accepted));
    }
}

/// What an early request said, for matching the normal request.
#[derive(Clone)]
struct Sent {
    vote: Vote,
    prev_log_id: Option<LogId>,
    last: LogId,
    leader_commit: Option<LogId>,
    answer: watch::Receiver<Option<Accepted>>,
}

type Tls = TlsStream<TcpStream>;

/// The sending side of an early connection.
struct Outgoing {
    write: WriteHalf<Tls>,
    conn: Arc<Conn>,
}

/// One early connection, as its sending side and its reader share it.
struct Conn {
    /// The requests written and not answered yet, oldest first; `None`
    /// once the connection is closed.
    waiting: Mutex<Option<VecDeque<Waiting>>>,
    /// A request was added (the reader then watches its age).
    added: tokio::sync::Notify,
    closed: CancellationToken,
}

/// An early request waiting for its answer.
struct Waiting {
    since: Instant,
    answer: watch::Sender<Option<Accepted>>,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            waiting: Mutex::new(Some(VecDeque::new())),
            added: tokio::sync::Notify::new(),
            closed: CancellationToken::new(),
        }
    }

    /// Adds a request about to be written; gives it back if the connection
    /// is closed.
    fn wait(&self, w: Waiting) -> Result<(), Waiting> {
        match self.waiting.lock().expect("early conn").as_mut() {
            Some(q) => {
                q.push_back(w);
                self.added.notify_one();
                Ok(())
            }
            None => Err(w),
        }
    }

    /// The oldest request waiting, answered now; `None` if there is none
    /// or the connection is closed.
    fn answered(&self) -> Option<Waiting> {
        self.waiting
            .lock()
            .expect("early conn")
            .as_mut()?
            .pop_front()
    }

    /// When the oldest request waiting was written.
    fn oldest(&self) -> Option<Instant> {
        let waiting = self.waiting.lock().expect("early conn");
        waiting.as_ref()?.front().map(|w| w.since)
    }

    /// Closes the connection and fails the requests waiting on it (to
    /// target `t`).
    fn fail(&self, t: &Target) {
        for w in self.close() {
            t.finish(&w.answer, false);
        }
    }

    /// Closes the connection; the requests that were waiting on it.
    fn close(&self) -> VecDeque<Waiting> {
        self.closed.cancel();
        self.waiting
            .lock()
            .expect("early conn")
            .take()
            .unwrap_or_default()
    }
}

/// A target's registration; unregisters when dropped.
pub struct Registration {
    early: Arc<Early>,
    target: u64,
    reg: u64,
    /// An early answer was used (logged once per registration)...
    used: bool,
    /// ...and one answered an AppendEntries without entries.
    used_for_commit: bool,
}

impl Early {
    pub fn new(peers: Arc<Peers>) -> Arc<Early> {
        Arc::new(Early {
            peers,
            targets: Mutex::new(HashMap::new()),
            next_reg: AtomicU64::new(1),
        })
    }

    /// Starts sending early requests to `target` at `addr` (while the
    /// registration lives).
    pub fn register(self: &Arc<Self>, target: u64, addr: &str) -> Registration {
        let reg = self.next_reg.fetch_add(1, Ordering::Relaxed);
        let t = Arc::new(Target {
            reg,
            id: target,
            addr: addr.to_string(),
            out: tokio::sync::Mutex::new(None),
            state: Mutex::new(TargetState::default()),
            appends: watch::Sender::new(0),
        });
        self.targets.lock().expect("early").insert(target, t);
        Registration {
            early: self.clone(),
            target,
            reg,
            used: false,
            used_for_commit: false,
        }
    }

    fn target(&self, target: u64) -> Option<Arc<Target>> {
        self.targets.lock().expect("early").get(&target).cloned()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut targets = self.early.targets.lock().expect("early");
        if targets.get(&self.target).is_some_and(|t| t.reg == self.reg) {
            targets.remove(&self.target);
        }
    }
}

impl Registration {
    /// The answer to an early request that answers `rpc`, waiting for it
    /// up to `wait`; `None` if there is none, it failed, or it did not come
    /// in time. An early request answers `rpc` if it has the same vote and
    /// the same last entry: a follower that accepted it holds the leader's
    /// log up to that entry (Log Matching), whatever the previous log ids
    /// of the two requests (openraft may send in one request entries that
    /// went early in several).
    pub async fn answer_for(
        &mut self,
        vote: &Vote,
        last: Option<LogId>,
        wait: Duration,
    ) -> Option<AppendEntriesResponse<u64>> {
        let last = last?;
        let t = self.early.target(self.target)?;
        let answer = {
            let mut st = t.state.lock().expect("early target");
            let at = st
                .sent
                .iter()
                .position(|s| s.vote == *vote && s.last == last)?;
            // The ones before it are of no more use.
            let matched = st.sent.drain(..=at).next_back().expect("matched");
            matched.answer
        };
        if !accepted(answer, wait).await {
            return None;
        }
        first_use(
            &mut self.used,
            self.target,
            "replication uses the answers to early AppendEntries",
        );
        Some(AppendEntriesResponse::Success)
    }

    /// For an AppendEntries without entries (a heartbeat, or the new commit
    /// index): waits up to `window` for the leader's next append and, if it
    /// goes to the target early carrying at least `leader_commit` under the
    /// same vote, returns `Success` as soon as it has left (unless the
    /// target already refused it). The request carries the commit index to
    /// the target, and the empty request asks nothing else that the leader
    /// does not know already: its previous log id is the target's known
    /// match, so `Success` moves nothing that decides a commit. Whether the
    /// target accepts the append is learnt by the request for those
    /// entries, which openraft sends next and which [`Self::answer_for`]
    /// answers only with the target's own answer. Not waiting here frees the
    /// replication task to be already waiting on that answer when it comes
    /// (one pass through openraft's replication less before the commit).
    /// The one thing given ahead of the target is openraft's acknowledgement
    /// clock (`millis_since_quorum_ack`), by at most the time between two
    /// requests, and only until the first unaccepted early request (after
    /// which the target is skipped until it is in step). `None` (send the
    /// request) if no append comes in time, or it was not sent early, or
    /// does not qualify, or was refused.
    pub async fn answer_for_commit(
        &mut self,
        vote: &Vote,
        prev_log_id: Option<LogId>,
        leader_commit: Option<LogId>,
        window: Duration,
    ) -> Option<AppendEntriesResponse<u64>> {
        let t = self.early.target(self.target)?;
        let mut appends = t.appends.subscribe();
        let since = *appends.borrow_and_update();
        let deadline = tokio::time::Instant::now() + window;
        let carried = loop {
            {
                let st = t.state.lock().expect("early target");
                if *t.appends.borrow() > since {
                    match &st.latest {
                        Some((n, c)) if *n > since => break c.clone(),
                        // Appends came and were not sent early.
                        _ => return None,
                    }
                }
            }
            match tokio::time::timeout_at(deadline, appends.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        };
        if carried.vote != *vote
            || carried.leader_commit < leader_commit
            || carried.prev_log_id < prev_log_id
            || *carried.answer.borrow() == Some(false)
        {
            return None;
        }
        first_use(
            &mut self.used_for_commit,
            self.target,
            "early answers stand in for AppendEntries without entries",
        );
        Some(AppendEntriesResponse::Success)
    }

    /// Normal replication succeeded: the target is in step again.
    pub fn in_step(&self) {
        if let Some(t) = self.early.target(self.target) {
            t.state.lock().expect("early target").lagging = false;
        }
    }
}

impl LeaderAppends for Early {
    fn appending(&self, append: LeaderAppend) {
        let Some(last) = append.entries.last().map(|(id, _)| *id) else {
            return;
        };
        let targets: Vec<Arc<Target>> = self
            .targets
            .lock()
            .expect("early")
            .values()
            .cloned()
            .collect();
        let mut req: Option<Vec<u8>> = None;
        for t in targets {
            let (tx, rx) = watch::channel(None);
            let sending = {
                let mut st = t.state.lock().expect("early target");
                if st.in_flight >= MAX_IN_FLIGHT || st.lagging || !self.peers.serves_stream(&t.addr)
                {
                    st.skip(&t);
                    false
                } else {
                    let sent = Sent {
                        vote: append.vote,
                        prev_log_id: append.prev_log_id,
                        last,
                        leader_commit: append.leader_commit,
                        answer: rx,
                    };
                    st.start(&t, sent);
                    true
                }
            };
            if !sending {
                continue;
            }
            let frame = req
                .get_or_insert_with(|| {
                    let mut f = frame::start(frame::APPEND_ENTRIES, 256);
                    crate::raft_net::encode_append(
                        &append.vote,
                        &append.prev_log_id,
                        append.entries.iter().map(|(_, json)| &json[..]),
                        &append.leader_commit,
                        &mut f,
                    );
                    f
                })
                .clone();
            start_now(send(self.peers.clone(), t, frame, tx));
        }
    }
}

/// Runs `task` up to its first wait right here, then as a task of its own.
///
/// An early request is meant to leave before the leader's own write. A
/// spawned task would only start once the task appending (RaftCore) and the
/// replication tasks it wakes have had their turn on the worker thread:
/// 40–60 µs later, measured. Polled here, the request is written to the
/// follower's connection at once (the write to an idle socket does not
/// wait); only a request that must wait (for the connection to be made,
/// or for the requests before it to be written) goes on as a task. The
/// first poll uses a no-op waker: whatever it waits on is polled again, with
/// the task's own waker, as soon as the task is spawned.
fn start_now(task: impl std::future::Future<Output = ()> + Send + 'static) {
    let mut task = Box::pin(task);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if task.as_mut().poll(&mut cx).is_pending() {
        tokio::spawn(task);
    }
}

/// Waits up to `wait` for an early request's answer: whether the follower
/// accepted it.
async fn accepted(mut answer: watch::Receiver<Option<Accepted>>, wait: Duration) -> bool {
    matches!(
        tokio::time::timeout(wait, answer.wait_for(Option::is_some)).await,
        Ok(Ok(a)) if *a == Some(true)
    )
}

/// Logs `what` (about `target`) the first time `flag` is set.
fn first_use(flag: &mut bool, target: u64, what: &str) {
    if !std::mem::replace(flag, true) {
        tracing::debug!(target = target, "{what}");
    }
}

/// Writes one early request to `t` on its early connection (made first if
/// need be); its answer comes through `answer`, from the connection's
/// reader ([`read_answers`]).
async fn send(
    peers: Arc<Peers>,
    t: Arc<Target>,
    mut frame: Vec<u8>,
    answer: watch::Sender<Option<Accepted>>,
) {
    let mut out = t.out.lock().await;
    let mut w = Waiting {
        since: Instant::now(),
        answer,
    };
    // At most twice: a connection found closed is made again once.
    for _ in 0..2 {
        let o = match out.as_mut() {
            Some(o) => o,
            None => match connect(&t.addr, &peers).await {
                Ok(s) => {
                    let (read, write) = tokio::io::split(s);
                    let conn = Arc::new(Conn::new());
                    tokio::spawn(read_answers(read, conn.clone(), Arc::downgrade(&t)));
                    out.insert(Outgoing { write, conn })
                }
                Err(()) => {
                    t.finish(&w.answer, false);
                    return;
                }
            },
        };
        w = match o.conn.wait(w) {
            Ok(()) => {
                // A follower that stopped reading must not hold up the
                // requests behind this one for longer than its answer may
                // take.
                let sent = tokio::time::timeout(EARLY_TTL, frame::send(&mut o.write, &mut frame));
                if !matches!(sent.await, Ok(Ok(()))) {
                    o.conn.fail(&t);
                    *out = None;
                }
                return;
            }
            // Closed by its reader: make a new one.
            Err(w) => {
                *out = None;
                w
            }
        };
    }
    t.finish(&w.answer, false);
}

/// Opens an early connection to `addr`, within [`EARLY_TTL`].
async fn connect(addr: &str, peers: &Peers) -> Result<Tls, ()> {
    match tokio::time::timeout(
        EARLY_TTL,
        crate::raft_stream::connect(addr, &peers.raft_tls()),
    )
    .await
    {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(StreamError::NotServed)) => {
            peers.stream_not_served(addr);
            Err(())
        }
        _ => Err(()),
    }
}

/// Reads the answers to the early requests written on `conn`, in order,
/// and hands each to its request; on any failure, or an answer overdue
/// ([`EARLY_TTL`]), closes the connection and fails whatever waits on it.
async fn read_answers(mut read: ReadHalf<Tls>, conn: Arc<Conn>, t: Weak<Target>) {
    let mut body = Vec::new();
    loop {
        let got = {
            let recv = frame::recv(&mut read, &mut body);
            tokio::pin!(recv);
            loop {
                let oldest = conn.oldest();
                let overdue = tokio::time::sleep_until(
                    (oldest.unwrap_or_else(Instant::now) + EARLY_TTL).into(),
                );
                tokio::select! {
                    r = &mut recv => break r.ok(),
                    () = conn.closed.cancelled() => return,
                    () = overdue, if oldest.is_some() => break None,
                    // Nothing waited: now something may.
                    () = conn.added.notified(), if oldest.is_none() => {}
                }
            }
        };
        let Some(t) = t.upgrade() else {
            conn.close();
            return;
        };
        let answer = got.map(|tag| (tag, crate::raft_net::append_answer(t.id, tag, &body)));
        match (answer, conn.answered()) {
            (Some((frame::OK | frame::REFUSED, r)), Some(w)) => {
                t.finish(&w.answer, matches!(r, Ok(AppendEntriesResponse::Success)));
            }
            (_, w) => {
                // Broken, overdue, or an answer nothing waits for.
                if let Some(w) = w {
                    t.finish(&w.answer, false);
                }
                conn.fail(&t);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    async fn early() -> Arc<Early> {
        let (tls, _, server) = crate::raft_stream::testing::older_shoal().await;
        server.abort();
        Early::new(Peers::new(tls))
    }

    fn id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(2, 1), index)
    }

    /// Pretends an early request for `(prev, last]` is in flight to `target`.
    fn sent(e: &Early, target: u64, prev: u64, last: u64) -> watch::Sender<Option<Accepted>> {
        let (tx, rx) = watch::channel(None);
        let t = e.target(target).unwrap();
        t.state.lock().unwrap().start(
            &t,
            Sent {
                vote: Vote::new_committed(2, 1),
                prev_log_id: Some(id(prev)),
                last: id(last),
                leader_commit: None,
                answer: rx,
            },
        );
        tx
    }

    /// An answer is used only for a request with the same vote and last
    /// entry, only if the follower accepted it, only once, and not after
    /// waiting too long.
    #[tokio::test]
    async fn an_early_answer_is_used_only_for_the_same_entries_and_only_if_accepted() {
        let e = early().await;
        let mut r = e.register(2, "127.0.0.1:1");
        let vote = Vote::new_committed(2, 1);
        let wait = Duration::from_millis(200);
        // Nothing was sent early.
        assert!(r.answer_for(&vote, Some(id(5)), wait).await.is_none());

        let tx = sent(&e, 2, 4, 5);
        // Another vote or last entry, or a heartbeat: no.
        let other = Vote::new_committed(3, 1);
        assert!(r.answer_for(&other, Some(id(5)), wait).await.is_none());
        assert!(r.answer_for(&vote, Some(id(6)), wait).await.is_none());
        assert!(r.answer_for(&vote, None, wait).await.is_none());
        // The same entries wait for the answer...
        let answer = tokio::spawn(async move {
            let got = r.answer_for(&vote, Some(id(5)), wait).await;
            (r, got)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(Some(true)).unwrap();
        let (mut r, got) = answer.await.unwrap();
        assert!(matches!(got, Some(AppendEntriesResponse::Success)));
        // ...which is used once.
        assert!(r.answer_for(&vote, Some(id(5)), wait).await.is_none());

        // Refused or failed: the caller sends the request itself.
        let tx = sent(&e, 2, 5, 6);
        tx.send(Some(false)).unwrap();
        assert!(r.answer_for(&vote, Some(id(6)), wait).await.is_none());
        // No answer in time: the same.
        let _tx = sent(&e, 2, 6, 7);
        assert!(r.answer_for(&vote, Some(id(7)), wait).await.is_none());
        // The sender gone without an answer: the same, at once.
        drop(sent(&e, 2, 7, 8));
        let quick = tokio::time::timeout(Duration::from_secs(5), async {
            r.answer_for(&vote, Some(id(8)), Duration::from_secs(60))
                .await
        });
        assert!(quick.await.unwrap().is_none());
    }

    /// Several early requests in flight: openraft's request for entries
    /// that went early in two of them is answered by the later one, and the
    /// requests before it are dropped.
    #[tokio::test]
    async fn one_request_for_entries_sent_early_in_several_is_answered_by_the_last() {
        let e = early().await;
        let mut r = e.register(2, "127.0.0.1:1");
        let vote = Vote::new_committed(2, 1);
        let wait = Duration::from_secs(5);
        let _first = sent(&e, 2, 4, 5);
        let second = sent(&e, 2, 5, 6);
        let _third = sent(&e, 2, 6, 7);
        second.send(Some(true)).unwrap();
        let got = tokio::time::timeout(wait, r.answer_for(&vote, Some(id(6)), wait)).await;
        assert!(matches!(got, Ok(Some(AppendEntriesResponse::Success))));
        let t = e.target(2).unwrap();
        let left: Vec<LogId> = t
            .state
            .lock()
            .unwrap()
            .sent
            .iter()
            .map(|s| s.last)
            .collect();
        assert_eq!(left, vec![id(7)]);
        let short = Duration::from_millis(50);
        assert!(r.answer_for(&vote, Some(id(5)), short).await.is_none());
    }

    /// A replication session re-registering its target keeps it when the
    /// previous session's registration goes away afterwards.
    #[tokio::test]
    async fn a_stale_registration_does_not_remove_the_new_one() {
        let e = early().await;
        let old = e.register(2, "127.0.0.1:1");
        let new = e.register(2, "127.0.0.1:1");
        drop(old);
        assert!(e.target(2).is_some());
        drop(new);
        assert!(e.target(2).is_none());
    }

    /// Appends go early only to targets that are free and in step, and a
    /// target that does not answer is left to normal replication until it
    /// is in step again.
    #[tokio::test]
    async fn a_target_that_fails_is_skipped_until_it_is_in_step() {
        let e = early().await;
        // Nobody listens at this address.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let r = e.register(2, &addr);
        let append = |index: u64| LeaderAppend {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(id(index - 1)),
            leader_commit: None,
            entries: vec![(id(index), Arc::from(&b"{}"[..]))],
        };
        e.appending(append(5));
        let t = e.target(2).unwrap();
        wait_until(|| t.state.lock().unwrap().lagging).await;
        assert_eq!(t.state.lock().unwrap().in_flight, 0);
        // Lagging: the next append is not sent early.
        e.appending(append(6));
        let last = t.state.lock().unwrap().sent.back().map(|s| s.last);
        assert_eq!(last, Some(id(5)));
        r.in_step();
        assert!(!t.state.lock().unwrap().lagging);
        e.appending(append(7));
        let last = t.state.lock().unwrap().sent.back().map(|s| s.last);
        assert_eq!(last, Some(id(7)));
    }

    /// Early requests are pipelined on one connection, in the order of the
    /// appends (the peer answers only once three are waiting), and a
    /// connection the follower closed is made again once the target is in
    /// step.
    #[tokio::test]
    async fn early_requests_are_pipelined_and_a_closed_connection_is_made_again() {
        let (tls, addr, server) = crate::raft_stream::testing::raft_peer(3).await;
        let e = Early::new(Peers::new(tls));
        let mut r = e.register(2, &addr);
        let t = e.target(2).unwrap();
        let vote = Vote::new_committed(2, 1);
        let append = |index: u64| LeaderAppend {
            vote,
            prev_log_id: Some(id(index - 1)),
            leader_commit: None,
            entries: vec![(id(index), Arc::from(&b"{}"[..]))],
        };
        // The peer closes the first connection without an answer.
        e.appending(append(5));
        wait_until(|| t.state.lock().unwrap().lagging).await;
        assert_eq!(t.state.lock().unwrap().in_flight, 0);
        r.in_step();
        for index in 6..=8 {
            e.appending(append(index));
        }
        let wait = Duration::from_secs(10);
        let got = tokio::time::timeout(wait, r.answer_for(&vote, Some(id(8)), wait)).await;
        assert!(matches!(got, Ok(Some(AppendEntriesResponse::Success))));
        wait_until(|| t.state.lock().unwrap().in_flight == 0).await;
        assert!(!t.state.lock().unwrap().lagging);
        server.abort();
    }

    /// An older shoal without the stream gets no early requests: after the
    /// first refusal, the address is marked as not serving it.
    #[tokio::test]
    async fn a_peer_without_the_stream_gets_no_early_requests() {
        let (tls, addr, server) = crate::raft_stream::testing::older_shoal().await;
        let e = Early::new(Peers::new(tls));
        let _r = e.register(2, &addr);
        assert!(e.peers.serves_stream(&addr));
        e.appending(LeaderAppend {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(id(4)),
            leader_commit: None,
            entries: vec![(id(5), Arc::from(&b"{}"[..]))],
        });
        let t = e.target(2).unwrap();
        wait_until(|| t.state.lock().unwrap().lagging).await;
        assert!(!e.peers.serves_stream(&addr));
        server.abort();
    }

    /// An AppendEntries without entries is answered by the leader's next
    /// append sent early, as soon as it left, if that one carries the same
    /// vote and at least its commit index and was not refused; otherwise it
    /// is sent (at once when an append was not sent early, at the window's
    /// end when none came).
    #[tokio::test]
    async fn an_empty_append_entries_is_answered_by_the_next_early_request() {
        let e = early().await;
        let r = tokio::sync::Mutex::new(e.register(2, "127.0.0.1:1"));
        let t = e.target(2).unwrap();
        let vote = Vote::new_committed(2, 1);
        let window = Duration::from_millis(300);
        let start = |commit: u64, vote: Vote| {
            let (tx, rx) = watch::channel(None);
            let s = Sent {
                vote,
                prev_log_id: Some(id(9)),
                last: id(10),
                leader_commit: Some(id(commit)),
                answer: rx,
            };
            t.state.lock().unwrap().start(&t, s);
            tx
        };
        let ask = |commit: u64| {
            let r = &r;
            async move {
                r.lock()
                    .await
                    .answer_for_commit(&vote, Some(id(8)), Some(id(commit)), window)
                    .await
            }
        };
        // No append in the window: send it.
        let t0 = std::time::Instant::now();
        assert!(ask(8).await.is_none());
        assert!(t0.elapsed() >= window);
        // An append sent early: answered as soon as it left, without
        // waiting for the target's answer (none ever comes here).
        let (got, tx) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(5), ask(8)),
            async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                start(8, vote)
            }
        );
        assert!(matches!(got, Ok(Some(AppendEntriesResponse::Success))));
        drop(tx);
        // The same once the target accepted it.
        let (got, _tx) = tokio::join!(ask(8), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let tx = start(8, vote);
            tx.send(Some(true)).unwrap();
            tx
        });
        assert!(matches!(got, Some(AppendEntriesResponse::Success)));
        // Refused: send it.
        let (got, _tx) = tokio::join!(ask(8), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let tx = start(8, vote);
            tx.send(Some(false)).unwrap();
            tx
        });
        assert!(got.is_none());
        // An older commit index or another vote: send it.
        let (got, _tx) = tokio::join!(ask(8), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let tx = start(7, vote);
            tx.send(Some(true)).unwrap();
            tx
        });
        assert!(got.is_none());
        let (got, _tx) = tokio::join!(ask(8), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let tx = start(8, Vote::new_committed(3, 1));
            tx.send(Some(true)).unwrap();
            tx
        });
        assert!(got.is_none());
        // An append that skipped the target: send it, without waiting out
        // the window.
        let t0 = std::time::Instant::now();
        let (got, ()) = tokio::join!(ask(8), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            t.state.lock().unwrap().skip(&t);
        });
        assert!(got.is_none());
        assert!(t0.elapsed() < window);
    }

    async fn wait_until(f: impl Fn() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached in 5 s");
    }
}
