//! The configuration data model.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// A whole machine's configuration: the platform and its partitions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The machine the partitions run on. Optional in the TOML so that small
    /// test configurations stay short; an empty platform turns off every
    /// host-physical check (RAM, reserved ranges, devices, CPU count).
    #[serde(default)]
    pub platform: Platform,
    /// The partitions, started in this order.
    #[serde(rename = "partition", default)]
    pub partitions: Vec<Partition>,
}

/// The physical machine: what RAM, devices and CPUs exist and what no guest
/// may ever be given.
///
/// ```toml
/// [platform]
/// name = "qemu-virt"
/// cpus = 4
/// ram = [{ base = 0x4000_0000, size = 0x4000_0000 }]
/// reserved = [{ base = 0x4000_0000, size = 0x20_0000, what = "firmware" }]
/// devices = [
///     { name = "uart0", base = 0x0900_0000, size = 0x1000, attr = "device-ngnre", interrupts = [33] },
/// ]
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    /// Name used in summaries, e.g. `qemu-virt`.
    #[serde(default)]
    pub name: String,
    /// Physical CPUs; CPU numbers in partitions must be below it. 0: unchecked.
    #[serde(default)]
    pub cpus: u32,
    /// Host-physical RAM ranges. Host-backed guest memory must lie inside
    /// one of them; empty: unchecked.
    #[serde(default)]
    pub ram: Vec<PhysRange>,
    /// Host-physical ranges no guest may ever be given (firmware, the
    /// hypervisor's own carve-out).
    #[serde(default)]
    pub reserved: Vec<ReservedRange>,
    /// MMIO blocks that partitions may be given with `passthrough`.
    #[serde(default)]
    pub devices: Vec<Device>,
}

impl Platform {
    /// The device called `name`.
    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// Whether the platform says nothing, so host-physical checks are off.
    pub fn is_empty(&self) -> bool {
        self.cpus == 0 && self.ram.is_empty() && self.reserved.is_empty() && self.devices.is_empty()
    }
}

/// A host-physical address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhysRange {
    /// First host-physical address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

/// A host-physical range that no partition may be given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservedRange {
    /// First host-physical address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
    /// What lives there, for messages: `"firmware"`, `"hypervisor"`.
    pub what: String,
}

/// An MMIO block of the platform that may be passed through to a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Name partitions use in `passthrough`: ASCII letters, digits, `-`, `_`.
    pub name: String,
    /// First host-physical address of its registers.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
    /// The attribute the hardware needs (DESIGN.md §4); guest mappings get
    /// exactly this one, or Device where this is `normal-nc`.
    pub attr: MemoryAttribute,
    /// Its interrupt IDs (GIC INTIDs; SPI n is INTID 32 + n).
    #[serde(default)]
    pub interrupts: Vec<u32>,
}

/// One statically configured partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Name used in logs and summaries: ASCII letters, digits, `-`, `_`.
    pub name: String,
    /// Physical CPU numbers (MPIDR affinity 0) given to this partition.
    pub cpus: Vec<u32>,
    /// The guest image and how it starts.
    pub image: Image,
    /// Guest memory regions.
    #[serde(rename = "memory", default)]
    pub memory: Vec<MemoryRegion>,
    /// What the hypervisor does when the partition touches an unmapped or
    /// forbidden guest-physical address.
    #[serde(default)]
    pub on_fault: FaultPolicy,
    /// Platform devices mapped into the partition.
    #[serde(default)]
    pub passthrough: Vec<Passthrough>,
    /// Interrupt IDs (SPIs, 32..=1019) routed to the partition besides those
    /// of its passed-through devices, which it gets anyway.
    #[serde(default)]
    pub interrupts: Vec<u32>,
    /// Where the partition's console output goes.
    #[serde(default)]
    pub console: Console,
    /// x86 I/O ports the partition reads and writes directly, without an
    /// exit (x86_64 only). Any other port access is a fault handled by
    /// `on_fault`.
    #[serde(default)]
    pub io_ports: Vec<PortRange>,
    /// PCI functions assigned to the partition: their BARs are mapped into
    /// it, it sees them in a virtual configuration space at
    /// [`VIRTUAL_PCI_ECAM_BASE`], and their DMA goes through an IOMMU
    /// domain holding only the partition's `dma = true` regions.
    #[serde(default)]
    pub pci: Vec<PciFunction>,
    /// The partition's virtual GPU, a mediated share of the machine's GPU
    /// (DESIGN.md §5); none if absent.
    #[serde(default)]
    pub gpu: Option<VirtualGpu>,
}

