//! A driver for QEMU's `edu` PCI device (a DMA engine with a 4 KiB buffer)
//! as a partition sees it: found in the partition's virtual PCI
//! configuration space, its BAR mapped by the hypervisor, its DMA confined
//! by the IOMMU to the partition's `dma = true` memory. Builds for both
//! architectures.
//!
//! Register map (QEMU `docs/specs/edu.rst`): 0x00 identification
//! (0xRRrr00ed), 0x04 liveness (reads back the inverse of what was
//! written), 0x80 DMA source, 0x88 DMA destination, 0x90 DMA count, 0x98
//! DMA command (bit 0 start/busy, bit 1 direction: 1 = from the device's
//! buffer to RAM, bit 2 raise an interrupt when done), 0x24 interrupt
//! status, 0x60 raise interrupt (ORs the value into the status and asserts
//! the interrupt), 0x64 interrupt acknowledge (clears those status bits and
//! deasserts once none is left); the buffer is at
//! device address 0x40000. The buffer is reachable only by DMA: QEMU's
//! model decodes no buffer window in its BAR (reads there return all-ones,
//! writes are dropped), so data goes in and out through DMA alone.

use crate::time;
use core::cell::Cell;

/// Guest-physical base of the virtual PCI configuration space
/// (`bulkhead_config::VIRTUAL_PCI_ECAM_BASE`).
pub const VIRTUAL_ECAM: u64 = 0x3f00_0000;
/// Bytes of one function's configuration space.
const FUNCTION_SIZE: u64 = 4096;
/// The edu's vendor and device IDs.
pub const EDU_ID: u32 = 0x11e8_1234;
/// The DMA buffer inside the device's address space.
pub const BUFFER: u64 = 0x4_0000;
/// Bytes in the DMA buffer.
pub const BUFFER_SIZE: u64 = 4096;

const REG_IDENT: u64 = 0x00;
const REG_LIVENESS: u64 = 0x04;
const REG_DMA_SOURCE: u64 = 0x80;
const REG_DMA_DESTINATION: u64 = 0x88;
const REG_DMA_COUNT: u64 = 0x90;
const REG_DMA_COMMAND: u64 = 0x98;
const REG_INTERRUPT_STATUS: u64 = 0x24;
const REG_INTERRUPT_RAISE: u64 = 0x60;
const REG_INTERRUPT_ACKNOWLEDGE: u64 = 0x64;
const DMA_START: u64 = 1 << 0;
const DMA_TO_RAM: u64 = 1 << 1;
/// DMA command bit: raise [`DMA_DONE`] when the transfer completes.
const DMA_INTERRUPT: u64 = 1 << 2;
/// The interrupt status bit the edu sets when a transfer started with
/// [`DMA_INTERRUPT`] completes (QEMU's `DMA_IRQ`).
pub const DMA_DONE: u32 = 0x100;
/// Configuration-space offset of the command register.
const CONFIG_COMMAND: u64 = 0x04;
const COMMAND_MEMORY: u32 = 1 << 1;
const COMMAND_BUS_MASTER: u32 = 1 << 2;
/// Command register bit that keeps the function from asserting INTx.
const COMMAND_INTX_DISABLE: u32 = 1 << 10;
/// Counter ticks to wait for one transfer (the model takes ~100 ms of
/// virtual time): 2 s at 1 GHz, plenty on every counter we run on.
const DMA_TIMEOUT_TICKS: u64 = 2_000_000_000;

/// A 32-bit load the hypervisor can emulate: one plain `mov`/`ldr`.
pub fn read32(address: u64) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        let value: u32;
        // SAFETY: `address` is device or configuration space the caller
        // owns; an explicit MOV keeps the compiler from folding the load
        // into another instruction the hypervisor would not emulate.
        unsafe { core::arch::asm!("mov {0:e}, [{1}]", out(reg) value, in(reg) address, options(nostack, readonly)) };
        value
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let value: u32;
        // SAFETY: as above; an explicit LDR without writeback (see `write32`).
        unsafe { core::arch::asm!("ldr {0:w}, [{1}]", out(reg) value, in(reg) address, options(nostack, readonly)) };
        value
    }
}

/// A 32-bit store the hypervisor can emulate.
pub fn write32(address: u64, value: u32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `read32`.
    unsafe {
        core::arch::asm!("mov [{0}], {1:e}", in(reg) address, in(reg) value, options(nostack))
    };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: as in `read32`; an explicit STR without writeback, whose trap
    // has a syndrome the hypervisor emulates from.
    unsafe {
        core::arch::asm!("str {1:w}, [{0}]", in(reg) address, in(reg) value, options(nostack))
    };
}

/// A 64-bit device register write (edu's DMA registers are 64-bit).
fn write64(address: u64, value: u64) {
    // SAFETY: the BAR is mapped into this partition as device memory.
    unsafe { core::ptr::write_volatile(address as *mut u64, value) };
}

fn read64(address: u64) -> u64 {
    // SAFETY: as in `write64`.
    unsafe { core::ptr::read_volatile(address as *const u64) }
}

