//! The simulated LVM: one volume group set per node in `SIM_DIR/lvm-NODE.json`, refusing what
//! LVM refuses (an existing name, a missing VG or LV, too little free space), with LVM's
//! messages.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::state::StateFile;
use crate::drivers::lvm::{LvInfo, Lvm, LvmError, VgInfo};

#[derive(Debug, Default, Serialize, Deserialize)]
struct SimState {
    vgs: BTreeMap<String, SimVg>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SimVg {
    size: u64,
    lvs: BTreeMap<String, u64>,
}

/// Simulated LVM of one node, kept in `DIR/lvm-NODE.json` (a state file, under its lock).
pub struct SimLvm {
    file: StateFile,
}

impl SimLvm {
    /// Opens the node's simulated LVM, creating the volume groups `vgs` (name -> size) that do
    /// not exist yet.
    pub fn open(dir: &Path, node: &str, vgs: &BTreeMap<String, u64>) -> Result<SimLvm, LvmError> {
        let sim = SimLvm {
            file: StateFile::new(dir.join(format!("lvm-{node}.json"))),
        };
        sim.update(|s| {
            for (name, size) in vgs {
                s.vgs.entry(name.clone()).or_insert(SimVg {
                    size: *size,
                    lvs: BTreeMap::new(),
                });
            }
            Ok(())
        })?;
        Ok(sim)
    }

    fn state_err(&self, e: String) -> LvmError {
        LvmError::State(self.file.path().into(), e)
    }

    fn load(&self) -> Result<SimState, LvmError> {
        self.file.read().map_err(|e| self.state_err(e))
    }

    /// Applies `f` to the state under the file's lock and saves it when `f` succeeds.
    fn update<T>(&self, f: impl FnOnce(&mut SimState) -> Result<T, LvmError>) -> Result<T, LvmError> {
        self.file.update(f).map_err(|e| self.state_err(e))?
    }
}

impl Lvm for SimLvm {
    fn vgs(&self) -> Result<Vec<VgInfo>, LvmError> {
        let s = self.load()?;
        Ok(s.vgs
            .iter()
            .map(|(name, vg)| VgInfo {
                name: name.clone(),
                size: vg.size,
                free: vg.size - vg.lvs.values().sum::<u64>(),
            })
            .collect())
    }

    fn lvs(&self, vg: &str) -> Result<Vec<LvInfo>, LvmError> {
        let s = self.load()?;
        let v = s
            .vgs
            .get(vg)
            .ok_or_else(|| LvmError::Refused(format!("Volume group \"{vg}\" not found")))?;
        Ok(v.lvs
            .iter()
            .map(|(name, size)| LvInfo {
                name: name.clone(),
                size: *size,
            })
            .collect())
    }

    fn lvcreate(&self, vg: &str, name: &str, size: u64) -> Result<(), LvmError> {
        self.update(|s| {
            let v = s
                .vgs
                .get_mut(vg)
                .ok_or_else(|| LvmError::Refused(format!("Volume group \"{vg}\" not found")))?;
            if v.lvs.contains_key(name) {
                return Err(LvmError::Refused(format!(
                    "Logical Volume \"{name}\" already exists in volume group \"{vg}\""
                )));
            }
            let free = v.size - v.lvs.values().sum::<u64>();
            if size > free {
                return Err(LvmError::Refused(format!(
                    "Volume group \"{vg}\" has insufficient free space ({free} bytes): {size} bytes required."
                )));
            }
            v.lvs.insert(name.to_string(), size);
            Ok(())
        })
    }

    fn lvremove(&self, vg: &str, name: &str) -> Result<(), LvmError> {
        self.update(|s| {
            let v = s
                .vgs
                .get_mut(vg)
                .ok_or_else(|| LvmError::Refused(format!("Volume group \"{vg}\" not found")))?;
            v.lvs
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| LvmError::Refused(format!("Failed to find logical volume \"{vg}/{name}\"")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulator_refuses_what_lvm_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let lvm = SimLvm::open(dir.path(), "n1", &BTreeMap::from([("data".into(), 5 << 30)])).unwrap();
        lvm.lvcreate("data", "a", 4 << 30).unwrap();
        let e = lvm.lvcreate("data", "a", 1).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        let e = lvm.lvcreate("data", "b", 2 << 30).unwrap_err().to_string();
        assert!(e.contains("insufficient free space"), "{e}");
        assert!(lvm
            .lvcreate("nope", "c", 1)
            .unwrap_err()
            .to_string()
            .contains("\"nope\" not found"));
        assert!(lvm.lvremove("data", "zz").is_err());
        assert_eq!(lvm.vgs().unwrap()[0].free, 1 << 30);
        // The state survives reopening, as a node's disks survive a daemon restart.
        let again = SimLvm::open(dir.path(), "n1", &BTreeMap::new()).unwrap();
        assert_eq!(
            again.lvs("data").unwrap(),
            vec![LvInfo {
                name: "a".into(),
                size: 4 << 30
            }]
        );
        again.lvremove("data", "a").unwrap();
        assert_eq!(again.vgs().unwrap()[0].free, 5 << 30);
    }
}
