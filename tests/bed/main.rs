//! The real-host test bed (DESIGN.md section 9, tier 5): hosts n1, n2 (data) and w (witness)
//! built by `scripts/testbed` on this machine (network, mount and UTS namespaces; in n1 and n2
//! a libvirtd of their own), a real `omd` in each host with the real libvirt driver beside the
//! DRBD and LVM simulators (`--drivers sim --real-libvirt`: DRBD's kernel module cannot load
//! here), real `omctl` inside the hosts, and a real TCG guest (`scripts/testbed-guest`: a
//! Debian kernel and a busybox initramfs printing a counter to its serial console).
//!
//! Where the machine cannot build the bed (not root, no namespaces, no libvirt or QEMU), each
//! test says why on stderr and passes without running: `scripts/testbed up` exits 77.
//! Everything the bed made is torn down when a test ends, failed or not.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TESTBED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testbed");
const GUEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testbed-guest");
const HOSTS: [(&str, &str); 3] = [("n1", "10.77.0.11"), ("n2", "10.77.0.12"), ("w", "10.77.0.13")];

/// A bed that is up, with the `omd` it started; torn down on drop.
struct Bed {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    omd: Vec<Child>,
}

impl Bed {
    /// Builds the bed, or says why this machine cannot.
    fn up() -> Result<Bed, String> {
        let tmp = tempfile::Builder::new().prefix("omtb-").tempdir().unwrap();
        let dir = tmp.path().join("bed");
        let out = Command::new(TESTBED)
            .arg("up")
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
    fn run(&self, host: &str, args: &[&str]) -> Output {
        Command::new(TESTBED)
            .arg("run")
            .arg(&self.dir)
            .arg(host)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("scripts/testbed run")
    }

    fn data_dir(&self, host: &str) -> PathBuf {
        self.dir.join(format!("omd-{host}"))
    }

    /// Starts `omd` in `host`: the real libvirt of that host, the simulators in DIR/sim.
    fn start_omd(&mut self, host: &str, addr: &str) {
        let data = self.data_dir(host);
        std::fs::create_dir_all(&data).unwrap();
        let log = std::fs::File::create(self.dir.join(format!("omd-{host}.log"))).unwrap();
        let sim = self.dir.join("sim");
        let listen = format!("{addr}:1215");
        let mut args: Vec<String> = [
            env!("CARGO_BIN_EXE_omd"),
            "--node-name",
            host,
            "--listen",
            &listen,
            "--data-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(data.display().to_string());
        args.extend(["--ssh-dir".into(), data.join("ssh").display().to_string()]);
        args.extend(["--drivers", "sim", "--sim-dir"].map(String::from));
        args.push(sim.display().to_string());
        if host != "w" {
            args.extend(["--real-libvirt", "--report-vg", "data=5G"].map(String::from));
        }
        let child = Command::new(TESTBED)
            .arg("run")
            .arg(&self.dir)
            .arg(host)
            .args(&args)
            .env("OMRAFT_SIM_SYNC_MS", "1000")
            // A watchdog reset takes the whole host down, guests included.
            .env("OMRAFT_SIM_RESET", "netns")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start omd in the bed");
        self.omd.push(child);
    }

    /// omctl inside `host`, against that host's daemon.
    fn omctl(&self, host: &str, args: &[&str]) -> Output {
        let server = format!("unix:{}", self.data_dir(host).join("omd.sock").display());
        let mut all = vec![env!("CARGO_BIN_EXE_omctl"), "--server", &server];
        all.extend_from_slice(args);
        self.run(host, &all)
    }

    /// omctl that must succeed; its stdout.
    fn ok(&self, host: &str, args: &[&str]) -> String {
        let out = self.omctl(host, args);
        assert!(
            out.status.success(),
            "omctl {args:?} on {host}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn virsh(&self, host: &str, args: &[&str]) -> String {
        virsh(&self.dir, host, args)
    }

    fn running(&self, host: &str) -> bool {
        running(&self.dir, host)
    }

    /// Pulls the plug on `host`: every process in it killed (omd, libvirtd, the guest), its
    /// simulated DRBD down.
    fn power_off(&self, host: &str) {
        let ns = format!("omtb-{host}");
        let pids = Command::new("ip").args(["netns", "pids", &ns]).output().unwrap();
        let pids: Vec<String> = String::from_utf8_lossy(&pids.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        assert!(!pids.is_empty(), "nothing runs in {ns}");
        assert!(Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .status()
            .unwrap()
            .success());
        let off = Command::new(env!("CARGO_BIN_EXE_omsim"))
            .args(["virsh", "--node", host, "poweroff"])
            .env("OMRAFT_SIM_DIR", self.dir.join("sim"))
            .status()
            .unwrap();
        assert!(off.success());
    }

    /// The guest's console lines on `host`: `(counter, uptime seconds)`.
    fn console(&self, host: &str) -> Vec<(u64, f64)> {
        let log = std::fs::read_to_string(self.dir.join(host).join("log/qemu/kvm1.console.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| {
                let field = |k: &str| l.split_whitespace().find_map(|f| f.strip_prefix(k));
                Some((field("counter=")?.parse().ok()?, field("uptime=")?.parse().ok()?))
            })
            .collect()
    }

    /// The omd logs' tails and the bed's status, for a failure's message.
    fn logs(&self) -> String {
        HOSTS
            .iter()
            .map(|(h, _)| {
                let log = std::fs::read_to_string(self.dir.join(format!("omd-{h}.log"))).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                format!(
                    "---- omd {h} ----\n{}",
                    lines[lines.len().saturating_sub(25)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn virsh(dir: &Path, host: &str, args: &[&str]) -> String {
    let out = Command::new(TESTBED)
        .arg("virsh")
        .arg(dir)
        .arg(host)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("scripts/testbed virsh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the guest runs on `host`, as its libvirtd says (a dead libvirtd: no).
fn running(dir: &Path, host: &str) -> bool {
    virsh(dir, host, &["list", "--name"])
        .lines()
        .any(|l| l.trim() == "kvm1")
}

/// Samples both data hosts' libvirt every 100 ms until stopped; then the moments the guest ran
/// on both.
struct Poller {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<f64>)>,
}

impl Poller {
    fn start(dir: &Path) -> Poller {
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
    fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (samples, both) = self.thread.join().unwrap();
        assert!(samples > 10, "the poller sampled only {samples} times");
        assert!(both.is_empty(), "the guest ran on n1 and n2 at once, at {both:?} s");
    }
}

/// One bed at a time on a machine.
static ONE_BED: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Drop for Bed {
    fn drop(&mut self) {
        for c in &mut self.omd {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new(TESTBED).arg("down").arg(&self.dir).status();
    }
}

/// Polls `f` every 200 ms for at most `secs` seconds.
fn until(secs: u64, what: &str, bed: &Bed, mut f: impl FnMut() -> bool) {
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

/// The guest's domain XML (kernel and initramfs cached between runs).
fn guest_xml(dir: &Path) -> PathBuf {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("testbed-guest");
    let out = Command::new(GUEST).arg("xml").arg(&cache).arg("kvm1").output().unwrap();
    assert!(
        out.status.success(),
        "testbed-guest: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = dir.join("kvm1.xml");
    std::fs::write(&xml, &out.stdout).unwrap();
    xml
}

/// The bed with a formed cluster (n1 founder, n2 joined, w a witness), or why not.
fn cluster() -> Option<Bed> {
    let mut bed = match Bed::up() {
        Ok(bed) => bed,
        Err(why) => {
            eprintln!("SKIPPED (the test bed cannot be built here): {why}");
            return None;
        }
    };
    for (host, addr) in HOSTS {
        bed.start_omd(host, addr);
    }
    until(30, "the daemons answering", &bed, || {
        HOSTS.iter().all(|(h, _)| bed.omctl(h, &["mon"]).status.success())
    });
    let token = bed.ok("n1", &["daemon", "auth", "--role", "join"]);
    for (host, witness) in [("n2", false), ("w", true)] {
        let mut args = vec!["cluster", "join", "--node", "10.77.0.11:1215", "--token", token.trim()];
        if witness {
            args.push("--witness");
        }
        bed.ok(host, &args);
    }
    Some(bed)
}

#[test]
fn the_tutorial_replayed_on_real_hosts_with_a_real_guest_and_live_migration() {
    let _one = ONE_BED.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bed) = cluster() else { return };
    guest_on_n1(&bed);
    let ls = |on1: &str, on2: &str| {
        format!("OBJECT         NODE  AVAIL\ndemo/svc/kvm1  n1    {on1}\ndemo/svc/kvm1  n2    {on2}\n")
    };
    let tree = bed.ok("n1", &["demo/svc/kvm1", "instance", "status", "-r"]);
    assert!(tree.contains("container#1") && tree.contains("kvm kvm1"), "{tree}");

    // switch --live: the counter goes on on n2, no reboot, no gap of 2 s.
    let out = bed.ok("n1", &["demo/svc/kvm1", "switch", "--live", "--wait", "--time", "120s"]);
    assert!(
        out.lines().nth(1).is_some_and(|l| l.trim_end().ends_with(" -")),
        "{out}"
    );
    assert_eq!(bed.ok("n1", &["demo/svc/kvm1", "instance", "ls"]), ls("down", "up"));
    assert!(bed.running("n2") && !bed.running("n1"));
    until(10, "console lines on n2", &bed, || bed.console("n2").len() >= 3);
    let (before, after) = (bed.console("n1"), bed.console("n2"));
    let (last, first) = (before.last().unwrap(), after.first().unwrap());
    assert_eq!(first.0, last.0 + 1, "the counter continues: {last:?} then {first:?}");
    assert!(first.1 - last.1 < 2.0, "a gap of {} s", first.1 - last.1);

    // switch: stopped on n2, booted again on n1.
    let seen_on_n1 = bed.console("n1").len();
    let out = bed.ok("n2", &["demo/svc/kvm1", "switch", "--wait", "--time", "120s"]);
    assert!(
        out.lines().nth(1).is_some_and(|l| l.trim_end().ends_with(" -")),
        "{out}"
    );
    assert_eq!(bed.ok("n2", &["demo/svc/kvm1", "instance", "ls"]), ls("up", "down"));
    assert!(bed.running("n1") && !bed.running("n2"));
    until(60, "the guest booting again on n1", &bed, || {
        // New lines (libvirt may truncate the console file at the new boot, or append to it).
        let now = bed.console("n1");
        let fresh = if now.len() >= seen_on_n1 {
            &now[seen_on_n1..]
        } else {
            &now[..]
        };
        fresh.iter().any(|(c, up)| *c <= 3 && *up < 15.0)
    });
    let violations = std::fs::read_to_string(bed.dir.join("sim/violations.log")).unwrap_or_default();
    assert_eq!(violations, "");
}

/// The tutorial from the cluster name to its guest running on n1, reported up there.
fn guest_on_n1(bed: &Bed) {
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
    let xml = guest_xml(&bed.dir);
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

/// A fault on the bed with the service's guest on n1: the guest must end up running on
/// `expect` only, and never on both hosts meanwhile.
fn fault(what: &str, expect: &str, act: impl FnOnce(&Bed), after: impl FnOnce(&Bed)) {
    let _one = ONE_BED.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bed) = cluster() else { return };
    guest_on_n1(&bed);
    let poller = Poller::start(&bed.dir);
    act(&bed);
    let other = if expect == "n1" { "n2" } else { "n1" };
    if expect == "n1" {
        std::thread::sleep(Duration::from_secs(15));
    }
    until(90, &format!("{what}: the guest on {expect} only"), &bed, || {
        bed.running(expect) && !bed.running(other)
    });
    until(60, &format!("{what}: the guest's console on {expect}"), &bed, || {
        !bed.console(expect).is_empty()
    });
    poller.finish();
    let violations = std::fs::read_to_string(bed.dir.join("sim/violations.log")).unwrap_or_default();
    assert_eq!(violations, "");
    after(&bed);
}

/// Whether the simulated watchdog reset `host`.
fn reset_by_watchdog(bed: &Bed, host: &str) -> bool {
    std::fs::read_to_string(bed.dir.join("sim/watchdog.log"))
        .unwrap_or_default()
        .contains(&format!("watchdog reset {host} "))
}

#[test]
fn power_loss_of_the_active_host_boots_the_guest_on_the_other() {
    fault("power loss of n1", "n2", |bed| bed.power_off("n1"), |_| {});
}

#[test]
fn a_network_cut_of_the_active_host_fences_it_before_the_other_starts_the_guest() {
    fault(
        "n1's network cut",
        "n2",
        |bed| {
            std::fs::write(bed.dir.join("sim/netcut-n1"), "").unwrap();
            let out = bed.run("n1", &["ip", "link", "set", "eth0", "down"]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        },
        // Its lease ran out: it destroyed its guest, then its watchdog reset it.
        |bed| assert!(reset_by_watchdog(bed, "n1")),
    );
}

#[test]
fn a_hung_daemon_on_the_active_host_is_reset_by_its_watchdog() {
    fault(
        "n1's omd hung",
        "n2",
        |bed| {
            let pid = bed.omd[0].id().to_string();
            assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
        },
        |bed| {
            assert!(
                reset_by_watchdog(bed, "n1"),
                "the hung node was not reset by its watchdog"
            )
        },
    );
}

#[test]
fn losing_the_witness_moves_nothing() {
    fault(
        "the witness lost",
        "n1",
        |bed| bed.power_off("w"),
        |bed| {
            assert!(!reset_by_watchdog(bed, "n1") && !reset_by_watchdog(bed, "n2"));
            assert_eq!(bed.console("n2"), vec![], "the guest never ran on n2");
        },
    );
}
