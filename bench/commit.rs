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
//! Then the largest values: OMRAFT_BENCH_LARGE (default 8; 2 in a smoke run) keys of 1 MiB,
//! the most a key may hold, put one at a time into `bench/cfg/big`, alternately through the
//! leader and the follower. Their commit times are printed with the Raft term before and after:
//! a term that moved means a value this size cost an election.
//!
//! Side by side with etcd: when an `etcd` binary is found (OMRAFT_ETCD, else the PATH; Debian's
//! `etcd-server`), three etcd members start on loopback afterwards and the same levels run
//! against them, through their leader then a follower, with `Put`s of a key and a value of the
//! same size, each writer on its own connection (`bench/etcd.rs`); a second table gives both
//! figures and omraft's share of etcd's. OMRAFT_BENCH_ETCD=0 leaves etcd out.
//!
//! Run without `--bench` (as `cargo test --all-targets` does), it is a short smoke run.
//! The daemons are stopped (SIGTERM, SIGKILL after 5 s) and the directory removed on every exit,
//! panics, SIGINT and SIGTERM included.

mod etcd;
mod harness;
mod runner;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::{client, cpu_model, round, status_text, within, Cluster, Omd, NODES};
use omraft::pb;
use runner::{Level, Phases};

/// Writes in flight, per level, unless OMRAFT_BENCH_LEVELS lists others (e.g. `64,1`).
const CONCURRENCY: [usize; 3] = [1, 16, 64];
/// Above this share of failed writes a level aborts the benchmark.
const MAX_ERROR_RATIO: f64 = 0.01;

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
async fn writers(d: &Omd, n: usize) -> Result<Vec<impl runner::Writer>, String> {
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

/// The size of each large value: the most a key may hold.
const LARGE_BYTES: usize = omraft::model::objects::MAX_KEY_BYTES;

/// The large-value phase: each write's commit time, by the way it went, and the Raft term
/// before and after.
#[derive(Default)]
struct Large {
    leader_ms: Vec<f64>,
    follower_ms: Vec<f64>,
    terms: (u64, u64),
}

async fn term(d: &Omd) -> Result<u64, String> {
    Ok(harness::node_status(d).await?.term)
}

async fn large_values(cluster: &Cluster, leader: &str, follower: &str, writes: usize) -> Result<Large, String> {
    let (l, f) = (
        cluster.by_name(leader).expect("ours"),
        cluster.by_name(follower).expect("ours"),
    );
    let path = "bench/cfg/big".to_string();
    let mut lc = client(l).await?;
    within(Duration::from_secs(30), "ObjectCreate", async {
        lc.object_create(pb::ObjectCreateRequest {
            path: path.clone(),
            ..Default::default()
        })
        .await
        .map_err(status_text)
    })
    .await?;
    let mut out = Large {
        terms: (term(l).await?, 0),
        ..Large::default()
    };
    for i in 0..writes {
        let (via, d) = if i % 2 == 0 { (leader, l) } else { (follower, f) };
        let mut c = client(d).await?;
        let put = pb::KeyPutRequest {
            path: path.clone(),
            name: format!("v{i}"),
            value: vec![b'v'; LARGE_BYTES],
            change: false,
        };
        let t = std::time::Instant::now();
        within(Duration::from_secs(30), "KeyPut of 1 MiB", async {
            c.key_put(put)
                .await
                .map_err(|e| format!("through {via}: {}", status_text(e)))
        })
        .await?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if d.name == leader {
            &mut out.leader_ms
        } else {
            &mut out.follower_ms
        }
        .push(ms);
    }
    out.terms.1 = term(l).await?;
    Ok(out)
}

struct Row {
    system: &'static str,
    via: String,
    /// Writes issued before this level: the state already holds about this many pools.
    prior_writes: u64,
    level: Level,
}

struct Outcome {
    rows: Vec<Row>,
    etcd_version: Option<String>,
    aborted: Option<String>,
    notes: Vec<String>,
    large: Large,
    total_ok: u64,
}

/// The same levels against three etcd members, through their leader then a follower.
async fn bench_etcd(bin: &std::path::Path, phases: Phases, levels: &[usize], out: &mut Outcome) -> Result<(), String> {
    let mut members = etcd::Etcd::start(bin)?;
    let leader = members.leader().await?;
    eprintln!("  etcd: {} , leader {leader}", members.version);
    out.etcd_version = Some(members.version.clone());
    let next = Arc::new(AtomicU64::new(0));
    for (via, url) in [("leader", leader.clone()), ("follower", members.follower(&leader))] {
        for &n in levels {
            let ws = etcd::writers(&url, n).await?;
            let prior_writes = next.load(Ordering::Relaxed);
            let level = runner::run_level(ws, next.clone(), phases).await;
            eprintln!(
                "  etcd {via} x{n}: {} writes, {:.0}/s, {} errors",
                level.writes,
                level.writes_per_sec(),
                level.errors
            );
            if !level.error_samples.is_empty() {
                out.notes
                    .push(format!("etcd {via} x{n} errors: {}", level.error_samples.join(" | ")));
            }
            if level.error_ratio() > MAX_ERROR_RATIO {
                return Err(format!(
                    "etcd: {:.1}% of the writes failed at {via} x{n}",
                    level.error_ratio() * 100.0
                ));
            }
            out.rows.push(Row {
                system: "etcd",
                via: format!("{via} ({})", url.trim_start_matches("http://")),
                prior_writes,
                level,
            });
        }
    }
    Ok(())
}

async fn bench(cluster: &mut Cluster, phases: Phases, levels: &[usize], large: usize) -> Result<Outcome, String> {
    let (leader, follower) = harness::form(cluster).await?;

    let next = Arc::new(AtomicU64::new(0));
    let mut out = Outcome {
        rows: Vec::new(),
        etcd_version: None,
        aborted: None,
        notes: Vec::new(),
        total_ok: 0,
        large: Large::default(),
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
                system: "omraft",
                via: format!("{via} ({name})"),
                prior_writes,
                level,
            });
            if ratio > MAX_ERROR_RATIO {
                out.aborted = Some(format!("{:.1}% of the writes failed at {via} x{n}", ratio * 100.0));
                break 'targets;
            }
            let (now_leader, _) = harness::roles(cluster).await?;
            if now_leader != leader {
                out.notes.push(format!(
                    "leadership moved from {leader} to {now_leader} during {via} x{n}"
                ));
            }
        }
    }

    if out.aborted.is_none() {
        out.large = large_values(cluster, leader, follower, large).await?;
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

/// omraft's figure and etcd's, matched by way (leader, follower) and concurrency.
fn pairs(rows: &[Row]) -> Vec<(&Row, &Row)> {
    let way = |r: &Row| r.via.split(' ').next().unwrap_or("").to_string();
    rows.iter()
        .filter(|r| r.system == "omraft")
        .filter_map(|o| {
            rows.iter()
                .find(|e| e.system == "etcd" && way(e) == way(o) && e.level.concurrency == o.level.concurrency)
                .map(|e| (o, e))
        })
        .collect()
}

fn print_comparison(rows: &[Row]) {
    let pairs = pairs(rows);
    if pairs.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<9} {:>11} {:>26} {:>26} {:>13}",
        "via", "concurrency", "etcd writes/s (p50/p99 ms)", "omraft writes/s (p50/p99)", "omraft/etcd"
    );
    let cell = |l: &Level| {
        format!(
            "{:.0} ({:.1} / {:.1})",
            l.writes_per_sec(),
            l.percentile_ms(50.0),
            l.percentile_ms(99.0)
        )
    };
    for (o, e) in pairs {
        println!(
            "{:<9} {:>11} {:>26} {:>26} {:>13.2}",
            o.via.split(' ').next().unwrap_or(""),
            o.level.concurrency,
            cell(&e.level),
            cell(&o.level),
            o.level.writes_per_sec() / e.level.writes_per_sec().max(f64::MIN_POSITIVE)
        );
    }
}

