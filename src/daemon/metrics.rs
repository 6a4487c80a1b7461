//! Prometheus metrics (`omd --metrics-listen HOST:PORT`, `GET /metrics`, OpenMetrics text).
//!
//! Gauges are read at each scrape: Raft (term, role, leader, log, commit and applied indexes,
//! the leader's view of each peer's lag), this node's lease and watchdog, the leases the leader
//! granted, each service's placement and its instances' avail as this node's state has them
//! (every node shows the cluster's services: aggregate with `max by`), and what the drivers see
//! here (each DRBD resource's role, disk and connection states; each guest of a service this
//! node reports on, running or not). Counters and histograms run from the daemon's start:
//! the log's append and sync times, applier steps that failed by kind, and, from the events
//! of the entries applied since the start (`raft::journal`), switches, aborts, failovers, lease
//! expiries and events by kind, and how long each switch phase lasted.
//!
//! The listener is plain HTTP without credentials, as Prometheus scrapes: bind it to a
//! management address. It serves a few scrapes at once, each bounded in time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::Node;
use crate::drivers::Drivers;
use crate::model::events::EventKind;
use crate::model::{Avail, Phase};
use crate::raft::journal::Cursor;

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Scrapes served at once; more wait for their turn in the listener's backlog.
const MAX_SCRAPES: usize = 4;
/// The longest a scrape connection may take, headers to response.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest the drivers may take to say what they see.
const DRIVERS_TIMEOUT: Duration = Duration::from_secs(5);

/// What runs from the daemon's start: the counters and histograms a scrape includes.
pub struct Counters {
    step_failures: Family<Labels, Counter>,
    switches: Family<Labels, Counter>,
    aborts: Family<Labels, Counter>,
    failovers: Family<Labels, Counter>,
    lease_expiries: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
    phase_seconds: Family<Labels, Histogram>,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            step_failures: Family::default(),
            switches: Family::default(),
            aborts: Family::default(),
            failovers: Family::default(),
            lease_expiries: Family::default(),
            events: Family::default(),
            // 10 ms to about 10 minutes.
            phase_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.01, 2.0, 16))),
        }
    }
}

