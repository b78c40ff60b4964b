//! A four-level second-level table, generic over the entry format.
//!
//! [`SecondLevelTable`] walks and builds the radix tree; the entry bits come
//! from an [`EntryFormat`] ([`Ept`](crate::Ept) or [`Npt`](crate::Npt)) and
//! the table frames from a [`FrameAllocator`]. A mapping request is applied
//! in two phases (after Hafnium's `mm_ptable_update`):
//!
//! 1. prepare: validate the request, walk the range without writing, refuse
//!    any overlap with a present entry, count the tables still missing and
//!    reserve that many zeroed frames; every failure happens here, before the
//!    live table changes;
//! 2. commit: write table and leaf entries, which cannot fail.
//!
//! Frames reserved by a request that then ran out of frames stay reserved
//! and are used by the next request. Entries are only ever written into
//! non-present slots, so a commit never needs break-before-make; replacing a
//! present entry is refused with [`MapError::AlreadyMapped`] and left to the
//! caller (unmap, invalidate, then map).
//!
//! [`SecondLevelTable::unmap`] removes whole leaves only (it never splits a
//! large page), in the same two phases: every leaf of the range is found
//! first, then all are cleared. Table frames emptied by an unmap stay linked
//! (they are reused by later mappings of the same range, which therefore
//! get leaves no larger than the emptied table's level allows: a 2 MiB leaf
//! over an emptied page table is refused as [`MapError::AlreadyMapped`]);
//! the caller invalidates whatever caches the translation (TLB, IOTLB).

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::marker::PhantomData;

use crate::{
    Access, EntryFormat, GUEST_ADDRESS_BITS, Level, MAX_HOST_ADDRESS_BITS, MemoryType, PAGE_SIZE_4KIB, PageSize,
};

/// Where a table gets its frames, and how it reaches their contents.
///
/// The table writes into frames only through [`frame_mut`](Self::frame_mut)
/// and hands their host-physical addresses to the CPU, so an implementation
/// must keep three promises: each frame it hands out is 4 KiB aligned, zeroed
/// and used by nothing else until the table is dropped; `frame(pa)` and
/// `frame_mut(pa)` give the memory that the CPU reads at host-physical `pa`;
/// and both are only called with addresses it handed out. On the host a test
/// implements it with a vector of boxed arrays and made-up addresses.
pub trait FrameAllocator {
    /// A fresh zeroed 4 KiB frame, by host-physical address, or `None` when
    /// the pool is exhausted.
    fn allocate_zeroed_frame(&mut self) -> Option<u64>;

    /// The entries of the frame at `pa`, which this allocator handed out.
    fn frame(&self, pa: u64) -> &[u64; 512];

    /// The entries of the frame at `pa`, mutably.
    fn frame_mut(&mut self, pa: u64) -> &mut [u64; 512];
}

/// A mapping request the table refused. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// `size` is zero.
    EmptyRange {
        /// The requested guest-physical start.
        gpa: u64,
    },
    /// `gpa`, `hpa` or `size` is not a multiple of 4 KiB.
    Misaligned {
        /// The requested guest-physical start.
        gpa: u64,
        /// The requested host-physical start.
        hpa: u64,
        /// The requested size in bytes.
        size: u64,
    },
    /// The guest range reaches beyond [`GUEST_ADDRESS_BITS`], or the host
    /// range beyond [`TableOptions::host_address_bits`].
    OutOfRange {
        /// The requested guest-physical start.
        gpa: u64,
        /// The requested host-physical start.
        hpa: u64,
        /// The requested size in bytes.
        size: u64,
    },
    /// Part of the guest range is already mapped.
    AlreadyMapped {
        /// The lowest guest-physical address of the request that is mapped.
        gpa: u64,
    },
    /// The frame allocator ran dry while reserving the tables this request
    /// needs. The frames reserved so far are kept for the next request.
    OutOfFrames {
        /// The requested guest-physical start.
        gpa: u64,
    },
    /// The entry format cannot express `access` (write or execute without
    /// read, or no access).
    InvalidAccess {
        /// The requested guest-physical start.
        gpa: u64,
        /// The refused access.
        access: Access,
    },
}

