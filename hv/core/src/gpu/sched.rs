//! Weighted round-robin over the partitions' submission queues: which
//! partition's work the shared GPU runs next (DESIGN.md §5).
//!
//! Each partition has a weight (its configured share of the GPU). While
//! other partitions have work waiting, a partition gets up to `weight`
//! consecutive submissions, then the turn passes to the next partition
//! (in index order, wrapping) that has work; empty queues are skipped and
//! keep no credit, so a partition that was idle cannot burst later. A
//! partition alone with work runs without pause. The unit is a submission,
//! not GPU time: the virtual GPU bounds a submission's size
//! ([`super::vgpu::MAX_OUTSTANDING`] per partition, the scan budget per
//! submission), which is what makes counting submissions fair enough.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// One partition's queue and weight.
#[derive(Clone, Debug)]
struct Lane<T> {
    weight: u32,
    queue: VecDeque<T>,
}

/// The scheduler: one lane per partition index `0..weights.len()`.
#[derive(Clone, Debug)]
pub struct Scheduler<T> {
    lanes: Vec<Lane<T>>,
    /// The partition whose turn it is.
    current: usize,
    /// Submissions `current` has run in this turn.
    used: u32,
}

impl<T> Scheduler<T> {
    /// A scheduler for `weights.len()` partitions; a weight of 0 counts as
    /// 1 (a configured partition is never starved).
    pub fn new(weights: &[u32]) -> Scheduler<T> {
        let lanes = weights.iter().map(|&weight| Lane { weight: weight.max(1), queue: VecDeque::new() }).collect();
        Scheduler { lanes, current: 0, used: 0 }
    }

    /// Queues `item` for `partition`.
    ///
    /// # Errors
    /// Gives `item` back if `partition` is not one of the scheduler's.
    pub fn push(&mut self, partition: usize, item: T) -> Result<(), T> {
        match self.lanes.get_mut(partition) {
            Some(lane) => {
                lane.queue.push_back(item);
                Ok(())
            }
            None => Err(item),
        }
    }

    /// Discards `partition`'s queued submissions (it stopped) and returns
    /// them, so that the caller can release what they hold. If it was the
    /// partition's turn, the turn passes on.
    pub fn drop_partition(&mut self, partition: usize) -> Vec<T> {
        let Some(lane) = self.lanes.get_mut(partition) else { return Vec::new() };
        if partition == self.current {
            self.used = lane.weight;
        }
        lane.queue.drain(..).collect()
    }

    /// Submissions queued for `partition` (0 for an unknown one).
    pub fn queued(&self, partition: usize) -> usize {
        self.lanes.get(partition).map_or(0, |lane| lane.queue.len())
    }

    /// Whether no partition has work queued.
    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(|lane| lane.queue.is_empty())
    }
}

/// The scheduler hands out submissions as an iterator; `None` means every
/// queue is empty *now* (it yields again after a [`Scheduler::push`]).
impl<T> Iterator for Scheduler<T> {
    type Item = (usize, T);

    /// The next submission to run and its partition, or `None` if every
    /// queue is empty.
    fn next(&mut self) -> Option<(usize, T)> {
        let count = self.lanes.len();
        if let Some(lane) = self.lanes.get_mut(self.current)
            && self.used < lane.weight
            && let Some(item) = lane.queue.pop_front()
        {
            self.used += 1;
            return Some((self.current, item));
        }
        // The turn passes on: the first partition after `current` with
        // work, `current` itself last (it may go on if it is alone).
        for step in 1..=count {
            let partition = (self.current + step) % count;
            if let Some(item) = self.lanes[partition].queue.pop_front() {
                self.current = partition;
                self.used = 1;
                return Some((partition, item));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(scheduler: &mut Scheduler<u32>) -> Vec<usize> {
        scheduler.map(|(p, _)| p).collect()
    }

    #[test]
    fn weights_3_to_1_give_a_3_to_1_order_while_both_wait() {
        let mut s = Scheduler::new(&[3, 1]);
        for i in 0..9 {
            s.push(0, i).unwrap();
        }
        for i in 0..3 {
            s.push(1, 100 + i).unwrap();
        }
        assert_eq!(order(&mut s), [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]);
    }

    #[test]
    fn items_come_out_in_order_per_partition() {
        let mut s = Scheduler::new(&[1, 1]);
        for i in 0..3 {
            s.push(0, i).unwrap();
            s.push(1, 10 + i).unwrap();
        }
        let items: Vec<(usize, u32)> = s.by_ref().collect();
        assert_eq!(items, [(0, 0), (1, 10), (0, 1), (1, 11), (0, 2), (1, 12)]);
    }

    #[test]
    fn a_partition_alone_runs_without_pause_and_empty_queues_are_skipped() {
        let mut s = Scheduler::new(&[1, 2, 1]);
        for i in 0..5 {
            s.push(1, i).unwrap();
        }
        assert_eq!(order(&mut s), [1; 5]);
        assert!(s.next().is_none());
        assert!(s.is_empty());
        // After 0 and 2 join, fairness is back: 1 finishes its turn (one
        // of its two left), then 2, 0, 1 in turn.
        for i in 0..4 {
            s.push(0, i).unwrap();
            s.push(1, i).unwrap();
            s.push(2, i).unwrap();
        }
        assert_eq!(order(&mut s), [1, 2, 0, 1, 1, 2, 0, 1, 2, 0, 2, 0]);
    }

    #[test]
    fn fairness_over_many_rounds_matches_the_weights() {
        let mut s = Scheduler::new(&[5, 2, 1]);
        let mut counts = [0u32; 3];
        for round in 0..800 {
            // Every queue stays non-empty.
            for p in 0..3 {
                while s.queued(p) < 8 {
                    s.push(p, round).unwrap();
                }
            }
            let (p, _) = s.next().unwrap();
            counts[p] += 1;
        }
        assert_eq!(counts, [500, 200, 100]);
    }

    #[test]
    fn empty_and_unknown_partitions() {
        let mut s: Scheduler<u32> = Scheduler::new(&[]);
        assert!(s.next().is_none());
        assert_eq!(s.push(0, 7), Err(7));
        let mut s = Scheduler::new(&[0, 1]);
        assert_eq!(s.push(2, 7), Err(7));
        assert!(s.next().is_none());
        assert_eq!(s.queued(9), 0);
        assert!(s.drop_partition(9).is_empty());
        // Weight 0 behaves as 1.
        for i in 0..2 {
            s.push(0, i).unwrap();
            s.push(1, i).unwrap();
        }
        assert_eq!(order(&mut s), [0, 1, 0, 1]);
    }

    #[test]
    fn a_dropped_partition_loses_its_queue_and_its_turn() {
        let mut s = Scheduler::new(&[3, 1]);
        for i in 0..4 {
            s.push(0, i).unwrap();
            s.push(1, 10 + i).unwrap();
        }
        assert_eq!(s.next(), Some((0, 0)));
        assert_eq!(s.drop_partition(0), [1, 2, 3]);
        assert_eq!(order(&mut s), [1, 1, 1, 1]);
        // It may queue again after a restart.
        s.push(0, 5).unwrap();
        assert_eq!(s.next(), Some((0, 5)));
    }
}
