//! Interfaces shared by Bulkhead's programs.
//!
//! The UEFI loader, the hypervisor, the test guests and the host tools are
//! separate programs that must agree on a few numbers: the layout of the
//! boot information the loader hands to the hypervisor, the files on the EFI
//! system partition, the hypercall ABI, the exit codes a QEMU run ends with, the GPU's
//! GTT entry and command formats, and the memory contents test guests leave
//! for the harness to check.
//! They live here, in one place, so that none of them is written twice.

#![no_std]
#![forbid(unsafe_code)]

pub mod boot;
pub mod exit;
pub mod gpu;
pub mod hypercall;
pub mod testdata;
