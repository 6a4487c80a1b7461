//! The role matrix: every RPC of the proto called with every credential kind over TCP, the
//! outcome (refused, or let through to the handler) checked against the table in README.md.

use std::collections::BTreeMap;

use omraft::pb;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::*;

/// The credential kinds, as the README table's columns name them.
const KINDS: [&str; 5] = ["viewer", "operator", "root", "node", "join"];

/// `rpc -> kind -> allowed`, from the README's role table.
fn readme_table() -> BTreeMap<String, BTreeMap<String, bool>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut lines = readme.lines().skip_while(|l| !l.starts_with("| RPC |"));
    let header: Vec<String> = lines
        .next()
        .expect("README.md has a `| RPC |` role table")
        .split('|')
        .map(|c| c.trim().to_string())
        .collect();
    let mut table = BTreeMap::new();
    for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let rpc = cells[1].trim_matches('`').to_string();
        let row = header
            .iter()
            .zip(&cells)
            .filter(|(h, _)| KINDS.contains(&h.as_str()))
            .map(|(h, c)| (h.clone(), *c == "yes"))
            .collect();
        table.insert(rpc, row);
    }
    table
}

/// Every RPC the proto declares.
fn proto_rpcs() -> Vec<String> {
    let proto = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proto/omraft.proto")).unwrap();
    proto
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .map(|l| l.split('(').next().unwrap().trim().to_string())
        .collect()
}

fn with<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

/// Calls `rpc` with an empty (or harmless) request.
async fn call(rpc: &str, ch: Channel, token: Option<&str>) -> Result<(), Status> {
    let mut c = pb::cluster_client::ClusterClient::new(ch.clone());
    let mut r = pb::raft_client::RaftClient::new(ch);
    let raft = || pb::RaftMessage { data: vec![] };
    macro_rules! go {
        ($client:ident . $method:ident ( $msg:expr )) => {
            $client.$method(with($msg, token)).await.map(|_| ())
        };
    }
    match rpc {
        "AppendEntries" => go!(r.append_entries(raft())),
        "Vote" => go!(r.vote(raft())),
        "InstallSnapshot" => go!(r.install_snapshot(raft())),
        "Propose" => go!(r.propose(raft())),
        "ReadIndex" => go!(r.read_index(raft())),
        "Lease" => go!(r.lease(raft())),
        "ConfigUpdate" => go!(c.config_update(pb::ConfigUpdateRequest::default())),
        "ConfigGet" => go!(c.config_get(pb::ConfigGetRequest {
            key: "cluster.name".into()
        })),
        "ConfigShow" => go!(c.config_show(pb::ConfigShowRequest::default())),
        // A viewer token: what a node may not ask for (it may ask for join tokens only).
        "IssueToken" => go!(c.issue_token(pb::IssueTokenRequest {
            role: "viewer".into(),
            duration_secs: 60,
            node: String::new(),
        })),
        "RotateSigningKey" => go!(c.rotate_signing_key(pb::RotateSigningKeyRequest {})),
        "IssueClientCert" => go!(c.issue_client_cert(pb::IssueClientCertRequest::default())),
        "RevokeCert" => go!(c.revoke_cert(pb::RevokeCertRequest::default())),
        "Join" => go!(c.join(pb::JoinRequest::default())),
        "Admit" => go!(c.admit(pb::AdmitRequest::default())),
        "AddMember" => go!(c.add_member(pb::AddMemberRequest::default())),
        "RemoveNode" => go!(c.remove_node(pb::RemoveNodeRequest::default())),
        "NodeStatus" => go!(c.node_status(pb::NodeStatusRequest::default())),
        "Mon" => go!(c.mon(pb::MonRequest::default())),
        "ObjectCreate" => go!(c.object_create(pb::ObjectCreateRequest::default())),
        "ObjectDelete" => go!(c.object_delete(pb::ObjectRef::default())),
        "ObjectConfigUpdate" => go!(c.object_config_update(pb::ObjectConfigUpdateRequest::default())),
        "ObjectConfigShow" => go!(c.object_config_show(pb::ObjectConfigShowRequest::default())),
        "ObjectConfigGet" => go!(c.object_config_get(pb::ObjectConfigGetRequest::default())),
        "ObjectConfigDoc" => go!(c.object_config_doc(pb::ObjectConfigDocRequest::default())),
        "ObjectList" => go!(c.object_list(pb::ObjectListRequest::default())),
        "KeyPut" => go!(c.key_put(pb::KeyPutRequest::default())),
        "KeyList" => go!(c.key_list(pb::ObjectRef::default())),
        "KeyDecode" => go!(c.key_decode(pb::KeyRequest::default())),
        "KeyRemove" => go!(c.key_remove(pb::KeyRequest::default())),
        "PoolList" => go!(c.pool_list(pb::PoolListRequest::default())),
        "DeviceList" => go!(c.device_list(pb::ObjectRef::default())),
        "ObjectAction" => go!(c.object_action(pb::ObjectActionRequest::default())),
        "NodeFreeze" => go!(c.node_freeze(pb::NodeFreezeRequest::default())),
        "InstanceStatus" => go!(c.instance_status(pb::ObjectRef::default())),
        "ReportVolumeGroups" => go!(c.report_volume_groups(pb::ReportVolumeGroupsRequest::default())),
        "DrbdFence" => go!(c.drbd_fence(pb::DrbdFenceRequest::default())),
        "Events" => go!(c.events(pb::EventsRequest::default())),
        other => panic!("the role matrix has no call for {other}: add one"),
    }
}

