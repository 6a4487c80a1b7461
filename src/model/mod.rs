//! The replicated cluster state and the commands that change it.
//!
//! This module owns `ClusterState`, the `Command` enum carried by the Raft log and the pure
//! `apply` function. It never does I/O, never reads a clock and never draws random numbers:
//! applying the same log gives the same state on every node (an architecture invariant in ARCHITECTURE.md).

pub mod catalog;
pub mod events;
pub mod instances;
pub mod objects;
#[cfg(test)]
pub(crate) mod objects_tests;
pub mod path;
pub mod placement;
#[cfg(test)]
pub(crate) mod placement_tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use catalog::{ConfigError, ConfigKey};
pub use instances::{Avail, InstanceReport, Migration, Phase, ResourceReport, ServiceState};
pub use objects::{KeyMode, Object, ObjectError, ObjectKey};
pub use path::{ObjectKind, ObjectPath, PathError};

use crate::config::echo::echo;
use crate::config::ini::Ini;
use crate::config::kind::{check_addr, check_line, Kind};

/// Raft node id. Allocated by the cluster (`next_node_id`), never reused.
pub type NodeId = u64;

/// A node as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// `HOST:PORT` of the node's Raft and API listener.
    pub addr: String,
    /// A witness votes but never hosts services.
    pub witness: bool,
    /// The node runs with a watchdog, armed whenever it holds anything: the leader may move
    /// its services once its lease ran out.
    #[serde(default)]
    pub watchdog: bool,
    /// Its ssh public key (`cluster.ssh_trust`): every node trusts the data nodes' keys; a
    /// witness never reports one.
    #[serde(default)]
    pub ssh_key: Option<String>,
    /// The fingerprint of its certificate, revoked when it is removed.
    #[serde(default)]
    pub cert: Option<String>,
}

/// What the cluster's TLS trust rests on. The keys stay on the authority node; the log holds
/// only public halves and fingerprints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trust {
    /// The cluster CA's certificate (DER).
    #[serde(with = "serde_bytes")]
    pub ca: Vec<u8>,
    /// The node holding the CA key and the token signing key: admissions and token minting
    /// are done there.
    pub authority: NodeId,
    /// The public half of the token signing key (Ed25519).
    #[serde(with = "serde_bytes")]
    pub signing_key: Vec<u8>,
    /// Counts signing keys: a token names the one it was signed with, and only the current
    /// one is accepted (a rotation invalidates every token minted before it).
    pub generation: u64,
    /// Fingerprints of revoked certificates (removed nodes').
    pub revoked: BTreeSet<String>,
    /// Nonces of the join tokens already used: a join token works once.
    pub used_join_tokens: BTreeSet<String>,
}

/// Cluster configuration: `section -> keyword -> value`, as validated against the catalog.
pub type ClusterConfig = BTreeMap<String, BTreeMap<String, String>>;

/// Everything the Raft log decides. Snapshots serialize it whole, from a copy taken under the
/// state machine's lock: each object, service and report is shared (`Arc`) between the copy and
/// the live state, so the copy costs a pointer per entry, and an entry changed after it is
/// copied then (`Arc::make_mut`), that entry alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The next node id to hand out. Only grows, so a wiped node never reuses an id.
    pub next_node_id: NodeId,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub config: ClusterConfig,
    /// Objects by path (`NAMESPACE/KIND/NAME`).
    #[serde(default, with = "path::keyed")]
    pub objects: BTreeMap<ObjectPath, Arc<Object>>,
    /// Each node's volume groups and their sizes in bytes, as the node last reported them.
    #[serde(default)]
    pub vgs: BTreeMap<NodeId, BTreeMap<String, u64>>,
    /// Each node's available memory in bytes (Linux's MemAvailable, or what `omd --report-mem`
    /// declares), as the node last reported it: `placement=score` weighs it.
    #[serde(default)]
    pub memory: BTreeMap<NodeId, u64>,
    /// What the cluster wants of each service: provisioned, placement, started.
    #[serde(default, with = "path::keyed")]
    pub services: BTreeMap<ObjectPath, Arc<ServiceState>>,
    /// Nodes the orchestrator places nothing on.
    #[serde(default)]
    pub frozen_nodes: std::collections::BTreeSet<NodeId>,
    /// What each node last reported of each service instance, by path then node.
    #[serde(default, with = "path::keyed")]
    pub reports: BTreeMap<ObjectPath, Arc<BTreeMap<NodeId, InstanceReport>>>,
    /// The sequence number of each stored report (same keys as `reports`): a report with a
    /// lower or equal one arrived late and is refused.
    #[serde(default, with = "path::keyed")]
    pub report_seqs: BTreeMap<ObjectPath, Arc<BTreeMap<NodeId, u64>>>,
    /// DRBD fencing, by DRBD resource name: the nodes whose disk of it a peer's `fence-peer`
    /// handler had the cluster mark outdated. Their data is old until they resync and the
    /// peer's `unfence-peer` handler clears the mark; nothing fails over to them meanwhile.
    #[serde(default)]
    pub outdated: BTreeMap<String, BTreeSet<NodeId>>,
    /// TLS trust: the CA, the authority node, the token signing key, revocations.
    #[serde(default)]
    pub trust: Option<Trust>,
    /// Derived from `objects`; see `objects::AllocIndex`.
    #[serde(skip)]
    index: objects::IndexCache,
}

/// The payload of a Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// First entry of a new cluster: registers its founding node.
    Bootstrap {
        node_id: NodeId,
        name: String,
        addr: String,
    },
    /// Registers a joining node and allocates its id, using up its join token.
    AddNode {
        name: String,
        addr: String,
        witness: bool,
        /// The join token's nonce: refused if it was used before.
        #[serde(default)]
        token: Option<String>,
    },
    /// The certificate the authority issued to a node.
    NodeCert { node_id: NodeId, fingerprint: String },
    /// The founding node's CA and token signing key (public halves).
    EstablishTrust {
        #[serde(with = "serde_bytes")]
        ca: Vec<u8>,
        authority: NodeId,
        #[serde(with = "serde_bytes")]
        signing_key: Vec<u8>,
    },
    /// A new token signing key: every token signed with an older one stops working.
    RotateSigningKey {
        #[serde(with = "serde_bytes")]
        signing_key: Vec<u8>,
    },
    /// Revokes a certificate (a client's, by its fingerprint).
    RevokeCert { fingerprint: String },
    /// Forgets a node (its Raft membership is removed separately, before).
    RemoveNode { node_id: NodeId },
    /// Applies every `set` and `unset` of one `cluster config update` at once, or none.
    UpdateConfig {
        set: Vec<(ConfigKey, String)>,
        unset: Vec<ConfigKey>,
    },
    /// Creates an object (its `id` already set by the API), and the volumes it asks for.
    CreateObject { path: ObjectPath, config: Ini },
    /// Applies every `set` and `unset` of one object `config update` at once, or none.
    UpdateObject {
        path: ObjectPath,
        set: Vec<(ObjectKey, String)>,
        unset: Vec<ObjectKey>,
    },
    /// Deletes an object; a service's volumes go with it, freeing their allocations.
    DeleteObject { path: ObjectPath },
    /// Adds or changes a key of a config map or secret.
    PutKey {
        path: ObjectPath,
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        mode: KeyMode,
    },
    /// Removes a key of a config map or secret.
    RemoveKey { path: ObjectPath, key: String },
    /// A node's volume groups and their sizes, replacing its previous report.
    ReportVolumeGroups {
        node_id: NodeId,
        vgs: BTreeMap<String, u64>,
    },
    /// A node's available memory in bytes, replacing its previous report (at most
    /// `MAX_MEMORY_REPORT`).
    ReportMemory { node_id: NodeId, available: u64 },
    /// Provision a service's volumes on all its nodes, placed (and started) on the node its
    /// placement policy prefers (`placement::first_choice`).
    Provision { path: ObjectPath },
    /// Stop a service and remove its volumes from every node.
    Unprovision { path: ObjectPath },
    /// Declare a node's instance provisioned, without doing anything (`--state-only`).
    MarkProvisioned { path: ObjectPath, node_id: NodeId },
    /// Start or stop a provisioned service where it is placed.
    SetStarted { path: ObjectPath, started: bool },
    /// A node's observed instance status, sent when it changes.
    ReportInstance {
        path: ObjectPath,
        node_id: NodeId,
        report: InstanceReport,
        /// Orders one node's reports of one service: strictly increasing across the node's
        /// daemon restarts. A report can commit after a newer one (its write timed out and
        /// reached the log later); `apply` refuses it then. 0 (entries written before there
        /// was one) is never refused.
        #[serde(default)]
        seq: u64,
    },
    /// The libvirt XML of a kvm container's domain, captured from the node that has it.
    CaptureDomain {
        path: ObjectPath,
        name: String,
        xml: String,
    },
    /// Move a provisioned service to another of its nodes (started there).
    Switch { path: ObjectPath, to: NodeId },
    /// The leader saw the lease of the node holding a service run out: the service moves to
    /// `to`, which may promote without seeing `from` (that node fenced itself).
    Failover { path: ObjectPath, from: NodeId, to: NodeId },
    /// Begin a live switch of a started service to `to` (phase `Prepare`).
    LiveSwitch { path: ObjectPath, to: NodeId },
    /// A live switch moves from phase `from` to `to`, committed by the node that did the work
    /// (or the leader, when a participant lost its lease: then `fenced`).
    MigrationPhase {
        path: ObjectPath,
        id: u64,
        from: Phase,
        to: Phase,
        error: Option<String>,
        fenced: Option<NodeId>,
    },
    /// The leader saw the lease of `node_id`, a node of the service that does not hold it, run
    /// out: the holder may promote without seeing it (it fenced itself).
    Fence { path: ObjectPath, node_id: NodeId },
    /// A node's ssh public key, for `cluster.ssh_trust`.
    ReportSshKey { node_id: NodeId, key: String },
    /// A node armed (or disarmed) its watchdog.
    ReportWatchdog { node_id: NodeId, armed: bool },
    /// Freeze (or thaw) a service: the orchestrator takes no automatic action on it.
    FreezeService { path: ObjectPath, frozen: bool },
    /// Freeze (or thaw) a node: the orchestrator places nothing on it.
    FreezeNode { node_id: NodeId, frozen: bool },
    /// A DRBD `fence-peer` handler: the disk of `resource` (a volume's DRBD resource name) on
    /// `node_id` is outdated, its peer goes on without it. Never the node holding the service.
    OutdatePeer { resource: String, node_id: NodeId },
    /// A DRBD `unfence-peer` handler: `node_id` resynced `resource` and is up to date again.
    UnfencePeer { resource: String, node_id: NodeId },
    /// Commands the leader gathered from concurrent writers into one log entry (group commit,
    /// `daemon::batch`): applied in order, each exactly as it would be in an entry of its own,
    /// answered by `Response::Batch` in the same order. Only the leader forms one; a batch is
    /// never proposed, nor nested.
    Batch(Vec<Command>),
}

