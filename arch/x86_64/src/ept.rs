//! Intel extended page tables (EPT): entry and EPTP encoding.
//!
//! References are to the Intel SDM Vol. 3C as numbered since 2023 (older
//! editions put EPT in chapter 28: §28.2.2 for the translation mechanism,
//! §28.2.6 for memory typing, §24.6.11 for the EPTP):
//! - §29.3.2 "EPT Translation Mechanism": Table 29-1 (PML4E), 29-2 (PDPTE
//!   mapping a 1 GiB page), 29-3 (PDPTE referencing a page directory), 29-4
//!   (PDE mapping a 2 MiB page), 29-5 (PDE referencing a page table), 29-6
//!   (PTE mapping a 4 KiB page);
//! - §29.3.3.1 "EPT Misconfigurations" (write without read is one);
//! - §29.3.7 "EPT and Memory Typing" (leaf memory type and ignore-PAT);
//! - §25.6.11 "Extended-Page-Table Pointer (EPTP)".
//!
//! | bit(s) | leaf | non-leaf |
//! |---|---|---|
//! | 0, 1, 2 | read, write, execute | read, write, execute (all set here) |
//! | 5:3 | EPT memory type | reserved (0) |
//! | 6 | ignore PAT | reserved (0) |
//! | 7 | 1 for 2 MiB / 1 GiB leaves; ignored in a PTE | 0 (reserved in a PML4E) |
//! | 8, 9 | accessed, dirty (if EPTP bit 6) | accessed (bit 9 ignored) |
//! | 51:12 | page address (bits below the page size reserved) | next table |
//!
//! Not used: bit 10 (user-mode execute, only with mode-based execute
//! control, which Bulkhead leaves off so bit 2 governs every fetch), bit 63
//! (suppress #VE), and sub-page write permissions.
//!
//! Memory-type policy, DESIGN.md §4:
//!
//! | [`MemoryType`] | EPT memory type | ignore PAT | effective type |
//! |---|---|---|---|
//! | `NormalWriteBack` | WB (6) | set | WB, whatever the guest PAT says |
//! | `NormalNonCacheable` | UC (0) | clear | UC, or WC when the guest PAT says WC |
//! | `NormalWriteCombining` | WC (1) | clear | WC, or UC when the guest PAT asks for UC/WT/WP |
//! | `DeviceNGnRE`, `DeviceNGnRnE` | UC (0) | set | UC, whatever the guest PAT says |

use crate::{Access, EntryFormat, Level, MemoryType, PageSize, UnsupportedAccess};

/// Bit 0: reads allowed (SDM Tables 29-1..29-6).
pub const READ: u64 = 1 << 0;
/// Bit 1: writes allowed.
pub const WRITE: u64 = 1 << 1;
/// Bit 2: instruction fetches allowed (supervisor-mode fetches when
/// mode-based execute control is on; all fetches otherwise).
pub const EXECUTE: u64 = 1 << 2;
/// Bits 5:3 of a leaf: the EPT memory type, shifted into place by this amount.
pub const MEMORY_TYPE_SHIFT: u32 = 3;
/// Bit 6 of a leaf: ignore the guest PAT; the EPT memory type alone decides.
pub const IGNORE_PAT: u64 = 1 << 6;
/// Bit 7 of a PDPTE or PDE: the entry maps a 1 GiB or 2 MiB page.
pub const PAGE_SIZE: u64 = 1 << 7;
/// Bit 8: accessed, set by the CPU when EPTP bit 6 enables A/D flags.
pub const ACCESSED: u64 = 1 << 8;
/// Bit 9 of a leaf: dirty, set by the CPU when EPTP bit 6 enables A/D flags.
pub const DIRTY: u64 = 1 << 9;
/// Bits 51:12: the physical address of the next table or of the page.
pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The EPTP bit that enables accessed and dirty flags (bit 6; requires
/// IA32_VMX_EPT_VPID_CAP bit 21).
pub const EPTP_ACCESSED_DIRTY: u64 = 1 << 6;

/// An EPT memory type (SDM §29.3.7; the same encoding as MTRR and PAT types).
/// The values 2, 3 and 7 are reserved and cause an EPT misconfiguration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EptMemoryType {
    /// Uncacheable (UC).
    Uncacheable = 0,
    /// Write-combining (WC).
    WriteCombining = 1,
    /// Write-through (WT).
    WriteThrough = 4,
    /// Write-protected (WP).
    WriteProtected = 5,
    /// Write-back (WB).
    WriteBack = 6,
}

