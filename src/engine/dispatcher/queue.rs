//! The queue machinery every kind of work shares: a FIFO of ready keys that holds each key
//! once, and a min-heap of wake-up times. Orchestrations and entities (keyed by instance
//! id) and activities (keyed by row id) each own one of each.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::Instant;

use chrono::{DateTime, Utc};

/// Keys ready to be dispatched, in arrival order, each at most once, with the time each
/// was queued (for the backlog-age metric).
#[derive(Debug)]
pub(super) struct ReadyQueue<K> {
    order: VecDeque<(K, Instant)>,
    queued: HashSet<K>,
    /// When the key last taken was queued, for [`Self::put_back`].
    last_taken: Option<Instant>,
}

impl<K> Default for ReadyQueue<K> {
    fn default() -> Self {
        Self {
            order: VecDeque::new(),
            queued: HashSet::new(),
            last_taken: None,
        }
    }
}

impl<K: Clone + Eq + Hash> ReadyQueue<K> {
    /// Queues `key` at the back unless it is already queued.
    pub(super) fn push_back(&mut self, key: K) {
        if self.queued.insert(key.clone()) {
            self.order.push_back((key, Instant::now()));
        }
    }

    /// Queues `key` at the front, unless it is already queued. It counts as waiting as
    /// long as the key it jumps ahead of, so the front stays the oldest.
    pub(super) fn push_front(&mut self, key: K) {
        if self.queued.insert(key.clone()) {
            let since = self.order.front().map_or_else(Instant::now, |(_, t)| *t);
            self.order.push_front((key, since));
        }
    }

    /// Puts back at the front the key just taken by [`Self::pop_front`] (it could not go
    /// after all), with the time it was first queued: otherwise the backlog would look
    /// young exactly when no worker takes it.
    pub(super) fn put_back(&mut self, key: K) {
        if self.queued.insert(key.clone()) {
            let since = self.last_taken.take().unwrap_or_else(Instant::now);
            self.order.push_front((key, since));
        }
    }

    /// The next key, without taking it.
    pub(super) fn front(&self) -> Option<&K> {
        self.order.front().map(|(key, _)| key)
    }

    /// Takes the next key.
    pub(super) fn pop_front(&mut self) -> Option<K> {
        let (key, since) = self.order.pop_front()?;
        self.queued.remove(&key);
        self.last_taken = Some(since);
        Some(key)
    }

    /// Keys queued.
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    /// When the key at the front, the longest waiting, was queued.
    pub(super) fn oldest(&self) -> Option<Instant> {
        self.order.front().map(|(_, since)| *since)
    }
}

/// Wake-up times, earliest first. A key may be armed several times; each firing only
/// makes it ready, so a stale entry costs one look.
#[derive(Debug)]
pub(super) struct Timers<K> {
    heap: BinaryHeap<Reverse<(DateTime<Utc>, K)>>,
}

impl<K: Ord> Default for Timers<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord> Timers<K> {
    /// Arms a wake-up of `key` at `at`.
    pub(super) fn push(&mut self, at: DateTime<Utc>, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// Takes the next key due at or before `now`.
    pub(super) fn pop_due(&mut self, now: DateTime<Utc>) -> Option<K> {
        if self.next().is_some_and(|at| at <= now) {
            return self.heap.pop().map(|Reverse((_, key))| key);
        }
        None
    }

    /// The earliest armed time.
    pub(super) fn next(&self) -> Option<DateTime<Utc>> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Wake-ups armed.
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_key_is_queued_once_and_front_pushes_jump_the_line() {
        let mut q = ReadyQueue::default();
        q.push_back("a");
        q.push_back("b");
        q.push_back("a");
        q.push_front("c");
        q.push_front("b");
        assert_eq!(q.len(), 3);
        assert_eq!(q.front(), Some(&"c"));
        let order: Vec<_> = std::iter::from_fn(|| q.pop_front()).collect();
        assert_eq!(order, ["c", "a", "b"]);
        q.push_back("a");
        assert_eq!(q.pop_front(), Some("a"), "a taken key can be queued again");
    }

    #[test]
    fn a_key_put_back_at_the_front_keeps_its_queued_time() {
        let mut q = ReadyQueue::default();
        assert_eq!(q.oldest(), None);
        q.push_back("a");
        let queued = q.oldest().unwrap();
        q.push_back("b");
        assert_eq!(q.pop_front(), Some("a"));
        q.put_back("a");
        assert_eq!(
            q.oldest(),
            Some(queued),
            "no capacity is no reason to look young"
        );
        assert_eq!(q.pop_front(), Some("a"));
        let b_queued = q.oldest().unwrap();
        assert!(b_queued >= queued);
        q.push_front("c");
        assert_eq!(
            q.oldest(),
            Some(b_queued),
            "a key jumping the line is as old as the front"
        );
    }

    #[test]
    fn timers_fire_in_time_order_and_not_before() {
        let t = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        let mut timers = Timers::default();
        timers.push(t(5), 2);
        timers.push(t(1), 1);
        timers.push(t(9), 3);
        assert_eq!(timers.next(), Some(t(1)));
        assert_eq!(timers.pop_due(t(0)), None);
        assert_eq!(timers.pop_due(t(5)), Some(1));
        assert_eq!(timers.pop_due(t(5)), Some(2));
        assert_eq!(timers.pop_due(t(5)), None);
        assert_eq!(timers.len(), 1);
    }
}
