//! Host tests of the table builder over both entry formats, with frames from
//! a vector of boxed arrays at made-up host-physical addresses.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::Cell;

use super::*;
use crate::{Ept, Npt};

/// Where the fake allocator's first frame pretends to live.
const FRAME_BASE: u64 = 0x7000_0000;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;
const WB: MemoryType = MemoryType::NormalWriteBack;
const RWX: Access = Access::READ_WRITE_EXECUTE;

struct FakeFrames {
    frames: Vec<Box<[u64; 512]>>,
    limit: Cell<usize>,
}

impl FakeFrames {
    fn with_limit(limit: usize) -> FakeFrames {
        FakeFrames { frames: Vec::new(), limit: Cell::new(limit) }
    }

    fn slot(pa: u64) -> usize {
        assert_eq!(pa & 0xfff, 0, "table entry points at an unaligned frame");
        ((pa - FRAME_BASE) / 0x1000) as usize
    }
}

impl FrameAllocator for FakeFrames {
    fn allocate_zeroed_frame(&mut self) -> Option<u64> {
        if self.frames.len() >= self.limit.get() {
            return None;
        }
        self.frames.push(Box::new([0; 512]));
        Some(FRAME_BASE + (self.frames.len() as u64 - 1) * 0x1000)
    }

    fn frame(&self, pa: u64) -> &[u64; 512] {
        &self.frames[Self::slot(pa)]
    }

    fn frame_mut(&mut self, pa: u64) -> &mut [u64; 512] {
        &mut self.frames[Self::slot(pa)]
    }
}

fn table<F: EntryFormat>() -> SecondLevelTable<F, FakeFrames> {
    SecondLevelTable::new(FakeFrames::with_limit(usize::MAX)).unwrap()
}

fn leaf_size<F: EntryFormat>(table: &SecondLevelTable<F, FakeFrames>, gpa: u64) -> Option<PageSize> {
    table.lookup(gpa).map(|(_, _, size)| size)
}

/// Runs a generic test body for both formats.
macro_rules! both_formats {
    ($($name:ident => $body:ident;)*) => {
        $(
            mod $name {
                #[test]
                fn ept() {
                    super::$body::<crate::Ept>();
                }
                #[test]
                fn npt() {
                    super::$body::<crate::Npt>();
                }
            }
        )*
    };
}

both_formats! {
    one_gib_leaf_costs_pml4_and_pdpt => one_gib_leaf;
    two_mib_leaves_cost_pml4_pdpt_pd => two_mib_leaves;
    unaligned_gpa_uses_4k_leaves => unaligned_gpa;
    unaligned_hpa_uses_4k_leaves => unaligned_hpa;
    mixed_range_uses_largest_leaves => mixed_range;
    largest_page_option_is_honoured => largest_page_option;
    overlaps_are_refused_atomically => overlaps;
    ranges_are_checked => ranges;
    out_of_frames_keeps_reserved_frames => out_of_frames;
    refuses_write_without_read => write_without_read;
}

fn one_gib_leaf<F: EntryFormat>() {
    let mut table = table::<F>();
    table.map(GIB, 4 * GIB, GIB, WB, RWX).unwrap();
    // The 1 GiB leaf sits in the PDPT: PML4 + PDPT, nothing below.
    assert_eq!(table.table_frame_count(), 2);
    let (hpa, entry, size) = table.lookup(GIB + 0x0123_4567).unwrap();
    assert_eq!((hpa, size), (4 * GIB + 0x0123_4567, PageSize::Size1GiB));
    assert_eq!(entry, F::make_leaf_entry(PageSize::Size1GiB, 4 * GIB, F::attributes(WB, RWX).unwrap()));
    assert_eq!(table.lookup(GIB - 1), None);
    assert_eq!(table.lookup(2 * GIB), None);
    // The root's entry 0 points at the PDPT, the second frame.
    let root = table.allocator().frame(table.root_address());
    assert_eq!(root[0], F::make_table_entry(FRAME_BASE + 0x1000));
    assert!(root[1..].iter().all(|&entry| entry == 0));
}

