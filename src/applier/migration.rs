//! A live switch, seen from one participant: what it does next in the committed phase, from
//! what its drivers see. Pure, like `plan`; the applier runs the acts and commits the phase
//! they end with. Each phase is committed by the node that did its work, so after a crash or
//! a leader change the phase in the log says what is left, and the domain's actual place
//! (never a guess) decides between going on and aborting.
//!
//! A switch: in `Stopping` the source (no longer active) stops its guests and demotes (plan),
//! then commits `Starting`, which hands the service to the target; the target promotes and
//! starts the guests (plan), then commits `Done`. Aborted in `Stopping`, the source takes the
//! service back at once (the target never promoted).
//!
//! A live switch:
//!
//! | phase       | source (holds the service)                 | target                                  |
//! |-------------|--------------------------------------------|-----------------------------------------|
//! | Prepare     | checks the guest runs here and the target's DRBD is Connected and UpToDate; allows two primaries; commits DualPrimary, or Abort with why | - |
//! | DualPrimary | allows two primaries again if a reboot reset it (plan) | allows two primaries, promotes only while connected to the source (plan); commits Migrating |
//! | Migrating   | live-migrates each guest still here; commits Finalize, or Abort on failure (or when a guest is paused here); with the guest gone, asks the target: Abort at once if it is on neither side, after `VANISHED_GRACE` if the target does not answer | as in DualPrimary; commits Finalize once every guest runs here (running: an incoming domain, paused while the copy lasts, is not enough) |
//! | Finalize    | stops what is left, demotes (plan); disallows two primaries | once the source is Secondary: disallows, commits Done |
//! | Abort       | once the target is Secondary (at once if the switch never reached DualPrimary): disallows, commits Done; restarts the guest if it is gone (plan) | stops what it has, demotes (plan), disallows |

use std::time::Duration;

use super::plan::{peers_demoted, Desired, Observed};
use crate::drivers::hypervisor::DomainState;
use crate::model::Phase;

/// One thing a participant does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// `allow-two-primaries` on every DRBD volume of the service, on this side.
    AllowTwoPrimaries(bool),
    /// Live-migrate every guest running here to the peer; then commit `Finalize` on success,
    /// `Abort` with the error on failure.
    Migrate,
    /// Commit the next phase, with why when it is `Abort`.
    Commit(Phase, Option<String>),
}

/// How long the source of a live switch in `Migrating` waits, once no guest runs on it and
/// the target's hypervisor cannot be asked, before it decides the guest runs on neither side
/// and commits `Abort` (a guest the target does have is then stopped there first). When the
/// target answers, its answer decides at once.
pub const VANISHED_GRACE: Duration = Duration::from_secs(30);

