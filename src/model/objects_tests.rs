//! Object model tests: the tutorial's objects, refusals that change nothing, and allocation
//! uniqueness under random create/delete sequences.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;

use super::objects::*;
use super::*;
use crate::config::ini::Ini;

/// A path the test writes out in full.
pub(crate) fn path_of(text: &str) -> ObjectPath {
    ObjectPath::parse(text).expect("a valid path")
}

const GIB: u64 = 1 << 30;

/// n1, n2 with a 5 GiB `data` VG each, witness w, cluster drbd4kvm, pool drbdvm with the
/// live-migration template.
/// n1 and n2 with a 5 GiB `data` volume group each, and the witness w: the base of the model
/// and orchestrator tests.
pub(crate) fn nodes_with_vgs() -> ClusterState {
    let mut s = ClusterState::default();
    let ok = |s: &mut ClusterState, c: Command| assert!(!matches!(s.apply(&c), Response::Refused(_)), "{c}");
    ok(
        &mut s,
        Command::Bootstrap {
            node_id: 1,
            name: "n1".into(),
            addr: "a:1".into(),
        },
    );
    ok(
        &mut s,
        Command::AddNode {
            name: "n2".into(),
            addr: "a:2".into(),
            witness: false,
            token: None,
        },
    );
    ok(
        &mut s,
        Command::AddNode {
            name: "w".into(),
            addr: "a:3".into(),
            witness: true,
            token: None,
        },
    );
    for id in [1, 2] {
        ok(
            &mut s,
            Command::ReportVolumeGroups {
                node_id: id,
                vgs: BTreeMap::from([("data".into(), 5 * GIB)]),
            },
        );
    }
    s
}

/// Nodes n1, n2 and witness w with volume group `data`, pools `drbdvm` (DRBD) and `lvm`, and
/// services demo/svc/kvm1 (a DRBD volume) and demo/svc/local (an LVM volume), not provisioned.
pub(crate) fn drbd_cluster() -> ClusterState {
    let mut s = objects_tests::nodes_with_vgs();
    let kv = |k: &str, v: &str| (ConfigKey::parse(k).unwrap().0, v.to_string());
    let set = vec![
        kv("cluster.name", "drbd4kvm"),
        kv("pool#drbdvm.type", "drbd"),
        kv("pool#drbdvm.vg", "data"),
        kv("pool#lvm.type", "lvm"),
        kv("pool#lvm.vg", "data"),
    ];
    assert_eq!(s.apply(&Command::UpdateConfig { set, unset: vec![] }), Response::Done);
    for (name, pool) in [("kvm1", "drbdvm"), ("local", "lvm")] {
        let text = format!("[volume#data]\nname = {{name}}\npool = {pool}\nsize = 1G\n");
        let mut config = Ini::parse(&text).unwrap();
        config.set("DEFAULT", "id", &objects::derived_uuid(name)).unwrap();
        let path = ObjectPath::parse(&format!("demo/svc/{name}")).unwrap();
        assert_eq!(s.apply(&Command::CreateObject { path, config }), Response::Done);
    }
    s
}

fn cluster() -> ClusterState {
    let mut s = nodes_with_vgs();
    let ok = |s: &mut ClusterState, c: Command| assert!(!matches!(s.apply(&c), Response::Refused(_)), "{c}");
    let kv = |k: &str, v: &str| (ConfigKey::parse(k).unwrap().0, v.to_string());
    ok(
        &mut s,
        Command::UpdateConfig {
            set: vec![kv("cluster.name", "drbd4kvm")],
            unset: vec![],
        },
    );
    ok(&mut s, create("system/cfg/drbd", ""));
    ok(
        &mut s,
        Command::PutKey {
            path: ObjectPath::parse("system/cfg/drbd").unwrap(),
            key: "live-migration".into(),
            value: b"resource {{.Name}} {}".to_vec(),
            mode: KeyMode::Add,
        },
    );
    let pool = vec![
        kv("pool#drbdvm.type", "drbd"),
        kv("pool#drbdvm.vg", "data"),
        kv("pool#drbdvm.template", "live-migration"),
    ];
    ok(
        &mut s,
        Command::UpdateConfig {
            set: pool,
            unset: vec![],
        },
    );
    s
}

