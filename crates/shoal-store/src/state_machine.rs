//! The Raft state machine: applies committed commands to the in-memory
//! [`Tables`], publishes change events, and keeps snapshots on disk.
//!
//! The snapshot file (`snapshot.bin`) holds the JSON metadata and the JSON
//! image of every table, each sealed with the store's data key in 1 MiB
//! chunks (see `crypt`); it is written to a temporary file, fsynced and
//! renamed, so a crash leaves either the old or the new one.

use crate::crypt::{self, KeyId, StoreKey};
use crate::raft_types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::tables::{Event, Tables, TablesImage};
use crate::BatchResult;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::sync::{broadcast, watch};

/// Changes made by one applied Raft entry.
#[derive(Debug)]
pub struct Applied {
    /// Log index of the entry.
    pub index: u64,
    /// What changed.
    pub events: Vec<Event>,
}

/// A message on the watch stream.
#[derive(Debug, Clone)]
pub enum Change {
    /// One entry's changes.
    Applied(Arc<Applied>),
    /// The whole state was replaced (snapshot installed): re-read everything.
    Reset,
}

/// State shared between the state machine and readers.
pub struct Shared {
    tables: RwLock<Tables>,
    changes: broadcast::Sender<Change>,
    applied: watch::Sender<u64>,
}

impl Shared {
    /// Runs `f` on a consistent view of the tables.
    pub fn view<R>(&self, f: impl FnOnce(&Tables) -> R) -> R {
        f(&self.tables.read().expect("tables lock"))
    }

    /// Subscribes to changes; call before reading the snapshot you reconcile from.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Watches the last applied log index.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }
}

/// The state machine handed to openraft.
pub struct StateMachine {
    shared: Arc<Shared>,
    file: SnapshotFile,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// The writers waiting on this manager ([`StateMachine::answer_writers`]).
    writers: Option<Arc<dyn Writers>>,
}

/// The writers waiting on this manager for their commands' results (the
/// proposer's, in shoal-manager), keyed by the commands' request IDs.
///
/// The state machine hands each a result as it applies the command. The
/// result openraft returns to `client_write` comes three task hand-offs
/// later (the state machine's task → RaftCore → the proposer's → the
/// writer's), and every one is on the path of a sequential write.
pub trait Writers: Send + Sync {
    /// Whether any writer waits (checked once per apply).
    fn any(&self) -> bool;
    /// Hands `result` to the writer of command `request`, if it waits here
    /// (and was not answered yet).
    fn answer(&self, request: u64, result: crate::CommandResult);
}

fn sm_err(verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::StateMachine,
        verb,
        std::io::Error::other(e.to_string()),
    )
}

fn snap_err(verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::Snapshot(None),
        verb,
        std::io::Error::other(e.to_string()),
    )
}

/// Magic of a sealed snapshot file; the key's id follows it.
const SNAP_MAGIC: &[u8; 8] = b"SHOALSNP";
/// Stream numbers of the metadata and the data in a snapshot file.
const META_STREAM: u8 = 1;
const DATA_STREAM: u8 = 2;

/// The snapshot file and the keys it may be sealed with (the first seals
/// new ones), shared by the state machine, its snapshot builders and the
/// manager (to re-key). File writes are serialized by the lock.
#[derive(Clone)]
pub struct SnapshotFile {
    dir: PathBuf,
    keys: Arc<RwLock<Vec<StoreKey>>>,
    /// Bytes of the latest snapshot's data (read, built or installed).
    size: Arc<std::sync::atomic::AtomicU64>,
}

impl SnapshotFile {
    fn new(dir: &Path, keys: &[StoreKey]) -> SnapshotFile {
        SnapshotFile {
            dir: dir.to_path_buf(),
            keys: Arc::new(RwLock::new(keys.to_vec())),
            size: Default::default(),
        }
    }

