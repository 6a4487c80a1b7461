//! DRBD's fencing in the simulator: the `fence-peer` and `unfence-peer` handlers of a
//! resource file run as DRBD 9 runs them, and what their exit codes do.
//!
//! The policy is the resource file's `net { fencing ...; }` (loaded at `up`, as the kernel
//! loads net options): `dont-care` (or none) runs nothing; `resource-only` runs fence-peer;
//! `resource-and-stonith` also freezes I/O on the Primary until the handler outdated the peer
//! or the peer is back. A node that is Primary and loses a peer whose disk it knew UpToDate
//! (or unknown) must fence it; a node promoting beside a peer of unknown state fences it
//! first. fence-peer exits 3 (peer Inconsistent), 4 (peer Outdated), 5 (peer unreachable: taken
//! as outdated while this disk is UpToDate) or 7 (peer stonithed): I/O resumes and the peer's
//! disk is Outdated for this node, and its own disk once it is not Primary, until a resync
//! from an UpToDate peer made it UpToDate again; then unfence-peer runs on the node that
//! fenced. 6 (peer is Primary) outdates this node; anything else is a broken handler: I/O stays
//! frozen and a promotion is refused, until the connection comes back.
//!
//! The simulator is no daemon: whoever touches a resource's state settles it (losses and
//! reconnections are noticed there), but only the node that must run a handler runs it, from
//! its own `drbdadm` and `drbdsetup` commands, never while holding the resource's lock (the
//! handler asks the local daemon, whose applier may call the simulator). The handler is read
//! from the file the node last passed with `-c FILE`, run through `/bin/sh -c` with DRBD's
//! environment, bounded by `HANDLER_TIMEOUT`, and logged to `SIM_DIR/handlers.log`.
//!
//! `StandIns`, given to the simulator explicitly, replace the fence-peer and unfence-peer
//! commands of a file that configures them: in-process test worlds, which have no omctl to
//! run, stand in one that asks their model of the cluster.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{now_ms, ResState, Sim};

/// How long a handler may run before it is killed (and counts as broken). DRBD itself waits
/// without bound; the simulator must not.
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// Commands run instead of the resource file's handlers (for in-process worlds without
/// omctl), each through `/bin/sh -c` with DRBD's environment; only for a file that configures
/// that handler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StandIns {
    pub fence_peer: Option<String>,
    pub unfence_peer: Option<String>,
}

/// What one node's kernel keeps about fencing for one resource.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct NodeFence {
    /// The resource file this node last passed with `-c` (its handlers are read from it).
    #[serde(default)]
    file: String,
    /// The policy loaded at `up`: `dont-care`, `resource-only` or `resource-and-stonith`.
    #[serde(default)]
    policy: String,
    /// This node's view of each peer.
    #[serde(default)]
    peers: BTreeMap<String, PeerView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
enum Handler {
    #[default]
    Idle,
    /// fence-peer must run.
    Due,
    /// fence-peer runs since this time (ms).
    Running(u64),
    /// fence-peer failed: I/O stays frozen until the peer is back.
    Failed,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PeerView {
    connected: bool,
    /// The peer's disk as this node knows it: its real state while connected; while not,
    /// Outdated, Inconsistent or DUnknown.
    pdsk: String,
    /// Counts connection changes: a fence-peer result from an earlier connection is ignored.
    epoch: u64,
    /// I/O frozen for this peer (resource-and-stonith).
    frozen: bool,
    fence: Handler,
    /// Outdated by this node's fence-peer; unfence-peer runs once it is UpToDate again.
    fenced: bool,
    unfence_due: bool,
}

/// What a resource file says about fencing, and the hosts' addresses and disks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FenceConf {
    pub fencing: Option<String>,
    pub fence_peer: Option<String>,
    pub unfence_peer: Option<String>,
    /// Per host: (`address` words, `disk`).
    pub hosts: BTreeMap<String, (String, String)>,
}

