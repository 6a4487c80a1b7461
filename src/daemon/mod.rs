//! `omd`: one node of the cluster. Owns the store, the current Raft instance (replaced when
//! the node joins another cluster) and the primitives the API builds on: proposing a command
//! through the leader, linearizable reads, and calls to the leader.
//!
//! It never interprets commands (that is `model`) and never speaks protobuf beyond the
//! generated clients it uses to reach the leader.

pub mod run;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use tonic::{Code, Status};

use crate::model::{ClusterState, Command, NodeId, Response};
use crate::pb;
use crate::raft::network::{Channels, Links, Network};
use crate::raft::store::{SmData, StateMachine, Store};
use crate::raft::Raft;
use crate::tls::pki::{self, Authority, NodeKey, PkiError, Subject};
use crate::tls::{Identity, Tls};

/// How a node is started.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub data_dir: PathBuf,
    /// `HOST:PORT` peers and clients reach this node at.
    pub addr: String,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    /// Build a snapshot every this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, for slow followers.
    pub keep_logs: u64,
    /// The watchdog that resets this node when its lease lapses and the daemon cannot act.
    pub watchdog: Watchdog,
    /// Volume groups (name -> bytes) this node reports for pool capacity instead of what LVM's
    /// `vgs` sees (`omd --report-vg`; they also size the simulated volume groups).
    pub vgs: BTreeMap<String, u64>,
}

impl Settings {
    /// Defaults for production timing.
    pub fn new(name: &str, data_dir: PathBuf, addr: &str) -> Settings {
        Settings {
            name: name.to_string(),
            data_dir,
            addr: addr.to_string(),
            heartbeat_ms: 200,
            election_timeout_ms: 600,
            snapshot_every: 5000,
            keep_logs: 1000,
            vgs: BTreeMap::new(),
            watchdog: Watchdog::None,
        }
    }

    fn raft_config(&self) -> openraft::Config {
        let mut c = crate::raft::config(self.heartbeat_ms, self.election_timeout_ms);
        c.snapshot_policy = openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every);
        c.max_in_snapshot_log_to_keep = self.keep_logs;
        c
    }
}

/// A watchdog resets the node when the daemon stops petting it: it pets only while its lease
/// has more than the watchdog's margin to run (`drivers::watchdog::decide`), so a hung or dead
/// daemon's node is reset before the leader can move its services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watchdog {
    /// None: the leader never moves a service away from this node automatically.
    None,
    /// The simulator's (`omsim watchdog`), for `--drivers sim`.
    Sim {
        dir: PathBuf,
        omsim: PathBuf,
        timeout_ms: u64,
    },
    /// The kernel's (`/dev/watchdog`), opened only while armed. `timeout_ms` is what `sysfs`
    /// said at start; the daemon reads it again before arming, and holds it while armed.
    Device {
        path: PathBuf,
        sysfs: PathBuf,
        timeout_ms: u64,
    },
}

/// The open /dev/watchdog (`Watchdog::Device`) while armed, and why it last could not be
/// armed or no longer suits the lease (each reason logged once, not every round).
#[derive(Debug, Default)]
struct DeviceSlot {
    open: Option<crate::drivers::watchdog::DeviceWatchdog>,
    refused: Option<String>,
}

impl DeviceSlot {
    /// Logs `why` unless it was the last reason logged.
    fn refuse(&mut self, why: String) {
        if self.refused.as_ref() != Some(&why) {
            tracing::warn!("{why}");
            self.refused = Some(why);
        }
    }

    /// Pets the open device, or opens (arms) and pets it; returns whether it armed it now.
    ///
    /// The device's timeout is checked against `lease` here, when it is armed, not when `omd`
    /// starts: the lease configuration is replicated state, known for sure only once this node
    /// applied the log, changed at any time by `omctl config set`, and replaced by a join. It
    /// is read again just before the device is opened (it may have changed since `omd`
    /// started): once open the device runs, and with nowayout nothing stops it.
    fn pet_or_arm(
        &mut self,
        path: &std::path::Path,
        sysfs: &std::path::Path,
        lease: &crate::lease::LeaseConfig,
        remaining: Option<Duration>,
    ) -> bool {
        use crate::drivers::watchdog::{check_timeout, device_margin, read_timeout, DeviceWatchdog};
        if let Some(dev) = self.open.as_mut() {
            let timeout = dev.timeout();
            if let Err(e) = dev.pet() {
                tracing::error!("petting the watchdog: {e}");
            }
            match check_timeout(timeout, lease) {
                // Armed under another lease configuration: the rule stays (no pet while the
                // lease does not outlast the margin), so a late renewal may reset this node.
                Err(why) => self.refuse(format!("{why} (armed: a late lease renewal may reset this node)")),
                Ok(()) => self.refused = None,
            }
            return false;
        }
        let fits = read_timeout(sysfs).map_err(|e| e.to_string()).and_then(|timeout| {
            check_timeout(timeout, lease)?;
            match remaining {
                Some(r) if r > device_margin(timeout) => Ok(timeout),
                _ => Err(format!(
                    "the lease does not outlast twice the watchdog's timeout ({} s)",
                    timeout.as_secs()
                )),
            }
        });
        let timeout = match fits {
            Ok(timeout) => timeout,
            Err(why) => {
                self.refuse(format!("not arming the watchdog: {why}"));
                return false;
            }
        };
        let mut dev = match DeviceWatchdog::open(path, sysfs) {
            Ok(dev) => dev,
            Err(e) => {
                self.refuse(format!("cannot arm the watchdog: {e}"));
                return false;
            }
        };
        if dev.timeout() != timeout {
            // Changed between the two reads by another program: stop it again.
            let why = format!(
                "its timeout changed from {} s to {} s",
                timeout.as_secs(),
                dev.timeout().as_secs()
            );
            if let Err(e) = dev.disarm() {
                tracing::error!("disarming the watchdog: {e}");
            }
            self.refuse(format!("not arming the watchdog: {why}"));
            return false;
        }
        if let Err(e) = dev.pet() {
            tracing::error!("petting the watchdog: {e}");
        }
        tracing::info!("watchdog armed ({}, {} s)", path.display(), timeout.as_secs());
        self.open = Some(dev);
        self.refused = None;
        true
    }

