//! TLS 1.3 on every TCP connection, both ways verified against the cluster CA.
//!
//! - The server presents its node certificate and the CA certificate. A client may present a
//!   certificate (nodes always do); one that does not chain to the CA, or is revoked, fails
//!   the handshake. A client without one (omctl with a token, a joining node) gets through the
//!   handshake and is then judged by its token.
//! - A client accepts a server whose certificate chains to the CA, names a node id and is not
//!   revoked. The host name is not checked: the CA is the cluster's own and issues only node
//!   certificates, so any of them proves "a member of this cluster"; the node it names is
//!   what matters, and peers know members by id, not by address.
//! - A joining node does not have the CA yet: it pins the CA fingerprint its join token
//!   carries, and accepts only a server whose chain ends in that CA.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

pub mod pki;

use pki::{fingerprint, node_id_of};

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; a connection beyond them is closed at once, so a flood of
/// unauthenticated connections costs bounded memory and never starves the accept loop.
pub const MAX_HANDSHAKES: usize = 256;
/// Open connections from cluster nodes (a certificate naming a node) at once. Apart from the
/// clients' so that no number of client connections can keep the nodes out.
pub const MAX_NODE_CONNECTIONS: usize = 64;
/// Open connections from everyone else (client certificates, tokens, nothing) at once; one
/// beyond is closed after its handshake.
pub const MAX_CLIENT_CONNECTIONS: usize = 512;
/// A client connection that sends nothing for this long is closed (nodes' connections carry
/// keepalive pings and are not timed out here).
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Fingerprints of revoked certificates, shared by the verifiers and the API.
pub type Revoked = Arc<RwLock<BTreeSet<String>>>;

fn revoked(set: &Revoked, der: &[u8]) -> bool {
    set.read().expect("revoked lock").contains(&fingerprint(der))
}

/// What a client trusts.
#[derive(Debug, Clone)]
pub enum Anchor {
    /// The cluster CA (DER).
    Ca(Vec<u8>),
    /// The fingerprint of a CA the server sends in its chain (joining).
    Pinned(String),
}

/// Checks a server's certificate against an anchor; never its host name (see the module).
#[derive(Debug)]
struct ServerVerifier {
    anchor: Anchor,
    revoked: Revoked,
    provider: Arc<CryptoProvider>,
}

fn tls_err(why: impl Into<String>) -> rustls::Error {
    rustls::Error::General(why.into())
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca: CertificateDer<'_> = match &self.anchor {
            Anchor::Ca(der) => CertificateDer::from(der.as_slice()),
            Anchor::Pinned(fp) => intermediates
                .iter()
                .find(|c| &fingerprint(c) == fp)
                .cloned()
                .ok_or_else(|| tls_err(format!("the server's CA is not the one the join token names ({fp})")))?,
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.into_owned())
            .map_err(|e| tls_err(format!("the cluster CA: {e}")))?;
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &roots,
            &[],
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if revoked(&self.revoked, end_entity) {
            return Err(tls_err("the server's certificate is revoked"));
        }
        if node_id_of(end_entity).is_none() {
            return Err(tls_err("the server's certificate names no node"));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls_err("TLS 1.2 is not spoken here"))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The CA's client verifier, refusing revoked certificates too.
