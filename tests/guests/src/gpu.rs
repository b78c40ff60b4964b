//! A small driver for the virtual GPU a partition sees (DESIGN.md §5,
//! `bulkhead_abi::gpu::vgpu`), for both architectures: it finds the PCI
//! function in the virtual configuration space, reads its information
//! page, maps pages into its GTT (8-byte writes, or two 4-byte halves),
//! runs a ring in its own RAM mapped through that GTT, builds blitter and
//! MI commands, submits them (RING_TAIL) and waits for completion by the
//! function's interrupt ([`crate::intx`]) with a bound.
//!
//! The register BAR traps: every access to it is one plain load or store
//! the hypervisor can emulate ([`crate::edu::read32`] and friends, and
//! [`write64`]/[`read64`] for whole GTT entries). The local-memory BAR and
//! the partition's RAM are mapped directly and accessed with volatile loads
//! and stores ([`ram_read32`], [`ram_write32`]).

pub mod commands;
pub mod ppgtt;

use crate::edu::{VIRTUAL_ECAM, read32, write32};
use crate::intx::{self, Intx, IntxError};
use crate::time;
use bulkhead_abi::gpu::{cmd, gtt, vgpu};
use core::sync::atomic::{AtomicU64, Ordering};

/// Bytes of one function's configuration space.
const FUNCTION_SIZE: u64 = 4096;
/// Configuration-space offsets: command register, BAR0, BAR2.
const CONFIG_COMMAND: u64 = 0x04;
const CONFIG_BAR0: u64 = 0x10;
const CONFIG_BAR2: u64 = 0x18;
const COMMAND_MEMORY: u32 = 1 << 1;
const COMMAND_BUS_MASTER: u32 = 1 << 2;
const COMMAND_INTX_DISABLE: u32 = 1 << 10;
/// BAR bits 2:1 = 0b10: a 64-bit memory BAR (the next dword holds 63:32).
const BAR_TYPE_64: u32 = 0b100;

/// Where the partition's RAM starts and the GPU work area the test
/// programs use inside it: the configurations give them one RAM region of
/// at least 16 MiB with `dma = true` at [`RAM_BASE`]. The programs are
/// loaded at its start (arm64) or 2 MiB in (x86_64); the x86_64 guest page
/// tables sit in its top pages.
pub mod layout {
    /// Guest-physical base of the partition's RAM.
    #[cfg(target_arch = "aarch64")]
    pub const RAM_BASE: u64 = 0x4000_0000;
    /// Guest-physical base of the partition's RAM.
    #[cfg(not(target_arch = "aarch64"))]
    pub const RAM_BASE: u64 = 0;
    /// Bytes of RAM the programs need (one region, `dma = true`).
    pub const RAM_SIZE: u64 = 0x100_0000;
    /// The GPU work area: rings, surfaces, marker pages (4 MiB).
    pub const WORK: u64 = RAM_BASE + 0x80_0000;
    /// Bytes of the work area.
    pub const WORK_SIZE: u64 = 0x40_0000;
    /// The area the per-process page-table programs (`gpu-ppgtt*`) keep
    /// their ring, table pool and small pages in (4 MiB below [`WORK`];
    /// they use [`WORK`] for two 2 MiB pages).
    pub const PPGTT_AREA: u64 = RAM_BASE + 0x40_0000;
    /// Bytes of [`PPGTT_AREA`].
    pub const PPGTT_AREA_SIZE: u64 = 0x40_0000;
    /// Where `gpu-client` leaves its final image (see
    /// [`super::commands::final_pixel`]).
    pub const FINAL_IMAGE: u64 = RAM_BASE + bulkhead_abi::testdata::final_image::RAM_OFFSET;

    /// Checks that the program (code, data, stack) ends below [`WORK`];
    /// returns where it ends otherwise.
    ///
    /// # Errors
    /// The end of the program's stack.
    pub fn check_program_below_work() -> Result<(), u64> {
        check_program_below(WORK)
    }

