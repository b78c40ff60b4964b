//! Walking a guest's own page tables: guest-virtual to guest-physical, for
//! fetching the instruction at the guest's RIP when an exit must be
//! decoded (DESIGN.md §6: no decode assists under QEMU TCG).
//!
//! Supported: paging off (addresses are physical), 4-level and 5-level
//! long-mode paging with 4 KiB, 2 MiB and 1 GiB pages. Legacy 32-bit and
//! PAE paging (a guest outside long mode with paging on) are reported as
//! unsupported; the caller then treats the exit per the partition's fault
//! policy. Accessed/dirty bits are not set: only fetches are walked, and a
//! fetch the guest itself already performed set them.

/// Reads the guest's physical memory.
pub trait GuestPhysicalMemory {
    /// The 8-byte little-endian value at guest-physical `gpa` (8-byte
    /// aligned), or `None` where the partition has no readable RAM.
    fn read_u64(&self, gpa: u64) -> Option<u64>;
}

/// The guest's paging mode, from its CR0, CR4 and EFER.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingMode {
    /// CR0.PG.
    pub paging: bool,
    /// EFER.LMA.
    pub long_mode: bool,
    /// CR4.LA57: five levels.
    pub five_level: bool,
}

impl PagingMode {
    /// From the raw control registers.
    pub fn from_registers(cr0: u64, cr4: u64, efer: u64) -> PagingMode {
        PagingMode { paging: cr0 & (1 << 31) != 0, long_mode: efer & (1 << 10) != 0, five_level: cr4 & (1 << 12) != 0 }
    }
}

/// Why a guest-virtual address did not translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// An entry at `level` (4 = PML4, 1 = PT) is not present.
    NotPresent {
        /// Table level of the missing entry.
        level: u8,
    },
    /// A table lies outside the partition's RAM.
    TableUnreadable {
        /// The table entry's guest-physical address.
        gpa: u64,
    },
    /// The address is not canonical for the paging mode.
    NonCanonical,
    /// Legacy or PAE paging outside long mode.
    UnsupportedMode,
    /// A reserved or malformed large-page entry (PS at level 4, or 5).
    Malformed {
        /// Table level of the entry.
        level: u8,
    },
}

const PRESENT: u64 = 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;
/// Bits 51:12 of an entry: the next table or the page.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The leaf a translation ended at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// The guest-physical address `va` translates to.
    pub gpa: u64,
    /// The raw leaf entry (0 with paging off).
    pub entry: u64,
    /// The page size it maps.
    pub size: crate::PageSize,
}

/// Translates `va` through the guest's tables rooted at `cr3`.
///
/// # Errors
/// [`WalkError`] when the address has no translation.
pub fn translate(memory: &dyn GuestPhysicalMemory, cr3: u64, mode: PagingMode, va: u64) -> Result<u64, WalkError> {
    translate_leaf(memory, cr3, mode, va).map(|leaf| leaf.gpa)
}

