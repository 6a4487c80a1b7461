//! A command-compatible stand-in for `drbdadm` and `drbdsetup`, for machines where the DRBD
//! kernel module cannot be loaded. It keeps each resource's state, as every node sees it, in
//! `SIM_DIR/drbd/RES.json` (under a file lock, since each node is its own process) and
//! enforces DRBD's rules: no promotion without UpToDate data unless `--force`; no second
//! Primary on connected nodes unless both allow two primaries; no demotion or `down` while the
//! device is open; a resync after the initial `primary --force`; connections that follow the
//! `SIM_DIR/netcut-NODE` flag. Two Primaries without allow-two-primaries on both (possible
//! only across a cut, as with real DRBD) are appended to `SIM_DIR/violations.log`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::state::StateFile;
use crate::drivers::drbd::render::{check_with_drbdadm, Validation};

#[path = "drbd_fence.rs"]
mod fence;
pub use fence::{parse_fence_conf, run_detached, FenceConf, Handlers, Job, StandIns, HANDLER_TIMEOUT};

/// How long the initial resync takes, unless `OMRAFT_SIM_SYNC_MS` says otherwise.
pub const DEFAULT_SYNC_MS: u64 = 3000;

/// The result of one simulated command: exit code, stdout, stderr.
#[derive(Debug, PartialEq, Eq)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

fn fail(code: i32, msg: impl Into<String>) -> Output {
    Output {
        code,
        stdout: String::new(),
        stderr: msg.into() + "\n",
    }
}

fn ok(stdout: String) -> Output {
    Output {
        code: 0,
        stdout,
        stderr: String::new(),
    }
}

/// One node of a resource file: `on NAME { device /dev/drbdN; disk D; node-id I; }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileNode {
    pub name: String,
    pub minor: u32,
    pub disk: String,
    pub node_id: u32,
    /// The file's `net { allow-two-primaries yes; }`.
    pub two_primaries: bool,
}