/// What this node does next for the live switch it takes part in; nothing when it waits for
/// the other side. `vanished_for`: on the source in `Migrating`, how long no guest has run
/// here (as this daemon saw it).
pub fn next(desired: &Desired, observed: &Observed, vanished_for: Option<Duration>) -> Vec<Act> {
    let Some(m) = &desired.migration else { return vec![] };
    let drbd: Vec<_> = desired
        .volumes
        .iter()
        .filter_map(|v| v.drbd.as_ref())
        .map(|d| (d.resource.as_str(), observed.drbd.get(&d.resource)))
        .collect();
    let state = |c: &super::plan::DesiredContainer| observed.domains.get(&c.domain).copied();
    // Guests not running here: absent, shut off, or paused (as a live switch's incoming
    // domain is until the copy ends).
    let not_running_here = || {
        desired
            .containers
            .iter()
            .filter(|c| state(c) != Some(DomainState::Running))
            .map(|c| c.domain.as_str())
            .collect::<Vec<_>>()
    };
    // Some guest still here, running or paused.
    let any_active_here = || {
        desired
            .containers
            .iter()
            .any(|c| state(c).is_some_and(DomainState::active))
    };
    let all_role = |role: &str| drbd.iter().all(|(_, st)| st.is_some_and(|s| s.role == role));
    let peer_secondary = || {
        drbd.iter()
            .all(|(_, st)| st.is_some_and(|s| peers_demoted(s, &desired.gone)))
    };
    match (m.phase, m.source) {
        (Phase::Stopping, true) if !any_active_here() && all_role("Secondary") => {
            vec![Act::Commit(Phase::Starting, None)]
        }
        (Phase::Starting, false) if not_running_here().is_empty() && all_role("Primary") => {
            vec![Act::Commit(Phase::Done, None)]
        }
        (Phase::Prepare, true) => {
            if let Some(why) = &m.unusable {
                return abort(why.clone());
            }
            if let Some(d) = not_running_here().first() {
                return abort(format!("the guest {d} does not run on the source"));
            }
            for (res, st) in &drbd {
                let Some(st) = st else {
                    return abort(format!("DRBD resource {res} is not up on the source"));
                };
                let disk = st.devices.first().map_or("", |d| d.disk_state.as_str());
                if st.role != "Primary" || disk != "UpToDate" {
                    return abort(format!("DRBD {res} is {}/{disk} on the source", st.role));
                }
                let conn = st.connections.iter().find(|c| c.name == m.peer.node);
                let (cs, pd) = conn.map_or(("absent", "DUnknown"), |c| {
                    let pd = c
                        .peer_devices
                        .iter()
                        .map(|p| p.peer_disk_state.as_str())
                        .find(|d| *d != "UpToDate")
                        .unwrap_or("UpToDate");
                    (c.connection_state.as_str(), pd)
                });
                if cs != "Connected" || pd != "UpToDate" {
                    return abort(format!(
                        "DRBD {res} on {} is {cs}/{pd}: a live switch needs it Connected and UpToDate",
                        m.peer.node
                    ));
                }
            }
            vec![Act::AllowTwoPrimaries(true), Act::Commit(Phase::DualPrimary, None)]
        }
        (Phase::DualPrimary, false) if all_role("Primary") => vec![Act::Commit(Phase::Migrating, None)],
        (Phase::Migrating, true) => {
            if desired.containers.is_empty() {
                vec![Act::Commit(Phase::Finalize, None)]
            } else if !any_active_here() {
                // Gone from here: on the target, which commits Finalize as soon as it sees it,
                // or nowhere (this node was reset during the copy). Never restarted here in
                // this phase. Where it runs is asked of the target's hypervisor: on neither
                // side, the switch is aborted and the guest starts again here once the target
                // demoted; running (or arriving, paused) there, this node waits. Unanswered,
                // it waits `VANISHED_GRACE`, then aborts (a guest the target has is stopped
                // there before this node starts it).
                let nowhere = observed.peer_domains.as_ref().map(|peer| {
                    desired
                        .containers
                        .iter()
                        .all(|c| peer.get(&c.domain).is_some_and(|s| !s.active()))
                });
                match (nowhere, vanished_for) {
                    (Some(true), _) => abort(format!(
                        "the guest runs on neither side: gone from this node and absent from {}",
                        m.peer.node
                    )),
                    (None, Some(d)) if d >= VANISHED_GRACE => abort(format!(
                        "the guest runs on neither side as far as this node can tell: gone from it for {} s, and {} did not answer",
                        d.as_secs(),
                        m.peer.node
                    )),
                    _ => vec![],
                }
            } else if let Some(why) = &m.unusable {
                abort(why.clone())
            } else {
                vec![Act::Migrate]
            }
        }
        // Running, not merely arrived: libvirt's incoming domain is active but paused from
        // the start of the copy, and the copy can still fail.
        (Phase::Migrating, false) if !desired.containers.is_empty() && not_running_here().is_empty() => {
            vec![Act::Commit(Phase::Finalize, None)]
        }
        // Aborted before the target could promote: nothing to wait for.
        (Phase::Finalize, false) | (Phase::Abort, true) if peer_secondary() || (m.phase == Phase::Abort && !m.dual) => {
            vec![Act::AllowTwoPrimaries(false), Act::Commit(Phase::Done, None)]
        }
        (Phase::Finalize, true) | (Phase::Abort, false) if all_role("Secondary") => {
            vec![Act::AllowTwoPrimaries(false)]
        }
        _ => vec![],
    }
}

