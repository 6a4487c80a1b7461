//! What a committed command did, in words an operator reads: the events of `omctl events` and
//! of the metrics' counters. Derived from the state before and after the command, so every node
//! derives the same events for the same log entry, in the same order (a client that reconnects
//! to another node resumes where it was). A refused command gives none.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use super::{Avail, ClusterState, Command, NodeId, ObjectPath, Phase, Response, ServiceState};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    NodeAdded,
    NodeRemoved,
    /// The Raft voters and learners changed.
    Membership,
    /// The cluster configuration changed.
    Config,
    ObjectCreated,
    ObjectUpdated,
    ObjectDeleted,
    Provisioned,
    Unprovisioned,
    Started,
    Stopped,
    /// The node that holds a service changed (provision, switch, failover).
    Placement,
    /// A switch or live switch began.
    Switch,
    /// A switch or live switch moved to its next phase (`Done` ends it, with its error if it
    /// was aborted).
    SwitchPhase,
    /// The leader moved a service off a node whose lease ran out.
    Failover,
    /// The leader saw a node's lease run out and acted on it (a failover, a fencing mark, an
    /// aborted live switch).
    LeaseExpired,
    /// A service's holder may promote without seeing this node (its lease ran out).
    Fenced,
    /// A DRBD `fence-peer` handler marked a node's disk of a resource outdated.
    Outdated,
    /// A DRBD `unfence-peer` handler: the node's disk is up to date again.
    UpToDate,
    /// A node's view of a service instance changed (avail, provisioned, warnings).
    Instance,
    Frozen,
    Thawed,
    NodeFrozen,
    NodeThawed,
    /// A node armed or disarmed its watchdog.
    Watchdog,
}

impl EventKind {
    pub const ALL: [EventKind; 25] = [
        EventKind::NodeAdded,
        EventKind::NodeRemoved,
        EventKind::Membership,
        EventKind::Config,
        EventKind::ObjectCreated,
        EventKind::ObjectUpdated,
        EventKind::ObjectDeleted,
        EventKind::Provisioned,
        EventKind::Unprovisioned,
        EventKind::Started,
        EventKind::Stopped,
        EventKind::Placement,
        EventKind::Switch,
        EventKind::SwitchPhase,
        EventKind::Failover,
        EventKind::LeaseExpired,
        EventKind::Fenced,
        EventKind::Outdated,
        EventKind::UpToDate,
        EventKind::Instance,
        EventKind::Frozen,
        EventKind::Thawed,
        EventKind::NodeFrozen,
        EventKind::NodeThawed,
        EventKind::Watchdog,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::NodeAdded => "node-added",
            EventKind::NodeRemoved => "node-removed",
            EventKind::Membership => "membership",
            EventKind::Config => "config",
            EventKind::ObjectCreated => "object-created",
            EventKind::ObjectUpdated => "object-updated",
            EventKind::ObjectDeleted => "object-deleted",
            EventKind::Provisioned => "provisioned",
            EventKind::Unprovisioned => "unprovisioned",
            EventKind::Started => "started",
            EventKind::Stopped => "stopped",
            EventKind::Placement => "placement",
            EventKind::Switch => "switch",
            EventKind::SwitchPhase => "switch-phase",
            EventKind::Failover => "failover",
            EventKind::LeaseExpired => "lease-expired",
            EventKind::Fenced => "fenced",
            EventKind::Outdated => "outdated",
            EventKind::UpToDate => "up-to-date",
            EventKind::Instance => "instance",
            EventKind::Frozen => "frozen",
            EventKind::Thawed => "thawed",
            EventKind::NodeFrozen => "node-frozen",
            EventKind::NodeThawed => "node-thawed",
            EventKind::Watchdog => "watchdog",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event of a committed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// The service (or object) it is about.
    pub service: Option<ObjectPath>,
    /// The node it is about (a service's new holder, the node whose lease ran out).
    pub node: Option<String>,
    /// The other node, where there is one (a switch's or failover's source).
    pub peer: Option<String>,
    /// A switch's phase (`Switch`: the first, `SwitchPhase`: the one reached).
    pub phase: Option<Phase>,
    /// What happened, in words.
    pub message: String,
}

impl Event {
    fn new(kind: EventKind, message: String) -> Event {
        Event {
            kind,
            service: None,
            node: None,
            peer: None,
            phase: None,
            message,
        }
    }

