//! `decide` on its own: which service moves where, and when nothing may move; `next_tick`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{decide, next_tick, tick, Lead, Leadership, Tick};
use crate::config::ini::Ini;
use crate::model::objects::derived_uuid;
use crate::model::objects_tests::path_of;
use crate::model::*;

/// Node `node_id`'s report: `path` provisioned there, its guest down.
fn provisioned_on(path: &ObjectPath, node_id: NodeId) -> Command {
    Command::ReportInstance {
        seq: 0,
        path: path.clone(),
        node_id,
        report: InstanceReport {
            avail: Avail::Down,
            warn: false,
            provisioned: true,
            resources: vec![],
        },
    }
}

fn cluster() -> ClusterState {
    let mut s = crate::model::objects_tests::nodes_with_vgs();
    let ok = |s: &mut ClusterState, c: Command| assert!(!matches!(s.apply(&c), Response::Refused(_)), "{c}");
    let kv = |k: &str, v: &str| (ConfigKey::parse(k).unwrap().0, v.to_string());
    ok(
        &mut s,
        Command::UpdateConfig {
            set: vec![kv("pool#p.type", "drbd"), kv("pool#p.vg", "data")],
            unset: vec![],
        },
    );
    let mut config = Ini::parse("[DEFAULT]\norchestrate = ha\n[volume#data]\nshared = true\nsize = 1G\n").unwrap();
    config.set("DEFAULT", "id", &derived_uuid("kvm1")).unwrap();
    let path = ObjectPath::parse("demo/svc/kvm1").unwrap();
    ok(
        &mut s,
        Command::CreateObject {
            path: path.clone(),
            config,
        },
    );
    ok(&mut s, Command::Provision { path: path.clone() });
    for id in [1, 2] {
        ok(&mut s, provisioned_on(&path, id));
        ok(
            &mut s,
            Command::ReportWatchdog {
                node_id: id,
                armed: true,
            },
        );
    }
    s
}

fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

/// The failovers among decisions.
fn moves(d: &[Command]) -> Vec<&Command> {
    d.iter().filter(|c| matches!(c, Command::Failover { .. })).collect()
}

fn path() -> ObjectPath {
    ObjectPath::parse("demo/svc/kvm1").unwrap()
}

#[test]
fn moves_a_service_off_a_node_whose_lease_expired() {
    let s = cluster();
    assert_eq!(
        decide(&s, &set(&[1]), &set(&[2])),
        vec![Command::Failover {
            path: path(),
            from: 1,
            to: 2
        }]
    );
}

#[test]
fn nothing_moves_while_the_holder_is_leased_or_without_a_leased_target() {
    let s = cluster();
    assert!(decide(&s, &set(&[]), &set(&[1, 2])).is_empty(), "holder still leased");
    assert!(
        moves(&decide(&s, &set(&[1, 2]), &set(&[]))).is_empty(),
        "no node to move to"
    );
}

#[test]
fn frozen_services_and_nodes_and_unprovisioned_targets_are_left_alone() {
    let mut s = cluster();
    s.apply(&Command::FreezeService {
        path: path(),
        frozen: true,
    });
    assert!(decide(&s, &set(&[1]), &set(&[2])).is_empty(), "frozen service");
    s.apply(&Command::FreezeService {
        path: path(),
        frozen: false,
    });
    s.apply(&Command::FreezeNode {
        node_id: 2,
        frozen: true,
    });
    assert!(decide(&s, &set(&[1]), &set(&[2])).is_empty(), "frozen target");
    s.apply(&Command::FreezeNode {
        node_id: 2,
        frozen: false,
    });
    let report = InstanceReport {
        avail: Avail::Down,
        warn: true,
        provisioned: false,
        resources: vec![],
    };
    s.apply(&Command::ReportInstance {
        seq: 0,
        path: path(),
        node_id: 2,
        report,
    });
    assert!(
        decide(&s, &set(&[1]), &set(&[2])).is_empty(),
        "not provisioned on the target"
    );
}