impl Command {
    /// The object a command is about, if any.
    pub fn path(&self) -> Option<&ObjectPath> {
        match self {
            Command::CreateObject { path, .. }
            | Command::UpdateObject { path, .. }
            | Command::DeleteObject { path }
            | Command::PutKey { path, .. }
            | Command::RemoveKey { path, .. }
            | Command::Provision { path }
            | Command::Unprovision { path }
            | Command::MarkProvisioned { path, .. }
            | Command::SetStarted { path, .. }
            | Command::ReportInstance { path, .. }
            | Command::CaptureDomain { path, .. }
            | Command::Switch { path, .. }
            | Command::Failover { path, .. }
            | Command::LiveSwitch { path, .. }
            | Command::MigrationPhase { path, .. }
            | Command::Fence { path, .. }
            | Command::FreezeService { path, .. } => Some(path),
            Command::Bootstrap { .. }
            | Command::AddNode { .. }
            | Command::NodeCert { .. }
            | Command::EstablishTrust { .. }
            | Command::RotateSigningKey { .. }
            | Command::RevokeCert { .. }
            | Command::RemoveNode { .. }
            | Command::UpdateConfig { .. }
            | Command::ReportVolumeGroups { .. }
            | Command::ReportMemory { .. }
            | Command::ReportSshKey { .. }
            | Command::ReportWatchdog { .. }
            | Command::FreezeNode { .. }
            | Command::OutdatePeer { .. }
            | Command::UnfencePeer { .. }
            | Command::Batch(_) => None,
        }
    }

    /// The node a report is about, for commands only that node may send (its own
    /// observations): a node's certificate lets it report about itself and nobody else.
    pub fn reporting_node(&self) -> Option<NodeId> {
        match self {
            Command::ReportVolumeGroups { node_id, .. }
            | Command::ReportMemory { node_id, .. }
            | Command::ReportInstance { node_id, .. }
            | Command::ReportSshKey { node_id, .. }
            | Command::ReportWatchdog { node_id, .. } => Some(*node_id),
            _ => None,
        }
    }
}

/// The most volume groups one node's report may list.
pub const MAX_VG_REPORT_GROUPS: usize = 1024;

/// The largest volume group a node may report, in bytes (1 EiB, the largest size a volume may
/// have): a larger report is a bug or a lie, refused. Sums over reports still saturate.
pub const MAX_VG_BYTES: u64 = 1 << 60;

impl Command {
    /// Whether applying this command may give some node's applier work at once (a service's
    /// lifecycle, placement or switch phase, a freeze, a DRBD fencing mark) rather than only
    /// record what a node reported or change configuration: its applier then runs without
    /// waiting out its pause between passes.
    pub fn moves_a_service(&self) -> bool {
        match self {
            Command::Provision { .. }
            | Command::Unprovision { .. }
            | Command::SetStarted { .. }
            | Command::Switch { .. }
            | Command::Failover { .. }
            | Command::LiveSwitch { .. }
            | Command::MigrationPhase { .. }
            | Command::Fence { .. }
            | Command::FreezeService { .. }
            | Command::FreezeNode { .. }
            | Command::OutdatePeer { .. }
            | Command::UnfencePeer { .. } => true,
            Command::Batch(cmds) => cmds.iter().any(Command::moves_a_service),
            _ => false,
        }
    }