/// Why the device could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EduError {
    /// No edu at the given virtual device number (what was there instead).
    NotFound(u32),
    /// BAR0 reads as zero: the hypervisor did not map it.
    NoBar,
    /// The liveness register did not invert.
    Dead,
    /// A transfer did not finish in time.
    Timeout,
}

/// The interrupt registers of an edu, apart from the [`Edu`] itself: an
/// interrupt handler cannot borrow the `Edu` the program holds, so it keeps
/// the BAR address and rebuilds these with [`Interrupts::at`].
#[derive(Clone, Copy, Debug)]
pub struct Interrupts {
    bar: u64,
}

impl Interrupts {
    /// The interrupt registers of the edu whose BAR is at `bar` (what
    /// [`Edu::bar`] returned).
    pub const fn at(bar: u64) -> Interrupts {
        Interrupts { bar }
    }

    /// The interrupt status register: the raised bits not yet acknowledged.
    pub fn status(&self) -> u32 {
        read32(self.bar + REG_INTERRUPT_STATUS)
    }

    /// Sets `bits` in the interrupt status, which asserts the interrupt.
    pub fn raise(&self, bits: u32) {
        write32(self.bar + REG_INTERRUPT_RAISE, bits);
    }

    /// Clears `bits` in the interrupt status; with none left the interrupt
    /// is deasserted.
    pub fn acknowledge(&self, bits: u32) {
        write32(self.bar + REG_INTERRUPT_ACKNOWLEDGE, bits);
    }
}

/// An edu the partition owns.
pub struct Edu {
    config: u64,
    bar: u64,
    /// Whether transfers raise [`DMA_DONE`] when they complete.
    completion_interrupts: Cell<bool>,
}

impl Edu {
    /// Finds the edu as device `device` of the virtual bus, enables memory
    /// decoding and bus mastering, and checks that it answers.
    ///
    /// # Errors
    /// [`EduError`] when it is not there or not alive.
    pub fn find(device: u64) -> Result<Edu, EduError> {
        let config = VIRTUAL_ECAM + device * 8 * FUNCTION_SIZE;
        let id = read32(config);
        if id != EDU_ID {
            return Err(EduError::NotFound(id));
        }
        let bar = u64::from(read32(config + 0x10) & !0xf);
        if bar == 0 {
            return Err(EduError::NoBar);
        }
        let command = read32(config + CONFIG_COMMAND) & 0xffff;
        write32(config + CONFIG_COMMAND, command | COMMAND_MEMORY | COMMAND_BUS_MASTER);
        let edu = Edu { config, bar, completion_interrupts: Cell::new(false) };
        write32(bar + REG_LIVENESS, 0x1234_5678);
        if read32(bar + REG_LIVENESS) != !0x1234_5678 {
            return Err(EduError::Dead);
        }
        Ok(edu)
    }

    /// The BAR's guest address.
    pub fn bar(&self) -> u64 {
        self.bar
    }

    /// The identification register (major.minor version in its top bytes).
    pub fn ident(&self) -> u32 {
        read32(self.bar + REG_IDENT)
    }

    /// Lets the function assert its legacy interrupt (clears INTx disable
    /// in its command register; the virtual configuration space passes
    /// that bit to the device).
    pub fn enable_intx(&self) {
        let command = read32(self.config + CONFIG_COMMAND) & 0xffff;
        write32(self.config + CONFIG_COMMAND, command & !COMMAND_INTX_DISABLE);
    }

    /// Its interrupt registers.
    pub fn interrupts(&self) -> Interrupts {
        Interrupts { bar: self.bar }
    }

    /// Whether the following transfers raise [`DMA_DONE`] when they end.
    pub fn set_completion_interrupts(&self, on: bool) {
        self.completion_interrupts.set(on);
    }

    fn transfer(&self, source: u64, destination: u64, count: u64, to_ram: bool) -> Result<(), EduError> {
        write64(self.bar + REG_DMA_SOURCE, source);
        write64(self.bar + REG_DMA_DESTINATION, destination);
        write64(self.bar + REG_DMA_COUNT, count);
        let direction = if to_ram { DMA_TO_RAM } else { 0 };
        let interrupt = if self.completion_interrupts.get() { DMA_INTERRUPT } else { 0 };
        write64(self.bar + REG_DMA_COMMAND, DMA_START | direction | interrupt);
        let start = time::counter();
        while read64(self.bar + REG_DMA_COMMAND) & DMA_START != 0 {
            if time::counter().wrapping_sub(start) > DMA_TIMEOUT_TICKS {
                return Err(EduError::Timeout);
            }
        }
        Ok(())
    }

    /// DMA from the device's buffer (at `offset`) to bus address `to`.
    ///
    /// # Errors
    /// [`EduError::Timeout`].
    pub fn dma_to_ram(&self, offset: u64, to: u64, count: u64) -> Result<(), EduError> {
        self.transfer(BUFFER + offset, to, count, true)
    }

    /// DMA from bus address `from` into the device's buffer (at `offset`).
    ///
    /// # Errors
    /// [`EduError::Timeout`].
    pub fn dma_from_ram(&self, from: u64, offset: u64, count: u64) -> Result<(), EduError> {
        self.transfer(from, BUFFER + offset, count, false)
    }
}
