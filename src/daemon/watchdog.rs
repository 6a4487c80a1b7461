//! The watchdog that resets this node when its daemon can no longer act: armed while the node
//! holds or should hold anything and has a lease, petted only while the lease outlasts the
//! watchdog's margin (`drivers::watchdog::decide`), disarmed once the node holds nothing. The
//! lease renewal loop drives it (`NodeWatchdog::step`) after each renewal.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::Duration;

use crate::drivers::watchdog::{decide, device_margin, read_timeout, Action};
use crate::lease::LeaseConfig;

/// A watchdog resets the node when the daemon stops petting it: it pets only while its lease
/// has more than the watchdog's margin to run (`drivers::watchdog::decide`), so a hung or dead
/// daemon's node is reset before the leader can move its services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watchdog {
    /// None: the leader never moves a service away from this node automatically.
    None,
    /// The simulator's (`omsim watchdog`), for `--drivers sim`.
    Sim {
        dir: PathBuf,
        omsim: PathBuf,
        timeout_ms: u64,
    },
    /// The kernel's (`/dev/watchdog`), opened only while armed. `timeout_ms` is what `sysfs`
    /// said at start; the daemon reads it again before arming, and holds it while armed.
    Device {
        path: PathBuf,
        sysfs: PathBuf,
        timeout_ms: u64,
    },
}

/// The open /dev/watchdog (`Watchdog::Device`) while armed, and why it last could not be
/// armed or no longer suits the lease (each reason logged once, not every round).
#[derive(Debug, Default)]
struct DeviceSlot {
    open: Option<crate::drivers::watchdog::DeviceWatchdog>,
    refused: Option<String>,
}

impl DeviceSlot {
    /// Logs `why` unless it was the last reason logged.
    fn refuse(&mut self, why: String) {
        if self.refused.as_ref() != Some(&why) {
            tracing::warn!("{why}");
            self.refused = Some(why);
        }
    }

    /// Pets the open device, or opens (arms) and pets it; returns whether it armed it now.
    ///
    /// The device's timeout is checked against `lease` here, when it is armed, not when `omd`
    /// starts: the lease configuration is replicated state, known for sure only once this node
    /// applied the log, changed at any time by `omctl config set`, and replaced by a join. It
    /// is read again just before the device is opened (it may have changed since `omd`
    /// started): once open the device runs, and with nowayout nothing stops it.
    fn pet_or_arm(&mut self, path: &Path, sysfs: &Path, lease: &LeaseConfig, remaining: Option<Duration>) -> bool {
        use crate::drivers::watchdog::{check_timeout, device_margin, read_timeout, DeviceWatchdog};
        if let Some(dev) = self.open.as_mut() {
            let timeout = dev.timeout();
            if let Err(e) = dev.pet() {
                tracing::error!("petting the watchdog: {e}");
            }
            match check_timeout(timeout, lease) {
                // Armed under another lease configuration: the rule stays (no pet while the
                // lease does not outlast the margin), so a late renewal may reset this node.
                Err(why) => self.refuse(format!("{why} (armed: a late lease renewal may reset this node)")),
                Ok(()) => self.refused = None,
            }
            return false;
        }
        let fits = read_timeout(sysfs).map_err(|e| e.to_string()).and_then(|timeout| {
            check_timeout(timeout, lease)?;
            match remaining {
                Some(r) if r > device_margin(timeout) => Ok(timeout),
                _ => Err(format!(
                    "the lease does not outlast twice the watchdog's timeout ({} s)",
                    timeout.as_secs()
                )),
            }
        });
        let timeout = match fits {
            Ok(timeout) => timeout,
            Err(why) => {
                self.refuse(format!("not arming the watchdog: {why}"));
                return false;
            }
        };
        let mut dev = match DeviceWatchdog::open(path, sysfs) {
            Ok(dev) => dev,
            Err(e) => {
                self.refuse(format!("cannot arm the watchdog: {e}"));
                return false;
            }
        };
        if dev.timeout() != timeout {
            // Changed between the two reads by another program: stop it again.
            let why = format!(
                "its timeout changed from {} s to {} s",
                timeout.as_secs(),
                dev.timeout().as_secs()
            );
            if let Err(e) = dev.disarm() {
                tracing::error!("disarming the watchdog: {e}");
            }
            self.refuse(format!("not arming the watchdog: {why}"));
            return false;
        }
        if let Err(e) = dev.pet() {
            tracing::error!("petting the watchdog: {e}");
        }
        tracing::info!("watchdog armed ({}, {} s)", path.display(), timeout.as_secs());
        self.open = Some(dev);
        self.refused = None;
        true
    }

    /// The node holds nothing: disarms the device, except with nowayout, which no close can
    /// stop: then it stays open and petted rather than reset an idle machine.
    fn idle(&mut self) {
        match self.open.as_mut() {
            Some(dev) if dev.nowayout() => {
                if let Err(e) = dev.pet() {
                    tracing::error!("petting the watchdog: {e}");
                }
                self.refuse("the watchdog has nowayout set: it stays armed and petted while this node is idle".into());
            }
            _ => self.disarm(),
        }
    }

