//! In-process cluster tier: three nodes on loopback in one process, driven through the same
//! gRPC API omctl uses.

#[path = "../support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use omraft::api::{serve, Listeners};
use omraft::daemon::{Node, Settings};
use omraft::pb;
use support::*;
use tokio::sync::oneshot;

/// One in-process node: the daemon and its servers, stopped on `kill`.
struct TestNode {
    name: String,
    dir: std::path::PathBuf,
    addr: String,
    node: Option<Arc<Node>>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

struct Cluster {
    _tmp: tempfile::TempDir,
    nodes: Vec<TestNode>,
}

/// A one-node cluster: n1 in `DIR/n1`, on a free loopback port.
async fn founder(dir: &std::path::Path) -> TestNode {
    start("n1", &dir.join("n1"), &format!("127.0.0.1:{}", free_port()), 5000).await
}

async fn start(name: &str, dir: &std::path::Path, addr: &str, snapshot_every: u64) -> TestNode {
    start_with(name, dir, addr, snapshot_every, None).await
}

/// Starts a node; with `sim`, it reports a 5 GiB volume group `data` and runs its applier on
/// the simulated drivers in that directory (DRBD commands run in-process through the real
/// DRBD driver).
async fn start_with(
    name: &str,
    dir: &std::path::Path,
    addr: &str,
    snapshot_every: u64,
    sim: Option<&std::path::Path>,
) -> TestNode {
    let mut settings = Settings {
        heartbeat_ms: 100,
        election_timeout_ms: 600,
        snapshot_every,
        keep_logs: 0,
        ..Settings::new(name, dir.to_path_buf(), addr)
    };
    if sim.is_some() {
        settings.vgs.insert("data".into(), 5 << 30);
    }
    std::fs::create_dir_all(dir).unwrap();
    let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    let sock = dir.join("omd.sock");
    let _ = std::fs::remove_file(&sock);
    let unix = tokio::net::UnixListener::bind(&sock).unwrap();
    let loops = omraft::daemon::run::Loops {
        drivers: sim.map(|sim| {
            let settings = omraft::sim::InProcess {
                vgs: settings_vgs(),
                sync_ms: 500,
                ..Default::default()
            };
            omraft::sim::in_process_drivers(sim, name, &settings)
        }),
        ssh_dir: None,
    };
    let node = omraft::daemon::run::start(settings, loops).await.unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let n = node.clone();
    let served = tokio::spawn(async move {
        serve(
            n,
            Listeners {
                tcp,
                unix,
                unix_path: sock,
            },
            async {
                let _ = rx.await;
            },
        )
        .await
        .unwrap();
    });
    TestNode {
        name: name.into(),
        dir: dir.into(),
        addr: addr.into(),
        node: Some(node),
        stop: Some(tx),
        served: Some(served),
    }
}

fn settings_vgs() -> std::collections::BTreeMap<String, u64> {
    [("data".to_string(), 5u64 << 30)].into()
}

impl TestNode {
    /// Stops serving and shuts Raft down, as a crash would look to the others.
    async fn kill(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.served.take() {
            let _ = h.await;
        }
        if let Some(n) = self.node.take() {
            n.shutdown().await;
        }
    }

    async fn client(&self) -> omraft::cli::client::Client {
        local_client(&self.dir).await
    }
}

impl Cluster {
    /// n1 founds the cluster; n2 and n3 join it.
    async fn three(snapshot_every: u64) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 1..=3 {
            let name = format!("n{i}");
            let addr = format!("127.0.0.1:{}", free_port());
            nodes.push(start(&name, &tmp.path().join(&name), &addr, snapshot_every).await);
        }
        let mut c1 = nodes[0].client().await;
        wait_leader(&c1, 1).await;
        for n in &nodes[1..] {
            let token = join_token(&mut c1).await;
            let mut c = n.client().await;
            let req = pb::JoinRequest {
                node: nodes[0].addr.clone(),
                token,
                witness: n.name == "n3",
            };
            c.join(req).await.unwrap_or_else(|e| panic!("{} join: {e}", n.name));
        }
        let cluster = Cluster { _tmp: tmp, nodes };
        wait_leader(&c1, 3).await;
        cluster
    }

