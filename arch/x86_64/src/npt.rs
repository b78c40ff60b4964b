//! AMD nested page tables (NPT): entry encoding and the host PAT layout.
//!
//! Nested page tables are ordinary long-mode page tables (AMD APM Vol. 2
//! §15.25 "Nested Paging"; entry formats in §5.3 "Long-Mode Page
//! Translation", Figures 5-20..5-23 for the 4 KiB path and the 2 MiB and
//! 1 GiB figures after them, field meanings in §5.4 "Page-Translation-Table
//! Entry Fields"):
//!
//! | bit(s) | 4 KiB leaf (PTE) | 2 MiB / 1 GiB leaf | non-leaf |
//! |---|---|---|---|
//! | 0 | P | P | P |
//! | 1 | R/W | R/W | R/W (set here) |
//! | 2 | U/S, must be 1 | U/S, must be 1 | U/S, must be 1 |
//! | 3, 4 | PWT, PCD | PWT, PCD | PWT, PCD (0 here: WB, see [`HOST_PAT`]) |
//! | 5, 6 | A, D (set by the CPU) | A, D | A |
//! | 7 | PAT | PS = 1 | PS = 0 |
//! | 12 | address | PAT | address |
//! | 51:12 | page address | page address (51:21 or 51:30) | next table |
//! | 63 | NX | NX | NX (0 here) |
//!
//! Notes from APM Vol. 2 §15.25:
//! - Nested-table accesses are user accesses ("Nested Table Walk"), so U/S
//!   must be set at every level or every guest access faults.
//! - The CPU's accesses to the guest's own page tables are treated as writes
//!   at the nested level ("Nested versus Guest Page Faults, Fault
//!   Ordering"): a read-only NPT mapping must not hold guest page tables.
//! - There is no memory-type field and no ignore-PAT. A leaf's PAT, PCD and
//!   PWT bits select an entry of the host PAT (the IA32_PAT MSR in force for
//!   the nested walk), and the CPU combines that host type with the type the
//!   guest's own PAT (the VMCB's gPAT) selects (table "Combining Guest and
//!   Host PAT Types"). The host PAT acts like an MTRR set by the hypervisor.
//! - NX (bit 63) is reserved unless no-execute is enabled (EFER.NXE) for the
//!   nested walk; the SVM path must enable it before using these entries.
//! - There is no "write without read" and no "execute-only": a present entry
//!   is readable. Such requests are refused, not widened.

use crate::{Access, EntryFormat, Level, MemoryType, PageSize, UnsupportedAccess};

/// Bit 0: present.
pub const PRESENT: u64 = 1 << 0;
/// Bit 1: writes allowed.
pub const WRITABLE: u64 = 1 << 1;
/// Bit 2: user accesses allowed; every nested access is a user access.
pub const USER: u64 = 1 << 2;
/// Bit 3: page-level write-through; bit 0 of the PAT index.
pub const PWT: u64 = 1 << 3;
/// Bit 4: page-level cache disable; bit 1 of the PAT index.
pub const PCD: u64 = 1 << 4;
/// Bit 5: accessed, set by the CPU.
pub const ACCESSED: u64 = 1 << 5;
/// Bit 6 of a leaf: dirty, set by the CPU.
pub const DIRTY: u64 = 1 << 6;
/// Bit 7 of a 4 KiB leaf: bit 2 of the PAT index.
pub const PAT_4KIB: u64 = 1 << 7;
/// Bit 7 of a PDPTE or PDE: the entry maps a 1 GiB or 2 MiB page.
pub const PAGE_SIZE: u64 = 1 << 7;
/// Bit 12 of a 2 MiB or 1 GiB leaf: bit 2 of the PAT index.
pub const PAT_LARGE: u64 = 1 << 12;
/// Bit 63: no execute.
pub const NO_EXECUTE: u64 = 1 << 63;
/// Bits 51:12: the physical address of the next table or of a 4 KiB page.
pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// PAT memory-type encodings (APM Vol. 2 §7.8 "Page-Attribute Table
/// Mechanism"; the same values as the Intel SDM).
pub mod pat_type {
    /// Uncacheable.
    pub const UC: u8 = 0x00;
    /// Write-combining.
    pub const WC: u8 = 0x01;
    /// Write-through.
    pub const WT: u8 = 0x04;
    /// Write-protected.
    pub const WP: u8 = 0x05;
    /// Write-back.
    pub const WB: u8 = 0x06;
    /// Uncacheable, overridable by a write-combining MTRR (UC-).
    pub const UC_MINUS: u8 = 0x07;
}

