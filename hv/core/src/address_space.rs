//! A partition's address space: the one list of regions every view of the
//! partition's memory is derived from (DESIGN.md §3).
//!
//! - The CPU view (stage 2 / NPT / EPT) comes from [`AddressSpace::derive_cpu_view`],
//!   through the small [`CpuView`] trait each architecture implements.
//!   Overlays change it: a trapped range is left unmapped (every access
//!   exits), a write-protected range is mapped read-only with 4 KiB pages.
//! - The DMA view (IOMMU tables) is derived from the regions marked `dma`
//!   ([`AddressSpace::dma_regions`]), with their device addresses.
//! - The mediator's view is [`AddressSpace::translate`].

use crate::address::{Gpa, Hpa};
use alloc::vec::Vec;
use bulkhead_config::{MemoryAttribute, Permissions};

/// What backs a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// RAM (allocated for the partition, or assigned by host address).
    Ram,
    /// A passed-through device's registers or memory.
    Device,
}

/// One region: a guest-physical range and what it maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// First guest-physical address.
    pub gpa: Gpa,
    /// The host-physical address `gpa` maps to.
    pub hpa: Hpa,
    /// Length in bytes (a multiple of 4 KiB).
    pub size: u64,
    /// Memory attribute, copied exactly into the CPU mapping.
    pub attr: MemoryAttribute,
    /// Access rights.
    pub perms: Permissions,
    /// RAM or device.
    pub kind: RegionKind,
    /// Whether the partition's devices may DMA to it.
    pub dma: bool,
}

impl Region {
    /// One past the last guest-physical address.
    pub fn gpa_end(&self) -> Option<Gpa> {
        self.gpa.checked_add(self.size)
    }

    /// Whether `gpa` lies inside.
    pub fn contains(&self, gpa: Gpa) -> bool {
        gpa.offset_from(self.gpa).is_some_and(|offset| offset < self.size)
    }
}

/// A change of the CPU view over part of the address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlay {
    /// Left unmapped so that every access traps (emulated MMIO).
    Trap {
        /// First guest-physical address.
        gpa: Gpa,
        /// Length in bytes.
        size: u64,
    },
    /// Mapped read-only, page by page, so that writes trap (e.g. a guest's
    /// GPU page tables being shadowed).
    WriteProtect {
        /// First guest-physical address.
        gpa: Gpa,
        /// Length in bytes.
        size: u64,
    },
}

impl Overlay {
    fn range(&self) -> (u64, u64) {
        let (Overlay::Trap { gpa, size } | Overlay::WriteProtect { gpa, size }) = *self;
        (gpa.raw(), gpa.raw().saturating_add(size))
    }
}

/// Kinds of access, for translation checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
}

/// Why a region or overlay was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressSpaceError {
    /// Zero size, an address or size not a multiple of 4 KiB, or a range that wraps.
    BadRange(Gpa),
    /// The range overlaps an existing region.
    Overlap(Gpa),
    /// An overlay that does not lie inside one region.
    OverlayOutsideRegion(Gpa),
}

/// Maps guest-physical ranges in one architecture's CPU translation tables.
pub trait CpuView {
    /// What the tables refuse.
    type Error;

    /// Maps `[gpa, gpa + size)` to `[hpa, hpa + size)` with exactly `attr`
    /// and `perms`; `pages_only` forbids block mappings (ranges whose pages
    /// change one by one later).
    ///
    /// # Errors
    /// Whatever the tables refuse.
    fn map(
        &mut self,
        gpa: Gpa,
        hpa: Hpa,
        size: u64,
        attr: MemoryAttribute,
        perms: Permissions,
        pages_only: bool,
    ) -> Result<(), Self::Error>;
}

const PAGE: u64 = 4096;

/// A partition's regions and overlays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressSpace {
    regions: Vec<Region>,
    overlays: Vec<Overlay>,
    /// RAM may be write-protected page by page while the partition runs
    /// ([`crate::page_track`]): RAM is then mapped with 4 KiB pages only.
    page_granular_ram: bool,
}

fn check_range(gpa: Gpa, size: u64) -> Result<u64, AddressSpaceError> {
    let end = gpa.checked_add(size).ok_or(AddressSpaceError::BadRange(gpa))?;
    if size == 0 || !gpa.is_aligned(PAGE) || !size.is_multiple_of(PAGE) {
        return Err(AddressSpaceError::BadRange(gpa));
    }
    Ok(end.raw())
}

