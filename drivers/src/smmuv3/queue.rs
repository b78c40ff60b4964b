//! Circular-queue index arithmetic shared by the command and event queues.
//!
//! SMMUv3 (IHI 0070) §3.5: a queue of `2^log2size` entries is indexed by a
//! `PROD`/`CONS` pair whose low `log2size` bits are the entry index and
//! whose next bit is the wrap flag, toggled each time the index passes the
//! end. Equal index and equal wrap: empty; equal index, different wrap:
//! full.

/// Largest queue the driver builds (2^19 entries, `SMMU_IDR1.CMDQS` and
/// `EVENTQS` are at most 19).
pub const MAX_LOG2SIZE: u32 = 19;

/// A `PROD` or `CONS` value of one queue: index plus wrap flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueIndex {
    log2size: u32,
    /// Index and wrap flag, bits `log2size..=0`.
    value: u32,
}

impl QueueIndex {
    /// Index 0, wrap 0 of a queue of `2^log2size` entries (`log2size` is
    /// clamped to [`MAX_LOG2SIZE`]).
    pub const fn new(log2size: u32) -> QueueIndex {
        let log2size = if log2size > MAX_LOG2SIZE { MAX_LOG2SIZE } else { log2size };
        QueueIndex { log2size, value: 0 }
    }

    /// The index and wrap flag read from a `PROD`/`CONS` register; bits above
    /// the wrap flag (error and overflow fields) are dropped.
    pub const fn from_register(log2size: u32, register: u32) -> QueueIndex {
        let index = QueueIndex::new(log2size);
        QueueIndex { log2size: index.log2size, value: register & index.mask_with_wrap() }
    }

    const fn mask_with_wrap(&self) -> u32 {
        (1 << (self.log2size + 1)) - 1
    }

    /// Entries in the queue.
    pub const fn capacity(&self) -> u32 {
        1 << self.log2size
    }

    /// The entry this value points at.
    pub const fn slot(&self) -> usize {
        (self.value & (self.capacity() - 1)) as usize
    }

    /// The wrap flag.
    pub const fn wrap(&self) -> bool {
        self.value & self.capacity() != 0
    }

    /// The value to write into the register's index field.
    pub const fn register(&self) -> u32 {
        self.value
    }

    /// The next value: index + 1, the wrap flag toggled past the end.
    #[must_use]
    pub const fn next(&self) -> QueueIndex {
        QueueIndex { log2size: self.log2size, value: (self.value + 1) & self.mask_with_wrap() }
    }

    /// No entries between `cons` (this side reads) and `prod`.
    pub const fn is_empty(prod: QueueIndex, cons: QueueIndex) -> bool {
        prod.value == cons.value
    }

    /// Every entry between `cons` and `prod` is in use.
    pub const fn is_full(prod: QueueIndex, cons: QueueIndex) -> bool {
        prod.slot() == cons.slot() && prod.wrap() != cons.wrap()
    }

    /// Whether the consumer at `cons` has moved past the entry written at
    /// `written` (given that `cons` started at or before it, less than one
    /// lap ago).
    pub const fn consumed(cons: QueueIndex, written: QueueIndex) -> bool {
        // Distance from the written entry to the consumer, modulo two laps:
        // 1..=capacity means the consumer passed it.
        let two_laps = cons.mask_with_wrap() + 1;
        let distance = (cons.value + two_laps - written.value) & cons.mask_with_wrap();
        distance >= 1 && distance <= cons.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_toggles_the_wrap_flag() {
        let mut index = QueueIndex::new(2);
        for expected in [1, 2, 3] {
            index = index.next();
            assert_eq!((index.slot(), index.wrap()), (expected, false));
        }
        index = index.next();
        assert_eq!((index.slot(), index.wrap(), index.register()), (0, true, 0b100));
        for _ in 0..4 {
            index = index.next();
        }
        assert_eq!((index.slot(), index.wrap()), (0, false), "two laps bring the wrap flag back");
    }

    #[test]
    fn empty_and_full() {
        let cons = QueueIndex::new(2);
        let mut prod = cons;
        assert!(QueueIndex::is_empty(prod, cons));
        assert!(!QueueIndex::is_full(prod, cons));
        for _ in 0..4 {
            prod = prod.next();
        }
        assert!(QueueIndex::is_full(prod, cons));
        assert!(!QueueIndex::is_empty(prod, cons));
        let cons = cons.next();
        assert!(!QueueIndex::is_full(prod, cons));
    }

    #[test]
    fn register_values_drop_error_and_overflow_bits() {
        // CMDQ_CONS with ERR = 1 in bits 30:24 and the wrap flag of an
        // 8-entry queue.
        let cons = QueueIndex::from_register(3, (1 << 24) | 0b1_011);
        assert_eq!((cons.slot(), cons.wrap()), (3, true));
        assert_eq!(QueueIndex::new(40).capacity(), 1 << MAX_LOG2SIZE);
    }

    #[test]
    fn consumed_follows_the_consumer_across_the_wrap() {
        let written = QueueIndex::from_register(2, 3);
        assert!(!QueueIndex::consumed(QueueIndex::from_register(2, 3), written));
        assert!(!QueueIndex::consumed(QueueIndex::from_register(2, 2), written));
        assert!(QueueIndex::consumed(QueueIndex::from_register(2, 0b100), written), "one past, wrapped");
        assert!(QueueIndex::consumed(QueueIndex::from_register(2, 0b111), written));
    }
}
