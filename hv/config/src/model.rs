//! The configuration data model.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// A whole machine's configuration: the platform and its partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The partitions, started in this order.
    #[serde(rename = "partition", default)]
    pub partitions: Vec<Partition>,
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
}

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
    /// Guest-physical entry point; defaults to `load`.
    #[serde(default)]
    pub entry: Option<u64>,
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
}

fn default_perms() -> Permissions {
    Permissions { read: true, write: true, execute: true }
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

/// The memory attribute of a mapping (DESIGN.md §4).
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
        let mut perms = Permissions { read: false, write: false, execute: false };
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
                Permissions::parse(v).ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
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
}
