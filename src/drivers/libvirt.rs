//! The real hypervisor driver: libvirt through the `virt` crate. The connection is opened on
//! first use and opened again when it died; `qemu:///system` in production,
//! `test:///default` in tests (libvirt's in-process test driver).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::Domain;
use virt::enumutil::Enum;
use virt::error::ErrorNumber;

use super::hypervisor::{DomainState, Hypervisor, HypervisorError, MigrationTarget};

/// libvirt's `virDomainMigrateFlags` we use: live, persistent on the destination, undefined on
/// the source.
const VIR_MIGRATE_LIVE: u32 = 1;
const VIR_MIGRATE_PERSIST_DEST: u32 = 8;
const VIR_MIGRATE_UNDEFINE_SOURCE: u32 = 16;

/// How long a question to another node's libvirt may take.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Libvirt {
    uri: String,
    conn: Mutex<Option<Connect>>,
}

fn refused(e: virt::error::Error) -> HypervisorError {
    HypervisorError::Refused(e.to_string())
}

impl Libvirt {
    pub fn new(uri: &str) -> Libvirt {
        // Errors are returned to us; libvirt must not also print them to stderr.
        virt::error::clear_error_callback();
        Libvirt {
            uri: uri.to_string(),
            conn: Mutex::new(None),
        }
    }

    /// Runs `f` on the connection, opened again first if it died.
    fn with<T>(&self, f: impl FnOnce(&Connect) -> Result<T, virt::error::Error>) -> Result<T, HypervisorError> {
        let mut guard = self.conn.lock().expect("libvirt connection lock");
        if !guard.as_ref().is_some_and(|c| c.is_alive().unwrap_or(false)) {
            *guard = Some(Connect::open(Some(&self.uri)).map_err(refused)?);
        }
        f(guard.as_ref().expect("opened")).map_err(refused)
    }

    fn domain(&self, name: &str) -> Result<Option<Domain>, HypervisorError> {
        let found = self.with(|c| match c.lookup_domain_by_name(name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if matches!(e.code(), Enum::Known(ErrorNumber::NoDomain)) => Ok(None),
            Err(e) => Err(e),
        })?;
        Ok(found)
    }

    fn existing(&self, name: &str) -> Result<Domain, HypervisorError> {
        self.domain(name)?
            .ok_or_else(|| HypervisorError::Refused(format!("Domain not found: no domain with matching name '{name}'")))
    }
}

/// A defined domain's state: shut off, running, or active but paused.
fn domain_state(d: &Domain) -> Result<DomainState, HypervisorError> {
    if !d.is_active().map_err(refused)? {
        return Ok(DomainState::ShutOff);
    }
    // A live migration's incoming domain is active from the start of the copy, paused until
    // it ends: not the guest running here yet.
    use virt::domain::DomainState as Virt;
    Ok(match d.state().map_err(refused)?.0 {
        Enum::Known(Virt::Paused | Virt::PMSuspended | Virt::Crashed) => DomainState::Paused,
        _ => DomainState::Running,
    })
}

impl Hypervisor for Libvirt {
    fn state(&self, name: &str) -> Result<DomainState, HypervisorError> {
        match self.domain(name)? {
            None => Ok(DomainState::Absent),
            Some(d) => domain_state(&d),
        }
    }

    fn xml(&self, name: &str) -> Result<Option<String>, HypervisorError> {
        match self.domain(name)? {
            None => Ok(None),
            // Flag 0: the persistent definition as the user wrote it, without live state.
            Some(d) => d.xml_desc(0).map(Some).map_err(refused),
        }
    }

    fn define(&self, xml: &str) -> Result<(), HypervisorError> {
        self.with(|c| c.define_domain_xml(xml).map(|_| ()))
    }

    fn start(&self, name: &str) -> Result<(), HypervisorError> {
        self.existing(name)?.create().map_err(refused)
    }

    fn stop(&self, name: &str, timeout: Duration) -> Result<(), HypervisorError> {
        let d = self.existing(name)?;
        let state = domain_state(&d)?;
        if !state.active() {
            return Ok(());
        }
        if timeout.is_zero() || state == DomainState::Paused {
            // Fencing: no time for the guest to shut down cleanly. Paused: it cannot.
            return d.destroy().map_err(refused);
        }
        d.shutdown().map_err(refused)?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !d.is_active().map_err(refused)? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        tracing::warn!(domain = name, "not stopped within {timeout:?}: destroying it");
        d.destroy().map_err(refused)
    }

