//! What the cluster wants of each service beyond its configuration (provisioned, where it
//! is placed, started), what each node last reported of its instance, and DRBD fencing
//! (which node's disk of a resource is outdated).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::objects::Allocation;
use super::path::{ObjectKind, ObjectPath};
use super::{ClusterState, NodeId, Rejection};
use crate::config::echo::echo;
use crate::config::ini::DEFAULT;

/// The desired state of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    /// Its volumes exist on every node (LVs, DRBD resources up).
    pub provisioned: bool,
    /// Nodes declared provisioned out of band (`instance provision --state-only`).
    #[serde(default)]
    pub state_only: BTreeSet<NodeId>,
    /// The node that holds the service: DRBD Primary there, and its VM when started.
    pub placement: Option<NodeId>,
    /// Whether it should run on `placement`.
    pub started: bool,
    /// Bumped at every placement change; appliers ignore older instructions.
    pub epoch: u64,
    /// The libvirt domain XML of each kvm container, captured from the node that had it.
    #[serde(default)]
    pub domains: BTreeMap<String, String>,
    /// No automatic action (failover) on this service.
    #[serde(default)]
    pub frozen: bool,
    /// Nodes whose lease the leader saw run out when it moved the service off them: the new
    /// holder may promote without seeing them.
    #[serde(default)]
    pub fenced: std::collections::BTreeSet<NodeId>,
    /// The live switch in progress, if any.
    #[serde(default)]
    pub migration: Option<Migration>,
    /// How the last live switch ended (phase `Done`, with its error if it was aborted).
    #[serde(default)]
    pub last_migration: Option<Migration>,
}

/// A live switch (ARCHITECTURE.md, `src/applier/`): each phase is committed by the node that did the work
/// of the one before, so a crash or a leader change in any phase resumes from the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// The service's epoch when it began: names it in phase commands.
    pub id: u64,
    pub from: NodeId,
    pub to: NodeId,
    pub phase: Phase,
    /// Why it was aborted.
    pub error: Option<String>,
    /// It reached `DualPrimary`: the target may have promoted.
    #[serde(default)]
    pub dual: bool,
}

/// The phases of a switch, in order. A switch goes `Stopping`, `Starting`, `Done`; a live
/// switch `Prepare`, `DualPrimary`, `Migrating`, `Finalize`, `Done`. `Abort` may follow any
/// phase before the hand-over (`Finalize` or `Starting`), and then `Done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    /// Switch: the source stops its guests and demotes.
    Stopping,
    /// Live switch: the source checks that the target's DRBD is Connected and UpToDate.
    Prepare,
    /// Both sides allow two primaries; the target promotes.
    DualPrimary,
    /// The source live-migrates the guest to the target.
    Migrating,
    /// Live switch: the target holds the service; the source demotes.
    Finalize,
    /// Switch: the target holds the service: it promotes and starts the guests.
    Starting,
    /// The guest stays on (or comes back to) the source; the target demotes.
    Abort,
    /// Over: both sides back to one Primary.
    Done,
}

impl Phase {
    /// Whether `self -> next` is a step of the protocol.
    pub fn may_go(self, next: Phase) -> bool {
        use Phase::*;
        matches!(
            (self, next),
            (Stopping, Starting)
                | (Starting, Done)
                | (Prepare, DualPrimary)
                | (DualPrimary, Migrating)
                | (Migrating, Finalize)
                | (Finalize, Done)
                | (Abort, Done)
        ) || (self.before_hand_over() && next == Abort)
    }

    /// The source still holds the service: the switch may be aborted.
    pub fn before_hand_over(self) -> bool {
        matches!(
            self,
            Phase::Stopping | Phase::Prepare | Phase::DualPrimary | Phase::Migrating
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Up, down, or up with a warning; `NotApplicable` for a resource that does not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Avail {
    Up,
    Down,
    Warn,
    #[serde(rename = "n/a")]
    NotApplicable,
}

impl fmt::Display for Avail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Avail::Up => "up",
            Avail::Down => "down",
            Avail::Warn => "warn",
            Avail::NotApplicable => "n/a",
        })
    }
}

