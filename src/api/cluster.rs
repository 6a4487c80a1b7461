//! The `Cluster` service: cluster configuration, tokens, join and removal, status.

use std::collections::BTreeSet;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use tonic::{Request, Response, Status};

use super::auth::{self, Caller, Role};
use super::{authorize, status, Access};
use crate::config::echo::echo;
use crate::config::kind::check_addr;
use crate::daemon::Node;
use crate::model::{catalog, Command, ConfigError, Response as Applied};
use crate::pb::{self, *};

pub struct ClusterService {
    pub node: Arc<Node>,
    /// Open `Events` streams (at most `events::MAX_STREAMS`).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// True once the server stops: open streams end, so the graceful stop does not wait on
    /// them.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

fn invalid(e: ConfigError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// The outcome of a committed command, as an API result.
fn applied(index: u64, r: Applied) -> Result<u64, Status> {
    match r {
        Applied::Refused(why) => Err(super::refused(&why)),
        _ => Ok(index),
    }
}

/// A requested lifetime in seconds (`default` for 0), refused beyond the cap with `what`
/// named.
fn lifetime(secs: u64, default: u64, what: &str) -> Result<u64, Status> {
    let secs = if secs == 0 { default } else { secs };
    if secs > auth::MAX_LIFETIME_SECS {
        return Err(Status::invalid_argument(format!(
            "{what} may last {} days at most",
            auth::MAX_LIFETIME_SECS / 86400
        )));
    }
    Ok(secs)
}

/// A client of another node's `Cluster` service.
type Client = pb::cluster_client::ClusterClient<tonic::transport::Channel>;

/// An `authorization` header value.
type Bearer = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;

/// The caller's `authorization` header, to pass on when a call is forwarded.
fn bearer_of<T>(req: &Request<T>) -> Option<Bearer> {
    req.metadata().get("authorization").cloned()
}

/// An error and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        src = s.source();
    }
    text
}

impl ClusterService {
    /// The cluster's trust, and the name and address of the authority node unless it is this
    /// one (then calls that need its keys are done here).
    /// Waits for a fresh cluster's founder to record its CA first.
    async fn authority(&self) -> Result<(crate::model::Trust, Option<(String, String)>), Status> {
        self.node.wait_bootstrapped().await?;
        let me = self.node.member().id;
        let (trust, holder) = self
            .node
            .read_linearizable(|d| {
                let trust = d.state.trust.clone();
                let holder = trust.as_ref().and_then(|t| {
                    d.state
                        .nodes
                        .get(&t.authority)
                        .map(|n| (t.authority, n.name.clone(), n.addr.clone()))
                });
                (trust, holder)
            })
            .await?;
        let trust =
            trust.ok_or_else(|| Status::unavailable("the cluster's CA is not recorded yet: retry in a moment"))?;
        match holder {
            Some((id, _, _)) if id == me => Ok((trust, None)),
            Some((_, name, addr)) => Ok((trust, Some((name, addr)))),
            None => Err(Status::unavailable(format!(
                "node id {} holds the cluster's CA and signing key but is not registered any more: \
                 no node can be admitted and no token minted (see README, \"Losing the authority node\")",
                trust.authority
            ))),
        }
    }

    /// Sends `msg` to the node at `addr` with `rpc`, as this node, passing the caller's
    /// `token` on if it gave one (the receiver judges the token itself), bounded by `timeout`.
    async fn forward<M, R, Fut>(
        &self,
        addr: &str,
        msg: M,
        token: Option<Bearer>,
        timeout: Duration,
        rpc: impl FnOnce(Client, Request<M>) -> Fut,
    ) -> Result<Response<R>, Status>
    where
        Fut: std::future::Future<Output = Result<Response<R>, Status>>,
    {
        let mut req = self.node.node_request(msg, timeout);
        if let Some(t) = token {
            req.metadata_mut().insert("authorization", t);
        }
        let call = |ch| rpc(pb::cluster_client::ClusterClient::new(ch), req);
        self.node.channels.call(addr, timeout, call).await.map(Response::new)
    }

    /// `Some(leader address)` when this node is not the leader and the call must go there.
    fn forward_target(&self) -> Result<Option<String>, Status> {
        let me = self.node.member().id;
        match self.node.leader() {
            Some((id, _)) if id == me => Ok(None),
            Some((_, addr)) => Ok(Some(addr)),
            None => Err(Status::unavailable("no leader: the cluster has no quorum")),
        }
    }

