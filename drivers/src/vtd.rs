//! Intel VT-d DMA remapping units, as the hypervisor drives them (legacy
//! mode: root table → context tables → second-level tables).
//!
//! References are to the Intel VT-d specification rev. 4.1: chapter 11
//! registers (Table 11-3 "Address Mapping for Remapping Hardware
//! Registers"), §6.5 invalidation, §7.1 fault recording, §10.4.4 the GCMD
//! rule. The pure encodings live in [`encode`] and [`fault`] and are host
//! tested; this module holds the register block and the operations on a
//! live unit. Every poll is bounded and ends in [`VtdError`], never a hang.
//!
//! The unit's own memory (root and context tables, second-level tables, the
//! invalidation queue) belongs to the caller, which also knows how to flush
//! CPU caches: a unit without page-walk coherency (ECAP.C = 0) reads memory,
//! not the CPU's caches, so every table or queue write must be flushed
//! before the unit is told about it. The driver calls the caller's flush
//! function for what it writes itself (queue descriptors, the wait status).

pub mod encode;
pub mod fault;

pub use encode::{AddressWidth, Capabilities, GlobalCommand, Granularity, Quad};
pub use fault::FaultRecord;

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

register_bitfields! [u32,
    /// `VER_REG` (§11.4.1).
    VER [
        /// Major version.
        MAX OFFSET(4) NUMBITS(4) [],
        /// Minor version.
        MIN OFFSET(0) NUMBITS(4) []
    ],
    /// `FSTS_REG` (§11.4.9).
    FSTS [
        /// Index of the first pending fault record (valid with PPF).
        FRI OFFSET(8) NUMBITS(8) [],
        /// Invalidation time-out error (RW1C).
        ITE OFFSET(6) NUMBITS(1) [],
        /// Invalidation completion error (RW1C).
        ICE OFFSET(5) NUMBITS(1) [],
        /// Invalidation queue error (RW1C): a bad descriptor at IQH.
        IQE OFFSET(4) NUMBITS(1) [],
        /// Primary pending fault: some fault record has F set (read-only).
        PPF OFFSET(1) NUMBITS(1) [],
        /// Primary fault overflow: a fault was lost (RW1C).
        PFO OFFSET(0) NUMBITS(1) []
    ],
    /// `FECTL_REG` (§11.4.10).
    FECTL [
        /// Interrupt mask: no fault-event interrupt is sent.
        IM OFFSET(31) NUMBITS(1) [],
        /// Interrupt pending.
        IP OFFSET(30) NUMBITS(1) []
    ],
    /// `ICS_REG` (§11.4.9.5).
    ICS [
        /// Invalidation wait descriptor complete (RW1C).
        IWC OFFSET(0) NUMBITS(1) []
    ]
];

register_bitfields! [u64,
    /// `RTADDR_REG` (§11.4.6).
    RTADDR [
        /// Root table address, bits 63:12.
        RTA OFFSET(12) NUMBITS(52) [],
        /// Translation table mode: legacy (root/context entries).
        TTM OFFSET(10) NUMBITS(2) [
            Legacy = 0,
            Scalable = 1
        ]
    ],
    /// `CCMD_REG` (§11.4.7).
    CCMD [
        /// Invalidate context cache; hardware clears it when done.
        ICC OFFSET(63) NUMBITS(1) []
    ],
    /// `IOTLB_REG` (§11.4.8.1).
    IOTLB [
        /// Invalidate IOTLB; hardware clears it when done.
        IVT OFFSET(63) NUMBITS(1) []
    ],
    /// `IQA_REG` (§11.4.9.3).
    IQA [
        /// Queue base, bits 63:12.
        IQA OFFSET(12) NUMBITS(52) [],
        /// Descriptor width: 0 = 128-bit descriptors.
        DW OFFSET(11) NUMBITS(1) [],
        /// Queue size: 2^QS pages of descriptors.
        QS OFFSET(0) NUMBITS(3) []
    ],
    /// `IQT_REG` / `IQH_REG` (§11.4.9.1-2).
    IQ_INDEX [
        /// Descriptor index (128-bit descriptors: bits 18:4 hold the index).
        QT OFFSET(4) NUMBITS(15) []
    ]
];

