//! Serving the API: TCP with TLS 1.3 (Raft transport and Cluster API; a node certificate or a
//! token required, nodes and clients served apart) and the local unix socket (Cluster API,
//! trusted, mode 0600).

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::{Request, Status};
use tonic_health::ServingStatus;

use super::auth::{self, unix_now, Caller};
use super::cluster::ClusterService;
use super::raft::RaftService;
use crate::daemon::Node;
use crate::pb::cluster_server::ClusterServer;
use crate::pb::raft_server::RaftServer;
use crate::tls::Peer;

/// Bound listeners, ready to serve.
pub struct Listeners {
    pub tcp: TcpListener,
    pub unix: UnixListener,
    pub unix_path: PathBuf,
}

/// The largest Raft message, from nodes only.
const NODE_MESSAGE: usize = 64 << 20;
/// The largest message anyone else may send: a key's largest value (1 MiB) and its request.
pub const CLIENT_MESSAGE: usize = 2 << 20;
/// Requests one client connection may have in progress; more wait for one to end.
const CLIENT_CONCURRENCY: usize = 16;
/// HTTP/2 streams a client may open at once on one connection.
const CLIENT_STREAMS: u32 = 32;
/// The longest a client's request may run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest header block a request may carry (its token and gRPC's headers fit easily).
const MAX_HEADERS: u32 = 16 << 10;
/// Worker threads of the client runtime (TLS handshakes and clients' requests).
const CLIENT_THREADS: usize = 2;
/// How much lower than the daemon's own the client runtime's threads are scheduled.
const CLIENT_NICENESS: i32 = 10;

/// The client runtime, shut down without waiting when dropped (even inside the daemon's
/// runtime, where a runtime may not be dropped).
struct ClientRuntime(Option<tokio::runtime::Runtime>);

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Threads of the client runtime run at a lower priority: under a flood of connections the
/// kernel gives the daemon's own threads (Raft, the lease and the watchdog) the CPU first.
fn lower_priority() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), CLIENT_NICENESS) {
        tracing::warn!("lowering the priority of a client thread: {e}");
    }
}

