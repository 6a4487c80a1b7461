//! `omd`: one node of the cluster, split by concern.
//!
//! - `node`: the store, the current Raft incarnation, the TLS identity, and the primitives the
//!   API builds on (`write`, `read_linearizable`, both through `via_leader`).
//! - `batch`: group commit, the writes waiting on the leader gathered into one log entry.
//! - `lease`: this node's lease, its renewal loop, and the grants it records as the leader.
//! - `watchdog`: arming, petting and disarming the watchdog that resets a node that can no
//!   longer act.
//! - `votes`: the vote hold, which lets a new leader count its wait for earlier leases from
//!   before its election.
//! - `reports`: what the node reports of itself (watchdog presence, volume groups).
//! - `ssh_trust`: `cluster.ssh_trust`'s key pair and `authorized_keys`.
//! - `run`: starts a node and spawns every loop, handing the applier and the orchestrator
//!   their narrow view of the node.

pub mod batch;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod reports;
pub mod run;
pub mod ssh_trust;
pub mod votes;
pub mod watchdog;

pub use node::{
    cluster_name, tls_dir, Member, Node, ProposeError, Settings, StartError, NOT_COMMITTED, OUTCOME_UNKNOWN,
};
pub use watchdog::Watchdog;
