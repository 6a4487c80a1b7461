//! The applier loop of one node: after each applied change (at most every 200 ms) and at least
//! every second, for each service this node is part of, one after the other (so never two
//! reconciles of one object at once): observe, plan, execute, and report the instance status
//! to the cluster when it changed. A failed step is recorded as a warning on its resource and
//! retried with exponential backoff (1 s to 30 s).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::desired::{self, Unrendered};
use super::migration::{self, Act};
use super::plan::{plan, report, Desired, Observed, Step};
use crate::drivers::hypervisor::DomainState;
use crate::drivers::Drivers;
use crate::model::{ClusterState, Command, InstanceReport, NodeId, ObjectKind, ObjectPath, Phase};

/// Reads what the drivers see of the desired volumes.
pub fn observe(drivers: &Drivers, desired: &Desired) -> Result<Observed, String> {
    let mut o = Observed::default();
    let mut vgs: Vec<&str> = desired.volumes.iter().map(|v| v.vg.as_str()).collect();
    vgs.dedup();
    for vg in vgs {
        for lv in drivers.lvm.lvs(vg).map_err(|e| e.to_string())? {
            o.lvs.insert((vg.to_string(), lv.name));
        }
    }
    if desired.volumes.iter().any(|v| v.drbd.is_some()) {
        for st in drivers.drbd.status().map_err(|e| e.to_string())? {
            o.drbd.insert(st.name.clone(), st);
        }
        for d in desired.volumes.iter().filter_map(|v| v.drbd.as_ref()) {
            if let Some(text) = drivers.drbd.config(&d.resource) {
                o.configs.insert(d.resource.clone(), text);
            }
        }
    }
    if desired.migration.is_some() && desired.volumes.iter().any(|v| v.drbd.is_some()) {
        o.two_primaries = drivers.drbd.two_primaries().map_err(|e| e.to_string())?;
    }
    for c in &desired.containers {
        o.domains.insert(
            c.domain.clone(),
            drivers.hypervisor.state(&c.domain).map_err(|e| e.to_string())?,
        );
    }
    // The source of a live switch in Migrating whose guest is gone from here asks the
    // target whether it runs there (unanswered: None, the switch waits for it).
    if let Some(m) = desired.source_without_guest(&o) {
        o.peer_domains = desired
            .containers
            .iter()
            .map(|c| Ok((c.domain.clone(), drivers.hypervisor.state_at(&c.domain, &m.peer)?)))
            .collect::<Result<_, crate::drivers::hypervisor::HypervisorError>>()
            .ok();
    }
    Ok(o)
}

/// Runs one step.
pub fn execute(drivers: &Drivers, desired: &Desired, step: &Step) -> Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    match step {
        Step::CreateLv { vg, lv, size } => drivers.lvm.lvcreate(vg, lv, *size).map_err(|x| e(&x)),
        Step::RemoveLv { vg, lv } => drivers.lvm.lvremove(vg, lv).map_err(|x| e(&x)),
        Step::WriteConfig { resource } => {
            let d = desired
                .volumes
                .iter()
                .filter_map(|v| v.drbd.as_ref())
                .find(|d| &d.resource == resource)
                .ok_or("no such resource")?;
            drivers
                .drbd
                .write_config(resource, &d.config, &d.data)
                .map_err(|x| e(&x))
        }
        Step::RemoveConfig { resource } => drivers.drbd.remove_config(resource).map_err(|x| e(&x)),
        Step::CreateMd { resource } => drivers.drbd.create_md(resource).map_err(|x| e(&x)),
        Step::Up { resource } => drivers.drbd.up(resource).map_err(|x| e(&x)),
        Step::Down { resource } => drivers.drbd.down(resource).map_err(|x| e(&x)),
        Step::Primary { resource, force } => drivers.drbd.primary(resource, *force).map_err(|x| e(&x)),
        Step::Secondary { resource } => drivers.drbd.secondary(resource).map_err(|x| e(&x)),
        Step::AllowTwoPrimaries { resource, allow } => {
            drivers.drbd.allow_two_primaries(resource, *allow).map_err(|x| e(&x))
        }
        Step::DefineDomain { name } => {
            let xml = desired
                .containers
                .iter()
                .find(|c| &c.domain == name)
                .and_then(|c| c.xml.as_ref())
                .ok_or("the domain XML was never captured")?;
            drivers.hypervisor.define(xml).map_err(|x| e(&x))
        }
        Step::StartDomain { name } => drivers.hypervisor.start(name).map_err(|x| e(&x)),
        Step::StopDomain { name, timeout_secs } => drivers
            .hypervisor
            .stop(name, Duration::from_secs(*timeout_secs))
            .map_err(|x| e(&x)),
    }
}

