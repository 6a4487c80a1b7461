//! Server side of the Raft transport: decodes openraft messages and hands them to the
//! current Raft instance. Every call needs the node credential.

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::{authorize, Access};
use crate::daemon::Node;
use crate::model::Command;
use crate::pb::{self, RaftMessage};
use crate::raft::{NodeId, TypeConfig};

pub struct RaftService {
    pub node: Arc<Node>,
}

fn decode<T: DeserializeOwned>(req: Request<RaftMessage>) -> Result<T, Status> {
    authorize(&req, Access::Node)?;
    serde_json::from_slice(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Response<RaftMessage>, Status> {
    let data = serde_json::to_vec(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { data }))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req)?;
        let leader: NodeId = rpc.vote.leader_id().voted_for().unwrap_or_default();
        let res = self.node.member().raft.append_entries(rpc).await;
        if res.is_ok() {
            self.node.links.rx(leader);
        }
        encode(&res)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<NodeId> = decode(req)?;
        encode(&self.node.member().raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req)?;
        let leader: NodeId = rpc.vote.leader_id().voted_for().unwrap_or_default();
        let res = self.node.member().raft.install_snapshot(rpc).await;
        if res.is_ok() {
            self.node.links.rx(leader);
        }
        encode(&res)
    }

    async fn propose(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let cmd: Command = decode(req)?;
        encode(&self.node.propose_local(cmd).await)
    }

    async fn lease(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let from: NodeId = decode(req)?;
        encode(&self.node.grant_lease(from).await)
    }

    async fn read_index(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        authorize(&req, Access::Node)?;
        let res = match self.node.member().raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map(|l| l.index)),
            Err(e) => Err(e.to_string()),
        };
        encode(&res)
    }
}
