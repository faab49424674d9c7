//! Moves a Raft log left by an older shoal (a redb database, `raft.redb`)
//! into the WAL, once, when the WAL does not exist yet.

use crate::log_store::Wal;
use crate::raft_types::{Entry, LogId, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Copies the vote, purge point, committed id and entries of the redb log at
/// `path` into `wal` (durably), then removes `path`.
pub(crate) fn migrate(path: &Path, wal: &mut Wal) -> anyhow::Result<()> {
    let (vote, purged, committed, entries) = {
        let db = Database::open(path)?;
        let tx = db.begin_read()?;
        let meta = tx.open_table(META)?;
        let get = |k: &str| -> anyhow::Result<Option<Vec<u8>>> {
            Ok(meta.get(k)?.map(|v| v.value().to_vec()))
        };
        let vote: Option<Vote> = get("vote")?
            .map(|b| serde_json::from_slice(&b))
            .transpose()?;
        let purged: Option<LogId> = get("last_purged")?
            .map(|b| serde_json::from_slice(&b))
            .transpose()?;
        let committed: Option<LogId> = get("committed")?
            .map(|b| serde_json::from_slice::<Option<LogId>>(&b))
            .transpose()?
            .flatten();
        let logs = tx.open_table(LOGS)?;
        let mut entries = Vec::new();
        for item in logs.iter()? {
            let (_, v) = item?;
            let e: Entry = serde_json::from_slice(v.value())?;
            entries.push((e.log_id, v.value().to_vec()));
        }
        (vote, purged, committed, entries)
    };
    if let Some(p) = purged {
        wal.purge(p)?;
    }
    wal.append(&entries)?;
    wal.committed = committed;
    wal.committed_unwritten = Some(std::time::Instant::now());
    if let Some(v) = vote {
        wal.save_vote(&v)?;
    }
    std::fs::remove_file(path)?;
    tracing::info!(
        entries = entries.len(),
        "moved the Raft log from raft.redb into the WAL"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LogStore, StoreKey};
    use openraft::storage::RaftLogStorage;
    use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};

    #[tokio::test]
    async fn an_old_redb_log_moves_into_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let id = |i| LogId::new(CommittedLeaderId::new(2, 1), i);
        {
            // What the redb log store wrote.
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut meta = tx.open_table(META).unwrap();
                let vote = serde_json::to_vec(&Vote::new_committed(2, 1)).unwrap();
                meta.insert("vote", vote.as_slice()).unwrap();
                let purged = serde_json::to_vec(&id(4)).unwrap();
                meta.insert("last_purged", purged.as_slice()).unwrap();
                let committed = serde_json::to_vec(&Some(id(6))).unwrap();
                meta.insert("committed", committed.as_slice()).unwrap();
                let mut logs = tx.open_table(LOGS).unwrap();
                for i in 5..=7u64 {
                    let e = Entry {
                        log_id: id(i),
                        payload: EntryPayload::Blank,
                    };
                    logs.insert(i, serde_json::to_vec(&e).unwrap().as_slice())
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        }
        let key = StoreKey::generate();
        for _ in 0..2 {
            // Moved once; the second open reads the WAL alone.
            let mut log = LogStore::open(dir.path(), std::slice::from_ref(&key)).unwrap();
            assert!(!path.exists());
            let state = log.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(id(4)));
            assert_eq!(state.last_log_id, Some(id(7)));
            assert_eq!(
                log.read_vote().await.unwrap(),
                Some(Vote::new_committed(2, 1))
            );
            assert_eq!(log.read_committed().await.unwrap(), Some(id(6)));
            let got = log.try_get_log_entries(5..=7).await.unwrap();
            assert_eq!(
                got.iter().map(|e| e.log_id).collect::<Vec<_>>(),
                vec![id(5), id(6), id(7)]
            );
        }
    }
}
