//! omctl's one printer: human output shaped like the tutorial's, or JSON from the view
//! structs below (never from protobuf types).

use std::collections::BTreeMap;
use std::io::{BufWriter, Stdout, Write};

use serde::Serialize;

use super::Output;
use crate::pb;

pub struct Printer {
    format: Output,
    out: BufWriter<Stdout>,
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
}

#[derive(Serialize)]
struct MonView<'a> {
    cluster: &'a str,
    queried: &'a str,
    nodes: Vec<NodeView<'a>>,
    objects: Vec<String>,
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
        }
    }
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
    let label_w = 14usize.max(title.len() + 2);
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
        Printer {
            format,
            out: BufWriter::new(std::io::stdout()),
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
            Output::Human => {
                self.write(&r.steps.iter().map(|s| format!("{s}\n")).collect::<String>())
            }
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

    pub fn removed(&mut self, name: &str, node_id: u64) {
        match self.format {
            Output::Human => self.write(&format!("removed {name} (node id {node_id})\n")),
            Output::Json => self.json(&RemovedView {
                removed: name,
                node_id,
            }),
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
                            s.values
                                .iter()
                                .map(|kv| (kv.key.as_str(), kv.value.as_str()))
                                .collect(),
                        )
                    })
                    .collect();
                self.json(&view);
            }
        }
    }

    pub fn mon(&mut self, r: &pb::MonReply) {
        if self.format == Output::Json {
            let view = MonView {
                cluster: &r.cluster_name,
                queried: &r.queried,
                nodes: r.nodes.iter().map(NodeView::from).collect(),
                objects: vec![],
            };
            return self.json(&view);
        }
        let names: Vec<&str> = r.nodes.iter().map(|n| n.name.as_str()).collect();
        let col = |f: &dyn Fn(&pb::MonNode, &pb::NodeStatus) -> String| -> Vec<String> {
            r.nodes
                .iter()
                .map(|n| {
                    n.status
                        .as_ref()
                        .map(|s| f(n, s))
                        .unwrap_or_else(|| "-".into())
                })
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
                    "applied",
                    col(&|_, s| {
                        s.applied_index
                            .map(|i| i.to_string())
                            .unwrap_or_else(|| "-".into())
                    }),
                ),
            ],
        );
        let nodes = frame(
            "Nodes",
            &names,
            &[
                (
                    "id",
                    r.nodes.iter().map(|n| n.node_id.to_string()).collect(),
                ),
                ("address", r.nodes.iter().map(|n| n.addr.clone()).collect()),
                (
                    "membership",
                    r.nodes.iter().map(|n| n.membership.clone()).collect(),
                ),
                (
                    "role",
                    r.nodes
                        .iter()
                        .map(|n| {
                            if n.witness {
                                "witness".into()
                            } else {
                                "data".into()
                            }
                        })
                        .collect(),
                ),
            ],
        );
        let objects = frame("Objects ~ *", &names, &[]);
        let mut text = format!(
            "Cluster {} (queried {})\n\n{daemon}\n{nodes}\n{objects}",
            r.cluster_name, r.queried
        );
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
                    l.match_index
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "-".into()),
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
    fn uptime_style() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(203), "3m23");
        assert_eq!(human_duration(7500), "2h05");
    }

    #[test]
    fn tables_pad_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
