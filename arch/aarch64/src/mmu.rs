//! The hypervisor's own EL2 translation tables: an identity map.
//!
//! The firmware's tables live in boot-services memory, which becomes free
//! RAM after `ExitBootServices`; before giving any of it away the hypervisor
//! switches to tables of its own, built in its own pool. The memory-attribute
//! indices match the firmware's (EDK2's `MAIR` layout: 0 Device-nGnRnE,
//! 1 Normal-NC, 2 Normal-WT, 3 Normal-WB), plus index 4 for Device-nGnRE, so
//! that the switch never reinterprets a live mapping's attribute.

use aarch64_paging::idmap::IdMap;
use aarch64_paging::descriptor::El23Attributes;
use aarch64_paging::paging::{El2, MemoryRegion};
use aarch64_paging::MapError;

/// Memory type per `MAIR_EL2` attribute index (Arm ARM D24.2.109):
/// Device-nGnRnE, Normal-NC, Normal-WT, Normal-WB, Device-nGnRE.
const MAIR_ATTRIBUTES: [u8; 5] = [0x00, 0x44, 0xbb, 0xff, 0x04];

/// `MAIR_EL2`: [`MAIR_ATTRIBUTES`], one byte per index.
pub const MAIR_EL2_VALUE: u64 = {
    let mut value = 0u64;
    let mut index = 0;
    while index < MAIR_ATTRIBUTES.len() {
        value |= (MAIR_ATTRIBUTES[index] as u64) << (8 * index);
        index += 1;
    }
    value
};

/// What kind of memory a hypervisor mapping is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum El2Memory {
    /// RAM: Normal, write-back, inner shareable.
    Normal,
    /// MMIO: Device-nGnRE, never executable.
    Device,
}

impl El2Memory {
    fn attributes(self) -> El23Attributes {
        let common = El23Attributes::VALID | El23Attributes::ACCESSED;
        match self {
            El2Memory::Normal => common | El23Attributes::ATTRIBUTE_INDEX_3 | El23Attributes::INNER_SHAREABLE,
            El2Memory::Device => common | El23Attributes::ATTRIBUTE_INDEX_4 | El23Attributes::XN,
        }
    }
}

/// The hypervisor's identity map, 48-bit VA, 4 KiB granule, root at level 0.
pub struct El2IdMap {
    map: IdMap<El2>,
}

impl Default for El2IdMap {
    fn default() -> Self {
        Self::new()
    }
}

impl El2IdMap {
    /// An empty map; tables come from the global allocator.
    pub fn new() -> El2IdMap {
        El2IdMap { map: IdMap::new(0, El2) }
    }

    /// Maps `[base, base + size)` to itself.
    ///
    /// # Errors
    /// Whatever `aarch64-paging` reports: an address beyond 48 bits, or a
    /// change that would break break-before-make rules.
    pub fn map(&mut self, base: u64, size: u64, memory: El2Memory) -> Result<(), MapError> {
        let region = MemoryRegion::new(base as usize, (base + size) as usize);
        self.map.map_range(&region, memory.attributes())
    }

    /// Switches this CPU to the map and keeps the map for the rest of the run.
    ///
    /// # Safety
    /// The map must cover everything the hypervisor touches from now on (its
    /// image, stacks, heap, the memory it hands out, and its devices) with
    /// attributes that agree with the ones in use.
    pub unsafe fn activate(self, pa_bits: u32) {
        let map = alloc::boxed::Box::leak(alloc::boxed::Box::new(self));
        #[cfg(all(target_arch = "aarch64", not(test)))]
        // SAFETY: the MAIR layout matches the firmware's for indices 0..3, the
        // new tables identity-map everything in use (caller's promise), and the
        // map is leaked so it lives forever.
        unsafe {
            use aarch64_cpu::registers::{MAIR_EL2, TCR_EL2, Writeable};
            MAIR_EL2.set(MAIR_EL2_VALUE);
            TCR_EL2.set(tcr_el2(pa_bits));
            core::arch::asm!("isb");
            map.map.activate();
            core::arch::asm!("tlbi alle2", "dsb nsh", "isb");
        }
        #[cfg(not(all(target_arch = "aarch64", not(test))))]
        let _ = (map, pa_bits);
    }
}

/// `TCR_EL2` (E2H = 0 layout, Arm ARM D24.2.180): T0SZ = 16 (48-bit VA),
/// write-back inner-shareable walks, 4 KiB granule, PS from `pa_bits`, RES1
/// bits 23 and 31.
pub const fn tcr_el2(pa_bits: u32) -> u64 {
    let ps = crate::el2::output_size_field(pa_bits);
    16 | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (ps << 16) | (1 << 23) | (1 << 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mair_keeps_the_firmware_layout() {
        assert_eq!(MAIR_EL2_VALUE & 0xffff_ffff, 0xffbb_4400);
        assert_eq!(MAIR_EL2_VALUE >> 32, 0x04);
    }

    #[test]
    fn tcr_is_48_bit_4k() {
        let t = tcr_el2(40);
        assert_eq!(t & 0x3f, 16);
        assert_eq!((t >> 14) & 3, 0);
        assert_eq!((t >> 16) & 7, 2);
    }

    #[test]
    fn maps_ram_and_devices() {
        let mut map = El2IdMap::new();
        map.map(0x4000_0000, 0x4000_0000, El2Memory::Normal).unwrap();
        map.map(0x0900_0000, 0x1000, El2Memory::Device).unwrap();
        assert!(map.map(1 << 48, 0x1000, El2Memory::Normal).is_err());
    }
}