/// One resource of an instance, as its node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceReport {
    /// `volume#data`, `container#1`.
    pub rid: String,
    pub avail: Avail,
    /// What the tutorial shows beside the status: `kvm1`, `kvm kvm1`.
    pub label: String,
    /// Warnings and errors, e.g. a resync in progress or a failed command.
    #[serde(default)]
    pub messages: Vec<String>,
    /// For a DRBD volume: each peer node's connection and disk, as this node sees them
    /// (`n2` -> `Connected/UpToDate`).
    #[serde(default)]
    pub peers: BTreeMap<String, String>,
}

/// A node's view of one instance, sent when it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    /// Up when every resource is up, down when none is, warn when some are.
    pub avail: Avail,
    /// Some resource carries a warning (a resync, a failed command).
    #[serde(default)]
    pub warn: bool,
    pub provisioned: bool,
    pub resources: Vec<ResourceReport>,
}

/// Bounds on what a node's instance report may carry (`InstanceReport::check_bounds`): far
/// above what a service's resources give, low enough that no report fills the log.
pub const MAX_REPORT_RESOURCES: usize = 4096;
/// The most messages, and the most peers, one resource of a report lists.
pub const MAX_REPORT_ITEMS: usize = 64;
/// The longest string in a report (a resource id, label, message, peer or its state); the
/// applier cuts longer messages (`InstanceReport::bounded`).
pub const MAX_REPORT_STRING: usize = 4096;

impl InstanceReport {
    /// Why the report is larger than a node's report may be, if it is.
    pub fn check_bounds(&self) -> Result<(), String> {
        if self.resources.len() > MAX_REPORT_RESOURCES {
            return Err(format!(
                "{} resources, more than the {MAX_REPORT_RESOURCES} a report may list",
                self.resources.len()
            ));
        }
        for r in &self.resources {
            if r.messages.len() > MAX_REPORT_ITEMS || r.peers.len() > MAX_REPORT_ITEMS {
                return Err(format!(
                    "resource {}: more than {MAX_REPORT_ITEMS} messages or peers",
                    echo(&r.rid)
                ));
            }
            let strings = [&r.rid, &r.label]
                .into_iter()
                .chain(&r.messages)
                .chain(r.peers.iter().flat_map(|(k, v)| [k, v]));
            for s in strings {
                if s.len() > MAX_REPORT_STRING {
                    return Err(format!(
                        "resource {}: a string of {} bytes, more than {MAX_REPORT_STRING}",
                        echo(&r.rid),
                        s.len()
                    ));
                }
            }
        }
        Ok(())
    }

    /// The report with each message cut to what a report may carry (a driver's error can
    /// repeat a long output) and at most `MAX_REPORT_ITEMS` of them per resource.
    pub fn bounded(mut self) -> InstanceReport {
        for r in &mut self.resources {
            r.messages.truncate(MAX_REPORT_ITEMS);
            for m in &mut r.messages {
                if m.len() > MAX_REPORT_STRING {
                    let mut end = MAX_REPORT_STRING - 3;
                    while !m.is_char_boundary(end) {
                        end -= 1;
                    }
                    m.truncate(end);
                    m.push_str("...");
                }
            }
        }
        self
    }
}

impl ClusterState {
    pub(super) fn service(&self, path: &ObjectPath) -> Result<(), Rejection> {
        if path.kind != ObjectKind::Svc {
            return Err(Rejection::NotAService(path.to_string()));
        }
        if !self.objects.contains_key(path) {
            return Err(Rejection::Object(super::ObjectError::NotFound(path.to_string())));
        }
        Ok(())
    }

