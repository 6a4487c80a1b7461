//! The partition tests' harness: three real `omd` (n1 and n2 data nodes, w the witness), each
//! in a network namespace of its own, joined by veth pairs to a bridge that lives in a fourth
//! namespace (nothing is created in the machine's own namespace), with the simulated drivers
//! in one shared directory and the fast timing profile (heartbeat 100 ms, election timeout
//! 300 ms, lease 1.5 s with a 0.3 s drift and 150 ms renewals, simulated watchdog 0.7 s).
//!
//! Faults: Raft cuts by packet drops (nftables in the receiving node's namespace: a node
//! isolated, a pair cut from each other, one direction dropped), heal; power-off (every
//! process in the node's namespace SIGKILLed, then the simulator's power cut) and power-on;
//! DRBD cuts (the simulator's `SIM_DIR/netcut-NODE` flag); SIGSTOP and SIGCONT of a daemon; a
//! slow simulated live migration (`SIM_DIR/migrate-ms`). A node reset by its simulated
//! watchdog boots again (its daemon is restarted) as a real machine would, unless the test
//! powered it off.
//!
//! A poller samples the simulators every 100 ms for the whole test: the guest running on two
//! nodes, or DRBD Primary on two nodes while no node's applied state shows a live switch in
//! its dual-primary window, is recorded and fails the test at `finish`, as does anything in the
//! DRBD simulator's `violations.log`.
//!
//! Everything is removed when the cluster is dropped, failed test or not: the daemons and
//! every other process in the namespaces are killed by pid, then the namespaces deleted.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omraft::pb;

use crate::support;
use crate::support::omd::{omsim_virsh, stderr, stdout, Launch, Omd};

pub const SERVICE: &str = "demo/svc/kvm1";
/// The port every daemon listens on, at its namespace's address.
pub const PORT: u16 = 1215;
/// The nodes, in order: n1 and n2 hold data, w is the witness.
pub const NAMES: [&str; 3] = ["n1", "n2", "w"];
/// The live-switch phases in which both data nodes may be Primary.
pub const DUAL_PHASES: [&str; 4] = ["DualPrimary", "Migrating", "Finalize", "Abort"];

const OMCTL: &str = env!("CARGO_BIN_EXE_omctl");

/// One test at a time: each runs three daemons, their simulators and a poller on a small
/// machine, and timings are the fast profile's.
/// (An async lock: it is held across the test's awaits, and a failed test does not poison it.)
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

// ---------------------------------------------------------------------------------------------
// Commands

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn must(args: &[&str]) -> String {
    run(args).unwrap_or_else(|e| panic!("{e}"))
}

/// The partition tests cannot run without root, `ip` and `nft`: they fail, saying so.
fn check_prerequisites() {
    let uid = run(&["id", "-u"]).unwrap_or_default();
    assert_eq!(
        uid.trim(),
        "0",
        "the partition tests need root (they create network namespaces and nftables rules): run them as root"
    );
    assert!(
        run(&["ip", "-V"]).is_ok(),
        "the partition tests need `ip` (iproute2): install iproute2"
    );
    assert!(
        run(&["nft", "--version"]).is_ok(),
        "the partition tests need `nft`: install nftables"
    );
}

/// Runs the real omctl against `server`, killed after `secs` seconds (then `None`).
pub fn omctl_within(server: &str, args: &[&str], secs: f64) -> Option<Output> {
    let mut child = Command::new(OMCTL)
        .arg("--server")
        .arg(server)
        .args(args)
        .env_remove("OMCTL_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run omctl");
    let t = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().ok();
        }
        if t.elapsed() >= Duration::from_secs_f64(secs) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Network namespaces

