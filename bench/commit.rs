//! Commit benchmark: how many config-update-sized writes per second a 3-node omraft cluster on
//! loopback commits, and at what latency, at 1, 16 and 64 writes in flight.
//!
//! `cargo bench --bench commit` starts three `omd` (the binaries cargo built for this bench) in
//! a temporary directory, joins n2 and n3 to n1, then drives `ConfigUpdate` calls (two keys of a
//! new `pool#b<i>` section each) through the leader's unix socket, then through a follower's
//! (which forwards to the leader). Each level warms up for a second, then measures for
//! OMRAFT_BENCH_SECS seconds (default 5). It prints a table, then one JSON line starting with
//! `{"bench":"commit"`. Nothing is asserted about speed; more than 1% failed writes aborts.
//! OMRAFT_BENCH_LEVELS=64,16,1 changes the concurrency levels and their order.
//!
//! All levels share one cluster and every write adds a pool, so each level starts with the
//! writes of the levels before it in the state: "prior writes" in the table and the JSON.
//!
//! Run without `--bench` (as `cargo test --all-targets` does), it is a short smoke run.
//! The daemons are stopped (SIGTERM, SIGKILL after 5 s) and the directory removed on every exit,
//! panics, SIGINT and SIGTERM included.

mod runner;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use omraft::cli::client::{connect, Client};
use omraft::pb;
use runner::{Level, Phases};

const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// Writes in flight, per level, unless OMRAFT_BENCH_LEVELS lists others (e.g. `64,1`).
const CONCURRENCY: [usize; 3] = [1, 16, 64];
/// Above this share of failed writes a level aborts the benchmark.
const MAX_ERROR_RATIO: f64 = 0.01;
const STOP_GRACE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// The daemons

struct Daemon {
    name: &'static str,
    addr: String,
    sock: PathBuf,
    log: PathBuf,
    child: Child,
    /// Set once it has exited, with how long it took after SIGTERM.
    exited: Option<String>,
}

impl Daemon {
    fn server(&self) -> String {
        format!("unix:{}", self.sock.display())
    }
}

/// Three `omd` processes and their directory; dropping it stops them and removes the directory.
struct Cluster {
    daemons: Vec<Daemon>,
    dir: tempfile::TempDir,
}

/// The `omd` cargo built for this bench: CARGO_BIN_EXE_omd, else `../omd` from `deps/`.
fn omd_path() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_omd") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the bench's own path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<bench>");
    profile.join("omd")
}

/// Distinct free loopback ports: bound together, then released.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

