//! Deterministic scenarios, in the spirit of Pacemaker's
//! scheduler regression cases and Proxmox's HA simulator: scripted timelines on a simulated
//! cluster of two data nodes and a witness (three data nodes and two services for the
//! placement policies; see `world.rs` for what is real and what is
//! modelled), with the invariants checked after every 100 ms tick: a guest runs on at most
//! one node, DRBD is Primary on at most one node outside a committed live switch's
//! dual-primary window (and then exactly one node runs the guest), the simulators saw no split
//! brain, nothing acknowledged is lost and nodes that applied as much agree. A failure prints
//! the timeline. Then a randomized schedule generator over fixed seeds.

mod world;

use std::time::Duration;

use omraft::drivers::hypervisor::Hypervisor;
use omraft::model::{Command, Phase, Response};
use world::{path, World};

const S: fn(u64) -> Duration = Duration::from_secs;

fn id(w: &World, name: &str) -> u64 {
    w.id(name)
}

fn switch(w: &mut World, via: &str, to: &str) -> Response {
    let to = id(w, to);
    w.op(via, Command::Switch { path: path(), to }).unwrap()
}

fn live(w: &mut World, via: &str, to: &str) -> Response {
    let to = id(w, to);
    w.op(via, Command::LiveSwitch { path: path(), to }).unwrap()
}

/// `switch --abort` through node `via`: the switch in progress, from its committed phase.
fn abort(w: &mut World, via: &str) -> Option<Result<Response, String>> {
    let m = w.committed().services[&world::path()].migration.clone()?;
    let cmd = Command::MigrationPhase {
        path: path(),
        id: m.id,
        from: m.phase,
        to: Phase::Abort,
        error: Some("aborted by the operator".into()),
        fenced: None,
    };
    Some(w.op(via, cmd))
}