/// Serves both listeners until `shutdown` resolves.
///
/// Over TCP, nodes and clients are served apart (`tls::incoming` sorts connections by the
/// certificate they present): nodes on the daemon's runtime, with the Raft service and large
/// messages; everyone else on a runtime of its own whose threads run at a lower priority,
/// where the TLS handshakes happen too, with small messages, a limit of requests per
/// connection and a request timeout (and the Raft service only to refuse it). Credentials are checked from the
/// headers, before a request's body is read: a caller without one never gets its body
/// decoded. A flood of connections or requests thus costs the client runtime and never
/// delays the loops that keep the node's lease and pet its watchdog.
pub async fn serve(
    node: Arc<Node>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let clients_rt = ClientRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(CLIENT_THREADS)
            .thread_name("omd-clients")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?,
    ));
    let handle = clients_rt.0.as_ref().expect("built").handle().clone();
    let incoming = crate::tls::incoming(listeners.tcp, node.tls.clone(), handle.clone());

    let tcp_node = node.clone();
    let identified = move |req: &Request<()>| -> Caller {
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let peer = req.extensions().get::<Peer>();
        identify(&tcp_node, peer, header)
    };
    let any_caller = {
        let identified = identified.clone();
        move |mut req: Request<()>| -> Result<Request<()>, Status> {
            let caller = identified(&req);
            if let Caller::Anonymous(why) = &caller {
                return Err(Status::unauthenticated(format!("credential refused: {why}")));
            }
            req.extensions_mut().insert(caller);
            Ok(req)
        }
    };
    let nodes_only = move |mut req: Request<()>| -> Result<Request<()>, Status> {
        match identified(&req) {
            caller @ Caller::Node(_) => {
                req.extensions_mut().insert(caller);
                Ok(req)
            }
            Caller::Anonymous(why) => Err(Status::unauthenticated(format!("credential refused: {why}"))),
            _ => Err(Status::permission_denied("only cluster nodes may call this")),
        }
    };
    let local = |mut req: Request<()>| -> Result<Request<()>, Status> {
        req.extensions_mut().insert(Caller::Local);
        Ok(req)
    };
    let raft = RaftServer::new(RaftService { node: node.clone() })
        .max_decoding_message_size(NODE_MESSAGE)
        .max_encoding_message_size(NODE_MESSAGE);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let streams = Arc::new(tokio::sync::Semaphore::new(super::events::MAX_STREAMS));
    let cluster = || {
        ClusterServer::new(ClusterService {
            node: node.clone(),
            streams: streams.clone(),
            stopping: stop_rx.clone(),
        })
        .max_decoding_message_size(CLIENT_MESSAGE)
        .max_encoding_message_size(NODE_MESSAGE)
    };

    // Standard gRPC tooling: the health service ("" while serving; the Cluster service while
    // this node is in touch with a quorum) and reflection, to clients and the local socket,
    // behind the same credentials as the API.
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("the descriptor set built into omd is valid")
    };
    let health_watch = tokio::spawn(watch_health(Arc::downgrade(&node), health.clone()));

    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    // Keepalive pings close connections whose peer went silent (a cut network), as clients do.
    let nodes = Server::builder()
        .http2_keepalive_interval(Some(crate::raft::network::KEEPALIVE))
        .http2_keepalive_timeout(Some(crate::raft::network::KEEPALIVE_TIMEOUT))
        .http2_max_header_list_size(Some(MAX_HEADERS))
        .add_service(InterceptedService::new(raft, nodes_only.clone()))
        .add_service(InterceptedService::new(cluster(), any_caller.clone()))
        .serve_with_incoming_shutdown(incoming.nodes, wait(stop_rx.clone()));
    // No keepalive pings here: a client connection without traffic of its own times out
    // (`tls::CLIENT_IDLE_TIMEOUT`).
    let clients = Server::builder()
        .concurrency_limit_per_connection(CLIENT_CONCURRENCY)
        .max_concurrent_streams(Some(CLIENT_STREAMS))
        .timeout(CLIENT_TIMEOUT)
        .http2_max_header_list_size(Some(MAX_HEADERS))
        // Only to refuse a client its calls with the reason, from the headers.
        .add_service(InterceptedService::new(
            RaftServer::new(RaftService { node: node.clone() }).max_decoding_message_size(CLIENT_MESSAGE),
            nodes_only,
        ))
        .add_service(InterceptedService::new(cluster(), any_caller.clone()))
        .add_service(InterceptedService::new(health_service.clone(), any_caller.clone()))
        .add_service(InterceptedService::new(reflection(), any_caller))
        .serve_with_incoming_shutdown(incoming.clients, wait(stop_rx.clone()));
    let clients = handle.spawn(clients);
    let unix = Server::builder()
        .add_service(InterceptedService::new(cluster(), local))
        .add_service(InterceptedService::new(health_service, local))
        .add_service(InterceptedService::new(reflection(), local))
        .serve_with_incoming_shutdown(super::local::trusted_incoming(listeners.unix), wait(stop_rx));
    tokio::spawn(async move {
        shutdown.await;
        health_watch.abort();
        health.set_service_status("", ServingStatus::NotServing).await;
        health
            .set_service_status(CLUSTER_SERVICE, ServingStatus::NotServing)
            .await;
        let _ = stop_tx.send(true);
    });
    let (a, b, c) = tokio::join!(nodes, clients, unix);
    let _ = std::fs::remove_file(&listeners.unix_path);
    drop(clients_rt);
    let b = b.map_err(std::io::Error::other)?;
    a.and(b).and(c).map_err(std::io::Error::other)
}

/// The `Cluster` service's name, as the health service reports it.
const CLUSTER_SERVICE: &str = <ClusterServer<ClusterService> as tonic::server::NamedService>::NAME;

/// Keeps the `Cluster` service's health status at SERVING while the node is in touch with a
/// quorum (`Node::in_quorum`), NOT_SERVING otherwise; every half second, until the node goes.
async fn watch_health(node: Weak<Node>, health: tonic_health::server::HealthReporter) {
    let mut last = None;
    while let Some(serving) = node.upgrade().map(|n| n.in_quorum()) {
        if last != Some(serving) {
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(CLUSTER_SERVICE, status).await;
            last = Some(serving);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Who the caller of a TCP request is: its token if it gives one, else the node or client role
/// its certificate names. A revoked certificate is refused here too, for connections made
/// before the revocation (the TLS layer's copy of the list, which `keep_revocations` keeps
/// within half a second of the applied state). Only a token needs the state (its signing key):
/// a Raft call reads nothing.
fn identify(node: &Node, peer: Option<&Peer>, header: Option<&str>) -> Caller {
    if let Some(fp) = peer.and_then(|p| p.fingerprint.as_deref()) {
        if node.tls.is_revoked(fp) {
            return Caller::Anonymous(format!("certificate {fp} is revoked"));
        }
    }
    let (id, role) = (peer.and_then(|p| p.node), peer.and_then(|p| p.client_role.as_deref()));
    match header {
        Some(_) => node.read(|d| auth::caller(header, id, role, d.state.trust.as_ref(), unix_now())),
        None => auth::caller(None, id, role, None, unix_now()),
    }
}
