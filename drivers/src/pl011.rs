//! Arm PrimeCell UART (PL011), transmit side.
//!
//! Register offsets and bits follow the PL011 Technical Reference Manual
//! (DDI 0183), section 3.2. The hypervisor only transmits; it relies on the
//! firmware having programmed the baud rate and enabled the UART, and never
//! changes that configuration.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_bitfields! [u32,
    /// Data register.
    DR [
        /// Transmit/receive data character.
        DATA OFFSET(0) NUMBITS(8) []
    ],
    /// Flag register.
    FR [
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) [],
        /// UART busy transmitting.
        BUSY OFFSET(3) NUMBITS(1) []
    ]
];

register_bitfields! [u32,
    /// Interrupt mask set/clear, and interrupt clear (same layout).
    INT [
        /// Receive interrupt.
        RX OFFSET(4) NUMBITS(1) [],
        /// Receive timeout interrupt.
        RT OFFSET(6) NUMBITS(1) []
    ]
];

register_structs! {
    /// The PL011 register block.
    pub Pl011Registers {
        (0x000 => dr: ReadWrite<u32, DR::Register>),
        (0x004 => _reserved0),
        (0x018 => fr: ReadOnly<u32, FR::Register>),
        (0x01c => _reserved1),
        (0x038 => imsc: ReadWrite<u32, INT::Register>),
        (0x03c => _reserved2),
        (0x044 => icr: WriteOnly<u32, INT::Register>),
        (0x048 => _reserved3),
        (0x1000 => @END),
    }
}

/// How many times a full FIFO is polled before a character is dropped, so a
/// wedged UART can never hang the hypervisor.
const TX_POLL_LIMIT: u32 = 1_000_000;

/// A PL011 used for output.
pub struct Pl011 {
    registers: &'static Pl011Registers,
}

impl Pl011 {
    /// Size of the register block.
    pub const MMIO_SIZE: u64 = 0x1000;

    /// A driver for the PL011 whose registers are at `base`.
    ///
    /// # Safety
    /// `base` must be the address, mapped as Device memory in the current
    /// translation regime, of a PL011 register block that nothing else drives
    /// concurrently, for the rest of the program.
    pub unsafe fn new(base: usize) -> Pl011 {
        // SAFETY: the caller vouches that `base` maps a PL011 register block
        // that lives for the rest of the program.
        Pl011 { registers: unsafe { &*(base as *const Pl011Registers) } }
    }

    /// Sends one byte, waiting (boundedly) for room in the FIFO.
    pub fn write_byte(&self, byte: u8) {
        let mut polls = 0;
        while self.registers.fr.is_set(FR::TXFF) {
            polls += 1;
            if polls >= TX_POLL_LIMIT {
                return;
            }
            core::hint::spin_loop();
        }
        self.registers.dr.write(DR::DATA.val(u32::from(byte)));
    }

    /// Takes one received byte, if the receive FIFO holds one.
    pub fn read_byte(&self) -> Option<u8> {
        if self.registers.fr.is_set(FR::RXFE) {
            return None;
        }
        Some(self.registers.dr.read(DR::DATA) as u8)
    }

    /// Raises the UART's interrupt while received data waits (receive and
    /// receive-timeout interrupts unmasked).
    pub fn enable_receive_interrupt(&self) {
        self.registers.icr.write(INT::RX::SET + INT::RT::SET);
        self.registers.imsc.write(INT::RX::SET + INT::RT::SET);
    }

    /// Sends a string, turning `\n` into `\r\n`.
    pub fn write_str(&self, text: &str) {
        for byte in text.bytes() {
            if byte == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
    }
}

impl core::fmt::Write for Pl011 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        Pl011::write_str(self, s);
        Ok(())
    }
}