register_structs! {
    /// The fixed part of a remapping unit's register page (Table 11-3).
    pub VtdRegisters {
        (0x000 => ver: ReadOnly<u32, VER::Register>),
        (0x004 => _reserved0),
        (0x008 => cap: ReadOnly<u64>),
        (0x010 => ecap: ReadOnly<u64>),
        (0x018 => gcmd: ReadWrite<u32>),
        (0x01c => gsts: ReadOnly<u32>),
        (0x020 => rtaddr: ReadWrite<u64, RTADDR::Register>),
        (0x028 => ccmd: ReadWrite<u64, CCMD::Register>),
        (0x030 => _reserved1),
        (0x034 => fsts: ReadWrite<u32, FSTS::Register>),
        (0x038 => fectl: ReadWrite<u32, FECTL::Register>),
        (0x03c => fedata: ReadWrite<u32>),
        (0x040 => feaddr: ReadWrite<u32>),
        (0x044 => feuaddr: ReadWrite<u32>),
        (0x048 => _reserved2),
        (0x080 => iqh: ReadOnly<u64, IQ_INDEX::Register>),
        (0x088 => iqt: ReadWrite<u64, IQ_INDEX::Register>),
        (0x090 => iqa: ReadWrite<u64, IQA::Register>),
        (0x098 => _reserved3),
        (0x09c => ics: ReadWrite<u32, ICS::Register>),
        (0x0a0 => _reserved4),
        (0x100 => @END),
    }
}

register_structs! {
    /// The IOTLB registers at ECAP.IRO × 16 (§11.4.8).
    pub IotlbRegisters {
        (0x00 => iva: ReadWrite<u64>),
        (0x08 => iotlb: ReadWrite<u64, IOTLB::Register>),
        (0x10 => @END),
    }
}

register_structs! {
    /// One fault recording register at CAP.FRO × 16 + 16 × index (§11.4.14).
    pub FaultRecordRegisters {
        (0x00 => low: ReadOnly<u64>),
        (0x08 => high: ReadWrite<u64>),
        (0x10 => @END),
    }
}

/// Bytes of a unit's register page.
pub const REGISTER_PAGE_SIZE: u64 = 0x1000;
/// Polls of a status bit before giving up (each is an uncached MMIO read,
/// microseconds under TCG, far less on hardware).
const POLL_LIMIT: u32 = 1_000_000;
/// Descriptors of 128 bits in one 4 KiB queue page (IQA.QS = 0).
pub const QUEUE_ENTRIES: usize = 256;
/// Bytes of one 128-bit descriptor, the IQT/IQH index unit.
const DESCRIPTOR_SIZE: u64 = 16;
const _: () = assert!(size_of::<Quad>() as u64 == DESCRIPTOR_SIZE && QUEUE_ENTRIES as u64 * DESCRIPTOR_SIZE == 4096);

/// A VT-d operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VtdError {
    /// VER_REG reports a version this driver does not know (major 0).
    UnsupportedVersion(u32),
    /// The unit cannot walk 4-level second-level tables (CAP.SAGAW).
    NoFourLevelTables(u8),
    /// A register the capabilities place lies outside the 4 KiB page.
    RegisterOutsidePage(u64),
    /// GSTS did not reflect a command in time.
    CommandTimeout(GlobalCommand),
    /// A register-based invalidation did not complete in time.
    InvalidationTimeout,
    /// The invalidation queue reported an error (FSTS.IQE/ICE/ITE bits).
    QueueError(u32),
    /// The wait descriptor's status write did not arrive in time.
    QueueTimeout,
    /// Queued invalidation was asked of a unit without it (or not enabled).
    NoQueue,
}

/// Flushes `len` bytes at `address` out of the CPU caches to memory (the
/// caller's clflush loop), so a non-coherent unit reads what the CPU wrote.
pub type CacheFlush = fn(address: *const u8, len: usize);