/// [`translate`], also returning the leaf entry (for its memory-type bits).
///
/// # Errors
/// [`WalkError`] when the address has no translation.
pub fn translate_leaf(memory: &dyn GuestPhysicalMemory, cr3: u64, mode: PagingMode, va: u64) -> Result<Leaf, WalkError> {
    if !mode.paging {
        return Ok(Leaf { gpa: va & 0xffff_ffff, entry: 0, size: crate::PageSize::Size4KiB });
    }
    if !mode.long_mode {
        return Err(WalkError::UnsupportedMode);
    }
    let levels: u8 = if mode.five_level { 5 } else { 4 };
    let va_bits = 12 + 9 * u32::from(levels);
    let sign = (va as i64) >> (va_bits - 1);
    if sign != 0 && sign != -1 {
        return Err(WalkError::NonCanonical);
    }
    let mut table = cr3 & ADDRESS_MASK;
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * u32::from(level - 1);
        let index = (va >> shift) & 511;
        let entry_gpa = table + index * 8;
        let entry = memory.read_u64(entry_gpa).ok_or(WalkError::TableUnreadable { gpa: entry_gpa })?;
        if entry & PRESENT == 0 {
            return Err(WalkError::NotPresent { level });
        }
        let large = entry & PAGE_SIZE_BIT != 0 && level > 1;
        if large {
            if level > 3 {
                return Err(WalkError::Malformed { level });
            }
            let page_mask = (1u64 << shift) - 1;
            let size = if level == 3 { crate::PageSize::Size1GiB } else { crate::PageSize::Size2MiB };
            return Ok(Leaf { gpa: (entry & ADDRESS_MASK & !page_mask) | (va & page_mask), entry, size });
        }
        if level == 1 {
            return Ok(Leaf { gpa: (entry & ADDRESS_MASK) | (va & 0xfff), entry, size: crate::PageSize::Size4KiB });
        }
        table = entry & ADDRESS_MASK;
    }
    Err(WalkError::Malformed { level: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    #[derive(Default)]
    struct Memory(BTreeMap<u64, u64>);

    impl GuestPhysicalMemory for Memory {
        fn read_u64(&self, gpa: u64) -> Option<u64> {
            if gpa >= 0x1000_0000 { None } else { Some(self.0.get(&gpa).copied().unwrap_or(0)) }
        }
    }

    const LONG4: PagingMode = PagingMode { paging: true, long_mode: true, five_level: false };

    /// PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000, PT at 0x4000.
    fn tables() -> Memory {
        let mut m = Memory::default();
        m.0.insert(0x1000, 0x2000 | 3);
        // PDPT[1]: 1 GiB page at 0x4000_0000.
        m.0.insert(0x2008, 0x4000_0000 | 0x83);
        m.0.insert(0x2000, 0x3000 | 3);
        // PD[1]: 2 MiB page at 0x80_0000; PD[2]: the PT.
        m.0.insert(0x3008, 0x80_0000 | 0x83);
        m.0.insert(0x3010, 0x4000 | 3);
        // PT[3]: 4 KiB page at 0x9000.
        m.0.insert(0x4018, 0x9000 | 3);
        // PDPT[3] points at a table beyond RAM.
        m.0.insert(0x2018, 0x2000_0000 | 3);
        m
    }

    #[test]
    fn long_mode_pages_of_every_size() {
        let m = tables();
        assert_eq!(translate(&m, 0x1000, LONG4, 0x4000_1234), Ok(0x4000_1234));
        assert_eq!(translate(&m, 0x1000, LONG4, 0x20_0000 + 0x5678), Ok(0x80_5678));
        assert_eq!(translate(&m, 0x1000, LONG4, 0x40_0000 + 0x3abc), Ok(0x9abc));
        // CR3's low bits (PCD/PWT, PCID) are not part of the address.
        assert_eq!(translate(&m, 0x1018, LONG4, 0x40_3abc), Ok(0x9abc));
    }

    #[test]
    fn holes_and_bad_tables_are_reported() {
        let m = tables();
        assert_eq!(translate(&m, 0x1000, LONG4, 0x40_4000), Err(WalkError::NotPresent { level: 1 }));
        assert_eq!(translate(&m, 0x1000, LONG4, 0x80_0000_0000), Err(WalkError::NotPresent { level: 4 }));
        assert_eq!(translate(&m, 0x1000, LONG4, 0xc000_0000), Err(WalkError::TableUnreadable { gpa: 0x2000_0000 }));
        assert_eq!(translate(&m, 0x1000, LONG4, 0x0000_8000_0000_0000), Err(WalkError::NonCanonical));
        let mut m = tables();
        m.0.insert(0x1000, 0x2000 | 0x83);
        assert_eq!(translate(&m, 0x1000, LONG4, 0), Err(WalkError::Malformed { level: 4 }));
    }

    #[test]
    fn modes_without_long_mode_paging() {
        let m = tables();
        let off = PagingMode { paging: false, long_mode: false, five_level: false };
        assert_eq!(translate(&m, 0, off, 0x1_0000_1234), Ok(0x1234));
        let legacy = PagingMode { paging: true, long_mode: false, five_level: false };
        assert_eq!(translate(&m, 0x1000, legacy, 0x1234), Err(WalkError::UnsupportedMode));
        assert_eq!(PagingMode::from_registers(1 << 31, 1 << 12, 1 << 10), PagingMode { paging: true, long_mode: true, five_level: true });
    }

    #[test]
    fn five_levels_add_a_table_above() {
        let mut m = tables();
        m.0.insert(0x5000, 0x1000 | 3);
        let five = PagingMode { five_level: true, ..LONG4 };
        assert_eq!(translate(&m, 0x5000, five, 0x40_3abc), Ok(0x9abc));
        // Canonical for 4 levels is not the same as for 5.
        assert_eq!(translate(&m, 0x5000, five, 0x0000_8000_0000_0000), Err(WalkError::NotPresent { level: 4 }));
    }
}
