//! `Events`: this node's journal of applied entries (`raft::journal`), as a stream.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_stream::Stream;
use tonic::Status;

use crate::daemon::Node;
use crate::pb;
use crate::raft::journal::{Cursor, Stamped};

/// Event streams one node serves at once: each holds a task and a connection; a flood of
/// them is refused rather than served.
pub const MAX_STREAMS: usize = 64;
/// Events read from the journal, and queued to a client, at a time.
const BATCH: usize = 256;
/// How often a waiting stream checks that its node still runs.
const RECHECK: Duration = Duration::from_secs(1);

pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

pub fn to_pb(e: &Stamped) -> pb::Event {
    pb::Event {
        index: e.index,
        unix_ms: e.unix_ms,
        kind: e.event.kind.to_string(),
        service: e.event.service.as_ref().map(|p| p.to_string()).unwrap_or_default(),
        node: e.event.node.clone().unwrap_or_default(),
        peer: e.event.peer.clone().unwrap_or_default(),
        phase: e.event.phase.map(|p| p.to_string()).unwrap_or_default(),
        message: e.event.message.clone(),
    }
}

/// The stream `req` asks for, or why not (too many streams; events no longer kept).
pub fn stream(
    node: &Arc<Node>,
    streams: &Arc<Semaphore>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    req: pb::EventsRequest,
) -> Result<EventStream, Status> {
    let permit = streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| Status::resource_exhausted(format!("this node serves {MAX_STREAMS} event streams already")))?;
    let journal = node.member().sm.journal().clone();
    let mut cursor = match req.since_index {
        0 => Cursor {
            index: journal.first(),
            seen: 0,
        },
        index => Cursor { index, seen: req.seen },
    };
    // Refused before the stream begins, with the reason as the call's status.
    journal
        .read(cursor, 0)
        .map_err(|gone| Status::out_of_range(gone.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel(BATCH);
    let weak = Arc::downgrade(node);
    let mut applied = journal.watch();
    tokio::spawn(async move {
        let _permit = permit;
        // Ends (dropping the sender, which ends the stream) when the client leaves, the
        // server stops or the node does; a last status says why when it is not the client.
        let stopped = async {
            let _ = stopping.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        loop {
            let (events, next) = match journal.read(cursor, BATCH) {
                Ok(read) => read,
                Err(gone) => {
                    let why = format!("this stream fell behind: {gone}; resume from index {}", gone.first);
                    let _ = tx.try_send(Err(Status::out_of_range(why)));
                    return;
                }
            };
            cursor = next;
            let caught_up = events.len() < BATCH;
            for e in &events {
                tokio::select! {
                    sent = tx.send(Ok(to_pb(e))) => if sent.is_err() { return },
                    _ = &mut stopped => return,
                }
            }
            if caught_up && !req.follow {
                return;
            }
            if !caught_up {
                continue;
            }
            // Wait for the next applied entry.
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = &mut stopped => {
                        let _ = tx.try_send(Err(Status::unavailable("the daemon is stopping")));
                        return;
                    }
                    changed = tokio::time::timeout(RECHECK, applied.changed()) => {
                        if matches!(changed, Ok(Err(_))) {
                            return; // The journal is gone: the node left this cluster.
                        }
                        if Node::alive(&weak).is_none() {
                            let _ = tx.try_send(Err(Status::unavailable("the daemon is stopping")));
                            return;
                        }
                        if changed.is_ok() {
                            break;
                        }
                    }
                }
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}
