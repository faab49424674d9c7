//! The durable Raft log and vote: a write-ahead log (WAL) of segment files
//! under `wal/`, every record sealed with the store's data key.
//!
//! Why not a database: an append must be durable before openraft is told it
//! is flushed, and a redb transaction per append cost ≈ 0.4–0.5 ms here
//! (several pages and syncs per commit) against ≈ 0.12 ms for one record
//! written into a zero-filled file and `fdatasync`ed (BENCHMARKS.md). Every
//! Raft write waits for a quorum of these (the leader's and a follower's,
//! which overlap).
//!
//! [`LogStore`] appends asynchronously: one writer thread takes the queued
//! appends, writes them as one record batch with one sync (group commit)
//! and then reports them flushed, in order (see [`LogStore`]).
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
use crate::raft_types::{Entry, LogId, TypeConfig, Vote};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::RaftLogReader;
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

/// Where an entry's record is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    seq: u64,
    off: u64,
    len: u32,
    log_id: LogId,
}

struct Segment {
    /// Shared so that the writer can sync it without holding the WAL's lock.
    file: Arc<File>,
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
    pub(crate) committed_unwritten: bool,
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
            committed_unwritten: false,
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
            wal.segs.insert(
                seq,
                Segment {
                    file: Arc::new(file),
                    size,
                    key,
                },
            );
            wal.active = seq;
            wal.off = pos as u64;
        }
        if wal.segs.is_empty() {
            wal.new_segment(1, FIRST_SEGMENT.min(wal.seg_size), false)?;
        }
        wal.clamp_committed();
        Ok(wal)
    }

    /// The committed id is a hint written without a sync, and openraft
    /// may commit (on a quorum of other members) entries this node has
    /// submitted but not yet made durable: after a crash the hint can name
    /// an entry that did not survive. The entries that did survive up to
    /// its index are committed ones (the log is written in order, and never
    /// truncated below the commit point), so the hint is cut back to the
    /// last of them.
    fn clamp_committed(&mut self) {
        let Some(c) = self.committed else { return };
        let last = self.locs.back().map(|l| l.log_id).or(self.purged);
        if last.is_none_or(|l| l.index < c.index) {
            tracing::info!(committed = c.index, last = ?last.map(|l| l.index),
                "the committed hint is past the durable log; using the last durable entry");
            self.committed = last;
        }
    }

    /// Applies one replayed record to the in-memory state.
    fn replay(&mut self, seq: u64, off: u64, len: u32, rec: Record<'_>) -> Result<(), String> {
        let json = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        match rec.kind {
            Kind::Entry => {
                let log_id = crate::raft_types::log_id(rec.term, rec.node, rec.index);
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
        let file = Arc::new(match spare {
            Some(Ok(Ok(()))) if size == self.seg_size => {
                std::fs::rename(spare_path(&self.dir), &path)?;
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)?
            }
            _ => zero_file(&path, size)?,
        });
        let mut head = Vec::with_capacity(SEG_HEADER as usize);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&seq.to_le_bytes());
        head.extend_from_slice(&self.current.0);
        head.resize(SEG_HEADER as usize, 0);
        let state = self.state_records();
        self.committed_unwritten = false;
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
    fn write(&mut self, buf: Vec<u8>, sync: bool) -> std::io::Result<u64> {
        let at = self.put(buf)?;
        if sync {
            self.active_file().sync_data()?;
        }
        Ok(at)
    }

    /// The segment being written (all of one `put` goes into it).
    fn active_file(&self) -> Arc<File> {
        self.segs[&self.active].file.clone()
    }

    /// Writes `buf` (whole records) at the end of the log, in a new segment
    /// if it does not fit, without a sync; returns where it went (after a
    /// committed record put before it, if one was due).
    fn put(&mut self, mut buf: Vec<u8>) -> std::io::Result<u64> {
        if self.committed_unwritten && self.committed.is_some() {
            let mut with = Vec::new();
            self.encode_json(&mut with, Kind::Committed, &self.committed);
            with.extend_from_slice(&buf);
            buf = with;
            self.committed_unwritten = false;
        }
        let size = self.segs[&self.active].size;
        if self.off + buf.len() as u64 > size {
            let need = SEG_HEADER + self.state_records().len() as u64 + buf.len() as u64;
            self.new_segment(self.active + 1, self.seg_size.max(need), true)?;
        }
        let at = self.off;
        let seg = &self.segs[&self.active];
        seg.file.write_all_at(&buf, at)?;
        self.off += buf.len() as u64;
        // Prepare the next segment once this one is half full.
        if self.spare.is_none() && self.off > seg.size / 2 {
            let (path, size) = (spare_path(&self.dir), self.seg_size);
            self.spare = Some(std::thread::spawn(move || zero_file(&path, size).map(drop)));
        }
        Ok(at)
    }

    /// Appends entries (already encoded as `(entry, json)`), durably.
    pub(crate) fn append(&mut self, entries: &[(LogId, Vec<u8>)]) -> std::io::Result<()> {
        self.append_unsynced(entries)?;
        self.active_file().sync_data()
    }

    /// Appends entries (already encoded as `(entry, json)`) without a
    /// sync: they are readable at once; they are durable once the file
    /// returned is synced.
    pub(crate) fn append_unsynced(
        &mut self,
        entries: &[(LogId, Vec<u8>)],
    ) -> std::io::Result<Arc<File>> {
        let Some(first) = entries.first() else {
            return Ok(self.active_file());
        };
        let mut buf = Vec::with_capacity(entries.iter().map(|(_, j)| j.len() + 64).sum());
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
                json,
            );
            spans.push((start, buf.len() - start, *id));
        }
        let total = buf.len();
        let at = self.put(buf)?;
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
        Ok(self.active_file())
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

