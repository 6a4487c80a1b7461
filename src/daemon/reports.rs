//! What this node reports about itself to the cluster, each only when the committed state
//! says otherwise: whether it runs with a watchdog, and its volume groups.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Node, Watchdog};
use crate::model::{Command, NodeId, Response};

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

/// Keeps this node's volume group report in the state current: at start, after a join, when
/// the volume groups change, and whenever the state lost it (a node re-admitted under a new id).
/// `read` gives the volume groups and their sizes (LVM's `vgs`, or what `--report-vg` declares).
pub async fn report_volume_groups<F>(weak: Weak<Node>, read: F)
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
