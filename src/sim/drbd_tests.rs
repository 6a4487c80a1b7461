//! The DRBD simulator driven through the real DRBD driver: the command lines it builds and
//! the status JSON it parses are the production code paths.

use std::path::Path;
use std::time::Duration;

use super::drbd::{Sim, SimRunner};
use crate::drivers::drbd::commands::{Drbd, DrbdCommands};
use crate::drivers::drbd::render::{render, TemplateData, TemplateNode, BUILTIN_TEMPLATE};

const RES: &str = "kvm1.demo.vol.drbd4kvm";

fn driver(dir: &Path, node: &str) -> DrbdCommands<SimRunner> {
    super::in_process_drbd(dir, node, 300)
}

fn data() -> TemplateData {
    let node = |name: &str, id| TemplateNode {
        name: name.into(),
        addr: "ipv4 127.0.0.1:7289".into(),
        device: "/dev/drbd0".into(),
        disk: format!("/dev/data/{RES}"),
        node_id: id,
    };
    TemplateData {
        name: RES.into(),
        nodes: vec![node("n1", 0), node("n2", 1)],
    }
}

/// Both nodes with the resource file written, metadata created and the resource up.
fn provisioned(dir: &Path) -> (DrbdCommands<SimRunner>, DrbdCommands<SimRunner>) {
    let (n1, n2) = (driver(dir, "n1"), driver(dir, "n2"));
    let text = render(BUILTIN_TEMPLATE, &data()).unwrap();
    for d in [&n1, &n2] {
        d.write_config(RES, &text, &data()).unwrap();
        d.create_md(RES).unwrap();
        d.up(RES).unwrap();
    }
    (n1, n2)
}

fn violations(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("violations.log")).unwrap_or_default()
}

#[test]
fn initial_sync_then_dual_primary_only_when_allowed_on_both() {
    let dir = tempfile::tempdir().unwrap();
    let (n1, n2) = provisioned(dir.path());
    let e = n2.primary(RES, false).unwrap_err().to_string();
    assert!(e.contains("Need access to UpToDate data"), "{e}");
    n1.primary(RES, true).unwrap();
    let st = n1.status().unwrap();
    let peer = &st[0].connections[0].peer_devices[0];
    assert_eq!(
        (st[0].role.as_str(), peer.replication_state.as_str()),
        ("Primary", "SyncSource")
    );
    assert!(peer.percent_resync_done.is_some());
    std::thread::sleep(Duration::from_millis(350));
    let st = n2.status().unwrap();
    assert_eq!(st[0].devices[0].disk_state, "UpToDate", "resync finished");
    assert_eq!(st[0].connections[0].peer_role, "Primary");
    let e = n2.primary(RES, false).unwrap_err().to_string();
    assert!(e.contains("Multiple primaries not allowed"), "{e}");
    // events2 --now tells the same story as status --json.
    let events = n2.events_now().unwrap();
    assert_eq!(events.last().map(|e| e.object.as_str()), Some("-"));
    let peer = events.iter().find(|e| e.object == "connection").unwrap();
    assert_eq!(
        (peer.fields["conn-name"].as_str(), peer.fields["role"].as_str()),
        ("n1", "Primary")
    );
    let dev = events.iter().find(|e| e.object == "device").unwrap();
    assert_eq!(dev.fields["disk"], "UpToDate");
    n1.allow_two_primaries(RES, true).unwrap();
    assert!(n2.primary(RES, false).is_err(), "allowed on one side only");
    n2.allow_two_primaries(RES, true).unwrap();
    n2.primary(RES, false).unwrap();
    n1.secondary(RES).unwrap();
    n1.allow_two_primaries(RES, false).unwrap();
    n2.allow_two_primaries(RES, false).unwrap();
    assert_eq!(violations(dir.path()), "", "dual primary was allowed on both sides");
}

#[test]
fn an_open_device_cannot_be_demoted_or_downed() {
    let dir = tempfile::tempdir().unwrap();
    let (n1, _n2) = provisioned(dir.path());
    n1.primary(RES, true).unwrap();
    let sim = Sim {
        dir: dir.path().into(),
        node: "n1".into(),
        sync_ms: 300,
        validator: None,
    };
    sim.set_open(RES, true).unwrap();
    assert!(n1.secondary(RES).unwrap_err().to_string().contains("held open"));
    assert!(n1.down(RES).unwrap_err().to_string().contains("held open"));
    sim.set_open(RES, false).unwrap();
    n1.secondary(RES).unwrap();
    n1.down(RES).unwrap();
    assert!(n1.status().unwrap().is_empty(), "a down resource is not listed");
}

#[test]
fn promotion_across_a_network_cut_is_possible_and_recorded_as_a_violation() {
    let dir = tempfile::tempdir().unwrap();
    let (n1, n2) = provisioned(dir.path());
    n1.primary(RES, true).unwrap();
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(n2.status().unwrap()[0].devices[0].disk_state, "UpToDate");
    std::fs::write(dir.path().join("netcut-n1"), "").unwrap();
    assert_eq!(n2.status().unwrap()[0].connections[0].connection_state, "Connecting");
    // Real DRBD without fencing lets the cut-off side promote: that is a split brain.
    n2.primary(RES, false).unwrap();
    let v = violations(dir.path());
    assert!(v.contains("Primary on n1 and n2 without allow-two-primaries"), "{v}");
}

#[test]
fn commands_need_metadata_and_a_known_resource() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = driver(dir.path(), "n1");
    let text = render(BUILTIN_TEMPLATE, &data()).unwrap();
    n1.write_config(RES, &text, &data()).unwrap();
    assert!(n1.up(RES).unwrap_err().to_string().contains("create-md"));
    assert!(n1.up("other").is_err());
    n1.create_md(RES).unwrap();
    n1.up(RES).unwrap();
    assert!(n1.create_md(RES).unwrap_err().to_string().contains("attached"));
}

#[test]
fn two_primaries_is_running_configuration_that_a_reboot_resets_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (n1, n2) = provisioned(dir.path());
    let allowing = |d: &DrbdCommands<SimRunner>| d.two_primaries().unwrap().get(RES).cloned().unwrap_or_default();
    assert!(allowing(&n1).is_empty(), "the built-in template does not allow it");
    n1.allow_two_primaries(RES, true).unwrap();
    assert_eq!(allowing(&n1), ["n2".to_string()].into());
    assert!(allowing(&n2).is_empty(), "one side only");
    // A power cycle forgets `net-options`: up again from the file, two primaries not allowed.
    Sim {
        dir: dir.path().into(),
        node: "n1".into(),
        sync_ms: 300,
        validator: None,
    }
    .power_off()
    .unwrap();
    n1.up(RES).unwrap();
    assert!(allowing(&n1).is_empty());
    // A file that allows it (the tutorial's live-migration template) allows it from `up`.
    let text = render(BUILTIN_TEMPLATE, &data()).unwrap();
    let text = text.replacen("net {", "net {\n\t\tallow-two-primaries yes;", 1);
    assert!(text.contains("allow-two-primaries yes;"), "{text}");
    n1.down(RES).unwrap();
    n1.write_config(RES, &text, &data()).unwrap();
    n1.up(RES).unwrap();
    assert_eq!(allowing(&n1), ["n2".to_string()].into());
}
