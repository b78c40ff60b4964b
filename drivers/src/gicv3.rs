//! Arm GICv3 distributor and redistributors, as the hypervisor drives them.
//!
//! Register offsets from the GICv3/v4 architecture specification (IHI 0069)
//! §12.9 (distributor) and §12.10-12.11 (redistributor RD_base and SGI_base
//! frames). The hypervisor owns the physical GIC: it routes the interrupts
//! partitions use to the CPUs that run them and keeps everything else
//! disabled. Every poll is bounded.

use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

register_bitfields! [u32,
    /// `GICD_CTLR`, non-secure view / single security state (IHI 0069 §12.9.4).
    GICD_CTLR [
        /// Register write pending.
        RWP OFFSET(31) NUMBITS(1) [],
        /// Affinity routing enable (ARE_NS, or ARE with one security state).
        ARE OFFSET(4) NUMBITS(1) [],
        /// Group 1 (non-secure) enable.
        ENABLE_GRP1 OFFSET(1) NUMBITS(1) []
    ],
    /// `GICD_TYPER` (IHI 0069 §12.9.38).
    GICD_TYPER [
        /// 32 * (N + 1) INTIDs are supported below 1020.
        IT_LINES_NUMBER OFFSET(0) NUMBITS(5) []
    ],
    /// `GICR_WAKER` (IHI 0069 §12.11.44).
    GICR_WAKER [
        /// All interfaces to the connected PE are quiescent.
        CHILDREN_ASLEEP OFFSET(2) NUMBITS(1) [],
        /// The PE is asleep.
        PROCESSOR_SLEEP OFFSET(1) NUMBITS(1) []
    ]
];

register_structs! {
    /// The distributor, `GICD_*`.
    pub GicdRegisters {
        (0x0000 => ctlr: ReadWrite<u32, GICD_CTLR::Register>),
        (0x0004 => typer: ReadOnly<u32, GICD_TYPER::Register>),
        (0x0008 => _reserved0),
        (0x0080 => igroupr: [ReadWrite<u32>; 32]),
        (0x0100 => isenabler: [ReadWrite<u32>; 32]),
        (0x0180 => icenabler: [ReadWrite<u32>; 32]),
        (0x0200 => _reserved1),
        (0x0400 => ipriorityr: [ReadWrite<u8>; 1024]),
        (0x0800 => _reserved2),
        (0x0c00 => icfgr: [ReadWrite<u32>; 64]),
        (0x0d00 => _reserved3),
        (0x6100 => irouter: [ReadWrite<u64>; 988]),
        (0x7fe0 => _reserved4),
        (0x10000 => @END),
    }
}

register_structs! {
    /// One redistributor's RD_base frame, `GICR_*`.
    pub GicrRdRegisters {
        (0x0000 => ctlr: ReadWrite<u32>),
        (0x0004 => iidr: ReadOnly<u32>),
        (0x0008 => typer: ReadOnly<u64>),
        (0x0010 => _reserved0),
        (0x0014 => waker: ReadWrite<u32, GICR_WAKER::Register>),
        (0x0018 => _reserved1),
        (0x0070 => propbaser: ReadWrite<u64>),
        (0x0078 => pendbaser: ReadWrite<u64>),
        (0x0080 => _reserved2),
        (0x10000 => @END),
    }
}

register_structs! {
    /// One redistributor's SGI_base frame (SGIs and PPIs, INTIDs 0..32).
    pub GicrSgiRegisters {
        (0x0000 => _reserved0),
        (0x0080 => igroupr0: ReadWrite<u32>),
        (0x0084 => _reserved1),
        (0x0100 => isenabler0: ReadWrite<u32>),
        (0x0104 => _reserved2),
        (0x0180 => icenabler0: ReadWrite<u32>),
        (0x0184 => _reserved3),
        (0x0400 => ipriorityr: [ReadWrite<u8>; 32]),
        (0x0420 => _reserved4),
        (0x10000 => @END),
    }
}

/// `GICR_CTLR.EnableLPIs` (IHI 0069 §12.11.2).
const GICR_CTLR_ENABLE_LPIS: u32 = 1 << 0;
/// `GICR_TYPER.PLPIS`: physical LPIs supported (IHI 0069 §12.11.35).
const GICR_TYPER_PLPIS: u64 = 1 << 0;
/// Bytes of one redistributor (RD_base + SGI_base, GICv3 without VLPIs).
pub const GICR_STRIDE: u64 = 0x2_0000;
/// `GICR_TYPER.Last`: this is the last redistributor of the region.
const GICR_TYPER_LAST: u64 = 1 << 4;
/// Polls of a busy bit before giving up.
const POLL_LIMIT: u32 = 1_000_000;
/// Interrupts per `GICD_ICFGR<n>` word (two configuration bits each).
const ICFGR_INTERRUPTS_PER_WORD: usize = 16;
/// The priority the hypervisor gives every interrupt it enables.
pub const DEFAULT_PRIORITY: u8 = 0xa0;

