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

use crate::drivers::drbd::commands::DrbdCommands;
use crate::drivers::Drivers;
use hypervisor::SimHypervisor;
use lvm::SimLvm;

/// What an in-process simulated node is made with, chosen by the test that makes it.
#[derive(Debug, Clone, Default)]
pub struct InProcess {
    /// The simulated volume groups: name -> size in bytes.
    pub vgs: BTreeMap<String, u64>,
    /// How long the initial resync takes (real milliseconds).
    pub sync_ms: u64,
    /// What runs instead of the resource files' DRBD handlers, if anything.
    pub stand_ins: drbd::StandIns,
}

/// The simulated drivers of `node` in `dir`, with the DRBD simulator run in this process
/// through the real DRBD driver (no `omsim` process per command): in-process test clusters.
pub fn in_process_drivers(dir: &Path, node: &str, settings: &InProcess) -> Drivers {
    Drivers {
        lvm: Arc::new(SimLvm::open(dir, node, &settings.vgs).expect("the simulated LVM's state")),
        drbd: Arc::new(in_process_drbd(dir, node, settings)),
        hypervisor: Arc::new(SimHypervisor::new(dir, node)),
    }
}

/// The real DRBD driver on the DRBD simulator of `node` in `dir`, run in this process.
pub fn in_process_drbd(dir: &Path, node: &str, settings: &InProcess) -> DrbdCommands<drbd::SimRunner> {
    DrbdCommands {
        runner: drbd::SimRunner {
            dir: dir.into(),
            node: node.into(),
            sync_ms: settings.sync_ms,
            stand_ins: settings.stand_ins.clone(),
        },
        drbdadm: vec!["omsim".into(), "drbdadm".into()],
        drbdsetup: vec!["omsim".into(), "drbdsetup".into()],
        config_dir: dir.join(node).join("drbd.d"),
        validator: None,
        env: vec![],
    }
}
