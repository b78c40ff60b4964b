//! Stage-2 translation tables for a partition.
//!
//! Descriptor bits follow the Arm ARM D8.3 (VMSAv8-64 stage 2 block and page
//! descriptors): MemAttr[3:0] in bits 5:2 (FWB off), S2AP in 7:6, SH in 9:8,
//! AF in 10, XN in 54. Table frames come from the global allocator and are
//! addressed through the hypervisor's identity map.

use aarch64_paging::descriptor::{PhysicalAddress, Stage2Attributes};
use aarch64_paging::idmap::IdTranslation;
use aarch64_paging::paging::{Constraints, MemoryRegion, PageTable, Stage2, Translation};
use aarch64_paging::{MapError, Mapping};
use core::ptr::NonNull;

/// Smallest IPA space a partition gets (4 GiB).
pub const MIN_IPA_BITS: u32 = 32;
/// Largest IPA space supported: 48 bits (no FEAT_LPA2 52-bit tables).
pub const MAX_IPA_BITS: u32 = 48;

/// The geometry of a partition's stage 2: IPA size and starting level.
///
/// With a 4 KiB granule a level-1 root covers 39 bits and a level-0 root 48
/// (Arm ARM D8.2.6, "Translation granule 4KB" stage-2 start levels);
/// concatenated root tables are not used, so an IPA space of 32..=39 bits
/// starts at level 1 and one of 40..=48 bits at level 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2Geometry {
    /// IPA bits (`64 - VTCR_EL2.T0SZ`).
    pub ipa_bits: u32,
    /// Starting level: 0 or 1.
    pub root_level: usize,
}

/// Why no stage-2 geometry fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeometryError {
    /// The partition's highest IPA needs more bits than the CPU's physical
    /// address range (`ID_AA64MMFR0_EL1.PARange`) or than 48.
    IpaTooLarge {
        /// Bits the partition needs.
        needed: u32,
        /// Bits available.
        available: u32,
    },
}

impl Stage2Geometry {
    /// The smallest geometry that holds IPAs below `ipa_limit` (one past the
    /// highest IPA), on a CPU with `pa_bits` physical address bits.
    ///
    /// # Errors
    /// [`GeometryError::IpaTooLarge`]: nothing is silently truncated.
    pub fn for_limit(ipa_limit: u64, pa_bits: u32) -> Result<Stage2Geometry, GeometryError> {
        let needed = (64 - ipa_limit.saturating_sub(1).leading_zeros()).max(MIN_IPA_BITS);
        let available = pa_bits.min(MAX_IPA_BITS);
        if needed > available {
            return Err(GeometryError::IpaTooLarge { needed, available });
        }
        Ok(Stage2Geometry { ipa_bits: needed, root_level: if needed <= 39 { 1 } else { 0 } })
    }

    /// One past the highest IPA.
    pub const fn ipa_limit(&self) -> u64 {
        1 << self.ipa_bits
    }
}

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

/// Table frames for stage-2 tables: from the global allocator, addressed
/// through the hypervisor's identity map, and counted.
#[derive(Debug, Default)]
pub struct TableFrames {
    count: usize,
    inner: IdTranslation<Stage2Attributes>,
}

impl Translation<Stage2Attributes> for TableFrames {
    fn allocate_table(&mut self) -> (NonNull<PageTable<Stage2Attributes>>, PhysicalAddress) {
        self.count += 1;
        self.inner.allocate_table()
    }

    unsafe fn deallocate_table(&mut self, page_table: NonNull<PageTable<Stage2Attributes>>) {
        self.count -= 1;
        // SAFETY: forwarded with the caller's guarantee that `allocate_table`
        // of this same translation produced the table.
        unsafe { self.inner.deallocate_table(page_table) }
    }

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<Stage2Attributes>> {
        self.inner.physical_to_virtual(pa)
    }
}

/// Why a stage-2 change was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage2Error {
    /// The range lies (partly) outside the partition's IPA space.
    OutsideIpaSpace {
        /// First IPA of the range.
        ipa: u64,
        /// One past the highest IPA of the space.
        limit: u64,
    },
    /// Address or size not page aligned, an empty range, or one that wraps.
    Misaligned {
        /// First IPA of the range.
        ipa: u64,
    },
    /// What `aarch64-paging` refused (e.g. a break-before-make violation).
    Table(MapError),
}