/// The EPT memory type and ignore-PAT setting for a [`MemoryType`]
/// (DESIGN.md §4; see the module table).
pub const fn memory_type(memory: MemoryType) -> (EptMemoryType, bool) {
    match memory {
        // RAM: WB, and the guest PAT cannot weaken it (e.g. to UC, which
        // would only cost performance, or to WC, which breaks coherence).
        MemoryType::NormalWriteBack => (EptMemoryType::WriteBack, true),
        // With ignore-PAT clear, the EPT type plays the part of the MTRR type
        // and combines with the guest PAT type (SDM §29.3.7.2; Vol. 3A
        // "Selecting Memory Types for Pentium III and More Recent Processor
        // Families", table "Effective Page-Level Memory Types"): PAT WC over
        // UC gives WC, every other PAT type over UC gives UC. So the guest
        // chooses WC by mapping the region WC, as a native driver would.
        MemoryType::NormalNonCacheable => (EptMemoryType::Uncacheable, false),
        // Asked for WC outright. Ignore-PAT stays clear so the guest can only
        // make it stricter (PAT UC, WT or WP over WC gives UC), never cached.
        MemoryType::NormalWriteCombining => (EptMemoryType::WriteCombining, false),
        // MMIO: DESIGN.md §4 says only "UC (0)". With ignore-PAT clear the
        // same combination lets a guest PAT of WC turn device registers into
        // write-combining memory, whose writes may be merged, reordered and
        // delayed: the region would no longer have the device attribute the
        // platform description gives it (DESIGN.md §1 rule 5). Setting
        // ignore-PAT pins the effective type to UC whatever the guest PAT
        // says, so no guest choice can make MMIO combining or cacheable.
        MemoryType::DeviceNGnRE | MemoryType::DeviceNGnRnE => (EptMemoryType::Uncacheable, true),
    }
}

/// Leaf attribute bits 6:0 (RWX, memory type, ignore PAT) for a mapping,
/// validated once and then stamped into every leaf of the mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptAttributes(u64);

impl EptAttributes {
    /// The leaf attributes for `memory` with `access`.
    ///
    /// # Errors
    /// [`UnsupportedAccess`] for write without read (an EPT misconfiguration,
    /// SDM §29.3.3.1), execute-only (needs IA32_VMX_EPT_VPID_CAP bit 0, which
    /// Bulkhead does not require) and no access (a not-present entry).
    pub const fn new(memory: MemoryType, access: Access) -> Result<EptAttributes, UnsupportedAccess> {
        let access = match access.validate() {
            Ok(access) => access,
            Err(error) => return Err(error),
        };
        let mut bits = READ;
        if access.write {
            bits |= WRITE;
        }
        if access.execute {
            bits |= EXECUTE;
        }
        let (memory_type, ignore_pat) = memory_type(memory);
        bits |= (memory_type as u64) << MEMORY_TYPE_SHIFT;
        if ignore_pat {
            bits |= IGNORE_PAT;
        }
        Ok(EptAttributes(bits))
    }

    /// The attribute bits, as they appear in bits 6:0 of a leaf.
    pub const fn bits(self) -> u64 {
        self.0
    }
}

/// A leaf entry of `size` mapping host-physical `hpa`, which must be aligned
/// to `size` (SDM Tables 29-2, 29-4, 29-6; the address bits below the page
/// size are reserved in large leaves).
///
/// # Panics
/// If `hpa` is not aligned to `size` or lies beyond bit 51: the table builder
/// checks both before it encodes.
pub const fn leaf_entry(size: PageSize, hpa: u64, attributes: EptAttributes) -> u64 {
    assert!(hpa & (size.bytes() - 1) == 0 && hpa & !ADDRESS_MASK == 0);
    let page_size = match size {
        PageSize::Size4KiB => 0,
        PageSize::Size2MiB | PageSize::Size1GiB => PAGE_SIZE,
    };
    hpa | page_size | attributes.bits()
}

