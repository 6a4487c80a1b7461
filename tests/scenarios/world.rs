//! A simulated cluster on a virtual clock: two data nodes (n1, n2) and a witness (w), stepped
//! in 100 ms ticks, deterministic for a given seed; `World::with` adds data nodes (n3, ...)
//! and services beside kvm1 (kvm2, ...).
//!
//! Real code everywhere above consensus: the state machine (`ClusterState::apply`), the lease
//! rules (`Lease`), the leader's `lease_views`/`may_act`/`decide`, each node's applier pass
//! (`desired`, `plan`, the live-switch acts, the report) through the real DRBD driver on the
//! DRBD simulator, the LVM simulator and the simulated hypervisor, which refuse what the real
//! systems refuse and log split brains to `violations.log`.
//!
//! Consensus itself is modelled by its rules, not run: one committed log (what Raft
//! guarantees), to which a node's proposal is appended only when it reaches the leader and the
//! leader reaches a majority; a leader that loses its majority is replaced, after the election
//! timeout, by the most up-to-date node of a majority; a node applies the log only while it
//! reaches the leader; a lease is granted only by a leader that reaches a majority, with its
//! commit index. openraft itself is tested by its conformance suite and the process tests.
//!
//! Faults: power off/on, network cut/heal (the node's every link, DRBD's included), daemon
//! hang (SIGSTOP) and resume, daemon restart (kill -9 and start), a live migration that fails.
//! The watchdog follows the daemon's rule: armed while the node holds a started service or
//! takes part in a live switch, petted at each renewal only while the lease outlasts its
//! timeout, and it resets the node (guests and DRBD down, daemon dead) when not petted in time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use omraft::applier::desired::desired;
use omraft::applier::run::{pass, report_to_send, services, Retry};
use omraft::config::ini::Ini;
use omraft::daemon::votes::HOLD;
use omraft::drivers::hypervisor::{DomainState, Hypervisor};
use omraft::drivers::watchdog;
use omraft::drivers::Drivers;
use omraft::lease::{Grant, Grants, Lease, LeaseConfig, Source};
use omraft::model::objects::derived_uuid;
use omraft::model::{ClusterState, Command, ConfigKey, NodeId, ObjectPath, Phase, Response};
use omraft::orchestrator::{tick, Lead, Leadership};
use omraft::sim::drbd::{Sim, StandIns};
use omraft::sim::hypervisor::SimHypervisor;
use omraft::sim::InProcess;

pub const TICK: Duration = Duration::from_millis(100);
/// When a proposal sent across a cut link arrives, if it does (see `World::in_flight`).
const LATE: Duration = Duration::from_secs(8);
const LATE_MAX: Duration = Duration::from_secs(30);
/// `omd`'s default election timeout (minimum; the maximum is 1.5 times it): a follower stands
/// for election the maximum (openraft's leader lease) plus a random timeout after it last
/// heard from its leader.
const ELECTION_MIN: Duration = Duration::from_millis(250);
const WATCHDOG_TIMEOUT: Duration = Duration::from_millis(1500);
pub const SVC: &str = "demo/svc/kvm1";
pub const VM: &str = "kvm1";

/// The DRBD resource of service `name`'s volume.
fn res(name: &str) -> String {
    format!("{name}.demo.vol.drbd4kvm")
}

/// One service of a world: `demo/svc/NAME` with a 1 GiB DRBD volume and the guest NAME, on
/// every data node in the order n1, n2, ..., `orchestrate=ha`, plus `config` lines in its
/// DEFAULT section (`placement = spread`).
pub struct Service {
    pub name: &'static str,
    pub config: &'static str,
}

/// What a world holds: `data_nodes` data nodes (n1, n2, then n3... added after the witness,
/// as they would join), its services, provisioned in this order (each guest created where its
/// service was placed), and the memory each node reports (`omd --report-mem`).
pub struct Setup {
    pub data_nodes: usize,
    pub services: Vec<Service>,
    pub memory: Vec<(&'static str, u64)>,
}

impl Default for Setup {
    /// n1, n2, the witness and kvm1: `World::new`.
    fn default() -> Setup {
        Setup {
            data_nodes: 2,
            services: vec![Service {
                name: "kvm1",
                config: "",
            }],
            memory: vec![],
        }
    }
}

/// The fence-peer handler of the worlds, standing in for `omctl drbd fence-peer` (which asks
/// the node's daemon to commit the peer outdated and exits 4 only once it is): it answers 4
/// when the world said, right before this node's pass, that the node would get it committed
/// (`SIM/fence-ok/ME-PEER-RESOURCE`: it reaches a leader with a majority, which accepts it), and
/// leaves the request in `SIM/fence-req/ME` for the world to commit after the pass; 1
/// otherwise, as omctl does. `SIM` is three levels above the resource file.
const FENCE_STAND_IN: &str = r#"sim=$(dirname "$(dirname "$(dirname "$DRBD_CONF")")")
eval me=\$DRBD_NODE_ID_$DRBD_MY_NODE_ID; eval peer=\$DRBD_NODE_ID_$DRBD_PEER_NODE_ID
[ -e "$sim/fence-ok/$me-$peer-$DRBD_RESOURCE" ] || exit 1
mkdir -p "$sim/fence-req" && echo "fence $DRBD_RESOURCE $peer" >> "$sim/fence-req/$me" && exit 4
exit 1"#;

/// The unfence-peer handler of the worlds: clears the mark through the cluster when the node
/// reaches a leader (`SIM/fence-ok/ME`), 1 otherwise.
const UNFENCE_STAND_IN: &str = r#"sim=$(dirname "$(dirname "$(dirname "$DRBD_CONF")")")
eval me=\$DRBD_NODE_ID_$DRBD_MY_NODE_ID; eval peer=\$DRBD_NODE_ID_$DRBD_PEER_NODE_ID
[ -e "$sim/fence-ok/$me" ] || exit 1
mkdir -p "$sim/fence-req" && echo "unfence $DRBD_RESOURCE $peer" >> "$sim/fence-req/$me" && exit 0
exit 1"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    Running,
    /// SIGSTOP: does nothing, answers nothing; its guests keep running.
    Hung,
    Dead,
}