impl Cluster {
    /// Spawns the daemons (each founds its own one-node cluster until joined).
    fn spawn(omd: &Path) -> Result<Cluster, String> {
        if !omd.is_file() {
            return Err(format!(
                "no omd at {}: build it first (cargo bench builds it)",
                omd.display()
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("omraft-bench-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let mut cluster = Cluster {
            daemons: Vec::new(),
            dir,
        };
        let ports = free_ports(NODES.len());
        for (name, port) in NODES.iter().zip(ports) {
            let data = cluster.dir.path().join(name);
            let log = cluster.dir.path().join(format!("{name}.log"));
            let addr = format!("127.0.0.1:{port}");
            let out = File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
            let err = out.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
            let child = Command::new(omd)
                .arg("--node-name")
                .arg(name)
                .arg("--data-dir")
                .arg(&data)
                .arg("--listen")
                .arg(&addr)
                .env_remove("OMD_ADVERTISE")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("starting {}: {e}", omd.display()))?;
            cluster.daemons.push(Daemon {
                name,
                addr,
                sock: data.join("omd.sock"),
                log,
                child,
                exited: None,
            });
        }
        Ok(cluster)
    }

    fn by_name(&self, name: &str) -> Option<&Daemon> {
        self.daemons.iter().find(|d| d.name == name)
    }

    /// Errors if a daemon has already exited.
    fn check_alive(&mut self) -> Result<(), String> {
        for d in &mut self.daemons {
            if let Ok(Some(status)) = d.child.try_wait() {
                d.exited = Some(format!("exited on its own ({status})"));
                return Err(format!("{} exited unexpectedly ({status})", d.name));
            }
        }
        Ok(())
    }

    /// SIGTERM to every daemon still running, SIGKILL to those still there after 5 s. Idempotent.
    fn stop(&mut self) {
        let sent = Instant::now();
        for d in &mut self.daemons {
            if d.exited.is_some() {
                continue;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                d.exited = Some(format!("had exited on its own before SIGTERM ({status})"));
                continue;
            }
            let termed = Command::new("kill")
                .arg("-TERM")
                .arg(d.child.id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !termed {
                let _ = d.child.kill();
            }
        }
        loop {
            let mut running = 0;
            for d in self.daemons.iter_mut().filter(|d| d.exited.is_none()) {
                match d.child.try_wait() {
                    Ok(Some(status)) => {
                        d.exited = Some(format!(
                            "stopped {:.2} s after SIGTERM ({status})",
                            sent.elapsed().as_secs_f64()
                        ))
                    }
                    Ok(None) => running += 1,
                    Err(e) => d.exited = Some(format!("cannot be waited for: {e}")),
                }
            }
            if running == 0 {
                break;
            }
            if sent.elapsed() >= STOP_GRACE {
                for d in self.daemons.iter_mut().filter(|d| d.exited.is_none()) {
                    let _ = d.child.kill();
                    let status = d.child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    d.exited = Some(format!(
                        "still running {STOP_GRACE:?} after SIGTERM: SIGKILLed ({status})"
                    ));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `lines` lines of each daemon's log.
    fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for d in &self.daemons {
            let text = std::fs::read_to_string(&d.log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("---- {} log (last {lines} lines) ----\n", d.name));
            for l in &all[all.len().saturating_sub(lines)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// WARN and ERROR lines of the daemons' logs, a few per daemon.
    fn log_warnings(&self, max: usize) -> Vec<String> {
        let mut found = Vec::new();
        for d in &self.daemons {
            let text = std::fs::read_to_string(&d.log).unwrap_or_default();
            let bad: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .collect();
            if !bad.is_empty() {
                found.push(format!("{}: {} WARN/ERROR lines", d.name, bad.len()));
                found.extend(bad.iter().take(max).map(|l| format!("  {}: {l}", d.name)));
            }
        }
        found
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprint!("{}", self.log_tails(20));
        }
        self.stop();
        // `dir` is removed when the fields drop, after the daemons are gone.
    }
}

// ---------------------------------------------------------------------------------------------
// Setting the cluster up

fn status_text(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| format!("{what}: no answer within {limit:?}"))?
}

async fn client(d: &Daemon) -> Result<Client, String> {
    connect(&d.server(), None).await.map_err(|e| e.to_string())
}

/// Waits until every daemon's unix socket answers and the daemon leads its one-node cluster
/// with itself registered in the state (before that, it refuses to admit other nodes).
async fn wait_ready(cluster: &mut Cluster) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..cluster.daemons.len() {
        let mut answered = false;
        loop {
            cluster.check_alive()?;
            let d = &cluster.daemons[i];
            let probe = async {
                let mut c = client(d).await?;
                let st = c
                    .node_status(pb::NodeStatusRequest {})
                    .await
                    .map_err(status_text)?
                    .into_inner();
                let mon = c.mon(pb::MonRequest {}).await.map_err(status_text)?.into_inner();
                Ok::<_, String>((st.raft_role, mon.nodes.len()))
            };
            let why = match tokio::time::timeout(Duration::from_secs(2), probe).await {
                Ok(Ok((role, registered))) if role == "leader" && registered == 1 => break,
                Ok(Ok((role, registered))) => {
                    answered = true;
                    format!("role {role}, {registered} nodes registered")
                }
                Ok(Err(e)) => e,
                Err(_) => "no answer within 2 s".to_string(),
            };
            if Instant::now() >= deadline {
                let what = if answered {
                    "never led its one-node cluster"
                } else {
                    "never answered"
                };
                return Err(format!("{} {what}: {why}", d.name));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Joins n2 and n3 to n1 and waits until n1 sees three reachable voters.
async fn form_cluster(cluster: &mut Cluster) -> Result<(), String> {
    let n1 = &cluster.daemons[0];
    let mut c1 = client(n1).await?;
    let token = within(Duration::from_secs(10), "IssueToken", async {
        c1.issue_token(pb::IssueTokenRequest {
            role: "join".into(),
            duration_secs: 600,
        })
        .await
        .map_err(status_text)
    })
    .await?
    .into_inner()
    .token;
    for d in &cluster.daemons[1..] {
        let t0 = Instant::now();
        let mut c = client(d).await?;
        let req = pb::JoinRequest {
            node: n1.addr.clone(),
            token: token.clone(),
            witness: false,
        };
        let reply = within(Duration::from_secs(120), &format!("joining {}", d.name), async {
            c.join(req)
                .await
                .map_err(|s| format!("joining {}: {}", d.name, status_text(s)))
        })
        .await?
        .into_inner();
        eprintln!(
            "  {} joined as node id {} in {:.2} s",
            d.name,
            reply.node_id,
            t0.elapsed().as_secs_f64()
        );
    }
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(60);
    loop {
        cluster.check_alive()?;
        let got = within(Duration::from_secs(5), "Mon", async {
            let mut c = client(&cluster.daemons[0]).await?;
            c.mon(pb::MonRequest {}).await.map_err(status_text)
        })
        .await;
        let last = match got {
            Ok(r) => {
                let r = r.into_inner();
                let ready = r
                    .nodes
                    .iter()
                    .filter(|n| n.membership == "voter" && n.reachable)
                    .count();
                if ready == NODES.len() && r.nodes.len() == NODES.len() {
                    eprintln!(
                        "  mon on n1: 3 voters reachable after {:.2} s",
                        t0.elapsed().as_secs_f64()
                    );
                    return Ok(());
                }
                r.nodes
                    .iter()
                    .map(|n| format!("{} {} reachable={} {}", n.name, n.membership, n.reachable, n.error))
                    .collect::<Vec<_>>()
                    .join("; ")
            }
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!("n1 never saw 3 reachable voters; last view: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (leader, a follower), as the first daemon asked sees them.
async fn roles(cluster: &Cluster) -> Result<(&'static str, &'static str), String> {
    let mut c = client(&cluster.daemons[0]).await?;
    let st = within(Duration::from_secs(5), "NodeStatus", async {
        c.node_status(pb::NodeStatusRequest {}).await.map_err(status_text)
    })
    .await?
    .into_inner();
    let leader = cluster
        .by_name(&st.leader_name)
        .ok_or_else(|| format!("n1 reports leader {:?}, not one of ours", st.leader_name))?
        .name;
    let follower = NODES.iter().copied().find(|n| *n != leader).expect("three nodes");
    Ok((leader, follower))
}

// ---------------------------------------------------------------------------------------------
// The load

fn update(i: u64) -> pb::ConfigUpdateRequest {
    pb::ConfigUpdateRequest {
        set: vec![
            pb::KeyValue {
                key: format!("pool#b{i}.type"),
                value: "lvm".into(),
            },
            pb::KeyValue {
                key: format!("pool#b{i}.vg"),
                value: "data".into(),
            },
        ],
        unset: vec![],
    }
}

/// One ConfigUpdate per write, on this worker's own connection.
async fn writers(d: &Daemon, n: usize) -> Result<Vec<impl runner::Writer>, String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let conn = client(d).await?;
        out.push(move |i: u64| {
            let mut c = conn.clone();
            async move { c.config_update(update(i)).await.map(|_| ()).map_err(status_text) }
        });
    }
    Ok(out)
}

struct Row {
    via: String,
    /// Writes issued before this level: the state already holds about this many pools.
    prior_writes: u64,
    level: Level,
}

struct Outcome {
    rows: Vec<Row>,
    aborted: Option<String>,
    notes: Vec<String>,
    total_ok: u64,
}

async fn bench(cluster: &mut Cluster, phases: Phases, levels: &[usize]) -> Result<Outcome, String> {
    let t0 = Instant::now();
    wait_ready(cluster).await?;
    eprintln!(
        "  3 daemons ready (each leads its one-node cluster) after {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    form_cluster(cluster).await?;
    let (leader, follower) = roles(cluster).await?;
    eprintln!("  leader {leader}, follower used: {follower}");

    let next = Arc::new(AtomicU64::new(0));
    let mut out = Outcome {
        rows: Vec::new(),
        aborted: None,
        notes: Vec::new(),
        total_ok: 0,
    };
    'targets: for (via, name) in [("leader", leader), ("follower", follower)] {
        for &n in levels {
            cluster.check_alive()?;
            let d = cluster.by_name(name).expect("our daemon");
            let ws = writers(d, n).await?;
            let prior_writes = next.load(Ordering::Relaxed);
            let level = runner::run_level(ws, next.clone(), phases).await;
            out.total_ok += level.attempts - level.errors;
            eprintln!(
                "  {via} ({name}) x{n}: {} writes, {:.0}/s, {} errors",
                level.writes,
                level.writes_per_sec(),
                level.errors
            );
            let ratio = level.error_ratio();
            if !level.error_samples.is_empty() {
                out.notes
                    .push(format!("{via} x{n} errors: {}", level.error_samples.join(" | ")));
            }
            out.rows.push(Row {
                via: format!("{via} ({name})"),
                prior_writes,
                level,
            });
            if ratio > MAX_ERROR_RATIO {
                out.aborted = Some(format!("{:.1}% of the writes failed at {via} x{n}", ratio * 100.0));
                break 'targets;
            }
            let (now_leader, _) = roles(cluster).await?;
            if now_leader != leader {
                out.notes.push(format!(
                    "leadership moved from {leader} to {now_leader} during {via} x{n}"
                ));
            }
        }
    }

    // Sanity: every acknowledged write is in the state.
    let mut c = client(cluster.by_name(leader).expect("our daemon")).await?;
    let show = within(Duration::from_secs(30), "ConfigShow", async {
        c.config_show(pb::ConfigShowRequest { section: String::new() })
            .await
            .map_err(status_text)
    })
    .await?
    .into_inner();
    let pools = show.sections.iter().filter(|s| s.name.starts_with("pool#b")).count() as u64;
    if pools < out.total_ok {
        out.notes.push(format!(
            "only {pools} pool#b sections in the state for {} acknowledged writes",
            out.total_ok
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Report

#[derive(serde::Serialize)]
struct JsonLevel<'a> {
    via: &'a str,
    concurrency: usize,
    prior_writes: u64,
    writes: u64,
    writes_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
}

#[derive(serde::Serialize)]
struct JsonReport<'a> {
    bench: &'static str,
    nodes: usize,
    write: &'static str,
    secs_per_level: f64,
    warmup_secs: f64,
    nproc: usize,
    cpu: String,
    os: &'static str,
    arch: &'static str,
    levels: Vec<JsonLevel<'a>>,
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

fn max_ms(l: &Level) -> f64 {
    l.latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<18} {:>11} {:>8} {:>10} {:>8} {:>8} {:>8} {:>7} {:>12}",
        "via", "concurrency", "writes", "writes/s", "p50 ms", "p99 ms", "max ms", "errors", "prior writes"
    );
    for r in rows {
        let l = &r.level;
        println!(
            "{:<18} {:>11} {:>8} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>12}",
            r.via,
            l.concurrency,
            l.writes,
            l.writes_per_sec(),
            l.percentile_ms(50.0),
            l.percentile_ms(99.0),
            max_ms(l),
            l.errors,
            r.prior_writes
        );
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn print_json(rows: &[Row], phases: Phases) {
    let report = JsonReport {
        bench: "commit",
        nodes: NODES.len(),
        write: "ConfigUpdate set pool#b<i>.type=lvm pool#b<i>.vg=data",
        secs_per_level: phases.measure.as_secs_f64(),
        warmup_secs: phases.warmup.as_secs_f64(),
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu: cpu_model(),
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
        levels: rows
            .iter()
            .map(|r| {
                let l = &r.level;
                JsonLevel {
                    via: r.via.split(' ').next().unwrap_or(&r.via),
                    concurrency: l.concurrency,
                    prior_writes: r.prior_writes,
                    writes: l.writes,
                    writes_per_s: round(l.writes_per_sec(), 1),
                    p50_ms: round(l.percentile_ms(50.0), 3),
                    p99_ms: round(l.percentile_ms(99.0), 3),
                    max_ms: round(max_ms(l), 3),
                    errors: l.errors,
                }
            })
            .collect(),
    };
    println!("{}", serde_json::to_string(&report).expect("serializing the report"));
}

fn main() -> ExitCode {
    // `cargo bench` passes --bench; `cargo test --benches` does not: then only a short smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let secs = match std::env::var("OMRAFT_BENCH_SECS") {
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(s) if s > 0.0 && s <= 3600.0 => s,
            _ => {
                eprintln!("OMRAFT_BENCH_SECS={v:?}: expected seconds, more than 0 and at most 3600");
                return ExitCode::FAILURE;
            }
        },
        Err(_) if full => 5.0,
        Err(_) => 0.3,
    };
    let levels: Vec<usize> = match std::env::var("OMRAFT_BENCH_LEVELS") {
        Err(_) => CONCURRENCY.to_vec(),
        Ok(v) => {
            let parsed: Result<Vec<usize>, _> = v.split(',').map(|n| n.trim().parse::<usize>()).collect();
            match parsed {
                Ok(l) if !l.is_empty() && l.iter().all(|n| (1..=1024).contains(n)) => l,
                _ => {
                    eprintln!("OMRAFT_BENCH_LEVELS={v:?}: expected concurrencies from 1 to 1024, comma-separated");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let phases = Phases {
        warmup: Duration::from_secs_f64(if full { 1.0 } else { 0.2 }),
        measure: Duration::from_secs_f64(secs),
        timeout: Duration::from_secs(15),
    };
    let omd = omd_path();
    eprintln!("commit bench: {} , {secs} s per level", omd.display());
    let mut cluster = match Cluster::spawn(&omd) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("commit bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // An interrupted run still stops its daemons: SIGINT and SIGTERM end it like a failure.
    let result = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
        tokio::select! {
            r = bench(&mut cluster, phases, &levels) => r,
            _ = tokio::signal::ctrl_c() => Err("interrupted (SIGINT)".to_string()),
            _ = term.recv() => Err("interrupted (SIGTERM)".to_string()),
        }
    });
    drop(rt);

    if result.is_err() {
        eprint!("{}", cluster.log_tails(30));
    }
    let warnings = cluster.log_warnings(5);
    cluster.stop();
    for d in &cluster.daemons {
        eprintln!("  {}: {}", d.name, d.exited.as_deref().unwrap_or("?"));
    }
    for w in &warnings {
        eprintln!("  daemon log: {w}");
    }
    drop(cluster);

    match result {
        Err(e) => {
            eprintln!("commit bench failed: {e}");
            ExitCode::FAILURE
        }
        Ok(out) => {
            for n in &out.notes {
                eprintln!("  note: {n}");
            }
            print_table(&out.rows);
            match out.aborted {
                Some(why) => {
                    eprintln!("commit bench aborted: {why}");
                    ExitCode::FAILURE
                }
                None => {
                    print_json(&out.rows, phases);
                    ExitCode::SUCCESS
                }
            }
        }
    }
}
