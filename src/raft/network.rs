//! The Raft transport, client side: openraft RPCs over tonic to peers' `Raft` service.
//!
//! Channels are cached per address and connect lazily, so a dead peer costs a failed connect
//! and never a blocked caller: openraft runs one replication task per target, and every call
//! here is bounded by the TTL openraft gives it. A cut connection must not outlive the cut:
//! HTTP/2 keepalive pings (every `KEEPALIVE`, answered within `KEEPALIVE_TIMEOUT`, idle or not)
//! close a connection whose peer went silent, and a channel whose calls failed
//! `FAILURES_BEFORE_RECONNECT` times in a row (no answer in time, transport error, or abandoned
//! by the caller's own timeout) is dropped and made again on next use. Without that, a TCP
//! connection whose packets were dropped for a while stays in retransmission backoff long after
//! the network heals.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
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
use tonic::Status;

use super::{NodeId, TypeConfig};
use crate::pb;
use crate::tls::Tls;

/// Consecutive failed calls on one channel after which it is dropped and made again.
pub const FAILURES_BEFORE_RECONNECT: u32 = 2;
/// How often an HTTP/2 keepalive ping goes out on a channel, idle or not.
pub const KEEPALIVE: Duration = Duration::from_secs(1);
/// How long a keepalive ping may go unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// One cached channel and its run of failed calls.
struct Slot {
    channel: Channel,
    generation: u64,
    failures: u32,
}

#[derive(Default)]
struct ChannelMap {
    slots: HashMap<String, Slot>,
    made: u64,
}

/// Lazily connected gRPC channels over TLS, one per peer address, shared by all callers.
#[derive(Clone)]
pub struct Channels {
    inner: Arc<Mutex<ChannelMap>>,
    tls: Arc<Tls>,
    /// The runtime the channels' connections run on: the one that made the cache (the
    /// daemon's), whichever runtime a call comes from (clients are served on another).
    runtime: Option<tokio::runtime::Handle>,
}

/// One call's use of a cached channel. Settle it with the call's outcome; dropped unsettled
/// (the caller gave up waiting), it counts as a failure.
pub struct ChannelUse {
    channel: Channel,
    addr: String,
    generation: u64,
    channels: Channels,
    settled: bool,
}

impl ChannelUse {
    /// The channel, to build a client on.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Records the call's outcome: `answered` when the peer answered, whatever it said.
    pub fn settle(mut self, answered: bool) {
        self.settled = true;
        self.channels.record(&self.addr, self.generation, answered);
    }
}

impl Drop for ChannelUse {
    fn drop(&mut self) {
        if !self.settled {
            self.channels.record(&self.addr, self.generation, false);
        }
    }
}

/// Whether a status returned by a call means the peer was not reached or did not answer (as
/// opposed to an answer from it).
pub fn transport_failure(s: &Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown
    )
}

