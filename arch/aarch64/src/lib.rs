//! Bulkhead's arm64 EL2 code.
//!
//! What a hypervisor needs from an arm64 CPU and nothing about partitions:
//! the image entry point, the EL2 exception vectors, entering a guest and
//! coming back on its exits ([`exception`]), decoding exit syndromes
//! ([`esr`]), the EL2 and stage-2 translation tables ([`mmu`], [`stage2`]),
//! system-register set-up ([`el2`]), secondary CPU start ([`smp`]) and
//! semihosting ([`semihosting`]).
//!
//! Assembly and system-register accesses are compiled only for
//! `target_arch = "aarch64"` outside tests, so the decoding and table logic run
//! as host unit tests.

#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod cache;
pub mod el2;
pub mod gic;
pub mod idregs;
pub mod esr;
pub mod exception;
pub mod inject;
pub mod mmu;
pub mod semihosting;
pub mod smp;
pub mod stage2;
pub mod store_decode;
pub mod translate;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod entry;