    /// Bytes of the data of the latest snapshot this node read, built or
    /// installed (0 before any).
    pub fn last_size(&self) -> u64 {
        self.size.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_size(&self, data: &[u8]) {
        self.size
            .store(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Reads the snapshot, if any: (meta, data bytes).
    fn read(&self) -> std::io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let keys = self.keys.read().expect("keys lock");
        let found = read_snapshot_file(&self.dir, &keys)?;
        if let Some((_, data)) = &found {
            self.set_size(data);
        }
        Ok(found)
    }

    /// Writes the snapshot sealed with the current key.
    fn write(&self, meta: &SnapshotMeta, data: &[u8]) -> std::io::Result<()> {
        let keys = self.keys.write().expect("keys lock");
        write_snapshot_file(&self.dir, &keys[0], meta, data)?;
        self.set_size(data);
        Ok(())
    }

    /// Re-seals the snapshot with `key`, which seals every later one.
    pub fn rekey(&self, key: StoreKey) -> std::io::Result<()> {
        let mut keys = self.keys.write().expect("keys lock");
        if let Some((meta, data)) = read_snapshot_file(&self.dir, &keys)? {
            write_snapshot_file(&self.dir, &key, &meta, &data)?;
        }
        *keys = vec![key];
        Ok(())
    }

    /// The key the snapshot is sealed with now, if there is one.
    #[cfg(test)]
    fn key_in_use(&self) -> Option<KeyId> {
        let _keys = self.keys.read().expect("keys lock");
        let mut head = [0u8; 16];
        let mut f = std::fs::File::open(self.dir.join("snapshot.bin")).ok()?;
        f.read_exact(&mut head).ok()?;
        (&head[..8] == SNAP_MAGIC).then(|| KeyId(head[8..].try_into().expect("8 bytes")))
    }
}

/// Reads the persisted snapshot in `dir`, if any: (meta, data bytes),
/// opened with whichever of `keys` sealed it. A snapshot written in clear
/// by an older shoal is read too (the next one is sealed).
fn read_snapshot_file(
    dir: &Path,
    keys: &[StoreKey],
) -> std::io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
    let path = dir.join("snapshot.bin");
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut r = std::io::BufReader::new(file);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic == SNAP_MAGIC {
        let mut id = [0u8; 8];
        r.read_exact(&mut id)?;
        let key = keys.iter().find(|k| k.id() == KeyId(id)).ok_or_else(|| {
            std::io::Error::other("snapshot.bin is sealed with a data key this node does not have")
        })?;
        let cipher = key.cipher();
        let meta = crypt::open_stream(&cipher, META_STREAM, &mut r)?;
        let meta: SnapshotMeta = serde_json::from_slice(&meta).map_err(std::io::Error::other)?;
        let data = crypt::open_stream(&cipher, DATA_STREAM, &mut r)?;
        return Ok(Some((meta, data)));
    }
    let mut bytes = magic.to_vec();
    r.read_to_end(&mut bytes)?;
    let nl = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| std::io::Error::other("snapshot.bin: missing header"))?;
    let meta: SnapshotMeta = serde_json::from_slice(&bytes[..nl]).map_err(std::io::Error::other)?;
    Ok(Some((meta, bytes[nl + 1..].to_vec())))
}

/// Writes the snapshot sealed with `key`, atomically (temporary file,
/// fsync, rename, directory fsync).
fn write_snapshot_file(
    dir: &Path,
    key: &StoreKey,
    meta: &SnapshotMeta,
    data: &[u8],
) -> std::io::Result<()> {
    let tmp = dir.join("snapshot.bin.tmp");
    {
        let cipher = key.cipher();
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        f.write_all(SNAP_MAGIC)?;
        f.write_all(&key.id().0)?;
        let meta = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
        crypt::seal_stream(&cipher, META_STREAM, &meta, &mut f)?;
        crypt::seal_stream(&cipher, DATA_STREAM, data, &mut f)?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join("snapshot.bin"))?;
    std::fs::File::open(dir)?.sync_all()
}

impl StateMachine {
    /// Hands each command's result to `writers` as it is applied.
    pub fn answer_writers(&mut self, writers: Arc<dyn Writers>) {
        self.writers = Some(writers);
    }

