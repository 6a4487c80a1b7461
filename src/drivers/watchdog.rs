//! The kernel watchdog (`/dev/watchdog`): it resets the machine when nobody pets it in time,
//! so a node whose daemon hung or died stops its guests without the daemon's help.
//!
//! Opening the device starts its timer, any write pets it, and a close right after a write
//! holding `V` (the magic close) stops it; any other close leaves it running, and with
//! `nowayout` nothing stops it. The timeout can only be set by an ioctl, which this crate (no
//! unsafe code) does not make: the operator loads the driver with it (`modprobe softdog
//! soft_margin=1`) and we read it from sysfs. `decide` is the pure rule the daemon follows for
//! both this and the simulated watchdog; this module never reads the clock or the cluster state.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::lease::LeaseConfig;

/// The watchdog device used unless told otherwise (the legacy alias of `watchdog0`).
pub const DEVICE: &str = "/dev/watchdog";

/// What a pet writes: any byte but `V`, which would allow the next close to stop the timer.
const PET: &[u8] = b"1";

/// What the daemon does with its watchdog this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop it without a reset: this node holds nothing a hung daemon could leave running.
    Disarm,
    /// Start it, with a first pet.
    Arm,
    /// Pet it: the lease outlasts the margin.
    Pet,
    /// Nothing: an armed watchdog not petted fires, which is the point when the lease runs
    /// out before the margin.
    Wait,
}

/// The watchdog rule. A node arms its watchdog while `hosting` (`ClusterState::hosts`, or its
/// applier sees a guest running or a DRBD resource Primary there), and pets it only while its lease has more than `margin` to
/// run, so a node whose daemon stops petting is reset before its lease ends and the leader
/// moves its services. `margin` is the simulator's timeout, or `device_margin` of the device's.
pub fn decide(hosting: bool, armed: bool, lease_remaining: Option<Duration>, margin: Duration) -> Action {
    match (hosting, armed) {
        (false, true) => Action::Disarm,
        (false, false) => Action::Wait,
        (true, _) if lease_remaining.is_none_or(|r| r <= margin) => Action::Wait,
        (true, true) => Action::Pet,
        (true, false) => Action::Arm,
    }
}

/// The lease time a pet of /dev/watchdog must leave: twice its timeout. The kernel pets the
/// device once more when it is closed without the magic `V`, and a dying daemon's descriptor
/// is closed by the kernel: a daemon that stopped petting and then crashes gets the machine
/// reset up to two timeouts after its last pet, which must still fall within its lease.
pub fn device_margin(timeout: Duration) -> Duration {
    timeout * 2
}

/// Whether a /dev/watchdog `timeout` suits the cluster's lease timing. Its margin
/// (`device_margin`) must be shorter than `lease.duration - lease.renew`, so one late renewal
/// does not stop the pets; and pets come every `lease.renew` (twice that when a renewal is
/// slow), so the timeout must be longer than two renewals or a healthy node would be reset.
pub fn check_timeout(timeout: Duration, lease: &LeaseConfig) -> Result<(), String> {
    let room = lease.duration.saturating_sub(lease.renew);
    if device_margin(timeout) >= room {
        let fits = (room.as_millis().saturating_sub(1) / 2000) as u64;
        let fix = if fits >= 1 {
            format!("load the driver with a shorter timeout (e.g. `modprobe softdog soft_margin={fits}`) or raise lease.duration")
        } else {
            format!(
                "raise lease.duration above {} ms (twice a 1 s timeout plus lease.renew)",
                2000 + lease.renew.as_millis()
            )
        };
        return Err(format!(
            "the watchdog's timeout ({} s) is too long for the lease: twice it must be shorter than lease.duration \
             ({} ms) minus lease.renew ({} ms); {fix}",
            timeout.as_secs(),
            lease.duration.as_millis(),
            lease.renew.as_millis(),
        ));
    }
    if timeout <= lease.renew * 2 {
        return Err(format!(
            "the watchdog's timeout ({} s) is too short: pets come every lease.renew ({} ms), up to twice that when a \
             renewal is slow, so it must be longer than {} ms; load the driver with a longer one or lower lease.renew",
            timeout.as_secs(),
            lease.renew.as_millis(),
            lease.renew.as_millis() * 2,
        ));
    }
    Ok(())
}