impl AddressSpace {
    /// An empty address space.
    pub fn new() -> AddressSpace {
        AddressSpace::default()
    }

    /// Adds a region; regions never overlap.
    ///
    /// # Errors
    /// [`AddressSpaceError::BadRange`] or [`AddressSpaceError::Overlap`].
    pub fn add_region(&mut self, region: Region) -> Result<(), AddressSpaceError> {
        let end = check_range(region.gpa, region.size)?;
        region.hpa.checked_add(region.size).ok_or(AddressSpaceError::BadRange(region.gpa))?;
        if self.regions.iter().any(|r| r.gpa.raw() < end && region.gpa.raw() < r.gpa.raw() + r.size) {
            return Err(AddressSpaceError::Overlap(region.gpa));
        }
        let at = self.regions.partition_point(|r| r.gpa < region.gpa);
        self.regions.insert(at, region);
        Ok(())
    }

    /// Adds an overlay, which must lie inside one region.
    ///
    /// # Errors
    /// [`AddressSpaceError::BadRange`] or [`AddressSpaceError::OverlayOutsideRegion`].
    pub fn add_overlay(&mut self, overlay: Overlay) -> Result<(), AddressSpaceError> {
        let (Overlay::Trap { gpa, size } | Overlay::WriteProtect { gpa, size }) = overlay;
        let end = check_range(gpa, size)?;
        let inside = self.regions.iter().any(|r| r.contains(gpa) && end <= r.gpa.raw() + r.size);
        if !inside {
            return Err(AddressSpaceError::OverlayOutsideRegion(gpa));
        }
        self.overlays.push(overlay);
        Ok(())
    }

    /// Declares that pages of its RAM may be write-protected one by one
    /// later (GPU page-table tracking, [`crate::page_track`]):
    /// [`AddressSpace::derive_cpu_view`] then maps every RAM region with
    /// 4 KiB pages, so that one page's permission can change without
    /// splitting a block in a live table.
    pub fn set_page_granular_ram(&mut self, page_granular: bool) {
        self.page_granular_ram = page_granular;
    }

    /// Whether RAM is mapped page by page ([`AddressSpace::set_page_granular_ram`]).
    pub fn page_granular_ram(&self) -> bool {
        self.page_granular_ram
    }

    /// The first overlay that covers `gpa`, if any.
    pub fn overlay_at(&self, gpa: Gpa) -> Option<Overlay> {
        self.overlays.iter().copied().find(|o| {
            let (b, e) = o.range();
            b <= gpa.raw() && gpa.raw() < e
        })
    }

    /// The regions, sorted by guest-physical address.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The region containing `gpa`.
    pub fn region_at(&self, gpa: Gpa) -> Option<&Region> {
        self.regions.iter().find(|r| r.contains(gpa))
    }

    /// One past the highest mapped guest-physical address.
    pub fn gpa_limit(&self) -> u64 {
        self.regions.last().map_or(0, |r| r.gpa.raw() + r.size)
    }

    /// Translates `[gpa, gpa + len)` to host-physical if the whole range lies
    /// in one region that allows `access`. This is the mediator's view; it
    /// ignores CPU overlays.
    pub fn translate(&self, gpa: Gpa, len: u64, access: Access) -> Option<Hpa> {
        let last = gpa.checked_add(len.checked_sub(1)?)?;
        let region = self.region_at(gpa)?;
        if !region.contains(last) {
            return None;
        }
        let allowed = match access {
            Access::Read => region.perms.read,
            Access::Write => region.perms.write,
        };
        if !allowed {
            return None;
        }
        region.hpa.checked_add(gpa.offset_from(region.gpa)?)
    }

