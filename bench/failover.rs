//! Failover benchmark: how long an `orchestrate=ha` KVM guest on a replicated DRBD volume takes
//! to run again on the surviving node after its node loses power, on the simulated drivers.
//!
//! `cargo bench --bench failover` starts three `omd` (the binaries cargo built for this bench)
//! in a temporary directory with `--drivers sim --sim-dir DIR/sim` and OMRAFT_SIM_SYNC_MS=500:
//! n1 and n2 data nodes reporting a 5 GiB volume group `data`, n3 joined as a witness. The Raft,
//! lease and watchdog timings come from a profile (`OMRAFT_FAILOVER_PROFILE`): `default` (the
//! defaults: heartbeat 100 ms, election timeout 250 ms, lease.renew 200ms, lease.duration 2400ms,
//! lease.drift 500ms, watchdog 1500 ms) or `fast` (100 ms, 300 ms, 150ms, 1500ms, 300ms,
//! 700 ms: every safety rule kept, margins thinner). Through the gRPC API it declares
//! the pool `drbdvm`, creates `demo/svc/kvm1` (orchestrate=ha, a shared 1G volume), provisions
//! it, defines and starts the guest `kvm1` on the placement node with `omsim virsh`, declares it
//! as `container#1` and waits until its XML is captured.
//!
//! Each trial pulls the plug on the node running the guest (SIGKILL to its `omd`, then
//! `omsim virsh poweroff`) and polls `omsim virsh list` on the other data node every 50 ms
//! until the guest runs there: the failover time. The survivors' logs break it down: the
//! leader's orchestrator deciding the failover (detection and lease wait), committing it, the
//! target's applier promoting the DRBD resource and starting the domain. The killed node is
//! then restarted, and the next trial starts once it is leased again and the service is up on
//! the survivor with both instances provisioned and in sync: trials alternate n1 and n2. The
//! killed node may be the Raft leader (n1 founded the cluster and leads it at first); then the
//! failover also waits for an election and the new leader's lease wait (README: leases).
//!
//! OMRAFT_FAILOVER_TRIALS sets the number of trials (default 10). It prints a table, with
//! reference figures for other cluster managers, then one JSON line starting with
//! `{"bench":"failover"`. Nothing is asserted about speed; a non-empty `DIR/sim/violations.log`
//! (two Primaries or a guest on two nodes) fails the run.
//!
//! Run without `--bench` (as `cargo test --all-targets` does), it is a smoke run of 1 trial.
//! Every daemon, restarted ones included, is stopped (SIGTERM, SIGKILL after 5 s) and the
//! directory removed on every exit, panics, SIGINT and SIGTERM included.

mod harness;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use harness::{
    client, epoch_secs, node_status, round, stamps, stats, status_text, within, Cluster, Launch, Omd, Stats,
};
use omraft::pb;

const DEFAULT_TRIALS: usize = 10;
const SMOKE_TRIALS: usize = 1;
const SERVICE: &str = "demo/svc/kvm1";
const DOMAIN: &str = "kvm1";
const DATA_NODES: [&str; 2] = ["n1", "n2"];
const WITNESS: &str = "n3";
const POOL: &str = "drbdvm";
/// The simulated initial DRBD resync, for the omd processes (inherited from this process).
const SIM_SYNC_MS: &str = "500";
const XML: &str = "<domain><name>kvm1</name><devices><disk><source dev='/dev/drbd0'/></disk></devices></domain>";
/// How often the surviving node's guests are listed while waiting for the failover.
const POLL: Duration = Duration::from_millis(50);
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);
const RELEASE_LIMIT: Duration = Duration::from_secs(60);
const SETTLE_LIMIT: Duration = Duration::from_secs(120);
const RPC_LIMIT: Duration = Duration::from_secs(5);

/// The timings a run uses (`OMRAFT_FAILOVER_PROFILE`): the daemons' and the catalog's
/// defaults, or tighter ones that keep every safety rule (the watchdog's timeout under the
/// lease less a renewal, elections well under the lease).
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Profile {
    name: &'static str,
    duration_ms: u64,
    drift_ms: u64,
    renew_ms: u64,
    heartbeat_ms: u64,
    election_timeout_ms: u64,
    watchdog_timeout_ms: u64,
}

const PROFILES: [Profile; 2] = [
    Profile {
        name: "default",
        duration_ms: 2400,
        drift_ms: 500,
        renew_ms: 200,
        heartbeat_ms: 100,
        election_timeout_ms: 250,
        watchdog_timeout_ms: 1500,
    },
    Profile {
        name: "fast",
        duration_ms: 1500,
        drift_ms: 300,
        renew_ms: 150,
        heartbeat_ms: 100,
        election_timeout_ms: 300,
        watchdog_timeout_ms: 700,
    },
];

