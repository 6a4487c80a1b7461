//! LVM: volume groups (their sizes feed the pools' capacity) and logical volumes.
//!
//! `LvmCommands` runs the real `vgs`, `lvs`, `lvcreate`, `lvremove`; `SimLvm` keeps one volume
//! group set per node in a file and refuses what LVM refuses (an existing name, a missing VG
//! or LV, too little free space), with LVM's messages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::run::{Invocation, RunError, Runner};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VgInfo {
    pub name: String,
    pub size: u64,
    pub free: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LvInfo {
    pub name: String,
    pub size: u64,
}

/// Why an LVM operation failed; the message is LVM's (or the simulator's, worded alike).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LvmError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("cannot parse `{0}` output line {1:?}")]
    Parse(&'static str, String),
    #[error("{0}")]
    Refused(String),
    #[error("simulator state {0}: {1}")]
    State(PathBuf, String),
}

/// The LVM operations a node needs.
pub trait Lvm: Send + Sync {
    fn vgs(&self) -> Result<Vec<VgInfo>, LvmError>;
    fn lvs(&self, vg: &str) -> Result<Vec<LvInfo>, LvmError>;
    fn lvcreate(&self, vg: &str, name: &str, size: u64) -> Result<(), LvmError>;
    fn lvremove(&self, vg: &str, name: &str) -> Result<(), LvmError>;
}

/// The real LVM commands, run through `runner`.
pub struct LvmCommands<R: Runner> {
    pub runner: R,
}