#[test]
fn only_orchestrate_ha_services_fail_over_and_the_witness_never_hosts() {
    let mut s = cluster();
    let key = ObjectKey::parse("orchestrate").unwrap();
    s.apply(&Command::UpdateObject {
        path: path(),
        set: vec![(key, "no".into())],
        unset: vec![],
    });
    assert!(decide(&s, &set(&[1]), &set(&[2, 3])).is_empty());
    let s = cluster();
    assert!(
        moves(&decide(&s, &set(&[1, 2]), &set(&[3]))).is_empty(),
        "the witness is never a target"
    );
}

#[test]
fn a_failover_records_the_fenced_node_and_a_stale_one_is_refused() {
    let mut s = cluster();
    assert_eq!(
        s.apply(&Command::Failover {
            path: path(),
            from: 1,
            to: 2
        }),
        Response::Done
    );
    let svc = &s.services[&path_of("demo/svc/kvm1")];
    assert_eq!(
        (svc.placement, svc.fenced.iter().copied().collect::<Vec<_>>(), svc.epoch),
        (Some(2), vec![1], 2)
    );
    // Decided on an old view: the service already moved.
    assert!(matches!(
        s.apply(&Command::Failover {
            path: path(),
            from: 1,
            to: 2
        }),
        Response::Refused(_)
    ));
    // A switch back clears the record once it hands the service over.
    s.apply(&Command::Switch { path: path(), to: 1 });
    let id = s.services[&path_of("demo/svc/kvm1")].migration.as_ref().unwrap().id;
    assert_eq!(phase(&mut s, id, Phase::Stopping, Phase::Starting), Response::Done);
    assert!(s.services[&path_of("demo/svc/kvm1")].fenced.is_empty());
}

#[test]
fn no_failover_away_from_a_node_without_a_watchdog() {
    let mut s = cluster();
    s.apply(&Command::ReportWatchdog {
        node_id: 1,
        armed: false,
    });
    assert!(
        decide(&s, &set(&[1]), &set(&[2])).is_empty(),
        "nothing proves n1 stopped its guest"
    );
}

fn phase(s: &mut ClusterState, id: u64, from: Phase, to: Phase) -> Response {
    s.apply(&Command::MigrationPhase {
        path: path(),
        id,
        from,
        to,
        error: None,
        fenced: None,
    })
}

#[test]
fn a_live_switch_walks_its_phases_in_order_and_refuses_stale_ones() {
    let mut s = cluster();
    assert_eq!(s.apply(&Command::LiveSwitch { path: path(), to: 2 }), Response::Done);
    let id = s.services[&path_of("demo/svc/kvm1")].migration.as_ref().unwrap().id;
    // Out of order, or from another switch: refused, nothing changes.
    let before = s.clone();
    assert!(matches!(
        phase(&mut s, id, Phase::Prepare, Phase::Migrating),
        Response::Refused(_)
    ));
    assert!(matches!(
        phase(&mut s, id + 1, Phase::Prepare, Phase::DualPrimary),
        Response::Refused(_)
    ));
    assert!(
        matches!(s.apply(&Command::Switch { path: path(), to: 2 }), Response::Refused(m) if m.to_string().contains("switch is in progress"))
    );
    assert!(matches!(
        s.apply(&Command::LiveSwitch { path: path(), to: 2 }),
        Response::Refused(_)
    ));
    assert_eq!(s, before);
    for (from, to) in [
        (Phase::Prepare, Phase::DualPrimary),
        (Phase::DualPrimary, Phase::Migrating),
    ] {
        assert_eq!(phase(&mut s, id, from, to), Response::Done);
        assert_eq!(
            s.services[&path_of("demo/svc/kvm1")].placement,
            Some(1),
            "{to}: still the source's"
        );
    }
    // The same step twice (two nodes saw it): the second is refused.
    assert!(matches!(
        phase(&mut s, id, Phase::DualPrimary, Phase::Migrating),
        Response::Refused(_)
    ));
    assert_eq!(phase(&mut s, id, Phase::Migrating, Phase::Finalize), Response::Done);
    assert_eq!(s.services[&path_of("demo/svc/kvm1")].placement, Some(2));
    assert!(
        matches!(phase(&mut s, id, Phase::Finalize, Phase::Abort), Response::Refused(_)),
        "no abort after Finalize"
    );
    assert_eq!(phase(&mut s, id, Phase::Finalize, Phase::Done), Response::Done);
    let svc = &s.services[&path_of("demo/svc/kvm1")];
    assert!(svc.migration.is_none());
    assert_eq!(
        svc.last_migration.as_ref().map(|m| (m.phase, m.error.clone())),
        Some((Phase::Done, None))
    );
}