/// A non-leaf entry referencing the table frame at `table_pa` with read,
/// write and execute all allowed, so the leaf alone decides the access (SDM
/// Tables 29-1, 29-3, 29-5: bits 7:3 are reserved and stay 0).
///
/// # Panics
/// If `table_pa` is not 4 KiB aligned or lies beyond bit 51.
pub const fn table_entry(table_pa: u64) -> u64 {
    assert!(table_pa & !ADDRESS_MASK == 0);
    table_pa | READ | WRITE | EXECUTE
}

/// The EPTP VM-execution control for a four-level EPT rooted at `pml4_pa`
/// (SDM §25.6.11): bits 2:0 the memory type the CPU uses to read the tables
/// (WB, 6; requires IA32_VMX_EPT_VPID_CAP bit 14), bits 5:3 the page-walk
/// length minus one (3 for four levels; requires capability bit 6), bit 6
/// enables accessed/dirty flags when `accessed_dirty` is set (requires
/// capability bit 21), bits 11:7 zero (no supervisor shadow-stack control),
/// bits 51:12 the PML4 address.
///
/// # Panics
/// If `pml4_pa` is not 4 KiB aligned or lies beyond bit 51.
pub const fn eptp(pml4_pa: u64, accessed_dirty: bool) -> u64 {
    assert!(pml4_pa & !ADDRESS_MASK == 0);
    const PAGE_WALK_LENGTH_MINUS_ONE: u64 = 4 - 1;
    let mut value = pml4_pa | (EptMemoryType::WriteBack as u64) | (PAGE_WALK_LENGTH_MINUS_ONE << 3);
    if accessed_dirty {
        value |= EPTP_ACCESSED_DIRTY;
    }
    value
}

/// The EPT entry format, for [`SecondLevelTable`](crate::SecondLevelTable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ept;

impl EntryFormat for Ept {
    type Attributes = EptAttributes;

    fn attributes(memory: MemoryType, access: Access) -> Result<EptAttributes, UnsupportedAccess> {
        EptAttributes::new(memory, access)
    }

    fn make_table_entry(table_pa: u64) -> u64 {
        table_entry(table_pa)
    }

    fn make_leaf_entry(size: PageSize, pa: u64, attributes: EptAttributes) -> u64 {
        leaf_entry(size, pa, attributes)
    }

    /// SDM §29.3.2: an entry whose bits 2:0 are all clear is not present.
    fn is_present(entry: u64) -> bool {
        entry & (READ | WRITE | EXECUTE) != 0
    }

    fn is_leaf(level: Level, entry: u64) -> bool {
        match level {
            Level::Pml4 => false,
            Level::Pdpt | Level::Pd => entry & PAGE_SIZE != 0,
            Level::Pt => true,
        }
    }

