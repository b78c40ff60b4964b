//! Cache maintenance by address range.

/// Smallest data-cache line on any Armv8 CPU; using it for the stride is
/// always correct (possibly redundant on CPUs with larger lines).
const MIN_LINE: u64 = 64;

/// Cleans and invalidates `[base, base + size)` to the point of coherency, so
/// that a guest running with its MMU off (non-cacheable accesses) sees what
/// the hypervisor wrote through its cacheable mapping.
pub fn clean_invalidate_to_poc(base: u64, size: u64) {
    let end = base.saturating_add(size);
    let mut line = base & !(MIN_LINE - 1);
    while line < end {
        #[cfg(all(target_arch = "aarch64", not(test)))]
        // SAFETY: maintenance by VA on mapped memory only writes back data.
        unsafe {
            core::arch::asm!("dc civac, {}", in(reg) line, options(nostack, preserves_flags));
        }
        line += MIN_LINE;
    }
    #[cfg(all(target_arch = "aarch64", not(test)))]
    // SAFETY: a barrier has no effect beyond ordering.
    unsafe {
        core::arch::asm!("dsb sy", options(nostack, preserves_flags));
    }
}

/// Makes this CPU's earlier stores to memory visible to coherent observers
/// (other CPUs, a coherent SMMU walking tables) before any later access
/// (`DSB ISHST`).
pub fn barrier_store() {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    // SAFETY: a barrier has no effect beyond ordering.
    unsafe {
        core::arch::asm!("dsb ishst", options(nostack, preserves_flags));
    }
}

/// Invalidates the whole instruction cache (inner shareable), for after
/// writing code that a guest will execute.
pub fn invalidate_icache() {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    // SAFETY: invalidating the instruction cache is always safe.
    unsafe {
        core::arch::asm!("ic ialluis", "dsb ish", "isb", options(nostack, preserves_flags));
    }
}
