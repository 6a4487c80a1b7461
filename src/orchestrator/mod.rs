//! The orchestrator: on the leader only, moves a service with `orchestrate=ha` off a node
//! whose lease ran out, to the node its placement policy prefers (`model::placement`). The
//! decision is the pure `decide`; `run` feeds it what the leader knows of leases and writes
//! its decisions to the log.
//!
//! Safety (the lease invariants of ARCHITECTURE.md): a node's lease, as the leader granted it, must have run out
//! plus the drift margin before anything moves; a new leader, which cannot know the grants of
//! the previous one, first waits one lease duration plus the margin.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::ini::DEFAULT;
use crate::lease::LeaseConfig;
use crate::model::placement::{rank, Planned};
use crate::model::{ClusterState, Command, NodeId, ObjectKind, ObjectPath, Phase};

/// The moves the leader should commit: for each `orchestrate=ha` service, provisioned,
/// started and not frozen, placed on a node in `expired` that has a watchdog armed, a
/// failover to the node its placement policy ranks first (`model::placement::rank`) among
/// its nodes that are `leased`, not frozen, have the service provisioned and none of its DRBD
/// resources marked outdated (by a peer's fence-peer handler).
///
/// The other decisions (a live switch ended, a node recorded fenced) come first; then the
/// failovers, by `priority` (lower first; equal ones by path), each placed knowing where the
/// ones before it go (`spread` counts them).
pub fn decide(state: &ClusterState, expired: &BTreeSet<NodeId>, leased: &BTreeSet<NodeId>) -> Vec<Command> {
    plan(state, expired, leased).0
}