/// An unmap request the table refused. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmapError {
    /// `size` is zero, or `gpa` or `size` is not a multiple of 4 KiB, or the
    /// range reaches beyond [`GUEST_ADDRESS_BITS`].
    BadRange {
        /// The requested guest-physical start.
        gpa: u64,
        /// The requested size in bytes.
        size: u64,
    },
    /// Nothing is mapped at this address of the range.
    NotMapped {
        /// The first unmapped guest-physical address found.
        gpa: u64,
    },
    /// A leaf covers this address but reaches outside the range: unmapping
    /// would have to split it.
    PartialLeaf {
        /// The start of that leaf.
        gpa: u64,
    },
}

/// Limits a table is built with, from the CPU's capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableOptions {
    /// The largest leaf to use. 1 GiB leaves need IA32_VMX_EPT_VPID_CAP bit
    /// 17 (EPT) or CPUID Fn8000_0001 EDX bit 26 (NPT); 2 MiB leaves need
    /// capability bit 16 (EPT) and are always available with NPT.
    pub largest_page: PageSize,
    /// Host-physical address bits (MAXPHYADDR, CPUID Fn8000_0008 EAX bits
    /// 7:0): address bits above it are reserved in both formats. At most
    /// [`MAX_HOST_ADDRESS_BITS`].
    pub host_address_bits: u32,
}

impl Default for TableOptions {
    /// Every page size, and the architectural 52 address bits.
    fn default() -> Self {
        TableOptions { largest_page: PageSize::Size1GiB, host_address_bits: MAX_HOST_ADDRESS_BITS }
    }
}

/// One partition's second-level table: a four-level tree in entry format `F`
/// whose frames come from `A`.
pub struct SecondLevelTable<F: EntryFormat, A: FrameAllocator> {
    allocator: A,
    root: u64,
    options: TableOptions,
    /// Frames linked into the tree, the root included.
    frame_count: usize,
    /// Zeroed frames reserved by a prepare phase and not yet linked.
    spare_frames: Vec<u64>,
    format: PhantomData<F>,
}

impl<F: EntryFormat, A: FrameAllocator> SecondLevelTable<F, A> {
    /// An empty table (every guest-physical address faults) with
    /// [`TableOptions::default`], or `None` if `allocator` has no frame for
    /// the root.
    pub fn new(allocator: A) -> Option<Self> {
        Self::with_options(allocator, TableOptions::default())
    }

    /// An empty table with `options`, or `None` if `allocator` has no frame
    /// for the root.
    ///
    /// # Panics
    /// If `options.host_address_bits` is outside 32..=52.
    pub fn with_options(mut allocator: A, options: TableOptions) -> Option<Self> {
        assert!((32..=MAX_HOST_ADDRESS_BITS).contains(&options.host_address_bits));
        let root = allocator.allocate_zeroed_frame()?;
        let table = SecondLevelTable {
            allocator,
            root,
            options,
            frame_count: 1,
            spare_frames: Vec::new(),
            format: PhantomData,
        };
        table.check_frame(root);
        Some(table)
    }

    /// The root (PML4) frame's host-physical address, for
    /// [`ept::eptp`](crate::ept::eptp) or [`npt::ncr3`](crate::npt::ncr3).
    pub fn root_address(&self) -> u64 {
        self.root
    }

    /// The number of frames linked into the tree, the root included. Frames
    /// reserved by a request that failed with [`MapError::OutOfFrames`] are
    /// not linked yet and not counted.
    pub fn table_frame_count(&self) -> usize {
        self.frame_count
    }

    /// The frame allocator.
    pub fn allocator(&self) -> &A {
        &self.allocator
    }

    /// The frame allocator, mutably (e.g. to collect the frames it wrote for
    /// a cache flush).
    pub fn allocator_mut(&mut self) -> &mut A {
        &mut self.allocator
    }

