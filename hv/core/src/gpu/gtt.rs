//! A partition's virtual global GTT: what the guest sees, and the shadow
//! entries the hypervisor writes into the partition's slice of the real GTT
//! (DESIGN.md §5).
//!
//! The guest's GTT has `entries` 64-bit entries (format in
//! [`bulkhead_abi::gpu::gtt`]) and reads back exactly what it wrote, even
//! for entries that were refused. Each complete entry the guest writes is
//! validated through the partition's *device view* (rule 1): the page
//! address is an I/O virtual address, and it must lie in one of the
//! partition's RAM regions that allow DMA, readable and writable (the GTT
//! has no read-only bit, so the GPU may write any page an entry maps). The
//! host page is then pinned (rule 3) and written into real index
//! `slice base + guest index`. Anything else — not present, outside the
//! device view (the hypervisor's or another partition's memory is never
//! in it), a device region, a page the real entry cannot encode, a pin the
//! partition's limit refuses — makes the real entry point at the scratch
//! page.
//!
//! An entry with [`vgpu::GTT_LOCAL_MEMORY`] set names instead an offset
//! into the partition's share of the GPU's local memory (its BAR2). That
//! offset is checked against the share's size and relocated by the share's
//! real offset ([`LocalMemory`]); local memory belongs to the GPU, not to
//! any partition's RAM, so nothing is pinned for it.
//!
//! Guests may write an entry as two 4-byte halves, in either order. The
//! guest-visible value changes at once, but the real entry changes only
//! when both halves have been written since the last complete entry: a
//! half-written entry mixes an old and a new half, and validating it would
//! pin (and expose to the GPU) a page the guest never meant to map.

use crate::address::{Gpa, Hpa, Iova};
use crate::address_space::{Access, AddressSpace, RegionKind};
use crate::pinning::{PinError, PinnedPages};
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use bulkhead_abi::gpu::{gtt, vgpu};
use core::fmt;

/// Bytes in one GTT entry.
const ENTRY_SIZE: u64 = gtt::ENTRY_SIZE;
/// Halves-written mask of an entry: low dword, high dword.
const LOW_HALF: u8 = 1;
const HIGH_HALF: u8 = 2;
const BOTH_HALVES: u8 = LOW_HALF | HIGH_HALF;

/// Why a guest access to the virtual GTT was refused; the caller logs it
/// and ignores the write (reads return zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GttError {
    /// The entry lies beyond the partition's GTT.
    OutOfRange {
        /// Byte offset of the access in the GTT window.
        offset: u64,
        /// The partition's entry count.
        entries: u64,
    },
    /// The access is not aligned to its size.
    Unaligned {
        /// Byte offset of the access.
        offset: u64,
        /// Bytes accessed.
        size: u8,
    },
}

impl fmt::Display for GttError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GttError::OutOfRange { offset, entries } => {
                write!(f, "GTT access at offset {offset:#x} is beyond the partition's {entries} entries")
            }
            GttError::Unaligned { offset, size } => write!(f, "{size}-byte GTT access at offset {offset:#x} is unaligned"),
        }
    }
}

/// Why a virtual GTT could not be created (a configuration error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GttConfigError {
    /// No entries, or the slice's end (in entries or graphics bytes) overflows.
    BadSlice {
        /// First real index.
        base: u64,
        /// Entries.
        entries: u64,
    },
    /// The scratch page is not 4 KiB aligned or does not fit a GTT entry.
    BadScratch(Hpa),
    /// The local-memory share is not 4 KiB aligned, or its end overflows
    /// or does not fit in a GTT entry's address bits.
    BadLocalMemory(LocalMemory),
}

/// A partition's share of the GPU's local memory: bytes
/// `[offset, offset + size)` of the real local memory. The guest sees it
/// as its BAR2, starting at offset 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalMemory {
    /// Real local-memory offset of the share's first byte.
    pub offset: u64,
    /// Bytes in the share (0: the partition has no local memory).
    pub size: u64,
}

/// What a present real GTT entry of the partition maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A host page of the partition's RAM (pinned).
    Ram(Hpa),
    /// A page of local memory, at this real local-memory offset.
    Local(u64),
}

