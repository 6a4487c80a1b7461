//! LVM: volume groups (their sizes feed the pools' capacity) and logical volumes.
//!
//! `LvmCommands` runs the real `vgs`, `lvs`, `lvcreate`, `lvremove`; the simulator is
//! `sim::lvm::SimLvm`.

use std::path::PathBuf;

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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

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
}