fn create(path: &str, text: &str) -> Command {
    let mut config = Ini::parse(text).unwrap();
    config.set("DEFAULT", "id", &derived_uuid(path)).unwrap();
    Command::CreateObject {
        path: ObjectPath::parse(path).unwrap(),
        config,
    }
}

fn svc_with_volume(name: &str, size: &str) -> Command {
    create(
        &format!("demo/svc/{name}"),
        &format!("[volume#data]\nshared = true\nsize = {size}\n"),
    )
}

/// Applies `c`, which must be refused without changing anything; returns why.
pub(crate) fn refused(s: &mut ClusterState, c: Command) -> String {
    let before = s.clone();
    match s.apply(&c) {
        Response::Refused(why) => {
            assert_eq!(*s, before, "a refused {c} changed the state");
            why.to_string()
        }
        r => panic!("{c} was not refused: {r:?}"),
    }
}

#[test]
fn tutorial_volume_gets_the_tutorial_allocation() {
    let mut s = cluster();
    assert_eq!(s.apply(&svc_with_volume("kvm1", "4G")), Response::Done);
    let vol = &s.objects[&path_of("demo/vol/kvm1")];
    let a = vol.alloc.as_ref().unwrap();
    assert_eq!(a.lv, "kvm1.demo.vol.drbd4kvm");
    assert_eq!(a.nodes, vec![1, 2], "the witness never gets a volume");
    let d = a.drbd.as_ref().unwrap();
    assert_eq!((d.minor, d.port), (0, DRBD_BASE_PORT));
    assert_eq!(d.node_ids, vec![(1, 0), (2, 1)]);
    assert_eq!(
        vol.config.get("disk#2", "disk"),
        Some("/dev/data/kvm1.demo.vol.drbd4kvm")
    );
    assert_eq!(vol.config.get("DEFAULT", "owner"), Some("demo/svc/kvm1"));
}

