//! The hypervisor: libvirt domains, behind the `Hypervisor` trait. The real driver is
//! `libvirt.rs`; the simulator is `sim::hypervisor::SimHypervisor`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A domain's state as libvirt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainState {
    /// Active and executing.
    Running,
    /// Active, not executing: paused, suspended, crashed, or a live migration's incoming
    /// domain until its copy ends. Its QEMU holds the disks open.
    Paused,
    /// Defined, not running.
    ShutOff,
    /// Not defined on this node.
    Absent,
}

impl DomainState {
    /// A QEMU process exists for it, running or paused: it holds the disks and the guest's
    /// memory, so for every safety rule the guest is on this node. Only `Running` counts as
    /// the guest running here (a live switch's target ends the copy on it).
    pub fn active(self) -> bool {
        matches!(self, DomainState::Running | DomainState::Paused)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HypervisorError {
    #[error("{0}")]
    Refused(String),
    #[error("simulator state {0}: {1}")]
    State(PathBuf, String),
}

/// Where a live migration goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationTarget {
    /// The target node's name (the simulator's key).
    pub node: String,
    /// The target's libvirt connection, e.g. `qemu+tcp://10.30.0.12/system`.
    pub libvirt_uri: String,
    /// Where QEMU sends the memory, e.g. `tcp://10.30.0.12:49152`.
    pub migration_uri: Option<String>,
}

/// The hypervisor operations a node needs.
pub trait Hypervisor: Send + Sync {
    fn state(&self, name: &str) -> Result<DomainState, HypervisorError>;
    /// The domain's XML, if it is defined here.
    fn xml(&self, name: &str) -> Result<Option<String>, HypervisorError>;
    fn define(&self, xml: &str) -> Result<(), HypervisorError>;
    fn start(&self, name: &str) -> Result<(), HypervisorError>;
    /// Graceful shutdown; destroyed if still running after `timeout`.
    fn stop(&self, name: &str, timeout: Duration) -> Result<(), HypervisorError>;
    fn destroy(&self, name: &str) -> Result<(), HypervisorError>;
    fn undefine(&self, name: &str) -> Result<(), HypervisorError>;
    /// Live migration: the guest keeps running, then resumes on the target, defined there
    /// (persistent) and undefined here.
    fn migrate(&self, name: &str, to: &MigrationTarget) -> Result<(), HypervisorError>;
    /// The domain's state on a live switch's other node, asked of that node's hypervisor
    /// (`at.libvirt_uri`), bounded in time: where the guest actually runs, never a guess.
    fn state_at(&self, name: &str, at: &MigrationTarget) -> Result<DomainState, HypervisorError>;
}
