//! A misbehaving client floods the node that holds a started service, for longer than a lease:
//! connections beyond every limit (plain TCP, TLS without a credential), large bodies without a
//! credential, clients that send a byte at a time. The node keeps its lease, its simulated
//! watchdog never resets it, the guest stays where it is, and writes keep committing. Then a
//! 1 MiB key (the largest a key may be) replicates without an election.

#[path = "../support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use omraft::pb;
use omraft::tls::{self, pki, Anchor};
use support::omd::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Longer than a lease (3 s by default) several times over.
const FLOOD: Duration = Duration::from_secs(10);
/// Plain TCP connections left hanging in their TLS handshake.
const HANGING: usize = 600;
/// TLS connections without a credential, kept open.
const ANONYMOUS: usize = 900;
/// Tasks sending large bodies without a credential, one request after another.
const SENDERS: usize = 8;
/// The size of each such body.
const BODY: usize = 8 << 20;
/// Clients sending a ClientHello a byte at a time.
const SLOW: usize = 64;

/// Sets this process's own soft limit on open files (its children inherit it): `None` raises
/// it to the hard limit.
fn own_file_limit(soft: Option<u64>) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let l = getrlimit(Resource::Nofile);
    let current = soft.or(l.maximum);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current,
            maximum: l.maximum,
        },
    )
    .expect("setting the test's open file limit");
}