/// Runs this node's part of a live switch (`migration::next`) and returns the phase command
/// to commit, if its part of the phase is done.
fn drive_migration(
    drivers: &Drivers,
    path: &ObjectPath,
    desired: &Desired,
    observed: &Observed,
    vanished_for: Option<Duration>,
) -> Option<Command> {
    let m = desired.migration.as_ref()?;
    let commit = |to: Phase, error: Option<String>| Command::MigrationPhase {
        path: path.clone(),
        id: m.id,
        from: m.phase,
        to,
        error,
        fenced: None,
    };
    for act in migration::next(desired, observed, vanished_for) {
        match act {
            Act::AllowTwoPrimaries(allow) => {
                for d in desired.volumes.iter().filter_map(|v| v.drbd.as_ref()) {
                    if let Err(e) = drivers.drbd.allow_two_primaries(&d.resource, allow) {
                        warn!(object = %path, "live switch {}: allow-two-primaries={allow}: {e}", m.id);
                        return None;
                    }
                }
            }
            Act::Migrate => {
                for c in &desired.containers {
                    match observed.domains.get(&c.domain) {
                        Some(DomainState::Running) => {}
                        // libvirt would move it paused, and the target waits for it running.
                        Some(DomainState::Paused) => {
                            let why = format!("the guest {} is paused on the source", c.domain);
                            return Some(commit(Phase::Abort, Some(why)));
                        }
                        _ => continue,
                    }
                    info!(object = %path, "live switch {}: migrating {} to {}", m.id, c.domain, m.peer.node);
                    if let Err(e) = drivers.hypervisor.migrate(&c.domain, &m.peer) {
                        warn!(object = %path, "live switch {}: migrating {}: {e}", m.id, c.domain);
                        return Some(commit(Phase::Abort, Some(format!("migrating {}: {e}", c.domain))));
                    }
                    info!(object = %path, "live switch {}: migrated {} to {}", m.id, c.domain, m.peer.node);
                }
                return Some(commit(Phase::Finalize, None));
            }
            Act::Commit(to, error) => return Some(commit(to, error)),
        }
    }
    None
}

/// The domain XMLs this node has that the cluster has not captured yet.
fn uncaptured(drivers: &Drivers, desired: &Desired, observed: &Observed) -> Vec<(String, String)> {
    desired
        .containers
        .iter()
        .filter(|c| {
            c.xml.is_none()
                && observed
                    .domains
                    .get(&c.domain)
                    .is_some_and(|s| *s != DomainState::Absent)
        })
        .filter_map(|c| Some((c.domain.clone(), drivers.hypervisor.xml(&c.domain).ok()??)))
        .collect()
}

/// The resource (`volume#data`) a step acts on, for its error.
fn rid_of(desired: &Desired, step: &Step) -> String {
    let name = match step {
        Step::DefineDomain { name } | Step::StartDomain { name } | Step::StopDomain { name, .. } => {
            return desired
                .containers
                .iter()
                .find(|c| &c.domain == name)
                .map(|c| c.rid.clone())
                .unwrap_or_default();
        }
        Step::CreateLv { lv, .. } | Step::RemoveLv { lv, .. } => lv,
        Step::WriteConfig { resource }
        | Step::RemoveConfig { resource }
        | Step::CreateMd { resource }
        | Step::Up { resource }
        | Step::Down { resource }
        | Step::Primary { resource, .. }
        | Step::Secondary { resource }
        | Step::AllowTwoPrimaries { resource, .. } => resource,
    };
    desired
        .volumes
        .iter()
        .find(|v| &v.lv == name)
        .map(|v| v.rid.clone())
        .unwrap_or_default()
}

/// The backoff of one service's failing steps, and their errors (shown in its report).
#[derive(Default)]
pub struct Retry {
    failures: u32,
    next: Option<Instant>,
    errors: BTreeMap<String, String>,
    /// The kind of the step that failed in the last reconcile, if one did (`Step::kind`).
    pub failed: Option<&'static str>,
    /// Source of a live switch in `Migrating`: since when (and for which switch) no guest
    /// runs here.
    vanished: Option<(u64, Instant)>,
}