/// A partition's share of the GPU.
///
/// ```toml
/// [partition.gpu]
/// gtt_entries = 2048          # its global GTT: 2048 entries = 8 MiB of graphics addresses
/// local_memory = 0x40_0000    # bytes of the GPU's local memory, its memory BAR
/// weight = 2                  # scheduling weight: submissions in a row while others wait
/// attr = "normal-nc"          # memory BAR attribute (x86_64: write-combining)
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualGpu {
    /// Entries in its global GTT, each mapping 4 KiB of graphics addresses.
    pub gtt_entries: u32,
    /// Bytes of local memory, page-aligned, at most [`VIRTUAL_GPU_MEMORY_MAX`].
    pub local_memory: u64,
    /// Scheduling weight, 1..=[`VIRTUAL_GPU_MAX_WEIGHT`].
    #[serde(default = "default_gpu_weight")]
    pub weight: u32,
    /// How the partition maps its memory BAR: `normal-nc` (write-combining
    /// on x86_64) or a device attribute.
    #[serde(default = "default_gpu_attr")]
    pub attr: MemoryAttribute,
}

fn default_gpu_weight() -> u32 {
    1
}

fn default_gpu_attr() -> MemoryAttribute {
    MemoryAttribute::NormalNc
}

/// Largest scheduling weight of a virtual GPU.
pub const VIRTUAL_GPU_MAX_WEIGHT: u32 = 16;
/// Most GTT entries one virtual GPU may have (its register BAR holds the
/// GTT in 1 MiB: 128 Ki entries).
pub const VIRTUAL_GPU_MAX_GTT_ENTRIES: u32 = 128 * 1024;

/// A PCI function given to a partition.
///
/// ```toml
/// [[partition.pci]]
/// bdf = "00:02.0"      # bus:device.function, PCI segment 0
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PciFunction {
    /// `BB:DD.F` (hexadecimal bus and device, function 0-7), optionally
    /// with a `0000:` segment prefix.
    pub bdf: String,
}

impl PciFunction {
    /// The function's address, if `bdf` is well formed.
    pub fn address(&self) -> Option<Bdf> {
        Bdf::parse(&self.bdf)
    }
}

/// A PCI function's address on segment 0: bus, device, function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bdf {
    /// Bus, 0-255.
    pub bus: u8,
    /// Device, 0-31.
    pub device: u8,
    /// Function, 0-7.
    pub function: u8,
}

impl Bdf {
    /// Parses `BB:DD.F` or `0000:BB:DD.F` (hexadecimal; only segment 0).
    pub fn parse(text: &str) -> Option<Bdf> {
        let text = text.strip_prefix("0000:").unwrap_or(text);
        let (bus, rest) = text.split_once(':')?;
        let (device, function) = rest.split_once('.')?;
        let hex = |s: &str, max: u8| {
            (!s.is_empty() && s.len() <= 2).then(|| u8::from_str_radix(s, 16).ok()).flatten().filter(|&v| v <= max)
        };
        Some(Bdf { bus: hex(bus, 0xff)?, device: hex(device, 31)?, function: hex(function, 7)? })
    }