    /// Opens the state machine in `dir`, loading the persisted snapshot
    /// (sealed with one of `keys`; `keys[0]` seals new ones).
    pub fn open(dir: &Path, keys: &[StoreKey]) -> anyhow::Result<StateMachine> {
        std::fs::create_dir_all(dir)?;
        let file = SnapshotFile::new(dir, keys);
        let (tables, last_applied, membership) = match file.read()? {
            Some((meta, data)) => {
                let image: TablesImage = serde_json::from_slice(&data)?;
                (
                    Tables::from_image(image),
                    meta.last_log_id,
                    meta.last_membership,
                )
            }
            None => (Tables::default(), None, StoredMembership::default()),
        };
        let (changes, _) = broadcast::channel(64);
        let (applied, _) = watch::channel(last_applied.map(|l| l.index).unwrap_or(0));
        Ok(StateMachine {
            shared: Arc::new(Shared {
                tables: RwLock::new(tables),
                changes,
                applied,
            }),
            file,
            last_applied,
            membership,
            writers: None,
        })
    }

    /// The shared read side.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// The snapshot file (to re-key it).
    pub fn snapshot_file(&self) -> SnapshotFile {
        self.file.clone()
    }
}

/// Builds snapshots from a consistent view of the tables (it shares their
/// objects, which are never changed in place).
pub struct SnapshotBuilder {
    file: SnapshotFile,
    image: TablesImage,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, crate::now_nanos()),
            None => format!("0-0-{}", crate::now_nanos()),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let file = self.file.clone();
        let image = std::mem::take(&mut self.image);
        // Encoding a large state takes a while (≈ 0.25 s of CPU for 400,000
        // configs, more while the node is busy): on a thread of its own at
        // idle priority, so that it neither blocks the runtime's threads
        // nor delays their wake-ups (see `IdleWriter`).
        let (tx, rx) = tokio::sync::oneshot::channel();
        let capacity = usize::try_from(file.last_size() + file.last_size() / 8).unwrap_or(0);
        std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                let t0 = std::time::Instant::now();
                tracing::debug!(
                    index = meta.last_log_id.map_or(0, |l| l.index),
                    "building a snapshot"
                );
                let mut out = IdleWriter::new(Vec::with_capacity(capacity), IDLE_GRACE);
                let built = serde_json::to_writer(&mut out, &image)
                    .map_err(|e| snap_err(ErrorVerb::Write, e))
                    .and_then(|_| {
                        let t1 = std::time::Instant::now();
                        drop(image);
                        let data = out.inner;
                        file.write(&meta, &data)
                            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
                        tracing::info!(
                            index = meta.last_log_id.map_or(0, |l| l.index),
                            bytes = data.len(),
                            encode_ms = (t1 - t0).as_millis() as u64,
                            write_ms = t1.elapsed().as_millis() as u64,
                            idle_priority = out.idle,
                            "snapshot built"
                        );
                        Ok((meta, data))
                    });
                let _ = tx.send(built);
            })
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let (meta, data) = rx.await.map_err(|e| snap_err(ErrorVerb::Write, e))??;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// How long a snapshot may be built at idle priority before its thread
/// asks for normal priority again (a node that is never idle must still
/// compact its log).
const IDLE_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// The writer a snapshot is encoded into, on the snapshot's own thread,
/// which it puts at `SCHED_IDLE` priority: the thread then runs only when
/// the CPU has nothing else to do, and a runtime thread waking up (for a
/// write, a heartbeat) gets the CPU at once. At normal priority three
/// managers encoding at once on a busy host cut writes by two thirds for
/// seconds (BENCHMARKS.md, session 9), far more than the CPU they used,
/// because every wake-up on a write's path waited behind them. After
/// [`IDLE_GRACE`] the thread goes back to normal priority (this needs
/// `CAP_SYS_NICE` or a `RLIMIT_NICE` allowing nice 0; without them it stays
/// idle, slower on a saturated node but never in the way).
struct IdleWriter<W> {
    inner: W,
    /// When to ask for normal priority again.
    deadline: std::time::Instant,
    /// Bytes written since the last look at the clock.
    unchecked: usize,
    /// Whether the thread is (still) at idle priority.
    idle: bool,
    /// Whether the grace has passed (and normal priority was asked for).
    late: bool,
}