pub struct SimNode {
    pub id: NodeId,
    pub name: String,
    pub witness: bool,
    pub power: bool,
    pub daemon: Daemon,
    pub cut: bool,
    /// Only its DRBD links are cut (`SIM_DIR/netcut-NODE`); Raft still passes.
    pub drbd_cut: bool,
    /// The log entries it applied, in order (kept across restarts: it is on disk).
    pub log: Vec<Command>,
    pub state: ClusterState,
    last_response: Response,
    lease: Lease,
    next_renew: Duration,
    /// As leader: when it last granted each node's lease, by term.
    grants: Grants,
    /// Its orchestrator's memory between ticks.
    orchestrator: Leadership,
    /// Its orchestrator's loop is busy (a slow write) until then: no tick before.
    orchestrator_stalled_until: Duration,
    retries: BTreeMap<ObjectPath, Retry>,
    /// The services it reported on.
    sent: std::collections::BTreeSet<ObjectPath>,
    /// The last report's sequence number (kept across restarts, as the wall clock would be).
    report_seq: u64,
    /// Armed watchdog: when it was last petted.
    watchdog: Option<Duration>,
    /// This daemon reported its watchdog to the cluster.
    reported_watchdog: bool,
    drivers: Drivers,
}

impl SimNode {
    /// How many log entries it applied.
    pub fn applied(&self) -> usize {
        self.log.len()
    }
}

/// A write acknowledged to an operator: the log index it was committed at, and the command.
#[derive(Debug, Clone)]
pub struct Acked {
    pub index: usize,
    pub command: Command,
}

/// A tiny deterministic generator (xorshift), for elections' ties and random schedules.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub struct World {
    pub t: Duration,
    base: Instant,
    _tmp: tempfile::TempDir,
    pub sim: PathBuf,
    /// The committed log.
    pub log: Vec<Command>,
    /// The writes acknowledged to an operator, as they were acknowledged (not read back from
    /// the log, so that a log that changed under them is caught).
    pub acked: Vec<Acked>,
    pub nodes: BTreeMap<NodeId, SimNode>,
    pub leader: Option<NodeId>,
    /// The Raft term: one more at each election.
    term: u64,
    leaderless_since: Option<Duration>,
    /// When each node last heard from a leader that reached a majority (the leader itself
    /// included): Raft's messages, the confirmations of lease grants.
    heard: BTreeMap<NodeId, Duration>,
    /// How long before its election the current leader counts its wait for earlier leases
    /// from (`orchestrator::Lead::window`): what the vote hold gave it, the time since its
    /// voters last heard from a leader, at most `votes::HOLD`.
    window: Duration,
    /// When the next election completes, once the leader is lost.
    election_at: Duration,
    pub cfg: LeaseConfig,
    /// Pairs of nodes cut from each other (both directions dropped, or one: a request or
    /// its answer lost is the same for an RPC), each pair sorted.
    pub pair_cuts: std::collections::BTreeSet<(NodeId, NodeId)>,
    /// Proposals whose sender gave up (its link was cut: packets dropped, not refused) but
    /// which TCP still delivers later: committed `LATE` after they were sent if the sender
    /// then reaches a leader, forgotten after `LATE_MAX`. Their outcome was unknown.
    in_flight: Vec<(NodeId, Command, Duration)>,
    /// A node reset by its watchdog boots again after this long (a machine reboots); `None`:
    /// it stays off until a scenario powers it on.
    pub reboot_after_reset: Option<Duration>,
    reboots: Vec<(NodeId, Duration)>,
    /// The log applied from the start, as far as it was asked for (`committed`).
    committed: std::cell::RefCell<(usize, ClusterState)>,
    rng: Rng,
    pub trace: Vec<String>,
    /// Moves committed while the node's lease still ran (`check_moved_only_after_the_lease`).
    lease_violations: Vec<String>,
    /// The services' names (kvm1 first): each is `demo/svc/NAME`, its guest NAME.
    pub services: Vec<String>,
}

/// A node's simulated drivers: no time for a resync (the simulator counts it in real
/// milliseconds), and DRBD's fencing handlers asking this model of the cluster (see
/// `fencing_requests`).
fn drivers(sim: &Path, name: &str) -> Drivers {
    let settings = InProcess {
        vgs: [("data".to_string(), 10u64 << 30)].into(),
        sync_ms: 0,
        stand_ins: StandIns {
            fence_peer: Some(FENCE_STAND_IN.into()),
            unfence_peer: Some(UNFENCE_STAND_IN.into()),
        },
    };
    omraft::sim::in_process_drivers(sim, name, &settings)
}

/// The guest `name` on `/dev/drbdMINOR`.
fn guest_xml(name: &str, minor: u32) -> String {
    format!("<domain type='kvm'><name>{name}</name><devices><disk><source dev='/dev/drbd{minor}'/></disk></devices></domain>")
}

impl World {
    /// n1, n2 and w; the pool, the service with its volume and guest, provisioned and running
    /// on n1.
    pub fn new(seed: u64) -> World {
        World::with(seed, Setup::default())
    }

