//! Leases: a node may start or keep a service only while the leader has recently confirmed,
//! with a quorum, that it is still the leader and that the node is in touch. Pure: every
//! function takes the current instant, so tests drive the clock.
//!
//! A node asks for a lease every `renew`; the leader grants it only after a quorum-confirmed
//! read and answers with the lease duration and its commit index. The lease runs from the
//! moment the node *sent* the request, for the duration, on the node's monotonic clock, and
//! counts only once the node applied the log up to that index (so a node back from a partition
//! first learns that its services moved).

use std::collections::BTreeMap;
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
            renew: Duration::from_millis(200),
            duration: Duration::from_millis(2400),
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

/// This node's lease: the grants it holds, each counting once the node applied the commit
/// index it names.
///
/// A newer grant names a newer commit index than the node may have applied yet; it never
/// takes away what an older grant, whose index the node applied, still gives: the newer answer
/// could as well have been late or lost. (Counting only the newest grant made a follower whose
/// apply trailed a busy leader's commits read its lease as lost, and stop its services, while
/// every grant it held said otherwise.)
#[derive(Debug, Clone, Default)]
pub struct Lease {
    /// (commit index it requires, until when it runs), none of them outdone by another (a
    /// lower or equal index running as long or longer); at most `MAX_GRANTS`.
    grants: Vec<(u64, Instant)>,
}

/// The most grants a lease keeps: more than a lease's duration holds renewals.
const MAX_GRANTS: usize = 64;

impl Lease {
    /// Records a grant for a request sent at `sent_at`. A late answer to an old request never
    /// shortens a lease a newer one gave.
    pub fn granted(&mut self, sent_at: Instant, grant: Grant) {
        let entry = (grant.commit_index, sent_at + Duration::from_millis(grant.duration_ms));
        let outdone = |a: &(u64, Instant), b: &(u64, Instant)| b.0 <= a.0 && b.1 >= a.1;
        if self.grants.iter().any(|g| outdone(&entry, g)) {
            return;
        }
        // What ran out before this request was sent can never count again.
        self.grants.retain(|g| !outdone(g, &entry) && g.1 > sent_at);
        self.grants.push(entry);
        if self.grants.len() > MAX_GRANTS {
            // The one that runs out first goes: the lease can only be shorter for it.
            if let Some(first) = (0..self.grants.len()).min_by_key(|&i| self.grants[i].1) {
                self.grants.remove(first);
            }
        }
    }

    /// Whether the node may run services now, having applied the log up to `applied`: some
    /// grant whose index it applied still runs.
    pub fn is_valid(&self, now: Instant, applied: u64) -> bool {
        self.grants
            .iter()
            .any(|&(index, until)| index <= applied && now < until)
    }

    /// How long the lease still runs, if it does: as long as the leader counts on it, by its
    /// latest grant, applied or not.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.grants
            .iter()
            .map(|&(_, until)| until)
            .max()
            .and_then(|v| v.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Forgets the lease (this node left the cluster it was granted by).
    pub fn revoke(&mut self) {
        *self = Lease::default();
    }
}

/// The leases a leader granted, by node id, in the term it led when it granted them. A leader
/// moves a service off a node only once the lease it granted that node ran out; what it
/// granted in an earlier term says nothing of what leaders in between granted, so a record
/// of another term never counts (`of_term`).
#[derive(Debug, Clone, Default)]
pub struct Grants {
    term: u64,
    at: BTreeMap<u64, Instant>,
}

impl Grants {
    /// Records a lease granted to `node` at `at`, confirmed by a quorum as the leader of `term`.
    /// A record of an older term than the latest is dropped; a newer term starts afresh.
    pub fn record(&mut self, term: u64, node: u64, at: Instant) {
        if term > self.term {
            self.term = term;
            self.at.clear();
        }
        if term == self.term {
            let t = self.at.entry(node).or_insert(at);
            *t = (*t).max(at);
        }
    }