    /// Checks that the program (code, data, stack) ends below `limit`;
    /// returns where it ends otherwise.
    ///
    /// # Errors
    /// The end of the program's stack.
    pub fn check_program_below(limit: u64) -> Result<(), u64> {
        #[cfg(target_os = "none")]
        {
            unsafe extern "C" {
                static __stack_top: u8;
            }
            let end = core::ptr::addr_of!(__stack_top) as u64;
            if end > limit {
                return Err(end);
            }
        }
        #[cfg(not(target_os = "none"))]
        let _ = limit;
        Ok(())
    }
}

/// Pixels a check found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadPixels {
    /// How many.
    pub count: u32,
    /// The first one's column.
    pub x: u32,
    /// The first one's row.
    pub y: u32,
    /// What it held.
    pub found: u32,
    /// What it should have held.
    pub expected: u32,
}

/// Checks every pixel of the 32 bpp surface at guest-physical `address`
/// (its RAM or its local-memory BAR) against `expected(x, y)`.
///
/// # Errors
/// [`BadPixels`] when any differs.
pub fn check_surface(address: u64, pitch: u32, width: u32, height: u32, expected: impl Fn(u32, u32) -> u32) -> Result<(), BadPixels> {
    let mut bad: Option<BadPixels> = None;
    for y in 0..height {
        for x in 0..width {
            let found = ram_read32(address + u64::from(y) * u64::from(pitch) + 4 * u64::from(x));
            let want = expected(x, y);
            if found != want {
                match bad.as_mut() {
                    Some(bad) => bad.count += 1,
                    None => bad = Some(BadPixels { count: 1, x, y, found, expected: want }),
                }
            }
        }
    }
    bad.map_or(Ok(()), Err)
}

/// Why the GPU could not be used, or work did not finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuError {
    /// No function with the vGPU's IDs on the virtual bus.
    NotFound,
    /// A BAR reads as zero: the hypervisor did not place it.
    NoBar,
    /// GPU_ID, GPU_VERSION or INFO_MAGIC is not what the ABI says (the value).
    Identity(u32),
    /// A GTT index beyond GTT_SIZE.
    GttIndex(u64),
    /// An address a GTT entry cannot hold.
    GttAddress(u64),
    /// The ring is not set up, or the commands do not fit in it.
    Ring,
    /// The interrupt line could not be set up.
    Interrupt,
    /// Submitted work neither completed, nor was rejected, nor faulted in time.
    Timeout,
    /// The work finished but its interrupt was not taken in time.
    InterruptLost,
}

impl From<IntxError> for GpuError {
    fn from(error: IntxError) -> GpuError {
        match error {
            IntxError::Lost => GpuError::InterruptLost,
            _ => GpuError::Interrupt,
        }
    }
}

/// How a GTT entry is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GttWrite {
    /// One 8-byte store.
    Whole,
    /// Two 4-byte stores, low half first.
    Halves,
}

/// A 64-bit store the hypervisor can emulate (one `mov`/`str`).
pub fn write64(address: u64, value: u64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `address` is the GPU's register BAR, which this partition
    // owns; an explicit MOV keeps the store one emulatable instruction.
    unsafe {
        core::arch::asm!("mov [{0}], {1}", in(reg) address, in(reg) value, options(nostack))
    };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: as above; an explicit STR without writeback: a volatile store
    // may become a post-indexed STR, whose trap carries no syndrome the
    // hypervisor can emulate from.
    unsafe {
        core::arch::asm!("str {1}, [{0}]", in(reg) address, in(reg) value, options(nostack))
    };
}

/// A 64-bit load the hypervisor can emulate.
pub fn read64(address: u64) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let value: u64;
        // SAFETY: as in `write64`.
        unsafe { core::arch::asm!("mov {0}, [{1}]", out(reg) value, in(reg) address, options(nostack, readonly)) };
        value
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let value: u64;
        // SAFETY: as in `write64`.
        unsafe { core::arch::asm!("ldr {0}, [{1}]", out(reg) value, in(reg) address, options(nostack, readonly)) };
        value
    }
}

/// A volatile load from the partition's RAM or local-memory BAR.
pub fn ram_read32(address: u64) -> u32 {
    // SAFETY: the callers pass addresses in the work area, the final image
    // or the local-memory BAR, which belong to this partition and to no
    // Rust object.
    unsafe { core::ptr::read_volatile(address as *const u32) }
}

