//! Where a service runs: its `placement` policy ranks the nodes it may run on, and its
//! `priority` orders the services that move at once. Provision, failover, switch without a
//! node and giveback all ask here; takeover goes where the operator is.
//!
//! Policies (the service's `placement` keyword):
//! - `nodes order`: the order of its `nodes` keyword.
//! - `spread`: the node with the fewest started services (itself not counted; a switch in
//!   progress counts at its target), ties by nodes order.
//! - `score`: the node with the most free memory and free volume group space, as the nodes
//!   last reported them (`ClusterState::memory`, `ClusterState::vgs` less what volumes
//!   allocated there): each is counted as a share of the best candidate's (per mille) and the
//!   two shares are added; ties by nodes order. A node that reported nothing counts zero.
//!
//! Pure, like the rest of `model/`: the ranking depends on the state alone (and what the
//! caller already decided in the same round), so `apply` may use it.

use std::collections::BTreeMap;

use super::path::ObjectPath;
use super::{ClusterState, NodeId};
use crate::config::ini::DEFAULT;

/// A service's `placement` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    NodesOrder,
    Spread,
    Score,
}

impl Policy {
    /// The policy a `placement` value names.
    pub fn parse(value: &str) -> Option<Policy> {
        match value {
            "nodes order" => Some(Policy::NodesOrder),
            "spread" => Some(Policy::Spread),
            "score" => Some(Policy::Score),
            _ => None,
        }
    }
}

/// `priority` when unset (the catalog's default).
pub const DEFAULT_PRIORITY: u64 = 50;

/// Services already sent to each node in the same round of decisions (the orchestrator's
/// tick): `spread` counts them as started there.
pub type Planned = BTreeMap<NodeId, u64>;

/// Per mille: how `score` weighs each resource against the best candidate's.
const SHARE: u128 = 1000;

impl ClusterState {
    /// The `placement` policy of the service at `path`. A value the catalog would refuse can
    /// only come from a reference (`{...}`), whose result is not checked at configuration time:
    /// it falls back to `nodes order`.
    pub fn placement_policy(&self, path: &ObjectPath) -> Policy {
        self.service_keyword(path, "placement")
            .and_then(|v| Policy::parse(&v))
            .unwrap_or(Policy::NodesOrder)
    }

    /// The `priority` of the service at `path`: when several services move in one round, the
    /// lower number moves first (and so gets the node its policy prefers).
    pub fn priority(&self, path: &ObjectPath) -> u64 {
        self.service_keyword(path, "priority")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_PRIORITY)
    }

    fn service_keyword(&self, path: &ObjectPath, keyword: &str) -> Option<String> {
        let obj = self.objects.get(path)?;
        self.eval(path, &obj.config, DEFAULT, keyword, None).ok().flatten()
    }

    /// The started services that run on `node` or are being switched to it, `except` one.
    pub fn started_on(&self, node: NodeId, except: &ObjectPath) -> u64 {
        let on = self
            .services
            .iter()
            .filter(|(key, s)| *key != except && s.provisioned && s.started)
            .filter(|(_, s)| s.migration.as_ref().map_or(s.placement, |m| Some(m.to)) == Some(node))
            .count();
        u64::try_from(on).unwrap_or(u64::MAX)
    }

    /// Bytes free in `node`'s volume groups, as it last reported them less what the volumes
    /// allocated there; 0 without a report.
    pub fn free_capacity(&self, node: NodeId) -> u64 {
        let Some(vgs) = self.vgs.get(&node) else { return 0 };
        vgs.iter()
            .map(|(vg, size)| size.saturating_sub(self.vg_used(node, vg)))
            .fold(0u64, u64::saturating_add)
    }

    /// Bytes of memory `node` last reported available; 0 without a report.
    pub fn free_memory(&self, node: NodeId) -> u64 {
        self.memory.get(&node).copied().unwrap_or(0)
    }
}

/// `candidates` (in the service's nodes order) ranked best first by the service's policy;
/// `planned`: services already sent to each node in this round.
pub fn rank(state: &ClusterState, path: &ObjectPath, candidates: &[NodeId], planned: &Planned) -> Vec<NodeId> {
    let mut ranked: Vec<NodeId> = candidates.to_vec();
    match state.placement_policy(path) {
        Policy::NodesOrder => {}
        Policy::Spread => {
            // A stable sort: equal counts keep the nodes order.
            ranked.sort_by_cached_key(|n| {
                state
                    .started_on(*n, path)
                    .saturating_add(planned.get(n).copied().unwrap_or(0))
            });
        }
        Policy::Score => {
            let best_memory = ranked.iter().map(|n| state.free_memory(*n)).max().unwrap_or(0);
            let best_capacity = ranked.iter().map(|n| state.free_capacity(*n)).max().unwrap_or(0);
            // A stable sort: equal scores keep the nodes order.
            ranked.sort_by_cached_key(|n| {
                std::cmp::Reverse(
                    share(state.free_memory(*n), best_memory) + share(state.free_capacity(*n), best_capacity),
                )
            });
        }
    }
    ranked
}

/// `value` as per mille of `best` (0 when `best` is 0). In u128: a u64 times 1000 cannot
/// overflow it.
fn share(value: u64, best: u64) -> u128 {
    if best == 0 {
        return 0;
    }
    u128::from(value) * SHARE / u128::from(best)
}

/// The node the service's policy prefers among all its nodes: where provision places it and
/// where giveback sends it.
pub fn first_choice(state: &ClusterState, path: &ObjectPath) -> Option<NodeId> {
    rank(state, path, &state.service_nodes(path), &Planned::new())
        .first()
        .copied()
}

/// The node the service's policy prefers among its nodes other than the one holding it:
/// where a switch without a node sends it.
pub fn best_other(state: &ClusterState, path: &ObjectPath) -> Option<NodeId> {
    let holder = state.services.get(path).and_then(|s| s.placement);
    let others: Vec<NodeId> = state
        .service_nodes(path)
        .into_iter()
        .filter(|n| Some(*n) != holder)
        .collect();
    rank(state, path, &others, &Planned::new()).first().copied()
}
