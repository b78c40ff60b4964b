//! A hostile x86_64 guest: it triple-faults: an empty IDT, then a breakpoint.
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
        let idt = [0u16; 5];
        core::arch::asm!("lidt [{}]", "int3", in(reg) idt.as_ptr());
    }
    println!("the attack was not stopped");
    Err(9)
}

guest_main!(main);
