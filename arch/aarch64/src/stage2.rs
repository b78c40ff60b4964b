//! Stage-2 translation tables for a partition.
//!
//! Descriptor bits follow the Arm ARM D8.3 (VMSAv8-64 stage 2 block and page
//! descriptors): MemAttr[3:0] in bits 5:2 (FWB off), S2AP in 7:6, SH in 9:8,
//! AF in 10, XN in 54. Table frames come from the global allocator and are
//! addressed through the hypervisor's identity map.

use aarch64_paging::idmap::IdTranslation;
use aarch64_paging::descriptor::{PhysicalAddress, Stage2Attributes};
use aarch64_paging::paging::{Constraints, MemoryRegion, Stage2};
use aarch64_paging::{MapError, Mapping};

/// Number of IPA bits a partition gets: a 39-bit (512 GiB) space fits one
/// level-1 root table.
pub const IPA_BITS: u32 = 39;

/// The memory type of a stage-2 mapping (DESIGN.md §4, MemAttr with FWB off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S2MemoryType {
    /// MemAttr 0b1111: Normal, outer and inner write-back.
    NormalWriteBack,
    /// MemAttr 0b0101: Normal, outer and inner non-cacheable.
    NormalNonCacheable,
    /// MemAttr 0b0001: Device-nGnRE.
    DeviceNGnRE,
    /// MemAttr 0b0000: Device-nGnRnE.
    DeviceNGnRnE,
}

/// Access rights of a stage-2 mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct S2Access {
    /// Loads allowed.
    pub read: bool,
    /// Stores allowed.
    pub write: bool,
    /// Instruction fetches allowed.
    pub execute: bool,
}

/// The descriptor attribute bits for a mapping of `memory` with `access`.
pub fn attributes(memory: S2MemoryType, access: S2Access) -> Stage2Attributes {
    let mut attrs = Stage2Attributes::VALID | Stage2Attributes::ACCESS_FLAG;
    attrs |= match memory {
        S2MemoryType::NormalWriteBack => {
            Stage2Attributes::MEMATTR_NORMAL_OUTER_WB | Stage2Attributes::MEMATTR_NORMAL_INNER_WB | Stage2Attributes::SH_INNER
        }
        S2MemoryType::NormalNonCacheable => {
            Stage2Attributes::MEMATTR_NORMAL_OUTER_NC | Stage2Attributes::MEMATTR_NORMAL_INNER_NC | Stage2Attributes::SH_INNER
        }
        S2MemoryType::DeviceNGnRE => Stage2Attributes::MEMATTR_DEVICE_nGnRE,
        S2MemoryType::DeviceNGnRnE => Stage2Attributes::MEMATTR_DEVICE_nGnRnE,
    };
    attrs |= match (access.read, access.write) {
        (true, true) => Stage2Attributes::S2AP_ACCESS_RW,
        (true, false) => Stage2Attributes::S2AP_ACCESS_RO,
        (false, true) => Stage2Attributes::S2AP_ACCESS_WO,
        (false, false) => Stage2Attributes::S2AP_ACCESS_NONE,
    };
    if !access.execute || matches!(memory, S2MemoryType::DeviceNGnRE | S2MemoryType::DeviceNGnRnE) {
        attrs |= Stage2Attributes::XN;
    }
    attrs
}

/// One partition's stage-2 tables.
pub struct Stage2Table {
    mapping: Mapping<IdTranslation<Stage2Attributes>, Stage2>,
}

impl Default for Stage2Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Stage2Table {
    /// An empty table: every IPA faults.
    pub fn new() -> Stage2Table {
        Stage2Table { mapping: Mapping::new(IdTranslation::new(), 1, Stage2) }
    }

    /// Maps IPAs `[ipa, ipa + size)` to host-physical `[pa, pa + size)`,
    /// using blocks wherever alignment allows.
    ///
    /// # Errors
    /// An IPA beyond [`IPA_BITS`], or a change that breaks break-before-make.
    pub fn map(&mut self, ipa: u64, pa: u64, size: u64, memory: S2MemoryType, access: S2Access) -> Result<(), MapError> {
        let region = MemoryRegion::new(ipa as usize, (ipa + size) as usize);
        self.mapping.map_range(&region, PhysicalAddress(pa as usize), attributes(memory, access), Constraints::empty())
    }

    /// The root table's physical address, for `VTTBR_EL2`.
    pub fn root_address(&self) -> u64 {
        self.mapping.root_address().0 as u64
    }

    /// The host-physical address and attributes an IPA maps to, if mapped.
    pub fn lookup(&self, ipa: u64) -> Option<(u64, Stage2Attributes)> {
        let page = ipa & !0xfff;
        let region = MemoryRegion::new(page as usize, page as usize + 0x1000);
        let mut found = None;
        self.mapping
            .walk_range(&region, &mut |_, descriptor, level| {
                if descriptor.is_valid() && (level == 3 || !descriptor.flags().contains(Stage2Attributes::TABLE_OR_PAGE)) {
                    let block_size = 0x1000u64 << (9 * (3 - level as u64));
                    let offset = ipa & (block_size - 1);
                    found = Some((descriptor.output_address().0 as u64 + offset, descriptor.flags()));
                }
                Ok(())
            })
            .ok()?;
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RWX: S2Access = S2Access { read: true, write: true, execute: true };

    #[test]
    fn memattr_matches_design_table() {
        let memattr = |m| (attributes(m, RWX).bits() >> 2) & 0xf;
        assert_eq!(memattr(S2MemoryType::NormalWriteBack), 0b1111);
        assert_eq!(memattr(S2MemoryType::NormalNonCacheable), 0b0101);
        assert_eq!(memattr(S2MemoryType::DeviceNGnRE), 0b0001);
        assert_eq!(memattr(S2MemoryType::DeviceNGnRnE), 0b0000);
        assert!(attributes(S2MemoryType::DeviceNGnRE, RWX).contains(Stage2Attributes::XN));
        let ro = attributes(S2MemoryType::NormalWriteBack, S2Access { read: true, write: false, execute: false });
        assert_eq!((ro.bits() >> 6) & 3, 0b01);
        assert!(ro.contains(Stage2Attributes::XN));
        assert!(ro.contains(Stage2Attributes::ACCESS_FLAG));
    }

    #[test]
    fn maps_and_looks_up() {
        let mut table = Stage2Table::new();
        table.map(0x4000_0000, 0x8020_0000, 0x40_0000, S2MemoryType::NormalWriteBack, RWX).unwrap();
        let (pa, attrs) = table.lookup(0x4012_3456).unwrap();
        assert_eq!(pa, 0x8032_3456);
        assert!(attrs.contains(Stage2Attributes::S2AP_ACCESS_RW));
        assert!(table.lookup(0x4040_0000).is_none());
        assert!(table.lookup(0x1_0000_0000).is_none());
        assert!(table.map(1 << 39, 0, 0x1000, S2MemoryType::NormalWriteBack, RWX).is_err());
    }
}
