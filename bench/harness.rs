//! The cluster the benchmarks run against: three `omd` (the binaries cargo built for the bench,
//! started through the tests' process harness, `tests/support/omd.rs`) on loopback ports in a
//! temporary directory, each with its own extra arguments and environment, made ready and
//! joined into one cluster. Dropping the [`Cluster`] stops every daemon (SIGTERM, SIGKILL after
//! 5 s) and removes the directory; [`run_interruptible`] turns SIGINT and SIGTERM into a failure
//! so that the drop happens on those exits too.
//!
//! Each bench includes this file with `mod harness;`, and `tests/support` with
//! `#[path = "../tests/support/mod.rs"] mod support;`, and uses a part of them.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use omraft::cli::client::{connect, Client};
use omraft::pb;

pub use crate::support::omd::{Launch, Omd};

pub const NODES: [&str; 3] = ["n1", "n2", "n3"];
const STOP_GRACE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// The daemons

/// Three `omd` processes and their directory; dropping it stops them and removes the directory.
pub struct Cluster {
    pub daemons: Vec<Omd>,
    dir: tempfile::TempDir,
}

/// Distinct free loopback ports: bound together, then released.
pub fn free_ports(n: usize) -> Vec<u16> {
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
    pub fn spawn() -> Result<Cluster, String> {
        Cluster::spawn_with(|_| Vec::new())
    }

    /// Like [`Cluster::spawn`], with `extra_args(node name)` appended to each daemon's arguments.
    pub fn spawn_with(extra_args: impl Fn(&str) -> Vec<String>) -> Result<Cluster, String> {
        Cluster::spawn_in(|_, name| Launch {
            args: extra_args(name),
            ..Launch::default()
        })
    }

    /// Like [`Cluster::spawn_with`], each daemon started as `launch(the cluster's directory, node
    /// name)` says: for arguments naming a path in the directory (e.g. `--sim-dir DIR/sim`), and
    /// environment.
    pub fn spawn_in(launch: impl Fn(&Path, &str) -> Launch) -> Result<Cluster, String> {
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
            let addr = format!("127.0.0.1:{port}");
            let omd = Omd::launch(name, &data, &addr, launch(cluster.dir.path(), name))?;
            cluster.daemons.push(omd);
        }
        Ok(cluster)
    }

    /// The temporary directory holding the daemons' data directories and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn daemon(&mut self, name: &str) -> Result<&mut Omd, String> {
        self.daemons
            .iter_mut()
            .find(|d| d.name == name)
            .ok_or_else(|| format!("no daemon {name}"))
    }

    /// SIGKILLs `name`'s daemon (a power loss) and reaps it; [`Cluster::restart`] brings it back.
    pub fn kill9(&mut self, name: &str) -> Result<(), String> {
        let d = self.daemon(name)?;
        if d.child.is_none() {
            return Err(format!("{name} is not running: {}", d.exited.as_deref().unwrap_or("?")));
        }
        d.kill9();
        d.exited = Some(format!("{} by the bench", d.exited.as_deref().unwrap_or("SIGKILLed")));
        Ok(())
    }

    /// Starts `name`'s daemon again, stopped or killed, with the same arguments, data
    /// directory and address, its output appended to the same log. It is tracked as before:
    /// dropping the cluster stops it.
    pub fn restart(&mut self, name: &str) -> Result<(), String> {
        self.daemon(name)?.try_start()
    }

    pub fn by_name(&self, name: &str) -> Option<&Omd> {
        self.daemons.iter().find(|d| d.name == name)
    }

    /// Errors if a daemon has exited (other than by [`Cluster::kill9`] or [`Cluster::stop`]).
    pub fn check_alive(&mut self) -> Result<(), String> {
        for d in &mut self.daemons {
            if let Some(status) = d.try_wait() {
                d.exited = Some(format!("exited on its own ({status})"));
                return Err(format!("{} exited unexpectedly ({status})", d.name));
            }
        }
        Ok(())
    }

    /// SIGTERM to every daemon still running, SIGKILL to those still there after 5 s. Idempotent.
    pub fn stop(&mut self) {
        let sent = Instant::now();
        for d in &mut self.daemons {
            if let Some(status) = d.try_wait() {
                d.exited = Some(format!("had exited on its own before SIGTERM ({status})"));
            } else if d.child.is_some() && !d.signal("TERM") {
                d.kill9();
            }
        }
        while self.daemons.iter().any(|d| d.child.is_some()) && sent.elapsed() < STOP_GRACE {
            for d in &mut self.daemons {
                if let Some(status) = d.try_wait() {
                    d.exited = Some(format!(
                        "stopped {:.2} s after SIGTERM ({status})",
                        sent.elapsed().as_secs_f64()
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for d in self.daemons.iter_mut().filter(|d| d.child.is_some()) {
            d.kill9();
            let how = d.exited.take().unwrap_or_default();
            d.exited = Some(format!("still running {STOP_GRACE:?} after SIGTERM: {how}"));
        }
    }

    /// The last `lines` lines of each daemon's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for d in &self.daemons {
            let text = d.log();
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
    pub fn log_warnings(&self, max: usize) -> Vec<String> {
        let mut found = Vec::new();
        for d in &self.daemons {
            let text = d.log();
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

    /// Stops the daemons and removes the directory, telling on stderr how each daemon ended and
    /// the WARN/ERROR lines of their logs, preceded by the logs' tails if the bench `failed`.
    pub fn finish(mut self, failed: bool) {
        if failed {
            eprint!("{}", self.log_tails(30));
        }
        let warnings = self.log_warnings(5);
        self.stop();
        for d in &self.daemons {
            eprintln!("  {}: {}", d.name, d.exited.as_deref().unwrap_or("?"));
        }
        for w in &warnings {
            eprintln!("  daemon log: {w}");
        }
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

/// Runs `bench` to completion on a fresh multi-threaded runtime; SIGINT and SIGTERM end it as
/// a failure instead of killing the process, so the caller still stops its daemons.
pub fn run_interruptible<T>(bench: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
        tokio::select! {
            r = bench => r,
            _ = tokio::signal::ctrl_c() => Err("interrupted (SIGINT)".to_string()),
            _ = term.recv() => Err("interrupted (SIGTERM)".to_string()),
        }
    });
    drop(rt);
    result
}

// ---------------------------------------------------------------------------------------------
// Setting the cluster up

pub fn status_text(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

pub async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| format!("{what}: no answer within {limit:?}"))?
}

pub async fn client(d: &Omd) -> Result<Client, String> {
    connect(&d.server(), None, None, None).await.map_err(|e| e.to_string())
}

/// `d`'s NodeStatus, on a connection of its own, bounded by 5 s.
pub async fn node_status(d: &Omd) -> Result<pb::NodeStatus, String> {
    let mut c = client(d).await?;
    within(Duration::from_secs(5), "NodeStatus", async {
        c.node_status(pb::NodeStatusRequest {}).await.map_err(status_text)
    })
    .await
    .map(|r| r.into_inner())
}

/// A join token for `node`, minted by `by` (it works once, and only for that node's name).
pub async fn join_token(by: &Omd, node: &str) -> Result<String, String> {
    let mut c = client(by).await?;
    let reply = within(Duration::from_secs(10), "IssueToken", async {
        c.issue_token(pb::IssueTokenRequest {
            role: "join".into(),
            duration_secs: 600,
            node: node.to_string(),
        })
        .await
        .map_err(status_text)
    })
    .await?;
    Ok(reply.into_inner().token)
}

/// `d` joins the cluster of the node at `addr` with `token`, bounded by 120 s.
pub async fn join(d: &Omd, addr: &str, token: String, witness: bool) -> Result<pb::JoinReply, String> {
    let mut c = client(d).await?;
    let req = pb::JoinRequest {
        node: addr.to_string(),
        token,
        witness,
    };
    within(Duration::from_secs(120), &format!("joining {}", d.name), async {
        c.join(req)
            .await
            .map_err(|s| format!("joining {}: {}", d.name, status_text(s)))
    })
    .await
    .map(|r| r.into_inner())
}

/// Waits until every daemon's unix socket answers and the daemon leads its one-node cluster
/// with itself registered in the state (before that, it refuses to admit other nodes).
pub async fn wait_ready(cluster: &mut Cluster) -> Result<(), String> {
    wait_ready_from(cluster, 0).await
}

/// [`wait_ready`] for the daemons from index `first` on (those started later, still alone).
pub async fn wait_ready_from(cluster: &mut Cluster, first: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in first..cluster.daemons.len() {
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
                let mon = c
                    .mon(pb::MonRequest::default())
                    .await
                    .map_err(status_text)?
                    .into_inner();
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
pub async fn form_cluster(cluster: &mut Cluster) -> Result<(), String> {
    form_cluster_with(cluster, &[]).await
}

/// Like [`form_cluster`], the nodes named in `witnesses` joining as witnesses (they vote, never
/// host services).
pub async fn form_cluster_with(cluster: &mut Cluster, witnesses: &[&str]) -> Result<(), String> {
    let n1 = &cluster.daemons[0];
    for d in &cluster.daemons[1..] {
        let token = join_token(n1, &d.name).await?;
        let t0 = Instant::now();
        let reply = join(d, &n1.addr, token, witnesses.contains(&d.name.as_str())).await?;
        eprintln!(
            "  {} joined{} as node id {} in {:.2} s",
            d.name,
            if witnesses.contains(&d.name.as_str()) {
                " as a witness"
            } else {
                ""
            },
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
            c.mon(pb::MonRequest::default()).await.map_err(status_text)
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
pub async fn roles(cluster: &Cluster) -> Result<(&'static str, &'static str), String> {
    let st = node_status(&cluster.daemons[0]).await?;
    let leader = NODES
        .iter()
        .copied()
        .find(|n| *n == st.leader_name)
        .ok_or_else(|| format!("n1 reports leader {:?}, not one of ours", st.leader_name))?;
    let follower = NODES.iter().copied().find(|n| *n != leader).expect("three nodes");
    Ok((leader, follower))
}

/// Waits for the daemons, joins them into one cluster and returns (leader, a follower),
/// telling the steps on stderr.
pub async fn form(cluster: &mut Cluster) -> Result<(&'static str, &'static str), String> {
    let t0 = Instant::now();
    wait_ready(cluster).await?;
    eprintln!(
        "  3 daemons ready (each leads its one-node cluster) after {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    form_cluster(cluster).await?;
    let (leader, follower) = roles(cluster).await?;
    eprintln!("  leader {leader}, follower used: {follower}");
    Ok((leader, follower))
}

// ---------------------------------------------------------------------------------------------
// Reporting

pub fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

pub fn cpu_model() -> String {
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

pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// Seconds since the epoch of an RFC3339 UTC timestamp (`2025-01-02T03:04:05.123456Z`).
pub fn parse_rfc3339_utc(ts: &str) -> Option<f64> {
    let ts = ts.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let (h, min) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60) as f64 + sec)
}

pub fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Timestamps (epoch seconds) of the lines containing `pattern`, at or after `after`.
pub fn stamps(text: &str, pattern: &str, after: f64) -> Vec<f64> {
    text.lines()
        .filter(|l| l.contains(pattern))
        .filter_map(|l| parse_rfc3339_utc(l.split_whitespace().next()?))
        .filter(|t| *t >= after)
        .collect()
}

/// Median, minimum and maximum of some figures.
#[derive(Clone, Copy, serde::Serialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn stats(values: impl Iterator<Item = Option<f64>>) -> Option<Stats> {
    let mut v: Vec<f64> = values.flatten().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let k = v.len();
    let median = if k % 2 == 1 {
        v[k / 2]
    } else {
        (v[k / 2 - 1] + v[k / 2]) / 2.0
    };
    Some(Stats {
        median,
        min: v[0],
        max: v[k - 1],
        n: k,
    })
}

/// How many (trials, services...) a bench runs: `var` from the environment, within `range`;
/// else `full` under `cargo bench` (which passes --bench) and `smoke` without it (`cargo test
/// --benches`: a smoke run). A bad value is an error naming the variable and what it wants.
pub fn count_from_env(
    var: &str,
    what: &str,
    range: std::ops::RangeInclusive<u64>,
    full: u64,
    smoke: u64,
) -> Result<u64, String> {
    match std::env::var(var) {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(format!(
                "{var}={v:?}: expected a number of {what} from {} to {}",
                range.start(),
                range.end()
            )),
        },
        Err(_) if std::env::args().any(|a| a == "--bench") => Ok(full),
        Err(_) => Ok(smoke),
    }
}