    /// The 16-bit requester ID: bus in 15:8, device in 7:3, function in 2:0.
    pub fn requester_id(&self) -> u16 {
        (u16::from(self.bus) << 8) | (u16::from(self.device) << 3) | u16::from(self.function)
    }
}

impl core::fmt::Display for Bdf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

impl Partition {
    /// Every interrupt the partition owns: its `interrupts` and those of its
    /// passed-through devices, sorted, without repeats. Devices the platform
    /// does not know are skipped (validation reports them).
    pub fn interrupt_ids(&self, platform: &Platform) -> Vec<u32> {
        let mut ids = self.interrupts.clone();
        for passthrough in &self.passthrough {
            if let Some(device) = platform.device(&passthrough.device) {
                ids.extend_from_slice(&device.interrupts);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// A range of x86 I/O ports, `base..base + size`.
///
/// ```toml
/// io_ports = [{ base = 0x70, size = 2 }]   # the CMOS RTC
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    /// First port.
    pub base: u32,
    /// Number of ports.
    pub size: u32,
}

impl PortRange {
    /// The ports as an inclusive range, if the range is valid (non-empty,
    /// inside the 64 Ki port space).
    pub fn ports(&self) -> Option<core::ops::RangeInclusive<u16>> {
        let last = self.base.checked_add(self.size)?.checked_sub(1)?;
        (self.size > 0 && last <= 0xffff).then_some(self.base as u16..=last as u16)
    }
}

/// Ports no partition may be given: the hypervisor's own, and those that
/// reset or reconfigure the whole machine (first port, count, what).
pub const HYPERVISOR_PORTS: [(u32, u32, &str); 5] = [
    (0x3f8, 8, "COM1, the hypervisor's console"),
    (0xcf8, 8, "PCI configuration mechanism #1 and the reset control register"),
    (0x92, 1, "system control port A (fast reset)"),
    (0x64, 1, "the i8042 command port (machine reset)"),
    (0xf4, 1, "isa-debug-exit, which ends the QEMU run"),
];

/// A platform device given to a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Passthrough {
    /// The platform device's `name`.
    pub device: String,
    /// Guest-physical address of the mapping; defaults to the device's
    /// host-physical base (an identity mapping).
    #[serde(default)]
    pub guest: Option<u64>,
    /// Attribute of the mapping; defaults to the device's. It may differ
    /// only by asking for Device memory where the platform says `normal-nc`.
    #[serde(default)]
    pub attr: Option<MemoryAttribute>,
}

impl Passthrough {
    /// The guest-physical base of the mapping of `device`.
    pub fn guest_base(&self, device: &Device) -> u64 {
        self.guest.unwrap_or(device.base)
    }

    /// The attribute of the mapping of `device`.
    pub fn attr_for(&self, device: &Device) -> MemoryAttribute {
        self.attr.unwrap_or(device.attr)
    }
}

/// Where a partition's console output goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Console {
    /// The console hypercall: the hypervisor prints the text, prefixed with
    /// the partition's name.
    #[default]
    Hypercall,
    /// No console: console hypercalls are refused.
    None,
    /// An emulated PL011 UART at guest address [`EMULATED_UART_BASE`] (the
    /// QEMU `virt` layout), plus the console hypercall; output is printed
    /// with the partition's name.
    Pl011,
}

/// Guest-physical address of the emulated PL011 (`console = "pl011"`).
pub const EMULATED_UART_BASE: u64 = 0x0900_0000;
/// Guest-physical address of every partition's virtual GIC distributor
/// (the QEMU `virt` layout); the redistributors follow at
/// [`VGIC_REDISTRIBUTOR_BASE`], 128 KiB per vCPU.
pub const VGIC_DISTRIBUTOR_BASE: u64 = 0x0800_0000;
/// See [`VGIC_DISTRIBUTOR_BASE`].
pub const VGIC_REDISTRIBUTOR_BASE: u64 = 0x080a_0000;
/// Guest-physical address of the virtual PCI configuration space (ECAM,
/// bus 0 only: 1 MiB) of a partition with `pci` functions.
pub const VIRTUAL_PCI_ECAM_BASE: u64 = 0x3f00_0000;
/// Size of that window.
pub const VIRTUAL_PCI_ECAM_SIZE: u64 = 0x10_0000;
/// Guest-physical address of a partition's virtual GPU register BAR
/// (the `gpu::vgpu` register map of `bulkhead-abi`, 2 MiB, trapped).
pub const VIRTUAL_GPU_REGISTERS_BASE: u64 = 0x3e00_0000;
/// Size of that BAR.
pub const VIRTUAL_GPU_REGISTERS_SIZE: u64 = 0x20_0000;
/// Guest-physical address of a partition's virtual GPU memory BAR: its
/// share of the GPU's local memory, mapped directly.
pub const VIRTUAL_GPU_MEMORY_BASE: u64 = 0x3800_0000;
/// Largest local-memory share a virtual GPU's memory BAR can show.
pub const VIRTUAL_GPU_MEMORY_MAX: u64 = 0x400_0000;
/// The virtual GPU's interrupt on arm64: an SPI of the partition's vGIC.
pub const VIRTUAL_GPU_SPI: u32 = 90;
/// The virtual GPU's interrupt on x86_64: a pin of the partition's virtual
/// I/O APIC.
pub const VIRTUAL_GPU_IOAPIC_PIN: u8 = 20;
/// Guest-physical address of every partition's verdict register (a 4 KiB
/// window), where a guest without hypercalls reports its test result.
pub const VERDICT_REGISTER_BASE: u64 = 0x0a00_0000;
/// Guest-physical address of the virtual I/O APIC of an x86_64 partition
/// with `pci` functions (their INTx); 4 KiB.
pub const VIRTUAL_IOAPIC_BASE: u64 = 0xfec0_0000;
/// Guest-physical address of that partition's local APIC page (EOI); 4 KiB.
pub const VIRTUAL_LAPIC_BASE: u64 = 0xfee0_0000;
/// Size of each of those two windows.
pub const VIRTUAL_APIC_WINDOW_SIZE: u64 = 0x1000;

/// A guest image file and its entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// File name under the ESP's image folder.
    pub file: String,
    /// How the image is started.
    #[serde(default)]
    pub kind: ImageKind,
    /// Guest-physical address the image is copied to.
    pub load: u64,
    /// Guest-physical entry point; defaults to `load` (for `linux`, the
    /// kernel's header decides).
    #[serde(default)]
    pub entry: Option<u64>,
    /// For `linux`: an initramfs file under the ESP's image folder.
    #[serde(default)]
    pub initrd: Option<String>,
    /// For `linux`: the kernel command line.
    #[serde(default)]
    pub bootargs: String,
}