#[test]
fn a_volume_is_refused_when_every_drbd_port_is_taken_never_given_a_wrapped_one() {
    let mut s = cluster();
    s.index_mut().ports.extend(u32::from(DRBD_BASE_PORT)..=65_534);
    assert_eq!(s.apply(&svc_with_volume("last", "1G")), Response::Done);
    let port = |s: &ClusterState| {
        s.objects[&path_of("demo/vol/last")]
            .alloc
            .as_ref()
            .unwrap()
            .drbd
            .as_ref()
            .unwrap()
            .port
    };
    assert_eq!(port(&s), 65_535);
    let before = s.clone();
    match s.apply(&svc_with_volume("over", "1G")) {
        Response::Refused(why) => assert!(why.to_string().contains("no free DRBD port"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s, before, "a refusal changes nothing");
}

#[test]
fn a_section_missing_a_required_keyword_is_named_cut_and_escaped() {
    // An empty container section: its name was repeated whole, control characters and all.
    let mut s = cluster();
    for (name, shown) in [
        ("container#\u{1b}x".to_string(), r"[container#\u{1b}x]".to_string()),
        (
            format!("container#{}", "x".repeat(10_000)),
            format!("[container#{}… (10010 bytes)]", "x".repeat(190)),
        ),
    ] {
        let why = refused(&mut s, create("demo/svc/x", &format!("[{name}]\n")));
        assert_eq!(why, format!("demo/svc/x: section {shown} needs keyword type"));
    }
}

#[test]
fn refusals_name_the_part_and_change_nothing() {
    let mut s = cluster();
    s.apply(&svc_with_volume("kvm1", "4G"));
    let cases = [
        (svc_with_volume("kvm2", "2G"), "out of space on n1"),
        (
            create("demo/svc/x", "[volume#data]\npool = nope\nsize = 1G\n"),
            "\"nope\"",
        ),
        (create("demo/svc/x", "[volume#data]\nsize = 1G\n"), "no pool"),
        (create("demo/svc/x", "[volume#data]\nsize = 1Q\n"), "volume#data.size"),
        (create("demo/svc/x", "[nodes#1]\nk = v\n"), "[nodes#1]"),
        (
            create(
                "demo/svc/x",
                "[DEFAULT]\nnodes = n1 w\n[volume#data]\nshared = true\nsize = 1G\n",
            ),
            "w is a witness",
        ),
        (create("demo/svc/x", "[DEFAULT]\nnodes = n7\n"), "\"n7\""),
        (create("demo/svc/kvm1", ""), "already exists"),
        (create("demo/vol/v", ""), "volumes are created"),
        (
            Command::DeleteObject {
                path: ObjectPath::parse("demo/vol/kvm1").unwrap(),
            },
            "used by demo/svc/kvm1",
        ),
        (
            Command::DeleteObject {
                path: ObjectPath::parse("system/cfg/drbd").unwrap(),
            },
            "pool#drbdvm",
        ),
        (
            Command::RemoveKey {
                path: ObjectPath::parse("system/cfg/drbd").unwrap(),
                key: "live-migration".into(),
            },
            "pool#drbdvm",
        ),
        (
            Command::UpdateConfig {
                set: vec![(ConfigKey::parse("pool#drbdvm.vg").unwrap().0, "other".into())],
                unset: vec![],
            },
            "cannot change",
        ),
        (
            Command::UpdateConfig {
                set: vec![
                    (ConfigKey::parse("pool#p2.type").unwrap().0, "drbd".into()),
                    (ConfigKey::parse("pool#p2.template").unwrap().0, "missing".into()),
                ],
                unset: vec![],
            },
            "missing",
        ),
    ];
    for (cmd, named) in cases {
        let why = refused(&mut s, cmd);
        assert!(why.contains(named), "{named:?} not in {why:?}");
    }
}

#[test]
fn deleting_a_service_frees_its_volume_and_allocation() {
    let mut s = cluster();
    s.apply(&svc_with_volume("a", "2G"));
    s.apply(&svc_with_volume("b", "2G"));
    assert_eq!(
        s.apply(&Command::DeleteObject {
            path: ObjectPath::parse("demo/svc/a").unwrap()
        }),
        Response::Done
    );
    assert!(!s.objects.contains_key(&path_of("demo/vol/a")));
    // The freed minor, port and space are reused.
    s.apply(&svc_with_volume("c", "3G"));
    let d = s.objects[&path_of("demo/vol/c")]
        .alloc
        .as_ref()
        .unwrap()
        .drbd
        .clone()
        .unwrap();
    assert_eq!((d.minor, d.port), (0, DRBD_BASE_PORT));
}

#[test]
fn update_creates_the_volume_once_size_is_set() {
    let mut s = cluster();
    s.apply(&create(
        "demo/svc/kvm1",
        "[DEFAULT]\nnodes = {clusternodes}\norchestrate = ha\n",
    ));
    let key = |k: &str| ObjectKey::parse(k).unwrap();
    let path = ObjectPath::parse("demo/svc/kvm1").unwrap();
    let set = ["name={name}", "shared=true", "size=4G", "pool=drbdvm"]
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (key(&format!("volume#data.{k}")), v.to_string())
        })
        .collect();
    assert_eq!(
        s.apply(&Command::UpdateObject {
            path: path.clone(),
            set,
            unset: vec![]
        }),
        Response::Done
    );
    assert!(s.objects.contains_key(&path_of("demo/vol/kvm1")));
    let shown = s.objects[&path_of("demo/svc/kvm1")].config.to_string();
    assert!(
        shown.starts_with("[DEFAULT]\nnodes = {clusternodes}\norchestrate = ha\nid = "),
        "{shown}"
    );
    assert!(
        shown.ends_with("[volume#data]\nname = {name}\nshared = true\nsize = 4G\npool = drbdvm\n"),
        "{shown}"
    );
    // Resizing is refused, not silently ignored.
    let why = refused(
        &mut s,
        Command::UpdateObject {
            path,
            set: vec![(key("volume#data.size"), "5G".into())],
            unset: vec![],
        },
    );
    assert!(why.contains("resizing"), "{why}");
}

