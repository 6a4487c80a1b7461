//! The real-host test bed's harness, shared by `tests/bed` and `bench/bed.rs`: the bed
//! (`scripts/testbed`) with omraft's Debian package installed (`scripts/package`, of the
//! binaries this test run built), each host set up as README's "Installing on hosts" says (its
//! `/etc/omraft/omd.toml`, `/usr/sbin/omd` started as the unit starts it, the process harness of
//! `tests/support/omd.rs` under `scripts/testbed run`), the package's `omctl` and `virsh`
//! inside the hosts, the guest's console, a split-brain poller, and the tutorial up to the
//! guest running on n1.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::omd::{Launch, Omd, OMSIM};

pub const TESTBED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testbed");
pub const GUEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testbed-guest");
pub const HOSTS: [(&str, &str); 3] = [("n1", "10.77.0.11"), ("n2", "10.77.0.12"), ("w", "10.77.0.13")];
pub const PACKAGE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/package");

/// omraft's package of the binaries this test run built (`scripts/package --debug --no-build`),
/// made once per process.
fn package() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bed-package");
        let out = Command::new(PACKAGE_SCRIPT)
            .args(["--debug", "--no-build"])
            .arg(&out_dir)
            .output()
            .expect("run scripts/package");
        assert!(
            out.status.success(),
            "scripts/package failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("scripts/package prints the package's path")
                .trim(),
        )
    })
}
/// A bed that is up, with the `omd` it started; torn down on drop.
pub struct Bed {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    pub omd: Vec<Omd>,
}

impl Bed {
    /// Builds the bed, or says why this machine cannot.
    pub fn up() -> Result<Bed, String> {
        let tmp = tempfile::Builder::new().prefix("omtb-").tempdir().unwrap();
        let dir = tmp.path().join("bed");
        let out = Command::new(TESTBED)
            .arg("up")
            .arg("--package")
            .arg(package())
            .arg(&dir)
            .output()
            .expect("run scripts/testbed");
        match out.status.code() {
            Some(0) => Ok(Bed {
                dir,
                _tmp: tmp,
                omd: vec![],
            }),
            Some(77) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
            _ => {
                let _ = Command::new(TESTBED).arg("down").arg(&dir).status();
                panic!("scripts/testbed up failed:\n{}", String::from_utf8_lossy(&out.stderr))
            }
        }
    }

    /// Runs `args` inside `host`.
    pub fn run(&self, host: &str, args: &[&str]) -> Output {
        Command::new(TESTBED)
            .arg("run")
            .arg(&self.dir)
            .arg(host)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("scripts/testbed run")
    }

    /// The host's `/var/lib/omraft`, as seen from outside it.
    pub fn data_dir(&self, host: &str) -> PathBuf {
        self.dir.join(host).join("omraft-lib")
    }

    /// The log of the host's `omd` (its standard error, as the journal would have it).
    pub fn log_path(&self, host: &str) -> PathBuf {
        self.data_dir(host).with_extension("log")
    }

    /// Starts `omd` in `host` as the package's unit does (`/usr/sbin/omd`, its settings in the
    /// host's `/etc/omraft/omd.toml`, the package's file with this host's lines added): the real
    /// libvirt of that host, the simulators in DIR/sim (`omsim`, which the package leaves out,
    /// from this test run's build).
    pub fn start_omd(&mut self, host: &str, addr: &str) {
        let config = self.dir.join(host).join("omraft-etc/omd.toml");
        let mut text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        let sim = self.dir.join("sim");
        text.push_str(&format!(
            "\n# The test bed's host {host}.\nnode-name = \"{host}\"\nlisten = \"{addr}:1215\"\n\
             drivers = \"sim\"\nsim-dir = \"{}\"\nomsim = \"{OMSIM}\"\nssh-dir = \"/var/lib/omraft/ssh\"\n",
            sim.display()
        ));
        if host != "w" {
            text.push_str("real-libvirt = true\nreport-vg = [\"data=5G\"]\n");
        }
        std::fs::write(&config, text).unwrap();
        let launch = Launch {
            args: vec![],
            installed: Some("/usr/sbin/omd".into()),
            env: vec![
                ("OMRAFT_SIM_SYNC_MS".into(), "1000".into()),
                // A watchdog reset takes the whole host down, guests included.
                ("OMRAFT_SIM_RESET".into(), "netns".into()),
            ],
            wrapper: vec![
                TESTBED.into(),
                "run".into(),
                self.dir.display().to_string(),
                host.into(),
            ],
        };
        let omd = Omd::launch(host, &self.data_dir(host), &format!("{addr}:1215"), launch)
            .unwrap_or_else(|e| panic!("starting omd in the bed: {e}"));
        self.omd.push(omd);
    }