/// The IA32_PAT value (MSR 0x277) the hypervisor programs on AMD hosts; byte
/// `i` is the memory type of PAT entry `i`, selected by
/// `PAT << 2 | PCD << 1 | PWT`.
///
/// | index | PAT PCD PWT | type | used for |
/// |---|---|---|---|
/// | 0 | 0 0 0 | WB | `normal-wb`, and every table (PCD = PWT = 0) |
/// | 1 | 0 0 1 | WT | — |
/// | 2 | 0 1 0 | UC- | — |
/// | 3 | 0 1 1 | UC | `device-ngnre`, `device-ngnrne` |
/// | 4 | 1 0 0 | WC | `normal-nc` (both variants) |
/// | 5 | 1 0 1 | WT | — |
/// | 6 | 1 1 0 | UC- | — |
/// | 7 | 1 1 1 | UC | — |
///
/// Entries 0-3 keep the power-on default (0x0007_0406_0007_0406), and only
/// entry 4 changes (WB to WC): the same MSR also governs the hypervisor's own
/// page tables and any firmware-built ones, which select types with PCD and
/// PWT alone and so keep their meaning. Using the PAT bit for WC is also why
/// leaves must encode it in the right place (bit 7 or bit 12).
pub const HOST_PAT: u64 = u64::from_le_bytes([
    pat_type::WB,
    pat_type::WT,
    pat_type::UC_MINUS,
    pat_type::UC,
    pat_type::WC,
    pat_type::WT,
    pat_type::UC_MINUS,
    pat_type::UC,
]);

/// The PAT index a present leaf of `size` selects: `PAT << 2 | PCD << 1 |
/// PWT`, with PAT at bit 7 in a 4 KiB entry and bit 12 in a large one. The
/// same layout serves NPT leaves and the guest's own long-mode entries.
pub const fn leaf_pat_index(entry: u64, size: crate::PageSize) -> u8 {
    let pat_bit = match size {
        crate::PageSize::Size4KiB => 7,
        _ => 12,
    };
    (((entry >> pat_bit) & 1) << 2 | ((entry >> 4) & 1) << 1 | ((entry >> 3) & 1)) as u8
}

/// The memory type (a [`pat_type`] value) entry `index` of the PAT value
/// `pat` holds.
pub const fn pat_entry(pat: u64, index: u8) -> u8 {
    (pat >> (8 * (index as u32 & 7))) as u8 & 7
}

/// A [`pat_type`] value's name.
pub const fn pat_type_name(memory_type: u8) -> &'static str {
    match memory_type {
        pat_type::UC => "UC",
        pat_type::WC => "WC",
        pat_type::WT => "WT",
        pat_type::WP => "WP",
        pat_type::WB => "WB",
        pat_type::UC_MINUS => "UC-",
        _ => "reserved",
    }
}

/// The [`HOST_PAT`] index a leaf selects for `memory`.
///
/// - `normal-wb`: WB (0). The guest PAT may still make its own RAM
///   stricter, which costs it only performance.
/// - `normal-nc`: WC (4). EPT leaves WC to the guest (UC without
///   ignore-PAT, DESIGN.md §4); NPT has no ignore-PAT, so the host grants WC
///   and the guest PAT can still make the region uncached.
/// - device: UC (3), the strictest host type. Without ignore-PAT the guest
///   PAT still takes part in the combination; host UC is the strongest
///   setting NPT offers.
pub const fn pat_index(memory: MemoryType) -> u8 {
    match memory {
        MemoryType::NormalWriteBack => 0,
        MemoryType::NormalNonCacheable | MemoryType::NormalWriteCombining => 4,
        MemoryType::DeviceNGnRE | MemoryType::DeviceNGnRnE => 3,
    }
}

