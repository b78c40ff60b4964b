//! A partition's virtual GPU: the whole trapped register BAR of
//! [`bulkhead_abi::gpu::vgpu`] (DESIGN.md §5), as pure state.
//!
//! The image traps every guest access to the register BAR and hands it to
//! [`VirtualGpu::read`] / [`VirtualGpu::write`]; the returned
//! [`WriteEffect`] says what to do on the real GPU. Nothing the guest
//! writes can make this code panic: odd sizes, unaligned or unknown
//! offsets read 0 and are ignored (and counted, [`VirtualGpu::ignored`]).
//!
//! | access | size | what happens |
//! |---|---|---|
//! | registers of the abi table | 4 | as the table says (RO writes ignored) |
//! | GTT window `GTT_OFFSET..` | 4 or 8 | [`VirtualGtt`]: validated, translated, a [`RealGttUpdate`] |
//! | RING_TAIL | 4 | a submission: checked, copied, scanned, batches frozen |
//! | anything else | any | reads 0, writes ignored, counted |
//!
//! A submission (a RING_TAIL write) takes the commands between the end of
//! the previous submission and the new tail. Its life:
//! 1. The ring registers are checked (else [`vgpu::REJECT_RING`], nothing
//!    is consumed) and the outstanding queue must have room (else
//!    [`vgpu::REJECT_BUSY`]).
//! 2. The dwords are copied out of the guest's ring (joining a wrap)
//!    through the partition's own GTT entries ([`GttMemory`]).
//! 3. [`scan::scan`] checks them against the partition's graphics range;
//!    batch buffers are read through a [`Snapshot`] that reads each page
//!    once, so the scan and the shadow copy see the same bytes even if the
//!    guest writes its batches meanwhile.
//! 4. Each scanned batch is copied into a [`ShadowBatch`]; every
//!    MI_BATCH_BUFFER_START in the ring copy and in the shadows is pointed
//!    at the shadow copy of its target, at graphics addresses the caller
//!    chose ([`ShadowPlacement`]). The GPU then runs only frozen copies.
//! 5. A rejection records its code, ring offset and header in the
//!    information page, sets INT_REJECTED, and consumes the commands
//!    (nothing runs; RING_HEAD moves past them once earlier work is done).
//!
//! RING_HEAD moves only in [`VirtualGpu::complete`] (or past rejected
//! commands), so a guest sees its ring drain as the GPU finishes its work.

use super::gtt::{EntryState, GttWrite, RealGttUpdate, Target, VirtualGtt};
use super::ppgtt::{ContextError, Env, PpgttMemory, ShadowPpgtt};
use super::scan::{self, BatchMemory, ContextLoad, Location, Reason, Rejection, Share};
use crate::address::{Gpa, Hpa};
use crate::address_space::AddressSpace;
use crate::pinning::PinnedPages;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use bulkhead_abi::gpu::{cmd, gtt, ppgtt as ppgtt_format, vgpu};

/// Submissions a partition may have accepted but not completed; one more
/// is rejected with [`vgpu::REJECT_BUSY`]. This bounds the memory and the
/// shadow space one partition can hold, and what the scheduler must queue.
pub const MAX_OUTSTANDING: usize = 8;

/// Bytes of a register access.
const REGISTER_BYTES: u8 = 4;
/// Bytes of a whole-entry GTT access.
const ENTRY_BYTES: u8 = gtt::ENTRY_SIZE as u8;
/// Bytes in a dword.
const DWORD_BYTES: u64 = 4;
/// RING_TAIL must be qword aligned (the model's rule, as gen8's ring).
const TAIL_ALIGN: u32 = 8;
/// The INT_* bits the guest may enable or see.
const INT_ALL: u32 = vgpu::INT_USER | vgpu::INT_FAULT | vgpu::INT_REJECTED;
/// The graphics addresses commands can hold (48 bits).
const GRAPHICS_ADDRESS_LIMIT: u64 = (cmd::ADDRESS_HIGH_MASK as u64 + 1) << 32;

/// Reads the machine's memory for the virtual GPU: the image implements
/// it with its direct map (host RAM) and its mapping of the GPU's local
/// memory. Both return `false` if the range cannot be read; neither is
/// ever given an address the partition does not own.
pub trait PhysicalReader {
    /// Fills `buf` from host-physical address `address` (RAM of the
    /// partition, pinned).
    fn read_ram(&mut self, address: Hpa, buf: &mut [u8]) -> bool;
    /// Fills `buf` from the real local memory at byte `offset`.
    fn read_local(&mut self, offset: u64, buf: &mut [u8]) -> bool;
}

/// Reads bytes at graphics addresses of one partition.
pub trait GraphicsMemory {
    /// Fills `buf` from graphics address `address`; `false` if any byte is
    /// not mapped by the partition's own GTT or cannot be read.
    fn read(&mut self, address: u64, buf: &mut [u8]) -> bool;
}

/// [`GraphicsMemory`] through one partition's [`VirtualGtt`]: a graphics
/// address resolves only through that partition's entries (never the real
/// GTT as a whole, whose other slices belong to other partitions), to a
/// pinned RAM page or a page of its local-memory share.
pub struct GttMemory<'a, R: ?Sized> {
    gtt: &'a VirtualGtt,
    reader: &'a mut R,
}

impl<'a, R: PhysicalReader + ?Sized> GttMemory<'a, R> {
    /// Reads through `gtt`'s entries with `reader`.
    pub fn new(gtt: &'a VirtualGtt, reader: &'a mut R) -> GttMemory<'a, R> {
        GttMemory { gtt, reader }
    }
}

impl<R: PhysicalReader + ?Sized> GraphicsMemory for GttMemory<'_, R> {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> bool {
        let base = self.gtt.graphics_range().start;
        let mut done = 0usize;
        while done < buf.len() {
            let Some(at) = address.checked_add(done as u64) else { return false };
            let Some(relative) = at.checked_sub(base) else { return false };
            let (index, in_page) = (relative / gtt::PAGE_SIZE, relative % gtt::PAGE_SIZE);
            // `in_page < PAGE_SIZE`, so the chunk is at least one byte.
            let chunk = ((gtt::PAGE_SIZE - in_page) as usize).min(buf.len() - done);
            let part = &mut buf[done..done + chunk];
            let ok = match self.gtt.mapped_page(index) {
                Some(Target::Ram(page)) => page.checked_add(in_page).is_some_and(|hpa| self.reader.read_ram(hpa, part)),
                Some(Target::Local(offset)) => offset.checked_add(in_page).is_some_and(|o| self.reader.read_local(o, part)),
                None => false,
            };
            if !ok {
                return false;
            }
            done += chunk;
        }
        true
    }
}

/// Batch memory for the scanner that reads each page once and then
/// answers from its copy: a batch the guest rewrites during the scan (or
/// between the scan and the shadow copy) is seen the same way throughout.
pub struct Snapshot<'a, M: ?Sized> {
    memory: &'a mut M,
    /// Page address -> its dwords, or `None` if it could not be read.
    pages: BTreeMap<u64, Option<Vec<u32>>>,
}

impl<'a, M: GraphicsMemory + ?Sized> Snapshot<'a, M> {
    /// An empty snapshot over `memory`.
    pub fn new(memory: &'a mut M) -> Snapshot<'a, M> {
        Snapshot { memory, pages: BTreeMap::new() }
    }

    fn page(&mut self, page: u64) -> Option<&Vec<u32>> {
        let memory = &mut self.memory;
        self.pages
            .entry(page)
            .or_insert_with(|| {
                let mut bytes = vec![0u8; gtt::PAGE_SIZE as usize];
                memory.read(page, &mut bytes).then(|| dwords_of(&bytes))
            })
            .as_ref()
    }
}

impl<M: GraphicsMemory + ?Sized> BatchMemory for Snapshot<'_, M> {
    fn read(&mut self, address: u64, out: &mut [u32]) -> bool {
        if !address.is_multiple_of(DWORD_BYTES) {
            return false;
        }
        let mut done = 0usize;
        while done < out.len() {
            let Some(at) = (done as u64).checked_mul(DWORD_BYTES).and_then(|o| address.checked_add(o)) else { return false };
            let page = at - at % gtt::PAGE_SIZE;
            let first = ((at - page) / DWORD_BYTES) as usize;
            let Some(dwords) = self.page(page) else { return false };
            let chunk = (dwords.len() - first).min(out.len() - done);
            out[done..done + chunk].copy_from_slice(&dwords[first..first + chunk]);
            done += chunk;
        }
        true
    }
}

/// Little-endian dwords of `bytes` (whole dwords only).
fn dwords_of(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(DWORD_BYTES as usize).map(|d| u32::from_le_bytes([d[0], d[1], d[2], d[3]])).collect()
}

/// Chooses where the shadow batches of one submission live.
///
/// Called once per accepted submission that has batches, after every
/// check passed, with the byte size of each shadow batch in index order.
/// Returns one graphics address per batch, each 4-byte aligned with the
/// whole batch below 2^48, in memory only the hypervisor can write (e.g.
/// its own slice of the real GTT), or `None` if there is no room: the
/// submission is then rejected with [`vgpu::REJECT_BUSY`]. The caller copies
/// [`ShadowBatch::dwords`] to [`ShadowBatch::address`] before submitting,
/// and may reuse the space when the submission completes. Addresses that
/// break these rules also reject the submission (with REJECT_BUSY), so
/// space the caller gave for it can be reused at once.
pub trait ShadowPlacement {
    /// Addresses for batches of `sizes` bytes.
    fn place(&mut self, sizes: &[u64]) -> Option<Vec<u64>>;
}

impl<F: FnMut(&[u64]) -> Option<Vec<u64>>> ShadowPlacement for F {
    fn place(&mut self, sizes: &[u64]) -> Option<Vec<u64>> {
        self(sizes)
    }
}

/// A frozen copy of one batch buffer the scan followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowBatch {
    /// Graphics address of the guest's batch (for logs).
    pub guest_address: u64,
    /// Graphics address of the shadow copy ([`ShadowPlacement`]).
    pub address: u64,
    /// The scanned dwords, MI_BATCH_BUFFER_START operands relocated to
    /// the shadows.
    pub dwords: Vec<u32>,
}

