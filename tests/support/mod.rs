//! Shared test support: loopback ports, clients, bounded waiting.
#![allow(dead_code)]

pub mod omd;

use std::future::Future;
use std::time::{Duration, Instant};

use omraft::cli::client::{connect, Client};
use omraft::pb;

/// A free loopback port: bind port 0 and release it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client of the daemon whose data dir is `dir`, on its unix socket.
pub async fn local_client(dir: &std::path::Path) -> Client {
    let server = format!("unix:{}", dir.join("omd.sock").display());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match connect(&server, None, None, None).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("daemon at {server} never answered: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn kv(key: &str, value: &str) -> pb::KeyValue {
    pb::KeyValue {
        key: key.into(),
        value: value.into(),
    }
}

pub fn set(pairs: &[(&str, &str)]) -> pb::ConfigUpdateRequest {
    pb::ConfigUpdateRequest {
        set: pairs.iter().map(|(k, v)| kv(k, v)).collect(),
        unset: vec![],
    }
}

/// The configuration as `section -> keyword -> value`.
pub async fn config(
    c: &mut Client,
) -> Result<std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>, tonic::Status> {
    let reply = c
        .config_show(pb::ConfigShowRequest { section: String::new() })
        .await?
        .into_inner();
    Ok(reply
        .sections
        .into_iter()
        .map(|s| (s.name, s.values.into_iter().map(|kv| (kv.key, kv.value)).collect()))
        .collect())
}

/// A join token from the daemon behind `c`.
pub async fn join_token(c: &mut Client) -> String {
    c.issue_token(pb::IssueTokenRequest {
        role: "join".into(),
        duration_secs: 600,
        node: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .token
}

/// The leader's name as `mon` on `c` reports it, once every listed node agrees.
pub async fn agreed_leader(c: &mut Client, voters: usize) -> Option<String> {
    let mon = c.mon(pb::MonRequest::default()).await.ok()?.into_inner();
    let up: Vec<_> = mon
        .nodes
        .iter()
        .filter(|n| n.membership == "voter" && n.reachable)
        .collect();
    if up.len() != voters {
        return None;
    }
    let leader = up[0].status.as_ref()?.leader_name.clone();
    let all_agree = up
        .iter()
        .all(|n| n.status.as_ref().is_some_and(|s| s.leader_name == leader));
    (all_agree && !leader.is_empty()).then_some(leader)
}

/// Waits (at most 20 s) until `voters` reachable voters agree on a leader, and names it.
pub async fn wait_leader(c: &Client, voters: usize) -> String {
    eventually(20, &format!("{voters} voters agreeing on a leader"), || {
        let mut c = c.clone();
        async move { agreed_leader(&mut c, voters).await }
    })
    .await
}

/// The tutorial's `live-migration` DRBD template, as its `key add` stores it.
pub const TUTORIAL_TEMPLATE: &str = "resource {{.Name}} {
    {{range $node := .Nodes}}
    on {{$node.Name}} {
        device    {{$node.Device}};
        disk      {{$node.Disk}};
        meta-disk internal;
        address   {{$node.Addr}};
        node-id   {{$node.NodeId}};
    }
    {{end}}
    connection-mesh {
        hosts{{range $node := .Nodes}} {{$node.Name}}{{end}};
    }
    net {
\tallow-two-primaries yes;
    }
}
";

/// A DRBD template of 40 defines, each calling the one before twice: 2^40 template calls,
/// writing nothing. Such a template kept a node busy for good before rendering had a budget.
pub fn doubling_template() -> String {
    let mut t = String::from("{{define \"d0\"}}{{end}}");
    for i in 1..=40 {
        let p = i - 1;
        t += &format!("{{{{define \"d{i}\"}}}}{{{{template \"d{p}\" .}}}}{{{{template \"d{p}\" .}}}}{{{{end}}}}");
    }
    t + "resource {{.Name}} {\n{{template \"d40\" .}}}\n"
}

/// The tutorial's guest as the simulated hypervisor runs it: its disk the service's DRBD device.
pub const KVM1_XML: &str =
    "<domain><name>kvm1</name><devices><disk><source dev='/dev/drbd0'/></disk></devices></domain>";

/// `omctl` arguments declaring the guest kvm1 as the service's `container#1`.
pub const KVM1_CONTAINER: [&str; 7] = [
    "demo/svc/kvm1",
    "config",
    "update",
    "--set",
    "container#1.type=kvm",
    "--set",
    "container#1.name=kvm1",
];
