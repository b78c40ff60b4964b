//! Write-protect page tracking: which guest pages of a partition are mapped
//! read-only in its CPU view so that each store to them traps (DESIGN.md
//! §3, "pages write-protected for GPU table tracking").
//!
//! The GPU mediator shadows a guest's GPU page tables; it must see every
//! store the guest makes to them. It asks for a page to be tracked; the
//! hypervisor maps that page read-only in stage 2 / NPT (reads and
//! instruction fetches keep working), performs each trapped store itself
//! and reports it as [`TrackedWrite`]s.
//!
//! [`PageTracker`] is the bookkeeping only: a use count per page (tracking
//! twice needs two untracks), validation against the partition's
//! [`AddressSpace`], and whether the CPU mapping must change. Changing the
//! mapping and handling the faults is the image's job.

use crate::address::Gpa;
use crate::address_space::{AddressSpace, RegionKind};
use alloc::collections::BTreeMap;

/// Size of a tracked page.
pub const PAGE_SIZE: u64 = 4096;

/// One store the hypervisor performed on behalf of the guest in a tracked
/// page. A trapped instruction yields one or two (an arm64 `STP` of two
/// registers: two, in address order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackedWrite {
    /// Guest-physical address of the first byte written.
    pub gpa: Gpa,
    /// Bytes written: 1, 2, 4 or 8.
    pub width: u8,
    /// The value, in its low `width` bytes (stored little-endian).
    pub value: u64,
}

impl TrackedWrite {
    /// The bytes the store writes, in memory order (the first `width` of the array).
    pub fn bytes(&self) -> [u8; 8] {
        self.value.to_le_bytes()
    }

    /// Whether the store lies entirely inside the 4 KiB page holding `page`.
    pub fn within_page(&self, page: Gpa) -> bool {
        let base = page.raw() & !(PAGE_SIZE - 1);
        self.gpa.offset_from(Gpa::new(base)).is_some_and(|offset| offset + u64::from(self.width) <= PAGE_SIZE)
    }
}

/// Why a page cannot be tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackError {
    /// The address is not the first byte of a 4 KiB page.
    NotPageAligned(Gpa),
    /// The page is not RAM of the partition (unmapped, or a device region).
    NotRam(Gpa),
    /// The partition may not write the page anyway: nothing to track.
    NotWritable(Gpa),
    /// A boot-time overlay (trapped or write-protected range) covers the
    /// page; its permissions are not the tracker's to change.
    UnderOverlay(Gpa),
    /// The partition's RAM is not mapped page by page
    /// ([`AddressSpace::set_page_granular_ram`]), so one page cannot change alone.
    NotPageGranular(Gpa),
    /// The partition is not running (no CPU view to change), or has no tracker.
    NotRunning,
    /// The CPU view refused the change (the page is not mapped as expected).
    MappingFailed(Gpa),
    /// The page is tracked `u32::MAX` times already.
    TooManyUses(Gpa),
}

/// What a track or untrack request means for the CPU mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingChange {
    /// Nothing: the page was already tracked (track) or is still tracked
    /// by another user, or was not tracked at all (untrack).
    None,
    /// First use: map the page read-only.
    WriteProtect,
    /// Last use gone: give the page its region's permissions back.
    Restore,
}

/// The tracked pages of one partition, each with its use count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageTracker {
    /// Page address -> number of outstanding `track`s (never 0).
    uses: BTreeMap<u64, u32>,
}

impl PageTracker {
    /// A tracker with no page tracked.
    pub fn new() -> PageTracker {
        PageTracker::default()
    }

