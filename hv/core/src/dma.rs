//! A partition's DMA view and the IOMMU domain that carries it
//! (DESIGN.md §1 rules 2 and 3, §3).
//!
//! The DMA view is derived from the partition's [`AddressSpace`]: only its
//! own regions that say `dma = true`, at I/O virtual address = guest
//! physical address. The hypervisor's memory and other partitions' memory
//! are never regions of the partition, so they can never be in the view.
//!
//! A [`DmaDomain`] follows an explicit lifecycle, and a request in the wrong
//! state is an error (never silently ignored):
//!
//! ```text
//! Created --attach--> Attached --allow_mappings--> Mapping --detach--> Detached
//!    |                   |  ^ attach (more devices)    |  map / unmap
//!    +------detach-------+--+--------------------------+
//! ```
//!
//! Mappings are allowed only once at least one device is attached (its
//! IOMMU context points at the domain's table), so every mapping is made
//! through an IOMMU that already confines the device. Every page a mapping
//! covers is pinned ([`crate::pinning`]) for as long as it is mapped;
//! detaching unmaps everything and releases the pins. The IOMMU-specific
//! table (SMMUv3 stage 2, VT-d second level) is behind [`DmaTable`].

use crate::address::{Hpa, Iova};
use crate::address_space::AddressSpace;
use crate::pinning::{PIN_PAGE_SIZE, PinError, PinnedPages};
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_config::{MemoryAttribute, Permissions};
use core::fmt;

/// An IOMMU's translation table for one domain.
pub trait DmaTable {
    /// Why a table operation failed.
    type Error: fmt::Debug;

    /// Maps `[iova, iova + size)` to `hpa` with `attr` and `perms`.
    ///
    /// # Errors
    /// When the table cannot hold the mapping.
    fn map(&mut self, iova: Iova, hpa: Hpa, size: u64, attr: MemoryAttribute, perms: Permissions) -> Result<(), Self::Error>;

    /// Removes the mapping of `[iova, iova + size)` and invalidates the
    /// IOMMU's caches for it before returning.
    ///
    /// # Errors
    /// When the range was not mapped as one.
    fn unmap(&mut self, iova: Iova, size: u64) -> Result<(), Self::Error>;
}

/// Where a domain is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainState {
    /// Has a table, no device.
    Created,
    /// Devices point at it; no mappings yet.
    Attached,
    /// Mappings may be added and removed.
    Mapping,
    /// Torn down: no devices, no mappings; final.
    Detached,
}

/// A device behind an IOMMU: a PCI requester ID or an SMMU StreamID.
pub type DeviceId = u32;

/// Why a domain request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainError<E> {
    /// The request is not allowed in the domain's current state.
    WrongState {
        /// The partition the domain belongs to.
        partition: String,
        /// What was asked.
        operation: &'static str,
        /// The state it was in.
        state: DomainState,
    },
    /// The device is already attached.
    AlreadyAttached(DeviceId),
    /// A mapping that is empty, not page-aligned, or wraps.
    BadRange {
        /// Start.
        iova: Iova,
        /// Length.
        size: u64,
    },
    /// The range overlaps a mapping the domain already has.
    Overlap(Iova),
    /// No mapping starts at this address with this size.
    NotMapped(Iova),
    /// Pinning refused (e.g. the partition's limit).
    Pin(PinError),
    /// The IOMMU table refused.
    Table(E),
}

impl<E: fmt::Debug> fmt::Display for DomainError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainError::WrongState { partition, operation, state } => {
                write!(f, "DMA domain of partition '{partition}': {operation} is not allowed in state {state:?}")
            }
            DomainError::AlreadyAttached(device) => write!(f, "device {device:#x} is already attached"),
            DomainError::BadRange { iova, size } => write!(f, "DMA mapping {iova} (+{size:#x}) is empty, unaligned or wraps"),
            DomainError::Overlap(iova) => write!(f, "DMA mapping at {iova} overlaps an existing one"),
            DomainError::NotMapped(iova) => write!(f, "no DMA mapping starts at {iova}"),
            DomainError::Pin(e) => write!(f, "{e}"),
            DomainError::Table(e) => write!(f, "IOMMU table: {e:?}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping {
    iova: u64,
    hpa: u64,
    size: u64,
}

/// One partition's IOMMU domain: its table, its devices, its mappings and
/// the pins that keep the mapped pages its own.
pub struct DmaDomain<T: DmaTable> {
    partition: String,
    state: DomainState,
    table: T,
    devices: Vec<DeviceId>,
    mappings: Vec<Mapping>,
    pins: PinnedPages,
}