/// A GIC operation that did not finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicError {
    /// `GICD_CTLR.RWP` stayed set.
    DistributorBusy,
    /// No redistributor in the region has this CPU's affinity.
    NoRedistributor(u64),
    /// `GICR_WAKER.ChildrenAsleep` stayed set.
    RedistributorAsleep,
    /// `GICR_TYPER.PLPIS` is clear: this redistributor has no physical LPIs.
    NoLpis,
    /// `GICR_CTLR.EnableLPIs` was set before the hypervisor gave the
    /// redistributor its tables (they can no longer change).
    LpisAlreadyEnabled,
    /// `GICR_CTLR.EnableLPIs` did not stick.
    LpisNotEnabled,
}

/// The physical distributor.
pub struct Gicd {
    registers: &'static GicdRegisters,
}

// SAFETY: the registers are MMIO; concurrent accesses from CPUs are what the
// GIC is built for, and the hypervisor serializes configuration changes.
unsafe impl Sync for Gicd {}
// SAFETY: as above.
unsafe impl Send for Gicd {}

impl Gicd {
    /// The distributor at `base`.
    ///
    /// # Safety
    /// `base` must map a GICv3 distributor as Device memory for the rest of
    /// the program, driven by nothing else.
    pub unsafe fn new(base: usize) -> Gicd {
        // SAFETY: the caller vouches for the mapping.
        Gicd { registers: unsafe { &*(base as *const GicdRegisters) } }
    }

    /// INTIDs below 1020 the distributor implements.
    pub fn line_count(&self) -> u32 {
        (32 * (self.registers.typer.read(GICD_TYPER::IT_LINES_NUMBER) + 1)).min(1020)
    }

