//! Connecting omctl to a daemon: the local unix socket, or `https://HOST:PORT` over TLS
//! verified against the cluster CA, with a token.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::pb::cluster_client::ClusterClient;

/// The client type every command uses.
pub type Client = ClusterClient<InterceptedService<Channel, Auth>>;

/// Attaches the bearer token, if any.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    }
}

/// Why omctl could not reach the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("--server {0:?}: expected unix:PATH or https://HOST:PORT")]
    BadServer(String),
    #[error("--server {0}: daemons serve TCP over TLS only: use https://, with --ca")]
    Plaintext(String),
    #[error("--server {0}: give the cluster CA with --ca FILE (a copy of any node's DATA_DIR/tls/ca.crt)")]
    NoCa(String),
    #[error("--ca {0}: {1}")]
    BadCa(String, String),
    #[error("--cert {0}: {1}")]
    BadCert(String, String),
    #[error("the token has characters a token never has")]
    BadToken,
    #[error("cannot reach the daemon at {0}: {1}")]
    Unreachable(String, String),
}

/// Connects to `server` (`unix:PATH` or `https://HOST:PORT`, verified against the CA in the
/// PEM file `ca`).
pub async fn connect(
    server: &str,
    token: Option<&str>,
    ca: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
) -> Result<Client, ConnectError> {
    let auth = auth(token)?;
    let channel = channel(server, ca, cert).await?;
    Ok(ClusterClient::with_interceptor(channel, auth).max_decoding_message_size(64 << 20))
}

/// The interceptor giving `token` to every call (nothing without one).
pub fn auth(token: Option<&str>) -> Result<Auth, ConnectError> {
    match token {
        Some(t) => Ok(Auth(Some(
            format!("Bearer {}", t.trim())
                .parse()
                .map_err(|_| ConnectError::BadToken)?,
        ))),
        None => Ok(Auth(None)),
    }
}

/// A connection to `server`, for any of its gRPC services (`connect` for the cluster's).
pub async fn channel(
    server: &str,
    ca: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
) -> Result<Channel, ConnectError> {
    let unreachable = |e: tonic::transport::Error| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            let s_text = s.to_string();
            if !msg.contains(&s_text) {
                msg = format!("{msg}: {s_text}");
            }
            src = s.source();
        }
        ConnectError::Unreachable(server.to_string(), msg)
    };
    let channel = if let Some(path) = server.strip_prefix("unix:") {
        let path = path.to_string();
        Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
            }))
            .await
            .map_err(unreachable)?
    } else if let Some(hostport) = server.strip_prefix("https://") {
        let ca = ca.ok_or_else(|| ConnectError::NoCa(server.to_string()))?;
        let bad_ca = |why: String| ConnectError::BadCa(ca.display().to_string(), why);
        let pem = std::fs::read_to_string(ca).map_err(|e| bad_ca(e.to_string()))?;
        let der = crate::tls::pki::pem_to_der(&pem).map_err(|e| bad_ca(e.to_string()))?;
        let identity = cert.map(load_client_cert).transpose()?;
        let config = crate::tls::client_config(crate::tls::Anchor::Ca(der), identity.as_ref(), Default::default())
            .map_err(|e| bad_ca(e.to_string()))?;
        let endpoint = Endpoint::from_shared(format!("http://{}", hostport.trim_end_matches('/')))
            .map_err(|_| ConnectError::BadServer(server.to_string()))?
            .connect_timeout(Duration::from_secs(3))
            // Pings keep a quiet stream (`events --follow`) alive: the daemon closes a
            // client connection that sends nothing for a minute.
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        crate::tls::connect(endpoint, std::sync::Arc::new(config))
            .await
            .map_err(unreachable)?
    } else if server.starts_with("http://") {
        return Err(ConnectError::Plaintext(server.to_string()));
    } else {
        return Err(ConnectError::BadServer(server.to_string()));
    };
    Ok(channel)
}

/// The client certificate in `dir` (client.key, client.crt).
fn load_client_cert(dir: &std::path::Path) -> Result<crate::tls::Identity, ConnectError> {
    let bad = |why: String| ConnectError::BadCert(dir.display().to_string(), why);
    let key = std::fs::read_to_string(dir.join("client.key")).map_err(|e| bad(format!("client.key: {e}")))?;
    let key = crate::tls::pki::NodeKey::from_pem(&key).map_err(|e| bad(format!("client.key: {e}")))?;
    let cert = std::fs::read_to_string(dir.join("client.crt")).map_err(|e| bad(format!("client.crt: {e}")))?;
    let cert = crate::tls::pki::pem_to_der(&cert).map_err(|e| bad(format!("client.crt: {e}")))?;
    Ok(crate::tls::Identity { cert, key: key.pkcs8() })
}

/// Writes a client certificate, its key (mode 0600) and the CA to `dir`.
pub fn save_client_cert(
    dir: &std::path::Path,
    key: &crate::tls::pki::NodeKey,
    cert: &[u8],
    ca: &[u8],
) -> Result<(), ConnectError> {
    use crate::tls::pki::{der_to_pem, write_file};
    let bad = |e: crate::tls::pki::PkiError| ConnectError::BadCert(dir.display().to_string(), e.to_string());
    write_file(&dir.join("client.key"), key.pem().as_bytes(), 0o600).map_err(bad)?;
    write_file(&dir.join("client.crt"), der_to_pem(cert).as_bytes(), 0o644).map_err(bad)?;
    write_file(&dir.join("ca.crt"), der_to_pem(ca).as_bytes(), 0o644).map_err(bad)
}