    fn service(mut self, path: &ObjectPath) -> Event {
        self.service = Some(path.clone());
        self
    }

    fn node(mut self, name: String) -> Event {
        self.node = Some(name);
        self
    }

    fn peer(mut self, name: String) -> Event {
        self.peer = Some(name);
        self
    }

    fn phase(mut self, phase: Phase) -> Event {
        self.phase = Some(phase);
        self
    }
}

/// Applies `cmd` to `state`, adding the events it gives to `out`: none when it is refused
/// (a refused command changes nothing), each command of a batch as in an entry of its own.
pub fn apply(state: &mut ClusterState, cmd: &Command, out: &mut Vec<Event>) -> Response {
    if let Command::Batch(cmds) = cmd {
        return Response::Batch(
            cmds.iter()
                .map(|c| match c {
                    Command::Batch(_) => state.apply(c),
                    c => apply(state, c, out),
                })
                .collect(),
        );
    }
    let before = Before::capture(state, cmd);
    let response = state.apply(cmd);
    if !matches!(response, Response::Refused(_)) {
        before.events(state, cmd, out);
    }
    response
}

/// The Raft membership became `voters` and `learners`.
pub fn membership(state: &ClusterState, voters: &BTreeSet<NodeId>, learners: &BTreeSet<NodeId>) -> Event {
    let names = |ids: &BTreeSet<NodeId>| ids.iter().map(|id| state.node_name(*id)).collect::<Vec<_>>().join(", ");
    let mut message = format!("voters: {}", names(voters));
    if !learners.is_empty() {
        message.push_str(&format!("; learners: {}", names(learners)));
    }
    Event::new(EventKind::Membership, message)
}

/// What a command's events compare with: the state it was applied to, in the parts it may
/// change (shared, not copied: the state copies a service it changes, `Arc::make_mut`).
struct Before {
    service: Option<Arc<ServiceState>>,
    /// The instance report replaced: avail, warn, provisioned.
    report: Option<(Avail, bool, bool)>,
    /// A removed node's name.
    node_name: Option<String>,
    /// The node's watchdog was armed; the node was frozen; the disk was marked outdated.
    flag: bool,
}

impl Before {
    fn capture(state: &ClusterState, cmd: &Command) -> Before {
        let mut before = Before {
            service: cmd.path().and_then(|p| state.services.get(p).cloned()),
            report: None,
            node_name: None,
            flag: false,
        };
        match cmd {
            Command::ReportInstance { path, node_id, .. } => {
                before.report = state
                    .reports
                    .get(path)
                    .and_then(|r| r.get(node_id))
                    .map(|r| (r.avail, r.warn, r.provisioned));
            }
            Command::RemoveNode { node_id } => before.node_name = Some(state.node_name(*node_id)),
            Command::ReportWatchdog { node_id, .. } => {
                before.flag = state.nodes.get(node_id).is_some_and(|n| n.watchdog);
            }
            Command::FreezeNode { node_id, .. } => before.flag = state.frozen_nodes.contains(node_id),
            Command::OutdatePeer { resource, node_id } | Command::UnfencePeer { resource, node_id } => {
                before.flag = state.outdated.get(resource).is_some_and(|s| s.contains(node_id));
            }
            _ => {}
        }
        before
    }

