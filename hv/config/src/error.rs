//! What validation reports: one [`ConfigError`] per problem, naming the
//! partition (by index and name) and the field at fault.

use crate::model::MemoryAttribute;
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use core::fmt;

/// Granule every address and size is aligned to.
pub const PAGE_SIZE: u64 = 4096;

/// Most partitions one configuration may hold.
pub const MAX_PARTITIONS: usize = 64;

/// Interrupt IDs a partition may be given: the GIC's SPIs. SGIs (0..=15)
/// and PPIs (16..=31) are per-CPU and belong to the hypervisor; 1020..=1023
/// are special INTIDs; LPIs (8192..) are not assignable yet.
pub const SPI_INTIDS: core::ops::RangeInclusive<u32> = 32..=1019;

/// One problem found in a configuration.
///
/// Errors inside a partition have `partition_index` set and a `field`
/// relative to that partition (`memory[1].backing`); global errors (the
/// platform, the list of partitions) have `partition_index == None` and a
/// field from the top of the file (`platform.ram[0].base`). A conflict
/// between two partitions is always reported on the later one, so the
/// earlier one can still be started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Name of the partition, when the problem is inside one.
    pub partition: Option<String>,
    /// Index of the partition in file order, when the problem is inside one.
    pub partition_index: Option<usize>,
    /// Path of the offending field, e.g. `memory[1].size`.
    pub field: String,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl ConfigError {
    /// Whether the error concerns the whole configuration (platform, list of
    /// partitions) rather than one partition; then no partition may start.
    pub fn is_global(&self) -> bool {
        self.partition_index.is_none()
    }

    /// The field's path from the top of the file: `partition[1].memory[0].size`
    /// for a partition's field, the field itself for a global one.
    pub fn path(&self) -> String {
        match self.partition_index {
            Some(index) => format!("partition[{index}].{}", self.field),
            None => self.field.clone(),
        }
    }
}

/// The indices of the partitions that have at least one error: those must
/// not be started. Global errors are not counted here (see
/// [`has_global_errors`]).
pub fn partitions_with_errors(errors: &[ConfigError]) -> BTreeSet<usize> {
    errors.iter().filter_map(|e| e.partition_index).collect()
}

/// Whether any error concerns the whole configuration, so that no
/// partition may be started.
pub fn has_global_errors(errors: &[ConfigError]) -> bool {
    errors.iter().any(ConfigError::is_global)
}

