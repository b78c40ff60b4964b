//! Benchmark guest: the cost of a null hypercall round trip, in virtual
//! counter ticks. Under `-icount shift=0` the counter advances one tick per
//! executed instruction, so the figure is a deterministic path length
//! (DESIGN.md §8). The baseline, measured in the same run, is the same loop
//! without the call.

#![no_std]
#![no_main]

use bulkhead_abi::hypercall::ABI_VERSION;
use bulkhead_test_guests::{guest_main, hv, println, time};

const CALLS: u64 = 2000;

fn measure(with_call: bool) -> u64 {
    let start = time::counter();
    for _ in 0..CALLS {
        if with_call {
            core::hint::black_box(hv::call(ABI_VERSION, [0; 7]));
        } else {
            core::hint::black_box(ABI_VERSION);
        }
    }
    time::counter() - start
}

fn main() -> Result<(), u64> {
    // Warm up QEMU's translation cache and the hypervisor's paths.
    measure(true);
    measure(false);
    let baseline = measure(false);
    let total = measure(true);
    let per_call = total.saturating_sub(baseline) / CALLS;
    println!("bench: null hypercall round trip: {per_call} ticks per call ({CALLS} calls; loop baseline {} ticks per iteration; counter {} Hz)", baseline / CALLS, time::frequency());
    println!("bench: ratio to the DESIGN.md target of 150: {:.2}", per_call as f64 / 150.0);
    Ok(())
}

guest_main!(main);
