//! Simulators for machines without the real systems (no DRBD kernel module, no LVM, no
//! libvirt): they keep their state in a directory every simulated node shares, in state files
//! changed under file locks (`state.rs`), and refuse what the real systems refuse. The DRBD one
//! is command-compatible and reached through the real DRBD driver, via the `omsim` binary;
//! LVM (`lvm.rs`) and libvirt (`hypervisor.rs`) implement the drivers' traits.

pub mod drbd;
#[cfg(test)]
mod drbd_tests;
pub mod hypervisor;
pub mod lvm;
pub mod state;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::applier::run::Drivers;
use crate::drivers::drbd::commands::DrbdCommands;
use hypervisor::SimHypervisor;
use lvm::SimLvm;

/// The simulated drivers of `node` in `dir`, with the DRBD simulator run in this process
/// through the real DRBD driver (no `omsim` process per command): in-process test clusters.
/// `vgs` sizes the simulated volume groups; `sync_ms` is the initial resync's length.
pub fn in_process_drivers(dir: &Path, node: &str, vgs: &BTreeMap<String, u64>, sync_ms: u64) -> Drivers {
    Drivers {
        lvm: Arc::new(SimLvm::open(dir, node, vgs).expect("the simulated LVM's state")),
        drbd: Arc::new(in_process_drbd(dir, node, sync_ms)),
        hypervisor: Arc::new(SimHypervisor::new(dir, node)),
    }
}

/// The real DRBD driver on the DRBD simulator of `node` in `dir`, run in this process.
pub fn in_process_drbd(dir: &Path, node: &str, sync_ms: u64) -> DrbdCommands<drbd::SimRunner> {
    DrbdCommands {
        runner: drbd::SimRunner {
            dir: dir.into(),
            sync_ms,
        },
        drbdadm: vec!["omsim".into(), "drbdadm".into()],
        drbdsetup: vec!["omsim".into(), "drbdsetup".into()],
        config_dir: dir.join(node).join("drbd.d"),
        node: node.into(),
        validator: None,
        env: vec![],
    }
}