/// What is wrong with a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration has no partition.
    NoPartitions,
    /// More than [`MAX_PARTITIONS`] partitions.
    TooManyPartitions(usize),
    /// The name is empty, too long, or has characters other than ASCII
    /// letters, digits, `-` and `_`.
    BadName,
    /// Another partition has the same name.
    DuplicateName,
    /// Another platform device has the same name.
    DuplicateDeviceName,
    /// The partition has no CPU.
    NoCpus,
    /// The CPU is listed twice, or given to two partitions (`other` names the first).
    CpuTaken {
        /// The CPU.
        cpu: u32,
        /// The partition that already has it.
        other: String,
    },
    /// The CPU number is not below the platform's CPU count.
    CpuOutOfRange {
        /// The CPU.
        cpu: u32,
        /// `platform.cpus`.
        count: u32,
    },
    /// Zero-sized region.
    ZeroSize,
    /// Address or size is not a multiple of [`PAGE_SIZE`].
    Misaligned(u64),
    /// The range wraps around the address space.
    Overflow,
    /// Two guest ranges of one partition overlap.
    GuestOverlap {
        /// The other range, as a field path: `memory[0]`, `passthrough[1]`.
        other: String,
    },
    /// Host memory given to two partitions, without `shared = true` on both.
    HostOverlap {
        /// The partition that has it first.
        other: String,
        /// The index of its region.
        region: usize,
    },
    /// Both regions say `shared = true` but cover different host ranges.
    SharedRangeMismatch {
        /// The partition that has the range first.
        other: String,
        /// The index of its region.
        region: usize,
    },
    /// Both regions say `shared = true` but map the memory with different
    /// attributes (mismatched aliases lose coherency).
    SharedAttrMismatch {
        /// The partition that has the range first.
        other: String,
        /// The index of its region.
        region: usize,
        /// Its attribute.
        attr: MemoryAttribute,
    },
    /// `shared = true` on memory that is not host-backed.
    SharedNotHost,
    /// A host-backed range that is not inside any `platform.ram` range.
    OutsideRam {
        /// First host-physical address.
        base: u64,
        /// Length.
        size: u64,
    },
    /// A host range that overlaps a `platform.reserved` range.
    ReservedMemory {
        /// First host-physical address.
        base: u64,
        /// Length.
        size: u64,
        /// The reserved range's `what`.
        what: String,
    },
    /// Host-backed memory over a platform device's registers.
    DeviceMemory {
        /// The device.
        device: String,
    },
    /// Two ranges of the platform overlap.
    PlatformOverlap {
        /// The other range, as a field path: `platform.ram[0]`.
        other: String,
    },
    /// `passthrough` names a device the platform does not have.
    UnknownDevice(String),
    /// A PCI address that is not `BB:DD.F` on segment 0.
    BadBdf(String),
    /// A virtual GPU field out of its allowed range.
    GpuField {
        /// The value given.
        value: u64,
        /// What is allowed.
        allowed: &'static str,
    },
    /// The virtual GPU's memory BAR attribute is normal-wb (cacheable
    /// aliases of device memory lose coherency with the GPU).
    GpuCacheable,
    /// The PCI function is already given to a partition.
    PciTaken {
        /// The function.
        bdf: String,
        /// The partition that has it.
        other: String,
    },
    /// An I/O port range that is empty or runs past port 0xffff.
    BadPortRange {
        /// First port.
        base: u32,
        /// Number of ports.
        size: u32,
    },
    /// I/O ports the hypervisor keeps for itself.
    HypervisorPorts {
        /// First port of the reserved range.
        base: u32,
        /// What they are.
        what: &'static str,
    },
    /// I/O ports another partition (or this one, earlier) already has.
    PortsTaken {
        /// First port of the overlap.
        port: u32,
        /// The partition that has them.
        other: String,
    },
    /// The device is listed twice, or given to two partitions.
    DeviceTaken {
        /// The device.
        device: String,
        /// The partition that already has it.
        other: String,
    },
    /// The mapping attribute is not one the device's memory allows.
    AttrMismatch {
        /// The device.
        device: String,
        /// The attribute asked for.
        asked: MemoryAttribute,
        /// The platform's attribute for the device.
        platform: MemoryAttribute,
    },
    /// The interrupt ID is not an SPI ([`SPI_INTIDS`]).
    BadInterrupt(u32),
    /// The interrupt is listed twice, or given to two partitions.
    InterruptTaken {
        /// The interrupt ID.
        intid: u32,
        /// The partition that already has it.
        other: String,
    },
    /// The interrupt is a line of a platform device the partition does not have.
    InterruptOfDevice {
        /// The interrupt ID.
        intid: u32,
        /// The device it belongs to.
        device: String,
    },
    /// The image is not loaded inside one executable, writable region.
    ImageOutsideMemory(u64),
    /// The entry point is not inside an executable region.
    EntryOutsideMemory(u64),
    /// The image file name is empty or has path separators.
    BadFileName,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.partition {
            Some(name) => write!(
                f,
                "partition '{name}', field '{}': {}",
                self.field, self.kind
            ),
            None => write!(f, "field '{}': {}", self.field, self.kind),
        }
    }
}

