//! Arm SMMUv3 (IHI 0070), as the hypervisor drives it: a linear stream
//! table, one command queue, one event queue, global errors. Stage 1 is
//! never used; a stream either aborts or translates through stage 2.
//!
//! The pure parts (feature decoding, STE and command encodings, event
//! decoding, queue index arithmetic) are host-tested; the register
//! sequences follow §3.21 ("Initialization") and §4.7 (CMD_SYNC
//! completion), with every poll bounded.
//!
//! Memory the SMMU reads and writes (stream table, queues) is handed over
//! as [`DmaRegion`]s; the SMMU must be coherent (`SMMU_IDR0.COHACC`), so
//! ordering it needs only barriers, no cache maintenance.

pub mod command;
pub mod event;
pub mod queue;
mod registers;
pub mod ste;

use core::fmt;
use core::ptr::NonNull;
use command::Command;
use event::{EVENT_WORDS, Event};
use queue::QueueIndex;
use registers::{
    CMDQ_CONS, CR0, CR1, CR2, EVENTQ_CONS, EVENTQ_PROD, GBPA, GERROR_NAMES, IDR0, IDR1, IDR5, IRQ_CTRL, PAGE1_OFFSET,
    QUEUE_BASE, STRTAB_BASE, STRTAB_BASE_CFG, SmmuPage0, SmmuPage1,
};
use ste::{STE_WORDS, StreamTableEntry};
pub use registers::MMIO_SIZE;
use tock_registers::LocalRegisterCopy;
use tock_registers::interfaces::{Readable, Writeable};

/// Register polls (CR0ACK, GBPA.Update, CMD_SYNC) before giving up.
const POLL_LIMIT: u32 = 1_000_000;
/// `SMMU_IDR0.TTF` values that include the AArch64 table format.
const TTF_AARCH64: [u32; 2] = [0b10, 0b11];
/// 64-bit words per command.
const COMMAND_WORDS: usize = 2;

/// What the SMMU offers, from its ID registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// Raw `SMMU_IDR0`, for the log.
    pub idr0: u32,
    /// Stage-1 translation.
    pub stage1: bool,
    /// Stage-2 translation.
    pub stage2: bool,
    /// AArch64 translation tables.
    pub aarch64_tables: bool,
    /// Coherent table and queue accesses.
    pub coherent: bool,
    /// Hardware sets the Access flag (HTTU).
    pub hardware_access_flag: bool,
    /// 16-bit VMIDs (else 8).
    pub vmid16: bool,
    /// MSIs (else wired interrupts only).
    pub msi: bool,
    /// StreamID bits.
    pub sid_bits: u32,
    /// log2 of the largest command queue.
    pub cmdq_log2max: u32,
    /// log2 of the largest event queue.
    pub eventq_log2max: u32,
    /// Queue and table base registers are fixed by the implementation.
    pub preset: bool,
    /// `SMMU_IDR5.OAS` (PARange encoding).
    pub oas_field: u64,
    /// 4 KiB granule.
    pub granule_4k: bool,
}

impl Features {
    /// Decodes `SMMU_IDR0`, `SMMU_IDR1` and `SMMU_IDR5`.
    pub fn decode(idr0: u32, idr1: u32, idr5: u32) -> Features {
        let id0 = LocalRegisterCopy::<u32, IDR0::Register>::new(idr0);
        let id1 = LocalRegisterCopy::<u32, IDR1::Register>::new(idr1);
        let id5 = LocalRegisterCopy::<u32, IDR5::Register>::new(idr5);
        Features {
            idr0,
            stage1: id0.is_set(IDR0::S1P),
            stage2: id0.is_set(IDR0::S2P),
            aarch64_tables: TTF_AARCH64.contains(&id0.read(IDR0::TTF)),
            coherent: id0.is_set(IDR0::COHACC),
            hardware_access_flag: id0.read(IDR0::HTTU) != 0,
            vmid16: id0.is_set(IDR0::VMID16),
            msi: id0.is_set(IDR0::MSI),
            sid_bits: id1.read(IDR1::SIDSIZE),
            cmdq_log2max: id1.read(IDR1::CMDQS),
            eventq_log2max: id1.read(IDR1::EVENTQS),
            preset: id1.is_set(IDR1::QUEUES_PRESET) || id1.is_set(IDR1::TABLES_PRESET),
            oas_field: u64::from(id5.read(IDR5::OAS)),
            granule_4k: id5.is_set(IDR5::GRAN4K),
        }
    }