fn two_mib_leaves<F: EntryFormat>() {
    let mut table = table::<F>();
    table.map(2 * MIB, 0x8_0040_0000, 4 * MIB, WB, RWX).unwrap();
    assert_eq!(table.table_frame_count(), 3);
    let (hpa, _, size) = table.lookup(2 * MIB).unwrap();
    assert_eq!((hpa, size), (0x8_0040_0000, PageSize::Size2MiB));
    let (hpa, _, size) = table.lookup(6 * MIB - 8).unwrap();
    assert_eq!((hpa, size), (0x8_0080_0000 - 8, PageSize::Size2MiB));
    assert_eq!(table.lookup(6 * MIB), None);
    assert_eq!(table.lookup(2 * MIB - 1), None);
}

fn unaligned_gpa<F: EntryFormat>() {
    let mut table = table::<F>();
    table.map(0x1000, 0x20_0000, 8 * KIB, WB, RWX).unwrap();
    // PML4 + PDPT + PD + PT.
    assert_eq!(table.table_frame_count(), 4);
    assert_eq!(table.lookup(0x1010).map(|(hpa, _, size)| (hpa, size)), Some((0x20_0010, PageSize::Size4KiB)));
    assert_eq!(table.lookup(0x2fff).map(|(hpa, _, size)| (hpa, size)), Some((0x20_1fff, PageSize::Size4KiB)));
    assert_eq!(table.lookup(0x0fff), None);
    assert_eq!(table.lookup(0x3000), None);
}

fn unaligned_hpa<F: EntryFormat>() {
    let mut table = table::<F>();
    // The guest side is 2 MiB aligned, the host side is not.
    table.map(4 * MIB, 0x1234_5000, 2 * MIB, WB, RWX).unwrap();
    assert_eq!(table.table_frame_count(), 4);
    let (hpa, _, size) = table.lookup(6 * MIB - 0x1000).unwrap();
    assert_eq!((hpa, size), (0x1234_5000 + 2 * MIB - 0x1000, PageSize::Size4KiB));
}

fn mixed_range<F: EntryFormat>() {
    let mut table = table::<F>();
    // A 4 KiB head, two 2 MiB leaves, a 4 KiB tail.
    table.map(2 * MIB - 0x1000, 0x9_001f_f000, 4 * MIB + 0x2000, WB, RWX).unwrap();
    assert_eq!(leaf_size(&table, 2 * MIB - 0x1000), Some(PageSize::Size4KiB));
    assert_eq!(leaf_size(&table, 2 * MIB), Some(PageSize::Size2MiB));
    assert_eq!(leaf_size(&table, 4 * MIB + 0x1234), Some(PageSize::Size2MiB));
    assert_eq!(leaf_size(&table, 6 * MIB), Some(PageSize::Size4KiB));
    assert_eq!(leaf_size(&table, 6 * MIB + 0x1000), None);
    assert_eq!(table.lookup(6 * MIB + 0xfff).unwrap().0, 0x9_0060_0fff);
    // PML4 + PDPT + PD + one PT for the head and one for the tail.
    assert_eq!(table.table_frame_count(), 5);
}

fn largest_page_option<F: EntryFormat>() {
    let options = TableOptions { largest_page: PageSize::Size2MiB, ..TableOptions::default() };
    let mut table = SecondLevelTable::<F, _>::with_options(FakeFrames::with_limit(usize::MAX), options).unwrap();
    table.map(0, 0, GIB, WB, RWX).unwrap();
    assert_eq!(table.table_frame_count(), 3);
    assert_eq!(leaf_size(&table, GIB - 1), Some(PageSize::Size2MiB));
}