impl From<MapError> for Stage2Error {
    fn from(e: MapError) -> Self {
        Stage2Error::Table(e)
    }
}

/// One partition's stage-2 tables.
///
/// While the partition runs (after [`Stage2Table::mark_live`]), changes go
/// through break-before-make ([`Stage2Table::remap`]) with TLB maintenance
/// by IPA for this table's VMID; they must be made on a CPU whose
/// `VTTBR_EL2` holds this table, i.e. while handling the partition's exit.
pub struct Stage2Table {
    mapping: Mapping<TableFrames, Stage2>,
    geometry: Stage2Geometry,
}

impl Stage2Table {
    /// An empty table for `geometry`: every IPA faults.
    pub fn new(geometry: Stage2Geometry) -> Stage2Table {
        Stage2Table { mapping: Mapping::new(TableFrames::default(), geometry.root_level, Stage2), geometry }
    }

    /// The geometry.
    pub fn geometry(&self) -> Stage2Geometry {
        self.geometry
    }

    fn region(&self, ipa: u64, size: u64) -> Result<MemoryRegion, Stage2Error> {
        let end = ipa.checked_add(size).ok_or(Stage2Error::Misaligned { ipa })?;
        if !ipa.is_multiple_of(4096) || !size.is_multiple_of(4096) || size == 0 {
            return Err(Stage2Error::Misaligned { ipa });
        }
        if end > self.geometry.ipa_limit() {
            return Err(Stage2Error::OutsideIpaSpace { ipa, limit: self.geometry.ipa_limit() });
        }
        Ok(MemoryRegion::new(ipa as usize, end as usize))
    }

    /// Maps IPAs `[ipa, ipa + size)` to host-physical `[pa, pa + size)`,
    /// using 2 MiB and 1 GiB blocks wherever alignment allows.
    ///
    /// # Errors
    /// See [`Stage2Error`].
    pub fn map(&mut self, ipa: u64, pa: u64, size: u64, memory: S2MemoryType, access: S2Access) -> Result<(), Stage2Error> {
        let region = self.region(ipa, size)?;
        self.mapping.map_range(&region, PhysicalAddress(pa as usize), attributes(memory, access), Constraints::empty())?;
        Ok(())
    }

    /// Like [`Stage2Table::map`] but with 4 KiB pages only, for ranges whose
    /// pages will later change one at a time (write-protect overlays).
    ///
    /// # Errors
    /// See [`Stage2Error`].
    pub fn map_pages(&mut self, ipa: u64, pa: u64, size: u64, memory: S2MemoryType, access: S2Access) -> Result<(), Stage2Error> {
        let region = self.region(ipa, size)?;
        self.mapping.map_range(&region, PhysicalAddress(pa as usize), attributes(memory, access), Constraints::NO_BLOCK_MAPPINGS)?;
        Ok(())
    }

    /// Removes the mappings of `[ipa, ipa + size)`: the entries become
    /// invalid (a block only partly inside is split first). No TLB
    /// maintenance: the caller invalidates whatever walks this table (the
    /// SMMU, for a DMA table) once this returns; a table a CPU runs on is
    /// changed with [`Stage2Table::remap`] instead.
    ///
    /// # Errors
    /// See [`Stage2Error`]; a live table refuses (break-before-make).
    pub fn unmap(&mut self, ipa: u64, size: u64) -> Result<(), Stage2Error> {
        let region = self.region(ipa, size)?;
        if self.mapping.active() {
            return Err(Stage2Error::Table(MapError::BreakBeforeMakeViolation(region)));
        }
        self.mapping.map_range(&region, PhysicalAddress(0), Stage2Attributes::empty(), Constraints::empty())?;
        Ok(())
    }

    /// Calls `leaf(ipa, bytes)` for each valid leaf (page or block) that
    /// maps part of `[ipa, ipa + size)`, with the leaf's own first IPA and
    /// size; returns how many there were.
    ///
    /// # Errors
    /// See [`Stage2Error`].
    pub fn for_each_leaf(&self, ipa: u64, size: u64, mut leaf: impl FnMut(u64, u64)) -> Result<usize, Stage2Error> {
        let region = self.region(ipa, size)?;
        let mut count = 0;
        self.mapping.walk_range(&region, &mut |range, descriptor, level| {
            if descriptor.is_valid() && (level == 3 || !descriptor.flags().contains(Stage2Attributes::TABLE_OR_PAGE)) {
                let bytes = 0x1000u64 << (9 * (3 - level as u64));
                leaf(range.start().0 as u64 & !(bytes - 1), bytes);
                count += 1;
            }
            Ok(())
        })?;
        Ok(count)
    }

