//! This node's lease and, as the leader, the leases it grants. The rules are pure
//! (`crate::lease`); here they meet the clock, Raft and the network: `renew` asks for a lease
//! every `lease.renew` (from itself when it leads, else from the leader), wakes the applier
//! the moment the lease lapses, and drives the watchdog; `Node::grant_lease` serves the
//! `Lease` RPC and records each grant for the orchestrator (`Leases::grants`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Node;
use crate::lease::{Grant, Grants, Lease, Source};
use crate::model::NodeId;
use crate::pb;

/// This node's lease, and the leases it granted as the leader.
#[derive(Debug, Default)]
pub struct Leases {
    lease: Mutex<Lease>,
    /// Woken when the lease lapses, so the applier fences at once.
    lapsed: Arc<Notify>,
    /// As the leader: when this node last granted each node a lease, by term.
    grants: Mutex<Grants>,
    /// A clean stop is releasing what this node holds: no lease from now on.
    releasing: AtomicBool,
}

impl Leases {
    /// Whether the lease is valid at `now` for a node that applied the log up to `applied`.
    pub fn valid(&self, now: Instant, applied: u64) -> bool {
        !self.releasing.load(SeqCst) && self.lease.lock().expect("lease lock").is_valid(now, applied)
    }

    /// What is left of the lease at `now` (without the applied-index condition).
    fn remaining(&self, now: Instant) -> Option<Duration> {
        self.lease.lock().expect("lease lock").remaining(now)
    }

    /// Forgets the lease: this node leaves its cluster.
    pub fn revoke(&self) {
        self.lease.lock().expect("lease lock").revoke();
    }

    /// No lease from now on (a clean stop releases what this node holds); wakes the applier.
    pub fn release(&self) {
        self.releasing.store(true, SeqCst);
        self.revoke();
        self.lapsed.notify_waiters();
    }

    /// Woken when the lease lapses.
    pub fn lapsed(&self) -> Arc<Notify> {
        self.lapsed.clone()
    }

    /// The leases this node granted as the leader of `term`, by node id.
    pub fn grants(&self, term: u64) -> BTreeMap<NodeId, Instant> {
        self.grants.lock().expect("grants lock").of_term(term)
    }
}

impl Node {
    /// Whether this node holds a valid lease and applied the log as far as its grant requires.
    pub fn lease_valid(&self) -> bool {
        let applied = self
            .member()
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0);
        self.leases.valid(Instant::now(), applied)
    }

    /// What is left of this node's lease.
    pub fn lease_remaining(&self) -> Option<Duration> {
        if !self.lease_valid() {
            return None;
        }
        self.leases.remaining(Instant::now())
    }

    /// As the leader: confirms leadership with a quorum and grants a lease (`Lease` RPC).
    pub async fn grant_lease(&self, to: NodeId) -> Result<Grant, String> {
        let m = self.member();
        let duration =
            m.sm.read(|d| crate::model::catalog::lease_config(&d.state.config).duration);
        // The term read before the quorum confirms: if it moved on meanwhile, the grant is
        // recorded under an older term and the orchestrator ignores it (it waits instead).
        let term = m.raft.metrics().borrow().current_term;
        let epoch = self.votes.epoch().await;
        match m.raft.ensure_linearizable().await {
            // A vote given while the quorum confirmed: the new leader's wait may not cover this
            // grant (`votes`), so it is not given.
            Ok(_) if !self.votes.confirmed(epoch, Instant::now()).await => {
                Err("this node voted for another candidate while confirming its leadership".into())
            }
            Ok(read) => {
                // Recorded after the quorum confirmed: the node's lease cannot outlast this
                // instant plus the duration (it runs from the node's request, sent earlier).
                self.leases
                    .grants
                    .lock()
                    .expect("grants lock")
                    .record(term, to, Instant::now());
                Ok(Grant {
                    duration_ms: duration.as_millis() as u64,
                    commit_index: read.map(|l| l.index).unwrap_or(0),
                })
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Renews this node's lease every `lease.renew`: from itself when it leads, else from the
/// leader. Wakes the applier the moment the lease lapses; then the watchdog rule.
pub async fn renew(weak: Weak<Node>) {
    let mut was_valid = false;
    loop {
        let Some(node) = Node::alive(&weak) else { return };
        let m = node.member();
        let (cfg, witness) = m.sm.read(|d| {
            let witness = d.state.nodes.get(&m.id).is_some_and(|n| n.witness);
            (crate::model::catalog::lease_config(&d.state.config), witness)
        });
        let sent = Instant::now();
        let leader = node.leader();
        let grant = match crate::lease::source(m.id, witness, leader.as_ref().map(|l| l.0)) {
            Source::Nowhere(why) => Err(why.to_string()),
            Source::Itself => tokio::time::timeout(cfg.renew, node.grant_lease(m.id))
                .await
                .unwrap_or_else(|_| Err("timed out".into())),
            Source::Leader(_) => {
                let addr = leader.map(|l| l.1).unwrap_or_default();
                let me = crate::raft::codec::encode(&m.id).expect("serialize node id");
                let req = node.node_request(pb::RaftMessage { data: me }, cfg.renew);
                let call = |ch| async move { pb::raft_client::RaftClient::new(ch).lease(req).await };
                match node.channels.call(&addr, cfg.renew, call).await {
                    Ok(reply) => crate::raft::codec::decode(&reply.data).unwrap_or_else(|e| Err(e.to_string())),
                    Err(s) => Err(s.message().to_string()),
                }
            }
        };
        match grant {
            Ok(g) => node.leases.lease.lock().expect("lease lock").granted(sent, g),
            Err(e) => tracing::debug!("lease renewal: {e}"),
        }
        let valid = node.lease_valid();
        if witness {
            node.watchdog.idle();
        } else {
            super::reports::report_watchdog(&node, m.id);
            let hosting = m.sm.read(|d| d.state.hosts(m.id));
            node.watchdog
                .step(hosting, node.lease_remaining(), &cfg, node.closing());
        }
        if was_valid && !valid {
            tracing::warn!("lease lost: stopping this node's services");
            node.leases.lapsed.notify_waiters();
        } else if !was_valid && valid {
            tracing::info!("lease acquired");
        }
        was_valid = valid;
        let wait = crate::lease::next_renewal(node.leases.remaining(Instant::now()), cfg.renew);
        drop((node, m));
        tokio::time::sleep(wait).await;
    }
}
