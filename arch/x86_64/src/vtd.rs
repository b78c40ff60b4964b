//! Intel VT-d second-level paging entries: a partition's DMA view, a third
//! format for [`SecondLevelTable`](crate::SecondLevelTable).
//!
//! References are to the Intel VT-d specification rev. 4.1, §9.8
//! "Second-Level Paging Entries" (Tables 9-4..9-9 in older numbering: SL-PML4E,
//! SL-PDPE mapping 1 GiB or referencing a directory, SL-PDE mapping 2 MiB or
//! referencing a table, SL-PTE), §3.6 (second-level translation, large pages
//! as CAP.SLLPS allows) and §3.10 / §6.2 (snoop behaviour):
//!
//! | bit(s) | leaf | non-leaf |
//! |---|---|---|
//! | 0, 1 | read, write | read, write (both set here) |
//! | 6:3 | EMT / IPAT (only with ECAP.MTS in scalable mode; 0 here) | ignored (0) |
//! | 7 | 1 for 2 MiB / 1 GiB leaves; ignored in an SL-PTE | 0 (reserved in an SL-PML4E) |
//! | 11 | SNP: snoop the CPU caches whatever the request says (ECAP.SC) | ignored (0) |
//! | 51:12 | page address (bits below the page size reserved) | next table |
//! | 62 | TM, transient mapping (device-TLB only; 0 here) | ignored |
//!
//! An entry with both R and W clear is not present. DMA has no instruction
//! fetches: [`Access::execute`] is accepted and has no bit (bit 2, X, is
//! ignored by hardware that does not report ECAP.ECS execute support, and
//! Bulkhead never sets it).
//!
//! Snoop policy (DESIGN.md §4: follow each unit's capabilities): where the
//! unit supports snoop control ([`VtdSecondLevel::<true>`], ECAP.SC = 1),
//! write-back RAM leaves set SNP, so a device that issues a no-snoop request
//! still sees what the CPU's caches hold; device memory (peer-to-peer BAR
//! access) and non-cacheable regions do not. Where it does not
//! ([`VtdSecondLevel::<false>`]), bit 11 stays 0 (it is ignored, and
//! setting it would be a reserved-bit error on some implementations).

use crate::{Access, EntryFormat, Level, MemoryType, PageSize, UnsupportedAccess};

/// Bit 0: DMA reads allowed.
pub const READ: u64 = 1 << 0;
/// Bit 1: DMA writes allowed.
pub const WRITE: u64 = 1 << 1;
/// Bit 7 of an SL-PDPE or SL-PDE: the entry maps a 1 GiB or 2 MiB page.
pub const PAGE_SIZE: u64 = 1 << 7;
/// Bit 11 of a leaf: snoop (SNP), with ECAP.SC.
pub const SNOOP: u64 = 1 << 11;
/// Bits 51:12: the physical address of the next table or of the page.
pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Leaf attribute bits (R, W, SNP), validated once per mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VtdAttributes(u64);

impl VtdAttributes {
    /// The leaf attributes for `memory` with `access`; `snoop_control` says
    /// whether the unit implements SNP (ECAP.SC).
    ///
    /// # Errors
    /// [`UnsupportedAccess`] unless reading is allowed (the common rule of
    /// every second-level format here, [`Access::validate`]).
    pub const fn new(memory: MemoryType, access: Access, snoop_control: bool) -> Result<VtdAttributes, UnsupportedAccess> {
        let access = match access.validate() {
            Ok(access) => access,
            Err(error) => return Err(error),
        };
        let mut bits = READ;
        if access.write {
            bits |= WRITE;
        }
        if snoop_control && matches!(memory, MemoryType::NormalWriteBack) {
            bits |= SNOOP;
        }
        Ok(VtdAttributes(bits))
    }

    /// The attribute bits as they appear in a leaf.
    pub const fn bits(self) -> u64 {
        self.0
    }
}

/// A leaf of `size` mapping host-physical `hpa`, aligned to `size`.
///
/// # Panics
/// If `hpa` is not aligned to `size` or lies beyond bit 51 (the table builder
/// checks both first).
pub const fn leaf_entry(size: PageSize, hpa: u64, attributes: VtdAttributes) -> u64 {
    assert!(hpa & (size.bytes() - 1) == 0 && hpa & !ADDRESS_MASK == 0);
    let page_size = match size {
        PageSize::Size4KiB => 0,
        PageSize::Size2MiB | PageSize::Size1GiB => PAGE_SIZE,
    };
    hpa | page_size | attributes.bits()
}

/// A non-leaf entry referencing the table at `table_pa`, read and write
/// allowed so the leaf alone decides.
///
/// # Panics
/// If `table_pa` is not 4 KiB aligned or lies beyond bit 51.
pub const fn table_entry(table_pa: u64) -> u64 {
    assert!(table_pa & !ADDRESS_MASK == 0);
    table_pa | READ | WRITE
}