impl Channels {
    /// No channels yet; each will speak TLS with this node's identity.
    pub fn new(tls: Arc<Tls>) -> Channels {
        Channels {
            inner: Arc::default(),
            tls,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Drops every cached channel (this node's identity changed).
    pub fn clear(&self) {
        self.inner.lock().expect("channels lock").slots.clear();
    }

    /// The channel to `addr` (`HOST:PORT`), created on first use and again after a run of
    /// failed calls.
    pub fn get(&self, addr: &str) -> Result<ChannelUse, tonic::transport::Error> {
        let mut map = self.inner.lock().expect("channels lock");
        let (channel, generation) = match map.slots.get(addr) {
            Some(s) => (s.channel.clone(), s.generation),
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
                    .connect_timeout(Duration::from_millis(500))
                    .http2_keep_alive_interval(KEEPALIVE)
                    .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                    .keep_alive_while_idle(true);
                let tls = self.tls.clone();
                let _on = self.runtime.as_ref().map(|r| r.enter());
                let channel = crate::tls::channel(endpoint, move || tls.client_config());
                map.made += 1;
                let generation = map.made;
                map.slots.insert(
                    addr.to_string(),
                    Slot {
                        channel: channel.clone(),
                        generation,
                        failures: 0,
                    },
                );
                (channel, generation)
            }
        };
        Ok(ChannelUse {
            channel,
            addr: addr.to_string(),
            generation,
            channels: self.clone(),
            settled: false,
        })
    }

    /// Counts a call's outcome against the channel it used (not against one made since).
    fn record(&self, addr: &str, generation: u64, answered: bool) {
        let mut map = self.inner.lock().expect("channels lock");
        let Some(slot) = map.slots.get_mut(addr).filter(|s| s.generation == generation) else {
            return;
        };
        if answered {
            slot.failures = 0;
            return;
        }
        slot.failures += 1;
        if slot.failures >= FAILURES_BEFORE_RECONNECT {
            tracing::debug!("{addr}: {} failed calls in a row: reconnecting", slot.failures);
            map.slots.remove(addr);
        }
    }

    /// One call on the channel to `addr`, bounded by `timeout` (tonic does not enforce a
    /// request's own) and counted for the channel's replacement.
    pub async fn call<T, F, Fut>(&self, addr: &str, timeout: Duration, f: F) -> Result<T, Status>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let conn = self
            .get(addr)
            .map_err(|e| Status::invalid_argument(format!("bad address {addr}: {e}")))?;
        match tokio::time::timeout(timeout, f(conn.channel())).await {
            Err(_) => {
                conn.settle(false);
                Err(Status::deadline_exceeded(format!(
                    "{addr} did not answer within {timeout:?}"
                )))
            }
            Ok(Err(s)) => {
                conn.settle(!transport_failure(&s));
                Err(s)
            }
            Ok(Ok(r)) => {
                conn.settle(true);
                Ok(r.into_inner())
            }
        }
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
    pub links: Arc<Links>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            channels: self.channels.clone(),
            links: self.links.clone(),
        }
    }
}

/// The connection to one peer.
pub struct Peer {
    target: NodeId,
    addr: String,
    channels: Channels,
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

/// The most encoded bytes of log entries one AppendEntries call carries, unless its first entry
/// alone is larger (it then goes alone: the value limit keeps an entry near 1 MiB).
///
/// openraft 0.9 bounds every append by the heartbeat interval, and heartbeats ride on the same
/// calls: an append too large to be sent, decoded and synced within it would time out, be sent
/// again, time out again, and leave the follower without heartbeats until it stood for
/// election. A longer backlog therefore goes as several calls, each answered with the log id of
/// the last entry it carried (`PartialSuccess`), and openraft sends the rest next.
pub const APPEND_BYTES: usize = 1 << 20;

/// How many of `entries`, from the first, fit in `budget` encoded bytes (at least one).
fn append_prefix(entries: &[super::Entry], budget: usize) -> usize {
    let mut bytes = 0;
    for (n, entry) in entries.iter().enumerate() {
        bytes += crate::raft::codec::encode(entry).map_or(usize::MAX, |e| e.len());
        if n > 0 && bytes > budget {
            return n;
        }
    }
    entries.len()
}

impl Peer {
    /// One RPC to the peer, bounded by openraft's TTL, recorded in the link statistics.
    async fn call<Req, Resp, E>(&self, rpc: Rpc, req: &Req, option: RPCOption) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = crate::raft::codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(rpc, data, option).await
    }