#[derive(Debug)]
struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Revoked,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        if revoked(&self.revoked, end_entity) {
            return Err(tls_err("the client's certificate is revoked"));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A certificate and its key, as this end presents them.
pub struct Identity {
    /// The node certificate (DER).
    pub cert: Vec<u8>,
    /// PKCS#8 DER of the node's private key.
    pub key: Vec<u8>,
}

/// A client configuration trusting `anchor`, presenting `identity` if given.
pub fn client_config(
    anchor: Anchor,
    identity: Option<&Identity>,
    revoked: Revoked,
) -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(ServerVerifier {
        anchor,
        revoked,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(
            vec![CertificateDer::from(id.cert.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.clone())),
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// This node's TLS state: its identity, the CA and the revocation list. Replaced whole when
/// the node joins another cluster.
pub struct Tls {
    current: RwLock<Arc<Current>>,
    revoked: Revoked,
}

struct Current {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    cert: Vec<u8>,
}

impl Tls {
    /// TLS for a node holding `identity`, issued by the CA `ca` (DER).
    pub fn new(ca: Vec<u8>, identity: &Identity) -> Result<Tls, rustls::Error> {
        let revoked = Revoked::default();
        let current = Current::make(ca, identity, &revoked)?;
        Ok(Tls {
            current: RwLock::new(Arc::new(current)),
            revoked,
        })
    }

    /// Switches to another identity and CA (a join).
    pub fn replace(&self, ca: Vec<u8>, identity: &Identity) -> Result<(), rustls::Error> {
        self.revoked.write().expect("revoked lock").clear();
        let current = Current::make(ca, identity, &self.revoked)?;
        *self.current.write().expect("tls lock") = Arc::new(current);
        Ok(())
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.read().expect("tls lock").server.clone()
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current.read().expect("tls lock").client.clone()
    }

    /// This node's certificate (DER).
    pub fn cert(&self) -> Vec<u8> {
        self.current.read().expect("tls lock").cert.clone()
    }

    /// Whether the certificate with this fingerprint is revoked.
    pub fn is_revoked(&self, fp: &str) -> bool {
        self.revoked.read().expect("revoked lock").contains(fp)
    }

    /// Replaces the revocation list (from the replicated state).
    pub fn set_revoked(&self, set: &BTreeSet<String>) {
        let mut r = self.revoked.write().expect("revoked lock");
        if *r != *set {
            *r = set.clone();
        }
    }
}

impl Current {
    fn make(ca: Vec<u8>, identity: &Identity, revoked: &Revoked) -> Result<Current, rustls::Error> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.clone()))
            .map_err(|e| tls_err(format!("the cluster CA: {e}")))?;
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls_err(format!("client verifier: {e}")))?;
        let verifier = Arc::new(ClientVerifier {
            inner,
            revoked: revoked.clone(),
        });
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![
                    CertificateDer::from(identity.cert.clone()),
                    CertificateDer::from(ca.clone()),
                ],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone())),
            )?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let client = client_config(Anchor::Ca(ca.clone()), Some(identity), revoked.clone())?;
        Ok(Current {
            server: Arc::new(server),
            client: Arc::new(client),
            cert: identity.cert.clone(),
        })
    }
}

/// Who is at the other end of a served TLS connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The fingerprint of the client's certificate, verified in the handshake, if it gave one.
    pub fingerprint: Option<String>,
    /// The node id that certificate names.
    pub node: Option<crate::model::NodeId>,
    /// The role a client certificate names.
    pub client_role: Option<String>,
}

/// A served TLS connection, holding its connection slot until it is dropped.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: Peer,
    _slot: tokio::sync::OwnedSemaphorePermit,
    /// A client's: when it ends for want of traffic (reset by every byte read).
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Connected for TlsConn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let Some(idle) = self.idle.as_mut() else { return polled };
        match polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                idle.as_mut().reset(tokio::time::Instant::now() + CLIENT_IDLE_TIMEOUT);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if idle.as_mut().poll(cx).is_ready() => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no traffic for {CLIENT_IDLE_TIMEOUT:?}"),
            ))),
            other => other,
        }
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Served connections: the nodes' and everyone else's.
pub struct Incoming {
    pub nodes: tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>>,
    pub clients: tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>>,
}