impl<T: DmaTable> DmaDomain<T> {
    /// A new domain for `partition` over `table`; at most `pin_limit`
    /// pages may be mapped at a time.
    pub fn new(partition: &str, table: T, pin_limit: usize) -> DmaDomain<T> {
        DmaDomain {
            partition: String::from(partition),
            state: DomainState::Created,
            table,
            devices: Vec::new(),
            mappings: Vec::new(),
            pins: PinnedPages::new(partition, pin_limit),
        }
    }

    /// The state.
    pub fn state(&self) -> DomainState {
        self.state
    }

    /// The attached devices.
    pub fn devices(&self) -> &[DeviceId] {
        &self.devices
    }

    /// The table (for the IOMMU driver: its root address).
    pub fn table(&self) -> &T {
        &self.table
    }

    /// The pinned pages.
    pub fn pins(&self) -> &PinnedPages {
        &self.pins
    }

    fn wrong_state(&self, operation: &'static str) -> DomainError<T::Error> {
        DomainError::WrongState { partition: self.partition.clone(), operation, state: self.state }
    }

    /// Records that `device`'s IOMMU context now points at this domain.
    ///
    /// # Errors
    /// In state [`DomainState::Detached`], or for a device already attached.
    pub fn attach(&mut self, device: DeviceId) -> Result<(), DomainError<T::Error>> {
        match self.state {
            DomainState::Created | DomainState::Attached | DomainState::Mapping => {}
            DomainState::Detached => return Err(self.wrong_state("attach")),
        }
        if self.devices.contains(&device) {
            return Err(DomainError::AlreadyAttached(device));
        }
        self.devices.push(device);
        if self.state == DomainState::Created {
            self.state = DomainState::Attached;
        }
        Ok(())
    }

    /// Opens the domain for mappings.
    ///
    /// # Errors
    /// Unless the domain is [`DomainState::Attached`].
    pub fn allow_mappings(&mut self) -> Result<(), DomainError<T::Error>> {
        if self.state != DomainState::Attached {
            return Err(self.wrong_state("allow mappings"));
        }
        self.state = DomainState::Mapping;
        Ok(())
    }

    /// Maps `[iova, iova + size)` to `hpa`, pinning every page first.
    ///
    /// # Errors
    /// Outside [`DomainState::Mapping`], for a bad or overlapping range, when
    /// pinning is refused, or when the table refuses (pins are then undone).
    pub fn map(
        &mut self,
        iova: Iova,
        hpa: Hpa,
        size: u64,
        attr: MemoryAttribute,
        perms: Permissions,
    ) -> Result<(), DomainError<T::Error>> {
        if self.state != DomainState::Mapping {
            return Err(self.wrong_state("map"));
        }
        let aligned = |v: u64| v.is_multiple_of(PIN_PAGE_SIZE);
        let end = iova.raw().checked_add(size).filter(|_| size > 0 && aligned(iova.raw()) && aligned(hpa.raw()) && aligned(size));
        let (Some(end), Some(_)) = (end, hpa.raw().checked_add(size)) else {
            return Err(DomainError::BadRange { iova, size });
        };
        if self.mappings.iter().any(|m| m.iova < end && iova.raw() < m.iova + m.size) {
            return Err(DomainError::Overlap(iova));
        }
        let pages = size / PIN_PAGE_SIZE;
        for n in 0..pages {
            if let Err(e) = self.pins.pin(Hpa::new(hpa.raw() + n * PIN_PAGE_SIZE)) {
                self.unpin_range(hpa.raw(), n);
                return Err(DomainError::Pin(e));
            }
        }
        if let Err(e) = self.table.map(iova, hpa, size, attr, perms) {
            self.unpin_range(hpa.raw(), pages);
            return Err(DomainError::Table(e));
        }
        self.mappings.push(Mapping { iova: iova.raw(), hpa: hpa.raw(), size });
        Ok(())
    }

    fn unpin_range(&mut self, hpa: u64, pages: u64) {
        for n in 0..pages {
            // Each page was pinned by this domain just before.
            let _ = self.pins.unpin(Hpa::new(hpa + n * PIN_PAGE_SIZE));
        }
    }

