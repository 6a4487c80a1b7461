//! What a node reports about itself (`NodeStatus`) and the cluster-wide view (`Mon`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;

use crate::daemon::Node;
use crate::pb;

fn role(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

fn age_ms(t: Option<Instant>) -> Option<u64> {
    t.map(|t| t.elapsed().as_millis() as u64)
}

/// Each node's reported avail of the instance at `path`, by node name: `warn` when an up
/// instance carries warnings.
fn instance_avails(
    state: &crate::model::ClusterState,
    path: &crate::model::ObjectPath,
) -> std::collections::HashMap<String, String> {
    let Some(reports) = state.reports.get(path) else {
        return Default::default();
    };
    reports
        .iter()
        .filter_map(|(id, rep)| {
            let name = state.nodes.get(id)?.name.clone();
            let avail = if rep.warn && rep.avail != crate::model::Avail::Down {
                "warn".into()
            } else {
                rep.avail.to_string()
            };
            Some((name, avail))
        })
        .collect()
}

/// This node's own status, from its Raft metrics and link records.
pub fn node_status(node: &Node) -> pb::NodeStatus {
    let m = node.member();
    let metrics = m.raft.metrics().borrow().clone();
    let (names, cluster, witness) = m.sm.read(|d| {
        let names: std::collections::BTreeMap<u64, String> =
            d.state.nodes.iter().map(|(id, n)| (*id, n.name.clone())).collect();
        let witness = d.state.nodes.get(&m.id).is_some_and(|n| n.witness);
        (names, crate::daemon::cluster_name(&d.state), witness)
    });
    let name_of = |id: u64| names.get(&id).cloned().unwrap_or_else(|| format!("id{id}"));
    // A link beats while it was acknowledged within one minimal election timeout.
    let window = node.settings.election_timeout_ms;
    let stats = node.links.snapshot();
    let mut links = Vec::new();
    let me = node.settings.name.clone();
    if let Some(replication) = &metrics.replication {
        for (peer, matched) in replication.iter().filter(|(p, _)| **p != m.id) {
            let stat = stats.get(peer).cloned().unwrap_or_default();
            let ack = age_ms(stat.tx_ok);
            links.push(pb::Link {
                node: me.clone(),
                peer: name_of(*peer),
                direction: "tx".into(),
                running: true,
                beating: ack.is_some_and(|a| a < window),
                last_ack_ms: ack,
                match_index: matched.map(|l| l.index),
            });
        }
    } else if let Some(leader) = metrics.current_leader.filter(|l| *l != m.id) {
        let ack = age_ms(stats.get(&leader).and_then(|s| s.rx));
        links.push(pb::Link {
            node: me.clone(),
            peer: name_of(leader),
            direction: "rx".into(),
            running: true,
            beating: ack.is_some_and(|a| a < window),
            last_ack_ms: ack,
            match_index: None,
        });
    }
    pb::NodeStatus {
        node_id: m.id,
        name: me,
        addr: node.settings.addr.clone(),
        uptime_secs: node.started.elapsed().as_secs(),
        raft_role: role(metrics.state).into(),
        leader_id: metrics.current_leader,
        leader_name: metrics.current_leader.map(name_of).unwrap_or_default(),
        term: metrics.current_term,
        applied_index: metrics.last_applied.map(|l| l.index),
        last_log_index: metrics.last_log_index,
        links,
        witness,
        cluster_name: cluster,
        lease_ms: node.lease_remaining().map(|d| d.as_millis() as u64),
    }
}

/// Every known node's status: the local one directly, the others over the network, each
/// bounded to one second so a dead node shows as unreachable instead of stalling the view.
pub async fn mon(node: &Arc<Node>) -> pb::MonReply {
    let m = node.member();
    let (state_nodes, voters, learners, cluster, objects) = m.sm.read(|d| {
        let mem = d.membership.membership();
        let objects: Vec<pb::MonObject> = d
            .state
            .objects
            .iter()
            .filter(|(p, _)| p.kind == crate::model::ObjectKind::Svc)
            .map(|(p, o)| pb::MonObject {
                path: p.to_string(),
                orchestrate: o
                    .config
                    .get(crate::config::ini::DEFAULT, "orchestrate")
                    .unwrap_or("no")
                    .into(),
                avail: instance_avails(&d.state, p),
            })
            .collect();
        (
            d.state.nodes.clone(),
            mem.voter_ids().collect::<Vec<_>>(),
            mem.learner_ids().collect::<Vec<_>>(),
            crate::daemon::cluster_name(&d.state),
            objects,
        )
    });
    let me = m.id;
    let mut set = tokio::task::JoinSet::new();
    for (id, info) in state_nodes {
        let membership = if voters.contains(&id) {
            "voter"
        } else if learners.contains(&id) {
            "learner"
        } else {
            "registered"
        };
        let mut row = pb::MonNode {
            node_id: id,
            name: info.name.clone(),
            addr: info.addr.clone(),
            witness: info.witness,
            membership: membership.into(),
            reachable: false,
            error: String::new(),
            status: None,
        };
        let node = node.clone();
        set.spawn(async move {
            if id == me {
                row.status = Some(node_status(&node));
                row.reachable = true;
                return row;
            }
            let req = node.node_request(pb::NodeStatusRequest {}, Duration::from_secs(1));
            let call = |ch| async move { pb::cluster_client::ClusterClient::new(ch).node_status(req).await };
            match node.channels.call(&info.addr, Duration::from_secs(1), call).await {
                Ok(s) => {
                    row.status = Some(s);
                    row.reachable = true;
                }
                Err(e) if e.code() == tonic::Code::DeadlineExceeded => row.error = "no answer within 1 s".into(),
                Err(e) => row.error = e.message().to_string(),
            }
            row
        });
    }
    let mut nodes: Vec<pb::MonNode> = set.join_all().await;
    nodes.sort_by_key(|n| n.node_id);
    pb::MonReply {
        cluster_name: cluster,
        queried: node.settings.name.clone(),
        nodes,
        objects,
    }
}
