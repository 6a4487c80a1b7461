//! The vote hold: a node refuses to vote for `HOLD` after it last heard from a leader (an
//! AppendEntries arrived) or, as the leader, last had a lease grant confirmed by a quorum.
//!
//! What it buys: a leader new in a term may count its wait for its predecessors' leases from
//! `hold` before its election rather than from the election (`window`). Every lease was granted
//! after a quorum confirmed the grantor's leadership, the node's request came before the
//! confirming heartbeats went out, and every confirming quorum shares a voter with the quorum
//! that elected the new leader. That voter voted at least `HOLD` after it acknowledged the
//! heartbeat (this hold, on every node, the old leader included; openraft 0.9 exempts the
//! leader from its own rule), or, when it is the new leader itself, stood at least an election
//! timeout plus `election_timeout_max` after it last heard from the leader (openraft's rule).
//! So every lease granted before the election began at least `window` before it.
//!
//! The check and the vote happen under one lock, and a grant counts only if no vote was given
//! between the moment its confirmation began and the moment it is recorded: a vote given in
//! between would not have seen that grant's confirmation.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// How long a node refuses votes after it last heard from a leader. At most
/// `election_timeout_max` of the default timing, so that elections after a leader's loss are
/// not slowed: voters stop hearing from a dead leader when candidates do, and a candidate
/// stands no sooner than `election_timeout_max` plus an election timeout after that.
pub const HOLD: Duration = Duration::from_millis(450);

#[derive(Debug, Default)]
pub struct VoteHold {
    inner: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// The last AppendEntries received, or the last lease grant this node confirmed.
    contact: Option<Instant>,
    /// The last lease grant this node confirmed as the leader.
    confirmed: Option<Instant>,
    /// Votes given so far.
    given: u64,
}

/// Why a vote was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub ago: Duration,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "vote refused: this node heard from a leader {} ms ago (it votes {} ms after)",
            self.ago.as_millis(),
            HOLD.as_millis()
        )
    }
}

impl VoteHold {
    /// An AppendEntries arrived: called before it is handed to Raft (so before it is answered).
    pub async fn heard_from_leader(&self, now: Instant) {
        self.inner.lock().await.contact = Some(now);
    }

    /// Taken before a lease grant's quorum confirmation begins; see `confirmed`.
    pub async fn epoch(&self) -> u64 {
        self.inner.lock().await.given
    }

    /// A quorum confirmed this node's leadership for a grant whose confirmation began at
    /// `epoch`: records the confirmation and says whether the grant may count (no vote was
    /// given meanwhile).
    pub async fn confirmed(&self, epoch: u64, now: Instant) -> bool {
        let mut held = self.inner.lock().await;
        if held.given != epoch {
            return false;
        }
        held.contact = Some(now);
        held.confirmed = Some(now);
        true
    }

    /// When this node last had a grant confirmed as the leader.
    pub async fn last_confirmed(&self) -> Option<Instant> {
        self.inner.lock().await.confirmed
    }

    /// Runs `vote` (the candidate's request handed to Raft) unless this node heard from a
    /// leader less than `HOLD` ago; `granted` says whether Raft gave the vote. The lock is held
    /// throughout, so no contact or confirmation slips between the check and the vote.
    pub async fn vote<T>(
        &self,
        now: Instant,
        vote: impl std::future::Future<Output = T>,
        granted: impl FnOnce(&T) -> bool,
    ) -> Result<T, Refused> {
        let mut held = self.inner.lock().await;
        if let Some(ago) = held
            .contact
            .map(|c| now.saturating_duration_since(c))
            .filter(|ago| *ago < HOLD)
        {
            return Err(Refused { ago });
        }
        let out = vote.await;
        if granted(&out) {
            held.given += 1;
        }
        Ok(out)
    }
}

/// How long before its election a new leader may count its wait for earlier leases from:
/// `HOLD`, or less when this node's own timing stands sooner (openraft's candidate waits
/// `election_timeout_max` plus at least `election_timeout_min` after it last heard a leader).
pub fn window(election_min: Duration, election_max: Duration) -> Duration {
    HOLD.min(election_min + election_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn votes(granted: bool) -> bool {
        granted
    }

    #[tokio::test]
    async fn a_node_refuses_votes_for_the_hold_after_hearing_from_a_leader() {
        let hold = VoteHold::default();
        let t0 = Instant::now();
        assert_eq!(
            hold.vote(t0, votes(true), |g| *g).await,
            Ok(true),
            "never heard from a leader: votes"
        );
        hold.heard_from_leader(t0).await;
        let refused = hold.vote(t0 + HOLD / 2, votes(true), |g| *g).await.unwrap_err();
        assert!(refused.to_string().contains("vote refused"), "{refused}");
        assert_eq!(hold.vote(t0 + HOLD, votes(true), |g| *g).await, Ok(true));
    }

    #[tokio::test]
    async fn a_grant_confirmed_across_a_vote_does_not_count_and_a_counted_one_holds_votes() {
        let hold = VoteHold::default();
        let t0 = Instant::now();
        let epoch = hold.epoch().await;
        // A vote given while the confirmation ran: the grant does not count.
        assert_eq!(hold.vote(t0, votes(true), |g| *g).await, Ok(true));
        assert!(!hold.confirmed(epoch, t0).await);
        assert_eq!(hold.last_confirmed().await, None);
        // A vote Raft refused does not void a grant.
        let epoch = hold.epoch().await;
        assert_eq!(hold.vote(t0, votes(false), |g| *g).await, Ok(false));
        assert!(hold.confirmed(epoch, t0).await);
        assert_eq!(hold.last_confirmed().await, Some(t0));
        // The confirmed grant holds votes as a leader's message does.
        assert!(hold.vote(t0 + HOLD / 2, votes(true), |g| *g).await.is_err());
        assert!(hold.vote(t0 + HOLD, votes(true), |g| *g).await.is_ok());
    }

    #[test]
    fn the_window_never_exceeds_what_a_candidate_waits() {
        let ms = Duration::from_millis;
        assert_eq!(window(ms(300), ms(450)), HOLD);
        assert_eq!(window(ms(100), ms(150)), ms(250));
    }
}
