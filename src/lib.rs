//! omraft: a cluster manager for highly available KVM guests on DRBD 9 replicated volumes,
//! whose cluster state lives in a Raft log (openraft) stored in sled.
//!
//! - [`model`]: the replicated state, the log's commands and the pure `apply`.
//! - [`config`]: object configuration: INI format, keyword catalogs, references.
//! - [`lease`]: the lease rules: when a node may run services.
//! - [`orchestrator`]: the leader's failover decisions.
//! - [`raft`]: openraft types, the sled store and the tonic transport between nodes.
//! - [`applier`]: per-node reconciliation of desired and observed state.
//! - [`api`]: the gRPC services, authentication and the only code that knows protobuf.
//! - [`drivers`]: the external systems a node manages (LVM, DRBD, libvirt, watchdog, ssh).
//! - [`sim`]: simulators of LVM, DRBD (command-compatible) and libvirt, for machines without
//!   the real systems.
//! - [`daemon`]: `omd`, wiring a node together.
//! - [`cli`]: the `omctl` command line.
//! - [`testing`]: for tests only: what a test that cannot run here does (fail, or skip when
//!   allowed).

pub mod api;
pub mod applier;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod drivers;
pub mod lease;
pub mod model;
pub mod orchestrator;
pub mod raft;
pub mod sim;
pub mod testing;

/// Code generated from `proto/omraft.proto`.
pub mod pb {
    tonic::include_proto!("omraft.v1");
}
