//! The default demo guest: greets and reports success.

#![no_std]
#![no_main]

use bulkhead_test_guests::{guest_main, hv, println};

fn main() -> Result<(), u64> {
    println!("Hello from a Bulkhead partition");
    let version = hv::call(bulkhead_abi::hypercall::ABI_VERSION, [0; 7]);
    println!("hypercall ABI version {}.{}", version >> 16, version & 0xffff);
    if version != bulkhead_abi::hypercall::ABI_VERSION_VALUE {
        return Err(1);
    }
    Ok(())
}

guest_main!(main);