/// The VT-d second-level format; `SNOOP_CONTROL` is the unit's ECAP.SC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VtdSecondLevel<const SNOOP_CONTROL: bool>;

impl<const SNOOP_CONTROL: bool> EntryFormat for VtdSecondLevel<SNOOP_CONTROL> {
    type Attributes = VtdAttributes;

    fn attributes(memory: MemoryType, access: Access) -> Result<VtdAttributes, UnsupportedAccess> {
        VtdAttributes::new(memory, access, SNOOP_CONTROL)
    }

    fn make_table_entry(table_pa: u64) -> u64 {
        table_entry(table_pa)
    }

    fn make_leaf_entry(size: PageSize, pa: u64, attributes: VtdAttributes) -> u64 {
        leaf_entry(size, pa, attributes)
    }

    /// §9.8: an entry with R and W both clear is not present.
    fn is_present(entry: u64) -> bool {
        entry & (READ | WRITE) != 0
    }

    fn is_leaf(level: Level, entry: u64) -> bool {
        match level {
            Level::Pml4 => false,
            Level::Pdpt | Level::Pd => entry & PAGE_SIZE != 0,
            Level::Pt => true,
        }
    }

    fn address(level: Level, entry: u64) -> u64 {
        let _ = level;
        entry & ADDRESS_MASK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FrameAllocator, SecondLevelTable, TableOptions};
    use alloc::boxed::Box;
    use alloc::vec::Vec;

    #[test]
    fn leaves_and_tables() {
        let ram = VtdAttributes::new(MemoryType::NormalWriteBack, Access::READ_WRITE, true).unwrap();
        assert_eq!(leaf_entry(PageSize::Size4KiB, 0x1234_5000, ram), 0x1234_5803);
        assert_eq!(leaf_entry(PageSize::Size2MiB, 0x4020_0000, ram), 0x4020_0883);
        // Without snoop control, bit 11 stays clear.
        let plain = VtdAttributes::new(MemoryType::NormalWriteBack, Access::READ_WRITE, false).unwrap();
        assert_eq!(leaf_entry(PageSize::Size1GiB, 0x4000_0000, plain), 0x4000_0083);
        // Device memory (peer-to-peer) is never forced to snoop; read-only has no W.
        let bar = VtdAttributes::new(MemoryType::DeviceNGnRE, Access::READ, true).unwrap();
        assert_eq!(bar.bits(), READ);
        // DMA has no fetches: execute adds nothing.
        let rwx = VtdAttributes::new(MemoryType::NormalWriteBack, Access::READ_WRITE_EXECUTE, false).unwrap();
        assert_eq!(rwx, plain);
        let write_only = Access { read: false, write: true, execute: false };
        assert!(VtdAttributes::new(MemoryType::NormalWriteBack, write_only, true).is_err());
        assert_eq!(table_entry(0x8000), 0x8003);
    }

    struct Frames(Vec<(u64, Box<[u64; 512]>)>);

    impl FrameAllocator for Frames {
        fn allocate_zeroed_frame(&mut self) -> Option<u64> {
            let pa = 0x10_0000 + 0x1000 * self.0.len() as u64;
            self.0.push((pa, Box::new([0; 512])));
            Some(pa)
        }
        fn frame(&self, pa: u64) -> &[u64; 512] {
            &self.0.iter().find(|(a, _)| *a == pa).unwrap().1
        }
        fn frame_mut(&mut self, pa: u64) -> &mut [u64; 512] {
            &mut self.0.iter_mut().find(|(a, _)| *a == pa).unwrap().1
        }
    }

    #[test]
    fn the_generic_builder_makes_vtd_tables() {
        let options = TableOptions { largest_page: PageSize::Size2MiB, host_address_bits: 39 };
        let mut table = SecondLevelTable::<VtdSecondLevel<true>, _>::with_options(Frames(Vec::new()), options).unwrap();
        table.map(0x4000_0000, 0x8000_0000, 0x20_1000, MemoryType::NormalWriteBack, Access::READ_WRITE).unwrap();
        let (hpa, entry, size) = table.lookup(0x4000_0123).unwrap();
        assert_eq!((hpa, size), (0x8000_0123, PageSize::Size2MiB));
        assert_eq!(entry, 0x8000_0000 | PAGE_SIZE | SNOOP | READ | WRITE);
        let (_, tail, size) = table.lookup(0x4020_0000).unwrap();
        assert_eq!((tail, size), (0x8020_0000 | SNOOP | READ | WRITE, PageSize::Size4KiB));
        assert_eq!(table.lookup(0x4020_1000), None);
        // Non-leaf entries carry R and W only.
        let root = table.allocator().frame(table.root_address())[0];
        assert_eq!(root & !ADDRESS_MASK, READ | WRITE);
    }
}