    fn index_of(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_through_follower_is_visible_on_all() {
    let cluster = Cluster::three(5000).await;
    let mut c1 = cluster.nodes[0].client().await;
    let leader = agreed_leader(&mut c1, 3).await.unwrap();
    let follower = cluster.nodes.iter().find(|n| n.name != leader).unwrap();
    let mut cf = follower.client().await;
    cf.config_update(set(&[("cluster.name", "drbd4kvm"), ("pool#drbdvm.type", "drbd")]))
        .await
        .unwrap();
    // Reads are linearizable: every node answers with the new value at once.
    for n in &cluster.nodes {
        let mut c = n.client().await;
        let got = c
            .config_get(pb::ConfigGetRequest {
                key: "cluster.name".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.value, "drbd4kvm", "on {}", n.name);
        let cfg = config(&mut c).await.unwrap();
        assert_eq!(cfg["pool#drbdvm"]["type"], "drbd", "on {}", n.name);
    }
    // And every node applied it locally.
    for n in &cluster.nodes {
        let node = n.node.as_ref().unwrap();
        eventually(5, "local apply", || async {
            node.read(|d| d.state.config.contains_key("pool#drbdvm")).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_log_entries_and_each_gets_its_own_answer() {
    use omraft::model::{catalog, Command, ObjectPath, Response};
    let cluster = Cluster::three(5000).await;
    let mut c1 = cluster.nodes[0].client().await;
    let leader_name = agreed_leader(&mut c1, 3).await.unwrap();
    let leader = cluster.nodes.iter().find(|n| n.name == leader_name).unwrap();
    let follower = cluster.nodes.iter().find(|n| n.name != leader_name).unwrap();
    let (leader, follower) = (leader.node.clone().unwrap(), follower.node.clone().unwrap());
    let last_index = || leader.member().raft.metrics().borrow().last_log_index.unwrap_or(0);
    let before = last_index();

    // 64 writes at once, half through the leader and half through a follower (its Propose);
    // every eighth one is refused by the state machine (no such service).
    const WRITES: usize = 64;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..WRITES {
        let node = if i % 2 == 0 { leader.clone() } else { follower.clone() };
        let cmd = if i % 8 == 7 {
            Command::FreezeService {
                path: ObjectPath::parse(&format!("demo/svc/missing{i}")).unwrap(),
                frozen: true,
            }
        } else {
            let set = [
                (format!("pool#c{i}.type"), "lvm".to_string()),
                (format!("pool#c{i}.vg"), "data".to_string()),
            ];
            let (set, unset) = catalog::parse_update(&set, &[]).unwrap();
            Command::UpdateConfig { set, unset }
        };
        tasks.spawn(async move { (i, node.write(cmd).await) });
    }
    let mut indexes = std::collections::BTreeSet::new();
    while let Some(done) = tasks.join_next().await {
        let (i, written) = done.unwrap();
        let (index, response) = written.unwrap_or_else(|e| panic!("write {i}: {e}"));
        if i % 8 == 7 {
            assert!(
                matches!(&response, Response::Refused(why) if why.to_string().contains(&format!("missing{i}"))),
                "write {i}: {response:?}"
            );
        } else {
            assert_eq!(response, Response::Done, "write {i}");
        }
        indexes.insert(index);
    }
    // Each write answered for itself, yet they shared entries: fewer entries than writes.
    let entries = last_index() - before;
    assert!(
        (entries as usize) < WRITES && indexes.len() < WRITES,
        "{WRITES} writes took {entries} log entries ({} distinct indexes)",
        indexes.len()
    );
    let pools = leader.read(|d| d.state.config.keys().filter(|k| k.starts_with("pool#c")).count());
    assert_eq!(pools, WRITES - WRITES / 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_writes_continue_after_reelection() {
    let mut cluster = Cluster::three(5000).await;
    let mut c1 = cluster.nodes[0].client().await;
    c1.config_update(set(&[("pool#before.type", "lvm")])).await.unwrap();
    let leader = agreed_leader(&mut c1, 3).await.unwrap();
    let li = cluster.index_of(&leader);
    cluster.nodes[li].kill().await;
    let survivor = cluster.nodes.iter().find(|n| n.node.is_some()).unwrap();
    let mut cs = survivor.client().await;
    let new_leader = eventually(15, "a new leader", || {
        let mut c = cs.clone();
        let old = leader.clone();
        async move {
            let mon = c.mon(pb::MonRequest::default()).await.ok()?.into_inner();
            let me = mon.nodes.iter().find(|n| n.reachable)?;
            let l = me.status.as_ref()?.leader_name.clone();
            (!l.is_empty() && l != old).then_some(l)
        }
    })
    .await;
    assert_ne!(new_leader, leader);
    cs.config_update(set(&[("pool#after.type", "drbd")])).await.unwrap();
    for n in cluster.nodes.iter().filter(|n| n.node.is_some()) {
        let cfg = config(&mut n.client().await).await.unwrap();
        assert!(
            cfg.contains_key("pool#before") && cfg.contains_key("pool#after"),
            "{}: {cfg:?}",
            n.name
        );
    }
    // The old leader comes back and catches up.
    let old = &cluster.nodes[li];
    let (name, dir, addr) = (old.name.clone(), old.dir.clone(), old.addr.clone());
    cluster.nodes[li] = start(&name, &dir, &addr, 5000).await;
    let back = cluster.nodes[li].node.clone().unwrap();
    eventually(15, "the restarted node to catch up", || async {
        back.read(|d| d.state.config.contains_key("pool#after")).then_some(())
    })
    .await;
    for n in &mut cluster.nodes {
        n.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_joiner_catches_up_from_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let addr1 = format!("127.0.0.1:{}", free_port());
    let mut n1 = start("n1", &tmp.path().join("n1"), &addr1, 20).await;
    let mut c1 = n1.client().await;
    wait_leader(&c1, 1).await;
    for i in 0..60 {
        c1.config_update(set(&[(&format!("pool#p{i}.type"), "lvm")]))
            .await
            .unwrap();
    }
    let leader = n1.node.clone().unwrap();
    // The leader has purged its log behind a snapshot: a joiner cannot replay from index 1.
    eventually(10, "a purge on the leader", || async {
        leader
            .member()
            .raft
            .metrics()
            .borrow()
            .purged
            .map(|p| p.index)
            .filter(|i| *i > 20)
    })
    .await;
    let addr2 = format!("127.0.0.1:{}", free_port());
    let mut n2 = start("n2", &tmp.path().join("n2"), &addr2, 20).await;
    let token = join_token(&mut c1).await;
    let mut c2 = n2.client().await;
    c2.join(pb::JoinRequest {
        node: addr1.clone(),
        token,
        witness: false,
    })
    .await
    .unwrap();
    let joined = n2.node.clone().unwrap();
    eventually(10, "the joiner to install the snapshot", || async {
        joined.member().raft.metrics().borrow().snapshot.map(|s| s.index)
    })
    .await;
    let cfg = config(&mut c2).await.unwrap();
    assert_eq!(cfg.len(), 60, "joiner config: {cfg:?}");
    assert_eq!(joined.read(|d| d.state.nodes.len()), 2);
    n2.kill().await;
    n1.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_with_bad_token_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let addr1 = format!("127.0.0.1:{}", free_port());
    let addr2 = format!("127.0.0.1:{}", free_port());
    let mut n1 = start("n1", &tmp.path().join("n1"), &addr1, 5000).await;
    let mut n2 = start("n2", &tmp.path().join("n2"), &addr2, 5000).await;
    let mut c1 = n1.client().await;
    let mut c2 = n2.client().await;
    wait_leader(&c1, 1).await;
    // Once the founder registered itself and its CA (entries of its own, committed after it
    // first leads): only what a join would change may differ afterwards.
    let n1node = n1.node.as_ref().unwrap();
    n1node.wait_bootstrapped().await.unwrap();
    let n1_before = n1node.read(|d| d.state.clone());
    let other_cluster = join_token(&mut c2).await;
    let root = c1
        .issue_token(pb::IssueTokenRequest {
            role: "root".into(),
            duration_secs: 60,
            node: String::new(),
        })
        .await
        .unwrap();
    let root = root.into_inner().token;
    let expired = c1
        .issue_token(pb::IssueTokenRequest {
            role: "join".into(),
            duration_secs: 1,
            node: String::new(),
        })
        .await
        .unwrap();
    let expired = expired.into_inner().token;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // A token whose claims were changed after signing (the CA pin kept: it gets past TLS).
    let forged = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (body, sig) = expired.split_once('.').unwrap();
        let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(body).unwrap()).unwrap();
        claims["exp"] = serde_json::json!(omraft::api::auth::unix_now() + 600);
        format!("{}.{sig}", b64.encode(serde_json::to_vec(&claims).unwrap()))
    };
    let cases = [
        ("garbage", "malformed", tonic::Code::InvalidArgument),
        // Another cluster's token names another CA: n1's certificate does not match it, and
        // nothing is sent to n1.
        (
            other_cluster.as_str(),
            "not the cluster the token names",
            tonic::Code::Unavailable,
        ),
        (root.as_str(), "not a join token", tonic::Code::InvalidArgument),
        (expired.as_str(), "expired", tonic::Code::Unauthenticated),
        (
            forged.as_str(),
            "not signed by this cluster",
            tonic::Code::Unauthenticated,
        ),
    ];
    for (token, why, code) in cases {
        let err = c2
            .join(pb::JoinRequest {
                node: addr1.clone(),
                token: token.into(),
                witness: false,
            })
            .await
            .expect_err("join accepted");
        assert!(err.message().contains(why), "{why:?} not in {:?}", err.message());
        assert_eq!(err.code(), code, "{err:?}");
    }
    // Neither side changed: n2 still leads its own one-node cluster, n1 registered nobody.
    assert_eq!(n1.node.as_ref().unwrap().read(|d| d.state.clone()), n1_before);
    let n2node = n2.node.as_ref().unwrap();
    assert_eq!(n2node.member().id, 1);
    assert_eq!(n2node.read(|d| d.state.nodes.len()), 1);
    assert!(
        !tmp.path().join("n2/backup").exists(),
        "a refused join must not touch the joiner"
    );
    n1.kill().await;
    n2.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_keyword_or_bad_value_commits_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n1 = founder(tmp.path()).await;
    let mut c = n1.client().await;
    c.config_update(set(&[("cluster.name", "ok")])).await.unwrap();
    let node = n1.node.clone().unwrap();
    // Registered, its CA recorded and its certificate too: the founder's own entries.
    eventually(10, "the founder's registration", || async {
        node.read(|d| {
            d.state.trust.is_some() && d.state.nodes.values().all(|n| n.cert.is_some()) && d.state.nodes.len() == 1
        })
        .then_some(())
    })
    .await;
    let index = || node.member().raft.metrics().borrow().last_log_index;
    let before = index();
    let bad = [
        (set(&[("cluster.nmae", "x")]), "cluster.nmae"),
        (set(&[("pool#p.type", "nfs")]), "\"nfs\""),
        (set(&[("cluster.name", "fine"), ("pool#p.kind", "drbd")]), "pool#p.kind"),
        (set(&[("nodot", "x")]), "nodot"),
    ];
    for (req, named) in bad {
        let err = c.config_update(req).await.expect_err("bad update accepted");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().contains(named),
            "{named} not named in {:?}",
            err.message()
        );
    }
    let logged = key_and_config_writes_after(&node, before.unwrap_or(0)).await;
    assert!(logged.is_empty(), "a refused update reached the log: {logged:?}");
    let got = c
        .config_get(pb::ConfigGetRequest {
            key: "cluster.name".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.value, "ok");
    n1.kill().await;
}

/// The key puts and configuration updates in the log after index `after` (inside batches too):
/// what a refused template must not leave there (nodes' reports may commit meanwhile).
async fn key_and_config_writes_after(node: &omraft::daemon::Node, after: u64) -> Vec<String> {
    use omraft::model::Command;
    use openraft::RaftLogReader;
    let entries = node.store.log_store().try_get_log_entries(after + 1..).await.unwrap();
    let mut out = vec![];
    for e in entries {
        if let openraft::EntryPayload::Normal(cmd) = e.payload {
            let cmds = match cmd {
                Command::Batch(cmds) => cmds,
                c => vec![c],
            };
            out.extend(
                cmds.iter()
                    .filter(|c| matches!(c, Command::PutKey { .. } | Command::UpdateConfig { .. }))
                    .map(|c| c.to_string()),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drbd_template_over_budget_is_refused_and_never_reaches_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n1 = founder(tmp.path()).await;
    let mut c = n1.client().await;
    wait_leader(&c, 1).await;
    let cfg = "system/cfg/drbd";
    c.object_create(pb::ObjectCreateRequest {
        path: cfg.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let node = n1.node.clone().unwrap();
    let index = || node.member().raft.metrics().borrow().last_log_index;
    let put = |name: &str, value: &str, change: bool| pb::KeyPutRequest {
        path: cfg.into(),
        name: name.into(),
        value: value.as_bytes().to_vec(),
        change,
    };
    let before = index();
    let flood = format!("{{{{range 1000000}}}}{}\n{{{{end}}}}", "x".repeat(99));
    let refused = [
        (put("bomb", &doubling_template(), false), "more than 100000 steps"),
        (put("flood", &flood, false), "more than 65536 bytes of output"),
    ];
    for (req, why) in refused {
        let err = c
            .key_put(req.clone())
            .await
            .expect_err("a template over budget was accepted");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        let named = format!("{cfg}: key {:?}: the template is over budget: {why}", req.name);
        assert!(
            err.message().starts_with(&named),
            "{named:?} not in {:?}",
            err.message()
        );
    }
    // A key name of 100,000 bytes and a template whose error names a field as long: both
    // repeated cut, in a short error.
    let hostile = put(
        &"k".repeat(100_000),
        &format!("{{{{.{}}}}}", "A".repeat(100_000)),
        false,
    );
    let err = c.key_put(hostile).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let message = err.message();
    assert!(
        message.len() < 1024 && message.contains("(100000 bytes)") && message.matches(" bytes)").count() == 2,
        "{message:?}"
    );
    let keys = c.key_list(pb::ObjectRef { path: cfg.into() }).await.unwrap();
    assert!(keys.into_inner().names.is_empty());
    let logged = key_and_config_writes_after(&node, before.unwrap_or(0)).await;
    assert!(logged.is_empty(), "a refused template reached the log: {logged:?}");

    // A template that fits is written; changing it into one over budget leaves it as it was.
    c.key_put(put("good", TUTORIAL_TEMPLATE, false)).await.unwrap();
    let before = index();
    let err = c.key_put(put("good", &doubling_template(), true)).await.unwrap_err();
    assert!(err.message().contains("steps"), "{err:?}");
    let logged = key_and_config_writes_after(&node, before.unwrap_or(0)).await;
    assert!(logged.is_empty(), "a refused change reached the log: {logged:?}");
    let decoded = c
        .key_decode(pb::KeyRequest {
            path: cfg.into(),
            name: "good".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .value;
    assert_eq!(decoded, TUTORIAL_TEMPLATE.as_bytes());

    // A key an older version wrote without rendering it (straight into the log here): a pool
    // naming it is refused, and nothing reaches the log.
    let old = omraft::model::Command::PutKey {
        path: omraft::model::ObjectPath::parse(cfg).unwrap(),
        key: "old".into(),
        value: doubling_template().into_bytes(),
        mode: omraft::model::KeyMode::Add,
    };
    let (_, applied) = node.write(old).await.unwrap();
    assert_eq!(applied, omraft::model::Response::Done);
    let before = index();
    let pool = |t: &str| set(&[("pool#p.type", "drbd"), ("pool#p.vg", "data"), ("pool#p.template", t)]);
    let err = c.config_update(pool("old")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let named =
        format!("pool#p.template=old: key \"old\" of {cfg}: the template is over budget: more than 100000 steps");
    assert!(
        err.message().starts_with(&named),
        "{named:?} not in {:?}",
        err.message()
    );
    let logged = key_and_config_writes_after(&node, before.unwrap_or(0)).await;
    assert!(logged.is_empty(), "a refused pool reached the log: {logged:?}");
    assert!(!node.read(|d| d.state.config.contains_key("pool#p")));
    c.config_update(pool("good")).await.unwrap();
    n1.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removed_node_leaves_membership_and_state_and_its_name_can_rejoin_with_a_new_id() {
    let mut cluster = Cluster::three(5000).await;
    let mut c1 = cluster.nodes[0].client().await;
    let reply = c1
        .remove_node(pb::RemoveNodeRequest { name: "n2".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.node_id, 2);
    let err = c1
        .remove_node(pb::RemoveNodeRequest { name: "n9".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let n1 = cluster.nodes[0].node.clone().unwrap();
    assert!(n1.read(|d| d.state.node_id("n2").is_none() && d.membership.membership().get_node(&2).is_none()));
    // n2 wiped and started afresh rejoins under a new id.
    let i = cluster.index_of("n2");
    cluster.nodes[i].kill().await;
    let (dir, addr) = (cluster.nodes[i].dir.clone(), cluster.nodes[i].addr.clone());
    std::fs::remove_dir_all(&dir).unwrap();
    cluster.nodes[i] = start("n2", &dir, &addr, 5000).await;
    let token = join_token(&mut c1).await;
    let mut c2 = cluster.nodes[i].client().await;
    let joined = c2
        .join(pb::JoinRequest {
            node: cluster.nodes[0].addr.clone(),
            token,
            witness: false,
        })
        .await
        .unwrap();
    assert_eq!(joined.into_inner().node_id, 4, "ids are never reused");
    for n in &mut cluster.nodes {
        n.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tutorial_from_provision_to_status_and_devices_with_simulated_drivers() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    let mut nodes = Vec::new();
    for name in ["n1", "n2"] {
        let addr = format!("127.0.0.1:{}", free_port());
        nodes.push(start_with(name, &tmp.path().join(name), &addr, 5000, Some(&sim)).await);
    }
    let mut c1 = nodes[0].client().await;
    wait_leader(&c1, 1).await;
    let token = join_token(&mut c1).await;
    let mut c2 = nodes[1].client().await;
    c2.join(pb::JoinRequest {
        node: nodes[0].addr.clone(),
        token,
        witness: false,
    })
    .await
    .unwrap();
    c1.config_update(set(&[
        ("cluster.name", "drbd4kvm"),
        ("pool#drbdvm.type", "drbd"),
        ("pool#drbdvm.vg", "data"),
    ]))
    .await
    .unwrap();
    let create = || pb::ObjectCreateRequest {
        path: "demo/svc/kvm1".into(),
        kws: vec![
            kv("nodes", "{clusternodes}"),
            kv("orchestrate", "ha"),
            kv("volume#data.size", "4G"),
            kv("volume#data.shared", "true"),
        ],
        config_text: String::new(),
    };
    eventually(20, "both volume group reports, for the allocation", || {
        let mut c = c1.clone();
        async move { c.object_create(create()).await.ok() }
    })
    .await;
    let action = |a: &str| pb::ObjectActionRequest {
        path: "demo/svc/kvm1".into(),
        action: a.into(),
        node: String::new(),
    };
    c2.object_action(action("provision")).await.unwrap();
    let status = eventually(30, "provisioned and in sync on both nodes", || {
        let mut c = c1.clone();
        async move {
            let s = c
                .instance_status(pb::ObjectRef {
                    path: "demo/svc/kvm1".into(),
                })
                .await
                .ok()?
                .into_inner();
            let done = s.instances.len() == 2 && s.instances.iter().all(|i| i.reported && i.provisioned && !i.warn);
            (done && s.instances.iter().any(|i| i.node == "n1" && i.avail == "up")).then_some(s)
        }
    })
    .await;
    assert_eq!((status.placement.as_str(), status.started), ("n1", true));
    let n2 = status.instances.iter().find(|i| i.node == "n2").unwrap();
    assert_eq!(
        (n2.avail.as_str(), n2.resources[0].rid.as_str()),
        ("down", "volume#data")
    );
    let devices = c2
        .device_list(pb::ObjectRef {
            path: "demo/svc/kvm1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let devs: Vec<(&str, &str)> = devices
        .devices
        .iter()
        .map(|d| (d.role.as_str(), d.device.as_str()))
        .collect();
    assert_eq!(
        devs,
        [("exposed", "/dev/drbd0"), ("base", "/dev/data/kvm1.demo.vol.drbd4kvm")]
    );

    // The tutorial's Tests section, through omctl's own code: the guest created on n1 (its
    // virt-install), then `switch --wait`, `switch --live --wait` and `instance ls`.
    use omraft::drivers::hypervisor::Hypervisor;
    let hv = |n: &str| omraft::sim::hypervisor::SimHypervisor::new(&sim, n);
    hv("n1").define(support::KVM1_XML).unwrap();
    hv("n1").start("kvm1").unwrap();
    let server = format!("unix:{}", nodes[0].dir.join("omd.sock").display());
    let omctl = |args: &'static [&'static str]| {
        let server = server.clone();
        async move {
            let out = Captured::default();
            let argv: Vec<&str> = ["omctl", "--server", server.as_str()]
                .into_iter()
                .chain(args.iter().copied())
                .collect();
            let code = omraft::cli::main_with(&argv, Box::new(out.clone())).await;
            (code, out.text())
        }
    };
    let (code, _) = omctl(&support::KVM1_CONTAINER).await;
    assert_eq!(code, 0);
    eventually(20, "the guest captured and reported up on n1", || async move {
        let (_, ls) = omctl(&["demo/svc/kvm1", "instance", "ls"]).await;
        let (_, tree) = omctl(&["demo/svc/kvm1", "instance", "status", "-r"]).await;
        (ls.contains("n1    up") && tree.contains("container#1")).then_some(())
    })
    .await;
    // The frozen flags (the service's, each node's) and the pending action, as a client of
    // `instance status --output json` reads them.
    assert_eq!(omctl(&["node", "freeze", "--node", "n2"]).await.0, 0);
    assert_eq!(omctl(&["demo/svc/kvm1", "freeze"]).await.0, 0);
    let (code, json) = omctl(&["demo/svc/kvm1", "instance", "status", "-r", "-o", "json"]).await;
    assert_eq!(code, 0, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["frozen"], true, "{v}");
    assert_eq!(
        (&v["switch"], &v["pending_action"]),
        (&serde_json::Value::Null, &serde_json::Value::Null),
        "{v}"
    );
    let frozen: Vec<(&str, bool)> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["node"].as_str().unwrap(), i["frozen"].as_bool().unwrap()))
        .collect();
    assert_eq!(frozen, [("n1", false), ("n2", true)], "{v}");
    let (_, tree) = omctl(&["demo/svc/kvm1", "instance", "status", "-r"]).await;
    assert!(tree.lines().next().unwrap().ends_with("frozen"), "{tree}");
    assert_eq!(omctl(&["node", "thaw", "--node", "n2"]).await.0, 0);
    assert_eq!(omctl(&["demo/svc/kvm1", "thaw"]).await.0, 0);
    let ls = |on1: &str, on2: &str| {
        format!("OBJECT         NODE  AVAIL\ndemo/svc/kvm1  n1    {on1}\ndemo/svc/kvm1  n2    {on2}\n")
    };
    assert_eq!(omctl(&["demo/svc/kvm1", "instance", "ls"]).await.1, ls("up", "down"));
    let orchestrated = |out: &str| {
        let lines: Vec<&str> = out.lines().collect();
        lines.len() == 2
            && lines[0].split_whitespace().collect::<Vec<_>>() == ["OBJECT", "ORCHESTRATION_ID", "ERROR"]
            && lines[1].starts_with("demo/svc/kvm1  ")
            && lines[1].trim_end().ends_with(" -")
    };
    let (code, out) = omctl(&["demo/svc/kvm1", "switch", "--wait", "--time", "60s"]).await;
    assert!(code == 0 && orchestrated(&out), "{code} {out}");
    assert_eq!(omctl(&["demo/svc/kvm1", "instance", "ls"]).await.1, ls("down", "up"));
    let (code, _) = omctl(&["demo/svc/kvm1", "switch", "--to", "n1", "--wait", "--time", "60s"]).await;
    assert_eq!(code, 0);
    assert_eq!(omctl(&["demo/svc/kvm1", "instance", "ls"]).await.1, ls("up", "down"));
    let boots = |n: &str| hv(n).list().unwrap();
    let before = boots("n1").replace("kvm1 running", "");
    let (code, out) = omctl(&["demo/svc/kvm1", "switch", "--live", "--wait", "--time", "60s"]).await;
    assert!(code == 0 && orchestrated(&out), "{code} {out}");
    assert_eq!(omctl(&["demo/svc/kvm1", "instance", "ls"]).await.1, ls("down", "up"));
    assert_eq!(
        boots("n2").replace("kvm1 running", ""),
        before,
        "migrated live, not rebooted"
    );
    assert_eq!(
        std::fs::read_to_string(sim.join("violations.log")).unwrap_or_default(),
        ""
    );
    for n in &mut nodes {
        n.kill().await;
    }
}

/// omctl's output, captured.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
