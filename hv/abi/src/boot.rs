//! What the UEFI loader hands to the hypervisor, and where it finds it.
//!
//! The loader reads files from the EFI system partition (ESP), copies
//! everything the hypervisor needs after `ExitBootServices` into memory of
//! the types below, and enters the hypervisor with `x0` (arm64) or `rdi`
//! (x86_64) pointing at a [`BootInfo`]. Memory of those types never becomes
//! guest memory.

/// Path of the hypervisor ELF image on the ESP.
pub const HV_IMAGE_PATH: &str = "\\bulkhead\\hv.elf";
/// Path of the compiled configuration blob on the ESP.
pub const CONFIG_PATH: &str = "\\bulkhead\\config.bin";
/// Path of the optional boot-argument text file on the ESP.
pub const BOOTARGS_PATH: &str = "\\bulkhead\\bootargs.txt";
/// Folder on the ESP that holds guest images, named as in the configuration.
pub const IMAGE_DIR: &str = "\\bulkhead\\images";

/// UEFI memory type (OS-defined range) of memory owned by the hypervisor:
/// its image, stack, heap pool, and the boot information itself.
pub const MEMORY_TYPE_HYPERVISOR: u32 = 0x8000_0001;
/// UEFI memory type of the guest images the loader read from the ESP. The
/// hypervisor keeps them to restart partitions from; guests never get them.
pub const MEMORY_TYPE_GUEST_IMAGE: u32 = 0x8000_0002;

/// Bytes of hypervisor-owned memory the loader reserves beyond the image for
/// the hypervisor's stack and early heap (its own page tables live there).
pub const HV_POOL_SIZE: u64 = 16 << 20;

/// "BULKHEAD" in ASCII, little-endian.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"BULKHEAD");
/// Layout version of [`BootInfo`]; bumped on every incompatible change.
pub const BOOT_INFO_VERSION: u32 = 1;

/// Most modules (guest images) one boot can carry.
pub const MAX_MODULES: usize = 16;
/// Longest module name, in bytes.
pub const MODULE_NAME_LEN: usize = 64;

/// A range of host-physical memory. `size == 0` means absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PhysRange {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl PhysRange {
    /// An absent range.
    pub const EMPTY: PhysRange = PhysRange { base: 0, size: 0 };

    /// Whether the range is absent.
    pub const fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// One past the last byte, or `None` if that overflows.
    pub const fn end(&self) -> Option<u64> {
        self.base.checked_add(self.size)
    }

    /// Whether the two ranges share a byte.
    pub fn overlaps(&self, other: &PhysRange) -> bool {
        match (self.end(), other.end()) {
            (Some(a_end), Some(b_end)) => {
                !self.is_empty() && !other.is_empty() && self.base < b_end && other.base < a_end
            }
            _ => true,
        }
    }
}

/// The firmware memory map as `GetMemoryMap` returned it at `ExitBootServices`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MemoryMapInfo {
    /// Where the descriptors are.
    pub buffer: PhysRange,
    /// Size of one descriptor (at least 40 bytes, often 48).
    pub descriptor_size: u64,
    /// `EFI_MEMORY_DESCRIPTOR_VERSION`.
    pub descriptor_version: u32,
    /// Padding, zero.
    pub reserved: u32,
}

/// One file the loader read for the hypervisor (a guest image).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Module {
    /// File name under [`IMAGE_DIR`], UTF-8, zero-padded.
    pub name: [u8; MODULE_NAME_LEN],
    /// Where its bytes are.
    pub data: PhysRange,
}

impl Module {
    /// An unused slot.
    pub const EMPTY: Module = Module { name: [0; MODULE_NAME_LEN], data: PhysRange::EMPTY };

    /// The name, if it is valid UTF-8.
    pub fn name(&self) -> Option<&str> {
        let len = self.name.iter().position(|&b| b == 0).unwrap_or(MODULE_NAME_LEN);
        core::str::from_utf8(&self.name[..len]).ok()
    }

    /// A module slot named `name`, or `None` if the name does not fit.
    pub fn new(name: &str, data: PhysRange) -> Option<Module> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= MODULE_NAME_LEN {
            return None;
        }
        let mut module = Module { name: [0; MODULE_NAME_LEN], data };
        module.name[..bytes.len()].copy_from_slice(bytes);
        Some(module)
    }
}