#[test]
fn secrets_never_show_in_the_command_log_text() {
    let c = Command::PutKey {
        path: ObjectPath::parse("system/sec/s").unwrap(),
        key: "pw".into(),
        value: b"hunter2".to_vec(),
        mode: KeyMode::Add,
    };
    assert!(!c.to_string().contains("hunter2"));
}

#[derive(Debug, Clone)]
enum Op {
    Create(u8, u8),
    Delete(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..12, 1u8..4).prop_map(|(n, g)| Op::Create(n, g)),
        (0u8..12).prop_map(Op::Delete)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn allocations_stay_unique_and_within_capacity(ops in proptest::collection::vec(op(), 1..40)) {
        let mut s = cluster();
        for op in ops {
            let cmd = match op {
                Op::Create(n, g) => svc_with_volume(&format!("s{n}"), &format!("{g}G")),
                Op::Delete(n) => Command::DeleteObject { path: ObjectPath::parse(&format!("demo/svc/s{n}")).unwrap() },
            };
            let before = s.clone();
            if let Response::Refused(_) = s.apply(&cmd) {
                prop_assert_eq!(&s, &before);
            }
            let allocs: Vec<&Allocation> = s.objects.values().filter_map(|o| o.alloc.as_ref()).collect();
            let minors: BTreeSet<u32> = allocs.iter().map(|a| a.drbd.as_ref().unwrap().minor).collect();
            let ports: BTreeSet<u16> = allocs.iter().map(|a| a.drbd.as_ref().unwrap().port).collect();
            prop_assert_eq!(minors.len(), allocs.len(), "duplicate minor");
            prop_assert_eq!(ports.len(), allocs.len(), "duplicate port");
            prop_assert!(ports.iter().all(|p| *p >= DRBD_BASE_PORT));
            prop_assert!(s.index_is_consistent(), "the allocation index drifted from the objects");
            for node in [1, 2] {
                prop_assert!(s.vg_used(node, "data") <= 5 * GIB, "over capacity on node {}", node);
            }
            // Every volume belongs to a live service.
            for (p, o) in &s.objects {
                if o.config.get("DEFAULT", "owner").is_some() {
                    let owner = o.owner().expect("an owner is a path");
                    prop_assert!(s.objects.contains_key(&owner), "{} outlived {}", p, owner);
                }
            }
        }
    }
}

#[test]
fn provision_places_on_the_first_data_node_and_guards_delete() {
    let mut s = cluster();
    s.apply(&svc_with_volume("kvm1", "4G"));
    let path = ObjectPath::parse("demo/svc/kvm1").unwrap();
    let why = refused(
        &mut s,
        Command::SetStarted {
            path: path.clone(),
            started: true,
        },
    );
    assert!(why.contains("not provisioned"), "{why}");
    assert_eq!(s.apply(&Command::Provision { path: path.clone() }), Response::Done);
    let st = &s.services[&path_of("demo/svc/kvm1")];
    assert_eq!(
        (st.provisioned, st.placement, st.started, st.epoch),
        (true, Some(1), true, 1)
    );
    let why = refused(&mut s, Command::DeleteObject { path: path.clone() });
    assert!(why.contains("unprovision it"), "{why}");
    let why = refused(
        &mut s,
        Command::MarkProvisioned {
            path: path.clone(),
            node_id: 3,
        },
    );
    assert!(why.contains("not one of the nodes"), "the witness: {why}");
    assert_eq!(s.apply(&Command::Unprovision { path: path.clone() }), Response::Done);
    assert_eq!(s.apply(&Command::DeleteObject { path }), Response::Done);
    assert!(s.services.is_empty());
    let why = refused(
        &mut s,
        Command::Provision {
            path: ObjectPath::parse("system/cfg/drbd").unwrap(),
        },
    );
    assert!(why.contains("not a service"), "{why}");
}