    /// Maps guest-physical `[gpa, gpa + size)` to host-physical
    /// `[hpa, hpa + size)` as `memory` with `access`, using 1 GiB and 2 MiB
    /// leaves wherever both addresses are aligned to them and enough of the
    /// range remains (up to [`TableOptions::largest_page`]), 4 KiB leaves
    /// elsewhere. On error nothing is mapped.
    ///
    /// # Errors
    /// [`MapError::InvalidAccess`] if the format cannot express `access`,
    /// [`MapError::EmptyRange`] for a zero `size`, [`MapError::Misaligned`]
    /// unless all three are 4 KiB multiples, [`MapError::OutOfRange`] beyond
    /// the guest or host address width, [`MapError::AlreadyMapped`] if any
    /// part of the range is mapped, [`MapError::OutOfFrames`] if the
    /// allocator cannot supply the tables needed.
    pub fn map(&mut self, gpa: u64, hpa: u64, size: u64, memory: MemoryType, access: Access) -> Result<(), MapError> {
        let attributes = F::attributes(memory, access).map_err(|_| MapError::InvalidAccess { gpa, access })?;
        if size == 0 {
            return Err(MapError::EmptyRange { gpa });
        }
        if (gpa | hpa | size) & (PAGE_SIZE_4KIB - 1) != 0 {
            return Err(MapError::Misaligned { gpa, hpa, size });
        }
        let fits = |start: u64, bits: u32| start.checked_add(size).is_some_and(|end| end <= 1 << bits);
        if !fits(gpa, GUEST_ADDRESS_BITS) || !fits(hpa, self.options.host_address_bits) {
            return Err(MapError::OutOfRange { gpa, hpa, size });
        }

        // Prepare: find conflicts and count the tables to create.
        let mut new_tables = BTreeSet::new();
        for (chunk_gpa, _, leaf_size) in chunks(self.options.largest_page, gpa, hpa, size) {
            self.prepare_chunk(chunk_gpa, leaf_size, &mut new_tables)?;
        }
        while self.spare_frames.len() < new_tables.len() {
            let frame = self.allocator.allocate_zeroed_frame().ok_or(MapError::OutOfFrames { gpa })?;
            self.check_frame(frame);
            self.spare_frames.push(frame);
        }

        // Commit: cannot fail.
        for (chunk_gpa, chunk_hpa, leaf_size) in chunks(self.options.largest_page, gpa, hpa, size) {
            self.commit_chunk(chunk_gpa, chunk_hpa, leaf_size, attributes);
        }
        Ok(())
    }

    /// The translation of `gpa`: the host-physical address it maps to (the
    /// offset inside a large page included), the raw leaf entry, and the
    /// leaf's size. `None` if `gpa` is not mapped or beyond
    /// [`GUEST_ADDRESS_BITS`].
    pub fn lookup(&self, gpa: u64) -> Option<(u64, u64, PageSize)> {
        if gpa >> GUEST_ADDRESS_BITS != 0 {
            return None;
        }
        let mut table = self.root;
        let mut level = Level::Pml4;
        loop {
            let entry = self.allocator.frame(table)[level.index(gpa)];
            if !F::is_present(entry) {
                return None;
            }
            let address = F::address(level, entry);
            if F::is_leaf(level, entry) {
                let size = level.leaf_size()?;
                return Some((address | (gpa & (size.bytes() - 1)), entry, size));
            }
            table = address;
            level = level.next()?;
        }
    }

    /// Removes the mapping of guest-physical `[gpa, gpa + size)`, which must
    /// consist of whole leaves (as [`map`](Self::map) made them, or several
    /// mappings back to back). Returns the leaves removed, each as its
    /// guest-physical start and size, so the caller can invalidate exactly
    /// those. On error nothing is changed.
    ///
    /// # Errors
    /// [`UnmapError::BadRange`] for an empty, unaligned or too wide range,
    /// [`UnmapError::NotMapped`] where part of it is not mapped,
    /// [`UnmapError::PartialLeaf`] where a leaf reaches outside it.
    pub fn unmap(&mut self, gpa: u64, size: u64) -> Result<Vec<(u64, PageSize)>, UnmapError> {
        let end = gpa.checked_add(size).filter(|&end| end <= 1 << GUEST_ADDRESS_BITS);
        let Some(end) = end.filter(|_| size != 0 && (gpa | size) & (PAGE_SIZE_4KIB - 1) == 0) else {
            return Err(UnmapError::BadRange { gpa, size });
        };
        // Prepare: find every leaf (table frame, index, start, size).
        let mut leaves = Vec::new();
        let mut at = gpa;
        while at < end {
            let (table, index, leaf_gpa, leaf_size) = self.leaf_slot(at).ok_or(UnmapError::NotMapped { gpa: at })?;
            let leaf_end = leaf_gpa + leaf_size.bytes();
            if leaf_gpa != at || leaf_end > end {
                return Err(UnmapError::PartialLeaf { gpa: leaf_gpa });
            }
            leaves.push((table, index, leaf_gpa, leaf_size));
            at = leaf_end;
        }
        // Commit: clear them.
        for &(table, index, _, _) in &leaves {
            self.allocator.frame_mut(table)[index] = 0;
        }
        Ok(leaves.into_iter().map(|(_, _, leaf_gpa, leaf_size)| (leaf_gpa, leaf_size)).collect())
    }