/// Everything the hypervisor learns from the loader.
///
/// All addresses are host-physical; the loader leaves the CPU with an
/// identity map, so they are also the addresses the hypervisor starts with.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`].
    pub magic: u64,
    /// [`BOOT_INFO_VERSION`].
    pub version: u32,
    /// Number of used entries in `modules`.
    pub module_count: u32,
    /// The hypervisor's loaded image (all segments, including `.bss`). Its
    /// memory type is `EfiLoaderCode` (firmware NX policies leave no other
    /// type executable), so this field is what marks it as the hypervisor's.
    pub hv_image: PhysRange,
    /// Hypervisor-owned memory for stack and early heap, [`HV_POOL_SIZE`] bytes.
    pub hv_pool: PhysRange,
    /// The firmware memory map.
    pub memory_map: MemoryMapInfo,
    /// A copy of the flattened device tree, if the firmware had one.
    pub device_tree: PhysRange,
    /// The ACPI RSDP (version 2+), or 0 if the firmware had none.
    pub acpi_rsdp: u64,
    /// The compiled configuration blob.
    pub config: PhysRange,
    /// The boot-argument text (UTF-8), or empty.
    pub bootargs: PhysRange,
    /// Guest images.
    pub modules: [Module; MAX_MODULES],
}

impl BootInfo {
    /// A boot information block with nothing filled in but magic and version.
    pub const fn new() -> BootInfo {
        BootInfo {
            magic: BOOT_INFO_MAGIC,
            version: BOOT_INFO_VERSION,
            module_count: 0,
            hv_image: PhysRange::EMPTY,
            hv_pool: PhysRange::EMPTY,
            memory_map: MemoryMapInfo {
                buffer: PhysRange::EMPTY,
                descriptor_size: 0,
                descriptor_version: 0,
                reserved: 0,
            },
            device_tree: PhysRange::EMPTY,
            acpi_rsdp: 0,
            config: PhysRange::EMPTY,
            bootargs: PhysRange::EMPTY,
            modules: [Module::EMPTY; MAX_MODULES],
        }
    }

    /// Whether magic and version match what this build expects.
    pub fn is_compatible(&self) -> bool {
        self.magic == BOOT_INFO_MAGIC && self.version == BOOT_INFO_VERSION
    }

    /// The used module slots (a bad count is clamped to the array, and the
    /// hypervisor rejects such a block in its own checks).
    pub fn modules(&self) -> &[Module] {
        let count = (self.module_count as usize).min(MAX_MODULES);
        &self.modules[..count]
    }

    /// Appends a module; `false` when all slots are used.
    pub fn push_module(&mut self, module: Module) -> bool {
        let index = self.module_count as usize;
        if index >= MAX_MODULES {
            return false;
        }
        self.modules[index] = module;
        self.module_count += 1;
        true
    }

    /// The module called `name`.
    pub fn module(&self, name: &str) -> Option<&Module> {
        self.modules().iter().find(|m| m.name() == Some(name))
    }
}

impl Default for BootInfo {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_round_trip_and_overlong_names_are_refused() {
        let m = Module::new("guest.bin", PhysRange { base: 0x1000, size: 10 }).unwrap();
        assert_eq!(m.name(), Some("guest.bin"));
        assert!(Module::new("", PhysRange::EMPTY).is_none());
        let long = "x".repeat(MODULE_NAME_LEN);
        assert!(Module::new(&long, PhysRange::EMPTY).is_none());
    }

    #[test]
    fn boot_info_finds_modules_and_refuses_the_seventeenth() {
        let mut info = BootInfo::new();
        assert!(info.is_compatible());
        for i in 0..MAX_MODULES {
            let name = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p"][i];
            assert!(info.push_module(Module::new(name, PhysRange { base: i as u64, size: 1 }).unwrap()));
        }
        assert!(!info.push_module(Module::new("q", PhysRange::EMPTY).unwrap()));
        assert_eq!(info.module("c").unwrap().data.base, 2);
        assert!(info.module("q").is_none());
    }

    #[test]
    fn ranges_overlap_only_when_they_share_a_byte() {
        let a = PhysRange { base: 0x1000, size: 0x1000 };
        assert!(!a.overlaps(&PhysRange { base: 0x2000, size: 0x1000 }));
        assert!(a.overlaps(&PhysRange { base: 0x1fff, size: 1 }));
        assert!(!a.overlaps(&PhysRange::EMPTY));
        assert!(a.overlaps(&PhysRange { base: u64::MAX, size: 2 }), "wrapping ranges overlap everything");
    }
}