/// `decide`, with the services it would move but cannot, each with why (`Tick::held`).
fn plan(state: &ClusterState, expired: &BTreeSet<NodeId>, leased: &BTreeSet<NodeId>) -> (Vec<Command>, Vec<Held>) {
    let mut out = Vec::new();
    let mut held = Vec::new();
    let name = |id: &NodeId| state.nodes.get(id).map_or_else(|| id.to_string(), |n| n.name.clone());
    // (priority, path, from, eligible targets in nodes order)
    let mut moving: Vec<(u64, ObjectPath, NodeId, Vec<NodeId>)> = Vec::new();
    for (path, obj) in &state.objects {
        if path.kind != ObjectKind::Svc {
            continue;
        }
        let watchdog = |id: &NodeId| state.nodes.get(id).is_some_and(|n| n.watchdog);
        // A live switch whose other participant lost its lease (and so fenced itself) ends
        // without it: aborted before Finalize, done after. Whatever the service's policy: it
        // finishes what the operator began.
        if let Some(svc) = state.services.get(path) {
            if let Some(m) = &svc.migration {
                let other = if svc.placement == Some(m.from) { m.to } else { m.from };
                if expired.contains(&other) && watchdog(&other) {
                    let before_finalize = m.phase.before_hand_over();
                    let name = name(&other);
                    out.push(Command::MigrationPhase {
                        path: path.clone(),
                        id: m.id,
                        from: m.phase,
                        to: if before_finalize { Phase::Abort } else { Phase::Done },
                        error: before_finalize.then(|| format!("node {name} lost its lease")),
                        fenced: Some(other),
                    });
                    continue;
                }
            }
        }
        // A node of the service that does not hold it and lost its lease fenced itself: the
        // holder need not wait to see it demoted (a switch whose source died midway).
        if let Some(svc) = state.services.get(path).filter(|s| s.provisioned && s.started) {
            for n in state.service_nodes(path) {
                if Some(n) != svc.placement && expired.contains(&n) && watchdog(&n) && !svc.fenced.contains(&n) {
                    out.push(Command::Fence {
                        path: path.clone(),
                        node_id: n,
                    });
                }
            }
        }
        let ha = state
            .eval(path, &obj.config, DEFAULT, "orchestrate", None)
            .ok()
            .flatten();
        if ha.as_deref() != Some("ha") {
            continue;
        }
        let Some(svc) = state.services.get(path) else { continue };
        let Some(from) = svc.placement else { continue };
        if !svc.provisioned || !svc.started || svc.frozen || !expired.contains(&from) {
            continue;
        }
        // Without a watchdog, nothing proves a hung or dead daemon's node stopped its guest.
        if !watchdog(&from) {
            held.push(Held {
                path: path.clone(),
                why: format!(
                    "its node {} lost its lease but has no watchdog: nothing proves the guest stopped there",
                    name(&from)
                ),
            });
            continue;
        }
        let provisioned_on = |n: &NodeId| {
            svc.state_only.contains(n)
                || state
                    .reports
                    .get(path)
                    .and_then(|r| r.get(n))
                    .is_some_and(|r| r.provisioned)
        };
        // A node whose disk a DRBD fence-peer had outdated holds old data until it resyncs.
        let unfit = |n: &NodeId| {
            if !leased.contains(n) {
                return Some("holds no lease".to_string());
            } else if state.frozen_nodes.contains(n) {
                return Some("is frozen".into());
            } else if !provisioned_on(n) {
                return Some("has not provisioned it".into());
            }
            let outdated = state.outdated_on(path, *n);
            (!outdated.is_empty()).then(|| {
                format!(
                    "has an outdated disk (a DRBD fence-peer marked {}; it resyncs, then unfence-peer clears the mark)",
                    outdated.join(", ")
                )
            })
        };
        let others: Vec<NodeId> = state.service_nodes(path).into_iter().filter(|n| *n != from).collect();
        let eligible: Vec<NodeId> = others.iter().copied().filter(|n| unfit(n).is_none()).collect();
        if eligible.is_empty() {
            let reasons: Vec<String> = others
                .iter()
                .filter_map(|n| unfit(n).map(|why| format!("{} {why}", name(n))))
                .collect();
            held.push(Held {
                path: path.clone(),
                why: format!(
                    "its node {} lost its lease and no other node may take it: {}",
                    name(&from),
                    if reasons.is_empty() {
                        "it has no other node".to_string()
                    } else {
                        reasons.join("; ")
                    }
                ),
            });
        } else {
            moving.push((state.priority(path), path.clone(), from, eligible));
        }
    }
    // A stable sort: equal priorities keep the path order.
    moving.sort_by_key(|(priority, ..)| *priority);
    let mut planned = Planned::new();
    for (_, path, from, eligible) in moving {
        if let Some(&to) = rank(state, &path, &eligible, &planned).first() {
            *planned.entry(to).or_default() += 1;
            out.push(Command::Failover { path, from, to });
        }
    }
    (out, held)
}

/// An `orchestrate=ha` service the orchestrator would move and cannot, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub path: ObjectPath,
    pub why: String,
}

/// The data nodes whose lease, as this leader granted it (`grants`: when it last granted each),
/// ran out plus the drift margin (`expired`: their services may move), and those whose lease
/// runs now (`leased`: they may receive one).
pub fn lease_views(
    state: &ClusterState,
    grants: &BTreeMap<NodeId, Instant>,
    now: Instant,
    cfg: &LeaseConfig,
) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
    let data = state.nodes.iter().filter(|(_, n)| !n.witness).map(|(id, _)| *id);
    let granted = |id: &NodeId| grants.get(id).copied();
    let expired = data
        .clone()
        .filter(|id| granted(id).is_none_or(|g| now >= g + cfg.duration + cfg.drift))
        .collect();
    let leased = data
        .filter(|id| granted(id).is_some_and(|g| now < g + cfg.duration))
        .collect();
    (expired, leased)
}

/// Whether a leader whose wait for its predecessors' leases counts from `since` may move
/// anything at `now`: it cannot know their grants, so it waits one lease duration plus the
/// drift margin from `since` (see `Lead` for where `since` lies).
pub fn may_act(since: Instant, now: Instant, cfg: &LeaseConfig) -> bool {
    now >= since + cfg.duration + cfg.drift
}

