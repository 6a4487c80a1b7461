//! The real hypervisor driver: libvirt through the `virt` crate. The connection is opened on
//! first use and opened again after an error; `qemu:///system` in production,
//! `test:///default` in tests (libvirt's in-process test driver).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::Domain;
use virt::enumutil::Enum;
use virt::error::ErrorNumber;

use super::hypervisor::{DomainState, Hypervisor, HypervisorError};

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

    /// Runs `f` on the connection; a failure drops it, so the next call reconnects.
    fn with<T>(&self, f: impl FnOnce(&Connect) -> Result<T, virt::error::Error>) -> Result<T, HypervisorError> {
        let mut guard = self.conn.lock().expect("libvirt connection lock");
        if guard.is_none() {
            *guard = Some(Connect::open(Some(&self.uri)).map_err(refused)?);
        }
        let res = f(guard.as_ref().expect("opened"));
        if res
            .as_ref()
            .is_err_and(|e| !matches!(e.code(), Enum::Known(ErrorNumber::NoDomain)))
        {
            *guard = None;
        }
        res.map_err(refused)
    }

    fn domain(&self, name: &str) -> Result<Option<Domain>, HypervisorError> {
        let mut guard = self.conn.lock().expect("libvirt connection lock");
        if guard.is_none() {
            *guard = Some(Connect::open(Some(&self.uri)).map_err(refused)?);
        }
        match guard.as_ref().expect("opened").lookup_domain_by_name(name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if matches!(e.code(), Enum::Known(ErrorNumber::NoDomain)) => Ok(None),
            Err(e) => {
                *guard = None;
                Err(refused(e))
            }
        }
    }

    fn existing(&self, name: &str) -> Result<Domain, HypervisorError> {
        self.domain(name)?
            .ok_or_else(|| HypervisorError::Refused(format!("Domain not found: no domain with matching name '{name}'")))
    }
}

impl Hypervisor for Libvirt {
    fn state(&self, name: &str) -> Result<DomainState, HypervisorError> {
        match self.domain(name)? {
            None => Ok(DomainState::Absent),
            Some(d) => Ok(if d.is_active().map_err(refused)? {
                DomainState::Running
            } else {
                DomainState::ShutOff
            }),
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
        if !d.is_active().map_err(refused)? {
            return Ok(());
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
        assert!(hv.define("<domain>").is_err());
    }
}
