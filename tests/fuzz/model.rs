//! The state machine (`model::ClusterState::check` and `apply`) over random command sequences
//! from a small vocabulary of nodes, paths, keys and values, hostile ones among them, often
//! after a setup that makes a cluster with pools, volume groups and a service.
//!
//! After every command: `apply` did not panic; check and apply agree (what `check` accepts,
//! `apply` does not refuse; what `check` refuses on the state alone, `apply` refuses the same
//! way, while what it refuses for the command's input only, `Command::check_input`, and an
//! object update's growth or unreadable result, `apply` may apply, as it must for an older
//! log); a refused command changed nothing; every refusal is a short one-line error; a
//! configuration `check` accepted prints as text that parses back to it. What `check` refuses
//! is applied to a copy only: it never reaches the log. After the sequence: the log replayed
//! on a new state gives the same responses and state, and so does a snapshot taken anywhere
//! in it (encoded as the store encodes one, read back, its allocation index rebuilt) with the
//! rest applied.

use std::collections::BTreeMap;

use omraft::config::ini::Ini;
use omraft::model::objects::ObjectError;
use omraft::model::{
    Avail, ClusterState, Command, ConfigKey, InstanceReport, KeyMode, NodeId, ObjectKey, ObjectPath, Phase, Rejection,
    ResourceReport, Response,
};
use omraft::raft::codec;
use omraft::raft::store::SmData;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

use crate::hostile::{self, check_error};
use crate::values::SSH_KEY;

/// Paths commands name: services, config maps, secrets, users, volumes, the DRBD templates.
const PATHS: &[&str] = &[
    "demo/svc/a",
    "demo/svc/b",
    "root/svc/c",
    "demo/cfg/c",
    "system/cfg/drbd",
    "demo/sec/s",
    "demo/usr/u",
    "demo/vol/a",
    "demo/vol/data",
];

fn path() -> impl Strategy<Value = ObjectPath> {
    select(PATHS).prop_map(|p| ObjectPath::parse(p).unwrap())
}

/// A node id: one of the first few (n1, n2, the witness w...), or any.
fn node() -> impl Strategy<Value = NodeId> {
    prop_oneof![8 => 0u64..6, 1 => any::<u64>()]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(&["n1", "n2", "n3", "w", "x"][..]).prop_map(str::to_string),
        1 => hostile::text(&["n", "1", "-", "."]),
    ]
}

fn addr() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (1u8..6).prop_map(|i| format!("10.0.0.{i}:1215")),
        1 => crate::values::value(),
    ]
}

/// A value for a keyword: plausible ones and hostile text.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(&[
            "n1 n2", "n2 n1", "{clusternodes}", "n1", "w", "n9", "ha", "no", "start", "spread", "score",
            "nodes order", "10", "1G", "100G", "1", "0", "2E", "1T", "{name}", "data", "v1", "drbd", "lvm",
            "nope", "true", "false", "kvm", "good", "r0", "300ms", "3s", "1s", "500ms", "tcp://{host}:49152",
            "qemu+ssh://root@{host}/system", "c1", "",
        ][..])
        .prop_map(str::to_string),
        1 => crate::values::value(),
    ]
}

/// A cluster configuration key, as text.
fn config_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(&[
            "cluster.name", "cluster.ssh_trust", "pool#drbd.type", "pool#drbd.vg", "pool#drbd.template",
            "pool#lvm.type", "pool#lvm.vg", "pool#x.type", "lease.renew", "lease.duration", "lease.drift",
            "migration.uri", "migration.libvirt_uri",
        ][..])
        .prop_map(str::to_string),
        1 => hostile::text(&["cluster", "pool#", "lease", ".", "name", "type"]),
    ]
}

/// An object key, as text.
fn object_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(&[
            "nodes", "orchestrate", "placement", "priority", "id", "topology", "volume#data.size",
            "volume#data.pool", "volume#data.name", "volume#data.shared", "volume#data.format", "volume#d2.size",
            "volume#d2.pool", "container#1.type", "container#1.name", "container#1.stop_timeout",
            "volume#data.size@n1", "volume#data.size@n9", "disk#1.vg", "DEFAULT.owner",
        ][..])
        .prop_map(str::to_string),
        1 => hostile::text(&["volume#", "container#", ".", "@", "size", "DEFAULT"]),
    ]
}

/// One of `plausible`, mostly, or hostile text.
fn mostly(plausible: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        9 => select(plausible).prop_map(str::to_string),
        1 => crate::values::value(),
    ]
}

