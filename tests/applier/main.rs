//! The node applier on three real `omd` with the simulated drivers (`--drivers sim`): the
//! tutorial from `provision --wait` to `instance status -r` and `instance device list`, then
//! stop, start and unprovision. The DRBD simulator is reached through the real DRBD driver and
//! logs any moment two nodes are Primary without allow-two-primaries: that log stays empty.

#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use support::omd::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_status_stop_start_unprovision_on_simulated_drivers() {
    let tmp = tempfile::tempdir().unwrap();
    let (nodes, sim) = sim_cluster(tmp.path(), &[]).await;
    let (n1, n2) = (nodes[0].server(), nodes[1].server());
    ok(&n1, &["cluster", "config", "update", "--set", "cluster.name=drbd4kvm"]);

    ok(
        &n1,
        &[
            "demo/svc/kvm1",
            "create",
            "--kw",
            "nodes={clusternodes}",
            "--kw",
            "orchestrate=ha",
        ],
    );
    let vol = [
        "--set",
        "volume#data.size=1G",
        "--set",
        "volume#data.shared=true",
        "--set",
        "volume#data.pool=drbdvm",
    ];
    // The VG reports arrive shortly after the joins.
    until_ok(&n1, &[&["demo/svc/kvm1", "config", "update"][..], &vol].concat()).await;

    let out = ok(&n2, &["demo/svc/kvm1", "provision", "--wait", "--time", "60s"]);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows[0], "OBJECT         ORCHESTRATION_ID                      ERROR");
    assert!(
        rows[1].starts_with("demo/svc/kvm1  ") && rows[1].ends_with("  -"),
        "{out}"
    );
    assert_eq!(
        ok(&n1, &["demo/svc/kvm1", "instance", "status", "-r"]),
        "demo/svc/kvm1                    up\n\
         └ instances\n\
         \x20 ├ n2                           down  idle\n\
         \x20 └ n1                           up    idle started\n\
         \x20   └ resources\n\
         \x20     └ volume#data    ........  up    kvm1\n"
    );
    assert_eq!(
        ok(&n2, &["demo/svc/kvm1", "instance", "ls"]),
        "OBJECT         NODE  AVAIL\ndemo/svc/kvm1  n1    up\ndemo/svc/kvm1  n2    down\n"
    );
    assert!(ok(&n1, &["demo/svc/kvm1", "instance", "device", "list"]).contains("exposed  /dev/drbd0"));
    let mon = ok(&n2, &["mon"]);
    let row = mon
        .lines()
        .find(|l| l.starts_with(" demo/svc/kvm1"))
        .unwrap_or_default();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["demo/svc/kvm1", "|", "up", "down", "-"],
        "{mon}"
    );
    // What the nodes did: an LV each, and the resource file rendered from the built-in template.
    for node in ["n1", "n2"] {
        let lvm = std::fs::read_to_string(sim.join(format!("lvm-{node}.json"))).unwrap();
        assert!(lvm.contains("kvm1.demo.vol.drbd4kvm"), "{node}: {lvm}");
        let res = std::fs::read_to_string(sim.join(node).join("drbd.d/kvm1.demo.vol.drbd4kvm.res")).unwrap();
        assert!(
            res.starts_with("resource kvm1.demo.vol.drbd4kvm {") && res.contains("address   ipv4 127.0.0.1:7289;"),
            "{res}"
        );
    }

    // The tutorial's manual VM creation on n1, with the simulator's virsh.
    let xml = tmp.path().join("kvm1.xml");
    std::fs::write(
        &xml,
        "<domain type='qemu'><name>kvm1</name><memory>131072</memory>\
         <devices><disk type='block'><source dev='/dev/drbd0'/><target dev='vda'/></disk></devices></domain>",
    )
    .unwrap();
    let virsh = |node: &str, args: &[&str]| omsim_virsh(&sim, node, args);
    assert!(virsh("n1", &["define", xml.to_str().unwrap()]).status.success());
    // n2 is Secondary: QEMU cannot open the device there.
    assert!(virsh("n2", &["define", xml.to_str().unwrap()]).status.success());
    let refused = virsh("n2", &["start", "kvm1"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Wrong medium type"),
        "{refused:?}"
    );
    assert!(virsh("n1", &["start", "kvm1"]).status.success());
    ok(&n1, &support::KVM1_CONTAINER);
    let tree = support::eventually(20, "the container in the status tree", || {
        let n2 = n2.clone();
        async move {
            let t = ok(&n2, &["demo/svc/kvm1", "print", "status", "-r"]);
            t.contains("container#1").then_some(t)
        }
    })
    .await;
    assert_eq!(
        tree,
        "demo/svc/kvm1                    up\n\
         └ instances\n\
         \x20 ├ n2                           down  idle\n\
         \x20 └ n1                           up    idle started\n\
         \x20   └ resources\n\
         \x20     ├ volume#data    ........  up    kvm1\n\
         \x20     └ container#1    ........  up    kvm kvm1\n"
    );
    let out = ok(
        &n1,
        &["demo/svc/kvm1", "instance", "provision", "--state-only", "--node", "n2"],
    );
    assert!(
        out.starts_with("OBJECT         NODE  SID\ndemo/svc/kvm1  n2    "),
        "{out}"
    );
    let running_on = |node: &str| String::from_utf8_lossy(&virsh(node, &["list"]).stdout).contains("kvm1 running");

    ok(&n1, &["demo/svc/kvm1", "stop", "--wait", "--time", "30s"]);
    assert!(!running_on("n1"), "the guest stopped before the volume was demoted");
    assert!(ok(&n1, &["demo/svc/kvm1", "instance", "ls"]).contains("n1    down"));
    ok(&n1, &["demo/svc/kvm1", "start", "--wait", "--time", "30s"]);
    assert!(ok(&n1, &["demo/svc/kvm1", "instance", "ls"]).contains("n1    up"));
    support::eventually(10, "the guest to start again", || async {
        running_on("n1").then_some(())
    })
    .await;
    assert!(!running_on("n2"));

    // switch: the guest stops on n1, n1 demotes, n2 promotes once it sees that, then starts
    // the guest from the XML the cluster captured. At no moment two Primaries or two guests.
    let out = ok(&n2, &["demo/svc/kvm1", "switch", "--wait", "--time", "60s"]);
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("demo/svc/kvm1  ") && l.ends_with("  -")),
        "{out}"
    );
    assert_eq!(
        ok(&n1, &["demo/svc/kvm1", "instance", "ls"]),
        "OBJECT         NODE  AVAIL\ndemo/svc/kvm1  n1    down\ndemo/svc/kvm1  n2    up\n"
    );
    assert!(running_on("n2") && !running_on("n1"));
    let out = omctl(&n1, &["demo/svc/kvm1", "switch", "--to", "n2"]);
    assert!(
        out.status.code() == Some(1) && stderr(&out).contains("already runs"),
        "{}",
        stderr(&out)
    );
    ok(
        &n1,
        &["demo/svc/kvm1", "switch", "--to", "n1", "--wait", "--time", "60s"],
    );
    assert!(running_on("n1") && !running_on("n2"));
    // takeover: to the node asked (n2); giveback: to the node its placement prefers (the
    // default, nodes order: the first of its nodes, n1).
    ok(&n2, &["demo/svc/kvm1", "takeover", "--wait", "--time", "60s"]);
    assert!(running_on("n2") && !running_on("n1"));
    ok(&n2, &["demo/svc/kvm1", "giveback", "--wait", "--time", "60s"]);
    assert!(running_on("n1") && !running_on("n2"));

    // switch --live: dual primary, then the guest migrates without a reboot. A migration
    // that fails halfway aborts: the guest stays where it was, running, and the error shows.
    let before = boots(&sim, "n1");
    std::fs::write(sim.join("migrate-fail"), "").unwrap();
    let out = omctl(&n1, &["demo/svc/kvm1", "switch", "--live", "--wait", "--time", "60s"]);
    assert!(
        out.status.code() == Some(2) && stdout(&out).contains("switch aborted: migrating kvm1"),
        "{}",
        stdout(&out)
    );
    assert!(running_on("n1") && !running_on("n2"), "the guest stays on n1");
    assert_eq!(boots(&sim, "n1"), before, "the guest kept running on n1");
    std::fs::remove_file(sim.join("migrate-fail")).unwrap();
    let out = ok(&n1, &["demo/svc/kvm1", "switch", "--live", "--wait", "--time", "60s"]);
    assert!(out.lines().nth(1).is_some_and(|l| l.ends_with("  -")), "{out}");
    assert_eq!(
        ok(&n1, &["demo/svc/kvm1", "instance", "ls"]),
        "OBJECT         NODE  AVAIL\ndemo/svc/kvm1  n1    down\ndemo/svc/kvm1  n2    up\n"
    );
    assert!(running_on("n2") && !running_on("n1"));
    assert_eq!(boots(&sim, "n2"), before, "the guest moved without a reboot");
    let out = omctl(&n1, &["demo/svc/kvm1", "switch", "--abort"]);
    assert!(stderr(&out).contains("no switch in progress"), "{}", stderr(&out));
    ok(
        &n1,
        &[
            "demo/svc/kvm1",
            "switch",
            "--live",
            "--to",
            "n1",
            "--wait",
            "--time",
            "60s",
        ],
    );
    assert!(running_on("n1") && !running_on("n2"));

    // freeze and thaw, per service and per node, show in the status tree.
    ok(&n1, &["demo/svc/kvm1", "freeze"]);
    ok(&n2, &["node", "freeze", "--node", "n2"]);
    let tree = ok(&n1, &["demo/svc/kvm1", "instance", "status", "-r"]);
    assert!(
        tree.contains("n1                           up    frozen idle started"),
        "{tree}"
    );
    ok(&n1, &["demo/svc/kvm1", "thaw"]);
    // n2 frozen with nothing placed on it: drained too.
    let tree = ok(&n1, &["demo/svc/kvm1", "instance", "status", "-r"]);
    assert!(
        tree.contains("n2                           down  frozen drained idle"),
        "{tree}"
    );
    assert!(
        tree.contains("n1                           up    idle started"),
        "{tree}"
    );
    ok(&n1, &["node", "thaw", "--node", "n2"]);
    assert!(!ok(&n1, &["demo/svc/kvm1", "instance", "status", "-r"]).contains("frozen"));
    let out = omctl(&n1, &["node", "freeze", "--node", "n9"]);
    assert!(
        out.status.code() == Some(1) && stderr(&out).contains("n9"),
        "{}",
        stderr(&out)
    );
    let out = omctl(&n1, &["demo/svc/kvm1", "delete"]);
    assert!(
        out.status.code() == Some(1) && stderr(&out).contains("unprovision it"),
        "{}",
        stderr(&out)
    );
    ok(&n1, &["demo/svc/kvm1", "unprovision", "--wait", "--time", "30s"]);
    assert!(!running_on("n1"), "unprovision stops the guest");
    for node in ["n1", "n2"] {
        let lvm = std::fs::read_to_string(sim.join(format!("lvm-{node}.json"))).unwrap();
        assert!(!lvm.contains("kvm1.demo.vol.drbd4kvm"), "{node} kept its LV: {lvm}");
        assert!(!sim.join(node).join("drbd.d/kvm1.demo.vol.drbd4kvm.res").exists());
    }
    ok(&n1, &["demo/svc/kvm1", "delete"]);
    let violations = std::fs::read_to_string(sim.join("violations.log")).unwrap_or_default();
    assert_eq!(violations, "", "the simulator saw a split brain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_commands_and_bad_templates_show_as_warnings_and_touch_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (nodes, sim) = sim_cluster(tmp.path(), &[]).await;
    let n1 = nodes[0].server();
    // A template that renders, but not into a resource file our checks accept.
    ok(&n1, &["system/cfg/drbd", "create"]);
    ok(
        &n1,
        &[
            "system/cfg/drbd",
            "key",
            "add",
            "--name",
            "broken",
            "--value",
            "resource {{.Name}} {",
        ],
    );
    let pool = [
        "--set",
        "pool#p.type=drbd",
        "--set",
        "pool#p.vg=data",
        "--set",
        "pool#p.template=broken",
    ];
    ok(&n1, &[&["cluster", "config", "update"][..], &pool].concat());
    let vol = [
        "--kw",
        "volume#data.size=1G",
        "--kw",
        "volume#data.pool=p",
        "--kw",
        "nodes=n1 n2",
    ];
    until_ok(&n1, &[&["demo/svc/bad", "create"][..], &vol].concat()).await;
    ok(&n1, &["demo/svc/bad", "provision"]);
    let tree = support::eventually(20, "the template warning", || {
        let n1 = n1.clone();
        async move {
            let t = ok(&n1, &["demo/svc/bad", "instance", "status", "-o", "json"]);
            t.contains("DRBD resource file").then_some(t)
        }
    })
    .await;
    assert!(tree.contains("unclosed"), "{tree}");
    for node in ["n1", "n2"] {
        assert!(
            !sim.join(node).join("drbd.d/bad.demo.vol.default.res").exists(),
            "an invalid file reached {node}"
        );
    }

    // Something else filled n2's volume group behind the cluster's back: lvcreate fails there.
    ok(
        &n1,
        &[
            "cluster",
            "config",
            "update",
            "--set",
            "pool#q.type=lvm",
            "--set",
            "pool#q.vg=data",
        ],
    );
    let lvm = sim.join("lvm-n2.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&lvm).unwrap()).unwrap();
    state["vgs"]["data"]["lvs"]["intruder"] = serde_json::json!(4u64 << 30);
    std::fs::write(&lvm, serde_json::to_vec(&state).unwrap()).unwrap();
    ok(
        &n1,
        &[
            "demo/svc/local",
            "create",
            "--kw",
            "volume#data.size=2G",
            "--kw",
            "volume#data.pool=q",
            "--kw",
            "nodes=n1 n2",
        ],
    );
    ok(&n1, &["demo/svc/local", "provision"]);
    let status = support::eventually(20, "n2's lvcreate failure", || {
        let n1 = n1.clone();
        async move {
            let t = ok(&n1, &["demo/svc/local", "instance", "status", "-o", "json"]);
            t.contains("insufficient free space").then_some(t)
        }
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let n2 = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["node"] == "n2")
        .unwrap();
    assert_eq!(
        (n2["warn"].as_bool(), n2["provisioned"].as_bool()),
        (Some(true), Some(false)),
        "{n2}"
    );
    assert!(
        n2["resources"][0]["messages"][0].as_str().unwrap().contains("CreateLv"),
        "{n2}"
    );
}

/// Row `label` of the frame `frame` in `omctl mon`'s output, by node name (the frame's
/// header names the columns).
fn mon_row(mon: &str, frame: &str, label: &str) -> std::collections::BTreeMap<String, String> {
    let mut lines = mon.lines().skip_while(|l| l.split_whitespace().next() != Some(frame));
    let header = lines.next().unwrap_or_else(|| panic!("no {frame} frame in:\n{mon}"));
    let names = header.split_whitespace().skip(1);
    let row = lines
        .take_while(|l| l.contains('|'))
        .find_map(|l| l.split_once('|').filter(|(h, _)| h.trim() == label))
        .unwrap_or_else(|| panic!("no {label} row in {frame}:\n{mon}"));
    let values: Vec<&str> = row.1.split_whitespace().collect();
    assert_eq!(
        values.len(),
        header.split_whitespace().count() - 1,
        "{header}\n{}",
        row.1
    );
    names
        .map(String::from)
        .zip(values.into_iter().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_the_quorum_loses_its_lease_and_fences_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, sim) = sim_cluster(tmp.path(), &[]).await;
    let n1 = nodes[0].server();

    let vol = ["--kw", "volume#data.size=1G", "--kw", "volume#data.shared=true"];
    until_ok(&n1, &[&["demo/svc/kvm1", "create"][..], &vol].concat()).await;
    ok(&n1, &["demo/svc/kvm1", "provision", "--wait", "--time", "60s"]);
    // n1 and n2 hold leases (seconds left, at most lease.duration: 3 s), the witness n3 none.
    let mon = ok(&n1, &["mon"]);
    let lease = mon_row(&mon, "Daemon", "lease");
    for n in ["n1", "n2"] {
        let left = lease[n].strip_suffix('s').and_then(|v| v.parse::<f64>().ok());
        assert!(
            left.is_some_and(|s| s > 0.0 && s <= 3.0),
            "{n}'s lease: {lease:?}\n{mon}"
        );
    }
    assert_eq!(lease["n3"], "-", "the witness holds no lease\n{mon}");
    let xml = tmp.path().join("kvm1.xml");
    std::fs::write(&xml, support::KVM1_XML).unwrap();
    let virsh = |node: &str, args: &[&str]| String::from_utf8_lossy(&omsim_virsh(&sim, node, args).stdout).into_owned();
    virsh("n1", &["define", xml.to_str().unwrap()]);
    virsh("n1", &["start", "kvm1"]);
    ok(&n1, &support::KVM1_CONTAINER);
    let primary_n1 = || {
        let state = std::fs::read_to_string(sim.join("drbd/kvm1.demo.vol.default.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&state).unwrap_or_default();
        v["nodes"]["n1"]["primary"].as_bool().unwrap_or(false)
    };
    assert!(primary_n1() && virsh("n1", &["list"]).contains("kvm1 running"));

    // n2 and the witness hang: n1 is alone, cannot renew its lease, and must stop on its own.
    let pids: Vec<String> = nodes[1..]
        .iter()
        .map(|n| n.child.as_ref().unwrap().id().to_string())
        .collect();
    for pid in &pids {
        assert!(std::process::Command::new("kill")
            .args(["-STOP", pid])
            .status()
            .unwrap()
            .success());
    }
    let t = std::time::Instant::now();
    support::eventually(15, "n1 to fence itself", || async {
        (!primary_n1() && virsh("n1", &["list"]).contains("kvm1 shut off")).then_some(())
    })
    .await;
    let fenced_after = t.elapsed();
    for pid in &pids {
        assert!(std::process::Command::new("kill")
            .args(["-CONT", pid])
            .status()
            .unwrap()
            .success());
    }
    // Not at once: n1 stops petting its watchdog only when its lease has less than the
    // watchdog's timeout (1.5 s) left, and the watchdog fires that timeout later.
    assert!(
        fenced_after >= std::time::Duration::from_millis(1000),
        "fenced after {fenced_after:?}"
    );
    // The watchdog resets n1 (its daemon killed, as a reboot would); it comes back up. Its
    // timeout ends about when the lease does, so the reset may come just after the fence.
    support::eventually(5, "the watchdog to reset n1", || async {
        let log = std::fs::read_to_string(sim.join("watchdog.log")).unwrap_or_default();
        log.contains("watchdog reset n1").then_some(())
    })
    .await;
    // Back in touch: the service runs again on exactly one node: n1 once leased again, or n2
    // if the leader saw n1's lease run out first and failed it over. Every node a watchdog
    // reset boots again: n1, and n2 too if it stayed hung (SIGSTOP) as long. A reset kills
    // the daemon but its exit is seen a moment later, and n2's may come later still: a node
    // is restarted whenever its process is found gone, not once.
    let t = std::time::Instant::now();
    loop {
        for n in nodes.iter_mut() {
            if n.try_wait().is_some() {
                n.start();
            }
        }
        if virsh("n1", &["list"]).contains("kvm1 running") != virsh("n2", &["list"]).contains("kvm1 running") {
            break;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(40),
            "the service did not run again on one node within 40 s\n{}",
            logs(&nodes)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        std::fs::read_to_string(sim.join("violations.log")).unwrap_or_default(),
        ""
    );
}

/// Three daemons with the simulated drivers and an `orchestrate=ha` service whose guest runs
/// on n1 (n1 is also the Raft leader); `running_on(node)` tells whether the guest runs there.
async fn guest_on_n1(tmp: &Path) -> (Vec<Omd>, PathBuf) {
    guest_on_n1_with(tmp, &[]).await
}

/// `guest_on_n1` with extra `omd` arguments for every node.
async fn guest_on_n1_with(tmp: &Path, extra: &[&str]) -> (Vec<Omd>, PathBuf) {
    let (nodes, sim) = sim_cluster(tmp, extra).await;
    let (n1, n2) = (nodes[0].server(), nodes[1].server());
    let vol = [
        "--kw",
        "volume#data.size=1G",
        "--kw",
        "volume#data.shared=true",
        "--kw",
        "orchestrate=ha",
    ];
    until_ok(&n1, &[&["demo/svc/kvm1", "create"][..], &vol].concat()).await;
    ok(&n1, &["demo/svc/kvm1", "provision", "--wait", "--time", "60s"]);
    let xml = tmp.join("kvm1.xml");
    std::fs::write(&xml, support::KVM1_XML).unwrap();
    omsim_virsh(&sim, "n1", &["define", xml.to_str().unwrap()]);
    omsim_virsh(&sim, "n1", &["start", "kvm1"]);
    ok(&n1, &support::KVM1_CONTAINER);
    support::eventually(20, "the captured guest on n1", || async {
        ok(&n2, &["demo/svc/kvm1", "instance", "status", "-r"])
            .contains("container#1")
            .then_some(())
    })
    .await;
    assert!(running_on(&sim, "n1") && !running_on(&sim, "n2"));
    (nodes, sim)
}

/// The last lines of every daemon's log, for a failure's message.
fn logs(nodes: &[Omd]) -> String {
    nodes
        .iter()
        .map(|n| {
            let log = n.log();
            let lines: Vec<&str> = log.lines().collect();
            format!(
                "---- {} ----\n{}",
                n.name,
                lines[lines.len().saturating_sub(40)..].join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn running_on(sim: &Path, node: &str) -> bool {
    String::from_utf8_lossy(&omsim_virsh(sim, node, &["list"]).stdout).contains("kvm1 running")
}

/// The guest runs on exactly one node, for two seconds in a row, and the simulators never saw
/// a split brain.
async fn runs_once(sim: &Path, within: u64) {
    let mut since: Option<std::time::Instant> = None;
    support::eventually(within, "the guest running on exactly one node for 2 s", || {
        let once = running_on(sim, "n1") != running_on(sim, "n2");
        since = if once {
            since.or(Some(std::time::Instant::now()))
        } else {
            None
        };
        let stable = since.is_some_and(|t| t.elapsed() >= std::time::Duration::from_secs(2));
        async move { stable.then_some(()) }
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(sim.join("violations.log")).unwrap_or_default(),
        ""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_of_the_active_node_fails_the_service_over_after_its_lease_ran_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, sim) = guest_on_n1(tmp.path()).await;
    let n2 = nodes[1].server();
    let running_on = |node: &str| running_on(&sim, node);

    // Pull n1's plug: its daemon dies with it.
    nodes[0].kill9();
    assert!(omsim_virsh(&sim, "n1", &["poweroff"]).status.success());
    let t = std::time::Instant::now();
    support::eventually(30, "the guest to run on n2", || async {
        running_on("n2").then_some(())
    })
    .await;
    let took = t.elapsed();
    // Not before n1's lease (3 s) plus the drift margin could have run out.
    assert!(took >= std::time::Duration::from_secs(3), "failed over after {took:?}");
    assert_eq!(
        std::fs::read_to_string(sim.join("violations.log")).unwrap_or_default(),
        ""
    );
    support::eventually(10, "n2's report of the failed-over service", || async {
        ok(&n2, &["demo/svc/kvm1", "instance", "ls"])
            .contains("n2    up")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_active_daemon_is_reset_by_its_watchdog_and_the_guest_runs_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, sim) = guest_on_n1(tmp.path()).await;
    // SIGSTOP: the daemon can neither renew its lease nor stop its guest; its watchdog, no
    // longer petted, resets n1 (guest and DRBD down, daemon killed) before n2 takes over.
    assert!(nodes[0].signal("STOP"));
    support::eventually(40, "the guest on n2", || async { running_on(&sim, "n2").then_some(()) }).await;
    let log = std::fs::read_to_string(sim.join("watchdog.log")).unwrap_or_default();
    assert!(log.contains("n1"), "n1 was not reset by its watchdog: {log:?}");
    // SIGCONT comes too late: the watchdog killed the daemon.
    nodes[0].signal("CONT");
    support::eventually(5, "n1's daemon gone", || {
        let alive = nodes[0].alive();
        async move { (!alive).then_some(()) }
    })
    .await;
    runs_once(&sim, 20).await;
    // Restarted, n1 comes back without its guest.
    nodes[0].start();
    runs_once(&sim, 20).await;
    assert!(running_on(&sim, "n2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_a_live_switch_leaves_the_guest_running_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, sim) = guest_on_n1(tmp.path()).await;
    // A slow memory copy, so that the kill lands mid-migration.
    std::fs::write(sim.join("migrate-ms"), "3000").unwrap();
    let n2 = nodes[1].server();
    ok(&n2, &["demo/svc/kvm1", "switch", "--live"]);
    support::eventually(10, "the migration under way", || async {
        let log = nodes[0].log();
        log.contains("migrating kvm1 to n2").then_some(())
    })
    .await;
    // n1 is the source and the Raft leader.
    nodes[0].kill9();
    runs_once(&sim, 60).await;
    let status = ok(&n2, &["demo/svc/kvm1", "instance", "status", "-r"]);
    assert!(status.contains("container#1"), "{status}");
    // n1 back: the cluster settles with the guest once, n1 passive.
    nodes[0].start();
    runs_once(&sim, 30).await;
}

/// How many times the guest booted on `node` (`omsim virsh list`), empty when it is not there.
fn boots(sim: &Path, node: &str) -> String {
    let list = String::from_utf8_lossy(&omsim_virsh(sim, node, &["list"]).stdout).to_string();
    list.split("boots=")
        .nth(1)
        .map(|b| b.trim().to_string())
        .unwrap_or_default()
}

/// libvirt's incoming domain is active from the start of the copy, but paused: the target
/// must not take it for the guest running there. A copy that fails after the target saw it
/// aborts the switch, and the guest keeps running on the source, never rebooted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_migration_failing_late_leaves_the_guest_running_on_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let (nodes, sim) = guest_on_n1(tmp.path()).await;
    let n1 = nodes[0].server();
    let before = boots(&sim, "n1");
    std::fs::write(sim.join("migrate-ms"), "4000").unwrap();
    let switch = tokio::task::spawn_blocking({
        let n1 = n1.clone();
        move || omctl(&n1, &["demo/svc/kvm1", "switch", "--live", "--wait", "--time", "60s"])
    });
    support::eventually(10, "the incoming domain on n2", || {
        let list = String::from_utf8_lossy(&omsim_virsh(&sim, "n2", &["list"]).stdout).to_string();
        async move { list.contains("kvm1 paused").then_some(()) }
    })
    .await;
    // Long enough for n2's applier to see the incoming domain and act on what it sees.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    std::fs::write(sim.join("migrate-fail"), "").unwrap();
    let out = switch.await.unwrap();
    assert!(
        out.status.code() == Some(2) && stdout(&out).contains("switch aborted: migrating kvm1"),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        logs(&nodes)
    );
    runs_once(&sim, 20).await;
    assert!(running_on(&sim, "n1"), "the guest stays on n1");
    assert_eq!(boots(&sim, "n1"), before, "the guest kept running on n1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_drain_moves_the_guest_live_then_keeps_the_node_frozen_and_refuses_when_nowhere_to_go() {
    let tmp = tempfile::tempdir().unwrap();
    let (nodes, sim) = guest_on_n1(tmp.path()).await;
    let n1 = nodes[0].server();
    let placement = |mon: &str| mon_row(mon, "Nodes", "placement");

    // n2 frozen: kvm1 has nowhere to go, and the drain changes nothing.
    ok(&n1, &["node", "freeze", "--node", "n2"]);
    let out = omctl(&n1, &["node", "drain", "--node", "n1", "--live"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let e = stderr(&out);
    assert!(
        e.contains("node n1 not drained, nothing changed") && e.contains("demo/svc/kvm1: nowhere to go: n2 is frozen"),
        "{e}"
    );
    let mon = ok(&n1, &["mon"]);
    assert_eq!(placement(&mon)["n1"], "open", "{mon}");
    assert_eq!(mon_row(&mon, "Nodes", "services")["n1"], "1", "{mon}");
    assert!(running_on(&sim, "n1") && !running_on(&sim, "n2"));
    ok(&n1, &["node", "thaw", "--node", "n2"]);

    // Drained live: the guest runs on n2, n1 frozen with nothing on it.
    let out = ok(&n1, &["node", "drain", "--node", "n1", "--live", "--time", "60s"]);
    assert!(out.contains("demo/svc/kvm1: live-switch to n2 done"), "{out}");
    assert!(out.contains("node n1 drained: 1 services moved, frozen"), "{out}");
    assert!(running_on(&sim, "n2") && !running_on(&sim, "n1"));
    let mon = ok(&n1, &["mon"]);
    assert_eq!(
        (
            placement(&mon)["n1"].as_str(),
            placement(&mon)["n2"].as_str(),
            placement(&mon)["n3"].as_str()
        ),
        ("drained", "open", "-"),
        "{mon}"
    );
    let status = ok(&n1, &["demo/svc/kvm1", "instance", "status", "-r"]);
    assert!(
        status.lines().any(|l| l.contains("n1") && l.contains("drained")),
        "{status}"
    );
    let json = ok(&n1, &["-o", "json", "mon"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let row = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "n1")
        .unwrap()
        .clone();
    assert_eq!(
        (row["frozen"].as_bool(), row["drained"].as_bool()),
        (Some(true), Some(true)),
        "{row}"
    );

    // Nothing returns to a drained node: a drain of n2 now has nowhere to go.
    let out = omctl(&n1, &["node", "drain", "--node", "n2"]);
    assert!(stderr(&out).contains("n1 is frozen"), "{}", stderr(&out));
    // Undrained, n1 may take services again; nothing moves back by itself.
    ok(&n1, &["node", "undrain", "--node", "n1"]);
    let mon = ok(&n1, &["mon"]);
    assert_eq!(placement(&mon)["n1"], "open", "{mon}");
    assert!(running_on(&sim, "n2") && !running_on(&sim, "n1"));
    assert_eq!(
        std::fs::read_to_string(sim.join("violations.log")).unwrap_or_default(),
        ""
    );
}

/// A node's metrics (`--metrics-listen 127.0.0.1:0`: the port its log names), as
/// `name{labels}` -> value.
fn scrape(node: &Omd) -> std::collections::BTreeMap<String, f64> {
    use std::io::{Read, Write};
    let log = node.log();
    let marker = "metrics on http://";
    let at = log
        .rfind(marker)
        .unwrap_or_else(|| panic!("{} serves no metrics:\n{log}", node.name));
    let addr = log[at + marker.len()..].split('/').next().unwrap().to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(15))).unwrap();
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

fn metric(m: &std::collections::BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// A child process killed (by pid) and reaped when dropped, a failing test's included.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `omctl events -o json` lines as (index, kind, message).
fn event_lines(text: &str) -> Vec<(u64, String, String)> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
            (
                v["index"].as_u64().unwrap(),
                v["kind"].as_str().unwrap().to_string(),
                v["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_and_the_metrics_follow_a_switch_and_a_failover() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, sim) = guest_on_n1_with(tmp.path(), &["--metrics-listen", "127.0.0.1:0"]).await;
    let (n1, n3) = (nodes[0].server(), nodes[2].server());
    let kvm1 = "service=\"demo/svc/kvm1\"";
    let before = scrape(&nodes[1]);
    assert_eq!(
        metric(&before, &format!("omraft_service_placement{{{kvm1},node=\"n1\"}}")),
        1.0
    );
    assert_eq!(
        metric(&before, &format!("omraft_switches_total{{{kvm1},kind=\"live\"}}")),
        0.0
    );
    assert_eq!(metric(&before, "omraft_raft_role{role=\"follower\"}"), 1.0);
    assert!(metric(&before, "omraft_raft_applied_index") > 0.0);
    assert!(metric(&before, "omraft_lease_remaining_seconds") > 0.0);
    let leader = scrape(&nodes[0]);
    assert_eq!(metric(&leader, "omraft_raft_role{role=\"leader\"}"), 1.0);
    assert!(
        leader.contains_key("omraft_raft_peer_lag_entries{peer=\"n2\"}"),
        "{leader:?}"
    );
    assert!(metric(&leader, "omraft_raft_sync_seconds_count") > 0.0);
    assert_eq!(
        metric(
            &leader,
            "omraft_guest_running{service=\"demo/svc/kvm1\",guest=\"kvm1\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &leader,
            "omraft_drbd_role{resource=\"kvm1.demo.vol.default\",role=\"Primary\"}"
        ),
        1.0
    );

    // Followers of the events (on the witness, which stays up) and of mon, from now on.
    let start = event_lines(&ok(&n3, &["events", "-o", "json"])).last().unwrap().0;
    let follow_out = tmp.path().join("events.out");
    let follower = std::process::Command::new(OMCTL)
        .args([
            "--server",
            &n3,
            "events",
            "--follow",
            "-o",
            "json",
            "--since",
            &(start + 1).to_string(),
        ])
        .stdout(std::fs::File::create(&follow_out).unwrap())
        .stderr(std::fs::File::create(tmp.path().join("events.err")).unwrap())
        .spawn()
        .map(KilledOnDrop)
        .unwrap();
    let mon_out = tmp.path().join("mon.out");
    let mon = std::process::Command::new(OMCTL)
        .args(["--server", &n1, "mon", "--watch", "--interval", "600"])
        .stdout(std::fs::File::create(&mon_out).unwrap())
        .spawn()
        .map(KilledOnDrop)
        .unwrap();
    let frames = || {
        std::fs::read_to_string(&mon_out)
            .unwrap_or_default()
            .matches("\x1b[2J")
            .count()
    };
    support::eventually(10, "mon's first frame", || async { (frames() == 1).then_some(()) }).await;

    // A live switch to n2.
    ok(&n1, &["demo/svc/kvm1", "switch", "--live", "--wait", "--time", "60s"]);
    // mon redrew from the events, long before its 600 s interval.
    support::eventually(10, "mon to redraw after the switch", || async {
        (frames() > 1).then_some(())
    })
    .await;
    let switched = scrape(&nodes[1]);
    assert_eq!(
        metric(&switched, &format!("omraft_service_placement{{{kvm1},node=\"n2\"}}")),
        1.0
    );
    assert_eq!(
        metric(&switched, &format!("omraft_switches_total{{{kvm1},kind=\"live\"}}")),
        1.0
    );
    for phase in ["Prepare", "DualPrimary", "Migrating", "Finalize"] {
        let key = format!("omraft_switch_phase_seconds_count{{phase=\"{phase}\"}}");
        assert_eq!(metric(&switched, &key), 1.0, "{key}: {switched:?}");
    }
    support::eventually(10, "the guest seen running on n2", || async {
        let m = scrape(&nodes[1]);
        (metric(&m, "omraft_guest_running{service=\"demo/svc/kvm1\",guest=\"kvm1\"}") == 1.0).then_some(())
    })
    .await;

    // The witness restarts under the follower, which resumes where it was.
    nodes[2].term();
    nodes[2].start();
    until_ok(&n3, &["events", "--since", "1"]).await;

    // n2's plug pulled: the service fails over to n1.
    nodes[1].kill9();
    assert!(omsim_virsh(&sim, "n2", &["poweroff"]).status.success());
    support::eventually(30, "the guest back on n1", || async {
        running_on(&sim, "n1").then_some(())
    })
    .await;
    support::eventually(10, "n1's metrics to count the failover", || async {
        let m = scrape(&nodes[0]);
        let done = metric(&m, &format!("omraft_failovers_total{{{kvm1}}}")) == 1.0
            && metric(&m, "omraft_lease_expiries_total{node=\"n2\"}") >= 1.0
            && metric(&m, &format!("omraft_service_placement{{{kvm1},node=\"n1\"}}")) == 1.0;
        done.then_some(())
    })
    .await;
    support::eventually(10, "the follower to see the failover", || async {
        std::fs::read_to_string(&follow_out)
            .unwrap_or_default()
            .contains("\"kind\":\"failover\"")
            .then_some(())
    })
    .await;
    let followed = event_lines(&std::fs::read_to_string(&follow_out).unwrap());
    drop((follower, mon));
    let err = std::fs::read_to_string(tmp.path().join("events.err")).unwrap();
    assert!(
        err.contains("lost the event stream") && err.contains("resuming"),
        "{err}"
    );

    // What the follower printed across the restart is what n1 has of the same entries: no
    // gap, no repeat, in the same order.
    let last = followed.last().unwrap().0;
    let n1_events: Vec<_> = event_lines(&ok(&n1, &["events", "-o", "json", "--since", &(start + 1).to_string()]))
        .into_iter()
        .filter(|e| e.0 <= last)
        .collect();
    assert_eq!(followed, n1_events);
    let kinds: Vec<&str> = followed.iter().map(|e| e.1.as_str()).collect();
    for kind in [
        "switch",
        "switch-phase",
        "placement",
        "lease-expired",
        "failover",
        "fenced",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {followed:#?}");
    }
    let failover = followed.iter().find(|e| e.1 == "failover").unwrap();
    assert_eq!(
        failover.2,
        "demo/svc/kvm1 failed over from n2 to n1: n2's lease ran out"
    );
    assert!(
        followed
            .iter()
            .any(|e| e.1 == "switch-phase" && e.2.ends_with(": Done")),
        "{followed:#?}"
    );

    // Every metric the Grafana dashboard plots is one the daemons serve (no step failed here).
    let served: std::collections::BTreeSet<String> = [scrape(&nodes[0]), scrape(&nodes[2])]
        .iter()
        .flat_map(|m| m.keys().map(|k| k.split('{').next().unwrap().to_string()))
        .collect();
    let dashboard =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/grafana/omraft.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut plotted: Vec<&str> = dashboard
        .match_indices("omraft_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            &rest[..rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len())]
        })
        .collect();
    plotted.dedup();
    assert!(plotted.len() > 15, "{plotted:?}");
    for name in plotted {
        assert!(
            served.contains(name) || name == "omraft_applier_step_failures_total",
            "the dashboard plots {name}, which no daemon serves: {served:?}"
        );
    }
}
