//! One node: its store, its current Raft incarnation (replaced whole when the node joins
//! another cluster), its TLS identity, and the primitives the API builds on: committing a
//! command through the leader (`write`), linearizable reads, calls to the leader. Both go
//! through `via_leader`, which retries only what certainly did not happen.
//!
//! It never interprets commands (that is `model`) and never speaks protobuf beyond the
//! generated clients it uses to reach the leader.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

use super::batch::Batcher;
use super::Watchdog;
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
    /// Available memory in bytes this node reports for `placement=score` instead of what
    /// `/proc/meminfo` says (`omd --report-mem`).
    pub memory: Option<u64>,
}

impl Settings {
    /// Defaults for production timing.
    pub fn new(name: &str, data_dir: PathBuf, addr: &str) -> Settings {
        Settings {
            name: name.to_string(),
            data_dir,
            addr: addr.to_string(),
            heartbeat_ms: 100,
            election_timeout_ms: 250,
            snapshot_every: 5000,
            keep_logs: 1000,
            vgs: BTreeMap::new(),
            memory: None,
            watchdog: Watchdog::None,
        }
    }

    pub fn raft_config(&self) -> openraft::Config {
        let mut c = crate::raft::config(self.heartbeat_ms, self.election_timeout_ms);
        c.snapshot_policy = openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every);
        c.max_in_snapshot_log_to_keep = self.keep_logs;
        c
    }
}