    fn destroy(&self, name: &str) -> Result<(), HypervisorError> {
        self.existing(name)?.destroy().map_err(refused)
    }

    fn undefine(&self, name: &str) -> Result<(), HypervisorError> {
        self.existing(name)?.undefine().map_err(refused)
    }

    fn state_at(&self, name: &str, at: &MigrationTarget) -> Result<DomainState, HypervisorError> {
        // A connection to an unreachable host can take minutes to fail: asked on a thread of
        // its own, given up after REMOTE_TIMEOUT (the thread ends when libvirt gives up).
        let (tx, rx) = std::sync::mpsc::channel();
        let (uri, name) = (at.libvirt_uri.clone(), name.to_string());
        std::thread::spawn(move || {
            let remote = Libvirt::new(&uri);
            let _ = tx.send(remote.state(&name));
        });
        rx.recv_timeout(REMOTE_TIMEOUT).unwrap_or_else(|_| {
            Err(HypervisorError::Refused(format!(
                "{} did not answer within {} s",
                at.libvirt_uri,
                REMOTE_TIMEOUT.as_secs()
            )))
        })
    }

    fn migrate(&self, name: &str, to: &MigrationTarget) -> Result<(), HypervisorError> {
        let d = self.existing(name)?;
        let dest = Connect::open(Some(&to.libvirt_uri)).map_err(refused)?;
        let flags = VIR_MIGRATE_LIVE | VIR_MIGRATE_PERSIST_DEST | VIR_MIGRATE_UNDEFINE_SOURCE;
        d.migrate(&dest, flags, None, to.migration_uri.as_deref(), 0)
            .map(|_| ())
            .map_err(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str =
        "<domain type='test'><name>omraft-t1</name><memory>8192</memory><os><type>hvm</type></os></domain>";

    #[test]
    fn drives_libvirts_test_driver() {
        let hv = Libvirt::new("test:///default");
        // The test driver comes with a running domain named `test`.
        assert_eq!(hv.state("test").unwrap(), DomainState::Running);
        assert_eq!(hv.state("omraft-t1").unwrap(), DomainState::Absent);
        assert!(hv.start("omraft-t1").is_err());
        hv.define(XML).unwrap();
        assert_eq!(hv.state("omraft-t1").unwrap(), DomainState::ShutOff);
        assert!(hv.xml("omraft-t1").unwrap().unwrap().contains("<name>omraft-t1</name>"));
        hv.start("omraft-t1").unwrap();
        assert_eq!(hv.state("omraft-t1").unwrap(), DomainState::Running);
        assert!(hv.start("omraft-t1").is_err(), "a running domain cannot start again");
        // The test driver's guests honour the shutdown request.
        hv.stop("omraft-t1", Duration::from_secs(5)).unwrap();
        assert_eq!(hv.state("omraft-t1").unwrap(), DomainState::ShutOff);
        assert!(
            hv.destroy("omraft-t1").is_err(),
            "destroying a stopped domain is refused"
        );
        // Paused (as a live migration's incoming domain is during the copy): active, not
        // running, and stopped at once (a paused guest cannot honour a shutdown).
        hv.start("omraft-t1").unwrap();
        hv.existing("omraft-t1").unwrap().suspend().unwrap();
        assert_eq!(hv.state("omraft-t1").unwrap(), DomainState::Paused);
        hv.stop("omraft-t1", Duration::from_secs(60)).unwrap();
        assert_eq!(hv.state("omraft-t1").unwrap(), DomainState::ShutOff);
        assert!(hv.define("<domain>").is_err());
        hv.undefine("omraft-t1").unwrap();
        assert_eq!(hv.state("omraft-t1").unwrap(), DomainState::Absent);
        // The test driver cannot migrate: the refusal comes back as an error, not a panic.
        let to = MigrationTarget {
            node: "x".into(),
            libvirt_uri: "test:///default".into(),
            migration_uri: None,
        };
        assert!(hv.migrate("test", &to).is_err());
        // Another node's hypervisor, asked through its own connection.
        assert_eq!(hv.state_at("test", &to).unwrap(), DomainState::Running);
        assert_eq!(hv.state_at("omraft-none", &to).unwrap(), DomainState::Absent);
        let nowhere = MigrationTarget {
            libvirt_uri: "qemu+unix:///system?socket=/nonexistent/omraft.sock".into(),
            ..to
        };
        assert!(hv.state_at("test", &nowhere).is_err());
    }
}
