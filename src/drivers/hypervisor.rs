//! The hypervisor: libvirt domains. `SimHypervisor` keeps each node's domains in
//! `SIM_DIR/hv-NODE.json` and refuses what libvirt and QEMU refuse: starting an undefined or
//! running domain, and opening a DRBD device that is not Primary on this node (QEMU's "Wrong
//! medium type"). While a simulated domain runs, its DRBD devices are open, so DRBD refuses to
//! demote them. A domain running on two nodes at once is appended to `violations.log`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A domain's state as libvirt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainState {
    Running,
    /// Defined, not running.
    ShutOff,
    /// Not defined on this node.
    Absent,
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

/// The `<name>` of a domain XML.
pub fn domain_name(xml: &str) -> Option<&str> {
    let start = xml.find("<name>")? + "<name>".len();
    let end = xml[start..].find("</name>")? + start;
    Some(xml[start..end].trim())
}

/// The `/dev/drbdN` minors a domain XML uses as disks.
pub fn drbd_minors(xml: &str) -> Vec<u32> {
    xml.split("/dev/drbd")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .collect()
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SimDomains {
    domains: BTreeMap<String, SimDomain>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SimDomain {
    xml: String,
    running: bool,
    /// How many times the guest booted: a live migration carries it over, a restart adds one.
    #[serde(default)]
    boots: u64,
}

/// Simulated libvirt of one node.
pub struct SimHypervisor {
    dir: PathBuf,
    node: String,
    lock: Mutex<()>,
    drbd: crate::sim::drbd::Sim,
}

impl SimHypervisor {
    pub fn new(dir: &Path, node: &str) -> SimHypervisor {
        SimHypervisor {
            dir: dir.into(),
            node: node.into(),
            lock: Mutex::new(()),
            drbd: crate::sim::drbd::from_env(dir, node),
        }
    }

    fn file(&self, node: &str) -> PathBuf {
        self.dir.join(format!("hv-{node}.json"))
    }

    fn load(&self, node: &str) -> Result<SimDomains, HypervisorError> {
        let f = self.file(node);
        match std::fs::read(&f) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| HypervisorError::State(f, e.to_string())),
            Err(_) => Ok(SimDomains::default()),
        }
    }

    fn update<T>(&self, f: impl FnOnce(&mut SimDomains) -> Result<T, HypervisorError>) -> Result<T, HypervisorError> {
        let _g = self.lock.lock().expect("sim hypervisor lock");
        let mut d = self.load(&self.node)?;
        let out = f(&mut d)?;
        let file = self.file(&self.node);
        let tmp = file.with_extension("json.tmp");
        let err = |e: std::io::Error| HypervisorError::State(file.clone(), e.to_string());
        std::fs::write(&tmp, serde_json::to_vec_pretty(&d).expect("serialize")).map_err(err)?;
        std::fs::rename(&tmp, &file).map_err(err)?;
        Ok(out)
    }

    /// Other nodes on which `name` runs, from their state files.
    fn running_elsewhere(&self, name: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix("hv-")?
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .filter(|n| *n != self.node)
            .filter(|n| {
                self.load(n)
                    .is_ok_and(|d| d.domains.get(name).is_some_and(|x| x.running))
            })
            .collect()
    }

    fn set_devices_open(&self, xml: &str, open: bool) -> Result<(), HypervisorError> {
        for minor in drbd_minors(xml) {
            let res = self.drbd.resource_of_minor(minor).map_err(HypervisorError::Refused)?;
            if let Some(res) = res {
                if open && !self.drbd.is_primary(&res).map_err(HypervisorError::Refused)? {
                    return Err(HypervisorError::Refused(format!(
                        "internal error: qemu unexpectedly closed the monitor: Could not open '/dev/drbd{minor}': Wrong medium type"
                    )));
                }
                self.drbd.set_open(&res, open).map_err(HypervisorError::Refused)?;
            }
        }
        Ok(())
    }
}

impl SimHypervisor {
    /// Pulls the plug on this node: every guest stops, and with them the DRBD state here.
    pub fn power_off(&self) -> Result<(), HypervisorError> {
        self.update(|d| {
            for x in d.domains.values_mut() {
                x.running = false;
            }
            Ok(())
        })?;
        self.drbd.power_off().map_err(HypervisorError::Refused)
    }

    /// `virsh list --all`: each domain and whether it runs.
    pub fn list(&self) -> Result<String, HypervisorError> {
        let d = self.load(&self.node)?;
        Ok(d.domains
            .iter()
            .map(|(n, x)| {
                let state = if x.running { "running" } else { "shut off" };
                format!("{n} {state} boots={}\n", x.boots)
            })
            .collect())
    }
}

