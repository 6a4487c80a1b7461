//! The simulated hypervisor: each node's libvirt domains in `SIM_DIR/hv-NODE.json`, a state
//! file changed under its file lock (the node's `omd`, `omsim virsh`, the node's simulated
//! watchdog and the source of a live migration all write it, each its own process). It refuses
//! what libvirt and QEMU refuse: starting an undefined or running domain, and opening a DRBD
//! device that is not Primary on this node (QEMU's "Wrong medium type"). While a simulated
//! domain runs, its DRBD devices are open, so DRBD refuses to demote them. A domain running on
//! two nodes at once is appended to `violations.log`.
//!
//! A live migration is libvirt's: from the start of the memory copy the target holds an
//! incoming domain, active (its disks open) but paused, which resumes when the copy ends and
//! goes away when the migration fails, when the process driving it dies, or when the target
//! loses power.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::drbd::Sim;
use super::state::StateFile;
use crate::drivers::hypervisor::{DomainState, Hypervisor, HypervisorError, MigrationTarget};

/// How long a simulated live migration's memory copy takes unless `SIM_DIR/migrate-ms` says.
pub const DEFAULT_MIGRATE_MS: u64 = 300;

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
    /// Set while this is a live migration's incoming domain: running, but paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    incoming: Option<Incoming>,
}

impl SimDomain {
    /// Running and executing: not an incoming domain still paused.
    fn executing(&self) -> bool {
        self.running && self.incoming.is_none()
    }

    /// An incoming domain whose migration died with the process copying it.
    fn orphaned(&self) -> bool {
        self.incoming.as_ref().is_some_and(|i| !alive(i.pid))
    }
}

/// An incoming domain's migration.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Incoming {
    /// The process copying the memory (the source's daemon): when it is gone, so is the
    /// migration, and with it the incoming domain.
    pid: u32,
    /// The inactive definition the incoming domain replaced, restored when it goes away.
    prior: Option<String>,
}

/// Whether process `pid` still runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Simulated libvirt of one node.
pub struct SimHypervisor {
    dir: PathBuf,
    node: String,
    file: StateFile,
    drbd: Sim,
}

fn refused(why: impl Into<String>) -> HypervisorError {
    HypervisorError::Refused(why.into())
}

fn no_domain(name: &str) -> HypervisorError {
    refused(format!("failed to get domain '{name}'"))
}

fn not_running() -> HypervisorError {
    refused("Requested operation is not valid: domain is not running")
}

impl SimHypervisor {
    pub fn new(dir: &Path, node: &str) -> SimHypervisor {
        SimHypervisor {
            dir: dir.into(),
            node: node.into(),
            file: state_file(dir, node),
            drbd: Sim::new(dir, node),
        }
    }

    fn state_err(&self, e: String) -> HypervisorError {
        HypervisorError::State(self.file.path().into(), e)
    }

    fn load(&self) -> Result<SimDomains, HypervisorError> {
        let d: SimDomains = self.file.read().map_err(|e| self.state_err(e))?;
        if d.domains.values().any(SimDomain::orphaned) {
            return self.update(|d| {
                Ok(SimDomains {
                    domains: d.domains.clone(),
                })
            });
        }
        Ok(d)
    }

    /// Runs `f` on this node's domains under the file's lock; saved only when `f` succeeds.
    /// Incoming domains whose migration died are gone first.
    fn update<T>(&self, f: impl FnOnce(&mut SimDomains) -> Result<T, HypervisorError>) -> Result<T, HypervisorError> {
        self.file
            .update(|d: &mut SimDomains| {
                let dead: Vec<String> = d
                    .domains
                    .iter()
                    .filter(|(_, x)| x.orphaned())
                    .map(|(n, _)| n.clone())
                    .collect();
                for name in dead {
                    self.drop_incoming(d, &name)?;
                }
                f(d)
            })
            .map_err(|e| self.state_err(e))?
    }

