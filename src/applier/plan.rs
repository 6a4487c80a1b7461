//! The pure core of the applier: what one node must do for one service, from what the log
//! says (desired) and what its drivers see (observed). No I/O; every rule is tested here.

use std::collections::{BTreeMap, BTreeSet};

use crate::drivers::drbd::render::TemplateData;
use crate::drivers::drbd::status::ResourceStatus;
use crate::drivers::hypervisor::{DomainState, MigrationTarget};
use crate::model::{Avail, InstanceReport, Phase, ResourceReport};

/// What the log wants of one service on this node.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Volumes exist here (LV, DRBD resource up).
    pub provisioned: bool,
    /// This node holds the service: DRBD Primary here.
    pub active: bool,
    /// This node should hold the service but has no valid lease: stop everything at once
    /// (destroy the guests, demote): a node without a lease self-fences.
    pub fenced: bool,
    /// Peers the leader saw lose their lease when it moved the service here: out of sight,
    /// they do not hold it back.
    pub gone: BTreeSet<String>,
    pub volumes: Vec<DesiredVolume>,
    pub containers: Vec<DesiredContainer>,
    /// This node's part in a live switch in progress.
    pub migration: Option<DesiredMigration>,
    /// This node may take resources (promote, start guests): its watchdog is armed, or it has
    /// none (and then the leader never moves anything away from it). Keeping what it holds
    /// does not depend on it.
    pub may_take: bool,
}

/// This node's part in a live switch.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredMigration {
    pub id: u64,
    pub phase: Phase,
    /// This node is the source: it held the service when the switch began.
    pub source: bool,
    /// The other side: its node name is its DRBD connection's name.
    pub peer: MigrationTarget,
    /// The switch reached `DualPrimary`: the target may have promoted.
    pub dual: bool,
    /// Why the configured migration URIs may not be used (values an older version accepted,
    /// outside the documented transports): the source aborts instead of migrating.
    pub unusable: Option<String>,
}

impl Desired {
    /// The migration target while it must hold DRBD Primary beside the source.
    fn dual_target(&self) -> bool {
        self.migration
            .as_ref()
            .is_some_and(|m| !m.source && matches!(m.phase, Phase::DualPrimary | Phase::Migrating))
    }

    /// The peer this node's DRBD connection must allow two primaries with now: the other side
    /// of a live switch in `DualPrimary` or `Migrating`, whichever side this node is. Derived
    /// from the committed phase at every pass, so a node that rebooted (which resets DRBD's
    /// running configuration to the resource file's) sets it again.
    fn two_primaries_with(&self) -> Option<&str> {
        self.migration
            .as_ref()
            .filter(|m| matches!(m.phase, Phase::DualPrimary | Phase::Migrating))
            .map(|m| m.peer.node.as_str())
    }

    /// This node's live switch, when it is the source in `Migrating` and none of the guests
    /// runs here any more: on the target, or nowhere.
    pub(super) fn source_without_guest(&self, observed: &Observed) -> Option<&DesiredMigration> {
        let m = self
            .migration
            .as_ref()
            .filter(|m| m.source && m.phase == Phase::Migrating && !self.containers.is_empty())?;
        self.containers
            .iter()
            .all(|c| !observed.domains.get(&c.domain).is_some_and(|s| s.active()))
            .then_some(m)
    }

    /// The migration source before `Finalize`: the guest is its to move, never to restart.
    fn moving_source(&self) -> bool {
        self.migration
            .as_ref()
            .is_some_and(|m| m.source && m.phase < Phase::Finalize)
    }
}