/// A queue of invalidation descriptors (§6.5.2) in one 4 KiB page, plus a
/// 4-byte status word that wait descriptors write.
pub struct InvalidationQueue {
    descriptors: *mut Quad,
    queue_pa: u64,
    status: *mut u32,
    status_pa: u64,
    tail: usize,
    sequence: u32,
}

impl InvalidationQueue {
    /// A queue in the zeroed page at `queue` (host-physical `queue_pa`)
    /// whose waits write the word at `status` (host-physical `status_pa`).
    ///
    /// # Safety
    /// `queue` must be a 4 KiB-aligned page and `status` a 4-byte aligned
    /// word, both valid for writes, used by nothing else for as long as the
    /// unit may read or write them, and reachable by the unit at the given
    /// physical addresses.
    pub unsafe fn new(queue: *mut u8, queue_pa: u64, status: *mut u32, status_pa: u64) -> InvalidationQueue {
        InvalidationQueue { descriptors: queue.cast(), queue_pa, status, status_pa, tail: 0, sequence: 0 }
    }
}

/// Invalidation work a unit has been given so far (for benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InvalidationCounts {
    /// Context-cache and IOTLB invalidations: queued descriptors, or
    /// register-based commands.
    pub invalidations: u64,
    /// Invalidation wait descriptors (one per queued batch).
    pub waits: u64,
}

/// One remapping unit.
pub struct Vtd {
    registers: &'static VtdRegisters,
    iotlb: &'static IotlbRegisters,
    fault_base: usize,
    capabilities: Capabilities,
    flush: CacheFlush,
    queue: Option<InvalidationQueue>,
    counts: InvalidationCounts,
}

// SAFETY: the registers are MMIO and the queue pointers point at memory the
// unit owns exclusively; the hypervisor drives a unit from one CPU at a time
// (it keeps the unit behind a lock).
unsafe impl Send for Vtd {}

impl Vtd {
    /// The unit whose register page is mapped at `base`, probed: its
    /// version checked and its capabilities read.
    ///
    /// # Errors
    /// [`VtdError::UnsupportedVersion`] or [`VtdError::RegisterOutsidePage`]
    /// for a unit this driver cannot drive.
    ///
    /// # Safety
    /// `base` must map the unit's 4 KiB register page uncached for the rest
    /// of the program, and nothing else may drive the unit.
    pub unsafe fn probe(base: usize, flush: CacheFlush) -> Result<Vtd, VtdError> {
        // SAFETY: the caller vouches for the mapping.
        let registers: &'static VtdRegisters = unsafe { &*(base as *const VtdRegisters) };
        let version = registers.ver.get();
        if registers.ver.read(VER::MAX) == 0 {
            return Err(VtdError::UnsupportedVersion(version));
        }
        let capabilities = Capabilities::new(registers.cap.get(), registers.ecap.get());
        let inside = |offset: u64, len: u64| offset.checked_add(len).is_some_and(|end| end <= REGISTER_PAGE_SIZE);
        let iotlb_offset = capabilities.iotlb_offset();
        if !inside(iotlb_offset, size_of::<IotlbRegisters>() as u64) {
            return Err(VtdError::RegisterOutsidePage(iotlb_offset));
        }
        let fault_offset = capabilities.fault_recording_offset();
        let fault_len = u64::from(capabilities.fault_record_count()) * size_of::<FaultRecordRegisters>() as u64;
        if !inside(fault_offset, fault_len) {
            return Err(VtdError::RegisterOutsidePage(fault_offset));
        }
        // SAFETY: checked to lie inside the page the caller vouched for.
        let iotlb: &'static IotlbRegisters = unsafe { &*((base + iotlb_offset as usize) as *const IotlbRegisters) };
        Ok(Vtd {
            registers,
            iotlb,
            fault_base: base + fault_offset as usize,
            capabilities,
            flush,
            queue: None,
            counts: InvalidationCounts::default(),
        })
    }

    /// The unit's capabilities.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// VER_REG as (major, minor).
    pub fn version(&self) -> (u32, u32) {
        (self.registers.ver.read(VER::MAX), self.registers.ver.read(VER::MIN))
    }

