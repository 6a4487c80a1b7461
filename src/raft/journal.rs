//! The events of the entries this node applied (`model::events`), each with its log index and
//! the time this node applied it, kept in memory for `Events` streams and the metrics.
//!
//! A reader walks it with a `Cursor` (an index, and how many events of that index it has
//! seen), so it resumes exactly where it was, on this node or another: every node derives the
//! same events for the same entry. The journal keeps the last `capacity` events, whole entries
//! at a time, from the node's last snapshot on (a snapshot's entries were never applied here
//! one by one); a cursor before what it keeps is refused with where it starts now.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::model::events::Event;

/// An event, as this node applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    /// The index of the log entry that gave it.
    pub index: u64,
    /// When this node applied the entry, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    pub event: Event,
}

/// Where a reader stands: the events of `index` after the first `seen`, then later ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub index: u64,
    pub seen: u32,
}

impl Cursor {
    /// The cursor just after `event`, which a reader had at position `seen` of its entry.
    fn after(event: &Stamped, seen_before: u32, cursor_index: u64) -> Cursor {
        let seen = if event.index == cursor_index {
            seen_before + 1
        } else {
            1
        };
        Cursor {
            index: event.index,
            seen,
        }
    }
}

/// The events from before what a journal keeps were asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("events before log index {first} are no longer kept on this node (asked from {asked})")]
pub struct Gone {
    pub asked: u64,
    /// The first index whose events it has, whole.
    pub first: u64,
}

/// The default number of events kept.
pub const CAPACITY: usize = 10_000;

struct Inner {
    events: VecDeque<Arc<Stamped>>,
    /// Every event of entries at this index and after is kept.
    first: u64,
    /// How many events the entry before `first` had, when known (it was dropped from the
    /// journal, or it is index 0, which no entry has): a reader that saw them all missed nothing.
    before_first: Option<u32>,
    capacity: usize,
}

pub struct Journal {
    inner: Mutex<Inner>,
    /// The last index applied: readers waiting for more watch it.
    applied: watch::Sender<u64>,
}

impl Journal {
    /// An empty journal for a node whose state stands at index `applied`.
    pub fn new(applied: u64, capacity: usize) -> Journal {
        Journal {
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                first: applied + 1,
                before_first: (applied == 0).then_some(0),
                capacity: capacity.max(1),
            }),
            applied: watch::Sender::new(applied),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the events of the entry at `index`, applied now.
    pub fn record(&self, index: u64, events: Vec<Event>) {
        if !events.is_empty() {
            let unix_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let mut inner = self.lock();
            inner.events.extend(
                events
                    .into_iter()
                    .map(|event| Arc::new(Stamped { index, unix_ms, event })),
            );
            // Drop the oldest entries whole while there are too many events.
            while inner.events.len() > inner.capacity {
                let Some(oldest) = inner.events.front().map(|e| e.index) else {
                    break;
                };
                if oldest == index {
                    // One entry larger than the journal: kept whole rather than cut.
                    break;
                }
                let mut count = 0;
                while inner.events.front().is_some_and(|e| e.index == oldest) {
                    inner.events.pop_front();
                    count += 1;
                }
                inner.first = oldest + 1;
                inner.before_first = Some(count);
            }
        }
        self.applied.send_replace(index);
    }

    /// Forgets every event: the state was replaced by a snapshot at index `applied`.
    pub fn reset(&self, applied: u64) {
        let mut inner = self.lock();
        inner.events.clear();
        inner.first = applied + 1;
        inner.before_first = None;
        drop(inner);
        self.applied.send_replace(applied);
    }

    /// The first index whose events are all kept.
    pub fn first(&self) -> u64 {
        self.lock().first
    }