    /// Records that a CPU runs on this table: later changes use
    /// break-before-make and TLB maintenance.
    pub fn mark_live(&mut self) {
        self.mapping.mark_active();
    }

    /// Changes the mapping of a range whose leaves are no larger than the
    /// range: break (invalidate the entries, TLBI by IPA, then the combined
    /// stage-1+2 entries of this VMID), then make.
    ///
    /// # Errors
    /// See [`Stage2Error`].
    pub fn remap(&mut self, ipa: u64, pa: u64, size: u64, memory: S2MemoryType, access: S2Access) -> Result<(), Stage2Error> {
        let region = self.region(ipa, size)?;
        if self.mapping.active() {
            // Break: clear VALID; the library issues TLBI IPAS2E1IS per entry.
            self.mapping.modify_range(&region, &|_, descriptor| {
                descriptor.modify_flags(Stage2Attributes::empty(), Stage2Attributes::VALID)
            })?;
            invalidate_stage1_of_current_vmid();
        }
        self.mapping.map_range(&region, PhysicalAddress(pa as usize), attributes(memory, access), Constraints::empty())?;
        Ok(())
    }

    /// The root table's physical address, for `VTTBR_EL2`.
    pub fn root_address(&self) -> u64 {
        self.mapping.root_address().0 as u64
    }

    /// Number of table pages the table uses, root included.
    pub fn table_pages(&self) -> usize {
        // The root is allocated through `allocate_table` too.
        self.mapping.translation().count
    }

    /// The host-physical address and attributes an IPA maps to, if mapped.
    pub fn lookup(&self, ipa: u64) -> Option<(u64, Stage2Attributes)> {
        self.leaf(ipa).map(|(pa, attrs, _)| (pa, attrs))
    }

    /// Whether `ipa` is mapped with write permission (S2AP bit 1).
    pub fn is_writable(&self, ipa: u64) -> bool {
        self.lookup(ipa).is_some_and(|(_, attrs)| attrs.contains(Stage2Attributes::S2AP_ACCESS_WO))
    }

    /// The level (1, 2 or 3) of the leaf that maps `ipa`, if mapped.
    pub fn leaf_level(&self, ipa: u64) -> Option<usize> {
        self.leaf(ipa).map(|(_, _, level)| level)
    }

    fn leaf(&self, ipa: u64) -> Option<(u64, Stage2Attributes, usize)> {
        if ipa >= self.geometry.ipa_limit() {
            return None;
        }
        let page = ipa & !0xfff;
        let region = MemoryRegion::new(page as usize, page as usize + 0x1000);
        let mut found = None;
        self.mapping
            .walk_range(&region, &mut |_, descriptor, level| {
                if descriptor.is_valid() && (level == 3 || !descriptor.flags().contains(Stage2Attributes::TABLE_OR_PAGE)) {
                    let block_size = 0x1000u64 << (9 * (3 - level as u64));
                    let offset = ipa & (block_size - 1);
                    found = Some((descriptor.output_address().0 as u64 + offset, descriptor.flags(), level));
                }
                Ok(())
            })
            .ok()?;
        found
    }
}

impl Drop for Stage2Table {
    fn drop(&mut self) {
        // The owner drops a table only once no CPU runs on it (a stopped
        // partition's); the library insists the table be marked so.
        if self.mapping.active() {
            self.mapping.mark_inactive();
        }
    }
}

