//! Storage tier: openraft's conformance suite on the sled store, and durability across reopen.

use omraft::model::{Command, ConfigKey};
use omraft::raft::store::{LogStore, StateMachine, Store};
use omraft::raft::{Entry, StorageError, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftLogReader};

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open store");
        let sm = store.state_machine().expect("state machine");
        Ok((dir, store.log_store(), sm))
    }
}

#[test]
fn openraft_storage_conformance_suite() {
    if let Err(e) = Suite::test_all(SledBuilder) {
        panic!("storage conformance: {e}");
    }
}

/// A log entry creating pool `name` (valid on an empty state).
fn entry(term: u64, index: u64, name: &str) -> Entry {
    let (key, _) = ConfigKey::parse(&format!("pool#{name}.type")).unwrap();
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(Command::UpdateConfig {
            set: vec![(key, "lvm".into())],
            unset: vec![],
        }),
    }
}

#[tokio::test]
async fn appended_entries_and_vote_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut log = store.log_store();
        for i in 1..=50 {
            openraft::storage::RaftLogStorageExt::blocking_append(&mut log, [entry(1, i, &format!("n{i}"))])
                .await
                .unwrap();
        }
        log.save_vote(&openraft::Vote::new(3, 2)).await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let mut log = store.log_store();
    let got = log.try_get_log_entries(1..=50).await.unwrap();
    assert_eq!(got.len(), 50);
    assert_eq!(got[49], entry(1, 50, "n50"));
    assert_eq!(log.read_vote().await.unwrap(), Some(openraft::Vote::new(3, 2)));
}

#[tokio::test]
async fn snapshot_is_reloaded_as_state() {
    use openraft::RaftSnapshotBuilder;
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut sm = store.state_machine().unwrap();
        sm.apply([entry(1, 1, "n1"), entry(1, 2, "n2")]).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let mut sm = store.state_machine().unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(2));
    assert_eq!(sm.read(|d| d.state.config.len()), 2);
}