    /// The data nodes a service may run on, in its `nodes` order.
    pub fn service_nodes(&self, path: &ObjectPath) -> Vec<NodeId> {
        let Some(obj) = self.objects.get(path) else {
            return vec![];
        };
        let names = self
            .eval(path, &obj.config, DEFAULT, "nodes", None)
            .ok()
            .flatten()
            .unwrap_or_default();
        names
            .split_whitespace()
            .filter_map(|n| self.node_id(n))
            .filter(|id| self.nodes.get(id).is_some_and(|n| !n.witness))
            .collect()
    }

    pub(super) fn check_provision(&self, path: &ObjectPath) -> Result<(), Rejection> {
        self.service(path)?;
        if self.service_nodes(path).is_empty() {
            return Err(Rejection::NoNodes(path.to_string()));
        }
        Ok(())
    }

    pub(super) fn check_needs_provisioned(&self, path: &ObjectPath) -> Result<(), Rejection> {
        self.service(path)?;
        if !self.services.get(path).is_some_and(|s| s.provisioned) {
            return Err(Rejection::NotProvisioned(path.to_string()));
        }
        Ok(())
    }

    pub(super) fn check_node_of(&self, path: &ObjectPath, node: NodeId) -> Result<(), Rejection> {
        self.service(path)?;
        if !self.service_nodes(path).contains(&node) {
            return Err(Rejection::NotANodeOf(node, path.to_string()));
        }
        Ok(())
    }

    /// The object at `path`, for changing it (copied first if a snapshot shares it).
    pub(super) fn object_mut(&mut self, path: &ObjectPath) -> Option<&mut super::objects::Object> {
        self.objects.get_mut(path).map(Arc::make_mut)
    }

    /// The service's state, for changing it (copied first if a snapshot shares it).
    pub(super) fn service_mut(&mut self, path: &ObjectPath) -> Option<&mut ServiceState> {
        self.services.get_mut(path).map(Arc::make_mut)
    }

    /// The service's state, created empty if it has none, for changing it.
    pub(super) fn service_entry(&mut self, path: &ObjectPath) -> &mut ServiceState {
        Arc::make_mut(self.services.entry(path.clone()).or_default())
    }

    /// Marks a service provisioned, placed on the node its placement policy prefers (if it is
    /// not placed yet) and started there.
    pub(super) fn provision(&mut self, path: &ObjectPath) {
        let first = super::placement::first_choice(self, path);
        let s = self.service_entry(path);
        s.provisioned = true;
        if s.placement.is_none() {
            s.placement = first;
            s.epoch = s.epoch.saturating_add(1);
        }
        s.started = true;
    }

    pub(super) fn check_switch(&self, path: &ObjectPath, to: NodeId) -> Result<(), Rejection> {
        self.check_needs_provisioned(path)?;
        self.check_node_of(path, to)?;
        self.check_no_migration(path)?;
        if self.services.get(path).and_then(|s| s.placement) == Some(to) {
            return Err(Rejection::AlreadyThere(path.to_string(), to));
        }
        Ok(())
    }

    /// Whether node `me` must keep a watchdog armed by what the log says: it holds a started
    /// service (as Proxmox arms it only with HA resources: an idle node must not be reset by a
    /// slow election), or takes part in a switch (a live switch's target runs the guest as soon
    /// as it migrated).
    pub fn hosts(&self, me: NodeId) -> bool {
        self.services.values().any(|s| {
            (s.provisioned && s.started && s.placement == Some(me))
                || s.migration.as_ref().is_some_and(|m| m.from == me || m.to == me)
        })
    }

    /// Refuses while a switch is in progress: it must finish or be aborted first.
    pub(super) fn check_no_migration(&self, path: &ObjectPath) -> Result<(), Rejection> {
        match self.services.get(path).and_then(|s| s.migration.as_ref()) {
            Some(m) => Err(Rejection::Migrating(path.to_string(), m.phase)),
            None => Ok(()),
        }
    }

