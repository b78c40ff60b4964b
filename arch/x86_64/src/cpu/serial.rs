//! The 16550 UART (COM1 on PC platforms), through port I/O.
//!
//! Register offsets from the base port (PC16550D data sheet): 0 THR/RBR
//! (DLL with DLAB), 1 IER (DLM with DLAB), 2 FCR, 3 LCR, 4 MCR, 5 LSR.

use super::port::{inb, outb};

/// The base port of COM1.
pub const COM1: u16 = 0x3f8;

const THR: u16 = 0;
const IER: u16 = 1;
const FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
/// LSR: the transmit holding register is empty.
const LSR_THR_EMPTY: u8 = 1 << 5;
/// LSR: a received byte waits.
const LSR_DATA_READY: u8 = 1 << 0;
/// Polls of LSR before a byte is written anyway (a missing UART never
/// reports ready; this bounds the wait).
const MAX_POLLS: u32 = 100_000;

/// A 16550 at an I/O port base.
pub struct Uart16550 {
    base: u16,
}

impl Uart16550 {
    /// A handle on the UART at `base`.
    ///
    /// # Safety
    /// The eight ports from `base` must be a 16550 that only this handle drives.
    pub const unsafe fn new(base: u16) -> Uart16550 {
        Uart16550 { base }
    }

    /// Programs 115200 baud, 8N1, FIFOs on, interrupts off.
    pub fn init(&self) {
        // SAFETY: the ports are this UART's (constructor's contract).
        unsafe {
            outb(self.base + IER, 0);
            outb(self.base + LCR, 0x80); // DLAB: divisor latch follows
            outb(self.base + THR, 1); // DLL: 115200 / 1
            outb(self.base + IER, 0); // DLM
            outb(self.base + LCR, 0x03); // 8 data bits, no parity, 1 stop bit
            outb(self.base + FCR, 0xc7); // enable and clear FIFOs
            outb(self.base + MCR, 0x03); // DTR, RTS
        }
    }

    /// Sends one byte, waiting (bounded) for room.
    pub fn write_byte(&self, byte: u8) {
        for _ in 0..MAX_POLLS {
            // SAFETY: as in `init`.
            if unsafe { inb(self.base + LSR) } & LSR_THR_EMPTY != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        // SAFETY: as in `init`.
        unsafe { outb(self.base + THR, byte) };
    }

    /// Takes one received byte, if any.
    pub fn read_byte(&self) -> Option<u8> {
        // SAFETY: as in `init`.
        unsafe { (inb(self.base + LSR) & LSR_DATA_READY != 0).then(|| inb(self.base + THR)) }
    }
}

impl core::fmt::Write for Uart16550 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
        Ok(())
    }
}
