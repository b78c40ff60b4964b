//! A hostile x86_64 guest: it reads an I/O port outside its set (the PIT's channel 0, 0x40).
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
        core::arch::asm!("in al, dx", in("dx") 0x40u16, out("al") _);
    }
    println!("the attack was not stopped");
    Err(9)
}

guest_main!(main);