    fn events(self, state: &ClusterState, cmd: &Command, out: &mut Vec<Event>) {
        let n = |id: &NodeId| state.node_name(*id);
        match cmd {
            Command::Bootstrap { name, .. } => {
                out.push(Event::new(EventKind::NodeAdded, format!("{name} founded the cluster")).node(name.clone()));
            }
            Command::AddNode { name, witness, .. } => {
                let what = if *witness { "witness" } else { "node" };
                out.push(Event::new(EventKind::NodeAdded, format!("{name} joined as a {what}")).node(name.clone()));
            }
            Command::RemoveNode { .. } => {
                let name = self.node_name.clone().unwrap_or_default();
                out.push(Event::new(EventKind::NodeRemoved, format!("{name} was removed")).node(name));
            }
            Command::UpdateConfig { set, unset } => {
                let keys = changed_keys(set, unset);
                out.push(Event::new(
                    EventKind::Config,
                    format!("cluster configuration: {}", keys),
                ));
            }
            Command::CreateObject { path, .. } => {
                out.push(Event::new(EventKind::ObjectCreated, format!("{path} created")).service(path));
            }
            Command::UpdateObject { path, set, unset } => {
                let keys = changed_keys(set, unset);
                let message = format!("{path} configuration: {keys}");
                out.push(Event::new(EventKind::ObjectUpdated, message).service(path));
            }
            Command::DeleteObject { path } => {
                out.push(Event::new(EventKind::ObjectDeleted, format!("{path} deleted")).service(path));
            }
            Command::Failover { path, from, to } => {
                out.push(lease_expired(n(from), Some(path)));
                let message = format!(
                    "{path} failed over from {} to {}: {}'s lease ran out",
                    n(from),
                    n(to),
                    n(from)
                );
                out.push(
                    Event::new(EventKind::Failover, message)
                        .service(path)
                        .node(n(to))
                        .peer(n(from)),
                );
            }
            Command::Fence { path, node_id } => out.push(lease_expired(n(node_id), Some(path))),
            Command::MigrationPhase {
                path, fenced: Some(id), ..
            } => out.push(lease_expired(n(id), Some(path))),
            Command::ReportInstance {
                path, node_id, report, ..
            } => {
                let now = (report.avail, report.warn, report.provisioned);
                if self.report != Some(now) {
                    let mut message = format!("{path} on {}: {}", n(node_id), report.avail);
                    if report.warn {
                        message.push_str(" with warnings");
                    }
                    if !report.provisioned {
                        message.push_str(", not provisioned");
                    }
                    if let Some((avail, _, _)) = self.report.filter(|b| b.0 != report.avail) {
                        message.push_str(&format!(" (was {avail})"));
                    }
                    out.push(Event::new(EventKind::Instance, message).service(path).node(n(node_id)));
                }
            }
            Command::ReportWatchdog { node_id, armed } if *armed != self.flag => {
                let what = if *armed { "armed" } else { "disarmed" };
                out.push(
                    Event::new(EventKind::Watchdog, format!("{} {what} its watchdog", n(node_id))).node(n(node_id)),
                );
            }
            Command::FreezeNode { node_id, frozen } if *frozen != self.flag => {
                let (kind, what) = match frozen {
                    true => (EventKind::NodeFrozen, "frozen: nothing is placed on it"),
                    false => (EventKind::NodeThawed, "thawed"),
                };
                out.push(Event::new(kind, format!("{} {what}", n(node_id))).node(n(node_id)));
            }
            Command::OutdatePeer { resource, node_id } if !self.flag => {
                let message = format!("DRBD {resource}: {}'s disk marked outdated by its peer", n(node_id));
                out.push(Event::new(EventKind::Outdated, message).node(n(node_id)));
            }
            Command::UnfencePeer { resource, node_id } if self.flag => {
                let message = format!("DRBD {resource}: {}'s disk up to date again", n(node_id));
                out.push(Event::new(EventKind::UpToDate, message).node(n(node_id)));
            }
            _ => {}
        }
        if let Some(path) = cmd.path() {
            let after = state.services.get(path).map(Arc::as_ref);
            service_events(state, path, self.service.as_deref(), after, out);
        }
    }
}

/// The keys an update sets, and those it unsets with a `-`, comma-separated.
fn changed_keys<K: fmt::Display, V>(set: &[(K, V)], unset: &[K]) -> String {
    let keys: Vec<String> = set
        .iter()
        .map(|(k, _)| k.to_string())
        .chain(unset.iter().map(|k| format!("-{k}")))
        .collect();
    keys.join(", ")
}

fn lease_expired(node: String, path: Option<&ObjectPath>) -> Event {
    let mut e = Event::new(EventKind::LeaseExpired, format!("{node}'s lease ran out")).node(node);
    if let Some(p) = path {
        e = e.service(p);
        e.message.push_str(&format!(" (acting on {p})"));
    }
    e
}

/// What changed in one service's desired state.
fn service_events(
    state: &ClusterState,
    path: &ObjectPath,
    before: Option<&ServiceState>,
    after: Option<&ServiceState>,
    out: &mut Vec<Event>,
) {
    let empty = ServiceState::default();
    let (b, a) = (before.unwrap_or(&empty), after.unwrap_or(&empty));
    let n = |id: NodeId| state.node_name(id);
    if a.provisioned != b.provisioned {
        let (kind, what) = match a.provisioned {
            true => (EventKind::Provisioned, "provisioned"),
            false => (EventKind::Unprovisioned, "unprovisioned"),
        };
        out.push(Event::new(kind, format!("{path} {what}")).service(path));
    }
    // A switch's record: begun, a phase reached, ended.
    let (bm, am) = (b.migration.as_ref(), a.migration.as_ref());
    match (bm, am) {
        (_, Some(m)) if bm.is_none_or(|old| old.id != m.id) => {
            let what = if m.phase == Phase::Prepare {
                "live switch"
            } else {
                "switch"
            };
            let message = format!("{path}: {what} from {} to {} begun", n(m.from), n(m.to));
            out.push(
                Event::new(EventKind::Switch, message)
                    .service(path)
                    .node(n(m.to))
                    .peer(n(m.from))
                    .phase(m.phase),
            );
        }
        (Some(old), Some(m)) if old.phase != m.phase => out.push(phase_event(state, path, m)),
        (Some(old), None) => {
            if let Some(last) = a.last_migration.as_ref().filter(|l| l.id == old.id) {
                out.push(phase_event(state, path, last));
            }
        }
        _ => {}
    }
    if a.placement != b.placement {
        if let Some(to) = a.placement {
            let mut e = Event::new(EventKind::Placement, format!("{path} placed on {}", n(to)))
                .service(path)
                .node(n(to));
            if let Some(from) = b.placement {
                e.message.push_str(&format!(" (was {})", n(from)));
                e = e.peer(n(from));
            }
            out.push(e);
        }
    }
    if a.started != b.started && a.provisioned {
        let (kind, what) = match a.started {
            true => (EventKind::Started, "started"),
            false => (EventKind::Stopped, "stopped"),
        };
        let mut e = Event::new(kind, format!("{path} {what}")).service(path);
        if let Some(p) = a.placement {
            e.message.push_str(&format!(" on {}", n(p)));
            e = e.node(n(p));
        }
        out.push(e);
    }
    if a.frozen != b.frozen {
        let (kind, what) = match a.frozen {
            true => (EventKind::Frozen, "frozen: no automatic failover"),
            false => (EventKind::Thawed, "thawed"),
        };
        out.push(Event::new(kind, format!("{path} {what}")).service(path));
    }
    for id in a.fenced.difference(&b.fenced) {
        let message = format!("{path}: its holder may promote without {}", n(*id));
        out.push(Event::new(EventKind::Fenced, message).service(path).node(n(*id)));
    }
}

fn phase_event(state: &ClusterState, path: &ObjectPath, m: &super::Migration) -> Event {
    let mut message = format!(
        "{path}: switch from {} to {}: {}",
        state.node_name(m.from),
        state.node_name(m.to),
        m.phase
    );
    if let Some(e) = &m.error {
        message.push_str(&format!(" (aborted: {e})"));
    }
    Event::new(EventKind::SwitchPhase, message)
        .service(path)
        .node(state.node_name(m.to))
        .peer(state.node_name(m.from))
        .phase(m.phase)
}

#[cfg(test)]
mod tests {
    use super::super::objects_tests::drbd_cluster;
    use super::super::{InstanceReport, Rejection};
    use super::*;