    /// The node holds nothing: disarms the device, except with nowayout, which no close can
    /// stop: then it stays open and petted rather than reset an idle machine.
    fn idle(&mut self) {
        match self.open.as_mut() {
            Some(dev) if dev.nowayout() => {
                if let Err(e) = dev.pet() {
                    tracing::error!("petting the watchdog: {e}");
                }
                self.refuse("the watchdog has nowayout set: it stays armed and petted while this node is idle".into());
            }
            _ => self.disarm(),
        }
    }

    /// The magic close, if armed.
    fn disarm(&mut self) {
        if let Some(dev) = self.open.take() {
            match dev.disarm() {
                Ok(()) => tracing::info!("watchdog disarmed"),
                Err(e) => tracing::error!("disarming the watchdog: {e}"),
            }
        }
    }
}

/// One Raft incarnation of this node: replaced whole when the node joins another cluster.
pub struct Member {
    pub id: NodeId,
    pub raft: Raft,
    pub sm: StateMachine,
}

/// A running node.
pub struct Node {
    pub settings: Settings,
    pub started: Instant,
    pub store: Store,
    pub channels: Channels,
    pub links: Arc<Links>,
    /// This node's TLS identity, CA and revocation list.
    pub tls: Arc<Tls>,
    /// This node's own key pair (`tls/node.key`).
    pub key: NodeKey,
    /// The CA and token signing key, on the node that holds them (the founder).
    pub authority: std::sync::Mutex<Option<Authority>>,
    member: RwLock<Arc<Member>>,
    /// Held during a join, so two joins never interleave.
    pub join_lock: tokio::sync::Mutex<()>,
    /// This node's lease: it runs services only while it is valid.
    pub lease: std::sync::Mutex<crate::lease::Lease>,
    /// Woken when the lease lapses, so the applier fences at once.
    pub lease_lapsed: Arc<tokio::sync::Notify>,
    /// Set by `shutdown`: background loops end.
    closing: std::sync::atomic::AtomicBool,
    /// As the leader: when this node last granted each node a lease (for the orchestrator,
    /// which moves a service only once its node's lease, as granted here, ran out).
    pub grants: std::sync::Mutex<BTreeMap<NodeId, Instant>>,
    /// Whether this node's watchdog is armed.
    watchdog_armed: std::sync::atomic::AtomicBool,
    /// `Watchdog::Device`: the open device while armed.
    watchdog_device: std::sync::Mutex<DeviceSlot>,
    /// The applier saw a guest running or a DRBD resource Primary here at its last pass: the
    /// watchdog stays armed while it does, whatever the log says.
    pub holding: std::sync::atomic::AtomicBool,
    /// A clean stop is releasing what this node holds: no lease from now on.
    releasing: std::sync::atomic::AtomicBool,
}