impl Retry {
    /// Records whether the source of live switch `id` in `Migrating` has no guest running,
    /// and returns for how long it has had none.
    fn vanished_for(&mut self, desired: &Desired, observed: &Observed, now: Instant) -> Option<Duration> {
        match desired.source_without_guest(observed) {
            Some(m) => {
                let since = match self.vanished {
                    Some((id, t)) if id == m.id => t,
                    _ => now,
                };
                self.vanished = Some((m.id, since));
                Some(now.saturating_duration_since(since))
            }
            _ => {
                self.vanished = None;
                None
            }
        }
    }
}

/// Plan-and-execute rounds in one reconcile.
const RECONCILE_ROUNDS: usize = 3;

/// One reconcile of one service: observe, plan, execute until a step fails, observe again.
/// `now` drives the backoff (the scenario tests' clock, or the real one).
fn reconcile(
    drivers: &Drivers,
    path: &ObjectPath,
    desired: &Desired,
    retry: &mut Retry,
    now: Instant,
) -> Result<Observed, String> {
    let mut observed = observe(drivers, desired)?;
    if retry.next.is_some_and(|t| now < t) {
        // Backing off; converged meanwhile (someone fixed it): the errors are gone.
        if plan(desired, &observed).is_empty() {
            retry.errors.clear();
            retry.failures = 0;
        }
        return Ok(observed);
    }
    // A few rounds: what one round did (a promotion) may allow the next (the guest's start)
    // without waiting for the next pass.
    for _ in 0..RECONCILE_ROUNDS {
        let steps = plan(desired, &observed);
        if steps.is_empty() {
            break;
        }
        for step in &steps {
            match execute(drivers, desired, step) {
                Ok(()) => info!(object = %path, ?step, "done"),
                Err(err) => {
                    warn!(object = %path, ?step, "failed: {err}");
                    retry.failed = Some(step.kind());
                    retry.failures += 1;
                    let wait = Duration::from_secs(1u64 << retry.failures.min(5)).min(Duration::from_secs(30));
                    retry.next = Some(now + wait);
                    retry
                        .errors
                        .insert(rid_of(desired, step), format!("{step:?} failed: {err}"));
                    return observe(drivers, desired);
                }
            }
        }
        observed = observe(drivers, desired)?;
    }
    retry.errors.clear();
    retry.failures = 0;
    retry.next = None;
    Ok(observed)
}

/// What one pass over one service produced.
pub struct Pass {
    /// What the drivers saw after acting, or why they could not be read.
    pub observed: Result<Observed, String>,
    /// This node's instance report, from what it saw.
    pub report: Option<InstanceReport>,
    /// What to commit besides the report: a live switch's next phase, captured domain XMLs.
    pub commands: Vec<Command>,
}

/// One pass of node `me` over one service: reconcile, take its part in a live switch, capture
/// domain XMLs, and build the report. Blocking (driver calls); the loop below and the scenario
/// tests both run it.
pub fn pass(
    drivers: &Drivers,
    path: &ObjectPath,
    want: &Desired,
    render_errors: BTreeMap<String, String>,
    retry: &mut Retry,
    now: Instant,
) -> Pass {
    let mut observed = reconcile(drivers, path, want, retry, now);
    let mut commands = Vec::new();
    let vanished_for = observed.as_ref().ok().and_then(|o| retry.vanished_for(want, o, now));
    if let Some(cmd) = observed
        .as_ref()
        .ok()
        .and_then(|o| drive_migration(drivers, path, want, o, vanished_for))
    {
        commands.push(cmd);
        observed = observe(drivers, want);
    }
    if let Ok(o) = &observed {
        for (name, xml) in uncaptured(drivers, want, o) {
            commands.push(Command::CaptureDomain {
                path: path.clone(),
                name,
                xml,
            });
        }
    }
    let report = observed.as_ref().ok().map(|o| {
        let mut errors = render_errors;
        errors.extend(retry.errors.clone());
        report(want, o, &errors)
    });
    Pass {
        observed,
        report,
        commands,
    }
}

/// What the cluster has of node `me`'s report on `path`, and its sequence number.
pub fn committed_report(
    state: &crate::model::ClusterState,
    path: &ObjectPath,
    me: u64,
) -> (Option<InstanceReport>, u64) {
    let report = state.reports.get(path).and_then(|r| r.get(&me)).cloned();
    let seq = state
        .report_seqs
        .get(path)
        .and_then(|r| r.get(&me))
        .copied()
        .unwrap_or(0);
    (report, seq)
}

