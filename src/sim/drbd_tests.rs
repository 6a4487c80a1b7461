//! The DRBD simulator driven through the real DRBD driver: the command lines it builds and
//! the status JSON it parses are the production code paths.

use std::path::Path;
use std::time::Duration;

use super::drbd::{Sim, SimRunner, StandIns};
use crate::drivers::drbd::commands::{Drbd, DrbdCommands};
use crate::drivers::drbd::render::{render, TemplateData, TemplateNode, BUILTIN_TEMPLATE};

const RES: &str = "kvm1.demo.vol.drbd4kvm";

fn driver(dir: &Path, node: &str) -> DrbdCommands<SimRunner> {
    driver_with(dir, node, StandIns::default())
}

/// `driver`, its handlers replaced by `stand_ins`.
fn driver_with(dir: &Path, node: &str, stand_ins: StandIns) -> DrbdCommands<SimRunner> {
    let settings = super::InProcess {
        sync_ms: 300,
        stand_ins,
        ..Default::default()
    };
    super::in_process_drbd(dir, node, &settings)
}

/// Node `node`'s simulator itself (what the hypervisor and power cuts reach).
fn sim(dir: &Path, node: &str) -> Sim {
    Sim {
        sync_ms: 300,
        ..Sim::new(dir, node)
    }
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
    provisioned_with(dir, BUILTIN_TEMPLATE)
}

/// The tutorial's template: no fencing, no handlers (DRBD's `dont-care`).
const NO_FENCING: &str = "resource {{.Name}} {
{{- range $node := .Nodes}}
    on {{$node.Name}} {
        device    {{$node.Device}};
        disk      {{$node.Disk}};
        meta-disk internal;
        address   {{$node.Addr}};
        node-id   {{$node.NodeId}};
    }
{{- end}}
    connection-mesh {
        hosts{{range $node := .Nodes}} {{$node.Name}}{{end}};
    }
}
";

/// `provisioned`, with the resource file from `template`.
fn provisioned_with(dir: &Path, template: &str) -> (DrbdCommands<SimRunner>, DrbdCommands<SimRunner>) {
    let (n1, n2) = (driver(dir, "n1"), driver(dir, "n2"));
    let text = render(template, &data()).unwrap();
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
    let kernel = sim(dir.path(), "n1");
    kernel.set_open(RES, true).unwrap();
    assert!(n1.secondary(RES).unwrap_err().to_string().contains("held open"));
    assert!(n1.down(RES).unwrap_err().to_string().contains("held open"));
    kernel.set_open(RES, false).unwrap();
    n1.secondary(RES).unwrap();
    n1.down(RES).unwrap();
    assert!(n1.status().unwrap().is_empty(), "a down resource is not listed");
}

