//! The first x86_64 partition (it builds for arm64 too): greets through
//! `CONSOLE_WRITE`, checks the ABI version and reports success.

#![no_std]
#![no_main]

use bulkhead_test_guests::{guest_main, hv, println};

fn main() -> Result<(), u64> {
    println!("Hello from an x86_64 Bulkhead partition");
    let version = hv::call(bulkhead_abi::hypercall::ABI_VERSION, [0; 7]);
    println!("hypercall ABI version {}.{} via VMMCALL", version >> 16, version & 0xffff);
    if version != bulkhead_abi::hypercall::ABI_VERSION_VALUE {
        return Err(1);
    }
    Ok(())
}

guest_main!(main);
