//! The sled-backed Raft log and state machine.
//!
//! One sled database per node, with trees:
//! - `log`: entries keyed by big-endian index;
//! - `raft`: the vote, the committed log id and the last purged log id;
//! - `snapshot`: the current snapshot (meta and data);
//! - `local`: this node's identity (id, cluster secret), which is not replicated.
//!
//! sled's own flush is not power-loss safe (it uses `sync_file_range`), so every write that
//! openraft must find again after a crash (appends, votes, truncations, snapshots) is followed
//! by `flush` and an `fsync` of the database file and its directory before it is acknowledged.
//!
//! The state machine lives in memory and is rebuilt at start from the last snapshot plus the
//! committed entries after it, which openraft re-applies.

// openraft's storage traits return its `StorageError`, which is large; boxing it here would
// only add a conversion at every trait boundary.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::fs::File;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use super::{codec, Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::model::{ClusterState, Response};

/// The store's format: 1 held JSON records; 2 writes binary ones (`codec`) and reads both;
/// 3 may hold group commits (`Command::Batch`), which an older omraft could not read: it
/// refuses the store with a message instead of failing on the first such entry.
pub const FORMAT: u64 = 3;
const FORMAT_KEY: &str = "format";

/// A node's sled database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    dir: PathBuf,
    /// The database file, kept open to fsync it.
    file: Arc<File>,
    dir_file: Arc<File>,
}