impl Counters {
    /// An applier step of `kind` failed.
    pub fn step_failed(&self, kind: &'static str) {
        self.step_failures
            .get_or_create(&vec![("step", kind.to_string())])
            .inc();
    }
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Counts the events of the entries this node applies from now on (not those it replays from
/// its log at start: they happened before this daemon), and times each switch phase between
/// the entries that began and ended it.
pub async fn count_events(weak: Weak<Node>) {
    let Some(node) = Node::alive(&weak) else { return };
    let mut journal = node.member().sm.journal().clone();
    // Everything committed when the daemon started is a replay: the commit index its store
    // kept (openraft applies up to it at start), or what it applied already.
    let replayed = {
        use openraft::storage::RaftLogStorage;
        let stored = node.store.log_store().read_committed().await.ok().flatten();
        let applied = node
            .member()
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        stored.map_or(0, |c| c.index).max(applied)
    };
    let mut cursor = Cursor {
        index: replayed,
        seen: u32::MAX,
    };
    let mut watch = journal.watch();
    drop(node);
    // Per service: the phase its switch is in, and when it began (ms since the epoch).
    let mut phases: HashMap<String, (Phase, u64)> = HashMap::new();
    loop {
        let Some(node) = Node::alive(&weak) else { return };
        if !Arc::ptr_eq(node.member().sm.journal(), &journal) {
            // The node joined another cluster: a new log.
            journal = node.member().sm.journal().clone();
            watch = journal.watch();
            cursor = Cursor {
                index: journal.first(),
                seen: 0,
            };
            phases.clear();
        }
        let counters = &node.counters;
        let (events, next) = match journal.read(cursor, 1024) {
            Ok(read) => read,
            Err(gone) => {
                tracing::debug!("metrics: {gone}; counting from there");
                cursor = Cursor {
                    index: gone.first,
                    seen: 0,
                };
                continue;
            }
        };
        cursor = next;
        for e in &events {
            let ev = &e.event;
            let service = ev.service.as_ref().map(|p| p.to_string()).unwrap_or_default();
            counters
                .events
                .get_or_create(&labels(&[("kind", ev.kind.as_str())]))
                .inc();
            match ev.kind {
                EventKind::Switch => {
                    let kind = if ev.phase == Some(Phase::Prepare) {
                        "live"
                    } else {
                        "switch"
                    };
                    counters
                        .switches
                        .get_or_create(&labels(&[("service", &service), ("kind", kind)]))
                        .inc();
                    if let Some(p) = ev.phase {
                        phases.insert(service, (p, e.unix_ms));
                    }
                }
                EventKind::SwitchPhase => {
                    if let Some((was, since)) = phases.remove(&service) {
                        let seconds = e.unix_ms.saturating_sub(since) as f64 / 1000.0;
                        counters
                            .phase_seconds
                            .get_or_create(&labels(&[("phase", &was.to_string())]))
                            .observe(seconds);
                    }
                    match ev.phase {
                        Some(Phase::Done) | None => {}
                        Some(p) => {
                            if p == Phase::Abort {
                                counters.aborts.get_or_create(&labels(&[("service", &service)])).inc();
                            }
                            phases.insert(service, (p, e.unix_ms));
                        }
                    }
                }
                EventKind::Failover => {
                    counters
                        .failovers
                        .get_or_create(&labels(&[("service", &service)]))
                        .inc();
                }
                EventKind::LeaseExpired => {
                    let node = ev.node.clone().unwrap_or_default();
                    counters.lease_expiries.get_or_create(&vec![("node", node)]).inc();
                }
                EventKind::ObjectDeleted => {
                    phases.remove(&service);
                }
                _ => {}
            }
        }
        if events.len() == 1024 {
            continue;
        }
        drop(node);
        // The next applied entry, or a look at whether the node still runs.
        let _ = tokio::time::timeout(Duration::from_secs(1), watch.changed()).await;
    }
}

/// What the drivers see here: DRBD resources, and the guests of the services this node
/// reports on (name, service).
struct Seen {
    drbd: Result<Vec<crate::drivers::drbd::status::ResourceStatus>, String>,
    guests: Vec<(String, String, Result<bool, String>)>,
}

fn look(drivers: &Drivers, guests: Vec<(String, String)>) -> Seen {
    Seen {
        drbd: drivers.drbd.status().map_err(|e| e.to_string()),
        guests: guests
            .into_iter()
            .map(|(service, domain)| {
                let running = drivers
                    .hypervisor
                    .state(&domain)
                    .map(|s| s.active())
                    .map_err(|e| e.to_string());
                (service, domain, running)
            })
            .collect(),
    }
}

/// The metrics now, as OpenMetrics text.
pub async fn render(node: &Arc<Node>, drivers: Option<&Drivers>) -> String {
    let mut registry = Registry::with_prefix("omraft");
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
        let g = Gauge::<i64>::default();
        g.set(value);
        registry.register(name, help, g);
    };
    let family = |registry: &mut Registry, name: &str, help: &str| {
        let f = Family::<Labels, Gauge>::default();
        registry.register(name, help, f.clone());
        f
    };
    let float_family = |registry: &mut Registry, name: &str, help: &str| {
        let f = Family::<Labels, FloatGauge>::default();
        registry.register(name, help, f.clone());
        f
    };

    // Raft.
    let m = node.member();
    let raft = m.raft.metrics().borrow().clone();
    gauge(
        &mut registry,
        "raft_term",
        "The current Raft term",
        raft.current_term as i64,
    );
    let role = family(
        &mut registry,
        "raft_role",
        "This node's Raft role (1 for the current one)",
    );
    let now_role = format!("{:?}", raft.state).to_lowercase();
    for r in ["leader", "follower", "candidate", "learner"] {
        role.get_or_create(&labels(&[("role", r)]))
            .set(i64::from(now_role == r));
    }
    gauge(
        &mut registry,
        "raft_leader_id",
        "The node id of the leader this node knows (0: none)",
        raft.current_leader.unwrap_or(0) as i64,
    );
    gauge(
        &mut registry,
        "raft_in_quorum",
        "1 while this node is in touch with a quorum",
        i64::from(node.in_quorum()),
    );
    let last_log = raft.last_log_index.unwrap_or(0);
    gauge(
        &mut registry,
        "raft_last_log_index",
        "The last index in this node's log",
        last_log as i64,
    );
    let committed = node.store.timings.committed.load(std::sync::atomic::Ordering::Relaxed);
    gauge(
        &mut registry,
        "raft_commit_index",
        "The last index this node knows committed",
        committed as i64,
    );
    let applied = raft.last_applied.map_or(0, |l| l.index);
    gauge(
        &mut registry,
        "raft_applied_index",
        "The last index this node applied",
        applied as i64,
    );
    let lag = family(
        &mut registry,
        "raft_peer_lag_entries",
        "On the leader: entries each peer's log is behind the leader's",
    );
    let (term, leads) = node.leadership();
    let grants = if leads {
        node.leases.grants(term)
    } else {
        Default::default()
    };
    // Names of the state's nodes, the peers and the leased nodes, read with the state.
    let (names, state_view) = m.sm.read(|d| {
        let ids = d
            .state
            .nodes
            .keys()
            .chain(raft.replication.iter().flatten().map(|(id, _)| id));
        let names: BTreeMap<u64, String> = ids
            .chain(grants.keys())
            .map(|id| (*id, d.state.node_name(*id)))
            .collect();
        (names, ServiceView::of(&d.state, m.id))
    });
    let name = |id: u64| names[&id].clone();
    for (peer, matched) in raft.replication.iter().flatten() {
        if *peer != m.id {
            let behind = last_log.saturating_sub(matched.map_or(0, |l| l.index));
            lag.get_or_create(&labels(&[("peer", &name(*peer))])).set(behind as i64);
        }
    }
    registry.register(
        "raft_append_seconds",
        "Time to write an append's entries to the log store (before the sync)",
        node.store.timings.append.clone(),
    );
    registry.register(
        "raft_sync_seconds",
        "Time to make appended entries durable (flush and fsync)",
        node.store.timings.sync.clone(),
    );

    // This node's lease and watchdog; the leases the leader granted.
    let remaining = node.lease_remaining().unwrap_or_default().as_secs_f64();
    let g = FloatGauge::default();
    g.set(remaining);
    registry.register(
        "lease_remaining_seconds",
        "What is left of this node's lease (0: none; it holds nothing without one)",
        g,
    );
    gauge(
        &mut registry,
        "watchdog_armed",
        "1 while this node's watchdog is armed",
        i64::from(node.watchdog.armed()),
    );
    gauge(
        &mut registry,
        "watchdog_holding",
        "1 while the applier last saw a guest running or a DRBD Primary here",
        i64::from(node.watchdog.holding()),
    );
    let granted = float_family(
        &mut registry,
        "lease_granted_remaining_seconds",
        "On the leader: what is left of the lease it last granted each node",
    );
    if leads {
        let duration = state_view.lease_duration;
        let now = Instant::now();
        for (id, at) in grants {
            let left = (at + duration).saturating_duration_since(now).as_secs_f64();
            granted.get_or_create(&labels(&[("node", &name(id))])).set(left);
        }
    }

    // Services, as this node's state has them.
    let placement = family(
        &mut registry,
        "service_placement",
        "1 for the node that holds each service",
    );
    let started = family(&mut registry, "service_started", "1 when the service should run");
    let frozen = family(
        &mut registry,
        "service_frozen",
        "1 when the orchestrator leaves the service alone",
    );
    let switching = family(
        &mut registry,
        "service_switching",
        "1 while a switch of the service is in progress",
    );
    let avail = family(
        &mut registry,
        "instance_avail",
        "Each node's last report of each service instance (1 for its avail: up, down, warn)",
    );
    for s in &state_view.services {
        let svc: &str = &s.path;
        if let Some(node) = &s.placement {
            placement
                .get_or_create(&labels(&[("service", svc), ("node", node)]))
                .set(1);
        }
        started
            .get_or_create(&labels(&[("service", svc)]))
            .set(i64::from(s.started));
        frozen
            .get_or_create(&labels(&[("service", svc)]))
            .set(i64::from(s.frozen));
        switching
            .get_or_create(&labels(&[("service", svc)]))
            .set(i64::from(s.switching));
        for (node, a) in &s.avail {
            for v in [Avail::Up, Avail::Down, Avail::Warn] {
                let l = labels(&[("service", svc), ("node", node), ("avail", &v.to_string())]);
                avail.get_or_create(&l).set(i64::from(*a == v));
            }
        }
    }

    // Counters since the start, each series shown from 0 on (rates need a first sample).
    let c = &node.counters;
    for s in &state_view.services {
        for kind in ["switch", "live"] {
            let _ = c
                .switches
                .get_or_create(&labels(&[("service", &s.path), ("kind", kind)]));
        }
        let _ = c.aborts.get_or_create(&labels(&[("service", &s.path)]));
        let _ = c.failovers.get_or_create(&labels(&[("service", &s.path)]));
    }
    for n in &state_view.nodes {
        let _ = c.lease_expiries.get_or_create(&labels(&[("node", n)]));
    }
    for kind in EventKind::ALL {
        let _ = c.events.get_or_create(&labels(&[("kind", kind.as_str())]));
    }
    registry.register(
        "applier_step_failures",
        "Applier steps that failed, by kind",
        c.step_failures.clone(),
    );
    registry.register(
        "switches",
        "Switches (kind switch) and live switches (kind live) begun, by service",
        c.switches.clone(),
    );
    registry.register("switch_aborts", "Switches aborted, by service", c.aborts.clone());
    registry.register("failovers", "Failovers, by service", c.failovers.clone());
    registry.register(
        "lease_expiries",
        "Leases the leader saw run out and acted on, by node",
        c.lease_expiries.clone(),
    );
    registry.register("events", "Events of the applied entries, by kind", c.events.clone());
    registry.register(
        "switch_phase_seconds",
        "How long each switch phase lasted, from the entry that began it to the next",
        c.phase_seconds.clone(),
    );

    // What the drivers see here.
    let drbd_role = family(
        &mut registry,
        "drbd_role",
        "Each DRBD resource's role here (1 for the current one)",
    );
    let drbd_disk = family(
        &mut registry,
        "drbd_disk_state",
        "Each DRBD volume's disk state here (1 for the current one)",
    );
    let drbd_conn = family(
        &mut registry,
        "drbd_connection_state",
        "Each DRBD resource's connection to each peer (1 for the current state)",
    );
    let guest = family(
        &mut registry,
        "guest_running",
        "Each guest of a service this node reports on: 1 running here, 0 not",
    );
    let driver_ok = family(&mut registry, "driver_up", "1 when the driver answered this scrape");
    if let Some(drivers) = drivers {
        let d = drivers.clone();
        let guests = state_view.guests.clone();
        let seen = tokio::time::timeout(DRIVERS_TIMEOUT, tokio::task::spawn_blocking(move || look(&d, guests))).await;
        match seen {
            Ok(Ok(seen)) => {
                driver_ok
                    .get_or_create(&labels(&[("driver", "drbd")]))
                    .set(i64::from(seen.drbd.is_ok()));
                for r in seen.drbd.iter().flatten() {
                    drbd_role
                        .get_or_create(&labels(&[("resource", &r.name), ("role", &r.role)]))
                        .set(1);
                    for d in &r.devices {
                        let l = labels(&[
                            ("resource", &r.name),
                            ("volume", &d.volume.to_string()),
                            ("state", &d.disk_state),
                        ]);
                        drbd_disk.get_or_create(&l).set(1);
                    }
                    for c in &r.connections {
                        let l = labels(&[("resource", &r.name), ("peer", &c.name), ("state", &c.connection_state)]);
                        drbd_conn.get_or_create(&l).set(1);
                    }
                }
                let hv_ok = seen.guests.iter().all(|g| g.2.is_ok());
                driver_ok
                    .get_or_create(&labels(&[("driver", "hypervisor")]))
                    .set(i64::from(hv_ok));
                for (service, domain, running) in &seen.guests {
                    if let Ok(running) = running {
                        let l = labels(&[("service", service), ("guest", domain)]);
                        guest.get_or_create(&l).set(i64::from(*running));
                    }
                }
            }
            _ => {
                for d in ["drbd", "hypervisor"] {
                    driver_ok.get_or_create(&labels(&[("driver", d)])).set(0);
                }
            }
        }
    }

    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String does not fail");
    text
}

/// What a scrape shows of the replicated state, copied under its lock.
struct ServiceView {
    lease_duration: Duration,
    /// The names of the state's nodes.
    nodes: Vec<String>,
    services: Vec<ServiceRow>,
    /// The guests of the services this node reports on: (service, domain).
    guests: Vec<(String, String)>,
}

struct ServiceRow {
    path: String,
    placement: Option<String>,
    started: bool,
    frozen: bool,
    switching: bool,
    /// Each node's reported avail, by node name.
    avail: Vec<(String, Avail)>,
}

impl ServiceView {
    fn of(state: &crate::model::ClusterState, me: u64) -> ServiceView {
        let mut guests = vec![];
        let services = state
            .services
            .iter()
            .map(|(path, s)| {
                let reports = state.reports.get(path);
                if reports.is_some_and(|r| r.contains_key(&me)) {
                    let desired = crate::applier::desired::read(state, me, path, true, true);
                    for c in &desired.desired().containers {
                        guests.push((path.to_string(), c.domain.clone()));
                    }
                }
                ServiceRow {
                    path: path.to_string(),
                    placement: s.placement.map(|id| state.node_name(id)),
                    started: s.started,
                    frozen: s.frozen,
                    switching: s.migration.is_some(),
                    avail: reports
                        .iter()
                        .flat_map(|r| r.iter())
                        .map(|(id, r)| (state.node_name(*id), r.avail))
                        .collect(),
                }
            })
            .collect();
        ServiceView {
            lease_duration: crate::model::catalog::lease_config(&state.config).duration,
            nodes: state.nodes.values().map(|n| n.name.clone()).collect(),
            services,
            guests,
        }
    }
}

/// Serves `GET /metrics` on `listener` until the node stops.
pub async fn serve(node: Weak<Node>, drivers: Option<Drivers>, listener: TcpListener) {
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};

    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if Node::alive(&node).is_none() {
                    return;
                }
                continue;
            }
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("metrics: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (node, drivers) = (node.clone(), drivers.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (node, drivers) = (node.clone(), drivers.clone());
                async move { Ok::<_, std::convert::Infallible>(answer(&req, node, drivers.as_ref()).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .keep_alive(false)
                .max_buf_size(16 << 10)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(SCRAPE_TIMEOUT, conn).await;
        });
    }
}

async fn answer(
    req: &hyper::Request<hyper::body::Incoming>,
    node: Weak<Node>,
    drivers: Option<&Drivers>,
) -> hyper::Response<http_body_util::Full<Bytes>> {
    let reply = |status: u16, kind: &'static str, body: String| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", kind)
            .body(http_body_util::Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if req.method() != hyper::Method::GET {
        return reply(405, "text/plain", "only GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => match Node::alive(&node) {
            Some(node) => reply(
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                render(&node, drivers).await,
            ),
            None => reply(503, "text/plain", "the node is stopping\n".into()),
        },
        "/" => reply(200, "text/plain", "omd metrics: GET /metrics\n".into()),
        _ => reply(404, "text/plain", "not found: the metrics are at /metrics\n".into()),
    }
}
