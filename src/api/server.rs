//! Serving the API: TCP with TLS 1.3 (Raft transport and Cluster API; a node certificate or a
//! token required) and the local unix socket (Cluster API, trusted, mode 0600).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tonic::transport::Server;
use tonic::{Request, Status};

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

const MAX_MESSAGE: usize = 64 << 20;

/// Serves both listeners until `shutdown` resolves.
pub async fn serve(
    node: Arc<Node>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let tcp_node = node.clone();
    let tcp_auth = move |mut req: Request<()>| -> Result<Request<()>, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let peer = req.extensions().get::<Peer>().cloned();
        let caller = identify(&tcp_node, peer.as_ref(), header.as_deref());
        req.extensions_mut().insert(caller);
        Ok(req)
    };
    let local = |mut req: Request<()>| -> Result<Request<()>, Status> {
        req.extensions_mut().insert(Caller::Local);
        Ok(req)
    };
    let raft = RaftServer::new(RaftService { node: node.clone() })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let cluster = || ClusterServer::new(ClusterService { node: node.clone() });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    // Keepalive pings close connections whose peer went silent (a cut network), as clients do.
    let tcp = Server::builder()
        .http2_keepalive_interval(Some(crate::raft::network::KEEPALIVE))
        .http2_keepalive_timeout(Some(crate::raft::network::KEEPALIVE_TIMEOUT))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            raft,
            tcp_auth.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            cluster(),
            tcp_auth,
        ))
        .serve_with_incoming_shutdown(
            crate::tls::incoming(listeners.tcp, node.tls.clone()),
            wait(stop_rx.clone()),
        );
    let unix = Server::builder()
        .add_service(tonic::service::interceptor::InterceptedService::new(cluster(), local))
        .serve_with_incoming_shutdown(super::local::trusted_incoming(listeners.unix), wait(stop_rx));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let (a, b) = tokio::join!(tcp, unix);
    let _ = std::fs::remove_file(&listeners.unix_path);
    a.and(b)
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