/// An accepted submission: what the caller queues and runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    /// The scanned ring commands (MI_BATCH_BUFFER_START operands
    /// relocated): what to copy into the shadow ring.
    pub commands: Vec<u32>,
    /// The shadow batches, each to copy to its address first.
    pub batches: Vec<ShadowBatch>,
    /// MI_USER_INTERRUPTs the work executes (ring and batches, a batch
    /// counted each time it runs).
    pub user_interrupts: u32,
    /// The guest's RING_TAIL that ends it: RING_HEAD when it completes.
    pub end_tail: u32,
    /// The per-process contexts (guest PML4 addresses) its PDP0 loads
    /// select; their shadows stay while it is outstanding.
    pub contexts: Vec<Gpa>,
}

/// Why the ring registers refused a submission ([`vgpu::REJECT_RING`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// RING_CTL's enable bit is clear.
    Disabled,
    /// RING_START is not 4 KiB aligned.
    StartMisaligned(u32),
    /// The ring (RING_START + its size) is not inside the partition's
    /// graphics range.
    OutsideRange {
        /// RING_START.
        start: u32,
        /// Ring bytes.
        size: u64,
    },
    /// RING_TAIL is unaligned or not below the ring size.
    BadTail(u32),
    /// The previous tail no longer fits the ring (RING_CTL shrank it).
    BadHead(u32),
    /// The ring's memory could not be read through the partition's GTT.
    Unreadable {
        /// First graphics address of the part that failed.
        address: u64,
    },
}

/// Why a submission was rejected, for the caller's (rate-limited) log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectCause {
    /// The ring registers.
    Ring(RingError),
    /// [`MAX_OUTSTANDING`] submissions are outstanding.
    Busy,
    /// [`ShadowPlacement`] found no (valid) room for the shadow batches.
    NoShadowSpace,
    /// The command scanner.
    Scan(Rejection),
    /// A scanned stream did not decode again for relocation (cannot
    /// happen with a consistent scanner; rejected rather than trusted).
    Inconsistent,
    /// A PDP0 load's context could not be shadowed.
    Context {
        /// The guest's PML4 address.
        pml4: u64,
        /// Why.
        error: ContextError,
    },
}

/// A rejected submission, as recorded in the information page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubmitRejection {
    /// The `vgpu::REJECT_*` code.
    pub code: u32,
    /// Byte offset in the guest's ring of the rejected command (for a
    /// command in a batch: of the ring's MI_BATCH_BUFFER_START that led
    /// there).
    pub offset: u32,
    /// Header of the rejected command (0 if no command is to blame).
    pub header: u32,
    /// Why.
    pub cause: RejectCause,
}

/// What one guest write asks of the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteEffect {
    /// Real GTT entries to write (then invalidate the GPU's GTT caches
    /// before the partition's next submission runs).
    pub gtt_updates: Vec<RealGttUpdate>,
    /// What a completed GTT entry maps (log [`EntryState::Refused`]).
    pub gtt_entry: Option<EntryState>,
    /// An accepted submission to queue (the scheduler) and run.
    pub submission: Option<Submission>,
    /// A rejected submission (already in the information page).
    pub rejection: Option<SubmitRejection>,
    /// The level of the partition's interrupt line after the write.
    pub interrupt_asserted: bool,
}

/// A GPU fault on the partition's work, as the driver read it from the
/// real GPU's FAULT_* registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuFault {
    /// The model's fault code (non-zero).
    pub status: u32,
    /// Header of the faulting command.
    pub command: u32,
    /// The faulting graphics address.
    pub address: u64,
}

/// Why a virtual GPU could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VgpuConfigError {
    /// The GTT has more entries than the register BAR's GTT window holds.
    GttTooLarge {
        /// Its entries.
        entries: u64,
    },
    /// The graphics range (ending at this address) does not fit the
    /// 32-bit RING_START register.
    RangeTooHigh {
        /// The range's end.
        end: u64,
    },
}

/// Accepted work not yet completed.
#[derive(Clone, Debug)]
struct Outstanding {
    end_tail: u32,
    user_interrupts: u32,
    contexts: Vec<Gpa>,
}

/// The guest-visible registers (power-on values: all zero).
#[derive(Clone, Debug, Default)]
struct Registers {
    int_status: u32,
    int_enable: u32,
    seqno: u32,
    fault: GpuFault,
    submit_error: u32,
    submit_error_offset: u32,
    submit_error_header: u32,
    rejected: u32,
    submitted: u32,
    gtt_refused: u32,
    ring_tail: u32,
    ring_head: u32,
    ring_start: u32,
    ring_ctl: u32,
    pt_traps: u32,
    context_release_lo: u32,
}

/// What a guest write may need of the partition and the machine.
pub struct WriteContext<'a> {
    /// The partition's address space (GTT entries are validated through
    /// its device view).
    pub space: &'a AddressSpace,
    /// The partition's pinned pages.
    pub pins: &'a mut PinnedPages,
    /// Reads its ring and batches (through its own GTT entries).
    pub memory: &'a mut dyn PhysicalReader,
    /// Places shadow batches.
    pub shadows: &'a mut dyn ShadowPlacement,
    /// Shadow page-table pages and write protection (per-process GTTs).
    pub tables: &'a mut dyn PpgttMemory,
}

impl WriteContext<'_> {
    fn env(&mut self) -> Env<'_> {
        Env { space: self.space, pins: self.pins, memory: self.tables }
    }
}

/// One partition's virtual GPU.
#[derive(Debug)]
pub struct VirtualGpu {
    /// Shadows of its per-process page tables.
    shadow: ShadowPpgtt,
    /// INFO_PT_SHADOW_LIMIT.
    shadow_limit: u32,
    gtt: VirtualGtt,
    /// INFO_INTERRUPT.
    interrupt: u32,
    regs: Registers,
    /// Ring offset where the next submission starts: the tail of the last
    /// accepted or rejected one (RING_HEAD lags behind until completion).
    consumed: u32,
    outstanding: VecDeque<Outstanding>,
    /// Accesses ignored (unknown offsets, bad sizes, RO writes).
    ignored: u64,
}

/// A ring's checked geometry.
struct Ring {
    start: u64,
    size: u64,
}

impl VirtualGpu {
    /// A virtual GPU over `gtt` (with its local memory), announcing
    /// interrupt `interrupt` in INFO_INTERRUPT.
    ///
    /// # Errors
    /// [`VgpuConfigError`] if the GTT does not fit the BAR's GTT window or
    /// its graphics range does not fit the 32-bit registers.
    pub fn new(gtt: VirtualGtt, interrupt: u32) -> Result<VirtualGpu, VgpuConfigError> {
        let window = (vgpu::REGISTER_BAR_SIZE - vgpu::GTT_OFFSET) / gtt::ENTRY_SIZE;
        if gtt.entries() > window {
            return Err(VgpuConfigError::GttTooLarge { entries: gtt.entries() });
        }
        let range = gtt.graphics_range();
        if range.end > u64::from(u32::MAX) {
            return Err(VgpuConfigError::RangeTooHigh { end: range.end });
        }
        let scratch = gtt.scratch_entry();
        let scratch_leaf = match scratch & vgpu::GTT_LOCAL_MEMORY {
            0 => gtt::entry_address(scratch) | ppgtt_format::PRESENT,
            _ => gtt::entry_address(scratch) | ppgtt_format::LOCAL_MEMORY | ppgtt_format::PRESENT,
        };
        let shadow = ShadowPpgtt::new(scratch_leaf, gtt.local_memory());
        Ok(VirtualGpu {
            shadow,
            shadow_limit: 0,
            gtt,
            interrupt,
            regs: Registers::default(),
            consumed: 0,
            outstanding: VecDeque::new(),
            ignored: 0,
        })
    }

    /// Announces `pages` in INFO_PT_SHADOW_LIMIT: the shadow pages the
    /// caller's [`PpgttMemory::allocate`] gives this partition at most.
    pub fn with_shadow_limit(mut self, pages: u32) -> VirtualGpu {
        self.shadow_limit = pages;
        self
    }

    /// Its shadow per-process GTTs.
    pub fn shadows(&self) -> &ShadowPpgtt {
        &self.shadow
    }

    /// Trapped stores to its tracked page-table pages, already performed
    /// in guest memory, from one instruction (two for a pair). Returns
    /// whether any of them hit a shadowed table.
    pub fn tracked_write(&mut self, env: &mut Env<'_>, writes: impl IntoIterator<Item = (Gpa, u8)>) -> bool {
        let mut hit = false;
        for (gpa, width) in writes {
            hit |= self.shadow.on_write(env, gpa, width);
        }
        if hit {
            self.regs.pt_traps = self.regs.pt_traps.wrapping_add(1);
        }
        hit
    }

    /// Its virtual GTT.
    pub fn gtt(&self) -> &VirtualGtt {
        &self.gtt
    }

    /// Guest accesses ignored so far (for the caller's statistics).
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// Submissions accepted and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Whether the partition's interrupt line is asserted.
    pub fn interrupt_asserted(&self) -> bool {
        self.regs.int_status & self.regs.int_enable != 0
    }

    /// A guest read of `size` bytes at `offset` in the register BAR.
    pub fn read(&mut self, offset: u64, size: u8) -> u64 {
        if let Some(gtt_offset) = offset.checked_sub(vgpu::GTT_OFFSET) {
            let value = match size {
                REGISTER_BYTES => self.gtt.read32(gtt_offset).map(u64::from).ok(),
                ENTRY_BYTES => self.gtt.read64(gtt_offset).ok(),
                _ => None,
            };
            return value.unwrap_or_else(|| self.ignore());
        }
        if size != REGISTER_BYTES {
            return self.ignore();
        }
        match self.register(offset) {
            Some(value) => u64::from(value),
            None => self.ignore(),
        }
    }

    fn ignore(&mut self) -> u64 {
        self.ignored = self.ignored.saturating_add(1);
        0
    }

