//! The hypervisor's driver for Bulkhead's test GPU (`tools/gpu-model`,
//! DESIGN.md §5): a gen8-style blitter with a global GTT and local memory,
//! attached as QEMU's `ivshmem-doorbell` PCI function 1af4:1110.
//!
//! | ivshmem BAR | what |
//! |---|---|
//! | BAR0 | ivshmem registers; [`IvshmemRegisters::doorbell`] wakes the model |
//! | BAR1 | MSI-X table (vector 0: the GPU's interrupt) |
//! | BAR2 | shared memory: GPU registers at 0, global GTT at [`vgpu::GTT_OFFSET`], local memory at `LMEM_OFFSET` |
//!
//! BAR2 is memory shared with the model (a host process), not device
//! registers: every access is volatile, and stores the model must see
//! before it acts (GTT entries, ring contents, RING_TAIL) are followed by a
//! full fence before the doorbell. `INT_STATUS` is shared read-modify-write
//! state: the model sets bits with an atomic OR, software clears with an
//! atomic AND ([`Gpu::acknowledge`]).
//!
//! Omitted: the per-process GTT, more than one ring, MSI-X vectors other
//! than 0, pin-based interrupts.

pub mod registers;

use crate::pci::{self, Bar, BarKind, Bdf, ConfigSpace, Function};
use bulkhead_abi::gpu::{gtt, vgpu};
use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering, fence};
use registers::{DOORBELL, GpuRegisters, INT, IvshmemRegisters, MSIX_VECTOR_CONTROL, MsixEntry, RING_CTL};
use tock_registers::LocalRegisterCopy;
use tock_registers::interfaces::{Readable, Writeable};

/// PCI vendor ID of QEMU's ivshmem (Red Hat / Qumranet).
pub const IVSHMEM_VENDOR: u16 = 0x1af4;
/// PCI device ID of QEMU's ivshmem.
pub const IVSHMEM_DEVICE: u16 = 0x1110;
/// The ivshmem register BAR.
pub const REGISTER_BAR: usize = 0;
/// The MSI-X table BAR.
pub const MSIX_BAR: usize = 1;
/// The shared-memory BAR holding the GPU.
pub const SHARED_BAR: usize = 2;
/// The model's peer ID on the ivshmem server (it sends its own doorbell
/// eventfds as peer 0; README "Transport").
pub const MODEL_PEER: u32 = 0;
/// The doorbell vector the model listens on.
pub const MODEL_VECTOR: u32 = 0;
/// GPU page size (one GTT entry maps this much).
pub const PAGE_SIZE: u64 = gtt::PAGE_SIZE;
/// Largest ring: RING_CTL's 9-bit page count.
pub const MAX_RING_PAGES: u32 = 512;
/// RING_TAIL must be qword aligned.
const TAIL_ALIGN: u32 = 8;
/// Capability ID of MSI-X (PCI 3.0 §6.8.2).
const MSIX_CAPABILITY_ID: u8 = 0x11;
/// MSI-X Message Control bit 15: MSI-X enable.
const MSIX_ENABLE: u32 = 1 << 15;
/// MSI-X Message Control bit 14: function mask.
const MSIX_FUNCTION_MASK: u32 = 1 << 14;
/// Message Control is the upper half of the capability's first dword.
const MESSAGE_CONTROL_SHIFT: u32 = 16;

