//! The placement policies on their own: each policy's ranking, its ties, the candidates the
//! caller leaves out, and the memory report they weigh.

use std::collections::BTreeMap;

use super::objects::derived_uuid;
use super::objects_tests::{nodes_with_vgs, path_of, refused};
use super::placement::{best_other, first_choice, rank, Planned, Policy};
use super::*;
use crate::config::ini::Ini;

const GIB: u64 = 1 << 30;

fn ok(s: &mut ClusterState, c: Command) {
    let r = s.apply(&c);
    assert!(!matches!(r, Response::Refused(_)), "{c}: {r:?}");
}

/// n1, n2 (5 GiB `data` each), the witness w (id 3) and n4 (id 4, 5 GiB `data`): three data
/// nodes, pool `p` on `data`.
pub(crate) fn three_nodes() -> ClusterState {
    let mut s = nodes_with_vgs();
    ok(
        &mut s,
        Command::AddNode {
            name: "n4".into(),
            addr: "a:4".into(),
            witness: false,
            token: None,
        },
    );
    ok(
        &mut s,
        Command::ReportVolumeGroups {
            node_id: 4,
            vgs: BTreeMap::from([("data".into(), 5 * GIB)]),
        },
    );
    let kv = |k: &str, v: &str| (ConfigKey::parse(k).unwrap().0, v.to_string());
    ok(
        &mut s,
        Command::UpdateConfig {
            set: vec![kv("pool#p.type", "drbd"), kv("pool#p.vg", "data")],
            unset: vec![],
        },
    );
    s
}

fn svc(name: &str) -> ObjectPath {
    ObjectPath::parse(&format!("demo/svc/{name}")).unwrap()
}

/// Creates `demo/svc/NAME` with `text` as its configuration.
fn create(s: &mut ClusterState, name: &str, text: &str) {
    let mut config = Ini::parse(text).unwrap();
    config.set("DEFAULT", "id", &derived_uuid(name)).unwrap();
    ok(
        s,
        Command::CreateObject {
            path: svc(name),
            config,
        },
    );
}

/// A service on every data node with `placement` (and `extra` lines), provisioned.
fn placed(s: &mut ClusterState, name: &str, placement: &str, extra: &str) -> NodeId {
    create(
        s,
        name,
        &format!("[DEFAULT]\nnodes = n1 n2 n4\nplacement = {placement}\n{extra}"),
    );
    ok(s, Command::Provision { path: svc(name) });
    s.services[&svc(name)].placement.unwrap()
}

fn memory(s: &mut ClusterState, node_id: NodeId, available: u64) {
    ok(s, Command::ReportMemory { node_id, available });
}

#[test]
fn nodes_order_follows_the_nodes_keyword() {
    let mut s = three_nodes();
    create(&mut s, "a", "[DEFAULT]\nnodes = n4 n1 n2\n");
    let p = svc("a");
    assert_eq!(s.placement_policy(&p), Policy::NodesOrder, "the default");
    assert_eq!(rank(&s, &p, &s.service_nodes(&p), &Planned::new()), vec![4, 1, 2]);
    ok(&mut s, Command::Provision { path: p.clone() });
    assert_eq!(
        s.services[&path_of("demo/svc/a")].placement,
        Some(4),
        "provision: the first"
    );
    assert_eq!(best_other(&s, &p), Some(1), "switch: the first but the holder");
    // Busy or not, the order decides.
    placed(&mut s, "b", "nodes order", "");
    assert_eq!(first_choice(&s, &p), Some(4));
}

#[test]
fn spread_prefers_the_node_with_the_fewest_started_services() {
    let mut s = three_nodes();
    // Each goes where the fewest run: n1, then n2, then n4 (ties: nodes order).
    assert_eq!(placed(&mut s, "a", "spread", ""), 1);
    assert_eq!(placed(&mut s, "b", "spread", ""), 2);
    assert_eq!(placed(&mut s, "c", "spread", ""), 4);
    assert_eq!(placed(&mut s, "d", "spread", ""), 1);
    // A service is not counted against its own node: without d, n1 holds one (a), like n2
    // and n4.
    let d = svc("d");
    assert_eq!(rank(&s, &d, &[1, 2, 4], &Planned::new()), vec![1, 2, 4]);
    assert_eq!(best_other(&s, &d), Some(2));
    // Stopped services are not counted.
    ok(
        &mut s,
        Command::SetStarted {
            path: svc("b"),
            started: false,
        },
    );
    assert_eq!(rank(&s, &d, &[1, 2, 4], &Planned::new()), vec![2, 1, 4]);
    // What the caller already sent somewhere in this round counts there.
    let planned = Planned::from([(2, 2)]);
    assert_eq!(rank(&s, &d, &[1, 2, 4], &planned), vec![1, 4, 2]);
    // Only the candidates given are ranked.
    assert_eq!(rank(&s, &d, &[4, 2], &Planned::new()), vec![2, 4]);
}

#[test]
fn spread_counts_a_switch_in_progress_at_its_target() {
    let mut s = three_nodes();
    placed(&mut s, "a", "spread", "");
    assert_eq!(s.started_on(1, &path_of("demo/svc/none")), 1);
    ok(&mut s, Command::Switch { path: svc("a"), to: 4 });
    let none = path_of("demo/svc/none");
    assert_eq!((s.started_on(1, &none), s.started_on(4, &none)), (0, 1));
}

