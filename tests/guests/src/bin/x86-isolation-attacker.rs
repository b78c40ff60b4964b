//! The attacking x86_64 partition (it builds for arm64 too): asks the
//! hypervisor to print memory it does not own, then reads a guest-physical
//! address outside its RAM, where the host has RAM (possibly its
//! neighbour's). The hypervisor's guest page table identity-maps the whole
//! first 4 GiB, so the read passes the guest's own paging and must end in
//! a nested page fault; with `on_fault = "stop"` the partition is stopped
//! there and never prints the "NOT refused" line.

#![no_std]
#![no_main]

use bulkhead_abi::hypercall::HvError;
use bulkhead_test_guests::{guest_main, hv, println, time};

/// A guest-physical address outside this partition's 16 MiB of RAM, inside
/// the host's 1 GiB where the hypervisor allocates partition memory.
const TARGET: u64 = 0x3000_0000;
/// Ticks of the time-stamp counter to wait first, so that the victim has
/// written its pattern.
const START_DELAY_TICKS: u64 = 50_000_000;

fn main() -> Result<(), u64> {
    time::wait_ticks(START_DELAY_TICKS);
    println!("attacking");
    let result = hv::console_write_raw(TARGET, 64);
    println!("console write from {TARGET:#x}: {result:?}");
    if result != Err(HvError::InvalidParameter) {
        return Err(6);
    }
    println!("reading {TARGET:#x}");
    // SAFETY: deliberately outside this partition's memory: the hypervisor
    // must stop the partition at this access.
    let value = unsafe { core::ptr::read_volatile(TARGET as *const u64) };
    println!("read of {TARGET:#x} NOT refused (value {value:#x}): isolation is broken");
    Err(5)
}

guest_main!(main);
