//! `omd`: one node of the cluster, split by concern.
//!
//! - `node`: the store, the current Raft incarnation, the TLS identity, and the primitives the
//!   API builds on (`write`, `read_linearizable`, both through `via_leader`).
//! - `lease`: this node's lease, its renewal loop, and the grants it records as the leader.
//! - `watchdog`: arming, petting and disarming the watchdog that resets a node that can no
//!   longer act.
//! - `reports`: what the node reports of itself (watchdog presence, volume groups).
//! - `ssh_trust`: `cluster.ssh_trust`'s key pair and `authorized_keys`.
//! - `run`: starts a node and spawns every loop, handing the applier and the orchestrator
//!   their narrow view of the node.

pub mod lease;
pub mod node;
pub mod reports;
pub mod run;
pub mod ssh_trust;
pub mod watchdog;

pub use node::{
    cluster_name, tls_dir, Member, Node, ProposeError, Settings, StartError, NOT_COMMITTED, OUTCOME_UNKNOWN,
};
pub use watchdog::Watchdog;

#[cfg(test)]
mod tests {
    use crate::model::{ClusterState, Migration, Phase, ServiceState};

    #[test]
    fn hosting_means_a_started_service_here_or_a_live_switch_from_or_to_here() {
        let mut state = ClusterState::default();
        let started = ServiceState {
            provisioned: true,
            started: true,
            placement: Some(1),
            ..ServiceState::default()
        };
        state.services.insert("demo/svc/a".into(), started.clone());
        assert!(state.hosts(1));
        assert!(!state.hosts(2), "another node's service");
        for idle in [
            ServiceState {
                started: false,
                ..started.clone()
            },
            ServiceState {
                provisioned: false,
                ..started.clone()
            },
        ] {
            state.services.insert("demo/svc/a".into(), idle);
            assert!(!state.hosts(1));
        }
        let switching = ServiceState {
            migration: Some(Migration {
                id: 1,
                from: 1,
                to: 2,
                phase: Phase::Migrating,
                error: None,
                dual: true,
            }),
            ..started
        };
        state.services.insert("demo/svc/a".into(), switching);
        assert!(state.hosts(1) && state.hosts(2));
        assert!(!state.hosts(3), "not a participant");
    }
}