    fn address(level: Level, entry: u64) -> u64 {
        // Large leaves keep their reserved low address bits clear, so one
        // mask serves all levels.
        let _ = level;
        entry & ADDRESS_MASK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HPA: u64 = 0x0000_0012_3456_7000;
    const HPA_2M: u64 = 0x0000_0012_3460_0000;
    const HPA_1G: u64 = 0x0000_0012_4000_0000;

    fn leaf(size: PageSize, hpa: u64, memory: MemoryType, access: Access) -> u64 {
        leaf_entry(size, hpa, EptAttributes::new(memory, access).unwrap())
    }

    #[test]
    fn write_back_ram() {
        // RWX = 0b111 (bits 2:0), type WB 6 << 3 = 0x30, ignore-PAT bit 6 = 0x40.
        let rwx = Access::READ_WRITE_EXECUTE;
        assert_eq!(leaf(PageSize::Size4KiB, HPA, MemoryType::NormalWriteBack, rwx), HPA | 0x77);
        // Plus bit 7 for large leaves (Tables 29-2, 29-4).
        assert_eq!(leaf(PageSize::Size2MiB, HPA_2M, MemoryType::NormalWriteBack, rwx), HPA_2M | 0xf7);
        assert_eq!(leaf(PageSize::Size1GiB, HPA_1G, MemoryType::NormalWriteBack, rwx), HPA_1G | 0xf7);
    }

    #[test]
    fn access_combinations() {
        let wb = |access| leaf(PageSize::Size4KiB, HPA, MemoryType::NormalWriteBack, access);
        assert_eq!(wb(Access::READ), HPA | 0x71);
        assert_eq!(wb(Access::READ_WRITE), HPA | 0x73);
        assert_eq!(wb(Access::READ_EXECUTE), HPA | 0x75);
        assert_eq!(wb(Access::READ_WRITE_EXECUTE), HPA | 0x77);
    }

    #[test]
    fn non_cacheable_leaves_guest_pat_in_charge() {
        // UC (0) in bits 5:3 and bit 6 clear: only R|W.
        let entry = leaf(PageSize::Size4KiB, HPA, MemoryType::NormalNonCacheable, Access::READ_WRITE);
        assert_eq!(entry, HPA | 0x03);
        assert_eq!(entry & IGNORE_PAT, 0);
        let large = leaf(PageSize::Size2MiB, HPA_2M, MemoryType::NormalNonCacheable, Access::READ_WRITE);
        assert_eq!(large, HPA_2M | 0x83);
    }

    #[test]
    fn write_combining_on_request() {
        // WC (1) << 3 = 0x08, ignore-PAT clear.
        let entry = leaf(PageSize::Size4KiB, HPA, MemoryType::NormalWriteCombining, Access::READ_WRITE);
        assert_eq!(entry, HPA | 0x0b);
    }

    #[test]
    fn device_is_uncached_and_ignores_guest_pat() {
        // UC (0) with bit 6 set: R|W|ignore-PAT = 0x43.
        for memory in [MemoryType::DeviceNGnRE, MemoryType::DeviceNGnRnE] {
            assert_eq!(leaf(PageSize::Size4KiB, HPA, memory, Access::READ_WRITE), HPA | 0x43);
            assert_eq!(leaf(PageSize::Size4KiB, HPA, memory, Access::READ), HPA | 0x41);
            assert_eq!(leaf(PageSize::Size2MiB, HPA_2M, memory, Access::READ_WRITE), HPA_2M | 0xc3);
        }
    }

    #[test]
    fn rejects_accesses_without_read() {
        let write_only = Access { read: false, write: true, execute: false };
        let write_execute = Access { read: false, write: true, execute: true };
        let execute_only = Access { read: false, write: false, execute: true };
        let none = Access { read: false, write: false, execute: false };
        for access in [write_only, write_execute, execute_only, none] {
            assert_eq!(EptAttributes::new(MemoryType::NormalWriteBack, access), Err(UnsupportedAccess(access)));
        }
    }

    #[test]
    fn table_entries_allow_everything() {
        assert_eq!(table_entry(0x0000_000f_ffff_f000), 0x0000_000f_ffff_f007);
        assert!(Ept::is_present(table_entry(0x1000)));
        assert!(!Ept::is_leaf(Level::Pd, table_entry(0x1000)));
        assert!(!Ept::is_leaf(Level::Pml4, table_entry(0x1000)));
    }

    #[test]
    fn classifies_and_extracts_addresses() {
        let large = leaf(PageSize::Size2MiB, HPA_2M, MemoryType::NormalWriteBack, Access::READ);
        assert!(Ept::is_present(large));
        assert!(Ept::is_leaf(Level::Pd, large));
        assert_eq!(Ept::address(Level::Pd, large), HPA_2M);
        // The CPU may set A and D; they are not part of the address.
        let small = leaf(PageSize::Size4KiB, HPA, MemoryType::NormalWriteBack, Access::READ) | ACCESSED | DIRTY;
        assert!(Ept::is_leaf(Level::Pt, small));
        assert_eq!(Ept::address(Level::Pt, small), HPA);
        assert!(!Ept::is_present(0));
        assert!(!Ept::is_present(HPA | 0x70));
    }

    #[test]
    fn eptp_encoding() {
        // WB (6) in bits 2:0, walk length 4 - 1 = 3 in bits 5:3 (0x18), bit 6 A/D.
        assert_eq!(eptp(0x0000_0001_2345_6000, false), 0x0000_0001_2345_601e);
        assert_eq!(eptp(0x0000_0001_2345_6000, true), 0x0000_0001_2345_605e);
    }

    #[test]
    #[should_panic]
    fn misaligned_large_leaf_is_a_bug() {
        let _ = leaf(PageSize::Size2MiB, HPA, MemoryType::NormalWriteBack, Access::READ);
    }
}
