//! x86_64: unknown and malformed hypercalls (VMMCALL) return error codes and
//! the guest keeps running, as on arm64.

#![no_std]
#![no_main]

use bulkhead_abi::hypercall::{HvError, vendor_hyp_call};
use bulkhead_test_guests::{guest_main, hv, println};

fn main() -> Result<(), u64> {
    let not_supported = HvError::NotSupported.to_register();
    for (i, function) in [vendor_hyp_call(0xfeee), 0x8400_00ff, 0, 0xffff_ffff].into_iter().enumerate() {
        let x0 = hv::call(function, [u64::MAX; 7]);
        println!("unknown call {function:#010x} returned {x0:#x}");
        if x0 != not_supported {
            return Err(10 + i as u64);
        }
    }
    // The guest's RAM is guest-physical 0..16 MiB.
    hv::expect_console_writes_refused(&[(0x1_0000_0000, 16), (0xfff_fff8, 16), (0x1000, 4097), (u64::MAX - 3, 8)], 20)?;
    println!("all bad calls were refused and the partition kept running");
    Ok(())
}

guest_main!(main);