/// The memory type [`HOST_PAT`] holds at `index` (0..8).
pub const fn host_pat_type(index: u8) -> u8 {
    (HOST_PAT >> (8 * (index & 7))) as u8
}

/// Leaf attributes for a mapping: permission bits (P, R/W, U/S, NX) and the
/// host PAT index, whose bit 2 lands in a different bit for 4 KiB and large
/// leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NptAttributes {
    permissions: u64,
    pat_index: u8,
}

impl NptAttributes {
    /// The leaf attributes for `memory` with `access`.
    ///
    /// # Errors
    /// [`UnsupportedAccess`] when `access` lacks read: write-only,
    /// write-execute, execute-only and no access cannot be expressed by a
    /// present entry.
    pub const fn new(memory: MemoryType, access: Access) -> Result<NptAttributes, UnsupportedAccess> {
        let access = match access.validate() {
            Ok(access) => access,
            Err(error) => return Err(error),
        };
        let mut permissions = PRESENT | USER;
        if access.write {
            permissions |= WRITABLE;
        }
        if !access.execute {
            permissions |= NO_EXECUTE;
        }
        Ok(NptAttributes { permissions, pat_index: pat_index(memory) })
    }

    /// The [`HOST_PAT`] index these attributes select.
    pub const fn pat_index(self) -> u8 {
        self.pat_index
    }

    /// The attribute bits of a leaf of `size`: permissions plus the PAT
    /// index as PWT (bit 3), PCD (bit 4) and PAT (bit 7 for 4 KiB, bit 12
    /// for 2 MiB and 1 GiB; APM Vol. 2 §7.8, "PAT-Register PA-Field
    /// Indexing").
    pub const fn bits(self, size: PageSize) -> u64 {
        let mut bits = self.permissions;
        if self.pat_index & 0b001 != 0 {
            bits |= PWT;
        }
        if self.pat_index & 0b010 != 0 {
            bits |= PCD;
        }
        if self.pat_index & 0b100 != 0 {
            bits |= match size {
                PageSize::Size4KiB => PAT_4KIB,
                PageSize::Size2MiB | PageSize::Size1GiB => PAT_LARGE,
            };
        }
        bits
    }
}

/// A leaf entry of `size` mapping host-physical `hpa`, which must be aligned
/// to `size`.
///
/// # Panics
/// If `hpa` is not aligned to `size` or lies beyond bit 51: the table builder
/// checks both before it encodes.
pub const fn leaf_entry(size: PageSize, hpa: u64, attributes: NptAttributes) -> u64 {
    assert!(hpa & (size.bytes() - 1) == 0 && hpa & !ADDRESS_MASK == 0);
    let page_size = match size {
        PageSize::Size4KiB => 0,
        PageSize::Size2MiB | PageSize::Size1GiB => PAGE_SIZE,
    };
    hpa | page_size | attributes.bits(size)
}

/// A non-leaf entry referencing the table frame at `table_pa`: present,
/// writable, user, executable, PCD = PWT = 0 (the table is read as WB through
/// [`HOST_PAT`] entry 0), so the leaf alone decides the access.
///
/// # Panics
/// If `table_pa` is not 4 KiB aligned or lies beyond bit 51.
pub const fn table_entry(table_pa: u64) -> u64 {
    assert!(table_pa & !ADDRESS_MASK == 0);
    table_pa | PRESENT | WRITABLE | USER
}

/// The VMCB nCR3 value for a table rooted at `pml4_pa`: the address with
/// PCD = PWT = 0, so the root is read as WB through [`HOST_PAT`] entry 0.
///
/// # Panics
/// If `pml4_pa` is not 4 KiB aligned or lies beyond bit 51.
pub const fn ncr3(pml4_pa: u64) -> u64 {
    assert!(pml4_pa & !ADDRESS_MASK == 0);
    pml4_pa
}

/// The NPT entry format, for [`SecondLevelTable`](crate::SecondLevelTable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Npt;

impl EntryFormat for Npt {
    type Attributes = NptAttributes;

