//! Waiting, with the CPU's free-running counter: the generic timer's
//! physical counter on arm64, the time-stamp counter on x86_64.

/// Reads the counter (`CNTPCT_EL0` on arm64, `RDTSC` on x86_64).
pub fn counter() -> u64 {
    #[cfg(target_arch = "aarch64")]
    {
        let value: u64;
        // SAFETY: reading the counter has no side effects (the hypervisor lets
        // EL1 read it: CNTHCTL_EL2.EL1PCTEN).
        unsafe {
            core::arch::asm!("isb", "mrs {}, cntpct_el0", out(reg) value, options(nostack));
        }
        value
    }
    #[cfg(target_arch = "x86_64")]
    {
        let (low, high): (u32, u32);
        // SAFETY: LFENCE and RDTSC only order and read the time-stamp counter.
        unsafe { core::arch::asm!("lfence", "rdtsc", out("eax") low, out("edx") high, options(nostack)) };
        (u64::from(high) << 32) | u64::from(low)
    }
    #[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
    0
}

/// Busy-waits until the counter has advanced by `ticks`.
pub fn wait_ticks(ticks: u64) {
    let start = counter();
    while counter().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

/// Counter ticks per second (`CNTFRQ_EL0`). arm64 only: x86_64 has no
/// architectural way to ask the time-stamp counter's frequency.
#[cfg(target_arch = "aarch64")]
pub fn frequency() -> u64 {
    let value: u64;
    // SAFETY: reading the frequency register has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, cntfrq_el0", out(reg) value, options(nostack));
    }
    value
}

/// Busy-waits for `ms` milliseconds (arm64 only, see [`frequency`]).
#[cfg(target_arch = "aarch64")]
pub fn delay_ms(ms: u64) {
    wait_ticks(frequency().saturating_mul(ms) / 1000);
}