/// What went wrong driving the GPU. Device state is reported, never clamped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuError {
    /// The function has no usable BAR `index` (absent, I/O or unassigned).
    MissingBar(usize),
    /// BAR2 does not read "BHGP".
    WrongId(u32),
    /// A GPU version this driver does not know.
    UnsupportedVersion(u32),
    /// The registers describe a layout that does not fit BAR2.
    BadLayout {
        /// GTT offset read.
        gtt_base: u32,
        /// GTT entries read.
        gtt_entries: u32,
        /// Local memory offset read.
        local_offset: u32,
        /// Local memory bytes read.
        local_size: u64,
    },
    /// GTT index beyond the GTT.
    GttIndex(u32),
    /// A GTT entry that is not present or whose address is not a page.
    BadEntry(u64),
    /// A local-memory access beyond local memory.
    LocalRange {
        /// Offset asked for.
        offset: u64,
        /// Bytes asked for.
        len: u64,
    },
    /// The ring is running (enabled, HEAD != TAIL, no fault): it may not be reprogrammed.
    Busy,
    /// A ring that is not 4 KiB aligned or has 0 or more than 512 pages.
    BadRing {
        /// Graphics address.
        start: u64,
        /// Pages.
        pages: u32,
    },
    /// A tail that is unaligned or outside the ring.
    BadTail(u32),
    /// The function has no MSI-X capability, or its table is not in BAR1.
    NoMsix,
}

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GpuError::MissingBar(i) => write!(f, "BAR{i} is not an assigned memory BAR"),
            GpuError::WrongId(id) => write!(f, "GPU_ID reads {id:#x}, not \"BHGP\""),
            GpuError::UnsupportedVersion(v) => write!(f, "GPU_VERSION {v} is not supported"),
            GpuError::BadLayout { gtt_base, gtt_entries, local_offset, local_size } => write!(
                f,
                "layout does not fit the BAR: GTT at {gtt_base:#x} ({gtt_entries} entries), local memory at {local_offset:#x} (+{local_size:#x})"
            ),
            GpuError::GttIndex(i) => write!(f, "GTT index {i} beyond the GTT"),
            GpuError::BadEntry(e) => write!(f, "bad GTT entry {e:#x}"),
            GpuError::LocalRange { offset, len } => write!(f, "local memory {offset:#x} (+{len:#x}) out of range"),
            GpuError::Busy => f.write_str("the ring is busy"),
            GpuError::BadRing { start, pages } => write!(f, "bad ring at {start:#x} ({pages} pages)"),
            GpuError::BadTail(t) => write!(f, "bad ring tail {t:#x}"),
            GpuError::NoMsix => f.write_str("no MSI-X capability with its table in BAR1"),
        }
    }
}

/// The PCI side of the GPU: where its three BARs are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuFunction {
    /// Where it is.
    pub bdf: Bdf,
    /// ivshmem registers (doorbell).
    pub registers: Bar,
    /// MSI-X table.
    pub msix: Bar,
    /// Shared memory: GPU registers, GTT, local memory.
    pub shared: Bar,
}

/// The first ivshmem function among `functions` with all three BARs
/// assigned; whether its BAR2 is a GPU is checked by [`Gpu::new`].
///
/// # Errors
/// `None` if there is no ivshmem function; the missing BAR otherwise.
pub fn find(functions: &[Function]) -> Option<Result<GpuFunction, GpuError>> {
    let function = functions.iter().find(|f| f.vendor == IVSHMEM_VENDOR && f.device == IVSHMEM_DEVICE)?;
    let bar = |index: usize| {
        function.bars[index].filter(|b| b.kind != BarKind::Io && b.address != 0).ok_or(GpuError::MissingBar(index))
    };
    Some((|| Ok(GpuFunction { bdf: function.bdf, registers: bar(REGISTER_BAR)?, msix: bar(MSIX_BAR)?, shared: bar(SHARED_BAR)? }))())
}

/// A fault the engine recorded (`FAULT_*` registers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The model's fault code (1 = GTT entry not present, ...).
    pub code: u32,
    /// Header dword of the faulting command.
    pub command: u32,
    /// Graphics address that faulted.
    pub address: u64,
    /// Graphics address of the faulting command.
    pub command_address: u64,
}

/// The engine's state, read once.
#[derive(Clone, Copy, Debug)]
pub struct Status {
    /// RING_HEAD byte offset.
    pub head: u32,
    /// RING_TAIL byte offset.
    pub tail: u32,
    /// Ring enabled.
    pub enabled: bool,
    /// SEQNO.
    pub seqno: u32,
    /// INT_STATUS bits.
    pub interrupts: LocalRegisterCopy<u32, INT::Register>,
    /// The recorded fault, if the ring is stopped by one.
    pub fault: Option<Fault>,
}

impl Status {
    /// Enabled, work queued and no fault: the model is (or will be) executing.
    pub fn busy(&self) -> bool {
        self.enabled && self.head != self.tail && self.fault.is_none()
    }
}

/// The GPU, mapped.
pub struct Gpu {
    registers: &'static GpuRegisters,
    ivshmem: &'static IvshmemRegisters,
    gtt: *mut u64,
    gtt_entries: u32,
    local: *mut u8,
    local_size: u64,
    ring_bytes: u32,
}

// SAFETY: the raw pointers name device/shared memory mapped for the
// hypervisor's lifetime; users serialise access with a lock.
unsafe impl Send for Gpu {}