#[test]
fn promotion_across_a_network_cut_is_possible_without_fencing_and_recorded_as_a_violation() {
    let dir = tempfile::tempdir().unwrap();
    let (n1, n2) = provisioned_with(dir.path(), NO_FENCING);
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
    sim(dir.path(), "n1").power_off().unwrap();
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

/// A handler standing in for omctl: it records DRBD's environment and the resource's state
/// as it ran (`DIR/HANDLER-NODE.env`, `DIR/HANDLER-NODE.state`) and exits with the code in
/// `DIR/exit-HANDLER-NODE`, else `DIR/exit-HANDLER` (0 when both are absent).
fn handler_script(dir: &Path) -> String {
    let script = dir.join("handler.sh");
    let d = dir.display();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             eval me=\\$DRBD_NODE_ID_$DRBD_MY_NODE_ID\n\
             env | sort > {d}/$2-$me.env\n\
             cat {d}/drbd/$DRBD_RESOURCE.json > {d}/$2-$me.state\n\
             exit $(cat {d}/exit-$2-$me 2>/dev/null || cat {d}/exit-$2 2>/dev/null || echo 0)\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script.display().to_string()
}

/// Both nodes up on the built-in template (resource-and-stonith, or `policy`), its handlers
/// being `handler_script`; fence-peer exits `fence_exit`.
fn fenced(dir: &Path, policy: &str, fence_exit: i32) -> (DrbdCommands<SimRunner>, DrbdCommands<SimRunner>) {
    fenced_with(dir, policy, fence_exit, StandIns::default())
}

/// `fenced`, n1's handlers replaced by `n1_stand_ins`.
fn fenced_with(
    dir: &Path,
    policy: &str,
    fence_exit: i32,
    n1_stand_ins: StandIns,
) -> (DrbdCommands<SimRunner>, DrbdCommands<SimRunner>) {
    let script = handler_script(dir);
    std::fs::write(dir.join("exit-fence-peer"), fence_exit.to_string()).unwrap();
    let template = BUILTIN_TEMPLATE.replace("fencing resource-and-stonith;", &format!("fencing {policy};"));
    let text = crate::drivers::drbd::render::render_with(&template, &data(), &script).unwrap();
    let (n1, n2) = (driver_with(dir, "n1", n1_stand_ins), driver(dir, "n2"));
    for d in [&n1, &n2] {
        d.write_config(RES, &text, &data()).unwrap();
        d.create_md(RES).unwrap();
        d.up(RES).unwrap();
    }
    (n1, n2)
}

/// n1 Primary with both disks UpToDate.
fn synced(n1: &DrbdCommands<SimRunner>, n2: &DrbdCommands<SimRunner>) {
    n1.primary(RES, true).unwrap();
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(n2.status().unwrap()[0].devices[0].disk_state, "UpToDate");
}

fn handlers_log(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("handlers.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_once(' ').map(|(_, rest)| rest.to_string()).unwrap_or_default())
        .collect()
}

fn env_of(dir: &Path, name: &str) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn cut(dir: &Path, node: &str) {
    std::fs::write(dir.join(format!("netcut-{node}")), "").unwrap();
}

fn heal(dir: &Path, node: &str) {
    std::fs::remove_file(dir.join(format!("netcut-{node}"))).unwrap();
}

#[test]
fn a_resync_after_a_reconnection_lasts_what_the_resource_loaded_whoever_notices_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (n1, n2) = fenced(d, "resource-and-stonith", 4);
    synced(&n1, &n2);
    cut(d, "n2");
    n1.status().unwrap();
    assert_eq!(n2.status().unwrap()[0].devices[0].disk_state, "Outdated");
    heal(d, "n2");
    // The reconnection is noticed first by a simulator of another resync time (a hypervisor
    // opening a device, `omsim virsh`): the resync still takes the 300 ms the nodes' `up` loaded.
    let observer = Sim {
        sync_ms: 60_000,
        ..Sim::new(d, "n1")
    };
    assert!(observer.is_primary(RES).unwrap());
    assert_eq!(n2.status().unwrap()[0].devices[0].disk_state, "Inconsistent");
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(n2.status().unwrap()[0].devices[0].disk_state, "UpToDate");
}

#[test]
fn a_primary_losing_its_peer_freezes_and_fence_peer_exit_4_resumes_and_outdates_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (n1, n2) = fenced(d, "resource-and-stonith", 4);
    synced(&n1, &n2);
    assert!(handlers_log(d).is_empty(), "nothing lost yet: {:?}", handlers_log(d));
    cut(d, "n2");
    // n1's own status notices the loss and runs its handler; n2's does not run n1's.
    n2.status().unwrap();
    assert!(handlers_log(d).is_empty(), "{:?}", handlers_log(d));
    let st = n1.status().unwrap();
    assert_eq!(handlers_log(d), [format!("n1 {RES} fence-peer peer=n2 exit 4")]);
    // I/O was frozen while the handler ran, and resumed on its exit 4.
    let during = std::fs::read_to_string(d.join("fence-peer-n1.state")).unwrap();
    assert!(during.contains("\"frozen\": true"), "{during}");
    assert!(!st[0].suspended);
    let pd = &st[0].connections[0].peer_devices[0];
    assert_eq!(pd.peer_disk_state, "Outdated");
    // DRBD's environment, from which omctl's handler finds the resource and the peer.
    let env = env_of(d, "fence-peer-n1.env");
    for (k, v) in [
        ("DRBD_RESOURCE", RES),
        ("DRBD_PEER_NODE_ID", "1"),
        ("DRBD_MY_NODE_ID", "0"),
        ("DRBD_NODE_ID_0", "n1"),
        ("DRBD_NODE_ID_1", "n2"),
        ("DRBD_MINOR", "0"),
        ("DRBD_VOLUME", "0"),
        ("DRBD_PEER_AF", "ipv4"),
        ("DRBD_PEER_ADDRESS", "127.0.0.1"),
        ("DRBD_CSTATE", "Connecting"),
        ("UP_TO_DATE_NODES", "0x00000001"),
        ("PATH", "/sbin:/usr/sbin:/bin:/usr/bin"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k} in {env:?}");
    }
    let args = crate::cli::drbd::HandlerArgs {
        resource: None,
        peer: None,
        timeout: Duration::from_secs(1),
    };
    let t = crate::cli::drbd::target(&args, |k| env.get(k).cloned()).unwrap();
    assert_eq!((t.resource.as_str(), t.peer.as_str()), (RES, "n2"));
    // The outdated peer cannot promote.
    let st2 = n2.status().unwrap();
    assert_eq!(st2[0].devices[0].disk_state, "Outdated");
    let e = n2.primary(RES, false).unwrap_err().to_string();
    assert!(e.contains("Need access to UpToDate data"), "{e}");
    // Back: n2 resyncs from the Primary, then n1 runs unfence-peer, once.
    heal(d, "n2");
    let st2 = n2.status().unwrap();
    assert_eq!(st2[0].devices[0].disk_state, "Inconsistent");
    assert_eq!(st2[0].connections[0].peer_devices[0].replication_state, "SyncTarget");
    n1.status().unwrap();
    assert_eq!(handlers_log(d).len(), 1, "unfence-peer waits for the resync");
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(n2.status().unwrap()[0].devices[0].disk_state, "UpToDate");
    n2.status().unwrap();
    assert_eq!(handlers_log(d).len(), 1, "unfence-peer runs on the node that fenced");
    n1.status().unwrap();
    n1.status().unwrap();
    assert_eq!(
        handlers_log(d),
        [
            format!("n1 {RES} fence-peer peer=n2 exit 4"),
            format!("n1 {RES} unfence-peer peer=n2 exit 0")
        ]
    );
    let env = env_of(d, "unfence-peer-n1.env");
    assert_eq!(env.get("DRBD_NODE_ID_1").map(String::as_str), Some("n2"));
    assert_eq!(env.get("DRBD_PEER_NODE_ID").map(String::as_str), Some("1"));
    assert_eq!(violations(d), "");
}