    /// The rules on what a new command carries, whatever the state: its object's path is one
    /// `ObjectPath::parse` gives (a command decoded from a member's proposal carries it as
    /// parts; no snapshot could hold another, see `ObjectPath::check`); node addresses are
    /// `HOST:PORT`; configuration values are one line without control characters, and the
    /// migration URIs use the documented transports (`catalog::check_input`); an object's
    /// configuration is bounded (`Ini::check_bounds`), uses no retired keyword and reads back
    /// as written (`Ini::check_form`: a member's proposal carries it decoded); a volume
    /// group report is bounded. Checked before a command is proposed (`ClusterState::check`,
    /// `Node::write`, the leader's `Propose`), never by `apply`: an older log may hold what
    /// they refuse, and must replay to the same state.
    pub fn check_input(&self) -> Result<(), Rejection> {
        if let Some(path) = self.path() {
            path.check()?;
        }
        match self {
            Command::Bootstrap { addr, .. } | Command::AddNode { addr, .. } => validate_node_addr(addr),
            Command::UpdateConfig { set, .. } => Ok(catalog::check_input(set)?),
            Command::CreateObject { path, config } => {
                ClusterState::check_size(path, config)?;
                let entries = config
                    .sections()
                    .iter()
                    .flat_map(|s| s.entries.iter().map(move |(k, v)| (s, k, v)));
                ClusterState::check_lines(
                    path,
                    entries
                        .clone()
                        .map(|(s, k, v)| (s.name.as_str(), k.as_str(), v.as_str())),
                )?;
                let keys: Vec<ObjectKey> = entries
                    .map(|(s, k, _)| ObjectKey {
                        section: s.name.to_string(),
                        keyword: k.to_string(),
                    })
                    .collect();
                ClusterState::check_retired(path, &keys)?;
                Ok(ClusterState::check_form(path, config)?)
            }
            Command::UpdateObject { path, set, .. } => {
                ClusterState::check_lines(
                    path,
                    set.iter()
                        .map(|(k, v)| (k.section.as_str(), k.keyword.as_str(), v.as_str())),
                )?;
                Ok(ClusterState::check_retired(path, set.iter().map(|(k, _)| k))?)
            }
            Command::ReportVolumeGroups { node_id, vgs } => {
                let bad = |why: String| Err(Rejection::BadVolumeGroups(*node_id, why));
                if vgs.len() > MAX_VG_REPORT_GROUPS {
                    return bad(format!(
                        "{} volume groups, more than the {MAX_VG_REPORT_GROUPS} a report may list",
                        vgs.len()
                    ));
                }
                for (name, size) in vgs {
                    if let Err(why) = Kind::Ident.check(name) {
                        return bad(format!("volume group name {:?}: {why}", echo(name)));
                    }
                    if *size > MAX_VG_BYTES {
                        return bad(format!(
                            "{} is {size} bytes, more than a volume group can have (at most {MAX_VG_BYTES})",
                            echo(name)
                        ));
                    }
                }
                Ok(())
            }
            Command::ReportInstance { node_id, report, .. } => report
                .check_bounds()
                .map_err(|why| Rejection::BadInstanceReport(*node_id, why)),
            Command::Batch(_) => Err(Rejection::Batch),
            Command::CaptureDomain { name, .. } => {
                if name.len() > MAX_DOMAIN_NAME_BYTES || check_line(name).is_err() {
                    return Err(Rejection::BadDomain(name.clone()));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// The longest libvirt domain name a node may capture a definition for.
pub const MAX_DOMAIN_NAME_BYTES: usize = 255;

/// The largest encoded command a member may propose to the leader: the largest object
/// configuration or key value (1 MiB each) with room to spare. Checked on the encoded bytes,
/// before decoding.
pub const MAX_COMMAND_BYTES: usize = 4 << 20;

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Bootstrap { node_id, name, .. } => {
                write!(f, "bootstrap node {name} id {node_id}")
            }
            Command::AddNode { name, witness, .. } => {
                write!(f, "add {} {name}", if *witness { "witness" } else { "node" })
            }
            Command::RemoveNode { node_id } => write!(f, "remove node id {node_id}"),
            Command::NodeCert { node_id, fingerprint } => {
                write!(f, "node id {node_id} has certificate {fingerprint}")
            }
            Command::EstablishTrust { authority, .. } => write!(f, "cluster CA held by node id {authority}"),
            Command::RotateSigningKey { .. } => write!(f, "rotate the token signing key"),
            Command::RevokeCert { fingerprint } => write!(f, "revoke certificate {fingerprint}"),
            Command::UpdateConfig { set, unset } => {
                write!(f, "config update: {} set, {} unset", set.len(), unset.len())
            }
            Command::CreateObject { path, .. } => write!(f, "create {path}"),
            Command::UpdateObject { path, set, unset } => {
                write!(f, "{path} config update: {} set, {} unset", set.len(), unset.len())
            }
            Command::DeleteObject { path } => write!(f, "delete {path}"),
            // Never the value: secrets stay out of logs.
            Command::PutKey { path, key, mode, .. } => write!(f, "{path} key {mode:?} {key}"),
            Command::RemoveKey { path, key } => write!(f, "{path} key remove {key}"),
            Command::ReportVolumeGroups { node_id, vgs } => {
                write!(f, "node {node_id} reports {} volume groups", vgs.len())
            }
            Command::ReportMemory { node_id, available } => {
                write!(f, "node {node_id} reports {available} bytes of memory available")
            }
            Command::Provision { path } => write!(f, "provision {path}"),
            Command::Unprovision { path } => write!(f, "unprovision {path}"),
            Command::MarkProvisioned { path, node_id } => {
                write!(f, "{path} provisioned on node {node_id} (state only)")
            }
            Command::SetStarted { path, started } => write!(f, "{} {path}", if *started { "start" } else { "stop" }),
            Command::ReportInstance {
                path, node_id, report, ..
            } => {
                write!(f, "node {node_id} reports {path} {}", report.avail)
            }
            Command::CaptureDomain { path, name, .. } => write!(f, "{path}: capture domain {name}"),
            Command::Switch { path, to } => write!(f, "switch {path} to node {to}"),
            Command::LiveSwitch { path, to } => write!(f, "live switch {path} to node {to}"),
            Command::Fence { path, node_id } => write!(f, "{path}: node {node_id} fenced"),
            Command::MigrationPhase { path, id, from, to, .. } => {
                write!(f, "switch {id} of {path}: {from} -> {to}")
            }
            Command::ReportWatchdog { node_id, armed } => write!(f, "node {node_id} watchdog armed: {armed}"),
            Command::ReportSshKey { node_id, .. } => write!(f, "node {node_id} reports its ssh key"),
            Command::Failover { path, from, to } => write!(f, "failover {path} from node {from} to node {to}"),
            Command::FreezeService { path, frozen } => write!(f, "{} {path}", if *frozen { "freeze" } else { "thaw" }),
            Command::FreezeNode { node_id, frozen } => {
                write!(f, "{} node {node_id}", if *frozen { "freeze" } else { "thaw" })
            }
            Command::OutdatePeer { resource, node_id } => write!(f, "DRBD {resource}: node {node_id} outdated"),
            Command::UnfencePeer { resource, node_id } => {
                write!(f, "DRBD {resource}: node {node_id} up to date again")
            }
            Command::Batch(cmds) => write!(f, "a batch of {} commands", cmds.len()),
        }
    }
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The command was applied (or was a membership or blank entry).
    Done,
    /// The command allocated this node id.
    NodeAdded(NodeId),
    /// The command was refused by the state machine and changed nothing.
    Refused(Rejection),
    /// What each command of a `Command::Batch` produced, in order.
    Batch(Vec<Response>),
}

/// Why a command cannot be applied to the current state. Carried whole to the caller
/// (`Response::Refused`), which maps it to an error code and its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Rejection {
    #[error("a node named {:?} is already in the cluster; remove it first", echo(.0))]
    DuplicateNodeName(String),
    #[error(
        "this join token was used already: a join token works once (mint another with `omctl daemon auth --role join`)"
    )]
    TokenUsed,
    #[error("the cluster's trust (CA, signing key) is not established yet")]
    NoTrust,
    #[error("the cluster's trust is already established")]
    TrustEstablished,
    #[error("address {addr} is already used by node {1:?}", addr = echo(.0))]
    DuplicateAddr(String, String),
    #[error("node name {name:?} is invalid: {1}", name = echo(.0))]
    BadNodeName(String, String),
    #[error("node address {addr:?} is invalid: {1}", addr = echo(.0))]
    BadNodeAddr(String, String),
    #[error("volume group report of node id {0}: {1}")]
    BadVolumeGroups(NodeId, String),
    #[error("no node with id {0}")]
    UnknownNode(NodeId),
    #[error("every node id was used once already: ids are never reused")]
    NodeIdsExhausted,
    #[error("the cluster is not bootstrapped yet: retry in a moment")]
    NotBootstrapped,
    #[error("the cluster is already bootstrapped")]
    AlreadyBootstrapped,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("{0} is not a service")]
    NotAService(String),
    #[error("{0} has no data node to run on (check its nodes keyword)")]
    NoNodes(String),
    #[error("{0} is not provisioned: run provision first")]
    NotProvisioned(String),
    #[error("{0} is no longer placed on node id {1}")]
    Moved(String, NodeId),
    #[error("{0} already runs on node id {1}")]
    AlreadyThere(String, NodeId),
    #[error("the domain XML of {} is too large or does not name the domain, or the name is not one line of at most {MAX_DOMAIN_NAME_BYTES} bytes", echo(.0))]
    BadDomain(String),
    #[error("instance report of node id {0}: {1}")]
    BadInstanceReport(NodeId, String),
    #[error("a batch of commands is formed by the leader only: it is never proposed, nor nested in another")]
    Batch,
    #[error("node id {0} is not one of the nodes of {1}")]
    NotANodeOf(NodeId, String),
    #[error("ssh key of node id {0}: {1}")]
    BadSshKey(NodeId, String),
    #[error("{0}: a switch is in progress (phase {1}); wait for it or abort it (switch --abort)")]
    Migrating(String, Phase),
    #[error("{0}: {1}'s DRBD for {rid} is {seen} as the holder last saw it: a live switch needs it Connected/UpToDate", rid = echo(.2), seen = echo(.3))]
    TargetNotReady(String, String, String, String),
    #[error("{0} is not started anywhere: a live switch moves a running guest (use switch)")]
    NotRunning(String),
    #[error("{0}: switch {1} is not in phase {2} (or {2} -> {3} is not a step): stale or out of order")]
    StalePhase(String, u64, Phase, Phase),
    #[error("{0}: report {2} of node id {1} is older than the one the cluster has ({3}): it arrived late")]
    StaleReport(String, NodeId, u64, u64),
    #[error("{0}: the disk of node {1} is outdated (DRBD {2}): it must resync before it holds the service")]
    Outdated(String, String, String),
    #[error("memory report of node id {0}: {1} bytes is more than a node can have (at most {2})")]
    BadMemoryReport(NodeId, u64, u64),
    #[error("{} is not the DRBD resource of any volume", echo(.0))]
    UnknownResource(String),
    #[error("DRBD resource {0}: node {1} is not one of its nodes")]
    NotANodeOfResource(String, String),
    #[error("DRBD resource {resource}: node {node} holds {service}; the holder is never outdated by a peer (the peer outdates itself)")]
    HolderNotOutdated {
        resource: String,
        node: String,
        service: String,
    },
}

impl ClusterState {
    /// A node's name, or `node N` for an id the state does not know (any more).
    pub fn node_name(&self, id: NodeId) -> String {
        self.nodes
            .get(&id)
            .map_or_else(|| format!("node {id}"), |n| n.name.clone())
    }

    /// Checks `cmd` as new input, without changing anything: what runs before a command is
    /// proposed. The command's own values (`Command::check_input`), then what `apply` would
    /// refuse (`check_state`); an object update may not grow its configuration past the
    /// bounds of a new one, nor leave it unable to read back as written (a value with spaces
    /// around it).
    pub fn check(&self, cmd: &Command) -> Result<(), Rejection> {
        cmd.check_input()?;
        match cmd {
            Command::UpdateObject { path, set, unset } => {
                let (config, _) = self.plan_update(path, set, unset)?;
                ClusterState::check_updated(path, &config)
            }
            _ => self.check_state(cmd),
        }
    }

    /// The configuration an object update leaves: within a new one's bounds, and reading back
    /// as written.
    fn check_updated(path: &ObjectPath, config: &Ini) -> Result<(), Rejection> {
        ClusterState::check_size(path, config)?;
        Ok(ClusterState::check_form(path, config)?)
    }

    /// What the leader checks of a member's proposal before Raft sees it: the command's own
    /// values (`Command::check_input`) and, for an object update, that the configuration it
    /// leaves stays within a new one's bounds and reads back as written (as `check` does for
    /// the API). Nothing else of the state: a new leader may not have applied all it committed
    /// yet, and `apply` refuses what no longer fits.
    pub fn check_proposal(&self, cmd: &Command) -> Result<(), Rejection> {
        cmd.check_input()?;
        if let Command::UpdateObject { path, set, unset } = cmd {
            if let Ok((config, _)) = self.plan_update(path, set, unset) {
                ClusterState::check_updated(path, &config)?;
            }
        }
        Ok(())
    }

