//! The durable Raft log and vote, in a redb database (`raft.redb`).
//!
//! Every append is one write transaction committed with fsync before the
//! flush callback fires, as openraft requires. The committed index is saved
//! without fsync (it is only a hint: openraft re-derives commitment).

use crate::raft_types::{Entry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The redb-backed log store. Cheap to clone (shares the database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The newest entries, so replication reads them without a disk read
    /// and a decode (followers ask for what was just appended).
    cache: Arc<std::sync::Mutex<std::collections::BTreeMap<u64, Entry>>>,
}

/// How many recent entries the cache keeps...
const CACHE_ENTRIES: usize = 64;
/// ...holding at most this many ops in all (an orchestrator entry carries
/// hundreds of objects; the applied tables hold their own copies).
const CACHE_OPS: usize = 2048;

/// Ops in an entry (1 for entries without commands).
fn ops_in(e: &Entry) -> usize {
    match &e.payload {
        openraft::EntryPayload::Normal(b) => b.0.iter().map(|c| c.ops.len()).sum::<usize>().max(1),
        _ => 1,
    }
}

fn io_err(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

impl LogStore {
    /// Opens (or creates) the log database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<LogStore> {
        // A small page cache: the log is written far more than read (recent
        // entries are served from memory), and redb's default cache is 1 GiB.
        let db = Database::builder().set_cache_size(4 << 20).create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(LOGS)?;
        tx.open_table(META)?;
        tx.commit()?;
        Ok(LogStore {
            db: Arc::new(db),
            cache: Default::default(),
        })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let table = tx.open_table(META).map_err(read_err)?;
        match table.get(key).map_err(read_err)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        durable: bool,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        let mut tx = self.db.begin_write().map_err(write_err)?;
        if !durable {
            tx.set_durability(Durability::None).map_err(write_err)?;
        }
        {
            let mut table = tx.open_table(META).map_err(write_err)?;
            table.insert(key, bytes.as_slice()).map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }

    /// Appends entries outside of Raft (only for `--force-new-cluster`, before
    /// Raft starts), durably.
    pub fn append_direct(&self, entries: Vec<Entry>) -> Result<(), StorageError> {
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = tx.open_table(LOGS).map_err(write_err)?;
            for e in &entries {
                let bytes = serde_json::to_vec(e).map_err(write_err)?;
                table
                    .insert(e.log_id.index, bytes.as_slice())
                    .map_err(write_err)?;
            }
        }
        tx.commit().map_err(write_err)
    }

    /// Index of the last entry in the log, if any.
    pub fn last_log_index(&self) -> Result<Option<u64>, StorageError> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let table = tx.open_table(LOGS).map_err(read_err)?;
        let last = table.last().map_err(read_err)?.map(|(k, _)| k.value());
        Ok(last)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        {
            let cache = self.cache.lock().expect("log cache");
            let first = match bounds.0 {
                Bound::Included(i) => Some(i),
                Bound::Excluded(i) => Some(i + 1),
                Bound::Unbounded => None,
            };
            // The cache holds a contiguous suffix of the log (appends are
            // contiguous; truncate and purge cut its ends), so a range that
            // starts inside it is served whole from memory.
            if let (Some(first), Some((&lowest, _))) = (first, cache.first_key_value()) {
                if first >= lowest {
                    return Ok(cache.range(bounds).map(|(_, e)| e.clone()).collect());
                }
            }
        }
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read().map_err(read_err)?;
            let table = tx.open_table(LOGS).map_err(read_err)?;
            let mut out = Vec::new();
            for item in table.range::<u64>(bounds).map_err(read_err)? {
                let (_, v) = item.map_err(read_err)?;
                out.push(serde_json::from_slice(v.value()).map_err(read_err)?);
            }
            Ok(out)
        })
        .await
        .map_err(read_err)?
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta("last_purged")?;
        let last = {
            let tx = self.db.begin_read().map_err(read_err)?;
            let table = tx.open_table(LOGS).map_err(read_err)?;
            let last = match table.last().map_err(read_err)? {
                Some((_, v)) => Some(
                    serde_json::from_slice::<Entry>(v.value())
                        .map_err(read_err)?
                        .log_id,
                ),
                None => None,
            };
            last
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta("vote", vote, true).map_err(|e| {
            io_err(
                ErrorSubject::Vote,
                ErrorVerb::Write,
                std::io::Error::other(e.to_string()),
            )
        })
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta("committed", &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>("committed")?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let started = std::time::Instant::now();
        let mut encoded = Vec::new();
        let mut fresh = Vec::new();
        for e in entries {
            encoded.push((e.log_id.index, serde_json::to_vec(&e).map_err(write_err)?));
            fresh.push(e);
        }
        let n = encoded.len();
        let bytes: usize = encoded.iter().map(|(_, b)| b.len()).sum();
        let db = self.db.clone();
        let res = tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let tx = db.begin_write().map_err(write_err)?;
            {
                let mut table = tx.open_table(LOGS).map_err(write_err)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice()).map_err(write_err)?;
                }
            }
            tx.commit().map_err(write_err)
        })
        .await
        .map_err(write_err)?;
        match res {
            Ok(()) => {
                {
                    let mut cache = self.cache.lock().expect("log cache");
                    if let Some(first) = fresh.first() {
                        // Overwritten indexes and everything after them are replaced.
                        let stale: Vec<u64> =
                            cache.range(first.log_id.index..).map(|(k, _)| *k).collect();
                        for k in stale {
                            cache.remove(&k);
                        }
                    }
                    for e in fresh {
                        cache.insert(e.log_id.index, e);
                    }
                    let mut ops: usize = cache.values().map(ops_in).sum();
                    while cache.len() > CACHE_ENTRIES || (ops > CACHE_OPS && cache.len() > 1) {
                        if let Some((_, e)) = cache.pop_first() {
                            ops -= ops_in(&e);
                        }
                    }
                }
                callback.log_io_completed(Ok(()));
                tracing::debug!(
                    target: "shoal_store::io",
                    entries = n,
                    bytes,
                    us = started.elapsed().as_micros() as u64,
                    "log append"
                );
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.cache
            .lock()
            .expect("log cache")
            .retain(|k, _| *k < log_id.index);
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = tx.open_table(LOGS).map_err(write_err)?;
            table
                .retain_in::<u64, _>((Bound::Included(log_id.index), Bound::Unbounded), |_, _| {
                    false
                })
                .map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.cache
            .lock()
            .expect("log cache")
            .retain(|k, _| *k > log_id.index);
        let bytes = serde_json::to_vec(&log_id).map_err(write_err)?;
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut meta = tx.open_table(META).map_err(write_err)?;
            meta.insert("last_purged", bytes.as_slice())
                .map_err(write_err)?;
            let mut table = tx.open_table(LOGS).map_err(write_err)?;
            table
                .retain_in::<u64, _>(..=log_id.index, |_, _| false)
                .map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }
}