/// A volatile store to the partition's RAM or local-memory BAR.
pub fn ram_write32(address: u64, value: u32) {
    // SAFETY: as in `ram_read32`.
    unsafe { core::ptr::write_volatile(address as *mut u32, value) }
}

/// Fills `bytes` (a multiple of 4) at `address` with `value`.
pub fn ram_fill(address: u64, bytes: u64, value: u32) {
    for offset in (0..bytes).step_by(4) {
        ram_write32(address + offset, value);
    }
}

/// The register BAR, for the interrupt handler.
static REGISTERS: AtomicU64 = AtomicU64::new(0);

/// Reads INT_STATUS and writes those bits back (RW1C).
fn acknowledge() -> u32 {
    let registers = REGISTERS.load(Ordering::SeqCst);
    let status = read32(registers + vgpu::INT_STATUS);
    if status != 0 {
        write32(registers + vgpu::INT_STATUS, status);
    }
    status
}

/// What the information page says.
#[derive(Clone, Copy, Debug)]
pub struct Info {
    /// Graphics address of GTT entry 0.
    pub graphics_base: u64,
    /// Entries in its GTT.
    pub gtt_entries: u64,
    /// Its interrupt: SPI INTID (arm64) or I/O APIC pin (x86_64).
    pub interrupt: u32,
    /// Bytes of local memory in BAR2.
    pub local_size: u64,
}

/// How submitted work ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ran to its MI_USER_INTERRUPT: the INT_STATUS bits taken and SEQNO.
    Completed {
        /// INT_STATUS bits acknowledged.
        status: u32,
        /// SEQNO after it.
        seqno: u32,
    },
    /// The mediator rejected it.
    Rejected {
        /// INT_STATUS bits acknowledged.
        status: u32,
        /// INFO_SUBMIT_ERROR (a `REJECT_*` code).
        code: u32,
        /// INFO_SUBMIT_ERROR_OFFSET.
        offset: u32,
        /// INFO_SUBMIT_ERROR_HEADER.
        header: u32,
    },
    /// The GPU faulted on it.
    Faulted {
        /// INT_STATUS bits acknowledged.
        status: u32,
        /// FAULT_STATUS.
        fault: u32,
        /// FAULT_ADDRESS.
        address: u64,
    },
}

/// The ring: pages of the partition's RAM mapped through its GTT.
#[derive(Clone, Copy, Debug)]
struct Ring {
    /// Guest-physical address of the ring memory.
    memory: u64,
    /// Bytes in the ring.
    size: u32,
    /// Byte offset of the next command (what RING_TAIL was last set to).
    tail: u32,
}

/// The partition's virtual GPU.
pub struct Gpu {
    config: u64,
    registers: u64,
    local: u64,
    info: Info,
    ring: Option<Ring>,
    intx: Option<Intx>,
}

