//! Which offsets a Kafka source may commit.
//!
//! Batches of one partition are acknowledged in any order (workers run in parallel, sinks flush
//! independently), but a committed offset means "everything before this is delivered". So each
//! partition keeps its in-flight batches in the order they were read, and the commit point only
//! moves past a batch once it and every batch before it are acknowledged.
//!
//! A batch covers a run of offsets of one or more partitions; per partition it is one
//! [`Slot`] here. Each assignment of a partition starts a new epoch: acknowledgements of batches
//! read under an earlier assignment (before a rebalance took the partition away) are ignored,
//! because another consumer may already own and commit that partition.
//!
//! A failed acknowledgement (a sink gave up or the flow stopped before the events were written)
//! blocks its partition: nothing at or after that batch is committed, so the events are read
//! again after a restart or by the next owner of the partition.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A topic and partition.
pub type Tp = (Arc<str>, i32);

/// One partition's share of one batch, as returned by [`Offsets::register`].
#[derive(Debug, Clone)]
pub struct Slot {
    pub tp: Tp,
    epoch: u64,
    seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight,
    Acked,
    Failed,
}

#[derive(Debug)]
struct Partition {
    epoch: u64,
    next_seq: u64,
    /// In-flight batches by sequence number: (the offset after the batch's last message, state).
    batches: BTreeMap<u64, (i64, State)>,
    /// The offset to commit: the next offset to read after everything acknowledged in order.
    ready: Option<i64>,
    /// What was last committed (or is being committed).
    committed: Option<i64>,
}

/// Per-partition commit bookkeeping for one consumer.
#[derive(Debug, Default)]
pub struct Offsets {
    parts: HashMap<Tp, Partition>,
    epochs: u64,
    /// The first failed acknowledgement: (partition, offset range start, reason).
    failure: Option<String>,
}

impl Offsets {
    /// The consumer was given these partitions: track them from scratch.
    pub fn assign(&mut self, tps: impl IntoIterator<Item = Tp>) {
        for tp in tps {
            self.epochs += 1;
            let p =
                Partition { epoch: self.epochs, next_seq: 0, batches: BTreeMap::new(), ready: None, committed: None };
            self.parts.insert(tp, p);
        }
    }