/// Why a present entry was pointed at the scratch page instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// The page is not in the partition's device view: outside its memory
    /// (this covers the hypervisor's and other partitions' memory), or in
    /// a region of its own that devices may not reach.
    OutsideDeviceView(Iova),
    /// The page is in a device (MMIO) region of the partition.
    DeviceMemory(Iova),
    /// The region does not allow both reads and writes.
    NotReadWrite(Iova),
    /// The host page does not fit in a GTT entry's address bits.
    NotEncodable(Hpa),
    /// The partition's pin limit (or count) refused the page.
    Pin(PinError),
    /// A local-memory entry whose page does not lie wholly inside the
    /// partition's share of local memory (the guest's offset).
    OutsideLocalMemory(u64),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::OutsideDeviceView(iova) => write!(f, "{iova} is not memory the partition's devices may reach"),
            Invalid::DeviceMemory(iova) => write!(f, "{iova} is device memory"),
            Invalid::NotReadWrite(iova) => write!(f, "{iova} is not readable and writable"),
            Invalid::NotEncodable(hpa) => write!(f, "host page {hpa} does not fit in a GTT entry"),
            Invalid::Pin(e) => write!(f, "{e}"),
            Invalid::OutsideLocalMemory(offset) => write!(f, "local-memory offset {offset:#x} is outside the partition's share"),
        }
    }
}

/// One entry of the real GTT to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealGttUpdate {
    /// Index in the real GTT.
    pub index: u64,
    /// The 64-bit entry.
    pub value: u64,
}

/// What a complete entry now maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryState {
    /// The guest cleared the present bit: scratch page, nothing to report.
    NotPresent,
    /// What the entry maps (a RAM page is pinned).
    Mapped(Target),
    /// The guest's entry was refused: scratch page; the caller logs why.
    Refused(Invalid),
}

/// The effect of one guest write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GttWrite {
    /// Half of an entry: held until the other half is written.
    Held {
        /// The guest entry index.
        index: u64,
    },
    /// A complete entry: write `update` into the real GTT (then invalidate
    /// the GPU's GTT caches as the driver requires).
    Update {
        /// What to write.
        update: RealGttUpdate,
        /// What it maps.
        state: EntryState,
    },
}

/// Checks `page` (an entry's page address) through `space`'s device view
/// and returns the host page. The device view is the regions that allow
/// DMA, at I/O virtual address = guest-physical address (see
/// [`crate::dma`]), so the IOVA names a guest-physical address of a DMA
/// region and nothing else.
///
/// # Errors
/// The [`Invalid`] class of the page.
pub fn validate_page(space: &AddressSpace, page: Iova) -> Result<Hpa, Invalid> {
    let gpa = Gpa::new(page.raw());
    let region = space.region_at(gpa).ok_or(Invalid::OutsideDeviceView(page))?;
    if region.kind == RegionKind::Device {
        return Err(Invalid::DeviceMemory(page));
    }
    if !region.dma {
        return Err(Invalid::OutsideDeviceView(page));
    }
    let read = space.translate(gpa, gtt::PAGE_SIZE, Access::Read);
    let write = space.translate(gpa, gtt::PAGE_SIZE, Access::Write);
    match (read, write) {
        (Some(hpa), Some(_)) => Ok(hpa),
        _ => Err(Invalid::NotReadWrite(page)),
    }
}

/// A partition's virtual global GTT and its slice of the real one.
#[derive(Clone, Debug)]
pub struct VirtualGtt {
    /// Real index of guest entry 0.
    base: u64,
    /// What the guest wrote, entry by entry.
    guest: Vec<u64>,
    /// What each entry maps (RAM pages are pinned).
    mapped: Vec<Option<Target>>,
    /// Entries with one half written since they were last complete.
    halves: BTreeMap<u64, u8>,
    /// The real entry for the scratch page.
    scratch: u64,
    /// The partition's share of local memory.
    local: LocalMemory,
}

impl VirtualGtt {
    /// A GTT of `entries` entries at real indices `base..base + entries`,
    /// all pointing at `scratch`. The caller fills that slice of the real
    /// GTT with [`VirtualGtt::scratch_entry`] before the partition runs.
    ///
    /// # Errors
    /// [`GttConfigError`] for an empty or overflowing slice or a bad
    /// scratch page.
    pub fn new(base: u64, entries: u64, scratch: Hpa) -> Result<VirtualGtt, GttConfigError> {
        let bad_slice = GttConfigError::BadSlice { base, entries };
        let end = base.checked_add(entries).ok_or(bad_slice)?;
        // The graphics-address range must be representable too.
        end.checked_mul(gtt::PAGE_SIZE).ok_or(bad_slice)?;
        let count = usize::try_from(entries).map_err(|_| bad_slice)?;
        if count == 0 {
            return Err(bad_slice);
        }
        let scratch_entry = gtt::present_entry(scratch.raw()).ok_or(GttConfigError::BadScratch(scratch))?;
        Ok(VirtualGtt {
            base,
            guest: vec![0; count],
            mapped: vec![None; count],
            halves: BTreeMap::new(),
            scratch: scratch_entry,
            local: LocalMemory::default(),
        })
    }