/// `base..end` of a host range, for messages.
struct Span(u64, u64);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.0, self.0.saturating_add(self.1))
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::NoPartitions => write!(f, "the configuration has no partition"),
            ErrorKind::TooManyPartitions(n) => {
                write!(f, "{n} partitions, at most {MAX_PARTITIONS} are supported")
            }
            ErrorKind::BadName => write!(f, "name must be 1-32 ASCII letters, digits, '-' or '_'"),
            ErrorKind::DuplicateName => write!(f, "another partition has the same name"),
            ErrorKind::DuplicateDeviceName => write!(f, "another device has the same name"),
            ErrorKind::NoCpus => write!(f, "a partition needs at least one CPU"),
            ErrorKind::CpuTaken { cpu, other } => {
                write!(f, "CPU {cpu} is already given to partition '{other}'")
            }
            ErrorKind::CpuOutOfRange { cpu, count } => {
                write!(
                    f,
                    "CPU {cpu} does not exist: the platform has {count} CPUs (0..={})",
                    count.saturating_sub(1)
                )
            }
            ErrorKind::ZeroSize => write!(f, "size is zero"),
            ErrorKind::Misaligned(v) => {
                write!(
                    f,
                    "{v:#x} is not a multiple of the {PAGE_SIZE:#x}-byte page"
                )
            }
            ErrorKind::Overflow => write!(f, "range wraps around the end of the address space"),
            ErrorKind::GuestOverlap { other } => {
                write!(f, "guest range overlaps {other} of the same partition")
            }
            ErrorKind::HostOverlap { other, region } => write!(
                f,
                "host range overlaps memory[{region}] of partition '{other}'; \
                 memory may be shared only with shared = true on both regions"
            ),
            ErrorKind::SharedRangeMismatch { other, region } => write!(
                f,
                "shared host range differs from memory[{region}] of partition '{other}'; \
                 shared regions must cover exactly the same host range"
            ),
            ErrorKind::SharedAttrMismatch {
                other,
                region,
                attr,
            } => write!(
                f,
                "shared host range is {attr} in memory[{region}] of partition '{other}'; \
                 shared regions must use the same attribute"
            ),
            ErrorKind::SharedNotHost => write!(
                f,
                "shared = true needs backing = {{ host = ADDRESS }}; allocated memory is never shared"
            ),
            ErrorKind::OutsideRam { base, size } => {
                write!(
                    f,
                    "host range {} is not inside any platform.ram range",
                    Span(*base, *size)
                )
            }
            ErrorKind::ReservedMemory { base, size, what } => write!(
                f,
                "host range {} overlaps reserved memory '{what}': hypervisor/firmware memory given to a guest",
                Span(*base, *size)
            ),
            ErrorKind::DeviceMemory { device } => write!(
                f,
                "host range overlaps the registers of device '{device}'; give devices with passthrough"
            ),
            ErrorKind::PlatformOverlap { other } => write!(f, "range overlaps {other}"),
            ErrorKind::UnknownDevice(name) => write!(f, "the platform has no device '{name}'"),
            ErrorKind::BadBdf(text) => {
                write!(f, "'{text}' is not a PCI function address BB:DD.F (hexadecimal, segment 0)")
            }
            ErrorKind::GpuField { value, allowed } => write!(f, "{value:#x} is not allowed here: {allowed}"),
            ErrorKind::GpuCacheable => {
                write!(f, "the GPU's local memory may not be mapped normal-wb; use normal-nc (write-combining) or a device attribute")
            }
            ErrorKind::PciTaken { bdf, other } => write!(f, "PCI function {bdf} is already given to partition '{other}'"),
            ErrorKind::BadPortRange { base, size } => {
                write!(f, "I/O ports {base:#x} (+{size}) are empty or run past port 0xffff")
            }
            ErrorKind::HypervisorPorts { base, what } => {
                write!(f, "I/O ports from {base:#x} are {what}; no partition may have them")
            }
            ErrorKind::PortsTaken { port, other } => {
                write!(f, "I/O port {port:#x} is already given to partition '{other}'")
            }
            ErrorKind::DeviceTaken { device, other } => {
                write!(
                    f,
                    "device '{device}' is already given to partition '{other}'"
                )
            }
            ErrorKind::AttrMismatch {
                device,
                asked,
                platform,
            } => {
                if rank(*asked) < rank(*platform) {
                    write!(
                        f,
                        "attribute {asked} is weaker than device '{device}''s {platform}"
                    )
                } else {
                    write!(
                        f,
                        "attribute {asked} differs from device '{device}''s {platform}; \
                         only a normal-nc device may be mapped as device memory"
                    )
                }
            }
            ErrorKind::BadInterrupt(intid) => write!(
                f,
                "interrupt {intid} is not an SPI ({}..={}); SGIs and PPIs belong to the hypervisor",
                SPI_INTIDS.start(),
                SPI_INTIDS.end()
            ),
            ErrorKind::InterruptTaken { intid, other } => {
                write!(
                    f,
                    "interrupt {intid} is already given to partition '{other}'"
                )
            }
            ErrorKind::InterruptOfDevice { intid, device } => write!(
                f,
                "interrupt {intid} belongs to device '{device}', which is not passed through to this partition"
            ),
            ErrorKind::ImageOutsideMemory(a) => write!(
                f,
                "image load address {a:#x} is not inside a writable, executable memory region"
            ),
            ErrorKind::EntryOutsideMemory(a) => {
                write!(
                    f,
                    "entry point {a:#x} is not inside an executable memory region"
                )
            }
            ErrorKind::BadFileName => write!(
                f,
                "file name must be a non-empty plain name without '/' or '\\'"
            ),
        }
    }
}

/// Ordering strength of an attribute: cacheable < non-cacheable < Device.
fn rank(attr: MemoryAttribute) -> u8 {
    match attr {
        MemoryAttribute::NormalWb => 0,
        MemoryAttribute::NormalNc => 1,
        MemoryAttribute::DeviceNGnRE => 2,
        MemoryAttribute::DeviceNGnRnE => 3,
    }
}