    /// The consumer lost these partitions: forget them (late acknowledgements are ignored).
    pub fn revoke<'a>(&mut self, tps: impl IntoIterator<Item = &'a Tp>) {
        for tp in tps {
            self.parts.remove(tp);
        }
    }

    /// Forget every partition (the consumer is closing).
    pub fn clear(&mut self) {
        self.parts.clear();
    }

    /// Whether the partition is tracked (assigned).
    pub fn is_assigned(&self, tp: &Tp) -> bool {
        self.parts.contains_key(tp)
    }

    /// A batch read offsets up to `last` (inclusive) of `tp`: track it until acknowledged.
    /// `None` when the partition is not assigned (a message that raced a revocation: it is
    /// delivered, but its offset is left to the partition's next owner).
    pub fn register(&mut self, tp: &Tp, last: i64) -> Option<Slot> {
        let p = self.parts.get_mut(tp)?;
        let seq = p.next_seq;
        p.next_seq += 1;
        p.batches.insert(seq, (last + 1, State::InFlight));
        Some(Slot { tp: tp.clone(), epoch: p.epoch, seq })
    }

    /// Every event of the batch behind `slots` is handled (`Ok`) or was not delivered (`Err`).
    pub fn resolve(&mut self, slots: &[Slot], outcome: Result<(), &str>) {
        for s in slots {
            let Some(p) = self.parts.get_mut(&s.tp).filter(|p| p.epoch == s.epoch) else { continue };
            let Some(entry) = p.batches.get_mut(&s.seq) else { continue };
            match outcome {
                Ok(()) => entry.1 = State::Acked,
                Err(reason) => {
                    entry.1 = State::Failed;
                    if self.failure.is_none() {
                        self.failure = Some(format!(
                            "events of {}/{} before offset {} were not delivered: {reason}",
                            s.tp.0, s.tp.1, entry.0
                        ));
                    }
                }
            }
            // Move the commit point over the acknowledged prefix; a failed batch stays at the
            // front and blocks the partition.
            while let Some(e) = p.batches.first_entry() {
                if e.get().1 != State::Acked {
                    break;
                }
                p.ready = Some(e.remove().0);
            }
        }
    }

    /// Offsets that are ready and not yet committed; marks them committed.
    pub fn take_commits(&mut self) -> Vec<(Tp, i64)> {
        self.commits_where(|_| true)
    }

    /// Like [`Offsets::take_commits`], for some partitions only.
    pub fn take_commits_of(&mut self, tps: &[Tp]) -> Vec<(Tp, i64)> {
        self.commits_where(|tp| tps.contains(tp))
    }

    fn commits_where(&mut self, want: impl Fn(&Tp) -> bool) -> Vec<(Tp, i64)> {
        let mut out = Vec::new();
        for (tp, p) in &mut self.parts {
            if let Some(r) = p.ready
                && p.committed != Some(r)
                && want(tp)
            {
                p.committed = Some(r);
                out.push((tp.clone(), r));
            }
        }
        out.sort();
        out
    }

    /// A commit failed: offer these offsets again next time (unless already past them).
    pub fn commit_failed(&mut self, tp: &Tp, offset: i64) {
        if let Some(p) = self.parts.get_mut(tp)
            && p.committed == Some(offset)
        {
            p.committed = None;
        }
    }

    /// Batches read but not yet acknowledged (or failed), for these partitions (all if `None`).
    pub fn in_flight(&self, tps: Option<&[Tp]>) -> usize {
        self.parts
            .iter()
            .filter(|(tp, _)| tps.is_none_or(|t| t.contains(tp)))
            .map(|(_, p)| p.batches.values().filter(|b| b.1 == State::InFlight).count())
            .sum()
    }

    /// The first failed acknowledgement, if any.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        (Arc::from("t"), p)
    }

    #[test]
    fn commits_only_the_contiguous_acknowledged_prefix() {
        let mut o = Offsets::default();
        o.assign([tp(0)]);
        let a = o.register(&tp(0), 9).unwrap();
        let b = o.register(&tp(0), 19).unwrap();
        let c = o.register(&tp(0), 29).unwrap();
        o.resolve(&[b], Ok(()));
        assert!(o.take_commits().is_empty(), "b is acked but a is not");
        o.resolve(&[a], Ok(()));
        assert_eq!(o.take_commits(), vec![(tp(0), 20)]);
        assert!(o.take_commits().is_empty(), "nothing new");
        assert_eq!(o.in_flight(None), 1);
        o.resolve(&[c], Ok(()));
        assert_eq!(o.take_commits(), vec![(tp(0), 30)]);
    }

    #[test]
    fn a_failed_batch_blocks_its_partition_only() {
        let mut o = Offsets::default();
        o.assign([tp(0), tp(1)]);
        let a0 = o.register(&tp(0), 4).unwrap();
        let a1 = o.register(&tp(1), 4).unwrap();
        let b0 = o.register(&tp(0), 9).unwrap();
        o.resolve(&[a0.clone(), a1], Err("sink down"));
        o.resolve(&[b0], Ok(()));
        assert!(o.take_commits().is_empty());
        assert!(o.failure().unwrap().contains("t/0 before offset 5"), "{:?}", o.failure());
        let c1 = o.register(&tp(1), 9).unwrap();
        o.resolve(&[c1], Ok(()));
        assert!(o.take_commits().is_empty(), "partition 1's first batch failed too");
    }

    #[test]
    fn revocation_forgets_and_ignores_late_acks() {
        let mut o = Offsets::default();
        o.assign([tp(0)]);
        let old = o.register(&tp(0), 9).unwrap();
        o.revoke(&[tp(0)]);
        assert!(o.register(&tp(0), 19).is_none(), "not assigned");
        o.assign([tp(0)]);
        o.resolve(&[old], Ok(()));
        assert!(o.take_commits().is_empty(), "an ack from the previous assignment");
        let new = o.register(&tp(0), 19).unwrap();
        o.resolve(&[new], Ok(()));
        assert_eq!(o.take_commits(), vec![(tp(0), 20)]);
    }

    #[test]
    fn failed_commits_are_offered_again() {
        let mut o = Offsets::default();
        o.assign([tp(0), tp(1)]);
        let a = o.register(&tp(0), 0).unwrap();
        let b = o.register(&tp(1), 0).unwrap();
        o.resolve(&[a, b], Ok(()));
        assert_eq!(o.take_commits_of(&[tp(1)]), vec![(tp(1), 1)]);
        o.commit_failed(&tp(1), 1);
        assert_eq!(o.take_commits(), vec![(tp(0), 1), (tp(1), 1)]);
    }
}
