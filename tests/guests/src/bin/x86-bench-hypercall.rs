//! Benchmark guest (x86_64): the cost of a null VMMCALL round trip in TSC
//! ticks, against the same loop without the call, in one run. Under
//! `-icount shift=0` the figures are deterministic path lengths.

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
    measure(true);
    measure(false);
    let baseline = measure(false);
    let total = measure(true);
    let per_call = total.saturating_sub(baseline) / CALLS;
    println!(
        "bench: null VMMCALL round trip: {per_call} TSC ticks per call ({CALLS} calls; loop baseline {} ticks per iteration)",
        baseline / CALLS
    );
    Ok(())
}

guest_main!(main);
