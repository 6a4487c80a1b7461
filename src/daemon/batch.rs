//! Group commit: the writes waiting on the leader go into the log together.
//!
//! openraft 0.9 appends each `client_write` as an entry of its own and waits for that append's
//! fsync before it takes the next one: writes committed one fsync after another, however many
//! callers waited. Here every write of this node (its API's and the members' `Propose`s) goes
//! through one queue; a task takes whatever waits in it, up to `MAX_COMMANDS` commands and
//! `MAX_BYTES` encoded bytes, and writes it as one entry (`Command::Batch`, a lone command as
//! itself), with at most `IN_FLIGHT` entries appending, replicating or applying at once. A
//! caller alone never waits for company: an idle queue sends its first write at once.
//!
//! Each command of a batch is applied as it would be alone, in queue order, and answers its
//! own caller with its own response and the batch's log index. A failure of the entry is every
//! one of its callers' failure: not committed (`ForwardToLeader`) or unknown, as for one.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::model::{Command, Response};
use crate::raft::{NodeId, Raft};

/// The most commands in one entry.
pub const MAX_COMMANDS: usize = 256;
/// The most encoded bytes of commands in one entry, unless its first command alone is larger
/// (it then goes alone).
pub const MAX_BYTES: usize = 256 << 10;
/// Entries of this queue in the Raft pipeline at once: enough to keep the leader's append,
/// the followers' and the apply busy together, few enough that writes wait in the queue, and
/// so share an entry, while the log is busy.
pub const IN_FLIGHT: usize = 2;

/// A write's failure on this node, shared by every caller whose command was in the entry.
pub type WriteError = Arc<RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>;
/// The entry's log index and the command's own response, or why the entry failed.
pub type WriteResult = Result<(u64, Response), WriteError>;

struct Waiting {
    cmd: Command,
    bytes: usize,
    answer: oneshot::Sender<WriteResult>,
}

/// The queue of one Raft instance; the task serving it ends when the batcher is dropped.
pub struct Batcher {
    queue: mpsc::UnboundedSender<Waiting>,
}

impl Batcher {
    pub fn start(raft: Raft) -> Batcher {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(serve(raft, rx));
        Batcher { queue }
    }

    /// Commits `cmd` in the next entry this node writes. Dropping the future leaves the
    /// command in its entry, as dropping a `client_write` does.
    pub async fn write(&self, cmd: Command) -> WriteResult {
        let bytes = crate::raft::codec::encode(&cmd).map_or(usize::MAX, |e| e.len());
        let (answer, rx) = oneshot::channel();
        let stopped = || Arc::new(RaftError::Fatal(openraft::error::Fatal::Stopped));
        if self.queue.send(Waiting { cmd, bytes, answer }).is_err() {
            return Err(stopped());
        }
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}

async fn serve(raft: Raft, mut rx: mpsc::UnboundedReceiver<Waiting>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carried: Option<Waiting> = None;
    loop {
        // A slot first: while the pipeline is full, writes gather in the queue.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(w) => w,
            None => match rx.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_COMMANDS {
            let Ok(next) = rx.try_recv() else { break };
            if bytes.saturating_add(next.bytes) > MAX_BYTES {
                carried = Some(next);
                break;
            }
            bytes += next.bytes;
            batch.push(next);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(slot);
        });
    }
}

async fn commit(raft: &Raft, mut batch: Vec<Waiting>) {
    if batch.len() == 1 {
        let w = batch.pop().expect("one");
        let r = raft.client_write(w.cmd).await;
        let _ = w.answer.send(r.map(|r| (r.log_id.index, r.data)).map_err(Arc::new));
        return;
    }
    let (cmds, answers): (Vec<Command>, Vec<_>) = batch.into_iter().map(|w| (w.cmd, w.answer)).unzip();
    let n = cmds.len();
    match raft.client_write(Command::Batch(cmds)).await {
        Ok(r) => {
            let index = r.log_id.index;
            let responses = match r.data {
                Response::Batch(rs) if rs.len() == n => rs,
                // Not what applying a batch gives: every caller learns it as it came.
                other => vec![other; n],
            };
            for (answer, response) in answers.into_iter().zip(responses) {
                let _ = answer.send(Ok((index, response)));
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for answer in answers {
                let _ = answer.send(Err(e.clone()));
            }
        }
    }
}