/// The sequence number of this node's next report: above its last one, above the one the
/// cluster has, and at least `clock_us` (the wall clock in microseconds, from the daemon), so
/// that a restarted daemon (whose counter starts again) still numbers above what its previous
/// run may have left in flight.
pub fn next_report_seq(last: u64, committed: u64, clock_us: u64) -> u64 {
    (last + 1).max(committed + 1).max(clock_us)
}

/// The services node `me` reconciles: those provisioned somewhere and run on it, and those it
/// reported on before (`reported`), so it cleans up after an unprovision or a move; never the
/// whole object list.
pub fn services(state: &ClusterState, me: NodeId, reported: &BTreeSet<ObjectPath>) -> Vec<ObjectPath> {
    state
        .objects
        .keys()
        .filter(|p| p.kind == ObjectKind::Svc)
        .filter(|p| {
            let provisioned = state.services.get(*p).is_some_and(|s| s.provisioned);
            (provisioned && state.service_nodes(p).contains(&me)) || reported.contains(*p)
        })
        .cloned()
        .collect()
}

/// The report node `me` sends after a pass over `path`: only while the committed one differs
/// from what it saw (not from what it remembers sending: a write that timed out may still
/// commit, late), numbered by `next_report_seq` from `last_seq` (updated) and `clock_us`.
pub fn report_to_send(
    state: &ClusterState,
    path: &ObjectPath,
    me: NodeId,
    seen: Option<InstanceReport>,
    last_seq: &mut u64,
    clock_us: u64,
) -> Option<Command> {
    let (committed, committed_seq) = committed_report(state, path, me);
    let report = seen.filter(|r| committed.as_ref() != Some(r))?;
    *last_seq = next_report_seq(*last_seq, committed_seq, clock_us);
    Some(Command::ReportInstance {
        path: path.clone(),
        node_id: me,
        report,
        seq: *last_seq,
    })
}

/// What the applier loop needs of its node.
pub trait Host: Send + Sync + 'static {
    /// The node is stopping: the loop ends.
    fn closing(&self) -> bool;
    /// Reads the applied state, with this node's id in it.
    fn read<T>(&self, f: impl FnOnce(NodeId, &ClusterState) -> T) -> T;
    /// Resolves when the applied state changes or the lease lapses. Holds nothing of the host.
    fn changed(&self) -> impl Future<Output = ()> + Send + 'static;
    /// A count that moves when a command that gives appliers work at once was applied
    /// (`Command::moves_a_service`).
    fn moves(&self) -> u64;
    /// Whether this node holds a valid lease (it may run services).
    fn lease_valid(&self) -> bool;
    /// Whether this node may take resources (its watchdog, if any, is armed).
    fn may_take(&self) -> bool;
    /// What the last pass saw: a guest running or a DRBD resource Primary here.
    fn set_holding(&self, holding: bool);
    /// Commits `cmd` (through the leader).
    fn write(&self, cmd: Command) -> impl Future<Output = Result<crate::model::Response, String>> + Send;
    /// A step of kind `kind` (`Step::kind`) failed (counted in the metrics).
    fn step_failed(&self, kind: &'static str) {
        let _ = kind;
    }
}

