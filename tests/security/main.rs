//! Attacks replayed against real daemons on loopback: each is refused, and the cluster still
//! commits and answers `mon` afterwards.
//!
//! - tokens: a join token used twice, for another name, or on an admin call; a viewer or
//!   operator token beyond its role; claims changed offline; a token after a key rotation;
//! - the Raft transport: a member's certificate sending AppendEntries as another leader, a
//!   Vote with term u64::MAX, a report about another node or with a smuggled ssh key, a
//!   volume group report beyond any disk, a node address smuggling a DRBD line, a
//!   client without a certificate, a certificate of another CA, a removed node's certificate;
//! - joining: a rogue endpoint (a cluster other than the token's) gets nothing, changes
//!   nothing;
//! - the local socket opened to everyone: another uid is refused by its peer credentials.

#[path = "../support/mod.rs"]
mod support;

mod matrix;

use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use base64::Engine as _;
use omraft::model::Command;
use omraft::pb;
use omraft::raft::TypeConfig;
use omraft::tls::pki::{self, NodeKey};
use omraft::tls::{self, Anchor, Identity};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
use support::omd::{ok, omctl, stderr, stdout, three, Omd};
use support::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// omctl over TLS to `addr`, trusting the CA in `ca`.
fn remote(addr: &str, ca: &Path, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--ca", ca.to_str().unwrap()];
    if let Some(t) = token {
        all.extend(["--token", t]);
    }
    all.extend_from_slice(args);
    omctl(&format!("https://{addr}"), &all)
}

/// Asserts omctl failed (exit 1, a refusal) with `why` in its error.
fn refused(out: &std::process::Output, why: &str) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "not refused: {}{}",
        stdout(out),
        stderr(out)
    );
    assert!(stderr(out).contains(why), "{why:?} not in {}", stderr(out));
}

fn mint(n: &Omd, args: &[&str]) -> String {
    let mut all = vec!["daemon", "auth"];
    all.extend_from_slice(args);
    ok(&n.server(), &all).trim().to_string()
}