/// Splits a resource file into words, `"quoted strings"` (unquoted), `{`, `}` and `;`.
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.is_empty() {
            out.push(std::mem::take(cur));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                flush(&mut cur, &mut out);
                out.push(chars.by_ref().take_while(|&c| c != '"').collect());
            }
            '#' => {
                flush(&mut cur, &mut out);
                chars.by_ref().take_while(|&c| c != '\n').for_each(drop);
            }
            '{' | '}' | ';' => {
                flush(&mut cur, &mut out);
                out.push(c.to_string());
            }
            c if c.is_whitespace() => flush(&mut cur, &mut out),
            c => cur.push(c),
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// Reads the fencing policy (any `net` section), the handlers (any `handlers` section) and
/// each `on HOST` section's address and disk.
pub fn parse_fence_conf(text: &str) -> FenceConf {
    let mut conf = FenceConf::default();
    let mut stack: Vec<Vec<String>> = Vec::new();
    let mut stmt: Vec<String> = Vec::new();
    for t in tokens(text) {
        match t.as_str() {
            "{" => stack.push(std::mem::take(&mut stmt)),
            "}" => {
                stack.pop();
                stmt.clear();
            }
            ";" => {
                let section = stack.last().map(|s| s.first().map(String::as_str).unwrap_or(""));
                let value = stmt.get(1..).map(|v| v.join(" ")).unwrap_or_default();
                match (section, stmt.first().map(String::as_str)) {
                    (Some("net"), Some("fencing")) => conf.fencing = Some(value),
                    (Some("handlers"), Some("fence-peer")) => conf.fence_peer = Some(value),
                    (Some("handlers"), Some("unfence-peer")) => conf.unfence_peer = Some(value),
                    (Some("on"), Some(key @ ("address" | "disk"))) => {
                        let host = stack.last().and_then(|s| s.get(1)).cloned().unwrap_or_default();
                        let e = conf.hosts.entry(host).or_default();
                        if key == "address" {
                            e.0 = value;
                        } else {
                            e.1 = value;
                        }
                    }
                    _ => {}
                }
                stmt.clear();
            }
            _ => stmt.push(t),
        }
    }
    conf
}

/// One handler run a node owes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub resource: String,
    pub node: String,
    pub peer: String,
    /// `fence-peer` or `unfence-peer`.
    pub handler: String,
    /// The resource file the handler is read from.
    pub file: String,
    pub env: Vec<(String, String)>,
    epoch: u64,
}

fn stonith(policy: &str) -> bool {
    policy == "resource-and-stonith"
}

fn fences(policy: &str) -> bool {
    policy == "resource-only" || stonith(policy)
}

impl Sim {
    /// Notes the file a node passed with `-c`, and at `up` its fencing policy.
    pub(super) fn fence_config(&self, s: &mut ResState, node: &str, file: &Path, text: &str, verb: &[&str]) {
        let Some(me) = s.nodes.get_mut(node) else { return };
        me.fence.file = file.display().to_string();
        if verb == ["up"] && me.up {
            me.fence.policy = parse_fence_conf(text).fencing.unwrap_or_else(|| "dont-care".into());
        }
    }

    /// Before `node` goes `down`: a Secondary with UpToDate data leaving a connected Primary
    /// gracefully outdates itself, and the peers know it (no fencing for a clean departure).
    pub(super) fn fence_leave(&self, s: &mut ResState, node: &str) {
        let Some(me) = s.nodes.get(node).cloned() else { return };
        let primaries: Vec<String> = s
            .nodes
            .iter()
            .filter(|(n, x)| n.as_str() != node && x.primary && self.connected(s, node, n))
            .map(|(n, _)| n.clone())
            .collect();
        let outdate = !me.primary && me.disk == "UpToDate" && !primaries.is_empty();
        let connected: Vec<String> = s
            .nodes
            .keys()
            .filter(|n| n.as_str() != node && self.connected(s, node, n))
            .cloned()
            .collect();
        if outdate {
            s.nodes.get_mut(node).expect("listed").disk = "Outdated".into();
        }
        let disk = s.nodes[node].disk.clone();
        for p in connected {
            let v = s
                .nodes
                .get_mut(&p)
                .expect("listed")
                .fence
                .peers
                .entry(node.into())
                .or_default();
            v.connected = false;
            v.epoch += 1;
            v.pdsk = if matches!(disk.as_str(), "Outdated" | "Inconsistent") {
                disk.clone()
            } else {
                "DUnknown".into()
            };
        }
    }

