//! Scale benchmark: how a 3-node omraft cluster on loopback copes with many services, each with
//! a replicated DRBD volume: create throughput as the state grows, then read latencies and the
//! daemons' memory with the state full.
//!
//! Before any daemon starts, it applies up to 20,000 services like those below (a 1G shared
//! DRBD volume on three nodes) to a `ClusterState` in its own process and reports the state's
//! resident bytes per service and its volume.
//!
//! `cargo bench --bench scale` starts three `omd` (the binaries cargo built for this bench) in a
//! temporary directory, all three data nodes reporting a 100 TiB volume group `data`, and joins
//! them. Through the leader's unix socket it sets `cluster.name`, creates the `system/cfg/drbd`
//! config map with a `live-migration` key and declares the pool `drbdvm` (drbd, vg data,
//! template live-migration), then waits until the pool shows every node's report. It then
//! creates OMRAFT_SCALE_N services (default 10000) `bench/svc/s<i>` with
//! `volume#data.size=1G` and `volume#data.shared=true`, 16 in flight, each creating its volume
//! `bench/vol/s<i>` allocated on the three nodes with a DRBD minor and port. Above 50,000
//! services (at most 100,000), every second one has a local volume in the lvm pool `local`
//! instead: DRBD ports run out near 58,000 resources.
//!
//! With the state full it times, on the leader's and a follower's socket, `ObjectList */svc/*`
//! and `Mon` (median of 10 calls on one connection), and the real `omctl mon` and
//! `omctl object ls */svc/*` end to end (median of 5 runs), then reads each daemon's VmRSS and
//! VmHWM from /proc. Last, a fourth `omd` (n4) joins the full cluster: the time of its `Join`
//! call and until it applied the leader's last entry, the snapshot it installed (from its log:
//! bytes and the install's time), and the slowest of the creates a writer keeps making through
//! the leader meanwhile, one at a time. It prints tables, then one JSON line starting with
//! `{"bench":"scale"`.
//! The targets (omctl mon, its default one-page view, under 100 ms; RSS per daemon under 100 MB
//! up to 10,000 services, under 400 MB up to 100,000) are reported as met or missed, never
//! asserted; more than 1% failed creates aborts the run.
//! MB here are MiB (2^20 bytes).
//!
//! Run without `--bench` (as `cargo test --all-targets` does), it is a short smoke run of 200
//! services. The daemons are stopped (SIGTERM, SIGKILL after 5 s) and the directory removed on
//! every exit, panics, SIGINT and SIGTERM included.

mod harness;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{client, node_status, round, status_text, within, Cluster, Launch, Omd};
use omraft::pb;
use prost::Message;

/// Services created by a full run, unless OMRAFT_SCALE_N says otherwise.
const DEFAULT_N: u64 = 10_000;
/// Services created by a smoke run (without `--bench`).
const SMOKE_N: u64 = 200;
/// Creates in flight, each worker on its own connection to the leader.
const CONCURRENCY: usize = 16;
/// Creates per bucket of the throughput-as-the-state-grows report.
const BUCKET: usize = 1000;
/// A create that takes longer counts as failed.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// No create starts after this long into the creation phase.
const CREATE_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Above this share of failed creates the run aborts (and stops creating).
const MAX_ERROR_RATIO: f64 = 0.01;
/// gRPC calls timed per read, and `omctl` runs per command.
const RPC_RUNS: usize = 10;
const CLI_RUNS: usize = 5;
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Every node is a data node with this volume group: 10,000 x 1 GiB fits many times over.
const VG: &str = "data=100T";
/// The volume group of `VG`, by name.
const VG_NAME: &str = "data";
const POOL: &str = "drbdvm";
/// The local (lvm) pool of the second half of a run above `DRBD_ONLY_MAX` services.
const LOCAL_POOL: &str = "local";
/// The most services a run gives each a replicated volume: DRBD ports (7289 to 65535) are
/// cluster-wide here, one per resource.
const DRBD_ONLY_MAX: u64 = 50_000;
const SELECTOR: &str = "*/svc/*";
const TEMPLATE: &str = "resource {{.Name}} {\n    net { allow-two-primaries yes; }\n}\n";
/// The targets: `omctl mon` (its default view, one page) under 100 ms, and each daemon's
/// resident memory under 100 MB up to 10,000 services, under 400 MB up to 100,000.
const TARGET_MON_MS: f64 = 100.0;
fn target_rss_mb(services: usize) -> f64 {
    if services <= 10_000 {
        100.0
    } else {
        400.0
    }
}

// ---------------------------------------------------------------------------------------------
// Setting the cluster up

fn kv(key: &str, value: &str) -> pb::KeyValue {
    pb::KeyValue {
        key: key.into(),
        value: value.into(),
    }
}

