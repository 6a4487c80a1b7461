//! The sled-backed Raft log and state machine.
//!
//! One sled database per node (`raft.sled`), with trees:
//! - `log`: entries, each cut in chunks of at most `CHUNK` bytes keyed by big-endian index and
//!   chunk number;
//! - `raft`: the vote, the committed log id and the last purged log id;
//! - `local`: this node's identity (id, cluster secret), which is not replicated.
//!
//! The current snapshot (meta and data) is a file beside it, `raft.snapshot`, written whole to
//! a temporary file, synced and renamed.
//!
//! sled's own flush is not power-loss safe (it uses `sync_file_range`), so every write that
//! openraft must find again after a crash (appends, votes, truncations) is followed by `flush`
//! and an `fsync` of the database file and its directory before it is acknowledged.
//!
//! sled writes a record larger than a quarter of its segment (a large value, or a tree node
//! holding several) to a file of its own under `blobs/`, and never syncs those files: such a
//! record could be acknowledged and lost on power loss, or leave the log pointing at a torn
//! file that sled then refuses to open. Hence 4 MiB segments and 16 KiB chunks: sled splits a
//! leaf past 16 records, so a node stays near 300 KiB, far below the 1 MiB at which sled would
//! make a blob; and the snapshot, which grows with the cluster, is kept out of sled.
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
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde::{Deserialize, Serialize};

use super::journal::{self, Journal};
use super::{codec, Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::model::{events, ClusterState, Response};

/// The store's format: 1 held JSON records; 2 writes binary ones (`codec`) and reads both;
/// 3 may hold group commits (`Command::Batch`), which an older omraft could not read: it
/// refuses the store with a message instead of failing on the first such entry; 4 cuts log
/// entries in chunks, uses `SEGMENT_SIZE` and keeps the snapshot in its own file. A store of
/// formats 1 to 3 is copied into format 4 when opened (`migrate`).
pub const FORMAT: u64 = 4;
const FORMAT_KEY: &str = "format";

/// sled's segment size: a record over a quarter of it would become an unsynced blob.
const SEGMENT_SIZE: usize = 4 << 20;
/// The largest piece of a log entry sled holds as one value.
const CHUNK: usize = 16 << 10;
/// What a snapshot file starts with.
const SNAPSHOT_MAGIC: &[u8; 8] = b"omraftS1";

/// A node's sled database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// The database directory, `raft.sled`.
    dir: PathBuf,
    /// The snapshot file, `raft.snapshot`.
    snapshot: PathBuf,
    /// The database file, kept open to fsync it.
    file: Arc<File>,
    dir_file: Arc<File>,
    /// How long the log's writes take (the metrics).
    pub timings: Arc<LogTimings>,
}

/// How long appending to the log and syncing it take, and the last commit index Raft saved:
/// what the metrics show of the store.
pub struct LogTimings {
    /// Writing an append's entries to sled (not yet durable), in seconds.
    pub append: Histogram,
    /// Making them durable (sled flush and fsyncs), in seconds.
    pub sync: Histogram,
    pub committed: AtomicU64,
}

impl Default for LogTimings {
    fn default() -> LogTimings {
        // 50 µs to about 3 s.
        let buckets = || exponential_buckets(0.000_05, 2.0, 16);
        LogTimings {
            append: Histogram::new(buckets()),
            sync: Histogram::new(buckets()),
            committed: AtomicU64::new(0),
        }
    }
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
    #[error("cannot copy the database in {0} to store format {FORMAT}")]
    Migrate(PathBuf, #[source] std::io::Error),
    #[error("corrupt snapshot file {0}: {1}")]
    Snapshot(PathBuf, String),
    #[error(
        "the database in {0} has store format {1}, written by a newer omraft (this one reads formats 1 to {FORMAT}): \
         run that version or a newer one"
    )]
    Format(PathBuf, u64),
}