#[test]
fn a_retired_keyword_is_refused_before_the_log_and_an_old_entry_still_applies() {
    let mut s = cluster();
    let path = ObjectPath::parse("demo/svc/kvm1").unwrap();
    let key = |k: &str| ObjectKey::parse(k).unwrap();
    let update = |set: Vec<(ObjectKey, String)>, unset: Vec<ObjectKey>| Command::UpdateObject {
        path: path.clone(),
        set,
        unset,
    };
    let old = create("demo/svc/kvm1", "[DEFAULT]\nnodes = n1 n2\ntopology = failover\n");
    let why = s.check(&old).unwrap_err().to_string();
    assert!(
        why.contains("keyword \"topology\" in section [DEFAULT] is not supported"),
        "{why}"
    );
    // The same command in a log written before the keyword was retired applies as it did:
    // every node replaying the log reaches the same state.
    assert_eq!(s.apply(&old), Response::Done);
    assert_eq!(
        s.objects[&path_of("demo/svc/kvm1")].config.get("DEFAULT", "topology"),
        Some("failover")
    );
    let why = s
        .check(&update(vec![(key("volume#data.format"), "false".into())], vec![]))
        .unwrap_err()
        .to_string();
    assert!(
        why.contains("\"format\" in section [volume#data]") && why.contains("raw block devices"),
        "{why}"
    );
    // Kept, read by nothing: it blocks no other change, and it can be dropped.
    s.check(&update(vec![(key("priority"), "10".into())], vec![])).unwrap();
    assert_eq!(
        s.apply(&update(vec![(key("priority"), "10".into())], vec![key("topology")])),
        Response::Done
    );
    let config = &s.objects[&path_of("demo/svc/kvm1")].config;
    assert_eq!(
        (config.get("DEFAULT", "topology"), config.get("DEFAULT", "priority")),
        (None, Some("10"))
    );
    // Unsetting a retired keyword the configuration does not hold is refused like any other.
    refused(&mut s, update(vec![], vec![key("container#1.start_timeout")]));
}

#[test]
fn object_values_are_one_line_before_the_log_and_an_old_entry_still_applies() {
    let mut s = cluster();
    let path = ObjectPath::parse("demo/svc/kvm1").unwrap();
    let mut config = Ini::parse("[DEFAULT]\nnodes = n1 n2\n[container#1]\ntype = kvm\n").unwrap();
    config.set("DEFAULT", "id", &derived_uuid("demo/svc/kvm1")).unwrap();
    // A NUL, a next-line character or an escape sequence: Ini::set refuses only '\n' and '\r'.
    for bad in ["kvm1\0", "kvm1\u{85}[evil]", "kvm1\u{1b}[2J"] {
        let mut c = config.clone();
        c.set("container#1", "name", bad).unwrap();
        let cmd = Command::CreateObject {
            path: path.clone(),
            config: c,
        };
        let why = s.check(&cmd).unwrap_err().to_string();
        assert!(
            why.contains("container#1.name") && why.contains("one line without control characters"),
            "{bad:?}: {why}"
        );
    }
    let mut ok = config.clone();
    ok.set("container#1", "name", "kvm1").unwrap();
    let create = Command::CreateObject {
        path: path.clone(),
        config: ok,
    };
    s.check(&create).unwrap();
    assert_eq!(s.apply(&create), Response::Done);
    let update = |v: &str| Command::UpdateObject {
        path: path.clone(),
        set: vec![
            (ObjectKey::parse("container#1.type").unwrap(), "kvm".to_string()),
            (ObjectKey::parse("container#1.name").unwrap(), v.to_string()),
        ],
        unset: vec![],
    };
    let why = s.check(&update("kvm1\0")).unwrap_err().to_string();
    assert!(why.contains("U+0000"), "{why}");
    // In a log an older version wrote, it applies as it did.
    assert_eq!(s.apply(&update("kvm1\0")), Response::Done);
    assert_eq!(
        s.objects[&path_of("demo/svc/kvm1")].config.get("container#1", "name"),
        Some("kvm1\0")
    );
}