    /// A node went down (or lost power): its connections are gone, nothing of them is frozen
    /// or pending; what it knew of its peers' disks stays (DRBD keeps it in the metadata).
    pub(super) fn fence_down(x: &mut super::NodeState) {
        for v in x.fence.peers.values_mut() {
            v.connected = false;
            v.epoch += 1;
            v.frozen = false;
            v.unfence_due = false;
            v.fence = Handler::Idle;
        }
    }

    /// A demoted node has no I/O to freeze and nothing to fence for.
    pub(super) fn fence_demoted(x: &mut super::NodeState) {
        for v in x.fence.peers.values_mut() {
            v.frozen = false;
            if matches!(v.fence, Handler::Due | Handler::Failed) {
                v.fence = Handler::Idle;
            }
        }
    }

    /// New metadata: nothing known of the peers.
    pub(super) fn fence_new_md(x: &mut super::NodeState) {
        x.fence.peers.clear();
    }

    /// Whether `node`'s I/O is frozen for fencing (status `suspended`).
    pub(super) fn fence_suspended(s: &ResState, node: &str) -> bool {
        s.nodes
            .get(node)
            .is_some_and(|x| x.up && x.primary && x.fence.peers.values().any(|v| v.frozen))
    }

    /// The disk `node` knows `peer` has while they are not connected.
    pub(super) fn fence_peer_disk(s: &ResState, node: &str, peer: &str) -> String {
        s.nodes
            .get(node)
            .and_then(|x| x.fence.peers.get(peer))
            .map(|v| v.pdsk.as_str())
            .filter(|d| matches!(*d, "Outdated" | "Inconsistent"))
            .unwrap_or("DUnknown")
            .to_string()
    }

    /// The peers `node` cannot be Primary beside (DRBD's `SS_PRIMARY_NOP`): not connected,
    /// their disk unknown, under a fencing policy.
    pub(super) fn fence_unknown_peers(&self, s: &ResState, node: &str) -> Vec<String> {
        let Some(me) = s.nodes.get(node) else { return vec![] };
        if !fences(&me.fence.policy) {
            return vec![];
        }
        s.nodes
            .keys()
            .filter(|p| p.as_str() != node && !self.connected(s, node, p))
            .filter(|p| Self::fence_peer_disk(s, node, p) == "DUnknown")
            .cloned()
            .collect()
    }

    /// The fencing part of settling a resource: losses and reconnections as every up node
    /// sees them, outdated disks, resyncs of outdated disks from an UpToDate peer.
    pub(super) fn settle_fencing(&self, s: &mut ResState) {
        self.outdate_fenced(s);
        self.resync_outdated(s);
        let names: Vec<String> = s.nodes.keys().cloned().collect();
        for x in &names {
            if !s.nodes[x].up {
                continue;
            }
            for y in names.iter().filter(|y| *y != x) {
                let now = self.connected(s, x, y);
                let peer_disk = s.nodes[y].disk.clone();
                let me = s.nodes[x].clone();
                let v = s
                    .nodes
                    .get_mut(x)
                    .expect("listed")
                    .fence
                    .peers
                    .entry(y.clone())
                    .or_default();
                if now {
                    if !v.connected {
                        v.epoch += 1;
                        v.frozen = false;
                        if v.fence != Handler::Idle && !matches!(v.fence, Handler::Running(_)) {
                            v.fence = Handler::Idle;
                        }
                    }
                    v.pdsk = peer_disk.clone();
                    if v.fenced && peer_disk == "UpToDate" {
                        v.fenced = false;
                        v.unfence_due = true;
                    }
                } else if v.connected {
                    v.epoch += 1;
                    v.pdsk = if matches!(peer_disk.as_str(), "Outdated" | "Inconsistent") {
                        peer_disk
                    } else {
                        "DUnknown".into()
                    };
                    if me.primary && me.disk == "UpToDate" && fences(&me.fence.policy) && v.pdsk == "DUnknown" {
                        v.fence = Handler::Due;
                        v.frozen = stonith(&me.fence.policy);
                    }
                }
                v.connected = now;
            }
        }
    }

