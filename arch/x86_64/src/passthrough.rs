//! What a partition's guest reaches without an exit, once for both back
//! ends: the configured `io_ports` and the MSRs [`guest_msr`] passes.
//!
//! SVM (permission maps, [`crate::svm::bitmaps`]) and VMX (bitmaps,
//! [`crate::vmx::bitmaps`]) lay their maps out differently but share the
//! meaning "set bit = intercept"; each map implements the two small traits
//! below, and [`allow_io_ports`] / [`allow_guest_msrs`] fill any of them
//! from a map that starts with everything intercepted.

use crate::guest_msr::{self, MsrRule};
use crate::svm::bitmaps::{IoPermissionMap, MsrPermissionMap};
use crate::vmx::bitmaps::{IoBitmaps, MsrBitmap};
use alloc::vec::Vec;
use core::ops::RangeInclusive;

/// A map of ports a guest may access directly.
pub trait PortMap {
    /// Lets the guest access `ports` without an exit.
    fn allow_ports(&mut self, ports: RangeInclusive<u16>);
}

/// A map of MSRs a guest may read or write directly.
pub trait MsrMap {
    /// Lets the guest read `msr`; `false` if no part of the map covers it
    /// (it then always exits).
    fn allow_msr_read(&mut self, msr: u32) -> bool;
    /// Lets the guest write `msr`; `false` if no part of the map covers it.
    fn allow_msr_write(&mut self, msr: u32) -> bool;
}

/// Passes exactly the partition's `io_ports` through.
pub fn allow_io_ports<M: PortMap>(map: &mut M, io_ports: &[RangeInclusive<u16>]) {
    for ports in io_ports {
        map.allow_ports(ports.clone());
    }
}

/// The MSRs a guest reads directly: the guest-state ones and the TSC.
pub fn readable_msrs() -> impl Iterator<Item = u32> {
    guest_msr::GUEST_STATE_MSRS.into_iter().chain([guest_msr::TSC])
}

/// Passes the MSRs [`guest_msr::rule`] gives the guest: guest-state MSRs
/// both ways, read-only ones (the TSC) for reads. Everything else exits.
/// Returns the MSRs the map could not pass (none, for both maps: every
/// listed MSR lies in a covered range), so a caller can report them.
pub fn allow_guest_msrs<M: MsrMap>(map: &mut M) -> Vec<u32> {
    let mut uncovered = Vec::new();
    for msr in readable_msrs() {
        let mut covered = map.allow_msr_read(msr);
        if guest_msr::rule(msr) == MsrRule::GuestState {
            covered &= map.allow_msr_write(msr);
        }
        if !covered {
            uncovered.push(msr);
        }
    }
    uncovered
}

impl PortMap for IoPermissionMap {
    fn allow_ports(&mut self, ports: RangeInclusive<u16>) {
        self.allow(ports);
    }
}

impl PortMap for IoBitmaps {
    fn allow_ports(&mut self, ports: RangeInclusive<u16>) {
        self.allow(ports);
    }
}

impl MsrMap for MsrPermissionMap {
    fn allow_msr_read(&mut self, msr: u32) -> bool {
        self.allow_read(msr).is_ok()
    }

    fn allow_msr_write(&mut self, msr: u32) -> bool {
        self.allow_write(msr).is_ok()
    }
}

impl MsrMap for MsrBitmap {
    fn allow_msr_read(&mut self, msr: u32) -> bool {
        self.allow_read(msr).is_ok()
    }

    fn allow_msr_write(&mut self, msr: u32) -> bool {
        self.allow_write(msr).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every MSR of the two ranges both maps cover.
    fn sample_msrs() -> impl Iterator<Item = u32> {
        (0..0x2000).chain(0xc000_0000..0xc000_2000)
    }

    #[test]
    fn vmx_msr_bitmap_passes_exactly_what_the_rules_say() {
        let mut bitmap = MsrBitmap::intercept_all();
        assert_eq!(allow_guest_msrs(&mut bitmap).len(), 0);
        for msr in sample_msrs() {
            let rule = guest_msr::rule(msr);
            let readable = matches!(rule, MsrRule::GuestState | MsrRule::ReadOnly);
            assert_eq!(bitmap.intercepts_read(msr), !readable, "read {msr:#x}");
            assert_eq!(bitmap.intercepts_write(msr), rule != MsrRule::GuestState, "write {msr:#x}");
        }
        // EFER is emulated: both directions exit.
        assert!(bitmap.intercepts_read(guest_msr::EFER) && bitmap.intercepts_write(guest_msr::EFER));
        assert!(!bitmap.intercepts_read(guest_msr::TSC) && bitmap.intercepts_write(guest_msr::TSC));
    }

    #[test]
    fn svm_msr_map_passes_exactly_what_the_rules_say() {
        let mut map = MsrPermissionMap::intercept_all();
        assert_eq!(allow_guest_msrs(&mut map).len(), 0);
        for msr in sample_msrs() {
            let rule = guest_msr::rule(msr);
            let readable = matches!(rule, MsrRule::GuestState | MsrRule::ReadOnly);
            assert_eq!(map.intercepts_read(msr), !readable, "read {msr:#x}");
            assert_eq!(map.intercepts_write(msr), rule != MsrRule::GuestState, "write {msr:#x}");
        }
    }

    /// A map that covers nothing, to see uncovered MSRs reported.
    struct Nothing;

    impl MsrMap for Nothing {
        fn allow_msr_read(&mut self, _: u32) -> bool {
            false
        }
        fn allow_msr_write(&mut self, _: u32) -> bool {
            false
        }
    }

    #[test]
    fn uncovered_msrs_are_reported() {
        let uncovered = allow_guest_msrs(&mut Nothing);
        assert_eq!(uncovered, readable_msrs().collect::<Vec<_>>());
    }

    #[test]
    fn both_port_maps_pass_exactly_the_configured_ports() {
        let io_ports = [0x3f8..=0x3ff, 0x80..=0x80, 0xfffe..=0xffff];
        let mut bitmaps = IoBitmaps::intercept_all();
        let mut map = IoPermissionMap::intercept_all();
        allow_io_ports(&mut bitmaps, &io_ports);
        allow_io_ports(&mut map, &io_ports);
        for port in 0..=u16::MAX {
            let allowed = io_ports.iter().any(|range| range.contains(&port));
            assert_eq!(bitmaps.intercepts(port, 1), !allowed, "VMX port {port:#x}");
            assert_eq!(map.intercepts(port, 1), !allowed, "SVM port {port:#x}");
        }
        // An access reaching past the last allowed port exits on both.
        assert!(bitmaps.intercepts(0x3fe, 4) && map.intercepts(0x3fe, 4));
        assert!(bitmaps.intercepts(0xfffe, 4) && map.intercepts(0xfffe, 4));
    }
}