    /// Removes the mapping that starts at `iova` with `size`; its pages are
    /// unpinned once the table (and the IOMMU's caches) no longer hold it.
    ///
    /// # Errors
    /// Outside [`DomainState::Mapping`], for a range that is not one
    /// mapping, or when the table refuses (the mapping and pins stay).
    pub fn unmap(&mut self, iova: Iova, size: u64) -> Result<(), DomainError<T::Error>> {
        if self.state != DomainState::Mapping {
            return Err(self.wrong_state("unmap"));
        }
        let index = self
            .mappings
            .iter()
            .position(|m| m.iova == iova.raw() && m.size == size)
            .ok_or(DomainError::NotMapped(iova))?;
        self.table.unmap(iova, size).map_err(DomainError::Table)?;
        let mapping = self.mappings.swap_remove(index);
        self.unpin_range(mapping.hpa, mapping.size / PIN_PAGE_SIZE);
        Ok(())
    }

    /// Maps the DMA view of `space`: every region with `dma = true`, at
    /// I/O virtual address = guest-physical address.
    ///
    /// # Errors
    /// The first refused mapping.
    pub fn map_dma_view(&mut self, space: &AddressSpace) -> Result<(), DomainError<T::Error>> {
        for region in space.dma_regions() {
            self.map(Iova::new(region.gpa.raw()), region.hpa, region.size, region.attr, region.perms)?;
        }
        Ok(())
    }