    /// Checks `cmd` against the current state without changing anything: what `apply` holds
    /// every command it does not plan to (the planned ones, config and object changes, it
    /// checks while planning, with the same `plan_*`). Rules only new input meets belong in
    /// `Command::check_input` or `check`, never here.
    fn check_state(&self, cmd: &Command) -> Result<(), Rejection> {
        match cmd {
            Command::Bootstrap { name, .. } => {
                if !self.nodes.is_empty() {
                    return Err(Rejection::AlreadyBootstrapped);
                }
                validate_node_name(name)
            }
            Command::AddNode { name, addr, token, .. } => {
                if self.nodes.is_empty() {
                    return Err(Rejection::NotBootstrapped);
                }
                // Ids are never reused: the last one stays unallocated.
                if self.next_node_id == NodeId::MAX {
                    return Err(Rejection::NodeIdsExhausted);
                }
                if let Some(nonce) = token {
                    if self.trust.as_ref().is_some_and(|t| t.used_join_tokens.contains(nonce)) {
                        return Err(Rejection::TokenUsed);
                    }
                }
                validate_node_name(name)?;
                for n in self.nodes.values() {
                    if &n.name == name {
                        return Err(Rejection::DuplicateNodeName(name.clone()));
                    }
                    if &n.addr == addr {
                        return Err(Rejection::DuplicateAddr(addr.clone(), n.name.clone()));
                    }
                }
                Ok(())
            }
            Command::RemoveNode { node_id } | Command::NodeCert { node_id, .. } => {
                if self.nodes.contains_key(node_id) {
                    Ok(())
                } else {
                    Err(Rejection::UnknownNode(*node_id))
                }
            }
            Command::EstablishTrust { .. } => match self.trust {
                Some(_) => Err(Rejection::TrustEstablished),
                None => Ok(()),
            },
            Command::RotateSigningKey { .. } | Command::RevokeCert { .. } => match self.trust {
                Some(_) => Ok(()),
                None => Err(Rejection::NoTrust),
            },
            Command::UpdateConfig { set, unset } => {
                let plan = catalog::plan(&self.config, set, unset)?;
                Ok(self.check_pools(&plan)?)
            }
            Command::CreateObject { path, config } => {
                self.plan_create(path, config)?;
                Ok(())
            }
            Command::UpdateObject { path, set, unset } => {
                self.plan_update(path, set, unset)?;
                Ok(())
            }
            Command::DeleteObject { path } => {
                self.plan_delete(path)?;
                Ok(())
            }
            Command::PutKey { path, key, value, mode } => Ok(self.check_put_key(path, key, value, *mode)?),
            Command::RemoveKey { path, key } => Ok(self.check_remove_key(path, key)?),
            Command::ReportVolumeGroups { node_id, .. } => {
                if self.nodes.contains_key(node_id) {
                    Ok(())
                } else {
                    Err(Rejection::UnknownNode(*node_id))
                }
            }
            Command::ReportMemory { node_id, available } => {
                if !self.nodes.contains_key(node_id) {
                    return Err(Rejection::UnknownNode(*node_id));
                }
                if *available > MAX_MEMORY_REPORT {
                    return Err(Rejection::BadMemoryReport(*node_id, *available, MAX_MEMORY_REPORT));
                }
                Ok(())
            }
            Command::Provision { path } => self.check_provision(path),
            Command::Unprovision { path } | Command::SetStarted { path, .. } => {
                self.check_needs_provisioned(path)?;
                self.check_no_migration(path)
            }
            Command::MarkProvisioned { path, node_id } => self.check_node_of(path, *node_id),
            Command::Switch { path, to } => self.check_switch(path, *to),
            Command::LiveSwitch { path, to } => self.check_live_switch(path, *to),
            Command::Fence { path, node_id } => {
                self.check_node_of(path, *node_id)?;
                if self.services.get(path).and_then(|s| s.placement) == Some(*node_id) {
                    return Err(Rejection::AlreadyThere(path.to_string(), *node_id));
                }
                Ok(())
            }
            Command::MigrationPhase { path, id, from, to, .. } => self.check_migration_phase(path, *id, *from, *to),
            Command::ReportSshKey { node_id, key } => {
                let Some(node) = self.nodes.get(node_id) else {
                    return Err(Rejection::UnknownNode(*node_id));
                };
                if node.witness {
                    return Err(Rejection::BadSshKey(
                        *node_id,
                        "the node is a witness, and a witness's key is never trusted".into(),
                    ));
                }
                valid_ssh_key(key).map_err(|e| Rejection::BadSshKey(*node_id, e))
            }
            Command::ReportWatchdog { node_id, .. } => {
                if self.nodes.contains_key(node_id) {
                    Ok(())
                } else {
                    Err(Rejection::UnknownNode(*node_id))
                }
            }
            Command::Failover { path, from, to } => {
                self.check_needs_provisioned(path)?;
                self.check_node_of(path, *to)?;
                if self.services.get(path).and_then(|s| s.placement) == Some(*to) {
                    return Err(Rejection::AlreadyThere(path.to_string(), *to));
                }
                if self.services.get(path).and_then(|s| s.placement) != Some(*from) {
                    return Err(Rejection::Moved(path.to_string(), *from));
                }
                // Decided before a fence-peer outdated the target: its data is old.
                let outdated = self.outdated_on(path, *to);
                if !outdated.is_empty() {
                    let node = self.nodes.get(to).map_or_else(|| to.to_string(), |n| n.name.clone());
                    return Err(Rejection::Outdated(path.to_string(), node, outdated.join(", ")));
                }
                Ok(())
            }
            Command::FreezeService { path, .. } => self.service(path),
            Command::FreezeNode { node_id, .. } => {
                if self.nodes.contains_key(node_id) {
                    Ok(())
                } else {
                    Err(Rejection::UnknownNode(*node_id))
                }
            }
            Command::CaptureDomain { path, name, xml } => {
                self.service(path)?;
                if xml.len() > objects::MAX_KEY_BYTES || !xml.contains(&format!("<name>{name}</name>")) {
                    return Err(Rejection::BadDomain(name.clone()));
                }
                Ok(())
            }
            Command::OutdatePeer { resource, node_id } => self.check_outdate(resource, *node_id, true),
            Command::UnfencePeer { resource, node_id } => self.check_outdate(resource, *node_id, false),
            Command::ReportInstance { path, node_id, seq, .. } => {
                if !self.nodes.contains_key(node_id) {
                    return Err(Rejection::UnknownNode(*node_id));
                }
                if !self.objects.contains_key(path) {
                    return Err(Rejection::Object(ObjectError::NotFound(path.to_string())));
                }
                let stored = self
                    .report_seqs
                    .get(path)
                    .and_then(|r| r.get(node_id))
                    .copied()
                    .unwrap_or(0);
                if *seq != 0 && *seq <= stored {
                    return Err(Rejection::StaleReport(path.to_string(), *node_id, *seq, stored));
                }
                Ok(())
            }
            // `apply` takes a batch apart before checking: only a nested one gets here.
            Command::Batch(_) => Err(Rejection::Batch),
        }
    }

