//! Pinned-page accounting (DESIGN.md §1 rule 3): which host pages devices
//! may currently reach on a partition's behalf, so that none of them is
//! reused while a device could still write it.
//!
//! The accounting is per partition and per 4 KiB host page. Pinning a page
//! the partition already has pinned only raises its reference count: the
//! page counts once against the partition's limit. The last unpin releases
//! it. A pin that would take the partition over its limit is refused with
//! an error that names the partition, the page and the limit; nothing is
//! clamped. Users (the GPU mediator, IOMMU mapping code) pin before a
//! device may see a page and unpin after the device's mapping is gone.

use crate::address::Hpa;
use alloc::collections::BTreeMap;
use alloc::string::String;
use core::fmt;

/// Bytes in the unit of accounting.
pub const PIN_PAGE_SIZE: u64 = 4096;

/// Why a pin or unpin was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinError {
    /// The partition would pin more distinct pages than its limit.
    LimitExceeded {
        /// The partition.
        partition: String,
        /// The page that was refused.
        page: Hpa,
        /// The partition's limit, in pages.
        limit: usize,
    },
    /// The address is not the start of a 4 KiB page.
    Misaligned(Hpa),
    /// Unpin of a page the partition does not have pinned.
    NotPinned {
        /// The partition.
        partition: String,
        /// The page.
        page: Hpa,
    },
    /// A reference count would overflow (a caller pinning in a loop).
    TooManyReferences(Hpa),
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinError::LimitExceeded { partition, page, limit } => write!(
                f,
                "partition '{partition}': pinning host page {page} would exceed its limit of {limit} pinned pages"
            ),
            PinError::Misaligned(page) => write!(f, "{page} is not the start of a 4 KiB page"),
            PinError::NotPinned { partition, page } => {
                write!(f, "partition '{partition}': {page} is not pinned")
            }
            PinError::TooManyReferences(page) => write!(f, "{page}: too many pins of one page"),
        }
    }
}

/// What a pin or unpin did to the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinChange {
    /// The page became pinned (first reference).
    Pinned,
    /// Only the reference count changed.
    Counted,
    /// The page is no longer pinned (last reference gone).
    Released,
}

/// One partition's pinned pages.
#[derive(Clone, Debug)]
pub struct PinnedPages {
    partition: String,
    limit: usize,
    /// Page → references.
    pages: BTreeMap<u64, u32>,
}

impl PinnedPages {
    /// No pages pinned yet; at most `limit` distinct pages at a time.
    pub fn new(partition: &str, limit: usize) -> PinnedPages {
        PinnedPages { partition: String::from(partition), limit, pages: BTreeMap::new() }
    }

    /// Pins `page` once more.
    ///
    /// # Errors
    /// [`PinError::Misaligned`], [`PinError::LimitExceeded`] (nothing
    /// changes) or [`PinError::TooManyReferences`].
    pub fn pin(&mut self, page: Hpa) -> Result<PinChange, PinError> {
        if !page.raw().is_multiple_of(PIN_PAGE_SIZE) {
            return Err(PinError::Misaligned(page));
        }
        if let Some(count) = self.pages.get_mut(&page.raw()) {
            *count = count.checked_add(1).ok_or(PinError::TooManyReferences(page))?;
            return Ok(PinChange::Counted);
        }
        if self.pages.len() >= self.limit {
            return Err(PinError::LimitExceeded { partition: self.partition.clone(), page, limit: self.limit });
        }
        self.pages.insert(page.raw(), 1);
        Ok(PinChange::Pinned)
    }

    /// Drops one reference to `page`.
    ///
    /// # Errors
    /// [`PinError::Misaligned`] or [`PinError::NotPinned`].
    pub fn unpin(&mut self, page: Hpa) -> Result<PinChange, PinError> {
        if !page.raw().is_multiple_of(PIN_PAGE_SIZE) {
            return Err(PinError::Misaligned(page));
        }
        let Some(count) = self.pages.get_mut(&page.raw()) else {
            return Err(PinError::NotPinned { partition: self.partition.clone(), page });
        };
        *count -= 1;
        if *count == 0 {
            self.pages.remove(&page.raw());
            Ok(PinChange::Released)
        } else {
            Ok(PinChange::Counted)
        }
    }