    /// The world `setup` describes, every service provisioned and its guest running where it
    /// was placed.
    pub fn with(seed: u64, setup: Setup) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let sim = tmp.path().join("sim");
        std::fs::create_dir_all(&sim).unwrap();
        // The simulated migration's memory copy takes no real time here.
        std::fs::write(sim.join("migrate-ms"), "0").unwrap();
        // Ids as the cluster allocates them: n1, n2, the witness, then the other data nodes.
        let mut members: Vec<(NodeId, String, bool)> =
            vec![(1, "n1".into(), false), (2, "n2".into(), false), (3, "w".into(), true)];
        for i in 3..=setup.data_nodes {
            members.push((i as NodeId + 1, format!("n{i}"), false));
        }
        let mut nodes = BTreeMap::new();
        for (id, name, witness) in &members {
            let (id, witness) = (*id, *witness);
            nodes.insert(
                id,
                SimNode {
                    id,
                    name: name.clone(),
                    witness,
                    power: true,
                    daemon: Daemon::Running,
                    cut: false,
                    drbd_cut: false,
                    log: vec![],
                    state: ClusterState::default(),
                    last_response: Response::Done,
                    lease: Lease::default(),
                    next_renew: Duration::ZERO,
                    grants: Grants::default(),
                    orchestrator: Leadership::default(),
                    orchestrator_stalled_until: Duration::ZERO,
                    retries: BTreeMap::new(),
                    sent: Default::default(),
                    report_seq: 0,
                    watchdog: None,
                    reported_watchdog: false,
                    drivers: drivers(&sim, name),
                },
            );
        }
        let mut w = World {
            t: Duration::ZERO,
            base: Instant::now(),
            _tmp: tmp,
            sim,
            log: vec![],
            acked: vec![],
            nodes,
            leader: Some(1),
            term: 1,
            leaderless_since: None,
            heard: BTreeMap::new(),
            window: Duration::ZERO,
            election_at: Duration::ZERO,
            cfg: LeaseConfig::default(),
            pair_cuts: Default::default(),
            in_flight: vec![],
            reboot_after_reset: None,
            reboots: vec![],
            committed: Default::default(),
            rng: Rng::new(seed),
            trace: vec![],
            lease_violations: vec![],
            services: setup.services.iter().map(|s| s.name.to_string()).collect(),
        };
        let kv = |k: &str, v: &str| (ConfigKey::parse(k).unwrap().0, v.to_string());
        let data: Vec<&str> = members.iter().filter(|m| !m.2).map(|m| m.1.as_str()).collect();
        let mut setup_log = vec![Command::Bootstrap {
            node_id: 1,
            name: "n1".into(),
            addr: "10.0.0.1:1215".into(),
        }];
        for (id, name, witness) in &members[1..] {
            setup_log.push(Command::AddNode {
                name: name.clone(),
                addr: format!("10.0.0.{id}:1215"),
                witness: *witness,
                token: None,
            });
        }
        for (id, _, _) in members.iter().filter(|m| !m.2) {
            setup_log.push(Command::ReportVolumeGroups {
                node_id: *id,
                vgs: [("data".to_string(), 10u64 << 30)].into(),
            });
        }
        for (name, available) in &setup.memory {
            let node_id = members.iter().find(|m| m.1 == *name).expect("a node of the world").0;
            setup_log.push(Command::ReportMemory {
                node_id,
                available: *available,
            });
        }
        setup_log.push(Command::UpdateConfig {
            set: vec![
                kv("cluster.name", "drbd4kvm"),
                kv("pool#drbdvm.type", "drbd"),
                kv("pool#drbdvm.vg", "data"),
            ],
            unset: vec![],
        });
        for cmd in setup_log {
            w.operator(1, cmd).expect("setup");
        }
        for svc in &setup.services {
            let mut config = Ini::parse(&format!(
                "[DEFAULT]\nnodes = {}\norchestrate = ha\n{}[volume#data]\nshared = true\nsize = 1G\n\
                 [container#1]\ntype = kvm\nname = {}\n",
                data.join(" "),
                svc.config,
                svc.name
            ))
            .unwrap();
            let path = service_path(svc.name);
            config.set("DEFAULT", "id", &derived_uuid(&path.to_string())).unwrap();
            w.operator(
                1,
                Command::CreateObject {
                    path: path.clone(),
                    config,
                },
            )
            .expect("create");
            w.operator(1, Command::Provision { path: path.clone() })
                .expect("provision");
            // The operator creates the guest where the service was placed (the tutorial's
            // virt-install on n1, then provision).
            let on = w.placement_of(svc.name).expect("placed");
            let minor = w.committed().objects[&path.volume(svc.name)]
                .alloc
                .as_ref()
                .and_then(|a| a.drbd.as_ref())
                .expect("a DRBD volume")
                .minor;
            w.hv(&on).define(&guest_xml(svc.name, minor)).unwrap();
            w.run_until(Duration::from_secs(30), &format!("{} running on {on}", svc.name), |w| {
                w.running_of(svc.name) == vec![on.clone()]
            });
        }
        w.trace.clear();
        w
    }

    pub fn hv(&self, node: &str) -> SimHypervisor {
        SimHypervisor::new(&self.sim, node)
    }

    pub fn id(&self, name: &str) -> NodeId {
        self.nodes.values().find(|n| n.name == name).expect("node").id
    }

    fn now(&self) -> Instant {
        self.base + self.t
    }

    fn note(&mut self, what: String) {
        self.trace.push(format!("{:>7.1}s {what}", self.t.as_secs_f64()));
    }

    /// Answers Raft traffic: powered, daemon running, network up.
    fn responds(&self, id: NodeId) -> bool {
        let n = &self.nodes[&id];
        n.power && n.daemon == Daemon::Running && !n.cut
    }

    fn linked(&self, a: NodeId, b: NodeId) -> bool {
        a == b || (self.responds(a) && self.responds(b) && !self.pair_cuts.contains(&(a.min(b), a.max(b))))
    }

    /// The leader, while it reaches a majority.
    fn valid_leader(&self) -> Option<NodeId> {
        let l = self.leader?;
        let reach = self.nodes.keys().filter(|n| self.linked(l, **n)).count();
        (self.responds(l) && reach * 2 > self.nodes.len()).then_some(l)
    }

    /// Commits `cmd` proposed by node `from`: it must reach a leader that reaches a majority.
    pub fn propose(&mut self, from: NodeId, cmd: Command) -> Result<Response, String> {
        let l = self.valid_leader();
        let Some(l) = l.filter(|l| self.linked(from, *l)) else {
            // Dropped packets, not a refused connection: the request may still arrive.
            if self.responds_locally(from) && self.link_cut(from, l) {
                self.in_flight.push((from, cmd, self.t));
            }
            return Err(format!("node {from} cannot reach a leader with a majority"));
        };
        self.note(format!(
            "commit #{} from {}: {cmd}",
            self.log.len(),
            self.nodes[&from].name
        ));
        self.check_moved_only_after_the_lease(&cmd);
        self.log.push(cmd);
        self.replicate();
        let node = &self.nodes[&l];
        Ok(node.last_response.clone())
    }

    /// The leader moves a service off a node, or records it fenced, only once that node's lease
    /// ran out: a powered node whose lease still runs may be running the guest.
    fn check_moved_only_after_the_lease(&mut self, cmd: &Command) {
        let moved_off = match cmd {
            Command::Failover { from, .. } => Some(*from),
            Command::Fence { node_id, .. } => Some(*node_id),
            Command::MigrationPhase { fenced, .. } => *fenced,
            _ => None,
        };
        let Some(id) = moved_off else { return };
        let n = &self.nodes[&id];
        if n.power && n.lease.remaining(self.now()).is_some() {
            let why = format!("{cmd} while {}'s lease still runs", n.name);
            self.note(why.clone());
            self.lease_violations.push(why);
        }
    }

    /// An operator's command through node `via`, acknowledged when committed and applied.
    pub fn operator(&mut self, via: NodeId, cmd: Command) -> Result<Response, String> {
        let r = self.propose(via, cmd.clone())?;
        if r == Response::Done || matches!(r, Response::NodeAdded(_)) {
            // The index the leader answered with, and the operator's own command.
            self.acked.push(Acked {
                index: self.log.len() - 1,
                command: cmd,
            });
        }
        Ok(r)
    }

    /// The daemon runs on a powered node (whatever its network).
    fn responds_locally(&self, id: NodeId) -> bool {
        let n = &self.nodes[&id];
        n.power && n.daemon == Daemon::Running
    }

    /// `id`'s way to the leader `l` (or to anyone, with no leader) is cut by packet drops.
    fn link_cut(&self, id: NodeId, l: Option<NodeId>) -> bool {
        let pair = |a: NodeId, b: NodeId| self.pair_cuts.contains(&(a.min(b), a.max(b)));
        self.nodes[&id].cut || l.is_some_and(|l| pair(id, l) || self.nodes[&l].cut)
    }

    /// Delivers the proposals that arrive late (see `in_flight`).
    fn deliver_late(&mut self) {
        let now = self.t;
        let due: Vec<(NodeId, Command, Duration)> = std::mem::take(&mut self.in_flight);
        for (from, cmd, sent) in due {
            if now >= sent + LATE_MAX {
                continue;
            }
            let reach = self.valid_leader().is_some_and(|l| self.linked(from, l));
            if now >= sent + LATE && reach {
                self.note(format!(
                    "commit #{} from {} (sent at {:.1}s, arrived late): {cmd}",
                    self.log.len(),
                    self.nodes[&from].name,
                    sent.as_secs_f64()
                ));
                self.log.push(cmd);
                self.replicate();
            } else {
                self.in_flight.push((from, cmd, sent));
            }
        }
    }

    /// Every node that reaches the leader catches up with the log.
    fn replicate(&mut self) {
        let Some(l) = self.valid_leader() else { return };
        let ids: Vec<NodeId> = self.nodes.keys().copied().filter(|n| self.linked(l, *n)).collect();
        for id in ids {
            self.heard.insert(id, self.t);
            let log = &self.log;
            let n = self.nodes.get_mut(&id).unwrap();
            while n.applied() < log.len() {
                let entry = log[n.applied()].clone();
                n.last_response = n.state.apply(&entry);
                n.log.push(entry);
            }
        }
    }
}