    fn attributes(memory: MemoryType, access: Access) -> Result<NptAttributes, UnsupportedAccess> {
        NptAttributes::new(memory, access)
    }

    fn make_table_entry(table_pa: u64) -> u64 {
        table_entry(table_pa)
    }

    fn make_leaf_entry(size: PageSize, pa: u64, attributes: NptAttributes) -> u64 {
        leaf_entry(size, pa, attributes)
    }

    fn is_present(entry: u64) -> bool {
        entry & PRESENT != 0
    }

    fn is_leaf(level: Level, entry: u64) -> bool {
        match level {
            Level::Pml4 => false,
            Level::Pdpt | Level::Pd => entry & PAGE_SIZE != 0,
            Level::Pt => true,
        }
    }

    fn address(level: Level, entry: u64) -> u64 {
        // In a large leaf bit 12 is PAT, not address: mask to the page size.
        let low_bits = match level {
            Level::Pdpt | Level::Pd if entry & PAGE_SIZE != 0 => (1u64 << level.shift()) - 1,
            _ => 0xfff,
        };
        entry & ADDRESS_MASK & !low_bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HPA: u64 = 0x0000_0012_3456_7000;
    const HPA_2M: u64 = 0x0000_0012_3460_0000;
    const HPA_1G: u64 = 0x0000_0012_4000_0000;
    const NX: u64 = 1 << 63;

    fn leaf(size: PageSize, hpa: u64, memory: MemoryType, access: Access) -> u64 {
        leaf_entry(size, hpa, NptAttributes::new(memory, access).unwrap())
    }

    #[test]
    fn host_pat_layout() {
        assert_eq!(HOST_PAT, 0x0007_0401_0007_0406);
        assert_eq!(host_pat_type(pat_index(MemoryType::NormalWriteBack)), pat_type::WB);
        assert_eq!(host_pat_type(pat_index(MemoryType::NormalNonCacheable)), pat_type::WC);
        assert_eq!(host_pat_type(pat_index(MemoryType::NormalWriteCombining)), pat_type::WC);
        assert_eq!(host_pat_type(pat_index(MemoryType::DeviceNGnRE)), pat_type::UC);
        assert_eq!(host_pat_type(pat_index(MemoryType::DeviceNGnRnE)), pat_type::UC);
        // Tables use PCD = PWT = 0, i.e. entry 0.
        assert_eq!(host_pat_type(0), pat_type::WB);
    }

    #[test]
    fn write_back_ram() {
        // P | R/W | U/S = 0x7, PAT index 0: no PWT/PCD/PAT bits.
        let rwx = Access::READ_WRITE_EXECUTE;
        assert_eq!(leaf(PageSize::Size4KiB, HPA, MemoryType::NormalWriteBack, rwx), HPA | 0x07);
        // Plus PS (bit 7) for large leaves.
        assert_eq!(leaf(PageSize::Size2MiB, HPA_2M, MemoryType::NormalWriteBack, rwx), HPA_2M | 0x87);
        assert_eq!(leaf(PageSize::Size1GiB, HPA_1G, MemoryType::NormalWriteBack, rwx), HPA_1G | 0x87);
    }

    #[test]
    fn access_combinations() {
        let wb = |access| leaf(PageSize::Size4KiB, HPA, MemoryType::NormalWriteBack, access);
        // Read-only: R/W = 0; no execute: NX = 1.
        assert_eq!(wb(Access::READ), HPA | 0x05 | NX);
        assert_eq!(wb(Access::READ_WRITE), HPA | 0x07 | NX);
        assert_eq!(wb(Access::READ_EXECUTE), HPA | 0x05);
        assert_eq!(wb(Access::READ_WRITE_EXECUTE), HPA | 0x07);
    }

    #[test]
    fn write_combining_uses_pat_bit_7_in_4k_leaves_and_bit_12_in_large_ones() {
        // Index 4 = PAT bit only.
        for memory in [MemoryType::NormalNonCacheable, MemoryType::NormalWriteCombining] {
            let small = leaf(PageSize::Size4KiB, HPA, memory, Access::READ_WRITE);
            assert_eq!(small, HPA | 0x87 | NX);
            let large = leaf(PageSize::Size2MiB, HPA_2M, memory, Access::READ_WRITE);
            assert_eq!(large, HPA_2M | 0x1000 | 0x87 | NX);
            let huge = leaf(PageSize::Size1GiB, HPA_1G, memory, Access::READ_WRITE);
            assert_eq!(huge, HPA_1G | 0x1000 | 0x87 | NX);
        }
    }

    #[test]
    fn device_uses_pcd_and_pwt() {
        // Index 3 = PCD | PWT = 0x18.
        for memory in [MemoryType::DeviceNGnRE, MemoryType::DeviceNGnRnE] {
            assert_eq!(leaf(PageSize::Size4KiB, HPA, memory, Access::READ_WRITE), HPA | 0x1f | NX);
            assert_eq!(leaf(PageSize::Size4KiB, HPA, memory, Access::READ), HPA | 0x1d | NX);
            assert_eq!(leaf(PageSize::Size2MiB, HPA_2M, memory, Access::READ_WRITE), HPA_2M | 0x9f | NX);
        }
    }

    #[test]
    fn rejects_accesses_without_read() {
        let write_only = Access { read: false, write: true, execute: false };
        let write_execute = Access { read: false, write: true, execute: true };
        let execute_only = Access { read: false, write: false, execute: true };
        let none = Access { read: false, write: false, execute: false };
        for access in [write_only, write_execute, execute_only, none] {
            assert_eq!(NptAttributes::new(MemoryType::NormalWriteBack, access), Err(UnsupportedAccess(access)));
        }
    }

    #[test]
    fn table_entries_and_ncr3() {
        assert_eq!(table_entry(0x0000_000f_ffff_f000), 0x0000_000f_ffff_f007);
        assert!(Npt::is_present(table_entry(0x1000)));
        assert!(!Npt::is_leaf(Level::Pdpt, table_entry(0x1000)));
        assert_eq!(ncr3(0x0000_0001_2345_6000), 0x0000_0001_2345_6000);
    }

    #[test]
    fn address_of_a_large_leaf_excludes_its_pat_bit() {
        let large = leaf(PageSize::Size2MiB, HPA_2M, MemoryType::NormalNonCacheable, Access::READ);
        assert!(Npt::is_leaf(Level::Pd, large));
        assert_eq!(Npt::address(Level::Pd, large), HPA_2M);
        let huge = leaf(PageSize::Size1GiB, HPA_1G, MemoryType::NormalNonCacheable, Access::READ);
        assert_eq!(Npt::address(Level::Pdpt, huge), HPA_1G);
        // In a 4 KiB leaf bit 7 is PAT, not PS, and bit 12 is address.
        let small = leaf(PageSize::Size4KiB, HPA, MemoryType::NormalNonCacheable, Access::READ);
        assert!(Npt::is_leaf(Level::Pt, small));
        assert_eq!(Npt::address(Level::Pt, small | ACCESSED | DIRTY), HPA);
        assert!(!Npt::is_present(HPA | 0x06));
    }
}

#[cfg(test)]
mod pat_tests {
    use super::*;
    use crate::{Access, PageSize};

    #[test]
    fn leaves_select_the_host_type_the_configuration_asks_for() {
        for (memory, expected) in [
            (MemoryType::NormalWriteBack, pat_type::WB),
            (MemoryType::NormalNonCacheable, pat_type::WC),
            (MemoryType::DeviceNGnRE, pat_type::UC),
            (MemoryType::DeviceNGnRnE, pat_type::UC),
        ] {
            let attributes = NptAttributes::new(memory, Access::READ_WRITE).unwrap();
            for size in [PageSize::Size4KiB, PageSize::Size2MiB] {
                let entry = leaf_entry(size, 0x4000_0000, attributes);
                assert_eq!(pat_entry(HOST_PAT, leaf_pat_index(entry, size)), expected, "{memory:?} {size:?}");
            }
        }
        assert_eq!(pat_type_name(pat_entry(0x0007_0406_0007_0406, 0)), "WB");
        assert_eq!(pat_type_name(pat_entry(0x0007_0406_0007_0406, 3)), "UC");
    }
}
