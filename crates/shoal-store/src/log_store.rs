//! The durable Raft log and vote: a write-ahead log (WAL) of segment files
//! under `wal/`, every record sealed with the store's data key.
//!
//! Why not a database: an append must be durable before openraft hears of
//! it, and a redb transaction per append cost ≈ 0.4–0.5 ms here (several
//! pages and syncs per commit) against ≈ 0.12 ms for one record written into
//! a zero-filled file and `fdatasync`ed (BENCHMARKS.md). Every Raft write
//! waits for two of these (the leader's and a follower's).
//!
//! Layout: segments `NNNNNNNNNNNNNNNNNNNN.wal`, numbered in order, each a
//! 32-byte header (`SHOALWAL`, version, number) followed by records. Segment
//! files are filled with zeros before use (a spare is prepared in the
//! background), so an append overwrites allocated blocks and its sync
//! carries no size or extent change; a zero length word ends a segment.
//!
//! A record is `u32 length ‖ kind ‖ index ‖ term ‖ node ‖ nonce ‖ sealed
//! payload ‖ tag`; the header fields are authenticated with the payload. The
//! kinds: an entry (JSON), the vote, the committed id (a hint, written
//! without a sync), the purge point, and a truncation point.
//! Replaying every record in order rebuilds the log's index; a new segment
//! starts with the vote, purge point and committed id, so whole segments
//! whose entries are all purged can be deleted. A record that does not
//! authenticate ends the log if it is in the last segment (a torn write that
//! was never acknowledged) and is an error anywhere else.

use crate::crypt::{Cipher, KeyId, StoreKey, NONCE, TAG_LEN};
use crate::raft_types::{Entry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{CommittedLeaderId, ErrorSubject, ErrorVerb, RaftLogReader};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::fs::File;
use std::io::Write;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const MAGIC: &[u8; 8] = b"SHOALWAL";
const VERSION: u32 = 1;
const SEG_HEADER: u64 = 32;
/// kind ‖ index ‖ term ‖ node: the authenticated record header.
const HEAD: usize = 1 + 8 + 8 + 8;
/// The smallest valid record after its length word.
const MIN_BODY: usize = HEAD + NONCE + TAG_LEN;
/// A fresh store's first segment is small (most test clusters never fill
/// one); later segments have the full size.
const FIRST_SEGMENT: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Entry = 1,
    Vote = 2,
    Committed = 3,
    Purged = 4,
    Truncate = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Entry,
            2 => Kind::Vote,
            3 => Kind::Committed,
            4 => Kind::Purged,
            5 => Kind::Truncate,
            _ => return None,
        })
    }
}

/// Segment size (`SHOAL_WAL_SEGMENT_BYTES` overrides it, e.g. so tests roll
/// segments over often).
fn segment_bytes() -> u64 {
    std::env::var("SHOAL_WAL_SEGMENT_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16 << 20u64)
        .max(64 << 10)
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

/// The newest entries (a contiguous suffix of the log) and their ops in all,
/// kept up to date at every change rather than summed at every append.
#[derive(Default)]
struct Recent {
    entries: BTreeMap<u64, Entry>,
    ops: usize,
}

impl Recent {
    /// Adds `fresh` (in order), replacing the entries from its first index
    /// on, then drops the oldest beyond the limits.
    fn append(&mut self, fresh: Vec<Entry>) {
        if let Some(first) = fresh.first() {
            let stale = self.entries.split_off(&first.log_id.index);
            self.ops -= stale.values().map(ops_in).sum::<usize>();
        }
        for e in fresh {
            self.ops += ops_in(&e);
            if let Some(old) = self.entries.insert(e.log_id.index, e) {
                self.ops -= ops_in(&old);
            }
        }
        while self.entries.len() > CACHE_ENTRIES || (self.ops > CACHE_OPS && self.entries.len() > 1)
        {
            if let Some((_, e)) = self.entries.pop_first() {
                self.ops -= ops_in(&e);
            }
        }
    }

    /// Keeps only the entries whose index passes `keep`.
    fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.entries.retain(|k, _| keep(*k));
        self.ops = self.entries.values().map(ops_in).sum();
    }

    fn clear(&mut self) {
        *self = Recent::default();
    }
}

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}

fn read_err(e: impl ToString) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl ToString) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

fn vote_err(e: impl ToString) -> StorageError {
    io_err(ErrorSubject::Vote, ErrorVerb::Write, e)
}

/// Where an entry's record is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    seq: u64,
    off: u64,
    len: u32,
    log_id: LogId,
}

struct Segment {
    file: File,
    size: u64,
    /// The key its records are sealed with.
    key: KeyId,
}

/// The WAL's state; one writer at a time (behind the store's mutex).
pub(crate) struct Wal {
    dir: PathBuf,
    /// The key new records are sealed with, and every key segments may use.
    current: KeyId,
    keys: Vec<(KeyId, Cipher)>,
    segs: BTreeMap<u64, Segment>,
    /// Number of the segment being written, and the next write offset in it.
    active: u64,
    off: u64,
    seg_size: u64,
    /// Entries in the log, contiguous by index.
    locs: VecDeque<Loc>,
    vote: Option<Vote>,
    pub(crate) committed: Option<LogId>,
    /// Since when `committed` has been waiting to be written (`None`:
    /// written).
    pub(crate) committed_unwritten: Option<std::time::Instant>,
    purged: Option<LogId>,
    /// A zero-filled spare segment being prepared.
    spare: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn spare_path(dir: &Path) -> PathBuf {
    dir.join("spare.tmp")
}

/// Creates `path` as `size` zero bytes, synced.
fn zero_file(path: &Path, size: u64) -> std::io::Result<File> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(f)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn record_head(kind: Kind, index: u64, term: u64, node: u64) -> [u8; HEAD] {
    let mut h = [0u8; HEAD];
    h[0] = kind as u8;
    h[1..9].copy_from_slice(&index.to_le_bytes());
    h[9..17].copy_from_slice(&term.to_le_bytes());
    h[17..25].copy_from_slice(&node.to_le_bytes());
    h
}

/// A record read back: its kind, header ids and payload.
struct Record<'a> {
    kind: Kind,
    index: u64,
    term: u64,
    node: u64,
    payload: &'a [u8],
}