/// The profile named by `OMRAFT_FAILOVER_PROFILE` (default: `default`).
fn profile() -> Result<Profile, String> {
    let name = std::env::var("OMRAFT_FAILOVER_PROFILE").unwrap_or_else(|_| "default".into());
    PROFILES
        .iter()
        .copied()
        .find(|p| p.name == name)
        .ok_or_else(|| format!("OMRAFT_FAILOVER_PROFILE={name:?}: expected one of default, fast"))
}
/// The log lines of the breakdown.
const DECISION: &str = "demo/svc/kvm1: failover from";
const COMMITTED: &str = "demo/svc/kvm1: failover committed";
const PRIMARY: &str = "done object=demo/svc/kvm1 step=Primary";
const START: &str = "done object=demo/svc/kvm1 step=StartDomain";

fn kv(key: &str, value: &str) -> pb::KeyValue {
    pb::KeyValue {
        key: key.into(),
        value: value.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The simulator and the daemons' state

struct Sim {
    omsim: PathBuf,
    dir: PathBuf,
}

impl Sim {
    /// `omsim virsh --node NODE ARGS...`: its stdout, or why it failed.
    async fn virsh(&self, node: &str, args: &[&str]) -> Result<String, String> {
        let run = tokio::process::Command::new(&self.omsim)
            .args(["virsh", "--node", node])
            .args(args)
            .env("OMRAFT_SIM_DIR", &self.dir)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .map_err(|_| format!("omsim virsh --node {node} {args:?}: no exit within 10 s"))?
            .map_err(|e| format!("running {}: {e}", self.omsim.display()))?;
        if !out.status.success() {
            return Err(format!(
                "omsim virsh --node {node} {args:?}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn running_on(&self, node: &str) -> Result<bool, String> {
        let list = self.virsh(node, &["list"]).await?;
        // `NAME running boots=N`.
        Ok(list.lines().any(|l| l.starts_with(&format!("{DOMAIN} running "))))
    }

    /// Errors with the log's content unless `violations.log` is absent or empty.
    fn check_violations(&self, when: &str) -> Result<(), String> {
        let text = std::fs::read_to_string(self.dir.join("violations.log")).unwrap_or_default();
        if text.trim().is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}/violations.log is not empty {when}:\n{text}",
                self.dir.display()
            ))
        }
    }
}

async fn instance_status(d: &Omd) -> Result<pb::InstanceStatusReply, String> {
    let mut c = client(d).await?;
    within(RPC_LIMIT, "InstanceStatus", async {
        c.instance_status(pb::ObjectRef { path: SERVICE.into() })
            .await
            .map_err(status_text)
    })
    .await
    .map(|r| r.into_inner())
}

/// Why the service is not settled on `on` (None: on its placement, whatever it is): every
/// instance reported, provisioned and without warnings, up where placed, down elsewhere.
fn unsettled(s: &pb::InstanceStatusReply, on: Option<&str>) -> Option<String> {
    if let Some(node) = on {
        if s.placement != node {
            return Some(format!("placed on {:?}, not {node}", s.placement));
        }
    }
    if !s.provisioned || !s.started {
        return Some(format!("provisioned={} started={}", s.provisioned, s.started));
    }
    if s.instances.is_empty() {
        return Some("no instances".into());
    }
    for i in &s.instances {
        let placed = i.node == s.placement;
        if !i.reported || !i.provisioned || i.warn || (i.avail == "up") != placed {
            let msgs: Vec<String> = i.resources.iter().flat_map(|r| r.messages.clone()).collect();
            return Some(format!(
                "{}: reported={} provisioned={} warn={} avail={} {}",
                i.node,
                i.reported,
                i.provisioned,
                i.warn,
                i.avail,
                msgs.join("; ")
            ));
        }
    }
    None
}

/// Polls `d`'s view of the service until it is settled (on `on`), bounded by `limit`.
async fn wait_settled(cluster: &mut Cluster, via: &str, on: Option<&str>, limit: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    loop {
        cluster.check_alive()?;
        let why = match instance_status(cluster.by_name(via).expect("our daemon")).await {
            Ok(s) => match unsettled(&s, on) {
                None => return Ok(t0.elapsed()),
                Some(why) => why,
            },
            Err(e) => e,
        };
        if t0.elapsed() >= limit {
            return Err(format!("{SERVICE} not settled within {limit:?} (via {via}): {why}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Setting up

async fn set_up(cluster: &mut Cluster, sim: &Sim, p: &Profile) -> Result<(), String> {
    let t0 = Instant::now();
    harness::wait_ready(cluster).await?;
    eprintln!("  3 daemons ready after {:.2} s", t0.elapsed().as_secs_f64());
    harness::form_cluster_with(cluster, &[WITNESS]).await?;
    let mut c = client(cluster.by_name("n1").expect("n1")).await?;
    within(RPC_LIMIT, "ConfigUpdate pool", async {
        c.config_update(pb::ConfigUpdateRequest {
            set: vec![
                kv(&format!("pool#{POOL}.type"), "drbd"),
                kv(&format!("pool#{POOL}.vg"), "data"),
                kv("lease.duration", &format!("{}ms", p.duration_ms)),
                kv("lease.drift", &format!("{}ms", p.drift_ms)),
                kv("lease.renew", &format!("{}ms", p.renew_ms)),
            ],
            unset: vec![],
        })
        .await
        .map_err(status_text)
    })
    .await?;

    // Allocating the volume needs the data nodes' volume group reports.
    let t0 = Instant::now();
    loop {
        let req = pb::ObjectCreateRequest {
            path: SERVICE.into(),
            kws: vec![
                kv("orchestrate", "ha"),
                kv("volume#data.size", "1G"),
                kv("volume#data.shared", "true"),
            ],
            config_text: String::new(),
        };
        let got = within(RPC_LIMIT, "ObjectCreate", async {
            c.object_create(req).await.map_err(status_text)
        })
        .await;
        match got {
            Ok(_) => break,
            Err(e) if t0.elapsed() >= Duration::from_secs(30) => {
                return Err(format!("creating {SERVICE} for 30 s: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    eprintln!("  {SERVICE} created after {:.2} s", t0.elapsed().as_secs_f64());

    within(RPC_LIMIT, "ObjectAction provision", async {
        c.object_action(pb::ObjectActionRequest {
            path: SERVICE.into(),
            action: "provision".into(),
            node: String::new(),
        })
        .await
        .map_err(status_text)
    })
    .await?;
    let took = wait_settled(cluster, "n1", None, SETTLE_LIMIT).await?;
    let placed = instance_status(cluster.by_name("n1").expect("n1")).await?.placement;
    eprintln!(
        "  provisioned and in sync after {:.2} s, placed on {placed}",
        took.as_secs_f64()
    );
    if !DATA_NODES.contains(&placed.as_str()) {
        return Err(format!("{SERVICE} placed on {placed:?}, not a data node"));
    }

    let xml = cluster.dir().join("kvm1.xml");
    std::fs::write(&xml, XML).map_err(|e| format!("writing {}: {e}", xml.display()))?;
    sim.virsh(&placed, &["define", &xml.display().to_string()]).await?;
    sim.virsh(&placed, &["start", DOMAIN]).await?;
    within(RPC_LIMIT, "ObjectConfigUpdate container#1", async {
        c.object_config_update(pb::ObjectConfigUpdateRequest {
            path: SERVICE.into(),
            set: vec![kv("container#1.type", "kvm"), kv("container#1.name", DOMAIN)],
            unset: vec![],
        })
        .await
        .map_err(status_text)
    })
    .await?;
    let t0 = Instant::now();
    loop {
        let s = instance_status(cluster.by_name("n1").expect("n1")).await?;
        let captured = s
            .instances
            .iter()
            .any(|i| i.resources.iter().any(|r| r.rid == "container#1"));
        if captured && unsettled(&s, Some(&placed)).is_none() {
            break;
        }
        if t0.elapsed() >= Duration::from_secs(30) {
            return Err(format!(
                "the guest never showed as container#1 within 30 s: {:?}",
                unsettled(&s, Some(&placed))
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("  guest {DOMAIN} running on {placed}, captured as container#1");
    sim.check_violations("after the setup")
}

// ---------------------------------------------------------------------------------------------
// The daemons' logs

/// A daemon's log from `offset` on (what it wrote during this trial).
fn log_from(path: &Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = (offset as usize).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The trials

#[derive(Clone, Default, serde::Serialize)]
struct Trial {
    n: usize,
    killed: String,
    target: String,
    /// The Raft leader before the kill, as the target saw it.
    leader_before: String,
    /// The node whose orchestrator decided the failover.
    decided_by: String,
    /// When the killed node led: seconds from the kill until the target reported a new leader
    /// (polled with the guest list), and which.
    elected_s: Option<f64>,
    new_leader: String,
    /// Seconds: kill to decision, decision to commit, commit to Primary, Primary to
    /// StartDomain (from the logs); None when a line was missing.
    detect_s: Option<f64>,
    commit_s: Option<f64>,
    promote_s: Option<f64>,
    start_s: Option<f64>,
    /// Kill to the StartDomain log line.
    logged_total_s: Option<f64>,
    /// Kill to `omsim virsh list` showing the guest running on the target (polled every 50 ms).
    total_s: f64,
    /// Failover decisions logged in this trial (more than one: a commit failed and was retried).
    decisions: usize,
    /// Restart of the killed node to its lease, and to the service settled again.
    released_s: f64,
    restored_s: f64,
}

fn lease_ms(s: &pb::NodeStatus) -> Option<u64> {
    s.lease_ms
}

async fn trial(cluster: &mut Cluster, sim: &Sim, n: usize) -> Result<Trial, String> {
    let mut holders = Vec::new();
    for node in DATA_NODES {
        if sim.running_on(node).await? {
            holders.push(node);
        }
    }
    let [holder] = holders[..] else {
        return Err(format!("{DOMAIN} runs on {holders:?}, expected exactly one data node"));
    };
    let target = DATA_NODES
        .iter()
        .copied()
        .find(|n| *n != holder)
        .expect("two data nodes");
    let leader_before = node_status(cluster.by_name(target).expect("ours")).await?.leader_name;
    let survivors: Vec<&'static str> = harness::NODES.iter().copied().filter(|n| *n != holder).collect();
    let offsets: Vec<u64> = survivors
        .iter()
        .map(|n| std::fs::metadata(cluster.by_name(n).expect("ours").log_path()).map_or(0, |m| m.len()))
        .collect();

    // Pull the plug: the daemon dies with its node.
    let t0 = SystemTime::now();
    let t0i = Instant::now();
    cluster.kill9(holder)?;
    sim.virsh(holder, &["poweroff"]).await?;
    let killed_leader = leader_before == holder;
    let mut elected: Option<(Duration, String)> = None;
    let total = loop {
        if sim.running_on(target).await? {
            break t0i.elapsed();
        }
        if killed_leader && elected.is_none() {
            let probe = tokio::time::timeout(
                Duration::from_secs(1),
                node_status(cluster.by_name(target).expect("ours")),
            );
            if let Ok(Ok(s)) = probe.await {
                if !s.leader_name.is_empty() && s.leader_name != holder {
                    elected = Some((t0i.elapsed(), s.leader_name));
                }
            }
        }
        if t0i.elapsed() >= FAILOVER_LIMIT {
            return Err(format!(
                "trial {n}: {DOMAIN} not running on {target} within {FAILOVER_LIMIT:?} of {holder}'s power loss"
            ));
        }
        cluster.check_alive()?;
        tokio::time::sleep(POLL).await;
    };
    sim.check_violations(&format!("after trial {n}'s failover"))?;

    // The breakdown, from the survivors' logs of this trial.
    let start = epoch_secs(t0);
    let logs: Vec<(&str, String)> = survivors
        .iter()
        .zip(&offsets)
        .map(|(name, off)| (*name, log_from(&cluster.by_name(name).expect("ours").log_path(), *off)))
        .collect();
    let mut t = Trial {
        n,
        killed: holder.into(),
        target: target.into(),
        leader_before,
        total_s: total.as_secs_f64(),
        elected_s: elected.as_ref().map(|(d, _)| d.as_secs_f64()),
        new_leader: elected.map(|(_, n)| n).unwrap_or_default(),
        ..Trial::default()
    };
    let mut decision: Option<(f64, &str)> = None;
    for (name, text) in &logs {
        let found = stamps(text, DECISION, start);
        t.decisions += found.len();
        if let Some(first) = found.first() {
            if decision.is_none_or(|(d, _)| *first < d) {
                decision = Some((*first, name));
            }
        }
    }
    let target_log = &logs
        .iter()
        .find(|(name, _)| *name == target)
        .expect("the target survives")
        .1;
    let primary = stamps(target_log, PRIMARY, start).first().copied();
    let started = stamps(target_log, START, start).first().copied();
    let committed = decision.and_then(|(d, name)| {
        let text = &logs.iter().find(|(n, _)| *n == name).expect("a survivor").1;
        stamps(text, COMMITTED, d).first().copied()
    });
    let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let decided = decision.map(|(d, _)| d);
    t.decided_by = decision.map(|(_, name)| name.to_string()).unwrap_or_default();
    t.detect_s = diff(Some(start), decided);
    t.commit_s = diff(decided, committed);
    t.promote_s = diff(committed, primary);
    t.start_s = diff(primary, started);
    t.logged_total_s = diff(Some(start), started);

    // Back to two data nodes: the killed one restarts, is leased again, resyncs.
    let t1 = Instant::now();
    cluster.restart(holder)?;
    loop {
        cluster.check_alive()?;
        let why = match node_status(cluster.by_name(holder).expect("ours")).await {
            Ok(s) if lease_ms(&s).is_some() => break,
            Ok(s) => format!("role {}, leader {:?}, no lease", s.raft_role, s.leader_name),
            Err(e) => e,
        };
        if t1.elapsed() >= RELEASE_LIMIT {
            return Err(format!(
                "trial {n}: restarted {holder} not leased within {RELEASE_LIMIT:?}: {why}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.released_s = t1.elapsed().as_secs_f64();
    wait_settled(cluster, target, Some(target), SETTLE_LIMIT)
        .await
        .map_err(|e| format!("trial {n}: after restarting {holder}: {e}"))?;
    t.restored_s = t1.elapsed().as_secs_f64();
    if sim.running_on(holder).await? || !sim.running_on(target).await? {
        return Err(format!(
            "trial {n}: after the restore {DOMAIN} should run on {target} only"
        ));
    }
    sim.check_violations(&format!("after trial {n}'s restore"))?;
    let show = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.2}"));
    eprintln!(
        "  trial {n}: {holder} -> {target} in {:.2} s (leader {}, new leader {} at {}; detect {} commit {} \
         promote {} start {}), {holder} leased again after {:.1} s, settled after {:.1} s",
        t.total_s,
        t.leader_before,
        if t.new_leader.is_empty() { "-" } else { &t.new_leader },
        show(t.elected_s),
        show(t.detect_s),
        show(t.commit_s),
        show(t.promote_s),
        show(t.start_s),
        t.released_s,
        t.restored_s
    );
    Ok(t)
}

// ---------------------------------------------------------------------------------------------
// Live switches

/// Live switches timed before the failover trials (OMRAFT_SWITCH_TRIALS).
const DEFAULT_SWITCHES: u64 = 5;
const SMOKE_SWITCHES: u64 = 1;

/// One `omctl switch --live --wait`: its wall time, the simulated migration job's length, and
/// when (seconds after the command started) each phase change was committed, from the logs.
#[derive(Clone, Default, serde::Serialize)]
struct Switch {
    from: String,
    to: String,
    wall_s: f64,
    migration_s: f64,
    /// Wall time less the migration job: the orchestration's own time.
    overhead_s: f64,
    phases: Vec<(String, f64)>,
}

/// Live-switches the guest to the other data node `k` times with the real omctl, each time
/// from a settled service; the settling is not timed.
async fn live_switches(cluster: &mut Cluster, sim: &Sim, k: u64) -> Result<Vec<Switch>, String> {
    let omctl = support::omd::OMCTL;
    let migration_s = std::fs::read_to_string(sim.dir.join("migrate-ms"))
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(omraft::sim::hypervisor::DEFAULT_MIGRATE_MS) as f64
        / 1000.0;
    let mut out = Vec::new();
    for _ in 0..k {
        let mut from = None;
        for node in DATA_NODES {
            if sim.running_on(node).await? {
                from = Some(node);
            }
        }
        let from = from.ok_or_else(|| format!("{DOMAIN} runs on no data node before a live switch"))?;
        let to = DATA_NODES.iter().copied().find(|n| *n != from).expect("two data nodes");
        let offsets: Vec<(String, u64)> = harness::NODES
            .iter()
            .map(|n| {
                let path = cluster.by_name(n).expect("ours").log_path();
                (
                    path.display().to_string(),
                    std::fs::metadata(&path).map_or(0, |m| m.len()),
                )
            })
            .collect();
        let t0 = harness::epoch_secs(SystemTime::now());
        let started = Instant::now();
        let cmd = tokio::process::Command::new(omctl)
            .arg("--server")
            .arg(cluster.by_name(from).expect("ours").server())
            .args([SERVICE, "switch", "--live", "--wait", "--to", to, "--time", "60s"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let done = tokio::time::timeout(Duration::from_secs(90), cmd)
            .await
            .map_err(|_| "omctl switch --live --wait: no answer within 90 s".to_string())?
            .map_err(|e| format!("running {omctl}: {e}"))?;
        let wall_s = started.elapsed().as_secs_f64();
        if !done.status.success() {
            return Err(format!(
                "omctl switch --live --to {to}: {}",
                String::from_utf8_lossy(&done.stderr).trim()
            ));
        }
        if !sim.running_on(to).await? || sim.running_on(from).await? {
            return Err(format!("after switch --live --wait, {DOMAIN} is not on {to} only"));
        }
        let logs: String = offsets.iter().map(|(p, o)| log_from(Path::new(p), *o)).collect();
        let mut phases: Vec<(String, f64)> = logs
            .lines()
            .filter(|l| l.contains(&format!(" of {SERVICE}: ")) && l.contains(" -> "))
            .filter_map(|l| {
                let t = harness::parse_rfc3339_utc(l.split_whitespace().next()?)?;
                let change = l.rsplit(&format!(" of {SERVICE}: ")).next()?.trim().to_string();
                (t >= t0).then_some((change, t - t0))
            })
            .collect();
        phases.sort_by(|a, b| a.1.total_cmp(&b.1));
        phases.dedup_by(|a, b| a.0 == b.0);
        eprintln!("  live switch {from} -> {to}: {wall_s:.2} s");
        out.push(Switch {
            from: from.into(),
            to: to.into(),
            wall_s,
            migration_s,
            overhead_s: wall_s - migration_s,
            phases,
        });
        wait_settled(cluster, to, Some(to), SETTLE_LIMIT).await?;
    }
    Ok(out)
}

fn print_switches(switches: &[Switch]) {
    if switches.is_empty() {
        return;
    }
    println!(
        "live switch of {SERVICE}: omctl switch --live --wait, wall time less the simulated migration \
         job ({:.2} s), and when each phase change was committed; seconds",
        switches[0].migration_s
    );
    println!("{:<8} {:>6} {:>9}  phases committed at", "switch", "wall", "overhead");
    for s in switches {
        let phases: Vec<String> = s.phases.iter().map(|(p, t)| format!("{p} {t:.2}")).collect();
        println!(
            "{:<8} {:>6.2} {:>9.2}  {}",
            format!("{}->{}", s.from, s.to),
            s.wall_s,
            s.overhead_s,
            phases.join(", ")
        );
    }
    let st = |f: fn(&Switch) -> f64| stats(switches.iter().map(|s| Some(f(s))));
    if let (Some(w), Some(o)) = (st(|s| s.wall_s), st(|s| s.overhead_s)) {
        println!(
            "median   {:>6.2} {:>9.2}  (min-max overhead {:.2}-{:.2}; target < 0.5 s)",
            w.median, o.median, o.min, o.max
        );
    }
    println!();
}

struct Outcome {
    switches: Vec<Switch>,
    trials: Vec<Trial>,
}

async fn bench(cluster: &mut Cluster, sim: &Sim, trials: usize, switches: u64, p: &Profile) -> Result<Outcome, String> {
    set_up(cluster, sim, p).await?;
    let mut out = Outcome {
        switches: live_switches(cluster, sim, switches).await?,
        trials: Vec::new(),
    };
    for n in 1..=trials {
        out.trials.push(trial(cluster, sim, n).await?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Report

type Column = (&'static str, fn(&Trial) -> Option<f64>);

const COLUMNS: [Column; 6] = [
    ("detect+lease", |t| t.detect_s),
    ("commit", |t| t.commit_s),
    ("promote", |t| t.promote_s),
    ("start", |t| t.start_s),
    ("total", |t| Some(t.total_s)),
    ("restore", |t| Some(t.restored_s)),
];

fn print_table(out: &Outcome, p: &Profile) {
    println!(
        "failover of {SERVICE} (kvm guest on a shared DRBD volume) after its node's power loss, \
         3 omd on loopback, --drivers sim, n3 a witness; seconds"
    );
    println!(
        "profile {}: lease.duration {} ms, lease.drift {} ms, lease.renew {} ms, heartbeat {} ms, \
         election timeout {} ms, watchdog timeout {} ms; OMRAFT_SIM_SYNC_MS={SIM_SYNC_MS}",
        p.name, p.duration_ms, p.drift_ms, p.renew_ms, p.heartbeat_ms, p.election_timeout_ms, p.watchdog_timeout_ms
    );
    let cell = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.2}"));
    println!(
        "{:<7} {:<9} {:<8} {:>9} {:>13} {:>7} {:>8} {:>6} {:>7} {:>8}",
        "trial", "killed", "leader", "(elected)", "detect+lease", "commit", "promote", "start", "total", "restore"
    );
    for t in &out.trials {
        let leader = if t.leader_before == t.killed {
            format!("{} (k)", t.leader_before)
        } else {
            t.leader_before.clone()
        };
        println!(
            "{:<7} {:<9} {:<8} {:>9} {:>13} {:>7} {:>8} {:>6} {:>7} {:>8}",
            t.n,
            format!("{}->{}", t.killed, t.target),
            leader,
            cell(t.elected_s),
            cell(t.detect_s),
            cell(t.commit_s),
            cell(t.promote_s),
            cell(t.start_s),
            cell(Some(t.total_s)),
            cell(Some(t.restored_s)),
        );
    }
    for (label, pick) in [
        ("median", (|s: Stats| s.median) as fn(Stats) -> f64),
        ("min", |s| s.min),
        ("max", |s| s.max),
    ] {
        let v: Vec<String> = COLUMNS
            .iter()
            .map(|(_, f)| cell(stats(out.trials.iter().map(f)).map(pick)))
            .collect();
        let elected = cell(stats(out.trials.iter().map(|t| t.elected_s)).map(pick));
        println!(
            "{:<7} {:<9} {:<8} {:>9} {:>13} {:>7} {:>8} {:>6} {:>7} {:>8}",
            label, "", "", elected, v[0], v[1], v[2], v[3], v[4], v[5]
        );
    }
    println!(
        "  detect+lease: power loss to the leader's \"failover from\" decision; commit: to its \"failover committed\"; \
         promote: to the target's DRBD Primary; start: to its StartDomain; total: power loss to `omsim virsh list` \
         showing the guest running (polled every {} ms); restore: restart of the killed node to the service settled \
         again (not part of the failover). leader: the Raft leader before the kill, (k) when it was the killed node; \
         (elected): power loss to the target reporting a new leader (polled), inside detect+lease.",
        POLL.as_millis()
    );
    for (label, killed_leader) in [
        ("killed node was the Raft leader", true),
        ("killed node was a follower", false),
    ] {
        let of: Vec<&Trial> = out
            .trials
            .iter()
            .filter(|t| (t.leader_before == t.killed) == killed_leader)
            .collect();
        if let Some(s) = stats(of.iter().map(|t| Some(t.total_s))) {
            println!(
                "  {label}: {} trials, total median {:.2} s ({:.2}-{:.2})",
                s.n, s.median, s.min, s.max
            );
        }
    }
    let multi: Vec<usize> = out.trials.iter().filter(|t| t.decisions > 1).map(|t| t.n).collect();
    if !multi.is_empty() {
        println!("  trials with more than one failover decision logged: {multi:?}");
    }
    println!("  violations.log: empty after every failover and restore");
    println!();
    println!("references (not measured by this bench):");
    println!("  Pacemaker 2.1 + Corosync 3, default timeouts, STONITH disabled: 8.3 s median (7.6-9.4 s), measured on this kind of machine");
    println!("  Proxmox VE HA: about 2 minutes, as documented");
    println!("  OpenSVC agent, as in the OpenSVC tutorial: about 20 s");
}

#[derive(serde::Serialize)]
struct JsonReport {
    bench: &'static str,
    trials: usize,
    /// Medians, seconds.
    detect_s: Option<f64>,
    commit_s: Option<f64>,
    promote_s: Option<f64>,
    start_s: Option<f64>,
    total_s: Option<f64>,
    restore_s: Option<f64>,
    stats: std::collections::BTreeMap<&'static str, Stats>,
    /// Total failover time, split by whether the killed node was the Raft leader.
    total_killed_leader: Option<Stats>,
    total_killed_follower: Option<Stats>,
    per_trial: Vec<Trial>,
    /// `omctl switch --live --wait`: wall time and overhead (wall less the migration job).
    live_switch_wall_s: Option<Stats>,
    live_switch_overhead_s: Option<Stats>,
    per_switch: Vec<Switch>,
    profile: Profile,
    sim_sync_ms: u64,
    witness: &'static str,
    poll_ms: u128,
    violations: usize,
    nproc: usize,
    cpu: String,
    os: &'static str,
    arch: &'static str,
}

/// Total failover time of the trials whose killed node was (or was not) the Raft leader.
fn split(out: &Outcome, killed_leader: bool) -> Option<Stats> {
    stats(
        out.trials
            .iter()
            .filter(|t| (t.leader_before == t.killed) == killed_leader)
            .map(|t| Some(t.total_s)),
    )
    .map(|s| Stats {
        median: round(s.median, 3),
        min: round(s.min, 3),
        max: round(s.max, 3),
        n: s.n,
    })
}

fn print_json(out: &Outcome, p: &Profile) {
    let r3 = |x: f64| round(x, 3);
    let mut all = std::collections::BTreeMap::new();
    for (name, f) in COLUMNS {
        if let Some(s) = stats(out.trials.iter().map(f)) {
            all.insert(
                name,
                Stats {
                    median: r3(s.median),
                    min: r3(s.min),
                    max: r3(s.max),
                    n: s.n,
                },
            );
        }
    }
    let median = |name: &str| all.get(name).map(|s| s.median);
    let per_trial = out
        .trials
        .iter()
        .map(|t| {
            let o = |x: Option<f64>| x.map(r3);
            Trial {
                detect_s: o(t.detect_s),
                commit_s: o(t.commit_s),
                promote_s: o(t.promote_s),
                start_s: o(t.start_s),
                logged_total_s: o(t.logged_total_s),
                elected_s: o(t.elected_s),
                total_s: r3(t.total_s),
                released_s: r3(t.released_s),
                restored_s: r3(t.restored_s),
                ..t.clone()
            }
        })
        .collect();
    let report = JsonReport {
        bench: "failover",
        trials: out.trials.len(),
        detect_s: median("detect+lease"),
        commit_s: median("commit"),
        promote_s: median("promote"),
        start_s: median("start"),
        total_s: median("total"),
        restore_s: median("restore"),
        stats: all.clone(),
        total_killed_leader: split(out, true),
        total_killed_follower: split(out, false),
        per_trial,
        live_switch_wall_s: stats(out.switches.iter().map(|s| Some(s.wall_s))).map(|s| Stats {
            median: r3(s.median),
            min: r3(s.min),
            max: r3(s.max),
            n: s.n,
        }),
        live_switch_overhead_s: stats(out.switches.iter().map(|s| Some(s.overhead_s))).map(|s| Stats {
            median: r3(s.median),
            min: r3(s.min),
            max: r3(s.max),
            n: s.n,
        }),
        per_switch: out.switches.clone(),
        profile: *p,
        sim_sync_ms: SIM_SYNC_MS.parse().unwrap_or(0),
        witness: WITNESS,
        poll_ms: POLL.as_millis(),
        violations: 0,
        nproc: harness::nproc(),
        cpu: harness::cpu_model(),
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
    };
    println!("{}", serde_json::to_string(&report).expect("serializing the report"));
}

fn main() -> ExitCode {
    let trials = match harness::count_from_env(
        "OMRAFT_FAILOVER_TRIALS",
        "trials",
        1..=100,
        DEFAULT_TRIALS as u64,
        SMOKE_TRIALS as u64,
    ) {
        Ok(n) => n as usize,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let switches = match harness::count_from_env(
        "OMRAFT_SWITCH_TRIALS",
        "live switches",
        0..=100,
        DEFAULT_SWITCHES,
        SMOKE_SWITCHES,
    ) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let p = match profile() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("failover bench: {} , {trials} trials", support::omd::OMD);
    let mut cluster = match Cluster::spawn_in(|dir, node| {
        let mut args = vec![
            "--drivers".to_string(),
            "sim".to_string(),
            "--sim-dir".to_string(),
            dir.join("sim").display().to_string(),
        ];
        if DATA_NODES.contains(&node) {
            args.extend(["--report-vg".to_string(), "data=5G".to_string()]);
        }
        args.extend([
            format!("--heartbeat-ms={}", p.heartbeat_ms),
            format!("--election-timeout-ms={}", p.election_timeout_ms),
            format!("--watchdog-timeout-ms={}", p.watchdog_timeout_ms),
        ]);
        Launch {
            args,
            // Restarted daemons keep it.
            env: vec![("OMRAFT_SIM_SYNC_MS".into(), SIM_SYNC_MS.into())],
            wrapper: vec![],
            installed: None,
        }
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("failover bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sim = Sim {
        omsim: PathBuf::from(support::omd::OMSIM),
        dir: cluster.dir().join("sim"),
    };
    // An interrupted run still stops its daemons: SIGINT and SIGTERM end it like a failure.
    let result = harness::run_interruptible(bench(&mut cluster, &sim, trials, switches, &p));
    cluster.finish(result.is_err());
    match result {
        Err(e) => {
            eprintln!("failover bench failed: {e}");
            ExitCode::FAILURE
        }
        Ok(out) => {
            print_switches(&out.switches);
            print_table(&out, &p);
            print_json(&out, &p);
            ExitCode::SUCCESS
        }
    }
}