#[derive(serde::Serialize)]
struct JsonRatio<'a> {
    via: &'a str,
    concurrency: usize,
    omraft_per_etcd: f64,
}

#[derive(serde::Serialize)]
struct JsonLevel<'a> {
    system: &'static str,
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
struct JsonLarge {
    bytes: usize,
    writes: usize,
    leader_p50_ms: f64,
    leader_max_ms: f64,
    follower_p50_ms: f64,
    follower_max_ms: f64,
    term_before: u64,
    term_after: u64,
}

/// (median, max) of `ms`, 0 when empty.
fn median_max(ms: &[f64]) -> (f64, f64) {
    let mut v = ms.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => (0.0, 0.0),
        n => (v[n / 2], v[n - 1]),
    }
}

fn json_large(l: &Large) -> JsonLarge {
    let (lp, lm) = median_max(&l.leader_ms);
    let (fp, fm) = median_max(&l.follower_ms);
    JsonLarge {
        bytes: LARGE_BYTES,
        writes: l.leader_ms.len() + l.follower_ms.len(),
        leader_p50_ms: round(lp, 3),
        leader_max_ms: round(lm, 3),
        follower_p50_ms: round(fp, 3),
        follower_max_ms: round(fm, 3),
        term_before: l.terms.0,
        term_after: l.terms.1,
    }
}