/// One Raft incarnation of this node: replaced whole when the node joins another cluster.
pub struct Member {
    pub id: NodeId,
    pub raft: Raft,
    pub sm: StateMachine,
    /// Where this node's writes go when it leads: several to an entry (`batch`).
    pub batch: Batcher,
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
    pub authority: Mutex<Option<Authority>>,
    member: RwLock<Arc<Member>>,
    /// Held during a join, so two joins never interleave.
    pub join_lock: tokio::sync::Mutex<()>,
    /// This node's lease, and the leases it granted as the leader.
    pub leases: super::lease::Leases,
    /// This node's watchdog.
    pub watchdog: super::watchdog::NodeWatchdog,
    /// Votes held after hearing from a leader (see `votes`).
    pub votes: super::votes::VoteHold,
    /// The metrics' counters since the daemon started.
    pub counters: super::metrics::Counters,
    /// Set by `shutdown`: background loops end.
    closing: AtomicBool,
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
    /// A node name or address the cluster refuses.
    #[error(transparent)]
    Identity(#[from] crate::model::Rejection),
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
    pub(crate) async fn start(settings: Settings) -> Result<Arc<Node>, StartError> {
        crate::model::validate_node_name(&settings.name)?;
        crate::model::validate_node_addr(&settings.addr)?;
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
        let watchdog = super::watchdog::NodeWatchdog::new(settings.watchdog.clone(), &settings.name);
        let node = Arc::new(Node {
            started: Instant::now(),
            settings,
            store,
            channels,
            links,
            tls,
            key,
            authority: std::sync::Mutex::new(authority),
            member: RwLock::new(member),
            join_lock: tokio::sync::Mutex::new(()),
            leases: super::lease::Leases::default(),
            votes: super::votes::VoteHold::default(),
            counters: Default::default(),
            watchdog,
            closing: AtomicBool::new(false),
        });
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

    /// Whether this node is in touch with a quorum as far as it knows: it follows a known
    /// leader, or it leads and a quorum acknowledged it within twice the election timeout
    /// (the gRPC health status; a leader cut off keeps believing it leads).
    pub fn in_quorum(&self) -> bool {
        let m = self.member();
        let metrics = m.raft.metrics();
        let metrics = metrics.borrow();
        match metrics.current_leader {
            Some(leader) if leader == m.id => metrics
                .millis_since_quorum_ack
                .is_some_and(|ms| ms < 2 * self.settings.election_timeout_ms),
            Some(_) => true,
            None => false,
        }
    }

    fn is_leader(&self) -> bool {
        self.leadership().1
    }

    /// The current Raft term, and whether this node leads in it.
    pub fn leadership(&self) -> (u64, bool) {
        let m = self.member();
        let metrics = m.raft.metrics();
        let metrics = metrics.borrow();
        (metrics.current_term, metrics.current_leader == Some(m.id))
    }

    /// Wraps `msg` in a request from this node (its certificate authenticates it).
    pub fn node_request<T>(&self, msg: T, timeout: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(timeout);
        r
    }

    /// Runs one operation through the leader until it succeeds, fails for good or 10 s pass:
    /// `local` when this node leads, `remote` with the leader's address when another does. An
    /// attempt's `Attempt::Retry` tries again (through the leader of the moment) after 100 ms;
    /// with no leader known, `no_leader` is the error once the time is up.
    async fn via_leader<T, L, LF, R, RF>(&self, no_leader: Status, local: L, remote: R) -> Result<T, Status>
    where
        L: Fn(Arc<Member>, Instant) -> LF,
        LF: Future<Output = Result<T, Attempt>>,
        R: Fn(Arc<Member>, String, Instant) -> RF,
        RF: Future<Output = Result<T, Attempt>>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = self.member();
            let attempt = if self.is_leader() {
                local(m, deadline).await
            } else if let Some((_, addr)) = self.leader() {
                remote(m, addr, deadline).await
            } else {
                Err(Attempt::Retry(no_leader.clone()))
            };
            match attempt {
                Ok(v) => return Ok(v),
                Err(Attempt::Fail(s)) => return Err(s),
                Err(Attempt::Retry(s)) if Instant::now() >= deadline => return Err(s),
                Err(Attempt::Retry(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Commits `cmd` through the leader and returns what applying it produced. Retries only
    /// when the command was certainly not appended (no leader yet, or a node that is not the
    /// leader any more); any other failure says the outcome is unknown (`OUTCOME_UNKNOWN`), and
    /// a failure where it certainly did not commit says so (`NOT_COMMITTED`). A command
    /// breaking an input rule (`Command::check_input`) is refused here, never proposed: the
    /// answer is `Response::Refused`, with no log index (0).
    pub async fn write(&self, cmd: Command) -> Result<(u64, Response), Status> {
        if let Err(why) = cmd.check_input() {
            return Ok((0, Response::Refused(why)));
        }
        let local = |m: Arc<Member>, deadline: Instant| {
            let cmd = cmd.clone();
            async move {
                // A leader cut from its majority appends but cannot commit: bounded too.
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100));
                match tokio::time::timeout(left, m.batch.write(cmd)).await {
                    Ok(Ok(written)) => Ok(written),
                    Ok(Err(e)) => Err(local_write_failure(&e)),
                    Err(_) => Err(Attempt::Fail(outcome_unknown(format!(
                        "queued on this node, the leader, but not committed within {} s",
                        left.as_secs()
                    )))),
                }
            }
        };
        let remote = |_: Arc<Member>, addr: String, _: Instant| {
            let data = crate::raft::codec::encode(&cmd).expect("serialize command");
            let req = self.node_request(pb::RaftMessage { data }, Duration::from_secs(10));
            async move {
                let call = |ch| async move { pb::raft_client::RaftClient::new(ch).propose(req).await };
                match self.channels.call(&addr, Duration::from_secs(10), call).await {
                    Ok(reply) => {
                        let r: Result<(u64, Response), ProposeError> = crate::raft::codec::decode(&reply.data)
                            .map_err(|e| {
                                Attempt::Fail(outcome_unknown(format!(
                                    "undecodable reply from the leader {addr}: {e}"
                                )))
                            })?;
                        r.map_err(|e| leader_write_failure(&addr, e))
                    }
                    Err(s) => Err(propose_failure(&addr, &s)),
                }
            }
        };
        self.via_leader(not_committed("no leader: the cluster has no quorum"), local, remote)
            .await
    }

    /// Proposes on this node if it is the leader; `Err(ProposeError::NotLeader)` otherwise.
    /// Serves `Propose`: a member's command breaking an input rule
    /// (`ClusterState::check_proposal`) is refused (`Response::Refused`, log index 0) before
    /// Raft sees it.
    pub async fn propose_local(&self, cmd: Command) -> Result<(u64, Response), ProposeError> {
        if let Err(why) = self.read(|d| d.state.check_proposal(&cmd)) {
            return Ok((0, Response::Refused(why)));
        }
        match self.member().batch.write(cmd).await {
            Ok(written) => Ok(written),
            Err(e) if matches!(*e, RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(ProposeError::NotLeader)
            }
            Err(e) => Err(ProposeError::Failed(e.to_string())),
        }
    }

    /// Waits until this node's state machine reflects every write committed before the call
    /// (read index through the leader), then reads it.
    pub async fn read_linearizable<T>(&self, f: impl FnOnce(&SmData) -> T) -> Result<T, Status> {
        let local = |m: Arc<Member>, _: Instant| async move {
            match m.raft.ensure_linearizable().await {
                Ok(_) => Ok(m),
                Err(e) => Err(Attempt::Retry(Status::unavailable(format!("read index: {e}")))),
            }
        };
        let remote = |m: Arc<Member>, addr: String, deadline: Instant| {
            let req = self.node_request(pb::RaftMessage { data: vec![] }, Duration::from_secs(5));
            async move {
                let call = |ch| async move { pb::raft_client::RaftClient::new(ch).read_index(req).await };
                let reply = self
                    .channels
                    .call(&addr, Duration::from_secs(5), call)
                    .await
                    .map_err(Attempt::Retry)?;
                let idx: Result<Option<u64>, String> = crate::raft::codec::decode(&reply.data)
                    .map_err(|e| Attempt::Fail(Status::internal(format!("bad reply from leader: {e}"))))?;
                let idx = idx.map_err(|e| Attempt::Retry(Status::unavailable(e)))?;
                let wait = m.raft.wait(Some(deadline.saturating_duration_since(Instant::now())));
                wait.applied_index_at_least(idx, "linearizable read")
                    .await
                    .map_err(|e| Attempt::Fail(Status::unavailable(format!("catching up with the leader: {e}"))))?;
                Ok(m)
            }
        };
        let m = self
            .via_leader(
                Status::unavailable("no leader: the cluster has no quorum"),
                local,
                remote,
            )
            .await?;
        Ok(m.sm.read(f))
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

    /// Replaces the Raft incarnation: stops the current one, wipes the Raft state and starts
    /// as `id` of the cluster whose CA issued `cert`, waiting to be added by its leader.
    pub async fn rejoin_as(&self, id: NodeId, cert: &[u8], ca: &[u8]) -> Result<(), StartError> {
        let old = self.member();
        if let Err(e) = old.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        self.leases.revoke();
        // Joining: no lease for a while, and maybe never (a witness). Disarm first.
        self.watchdog.disarm();
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

    /// Whether `shutdown` was called: background loops end.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
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
        let mut release_failed = false;
        if *self.watchdog.kind() != Watchdog::None && self.watchdog.holding() {
            tracing::warn!("stopping: releasing this node's guests and DRBD Primary roles first");
            self.leases.release();
            let deadline = Instant::now() + Duration::from_secs(60);
            while self.watchdog.holding() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            release_failed = self.watchdog.holding();
        }
        self.closing.store(true, Ordering::Relaxed);
        if release_failed {
            tracing::error!("stopping: could not release this node's guests within 60 s: the watchdog stays armed");
        } else {
            self.watchdog.disarm();
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

/// Why the leader's `Propose` did not commit a command (sent back to the proposing node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// The node asked is not the leader: nothing was appended.
    #[error("not the leader")]
    NotLeader,
    /// Committing failed on the leader, maybe after the append.
    #[error("{0}")]
    Failed(String),
}

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

/// What one failed attempt through the leader (`Node::via_leader`) means.
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
fn leader_write_failure(addr: &str, e: ProposeError) -> Attempt {
    match e {
        ProposeError::NotLeader => Attempt::Retry(not_committed(format!("{addr} is not the leader any more"))),
        ProposeError::Failed(e) => Attempt::Fail(outcome_unknown(format!("committing on the leader {addr}: {e}"))),
    }
}

/// The `Propose` call to the leader failed: only a connection never made proves the command
/// was not sent; a timeout or a connection lost on the way leaves the outcome unknown.
fn propose_failure(addr: &str, s: &Status) -> Attempt {
    if s.code() == Code::InvalidArgument && s.message().starts_with("bad address") {
        return Attempt::Fail(not_committed(format!("the leader's address: {}", s.message())));
    }
    match crate::tls::never_connected(s) {
        Some(why) => Attempt::Retry(not_committed(format!("the leader {addr} is unreachable: {why}"))),
        None => Attempt::Fail(outcome_unknown(format!("the leader {addr}: {}", s.message()))),
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
    let batch = Batcher::start(raft.clone());
    Ok(Arc::new(Member { id, raft, sm, batch }))
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
pub async fn keep_revocations(weak: Weak<Node>) {
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
pub async fn register_founder(weak: Weak<Node>) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        unknown(leader_write_failure(
            "10.0.0.1:1215",
            ProposeError::Failed("raft stopped".into()),
        ));
        not_committed_retried(leader_write_failure("10.0.0.1:1215", ProposeError::NotLeader));
        // The call to the leader.
        for s in [
            Status::deadline_exceeded("10.0.0.1:1215 did not answer within 10s"),
            Status::unavailable("transport error"),
            Status::unknown("h2 protocol error: connection reset"),
            Status::cancelled("operation was canceled"),
        ] {
            unknown(propose_failure("10.0.0.1:1215", &s));
        }
        // A connection never made is retried: `raft::network`'s test of `tls::never_connected`
        // makes one (a typed cause, not a message).
        unknown(propose_failure(
            "10.0.0.1:1215",
            &Status::unavailable("error trying to connect: tcp connect error: Connection refused"),
        ));
        let (retry, m) = message(propose_failure(
            "nowhere",
            &Status::invalid_argument("bad address nowhere: invalid uri"),
        ));
        assert!(!retry && m.starts_with(NOT_COMMITTED), "{m}");
    }
}