fn overlaps<F: EntryFormat>() {
    let mut table = table::<F>();
    table.map(2 * MIB, 0x4000_0000, 2 * MIB, WB, RWX).unwrap();
    table.map(8 * MIB + 0x5000, 0x5000, 0x1000, WB, RWX).unwrap();
    let frames = table.table_frame_count();
    let entry_at_zero = table.allocator().frame(table.root_address())[0];

    // Inside an existing large leaf.
    assert_eq!(table.map(2 * MIB + 0x1000, 0, 0x1000, WB, RWX), Err(MapError::AlreadyMapped { gpa: 2 * MIB + 0x1000 }));
    // The first 2 MiB is free, the second is not: nothing may be mapped.
    assert_eq!(table.map(0, 0, 4 * MIB, WB, RWX), Err(MapError::AlreadyMapped { gpa: 2 * MIB }));
    assert_eq!(table.lookup(0), None);
    // A large leaf over a table that holds a 4 KiB leaf reports that leaf.
    assert_eq!(table.map(8 * MIB, 0, 2 * MIB, WB, RWX), Err(MapError::AlreadyMapped { gpa: 8 * MIB + 0x5000 }));
    assert_eq!(table.map(0, 0, GIB, WB, RWX), Err(MapError::AlreadyMapped { gpa: 2 * MIB }));
    // The same 4 KiB page again.
    assert_eq!(table.map(8 * MIB + 0x5000, 0, 0x1000, WB, RWX), Err(MapError::AlreadyMapped { gpa: 8 * MIB + 0x5000 }));

    assert_eq!(table.table_frame_count(), frames);
    assert_eq!(table.allocator().frame(table.root_address())[0], entry_at_zero);
    // Adjacent ranges are fine.
    table.map(4 * MIB, 0, 2 * MIB, WB, RWX).unwrap();
    table.map(8 * MIB + 0x4000, 0, 0x1000, WB, RWX).unwrap();
}

fn ranges<F: EntryFormat>() {
    let mut table = table::<F>();
    let top = 1u64 << 48;
    assert_eq!(table.map(top, 0, 0x1000, WB, RWX), Err(MapError::OutOfRange { gpa: top, hpa: 0, size: 0x1000 }));
    assert_eq!(
        table.map(top - 0x1000, 0, 0x2000, WB, RWX),
        Err(MapError::OutOfRange { gpa: top - 0x1000, hpa: 0, size: 0x2000 })
    );
    let wrapping = !0xfff;
    assert!(matches!(table.map(wrapping, 0, 0x2000, WB, RWX), Err(MapError::OutOfRange { .. })));
    assert!(matches!(table.map(0, 1 << 52, 0x1000, WB, RWX), Err(MapError::OutOfRange { .. })));
    assert_eq!(table.map(0x800, 0, 0x1000, WB, RWX), Err(MapError::Misaligned { gpa: 0x800, hpa: 0, size: 0x1000 }));
    assert!(matches!(table.map(0, 0x10, 0x1000, WB, RWX), Err(MapError::Misaligned { .. })));
    assert!(matches!(table.map(0, 0, 0x1800, WB, RWX), Err(MapError::Misaligned { .. })));
    assert_eq!(table.map(0x1000, 0, 0, WB, RWX), Err(MapError::EmptyRange { gpa: 0x1000 }));
    assert_eq!(table.table_frame_count(), 1);

    // The last page below 2^48 is fine, and lookups above it miss.
    table.map(top - 0x1000, 0x1000, 0x1000, WB, RWX).unwrap();
    assert_eq!(table.lookup(top - 1).map(|(hpa, _, _)| hpa), Some(0x1fff));
    assert_eq!(table.lookup(top), None);
    assert_eq!(table.lookup(u64::MAX), None);

    // A narrower host address width.
    let options = TableOptions { host_address_bits: 39, ..TableOptions::default() };
    let mut narrow = SecondLevelTable::<F, _>::with_options(FakeFrames::with_limit(usize::MAX), options).unwrap();
    assert!(matches!(narrow.map(0, 1 << 39, 0x1000, WB, RWX), Err(MapError::OutOfRange { .. })));
    narrow.map(0, (1 << 39) - 0x1000, 0x1000, WB, RWX).unwrap();
}