#[test]
fn a_live_switch_whose_target_lost_its_lease_is_aborted_with_the_target_fenced() {
    let mut s = cluster();
    s.apply(&Command::LiveSwitch { path: path(), to: 2 });
    let id = s.services[&path_of("demo/svc/kvm1")].migration.as_ref().unwrap().id;
    phase(&mut s, id, Phase::Prepare, Phase::DualPrimary);
    phase(&mut s, id, Phase::DualPrimary, Phase::Migrating);
    assert!(
        decide(&s, &set(&[]), &set(&[1, 2])).is_empty(),
        "both leased: nothing to do"
    );
    let d = decide(&s, &set(&[2]), &set(&[1]));
    assert!(
        matches!(&d[..], [Command::MigrationPhase { to: Phase::Abort, fenced: Some(2), error: Some(e), .. }] if e.contains("n2")),
        "{d:?}"
    );
    s.apply(&d[0]);
    // Still out of reach: the abort ends without it.
    let d = decide(&s, &set(&[2]), &set(&[1]));
    assert!(
        matches!(
            &d[..],
            [Command::MigrationPhase {
                from: Phase::Abort,
                to: Phase::Done,
                ..
            }]
        ),
        "{d:?}"
    );
    s.apply(&d[0]);
    let svc = &s.services[&path_of("demo/svc/kvm1")];
    assert_eq!((svc.placement, svc.fenced.contains(&2)), (Some(1), true));
    assert!(svc
        .last_migration
        .as_ref()
        .unwrap()
        .error
        .as_ref()
        .unwrap()
        .contains("lost its lease"));
}

#[test]
fn a_failover_overtakes_a_live_switch_whose_source_lost_its_lease() {
    let mut s = cluster();
    s.apply(&Command::LiveSwitch { path: path(), to: 2 });
    let d = decide(&s, &set(&[1]), &set(&[2]));
    assert_eq!(
        d,
        vec![Command::Failover {
            path: path(),
            from: 1,
            to: 2
        }]
    );
    s.apply(&d[0]);
    let svc = &s.services[&path_of("demo/svc/kvm1")];
    assert!(svc.migration.is_none());
    assert_eq!(svc.placement, Some(2));
    assert!(svc
        .last_migration
        .as_ref()
        .unwrap()
        .error
        .as_ref()
        .unwrap()
        .contains("failed over"));
}

#[test]
fn a_node_that_does_not_hold_the_service_and_lost_its_lease_is_recorded_fenced_once() {
    let mut s = cluster();
    // Stopped, then placed on n2 and started there: n1 is a passive node of the service.
    s.apply(&Command::SetStarted {
        path: path(),
        started: false,
    });
    s.apply(&Command::Switch { path: path(), to: 2 });
    s.apply(&Command::SetStarted {
        path: path(),
        started: true,
    });
    // n1 lost its lease: n2 may promote without seeing it.
    let d = decide(&s, &set(&[1]), &set(&[2]));
    assert_eq!(
        d,
        vec![Command::Fence {
            path: path(),
            node_id: 1
        }]
    );
    assert_eq!(s.apply(&d[0]), Response::Done);
    assert!(decide(&s, &set(&[1]), &set(&[2])).is_empty(), "recorded once");
    // Never the holder.
    assert!(matches!(
        s.apply(&Command::Fence {
            path: path(),
            node_id: 2
        }),
        Response::Refused(_)
    ));
}