    /// GSTS_REG.
    pub fn global_status(&self) -> u32 {
        self.registers.gsts.get()
    }

    /// Whether DMA remapping is on (GSTS.TES).
    pub fn translation_enabled(&self) -> bool {
        self.global_status() & GlobalCommand::TranslationEnable as u32 != 0
    }

    /// Issues one global command, preserving the others (§11.4.4), and
    /// waits until GSTS shows it took effect.
    fn command(&self, command: GlobalCommand, enable: bool) -> Result<(), VtdError> {
        let gsts = self.registers.gsts.get();
        self.registers.gcmd.set(encode::gcmd_value(gsts, command, enable));
        for _ in 0..POLL_LIMIT {
            if (self.registers.gsts.get() & command as u32 != 0) == enable {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(VtdError::CommandTimeout(command))
    }

    /// Points the unit at a legacy-mode root table (§11.4.6) and latches it
    /// (SRTP). The table must already be in memory (flushed for a
    /// non-coherent unit); caches must be invalidated afterwards.
    ///
    /// # Errors
    /// [`VtdError::CommandTimeout`].
    pub fn set_root_table(&self, root_pa: u64) -> Result<(), VtdError> {
        self.registers.rtaddr.write(RTADDR::RTA.val(root_pa >> 12) + RTADDR::TTM::Legacy);
        self.command(GlobalCommand::SetRootTablePointer, true)
    }

    /// Turns DMA remapping on (TE). From then on every DMA request is
    /// translated through the root table, and one without a present context
    /// entry is blocked and recorded as a fault.
    ///
    /// # Errors
    /// [`VtdError::CommandTimeout`].
    pub fn enable_translation(&self) -> Result<(), VtdError> {
        self.command(GlobalCommand::TranslationEnable, true)
    }

    /// Masks the fault-event interrupt: the hypervisor runs with
    /// interrupts masked and polls the fault records instead.
    pub fn mask_fault_interrupt(&self) {
        self.registers.fectl.write(FECTL::IM::SET);
    }

    /// Invalidates the whole context cache and IOTLB through the registers
    /// (CCMD, IOTLB_REG), for units without queued invalidation or before
    /// the queue is on (§6.5.1: register-based invalidation must not be
    /// used while the queue is enabled).
    ///
    /// # Errors
    /// [`VtdError::InvalidationTimeout`]; [`VtdError::NoQueue`] if the
    /// queue is on (then [`invalidate_all`](Self::invalidate_all) is the call).
    pub fn invalidate_all_registers(&mut self) -> Result<(), VtdError> {
        if self.queue.is_some() {
            return Err(VtdError::NoQueue);
        }
        self.counts.invalidations += 2;
        self.registers.ccmd.set(encode::ccmd_value(Granularity::Global, 0));
        self.poll(|| !self.registers.ccmd.is_set(CCMD::ICC))?;
        let draining = self.capabilities.draining();
        self.iotlb.iotlb.set(encode::iotlb_register_value(Granularity::Global, 0, draining));
        self.poll(|| !self.iotlb.iotlb.is_set(IOTLB::IVT))
    }

    fn poll(&self, done: impl Fn() -> bool) -> Result<(), VtdError> {
        for _ in 0..POLL_LIMIT {
            if done() {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(VtdError::InvalidationTimeout)
    }

    /// Turns queued invalidation on with `queue` (§6.5.2): IQT reset, IQA
    /// set to one page of 128-bit descriptors, then QIE.
    ///
    /// # Errors
    /// [`VtdError::NoQueue`] if ECAP.QI is clear, [`VtdError::CommandTimeout`].
    pub fn enable_queued_invalidation(&mut self, queue: InvalidationQueue) -> Result<(), VtdError> {
        if !self.capabilities.queued_invalidation() {
            return Err(VtdError::NoQueue);
        }
        self.registers.iqt.set(0);
        self.registers.iqa.write(IQA::IQA.val(queue.queue_pa >> 12) + IQA::DW::CLEAR + IQA::QS.val(0));
        self.command(GlobalCommand::QueuedInvalidationEnable, true)?;
        self.queue = Some(queue);
        Ok(())
    }

    /// Whether invalidations go through the queue.
    pub fn queued(&self) -> bool {
        self.queue.is_some()
    }

    /// Submits `descriptors` followed by a wait descriptor and waits for
    /// its status write: when this returns Ok, the unit has completed every
    /// invalidation (and, with draining, every DMA translated before).
    ///
    /// # Errors
    /// [`VtdError::NoQueue`], [`VtdError::QueueError`] (FSTS.IQE/ICE/ITE,
    /// cleared after reading), [`VtdError::QueueTimeout`].
    pub fn invalidate_queued(&mut self, descriptors: &[Quad]) -> Result<(), VtdError> {
        let flush = self.flush;
        let queue = self.queue.as_mut().ok_or(VtdError::NoQueue)?;
        self.counts.invalidations += descriptors.len() as u64;
        self.counts.waits += 1;
        queue.sequence = queue.sequence.wrapping_add(1);
        let sequence = queue.sequence;
        // SAFETY: `status` is the queue's own word (`InvalidationQueue::new`).
        unsafe { queue.status.write_volatile(0) };
        flush(queue.status.cast(), size_of::<u32>());
        let wait = encode::invalidation_wait(queue.status_pa, sequence);
        for descriptor in descriptors.iter().chain(core::iter::once(&wait)) {
            // SAFETY: `tail` < QUEUE_ENTRIES, inside the queue's page.
            let slot = unsafe { queue.descriptors.add(queue.tail) };
            // SAFETY: as above; the unit reads only up to IQT, which is not
            // advanced past this slot until it is written and flushed.
            unsafe { slot.write_volatile(*descriptor) };
            flush(slot.cast(), size_of::<Quad>());
            queue.tail = (queue.tail + 1) % QUEUE_ENTRIES;
        }
        self.registers.iqt.write(IQ_INDEX::QT.val(queue.tail as u64));
        let errors = FSTS::IQE::SET.value | FSTS::ICE::SET.value | FSTS::ITE::SET.value;
        for _ in 0..POLL_LIMIT {
            flush(queue.status.cast(), size_of::<u32>());
            // SAFETY: as above; the unit writes it by DMA, hence volatile.
            if unsafe { queue.status.read_volatile() } == sequence {
                return Ok(());
            }
            let fsts = self.registers.fsts.get();
            if fsts & errors != 0 {
                self.registers.fsts.set(fsts & errors);
                return Err(VtdError::QueueError(fsts));
            }
            core::hint::spin_loop();
        }
        Err(VtdError::QueueTimeout)
    }

    /// Invalidates the whole context cache and IOTLB, queued if the queue
    /// is on, else through the registers.
    ///
    /// # Errors
    /// As [`invalidate_queued`](Self::invalidate_queued) or
    /// [`invalidate_all_registers`](Self::invalidate_all_registers).
    pub fn invalidate_all(&mut self) -> Result<(), VtdError> {
        if self.queue.is_some() {
            let draining = self.capabilities.draining();
            self.invalidate_queued(&[
                encode::context_cache_invalidation(Granularity::Global, 0),
                encode::iotlb_invalidation(Granularity::Global, 0, draining),
            ])
        } else {
            self.invalidate_all_registers()
        }
    }

    /// Invalidates what the unit caches for `domain` (context cache and
    /// IOTLB, domain-selective), queued if the queue is on.
    ///
    /// # Errors
    /// As [`invalidate_queued`](Self::invalidate_queued).
    pub fn invalidate_domain(&mut self, domain: u16) -> Result<(), VtdError> {
        let draining = self.capabilities.draining();
        if self.queue.is_some() {
            self.invalidate_queued(&[
                encode::context_cache_invalidation(Granularity::Domain, domain),
                encode::iotlb_invalidation(Granularity::Domain, domain, draining),
            ])
        } else {
            self.counts.invalidations += 2;
            self.registers.ccmd.set(encode::ccmd_value(Granularity::Domain, domain));
            self.poll(|| !self.registers.ccmd.is_set(CCMD::ICC))?;
            self.iotlb.iotlb.set(encode::iotlb_register_value(Granularity::Domain, domain, draining));
            self.poll(|| !self.iotlb.iotlb.is_set(IOTLB::IVT))
        }
    }

    /// Invalidates the IOTLB entries of `domain` for the `2^address_mask`
    /// 4 KiB pages at `address` (page-selective within the domain, §6.5.2.3),
    /// queued if the queue is on, else through IVA_REG / IOTLB_REG. Falls back
    /// to the whole domain's IOTLB when the unit has no page-selective
    /// invalidation (CAP.PSI) or the mask exceeds CAP.MAMV. The context
    /// cache is not touched: no context entry changed.
    ///
    /// # Errors
    /// As [`invalidate_queued`](Self::invalidate_queued), or
    /// [`VtdError::InvalidationTimeout`].
    pub fn invalidate_pages(&mut self, domain: u16, address: u64, address_mask: u8) -> Result<(), VtdError> {
        let draining = self.capabilities.draining();
        let page_selective = self.capabilities.page_selective_invalidation()
            && address_mask <= self.capabilities.max_address_mask();
        let descriptor = if page_selective {
            encode::iotlb_page_invalidation(domain, address, address_mask, draining)
        } else {
            encode::iotlb_invalidation(Granularity::Domain, domain, draining)
        };
        if self.queue.is_some() {
            return self.invalidate_queued(&[descriptor]);
        }
        self.counts.invalidations += 1;
        if page_selective {
            self.iotlb.iva.set(encode::iva_value(address, address_mask));
            self.iotlb.iotlb.set(encode::iotlb_register_page_value(domain, draining));
        } else {
            self.iotlb.iotlb.set(encode::iotlb_register_value(Granularity::Domain, domain, draining));
        }
        self.poll(|| !self.iotlb.iotlb.is_set(IOTLB::IVT))
    }

    /// The invalidations issued so far.
    pub fn invalidation_counts(&self) -> InvalidationCounts {
        self.counts
    }

    /// Whether a fault is pending or was lost (FSTS.PPF or PFO): one
    /// register read, for polling on a hot path.
    pub fn fault_pending(&self) -> bool {
        let fsts = self.registers.fsts.extract();
        fsts.is_set(FSTS::PPF) || fsts.is_set(FSTS::PFO)
    }

    /// FSTS_REG, read once.
    pub fn fault_status(&self) -> u32 {
        self.registers.fsts.get()
    }

    /// Reads and clears every recorded fault, calling `report` for each;
    /// returns whether faults were lost (FSTS.PFO, cleared too).
    pub fn drain_faults(&self, mut report: impl FnMut(FaultRecord)) -> bool {
        let fsts = self.registers.fsts.extract();
        if fsts.is_set(FSTS::PPF) {
            for index in 0..self.capabilities.fault_record_count() as usize {
                let address = self.fault_base + index * size_of::<FaultRecordRegisters>();
                // SAFETY: `probe` checked that all CAP.NFR records lie in the page.
                let record: &FaultRecordRegisters = unsafe { &*(address as *const FaultRecordRegisters) };
                let raw = [record.low.get(), record.high.get()];
                if let Some(fault) = FaultRecord::decode(raw) {
                    report(fault);
                    // F is write-1-to-clear; the other bits are read-only.
                    record.high.set(fault::FAULT);
                }
            }
        }
        let overflow = fsts.is_set(FSTS::PFO);
        if overflow {
            self.registers.fsts.write(FSTS::PFO::SET);
        }
        overflow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_layout_matches_the_spec() {
        // Table 11-3: the fixed block up to ICS at 0x9c; the IOTLB pair and a
        // fault record are 16 bytes, as the offset units (×16) imply.
        assert_eq!(size_of::<VtdRegisters>(), 0x100);
        assert_eq!(size_of::<IotlbRegisters>(), 16);
        assert_eq!(size_of::<FaultRecordRegisters>(), 16);
        assert_eq!(QUEUE_ENTRIES as u64 * DESCRIPTOR_SIZE, 4096);
    }
}