fn out_of_frames<F: EntryFormat>() {
    // The root plus two of the three tables a 4 KiB leaf needs.
    let mut table = SecondLevelTable::<F, _>::new(FakeFrames::with_limit(3)).unwrap();
    assert_eq!(table.map(0x5000, 0x5000, 0x1000, WB, RWX), Err(MapError::OutOfFrames { gpa: 0x5000 }));
    assert_eq!(table.table_frame_count(), 1);
    assert_eq!(table.lookup(0x5000), None);
    assert!(table.allocator().frame(table.root_address()).iter().all(|&entry| entry == 0));
    assert_eq!(table.allocator().frames.len(), 3);

    // One more frame is enough now: the two reserved ones are reused.
    table.allocator().limit.set(4);
    table.map(0x5000, 0x5000, 0x1000, WB, RWX).unwrap();
    assert_eq!(table.table_frame_count(), 4);
    assert_eq!(table.allocator().frames.len(), 4);
    assert!(table.lookup(0x5000).is_some());

    assert!(SecondLevelTable::<F, _>::new(FakeFrames::with_limit(0)).is_none());
}

fn write_without_read<F: EntryFormat>() {
    let mut table = table::<F>();
    let write_only = Access { read: false, write: true, execute: false };
    assert_eq!(table.map(0, 0, 0x1000, WB, write_only), Err(MapError::InvalidAccess { gpa: 0, access: write_only }));
    let execute_only = Access { read: false, write: false, execute: true };
    assert!(matches!(table.map(0, 0, 0x1000, WB, execute_only), Err(MapError::InvalidAccess { .. })));
    assert_eq!(table.table_frame_count(), 1);
}

#[test]
fn ept_leaves_found_by_lookup_have_exact_bits() {
    let mut table = table::<Ept>();
    table.map(0, GIB, GIB, WB, RWX).unwrap();
    table.map(GIB, 0xfe00_0000, 2 * MIB, MemoryType::DeviceNGnRE, Access::READ_WRITE).unwrap();
    table.map(GIB + 2 * MIB, 0xc000_1000, 0x1000, MemoryType::NormalNonCacheable, Access::READ).unwrap();
    // SDM Table 29-2: RWX 0x7 | WB 6 << 3 | ignore-PAT 0x40 | PS 0x80.
    assert_eq!(table.lookup(0x10).unwrap(), (GIB + 0x10, GIB | 0xf7, PageSize::Size1GiB));
    // Table 29-4: RW 0x3 | UC 0 | ignore-PAT 0x40 | PS 0x80.
    assert_eq!(table.lookup(GIB + 0x44).unwrap(), (0xfe00_0044, 0xfe00_00c3, PageSize::Size2MiB));
    // Table 29-6: R 0x1 | UC 0, ignore-PAT clear.
    assert_eq!(table.lookup(GIB + 2 * MIB).unwrap(), (0xc000_1000, 0xc000_1001, PageSize::Size4KiB));
    // Non-leaf entries: next table | RWX.
    let root = table.allocator().frame(table.root_address());
    assert_eq!(root[0], (FRAME_BASE + 0x1000) | 0x7);
}

#[test]
fn npt_leaves_found_by_lookup_have_exact_bits() {
    const NX: u64 = 1 << 63;
    let mut table = table::<Npt>();
    table.map(0, GIB, GIB, WB, RWX).unwrap();
    table.map(GIB, 0xfe00_0000, 2 * MIB, MemoryType::NormalNonCacheable, Access::READ_WRITE).unwrap();
    table.map(GIB + 2 * MIB, 0xc000_1000, 0x1000, MemoryType::NormalWriteCombining, Access::READ).unwrap();
    table.map(GIB + 2 * MIB + 0x1000, 0xd000_0000, 0x1000, MemoryType::DeviceNGnRnE, Access::READ_WRITE).unwrap();
    // P | R/W | U/S = 0x7, PS 0x80, host PAT index 0 (WB).
    assert_eq!(table.lookup(0x10).unwrap(), (GIB + 0x10, GIB | 0x87, PageSize::Size1GiB));
    // Index 4 (WC) in a 2 MiB leaf: PAT is bit 12, which is not address.
    assert_eq!(table.lookup(GIB + 0x1044).unwrap(), (0xfe00_1044, 0xfe00_1087 | NX, PageSize::Size2MiB));
    // Index 4 in a 4 KiB leaf: PAT is bit 7; read-only, so R/W clear.
    assert_eq!(table.lookup(GIB + 2 * MIB).unwrap(), (0xc000_1000, 0xc000_1085 | NX, PageSize::Size4KiB));
    // Index 3 (UC): PCD | PWT = 0x18.
    assert_eq!(table.lookup(GIB + 2 * MIB + 0x1008).unwrap(), (0xd000_0008, 0xd000_001f | NX, PageSize::Size4KiB));
    let root = table.allocator().frame(table.root_address());
    assert_eq!(root[0], (FRAME_BASE + 0x1000) | 0x7);
}