    /// Rewrites the 4 KiB leaf mapping `gpa` (page aligned) in place with
    /// `memory` and `access`, keeping its host-physical address: one page's
    /// permissions change (write-protecting a page for tracking, and back)
    /// without the entry ever being non-present, so a concurrent walk sees
    /// either the old or the new entry (an aligned 64-bit store). The
    /// caller invalidates cached translations (TLB) afterwards. Returns the
    /// old entry.
    ///
    /// # Errors
    /// [`UnmapError::BadRange`] for an unaligned `gpa` or one beyond
    /// [`GUEST_ADDRESS_BITS`], [`UnmapError::NotMapped`] if nothing maps it,
    /// [`UnmapError::PartialLeaf`] if a larger leaf does (it is never
    /// split); [`MapError`]s are not possible: an access the format cannot
    /// express is refused as [`UnmapError::BadRange`] too.
    pub fn set_page_access(&mut self, gpa: u64, memory: MemoryType, access: Access) -> Result<u64, UnmapError> {
        let bad = UnmapError::BadRange { gpa, size: PAGE_SIZE_4KIB };
        if gpa & (PAGE_SIZE_4KIB - 1) != 0 || gpa >> GUEST_ADDRESS_BITS != 0 {
            return Err(bad);
        }
        let attributes = F::attributes(memory, access).map_err(|_| bad)?;
        let (table, index, leaf_gpa, leaf_size) = self.leaf_slot(gpa).ok_or(UnmapError::NotMapped { gpa })?;
        if leaf_size != PageSize::Size4KiB {
            return Err(UnmapError::PartialLeaf { gpa: leaf_gpa });
        }
        let slot = &mut self.allocator.frame_mut(table)[index];
        let old = *slot;
        let hpa = F::address(Level::Pt, old);
        // An aligned 64-bit store: a concurrent hardware walk reads either
        // the old or the new entry, both present.
        *slot = F::make_leaf_entry(PageSize::Size4KiB, hpa, attributes);
        Ok(old)
    }

    /// The leaf translating `gpa`: the table frame holding it, its index
    /// there, the leaf's guest-physical start and its size.
    fn leaf_slot(&self, gpa: u64) -> Option<(u64, usize, u64, PageSize)> {
        let mut table = self.root;
        let mut level = Level::Pml4;
        loop {
            let index = level.index(gpa);
            let entry = self.allocator.frame(table)[index];
            if !F::is_present(entry) {
                return None;
            }
            if F::is_leaf(level, entry) {
                let size = level.leaf_size()?;
                return Some((table, index, gpa & !(size.bytes() - 1), size));
            }
            table = F::address(level, entry);
            level = level.next()?;
        }
    }