/// The service's path.
pub fn path() -> ObjectPath {
    ObjectPath::parse(SVC).unwrap()
}

/// The path of service `name`.
pub fn service_path(name: &str) -> ObjectPath {
    ObjectPath::parse(&format!("demo/svc/{name}")).unwrap()
}

impl World {
    /// One tick: elections, replication, lease renewals and watchdogs, the leader's
    /// orchestrator, every node's applier; then the invariants.
    pub fn tick(&mut self) {
        self.t += TICK;
        self.elect();
        self.replicate();
        self.deliver_late();
        self.reboot_due();
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            self.watchdog_fires(id);
            if self.nodes[&id].power
                && self.nodes[&id].daemon == Daemon::Running
                && self.t >= self.nodes[&id].next_renew
            {
                self.nodes.get_mut(&id).unwrap().next_renew = self.t + self.cfg.renew;
                self.renew(id);
                self.orchestrate(id);
            }
        }
        for &id in &ids {
            if self.nodes[&id].power && self.nodes[&id].daemon == Daemon::Running {
                self.apply_node(id);
            }
        }
        self.check();
    }

    fn elect(&mut self) {
        if self.valid_leader().is_some() {
            self.leaderless_since = None;
            return;
        }
        if self.leaderless_since.is_none() {
            let max = ELECTION_MIN * 3 / 2;
            let spread = self.rng.below((max - ELECTION_MIN).as_millis() as u64);
            self.election_at = self.t + max + ELECTION_MIN + Duration::from_millis(spread);
            self.leaderless_since = Some(self.t);
        }
        if self.t < self.election_at {
            return;
        }
        // A candidate reaching a majority, with the longest log (Raft's election restriction);
        // ties broken by the seed.
        let majority = |w: &World, c: NodeId| w.nodes.keys().filter(|n| w.linked(c, **n)).count() * 2 > w.nodes.len();
        let mut candidates: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|c| self.responds(*c) && majority(self, *c))
            .collect();
        let best = candidates.iter().map(|c| self.nodes[c].applied()).max();
        candidates.retain(|c| Some(self.nodes[c].applied()) == best);
        if candidates.is_empty() {
            return;
        }
        let pick = candidates[self.rng.below(candidates.len() as u64) as usize];
        self.elected(pick);
        self.leaderless_since = None;
    }

    /// `id` wins an election (every node it reaches voted): its window is what its voters'
    /// vote hold guarantees, the time since the last of them heard from a leader.
    fn elected(&mut self, id: NodeId) {
        let last = self
            .nodes
            .keys()
            .filter(|n| self.linked(id, **n))
            .filter_map(|n| self.heard.get(n))
            .max()
            .copied();
        self.window = last.map_or(HOLD, |last| (self.t - last).min(HOLD));
        self.leader = Some(id);
        self.term += 1;
        let name = self.nodes[&id].name.clone();
        self.note(format!(
            "{name} elected leader (counting from {} ms before)",
            self.window.as_millis()
        ));
    }

    /// A data node asks the leader for a lease; then the watchdog rule.
    fn renew(&mut self, id: NodeId) {
        let sent = self.now();
        // Raft names the leader to a node that hears from it.
        let leader = self.leader.filter(|l| self.linked(id, *l));
        let granter = match omraft::lease::source(id, self.nodes[&id].witness, leader) {
            Source::Nowhere(_) if self.nodes[&id].witness => return,
            Source::Nowhere(_) => None,
            Source::Itself | Source::Leader(_) => self.valid_leader().filter(|l| self.linked(id, *l)),
        };
        if let Some(l) = granter {
            let grant = Grant {
                duration_ms: self.cfg.duration.as_millis() as u64,
                commit_index: self.log.len() as u64,
            };
            self.nodes.get_mut(&id).unwrap().lease.granted(sent, grant);
            let term = self.term;
            self.nodes.get_mut(&l).unwrap().grants.record(term, id, sent);
        }
        // A data node reports its watchdog once per start.
        if !self.nodes[&id].reported_watchdog
            && self
                .propose(
                    id,
                    Command::ReportWatchdog {
                        node_id: id,
                        armed: true,
                    },
                )
                .is_ok()
        {
            self.nodes.get_mut(&id).unwrap().reported_watchdog = true;
        }
        // The daemon's watchdog rule: armed while the node holds or should hold anything,
        // petted while the (applied) lease outlasts its timeout.
        let n = &self.nodes[&id];
        let hosting = n.state.hosts(id) || self.holding(&n.name);
        let now = self.now();
        let remaining = n
            .lease
            .remaining(now)
            .filter(|_| n.lease.is_valid(now, n.applied() as u64));
        let name = n.name.clone();
        let t = self.t;
        let dog = &mut self.nodes.get_mut(&id).unwrap().watchdog;
        match watchdog::decide(hosting, dog.is_some(), remaining, WATCHDOG_TIMEOUT) {
            watchdog::Action::Disarm => {
                *dog = None;
                self.note(format!("{name}: watchdog disarmed"));
            }
            watchdog::Action::Arm => {
                *dog = Some(t);
                self.note(format!("{name}: watchdog armed"));
            }
            watchdog::Action::Pet => *dog = Some(t),
            watchdog::Action::Wait => {}
        }
    }

    fn watchdog_fires(&mut self, id: NodeId) {
        let n = &self.nodes[&id];
        if !n.power || n.watchdog.is_none_or(|pet| self.t <= pet + WATCHDOG_TIMEOUT) {
            return;
        }
        let name = n.name.clone();
        self.note(format!("{name}: watchdog reset"));
        self.power_off(&name);
        if let Some(boot) = self.reboot_after_reset {
            self.reboots.push((id, self.t + boot));
        }
    }

    /// Powers on the nodes whose watchdog reset is over (see `reboot_after_reset`).
    fn reboot_due(&mut self) {
        let now = self.t;
        let due: Vec<NodeId> = self
            .reboots
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        self.reboots.retain(|(_, at)| *at > now);
        for id in due {
            let name = self.nodes[&id].name.clone();
            if !self.nodes[&id].power {
                self.power_on(&name);
            }
        }
    }

    /// Node `id`'s orchestrator tick (the daemon's loop, every `lease.renew`): Raft tells it
    /// the term and whether it leads; only a leader that reaches a majority commits anything.
    fn orchestrate(&mut self, id: NodeId) {
        if self.t < self.nodes[&id].orchestrator_stalled_until {
            return;
        }
        let leads = self.leader == Some(id);
        let (term, now, cfg) = (self.term, self.now(), self.cfg);
        let n = self.nodes.get_mut(&id).unwrap();
        let grants = n.grants.of_term(term);
        let lead = leads.then_some(Lead {
            term,
            window: self.window,
            confirmed: None,
        });
        let done = tick(&mut n.orchestrator, lead, &n.state, &grants, now, &cfg);
        for cmd in done.commands {
            let _ = self.propose(id, cmd);
        }
    }

    /// One applier pass of node `id` over the services it is part of.
    /// What node `id`'s DRBD handlers may answer in its coming pass (see `FENCE_STAND_IN`).
    fn prepare_fencing(&self, id: NodeId) {
        let dir = self.sim.join("fence-ok");
        std::fs::create_dir_all(&dir).unwrap();
        let leader = self.valid_leader().filter(|l| self.linked(id, *l));
        let me = &self.nodes[&id].name;
        let set = |f: PathBuf, yes: bool| {
            if yes {
                std::fs::write(f, "").unwrap();
            } else {
                let _ = std::fs::remove_file(f);
            }
        };
        set(dir.join(me), leader.is_some());
        for peer in self.nodes.values().filter(|p| p.id != id) {
            for resource in self.services.iter().map(|s| res(s)) {
                let accepted = leader.is_some_and(|l| {
                    let outdate = Command::OutdatePeer {
                        resource: resource.clone(),
                        node_id: peer.id,
                    };
                    self.nodes[&l].state.check(&outdate).is_ok()
                });
                set(dir.join(format!("{me}-{}-{resource}", peer.name)), accepted);
            }
        }
    }

    /// The marks node `id`'s handlers asked for in its pass, to commit.
    fn fencing_requests(&mut self, id: NodeId) -> Vec<Command> {
        let f = self.sim.join("fence-req").join(&self.nodes[&id].name);
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let _ = std::fs::remove_file(&f);
        text.lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let (verb, resource, peer) = (w.first()?, w.get(1)?.to_string(), w.get(2)?);
                let node_id = self.nodes.values().find(|n| n.name == *peer)?.id;
                Some(match *verb {
                    "fence" => Command::OutdatePeer { resource, node_id },
                    _ => Command::UnfencePeer { resource, node_id },
                })
            })
            .collect()
    }

    fn apply_node(&mut self, id: NodeId) {
        self.prepare_fencing(id);
        let now = self.now();
        let n = self.nodes.get_mut(&id).unwrap();
        let leased = n.lease.is_valid(now, n.applied() as u64);
        let work = services(&n.state, id, &n.sent);
        let mut out = vec![];
        for p in work {
            let n = self.nodes.get_mut(&id).unwrap();
            let (want, errors) = desired(&n.state, id, &p, leased, n.watchdog.is_some());
            let retry = n.retries.entry(p.clone()).or_default();
            let done = pass(&n.drivers, &p, &want, errors, retry, now);
            out.extend(done.commands.into_iter().map(|c| (None, c)));
            // The daemon's rule, the virtual clock standing for the wall clock.
            let clock_us = self.t.as_micros() as u64;
            if let Some(cmd) = report_to_send(&n.state, &p, id, done.report, &mut n.report_seq, clock_us) {
                out.push((Some(p), cmd));
            }
        }
        // The handlers ran during the pass: their marks commit first (the stand-in answered
        // for it, from the same state).
        for cmd in self.fencing_requests(id) {
            let r = self.propose(id, cmd.clone());
            assert_eq!(r, Ok(Response::Done), "{cmd}: the stand-in promised it");
        }
        for (sent_as, cmd) in out {
            if self.propose(id, cmd).is_ok() {
                if let Some(key) = sent_as {
                    self.nodes.get_mut(&id).unwrap().sent.insert(key);
                }
            }
        }
    }

    /// Whether a guest is active (running or paused) or a DRBD resource is Primary on `node`.
    fn holding(&self, node: &str) -> bool {
        let drbd = Sim::new(&self.sim, node);
        self.services
            .iter()
            .any(|s| self.hv(node).state(s).is_ok_and(DomainState::active) || drbd.is_primary(&res(s)).unwrap_or(false))
    }

    /// Nodes on which kvm1's guest runs.
    pub fn running(&self) -> Vec<String> {
        self.running_of(VM)
    }

    /// Nodes on which service `name`'s guest runs.
    pub fn running_of(&self, name: &str) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| !n.witness)
            .filter(|n| self.hv(&n.name).state(name).ok() == Some(DomainState::Running))
            .map(|n| n.name.clone())
            .collect()
    }

    /// Nodes on which kvm1's DRBD resource is Primary.
    pub fn primaries(&self) -> Vec<String> {
        self.primaries_of(VM)
    }

    /// Nodes on which service `name`'s DRBD resource is Primary.
    pub fn primaries_of(&self, name: &str) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| !n.witness)
            .filter(|n| Sim::new(&self.sim, &n.name).is_primary(&res(name)).unwrap_or(false))
            .map(|n| n.name.clone())
            .collect()
    }

    /// The committed state (the log applied from the start).
    pub fn committed(&self) -> std::cell::Ref<'_, ClusterState> {
        {
            let mut c = self.committed.borrow_mut();
            let (applied, state) = &mut *c;
            while *applied < self.log.len() {
                state.apply(&self.log[*applied]);
                *applied += 1;
            }
        }
        std::cell::Ref::map(self.committed.borrow(), |c| &c.1)
    }

    /// The invariants (ARCHITECTURE.md: no split brain, nothing acknowledged lost, one state per
    /// log index), after every tick.
    fn check(&mut self) {
        let mut broken = vec![];
        for name in &self.services {
            let running = self.running_of(name);
            let primaries = self.primaries_of(name);
            if running.len() > 1 {
                broken.push(format!("guest {name} runs on {running:?}"));
            }
            if primaries.len() > 1 {
                // Only in a committed live switch's dual-primary window, with one guest.
                let last = self.leader.map(|l| &self.nodes[&l].state);
                let phase = last
                    .and_then(|s| s.services.get(&service_path(name)))
                    .and_then(|s| s.migration.as_ref())
                    .map(|m| m.phase);
                let window = matches!(
                    phase,
                    Some(Phase::DualPrimary | Phase::Migrating | Phase::Finalize | Phase::Abort)
                );
                // Both sides may be Primary with the guest on neither (both reset during the
                // copy); never with it on two.
                if !window || running.len() > 1 {
                    broken.push(format!(
                        "DRBD {} Primary on {primaries:?} (phase {phase:?}, guest on {running:?})",
                        res(name)
                    ));
                }
            }
        }
        broken.extend(self.lease_violations.iter().cloned());
        let violations = std::fs::read_to_string(self.sim.join("violations.log")).unwrap_or_default();
        if !violations.is_empty() {
            broken.push(format!("violations.log: {violations}"));
        }
        // Nothing acknowledged is lost, and every node that applied as much holds the same state.
        broken.extend(self.lost_acknowledged());
        let mut by_applied: BTreeMap<usize, &ClusterState> = BTreeMap::new();
        for n in self.nodes.values() {
            if let Some(other) = by_applied.insert(n.applied(), &n.state) {
                if other != &n.state {
                    broken.push(format!("{} diverged from a node at the same log index", n.name));
                }
            }
        }
        if !broken.is_empty() {
            panic!(
                "invariant broken at {:.1}s: {}\ntimeline:\n{}",
                self.t.as_secs_f64(),
                broken.join("; "),
                self.trace.join("\n")
            );
        }
    }

    /// The acknowledged writes that are not, identical and at their index, in the committed log
    /// and in the log of every node that applied that far: each a line saying where.
    pub fn lost_acknowledged(&self) -> Vec<String> {
        let mut lost = vec![];
        for a in &self.acked {
            let logs = std::iter::once(("the committed log".to_string(), &self.log, true)).chain(
                self.nodes
                    .values()
                    .map(|n| (format!("{}'s applied log", n.name), &n.log, false)),
            );
            for (whose, log, must_hold) in logs {
                match log.get(a.index) {
                    Some(c) if *c == a.command => {}
                    Some(c) => lost.push(format!(
                        "acknowledged entry {} ({}) is {c} in {whose}",
                        a.index, a.command
                    )),
                    None if must_hold => lost.push(format!(
                        "acknowledged entry {} ({}) is missing from {whose} ({} entries)",
                        a.index,
                        a.command,
                        log.len()
                    )),
                    // A node that has not applied that far yet (cut off, down).
                    None => {}
                }
            }
        }
        lost
    }

    /// Ticks until `cond` holds, failing after `limit` of virtual time.
    pub fn run_until(&mut self, limit: Duration, what: &str, cond: impl Fn(&World) -> bool) {
        let end = self.t + limit;
        while !cond(self) {
            assert!(
                self.t < end,
                "not reached within {limit:?}: {what}\nguest on {:?}, Primary on {:?}\ntimeline:\n{}",
                self.running(),
                self.primaries(),
                self.trace.join("\n")
            );
            self.tick();
        }
    }

    /// Ticks for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.t + d;
        while self.t < end {
            self.tick();
        }
    }
}

