//! The one harness of real `omd` processes, for the tests and the benches (which include
//! `tests/support` with `#[path]`): `omd` as cargo built it, started with its name, listen
//! address, data directory (`DIR`), an ssh directory inside it and whatever else the caller
//! gives (`Launch`: arguments, environment, a command to run it under), each kept for restarts;
//! its stdout and stderr appended to `DIR.log`; SIGKILLed when dropped. The real `omctl` and
//! `omsim` beside it. The tests' defaults are `Omd::spawn_with`'s; the benches' cluster
//! (`bench/harness.rs`), the partition tests' namespaced nodes (`tests/partition/harness.rs`)
//! and the real-host test bed (`tests/bed/bed.rs`) are thin layers on `Omd::launch`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::*;

pub const OMD: &str = env!("CARGO_BIN_EXE_omd");
pub const OMCTL: &str = env!("CARGO_BIN_EXE_omctl");
pub const OMSIM: &str = env!("CARGO_BIN_EXE_omsim");

/// What an `omd` is started with beyond its name, address and directories.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub args: Vec<String>,
    /// Set in its environment (nothing else of ours is: the tests set no variable in their own).
    pub env: Vec<(String, String)>,
    /// A command to run it under, `omd` and its arguments following (the test bed's
    /// `scripts/testbed run DIR HOST`, which execs it in the host); empty: run directly.
    pub wrapper: Vec<String>,
    /// An installed `omd` to run instead of cargo's, with `args` only: its name, address and
    /// directories come from its configuration file (the test bed's package).
    pub installed: Option<String>,
}

/// An `omd` process, SIGKILLed on drop.
pub struct Omd {
    pub name: String,
    /// Its data directory; its log is beside it, `DIR.log`.
    pub dir: PathBuf,
    pub addr: String,
    pub child: Option<Child>,
    /// Why it is not running, once it stopped (`kill9`, or as the caller records it).
    pub exited: Option<String>,
    launch: Launch,
}

impl Omd {
    /// Starts `omd` as node `name` listening on `addr`, with the data directory `dir`.
    pub fn launch(name: &str, dir: &Path, addr: &str, launch: Launch) -> Result<Omd, String> {
        let mut o = Omd {
            name: name.into(),
            dir: dir.into(),
            addr: addr.into(),
            child: None,
            exited: None,
            launch,
        };
        o.try_start()?;
        Ok(o)
    }

    /// A test's `omd` as node `name` in `root/NAME`: heartbeat 100 ms, election timeout
    /// 600 ms and, with the simulated drivers, a 1.5 s initial DRBD resync.
    pub fn spawn(name: &str, root: &Path, addr: &str) -> Omd {
        Omd::spawn_with(name, root, addr, &[])
    }

    /// `spawn` with extra arguments, kept for restarts.
    pub fn spawn_with(name: &str, root: &Path, addr: &str, extra: &[&str]) -> Omd {
        let mut args: Vec<String> = ["--heartbeat-ms", "100", "--election-timeout-ms", "600"]
            .map(String::from)
            .into();
        args.extend(extra.iter().map(|s| s.to_string()));
        let launch = Launch {
            args,
            env: vec![("OMRAFT_SIM_SYNC_MS".into(), "1500".into())],
            wrapper: vec![],
            installed: None,
        };
        Omd::launch(name, &root.join(name), addr, launch).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.with_extension("log")
    }

