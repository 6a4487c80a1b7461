//! `omctl events` and `omctl mon --watch`: the cluster's events, followed across lost
//! connections without a gap or a repeat.

use std::time::Duration;

use tonic::Code;

use super::{connect, mon_page, Cli, Failure, MonArgs, Output};
use crate::cli::render::Printer;
use crate::pb;

/// How long a follower waits before connecting again after losing the daemon.
const RECONNECT: Duration = Duration::from_secs(1);
/// Events arriving this close together give one redraw of `mon --watch`.
const SETTLE: Duration = Duration::from_millis(100);

/// A position in the cluster's events, and the stream that reads on from it.
pub struct Tail {
    /// The entry being read, and how many of its events were had.
    index: u64,
    seen: u32,
    follow: bool,
    stream: Option<tonic::Streaming<pb::Event>>,
    /// A lost connection was reported and not yet regained.
    lost: bool,
}

impl Tail {
    /// Events from log index `since` (0: the oldest the daemon keeps).
    pub fn new(since: u64, follow: bool) -> Tail {
        Tail {
            index: since,
            seen: 0,
            follow,
            stream: None,
            lost: false,
        }
    }

    /// The next event; `None` once the events end (without `follow`). Following, a lost
    /// connection is reported once on standard error and retried every second, resuming at
    /// the event after the last one had; events the daemon no longer keeps are an error.
    pub async fn next(&mut self, cli: &Cli) -> Result<Option<pb::Event>, Failure> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                match self.open(cli).await {
                    Ok(s) => {
                        if self.lost {
                            eprintln!("omctl: connected again; resuming at log index {}", self.index);
                            self.lost = false;
                        }
                        self.stream = Some(s);
                    }
                    Err(e) if self.follow && retriable(&e) => self.wait(&e).await,
                    Err(e) => return Err(e),
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(e)) => {
                    if e.index == self.index {
                        self.seen += 1;
                    } else {
                        self.index = e.index;
                        self.seen = 1;
                    }
                    return Ok(Some(e));
                }
                Ok(None) if !self.follow => return Ok(None),
                Ok(None) => {
                    self.stream = None;
                    self.wait(&super::user_error("the daemon ended the stream")).await;
                }
                Err(s) => {
                    self.stream = None;
                    let e = Failure::from(s.clone());
                    if !(self.follow && s.code() != Code::OutOfRange) {
                        return Err(e);
                    }
                    self.wait(&e).await;
                }
            }
        }
    }

    async fn open(&self, cli: &Cli) -> Result<tonic::Streaming<pb::Event>, Failure> {
        let mut c = connect(cli).await?;
        let req = pb::EventsRequest {
            since_index: self.index,
            seen: self.seen,
            follow: self.follow,
        };
        Ok(c.events(req).await?.into_inner())
    }

    async fn wait(&mut self, why: &Failure) {
        if !self.lost {
            eprintln!("omctl: lost the event stream: {}; retrying every second", why.message);
            self.lost = true;
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// Failures a follower waits out: the daemon unreachable or restarting, not a refusal.
fn retriable(e: &Failure) -> bool {
    !e.user
}

/// `omctl events`.
pub async fn events(cli: &Cli, since: u64, follow: bool, out: &mut Printer) -> Result<(), Failure> {
    let mut tail = Tail::new(since, follow);
    loop {
        let next = tokio::select! {
            next = tail.next(cli) => next?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(e) = next else { return Ok(()) };
        out.event(&e);
        out.flush().ok();
    }
}

/// `omctl mon --watch`: a redraw after each burst of events, and every `interval` without
/// one (what is not in the log: whether a node answers, its lease).
pub async fn watch_mon(cli: &Cli, args: &MonArgs, interval: Duration, out: &mut Printer) -> Result<(), Failure> {
    let mut c = connect(cli).await?;
    let mut tail: Option<Tail> = None;
    loop {
        let reply = mon_page(&mut c, args).await?;
        if cli.output == Output::Human {
            out.clear_screen();
        }
        out.mon(&reply);
        out.flush().ok();
        let t = tail.get_or_insert_with(|| Tail::new(reply.applied_index + 1, true));
        let failed = tokio::select! {
            next = t.next(cli) => {
                let mut failed = next.is_err();
                // Let a burst (a switch's phases) settle into one redraw.
                let settle = tokio::time::sleep(SETTLE);
                tokio::pin!(settle);
                while !failed {
                    tokio::select! {
                        _ = &mut settle => break,
                        more = t.next(cli) => failed = more.is_err(),
                    }
                }
                failed
            }
            _ = tokio::time::sleep(interval) => false,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        if failed {
            // Events the daemon no longer keeps: start over from the next page's index.
            tail = None;
        }
    }
}
