//! The real-host test bed: hosts n1, n2 (data) and w (witness)
//! built by `scripts/testbed` on this machine (network, mount and UTS namespaces; in n1 and n2
//! a libvirtd of their own), a real `omd` in each host with the real libvirt driver beside the
//! DRBD and LVM simulators (`--drivers sim --real-libvirt`: DRBD's kernel module cannot load
//! here), real `omctl` inside the hosts, and a real TCG guest (`scripts/testbed-guest`: a
//! Debian kernel and a busybox initramfs printing a counter to its serial console).
//!
//! Where the machine cannot build the bed (not root, no namespaces, no libvirt or QEMU:
//! `scripts/testbed up` exits 77), each test fails saying why, or skips when
//! `OMRAFT_ALLOW_SKIP` names `bed`.
//! Everything the bed made is torn down when a test ends, failed or not.

mod bed;
#[path = "../support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use bed::*;

/// The bed with its cluster formed; `None` (the test returns) where the machine cannot build
/// it and `OMRAFT_ALLOW_SKIP=bed` allows skipping, else the test fails.
fn formed() -> Option<Bed> {
    match cluster() {
        Ok(bed) => Some(bed),
        Err(why) => {
            omraft::testing::cannot_run("bed", &why);
            None
        }
    }
}

#[test]
fn the_tutorial_replayed_on_real_hosts_with_a_real_guest_and_live_migration() {
    let _one = ONE_BED.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bed) = formed() else { return };
    guest_on_n1(&bed, Some(support::TUTORIAL_TEMPLATE));
    // The resource files come from the tutorial's template (no fencing handlers there).
    let res = std::fs::read_to_string(bed.dir.join("sim/n1/drbd.d/kvm1.demo.vol.drbd4kvm.res")).unwrap();
    assert!(
        res.contains("allow-two-primaries yes;") && !res.contains("fence-peer"),
        "{res}"
    );
    let ls = |on1: &str, on2: &str| {
        format!("OBJECT         NODE  AVAIL\ndemo/svc/kvm1  n1    {on1}\ndemo/svc/kvm1  n2    {on2}\n")
    };
    let tree = bed.ok("n1", &["demo/svc/kvm1", "instance", "status", "-r"]);
    assert!(tree.contains("container#1") && tree.contains("kvm kvm1"), "{tree}");

    // switch --live: the counter goes on on n2, no reboot, no gap of 2 s.
    let out = bed.ok("n1", &["demo/svc/kvm1", "switch", "--live", "--wait", "--time", "120s"]);
    assert!(
        out.lines().nth(1).is_some_and(|l| l.trim_end().ends_with(" -")),
        "{out}"
    );
    assert_eq!(bed.ok("n1", &["demo/svc/kvm1", "instance", "ls"]), ls("down", "up"));
    assert!(bed.running("n2") && !bed.running("n1"));
    // Its disk, a block device both hosts see, went along (no --unsafe migration).
    let disks = bed.virsh("n2", &["domblklist", "kvm1"]);
    assert!(disks.contains("/dev/drbd0"), "{disks}");
    until(10, "console lines on n2", &bed, || bed.console("n2").len() >= 3);
    let (before, after) = (bed.console("n1"), bed.console("n2"));
    let (last, first) = (before.last().unwrap(), after.first().unwrap());
    assert_eq!(first.0, last.0 + 1, "the counter continues: {last:?} then {first:?}");
    assert!(first.1 - last.1 < 2.0, "a gap of {} s", first.1 - last.1);

    // switch: stopped on n2, booted again on n1.
    let seen_on_n1 = bed.console("n1").len();
    let out = bed.ok("n2", &["demo/svc/kvm1", "switch", "--wait", "--time", "120s"]);
    assert!(
        out.lines().nth(1).is_some_and(|l| l.trim_end().ends_with(" -")),
        "{out}"
    );
    assert_eq!(bed.ok("n2", &["demo/svc/kvm1", "instance", "ls"]), ls("up", "down"));
    assert!(bed.running("n1") && !bed.running("n2"));
    until(60, "the guest booting again on n1", &bed, || {
        // New lines (libvirt may truncate the console file at the new boot, or append to it).
        let now = bed.console("n1");
        let fresh = if now.len() >= seen_on_n1 {
            &now[seen_on_n1..]
        } else {
            &now[..]
        };
        fresh.iter().any(|(c, up)| *c <= 3 && *up < 15.0)
    });
    let violations = std::fs::read_to_string(bed.dir.join("sim/violations.log")).unwrap_or_default();
    assert_eq!(violations, "");
}

/// A fault on the bed with the service's guest on n1: the guest must end up running on
/// `expect` only, and never on both hosts meanwhile.
fn fault(what: &str, expect: &str, act: impl FnOnce(&Bed), after: impl FnOnce(&Bed)) {
    let _one = ONE_BED.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bed) = formed() else { return };
    guest_on_n1(&bed, None);
    let poller = Poller::start(&bed.dir);
    act(&bed);
    let other = if expect == "n1" { "n2" } else { "n1" };
    if expect == "n1" {
        std::thread::sleep(Duration::from_secs(15));
    }
    until(90, &format!("{what}: the guest on {expect} only"), &bed, || {
        bed.running(expect) && !bed.running(other)
    });
    until(60, &format!("{what}: the guest's console on {expect}"), &bed, || {
        !bed.console(expect).is_empty()
    });
    poller.finish();
    let violations = std::fs::read_to_string(bed.dir.join("sim/violations.log")).unwrap_or_default();
    assert_eq!(violations, "");
    after(&bed);
}