    /// Removes the incoming domain `name` (its disks closed), restoring the definition it
    /// replaced; nothing when `name` is not an incoming domain.
    fn drop_incoming(&self, d: &mut SimDomains, name: &str) -> Result<(), HypervisorError> {
        if d.domains.get(name).is_none_or(|x| x.incoming.is_none()) {
            return Ok(());
        }
        let x = d.domains.remove(name).expect("looked up above");
        let incoming = x.incoming.expect("looked up above");
        self.set_devices_open(&x.xml, false)?;
        if let Some(xml) = incoming.prior {
            d.domains.insert(
                name.to_string(),
                SimDomain {
                    xml,
                    running: false,
                    boots: x.boots,
                    incoming: None,
                },
            );
        }
        Ok(())
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
                state_file(&self.dir, n)
                    .read::<SimDomains>()
                    .is_ok_and(|d| d.domains.get(name).is_some_and(SimDomain::executing))
            })
            .collect()
    }

    /// Appends to `violations.log` when `name`, just started here, runs on another node too.
    fn log_if_running_elsewhere(&self, name: &str) {
        let elsewhere = self.running_elsewhere(name);
        if elsewhere.is_empty() {
            return;
        }
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

    fn set_devices_open(&self, xml: &str, open: bool) -> Result<(), HypervisorError> {
        for minor in drbd_minors(xml) {
            let res = self.drbd.resource_of_minor(minor).map_err(HypervisorError::Refused)?;
            if let Some(res) = res {
                if open && !self.drbd.is_primary(&res).map_err(HypervisorError::Refused)? {
                    return Err(refused(format!(
                        "internal error: qemu unexpectedly closed the monitor: Could not open '/dev/drbd{minor}': Wrong medium type"
                    )));
                }
                self.drbd.set_open(&res, open).map_err(HypervisorError::Refused)?;
            }
        }
        Ok(())
    }

    /// The start of an incoming live migration of the domain `xml` describes, booted `boots`
    /// times: defined here, paused, its disks open (DRBD must be Primary here), for as long as
    /// this process lives or until the copy ends (`migrate`) or fails (`cancel_incoming`).
    pub fn receive(&self, xml: &str, boots: u64) -> Result<(), HypervisorError> {
        let name = domain_name(xml).ok_or_else(|| refused("XML error: missing domain name"))?;
        self.update(|d| {
            if d.domains.get(name).is_some_and(|x| x.running) {
                return Err(refused(format!(
                    "operation failed: domain '{name}' is already active on {}",
                    self.node
                )));
            }
            self.set_devices_open(xml, true)?;
            let prior = d.domains.get(name).map(|x| x.xml.clone());
            d.domains.insert(
                name.to_string(),
                SimDomain {
                    xml: xml.to_string(),
                    running: true,
                    boots,
                    incoming: Some(Incoming {
                        pid: std::process::id(),
                        prior,
                    }),
                },
            );
            Ok(())
        })
    }

    /// A failed incoming migration: libvirt removes the incoming domain (its disks closed),
    /// restoring the definition it replaced. Nothing when there is none.
    pub fn cancel_incoming(&self, name: &str) -> Result<(), HypervisorError> {
        self.update(|d| self.drop_incoming(d, name))
    }

    /// Whether the network between this node and `other` is cut: the one DRBD's cut flags
    /// cut.
    fn cut_from(&self, other: &str) -> bool {
        [self.node.as_str(), other]
            .iter()
            .any(|n| self.dir.join(format!("netcut-{n}")).exists())
    }

    /// Pulls the plug on this node: every guest stops, and with them the DRBD state here.
    pub fn power_off(&self) -> Result<(), HypervisorError> {
        self.update(|d| {
            let incoming: Vec<String> = d
                .domains
                .iter()
                .filter(|(_, x)| x.incoming.is_some())
                .map(|(n, _)| n.clone())
                .collect();
            for name in incoming {
                self.drop_incoming(d, &name)?;
            }
            for x in d.domains.values_mut() {
                x.running = false;
            }
            Ok(())
        })?;
        self.drbd.power_off().map_err(HypervisorError::Refused)
    }

    /// `virsh list --all`: each domain and whether it runs.
    pub fn list(&self) -> Result<String, HypervisorError> {
        let d = self.load()?;
        Ok(d.domains
            .iter()
            .map(|(n, x)| {
                let state = match (x.running, &x.incoming) {
                    (true, None) => "running",
                    (true, Some(_)) => "paused",
                    (false, _) => "shut off",
                };
                format!("{n} {state} boots={}\n", x.boots)
            })
            .collect())
    }
}