/// Errors of starting a node.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {0}")]
    DataDir(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::raft::store::StoreError),
    #[error("cannot start raft")]
    Raft(#[source] openraft::error::Fatal<NodeId>),
    #[error("invalid raft configuration")]
    Config(#[source] openraft::ConfigError),
    #[error(transparent)]
    Name(#[from] crate::model::Rejection),
    #[error("TLS identity: {0}")]
    Pki(#[from] PkiError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

const LOCAL_ID: &str = "node_id";

/// This node's TLS directory.
pub fn tls_dir(settings: &Settings) -> PathBuf {
    settings.data_dir.join("tls")
}

impl Node {
    /// Opens the data directory and starts Raft: resumes from disk, or founds a new one-node
    /// cluster when the directory is fresh.
    pub async fn start(settings: Settings) -> Result<Arc<Node>, StartError> {
        crate::model::validate_node_name(&settings.name)?;
        std::fs::create_dir_all(&settings.data_dir).map_err(|e| StartError::DataDir(settings.data_dir.clone(), e))?;
        crate::files::restrict(&settings.data_dir, 0o700)
            .map_err(|e| StartError::DataDir(settings.data_dir.clone(), e))?;
        let store = Store::open(&settings.data_dir)?;
        let links = Arc::new(Links::default());
        let dir = tls_dir(&settings);
        let key = NodeKey::load_or_make(&dir.join(pki::NODE_KEY))?;
        let (id, fresh) = match store.local_get::<NodeId>(LOCAL_ID)? {
            Some(id) => (id, false),
            None => {
                // A new one-node cluster: its own CA, and a certificate from it. Made before the
                // id is recorded, so a crash in between starts over.
                let authority = Authority::create(&dir)?;
                let cert = authority.issue(
                    &key.public(),
                    &Subject {
                        id: 1,
                        name: &settings.name,
                        addrs: std::slice::from_ref(&settings.addr),
                    },
                )?;
                pki::write_file(&dir.join(pki::NODE_CERT), pki::der_to_pem(&cert).as_bytes(), 0o644)?;
                store.local_set(LOCAL_ID, &1u64)?;
                (1, true)
            }
        };
        let identity = load_identity(&dir, &key)?;
        let tls = Arc::new(Tls::new(identity.1, &identity.0)?);
        let authority = Authority::load(&dir)?;
        let channels = Channels::new(tls.clone());
        let member = start_member(&settings, &store, &channels, &links, id).await?;
        if fresh {
            let nodes = BTreeMap::from([(
                id,
                BasicNode {
                    addr: settings.addr.clone(),
                },
            )]);
            member.raft.initialize(nodes).await.map_err(|e| match e {
                RaftError::Fatal(f) => StartError::Raft(f),
                RaftError::APIError(_) => unreachable!("a fresh store is not initialized"),
            })?;
            // Elect at once rather than after an election timeout: the node is alone.
            if let Err(e) = member.raft.trigger().elect().await {
                tracing::warn!("triggering the first election: {e}");
            }
            tracing::info!(node = %settings.name, id, "founded a new one-node cluster");
        } else {
            tracing::info!(node = %settings.name, id, "resumed from {}", store.path().display());
        }
        let node = Arc::new(Node {
            settings,
            started: Instant::now(),
            store,
            channels,
            links,
            tls,
            key,
            authority: std::sync::Mutex::new(authority),
            member: RwLock::new(member),
            join_lock: tokio::sync::Mutex::new(()),
            lease: std::sync::Mutex::new(crate::lease::Lease::default()),
            lease_lapsed: Arc::new(tokio::sync::Notify::new()),
            closing: std::sync::atomic::AtomicBool::new(false),
            grants: std::sync::Mutex::new(BTreeMap::new()),
            watchdog_armed: std::sync::atomic::AtomicBool::new(false),
            watchdog_device: std::sync::Mutex::new(DeviceSlot::default()),
            holding: std::sync::atomic::AtomicBool::new(false),
            releasing: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(register_founder(Arc::downgrade(&node)));
        tokio::spawn(keep_revocations(Arc::downgrade(&node)));
        tokio::spawn(renew_lease(Arc::downgrade(&node)));
        Ok(node)
    }

    /// The current Raft incarnation.
    pub fn member(&self) -> Arc<Member> {
        self.member.read().expect("member lock").clone()
    }

    /// Reads the local (possibly stale) state machine.
    pub fn read<T>(&self, f: impl FnOnce(&SmData) -> T) -> T {
        self.member().sm.read(f)
    }

    /// The current leader's id and address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.member();
        let metrics = m.raft.metrics().borrow().clone();
        let id = metrics.current_leader?;
        let addr = metrics.membership_config.membership().get_node(&id)?.addr.clone();
        Some((id, addr))
    }

    fn is_leader(&self) -> bool {
        let m = self.member();
        let id = m.raft.metrics().borrow().current_leader;
        id == Some(m.id)
    }

    /// Wraps `msg` in a request from this node (its certificate authenticates it).
    pub fn node_request<T>(&self, msg: T, timeout: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(timeout);
        r
    }

    /// Commits `cmd` through the leader and returns what applying it produced. Retries only
    /// when the command was certainly not appended (no leader yet, or a node that is not the
    /// leader any more); any other failure says the outcome is unknown (`OUTCOME_UNKNOWN`), and
    /// a failure where it certainly did not commit says so (`NOT_COMMITTED`).
    pub async fn write(&self, cmd: Command) -> Result<(u64, Response), Status> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = if self.is_leader() {
                // A leader cut from its majority appends but cannot commit: bounded too.
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100));
                match tokio::time::timeout(left, self.member().raft.client_write(cmd.clone())).await {
                    Ok(Ok(r)) => return Ok((r.log_id.index, r.data)),
                    Ok(Err(e)) => local_write_failure(&e),
                    Err(_) => Attempt::Fail(outcome_unknown(format!(
                        "appended on this node, the leader, but not committed within {} s",
                        left.as_secs()
                    ))),
                }
            } else if let Some((_, addr)) = self.leader() {
                let data = serde_json::to_vec(&cmd).expect("serialize command");
                let req = self.node_request(pb::RaftMessage { data }, Duration::from_secs(10));
                let call = |ch| async move { pb::raft_client::RaftClient::new(ch).propose(req).await };
                match self.channels.call(&addr, Duration::from_secs(10), call).await {
                    Ok(reply) => {
                        let r: Result<(u64, Response), String> = serde_json::from_slice(&reply.data)
                            .map_err(|e| outcome_unknown(format!("undecodable reply from the leader {addr}: {e}")))?;
                        match r {
                            Ok(ok) => return Ok(ok),
                            Err(e) => leader_write_failure(&addr, &e),
                        }
                    }
                    Err(s) => propose_failure(&addr, &s),
                }
            } else {
                Attempt::Retry(not_committed("no leader: the cluster has no quorum"))
            };
            match attempt {
                Attempt::Fail(s) => return Err(s),
                Attempt::Retry(s) if Instant::now() >= deadline => return Err(s),
                Attempt::Retry(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Proposes on this node if it is the leader; `Err(NOT_LEADER)` otherwise. Serves `Propose`.
    pub async fn propose_local(&self, cmd: Command) -> Result<(u64, Response), String> {
        match self.member().raft.client_write(cmd).await {
            Ok(r) => Ok((r.log_id.index, r.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(NOT_LEADER.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits until this node's state machine reflects every write committed before the call
    /// (read index through the leader), then reads it.
    pub async fn read_linearizable<T>(&self, f: impl FnOnce(&SmData) -> T) -> Result<T, Status> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = self.member();
            let res = if self.is_leader() {
                match m.raft.ensure_linearizable().await {
                    Ok(_) => return Ok(m.sm.read(f)),
                    Err(e) => Status::unavailable(format!("read index: {e}")),
                }
            } else if let Some((_, addr)) = self.leader() {
                let req = self.node_request(pb::RaftMessage { data: vec![] }, Duration::from_secs(5));
                let call = |ch| async move { pb::raft_client::RaftClient::new(ch).read_index(req).await };
                let answer = self.channels.call(&addr, Duration::from_secs(5), call).await;
                match answer {
                    Ok(reply) => {
                        let idx: Result<Option<u64>, String> = serde_json::from_slice(&reply.data)
                            .map_err(|e| Status::internal(format!("bad reply from leader: {e}")))?;
                        match idx {
                            Ok(idx) => {
                                let wait = m.raft.wait(Some(deadline.saturating_duration_since(Instant::now())));
                                wait.applied_index_at_least(idx, "linearizable read")
                                    .await
                                    .map_err(|e| Status::unavailable(format!("catching up with the leader: {e}")))?;
                                return Ok(m.sm.read(f));
                            }
                            Err(e) => Status::unavailable(e),
                        }
                    }
                    Err(s) => s,
                }
            } else {
                Status::unavailable("no leader: the cluster has no quorum")
            };
            if Instant::now() >= deadline {
                return Err(res);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (at most 10 s) until the cluster's founding node is registered in the state with
    /// its CA: a freshly founded cluster cannot admit anyone or mint tokens before.
    pub async fn wait_bootstrapped(&self) -> Result<(), Status> {
        let deadline = Instant::now() + Duration::from_secs(10);
        // Registered, with its CA recorded and its certificate (three entries the founder
        // commits right after it first leads).
        let ready = |d: &SmData| {
            !d.state.nodes.is_empty() && d.state.trust.is_some() && d.state.nodes.values().any(|n| n.cert.is_some())
        };
        while !self.read_linearizable(ready).await? {
            if Instant::now() >= deadline {
                return Err(Status::unavailable(
                    "the cluster is not bootstrapped yet: retry in a moment",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Whether this node holds a valid lease and applied the log as far as its grant requires.
    pub fn lease_valid(&self) -> bool {
        if self.releasing.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        let applied = self
            .member()
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0);
        self.lease.lock().expect("lease lock").is_valid(Instant::now(), applied)
    }

    /// Whether this node may take resources (promote, start guests): it has no watchdog, or
    /// its watchdog is armed.
    pub fn may_take(&self) -> bool {
        self.settings.watchdog == Watchdog::None || self.watchdog_armed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// What is left of this node's lease.
    pub fn lease_remaining(&self) -> Option<Duration> {
        if !self.lease_valid() {
            return None;
        }
        self.lease.lock().expect("lease lock").remaining(Instant::now())
    }

    /// As the leader: confirms leadership with a quorum and grants a lease (`Lease` RPC).
    pub async fn grant_lease(&self, to: NodeId) -> Result<crate::lease::Grant, String> {
        let m = self.member();
        let duration =
            m.sm.read(|d| crate::model::catalog::lease_config(&d.state.config).duration);
        match m.raft.ensure_linearizable().await {
            Ok(read) => {
                // Recorded after the quorum confirmed: the node's lease cannot outlast this
                // instant plus the duration (it runs from the node's request, sent earlier).
                self.grants.lock().expect("grants lock").insert(to, Instant::now());
                Ok(crate::lease::Grant {
                    duration_ms: duration.as_millis() as u64,
                    commit_index: read.map(|l| l.index).unwrap_or(0),
                })
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Replaces the Raft incarnation: stops the current one, wipes the Raft state and starts
    /// as `id` of the cluster whose CA issued `cert`, waiting to be added by its leader.
    pub async fn rejoin_as(&self, id: NodeId, cert: &[u8], ca: &[u8]) -> Result<(), StartError> {
        let old = self.member();
        if let Err(e) = old.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        self.lease.lock().expect("lease lock").revoke();
        // Joining: no lease for a while, and maybe never (a witness). Disarm first.
        self.disarm_watchdog();
        self.store.wipe_raft()?;
        // The new identity, then the id: a crash in between leaves the old id with a
        // certificate naming another, which the cluster refuses, rather than the reverse.
        let dir = tls_dir(&self.settings);
        pki::write_file(&dir.join(pki::CA_CERT), pki::der_to_pem(ca).as_bytes(), 0o644)?;
        pki::write_file(&dir.join(pki::NODE_CERT), pki::der_to_pem(cert).as_bytes(), 0o644)?;
        // The keys of the one-node cluster this node leaves: that CA is dead.
        *self.authority.lock().expect("authority lock") = None;
        for f in [pki::CA_KEY, pki::SIGNING_KEY] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        self.tls.replace(
            ca.to_vec(),
            &Identity {
                cert: cert.to_vec(),
                key: self.key.pkcs8(),
            },
        )?;
        self.channels.clear();
        self.store.local_set(LOCAL_ID, &id)?;
        let new = start_member(&self.settings, &self.store, &self.channels, &self.links, id).await?;
        *self.member.write().expect("member lock") = new;
        Ok(())
    }

    /// Stops the watchdog without a reset (the magic close of /dev/watchdog): on a clean stop
    /// or a join. A device with nowayout cannot be stopped: it resets the machine one timeout
    /// later (logged).
    pub fn disarm_watchdog(&self) {
        match &self.settings.watchdog {
            Watchdog::None => {}
            Watchdog::Sim { dir, .. } => {
                if self.watchdog_armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    let _ = std::fs::write(dir.join(format!("watchdog-{}", self.settings.name)), "disarm");
                    tracing::info!("watchdog disarmed");
                }
            }
            Watchdog::Device { .. } => {
                let mut slot = self.watchdog_device.lock().expect("watchdog lock");
                slot.disarm();
                self.watchdog_armed.store(false, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    /// Whether `shutdown` was called: background loops end.
    pub fn closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The node behind `weak`, unless it is gone or shutting down. Background loops hold a
    /// `Weak` and upgrade it once per round, so a stopped node is released (and its store
    /// unlocked) without waiting for them.
    pub fn alive(weak: &std::sync::Weak<Node>) -> Option<Arc<Node>> {
        weak.upgrade().filter(|n| !n.closing())
    }

    /// Stops Raft cleanly and makes the store durable. A node with a watchdog first releases
    /// what it holds (destroys its guests, demotes), as a node without a lease does: once it
    /// is gone the leader may fail its services over, and nothing would stop them here. If they
    /// cannot be released within a minute, the watchdog stays armed and resets the node.
    pub async fn shutdown(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let mut release_failed = false;
        if self.settings.watchdog != Watchdog::None && self.holding.load(SeqCst) {
            tracing::warn!("stopping: releasing this node's guests and DRBD Primary roles first");
            self.releasing.store(true, SeqCst);
            self.lease.lock().expect("lease lock").revoke();
            self.lease_lapsed.notify_waiters();
            let deadline = Instant::now() + Duration::from_secs(60);
            while self.holding.load(SeqCst) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            release_failed = self.holding.load(SeqCst);
        }
        self.closing.store(true, std::sync::atomic::Ordering::Relaxed);
        if release_failed {
            tracing::error!("stopping: could not release this node's guests within 60 s: the watchdog stays armed");
        } else {
            self.disarm_watchdog();
        }
        if let Err(e) = self.member().raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        if let Err(e) = self.store.sync() {
            tracing::error!("final sync of the store failed: {e}");
        }
    }

    /// The cluster name, as the local state has it.
    pub fn cluster_name(&self) -> String {
        self.read(|d| cluster_name(&d.state))
    }
}

/// The reply `Propose` gives when the node asked is not the leader.
pub const NOT_LEADER: &str = "not the leader";

/// How an error of a write begins when the command may or may not have been committed.
pub const OUTCOME_UNKNOWN: &str = "outcome unknown";
/// How an error of a write begins when the command was certainly not committed.
pub const NOT_COMMITTED: &str = "not committed";

/// The command may have been appended: it may commit or not.
fn outcome_unknown(why: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("{OUTCOME_UNKNOWN}: {why}"))
}

/// The command was certainly not appended anywhere.
fn not_committed(why: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("{NOT_COMMITTED}: {why}"))
}

/// What one failed attempt of `Node::write` means.
#[derive(Debug)]
enum Attempt {
    /// Certainly not appended: try again (through the leader of the moment) until the deadline.
    Retry(Status),
    /// Give up with this error.
    Fail(Status),
}

/// A failed `client_write` on this node. `ForwardToLeader` comes before an append, or when
/// the appended entry was truncated by a new leader's log: it never commits. Anything else
/// (the Raft core stopped, a storage error) may come after the append.
fn local_write_failure(e: &RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>) -> Attempt {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            Attempt::Retry(not_committed("leadership moved while committing"))
        }
        e => Attempt::Fail(outcome_unknown(format!("committing on this node (the leader): {e}"))),
    }
}

/// The leader's `Propose` answered with an error (`propose_local`'s).
fn leader_write_failure(addr: &str, e: &str) -> Attempt {
    if e == NOT_LEADER {
        Attempt::Retry(not_committed(format!("{addr} is not the leader any more")))
    } else {
        Attempt::Fail(outcome_unknown(format!("committing on the leader {addr}: {e}")))
    }
}

/// The `Propose` call to the leader failed: only a connection never made proves the command
/// was not sent; a timeout or a connection lost on the way leaves the outcome unknown.
fn propose_failure(addr: &str, s: &Status) -> Attempt {
    if s.code() == Code::InvalidArgument && s.message().starts_with("bad address") {
        return Attempt::Fail(not_committed(format!("the leader's address: {}", s.message())));
    }
    let mut text = s.message().to_string();
    let mut src = std::error::Error::source(s);
    while let Some(e) = src {
        text.push_str(&format!(": {e}"));
        src = e.source();
    }
    if s.code() == Code::Unavailable && (text.contains("tcp connect") || text.contains("tls connect")) {
        Attempt::Retry(not_committed(format!("the leader {addr} is unreachable: {text}")))
    } else {
        Attempt::Fail(outcome_unknown(format!("the leader {addr}: {}", s.message())))
    }
}

/// `cluster.name`, or its default.
pub fn cluster_name(state: &ClusterState) -> String {
    crate::model::catalog::get(&state.config, "cluster.name")
        .ok()
        .flatten()
        .unwrap_or_default()
}

async fn start_member(
    settings: &Settings,
    store: &Store,
    channels: &Channels,
    links: &Arc<Links>,
    id: NodeId,
) -> Result<Arc<Member>, StartError> {
    let config = Arc::new(settings.raft_config().validate().map_err(StartError::Config)?);
    let sm = store.state_machine()?;
    let network = Network {
        channels: channels.clone(),
        links: links.clone(),
    };
    let raft = Raft::new(id, config, network, store.log_store(), sm.clone())
        .await
        .map_err(StartError::Raft)?;
    Ok(Arc::new(Member { id, raft, sm }))
}

/// This node's certificate and the CA's (DER), from the TLS directory.
fn load_identity(dir: &std::path::Path, key: &NodeKey) -> Result<(Identity, Vec<u8>), PkiError> {
    let read = |name: &str| -> Result<Vec<u8>, PkiError> {
        let path = dir.join(name);
        let pem = std::fs::read_to_string(&path).map_err(|e| {
            PkiError::Bad(
                path.display().to_string(),
                format!(
                    "{e}: this data directory has no TLS identity (made by an older version, or damaged): \
                     wipe it and join the node again"
                ),
            )
        })?;
        pki::pem_to_der(&pem).map_err(|e| PkiError::Bad(path.display().to_string(), e.to_string()))
    };
    let cert = read(pki::NODE_CERT)?;
    let ca = read(pki::CA_CERT)?;
    Ok((Identity { cert, key: key.pkcs8() }, ca))
}

/// Keeps the TLS layer's revocation list equal to the replicated one, so a removed node's
/// certificate fails the handshake.
async fn keep_revocations(weak: std::sync::Weak<Node>) {
    loop {
        let Some(node) = Node::alive(&weak) else { return };
        let revoked = node.read(|d| d.state.trust.as_ref().map(|t| t.revoked.clone()).unwrap_or_default());
        node.tls.set_revoked(&revoked);
        drop(node);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A founding node registers itself in the state once it leads its one-node cluster. Runs at
/// every start, so a crash between `initialize` and the registration is repaired.
async fn register_founder(weak: std::sync::Weak<Node>) {
    for _ in 0..100 {
        let Some(node) = Node::alive(&weak) else { return };
        let m = node.member();
        let (registered, trusted, alone) = m.sm.read(|d| {
            let voters: Vec<_> = d.membership.membership().voter_ids().collect();
            // `None` until the initial membership is applied.
            (
                !d.state.nodes.is_empty(),
                d.state.trust.is_some(),
                (!voters.is_empty()).then(|| voters == [m.id]),
            )
        });
        if (registered && trusted) || alone == Some(false) {
            return;
        }
        if registered && alone == Some(true) && node.is_leader() {
            match establish_trust(&node, &m).await {
                Ok(()) => return,
                Err(e) => tracing::warn!("recording the cluster CA: {e}"),
            }
        }
        if alone == Some(true) && node.is_leader() {
            let cmd = Command::Bootstrap {
                node_id: m.id,
                name: node.settings.name.clone(),
                addr: node.settings.addr.clone(),
            };
            match m.raft.client_write(cmd).await {
                Ok(_) => continue,
                Err(e) => tracing::warn!("registering the founding node: {e}"),
            }
        }
        drop((node, m));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::error!("could not register this node as the founder of its cluster");
}

/// Records the founder's CA, signing key and certificate in the log.
async fn establish_trust(node: &Node, m: &Member) -> Result<(), String> {
    let (ca, signing_key) = {
        let a = node.authority.lock().expect("authority lock");
        let a = a.as_ref().ok_or("this founding node holds no CA key")?;
        (a.ca_der().to_vec(), a.signing_public())
    };
    let cmd = Command::EstablishTrust {
        ca,
        authority: m.id,
        signing_key,
    };
    m.raft.client_write(cmd).await.map_err(|e| e.to_string())?;
    let cert = node.tls.cert();
    let cmd = Command::NodeCert {
        node_id: m.id,
        fingerprint: pki::fingerprint(&cert),
    };
    m.raft.client_write(cmd).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Renews this node's lease every `lease.renew`: from itself when it leads, else from the
/// leader. Wakes the applier the moment the lease lapses.
async fn renew_lease(weak: std::sync::Weak<Node>) {
    let mut was_valid = false;
    loop {
        let Some(node) = Node::alive(&weak) else { return };
        let m = node.member();
        let (cfg, witness) = m.sm.read(|d| {
            let witness = d.state.nodes.get(&m.id).is_some_and(|n| n.witness);
            (crate::model::catalog::lease_config(&d.state.config), witness)
        });
        let sent = Instant::now();
        let grant = if witness {
            // A witness never hosts services: it needs no lease.
            Err("a witness holds no lease".to_string())
        } else if node.is_leader() {
            tokio::time::timeout(cfg.renew, node.grant_lease(m.id))
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
        } else if let Some((_, addr)) = node.leader() {
            let me = serde_json::to_vec(&m.id).expect("serialize node id");
            let req = node.node_request(pb::RaftMessage { data: me }, cfg.renew);
            let call = |ch| async move { pb::raft_client::RaftClient::new(ch).lease(req).await };
            match node.channels.call(&addr, cfg.renew, call).await {
                Ok(reply) => serde_json::from_slice(&reply.data).unwrap_or_else(|e| Err(e.to_string())),
                Err(s) => Err(s.message().to_string()),
            }
        } else {
            Err("no leader".into())
        };
        match grant {
            Ok(g) => node.lease.lock().expect("lease lock").granted(sent, g),
            Err(e) => tracing::debug!("lease renewal: {e}"),
        }
        let valid = node.lease_valid();
        if witness {
            idle_watchdog(&node);
        } else {
            report_watchdog(&node, m.id);
            pet_watchdog(&node, m.id);
        }
        if was_valid && !valid {
            tracing::warn!("lease lost: stopping this node's services");
            node.lease_lapsed.notify_waiters();
        } else if !was_valid && valid {
            tracing::info!("lease acquired");
        }
        was_valid = valid;
        // Wake early enough to see the lease lapse the moment it does.
        let left = node.lease.lock().expect("lease lock").remaining(Instant::now());
        let wait = left.map_or(cfg.renew, |l| l.min(cfg.renew) + Duration::from_millis(1));
        drop((node, m));
        tokio::time::sleep(wait).await;
    }
}

/// Arms the watchdog while this node is hosting (`hosting`) and has a lease (so a witness,
/// never leased, never arms one) and pets it while the lease has more than the watchdog's
/// margin to run (`drivers::watchdog::decide`); once it holds nothing, disarms it.
fn pet_watchdog(node: &Arc<Node>, me: NodeId) {
    use crate::drivers::watchdog::{decide, device_margin, read_timeout, Action};
    let margin = match &node.settings.watchdog {
        Watchdog::None => return,
        Watchdog::Sim { timeout_ms, .. } => Duration::from_millis(*timeout_ms),
        Watchdog::Device { sysfs, timeout_ms, .. } => {
            // The open device's timeout, else the driver's now: the operator may have reloaded
            // it with a shorter one since omd started.
            let slot = node.watchdog_device.lock().expect("watchdog lock");
            device_margin(match &slot.open {
                Some(dev) => dev.timeout(),
                None => read_timeout(sysfs).unwrap_or(Duration::from_millis(*timeout_ms)),
            })
        }
    };
    let hosting =
        node.member().sm.read(|d| d.state.hosts(me)) || node.holding.load(std::sync::atomic::Ordering::SeqCst);
    let armed = node.watchdog_armed.load(std::sync::atomic::Ordering::SeqCst);
    match decide(hosting, armed, node.lease_remaining(), margin) {
        Action::Wait => {}
        Action::Disarm => idle_watchdog(node),
        Action::Pet | Action::Arm => match &node.settings.watchdog {
            Watchdog::None => {}
            Watchdog::Sim { dir, omsim, timeout_ms } => pet_sim_watchdog(node, dir, omsim, *timeout_ms),
            Watchdog::Device { path, sysfs, .. } => pet_device_watchdog(node, path, sysfs),
        },
    }
}

/// This node holds nothing: disarms its watchdog (but see `DeviceSlot::idle` for nowayout).
fn idle_watchdog(node: &Node) {
    if let Watchdog::Device { .. } = &node.settings.watchdog {
        let mut slot = node.watchdog_device.lock().expect("watchdog lock");
        slot.idle();
        node.watchdog_armed
            .store(slot.open.is_some(), std::sync::atomic::Ordering::SeqCst);
        return;
    }
    node.disarm_watchdog();
}

/// Pets the simulated watchdog, starting `omsim watchdog` first when it is not armed.
fn pet_sim_watchdog(node: &Arc<Node>, dir: &std::path::Path, omsim: &std::path::Path, timeout_ms: u64) {
    let pet = dir.join(format!("watchdog-{}", node.settings.name));
    if let Err(e) = std::fs::write(&pet, "pet") {
        tracing::error!("petting the watchdog: {e}");
    }
    if !node.watchdog_armed.load(std::sync::atomic::Ordering::SeqCst) {
        let spawned = std::process::Command::new(omsim)
            .args([
                "watchdog",
                "--node",
                &node.settings.name,
                "--pid",
                &std::process::id().to_string(),
            ])
            .args(["--timeout-ms", &timeout_ms.to_string()])
            .env("OMRAFT_SIM_DIR", dir)
            .stdin(std::process::Stdio::null())
            .spawn();
        match spawned {
            Ok(_) => {
                node.watchdog_armed.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!("watchdog armed ({timeout_ms} ms)");
            }
            Err(e) => tracing::error!("starting the simulated watchdog: {e}"),
        }
    }
}

/// Pets /dev/watchdog, opening it first when it is not armed (`DeviceSlot::pet_or_arm`).
fn pet_device_watchdog(node: &Arc<Node>, path: &std::path::Path, sysfs: &std::path::Path) {
    let lease = node.read(|d| crate::model::catalog::lease_config(&d.state.config));
    let remaining = node.lease_remaining();
    let mut slot = node.watchdog_device.lock().expect("watchdog lock");
    // Checked under the lock `disarm_watchdog` takes: never armed after a clean stop's disarm.
    if slot.open.is_none() && node.closing() {
        return;
    }
    slot.pet_or_arm(path, sysfs, &lease, remaining);
    node.watchdog_armed
        .store(slot.open.is_some(), std::sync::atomic::Ordering::SeqCst);
    drop(slot);
}

/// Commits whether this node runs with a watchdog, when the log says otherwise. With one, it
/// takes nothing (promotes nothing, starts no guest) unless it is armed, and keeps it armed
/// while it holds anything: so once its lease ran out the leader may move its services.
fn report_watchdog(node: &Arc<Node>, me: NodeId) {
    let has = node.settings.watchdog != Watchdog::None;
    let committed = node.read(|d| d.state.nodes.get(&me).map(|n| n.watchdog));
    if committed.is_none_or(|c| c == has) {
        return;
    }
    let node = node.clone();
    tokio::spawn(async move {
        let cmd = Command::ReportWatchdog {
            node_id: me,
            armed: has,
        };
        match tokio::time::timeout(Duration::from_secs(2), node.write(cmd)).await {
            Ok(Ok(_)) => tracing::info!("reported: watchdog {}", if has { "present" } else { "absent" }),
            Ok(Err(e)) => tracing::warn!("reporting the watchdog: {}", e.message()),
            Err(_) => tracing::warn!("reporting the watchdog: outcome unknown: not committed within 2 s"),
        }
    });
}

/// Keeps ssh trust (`cluster.ssh_trust`) in `dir`: on a data node, its key pair made and its
/// public key published; on every node, the managed block of `authorized_keys` listing the
/// data nodes' keys (a witness's key is never trusted). Checked every 2 seconds.
pub async fn keep_ssh_trust(weak: std::sync::Weak<Node>, dir: PathBuf) {
    let mut last_error = String::new();
    let mut last_skipped = Vec::new();
    loop {
        let Some(node) = Node::alive(&weak) else { return };
        let m = node.member();
        let (trust, witness, keyed, mine) = m.sm.read(|d| {
            let trust = crate::model::catalog::get(&d.state.config, "cluster.ssh_trust")
                .ok()
                .flatten()
                .is_some_and(|v| v == "true");
            let mut keyed: Vec<(String, String)> = d
                .state
                .nodes
                .values()
                .filter(|n| !n.witness)
                .filter_map(|n| Some((n.name.clone(), n.ssh_key.clone()?)))
                .collect();
            keyed.sort();
            let me = d.state.nodes.get(&m.id);
            (
                trust,
                me.is_some_and(|n| n.witness),
                keyed,
                me.and_then(|n| n.ssh_key.clone()),
            )
        });
        // The lines are built from the state's node names and the keys checked again: a key
        // committed before the check was strict is skipped, not written.
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (name, key) in &keyed {
            match crate::drivers::ssh::TrustedKey::new(name, key) {
                Ok(k) => keys.push(k),
                Err(e) => skipped.push(e),
            }
        }
        if trust && skipped != last_skipped {
            for e in &skipped {
                tracing::warn!("ssh trust: not trusted: {e}");
            }
            last_skipped = skipped;
        }
        if trust {
            let (d, name, listed) = (dir.clone(), node.settings.name.clone(), keys.len());
            let done = tokio::task::spawn_blocking(move || -> Result<(Option<String>, bool), String> {
                let runner = crate::drivers::run::SystemRunner {
                    timeout: Duration::from_secs(10),
                };
                let key = if witness {
                    None
                } else {
                    Some(crate::drivers::ssh::ensure_key(&runner, &d, &name)?)
                };
                let wrote = crate::drivers::ssh::write_authorized_keys(&d, &keys)
                    .map_err(|e| format!("writing {}/authorized_keys: {e}", d.display()))?;
                Ok((key, wrote))
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match done {
                Ok((key, wrote)) => {
                    last_error.clear();
                    if wrote {
                        tracing::info!("ssh trust: authorized_keys lists {listed} node keys");
                    }
                    if let Some(key) = key.filter(|k| mine.as_ref() != Some(k)) {
                        let cmd = Command::ReportSshKey { node_id: m.id, key };
                        match tokio::time::timeout(Duration::from_secs(2), node.write(cmd)).await {
                            Ok(Ok(_)) => tracing::info!("ssh trust: public key published"),
                            Ok(Err(e)) => tracing::warn!("ssh trust: publishing the key: {}", e.message()),
                            Err(_) => tracing::warn!(
                                "ssh trust: publishing the key: outcome unknown: not committed within 2 s"
                            ),
                        }
                    }
                }
                Err(e) if e != last_error => {
                    tracing::warn!("ssh trust: {e}");
                    last_error = e;
                }
                Err(_) => {}
            }
        }
        drop((node, m));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Keeps this node's volume group report in the state current: at start, after a join, when
/// the volume groups change, and whenever the state lost it (a node re-admitted under a new id).
/// `read` gives the volume groups and their sizes (LVM's `vgs`, or what `--report-vg` declares).
pub async fn report_volume_groups<F>(weak: std::sync::Weak<Node>, read: F)
where
    F: Fn() -> Result<BTreeMap<String, u64>, String> + Send + Sync + Clone + 'static,
{
    loop {
        let Some(node) = Node::alive(&weak) else { return };
        let r = read.clone();
        let vgs = tokio::task::spawn_blocking(r)
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match vgs {
            Err(e) => tracing::debug!("reading volume groups: {e}"),
            Ok(vgs) => {
                let m = node.member();
                let stale =
                    m.sm.read(|d| d.state.nodes.contains_key(&m.id) && d.state.vgs.get(&m.id) != Some(&vgs));
                if stale {
                    let n = vgs.len();
                    match node.write(Command::ReportVolumeGroups { node_id: m.id, vgs }).await {
                        Ok((_, Response::Refused(why))) => tracing::warn!("volume group report refused: {why}"),
                        Ok(_) => tracing::info!("reported {n} volume groups"),
                        Err(e) => tracing::debug!("volume group report: {}", e.message()),
                    }
                }
            }
        }
        drop(node);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Migration, Phase, ServiceState};

    #[test]
    fn hosting_means_a_started_service_here_or_a_live_switch_from_or_to_here() {
        let mut state = ClusterState::default();
        let started = ServiceState {
            provisioned: true,
            started: true,
            placement: Some(1),
            ..ServiceState::default()
        };
        state.services.insert("demo/svc/a".into(), started.clone());
        assert!(state.hosts(1));
        assert!(!state.hosts(2), "another node's service");
        for idle in [
            ServiceState {
                started: false,
                ..started.clone()
            },
            ServiceState {
                provisioned: false,
                ..started.clone()
            },
        ] {
            state.services.insert("demo/svc/a".into(), idle);
            assert!(!state.hosts(1));
        }
        let switching = ServiceState {
            migration: Some(Migration {
                id: 1,
                from: 1,
                to: 2,
                phase: Phase::Migrating,
                error: None,
                dual: true,
            }),
            ..started
        };
        state.services.insert("demo/svc/a".into(), switching);
        assert!(state.hosts(1) && state.hosts(2));
        assert!(!state.hosts(3), "not a participant");
    }

    #[test]
    fn a_write_error_after_a_possible_append_says_the_outcome_is_unknown() {
        fn message(a: Attempt) -> (bool, String) {
            match a {
                Attempt::Retry(s) => (true, s.message().to_string()),
                Attempt::Fail(s) => (false, s.message().to_string()),
            }
        }
        let unknown = |a: Attempt| {
            let (retry, m) = message(a);
            assert!(!retry, "{m}: retried, so maybe committed twice");
            assert!(m.starts_with(OUTCOME_UNKNOWN), "{m}");
            assert!(!m.contains("failed"), "{m}");
        };
        let not_committed_retried = |a: Attempt| {
            let (retry, m) = message(a);
            assert!(retry, "{m}");
            assert!(m.starts_with(NOT_COMMITTED), "{m}");
        };
        // On this node as the leader.
        unknown(local_write_failure(&RaftError::Fatal(openraft::error::Fatal::Stopped)));
        not_committed_retried(local_write_failure(&RaftError::APIError(
            ClientWriteError::ForwardToLeader(openraft::error::ForwardToLeader::empty()),
        )));
        // The leader's own answer.
        unknown(leader_write_failure("10.0.0.1:1215", "raft stopped"));
        not_committed_retried(leader_write_failure("10.0.0.1:1215", NOT_LEADER));
        // The call to the leader.
        for s in [
            Status::deadline_exceeded("10.0.0.1:1215 did not answer within 10s"),
            Status::unavailable("transport error"),
            Status::unknown("h2 protocol error: connection reset"),
            Status::cancelled("operation was canceled"),
        ] {
            unknown(propose_failure("10.0.0.1:1215", &s));
        }
        not_committed_retried(propose_failure(
            "10.0.0.1:1215",
            &Status::unavailable("error trying to connect: tcp connect error: Connection refused"),
        ));
        let (retry, m) = message(propose_failure(
            "nowhere",
            &Status::invalid_argument("bad address nowhere: invalid uri"),
        ));
        assert!(!retry && m.starts_with(NOT_COMMITTED), "{m}");
    }

    /// A regular file standing in for /dev/watchdog, and its fake sysfs directory.
    fn fake_device(timeout: &str, nowayout: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        crate::drivers::watchdog::tests::fake(timeout, Some(nowayout))
    }

    #[test]
    fn device_armed_once_then_petted_then_disarmed_by_the_magic_close() {
        let (_dir, dev, sysfs) = fake_device("1", "0");
        let lease = crate::lease::LeaseConfig::default();
        let left = Some(Duration::from_millis(2900));
        let mut slot = DeviceSlot::default();
        assert!(slot.pet_or_arm(&dev, &sysfs, &lease, left), "armed now");
        assert!(!slot.pet_or_arm(&dev, &sysfs, &lease, left), "already armed");
        assert_eq!(std::fs::read(&dev).unwrap(), b"11");
        slot.idle();
        assert!(slot.open.is_none());
        assert_eq!(std::fs::read(&dev).unwrap(), b"11V");
    }

    #[test]
    fn device_not_armed_when_its_timeout_does_not_suit_the_lease() {
        let lease = crate::lease::LeaseConfig::default();
        let (_dir, dev, sysfs) = fake_device("2", "0");
        let mut slot = DeviceSlot::default();
        assert!(!slot.pet_or_arm(&dev, &sysfs, &lease, Some(Duration::from_millis(2900))));
        assert!(slot.open.is_none());
        assert!(
            slot.refused.as_ref().unwrap().contains("soft_margin=1"),
            "{:?}",
            slot.refused
        );
        assert_eq!(std::fs::read(&dev).unwrap(), b"", "never opened");
        // Suitable, but the lease has less than twice the timeout left.
        std::fs::write(sysfs.join("timeout"), "1").unwrap();
        assert!(!slot.pet_or_arm(&dev, &sysfs, &lease, Some(Duration::from_millis(2000))));
        assert!(!slot.pet_or_arm(&dev, &sysfs, &lease, None));
        assert!(slot.open.is_none());
        assert!(
            slot.refused.as_ref().unwrap().contains("does not outlast"),
            "{:?}",
            slot.refused
        );
        // Gone.
        std::fs::remove_file(&dev).unwrap();
        assert!(!slot.pet_or_arm(&dev, &sysfs, &lease, Some(Duration::from_millis(2900))));
        assert!(
            slot.refused.as_ref().unwrap().contains(&*dev.to_string_lossy()),
            "{:?}",
            slot.refused
        );
    }

    #[test]
    fn an_idle_node_keeps_a_nowayout_device_petted_and_a_stop_closes_it() {
        let (_dir, dev, sysfs) = fake_device("1", "1");
        let mut slot = DeviceSlot::default();
        let lease = crate::lease::LeaseConfig::default();
        assert!(slot.pet_or_arm(&dev, &sysfs, &lease, Some(Duration::from_millis(2900))));
        slot.idle();
        slot.idle();
        assert!(slot.open.is_some(), "closing would reset the machine");
        assert_eq!(std::fs::read(&dev).unwrap(), b"111");
        slot.disarm();
        assert!(slot.open.is_none());
        assert_eq!(std::fs::read(&dev).unwrap(), b"111V");
    }
}