impl Gpu {
    /// Finds the vGPU on bus 0 of the virtual configuration space, enables
    /// memory decoding and bus mastering, checks its identity registers and
    /// reads its information page.
    ///
    /// # Errors
    /// [`GpuError::NotFound`], [`GpuError::NoBar`], [`GpuError::Identity`].
    pub fn find() -> Result<Gpu, GpuError> {
        let wanted = u32::from(vgpu::DEVICE_ID) << 16 | u32::from(vgpu::VENDOR_ID);
        let config = (0..32u64)
            .map(|device| VIRTUAL_ECAM + device * 8 * FUNCTION_SIZE)
            .find(|&config| read32(config) == wanted)
            .ok_or(GpuError::NotFound)?;
        let registers = bar(config, CONFIG_BAR0);
        let local = bar(config, CONFIG_BAR2);
        if registers == 0 || local == 0 {
            return Err(GpuError::NoBar);
        }
        let command = read32(config + CONFIG_COMMAND) & 0xffff;
        write32(config + CONFIG_COMMAND, command | COMMAND_MEMORY | COMMAND_BUS_MASTER);
        for (offset, value) in [
            (vgpu::GPU_ID, vgpu::GPU_ID_VALUE),
            (vgpu::GPU_VERSION, vgpu::GPU_VERSION_VALUE),
            (vgpu::INFO_MAGIC, vgpu::INFO_MAGIC_VALUE),
        ] {
            let found = read32(registers + offset);
            if found != value {
                return Err(GpuError::Identity(found));
            }
        }
        let pair = |lo: u64, hi: u64| u64::from(read32(registers + hi)) << 32 | u64::from(read32(registers + lo));
        let info = Info {
            graphics_base: pair(vgpu::INFO_GRAPHICS_BASE_LO, vgpu::INFO_GRAPHICS_BASE_HI),
            gtt_entries: u64::from(read32(registers + vgpu::GTT_SIZE)),
            interrupt: read32(registers + vgpu::INFO_INTERRUPT),
            local_size: pair(vgpu::LMEM_SIZE_LO, vgpu::LMEM_SIZE_HI),
        };
        REGISTERS.store(registers, Ordering::SeqCst);
        Ok(Gpu { config, registers, local, info, ring: None, intx: None })
    }

    /// The information page's figures.
    pub fn info(&self) -> Info {
        self.info
    }

    /// Guest-physical address of the register BAR.
    pub fn registers(&self) -> u64 {
        self.registers
    }

    /// Guest-physical address of the local-memory BAR.
    pub fn local(&self) -> u64 {
        self.local
    }

    /// A 32-bit register.
    pub fn read(&self, offset: u64) -> u32 {
        read32(self.registers + offset)
    }

    /// Writes a 32-bit register.
    pub fn write(&self, offset: u64, value: u32) {
        write32(self.registers + offset, value);
    }

    /// Enables its interrupt: the line INFO_INTERRUPT names (level, as PCI
    /// INTx), INTx at the function, and every INT_STATUS bit in INT_ENABLE.
    ///
    /// # Errors
    /// [`GpuError::Interrupt`].
    pub fn enable_interrupts(&mut self) -> Result<(), GpuError> {
        self.write(vgpu::INT_STATUS, !0);
        let intx = Intx::start(self.info.interrupt, true, acknowledge).map_err(|_| GpuError::Interrupt)?;
        let command = read32(self.config + CONFIG_COMMAND) & 0xffff;
        write32(self.config + CONFIG_COMMAND, command & !COMMAND_INTX_DISABLE);
        self.write(vgpu::INT_ENABLE, vgpu::INT_USER | vgpu::INT_FAULT | vgpu::INT_REJECTED);
        self.intx = Some(intx);
        Ok(())
    }

    /// Interrupts taken so far.
    pub fn interrupts_taken(&self) -> u32 {
        self.intx.as_ref().map_or(0, Intx::taken)
    }

    /// Masks interrupts at the CPU again.
    ///
    /// # Errors
    /// [`GpuError::Interrupt`] when an interrupt that was not the GPU's came.
    pub fn finish(&mut self) -> Result<(), GpuError> {
        match self.intx.take() {
            Some(intx) => intx.finish().map_err(|_| GpuError::Interrupt),
            None => Ok(()),
        }
    }

    /// Graphics address of GTT entry `index`.
    pub fn graphics_address(&self, index: u64) -> u64 {
        self.info.graphics_base + index * gtt::PAGE_SIZE
    }

    fn gtt_slot(&self, index: u64) -> Result<u64, GpuError> {
        if index >= self.info.gtt_entries {
            return Err(GpuError::GttIndex(index));
        }
        Ok(self.registers + vgpu::GTT_OFFSET + index * gtt::ENTRY_SIZE)
    }

    /// Writes GTT entry `index` as given (any value: tests write bad ones).
    ///
    /// # Errors
    /// [`GpuError::GttIndex`].
    pub fn write_gtt(&self, index: u64, entry: u64, how: GttWrite) -> Result<(), GpuError> {
        let slot = self.gtt_slot(index)?;
        match how {
            GttWrite::Whole => write64(slot, entry),
            GttWrite::Halves => {
                write32(slot, entry as u32);
                write32(slot + 4, (entry >> 32) as u32);
            }
        }
        Ok(())
    }