    /// The package's omctl inside `host`, against that host's daemon (its default socket).
    pub fn omctl(&self, host: &str, args: &[&str]) -> Output {
        let mut all = vec!["/usr/bin/omctl"];
        all.extend_from_slice(args);
        self.run(host, &all)
    }

    /// omctl that must succeed; its stdout.
    pub fn ok(&self, host: &str, args: &[&str]) -> String {
        let out = self.omctl(host, args);
        assert!(
            out.status.success(),
            "omctl {args:?} on {host}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn virsh(&self, host: &str, args: &[&str]) -> String {
        virsh(&self.dir, host, args)
    }

    /// `virsh ARGS` on `host` that must succeed; its stdout.
    pub fn virsh_ok(&self, host: &str, args: &[&str]) -> String {
        let out = virsh_output(&self.dir, host, args);
        assert!(
            out.status.success(),
            "virsh {args:?} on {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn running(&self, host: &str) -> bool {
        running(&self.dir, host)
    }

    /// Pulls the plug on `host`: every process in it killed (omd, libvirtd, the guest), its
    /// simulated DRBD down.
    pub fn power_off(&self, host: &str) {
        let ns = format!("omtb-{host}");
        let pids = || {
            let out = Command::new("ip").args(["netns", "pids", &ns]).output().unwrap();
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert!(!pids().is_empty(), "nothing runs in {ns}");
        // Until none is left: some (a poller's virsh) come and go meanwhile, so a kill of a pid
        // that just exited may fail.
        let t = Instant::now();
        loop {
            let left = pids();
            if left.is_empty() {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "still running in {ns}: {left:?}");
            let _ = Command::new("kill").arg("-KILL").args(&left).status();
            std::thread::sleep(Duration::from_millis(50));
        }
        let off = Command::new(OMSIM)
            .args(["virsh", "--node", host, "poweroff"])
            .env("OMRAFT_SIM_DIR", self.dir.join("sim"))
            .status()
            .unwrap();
        assert!(off.success());
    }

    /// The guest's console lines on `host`: `(counter, uptime seconds)`.
    pub fn console(&self, host: &str) -> Vec<(u64, f64)> {
        let log = std::fs::read_to_string(self.dir.join(host).join("log/qemu/kvm1.console.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| {
                let field = |k: &str| l.split_whitespace().find_map(|f| f.strip_prefix(k));
                Some((field("counter=")?.parse().ok()?, field("uptime=")?.parse().ok()?))
            })
            .collect()
    }

    /// The omd logs' tails (long enough to hold a whole failover) and where the guest runs,
    /// for a failure's message.
    pub fn logs(&self) -> String {
        let mut out: Vec<String> = HOSTS
            .iter()
            .map(|(h, _)| {
                let log = std::fs::read_to_string(self.log_path(h)).unwrap_or_default();
                // Raft's retries towards an unreachable peer would fill the excerpt.
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| !RAFT_RETRIES.iter().any(|r| l.contains(r)))
                    .collect();
                format!(
                    "---- omd {h} ({} lines, the last 150 of the {} that are not Raft's retries) ----\n{}",
                    log.lines().count(),
                    lines.len(),
                    lines[lines.len().saturating_sub(150)..].join("\n")
                )
            })
            .collect();
        for h in ["n1", "n2"] {
            out.push(format!("---- guest running on {h}: {}", self.running(h)));
        }
        out.join("\n")
    }
}

pub fn virsh(dir: &Path, host: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&virsh_output(dir, host, args).stdout).into_owned()
}

/// `virsh ARGS` against `host`'s libvirtd, as it ended.
fn virsh_output(dir: &Path, host: &str, args: &[&str]) -> Output {
    Command::new(TESTBED)
        .arg("virsh")
        .arg(dir)
        .arg(host)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("scripts/testbed virsh")
}

/// Whether the guest runs on `host`, as its libvirtd says (a dead libvirtd: no). Running, not
/// merely active: a live migration's incoming domain is active but paused until the copy ends.
pub fn running(dir: &Path, host: &str) -> bool {
    virsh(dir, host, &["list", "--name", "--state-running"])
        .lines()
        .any(|l| l.trim() == "kvm1")
}

/// Samples both data hosts' libvirt every 100 ms until stopped; then the moments the guest ran
/// on both.
pub struct Poller {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<f64>)>,
}