impl<W> IdleWriter<W> {
    /// Puts the calling thread at idle priority, for `grace`.
    fn new(inner: W, grace: std::time::Duration) -> IdleWriter<W> {
        IdleWriter {
            inner,
            deadline: std::time::Instant::now() + grace,
            unchecked: 0,
            idle: set_thread_policy(libc::SCHED_IDLE),
            late: false,
        }
    }
}

/// Sets the calling thread's scheduling policy (priority 0); whether it did.
fn set_thread_policy(policy: libc::c_int) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
    unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
}

impl<W: Write> Write for IdleWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.unchecked += n;
        if self.idle && !self.late && self.unchecked >= 1 << 20 {
            self.unchecked = 0;
            if std::time::Instant::now() >= self.deadline {
                self.late = true;
                self.idle = !set_thread_policy(libc::SCHED_OTHER);
                if self.idle {
                    tracing::warn!(
                        "snapshot still building at idle priority after its grace, \
                         and this process may not raise it (needs CAP_SYS_NICE)"
                    );
                }
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        let mut batches = Vec::new();
        let writers = self.writers.clone().filter(|w| w.any());
        let mut answers = Vec::new();
        {
            let mut tables = self
                .shared
                .tables
                .write()
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            for entry in entries {
                self.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => results.push(BatchResult::default()),
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), m);
                        results.push(BatchResult::default());
                    }
                    EntryPayload::Normal(batch) => {
                        let mut all_events = Vec::new();
                        let mut res = Vec::with_capacity(batch.0.len());
                        for cmd in batch.0 {
                            let request = cmd.request;
                            let (r, events) = tables.apply(entry.log_id.index, cmd);
                            all_events.extend(events);
                            if writers.is_some() && request != 0 {
                                answers.push((request, r.clone()));
                            }
                            res.push(r);
                        }
                        if !all_events.is_empty() {
                            batches.push(Arc::new(Applied {
                                index: entry.log_id.index,
                                events: all_events,
                            }));
                        }
                        results.push(BatchResult(res));
                    }
                }
            }
        }
        for b in batches {
            // No receivers is fine: followers have no leader components.
            let _ = self.shared.changes.send(Change::Applied(b));
        }
        if let Some(l) = self.last_applied {
            self.shared.applied.send_replace(l.index);
        }
        // Last: a writer answered sees its write everywhere (tables, applied
        // index, change stream), whichever thread it runs on.
        if let Some(w) = writers {
            for (request, r) in answers {
                w.answer(request, r);
            }
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let image = self.shared.tables.read().expect("tables lock").image();
        SnapshotBuilder {
            file: self.file.clone(),
            image,
            last_applied: self.last_applied,
            membership: self.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let file = self.file.clone();
        let m = meta.clone();
        // Decoding and indexing a large state, like encoding it, is kept
        // off the runtime's threads.
        let tables = tokio::task::spawn_blocking(move || {
            let image: TablesImage =
                serde_json::from_slice(&data).map_err(|e| snap_err(ErrorVerb::Read, e))?;
            file.write(&m, &data)
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
            Ok::<_, StorageError>(Tables::from_image(image))
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))??;
        *self
            .shared
            .tables
            .write()
            .map_err(|e| sm_err(ErrorVerb::Write, e))? = tables;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let _ = self.shared.changes.send(Change::Reset);
        if let Some(l) = self.last_applied {
            self.shared.applied.send_replace(l.index);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let file = self.file.clone();
        let found = tokio::task::spawn_blocking(move || file.read())
            .await
            .map_err(|e| snap_err(ErrorVerb::Read, e))?
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(found.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's scheduling policy.
    fn policy() -> libc::c_int {
        // SAFETY: no arguments but the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn snapshot_bytes_are_encoded_at_idle_priority_until_the_grace_ends() {
        std::thread::spawn(|| {
            let mut w = IdleWriter::new(Vec::new(), std::time::Duration::from_secs(3600));
            assert!(w.idle, "setting SCHED_IDLE is always allowed");
            assert_eq!(policy(), libc::SCHED_IDLE);
            w.write_all(&[7u8; 3 << 20]).unwrap();
            assert!(
                w.idle && policy() == libc::SCHED_IDLE,
                "still within the grace"
            );
            assert_eq!(w.inner, vec![7u8; 3 << 20]);
        })
        .join()
        .unwrap();
        std::thread::spawn(|| {
            let mut w = IdleWriter::new(Vec::new(), std::time::Duration::ZERO);
            w.write_all(&[1u8; 100]).unwrap();
            assert!(w.idle, "the clock is read once a MiB");
            w.write_all(&[1u8; 1 << 20]).unwrap();
            assert!(w.late);
            // Raising it again needs CAP_SYS_NICE (root here, as in CI);
            // either way the flag says what the thread has.
            let want = if w.idle {
                libc::SCHED_IDLE
            } else {
                libc::SCHED_OTHER
            };
            assert_eq!(policy(), want);
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                assert!(!w.idle, "root may raise its priority again");
            }
            w.write_all(&[1u8; 2 << 20]).unwrap();
            assert_eq!(policy(), want, "asked once only");
            assert_eq!(w.inner.len(), 100 + (3 << 20));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn snapshot_file_is_sealed_and_reads_back_only_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        let meta = SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: "snap-1".into(),
        };
        let data = b"{\"secret\":\"plain-text-4711\"}".repeat(100_000);
        write_snapshot_file(dir.path(), &key, &meta, &data).unwrap();
        let raw = std::fs::read(dir.path().join("snapshot.bin")).unwrap();
        for needle in [&b"plain-text-4711"[..], b"snap-1"] {
            assert!(!raw.windows(needle.len()).any(|w| w == needle));
        }
        let (m, d) = read_snapshot_file(dir.path(), std::slice::from_ref(&key))
            .unwrap()
            .unwrap();
        assert_eq!(m.snapshot_id, "snap-1");
        assert_eq!(d, data);
        assert!(read_snapshot_file(dir.path(), &[StoreKey::generate()]).is_err());
        // Re-keyed, it opens with the new key only.
        let file = SnapshotFile::new(dir.path(), std::slice::from_ref(&key));
        let new = StoreKey::generate();
        file.rekey(new.clone()).unwrap();
        assert_eq!(file.key_in_use(), Some(new.id()));
        assert!(read_snapshot_file(dir.path(), std::slice::from_ref(&key)).is_err());
        let (_, d) = read_snapshot_file(dir.path(), std::slice::from_ref(&new))
            .unwrap()
            .unwrap();
        assert_eq!(d, data);
        // Its size is known once it is read or written (the snapshot policy
        // weighs it against the log).
        let fresh = SnapshotFile::new(dir.path(), &[new]);
        assert_eq!(fresh.last_size(), 0);
        fresh.read().unwrap().unwrap();
        assert_eq!(fresh.last_size(), data.len() as u64);
        fresh.write(&meta, b"{}").unwrap();
        assert_eq!(fresh.last_size(), 2);
        // A snapshot an older shoal wrote in clear still reads.
        let mut old = serde_json::to_vec(&meta).unwrap();
        old.push(b'\n');
        old.extend_from_slice(b"{}");
        std::fs::write(dir.path().join("snapshot.bin"), &old).unwrap();
        let (m, d) = read_snapshot_file(dir.path(), &[key]).unwrap().unwrap();
        assert_eq!(
            (m.snapshot_id.as_str(), d.as_slice()),
            ("snap-1", &b"{}"[..])
        );
    }
}
