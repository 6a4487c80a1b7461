//! What a node reports about itself (`NodeStatus`) and the cluster-wide view (`Mon`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;

use crate::daemon::Node;
use crate::model::{Avail, ClusterState, ObjectKind, ObjectPath};
use crate::pb;

/// Services in a `Mon` page unless the request asks for another number, and the most it may.
pub const MON_PAGE: u32 = 50;
pub const MON_PAGE_MAX: u32 = 1000;
/// The longest `Mon` filter or `after` path, in bytes.
const MON_ARG_MAX: usize = 1024;

/// Which services a `Mon` request shows: its filter, the path its page starts after, its
/// page size. The error names the offending field and quotes it.
pub struct MonPage {
    filter: String,
    after: Option<ObjectPath>,
    limit: usize,
}

impl MonPage {
    pub fn parse(req: &pb::MonRequest) -> Result<MonPage, String> {
        let echo = crate::config::echo::echo;
        for (field, v) in [("filter", &req.filter), ("after", &req.after)] {
            if v.len() > MON_ARG_MAX || v.chars().any(char::is_control) {
                return Err(format!(
                    "mon {field} {:?}: at most {MON_ARG_MAX} bytes without control characters",
                    echo(v)
                ));
            }
        }
        let after = match req.after.as_str() {
            "" => None,
            a => Some(ObjectPath::parse(a).map_err(|e| format!("mon after {:?}: not an object path: {e}", echo(a)))?),
        };
        let limit = match req.limit {
            0 => MON_PAGE,
            n if n > MON_PAGE_MAX => return Err(format!("mon limit {n}: at most {MON_PAGE_MAX} services a page")),
            n => n,
        };
        Ok(MonPage {
            filter: req.filter.clone(),
            after,
            limit: limit as usize,
        })
    }

    /// One page of the services in `state` and the counts of all that match, in one pass
    /// over the services (a page of 50 out of 100,000 copies 50).
    pub fn read(&self, state: &ClusterState) -> (Vec<pb::MonObject>, pb::MonSummary) {
        let mut summary = pb::MonSummary::default();
        let mut page = Vec::new();
        let services = state.objects.iter().filter(|(p, _)| p.kind == ObjectKind::Svc);
        for (path, obj) in services {
            summary.services += 1;
            if !self.filter.is_empty() && !crate::model::path::glob(&self.filter, &path.to_string()) {
                continue;
            }
            summary.matching += 1;
            match service_health(state, path) {
                Avail::Up => summary.up += 1,
                Avail::Warn => summary.warn += 1,
                _ => summary.down += 1,
            }
            if self.after.as_ref().is_some_and(|a| path <= a) {
                continue;
            }
            if page.len() == self.limit {
                if summary.next_after.is_empty() {
                    summary.next_after = page.last().map(|o: &pb::MonObject| o.path.clone()).unwrap_or_default();
                }
                continue;
            }
            page.push(pb::MonObject {
                path: path.to_string(),
                orchestrate: obj
                    .config
                    .get(crate::config::ini::DEFAULT, "orchestrate")
                    .unwrap_or("no")
                    .into(),
                avail: instance_avails(state, path),
            });
        }
        (page, summary)
    }
}

/// An instance's avail as `mon` shows it: `Warn` when it is not down and carries warnings.
fn shown_avail(r: &crate::model::instances::InstanceReport) -> Avail {
    if r.warn && r.avail != Avail::Down {
        Avail::Warn
    } else {
        r.avail
    }
}

