//! The tutorial's object steps, run with the real `omctl` against three real `omd` (two data
//! nodes reporting a 5 GiB volume group `data`, and a witness), with output of the
//! tutorial's shape; then bad input, refused with exit 1, naming the part, committing nothing
//! (hostile and oversized values included, each error short).
//! Then DRBD's fence-peer and unfence-peer handlers, run as DRBD runs them.

#[path = "../support/mod.rs"]
mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::omd::*;
use support::*;

/// The leader's last log index, as `mon` reports it.
fn last_log_index(server: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&ok(server, &["mon", "-o", "json"])).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    let leader = nodes.iter().find(|n| n["raft_role"] == "leader").expect("a leader");
    leader["last_log_index"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_object_steps_on_three_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = three(tmp.path()).await;
    let (n1, n2) = (nodes[0].server(), nodes[1].server());
    ok(&n1, &["cluster", "config", "update", "--set", "cluster.name=drbd4kvm"]);

    // The DRBD template config map.
    let file = tmp.path().join("live-migration");
    std::fs::write(&file, support::TUTORIAL_TEMPLATE).unwrap();
    assert_eq!(ok(&n1, &["system/cfg/drbd", "create"]), "");
    let f = file.to_str().unwrap();
    assert_eq!(
        ok(
            &n1,
            &["system/cfg/drbd", "key", "add", "--name", "live-migration", "--from", f]
        ),
        "system/cfg/drbd: set key live-migration\n"
    );
    assert_eq!(ok(&n2, &["system/cfg/drbd", "key", "list"]), "live-migration\n");
    assert_eq!(
        ok(&n2, &["system/cfg/drbd", "key", "decode", "--name", "live-migration"]),
        support::TUTORIAL_TEMPLATE
    );

    // The pool.
    let pool = [
        "--set",
        "pool#drbdvm.type=drbd",
        "--set",
        "pool#drbdvm.vg=data",
        "--set",
        "pool#drbdvm.template=live-migration",
    ];
    assert_eq!(
        ok(&n1, &[&["cluster", "config", "update"][..], &pool].concat()),
        "committed\n"
    );
    assert_eq!(
        ok(&n1, &["cluster", "config", "show", "--section", "pool#drbdvm"]),
        "[pool#drbdvm]\ntype = drbd\nvg = data\ntemplate = live-migration\n"
    );
    // Both data nodes' volume group reports are in: 2 x 5 GiB.
    let listing = eventually(20, "both volume group reports", || {
        let n1 = n1.clone();
        async move {
            let t = ok(&n1, &["pool", "list", "--name", "drbdvm"]);
            t.contains(" 10g ").then_some(t)
        }
    })
    .await;
    assert_eq!(
        listing,
        "NAME    TYPE  CAPABILITIES                     HEAD  VOLUME_COUNT  BIN_SIZE  BIN_USED  BIN_FREE\n\
         drbdvm  drbd  rox,rwx,roo,rwo,snap,blk,shared  data  0             10g       0         10g\n"
    );
    assert_eq!(
        ok(&n2, &["pool", "list", "--name", "drbdvm", "--node", "n1"]),
        "NODE  NAME    TYPE  CAPABILITIES                     HEAD  VOLUME_COUNT  BIN_SIZE  BIN_USED  BIN_FREE\n\
         n1    drbdvm  drbd  rox,rwx,roo,rwo,snap,blk,shared  data  0             5g        0         5g\n"
    );

    // The service and its replicated volume.
    assert_eq!(
        ok(
            &n1,
            &[
                "demo/svc/kvm1",
                "create",
                "--kw",
                "nodes={clusternodes}",
                "--kw",
                "orchestrate=ha"
            ]
        ),
        ""
    );
    let vol = [
        "--set",
        "volume#data.name={name}",
        "--set",
        "volume#data.shared=true",
        "--set",
        "volume#data.size=4G",
        "--set",
        "volume#data.pool=drbdvm",
    ];
    ok(&n1, &[&["demo/svc/kvm1", "config", "update"][..], &vol].concat());
    let shown = ok(&n2, &["demo/svc/kvm1", "config", "show"]);
    let (head, tail) = shown.split_once("id = ").unwrap();
    assert_eq!(head, "[DEFAULT]\nnodes = {clusternodes}\norchestrate = ha\n");
    let (id, rest) = tail.split_once('\n').unwrap();
    assert_eq!(id.len(), 36, "id {id:?}");
    assert_eq!(
        rest,
        "\n[volume#data]\nname = {name}\nshared = true\nsize = 4G\npool = drbdvm\n"
    );
    assert_eq!(
        ok(&n2, &["demo/svc/kvm1", "instance", "device", "list"]),
        "OBJECT         RESOURCE     DRIVER_GROUP  DRIVER_NAME  ROLE     DEVICE\n\
         demo/svc/kvm1  volume#data  volume                     exposed  /dev/drbd0\n\
         demo/svc/kvm1  volume#data  volume                     base     /dev/data/kvm1.demo.vol.drbd4kvm\n"
    );
    assert_eq!(
        ok(&n1, &["demo/vol/kvm1", "config", "get", "--kw", "disk#2.res"]),
        "kvm1.demo.vol.drbd4kvm\n"
    );
    assert_eq!(
        ok(&n1, &["demo/vol/kvm1", "config", "get", "--kw", "disk#2.port"]),
        "7289\n"
    );
    assert_eq!(
        ok(&n1, &["demo/svc/kvm1", "config", "get", "--kw", "nodes", "--eval"]),
        "n1 n2\n"
    );
    assert_eq!(
        ok(&n1, &["object", "ls", "*/svc/*"]),
        "OBJECT         KIND\ndemo/svc/kvm1  svc\n"
    );
    let mon = ok(&n2, &["mon"]);
    assert!(mon.contains("\n demo/svc/kvm1 "), "mon lacks the service:\n{mon}");
    let after = ok(&n1, &["pool", "list", "--name", "drbdvm"]);
    assert!(after.contains("data  1             10g       8g        2g"), "{after}");
    let json: serde_json::Value = serde_json::from_str(&ok(&n1, &["pool", "list", "-o", "json"])).unwrap();
    assert_eq!(json[0]["volume_count"], 1);

    // Bad input: refused with exit 1, naming the part; nothing reaches the log.
    let before = last_log_index(&n1);
    let bomb = doubling_template();
    let flood = format!("{{{{range 1000000}}}}{}\n{{{{end}}}}", "x".repeat(99));
    let bad: &[(&[&str], &str)] = &[
        (
            &["system/cfg/drbd", "key", "add", "--name", "bomb", "--value", &bomb],
            "key \"bomb\": the template is over budget: more than 100000 steps",
        ),
        (
            &[
                "system/cfg/drbd",
                "key",
                "change",
                "--name",
                "live-migration",
                "--value",
                &flood,
            ],
            "over budget: more than 65536 bytes of output",
        ),
        (&["demo/svc/x", "create", "--kw", "disk#1.type=lv"], "[disk#1]"),
        (&["demo/svc/x", "create", "--kw", "volume#data.sise=1G"], "\"sise\""),
        (&["demo/svc/x", "create", "--kw", "orchestrate=always"], "orchestrate"),
        (
            &["demo/svc/x", "create", "--kw", "volume#data.size=4Q"],
            "volume#data.size",
        ),
        (
            &[
                "demo/svc/x",
                "create",
                "--kw",
                "volume#data.size=1G",
                "--kw",
                "volume#data.pool=nope",
            ],
            "\"nope\"",
        ),
        (
            &[
                "demo/svc/x",
                "create",
                "--kw",
                "volume#data.size=2G",
                "--kw",
                "volume#data.shared=true",
            ],
            "out of space",
        ),
        (&["demo/svc/x", "create", "--kw", "nodes={nodes}"], "{nodes}"),
        (&["demo/svc/kvm1", "create"], "already exists"),
        (&["system/cfg/drbd", "delete"], "pool#drbdvm"),
        (&["demo/vol/kvm1", "delete"], "demo/svc/kvm1"),
        (
            &[
                "cluster",
                "config",
                "update",
                "--set",
                "pool#p2.type=drbd",
                "--set",
                "pool#p2.template=nokey",
            ],
            "nokey",
        ),
        (
            &["demo/svc/kvm1", "config", "update", "--set", "id=x"],
            "set by the cluster",
        ),
        (
            &["demo/svc/kvm1", "config", "update", "--set", "volume#data.size@n9=1G"],
            "\"n9\"",
        ),
        (&["Demo/svc/x", "create"], "\"Demo\""),
        (&["system/svc/x", "create"], "system namespace"),
    ];
    for (args, named) in bad {
        let out = omctl(&n2, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(named),
            "{args:?}: {named:?} not in {}",
            stderr(&out)
        );
    }
    // Hostile and oversized input: refused the same way, each error short whatever the input
    // (a whole 16 KiB value in a gRPC error's header broke clients).
    let conf = |name: &str, text: String| {
        let f = tmp.path().join(name);
        std::fs::write(&f, text).unwrap();
        f.to_str().unwrap().to_string()
    };
    let twice = conf("twice.conf", "[DEFAULT]\n[DEFAULT]\nnodes = n1\n".into());
    let sections = conf(
        "sections.conf",
        (0..50_000).map(|i| format!("[x#{i}]\nk = v\n")).collect(),
    );
    let huge = conf("huge.conf", format!("[DEFAULT]\nnodes = {}\n", "n1 ".repeat(400_000)));
    let long = format!("orchestrate={}", "x".repeat(16 * 1024));
    let hostile: &[(&[&str], &str)] = &[
        (
            &[
                "cluster",
                "config",
                "update",
                "--set",
                "migration.uri=tcp://{host}:1\n[evil]\nk = v",
            ],
            "one line without control characters",
        ),
        (
            &[
                "cluster",
                "config",
                "update",
                "--set",
                "migration.libvirt_uri=qemu+ext:///system?command=/tmp/x",
            ],
            "transport \"qemu+ext\" is not allowed",
        ),
        (
            &["cluster", "config", "update", "--set", "migration.uri=exec:/bin/sh"],
            "only tcp://{host}",
        ),
        (
            &["demo/svc/x", "create", "--config", &twice],
            "line 2: section [DEFAULT] appears twice",
        ),
        (
            &["demo/svc/x", "create", "--config", &sections],
            "more than 1024 sections",
        ),
        (&["demo/svc/x", "create", "--config", &huge], "1 MiB"),
        (&["demo/svc/x", "create", "--kw", &long], "(16384 bytes)"),
        (
            &[
                "demo/svc/x",
                "create",
                "--kw",
                "container#1.type=kvm",
                "--kw",
                "container#1.name=a\u{1b}[2J",
            ],
            "U+001B",
        ),
    ];
    for (args, named) in hostile {
        let out = omctl(&n2, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{named}: {err}");
        assert!(err.contains(named), "{named:?} not in {err}");
        assert!(err.len() < 1024, "{named}: a {} byte error", err.len());
    }
    let shown = ok(&n1, &["cluster", "config", "show"]);
    assert!(!shown.contains("[evil]") && !shown.contains("qemu+ext"), "{shown}");
    assert_eq!(last_log_index(&n1), before, "a refused command reached the log");

    // A service from a --config file; keys of a secret changed and removed.
    let conf = tmp.path().join("kvm2.conf");
    std::fs::write(
        &conf,
        "[DEFAULT]\nnodes = n1 n2\n\n[container#1]\ntype = kvm\nname = kvm2\n",
    )
    .unwrap();
    assert_eq!(
        ok(&n1, &["demo/svc/kvm2", "create", "--config", conf.to_str().unwrap()]),
        ""
    );
    let shown = ok(&n2, &["demo/svc/kvm2", "config", "show", "--section", "container#1"]);
    assert_eq!(shown, "[container#1]\ntype = kvm\nname = kvm2\n");
    assert_eq!(
        ok(
            &n1,
            &[
                "demo/svc/kvm2",
                "config",
                "get",
                "--kw",
                "container#1.stop_timeout",
                "--eval"
            ]
        ),
        "2m\n"
    );
    ok(&n1, &["demo/sec/s1", "create"]);
    ok(
        &n1,
        &["demo/sec/s1", "key", "add", "--name", "pw", "--value", "hunter2"],
    );
    ok(
        &n2,
        &["demo/sec/s1", "key", "change", "--name", "pw", "--value", "hunter3"],
    );
    assert_eq!(ok(&n1, &["demo/sec/s1", "key", "decode", "--name", "pw"]), "hunter3");
    assert!(
        !ok(&n1, &["demo/sec/s1", "config", "show"]).contains("hunter"),
        "a secret in config show"
    );
    let out = omctl(&n1, &["demo/sec/s1", "key", "add", "--name", "pw", "--value", "x"]);
    assert!(
        out.status.code() == Some(1) && stderr(&out).contains("key change"),
        "{}",
        stderr(&out)
    );
    ok(&n1, &["demo/sec/s1", "key", "remove", "--name", "pw"]);
    assert_eq!(ok(&n1, &["demo/sec/s1", "key", "list"]), "");
    assert_eq!(
        omctl(&n1, &["demo/sec/s1", "key", "decode", "--name", "pw"])
            .status
            .code(),
        Some(1)
    );

    // Deleting the service frees its volume.
    assert_eq!(ok(&n2, &["demo/svc/kvm1", "delete"]), "");
    assert!(ok(&n1, &["pool", "list"]).contains("data  0             10g       0         10g"));

    // mon: counts of every service, one page of them, the next through --after, all with --all.
    for p in ["page/svc/p1", "page/svc/p2", "page/svc/p3"] {
        ok(&n1, &[p, "create"]);
    }
    let text = ok(&n2, &["mon", "--filter", "page/*", "--limit", "2"]);
    assert!(
        text.contains("Services: 4, 3 matching the filter: 0 up, 0 warn, 3 down"),
        "{text}"
    );
    assert!(
        text.contains("page/svc/p1") && text.contains("page/svc/p2") && !text.contains("page/svc/p3"),
        "{text}"
    );
    assert!(
        text.contains("2 of 3 shown; the next page: omctl mon --after page/svc/p2"),
        "{text}"
    );
    let text = ok(
        &n2,
        &["mon", "--filter", "page/*", "--limit", "2", "--after", "page/svc/p2"],
    );
    assert!(
        text.contains("page/svc/p3") && !text.contains("page/svc/p1") && !text.contains("next page"),
        "{text}"
    );
    let paths = |json: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(json).expect("mon json");
        v["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["path"].as_str().unwrap().to_string())
            .collect()
    };
    let all = ok(&n1, &["mon", "--all", "--limit", "1", "-o", "json"]);
    assert_eq!(
        paths(&all),
        ["demo/svc/kvm2", "page/svc/p1", "page/svc/p2", "page/svc/p3"]
    );
}

const RES: &str = "kvm1.demo.vol.drbd4kvm";

/// Runs `handler` as DRBD runs one: `/bin/sh -c` with DRBD's environment only (its minimal
/// PATH), plus OMCTL_SERVER since the test daemons do not listen on the default socket.
fn as_drbd(handler: &str, env: &[(&str, &str)]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(handler)
        .env_clear()
        .env("PATH", "/sbin:/usr/sbin:/bin:/usr/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run /bin/sh");
    (out, start.elapsed())
}

/// Environment variables, name and value.
type Env = Vec<(&'static str, &'static str)>;

/// DRBD's handler environment on the node with DRBD node-id `me` about the peer `peer`
/// (n1 is node-id 0, n2 node-id 1).
fn drbd_env(resource: &'static str, me: &'static str, peer: &'static str) -> Env {
    vec![
        ("DRBD_RESOURCE", resource),
        ("DRBD_MY_NODE_ID", me),
        ("DRBD_PEER_NODE_ID", peer),
        ("DRBD_NODE_ID_0", "n1"),
        ("DRBD_NODE_ID_1", "n2"),
        ("DRBD_MINOR", "0"),
        ("DRBD_CSTATE", "Connecting"),
        ("UP_TO_DATE_NODES", if me == "0" { "0x00000001" } else { "0x00000002" }),
    ]
}

/// The nodes marked outdated for the service, as `instance status -o json` shows them.
fn outdated(server: &str) -> Vec<(String, Vec<String>)> {
    let v: serde_json::Value = serde_json::from_str(&ok(
        server,
        &["demo/svc/kvm1", "instance", "status", "-r", "-o", "json"],
    ))
    .unwrap();
    v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| {
            let res = i["outdated"].as_array()?;
            let res = res.iter().map(|r| r.as_str().unwrap().to_string()).collect();
            Some((i["node"].as_str().unwrap().to_string(), res))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drbd_fence_peer_succeeds_only_once_the_cluster_committed_the_peer_outdated() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    let mut nodes = three_with(tmp.path(), &["--drivers", "sim", "--sim-dir", sim.to_str().unwrap()]).await;
    let (n1, n2) = (nodes[0].server(), nodes[1].server());
    ok(
        &n1,
        &[
            "cluster",
            "config",
            "update",
            "--set",
            "cluster.name=drbd4kvm",
            "--set",
            "pool#drbdvm.type=drbd",
            "--set",
            "pool#drbdvm.vg=data",
        ],
    );
    ok(&n1, &["demo/svc/kvm1", "create", "--kw", "nodes={clusternodes}"]);
    // The volume waits for the nodes' volume group reports.
    eventually(20, "the nodes' volume group reports", || {
        let n1 = n1.clone();
        async move {
            let vol = ["--set", "volume#data.size=1G", "--set", "volume#data.shared=true"];
            let args = [&["demo/svc/kvm1", "config", "update"][..], &vol].concat();
            omctl(&n1, &args).status.success().then_some(())
        }
    })
    .await;
    ok(&n1, &["demo/svc/kvm1", "provision", "--wait", "--time", "60s"]);

    // The built-in template wired the handlers to the omctl beside omd, with an absolute path.
    let file = |node: &str| std::fs::read_to_string(sim.join(node).join("drbd.d").join(format!("{RES}.res"))).unwrap();
    let omctl_bin = env!("CARGO_BIN_EXE_omctl");
    assert!(file("n1").contains("fencing resource-and-stonith;"), "{}", file("n1"));
    let handler = |node: &str, name: &str| {
        let file = file(node);
        let start = format!("{name} \"");
        let line = file.lines().find(|l| l.trim_start().starts_with(&start)).unwrap();
        line.trim()
            .trim_start_matches(&start)
            .trim_end_matches("\";")
            .to_string()
    };
    // With this node's socket: DRBD passes handlers no OMCTL_SERVER.
    assert_eq!(
        handler("n1", "fence-peer"),
        format!("{omctl_bin} --server {n1} drbd fence-peer")
    );
    assert_eq!(
        handler("n1", "unfence-peer"),
        format!("{omctl_bin} --server {n1} drbd unfence-peer")
    );
    assert_eq!(
        handler("n2", "fence-peer"),
        format!("{omctl_bin} --server {n2} drbd fence-peer")
    );

    // n1, the Primary, loses n2: its fence-peer handler exits 4 once n2 is marked outdated.
    let (out, _) = as_drbd(&handler("n1", "fence-peer"), &drbd_env(RES, "0", "1"));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("{RES}: n2 outdated (committed at log index ")),
        "{}",
        stdout(&out)
    );
    assert_eq!(outdated(&n2), vec![("n2".to_string(), vec![RES.to_string()])]);
    let tree = ok(&n2, &["demo/svc/kvm1", "instance", "status", "-r"]);
    let n2_line = tree.lines().find(|l| l.contains(" n2 ")).unwrap();
    assert!(n2_line.contains("outdated"), "{tree}");
    // Already marked (DRBD may call it again): still 4, nothing committed.
    let (out, _) = as_drbd(&handler("n1", "fence-peer"), &drbd_env(RES, "0", "1"));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{RES}: n2 outdated (already so)\n"));

    // Refusals exit 1 with why, never a code DRBD would act on.
    let fence = handler("n1", "fence-peer");
    let cases: Vec<(&str, Env, &str)> = vec![
        // n2 cannot outdate n1, which holds the service.
        ("n2", drbd_env(RES, "1", "0"), "node n1 holds demo/svc/kvm1"),
        (
            "n1",
            drbd_env("kvm9.demo.vol.drbd4kvm", "0", "1"),
            "kvm9.demo.vol.drbd4kvm is not the DRBD resource of any volume",
        ),
        (
            "n1",
            drbd_env(RES, "0", "1")
                .into_iter()
                .filter(|(k, _)| *k != "DRBD_PEER_NODE_ID")
                .collect(),
            "DRBD_PEER_NODE_ID is not set",
        ),
        (
            "n1",
            drbd_env(RES, "0", "1")
                .into_iter()
                .filter(|(k, _)| *k != "DRBD_NODE_ID_1")
                .collect(),
            "DRBD_NODE_ID_1",
        ),
    ];
    for (node, env, named) in &cases {
        let (out, _) = as_drbd(&handler(node, "fence-peer"), env);
        assert_eq!(out.status.code(), Some(1), "{named}: {}", stderr(&out));
        assert!(stderr(&out).contains(named), "{named:?} not in {}", stderr(&out));
    }
    let out = omctl(&n1, &["drbd", "fence-peer", "--resource", RES, "--peer", "n7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unknown node \"n7\""), "{}", stderr(&out));

    // n2 resynced: unfence-peer clears the mark.
    let (out, _) = as_drbd(&handler("n1", "unfence-peer"), &drbd_env(RES, "0", "1"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(outdated(&n2).is_empty());
    assert!(!ok(&n2, &["demo/svc/kvm1", "instance", "status", "-r"]).contains("outdated"));

    // Cut from the majority, n1 cannot commit: fence-peer exits 1 within its timeout, and
    // DRBD keeps I/O frozen. (Stopped first, so n1's simulated watchdog does not reset it.)
    ok(&n1, &["demo/svc/kvm1", "stop", "--wait", "--time", "30s"]);
    nodes[1].kill9();
    nodes[2].kill9();
    let (out, took) = as_drbd(&format!("{fence} --timeout 3s"), &drbd_env(RES, "0", "1"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("outcome unknown (it may commit later): no answer within 3 s"),
        "{}",
        stderr(&out)
    );
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(nodes[0].alive(), "n1 was reset:\n{}", nodes[0].log());
}

#[test]
fn drbd_handler_help_explains_the_exit_codes() {
    let out = omctl("unix:/nonexistent", &["drbd", "fence-peer", "--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for part in [
        "Exit 4",
        "Exit 1",
        "resource-and-stonith",
        "DRBD_NODE_ID_<DRBD_PEER_NODE_ID>",
    ] {
        assert!(help.contains(part), "{part:?} not in:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ssh_trust_gives_every_node_the_data_nodes_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = three(tmp.path()).await;
    // The admin's own key on n1 stays.
    let ssh1 = nodes[0].dir.join("ssh");
    std::fs::create_dir_all(&ssh1).unwrap();
    std::fs::write(ssh1.join("authorized_keys"), "ssh-rsa AAAAB3Nza admin@laptop\n").unwrap();
    let out = ok(&nodes[1].server(), &["cluster", "ssh", "trust"]);
    assert!(out.starts_with("committed"), "{out}");
    let keys = |n: &Omd| std::fs::read_to_string(n.dir.join("ssh/authorized_keys")).unwrap_or_default();
    support::eventually(30, "the data nodes' keys on every node", || {
        let all = nodes.iter().all(|n| {
            let k = keys(n);
            ["n1", "n2"].iter().all(|m| k.contains(&format!(" omraft@{m}\n")))
        });
        async move { all.then_some(()) }
    })
    .await;
    let begin = "# BEGIN omraft managed keys (do not edit)\n";
    assert!(
        keys(&nodes[0]).starts_with(&format!("ssh-rsa AAAAB3Nza admin@laptop\n{begin}")),
        "{}",
        keys(&nodes[0])
    );
    for n in &nodes[..2] {
        let public = std::fs::read_to_string(n.dir.join("ssh/omraft.pub")).unwrap();
        let body = public.split_whitespace().nth(1).unwrap();
        for m in &nodes {
            assert!(keys(m).starts_with(begin) || m.name == "n1", "{}", keys(m));
            assert!(keys(m).contains(body), "{}'s key missing on {}", n.name, m.name);
        }
    }
    // n3, the witness, makes no key, and no node trusts one of it.
    assert!(!nodes[2].dir.join("ssh/omraft.pub").exists());
    assert!(!nodes[2].log().contains("publishing the key"), "{}", nodes[2].log());
    for m in &nodes {
        assert!(!keys(m).contains("omraft@n3"), "{}: {}", m.name, keys(m));
    }
    assert_eq!(
        ok(
            &nodes[0].server(),
            &["cluster", "config", "get", "--kw", "cluster.ssh_trust"]
        )
        .trim(),
        "true"
    );
}