impl Gpu {
    /// The GPU whose ivshmem BAR0 is mapped at `bar0` and BAR2 (`bar2_size`
    /// bytes) at `bar2`; checks the ID, version and layout.
    ///
    /// # Safety
    /// `bar0` must map the ivshmem registers (Device memory) and `bar2` the
    /// whole shared BAR for as long as the value is used, driven by nothing
    /// else in the hypervisor.
    ///
    /// # Errors
    /// Not a GPU, an unknown version, or a layout that does not fit.
    pub unsafe fn new(bar0: usize, bar2: usize, bar2_size: u64) -> Result<Gpu, GpuError> {
        // SAFETY: the caller vouches for both mappings; the register page
        // (0x22040 bytes) lies inside BAR2, which is at least 2 MiB
        // (checked before the reference is made).
        if bar2_size < vgpu::REGISTER_BAR_SIZE {
            return Err(GpuError::BadLayout { gtt_base: 0, gtt_entries: 0, local_offset: 0, local_size: 0 });
        }
        // SAFETY: as above.
        let registers = unsafe { &*(bar2 as *const GpuRegisters) };
        // SAFETY: as above.
        let ivshmem = unsafe { &*(bar0 as *const IvshmemRegisters) };
        let id = registers.gpu_id.get();
        if id != vgpu::GPU_ID_VALUE {
            return Err(GpuError::WrongId(id));
        }
        let version = registers.gpu_version.get();
        if version != vgpu::GPU_VERSION_VALUE {
            return Err(GpuError::UnsupportedVersion(version));
        }
        let gtt_base = registers.gtt_base.get();
        let gtt_entries = registers.gtt_size.get();
        let local_offset = registers.lmem_offset.get();
        let local_size = (u64::from(registers.lmem_size_hi.get()) << 32) | u64::from(registers.lmem_size_lo.get());
        let gtt_end = u64::from(gtt_entries) * gtt::ENTRY_SIZE + u64::from(gtt_base);
        let fits = u64::from(gtt_base) == vgpu::GTT_OFFSET
            && gtt_end <= u64::from(local_offset)
            && u64::from(local_offset).checked_add(local_size).is_some_and(|end| end <= bar2_size);
        if !fits {
            return Err(GpuError::BadLayout { gtt_base, gtt_entries, local_offset, local_size });
        }
        Ok(Gpu {
            registers,
            ivshmem,
            gtt: (bar2 + gtt_base as usize) as *mut u64,
            gtt_entries,
            local: (bar2 + local_offset as usize) as *mut u8,
            local_size,
            ring_bytes: 0,
        })
    }

    /// Entries in the global GTT.
    pub fn gtt_entries(&self) -> u32 {
        self.gtt_entries
    }

    /// Bytes of local memory.
    pub fn local_size(&self) -> u64 {
        self.local_size
    }

    /// Where local memory starts in the address space BAR2 is mapped in
    /// (its physical address when, as in the hypervisor, BAR2 is
    /// identity-mapped).
    pub fn local_address(&self) -> u64 {
        self.local as u64
    }

    /// A present GTT entry for the local-memory page at `offset`.
    ///
    /// # Errors
    /// `offset` is not a page of local memory.
    pub fn local_entry(&self, offset: u64) -> Result<u64, GpuError> {
        if offset >= self.local_size {
            return Err(GpuError::LocalRange { offset, len: PAGE_SIZE });
        }
        gtt::present_entry(offset).map(|e| e | vgpu::GTT_LOCAL_MEMORY).ok_or(GpuError::BadEntry(offset))
    }

    /// A present GTT entry for the RAM page at guest-physical (here: host-physical) `address`.
    ///
    /// # Errors
    /// `address` is not a page address that fits bits 38:12.
    pub fn ram_entry(address: u64) -> Result<u64, GpuError> {
        gtt::present_entry(address).ok_or(GpuError::BadEntry(address))
    }

    /// Writes GTT entry `index` and makes it visible to the model (store, then fence).
    ///
    /// # Errors
    /// `index` beyond the GTT.
    pub fn write_gtt(&self, index: u32, entry: u64) -> Result<(), GpuError> {
        if index >= self.gtt_entries {
            return Err(GpuError::GttIndex(index));
        }
        // SAFETY: inside the GTT (checked), which `new` found inside BAR2;
        // 8-byte aligned, so the store is single-copy atomic for the model.
        unsafe { self.gtt.add(index as usize).write_volatile(entry) };
        fence(Ordering::SeqCst);
        Ok(())
    }

    /// GTT entry `index`.
    ///
    /// # Errors
    /// `index` beyond the GTT.
    pub fn read_gtt(&self, index: u32) -> Result<u64, GpuError> {
        if index >= self.gtt_entries {
            return Err(GpuError::GttIndex(index));
        }
        // SAFETY: as in `write_gtt`.
        Ok(unsafe { self.gtt.add(index as usize).read_volatile() })
    }

