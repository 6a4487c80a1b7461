//! Leases: a node may start or keep a service only while the leader has recently confirmed,
//! with a quorum, that it is still the leader and that the node is in touch. Pure: every
//! function takes the current instant, so tests drive the clock.
//!
//! A node asks for a lease every `renew`; the leader grants it only after a quorum-confirmed
//! read and answers with the lease duration and its commit index. The lease runs from the
//! moment the node *sent* the request, for the duration, on the node's monotonic clock, and
//! counts only once the node applied the log up to that index (so a node back from a partition
//! first learns that its services moved).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Lease timing: cluster configuration `lease.renew`, `lease.duration`, `lease.drift`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    pub renew: Duration,
    pub duration: Duration,
    /// Allowance for clock rate differences, added by the leader before it moves anything.
    pub drift: Duration,
}

impl Default for LeaseConfig {
    fn default() -> LeaseConfig {
        LeaseConfig {
            renew: Duration::from_millis(300),
            duration: Duration::from_secs(3),
            drift: Duration::from_millis(500),
        }
    }
}

/// What the leader answers to a lease request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub duration_ms: u64,
    /// The leader's commit index when it granted: the node must have applied it.
    pub commit_index: u64,
}

/// This node's lease.
#[derive(Debug, Clone, Default)]
pub struct Lease {
    valid_until: Option<Instant>,
    min_applied: u64,
}

impl Lease {
    /// Records a grant for a request sent at `sent_at`. A late answer to an old request never
    /// shortens a lease a newer one gave.
    pub fn granted(&mut self, sent_at: Instant, grant: Grant) {
        let until = sent_at + Duration::from_millis(grant.duration_ms);
        if self.valid_until.is_none_or(|v| until > v) {
            self.valid_until = Some(until);
        }
        self.min_applied = self.min_applied.max(grant.commit_index);
    }

    /// Whether the node may run services now, having applied the log up to `applied`.
    pub fn is_valid(&self, now: Instant, applied: u64) -> bool {
        self.valid_until.is_some_and(|v| now < v) && applied >= self.min_applied
    }

    /// How long the lease still runs, if it does.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.valid_until
            .and_then(|v| v.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Forgets the lease (this node left the cluster it was granted by).
    pub fn revoke(&mut self) {
        *self = Lease::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Grant = Grant {
        duration_ms: 3000,
        commit_index: 10,
    };

    #[test]
    fn a_lease_runs_from_the_request_for_its_duration() {
        let t0 = Instant::now();
        let mut l = Lease::default();
        assert!(!l.is_valid(t0, 100), "no lease before the first grant");
        l.granted(t0, D);
        assert!(l.is_valid(t0 + Duration::from_millis(2999), 10));
        assert!(
            !l.is_valid(t0 + Duration::from_millis(3000), 10),
            "expired at sent + duration"
        );
        assert_eq!(l.remaining(t0 + Duration::from_secs(1)), Some(Duration::from_secs(2)));
        assert_eq!(l.remaining(t0 + Duration::from_secs(4)), None);
    }

    #[test]
    fn a_lease_counts_only_once_the_grant_index_is_applied() {
        let t0 = Instant::now();
        let mut l = Lease::default();
        l.granted(t0, D);
        assert!(!l.is_valid(t0, 9), "the node has not yet learned what the leader knew");
        assert!(l.is_valid(t0, 10));
    }

    #[test]
    fn a_late_answer_never_shortens_the_lease() {
        let t0 = Instant::now();
        let mut l = Lease::default();
        l.granted(t0 + Duration::from_secs(1), D);
        l.granted(t0, D);
        assert!(l.is_valid(t0 + Duration::from_millis(3500), 10));
        l.revoke();
        assert!(!l.is_valid(t0, 10));
    }
}
