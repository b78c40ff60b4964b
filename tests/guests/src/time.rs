//! Waiting, with the generic timer's physical counter.

/// Reads `CNTPCT_EL0`.
pub fn counter() -> u64 {
    let value: u64;
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reading the counter has no side effects (the hypervisor lets
    // EL1 read it: CNTHCTL_EL2.EL1PCTEN).
    unsafe {
        core::arch::asm!("isb", "mrs {}, cntpct_el0", out(reg) value, options(nostack));
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        value = 0;
    }
    value
}

/// Counter ticks per second (`CNTFRQ_EL0`).
pub fn frequency() -> u64 {
    let value: u64;
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reading the frequency register has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, cntfrq_el0", out(reg) value, options(nostack));
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        value = 1;
    }
    value
}

/// Busy-waits for `ms` milliseconds.
pub fn delay_ms(ms: u64) {
    let start = counter();
    let ticks = frequency().saturating_mul(ms) / 1000;
    while counter().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}