    /// Adds a registered node as a learner (waiting until it caught up), then as a voter.
    async fn add_member_here(&self, node_id: u64) -> Result<u64, Status> {
        let info = self
            .node
            .read_linearizable(|d| d.state.nodes.get(&node_id).cloned())
            .await?
            .ok_or_else(|| Status::not_found(format!("node id {node_id} is not registered: admit it first")))?;
        let raft = self.node.member().raft.clone();
        let node = BasicNode {
            addr: info.addr.clone(),
        };
        let learner = tokio::time::timeout(Duration::from_secs(60), raft.add_learner(node_id, node, true)).await;
        match learner {
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "{} did not catch up within 60 s",
                    info.name
                )))
            }
            Ok(Err(e)) => return Err(Status::unavailable(format!("adding {} as learner: {e}", info.name))),
            Ok(Ok(_)) => {}
        }
        for _ in 0..50 {
            match raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
                .await
            {
                Ok(r) => return Ok(r.log_id.index),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => return Err(Status::unavailable(format!("promoting {} to voter: {e}", info.name))),
            }
        }
        Err(Status::unavailable("another membership change kept running; try again"))
    }

    async fn remove_here(&self, name: &str) -> Result<u64, Status> {
        let (id, voters, learners, known) = self
            .node
            .read_linearizable(|d| {
                let mem = d.membership.membership();
                let known: Vec<String> = d.state.nodes.values().map(|n| n.name.clone()).collect();
                (
                    d.state.node_id(name),
                    mem.voter_ids().collect::<BTreeSet<_>>(),
                    mem.learner_ids().collect::<BTreeSet<_>>(),
                    known,
                )
            })
            .await?;
        let id = id.ok_or_else(|| {
            Status::not_found(format!("no node named {:?} (nodes: {})", echo(name), known.join(", ")))
        })?;
        if voters.contains(&id) && voters.len() == 1 {
            return Err(Status::failed_precondition(format!(
                "{name} is the last voter of the cluster"
            )));
        }
        let raft = self.node.member().raft.clone();
        let change = if voters.contains(&id) {
            Some(ChangeMembers::RemoveVoters(BTreeSet::from([id])))
        } else if learners.contains(&id) {
            Some(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
        } else {
            None
        };
        if let Some(change) = change {
            raft.change_membership(change, false)
                .await
                .map_err(|e| Status::unavailable(format!("removing {name} from the raft membership: {e}")))?;
        }
        let (index, r) = self.node.write(Command::RemoveNode { node_id: id }).await?;
        applied(index, r)?;
        Ok(id)
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    type EventsStream = super::events::EventStream;

    async fn events(&self, req: Request<EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        authorize(&req, Access::View)?;
        let stopping = self.stopping.clone();
        super::events::stream(&self.node, &self.streams, stopping, req.into_inner()).map(Response::new)
    }

    async fn config_update(&self, req: Request<ConfigUpdateRequest>) -> Result<Response<ConfigUpdateReply>, Status> {
        authorize(&req, Access::Admin)?;
        let req = req.into_inner();
        let set: Vec<(String, String)> = req.set.into_iter().map(|kv| (kv.key, kv.value)).collect();
        let (set, unset) = catalog::parse_update(&set, &req.unset).map_err(invalid)?;
        self.check_pool_templates(&set).await?;
        self.commit(Command::UpdateConfig { set, unset }).await
    }

    async fn config_get(&self, req: Request<ConfigGetRequest>) -> Result<Response<ConfigGetReply>, Status> {
        authorize(&req, Access::View)?;
        let key = req.into_inner().key;
        catalog::ConfigKey::parse(&key).map_err(invalid)?;
        let value = self
            .node
            .read_linearizable(|d| catalog::get(&d.state.config, &key))
            .await?
            .map_err(invalid)?;
        Ok(Response::new(ConfigGetReply {
            found: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }

    async fn config_show(&self, req: Request<ConfigShowRequest>) -> Result<Response<ConfigShowReply>, Status> {
        authorize(&req, Access::View)?;
        let want = req.into_inner().section;
        let cfg = self.node.read_linearizable(|d| d.state.config.clone()).await?;
        let sections: Vec<Section> = cfg
            .iter()
            .filter(|(name, _)| want.is_empty() || **name == want)
            .map(|(name, values)| Section {
                name: name.clone(),
                values: catalog::ordered(name, values)
                    .into_iter()
                    .map(|(key, value)| KeyValue { key, value })
                    .collect(),
            })
            .collect();
        if !want.is_empty() && sections.is_empty() {
            let known: Vec<&str> = cfg.keys().map(String::as_str).collect();
            return Err(Status::not_found(format!(
                "section {:?} is not set (sections: {})",
                echo(&want),
                known.join(", ")
            )));
        }
        Ok(Response::new(ConfigShowReply { sections }))
    }

    async fn issue_token(&self, req: Request<IssueTokenRequest>) -> Result<Response<IssueTokenReply>, Status> {
        let from = super::caller(&req);
        // A node asks the authority for a join token on behalf of its local socket; tokens
        // that act on the cluster come only from the local socket there or a root token.
        if !matches!(from, Caller::Node(_)) {
            authorize(&req, Access::Tokens)?;
        }
        let header = bearer_of(&req);
        let msg = req.get_ref().clone();
        let role = Role::parse(&msg.role).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown role {:?} (roles: join, viewer, operator, root)",
                echo(&msg.role)
            ))
        })?;
        if let (Caller::Node(id), false) = (&from, role == Role::Join) {
            return Err(Status::permission_denied(format!(
                "node id {id} may ask only for join tokens, not {role} tokens"
            )));
        }
        if !msg.node.is_empty() {
            if role != Role::Join {
                return Err(Status::invalid_argument("--node binds only a join token"));
            }
            crate::model::validate_node_name(&msg.node).map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let secs = lifetime(msg.duration_secs, 3600, "a token")?;
        let (trust, holder) = self.authority().await?;
        if let Some((name, addr)) = holder {
            if from == Caller::Local && role != Role::Join {
                return Err(Status::failed_precondition(format!(
                    "{role} tokens are minted by {name}, the node holding the cluster's signing key: \
                     run `omctl daemon auth` there, or call it with a root token"
                )));
            }
            let rpc = |mut c: Client, r| async move { c.issue_token(r).await };
            return self.forward(&addr, msg, header, Duration::from_secs(10), rpc).await;
        }
        let now = auth::unix_now();
        let node = (!msg.node.is_empty()).then(|| msg.node.clone());
        let claims = auth::Claims::new(role, now, secs, &trust, node);
        let token = {
            let a = self.node.authority.lock().expect("authority lock");
            let a = a
                .as_ref()
                .ok_or_else(|| Status::internal("this node lost its signing key"))?;
            if a.signing_public() != trust.signing_key {
                return Err(Status::failed_precondition(
                    "this node's signing key is not the cluster's current one (a rotation is being committed): retry",
                ));
            }
            claims.sign(|m| a.sign_token(m))
        };
        tracing::info!(%role, exp = claims.exp, node = ?claims.node, "minted a token");
        Ok(Response::new(IssueTokenReply {
            token,
            expires_unix: claims.exp,
        }))
    }

    async fn rotate_signing_key(
        &self,
        req: Request<RotateSigningKeyRequest>,
    ) -> Result<Response<RotateSigningKeyReply>, Status> {
        authorize(&req, Access::Tokens)?;
        let header = bearer_of(&req);
        let (_, holder) = self.authority().await?;
        if let Some((name, addr)) = holder {
            let Some(h) = header else {
                return Err(Status::failed_precondition(format!(
                    "the signing key is held by {name}: run `omctl cluster rotate-signing-key` there, or call it with a root token"
                )));
            };
            let rpc = |mut c: Client, r| async move { c.rotate_signing_key(r).await };
            let msg = RotateSigningKeyRequest {};
            return self.forward(&addr, msg, Some(h), Duration::from_secs(10), rpc).await;
        }
        let _guard = self.node.join_lock.lock().await;
        let public = {
            let mut a = self.node.authority.lock().expect("authority lock");
            let a = a
                .as_mut()
                .ok_or_else(|| Status::internal("this node lost its signing key"))?;
            a.rotate_signing_key(&crate::daemon::tls_dir(&self.node.settings))
                .map_err(|e| Status::internal(e.to_string()))?
        };
        let (index, r) = self
            .node
            .write(Command::RotateSigningKey { signing_key: public })
            .await?;
        applied(index, r)?;
        let generation = self
            .node
            .read(|d| d.state.trust.as_ref().map(|t| t.generation).unwrap_or(0));
        tracing::warn!(generation, "token signing key rotated: every older token is invalid");
        Ok(Response::new(RotateSigningKeyReply { generation }))
    }

    async fn issue_client_cert(
        &self,
        req: Request<IssueClientCertRequest>,
    ) -> Result<Response<IssueClientCertReply>, Status> {
        authorize(&req, Access::Tokens)?;
        let from = super::caller(&req);
        let header = bearer_of(&req);
        let msg = req.into_inner();
        if Role::parse(&msg.role).is_none_or(|r| r == Role::Join) {
            return Err(Status::invalid_argument(format!(
                "role {:?}: a client certificate is for viewer, operator or root",
                echo(&msg.role)
            )));
        }
        crate::model::validate_node_name(&msg.name)
            .map_err(|e| Status::invalid_argument(format!("the certificate's name: {e}")))?;
        let secs = lifetime(msg.duration_secs, 86400, "a client certificate")?;
        crate::tls::pki::verify_proof(&msg.public_key, crate::tls::pki::CLIENT_PROOF, &msg.name, &msg.proof)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (_, holder) = self.authority().await?;
        if let Some((name, addr)) = holder {
            if from == Caller::Local {
                return Err(Status::failed_precondition(format!(
                    "client certificates are issued by {name}, the node holding the cluster CA: \
                     run the command there, or call it with a root token"
                )));
            }
            let rpc = |mut c: Client, r| async move { c.issue_client_cert(r).await };
            return self.forward(&addr, msg, header, Duration::from_secs(10), rpc).await;
        }
        // Whole days, rounded down (at least one): the certificate's validity has day precision.
        let days = (secs / 86400).max(1);
        let (cert, ca) = {
            let a = self.node.authority.lock().expect("authority lock");
            let a = a
                .as_ref()
                .ok_or_else(|| Status::internal("this node lost its CA key"))?;
            let cert = a
                .issue_client(&msg.public_key, &msg.name, &msg.role, days)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            (cert, a.ca_der().to_vec())
        };
        let fingerprint = crate::tls::pki::fingerprint(&cert);
        tracing::info!(name = %msg.name, role = %msg.role, days, cert = %fingerprint, "issued a client certificate");
        Ok(Response::new(IssueClientCertReply { cert, ca, fingerprint }))
    }

    async fn revoke_cert(&self, req: Request<RevokeCertRequest>) -> Result<Response<ConfigUpdateReply>, Status> {
        authorize(&req, Access::Admin)?;
        let fingerprint = req.into_inner().fingerprint.trim().to_ascii_lowercase();
        if fingerprint.len() != 64 || !fingerprint.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Status::invalid_argument(format!(
                "{:?} is not a certificate fingerprint (64 hex digits, as `omctl daemon auth --client-cert` printed it)",
                echo(&fingerprint)
            )));
        }
        self.commit(Command::RevokeCert { fingerprint }).await
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        authorize(&req, Access::Local)?;
        let req = req.into_inner();
        let node = &self.node;
        let _guard = node
            .join_lock
            .try_lock()
            .map_err(|_| Status::aborted("a join is already running"))?;
        let mut steps = Vec::new();
        let m = node.member();
        let (members, registered) =
            m.sm.read(|d| (d.membership.membership().nodes().count(), d.state.nodes.len()));
        if members > 1 || registered > 1 {
            return Err(Status::failed_precondition(format!(
                "this node already belongs to a cluster of {} nodes: remove it there first",
                members.max(registered)
            )));
        }
        check_addr(&req.node)
            .map_err(|why| Status::invalid_argument(format!("--node {:?}: {why}", echo(&req.node))))?;
        if req.node.to_socket_addrs().is_err() {
            return Err(Status::invalid_argument(format!(
                "--node {:?} is not a reachable HOST:PORT",
                echo(&req.node)
            )));
        }
        let claims =
            auth::Claims::peek(&req.token).map_err(|e| Status::invalid_argument(format!("the join token: {e}")))?;
        if claims.role != Role::Join {
            return Err(Status::invalid_argument(format!(
                "this is a {} token, not a join token: create one with `omctl daemon auth --role join`",
                claims.role
            )));
        }
        steps.push(format!(
            "Ask {} to admit {} ({}), trusting only the CA {}",
            req.node, node.settings.name, node.settings.addr, claims.ca
        ));
        let mut admit = Request::new(AdmitRequest {
            name: node.settings.name.clone(),
            addr: node.settings.addr.clone(),
            witness: req.witness,
            public_key: node.key.public(),
            proof: node.key.prove(&claims.nonce, &node.settings.name),
        });
        let bearer = format!("Bearer {}", req.token.trim())
            .parse()
            .map_err(|_| Status::invalid_argument("the token has characters a token never has"))?;
        admit.metadata_mut().insert("authorization", bearer);
        admit.set_timeout(Duration::from_secs(15));
        let refused = |s: Status| {
            Status::new(
                s.code(),
                format!("{} refused to admit this node: {}", req.node, s.message()),
            )
        };
        // Nothing is sent before the server proved it holds a certificate from the CA the
        // token names.
        let config = crate::tls::client_config(
            crate::tls::Anchor::Pinned(claims.ca.clone()),
            None,
            crate::tls::Revoked::default(),
        )
        .map_err(|e| Status::internal(e.to_string()))?;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", req.node))
            .map_err(|e| Status::invalid_argument(format!("--node {}: {e}", req.node)))?
            .connect_timeout(Duration::from_secs(5));
        let channel = crate::tls::connect(endpoint, Arc::new(config)).await.map_err(|e| {
            Status::unavailable(format!(
                "cannot reach {} or it is not the cluster the token names: {}",
                req.node,
                error_chain(&e)
            ))
        })?;
        let admitted = tokio::time::timeout(
            Duration::from_secs(15),
            pb::cluster_client::ClusterClient::new(channel).admit(admit),
        )
        .await
        .map_err(|_| Status::deadline_exceeded(format!("{} did not answer within 15 s", req.node)))?
        .map_err(refused)?
        .into_inner();
        if crate::tls::pki::fingerprint(&admitted.ca) != claims.ca {
            return Err(Status::permission_denied(format!(
                "{} answered with a CA other than the one the token names: not joining",
                req.node
            )));
        }
        if crate::tls::pki::node_id_of(&admitted.cert) != Some(admitted.node_id) {
            return Err(Status::permission_denied(format!(
                "{} sent a certificate that does not name node id {}: not joining",
                req.node, admitted.node_id
            )));
        }
        steps.push(format!(
            "Admitted as node id {} of cluster {} (leader {}), certificate {}",
            admitted.node_id,
            admitted.cluster_name,
            admitted.leader,
            crate::tls::pki::fingerprint(&admitted.cert)
        ));
        let backup = save_backup(node)?;
        steps.push(format!("Save the pre-join state to {}", backup.display()));
        steps.push(format!("Stop the local one-node cluster (node id {})", m.id));
        drop(m);
        node.rejoin_as(admitted.node_id, &admitted.cert, &admitted.ca)
            .await
            .map_err(|e| Status::internal(format!("restarting raft as node {}: {e}", admitted.node_id)))?;
        steps.push(format!("Start raft as node id {}", admitted.node_id));
        steps.push(format!(
            "Ask the leader to add node {} as learner, then voter",
            admitted.node_id
        ));
        let add = node.node_request(
            AddMemberRequest {
                node_id: admitted.node_id,
            },
            Duration::from_secs(90),
        );
        let added = node
            .channels
            .call(&req.node, Duration::from_secs(90), |ch| async move {
                pb::cluster_client::ClusterClient::new(ch).add_member(add).await
            })
            .await
            .map_err(|s| Status::new(s.code(), format!("joining the membership: {}", s.message())))?;
        steps.push(format!("Membership committed at log index {}", added.log_index));
        steps.push(if req.witness {
            "Joined as witness".into()
        } else {
            "Joined".into()
        });
        tracing::info!(cluster = %admitted.cluster_name, id = admitted.node_id, "joined");
        Ok(Response::new(JoinReply {
            steps,
            node_id: admitted.node_id,
        }))
    }

    async fn admit(&self, req: Request<AdmitRequest>) -> Result<Response<AdmitReply>, Status> {
        authorize(&req, Access::Join)?;
        let Caller::Token(claims) = super::caller(&req) else {
            return Err(Status::permission_denied("a join token is needed"));
        };
        let header = bearer_of(&req);
        let req = req.into_inner();
        crate::model::validate_node_name(&req.name).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Before anything is forwarded or written: the address goes into the certificate, DRBD
        // `address` lines and migration URIs.
        crate::model::validate_node_addr(&req.addr).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(bound) = &claims.node {
            if bound != &req.name {
                return Err(Status::permission_denied(format!(
                    "this join token is for node {bound}, not {}",
                    req.name
                )));
            }
        }
        crate::tls::pki::verify_proof(&req.public_key, &claims.nonce, &req.name, &req.proof)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (_, holder) = self.authority().await?;
        if let Some((_, addr)) = holder {
            let rpc = |mut c: Client, r| async move { c.admit(r).await };
            return self.forward(&addr, req, header, Duration::from_secs(15), rpc).await;
        }
        // One admission at a time on the authority: a token's nonce is checked and used up in
        // one log entry, and its certificate follows.
        let _guard = self.node.join_lock.lock().await;
        let (existing, in_membership) = self
            .node
            .read_linearizable(|d| {
                let id = d.state.node_id(&req.name);
                (
                    id,
                    id.is_some_and(|id| d.membership.membership().get_node(&id).is_some()),
                )
            })
            .await?;
        if let Some(id) = existing {
            if in_membership {
                return Err(Status::already_exists(format!(
                    "a node named {} is already a member (id {id}): remove it first with `omctl cluster remove --node {}`",
                    req.name, req.name
                )));
            }
            // Admitted before but never added: forget that id (and revoke its certificate), a
            // fresh one is allocated.
            let (index, r) = self.node.write(Command::RemoveNode { node_id: id }).await?;
            applied(index, r)?;
        }
        let cmd = Command::AddNode {
            name: req.name.clone(),
            addr: req.addr.clone(),
            witness: req.witness,
            token: Some(claims.nonce.clone()),
        };
        let (_, r) = self.node.write(cmd).await?;
        let node_id = match r {
            Applied::NodeAdded(id) => id,
            Applied::Refused(why) => return Err(super::refused(&why)),
            Applied::Done | Applied::Batch(_) => return Err(Status::internal("admission allocated no node id")),
        };
        let (cert, ca) = {
            let a = self.node.authority.lock().expect("authority lock");
            let a = a
                .as_ref()
                .ok_or_else(|| Status::internal("this node lost its CA key"))?;
            let subject = crate::tls::pki::Subject {
                id: node_id,
                name: &req.name,
                addrs: std::slice::from_ref(&req.addr),
            };
            let cert = a
                .issue(&req.public_key, &subject)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            (cert, a.ca_der().to_vec())
        };
        let fingerprint = crate::tls::pki::fingerprint(&cert);
        let (index, r) = self
            .node
            .write(Command::NodeCert {
                node_id,
                fingerprint: fingerprint.clone(),
            })
            .await?;
        applied(index, r)?;
        tracing::info!(node = %req.name, id = node_id, witness = req.witness, cert = %fingerprint, "admitted");
        let leader = self.node.leader().map(|(_, a)| a).unwrap_or_default();
        Ok(Response::new(AdmitReply {
            node_id,
            cert,
            ca,
            cluster_name: self.node.cluster_name(),
            leader,
        }))
    }

    async fn add_member(&self, req: Request<AddMemberRequest>) -> Result<Response<AddMemberReply>, Status> {
        authorize(&req, Access::Node)?;
        let msg = req.into_inner();
        if let Some(addr) = self.forward_target()? {
            let rpc = |mut c: Client, r| async move { c.add_member(r).await };
            return self.forward(&addr, msg, None, Duration::from_secs(90), rpc).await;
        }
        let log_index = self.add_member_here(msg.node_id).await?;
        Ok(Response::new(AddMemberReply { log_index }))
    }

    async fn remove_node(&self, req: Request<RemoveNodeRequest>) -> Result<Response<RemoveNodeReply>, Status> {
        authorize(&req, Access::Admin)?;
        let msg = req.into_inner();
        if let Some(addr) = self.forward_target()? {
            let rpc = |mut c: Client, r| async move { c.remove_node(r).await };
            return self.forward(&addr, msg, None, Duration::from_secs(30), rpc).await;
        }
        let node_id = self.remove_here(&msg.name).await?;
        tracing::info!(node = %msg.name, id = node_id, "removed from the cluster");
        Ok(Response::new(RemoveNodeReply { node_id }))
    }

    async fn node_status(&self, req: Request<NodeStatusRequest>) -> Result<Response<NodeStatus>, Status> {
        authorize(&req, Access::View)?;
        Ok(Response::new(status::node_status(&self.node)))
    }

    async fn mon(&self, req: Request<MonRequest>) -> Result<Response<MonReply>, Status> {
        authorize(&req, Access::View)?;
        let page = status::MonPage::parse(req.get_ref()).map_err(Status::invalid_argument)?;
        Ok(Response::new(status::mon(&self.node, &page).await))
    }

    async fn object_create(&self, req: Request<ObjectCreateRequest>) -> Result<Response<ConfigUpdateReply>, Status> {
        ClusterService::object_create(self, req).await
    }

    async fn object_delete(&self, req: Request<ObjectRef>) -> Result<Response<ConfigUpdateReply>, Status> {
        ClusterService::object_delete(self, req).await
    }

    async fn object_config_update(
        &self,
        req: Request<ObjectConfigUpdateRequest>,
    ) -> Result<Response<ConfigUpdateReply>, Status> {
        ClusterService::object_config_update(self, req).await
    }

    async fn object_config_show(
        &self,
        req: Request<ObjectConfigShowRequest>,
    ) -> Result<Response<ConfigShowReply>, Status> {
        ClusterService::object_config_show(self, req).await
    }

    async fn object_config_get(
        &self,
        req: Request<ObjectConfigGetRequest>,
    ) -> Result<Response<ConfigGetReply>, Status> {
        ClusterService::object_config_get(self, req).await
    }

    async fn object_config_doc(
        &self,
        req: Request<ObjectConfigDocRequest>,
    ) -> Result<Response<ObjectConfigDocReply>, Status> {
        ClusterService::object_config_doc(self, req).await
    }

    async fn object_list(&self, req: Request<ObjectListRequest>) -> Result<Response<ObjectListReply>, Status> {
        ClusterService::object_list(self, req).await
    }

    async fn key_put(&self, req: Request<KeyPutRequest>) -> Result<Response<ConfigUpdateReply>, Status> {
        ClusterService::key_put(self, req).await
    }

    async fn key_list(&self, req: Request<ObjectRef>) -> Result<Response<KeyListReply>, Status> {
        ClusterService::key_list(self, req).await
    }

    async fn key_decode(&self, req: Request<KeyRequest>) -> Result<Response<KeyDecodeReply>, Status> {
        ClusterService::key_decode(self, req).await
    }

    async fn key_remove(&self, req: Request<KeyRequest>) -> Result<Response<ConfigUpdateReply>, Status> {
        ClusterService::key_remove(self, req).await
    }

    async fn pool_list(&self, req: Request<PoolListRequest>) -> Result<Response<PoolListReply>, Status> {
        ClusterService::pool_list(self, req).await
    }

    async fn device_list(&self, req: Request<ObjectRef>) -> Result<Response<DeviceListReply>, Status> {
        ClusterService::device_list(self, req).await
    }

    async fn object_action(&self, req: Request<ObjectActionRequest>) -> Result<Response<ConfigUpdateReply>, Status> {
        ClusterService::object_action(self, req).await
    }

    async fn node_freeze(&self, req: Request<NodeFreezeRequest>) -> Result<Response<ConfigUpdateReply>, Status> {
        ClusterService::node_freeze(self, req).await
    }

    async fn instance_status(&self, req: Request<ObjectRef>) -> Result<Response<InstanceStatusReply>, Status> {
        ClusterService::instance_status(self, req).await
    }

    async fn report_volume_groups(
        &self,
        req: Request<ReportVolumeGroupsRequest>,
    ) -> Result<Response<ConfigUpdateReply>, Status> {
        ClusterService::report_volume_groups(self, req).await
    }

    async fn drbd_fence(&self, req: Request<DrbdFenceRequest>) -> Result<Response<DrbdFenceReply>, Status> {
        ClusterService::drbd_fence(self, req).await
    }
}

/// Writes the state this node is about to leave to `DATA/backup/pre-join-UNIX.json`.
fn save_backup(node: &Node) -> Result<std::path::PathBuf, Status> {
    let dir = node.settings.data_dir.join("backup");
    let path = dir.join(format!("pre-join-{}.json", auth::unix_now()));
    let state = node
        .read(|d| serde_json::to_vec_pretty(&d.state))
        .map_err(|e| Status::internal(e.to_string()))?;
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, state))
        .map_err(|e| Status::internal(format!("saving {}: {e}", path.display())))?;
    Ok(path)
}