    fn wait_for_writes(&self) -> Result<(), GicError> {
        for _ in 0..POLL_LIMIT {
            if !self.registers.ctlr.is_set(GICD_CTLR::RWP) {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(GicError::DistributorBusy)
    }

    /// Disables every SPI, puts them all in Group 1, and enables affinity
    /// routing and Group 1.
    ///
    /// # Errors
    /// [`GicError::DistributorBusy`].
    pub fn init(&self) -> Result<(), GicError> {
        self.registers.ctlr.set(0);
        self.wait_for_writes()?;
        let words = (self.line_count() / 32) as usize;
        for word in 1..words {
            self.registers.icenabler[word].set(u32::MAX);
            self.registers.igroupr[word].set(u32::MAX);
        }
        self.wait_for_writes()?;
        self.registers.ctlr.write(GICD_CTLR::ARE::SET + GICD_CTLR::ENABLE_GRP1::SET);
        self.wait_for_writes()
    }

    /// Disables SPI `intid`.
    pub fn disable_spi(&self, intid: u32) {
        if (32..self.line_count()).contains(&intid) {
            self.registers.icenabler[intid as usize / 32].set(1 << (intid % 32));
        }
    }

    /// Re-enables SPI `intid` (routed earlier with [`Gicd::enable_spi`]).
    pub fn unmask_spi(&self, intid: u32) {
        if (32..self.line_count()).contains(&intid) {
            self.registers.isenabler[intid as usize / 32].set(1 << (intid % 32));
        }
    }

    /// Makes SPI `intid` edge-triggered (`edge`) or level-sensitive
    /// (`GICD_ICFGR<n>`, IHI 0069 §12.9.9: bit `2 * (intid % 16) + 1` of
    /// word `intid / 16`). The SPI must be disabled while this changes.
    /// A device that signals by a pulse (the SMMUv3 in QEMU) needs edge:
    /// a level-sensitive SPI forgets a pulse nobody sampled.
    pub fn set_edge_triggered(&self, intid: u32, edge: bool) {
        if (32..self.line_count()).contains(&intid) {
            let word = &self.registers.icfgr[intid as usize / ICFGR_INTERRUPTS_PER_WORD];
            let bit = 1 << (2 * (intid as usize % ICFGR_INTERRUPTS_PER_WORD) + 1);
            let value = word.get();
            word.set(if edge { value | bit } else { value & !bit });
        }
    }

    /// Routes SPI `intid` to the CPU with affinity `mpidr` and enables it.
    pub fn enable_spi(&self, intid: u32, mpidr: u64) {
        if (32..self.line_count()).contains(&intid) {
            self.registers.ipriorityr[intid as usize].set(DEFAULT_PRIORITY);
            self.registers.irouter[intid as usize - 32].set(mpidr & 0xff_00ff_ffff);
            self.registers.isenabler[intid as usize / 32].set(1 << (intid % 32));
        }
    }
}

/// One CPU's redistributor.
pub struct Gicr {
    rd: &'static GicrRdRegisters,
    sgi: &'static GicrSgiRegisters,
}

// SAFETY: only the CPU it belongs to uses a redistributor; other CPUs can
// reach the handle (it sits in a table indexed by CPU) but never use it.
unsafe impl Send for Gicr {}
// SAFETY: as above.
unsafe impl Sync for Gicr {}

impl Gicr {
    /// Finds the redistributor of the CPU with affinity `mpidr` in the region
    /// at `base` of `size` bytes.
    ///
    /// # Safety
    /// `[base, base + size)` must map GICv3 redistributors as Device memory.
    ///
    /// # Errors
    /// [`GicError::NoRedistributor`].
    pub unsafe fn find(base: usize, size: usize, mpidr: u64) -> Result<Gicr, GicError> {
        let wanted = mpidr & 0xff_00ff_ffff;
        let mut frame = base;
        while frame + GICR_STRIDE as usize <= base + size {
            // SAFETY: the frame lies inside the region the caller vouches for.
            let rd = unsafe { &*(frame as *const GicrRdRegisters) };
            let typer = rd.typer.get();
            let affinity = typer >> 32;
            // GICR_TYPER.Affinity packs Aff3.Aff2.Aff1.Aff0; MPIDR has Aff3 at 39:32.
            let packed = ((wanted >> 8) & 0xff00_0000) | (wanted & 0xff_ffff);
            if affinity == packed {
                // SAFETY: SGI_base follows RD_base in the same redistributor.
                let sgi = unsafe { &*((frame + 0x1_0000) as *const GicrSgiRegisters) };
                return Ok(Gicr { rd, sgi });
            }
            if typer & GICR_TYPER_LAST != 0 {
                break;
            }
            frame += GICR_STRIDE as usize;
        }
        Err(GicError::NoRedistributor(mpidr))
    }

    /// Wakes the redistributor, puts SGIs and PPIs in Group 1, all disabled.
    ///
    /// # Errors
    /// [`GicError::RedistributorAsleep`].
    pub fn init(&self) -> Result<(), GicError> {
        self.rd.waker.modify(GICR_WAKER::PROCESSOR_SLEEP::CLEAR);
        let mut awake = false;
        for _ in 0..POLL_LIMIT {
            if !self.rd.waker.is_set(GICR_WAKER::CHILDREN_ASLEEP) {
                awake = true;
                break;
            }
            core::hint::spin_loop();
        }
        if !awake {
            return Err(GicError::RedistributorAsleep);
        }
        self.sgi.icenabler0.set(u32::MAX);
        self.sgi.igroupr0.set(u32::MAX);
        for priority in &self.sgi.ipriorityr {
            priority.set(DEFAULT_PRIORITY);
        }
        Ok(())
    }

    /// Enables SGI or PPI `intid` (< 32).
    pub fn enable_private(&self, intid: u32) {
        if intid < 32 {
            self.sgi.isenabler0.set(1 << intid);
        }
    }

    /// Disables SGI or PPI `intid` (< 32).
    pub fn disable_private(&self, intid: u32) {
        if intid < 32 {
            self.sgi.icenabler0.set(1 << intid);
        }
    }

    /// `GICR_TYPER` (affinity, processor number, `PLPIS`).
    pub fn typer(&self) -> u64 {
        self.rd.typer.get()
    }

    /// The physical address of the RD_base frame (identity-mapped).
    pub fn rd_base_address(&self) -> u64 {
        core::ptr::from_ref(self.rd) as u64
    }

    /// Gives this redistributor the LPI configuration table (`propbaser`,
    /// the same for every redistributor) and its own zeroed pending table
    /// (`pendbaser`), then sets `GICR_CTLR.EnableLPIs`. Values from
    /// `gicv3_its::{propbaser_value, pendbaser_value}`.
    ///
    /// # Errors
    /// [`GicError::NoLpis`], [`GicError::LpisAlreadyEnabled`],
    /// [`GicError::LpisNotEnabled`].
    pub fn enable_lpis(&self, propbaser: u64, pendbaser: u64) -> Result<(), GicError> {
        if self.typer() & GICR_TYPER_PLPIS == 0 {
            return Err(GicError::NoLpis);
        }
        if self.rd.ctlr.get() & GICR_CTLR_ENABLE_LPIS != 0 {
            return Err(GicError::LpisAlreadyEnabled);
        }
        self.rd.propbaser.set(propbaser);
        self.rd.pendbaser.set(pendbaser);
        // The tables' contents (zeroed, configured) before the enable.
        #[cfg(all(target_arch = "aarch64", not(test)))]
        // SAFETY: a barrier only orders memory accesses.
        unsafe {
            core::arch::asm!("dsb st", options(nostack, preserves_flags));
        }
        self.rd.ctlr.set(self.rd.ctlr.get() | GICR_CTLR_ENABLE_LPIS);
        if self.rd.ctlr.get() & GICR_CTLR_ENABLE_LPIS == 0 {
            return Err(GicError::LpisNotEnabled);
        }
        Ok(())
    }
}