/// Decodes the record whose length word is at `buf[0..4]`; `Ok(None)` at
/// the end of a segment's records, `Err` for one that does not open.
fn decode<'a>(cipher: &Cipher, buf: &'a mut [u8]) -> Result<Option<(Record<'a>, usize)>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if len == 0 {
        return Ok(None);
    }
    if len < MIN_BODY || 4 + len > buf.len() {
        return Err(format!("record length {len} out of bounds"));
    }
    let body = &mut buf[4..4 + len];
    let (head, sealed) = body.split_at_mut(HEAD);
    let kind = Kind::from_u8(head[0]).ok_or_else(|| format!("unknown record kind {}", head[0]))?;
    let word = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("8 bytes"));
    let (index, term, node) = (word(1), word(9), word(17));
    let payload = cipher
        .open_in_place(head, sealed)
        .ok_or("record does not open with the data key")?;
    Ok(Some((
        Record {
            kind,
            index,
            term,
            node,
            payload,
        },
        4 + len,
    )))
}

impl Wal {
    /// Appends one record for `kind` to `out`.
    fn encode(&self, out: &mut Vec<u8>, kind: Kind, id: (u64, u64, u64), plain: &[u8]) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        let head = record_head(kind, id.0, id.1, id.2);
        out.extend_from_slice(&head);
        self.cipher(self.current)
            .expect("the current key is in the ring")
            .seal_append(&head, plain, out);
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    fn encode_json<T: serde::Serialize>(&self, out: &mut Vec<u8>, kind: Kind, v: &T) {
        let plain = serde_json::to_vec(v).expect("serializable");
        self.encode(out, kind, (0, 0, 0), &plain);
    }

    /// The records that restate the log's state at the head of a segment.
    fn state_records(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(v) = &self.vote {
            self.encode_json(&mut out, Kind::Vote, v);
        }
        if let Some(p) = &self.purged {
            self.encode_json(&mut out, Kind::Purged, p);
        }
        if self.committed.is_some() {
            self.encode_json(&mut out, Kind::Committed, &self.committed);
        }
        out
    }

    fn last_index(&self) -> Option<u64> {
        self.locs.back().map(|l| l.log_id.index)
    }

    fn cipher(&self, id: KeyId) -> Option<&Cipher> {
        self.keys.iter().find(|(k, _)| *k == id).map(|(_, c)| c)
    }

    /// The keys segments use now.
    #[cfg(test)]
    fn keys_in_use(&self) -> Vec<KeyId> {
        let mut ids: Vec<KeyId> = self.segs.values().map(|s| s.key).collect();
        ids.dedup();
        ids
    }

    /// Re-seals the whole log with `key`: a new segment restates the state
    /// and every entry under it, then the older segments are deleted (a
    /// crash in between replays the same entries twice, harmlessly, as
    /// long as the old key is still given).
    pub(crate) fn rekey(&mut self, key: &StoreKey) -> std::io::Result<()> {
        let id = key.id();
        if self.cipher(id).is_none() {
            self.keys.push((id, key.cipher()));
        }
        let mut plain = Vec::with_capacity(self.locs.len());
        let locs: Vec<Loc> = self.locs.iter().copied().collect();
        let mut buf = Vec::new();
        for l in &locs {
            let rec = self
                .read_record(l, &mut buf)
                .map_err(std::io::Error::other)?;
            plain.push(rec);
        }
        self.current = id;
        let mut out = Vec::new();
        let mut spans = Vec::with_capacity(locs.len());
        for (l, json) in locs.iter().zip(&plain) {
            let start = out.len();
            let i = l.log_id;
            self.encode(
                &mut out,
                Kind::Entry,
                (i.index, i.leader_id.term, i.leader_id.node_id),
                json,
            );
            spans.push((start, out.len() - start, i));
        }
        let old: Vec<u64> = self.segs.keys().copied().collect();
        let need = SEG_HEADER + self.state_records().len() as u64 + out.len() as u64;
        self.new_segment(self.active + 1, self.seg_size.max(need), false)?;
        let at = self.write(out, true)?;
        self.locs = spans
            .into_iter()
            .map(|(start, len, log_id)| Loc {
                seq: self.active,
                off: at + start as u64,
                len: len as u32,
                log_id,
            })
            .collect();
        for seq in old {
            self.segs.remove(&seq);
            std::fs::remove_file(seg_path(&self.dir, seq))?;
        }
        self.keys.retain(|(k, _)| *k == id);
        Ok(())
    }