/// A reply to a caller waiting for the writer.
type Reply = tokio::sync::oneshot::Sender<std::io::Result<()>>;

/// Who hears that an append is durable.
enum Done {
    /// openraft (`append`): may be told before or after `append` returns.
    Raft(IOFlushed<TypeConfig>),
    /// A caller waiting for it (`append_direct`).
    Reply(Reply),
}

impl Done {
    fn complete(self, result: std::io::Result<()>) {
        match self {
            Done::Raft(cb) => cb.io_completed(result),
            Done::Reply(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// What the writer thread does, strictly in the order asked.
enum Op {
    /// Entries to append (contiguous, already in the log's tail in memory).
    Append {
        entries: Vec<Arc<Entry>>,
        done: Done,
    },
    /// The committed hint: written at once, without a sync.
    Committed(Option<LogId>),
    /// The vote, durably.
    Vote(Vote, Reply),
    /// Drop the entries from this index on, durably.
    Truncate(u64, Reply),
    /// Drop the entries up to this id and remember it, durably.
    Purge(LogId, Reply),
    /// Re-seal the whole log with this key.
    Rekey(StoreKey, Reply),
}

/// The log's state in memory, shared by the store, its readers and the writer.
#[derive(Default)]
struct Mem {
    /// A contiguous suffix of the log, decoded: every entry not yet written
    /// to the WAL (readers find it nowhere else), and the newest others.
    tail: BTreeMap<u64, Arc<Entry>>,
    /// Ops in the entries of `tail`.
    ops: usize,
    /// The first index of each append queued for the writer and not yet
    /// written, oldest first.
    unwritten: VecDeque<u64>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    /// Set when a write failed: the store takes no more writes.
    failed: Option<String>,
    /// Groups of appends written (each with one sync).
    groups: u64,
}

impl Mem {
    fn insert(&mut self, e: Arc<Entry>) {
        self.ops += ops_in(&e);
        if let Some(old) = self.tail.insert(e.log_id.index, e) {
            self.ops -= ops_in(&old);
        }
    }

    /// Drops the entries from `index` on.
    fn cut_from(&mut self, index: u64) {
        for (_, e) in self.tail.split_off(&index) {
            self.ops -= ops_in(&e);
        }
    }

    /// Drops the entries up to `index`.
    fn cut_to(&mut self, index: u64) {
        let keep = self.tail.split_off(&(index + 1));
        for e in std::mem::replace(&mut self.tail, keep).values() {
            self.ops -= ops_in(e);
        }
    }

    /// Forgets the oldest entries beyond the cache's bounds, but never one
    /// that is not yet written.
    fn trim(&mut self) {
        let keep_from = self.unwritten.iter().min().copied();
        while self.tail.len() > CACHE_ENTRIES || (self.ops > CACHE_OPS && self.tail.len() > 1) {
            let Some(oldest) = self.tail.first_entry() else {
                break;
            };
            if keep_from.is_some_and(|k| *oldest.key() >= k) {
                break;
            }
            let e = oldest.remove();
            self.ops -= ops_in(&e);
        }
    }

    fn check(&self) -> std::io::Result<()> {
        match &self.failed {
            Some(e) => Err(std::io::Error::other(format!(
                "the Raft log failed earlier: {e}"
            ))),
            None => Ok(()),
        }
    }
}

/// What the store's clones share; the last one dropped stops the writer
/// (after it finished what was queued).
struct Inner {
    wal: Arc<Mutex<Wal>>,
    mem: Arc<Mutex<Mem>>,
    tx: Option<std::sync::mpsc::Sender<Op>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The log store. Cheap to clone (shares the WAL).
///
/// Appends are asynchronous: `append` puts the entries into the tail kept
/// in memory (where readers find them at once) and queues them for one
/// writer thread, which writes whatever appends are queued as one WAL write
/// with one `fdatasync` (group commit) and then tells openraft, in order,
/// that they are durable. So the leader replicates an entry while it is
/// still being written locally, and several entries can be in flight.
/// Votes, truncation, purges and re-keying go through the same queue, so
/// every write reaches the disk in the order openraft asked for it; those
/// wait until they are durable.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

fn mem_lock(mem: &Mutex<Mem>) -> std::sync::MutexGuard<'_, Mem> {
    mem.lock().expect("log memory lock")
}

fn wal_lock(wal: &Mutex<Wal>) -> std::sync::MutexGuard<'_, Wal> {
    wal.lock().expect("wal lock")
}

fn copy_err(e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), e.to_string())
}

/// The writer thread: runs the queued operations in order.
fn writer(rx: std::sync::mpsc::Receiver<Op>, wal: Arc<Mutex<Wal>>, mem: Arc<Mutex<Mem>>) {
    let mut next: Option<Op> = None;
    loop {
        let op = match next.take() {
            Some(op) => op,
            None => match rx.recv() {
                Ok(op) => op,
                Err(_) => return,
            },
        };
        if let Err(e) = mem_lock(&mem).check() {
            fail_op(op, e);
            continue;
        }
        let result = match op {
            Op::Append { entries, done } => {
                // Group commit: every append queued by now goes into the
                // same write and sync.
                let mut group = vec![(entries, done)];
                loop {
                    match rx.try_recv() {
                        Ok(Op::Append { entries, done }) => group.push((entries, done)),
                        Ok(Op::Committed(c)) => {
                            // Carried by this group's write.
                            let mut w = wal_lock(&wal);
                            w.committed = c;
                            w.committed_unwritten = true;
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                write_group(&wal, &mem, group)
            }
            Op::Committed(c) => {
                let mut w = wal_lock(&wal);
                w.committed = c;
                w.committed_unwritten = true;
                w.write(Vec::new(), false).map(drop)
            }
            Op::Vote(vote, reply) => {
                let r = wal_lock(&wal).save_vote(&vote);
                if r.is_ok() {
                    mem_lock(&mem).vote = Some(vote);
                }
                let result = r.as_ref().map(drop).map_err(copy_err);
                let _ = reply.send(r);
                result
            }
            Op::Truncate(index, reply) => reply_with(reply, wal_lock(&wal).truncate(index)),
            Op::Purge(upto, reply) => reply_with(reply, wal_lock(&wal).purge(upto)),
            Op::Rekey(key, reply) => reply_with(reply, wal_lock(&wal).rekey(&key)),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "writing the Raft log failed");
            mem_lock(&mem).failed = Some(e.to_string());
        }
    }
}

fn reply_with(reply: Reply, r: std::io::Result<()>) -> std::io::Result<()> {
    let result = r.as_ref().map(drop).map_err(copy_err);
    let _ = reply.send(r);
    result
}

/// Answers an operation that comes after a failed write.
fn fail_op(op: Op, e: std::io::Error) {
    match op {
        Op::Append { done, .. } => done.complete(Err(e)),
        Op::Committed(_) => {}
        Op::Vote(_, reply) | Op::Truncate(_, reply) | Op::Purge(_, reply) | Op::Rekey(_, reply) => {
            let _ = reply.send(Err(e));
        }
    }
}

/// Writes a group of appends with one write and one sync, then tells
/// their callers, in order.
fn write_group(
    wal: &Mutex<Wal>,
    mem: &Mutex<Mem>,
    group: Vec<(Vec<Arc<Entry>>, Done)>,
) -> std::io::Result<()> {
    let started = std::time::Instant::now();
    let mut encoded: Vec<(LogId, Vec<u8>)> = Vec::new();
    let mut result = Ok(());
    for (entries, _) in &group {
        let Some(first) = entries.first() else {
            continue;
        };
        // An append that replaces entries of an earlier one in the group
        // (a follower's log overwritten) replaces them here too.
        while encoded
            .last()
            .is_some_and(|(id, _)| id.index >= first.log_id.index)
        {
            encoded.pop();
        }
        for e in entries {
            match serde_json::to_vec(&**e) {
                Ok(json) => encoded.push((e.log_id, json)),
                Err(err) => result = Err(std::io::Error::other(err)),
            }
        }
    }
    let bytes: usize = encoded.iter().map(|(_, j)| j.len()).sum();
    if result.is_ok() {
        // Written (and indexed) under the lock; synced outside it, so that
        // readers of older entries do not wait for the disk.
        let file = wal_lock(wal).append_unsynced(&encoded);
        result = file.and_then(|f| f.sync_data());
    }
    {
        let mut m = mem_lock(mem);
        for _ in 0..group.len() {
            m.unwritten.pop_front();
        }
        m.groups += 1;
        m.trim();
    }
    let appends = group.len();
    for (_, done) in group {
        done.complete(result.as_ref().map(drop).map_err(copy_err));
    }
    tracing::debug!(
        target: "shoal_store::io",
        appends,
        entries = encoded.len(),
        bytes,
        us = started.elapsed().as_micros() as u64,
        "log append"
    );
    result
}

/// The entries of `tail` within `bounds` (an empty or inverted range gives none).
fn tail_range(tail: &BTreeMap<u64, Arc<Entry>>, bounds: (Bound<u64>, Bound<u64>)) -> Vec<Entry> {
    let start = match bounds.0 {
        Bound::Included(i) => i,
        Bound::Excluded(i) => match i.checked_add(1) {
            Some(s) => s,
            None => return Vec::new(),
        },
        Bound::Unbounded => 0,
    };
    let end = match bounds.1 {
        Bound::Included(i) => i.checked_add(1),
        Bound::Excluded(i) => Some(i),
        Bound::Unbounded => None,
    };
    let range = match end {
        Some(end) if end <= start => return Vec::new(),
        Some(end) => tail.range(start..end),
        None => tail.range(start..),
    };
    range.map(|(_, e)| (**e).clone()).collect()
}

impl LogStore {
    /// Opens (or creates) the log in `raft_dir/wal`; `keys[0]` seals new
    /// records, the others may open older ones. A log left by an older
    /// shoal in `raft_dir/raft.redb` is moved into it.
    pub fn open(raft_dir: &Path, keys: &[StoreKey]) -> anyhow::Result<LogStore> {
        let dir = raft_dir.join("wal");
        let legacy = raft_dir.join("raft.redb");
        let fresh = !dir.exists();
        let mut wal = Wal::open(&dir, keys, segment_bytes())?;
        if fresh && legacy.exists() {
            crate::legacy::migrate(&legacy, &mut wal)?;
        }
        let mem = Mem {
            vote: wal.vote,
            committed: wal.committed,
            purged: wal.purged,
            ..Default::default()
        };
        let wal = Arc::new(Mutex::new(wal));
        let mem = Arc::new(Mutex::new(mem));
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = {
            let (wal, mem) = (wal.clone(), mem.clone());
            std::thread::Builder::new()
                .name("shoal-wal".into())
                .spawn(move || writer(rx, wal, mem))?
        };
        Ok(LogStore {
            inner: Arc::new(Inner {
                wal,
                mem,
                tx: Some(tx),
                writer: Some(writer),
            }),
        })
    }

    fn send(&self, op: Op) -> std::io::Result<()> {
        self.inner
            .tx
            .as_ref()
            .expect("writer channel")
            .send(op)
            .map_err(|_| std::io::Error::other("the WAL writer stopped"))
    }

    /// Queues `op` (made with the reply channel) and waits for its result.
    async fn run(&self, op: impl FnOnce(Reply) -> Op) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(op(tx))?;
        rx.await
            .map_err(|_| std::io::Error::other("the WAL writer stopped"))?
    }

    /// Puts `entries` into the tail in memory and queues them for the writer.
    fn submit(&self, entries: Vec<Entry>, done: Done) -> std::io::Result<()> {
        let Some(first) = entries.first().map(|e| e.log_id.index) else {
            done.complete(Ok(()));
            return Ok(());
        };
        let entries: Vec<Arc<Entry>> = entries.into_iter().map(Arc::new).collect();
        {
            let mut mem = mem_lock(&self.inner.mem);
            mem.check()?;
            // Overwritten indexes and everything after them are replaced.
            mem.cut_from(first);
            for e in &entries {
                mem.insert(e.clone());
            }
            mem.unwritten.push_back(first);
            mem.trim();
        }
        self.send(Op::Append { entries, done })
    }

    /// Appends entries outside of Raft (`--force-new-cluster`, before Raft
    /// starts), durably.
    pub async fn append_direct(&self, entries: Vec<Entry>) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(entries, Done::Reply(tx))?;
        rx.await
            .map_err(|_| std::io::Error::other("the WAL writer stopped"))?
    }

    /// Re-seals the whole log with `key` (see [`Wal::rekey`]).
    pub async fn rekey(&self, key: StoreKey) -> anyhow::Result<()> {
        self.run(|reply| Op::Rekey(key, reply)).await?;
        Ok(())
    }

    /// Index of the last entry in the log, if any.
    pub fn last_log_index(&self) -> Option<u64> {
        self.last_log_id().map(|l| l.index)
    }

    /// The last entry's id, or the purge point when no entry is left.
    fn last_log_id(&self) -> Option<LogId> {
        let (last, purged) = {
            let mem = mem_lock(&self.inner.mem);
            // The tail holds every entry not yet written, so when it is
            // empty the WAL has the last one.
            (mem.tail.last_key_value().map(|(_, e)| e.log_id), mem.purged)
        };
        last.or_else(|| wal_lock(&self.inner.wal).locs.back().map(|l| l.log_id))
            .or(purged)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, std::io::Error> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        let first = match bounds.0 {
            Bound::Included(i) => Some(i),
            Bound::Excluded(i) => i.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let (from_memory, lowest) = {
            let mem = mem_lock(&self.inner.mem);
            let lowest = mem.tail.first_key_value().map(|(k, _)| *k);
            // The tail is a contiguous suffix of the log (appends are
            // contiguous; truncation and purges cut its ends), so a range
            // that starts inside it is served whole from memory.
            let part = tail_range(&mem.tail, bounds);
            if let (Some(first), Some(lowest)) = (first, lowest) {
                if first >= lowest {
                    return Ok(part);
                }
            }
            (part, lowest)
        };
        // The rest is below the tail, all of it written to the WAL.
        let wal = self.inner.wal.clone();
        let mut entries = tokio::task::spawn_blocking(move || {
            let wal = wal_lock(&wal);
            let locs: Vec<Loc> = wal
                .locs
                .iter()
                .filter(|l| bounds.contains(&l.log_id.index))
                .filter(|l| lowest.is_none_or(|low| l.log_id.index < low))
                .copied()
                .collect();
            wal.read(&locs).map_err(std::io::Error::other)
        })
        .await
        .map_err(std::io::Error::other)??;
        entries.extend(from_memory);
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, std::io::Error> {
        Ok(mem_lock(&self.inner.mem).vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, std::io::Error> {
        let purged = mem_lock(&self.inner.mem).purged;
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: self.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), std::io::Error> {
        let vote = *vote;
        self.run(|reply| Op::Vote(vote, reply)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), std::io::Error> {
        // A hint, written without a sync: it survives a killed process (it
        // is in the page cache), so a restarted manager re-applies up to it
        // at once instead of serving older state until it is leader again.
        {
            let mut mem = mem_lock(&self.inner.mem);
            mem.check()?;
            mem.committed = committed;
        }
        self.send(Op::Committed(committed))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, std::io::Error> {
        Ok(mem_lock(&self.inner.mem).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), std::io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.submit(entries.into_iter().collect(), Done::Raft(callback))
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), std::io::Error> {
        let from = last.map_or(0, |l| l.index + 1);
        mem_lock(&self.inner.mem).cut_from(from);
        self.run(|reply| Op::Truncate(from, reply)).await
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), std::io::Error> {
        {
            let mut mem = mem_lock(&self.inner.mem);
            mem.cut_to(upto.index);
            if mem.purged.is_none_or(|p| p.index < upto.index) {
                mem.purged = Some(upto);
            }
        }
        self.run(|reply| Op::Purge(upto, reply)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{EntryPayload, Membership};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: crate::raft_types::log_id(term, 1, index),
            payload: EntryPayload::Blank,
        }
    }

    fn membership_entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: crate::raft_types::log_id(term, 1, index),
            payload: EntryPayload::Membership(
                Membership::new(
                    vec![std::collections::BTreeSet::from([1])],
                    std::collections::BTreeMap::from([(1, crate::Member::default())]),
                )
                .unwrap(),
            ),
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
            wal.purge(crate::raft_types::log_id(1, 1, 900)).unwrap();
            wal.committed = Some(crate::raft_types::log_id(2, 1, 951));
            wal.committed_unwritten = true;
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
            wal.purge(crate::raft_types::log_id(1, 1, 10)).unwrap();
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
    fn a_committed_hint_past_the_durable_log_is_cut_back() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        {
            let mut wal = Wal::open(dir.path(), std::slice::from_ref(&key), 64 << 10).unwrap();
            append(&mut wal, &[entry(1, 1), entry(1, 2), entry(1, 3)]);
            // Committed on other members, not yet written here.
            wal.committed = Some(crate::raft_types::log_id(1, 1, 9));
            wal.committed_unwritten = true;
            wal.write(Vec::new(), false).unwrap();
        }
        let wal = Wal::open(dir.path(), std::slice::from_ref(&key), 64 << 10).unwrap();
        assert_eq!(wal.committed, Some(crate::raft_types::log_id(1, 1, 3)));
    }

    fn flushed() -> (
        IOFlushed<TypeConfig>,
        tokio::sync::oneshot::Receiver<std::io::Result<()>>,
    ) {
        use openraft::type_config::TypeConfigExt;
        let (tx, rx) = TypeConfig::oneshot();
        (IOFlushed::signal(tx), rx)
    }

    // Holding the WAL's lock across appends is the point: it stands for a
    // slow disk (the writer waits for it; appends and reads must not).
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_are_readable_at_once_and_durable_in_groups() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        let mut store = LogStore::open(dir.path(), std::slice::from_ref(&key)).unwrap();
        store.save_vote(&Vote::new(1, 1)).await.unwrap();
        let mut waits = Vec::new();
        {
            // While the WAL is busy, appends still return, and what they
            // appended reads back, from memory; none is reported durable.
            let wal = store.inner.wal.clone();
            let _busy = wal.lock().unwrap();
            for i in 1..=100u64 {
                let (cb, rx) = flushed();
                store.append([entry(1, i)], cb).await.unwrap();
                let got = store.try_get_log_entries(i..i + 1).await.unwrap();
                assert_eq!(got.len(), 1);
                assert_eq!(got[0].log_id.index, i);
                waits.push(rx);
            }
            let got = store.try_get_log_entries(1..).await.unwrap();
            assert_eq!(got.len(), 100);
            assert_eq!(
                store.get_log_state().await.unwrap().last_log_id,
                Some(crate::raft_types::log_id(1, 1, 100))
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            assert!(waits.iter_mut().all(|rx| rx.try_recv().is_err()));
        }
        for rx in waits {
            rx.await.unwrap().unwrap();
        }
        // One write and sync for what was queued meanwhile (the writer may
        // have taken the first append alone before it blocked).
        let groups = store.inner.mem.lock().unwrap().groups;
        assert!(groups <= 2, "{groups} groups");
        // Most entries are now read back from the WAL, the newest from memory.
        let got = store.try_get_log_entries(1..=100).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            (1..=100).collect::<Vec<_>>()
        );
        // Appends queued before a truncation are written before it.
        for i in 101..=110u64 {
            store
                .append([entry(1, i)], IOFlushed::noop())
                .await
                .unwrap();
        }
        store
            .truncate_after(Some(crate::raft_types::log_id(1, 1, 105)))
            .await
            .unwrap();
        let (cb, rx) = flushed();
        store
            .append([entry(2, 106), membership_entry(2, 107)], cb)
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
        store
            .purge(crate::raft_types::log_id(1, 1, 50))
            .await
            .unwrap();
        store
            .save_committed(Some(crate::raft_types::log_id(2, 1, 106)))
            .await
            .unwrap();
        // The last clone stops the writer once it wrote everything queued.
        drop(store);
        let mut store = LogStore::open(dir.path(), std::slice::from_ref(&key)).unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.unwrap().index, 50);
        assert_eq!(
            state.last_log_id,
            Some(crate::raft_types::log_id(2, 1, 107))
        );
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
        assert_eq!(store.read_committed().await.unwrap().unwrap().index, 106);
        let got = store.try_get_log_entries(..).await.unwrap();
        let ids: Vec<_> = got
            .iter()
            .map(|e| (e.log_id.index, e.log_id.leader_id.term))
            .collect();
        assert_eq!(ids.len(), 57);
        assert_eq!((ids[0], ids[54], ids[55]), ((51, 1), (105, 1), (106, 2)));
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
}
