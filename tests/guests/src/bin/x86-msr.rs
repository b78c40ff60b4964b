//! A hostile x86_64 guest: it writes an MSR it does not own (IA32_SYSENTER_CS, 0x174).
//! The hypervisor must stop this partition with a report and keep running;
//! reaching the end is a failure.

#![no_std]
#![no_main]

use bulkhead_test_guests::{guest_main, println};

fn main() -> Result<(), u64> {
    println!("attacking");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: deliberately forbidden: the hypervisor must stop the
    // partition at this instruction.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") 0x174u32, in("eax") 0u32, in("edx") 0u32);
    }
    println!("the attack was not stopped");
    Err(9)
}

guest_main!(main);
