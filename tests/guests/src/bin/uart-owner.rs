//! A partition that owns the physical PL011 (passed through at its host
//! address): it writes to the UART's registers itself, so its text reaches
//! the serial line with no prefix, while the hypervisor's own messages go
//! to the semihosting console.

#![no_std]
#![no_main]

use bulkhead_test_guests::guest_main;

const UART: u64 = 0x0900_0000;
const UARTDR: u64 = UART;
const UARTFR: u64 = UART + 0x18;
/// `UARTFR.TXFF`: transmit FIFO full.
const TXFF: u32 = 1 << 5;

fn put(byte: u8) {
    // SAFETY: the UART's registers are this partition's (passthrough).
    unsafe {
        while core::ptr::read_volatile(UARTFR as *const u32) & TXFF != 0 {}
        core::ptr::write_volatile(UARTDR as *mut u32, u32::from(byte));
    }
}

fn main() -> Result<(), u64> {
    for &byte in b"uart-owner: this line went straight to the PL011\r\n" {
        put(byte);
    }
    Ok(())
}

guest_main!(main);