#[test]
fn no_failover_to_a_node_whose_disk_a_fence_peer_outdated() {
    let mut s = cluster();
    let resource = s.objects[&path_of("demo/vol/kvm1")].alloc.as_ref().unwrap().lv.clone();
    let outdate = Command::OutdatePeer {
        resource: resource.clone(),
        node_id: 2,
    };
    assert_eq!(s.apply(&outdate), Response::Done);
    assert!(
        moves(&decide(&s, &set(&[1]), &set(&[2]))).is_empty(),
        "n2's data is old: the service waits for n1"
    );
    // A failover decided before the mark was committed is refused when applied.
    let failover = Command::Failover {
        path: path(),
        from: 1,
        to: 2,
    };
    assert!(matches!(s.apply(&failover), Response::Refused(m) if m.to_string().contains("node n2 is outdated")));
    // Resynced: unfence-peer clears the mark, and n2 may take the service again.
    s.apply(&Command::UnfencePeer { resource, node_id: 2 });
    assert_eq!(
        decide(&s, &set(&[1]), &set(&[2])),
        vec![Command::Failover {
            path: path(),
            from: 1,
            to: 2
        }]
    );
}

#[test]
fn a_switch_stops_then_starts_and_aborts_only_before_the_hand_over() {
    let mut s = cluster();
    assert_eq!(s.apply(&Command::Switch { path: path(), to: 2 }), Response::Done);
    let m = s.services[&path_of("demo/svc/kvm1")].migration.clone().unwrap();
    assert_eq!((m.phase, m.from, m.to), (Phase::Stopping, 1, 2));
    assert_eq!(
        s.services[&path_of("demo/svc/kvm1")].placement,
        Some(1),
        "n1 holds it while it stops"
    );
    assert!(matches!(
        phase(&mut s, m.id, Phase::Stopping, Phase::Done),
        Response::Refused(_)
    ));
    assert_eq!(phase(&mut s, m.id, Phase::Stopping, Phase::Starting), Response::Done);
    assert_eq!(s.services[&path_of("demo/svc/kvm1")].placement, Some(2));
    assert!(
        matches!(phase(&mut s, m.id, Phase::Starting, Phase::Abort), Response::Refused(_)),
        "handed over"
    );
    assert_eq!(phase(&mut s, m.id, Phase::Starting, Phase::Done), Response::Done);
    assert!(s.services[&path_of("demo/svc/kvm1")].migration.is_none());
    // Aborted while stopping: n2 keeps it.
    s.apply(&Command::Switch { path: path(), to: 1 });
    let id = s.services[&path_of("demo/svc/kvm1")].migration.as_ref().unwrap().id;
    assert_eq!(phase(&mut s, id, Phase::Stopping, Phase::Abort), Response::Done);
    assert_eq!(phase(&mut s, id, Phase::Abort, Phase::Done), Response::Done);
    assert_eq!(s.services[&path_of("demo/svc/kvm1")].placement, Some(2));
    // A stopped service is placed at once, no switch record.
    s.apply(&Command::SetStarted {
        path: path(),
        started: false,
    });
    s.apply(&Command::Switch { path: path(), to: 1 });
    let svc = &s.services[&path_of("demo/svc/kvm1")];
    assert_eq!(
        (svc.placement, svc.migration.is_none(), svc.last_migration.is_none()),
        (Some(1), true, true)
    );
}

#[test]
fn a_live_switch_is_refused_while_the_holder_sees_the_target_disconnected_or_behind() {
    let mut s = cluster();
    let report = |peer: &str| InstanceReport {
        avail: Avail::Up,
        warn: false,
        provisioned: true,
        resources: vec![ResourceReport {
            rid: "volume#data".into(),
            avail: Avail::Up,
            label: "kvm1".into(),
            messages: vec![],
            peers: [("n2".to_string(), peer.to_string())].into(),
        }],
    };
    for bad in ["Connecting/DUnknown", "Connected/Outdated"] {
        s.apply(&Command::ReportInstance {
            seq: 0,
            path: path(),
            node_id: 1,
            report: report(bad),
        });
        let r = s.apply(&Command::LiveSwitch { path: path(), to: 2 });
        assert!(
            matches!(&r, Response::Refused(m) if m.to_string().contains("n2's DRBD for volume#data is") && m.to_string().contains(bad)),
            "{r:?}"
        );
        assert!(s.services[&path_of("demo/svc/kvm1")].migration.is_none());
    }
    s.apply(&Command::ReportInstance {
        seq: 0,
        path: path(),
        node_id: 1,
        report: report("Connected/UpToDate"),
    });
    assert_eq!(s.apply(&Command::LiveSwitch { path: path(), to: 2 }), Response::Done);
}