    /// Opens the WAL in `dir` (segments of `seg_size` bytes), replaying
    /// every record.
    /// `keys[0]` seals new records; the others may open older segments.
    fn open(dir: &Path, keys: &[StoreKey], seg_size: u64) -> anyhow::Result<Wal> {
        let current = keys
            .first()
            .ok_or_else(|| anyhow::anyhow!("no data key"))?
            .id();
        std::fs::create_dir_all(dir)?;
        let _ = std::fs::remove_file(spare_path(dir));
        let mut seqs: Vec<u64> = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_suffix(".wal").and_then(|n| n.parse().ok()) {
                seqs.push(n);
            }
        }
        seqs.sort_unstable();
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            current,
            keys: keys.iter().map(|k| (k.id(), k.cipher())).collect(),
            segs: BTreeMap::new(),
            active: 0,
            off: 0,
            seg_size,
            locs: VecDeque::new(),
            vote: None,
            committed: None,
            committed_unwritten: None,
            purged: None,
            spare: None,
        };
        let count = seqs.len();
        for (i, seq) in seqs.into_iter().enumerate() {
            let last = i + 1 == count;
            let path = seg_path(dir, seq);
            let mut bytes = std::fs::read(&path)?;
            let header_ok = bytes.len() as u64 >= SEG_HEADER
                && &bytes[..8] == MAGIC
                && bytes[8..12] == VERSION.to_le_bytes()
                && bytes[12..20] == seq.to_le_bytes();
            if !header_ok {
                if last && bytes.iter().all(|b| *b == 0) {
                    // Made at a rollover that did not finish: nothing in it.
                    tracing::warn!(path = %path.display(), "removing an unused WAL segment");
                    std::fs::remove_file(&path)?;
                    continue;
                }
                anyhow::bail!("{}: not a shoal WAL segment", path.display());
            }
            let key = KeyId(bytes[20..28].try_into().expect("8 bytes"));
            let Some(k) = wal.keys.iter().position(|(id, _)| *id == key) else {
                anyhow::bail!(
                    "{}: sealed with a data key this node does not have",
                    path.display()
                );
            };
            let mut pos = SEG_HEADER as usize;
            loop {
                match decode(&wal.keys[k].1, &mut bytes[pos..]) {
                    Ok(Some((rec, used))) => {
                        wal.replay(seq, pos as u64, used as u32, rec)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                        pos += used;
                    }
                    Ok(None) => break,
                    Err(e) if last => {
                        tracing::warn!(path = %path.display(), offset = pos, error = %e,
                            "the WAL ends with a record that was never completed; dropping it");
                        // Zero what follows, so that later appends are not
                        // followed by the remnants of unacknowledged writes.
                        if let Some(end) = bytes[pos..].iter().rposition(|b| *b != 0) {
                            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                            f.write_all_at(&vec![0u8; end + 1], pos as u64)?;
                            f.sync_data()?;
                        }
                        break;
                    }
                    Err(e) => anyhow::bail!("{}: offset {pos}: {e}", path.display()),
                }
            }
            let size = bytes.len() as u64;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)?;
            wal.segs.insert(seq, Segment { file, size, key });
            wal.active = seq;
            wal.off = pos as u64;
        }
        if wal.segs.is_empty() {
            wal.new_segment(1, FIRST_SEGMENT.min(wal.seg_size), false)?;
        }
        Ok(wal)
    }

    /// Applies one replayed record to the in-memory state.
    fn replay(&mut self, seq: u64, off: u64, len: u32, rec: Record<'_>) -> Result<(), String> {
        let json = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        match rec.kind {
            Kind::Entry => {
                let log_id = LogId::new(CommittedLeaderId::new(rec.term, rec.node), rec.index);
                if self.purged.is_some_and(|p| rec.index <= p.index) {
                    return Ok(());
                }
                if let Some(last) = self.last_index() {
                    if rec.index > last + 1 {
                        return Err(format!("entry {} follows entry {last}", rec.index));
                    }
                    self.cut_from(rec.index);
                }
                self.locs.push_back(Loc {
                    seq,
                    off,
                    len,
                    log_id,
                });
            }
            Kind::Vote => {
                self.vote = Some(
                    serde_json::from_slice(rec.payload)
                        .map_err(|e| format!("vote record {}: {e}", json(rec.payload)))?,
                );
            }
            Kind::Committed => {
                self.committed = serde_json::from_slice(rec.payload)
                    .map_err(|e| format!("committed record: {e}"))?;
            }
            Kind::Purged => {
                let p: LogId = serde_json::from_slice(rec.payload)
                    .map_err(|e| format!("purge record: {e}"))?;
                self.purge_index(p);
            }
            Kind::Truncate => self.cut_from(rec.index),
        }
        Ok(())
    }

    /// Drops entries from `index` on from the index.
    fn cut_from(&mut self, index: u64) {
        while self.locs.back().is_some_and(|l| l.log_id.index >= index) {
            self.locs.pop_back();
        }
    }

    fn purge_index(&mut self, upto: LogId) {
        while self
            .locs
            .front()
            .is_some_and(|l| l.log_id.index <= upto.index)
        {
            self.locs.pop_front();
        }
        if self.purged.is_none_or(|p| p.index < upto.index) {
            self.purged = Some(upto);
        }
    }

    /// Starts segment `seq` (`size` bytes, from the spare when it fits) and
    /// writes its header and the state records.
    fn new_segment(&mut self, seq: u64, size: u64, use_spare: bool) -> std::io::Result<()> {
        let path = seg_path(&self.dir, seq);
        let spare = if use_spare {
            self.spare.take().map(|h| h.join())
        } else {
            None
        };
        let file = match spare {
            Some(Ok(Ok(()))) if size == self.seg_size => {
                std::fs::rename(spare_path(&self.dir), &path)?;
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)?
            }
            _ => zero_file(&path, size)?,
        };
        let mut head = Vec::with_capacity(SEG_HEADER as usize);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&seq.to_le_bytes());
        head.extend_from_slice(&self.current.0);
        head.resize(SEG_HEADER as usize, 0);
        let state = self.state_records();
        self.committed_unwritten = None;
        head.extend_from_slice(&state);
        file.write_all_at(&head, 0)?;
        file.sync_data()?;
        sync_dir(&self.dir)?;
        self.segs.insert(
            seq,
            Segment {
                file,
                size,
                key: self.current,
            },
        );
        self.active = seq;
        self.off = head.len() as u64;
        Ok(())
    }

    /// Writes `buf` (whole records) at the end of the log, in a new segment
    /// if it does not fit; synced when `sync`.
    fn write(&mut self, mut buf: Vec<u8>, sync: bool) -> std::io::Result<u64> {
        if self.committed_unwritten.is_some() && self.committed.is_some() {
            let mut with = Vec::new();
            self.encode_json(&mut with, Kind::Committed, &self.committed);
            with.extend_from_slice(&buf);
            buf = with;
            self.committed_unwritten = None;
        }
        let size = self.segs[&self.active].size;
        if self.off + buf.len() as u64 > size {
            let need = SEG_HEADER + self.state_records().len() as u64 + buf.len() as u64;
            self.new_segment(self.active + 1, self.seg_size.max(need), true)?;
        }
        let at = self.off;
        let seg = &self.segs[&self.active];
        seg.file.write_all_at(&buf, at)?;
        if sync {
            seg.file.sync_data()?;
        }
        self.off += buf.len() as u64;
        // Prepare the next segment once this one is half full.
        if self.spare.is_none() && self.off > seg.size / 2 {
            let (path, size) = (spare_path(&self.dir), self.seg_size);
            self.spare = Some(std::thread::spawn(move || zero_file(&path, size).map(drop)));
        }
        Ok(at)
    }

    /// Appends entries (already encoded as `(entry, json)`), durably.
    pub(crate) fn append<J: AsRef<[u8]>>(&mut self, entries: &[(LogId, J)]) -> std::io::Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut buf = Vec::with_capacity(entries.iter().map(|(_, j)| j.as_ref().len() + 64).sum());
        if self.last_index().is_some_and(|l| first.0.index <= l) {
            self.encode(&mut buf, Kind::Truncate, (first.0.index, 0, 0), &[]);
        }
        let mut spans = Vec::with_capacity(entries.len());
        for (id, json) in entries {
            let start = buf.len();
            self.encode(
                &mut buf,
                Kind::Entry,
                (id.index, id.leader_id.term, id.leader_id.node_id),
                json.as_ref(),
            );
            spans.push((start, buf.len() - start, *id));
        }
        let total = buf.len();
        let at = self.write(buf, true)?;
        // `write` may have put a committed record before ours.
        let shift = self.off - at - total as u64;
        self.cut_from(first.0.index);
        for (start, len, log_id) in spans {
            self.locs.push_back(Loc {
                seq: self.active,
                off: at + shift + start as u64,
                len: len as u32,
                log_id,
            });
        }
        Ok(())
    }

    pub(crate) fn save_vote(&mut self, vote: &Vote) -> std::io::Result<()> {
        let mut buf = Vec::new();
        self.encode_json(&mut buf, Kind::Vote, vote);
        self.write(buf, true)?;
        self.vote = Some(*vote);
        Ok(())
    }

    fn truncate(&mut self, index: u64) -> std::io::Result<()> {
        if self.last_index().is_none_or(|l| l < index) {
            return Ok(());
        }
        let mut buf = Vec::new();
        self.encode(&mut buf, Kind::Truncate, (index, 0, 0), &[]);
        self.write(buf, true)?;
        self.cut_from(index);
        Ok(())
    }

    pub(crate) fn purge(&mut self, upto: LogId) -> std::io::Result<()> {
        let mut buf = Vec::new();
        self.encode_json(&mut buf, Kind::Purged, &upto);
        self.write(buf, true)?;
        self.purge_index(upto);
        // Whole segments before the first kept entry hold nothing needed.
        let keep_from = self.locs.front().map_or(self.active, |l| l.seq);
        let old: Vec<u64> = self.segs.range(..keep_from).map(|(s, _)| *s).collect();
        for seq in old {
            self.segs.remove(&seq);
            std::fs::remove_file(seg_path(&self.dir, seq))?;
        }
        Ok(())
    }

    /// Reads the payload of the record at `l` (into `buf`).
    fn read_record(&self, l: &Loc, buf: &mut Vec<u8>) -> Result<Vec<u8>, String> {
        let seg = self
            .segs
            .get(&l.seq)
            .ok_or_else(|| format!("segment {} is gone", l.seq))?;
        let cipher = self
            .cipher(seg.key)
            .ok_or_else(|| format!("segment {}: no key", l.seq))?;
        buf.resize(l.len as usize, 0);
        seg.file
            .read_exact_at(buf, l.off)
            .map_err(|e| e.to_string())?;
        let (rec, _) =
            decode(cipher, buf)?.ok_or_else(|| format!("no record at {}:{}", l.seq, l.off))?;
        Ok(rec.payload.to_vec())
    }

    /// Reads the entries at `locs` from disk.
    fn read(&self, locs: &[Loc]) -> Result<Vec<Entry>, String> {
        let mut out = Vec::with_capacity(locs.len());
        let mut buf = Vec::new();
        for l in locs {
            let payload = self.read_record(l, &mut buf)?;
            out.push(serde_json::from_slice(&payload).map_err(|e| e.to_string())?);
        }
        Ok(out)
    }
}