    /// The same GTT with `entry` (a present real entry, e.g. one naming a
    /// page of the GPU's local memory) as its scratch entry.
    ///
    /// # Errors
    /// [`GttConfigError::BadScratch`] if `entry` is not present.
    pub fn with_scratch_entry(mut self, entry: u64) -> Result<VirtualGtt, GttConfigError> {
        if entry & gtt::PRESENT == 0 {
            return Err(GttConfigError::BadScratch(Hpa::new(gtt::entry_address(entry))));
        }
        self.scratch = entry;
        Ok(self)
    }

    /// Gives the partition its share of local memory (none by default, so
    /// every local-memory entry is refused). Call before the guest runs.
    ///
    /// # Errors
    /// [`GttConfigError::BadLocalMemory`] if the share is not page
    /// aligned or its last page cannot be encoded in an entry.
    pub fn with_local_memory(mut self, local: LocalMemory) -> Result<VirtualGtt, GttConfigError> {
        let bad = GttConfigError::BadLocalMemory(local);
        if !local.offset.is_multiple_of(gtt::PAGE_SIZE) || !local.size.is_multiple_of(gtt::PAGE_SIZE) {
            return Err(bad);
        }
        let end = local.offset.checked_add(local.size).ok_or(bad)?;
        if local.size > 0 {
            let last = end.checked_sub(gtt::PAGE_SIZE).ok_or(bad)?;
            gtt::present_entry(last).ok_or(bad)?;
        }
        self.local = local;
        Ok(self)
    }

    /// The partition's share of local memory.
    pub fn local_memory(&self) -> LocalMemory {
        self.local
    }

    /// Entries the guest sees.
    pub fn entries(&self) -> u64 {
        self.guest.len() as u64
    }

    /// The real GTT indices of the partition's slice.
    pub fn real_indices(&self) -> core::ops::Range<u64> {
        // Checked in `new`.
        self.base..self.base + self.entries()
    }

    /// The graphics addresses the partition's slice maps: its share for the
    /// command scanner, and what the information registers tell the guest.
    pub fn graphics_range(&self) -> core::ops::Range<u64> {
        let indices = self.real_indices();
        // Checked in `new`.
        indices.start * gtt::PAGE_SIZE..indices.end * gtt::PAGE_SIZE
    }

    /// The real entry of the scratch page.
    pub fn scratch_entry(&self) -> u64 {
        self.scratch
    }

    /// What guest entry `index` maps, if anything (not present, refused
    /// and out-of-range entries map nothing: the scratch page is not the
    /// partition's memory).
    pub fn mapped_page(&self, index: u64) -> Option<Target> {
        let index = usize::try_from(index).ok()?;
        self.mapped.get(index).copied().flatten()
    }

    fn index(&self, offset: u64, size: u8) -> Result<usize, GttError> {
        if !offset.is_multiple_of(u64::from(size)) {
            return Err(GttError::Unaligned { offset, size });
        }
        let index = offset / ENTRY_SIZE;
        let out_of_range = GttError::OutOfRange { offset, entries: self.entries() };
        let index = usize::try_from(index).map_err(|_| out_of_range)?;
        if index >= self.guest.len() {
            return Err(out_of_range);
        }
        Ok(index)
    }

    /// A 4-byte guest read at byte `offset` of the GTT window.
    ///
    /// # Errors
    /// [`GttError`] for an unaligned or out-of-range access.
    pub fn read32(&self, offset: u64) -> Result<u32, GttError> {
        let index = self.index(offset, 4)?;
        let shift = (offset % ENTRY_SIZE) * 8;
        Ok((self.guest[index] >> shift) as u32)
    }

    /// An 8-byte guest read at byte `offset`.
    ///
    /// # Errors
    /// [`GttError`] for an unaligned or out-of-range access.
    pub fn read64(&self, offset: u64) -> Result<u64, GttError> {
        Ok(self.guest[self.index(offset, 8)?])
    }