    /// A disk some up node fenced becomes Outdated once it is not Primary (a Primary's data
    /// cannot be outdated; the handler should not have claimed it).
    fn outdate_fenced(&self, s: &mut ResState) {
        let fenced: Vec<String> = s
            .nodes
            .iter()
            .filter(|(n, x)| !x.primary && x.disk == "UpToDate" && self.fenced_by_up_peer(s, n))
            .map(|(n, _)| n.clone())
            .collect();
        for n in fenced {
            s.nodes.get_mut(&n).expect("listed").disk = "Outdated".into();
        }
    }

    fn fenced_by_up_peer(&self, s: &ResState, node: &str) -> bool {
        s.nodes.iter().any(|(x, xs)| {
            x != node && xs.up && !self.connected(s, x, node) && xs.fence.peers.get(node).is_some_and(|v| v.fenced)
        })
    }

    /// An Outdated disk connected to an UpToDate one resyncs from it (Inconsistent meanwhile).
    fn resync_outdated(&self, s: &mut ResState) {
        let outdated: Vec<String> = s
            .nodes
            .iter()
            .filter(|(_, x)| x.up && x.disk == "Outdated")
            .map(|(n, _)| n.clone())
            .collect();
        for y in outdated {
            let source = match &s.resync {
                Some(r) => self.connected(s, &r.source, &y).then(|| r.source.clone()),
                None => {
                    let mut sources: Vec<(&String, &super::NodeState)> = s
                        .nodes
                        .iter()
                        .filter(|(x, xs)| xs.disk == "UpToDate" && self.connected(s, x, &y))
                        .collect();
                    sources.sort_by_key(|(_, xs)| !xs.primary);
                    sources.first().map(|(x, _)| (*x).clone())
                }
            };
            let Some(source) = source else { continue };
            s.nodes.get_mut(&y).expect("listed").disk = "Inconsistent".into();
            if s.resync.is_none() {
                s.resync = Some(super::Resync {
                    source,
                    start_ms: now_ms(),
                    duration_ms: s.sync_ms.unwrap_or(self.sync_ms),
                });
            }
        }
    }

    /// The handler runs `node` owes for `res`, marked as running (fence-peer) or done
    /// (unfence-peer). `only` limits fence-peer to those peers and takes them even when not
    /// due (a promotion beside peers of unknown state).
    fn take_jobs(&self, s: &mut ResState, res: &str, node: &str, only: Option<&[String]>) -> Vec<Job> {
        let Some(me) = s.nodes.get(node).cloned() else {
            return vec![];
        };
        if !me.up {
            return vec![];
        }
        let stale = HANDLER_TIMEOUT.as_millis() as u64 + 10_000;
        let mut jobs = Vec::new();
        for (peer, v) in &me.fence.peers {
            let fence = match only {
                Some(list) => list.contains(peer) && !matches!(v.fence, Handler::Running(t) if now_ms() < t + stale),
                None => v.fence == Handler::Due || matches!(v.fence, Handler::Running(t) if now_ms() >= t + stale),
            };
            if fence {
                jobs.push(self.job(s, res, node, peer, "fence-peer", v.epoch));
            }
            if v.unfence_due && only.is_none() {
                jobs.push(self.job(s, res, node, peer, "unfence-peer", v.epoch));
            }
        }
        let me = s.nodes.get_mut(node).expect("listed");
        for j in &jobs {
            let v = me.fence.peers.get_mut(&j.peer).expect("listed");
            if j.handler == "fence-peer" {
                v.fence = Handler::Running(now_ms());
            } else {
                v.unfence_due = false;
            }
        }
        jobs
    }