impl Image {
    /// The entry point.
    pub fn entry_point(&self) -> u64 {
        self.entry.unwrap_or(self.load)
    }
}

/// How a guest image starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageKind {
    /// A flat binary entered at its entry point at EL1, MMU off.
    #[default]
    Raw,
    /// An arm64 Linux `Image` (Documentation/arch/arm64/booting.rst): placed
    /// at `load` (2 MiB aligned) plus its `text_offset`, entered with `x0`
    /// pointing at a device tree the hypervisor generates for the partition.
    Linux,
}

/// A region of guest-physical memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryRegion {
    /// First guest-physical address.
    pub guest: u64,
    /// Length in bytes.
    pub size: u64,
    /// Where the memory comes from.
    #[serde(default)]
    pub backing: Backing,
    /// The memory attribute the guest mapping gets, exactly.
    #[serde(default)]
    pub attr: MemoryAttribute,
    /// Access permissions, e.g. `"rwx"`, `"rw"`, `"r"`.
    #[serde(default = "default_perms")]
    pub perms: Permissions,
    /// Whether devices assigned to the partition may DMA to this region.
    #[serde(default)]
    pub dma: bool,
    /// Whether this host range is deliberately shared with other
    /// partitions. Two partitions may name the same host memory only when
    /// both regions say `shared = true` and cover exactly the same range.
    #[serde(default)]
    pub shared: bool,
}

