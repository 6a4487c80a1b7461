//! Failover and live-switch times on the real-host test bed (README: the real-host test bed):
//! real `omd` in network namespaces, real libvirt and a real TCG guest, DRBD and LVM simulated.
//!
//! `cargo bench --bench bed` (as root, where `scripts/testbed up` can build the bed):
//! - live switch: on one bed, the guest switched live back and forth between n1 and n2,
//!   OMRAFT_BED_TRIALS times (default 5): `switch --live --wait` as omctl sees it, libvirt's
//!   migration job (`domjobinfo --completed` on the target: time and downtime), and the gap in
//!   the guest's console (uptime between its last line on the source and its first on the
//!   target); from the daemons' logs, when each phase committed, when the source's migrate
//!   call started and returned and when the source demoted; and omraft's share of the switch:
//!   its total minus the source's libvirt migrate call (libvirt's whole migration: the
//!   target's QEMU started, the copy, then the source's QEMU stopped, which takes over a
//!   second under TCG here, as a plain `virsh destroy` does);
//! - failover: OMRAFT_BED_TRIALS fresh beds, each with the guest on n1, whose host loses power
//!   (every process in it killed); the breakdown from the logs: detection and lease wait (power
//!   loss to the leader's decision), commit, the libvirt start on n2, and its first console
//!   line (the guest booted again).
//!
//! Medians, minimum and maximum, printed as a table, then one JSON line starting with
//! `{"bench":"bed"`. Where the bed cannot be built it says why and succeeds without figures.
//! Run without `--bench` it is a smoke run of 1 trial each. Nothing is asserted about speed.

#[path = "../tests/bed/bed.rs"]
mod bed;
mod harness;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use bed::{cluster, guest_on_n1, Bed};
use harness::{epoch_secs, round, stamps, stats, Stats};

/// Seconds of one live switch.
#[derive(Clone, Default, serde::Serialize)]
struct Live {
    from: String,
    to: String,
    /// `switch --live --wait`, as omctl saw it.
    total_s: f64,
    /// libvirt's migration job, and the guest's downtime in it.
    job_s: Option<f64>,
    downtime_s: Option<f64>,
    /// The guest's uptime between its last console line on the source and its first on the target.
    console_gap_s: Option<f64>,
    /// Seconds after the command started at which each phase change committed (the logs).
    to_dual_primary_s: Option<f64>,
    to_migrating_s: Option<f64>,
    to_finalize_s: Option<f64>,
    to_done_s: Option<f64>,
    /// When the source's migrate call started and returned, and when the source's DRBD volume
    /// was demoted (its log), also after the command started.
    migrate_started_s: Option<f64>,
    migrate_returned_s: Option<f64>,
    source_demoted_s: Option<f64>,
    /// The source's libvirt migrate call, start to return: libvirt's whole migration (the
    /// target's QEMU started, the copy, the source's QEMU stopped), of which the job is a part.
    migrate_call_s: Option<f64>,
    /// omraft's own share: the switch as omctl saw it minus the migrate call.
    overhead_s: Option<f64>,
}

/// Seconds of one failover, from the power loss.
#[derive(Clone, Default, serde::Serialize)]
struct Failover {
    detect_s: Option<f64>,
    commit_s: Option<f64>,
    start_s: Option<f64>,
    console_s: Option<f64>,
    total_s: f64,
}

/// `virsh domjobinfo --completed` on `host`: (elapsed, downtime) in seconds.
fn job(bed: &Bed, host: &str) -> (Option<f64>, Option<f64>) {
    let info = bed.virsh(host, &["domjobinfo", "kvm1", "--completed"]);
    let ms = |key: &str| {
        info.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v / 1000.0)
    };
    (ms("Time elapsed:"), ms("Total downtime:"))
}

