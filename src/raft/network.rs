//! The Raft transport, client side: openraft RPCs over tonic to peers' `Raft` service.
//!
//! Channels are cached per address and connect lazily, so a dead peer costs a failed connect
//! and never a blocked caller: openraft runs one replication task per target, and every call
//! here is bounded by the TTL openraft gives it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::{NodeId, TypeConfig};
use crate::api::auth::Secret;
use crate::pb;

/// Lazily connected gRPC channels, one per peer address, shared by all callers.
#[derive(Clone, Default)]
pub struct Channels {
    inner: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Channels {
    /// The channel to `addr` (`HOST:PORT`), created on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.inner.lock().expect("channels lock");
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .connect_lazy();
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

/// Last exchanges with each peer, for `daemon hb status`.
#[derive(Default)]
pub struct Links {
    inner: Mutex<BTreeMap<NodeId, LinkStat>>,
}

/// What this node last saw of one peer.
#[derive(Debug, Clone, Default)]
pub struct LinkStat {
    /// Last RPC this node sent that the peer answered.
    pub tx_ok: Option<Instant>,
    /// Last RPC this node sent that failed, and why.
    pub tx_err: Option<(Instant, String)>,
    /// Last append-entries (heartbeat) received from this peer as leader.
    pub rx: Option<Instant>,
}

impl Links {
    fn update(&self, peer: NodeId, f: impl FnOnce(&mut LinkStat)) {
        f(self.inner.lock().expect("links lock").entry(peer).or_default())
    }

    pub fn tx_ok(&self, peer: NodeId) {
        self.update(peer, |s| s.tx_ok = Some(Instant::now()))
    }

    pub fn tx_err(&self, peer: NodeId, err: String) {
        self.update(peer, |s| s.tx_err = Some((Instant::now(), err)))
    }

    pub fn rx(&self, peer: NodeId) {
        self.update(peer, |s| s.rx = Some(Instant::now()))
    }

    pub fn snapshot(&self) -> BTreeMap<NodeId, LinkStat> {
        self.inner.lock().expect("links lock").clone()
    }
}

/// openraft's network factory: one `Peer` per replication target.
#[derive(Clone)]
pub struct Network {
    pub channels: Channels,
    pub secret: Secret,
    pub links: Arc<Links>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            channel: self.channels.get(&node.addr).map_err(|e| e.to_string()),
            credential: format!("Node {}", self.secret.node_credential()),
            links: self.links.clone(),
        }
    }
}

/// The connection to one peer.
pub struct Peer {
    target: NodeId,
    channel: Result<Channel, String>,
    credential: String,
    links: Arc<Links>,
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

type RpcErr<E> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

fn io_err(kind: std::io::ErrorKind, msg: String) -> std::io::Error {
    std::io::Error::new(kind, msg)
}

impl Peer {
    /// One RPC to the peer, bounded by openraft's TTL, recorded in the link statistics.
    async fn call<Req, Resp, E>(&self, rpc: Rpc, req: &Req, option: RPCOption) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result = async {
            let channel = self
                .channel
                .clone()
                .map_err(|e| RPCError::Unreachable(Unreachable::new(&io_err(std::io::ErrorKind::InvalidInput, e))))?;
            let data = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            let mut request = tonic::Request::new(pb::RaftMessage { data });
            request.metadata_mut().insert(
                "authorization",
                self.credential
                    .parse()
                    .map_err(|e| RPCError::Network(NetworkError::new(&e)))?,
            );
            let ttl = option.hard_ttl();
            request.set_timeout(ttl);
            let mut client = pb::raft_client::RaftClient::new(channel).max_decoding_message_size(64 << 20);
            let call = async {
                match rpc {
                    Rpc::Append => client.append_entries(request).await,
                    Rpc::Vote => client.vote(request).await,
                    Rpc::Snapshot => client.install_snapshot(request).await,
                }
            };
            let reply = match tokio::time::timeout(ttl, call).await {
                Err(_) => {
                    let e = io_err(std::io::ErrorKind::TimedOut, format!("no answer within {ttl:?}"));
                    return Err(RPCError::Unreachable(Unreachable::new(&e)));
                }
                Ok(Err(status)) => {
                    let e = io_err(
                        std::io::ErrorKind::Other,
                        format!("{}: {}", status.code(), status.message()),
                    );
                    return Err(match status.code() {
                        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                            RPCError::Unreachable(Unreachable::new(&e))
                        }
                        _ => RPCError::Network(NetworkError::new(&e)),
                    });
                }
                Ok(Ok(reply)) => reply.into_inner(),
            };
            let decoded: Result<Resp, RaftError<NodeId, E>> =
                serde_json::from_slice(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
        }
        .await;
        match &result {
            Ok(_) | Err(RPCError::RemoteError(_)) => self.links.tx_ok(self.target),
            Err(e) => self.links.tx_err(self.target, e.to_string()),
        }
        result
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call(Rpc::Append, &rpc, option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call(Rpc::Snapshot, &rpc, option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call(Rpc::Vote, &rpc, option).await
    }
}
