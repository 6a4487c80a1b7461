//! Drivers for the systems a node manages: one module per external system, each behind a
//! trait with a real implementation and a simulator that refuses what the real system
//! refuses. The only code that runs external commands.

pub mod drbd;
pub mod hypervisor;
pub mod libvirt;
pub mod lvm;
pub mod run;
pub mod ssh;
pub mod watchdog;

use std::sync::Arc;

/// The drivers of one node: what its applier acts through.
#[derive(Clone)]
pub struct Drivers {
    pub lvm: Arc<dyn lvm::Lvm>,
    pub drbd: Arc<dyn drbd::commands::Drbd>,
    pub hypervisor: Arc<dyn hypervisor::Hypervisor>,
}