impl Store {
    /// Opens (or creates) the database under `dir`, copying an older format's into this one.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("raft.sled");
        let snapshot = dir.join("raft.snapshot");
        finish_migration(dir).map_err(|e| StoreError::Migrate(path.clone(), e))?;
        let segment = sled_segment_size(&path).map_err(StoreError::Sync)?;
        let db = open_sled(&path, segment.unwrap_or(SEGMENT_SIZE))?;
        let format = match db.get(FORMAT_KEY)? {
            None if !db.was_recovered() => {
                db.insert(FORMAT_KEY, &FORMAT.to_be_bytes())?;
                FORMAT
            }
            None => 1,
            Some(v) => v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX),
        };
        if format > FORMAT {
            return Err(StoreError::Format(path, format));
        }
        let db = if format < FORMAT {
            migrate(dir, db, &snapshot).map_err(|e| StoreError::Migrate(path.clone(), e))?;
            tracing::info!(path = %path.display(), from = format, to = FORMAT, "store copied to the current format");
            open_sled(&path, SEGMENT_SIZE)?
        } else {
            db
        };
        let file = File::open(path.join("db")).map_err(StoreError::Sync)?;
        let dir_file = File::open(&path).map_err(StoreError::Sync)?;
        Ok(Store {
            db,
            dir: path,
            snapshot,
            file: Arc::new(file),
            dir_file: Arc::new(dir_file),
            timings: Arc::default(),
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
        self.dir_file.sync_all()?;
        self.sync_blobs()
    }

    /// Syncs blob files, should sled ever make one despite `CHUNK` and `SEGMENT_SIZE` (it
    /// would be a bug: the log may reach the disk before the blob, which a sync after the fact
    /// cannot order), and says so.
    fn sync_blobs(&self) -> Result<(), std::io::Error> {
        let blobs = self.dir.join("blobs");
        let files = match std::fs::read_dir(&blobs) {
            Ok(files) => files,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut any = false;
        for f in files {
            File::open(f?.path())?.sync_all()?;
            any = true;
        }
        if any {
            File::open(&blobs)?.sync_all()?;
            tracing::warn!(dir = %blobs.display(), "sled wrote a record to a blob file; synced it after the fact");
        }
        Ok(())
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
        let mut data = SmData::default();
        if let Some(snapshot) = self.read_snapshot()? {
            data = codec::decode(snapshot.snapshot.get_ref()).map_err(|e| StoreError::Corrupt("snapshot", e))?;
        }
        let applied = data.last_applied.map_or(0, |l| l.index);
        Ok(StateMachine {
            shared: Arc::new(SmShared {
                journal: Arc::new(Journal::new(applied, journal::CAPACITY)),
                data: RwLock::new(data),
                store: self.clone(),
                counter: AtomicU64::new(0),
                moves: AtomicU64::new(0),
            }),
        })
    }

    /// The snapshot file's meta and data, if there is one.
    fn read_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        let mut bytes = match std::fs::read(&self.snapshot) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Sync(e)),
        };
        let corrupt = |why: &str| StoreError::Snapshot(self.snapshot.clone(), why.into());
        let head = SNAPSHOT_MAGIC.len() + 4;
        if bytes.len() < head || &bytes[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
            return Err(corrupt("not an omraft snapshot"));
        }
        let meta_len = u32::from_be_bytes(bytes[SNAPSHOT_MAGIC.len()..head].try_into().expect("4 bytes")) as usize;
        if bytes.len() - head < meta_len {
            return Err(corrupt("shorter than its header says"));
        }
        let meta = codec::decode(&bytes[head..head + meta_len]).map_err(|e| corrupt(&e.to_string()))?;
        bytes.drain(..head + meta_len);
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }

    /// Replaces the snapshot file, durably.
    fn write_snapshot(&self, meta: &[u8], data: &[u8]) -> Result<(), std::io::Error> {
        write_snapshot_file(&self.snapshot, meta, data)
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
        for t in ["log", "raft"] {
            self.tree(t).clear()?;
        }
        match std::fs::remove_file(&self.snapshot) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(StoreError::Sync(e)),
            _ => {}
        }
        self.sync().map_err(StoreError::Sync)
    }
}