/// n1, n2 and n4 (id 4) with watchdogs armed, the witness w (id 3) (`three_nodes`); services `demo/svc/NAME`
/// on the three data nodes, provisioned (placed on n1, the first of their nodes, reported
/// provisioned everywhere), then given `config` (`KEYWORD=VALUE` lines).
fn three(services: &[(&str, &[&str])]) -> ClusterState {
    let mut s = crate::model::placement_tests::three_nodes();
    let ok = |s: &mut ClusterState, c: Command| assert!(!matches!(s.apply(&c), Response::Refused(_)), "{c}");
    for node_id in [1, 2, 4] {
        ok(&mut s, Command::ReportWatchdog { node_id, armed: true });
    }
    for (name, config) in services {
        let path = ObjectPath::parse(&format!("demo/svc/{name}")).unwrap();
        let mut ini = Ini::parse("[DEFAULT]\nnodes = n1 n2 n4\norchestrate = ha\n").unwrap();
        ini.set("DEFAULT", "id", &derived_uuid(name)).unwrap();
        ok(
            &mut s,
            Command::CreateObject {
                path: path.clone(),
                config: ini,
            },
        );
        ok(&mut s, Command::Provision { path: path.clone() });
        for node_id in [1, 2, 4] {
            ok(&mut s, provisioned_on(&path, node_id));
        }
        let set = config
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (ObjectKey::parse(k).unwrap(), v.to_string())
            })
            .collect::<Vec<_>>();
        if !set.is_empty() {
            ok(
                &mut s,
                Command::UpdateObject {
                    path,
                    set,
                    unset: vec![],
                },
            );
        }
    }
    s
}

/// Each failover as (service name, from, to), in order.
fn failovers(d: &[Command]) -> Vec<(String, NodeId, NodeId)> {
    d.iter()
        .filter_map(|c| match c {
            Command::Failover { path, from, to } => Some((path.name.clone(), *from, *to)),
            _ => None,
        })
        .collect()
}

fn f(name: &str, from: NodeId, to: NodeId) -> (String, NodeId, NodeId) {
    (name.to_string(), from, to)
}

#[test]
fn nodes_order_sends_every_service_to_the_first_eligible_node() {
    let s = three(&[("a", &[]), ("b", &[])]);
    assert_eq!(
        failovers(&decide(&s, &set(&[1]), &set(&[2, 4]))),
        vec![f("a", 1, 2), f("b", 1, 2)]
    );
}

#[test]
fn spread_failovers_in_one_tick_count_the_ones_decided_before() {
    let spread: &[&str] = &["placement=spread"];
    let s = three(&[("a", spread), ("b", spread), ("c", spread)]);
    assert_eq!(
        failovers(&decide(&s, &set(&[1]), &set(&[2, 4]))),
        vec![f("a", 1, 2), f("b", 1, 4), f("c", 1, 2)]
    );
}

#[test]
fn the_lower_priority_number_fails_over_first_and_gets_the_preferred_node() {
    let s = three(&[
        ("a", &["placement=spread"]),
        ("b", &["placement=spread", "priority=10"]),
        ("c", &["placement=spread", "priority=10"]),
    ]);
    // b and c before a (equal priorities by path), and a gets what is left.
    assert_eq!(
        failovers(&decide(&s, &set(&[1]), &set(&[2, 4]))),
        vec![f("b", 1, 2), f("c", 1, 4), f("a", 1, 2)]
    );
    // The other decisions come first: n4 lost its lease too, recorded fenced for each service
    // before anything moves (to n2, the only node left).
    let d = decide(&s, &set(&[1, 4]), &set(&[2]));
    let fences = d.iter().take_while(|c| matches!(c, Command::Fence { .. })).count();
    assert_eq!((fences, d.len()), (3, 6), "{d:?}");
    assert_eq!(failovers(&d), vec![f("b", 1, 2), f("c", 1, 2), f("a", 1, 2)]);
}