    /// Starts the process again (it must have stopped), its output appended to its log.
    pub fn try_start(&mut self) -> Result<(), String> {
        if self.child.is_some() && self.try_wait().is_none() {
            return Err(format!("omd {} is still running", self.name));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let err = log.try_clone().map_err(|e| format!("{}: {e}", path.display()))?;
        let omd = self.launch.installed.as_deref().unwrap_or(OMD);
        let (program, wrapped): (&str, Vec<&str>) = match self.launch.wrapper.split_first() {
            Some((w, rest)) => (w, rest.iter().map(String::as_str).chain([omd]).collect()),
            None => (omd, vec![]),
        };
        let mut cmd = Command::new(program);
        cmd.args(wrapped);
        if self.launch.installed.is_none() {
            cmd.args(["--node-name", &self.name, "--listen", &self.addr, "--data-dir"])
                .arg(&self.dir)
                // Never the machine's own /root/.ssh.
                .arg("--ssh-dir")
                .arg(self.dir.join("ssh"));
        }
        let child = cmd
            .args(&self.launch.args)
            .env_remove("OMD_ADVERTISE")
            .envs(self.launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {program} for {}: {e}", self.name))?;
        self.child = Some(child);
        self.exited = None;
        Ok(())
    }

    /// `try_start`, for a test: a failure to start fails it.
    pub fn start(&mut self) {
        self.try_start().unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL (a power loss) and reap; nothing if it is not running.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let status = c.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            self.exited = Some(format!("SIGKILLed ({status})"));
        }
    }

    /// Its exit status if it has exited (reaped: `child` is then `None`).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// SIGTERM and wait for the exit status (bounded).
    pub fn term(&mut self) -> ExitStatus {
        assert!(self.signal("TERM"), "omd {} is not running", self.name);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Some(status) = self.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        panic!("omd {} did not exit within 10 s of SIGTERM", self.name);
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`...) to the running process; false if it is gone.
    pub fn signal(&self, signal: &str) -> bool {
        let Some(pid) = self.pid() else { return false };
        Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Whether the process still runs (not killed by its simulated watchdog).
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn server(&self) -> String {
        format!("unix:{}", self.dir.join("omd.sock").display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Omd {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the real omctl against `server`.
pub fn omctl(server: &str, args: &[&str]) -> Output {
    Command::new(OMCTL)
        .arg("--server")
        .arg(server)
        .args(args)
        .env_remove("OMCTL_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run omctl")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Three daemons: n2 joined to n1, and n3 as a witness, with the real omctl.
pub async fn three(root: &Path) -> Vec<Omd> {
    three_with(root, &[]).await
}

/// `three` with extra `omd` arguments for every node (e.g. the simulated drivers).
pub async fn three_with(root: &Path, common: &[&str]) -> Vec<Omd> {
    // n1 and n2 are data nodes with a 5 GiB volume group `data`; n3 joins as the witness.
    // Each declares its memory: the machine's, reported when it changes enough, would add
    // entries to the log at moments no test chose.
    let nodes: Vec<Omd> = (1..=3)
        .map(|i| {
            let mut extra: Vec<&str> = common.to_vec();
            extra.extend(["--report-mem", "4G"]);
            if i < 3 {
                extra.extend(["--report-vg", "data=5G"]);
            }
            Omd::spawn_with(&format!("n{i}"), root, &format!("127.0.0.1:{}", free_port()), &extra)
        })
        .collect();
    let c1 = local_client(&nodes[0].dir).await;
    wait_leader(&c1, 1).await;
    for n in &nodes[1..] {
        local_client(&n.dir).await;
    }
    for n in &nodes[1..] {
        // A join token works once: one per joiner, bound to its name.
        let token = ok(
            &nodes[0].server(),
            &["daemon", "auth", "--role", "join", "--node", &n.name],
        )
        .trim()
        .to_string();
        let mut args = vec!["cluster", "join", "--node", &nodes[0].addr, "--token", &token];
        if n.name == "n3" {
            args.push("--witness");
        }
        let out = omctl(&n.server(), &args);
        assert!(out.status.success(), "{} join: {}\n{}", n.name, stderr(&out), n.log());
        assert!(stdout(&out).contains("\nJoined"), "{}", stdout(&out));
    }
    wait_leader(&c1, 3).await;
    nodes
}

/// Runs omctl, asserts success, returns stdout.
pub fn ok(server: &str, args: &[&str]) -> String {
    let out = omctl(server, args);
    assert!(out.status.success(), "omctl {args:?} failed: {}", stderr(&out));
    stdout(&out)
}

/// `omsim virsh --node NODE ARGS...` on the simulators in `sim`.
pub fn omsim_virsh(sim: &Path, node: &str, args: &[&str]) -> Output {
    Command::new(OMSIM)
        .args(["virsh", "--node", node])
        .args(args)
        .env("OMRAFT_SIM_DIR", sim)
        .output()
        .expect("run omsim")
}

/// Three daemons on the simulated drivers in `DIR/sim` (with `extra` arguments for each), and
/// pool `drbdvm` (drbd on `data`).
pub async fn sim_cluster(tmp: &Path, extra: &[&str]) -> (Vec<Omd>, PathBuf) {
    let sim = tmp.join("sim");
    let mut args = vec!["--drivers", "sim", "--sim-dir", sim.to_str().unwrap()];
    args.extend_from_slice(extra);
    let nodes = three_with(tmp, &args).await;
    let pool = ["--set", "pool#drbdvm.type=drbd", "--set", "pool#drbdvm.vg=data"];
    ok(
        &nodes[0].server(),
        &[&["cluster", "config", "update"][..], &pool].concat(),
    );
    (nodes, sim)
}

/// Runs omctl until it succeeds: what allocates a volume waits for the nodes' VG reports.
pub async fn until_ok(server: &str, args: &[&str]) {
    eventually(20, "the nodes' volume group reports", || async {
        omctl(server, args).status.success().then_some(())
    })
    .await;
}