    /// DRBD's handler environment: the kernel's (connection, addresses, minors, up-to-date
    /// nodes) and drbdadm's (resource, config file, node ids and host names).
    fn job(&self, s: &ResState, res: &str, node: &str, peer: &str, handler: &str, epoch: u64) -> Job {
        let me = &s.nodes[node];
        let p = &s.nodes[peer];
        let conf = std::fs::read_to_string(&me.fence.file)
            .map(|t| parse_fence_conf(&t))
            .unwrap_or_default();
        let mut env: Vec<(String, String)> = vec![
            ("HOME".into(), "/".into()),
            ("TERM".into(), "linux".into()),
            ("PATH".into(), "/sbin:/usr/sbin:/bin:/usr/bin".into()),
            ("DRBD_RESOURCE".into(), res.into()),
            ("DRBD_CONF".into(), me.fence.file.clone()),
            ("DRBD_MINOR".into(), me.minor.to_string()),
            ("DRBD_VOLUME".into(), "0".into()),
            ("DRBD_MINOR_0".into(), me.minor.to_string()),
            ("DRBD_MY_NODE_ID".into(), me.node_id.to_string()),
            ("DRBD_PEER_NODE_ID".into(), p.node_id.to_string()),
            ("DRBD_CSTATE".into(), self.cstate(s, node, peer).into()),
        ];
        for (prefix, host) in [("DRBD_MY_", node), ("DRBD_PEER_", peer)] {
            if let Some((addr, _)) = conf.hosts.get(host) {
                let (af, rest) = addr.split_once(' ').unwrap_or(("ipv4", addr.as_str()));
                let ip = rest.rsplit_once(':').map_or(rest, |(ip, _)| ip);
                env.push((format!("{prefix}AF"), af.into()));
                env.push((format!("{prefix}ADDRESS"), ip.into()));
            }
        }
        if let Some((_, disk)) = conf.hosts.get(node) {
            env.push(("DRBD_BACKING_DEV".into(), disk.clone()));
            env.push(("DRBD_BACKING_DEV_0".into(), disk.clone()));
        }
        let mut up_to_date = 0u64;
        for (n, x) in &s.nodes {
            env.push((format!("DRBD_NODE_ID_{}", x.node_id), n.clone()));
            // What this node knows: its own disk, and its connected peers'.
            let known = n == node || self.connected(s, node, n);
            if known && x.disk == "UpToDate" {
                up_to_date |= 1 << x.node_id;
            }
        }
        env.push(("UP_TO_DATE_NODES".into(), format!("0x{up_to_date:08X}")));
        Job {
            resource: res.into(),
            node: node.into(),
            peer: peer.into(),
            handler: handler.into(),
            file: me.fence.file.clone(),
            env,
            epoch,
        }
    }