    /// A live switch needs a started service and, as its holder last reported, the target's
    /// DRBD Connected and UpToDate (the Prepare phase checks it again, live).
    pub(super) fn check_live_switch(&self, path: &ObjectPath, to: NodeId) -> Result<(), Rejection> {
        self.check_switch(path, to)?;
        let key = path.to_string();
        let s = &self.services[path];
        let Some(from) = s.placement.filter(|_| s.started) else {
            return Err(Rejection::NotRunning(key));
        };
        let target = self.nodes.get(&to).map(|n| n.name.clone()).unwrap_or_default();
        let report = self.reports.get(path).and_then(|r| r.get(&from));
        for r in report.map(|r| r.resources.as_slice()).unwrap_or_default() {
            if r.peers.is_empty() {
                continue;
            }
            let seen = r.peers.get(&target).map_or("not a peer", String::as_str);
            if seen != "Connected/UpToDate" {
                return Err(Rejection::TargetNotReady(key, target, r.rid.clone(), seen.to_string()));
            }
        }
        Ok(())
    }

    /// Begins a switch (phase `Stopping`) or a live switch (`Prepare`) of a started service;
    /// a stopped one is just placed on `to`, and started there.
    pub(super) fn begin_switch(&mut self, path: &ObjectPath, to: NodeId, live: bool) {
        let s = self.service_entry(path);
        let (Some(from), true) = (s.placement, s.started) else {
            // No switch record: an older one's outcome no longer applies.
            s.last_migration = None;
            return self.switch(path, to);
        };
        s.epoch = s.epoch.saturating_add(1);
        // Both sides are in sight for a switch to begin (the source hands over, a live
        // switch's target is checked Connected): no node is gone any more. A stale mark
        // would let a rebooted holder promote beside a target that is Primary across a cut.
        s.fenced.clear();
        s.migration = Some(Migration {
            id: s.epoch,
            from,
            to,
            phase: if live { Phase::Prepare } else { Phase::Stopping },
            error: None,
            dual: false,
        });
    }

    pub(super) fn check_migration_phase(
        &self,
        path: &ObjectPath,
        id: u64,
        from: Phase,
        to: Phase,
    ) -> Result<(), Rejection> {
        self.service(path)?;
        let m = self.services.get(path).and_then(|s| s.migration.as_ref());
        match m {
            Some(m) if m.id == id && m.phase == from && from.may_go(to) => Ok(()),
            _ => Err(Rejection::StalePhase(path.to_string(), id, from, to)),
        }
    }

    /// Moves a switch to its next phase. `Finalize` or `Starting` hands the service to the target;
    /// `Done` ends it. `fenced`: a participant the leader saw lose its lease.
    pub(super) fn migration_phase(
        &mut self,
        path: &ObjectPath,
        to: Phase,
        error: Option<&str>,
        fenced: Option<NodeId>,
    ) {
        let Some(s) = self.service_mut(path) else {
            return;
        };
        let Some(m) = s.migration.as_mut() else { return };
        m.phase = to;
        m.dual |= to == Phase::DualPrimary;
        if let Some(e) = error {
            m.error = Some(e.to_string());
        }
        if let Some(n) = fenced {
            s.fenced.insert(n);
        }
        match to {
            Phase::Finalize | Phase::Starting => {
                s.placement = Some(m.to);
                s.epoch = s.epoch.saturating_add(1);
                s.fenced.clear();
            }
            Phase::Done => s.last_migration = s.migration.take(),
            _ => {}
        }
    }

    /// Ends a live switch that a failover overtook: the leader moved the service instead.
    pub(super) fn interrupt_migration(&mut self, path: &ObjectPath, why: String) {
        let Some(s) = self.service_mut(path) else {
            return;
        };
        if let Some(mut m) = s.migration.take() {
            m.error = Some(why);
            m.phase = Phase::Done;
            s.last_migration = Some(m);
        }
    }