fn default_perms() -> Permissions {
    Permissions {
        read: true,
        write: true,
        execute: true,
    }
}

/// Where a region's memory comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backing {
    /// Fresh zeroed RAM from the hypervisor's allocator.
    #[default]
    Allocate,
    /// A fixed host-physical range (device memory, or RAM carved out by address).
    Host(u64),
}

/// The memory attribute of a mapping (DESIGN.md §4), from weakest to
/// strongest ordering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryAttribute {
    /// Normal memory, write-back cacheable: ordinary RAM.
    #[default]
    #[serde(rename = "normal-wb")]
    NormalWb,
    /// Normal memory, non-cacheable: write-combining capable device memory.
    #[serde(rename = "normal-nc")]
    NormalNc,
    /// Device-nGnRE: ordinary MMIO.
    #[serde(rename = "device-ngnre")]
    DeviceNGnRE,
    /// Device-nGnRnE: strongly ordered MMIO.
    #[serde(rename = "device-ngnrne")]
    DeviceNGnRnE,
}

impl MemoryAttribute {
    /// The configuration name, e.g. `"device-ngnre"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            MemoryAttribute::NormalWb => "normal-wb",
            MemoryAttribute::NormalNc => "normal-nc",
            MemoryAttribute::DeviceNGnRE => "device-ngnre",
            MemoryAttribute::DeviceNGnRnE => "device-ngnrne",
        }
    }

    /// Whether this is one of the Device types.
    pub fn is_device(&self) -> bool {
        matches!(
            self,
            MemoryAttribute::DeviceNGnRE | MemoryAttribute::DeviceNGnRnE
        )
    }

    /// Whether a mapping of memory the platform describes as `platform` may
    /// use this attribute: the same one, or Device memory for a `normal-nc`
    /// block (never more weakly ordered or more cacheable than the hardware
    /// allows, and no Device type other than the platform's own).
    pub fn may_map(&self, platform: MemoryAttribute) -> bool {
        *self == platform || (platform == MemoryAttribute::NormalNc && self.is_device())
    }
}

impl core::fmt::Display for MemoryAttribute {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Read, write and execute permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permissions {
    /// Loads allowed.
    pub read: bool,
    /// Stores allowed.
    pub write: bool,
    /// Instruction fetches allowed.
    pub execute: bool,
}

impl Permissions {
    /// Parses `"rwx"`-style text: any subset of `r`, `w`, `x`, each at most once.
    pub fn parse(text: &str) -> Option<Permissions> {
        let mut perms = Permissions {
            read: false,
            write: false,
            execute: false,
        };
        for c in text.chars() {
            let slot = match c {
                'r' => &mut perms.read,
                'w' => &mut perms.write,
                'x' => &mut perms.execute,
                _ => return None,
            };
            if *slot {
                return None;
            }
            *slot = true;
        }
        Some(perms)
    }

    /// The canonical text form.
    pub fn as_str(&self) -> &'static str {
        match (self.read, self.write, self.execute) {
            (false, false, false) => "",
            (true, false, false) => "r",
            (false, true, false) => "w",
            (false, false, true) => "x",
            (true, true, false) => "rw",
            (true, false, true) => "rx",
            (false, true, true) => "wx",
            (true, true, true) => "rwx",
        }
    }
}

impl Serialize for Permissions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Permissions;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("permissions made of the letters r, w, x")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Permissions, E> {
                Permissions::parse(v)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// What happens when a partition touches memory it does not have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultPolicy {
    /// Log the fault and stop the partition; the others keep running.
    #[default]
    Stop,
    /// Log the fault and inject a synchronous external abort into the
    /// guest, which may handle it.
    Inject,
}