/// Why the watchdog device could not be used. Each names the path concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchdogError {
    #[error("the watchdog device {0} does not exist (load a watchdog driver, e.g. `modprobe softdog soft_margin=1`)")]
    Missing(PathBuf),
    #[error("cannot open the watchdog device {0}: {1}")]
    Open(PathBuf, String),
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, String),
    #[error("{0}: expected a timeout in whole seconds (at least 1), found {1:?}")]
    Parse(PathBuf, String),
    #[error("cannot write to the watchdog device {0}: {1}")]
    Write(PathBuf, String),
}

/// The sysfs directory of a watchdog device: `/sys/class/watchdog/NAME`, where
/// `/dev/watchdog` is `watchdog0`.
pub fn sysfs_dir(device: &Path) -> PathBuf {
    let name = device.file_name().and_then(|n| n.to_str()).unwrap_or("watchdog");
    let name = if name == "watchdog" { "watchdog0" } else { name };
    Path::new("/sys/class/watchdog").join(name)
}

/// Checks, without opening it (which would start it), that `device` exists and reads its
/// timeout from `sysfs`.
pub fn probe(device: &Path, sysfs: &Path) -> Result<Duration, WatchdogError> {
    if !device.exists() {
        return Err(WatchdogError::Missing(device.to_path_buf()));
    }
    read_timeout(sysfs)
}

/// The timeout the driver was loaded with (`SYSFS/timeout`, seconds).
pub fn read_timeout(sysfs: &Path) -> Result<Duration, WatchdogError> {
    let file = sysfs.join("timeout");
    let text = std::fs::read_to_string(&file).map_err(|e| WatchdogError::Read(file.clone(), e.to_string()))?;
    match text.trim().parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(WatchdogError::Parse(file, text.trim().to_string())),
    }
}

/// Whether nothing can stop the watchdog once started (`SYSFS/nowayout`). Unreadable counts as
/// set: it is the assumption that never closes a device expecting it to stop.
pub fn nowayout(sysfs: &Path) -> bool {
    std::fs::read_to_string(sysfs.join("nowayout")).map_or(true, |s| s.trim() != "0")
}

/// An open, hence running, watchdog device. Dropping it closes the device without the magic
/// `V`, so the timer keeps running and the machine resets: only `disarm` stops it. (std opens
/// files close-on-exec, so the commands the daemon runs never hold it open.)
#[derive(Debug)]
pub struct DeviceWatchdog {
    path: PathBuf,
    file: std::fs::File,
    timeout: Duration,
    nowayout: bool,
}