    /// Checks that `page` may be tracked in `space`: a 4 KiB-aligned page
    /// of writable RAM under no overlay, in a space with page-granular RAM.
    ///
    /// # Errors
    /// The first [`TrackError`] that applies.
    pub fn check(space: &AddressSpace, page: Gpa) -> Result<(), TrackError> {
        if !page.is_aligned(PAGE_SIZE) {
            return Err(TrackError::NotPageAligned(page));
        }
        let region = space.region_at(page).filter(|r| r.kind == RegionKind::Ram).ok_or(TrackError::NotRam(page))?;
        if !region.perms.write {
            return Err(TrackError::NotWritable(page));
        }
        if space.overlay_at(page).is_some() {
            return Err(TrackError::UnderOverlay(page));
        }
        if !space.page_granular_ram() {
            return Err(TrackError::NotPageGranular(page));
        }
        Ok(())
    }

    /// Adds one use of `page`; [`MappingChange::WriteProtect`] on the
    /// first. Nothing changes on error.
    ///
    /// # Errors
    /// See [`PageTracker::check`]; [`TrackError::TooManyUses`] on overflow.
    pub fn track(&mut self, space: &AddressSpace, page: Gpa) -> Result<MappingChange, TrackError> {
        PageTracker::check(space, page)?;
        match self.uses.get_mut(&page.raw()) {
            Some(uses) => {
                *uses = uses.checked_add(1).ok_or(TrackError::TooManyUses(page))?;
                Ok(MappingChange::None)
            }
            None => {
                self.uses.insert(page.raw(), 1);
                Ok(MappingChange::WriteProtect)
            }
        }
    }

    /// Undoes a [`PageTracker::track`] that returned
    /// [`MappingChange::WriteProtect`] but whose mapping change then failed.
    pub fn forget(&mut self, page: Gpa) {
        self.uses.remove(&page.raw());
    }

    /// Removes one use of `page`; [`MappingChange::Restore`] when the last
    /// goes. Untracking a page that is not tracked changes nothing.
    pub fn untrack(&mut self, page: Gpa) -> MappingChange {
        let key = page.raw() & !(PAGE_SIZE - 1);
        match self.uses.get_mut(&key) {
            Some(uses) if *uses > 1 => {
                *uses -= 1;
                MappingChange::None
            }
            Some(_) => {
                self.uses.remove(&key);
                MappingChange::Restore
            }
            None => MappingChange::None,
        }
    }

    /// Whether the page holding `gpa` (any address in it) is tracked.
    pub fn is_tracked(&self, gpa: Gpa) -> bool {
        self.uses.contains_key(&(gpa.raw() & !(PAGE_SIZE - 1)))
    }

    /// Outstanding uses of the page holding `gpa`.
    pub fn uses(&self, gpa: Gpa) -> u32 {
        self.uses.get(&(gpa.raw() & !(PAGE_SIZE - 1))).copied().unwrap_or(0)
    }

    /// How many distinct pages are tracked.
    pub fn tracked_pages(&self) -> usize {
        self.uses.len()
    }