    /// `cluster.name`, or its default.
    pub fn cluster_name(&self) -> String {
        catalog::get(&self.config, "cluster.name")
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Applies `cmd`. A command that fails `check` changes nothing and reports why.
    pub fn apply(&mut self, cmd: &Command) -> Response {
        if let Command::Batch(cmds) = cmd {
            return Response::Batch(
                cmds.iter()
                    .map(|c| match c {
                        Command::Batch(_) => Response::Refused(Rejection::Batch),
                        c => self.apply(c),
                    })
                    .collect(),
            );
        }
        if matches!(cmd, Command::CreateObject { .. } | Command::UpdateObject { .. }) {
            self.ensure_index();
        }
        // Commands that plan their change check it while planning, in one pass.
        let planned = matches!(
            cmd,
            Command::UpdateConfig { .. }
                | Command::CreateObject { .. }
                | Command::UpdateObject { .. }
                | Command::DeleteObject { .. }
        );
        if !planned {
            if let Err(e) = self.check_state(cmd) {
                return Response::Refused(e);
            }
        }
        match cmd {
            Command::Bootstrap { node_id, name, addr } => {
                self.nodes.insert(
                    *node_id,
                    NodeInfo {
                        name: name.clone(),
                        addr: addr.clone(),
                        witness: false,
                        watchdog: false,
                        ssh_key: None,
                        cert: None,
                    },
                );
                self.next_node_id = self.next_node_id.max(node_id.saturating_add(1));
                Response::Done
            }
            Command::AddNode {
                name,
                addr,
                witness,
                token,
            } => {
                let id = self.next_node_id;
                self.next_node_id = id.saturating_add(1);
                self.nodes.insert(
                    id,
                    NodeInfo {
                        name: name.clone(),
                        addr: addr.clone(),
                        witness: *witness,
                        watchdog: false,
                        ssh_key: None,
                        cert: None,
                    },
                );
                if let (Some(nonce), Some(trust)) = (token, self.trust.as_mut()) {
                    trust.used_join_tokens.insert(nonce.clone());
                }
                Response::NodeAdded(id)
            }
            Command::NodeCert { node_id, fingerprint } => {
                if let Some(n) = self.nodes.get_mut(node_id) {
                    // A new certificate for the same node: the old one is revoked.
                    if let (Some(old), Some(trust)) = (n.cert.replace(fingerprint.clone()), self.trust.as_mut()) {
                        if &old != fingerprint {
                            trust.revoked.insert(old);
                        }
                    }
                }
                Response::Done
            }
            Command::EstablishTrust {
                ca,
                authority,
                signing_key,
            } => {
                self.trust = Some(Trust {
                    ca: ca.clone(),
                    authority: *authority,
                    signing_key: signing_key.clone(),
                    generation: 1,
                    ..Trust::default()
                });
                Response::Done
            }
            Command::RotateSigningKey { signing_key } => {
                if let Some(t) = self.trust.as_mut() {
                    t.signing_key = signing_key.clone();
                    t.generation = t.generation.saturating_add(1);
                }
                Response::Done
            }
            Command::RevokeCert { fingerprint } => {
                if let Some(t) = self.trust.as_mut() {
                    t.revoked.insert(fingerprint.clone());
                }
                Response::Done
            }
            Command::RemoveNode { node_id } => {
                if let (Some(fp), Some(trust)) = (
                    self.nodes.get(node_id).and_then(|n| n.cert.clone()),
                    self.trust.as_mut(),
                ) {
                    trust.revoked.insert(fp);
                }
                self.nodes.remove(node_id);
                self.vgs.remove(node_id);
                self.memory.remove(node_id);
                self.outdated.retain(|_, nodes| {
                    nodes.remove(node_id);
                    !nodes.is_empty()
                });
                Response::Done
            }
            Command::UpdateConfig { set, unset } => {
                let plan = match catalog::plan(&self.config, set, unset) {
                    Ok(plan) => plan,
                    Err(e) => return Response::Refused(e.into()),
                };
                if let Err(e) = self.check_pools(&plan) {
                    return Response::Refused(e.into());
                }
                catalog::apply_plan(&mut self.config, plan);
                Response::Done
            }
            Command::CreateObject { path, config } => match self.plan_create(path, config) {
                Ok(objects) => {
                    self.insert_objects(objects);
                    Response::Done
                }
                Err(e) => Response::Refused(e.into()),
            },
            Command::UpdateObject { path, set, unset } => match self.plan_update(path, set, unset) {
                Ok((config, volumes)) => {
                    if let Some(o) = self.object_mut(path) {
                        o.config = config;
                        o.config.shrink_to_fit();
                    }
                    self.insert_objects(volumes);
                    Response::Done
                }
                Err(e) => Response::Refused(e.into()),
            },
            Command::DeleteObject { path } => match self.plan_delete(path) {
                Ok(gone) => {
                    for p in gone {
                        if let Some(a) = self.objects.get(&p).and_then(|o| o.alloc.as_ref()) {
                            self.outdated.remove(&a.lv);
                        }
                        self.remove_object(&p);
                        self.services.remove(&p);
                        self.reports.remove(&p);
                        self.report_seqs.remove(&p);
                    }
                    Response::Done
                }
                Err(e) => Response::Refused(e.into()),
            },
            Command::PutKey { path, key, value, .. } => {
                if let Some(o) = self.object_mut(path) {
                    o.keys.insert(key.clone(), value.clone());
                }
                Response::Done
            }
            Command::RemoveKey { path, key } => {
                if let Some(o) = self.object_mut(path) {
                    o.keys.remove(key);
                }
                Response::Done
            }
            Command::ReportVolumeGroups { node_id, vgs } => {
                self.vgs.insert(*node_id, vgs.clone());
                Response::Done
            }
            Command::ReportMemory { node_id, available } => {
                self.memory.insert(*node_id, *available);
                Response::Done
            }
            Command::Provision { path } => {
                self.provision(path);
                Response::Done
            }
            Command::Unprovision { path } => {
                // Its disks go: a provision starts from fresh metadata.
                for resource in self.service_drbd_resources(path) {
                    self.outdated.remove(&resource);
                }
                self.unprovision(path);
                Response::Done
            }
            Command::MarkProvisioned { path, node_id } => {
                self.service_entry(path).state_only.insert(*node_id);
                Response::Done
            }
            Command::SetStarted { path, started } => {
                self.set_started(path, *started);
                Response::Done
            }
            Command::ReportInstance {
                path,
                node_id,
                report,
                seq,
            } => {
                Arc::make_mut(self.reports.entry(path.clone()).or_default()).insert(*node_id, report.clone());
                if *seq != 0 {
                    Arc::make_mut(self.report_seqs.entry(path.clone()).or_default()).insert(*node_id, *seq);
                }
                Response::Done
            }
            Command::Switch { path, to } => {
                self.begin_switch(path, *to, false);
                Response::Done
            }
            Command::ReportSshKey { node_id, key } => {
                if let Some(n) = self.nodes.get_mut(node_id) {
                    n.ssh_key = Some(key.clone());
                }
                Response::Done
            }
            Command::ReportWatchdog { node_id, armed } => {
                if let Some(n) = self.nodes.get_mut(node_id) {
                    n.watchdog = *armed;
                }
                Response::Done
            }
            Command::LiveSwitch { path, to } => {
                self.begin_switch(path, *to, true);
                Response::Done
            }
            Command::Fence { path, node_id } => {
                self.service_entry(path).fenced.insert(*node_id);
                Response::Done
            }
            Command::MigrationPhase {
                path,
                to,
                error,
                fenced,
                ..
            } => {
                self.migration_phase(path, *to, error.as_deref(), *fenced);
                Response::Done
            }
            Command::Failover { path, from, to } => {
                self.interrupt_migration(
                    path,
                    format!("interrupted: node id {from} lost its lease and the service failed over"),
                );
                self.switch(path, *to);
                self.service_entry(path).fenced.insert(*from);
                Response::Done
            }
            Command::FreezeService { path, frozen } => {
                self.service_entry(path).frozen = *frozen;
                Response::Done
            }
            Command::FreezeNode { node_id, frozen } => {
                if *frozen {
                    self.frozen_nodes.insert(*node_id);
                } else {
                    self.frozen_nodes.remove(node_id);
                }
                Response::Done
            }
            Command::CaptureDomain { path, name, xml } => {
                self.service_entry(path).domains.insert(name.clone(), xml.clone());
                Response::Done
            }
            Command::OutdatePeer { resource, node_id } => {
                self.outdated.entry(resource.clone()).or_default().insert(*node_id);
                Response::Done
            }
            Command::UnfencePeer { resource, node_id } => {
                if let Some(nodes) = self.outdated.get_mut(resource) {
                    nodes.remove(node_id);
                    if nodes.is_empty() {
                        self.outdated.remove(resource);
                    }
                }
                Response::Done
            }
            // Taken apart above; `check_state` refused a nested one.
            Command::Batch(_) => Response::Refused(Rejection::Batch),
        }
    }

    /// The id of the node called `name`.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().find(|(_, n)| n.name == name).map(|(id, _)| *id)
    }
}

/// The most memory a node may report, in bytes (4 PiB, what x86-64's 52-bit physical
/// addresses reach): a larger report is a bug or a lie, refused.
pub const MAX_MEMORY_REPORT: u64 = 1 << 52;

/// The longest public key line the cluster accepts, in bytes.
pub const SSH_KEY_MAX: usize = 1024;

/// The key type the cluster accepts: what the nodes make with ssh-keygen.
pub const SSH_KEY_TYPE: &str = "ssh-ed25519";

/// A public key line split into its fields, as `parse_ssh_key` checked them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SshKey<'a> {
    /// The key type: `ssh-ed25519`.
    pub kind: &'a str,
    /// The key itself, in base64.
    pub body: &'a str,
    /// The comment, when there is one: printable ASCII without spaces.
    pub comment: Option<&'a str>,
}

/// A public key as the cluster accepts it: exactly `ssh-ed25519 BASE64 [COMMENT]`, single
/// spaces between the fields, printable ASCII only (no control character can start another
/// `authorized_keys` line or option), at most `SSH_KEY_MAX` bytes, and BASE64 the encoding of
/// an ed25519 public key. The error says what is wrong.
pub fn parse_ssh_key(key: &str) -> Result<SshKey<'_>, String> {
    if key.len() > SSH_KEY_MAX {
        return Err(format!("the key is {} bytes long, more than {SSH_KEY_MAX}", key.len()));
    }
    if let Some((at, c)) = key.char_indices().find(|(_, c)| !(' '..='~').contains(c)) {
        let what = if c.is_ascii() {
            "a control character"
        } else {
            "a non-ASCII character"
        };
        return Err(format!(
            "the key contains {what} ({:?}) at byte {at}: only printable ASCII is allowed",
            c
        ));
    }
    let fields: Vec<&str> = key.split(' ').collect();
    if !(2..=3).contains(&fields.len()) || fields.iter().any(|f| f.is_empty()) {
        return Err("the key is not `TYPE BASE64 [COMMENT]` with single spaces between the fields".into());
    }
    let (kind, body, comment) = (fields[0], fields[1], fields.get(2).copied());
    if kind != SSH_KEY_TYPE {
        return Err(format!(
            "key type {:?} is not accepted: only {SSH_KEY_TYPE}",
            echo(kind)
        ));
    }
    let blob = decode_base64(body).map_err(|e| format!("the key body is not base64: {e}"))?;
    if !is_ed25519_blob(&blob) {
        return Err(format!("the key body is not an {SSH_KEY_TYPE} public key"));
    }
    Ok(SshKey { kind, body, comment })
}

/// `parse_ssh_key`, for its verdict only.
pub fn valid_ssh_key(key: &str) -> Result<(), String> {
    parse_ssh_key(key).map(|_| ())
}

/// Whether `blob` is an ed25519 public key in the ssh wire format: the length-prefixed type
/// name, then the length-prefixed 32 key bytes, and nothing more.
fn is_ed25519_blob(blob: &[u8]) -> bool {
    let name = SSH_KEY_TYPE.as_bytes();
    let mut want = Vec::with_capacity(4 + name.len() + 4);
    want.extend_from_slice(&(name.len() as u32).to_be_bytes());
    want.extend_from_slice(name);
    want.extend_from_slice(&32u32.to_be_bytes());
    blob.len() == want.len() + 32 && blob.starts_with(&want)
}