fn open_sled(path: &Path, segment_size: usize) -> Result<sled::Db, StoreError> {
    sled::Config::new()
        .path(path)
        .cache_capacity(32 * 1024 * 1024)
        .segment_size(segment_size)
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(|e| StoreError::Open(path.to_owned(), e))
}

/// The segment size a sled database was made with (its `conf` file), if it exists.
fn sled_segment_size(path: &Path) -> Result<Option<usize>, std::io::Error> {
    // Text lines, then a 4-byte checksum.
    let conf = match std::fs::read(path.join("conf")) {
        Ok(c) => String::from_utf8_lossy(&c).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(conf
        .lines()
        .find_map(|l| l.strip_prefix("segment_size:"))
        .and_then(|v| v.trim().parse().ok()))
}

fn write_snapshot_file(path: &Path, meta: &[u8], data: &[u8]) -> Result<(), std::io::Error> {
    let len = u32::try_from(meta.len()).map_err(std::io::Error::other)?.to_be_bytes();
    crate::files::write_atomic_parts(path, &[SNAPSHOT_MAGIC, &len, meta, data], 0o600)
}

/// Copies a store of an older format (`db`, opened with its own segment size) into a new
/// database in format `FORMAT`, then puts the new one in its place. The old one stays whole
/// until the new one is synced; a crash in between is finished by `finish_migration`.
fn migrate(dir: &Path, db: sled::Db, snapshot: &Path) -> Result<(), std::io::Error> {
    let (path, new_path, old_path) = migration_paths(dir);
    let io = std::io::Error::other;
    if new_path.exists() {
        std::fs::remove_dir_all(&new_path)?;
    }
    let new = sled::Config::new()
        .path(&new_path)
        .segment_size(SEGMENT_SIZE)
        .open()
        .map_err(io)?;
    for name in ["raft", "local"] {
        let (from, to) = (db.open_tree(name).map_err(io)?, new.open_tree(name).map_err(io)?);
        for kv in from.iter() {
            let (k, v) = kv.map_err(io)?;
            to.insert(k, v).map_err(io)?;
        }
    }
    let (from, to) = (db.open_tree("log").map_err(io)?, new.open_tree("log").map_err(io)?);
    for kv in from.iter() {
        let (k, v) = kv.map_err(io)?;
        let index = k
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| std::io::Error::other(format!("a log key of {} bytes", k.len())))?;
        let mut batch = sled::Batch::default();
        put_chunks(&mut batch, index, &v);
        to.apply_batch(batch).map_err(io)?;
    }
    let old_snapshot = db.open_tree("snapshot").map_err(io)?;
    if let (Some(meta), Some(data)) = (
        old_snapshot.get("meta").map_err(io)?,
        old_snapshot.get("data").map_err(io)?,
    ) {
        write_snapshot_file(snapshot, &meta, &data)?;
    }
    new.insert(FORMAT_KEY, &FORMAT.to_be_bytes()).map_err(io)?;
    new.flush().map_err(io)?;
    File::open(new_path.join("db"))?.sync_all()?;
    File::open(&new_path)?.sync_all()?;
    drop((new, db));
    std::fs::rename(&path, &old_path)?;
    std::fs::rename(&new_path, &path)?;
    File::open(dir)?.sync_all()?;
    std::fs::remove_dir_all(&old_path)
}

/// The database, the copy being made and the old one being replaced.
fn migration_paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("raft.sled"),
        dir.join("raft.sled.new"),
        dir.join("raft.sled.old"),
    )
}

