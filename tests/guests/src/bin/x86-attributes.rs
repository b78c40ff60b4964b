//! Memory attributes on x86_64: asks the hypervisor to check, for one page
//! of each region, that the memory type the live nested page table gives it
//! is the one the configuration's attribute means (WB, WC, UC), and that a
//! page it has no region for is refused.

#![no_std]
#![no_main]

use bulkhead_abi::hypercall::{CHECK_ATTRIBUTE, HvError};
use bulkhead_test_guests::{guest_main, hv, println};

/// The configuration's regions, one per attribute, and the memory type
/// (an x86 PAT type) each must get: WB 6, WC 1, UC 0.
const REGIONS: [(&str, u64, u64); 4] = [
    ("normal-wb", 0x20_0000, 6),
    ("normal-nc", 0x4000_0000, 1),
    ("device-ngnre", 0x4020_0000, 0),
    ("device-ngnrne", 0x4040_0000, 0),
];

fn main() -> Result<(), u64> {
    for (i, (name, va, expected)) in REGIONS.into_iter().enumerate() {
        let result = HvError::check(hv::call(CHECK_ATTRIBUTE, [va, 0, 0, 0, 0, 0, 0]));
        println!("{name} at {va:#x}: {result:?}");
        if result != Ok(expected) {
            return Err(i as u64 + 1);
        }
    }
    // Mapped by the guest's own page table, but no region of the partition.
    let result = HvError::check(hv::call(CHECK_ATTRIBUTE, [0x3000_0000, 0, 0, 0, 0, 0, 0]));
    println!("unassigned 0x30000000: {result:?}");
    if result != Err(HvError::InvalidParameter) {
        return Err(9);
    }
    Ok(())
}

guest_main!(main);