/// A service's configuration text, often a valid one.
fn service_text() -> impl Strategy<Value = String> {
    let volume = (
        mostly(&["data", "d2", "x"]),
        option::of(mostly(&["{name}", "v1", "a2", "data"])),
        option::of(mostly(&["drbd", "lvm", "nope"])),
        option::of(mostly(&["1G", "100G", "1", "2E", "0", "99G"])),
        option::of(mostly(&["true", "false"])),
    )
        .prop_map(|(id, name, pool, size, shared)| {
            let mut text = format!("[volume#{id}]\n");
            for (k, v) in [("name", name), ("pool", pool), ("size", size), ("shared", shared)] {
                if let Some(v) = v {
                    text += &format!("{k} = {v}\n");
                }
            }
            text
        });
    (
        option::of(mostly(&["n1 n2", "n2 n1", "{clusternodes}", "n1", "n2", "w", "n9"])),
        option::of(mostly(&["ha", "no", "start"])),
        option::of(mostly(&["nodes order", "spread", "score"])),
        vec(volume, 0..3),
        option::of(mostly(&["a", "b", "kvm1"])),
        option::of(hostile::text(&["container#", "volume#", "disk#", "1", "DEFAULT"])),
        option::of(crate::ini::text()),
    )
        .prop_map(|(nodes, orchestrate, placement, volumes, container, empty, junk)| {
            let mut text = String::from("[DEFAULT]\n");
            for (k, v) in [("nodes", nodes), ("orchestrate", orchestrate), ("placement", placement)] {
                if let Some(v) = v {
                    text += &format!("{k} = {v}\n");
                }
            }
            text += &volumes.concat();
            if let Some(c) = container {
                text += &format!("[container#1]\ntype = kvm\nname = {c}\n");
            }
            if let Some(name) = empty {
                text += &format!("[{name}]\n");
            }
            if let Some(j) = junk.filter(|j| j.len() % 4 == 0) {
                text += &j;
            }
            text
        })
}

/// A configuration as a command decoded from the log or a member's proposal carries it: any
/// sections and entries, not necessarily what a text parses to.
fn decoded_ini() -> impl Strategy<Value = Ini> {
    let section = prop_oneof![
        3 => select(&["DEFAULT", "volume#data", "container#1", "x#1"][..]).prop_map(str::to_string),
        1 => hostile::text(&["[", "]", "#", "\n", "volume#", "DEFAULT"]),
    ];
    let entry = (
        prop_oneof![3 => select(&["nodes", "size", "name", "type"][..]).prop_map(str::to_string), 1 => hostile::text(&["=", "#", "\n", " "])],
        value(),
    );
    vec((section, vec(entry, 0..3)), 0..4).prop_map(|sections| {
        let sections: Vec<_> = sections
            .into_iter()
            .map(|(name, entries)| serde_json::json!({ "name": name, "entries": entries }))
            .collect();
        serde_json::from_value(serde_json::json!({ "sections": sections })).expect("an Ini decodes")
    })
}

fn report() -> impl Strategy<Value = InstanceReport> {
    let resource = (
        prop_oneof![2 => select(&["data", "vol#data", "container#1"][..]).prop_map(str::to_string), 1 => hostile::text(&["#", "\n"])],
        hostile::text(&["up", "\n"]),
        vec(hostile::text(&["sync", "\n"]), 0..2),
        vec(
            (
                mostly(&["n1", "n2", "w"]),
                prop_oneof![2 => Just("Connected/UpToDate".to_string()), 1 => hostile::text(&["Connected", "/", "\n"])],
            ),
            0..3,
        ),
    )
        .prop_map(|(rid, label, messages, peers)| ResourceReport {
            rid,
            avail: Avail::Up,
            label,
            messages,
            peers: peers.into_iter().collect(),
        });
    (
        select(&[Avail::Up, Avail::Down, Avail::Warn, Avail::NotApplicable][..]),
        any::<bool>(),
        any::<bool>(),
        vec(resource, 0..2),
    )
        .prop_map(|(avail, warn, provisioned, resources)| InstanceReport {
            avail,
            warn,
            provisioned,
            resources,
        })
}

const PHASES: &[Phase] = &[
    Phase::Stopping,
    Phase::Prepare,
    Phase::DualPrimary,
    Phase::Migrating,
    Phase::Finalize,
    Phase::Starting,
    Phase::Abort,
    Phase::Done,
];

