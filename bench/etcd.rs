//! The etcd side of the commit bench: three etcd members on loopback ports in a temporary
//! directory (fsync on, as etcd always does), and writers that `Put` through etcd's gRPC KV
//! API, each on its own connection, at the same concurrency levels as omraft.
//!
//! The client is ours and minimal: the few messages the bench needs, declared by their field
//! numbers in etcd's `rpc.proto` (`etcdserverpb`), sent with tonic. An `etcd` binary is looked
//! for in OMRAFT_ETCD, then on the PATH (Debian's package `etcd-server`); without one the
//! commit bench says so and measures omraft alone. Dropping [`Etcd`] kills the members and
//! removes the directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(uint64, tag = "4")]
    pub leader: u64,
}

/// One unary call of etcd's gRPC API.
async fn unary<Req, Resp>(ch: Channel, path: &'static str, req: Req) -> Result<Resp, String>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.map_err(|e| format!("{path}: {e}"))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    grpc.unary(tonic::Request::new(req), PathAndQuery::from_static(path), codec)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{path}: {:?}: {}", s.code(), s.message()))
}

pub async fn put(ch: Channel, key: Vec<u8>, value: Vec<u8>) -> Result<PutResponse, String> {
    unary(ch, "/etcdserverpb.KV/Put", PutRequest { key, value }).await
}

pub async fn status(ch: Channel) -> Result<StatusResponse, String> {
    unary(ch, "/etcdserverpb.Maintenance/Status", StatusRequest {}).await
}

/// The `etcd` binary to compare with: OMRAFT_ETCD, else `etcd` on the PATH.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OMRAFT_ETCD") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("etcd"))
        .find(|p| p.is_file())
}

/// Three etcd members, their client URLs, and their directory.
pub struct Etcd {
    children: Vec<Child>,
    pub clients: Vec<String>,
    pub version: String,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts three members of a new cluster on free loopback ports.
    pub fn start(bin: &Path) -> Result<Etcd, String> {
        let dir = tempfile::Builder::new()
            .prefix("omraft-bench-etcd-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let ports = crate::harness::free_ports(6);
        let peer = |i: usize| format!("http://127.0.0.1:{}", ports[3 + i]);
        let clients: Vec<String> = (0..3).map(|i| format!("http://127.0.0.1:{}", ports[i])).collect();
        let initial = (0..3)
            .map(|i| format!("e{}={}", i + 1, peer(i)))
            .collect::<Vec<_>>()
            .join(",");
        let version = Command::new(bin)
            .arg("--version")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let mut etcd = Etcd {
            children: Vec::new(),
            clients,
            version,
            dir,
        };
        for i in 0..3 {
            let name = format!("e{}", i + 1);
            let log = std::fs::File::create(etcd.dir.path().join(format!("{name}.log")))
                .map_err(|e| format!("etcd log: {e}"))?;
            let child = Command::new(bin)
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(etcd.dir.path().join(&name))
                .args(["--listen-client-urls", &etcd.clients[i]])
                .args(["--advertise-client-urls", &etcd.clients[i]])
                .args(["--listen-peer-urls", &peer(i)])
                .args(["--initial-advertise-peer-urls", &peer(i)])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "omraft-bench"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("starting {}: {e}", bin.display()))?;
            etcd.children.push(child);
        }
        Ok(etcd)
    }

    /// Waits until a member leads and answers a write; returns the leader's client URL.
    pub async fn leader(&mut self) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            for (i, child) in self.children.iter_mut().enumerate() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("etcd member e{} exited: {status}", i + 1));
                }
            }
            for url in &self.clients {
                let Ok(ch) = Endpoint::from_shared(url.clone()).map_err(|e| e.to_string()) else {
                    continue;
                };
                let answer = async {
                    let ch = ch.connect().await.map_err(|e| e.to_string())?;
                    let st = status(ch.clone()).await?;
                    let me = st.header.map(|h| h.member_id).unwrap_or(0);
                    if st.leader == 0 || st.leader != me {
                        return Ok(None);
                    }
                    put(ch, b"bench/ready".to_vec(), b"1".to_vec()).await?;
                    Ok::<_, String>(Some(url.clone()))
                };
                match tokio::time::timeout(Duration::from_secs(2), answer).await {
                    Ok(Ok(Some(leader))) => return Ok(leader),
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => last = e,
                    Err(_) => last = format!("{url}: no answer within 2 s"),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "etcd elected no leader within 30 s ({last}); logs in {}",
            self.dir.path().display()
        ))
    }

    /// A follower's client URL (any member but `leader`).
    pub fn follower(&self, leader: &str) -> String {
        self.clients
            .iter()
            .find(|u| *u != leader)
            .expect("three members")
            .clone()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A connection per writer to `url`, each writing key `bench/b<i>` with a value the size of
/// omraft's config update.
pub async fn writers(url: &str, n: usize) -> Result<Vec<impl crate::runner::Writer>, String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let ch = Endpoint::from_shared(url.to_string())
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        out.push(move |i: u64| {
            let ch = ch.clone();
            async move {
                put(ch, format!("bench/b{i}").into_bytes(), b"type=lvm vg=data".to_vec())
                    .await
                    .map(drop)
            }
        });
    }
    Ok(out)
}