fn abort(why: String) -> Vec<Act> {
    vec![Act::Commit(Phase::Abort, Some(why))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applier::plan::tests::{desired, observed, status, with_vm, RES};
    use crate::applier::plan::{plan, DesiredMigration, Step};
    use crate::drivers::hypervisor::MigrationTarget;

    fn part(phase: Phase, source: bool) -> Desired {
        // The source holds the service until the hand-over, and again after an Abort (in
        // Stopping it holds it but releases it).
        let source_holds = (phase < Phase::Finalize && phase != Phase::Stopping) || phase == Phase::Abort;
        let mut d = with_vm(desired(true, source == source_holds), true);
        d.migration = Some(DesiredMigration {
            id: 7,
            phase,
            dual: phase > Phase::Prepare,
            source,
            peer: MigrationTarget {
                node: "n2".into(),
                libvirt_uri: "qemu+tcp://n2/system".into(),
                migration_uri: None,
            },
            unusable: None,
        });
        d
    }

    fn seen(role: &str, peer_disk: &str, conn: &str, vm: DomainState) -> Observed {
        let mut st = status(role, "UpToDate", conn, peer_disk, None);
        st.connections[0].peer_role = "Secondary".into();
        let mut o = observed(true, true, Some(st));
        o.domains.insert("kvm1".into(), vm);
        // Two primaries allowed with n2, as the dual phases want: their tests are about
        // other things, except where a test clears it.
        o.two_primaries.insert(RES.into(), ["n2".to_string()].into());
        o
    }

    #[test]
    fn a_switch_source_stops_and_demotes_then_the_target_starts() {
        let running = seen("Primary", "UpToDate", "Connected", DomainState::Running);
        let src = part(Phase::Stopping, true);
        assert!(!src.active, "the source releases the service");
        assert_eq!(
            plan(&src, &running),
            vec![
                Step::StopDomain {
                    name: "kvm1".into(),
                    timeout_secs: 120
                },
                Step::Secondary { resource: RES.into() }
            ]
        );
        assert_eq!(next(&src, &running, None), vec![]);
        let demoted = seen("Secondary", "UpToDate", "Connected", DomainState::ShutOff);
        assert_eq!(next(&src, &demoted, None), vec![Act::Commit(Phase::Starting, None)]);
        // A paused guest still holds its disks: stopped first, never handed over.
        let paused = seen("Secondary", "UpToDate", "Connected", DomainState::Paused);
        assert_eq!(next(&src, &paused, None), vec![]);
        assert!(matches!(&plan(&src, &paused)[..], [Step::StopDomain { .. }, ..]));
        let dst = part(Phase::Starting, false);
        let promoted = seen("Primary", "UpToDate", "Connected", DomainState::ShutOff);
        assert_eq!(plan(&dst, &promoted), vec![Step::StartDomain { name: "kvm1".into() }]);
        assert_eq!(next(&dst, &promoted, None), vec![]);
        assert_eq!(next(&dst, &running, None), vec![Act::Commit(Phase::Done, None)]);
    }

    #[test]
    fn prepare_goes_on_only_when_the_target_is_connected_and_up_to_date() {
        let ok = seen("Primary", "UpToDate", "Connected", DomainState::Running);
        assert_eq!(
            next(&part(Phase::Prepare, true), &ok, None),
            vec![Act::AllowTwoPrimaries(true), Act::Commit(Phase::DualPrimary, None)]
        );
        for (disk, conn) in [
            ("Outdated", "Connected"),
            ("UpToDate", "Connecting"),
            ("Inconsistent", "Connected"),
        ] {
            let acts = next(
                &part(Phase::Prepare, true),
                &seen("Primary", disk, conn, DomainState::Running),
                None,
            );
            assert!(
                matches!(&acts[..], [Act::Commit(Phase::Abort, Some(why))] if why.contains("on n2") && why.contains(conn)),
                "{disk} {conn}: {acts:?}"
            );
        }
        let stopped = seen("Primary", "UpToDate", "Connected", DomainState::ShutOff);
        assert!(
            matches!(&next(&part(Phase::Prepare, true), &stopped, None)[..], [Act::Commit(Phase::Abort, Some(w))] if w.contains("kvm1"))
        );
        // The target has nothing to do in Prepare.
        assert_eq!(next(&part(Phase::Prepare, false), &ok, None), vec![]);
    }

    #[test]
    fn the_source_aborts_rather_than_open_a_migration_uri_outside_the_transports() {
        let running = seen("Primary", "UpToDate", "Connected", DomainState::Running);
        for phase in [Phase::Prepare, Phase::Migrating] {
            let mut d = part(phase, true);
            if let Some(m) = d.migration.as_mut() {
                m.unusable = Some("migration.libvirt_uri cannot be used: transport".into());
            }
            assert_eq!(
                next(&d, &running, None),
                vec![Act::Commit(
                    Phase::Abort,
                    Some("migration.libvirt_uri cannot be used: transport".into())
                )],
                "{phase}"
            );
        }
        assert_eq!(next(&part(Phase::Migrating, true), &running, None), vec![Act::Migrate]);
    }

    #[test]
    fn the_target_promotes_beside_the_source_then_commits_migrating() {
        let d = part(Phase::DualPrimary, false);
        let mut secondary = seen("Secondary", "UpToDate", "Connected", DomainState::Absent);
        secondary.drbd.get_mut(RES).unwrap().connections[0].peer_role = "Primary".into();
        secondary.two_primaries.clear();
        assert_eq!(
            plan(&d, &secondary),
            vec![
                Step::AllowTwoPrimaries {
                    resource: RES.into(),
                    allow: true
                },
                Step::Primary {
                    resource: RES.into(),
                    force: false
                }
            ]
        );
        assert_eq!(next(&d, &secondary, None), vec![]);
        let primary = seen("Primary", "UpToDate", "Connected", DomainState::Absent);
        assert_eq!(plan(&d, &primary), vec![]);
        assert_eq!(next(&d, &primary, None), vec![Act::Commit(Phase::Migrating, None)]);
    }

    #[test]
    fn the_target_promotes_beside_the_source_only_while_connected_to_it() {
        let d = part(Phase::Migrating, false);
        let mut cut = seen("Secondary", "UpToDate", "Connecting", DomainState::Absent);
        cut.drbd.get_mut(RES).unwrap().connections[0].peer_role = "Unknown".into();
        assert_eq!(plan(&d, &cut), vec![], "a second Primary across a cut: never");
        // Not even when the source is recorded gone: it may be Primary on its side.
        let mut gone = d.clone();
        gone.gone.insert("n2".into());
        assert_eq!(plan(&gone, &cut), vec![]);
    }

    #[test]
    fn a_rebooted_participant_allows_two_primaries_again_before_anything_else() {
        for (phase, source) in [
            (Phase::DualPrimary, true),
            (Phase::Migrating, true),
            (Phase::DualPrimary, false),
            (Phase::Migrating, false),
        ] {
            let d = part(phase, source);
            let mut rebooted = seen("Secondary", "UpToDate", "Connected", DomainState::Absent);
            rebooted.two_primaries.clear();
            let steps = plan(&d, &rebooted);
            assert_eq!(
                steps.first(),
                Some(&Step::AllowTwoPrimaries {
                    resource: RES.into(),
                    allow: true
                }),
                "{phase} source={source}: {steps:?}"
            );
        }
        // Outside the dual phases nothing is allowed by the plan.
        let mut o = seen("Primary", "UpToDate", "Connected", DomainState::Running);
        o.two_primaries.clear();
        assert_eq!(plan(&part(Phase::Prepare, true), &o), vec![]);
    }

    #[test]
    fn a_guest_on_neither_side_aborts_the_live_switch() {
        let src = part(Phase::Migrating, true);
        let mut gone = seen("Primary", "UpToDate", "Connected", DomainState::Absent);
        let aborts = |acts: Vec<Act>| matches!(&acts[..], [Act::Commit(Phase::Abort, Some(why))] if why.contains("neither side"));
        // The target cannot be asked: wait, then abort after the grace.
        assert_eq!(next(&src, &gone, Some(Duration::from_secs(1))), vec![]);
        assert!(aborts(next(&src, &gone, Some(VANISHED_GRACE))));
        // The target says it has it (running, or arriving paused): wait, however long.
        for there in [DomainState::Running, DomainState::Paused] {
            gone.peer_domains = Some([("kvm1".to_string(), there)].into());
            assert_eq!(next(&src, &gone, Some(VANISHED_GRACE * 10)), vec![], "{there:?}");
        }
        // The target says it has none: at once.
        for there in [DomainState::Absent, DomainState::ShutOff] {
            gone.peer_domains = Some([("kvm1".to_string(), there)].into());
            assert!(aborts(next(&src, &gone, Some(Duration::ZERO))), "{there:?}");
        }
        // The target never decides that: it cannot tell a guest still being copied.
        let dst = part(Phase::Migrating, false);
        assert_eq!(next(&dst, &gone, Some(VANISHED_GRACE)), vec![]);
    }

    #[test]
    fn while_migrating_the_source_never_restarts_the_guest_and_the_target_keeps_it() {
        let src = part(Phase::Migrating, true);
        let here = seen("Primary", "UpToDate", "Connected", DomainState::Running);
        assert_eq!(next(&src, &here, None), vec![Act::Migrate]);
        let gone = seen("Primary", "UpToDate", "Connected", DomainState::Absent);
        assert_eq!(
            plan(&src, &gone),
            vec![],
            "the source must not start the guest mid-migration"
        );
        assert_eq!(next(&src, &gone, None), vec![]);
        let dst = part(Phase::Migrating, false);
        assert_eq!(plan(&dst, &here), vec![], "the target must not stop the arriving guest");
        assert_eq!(next(&dst, &here, None), vec![Act::Commit(Phase::Finalize, None)]);
        assert_eq!(next(&dst, &gone, None), vec![]);
        // libvirt's incoming domain: active, paused until the copy ends, which may still
        // fail. Not the guest running there yet, and not to be stopped either.
        let arriving = seen("Primary", "UpToDate", "Connected", DomainState::Paused);
        assert_eq!(next(&dst, &arriving, None), vec![]);
        assert_eq!(plan(&dst, &arriving), vec![]);
        // Paused on the source (at the very end of the copy): still here, never restarted.
        assert_eq!(next(&src, &arriving, None), vec![Act::Migrate]);
        assert_eq!(plan(&src, &arriving), vec![]);
    }

    #[test]
    fn finalize_and_abort_end_once_the_other_side_demoted() {
        let mut primary_peer = seen("Primary", "UpToDate", "Connected", DomainState::Running);
        primary_peer.drbd.get_mut(RES).unwrap().connections[0].peer_role = "Primary".into();
        let secondary_peer = seen("Primary", "UpToDate", "Connected", DomainState::Running);
        for (phase, holder_is_source) in [(Phase::Finalize, false), (Phase::Abort, true)] {
            let holder = part(phase, holder_is_source);
            assert_eq!(next(&holder, &primary_peer, None), vec![], "{phase}");
            assert_eq!(
                next(&holder, &secondary_peer, None),
                vec![Act::AllowTwoPrimaries(false), Act::Commit(Phase::Done, None)]
            );
            let other = part(phase, !holder_is_source);
            let demoted = seen("Secondary", "UpToDate", "Connected", DomainState::Absent);
            assert_eq!(next(&other, &demoted, None), vec![Act::AllowTwoPrimaries(false)]);
        }
    }

    #[test]
    fn after_an_abort_the_source_restarts_a_lost_guest_only_once_the_target_demoted() {
        let d = part(Phase::Abort, true);
        let mut peer_primary = seen("Primary", "UpToDate", "Connected", DomainState::ShutOff);
        peer_primary.drbd.get_mut(RES).unwrap().connections[0].peer_role = "Primary".into();
        assert_eq!(plan(&d, &peer_primary), vec![]);
        let peer_secondary = seen("Primary", "UpToDate", "Connected", DomainState::ShutOff);
        assert_eq!(
            plan(&d, &peer_secondary),
            vec![Step::StartDomain { name: "kvm1".into() }]
        );
    }
}