/// Faults and operator actions.
impl World {
    pub fn power_off(&mut self, name: &str) {
        self.note(format!("{name}: power off"));
        self.hv(name).power_off().unwrap();
        let id = self.id(name);
        if self.leader == Some(id) {
            self.leader = None;
        }
        // What its kernel had not sent yet dies with it.
        self.in_flight.retain(|(from, _, _)| *from != id);
        let n = self.nodes.get_mut(&id).unwrap();
        n.power = false;
        n.daemon = Daemon::Dead;
        n.watchdog = None;
    }

    /// Power back on: the daemon starts again from what it had applied, without a lease.
    pub fn power_on(&mut self, name: &str) {
        self.note(format!("{name}: power on"));
        let id = self.id(name);
        let n = self.nodes.get_mut(&id).unwrap();
        n.power = true;
        self.start_daemon(name);
    }

    pub fn kill_daemon(&mut self, name: &str) {
        self.note(format!("{name}: daemon killed"));
        let id = self.id(name);
        self.nodes.get_mut(&id).unwrap().daemon = Daemon::Dead;
        // Leadership is not durable: the others elect a new leader.
        if self.leader == Some(id) {
            self.leader = None;
        }
    }

    /// Leadership moves to `name` (openraft's trigger-elect) if it reaches a majority.
    pub fn transfer_leader(&mut self, name: &str) {
        let id = self.id(name);
        let reach = self.nodes.keys().filter(|n| self.linked(id, **n)).count();
        if !self.responds(id) || reach * 2 <= self.nodes.len() {
            return self.note(format!("{name} cannot lead"));
        }
        self.elected(id);
    }