fn refused(r: &Result<(), Status>) -> bool {
    matches!(r, Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_with_every_credential_is_allowed_or_refused_as_the_readme_says() {
    let table = readme_table();
    let mut rpcs = proto_rpcs();
    let listed: Vec<&String> = table.keys().collect();
    let mut declared: Vec<&String> = rpcs.iter().collect();
    declared.sort();
    assert_eq!(
        listed, declared,
        "the README role table must list exactly the proto's RPCs"
    );
    // The rotation last: it invalidates the tokens.
    rpcs.retain(|r| r != "RotateSigningKey");
    rpcs.push("RotateSigningKey".into());

    let tmp = tempfile::tempdir().unwrap();
    let n1 = Omd::spawn("n1", tmp.path(), &format!("127.0.0.1:{}", free_port()));
    let c = local_client(&n1.dir).await;
    wait_leader(&c, 1).await;
    let ca = pki::pem_to_der(&std::fs::read_to_string(n1.dir.join("tls/ca.crt")).unwrap()).unwrap();
    let tokens: BTreeMap<&str, String> = ["viewer", "operator", "root", "join"]
        .into_iter()
        .map(|role| (role, mint(&n1, &["--role", role])))
        .collect();
    let anonymous = tls_channel(&n1.addr, &ca, None).await.unwrap();
    let node = tls_channel(&n1.addr, &ca, Some(&identity_of(&n1.dir))).await.unwrap();
    // A client certificate of each role, made by omctl: it must allow what the role's token
    // allows.
    let mut certs = BTreeMap::new();
    for role in ["viewer", "operator", "root"] {
        let dir = tmp.path().join(format!("cert-{role}"));
        mint(&n1, &["--role", role, "--client-cert", dir.to_str().unwrap()]);
        let identity = client_identity(&dir);
        certs.insert(role, tls_channel(&n1.addr, &ca, Some(&identity)).await.unwrap());
    }

    let mut wrong = Vec::new();
    for rpc in &rpcs {
        let none = call(rpc, anonymous.clone(), None).await;
        if !refused(&none) {
            wrong.push(format!("{rpc} without a credential: {none:?}"));
        }
        let mut results = Vec::new();
        for kind in KINDS {
            let result = match kind {
                "node" => call(rpc, node.clone(), None).await,
                role => call(rpc, anonymous.clone(), Some(&tokens[role])).await,
            };
            results.push((kind.to_string(), table[rpc][kind], result));
        }
        for (role, ch) in &certs {
            let result = call(rpc, ch.clone(), None).await;
            results.push((format!("a {role} client certificate"), table[rpc][*role], result));
        }
        for (kind, expected, result) in results {
            if refused(&result) == expected {
                wrong.push(format!(
                    "{rpc} with {kind}: README says {}, got {result:?}",
                    if expected { "allowed" } else { "refused" }
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{} mismatches:\n{}", wrong.len(), wrong.join("\n"));
    // Still serving.
    assert!(ok(&n1.server(), &["mon"]).contains("leader"));
}
