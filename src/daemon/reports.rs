//! What this node reports about itself to the cluster, each only when the committed state
//! says otherwise: whether it runs with a watchdog, its volume groups, and its available
//! memory (when it changed enough).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Node, Watchdog};
use crate::model::{ClusterState, Command, NodeId, Response};

/// Commits whether this node runs with a watchdog, when the log says otherwise. With one, it
/// takes nothing (promotes nothing, starts no guest) unless it is armed, and keeps it armed
/// while it holds anything: so once its lease ran out the leader may move its services.
pub fn report_watchdog(node: &Arc<Node>, me: NodeId) {
    let has = *node.watchdog.kind() != Watchdog::None;
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

/// One thing a node reports of itself, kept current by `keep`.
pub struct Report<T> {
    /// What it is, for the log ("volume groups", "available memory").
    pub what: &'static str,
    /// How often it is read again.
    pub every: Duration,
    /// Reads it (blocking: LVM's `vgs`, `/proc/meminfo`, or what a flag declares).
    pub read: Arc<dyn Fn() -> Result<T, String> + Send + Sync>,
    /// Whether what the state holds for this node differs enough from what was read.
    pub stale: fn(&ClusterState, NodeId, &T) -> bool,
    /// The command that reports it.
    pub command: fn(NodeId, T) -> Command,
}

/// Keeps a report of this node in the state current: at start, after a join (a new id), and
/// whenever what it reads and what the state holds differ (`stale`), e.g. the state lost it
/// when the node was re-admitted.
pub async fn keep<T: Send + 'static>(weak: Weak<Node>, report: Report<T>) {
    loop {
        let Some(node) = Node::alive(&weak) else { return };
        let read = report.read.clone();
        let seen = tokio::task::spawn_blocking(move || read())
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match seen {
            Err(e) => tracing::debug!("reading {}: {e}", report.what),
            Ok(seen) => {
                let m = node.member();
                let stale =
                    m.sm.read(|d| d.state.nodes.contains_key(&m.id) && (report.stale)(&d.state, m.id, &seen));
                if stale {
                    let cmd = (report.command)(m.id, seen);
                    let done = cmd.to_string();
                    match node.write(cmd).await {
                        Ok((_, Response::Refused(why))) => tracing::warn!("{} report refused: {why}", report.what),
                        Ok(_) => tracing::info!("{done}"),
                        Err(e) => tracing::debug!("{} report: {}", report.what, e.message()),
                    }
                }
            }
        }
        drop(node);
        tokio::time::sleep(report.every).await;
    }
}

/// This node's volume groups and their sizes, reported every second.
pub fn volume_groups(
    read: impl Fn() -> Result<BTreeMap<String, u64>, String> + Send + Sync + 'static,
) -> Report<BTreeMap<String, u64>> {
    Report {
        what: "volume groups",
        every: Duration::from_secs(1),
        read: Arc::new(read),
        stale: |state, me, vgs| state.vgs.get(&me) != Some(vgs),
        command: |node_id, vgs| Command::ReportVolumeGroups { node_id, vgs },
    }
}

/// This node's available memory (`placement=score`), read every 5 seconds and reported when it
/// changed enough (`memory_stale`).
pub fn memory(read: impl Fn() -> Result<u64, String> + Send + Sync + 'static) -> Report<u64> {
    Report {
        what: "available memory",
        every: Duration::from_secs(5),
        read: Arc::new(read),
        stale: |state, me, seen| memory_stale(state.memory.get(&me).copied(), *seen),
        command: |node_id, available| Command::ReportMemory { node_id, available },
    }
}

/// The smallest change of available memory worth a new report: with the relative step
/// (`MEMORY_SHARE`), what keeps a node's ordinary memory churn out of the log.
const MEMORY_STEP: u64 = 64 << 20;
/// A change of more than one twentieth of the committed report is reported.
const MEMORY_SHARE: u64 = 20;

/// Whether available memory `seen` differs enough from the committed report to send it: no
/// report yet, or a change of at least a twentieth of it and at least 64 MiB.
pub fn memory_stale(committed: Option<u64>, seen: u64) -> bool {
    committed.is_none_or(|c| c.abs_diff(seen) >= (c / MEMORY_SHARE).max(MEMORY_STEP))
}

/// Linux's `MemAvailable` from the text of `/proc/meminfo`, in bytes.
pub fn mem_available(meminfo: &str) -> Result<u64, String> {
    let line = meminfo
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .ok_or("no MemAvailable line")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let &[_, value, "kB"] = fields.as_slice() else {
        return Err(format!("{line:?} is not `MemAvailable: N kB`"));
    };
    let kib: u64 = value
        .parse()
        .map_err(|_| format!("{value:?} in {line:?} is not a whole number"))?;
    kib.checked_mul(1024)
        .ok_or_else(|| format!("{line:?}: {kib} kB overflows a byte count"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_reads_the_kernel_line_or_says_what_is_wrong() {
        let text = "MemTotal:       24570236 kB\nMemFree:         1000 kB\nMemAvailable:   20123456 kB\n";
        assert_eq!(mem_available(text), Ok(20_123_456 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), Err("no MemAvailable line".into()));
        let e = mem_available("MemAvailable: 12 MB\n").unwrap_err();
        assert!(e.contains("is not `MemAvailable: N kB`"), "{e}");
        let e = mem_available("MemAvailable: x kB\n").unwrap_err();
        assert!(e.contains("\"x\""), "{e}");
        let e = mem_available(&format!("MemAvailable: {} kB\n", u64::MAX)).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
    }

    #[test]
    fn memory_is_reported_first_then_on_a_real_change() {
        const GIB: u64 = 1 << 30;
        assert!(memory_stale(None, 0));
        assert!(!memory_stale(Some(8 * GIB), 8 * GIB));
        // 8 GiB: a twentieth is 409.6 MiB.
        assert!(!memory_stale(Some(8 * GIB), 8 * GIB - (400 << 20)));
        assert!(memory_stale(Some(8 * GIB), 8 * GIB + (410 << 20)));
        // Little memory: 64 MiB at least.
        assert!(!memory_stale(Some(GIB), GIB + (60 << 20)));
        assert!(memory_stale(Some(GIB), GIB - (64 << 20)));
        assert!(memory_stale(Some(0), 64 << 20));
    }
}