/// Entries this manager, as leader, is about to write to its log: what an
/// AppendEntries request carrying them would say. Handed to the
/// [`LeaderAppends`] observer before the write, so the network can send them
/// to followers while the leader's own write and sync run.
pub struct LeaderAppend {
    /// The leader's vote (committed, ours).
    pub vote: Vote,
    /// The entry before the first one.
    pub prev_log_id: Option<LogId>,
    /// The newest committed log id this log knows (a hint; may lag).
    pub leader_commit: Option<LogId>,
    /// The entries, in order, with their JSON.
    pub entries: Vec<(LogId, Arc<[u8]>)>,
}

/// Told of every append this manager makes as leader (see [`LeaderAppend`]).
/// Called on RaftCore's task: must not block.
pub trait LeaderAppends: Send + Sync {
    fn appending(&self, append: LeaderAppend);
}

/// This manager's Raft ID and the observer of its leader appends.
type Observer = Arc<std::sync::OnceLock<(u64, Arc<dyn LeaderAppends>)>>;

/// The log store. Cheap to clone (shares the WAL).
#[derive(Clone)]
pub struct LogStore {
    wal: Arc<Mutex<Wal>>,
    /// The newest entries, so replication reads them without a disk read
    /// and a decode (followers ask for what was just appended).
    cache: Arc<Mutex<Recent>>,
    /// The JSON of the newest entries, shared with the Raft network.
    encoded: crate::EncodedEntries,
    observer: Observer,
    /// Moving average of recent appends' write and sync, in µs (see
    /// [`INLINE_MAX_US`]).
    append_us: Arc<std::sync::atomic::AtomicU64>,
    /// Moving average of the appended entries' size, in bytes (for the
    /// snapshot policy, [`crate::snapshot_due`]).
    entry_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// Wakes the task that writes a committed hint no append carried (see
    /// [`HINT_DELAY`]); started at the first hint.
    hints: Arc<std::sync::OnceLock<Arc<tokio::sync::Notify>>>,
}

/// How long the committed hint waits for the next record to carry it before
/// it is written on its own.
const HINT_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

/// Writes the committed hint when no other record carried it within
/// [`HINT_DELAY`]; ends with the log store.
async fn write_late_hints(wal: std::sync::Weak<Mutex<Wal>>, wake: Arc<tokio::sync::Notify>) {
    loop {
        wake.notified().await;
        loop {
            tokio::time::sleep(HINT_DELAY).await;
            let Some(wal) = wal.upgrade() else { return };
            // Busy: an append is being written, which may carry it.
            let Ok(mut w) = wal.try_lock() else { continue };
            let Some(since) = w.committed_unwritten else {
                break;
            };
            if since.elapsed() >= HINT_DELAY {
                if let Err(e) = w.write(Vec::new(), false) {
                    tracing::warn!(error = %e, "writing the committed index hint");
                }
                break;
            }
        }
    }
}

/// A follower writes and syncs its appends on RaftCore's thread while they
/// take less than this on average (µs), instead of on the blocking pool: a
/// follower's sync is in every write's latency, and the two thread hand-offs
/// around it cost ≈ 50–100 µs here; a slow disk would hold the runtime up
/// for too long, so it then goes back to the pool.
const INLINE_MAX_US: u64 = 1000;
/// ...and while they are small (a few writes each): big batches come with
/// heavy write loads, when the runtime has other work (a follower serving
/// 64 writers lost 8 % of its throughput with big appends inline too).
const INLINE_MAX_BYTES: usize = 4096;

impl LogStore {
    /// Opens (or creates) the log in `raft_dir/wal`; `keys[0]` seals new
    /// records, the others may open older ones. A log left by an older
    /// shoal in `raft_dir/raft.redb` is moved into it.
    pub fn open(raft_dir: &Path, keys: &[StoreKey]) -> anyhow::Result<LogStore> {
        let dir = raft_dir.join("wal");
        let legacy = raft_dir.join("raft.redb");
        let fresh = !dir.exists();
        let wal = Wal::open(&dir, keys, segment_bytes())?;
        let store = LogStore {
            wal: Arc::new(Mutex::new(wal)),
            cache: Default::default(),
            encoded: Default::default(),
            observer: Default::default(),
            append_us: Default::default(),
            entry_bytes: Default::default(),
            hints: Default::default(),
        };
        if fresh && legacy.exists() {
            crate::legacy::migrate(&legacy, &mut store.wal())?;
        }
        Ok(store)
    }

