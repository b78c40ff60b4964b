//! Bulkhead's architecture-neutral core.
//!
//! Everything here is plain logic that runs the same on the host (as unit
//! tests) and in the hypervisor: typed addresses, the firmware memory map,
//! boot arguments, partitions and their address spaces, hypercall dispatch,
//! and the end-of-run summary. Hardware access goes through small traits
//! the image implements ([`partition::HostMemory`], [`partition::ConsoleSink`]).

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod acpi;
pub mod address;
pub mod address_space;
pub mod boot_config;
pub mod bootargs;
pub mod devices;
pub mod dma;
pub mod gpu;
pub mod hypercall;
pub mod linux;
pub mod memmap;
pub mod mmio;
pub mod page_track;
pub mod partition;
pub mod pinning;
pub mod summary;
pub mod vgic;
