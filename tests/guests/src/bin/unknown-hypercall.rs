//! Makes calls the hypervisor does not know, and calls with bad arguments:
//! each must return an error code and the guest must keep running.

#![no_std]
#![no_main]

use bulkhead_abi::hypercall::{HvError, vendor_hyp_call};
use bulkhead_test_guests::hv::{self, Conduit};
use bulkhead_test_guests::{guest_main, println};

fn main() -> Result<(), u64> {
    let not_supported = HvError::NotSupported.to_register();
    let unknown = [
        (Conduit::Hvc, vendor_hyp_call(0xfeee)),
        (Conduit::Hvc, 0x8400_00ff),
        (Conduit::Hvc, 0),
        (Conduit::Hvc, 0xffff_ffff),
        (Conduit::Smc, 0xc500_0001),
        (Conduit::Smc, vendor_hyp_call(0x1234)),
    ];
    for (i, (conduit, function)) in unknown.into_iter().enumerate() {
        let x0 = hv::call_via(conduit, function, [u64::MAX; 7]);
        println!("unknown call {function:#010x} via {conduit:?} returned {x0:#x}");
        if x0 != not_supported {
            return Err(10 + i as u64);
        }
    }
    let bad_writes = [
        (0x1_0000_0000, 16),        // outside the partition's memory
        (0x3fff_fff8, 16),          // straddles the start of RAM
        (0x4000_0000, 4097),        // longer than CONSOLE_WRITE_MAX
        (u64::MAX - 3, 8),          // wraps around
    ];
    hv::expect_console_writes_refused(&bad_writes, 20)?;
    println!("all bad calls were refused and the partition kept running");
    Ok(())
}

guest_main!(main);