/// Whether the simulated watchdog reset `host`.
fn reset_by_watchdog(bed: &Bed, host: &str) -> bool {
    std::fs::read_to_string(bed.dir.join("sim/watchdog.log"))
        .unwrap_or_default()
        .contains(&format!("watchdog reset {host} "))
}

#[test]
fn power_loss_of_the_active_host_boots_the_guest_on_the_other() {
    fault("power loss of n1", "n2", |bed| bed.power_off("n1"), |_| {});
}

#[test]
fn a_network_cut_of_the_active_host_fences_it_before_the_other_starts_the_guest() {
    fault(
        "n1's network cut",
        "n2",
        |bed| {
            // The link first, then the simulated DRBD connection, as a real cut is seen: Raft
            // notices within a heartbeat, DRBD after its ping timeout. The other order lets
            // n1's fence-peer handler commit, while n1 still has its quorum, that n2's disk is
            // outdated; n1 then goes on writing until its lease runs out, and rightly nothing
            // fails over to n2 (the orchestrator's unit tests cover that refusal).
            let out = bed.run("n1", &["ip", "link", "set", "eth0", "down"]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            std::fs::write(bed.dir.join("sim/netcut-n1"), "").unwrap();
        },
        // Its lease ran out: it destroyed its guest, then its watchdog reset it.
        |bed| assert!(reset_by_watchdog(bed, "n1")),
    );
}

#[test]
fn a_hung_daemon_on_the_active_host_is_reset_by_its_watchdog() {
    fault(
        "n1's omd hung",
        "n2",
        |bed| {
            let pid = bed.omd[0].pid().expect("omd runs in n1").to_string();
            assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
        },
        |bed| {
            assert!(
                reset_by_watchdog(bed, "n1"),
                "the hung node was not reset by its watchdog"
            )
        },
    );
}

#[test]
fn losing_the_witness_moves_nothing() {
    fault(
        "the witness lost",
        "n1",
        |bed| bed.power_off("w"),
        |bed| {
            assert!(!reset_by_watchdog(bed, "n1") && !reset_by_watchdog(bed, "n2"));
            assert_eq!(bed.console("n2"), vec![], "the guest never ran on n2");
        },
    );
}

/// A live switch whose real copy fails late: libvirt's job on the source is aborted while the
/// incoming domain waits, paused, on n2. The switch must abort and the guest go on running on
/// n1, the same boot (its console counter goes on), never running on both hosts.
#[test]
fn a_live_switch_whose_copy_fails_late_keeps_the_guest_running_on_the_source() {
    let _one = ONE_BED.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bed) = formed() else { return };
    guest_on_n1(&bed, None);
    until(30, "console lines on n1", &bed, || bed.console("n1").len() >= 3);
    let poller = Poller::start(&bed.dir);
    // A slow copy: the guest's 160 MiB at 4 MiB/s take about 40 s (the migrate call passes no
    // bandwidth, so libvirt uses the domain's).
    bed.virsh_ok("n1", &["migrate-setspeed", "kvm1", "--bandwidth", "4"]);
    let out = std::thread::scope(|s| {
        let switch = s.spawn(|| bed.omctl("n1", &["demo/svc/kvm1", "switch", "--live", "--wait", "--time", "120s"]));
        until(60, "the incoming domain, paused, on n2", &bed, || {
            bed.virsh("n2", &["domstate", "kvm1"]).contains("paused")
        });
        // Well into the copy, then libvirt's job is cancelled on the source.
        std::thread::sleep(Duration::from_secs(3));
        bed.virsh_ok("n1", &["domjobabort", "kvm1"]);
        switch.join().expect("the switch's thread")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code() == Some(2) && stdout.contains("switch aborted: migrating kvm1"),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        bed.logs()
    );
    until(
        30,
        "the guest on n1 only, the incoming domain gone from n2",
        &bed,
        || bed.running("n1") && !bed.running("n2") && !bed.virsh("n2", &["list", "--all"]).contains("kvm1"),
    );
    // The same boot: the counter goes on, no line restarts it.
    let before = bed.console("n1").len();
    until(10, "new console lines on n1", &bed, || {
        bed.console("n1").len() >= before + 3
    });
    let lines = bed.console("n1");
    assert!(
        lines.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "the guest's counter restarted: {lines:?}"
    );
    poller.finish();
    let violations = std::fs::read_to_string(bed.dir.join("sim/violations.log")).unwrap_or_default();
    assert_eq!(violations, "");
    assert!(
        bed.ok("n1", &["demo/svc/kvm1", "instance", "ls"]).contains("n1    up"),
        "the service is up on n1"
    );
}