    /// When this node last granted each node a lease as the leader of `term`.
    pub fn of_term(&self, term: u64) -> BTreeMap<u64, Instant> {
        if term == self.term {
            self.at.clone()
        } else {
            BTreeMap::new()
        }
    }
}

/// Where a node asks for its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Nowhere: a witness never hosts services, and a node that knows no leader has none.
    Nowhere(&'static str),
    /// From itself: it leads.
    Itself,
    /// From the leader, this node id.
    Leader(u64),
}

/// Where node `me` (a witness or not) asks for its lease when Raft names `leader`.
pub fn source(me: u64, witness: bool, leader: Option<u64>) -> Source {
    match leader {
        _ if witness => Source::Nowhere("a witness holds no lease"),
        Some(l) if l == me => Source::Itself,
        Some(l) => Source::Leader(l),
        None => Source::Nowhere("no leader"),
    }
}

/// How long a node waits before it renews again: `renew`, or just past the moment its lease
/// (`remaining`) would lapse if that comes sooner, so it sees the lapse when it happens.
pub fn next_renewal(remaining: Option<Duration>, renew: Duration) -> Duration {
    remaining.map_or(renew, |l| l.min(renew) + Duration::from_millis(1))
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
    fn a_newer_grant_not_yet_applied_never_takes_away_an_applied_one() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut l = Lease::default();
        l.granted(t0, D);
        // The leader committed more meanwhile; this node has not applied it yet.
        let newer = Grant { commit_index: 20, ..D };
        l.granted(t0 + ms(300), newer);
        assert!(l.is_valid(t0 + ms(400), 10), "the applied grant still runs");
        assert!(!l.is_valid(t0 + ms(3000), 10), "and no longer than it runs");
        assert!(l.is_valid(t0 + ms(3000), 20), "the newer one counts once applied");
        assert!(!l.is_valid(t0 + ms(3300), 20));
        assert_eq!(
            l.remaining(t0 + ms(3000)),
            Some(ms(300)),
            "the leader counts on the latest"
        );
        // Renewals that keep coming, each naming an index just out of reach, keep the lease as
        // long as the node keeps applying what came before.
        let mut l = Lease::default();
        for i in 0..100u64 {
            let grant = Grant {
                commit_index: 10 + i,
                ..D
            };
            l.granted(t0 + ms(300 * i), grant);
            assert!(l.is_valid(t0 + ms(300 * i + 1), 10 + i - i.min(1)), "renewal {i}");
        }
        assert!(l.grants.len() <= 11, "{} grants kept", l.grants.len());
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

    #[test]
    fn grants_of_another_term_never_count() {
        let t0 = Instant::now();
        let mut g = Grants::default();
        g.record(3, 2, t0);
        g.record(3, 2, t0 - Duration::from_secs(1));
        assert_eq!(g.of_term(3), BTreeMap::from([(2, t0)]), "the latest grant of the term");
        assert!(g.of_term(4).is_empty() && g.of_term(2).is_empty());
        g.record(2, 5, t0);
        assert_eq!(g.of_term(3).len(), 1, "an older term's record is dropped");
        g.record(5, 1, t0);
        assert_eq!(g.of_term(5), BTreeMap::from([(1, t0)]), "a new term starts afresh");
        assert!(g.of_term(3).is_empty());
    }

    #[test]
    fn a_node_asks_the_leader_and_renews_before_its_lease_lapses() {
        assert_eq!(source(1, false, Some(1)), Source::Itself);
        assert_eq!(source(1, false, Some(2)), Source::Leader(2));
        assert!(matches!(source(1, false, None), Source::Nowhere(_)));
        assert!(matches!(source(1, true, Some(1)), Source::Nowhere(_)), "a witness");
        let renew = Duration::from_millis(300);
        assert_eq!(next_renewal(None, renew), renew);
        assert_eq!(
            next_renewal(Some(Duration::from_secs(2)), renew),
            renew + Duration::from_millis(1)
        );
        assert_eq!(
            next_renewal(Some(Duration::from_millis(100)), renew),
            Duration::from_millis(101)
        );
    }
}
