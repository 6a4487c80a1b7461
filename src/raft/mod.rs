//! Raft plumbing: the openraft type configuration, the sled-backed log and state machine
//! store, and the tonic transport between nodes.
//!
//! This module knows openraft and sled; it does not interpret commands (that is `model`) and
//! it does not decide anything (that is the API and, later, the orchestrator).

pub mod codec;
pub mod journal;
pub mod network;
pub mod store;

use std::io::Cursor;

use crate::model::{Command, Response};

openraft::declare_raft_types!(
    /// omraft's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Metrics = openraft::RaftMetrics<NodeId, openraft::BasicNode>;

/// Raft timing. The election timeout stays well above the fsync latency of an append.
///
/// openraft 0.9 lets a follower stand for election only `election_timeout_max` (its leader
/// lease: voters refuse votes that long after the leader's last heartbeat) plus a random
/// timeout in `[min, max]` after it last heard from the leader: an election after a leader's
/// loss takes `max + [min, max]`. A maximum of 1.5 times the minimum keeps that short while
/// the random spread still separates candidates.
pub fn config(heartbeat_ms: u64, election_min_ms: u64) -> openraft::Config {
    openraft::Config {
        cluster_name: "omraft".into(),
        heartbeat_interval: heartbeat_ms,
        election_timeout_min: election_min_ms,
        election_timeout_max: election_min_ms * 3 / 2,
        // The default 200 ms is too short for a snapshot chunk on a loaded machine.
        install_snapshot_timeout: 5_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(5_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Default::default()
    }
}