    /// Writes only the low half of GTT entry `index`.
    ///
    /// # Errors
    /// [`GpuError::GttIndex`].
    pub fn write_gtt_low(&self, index: u64, low: u32) -> Result<(), GpuError> {
        write32(self.gtt_slot(index)?, low);
        Ok(())
    }

    /// Reads GTT entry `index` back (one 8-byte load).
    ///
    /// # Errors
    /// [`GpuError::GttIndex`].
    pub fn read_gtt(&self, index: u64) -> Result<u64, GpuError> {
        Ok(read64(self.gtt_slot(index)?))
    }

    /// Maps `pages` pages of its RAM from guest-physical `address` at GTT
    /// entries `first..`; returns the graphics address of the first.
    ///
    /// # Errors
    /// [`GpuError::GttIndex`], [`GpuError::GttAddress`].
    pub fn map_ram(&self, first: u64, address: u64, pages: u64, how: GttWrite) -> Result<u64, GpuError> {
        for page in 0..pages {
            let target = address + page * gtt::PAGE_SIZE;
            let entry = gtt::present_entry(target).ok_or(GpuError::GttAddress(target))?;
            self.write_gtt(first + page, entry, how)?;
        }
        Ok(self.graphics_address(first))
    }

    /// Maps `pages` pages of its local memory from byte `offset` at GTT
    /// entries `first..`; returns the graphics address of the first.
    ///
    /// # Errors
    /// [`GpuError::GttIndex`], [`GpuError::GttAddress`].
    pub fn map_local(&self, first: u64, offset: u64, pages: u64, how: GttWrite) -> Result<u64, GpuError> {
        for page in 0..pages {
            let target = offset + page * gtt::PAGE_SIZE;
            if target + gtt::PAGE_SIZE > self.info.local_size {
                return Err(GpuError::GttAddress(target));
            }
            let entry = gtt::present_entry(target).ok_or(GpuError::GttAddress(target))? | vgpu::GTT_LOCAL_MEMORY;
            self.write_gtt(first + page, entry, how)?;
        }
        Ok(self.graphics_address(first))
    }

    /// Sets up a ring of `pages` pages of RAM at `memory`, mapped at GTT
    /// entries `first..`: zeroes it, points RING_START at it and enables it.
    ///
    /// # Errors
    /// As [`Gpu::map_ram`]; [`GpuError::Ring`] for a size RING_CTL cannot hold.
    pub fn setup_ring(&mut self, first: u64, memory: u64, pages: u32) -> Result<(), GpuError> {
        if pages == 0 || (pages - 1) << 12 & !vgpu::RING_CTL_PAGES_MASK != 0 {
            return Err(GpuError::Ring);
        }
        let size = pages * gtt::PAGE_SIZE as u32;
        ram_fill(memory, u64::from(size), 0);
        let start = self.map_ram(first, memory, u64::from(pages), GttWrite::Whole)?;
        self.write(vgpu::RING_CTL, 0);
        self.write(vgpu::RING_START, start as u32);
        self.write(vgpu::RING_CTL, vgpu::RING_CTL_ENABLE | (pages - 1) << 12);
        // RING_TAIL only once the ring is on: a tail written to a disabled
        // ring is a submission the mediator rejects (RING_TAIL = RING_HEAD
        // on an enabled ring submits nothing).
        let tail = self.read(vgpu::RING_HEAD) & vgpu::RING_OFFSET_MASK;
        self.write(vgpu::RING_TAIL, tail);
        self.ring = Some(Ring { memory, size, tail: tail % size });
        Ok(())
    }