/// Reads the `on` sections of a resource file.
pub fn parse_resource_file(text: &str) -> Result<(String, Vec<FileNode>), String> {
    let spaced = text.replace('{', " { ").replace('}', " } ").replace(';', " ; ");
    let words: Vec<&str> = spaced.split_whitespace().collect();
    if words.len() < 2 || words[0] != "resource" {
        return Err("no `resource NAME` block".into());
    }
    let name = words[1].to_string();
    let mut nodes = Vec::new();
    let mut i = 2;
    while i + 2 < words.len() {
        if words[i] == "on" && words[i + 2] == "{" {
            let mut n = FileNode {
                name: words[i + 1].into(),
                minor: 0,
                disk: String::new(),
                node_id: 0,
                two_primaries: false,
            };
            let mut j = i + 3;
            while j + 1 < words.len() && words[j] != "}" {
                match words[j] {
                    "device" => {
                        n.minor = words[j + 1]
                            .trim_start_matches("/dev/drbd")
                            .parse()
                            .map_err(|_| "bad device")?
                    }
                    "disk" => n.disk = words[j + 1].into(),
                    "node-id" => n.node_id = words[j + 1].parse().map_err(|_| "bad node-id")?,
                    _ => {}
                }
                j += 1;
            }
            nodes.push(n);
            i = j;
        }
        i += 1;
    }
    if nodes.is_empty() {
        return Err("no `on NODE { ... }` section".into());
    }
    let allows = words
        .windows(2)
        .any(|w| w[0] == "allow-two-primaries" && (w[1] == "yes" || w[1] == ";"));
    for n in &mut nodes {
        n.two_primaries = allows;
    }
    Ok((name, nodes))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct NodeState {
    md: bool,
    up: bool,
    primary: bool,
    /// Diskless (no metadata), Inconsistent, UpToDate or Outdated.
    disk: String,
    two_primaries: bool,
    open: bool,
    minor: u32,
    node_id: u32,
    /// Fencing: the policy, the handlers' file, this node's view of its peers.
    #[serde(default)]
    fence: fence::NodeFence,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Resync {
    source: String,
    start_ms: u64,
    duration_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ResState {
    nodes: BTreeMap<String, NodeState>,
    resync: Option<Resync>,
    /// How long a resync after a reconnection takes, loaded by the last `up` (as the kernel
    /// loads a resource's configuration): whoever then settles the state (another node's
    /// command, a hypervisor opening a device) starts it with this length, not its own.
    #[serde(default)]
    sync_ms: Option<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The simulator's view of one machine: the shared directory and this node's name.
pub struct Sim {
    pub dir: PathBuf,
    pub node: String,
    pub sync_ms: u64,
    /// The real drbdadm, to validate resource files with (as this node, without the kernel
    /// module: `Validation::WithoutKernel`), when installed.
    pub validator: Option<PathBuf>,
    /// Where this node's fence-peer/unfence-peer handlers run.
    pub handlers: Handlers,
    /// What runs instead of the configured handlers, if anything.
    pub stand_ins: StandIns,
}

impl Sim {
    /// The simulator of `node` in `dir` with the defaults: the default resync time, no
    /// validation by the real drbdadm, handlers run inline.
    pub fn new(dir: &Path, node: &str) -> Sim {
        Sim {
            dir: dir.into(),
            node: node.into(),
            sync_ms: DEFAULT_SYNC_MS,
            validator: None,
            handlers: Handlers::Inline,
            stand_ins: StandIns::default(),
        }
    }

    fn state_path(&self, res: &str) -> PathBuf {
        self.dir.join("drbd").join(format!("{res}.json"))
    }

    fn cut(&self, node: &str) -> bool {
        self.dir.join(format!("netcut-{node}")).exists()
    }

    /// Runs `f` on a resource's state under an exclusive lock, saving what it leaves.
    fn with_state<T>(&self, res: &str, f: impl FnOnce(&mut ResState) -> T) -> Result<T, String> {
        let file = StateFile::new(self.state_path(res));
        let locked = file.lock()?;
        let before = file.read_bytes()?;
        let mut state: ResState = match &before {
            Some(b) => serde_json::from_slice(b).map_err(|e| e.to_string())?,
            None => ResState::default(),
        };
        self.settle(&mut state);
        let out = f(&mut state);
        let after = serde_json::to_vec_pretty(&state).expect("serialize");
        // Reads (status, show) change nothing: no write.
        if before.as_ref() != Some(&after) {
            file.write_bytes(&locked, &after)?;
        }
        self.check_violations(res, &state);
        Ok(out)
    }

    fn connected(&self, s: &ResState, a: &str, b: &str) -> bool {
        let up = |n: &str| s.nodes.get(n).is_some_and(|x| x.up);
        up(a) && up(b) && !self.cut(a) && !self.cut(b)
    }

    /// Brings a resource's state to now: resyncs whose time is up, then fencing.
    fn settle(&self, s: &mut ResState) {
        self.settle_resync(s);
        self.settle_fencing(s);
    }

    /// Finishes a resync whose time is up (its targets become UpToDate).
    fn settle_resync(&self, s: &mut ResState) {
        let Some(r) = s.resync.clone() else { return };
        if now_ms() < r.start_ms + r.duration_ms {
            return;
        }
        let targets: Vec<String> = s
            .nodes
            .iter()
            .filter(|(n, x)| **n != r.source && x.disk == "Inconsistent")
            .map(|(n, _)| n.clone())
            .collect();
        for t in targets {
            if self.connected(s, &r.source, &t) {
                s.nodes.get_mut(&t).expect("listed").disk = "UpToDate".into();
            }
        }
        if !s.nodes.values().any(|x| x.disk == "Inconsistent") {
            s.resync = None;
        }
    }

    fn check_violations(&self, res: &str, s: &ResState) {
        let primaries: Vec<(&String, &NodeState)> = s.nodes.iter().filter(|(_, x)| x.primary && x.up).collect();
        if primaries.len() > 1 && !primaries.iter().all(|(_, x)| x.two_primaries) {
            let names: Vec<&str> = primaries.iter().map(|(n, _)| n.as_str()).collect();
            let line = format!(
                "{} drbd {res}: Primary on {} without allow-two-primaries\n",
                now_ms(),
                names.join(" and ")
            );
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("violations.log"))
            {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }

    /// `drbdadm -c FILE COMMAND [OPTIONS] RESOURCE`.
    pub fn drbdadm(&self, args: &[String]) -> Output {
        let (file, rest) = match args {
            [c, file, rest @ ..] if c == "-c" => (PathBuf::from(file), rest),
            _ => return fail(20, "omsim drbdadm: expected -c FILE COMMAND RESOURCE"),
        };
        let Some((res, cmd)) = rest.split_last() else {
            return fail(20, "omsim drbdadm: no command");
        };
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => return fail(10, format!("{}: {e}", file.display())),
        };
        let (name, file_nodes) = match parse_resource_file(&text) {
            Ok(x) => x,
            Err(e) => return fail(10, format!("{}: {e}", file.display())),
        };
        if &name != res {
            return fail(10, format!("'{res}' not defined in your config (for this host)."));
        }
        let Some(me) = file_nodes.iter().find(|n| n.name == self.node).cloned() else {
            return fail(10, format!("{}: no `on {}` section", file.display(), self.node));
        };
        if let Some(v) = &self.validator {
            let how = Validation::WithoutKernel { node: &self.node };
            if let Err(e) = check_with_drbdadm(v, &file, how) {
                return fail(10, e.to_string());
            }
        }
        let verb: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let node = self.node.clone();
        self.run_pending_handlers(res);
        if verb.first() == Some(&"primary") {
            if let Err(e) = self.fence_before_promote(res) {
                return fail(20, format!("omsim: state: {e}"));
            }
        }
        let result = self.with_state(res, |s| {
            for n in &file_nodes {
                let e = s.nodes.entry(n.name.clone()).or_insert_with(|| NodeState {
                    disk: "Diskless".into(),
                    ..Default::default()
                });
                e.minor = n.minor;
                e.node_id = n.node_id;
            }
            if verb == ["down"] && s.nodes.get(&node).is_some_and(|x| x.up && !x.open) {
                self.fence_leave(s, &node);
            }
            let r = self.apply(s, &node, &me, &verb);
            if r.is_ok() {
                self.fence_config(s, &node, &file, &text, &verb);
            }
            r
        });
        match result {
            Ok(Ok(())) => ok(String::new()),
            Ok(Err((code, msg))) => fail(code, msg),
            Err(e) => fail(20, format!("omsim: state: {e}")),
        }
    }

    fn apply(&self, s: &mut ResState, node: &str, me: &FileNode, verb: &[&str]) -> Result<(), (i32, String)> {
        let minor = me.minor;
        let refuse = |code: i32, why: &str| Err((code, format!("{minor}: State change failed: {why}")));
        let peers_primary_connected: Vec<String> = s
            .nodes
            .iter()
            .filter(|(n, x)| n.as_str() != node && x.primary && x.up && self.connected(s, node, n))
            .map(|(n, _)| n.clone())
            .collect();
        let mine = s.nodes.get(node).cloned().unwrap_or_default();
        match verb {
            ["create-md", "--force"] | ["create-md"] => {
                if mine.up {
                    return Err((10, format!("{minor}: Device is attached: down it first")));
                }
                let e = s.nodes.get_mut(node).expect("entry");
                e.md = true;
                e.disk = "Inconsistent".into();
                Self::fence_new_md(e);
                Ok(())
            }
            ["up"] => {
                if !mine.md {
                    return Err((10, format!("{minor}: No valid meta data found: run create-md first")));
                }
                let e = s.nodes.get_mut(node).expect("entry");
                // The running configuration starts as the file's: a reboot forgets what
                // `net-options` changed.
                e.two_primaries = me.two_primaries;
                e.up = true;
                s.sync_ms = Some(self.sync_ms);
                Ok(())
            }
            ["down"] => {
                if mine.open {
                    return refuse(11, "(-12) Device is held open by someone");
                }
                let e = s.nodes.get_mut(node).expect("entry");
                e.up = false;
                e.primary = false;
                e.two_primaries = false;
                Self::fence_down(e);
                Ok(())
            }
            ["primary", rest @ ..] => {
                let force = rest == ["--force"];
                if !mine.up {
                    return Err((10, format!("{minor}: resource is not up")));
                }
                if mine.disk != "UpToDate" && !force {
                    return refuse(11, "(-2) Need access to UpToDate data");
                }
                if !peers_primary_connected.is_empty() {
                    let both = mine.two_primaries && peers_primary_connected.iter().all(|p| s.nodes[p].two_primaries);
                    if !both {
                        return refuse(11, "(-1) Multiple primaries not allowed by config");
                    }
                }
                // fence-peer ran before (`fence_before_promote`); `--force` promotes anyway
                // ("Forced into split brain situation!").
                if !mine.primary && !force && !self.fence_unknown_peers(s, node).is_empty() {
                    return refuse(11, "(-7) Refusing to be Primary while peer is not outdated");
                }
                let initial = mine.disk != "UpToDate";
                let e = s.nodes.get_mut(node).expect("entry");
                e.primary = true;
                e.disk = "UpToDate".into();
                if initial && s.nodes.values().any(|x| x.disk == "Inconsistent") {
                    s.resync = Some(Resync {
                        source: node.into(),
                        start_ms: now_ms(),
                        duration_ms: self.sync_ms,
                    });
                }
                Ok(())
            }
            ["secondary"] => {
                if mine.open {
                    return refuse(11, "(-12) Device is held open by someone");
                }
                let e = s.nodes.get_mut(node).expect("entry");
                e.primary = false;
                Self::fence_demoted(e);
                Ok(())
            }
            ["net-options", opt] if opt.starts_with("--allow-two-primaries=") => {
                let yes = opt.ends_with("=yes");
                if !yes && mine.primary && !peers_primary_connected.is_empty() {
                    return Err((
                        10,
                        format!("{minor}: cannot disallow two primaries while the peer is Primary"),
                    ));
                }
                s.nodes.get_mut(node).expect("entry").two_primaries = yes;
                Ok(())
            }
            other => Err((20, format!("omsim drbdadm: unsupported command {other:?}"))),
        }
    }

    /// Marks the device open or closed (a simulated VM using it), as the kernel would.
    pub fn set_open(&self, res: &str, open: bool) -> Result<(), String> {
        let node = self.node.clone();
        self.with_state(res, |s| {
            if let Some(e) = s.nodes.get_mut(&node) {
                e.open = open;
            }
        })
    }

    /// Every simulated resource (its state file `SIM_DIR/drbd/RES.json`), sorted.
    fn resources(&self) -> Vec<String> {
        let entries = std::fs::read_dir(self.dir.join("drbd"))
            .map(|d| d.flatten().collect::<Vec<_>>())
            .unwrap_or_default();
        let mut names: Vec<String> = entries
            .iter()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// The resource whose device on this node has `minor`, if any.
    pub fn resource_of_minor(&self, minor: u32) -> Result<Option<String>, String> {
        for res in self.resources() {
            let node = self.node.clone();
            if self.with_state(&res, |s| s.nodes.get(&node).is_some_and(|x| x.up && x.minor == minor))? {
                return Ok(Some(res));
            }
        }
        Ok(None)
    }

    /// Pulls the plug on this node: every resource goes down here, as the kernel's state does.
    pub fn power_off(&self) -> Result<(), String> {
        let node = self.node.clone();
        for res in self.resources() {
            self.with_state(&res, |s| {
                if let Some(x) = s.nodes.get_mut(&node) {
                    x.up = false;
                    x.primary = false;
                    x.two_primaries = false;
                    x.open = false;
                    Self::fence_down(x);
                }
            })?;
        }
        Ok(())
    }

    /// Whether this node is Primary for `res`.
    pub fn is_primary(&self, res: &str) -> Result<bool, String> {
        let node = self.node.clone();
        self.with_state(res, |s| s.nodes.get(&node).is_some_and(|x| x.up && x.primary))
    }

    /// `drbdsetup status --json` (every resource up on this node) or `events2 --now`.
    pub fn drbdsetup(&self, args: &[String]) -> Output {
        if args.first().map(String::as_str) == Some("events2") && args.iter().any(|a| a == "--now") {
            return self.events_now();
        }
        if args.first().map(String::as_str) == Some("show") {
            return self.show(args.get(1).map(String::as_str));
        }
        if args.first().map(String::as_str) != Some("status") || !args.iter().any(|a| a == "--json") {
            return fail(
                20,
                "omsim drbdsetup: only `status --json`, `show` and `events2 --now` are simulated",
            );
        }
        let mut out = Vec::new();
        for res in self.resources() {
            self.run_pending_handlers(&res);
        }
        for res in self.resources() {
            let Ok(Some(v)) = self.with_state(&res, |s| self.status_json(&res, s)) else {
                continue;
            };
            out.push(v);
        }
        ok(serde_json::to_string_pretty(&out).expect("serialize") + "\n")
    }

    /// `drbdsetup show [RES]`: the running configuration of each resource up here, as DRBD
    /// prints it: a `connection` block per peer, with `allow-two-primaries yes` when set (the
    /// simulator keeps one setting per node, for all its connections).
    fn show(&self, only: Option<&str>) -> Output {
        let mut out = String::new();
        for res in self.resources().into_iter().filter(|r| only.is_none_or(|o| o == r)) {
            let node = self.node.clone();
            let Ok(Some(text)) = self.with_state(&res, |s| {
                let me = s.nodes.get(&node).filter(|x| x.up)?;
                let mut t = format!(
                    "resource \"{res}\" {{\n    _this_host {{\n        node-id\t\t\t{};\n    }}\n",
                    me.node_id
                );
                for (peer, p) in s.nodes.iter().filter(|(n, _)| **n != node) {
                    t += &format!(
                        "    connection {{\n        _peer_node_id {};\n        net {{\n",
                        p.node_id
                    );
                    if me.two_primaries {
                        t += "            allow-two-primaries\tyes;\n";
                    }
                    t += &format!("            _name               \t\"{peer}\";\n        }}\n    }}\n");
                }
                Some(t + "}\n")
            }) else {
                continue;
            };
            out += &text;
        }
        ok(out)
    }

    /// `events2 --now`, derived from the same JSON as `status`, in DRBD's line format.
    fn events_now(&self) -> Output {
        let st = self.drbdsetup(&["status".into(), "--json".into()]);
        let Ok(resources) = crate::drivers::drbd::status::parse_status(&st.stdout) else {
            return st;
        };
        let mut out = String::new();
        for r in resources {
            let yes_no = |b: bool| if b { "yes" } else { "no" };
            out += &format!(
                "exists resource name:{} role:{} suspended:{}\n",
                r.name,
                r.role,
                yes_no(r.suspended)
            );
            for d in &r.devices {
                out += &format!(
                    "exists device name:{} volume:{} minor:{} disk:{}\n",
                    r.name, d.volume, d.minor, d.disk_state
                );
            }
            for c in &r.connections {
                out += &format!(
                    "exists connection name:{} peer-node-id:{} conn-name:{} connection:{} role:{}\n",
                    r.name, c.peer_node_id, c.name, c.connection_state, c.peer_role
                );
                for p in &c.peer_devices {
                    out += &format!(
                        "exists peer-device name:{} peer-node-id:{} conn-name:{} volume:{} replication:{} peer-disk:{}\n",
                        r.name, c.peer_node_id, c.name, p.volume, p.replication_state, p.peer_disk_state
                    );
                }
            }
        }
        out += "exists -\n";
        ok(out)
    }

    fn status_json(&self, res: &str, s: &ResState) -> Option<serde_json::Value> {
        let me = s.nodes.get(&self.node).filter(|x| x.up)?;
        let progress = s.resync.as_ref().map(|r| {
            let done = now_ms().saturating_sub(r.start_ms) as f64 / r.duration_ms.max(1) as f64;
            (r.source.clone(), (done * 100.0).min(99.99))
        });
        let connections: Vec<serde_json::Value> = s
            .nodes
            .iter()
            .filter(|(n, _)| **n != self.node)
            .map(|(n, peer)| {
                let connected = self.connected(s, &self.node, n);
                let (repl, pct, done) = match (&progress, connected) {
                    (Some((src, p)), true) if *src == self.node && peer.disk == "Inconsistent" => ("SyncSource", *p, Some(*p)),
                    (Some((src, p)), true) if src == n && me.disk == "Inconsistent" => ("SyncTarget", *p, Some(*p)),
                    (_, true) => ("Established", 100.0, None),
                    (_, false) => ("Off", 0.0, None),
                };
                let mut pd = serde_json::json!({
                    "volume": 0,
                    "replication-state": repl,
                    "peer-disk-state": if connected { peer.disk.clone() } else { Self::fence_peer_disk(s, &self.node, n) },
                    "percent-in-sync": pct,
                });
                if let Some(d) = done {
                    pd["percent-resync-done"] = serde_json::json!(d);
                }
                serde_json::json!({
                    "peer-node-id": peer.node_id,
                    "name": n,
                    "connection-state": if connected { "Connected" } else if self.cut(&self.node) || self.cut(n) { "Connecting" } else { "StandAlone" },
                    "peer-role": if connected { if peer.primary { "Primary" } else { "Secondary" } } else { "Unknown" },
                    "peer_devices": [pd],
                })
            })
            .collect();
        Some(serde_json::json!({
            "name": res,
            "node-id": me.node_id,
            "role": if me.primary { "Primary" } else { "Secondary" },
            "suspended": Self::fence_suspended(s, &self.node),
            "devices": [{"volume": 0, "minor": me.minor, "disk-state": me.disk, "open": me.open, "quorum": true, "size": 0}],
            "connections": connections,
        }))
    }
}

/// The simulator for `node` in `dir` as the `omsim` command runs it: the initial resync's
/// length from `OMRAFT_SIM_SYNC_MS` (its environment, set by whoever starts `omd`), the real
/// drbdadm as validator when installed.
pub fn from_env(dir: &Path, node: &str) -> Sim {
    let real = Path::new("/usr/sbin/drbdadm");
    Sim {
        sync_ms: std::env::var("OMRAFT_SIM_SYNC_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_SYNC_MS),
        validator: real.exists().then(|| real.into()),
        ..Sim::new(dir, node)
    }
}

/// The environment the real DRBD driver gives `omsim` for node `node` of the simulators in
/// `dir`: `OMRAFT_SIM_DIR` and `__DRBD_NODE__` (named after drbdadm's own override).
pub fn omsim_env(dir: &Path, node: &str) -> Vec<(String, String)> {
    vec![
        ("OMRAFT_SIM_DIR".into(), dir.display().to_string()),
        ("__DRBD_NODE__".into(), node.into()),
    ]
}

/// Runs `omsim drbdadm|drbdsetup ...` invocations in this process, as node `node`: the real
/// DRBD driver builds the command lines and parses the output, without a process per command
/// (in-process test clusters).
pub struct SimRunner {
    pub dir: PathBuf,
    pub node: String,
    pub sync_ms: u64,
    pub stand_ins: StandIns,
}

impl crate::drivers::run::Runner for SimRunner {
    fn run(
        &self,
        inv: &crate::drivers::run::Invocation,
    ) -> Result<crate::drivers::run::Finished, crate::drivers::run::RunError> {
        let sim = Sim {
            sync_ms: self.sync_ms,
            stand_ins: self.stand_ins.clone(),
            ..Sim::new(&self.dir, &self.node)
        };
        let out = match inv.args.split_first() {
            Some((t, rest)) if t == "drbdadm" => sim.drbdadm(rest),
            Some((t, rest)) if t == "drbdsetup" => sim.drbdsetup(rest),
            _ => fail(20, format!("omsim: cannot run {}", inv.display())),
        };
        Ok(crate::drivers::run::Finished {
            code: Some(out.code),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}