impl Hypervisor for SimHypervisor {
    fn state(&self, name: &str) -> Result<DomainState, HypervisorError> {
        Ok(match self.load(&self.node)?.domains.get(name) {
            None => DomainState::Absent,
            Some(d) if d.running => DomainState::Running,
            Some(_) => DomainState::ShutOff,
        })
    }

    fn xml(&self, name: &str) -> Result<Option<String>, HypervisorError> {
        Ok(self.load(&self.node)?.domains.get(name).map(|d| d.xml.clone()))
    }

    fn define(&self, xml: &str) -> Result<(), HypervisorError> {
        let name = domain_name(xml).ok_or_else(|| HypervisorError::Refused("XML error: missing domain name".into()))?;
        self.update(|d| {
            let e = d.domains.entry(name.to_string()).or_insert(SimDomain {
                xml: String::new(),
                running: false,
                boots: 0,
            });
            e.xml = xml.to_string();
            Ok(())
        })
    }

    fn start(&self, name: &str) -> Result<(), HypervisorError> {
        let xml = match self.load(&self.node)?.domains.get(name) {
            None => return Err(HypervisorError::Refused(format!("failed to get domain '{name}'"))),
            Some(d) if d.running => {
                return Err(HypervisorError::Refused(
                    "Requested operation is not valid: domain is already running".into(),
                ))
            }
            Some(d) => d.xml.clone(),
        };
        self.set_devices_open(&xml, true)?;
        self.update(|d| {
            let x = d.domains.get_mut(name).expect("checked");
            x.running = true;
            x.boots += 1;
            Ok(())
        })?;
        let elsewhere = self.running_elsewhere(name);
        if !elsewhere.is_empty() {
            let line = format!("domain {name} runs on {} and {}\n", self.node, elsewhere.join(", "));
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("violations.log"))
            {
                use std::io::Write;
                let _ = f.write_all(line.as_bytes());
            }
        }
        Ok(())
    }

    fn undefine(&self, name: &str) -> Result<(), HypervisorError> {
        self.update(|d| match d.domains.get(name) {
            None => Err(HypervisorError::Refused(format!("failed to get domain '{name}'"))),
            Some(x) if x.running => Err(HypervisorError::Refused("cannot undefine a running domain here".into())),
            Some(_) => {
                d.domains.remove(name);
                Ok(())
            }
        })
    }

    fn state_at(&self, name: &str, at: &MigrationTarget) -> Result<DomainState, HypervisorError> {
        // The network between the hosts is the one DRBD's cut flags cut.
        for n in [&self.node, &at.node] {
            if self.dir.join(format!("netcut-{n}")).exists() {
                return Err(HypervisorError::Refused(format!(
                    "unable to connect to {}: no route to host",
                    at.libvirt_uri
                )));
            }
        }
        SimHypervisor::new(&self.dir, &at.node).state(name)
    }

    fn migrate(&self, name: &str, to: &MigrationTarget) -> Result<(), HypervisorError> {
        let xml = match self.load(&self.node)?.domains.get(name) {
            Some(d) if d.running => d.xml.clone(),
            _ => {
                return Err(HypervisorError::Refused(
                    "Requested operation is not valid: domain is not running".into(),
                ))
            }
        };
        let target = SimHypervisor::new(&self.dir, &to.node);
        if target.state(name)? == DomainState::Running {
            return Err(HypervisorError::Refused(format!(
                "operation failed: domain '{name}' is already active on {}",
                to.node
            )));
        }
        // The target must be able to open the disks now: DRBD Primary there too.
        for minor in drbd_minors(&xml) {
            if let Some(res) = target.drbd.resource_of_minor(minor).map_err(HypervisorError::Refused)? {
                if !target.drbd.is_primary(&res).map_err(HypervisorError::Refused)? {
                    return Err(HypervisorError::Refused(format!(
                        "internal error: qemu unexpectedly closed the monitor on {}: Could not open '/dev/drbd{minor}': Wrong medium type",
                        to.node
                    )));
                }
            } else {
                return Err(HypervisorError::Refused(format!(
                    "Cannot access storage '/dev/drbd{minor}' on {}",
                    to.node
                )));
            }
        }
        // Memory copy while the guest runs here, then the switch-over: it stops here first.
        // It takes `SIM_DIR/migrate-ms` (or `OMRAFT_SIM_MIGRATE_MS`) milliseconds, 300 by default.
        let pause = std::fs::read_to_string(self.dir.join("migrate-ms"))
            .ok()
            .or_else(|| std::env::var("OMRAFT_SIM_MIGRATE_MS").ok())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(300);
        std::thread::sleep(Duration::from_millis(pause));
        // A migration that fails halfway (`SIM_DIR/migrate-fail` exists): the job is
        // cancelled, the guest keeps running here.
        if self.dir.join("migrate-fail").exists() {
            return Err(HypervisorError::Refused(
                "operation failed: migration job: unexpectedly failed".into(),
            ));
        }
        let boots = self.load(&self.node)?.domains.get(name).map_or(0, |d| d.boots);
        self.update(|d| {
            d.domains.remove(name);
            Ok(())
        })?;
        self.set_devices_open(&xml, false)?;
        target.define(&xml)?;
        target.start(name)?;
        // The same guest, resumed: not a boot.
        target.update(|d| {
            d.domains.get_mut(name).expect("just started").boots = boots;
            Ok(())
        })
    }

    fn stop(&self, name: &str, _timeout: Duration) -> Result<(), HypervisorError> {
        // A simulated guest always honours the ACPI shutdown at once.
        self.destroy(name)
    }

    fn destroy(&self, name: &str) -> Result<(), HypervisorError> {
        let xml = match self.load(&self.node)?.domains.get(name) {
            Some(d) if d.running => d.xml.clone(),
            Some(_) => {
                return Err(HypervisorError::Refused(
                    "Requested operation is not valid: domain is not running".into(),
                ))
            }
            None => return Err(HypervisorError::Refused(format!("failed to get domain '{name}'"))),
        };
        self.update(|d| {
            d.domains.get_mut(name).expect("checked").running = false;
            Ok(())
        })?;
        self.set_devices_open(&xml, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_drbd_disks() {
        let xml =
            "<domain type='qemu'><name>kvm1</name><devices><disk><source dev='/dev/drbd12'/></disk></devices></domain>";
        assert_eq!(domain_name(xml), Some("kvm1"));
        assert_eq!(drbd_minors(xml), vec![12]);
    }

    #[test]
    fn sim_refuses_undefined_and_double_starts_and_logs_two_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            SimHypervisor::new(dir.path(), "n1"),
            SimHypervisor::new(dir.path(), "n2"),
        );
        let xml = "<domain><name>vm</name></domain>";
        assert!(a.start("vm").is_err());
        a.define(xml).unwrap();
        assert_eq!(a.state("vm").unwrap(), DomainState::ShutOff);
        a.start("vm").unwrap();
        assert!(a.start("vm").unwrap_err().to_string().contains("already running"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("violations.log")).unwrap_or_default(),
            ""
        );
        b.define(xml).unwrap();
        b.start("vm").unwrap();
        let v = std::fs::read_to_string(dir.path().join("violations.log")).unwrap();
        assert!(v.contains("domain vm runs on n2 and n1"), "{v}");
        a.stop("vm", Duration::from_secs(1)).unwrap();
        assert_eq!(a.state("vm").unwrap(), DomainState::ShutOff);
        a.undefine("vm").unwrap();
        assert_eq!(a.state("vm").unwrap(), DomainState::Absent);
    }

    #[test]
    fn sim_migration_moves_the_running_guest_and_undefines_the_source() {
        std::env::set_var("OMRAFT_SIM_MIGRATE_MS", "10");
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            SimHypervisor::new(dir.path(), "n1"),
            SimHypervisor::new(dir.path(), "n2"),
        );
        let to = |n: &str| MigrationTarget {
            node: n.into(),
            libvirt_uri: format!("qemu+tcp://{n}/system"),
            migration_uri: None,
        };
        a.define("<domain><name>vm</name></domain>").unwrap();
        assert!(a.migrate("vm", &to("n2")).is_err(), "not running");
        a.start("vm").unwrap();
        a.migrate("vm", &to("n2")).unwrap();
        assert_eq!(
            (a.state("vm").unwrap(), b.state("vm").unwrap()),
            (DomainState::Absent, DomainState::Running)
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("violations.log")).unwrap_or_default(),
            ""
        );
        // A guest on DRBD needs the target to be Primary as well.
        let disk = "<domain><name>db</name><devices><disk><source dev='/dev/drbd3'/></disk></devices></domain>";
        b.define(disk).unwrap();
        std::fs::create_dir_all(dir.path().join("drbd")).unwrap();
        assert!(b.migrate("db", &to("n1")).is_err());
    }
}