    /// Writes `dwords` into the ring at its tail (wrapping), pads to a
    /// qword with MI_NOOP and moves RING_TAIL past them: a submission.
    /// Returns the ring offset of the first dword.
    ///
    /// # Errors
    /// [`GpuError::Ring`]: no ring, or the commands do not fit.
    pub fn submit(&mut self, dwords: &[u32]) -> Result<u32, GpuError> {
        let ring = self.ring.as_mut().ok_or(GpuError::Ring)?;
        let padded = (dwords.len() as u32 * 4 + 7) & !7;
        if padded >= ring.size {
            return Err(GpuError::Ring);
        }
        let first = ring.tail;
        let mut offset = first;
        let noop = cmd::mi(cmd::MI_NOOP, 0);
        for &dword in dwords.iter().chain(core::iter::repeat_n(&noop, ((padded / 4) as usize) - dwords.len())) {
            ram_write32(ring.memory + u64::from(offset), dword);
            offset = (offset + 4) % ring.size;
        }
        ring.tail = offset;
        let tail = ring.tail;
        self.write(vgpu::RING_TAIL, tail);
        Ok(first)
    }

    /// Submits `dwords` (which should end in MI_USER_INTERRUPT for a
    /// completion interrupt to come) and waits, bounded, until the GPU has
    /// consumed them (RING_HEAD reaches the tail) or faulted, then for the
    /// interrupt that tells how it ended.
    ///
    /// # Errors
    /// [`GpuError::Ring`], [`GpuError::Timeout`], [`GpuError::InterruptLost`],
    /// [`GpuError::Interrupt`] (no interrupt enabled).
    pub fn run(&mut self, dwords: &[u32]) -> Result<Outcome, GpuError> {
        if let Some(intx) = self.intx.as_mut() {
            intx.resync();
        }
        self.submit(dwords)?;
        self.wait()
    }

    /// Waits for the last submission (see [`Gpu::run`]).
    ///
    /// # Errors
    /// As [`Gpu::run`].
    pub fn wait(&mut self) -> Result<Outcome, GpuError> {
        let tail = self.ring.ok_or(GpuError::Ring)?.tail;
        let deadline = time::counter() + intx::default_wait_ticks();
        // Polling trapped registers: each read is an exit, at which the
        // hypervisor also delivers a pending interrupt.
        loop {
            if self.read(vgpu::FAULT_STATUS) != 0 {
                break;
            }
            if self.read(vgpu::RING_HEAD) & vgpu::RING_OFFSET_MASK == tail {
                break;
            }
            if time::counter() > deadline {
                return Err(GpuError::Timeout);
            }
            core::hint::spin_loop();
        }
        let intx = self.intx.as_mut().ok_or(GpuError::Interrupt)?;
        let mut status = intx.next(time::counter() + intx::default_wait_ticks())?;
        // Completion and its interrupt are not one event: status bits of a
        // later one may be taken with it; a second one is not waited for.
        status |= self.read(vgpu::INT_STATUS);
        let fault = self.read(vgpu::FAULT_STATUS);
        if status & vgpu::INT_FAULT != 0 || fault != 0 {
            let address = u64::from(self.read(vgpu::FAULT_ADDRESS_HI)) << 32 | u64::from(self.read(vgpu::FAULT_ADDRESS_LO));
            return Ok(Outcome::Faulted { status, fault, address });
        }
        if status & vgpu::INT_REJECTED != 0 {
            return Ok(Outcome::Rejected {
                status,
                code: self.read(vgpu::INFO_SUBMIT_ERROR),
                offset: self.read(vgpu::INFO_SUBMIT_ERROR_OFFSET),
                header: self.read(vgpu::INFO_SUBMIT_ERROR_HEADER),
            });
        }
        Ok(Outcome::Completed { status, seqno: self.read(vgpu::SEQNO) })
    }

    /// Clears a GPU fault: moves nothing, writes 0 to FAULT_STATUS.
    pub fn clear_fault(&self) {
        self.write(vgpu::FAULT_STATUS, 0);
    }

    /// The ring offset the next submission starts at.
    pub fn ring_tail(&self) -> Option<u32> {
        self.ring.map(|ring| ring.tail)
    }
}

/// A memory BAR's guest address (64-bit BARs use the next dword too).
fn bar(config: u64, offset: u64) -> u64 {
    let low = read32(config + offset);
    let mut address = u64::from(low & !0xf);
    if low & 0b110 == BAR_TYPE_64 {
        address |= u64::from(read32(config + offset + 4)) << 32;
    }
    address
}