    /// The value of the 32-bit register at `offset`, if there is one.
    fn register(&self, offset: u64) -> Option<u32> {
        let r = &self.regs;
        let local = self.gtt.local_memory().size;
        // `new` checked that the graphics range fits 32 bits.
        let graphics_base = self.gtt.graphics_range().start;
        let stats = self.shadow.stats();
        Some(match offset {
            vgpu::GPU_ID => vgpu::GPU_ID_VALUE,
            vgpu::GPU_VERSION => vgpu::GPU_VERSION_VALUE,
            vgpu::LMEM_SIZE_LO => local as u32,
            vgpu::LMEM_SIZE_HI => (local >> 32) as u32,
            vgpu::GTT_BASE => vgpu::GTT_OFFSET as u32,
            // `new` checked it fits the BAR's window.
            vgpu::GTT_SIZE => self.gtt.entries() as u32,
            vgpu::INT_STATUS => r.int_status,
            vgpu::INT_ENABLE => r.int_enable,
            vgpu::SEQNO => r.seqno,
            vgpu::FAULT_STATUS => r.fault.status,
            vgpu::FAULT_COMMAND => r.fault.command,
            vgpu::FAULT_ADDRESS_LO => r.fault.address as u32,
            vgpu::FAULT_ADDRESS_HI => (r.fault.address >> 32) as u32,
            vgpu::INFO_MAGIC => vgpu::INFO_MAGIC_VALUE,
            vgpu::INFO_GRAPHICS_BASE_LO => graphics_base as u32,
            vgpu::INFO_GRAPHICS_BASE_HI => (graphics_base >> 32) as u32,
            vgpu::INFO_INTERRUPT => self.interrupt,
            vgpu::INFO_SUBMIT_ERROR => r.submit_error,
            vgpu::INFO_SUBMIT_ERROR_OFFSET => r.submit_error_offset,
            vgpu::INFO_SUBMIT_ERROR_HEADER => r.submit_error_header,
            vgpu::INFO_REJECTED => r.rejected,
            vgpu::INFO_SUBMITTED => r.submitted,
            vgpu::INFO_GTT_REFUSED => r.gtt_refused,
            vgpu::INFO_PT_TRAPS => r.pt_traps,
            vgpu::INFO_PT_TRACKED => stats.tables as u32,
            vgpu::INFO_PT_REFUSED => stats.refused as u32,
            vgpu::INFO_PT_SHADOW_PAGES => stats.shadow_pages as u32,
            vgpu::INFO_PT_SHADOW_LIMIT => self.shadow_limit,
            vgpu::RING_TAIL => r.ring_tail,
            vgpu::RING_HEAD => r.ring_head,
            vgpu::RING_START => r.ring_start,
            vgpu::RING_CTL => r.ring_ctl,
            _ => return None,
        })
    }

    /// A guest write of `size` bytes of `value` at `offset` in the register
    /// BAR (a 4-byte write uses the low 32 bits of `value`).
    pub fn write(&mut self, context: &mut WriteContext<'_>, offset: u64, size: u8, value: u64) -> WriteEffect {
        let mut effect = WriteEffect::default();
        self.shadow.settle(&mut context.env());
        if let Some(gtt_offset) = offset.checked_sub(vgpu::GTT_OFFSET) {
            let result = match size {
                // A 4-byte access carries the low 32 bits of `value`.
                REGISTER_BYTES => self.gtt.write32(context.space, context.pins, gtt_offset, value as u32),
                ENTRY_BYTES => self.gtt.write64(context.space, context.pins, gtt_offset, value),
                _ => {
                    self.ignore();
                    return self.finish(effect);
                }
            };
            match result {
                Ok(GttWrite::Held { .. }) => {}
                Ok(GttWrite::Update { update, state }) => {
                    if matches!(state, EntryState::Refused(_)) {
                        self.regs.gtt_refused = self.regs.gtt_refused.wrapping_add(1);
                    }
                    effect.gtt_updates.push(update);
                    effect.gtt_entry = Some(state);
                }
                Err(_) => {
                    self.ignore();
                }
            }
            return self.finish(effect);
        }
        if size != REGISTER_BYTES {
            self.ignore();
            return self.finish(effect);
        }
        let value = value as u32;
        match offset {
            vgpu::INT_STATUS => self.regs.int_status &= !value,
            vgpu::INT_ENABLE => self.regs.int_enable = value & INT_ALL,
            vgpu::FAULT_STATUS if value == 0 => self.regs.fault.status = 0,
            vgpu::RING_START => self.regs.ring_start = value,
            vgpu::CONTEXT_RELEASE_LO => self.regs.context_release_lo = value,
            vgpu::CONTEXT_RELEASE_HI => {
                let pml4 = (u64::from(value) << 32) | u64::from(self.regs.context_release_lo);
                if !self.shadow.release(&mut context.env(), Gpa::new(pml4)) {
                    self.ignore();
                }
            }
            vgpu::RING_CTL | vgpu::RING_TAIL => {
                // As on gen8, a disabled ring runs nothing: TAIL written
                // while it is off (a driver setting the ring up) is kept,
                // and what lies before it is submitted when it is enabled.
                let was_enabled = self.regs.ring_ctl & vgpu::RING_CTL_ENABLE != 0;
                if offset == vgpu::RING_CTL {
                    self.regs.ring_ctl = value;
                } else {
                    self.regs.ring_tail = value;
                }
                let enabled = self.regs.ring_ctl & vgpu::RING_CTL_ENABLE != 0;
                if enabled && (offset == vgpu::RING_TAIL || !was_enabled) {
                    match self.submit(context) {
                        Ok(submission) => effect.submission = submission,
                        Err(rejection) => effect.rejection = Some(rejection),
                    }
                }
            }
            _ => {
                self.ignore();
            }
        }
        self.finish(effect)
    }

    fn finish(&self, mut effect: WriteEffect) -> WriteEffect {
        effect.interrupt_asserted = self.interrupt_asserted();
        effect
    }

    /// The ring the registers describe, checked against the graphics range.
    fn ring(&self) -> Result<Ring, RingError> {
        let r = &self.regs;
        if r.ring_ctl & vgpu::RING_CTL_ENABLE == 0 {
            return Err(RingError::Disabled);
        }
        if !u64::from(r.ring_start).is_multiple_of(gtt::PAGE_SIZE) {
            return Err(RingError::StartMisaligned(r.ring_start));
        }
        let pages = u64::from((r.ring_ctl & vgpu::RING_CTL_PAGES_MASK) >> vgpu::RING_CTL_PAGES_MASK.trailing_zeros()) + 1;
        let size = pages * gtt::PAGE_SIZE;
        let start = u64::from(r.ring_start);
        let range = self.gtt.graphics_range();
        if start < range.start || start.checked_add(size).is_none_or(|end| end > range.end) {
            return Err(RingError::OutsideRange { start: r.ring_start, size });
        }
        let tail = r.ring_tail;
        if tail & !vgpu::RING_OFFSET_MASK != 0 || !tail.is_multiple_of(TAIL_ALIGN) || u64::from(tail) >= size {
            return Err(RingError::BadTail(tail));
        }
        if u64::from(self.consumed) >= size {
            return Err(RingError::BadHead(self.consumed));
        }
        Ok(Ring { start, size })
    }

    /// A RING_TAIL write: `Ok(None)` if there is nothing new to run.
    fn submit(&mut self, context: &mut WriteContext<'_>) -> Result<Option<Submission>, SubmitRejection> {
        let ring = match self.ring() {
            Ok(ring) => ring,
            Err(error) => return Err(self.reject_ring(error)),
        };
        let (head, tail) = (self.consumed, self.regs.ring_tail);
        if head == tail {
            return Ok(None);
        }
        if self.outstanding.len() >= MAX_OUTSTANDING {
            return Err(self.reject(vgpu::REJECT_BUSY, head, 0, RejectCause::Busy));
        }
        // Entries the guest half wrote are what they are now.
        self.shadow.reapply_parked(&mut context.env());
        let mut physical = GttMemory::new(&self.gtt, &mut *context.memory);
        let commands = match copy_ring(&mut physical, &ring, head, tail) {
            Ok(commands) => commands,
            Err(error) => return Err(self.reject_ring(error)),
        };
        let share = Share::new(self.gtt.graphics_range());
        let mut snapshot = Snapshot::new(&mut physical);
        let frozen = freeze(&commands, &share, &mut snapshot, &mut *context.shadows);
        match frozen {
            Ok(Frozen { mut commands, batches, user_interrupts, loads }) => {
                let contexts = match self.select_contexts(&mut context.env(), &mut commands, &loads) {
                    Ok(contexts) => contexts,
                    Err((load, error)) => {
                        // The command's header: two dwords before its first value.
                        let first = load.upper.min(load.lower).saturating_sub(2);
                        let at = first as u64 * DWORD_BYTES;
                        let offset = ((u64::from(head) + at) % ring.size) as u32;
                        let code = match error {
                            ContextError::NotATable(_) => vgpu::REJECT_CONTEXT,
                            ContextError::ShadowFull => vgpu::REJECT_SHADOW_FULL,
                        };
                        let header = commands.get(first).copied().unwrap_or(0);
                        return Err(self.reject(code, offset, header, RejectCause::Context { pml4: load.pml4, error }));
                    }
                };
                self.consumed = tail;
                self.outstanding.push_back(Outstanding { end_tail: tail, user_interrupts, contexts: contexts.clone() });
                self.regs.submitted = self.regs.submitted.wrapping_add(1);
                Ok(Some(Submission { commands, batches, user_interrupts, end_tail: tail, contexts }))
            }
            Err(Failure::Scan(rejection)) => {
                let at = match rejection.location {
                    Location::Ring { offset } => offset,
                    Location::Batch { .. } => ring_command_of_batch(&commands, &share, &mut snapshot),
                };
                // `at` lies within the copied commands, shorter than the ring.
                let offset = ((u64::from(head) + at) % ring.size) as u32;
                Err(self.reject(reject_code(rejection.reason), offset, rejection.header, RejectCause::Scan(rejection)))
            }
            Err(Failure::NoShadowSpace) => Err(self.reject(vgpu::REJECT_BUSY, head, 0, RejectCause::NoShadowSpace)),
            Err(Failure::Inconsistent) => Err(self.reject(vgpu::REJECT_MALFORMED, head, 0, RejectCause::Inconsistent)),
        }
    }