    fn local_range(&self, offset: u64, len: u64) -> Result<*mut u8, GpuError> {
        if offset.checked_add(len).is_none_or(|end| end > self.local_size) {
            return Err(GpuError::LocalRange { offset, len });
        }
        // SAFETY: inside local memory (checked), which lies inside BAR2.
        Ok(unsafe { self.local.add(offset as usize) })
    }

    /// Writes `words` to local memory at `offset` (4-byte aligned by the caller's choice of offset).
    ///
    /// # Errors
    /// The range leaves local memory or `offset` is unaligned.
    pub fn write_local(&self, offset: u64, words: &[u32]) -> Result<(), GpuError> {
        let len = words.len() as u64 * 4;
        if !offset.is_multiple_of(4) {
            return Err(GpuError::LocalRange { offset, len });
        }
        let base = self.local_range(offset, len)?.cast::<u32>();
        for (i, &word) in words.iter().enumerate() {
            // SAFETY: inside the checked range, aligned.
            unsafe { base.add(i).write_volatile(word) };
        }
        fence(Ordering::SeqCst);
        Ok(())
    }

    /// Fills `len` bytes (a multiple of 4) of local memory at `offset` with `word`.
    ///
    /// # Errors
    /// The range leaves local memory or is unaligned.
    pub fn fill_local(&self, offset: u64, len: u64, word: u32) -> Result<(), GpuError> {
        if !offset.is_multiple_of(4) || !len.is_multiple_of(4) {
            return Err(GpuError::LocalRange { offset, len });
        }
        let base = self.local_range(offset, len)?.cast::<u32>();
        for i in 0..(len / 4) as usize {
            // SAFETY: inside the checked range, aligned.
            unsafe { base.add(i).write_volatile(word) };
        }
        fence(Ordering::SeqCst);
        Ok(())
    }

    /// Reads the word of local memory at `offset`.
    ///
    /// # Errors
    /// Out of range or unaligned.
    pub fn read_local(&self, offset: u64) -> Result<u32, GpuError> {
        if !offset.is_multiple_of(4) {
            return Err(GpuError::LocalRange { offset, len: 4 });
        }
        let word = self.local_range(offset, 4)?.cast::<u32>();
        fence(Ordering::SeqCst);
        // SAFETY: inside the checked range, aligned.
        Ok(unsafe { word.read_volatile() })
    }

    /// Reads every register of interest once.
    pub fn status(&self) -> Status {
        let r = self.registers;
        fence(Ordering::SeqCst);
        let code = r.fault_status.get();
        let pair = |lo: u32, hi: u32| (u64::from(hi) << 32) | u64::from(lo);
        let fault = (code != 0).then(|| Fault {
            code,
            command: r.fault_command.get(),
            address: pair(r.fault_address_lo.get(), r.fault_address_hi.get()),
            command_address: pair(r.fault_command_address_lo.get(), r.fault_command_address_hi.get()),
        });
        Status {
            head: r.ring_head.get() & vgpu::RING_OFFSET_MASK,
            tail: r.ring_tail.get() & vgpu::RING_OFFSET_MASK,
            enabled: r.ring_ctl.is_set(RING_CTL::ENABLE),
            seqno: r.seqno.get(),
            interrupts: LocalRegisterCopy::new(r.int_status.get()),
            fault,
        }
    }

    /// Clears the INT_STATUS bits in `handled` (atomic AND: the model sets
    /// bits concurrently with an atomic OR).
    pub fn acknowledge(&self, handled: LocalRegisterCopy<u32, INT::Register>) {
        let status = core::ptr::from_ref(&self.registers.int_status).cast::<AtomicU32>();
        // SAFETY: INT_STATUS is an aligned u32 in shared memory that both
        // agents only access atomically (or with plain loads).
        unsafe { &*status }.fetch_and(!handled.get(), Ordering::SeqCst);
    }

    /// Sets INT_ENABLE: the status bits that raise MSI-X vector 0.
    pub fn enable_interrupts(&self, bits: LocalRegisterCopy<u32, INT::Register>) {
        self.registers.int_enable.set(bits.get());
        fence(Ordering::SeqCst);
    }