/// A service as a whole: `Warn` when an instance shows `warn` (`shown_avail`), else `Up` when
/// one is up, else `Down` (no instance up, or none reported).
fn service_health(state: &ClusterState, path: &ObjectPath) -> Avail {
    let Some(reports) = state.reports.get(path) else {
        return Avail::Down;
    };
    if reports.values().any(|r| shown_avail(r) == Avail::Warn) {
        Avail::Warn
    } else if reports.values().any(|r| r.avail == Avail::Up) {
        Avail::Up
    } else {
        Avail::Down
    }
}

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
            Some((name, shown_avail(rep).to_string()))
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
/// bounded to one second so a dead node shows as unreachable instead of stalling the view;
/// then one page of the services (`MonPage`) and the counts of all.
pub async fn mon(node: &Arc<Node>, page: &MonPage) -> pb::MonReply {
    let m = node.member();
    let (applied, state_nodes, frozen, placed, voters, learners, cluster, (objects, summary)) = m.sm.read(|d| {
        let mem = d.membership.membership();
        (
            d.last_applied.map_or(0, |l| l.index),
            d.state.nodes.clone(),
            d.state.frozen_nodes.clone(),
            d.state.placed_per_node(),
            mem.voter_ids().collect::<Vec<_>>(),
            mem.learner_ids().collect::<Vec<_>>(),
            crate::daemon::cluster_name(&d.state),
            page.read(&d.state),
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
            frozen: frozen.contains(&id),
            placed: placed.get(&id).copied().unwrap_or(0),
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
        summary: Some(summary),
        applied_index: applied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::instances::InstanceReport;

    /// `n` services `ns/svc/sNNNN`, each reported with the avail its number picks, and a
    /// config map (not a service).
    fn services(n: usize) -> ClusterState {
        let mut state = ClusterState::default();
        let object = || serde_json::from_str::<crate::model::Object>(r#"{"config":{"sections":[]}}"#).unwrap();
        state
            .objects
            .insert(ObjectPath::parse("ns/cfg/c").unwrap(), object().into());
        for i in 0..n {
            let path = ObjectPath::parse(&format!("ns/svc/s{i:04}")).unwrap();
            state.objects.insert(path.clone(), object().into());
            let (avail, warn) = match i % 10 {
                0 => (Avail::Down, false),
                1 => (Avail::Up, true),
                _ => (Avail::Up, false),
            };
            let report = InstanceReport {
                avail,
                warn,
                provisioned: true,
                resources: vec![],
            };
            state.reports.insert(path, std::sync::Arc::new([(1, report)].into()));
        }
        state
    }

    fn page(filter: &str, after: &str, limit: u32) -> Result<MonPage, String> {
        MonPage::parse(&pb::MonRequest {
            filter: filter.into(),
            after: after.into(),
            limit,
        })
    }

    #[test]
    fn mon_pages_the_services_and_counts_every_matching_one() {
        let state = services(120);
        let (objects, s) = page("", "", 0).unwrap().read(&state);
        assert_eq!((s.services, s.matching, s.up, s.warn, s.down), (120, 120, 96, 12, 12));
        assert_eq!(objects.len(), MON_PAGE as usize);
        assert_eq!(objects[0].path, "ns/svc/s0000");
        assert_eq!(s.next_after, "ns/svc/s0049");

        // Walking the pages gives every service once, in order; the last has no next.
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let (objects, s) = page("", &after, 50).unwrap().read(&state);
            seen.extend(objects.into_iter().map(|o| o.path));
            if s.next_after.is_empty() {
                break;
            }
            after = s.next_after;
        }
        let all: Vec<String> = (0..120).map(|i| format!("ns/svc/s{i:04}")).collect();
        assert_eq!(seen, all);

        // A filter narrows the page and the counts alike; a page exactly full has no next.
        let (objects, s) = page("ns/svc/s00?0", "", 10).unwrap().read(&state);
        assert_eq!((s.matching, s.up, s.warn, s.down), (10, 0, 0, 10));
        assert_eq!(objects.len(), 10);
        assert_eq!(s.next_after, "");
    }

    #[test]
    fn a_bad_mon_request_is_refused_naming_its_field() {
        let e = page("", "", MON_PAGE_MAX + 1).err().unwrap();
        assert!(e.contains("limit") && e.contains("1000"), "{e}");
        let e = page("", "not a path", 0).err().unwrap();
        assert!(e.starts_with("mon after \"not a path\""), "{e}");
        let e = page(&"*".repeat(5000), "", 0).err().unwrap();
        assert!(e.starts_with("mon filter") && e.contains("(5000 bytes)"), "{e}");
        let e = page("a\nb", "", 0).err().unwrap();
        assert!(e.contains("control characters"), "{e}");
    }
}