/// A command before it meets the state: some of its parts are taken from the state when it
/// runs (the switch in progress, a DRBD resource that exists).
#[derive(Debug, Clone)]
pub enum Op {
    Cmd(Command),
    /// A config update from `SECTION.KEYWORD` texts, parsed as the API parses them (or
    /// split as they are, as a decoded command may carry them).
    Config(Vec<(String, String)>, Vec<String>),
    /// An object created from a text, as the API creates it (or from its decoded form when
    /// the text does not parse).
    Create(ObjectPath, String, Option<Ini>, bool),
    /// An object update from `[SECTION.]KEYWORD` texts.
    Update(ObjectPath, Vec<(String, String)>, Vec<String>),
    /// The next phase of the switch in progress (`current`), or of any.
    Phase {
        path: ObjectPath,
        current: bool,
        id: u64,
        from: Phase,
        to: Phase,
        error: Option<String>,
        fenced: Option<NodeId>,
    },
    /// A failover from where the service is (`current`), or from any node.
    Failover(ObjectPath, bool, NodeId, NodeId),
    /// A DRBD handler's mark for the `n`th DRBD resource there is, or for any text.
    Fence {
        resource: Result<usize, String>,
        node: NodeId,
        outdate: bool,
    },
}

/// `SECTION.KEYWORD` as a decoded command may carry it, whether or not it parses.
fn config_key_of(text: &str) -> ConfigKey {
    ConfigKey::parse(text).map(|(k, _)| k).unwrap_or_else(|_| {
        let (section, keyword) = text.split_once('.').unwrap_or(("cluster", text));
        ConfigKey {
            section: section.into(),
            keyword: keyword.into(),
        }
    })
}

fn object_key_of(text: &str) -> ObjectKey {
    ObjectKey::parse(text.trim()).unwrap_or_else(|_| ObjectKey {
        section: "DEFAULT".into(),
        keyword: text.into(),
    })
}

impl Op {
    /// The command this is on `state`.
    pub fn resolve(&self, state: &ClusterState) -> Command {
        match self.clone() {
            Op::Cmd(cmd) => cmd,
            Op::Config(set, unset) => match omraft::model::catalog::parse_update(&set, &unset) {
                Ok((set, unset)) => Command::UpdateConfig { set, unset },
                Err(_) => Command::UpdateConfig {
                    set: set.iter().map(|(k, v)| (config_key_of(k), v.clone())).collect(),
                    unset: unset.iter().map(|k| config_key_of(k)).collect(),
                },
            },
            Op::Create(path, text, decoded, with_id) => {
                let mut config = match (Ini::parse(&text), decoded) {
                    (Ok(config), _) | (Err(_), Some(config)) => config,
                    (Err(_), None) => Ini::default(),
                };
                if with_id {
                    let id = omraft::model::objects::derived_uuid(&format!("{path}"));
                    let _ = config.set("DEFAULT", "id", &id);
                }
                Command::CreateObject { path, config }
            }
            Op::Update(path, set, unset) => Command::UpdateObject {
                path,
                set: set.iter().map(|(k, v)| (object_key_of(k), v.clone())).collect(),
                unset: unset.iter().map(|k| object_key_of(k)).collect(),
            },
            Op::Phase {
                path,
                current,
                id,
                from,
                to,
                error,
                fenced,
            } => {
                let m = state.services.get(&path).and_then(|s| s.migration.as_ref());
                let (id, from) = match m {
                    Some(m) if current => (m.id, m.phase),
                    _ => (id, from),
                };
                Command::MigrationPhase {
                    path,
                    id,
                    from,
                    to,
                    error,
                    fenced,
                }
            }
            Op::Failover(path, current, from, to) => {
                let placed = state.services.get(&path).and_then(|s| s.placement);
                let from = placed.filter(|_| current).unwrap_or(from);
                Command::Failover { path, from, to }
            }
            Op::Fence {
                resource,
                node,
                outdate,
            } => {
                let resources: Vec<String> = state
                    .objects
                    .values()
                    .filter_map(|o| o.alloc.as_ref().filter(|a| a.drbd.is_some()).map(|a| a.lv.clone()))
                    .collect();
                let resource = match resource {
                    Ok(n) if !resources.is_empty() => resources[n % resources.len()].clone(),
                    Ok(_) => "a.demo.vol.c1".into(),
                    Err(text) => text,
                };
                if outdate {
                    Command::OutdatePeer {
                        resource,
                        node_id: node,
                    }
                } else {
                    Command::UnfencePeer {
                        resource,
                        node_id: node,
                    }
                }
            }
        }
    }
}