#[test]
fn score_fails_over_to_the_node_with_the_most_free_memory_and_capacity() {
    let mut s = three(&[("a", &["placement=score"])]);
    s.apply(&Command::ReportVolumeGroups {
        node_id: 4,
        vgs: [("data".to_string(), 5u64 << 30)].into(),
    });
    for (node_id, gib) in [(1, 8u64), (2, 2), (4, 4)] {
        assert_eq!(
            s.apply(&Command::ReportMemory {
                node_id,
                available: gib << 30
            }),
            Response::Done
        );
    }
    assert_eq!(failovers(&decide(&s, &set(&[1]), &set(&[2, 4]))), vec![f("a", 1, 4)]);
}

#[test]
fn the_policy_chooses_only_among_eligible_nodes() {
    // spread would pick n2 (empty, first): frozen, or without a lease, n4 gets it.
    let mut s = three(&[("a", &["placement=spread"]), ("b", &[])]);
    // b runs on n4.
    let b = ObjectPath::parse("demo/svc/b").unwrap();
    for c in [
        Command::SetStarted {
            path: b.clone(),
            started: false,
        },
        Command::Switch { path: b.clone(), to: 4 },
        Command::SetStarted { path: b, started: true },
    ] {
        assert_eq!(s.apply(&c), Response::Done, "{c}");
    }
    assert_eq!(failovers(&decide(&s, &set(&[1]), &set(&[2, 4]))), vec![f("a", 1, 2)]);
    assert_eq!(failovers(&decide(&s, &set(&[1]), &set(&[4]))), vec![f("a", 1, 4)]);
    s.apply(&Command::FreezeNode {
        node_id: 2,
        frozen: true,
    });
    assert_eq!(failovers(&decide(&s, &set(&[1]), &set(&[2, 4]))), vec![f("a", 1, 4)]);
}

#[test]
fn the_next_tick_comes_when_a_wait_ends_and_never_later_than_a_renewal() {
    let cfg = crate::lease::LeaseConfig::default();
    let t0 = Instant::now();
    let margin = cfg.duration + cfg.drift;
    let mut memory = Leadership::default();
    let empty = BTreeMap::new();
    assert_eq!(next_tick(&memory, &empty, t0, &cfg), cfg.renew, "not leading");
    // Leading since t0: the wait after the election ends at t0 + margin.
    let s = state_leading_since(&mut memory, t0, &cfg);
    assert!(s.commands.is_empty());
    assert_eq!(next_tick(&memory, &empty, t0, &cfg), cfg.renew);
    let near = t0 + margin - Duration::from_millis(40);
    assert_eq!(next_tick(&memory, &empty, near, &cfg), Duration::from_millis(40));
    // Past it: a dead node's last grant decides, a live one's (renewed) does not.
    let now = t0 + margin + Duration::from_secs(10);
    let grants = BTreeMap::from([
        (1, now - margin + Duration::from_millis(70)),
        (2, now - Duration::from_millis(100)),
    ]);
    assert_eq!(next_tick(&memory, &grants, now, &cfg), Duration::from_millis(70));
    let grants = BTreeMap::from([(2, now - Duration::from_millis(100))]);
    assert_eq!(next_tick(&memory, &grants, now, &cfg), cfg.renew);
}

/// One tick as the leader of term 1 at `now`, on a cluster with nothing to move.
fn state_leading_since(memory: &mut Leadership, now: Instant, cfg: &crate::lease::LeaseConfig) -> Tick {
    let lead = Lead {
        term: 1,
        window: Duration::ZERO,
        confirmed: None,
    };
    tick(memory, Some(lead), &ClusterState::default(), &BTreeMap::new(), now, cfg)
}

