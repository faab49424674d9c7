//! Small helpers over the write path for single-object changes.

use crate::proposer::{Proposer, WriteError};
use shoal_store::{Command, Expect, Kind, Object, Op, StoreError};

/// Why a single write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteFailure {
    /// The store refused it (not found, conflict, stale version…).
    #[error(transparent)]
    Refused(#[from] StoreError),
    /// It could not be committed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl WriteFailure {
    /// The gRPC status for this failure.
    pub fn into_status(self) -> tonic::Status {
        match self {
            WriteFailure::Refused(StoreError::NotFound(..)) => {
                tonic::Status::not_found(self.to_string())
            }
            WriteFailure::Refused(StoreError::Exists(..) | StoreError::NameConflict(..)) => {
                tonic::Status::already_exists(self.to_string())
            }
            WriteFailure::Refused(_) => tonic::Status::failed_precondition(self.to_string()),
            WriteFailure::Write(_) => tonic::Status::unavailable(self.to_string()),
        }
    }
}

/// Commits one atomic command; returns the new version index of its first op.
pub async fn commit(proposer: &Proposer, ops: Vec<Op>) -> Result<u64, WriteFailure> {
    let r = proposer
        .propose(Command {
            ops,
            atomic: true,
            request: 0,
        })
        .await?;
    match r.results.into_iter().next() {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(e.into()),
        None => Ok(0),
    }
}

/// Puts one object.
pub async fn commit_one(
    proposer: &Proposer,
    object: Object,
    expect: Expect,
) -> Result<u64, WriteFailure> {
    commit(proposer, vec![Op::Put { object, expect }]).await
}

/// Deletes one object.
pub async fn delete_one(
    proposer: &Proposer,
    kind: Kind,
    id: &str,
    expect: Option<u64>,
) -> Result<u64, WriteFailure> {
    commit(
        proposer,
        vec![Op::Delete {
            kind,
            id: id.to_string(),
            expect,
        }],
    )
    .await
}