    fn kvm1() -> ObjectPath {
        ObjectPath::parse("demo/svc/kvm1").unwrap()
    }

    /// Applies `cmd`, which must not be refused, and gives its events as `kind node peer phase`.
    fn run(s: &mut ClusterState, cmd: Command) -> Vec<String> {
        let mut out = vec![];
        let r = apply(s, &cmd, &mut out);
        assert!(!matches!(r, Response::Refused(_)), "{cmd}: {r:?}");
        out.iter()
            .map(|e| {
                let parts = [
                    Some(e.kind.to_string()),
                    e.node.clone(),
                    e.peer.clone().map(|p| format!("<-{p}")),
                    e.phase.map(|p| p.to_string()),
                ];
                parts.into_iter().flatten().collect::<Vec<_>>().join(" ")
            })
            .collect()
    }

    fn phase(id: u64, from: Phase, to: Phase, error: Option<&str>, fenced: Option<NodeId>) -> Command {
        Command::MigrationPhase {
            path: kvm1(),
            id,
            from,
            to,
            error: error.map(str::to_string),
            fenced,
        }
    }

    fn switch_id(s: &ClusterState) -> u64 {
        s.services[&kvm1()].migration.as_ref().unwrap().id
    }

    #[test]
    fn a_service_life_reads_as_its_events() {
        let mut s = drbd_cluster();
        assert_eq!(
            run(&mut s, Command::Provision { path: kvm1() }),
            ["provisioned", "placement n1", "started n1"]
        );
        // A live switch: begun, each phase, then over; the placement moves at Finalize.
        assert_eq!(
            run(&mut s, Command::LiveSwitch { path: kvm1(), to: 2 }),
            ["switch n2 <-n1 Prepare"]
        );
        let id = switch_id(&s);
        use Phase::*;
        assert_eq!(
            run(&mut s, phase(id, Prepare, DualPrimary, None, None)),
            ["switch-phase n2 <-n1 DualPrimary"]
        );
        assert_eq!(run(&mut s, phase(id, DualPrimary, Migrating, None, None)).len(), 1);
        assert_eq!(
            run(&mut s, phase(id, Migrating, Finalize, None, None)),
            ["switch-phase n2 <-n1 Finalize", "placement n2 <-n1"]
        );
        assert_eq!(
            run(&mut s, phase(id, Finalize, Done, None, None)),
            ["switch-phase n2 <-n1 Done"]
        );
        // A failover says whose lease ran out, and that the new holder may go without it.
        assert_eq!(
            run(
                &mut s,
                Command::Failover {
                    path: kvm1(),
                    from: 2,
                    to: 1
                }
            ),
            ["lease-expired n2", "failover n1 <-n2", "placement n1 <-n2", "fenced n2"]
        );
        let last = s.services[&kvm1()].clone();
        let message = {
            let mut s = s.clone();
            s.services.insert(
                kvm1(),
                Arc::new(ServiceState {
                    placement: Some(2),
                    ..(*last).clone()
                }),
            );
            let mut out = vec![];
            apply(
                &mut s,
                &Command::Failover {
                    path: kvm1(),
                    from: 2,
                    to: 1,
                },
                &mut out,
            );
            out[1].message.clone()
        };
        assert_eq!(message, "demo/svc/kvm1 failed over from n2 to n1: n2's lease ran out");
        assert_eq!(
            run(
                &mut s,
                Command::SetStarted {
                    path: kvm1(),
                    started: false
                }
            ),
            ["stopped n1"]
        );
        assert_eq!(
            run(
                &mut s,
                Command::FreezeService {
                    path: kvm1(),
                    frozen: true
                }
            ),
            ["frozen"]
        );
    }