/// This node leads: what the orchestrator needs to know of its leadership.
#[derive(Debug, Clone, Copy)]
pub struct Lead {
    /// The Raft term it leads in.
    pub term: u64,
    /// How long before the election every earlier grant began (`daemon::votes::window`): the
    /// voters that elected this node held their votes that long after the last leader's
    /// confirmation they saw. Zero counts from the election itself.
    pub window: Duration,
    /// When this node last had a lease grant confirmed, in any term: its own grants of an
    /// earlier term began before that.
    pub confirmed: Option<Instant>,
}

impl Lead {
    /// From when a leader that first saw itself leading at `now` counts its wait: `window`
    /// before, but not before its own last confirmed grant.
    fn since(&self, now: Instant) -> Instant {
        let before = now.checked_sub(self.window).unwrap_or(now);
        self.confirmed.filter(|c| *c > before && *c <= now).unwrap_or(before)
    }
}

/// What the orchestrator remembers from one tick to the next: the term this node leads in and
/// from when it counts its wait for its predecessors' leases (`Lead::since`).
#[derive(Debug, Clone, Default)]
pub struct Leadership {
    term: u64,
    since: Option<Instant>,
}

/// What one tick decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tick {
    /// The data nodes whose lease, as granted in this term, ran out plus the drift margin.
    pub expired: BTreeSet<NodeId>,
    /// The data nodes holding a lease granted in this term.
    pub leased: BTreeSet<NodeId>,
    /// What to commit.
    pub commands: Vec<Command>,
    /// The services left where they are though their node lost its lease.
    pub held: Vec<Held>,
}

/// One step of the orchestrator at `now`, Raft saying whether this node leads (`lead`), with
/// the leases this node granted in that term (`grants`). Leadership is tracked by term: a node
/// that lost and regained it between two ticks (another leader may have granted leases
/// meanwhile) starts over, waiting one lease duration plus the margin, from `Lead::since`,
/// before it moves anything.
pub fn tick(
    memory: &mut Leadership,
    lead: Option<Lead>,
    state: &ClusterState,
    grants: &BTreeMap<NodeId, Instant>,
    now: Instant,
    cfg: &LeaseConfig,
) -> Tick {
    let Some(lead) = lead else {
        memory.since = None;
        return Tick::default();
    };
    if memory.since.is_none() || memory.term != lead.term {
        *memory = Leadership {
            term: lead.term,
            since: Some(lead.since(now)),
        };
    }
    if !memory.since.is_some_and(|since| may_act(since, now, cfg)) {
        return Tick::default();
    }
    let (expired, leased) = lease_views(state, grants, now, cfg);
    let (commands, held) = plan(state, &expired, &leased);
    Tick {
        expired,
        leased,
        commands,
        held,
    }
}

/// How long the orchestrator may sleep after a tick at `now`: `lease.renew`, or less when a
/// wait ends sooner (this leader's own wait after its election, or a lease, as granted, running
/// out plus the drift margin), so a failover is decided the moment it may be rather than up to
/// one renewal later.
pub fn next_tick(memory: &Leadership, grants: &BTreeMap<NodeId, Instant>, now: Instant, cfg: &LeaseConfig) -> Duration {
    let margin = cfg.duration + cfg.drift;
    memory
        .since
        .into_iter()
        .chain(grants.values().copied())
        .map(|t| t + margin)
        .filter(|&end| end > now)
        .map(|end| end - now)
        .fold(cfg.renew, Duration::min)
}

/// What the orchestrator loop needs of its node.
pub trait Host: Send + Sync + 'static {
    /// The node is stopping: the loop ends.
    fn closing(&self) -> bool;
    /// The current Raft term, and whether this node leads in it.
    fn leadership(&self) -> (u64, bool);
    /// How long before its election a leader's wait for earlier leases may count from
    /// (`Lead::window`).
    fn vote_window(&self) -> Duration;
    /// When this node last had a lease grant confirmed as the leader (`Lead::confirmed`).
    fn last_confirmed(&self) -> impl Future<Output = Option<Instant>> + Send;
    /// Resolves when the term or the leader changes after the call. Holds nothing of the host.
    fn leadership_changed(&self) -> impl Future<Output = ()> + Send + 'static;
    /// Reads the applied state.
    fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T;
    /// The leases this node granted as the leader of `term`.
    fn grants(&self, term: u64) -> BTreeMap<NodeId, Instant>;
    /// Commits `cmd` (through the leader).
    fn write(&self, cmd: Command) -> impl Future<Output = Result<crate::model::Response, String>> + Send;
}