    /// `call` for a request already encoded.
    async fn send<Resp, E>(&self, rpc: Rpc, data: Vec<u8>, option: RPCOption) -> Result<Resp, RpcErr<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result = async {
            let conn = self.channels.get(&self.addr).map_err(|e| {
                let e = io_err(
                    std::io::ErrorKind::InvalidInput,
                    format!("bad address {}: {e}", self.addr),
                );
                RPCError::Unreachable(Unreachable::new(&e))
            })?;
            let mut request = tonic::Request::new(pb::RaftMessage { data });
            let ttl = option.hard_ttl();
            request.set_timeout(ttl);
            let mut client = pb::raft_client::RaftClient::new(conn.channel()).max_decoding_message_size(64 << 20);
            let call = async {
                match rpc {
                    Rpc::Append => client.append_entries(request).await,
                    Rpc::Vote => client.vote(request).await,
                    Rpc::Snapshot => client.install_snapshot(request).await,
                }
            };
            let answer = tokio::time::timeout(ttl, call).await;
            conn.settle(matches!(&answer, Ok(Ok(_))) || matches!(&answer, Ok(Err(s)) if !transport_failure(s)));
            let reply = match answer {
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
                crate::raft::codec::decode(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
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
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        let data = crate::raft::codec::encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if data.len() <= APPEND_BYTES || rpc.entries.len() < 2 {
            return self.send(Rpc::Append, data, option).await;
        }
        rpc.entries.truncate(append_prefix(&rpc.entries, APPEND_BYTES));
        let last = rpc.entries.last().map(|e| e.log_id);
        let answer = self.call(Rpc::Append, &rpc, option).await?;
        Ok(match answer {
            AppendEntriesResponse::Success => AppendEntriesResponse::PartialSuccess(last),
            other => other,
        })
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use openraft::{CommittedLeaderId, Vote};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tonic::{Request, Response};

    use super::*;
    use crate::pb::RaftMessage;

    /// A peer that answers every vote request with a granted vote, and every append with a
    /// success, keeping the number of entries each append carried.
    #[derive(Default)]
    struct Voter {
        appends: Arc<Mutex<Vec<usize>>>,
    }

    #[tonic::async_trait]
    impl pb::raft_server::Raft for Voter {
        async fn vote(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            let answer: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
                Ok(VoteResponse::new(Vote::new(1, 1), None, true));
            Ok(Response::new(RaftMessage {
                data: crate::raft::codec::encode(&answer).unwrap(),
            }))
        }
        async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            let req: AppendEntriesRequest<TypeConfig> = crate::raft::codec::decode(&req.into_inner().data).unwrap();
            self.appends.lock().unwrap().push(req.entries.len());
            let answer: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> = Ok(AppendEntriesResponse::Success);
            Ok(Response::new(RaftMessage {
                data: crate::raft::codec::encode(&answer).unwrap(),
            }))
        }
        async fn install_snapshot(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            Err(Status::unimplemented("install_snapshot"))
        }
        async fn propose(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            Err(Status::unimplemented("propose"))
        }
        async fn lease(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            Err(Status::unimplemented("lease"))
        }
        async fn read_index(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            Err(Status::unimplemented("read_index"))
        }
    }

    /// A TCP proxy that can drop every byte, as a packet-dropping firewall does. A connection
    /// that lived through a cut stays dead after the heal (as a real one does for as long as
    /// TCP's retransmission backoff lasts); connections made after the heal work.
    struct Proxy {
        cut: AtomicBool,
        cuts: AtomicU64,
    }

    impl Proxy {
        async fn start(upstream: std::net::SocketAddr) -> (Arc<Proxy>, String) {
            let proxy = Arc::new(Proxy {
                cut: AtomicBool::new(false),
                cuts: AtomicU64::new(0),
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let p = proxy.clone();
            tokio::spawn(async move {
                while let Ok((down, _)) = listener.accept().await {
                    let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                        continue;
                    };
                    let born = p.cuts.load(Ordering::SeqCst);
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::spawn(pump(p.clone(), born, dr, uw));
                    tokio::spawn(pump(p.clone(), born, ur, dw));
                }
            });
            (proxy, addr)
        }

        fn cut(&self) {
            self.cuts.fetch_add(1, Ordering::SeqCst);
            self.cut.store(true, Ordering::SeqCst);
        }

        fn heal(&self) {
            self.cut.store(false, Ordering::SeqCst);
        }

        fn drops(&self, born: u64) -> bool {
            self.cut.load(Ordering::SeqCst) || self.cuts.load(Ordering::SeqCst) != born
        }
    }

    async fn pump(
        p: Arc<Proxy>,
        born: u64,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !p.drops(born) && to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    /// Serves `voter` as node 2 on `listener`, over TLS from `authority`.
    fn serve_as_node_2(voter: Voter, listener: tokio::net::TcpListener, authority: &crate::tls::pki::Authority) {
        let incoming = crate::tls::incoming(
            listener,
            Arc::new(authority.test_tls(2)),
            tokio::runtime::Handle::current(),
        );
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::raft_server::RaftServer::new(voter))
                .serve_with_incoming(incoming.nodes),
        );
    }

    fn vote_request() -> VoteRequest<NodeId> {
        VoteRequest::new(
            Vote::new(1, 1),
            Some(openraft::LogId::new(CommittedLeaderId::new(1, 1), 1)),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_channel_whose_calls_timed_out_is_replaced_once_the_network_heals() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        let authority = crate::tls::pki::Authority::ephemeral();
        let tls = |id| Arc::new(authority.test_tls(id));
        serve_as_node_2(Voter::default(), listener, &authority);
        let (proxy, addr) = Proxy::start(upstream).await;
        let mut network = Network {
            channels: Channels::new(tls(1)),
            links: Arc::new(Links::default()),
        };
        let mut peer = network.new_client(2, &BasicNode { addr }).await;
        let option = || RPCOption::new(Duration::from_millis(200));
        peer.vote(vote_request(), option())
            .await
            .expect("the peer answers before the cut");

        proxy.cut();
        for _ in 0..5 {
            let failed = peer.vote(vote_request(), option()).await;
            assert!(failed.is_err(), "no answer through the cut: {failed:?}");
        }
        proxy.heal();

        // Generous: the old cached channel stayed dead for its keepalive (10 s) plus the
        // keepalive's timeout (20 s).
        let healed = Instant::now();
        let recovered = loop {
            if peer.vote(vote_request(), option()).await.is_ok() {
                break true;
            }
            if healed.elapsed() > Duration::from_secs(8) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(recovered, "no call succeeded within 8 s of the heal");
        let stat = network.links.snapshot()[&2].clone();
        assert!(stat.tx_ok.unwrap() > stat.tx_err.as_ref().unwrap().0, "{stat:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_that_never_connected_says_so_and_one_cut_midway_does_not() {
        let authority = crate::tls::pki::Authority::ephemeral();
        let channels = Channels::new(Arc::new(authority.test_tls(1)));
        let vote = |ch| async move {
            let data = crate::raft::codec::encode(&vote_request()).unwrap();
            pb::raft_client::RaftClient::new(ch)
                .vote(pb::RaftMessage { data })
                .await
        };
        // Nobody listens there.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let refused = channels.call(&addr, Duration::from_secs(2), vote).await.unwrap_err();
        let why = crate::tls::never_connected(&refused);
        assert!(why.as_deref().is_some_and(|w| w.contains("tcp connect")), "{refused:?}");

        // Connected, then cut: the request may have reached the peer.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        serve_as_node_2(Voter::default(), listener, &authority);
        let (proxy, addr) = Proxy::start(upstream).await;
        channels
            .call(&addr, Duration::from_secs(2), vote)
            .await
            .expect("answered");
        proxy.cut();
        let lost = channels
            .call(&addr, Duration::from_millis(300), vote)
            .await
            .unwrap_err();
        assert_eq!(crate::tls::never_connected(&lost), None, "{lost:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_backlog_goes_as_several_appends_each_answered_for_what_it_carried() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let authority = crate::tls::pki::Authority::ephemeral();
        let voter = Voter::default();
        let appends = voter.appends.clone();
        serve_as_node_2(voter, listener, &authority);
        let mut network = Network {
            channels: Channels::new(Arc::new(authority.test_tls(1))),
            links: Arc::new(Links::default()),
        };
        let mut peer = network.new_client(2, &BasicNode { addr }).await;
        let entry = |index: u64, bytes: usize| super::super::Entry {
            log_id: openraft::LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Normal(crate::model::Command::RevokeCert {
                fingerprint: "f".repeat(bytes),
            }),
        };
        let append = |entries| AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries,
        };
        let option = || RPCOption::new(Duration::from_secs(5));

        // Ten entries of 300 KiB: the first three fit in the budget, and the answer says so.
        let backlog = (1..=10).map(|i| entry(i, 300 << 10)).collect();
        let answer = peer.append_entries(append(backlog), option()).await.unwrap();
        let third = openraft::LogId::new(CommittedLeaderId::new(1, 1), 3);
        assert_eq!(answer, AppendEntriesResponse::PartialSuccess(Some(third)));
        // One entry over the budget goes alone, whole; small backlogs go whole.
        let alone = peer
            .append_entries(append(vec![entry(1, 2 << 20)]), option())
            .await
            .unwrap();
        assert_eq!(alone, AppendEntriesResponse::Success);
        let small = (1..=50).map(|i| entry(i, 100)).collect();
        let whole = peer.append_entries(append(small), option()).await.unwrap();
        assert_eq!(whole, AppendEntriesResponse::Success);
        assert_eq!(*appends.lock().unwrap(), vec![3, 1, 50]);
    }
}