    /// A daemon (re)starts: fresh memory, the log it had on disk.
    pub fn start_daemon(&mut self, name: &str) {
        self.note(format!("{name}: daemon starts"));
        let id = self.id(name);
        let n = self.nodes.get_mut(&id).unwrap();
        n.daemon = Daemon::Running;
        n.lease = Lease::default();
        n.grants = Grants::default();
        n.orchestrator = Leadership::default();
        n.retries.clear();
        n.sent.clear();
        n.reported_watchdog = false;
        n.next_renew = self.t;
    }

    /// Node `name`'s orchestrator loop is busy for `d` (a write that takes its 2 s bound, a
    /// slow read): it does not tick until then.
    pub fn stall_orchestrator(&mut self, name: &str, d: Duration) {
        self.note(format!("{name}: orchestrator busy for {:.1}s", d.as_secs_f64()));
        let id = self.id(name);
        self.nodes.get_mut(&id).unwrap().orchestrator_stalled_until = self.t + d;
    }

    pub fn restart_daemon(&mut self, name: &str) {
        self.kill_daemon(name);
        self.start_daemon(name);
    }

    pub fn hang(&mut self, name: &str) {
        self.note(format!("{name}: daemon hung (SIGSTOP)"));
        let id = self.id(name);
        self.nodes.get_mut(&id).unwrap().daemon = Daemon::Hung;
    }

