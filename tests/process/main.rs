//! Real processes: `omd` daemons on loopback driven by the real `omctl` binary and by the
//! gRPC API, killed with SIGKILL and SIGTERM. Every daemon is killed by pid when a test ends.

#[path = "../support/mod.rs"]
mod support;

use support::omd::*;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use omraft::pb;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_leader_during_updates_loses_no_acknowledged_update() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = three(tmp.path()).await;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let dirs: Vec<PathBuf> = nodes.iter().map(|n| n.dir.clone()).collect();
    let writer = {
        let acked = acked.clone();
        tokio::spawn(async move {
            // A bounded stream of updates, spread over every node's socket; a dead node's
            // socket just fails and the next node is tried.
            for i in 0..300u32 {
                let dir = &dirs[i as usize % dirs.len()];
                let server = format!("unix:{}", dir.join("omd.sock").display());
                let Ok(mut c) = omraft::cli::client::connect(&server, None, None, None).await else {
                    continue;
                };
                let req = set(&[(&format!("pool#w{i}.type"), "lvm")]);
                if tokio::time::timeout(Duration::from_secs(15), c.config_update(req))
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    acked.lock().unwrap().insert(i);
                }
            }
        })
    };
    // Kill the leader once the stream is well under way.
    eventually(30, "50 acknowledged updates", || async {
        (acked.lock().unwrap().len() >= 50).then_some(())
    })
    .await;
    let c1 = local_client(&nodes[0].dir).await;
    let leader = wait_leader(&c1, 3).await;
    let li = nodes.iter().position(|n| n.name == leader).unwrap();
    nodes[li].kill9();
    writer.await.unwrap();
    nodes[li].start();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "only {} of 300 updates acknowledged", acked.len());
    for n in &nodes {
        let c = local_client(&n.dir).await;
        let cfg = eventually(30, "a linearizable read", || {
            let mut c = c.clone();
            async move { config(&mut c).await.ok() }
        })
        .await;
        let missing: Vec<_> = acked
            .iter()
            .filter(|i| !cfg.contains_key(&format!("pool#w{i}")))
            .collect();
        assert!(missing.is_empty(), "{} lost acknowledged updates {missing:?}", n.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn omctl_shows_the_tutorial_cluster_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes: Vec<Omd> = three(tmp.path()).await;
    let s1 = nodes[0].server();
    let out = omctl(&s1, &["cluster", "config", "update", "--set", "cluster.name=drbd4kvm"]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "committed\n"),
        "{}",
        stderr(&out)
    );
    let out = omctl(
        &nodes[2].server(),
        &["cluster", "config", "get", "--kw", "cluster.name"],
    );
    assert_eq!(stdout(&out), "drbd4kvm\n");
    let out = omctl(&s1, &["system/cfg/drbd", "create"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = omctl(
        &s1,
        &[
            "system/cfg/drbd",
            "key",
            "add",
            "--name",
            "live-migration",
            "--value",
            "resource {{.Name}} {}",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pool = [
        "--set",
        "pool#drbdvm.type=drbd",
        "--set",
        "pool#drbdvm.vg=data",
        "--set",
        "pool#drbdvm.template=live-migration",
    ];
    let out = omctl(&s1, &[&["cluster", "config", "update"][..], &pool[..]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let out = omctl(
        &nodes[1].server(),
        &["cluster", "config", "show", "--section", "pool#drbdvm"],
    );
    assert_eq!(
        stdout(&out),
        "[pool#drbdvm]\ntype = drbd\nvg = data\ntemplate = live-migration\n"
    );

    let out = omctl(&s1, &["mon"]);
    let text = stdout(&out);
    for want in [
        "Cluster drbd4kvm",
        "Daemon ",
        " uptime",
        " raft role",
        " leader",
        " term",
        " applied",
        "Nodes ",
        "Objects ~ *",
        "witness",
        "Services: 0: 0 up, 0 warn, 0 down",
    ] {
        assert!(text.contains(want), "mon lacks {want:?}:\n{text}");
    }
    let out = omctl(&s1, &["mon", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("mon json");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 3);
    assert!(v["nodes"].as_array().unwrap().iter().all(|n| n["reachable"] == true));
    assert_eq!(v["summary"]["services"], 0);
    assert_eq!(v["summary"]["next_after"], serde_json::Value::Null);

    let out = omctl(&s1, &["daemon", "hb", "status"]);
    let text = stdout(&out);
    assert!(text.starts_with("RUNNING  BEATING  ID"), "{text}");
    // A leader's two tx links and the two followers' rx links, all beating.
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert!(rows.iter().all(|r| r.starts_with("O        O")), "{text}");
    let out = omctl(&s1, &["daemon", "hb", "status", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("hb json");
    assert_eq!(v.as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn omctl_refuses_bad_input_with_exit_1_and_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let n1 = Omd::spawn("n1", tmp.path(), &format!("127.0.0.1:{}", free_port()));
    let n2 = Omd::spawn("n2", tmp.path(), &format!("127.0.0.1:{}", free_port()));
    let c1 = local_client(&n1.dir).await;
    local_client(&n2.dir).await;
    wait_leader(&c1, 1).await;
    let cases: &[(&[&str], &str)] = &[
        (
            &["cluster", "config", "update", "--set", "cluster.nmae=x"],
            "cluster.nmae",
        ),
        (&["cluster", "config", "update", "--set", "pool#p.type=nfs"], "\"nfs\""),
        (
            &["cluster", "config", "update", "--set", "cluster.name"],
            "SECTION.KEYWORD=VALUE",
        ),
        (&["cluster", "config", "get", "--kw", "pool#p.colour"], "pool#p.colour"),
        (&["cluster", "config", "show", "--section", "pool#none"], "pool#none"),
        (&["cluster", "remove", "--node", "n9"], "n9"),
        (&["mon", "--limit", "5000"], "mon limit 5000"),
        (
            &["mon", "--after", "not/a/path/at/all"],
            "mon after \"not/a/path/at/all\"",
        ),
    ];
    for (args, named) in cases {
        let out = omctl(&n1.server(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with("omctl: error: ") && stderr(&out).contains(named),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
    let super_omctl = omctl;
    // Join with a token of another cluster: refused, nothing changes.
    let foreign = stdout(&omctl(&n2.server(), &["daemon", "auth", "--role", "join"]))
        .trim()
        .to_string();
    let out = omctl(
        &n2.server(),
        &["cluster", "join", "--node", &n1.addr, "--token", &foreign],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not the cluster the token names"),
        "{}",
        stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&omctl(&n1.server(), &["mon", "-o", "json"]).stdout).unwrap();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 1, "{v}");

    // Over TCP: TLS only, verified against the CA; nothing without a credential, reads and
    // writes with a root token.
    let plain = format!("http://{}", n1.addr);
    let out = omctl(&plain, &["mon"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("TLS only"), "{}", stderr(&out));
    let ca = n1.dir.join("tls/ca.crt");
    let ca = ca.to_str().unwrap();
    let tcp = format!("https://{}", n1.addr);
    let omctl = |server: &str, args: &[&str]| {
        let mut all = vec!["--ca", ca];
        all.extend_from_slice(args);
        omctl(server, &all)
    };
    let out = omctl(&tcp, &["cluster", "config", "update", "--set", "cluster.name=x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no credential"), "{}", stderr(&out));
    // The wrong CA: the server is not trusted, nothing is sent.
    let other_ca = n2.dir.join("tls/ca.crt");
    let out = super_omctl(&tcp, &["--ca", other_ca.to_str().unwrap(), "mon"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let root = stdout(&omctl(
        &n1.server(),
        &["daemon", "auth", "--role", "root", "--duration", "5m"],
    ))
    .trim()
    .to_string();
    let out = omctl(
        &tcp,
        &[
            "--token",
            &root,
            "cluster",
            "config",
            "update",
            "--set",
            "cluster.name=viatcp",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = omctl(
        &tcp,
        &["--token", &foreign, "cluster", "config", "get", "--kw", "cluster.name"],
    );
    assert_eq!(out.status.code(), Some(1));
    // Unreachable daemon: exit 2.
    let out = super_omctl("unix:/nonexistent/omd.sock", &["mon"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_restart_resumes_from_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n1 = Omd::spawn("n1", tmp.path(), &format!("127.0.0.1:{}", free_port()));
    let mut c = local_client(&n1.dir).await;
    wait_leader(&c, 1).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(n1.dir.join("omd.sock")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode");
    c.config_update(set(&[("cluster.name", "kept")])).await.unwrap();
    drop(c);
    let status = n1.term();
    assert!(status.success(), "exit {status:?}\n{}", n1.log());
    assert!(!n1.dir.join("omd.sock").exists(), "socket left behind");
    n1.start();
    let c = local_client(&n1.dir).await;
    let v = eventually(15, "the value after restart", || {
        let mut c = c.clone();
        async move {
            c.config_get(pb::ConfigGetRequest {
                key: "cluster.name".into(),
            })
            .await
            .ok()
        }
    })
    .await;
    assert_eq!(v.into_inner().value, "kept");
    assert!(n1.log().contains("resumed from"), "{}", n1.log());
}

/// A node keeps the events of the entries it applied from its last snapshot on: older ones are
/// refused with the first index it has, which then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_before_what_a_node_keeps_are_refused_naming_the_first_it_has() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut n1 = Omd::spawn_with("n1", tmp.path(), &addr, &["--snapshot-every", "10", "--keep-logs", "0"]);
    wait_leader(&local_client(&n1.dir).await, 1).await;
    let server = n1.server();
    for i in 0..25 {
        ok(
            &server,
            &["cluster", "config", "update", "--set", &format!("cluster.name=c{i}")],
        );
    }
    let all = ok(&server, &["events", "--since", "1"]);
    let configs: Vec<&str> = all.lines().filter(|l| l.contains(" config ")).collect();
    assert_eq!(configs.len(), 25, "{all}");
    assert!(configs[0].contains("cluster configuration: cluster.name"), "{all}");

    // Restarted, the node's state comes from its snapshot: the entries before it are gone.
    assert!(n1.term().success());
    n1.start();
    wait_leader(&local_client(&n1.dir).await, 1).await;
    let out = omctl(&server, &["events", "--since", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("no longer kept on this node (asked from 1)"), "{err}");
    let first: u64 = err
        .split("before log index ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(first > 10, "{err}");
    let kept = ok(&server, &["events", "--since", &first.to_string(), "-o", "json"]);
    for line in kept.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["index"].as_u64().unwrap() >= first, "{line}");
    }
}

/// As systemd runs it: settings from a configuration file (`--print-config` says which), the
/// log as JSON, READY=1 on `$NOTIFY_SOCKET` once the node serves and STOPPING=1 at SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_run_from_a_config_file_notifies_systemd_and_logs_json() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("omd.toml");
    std::fs::write(
        &config,
        "log-format = \"json\"\nheartbeat-ms = 100\nelection-timeout-ms = 600\nreport-mem = \"3G\"\n",
    )
    .unwrap();
    let shown = Command::new(OMD)
        .args([
            "--config",
            config.to_str().unwrap(),
            "--print-config",
            "--heartbeat-ms",
            "50",
        ])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    for line in [
        "log-format = \"json\"  # from the configuration file",
        "heartbeat-ms = 50  # from the command line",
        "report-mem = \"3G\"  # from the configuration file",
    ] {
        assert!(shown.lines().any(|l| l == line), "{line:?} not in\n{shown}");
    }

    let notify = tmp.path().join("notify.sock");
    let systemd = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    systemd.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let launch = Launch {
        args: vec!["--config".into(), config.to_str().unwrap().into()],
        env: vec![("NOTIFY_SOCKET".into(), notify.to_str().unwrap().into())],
        wrapper: vec![],
        installed: None,
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let mut n1 = Omd::launch("n1", &tmp.path().join("n1"), &addr, launch).unwrap();
    let got = || {
        let mut buf = [0u8; 512];
        let n = systemd
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no word to systemd: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = got();
    assert!(
        ready.starts_with("READY=1\n") && ready.contains("serving as n1"),
        "{ready:?}"
    );
    // Ready means serving: the local API answers at once.
    let server = format!("unix:{}", n1.dir.join("omd.sock").display());
    let mon = ok(&server, &["mon"]);
    assert!(mon.contains("n1"), "{mon}");
    let status = n1.term();
    assert!(status.success(), "exit {status:?}\n{}", n1.log());
    let stopping = got();
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    let log = n1.log();
    let mut messages = vec![];
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(event["level"].is_string() && event["timestamp"].is_string(), "{line}");
        messages.push(event["fields"]["message"].as_str().unwrap_or_default().to_string());
    }
    let file_line = format!("configuration file: {}", config.display());
    assert!(messages.contains(&file_line), "{file_line:?} not among {messages:?}");
    assert!(messages.iter().any(|m| m == "omd serving"), "{messages:?}");
}

/// `grpc.health.v1.Health/Check` for `service`, with `token` if any.
async fn health(channel: &tonic::transport::Channel, token: Option<&str>, service: &str) -> Result<i32, tonic::Status> {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let auth = omraft::cli::client::auth(token).unwrap();
    let mut c = HealthClient::with_interceptor(channel.clone(), auth);
    let req = HealthCheckRequest {
        service: service.into(),
    };
    c.check(req).await.map(|r| r.into_inner().status)
}

/// Standard gRPC tooling against a follower: health and reflection answer with the cluster's
/// credentials only, over TCP (TLS, a viewer token) and on the local socket; the `Cluster`
/// service's health turns NOT_SERVING while the node is cut from its quorum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_standard_clients_with_credentials() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    const CLUSTER: &str = "omraft.v1.Cluster";
    let (serving, not_serving) = (ServingStatus::Serving as i32, ServingStatus::NotServing as i32);

    let tmp = tempfile::tempdir().unwrap();
    let nodes = three(tmp.path()).await;
    let leader = agreed_leader(&mut local_client(&nodes[0].dir).await, 3).await.unwrap();
    let follower = nodes.iter().find(|n| n.name != leader).unwrap();
    let unix = format!("unix:{}", follower.dir.join("omd.sock").display());
    // Tokens are minted by n1, which holds the signing key.
    let n1 = format!("unix:{}", nodes[0].dir.join("omd.sock").display());
    let token = ok(&n1, &["daemon", "auth", "--role", "viewer"]).trim().to_string();
    let ca = follower.dir.join("tls/ca.crt");
    let tcp = omraft::cli::client::channel(&format!("https://{}", follower.addr), Some(&ca), None)
        .await
        .unwrap();
    let local = omraft::cli::client::channel(&unix, None, None).await.unwrap();

    let refused = health(&tcp, None, "").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert_eq!(health(&tcp, Some(&token), "").await.unwrap(), serving);
    assert_eq!(health(&local, None, "").await.unwrap(), serving);
    eventually(10, "the Cluster service serving", || async {
        (health(&tcp, Some(&token), CLUSTER).await.ok() == Some(serving)).then_some(())
    })
    .await;
    let unknown = health(&tcp, Some(&token), "omraft.v1.Nothing").await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    // Reflection: the services, then the file that defines the API.
    let auth = omraft::cli::client::auth(Some(&token)).unwrap();
    let mut reflect = ServerReflectionClient::with_interceptor(tcp.clone(), auth);
    let ask = |m: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let asks = vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(CLUSTER.into())),
    ];
    let mut answers = reflect
        .server_reflection_info(tokio_stream::iter(asks))
        .await
        .unwrap()
        .into_inner();
    let mut services = vec![];
    let mut file = vec![];
    while let Some(answer) = answers.message().await.unwrap() {
        match answer.message_response.unwrap() {
            MessageResponse::ListServicesResponse(l) => services.extend(l.service.into_iter().map(|s| s.name)),
            MessageResponse::FileDescriptorResponse(f) => file.extend(f.file_descriptor_proto),
            other => panic!("{other:?}"),
        }
    }
    for name in [CLUSTER, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"] {
        assert!(services.iter().any(|s| s == name), "{name} not in {services:?}");
    }
    assert!(
        file.iter().any(|f| String::from_utf8_lossy(f).contains("omraft.proto")),
        "no omraft.proto among {} files",
        file.len()
    );

    // Its peers hung: no leader it can follow, and the health check says so.
    let others: Vec<&Omd> = nodes.iter().filter(|n| n.name != follower.name).collect();
    for n in &others {
        assert!(n.signal("STOP"));
    }
    eventually(10, "the Cluster service not serving", || async {
        (health(&local, None, CLUSTER).await.ok() == Some(not_serving)).then_some(())
    })
    .await;
    for n in &others {
        assert!(n.signal("CONT"));
    }
    eventually(20, "the Cluster service serving again", || async {
        (health(&local, None, CLUSTER).await.ok() == Some(serving)).then_some(())
    })
    .await;
}

#[test]
fn quick_start_demo_walks_the_tutorial_cluster_steps_and_cleans_up() {
    let bin = Path::new(env!("CARGO_BIN_EXE_omd")).parent().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo");
    let out = Command::new("bash")
        .arg(script)
        .arg("--exit")
        .env("OMRAFT_BIN", bin)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/demo");
    let (so, se) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "demo failed:\n{so}\n{se}");
    for want in [
        "drbd4kvm\n",
        "Joined\n",
        "Joined as witness\n",
        "RUNNING  BEATING",
        "[pool#drbdvm]",
        "drbdvm  drbd  rox,rwx,roo,rwo,snap,blk,shared  data  0             10g       0         10g",
        "/dev/drbd0",
        "      └ container#1    ........  up    kvm kvm1",
        "demo/svc/kvm1  n1    down\ndemo/svc/kvm1  n2    up\n\n",
    ] {
        assert!(so.contains(want), "demo output lacks {want:?}:\n{so}");
    }
    let tmp = so.lines().find_map(|l| {
        l.split("/tmp/omraft-demo.")
            .nth(1)
            .map(|t| t.split('/').next().unwrap().to_string())
    });
    if let Some(t) = tmp {
        assert!(
            !Path::new(&format!("/tmp/omraft-demo.{t}")).exists(),
            "demo left its data behind"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_follower_does_not_block_writes_or_mon() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = three(tmp.path()).await;
    let c1 = local_client(&nodes[0].dir).await;
    let leader = agreed_leader(&mut c1.clone(), 3).await.unwrap();
    let hung = nodes
        .iter()
        .find(|n| n.name != leader && n.name != "n3")
        .unwrap_or(&nodes[2]);
    let writer = nodes.iter().find(|n| n.name == leader).unwrap();
    let pid = hung.child.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let mut c = local_client(&writer.dir).await;
    for i in 0..20 {
        let req = set(&[(&format!("pool#s{i}.type"), "lvm")]);
        let r = tokio::time::timeout(Duration::from_secs(5), c.config_update(req)).await;
        assert!(
            matches!(r, Ok(Ok(_))),
            "write {i} blocked or failed with {} stopped: {r:?}",
            hung.name
        );
    }
    let t = std::time::Instant::now();
    let mon = c.mon(pb::MonRequest::default()).await.unwrap().into_inner();
    assert!(t.elapsed() < Duration::from_secs(3), "mon took {:?}", t.elapsed());
    let row = mon.nodes.iter().find(|n| n.name == hung.name).unwrap();
    assert!(!row.reachable, "a stopped node shows as reachable");
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let ch = local_client(&hung.dir).await;
    let cfg = eventually(20, "the resumed follower's read", || {
        let mut ch = ch.clone();
        async move { config(&mut ch).await.ok() }
    })
    .await;
    assert!(cfg.contains_key("pool#s19"), "resumed follower missed writes");
}

/// Isolated (SIGSTOP: it neither hears nor speaks), a node misses a write the majority
/// acknowledges; healed (SIGCONT), the first read it serves sees that write, or fails: never
/// the value from before. Once with the leader isolated (resuming, it still believes it
/// leads), once with a follower (resuming, it remembers a leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_on_a_node_just_healed_from_a_partition_sees_the_last_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = three(tmp.path()).await;
    for round in 0..2 {
        let c1 = local_client(&nodes[0].dir).await;
        let leader = agreed_leader(&mut c1.clone(), 3).await.unwrap();
        let isolated = if round == 0 {
            nodes.iter().find(|n| n.name == leader).unwrap()
        } else {
            nodes.iter().find(|n| n.name != leader).unwrap()
        };
        let before = format!("before{round}");
        let after = format!("after{round}");
        let mut ci = local_client(&isolated.dir).await;
        ci.config_update(set(&[("cluster.name", &before)])).await.unwrap();
        // Every node applied `before` (linearizable reads on each).
        for n in &nodes {
            let mut c = local_client(&n.dir).await;
            let got = c
                .config_get(pb::ConfigGetRequest {
                    key: "cluster.name".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .value;
            assert_eq!(got, before);
        }
        let pid = isolated.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
        let other = nodes.iter().find(|n| n.name != isolated.name).unwrap();
        let co = local_client(&other.dir).await;
        eventually(30, "the majority acknowledges the write", || {
            let mut co = co.clone();
            let after = after.clone();
            async move {
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    co.config_update(set(&[("cluster.name", &after)])),
                );
                r.await.ok()?.ok()
            }
        })
        .await;
        assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
        let read = ci
            .config_get(pb::ConfigGetRequest {
                key: "cluster.name".into(),
            })
            .await;
        match read {
            Ok(r) => assert_eq!(
                r.into_inner().value,
                after,
                "round {round}: {} served a stale read just after the heal",
                isolated.name
            ),
            Err(e) => eprintln!("round {round}: the healed node refused the read: {e}"),
        }
    }
}