/// The cluster still commits through every node and answers `mon`.
fn still_healthy(nodes: &[&Omd]) {
    for (i, n) in nodes.iter().enumerate() {
        let name = format!("after{i}");
        ok(
            &n.server(),
            &["cluster", "config", "update", "--set", &format!("cluster.name={name}")],
        );
        for m in nodes {
            assert_eq!(
                ok(&m.server(), &["cluster", "config", "get", "--kw", "cluster.name"]).trim(),
                name
            );
        }
        let mon = ok(&n.server(), &["mon"]);
        assert!(mon.contains("leader"), "{mon}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_do_only_what_their_role_allows_once_and_until_rotated() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = three(tmp.path()).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let ca = n1.dir.join("tls/ca.crt");

    let viewer = mint(n1, &["--role", "viewer"]);
    let operator = mint(n1, &["--role", "operator"]);
    let root = mint(n1, &["--role", "root", "--duration", "10m"]);
    let join = mint(n1, &["--role", "join"]);

    // A viewer reads, and nothing else.
    let mon = remote(&n2.addr, &ca, Some(&viewer), &["mon"]);
    assert!(mon.status.success(), "{}", stderr(&mon));
    let set = ["cluster", "config", "update", "--set", "cluster.name=pwned"];
    refused(
        &remote(&n2.addr, &ca, Some(&viewer), &set),
        "viewer token does not allow",
    );
    let pools = remote(&n2.addr, &ca, Some(&viewer), &["pool", "list"]);
    assert!(pools.status.success(), "{}", stderr(&pools));
    // An operator manages objects, not the cluster, its members or its tokens.
    let create = remote(&n2.addr, &ca, Some(&operator), &["demo/cfg/c1", "create"]);
    assert!(create.status.success(), "{}", stderr(&create));
    refused(
        &remote(&n2.addr, &ca, Some(&operator), &set),
        "operator token does not allow",
    );
    refused(
        &remote(&n2.addr, &ca, Some(&operator), &["cluster", "remove", "--node", "n2"]),
        "operator token does not allow",
    );
    refused(
        &remote(&n2.addr, &ca, Some(&operator), &["daemon", "auth", "--role", "root"]),
        "operator token does not allow",
    );
    // A join token joins, and does nothing else.
    refused(
        &remote(&n2.addr, &ca, Some(&join), &["mon"]),
        "a join token only allows joining",
    );
    // No token at all.
    refused(&remote(&n2.addr, &ca, None, &["mon"]), "no credential");

    // Offline forgeries: the viewer's claims raised to root with a long life, and a token signed
    // by another key.
    let (body, sig) = viewer.split_once('.').unwrap();
    let mut claims: serde_json::Value = serde_json::from_slice(&B64.decode(body).unwrap()).unwrap();
    claims["role"] = "root".into();
    claims["exp"] = (claims["exp"].as_u64().unwrap() + 10 * 365 * 86400).into();
    let forged = format!("{}.{sig}", B64.encode(serde_json::to_vec(&claims).unwrap()));
    refused(
        &remote(&n2.addr, &ca, Some(&forged), &set),
        "not signed by this cluster",
    );
    let other = pki::Authority::ephemeral();
    let foreign = format!(
        "{}.{}",
        B64.encode(serde_json::to_vec(&claims).unwrap()),
        B64.encode(other.sign_token(B64.encode(serde_json::to_vec(&claims).unwrap()).as_bytes()))
    );
    refused(
        &remote(&n2.addr, &ca, Some(&foreign), &set),
        "not signed by this cluster",
    );

    // A root token works on any node (n2 forwards minting to n1, the authority).
    let via_n2 = remote(&n2.addr, &ca, Some(&root), &["daemon", "auth", "--role", "viewer"]);
    assert!(via_n2.status.success(), "{}", stderr(&via_n2));
    // A node's local socket gets join tokens through the authority, never root ones.
    refused(
        &omctl(&n2.server(), &["daemon", "auth", "--role", "root"]),
        "run `omctl daemon auth` there",
    );
    let n2_join = mint(n2, &["--role", "join", "--node", "n5"]);

    // Join tokens: once, for the name they are bound to.
    let n4 = Omd::spawn("n4", tmp.path(), &format!("127.0.0.1:{}", free_port()));
    let n5 = Omd::spawn("n5", tmp.path(), &format!("127.0.0.1:{}", free_port()));
    local_client(&n4.dir).await;
    local_client(&n5.dir).await;
    ok(
        &n4.server(),
        &["cluster", "join", "--node", &n1.addr, "--token", &join, "--witness"],
    );
    refused(
        &omctl(&n5.server(), &["cluster", "join", "--node", &n1.addr, "--token", &join]),
        "used already",
    );
    let for_n6 = mint(n1, &["--role", "join", "--node", "n6"]);
    refused(
        &omctl(
            &n5.server(),
            &["cluster", "join", "--node", &n1.addr, "--token", &for_n6],
        ),
        "this join token is for node n6, not n5",
    );
    // A rogue endpoint: the token is the cluster's, the address another cluster's (n6, a
    // fresh one-node cluster). n5 sends nothing there, and neither side changes.
    let n6 = Omd::spawn("n6", tmp.path(), &format!("127.0.0.1:{}", free_port()));
    local_client(&n6.dir).await;
    let out = omctl(
        &n5.server(),
        &["cluster", "join", "--node", &n6.addr, "--token", &n2_join],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not the cluster the token names"),
        "{}",
        stderr(&out)
    );
    assert!(!n6.log().contains("admitted"), "{}", n6.log());
    // The bound token still works for its node afterwards: the rogue endpoint used nothing.
    let joined = ok(
        &n5.server(),
        &["cluster", "join", "--node", &n2.addr, "--token", &n2_join, "--witness"],
    );
    assert!(joined.contains("Joined"), "{joined}");

    // A client certificate: an operator without a token, until revoked. Its key was made by
    // omctl and is mode 0600.
    let dir = tmp.path().join("alice");
    let made = mint(
        n1,
        &[
            "--role",
            "operator",
            "--client-cert",
            dir.to_str().unwrap(),
            "--name",
            "alice",
        ],
    );
    let fingerprint = made.split_whitespace().nth(2).unwrap().to_string();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("client.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let with_cert = |args: &[&str]| {
        let mut all = vec!["--cert", dir.to_str().unwrap()];
        all.extend_from_slice(args);
        omctl(&format!("https://{}", n2.addr), &all)
    };
    let created = with_cert(&["demo/cfg/c2", "create"]);
    assert!(created.status.success(), "{}", stderr(&created));
    refused(&with_cert(&set), "operator client certificate does not allow");
    refused(
        &omctl(&n2.server(), &["cluster", "revoke", "--fingerprint", "nothex"]),
        "not a certificate fingerprint",
    );
    ok(&n2.server(), &["cluster", "revoke", "--fingerprint", &fingerprint]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = with_cert(&["mon"]);
    assert!(!after.status.success(), "a revoked client certificate was served");

    // A rotation: every token minted before stops working, new ones work.
    ok(&n1.server(), &["cluster", "rotate-signing-key"]);
    refused(
        &remote(&n2.addr, &ca, Some(&root), &["mon"]),
        "not signed by this cluster",
    );
    let fresh = mint(n1, &["--role", "viewer"]);
    let mon = remote(&n2.addr, &ca, Some(&fresh), &["mon"]);
    assert!(mon.status.success(), "{}", stderr(&mon));

    still_healthy(&[&nodes[0], &nodes[1], &nodes[2], &n4, &n5]);
    drop((n4, n5, n6));
}

/// A TLS channel presenting `identity` (or none), trusting the cluster CA `ca`.
async fn tls_channel(addr: &str, ca: &[u8], identity: Option<&Identity>) -> Result<tonic::transport::Channel, String> {
    let config = tls::client_config(Anchor::Ca(ca.to_vec()), identity, Default::default()).unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(3));
    tls::connect(endpoint, std::sync::Arc::new(config))
        .await
        .map_err(|e| format!("{e:?}"))
}

/// A Raft client presenting `identity` (or none), trusting the cluster CA `ca`.
async fn raft_client(
    addr: &str,
    ca: &[u8],
    identity: Option<&Identity>,
) -> Result<pb::raft_client::RaftClient<tonic::transport::Channel>, String> {
    Ok(pb::raft_client::RaftClient::new(tls_channel(addr, ca, identity).await?))
}

fn identity_of(dir: &Path) -> Identity {
    let key = NodeKey::load_or_make(&dir.join("tls/node.key")).unwrap();
    let cert = pki::pem_to_der(&std::fs::read_to_string(dir.join("tls/node.crt")).unwrap()).unwrap();
    Identity { cert, key: key.pkcs8() }
}

/// The client certificate omctl wrote to `dir`.
fn client_identity(dir: &Path) -> Identity {
    let key = NodeKey::from_pem(&std::fs::read_to_string(dir.join("client.key")).unwrap()).unwrap();
    let cert = pki::pem_to_der(&std::fs::read_to_string(dir.join("client.crt")).unwrap()).unwrap();
    Identity { cert, key: key.pkcs8() }
}

fn message<T: serde::Serialize>(v: &T) -> pb::RaftMessage {
    pb::RaftMessage {
        data: serde_json::to_vec(v).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_transport_speaks_only_for_the_authenticated_current_member() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = three(tmp.path()).await;
    let mut c1 = local_client(&nodes[0].dir).await;
    let leader = wait_leader(&c1, 3).await;
    assert_eq!(leader, "n1", "n1 founded the cluster and leads it");
    let ca = pki::pem_to_der(&std::fs::read_to_string(nodes[0].dir.join("tls/ca.crt")).unwrap()).unwrap();
    let n2_id = identity_of(&nodes[1].dir);
    let n1_addr = nodes[0].addr.clone();
    let status = c1.node_status(pb::NodeStatusRequest {}).await.unwrap().into_inner();
    let name_before = status.cluster_name.clone();

    // n2's certificate, claiming to be the leader n3 of a newer term, appending an entry that
    // renames the cluster right after n1's last one: refused before openraft sees it.
    let mut raft = raft_client(&n1_addr, &ca, Some(&n2_id)).await.unwrap();
    let term = status.term;
    let last = status.last_log_index.unwrap();
    let (set, unset) = omraft::model::catalog::parse_update(&[("cluster.name".into(), "pwned".into())], &[]).unwrap();
    let forged: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
        vote: Vote::new_committed(term + 1, 3),
        prev_log_id: Some(LogId::new(CommittedLeaderId::new(term, 1), last)),
        entries: vec![Entry {
            log_id: LogId::new(CommittedLeaderId::new(term + 1, 3), last + 1),
            payload: EntryPayload::Normal(Command::UpdateConfig { set, unset }),
        }],
        leader_commit: Some(LogId::new(CommittedLeaderId::new(term + 1, 3), last + 1)),
    };
    let err = raft.append_entries(message(&forged)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("speaks only for itself"), "{err:?}");

    // A Vote with term u64::MAX, as itself: out of range, not granted, not stored.
    let vote = VoteRequest::<u64>::new(Vote::new(u64::MAX, 2), None);
    let err = raft.vote(message(&vote)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // ... and as another candidate.
    let err = raft
        .vote(message(&VoteRequest::<u64>::new(Vote::new(term + 1, 1), None)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // Reports: only about the reporting node, and an ssh key smuggling a second line is
    // refused by the state machine.
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMgCrZCehGhMPJK5j1ImjfzEKCaoSTiUBweLHteT8Hxd omraft@n1";
    let about_n1 = Command::ReportSshKey {
        node_id: 1,
        key: key.into(),
    };
    let err = raft.propose(message(&about_n1)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let smuggled = Command::ReportSshKey {
        node_id: 2,
        key: format!("{key}\n\tssh-rsa\tEVIL\tx"),
    };
    let reply = raft.propose(message(&smuggled)).await.unwrap().into_inner();
    let reply = String::from_utf8_lossy(&reply.data).to_string();
    assert!(reply.contains("Refused"), "{reply}");
    // A member's own volume group report beyond any disk, and a node address smuggling a
    // DRBD line: refused before Raft sees them (`pool list` would sum the report).
    let huge = Command::ReportVolumeGroups {
        node_id: 2,
        vgs: [("data".to_string(), u64::MAX)].into(),
    };
    let smuggled_addr = Command::AddNode {
        name: "n9".into(),
        addr: "10.0.0.9:1215;\n    address ipv4 6.6.6.6:7789".into(),
        witness: false,
        token: None,
    };
    for (cmd, why) in [(huge, "BadVolumeGroups"), (smuggled_addr, "BadNodeAddr")] {
        let reply = raft.propose(message(&cmd)).await.unwrap().into_inner();
        let reply = String::from_utf8_lossy(&reply.data).to_string();
        assert!(reply.contains("Refused") && reply.contains(why), "{reply}");
    }
    let mon = ok(&nodes[0].server(), &["mon"]);
    assert!(!mon.contains("n9"), "{mon}");

    // Without a certificate, the Raft service answers nothing.
    let mut anonymous = raft_client(&n1_addr, &ca, None).await.unwrap();
    let err = anonymous.vote(message(&vote)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // A certificate of another CA fails the handshake.
    let stranger = pki::Authority::ephemeral();
    let key = NodeKey::generate();
    let cert = stranger
        .issue(
            &key.public(),
            &pki::Subject {
                id: 2,
                name: "n2",
                addrs: &[],
            },
        )
        .unwrap();
    let bad = Identity { cert, key: key.pkcs8() };
    let denied = match raft_client(&n1_addr, &ca, Some(&bad)).await {
        Err(_) => true,
        Ok(mut c) => c.vote(message(&vote)).await.is_err(),
    };
    assert!(denied, "a certificate of another CA was served");

    // Nothing of the above changed the state; terms stayed sane.
    let status = c1.node_status(pb::NodeStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.cluster_name, name_before);
    assert!(status.term < 1 << 32, "term {}", status.term);
    let state = ok(&nodes[0].server(), &["cluster", "config", "show"]);
    assert!(!state.contains("pwned"), "{state}");

    // A removed node can do nothing: its certificate is refused at the handshake or by the
    // handlers, on the Raft service and on the API.
    ok(&nodes[0].server(), &["cluster", "remove", "--node", "n2"]);
    nodes[1].kill9();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Before the removal n2's certificate was served (the forged messages above got answers
    // from the handlers); now the same Vote, as itself, gets no answer from Raft.
    let removed = match raft_client(&n1_addr, &ca, Some(&n2_id)).await {
        Err(_) => true,
        Ok(mut c) => c
            .vote(message(&VoteRequest::<u64>::new(Vote::new(term + 5, 2), None)))
            .await
            .is_err(),
    };
    assert!(removed, "a removed node's certificate was served by the Raft service");
    let config = tls::client_config(Anchor::Ca(ca.clone()), Some(&n2_id), Default::default()).unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{n1_addr}")).unwrap();
    if let Ok(ch) = tls::connect(endpoint, std::sync::Arc::new(config)).await {
        // A member's certificate may call `mon`; a revoked one gets an error: refused in the
        // handshake (TLS 1.3 judges the client's certificate after the client finished, so the
        // client sees the connection close) or by the handler.
        let res = pb::cluster_client::ClusterClient::new(ch)
            .mon(pb::MonRequest::default())
            .await;
        assert!(res.is_err(), "a removed node's certificate was served");
    }
    // Its socket cannot mint tokens either (the signing key was never there).
    assert!(!omctl(&nodes[1].server(), &["daemon", "auth", "--role", "root"])
        .status
        .success());

    // The rest of the cluster still commits and answers.
    still_healthy(&[&nodes[0], &nodes[2]]);
}

/// The unix socket, its mode opened to everyone: a user other than root (or omd's own) is
/// still refused, by its peer credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_socket_refuses_another_user_even_when_its_mode_lets_them_in() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let n1 = Omd::spawn("n1", tmp.path(), &format!("127.0.0.1:{}", free_port()));
    let c = local_client(&n1.dir).await;
    wait_leader(&c, 1).await;
    ok(
        &n1.server(),
        &["cluster", "config", "update", "--set", "cluster.name=gated"],
    );
    // Let uid 65534 reach the socket and run an omctl of its own: only the gate is left.
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    mode(tmp.path(), 0o711);
    mode(&n1.dir, 0o711);
    mode(&n1.dir.join("omd.sock"), 0o666);
    let omctl_bin = tmp.path().join("omctl");
    std::fs::copy(env!("CARGO_BIN_EXE_omctl"), &omctl_bin).unwrap();
    mode(&omctl_bin, 0o755);
    let as_nobody = |program: &Path, args: &[&str]| {
        Process::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(program)
            .args(args)
            .env_remove("OMCTL_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("setpriv (util-linux) runs this test: install it")
    };
    let id = as_nobody(Path::new("id"), &["-u"]);
    assert_eq!(
        (id.status.success(), stdout(&id).trim()),
        (true, "65534"),
        "setpriv did not run a command as uid 65534: {}",
        stderr(&id)
    );

    let server = n1.server();
    let out = as_nobody(
        &omctl_bin,
        &["--server", &server, "cluster", "config", "get", "--kw", "cluster.name"],
    );
    assert!(
        !out.status.success() && !stdout(&out).contains("gated"),
        "uid 65534 was served: {}{}",
        stdout(&out),
        stderr(&out)
    );
    eventually(10, "the refusal in the daemon's log", || async {
        n1.log()
            .contains("local socket: refused a connection from uid 65534 (pid ")
            .then_some(())
    })
    .await;

    // Root is still served, on a new connection.
    let value = ok(&server, &["cluster", "config", "get", "--kw", "cluster.name"]);
    assert_eq!(value.trim(), "gated");
}