fn resident_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// An anonymous TLS client configuration trusting the cluster CA of node directory `dir`.
fn anonymous_config(dir: &Path) -> Arc<rustls::ClientConfig> {
    let ca = pki::pem_to_der(&std::fs::read_to_string(dir.join("tls/ca.crt")).unwrap()).unwrap();
    Arc::new(tls::client_config(Anchor::Ca(ca), None, Default::default()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_and_bodies_costs_the_node_neither_its_lease_nor_its_guest() {
    // The daemons start with the usual soft limit, 1024, as under a login shell: they raise
    // it themselves. Then this process raises its own for the flood.
    own_file_limit(Some(1024));
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, sim) = sim_cluster(tmp.path(), &["--watchdog-timeout-ms", "1000"]).await;
    let (n1, n2) = (nodes[0].server(), nodes[1].server());
    let vol = ["--kw", "volume#data.size=1G", "--kw", "volume#data.shared=true"];
    until_ok(&n1, &[&["demo/svc/kvm1", "create"][..], &vol].concat()).await;
    ok(&n1, &["demo/svc/kvm1", "provision", "--wait", "--time", "60s"]);
    let xml = tmp.path().join("kvm1.xml");
    std::fs::write(&xml, support::KVM1_XML).unwrap();
    let virsh = |node: &str, args: &[&str]| stdout(&omsim_virsh(&sim, node, args));
    virsh("n1", &["define", xml.to_str().unwrap()]);
    virsh("n1", &["start", "kvm1"]);
    ok(&n1, &support::KVM1_CONTAINER);
    let up_on_n1 = |tree: &str| tree.contains("container#1") && tree.contains("n1                           up");
    support::eventually(20, "kvm1 up on n1", || {
        let n2 = n2.clone();
        async move { up_on_n1(&ok(&n2, &["demo/svc/kvm1", "print", "status", "-r"])).then_some(()) }
    })
    .await;
    let running = || ["n1", "n2"].map(|n| virsh(n, &["list"]).contains("kvm1 running"));
    assert_eq!(running(), [true, false], "kvm1 runs on n1");
    let log = nodes[0].log();
    assert!(log.contains("open file limit:"), "omd logs its open file limit:\n{log}");
    own_file_limit(None);
    let pid = nodes[0].pid().unwrap();
    let rss_before = resident_kb(pid);

    // The flood, on n1's TCP address.
    let addr = nodes[0].addr.clone();
    let config = anonymous_config(&nodes[0].dir);
    let deadline = Instant::now() + FLOOD;
    let (refused, other) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = tokio::task::JoinSet::new();
    // The senders connect first (the connections that follow fill every slot) and send one
    // large body after another on their connection.
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    for _ in 0..SENDERS {
        let ch = tls::connect(endpoint.clone(), config.clone())
            .await
            .expect("an anonymous TLS connection");
        let (refused, other) = (refused.clone(), other.clone());
        tasks.spawn(async move {
            let count = |r: Result<(), tonic::Status>| match r {
                Err(s) if s.code() == tonic::Code::Unauthenticated => refused.fetch_add(1, Ordering::Relaxed),
                _ => other.fetch_add(1, Ordering::Relaxed),
            };
            while Instant::now() < deadline {
                let mut raft = pb::raft_client::RaftClient::new(ch.clone());
                let r = raft.append_entries(pb::RaftMessage { data: vec![b'x'; BODY] }).await;
                count(r.map(drop));
                let mut cluster = pb::cluster_client::ClusterClient::new(ch.clone());
                let put = pb::KeyPutRequest {
                    path: "system/cfg/drbd".into(),
                    name: "big".into(),
                    value: vec![b'x'; BODY],
                    ..Default::default()
                };
                count(cluster.key_put(put).await.map(drop));
            }
        });
    }
    for _ in 0..HANGING {
        let addr = addr.clone();
        tasks.spawn(async move {
            let tcp = TcpStream::connect(&addr).await;
            tokio::time::sleep_until(deadline.into()).await;
            drop(tcp);
        });
    }
    for _ in 0..ANONYMOUS {
        let (addr, config) = (addr.clone(), config.clone());
        tasks.spawn(async move {
            let Ok(tcp) = TcpStream::connect(&addr).await else {
                return;
            };
            let name = rustls_pki_types::ServerName::try_from("omraft.invalid").unwrap();
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await;
            tokio::time::sleep_until(deadline.into()).await;
            drop(tls);
        });
    }
    for _ in 0..SLOW {
        let addr = addr.clone();
        tasks.spawn(async move {
            let Ok(mut tcp) = TcpStream::connect(&addr).await else {
                return;
            };
            // The start of a TLS record holding a ClientHello, one byte a second.
            for b in [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03] {
                if Instant::now() >= deadline || tcp.write_all(&[b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    // Meanwhile the cluster commits, through the other data node, every half second.
    let mut writes = 0;
    let mut i = 0;
    while Instant::now() < deadline {
        i += 1;
        // A harmless keyword: an unused lvm pool's volume group.
        let probe = ["--set", "pool#probe.type=lvm", "--set", &format!("pool#probe.vg=vg{i}")].map(String::from);
        let args: Vec<&str> = ["cluster", "config", "update"]
            .into_iter()
            .chain(probe.iter().map(String::as_str))
            .collect();
        let out = omctl(&n2, &args);
        assert!(
            out.status.success(),
            "a write during the flood failed: {}",
            stderr(&out)
        );
        writes += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    while tasks.join_next().await.is_some() {}
    let rss_after = resident_kb(pid);
    println!(
        "flood: {writes} writes committed; {} large anonymous requests refused, {} otherwise answered; \
         n1 resident {} kB before, {} kB after",
        refused.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
        rss_before,
        rss_after
    );

    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "no large anonymous request was refused"
    );
    // Refused for want of a credential, before their size was looked at: the body unread.
    assert_eq!(
        other.load(Ordering::Relaxed),
        0,
        "large anonymous requests were refused otherwise than for their credential"
    );
    assert!(nodes[0].alive(), "n1's daemon is gone:\n{}", nodes[0].log());
    let resets = std::fs::read_to_string(sim.join("watchdog.log")).unwrap_or_default();
    assert!(!resets.contains("watchdog reset"), "{resets}");
    let log = nodes[0].log();
    assert!(
        !log.contains("lease lost"),
        "n1 lost its lease during the flood:\n{log}"
    );
    assert_eq!(running(), [true, false], "kvm1 still runs on n1, and only there");
    let tree = ok(&n2, &["demo/svc/kvm1", "print", "status", "-r"]);
    assert!(up_on_n1(&tree), "{tree}");
    // And n1 itself still commits.
    ok(&n1, &["cluster", "config", "update", "--set", "pool#probe.vg=after"]);

    // Then a value of the largest size a key may have (1 MiB), written through a follower while
    // the guest runs: no election, no lease lost, the guest in place. How long it took to
    // commit is printed (a figure, not a rule: the benches measure).
    let term = |dir: std::path::PathBuf| async move {
        let mut c = support::local_client(&dir).await;
        c.node_status(pb::NodeStatusRequest {}).await.unwrap().into_inner().term
    };
    let before = term(nodes[0].dir.clone()).await;
    ok(&n1, &["demo/cfg/big", "create"]);
    let big = tmp.path().join("big");
    std::fs::write(&big, vec![b'v'; 1 << 20]).unwrap();
    let t = Instant::now();
    ok(
        &n2,
        &[
            "demo/cfg/big",
            "key",
            "add",
            "--name",
            "v",
            "--from",
            big.to_str().unwrap(),
        ],
    );
    let took = t.elapsed();
    let listed = ok(&nodes[2].server(), &["demo/cfg/big", "key", "list"]);
    assert!(
        listed.lines().any(|l| l.trim() == "v"),
        "the witness has the key: {listed}"
    );
    println!("a 1 MiB key committed through a follower in {took:?}");
    assert_eq!(
        term(nodes[0].dir.clone()).await,
        before,
        "an election while a 1 MiB key replicated"
    );
    for n in &nodes[..2] {
        assert!(
            !n.log().contains("lease lost"),
            "{} lost its lease:\n{}",
            n.name,
            n.log()
        );
    }
    assert_eq!(running(), [true, false], "kvm1 still runs on n1, and only there");
    for n in &mut nodes {
        n.kill9();
    }
}