    /// Checks that a leaf of `leaf_size` at `gpa` would land in an empty
    /// slot, and records in `new_tables` (as level and the guest-physical
    /// bits above what one table covers) each table the walk would create.
    fn prepare_chunk(
        &self,
        gpa: u64,
        leaf_size: PageSize,
        new_tables: &mut BTreeSet<(u32, u64)>,
    ) -> Result<(), MapError> {
        let mut table = Some(self.root);
        let mut level = Level::Pml4;
        loop {
            let entry = table.map_or(0, |table| self.allocator.frame(table)[level.index(gpa)]);
            if level == leaf_size.level() {
                if !F::is_present(entry) {
                    return Ok(());
                }
                if F::is_leaf(level, entry) {
                    return Err(MapError::AlreadyMapped { gpa });
                }
                // A table where the leaf would go: report its first leaf.
                let first = self.first_mapped(F::address(level, entry), level, gpa).unwrap_or(gpa);
                return Err(MapError::AlreadyMapped { gpa: first });
            }
            let next = level.next().expect("a leaf level lies below every non-leaf level");
            if !F::is_present(entry) {
                new_tables.insert((next.shift(), gpa >> level.shift()));
                table = None;
            } else if F::is_leaf(level, entry) {
                // A larger leaf already covers `gpa`.
                return Err(MapError::AlreadyMapped { gpa });
            } else {
                table = Some(F::address(level, entry));
            }
            level = next;
        }
    }

    /// The lowest guest-physical address mapped by a leaf under the entry of
    /// `level` that covers `base` and points at `table`.
    fn first_mapped(&self, table: u64, level: Level, base: u64) -> Option<u64> {
        let next = level.next()?;
        let base = base & !((1u64 << level.shift()) - 1);
        self.allocator.frame(table).iter().enumerate().find_map(|(index, &entry)| {
            let gpa = base | ((index as u64) << next.shift());
            if !F::is_present(entry) {
                None
            } else if F::is_leaf(next, entry) {
                Some(gpa)
            } else {
                self.first_mapped(F::address(next, entry), next, gpa)
            }
        })
    }

    /// Writes the leaf for one prepared chunk, linking spare frames in as
    /// the missing tables.
    fn commit_chunk(&mut self, gpa: u64, hpa: u64, leaf_size: PageSize, attributes: F::Attributes) {
        let mut table = self.root;
        let mut level = Level::Pml4;
        while level != leaf_size.level() {
            let index = level.index(gpa);
            let mut entry = self.allocator.frame(table)[index];
            if !F::is_present(entry) {
                let frame = self.spare_frames.pop().expect("prepare reserved a frame for every missing table");
                entry = F::make_table_entry(frame);
                self.allocator.frame_mut(table)[index] = entry;
                self.frame_count += 1;
            }
            debug_assert!(!F::is_leaf(level, entry), "prepare refused conflicting leaves");
            table = F::address(level, entry);
            level = level.next().expect("a leaf level lies below every non-leaf level");
        }
        let slot = &mut self.allocator.frame_mut(table)[level.index(gpa)];
        debug_assert!(!F::is_present(*slot), "prepare refused present entries");
        *slot = F::make_leaf_entry(leaf_size, hpa, attributes);
    }

    /// Panics if the allocator broke its promise of aligned, addressable
    /// frames: linking such a frame would point the CPU elsewhere.
    fn check_frame(&self, frame: u64) {
        assert!(
            frame & (PAGE_SIZE_4KIB - 1) == 0 && frame >> self.options.host_address_bits == 0,
            "frame allocator returned an unusable frame {frame:#x}"
        );
    }
}

/// The pieces `[gpa, gpa + size)` is mapped in, each as (gpa, hpa, leaf
/// size): the largest leaf up to `largest_page` that both addresses are
/// aligned to and that the remaining size covers.
pub(crate) fn chunks(largest_page: PageSize, gpa: u64, hpa: u64, size: u64) -> impl Iterator<Item = (u64, u64, PageSize)> {
    let mut offset = 0;
    core::iter::from_fn(move || {
        if offset == size {
            return None;
        }
        let (chunk_gpa, chunk_hpa, remaining) = (gpa + offset, hpa + offset, size - offset);
        let leaf_size = [PageSize::Size1GiB, PageSize::Size2MiB]
            .into_iter()
            .filter(|&candidate| candidate <= largest_page)
            .find(|candidate| {
                let bytes = candidate.bytes();
                (chunk_gpa | chunk_hpa) & (bytes - 1) == 0 && remaining >= bytes
            })
            .unwrap_or(PageSize::Size4KiB);
        offset += leaf_size.bytes();
        Some((chunk_gpa, chunk_hpa, leaf_size))
    })
}

#[cfg(test)]
mod tests;
