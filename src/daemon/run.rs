//! Starts a node and every loop it runs, and hands each loop the narrow view of the node it
//! needs (the applier's and the orchestrator's `Host` traits).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{lease, node, reports, ssh_trust, Node, Settings, StartError};
use crate::drivers::Drivers;
use crate::model::{ClusterState, Command, NodeId, Response};

/// The loops a node runs besides Raft, the lease renewal, the founder's registration and the
/// revocation list, which every node runs.
#[derive(Default)]
pub struct Loops {
    /// The applier (and the volume group report) on these drivers; none on a node that only
    /// keeps the cluster state.
    pub drivers: Option<Drivers>,
    /// ssh trust (`cluster.ssh_trust`) kept in this directory.
    pub ssh_dir: Option<PathBuf>,
}

/// Starts the node of `settings` and its loops.
pub async fn start(settings: Settings, loops: Loops) -> Result<Arc<Node>, StartError> {
    let node = Node::start(settings).await?;
    let weak = Arc::downgrade(&node);
    tokio::spawn(node::register_founder(weak.clone()));
    tokio::spawn(node::keep_revocations(weak.clone()));
    tokio::spawn(lease::renew(weak.clone()));
    tokio::spawn(crate::orchestrator::run(node.clone()));
    if let Some(dir) = loops.ssh_dir {
        tokio::spawn(ssh_trust::keep(weak.clone(), dir));
    }
    if let Some(drivers) = loops.drivers {
        // The volume groups `--report-vg` declares, else what LVM's `vgs` sees.
        let declared = node.settings.vgs.clone();
        let lvm = drivers.lvm.clone();
        let read = move || -> Result<BTreeMap<String, u64>, String> {
            if !declared.is_empty() {
                return Ok(declared.clone());
            }
            let vgs = lvm.vgs().map_err(|e| e.to_string())?;
            Ok(vgs.into_iter().map(|v| (v.name, v.size)).collect())
        };
        tokio::spawn(reports::keep(weak.clone(), reports::volume_groups(read)));
        // The memory `--report-mem` declares, else MemAvailable.
        let declared = node.settings.memory;
        let read = move || -> Result<u64, String> {
            if let Some(bytes) = declared {
                return Ok(bytes);
            }
            let text = std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
            reports::mem_available(&text)
        };
        tokio::spawn(reports::keep(weak, reports::memory(read)));
        tokio::spawn(crate::applier::run::run(node.clone(), drivers));
    }
    Ok(node)
}

/// `write`'s error as the loops log it.
async fn commit(node: &Node, cmd: Command) -> Result<Response, String> {
    node.write(cmd)
        .await
        .map(|(_, r)| r)
        .map_err(|s| s.message().to_string())
}

impl crate::applier::run::Host for Node {
    fn closing(&self) -> bool {
        Node::closing(self)
    }

    fn read<T>(&self, f: impl FnOnce(NodeId, &ClusterState) -> T) -> T {
        let m = self.member();
        m.sm.read(|d| f(m.id, &d.state))
    }

    fn changed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut data = self.member().raft.data_metrics();
        let lapsed = self.leases.lapsed();
        async move {
            tokio::select! {
                _ = data.changed() => {}
                _ = lapsed.notified() => {}
            }
        }
    }

    fn lease_valid(&self) -> bool {
        Node::lease_valid(self)
    }

    fn moves(&self) -> u64 {
        self.member().sm.moves()
    }

    fn may_take(&self) -> bool {
        if !self.watchdog.may_take() {
            // Given something since the last renewal: arm now rather than at the next one.
            let m = self.member();
            let (cfg, hosting) = m.sm.read(|d| {
                let witness = d.state.nodes.get(&m.id).is_some_and(|n| n.witness);
                let cfg = crate::model::catalog::lease_config(&d.state.config);
                (cfg, !witness && d.state.hosts(m.id))
            });
            if hosting {
                self.watchdog.step(true, self.lease_remaining(), &cfg, self.closing());
            }
        }
        self.watchdog.may_take()
    }

    fn set_holding(&self, holding: bool) {
        self.watchdog.set_holding(holding)
    }

    fn write(&self, cmd: Command) -> impl Future<Output = Result<Response, String>> + Send {
        commit(self, cmd)
    }

    fn step_failed(&self, kind: &'static str) {
        self.counters.step_failed(kind);
    }
}

impl crate::orchestrator::Host for Node {
    fn closing(&self) -> bool {
        Node::closing(self)
    }

    fn leadership(&self) -> (u64, bool) {
        Node::leadership(self)
    }

    fn vote_window(&self) -> Duration {
        let c = self.settings.raft_config();
        super::votes::window(
            Duration::from_millis(c.election_timeout_min),
            Duration::from_millis(c.election_timeout_max),
        )
    }

    fn last_confirmed(&self) -> impl Future<Output = Option<Instant>> + Send {
        self.votes.last_confirmed()
    }

    fn leadership_changed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut server = self.member().raft.server_metrics();
        async move {
            let _ = server.changed().await;
        }
    }

    fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        self.member().sm.read(|d| f(&d.state))
    }

    fn grants(&self, term: u64) -> BTreeMap<NodeId, Instant> {
        self.leases.grants(term)
    }

    fn write(&self, cmd: Command) -> impl Future<Output = Result<Response, String>> + Send {
        commit(self, cmd)
    }
}
