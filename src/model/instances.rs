//! What the cluster wants of each service beyond its configuration (provisioned, where it
//! is placed, started), and what each node last reported of its instance.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::path::ObjectPath;
use super::{ClusterState, NodeId, Rejection};
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

impl ClusterState {
    pub(super) fn service(&self, path: &ObjectPath) -> Result<(), Rejection> {
        if path.kind != "svc" {
            return Err(Rejection::NotAService(path.to_string()));
        }
        if !self.objects.contains_key(&path.to_string()) {
            return Err(Rejection::Object(super::ObjectError::NotFound(path.to_string())));
        }
        Ok(())
    }

    /// The data nodes a service may run on, in its `nodes` order.
    pub fn service_nodes(&self, path: &ObjectPath) -> Vec<NodeId> {
        let Some(obj) = self.objects.get(&path.to_string()) else {
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
        if !self.services.get(&path.to_string()).is_some_and(|s| s.provisioned) {
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

    /// Marks a service provisioned, placed on its first node and started there.
    pub(super) fn provision(&mut self, path: &ObjectPath) {
        let first = self.service_nodes(path).first().copied();
        let s = self.services.entry(path.to_string()).or_default();
        s.provisioned = true;
        if s.placement.is_none() {
            s.placement = first;
            s.epoch += 1;
        }
        s.started = true;
    }

    pub(super) fn check_switch(&self, path: &ObjectPath, to: NodeId) -> Result<(), Rejection> {
        self.check_needs_provisioned(path)?;
        self.check_node_of(path, to)?;
        if self.services.get(&path.to_string()).and_then(|s| s.placement) == Some(to) {
            return Err(Rejection::AlreadyThere(path.to_string(), to));
        }
        Ok(())
    }

    /// Places a service on `to`, started: the old node stops and demotes, `to` promotes once
    /// it sees it demoted, then starts the guests.
    pub(super) fn switch(&mut self, path: &ObjectPath, to: NodeId) {
        let s = self.services.entry(path.to_string()).or_default();
        s.placement = Some(to);
        s.started = true;
        s.epoch += 1;
        s.fenced.clear();
    }

    pub(super) fn unprovision(&mut self, path: &ObjectPath) {
        if let Some(s) = self.services.get_mut(&path.to_string()) {
            s.provisioned = false;
            s.started = false;
            s.state_only.clear();
        }
    }

    pub(super) fn set_started(&mut self, path: &ObjectPath, started: bool) {
        if let Some(s) = self.services.get_mut(&path.to_string()) {
            s.started = started;
        }
    }
}