    /// Points the ring at `pages` pages at graphics address `start`, with
    /// HEAD = TAIL = `head`, and enables it: disable, program, enable.
    ///
    /// # Errors
    /// [`GpuError::Busy`] while the ring runs; a bad start or size.
    pub fn program_ring(&mut self, start: u64, pages: u32, head: u32) -> Result<(), GpuError> {
        let start32 = u32::try_from(start).ok().filter(|s| u64::from(*s).is_multiple_of(PAGE_SIZE));
        let Some(start32) = start32.filter(|_| (1..=MAX_RING_PAGES).contains(&pages)) else {
            return Err(GpuError::BadRing { start, pages });
        };
        if self.status().busy() {
            return Err(GpuError::Busy);
        }
        if !head.is_multiple_of(TAIL_ALIGN) || head >= pages * PAGE_SIZE as u32 {
            return Err(GpuError::BadTail(head));
        }
        let r = self.registers;
        r.ring_ctl.write(RING_CTL::ENABLE::CLEAR);
        fence(Ordering::SeqCst);
        r.ring_start.set(start32);
        r.ring_head.set(head);
        r.ring_tail.set(head);
        fence(Ordering::SeqCst);
        r.ring_ctl.write(RING_CTL::ENABLE::SET + RING_CTL::PAGES_MINUS_ONE.val(pages - 1));
        fence(Ordering::SeqCst);
        self.ring_bytes = pages * PAGE_SIZE as u32;
        Ok(())
    }

    /// Bytes of the ring [`Gpu::program_ring`] set up (0: none).
    pub fn ring_bytes(&self) -> u32 {
        self.ring_bytes
    }

    /// Publishes `tail` (ring contents written before this are visible to
    /// the model first) and rings the doorbell.
    ///
    /// # Errors
    /// `tail` unaligned or beyond the ring.
    pub fn set_tail(&self, tail: u32) -> Result<(), GpuError> {
        if !tail.is_multiple_of(TAIL_ALIGN) || tail >= self.ring_bytes {
            return Err(GpuError::BadTail(tail));
        }
        fence(Ordering::SeqCst);
        self.registers.ring_tail.set(tail);
        self.ring_doorbell();
        Ok(())
    }

    /// Clears a recorded fault so the ring runs again: HEAD moved to
    /// `resume_at` first (to skip the bad command) if given, then
    /// FAULT_STATUS = 0, then the doorbell.
    ///
    /// # Errors
    /// `resume_at` unaligned or beyond the ring.
    pub fn clear_fault(&self, resume_at: Option<u32>) -> Result<(), GpuError> {
        if let Some(head) = resume_at {
            if !head.is_multiple_of(4) || head >= self.ring_bytes {
                return Err(GpuError::BadTail(head));
            }
            self.registers.ring_head.set(head);
        }
        fence(Ordering::SeqCst);
        self.registers.fault_status.set(0);
        self.ring_doorbell();
        Ok(())
    }

    /// Wakes the model (after a fence, so everything written before is visible).
    pub fn ring_doorbell(&self) {
        fence(Ordering::SeqCst);
        self.ivshmem.doorbell.write(DOORBELL::PEER.val(MODEL_PEER) + DOORBELL::VECTOR.val(MODEL_VECTOR));
    }
}

/// MSI-X of the GPU function: programs table entry 0 and enables MSI-X
/// in configuration space (function mask off).
///
/// # Safety
/// `table` must map the function's MSI-X table BAR (BAR1) as Device memory.
///
/// # Errors
/// [`GpuError::NoMsix`]: no MSI-X capability, or its table is not at BAR1.
pub unsafe fn enable_msix(
    space: &mut impl ConfigSpace,
    bdf: Bdf,
    table: usize,
    address: u64,
    data: u32,
) -> Result<(), GpuError> {
    let capability = pci::find_capability(space, bdf, MSIX_CAPABILITY_ID).ok_or(GpuError::NoMsix)?;
    let table_word = space.read32(bdf, capability + 4);
    let (bir, offset) = (table_word & pci::MSIX_BIR_MASK, table_word & !pci::MSIX_BIR_MASK);
    if bir as usize != MSIX_BAR {
        return Err(GpuError::NoMsix);
    }
    // SAFETY: the caller vouches for the table mapping; entry 0 sits at the
    // table offset the capability names, 16-byte aligned by the spec.
    let entry = unsafe { &*((table + offset as usize) as *const MsixEntry) };
    entry.vector_control.write(MSIX_VECTOR_CONTROL::MASKED::SET);
    entry.message_address_lo.set(address as u32);
    entry.message_address_hi.set((address >> 32) as u32);
    entry.message_data.set(data);
    entry.vector_control.write(MSIX_VECTOR_CONTROL::MASKED::CLEAR);
    let control = space.read32(bdf, capability);
    let enabled = (control | (MSIX_ENABLE << MESSAGE_CONTROL_SHIFT)) & !(MSIX_FUNCTION_MASK << MESSAGE_CONTROL_SHIFT);
    space.write32(bdf, capability, enabled);
    Ok(())
}