/// Runs the orchestrator of `host` until it closes: active only while it leads.
pub async fn run<H: Host>(host: Arc<H>) {
    let weak: Weak<H> = Arc::downgrade(&host);
    drop(host);
    let mut memory = Leadership::default();
    // What was last said of each held service: said again only when it changes.
    let mut told: BTreeMap<ObjectPath, String> = BTreeMap::new();
    loop {
        let Some(host) = weak.upgrade().filter(|h| !h.closing()) else {
            return;
        };
        let cfg = host.read(|s| crate::model::catalog::lease_config(&s.config));
        // Taken before looking, so a change from now on wakes the sleep below: a new leader
        // starts counting its wait at once.
        let changed = host.leadership_changed();
        let (term, leads) = host.leadership();
        let grants = if leads { host.grants(term) } else { BTreeMap::new() };
        let lead = match leads {
            true => Some(Lead {
                term,
                window: host.vote_window(),
                confirmed: host.last_confirmed().await,
            }),
            false => None,
        };
        let now = Instant::now();
        let done = host.read(|s| tick(&mut memory, lead, s, &grants, now, &cfg));
        for h in &done.held {
            if told.get(&h.path) != Some(&h.why) {
                warn!(service = %h.path, "not failing over: {}", h.why);
                told.insert(h.path.clone(), h.why.clone());
            }
        }
        told.retain(|path, _| done.held.iter().any(|h| &h.path == path));
        let names = match done.commands.is_empty() {
            true => BTreeMap::new(),
            false => host.read(|s| s.nodes.iter().map(|(id, n)| (*id, n.name.clone())).collect()),
        };
        for cmd in done.commands {
            // The decision with its nodes and reason, then its outcome.
            let (service, kind, decision) = describe(&cmd, &names);
            info!(service = %service, "{service}: {decision}");
            match tokio::time::timeout(Duration::from_secs(2), host.write(cmd)).await {
                Ok(Ok(_)) => info!(service = %service, "{service}: {kind} committed"),
                Ok(Err(e)) => warn!(service = %service, "{service}: {kind} not committed: {e}"),
                Err(_) => warn!(
                    service = %service,
                    "{service}: {kind}: outcome unknown: not committed within 2 s (it may still commit)"
                ),
            }
        }
        drop(host);
        tokio::select! {
            _ = tokio::time::sleep(next_tick(&memory, &grants, now, &cfg)) => {}
            _ = changed => {}
        }
    }
}

/// A decision of `decide` in words: its service, its kind, and what it does to which nodes and
/// why.
fn describe(cmd: &Command, names: &BTreeMap<NodeId, String>) -> (String, &'static str, String) {
    let name = |id: &NodeId| names.get(id).cloned().unwrap_or_else(|| format!("node {id}"));
    match cmd {
        Command::Failover { path, from, to } => (
            path.to_string(),
            "failover",
            format!(
                "failover from {} to {}: the lease of {} ran out, plus the drift margin",
                name(from),
                name(to),
                name(from)
            ),
        ),
        Command::Fence { path, node_id } => (
            path.to_string(),
            "fence",
            format!(
                "{} recorded fenced: its lease ran out, so it stopped the service there",
                name(node_id)
            ),
        ),
        Command::MigrationPhase {
            path,
            id,
            to,
            fenced,
            error,
            ..
        } => (
            path.to_string(),
            "live switch end",
            format!(
                "live switch {id} ends ({to}){}: {}",
                fenced
                    .map(|n| format!(", {} recorded fenced", name(&n)))
                    .unwrap_or_default(),
                error.as_deref().unwrap_or("a participant lost its lease")
            ),
        ),
        other => (String::new(), "decision", other.to_string()),
    }
}

#[cfg(test)]
mod tests;
