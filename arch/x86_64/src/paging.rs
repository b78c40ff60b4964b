//! The entry format of the hypervisor's own page tables: x86-64 four-level
//! paging (Intel SDM vol. 3A §4.5, AMD APM vol. 2 §5.3), as the CPU walks it
//! for the hypervisor's own accesses.
//!
//! The bits are those of the `x86_64` crate's [`PageTableFlags`]; the layout
//! is the one [`npt`](crate::npt) documents, with two differences that make
//! it a supervisor table rather than a nested one:
//!
//! - U/S stays clear at every level: nothing runs at CPL 3 here, and a
//!   supervisor page is what SMAP/SMEP would protect.
//! - A and D are set in every leaf (A in every table entry), so the CPU
//!   never writes the tables back while walking them.
//!
//! Memory types select a PAT entry through PCD and PWT only (the PAT bit
//! stays clear), so they mean the same under the power-on PAT and under
//! [`npt::HOST_PAT`](crate::npt::HOST_PAT), which keeps entries 0-3:
//! write-back RAM is index 0, everything uncached index 3 (UC). The
//! hypervisor itself never maps anything write-combining, so `normal-nc`
//! requests get UC as well.

use crate::{Access, EntryFormat, Level, MemoryType, PageSize, UnsupportedAccess};
use x86_64::structures::paging::PageTableFlags as Flags;

/// Bits 51:12: the physical address of the next table or of a 4 KiB page.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The bits of a leaf other than its address and page-size bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostAttributes(Flags);

impl HostAttributes {
    /// The leaf bits for `memory` with `access`.
    ///
    /// # Errors
    /// [`UnsupportedAccess`] when `access` lacks read: a present x86 entry
    /// is always readable.
    pub fn new(memory: MemoryType, access: Access) -> Result<HostAttributes, UnsupportedAccess> {
        let access = access.validate()?;
        let mut flags = Flags::PRESENT | Flags::ACCESSED | Flags::DIRTY;
        if access.write {
            flags |= Flags::WRITABLE;
        }
        if !access.execute {
            flags |= Flags::NO_EXECUTE;
        }
        if memory != MemoryType::NormalWriteBack {
            // PAT index 3 (PCD | PWT): UC.
            flags |= Flags::NO_CACHE | Flags::WRITE_THROUGH;
        }
        Ok(HostAttributes(flags))
    }

    /// The flags, as the `x86_64` crate names them.
    pub const fn flags(self) -> Flags {
        self.0
    }
}

/// The format of the hypervisor's own tables, for
/// [`SecondLevelTable`](crate::SecondLevelTable) (whose "guest-physical"
/// input is here the hypervisor's virtual address).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostPaging;

impl EntryFormat for HostPaging {
    type Attributes = HostAttributes;

    fn attributes(memory: MemoryType, access: Access) -> Result<HostAttributes, UnsupportedAccess> {
        HostAttributes::new(memory, access)
    }

    fn make_table_entry(table_pa: u64) -> u64 {
        assert!(table_pa & !ADDRESS_MASK == 0);
        // Writable and executable, so that the leaf alone decides.
        table_pa | (Flags::PRESENT | Flags::WRITABLE | Flags::ACCESSED).bits()
    }

    fn make_leaf_entry(size: PageSize, pa: u64, attributes: HostAttributes) -> u64 {
        assert!(pa & (size.bytes() - 1) == 0 && pa & !ADDRESS_MASK == 0);
        let huge = if size == PageSize::Size4KiB { Flags::empty() } else { Flags::HUGE_PAGE };
        pa | (attributes.0 | huge).bits()
    }

    fn is_present(entry: u64) -> bool {
        entry & Flags::PRESENT.bits() != 0
    }

    fn is_leaf(level: Level, entry: u64) -> bool {
        match level {
            Level::Pml4 => false,
            Level::Pdpt | Level::Pd => entry & Flags::HUGE_PAGE.bits() != 0,
            Level::Pt => true,
        }
    }

    fn address(level: Level, entry: u64) -> u64 {
        // In a large leaf bit 12 is PAT, not address: mask to the page size.
        let low_bits = match level {
            Level::Pdpt | Level::Pd if entry & Flags::HUGE_PAGE.bits() != 0 => (1u64 << level.shift()) - 1,
            _ => 0xfff,
        };
        entry & ADDRESS_MASK & !low_bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 1;
    const RW: u64 = 1 << 1;
    const PWT_PCD: u64 = (1 << 3) | (1 << 4);
    const A_D: u64 = (1 << 5) | (1 << 6);
    const PS: u64 = 1 << 7;
    const NX: u64 = 1 << 63;

    fn leaf(size: PageSize, pa: u64, memory: MemoryType, access: Access) -> u64 {
        HostPaging::make_leaf_entry(size, pa, HostPaging::attributes(memory, access).unwrap())
    }

    #[test]
    fn leaves_encode_permissions_and_memory_type() {
        let wb = MemoryType::NormalWriteBack;
        assert_eq!(leaf(PageSize::Size4KiB, 0x1000, wb, Access::READ_EXECUTE), 0x1000 | P | A_D);
        assert_eq!(leaf(PageSize::Size4KiB, 0x1000, wb, Access::READ), 0x1000 | P | A_D | NX);
        assert_eq!(leaf(PageSize::Size2MiB, 0x20_0000, wb, Access::READ_WRITE), 0x20_0000 | P | RW | A_D | PS | NX);
        assert_eq!(
            leaf(PageSize::Size4KiB, 0xfee0_0000, MemoryType::DeviceNGnRE, Access::READ_WRITE),
            0xfee0_0000 | P | RW | A_D | PWT_PCD | NX
        );
        // No U/S anywhere.
        assert_eq!(leaf(PageSize::Size1GiB, 1 << 30, wb, Access::READ_WRITE_EXECUTE) & 4, 0);
        assert_eq!(HostPaging::make_table_entry(0x5000), 0x5000 | P | RW | (1 << 5));
        let write_only = Access { read: false, write: true, execute: false };
        assert!(HostPaging::attributes(wb, write_only).is_err());
    }

    #[test]
    fn large_leaves_are_classified_and_addressed() {
        let entry = leaf(PageSize::Size2MiB, 0x4020_0000, MemoryType::NormalWriteBack, Access::READ);
        assert!(HostPaging::is_leaf(Level::Pd, entry));
        assert!(!HostPaging::is_leaf(Level::Pd, HostPaging::make_table_entry(0x5000)));
        assert!(HostPaging::is_leaf(Level::Pt, P));
        assert!(!HostPaging::is_leaf(Level::Pml4, entry));
        assert_eq!(HostPaging::address(Level::Pd, entry | (1 << 12)), 0x4020_0000);
        assert_eq!(HostPaging::address(Level::Pdpt, HostPaging::make_table_entry(0x7000)), 0x7000);
    }
}
