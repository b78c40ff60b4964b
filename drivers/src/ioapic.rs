//! The host's I/O APIC (Intel 82093AA datasheet; ICH9 datasheet §13.5): two
//! windowed registers, IOREGSEL (+0x00) selects and IOWIN (+0x10) reads or
//! writes the selected 32-bit register. The hypervisor uses it to route the
//! INTx lines of assigned PCI functions to the CPU of their partition.
//!
//! The select-then-access pair is not atomic: callers serialise all
//! accesses to one I/O APIC (the image keeps it behind a lock).

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::ReadWrite;

register_structs! {
    /// The I/O APIC's register window.
    IoApicRegisters {
        (0x00 => ioregsel: ReadWrite<u32>),
        (0x04 => _reserved0),
        (0x10 => iowin: ReadWrite<u32>),
        (0x14 => @END),
    }
}

/// Register indexes behind IOWIN.
const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_REDIRECTION: u32 = 0x10;

/// Redirection entry bits (82093AA §3.2.4).
pub mod entry {
    /// Bits 7:0: vector.
    pub const VECTOR: u64 = 0xff;
    /// Bit 13: active low.
    pub const POLARITY_LOW: u64 = 1 << 13;
    /// Bit 14: remote IRR (read-only).
    pub const REMOTE_IRR: u64 = 1 << 14;
    /// Bit 15: level-triggered.
    pub const LEVEL: u64 = 1 << 15;
    /// Bit 16: masked.
    pub const MASKED: u64 = 1 << 16;
    /// Bits 63:56: destination (physical mode: the APIC ID).
    pub const DESTINATION_SHIFT: u32 = 56;

    /// A fixed-delivery, physical-destination entry for `vector` at the
    /// CPU with APIC ID `destination`: level-triggered, active low (a PCI
    /// INTx line, PCI 3.0 §2.2.6) when `pci_intx`, masked if `masked`.
    pub const fn fixed(vector: u8, destination: u8, pci_intx: bool, masked: bool) -> u64 {
        let mut value = vector as u64 | ((destination as u64) << DESTINATION_SHIFT);
        if pci_intx {
            value |= LEVEL | POLARITY_LOW;
        }
        if masked {
            value |= MASKED;
        }
        value
    }
}

/// The GSI that INTx pin `pin` (1 = INTA .. 4 = INTD) of a function in
/// device `device` of bus 0 drives on QEMU `q35`, whose ICH9 LPC bridge
/// routes it, by default, to PIRQ E-H: PIRQ `(device + pin - 1) % 4 + 4`
/// (QEMU `hw/isa/lpc_ich9.c`, `ich9_cc_init`, "int[A-D] -> pirq[E-F]"),
/// and PIRQ n reaches the I/O APIC at GSI 16 + n whatever the PIC routing
/// registers say (`ich9_pirq_to_gsi`). Devices 25-31 (the chipset's own
/// functions) are routed by chipset registers instead: `None`. The ACPI
/// `_PRT` that states this on real machines is AML, which Bulkhead does
/// not interpret; the `x86-dma-edu` scenario checks the edu's line.
pub const fn q35_intx_gsi(device: u8, pin: u8) -> Option<u32> {
    if device >= 25 || pin == 0 || pin > 4 {
        return None;
    }
    let pirq = (device as u32 + pin as u32 - 1) % 4 + 4;
    Some(16 + pirq)
}

/// One I/O APIC.
pub struct IoApic {
    registers: &'static IoApicRegisters,
}

impl IoApic {
    /// The I/O APIC whose registers are at `base`.
    ///
    /// # Safety
    /// `base` must map the I/O APIC's register page uncached while the
    /// value is used, and every access to it must go through this value
    /// (the select-then-access pairs must not interleave).
    pub unsafe fn new(base: usize) -> IoApic {
        // SAFETY: the caller vouches for the mapping.
        IoApic { registers: unsafe { &*(base as *const IoApicRegisters) } }
    }

    fn read(&self, index: u32) -> u32 {
        self.registers.ioregsel.set(index);
        self.registers.iowin.get()
    }

    fn write(&self, index: u32, value: u32) {
        self.registers.ioregsel.set(index);
        self.registers.iowin.set(value);
    }

    /// The ID register's ID (bits 27:24).
    pub fn id(&self) -> u8 {
        ((self.read(REG_ID) >> 24) & 0xf) as u8
    }

    /// The version register: `(version, inputs)`, inputs = maximum
    /// redirection entry + 1.
    pub fn version(&self) -> (u8, u32) {
        let value = self.read(REG_VERSION);
        (value as u8, ((value >> 16) & 0xff) + 1)
    }

    /// Redirection entry `input` (no bounds check against the version's
    /// count: the caller checked).
    pub fn entry(&self, input: u32) -> u64 {
        let low = self.read(REG_REDIRECTION + 2 * input);
        let high = self.read(REG_REDIRECTION + 2 * input + 1);
        (u64::from(high) << 32) | u64::from(low)
    }

    /// Writes redirection entry `input`: masked first, the high dword, then
    /// the low dword (with the caller's mask bit), so that no half-written
    /// entry is ever live.
    pub fn set_entry(&self, input: u32, value: u64) {
        self.write(REG_REDIRECTION + 2 * input, (value as u32) | entry::MASKED as u32);
        self.write(REG_REDIRECTION + 2 * input + 1, (value >> 32) as u32);
        self.write(REG_REDIRECTION + 2 * input, value as u32);
    }

    /// Masks or unmasks input `input`, the rest of its entry unchanged.
    pub fn set_masked(&self, input: u32, masked: bool) {
        let low = self.read(REG_REDIRECTION + 2 * input);
        let low = if masked { low | entry::MASKED as u32 } else { low & !(entry::MASKED as u32) };
        self.write(REG_REDIRECTION + 2 * input, low);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_intx_entries() {
        // Vector 0x30 at APIC ID 0, level, active low, masked.
        assert_eq!(entry::fixed(0x30, 0, true, true), 0x0001_a030);
        assert_eq!(entry::fixed(0x31, 2, true, false), 0x0200_0000_0000_a031);
        assert_eq!(entry::fixed(0x31, 0, false, false), 0x31);
    }

    #[test]
    fn q35_default_routing() {
        // The edu at 00:01.0, INTA: PIRQ F, GSI 21.
        assert_eq!(q35_intx_gsi(1, 1), Some(21));
        assert_eq!(q35_intx_gsi(0, 1), Some(20));
        assert_eq!(q35_intx_gsi(2, 4), Some(21));
        assert_eq!(q35_intx_gsi(3, 1), Some(23));
        assert_eq!(q35_intx_gsi(1, 0), None, "no pin");
        assert_eq!(q35_intx_gsi(31, 1), None, "chipset device");
    }
}
