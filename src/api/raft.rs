//! Server side of the Raft transport: decodes openraft messages and hands them to the
//! current Raft instance. Every call needs a node certificate, and a message speaks only for
//! the node that certificate names: the leader of an AppendEntries or InstallSnapshot, the
//! candidate of a Vote, the node of a report. Terms are bounded, so a member cannot push the
//! cluster's term to where openraft's arithmetic overflows.

use std::sync::Arc;
use std::time::Instant;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::node_caller;
use crate::daemon::Node;
use crate::model::{Command, MAX_COMMAND_BYTES};
use crate::pb::{self, RaftMessage};
use crate::raft::{NodeId, TypeConfig};

pub struct RaftService {
    pub node: Arc<Node>,
}

/// The largest step a message may take the term from this node's: far beyond any election
/// history (one term per election timeout), far below overflow.
const MAX_TERM_STEP: u64 = 1 << 32;

/// The sending node's id and its message.
fn decode<T: DeserializeOwned>(req: Request<RaftMessage>) -> Result<(NodeId, T), Status> {
    let from = node_caller(&req)?;
    let msg = crate::raft::codec::decode(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))?;
    Ok((from, msg))
}

impl RaftService {
    /// Refuses a message whose vote is not `from`'s own or whose term leaps too far.
    fn check_vote(&self, from: NodeId, vote: &openraft::Vote<NodeId>, what: &str) -> Result<(), Status> {
        let claimed = vote.leader_id().voted_for();
        if claimed != Some(from) {
            tracing::warn!("refused {what} from node id {from} claiming to be node {claimed:?}");
            return Err(Status::permission_denied(format!(
                "node id {from} sent {what} as node {claimed:?}: a node speaks only for itself"
            )));
        }
        let term = vote.leader_id().term;
        let current = self.node.member().raft.metrics().borrow().current_term;
        if term > current.saturating_add(MAX_TERM_STEP) || term >= u64::MAX / 2 {
            tracing::warn!("refused {what} from node id {from} with term {term} (ours {current})");
            return Err(Status::invalid_argument(format!(
                "term {term} is out of range (this node is at term {current})"
            )));
        }
        Ok(())
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Response<RaftMessage>, Status> {
    let data = crate::raft::codec::encode(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { data }))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let (from, rpc): (_, AppendEntriesRequest<TypeConfig>) = decode(req)?;
        self.check_vote(from, &rpc.vote, "AppendEntries")?;
        let leader = from;
        // Before Raft sees it, so before it is answered: votes are held from here (`votes`).
        self.node.votes.heard_from_leader(Instant::now()).await;
        let res = self.node.member().raft.append_entries(rpc).await;
        if res.is_ok() {
            self.node.links.rx(leader);
        }
        encode(&res)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let (from, rpc): (_, VoteRequest<NodeId>) = decode(req)?;
        self.check_vote(from, &rpc.vote, "Vote")?;
        let raft = self.node.member().raft.clone();
        let granted = |r: &Result<openraft::raft::VoteResponse<NodeId>, _>| r.as_ref().is_ok_and(|r| r.vote_granted);
        match self.node.votes.vote(Instant::now(), raft.vote(rpc), granted).await {
            Ok(res) => encode(&res),
            Err(refused) => {
                tracing::debug!("vote for node id {from}: {refused}");
                Err(Status::failed_precondition(refused.to_string()))
            }
        }
    }

    async fn install_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let (from, rpc): (_, InstallSnapshotRequest<TypeConfig>) = decode(req)?;
        self.check_vote(from, &rpc.vote, "InstallSnapshot")?;
        let leader = from;
        let res = self.node.member().raft.install_snapshot(rpc).await;
        if res.is_ok() {
            self.node.links.rx(leader);
        }
        encode(&res)
    }

    async fn propose(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let size = req.get_ref().data.len();
        if size > MAX_COMMAND_BYTES {
            return Err(Status::invalid_argument(format!(
                "a proposal of {size} bytes: a command is at most {MAX_COMMAND_BYTES} bytes encoded"
            )));
        }
        let (from, cmd): (_, Command) = decode(req)?;
        if let Some(about) = cmd.reporting_node() {
            if about != from {
                tracing::warn!("refused a report about node id {about} from node id {from}");
                return Err(Status::permission_denied(format!(
                    "node id {from} may report only about itself, not node id {about}"
                )));
            }
        }
        encode(&self.node.propose_local(cmd).await)
    }

    async fn lease(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let (caller, from): (_, NodeId) = decode(req)?;
        if caller != from {
            return Err(Status::permission_denied(format!(
                "node id {caller} asked for node id {from}'s lease"
            )));
        }
        encode(&self.node.grant_lease(from).await)
    }

    async fn read_index(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        node_caller(&req)?;
        let res = match self.node.member().raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map(|l| l.index)),
            Err(e) => Err(e.to_string()),
        };
        encode(&res)
    }
}