#[test]
fn score_prefers_the_most_free_memory_and_capacity() {
    let mut s = three_nodes();
    create(&mut s, "a", "[DEFAULT]\nnodes = n1 n2 n4\nplacement = score\n");
    let p = svc("a");
    let all = [1, 2, 4];
    let ranked = |s: &ClusterState| rank(s, &p, &all, &Planned::new());
    // Nothing reported but equal volume groups: a tie, the nodes order.
    assert_eq!(ranked(&s), vec![1, 2, 4]);
    // Memory: the most first.
    memory(&mut s, 1, 2 * GIB);
    memory(&mut s, 2, 8 * GIB);
    memory(&mut s, 4, 4 * GIB);
    assert_eq!(ranked(&s), vec![2, 4, 1]);
    // Free capacity counts as much: a volume of 4 GiB on n1 and n2 leaves them 1 GiB free
    // against n4's 5 GiB. n2: 1000 + 200, n4: 500 + 1000, n1: 250 + 200 per mille.
    create(
        &mut s,
        "vols",
        "[DEFAULT]\nnodes = n1 n2\n[volume#data]\nshared = true\nsize = 4G\n",
    );
    assert_eq!((s.free_capacity(1), s.free_capacity(4)), (GIB, 5 * GIB));
    assert_eq!(ranked(&s), vec![4, 2, 1]);
    // Equal scores: the nodes order. With 10 GiB on n2 and 4 GiB on n4, and 1 GiB more
    // reported on n2: n2 1000 + 400, n4 400 + 1000, n1 200 + 200.
    memory(&mut s, 2, 10 * GIB);
    memory(&mut s, 4, 4 * GIB);
    ok(
        &mut s,
        Command::ReportVolumeGroups {
            node_id: 2,
            vgs: BTreeMap::from([("data".into(), 5 * GIB), ("more".into(), GIB)]),
        },
    );
    assert_eq!(s.free_capacity(2), 2 * GIB);
    assert_eq!(ranked(&s), vec![2, 4, 1]);
    let mut later = all;
    later.swap(1, 2);
    // The caller's order is the tie's order.
    assert_eq!(rank(&s, &p, &later, &Planned::new()), vec![4, 2, 1]);
    // A node that reported nothing counts zero: last.
    ok(&mut s, Command::RemoveNode { node_id: 4 });
    assert!(!s.memory.contains_key(&4) && !s.vgs.contains_key(&4));
    assert_eq!(
        rank(&s, &p, &[1, 4, 2], &Planned::new()),
        vec![2, 1, 4],
        "reports gone with the node"
    );
}

#[test]
fn score_sums_huge_reports_without_overflow() {
    let mut s = three_nodes();
    create(&mut s, "a", "[DEFAULT]\nnodes = n1 n2 n4\nplacement = score\n");
    ok(
        &mut s,
        Command::ReportVolumeGroups {
            node_id: 2,
            vgs: BTreeMap::from([("x".into(), u64::MAX), ("y".into(), u64::MAX)]),
        },
    );
    memory(&mut s, 1, MAX_MEMORY_REPORT);
    assert_eq!(s.free_capacity(2), u64::MAX, "saturates");
    // n1: 1000 + ~0, n2: 0 + 1000: a tie, nodes order; n4 has a little capacity only.
    assert_eq!(rank(&s, &svc("a"), &[1, 2, 4], &Planned::new()), vec![1, 2, 4]);
}

#[test]
fn a_memory_report_is_bounded_and_needs_a_known_node() {
    let mut s = three_nodes();
    let why = refused(
        &mut s,
        Command::ReportMemory {
            node_id: 9,
            available: GIB,
        },
    );
    assert_eq!(why, "no node with id 9");
    let why = refused(
        &mut s,
        Command::ReportMemory {
            node_id: 1,
            available: MAX_MEMORY_REPORT + 1,
        },
    );
    assert!(
        why.contains("memory report of node id 1") && why.contains(&(MAX_MEMORY_REPORT + 1).to_string()),
        "{why}"
    );
    memory(&mut s, 1, MAX_MEMORY_REPORT);
    memory(&mut s, 1, GIB);
    assert_eq!(s.free_memory(1), GIB, "replaced");
    assert_eq!(
        Command::ReportMemory {
            node_id: 1,
            available: 0
        }
        .reporting_node(),
        Some(1),
        "a node reports only its own"
    );
}

#[test]
fn priority_is_the_keyword_or_50() {
    let mut s = three_nodes();
    create(&mut s, "a", "[DEFAULT]\nnodes = n1 n2\n");
    create(&mut s, "b", "[DEFAULT]\nnodes = n1 n2\npriority = 7\n");
    assert_eq!((s.priority(&svc("a")), s.priority(&svc("b"))), (50, 7));
    let why = refused(
        &mut s,
        Command::UpdateObject {
            path: svc("a"),
            set: vec![(ObjectKey::parse("priority").unwrap(), "-1".into())],
            unset: vec![],
        },
    );
    assert!(why.contains("priority") && why.contains("-1"), "{why}");
    let why = refused(
        &mut s,
        Command::UpdateObject {
            path: svc("a"),
            set: vec![(ObjectKey::parse("placement").unwrap(), "random".into())],
            unset: vec![],
        },
    );
    assert!(why.contains("placement") && why.contains("random"), "{why}");
}

#[test]
fn a_state_saved_before_memory_reports_still_loads() {
    let mut s = three_nodes();
    memory(&mut s, 1, GIB);
    let mut v = serde_json::to_value(&s).unwrap();
    v.as_object_mut().unwrap().remove("memory");
    let back: ClusterState = serde_json::from_value(v).unwrap();
    assert!(back.memory.is_empty());
}