    /// Tears the domain down: every mapping removed (table errors are
    /// returned after the rest is done), every pin released, devices
    /// forgotten. Returns the devices that were attached: the caller must
    /// point their IOMMU contexts back at "blocked" before the table's
    /// memory is reused.
    ///
    /// # Errors
    /// In state [`DomainState::Detached`].
    pub fn detach(&mut self) -> Result<Vec<DeviceId>, DomainError<T::Error>> {
        if self.state == DomainState::Detached {
            return Err(self.wrong_state("detach"));
        }
        for mapping in core::mem::take(&mut self.mappings) {
            // A table that cannot unmap is left as it is: the devices are
            // blocked by the caller, which makes the table unreachable.
            let _ = self.table.unmap(Iova::new(mapping.iova), mapping.size);
        }
        self.pins.release_all();
        self.state = DomainState::Detached;
        Ok(core::mem::take(&mut self.devices))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Gpa;
    use crate::address_space::{Region, RegionKind};
    use alloc::vec;

    /// Records what the domain asks of the IOMMU table.
    #[derive(Default)]
    struct FakeTable {
        mapped: Vec<(u64, u64, u64)>,
        refuse_map_at: Option<u64>,
    }

    impl DmaTable for FakeTable {
        type Error = &'static str;

        fn map(&mut self, iova: Iova, hpa: Hpa, size: u64, _: MemoryAttribute, _: Permissions) -> Result<(), &'static str> {
            if self.refuse_map_at == Some(iova.raw()) {
                return Err("full");
            }
            self.mapped.push((iova.raw(), hpa.raw(), size));
            Ok(())
        }

        fn unmap(&mut self, iova: Iova, size: u64) -> Result<(), &'static str> {
            let index = self.mapped.iter().position(|m| m.0 == iova.raw() && m.2 == size).ok_or("not mapped")?;
            self.mapped.remove(index);
            Ok(())
        }
    }

    fn rw() -> Permissions {
        Permissions::parse("rw").unwrap()
    }

    fn domain(limit: usize) -> DmaDomain<FakeTable> {
        DmaDomain::new("a", FakeTable::default(), limit)
    }

    #[test]
    fn the_lifecycle_is_enforced() {
        let mut d = domain(16);
        let map = |d: &mut DmaDomain<FakeTable>| d.map(Iova::new(0), Hpa::new(0x1000), 0x1000, MemoryAttribute::NormalWb, rw());
        assert_eq!(
            map(&mut d),
            Err(DomainError::WrongState { partition: "a".into(), operation: "map", state: DomainState::Created })
        );
        assert!(matches!(d.allow_mappings(), Err(DomainError::WrongState { state: DomainState::Created, .. })));
        d.attach(0x10).unwrap();
        assert_eq!(d.state(), DomainState::Attached);
        assert!(matches!(map(&mut d), Err(DomainError::WrongState { state: DomainState::Attached, .. })));
        d.allow_mappings().unwrap();
        map(&mut d).unwrap();
        assert_eq!(d.attach(0x10), Err(DomainError::AlreadyAttached(0x10)));
        d.attach(0x18).unwrap();
        assert_eq!(d.detach().unwrap(), vec![0x10, 0x18]);
        assert_eq!(d.state(), DomainState::Detached);
        assert!(d.table().mapped.is_empty());
        assert_eq!(d.pins().pinned(), 0);
        for result in [d.attach(1).map(|_| ()), d.allow_mappings(), map(&mut d), d.detach().map(|_| ())] {
            assert!(matches!(result, Err(DomainError::WrongState { state: DomainState::Detached, .. })));
        }
        let text = alloc::format!("{}", d.attach(1).unwrap_err());
        assert_eq!(text, "DMA domain of partition 'a': attach is not allowed in state Detached");
    }

    fn mapping_domain(limit: usize) -> DmaDomain<FakeTable> {
        let mut d = domain(limit);
        d.attach(1).unwrap();
        d.allow_mappings().unwrap();
        d
    }

    #[test]
    fn mappings_pin_their_pages_and_unmapping_releases_them() {
        let mut d = mapping_domain(16);
        d.map(Iova::new(0x10_0000), Hpa::new(0x4000_0000), 0x3000, MemoryAttribute::NormalWb, rw()).unwrap();
        assert_eq!(d.pins().pinned(), 3);
        assert!(d.pins().is_pinned(Hpa::new(0x4000_2000)));
        // The same host pages mapped a second time count once more each,
        // but not against the limit.
        d.map(Iova::new(0x20_0000), Hpa::new(0x4000_0000), 0x1000, MemoryAttribute::NormalWb, rw()).unwrap();
        assert_eq!((d.pins().pinned(), d.pins().references(Hpa::new(0x4000_0000))), (3, 2));
        assert_eq!(d.unmap(Iova::new(0x10_0000), 0x1000), Err(DomainError::NotMapped(Iova::new(0x10_0000))));
        d.unmap(Iova::new(0x10_0000), 0x3000).unwrap();
        assert_eq!(d.pins().pinned(), 1);
        d.unmap(Iova::new(0x20_0000), 0x1000).unwrap();
        assert_eq!(d.pins().pinned(), 0);
        assert!(d.table().mapped.is_empty());
    }

    #[test]
    fn bad_ranges_overlaps_limits_and_table_errors_change_nothing() {
        let mut d = mapping_domain(2);
        let wb = MemoryAttribute::NormalWb;
        for (iova, hpa, size) in [(0x1001, 0x1000, 0x1000), (0x1000, 0x1000, 0), (0x1000, 0x1000, 0x800), (!0xfff, 0, 0x2000)] {
            assert!(matches!(d.map(Iova::new(iova), Hpa::new(hpa), size, wb, rw()), Err(DomainError::BadRange { .. })));
        }
        d.map(Iova::new(0x1000), Hpa::new(0x1000), 0x1000, wb, rw()).unwrap();
        assert_eq!(d.map(Iova::new(0x1000), Hpa::new(0x9000), 0x1000, wb, rw()), Err(DomainError::Overlap(Iova::new(0x1000))));
        // Two more pages would exceed the limit of two: refused, nothing pinned.
        assert!(matches!(d.map(Iova::new(0x4000), Hpa::new(0x4000), 0x2000, wb, rw()), Err(DomainError::Pin(_))));
        assert_eq!(d.pins().pinned(), 1);
        d.table.refuse_map_at = Some(0x8000);
        assert_eq!(d.map(Iova::new(0x8000), Hpa::new(0x8000), 0x1000, wb, rw()), Err(DomainError::Table("full")));
        assert_eq!(d.pins().pinned(), 1);
        assert_eq!(d.table().mapped.len(), 1);
    }

    #[test]
    fn the_dma_view_is_exactly_the_dma_regions() {
        let mut space = AddressSpace::new();
        let region = |gpa: u64, hpa: u64, dma: bool| Region {
            gpa: Gpa::new(gpa),
            hpa: Hpa::new(hpa),
            size: 0x2000,
            attr: MemoryAttribute::NormalWb,
            perms: rw(),
            kind: RegionKind::Ram,
            dma,
        };
        space.add_region(region(0x4000_0000, 0x8000_0000, true)).unwrap();
        space.add_region(region(0x5000_0000, 0x9000_0000, false)).unwrap();
        space.add_region(region(0x6000_0000, 0xa000_0000, true)).unwrap();
        let mut d = mapping_domain(64);
        d.map_dma_view(&space).unwrap();
        assert_eq!(d.table().mapped, vec![(0x4000_0000, 0x8000_0000, 0x2000), (0x6000_0000, 0xa000_0000, 0x2000)]);
        assert_eq!(d.pins().pinned(), 4);
        assert!(!d.pins().is_pinned(Hpa::new(0x9000_0000)));
    }
}