/// Errors of opening or maintaining the store outside openraft's traits.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database in {0}")]
    Open(PathBuf, #[source] sled::Error),
    #[error("cannot sync the database to disk")]
    Sync(#[source] std::io::Error),
    #[error("database error")]
    Db(#[from] sled::Error),
    #[error("corrupt record {0:?} in the database")]
    Corrupt(&'static str, #[source] codec::CodecError),
    #[error(
        "the database in {0} has store format {1}, written by a newer omraft (this one reads formats 1 to {FORMAT}): \
         run that version or a newer one"
    )]
    Format(PathBuf, u64),
}

impl Store {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("raft.sled");
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(32 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| StoreError::Open(path.clone(), e))?;
        let format = match db.get(FORMAT_KEY)? {
            None => 1,
            Some(v) => v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX),
        };
        if format > FORMAT {
            return Err(StoreError::Format(path, format));
        }
        if format < FORMAT {
            db.insert(FORMAT_KEY, &FORMAT.to_be_bytes())?;
        }
        let file = File::open(path.join("db")).map_err(StoreError::Sync)?;
        let dir_file = File::open(&path).map_err(StoreError::Sync)?;
        Ok(Store {
            db,
            dir: path,
            file: Arc::new(file),
            dir_file: Arc::new(dir_file),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Makes every write so far durable: sled flush, then fsync of the file and its directory.
    pub fn sync(&self) -> Result<(), std::io::Error> {
        self.db.flush().map_err(std::io::Error::other)?;
        self.file.sync_data()?;
        self.dir_file.sync_all()
    }

    fn tree(&self, name: &str) -> sled::Tree {
        // Opening a tree only fails on I/O errors, which the next operation reports as well.
        self.db.open_tree(name).expect("open sled tree")
    }

    /// The Raft log half of the store.
    pub fn log_store(&self) -> LogStore {
        LogStore {
            store: self.clone(),
            log: self.tree("log"),
            meta: self.tree("raft"),
        }
    }

    /// The state machine half, loaded from the last snapshot.
    pub fn state_machine(&self) -> Result<StateMachine, StoreError> {
        let snapshots = self.tree("snapshot");
        let mut data = SmData::default();
        if let Some(bytes) = snapshots.get("data")? {
            data = codec::decode(&bytes).map_err(|e| StoreError::Corrupt("snapshot", e))?;
        }
        Ok(StateMachine {
            shared: Arc::new(SmShared {
                data: RwLock::new(data),
                store: self.clone(),
                snapshots,
                counter: AtomicU64::new(0),
            }),
        })
    }

    /// Reads a value of this node's local (not replicated) identity.
    pub fn local_get<T: for<'de> Deserialize<'de>>(&self, key: &'static str) -> Result<Option<T>, StoreError> {
        match self.tree("local").get(key)? {
            Some(v) => Ok(Some(codec::decode(&v).map_err(|e| StoreError::Corrupt(key, e))?)),
            None => Ok(None),
        }
    }

    /// Writes a value of this node's local identity, durably.
    pub fn local_set<T: Serialize>(&self, key: &'static str, value: &T) -> Result<(), StoreError> {
        self.tree("local")
            .insert(key, codec::encode(value).expect("serialize"))?;
        self.sync().map_err(StoreError::Sync)
    }

    /// Forgets all Raft state (log, vote, snapshot): used when this node joins another cluster.
    /// Call only while no Raft instance uses the store.
    pub fn wipe_raft(&self) -> Result<(), StoreError> {
        for t in ["log", "raft", "snapshot"] {
            self.tree(t).clear()?;
        }
        self.sync().map_err(StoreError::Sync)
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

/// The Raft log on sled. Cheap to clone; clones share the trees.
#[derive(Clone)]
pub struct LogStore {
    store: Store,
    log: sled::Tree,
    meta: sled::Tree,
}

impl LogStore {
    fn meta_get<T: for<'de> Deserialize<'de>>(&self, k: &str) -> Result<Option<T>, StorageError> {
        match self.meta.get(k).map_err(read_err)? {
            Some(v) => Ok(Some(codec::decode(&v).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn meta_set<T: Serialize>(&self, k: &str, v: &T) -> Result<(), StorageError> {
        self.meta
            .insert(k, codec::encode(v).map_err(write_err)?)
            .map_err(write_err)?;
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.store.sync().map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for kv in self.log.range(key(start)..) {
            let (k, v) = kv.map_err(read_err)?;
            let index = u64::from_be_bytes(k.as_ref().try_into().expect("8-byte log key"));
            if !range.contains(&index) {
                break;
            }
            out.push(codec::decode(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.meta_get("last_purged")?;
        let last = match self.log.last().map_err(read_err)? {
            Some((_, v)) => Some(codec::decode::<Entry>(&v).map_err(read_err)?.log_id),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.meta_set("vote", vote)?;
        self.store.sync().map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.meta_get("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: a lost committed index is recovered from the leader.
        self.meta_set("committed", &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.meta_get::<Option<LogId>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&key(entry.log_id.index), codec::encode(&entry).map_err(write_err)?);
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        // Acknowledge only once the entries are on disk.
        let store = self.store.clone();
        let res = tokio::task::spawn_blocking(move || store.sync())
            .await
            .map_err(std::io::Error::other);
        let res = res.and_then(|r| r);
        let failed = res.as_ref().err().map(|e| std::io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(res);
        match failed {
            Some(e) => Err(write_err(e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for k in self.log.range(key(log_id.index)..).keys() {
            batch.remove(k.map_err(write_err)?);
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        self.sync()
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash in between leaves entries that are ignored.
        self.meta_set("last_purged", &log_id)?;
        self.sync()?;
        let mut batch = sled::Batch::default();
        for k in self.log.range(..=key(log_id.index)).keys() {
            batch.remove(k.map_err(write_err)?);
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        Ok(())
    }
}

/// What the state machine holds: the cluster state and where in the log it stands.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    pub state: ClusterState,
}

struct SmShared {
    data: RwLock<SmData>,
    store: Store,
    snapshots: sled::Tree,
    counter: AtomicU64,
}

/// The state machine: `ClusterState` in memory, snapshots in sled. Cheap to clone.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<SmShared>,
}

impl StateMachine {
    /// Runs `f` on the current state. Never hold the result across an `.await`.
    pub fn read<T>(&self, f: impl FnOnce(&SmData) -> T) -> T {
        f(&self
            .shared
            .data
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The state, for writing. A panic elsewhere while it was held does not make every later
    /// reader panic too: `apply` catches its own panics (see there).
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, SmData> {
        self.shared
            .data
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn snapshot_err(e: impl std::error::Error + 'static) -> StorageError {
        StorageIOError::write_snapshot(None, &e).into()
    }

    fn persist_snapshot(&self, meta: &SnapshotMeta<NodeId, BasicNode>, data: &[u8]) -> Result<(), StorageError> {
        let meta_bytes = codec::encode(meta).map_err(Self::snapshot_err)?;
        let mut batch = sled::Batch::default();
        batch.insert("meta", meta_bytes);
        batch.insert("data", data);
        self.shared.snapshots.apply_batch(batch).map_err(Self::snapshot_err)?;
        self.shared.store.sync().map_err(Self::snapshot_err)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Copy under the lock, serialize outside it: applying goes on meanwhile.
        let data = self.read(SmData::clone);
        let (last_applied, membership) = (data.last_applied, data.membership.clone());
        let bytes = codec::encode(&data).map_err(Self::snapshot_err)?;
        let n = self.shared.counter.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
            None => format!("--{n}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        self.persist_snapshot(&meta, &bytes)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership<NodeId, BasicNode>), StorageError> {
        Ok(self.read(|d| (d.last_applied, d.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut data = self.write();
        let mut out = Vec::new();
        for entry in entries {
            out.push(match entry.payload {
                EntryPayload::Blank => Response::Done,
                EntryPayload::Normal(cmd) => {
                    // `apply` is meant never to panic. Should it, the entry is not marked
                    // applied and the error stops Raft on this node (every node applies the
                    // same entry, so every node stops there): nothing is applied after a
                    // half-applied entry, and readers keep reading instead of panicking on a
                    // poisoned lock.
                    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| data.state.apply(&cmd)));
                    match applied {
                        Ok(r) => r,
                        Err(panic) => {
                            let why = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_else(|| "a panic".into());
                            tracing::error!(index = entry.log_id.index, "applying {cmd} panicked: {why}");
                            let e = std::io::Error::other(format!("applying {cmd} panicked: {why}"));
                            return Err(StorageIOError::apply(entry.log_id, &e).into());
                        }
                    }
                }
                EntryPayload::Membership(m) => {
                    data.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::Done
                }
            });
            data.last_applied = Some(entry.log_id);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let mut new: SmData =
            codec::decode(&bytes).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        new.last_applied = meta.last_log_id;
        new.membership = meta.last_membership.clone();
        self.persist_snapshot(meta, &bytes)?;
        *self.write() = new;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let read = |k| {
            self.shared
                .snapshots
                .get(k)
                .map_err(|e| StorageIOError::read_snapshot(None, &e))
        };
        let (Some(meta), Some(data)) = (read("meta")?, read("data")?) else {
            return Ok(None);
        };
        let meta: SnapshotMeta<NodeId, BasicNode> =
            codec::decode(&meta).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_store_of_json_records_reads_and_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let entry = |index| Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Blank,
        };
        {
            // What format 1 wrote: JSON records and no format key.
            let db = sled::open(dir.path().join("raft.sled")).unwrap();
            let log = db.open_tree("log").unwrap();
            log.insert(key(1), serde_json::to_vec(&entry(1)).unwrap()).unwrap();
            db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let mut logs = store.log_store();
        assert_eq!(logs.try_get_log_entries(1..2).await.unwrap(), vec![entry(1)]);
        let binary = codec::encode(&entry(2)).unwrap();
        logs.log.insert(key(2), binary).unwrap();
        assert_eq!(logs.try_get_log_entries(1..3).await.unwrap(), vec![entry(1), entry(2)]);
        store.db.insert(FORMAT_KEY, &(FORMAT + 1).to_be_bytes()).unwrap();
        store.db.flush().unwrap();
        drop((logs, store));
        let refused = Store::open(dir.path())
            .err()
            .expect("a newer format refused")
            .to_string();
        assert!(
            refused.contains(&format!("store format {}", FORMAT + 1)) && refused.contains("newer omraft"),
            "{refused}"
        );
    }

    #[test]
    fn a_panic_while_the_state_is_held_does_not_make_readers_panic() {
        let dir = tempfile::tempdir().unwrap();
        let sm = Store::open(dir.path()).unwrap().state_machine().unwrap();
        let held = sm.clone();
        let panicked = std::thread::spawn(move || {
            let _guard = held.write();
            panic!("a bug while applying");
        })
        .join();
        assert!(panicked.is_err());
        assert!(sm.shared.data.is_poisoned(), "the lock is poisoned");
        assert_eq!(sm.read(|d| d.last_applied), None, "and still readable");
        sm.write().last_applied = None;
    }
}