/// One command of the vocabulary.
pub fn op() -> impl Strategy<Value = Op> {
    let cmd = |s: BoxedStrategy<Command>| s.prop_map(Op::Cmd);
    prop_oneof![
        1 => cmd((node(), name(), addr()).prop_map(|(node_id, name, addr)| Command::Bootstrap { node_id, name, addr }).boxed()),
        3 => cmd((name(), addr(), any::<bool>(), option::of(select(&["t1", "t2"][..])))
            .prop_map(|(name, addr, witness, token)| Command::AddNode { name, addr, witness, token: token.map(str::to_string) }).boxed()),
        1 => cmd((node(), hostile::text(&["ab", "01"])).prop_map(|(node_id, fingerprint)| Command::NodeCert { node_id, fingerprint }).boxed()),
        1 => cmd((vec(any::<u8>(), 0..8), node()).prop_map(|(ca, authority)| Command::EstablishTrust { ca, authority, signing_key: vec![7; 32] }).boxed()),
        1 => cmd(vec(any::<u8>(), 0..40).prop_map(|signing_key| Command::RotateSigningKey { signing_key }).boxed()),
        1 => cmd(hostile::text(&["ab"]).prop_map(|fingerprint| Command::RevokeCert { fingerprint }).boxed()),
        1 => cmd(node().prop_map(|node_id| Command::RemoveNode { node_id }).boxed()),
        6 => (vec((config_key(), value()), 0..4), vec(config_key(), 0..2)).prop_map(|(set, unset)| Op::Config(set, unset)),
        6 => (path(), service_text(), option::of(decoded_ini()), any::<bool>()).prop_map(|(p, t, d, id)| Op::Create(p, t, d, id)),
        2 => (path(), decoded_ini(), any::<bool>()).prop_map(|(p, d, id)| Op::Create(p, String::from("["), Some(d), id)),
        5 => (path(), vec((object_key(), value()), 0..3), vec(object_key(), 0..2)).prop_map(|(p, s, u)| Op::Update(p, s, u)),
        2 => cmd(path().prop_map(|path| Command::DeleteObject { path }).boxed()),
        3 => cmd((
                path(),
                prop_oneof![3 => select(&["good", "r0", "x"][..]).prop_map(str::to_string), 1 => hostile::text(&["r", "."])],
                prop_oneof![
                    16 => vec(any::<u8>(), 0..64),
                    4 => Just(render_template()),
                    1 => (0usize..3).prop_map(|extra| vec![b'x'; (1 << 20) - 1 + extra]),
                ],
                any::<bool>(),
            )
            .prop_map(|(path, key, value, change)| Command::PutKey {
                path,
                key,
                value,
                mode: if change { KeyMode::Change } else { KeyMode::Add },
            }).boxed()),
        1 => cmd((path(), select(&["good", "r0", "x"][..])).prop_map(|(path, key)| Command::RemoveKey { path, key: key.into() }).boxed()),
        3 => cmd((
                node(),
                vec(
                    (
                        prop_oneof![3 => select(&["data", "other"][..]).prop_map(str::to_string), 1 => hostile::text(&["vg"])],
                        prop_oneof![Just(u64::MAX), Just(1u64 << 60), Just((1u64 << 60) + 1), any::<u64>(), 0u64..(200u64 << 30)],
                    ),
                    0..3,
                ),
            )
            .prop_map(|(node_id, vgs)| Command::ReportVolumeGroups { node_id, vgs: vgs.into_iter().collect::<BTreeMap<_, _>>() }).boxed()),
        1 => cmd((node(), prop_oneof![Just(u64::MAX), Just(1u64 << 52), Just((1u64 << 52) + 1), any::<u64>()])
            .prop_map(|(node_id, available)| Command::ReportMemory { node_id, available }).boxed()),
        4 => cmd(path().prop_map(|path| Command::Provision { path }).boxed()),
        1 => cmd(path().prop_map(|path| Command::Unprovision { path }).boxed()),
        1 => cmd((path(), node()).prop_map(|(path, node_id)| Command::MarkProvisioned { path, node_id }).boxed()),
        2 => cmd((path(), any::<bool>()).prop_map(|(path, started)| Command::SetStarted { path, started }).boxed()),
        4 => cmd((path(), node(), report(), prop_oneof![Just(0u64), 1u64..20, Just(u64::MAX)])
            .prop_map(|(path, node_id, report, seq)| Command::ReportInstance { path, node_id, report, seq }).boxed()),
        1 => cmd((path(), name(), prop_oneof![Just("<domain><name>x</name></domain>".to_string()), hostile::text(&["<name>", "x", "</name>"])])
            .prop_map(|(path, name, xml)| Command::CaptureDomain { path, name, xml }).boxed()),
        3 => cmd((path(), node()).prop_map(|(path, to)| Command::Switch { path, to }).boxed()),
        3 => cmd((path(), node()).prop_map(|(path, to)| Command::LiveSwitch { path, to }).boxed()),
        2 => (path(), any::<bool>(), node(), node()).prop_map(|(p, c, from, to)| Op::Failover(p, c, from, to)),
        1 => cmd((path(), node()).prop_map(|(path, node_id)| Command::Fence { path, node_id }).boxed()),
        5 => (path(), prop::bool::weighted(0.8), 0u64..5, select(PHASES), select(PHASES), option::of(hostile::text(&["why"])), option::of(node()))
            .prop_map(|(path, current, id, from, to, error, fenced)| Op::Phase { path, current, id, from, to, error, fenced }),
        1 => cmd((node(), prop_oneof![Just(SSH_KEY.to_string()), crate::values::value()]).prop_map(|(node_id, key)| Command::ReportSshKey { node_id, key }).boxed()),
        1 => cmd((node(), any::<bool>()).prop_map(|(node_id, armed)| Command::ReportWatchdog { node_id, armed }).boxed()),
        1 => cmd((path(), any::<bool>()).prop_map(|(path, frozen)| Command::FreezeService { path, frozen }).boxed()),
        1 => cmd((node(), any::<bool>()).prop_map(|(node_id, frozen)| Command::FreezeNode { node_id, frozen }).boxed()),
        3 => (
                prop_oneof![3 => any::<usize>().prop_map(Ok), 1 => hostile::text(&[".", "vol", "c1"]).prop_map(Err)],
                node(),
                any::<bool>(),
            )
            .prop_map(|(resource, node, outdate)| Op::Fence { resource, node, outdate }),
    ]
}