    #[test]
    fn an_aborted_or_interrupted_switch_ends_with_why() {
        let mut s = drbd_cluster();
        run(&mut s, Command::Provision { path: kvm1() });
        run(&mut s, Command::LiveSwitch { path: kvm1(), to: 2 });
        let id = switch_id(&s);
        let mut out = vec![];
        apply(
            &mut s,
            &phase(id, Phase::Prepare, Phase::Abort, Some("n2 not UpToDate"), None),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].phase, Some(Phase::Abort));
        assert!(
            out[0].message.contains("aborted: n2 not UpToDate"),
            "{}",
            out[0].message
        );
        // A failover of the source during a switch ends it, and says so.
        run(&mut s, phase(id, Phase::Abort, Phase::Done, None, None));
        run(&mut s, Command::Switch { path: kvm1(), to: 2 });
        let events = run(
            &mut s,
            Command::Failover {
                path: kvm1(),
                from: 1,
                to: 2,
            },
        );
        assert_eq!(
            events,
            [
                "lease-expired n1",
                "failover n2 <-n1",
                "switch-phase n2 <-n1 Done",
                "placement n2 <-n1",
                "fenced n1"
            ]
        );
        // The leader aborting a live switch whose target lost its lease.
        run(&mut s, Command::LiveSwitch { path: kvm1(), to: 1 });
        let id = switch_id(&s);
        let events = run(&mut s, phase(id, Phase::Prepare, Phase::Abort, Some("lease"), Some(1)));
        assert_eq!(events, ["lease-expired n1", "switch-phase n1 <-n2 Abort", "fenced n1"]);
    }