/// Strict standard base64: the standard alphabet, a length that is a multiple of 4, `=`
/// padding only at the end (at most two), and zero bits where the padding cuts a byte.
fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err(format!("its length {} is not a multiple of 4", bytes.len()));
    }
    let pad = bytes.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return Err(format!("it ends with {pad} '=', at most 2 are allowed"));
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = (i + 1) * 4 == bytes.len();
        let used = if last { 4 - pad } else { 4 };
        let mut n = 0u32;
        for (j, &c) in chunk.iter().enumerate() {
            let v = if j < used {
                value(c)
                    .ok_or_else(|| format!("{:?} at position {} is not a base64 character", c as char, i * 4 + j))?
            } else {
                0
            };
            n = n << 6 | v;
        }
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = used - 1;
        if decoded[keep..].iter().any(|&b| b != 0) {
            return Err("the bits before the '=' padding are not zero".into());
        }
        out.extend_from_slice(&decoded[..keep]);
    }
    Ok(out)
}

/// Node addresses: `HOST:PORT` (`config::kind::check_addr`), since they end up in DRBD
/// `address` lines, certificates and migration URIs (`{host}`).
pub fn validate_node_addr(addr: &str) -> Result<(), Rejection> {
    check_addr(addr).map_err(|why| Rejection::BadNodeAddr(addr.to_string(), why))
}