/// cluster.name, the DRBD template config map and its key, the pool; then waits until the pool
/// shows every node's volume group report.
async fn set_up(cluster: &Cluster, leader: &Omd) -> Result<(), String> {
    let mut c = client(leader).await?;
    let limit = Duration::from_secs(15);
    within(limit, "ConfigUpdate cluster.name", async {
        c.config_update(pb::ConfigUpdateRequest {
            set: vec![kv("cluster.name", "scale")],
            unset: vec![],
        })
        .await
        .map_err(status_text)
    })
    .await?;
    within(limit, "ObjectCreate system/cfg/drbd", async {
        c.object_create(pb::ObjectCreateRequest {
            path: "system/cfg/drbd".into(),
            kws: vec![],
            config_text: String::new(),
        })
        .await
        .map_err(status_text)
    })
    .await?;
    within(limit, "KeyPut live-migration", async {
        c.key_put(pb::KeyPutRequest {
            path: "system/cfg/drbd".into(),
            name: "live-migration".into(),
            value: TEMPLATE.as_bytes().to_vec(),
            change: false,
        })
        .await
        .map_err(status_text)
    })
    .await?;
    within(limit, "ConfigUpdate pool#drbdvm", async {
        c.config_update(pb::ConfigUpdateRequest {
            set: vec![
                kv(&format!("pool#{POOL}.type"), "drbd"),
                kv(&format!("pool#{POOL}.vg"), VG_NAME),
                kv(&format!("pool#{POOL}.template"), "live-migration"),
                kv(&format!("pool#{LOCAL_POOL}.type"), "lvm"),
                kv(&format!("pool#{LOCAL_POOL}.vg"), VG_NAME),
            ],
            unset: vec![],
        })
        .await
        .map_err(status_text)
    })
    .await?;

    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(30);
    loop {
        let mut missing = Vec::new();
        for d in &cluster.daemons {
            let req = pb::PoolListRequest {
                name: POOL.into(),
                node: d.name.clone(),
            };
            let got = within(Duration::from_secs(5), "PoolList", async {
                c.pool_list(req).await.map_err(status_text)
            })
            .await;
            match got {
                Ok(r) if r.get_ref().pools.iter().any(|p| p.size > 0) => {}
                Ok(_) => missing.push(format!("{}: no size yet", d.name)),
                Err(e) => missing.push(format!("{}: {e}", d.name)),
            }
        }
        if missing.is_empty() {
            eprintln!(
                "  pool {POOL}: every node's volume group report in after {:.2} s",
                t0.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "pool {POOL} never showed every node's report: {}",
                missing.join("; ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Creating the services

/// Service `i`: a replicated volume; in a run of more than `DRBD_ONLY_MAX` services, every
/// second one a local volume instead (DRBD ports run out near 58,000 resources a node).
fn create_request(i: u64, n: u64) -> pb::ObjectCreateRequest {
    let kws = if n > DRBD_ONLY_MAX && i % 2 == 1 {
        vec![kv("volume#data.size", "1G"), kv("volume#data.pool", LOCAL_POOL)]
    } else {
        vec![kv("volume#data.size", "1G"), kv("volume#data.shared", "true")]
    };
    pb::ObjectCreateRequest {
        path: format!("bench/svc/s{i}"),
        kws,
        config_text: String::new(),
    }
}

/// One successful create: when it started and ended, from the start of the phase.
#[derive(Clone, Copy)]
struct Done {
    start: Duration,
    end: Duration,
}

impl Done {
    fn latency(&self) -> Duration {
        self.end - self.start
    }
}

struct Creates {
    asked: u64,
    /// Successful creates, by completion.
    done: Vec<Done>,
    errors: u64,
    error_samples: Vec<String>,
    /// From the start of the phase to the last completion.
    elapsed: Duration,
    /// Why the phase ended before `asked` creates were attempted.
    cut_short: Option<String>,
}

#[derive(Default)]
struct Worker {
    done: Vec<Done>,
    errors: u64,
    error_samples: Vec<String>,
}

const MAX_SAMPLES: usize = 5;

/// Creates services 0..n through `d`, CONCURRENCY in flight, each worker on its own
/// connection, pulling service numbers from a shared counter. Bounded: at most n creates, none
/// started after CREATE_DEADLINE or once too many failed, each lasting at most CREATE_TIMEOUT.
async fn create_services(d: &Omd, n: u64) -> Result<Creates, String> {
    let max_errors = ((n as f64 * MAX_ERROR_RATIO) as u64).max(10);
    let next = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let deadline = t0 + CREATE_DEADLINE;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let mut c = client(d).await?;
        let (next, completed, failed, stop) = (next.clone(), completed.clone(), failed.clone(), stop.clone());
        tasks.spawn(async move {
            let mut w = Worker::default();
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let start = t0.elapsed();
                let outcome = match tokio::time::timeout(CREATE_TIMEOUT, c.object_create(create_request(i, n))).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(s)) => Err(status_text(s)),
                    Err(_) => Err(format!("no answer within {CREATE_TIMEOUT:?}")),
                };
                match outcome {
                    Ok(()) => {
                        w.done.push(Done {
                            start,
                            end: t0.elapsed(),
                        });
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        w.errors += 1;
                        if w.error_samples.len() < MAX_SAMPLES && !w.error_samples.contains(&e) {
                            w.error_samples.push(e);
                        }
                        if failed.fetch_add(1, Ordering::Relaxed) + 1 > max_errors {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
            w
        });
    }
    let mut out = Creates {
        asked: n,
        done: Vec::with_capacity(n as usize),
        errors: 0,
        error_samples: Vec::new(),
        elapsed: Duration::ZERO,
        cut_short: None,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    let (mut last_count, mut last_at) = (0u64, Instant::now());
    loop {
        tokio::select! {
            joined = tasks.join_next() => {
                let Some(joined) = joined else { break };
                let w = match joined {
                    Ok(w) => w,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => return Err(format!("a create worker was cancelled: {e}")),
                };
                out.done.extend(w.done);
                out.errors += w.errors;
                for e in w.error_samples {
                    if out.error_samples.len() < MAX_SAMPLES && !out.error_samples.contains(&e) {
                        out.error_samples.push(e);
                    }
                }
            }
            _ = tick.tick() => {
                let count = completed.load(Ordering::Relaxed);
                eprintln!(
                    "  {count}/{n} services after {:.0} s, {:.0}/s over the last {:.0} s, {} failed",
                    t0.elapsed().as_secs_f64(),
                    (count - last_count) as f64 / last_at.elapsed().as_secs_f64(),
                    last_at.elapsed().as_secs_f64(),
                    failed.load(Ordering::Relaxed)
                );
                (last_count, last_at) = (count, Instant::now());
            }
        }
    }
    out.done.sort_by_key(|d| d.end);
    out.elapsed = out.done.last().map_or(t0.elapsed(), |d| d.end);
    let attempted = next.load(Ordering::Relaxed).min(n);
    if stop.load(Ordering::Relaxed) {
        out.cut_short = Some(format!("stopped after {} failed creates", out.errors));
    } else if attempted < n {
        out.cut_short = Some(format!(
            "stopped at the {CREATE_DEADLINE:?} deadline after {attempted} creates"
        ));
    }
    Ok(out)
}

/// Nearest-rank percentile of sorted latencies, in milliseconds (0 when empty).
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

fn sorted_latencies(done: &[Done]) -> Vec<Duration> {
    let mut l: Vec<Duration> = done.iter().map(Done::latency).collect();
    l.sort_unstable();
    l
}

/// Creates BUCKET..: the state held `from` services when the bucket's first one completed.
struct Bucket {
    from: usize,
    to: usize,
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn buckets(done: &[Done]) -> Vec<Bucket> {
    let mut out = Vec::new();
    let mut prev_end = Duration::ZERO;
    for (k, chunk) in done.chunks(BUCKET).enumerate() {
        let end = chunk.last().expect("chunks are not empty").end;
        let secs = (end - prev_end).as_secs_f64();
        let lat = sorted_latencies(chunk);
        out.push(Bucket {
            from: k * BUCKET,
            to: k * BUCKET + chunk.len(),
            per_s: if secs > 0.0 { chunk.len() as f64 / secs } else { 0.0 },
            p50_ms: percentile_ms(&lat, 50.0),
            p99_ms: percentile_ms(&lat, 99.0),
        });
        prev_end = end;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The daemons' processes

/// CPU seconds (user + system) a process has used, from /proc/<pid>/stat.
fn cpu_secs(pid: u32, ticks_per_s: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_s)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// (VmRSS, VmHWM) in MiB, from /proc/<pid>/status.
fn memory_mb(pid: u32) -> Result<(f64, f64), String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let field = |name: &str| -> Result<f64, String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Waits until every node has applied the leader's last log entry.
async fn wait_applied(cluster: &Cluster, leader: &Omd) -> Result<Duration, String> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(120);
    let target = node_status(leader).await?.last_log_index.unwrap_or(0);
    for d in &cluster.daemons {
        wait_node_applied(d, target, deadline, "after the last create").await?;
    }
    Ok(t0.elapsed())
}

/// Waits until `d` has applied `target`, polling every 20 ms until `deadline`; the error
/// says how far it got, 120 s `since` what.
async fn wait_node_applied(d: &Omd, target: u64, deadline: Instant, since: &str) -> Result<(), String> {
    loop {
        let applied = node_status(d).await?.applied_index;
        if applied.unwrap_or(0) >= target {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} had applied {applied:?} of {target} entries 120 s {since}",
                d.name
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// A late joiner: a fourth node joins the full cluster

/// The node that joins last.
const LATE: &str = "n4";

/// How the late joiner came in.
struct Late {
    /// Its `Join` call, and from its start until it applied what the leader had then.
    join: Duration,
    caught_up: Duration,
    /// The snapshot it installed, if the leader sent one (its log says so): bytes, and the
    /// install's own time (decode, write, swap).
    snapshot_bytes: Option<u64>,
    install_ms: Option<u64>,
    /// Writes through the leader meanwhile, one at a time: count and slowest.
    writes: usize,
    slowest_write: Duration,
}

/// Starts a fourth `omd`, joins it through `leader` and times it until it applied what the
/// leader had when it asked to join (a state this large reaches it as a snapshot: the leader
/// keeps only the last entries), while a writer keeps creating config maps through the
/// leader, one at a time, to see whether the catch-up stalls writes.
async fn late_joiner(cluster: &mut Cluster, leader: &'static str) -> Result<Late, String> {
    let addr = format!("127.0.0.1:{}", harness::free_ports(1)[0]);
    let launch = Launch {
        args: vec!["--report-vg".to_string(), VG.to_string()],
        ..Launch::default()
    };
    let d = Omd::launch(LATE, &cluster.dir().join(LATE), &addr, launch)?;
    cluster.daemons.push(d);
    harness::wait_ready_from(cluster, cluster.daemons.len() - 1).await?;
    let (ld, d) = (
        cluster.by_name(leader).expect("our daemon"),
        cluster.by_name(LATE).expect("our daemon"),
    );
    let token = harness::join_token(ld, LATE).await?;
    let target = node_status(ld).await?.last_log_index.unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (mut c, stop) = (client(ld).await?, stop.clone());
        tokio::spawn(async move {
            let (mut writes, mut slowest, mut i) = (0usize, Duration::ZERO, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let req = pb::ObjectCreateRequest {
                    path: format!("bench/cfg/during{i}"),
                    kws: vec![],
                    config_text: String::new(),
                };
                i += 1;
                let t = Instant::now();
                within(CREATE_TIMEOUT, "a create while a node joins", async {
                    c.object_create(req).await.map_err(status_text)
                })
                .await?;
                slowest = slowest.max(t.elapsed());
                writes += 1;
            }
            Ok::<_, String>((writes, slowest))
        })
    };
    let t0 = Instant::now();
    let caught_up = async {
        harness::join(d, &ld.addr, token, false).await?;
        let join = t0.elapsed();
        wait_node_applied(d, target, t0 + Duration::from_secs(120), "after asking to join").await?;
        Ok::<_, String>((join, t0.elapsed()))
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    let (writes, slowest_write) = writer.await.map_err(|e| format!("the writer failed: {e}"))??;
    let (join, caught_up) = caught_up?;
    let log = d.log();
    let field = |name: &str| -> Option<u64> {
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("installed a snapshot from the leader"))?;
        let at = line.find(&format!("{name}="))? + name.len() + 1;
        line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    Ok(Late {
        join,
        caught_up,
        snapshot_bytes: field("bytes"),
        install_ms: field("ms"),
        writes,
        slowest_write,
    })
}

// ---------------------------------------------------------------------------------------------
// Reads with the state full

/// Median of durations, in milliseconds: the middle one, or the mean of the middle two.
fn median_ms(mut d: Vec<Duration>) -> f64 {
    if d.is_empty() {
        return 0.0;
    }
    d.sort_unstable();
    let m = d.len() / 2;
    let ms = |x: Duration| x.as_secs_f64() * 1000.0;
    if d.len() % 2 == 1 {
        ms(d[m])
    } else {
        (ms(d[m - 1]) + ms(d[m])) / 2.0
    }
}

/// Times `runs` sequential calls; returns the median in ms and the last call's result.
async fn timed<T, F, Fut>(what: &str, runs: usize, mut call: F) -> Result<(f64, T), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let t0 = Instant::now();
        let r = within(READ_TIMEOUT, what, call()).await?;
        times.push(t0.elapsed());
        last = Some(r);
    }
    Ok((median_ms(times), last.expect("at least one run")))
}

/// What one node's reads measured.
#[derive(Default)]
struct Reads {
    ls_ms: f64,
    ls_rows: usize,
    ls_bytes: usize,
    mon_ms: f64,
    mon_bytes: usize,
    cli_ls_ms: f64,
    cli_ls_bytes: usize,
    cli_mon_ms: f64,
    cli_mon_bytes: usize,
}

/// The real omctl against `d`'s socket; returns stdout's length.
async fn omctl(omctl: &Path, d: &Omd, args: &[&str]) -> Result<usize, String> {
    let out = tokio::process::Command::new(omctl)
        .arg("--server")
        .arg(d.server())
        .args(args)
        .env_remove("OMCTL_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("running {}: {e}", omctl.display()))?;
    if !out.status.success() {
        return Err(format!(
            "omctl {} on {}: {} {}",
            args.join(" "),
            d.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout.len())
}

async fn reads(d: &Omd, omctl_bin: &Path) -> Result<Reads, String> {
    let c = client(d).await?;
    let mut r = Reads::default();
    let (ms, reply) = timed("ObjectList", RPC_RUNS, || {
        let mut c = c.clone();
        async move {
            c.object_list(pb::ObjectListRequest {
                selector: SELECTOR.into(),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(status_text)
        }
    })
    .await?;
    (r.ls_ms, r.ls_rows, r.ls_bytes) = (ms, reply.objects.len(), reply.encoded_len());
    let (ms, reply) = timed("Mon", RPC_RUNS, || {
        let mut c = c.clone();
        async move {
            c.mon(pb::MonRequest::default())
                .await
                .map(|r| r.into_inner())
                .map_err(status_text)
        }
    })
    .await?;
    (r.mon_ms, r.mon_bytes) = (ms, reply.encoded_len());
    (r.cli_ls_ms, r.cli_ls_bytes) = timed("omctl object ls", CLI_RUNS, || {
        omctl(omctl_bin, d, &["object", "ls", SELECTOR])
    })
    .await?;
    (r.cli_mon_ms, r.cli_mon_bytes) = timed("omctl mon", CLI_RUNS, || omctl(omctl_bin, d, &["mon"])).await?;
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// The run

struct NodeFigures {
    name: &'static str,
    role: &'static str,
    rss_mb: f64,
    hwm_mb: f64,
    /// CPU seconds used while the services were created.
    create_cpu_s: f64,
    data_dir_mb: f64,
}

struct Outcome {
    leader: &'static str,
    follower: &'static str,
    creates: Creates,
    /// None when the creates aborted the run.
    after: Option<After>,
    notes: Vec<String>,
}

struct After {
    catch_up: Duration,
    leader: Reads,
    follower: Reads,
    late: Late,
    nodes: Vec<NodeFigures>,
}

async fn bench(cluster: &mut Cluster, n: u64, omctl_bin: &Path) -> Result<Outcome, String> {
    let (leader, follower) = harness::form(cluster).await?;
    let ld = cluster.by_name(leader).expect("our daemon");
    set_up(cluster, ld).await?;
    cluster.check_alive()?;

    let ticks = clock_ticks();
    let cpu = |c: &Cluster| -> Vec<f64> {
        c.daemons
            .iter()
            .map(|d| d.pid().and_then(|pid| cpu_secs(pid, ticks)).unwrap_or(0.0))
            .collect()
    };
    let cpu_before = cpu(cluster);
    eprintln!("  creating {n} services through {leader}, {CONCURRENCY} in flight");
    let ld = cluster.by_name(leader).expect("our daemon");
    let creates = create_services(ld, n).await?;
    let cpu_after = cpu(cluster);
    eprintln!(
        "  {} services created in {:.1} s ({:.0}/s), {} failed",
        creates.done.len(),
        creates.elapsed.as_secs_f64(),
        creates.done.len() as f64 / creates.elapsed.as_secs_f64().max(1e-9),
        creates.errors
    );
    let mut out = Outcome {
        leader,
        follower,
        creates,
        after: None,
        notes: Vec::new(),
    };
    let c = &out.creates;
    if !c.error_samples.is_empty() {
        out.notes
            .push(format!("create errors: {}", c.error_samples.join(" | ")));
    }
    if let Some(why) = &c.cut_short {
        out.notes.push(format!("creation {why}"));
    }
    if c.errors as f64 > c.asked as f64 * MAX_ERROR_RATIO {
        return Ok(out);
    }
    cluster.check_alive()?;
    let (now_leader, _) = harness::roles(cluster).await?;
    if now_leader != leader {
        out.notes.push(format!(
            "leadership moved from {leader} to {now_leader} during the creates"
        ));
    }

    let ld = cluster.by_name(leader).expect("our daemon");
    let catch_up = wait_applied(cluster, ld).await?;
    eprintln!(
        "  every node applied the last entry {:.2} s after the last create",
        catch_up.as_secs_f64()
    );
    eprintln!("  timing reads on {leader} and {follower}");
    let leader_reads = reads(ld, omctl_bin).await?;
    let follower_reads = reads(cluster.by_name(follower).expect("our daemon"), omctl_bin).await?;
    let created = out.creates.done.len();
    for (who, r) in [(leader, &leader_reads), (follower, &follower_reads)] {
        if r.ls_rows != created {
            out.notes.push(format!(
                "ObjectList {SELECTOR} on {who} returned {} rows for {created} created services",
                r.ls_rows
            ));
        }
    }
    let mut nodes = Vec::new();
    for (i, d) in cluster.daemons.iter().enumerate() {
        let pid = d.pid().ok_or_else(|| format!("{} is not running", d.name))?;
        let (rss_mb, hwm_mb) = memory_mb(pid)?;
        nodes.push(NodeFigures {
            name: harness::NODES[i],
            role: if d.name == leader { "leader" } else { "follower" },
            rss_mb,
            hwm_mb,
            create_cpu_s: cpu_after[i] - cpu_before[i],
            data_dir_mb: dir_bytes(&d.dir) as f64 / (1u64 << 20) as f64,
        });
    }
    eprintln!("  {LATE} joins the cluster late");
    let late = late_joiner(cluster, leader).await?;
    eprintln!(
        "  {LATE} applied the leader's last entry {:.2} s after asking to join",
        late.caught_up.as_secs_f64()
    );
    cluster.check_alive()?;
    out.after = Some(After {
        catch_up,
        leader: leader_reads,
        follower: follower_reads,
        nodes,
        late,
    });
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Report

struct Target {
    what: String,
    value: f64,
    limit: f64,
    unit: &'static str,
}

impl Target {
    fn met(&self) -> bool {
        self.value < self.limit
    }
}

fn targets(out: &Outcome, a: &After) -> Vec<Target> {
    let mut t = vec![
        Target {
            what: format!("omctl mon via leader ({})", out.leader),
            value: a.leader.cli_mon_ms,
            limit: TARGET_MON_MS,
            unit: "ms",
        },
        Target {
            what: format!("omctl mon via follower ({})", out.follower),
            value: a.follower.cli_mon_ms,
            limit: TARGET_MON_MS,
            unit: "ms",
        },
    ];
    for n in &a.nodes {
        t.push(Target {
            what: format!("VmRSS of {}", n.name),
            value: n.rss_mb,
            limit: target_rss_mb(out.creates.done.len()),
            unit: "MB",
        });
    }
    t
}

fn print_tables(out: &Outcome) {
    let c = &out.creates;
    let lat = sorted_latencies(&c.done);
    let rate = c.done.len() as f64 / c.elapsed.as_secs_f64().max(1e-9);
    println!(
        "creates: {} of {} services (each + 1 volume on 3 nodes), {CONCURRENCY} in flight via leader {}",
        c.done.len(),
        c.asked,
        out.leader
    );
    println!(
        "{:<14} {:>10} {:>8} {:>8} {:>8} {:>7} {:>9}",
        "services", "creates/s", "p50 ms", "p99 ms", "max ms", "errors", "elapsed s"
    );
    println!(
        "{:<14} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>9.1}",
        "all",
        rate,
        percentile_ms(&lat, 50.0),
        percentile_ms(&lat, 99.0),
        percentile_ms(&lat, 100.0),
        c.errors,
        c.elapsed.as_secs_f64()
    );
    for b in buckets(&c.done) {
        println!(
            "{:<14} {:>10.0} {:>8.2} {:>8.2}",
            format!("{}-{}", b.from, b.to),
            b.per_s,
            b.p50_ms,
            b.p99_ms
        );
    }
    let Some(a) = &out.after else { return };
    println!();
    println!(
        "reads with {} services (median ms); every node caught up {:.2} s after the last create",
        c.done.len(),
        a.catch_up.as_secs_f64()
    );
    let (l, f) = (&a.leader, &a.follower);
    let lh = format!("leader ({})", out.leader);
    let fh = format!("follower ({})", out.follower);
    println!("{:<26} {:>14} {:>14} {:>11} {:>14}", "read", lh, fh, "target", "met");
    let met = |v: f64| if v < TARGET_MON_MS { "met" } else { "missed" };
    let rows: [(String, f64, f64, &str, String); 4] = [
        (format!("ObjectList {SELECTOR}"), l.ls_ms, f.ls_ms, "", String::new()),
        ("Mon".into(), l.mon_ms, f.mon_ms, "", String::new()),
        (
            format!("omctl object ls {SELECTOR}"),
            l.cli_ls_ms,
            f.cli_ls_ms,
            "",
            String::new(),
        ),
        (
            "omctl mon".into(),
            l.cli_mon_ms,
            f.cli_mon_ms,
            "< 100 ms",
            format!("{} / {}", met(l.cli_mon_ms), met(f.cli_mon_ms)),
        ),
    ];
    for (what, lv, fv, target, m) in rows {
        println!("{what:<26} {lv:>14.1} {fv:>14.1} {target:>11} {m:>14}");
    }
    println!(
        "  replies: ObjectList {} rows, {} KiB; Mon {} KiB; omctl mon prints {} KiB, object ls {} KiB",
        l.ls_rows,
        l.ls_bytes / 1024,
        l.mon_bytes / 1024,
        l.cli_mon_bytes / 1024,
        l.cli_ls_bytes / 1024
    );
    println!();
    println!(
        "{:<6} {:<9} {:>10} {:>10} {:>14} {:>13} {:>9} {:>7}",
        "node", "role", "VmRSS MB", "VmHWM MB", "create CPU s", "data dir MB", "target", "met"
    );
    for n in &a.nodes {
        println!(
            "{:<6} {:<9} {:>10.1} {:>10.1} {:>14.1} {:>13.1} {:>9} {:>7}",
            n.name,
            n.role,
            n.rss_mb,
            n.hwm_mb,
            n.create_cpu_s,
            n.data_dir_mb,
            format!("< {} MB", target_rss_mb(c.done.len())),
            if n.rss_mb < target_rss_mb(c.done.len()) {
                "met"
            } else {
                "missed"
            }
        );
    }
    println!();
    let l = &a.late;
    let some = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    println!(
        "late joiner {LATE}: joined in {:.2} s, applied the leader's last entry after {:.2} s; \
         snapshot installed: {} bytes in {} ms; {} creates through the leader meanwhile, the slowest {:.1} ms",
        l.join.as_secs_f64(),
        l.caught_up.as_secs_f64(),
        some(l.snapshot_bytes),
        some(l.install_ms),
        l.writes,
        l.slowest_write.as_secs_f64() * 1e3
    );
    println!();
    let ts = targets(out, a);
    let missed: Vec<&Target> = ts.iter().filter(|t| !t.met()).collect();
    if missed.is_empty() {
        println!("targets: all {} met", ts.len());
    } else {
        let list: Vec<String> = missed
            .iter()
            .map(|t| format!("{} {:.1} {} (target < {} {})", t.what, t.value, t.unit, t.limit, t.unit))
            .collect();
        println!("targets: {} of {} missed: {}", missed.len(), ts.len(), list.join("; "));
    }
}

#[derive(serde::Serialize)]
struct JsonBucket {
    from: usize,
    to: usize,
    creates_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(serde::Serialize)]
struct JsonReads {
    leader: f64,
    follower: f64,
    /// omctl against the leader's socket.
    cli: f64,
    cli_follower: f64,
}

#[derive(serde::Serialize)]
struct JsonTarget {
    what: String,
    value: f64,
    limit: f64,
    unit: &'static str,
    met: bool,
}

#[derive(serde::Serialize)]
struct JsonReport {
    bench: &'static str,
    n: u64,
    created: usize,
    errors: u64,
    concurrency: usize,
    via: &'static str,
    creates_per_s: f64,
    create_secs: f64,
    buckets: Vec<JsonBucket>,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    catch_up_s: f64,
    object_ls_ms: JsonReads,
    object_ls_rows: usize,
    mon_ms: JsonReads,
    mon_reply_bytes: usize,
    rss_mb: BTreeMap<&'static str, f64>,
    hwm_mb: BTreeMap<&'static str, f64>,
    create_cpu_s: BTreeMap<&'static str, f64>,
    data_dir_mb: BTreeMap<&'static str, f64>,
    state_services: u64,
    state_bytes_per_service: i64,
    late_join_s: f64,
    late_caught_up_s: f64,
    late_snapshot_bytes: Option<u64>,
    late_install_ms: Option<u64>,
    late_writes: usize,
    late_slowest_write_ms: f64,
    leader: &'static str,
    follower: &'static str,
    targets: Vec<JsonTarget>,
    nproc: usize,
    cpu: String,
    os: &'static str,
    arch: &'static str,
}

/// `state`: (services, bytes per service) of `state_bytes_per_service`.
fn print_json(out: &Outcome, a: &After, state: (u64, i64)) {
    let c = &out.creates;
    let lat = sorted_latencies(&c.done);
    let per_node = |f: &dyn Fn(&NodeFigures) -> f64| -> BTreeMap<&'static str, f64> {
        a.nodes.iter().map(|n| (n.name, round(f(n), 1))).collect()
    };
    let report = JsonReport {
        bench: "scale",
        n: c.asked,
        created: c.done.len(),
        errors: c.errors,
        concurrency: CONCURRENCY,
        via: "leader",
        creates_per_s: round(c.done.len() as f64 / c.elapsed.as_secs_f64().max(1e-9), 1),
        create_secs: round(c.elapsed.as_secs_f64(), 2),
        buckets: buckets(&c.done)
            .into_iter()
            .map(|b| JsonBucket {
                from: b.from,
                to: b.to,
                creates_per_s: round(b.per_s, 1),
                p50_ms: round(b.p50_ms, 3),
                p99_ms: round(b.p99_ms, 3),
            })
            .collect(),
        p50_ms: round(percentile_ms(&lat, 50.0), 3),
        p99_ms: round(percentile_ms(&lat, 99.0), 3),
        max_ms: round(percentile_ms(&lat, 100.0), 3),
        catch_up_s: round(a.catch_up.as_secs_f64(), 3),
        object_ls_ms: JsonReads {
            leader: round(a.leader.ls_ms, 3),
            follower: round(a.follower.ls_ms, 3),
            cli: round(a.leader.cli_ls_ms, 3),
            cli_follower: round(a.follower.cli_ls_ms, 3),
        },
        object_ls_rows: a.leader.ls_rows,
        mon_ms: JsonReads {
            leader: round(a.leader.mon_ms, 3),
            follower: round(a.follower.mon_ms, 3),
            cli: round(a.leader.cli_mon_ms, 3),
            cli_follower: round(a.follower.cli_mon_ms, 3),
        },
        mon_reply_bytes: a.leader.mon_bytes,
        rss_mb: per_node(&|n| n.rss_mb),
        hwm_mb: per_node(&|n| n.hwm_mb),
        create_cpu_s: per_node(&|n| n.create_cpu_s),
        data_dir_mb: per_node(&|n| n.data_dir_mb),
        state_services: state.0,
        state_bytes_per_service: state.1,
        late_join_s: round(a.late.join.as_secs_f64(), 3),
        late_caught_up_s: round(a.late.caught_up.as_secs_f64(), 3),
        late_snapshot_bytes: a.late.snapshot_bytes,
        late_install_ms: a.late.install_ms,
        late_writes: a.late.writes,
        late_slowest_write_ms: round(a.late.slowest_write.as_secs_f64() * 1e3, 3),
        leader: out.leader,
        follower: out.follower,
        targets: targets(out, a)
            .into_iter()
            .map(|t| JsonTarget {
                met: t.met(),
                what: t.what,
                value: round(t.value, 1),
                limit: t.limit,
                unit: t.unit,
            })
            .collect(),
        nproc: harness::nproc(),
        cpu: harness::cpu_model(),
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
    };
    println!("{}", serde_json::to_string(&report).expect("serializing the report"));
}

/// Services of the in-process measure of the state's size (`state_bytes_per_service`).
const STATE_N: u64 = 20_000;

/// This process's resident bytes (/proc/self/statm).
fn resident_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<i64>().ok())
        .unwrap_or(0)
        * 4096
}

/// The state's resident bytes per service and its volume: `n` services as the cluster creates
/// them (a 1G shared volume on three nodes, DRBD allocated), applied to a `ClusterState` in
/// this process, which is single-threaded then; the growth of its resident memory over `n`.
fn state_bytes_per_service(n: u64) -> Result<i64, String> {
    use omraft::config::ini::Ini;
    use omraft::model::objects::{derived_uuid, KeyMode};
    use omraft::model::path::ObjectPath;
    use omraft::model::{ClusterState, Command, ConfigKey, Response};
    let mut s = ClusterState::default();
    let mut ok = |c: Command| match s.apply(&c) {
        Response::Refused(why) => Err(format!("state measure: {c}: {why:?}")),
        _ => Ok(()),
    };
    let set = |pairs: &[(&str, &str)]| Command::UpdateConfig {
        set: pairs
            .iter()
            .map(|(k, v)| (ConfigKey::parse(k).expect("a cluster key").0, v.to_string()))
            .collect(),
        unset: vec![],
    };
    let path = |p: &str| ObjectPath::parse(p).expect("a path");
    let create = |p: &str, text: &str| {
        let mut config = Ini::parse(text).expect("a configuration");
        config.set("DEFAULT", "id", &derived_uuid(p)).expect("one line");
        Command::CreateObject { path: path(p), config }
    };
    ok(Command::Bootstrap {
        node_id: 1,
        name: "n1".into(),
        addr: "127.0.0.1:1".into(),
    })?;
    for (name, addr) in [("n2", "127.0.0.1:2"), ("n3", "127.0.0.1:3")] {
        ok(Command::AddNode {
            name: name.into(),
            addr: addr.into(),
            witness: false,
            token: None,
        })?;
    }
    for node_id in 1..=3 {
        ok(Command::ReportVolumeGroups {
            node_id,
            vgs: BTreeMap::from([(VG_NAME.to_string(), 100u64 << 40)]),
        })?;
    }
    ok(set(&[("cluster.name", "bench")]))?;
    ok(create("system/cfg/drbd", ""))?;
    ok(Command::PutKey {
        path: path("system/cfg/drbd"),
        key: "live-migration".into(),
        value: b"resource {{.Name}} {}".to_vec(),
        mode: KeyMode::Add,
    })?;
    ok(set(&[
        (&format!("pool#{POOL}.type"), "drbd"),
        (&format!("pool#{POOL}.vg"), VG_NAME),
        (&format!("pool#{POOL}.template"), "live-migration"),
    ]))?;
    let before = resident_bytes();
    for i in 0..n {
        ok(create(
            &format!("bench/svc/s{i}"),
            "[volume#data]\nsize = 1G\nshared = true\n",
        ))?;
    }
    let grown = resident_bytes() - before;
    drop(s);
    Ok(grown / n as i64)
}

fn main() -> ExitCode {
    // DRBD ports are u16 from 7289: at most 58,246 volumes.
    let n = match harness::count_from_env("OMRAFT_SCALE_N", "services", 1..=100_000, DEFAULT_N, SMOKE_N) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let state_n = n.min(STATE_N);
    let state_bytes = match state_bytes_per_service(state_n) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("scale bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let omctl_bin = PathBuf::from(support::omd::OMCTL);
    eprintln!("scale bench: {} , {n} services", support::omd::OMD);
    let mut cluster = match Cluster::spawn_with(|_| vec!["--report-vg".to_string(), VG.to_string()]) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("scale bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    // An interrupted run still stops its daemons: SIGINT and SIGTERM end it like a failure.
    let result = harness::run_interruptible(bench(&mut cluster, n, &omctl_bin));
    cluster.finish(result.is_err());

    match result {
        Err(e) => {
            eprintln!("scale bench failed: {e}");
            ExitCode::FAILURE
        }
        Ok(out) => {
            for note in &out.notes {
                eprintln!("  note: {note}");
            }
            print_tables(&out);
            println!(
                "state in one process (model only, {state_n} services applied): {} bytes per service and its volume",
                state_bytes
            );
            match &out.after {
                None => {
                    eprintln!(
                        "scale bench aborted: {} of {} creates failed",
                        out.creates.errors, out.creates.asked
                    );
                    ExitCode::FAILURE
                }
                Some(a) => {
                    print_json(&out, a, (state_n, state_bytes));
                    ExitCode::SUCCESS
                }
            }
        }
    }
}
