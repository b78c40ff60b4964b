//! Device models the hypervisor emulates for partitions, one per file.

pub mod ioapic;
pub mod pci_config;
pub mod pl011;
pub mod verdict;