/// A kvm container: the libvirt domain that runs where the service is active.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredContainer {
    /// `container#1`.
    pub rid: String,
    pub domain: String,
    /// The captured domain XML, once some node had the domain.
    pub xml: Option<String>,
    pub stop_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredVolume {
    /// The service resource, `volume#data`.
    pub rid: String,
    /// The volume object's name, for messages: `demo/vol/kvm1`.
    pub volume: String,
    pub vg: String,
    pub lv: String,
    pub size: u64,
    pub drbd: Option<DesiredDrbd>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredDrbd {
    pub resource: String,
    pub minor: u32,
    /// The rendered resource file, and what it was rendered from (for its checks).
    pub config: String,
    pub data: TemplateData,
}

/// What this node's drivers see.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// `(vg, lv)` of existing logical volumes.
    pub lvs: BTreeSet<(String, String)>,
    /// Resource files as written.
    pub configs: BTreeMap<String, String>,
    /// Resources that are up, by name.
    pub drbd: BTreeMap<String, ResourceStatus>,
    /// The state of each desired container's domain.
    pub domains: BTreeMap<String, DomainState>,
    /// Per resource, the peers whose connection allows two primaries now. Read only during a
    /// live switch (empty otherwise).
    pub two_primaries: BTreeMap<String, BTreeSet<String>>,
    /// The source of a live switch in `Migrating` with no guest running here: the state of
    /// each desired domain on the target, asked of its hypervisor; `None` when it could not
    /// be asked (or there was no need).
    pub peer_domains: Option<BTreeMap<String, DomainState>>,
}

impl Observed {
    /// A guest is active (running or paused) or a DRBD resource is Primary here.
    pub fn holds_anything(&self) -> bool {
        self.domains.values().any(|d| d.active()) || self.drbd.values().any(|st| st.role == "Primary")
    }
}

/// One action on this node, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    CreateLv {
        vg: String,
        lv: String,
        size: u64,
    },
    /// DRBD `allow-two-primaries` on this side (a live switch's dual-primary window).
    AllowTwoPrimaries {
        resource: String,
        allow: bool,
    },
    WriteConfig {
        resource: String,
    },
    CreateMd {
        resource: String,
    },
    Up {
        resource: String,
    },
    Primary {
        resource: String,
        force: bool,
    },
    Secondary {
        resource: String,
    },
    Down {
        resource: String,
    },
    RemoveConfig {
        resource: String,
    },
    RemoveLv {
        vg: String,
        lv: String,
    },
    DefineDomain {
        name: String,
    },
    StartDomain {
        name: String,
    },
    StopDomain {
        name: String,
        timeout_secs: u64,
    },
}

impl Step {
    /// What kind of step it is, for the metrics: `create-lv`, `primary`, `start-domain`...
    pub fn kind(&self) -> &'static str {
        match self {
            Step::CreateLv { .. } => "create-lv",
            Step::AllowTwoPrimaries { .. } => "allow-two-primaries",
            Step::WriteConfig { .. } => "write-config",
            Step::CreateMd { .. } => "create-md",
            Step::Up { .. } => "up",
            Step::Primary { .. } => "primary",
            Step::Secondary { .. } => "secondary",
            Step::Down { .. } => "down",
            Step::RemoveConfig { .. } => "remove-config",
            Step::RemoveLv { .. } => "remove-lv",
            Step::DefineDomain { .. } => "define-domain",
            Step::StartDomain { .. } => "start-domain",
            Step::StopDomain { .. } => "stop-domain",
        }
    }
}

pub(super) fn peers_demoted(st: &ResourceStatus, gone: &BTreeSet<String>) -> bool {
    st.connections.iter().all(|c| {
        (c.connection_state == "Connected" && c.peer_role == "Secondary")
            || (c.connection_state != "Connected" && gone.contains(&c.name))
    })
}

fn all_peers_fresh(st: &ResourceStatus) -> bool {
    !st.connections.is_empty()
        && st.connections.iter().all(|c| {
            c.connection_state == "Connected" && c.peer_devices.iter().all(|p| p.peer_disk_state == "Inconsistent")
        })
}