    /// Shadows the context of each PDP0 load and puts the shadow PML4's
    /// address in its place. On failure the contexts taken so far are let
    /// go again.
    fn select_contexts(&mut self, env: &mut Env<'_>, commands: &mut [u32], loads: &[ContextLoad]) -> Result<Vec<Gpa>, (ContextLoad, ContextError)> {
        let mut taken = Vec::with_capacity(loads.len());
        for load in loads {
            // The low bits of PDP0 are not part of the address.
            let pml4 = Gpa::new(load.pml4 & ppgtt_format::ADDRESS_MASK);
            let result = if load.pml4 & !ppgtt_format::ADDRESS_MASK != 0 {
                Err(ContextError::NotATable(Gpa::new(load.pml4)))
            } else {
                self.shadow.begin(env, pml4)
            };
            match result {
                Ok(root) => {
                    taken.push(pml4);
                    // Both indices came from the scan of these commands.
                    commands[load.upper] = (root.raw() >> 32) as u32;
                    commands[load.lower] = root.raw() as u32;
                }
                Err(error) => {
                    for pml4 in taken {
                        self.shadow.finish(pml4);
                    }
                    return Err((*load, error));
                }
            }
        }
        Ok(taken)
    }

    /// Records a ring-register rejection: nothing is consumed (the
    /// registers do not say what to consume).
    fn reject_ring(&mut self, error: RingError) -> SubmitRejection {
        let rejection = SubmitRejection { code: vgpu::REJECT_RING, offset: self.regs.ring_tail, header: 0, cause: RejectCause::Ring(error) };
        self.record(&rejection);
        rejection
    }

    /// Records a rejection of the commands up to RING_TAIL: they are
    /// consumed without running. RING_HEAD moves past them now if no work
    /// is outstanding, else when the last outstanding submission completes.
    fn reject(&mut self, code: u32, offset: u32, header: u32, cause: RejectCause) -> SubmitRejection {
        let rejection = SubmitRejection { code, offset, header, cause };
        self.record(&rejection);
        let tail = self.regs.ring_tail;
        self.consumed = tail;
        match self.outstanding.back_mut() {
            Some(last) => last.end_tail = tail,
            None => self.regs.ring_head = tail,
        }
        rejection
    }

    fn record(&mut self, rejection: &SubmitRejection) {
        let r = &mut self.regs;
        r.submit_error = rejection.code;
        r.submit_error_offset = rejection.offset;
        r.submit_error_header = rejection.header;
        r.rejected = r.rejected.wrapping_add(1);
        r.int_status |= vgpu::INT_REJECTED;
    }

    /// The oldest outstanding submission finished (with `fault` if the GPU
    /// faulted on it; the driver has already recovered the real ring).
    /// RING_HEAD moves to its end and SEQNO counts its MI_USER_INTERRUPTs
    /// (also after a fault: the work is over either way, and a guest
    /// waiting on a sequence number must not wait forever; INT_FAULT tells
    /// it the work did not all run). Returns the interrupt line's level.
    pub fn complete(&mut self, fault: Option<GpuFault>) -> bool {
        if let Some(done) = self.outstanding.pop_front() {
            for pml4 in &done.contexts {
                self.shadow.finish(*pml4);
            }
            let r = &mut self.regs;
            r.ring_head = done.end_tail;
            r.seqno = r.seqno.wrapping_add(done.user_interrupts);
            if done.user_interrupts > 0 {
                r.int_status |= vgpu::INT_USER;
            }
            if let Some(fault) = fault {
                r.fault = fault;
                r.int_status |= vgpu::INT_FAULT;
            }
        }
        self.interrupt_asserted()
    }

    /// Back to the power-on state (the partition restarts): GTT entries
    /// unpinned and cleared, registers zeroed, outstanding work forgotten
    /// (the caller drops the partition's queue in the scheduler and fills
    /// its real-GTT slice with scratch, as [`VirtualGtt::reset`] says).
    pub fn reset(&mut self, env: &mut Env<'_>) {
        self.gtt.reset(env.pins);
        self.shadow.reset(env);
        self.regs = Registers::default();
        self.consumed = 0;
        self.outstanding.clear();
        self.ignored = 0;
    }
}

/// Copies the ring's dwords `[head, tail)` (byte offsets), joining the two
/// parts if the ring wrapped.
fn copy_ring(memory: &mut dyn GraphicsMemory, ring: &Ring, head: u32, tail: u32) -> Result<Vec<u32>, RingError> {
    let (head, tail) = (u64::from(head), u64::from(tail));
    // Both are below the ring size (checked in `ring`).
    let parts = if head < tail { [(head, tail), (0, 0)] } else { [(head, ring.size), (0, tail)] };
    let mut commands = Vec::new();
    for (from, to) in parts {
        if from == to {
            continue;
        }
        let address = ring.start + from;
        let mut bytes = vec![0u8; (to - from) as usize];
        if !memory.read(address, &mut bytes) {
            return Err(RingError::Unreadable { address });
        }
        commands.extend(dwords_of(&bytes));
    }
    Ok(commands)
}

/// The REJECT_* code the guest sees for a scanner reason.
fn reject_code(reason: Reason) -> u32 {
    match reason {
        Reason::Unknown | Reason::Privileged(_) | Reason::PerProcessAddressing | Reason::Tiled => vgpu::REJECT_FORBIDDEN,
        Reason::OutsideShare { .. } | Reason::BatchLeavesShare { .. } | Reason::BatchUnreadable { .. } => vgpu::REJECT_OUTSIDE_SHARE,
        Reason::NestingTooDeep | Reason::ScanBudgetExceeded => vgpu::REJECT_TOO_DEEP,
        Reason::NoContext => vgpu::REJECT_CONTEXT,
        Reason::BadLength { .. }
        | Reason::ReservedBits { .. }
        | Reason::Truncated { .. }
        | Reason::Overflow
        | Reason::Misaligned(_)
        | Reason::NegativePitch
        | Reason::NegativeCoordinate
        | Reason::EmptyRectangle
        | Reason::BatchEndInRing => vgpu::REJECT_MALFORMED,
    }
}

/// The ring offset of the MI_BATCH_BUFFER_START whose batch was rejected:
/// the first one whose scan alone fails. Scans are answered from the
/// snapshot, so they see what the failed scan saw; the ones before it
/// passed within the shared budget before, so the cost stays bounded.
fn ring_command_of_batch<M: BatchMemory>(commands: &[u32], share: &Share, memory: &mut M) -> u64 {
    let mut at = 0u64;
    let _ = walk(commands, |pos, len, header| {
        if is_batch_start(header) && scan::scan(&commands[pos..pos + len], share, memory).is_err() {
            at = pos as u64 * DWORD_BYTES;
            return false;
        }
        true
    });
    at
}

/// A global-GTT batch start (PPGTT batches are neither scanned nor frozen).
fn is_batch_start(header: u32) -> bool {
    cmd::client(header) == cmd::CLIENT_MI && cmd::mi_opcode(header) == cmd::MI_BATCH_BUFFER_START && header & cmd::BBS_PPGTT == 0
}

fn is_user_interrupt(header: u32) -> bool {
    cmd::client(header) == cmd::CLIENT_MI && cmd::mi_opcode(header) == cmd::MI_USER_INTERRUPT
}

/// Calls `visit(position, dwords, header)` for each command of an
/// accepted stream until it returns `false`. `Err` if the stream does not
/// decode into whole commands.
fn walk(stream: &[u32], mut visit: impl FnMut(usize, usize, u32) -> bool) -> Result<(), ()> {
    let mut pos = 0usize;
    while let Some(&header) = stream.get(pos) {
        let len = scan::command_dwords(header).map_err(|_| ())?;
        let end = pos.checked_add(len).filter(|&end| end <= stream.len()).ok_or(())?;
        if !visit(pos, len, header) {
            return Ok(());
        }
        pos = end;
    }
    Ok(())
}

/// A scanned submission: relocated ring commands, the shadow batches, its
/// MI_USER_INTERRUPTs, and its PDP0 loads (still holding guest addresses).
struct Frozen {
    commands: Vec<u32>,
    batches: Vec<ShadowBatch>,
    user_interrupts: u32,
    loads: Vec<ContextLoad>,
}

/// Why a submission could not be frozen.
enum Failure {
    Scan(Rejection),
    NoShadowSpace,
    Inconsistent,
}

/// An MI_BATCH_BUFFER_START to point at a shadow: dword position of the
/// command in its stream, and the shadow index.
struct Patch {
    position: usize,
    shadow: usize,
}

/// The MI_BATCH_BUFFER_START patches of `stream` and its MI_USER_INTERRUPTs.
fn relocations(stream: &[u32], shadows: &BTreeMap<u64, usize>) -> Result<(Vec<Patch>, u32), Failure> {
    let (mut patches, mut interrupts, mut missing) = (Vec::new(), 0u32, false);
    walk(stream, |pos, _, header| {
        if is_user_interrupt(header) {
            interrupts = interrupts.saturating_add(1);
        } else if is_batch_start(header) {
            // The command is whole (walk checked), so pos + 2 exists.
            let target = u64::from(stream[pos + 1]) | (u64::from(stream[pos + 2]) << 32);
            match shadows.get(&target) {
                Some(&shadow) => patches.push(Patch { position: pos, shadow }),
                None => missing = true,
            }
        }
        !missing
    })
    .map_err(|()| Failure::Inconsistent)?;
    if missing { Err(Failure::Inconsistent) } else { Ok((patches, interrupts)) }
}

fn apply(stream: &mut [u32], patches: &[Patch], addresses: &[u64]) {
    for patch in patches {
        // Indices were produced from these same vectors.
        let address = addresses[patch.shadow];
        stream[patch.position + 1] = address as u32;
        stream[patch.position + 2] = (address >> 32) as u32;
    }
}

