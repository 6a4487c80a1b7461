//! Parsing what DRBD reports: `drbdsetup status --json` and `drbdsetup events2` lines.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One resource as `drbdsetup status --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceStatus {
    pub name: String,
    #[serde(rename = "node-id")]
    pub node_id: u32,
    pub role: String,
    #[serde(default)]
    pub suspended: bool,
    #[serde(default)]
    pub devices: Vec<DeviceStatus>,
    #[serde(default)]
    pub connections: Vec<ConnectionStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub volume: u32,
    pub minor: u32,
    #[serde(rename = "disk-state")]
    pub disk_state: String,
    #[serde(default)]
    pub quorum: bool,
    #[serde(default)]
    pub size: u64,
    /// Whether the device is opened (a VM or a mount uses it). Absent in older outputs.
    #[serde(default)]
    pub open: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionStatus {
    #[serde(rename = "peer-node-id")]
    pub peer_node_id: u32,
    pub name: String,
    #[serde(rename = "connection-state")]
    pub connection_state: String,
    #[serde(rename = "peer-role")]
    pub peer_role: String,
    #[serde(default, rename = "peer_devices")]
    pub peer_devices: Vec<PeerDeviceStatus>,
}

impl Eq for ConnectionStatus {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerDeviceStatus {
    pub volume: u32,
    #[serde(rename = "replication-state")]
    pub replication_state: String,
    #[serde(rename = "peer-disk-state")]
    pub peer_disk_state: String,
    #[serde(default, rename = "percent-in-sync")]
    pub percent_in_sync: f64,
    /// Present during a resync.
    #[serde(default, rename = "percent-resync-done", skip_serializing_if = "Option::is_none")]
    pub percent_resync_done: Option<f64>,
}

/// Why DRBD's output could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("drbdsetup status --json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("events2 line {0:?}: {1}")]
    Event(String, &'static str),
}

/// Parses `drbdsetup status --json`.
pub fn parse_status(json: &str) -> Result<Vec<ResourceStatus>, ParseError> {
    Ok(serde_json::from_str(json)?)
}

/// One `drbdsetup events2` line: `exists|create|change|destroy OBJECT key:value...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub verb: String,
    /// `resource`, `device`, `connection`, `peer-device`, or `-` for the end of `--now`.
    pub object: String,
    /// `key:value` pairs; a change is reported as `old->new`, of which the new value is kept.
    pub fields: BTreeMap<String, String>,
}

/// Parses one `events2` line.
pub fn parse_event(line: &str) -> Result<Event, ParseError> {
    let mut words = line.split_whitespace();
    let verb = words
        .next()
        .ok_or_else(|| ParseError::Event(line.into(), "empty line"))?;
    if !["exists", "create", "change", "destroy", "call", "response"].contains(&verb) {
        return Err(ParseError::Event(line.into(), "unknown verb"));
    }
    let object = words
        .next()
        .ok_or_else(|| ParseError::Event(line.into(), "no object"))?;
    let mut fields = BTreeMap::new();
    for w in words {
        let (k, v) = w
            .split_once(':')
            .ok_or_else(|| ParseError::Event(line.into(), "a field is not key:value"))?;
        let v = v.rsplit_once("->").map_or(v, |(_, new)| new);
        fields.insert(k.to_string(), v.to_string());
    }
    Ok(Event {
        verb: verb.into(),
        object: object.into(),
        fields,
    })
}