fn print_large(l: &Large) {
    println!();
    println!(
        "{:<18} {:>8} {:>10} {:>8} {:>12}",
        "1 MiB keys via", "writes", "median ms", "max ms", "Raft term"
    );
    for (via, ms) in [("leader", &l.leader_ms), ("follower", &l.follower_ms)] {
        let (p50, max) = median_max(ms);
        println!(
            "{:<18} {:>8} {:>10.2} {:>8.2} {:>12}",
            via,
            ms.len(),
            p50,
            max,
            format!("{} -> {}", l.terms.0, l.terms.1)
        );
    }
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
    large_values: JsonLarge,
    etcd_version: Option<&'a str>,
    ratios: Vec<JsonRatio<'a>>,
}

fn max_ms(l: &Level) -> f64 {
    l.latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<7} {:<26} {:>11} {:>8} {:>10} {:>8} {:>8} {:>8} {:>7} {:>12}",
        "system", "via", "concurrency", "writes", "writes/s", "p50 ms", "p99 ms", "max ms", "errors", "prior writes"
    );
    for r in rows {
        let l = &r.level;
        println!(
            "{:<7} {:<26} {:>11} {:>8} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>12}",
            r.system,
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

fn print_json(rows: &[Row], large: &Large, etcd_version: Option<&str>, phases: Phases) {
    let report = JsonReport {
        bench: "commit",
        nodes: NODES.len(),
        write: "ConfigUpdate set pool#b<i>.type=lvm pool#b<i>.vg=data",
        secs_per_level: phases.measure.as_secs_f64(),
        warmup_secs: phases.warmup.as_secs_f64(),
        nproc: harness::nproc(),
        cpu: cpu_model(),
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
        levels: rows
            .iter()
            .map(|r| {
                let l = &r.level;
                JsonLevel {
                    system: r.system,
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
        large_values: json_large(large),
        etcd_version,
        ratios: pairs(rows)
            .into_iter()
            .map(|(o, e)| JsonRatio {
                via: o.via.split(' ').next().unwrap_or(""),
                concurrency: o.level.concurrency,
                omraft_per_etcd: round(
                    o.level.writes_per_sec() / e.level.writes_per_sec().max(f64::MIN_POSITIVE),
                    3,
                ),
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
    let large = match std::env::var("OMRAFT_BENCH_LARGE") {
        Err(_) if full => 8,
        Err(_) => 2,
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n <= 1000 => n,
            _ => {
                eprintln!("OMRAFT_BENCH_LARGE={v:?}: expected a number of 1 MiB writes, at most 1000");
                return ExitCode::FAILURE;
            }
        },
    };
    let phases = Phases {
        warmup: Duration::from_secs_f64(if full { 1.0 } else { 0.2 }),
        measure: Duration::from_secs_f64(secs),
        timeout: Duration::from_secs(15),
    };
    eprintln!("commit bench: {} , {secs} s per level", support::omd::OMD);
    let mut cluster = match Cluster::spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("commit bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    // An interrupted run still stops its daemons: SIGINT and SIGTERM end it like a failure.
    let mut result = harness::run_interruptible(bench(&mut cluster, phases, &levels, large));
    cluster.finish(result.is_err());
    // Then etcd, on a machine omraft no longer loads.
    let with_etcd = match std::env::var("OMRAFT_BENCH_ETCD").as_deref() {
        Ok("0") => false,
        Ok(_) => true,
        Err(_) => full,
    };
    if let Ok(out) = &mut result {
        match etcd::find() {
            _ if !with_etcd || out.aborted.is_some() => {}
            None => eprintln!("commit bench: no etcd binary (OMRAFT_ETCD, or etcd on the PATH): omraft alone"),
            Some(bin) => {
                if let Err(e) = harness::run_interruptible(bench_etcd(&bin, phases, &levels, out)) {
                    eprintln!("commit bench: the etcd comparison failed: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }

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
            print_large(&out.large);
            print_comparison(&out.rows);
            match out.aborted {
                Some(why) => {
                    eprintln!("commit bench aborted: {why}");
                    ExitCode::FAILURE
                }
                None => {
                    print_json(&out.rows, &out.large, out.etcd_version.as_deref(), phases);
                    ExitCode::SUCCESS
                }
            }
        }
    }
}
