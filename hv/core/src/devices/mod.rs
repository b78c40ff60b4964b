//! Device models the hypervisor emulates for partitions, one per file.

pub mod pl011;
pub mod verdict;