/// Per resource, the peers (connection names) whose connection allows two primaries, read from
/// `drbdsetup show` (the running configuration): a `connection { ... net { allow-two-primaries
/// yes; _name "n2"; } }` block per peer; an option at the resource's own `net` level applies
/// to every connection. Anything not understood is ignored: a peer missing from the answer is
/// taken as not allowing.
pub fn parse_show(text: &str) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let spaced = text.replace('{', " { ").replace('}', " } ").replace(';', " ; ");
    let words: Vec<&str> = spaced.split_whitespace().map(|w| w.trim_matches('"')).collect();
    let mut out: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    // The open blocks, innermost last.
    let mut stack: Vec<&str> = Vec::new();
    let mut resource: Option<String> = None;
    let mut resource_allows = false;
    // The connection being read: its name and whether it allows.
    let mut conn: (Option<String>, Option<bool>) = (None, None);
    let mut conns: Vec<(Option<String>, Option<bool>)> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        match w {
            "{" => {
                // The block's keyword is the first word of the statement that opened it.
                let mut j = i;
                while j > 0 && !["{", "}", ";"].contains(&words[j - 1]) {
                    j -= 1;
                }
                let kw = words.get(j).copied().unwrap_or("");
                if kw == "resource" && stack.is_empty() {
                    resource = words.get(j + 1).map(|n| n.to_string());
                    resource_allows = false;
                    conns.clear();
                }
                if kw == "connection" {
                    conn = (None, None);
                }
                stack.push(kw);
            }
            "}" => match stack.pop() {
                Some("connection") => conns.push(std::mem::take(&mut conn)),
                Some("resource") if stack.is_empty() => {
                    if let Some(r) = resource.take() {
                        let allowing = out.entry(r).or_default();
                        for (name, allow) in conns.drain(..) {
                            if let (Some(n), true) = (name, allow.unwrap_or(resource_allows)) {
                                allowing.insert(n);
                            }
                        }
                    }
                }
                _ => {}
            },
            "allow-two-primaries" => {
                let yes = matches!(words.get(i + 1).copied(), Some("yes") | Some(";"));
                if stack.contains(&"connection") {
                    conn.1 = Some(yes);
                } else if stack.last() == Some(&"net") {
                    resource_allows = yes;
                }
            }
            "_name" if stack.contains(&"connection") => conn.0 = words.get(i + 1).map(|n| n.to_string()),
            _ => {}
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_allow_two_primaries_per_connection_from_drbdsetup_show() {
        let show = r#"resource "r0" {
    options {
    }
    _this_host {
        node-id			0;
        volume 0 {
            device			minor 0;
        }
    }
    connection {
        _peer_node_id 1;
        path {
            _this_host ipv4 10.0.0.1:7289;
            _remote_host ipv4 10.0.0.2:7289;
        }
        net {
            allow-two-primaries	yes;
            _name               	"n2";
        }
    }
    connection {
        _peer_node_id 2;
        net {
            _name               	"n3";
        }
    }
}
resource "r1" {
    net {
        allow-two-primaries;
    }
    connection {
        net {
            _name "n2";
        }
    }
}
resource "r2" {
    connection {
        net {
            allow-two-primaries no;
            _name "n2";
        }
    }
}
"#;
        let got = parse_show(show);
        let set = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(got["r0"], set(&["n2"]));
        assert_eq!(
            got["r1"],
            set(&["n2"]),
            "a resource-level option applies to every connection"
        );
        assert_eq!(got["r2"], set(&[]));
        assert!(parse_show("").is_empty());
    }

    /// The shape DRBD 9.2 prints while n1 resyncs n2 after the initial `primary --force`.
    const SYNCING: &str = r#"[
{
  "name": "kvm1.demo.vol.drbd4kvm",
  "node-id": 0,
  "role": "Primary",
  "suspended": false,
  "force-io-failures": false,
  "write-ordering": "flush",
  "devices": [
    {
      "volume": 0,
      "minor": 0,
      "disk-state": "UpToDate",
      "client": false,
      "open": false,
      "quorum": true,
      "size": 4194304,
      "read": 0,
      "written": 0,
      "al-writes": 0,
      "bm-writes": 0,
      "upper-pending": 0,
      "lower-pending": 0
    } ],
  "connections": [
    {
      "peer-node-id": 1,
      "name": "n2",
      "connection-state": "Connected",
      "congested": false,
      "peer-role": "Secondary",
      "tls": false,
      "ap-in-flight": 0,
      "rs-in-flight": 0,
      "peer_devices": [
        {
          "volume": 0,
          "replication-state": "SyncSource",
          "peer-disk-state": "Inconsistent",
          "peer-client": false,
          "resync-suspended": "no",
          "received": 0,
          "sent": 1293312,
          "out-of-sync": 2900992,
          "pending": 0,
          "unacked": 0,
          "has-sync-details": true,
          "has-online-verify-details": false,
          "percent-in-sync": 30.84,
          "rs-total": 4194304,
          "rs-dt-start-ms": 2000,
          "rs-paused-ms": 0,
          "rs-dt0-ms": 2000,
          "rs-db0-sectors": 2586624,
          "rs-dt1-ms": 2000,
          "rs-db1-sectors": 2586624,
          "rs-failed": 0,
          "rs-same-csum": 0,
          "want": 0,
          "db-dt MiB-s": 631,
          "db0-dt0 MiB-s": 631,
          "db1-dt1 MiB-s": 631,
          "eta": 4,
          "percent-resync-done": 30.84
        } ]
    } ]
}
]
"#;

    #[test]
    fn parses_a_resync_in_progress() {
        let r = parse_status(SYNCING).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].role.as_str(), r[0].devices[0].disk_state.as_str()),
            ("Primary", "UpToDate")
        );
        assert_eq!(r[0].devices[0].open, Some(false));
        let peer = &r[0].connections[0].peer_devices[0];
        assert_eq!(
            (peer.replication_state.as_str(), peer.peer_disk_state.as_str()),
            ("SyncSource", "Inconsistent")
        );
        assert_eq!(peer.percent_resync_done, Some(30.84));
    }

    #[test]
    fn parses_events2_lines() {
        let e = parse_event("change peer-device name:kvm1.demo.vol.drbd4kvm peer-node-id:1 conn-name:n2 volume:0 replication:Established->SyncSource").unwrap();
        assert_eq!((e.verb.as_str(), e.object.as_str()), ("change", "peer-device"));
        assert_eq!(e.fields["replication"], "SyncSource");
        let end = parse_event("exists -").unwrap();
        assert_eq!(end.object, "-");
        assert!(parse_event("").is_err());
        assert!(parse_event("exists resource name").is_err());
        assert!(parse_event("bogus resource").is_err());
    }
}
