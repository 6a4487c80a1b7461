//! Deterministic scenarios (DESIGN.md section 9, tier 4), in the spirit of Pacemaker's
//! scheduler regression cases and Proxmox's HA simulator: scripted timelines on a simulated
//! cluster of two data nodes and a witness (see `world.rs` for what is real and what is
//! modelled), with the invariants checked after every 100 ms tick: the guest runs on at most
//! one node, DRBD is Primary on at most one node outside a committed live switch's
//! dual-primary window (and then exactly one node runs the guest), the simulators saw no split
//! brain, nothing acknowledged is lost and nodes that applied as much agree. A failure prints
//! the timeline. Then a randomized schedule generator over fixed seeds.

mod world;

use std::time::Duration;

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
    w.run_for(S(2));
    w.restart_daemon("n1");
    stays_on(&mut w, "n1", S(10));
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
fn s19_live_switch_to_a_disconnected_target_is_refused_in_prepare() {
    let mut w = World::new(19);
    w.cut("n2");
    w.run_for(S(1));
    assert_eq!(live(&mut w, "n1", "n2"), Response::Done);
    w.run_until(S(5), "the switch aborted", |w| w.phase().is_none());
    let e = w.last_migration_error().unwrap();
    assert!(e.contains("Connected and UpToDate"), "{e}");
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
