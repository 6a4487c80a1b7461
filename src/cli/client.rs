//! Connecting omctl to a daemon: the local unix socket or `http://HOST:PORT` with a token.

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
    #[error("--server {0:?}: expected unix:PATH or http://HOST:PORT")]
    BadServer(String),
    #[error("the token has characters a token never has")]
    BadToken,
    #[error("cannot reach the daemon at {0}: {1}")]
    Unreachable(String, String),
}

/// Connects to `server` (`unix:PATH` or `http://HOST:PORT`).
pub async fn connect(server: &str, token: Option<&str>) -> Result<Client, ConnectError> {
    let auth = match token {
        Some(t) => Some(
            format!("Bearer {}", t.trim())
                .parse()
                .map_err(|_| ConnectError::BadToken)?,
        ),
        None => None,
    };
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
    } else if server.starts_with("http://") {
        Endpoint::from_shared(server.to_string())
            .map_err(|_| ConnectError::BadServer(server.to_string()))?
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .map_err(unreachable)?
    } else {
        return Err(ConnectError::BadServer(server.to_string()));
    };
    Ok(ClusterClient::with_interceptor(channel, Auth(auth)).max_decoding_message_size(64 << 20))
}