#[test]
fn a_broken_fence_peer_keeps_io_frozen_until_the_peer_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (n1, n2) = fenced(d, "resource-and-stonith", 1);
    synced(&n1, &n2);
    cut(d, "n1");
    let st = n1.status().unwrap();
    assert!(st[0].suspended, "exit 1 leaves I/O frozen");
    assert_eq!(st[0].connections[0].peer_devices[0].peer_disk_state, "DUnknown");
    assert!(n1.status().unwrap()[0].suspended);
    assert_eq!(
        handlers_log(d),
        [format!("n1 {RES} fence-peer peer=n2 exit 1")],
        "run once per loss"
    );
    // The cut-off Secondary may not promote either: its own fence-peer fails too.
    let e = n2.primary(RES, false).unwrap_err().to_string();
    assert!(
        e.contains("State change failed: (-7) Refusing to be Primary while peer is not outdated"),
        "{e}"
    );
    assert_eq!(handlers_log(d)[1], format!("n2 {RES} fence-peer peer=n1 exit 1"));
    assert_eq!(n2.status().unwrap()[0].role, "Secondary");
    heal(d, "n1");
    let st = n1.status().unwrap();
    assert!(!st[0].suspended, "the peer is back: I/O resumes");
    assert_eq!(st[0].connections[0].peer_devices[0].peer_disk_state, "UpToDate");
    assert_eq!(handlers_log(d).len(), 2, "no unfence-peer for a peer never outdated");
    assert_eq!(violations(d), "");
}