#[test]
fn a_new_leader_counts_its_wait_from_the_window_before_it_saw_itself_lead_but_not_before_its_own_last_grant() {
    let cfg = crate::lease::LeaseConfig::default();
    let margin = cfg.duration + cfg.drift;
    let ms = Duration::from_millis;
    let t0 = Instant::now() + Duration::from_secs(60);
    let lead = |term, confirmed| Lead {
        term,
        window: ms(450),
        confirmed,
    };
    let leading = |memory: &mut Leadership, l: Lead, now| {
        tick(memory, Some(l), &ClusterState::default(), &BTreeMap::new(), now, &cfg);
        next_tick(memory, &BTreeMap::new(), now, &cfg)
    };
    // Elected, seen at t0: the wait ends at t0 - 450 ms + margin.
    let mut memory = Leadership::default();
    assert_eq!(leading(&mut memory, lead(2, None), t0), cfg.renew);
    let end = t0 - ms(450) + margin;
    assert_eq!(next_tick(&memory, &BTreeMap::new(), end - ms(30), &cfg), ms(30));
    assert!(super::may_act(memory_since(&memory), end, &cfg));
    assert!(!super::may_act(memory_since(&memory), end - ms(1), &cfg));
    // The same node led before and had a grant confirmed 100 ms before it saw itself lead
    // again: that grant may run until 100 ms before t0 plus the duration.
    let mut memory = Leadership::default();
    leading(&mut memory, lead(3, Some(t0 - ms(100))), t0);
    assert_eq!(memory_since(&memory), t0 - ms(100));
    // An older confirmation than the window changes nothing.
    let mut memory = Leadership::default();
    leading(&mut memory, lead(3, Some(t0 - ms(900))), t0);
    assert_eq!(memory_since(&memory), t0 - ms(450));
    // Still leading in the same term later: the start stays where it was.
    leading(&mut memory, lead(3, None), t0 + ms(200));
    assert_eq!(memory_since(&memory), t0 - ms(450));
    // A new term starts over.
    leading(&mut memory, lead(4, None), t0 + ms(300));
    assert_eq!(memory_since(&memory), t0 - ms(150));
}

fn memory_since(memory: &Leadership) -> Instant {
    memory.since.expect("leading")
}

#[test]
fn a_service_that_cannot_fail_over_is_held_with_the_reason_for_each_node() {
    let held = |s: &ClusterState, expired: &[NodeId], leased: &[NodeId]| {
        let (commands, held) = super::plan(s, &set(expired), &set(leased));
        assert!(moves(&commands).is_empty(), "{commands:?}");
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(held[0].path, path());
        held[0].why.clone()
    };
    let mut s = cluster();
    // Moving, nothing held; the holder leased, nothing to say.
    assert!(super::plan(&s, &set(&[1]), &set(&[2])).1.is_empty());
    assert!(super::plan(&s, &set(&[]), &set(&[1, 2])).1.is_empty());
    let why = held(&s, &[1, 2], &[]);
    assert!(
        why.contains("node n1 lost its lease") && why.contains("n2 holds no lease"),
        "{why}"
    );
    let resource = s.objects[&path_of("demo/vol/kvm1")].alloc.as_ref().unwrap().lv.clone();
    s.apply(&Command::OutdatePeer {
        resource: resource.clone(),
        node_id: 2,
    });
    let why = held(&s, &[1], &[2]);
    assert!(
        why.contains(&format!("n2 has an outdated disk (a DRBD fence-peer marked {resource}")),
        "{why}"
    );
    s.apply(&Command::UnfencePeer { resource, node_id: 2 });
    s.apply(&Command::FreezeNode {
        node_id: 2,
        frozen: true,
    });
    let why = held(&s, &[1], &[2]);
    assert!(why.contains("n2 is frozen"), "{why}");
    s.apply(&Command::FreezeNode {
        node_id: 2,
        frozen: false,
    });
    s.apply(&Command::ReportWatchdog {
        node_id: 1,
        armed: false,
    });
    let why = held(&s, &[1], &[2]);
    assert!(why.contains("node n1 lost its lease but has no watchdog"), "{why}");
}