    /// The regions devices may DMA to: the input of the DMA view.
    pub fn dma_regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.iter().filter(|r| r.dma)
    }

    /// Maps every region into `view`, applying the overlays: trapped ranges
    /// stay unmapped, write-protected ranges are mapped without write
    /// permission and with 4 KiB pages; regions with overlays use 4 KiB
    /// pages throughout so that each page can change later, and so do RAM
    /// regions of a space with [page-granular RAM](AddressSpace::set_page_granular_ram).
    ///
    /// # Errors
    /// The first error `view` reports.
    pub fn derive_cpu_view<V: CpuView>(&self, view: &mut V) -> Result<(), V::Error> {
        for region in &self.regions {
            let start = region.gpa.raw();
            let end = start + region.size;
            let mut cuts: Vec<(u64, u64, Option<Overlay>)> = Vec::new();
            let mut overlays: Vec<Overlay> = self
                .overlays
                .iter()
                .copied()
                .filter(|o| {
                    let (b, e) = o.range();
                    b < end && start < e
                })
                .collect();
            overlays.sort_by_key(|o| o.range().0);
            let pages_only =
                !overlays.is_empty() || (self.page_granular_ram && region.kind == RegionKind::Ram);
            let mut cursor = start;
            for overlay in overlays {
                let (b, e) = overlay.range();
                let b = b.max(cursor);
                if b > cursor {
                    cuts.push((cursor, b, None));
                }
                if e > b {
                    cuts.push((b, e, Some(overlay)));
                }
                cursor = cursor.max(e);
            }
            if cursor < end {
                cuts.push((cursor, end, None));
            }
            for (b, e, overlay) in cuts {
                let hpa = Hpa::new(region.hpa.raw() + (b - start));
                let mut perms = region.perms;
                match overlay {
                    Some(Overlay::Trap { .. }) => continue,
                    Some(Overlay::WriteProtect { .. }) => perms.write = false,
                    None => {}
                }
                view.map(Gpa::new(b), hpa, e - b, region.attr, perms, pages_only)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;

    fn perms(text: &str) -> Permissions {
        Permissions::parse(text).unwrap()
    }

    fn ram(gpa: u64, hpa: u64, size: u64, p: &str) -> Region {
        Region {
            gpa: Gpa::new(gpa),
            hpa: Hpa::new(hpa),
            size,
            attr: MemoryAttribute::NormalWb,
            perms: perms(p),
            kind: RegionKind::Ram,
            dma: false,
        }
    }

    #[derive(Default)]
    struct Recorder(Vec<(u64, u64, u64, &'static str, bool)>);

    impl CpuView for Recorder {
        type Error = ();
        fn map(&mut self, gpa: Gpa, hpa: Hpa, size: u64, _: MemoryAttribute, p: Permissions, pages_only: bool) -> Result<(), ()> {
            self.0.push((gpa.raw(), hpa.raw(), size, p.as_str(), pages_only));
            Ok(())
        }
    }

    pub(crate) fn sample() -> AddressSpace {
        let mut space = AddressSpace::new();
        space.add_region(ram(0x8000_0000, 0x2000, 0x1000, "r")).unwrap();
        space.add_region(ram(0x4000_0000, 0x10_0000, 0x2000, "rw")).unwrap();
        space.add_region(ram(0x4000_2000, 0x90_0000, 0x1000, "w")).unwrap();
        space
    }

    #[test]
    fn regions_are_sorted_and_never_overlap() {
        let mut space = sample();
        assert_eq!(space.regions()[0].gpa, Gpa::new(0x4000_0000));
        assert_eq!(space.add_region(ram(0x4000_1000, 0, 0x1000, "r")), Err(AddressSpaceError::Overlap(Gpa::new(0x4000_1000))));
        assert_eq!(space.add_region(ram(0x1001, 0, 0x1000, "r")), Err(AddressSpaceError::BadRange(Gpa::new(0x1001))));
        assert_eq!(space.add_region(ram(0x1000, 0, 0, "r")), Err(AddressSpaceError::BadRange(Gpa::new(0x1000))));
        assert_eq!(
            space.add_region(ram(!0xfffu64, 0, 0x2000, "r")),
            Err(AddressSpaceError::BadRange(Gpa::new(!0xfffu64)))
        );
        assert_eq!(space.gpa_limit(), 0x8000_1000);
    }

    #[test]
    fn translation_stays_inside_one_region_with_the_right_permission() {
        let space = sample();
        assert_eq!(space.translate(Gpa::new(0x4000_0010), 16, Access::Read), Some(Hpa::new(0x10_0010)));
        assert_eq!(space.translate(Gpa::new(0x4000_1ff0), 16, Access::Read), Some(Hpa::new(0x10_1ff0)));
        assert_eq!(space.translate(Gpa::new(0x4000_1ff0), 17, Access::Read), None, "crosses into another region");
        assert_eq!(space.translate(Gpa::new(0x4000_2000), 1, Access::Read), None, "write-only");
        assert_eq!(space.translate(Gpa::new(0x8000_0000), 1, Access::Write), None, "read-only");
        assert_eq!(space.translate(Gpa::new(0x3fff_ffff), 2, Access::Read), None, "starts outside");
        assert_eq!(space.translate(Gpa::new(0x4000_0000), 0, Access::Read), None, "empty");
        assert_eq!(space.translate(Gpa::new(u64::MAX), 2, Access::Read), None, "wraps");
    }

    #[test]
    fn the_cpu_view_is_every_region_without_overlays() {
        let mut view = Recorder::default();
        sample().derive_cpu_view(&mut view).unwrap();
        assert_eq!(
            view.0,
            vec![
                (0x4000_0000, 0x10_0000, 0x2000, "rw", false),
                (0x4000_2000, 0x90_0000, 0x1000, "w", false),
                (0x8000_0000, 0x2000, 0x1000, "r", false),
            ]
        );
    }

    #[test]
    fn overlays_cut_the_cpu_view() {
        let mut space = AddressSpace::new();
        space.add_region(ram(0x4000_0000, 0x100_0000, 0x10_000, "rwx")).unwrap();
        space.add_overlay(Overlay::WriteProtect { gpa: Gpa::new(0x4000_2000), size: 0x2000 }).unwrap();
        space.add_overlay(Overlay::Trap { gpa: Gpa::new(0x4000_8000), size: 0x1000 }).unwrap();
        assert_eq!(
            space.add_overlay(Overlay::Trap { gpa: Gpa::new(0x4000_f000), size: 0x2000 }),
            Err(AddressSpaceError::OverlayOutsideRegion(Gpa::new(0x4000_f000)))
        );
        let mut view = Recorder::default();
        space.derive_cpu_view(&mut view).unwrap();
        assert_eq!(
            view.0,
            vec![
                (0x4000_0000, 0x100_0000, 0x2000, "rwx", true),
                (0x4000_2000, 0x100_2000, 0x2000, "rx", true),
                (0x4000_4000, 0x100_4000, 0x4000, "rwx", true),
                (0x4000_9000, 0x100_9000, 0x7000, "rwx", true),
            ]
        );
        assert_eq!(space.translate(Gpa::new(0x4000_8000), 8, Access::Write), Some(Hpa::new(0x100_8000)), "the mediator's view ignores CPU overlays");
    }

    #[test]
    fn page_granular_ram_maps_ram_with_pages_and_devices_with_blocks() {
        let mut space = AddressSpace::new();
        space.add_region(ram(0x4000_0000, 0x100_0000, 0x40_0000, "rwx")).unwrap();
        let mut device = ram(0x900_0000, 0x900_0000, 0x20_0000, "rw");
        device.kind = RegionKind::Device;
        space.add_region(device).unwrap();
        assert!(!space.page_granular_ram());
        let mut view = Recorder::default();
        space.derive_cpu_view(&mut view).unwrap();
        assert!(view.0.iter().all(|m| !m.4), "blocks allowed by default");
        space.set_page_granular_ram(true);
        let mut view = Recorder::default();
        space.derive_cpu_view(&mut view).unwrap();
        assert_eq!(
            view.0,
            vec![(0x900_0000, 0x900_0000, 0x20_0000, "rw", false), (0x4000_0000, 0x100_0000, 0x40_0000, "rwx", true)]
        );
    }

    #[test]
    fn overlay_at_finds_the_covering_overlay() {
        let mut space = AddressSpace::new();
        space.add_region(ram(0x4000_0000, 0x100_0000, 0x10_000, "rwx")).unwrap();
        let wp = Overlay::WriteProtect { gpa: Gpa::new(0x4000_2000), size: 0x2000 };
        space.add_overlay(wp).unwrap();
        assert_eq!(space.overlay_at(Gpa::new(0x4000_3fff)), Some(wp));
        assert_eq!(space.overlay_at(Gpa::new(0x4000_4000)), None);
        assert_eq!(space.overlay_at(Gpa::new(0x4000_1fff)), None);
    }

    #[test]
    fn the_dma_view_is_the_dma_regions() {
        let mut space = sample();
        let mut shared = ram(0x9000_0000, 0x5000_0000, 0x1000, "rw");
        shared.dma = true;
        space.add_region(shared).unwrap();
        let dma: Vec<u64> = space.dma_regions().map(|r| r.gpa.raw()).collect();
        assert_eq!(dma, vec![0x9000_0000]);
    }
}
