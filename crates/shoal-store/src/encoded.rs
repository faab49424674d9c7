//! The JSON of recent log entries, made once per manager.
//!
//! The leader needs each new entry's JSON twice: for its own log and for the
//! AppendEntries requests to every follower. Both are exactly
//! `serde_json::to_vec(entry)`, so the log store makes it and the network
//! takes it from here.

use crate::{Entry, LogId};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Most entries kept...
const ENTRIES: usize = 64;
/// ...and most bytes (an entry is needed only until every follower got it).
const BYTES: usize = 4 << 20;

/// Recently encoded entries, by log id: a log id names one entry for good
/// (Raft's log matching property), whoever asks for it. Shared by clones.
#[derive(Clone, Default)]
pub struct EncodedEntries(Arc<Mutex<Recent>>);

#[derive(Default)]
struct Recent {
    entries: VecDeque<(LogId, Arc<[u8]>)>,
    bytes: usize,
}

impl EncodedEntries {
    /// The JSON of `entry`, made now unless it already was.
    pub fn get(&self, entry: &Entry) -> Arc<[u8]> {
        if let Some(json) = self.find(&entry.log_id) {
            return json;
        }
        let json: Arc<[u8]> = serde_json::to_vec(entry).expect("serializable").into();
        let mut r = self.0.lock().expect("encoded entries");
        if !r.entries.iter().any(|(id, _)| *id == entry.log_id) {
            r.bytes += json.len();
            r.entries.push_back((entry.log_id, json.clone()));
            while r.entries.len() > ENTRIES || (r.bytes > BYTES && r.entries.len() > 1) {
                if let Some((_, old)) = r.entries.pop_front() {
                    r.bytes -= old.len();
                }
            }
        }
        json
    }

    fn find(&self, id: &LogId) -> Option<Arc<[u8]>> {
        let r = self.0.lock().expect("encoded entries");
        r.entries
            .iter()
            .rev()
            .find(|(i, _)| i == id)
            .map(|(_, json)| json.clone())
    }

    /// The encoded size of the entry `id`, if it is kept.
    pub(crate) fn size_of(&self, id: &LogId) -> Option<usize> {
        self.find(id).map(|json| json.len())
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.0.lock().expect("encoded entries").entries.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
