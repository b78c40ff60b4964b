//! Typed addresses: one newtype per address space (DESIGN.md §1, rule 1).
//!
//! A guest-physical address ([`Gpa`]) and a host-physical address ([`Hpa`])
//! are different things; converting one into the other is a translation
//! through a partition's address space, never a cast. There is no `+` or `-`
//! on addresses: offsets are applied with checked methods, because most of
//! them come from guests.

use core::fmt;

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(u64);

        impl $name {
            /// The address with this raw value.
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw value.
            pub const fn raw(self) -> u64 {
                self.0
            }

            /// `self + offset`, or `None` on overflow.
            pub const fn checked_add(self, offset: u64) -> Option<Self> {
                match self.0.checked_add(offset) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// `self - base`, or `None` if `base` is above `self`.
            pub const fn offset_from(self, base: Self) -> Option<u64> {
                self.0.checked_sub(base.0)
            }

            /// Whether the address is a multiple of `align` (a power of two).
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, " {:#x}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

address_type!(
    /// A guest-physical address: the input of a partition's CPU stage 2 (an IPA on arm64).
    Gpa,
    "GPA"
);
address_type!(
    /// A host-physical address: what the memory system sees.
    Hpa,
    "HPA"
);
address_type!(
    /// A device's DMA address: the input of the IOMMU for a partition's devices.
    Iova,
    "IOVA"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_arithmetic_refuses_overflow() {
        assert_eq!(Gpa::new(0x1000).checked_add(0x10), Some(Gpa::new(0x1010)));
        assert_eq!(Gpa::new(u64::MAX).checked_add(1), None);
        assert_eq!(Hpa::new(0x2000).offset_from(Hpa::new(0x1000)), Some(0x1000));
        assert_eq!(Hpa::new(0x1000).offset_from(Hpa::new(0x2000)), None);
        assert!(Iova::new(0x3000).is_aligned(0x1000));
        assert!(!Iova::new(0x3001).is_aligned(0x1000));
    }

    #[test]
    fn formatting_names_the_space() {
        extern crate std;
        use std::format;
        assert_eq!(format!("{:?}", Gpa::new(0x10)), "GPA 0x10");
        assert_eq!(format!("{}", Hpa::new(0x10)), "0x10");
    }
}