fn state_file(dir: &Path, node: &str) -> StateFile {
    StateFile::new(dir.join(format!("hv-{node}.json")))
}

impl Hypervisor for SimHypervisor {
    fn state(&self, name: &str) -> Result<DomainState, HypervisorError> {
        Ok(match self.load()?.domains.get(name) {
            None => DomainState::Absent,
            Some(d) if d.incoming.is_some() => DomainState::Paused,
            Some(d) if d.running => DomainState::Running,
            Some(_) => DomainState::ShutOff,
        })
    }

    fn xml(&self, name: &str) -> Result<Option<String>, HypervisorError> {
        Ok(self.load()?.domains.get(name).map(|d| d.xml.clone()))
    }

    fn define(&self, xml: &str) -> Result<(), HypervisorError> {
        let name = domain_name(xml).ok_or_else(|| refused("XML error: missing domain name"))?;
        self.update(|d| {
            let e = d.domains.entry(name.to_string()).or_insert(SimDomain {
                xml: String::new(),
                running: false,
                boots: 0,
                incoming: None,
            });
            e.xml = xml.to_string();
            Ok(())
        })
    }

    fn start(&self, name: &str) -> Result<(), HypervisorError> {
        self.update(|d| match d.domains.get_mut(name) {
            None => Err(no_domain(name)),
            Some(x) if x.running => Err(refused("Requested operation is not valid: domain is already running")),
            Some(x) => {
                self.set_devices_open(&x.xml, true)?;
                x.running = true;
                x.boots += 1;
                Ok(())
            }
        })?;
        self.log_if_running_elsewhere(name);
        Ok(())
    }

    fn undefine(&self, name: &str) -> Result<(), HypervisorError> {
        self.update(|d| match d.domains.get(name) {
            None => Err(no_domain(name)),
            Some(x) if x.running => Err(refused("cannot undefine a running domain here")),
            Some(_) => {
                d.domains.remove(name);
                Ok(())
            }
        })
    }

    fn state_at(&self, name: &str, at: &MigrationTarget) -> Result<DomainState, HypervisorError> {
        if self.cut_from(&at.node) {
            return Err(refused(format!(
                "unable to connect to {}: no route to host",
                at.libvirt_uri
            )));
        }
        SimHypervisor::new(&self.dir, &at.node).state(name)
    }