#[test]
fn promoting_beside_a_peer_of_unknown_state_runs_fence_peer_first() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (n1, n2) = fenced(d, "resource-and-stonith", 1);
    synced(&n1, &n2);
    n1.secondary(RES).unwrap();
    // n1 loses power: n2, Secondary, has nothing to fence until it wants to promote.
    let sim1 = sim(d, "n1");
    sim1.power_off().unwrap();
    assert!(!n2.status().unwrap()[0].suspended);
    assert!(handlers_log(d).is_empty());
    let e = n2.primary(RES, false).unwrap_err().to_string();
    assert!(
        e.contains("(-7) Refusing to be Primary while peer is not outdated"),
        "{e}"
    );
    std::fs::write(d.join("exit-fence-peer"), "4").unwrap();
    n2.primary(RES, false).unwrap();
    assert_eq!(
        handlers_log(d),
        [
            format!("n2 {RES} fence-peer peer=n1 exit 1"),
            format!("n2 {RES} fence-peer peer=n1 exit 4")
        ]
    );
    let st = n2.status().unwrap();
    assert_eq!((st[0].role.as_str(), st[0].suspended), ("Primary", false));
    assert_eq!(st[0].connections[0].peer_devices[0].peer_disk_state, "Outdated");
    // n1 comes back Outdated, cannot promote, and resyncs from n2; then n2 unfences it.
    n1.up(RES).unwrap();
    assert_eq!(n1.status().unwrap()[0].devices[0].disk_state, "Inconsistent");
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(n1.status().unwrap()[0].devices[0].disk_state, "UpToDate");
    n2.status().unwrap();
    assert_eq!(
        handlers_log(d).last().map(String::as_str),
        Some(format!("n2 {RES} unfence-peer peer=n1 exit 0").as_str())
    );
    assert_eq!(violations(d), "");
}

#[test]
fn a_peer_outdated_while_primary_is_outdated_once_it_demotes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (n1, n2) = fenced(d, "resource-and-stonith", 4);
    synced(&n1, &n2);
    // The cut-off Primary cannot have its peer outdated (no majority behind it)...
    std::fs::write(d.join("exit-fence-peer-n1"), "1").unwrap();
    cut(d, "n1");
    let st = n1.status().unwrap();
    assert!(st[0].suspended);
    // ...the survivor can (the cluster said so), and promotes.
    n2.primary(RES, false).unwrap();
    let st = n1.status().unwrap();
    assert_eq!(st[0].devices[0].disk_state, "UpToDate", "a Primary keeps its data");
    assert!(st[0].suspended, "and its I/O frozen");
    n1.secondary(RES).unwrap();
    assert_eq!(n1.status().unwrap()[0].devices[0].disk_state, "Outdated");
    let e = n1.primary(RES, false).unwrap_err().to_string();
    assert!(e.contains("Need access to UpToDate data"), "{e}");
    heal(d, "n1");
    assert_eq!(n1.status().unwrap()[0].devices[0].disk_state, "Inconsistent");
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(n1.status().unwrap()[0].devices[0].disk_state, "UpToDate");
    n2.status().unwrap();
    assert_eq!(
        handlers_log(d),
        [
            format!("n1 {RES} fence-peer peer=n2 exit 1"),
            format!("n2 {RES} fence-peer peer=n1 exit 4"),
            format!("n2 {RES} unfence-peer peer=n1 exit 0")
        ]
    );
}

#[test]
fn resource_only_runs_fence_peer_without_freezing_io() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (n1, n2) = fenced(d, "resource-only", 1);
    synced(&n1, &n2);
    cut(d, "n2");
    let st = n1.status().unwrap();
    assert!(!st[0].suspended);
    assert_eq!(handlers_log(d), [format!("n1 {RES} fence-peer peer=n2 exit 1")]);
}

#[test]
fn dont_care_runs_no_handler() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (n1, n2) = fenced(d, "dont-care", 4);
    synced(&n1, &n2);
    cut(d, "n2");
    assert!(!n1.status().unwrap()[0].suspended);
    n1.secondary(RES).unwrap();
    n2.primary(RES, false).unwrap();
    n2.status().unwrap();
    assert!(handlers_log(d).is_empty(), "{:?}", handlers_log(d));
}