    /// Whether the driver can use this SMMU: stage 2 over AArch64 4 KiB
    /// tables, coherent, with programmable bases.
    ///
    /// # Errors
    /// [`SmmuError::Unsupported`] naming the first missing feature.
    pub fn check(&self) -> Result<(), SmmuError> {
        let missing = [
            (self.stage2, "stage-2 translation"),
            (self.aarch64_tables, "AArch64 translation tables"),
            (self.granule_4k, "the 4 KiB granule"),
            (self.coherent, "coherent table and queue accesses"),
            (!self.preset, "programmable table and queue bases"),
        ];
        match missing.iter().find(|(present, _)| !present) {
            Some((_, what)) => Err(SmmuError::Unsupported(what)),
            None => Ok(()),
        }
    }

    /// Output address bits (`OAS`).
    pub fn oas_bits(&self) -> u32 {
        match self.oas_field {
            0 => 32,
            1 => 36,
            2 => 40,
            3 => 42,
            4 => 44,
            5 => 48,
            _ => 52,
        }
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IDR0 {:#010x} (", self.idr0)?;
        let flags = [
            (self.stage1, "stage 1"),
            (self.stage2, "stage 2"),
            (self.aarch64_tables, "AArch64 tables"),
            (self.coherent, "coherent"),
            (self.vmid16, "16-bit VMID"),
            (self.msi, "MSI"),
        ];
        let mut first = true;
        for (_, name) in flags.iter().filter(|(present, _)| *present) {
            if !first {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
            first = false;
        }
        let access_flag = if self.hardware_access_flag { "hardware sets AF" } else { "no hardware AF update" };
        write!(f, ", {access_flag}), {} StreamID bits, {}-bit output", self.sid_bits, self.oas_bits())
    }
}

/// Why an SMMU operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmmuError {
    /// A feature the driver needs is missing.
    Unsupported(&'static str),
    /// A register did not acknowledge a change in time.
    Timeout(&'static str),
    /// The command queue stopped on an error: `SMMU_CMDQ_CONS.ERR`, and
    /// the opcode of the command it stopped at.
    Command {
        /// The error code.
        error: u32,
        /// Opcode of the command at `CONS`.
        opcode: u8,
    },
    /// A StreamID beyond the stream table.
    StreamIdOutOfRange(u32),
    /// A region too small for what it must hold, or misaligned.
    Memory(&'static str),
}

impl fmt::Display for SmmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmmuError::Unsupported(what) => write!(f, "unsupported SMMU: no {what}"),
            SmmuError::Timeout(what) => write!(f, "timed out waiting for {what}"),
            SmmuError::Command { error, opcode } => write!(
                f,
                "command queue error {} at {}",
                command::command_error_name(*error),
                command::opcode_name(*opcode)
            ),
            SmmuError::StreamIdOutOfRange(sid) => write!(f, "StreamID {sid:#x} is beyond the stream table"),
            SmmuError::Memory(what) => write!(f, "bad memory for the {what}"),
        }
    }
}

/// Active global errors: the bits where `SMMU_GERROR` differs from
/// `SMMU_GERRORN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalErrors(pub u32);

impl GlobalErrors {
    /// No error is active.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for GlobalErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut named = 0;
        for (bit, name) in GERROR_NAMES {
            if self.0 & (1 << bit) != 0 {
                if !first {
                    f.write_str(" ")?;
                }
                f.write_str(name)?;
                first = false;
                named |= 1 << bit;
            }
        }
        if self.0 & !named != 0 {
            if !first {
                f.write_str(" ")?;
            }
            write!(f, "unknown bits {:#x}", self.0 & !named)?;
        }
        Ok(())
    }
}

/// Memory handed to the SMMU: physically contiguous, identity-mapped,
/// zeroed, aligned to its size, used by nothing else. Accessed with
/// volatile 64-bit loads and stores only.
pub struct DmaRegion {
    base: NonNull<u64>,
    words: usize,
}

// SAFETY: the region is owned by the one driver that holds it; the SMMU
// accesses it concurrently by design, which volatile accesses allow for.
unsafe impl Send for DmaRegion {}

impl DmaRegion {
    /// The region at physical (= virtual) address `base`, `size` bytes.
    ///
    /// # Safety
    /// `[base, base + size)` must be RAM, identity-mapped as Normal
    /// write-back memory, zeroed, and given to this region alone for the
    /// rest of the program. `base` must be non-zero and 8-byte aligned.
    pub unsafe fn new(base: u64, size: usize) -> DmaRegion {
        DmaRegion { base: NonNull::new(base as *mut u64).unwrap_or(NonNull::dangling()), words: size / 8 }
    }