/// A DRBD template that renders.
fn render_template() -> Vec<u8> {
    omraft::drivers::drbd::render::BUILTIN_TEMPLATE.as_bytes().to_vec()
}

/// Commands that make a cluster (`steps` 1): n1, n2 and the witness w, volume groups, a DRBD
/// and an LVM pool, trust, and a service with a volume on each; then (2) the service
/// provisioned, on n1, with n1's report that n2 is connected and up to date. None for 0.
pub fn setup(steps: u8) -> Vec<Op> {
    if steps == 0 {
        return vec![];
    }
    let mut ops = vec![
        Op::Cmd(Command::Bootstrap {
            node_id: 1,
            name: "n1".into(),
            addr: "10.0.0.1:1215".into(),
        }),
        Op::Cmd(Command::EstablishTrust {
            ca: vec![1],
            authority: 1,
            signing_key: vec![7; 32],
        }),
    ];
    for (name, witness) in [("n2", false), ("w", true)] {
        ops.push(Op::Cmd(Command::AddNode {
            name: name.into(),
            addr: format!("10.0.0.{}:1215", if witness { 3 } else { 2 }),
            witness,
            token: None,
        }));
    }
    for node_id in [1, 2] {
        ops.push(Op::Cmd(Command::ReportVolumeGroups {
            node_id,
            vgs: BTreeMap::from([("data".to_string(), 100 << 30)]),
        }));
    }
    let set = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    ops.push(Op::Config(
        set(&[
            ("cluster.name", "c1"),
            ("pool#drbd.type", "drbd"),
            ("pool#drbd.vg", "data"),
            ("pool#lvm.type", "lvm"),
            ("pool#lvm.vg", "data"),
        ]),
        vec![],
    ));
    ops.push(Op::Create(
        ObjectPath::parse("demo/svc/a").unwrap(),
        "[DEFAULT]\nnodes = n1 n2\norchestrate = ha\n[volume#data]\nname = {name}\npool = drbd\nsize = 1G\n[volume#d2]\nname = a2\npool = lvm\nsize = 1G\n[container#1]\ntype = kvm\nname = a\n".into(),
        None,
        true,
    ));
    if steps > 1 {
        let path = ObjectPath::parse("demo/svc/a").unwrap();
        ops.push(Op::Cmd(Command::Provision { path: path.clone() }));
        let resource = ResourceReport {
            rid: "volume#data".into(),
            avail: Avail::Up,
            label: "a.demo.vol.c1".into(),
            messages: vec![],
            peers: BTreeMap::from([("n2".to_string(), "Connected/UpToDate".to_string())]),
        };
        ops.push(Op::Cmd(Command::ReportInstance {
            path,
            node_id: 1,
            report: InstanceReport {
                avail: Avail::Up,
                warn: false,
                provisioned: true,
                resources: vec![resource],
            },
            seq: 1,
        }));
    }
    ops
}