/// Scans `commands`, copies every batch it reaches out of `snapshot` into
/// shadows placed by `placement`, and relocates the batch starts. Returns
/// the relocated ring commands, the shadows and the interrupt count.
fn freeze<M: BatchMemory>(
    commands: &[u32],
    share: &Share,
    snapshot: &mut M,
    placement: &mut dyn ShadowPlacement,
) -> Result<Frozen, Failure> {
    let accepted = scan::scan(commands, share, snapshot).map_err(Failure::Scan)?;
    // One shadow per distinct batch address: from one address a
    // consistent snapshot always scans the same commands. Keep the longest
    // span in case it did not (then the walk below refuses).
    let mut index: BTreeMap<u64, usize> = BTreeMap::new();
    let mut shadows: Vec<ShadowBatch> = Vec::new();
    for span in &accepted.batches {
        let mut dwords = vec![0u32; span.dwords];
        if !snapshot.read(span.address, &mut dwords) {
            return Err(Failure::Inconsistent);
        }
        match index.get(&span.address) {
            Some(&i) => {
                if shadows[i].dwords != dwords {
                    return Err(Failure::Inconsistent);
                }
            }
            None => {
                index.insert(span.address, shadows.len());
                shadows.push(ShadowBatch { guest_address: span.address, address: 0, dwords });
            }
        }
    }
    let (ring_patches, ring_interrupts) = relocations(commands, &index)?;
    let mut batch_patches = Vec::with_capacity(shadows.len());
    let mut batch_interrupts = Vec::with_capacity(shadows.len());
    for shadow in &shadows {
        let (patches, interrupts) = relocations(&shadow.dwords, &index)?;
        batch_patches.push(patches);
        batch_interrupts.push(interrupts);
    }
    // Each time a batch runs it is one span of the scan.
    let mut user_interrupts = ring_interrupts;
    for span in &accepted.batches {
        let count = index.get(&span.address).and_then(|&i| batch_interrupts.get(i)).copied().unwrap_or(0);
        user_interrupts = user_interrupts.saturating_add(count);
    }
    let addresses = if shadows.is_empty() { Vec::new() } else { place(&shadows, placement)? };
    let mut ring = commands.to_vec();
    apply(&mut ring, &ring_patches, &addresses);
    for ((shadow, patches), &address) in shadows.iter_mut().zip(&batch_patches).zip(&addresses) {
        shadow.address = address;
        apply(&mut shadow.dwords, patches, &addresses);
    }
    Ok(Frozen { commands: ring, batches: shadows, user_interrupts, loads: accepted.contexts })
}