/// Runs the applier of `host` on `drivers` until the host closes.
pub async fn run<H: Host>(host: Arc<H>, drivers: Drivers) {
    let weak = Arc::downgrade(&host);
    drop(host);
    // Services this node reported on: it goes on with them (cleans up) after they leave it.
    let mut sent: BTreeSet<ObjectPath> = Default::default();
    let mut seq = 0;
    let mut retries: BTreeMap<ObjectPath, Retry> = BTreeMap::new();
    // What the last pass saw: the `moves` count and the lease; when it started.
    let (mut moves, mut was_leased, mut last_pass) = (0, false, None::<tokio::time::Instant>);
    // Whether the last pass took part in a live switch, and how long it took.
    let (mut switching, mut last_took) = (false, Duration::ZERO);
    loop {
        // A service moved (a switch phase, a failover, a start...) or the lease lapsed since
        // the last pass: a pass at once, so each hand-over of a switch costs a commit, not a
        // pause. Otherwise at most one pass every `PASS_GAP`, however fast the log moves
        // (reports, writes), and at least one a second; but every `SWITCH_GAP` while this node
        // takes part in a live switch, whose next step may wait on what the other node does
        // to its own DRBD and guest, which commits nothing (its demotion, its guest running).
        // Then the gap is at least the last pass's length (up to `PASS_GAP`): a node with many
        // services does not spend all its time in passes.
        let gap = match switching {
            true => SWITCH_GAP.max(last_took).min(PASS_GAP),
            false => PASS_GAP,
        };
        let urgent = |host: &H| host.moves() != moves || (was_leased && !host.lease_valid());
        // Wait holding nothing of the node, so a stopped node is released at once. The
        // change signal is taken before looking: what is applied after wakes it, what was
        // applied before (during the last pass) shows in `moves`.
        let (changed, urgent_now) = match weak.upgrade().filter(|h| !h.closing()) {
            Some(host) => (host.changed(), urgent(&host)),
            None => return,
        };
        if !urgent_now {
            let idle = if switching { gap } else { Duration::from_secs(1) };
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
        let urgent = match weak.upgrade() {
            Some(host) => urgent(&host),
            None => return,
        };
        if let Some(last) = last_pass.filter(|_| !urgent) {
            tokio::time::sleep_until(last + gap).await;
        }
        let Some(host) = weak.upgrade().filter(|h| !h.closing()) else {
            return;
        };
        last_pass = Some(tokio::time::Instant::now());
        moves = host.moves();
        let leased = host.lease_valid();
        was_leased = leased;
        let may_take = host.may_take();
        // Only read under the state's lock; the DRBD files render below, off the async workers.
        let (me, work): (NodeId, Vec<(ObjectPath, Unrendered)>) = host.read(|me, state| {
            let work = services(state, me, &sent)
                .into_iter()
                .map(|p| {
                    let read = desired::read(state, me, &p, leased, may_take);
                    (p, read)
                })
                .collect();
            (me, work)
        });
        let mut pending: Vec<(Option<ObjectPath>, Command)> = Vec::new();
        let mut holding = false;
        switching = false;
        for (path, unrendered) in work {
            let mut retry = retries.remove(&path).unwrap_or_default();
            let d = drivers.clone();
            let p = path.clone();
            let (done, retry_back, in_switch) = tokio::task::spawn_blocking(move || {
                let (want, render_errors) = unrendered.render();
                let done = pass(&d, &p, &want, render_errors, &mut retry, Instant::now());
                (done, retry, want.migration.is_some())
            })
            .await
            .unwrap_or_else(|e| {
                let done = Pass {
                    observed: Err(format!("reconcile panicked: {e}")),
                    report: None,
                    commands: vec![],
                };
                (done, Retry::default(), false)
            });
            switching |= in_switch;
            let mut retry_back = retry_back;
            if let Some(kind) = retry_back.failed.take() {
                host.step_failed(kind);
            }
            retries.insert(path.clone(), retry_back);
            pending.extend(done.commands.into_iter().map(|c| (None, c)));
            match &done.observed {
                Err(e) => {
                    warn!(object = %path, "observing: {e}");
                    // Unknown: assume it holds what it may.
                    holding = true;
                }
                Ok(o) => holding |= o.holds_anything(),
            }
            let clock_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            let report = host.read(|_, state| report_to_send(state, &path, me, done.report, &mut seq, clock_us));
            if let Some(cmd) = report {
                pending.push((Some(path), cmd));
            }
        }
        host.set_holding(holding);
        // What this node tells the cluster goes out after every service was acted on, each
        // write bounded: a node cut from the quorum fences all its services first.
        for (sent_as, cmd) in pending {
            let what = cmd.to_string();
            match tokio::time::timeout(Duration::from_secs(2), host.write(cmd)).await {
                Ok(Ok(_)) => {
                    if let Some(key) = sent_as {
                        sent.insert(key);
                    } else {
                        info!("{what}");
                    }
                }
                Ok(Err(e)) => warn!("{what}: {e}"),
                Err(_) => warn!("{what}: not committed within 2 s; outcome unknown (it may still commit)"),
            }
        }
        drop(host);
        last_took = last_pass.map_or(Duration::ZERO, |t| t.elapsed());
    }
}

/// The pause between two passes of the applier while nothing urgent happens.
const PASS_GAP: Duration = Duration::from_millis(200);

/// The pause between two passes while this node takes part in a live switch.
const SWITCH_GAP: Duration = Duration::from_millis(50);