    fn cstate(&self, s: &ResState, node: &str, peer: &str) -> &'static str {
        if self.connected(s, node, peer) {
            "Connected"
        } else if self.cut(node) || self.cut(peer) {
            "Connecting"
        } else {
            "StandAlone"
        }
    }

    /// What fence-peer's exit `code` does to `job.node`'s state.
    fn fence_result(&self, s: &mut ResState, job: &Job, code: i32) {
        let connected = self.connected(s, &job.node, &job.peer);
        let Some(me) = s.nodes.get_mut(&job.node) else { return };
        let my_disk = me.disk.clone();
        let Some(v) = me.fence.peers.get_mut(&job.peer) else {
            return;
        };
        if matches!(v.fence, Handler::Running(_)) {
            v.fence = Handler::Idle;
        }
        // The connection came back (or went and came back) while the handler ran: ignored.
        if connected || v.epoch != job.epoch || !me.up {
            return;
        }
        let outdated = match code {
            3 => {
                v.pdsk = "Inconsistent".into();
                true
            }
            4 | 7 => true,
            5 => my_disk == "UpToDate",
            _ => false,
        };
        if code != 3 && outdated {
            v.pdsk = "Outdated".into();
            v.fenced = true;
        }
        if outdated {
            v.frozen = false;
        } else {
            v.fence = Handler::Failed;
        }
        if code == 6 {
            me.disk = "Outdated".into();
        }
        self.outdate_fenced(s);
    }

    /// Runs the handlers `node` owes for `res` (none while it holds nothing due): inline, or
    /// in a detached `omsim drbd-handler` process when the simulator is a short-lived command.
    pub(super) fn run_pending_handlers(&self, res: &str) {
        let node = self.node.clone();
        let Ok(jobs) = self.with_state(res, |s| self.take_jobs(s, res, &node, None)) else {
            return;
        };
        for job in jobs {
            match &self.handlers {
                Handlers::Inline => self.run_job(&job),
                Handlers::Detached(omsim) => self.detach(omsim, &job),
            }
        }
    }

    fn detach(&self, omsim: &Path, job: &Job) {
        let spawned = std::process::Command::new(omsim)
            .arg("drbd-handler")
            .arg(serde_json::to_string(job).expect("serialize"))
            .env("OMRAFT_SIM_DIR", &self.dir)
            .env("__DRBD_NODE__", &self.node)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            // As when the kernel cannot start its helper: the handler counts as broken.
            self.log_handler(job, &format!("could not start: {e}"));
            self.finish_job(job, -1);
        }
    }

    /// Before `primary`: runs fence-peer now for every peer of unknown state (a promotion
    /// waits for it, as DRBD's does); the promotion then checks what they left.
    pub(super) fn fence_before_promote(&self, res: &str) -> Result<(), String> {
        let node = self.node.clone();
        let jobs = self.with_state(res, |s| {
            let unknown = self.fence_unknown_peers(s, &node);
            let me = s.nodes.get(&node).cloned().unwrap_or_default();
            // DRBD fences only with data worth protecting, and not when already Primary.
            if unknown.is_empty() || me.primary || !me.up || me.disk != "UpToDate" {
                return vec![];
            }
            self.take_jobs(s, res, &node, Some(&unknown))
        })?;
        for job in jobs {
            self.run_job(&job);
        }
        Ok(())
    }

    /// Runs one handler to its end (bounded) and records what it did.
    pub fn run_job(&self, job: &Job) {
        let code = self.run_handler(job);
        self.finish_job(job, code);
    }

    fn finish_job(&self, job: &Job, code: i32) {
        self.log_handler(job, &format!("exit {code}"));
        if job.handler == "fence-peer" {
            let _ = self.with_state(&job.resource, |s| self.fence_result(s, job, code));
        }
    }

    /// `/bin/sh -c HANDLER` with the job's environment only, as drbdadm runs it; its exit
    /// code, or -1 when it could not start or was killed at `HANDLER_TIMEOUT`. A resource
    /// file without the handler gives 0 (drbdadm has nothing to run), which DRBD takes for a
    /// broken fence-peer.
    fn run_handler(&self, job: &Job) -> i32 {
        let conf = match std::fs::read_to_string(&job.file) {
            Ok(t) => parse_fence_conf(&t),
            // drbdadm cannot read the configuration: its own failure.
            Err(_) => return 10,
        };
        let configured = if job.handler == "fence-peer" {
            conf.fence_peer
        } else {
            conf.unfence_peer
        };
        let Some(configured) = configured else { return 0 };
        let stand_in = if job.handler == "fence-peer" {
            &self.stand_ins.fence_peer
        } else {
            &self.stand_ins.unfence_peer
        };
        let command = stand_in.clone().unwrap_or(configured);
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("handlers.out"));
        let stdio = |f: &std::io::Result<std::fs::File>| {
            f.as_ref()
                .ok()
                .and_then(|f| f.try_clone().ok())
                .map_or_else(std::process::Stdio::null, std::process::Stdio::from)
        };
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&command)
            .env_clear()
            .envs(job.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(stdio(&output))
            .stderr(stdio(&output));
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let Ok(mut child) = cmd.spawn() else { return -1 };
        let deadline = Instant::now() + HANDLER_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return st.code().unwrap_or(-1),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    // The whole process group: the shell and whatever it started.
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", "--", &format!("-{}", child.id())])
                        .status();
                    let _ = child.kill();
                    let _ = child.wait();
                    return -1;
                }
            }
        }
    }

    /// Appends one line to `SIM_DIR/handlers.log`: time (ms), node, resource, handler, peer,
    /// outcome.
    fn log_handler(&self, job: &Job, outcome: &str) {
        let line = format!(
            "{} {} {} {} peer={} {outcome}\n",
            now_ms(),
            job.node,
            job.resource,
            job.handler,
            job.peer
        );
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("handlers.log"))
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// How a simulated node runs its handlers.
#[derive(Debug, Clone, Default)]
pub enum Handlers {
    /// In the calling thread (in-process runners; deterministic worlds).
    #[default]
    Inline,
    /// In a detached `PROGRAM drbd-handler JOB` process, so a short-lived command (the
    /// `omsim` binary) returns at once, as the kernel's call of a helper does not block
    /// `drbdsetup status`.
    Detached(PathBuf),
}

/// `omsim drbd-handler JOB`: runs one handler job for the node in `dir` and records it.
pub fn run_detached(sim: &Sim, job_json: &str) -> Result<(), String> {
    let job: Job = serde_json::from_str(job_json).map_err(|e| e.to_string())?;
    sim.run_job(&job);
    Ok(())
}
