//! openraft's own storage conformance suite, run against the WAL log store
//! and the state machine.

#![allow(clippy::result_large_err)]

use openraft::testing::{StoreBuilder, Suite};
use shoal_store::{LogStore, StateMachine, StorageError, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm) = shoal_store::open(dir.path(), &[shoal_store::StoreKey::generate()])
            .expect("open store");
        Ok((dir, log, sm))
    }
}

#[test]
fn wal_log_store_and_state_machine_pass_openraft_suite() -> Result<(), StorageError> {
    Suite::test_all(Builder)?;
    Ok(())
}