    /// A 4-byte guest write: half an entry, held until the other half is
    /// written, then validated as a whole.
    ///
    /// # Errors
    /// [`GttError`] for an unaligned or out-of-range access; nothing changes.
    pub fn write32(&mut self, space: &AddressSpace, pins: &mut PinnedPages, offset: u64, value: u32) -> Result<GttWrite, GttError> {
        let index = self.index(offset, 4)?;
        let (half, shift) = if offset.is_multiple_of(ENTRY_SIZE) { (LOW_HALF, 0) } else { (HIGH_HALF, 32) };
        let entry = &mut self.guest[index];
        *entry = (*entry & !(0xffff_ffff << shift)) | (u64::from(value) << shift);
        let key = index as u64;
        let written = self.halves.get(&key).copied().unwrap_or(0) | half;
        if written != BOTH_HALVES {
            self.halves.insert(key, written);
            return Ok(GttWrite::Held { index: key });
        }
        self.halves.remove(&key);
        Ok(self.apply(space, pins, index))
    }

    /// An 8-byte guest write: a whole entry, applied at once (it also
    /// completes any half-written state of that entry).
    ///
    /// # Errors
    /// [`GttError`] for an unaligned or out-of-range access; nothing changes.
    pub fn write64(&mut self, space: &AddressSpace, pins: &mut PinnedPages, offset: u64, value: u64) -> Result<GttWrite, GttError> {
        let index = self.index(offset, 8)?;
        self.guest[index] = value;
        self.halves.remove(&(index as u64));
        Ok(self.apply(space, pins, index))
    }

    /// Validates guest entry `index` and shadows it.
    fn apply(&mut self, space: &AddressSpace, pins: &mut PinnedPages, index: usize) -> GttWrite {
        let value = self.guest[index];
        let state = if value & gtt::PRESENT == 0 {
            EntryState::NotPresent
        } else if value & vgpu::GTT_LOCAL_MEMORY != 0 {
            match self.local_page(gtt::entry_address(value)) {
                Some(real) => EntryState::Mapped(Target::Local(real)),
                None => EntryState::Refused(Invalid::OutsideLocalMemory(gtt::entry_address(value))),
            }
        } else {
            match validate_page(space, Iova::new(gtt::entry_address(value))) {
                Err(invalid) => EntryState::Refused(invalid),
                Ok(hpa) if gtt::present_entry(hpa.raw()).is_none() => EntryState::Refused(Invalid::NotEncodable(hpa)),
                // Pin the new page before the old one is unpinned, so that
                // rewriting an entry with the same page never releases it.
                Ok(hpa) => match pins.pin(hpa) {
                    Ok(_) => EntryState::Mapped(Target::Ram(hpa)),
                    Err(e) => EntryState::Refused(Invalid::Pin(e)),
                },
            }
        };
        let new = match state {
            EntryState::Mapped(target) => Some(target),
            _ => None,
        };
        if let Some(Target::Ram(old)) = core::mem::replace(&mut self.mapped[index], new) {
            // The only failure is NotPinned: the caller already released
            // the partition's pins (`release_all` at a stop), so there is
            // nothing left to drop.
            let _ = pins.unpin(old);
        }
        let value = match new {
            // Only the present bit, the local-memory bit and the address go
            // to the hardware: the guest's other bits (cache control) are
            // not passed through.
            Some(Target::Ram(hpa)) => hpa.raw() | gtt::PRESENT,
            Some(Target::Local(real)) => real | vgpu::GTT_LOCAL_MEMORY | gtt::PRESENT,
            None => self.scratch,
        };
        // `index < entries` and `base + entries` was checked in `new`.
        let update = RealGttUpdate { index: self.base + index as u64, value };
        GttWrite::Update { update, state }
    }

    /// The real local-memory offset of the page at guest local-memory
    /// offset `offset` (page aligned), if the whole page lies in the share.
    /// Encodability was checked for the share's last page in
    /// [`VirtualGtt::with_local_memory`].
    fn local_page(&self, offset: u64) -> Option<u64> {
        let end = offset.checked_add(gtt::PAGE_SIZE)?;
        if end > self.local.size {
            return None;
        }
        self.local.offset.checked_add(offset)
    }