impl DeviceWatchdog {
    /// Reads the timeout and `nowayout` from `sysfs`, then opens `device`: from here its timer
    /// runs.
    pub fn open(device: &Path, sysfs: &Path) -> Result<DeviceWatchdog, WatchdogError> {
        let timeout = read_timeout(sysfs)?;
        let nowayout = nowayout(sysfs);
        let file = std::fs::OpenOptions::new().write(true).open(device).map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => return WatchdogError::Missing(device.to_path_buf()),
                std::io::ErrorKind::ResourceBusy => {
                    format!("{e} (another program holds it: systemd's RuntimeWatchdogSec, a watchdog daemon?)")
                }
                _ => e.to_string(),
            };
            WatchdogError::Open(device.to_path_buf(), why)
        })?;
        Ok(DeviceWatchdog {
            path: device.to_path_buf(),
            file,
            timeout,
            nowayout,
        })
    }

    /// The timeout read when it was opened (it cannot change while we hold it open).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether closing it cannot stop it.
    pub fn nowayout(&self) -> bool {
        self.nowayout
    }

    /// Restarts the timer.
    pub fn pet(&mut self) -> Result<(), WatchdogError> {
        self.file
            .write_all(PET)
            .map_err(|e| WatchdogError::Write(self.path.clone(), e.to_string()))
    }

    /// The magic close: writes `V`, then closes, which stops the timer unless `nowayout` is set
    /// (then the kernel pets it once more and the machine resets one timeout later).
    pub fn disarm(mut self) -> Result<(), WatchdogError> {
        let written = self
            .file
            .write_all(b"V")
            .map_err(|e| WatchdogError::Write(self.path.clone(), e.to_string()));
        if self.nowayout {
            tracing::warn!(
                "{} has nowayout set: closing it cannot stop it, this machine resets in {} s unless omd opens it again",
                self.path.display(),
                self.timeout.as_secs()
            );
        }
        drop(self.file);
        written
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn decide_disarms_only_an_armed_watchdog_of_a_node_that_holds_nothing() {
        assert_eq!(decide(false, true, Some(secs(3)), secs(1)), Action::Disarm);
        assert_eq!(decide(false, true, None, secs(1)), Action::Disarm);
        assert_eq!(decide(false, false, Some(secs(3)), secs(1)), Action::Wait);
        assert_eq!(decide(false, false, None, secs(1)), Action::Wait);
    }

    #[test]
    fn decide_arms_then_pets_while_the_lease_outlasts_the_margin() {
        assert_eq!(decide(true, false, Some(secs(3)), secs(1)), Action::Arm);
        assert_eq!(decide(true, true, Some(secs(3)), secs(1)), Action::Pet);
    }

    #[test]
    fn decide_waits_once_the_lease_no_longer_outlasts_the_margin() {
        for armed in [false, true] {
            assert_eq!(
                decide(true, armed, Some(secs(1)), secs(1)),
                Action::Wait,
                "exactly the margin"
            );
            assert_eq!(
                decide(true, armed, Some(Duration::from_millis(500)), secs(1)),
                Action::Wait
            );
            assert_eq!(decide(true, armed, None, secs(1)), Action::Wait, "no lease");
        }
        // A timeout longer than any lease never arms (softdog's default 60 s).
        assert_eq!(
            decide(true, false, Some(secs(3)), device_margin(secs(60))),
            Action::Wait
        );
    }

    #[test]
    fn timeout_must_leave_room_in_the_lease_and_outlast_two_renewals() {
        let lease = LeaseConfig::default(); // 3 s, renewed every 300 ms
        assert_eq!(check_timeout(secs(1), &lease), Ok(()));
        let e = check_timeout(secs(2), &lease).unwrap_err();
        assert!(e.contains("too long") && e.contains("soft_margin=1"), "{e}");
        let e = check_timeout(secs(60), &lease).unwrap_err();
        assert!(e.contains("(60 s)") && e.contains("soft_margin=1"), "{e}");
        let long = LeaseConfig {
            duration: secs(10),
            renew: secs(1),
            ..lease
        };
        assert_eq!(check_timeout(secs(4), &long), Ok(()));
        let e = check_timeout(secs(5), &long).unwrap_err();
        assert!(e.contains("soft_margin=4"), "{e}");
        let e = check_timeout(secs(2), &long).unwrap_err();
        assert!(e.contains("too short"), "{e}");
        let short = LeaseConfig {
            duration: Duration::from_millis(2000),
            renew: Duration::from_millis(200),
            ..lease
        };
        let e = check_timeout(secs(1), &short).unwrap_err();
        assert!(e.contains("raise lease.duration above 2200 ms"), "{e}");
    }

    #[test]
    fn sysfs_dir_of_the_legacy_alias_is_watchdog0() {
        assert_eq!(
            sysfs_dir(Path::new("/dev/watchdog")),
            Path::new("/sys/class/watchdog/watchdog0")
        );
        assert_eq!(
            sysfs_dir(Path::new("/dev/watchdog1")),
            Path::new("/sys/class/watchdog/watchdog1")
        );
    }

    /// A regular file standing in for the device, and a fake sysfs directory.
    pub(crate) fn fake(timeout: &str, nowayout: Option<&str>) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("watchdog");
        std::fs::write(&dev, "").unwrap();
        let sysfs = dir.path().join("sys");
        std::fs::create_dir(&sysfs).unwrap();
        std::fs::write(sysfs.join("timeout"), timeout).unwrap();
        if let Some(n) = nowayout {
            std::fs::write(sysfs.join("nowayout"), n).unwrap();
        }
        (dir, dev, sysfs)
    }

    #[test]
    fn pets_write_a_byte_and_disarm_writes_the_magic_v() {
        let (_dir, dev, sysfs) = fake("1\n", Some("0\n"));
        assert_eq!(probe(&dev, &sysfs), Ok(secs(1)));
        let mut w = DeviceWatchdog::open(&dev, &sysfs).unwrap();
        assert_eq!((w.timeout(), w.nowayout()), (secs(1), false));
        assert_eq!(std::fs::read(&dev).unwrap(), b"", "opening writes nothing");
        w.pet().unwrap();
        w.pet().unwrap();
        assert_eq!(std::fs::read(&dev).unwrap(), b"11");
        w.disarm().unwrap();
        assert_eq!(
            std::fs::read(&dev).unwrap(),
            b"11V",
            "the last byte before the close is V"
        );
    }

    #[test]
    fn nowayout_is_read_and_assumed_when_unreadable() {
        let (_dir, dev, sysfs) = fake("2", Some("1\n"));
        let w = DeviceWatchdog::open(&dev, &sysfs).unwrap();
        assert!(w.nowayout());
        w.disarm().unwrap();
        assert_eq!(
            std::fs::read(&dev).unwrap(),
            b"V",
            "still written: it stops the timer where it can"
        );
        let (_dir, dev, sysfs) = fake("2", None);
        assert!(nowayout(&sysfs));
        assert!(DeviceWatchdog::open(&dev, &sysfs).unwrap().nowayout());
    }

    #[test]
    fn errors_name_the_missing_or_unparsable_path() {
        let (dir, dev, sysfs) = fake("1", Some("0"));
        let gone = dir.path().join("watchdog9");
        let e = probe(&gone, &sysfs).unwrap_err();
        assert_eq!(e, WatchdogError::Missing(gone.clone()));
        assert!(e.to_string().contains(&*gone.to_string_lossy()), "{e}");
        let e = DeviceWatchdog::open(&gone, &sysfs).unwrap_err();
        assert_eq!(e, WatchdogError::Missing(gone.clone()));

        let timeout = sysfs.join("timeout");
        for bad in ["abc", "0", "", "-1"] {
            std::fs::write(&timeout, bad).unwrap();
            let e = probe(&dev, &sysfs).unwrap_err();
            assert!(
                matches!(&e, WatchdogError::Parse(p, _) if *p == timeout),
                "{bad:?}: {e}"
            );
            assert!(e.to_string().contains(&*timeout.to_string_lossy()), "{e}");
            assert!(DeviceWatchdog::open(&dev, &sysfs).is_err());
        }
        std::fs::remove_file(&timeout).unwrap();
        let e = probe(&dev, &sysfs).unwrap_err();
        assert!(matches!(&e, WatchdogError::Read(p, _) if *p == timeout), "{e}");
        assert!(e.to_string().contains(&*timeout.to_string_lossy()), "{e}");
        let e = DeviceWatchdog::open(&dev, &sysfs).unwrap_err();
        assert!(matches!(&e, WatchdogError::Read(p, _) if *p == timeout), "{e}");
        assert_eq!(std::fs::read(&dev).unwrap(), b"", "nothing opened or written");
    }

    #[test]
    fn an_unopenable_device_is_named() {
        let (dir, _dev, sysfs) = fake("1", Some("0"));
        // A directory exists but cannot be opened for writing.
        let e = DeviceWatchdog::open(dir.path(), &sysfs).unwrap_err();
        assert!(matches!(&e, WatchdogError::Open(p, _) if p == dir.path()), "{e}");
    }
}