/// Node names: what a hostname label allows, since they end up in DRBD `on NAME` sections.
pub fn validate_node_name(name: &str) -> Result<(), Rejection> {
    let bad = |why: &str| Err(Rejection::BadNodeName(name.to_string(), why.to_string()));
    if name.is_empty() || name.len() > 63 {
        return bad("it must have 1 to 63 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return bad("only lowercase letters, digits and '-' are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("it must not start or end with '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::objects_tests::path_of;
    use super::*;
    use crate::config::ini::Ini;

    fn boot() -> ClusterState {
        let mut s = ClusterState::default();
        let r = s.apply(&Command::Bootstrap {
            node_id: 1,
            name: "n1".into(),
            addr: "a:1".into(),
        });
        assert_eq!(r, Response::Done);
        s
    }

    fn add(s: &mut ClusterState, name: &str, addr: &str) -> Response {
        s.apply(&Command::AddNode {
            name: name.into(),
            addr: addr.into(),
            witness: false,
            token: None,
        })
    }

    #[test]
    fn hosting_means_a_started_service_here_or_a_live_switch_from_or_to_here() {
        let mut state = ClusterState::default();
        let started = ServiceState {
            provisioned: true,
            started: true,
            placement: Some(1),
            ..ServiceState::default()
        };
        state.services.insert(path_of("demo/svc/a"), started.clone().into());
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
            state.services.insert(path_of("demo/svc/a"), idle.into());
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
        state.services.insert(path_of("demo/svc/a"), switching.into());
        assert!(state.hosts(1) && state.hosts(2));
        assert!(!state.hosts(3), "not a participant");
    }

    #[test]
    fn node_ids_are_never_reused() {
        let mut s = boot();
        assert_eq!(add(&mut s, "n2", "a:2"), Response::NodeAdded(2));
        assert_eq!(s.apply(&Command::RemoveNode { node_id: 2 }), Response::Done);
        assert_eq!(add(&mut s, "n2", "a:2"), Response::NodeAdded(3));
    }

    #[test]
    fn duplicate_name_or_address_is_refused_and_changes_nothing() {
        let mut s = boot();
        add(&mut s, "n2", "a:2");
        let before = s.clone();
        assert!(matches!(add(&mut s, "n2", "a:3"), Response::Refused(m) if m.to_string().contains("\"n2\"")));
        assert!(matches!(add(&mut s, "n3", "a:2"), Response::Refused(m) if m.to_string().contains("a:2")));
        assert_eq!(s, before);
    }

    #[test]
    fn bad_node_names_are_refused() {
        for n in ["", "N1", "n_1", "-n", "n-", &"x".repeat(64)] {
            assert!(validate_node_name(n).is_err(), "{n:?} accepted");
        }
        validate_node_name("node-1").unwrap();
    }

    #[test]
    fn node_ids_are_never_reused_even_at_the_end_of_the_range() {
        let mut s = ClusterState::default();
        s.apply(&Command::Bootstrap {
            node_id: 1,
            name: "n1".into(),
            addr: "a:1".into(),
        });
        s.next_node_id = NodeId::MAX - 1;
        assert_eq!(add(&mut s, "n2", "a:2"), Response::NodeAdded(NodeId::MAX - 1));
        let before = s.clone();
        assert_eq!(add(&mut s, "n3", "a:3"), Response::Refused(Rejection::NodeIdsExhausted));
        assert_eq!(s, before);
    }

    #[test]
    fn add_before_bootstrap_is_refused() {
        let mut s = ClusterState::default();
        assert!(matches!(add(&mut s, "n2", "a:2"), Response::Refused(m) if m.to_string().contains("not bootstrapped")));
    }

    #[test]
    fn second_bootstrap_is_refused() {
        let mut s = boot();
        let r = s.apply(&Command::Bootstrap {
            node_id: 9,
            name: "x".into(),
            addr: "b:1".into(),
        });
        assert_eq!(r, Response::Refused(Rejection::AlreadyBootstrapped));
    }

    /// n1, n2 and the witness w (id 3); cluster drbd4kvm; demo/svc/kvm1 with a DRBD volume on
    /// n1 and n2 (resource `kvm1.demo.vol.drbd4kvm`), demo/svc/local with an LVM-only one.
    const RES: &str = "kvm1.demo.vol.drbd4kvm";

    fn outdate(resource: &str, node_id: NodeId) -> Command {
        Command::OutdatePeer {
            resource: resource.into(),
            node_id,
        }
    }

    /// Node 1's first report of kvm1, up, with `resources`.
    fn up_report(resources: Vec<ResourceReport>) -> Command {
        Command::ReportInstance {
            path: kvm1(),
            node_id: 1,
            report: InstanceReport {
                avail: Avail::Up,
                warn: false,
                provisioned: true,
                resources,
            },
            seq: 1,
        }
    }

    fn kvm1() -> ObjectPath {
        ObjectPath::parse("demo/svc/kvm1").unwrap()
    }

    use super::objects_tests::refused;

    #[test]
    fn a_fenced_peer_is_marked_outdated_until_unfenced() {
        let mut s = objects_tests::drbd_cluster();
        assert_eq!(s.apply(&outdate(RES, 2)), Response::Done);
        assert_eq!(s.apply(&outdate(RES, 2)), Response::Done, "twice is harmless");
        assert_eq!(s.outdated[RES], BTreeSet::from([2]));
        assert_eq!(s.outdated_on(&kvm1(), 2), vec![RES.to_string()]);
        assert!(s.outdated_on(&kvm1(), 1).is_empty());
        let unfence = Command::UnfencePeer {
            resource: RES.into(),
            node_id: 2,
        };
        assert_eq!(s.apply(&unfence), Response::Done);
        assert!(s.outdated.is_empty(), "no empty entry left");
        assert_eq!(
            s.apply(&unfence),
            Response::Done,
            "unfencing a node not marked changes nothing"
        );
    }

    #[test]
    fn outdating_an_unknown_node_or_resource_or_a_witness_is_refused() {
        let mut s = objects_tests::drbd_cluster();
        assert!(refused(&mut s, outdate(RES, 9)).contains("no node with id 9"));
        let why = refused(&mut s, outdate("kvm9.demo.vol.drbd4kvm", 2));
        assert!(why.contains("kvm9.demo.vol.drbd4kvm is not the DRBD resource"), "{why}");
        // An LVM-only volume has no DRBD resource; a path-like name is no resource either.
        assert!(refused(&mut s, outdate("local.demo.vol.drbd4kvm", 2)).contains("local.demo.vol.drbd4kvm"));
        assert!(refused(&mut s, outdate("demo/vol/kvm1", 2)).contains("demo/vol/kvm1"));
        assert!(refused(&mut s, outdate(RES, 3)).contains("node w is not one of its nodes"));
        let why = refused(
            &mut s,
            Command::UnfencePeer {
                resource: "nope".into(),
                node_id: 2,
            },
        );
        assert!(why.contains("nope"), "{why}");
    }

    #[test]
    fn the_node_holding_the_service_is_never_outdated() {
        let mut s = objects_tests::drbd_cluster();
        assert_eq!(s.apply(&Command::Provision { path: kvm1() }), Response::Done);
        let why = refused(&mut s, outdate(RES, 1));
        assert!(why.contains("node n1 holds demo/svc/kvm1"), "{why}");
        assert_eq!(s.apply(&outdate(RES, 2)), Response::Done);
        // A live switch's dual-primary window: both sides may ask, the holder (the source
        // until Finalize) wins.
        let mut s = objects_tests::drbd_cluster();
        s.apply(&Command::Provision { path: kvm1() });
        assert_eq!(s.apply(&Command::LiveSwitch { path: kvm1(), to: 2 }), Response::Done);
        let id = s.services[&path_of("demo/svc/kvm1")].migration.as_ref().unwrap().id;
        let phase = Command::MigrationPhase {
            path: kvm1(),
            id,
            from: Phase::Prepare,
            to: Phase::DualPrimary,
            error: None,
            fenced: None,
        };
        assert_eq!(s.apply(&phase), Response::Done);
        refused(&mut s, outdate(RES, 1));
        assert_eq!(s.apply(&outdate(RES, 2)), Response::Done);
    }

    #[test]
    fn a_report_older_than_the_stored_one_is_refused_and_changes_nothing() {
        let mut s = objects_tests::drbd_cluster();
        s.apply(&Command::Provision { path: kvm1() });
        let report = |avail, seq| Command::ReportInstance {
            path: kvm1(),
            node_id: 2,
            report: InstanceReport {
                avail,
                warn: false,
                provisioned: true,
                resources: vec![],
            },
            seq,
        };
        assert_eq!(s.apply(&report(Avail::Up, 10)), Response::Done);
        let why = refused(&mut s, report(Avail::Down, 9));
        assert!(why.contains("report 9 of node id 2") && why.contains("(10)"), "{why}");
        refused(&mut s, report(Avail::Down, 10));
        assert_eq!(s.reports[&path_of("demo/svc/kvm1")][&2].avail, Avail::Up);
        assert_eq!(s.apply(&report(Avail::Down, 11)), Response::Done);
        assert_eq!(s.reports[&path_of("demo/svc/kvm1")][&2].avail, Avail::Down);
        // Entries from before reports were numbered always apply.
        assert_eq!(s.apply(&report(Avail::Warn, 0)), Response::Done);
        assert_eq!(s.report_seqs[&path_of("demo/svc/kvm1")][&2], 11);
    }

    #[test]
    fn a_live_switch_refusal_repeats_the_holders_report_cut_and_escaped() {
        let mut s = objects_tests::drbd_cluster();
        s.apply(&Command::Provision { path: kvm1() });
        let resource = ResourceReport {
            rid: format!("volume#data\u{1b}[2J{}", "x".repeat(10_000)),
            avail: Avail::Up,
            label: RES.into(),
            messages: vec![],
            peers: BTreeMap::from([("n2".to_string(), "StandAlone\n[evil]".to_string())]),
        };
        assert_eq!(s.apply(&up_report(vec![resource])), Response::Done);
        let why = refused(&mut s, Command::LiveSwitch { path: kvm1(), to: 2 });
        assert!(why.len() < 1024 && why.contains("… (10015 bytes)"), "{why}");
        assert!(
            why.contains(r"is StandAlone\n[evil] as the holder last saw it"),
            "{why}"
        );
        assert!(!why.contains(['\u{1b}', '\n']), "{why}");
    }

    #[test]
    fn a_new_switch_forgets_which_nodes_were_gone() {
        let mut s = objects_tests::drbd_cluster();
        s.apply(&Command::Provision { path: kvm1() });
        let fence = Command::Fence {
            path: kvm1(),
            node_id: 2,
        };
        assert_eq!(s.apply(&fence), Response::Done);
        assert!(s.services[&path_of("demo/svc/kvm1")].fenced.contains(&2));
        // n2 is back and connected (a live switch to it checks that): it is no longer out of
        // sight, so a rebooted holder must see it demoted before promoting.
        assert_eq!(s.apply(&Command::LiveSwitch { path: kvm1(), to: 2 }), Response::Done);
        assert!(s.services[&path_of("demo/svc/kvm1")].fenced.is_empty());
    }

    #[test]
    fn marks_go_with_the_volume_the_node_or_the_disks() {
        let mut s = objects_tests::drbd_cluster();
        s.apply(&outdate(RES, 2));
        assert_eq!(s.apply(&Command::RemoveNode { node_id: 2 }), Response::Done);
        assert!(s.outdated.is_empty(), "removed node");
        let mut s = objects_tests::drbd_cluster();
        s.apply(&Command::Provision { path: kvm1() });
        s.apply(&outdate(RES, 2));
        assert_eq!(s.apply(&Command::Unprovision { path: kvm1() }), Response::Done);
        assert!(s.outdated.is_empty(), "unprovisioned: fresh disks next time");
        s.apply(&outdate(RES, 2));
        assert_eq!(s.apply(&Command::DeleteObject { path: kvm1() }), Response::Done);
        assert!(s.outdated.is_empty(), "deleted volume");
    }

    #[test]
    fn a_state_saved_before_fencing_existed_still_loads() {
        let mut v = serde_json::to_value(objects_tests::drbd_cluster()).unwrap();
        v.as_object_mut().unwrap().remove("outdated");
        let s: ClusterState = serde_json::from_value(v).unwrap();
        assert!(s.outdated.is_empty());
    }

    /// A real ed25519 public key, as ssh-keygen writes it.
    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMgCrZCehGhMPJK5j1ImjfzEKCaoSTiUBweLHteT8Hxd omraft@n1";

    fn key_refused(key: &str) -> String {
        parse_ssh_key(key).map_or_else(|e| e, |k| panic!("{key:?} accepted as {k:?}"))
    }

    #[test]
    fn a_key_is_type_base64_and_an_optional_comment() {
        let k = parse_ssh_key(KEY).unwrap();
        assert_eq!((k.kind, k.comment), ("ssh-ed25519", Some("omraft@n1")));
        let bare = KEY.rsplit_once(' ').unwrap().0;
        assert_eq!(parse_ssh_key(bare).unwrap().comment, None);
        parse_ssh_key(&format!("{bare} any-comment!@#")).unwrap();
    }

    #[test]
    fn a_key_smuggling_another_authorized_keys_line_is_refused() {
        let evil = format!("{KEY}\n\tssh-rsa\tEVIL\tx");
        let why = key_refused(&evil);
        assert!(
            why.contains(&format!("a control character ('\\n') at byte {}", KEY.len())),
            "{why}"
        );
        for (sep, what) in [
            ("\n", "control character ('\\n')"),
            ("\r", "control character ('\\r')"),
            ("\t", "control character ('\\t')"),
            ("\0", "control character ('\\0')"),
            ("\u{7f}", "control character ('\\u{7f}')"),
            ("\u{2028}", "non-ASCII character ('\\u{2028}')"),
            ("\u{85}", "non-ASCII character ('\\u{85}')"),
            ("é", "non-ASCII character ('é')"),
        ] {
            let key = format!("{KEY}{sep}ssh-ed25519 AAAA evil");
            assert!(key_refused(&key).contains(what), "{sep:?}: {}", key_refused(&key));
            let in_comment = KEY.replace("omraft@n1", &format!("omraft@n1{sep}x"));
            assert!(
                key_refused(&in_comment).contains(what),
                "{sep:?}: {}",
                key_refused(&in_comment)
            );
        }
    }

    #[test]
    fn a_malformed_key_is_refused_naming_what_is_wrong() {
        let body = KEY.split(' ').nth(1).unwrap();
        for (key, what) in [
            (String::new(), "not `TYPE BASE64 [COMMENT]`"),
            ("ssh-ed25519".into(), "not `TYPE BASE64 [COMMENT]`"),
            (KEY.replace(' ', "  "), "not `TYPE BASE64 [COMMENT]`"),
            (format!("{KEY} more"), "not `TYPE BASE64 [COMMENT]`"),
            (format!(" {KEY}"), "not `TYPE BASE64 [COMMENT]`"),
            (format!("{KEY} "), "not `TYPE BASE64 [COMMENT]`"),
            (format!("ssh-rsa {body} x"), "key type \"ssh-rsa\" is not accepted"),
            (format!("ssh-ed25519 {body}= x"), "not a multiple of 4"),
            (
                "ssh-ed25519 AA;r omraft@n1".into(),
                "';' at position 2 is not a base64 character",
            ),
            ("ssh-ed25519 AA=A x".into(), "'=' at position 2"),
            ("ssh-ed25519 A=== x".into(), "at most 2"),
            ("ssh-ed25519 AB== x".into(), "bits before the '=' padding"),
            ("ssh-ed25519 AAAA x".into(), "not an ssh-ed25519 public key"),
            (format!("{KEY}{}", "x".repeat(1024)), "more than 1024"),
        ] {
            let why = key_refused(&key);
            assert!(why.contains(what), "{key:?}: {why}");
        }
    }

    #[test]
    fn a_witness_key_report_is_refused() {
        let mut s = objects_tests::nodes_with_vgs();
        let report = |node_id| Command::ReportSshKey {
            node_id,
            key: KEY.into(),
        };
        assert_eq!(
            s.check(&report(3)).unwrap_err().to_string(),
            "ssh key of node id 3: the node is a witness, and a witness's key is never trusted"
        );
        assert!(s.nodes[&3].ssh_key.is_none());
        assert_eq!(s.apply(&report(2)), Response::Done);
        assert_eq!(s.nodes[&2].ssh_key.as_deref(), Some(KEY));
        let smuggled = Command::ReportSshKey {
            node_id: 2,
            key: format!("{KEY}\nssh-rsa EVIL x"),
        };
        assert!(matches!(s.apply(&smuggled), Response::Refused(m) if m.to_string().contains("control character")));
    }

    #[test]
    fn remove_unknown_node_is_refused() {
        let mut s = boot();
        assert!(matches!(
            s.apply(&Command::RemoveNode { node_id: 7 }),
            Response::Refused(_)
        ));
    }

    #[test]
    fn node_addresses_are_checked_before_the_log_and_an_old_entry_still_applies() {
        let mut s = boot();
        for (addr, why) in [
            ("n2:1\naddress ipv4 6.6.6.6:7789", "only letters"),
            ("n2", "HOST:PORT"),
            ("n2:99999", "port"),
            ("$(reboot):1215", "only letters"),
        ] {
            let cmd = Command::AddNode {
                name: "n2".into(),
                addr: addr.into(),
                witness: false,
                token: None,
            };
            let e = s.check(&cmd).unwrap_err();
            assert!(matches!(e, Rejection::BadNodeAddr(..)), "{addr:?}: {e}");
            assert!(e.to_string().contains(why), "{addr:?}: {e}");
        }
        let founder = Command::Bootstrap {
            node_id: 1,
            name: "n1".into(),
            addr: "n1 1215".into(),
        };
        assert!(matches!(
            ClusterState::default().check(&founder),
            Err(Rejection::BadNodeAddr(..))
        ));
        s.check(&Command::AddNode {
            name: "n2".into(),
            addr: "10.30.0.12:1215".into(),
            witness: false,
            token: None,
        })
        .unwrap();
        // Entries an older version committed replay as they did.
        assert_eq!(add(&mut s, "n2", "n2"), Response::NodeAdded(2));
    }

    #[test]
    fn volume_group_reports_are_bounded_before_the_log_and_sums_saturate() {
        let mut s = objects_tests::nodes_with_vgs();
        let report = |vgs: Vec<(&str, u64)>| Command::ReportVolumeGroups {
            node_id: 1,
            vgs: vgs.into_iter().map(|(n, b)| (n.to_string(), b)).collect(),
        };
        let refused = |c: &Command| match s.check(c) {
            Err(e @ Rejection::BadVolumeGroups(1, _)) => e.to_string(),
            other => panic!("{c}: {other:?}"),
        };
        assert!(refused(&report(vec![("data", u64::MAX)])).contains("more than a volume group can have"));
        assert!(refused(&report(vec![("data", MAX_VG_BYTES + 1)])).contains("data is"));
        assert!(refused(&report(vec![("da\nta", 1)])).contains("volume group name \"da\\nta\""));
        let many: Vec<(String, u64)> = (0..=MAX_VG_REPORT_GROUPS).map(|i| (format!("vg{i}"), 1)).collect();
        let many = Command::ReportVolumeGroups {
            node_id: 1,
            vgs: many.into_iter().collect(),
        };
        assert!(refused(&many).contains("1025 volume groups"));
        s.check(&report(vec![("data", MAX_VG_BYTES), ("other", MAX_VG_BYTES)]))
            .unwrap();
        // In a log an older version wrote, any size applies; what sums the sizes saturates.
        let huge = report(vec![("data", u64::MAX), ("more", u64::MAX)]);
        assert_eq!(s.apply(&huge), Response::Done);
        assert_eq!(s.free_capacity(1), u64::MAX);
    }

    #[test]
    fn a_configuration_that_would_not_read_back_is_refused_before_the_log_and_an_old_entry_still_applies() {
        let mut s = objects_tests::drbd_cluster();
        // A member's proposal carries the configuration decoded: an empty section smuggling
        // lines of its own into `config show`.
        let config: Ini = serde_json::from_value(serde_json::json!({"sections": [
            {"name": "DEFAULT", "entries": [["id", objects::derived_uuid("x")]]},
            {"name": "x#1]\n[container#1]\ntype = kvm", "entries": []},
        ]}))
        .unwrap();
        let create = Command::CreateObject {
            path: path_of("demo/cfg/x"),
            config,
        };
        let e = s.check(&create).unwrap_err().to_string();
        assert!(
            e.contains("demo/cfg/x: section name") && e.contains("reads otherwise"),
            "{e}"
        );
        assert_eq!(s.apply(&create), Response::Done);
        // Set through the API, a value with spaces around it would print as another one.
        let update = |value: &str| Command::UpdateObject {
            path: kvm1(),
            set: vec![(ObjectKey::parse("nodes").unwrap(), value.into())],
            unset: vec![],
        };
        let e = s.check(&update(" n1 n2")).unwrap_err().to_string();
        assert!(e.contains(r#"keyword "nodes" = " n1 n2" in [DEFAULT]"#), "{e}");
        s.check(&update("n1 n2")).unwrap();
        assert_eq!(s.apply(&update(" n1 n2")), Response::Done);
    }

    #[test]
    fn a_path_no_parse_gives_is_refused_before_the_log_since_no_snapshot_could_hold_it() {
        let mut s = objects_tests::drbd_cluster();
        // A member's proposal carries a path as its parts, unchecked by `parse`.
        let path = ObjectPath::new("../x", ObjectKind::Cfg, "y");
        let create = Command::CreateObject {
            path: path.clone(),
            config: Ini::default(),
        };
        let e = s.check(&create).unwrap_err();
        assert!(matches!(e, Rejection::Path(PathError::Shape(_))), "{e}");
        assert!(e.to_string().contains(r#""../x/cfg/y" is not an object path"#), "{e}");
        for cmd in [
            Command::Provision { path: path.clone() },
            Command::FreezeService { path, frozen: true },
        ] {
            assert!(matches!(cmd.check_input(), Err(Rejection::Path(_))), "{cmd}");
        }
        // Applied all the same (as an entry already in a log would be), the state writes a
        // snapshot nothing reads.
        assert_eq!(s.apply(&create), Response::Done);
        let json = serde_json::to_string(&s).unwrap();
        assert!(serde_json::from_str::<ClusterState>(&json).is_err());
    }

    #[test]
    fn config_values_are_checked_before_the_log_and_an_old_entry_still_applies() {
        let mut s = boot();
        let (set, unset) =
            catalog::parse_update(&[("migration.uri".into(), "tcp://{host}:1\n[evil]".into())], &[]).unwrap();
        let cmd = Command::UpdateConfig { set, unset };
        let e = s.check(&cmd).unwrap_err().to_string();
        assert!(e.contains("migration.uri") && e.contains("one line"), "{e}");
        assert_eq!(s.apply(&cmd), Response::Done);
    }

    #[test]
    fn node_reports_and_captured_domains_are_bounded_before_the_log() {
        let s = objects_tests::drbd_cluster();
        let resource = |messages: Vec<String>| ResourceReport {
            rid: "volume#data".into(),
            avail: Avail::Up,
            label: "kvm1".into(),
            messages,
            peers: BTreeMap::new(),
        };
        let refused = |c: &Command| s.check(c).unwrap_err().to_string();
        let long = "m".repeat(instances::MAX_REPORT_STRING + 1);
        let e = refused(&up_report(vec![resource(vec![long.clone()])]));
        assert!(
            e.contains("instance report of node id 1") && e.contains("4097 bytes"),
            "{e}"
        );
        let e = refused(&up_report(vec![resource(vec![
            "m".into();
            instances::MAX_REPORT_ITEMS + 1
        ])]));
        assert!(e.contains("more than 64 messages"), "{e}");
        let many = vec![resource(vec![]); instances::MAX_REPORT_RESOURCES + 1];
        assert!(refused(&up_report(many)).contains("4097 resources"));
        // What the applier reports is cut to fit, on a character boundary.
        let cut = up_report(vec![resource(vec![format!("é{long}")])]);
        let Command::ReportInstance { report: r, .. } = &cut else {
            unreachable!()
        };
        let bounded = r.clone().bounded();
        assert!(bounded.check_bounds().is_ok());
        assert!(bounded.resources[0].messages[0].ends_with("..."));

        let capture = |name: &str| Command::CaptureDomain {
            path: kvm1(),
            name: name.into(),
            xml: format!("<domain><name>{name}</name></domain>"),
        };
        for bad in ["kvm1\n<evil/>", "k".repeat(MAX_DOMAIN_NAME_BYTES + 1).as_str()] {
            assert!(
                matches!(capture(bad).check_input(), Err(Rejection::BadDomain(_))),
                "{bad:?}"
            );
        }
        capture("kvm1").check_input().unwrap();
    }

    #[test]
    fn a_batch_applies_each_command_as_alone_and_is_never_proposed_nor_nested() {
        let mut alone = objects_tests::drbd_cluster();
        let mut batched = alone.clone();
        let freeze = |frozen| Command::FreezeService { path: kvm1(), frozen };
        let unknown = Command::FreezeService {
            path: path_of("demo/svc/nothing"),
            frozen: true,
        };
        let cmds = vec![
            freeze(true),
            unknown.clone(),
            freeze(false),
            Command::Batch(vec![freeze(true)]),
        ];
        // Alone, the same commands, but for the nested batch (refused in a batch, changing nothing).
        let one_by_one: Vec<Response> = cmds[..3].iter().map(|c| alone.apply(c)).collect();
        let Response::Batch(responses) = batched.apply(&Command::Batch(cmds.clone())) else {
            panic!("a batch answers with a batch");
        };
        assert_eq!(responses[..3], one_by_one);
        assert_eq!(responses[0], Response::Done);
        assert!(matches!(responses[1], Response::Refused(_)), "{:?}", responses[1]);
        assert_eq!(responses[3], Response::Refused(Rejection::Batch));
        assert_eq!(batched, alone);
        // Formed by the leader only: a member's proposal of one is refused.
        assert_eq!(Command::Batch(cmds).check_input(), Err(Rejection::Batch));
    }
}