impl Poller {
    pub fn start(dir: &Path) -> Poller {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, dir) = (stop.clone(), dir.to_path_buf());
        let thread = std::thread::spawn(move || {
            let (t0, mut samples, mut both) = (Instant::now(), 0, vec![]);
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                if running(&dir, "n1") && running(&dir, "n2") {
                    both.push(t0.elapsed().as_secs_f64());
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            (samples, both)
        });
        Poller { stop, thread }
    }

    /// Stops sampling; fails if the guest ever ran on both hosts.
    pub fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (samples, both) = self.thread.join().unwrap();
        assert!(samples > 10, "the poller sampled only {samples} times");
        assert!(both.is_empty(), "the guest ran on n1 and n2 at once, at {both:?} s");
    }
}

/// What Raft logs at each retry towards an unreachable peer.
const RAFT_RETRIES: [&str; 3] = ["openraft::replication", "replication_handler", "confirming leadership"];

/// One bed at a time on a machine.
pub static ONE_BED: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Drop for Bed {
    fn drop(&mut self) {
        for o in &mut self.omd {
            o.kill9();
        }
        let _ = Command::new(TESTBED).arg("down").arg(&self.dir).status();
    }
}

/// Polls `f` every 200 ms for at most `secs` seconds.
pub fn until(secs: u64, what: &str, bed: &Bed, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s: {what}\n{}",
            bed.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The guest's domain XML (kernel and initramfs cached between runs). Its disk is the
/// service's DRBD device path (`device`, from `instance device list`), which the bed makes a
/// symlink to a loop device over a file: a block device both hosts see, as DRBD's is on both
/// sides of a dual-primary live migration, so libvirt's shared-storage check passes without
/// `--unsafe`. (The guest's kernel has no virtio-blk module loaded: only libvirt and QEMU use
/// the disk.)
pub fn guest_xml(dir: &Path, device: &str) -> PathBuf {
    let image = dir.join("kvm1-disk.img");
    std::fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
    let out = Command::new(TESTBED)
        .arg("loop")
        .arg(dir)
        .arg(&image)
        .arg(device)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "testbed loop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let disk = device.to_string();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("testbed-guest");
    let out = Command::new(GUEST)
        .arg("xml")
        .arg(&cache)
        .arg("kvm1")
        .args(["--disk", &disk])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "testbed-guest: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = dir.join("kvm1.xml");
    std::fs::write(&xml, &out.stdout).unwrap();
    xml
}

/// The bed with a formed cluster (n1 founder, n2 joined, w a witness), or why this machine
/// cannot build the bed.
pub fn cluster() -> Result<Bed, String> {
    let mut bed = Bed::up().map_err(|why| format!("the test bed cannot be built here: {why}"))?;
    for (host, addr) in HOSTS {
        bed.start_omd(host, addr);
    }
    until(30, "the daemons answering", &bed, || {
        HOSTS.iter().all(|(h, _)| bed.omctl(h, &["mon"]).status.success())
    });
    for (host, witness) in [("n2", false), ("w", true)] {
        let token = bed.ok("n1", &["daemon", "auth", "--role", "join", "--node", host]);
        let mut args = vec!["cluster", "join", "--node", "10.77.0.11:1215", "--token", token.trim()];
        if witness {
            args.push("--witness");
        }
        bed.ok(host, &args);
    }
    Ok(bed)
}

/// The tutorial from the cluster name to its guest running on n1, reported up there. With a
/// `template`, the pool's DRBD resource files come from it, stored as the tutorial does (key
/// `live-migration` of the config map `system/cfg/drbd`); else from the built-in template.
pub fn guest_on_n1(bed: &Bed, template: Option<&str>) {
    // The tutorial, from the cluster name to the guest (the pool with the built-in template).
    bed.ok("n1", &["cluster", "config", "update", "--set", "cluster.name=drbd4kvm"]);
    bed.ok(
        "n1",
        &[
            "cluster",
            "config",
            "update",
            "--set",
            "pool#drbdvm.type=drbd",
            "--set",
            "pool#drbdvm.vg=data",
            "--set",
            "migration.uri=tcp://{host}:49152",
        ],
    );
    if let Some(text) = template {
        let file = bed.dir.join("live-migration");
        std::fs::write(&file, text).unwrap();
        bed.ok("n1", &["system/cfg/drbd", "create"]);
        let from = file.display().to_string();
        bed.ok(
            "n1",
            &[
                "system/cfg/drbd",
                "key",
                "add",
                "--name",
                "live-migration",
                "--from",
                &from,
            ],
        );
        bed.ok(
            "n1",
            &[
                "cluster",
                "config",
                "update",
                "--set",
                "pool#drbdvm.template=live-migration",
            ],
        );
    }
    bed.ok("n1", &["cluster", "ssh", "trust"]);
    until(30, "the volume group reports", bed, || {
        bed.omctl(
            "n1",
            &[
                "demo/svc/kvm1",
                "create",
                "--kw",
                "nodes={clusternodes}",
                "--kw",
                "orchestrate=ha",
                "--kw",
                "volume#data.size=1G",
                "--kw",
                "volume#data.shared=true",
                "--kw",
                "volume#data.pool=drbdvm",
            ],
        )
        .status
        .success()
    });
    bed.ok("n1", &["demo/svc/kvm1", "provision", "--wait", "--time", "120s"]);
    // The guest, created on n1 as the tutorial's virt-install --import would.
    // Its disk: the service's DRBD device, as `instance device list` shows it.
    let devices = bed.ok("n1", &["demo/svc/kvm1", "instance", "device", "list"]);
    let device = devices
        .split_whitespace()
        .find(|w| w.starts_with("/dev/drbd"))
        .unwrap_or_else(|| panic!("no DRBD device in {devices}"))
        .to_string();
    let xml = guest_xml(&bed.dir, &device);
    let define = bed.virsh("n1", &["define", xml.to_str().unwrap()]);
    assert!(define.contains("defined"), "{define}");
    assert!(bed.virsh("n1", &["start", "kvm1"]).contains("started"));
    bed.ok(
        "n1",
        &[
            "demo/svc/kvm1",
            "config",
            "update",
            "--set",
            "container#1.type=kvm",
            "--set",
            "container#1.name=kvm1",
            "--set",
            "container#1.stop_timeout=3s",
        ],
    );
    until(60, "the guest's first console lines on n1", bed, || {
        bed.console("n1").len() >= 3
    });
    let ls = |on1: &str, on2: &str| {
        format!("OBJECT         NODE  AVAIL\ndemo/svc/kvm1  n1    {on1}\ndemo/svc/kvm1  n2    {on2}\n")
    };
    until(30, "instance ls: up on n1", bed, || {
        bed.ok("n2", &["demo/svc/kvm1", "instance", "ls"]) == ls("up", "down")
    });
}
