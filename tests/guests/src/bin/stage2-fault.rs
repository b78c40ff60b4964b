//! Reads a guest-physical address outside its memory. The hypervisor must
//! stop this partition with a stage-2 fault; reaching the end is a failure.

#![no_std]
#![no_main]

use bulkhead_test_guests::{guest_main, println};

/// Far above the partition's only region.
const UNMAPPED_IPA: u64 = 0x1_0000_0000;

fn main() -> Result<(), u64> {
    println!("reading unmapped IPA {UNMAPPED_IPA:#x}");
    // SAFETY: deliberately unsafe: the load must fault at stage 2.
    let value = unsafe { core::ptr::read_volatile(UNMAPPED_IPA as *const u64) };
    println!("the read returned {value:#x}: isolation is broken");
    Err(2)
}

guest_main!(main);
