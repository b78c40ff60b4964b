//! QEMU's `edu` teaching device (QEMU `docs/specs/edu.rst`), used as a DMA
//! engine by the hypervisor's DMA self-test. Only the registers the test
//! needs are described.
//!
//! A transfer copies `count` bytes between the device's 4 KiB buffer, at
//! device address [`EDU_BUFFER`], and a DMA address; it starts when the
//! command register is written with `START` and takes ~100 ms of virtual
//! time. The device raises a QEMU hardware error (ending the emulator) if
//! the buffer side of a transfer leaves the buffer, so callers must keep
//! `count <= EDU_BUFFER_SIZE`.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_bitfields! [u64,
    /// The DMA command register at 0x98.
    DMA_CMD [
        /// Start a transfer; reads 1 while it runs.
        START OFFSET(0) NUMBITS(1) [],
        /// 0: DMA address to buffer (device reads RAM); 1: buffer to DMA
        /// address (device writes RAM).
        DIRECTION OFFSET(1) NUMBITS(1) [FromRam = 0, ToRam = 1],
        /// Raise the device's interrupt when done.
        IRQ OFFSET(2) NUMBITS(1) []
    ]
];

register_structs! {
    /// The edu's BAR 0 registers.
    EduRegisters {
        (0x00 => identification: ReadOnly<u32>),
        (0x04 => _reserved0),
        (0x24 => interrupt_status: ReadOnly<u32>),
        (0x28 => _reserved1),
        (0x60 => interrupt_raise: WriteOnly<u32>),
        (0x64 => interrupt_acknowledge: WriteOnly<u32>),
        (0x68 => _reserved2),
        (0x80 => dma_source: ReadWrite<u64>),
        (0x88 => dma_destination: ReadWrite<u64>),
        (0x90 => dma_count: ReadWrite<u64>),
        (0x98 => dma_command: ReadWrite<u64, DMA_CMD::Register>),
        (0xa0 => @END),
    }
}

/// PCI vendor ID of QEMU's edu.
pub const EDU_VENDOR: u16 = 0x1234;
/// PCI device ID of QEMU's edu.
pub const EDU_DEVICE: u16 = 0x11e8;
/// The device address of the edu's DMA buffer.
pub const EDU_BUFFER: u64 = 0x4_0000;
/// Bytes in the DMA buffer.
pub const EDU_BUFFER_SIZE: u64 = 0x1000;
/// Bits 7:0 of the identification register: 0xed.
const IDENTIFICATION_MAGIC: u32 = 0xed;

/// An edu device's registers.
pub struct Edu {
    registers: &'static EduRegisters,
}

impl Edu {
    /// The edu whose BAR 0 is at `base`.
    ///
    /// # Safety
    /// `base` must map the edu's BAR 0 (memory decoding on) as Device
    /// memory while the value is used, driven by nothing else.
    pub unsafe fn new(base: usize) -> Edu {
        // SAFETY: the caller vouches for the mapping.
        Edu { registers: unsafe { &*(base as *const EduRegisters) } }
    }

    /// Whether the identification register reads as an edu's.
    pub fn identified(&self) -> bool {
        self.registers.identification.get() & 0xff == IDENTIFICATION_MAGIC
    }

    /// Starts copying `count` bytes (at most [`EDU_BUFFER_SIZE`], clamped)
    /// from the device's buffer to DMA address `destination`.
    pub fn start_write_to(&self, destination: u64, count: u64) {
        self.registers.dma_source.set(EDU_BUFFER);
        self.registers.dma_destination.set(destination);
        self.registers.dma_count.set(count.min(EDU_BUFFER_SIZE));
        self.registers.dma_command.write(DMA_CMD::START::SET + DMA_CMD::DIRECTION::ToRam);
    }

    /// Whether a transfer is still running.
    pub fn busy(&self) -> bool {
        self.registers.dma_command.is_set(DMA_CMD::START)
    }

    /// Raises the edu's interrupt with `status` bits set in its interrupt
    /// status (an MSI when MSI is enabled, else INTA).
    pub fn raise_interrupt(&self, status: u32) {
        self.registers.interrupt_raise.set(status);
    }

    /// The interrupt status register.
    pub fn interrupt_status(&self) -> u32 {
        self.registers.interrupt_status.get()
    }

    /// Clears `status` bits of the interrupt status (INTA drops at 0).
    pub fn acknowledge_interrupt(&self, status: u32) {
        self.registers.interrupt_acknowledge.set(status);
    }
}
