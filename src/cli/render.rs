//! omctl's one printer: human output shaped like the tutorial's, or JSON from the view
//! structs below (never from protobuf types).

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};

use serde::Serialize;

use super::Output;
use crate::pb;

pub struct Printer {
    format: Output,
    out: BufWriter<Box<dyn Write + Send>>,
    error: Option<std::io::Error>,
}

#[derive(Serialize)]
struct TokenView<'a> {
    token: &'a str,
    expires_unix: u64,
}

#[derive(Serialize)]
struct JoinView<'a> {
    node_id: u64,
    steps: &'a [String],
}

#[derive(Serialize)]
struct CommittedView {
    committed: bool,
    log_index: u64,
}

#[derive(Serialize)]
struct ValueView<'a> {
    value: &'a str,
}

#[derive(Serialize)]
struct OrchestrationView<'a> {
    object: &'a str,
    orchestration_id: &'a str,
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct FenceView<'a> {
    resource: &'a str,
    peer: &'a str,
    /// Marked outdated (fence-peer) or up to date (unfence-peer).
    outdated: bool,
    /// Whether a change was committed (false: it already was so).
    committed: bool,
    log_index: u64,
}

#[derive(Serialize)]
struct InstanceLsView<'a> {
    object: &'a str,
    node: &'a str,
    avail: &'a str,
}

#[derive(Serialize)]
struct ResourceStatusView<'a> {
    rid: &'a str,
    avail: &'a str,
    label: &'a str,
    messages: &'a [String],
}

#[derive(Serialize)]
struct InstanceStatusView<'a> {
    node: &'a str,
    reported: bool,
    avail: &'a str,
    warn: bool,
    provisioned: bool,
    /// The node is frozen: nothing is placed on it automatically.
    frozen: bool,
    /// The node is drained: frozen, with no service placed on it.
    drained: bool,
    /// DRBD resources a peer's fence-peer marked outdated here.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    outdated: &'a [String],
    resources: Vec<ResourceStatusView<'a>>,
}

/// A switch or live switch in progress.
#[derive(Serialize)]
struct SwitchView<'a> {
    from: &'a str,
    to: &'a str,
    phase: &'a str,
    /// Why it is being aborted (phase Abort).
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct StatusView<'a> {
    path: &'a str,
    provisioned: bool,
    placement: &'a str,
    started: bool,
    /// The service is frozen: the orchestrator moves nothing.
    frozen: bool,
    epoch: u64,
    /// The switch in progress, if any.
    switch: Option<SwitchView<'a>>,
    /// What the cluster does or waits for on this service, e.g. "live switch to n2: phase
    /// Migrating: waiting for n1 to live-migrate the guest"; null when nothing is pending.
    pending_action: Option<&'a str>,
    /// Why the last switch was aborted; null when it succeeded or there was none.
    last_switch_error: Option<&'a str>,
    instances: Vec<InstanceStatusView<'a>>,
}

/// One event of `omctl events -o json`, a line of its own.
#[derive(Serialize)]
struct EventView<'a> {
    index: u64,
    /// When the daemon applied its entry, UTC.
    time: String,
    unix_ms: u64,
    kind: &'a str,
    service: Option<&'a str>,
    node: Option<&'a str>,
    peer: Option<&'a str>,
    phase: Option<&'a str>,
    message: &'a str,
}

/// `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc(unix_ms: u64) -> String {
    let (days, ms) = (unix_ms / 86_400_000, unix_ms % 86_400_000);
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, sec, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}.{milli:03}Z")
}