    /// The JSON of the entries this log appends, as it makes it (the Raft
    /// network sends the same bytes to followers).
    pub fn encoded(&self) -> crate::EncodedEntries {
        self.encoded.clone()
    }

    /// The average size of recently appended entries, in bytes (0 before
    /// any append).
    pub fn avg_entry_bytes(&self) -> u64 {
        self.entry_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Tells `observer` of every append made while `me` (this manager's
    /// Raft ID) is leader, before it is written. Set once; later calls are
    /// ignored.
    pub fn observe_leader_appends(&self, me: u64, observer: Arc<dyn LeaderAppends>) {
        let _ = self.observer.set((me, observer));
    }

    /// What to tell the observer of `entries`, if they are this manager's
    /// own entries as leader, appended at the end of the log.
    fn leader_append(&self, me: u64, entries: &[(LogId, Arc<[u8]>)]) -> Option<LeaderAppend> {
        let first = entries.first()?.0;
        if first.leader_id.node_id != me {
            // A follower's append (the common case there): no lock needed.
            return None;
        }
        let wal = self.wal();
        let vote = wal.vote?;
        if !vote.is_committed() || vote.leader_id().voted_for() != Some(me) {
            return None;
        }
        let leader = CommittedLeaderId::new(vote.leader_id().get_term(), me);
        let prev_log_id = wal.locs.back().map(|l| l.log_id).or(wal.purged);
        let next = prev_log_id.map_or(0, |p| p.index + 1);
        let in_order = entries
            .iter()
            .enumerate()
            .all(|(i, (id, _))| id.leader_id == leader && id.index == next + i as u64);
        if first.index != next || !in_order {
            return None;
        }
        Some(LeaderAppend {
            vote,
            prev_log_id,
            leader_commit: wal.committed,
            entries: entries.to_vec(),
        })
    }

    fn wal(&self) -> std::sync::MutexGuard<'_, Wal> {
        self.wal.lock().expect("wal lock")
    }

    /// Appends entries outside of Raft (`--force-new-cluster`, before Raft
    /// starts), durably.
    pub fn append_direct(&self, entries: Vec<Entry>) -> Result<(), StorageError> {
        let encoded = entries
            .iter()
            .map(|e| serde_json::to_vec(e).map(|j| (e.log_id, j)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(write_err)?;
        self.cache.lock().expect("log cache").clear();
        self.wal().append(&encoded).map_err(write_err)
    }

    /// Re-seals the whole log with `key` (see [`Wal::rekey`]).
    pub async fn rekey(&self, key: StoreKey) -> anyhow::Result<()> {
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || wal.lock().expect("wal lock").rekey(&key)).await??;
        Ok(())
    }

    /// Index of the last entry in the log, if any.
    pub fn last_log_index(&self) -> Option<u64> {
        self.wal().last_index()
    }
}

/// Most bytes of entries (as encoded) that one AppendEntries carries,
/// beyond its first entry. openraft 0.9 cuts an AppendEntries off after the
/// heartbeat interval (50 ms), sending and the follower's write and sync
/// included, and asks for up to 300 entries at a time: a follower catching
/// up on entries of batched writes (≈ 70 configs each at 64 writers) was
/// sent 6 MB requests that never finished in time, and never caught up.
const REPLICATION_BYTES: usize = 256 << 10;

/// The size assumed for an op whose entry's encoding is not at hand.
const OP_BYTES_GUESS: usize = 512;

impl LogStore {
    /// Entries in `bounds` from memory, if the range starts in the cache:
    /// all of them, or with `budget` as many as fit in that many encoded
    /// bytes (at least one).
    fn cached_entries(
        &self,
        bounds: (Bound<u64>, Bound<u64>),
        budget: Option<usize>,
    ) -> Option<Vec<Entry>> {
        let cache = self.cache.lock().expect("log cache");
        let first = match bounds.0 {
            Bound::Included(i) => i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => return None,
        };
        // The cache holds a contiguous suffix of the log (appends are
        // contiguous; truncate and purge cut its ends), so a range that
        // starts inside it is served whole from memory.
        let (&lowest, _) = cache.entries.first_key_value()?;
        if first < lowest {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for (_, e) in cache.entries.range(bounds) {
            if let Some(budget) = budget {
                let size = self
                    .encoded
                    .size_of(&e.log_id)
                    .unwrap_or(ops_in(e) * OP_BYTES_GUESS);
                if !out.is_empty() && bytes + size > budget {
                    break;
                }
                bytes += size;
            }
            out.push(e.clone());
        }
        Some(out)
    }

    /// Entries in `bounds` read from the WAL: all of them, or with `budget`
    /// as many as fit in that many bytes of records (at least one).
    async fn wal_entries(
        &self,
        bounds: (Bound<u64>, Bound<u64>),
        budget: Option<usize>,
    ) -> Result<Vec<Entry>, StorageError> {
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || {
            let wal = wal.lock().expect("wal lock");
            let mut bytes = 0;
            let locs: Vec<Loc> = wal
                .locs
                .iter()
                .filter(|l| bounds.contains(&l.log_id.index))
                .take_while(|l| {
                    let Some(budget) = budget else { return true };
                    let fits = bytes == 0 || bytes + l.len as usize <= budget;
                    bytes += l.len as usize;
                    fits
                })
                .copied()
                .collect();
            wal.read(&locs).map_err(read_err)
        })
        .await
        .map_err(read_err)?
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        match self.cached_entries(bounds, None) {
            Some(entries) => Ok(entries),
            None => self.wal_entries(bounds, None).await,
        }
    }

    /// What replication sends: at most [`REPLICATION_BYTES`] of entries.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let bounds = (Bound::Included(start), Bound::Excluded(end));
        let budget = Some(REPLICATION_BYTES);
        match self.cached_entries(bounds, budget) {
            Some(entries) => Ok(entries),
            None => self.wal_entries(bounds, budget).await,
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let wal = self.wal();
        let last = wal.locs.back().map(|l| l.log_id);
        Ok(LogState {
            last_purged_log_id: wal.purged,
            last_log_id: last.or(wal.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let wal = self.wal.clone();
        let vote = *vote;
        tokio::task::spawn_blocking(move || wal.lock().expect("wal lock").save_vote(&vote))
            .await
            .map_err(vote_err)?
            .map_err(vote_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.wal().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // A hint, written without a sync: it survives a killed process (it
        // is in the page cache), so a restarted manager re-applies up to it
        // at once instead of serving older state until it hears from a
        // leader. It goes with the next record written (usually the next
        // append, a moment later), saving a syscall on RaftCore's thread per
        // commit on every manager, or on its own after `HINT_DELAY`.
        {
            let mut wal = self.wal();
            wal.committed = committed;
            wal.committed_unwritten
                .get_or_insert_with(std::time::Instant::now);
        }
        self.hints
            .get_or_init(|| {
                let wake = Arc::new(tokio::sync::Notify::new());
                tokio::spawn(write_late_hints(Arc::downgrade(&self.wal), wake.clone()));
                wake
            })
            .notify_one();
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.wal().committed)
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
            encoded.push((e.log_id, self.encoded.get(&e)));
            fresh.push(e);
        }
        let n = encoded.len();
        let bytes: usize = encoded.iter().map(|(_, b)| b.len()).sum();
        if let Some(per) = bytes.checked_div(n).map(|b| b as u64) {
            let old = self.entry_bytes.load(std::sync::atomic::Ordering::Relaxed);
            let avg = if old == 0 { per } else { (old * 15 + per) / 16 };
            self.entry_bytes
                .store(avg, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some((me, observer)) = self.observer.get() {
            if let Some(append) = self.leader_append(*me, &encoded) {
                observer.appending(append);
            }
        }
        // The leader's appends go to the blocking pool, not RaftCore's
        // runtime thread: writing inline made a lone sequential writer
        // faster, but under a burst (1,000 task starts) a leader's runtime
        // stuck in fsync slowed the dispatcher and everything else on it
        // (3.1–3.2 s → 4.0–4.1 s; BENCHMARKS.md). A follower's append is
        // written inline while syncs are quick (see `INLINE_MAX_US`).
        let follower = self.observer.get().is_some_and(|(me, _)| {
            encoded
                .first()
                .is_some_and(|(id, _)| id.leader_id.node_id != *me)
        });
        let avg = self.append_us.load(std::sync::atomic::Ordering::Relaxed);
        let wal = self.wal.clone();
        let took = std::time::Instant::now();
        // Inline only if the WAL is free: a long holder (a re-key, a read
        // of old entries) must not stop the runtime thread.
        let inline = (follower && avg < INLINE_MAX_US && bytes <= INLINE_MAX_BYTES)
            .then(|| wal.try_lock().ok().map(|mut w| w.append(&encoded)))
            .flatten();
        let res = match inline {
            Some(res) => res,
            None => {
                tokio::task::spawn_blocking(move || wal.lock().expect("wal lock").append(&encoded))
                    .await
                    .map_err(write_err)?
            }
        };
        let us = took.elapsed().as_micros() as u64;
        self.append_us
            .store((avg * 7 + us) / 8, std::sync::atomic::Ordering::Relaxed);
        match res {
            Ok(()) => {
                // Overwritten indexes and everything after them are replaced.
                self.cache.lock().expect("log cache").append(fresh);
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
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.cache
            .lock()
            .expect("log cache")
            .retain(|k| k < log_id.index);
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || wal.lock().expect("wal lock").truncate(log_id.index))
            .await
            .map_err(write_err)?
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.cache
            .lock()
            .expect("log cache")
            .retain(|k| k > log_id.index);
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || wal.lock().expect("wal lock").purge(log_id))
            .await
            .map_err(write_err)?
            .map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{EntryPayload, Membership};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// An entry at `index` whose one command deletes `ops` configs.
    fn entry_with_ops(term: u64, index: u64, ops: usize) -> Entry {
        let op = |i: usize| crate::Op::Delete {
            kind: crate::Kind::Config,
            id: format!("c{i}"),
            expect: None,
        };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(crate::Batch(vec![crate::Command {
                ops: (0..ops).map(op).collect(),
                atomic: false,
                request: 0,
            }])),
        }
    }

    /// The cache's running count of ops stays the sum over what it holds
    /// through overwrites, trimming and cuts, and its limits hold.
    #[test]
    fn the_entry_cache_keeps_its_op_count_and_limits() {
        let check = |r: &Recent| {
            assert_eq!(r.ops, r.entries.values().map(ops_in).sum::<usize>());
            assert!(r.entries.len() <= CACHE_ENTRIES);
            assert!(r.ops <= CACHE_OPS || r.entries.len() == 1);
            let keys: Vec<u64> = r.entries.keys().copied().collect();
            assert!(keys.windows(2).all(|w| w[1] == w[0] + 1), "{keys:?}");
        };
        let mut r = Recent::default();
        for i in 1..=100 {
            r.append(vec![entry_with_ops(1, i, (i % 7) as usize)]);
            check(&r);
        }
        assert_eq!(r.entries.len(), CACHE_ENTRIES);
        // A new leader overwrites the last ten entries with two.
        r.append(vec![entry_with_ops(2, 91, 3), entry_with_ops(2, 92, 5)]);
        check(&r);
        assert_eq!(r.entries.keys().last(), Some(&92));
        assert_eq!(r.entries[&92].log_id.leader_id.term, 2);
        // One big entry pushes out the older ones, and stays even alone.
        r.append(vec![entry_with_ops(2, 93, CACHE_OPS - 10)]);
        check(&r);
        assert!(r.entries.len() < 10);
        r.append(vec![entry_with_ops(2, 94, CACHE_OPS + 1)]);
        check(&r);
        assert_eq!(r.entries.len(), 1);
        r.append(vec![entry_with_ops(2, 95, 1), entry_with_ops(2, 96, 1)]);
        check(&r);
        r.retain(|k| k > 94);
        check(&r);
        assert_eq!(r.ops, 2);
        r.clear();
        check(&r);
        assert_eq!(r.ops, 0);
    }

    fn membership_entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Membership(Membership::new(
                vec![std::collections::BTreeSet::from([1])],
                (),
            )),
        }
    }

    fn ids(wal: &Wal) -> Vec<(u64, u64)> {
        wal.locs
            .iter()
            .map(|l| (l.log_id.index, l.log_id.leader_id.term))
            .collect()
    }

    fn append(wal: &mut Wal, es: &[Entry]) {
        let enc: Vec<_> = es
            .iter()
            .map(|e| (e.log_id, serde_json::to_vec(e).unwrap()))
            .collect();
        wal.append(&enc).unwrap();
    }

    #[test]
    fn replays_entries_votes_truncation_and_purge_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        {
            let mut wal = Wal::open(dir.path(), std::slice::from_ref(&key), 64 << 10).unwrap();
            wal.save_vote(&Vote::new(3, 1)).unwrap();
            for i in 1..=1000u64 {
                append(&mut wal, &[entry(1, i)]);
            }
            assert!(wal.segs.len() > 1, "rolled over: {}", wal.segs.len());
            wal.truncate(950).unwrap();
            append(&mut wal, &[entry(2, 950), membership_entry(2, 951)]);
            wal.purge(LogId::new(CommittedLeaderId::new(1, 1), 900))
                .unwrap();
            wal.committed = Some(LogId::new(CommittedLeaderId::new(2, 1), 951));
            wal.committed_unwritten = Some(std::time::Instant::now());
            append(&mut wal, &[entry(2, 952)]);
        }
        let wal = Wal::open(dir.path(), std::slice::from_ref(&key), 64 << 10).unwrap();
        assert_eq!(wal.vote, Some(Vote::new(3, 1)));
        assert_eq!(wal.purged.unwrap().index, 900);
        assert_eq!(wal.committed.unwrap().index, 951);
        let got = ids(&wal);
        assert_eq!(got.first(), Some(&(901, 1)));
        assert_eq!(got.last(), Some(&(952, 2)));
        assert_eq!(got.len(), 52);
        assert!(got.contains(&(950, 2)) && !got.contains(&(950, 1)));
        // Segments holding only purged entries are gone.
        assert!(!seg_path(dir.path(), 1).exists());
        let back = wal.read(&[wal.locs[50]]).unwrap();
        assert!(matches!(back[0].payload, EntryPayload::Membership(_)));
        // Another key does not open it.
        assert!(Wal::open(dir.path(), &[StoreKey::generate()], 64 << 10).is_err());
    }

    #[test]
    fn a_torn_tail_ends_the_log_and_later_appends_survive() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        let (seq, off) = {
            let mut wal = Wal::open(dir.path(), std::slice::from_ref(&key), 64 << 10).unwrap();
            append(&mut wal, &[entry(1, 1), entry(1, 2)]);
            (wal.active, wal.off)
        };
        // A record half written when the machine died.
        let path = seg_path(dir.path(), seq);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[200, 0, 0, 0, 1, 3, 0, 0], off).unwrap();
        {
            let mut wal = Wal::open(dir.path(), std::slice::from_ref(&key), 64 << 10).unwrap();
            assert_eq!(ids(&wal), vec![(1, 1), (2, 1)]);
            append(&mut wal, &[entry(1, 3)]);
        }
        let wal = Wal::open(dir.path(), std::slice::from_ref(&key), 64 << 10).unwrap();
        assert_eq!(ids(&wal), vec![(1, 1), (2, 1), (3, 1)]);
    }

    #[test]
    fn a_crash_at_any_byte_of_the_last_write_leaves_a_prefix_that_takes_appends() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        let (seq, start, end) = {
            let mut wal = Wal::open(dir.path(), std::slice::from_ref(&key), 64 << 10).unwrap();
            append(&mut wal, &[entry(1, 1), entry(1, 2)]);
            let start = wal.off;
            append(&mut wal, &[entry(1, 3), membership_entry(1, 4)]);
            (wal.active, start, wal.off)
        };
        let path = seg_path(dir.path(), seq);
        let whole = std::fs::read(&path).unwrap();
        for cut in (start..=end).step_by(7) {
            // Everything from `cut` on never reached the disk.
            let mut bytes = whole.clone();
            bytes[cut as usize..end as usize].fill(0);
            std::fs::write(&path, &bytes).unwrap();
            let mut wal = Wal::open(dir.path(), std::slice::from_ref(&key), 64 << 10).unwrap();
            let got = ids(&wal);
            let n = got.len();
            assert!((2..=4).contains(&n), "cut {cut}: {got:?}");
            assert_eq!(got, (1..=n as u64).map(|i| (i, 1)).collect::<Vec<_>>());
            append(&mut wal, &[entry(2, n as u64 + 1)]);
            drop(wal);
            let wal = Wal::open(dir.path(), std::slice::from_ref(&key), 64 << 10).unwrap();
            assert_eq!(ids(&wal).last(), Some(&(n as u64 + 1, 2)), "cut {cut}");
            assert_eq!(ids(&wal).len(), n + 1, "cut {cut}");
        }
    }

