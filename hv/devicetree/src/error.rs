//! Why a device tree could not be built.

use core::fmt;

use crate::platform::GuestRange;
use crate::{MAX_BOOTARGS_LEN, MAX_CPUS};

/// A guest-physical range of a [`crate::GuestPlatform`], for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// `memory[index]`.
    Memory(usize),
    /// The initial RAM disk.
    Initrd,
    /// The GIC distributor.
    GicDistributor,
    /// The GIC redistributor region.
    GicRedistributors,
    /// The PL011's registers.
    Uart,
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Region::Memory(index) => write!(f, "memory range {index}"),
            Region::Initrd => f.write_str("initrd"),
            Region::GicDistributor => f.write_str("GIC distributor"),
            Region::GicRedistributors => f.write_str("GIC redistributor region"),
            Region::Uart => f.write_str("UART"),
        }
    }
}

/// An interrupt of a [`crate::GuestPlatform`], for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// The GIC maintenance interrupt.
    GicMaintenance,
    /// The secure EL1 physical timer.
    SecurePhysTimer,
    /// The non-secure EL1 physical timer.
    NonSecurePhysTimer,
    /// The EL1 virtual timer.
    VirtualTimer,
    /// The EL2 physical timer.
    HypTimer,
    /// The PL011's interrupt.
    Uart,
}

impl fmt::Display for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Interrupt::GicMaintenance => "GIC maintenance interrupt",
            Interrupt::SecurePhysTimer => "secure physical timer interrupt",
            Interrupt::NonSecurePhysTimer => "non-secure physical timer interrupt",
            Interrupt::VirtualTimer => "virtual timer interrupt",
            Interrupt::HypTimer => "hypervisor timer interrupt",
            Interrupt::Uart => "UART interrupt",
        })
    }
}

/// Why [`crate::build`] or [`crate::validate`] refused a platform.
#[derive(Debug, PartialEq, Eq)]
pub enum DeviceTreeError {
    /// `cpu_count` is zero.
    NoCpus,
    /// `cpu_count` is above [`MAX_CPUS`].
    TooManyCpus {
        /// The count asked for.
        cpu_count: u32,
    },
    /// The redistributor region holds fewer [`crate::GICR_FRAME_SIZE`]
    /// frames than there are vCPUs.
    RedistributorsTooSmall {
        /// The count asked for.
        cpu_count: u32,
        /// How many redistributors the region holds.
        frame_count: u64,
    },
    /// `memory` is empty.
    NoMemory,
    /// A range has size zero.
    EmptyRange {
        /// Which range.
        region: Region,
        /// Its base.
        base: u64,
    },
    /// A range runs past the top of the 64-bit address space.
    RangeOverflows {
        /// Which range.
        region: Region,
        /// The range.
        range: GuestRange,
    },
    /// Two ranges (RAM or devices) share addresses.
    Overlap {
        /// The range with the lower base.
        first: Region,
        /// The other range.
        second: Region,
        /// The first address both contain.
        at: u64,
    },
    /// The initrd is not entirely inside one RAM range.
    InitrdOutsideMemory {
        /// The initrd.
        initrd: GuestRange,
    },
    /// An interrupt that must be a PPI has an INTID outside 16..=31.
    NotAPpi {
        /// Which interrupt.
        interrupt: Interrupt,
        /// Its INTID.
        intid: u32,
    },
    /// An interrupt that must be an SPI has an INTID outside 32..=1019.
    NotAnSpi {
        /// Which interrupt.
        interrupt: Interrupt,
        /// Its INTID.
        intid: u32,
    },
    /// The command line is longer than [`MAX_BOOTARGS_LEN`] bytes.
    BootargsTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The command line contains a NUL byte, which would end it early.
    BootargsContainsNul {
        /// Byte offset of the first NUL.
        offset: usize,
    },
    /// The FDT writer refused; a bug here, since validation passed.
    Writer(vm_fdt::Error),
}

impl From<vm_fdt::Error> for DeviceTreeError {
    fn from(error: vm_fdt::Error) -> Self {
        DeviceTreeError::Writer(error)
    }
}

impl fmt::Display for DeviceTreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceTreeError::NoCpus => f.write_str("a partition needs at least one vCPU"),
            DeviceTreeError::TooManyCpus { cpu_count } => {
                write!(
                    f,
                    "{cpu_count} vCPUs asked for; at most {MAX_CPUS} are supported"
                )
            }
            DeviceTreeError::RedistributorsTooSmall {
                cpu_count,
                frame_count,
            } => write!(
                f,
                "the GIC redistributor region holds {frame_count} redistributors, \
                 {cpu_count} vCPUs need one each"
            ),
            DeviceTreeError::NoMemory => f.write_str("a partition needs at least one RAM range"),
            DeviceTreeError::EmptyRange { region, base } => {
                write!(f, "{region} at {base:#x} has size zero")
            }
            DeviceTreeError::RangeOverflows { region, range } => write!(
                f,
                "{region} at {:#x} of size {:#x} runs past the end of the address space",
                range.base, range.size
            ),
            DeviceTreeError::Overlap { first, second, at } => {
                write!(f, "{first} and {second} overlap at {at:#x}")
            }
            DeviceTreeError::InitrdOutsideMemory { initrd } => write!(
                f,
                "initrd at {:#x} of size {:#x} is not inside one RAM range",
                initrd.base, initrd.size
            ),
            DeviceTreeError::NotAPpi { interrupt, intid } => {
                write!(f, "{interrupt} is INTID {intid}, not a PPI (16..=31)")
            }
            DeviceTreeError::NotAnSpi { interrupt, intid } => {
                write!(f, "{interrupt} is INTID {intid}, not an SPI (32..=1019)")
            }
            DeviceTreeError::BootargsTooLong { len } => {
                write!(
                    f,
                    "bootargs are {len} bytes long; at most {MAX_BOOTARGS_LEN} fit"
                )
            }
            DeviceTreeError::BootargsContainsNul { offset } => {
                write!(f, "bootargs contain a NUL byte at offset {offset}")
            }
            DeviceTreeError::Writer(error) => write!(f, "FDT writer: {error}"),
        }
    }
}

impl core::error::Error for DeviceTreeError {}