/// Asks `placement` for the shadows' addresses and checks them.
fn place(shadows: &[ShadowBatch], placement: &mut dyn ShadowPlacement) -> Result<Vec<u64>, Failure> {
    let sizes: Vec<u64> = shadows.iter().map(|s| s.dwords.len() as u64 * DWORD_BYTES).collect();
    let addresses = placement.place(&sizes).ok_or(Failure::NoShadowSpace)?;
    let valid = addresses.len() == sizes.len()
        && addresses
            .iter()
            .zip(&sizes)
            .all(|(&address, &size)| address.is_multiple_of(DWORD_BYTES) && address.checked_add(size).is_some_and(|end| end <= GRAPHICS_ADDRESS_LIMIT));
    if valid { Ok(addresses) } else { Err(Failure::NoShadowSpace) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Gpa;
    use crate::address_space::{Region, RegionKind};
    use crate::gpu::gtt::{Invalid, LocalMemory};
    use bulkhead_config::{MemoryAttribute, Permissions};
    use cmd::{blt, mi};

    /// Real GTT index of guest entry 0: graphics range 0x10_0000..0x14_0000.
    const BASE: u64 = 0x100;
    const ENTRIES: u64 = 64;
    const G0: u64 = BASE * 4096;
    const G_END: u64 = G0 + ENTRIES * 4096;
    /// The partition's RAM: guest 0x4000_0000, host 0x1_0000_0000, 1 MiB.
    const RAM_GPA: u64 = 0x4000_0000;
    const RAM_HPA: u64 = 0x1_0000_0000;
    const RAM_SIZE: u64 = 0x10_0000;
    /// Its local memory: real offsets 0x40_0000.., 32 KiB.
    const LOCAL: LocalMemory = LocalMemory { offset: 0x40_0000, size: 0x8000 };
    /// Entries 0..32 map RAM pages 0..32; entries 32..40 local pages 0..8.
    const RAM_ENTRIES: u64 = 32;
    const G_LOCAL: u64 = G0 + RAM_ENTRIES * 4096;
    /// Where the test's placement puts shadow batches (hypervisor space).
    const SHADOW: u64 = 0x100_0000;
    const LM: u64 = vgpu::GTT_LOCAL_MEMORY | gtt::PRESENT;
    const INTERRUPT: u32 = 42;
    const BBE: u32 = 0x0500_0000;

    struct Fake {
        ram: Vec<u8>,
        local: Vec<u8>,
    }

    impl PhysicalReader for Fake {
        fn read_ram(&mut self, address: Hpa, buf: &mut [u8]) -> bool {
            let Some(at) = address.raw().checked_sub(RAM_HPA) else { return false };
            let Some(src) = self.ram.get(at as usize..at as usize + buf.len()) else { return false };
            buf.copy_from_slice(src);
            true
        }
        fn read_local(&mut self, offset: u64, buf: &mut [u8]) -> bool {
            let Some(at) = offset.checked_sub(LOCAL.offset) else { return false };
            let Some(src) = self.local.get(at as usize..at as usize + buf.len()) else { return false };
            buf.copy_from_slice(src);
            true
        }
    }

    /// Guest page tables (host address of an entry → value), the shadow
    /// pool and the write protection.
    #[derive(Default)]
    struct Tables {
        guest: BTreeMap<u64, u64>,
        shadow: BTreeMap<u64, u64>,
        next: u64,
        tracked: alloc::collections::BTreeSet<u64>,
    }

    /// Where the fake pool hands out shadow pages.
    const POOL: u64 = 0x2_0000_0000;

    impl PpgttMemory for Tables {
        fn read_guest_entry(&self, table: Hpa, index: usize) -> u64 {
            self.guest.get(&(table.raw() + index as u64 * 8)).copied().unwrap_or(0)
        }
        fn allocate(&mut self) -> Option<Hpa> {
            self.next += 1;
            Some(Hpa::new(POOL + self.next * 4096))
        }
        fn free(&mut self, _: Hpa) {}
        fn write_shadow_entry(&mut self, page: Hpa, index: usize, entry: u64) {
            self.shadow.insert(page.raw() + index as u64 * 8, entry);
        }
        fn track(&mut self, page: Gpa) -> bool {
            self.tracked.insert(page.raw())
        }
        fn untrack(&mut self, page: Gpa) {
            self.tracked.remove(&page.raw());
        }
    }

    struct Rig {
        gpu: VirtualGpu,
        tables: Tables,
        space: AddressSpace,
        pins: PinnedPages,
        mem: Fake,
        /// Whether the placement finds room.
        room: bool,
    }

    fn region(gpa: u64, hpa: u64, size: u64, kind: RegionKind) -> Region {
        Region { gpa: Gpa::new(gpa), hpa: Hpa::new(hpa), size, attr: MemoryAttribute::NormalWb, perms: Permissions::parse("rw").unwrap(), kind, dma: true }
    }

    impl Rig {
        /// A virtual GPU whose entries are mapped as described above, with
        /// a one-page ring at [`RING`], enabled.
        fn new() -> Rig {
            let mut space = AddressSpace::new();
            space.add_region(region(RAM_GPA, RAM_HPA, RAM_SIZE, RegionKind::Ram)).unwrap();
            space.add_region(region(0x0900_0000, 0x0900_0000, 0x1000, RegionKind::Device)).unwrap();
            let gtt = VirtualGtt::new(BASE, ENTRIES, Hpa::new(0x7000_0000)).unwrap().with_local_memory(LOCAL).unwrap();
            let mut rig = Rig {
                gpu: VirtualGpu::new(gtt, INTERRUPT).unwrap(),
                tables: Tables::default(),
                space,
                pins: PinnedPages::new("p", 64),
                mem: Fake { ram: vec![0; RAM_SIZE as usize], local: vec![0; LOCAL.size as usize] },
                room: true,
            };
            for i in 0..RAM_ENTRIES {
                rig.write(vgpu::GTT_OFFSET + i * 8, 8, (RAM_GPA + i * 4096) | gtt::PRESENT);
            }
            for i in 0..LOCAL.size / 4096 {
                rig.write(vgpu::GTT_OFFSET + (RAM_ENTRIES + i) * 8, 8, (i * 4096) | LM);
            }
            rig.write(vgpu::RING_START, 4, u64::from(RING));
            rig.write(vgpu::RING_CTL, 4, u64::from(vgpu::RING_CTL_ENABLE));
            rig
        }

        fn write(&mut self, offset: u64, size: u8, value: u64) -> WriteEffect {
            let room = self.room;
            // Packs shadows from SHADOW, 8-byte aligned.
            let mut place = move |sizes: &[u64]| -> Option<Vec<u64>> {
                if !room {
                    return None;
                }
                let mut next = SHADOW;
                Some(
                    sizes
                        .iter()
                        .map(|s| {
                            let at = next;
                            next += s.next_multiple_of(8);
                            at
                        })
                        .collect(),
                )
            };
            let mut context =
                WriteContext { space: &self.space, pins: &mut self.pins, memory: &mut self.mem, shadows: &mut place, tables: &mut self.tables };
            self.gpu.write(&mut context, offset, size, value)
        }

        fn read(&mut self, offset: u64) -> u32 {
            self.gpu.read(offset, 4) as u32
        }

        /// Stores dwords at a graphics address of the mapped entries.
        fn put(&mut self, address: u64, dwords: &[u32]) {
            for (i, d) in dwords.iter().enumerate() {
                let g = address + 4 * i as u64;
                let (memory, at) = if g < G_LOCAL { (&mut self.mem.ram, g - G0) } else { (&mut self.mem.local, g - G_LOCAL) };
                memory[at as usize..at as usize + 4].copy_from_slice(&d.to_le_bytes());
            }
        }

        /// Writes `dwords` into the ring at byte `at` and submits up to the
        /// end of them.
        fn submit_at(&mut self, at: u64, dwords: &[u32]) -> WriteEffect {
            self.put(u64::from(RING) + at, dwords);
            self.write(vgpu::RING_TAIL, 4, at + 4 * dwords.len() as u64)
        }
    }

    /// The ring: one page at entry 16.
    const RING: u32 = (G0 + 16 * 4096) as u32;
    const RING_BYTES: u64 = 4096;

    fn lo(a: u64) -> u32 {
        a as u32
    }
    fn hi(a: u64) -> u32 {
        (a >> 32) as u32
    }
    fn sdi(a: u64) -> [u32; 4] {
        [mi(cmd::MI_STORE_DATA_IMM, cmd::SDI_USE_GLOBAL_GTT | 2), lo(a), hi(a), 0xdead]
    }
    fn bbs(a: u64, flags: u32) -> [u32; 3] {
        [mi(cmd::MI_BATCH_BUFFER_START, flags | 1), lo(a), hi(a)]
    }
    fn user() -> u32 {
        mi(cmd::MI_USER_INTERRUPT, 0)
    }
    fn color(dst: u64) -> [u32; 7] {
        [blt(cmd::XY_COLOR_BLT, cmd::BLT_WRITE_ALPHA | cmd::BLT_WRITE_RGB | 5), (3 << 24) | (0xf0 << 16) | 256, 0, (4 << 16) | 64, lo(dst), hi(dst), 0]
    }

    #[test]
    fn identity_and_information_registers() {
        let mut rig = Rig::new();
        assert_eq!(rig.read(vgpu::GPU_ID), vgpu::GPU_ID_VALUE);
        assert_eq!(rig.read(vgpu::GPU_VERSION), vgpu::GPU_VERSION_VALUE);
        assert_eq!((rig.read(vgpu::LMEM_SIZE_LO), rig.read(vgpu::LMEM_SIZE_HI)), (0x8000, 0));
        assert_eq!(rig.read(vgpu::GTT_BASE), vgpu::GTT_OFFSET as u32);
        assert_eq!(rig.read(vgpu::GTT_SIZE), ENTRIES as u32);
        assert_eq!(rig.read(vgpu::INFO_MAGIC), vgpu::INFO_MAGIC_VALUE);
        assert_eq!((rig.read(vgpu::INFO_GRAPHICS_BASE_LO), rig.read(vgpu::INFO_GRAPHICS_BASE_HI)), (G0 as u32, 0));
        assert_eq!(rig.read(vgpu::INFO_INTERRUPT), INTERRUPT);
        assert_eq!((rig.read(vgpu::RING_START), rig.read(vgpu::RING_CTL)), (RING, vgpu::RING_CTL_ENABLE));
        assert_eq!(rig.read(vgpu::INFO_GTT_REFUSED), 0);
        // Read-only registers ignore writes.
        for offset in [vgpu::GPU_ID, vgpu::SEQNO, vgpu::RING_HEAD, vgpu::INFO_SUBMITTED, vgpu::FAULT_COMMAND] {
            assert_eq!(rig.write(offset, 4, 0x1234), WriteEffect::default());
        }
        assert_eq!(rig.read(vgpu::GPU_ID), vgpu::GPU_ID_VALUE);
        assert_eq!(rig.gpu.ignored(), 5);
    }

    #[test]
    fn configuration_errors() {
        let gtt = |entries| VirtualGtt::new(0, entries, Hpa::new(0x7000_0000)).unwrap();
        assert!(VirtualGpu::new(gtt(0x2_0000), 0).is_ok());
        assert_eq!(VirtualGpu::new(gtt(0x2_0001), 0).unwrap_err(), VgpuConfigError::GttTooLarge { entries: 0x2_0001 });
        let high = VirtualGtt::new(0x10_0000, 1, Hpa::new(0x7000_0000)).unwrap();
        assert!(matches!(VirtualGpu::new(high, 0), Err(VgpuConfigError::RangeTooHigh { .. })));
    }

    #[test]
    fn gtt_writes_through_the_register_path() {
        let mut rig = Rig::new();
        let entry = vgpu::GTT_OFFSET + 40 * 8;
        // Halves are held, then validated as a whole.
        let held = rig.write(entry, 4, (RAM_GPA + 0x3_0000) | 1);
        assert!(held.gtt_updates.is_empty() && held.gtt_entry.is_none());
        assert_eq!(rig.gpu.read(entry, 8), RAM_GPA + 0x3_0001);
        let done = rig.write(entry + 4, 4, 0);
        assert_eq!(done.gtt_updates, [RealGttUpdate { index: BASE + 40, value: RAM_HPA + 0x3_0001 }]);
        assert_eq!(done.gtt_entry, Some(EntryState::Mapped(Target::Ram(Hpa::new(RAM_HPA + 0x3_0000)))));
        // Local memory inside its share, and outside.
        let inside = rig.write(entry, 8, 0x7000 | LM);
        assert_eq!(inside.gtt_updates, [RealGttUpdate { index: BASE + 40, value: (LOCAL.offset + 0x7000) | LM }]);
        assert!(!rig.pins.is_pinned(Hpa::new(RAM_HPA + 0x3_0000)), "the RAM page was released");
        let outside = rig.write(entry, 8, 0x8000 | LM);
        assert_eq!(outside.gtt_entry, Some(EntryState::Refused(Invalid::OutsideLocalMemory(0x8000))));
        // MMIO, another partition's / the hypervisor's memory: refused.
        assert!(matches!(rig.write(entry, 8, 0x0900_0001).gtt_entry, Some(EntryState::Refused(Invalid::DeviceMemory(_)))));
        assert!(matches!(rig.write(entry, 8, RAM_HPA | 1).gtt_entry, Some(EntryState::Refused(Invalid::OutsideDeviceView(_)))));
        assert_eq!(rig.read(vgpu::INFO_GTT_REFUSED), 3);
        assert_eq!(rig.read(entry), lo(RAM_HPA | 1), "reads back as written");
        // Beyond its entries, or unaligned: ignored, never a panic.
        let before = rig.gpu.ignored();
        assert_eq!(rig.write(vgpu::GTT_OFFSET + ENTRIES * 8, 8, RAM_GPA | 1), WriteEffect::default());
        assert_eq!(rig.write(vgpu::GTT_OFFSET + 4, 8, RAM_GPA | 1), WriteEffect::default());
        assert_eq!(rig.gpu.read(vgpu::GTT_OFFSET + ENTRIES * 8, 8), 0);
        assert_eq!(rig.gpu.ignored(), before + 3);
    }

    #[test]
    fn odd_sizes_and_unknown_offsets_read_zero_and_are_ignored() {
        let mut rig = Rig::new();
        let cases: [(u64, u8); 8] = [
            (vgpu::GPU_ID, 8),
            (vgpu::GPU_ID, 2),
            (vgpu::GPU_ID + 1, 4),
            (0x3000, 4),
            (vgpu::REGISTER_BAR_SIZE, 8),
            (u64::MAX, 4),
            (u64::MAX - 7, 8),
            (vgpu::GTT_OFFSET, 1),
        ];
        for (offset, size) in cases {
            assert_eq!(rig.gpu.read(offset, size), 0, "{offset:#x}/{size}");
            let effect = rig.write(offset, size, u64::MAX);
            assert!(effect.gtt_updates.is_empty() && effect.submission.is_none() && effect.rejection.is_none());
        }
        assert_eq!(rig.gpu.ignored(), 16);
        // A pseudo-random storm of accesses never panics.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let offset = match state % 4 {
                0 => state >> 40,
                1 => vgpu::RING_TAIL + (state >> 60) * 4,
                2 => vgpu::GTT_OFFSET + (state >> 50),
                _ => state,
            };
            let size = [1, 2, 4, 8][(state >> 8) as usize % 4];
            rig.write(offset, size, state.rotate_left(17));
            rig.gpu.read(offset, size);
            if state.is_multiple_of(7) {
                rig.gpu.complete(None);
            }
        }
    }

    #[test]
    fn int_status_is_write_one_to_clear_and_gates_the_line() {
        let mut rig = Rig::new();
        rig.write(vgpu::RING_START, 4, u64::from(RING));
        rig.write(vgpu::RING_CTL, 4, u64::from(vgpu::RING_CTL_ENABLE));
        let effect = rig.write(vgpu::RING_TAIL, 4, 4);
        assert!(effect.rejection.is_some(), "tail not qword aligned");
        assert!(!effect.interrupt_asserted, "not enabled");
        assert_eq!(rig.read(vgpu::INT_STATUS), vgpu::INT_REJECTED);
        assert!(rig.write(vgpu::INT_ENABLE, 4, 0xffff_ffff).interrupt_asserted);
        assert_eq!(rig.read(vgpu::INT_ENABLE), INT_ALL, "undefined bits read as 0");
        // Writing 0s or other bits clears nothing.
        assert!(rig.write(vgpu::INT_STATUS, 4, u64::from(vgpu::INT_USER)).interrupt_asserted);
        assert_eq!(rig.read(vgpu::INT_STATUS), vgpu::INT_REJECTED);
        let cleared = rig.write(vgpu::INT_STATUS, 4, u64::from(vgpu::INT_REJECTED));
        assert!(!cleared.interrupt_asserted);
        assert_eq!(rig.read(vgpu::INT_STATUS), 0);
        assert!(!rig.gpu.interrupt_asserted());
    }

    #[test]
    fn an_accepted_submission_completes_into_head_seqno_and_int_user() {
        let mut rig = Rig::new();
        rig.write(vgpu::INT_ENABLE, 4, u64::from(vgpu::INT_USER));
        let mut ring = sdi(G0).to_vec();
        ring.extend([user(), 0]);
        let effect = rig.submit_at(0, &ring);
        let submission = effect.submission.unwrap();
        assert_eq!(submission, Submission { commands: ring.clone(), batches: Vec::new(), user_interrupts: 1, end_tail: 24, contexts: Vec::new() });
        assert!(!effect.interrupt_asserted);
        assert_eq!((rig.read(vgpu::RING_HEAD), rig.read(vgpu::RING_TAIL), rig.read(vgpu::INFO_SUBMITTED)), (0, 24, 1));
        assert_eq!(rig.gpu.outstanding(), 1);
        // Writing the same tail again submits nothing.
        assert_eq!(rig.write(vgpu::RING_TAIL, 4, 24), WriteEffect::default());
        assert!(rig.gpu.complete(None));
        assert_eq!((rig.read(vgpu::RING_HEAD), rig.read(vgpu::SEQNO), rig.read(vgpu::INT_STATUS)), (24, 1, vgpu::INT_USER));
        assert_eq!(rig.gpu.outstanding(), 0);
        // Completing with nothing outstanding changes nothing.
        rig.write(vgpu::INT_STATUS, 4, u64::from(INT_ALL));
        assert!(!rig.gpu.complete(None));
        assert_eq!(rig.read(vgpu::SEQNO), 1);
        // Work without MI_USER_INTERRUPT does not raise INT_USER.
        rig.submit_at(24, &[0, 0]).submission.unwrap();
        assert!(!rig.gpu.complete(None));
        assert_eq!((rig.read(vgpu::RING_HEAD), rig.read(vgpu::INT_STATUS)), (32, 0));
    }

    #[test]
    fn a_fault_is_reported_in_fault_registers_and_cleared_by_writing_zero() {
        let mut rig = Rig::new();
        rig.write(vgpu::INT_ENABLE, 4, u64::from(vgpu::INT_FAULT));
        rig.submit_at(0, &[user(), 0]).submission.unwrap();
        let fault = GpuFault { status: 2, command: 0x5440_0005, address: 0x1_2345_6000 };
        assert!(rig.gpu.complete(Some(fault)));
        assert_eq!(rig.read(vgpu::INT_STATUS), vgpu::INT_FAULT | vgpu::INT_USER);
        assert_eq!(rig.read(vgpu::FAULT_STATUS), 2);
        assert_eq!(rig.read(vgpu::FAULT_COMMAND), 0x5440_0005);
        assert_eq!((rig.read(vgpu::FAULT_ADDRESS_LO), rig.read(vgpu::FAULT_ADDRESS_HI)), (0x2345_6000, 1));
        assert_eq!(rig.read(vgpu::SEQNO), 1);
        rig.write(vgpu::FAULT_STATUS, 4, 5);
        assert_eq!(rig.read(vgpu::FAULT_STATUS), 2, "only 0 clears");
        rig.write(vgpu::FAULT_STATUS, 4, 0);
        assert_eq!(rig.read(vgpu::FAULT_STATUS), 0);
    }

    #[test]
    fn a_wrapped_ring_is_joined_in_order() {
        let mut rig = Rig::new();
        let filler = vec![0u32; (RING_BYTES as usize - 16) / 4];
        rig.submit_at(0, &filler).submission.unwrap();
        rig.gpu.complete(None);
        // SDI in the last 16 bytes, then a user interrupt and a NOOP at 0.
        rig.put(u64::from(RING) + RING_BYTES - 16, &sdi(G0 + 8));
        rig.put(u64::from(RING), &[user(), 0]);
        let submission = rig.write(vgpu::RING_TAIL, 4, 8).submission.unwrap();
        let mut expected = sdi(G0 + 8).to_vec();
        expected.extend([user(), 0]);
        assert_eq!(submission.commands, expected);
        assert_eq!((submission.end_tail, submission.user_interrupts), (8, 1));
        rig.gpu.complete(None);
        assert_eq!(rig.read(vgpu::RING_HEAD), 8);
    }

    fn rejected(effect: &WriteEffect) -> (u32, u32, u32) {
        let r = effect.rejection.expect("rejected");
        assert!(effect.submission.is_none());
        (r.code, r.offset, r.header)
    }

    #[test]
    fn scanner_rejections_are_recorded_and_consume_the_commands() {
        let mut rig = Rig::new();
        let lri = mi(cmd::MI_LOAD_REGISTER_IMM, 1);
        let effect = rig.submit_at(0, &[0, 0, lri, 0x2030, 0, 0]);
        assert_eq!(rejected(&effect), (vgpu::REJECT_FORBIDDEN, 8, lri));
        assert_eq!(
            (rig.read(vgpu::INFO_SUBMIT_ERROR), rig.read(vgpu::INFO_SUBMIT_ERROR_OFFSET), rig.read(vgpu::INFO_SUBMIT_ERROR_HEADER)),
            (vgpu::REJECT_FORBIDDEN, 8, lri)
        );
        assert_eq!((rig.read(vgpu::RING_HEAD), rig.read(vgpu::INFO_REJECTED)), (24, 1), "nothing runs, head moves past");
        assert_eq!(rig.read(vgpu::INT_STATUS), vgpu::INT_REJECTED);
        // A blit outside the partition's graphics range; the offset is in
        // the guest's ring, after the head.
        let blit = color(G_END - 512);
        assert_eq!(
            rejected(&rig.submit_at(24, &[0, 0, blit[0], blit[1], blit[2], blit[3], blit[4], blit[5], blit[6], 0])),
            (vgpu::REJECT_OUTSIDE_SHARE, 32, blit[0])
        );
        // Malformed, and too deep.
        assert_eq!(rejected(&rig.submit_at(64, &[BBE, 0])).0, vgpu::REJECT_MALFORMED);
        let mut deep = bbs(G0, cmd::BBS_SECOND_LEVEL).to_vec();
        deep.push(0);
        assert_eq!(rejected(&rig.submit_at(72, &deep)).0, vgpu::REJECT_TOO_DEEP);
        // A privileged command inside a batch: blamed on the ring's start.
        rig.put(G0 + 0x2000, &[0, mi(cmd::MI_SET_CONTEXT, 0), BBE]);
        let mut ring = vec![user(), 0];
        ring.extend(bbs(G0 + 0x3000, 0));
        ring.extend(bbs(G0 + 0x2000, 0));
        ring.extend([0, 0]);
        rig.put(G0 + 0x3000, &[BBE, 0]);
        assert_eq!(rejected(&rig.submit_at(88, &ring)), (vgpu::REJECT_FORBIDDEN, 88 + 20, mi(cmd::MI_SET_CONTEXT, 0)));
        // A batch in an entry that maps nothing: the batch's first dword
        // cannot be read, so there is no header to report.
        let unmapped = G0 + 50 * 4096;
        let mut ring = bbs(unmapped, 0).to_vec();
        ring.push(0);
        assert_eq!(rejected(&rig.submit_at(128, &ring)), (vgpu::REJECT_OUTSIDE_SHARE, 128, 0));
        assert_eq!(rig.read(vgpu::INFO_REJECTED), 6);
        assert_eq!(rig.gpu.outstanding(), 0);
    }

    #[test]
    fn a_disabled_ring_keeps_its_tail_and_runs_it_once_enabled() {
        let mut rig = Rig::new();
        rig.write(vgpu::RING_START, 4, u64::from(RING));
        rig.write(vgpu::RING_CTL, 4, 0);
        let effect = rig.write(vgpu::RING_TAIL, 4, 8);
        assert!(effect.rejection.is_none() && effect.submission.is_none(), "{effect:?}");
        assert_eq!(rig.read(vgpu::INT_STATUS), 0);
        let effect = rig.write(vgpu::RING_CTL, 4, u64::from(vgpu::RING_CTL_ENABLE));
        assert_eq!(effect.submission.unwrap().end_tail, 8);
        assert!(rig.write(vgpu::RING_CTL, 4, u64::from(vgpu::RING_CTL_ENABLE)).submission.is_none(), "already enabled");
    }

    #[test]
    fn bad_ring_registers_are_rejected_without_consuming_anything() {
        let cases: [(u32, u32, u64); 6] = [
            (RING + 0x800, vgpu::RING_CTL_ENABLE, 8),                   // start misaligned
            ((G0 - 4096) as u32, vgpu::RING_CTL_ENABLE, 8),             // start below the range
            ((G_END - 4096) as u32, vgpu::RING_CTL_ENABLE | 0x1000, 8), // two pages, the second outside
            (RING, vgpu::RING_CTL_ENABLE, 4),                           // tail not qword aligned
            (RING, vgpu::RING_CTL_ENABLE, RING_BYTES),                  // tail beyond the ring
            (RING, vgpu::RING_CTL_ENABLE, 0x40_0000),                   // tail beyond the offset bits
        ];
        for (n, (start, ctl, tail)) in cases.into_iter().enumerate() {
            let mut rig = Rig::new();
            rig.write(vgpu::RING_START, 4, u64::from(start));
            rig.write(vgpu::RING_CTL, 4, u64::from(ctl));
            let effect = rig.write(vgpu::RING_TAIL, 4, tail);
            assert!(matches!(effect.rejection, Some(SubmitRejection { code: vgpu::REJECT_RING, cause: RejectCause::Ring(_), .. })), "case {n}: {effect:?}");
            assert_eq!((rig.read(vgpu::RING_HEAD), rig.read(vgpu::INT_STATUS)), (0, vgpu::INT_REJECTED), "case {n}");
            // Once fixed, the same commands are submitted from the old head.
            rig.write(vgpu::RING_START, 4, u64::from(RING));
            rig.write(vgpu::RING_CTL, 4, u64::from(vgpu::RING_CTL_ENABLE));
            assert_eq!(rig.write(vgpu::RING_TAIL, 4, 8).submission.unwrap().end_tail, 8, "case {n}");
        }
        // A ring in an entry that maps nothing cannot be read.
        let mut rig = Rig::new();
        rig.write(vgpu::RING_START, 4, G0 + 60 * 4096);
        let effect = rig.write(vgpu::RING_TAIL, 4, 8);
        assert_eq!(effect.rejection.unwrap().cause, RejectCause::Ring(RingError::Unreadable { address: G0 + 60 * 4096 }));
        // A ring shrunk under a head that no longer fits.
        let mut rig = Rig::new();
        rig.write(vgpu::RING_CTL, 4, u64::from(vgpu::RING_CTL_ENABLE | 0x1000));
        rig.submit_at(4096, &[0, 0]).submission.unwrap();
        rig.write(vgpu::RING_CTL, 4, u64::from(vgpu::RING_CTL_ENABLE));
        assert_eq!(rig.write(vgpu::RING_TAIL, 4, 8).rejection.unwrap().cause, RejectCause::Ring(RingError::BadHead(4104)));
    }

    #[test]
    fn too_much_outstanding_work_is_busy() {
        let mut rig = Rig::new();
        for n in 0..MAX_OUTSTANDING as u64 {
            rig.submit_at(n * 8, &[user(), 0]).submission.unwrap();
        }
        let at = MAX_OUTSTANDING as u64 * 8;
        let effect = rig.submit_at(at, &[user(), 0]);
        assert_eq!(rejected(&effect), (vgpu::REJECT_BUSY, at as u32, 0));
        assert_eq!(effect.rejection.unwrap().cause, RejectCause::Busy);
        // The rejected commands are consumed, but RING_HEAD only passes
        // them once the work before them is done.
        for _ in 0..MAX_OUTSTANDING - 1 {
            rig.gpu.complete(None);
        }
        assert_eq!(rig.read(vgpu::RING_HEAD), at as u32 - 8);
        rig.gpu.complete(None);
        assert_eq!(rig.read(vgpu::RING_HEAD), at as u32 + 8);
        assert_eq!(rig.read(vgpu::SEQNO), MAX_OUTSTANDING as u32);
        // Room again.
        assert!(rig.submit_at(at + 8, &[user(), 0]).submission.is_some());
    }

    #[test]
    fn no_room_for_shadows_is_busy() {
        let mut rig = Rig::new();
        rig.room = false;
        rig.put(G0, &[BBE, 0]);
        let mut ring = bbs(G0, 0).to_vec();
        ring.push(0);
        let effect = rig.submit_at(0, &ring);
        assert_eq!(rejected(&effect).0, vgpu::REJECT_BUSY);
        assert_eq!(effect.rejection.unwrap().cause, RejectCause::NoShadowSpace);
        // Without batches no shadow space is needed.
        assert!(rig.submit_at(16, &[user(), 0]).submission.is_some());
    }

    #[test]
    fn batches_are_frozen_into_relocated_shadows() {
        let mut rig = Rig::new();
        let (a, b) = (G0 + 0x1000, G_LOCAL + 0x100);
        // A (RAM): interrupt, call B (local memory), store, end.
        let mut batch_a = vec![user()];
        batch_a.extend(bbs(b, cmd::BBS_SECOND_LEVEL));
        batch_a.extend(sdi(G0));
        batch_a.push(BBE);
        rig.put(a, &batch_a);
        rig.put(b, &[user(), BBE]);
        // The ring runs A twice.
        let mut ring = bbs(a, 0).to_vec();
        ring.extend(bbs(a, 0));
        let submission = rig.submit_at(0, &ring).submission.unwrap();
        // One shadow per distinct batch, packed from SHADOW in scan order
        // (B finishes before A).
        let shadow_b = SHADOW;
        let shadow_a = SHADOW + 8;
        assert_eq!(submission.batches.len(), 2);
        assert_eq!(submission.batches[0], ShadowBatch { guest_address: b, address: shadow_b, dwords: vec![user(), BBE] });
        let mut relocated_a = batch_a.clone();
        relocated_a[2] = lo(shadow_b);
        relocated_a[3] = hi(shadow_b);
        assert_eq!(submission.batches[1], ShadowBatch { guest_address: a, address: shadow_a, dwords: relocated_a });
        let mut relocated_ring = bbs(shadow_a, 0).to_vec();
        relocated_ring.extend(bbs(shadow_a, 0));
        assert_eq!(submission.commands, relocated_ring);
        // A and B each run twice.
        assert_eq!(submission.user_interrupts, 4);
        // The guest rewriting its batch afterwards changes nothing queued.
        rig.put(a, &[mi(cmd::MI_LOAD_REGISTER_IMM, 1), 0x2030, 0]);
        assert_eq!(submission.batches[1].dwords[0], user());
        rig.gpu.complete(None);
        assert_eq!(rig.read(vgpu::SEQNO), 4);
    }

    #[test]
    fn chained_batches_are_relocated_too() {
        let mut rig = Rig::new();
        let (a, b) = (G0 + 0x1000, G0 + 0x1800);
        rig.put(a, &bbs(b, 0));
        rig.put(b, &[user(), BBE]);
        let mut ring = bbs(a, 0).to_vec();
        ring.push(0);
        let submission = rig.submit_at(0, &ring).submission.unwrap();
        let addresses: Vec<(u64, u64)> = submission.batches.iter().map(|s| (s.guest_address, s.address)).collect();
        assert_eq!(addresses, [(a, SHADOW), (b, SHADOW + 16)]);
        assert_eq!(submission.batches[0].dwords, bbs(SHADOW + 16, 0));
        assert_eq!(submission.commands[..3], bbs(SHADOW, 0));
        assert_eq!(submission.user_interrupts, 1);
    }

    #[test]
    fn the_snapshot_reads_each_page_once() {
        struct Changing(u32);
        impl GraphicsMemory for Changing {
            fn read(&mut self, address: u64, buf: &mut [u8]) -> bool {
                self.0 += 1;
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = (self.0 as u8).wrapping_add(i as u8).wrapping_add(address as u8);
                }
                address < 0x3000
            }
        }
        let mut memory = Changing(0);
        let mut snapshot = Snapshot::new(&mut memory);
        let (mut first, mut again) = ([0u32; 3], [0u32; 3]);
        // Across a page boundary: two pages read.
        assert!(snapshot.read(0x1ffc, &mut first));
        assert!(snapshot.read(0x1ffc, &mut again));
        assert_eq!(first, again);
        assert!(!snapshot.read(0x3000, &mut again), "unreadable stays unreadable");
        assert!(!snapshot.read(0x3000, &mut again));
        assert!(!snapshot.read(0x1002, &mut again), "unaligned");
        drop(snapshot);
        assert_eq!(memory.0, 3);
    }

    #[test]
    fn gtt_memory_resolves_only_through_the_partitions_entries() {
        let mut rig = Rig::new();
        rig.put(G0 + 0xffc, &[0x1111_1111, 0x2222_2222]);
        rig.put(G_LOCAL, &[0x3333_3333]);
        let mut memory = GttMemory::new(rig.gpu.gtt(), &mut rig.mem);
        let mut buf = [0u8; 8];
        assert!(memory.read(G0 + 0xffc, &mut buf), "across two RAM pages");
        assert_eq!(buf, [0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x22, 0x22]);
        let mut buf = [0u8; 4];
        assert!(memory.read(G_LOCAL, &mut buf));
        assert_eq!(u32::from_le_bytes(buf), 0x3333_3333);
        assert!(!memory.read(G0 - 4, &mut buf), "below its range");
        assert!(!memory.read(G_END, &mut buf), "above");
        assert!(!memory.read(G0 + 45 * 4096, &mut buf), "not mapped");
        assert!(!memory.read(u64::MAX - 1, &mut buf), "overflow");
    }

    #[test]
    fn reset_returns_to_power_on() {
        let mut rig = Rig::new();
        rig.write(vgpu::INT_ENABLE, 4, u64::from(INT_ALL));
        rig.submit_at(0, &[user(), 0]).submission.unwrap();
        rig.submit_at(8, &[BBE, 0]).rejection.unwrap();
        assert!(rig.pins.pinned() > 0);
        rig.gpu.reset(&mut Env { space: &rig.space, pins: &mut rig.pins, memory: &mut rig.tables });
        assert_eq!(rig.pins.pinned(), 0);
        assert_eq!(rig.gpu.outstanding(), 0);
        for offset in [vgpu::INT_STATUS, vgpu::INT_ENABLE, vgpu::RING_HEAD, vgpu::RING_TAIL, vgpu::RING_CTL, vgpu::INFO_REJECTED, vgpu::INFO_SUBMITTED] {
            assert_eq!(rig.read(offset), 0, "{offset:#x}");
        }
        assert_eq!(rig.gpu.read(vgpu::GTT_OFFSET, 8), 0);
        assert_eq!(rig.read(vgpu::INFO_INTERRUPT), INTERRUPT, "configuration stays");
        assert!(!rig.gpu.complete(None));
    }

    #[test]
    fn a_context_load_gets_the_shadow_root_and_keeps_the_context_while_in_flight() {
        use bulkhead_abi::gpu::encode::{load_pdp0, mi_batch_buffer_start};
        use bulkhead_abi::gpu::ppgtt;
        let mut rig = Rig::new();
        // A PML4 in its RAM with one PDP entry pointing at another page.
        let (pml4, pdp) = (RAM_GPA + 0x8_0000, RAM_GPA + 0x8_1000);
        rig.tables.guest.insert(RAM_HPA + 0x8_0000, pdp | ppgtt::PRESENT);
        let mut ring = Vec::from(load_pdp0(pml4));
        ring.extend(mi_batch_buffer_start(0x10_0000, true));
        ring.push(user());
        ring.push(0);
        let effect = rig.submit_at(0, &ring);
        let submission = effect.submission.expect("accepted");
        assert_eq!(submission.contexts, [Gpa::new(pml4)]);
        let root = (u64::from(submission.commands[2]) << 32) | u64::from(submission.commands[4]);
        assert!(root >= POOL, "PDP0 holds the shadow PML4, {root:#x}, not the guest's");
        assert_eq!(submission.commands[5..], ring[5..], "the batch start is left alone");
        assert_eq!(submission.user_interrupts, 1);
        assert_eq!(rig.tables.tracked, alloc::collections::BTreeSet::from([pml4, pdp]));
        assert_eq!(rig.read(vgpu::INFO_PT_TRACKED), 2);
        // A trapped write to the PDP page counts and changes the shadow.
        let mut env = Env { space: &rig.space, pins: &mut rig.pins, memory: &mut rig.tables };
        assert!(rig.gpu.tracked_write(&mut env, [(Gpa::new(pdp), 8)]));
        assert!(!rig.gpu.tracked_write(&mut env, [(Gpa::new(RAM_GPA), 8)]));
        assert_eq!(rig.read(vgpu::INFO_PT_TRAPS), 1);
        // Released while in flight: the tables stay protected until it completes.
        rig.write(vgpu::CONTEXT_RELEASE_LO, 4, pml4 & 0xffff_ffff);
        rig.write(vgpu::CONTEXT_RELEASE_HI, 4, pml4 >> 32);
        assert_eq!(rig.tables.tracked.len(), 2);
        rig.gpu.complete(None);
        rig.write(vgpu::INT_ENABLE, 4, 0);
        assert!(rig.tables.tracked.is_empty());
        assert_eq!(rig.read(vgpu::INFO_PT_TRACKED), 0);
    }

    #[test]
    fn a_context_outside_its_ram_or_no_context_is_rejected_before_anything_runs() {
        use bulkhead_abi::gpu::encode::{load_pdp0, mi_batch_buffer_start};
        let mut rig = Rig::new();
        let mut ring = Vec::from(load_pdp0(0x7b00_0000));
        ring.extend(mi_batch_buffer_start(0x10_0000, true));
        ring.extend([user(), 0]);
        let effect = rig.submit_at(0, &ring);
        assert!(effect.submission.is_none());
        assert_eq!(effect.rejection.map(|r| (r.code, r.offset)), Some((vgpu::REJECT_CONTEXT, 0)));
        assert!(rig.tables.tracked.is_empty());
        let mut ring = Vec::from(mi_batch_buffer_start(0x10_0000, true));
        ring.push(0);
        let effect = rig.submit_at(40, &ring);
        assert_eq!(effect.rejection.map(|r| (r.code, r.offset)), Some((vgpu::REJECT_CONTEXT, 40)));
        assert_eq!(rig.read(vgpu::INFO_SUBMIT_ERROR), vgpu::REJECT_CONTEXT);
    }
}
