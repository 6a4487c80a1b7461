//! Real `omd` processes for tests: spawned on loopback ports, SIGKILLed when dropped, and
//! driven with the real `omctl` binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::*;

/// An `omd` process, SIGKILLed on drop.
pub struct Omd {
    pub name: String,
    pub dir: PathBuf,
    pub addr: String,
    pub child: Option<Child>,
    extra: Vec<String>,
}

impl Omd {
    pub fn spawn(name: &str, root: &Path, addr: &str) -> Omd {
        Omd::spawn_with(name, root, addr, &[])
    }

    /// Starts `omd` with extra arguments, kept for restarts.
    pub fn spawn_with(name: &str, root: &Path, addr: &str, extra: &[&str]) -> Omd {
        let dir = root.join(name);
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut o = Omd {
            name: name.into(),
            dir,
            addr: addr.into(),
            child: None,
            extra,
        };
        o.start();
        o
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_omd"))
            // With --drivers sim, a short initial DRBD resync.
            .env("OMRAFT_SIM_SYNC_MS", "1500")
            .args([
                "--node-name",
                &self.name,
                "--listen",
                &self.addr,
                "--heartbeat-ms",
                "100",
            ])
            .args(["--election-timeout-ms", "600", "--data-dir"])
            .arg(&self.dir)
            // Never the machine's own /root/.ssh.
            .arg("--ssh-dir")
            .arg(self.dir.join("ssh"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn omd");
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status (bounded).
    pub fn term(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let ok = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        for _ in 0..200 {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        panic!("omd {} did not exit within 10 s of SIGTERM", self.name);
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the running process; false if it is gone.
    pub fn signal(&self, signal: &str) -> bool {
        let Some(c) = &self.child else { return false };
        Command::new("kill")
            .args([&format!("-{signal}"), &c.id().to_string()])
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
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Omd {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the real omctl against `server`.
pub fn omctl(server: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_omctl"))
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
    let nodes: Vec<Omd> = (1..=3)
        .map(|i| {
            let mut extra: Vec<&str> = common.to_vec();
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
    Command::new(env!("CARGO_BIN_EXE_omsim"))
        .args(["virsh", "--node", node])
        .args(args)
        .env("OMRAFT_SIM_DIR", sim)
        .output()
        .expect("run omsim")
}
