//! Benchmark guest (x86_64): the cost of a null VMMCALL round trip in TSC
//! ticks, against the same loop without the call, in one run. Under
//! `-icount shift=0` the figures are deterministic path lengths.

#![no_std]
#![no_main]

use bulkhead_abi::hypercall::ABI_VERSION;
use bulkhead_test_guests::{guest_main, hv, println};

const CALLS: u64 = 2000;

fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let (low, high): (u32, u32);
        // SAFETY: RDTSC only reads the time-stamp counter.
        unsafe { core::arch::asm!("lfence", "rdtsc", out("eax") low, out("edx") high, options(nostack)) };
        (u64::from(high) << 32) | u64::from(low)
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

fn measure(with_call: bool) -> u64 {
    let start = tsc();
    for _ in 0..CALLS {
        if with_call {
            core::hint::black_box(hv::call(ABI_VERSION, [0; 7]));
        } else {
            core::hint::black_box(ABI_VERSION);
        }
    }
    tsc() - start
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