    /// Forgets every entry (the partition restarts): unpins every page and
    /// clears the guest's view. The caller then fills
    /// [`VirtualGtt::real_indices`] with [`VirtualGtt::scratch_entry`] and
    /// invalidates the GPU's GTT caches.
    pub fn reset(&mut self, pins: &mut PinnedPages) {
        for target in self.mapped.iter_mut().filter_map(Option::take) {
            if let Target::Ram(page) = target {
                // As in `apply`: NotPinned means the pins were already released.
                let _ = pins.unpin(page);
            }
        }
        self.guest.fill(0);
        self.halves.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address_space::Region;
    use bulkhead_config::{MemoryAttribute, Permissions};

    const SCRATCH: Hpa = Hpa::new(0x7000_0000);
    const BASE: u64 = 0x100;

    fn region(gpa: u64, hpa: u64, size: u64, perms: &str, kind: RegionKind, dma: bool) -> Region {
        Region {
            gpa: Gpa::new(gpa),
            hpa: Hpa::new(hpa),
            size,
            attr: MemoryAttribute::NormalWb,
            perms: Permissions::parse(perms).unwrap(),
            kind,
            dma,
        }
    }

    /// The partition: DMA RAM at 0x4000_0000 (host 0x1_0000_0000), RAM
    /// devices may not reach at 0x5000_0000, read-only DMA RAM at
    /// 0x6000_0000, an MMIO region at 0x0900_0000, and DMA RAM whose host
    /// address is beyond 39 bits at 0x8000_0000.
    fn space() -> AddressSpace {
        let mut space = AddressSpace::new();
        space.add_region(region(0x4000_0000, 0x1_0000_0000, 0x10_0000, "rw", RegionKind::Ram, true)).unwrap();
        space.add_region(region(0x5000_0000, 0x2_0000_0000, 0x1000, "rw", RegionKind::Ram, false)).unwrap();
        space.add_region(region(0x6000_0000, 0x3_0000_0000, 0x1000, "r", RegionKind::Ram, true)).unwrap();
        space.add_region(region(0x0900_0000, 0x0900_0000, 0x1000, "rw", RegionKind::Device, true)).unwrap();
        space.add_region(region(0x8000_0000, 0x100_0000_0000, 0x1000, "rw", RegionKind::Ram, true)).unwrap();
        space
    }

    fn setup() -> (VirtualGtt, AddressSpace, PinnedPages) {
        (VirtualGtt::new(BASE, 16, SCRATCH).unwrap(), space(), PinnedPages::new("p", 8))
    }

    fn update(index: u64, value: u64, state: EntryState) -> GttWrite {
        GttWrite::Update { update: RealGttUpdate { index: BASE + index, value }, state }
    }

    const SCRATCH_ENTRY: u64 = 0x7000_0001;

    #[test]
    fn a_valid_entry_is_translated_into_the_slice_and_pinned() {
        let (mut gtt, space, mut pins) = setup();
        let result = gtt.write64(&space, &mut pins, 3 * 8, 0x4000_2000 | gtt::PRESENT | 0x4).unwrap();
        let hpa = Hpa::new(0x1_0000_2000);
        assert_eq!(result, update(3, 0x1_0000_2001, EntryState::Mapped(Target::Ram(hpa))));
        assert!(pins.is_pinned(hpa));
        assert_eq!(gtt.mapped_page(3), Some(Target::Ram(hpa)));
        // The guest reads back exactly what it wrote, flag bits included.
        assert_eq!(gtt.read64(3 * 8), Ok(0x4000_2005));
        assert_eq!(gtt.read32(3 * 8), Ok(0x4000_2005));
        assert_eq!(gtt.read32(3 * 8 + 4), Ok(0));
        assert_eq!(gtt.graphics_range(), 0x10_0000..0x11_0000);
        assert_eq!(gtt.real_indices(), 0x100..0x110);
    }

    #[test]
    fn every_invalid_class_points_at_the_scratch_page() {
        let (mut gtt, space, mut pins) = setup();
        let cases = [
            (0x4000_2000, EntryState::NotPresent),
            (0x1234_5001, EntryState::Refused(Invalid::OutsideDeviceView(Iova::new(0x1234_5000)))),
            // The hypervisor's memory and another partition's are host
            // addresses, never in this partition's device view.
            (0x1_0000_0001, EntryState::Refused(Invalid::OutsideDeviceView(Iova::new(0x1_0000_0000)))),
            (0x5000_0001, EntryState::Refused(Invalid::OutsideDeviceView(Iova::new(0x5000_0000)))),
            (0x0900_0001, EntryState::Refused(Invalid::DeviceMemory(Iova::new(0x0900_0000)))),
            (0x6000_0001, EntryState::Refused(Invalid::NotReadWrite(Iova::new(0x6000_0000)))),
            (0x8000_0001, EntryState::Refused(Invalid::NotEncodable(Hpa::new(0x100_0000_0000)))),
            // Address bits above 38 are not part of the address: this is
            // IOVA 0 (outside), not 0x80_4000_0000.
            (0x80_0000_0001, EntryState::Refused(Invalid::OutsideDeviceView(Iova::new(0)))),
        ];
        for (n, (value, state)) in cases.into_iter().enumerate() {
            let index = n as u64;
            assert_eq!(gtt.write64(&space, &mut pins, index * 8, value), Ok(update(index, SCRATCH_ENTRY, state)), "case {n}");
            assert_eq!(gtt.read64(index * 8), Ok(value));
            assert_eq!(gtt.mapped_page(index), None);
        }
        assert_eq!(pins.pinned(), 0);
    }

    #[test]
    fn the_pin_limit_puts_the_entry_on_scratch_and_is_reported() {
        let (mut gtt, space, _) = setup();
        let mut pins = PinnedPages::new("p", 1);
        gtt.write64(&space, &mut pins, 0, 0x4000_0001).unwrap();
        // The same page again only counts a reference.
        assert!(matches!(gtt.write64(&space, &mut pins, 8, 0x4000_0001), Ok(GttWrite::Update { state: EntryState::Mapped(_), .. })));
        let refused = gtt.write64(&space, &mut pins, 16, 0x4000_1001).unwrap();
        let GttWrite::Update { update: u, state: EntryState::Refused(Invalid::Pin(PinError::LimitExceeded { limit: 1, .. })) } = refused else {
            panic!("{refused:?}");
        };
        assert_eq!(u.value, SCRATCH_ENTRY);
        assert_eq!(pins.references(Hpa::new(0x1_0000_0000)), 2);
    }

    #[test]
    fn halves_are_held_until_both_are_written_in_either_order() {
        let (mut gtt, space, mut pins) = setup();
        // Low then high.
        assert_eq!(gtt.write32(&space, &mut pins, 0, 0x4000_1001), Ok(GttWrite::Held { index: 0 }));
        assert_eq!(gtt.read64(0), Ok(0x4000_1001), "the guest sees its half at once");
        assert_eq!(pins.pinned(), 0, "nothing validated yet");
        let hpa = Hpa::new(0x1_0000_1000);
        assert_eq!(gtt.write32(&space, &mut pins, 4, 0), Ok(update(0, hpa.raw() | 1, EntryState::Mapped(Target::Ram(hpa)))));
        // High then low.
        assert_eq!(gtt.write32(&space, &mut pins, 8 + 4, 0), Ok(GttWrite::Held { index: 1 }));
        assert_eq!(gtt.write32(&space, &mut pins, 8, 0x4000_3001), Ok(update(1, 0x1_0000_3001, EntryState::Mapped(Target::Ram(Hpa::new(0x1_0000_3000))))));
        // The same half twice is still half an entry.
        assert_eq!(gtt.write32(&space, &mut pins, 16, 0x4000_3001), Ok(GttWrite::Held { index: 2 }));
        assert_eq!(gtt.write32(&space, &mut pins, 16, 0x4000_4001), Ok(GttWrite::Held { index: 2 }));
        // A full write completes it and forgets the held half.
        assert!(matches!(gtt.write64(&space, &mut pins, 16, 0), Ok(GttWrite::Update { state: EntryState::NotPresent, .. })));
        assert_eq!(gtt.write32(&space, &mut pins, 16 + 4, 0), Ok(GttWrite::Held { index: 2 }));
        // A high half making the address invalid is validated as a whole.
        assert_eq!(gtt.write32(&space, &mut pins, 24, 0x4000_0001), Ok(GttWrite::Held { index: 3 }));
        assert_eq!(
            gtt.write32(&space, &mut pins, 24 + 4, 0x1),
            Ok(update(3, SCRATCH_ENTRY, EntryState::Refused(Invalid::OutsideDeviceView(Iova::new(0x1_4000_0000)))))
        );
        assert_eq!(gtt.read32(24 + 4), Ok(1));
    }

    #[test]
    fn rewriting_an_entry_pins_the_new_page_before_unpinning_the_old() {
        let (mut gtt, space, _) = setup();
        // A limit of 1 shows the order: the new page is pinned while the old
        // one still counts, so moving to another page is refused...
        let mut pins = PinnedPages::new("p", 1);
        let a = Hpa::new(0x1_0000_0000);
        gtt.write64(&space, &mut pins, 0, 0x4000_0001).unwrap();
        let moved = gtt.write64(&space, &mut pins, 0, 0x4000_1001).unwrap();
        assert!(matches!(moved, GttWrite::Update { state: EntryState::Refused(Invalid::Pin(_)), .. }));
        // ...and the old page is then released, the entry being on scratch.
        assert!(!pins.is_pinned(a));
        // ...while rewriting the same page never releases it, even at the limit.
        gtt.write64(&space, &mut pins, 0, 0x4000_0001).unwrap();
        let same = gtt.write64(&space, &mut pins, 0, 0x4000_0005).unwrap();
        assert!(matches!(same, GttWrite::Update { state: EntryState::Mapped(_), .. }));
        assert_eq!(pins.references(a), 1);
        let mut pins2 = PinnedPages::new("q", 4);
        let (mut gtt2, _, _) = setup();
        gtt2.write64(&space, &mut pins2, 0, 0x4000_0001).unwrap();
        gtt2.write64(&space, &mut pins2, 0, 0x4000_0005).unwrap();
        assert_eq!(pins2.references(a), 1);
        // Moving with room to spare: old released, new pinned.
        gtt2.write64(&space, &mut pins2, 0, 0x4000_5001).unwrap();
        assert!(!pins2.is_pinned(a));
        assert!(pins2.is_pinned(Hpa::new(0x1_0000_5000)));
        // Clearing releases.
        gtt2.write64(&space, &mut pins2, 0, 0).unwrap();
        assert_eq!(pins2.pinned(), 0);
    }

    #[test]
    fn accesses_outside_the_gtt_or_unaligned_are_refused_and_change_nothing() {
        let (mut gtt, space, mut pins) = setup();
        let out = GttError::OutOfRange { offset: 16 * 8, entries: 16 };
        assert_eq!(gtt.write64(&space, &mut pins, 16 * 8, 0x4000_0001), Err(out));
        assert_eq!(gtt.write32(&space, &mut pins, 16 * 8 + 4, 1), Err(GttError::OutOfRange { offset: 16 * 8 + 4, entries: 16 }));
        assert_eq!(gtt.read64(16 * 8), Err(out));
        assert!(gtt.write64(&space, &mut pins, !7, 1).is_err());
        assert_eq!(gtt.write64(&space, &mut pins, 4, 1), Err(GttError::Unaligned { offset: 4, size: 8 }));
        assert_eq!(gtt.write32(&space, &mut pins, 2, 1), Err(GttError::Unaligned { offset: 2, size: 4 }));
        assert_eq!(alloc::format!("{out}"), "GTT access at offset 0x80 is beyond the partition's 16 entries");
        assert_eq!(pins.pinned(), 0);
        assert_eq!(gtt.read64(0), Ok(0));
    }

    #[test]
    fn bad_slices_and_scratch_pages_are_configuration_errors() {
        assert_eq!(VirtualGtt::new(0, 0, SCRATCH).unwrap_err(), GttConfigError::BadSlice { base: 0, entries: 0 });
        assert!(matches!(VirtualGtt::new(u64::MAX, 2, SCRATCH), Err(GttConfigError::BadSlice { .. })));
        assert!(matches!(VirtualGtt::new(1 << 60, 1, SCRATCH), Err(GttConfigError::BadSlice { .. })));
        assert_eq!(VirtualGtt::new(0, 1, Hpa::new(0x1001)).unwrap_err(), GttConfigError::BadScratch(Hpa::new(0x1001)));
        assert_eq!(VirtualGtt::new(0, 1, Hpa::new(1 << 40)).unwrap_err(), GttConfigError::BadScratch(Hpa::new(1 << 40)));
    }

    #[test]
    fn reset_unpins_everything_and_clears_the_guest_view() {
        let (mut gtt, space, mut pins) = setup();
        gtt.write64(&space, &mut pins, 0, 0x4000_0001).unwrap();
        gtt.write64(&space, &mut pins, 8, 0x4000_0001).unwrap();
        gtt.write32(&space, &mut pins, 16, 0x4000_1001).unwrap();
        gtt.reset(&mut pins);
        assert_eq!(pins.pinned(), 0);
        assert_eq!((gtt.read64(0), gtt.read64(16)), (Ok(0), Ok(0)));
        assert_eq!(gtt.write32(&space, &mut pins, 20, 0), Ok(GttWrite::Held { index: 2 }), "held halves forgotten");
    }

    /// Local memory share: real offsets 0x40_0000..0x48_0000 (512 KiB).
    const LOCAL: LocalMemory = LocalMemory { offset: 0x40_0000, size: 0x8_0000 };
    const LM: u64 = vgpu::GTT_LOCAL_MEMORY | gtt::PRESENT;

    #[test]
    fn local_memory_entries_are_relocated_into_the_share_without_pinning() {
        let (gtt, space, mut pins) = setup();
        let mut gtt = gtt.with_local_memory(LOCAL).unwrap();
        // First and last page of the share.
        let first = gtt.write64(&space, &mut pins, 0, LM).unwrap();
        assert_eq!(first, update(0, 0x40_0000 | LM, EntryState::Mapped(Target::Local(0x40_0000))));
        let last = gtt.write64(&space, &mut pins, 8, 0x7_f000 | LM | 0x40).unwrap();
        assert_eq!(last, update(1, 0x47_f000 | LM, EntryState::Mapped(Target::Local(0x47_f000))));
        assert_eq!(gtt.mapped_page(1), Some(Target::Local(0x47_f000)));
        assert_eq!(gtt.read64(8), Ok(0x7_f000 | LM | 0x40), "reads back as written");
        assert_eq!(pins.pinned(), 0);
        // One page past the end, far past, and an overflowing offset.
        for (n, offset) in [0x8_0000u64, 0x7f_ffff_f000, 0x1_0000_0000].into_iter().enumerate() {
            let index = 2 + n as u64;
            assert_eq!(
                gtt.write64(&space, &mut pins, index * 8, offset | LM),
                Ok(update(index, SCRATCH_ENTRY, EntryState::Refused(Invalid::OutsideLocalMemory(offset)))),
                "{offset:#x}"
            );
            assert_eq!(gtt.mapped_page(index), None);
        }
        // A RAM entry replaced by a local one releases its pin; the reverse pins.
        gtt.write64(&space, &mut pins, 0, 0x4000_0001).unwrap();
        assert_eq!(pins.pinned(), 1);
        gtt.write64(&space, &mut pins, 0, 0x1000 | LM).unwrap();
        assert_eq!(pins.pinned(), 0);
        assert_eq!(gtt.mapped_page(0), Some(Target::Local(0x40_1000)));
        gtt.reset(&mut pins);
        assert_eq!(gtt.mapped_page(1), None);
    }

    #[test]
    fn without_local_memory_every_local_entry_is_refused() {
        let (mut gtt, space, mut pins) = setup();
        assert_eq!(
            gtt.write64(&space, &mut pins, 0, LM),
            Ok(update(0, SCRATCH_ENTRY, EntryState::Refused(Invalid::OutsideLocalMemory(0))))
        );
        // The LM bit wins over a valid RAM address: it is never read as RAM.
        assert_eq!(
            gtt.write64(&space, &mut pins, 8, 0x4000_0000 | LM),
            Ok(update(1, SCRATCH_ENTRY, EntryState::Refused(Invalid::OutsideLocalMemory(0x4000_0000))))
        );
        assert_eq!(pins.pinned(), 0);
    }

    #[test]
    fn bad_local_memory_shares_are_configuration_errors() {
        let gtt = || VirtualGtt::new(0, 1, SCRATCH).unwrap();
        for local in [
            LocalMemory { offset: 0x800, size: 0x1000 },
            LocalMemory { offset: 0, size: 0x800 },
            LocalMemory { offset: !0xfff, size: 0x2000 },
            LocalMemory { offset: 0x80_0000_0000, size: 0x1000 },
        ] {
            assert_eq!(gtt().with_local_memory(local).unwrap_err(), GttConfigError::BadLocalMemory(local));
        }
        assert!(gtt().with_local_memory(LocalMemory { offset: 0x7f_ffff_f000, size: 0x1000 }).is_ok());
        assert!(gtt().with_local_memory(LocalMemory::default()).is_ok());
    }

    #[test]
    fn a_local_memory_scratch_entry_replaces_the_ram_one() {
        let gtt = VirtualGtt::new(16, 4, Hpa::new(0x1000)).unwrap();
        assert_eq!(gtt.clone().with_scratch_entry(0x3).unwrap().scratch_entry(), 0x3);
        assert!(gtt.with_scratch_entry(0x2000).is_err(), "not present");
    }
}