fn some(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

impl<'a> From<&'a pb::InstanceStatusReply> for StatusView<'a> {
    fn from(s: &'a pb::InstanceStatusReply) -> Self {
        StatusView {
            path: &s.path,
            provisioned: s.provisioned,
            placement: &s.placement,
            started: s.started,
            frozen: s.frozen,
            epoch: s.epoch,
            switch: some(&s.migration_phase).map(|phase| SwitchView {
                from: &s.migration_from,
                to: &s.migration_to,
                phase,
                error: some(&s.migration_error),
            }),
            pending_action: some(&s.pending_action),
            last_switch_error: some(&s.last_migration_error),
            instances: s
                .instances
                .iter()
                .map(|i| InstanceStatusView {
                    node: &i.node,
                    reported: i.reported,
                    avail: &i.avail,
                    warn: i.warn,
                    provisioned: i.provisioned,
                    frozen: i.node_frozen,
                    drained: i.node_drained,
                    outdated: &i.outdated,
                    resources: i
                        .resources
                        .iter()
                        .map(|r| ResourceStatusView {
                            rid: &r.rid,
                            avail: &r.avail,
                            label: &r.label,
                            messages: &r.messages,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct BytesView<'a> {
    bytes: &'a [u8],
}

#[derive(Serialize)]
struct ObjectView<'a> {
    path: &'a str,
    kind: &'a str,
}

#[derive(Serialize)]
struct DocView<'a> {
    section: &'a str,
    keyword: &'a str,
    kind: &'a str,
    default: Option<&'a str>,
    readonly: bool,
    required: bool,
    doc: &'a str,
}

impl<'a> From<&'a pb::KeywordDoc> for DocView<'a> {
    fn from(k: &'a pb::KeywordDoc) -> Self {
        DocView {
            section: &k.section,
            keyword: &k.keyword,
            kind: &k.kind,
            default: k.default_value.as_deref(),
            readonly: k.readonly,
            required: k.required,
            doc: &k.doc,
        }
    }
}

#[derive(Serialize)]
struct PoolView<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    node: &'a str,
    name: &'a str,
    r#type: &'a str,
    capabilities: Vec<&'a str>,
    head: &'a str,
    volume_count: u64,
    size: u64,
    used: u64,
    free: u64,
}

impl<'a> From<&'a pb::PoolRow> for PoolView<'a> {
    fn from(p: &'a pb::PoolRow) -> Self {
        PoolView {
            node: &p.node,
            name: &p.name,
            r#type: &p.r#type,
            capabilities: p.capabilities.split(',').collect(),
            head: &p.head,
            volume_count: p.volume_count,
            size: p.size,
            used: p.used,
            free: p.free,
        }
    }
}

#[derive(Serialize)]
struct DeviceView<'a> {
    object: &'a str,
    resource: &'a str,
    driver_group: &'a str,
    role: &'a str,
    device: &'a str,
}

impl<'a> From<&'a pb::DeviceRow> for DeviceView<'a> {
    fn from(d: &'a pb::DeviceRow) -> Self {
        DeviceView {
            object: &d.object,
            resource: &d.resource,
            driver_group: &d.driver_group,
            role: &d.role,
            device: &d.device,
        }
    }
}

#[derive(Serialize)]
struct ClientCertView<'a> {
    dir: &'a str,
    fingerprint: &'a str,
}

#[derive(Serialize)]
struct RotatedView {
    generation: u64,
}

#[derive(Serialize)]
struct RemovedView<'a> {
    removed: &'a str,
    node_id: u64,
}

#[derive(Serialize)]
struct LinkView<'a> {
    node: &'a str,
    peer: &'a str,
    direction: &'a str,
    running: bool,
    beating: bool,
    last_ack_ms: Option<u64>,
    match_index: Option<u64>,
}

#[derive(Serialize)]
struct NodeView<'a> {
    name: &'a str,
    node_id: u64,
    addr: &'a str,
    witness: bool,
    membership: &'a str,
    reachable: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    error: &'a str,
    uptime_secs: Option<u64>,
    raft_role: Option<&'a str>,
    leader: Option<&'a str>,
    term: Option<u64>,
    applied_index: Option<u64>,
    last_log_index: Option<u64>,
    /// Nothing is placed on it automatically.
    frozen: bool,
    /// Services placed on it.
    placed: u64,
    /// Frozen with no service placed on it.
    drained: bool,
}

#[derive(Serialize)]
struct DrainView<'a> {
    node: &'a str,
    /// Every service moved: the node is frozen with nothing placed on it.
    drained: bool,
    moved: Vec<MovedView<'a>>,
    /// The services still placed on the node (the drain stopped).
    left: &'a [&'a str],
}

#[derive(Serialize)]
struct MovedView<'a> {
    path: &'a str,
    to: &'a str,
    /// switch or live-switch.
    how: &'a str,
}

#[derive(Serialize)]
struct MonView<'a> {
    cluster: &'a str,
    queried: &'a str,
    nodes: Vec<NodeView<'a>>,
    summary: MonSummaryView<'a>,
    objects: Vec<MonObjectView<'a>>,
}

/// The services a `mon` counted; `next_after` is null on the last page.
#[derive(Serialize)]
struct MonSummaryView<'a> {
    services: u64,
    matching: u64,
    up: u64,
    warn: u64,
    down: u64,
    next_after: Option<&'a str>,
}

impl<'a> From<&'a pb::MonSummary> for MonSummaryView<'a> {
    fn from(s: &'a pb::MonSummary) -> Self {
        MonSummaryView {
            services: s.services,
            matching: s.matching,
            up: s.up,
            warn: s.warn,
            down: s.down,
            next_after: (!s.next_after.is_empty()).then_some(s.next_after.as_str()),
        }
    }
}