    /// The tracked pages, lowest first.
    pub fn pages(&self) -> impl Iterator<Item = Gpa> + '_ {
        self.uses.keys().map(|&page| Gpa::new(page))
    }

    /// Forgets every page (the partition was reset: its CPU view is rebuilt
    /// or restored by the caller).
    pub fn clear(&mut self) {
        self.uses.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Hpa;
    use crate::address_space::{Overlay, Region};
    use bulkhead_config::{MemoryAttribute, Permissions};

    fn space() -> AddressSpace {
        let mut space = AddressSpace::new();
        let region = |gpa: u64, size: u64, perms: &str, kind| Region {
            gpa: Gpa::new(gpa),
            hpa: Hpa::new(gpa + 0x1000_0000),
            size,
            attr: MemoryAttribute::NormalWb,
            perms: Permissions::parse(perms).unwrap(),
            kind,
            dma: false,
        };
        space.add_region(region(0x4000_0000, 0x10_0000, "rwx", RegionKind::Ram)).unwrap();
        space.add_region(region(0x5000_0000, 0x1000, "rx", RegionKind::Ram)).unwrap();
        space.add_region(region(0x900_0000, 0x1000, "rw", RegionKind::Device)).unwrap();
        space.add_overlay(Overlay::WriteProtect { gpa: Gpa::new(0x4000_8000), size: 0x1000 }).unwrap();
        space.set_page_granular_ram(true);
        space
    }

    #[test]
    fn uses_are_counted_and_the_mapping_changes_on_first_and_last() {
        let space = space();
        let mut tracker = PageTracker::new();
        let page = Gpa::new(0x4000_1000);
        assert_eq!(tracker.track(&space, page), Ok(MappingChange::WriteProtect));
        assert_eq!(tracker.track(&space, page), Ok(MappingChange::None));
        assert!(tracker.is_tracked(Gpa::new(0x4000_1ff8)));
        assert!(!tracker.is_tracked(Gpa::new(0x4000_2000)));
        assert_eq!(tracker.uses(page), 2);
        assert_eq!(tracker.tracked_pages(), 1);
        assert_eq!(tracker.untrack(page), MappingChange::None);
        assert!(tracker.is_tracked(page));
        assert_eq!(tracker.untrack(page), MappingChange::Restore);
        assert!(!tracker.is_tracked(page));
        assert_eq!(tracker.untrack(page), MappingChange::None, "not tracked: nothing to do");
        assert_eq!(tracker.tracked_pages(), 0);
    }

    #[test]
    fn only_writable_ram_pages_outside_overlays_are_tracked() {
        let space = space();
        let mut tracker = PageTracker::new();
        let refused = |gpa: u64| PageTracker::check(&space, Gpa::new(gpa));
        assert_eq!(refused(0x4000_1008), Err(TrackError::NotPageAligned(Gpa::new(0x4000_1008))));
        assert_eq!(refused(0x3fff_f000), Err(TrackError::NotRam(Gpa::new(0x3fff_f000))));
        assert_eq!(refused(0x900_0000), Err(TrackError::NotRam(Gpa::new(0x900_0000))), "device memory");
        assert_eq!(refused(0x5000_0000), Err(TrackError::NotWritable(Gpa::new(0x5000_0000))));
        assert_eq!(refused(0x4000_8000), Err(TrackError::UnderOverlay(Gpa::new(0x4000_8000))));
        assert_eq!(refused(0x4010_0000), Err(TrackError::NotRam(Gpa::new(0x4010_0000))), "one past the region");
        assert_eq!(tracker.track(&space, Gpa::new(0x5000_0000)), Err(TrackError::NotWritable(Gpa::new(0x5000_0000))));
        assert_eq!(tracker.tracked_pages(), 0, "a refused track leaves nothing behind");
        let mut blocks = space.clone();
        blocks.set_page_granular_ram(false);
        assert_eq!(
            tracker.track(&blocks, Gpa::new(0x4000_0000)),
            Err(TrackError::NotPageGranular(Gpa::new(0x4000_0000)))
        );
    }

    #[test]
    fn forget_and_clear_drop_pages() {
        let space = space();
        let mut tracker = PageTracker::new();
        tracker.track(&space, Gpa::new(0x4000_0000)).unwrap();
        tracker.track(&space, Gpa::new(0x4000_3000)).unwrap();
        assert_eq!(tracker.pages().collect::<alloc::vec::Vec<_>>(), [Gpa::new(0x4000_0000), Gpa::new(0x4000_3000)]);
        tracker.forget(Gpa::new(0x4000_0000));
        assert_eq!(tracker.tracked_pages(), 1);
        tracker.clear();
        assert_eq!(tracker.tracked_pages(), 0);
    }

    #[test]
    fn writes_know_their_page() {
        let write = TrackedWrite { gpa: Gpa::new(0x4000_1ff8), width: 8, value: 0x0102_0304_0506_0708 };
        assert!(write.within_page(Gpa::new(0x4000_1000)));
        assert!(!write.within_page(Gpa::new(0x4000_2000)));
        assert!(!TrackedWrite { gpa: Gpa::new(0x4000_1ffc), width: 8, value: 0 }.within_page(Gpa::new(0x4000_1000)));
        assert_eq!(write.bytes()[0], 0x08);
    }
}