/// Parses `NAME:N[:N]` lines of `--noheadings --nosuffix --units b --separator :` output.
fn parse_rows(cmd: &'static str, out: &str, fields: usize) -> Result<Vec<(String, Vec<u64>)>, LvmError> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let parts: Vec<&str> = l.split(':').collect();
            if parts.len() != fields || parts[0].is_empty() {
                return Err(LvmError::Parse(cmd, l.to_string()));
            }
            let nums = parts[1..]
                .iter()
                .map(|n| n.parse::<u64>().map_err(|_| LvmError::Parse(cmd, l.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((parts[0].to_string(), nums))
        })
        .collect()
}

impl<R: Runner> Lvm for LvmCommands<R> {
    fn vgs(&self) -> Result<Vec<VgInfo>, LvmError> {
        let args = [
            "--noheadings",
            "--nosuffix",
            "--units",
            "b",
            "--separator",
            ":",
            "-o",
            "vg_name,vg_size,vg_free",
        ];
        let out = self.runner.check(&Invocation::new("vgs", &args))?;
        Ok(parse_rows("vgs", &out, 3)?
            .into_iter()
            .map(|(name, n)| VgInfo {
                name,
                size: n[0],
                free: n[1],
            })
            .collect())
    }

    fn lvs(&self, vg: &str) -> Result<Vec<LvInfo>, LvmError> {
        let args = [
            "--noheadings",
            "--nosuffix",
            "--units",
            "b",
            "--separator",
            ":",
            "-o",
            "lv_name,lv_size",
            vg,
        ];
        let out = self.runner.check(&Invocation::new("lvs", &args))?;
        Ok(parse_rows("lvs", &out, 2)?
            .into_iter()
            .map(|(name, n)| LvInfo { name, size: n[0] })
            .collect())
    }

    fn lvcreate(&self, vg: &str, name: &str, size: u64) -> Result<(), LvmError> {
        let size = format!("{size}b");
        self.runner.check(&Invocation::new(
            "lvcreate",
            &["--yes", "--name", name, "--size", &size, vg],
        ))?;
        Ok(())
    }

    fn lvremove(&self, vg: &str, name: &str) -> Result<(), LvmError> {
        self.runner
            .check(&Invocation::new("lvremove", &["--yes", &format!("{vg}/{name}")]))?;
        Ok(())
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SimState {
    vgs: BTreeMap<String, SimVg>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SimVg {
    size: u64,
    lvs: BTreeMap<String, u64>,
}

/// Simulated LVM of one node, kept in `DIR/lvm-NODE.json`.
pub struct SimLvm {
    file: PathBuf,
    lock: Mutex<()>,
}

impl SimLvm {
    /// Opens the node's simulated LVM, creating the volume groups `vgs` (name -> size) that do
    /// not exist yet.
    pub fn open(dir: &Path, node: &str, vgs: &BTreeMap<String, u64>) -> Result<SimLvm, LvmError> {
        let sim = SimLvm {
            file: dir.join(format!("lvm-{node}.json")),
            lock: Mutex::new(()),
        };
        std::fs::create_dir_all(dir).map_err(|e| sim.state_err(e))?;
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

    fn state_err(&self, e: impl ToString) -> LvmError {
        LvmError::State(self.file.clone(), e.to_string())
    }

    fn load(&self) -> Result<SimState, LvmError> {
        match std::fs::read(&self.file) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| self.state_err(e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SimState::default()),
            Err(e) => Err(self.state_err(e)),
        }
    }

    /// Applies `f` to the state and saves it atomically (write, then rename).
    fn update<T>(&self, f: impl FnOnce(&mut SimState) -> Result<T, LvmError>) -> Result<T, LvmError> {
        let _g = self.lock.lock().expect("sim lvm lock");
        let mut state = self.load()?;
        let out = f(&mut state)?;
        let tmp = self.file.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&state).expect("serialize")).map_err(|e| self.state_err(e))?;
        std::fs::rename(&tmp, &self.file).map_err(|e| self.state_err(e))?;
        Ok(out)
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
    use super::super::run::Finished;
    use super::*;

    /// Answers each command with captured output and records what was run.
    struct Captured {
        out: &'static str,
        ran: Mutex<Vec<String>>,
    }

    impl Runner for Captured {
        fn run(&self, inv: &Invocation) -> Result<Finished, RunError> {
            self.ran.lock().unwrap().push(inv.display());
            Ok(Finished {
                code: Some(0),
                stdout: self.out.into(),
                stderr: String::new(),
            })
        }
    }

    fn real(out: &'static str) -> LvmCommands<Captured> {
        LvmCommands {
            runner: Captured {
                out,
                ran: Mutex::new(vec![]),
            },
        }
    }

    #[test]
    fn parses_captured_vgs_and_lvs() {
        // `vgs` on the tutorial's node: a 5 GiB `data` VG and the root VG, full.
        let lvm = real("  data:5364514816:5364514816\n  root:28936044544:0\n");
        assert_eq!(
            lvm.vgs().unwrap(),
            vec![
                VgInfo {
                    name: "data".into(),
                    size: 5364514816,
                    free: 5364514816
                },
                VgInfo {
                    name: "root".into(),
                    size: 28936044544,
                    free: 0
                }
            ]
        );
        assert_eq!(
            lvm.runner.ran.lock().unwrap()[0],
            "vgs --noheadings --nosuffix --units b --separator : -o vg_name,vg_size,vg_free"
        );
        let lvm = real("  kvm1.demo.vol.drbd4kvm:4294967296\n");
        assert_eq!(
            lvm.lvs("data").unwrap(),
            vec![LvInfo {
                name: "kvm1.demo.vol.drbd4kvm".into(),
                size: 4 << 30
            }]
        );
        assert!(matches!(real("  data:5G:1\n").vgs(), Err(LvmError::Parse("vgs", _))));
    }

    #[test]
    fn builds_lvcreate_and_lvremove() {
        let lvm = real("");
        lvm.lvcreate("data", "kvm1.demo.vol.drbd4kvm", 4 << 30).unwrap();
        lvm.lvremove("data", "kvm1.demo.vol.drbd4kvm").unwrap();
        let ran = lvm.runner.ran.lock().unwrap();
        assert_eq!(
            ran[0],
            "lvcreate --yes --name kvm1.demo.vol.drbd4kvm --size 4294967296b data"
        );
        assert_eq!(ran[1], "lvremove --yes data/kvm1.demo.vol.drbd4kvm");
    }

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