fn on(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The guest runs on `node` only, where the service is placed, and no switch is in progress.
fn settles_on(w: &mut World, node: &str, within: Duration) {
    let want = on(&[node]);
    w.run_until(within, &format!("the guest on {node} alone"), |w| {
        w.running() == want && w.placement().as_deref() == Some(node) && w.phase().is_none()
    });
}

/// Nothing moves for `d`: the guest stays on `node`.
fn stays_on(w: &mut World, node: &str, d: Duration) {
    let end = w.t + d;
    while w.t < end {
        w.tick();
        assert_eq!(
            w.running(),
            on(&[node]),
            "the guest left {node} at {:?}\n{}",
            w.t,
            w.trace.join("\n")
        );
    }
}

fn boots(w: &World, node: &str) -> String {
    let list = w.hv(node).list().unwrap();
    list.split("boots=")
        .nth(1)
        .map(|b| b.trim().to_string())
        .unwrap_or_default()
}

/// The check that nothing acknowledged is lost can fail: it compares what was acknowledged, as
/// it was, with the committed log and every node's applied log, so a log rewritten, truncated or
/// diverging on one node under an acknowledged write is caught.
#[test]
fn a_lost_or_changed_acknowledged_write_is_caught() {
    let mut w = World::new(1);
    assert_eq!(w.lost_acknowledged(), Vec::<String>::new());
    let acked = w.acked.last().expect("the setup was acknowledged").clone();
    let other = Command::ReportWatchdog {
        node_id: 1,
        armed: false,
    };
    assert_ne!(acked.command, other);
    let committed = w.log.clone();

    // The committed log rewritten under it (its length unchanged).
    w.log[acked.index] = other.clone();
    let lost = w.lost_acknowledged();
    assert!(
        lost.iter()
            .any(|l| l.contains(&format!("entry {}", acked.index)) && l.contains("the committed log")),
        "{lost:?}"
    );
    w.log = committed.clone();

    // The committed log truncated below it.
    w.log.truncate(acked.index);
    let lost = w.lost_acknowledged();
    assert!(
        lost.iter().any(|l| l.contains("missing from the committed log")),
        "{lost:?}"
    );
    w.log = committed;

    // One node's applied log diverging at it.
    let n2 = w.id("n2");
    w.nodes.get_mut(&n2).unwrap().log[acked.index] = other;
    let lost = w.lost_acknowledged();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(lost[0].contains("n2's applied log"), "{lost:?}");
}

#[test]
fn s01_setup_runs_the_guest_on_n1_with_one_primary() {
    let mut w = World::new(1);
    assert_eq!(w.primaries(), on(&["n1"]));
    stays_on(&mut w, "n1", S(10));
}

#[test]
fn s02_power_off_of_the_active_node_fails_over_to_n2() {
    let mut w = World::new(2);
    w.run_for(S(2));
    w.power_off("n1");
    settles_on(&mut w, "n2", S(20));
    // n2 promoted beside a peer of unknown state: DRBD ran fence-peer first, and the
    // cluster marked n1 outdated.
    let log = std::fs::read_to_string(w.sim.join("handlers.log")).unwrap_or_default();
    assert!(
        log.contains("n2 ") && log.contains("fence-peer peer=n1 exit 4"),
        "{log}"
    );
    assert!(!w.committed().outdated.is_empty());
}

#[test]
fn s03_power_off_of_the_passive_node_moves_nothing() {
    let mut w = World::new(3);
    w.power_off("n2");
    stays_on(&mut w, "n1", S(15));
}

#[test]
fn s04_power_off_of_the_witness_moves_nothing() {
    let mut w = World::new(4);
    w.power_off("w");
    stays_on(&mut w, "n1", S(15));
}

#[test]
fn s05_network_cut_of_the_active_node_it_fences_itself_before_n2_starts() {
    let mut w = World::new(5);
    w.run_for(S(2));
    w.cut("n1");
    // The per-tick check proves the order: n2 can only start once n1 stopped.
    settles_on(&mut w, "n2", S(20));
}

#[test]
fn s06_network_cut_of_the_passive_node_moves_nothing() {
    let mut w = World::new(6);
    w.cut("n2");
    stays_on(&mut w, "n1", S(15));
}

#[test]
fn s07_network_cut_of_the_witness_moves_nothing() {
    let mut w = World::new(7);
    w.cut("w");
    stays_on(&mut w, "n1", S(15));
}

#[test]
fn s08_a_healed_active_node_comes_back_passive() {
    let mut w = World::new(8);
    w.run_for(S(2));
    w.cut("n1");
    settles_on(&mut w, "n2", S(20));
    // Its lease ran out, so its watchdog reset it: it comes back by a reboot.
    assert!(w.trace.iter().any(|l| l.contains("n1: watchdog reset")));
    w.heal("n1");
    w.power_on("n1");
    stays_on(&mut w, "n2", S(10));
    w.run_until(S(10), "n1 reconnected and Secondary", |w| w.primaries() == on(&["n2"]));
}

#[test]
fn s09_a_power_cycled_active_node_comes_back_passive() {
    let mut w = World::new(9);
    w.run_for(S(2));
    w.power_off("n1");
    settles_on(&mut w, "n2", S(20));
    w.power_on("n1");
    stays_on(&mut w, "n2", S(10));
}

#[test]
fn s10_a_restarted_daemon_on_the_active_node_keeps_its_guest() {
    let mut w = World::new(10);
    w.transfer_leader("w");
    w.run_for(S(2));
    w.restart_daemon("n1");
    stays_on(&mut w, "n1", S(10));
}

#[test]
fn s10b_a_restarted_daemon_on_the_active_leader_runs_its_guest_again_once_leased() {
    // Restarted without a lease and with no leader to renew with, n1 stops its guest; the
    // election (under a second with the default timing) ends before n1's watchdog would fire,
    // the new leader grants n1 a lease and n1 starts the guest again where it is placed:
    // nothing is reset, nothing moves, nothing runs twice (the world checks that throughout).
    let mut w = World::new(10);
    w.run_for(S(2));
    w.restart_daemon("n1");
    w.run_for(S(5));
    settles_on(&mut w, "n1", S(1));
    assert!(
        !w.trace.iter().any(|l| l.contains("watchdog reset")),
        "{}",
        w.trace.join("\n")
    );
    assert!(
        w.trace.iter().any(|l| l.contains("n2 elected leader")),
        "{}",
        w.trace.join("\n")
    );
}

#[test]
fn s11_a_restarted_daemon_on_the_passive_node_moves_nothing() {
    let mut w = World::new(11);
    w.restart_daemon("n2");
    stays_on(&mut w, "n1", S(10));
}

#[test]
fn s12_a_killed_daemon_on_the_active_node_is_reset_by_its_watchdog_then_failover() {
    let mut w = World::new(12);
    w.run_for(S(2));
    w.kill_daemon("n1");
    settles_on(&mut w, "n2", S(20));
    assert!(
        w.trace.iter().any(|l| l.contains("n1: watchdog reset")),
        "{}",
        w.trace.join("\n")
    );
}

#[test]
fn s13_a_hung_active_daemon_is_reset_by_its_watchdog_before_n2_starts() {
    let mut w = World::new(13);
    w.run_for(S(2));
    w.hang("n1");
    settles_on(&mut w, "n2", S(20));
    let reset = w.trace.iter().position(|l| l.contains("n1: watchdog reset"));
    let failover = w.trace.iter().position(|l| l.contains("failover"));
    assert!(reset.is_some() && reset < failover, "{}", w.trace.join("\n"));
    // SIGCONT after the reset: nothing to resume.
    w.resume("n1");
    stays_on(&mut w, "n2", S(5));
}

#[test]
fn s14_a_short_hang_of_the_active_daemon_moves_nothing() {
    let mut w = World::new(14);
    w.run_for(S(2));
    w.hang("n1");
    w.run_for(Duration::from_millis(500));
    w.resume("n1");
    stays_on(&mut w, "n1", S(10));
}

#[test]
fn s15_a_hung_passive_daemon_moves_nothing() {
    let mut w = World::new(15);
    w.hang("n2");
    stays_on(&mut w, "n1", S(10));
    w.resume("n2");
    stays_on(&mut w, "n1", S(5));
}

#[test]
fn s16_without_a_majority_the_active_node_stops_then_the_others_take_over() {
    let mut w = World::new(16);
    w.run_for(S(2));
    w.power_off("n2");
    w.power_off("w");
    w.run_until(S(10), "n1 fenced itself (no quorum)", |w| w.running().is_empty());
    // It lost its lease, so its watchdog reset it. The other two come back: n2 takes over.
    w.power_on("w");
    w.power_on("n2");
    settles_on(&mut w, "n2", S(20));
}

#[test]
fn s17_switch_moves_the_guest() {
    let mut w = World::new(17);
    assert_eq!(switch(&mut w, "n1", "n2"), Response::Done);
    settles_on(&mut w, "n2", S(10));
    assert_eq!(switch(&mut w, "n2", "n1"), Response::Done);
    settles_on(&mut w, "n1", S(10));
}

#[test]
fn s18_live_switch_moves_the_guest_without_a_reboot() {
    let mut w = World::new(18);
    let before = boots(&w, "n1");
    assert_eq!(live(&mut w, "n2", "n2"), Response::Done);
    settles_on(&mut w, "n2", S(10));
    assert_eq!(boots(&w, "n2"), before);
    assert_eq!(w.last_migration_error(), None);
    assert_eq!(w.primaries(), on(&["n2"]));
}

#[test]
fn s19_live_switch_to_a_disconnected_target_is_refused() {
    let mut w = World::new(19);
    w.cut("n2");
    w.run_for(S(1));
    // n1 reported n2 Connecting: refused before anything starts, naming why.
    assert!(
        matches!(live(&mut w, "n1", "n2"), Response::Refused(m) if m.to_string().contains("n2's DRBD") && m.to_string().contains("Connected/UpToDate")),
        "{}",
        w.trace.join("\n")
    );
    assert_eq!(w.phase(), None);
    stays_on(&mut w, "n1", S(5));
}

#[test]
fn s20_a_live_migration_failing_halfway_aborts_and_the_guest_stays() {
    let mut w = World::new(20);
    let before = boots(&w, "n1");
    w.migrations_fail(true);
    live(&mut w, "n1", "n2");
    w.run_until(S(5), "the switch aborted", |w| w.phase().is_none());
    assert!(w.last_migration_error().unwrap().contains("migrating kvm1"));
    stays_on(&mut w, "n1", S(5));
    assert_eq!(boots(&w, "n1"), before, "the guest never stopped");
    assert_eq!(w.primaries(), on(&["n1"]));
    w.migrations_fail(false);
    live(&mut w, "n1", "n2");
    settles_on(&mut w, "n2", S(10));
}

#[test]
fn s21_killing_the_leader_which_is_the_source_of_a_switch_ends_with_the_guest_on_the_target() {
    let mut w = World::new(21);
    w.run_for(S(1));
    switch(&mut w, "n1", "n2");
    w.kill_daemon("n1");
    // n1 never stopped its guest: its watchdog resets it, and once its lease ran out the new
    // leader fails the service over to n2 (the switch ends there).
    settles_on(&mut w, "n2", S(20));
}

#[test]
fn s22_killing_the_leader_which_is_the_source_of_a_live_switch_fails_over_to_the_target() {
    let mut w = World::new(22);
    w.run_for(S(1));
    live(&mut w, "n1", "n2");
    w.kill_daemon("n1");
    settles_on(&mut w, "n2", S(20));
    assert!(w.last_migration_error().unwrap_or_default().contains("failed over"));
}

#[test]
fn s23_a_leader_change_during_a_live_switch_does_not_stop_it() {
    let mut w = World::new(23);
    w.transfer_leader("w");
    w.run_for(S(1));
    let before = boots(&w, "n1");
    live(&mut w, "n1", "n2");
    w.kill_daemon("w");
    settles_on(&mut w, "n2", S(20));
    assert_eq!(boots(&w, "n2"), before);
    w.start_daemon("w");
    stays_on(&mut w, "n2", S(5));
}

#[test]
fn s24_the_source_restarting_in_the_migrating_phase_resumes_the_migration() {
    let mut w = World::new(24);
    w.transfer_leader("w");
    w.run_for(S(1));
    let before = boots(&w, "n1");
    live(&mut w, "n1", "n2");
    w.run_until(S(2), "phase Migrating", |w| w.phase() == Some(Phase::Migrating));
    w.restart_daemon("n1");
    settles_on(&mut w, "n2", S(10));
    assert_eq!(boots(&w, "n2"), before, "migrated, not restarted");
}

#[test]
fn s24b_a_leader_that_lost_and_regained_leadership_between_two_orchestrator_ticks_waits_again() {
    let mut w = World::new(0);
    // w leads long enough to act, with fresh grants for n1 and n2.
    w.transfer_leader("w");
    w.run_for(Duration::from_secs(5));
    // Its orchestrator is busy while leadership goes to n2, which grants the leases for 4 s,
    // and comes back to w, now cut from n1: w's own record of n1's lease is 4 s old, the
    // lease n1 holds from n2 is not. w must start over in its new term (wait one lease plus
    // the margin) rather than move the guest while n1 may still run it.
    w.stall_orchestrator("w", Duration::from_millis(4500));
    w.transfer_leader("n2");
    w.run_for(Duration::from_secs(4));
    w.cut_pair("n1", "w", false);
    w.transfer_leader("w");
    // n1 cannot renew, fences itself once its lease ran out, then the guest moves: the world
    // fails the test if the move commits while n1's lease still runs.
    settles_on(&mut w, "n2", Duration::from_secs(20));
}

#[test]
fn s25_a_target_hung_in_dual_primary_the_operator_aborts_and_the_guest_stays() {
    let mut w = World::new(25);
    w.transfer_leader("w");
    w.run_for(S(1));
    live(&mut w, "n1", "n2");
    w.hang("n2");
    // Before n2's lease, plus the drift margin, runs out (2.9 s with the defaults): after it
    // the orchestrator would abort the switch itself.
    w.run_for(Duration::from_millis(1500));
    assert_eq!(w.phase(), Some(Phase::DualPrimary));
    assert_eq!(abort(&mut w, "n1"), Some(Ok(Response::Done)));
    settles_on(&mut w, "n1", S(10));
    assert!(w.last_migration_error().unwrap().contains("operator"));
    w.resume("n2");
    stays_on(&mut w, "n1", S(5));
}

#[test]
fn s26_with_the_target_frozen_a_power_loss_moves_nothing_until_thawed() {
    let mut w = World::new(26);
    let n2 = id(&w, "n2");
    w.op(
        "n1",
        Command::FreezeNode {
            node_id: n2,
            frozen: true,
        },
    )
    .unwrap();
    w.run_for(S(1));
    w.power_off("n1");
    w.run_for(S(15));
    assert!(w.running().is_empty());
    w.op(
        "n2",
        Command::FreezeNode {
            node_id: n2,
            frozen: false,
        },
    )
    .unwrap();
    settles_on(&mut w, "n2", S(10));
}

#[test]
fn s27_a_frozen_service_is_not_failed_over_until_thawed() {
    let mut w = World::new(27);
    w.op(
        "n1",
        Command::FreezeService {
            path: path(),
            frozen: true,
        },
    )
    .unwrap();
    w.run_for(S(1));
    w.power_off("n1");
    w.run_for(S(15));
    assert!(w.running().is_empty());
    w.op(
        "n2",
        Command::FreezeService {
            path: path(),
            frozen: false,
        },
    )
    .unwrap();
    settles_on(&mut w, "n2", S(10));
}

#[test]
fn s28_both_nodes_frozen_nothing_moves() {
    let mut w = World::new(28);
    for n in ["n1", "n2"] {
        let node_id = id(&w, n);
        w.op("n1", Command::FreezeNode { node_id, frozen: true }).unwrap();
    }
    w.run_for(S(1));
    w.cut("n1");
    w.run_for(S(15));
    assert!(w.running().is_empty(), "n1 fenced itself, n2 is frozen");
}

#[test]
fn s29_after_a_failover_the_old_node_returns_and_the_guest_is_switched_back_live() {
    let mut w = World::new(29);
    w.run_for(S(1));
    w.power_off("n1");
    settles_on(&mut w, "n2", S(20));
    w.power_on("n1");
    // Refused until n2 reports n1 back, connected and in sync; then accepted.
    let before = boots(&w, "n2");
    let n1 = id(&w, "n1");
    let end = w.t + S(20);
    while live(&mut w, "n2", "n1") != Response::Done {
        assert!(
            w.t < end,
            "the live switch back was never accepted\n{}",
            w.trace.join("\n")
        );
        w.run_for(Duration::from_millis(500));
    }
    assert!(w.committed().reports[&world::path()].contains_key(&n1));
    settles_on(&mut w, "n1", S(10));
    assert_eq!(boots(&w, "n1"), before);
}

#[test]
fn s30_the_source_cut_off_during_a_live_switch_fences_itself_and_the_target_takes_over() {
    let mut w = World::new(30);
    w.transfer_leader("w");
    w.run_for(S(1));
    live(&mut w, "n2", "n2");
    w.cut("n1");
    settles_on(&mut w, "n2", S(20));
}

#[test]
fn s31_the_witness_cut_off_during_a_live_switch_changes_nothing() {
    let mut w = World::new(31);
    w.run_for(S(1));
    live(&mut w, "n1", "n2");
    w.cut("w");
    settles_on(&mut w, "n2", S(10));
    w.heal("w");
    stays_on(&mut w, "n2", S(5));
}

#[test]
fn s32_live_switches_back_and_forth_never_reboot_the_guest() {
    let mut w = World::new(32);
    let before = boots(&w, "n1");
    for (via, to) in [
        ("n1", "n2"),
        ("n2", "n1"),
        ("w", "n2"),
        ("n1", "n1"),
        ("n2", "n2"),
        ("w", "n1"),
    ] {
        assert_eq!(live(&mut w, via, to), Response::Done);
        settles_on(&mut w, to, S(10));
    }
    assert_eq!(boots(&w, "n1"), before);
}

#[test]
fn s33_a_second_switch_during_a_live_switch_is_refused_and_changes_nothing() {
    let mut w = World::new(33);
    w.transfer_leader("w");
    w.run_for(S(1));
    live(&mut w, "n1", "n2");
    w.hang("n2");
    w.run_for(S(1));
    let before = w.committed().clone();
    assert!(
        matches!(switch(&mut w, "n1", "n2"), Response::Refused(m) if m.to_string().contains("switch is in progress"))
    );
    assert!(matches!(
        w.op(
            "n1",
            Command::SetStarted {
                path: path(),
                started: false
            }
        )
        .unwrap(),
        Response::Refused(_)
    ));
    assert_eq!(w.committed().services, before.services);
    w.resume("n2");
    settles_on(&mut w, "n2", S(10));
}

#[test]
fn s34_stop_and_start_with_a_node_down() {
    let mut w = World::new(34);
    w.power_off("n2");
    w.op(
        "n1",
        Command::SetStarted {
            path: path(),
            started: false,
        },
    )
    .unwrap();
    w.run_until(S(5), "the guest stopped", |w| {
        w.running().is_empty() && w.primaries().is_empty()
    });
    w.op(
        "n1",
        Command::SetStarted {
            path: path(),
            started: true,
        },
    )
    .unwrap();
    settles_on(&mut w, "n1", S(10));
}

/// One random timeline: 30 events (faults, heals, operator actions) at random intervals, then
/// everything healed and thawed; the guest must end up running on exactly one node, where the
/// service is placed. The invariants hold at every tick throughout.
fn random_schedule(seed: u64) {
    let mut w = World::new(seed);
    let mut rng = world::Rng::new(seed ^ 0x5EED);
    let names = ["n1", "n2", "w"];
    let data = ["n1", "n2"];
    let pick = |rng: &mut world::Rng, from: &[&'static str]| from[rng.below(from.len() as u64) as usize];
    for _ in 0..30 {
        w.run_for(TICK_MS * rng.below(40) as u32);
        let n = pick(&mut rng, &names);
        let d = pick(&mut rng, &data);
        let powered = w.nodes[&w.id(n)].power;
        match rng.below(19) {
            0 if powered => w.power_off(n),
            1 if !powered => w.power_on(n),
            2 => w.cut(n),
            3 => w.heal(n),
            4 if powered => w.hang(n),
            5 => w.resume(n),
            6 if powered => w.restart_daemon(n),
            7 => {
                let _ = w.op(
                    n,
                    Command::Switch {
                        path: path(),
                        to: w.id(d),
                    },
                );
            }
            8 | 9 => {
                let _ = w.op(
                    n,
                    Command::LiveSwitch {
                        path: path(),
                        to: w.id(d),
                    },
                );
            }
            10 => {
                let _ = abort(&mut w, n);
            }
            11 => {
                let frozen = rng.below(2) == 0;
                let _ = w.op(n, Command::FreezeService { path: path(), frozen });
            }
            12 => {
                let (node_id, frozen) = (w.id(d), rng.below(2) == 0);
                let _ = w.op(n, Command::FreezeNode { node_id, frozen });
            }
            13 => w.migrations_fail(rng.below(2) == 0),
            14 => w.transfer_leader(n),
            15 => w.cut_drbd(d),
            16 | 17 => {
                let other = pick(&mut rng, &names);
                w.cut_pair(n, other, rng.below(2) == 0);
            }
            // A combined fault during a switch: both data nodes reset, back one after the other.
            18 if w.phase().is_some() => {
                w.power_off("n1");
                w.power_off("n2");
                w.run_for(TICK_MS * (5 + rng.below(10)) as u32);
                let first = pick(&mut rng, &data);
                w.power_on(first);
                w.run_for(TICK_MS * rng.below(10) as u32);
                w.power_on(if first == "n1" { "n2" } else { "n1" });
            }
            _ => {}
        }
    }
    // Heal everything, thaw everything: the cluster must converge. A node its watchdog resets
    // from now on reboots, as a machine does.
    w.reboot_after_reset = Some(S(5));
    w.migrations_fail(false);
    for n in names {
        w.heal(n);
        w.resume(n);
        if !w.nodes[&w.id(n)].power {
            w.power_on(n);
        } else if w.nodes[&w.id(n)].daemon == world::Daemon::Dead {
            w.start_daemon(n);
        }
    }
    // Everything healed now: a leader, then the guest once where it is placed, within 30 s.
    let healed = w.t;
    w.run_until(S(20), "a leader", |w| w.leader_name().is_some());
    w.op(
        "w",
        Command::FreezeService {
            path: path(),
            frozen: false,
        },
    )
    .unwrap();
    for d in data {
        let node_id = w.id(d);
        w.op("w", Command::FreezeNode { node_id, frozen: false }).unwrap();
    }
    let left = S(30).saturating_sub(w.t - healed);
    w.run_until(
        left,
        "the guest running once, where it is placed, 30 s after the heal",
        |w| {
            let r = w.running();
            r.len() == 1 && w.placement().as_ref() == r.first() && w.phase().is_none()
        },
    );
}

const TICK_MS: Duration = world::TICK;

/// The randomized schedules, for a fixed set of seeds (`OMRAFT_SCENARIO_SEEDS`, default
/// 1000), in four shards that run in parallel; `OMRAFT_SCENARIO_SEED=N` replays one.
fn random_shard(shard: u64) {
    const SHARDS: u64 = 4;
    let seeds: Vec<u64> = match std::env::var("OMRAFT_SCENARIO_SEED") {
        Ok(s) if shard == 0 => vec![s.parse().expect("OMRAFT_SCENARIO_SEED: a number")],
        Ok(_) => vec![],
        Err(_) => {
            let n: u64 = std::env::var("OMRAFT_SCENARIO_SEEDS")
                .map(|v| v.parse().expect("OMRAFT_SCENARIO_SEEDS: a number"))
                .unwrap_or(1000);
            (1..=n).filter(|s| s % SHARDS == shard).collect()
        }
    };
    for seed in seeds {
        if std::panic::catch_unwind(|| random_schedule(seed)).is_err() {
            panic!(
                "random schedule failed; replay it with OMRAFT_SCENARIO_SEED={seed} cargo test --test scenarios random"
            );
        }
    }
}

#[test]
fn random_schedules_keep_the_invariants_and_converge_0() {
    random_shard(0);
}

#[test]
fn random_schedules_keep_the_invariants_and_converge_1() {
    random_shard(1);
}

#[test]
fn random_schedules_keep_the_invariants_and_converge_2() {
    random_shard(2);
}

#[test]
fn random_schedules_keep_the_invariants_and_converge_3() {
    random_shard(3);
}

#[test]
fn s35_a_switch_aborted_before_the_source_stopped_keeps_the_guest_running_there() {
    let mut w = World::new(35);
    w.transfer_leader("w");
    w.run_for(S(1));
    let before = boots(&w, "n1");
    switch(&mut w, "n2", "n2");
    w.hang("n1");
    assert_eq!(w.phase(), Some(Phase::Stopping));
    assert_eq!(abort(&mut w, "n2"), Some(Ok(Response::Done)));
    w.resume("n1");
    settles_on(&mut w, "n1", S(5));
    assert_eq!(boots(&w, "n1"), before, "never stopped");
}

#[test]
fn s36_the_target_lost_during_a_switch_the_guest_comes_back_on_the_source() {
    let mut w = World::new(36);
    w.transfer_leader("w");
    w.run_for(S(1));
    switch(&mut w, "n1", "n2");
    w.power_off("n2");
    // n1 stopped and handed over to n2, which is gone: once its lease ran out the leader
    // fails the service back over to n1.
    settles_on(&mut w, "n1", S(20));
}

/// Waits until the committed phase is `Migrating`, before the source's next pass (the
/// simulated copy takes no virtual time, so the next pass would finish it).
fn until_migrating(w: &mut World) {
    w.run_until(S(10), "phase Migrating", |w| w.phase() == Some(Phase::Migrating));
}

#[test]
fn s37_both_nodes_reset_while_migrating_never_leave_drbd_primary_twice_across_a_cut() {
    let mut w = World::new(37);
    w.transfer_leader("w");
    w.run_for(S(1));
    live(&mut w, "n1", "n2");
    until_migrating(&mut w);
    w.power_off("n1");
    w.power_off("n2");
    w.run_for(S(1));
    w.power_on("n1");
    // n2 boots 0.5 s after n1 is back in a quorum (here n1 and w elect a leader first; n1
    // cannot promote before it sees n2's disk anyway).
    w.run_until(S(10), "a leader", |w| w.leader_name().is_some());
    w.run_for(Duration::from_millis(500));
    // n2's daemon brings its DRBD resource up before it has a lease (here: it reaches the
    // leader only a moment later), so the rebooted source sees it Secondary and promotes.
    w.cut_pair("n2", "w", false);
    w.power_on("n2");
    w.run_until(S(20), "the rebooted source Primary", |w| {
        w.primaries().contains(&"n1".to_string())
    });
    w.heal("n2");
    // n2, the target, now wants to promote beside the source, whose reboot reset
    // allow-two-primaries; then its DRBD links are cut. A target promoting without seeing
    // the source, or a source that did not allow two primaries again, ends with two
    // Primaries across the cut: violations.log, checked every tick.
    w.run_for(S(2));
    w.cut_drbd("n2");
    w.run_for(S(10));
    w.heal("n2");
    w.run_until(S(30), "the switch ended, the guest once, where placed", |w| {
        let r = w.running();
        r.len() == 1 && w.placement().as_ref() == r.first() && w.phase().is_none()
    });
}

#[test]
fn s38_a_source_power_cycled_during_the_copy_aborts_and_restarts_the_guest() {
    let mut w = World::new(38);
    w.transfer_leader("w");
    w.run_for(S(1));
    live(&mut w, "n1", "n2");
    until_migrating(&mut w);
    w.power_off("n1");
    w.run_for(S(1));
    w.power_on("n1");
    // The guest ran on neither side: the source aborts the switch after its grace and the
    // guest boots again on n1, once n2 demoted.
    settles_on(&mut w, "n1", S(30));
    let why = w.last_migration_error().unwrap_or_default();
    assert!(why.contains("neither side"), "{why}");
}

#[test]
fn s39_a_pair_cut_between_the_data_nodes_moves_nothing() {
    let mut w = World::new(39);
    w.run_for(S(2));
    w.cut_pair("n1", "n2", false);
    // Both still reach the witness: n1 keeps its lease and its guest.
    stays_on(&mut w, "n1", S(15));
    w.heal("n1");
    stays_on(&mut w, "n1", S(5));
}

#[test]
fn s40_a_one_way_drop_from_the_active_leader_fails_over() {
    let mut w = World::new(40);
    w.run_for(S(2));
    assert_eq!(w.leader_name().as_deref(), Some("n1"));
    w.cut_pair("n1", "n2", true);
    w.cut_pair("n1", "w", true);
    settles_on(&mut w, "n2", S(30));
    w.heal("n1");
    stays_on(&mut w, "n2", S(10));
}

#[test]
fn s41_a_report_that_arrives_late_never_overwrites_a_newer_one() {
    let mut w = World::new(41);
    w.run_for(S(2));
    // n2, passive, is isolated for 6 s: it reports its peer n1 Connecting, but those reports
    // are held up by the dropped packets and arrive after the heal, after newer ones.
    w.cut("n2");
    w.run_for(S(6));
    w.heal("n2");
    stays_on(&mut w, "n1", S(15));
    // Each node's committed report is what that node sees now.
    let s = w.committed().clone();
    for name in ["n1", "n2"] {
        let id = w.id(name);
        let report = &s.reports[&world::path()][&id];
        let guest = report.resources.iter().find(|r| r.rid == "container#1").unwrap();
        let runs = w.running() == on(&[name]);
        assert_eq!(
            guest.avail == omraft::model::Avail::Up,
            runs,
            "{name}'s committed report says the guest is {}\n{}",
            guest.avail,
            w.trace.join("\n")
        );
        let volume = report.resources.iter().find(|r| r.rid == "volume#data").unwrap();
        assert!(
            volume.peers.values().all(|p| p.starts_with("Connected")),
            "{name}: {:?}\n{}",
            volume.peers,
            w.trace.join("\n")
        );
    }
}

/// Three data nodes (n1, n2, n3) and the witness, with `services` (name, DEFAULT lines), and
/// the memory the nodes report.
fn three_nodes(seed: u64, services: &[(&'static str, &'static str)], memory: &[(&'static str, u64)]) -> World {
    World::with(
        seed,
        world::Setup {
            data_nodes: 3,
            services: services
                .iter()
                .map(|(name, config)| world::Service { name, config })
                .collect(),
            memory: memory.to_vec(),
        },
    )
}

/// Service `name`'s guest runs on `node` alone, where it is placed.
fn settles(w: &mut World, name: &str, node: &str, within: Duration) {
    let want = on(&[node]);
    w.run_until(within, &format!("{name} on {node} alone"), |w| {
        w.running_of(name) == want && w.placement_of(name).as_deref() == Some(node)
    });
}

/// The services failed over from the log's entry `from` on, in commit order, with the index
/// of each failover.
fn failovers_since(w: &World, from: usize) -> Vec<(usize, String)> {
    w.log
        .iter()
        .enumerate()
        .skip(from)
        .filter_map(|(i, c)| match c {
            Command::Failover { path, .. } => Some((i, path.name.clone())),
            _ => None,
        })
        .collect()
}

const GIB: u64 = 1 << 30;

#[test]
fn s42_spread_provisions_beside_the_busy_node_and_fails_over_to_the_idle_one() {
    let spread = "placement = spread\n";
    let mut w = three_nodes(42, &[("kvm1", spread), ("kvm2", spread)], &[]);
    // kvm1 went to n1 (all idle: nodes order), kvm2 beside it (n1 runs one).
    assert_eq!(
        (w.placement_of("kvm1"), w.placement_of("kvm2")),
        (Some("n1".into()), Some("n2".into()))
    );
    w.run_for(S(2));
    w.power_off("n1");
    // The nodes order would give n2; n3 runs nothing.
    settles(&mut w, "kvm1", "n3", S(20));
    assert_eq!(w.running_of("kvm2"), on(&["n2"]));
}

#[test]
fn s43_score_fails_over_to_the_node_with_the_most_free_memory_and_giveback_returns() {
    let score = "placement = score\n";
    let memory = [("n1", 16 * GIB), ("n2", 2 * GIB), ("n3", 8 * GIB)];
    let mut w = three_nodes(43, &[("kvm1", score)], &memory);
    assert_eq!(w.placement_of("kvm1").as_deref(), Some("n1"), "16 GiB free");
    w.run_for(S(2));
    w.power_off("n1");
    // The nodes order would give n2 (2 GiB); n3 has 8.
    settles(&mut w, "kvm1", "n3", S(20));
    // Back, n1 is again the first choice: giveback's target.
    w.power_on("n1");
    w.run_for(S(5));
    let path = world::service_path("kvm1");
    let back = omraft::model::placement::first_choice(&w.committed(), &path);
    assert_eq!(back, Some(id(&w, "n1")));
    w.op(
        "n3",
        Command::Switch {
            path,
            to: back.unwrap(),
        },
    )
    .unwrap();
    settles(&mut w, "kvm1", "n1", S(30));
}

#[test]
fn s44_the_lower_priority_number_fails_over_first_and_gets_the_node_its_policy_prefers() {
    // Both on n1 (nodes order at provision), then spread, kvm2 with priority 10.
    let mut w = three_nodes(44, &[("kvm1", ""), ("kvm2", "")], &[]);
    assert_eq!(
        (w.placement_of("kvm1"), w.placement_of("kvm2")),
        (Some("n1".into()), Some("n1".into()))
    );
    for (name, set) in [
        ("kvm1", vec![("placement", "spread")]),
        ("kvm2", vec![("placement", "spread"), ("priority", "10")]),
    ] {
        let set = set
            .into_iter()
            .map(|(k, v)| (omraft::model::ObjectKey::parse(k).unwrap(), v.to_string()))
            .collect();
        let cmd = Command::UpdateObject {
            path: world::service_path(name),
            set,
            unset: vec![],
        };
        assert_eq!(w.op("n1", cmd).unwrap(), Response::Done);
    }
    w.run_for(S(2));
    let from = w.log.len();
    w.power_off("n1");
    // In path order kvm1 would go first and get n2; kvm2 goes first.
    settles(&mut w, "kvm2", "n2", S(20));
    settles(&mut w, "kvm1", "n3", S(10));
    let moves = failovers_since(&w, from);
    assert_eq!(
        moves.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(),
        ["kvm2", "kvm1"],
        "{moves:?}"
    );
    assert_eq!(
        moves[1].0,
        moves[0].0 + 1,
        "decided in one orchestrator step: {moves:?}"
    );
}

/// libvirt's incoming domain is active from the start of a live migration's copy, but paused,
/// and the copy can still fail: the target waits for the guest to run before it commits
/// `Finalize`, so a copy that fails late aborts, and the guest stays on the source, never
/// rebooted.
#[test]
fn s45_a_target_waits_for_the_guest_to_run_not_for_its_incoming_domain() {
    let mut w = World::new(45);
    let before = boots(&w, "n1");
    live(&mut w, "n1", "n2");
    until_migrating(&mut w);
    // The source's daemon is inside its migrate call: no pass of its own meanwhile, while
    // the copy has begun: the incoming domain paused on n2.
    w.hang("n1");
    let xml = w.hv("n1").xml(world::VM).unwrap().unwrap();
    w.hv("n2").receive(&xml, before.parse().unwrap()).unwrap();
    w.run_for(Duration::from_millis(800));
    assert_eq!(
        w.phase(),
        Some(Phase::Migrating),
        "the target took the arriving guest for a running one"
    );
    // The copy fails: the incoming domain goes, the source's migrate call fails.
    w.hv("n2").cancel_incoming(world::VM).unwrap();
    w.migrations_fail(true);
    w.resume("n1");
    settles_on(&mut w, "n1", S(20));
    assert_eq!(boots(&w, "n1"), before, "the guest kept running on n1");
    let why = w.last_migration_error().unwrap_or_default();
    assert!(why.contains("migrating kvm1"), "{why}");
}