    /// SIGCONT: the daemon goes on, unless the watchdog reset the node meanwhile.
    pub fn resume(&mut self, name: &str) {
        let id = self.id(name);
        let n = self.nodes.get_mut(&id).unwrap();
        if n.daemon == Daemon::Hung {
            n.daemon = Daemon::Running;
            self.note(format!("{name}: daemon resumed (SIGCONT)"));
        }
    }

    /// The simulator's DRBD cut flags from what is cut: a node's every link, its DRBD links
    /// alone, or the pair of data nodes (DRBD's only peers) cut from each other. The simulator
    /// cuts a node from all its peers, so with more than two data nodes a pair cut between
    /// two of them cuts the first data node's DRBD links altogether (no scenario does that).
    fn sync_netcut(&self) {
        let data_pair = self
            .pair_cuts
            .iter()
            .any(|(a, b)| !self.nodes[a].witness && !self.nodes[b].witness);
        for n in self.nodes.values() {
            let f = self.sim.join(format!("netcut-{}", n.name));
            let first_data = self.nodes.values().find(|x| !x.witness).map(|x| x.id) == Some(n.id);
            if n.cut || n.drbd_cut || (data_pair && first_data) {
                std::fs::write(f, "").unwrap();
            } else {
                let _ = std::fs::remove_file(f);
            }
        }
    }