/// After stage-2 entries were invalidated by IPA: drop cached stage-1+2
/// translations of the current VMID and wait for completion (Arm ARM
/// D8.16.5, TLB maintenance after stage-2 changes).
fn invalidate_stage1_of_current_vmid() {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    // SAFETY: TLB maintenance only drops cached translations.
    unsafe {
        core::arch::asm!("dsb ish", "tlbi vmalle1is", "dsb ish", "isb", options(nostack, preserves_flags));
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

    fn geometry(bits: u32) -> Stage2Geometry {
        Stage2Geometry::for_limit(1 << bits, 48).unwrap()
    }

    #[test]
    fn geometry_follows_the_highest_ipa_and_the_cpu() {
        assert_eq!(Stage2Geometry::for_limit(0x4100_0000, 48), Ok(Stage2Geometry { ipa_bits: 32, root_level: 1 }));
        assert_eq!(Stage2Geometry::for_limit(0x1_0000_0001, 48), Ok(Stage2Geometry { ipa_bits: 33, root_level: 1 }));
        assert_eq!(Stage2Geometry::for_limit(1 << 39, 48), Ok(Stage2Geometry { ipa_bits: 39, root_level: 1 }));
        assert_eq!(Stage2Geometry::for_limit((1 << 39) + 1, 48), Ok(Stage2Geometry { ipa_bits: 40, root_level: 0 }));
        assert_eq!(
            Stage2Geometry::for_limit((1 << 40) + 1, 40),
            Err(GeometryError::IpaTooLarge { needed: 41, available: 40 })
        );
        assert_eq!(Stage2Geometry::for_limit(u64::MAX, 52), Err(GeometryError::IpaTooLarge { needed: 64, available: 48 }));
    }

    #[test]
    fn a_gib_aligned_gib_costs_at_most_two_table_pages() {
        let mut table = Stage2Table::new(geometry(39));
        table.map(0x4000_0000, 0x8000_0000, 1 << 30, S2MemoryType::NormalWriteBack, RWX).unwrap();
        assert_eq!(table.table_pages(), 1, "a level-1 root holds the 1 GiB block itself");
        assert_eq!(table.leaf_level(0x4000_0000), Some(1));
        let mut table = Stage2Table::new(geometry(40));
        table.map(0x4000_0000, 0x8000_0000, 1 << 30, S2MemoryType::NormalWriteBack, RWX).unwrap();
        assert_eq!(table.table_pages(), 2, "level-0 root plus one level-1 table");
        assert_eq!(table.leaf_level(0x7fff_ffff), Some(1));
    }

    #[test]
    fn blocks_are_used_where_alignment_allows() {
        let mut table = Stage2Table::new(geometry(39));
        // 2 MiB-aligned 6 MiB, then 2 MiB at a host address that is only 4 KiB aligned.
        table.map(0x4000_0000, 0x8000_0000, 0x60_0000, S2MemoryType::NormalWriteBack, RWX).unwrap();
        table.map(0x4060_0000, 0x9000_1000, 0x20_0000, S2MemoryType::NormalWriteBack, RWX).unwrap();
        assert_eq!(table.leaf_level(0x4000_0000), Some(2));
        assert_eq!(table.leaf_level(0x405f_ffff), Some(2));
        assert_eq!(table.leaf_level(0x4060_0000), Some(3));
        assert_eq!(table.lookup(0x4060_0123).unwrap().0, 0x9000_1123);
        assert_eq!(table.table_pages(), 3, "root, one level-2 and one level-3 table");
        table.map_pages(0x8000_0000, 0xa000_0000, 0x20_0000, S2MemoryType::NormalNonCacheable, RWX).unwrap();
        assert_eq!(table.leaf_level(0x8000_0000), Some(3), "map_pages never uses blocks");
    }

    #[test]
    fn attributes_and_permissions_reach_the_descriptors() {
        let mut table = Stage2Table::new(geometry(39));
        let ro = S2Access { read: true, write: false, execute: false };
        table.map(0x1000_0000, 0x1000_0000, 0x1000, S2MemoryType::DeviceNGnRE, ro).unwrap();
        let (_, attrs) = table.lookup(0x1000_0000).unwrap();
        assert_eq!((attrs.bits() >> 2) & 0xf, 0b0001);
        assert_eq!((attrs.bits() >> 6) & 0b11, 0b01);
        assert!(attrs.contains(Stage2Attributes::XN | Stage2Attributes::ACCESS_FLAG));
    }

    #[test]
    fn ranges_outside_the_ipa_space_or_misaligned_are_refused() {
        let mut table = Stage2Table::new(geometry(32));
        assert_eq!(
            table.map(0xffff_f000, 0, 0x2000, S2MemoryType::NormalWriteBack, RWX),
            Err(Stage2Error::OutsideIpaSpace { ipa: 0xffff_f000, limit: 1 << 32 })
        );
        assert_eq!(table.map(0x1001, 0, 0x1000, S2MemoryType::NormalWriteBack, RWX), Err(Stage2Error::Misaligned { ipa: 0x1001 }));
        assert_eq!(table.map(0x1000, 0, 0, S2MemoryType::NormalWriteBack, RWX), Err(Stage2Error::Misaligned { ipa: 0x1000 }));
        assert!(table.lookup(1 << 33).is_none());
    }

    #[test]
    fn live_changes_break_before_make() {
        let mut table = Stage2Table::new(geometry(39));
        table.map_pages(0x4000_0000, 0x8000_0000, 0x4000, S2MemoryType::NormalWriteBack, RWX).unwrap();
        table.mark_live();
        assert!(matches!(
            table.map(0x4000_0000, 0x9000_0000, 0x1000, S2MemoryType::NormalWriteBack, RWX),
            Err(Stage2Error::Table(MapError::BreakBeforeMakeViolation(_)))
        ), "changing a live entry's output address in place is refused");
        let ro = S2Access { read: true, write: false, execute: true };
        table.remap(0x4000_1000, 0x9000_0000, 0x1000, S2MemoryType::NormalNonCacheable, ro).unwrap();
        let (pa, attrs) = table.lookup(0x4000_1010).unwrap();
        assert_eq!(pa, 0x9000_0010);
        assert_eq!((attrs.bits() >> 6) & 0b11, 0b01);
        assert_eq!((attrs.bits() >> 2) & 0xf, 0b0101);
        assert_eq!(table.lookup(0x4000_0010).unwrap().0, 0x8000_0010, "neighbours untouched");
    }

    #[test]
    fn unmapping_invalidates_exactly_the_range_and_leaves_are_listed() {
        let mut table = Stage2Table::new(geometry(39));
        table.map(0x4000_0000, 0x8000_0000, 0x40_0000, S2MemoryType::NormalWriteBack, RWX).unwrap();
        table.map(0x5000_0000, 0x9000_0000, 0x3000, S2MemoryType::DeviceNGnRE, RWX).unwrap();
        let mut leaves = leaves_of(&table, 0x4000_0000, 0x40_0000);
        assert_eq!(leaves, [(0x4000_0000, 0x20_0000), (0x4020_0000, 0x20_0000)]);
        leaves = leaves_of(&table, 0x5000_0000, 0x3000);
        assert_eq!(leaves, [(0x5000_0000, 0x1000), (0x5000_1000, 0x1000), (0x5000_2000, 0x1000)]);
        table.unmap(0x4020_0000, 0x20_0000).unwrap();
        assert!(table.lookup(0x4020_0000).is_none());
        assert_eq!(table.lookup(0x401f_f000).unwrap().0, 0x801f_f000, "the other block stays");
        table.unmap(0x5000_1000, 0x1000).unwrap();
        assert!(table.lookup(0x5000_1000).is_none());
        assert!(table.lookup(0x5000_2000).is_some());
        assert_eq!(table.for_each_leaf(0x4020_0000, 0x20_0000, |_, _| ()), Ok(0));
        table.mark_live();
        assert!(matches!(table.unmap(0x5000_0000, 0x1000), Err(Stage2Error::Table(MapError::BreakBeforeMakeViolation(_)))));
    }

    fn leaves_of(table: &Stage2Table, ipa: u64, size: u64) -> alloc::vec::Vec<(u64, u64)> {
        let mut list = alloc::vec::Vec::new();
        table.for_each_leaf(ipa, size, |ipa, bytes| list.push((ipa, bytes))).unwrap();
        list
    }

    #[test]
    fn maps_and_looks_up() {
        let mut table = Stage2Table::new(geometry(39));
        table.map(0x4000_0000, 0x8020_0000, 0x40_0000, S2MemoryType::NormalWriteBack, RWX).unwrap();
        let (pa, attrs) = table.lookup(0x4012_3456).unwrap();
        assert_eq!(pa, 0x8032_3456);
        assert!(attrs.contains(Stage2Attributes::S2AP_ACCESS_RW));
        assert!(table.lookup(0x4040_0000).is_none());
        assert!(table.lookup(0x1_0000_0000).is_none());
        assert!(table.map(1 << 39, 0, 0x1000, S2MemoryType::NormalWriteBack, RWX).is_err());
    }
}