    /// Up to `max` events from `cursor` on, and the cursor after them.
    pub fn read(&self, cursor: Cursor, max: usize) -> Result<(Vec<Arc<Stamped>>, Cursor), Gone> {
        let inner = self.lock();
        if cursor.index < inner.first {
            // Nothing missed when the reader had every event of the entry before `first`.
            let saw_all = cursor.index + 1 == inner.first && inner.before_first.is_some_and(|n| cursor.seen >= n);
            if !saw_all {
                return Err(Gone {
                    asked: cursor.index,
                    first: inner.first,
                });
            }
        }
        let start = inner.events.partition_point(|e| e.index < cursor.index);
        let mut out = Vec::new();
        let mut at = cursor;
        let mut skip = cursor.seen;
        for e in inner.events.range(start..) {
            if e.index == cursor.index && skip > 0 {
                skip -= 1;
                continue;
            }
            if out.len() == max {
                break;
            }
            at = Cursor::after(e, at.seen, at.index);
            out.push(e.clone());
        }
        Ok((out, at))
    }

    /// Changes when an entry is applied (its value: the last index applied).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::events::EventKind;

    fn ev(n: u32) -> Event {
        Event {
            kind: EventKind::Instance,
            service: None,
            node: None,
            peer: None,
            phase: None,
            message: format!("e{n}"),
        }
    }

    fn messages(events: &[Arc<Stamped>]) -> Vec<String> {
        events
            .iter()
            .map(|e| format!("{}:{}", e.index, e.event.message))
            .collect()
    }

    #[test]
    fn a_reader_resumes_inside_an_entry_without_a_gap_or_a_repeat() {
        let j = Journal::new(0, CAPACITY);
        assert!(
            j.read(Cursor::default(), 10).unwrap().0.is_empty(),
            "index 0 holds nothing"
        );
        let j = Journal::new(4, CAPACITY);
        assert!(
            j.read(Cursor { index: 4, seen: 0 }, 10).is_err(),
            "entry 4 is in the snapshot"
        );
        j.record(5, vec![ev(1), ev(2), ev(3)]);
        j.record(6, vec![]);
        j.record(7, vec![ev(4)]);
        let (got, at) = j.read(Cursor { index: 5, seen: 0 }, 2).unwrap();
        assert_eq!(messages(&got), ["5:e1", "5:e2"]);
        assert_eq!(at, Cursor { index: 5, seen: 2 });
        let (got, at) = j.read(at, 10).unwrap();
        assert_eq!(messages(&got), ["5:e3", "7:e4"]);
        assert_eq!(at, Cursor { index: 7, seen: 1 });
        let (got, same) = j.read(at, 10).unwrap();
        assert!(got.is_empty());
        assert_eq!(same, at);
        // From an index with no events of its own.
        assert_eq!(messages(&j.read(Cursor { index: 6, seen: 0 }, 10).unwrap().0), ["7:e4"]);
        assert_eq!(*j.watch().borrow(), 7);
    }

    #[test]
    fn the_oldest_entries_go_whole_and_a_cursor_before_them_is_refused() {
        let j = Journal::new(0, 3);
        j.record(1, vec![ev(1), ev(2)]);
        j.record(2, vec![ev(3), ev(4)]);
        assert_eq!(j.first(), 2, "entry 1 went whole");
        assert_eq!(
            j.read(Cursor { index: 1, seen: 1 }, 10),
            Err(Gone { asked: 1, first: 2 }),
            "the reader missed e2"
        );
        // A reader that had all of entry 1 has missed nothing.
        let (got, _) = j.read(Cursor { index: 1, seen: 2 }, 10).unwrap();
        assert_eq!(messages(&got), ["2:e3", "2:e4"]);
        // One entry larger than the journal is kept whole.
        j.record(3, vec![ev(5), ev(6), ev(7), ev(8)]);
        assert_eq!(j.first(), 3);
        assert_eq!(j.read(Cursor { index: 3, seen: 0 }, 10).unwrap().0.len(), 4);
        j.reset(40);
        assert_eq!(j.first(), 41);
        assert!(j.read(Cursor { index: 3, seen: 4 }, 10).is_err());
        assert!(j.read(Cursor { index: 41, seen: 0 }, 10).unwrap().0.is_empty());
    }
}