/// Finishes or undoes a migration a crash interrupted: a synced copy waiting for its rename
/// takes its place; an unfinished copy, or the old database after the swap, is removed.
fn finish_migration(dir: &Path) -> Result<(), std::io::Error> {
    let (path, new_path, old_path) = migration_paths(dir);
    if !path.exists() && new_path.exists() {
        std::fs::rename(&new_path, &path)?;
        File::open(dir)?.sync_all()?;
    }
    for leftover in [new_path, old_path] {
        if leftover.exists() {
            std::fs::remove_dir_all(&leftover)?;
        }
    }
    Ok(())
}

/// A log key: the entry's index, then the chunk's number, both big-endian.
fn key(index: u64, chunk: u32) -> [u8; 12] {
    let mut k = [0; 12];
    k[..8].copy_from_slice(&index.to_be_bytes());
    k[8..].copy_from_slice(&chunk.to_be_bytes());
    k
}

fn parse_key(k: &[u8]) -> Option<(u64, u32)> {
    let index = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
    let chunk = u32::from_be_bytes(k.get(8..)?.try_into().ok()?);
    Some((index, chunk))
}

/// Adds an encoded entry's chunks to `batch`.
fn put_chunks(batch: &mut sled::Batch, index: u64, bytes: &[u8]) {
    for (n, part) in bytes.chunks(CHUNK).enumerate() {
        batch.insert(&key(index, n as u32), part);
    }
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

    /// The entries with indexes in `start..end`, each put together from its chunks.
    fn read(&self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let corrupt = |what: String| read_err(std::io::Error::other(format!("the log's {what}")));
        let mut out = Vec::new();
        let mut current: Option<(u64, u32, Vec<u8>)> = None;
        let mut finish = |current: Option<(u64, u32, Vec<u8>)>| -> Result<(), StorageError> {
            if let Some((_, _, bytes)) = current {
                out.push(codec::decode(&bytes).map_err(read_err)?);
            }
            Ok(())
        };
        for kv in self.log.range(key(start, 0)..key(end, 0)) {
            let (k, v) = kv.map_err(read_err)?;
            let (index, chunk) = parse_key(&k).ok_or_else(|| corrupt(format!("key of {} bytes", k.len())))?;
            match &mut current {
                Some((i, last, bytes)) if *i == index && *last + 1 == chunk => {
                    bytes.extend_from_slice(&v);
                    *last = chunk;
                }
                _ if chunk == 0 => finish(current.replace((index, 0, v.to_vec())))?,
                _ => return Err(corrupt(format!("entry {index} misses the chunk before {chunk}"))),
            }
        }
        finish(current)?;
        Ok(out)
    }

    /// Writes `entries` to the log, replacing what their indexes held, without syncing.
    fn write_entries(&self, entries: impl IntoIterator<Item = Entry>) -> Result<(), StorageError> {
        let mut encoded = Vec::new();
        for entry in entries {
            encoded.push((entry.log_id.index, codec::encode(&entry).map_err(write_err)?));
        }
        let mut batch = sled::Batch::default();
        // What these indexes held goes first: a longer entry's last chunks must not outlive it
        // (openraft truncates a conflicting suffix before appending, so this is normally empty).
        if let (Some((first, _)), Some((last, _))) = (encoded.first(), encoded.last()) {
            for k in self.log.range(key(*first, 0)..key(last.saturating_add(1), 0)).keys() {
                batch.remove(k.map_err(write_err)?);
            }
        }
        for (index, bytes) in &encoded {
            put_chunks(&mut batch, *index, bytes);
        }
        self.log.apply_batch(batch).map_err(write_err)
    }

    /// Removes the log's keys in `range` (of keys), in one batch.
    fn remove(&self, range: impl RangeBounds<[u8; 12]>) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for k in self.log.range(range).keys() {
            batch.remove(k.map_err(write_err)?);
        }
        self.log.apply_batch(batch).map_err(write_err)
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
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        self.read(start, end)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.meta_get("last_purged")?;
        let last = match self.log.last().map_err(read_err)? {
            Some((k, _)) => {
                let (index, _) = parse_key(&k).unwrap_or_default();
                let entry = self.read(index, index.saturating_add(1))?;
                Some(
                    entry
                        .last()
                        .ok_or_else(|| read_err(std::io::Error::other("the log's last entry is unreadable")))?
                        .log_id,
                )
            }
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
        let index = committed.map_or(0, |c| c.index);
        self.store.timings.committed.store(index, Ordering::Relaxed);
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
        let started = std::time::Instant::now();
        self.write_entries(entries)?;
        self.store.timings.append.observe(started.elapsed().as_secs_f64());
        // Acknowledge only once the entries are on disk.
        let store = self.store.clone();
        let res = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let synced = store.sync();
            store.timings.sync.observe(started.elapsed().as_secs_f64());
            synced
        })
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
        self.remove(key(log_id.index, 0)..)?;
        self.sync()
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash in between leaves entries that are ignored.
        self.meta_set("last_purged", &log_id)?;
        self.sync()?;
        self.remove(..=key(log_id.index, u32::MAX))
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
    counter: AtomicU64,
    /// Commands applied that give appliers work at once (`Command::moves_a_service`).
    moves: AtomicU64,
    /// The events of the entries applied since the last snapshot.
    journal: Arc<Journal>,
}