#[derive(Serialize)]
struct MonObjectView<'a> {
    path: &'a str,
    orchestrate: &'a str,
    avail: &'a std::collections::HashMap<String, String>,
}

impl<'a> From<&'a pb::Link> for LinkView<'a> {
    fn from(l: &'a pb::Link) -> Self {
        LinkView {
            node: &l.node,
            peer: &l.peer,
            direction: &l.direction,
            running: l.running,
            beating: l.beating,
            last_ack_ms: l.last_ack_ms,
            match_index: l.match_index,
        }
    }
}

impl<'a> From<&'a pb::MonNode> for NodeView<'a> {
    fn from(n: &'a pb::MonNode) -> Self {
        let s = n.status.as_ref();
        NodeView {
            name: &n.name,
            node_id: n.node_id,
            addr: &n.addr,
            witness: n.witness,
            membership: &n.membership,
            reachable: n.reachable,
            error: &n.error,
            uptime_secs: s.map(|s| s.uptime_secs),
            raft_role: s.map(|s| s.raft_role.as_str()),
            leader: s.map(|s| s.leader_name.as_str()).filter(|l| !l.is_empty()),
            term: s.map(|s| s.term),
            applied_index: s.and_then(|s| s.applied_index),
            last_log_index: s.and_then(|s| s.last_log_index),
            frozen: n.frozen,
            placed: n.placed,
            drained: drained(n),
        }
    }
}

/// A data node frozen with no service placed on it (`node drain` leaves it so).
fn drained(n: &pb::MonNode) -> bool {
    n.frozen && n.placed == 0
}

/// `45s`, `3m23`, `2h05`, `3d04`: the tutorial's uptime style.
pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}", s / 86400, (s % 86400) / 3600),
    }
}

fn ack(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 10_000 => format!("{ms}ms"),
        Some(ms) => human_duration(ms / 1000),
    }
}

fn flag(b: bool) -> &'static str {
    if b {
        "O"
    } else {
        "X"
    }
}

/// Columns padded to their widest cell, two spaces apart, as the tutorial's tables.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s.push_str(c);
            s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// A frame of `om mon`: a title row with node names, then `label | value value ...` rows.
