//! Drivers for the hardware Bulkhead itself drives.
//!
//! Each driver knows its device's registers and nothing about partitions.
//! Register blocks are typed with `tock-registers`; the only `unsafe` is in
//! constructing a driver from a base address, whose caller vouches that the
//! address maps the device.

#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod edu;
pub mod gicv3;
pub mod gicv3_its;
pub mod gpu;
pub mod ioapic;
pub mod pci;
pub mod pl011;
pub mod smmuv3;
pub mod vtd;