/// The steps that bring `observed` to `desired`. Idempotent: when they agree, nothing.
/// Guests stop before their volumes are demoted, and start only once every volume is
/// Primary and UpToDate here.
pub fn plan(desired: &Desired, observed: &Observed) -> Vec<Step> {
    let mut steps = Vec::new();
    let state = |c: &DesiredContainer| observed.domains.get(&c.domain).copied().unwrap_or(DomainState::Absent);
    // The live-switch target keeps the guest that arrives by migration.
    if !desired.active && (desired.fenced || !desired.dual_target()) {
        for c in desired.containers.iter().filter(|c| state(c).active()) {
            // Fenced: no graceful shutdown, the lease is already gone.
            let timeout_secs = if desired.fenced { 0 } else { c.stop_timeout_secs };
            steps.push(Step::StopDomain {
                name: c.domain.clone(),
                timeout_secs,
            });
        }
    }
    steps.extend(plan_volumes(desired, observed));
    let volumes_ready = steps.is_empty()
        && desired.volumes.iter().filter_map(|v| v.drbd.as_ref()).all(|d| {
            observed.drbd.get(&d.resource).is_some_and(|st| {
                st.role == "Primary" && st.devices.first().is_some_and(|x| x.disk_state == "UpToDate")
            })
        });
    // During a live switch the source never restarts its guest (it may be on the target
    // already), and a holder starts one only once every peer demoted.
    let may_start = !desired.moving_source()
        && (desired.migration.is_none()
            || desired.volumes.iter().filter_map(|v| v.drbd.as_ref()).all(|d| {
                observed
                    .drbd
                    .get(&d.resource)
                    .is_some_and(|st| peers_demoted(st, &desired.gone))
            }));
    if desired.active && volumes_ready && may_start && desired.may_take {
        for c in &desired.containers {
            match (state(c), &c.xml) {
                (DomainState::Absent, Some(_)) => {
                    steps.push(Step::DefineDomain { name: c.domain.clone() });
                    steps.push(Step::StartDomain { name: c.domain.clone() });
                }
                (DomainState::ShutOff, _) => steps.push(Step::StartDomain { name: c.domain.clone() }),
                _ => {}
            }
        }
    }
    steps
}

fn plan_volumes(desired: &Desired, observed: &Observed) -> Vec<Step> {
    let mut steps = Vec::new();
    for v in &desired.volumes {
        let lv_exists = observed.lvs.contains(&(v.vg.clone(), v.lv.clone()));
        if desired.provisioned {
            if !lv_exists {
                steps.push(Step::CreateLv {
                    vg: v.vg.clone(),
                    lv: v.lv.clone(),
                    size: v.size,
                });
            }
            let Some(d) = &v.drbd else { continue };
            let r = || d.resource.clone();
            if observed.configs.get(&d.resource) != Some(&d.config) {
                steps.push(Step::WriteConfig { resource: r() });
            }
            let Some(st) = observed.drbd.get(&d.resource) else {
                // A fresh LV has no DRBD metadata yet.
                if !lv_exists {
                    steps.push(Step::CreateMd { resource: r() });
                }
                steps.push(Step::Up { resource: r() });
                continue;
            };
            let primary = st.role == "Primary";
            let disk = st.devices.first().map(|d| d.disk_state.as_str()).unwrap_or("");
            if let Some(peer) = desired.two_primaries_with() {
                let allowed = observed
                    .two_primaries
                    .get(&d.resource)
                    .is_some_and(|p| p.contains(peer));
                if !allowed {
                    steps.push(Step::AllowTwoPrimaries {
                        resource: r(),
                        allow: true,
                    });
                }
            }
            if !desired.may_take && !primary {
                continue;
            }
            if let (true, Some(peer)) = (desired.dual_target(), desired.two_primaries_with()) {
                // Promote beside the source only while connected to it: DRBD then refuses
                // unless both sides allow two primaries, and the source sees this node's role.
                // Across a cut nothing would stop a second Primary, so this node waits. Any
                // other peer must be seen Secondary (or be gone), as for any promotion.
                let in_sight = st.connections.iter().all(|c| {
                    if c.name == peer {
                        c.connection_state == "Connected"
                    } else {
                        (c.connection_state == "Connected" && c.peer_role == "Secondary")
                            || (c.connection_state != "Connected" && desired.gone.contains(&c.name))
                    }
                }) && st.connections.iter().any(|c| c.name == peer);
                if !primary && disk == "UpToDate" && in_sight {
                    steps.push(Step::Primary {
                        resource: r(),
                        force: false,
                    });
                }
                continue;
            }
            match (desired.active, primary) {
                // Promote only while every peer is in sight and none is Primary: the node that
                // held the service demotes first (a switch), and a peer out of sight may still
                // hold it, so this node waits rather than guess.
                (true, false) if disk == "UpToDate" && peers_demoted(st, &desired.gone) => steps.push(Step::Primary {
                    resource: r(),
                    force: false,
                }),
                // The very first promotion: every disk is fresh, one side must be declared good.
                (true, false) if disk == "Inconsistent" && all_peers_fresh(st) => steps.push(Step::Primary {
                    resource: r(),
                    force: true,
                }),
                (false, true) => steps.push(Step::Secondary { resource: r() }),
                _ => {}
            }
        } else {
            if let Some(d) = &v.drbd {
                if let Some(st) = observed.drbd.get(&d.resource) {
                    if st.role == "Primary" {
                        steps.push(Step::Secondary {
                            resource: d.resource.clone(),
                        });
                    }
                    steps.push(Step::Down {
                        resource: d.resource.clone(),
                    });
                }
                if observed.configs.contains_key(&d.resource) {
                    steps.push(Step::RemoveConfig {
                        resource: d.resource.clone(),
                    });
                }
            }
            if lv_exists {
                steps.push(Step::RemoveLv {
                    vg: v.vg.clone(),
                    lv: v.lv.clone(),
                });
            }
        }
    }
    steps
}

