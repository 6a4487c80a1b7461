//! `omctl node drain` and `undrain`: maintenance of a node through the commands any operator
//! has (freeze, switch, live switch), one service at a time, each waited for and reported.
//!
//! Drain first finds, for every service placed on the node, the node it goes to (the first of
//! its other nodes that is provisioned, not frozen and not marked outdated); if any service
//! has none, it refuses with why for each and changes nothing. Otherwise it freezes the node
//! (so nothing is placed back on it), then switches each service away (live with `--live`:
//! a live switch refused stops the drain, it never falls back to stopping the guest) and
//! waits until every node shows the move. A drain that stops midway leaves the node frozen and
//! says what moved and what is left; running it again goes on.

use std::time::{Duration, Instant};

use super::client::Client;
use super::render::Printer;
use super::{user_error, Failure};
use crate::pb;

/// One service to move off the drained node.
struct Move {
    path: String,
    to: String,
    /// Started: moved by a (live) switch; stopped: only placed elsewhere.
    started: bool,
}

/// Where each service placed on `node` goes, or why one cannot go anywhere.
async fn plan(c: &mut Client, node: &str) -> Result<Vec<Move>, Failure> {
    let list = c
        .object_list(pb::ObjectListRequest {
            selector: "*/svc/*".into(),
        })
        .await?
        .into_inner();
    let mut moves = Vec::new();
    let mut stuck = Vec::new();
    for row in list.objects {
        let s = c
            .instance_status(pb::ObjectRef { path: row.path.clone() })
            .await?
            .into_inner();
        if s.placement != node {
            continue;
        }
        if !s.migration_phase.is_empty() {
            stuck.push(format!("{}: a switch is in progress ({})", s.path, s.migration_phase));
            continue;
        }
        let mut why = Vec::new();
        let to = s.instances.iter().filter(|i| i.node != node).find(|i| {
            let unfit = if i.node_frozen {
                Some("is frozen")
            } else if !i.provisioned {
                Some("has not provisioned it")
            } else if !i.outdated.is_empty() {
                Some("has an outdated disk")
            } else {
                None
            };
            if let Some(u) = unfit {
                why.push(format!("{} {u}", i.node));
            }
            unfit.is_none()
        });
        match to {
            Some(i) => moves.push(Move {
                path: s.path.clone(),
                to: i.node.clone(),
                started: s.started,
            }),
            None if why.is_empty() => stuck.push(format!("{}: it has no other node", s.path)),
            None => stuck.push(format!("{}: nowhere to go: {}", s.path, why.join(", "))),
        }
    }
    if !stuck.is_empty() {
        return Err(user_error(format!(
            "node {node} not drained, nothing changed: {}",
            stuck.join("; ")
        )));
    }
    Ok(moves)
}

/// Drains `node` (see the module's documentation); `time` bounds each move.
pub async fn drain(c: &mut Client, out: &mut Printer, node: &str, live: bool, time: Duration) -> Result<(), Failure> {
    let moves = plan(c, node).await?;
    c.node_freeze(pb::NodeFreezeRequest {
        node: node.into(),
        frozen: true,
    })
    .await
    .map_err(Failure::write)?;
    out.progress(&format!("node {node} frozen; {} services to move", moves.len()));
    let mut moved = Vec::new();
    for (n, m) in moves.iter().enumerate() {
        let how = match (m.started, live) {
            (true, true) => "live-switch",
            _ => "switch",
        };
        let t = Instant::now();
        let result = switch(c, m, how, time).await;
        let secs = t.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                out.progress(&format!("{}: {how} to {} done in {secs:.1} s", m.path, m.to));
                moved.push((m.path.clone(), m.to.clone(), how));
            }
            Err(e) => {
                let left: Vec<&str> = moves[n..].iter().map(|m| m.path.as_str()).collect();
                out.drained(node, &moved, &left);
                return Err(Failure {
                    user: e.user,
                    message: format!(
                        "{}: {how} to {}: {}; node {node} stays frozen, {} services moved, left: {} \
                         (run the drain again, or `omctl node undrain --node {node}`)",
                        m.path,
                        m.to,
                        e.message,
                        moved.len(),
                        left.join(", ")
                    ),
                });
            }
        }
    }
    out.drained(node, &moved, &[]);
    Ok(())
}

/// Commits one move and waits until every node shows it.
async fn switch(c: &mut Client, m: &Move, how: &str, time: Duration) -> Result<(), Failure> {
    c.object_action(pb::ObjectActionRequest {
        path: m.path.clone(),
        action: how.into(),
        node: m.to.clone(),
    })
    .await
    .map_err(Failure::write)?;
    let message = match super::object::wait_done(c, &m.path, how, time).await? {
        Some(s) if s.placement == m.to => return Ok(()),
        Some(s) => match s.last_migration_error.as_str() {
            "" => format!("it ended on {}", s.placement),
            e => format!("switch aborted: {e}"),
        },
        None => format!("not done on every node within {time:?}"),
    };
    Err(Failure { user: false, message })
}
