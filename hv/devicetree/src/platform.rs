//! What the hypervisor gives one partition, as plain data.
//!
//! [`GuestPlatform`] is the input of [`crate::build`]. Every address here is
//! guest-physical (an IPA): what the partition's vCPUs see through stage 2.
//! Interrupts are GIC interrupt IDs (INTIDs), as everywhere else in Bulkhead;
//! the generator converts them to the device tree's PPI/SPI numbering.

use alloc::string::String;
use alloc::vec::Vec;

/// `size` bytes of guest-physical address space starting at `base`.
///
/// The fields are raw IPAs rather than `bulkhead_core::address::Gpa`: this
/// crate is a leaf below the core, so it borrows no types from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GuestRange {
    /// First guest-physical address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl GuestRange {
    /// `size` bytes from `base`.
    pub const fn new(base: u64, size: u64) -> Self {
        Self { base, size }
    }

    /// One past the last byte, or `None` if that does not fit in 64 bits.
    pub const fn end(self) -> Option<u64> {
        self.base.checked_add(self.size)
    }
}

/// The instruction a guest uses to call PSCI (the binding's `method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    /// `HVC #0`: the hypervisor answers directly.
    Hvc,
    /// `SMC #0`: trapped by the hypervisor (`HCR_EL2.TSC`) and emulated.
    Smc,
}

impl PsciConduit {
    /// The value of the PSCI node's `method` property.
    pub const fn method(self) -> &'static str {
        match self {
            PsciConduit::Hvc => "hvc",
            PsciConduit::Smc => "smc",
        }
    }
}

/// Size of one GICv3 redistributor: its `RD_base` and `SGI_base` 64 KiB
/// frames (Arm IHI 0069, the Redistributor memory map; GICv4 adds two more
/// frames, which partitions do not get). The
/// redistributor region holds one per vCPU, back to back.
pub const GICR_FRAME_SIZE: u64 = 0x2_0000;

/// The GIC maintenance interrupt's INTID recommended by the Arm Base System
/// Architecture (PPI 9), and wired there on QEMU `virt`.
pub const GIC_MAINTENANCE_INTID: u32 = 25;

/// The partition's GICv3, as its vCPUs see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GicV3 {
    /// The distributor (`GICD_*`), normally 64 KiB.
    pub distributor: GuestRange,
    /// The single redistributor region: [`GICR_FRAME_SIZE`] bytes per vCPU,
    /// vCPU `n` at `base + n * GICR_FRAME_SIZE`.
    pub redistributors: GuestRange,
    /// INTID of the maintenance interrupt, a PPI (16..=31); normally
    /// [`GIC_MAINTENANCE_INTID`].
    pub maintenance_intid: u32,
}

/// The interrupts of the Arm generic timer, as INTIDs (each a PPI, 16..=31).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchTimer {
    /// Secure EL1 physical timer.
    pub secure_phys_intid: u32,
    /// Non-secure EL1 physical timer.
    pub nonsecure_phys_intid: u32,
    /// EL1 virtual timer.
    pub virtual_intid: u32,
    /// Non-secure EL2 (hypervisor) physical timer.
    pub hyp_intid: u32,
}

impl ArchTimer {
    /// The INTIDs the Arm Base System Architecture recommends (PPIs 13, 14,
    /// 11 and 10) and QEMU `virt` uses.
    pub const BSA: ArchTimer = ArchTimer {
        secure_phys_intid: 29,
        nonsecure_phys_intid: 30,
        virtual_intid: 27,
        hyp_intid: 26,
    };
}

impl Default for ArchTimer {
    fn default() -> Self {
        Self::BSA
    }
}

/// An Arm PL011 UART given to the partition (emulated or passed through).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pl011 {
    /// Its registers, normally 4 KiB.
    pub registers: GuestRange,
    /// INTID of its interrupt, an SPI (32..=1019); QEMU `virt` uses 33.
    pub intid: u32,
}

/// Everything the device tree of one partition describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestPlatform {
    /// RAM, one `/memory@...` node per range, in any order; at least one.
    pub memory: Vec<GuestRange>,
    /// Number of vCPUs, 1..=[`crate::MAX_CPUS`]; vCPU `n` has
    /// `MPIDR_EL1.Aff0 == n` and every other affinity field zero.
    pub cpu_count: u32,
    /// How the guest calls PSCI (1.0) to start and stop vCPUs.
    pub psci: PsciConduit,
    /// The interrupt controller.
    pub gic: GicV3,
    /// The generic timer's interrupts.
    pub timer: ArchTimer,
    /// The console UART, if the partition has one; it becomes `serial0` and
    /// the `stdout-path`.
    pub uart: Option<Pl011>,
    /// The kernel command line, at most [`crate::MAX_BOOTARGS_LEN`] bytes,
    /// without NUL bytes.
    pub bootargs: String,
    /// Where the loader put the initial RAM disk, if any; it must lie inside
    /// one [`GuestPlatform::memory`] range.
    pub initrd: Option<GuestRange>,
}