    /// Places a service on `to`, started: the old node stops and demotes, `to` promotes once
    /// it sees it demoted, then starts the guests.
    pub(super) fn switch(&mut self, path: &ObjectPath, to: NodeId) {
        let s = self.service_entry(path);
        s.placement = Some(to);
        s.started = true;
        s.epoch = s.epoch.saturating_add(1);
        s.fenced.clear();
    }

    pub(super) fn unprovision(&mut self, path: &ObjectPath) {
        if let Some(s) = self.service_mut(path) {
            s.provisioned = false;
            s.started = false;
            s.state_only.clear();
        }
    }

    pub(super) fn set_started(&mut self, path: &ObjectPath, started: bool) {
        if let Some(s) = self.service_mut(path) {
            s.started = started;
        }
    }

    /// The volume whose DRBD resource is `resource` (`DrbdResource`): its path and allocation.
    pub fn drbd_volume(&self, resource: &str) -> Option<(ObjectPath, &Allocation)> {
        let key = super::objects::DrbdResource::parse(resource)?.volume();
        let alloc = self.objects.get(&key)?.alloc.as_ref()?;
        (alloc.lv == resource && alloc.drbd.is_some()).then_some((key, alloc))
    }

    /// The DRBD resources of a service's volumes, in section order.
    pub fn service_drbd_resources(&self, path: &ObjectPath) -> Vec<String> {
        let Some(obj) = self.objects.get(path) else {
            return vec![];
        };
        obj.config
            .sections_of("volume")
            .filter_map(|s| self.eval(path, &obj.config, &s.name, "name", None).ok().flatten())
            .filter_map(|name| self.objects.get(&path.volume(&name)))
            .filter_map(|v| v.alloc.as_ref().filter(|a| a.drbd.is_some()).map(|a| a.lv.clone()))
            .collect()
    }

    /// How many services are placed on each node, started or not (nodes without any absent).
    pub fn placed_per_node(&self) -> std::collections::BTreeMap<NodeId, u64> {
        let mut placed = std::collections::BTreeMap::new();
        for node in self.services.values().filter_map(|s| s.placement) {
            *placed.entry(node).or_default() += 1;
        }
        placed
    }

    /// Whether `node` is drained: frozen, with no service placed on it.
    pub fn drained(&self, node: NodeId) -> bool {
        self.frozen_nodes.contains(&node) && !self.services.values().any(|s| s.placement == Some(node))
    }

    /// The DRBD resources of a service whose disk on `node` is marked outdated.
    pub fn outdated_on(&self, path: &ObjectPath, node: NodeId) -> Vec<String> {
        self.service_drbd_resources(path)
            .into_iter()
            .filter(|r| self.outdated.get(r).is_some_and(|n| n.contains(&node)))
            .collect()
    }

    /// `OutdatePeer` (`outdate`) or `UnfencePeer`: a known node, the DRBD resource of a volume;
    /// to outdate, one of its nodes that does not hold the service (during a live switch's
    /// dual-primary window both sides may ask: the holder wins).
    pub(super) fn check_outdate(&self, resource: &str, node: NodeId, outdate: bool) -> Result<(), Rejection> {
        let name = &self.nodes.get(&node).ok_or(Rejection::UnknownNode(node))?.name;
        let (key, alloc) = self
            .drbd_volume(resource)
            .ok_or_else(|| Rejection::UnknownResource(resource.to_string()))?;
        if !outdate {
            return Ok(());
        }
        if !alloc.nodes.contains(&node) {
            return Err(Rejection::NotANodeOfResource(resource.to_string(), name.clone()));
        }
        let owner = self.objects.get(&key).and_then(|o| o.owner());
        if let Some(owner) = owner.filter(|o| self.services.get(o).and_then(|s| s.placement) == Some(node)) {
            return Err(Rejection::HolderNotOutdated {
                resource: resource.to_string(),
                node: name.clone(),
                service: owner.to_string(),
            });
        }
        Ok(())
    }
}