#[test]
fn object_configurations_are_bounded_at_creation_and_by_updates() {
    let mut s = cluster();
    let path = ObjectPath::parse("demo/cfg/big").unwrap();
    let mut config = Ini::default();
    config.set("DEFAULT", "id", &derived_uuid("demo/cfg/big")).unwrap();
    // Decoded whole (a member's Propose), not parsed: the same bounds as a text.
    let mut many = config.clone();
    for i in 0..crate::config::ini::MAX_SECTIONS {
        many.set(&format!("x#{i}"), "k", "v").unwrap();
    }
    let why = s
        .check(&Command::CreateObject {
            path: path.clone(),
            config: many,
        })
        .unwrap_err()
        .to_string();
    assert!(why.contains("demo/cfg/big") && why.contains("sections"), "{why}");
    let small = Command::CreateObject {
        path: path.clone(),
        config,
    };
    s.check(&small).unwrap();
    assert_eq!(s.apply(&small), Response::Done);
    // An update whose values each pass may not grow a configuration past 1 MiB.
    let svc = ObjectPath::parse("demo/svc/grow").unwrap();
    let c = create("demo/svc/grow", "[DEFAULT]\nnodes = n1 n2\n");
    assert_eq!(s.apply(&c), Response::Done);
    let name = "k".repeat(crate::config::kind::MAX_VALUE_BYTES);
    let mut set = vec![];
    for i in 0..300 {
        set.push((
            ObjectKey::parse(&format!("container#c{i}.type")).unwrap(),
            "kvm".to_string(),
        ));
        set.push((ObjectKey::parse(&format!("container#c{i}.name")).unwrap(), name.clone()));
    }
    let grow = |set: Vec<(ObjectKey, String)>| Command::UpdateObject {
        path: svc.clone(),
        set,
        unset: vec![],
    };
    let why = s.check(&grow(set.clone())).unwrap_err().to_string();
    assert!(why.contains("demo/svc/grow") && why.contains("1 MiB"), "{why}");
    s.check(&grow(set[..200].to_vec())).unwrap();
    // The leader holds a member's proposal to the same bound (a member's check is its own).
    let why = s.check_proposal(&grow(set.clone())).unwrap_err().to_string();
    assert!(why.contains("demo/svc/grow") && why.contains("1 MiB"), "{why}");
    s.check_proposal(&grow(set[..200].to_vec())).unwrap();
    // An update of an object that is not there is `apply`'s to refuse, not the proposal's.
    let gone = Command::UpdateObject {
        path: ObjectPath::parse("demo/svc/gone").unwrap(),
        set: set[..2].to_vec(),
        unset: vec![],
    };
    s.check_proposal(&gone).unwrap();
}

/// A snapshot copies the state under the state machine's lock: every entry is shared with the
/// copy, so the copy costs a pointer per entry; a change afterwards copies the entry it
/// changes, alone, and the copy keeps what it saw.
#[test]
fn a_copy_of_the_state_shares_its_entries_until_one_changes() {
    let mut s = cluster();
    let (a, b) = (path_of("demo/svc/a"), path_of("demo/svc/b"));
    for c in [svc_with_volume("a", "1G"), svc_with_volume("b", "1G")] {
        assert_eq!(s.apply(&c), Response::Done);
    }
    for p in [&a, &b] {
        s.apply(&Command::FreezeService {
            path: p.clone(),
            frozen: false,
        });
    }
    let copy = s.clone();
    let orchestrate = vec![(ObjectKey::parse("orchestrate").unwrap(), "ha".to_string())];
    let update = Command::UpdateObject {
        path: a.clone(),
        set: orchestrate,
        unset: vec![],
    };
    assert_eq!(s.apply(&update), Response::Done);
    s.apply(&Command::FreezeService {
        path: a.clone(),
        frozen: true,
    });
    assert!(s.services[&a].frozen && !copy.services[&a].frozen);
    assert_ne!(s.objects[&a], copy.objects[&a]);
    assert!(!Arc::ptr_eq(&s.objects[&a], &copy.objects[&a]));
    assert!(Arc::ptr_eq(&s.objects[&b], &copy.objects[&b]));
    assert!(Arc::ptr_eq(&s.services[&b], &copy.services[&b]));
    let volumes: Vec<_> = s.objects.keys().filter(|p| p.kind == ObjectKind::Vol).collect();
    assert_eq!(volumes.len(), 2);
    for v in volumes {
        assert!(Arc::ptr_eq(&s.objects[v], &copy.objects[v]), "{v}");
    }
}