    pub fn cut(&mut self, name: &str) {
        self.note(format!("{name}: network cut"));
        let id = self.id(name);
        self.nodes.get_mut(&id).unwrap().cut = true;
        self.sync_netcut();
    }

    /// Heals every cut of `name`: its own, its DRBD links', and its pair cuts.
    pub fn heal(&mut self, name: &str) {
        self.note(format!("{name}: network healed"));
        let id = self.id(name);
        let n = self.nodes.get_mut(&id).unwrap();
        n.cut = false;
        n.drbd_cut = false;
        self.pair_cuts.retain(|(a, b)| *a != id && *b != id);
        self.sync_netcut();
    }

    /// Cuts `name`'s DRBD links only (Raft still passes).
    pub fn cut_drbd(&mut self, name: &str) {
        self.note(format!("{name}: DRBD links cut"));
        let id = self.id(name);
        self.nodes.get_mut(&id).unwrap().drbd_cut = true;
        self.sync_netcut();
    }

    /// Cuts `a` and `b` from each other (Raft and, between data nodes, DRBD); each still
    /// reaches the third node. `one_way`: only one direction drops, which breaks every RPC
    /// between them the same way (a request or its answer is lost); noted as such.
    pub fn cut_pair(&mut self, a: &str, b: &str, one_way: bool) {
        let what = if one_way { "one-way drop" } else { "cut" };
        self.note(format!("{a} -> {b}: {what}"));
        let (x, y) = (self.id(a), self.id(b));
        if x != y {
            self.pair_cuts.insert((x.min(y), x.max(y)));
        }
        self.sync_netcut();
    }

    /// Live migrations fail halfway (the job is cancelled, the guest stays) while set.
    pub fn migrations_fail(&mut self, fail: bool) {
        self.note(format!("live migrations fail: {fail}"));
        let f = self.sim.join("migrate-fail");
        if fail {
            std::fs::write(f, "").unwrap();
        } else {
            let _ = std::fs::remove_file(f);
        }
    }

    /// The operator's command through node `via` (by name).
    pub fn op(&mut self, via: &str, cmd: Command) -> Result<Response, String> {
        self.note(format!("operator on {via}: {cmd}"));
        let id = self.id(via);
        self.operator(id, cmd)
    }

    pub fn leader_name(&self) -> Option<String> {
        self.valid_leader().map(|l| self.nodes[&l].name.clone())
    }

    /// The committed placement of kvm1.
    pub fn placement(&self) -> Option<String> {
        self.placement_of(VM)
    }

    /// The committed placement of service `name`.
    pub fn placement_of(&self, name: &str) -> Option<String> {
        let s = self.committed();
        let id = s.services.get(&service_path(name))?.placement?;
        Some(s.nodes.get(&id)?.name.clone())
    }

    pub fn phase(&self) -> Option<Phase> {
        self.committed()
            .services
            .get(&path())?
            .migration
            .as_ref()
            .map(|m| m.phase)
    }

    pub fn last_migration_error(&self) -> Option<String> {
        self.committed()
            .services
            .get(&path())?
            .last_migration
            .as_ref()?
            .error
            .clone()
    }
}