#[test]
fn host_identity_layout_builds_with_the_predicted_leaves() {
    use crate::identity::{IdentityLayout, Protection};
    use crate::paging::HostPaging;
    let mut layout = IdentityLayout::new();
    layout.set(0, GIB, Protection::RAM);
    layout.set(0x8000, 0x9000, Protection::WRITABLE_CODE);
    layout.set(0xfee0_0000, 0xfee0_0400, Protection::MMIO);
    layout.unmap(0, 0x1000);
    let mut table = table::<HostPaging>();
    for m in layout.mappings() {
        table.map(m.base, m.base, m.size(), m.protection.memory, m.protection.access).unwrap();
    }
    let counts = layout.leaf_counts(PageSize::Size1GiB);
    assert_eq!((counts.size_4kib, counts.size_2mib, counts.size_1gib), (512, 511, 0));
    // PML4, PDPT, the PD and PT of the first 2 MiB, the PD and PT of the APIC.
    assert_eq!(table.table_frame_count(), 6);
    assert!(table.lookup(0).is_none(), "page 0 stays unmapped");
    assert!(table.lookup(GIB).is_none() && table.lookup(0xfed0_0000).is_none(), "holes stay unmapped");
    let (pa, trampoline, size) = table.lookup(0x8123).unwrap();
    assert_eq!((pa, size), (0x8123, PageSize::Size4KiB));
    assert_eq!(trampoline & (1 << 63), 0, "the trampoline page is executable");
    let (_, ram, size) = table.lookup(0x3000_0000).unwrap();
    assert_eq!((size, ram & (1 << 63), ram & 0x18), (PageSize::Size2MiB, 1 << 63, 0), "RAM is NX and write-back");
    let (_, apic, _) = table.lookup(0xfee0_0300).unwrap();
    assert_eq!(apic & 0x18, 0x18, "the APIC page is uncached (PCD | PWT)");
}

both_formats! {
    set_page_access_rewrites_one_4k_leaf_in_place => set_page_access;
    unmap_removes_whole_leaves_and_allows_remapping => unmap_whole_leaves;
    unmap_refuses_holes_and_partial_leaves_atomically => unmap_refusals;
}

fn unmap_whole_leaves<F: EntryFormat>() {
    let mut table = table::<F>();
    // One 2 MiB leaf followed by two 4 KiB leaves.
    table.map(2 * MIB, 0x8_0020_0000, 2 * MIB + 8 * KIB, WB, RWX).unwrap();
    let frames = table.table_frame_count();
    let removed = table.unmap(2 * MIB, 2 * MIB + 8 * KIB).unwrap();
    assert_eq!(removed, [(2 * MIB, PageSize::Size2MiB), (4 * MIB, PageSize::Size4KiB), (4 * MIB + 4 * KIB, PageSize::Size4KiB)]);
    assert_eq!(table.lookup(2 * MIB), None);
    assert_eq!(table.lookup(4 * MIB + 4 * KIB), None);
    // Table frames stay linked and are reused by the next mapping.
    table.map(2 * MIB, 0x9_0020_0000, 4 * KIB, WB, RWX).unwrap();
    assert_eq!(table.table_frame_count(), frames + 1);
    assert_eq!(table.lookup(2 * MIB).map(|(hpa, _, _)| hpa), Some(0x9_0020_0000));
    assert_eq!(table.unmap(2 * MIB, 4 * KIB).unwrap(), [(2 * MIB, PageSize::Size4KiB)]);
}