#[test]
fn a_secondary_going_down_cleanly_outdates_itself_and_is_not_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (n1, n2) = fenced(d, "resource-and-stonith", 1);
    synced(&n1, &n2);
    n2.down(RES).unwrap();
    let st = n1.status().unwrap();
    assert!(!st[0].suspended);
    assert_eq!(st[0].connections[0].peer_devices[0].peer_disk_state, "Outdated");
    assert!(handlers_log(d).is_empty(), "{:?}", handlers_log(d));
    n2.up(RES).unwrap();
    assert_eq!(n2.status().unwrap()[0].devices[0].disk_state, "Inconsistent");
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(n2.status().unwrap()[0].devices[0].disk_state, "UpToDate");
}

#[test]
fn the_fence_configuration_is_read_where_drbd_reads_it() {
    let builtin = crate::drivers::drbd::render::render_with(BUILTIN_TEMPLATE, &data(), "'/opt/om raft/omctl'").unwrap();
    let c = super::drbd::parse_fence_conf(&builtin);
    assert_eq!(c.fencing.as_deref(), Some("resource-and-stonith"));
    assert_eq!(c.fence_peer.as_deref(), Some("'/opt/om raft/omctl' drbd fence-peer"));
    assert_eq!(
        c.unfence_peer.as_deref(),
        Some("'/opt/om raft/omctl' drbd unfence-peer")
    );
    assert_eq!(
        c.hosts.get("n2"),
        Some(&("ipv4 127.0.0.1:7289".to_string(), format!("/dev/data/{RES}")))
    );
    let plain = render(NO_FENCING, &data()).unwrap();
    assert_eq!(super::drbd::parse_fence_conf(&plain).fencing, None);
    // The tutorial's net section (allow-two-primaries, at the end) holds no fencing either.
    let tutorial = format!(
        "{}    net {{\n\tallow-two-primaries yes;\n    }}\n}}\n",
        plain.trim_end().trim_end_matches('}')
    );
    let c = super::drbd::parse_fence_conf(&tutorial);
    assert_eq!((c.fencing, c.fence_peer), (None, None));
}

#[test]
fn the_fence_handler_stand_in_replaces_the_configured_command_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let stand_in = StandIns {
        fence_peer: Some("exit 4".into()),
        unfence_peer: None,
    };
    let (n1, n2) = fenced_with(d, "resource-and-stonith", 1, stand_in);
    synced(&n1, &n2);
    cut(d, "n2");
    assert!(!n1.status().unwrap()[0].suspended);
    assert_eq!(handlers_log(d), [format!("n1 {RES} fence-peer peer=n2 exit 4")]);
    assert!(
        !d.join("fence-peer-n1.env").exists(),
        "the configured handler did not run"
    );
    // unfence-peer stays the configured one.
    heal(d, "n2");
    n2.status().unwrap();
    std::thread::sleep(Duration::from_millis(350));
    n2.status().unwrap();
    n1.status().unwrap();
    n1.status().unwrap();
    assert!(d.join("unfence-peer-n1.env").exists(), "{:?}", handlers_log(d));
}

#[test]
fn a_handler_that_cannot_start_counts_as_broken() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (n1, n2) = fenced(d, "resource-and-stonith", 4);
    synced(&n1, &n2);
    // The in-process worlds' case: the configured omctl does not exist (sh exits 127).
    let file = d.join("n1/drbd.d").join(format!("{RES}.res"));
    let script = d.join("handler.sh").display().to_string();
    let missing = d.join("no-such-omctl").display().to_string();
    let text = std::fs::read_to_string(&file).unwrap().replace(&script, &missing);
    std::fs::write(&file, text).unwrap();
    cut(d, "n2");
    assert!(n1.status().unwrap()[0].suspended);
    assert_eq!(handlers_log(d), [format!("n1 {RES} fence-peer peer=n2 exit 127")]);
}