/// Every object configuration of `state` prints as text that parses back to it.
fn reads_back(state: &ClusterState, path: &ObjectPath) -> Result<(), TestCaseError> {
    if let Some(o) = state.objects.get(path) {
        let text = o.config.to_string();
        let again = Ini::parse(&text);
        prop_assert_eq!(again.as_ref(), Ok(&o.config), "{} prints as {:?}", path, text);
    }
    Ok(())
}

/// Runs `ops` on a new state with every per-command check, as the API proposes them: a
/// command `check` refuses never reaches the log (applied all the same, as an older log's
/// entry would be, to a copy of the state). Returns the log and the state.
pub fn run(ops: &[Op]) -> Result<(Vec<(Command, Response)>, ClusterState), TestCaseError> {
    let mut state = ClusterState::default();
    let mut log = Vec::with_capacity(ops.len());
    for op in ops {
        let cmd = op.resolve(&state);
        let checked = state.check(&cmd);
        let input = cmd.check_input();
        let mut after = state.clone();
        let response = after.apply(&cmd);
        if let Err(e) = &checked {
            check_error(&format!("check {cmd}"), &e.to_string())?;
        }
        if let Response::Refused(e) = &response {
            // A caller sees apply's refusal only of a command proposed, past check_input.
            if input.is_ok() {
                check_error(&format!("apply {cmd}"), &e.to_string())?;
            }
            prop_assert_eq!(&after, &state, "refused, {} changed the state", cmd);
        }
        match (&checked, &response) {
            (Ok(()), Response::Refused(e)) => prop_assert!(false, "check accepted {}, apply refused it: {}", cmd, e),
            (Ok(()), _) => {
                if let Command::CreateObject { path, .. } | Command::UpdateObject { path, .. } = &cmd {
                    reads_back(&after, path)?;
                }
                state = after;
                log.push((cmd, response));
            }
            // Refused for what the command carries: an older log may hold it, and applies.
            (Err(_), _) if input.is_err() => {}
            // An update that grows the configuration past the bounds of a new one, or leaves
            // it unable to read back: refused as new input only.
            (Err(Rejection::Object(ObjectError::TooLarge { .. } | ObjectError::Unreadable { .. })), Response::Done)
                if matches!(cmd, Command::UpdateObject { .. }) => {}
            (Err(e), r) => prop_assert_eq!(r, &Response::Refused(e.clone()), "{}: check and apply disagree", cmd),
        }
    }
    Ok((log, state))
}

/// `log` applied to `state`: each response as logged.
fn replay(state: &mut ClusterState, log: &[(Command, Response)]) -> Result<(), TestCaseError> {
    for (cmd, response) in log {
        prop_assert_eq!(&state.apply(cmd), response, "{} replayed", cmd);
    }
    Ok(())
}

proptest! {
    #![proptest_config(crate::config(15_000))]

    #[test]
    fn check_and_apply_agree_over_random_commands_and_replay_the_same(
        setup_steps in prop_oneof![1 => Just(0), 3 => Just(1), 2 => Just(2)],
        ops in vec(op(), 1..40),
        cut in any::<usize>(),
    ) {
        let ops: Vec<Op> = setup(setup_steps).into_iter().chain(ops).collect();
        let (log, state) = run(&ops)?;

        let mut again = ClusterState::default();
        replay(&mut again, &log)?;
        prop_assert_eq!(&again, &state, "replayed, the log gave another state");

        let cut = cut % (log.len() + 1);
        let mut before = ClusterState::default();
        replay(&mut before, &log[..cut])?;
        let snapshot = codec::encode(&SmData { state: before.clone(), ..SmData::default() }).unwrap();
        let read = codec::decode::<SmData>(&snapshot);
        prop_assert!(read.is_ok(), "a snapshot at {} does not read back: {:?}", cut, read.err());
        let mut restored = read.unwrap().state;
        prop_assert_eq!(&restored, &before, "a snapshot read back as another state");
        replay(&mut restored, &log[cut..])?;
        prop_assert_eq!(&restored, &state, "from a snapshot at {}, the log gave another state", cut);
    }
}