    /// The magic close, if armed.
    fn disarm(&mut self) {
        if let Some(dev) = self.open.take() {
            match dev.disarm() {
                Ok(()) => tracing::info!("watchdog disarmed"),
                Err(e) => tracing::error!("disarming the watchdog: {e}"),
            }
        }
    }
}

/// This node's watchdog while `omd` runs.
#[derive(Debug)]
pub struct NodeWatchdog {
    kind: Watchdog,
    /// This node's name (the simulator's files are named after it).
    node: String,
    armed: AtomicBool,
    /// `Watchdog::Device`: the open device while armed.
    device: Mutex<DeviceSlot>,
    /// The applier saw a guest running or a DRBD resource Primary here at its last pass: the
    /// watchdog stays armed while it does, whatever the log says.
    holding: AtomicBool,
    /// Held through `step`: the renewal loop and the applier (arming before it takes
    /// anything) never arm twice.
    stepping: Mutex<()>,
}

impl NodeWatchdog {
    pub fn new(kind: Watchdog, node: &str) -> NodeWatchdog {
        NodeWatchdog {
            kind,
            node: node.to_string(),
            armed: AtomicBool::new(false),
            device: Mutex::new(DeviceSlot::default()),
            holding: AtomicBool::new(false),
            stepping: Mutex::new(()),
        }
    }

    /// Which watchdog this node runs with.
    pub fn kind(&self) -> &Watchdog {
        &self.kind
    }

    /// Whether this node may take resources (promote, start guests): it has no watchdog, or
    /// its watchdog is armed.
    pub fn may_take(&self) -> bool {
        self.kind == Watchdog::None || self.armed.load(SeqCst)
    }

    /// Whether the watchdog is armed now.
    pub fn armed(&self) -> bool {
        self.armed.load(SeqCst)
    }

    /// Whether the applier's last pass saw this node holding a guest or a Primary.
    pub fn holding(&self) -> bool {
        self.holding.load(SeqCst)
    }

    pub fn set_holding(&self, holding: bool) {
        self.holding.store(holding, SeqCst);
    }

    /// The rule, after each lease renewal: with `hosting` (the state places something here)
    /// or what the applier saw held, and the lease's `remaining` time, arm, pet, wait or disarm.
    /// `lease` is the replicated lease configuration (a device's timeout must suit it);
    /// `closing`: a clean stop began, so nothing is armed any more.
    pub fn step(&self, hosting: bool, remaining: Option<Duration>, lease: &LeaseConfig, closing: bool) {
        let _one = self.stepping.lock().expect("watchdog step lock");
        let margin = match &self.kind {
            Watchdog::None => return,
            Watchdog::Sim { timeout_ms, .. } => Duration::from_millis(*timeout_ms),
            Watchdog::Device { sysfs, timeout_ms, .. } => {
                // The open device's timeout, else the driver's now: the operator may have
                // reloaded it with a shorter one since omd started.
                let slot = self.device.lock().expect("watchdog lock");
                device_margin(match &slot.open {
                    Some(dev) => dev.timeout(),
                    None => read_timeout(sysfs).unwrap_or(Duration::from_millis(*timeout_ms)),
                })
            }
        };
        let hosting = hosting || self.holding();
        match decide(hosting, self.armed.load(SeqCst), remaining, margin) {
            Action::Wait => {}
            Action::Disarm => self.idle(),
            Action::Pet | Action::Arm => match &self.kind {
                Watchdog::None => {}
                Watchdog::Sim { dir, omsim, timeout_ms } => self.pet_sim(dir, omsim, *timeout_ms),
                Watchdog::Device { path, sysfs, .. } => self.pet_device(path, sysfs, lease, remaining, closing),
            },
        }
    }

    /// This node holds nothing: disarms its watchdog (but see `DeviceSlot::idle` for nowayout).
    pub fn idle(&self) {
        if let Watchdog::Device { .. } = &self.kind {
            let mut slot = self.device.lock().expect("watchdog lock");
            slot.idle();
            self.armed.store(slot.open.is_some(), SeqCst);
            return;
        }
        self.disarm();
    }

    /// Stops the watchdog without a reset (the magic close of /dev/watchdog): on a clean stop
    /// or a join. A device with nowayout cannot be stopped: it resets the machine one timeout
    /// later (logged).
    pub fn disarm(&self) {
        match &self.kind {
            Watchdog::None => {}
            Watchdog::Sim { dir, .. } => {
                if self.armed.swap(false, SeqCst) {
                    let _ = std::fs::write(dir.join(format!("watchdog-{}", self.node)), "disarm");
                    tracing::info!("watchdog disarmed");
                }
            }
            Watchdog::Device { .. } => {
                let mut slot = self.device.lock().expect("watchdog lock");
                slot.disarm();
                self.armed.store(false, SeqCst);
            }
        }
    }