    #[test]
    fn a_refused_command_and_a_report_that_changes_nothing_give_no_event() {
        let mut s = drbd_cluster();
        let mut out = vec![];
        let r = apply(&mut s, &Command::Switch { path: kvm1(), to: 2 }, &mut out);
        assert!(matches!(r, Response::Refused(Rejection::NotProvisioned(_))), "{r:?}");
        assert!(out.is_empty());
        run(&mut s, Command::Provision { path: kvm1() });
        let report = |seq, avail| Command::ReportInstance {
            path: kvm1(),
            node_id: 1,
            report: InstanceReport {
                avail,
                warn: false,
                provisioned: true,
                resources: vec![],
            },
            seq,
        };
        assert_eq!(run(&mut s, report(1, Avail::Down)), ["instance n1"]);
        assert!(
            run(&mut s, report(2, Avail::Down)).is_empty(),
            "nothing an operator sees changed"
        );
        let mut out = vec![];
        apply(&mut s, &report(3, Avail::Up), &mut out);
        assert_eq!(out[0].message, "demo/svc/kvm1 on n1: up (was down)");
        // Late: refused, no event.
        let mut out = vec![];
        apply(&mut s, &report(2, Avail::Down), &mut out);
        assert!(out.is_empty());
        // Marks and flags: once when they change.
        let outdate = Command::OutdatePeer {
            resource: "kvm1.demo.vol.drbd4kvm".into(),
            node_id: 2,
        };
        assert_eq!(run(&mut s, outdate.clone()), ["outdated n2"]);
        assert!(run(&mut s, outdate).is_empty());
        let freeze = Command::FreezeNode {
            node_id: 2,
            frozen: true,
        };
        assert_eq!(run(&mut s, freeze.clone()), ["node-frozen n2"]);
        assert!(run(&mut s, freeze).is_empty());
    }

    #[test]
    fn a_batch_gives_each_command_events_as_its_own_entry_would() {
        let mut s = drbd_cluster();
        let batch = Command::Batch(vec![
            Command::Provision { path: kvm1() },
            Command::Switch { path: kvm1(), to: 9 },
            Command::FreezeService {
                path: kvm1(),
                frozen: true,
            },
        ]);
        assert_eq!(
            run(&mut s, batch),
            ["provisioned", "placement n1", "started n1", "frozen"]
        );
    }

    #[test]
    fn every_kind_reads_back_from_its_name() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("nope"), None);
    }
}