fn live_switches(trials: usize) -> Result<Vec<Live>, String> {
    let bed = cluster()?;
    guest_on_n1(&bed, None);
    let mut out = Vec::new();
    for n in 0..trials {
        let (from, to) = if n % 2 == 0 { ("n1", "n2") } else { ("n2", "n1") };
        let seen = bed.console(to).len();
        let t0 = Instant::now();
        let after = epoch_secs(SystemTime::now());
        bed.ok(
            from,
            &[
                "demo/svc/kvm1",
                "switch",
                "--live",
                "--to",
                to,
                "--wait",
                "--time",
                "120s",
            ],
        );
        let total_s = t0.elapsed().as_secs_f64();
        let (job_s, downtime_s) = job(&bed, to);
        let last = bed.console(from).last().copied();
        let t = Instant::now();
        while bed.console(to).len() <= seen && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let now = bed.console(to);
        let first = now.get(seen).copied();
        let console_gap_s = match (last, first) {
            (Some(l), Some(f)) => Some(f.1 - l.1),
            _ => None,
        };
        eprintln!("  live switch {from} -> {to}: {total_s:.2} s");
        let logs: String = ["n1", "n2", "w"]
            .iter()
            .map(|h| std::fs::read_to_string(bed.log_path(h)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        let first = |text: &str, pattern: &str| {
            stamps(text, pattern, after)
                .into_iter()
                .reduce(f64::min)
                .map(|t| t - after)
        };
        let phase = |change: &str| first(&logs, &format!("of demo/svc/kvm1: {change}"));
        let source_log = std::fs::read_to_string(bed.log_path(from)).unwrap_or_default();
        let migrate_started_s = first(&source_log, "migrating kvm1 to");
        let migrate_returned_s = first(&source_log, "migrated kvm1 to");
        let migrate_call_s = migrate_started_s.zip(migrate_returned_s).map(|(s, r)| r - s);
        out.push(Live {
            from: from.into(),
            to: to.into(),
            total_s,
            job_s,
            downtime_s,
            console_gap_s,
            to_dual_primary_s: phase("Prepare -> DualPrimary"),
            to_migrating_s: phase("DualPrimary -> Migrating"),
            to_finalize_s: phase("Migrating -> Finalize"),
            to_done_s: phase("Finalize -> Done"),
            migrate_started_s,
            migrate_returned_s,
            source_demoted_s: first(&source_log, "done object=demo/svc/kvm1 step=Secondary"),
            migrate_call_s,
            overhead_s: migrate_call_s.map(|c| total_s - c),
        });
    }
    Ok(out)
}

fn failover() -> Result<Failover, String> {
    let bed = cluster()?;
    guest_on_n1(&bed, None);
    let t0 = SystemTime::now();
    let start = Instant::now();
    bed.power_off("n1");
    while !bed.running("n2") {
        if start.elapsed() > Duration::from_secs(120) {
            return Err(format!("the guest never started on n2\n{}", bed.logs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    while bed.console("n2").is_empty() && start.elapsed() < Duration::from_secs(180) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let console = start.elapsed().as_secs_f64();
    let after = epoch_secs(t0);
    let logs: String = ["n2", "w"]
        .iter()
        .map(|h| std::fs::read_to_string(bed.log_path(h)).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let first = |pattern: &str| stamps(&logs, pattern, after).into_iter().reduce(f64::min);
    let decided = first("demo/svc/kvm1: failover from");
    let committed = first("demo/svc/kvm1: failover committed");
    let started = first("done object=demo/svc/kvm1 step=StartDomain");
    let since = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    Ok(Failover {
        detect_s: since(Some(after), decided),
        commit_s: since(decided, committed),
        start_s: since(committed, started),
        console_s: started.map(|s| console - (s - after)),
        total_s: console,
    })
}

fn row(label: &str, s: Option<Stats>) {
    match s {
        Some(s) => println!(
            "  {label:<34} {:>7.2} {:>7.2} {:>7.2} {:>3}",
            s.median, s.min, s.max, s.n
        ),
        None => println!("  {label:<34} {:>7} {:>7} {:>7} {:>3}", "-", "-", "-", 0),
    }
}

fn main() -> ExitCode {
    let trials = match harness::count_from_env("OMRAFT_BED_TRIALS", "trials", 1..=20, 5, 1) {
        Ok(n) => n as usize,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let live = match live_switches(trials) {
        Ok(l) => l,
        Err(e) if e.contains("cannot be built") => {
            println!("bed bench skipped: {e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bed bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failovers = Vec::new();
    for n in 1..=trials {
        match failover() {
            Ok(f) => {
                eprintln!("  failover {n}: {:.2} s", f.total_s);
                failovers.push(f);
            }
            Err(e) => {
                eprintln!("bed bench: failover {n}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let r = |s: Option<Stats>| {
        s.map(|s| Stats {
            median: round(s.median, 3),
            min: round(s.min, 3),
            max: round(s.max, 3),
            n: s.n,
        })
    };
    let l = |f: fn(&Live) -> Option<f64>| r(stats(live.iter().map(f)));
    let fo = |f: fn(&Failover) -> Option<f64>| r(stats(failovers.iter().map(f)));
    println!("real-host test bed: 3 omd in network namespaces, real libvirt, a TCG guest; seconds (median min max n)");
    println!("live switch (switch --live --wait, n1 <-> n2):");
    row("total (omctl)", l(|x| Some(x.total_s)));
    row("libvirt migration job", l(|x| x.job_s));
    row("guest downtime (libvirt)", l(|x| x.downtime_s));
    row("console gap (guest uptime)", l(|x| x.console_gap_s));
    row("committed DualPrimary at", l(|x| x.to_dual_primary_s));
    row("committed Migrating at", l(|x| x.to_migrating_s));
    row("source's migrate call started at", l(|x| x.migrate_started_s));
    row("committed Finalize at", l(|x| x.to_finalize_s));
    row("source's migrate call returned at", l(|x| x.migrate_returned_s));
    row("source demoted at", l(|x| x.source_demoted_s));
    row("committed Done at", l(|x| x.to_done_s));
    row("libvirt migrate call (start to return)", l(|x| x.migrate_call_s));
    row("omraft's share (total - migrate call)", l(|x| x.overhead_s));
    println!("failover (power loss of the active host):");
    row("detection + lease wait", fo(|x| x.detect_s));
    row("commit", fo(|x| x.commit_s));
    row("libvirt start", fo(|x| x.start_s));
    row("first console line after start", fo(|x| x.console_s));
    row("total (to the first console line)", fo(|x| Some(x.total_s)));
    let json = serde_json::json!({
        "bench": "bed",
        "trials": trials,
        "live_total_s": l(|x| Some(x.total_s)),
        "live_job_s": l(|x| x.job_s),
        "live_downtime_s": l(|x| x.downtime_s),
        "live_console_gap_s": l(|x| x.console_gap_s),
        "live_migrate_returned_s": l(|x| x.migrate_returned_s),
        "live_source_demoted_s": l(|x| x.source_demoted_s),
        "live_migrate_call_s": l(|x| x.migrate_call_s),
        "live_overhead_s": l(|x| x.overhead_s),
        "failover_detect_s": fo(|x| x.detect_s),
        "failover_commit_s": fo(|x| x.commit_s),
        "failover_start_s": fo(|x| x.start_s),
        "failover_console_s": fo(|x| x.console_s),
        "failover_total_s": fo(|x| Some(x.total_s)),
        "per_live": live,
        "per_failover": failovers,
        "nproc": harness::nproc(),
        "cpu": harness::cpu_model(),
    });
    println!("{json}");
    ExitCode::SUCCESS
}