fn frame(title: &str, names: &[&str], rows: &[(&str, Vec<String>)]) -> String {
    let longest = rows.iter().map(|(l, _)| l.chars().count() + 1).max().unwrap_or(0);
    let label_w = 14usize.max(title.len() + 2).max(longest);
    let mut col_w: Vec<usize> = names.iter().map(|n| n.len()).collect();
    for (_, vals) in rows {
        for (i, v) in vals.iter().enumerate() {
            col_w[i] = col_w[i].max(v.chars().count());
        }
    }
    let mut s = format!("{title:<label_w$}  ");
    for (i, n) in names.iter().enumerate() {
        s.push_str(&format!("{n:<w$}  ", w = col_w[i]));
    }
    s = s.trim_end().to_string() + "\n";
    for (label, vals) in rows {
        let mut line = format!(" {label:<w$}| ", w = label_w);
        for (i, v) in vals.iter().enumerate() {
            line.push_str(&format!("{v:<w$}  ", w = col_w[i]));
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

impl Printer {
    pub fn new(format: Output) -> Printer {
        Printer::to(format, Box::new(std::io::stdout()))
    }

    /// A printer writing to `out` (tests capture omctl's output this way).
    pub fn to(format: Output, out: Box<dyn Write + Send>) -> Printer {
        Printer {
            format,
            out: BufWriter::new(out),
            error: None,
        }
    }

    fn write(&mut self, s: &str) {
        if self.error.is_none() {
            if let Err(e) = self.out.write_all(s.as_bytes()) {
                self.error = Some(e);
            }
        }
    }

    fn json<T: Serialize>(&mut self, v: &T) {
        let s = serde_json::to_string_pretty(v).expect("views serialize");
        self.write(&(s + "\n"));
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    pub fn finish(mut self) -> std::io::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.flush()
    }

    pub fn set_format(&mut self, format: Output) {
        self.format = format;
    }

    /// A committed change that prints nothing in human form (as the tutorial's create).
    pub fn quiet_commit(&mut self, log_index: u64) {
        if self.format == Output::Json {
            self.json(&CommittedView {
                committed: true,
                log_index,
            });
        }
    }

    pub fn key_set(&mut self, path: &str, key: &str, log_index: u64) {
        match self.format {
            Output::Human => self.write(&format!("{path}: set key {key}\n")),
            Output::Json => self.json(&CommittedView {
                committed: true,
                log_index,
            }),
        }
    }

    pub fn names(&mut self, names: &[String]) {
        match self.format {
            Output::Human => self.write(&names.iter().map(|n| format!("{n}\n")).collect::<String>()),
            Output::Json => self.json(&names),
        }
    }

    /// A key's value as stored (JSON: as text when it is UTF-8, else as bytes).
    pub fn raw(&mut self, value: &[u8]) {
        match self.format {
            Output::Human => {
                if self.error.is_none() {
                    if let Err(e) = self.out.write_all(value) {
                        self.error = Some(e);
                    }
                }
            }
            Output::Json => match std::str::from_utf8(value) {
                Ok(text) => self.json(&ValueView { value: text }),
                Err(_) => self.json(&BytesView { bytes: value }),
            },
        }
    }

    pub fn doc(&mut self, r: &pb::ObjectConfigDocReply) {
        if self.format == Output::Json {
            let view: Vec<DocView> = r.keywords.iter().map(DocView::from).collect();
            return self.json(&view);
        }
        let mut text = String::new();
        for k in &r.keywords {
            let mut flags = vec![format!("type: {}", k.kind)];
            if let Some(d) = &k.default_value {
                flags.push(format!("default: {d}"));
            }
            if k.required {
                flags.push("required".into());
            }
            if k.readonly {
                flags.push("set by the cluster".into());
            }
            text.push_str(&format!(
                "[{}] {}\n  {}\n  {}\n\n",
                k.section,
                k.keyword,
                flags.join(", "),
                k.doc
            ));
        }
        self.write(&text);
    }

    pub fn objects(&mut self, r: &pb::ObjectListReply) {
        if self.format == Output::Json {
            let view: Vec<ObjectView> = r
                .objects
                .iter()
                .map(|o| ObjectView {
                    path: &o.path,
                    kind: &o.kind,
                })
                .collect();
            return self.json(&view);
        }
        let rows: Vec<Vec<String>> = r.objects.iter().map(|o| vec![o.path.clone(), o.kind.clone()]).collect();
        self.write(&table(&["OBJECT", "KIND"], &rows));
    }

    pub fn pools(&mut self, r: &pb::PoolListReply, per_node: bool) {
        if self.format == Output::Json {
            let view: Vec<PoolView> = r.pools.iter().map(PoolView::from).collect();
            return self.json(&view);
        }
        let size = crate::config::kind::format_size;
        let rows: Vec<Vec<String>> = r
            .pools
            .iter()
            .map(|p| {
                let mut row = vec![
                    p.name.clone(),
                    p.r#type.clone(),
                    p.capabilities.clone(),
                    p.head.clone(),
                    p.volume_count.to_string(),
                    size(p.size),
                    size(p.used),
                    size(p.free),
                ];
                if per_node {
                    row.insert(0, p.node.clone());
                }
                row
            })
            .collect();
        let mut headers = vec![
            "NAME",
            "TYPE",
            "CAPABILITIES",
            "HEAD",
            "VOLUME_COUNT",
            "BIN_SIZE",
            "BIN_USED",
            "BIN_FREE",
        ];
        if per_node {
            headers.insert(0, "NODE");
        }
        self.write(&table(&headers, &rows));
    }

    pub fn devices(&mut self, r: &pb::DeviceListReply) {
        if self.format == Output::Json {
            let view: Vec<DeviceView> = r.devices.iter().map(DeviceView::from).collect();
            return self.json(&view);
        }
        let rows: Vec<Vec<String>> = r
            .devices
            .iter()
            .map(|d| {
                vec![
                    d.object.clone(),
                    d.resource.clone(),
                    d.driver_group.clone(),
                    d.driver_name.clone(),
                    d.role.clone(),
                    d.device.clone(),
                ]
            })
            .collect();
        self.write(&table(
            &["OBJECT", "RESOURCE", "DRIVER_GROUP", "DRIVER_NAME", "ROLE", "DEVICE"],
            &rows,
        ));
    }

    pub fn state_only(&mut self, path: &str, node: &str, log_index: u64) {
        match self.format {
            Output::Human => {
                let id = crate::model::objects::derived_uuid(&format!("{path}@{log_index}"));
                self.write(&table(
                    &["OBJECT", "NODE", "SID"],
                    &[vec![path.into(), node.into(), id]],
                ));
            }
            Output::Json => self.json(&CommittedView {
                committed: true,
                log_index,
            }),
        }
    }

    /// A step of a longer command, as it happens (human output only: JSON gets the result).
    pub fn progress(&mut self, line: &str) {
        if self.format == Output::Human {
            self.write(&format!("{line}\n"));
            let _ = self.flush();
        }
    }

    /// What `node drain` moved (service, to, how) and what it left on the node.
    pub fn drained(&mut self, node: &str, moved: &[(String, String, &str)], left: &[&str]) {
        match self.format {
            Output::Human if left.is_empty() => self.write(&format!(
                "node {node} drained: {} services moved, frozen\n",
                moved.len()
            )),
            Output::Human => {}
            Output::Json => self.json(&DrainView {
                node,
                drained: left.is_empty(),
                moved: moved
                    .iter()
                    .map(|(path, to, how)| MovedView { path, to, how })
                    .collect(),
                left,
            }),
        }
    }

    /// `OBJECT ORCHESTRATION_ID ERROR`, as the tutorial's provision and switch print.
    pub fn orchestration(&mut self, path: &str, id: &str, error: Option<&str>) {
        match self.format {
            Output::Human => {
                let row = vec![path.into(), id.into(), error.unwrap_or("-").into()];
                self.write(&table(&["OBJECT", "ORCHESTRATION_ID", "ERROR"], &[row]));
            }
            Output::Json => self.json(&OrchestrationView {
                object: path,
                orchestration_id: id,
                error,
            }),
        }
    }

    /// What a DRBD fence-peer (`outdated`) or unfence-peer handler had the cluster record.
    pub fn fence(&mut self, resource: &str, peer: &str, outdated: bool, unchanged: bool, log_index: u64) {
        match self.format {
            Output::Human => {
                let what = if outdated { "outdated" } else { "up to date" };
                let how = if unchanged {
                    "already so".to_string()
                } else {
                    format!("committed at log index {log_index}")
                };
                self.write(&format!("{resource}: {peer} {what} ({how})\n"));
            }
            Output::Json => self.json(&FenceView {
                resource,
                peer,
                outdated,
                committed: !unchanged,
                log_index,
            }),
        }
    }

    pub fn instances(&mut self, s: &pb::InstanceStatusReply) {
        if self.format == Output::Json {
            let view: Vec<InstanceLsView> = s
                .instances
                .iter()
                .map(|i| InstanceLsView {
                    object: &s.path,
                    node: &i.node,
                    avail: &i.avail,
                })
                .collect();
            return self.json(&view);
        }
        let rows: Vec<Vec<String>> = s
            .instances
            .iter()
            .map(|i| vec![s.path.clone(), i.node.clone(), i.avail.clone()])
            .collect();
        self.write(&table(&["OBJECT", "NODE", "AVAIL"], &rows));
    }

    /// The tutorial's `instance status -r` tree.
    pub fn status_tree(&mut self, s: &pb::InstanceStatusReply, recursive: bool) {
        if self.format == Output::Json {
            return self.json(&StatusView::from(s));
        }
        let placed = s.instances.iter().find(|i| i.node == s.placement);
        let avail = placed.map_or("down", |p| {
            if p.avail == "up" || p.avail == "warn" {
                "up"
            } else {
                "down"
            }
        });
        let warn = s.instances.iter().any(|i| i.warn);
        let line =
            |name: &str, avail: &str, rest: &str| format!("{name:<33}{avail:<6}{rest}").trim_end().to_string() + "\n";
        let flags: Vec<&str> = [(warn, "warn"), (s.frozen, "frozen")]
            .into_iter()
            .filter_map(|(on, flag)| on.then_some(flag))
            .collect();
        let mut t = line(&s.path, avail, &flags.join(" "));
        if !s.pending_action.is_empty() {
            t.push_str(&format!("  pending: {}\n", s.pending_action));
        }
        if recursive {
            t.push_str("└ instances\n");
            // The node holding the service last, as the tutorial shows it.
            let mut order: Vec<&pb::InstanceView> = s.instances.iter().filter(|i| i.node != s.placement).collect();
            order.extend(placed);
            for (n, i) in order.iter().enumerate() {
                let last = n + 1 == order.len();
                let mut flags = Vec::new();
                if i.warn {
                    flags.push("warn");
                }
                if s.provisioned && i.reported && !i.provisioned {
                    flags.push("not-provisioned");
                }
                if s.frozen || i.node_frozen {
                    flags.push("frozen");
                }
                if i.node_drained {
                    flags.push("drained");
                }
                if !i.outdated.is_empty() {
                    flags.push("outdated");
                }
                flags.push("idle");
                if i.node == s.placement && s.started {
                    flags.push("started");
                }
                let avail = if i.avail == "warn" {
                    "up"
                } else if i.avail == "n/a" {
                    "n/a"
                } else {
                    i.avail.as_str()
                };
                t.push_str(&line(
                    &format!("  {} {}", if last { "└" } else { "├" }, i.node),
                    avail,
                    &flags.join(" "),
                ));
                if i.avail == "down" || i.resources.is_empty() || !i.reported {
                    continue;
                }
                let bar = if last { " " } else { "│" };
                t.push_str(&format!("  {bar} └ resources\n"));
                for (k, r) in i.resources.iter().enumerate() {
                    let branch = if k + 1 == i.resources.len() { "└" } else { "├" };
                    let name = format!("  {bar}   {branch} {:<15}........", r.rid);
                    t.push_str(&line(&name, &r.avail, &r.label));
                    for m in &r.messages {
                        let kind = if m.contains("failed") { "error" } else { "warn" };
                        t.push_str(&format!("{:39}{kind}: {m}\n", ""));
                    }
                }
            }
        }
        self.write(&t);
    }

    /// One event: a line (human), or a JSON object on a line of its own.
    pub fn event(&mut self, e: &pb::Event) {
        match self.format {
            Output::Human => self.write(&format!(
                "{:>8}  {}  {:<14} {}\n",
                e.index,
                utc(e.unix_ms),
                e.kind,
                e.message
            )),
            Output::Json => {
                let view = EventView {
                    index: e.index,
                    time: utc(e.unix_ms),
                    unix_ms: e.unix_ms,
                    kind: &e.kind,
                    service: some(&e.service),
                    node: some(&e.node),
                    peer: some(&e.peer),
                    phase: some(&e.phase),
                    message: &e.message,
                };
                let line = serde_json::to_string(&view).expect("views serialize");
                self.write(&(line + "\n"));
            }
        }
    }

    pub fn clear_screen(&mut self) {
        self.write("\x1b[2J\x1b[H");
    }

    pub fn token(&mut self, r: &pb::IssueTokenReply) {
        match self.format {
            Output::Human => self.write(&format!("{}\n", r.token)),
            Output::Json => self.json(&TokenView {
                token: &r.token,
                expires_unix: r.expires_unix,
            }),
        }
    }

    pub fn joined(&mut self, r: &pb::JoinReply) {
        match self.format {
            Output::Human => self.write(&r.steps.iter().map(|s| format!("{s}\n")).collect::<String>()),
            Output::Json => self.json(&JoinView {
                node_id: r.node_id,
                steps: &r.steps,
            }),
        }
    }

    pub fn committed(&mut self, log_index: u64) {
        match self.format {
            Output::Human => self.write("committed\n"),
            Output::Json => self.json(&CommittedView {
                committed: true,
                log_index,
            }),
        }
    }

    pub fn value(&mut self, value: &str) {
        match self.format {
            Output::Human => self.write(&format!("{value}\n")),
            Output::Json => self.json(&ValueView { value }),
        }
    }

    pub fn client_cert(&mut self, dir: &std::path::Path, fingerprint: &str) {
        match self.format {
            Output::Human => self.write(&format!(
                "client certificate {fingerprint} written to {} (use --cert {})\n",
                dir.display(),
                dir.display()
            )),
            Output::Json => self.json(&ClientCertView {
                dir: &dir.display().to_string(),
                fingerprint,
            }),
        }
    }

    pub fn rotated(&mut self, generation: u64) {
        match self.format {
            Output::Human => self.write(&format!(
                "token signing key rotated (generation {generation}): every token minted before is invalid\n"
            )),
            Output::Json => self.json(&RotatedView { generation }),
        }
    }

    pub fn removed(&mut self, name: &str, node_id: u64) {
        match self.format {
            Output::Human => self.write(&format!("removed {name} (node id {node_id})\n")),
            Output::Json => self.json(&RemovedView { removed: name, node_id }),
        }
    }

    pub fn ini(&mut self, r: &pb::ConfigShowReply) {
        match self.format {
            Output::Human => {
                let text: Vec<String> = r
                    .sections
                    .iter()
                    .map(|s| {
                        let mut t = format!("[{}]\n", s.name);
                        for kv in &s.values {
                            t.push_str(&format!("{} = {}\n", kv.key, kv.value));
                        }
                        t
                    })
                    .collect();
                self.write(&text.join("\n"));
            }
            Output::Json => {
                let view: BTreeMap<&str, BTreeMap<&str, &str>> = r
                    .sections
                    .iter()
                    .map(|s| {
                        (
                            s.name.as_str(),
                            s.values.iter().map(|kv| (kv.key.as_str(), kv.value.as_str())).collect(),
                        )
                    })
                    .collect();
                self.json(&view);
            }
        }
    }

    pub fn mon(&mut self, r: &pb::MonReply) {
        let no_summary = pb::MonSummary::default();
        let summary = r.summary.as_ref().unwrap_or(&no_summary);
        if self.format == Output::Json {
            let view = MonView {
                cluster: &r.cluster_name,
                queried: &r.queried,
                nodes: r.nodes.iter().map(NodeView::from).collect(),
                summary: summary.into(),
                objects: r
                    .objects
                    .iter()
                    .map(|o| MonObjectView {
                        path: &o.path,
                        orchestrate: &o.orchestrate,
                        avail: &o.avail,
                    })
                    .collect(),
            };
            return self.json(&view);
        }
        let names: Vec<&str> = r.nodes.iter().map(|n| n.name.as_str()).collect();
        let col = |f: &dyn Fn(&pb::MonNode, &pb::NodeStatus) -> String| -> Vec<String> {
            r.nodes
                .iter()
                .map(|n| n.status.as_ref().map(|s| f(n, s)).unwrap_or_else(|| "-".into()))
                .collect()
        };
        let reach: Vec<String> = r
            .nodes
            .iter()
            .map(|n| if n.reachable { "O".into() } else { "X".into() })
            .collect();
        let daemon = frame(
            "Daemon",
            &names,
            &[
                ("uptime", col(&|_, s| human_duration(s.uptime_secs))),
                ("reachable", reach),
                ("raft role", col(&|_, s| s.raft_role.clone())),
                (
                    "leader",
                    col(&|_, s| {
                        if s.leader_name.is_empty() {
                            "-".into()
                        } else {
                            s.leader_name.clone()
                        }
                    }),
                ),
                ("term", col(&|_, s| s.term.to_string())),
                (
                    "lease",
                    col(&|n, s| match s.lease_ms {
                        Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
                        None if n.witness => "-".into(),
                        None => "none".into(),
                    }),
                ),
                (
                    "applied",
                    col(&|_, s| s.applied_index.map(|i| i.to_string()).unwrap_or_else(|| "-".into())),
                ),
            ],
        );
        let nodes = frame(
            "Nodes",
            &names,
            &[
                ("id", r.nodes.iter().map(|n| n.node_id.to_string()).collect()),
                ("address", r.nodes.iter().map(|n| n.addr.clone()).collect()),
                ("membership", r.nodes.iter().map(|n| n.membership.clone()).collect()),
                (
                    "role",
                    r.nodes
                        .iter()
                        .map(|n| if n.witness { "witness".into() } else { "data".into() })
                        .collect(),
                ),
                // open: services may be placed here; frozen: none is placed automatically;
                // drained: frozen, and none is placed here.
                (
                    "placement",
                    r.nodes
                        .iter()
                        .map(|n| {
                            match (n.witness, n.frozen) {
                                (true, _) => "-",
                                _ if drained(n) => "drained",
                                (false, true) => "frozen",
                                (false, false) => "open",
                            }
                            .into()
                        })
                        .collect(),
                ),
                (
                    "services",
                    r.nodes
                        .iter()
                        .map(|n| if n.witness { "-".into() } else { n.placed.to_string() })
                        .collect(),
                ),
            ],
        );
        // Each node's reported instance avail; "-" where the node reported nothing.
        let object_rows: Vec<(&str, Vec<String>)> = r
            .objects
            .iter()
            .map(|o| {
                (
                    o.path.as_str(),
                    names
                        .iter()
                        .map(|n| o.avail.get(*n).cloned().unwrap_or_else(|| "-".into()))
                        .collect(),
                )
            })
            .collect();
        let objects = frame("Objects ~ *", &names, &object_rows);
        let filtered = if summary.matching == summary.services {
            String::new()
        } else {
            format!(", {} matching the filter", summary.matching)
        };
        let mut text = format!(
            "Cluster {} (queried {})\n\n{daemon}\n{nodes}\nServices: {}{filtered}: {} up, {} warn, {} down\n\n{objects}",
            r.cluster_name, r.queried, summary.services, summary.up, summary.warn, summary.down
        );
        if !summary.next_after.is_empty() {
            text.push_str(&format!(
                "\n{} of {} shown; the next page: omctl mon --after {} (with the same --filter); every one: --all\n",
                r.objects.len(),
                summary.matching,
                summary.next_after
            ));
        }
        for n in r.nodes.iter().filter(|n| !n.error.is_empty()) {
            text.push_str(&format!("\n{}: unreachable: {}\n", n.name, n.error));
        }
        self.write(&text);
    }

    pub fn hb(&mut self, r: &pb::MonReply) {
        let links: Vec<&pb::Link> = r
            .nodes
            .iter()
            .filter_map(|n| n.status.as_ref())
            .flat_map(|s| &s.links)
            .collect();
        if self.format == Output::Json {
            let view: Vec<LinkView> = links.into_iter().map(LinkView::from).collect();
            return self.json(&view);
        }
        let rows: Vec<Vec<String>> = links
            .iter()
            .map(|l| {
                let desc = if l.direction == "tx" {
                    format!("→ {}", l.peer)
                } else {
                    format!("← {}", l.peer)
                };
                vec![
                    flag(l.running).into(),
                    flag(l.beating).into(),
                    format!("raft.{}", l.direction),
                    l.node.clone(),
                    l.peer.clone(),
                    desc,
                    ack(l.last_ack_ms),
                    l.match_index.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let headers = [
            "RUNNING",
            "BEATING",
            "ID",
            "NODE",
            "PEER",
            "DESC",
            "LAST_ACK",
            "MATCH_INDEX",
        ];
        let mut text = table(&headers, &rows);
        for n in r.nodes.iter().filter(|n| !n.reachable) {
            text.push_str(&format!("{}: unreachable: {}\n", n.name, n.error));
        }
        self.write(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_are_utc_calendar_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a century leap year) 23:59:59.999.
        assert_eq!(utc(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(utc(1_796_390_445_123), "2026-12-04T13:20:45.123Z");
    }

    #[test]
    fn uptime_style() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(203), "3m23");
        assert_eq!(human_duration(7500), "2h05");
    }

    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn status_output(format: Output, s: &pb::InstanceStatusReply) -> String {
        let out = Captured::default();
        let mut p = Printer::to(format, Box::new(out.clone()));
        p.status_tree(s, true);
        p.finish().unwrap();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn status_shows_the_switch_its_pending_action_and_the_frozen_flags() {
        let pending = "live switch to n2: phase Migrating: waiting for n1 to live-migrate the guest";
        let node = |name: &str, frozen: bool| pb::InstanceView {
            node: name.into(),
            node_frozen: frozen,
            reported: true,
            avail: "up".into(),
            provisioned: true,
            ..Default::default()
        };
        let s = pb::InstanceStatusReply {
            path: "demo/svc/kvm1".into(),
            provisioned: true,
            placement: "n1".into(),
            started: true,
            frozen: true,
            instances: vec![node("n1", false), node("n2", true)],
            migration_phase: "Migrating".into(),
            migration_from: "n1".into(),
            migration_to: "n2".into(),
            pending_action: pending.into(),
            ..Default::default()
        };
        let json: serde_json::Value = serde_json::from_str(&status_output(Output::Json, &s)).unwrap();
        assert_eq!(json["frozen"], true, "{json}");
        assert_eq!(json["switch"]["phase"], "Migrating", "{json}");
        assert_eq!(json["switch"]["from"], "n1", "{json}");
        assert_eq!(json["switch"]["to"], "n2", "{json}");
        assert_eq!(json["switch"]["error"], serde_json::Value::Null, "{json}");
        assert_eq!(json["pending_action"], pending, "{json}");
        assert_eq!(json["instances"][0]["frozen"], false, "{json}");
        assert_eq!(json["instances"][1]["frozen"], true, "{json}");
        let human = status_output(Output::Human, &s);
        let lines: Vec<&str> = human.lines().collect();
        assert!(lines[0].ends_with("frozen"), "{human}");
        assert_eq!(lines[1], format!("  pending: {pending}"), "{human}");

        // At rest: no switch, nothing pending, nothing frozen.
        let rest = pb::InstanceStatusReply {
            frozen: false,
            instances: vec![node("n1", false), node("n2", false)],
            migration_phase: String::new(),
            migration_from: String::new(),
            migration_to: String::new(),
            pending_action: String::new(),
            ..s
        };
        let json: serde_json::Value = serde_json::from_str(&status_output(Output::Json, &rest)).unwrap();
        assert_eq!(json["switch"], serde_json::Value::Null, "{json}");
        assert_eq!(json["pending_action"], serde_json::Value::Null, "{json}");
        assert_eq!(json["frozen"], false, "{json}");
        assert!(!status_output(Output::Human, &rest).contains("pending"));
    }

    #[test]
    fn tables_pad_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