/// The state machine: `ClusterState` in memory, the last snapshot in its file. Cheap to clone.
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

    /// The events of the entries this node applied (`omctl events`, the metrics).
    pub fn journal(&self) -> &Arc<Journal> {
        &self.shared.journal
    }

    /// How many commands that give appliers work at once (`Command::moves_a_service`) this
    /// node applied since it started: an applier that sees it move runs at once.
    pub fn moves(&self) -> u64 {
        self.shared.moves.load(Ordering::Relaxed)
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

    /// Writes the snapshot file on a blocking thread (tens of megabytes for a large cluster:
    /// never on an async worker), and gives `data` back.
    async fn persist_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, StorageError> {
        let meta_bytes = codec::encode(meta).map_err(Self::snapshot_err)?;
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || store.write_snapshot(&meta_bytes, &data).map(|()| data))
            .await
            .map_err(Self::snapshot_err)?
            .map_err(Self::snapshot_err)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Copy under the lock, serialize outside it (on a blocking thread): applying goes on
        // meanwhile.
        let data = self.read(SmData::clone);
        let (last_applied, membership) = (data.last_applied, data.membership.clone());
        let bytes = tokio::task::spawn_blocking(move || codec::encode(&data))
            .await
            .map_err(Self::snapshot_err)?
            .map_err(Self::snapshot_err)?;
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
        let bytes = self.persist_snapshot(&meta, bytes).await?;
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
            let mut events = Vec::new();
            out.push(match entry.payload {
                EntryPayload::Blank => Response::Done,
                EntryPayload::Normal(cmd) => {
                    if cmd.moves_a_service() {
                        self.shared.moves.fetch_add(1, Ordering::Relaxed);
                    }
                    // `apply` is meant never to panic. Should it, the entry is not marked
                    // applied and the error stops Raft on this node (every node applies the
                    // same entry, so every node stops there): nothing is applied after a
                    // half-applied entry, and readers keep reading instead of panicking on a
                    // poisoned lock.
                    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        events::apply(&mut data.state, &cmd, &mut events)
                    }));
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
                    let voters = m.voter_ids().collect();
                    let learners = m.learner_ids().collect();
                    events.push(events::membership(&data.state, &voters, &learners));
                    data.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::Done
                }
            });
            data.last_applied = Some(entry.log_id);
            self.shared.journal.record(entry.log_id.index, events);
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
        let started = std::time::Instant::now();
        let bytes = snapshot.into_inner();
        let len = bytes.len();
        // Decoded on a blocking thread (a large state takes seconds): the node's async workers
        // go on answering the leader's heartbeats and appends meanwhile.
        let (decoded, bytes) = tokio::task::spawn_blocking(move || (codec::decode::<SmData>(&bytes), bytes))
            .await
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let mut new = decoded.map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        new.last_applied = meta.last_log_id;
        new.membership = meta.last_membership.clone();
        self.persist_snapshot(meta, bytes).await?;
        let mut data = self.write();
        *data = new;
        self.shared.journal.reset(meta.last_log_id.map_or(0, |l| l.index));
        drop(data);
        tracing::info!(
            bytes = len,
            index = meta.last_log_id.map_or(0, |l| l.index),
            ms = started.elapsed().as_millis() as u64,
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // Read on a blocking thread: the file may hold tens of MB.
        let store = self.shared.store.clone();
        let read = tokio::task::spawn_blocking(move || store.read_snapshot())
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        read.map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_id(index: u64) -> LogId {
        LogId::new(openraft::CommittedLeaderId::new(1, 1), index)
    }

    /// An entry putting a key of `size` bytes.
    fn entry(index: u64, size: usize) -> Entry {
        Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(crate::model::Command::PutKey {
                path: crate::model::ObjectPath::parse("system/cfg/c").unwrap(),
                key: "k".into(),
                value: vec![index as u8; size],
                mode: crate::model::KeyMode::Add,
            }),
        }
    }

    fn blobs(dir: &Path) -> Vec<std::fs::DirEntry> {
        match std::fs::read_dir(dir.join("raft.sled").join("blobs")) {
            Ok(d) => d.map(Result::unwrap).collect(),
            Err(_) => vec![],
        }
    }

    #[tokio::test]
    async fn no_log_entry_or_snapshot_becomes_a_blob_sled_would_not_sync() {
        let dir = tempfile::tempdir().unwrap();
        let big = crate::model::MAX_COMMAND_BYTES;
        let sizes = [10, CHUNK - 100, CHUNK, CHUNK + 1, 256 << 10, 300 << 10, big];
        let mut written = Vec::new();
        {
            let store = Store::open(dir.path()).unwrap();
            let logs = store.log_store();
            // Every size alone, then a backlog of large entries in one append, three times.
            let mut index = 0;
            for _ in 0..3 {
                for size in sizes {
                    index += 1;
                    logs.write_entries([entry(index, size)]).unwrap();
                    written.push(entry(index, size));
                    store.sync().unwrap();
                }
                let backlog: Vec<_> = (0..40).map(|i| entry(index + 1 + i, 200 << 10)).collect();
                index += 40;
                logs.write_entries(backlog.clone()).unwrap();
                written.extend(backlog);
                store.sync().unwrap();
            }
            // An entry written again shorter: the longer one's last chunks go.
            logs.write_entries([entry(7, 10)]).unwrap();
            written[6] = entry(7, 10);
            store.sync().unwrap();
            // A snapshot larger than any segment.
            store.write_snapshot(b"meta", &vec![7; 20 << 20]).unwrap();
            assert!(
                blobs(dir.path()).is_empty(),
                "sled wrote blobs: {:?}",
                blobs(dir.path())
            );
        }
        let store = Store::open(dir.path()).unwrap();
        let mut logs = store.log_store();
        let last = written.len() as u64;
        assert_eq!(logs.try_get_log_entries(1..=last).await.unwrap(), written);
        assert_eq!(logs.try_get_log_entries(7..8).await.unwrap(), vec![entry(7, 10)]);
        assert_eq!(logs.get_log_state().await.unwrap().last_log_id, Some(log_id(last)));
        assert_eq!(
            std::fs::read(dir.path().join("raft.snapshot")).unwrap().len(),
            8 + 4 + 4 + (20 << 20)
        );
        logs.truncate(log_id(8)).await.unwrap();
        logs.purge(log_id(3)).await.unwrap();
        assert_eq!(logs.try_get_log_entries(..).await.unwrap(), written[3..7].to_vec());
        assert!(
            blobs(dir.path()).is_empty(),
            "sled wrote blobs: {:?}",
            blobs(dir.path())
        );
    }

    #[tokio::test]
    async fn an_older_store_is_copied_into_this_format_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let blank = |index| Entry {
            log_id: log_id(index),
            payload: openraft::EntryPayload::Blank,
        };
        let vote = Vote::new(3, 2);
        let meta = SnapshotMeta::<NodeId, BasicNode> {
            last_log_id: Some(log_id(1)),
            last_membership: Default::default(),
            snapshot_id: "s".into(),
        };
        let data = SmData {
            last_applied: Some(log_id(1)),
            ..Default::default()
        };
        {
            // What formats 1 to 3 wrote: sled's default segments, 8-byte log keys (format 1:
            // JSON records and no format key), the snapshot in a tree.
            let db = sled::open(dir.path().join("raft.sled")).unwrap();
            let log = db.open_tree("log").unwrap();
            log.insert(2u64.to_be_bytes(), serde_json::to_vec(&blank(2)).unwrap())
                .unwrap();
            log.insert(3u64.to_be_bytes(), codec::encode(&entry(3, 300 << 10)).unwrap())
                .unwrap();
            let raft = db.open_tree("raft").unwrap();
            raft.insert("vote", codec::encode(&vote).unwrap()).unwrap();
            db.open_tree("local")
                .unwrap()
                .insert("node_id", codec::encode(&9u64).unwrap())
                .unwrap();
            let snapshot = db.open_tree("snapshot").unwrap();
            snapshot.insert("meta", codec::encode(&meta).unwrap()).unwrap();
            snapshot.insert("data", codec::encode(&data).unwrap()).unwrap();
            db.flush().unwrap();
            assert_eq!(
                blobs(dir.path()).len(),
                1,
                "the old layout made a blob of the large entry"
            );
        }
        // A copy a crash interrupted is made again.
        std::fs::create_dir(dir.path().join("raft.sled.new")).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut logs = store.log_store();
        assert_eq!(
            logs.try_get_log_entries(2..4).await.unwrap(),
            vec![blank(2), entry(3, 300 << 10)]
        );
        assert_eq!(logs.read_vote().await.unwrap(), Some(vote));
        assert_eq!(store.local_get::<u64>("node_id").unwrap(), Some(9));
        let mut sm = store.state_machine().unwrap();
        assert_eq!(sm.read(|d| d.last_applied), Some(log_id(1)));
        let current = sm
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("the snapshot moved to its file");
        assert_eq!(current.meta, meta);
        assert_eq!(sled_segment_size(store.path()).unwrap(), Some(SEGMENT_SIZE));
        assert!(blobs(dir.path()).is_empty());
        for leftover in ["raft.sled.new", "raft.sled.old"] {
            assert!(!dir.path().join(leftover).exists(), "{leftover} left behind");
        }

        // A new entry in the new layout, then a newer format refused.
        logs.write_entries([blank(4)]).unwrap();
        assert_eq!(logs.try_get_log_entries(2..).await.unwrap().len(), 3);
        store.db.insert(FORMAT_KEY, &(FORMAT + 1).to_be_bytes()).unwrap();
        store.sync().unwrap();
        drop((logs, sm, current, store));
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
    fn a_copy_interrupted_between_its_renames_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.local_set("node_id", &5u64).unwrap();
        }
        // The crash came after the old database moved aside, before the new one took its place.
        std::fs::rename(dir.path().join("raft.sled"), dir.path().join("raft.sled.new")).unwrap();
        std::fs::create_dir(dir.path().join("raft.sled.old")).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.local_get::<u64>("node_id").unwrap(), Some(5));
        assert!(!dir.path().join("raft.sled.old").exists());
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