/// Pids of the processes in network namespace `ns`.
fn ns_pids(ns: &str) -> Vec<String> {
    run(&["ip", "netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// SIGKILLs every process in `ns` until none is left (bounded: 10 s).
fn kill_all_in(ns: &str) -> Result<(), String> {
    let t = Instant::now();
    loop {
        let left = ns_pids(ns);
        if left.is_empty() {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(10) {
            return Err(format!("still running in {ns}: {left:?}"));
        }
        // Some exit meanwhile (a simulator command): a failed kill of one is expected.
        let _ = Command::new("kill").arg("-KILL").args(&left).status();
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Namespaces a killed earlier run of this binary left behind (`omp-PID-...` of a pid that
/// is gone): their processes killed, the namespaces deleted.
fn remove_stale() {
    let list = run(&["ip", "netns", "list"]).unwrap_or_default();
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = ns.strip_prefix("omp-").and_then(|r| r.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = kill_all_in(ns);
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

pub struct Host {
    pub name: String,
    pub ns: String,
    pub ip: String,
}

/// The namespaces of one test: `omp-PID-INDEX-{br,n1,n2,w}`, addresses 10.79.INDEX.11-13/24
/// (the addresses live only inside the test's namespaces).
pub struct Net {
    pub hosts: Vec<Host>,
    made: Vec<String>,
}

impl Net {
    pub fn new(index: u8) -> Net {
        check_prerequisites();
        remove_stale();
        let prefix = format!("omp-{}-{index}", std::process::id());
        // Made before the first command, so that a failure halfway removes what was made.
        let mut net = Net {
            hosts: vec![],
            made: vec![],
        };
        let br = format!("{prefix}-br");
        must(&["ip", "netns", "add", &br]);
        net.made.push(br.clone());
        must(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &br, "link", "set", "br0", "up"]);
        for (i, name) in NAMES.iter().enumerate() {
            let ns = format!("{prefix}-{name}");
            must(&["ip", "netns", "add", &ns]);
            net.made.push(ns.clone());
            let ip = format!("10.79.{index}.{}", 11 + i);
            let veth = format!("v{name}");
            must(&[
                "ip", "-n", &br, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            must(&["ip", "-n", &br, "link", "set", &veth, "master", "br0", "up"]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            must(&["ip", "-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            // The chain the cuts add their drop rules to.
            must(&["ip", "netns", "exec", &ns, "nft", "add", "table", "inet", "omp"]);
            must(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "nft",
                "add",
                "chain",
                "inet",
                "omp",
                "input",
                "{ type filter hook input priority 0; policy accept; }",
            ]);
            net.hosts.push(Host {
                name: name.to_string(),
                ns,
                ip,
            });
        }
        net
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// `at` drops every packet from `from`.
    fn drop_at(&self, at: &str, from: &str) {
        let (ns, ip) = (&self.host(at).ns, &self.host(from).ip);
        must(&[
            "ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "omp", "input", "ip", "saddr", ip, "drop",
        ]);
    }

    /// `node` cut from every other node, both ways.
    pub fn isolate(&self, node: &str) {
        for other in NAMES.iter().filter(|n| **n != node) {
            self.drop_at(node, other);
            self.drop_at(other, node);
        }
    }

    /// `a` and `b` cut from each other, both ways (each still reaches the third).
    pub fn cut_pair(&self, a: &str, b: &str) {
        self.drop_at(a, b);
        self.drop_at(b, a);
    }

    /// Packets from `from` to `to` dropped; from `to` to `from` they pass.
    pub fn drop_one_way(&self, from: &str, to: &str) {
        self.drop_at(to, from);
    }

    /// Calls from `from` to `to`'s daemon lost: `to` drops `from`'s packets to the daemons'
    /// port. Calls from `to` to `from` run over connections of their own and pass, answers
    /// included.
    pub fn drop_calls(&self, from: &str, to: &str) {
        let (ns, ip) = (&self.host(to).ns, &self.host(from).ip);
        let port = PORT.to_string();
        must(&[
            "ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "omp", "input", "ip", "saddr", ip, "tcp", "dport",
            &port, "drop",
        ]);
    }

    /// Every drop rule removed.
    pub fn heal(&self) {
        for h in &self.hosts {
            must(&[
                "ip", "netns", "exec", &h.ns, "nft", "flush", "chain", "inet", "omp", "input",
            ]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            if let Err(e) = kill_all_in(ns) {
                eprintln!("partition harness: {e}");
            }
            if let Err(e) = run(&["ip", "netns", "del", ns]) {
                eprintln!("partition harness: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Daemons

/// One node: its namespace and its `omd` (the tests' one process harness, run as
/// `ip netns exec NS omd ...`, which execs: the child's pid is the daemon's).
pub struct Node {
    pub name: String,
    pub ns: String,
    pub ip: String,
    pub dir: PathBuf,
    omd: Omd,
    /// Powered off by the test: not booted again until `power_on`.
    pub off: bool,
}

impl Node {
    /// Starts node `name`'s daemon in its namespace, in the fast profile.
    fn boot(host: &Host, dir: PathBuf, sim: &Path) -> Node {
        let mut args: Vec<String> = ["--heartbeat-ms", "100", "--election-timeout-ms", "300"]
            .into_iter()
            .chain(["--watchdog-timeout-ms", "700", "--drivers", "sim", "--sim-dir"])
            .map(String::from)
            .collect();
        args.push(sim.display().to_string());
        if host.name != "w" {
            args.extend(["--report-vg", "data=5G"].map(String::from));
        }
        let launch = Launch {
            args,
            env: vec![
                ("OMRAFT_SIM_SYNC_MS".into(), "1500".into()),
                // A watchdog reset takes down every process of the node (its namespace).
                ("OMRAFT_SIM_RESET".into(), "netns".into()),
            ],
            wrapper: ["ip", "netns", "exec", &host.ns].map(String::from).into(),
            installed: None,
        };
        let listen = format!("{}:{PORT}", host.ip);
        let omd = Omd::launch(&host.name, &dir, &listen, launch).unwrap_or_else(|e| panic!("{e}"));
        Node {
            name: host.name.clone(),
            ns: host.ns.clone(),
            ip: host.ip.clone(),
            dir,
            omd,
            off: false,
        }
    }

    pub fn server(&self) -> String {
        self.omd.server()
    }

    pub fn pid(&self) -> Option<u32> {
        self.omd.pid()
    }

    pub fn log(&self) -> String {
        self.omd.log()
    }

    fn signal(&self, sig: &str) {
        assert!(self.omd.signal(sig), "{} has no daemon", self.name);
    }
}

// ---------------------------------------------------------------------------------------------
// What the cluster and the simulators say

/// The nodes on which the guest kvm1 runs, from the simulated libvirt's files: running and
/// not a live migration's incoming domain (paused until its copy ends).
pub fn running_nodes(sim: &Path) -> Vec<String> {
    NAMES
        .iter()
        .filter(|n| {
            let v: serde_json::Value = std::fs::read(sim.join(format!("hv-{n}.json")))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let d = &v["domains"]["kvm1"];
            d["running"].as_bool().unwrap_or(false) && d["incoming"].is_null()
        })
        .map(|n| n.to_string())
        .collect()
}

/// The nodes on which some DRBD resource is up and Primary, from the DRBD simulator's files.
pub fn primary_nodes(sim: &Path) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(sim.join("drbd")).into_iter().flatten().flatten() {
        if e.path().extension().is_none_or(|x| x != "json") {
            continue;
        }
        let v: serde_json::Value = std::fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if let Some(nodes) = v["nodes"].as_object() {
            for (n, x) in nodes {
                if x["up"].as_bool() == Some(true) && x["primary"].as_bool() == Some(true) {
                    out.insert(n.clone());
                }
            }
        }
    }
    out.into_iter().collect()
}

async fn client(server: &str, secs: f64) -> Result<omraft::cli::client::Client, String> {
    match tokio::time::timeout(
        Duration::from_secs_f64(secs),
        omraft::cli::client::connect(server, None, None, None),
    )
    .await
    {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}

/// The service's status as `server`'s applied state has it.
pub async fn instance_status(server: &str, secs: f64) -> Result<pb::InstanceStatusReply, String> {
    let mut c = client(server, secs).await?;
    let req = pb::ObjectRef { path: SERVICE.into() };
    match tokio::time::timeout(Duration::from_secs_f64(secs), c.instance_status(req)).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(e)) => Err(e.message().to_string()),
        Err(_) => Err("no answer".into()),
    }
}

pub async fn node_status(server: &str, secs: f64) -> Result<pb::NodeStatus, String> {
    let mut c = client(server, secs).await?;
    match tokio::time::timeout(Duration::from_secs_f64(secs), c.node_status(pb::NodeStatusRequest {})).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(e)) => Err(e.message().to_string()),
        Err(_) => Err("no answer".into()),
    }
}

/// One look at the cluster: the simulators' truth and each node's answers.
#[derive(Debug)]
pub struct Snapshot {
    /// Where the guest runs.
    pub running: Vec<String>,
    /// Where DRBD is Primary.
    pub primary: Vec<String>,
    /// Each node's view of the service (applied, hence committed, state).
    pub status: BTreeMap<String, Result<pb::InstanceStatusReply, String>>,
    /// Each node's Raft status.
    pub node: BTreeMap<String, Result<pb::NodeStatus, String>>,
}

impl Snapshot {
    /// One line per node: what the simulators and the node say.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "guest running on {:?}, DRBD Primary on {:?}\n",
            self.running, self.primary
        );
        for n in NAMES {
            let st = match &self.status[n] {
                Ok(s) => format!(
                    "placed on {:?}, switch phase {:?}, last switch error {:?}",
                    s.placement, s.migration_phase, s.last_migration_error
                ),
                Err(e) => format!("no status: {e}"),
            };
            let raft = match &self.node[n] {
                Ok(s) => format!(
                    "{} (leader {:?}, lease {:?} ms)",
                    s.raft_role, s.leader_name, s.lease_ms
                ),
                Err(e) => format!("no node status: {e}"),
            };
            out += &format!("  {n}: {raft}; {st}\n");
        }
        out
    }

    /// Every node's view of the service, or which node did not answer.
    pub fn views(&self) -> Result<Vec<(&str, &pb::InstanceStatusReply)>, String> {
        self.status
            .iter()
            .map(|(n, s)| match s {
                Ok(s) => Ok((n.as_str(), s)),
                Err(e) => Err(format!("{n} did not answer: {e}")),
            })
            .collect()
    }

    /// The leader every node names, if they all answer and agree.
    pub fn agreed_leader(&self) -> Result<String, String> {
        let leaders: Vec<String> = self
            .node
            .iter()
            .map(|(n, s)| match s {
                Ok(s) if !s.leader_name.is_empty() => Ok(s.leader_name.clone()),
                Ok(_) => Err(format!("{n} knows no leader")),
                Err(e) => Err(format!("{n} did not answer: {e}")),
            })
            .collect::<Result<_, _>>()?;
        if leaders.iter().all(|l| *l == leaders[0]) {
            Ok(leaders[0].clone())
        } else {
            Err(format!("the nodes name different leaders: {leaders:?}"))
        }
    }

    /// No live switch in progress on any node, and the guest runs on exactly one node.
    pub fn switch_over_and_guest_once(&self) -> Result<String, String> {
        for (n, s) in self.views()? {
            if !s.migration_phase.is_empty() {
                return Err(format!("{n}: live switch in phase {}", s.migration_phase));
            }
        }
        match self.running.as_slice() {
            [one] => Ok(one.clone()),
            other => Err(format!("the guest runs on {other:?}")),
        }
    }

    /// Settled: every node answers, agrees on the leader and the service's placement, no
    /// switch in progress, and the guest runs on exactly one node: the one it is placed on.
    pub fn settled(&self) -> Result<String, String> {
        let on = self.switch_over_and_guest_once()?;
        self.agreed_leader()?;
        for (n, s) in self.views()? {
            if s.placement != on {
                return Err(format!("{n}: placed on {:?}, the guest runs on {on}", s.placement));
            }
        }
        Ok(on)
    }

    /// Settled, and every node's committed instance status matches the simulators: the
    /// container up only where the guest runs, the volume up only where DRBD is Primary, and
    /// no peer shown other than Connected (nor a resync).
    pub fn reports_match_reality(&self) -> Result<String, String> {
        let on = self.settled()?;
        for (viewer, s) in self.views()? {
            for node in ["n1", "n2"] {
                let Some(i) = s.instances.iter().find(|i| i.node == node) else {
                    return Err(format!("{viewer}'s view has no instance on {node}"));
                };
                let avail = |rid: &str| {
                    i.resources
                        .iter()
                        .find(|r| r.rid == rid)
                        .map(|r| r.avail.clone())
                        .unwrap_or_else(|| "absent".into())
                };
                let up = |yes: bool| if yes { "up" } else { "down" };
                let want_ct = up(self.running.iter().any(|n| n == node));
                let want_vol = up(self.primary.iter().any(|n| n == node));
                if avail("container#1") != want_ct {
                    return Err(format!(
                        "{viewer}'s view: container#1 on {node} is {}, really {want_ct}",
                        avail("container#1")
                    ));
                }
                if avail("volume#data") != want_vol {
                    return Err(format!(
                        "{viewer}'s view: volume#data on {node} is {}, really {want_vol}",
                        avail("volume#data")
                    ));
                }
                for r in &i.resources {
                    if let Some(m) = r.messages.iter().find(|m| m.contains("peer ") || m.contains("resync")) {
                        return Err(format!("{viewer}'s view: {} on {node}: {m}", r.rid));
                    }
                }
            }
        }
        Ok(on)
    }
}

// ---------------------------------------------------------------------------------------------
// The poller

/// Samples the simulators every 100 ms in a thread of its own; see the module's comment.
pub struct Poller {
    stop: Arc<AtomicBool>,
    /// What it saw so far: shown by `Cluster::report` when a test fails before `finish`.
    events: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

/// The live-switch phases the answering nodes' applied states show.
async fn phases(servers: &[String]) -> Vec<String> {
    let mut set = tokio::task::JoinSet::new();
    for s in servers {
        let s = s.clone();
        set.spawn(async move { instance_status(&s, 0.3).await.ok().map(|r| r.migration_phase) });
    }
    let mut out = vec![];
    while let Some(r) = set.join_next().await {
        if let Ok(Some(p)) = r {
            out.push(p);
        }
    }
    out
}

fn dual(phases: &[String]) -> bool {
    phases.iter().any(|p| DUAL_PHASES.contains(&p.as_str()))
}

impl Poller {
    fn start(sim: PathBuf, servers: Vec<String>, t0: Instant) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let events = Arc::new(Mutex::new(vec![]));
        let seen = events.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("poller runtime");
            let mut samples = 0u64;
            let record = |e: String| seen.lock().unwrap_or_else(|e| e.into_inner()).push(e);
            while !flag.load(Ordering::SeqCst) {
                // The phases before and after the look: a window that ended between the two
                // would otherwise read as a violation.
                let before = rt.block_on(phases(&servers));
                let (running, primary) = (running_nodes(&sim), primary_nodes(&sim));
                let t = t0.elapsed().as_secs_f64();
                if running.len() > 1 {
                    record(format!("{t:.1} s: the guest runs on {}", running.join(" and ")));
                }
                if primary.len() > 1 && !dual(&before) {
                    let after = rt.block_on(phases(&servers));
                    if !dual(&after) {
                        record(format!(
                            "{t:.1} s: DRBD Primary on {} outside a committed dual-primary window \
                             (live-switch phases on the answering nodes: {before:?}, then {after:?})",
                            primary.join(" and ")
                        ));
                    }
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        Poller {
            stop,
            events,
            thread: Some(thread),
        }
    }

    fn finish(&mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let samples = self.thread.take().map(|t| t.join().unwrap_or(0)).unwrap_or_default();
        (samples, self.seen())
    }

    fn seen(&self) -> Vec<String> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.finish();
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster

/// Three nodes in their namespaces; dropped in field order: the poller, the daemons, the
/// namespaces (with whatever still runs in them), then the directory.
pub struct Cluster {
    poller: Option<Poller>,
    pub nodes: Vec<Node>,
    pub net: Net,
    pub sim: PathBuf,
    t0: Instant,
    timeline: Vec<String>,
    tmp: tempfile::TempDir,
}

impl Cluster {
    /// The cluster formed (n1 founds it, n2 joins, w joins as the witness), the fast lease
    /// timings set and pool `drbdvm` (drbd on `data`) declared. `index` names the test's
    /// namespaces.
    pub async fn form(index: u8) -> Cluster {
        let net = Net::new(index);
        let tmp = tempfile::Builder::new().prefix("omp-").tempdir().unwrap();
        let sim = tmp.path().join("sim");
        std::fs::create_dir_all(&sim).unwrap();
        let nodes = net
            .hosts
            .iter()
            .map(|h| Node::boot(h, tmp.path().join(&h.name), &sim))
            .collect();
        let c = Cluster {
            poller: None,
            nodes,
            net,
            sim,
            t0: Instant::now(),
            timeline: vec![],
            tmp,
        };
        let c1 = support::local_client(&c.nodes[0].dir).await;
        support::wait_leader(&c1, 1).await;
        for n in &c.nodes[1..] {
            support::local_client(&n.dir).await;
        }
        let n1 = c.server("n1");
        let founder = format!("{}:1215", c.nodes[0].ip);
        for name in ["n2", "w"] {
            let token = c.ok("n1", &["daemon", "auth", "--role", "join", "--node", name]);
            let mut args = vec!["cluster", "join", "--node", &founder, "--token", token.trim()];
            if name == "w" {
                args.push("--witness");
            }
            c.ok(name, &args);
        }
        support::wait_leader(&c1, 3).await;
        support::omd::ok(
            &n1,
            &[
                "cluster",
                "config",
                "update",
                "--set",
                "pool#drbdvm.type=drbd",
                "--set",
                "pool#drbdvm.vg=data",
                "--set",
                "lease.duration=1500ms",
                "--set",
                "lease.drift=300ms",
                "--set",
                "lease.renew=150ms",
            ],
        );
        c
    }

    /// `form`, then the service `demo/svc/kvm1` (`orchestrate=ha`, a 1G replicated volume)
    /// provisioned, its guest kvm1 defined and started on n1 by hand and declared as its
    /// container, captured by the cluster; then the poller starts.
    pub async fn with_guest(index: u8) -> Cluster {
        let mut c = Cluster::form(index).await;
        let n1 = c.server("n1");
        let create = [
            SERVICE,
            "create",
            "--kw",
            "nodes={clusternodes}",
            "--kw",
            "orchestrate=ha",
            "--kw",
            "volume#data.size=1G",
            "--kw",
            "volume#data.shared=true",
        ];
        // Allocating the volume waits for the data nodes' volume group reports.
        support::eventually(20, "the nodes' volume group reports", || {
            let ok = support::omd::omctl(&n1, &create).status.success();
            async move { ok.then_some(()) }
        })
        .await;
        c.ok("n1", &[SERVICE, "provision", "--wait", "--time", "60s"]);
        let xml = c.tmp.path().join("kvm1.xml");
        std::fs::write(&xml, support::KVM1_XML).unwrap();
        for args in [&["define", xml.to_str().unwrap()][..], &["start", "kvm1"]] {
            let out = omsim_virsh(&c.sim, "n1", args);
            assert!(out.status.success(), "virsh {args:?}: {}", stderr(&out));
        }
        c.ok("n1", &support::KVM1_CONTAINER);
        c.until(20.0, "the guest captured, running on n1 and reported up there", |s| {
            let (_, v) = s.views()?.into_iter().find(|(n, _)| *n == "n2").ok_or("no n2")?;
            let n1 = v.instances.iter().find(|i| i.node == "n1").ok_or("no n1 instance")?;
            let ct = n1
                .resources
                .iter()
                .find(|r| r.rid == "container#1")
                .ok_or("not captured")?;
            (ct.avail == "up" && s.running == ["n1"])
                .then_some(())
                .ok_or(format!("container#1 {} on n1, running on {:?}", ct.avail, s.running))
        })
        .await;
        c.start_poller();
        c
    }

    pub fn start_poller(&mut self) {
        let servers = self.nodes.iter().map(|n| n.server()).collect();
        self.poller = Some(Poller::start(self.sim.clone(), servers, self.t0));
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn server(&self, name: &str) -> String {
        self.node(name).server()
    }

    /// Notes a step on the test's timeline (shown when it fails, and on stderr).
    pub fn note(&mut self, what: &str) {
        let line = format!("{:6.1} s  {what}", self.t0.elapsed().as_secs_f64());
        eprintln!("partition: {line}");
        self.timeline.push(line);
    }

    /// omctl on `name`'s daemon, which must succeed within 30 s; its stdout.
    pub fn ok(&self, name: &str, args: &[&str]) -> String {
        match omctl_within(&self.server(name), args, 30.0) {
            Some(out) if out.status.success() => stdout(&out),
            Some(out) => panic!("omctl {args:?} on {name}: {}\n{}", stderr(&out), self.report()),
            None => panic!("omctl {args:?} on {name}: no answer within 30 s\n{}", self.report()),
        }
    }

    // --- faults ------------------------------------------------------------------------------

    /// Pulls the plug: every process of the node killed, then the simulator's power cut
    /// (its guests and DRBD down).
    pub fn power_off(&mut self, name: &str) {
        self.note(&format!("power off {name}"));
        let node = self.node_mut(name);
        node.off = true;
        let ns = node.ns.clone();
        node.omd.kill9();
        kill_all_in(&ns).unwrap_or_else(|e| panic!("{e}"));
        let out = omsim_virsh(&self.sim, name, &["poweroff"]);
        assert!(out.status.success(), "omsim virsh poweroff: {}", stderr(&out));
    }

    pub fn power_on(&mut self, name: &str) {
        self.note(&format!("power on {name}"));
        let node = self.node_mut(name);
        node.off = false;
        node.omd.start();
    }

    pub fn isolate(&mut self, name: &str) {
        self.note(&format!("Raft: {name} isolated (packet drops both ways)"));
        self.net.isolate(name);
    }

    pub fn cut_pair(&mut self, a: &str, b: &str) {
        self.note(&format!("Raft: {a} and {b} cut from each other (packet drops)"));
        self.net.cut_pair(a, b);
    }

    pub fn drop_one_way(&mut self, from: &str, to: &str) {
        self.note(&format!("Raft: packets from {from} to {to} dropped (not back)"));
        self.net.drop_one_way(from, to);
    }

    /// `from`'s calls to `to` lost; `to`'s calls to `from` answered (`Net::drop_calls`).
    pub fn drop_calls(&mut self, from: &str, to: &str) {
        self.note(&format!("Raft: calls from {from} to {to} lost (not back)"));
        self.net.drop_calls(from, to);
    }

    pub fn heal(&mut self) {
        self.note("Raft: healed (every drop rule removed)");
        self.net.heal();
    }

    /// DRBD: every connection of `name` cut (`SIM_DIR/netcut-NAME`), or restored.
    pub fn drbd_cut(&mut self, name: &str, cut: bool) {
        let flag = self.sim.join(format!("netcut-{name}"));
        if cut {
            self.note(&format!("DRBD: {name}'s links cut"));
            std::fs::write(flag, "").unwrap();
        } else {
            self.note(&format!("DRBD: {name}'s links back"));
            let _ = std::fs::remove_file(flag);
        }
    }

    pub fn sigstop(&mut self, name: &str) {
        self.note(&format!("SIGSTOP {name}'s omd"));
        self.node(name).signal("STOP");
    }

    pub fn sigcont(&mut self, name: &str) {
        self.note(&format!("SIGCONT {name}'s omd"));
        self.node(name).signal("CONT");
    }

    /// Simulated live migrations (the memory copy) take `ms` from now on.
    pub fn set_migrate_ms(&mut self, ms: u64) {
        self.note(&format!("simulated live migrations take {ms} ms"));
        std::fs::write(self.sim.join("migrate-ms"), ms.to_string()).unwrap();
    }

    /// Boots again every node whose daemon died without the test powering it off (its
    /// simulated watchdog reset it).
    pub fn revive(&mut self) {
        let dead: Vec<String> = self
            .nodes
            .iter_mut()
            .filter(|n| !n.off && n.omd.child.is_some())
            .filter_map(|n| n.omd.try_wait().map(|_| n.name.clone()))
            .collect();
        for name in dead {
            self.note(&format!("{name}'s daemon is gone (watchdog reset): booting it again"));
            let ns = self.node(&name).ns.clone();
            let _ = kill_all_in(&ns);
            self.node_mut(&name).omd.start();
        }
    }

    // --- waiting -----------------------------------------------------------------------------

    /// Sleeps, booting again what a watchdog reset meanwhile.
    pub async fn sleep(&mut self, secs: f64) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs_f64(secs) {
            self.revive();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn snapshot(&self) -> Snapshot {
        let s: Vec<String> = self.nodes.iter().map(|n| n.server()).collect();
        let (a, b, c) = tokio::join!(
            instance_status(&s[0], 1.0),
            instance_status(&s[1], 1.0),
            instance_status(&s[2], 1.0)
        );
        let (x, y, z) = tokio::join!(
            node_status(&s[0], 1.0),
            node_status(&s[1], 1.0),
            node_status(&s[2], 1.0)
        );
        let names = NAMES.map(String::from);
        Snapshot {
            running: running_nodes(&self.sim),
            primary: primary_nodes(&self.sim),
            status: names.clone().into_iter().zip([a, b, c]).collect(),
            node: names.into_iter().zip([x, y, z]).collect(),
        }
    }

    /// Polls `check` on snapshots every 100 ms until it holds, for at most `secs` seconds;
    /// fails with its last reason.
    pub async fn until<T>(
        &mut self,
        secs: f64,
        what: &str,
        mut check: impl FnMut(&Snapshot) -> Result<T, String>,
    ) -> T {
        let t = Instant::now();
        loop {
            self.revive();
            let snap = self.snapshot().await;
            let why = match check(&snap) {
                Ok(v) => return v,
                Err(why) => why,
            };
            if t.elapsed() >= Duration::from_secs_f64(secs) {
                panic!(
                    "not within {secs} s: {what}; last: {why}\n{}{}",
                    snap.summary(),
                    self.report()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Like `until`, but `check` must then keep holding for `hold` seconds in a row.
    /// Within 30 s of a heal, and for 2 s in a row: the guest runs once, where the service is
    /// placed, and no switch is in progress. Returns where it runs.
    pub async fn settles_after_heal(&mut self) -> String {
        self.until_stable(
            30.0,
            2.0,
            "after the heal: the guest once, where placed, no switch",
            |s| s.settled(),
        )
        .await
    }

    pub async fn until_stable<T>(
        &mut self,
        secs: f64,
        hold: f64,
        what: &str,
        mut check: impl FnMut(&Snapshot) -> Result<T, String>,
    ) -> T {
        let t = Instant::now();
        let mut since: Option<Instant> = None;
        loop {
            self.revive();
            let snap = self.snapshot().await;
            let why = match check(&snap) {
                Ok(v) => {
                    let s = *since.get_or_insert_with(Instant::now);
                    if s.elapsed() >= Duration::from_secs_f64(hold) {
                        return v;
                    }
                    String::from("(held, not yet long enough)")
                }
                Err(why) => {
                    since = None;
                    why
                }
            };
            if t.elapsed() >= Duration::from_secs_f64(secs) {
                panic!(
                    "not within {secs} s: {what} (for {hold} s in a row); last: {why}\n{}{}",
                    snap.summary(),
                    self.report()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // --- the end -----------------------------------------------------------------------------

    /// The DRBD simulator's split-brain log.
    pub fn violations(&self) -> String {
        std::fs::read_to_string(self.sim.join("violations.log")).unwrap_or_default()
    }

    /// Stops the poller; fails if it saw the guest on two nodes or two Primaries outside a
    /// committed dual-primary window, or if the simulators logged a violation.
    pub fn finish(&mut self) {
        let (samples, events) = self.poller.as_mut().map(|p| p.finish()).unwrap_or((100, vec![]));
        self.poller = None;
        assert!(
            samples > 10,
            "the poller sampled only {samples} times\n{}",
            self.report()
        );
        assert!(
            events.is_empty(),
            "the poller saw {} violations, the first:\n{}\n{}",
            events.len(),
            events.iter().take(20).cloned().collect::<Vec<_>>().join("\n"),
            self.report()
        );
        assert!(
            self.violations().is_empty(),
            "the DRBD simulator logged violations (violations.log)\n{}",
            self.report()
        );
    }

    /// The timeline, the simulators' logs and the daemons' last log lines, for a failure.
    pub fn report(&self) -> String {
        let mut out = format!("---- timeline ----\n{}\n", self.timeline.join("\n"));
        if let Some(p) = &self.poller {
            let seen = p.seen();
            if !seen.is_empty() {
                out += &format!("---- the poller saw ({}) ----\n", seen.len());
                out += &seen.iter().take(10).map(|e| format!("{e}\n")).collect::<String>();
            }
        }
        for f in ["violations.log", "watchdog.log"] {
            let text = std::fs::read_to_string(self.sim.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                out += &format!("---- {f} ({} lines) ----\n", lines.len());
                out += &lines.iter().take(10).map(|l| format!("{l}\n")).collect::<String>();
            }
        }
        for n in &self.nodes {
            let log = n.log();
            let lines: Vec<&str> = log.lines().collect();
            out += &format!(
                "---- omd {} ----\n{}\n",
                n.name,
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
        out
    }
}