    fn migrate(&self, name: &str, to: &MigrationTarget) -> Result<(), HypervisorError> {
        let xml = match self.load()?.domains.get(name) {
            Some(d) if d.running => d.xml.clone(),
            _ => return Err(not_running()),
        };
        let target = SimHypervisor::new(&self.dir, &to.node);
        if target.state(name)?.active() {
            return Err(refused(format!(
                "operation failed: domain '{name}' is already active on {}",
                to.node
            )));
        }
        // The target must be able to open the disks now: DRBD Primary there too.
        for minor in drbd_minors(&xml) {
            if let Some(res) = target.drbd.resource_of_minor(minor).map_err(HypervisorError::Refused)? {
                if !target.drbd.is_primary(&res).map_err(HypervisorError::Refused)? {
                    return Err(refused(format!(
                        "internal error: qemu unexpectedly closed the monitor on {}: Could not open '/dev/drbd{minor}': Wrong medium type",
                        to.node
                    )));
                }
            } else {
                return Err(refused(format!(
                    "Cannot access storage '/dev/drbd{minor}' on {}",
                    to.node
                )));
            }
        }
        // The incoming domain: paused there, its disks open, from the start of the copy.
        let boots = self.load()?.domains.get(name).map_or(0, |x| x.boots);
        target.receive(&xml, boots)?;
        // The memory copy while the guest runs here takes `SIM_DIR/migrate-ms` milliseconds
        // (`DEFAULT_MIGRATE_MS` without the file).
        let pause = std::fs::read_to_string(self.dir.join("migrate-ms"))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MIGRATE_MS);
        std::thread::sleep(Duration::from_millis(pause));
        // A migration that fails halfway (`SIM_DIR/migrate-fail` exists), across a network
        // cut, or whose incoming domain went away: the job is cancelled, the guest keeps
        // running here.
        let cancel = |why: &str| {
            let _ = target.cancel_incoming(name);
            refused(format!("operation failed: migration job: {why}"))
        };
        if self.dir.join("migrate-fail").exists() {
            return Err(cancel("unexpectedly failed"));
        }
        if self.cut_from(&to.node) {
            return Err(cancel(&format!("the connection to {} was lost", to.node)));
        }
        if target.load()?.domains.get(name).is_none_or(|x| x.incoming.is_none()) {
            return Err(cancel(&format!("the incoming domain on {} is gone", to.node)));
        }
        // The switch-over: the guest stops here, then resumes there (not booted again).
        self.update(|d| match d.domains.get(name) {
            Some(x) if x.running => {
                self.set_devices_open(&x.xml, false)?;
                d.domains.remove(name);
                Ok(())
            }
            _ => Err(not_running()),
        })
        .inspect_err(|_| {
            cancel("the guest stopped on the source");
        })?;
        target.update(|d| match d.domains.get_mut(name) {
            Some(x) if x.incoming.is_some() => {
                x.incoming = None;
                Ok(())
            }
            _ => Err(refused(format!(
                "operation failed: migration job: the incoming domain on {} is gone",
                to.node
            ))),
        })?;
        target.log_if_running_elsewhere(name);
        Ok(())
    }

    fn stop(&self, name: &str, _timeout: Duration) -> Result<(), HypervisorError> {
        // A simulated guest always honours the ACPI shutdown at once.
        self.destroy(name)
    }

    fn destroy(&self, name: &str) -> Result<(), HypervisorError> {
        self.update(|d| match d.domains.get_mut(name) {
            // Destroying an incoming domain kills the migration.
            Some(x) if x.incoming.is_some() => self.drop_incoming(d, name),
            Some(x) if x.running => {
                self.set_devices_open(&x.xml, false)?;
                x.running = false;
                Ok(())
            }
            Some(_) => Err(not_running()),
            None => Err(no_domain(name)),
        })
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
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("migrate-ms"), "10").unwrap();
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
        assert_eq!(b.list().unwrap(), "vm running boots=1\n", "resumed, not booted again");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("violations.log")).unwrap_or_default(),
            ""
        );
        // During the copy the target holds the incoming domain, paused; a copy that fails
        // removes it and leaves the guest running where it was.
        std::fs::write(dir.path().join("migrate-ms"), "400").unwrap();
        let back = std::thread::spawn({
            let dir = dir.path().to_path_buf();
            move || SimHypervisor::new(&dir, "n2").migrate("vm", &to("n1"))
        });
        let mut seen = None;
        for _ in 0..100 {
            if a.state("vm").unwrap() == DomainState::Paused {
                seen = Some((a.list().unwrap(), b.state("vm").unwrap()));
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            seen,
            Some(("vm paused boots=1\n".to_string(), DomainState::Running)),
            "arriving on n1, still running on n2"
        );
        std::fs::write(dir.path().join("migrate-fail"), "").unwrap();
        assert!(back.join().unwrap().unwrap_err().to_string().contains("migration job"));
        assert_eq!(
            (a.state("vm").unwrap(), b.state("vm").unwrap()),
            (DomainState::Absent, DomainState::Running)
        );
        std::fs::remove_file(dir.path().join("migrate-fail")).unwrap();
        // A guest on DRBD needs the target to be Primary as well.
        let disk = "<domain><name>db</name><devices><disk><source dev='/dev/drbd3'/></disk></devices></domain>";
        b.define(disk).unwrap();
        std::fs::create_dir_all(dir.path().join("drbd")).unwrap();
        assert!(b.migrate("db", &to("n1")).is_err());
    }

    /// Several processes write a node's file (its `omd`, `omsim virsh`, its watchdog, a
    /// migration's source): separate instances, as separate processes have, lose no update.
    #[test]
    fn two_instances_on_one_directory_lose_no_update() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let hv = SimHypervisor::new(dir.path(), "n1");
                std::thread::spawn(move || {
                    for i in 0..40 {
                        let name = format!("vm{t}-{i}");
                        hv.define(&format!("<domain><name>{name}</name></domain>")).unwrap();
                        hv.start(&name).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let listed = SimHypervisor::new(dir.path(), "n1").list().unwrap();
        assert_eq!(
            listed.lines().filter(|l| l.contains(" running boots=1")).count(),
            80,
            "{listed}"
        );
    }
}