    /// Pets the simulated watchdog, starting `omsim watchdog` first when it is not armed.
    fn pet_sim(&self, dir: &Path, omsim: &Path, timeout_ms: u64) {
        let pet = dir.join(format!("watchdog-{}", self.node));
        if let Err(e) = std::fs::write(&pet, "pet") {
            tracing::error!("petting the watchdog: {e}");
        }
        if !self.armed.load(SeqCst) {
            let spawned = std::process::Command::new(omsim)
                .args([
                    "watchdog",
                    "--node",
                    &self.node,
                    "--pid",
                    &std::process::id().to_string(),
                ])
                .args(["--timeout-ms", &timeout_ms.to_string()])
                .env("OMRAFT_SIM_DIR", dir)
                .stdin(std::process::Stdio::null())
                .spawn();
            match spawned {
                Ok(_) => {
                    self.armed.store(true, SeqCst);
                    tracing::info!("watchdog armed ({timeout_ms} ms)");
                }
                Err(e) => tracing::error!("starting the simulated watchdog: {e}"),
            }
        }
    }

    /// Pets /dev/watchdog, opening it first when it is not armed (`DeviceSlot::pet_or_arm`).
    fn pet_device(&self, path: &Path, sysfs: &Path, lease: &LeaseConfig, remaining: Option<Duration>, closing: bool) {
        let mut slot = self.device.lock().expect("watchdog lock");
        // Checked under the lock `disarm` takes: never armed after a clean stop's disarm.
        if slot.open.is_none() && closing {
            return;
        }
        slot.pet_or_arm(path, sysfs, lease, remaining);
        self.armed.store(slot.open.is_some(), SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A regular file standing in for /dev/watchdog, and its fake sysfs directory.
    fn fake_device(timeout: &str, nowayout: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        crate::drivers::watchdog::tests::fake(timeout, Some(nowayout))
    }

    #[test]
    fn device_armed_once_then_petted_then_disarmed_by_the_magic_close() {
        let (_dir, dev, sysfs) = fake_device("1", "0");
        let lease = LeaseConfig::default();
        let left = Some(Duration::from_millis(2900));
        let mut slot = DeviceSlot::default();
        assert!(slot.pet_or_arm(&dev, &sysfs, &lease, left), "armed now");
        assert!(!slot.pet_or_arm(&dev, &sysfs, &lease, left), "already armed");
        assert_eq!(std::fs::read(&dev).unwrap(), b"11");
        slot.idle();
        assert!(slot.open.is_none());
        assert_eq!(std::fs::read(&dev).unwrap(), b"11V");
    }

    #[test]
    fn device_not_armed_when_its_timeout_does_not_suit_the_lease() {
        let lease = LeaseConfig::default();
        let (_dir, dev, sysfs) = fake_device("2", "0");
        let mut slot = DeviceSlot::default();
        assert!(!slot.pet_or_arm(&dev, &sysfs, &lease, Some(Duration::from_millis(2900))));
        assert!(slot.open.is_none());
        assert!(
            slot.refused.as_ref().unwrap().contains("soft_margin=1"),
            "{:?}",
            slot.refused
        );
        assert_eq!(std::fs::read(&dev).unwrap(), b"", "never opened");
        // Suitable, but the lease has less than twice the timeout left.
        std::fs::write(sysfs.join("timeout"), "1").unwrap();
        assert!(!slot.pet_or_arm(&dev, &sysfs, &lease, Some(Duration::from_millis(2000))));
        assert!(!slot.pet_or_arm(&dev, &sysfs, &lease, None));
        assert!(slot.open.is_none());
        assert!(
            slot.refused.as_ref().unwrap().contains("does not outlast"),
            "{:?}",
            slot.refused
        );
        // Gone.
        std::fs::remove_file(&dev).unwrap();
        assert!(!slot.pet_or_arm(&dev, &sysfs, &lease, Some(Duration::from_millis(2900))));
        assert!(
            slot.refused.as_ref().unwrap().contains(&*dev.to_string_lossy()),
            "{:?}",
            slot.refused
        );
    }

    #[test]
    fn an_idle_node_keeps_a_nowayout_device_petted_and_a_stop_closes_it() {
        let (_dir, dev, sysfs) = fake_device("1", "1");
        let mut slot = DeviceSlot::default();
        let lease = LeaseConfig::default();
        assert!(slot.pet_or_arm(&dev, &sysfs, &lease, Some(Duration::from_millis(2900))));
        slot.idle();
        slot.idle();
        assert!(slot.open.is_some(), "closing would reset the machine");
        assert_eq!(std::fs::read(&dev).unwrap(), b"111");
        slot.disarm();
        assert!(slot.open.is_none());
        assert_eq!(std::fs::read(&dev).unwrap(), b"111V");
    }
}