    #[test]
    fn rekey_reseals_every_entry_and_retires_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (StoreKey::generate(), StoreKey::generate());
        {
            let mut wal = Wal::open(dir.path(), std::slice::from_ref(&old), 64 << 10).unwrap();
            wal.save_vote(&Vote::new(4, 2)).unwrap();
            for i in 1..=1000u64 {
                append(&mut wal, &[entry(1, i)]);
            }
            wal.purge(LogId::new(CommittedLeaderId::new(1, 1), 10))
                .unwrap();
            assert!(wal.segs.len() > 1);
            wal.rekey(&new).unwrap();
            assert_eq!(wal.keys_in_use(), vec![new.id()]);
            append(&mut wal, &[entry(2, 1001)]);
        }
        // The old key is no longer needed, nor enough.
        assert!(Wal::open(dir.path(), std::slice::from_ref(&old), 64 << 10).is_err());
        let wal = Wal::open(dir.path(), std::slice::from_ref(&new), 64 << 10).unwrap();
        assert_eq!(wal.vote, Some(Vote::new(4, 2)));
        assert_eq!(wal.purged.unwrap().index, 10);
        let got = ids(&wal);
        assert_eq!((got.len(), got[0], got[990]), (991, (11, 1), (1001, 2)));
        assert_eq!(wal.read(&[wal.locs[5]]).unwrap()[0].log_id.index, 16);
    }

    #[test]
    fn damage_before_the_last_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        {
            let mut wal = Wal::open(dir.path(), std::slice::from_ref(&key), 64 << 10).unwrap();
            for i in 1..=1000u64 {
                append(&mut wal, &[entry(1, i)]);
            }
            assert!(wal.segs.len() > 1);
        }
        let first = seg_path(dir.path(), 1);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap();
        f.write_all_at(&[0xff; 8], SEG_HEADER + 40).unwrap();
        let err = Wal::open(dir.path(), std::slice::from_ref(&key), 64 << 10)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("does not open") || err.contains("out of bounds"),
            "{err}"
        );
    }

    /// Only this manager's own entries as leader, appended at the end of
    /// the log under its committed vote, are handed to the observer, with
    /// the previous log id and committed id an AppendEntries would carry.
    #[test]
    fn leader_appends_are_described_only_for_our_own_entries_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), &[StoreKey::generate()]).unwrap();
        let enc = |es: &[Entry]| -> Vec<(LogId, Arc<[u8]>)> {
            es.iter()
                .map(|e| (e.log_id, serde_json::to_vec(e).unwrap().into()))
                .collect()
        };
        // Node 1's entries of term 2, from the log's first index; no vote yet.
        let next = [entry(2, 0), entry(2, 1)];
        assert!(store.leader_append(1, &enc(&next)).is_none());
        // A candidate's vote (not committed) is not a leader's.
        store.wal().save_vote(&Vote::new(2, 1)).unwrap();
        assert!(store.leader_append(1, &enc(&next)).is_none());
        store.wal().save_vote(&Vote::new_committed(2, 1)).unwrap();
        // As node 2 (a follower of node 1), nothing is ours.
        assert!(store.leader_append(2, &enc(&next)).is_none());
        let a = store.leader_append(1, &enc(&next)).expect("ours");
        assert_eq!(a.vote, Vote::new_committed(2, 1));
        assert_eq!(a.prev_log_id, None);
        assert_eq!(a.leader_commit, None);
        assert_eq!(a.entries.len(), 2);

        append(&mut store.wal(), &[entry(1, 0), entry(2, 1)]);
        store.wal().committed = Some(entry(1, 0).log_id);
        let a = store.leader_append(1, &enc(&[entry(2, 2)])).expect("ours");
        assert_eq!(a.prev_log_id, Some(entry(2, 1).log_id));
        assert_eq!(a.leader_commit, Some(entry(1, 0).log_id));
        assert_eq!(
            &a.entries[0].1[..],
            &serde_json::to_vec(&entry(2, 2)).unwrap()[..]
        );
        // An overwrite, a gap, entries of another term or a hole inside the
        // batch: not a plain append at the end.
        assert!(store.leader_append(1, &enc(&[entry(2, 1)])).is_none());
        assert!(store.leader_append(1, &enc(&[entry(2, 3)])).is_none());
        assert!(store.leader_append(1, &enc(&[entry(1, 2)])).is_none());
        assert!(store
            .leader_append(1, &enc(&[entry(2, 2), entry(2, 4)]))
            .is_none());
        // Under a newer leader's vote, our old term's entries are not sent.
        store.wal().save_vote(&Vote::new_committed(3, 2)).unwrap();
        assert!(store.leader_append(1, &enc(&[entry(2, 2)])).is_none());
    }

    /// The committed hint goes with the next record written, or on its own
    /// once it has waited `HINT_DELAY`: either way a reopened log has it.
    /// Replication asks for ranges of up to 300 entries; it gets as many as
    /// fit in `REPLICATION_BYTES` (at least one), from disk and from memory,
    /// while other reads get the whole range.
    #[tokio::test]
    async fn replication_reads_stop_at_a_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        let mut store = LogStore::open(dir.path(), std::slice::from_ref(&key)).unwrap();
        let indexes = |es: &[Entry]| es.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
        // From disk: 40 entries of ≈ 50 KB.
        let big: Vec<Entry> = (1..=40).map(|i| entry_with_ops(1, i, 1000)).collect();
        append(&mut store.wal(), &big);
        let size = serde_json::to_vec(&big[0]).unwrap().len();
        let got = store.limited_get_log_entries(1, 41).await.unwrap();
        let n = got.len();
        assert_eq!(indexes(&got), (1..=n as u64).collect::<Vec<_>>());
        assert!(n * size <= REPLICATION_BYTES, "{n} entries of {size} bytes");
        assert!(
            (n + 1) * (size + 100) > REPLICATION_BYTES,
            "{n} entries of {size} bytes"
        );
        // Later ranges too, and a range of one entry bigger than the budget.
        let got = store.limited_get_log_entries(30, 41).await.unwrap();
        assert_eq!(indexes(&got), (30..30 + n as u64).collect::<Vec<_>>());
        assert_eq!(store.try_get_log_entries(1..41).await.unwrap().len(), 40);
        let huge = entry_with_ops(1, 41, 10_000);
        append(&mut store.wal(), std::slice::from_ref(&huge));
        assert!(serde_json::to_vec(&huge).unwrap().len() > REPLICATION_BYTES);
        let got = store.limited_get_log_entries(41, 42).await.unwrap();
        assert_eq!(indexes(&got), vec![41]);

        // From memory: 4 entries of 500 ops (≈ 25 KB each); with their
        // encodings unknown, each is guessed at 500 × 512 bytes.
        let small: Vec<Entry> = (42..=45).map(|i| entry_with_ops(1, i, 500)).collect();
        append(&mut store.wal(), &small);
        store.cache.lock().unwrap().append(small.clone());
        let got = store.limited_get_log_entries(42, 46).await.unwrap();
        assert_eq!(indexes(&got), vec![42]);
        for e in &small {
            store.encoded.get(e);
        }
        let got = store.limited_get_log_entries(42, 46).await.unwrap();
        assert_eq!(indexes(&got), vec![42, 43, 44, 45]);
        assert_eq!(store.try_get_log_entries(42..46).await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn the_committed_hint_is_written_by_the_next_append_or_soon_after() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        let mut store = LogStore::open(dir.path(), std::slice::from_ref(&key)).unwrap();
        append(&mut store.wal(), &[entry(1, 0), entry(1, 1), entry(1, 2)]);
        // Carried by the next record (here the vote), before the delay.
        store
            .save_committed(Some(entry(1, 0).log_id))
            .await
            .unwrap();
        store.wal().save_vote(&Vote::new(2, 1)).unwrap();
        let reopened = Wal::open(
            &dir.path().join("wal"),
            std::slice::from_ref(&key),
            16 << 20,
        );
        assert_eq!(reopened.unwrap().committed, Some(entry(1, 0).log_id));
        // With nothing else written, on its own.
        store
            .save_committed(Some(entry(1, 2).log_id))
            .await
            .unwrap();
        let mut found = None;
        for _ in 0..200 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let w = Wal::open(
                &dir.path().join("wal"),
                std::slice::from_ref(&key),
                16 << 20,
            );
            found = w.unwrap().committed;
            if found == Some(entry(1, 2).log_id) {
                break;
            }
        }
        assert_eq!(found, Some(entry(1, 2).log_id));
        // The writer ends with the store.
        drop(store);
    }
}