fn unmap_refusals<F: EntryFormat>() {
    let mut table = table::<F>();
    table.map(2 * MIB, 0x8_0020_0000, 2 * MIB, WB, RWX).unwrap();
    table.map(8 * MIB, 0x8_0080_0000, 4 * KIB, WB, RWX).unwrap();
    assert_eq!(table.unmap(2 * MIB, 0), Err(UnmapError::BadRange { gpa: 2 * MIB, size: 0 }));
    assert_eq!(table.unmap(2 * MIB + 1, 4 * KIB), Err(UnmapError::BadRange { gpa: 2 * MIB + 1, size: 4 * KIB }));
    // Part of a 2 MiB leaf: would split it.
    assert_eq!(table.unmap(3 * MIB, 4 * KIB), Err(UnmapError::PartialLeaf { gpa: 2 * MIB }));
    // A range running past the leaf into a hole: nothing changes.
    assert_eq!(table.unmap(2 * MIB, 4 * MIB), Err(UnmapError::NotMapped { gpa: 4 * MIB }));
    assert!(table.lookup(2 * MIB).is_some());
    assert_eq!(table.unmap(16 * MIB, 4 * KIB), Err(UnmapError::NotMapped { gpa: 16 * MIB }));
    assert!(table.lookup(8 * MIB).is_some());
}

fn set_page_access<F: EntryFormat>() {
    let mut table = table::<F>();
    let read_execute = Access { read: true, write: false, execute: true };
    table.map(2 * MIB, 0x8_0020_0000, 2 * MIB, WB, RWX).unwrap();
    table.map(8 * MIB, 0x8_0080_0000, 8 * KIB, WB, RWX).unwrap();
    let frames = table.table_frame_count();
    let neighbour = table.lookup(8 * MIB).unwrap().1;
    let old = table.set_page_access(8 * MIB + 4 * KIB, WB, read_execute).unwrap();
    assert_eq!(old, F::make_leaf_entry(PageSize::Size4KiB, 0x8_0080_1000, F::attributes(WB, RWX).unwrap()));
    let (hpa, entry, size) = table.lookup(8 * MIB + 4 * KIB + 8).unwrap();
    assert_eq!((hpa, size), (0x8_0080_1008, PageSize::Size4KiB));
    assert_eq!(entry, F::make_leaf_entry(PageSize::Size4KiB, 0x8_0080_1000, F::attributes(WB, read_execute).unwrap()));
    // The neighbour is untouched, and nothing was allocated.
    assert_eq!(table.lookup(8 * MIB).map(|(_, e, _)| e), Some(neighbour));
    assert_eq!(table.table_frame_count(), frames);
    // And back.
    table.set_page_access(8 * MIB + 4 * KIB, WB, RWX).unwrap();
    assert_eq!(table.lookup(8 * MIB + 4 * KIB).map(|(_, e, _)| e), Some(old));
    // Refusals: unaligned, unmapped, inside a large leaf, inexpressible access.
    assert_eq!(table.set_page_access(8 * MIB + 1, WB, RWX), Err(UnmapError::BadRange { gpa: 8 * MIB + 1, size: 4 * KIB }));
    assert_eq!(table.set_page_access(16 * MIB, WB, RWX), Err(UnmapError::NotMapped { gpa: 16 * MIB }));
    assert_eq!(table.set_page_access(3 * MIB, WB, RWX), Err(UnmapError::PartialLeaf { gpa: 2 * MIB }));
    let write_only = Access { read: false, write: true, execute: false };
    assert_eq!(table.set_page_access(8 * MIB, WB, write_only), Err(UnmapError::BadRange { gpa: 8 * MIB, size: 4 * KIB }));
}