    /// Whether `page` is pinned.
    pub fn is_pinned(&self, page: Hpa) -> bool {
        self.pages.contains_key(&page.raw())
    }

    /// References to `page` (0 if not pinned).
    pub fn references(&self, page: Hpa) -> u32 {
        self.pages.get(&page.raw()).copied().unwrap_or(0)
    }

    /// Distinct pages pinned, which is what counts against the limit.
    pub fn pinned(&self) -> usize {
        self.pages.len()
    }

    /// The limit, in pages.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Releases every pin (the partition stopped): returns the pages that
    /// were pinned, for the caller to make sure no device still maps them.
    pub fn release_all(&mut self) -> alloc::vec::Vec<Hpa> {
        let pages = self.pages.keys().map(|&raw| Hpa::new(raw)).collect();
        self.pages.clear();
        pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(n: u64) -> Hpa {
        Hpa::new(0x4000_0000 + n * PIN_PAGE_SIZE)
    }

    #[test]
    fn a_page_pinned_twice_counts_once_and_is_released_at_the_last_unpin() {
        let mut pins = PinnedPages::new("gpu", 2);
        assert_eq!(pins.pin(page(0)), Ok(PinChange::Pinned));
        assert_eq!(pins.pin(page(0)), Ok(PinChange::Counted));
        assert_eq!((pins.pinned(), pins.references(page(0))), (1, 2));
        assert_eq!(pins.unpin(page(0)), Ok(PinChange::Counted));
        assert!(pins.is_pinned(page(0)));
        assert_eq!(pins.unpin(page(0)), Ok(PinChange::Released));
        assert!(!pins.is_pinned(page(0)));
        assert_eq!(pins.pinned(), 0);
    }

    #[test]
    fn the_limit_counts_distinct_pages_and_refuses_with_a_clear_error() {
        let mut pins = PinnedPages::new("gpu", 2);
        pins.pin(page(0)).unwrap();
        pins.pin(page(1)).unwrap();
        // Another reference to a pinned page is not a new page.
        assert_eq!(pins.pin(page(1)), Ok(PinChange::Counted));
        let err = pins.pin(page(2)).unwrap_err();
        assert_eq!(err, PinError::LimitExceeded { partition: "gpu".into(), page: page(2), limit: 2 });
        assert_eq!(
            alloc::format!("{err}"),
            "partition 'gpu': pinning host page 0x40002000 would exceed its limit of 2 pinned pages"
        );
        // Refused means unchanged.
        assert_eq!(pins.pinned(), 2);
        assert!(!pins.is_pinned(page(2)));
        pins.unpin(page(0)).unwrap();
        assert_eq!(pins.pin(page(2)), Ok(PinChange::Pinned));
    }

    #[test]
    fn bad_addresses_and_unknown_pages_are_errors() {
        let mut pins = PinnedPages::new("a", 4);
        assert_eq!(pins.pin(Hpa::new(0x1001)), Err(PinError::Misaligned(Hpa::new(0x1001))));
        assert_eq!(pins.unpin(page(3)), Err(PinError::NotPinned { partition: "a".into(), page: page(3) }));
        let mut zero = PinnedPages::new("none", 0);
        assert!(matches!(zero.pin(page(0)), Err(PinError::LimitExceeded { limit: 0, .. })));
    }

    #[test]
    fn release_all_returns_every_pinned_page_once() {
        let mut pins = PinnedPages::new("a", 4);
        for n in [2, 0, 2, 1] {
            pins.pin(page(n)).unwrap();
        }
        assert_eq!(pins.release_all(), alloc::vec![page(0), page(1), page(2)]);
        assert_eq!(pins.pinned(), 0);
    }
}