/// Accepts connections on `listener` and completes their TLS handshakes concurrently (each
/// bounded by `HANDSHAKE_TIMEOUT`, at most `MAX_HANDSHAKES` at once), with the server
/// configuration current at each accept. Then each connection takes a slot of its class
/// (`MAX_NODE_CONNECTIONS` for nodes, `MAX_CLIENT_CONNECTIONS` for everyone else; none left:
/// closed) and a client's is closed after `CLIENT_IDLE_TIMEOUT` without traffic. Nodes' and
/// clients' connections come out apart, to be served apart.
/// The accept loop runs on the calling runtime; the handshakes, whose cryptography is the
/// costly part of a flood, on `handshakes`.
/// Ends, closing the listener, when both returned streams are dropped.
pub fn incoming(listener: TcpListener, tls: Arc<Tls>, handshakes: tokio::runtime::Handle) -> Incoming {
    let (node_tx, node_rx) = tokio::sync::mpsc::channel(16);
    let (client_tx, client_rx) = tokio::sync::mpsc::channel(64);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let nodes = Arc::new(tokio::sync::Semaphore::new(MAX_NODE_CONNECTIONS));
    let clients = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENT_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = async { node_tx.closed().await; client_tx.closed().await } => return,
            };
            let (tcp, addr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!("{addr}: {MAX_HANDSHAKES} TLS handshakes in progress: connection closed");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
            let (node_tx, client_tx) = (node_tx.clone(), client_tx.clone());
            let (nodes, clients) = (nodes.clone(), clients.clone());
            handshakes.spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first());
                        let peer = Peer {
                            fingerprint: cert.map(|c| fingerprint(c)),
                            node: cert.and_then(|c| node_id_of(c)),
                            client_role: cert.and_then(|c| pki::client_role_of(c)),
                        };
                        let (class, limit, tx) = match peer.node {
                            Some(_) => (nodes, MAX_NODE_CONNECTIONS, node_tx),
                            None => (clients, MAX_CLIENT_CONNECTIONS, client_tx),
                        };
                        let Ok(slot) = class.try_acquire_owned() else {
                            tracing::debug!("{addr}: {limit} connections of its class open: connection closed");
                            return;
                        };
                        let idle = peer
                            .node
                            .is_none()
                            .then(|| Box::pin(tokio::time::sleep(CLIENT_IDLE_TIMEOUT)));
                        let conn = TlsConn {
                            stream,
                            peer,
                            _slot: slot,
                            idle,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::debug!("TLS handshake with {addr} failed: {e}"),
                    Err(_) => tracing::debug!("TLS handshake with {addr} timed out"),
                }
            });
        }
    });
    Incoming {
        nodes: tokio_stream::wrappers::ReceiverStream::new(node_rx),
        clients: tokio_stream::wrappers::ReceiverStream::new(client_rx),
    }
}

/// Opens a TLS connection to the host and port of `uri`.
async fn dial(
    uri: tonic::codegen::http::Uri,
    config: Arc<ClientConfig>,
) -> std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(443);
    // Both errors are `NotConnected`: no request was sent (a write's caller may retry it).
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| NotConnected::io(e.kind(), format!("tcp connect to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    // The name only goes into SNI: the verifier checks the CA and the node id, not the name.
    let name = ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::try_from("omraft.invalid").expect("a valid name"));
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| NotConnected::io(e.kind(), format!("tls connect to {host}:{port}: {e}")))?;
    Ok(TokioIo::new(tls))
}

/// A connection that was never made (TCP or the TLS handshake failed): nothing was sent on it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotConnected(String);

impl NotConnected {
    fn io(kind: std::io::ErrorKind, why: String) -> std::io::Error {
        std::io::Error::new(kind, NotConnected(why))
    }
}

/// Why a failed call never reached its server (`NotConnected` somewhere in its causes), or
/// `None` when it may have: then what the call asked for may have happened.
pub fn never_connected(status: &tonic::Status) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = cause {
        if let Some(n) = e.downcast_ref::<NotConnected>() {
            return Some(n.0.clone());
        }
        let inner = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        if let Some(n) = inner.and_then(|i| i.downcast_ref::<NotConnected>()) {
            return Some(n.0.clone());
        }
        cause = e.source();
    }
    None
}

/// A lazily connected channel over TLS, with the client configuration `config()` gives at
/// each (re)connection.
pub fn channel(endpoint: Endpoint, config: impl Fn() -> Arc<ClientConfig> + Send + Sync + 'static) -> Channel {
    endpoint.connect_with_connector_lazy(tower::service_fn(move |uri| dial(uri, config())))
}

/// Connects once over TLS (a join, omctl), failing with the reason if the server cannot be
/// reached or verified.
pub async fn connect(endpoint: Endpoint, config: Arc<ClientConfig>) -> Result<Channel, tonic::transport::Error> {
    endpoint
        .connect_with_connector(tower::service_fn(move |uri| dial(uri, config.clone())))
        .await
}