/// This node's report of the instance: each volume's status, warnings, and overall avail.
/// `errors` holds the last failure of a step per resource, shown as a warning.
pub fn report(desired: &Desired, observed: &Observed, errors: &BTreeMap<String, String>) -> InstanceReport {
    let mut resources = Vec::new();
    let mut provisioned = true;
    for v in &desired.volumes {
        let label = v.lv.split('.').next().unwrap_or(&v.lv).to_string();
        let mut messages = Vec::new();
        let lv = observed.lvs.contains(&(v.vg.clone(), v.lv.clone()));
        let mut avail = if lv { Avail::Down } else { Avail::NotApplicable };
        let mut peers = BTreeMap::new();
        provisioned &= lv;
        if let Some(d) = &v.drbd {
            match observed.drbd.get(&d.resource) {
                None => provisioned = false,
                Some(st) => {
                    let disk = st.devices.first().map(|x| x.disk_state.as_str()).unwrap_or("");
                    if st.role == "Primary" && disk == "UpToDate" {
                        avail = Avail::Up;
                    }
                    for c in &st.connections {
                        let peer_disk = c
                            .peer_devices
                            .iter()
                            .map(|p| p.peer_disk_state.as_str())
                            .find(|d| *d != "UpToDate")
                            .unwrap_or(if c.peer_devices.is_empty() {
                                "DUnknown"
                            } else {
                                "UpToDate"
                            });
                        peers.insert(c.name.clone(), format!("{}/{peer_disk}", c.connection_state));
                        for p in &c.peer_devices {
                            if let Some(done) = p.percent_resync_done {
                                messages.push(format!("resync to {} {done:.2}% done", c.name));
                            } else if c.connection_state != "Connected" {
                                messages.push(format!("peer {} is {}", c.name, c.connection_state));
                            }
                        }
                    }
                    if disk != "UpToDate" {
                        messages.push(format!("disk {disk}"));
                    }
                }
            }
        }
        if let Some(e) = errors.get(&v.rid) {
            messages.push(e.clone());
        }
        if avail == Avail::Up && !messages.is_empty() {
            messages.insert(0, format!("Volume {} has warnings", v.volume));
        }
        resources.push(ResourceReport {
            rid: v.rid.clone(),
            avail,
            label,
            messages,
            peers,
        });
    }
    for c in &desired.containers {
        let mut messages = Vec::new();
        let state = observed.domains.get(&c.domain).copied().unwrap_or(DomainState::Absent);
        if state == DomainState::Absent && c.xml.is_none() {
            messages.push(format!(
                "domain {} is not defined here and was never captured",
                c.domain
            ));
        }
        if state == DomainState::Paused && desired.active {
            messages.push(format!("domain {} is paused", c.domain));
        }
        if let Some(e) = errors.get(&c.rid) {
            messages.push(e.clone());
        }
        let avail = if state == DomainState::Running {
            Avail::Up
        } else {
            Avail::Down
        };
        resources.push(ResourceReport {
            rid: c.rid.clone(),
            avail,
            label: format!("kvm {}", c.domain),
            messages,
            peers: BTreeMap::new(),
        });
    }
    // Resources left out of the plan (a resource file that cannot be rendered) still show,
    // with why.
    let left_out: Vec<(&String, &String)> = errors
        .iter()
        .filter(|(rid, _)| !resources.iter().any(|r| &r.rid == *rid))
        .collect();
    for (rid, e) in left_out {
        provisioned = false;
        resources.push(ResourceReport {
            rid: rid.clone(),
            avail: Avail::Down,
            label: String::new(),
            messages: vec![e.clone()],
            peers: BTreeMap::new(),
        });
    }
    let ups = resources.iter().filter(|r| r.avail == Avail::Up).count();
    let warn = resources.iter().any(|r| !r.messages.is_empty());
    let avail = match (ups, resources.len()) {
        (0, _) => Avail::Down,
        (u, n) if u == n => Avail::Up,
        _ => Avail::Warn,
    };
    InstanceReport {
        avail,
        warn,
        provisioned: provisioned && !desired.volumes.is_empty(),
        resources,
    }
    .bounded()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::drivers::drbd::status::parse_status;

    pub(crate) const RES: &str = "kvm1.demo.vol.drbd4kvm";

    pub(crate) fn desired(provisioned: bool, active: bool) -> Desired {
        Desired {
            provisioned,
            active,
            fenced: false,
            gone: BTreeSet::new(),
            containers: vec![],
            migration: None,
            may_take: true,
            volumes: vec![DesiredVolume {
                rid: "volume#data".into(),
                volume: "demo/vol/kvm1".into(),
                vg: "data".into(),
                lv: RES.into(),
                size: 4 << 30,
                drbd: Some(DesiredDrbd {
                    resource: RES.into(),
                    minor: 0,
                    config: "resource kvm1.demo.vol.drbd4kvm {}".into(),
                    data: TemplateData {
                        name: RES.into(),
                        nodes: vec![],
                    },
                }),
            }],
        }
    }

    pub(crate) fn status(role: &str, disk: &str, conn: &str, peer_disk: &str, resync: Option<f64>) -> ResourceStatus {
        let done = resync
            .map(|d| format!(r#", "percent-resync-done": {d}"#))
            .unwrap_or_default();
        let json = format!(
            r#"[{{"name": "{RES}", "node-id": 0, "role": "{role}",
                "devices": [{{"volume": 0, "minor": 0, "disk-state": "{disk}"}}],
                "connections": [{{"peer-node-id": 1, "name": "n2", "connection-state": "{conn}", "peer-role": "Secondary",
                  "peer_devices": [{{"volume": 0, "replication-state": "Established", "peer-disk-state": "{peer_disk}",
                  "percent-in-sync": 100{done}}}]}}]}}]"#
        );
        parse_status(&json).unwrap().remove(0)
    }

    pub(crate) fn observed(lv: bool, config: bool, st: Option<ResourceStatus>) -> Observed {
        let d = desired(true, true);
        let dd = d.volumes[0].drbd.clone().unwrap();
        Observed {
            lvs: if lv {
                [("data".to_string(), RES.to_string())].into()
            } else {
                BTreeSet::new()
            },
            configs: if config {
                [(RES.to_string(), dd.config)].into()
            } else {
                BTreeMap::new()
            },
            drbd: st.map(|s| [(RES.to_string(), s)].into()).unwrap_or_default(),
            domains: BTreeMap::new(),
            two_primaries: BTreeMap::new(),
            peer_domains: None,
        }
    }

    fn r() -> String {
        RES.into()
    }

    #[test]
    fn fresh_node_creates_lv_writes_config_creates_md_and_brings_up() {
        let steps = plan(&desired(true, true), &observed(false, false, None));
        assert_eq!(
            steps,
            vec![
                Step::CreateLv {
                    vg: "data".into(),
                    lv: r(),
                    size: 4 << 30
                },
                Step::WriteConfig { resource: r() },
                Step::CreateMd { resource: r() },
                Step::Up { resource: r() },
            ]
        );
    }

    #[test]
    fn first_promotion_is_forced_only_when_every_disk_is_fresh_and_connected() {
        let fresh = status("Secondary", "Inconsistent", "Connected", "Inconsistent", None);
        assert_eq!(
            plan(&desired(true, true), &observed(true, true, Some(fresh))),
            vec![Step::Primary {
                resource: r(),
                force: true
            }]
        );
        // A peer not connected yet: wait, it may hold data.
        let waiting = status("Secondary", "Inconsistent", "Connecting", "DUnknown", None);
        assert_eq!(plan(&desired(true, true), &observed(true, true, Some(waiting))), vec![]);
        // A peer with good data: never force, become SyncTarget instead.
        let behind = status("Secondary", "Inconsistent", "Connected", "UpToDate", None);
        assert_eq!(plan(&desired(true, true), &observed(true, true, Some(behind))), vec![]);
        let good = status("Secondary", "UpToDate", "Connected", "UpToDate", None);
        assert_eq!(
            plan(&desired(true, true), &observed(true, true, Some(good))),
            vec![Step::Primary {
                resource: r(),
                force: false
            }]
        );
    }

    #[test]
    fn promotion_waits_for_the_peer_to_demote_and_to_be_in_sight() {
        let mut peer_primary = status("Secondary", "UpToDate", "Connected", "UpToDate", None);
        peer_primary.connections[0].peer_role = "Primary".into();
        assert_eq!(
            plan(&desired(true, true), &observed(true, true, Some(peer_primary))),
            vec![]
        );
        let mut out_of_sight = status("Secondary", "UpToDate", "Connecting", "DUnknown", None);
        out_of_sight.connections[0].peer_role = "Unknown".into();
        assert_eq!(
            plan(&desired(true, true), &observed(true, true, Some(out_of_sight))),
            vec![]
        );
    }

    #[test]
    fn converged_plans_nothing_and_passive_nodes_demote() {
        let primary = status("Primary", "UpToDate", "Connected", "UpToDate", None);
        assert_eq!(
            plan(&desired(true, true), &observed(true, true, Some(primary.clone()))),
            vec![]
        );
        assert_eq!(
            plan(&desired(true, false), &observed(true, true, Some(primary))),
            vec![Step::Secondary { resource: r() }]
        );
        let secondary = status("Secondary", "UpToDate", "Connected", "UpToDate", None);
        assert_eq!(
            plan(&desired(true, false), &observed(true, true, Some(secondary))),
            vec![]
        );
    }

    #[test]
    fn unprovision_demotes_downs_and_removes() {
        let primary = status("Primary", "UpToDate", "Connected", "UpToDate", None);
        assert_eq!(
            plan(&desired(false, false), &observed(true, true, Some(primary))),
            vec![
                Step::Secondary { resource: r() },
                Step::Down { resource: r() },
                Step::RemoveConfig { resource: r() },
                Step::RemoveLv {
                    vg: "data".into(),
                    lv: r()
                },
            ]
        );
        assert_eq!(plan(&desired(false, false), &observed(false, false, None)), vec![]);
    }

    #[test]
    fn a_changed_template_rewrites_the_file() {
        let primary = status("Primary", "UpToDate", "Connected", "UpToDate", None);
        let mut o = observed(true, true, Some(primary));
        o.configs.insert(r(), "resource old {}".into());
        assert_eq!(
            plan(&desired(true, true), &o),
            vec![Step::WriteConfig { resource: r() }]
        );
    }

    pub(crate) fn with_vm(mut d: Desired, xml: bool) -> Desired {
        d.containers.push(DesiredContainer {
            rid: "container#1".into(),
            domain: "kvm1".into(),
            xml: xml.then(|| "<domain><name>kvm1</name></domain>".into()),
            stop_timeout_secs: 120,
        });
        d
    }

    #[test]
    fn without_an_armed_watchdog_nothing_is_taken_but_what_is_held_is_kept() {
        let mut d = with_vm(desired(true, true), true);
        d.may_take = false;
        let secondary = status("Secondary", "UpToDate", "Connected", "UpToDate", None);
        assert_eq!(plan(&d, &observed(true, true, Some(secondary))), vec![]);
        let fresh = status("Secondary", "Inconsistent", "Connected", "Inconsistent", None);
        assert_eq!(plan(&d, &observed(true, true, Some(fresh))), vec![]);
        let mut primary = observed(
            true,
            true,
            Some(status("Primary", "UpToDate", "Connected", "UpToDate", None)),
        );
        primary.domains.insert("kvm1".into(), DomainState::ShutOff);
        assert_eq!(plan(&d, &primary), vec![], "no guest start either");
        primary.domains.insert("kvm1".into(), DomainState::Running);
        assert_eq!(plan(&d, &primary), vec![], "a running guest is kept");
    }

    #[test]
    fn guest_starts_only_on_an_uptodate_primary_and_stops_before_demotion() {
        let syncing_secondary = status("Secondary", "UpToDate", "Connected", "UpToDate", None);
        // Promote first; the guest waits for the next pass.
        let steps = plan(
            &with_vm(desired(true, true), true),
            &observed(true, true, Some(syncing_secondary)),
        );
        assert_eq!(
            steps,
            vec![Step::Primary {
                resource: r(),
                force: false
            }]
        );
        let primary = status("Primary", "UpToDate", "Connected", "UpToDate", None);
        let steps = plan(
            &with_vm(desired(true, true), true),
            &observed(true, true, Some(primary.clone())),
        );
        assert_eq!(
            steps,
            vec![
                Step::DefineDomain { name: "kvm1".into() },
                Step::StartDomain { name: "kvm1".into() }
            ]
        );
        // Not captured yet: nothing to define from.
        assert_eq!(
            plan(
                &with_vm(desired(true, true), false),
                &observed(true, true, Some(primary.clone()))
            ),
            vec![]
        );
        let mut running = observed(true, true, Some(primary));
        running.domains.insert("kvm1".into(), DomainState::Running);
        assert_eq!(plan(&with_vm(desired(true, true), true), &running), vec![]);
        assert_eq!(
            plan(&with_vm(desired(true, false), true), &running),
            vec![
                Step::StopDomain {
                    name: "kvm1".into(),
                    timeout_secs: 120
                },
                Step::Secondary { resource: r() }
            ]
        );
    }

    #[test]
    fn without_a_lease_the_guest_is_destroyed_at_once_and_the_volume_demoted() {
        let primary = status("Primary", "UpToDate", "Connected", "UpToDate", None);
        let mut running = observed(true, true, Some(primary));
        running.domains.insert("kvm1".into(), DomainState::Running);
        let mut fenced = with_vm(desired(true, false), true);
        fenced.fenced = true;
        assert_eq!(
            plan(&fenced, &running),
            vec![
                Step::StopDomain {
                    name: "kvm1".into(),
                    timeout_secs: 0
                },
                Step::Secondary { resource: r() }
            ]
        );
    }

    #[test]
    fn reports_up_with_a_warning_during_the_resync() {
        let syncing = status("Primary", "UpToDate", "Connected", "Inconsistent", Some(30.84));
        let rep = report(
            &desired(true, true),
            &observed(true, true, Some(syncing)),
            &BTreeMap::new(),
        );
        assert_eq!((rep.avail, rep.warn, rep.provisioned), (Avail::Up, true, true));
        assert_eq!(rep.resources[0].label, "kvm1");
        assert_eq!(rep.resources[0].messages[0], "Volume demo/vol/kvm1 has warnings");
        assert!(
            rep.resources[0].messages[1].contains("30.84"),
            "{:?}",
            rep.resources[0].messages
        );
        let done = status("Primary", "UpToDate", "Connected", "UpToDate", None);
        let rep = report(
            &desired(true, true),
            &observed(true, true, Some(done)),
            &BTreeMap::new(),
        );
        assert_eq!((rep.avail, rep.warn), (Avail::Up, false));
        let passive = status("Secondary", "UpToDate", "Connected", "UpToDate", None);
        let rep = report(
            &desired(true, false),
            &observed(true, true, Some(passive)),
            &BTreeMap::new(),
        );
        assert_eq!((rep.avail, rep.provisioned), (Avail::Down, true));
        let errors = BTreeMap::from([("volume#data".to_string(), "lvcreate failed: no space".to_string())]);
        let rep = report(&desired(true, true), &observed(false, false, None), &errors);
        assert_eq!((rep.avail, rep.warn, rep.provisioned), (Avail::Down, true, false));
    }
}