    /// Physical address.
    pub fn address(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.words * 8
    }

    pub(crate) fn write(&mut self, word: usize, value: u64) {
        assert!(word < self.words, "DMA region word {word} out of {}", self.words);
        // SAFETY: in bounds (checked above) of memory the region owns.
        unsafe { self.base.as_ptr().add(word).write_volatile(value.to_le()) };
    }

    pub(crate) fn read(&self, word: usize) -> u64 {
        assert!(word < self.words, "DMA region word {word} out of {}", self.words);
        // SAFETY: in bounds (checked above) of memory the region owns.
        u64::from_le(unsafe { self.base.as_ptr().add(word).read_volatile() })
    }
}

/// Orders the driver's stores to tables and queues before the register
/// write that hands them to the SMMU (`DSB ST`; a coherent SMMU observes
/// the memory in the outer-shareable domain).
fn publish() {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    // SAFETY: a barrier only orders memory accesses.
    unsafe {
        core::arch::asm!("dsb st", options(nostack, preserves_flags));
    }
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

/// Orders loads of queue entries after the load of the index that
/// announced them.
fn consume() {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    // SAFETY: a barrier only orders memory accesses.
    unsafe {
        core::arch::asm!("dsb ld", options(nostack, preserves_flags));
    }
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

/// The SMMU's registers, before initialization.
pub struct SmmuRegisters {
    page0: &'static SmmuPage0,
    page1: &'static SmmuPage1,
}

// SAFETY: MMIO registers; the one driver that holds them serializes its
// own accesses.
unsafe impl Send for SmmuRegisters {}

impl SmmuRegisters {
    /// The SMMU whose register page 0 is at `base`.
    ///
    /// # Safety
    /// `[base, base + registers::MMIO_SIZE)` must map an SMMUv3's two
    /// register pages as Device memory for the rest of the program, driven
    /// by nothing else.
    pub unsafe fn new(base: usize) -> SmmuRegisters {
        // SAFETY: the caller vouches for the mapping of both pages.
        unsafe {
            SmmuRegisters {
                page0: &*(base as *const SmmuPage0),
                page1: &*((base + PAGE1_OFFSET) as *const SmmuPage1),
            }
        }
    }

    /// Reads the ID registers.
    pub fn features(&self) -> Features {
        Features::decode(self.page0.idr0.get(), self.page0.idr1.get(), self.page0.idr5.get())
    }
}

/// Memory and sizes for [`Smmu::init`].
pub struct SmmuMemory {
    /// `2^stream_table_log2size` STEs, 64 bytes each.
    pub stream_table: DmaRegion,
    /// log2 of the number of STEs.
    pub stream_table_log2size: u32,
    /// `2^command_queue_log2size` commands, 16 bytes each.
    pub command_queue: DmaRegion,
    /// log2 of the number of command slots.
    pub command_queue_log2size: u32,
    /// `2^event_queue_log2size` records, 32 bytes each.
    pub event_queue: DmaRegion,
    /// log2 of the number of event slots.
    pub event_queue_log2size: u32,
}

/// An initialized, enabled SMMU.
pub struct Smmu {
    registers: SmmuRegisters,
    features: Features,
    memory: SmmuMemory,
    cmdq_prod: QueueIndex,
    eventq_cons: QueueIndex,
    /// Overflow flag last acknowledged.
    eventq_overflow_ack: bool,
}

impl Smmu {
    /// Brings the SMMU up (§3.21): translation off and GBPA abort while
    /// configuring, every STE written as `abort`, queues programmed, the
    /// configuration and TLB caches invalidated, interrupts enabled as
    /// asked (`interrupts`: event queue and global errors on their wired
    /// lines), then translation on.
    ///
    /// # Errors
    /// An unsupported SMMU, memory too small for the sizes given, or a
    /// register that did not acknowledge in time.
    pub fn init(registers: SmmuRegisters, memory: SmmuMemory, interrupts: bool) -> Result<Smmu, SmmuError> {
        let features = registers.features();
        features.check()?;
        let checks = [
            (memory.stream_table.size() >> ste::STE_SIZE.trailing_zeros(), memory.stream_table_log2size, features.sid_bits, "stream table"),
            (memory.command_queue.size() / (COMMAND_WORDS * 8), memory.command_queue_log2size, features.cmdq_log2max, "command queue"),
            (memory.event_queue.size() / event::EVENT_SIZE, memory.event_queue_log2size, features.eventq_log2max, "event queue"),
        ];
        for (entries, log2size, max, what) in checks {
            if log2size > max || entries < (1usize << log2size) {
                return Err(SmmuError::Memory(what));
            }
        }
        let mut smmu = Smmu {
            cmdq_prod: QueueIndex::new(memory.command_queue_log2size),
            eventq_cons: QueueIndex::new(memory.event_queue_log2size),
            eventq_overflow_ack: false,
            registers,
            features,
            memory,
        };
        smmu.bring_up(interrupts)?;
        Ok(smmu)
    }

    fn bring_up(&mut self, interrupts: bool) -> Result<(), SmmuError> {
        let page0 = self.registers.page0;
        // Off, with everything that arrives meanwhile aborted.
        self.write_cr0(0)?;
        page0.gbpa.write(GBPA::ABORT::SET + GBPA::UPDATE::SET);
        poll(|| !page0.gbpa.is_set(GBPA::UPDATE), "SMMU_GBPA.Update")?;
        page0.irq_ctrl.set(0);
        poll(|| page0.irq_ctrlack.get() == 0, "SMMU_IRQ_CTRLACK")?;

        page0.cr1.write(
            CR1::QUEUE_IC::WriteBack
                + CR1::QUEUE_OC::WriteBack
                + CR1::QUEUE_SH::InnerShareable
                + CR1::TABLE_IC::WriteBack
                + CR1::TABLE_OC::WriteBack
                + CR1::TABLE_SH::InnerShareable,
        );
        page0.cr2.write(CR2::RECINVSID::SET + CR2::PTM::SET);

        let abort = StreamTableEntry::abort();
        for sid in 0..(1u32 << self.memory.stream_table_log2size) {
            self.store_ste(sid, &abort);
        }
        publish();
        page0.strtab_base.write(STRTAB_BASE::RA::SET + STRTAB_BASE::ADDR.val(self.memory.stream_table.address() >> 6));
        page0.strtab_base_cfg.write(
            STRTAB_BASE_CFG::FMT::Linear + STRTAB_BASE_CFG::LOG2SIZE.val(self.memory.stream_table_log2size),
        );
        page0.cmdq_base.write(
            QUEUE_BASE::ALLOCATE::SET
                + QUEUE_BASE::ADDR.val(self.memory.command_queue.address() >> 5)
                + QUEUE_BASE::LOG2SIZE.val(u64::from(self.memory.command_queue_log2size)),
        );
        page0.cmdq_prod.set(0);
        page0.cmdq_cons.set(0);
        page0.eventq_base.write(
            QUEUE_BASE::ALLOCATE::SET
                + QUEUE_BASE::ADDR.val(self.memory.event_queue.address() >> 5)
                + QUEUE_BASE::LOG2SIZE.val(u64::from(self.memory.event_queue_log2size)),
        );
        self.registers.page1.eventq_prod.set(0);
        self.registers.page1.eventq_cons.set(0);

        let cmdq = CR0::CMDQEN::SET.value;
        self.write_cr0(cmdq)?;
        self.submit(&[Command::cfgi_all(), Command::tlbi_nsnh_all()])?;
        let queues = cmdq | CR0::EVENTQEN::SET.value;
        self.write_cr0(queues)?;
        if interrupts {
            let irqs = IRQ_CTRL::GERROR_IRQEN::SET + IRQ_CTRL::EVENTQ_IRQEN::SET;
            page0.irq_ctrl.write(irqs);
            poll(|| page0.irq_ctrlack.get() == irqs.value, "SMMU_IRQ_CTRLACK")?;
        }
        self.write_cr0(queues | CR0::SMMUEN::SET.value)
    }

    fn write_cr0(&self, value: u32) -> Result<(), SmmuError> {
        let page0 = self.registers.page0;
        page0.cr0.set(value);
        poll(|| page0.cr0ack.get() == value, "SMMU_CR0ACK")
    }

    /// The SMMU's features.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// Entries in the stream table.
    pub fn stream_table_entries(&self) -> u32 {
        1 << self.memory.stream_table_log2size
    }

    /// Entries in the command queue.
    pub fn command_queue_entries(&self) -> u32 {
        1 << self.memory.command_queue_log2size
    }

    /// Entries in the event queue.
    pub fn event_queue_entries(&self) -> u32 {
        1 << self.memory.event_queue_log2size
    }

    fn store_ste(&mut self, sid: u32, ste: &StreamTableEntry) {
        // Word 0 (V and Config) last: the SMMU may fetch the STE at any
        // time (§3.21.3); the other words are harmless while Config is
        // still the old one.
        let first = sid as usize * STE_WORDS;
        for (i, &word) in ste.0.iter().enumerate().skip(1) {
            self.memory.stream_table.write(first + i, word);
        }
        publish();
        self.memory.stream_table.write(first, ste.0[0]);
    }

    /// Replaces the STE of `sid` and makes the SMMU use it: first the
    /// stream is made to abort and that is invalidated and synced, then the
    /// new entry is written and invalidated and synced again, so no
    /// transaction ever sees a half-written entry.
    ///
    /// # Errors
    /// An out-of-range StreamID, or a command-queue error or timeout.
    pub fn set_ste(&mut self, sid: u32, ste: StreamTableEntry) -> Result<(), SmmuError> {
        if sid >= self.stream_table_entries() {
            return Err(SmmuError::StreamIdOutOfRange(sid));
        }
        self.store_ste(sid, &StreamTableEntry::abort());
        publish();
        self.submit(&[Command::cfgi_ste(sid)])?;
        self.store_ste(sid, &ste);
        publish();
        self.submit(&[Command::cfgi_ste(sid)])
    }

    /// Queues `commands` and a `CMD_SYNC`, and waits until the SMMU has
    /// consumed the `CMD_SYNC` (so every command before it completed).
    ///
    /// # Errors
    /// [`SmmuError::Command`] if the SMMU stopped on an error (the error is
    /// acknowledged and the queue skips the bad command), or a timeout.
    pub fn submit(&mut self, commands: &[Command]) -> Result<(), SmmuError> {
        let page0 = self.registers.page0;
        let log2 = self.memory.command_queue_log2size;
        let mut sync_at = self.cmdq_prod;
        for command in commands.iter().chain(core::iter::once(&Command::sync())) {
            poll(
                || !QueueIndex::is_full(self.cmdq_prod, QueueIndex::from_register(log2, page0.cmdq_cons.get())),
                "command queue space",
            )?;
            let first = self.cmdq_prod.slot() * COMMAND_WORDS;
            self.memory.command_queue.write(first, command.0[0]);
            self.memory.command_queue.write(first + 1, command.0[1]);
            sync_at = self.cmdq_prod;
            self.cmdq_prod = self.cmdq_prod.next();
        }
        publish();
        page0.cmdq_prod.set(self.cmdq_prod.register());
        let mut result = Err(SmmuError::Timeout("CMD_SYNC"));
        for _ in 0..POLL_LIMIT {
            let cons = page0.cmdq_cons.extract();
            let error = cons.read(CMDQ_CONS::ERR);
            let index = QueueIndex::from_register(log2, cons.read(CMDQ_CONS::RD));
            if error != 0 || self.command_error_pending() {
                let word = index.slot() * COMMAND_WORDS;
                let opcode = (self.memory.command_queue.read(word) & 0xff) as u8;
                self.recover_command_error(index);
                return Err(SmmuError::Command { error, opcode });
            }
            if QueueIndex::consumed(index, sync_at) {
                result = Ok(());
                break;
            }
            core::hint::spin_loop();
        }
        result
    }

    fn command_error_pending(&self) -> bool {
        let page0 = self.registers.page0;
        (page0.gerror.get() ^ page0.gerrorn.get()) & (1 << GERROR_NAMES[0].0) != 0
    }

    /// After `CMDQ_ERR` (§7.1): the SMMU stopped at `at`. The bad command
    /// is overwritten with a `CMD_SYNC` (harmless) and the error is
    /// acknowledged, so the queue resumes.
    fn recover_command_error(&mut self, at: QueueIndex) {
        let page0 = self.registers.page0;
        let word = at.slot() * COMMAND_WORDS;
        let sync = Command::sync();
        self.memory.command_queue.write(word, sync.0[0]);
        self.memory.command_queue.write(word + 1, sync.0[1]);
        publish();
        let cmdq_err = 1 << GERROR_NAMES[0].0;
        page0.gerrorn.set(page0.gerrorn.get() ^ ((page0.gerror.get() ^ page0.gerrorn.get()) & cmdq_err));
    }

    /// The next event record, if the SMMU wrote one, consumed from the queue.
    /// Returns `(event, overflowed)`: `overflowed` is true once after the
    /// SMMU reported that records were lost (acknowledged here).
    pub fn next_event(&mut self) -> Option<(Event, bool)> {
        let page1 = self.registers.page1;
        let log2 = self.memory.event_queue_log2size;
        let prod_register = page1.eventq_prod.extract();
        let prod = QueueIndex::from_register(log2, prod_register.read(EVENTQ_PROD::WR));
        let overflow = prod_register.is_set(EVENTQ_PROD::OVFLG);
        let overflowed = overflow != self.eventq_overflow_ack;
        if QueueIndex::is_empty(prod, self.eventq_cons) {
            if overflowed {
                self.eventq_overflow_ack = overflow;
                self.write_eventq_cons();
            }
            return None;
        }
        consume();
        let first = self.eventq_cons.slot() * EVENT_WORDS;
        let mut words = [0; EVENT_WORDS];
        for (i, word) in words.iter_mut().enumerate() {
            *word = self.memory.event_queue.read(first + i);
        }
        self.eventq_cons = self.eventq_cons.next();
        self.eventq_overflow_ack = overflow;
        self.write_eventq_cons();
        Some((Event::decode(words), overflowed))
    }

    fn write_eventq_cons(&self) {
        let ack = if self.eventq_overflow_ack { EVENTQ_CONS::OVACKFLG::SET } else { EVENTQ_CONS::OVACKFLG::CLEAR };
        self.registers.page1.eventq_cons.write(EVENTQ_CONS::RD.val(self.eventq_cons.register()) + ack);
    }

    /// The active global errors, acknowledged (each is reported once).
    pub fn take_global_errors(&mut self) -> GlobalErrors {
        let page0 = self.registers.page0;
        let gerror = page0.gerror.get();
        let active = gerror ^ page0.gerrorn.get();
        if active != 0 {
            page0.gerrorn.set(gerror);
        }
        GlobalErrors(active)
    }
}

/// Polls `done` up to [`POLL_LIMIT`] times.
fn poll(mut done: impl FnMut() -> bool, what: &'static str) -> Result<(), SmmuError> {
    for _ in 0..POLL_LIMIT {
        if done() {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(SmmuError::Timeout(what))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    /// QEMU 10.0 `virt`'s SMMU (DESIGN.md §6) with IDR1 and IDR5 as QEMU
    /// sets them: 16 StreamID bits, queues up to 2^19, OAS 44 bits, 4 KiB.
    const QEMU_IDR0: u32 = 0x0d44_101b;
    const QEMU_IDR1: u32 = (19 << 21) | (19 << 16) | 16;
    const QEMU_IDR5: u32 = (1 << 4) | 0b100;

    #[test]
    fn decodes_qemus_smmu() {
        let f = Features::decode(QEMU_IDR0, QEMU_IDR1, QEMU_IDR5);
        assert!(f.stage1 && f.stage2 && f.aarch64_tables && f.coherent && f.vmid16);
        assert!(!f.hardware_access_flag, "QEMU's SMMU does not set the Access flag");
        assert!(!f.msi);
        assert_eq!((f.sid_bits, f.cmdq_log2max, f.eventq_log2max, f.oas_bits()), (16, 19, 19, 44));
        assert_eq!(f.check(), Ok(()));
        assert_eq!(
            f.to_string(),
            "IDR0 0x0d44101b (stage 1, stage 2, AArch64 tables, coherent, 16-bit VMID, no hardware AF update), \
             16 StreamID bits, 44-bit output"
        );
    }

    #[test]
    fn refuses_an_smmu_without_stage2() {
        let f = Features::decode(QEMU_IDR0 & !1, QEMU_IDR1, QEMU_IDR5);
        assert_eq!(f.check(), Err(SmmuError::Unsupported("stage-2 translation")));
        let f = Features::decode(QEMU_IDR0, QEMU_IDR1 | (1 << 29), QEMU_IDR5);
        assert_eq!(f.check(), Err(SmmuError::Unsupported("programmable table and queue bases")));
    }

    #[test]
    fn global_errors_are_named() {
        assert_eq!(GlobalErrors(0b1_0000_0001).to_string(), "CMDQ_ERR SFM_ERR");
        assert_eq!(GlobalErrors(1 << 12).to_string(), "unknown bits 0x1000");
        assert!(GlobalErrors(0).is_empty());
        assert_eq!(
            SmmuError::Command { error: 1, opcode: 0x46 }.to_string(),
            "command queue error CERROR_ILL (illegal command) at CMD_SYNC"
        );
    }
}
