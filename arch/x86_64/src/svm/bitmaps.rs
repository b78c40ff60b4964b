//! SVM I/O and MSR permission maps: "intercept everything except these".
//!
//! I/O permission map (IOPM, AMD APM Vol. 2 §15.10.1): 12 KiB, physically
//! contiguous, one bit per port; a set bit intercepts. An access of N bytes
//! at port P checks the bits of P..P+N-1; the map holds 64K + 3 bits so that
//! a multi-byte access starting near 0xffff reads bits 0x10000-0x10002 (at
//! the start of the third page) instead of wrapping. Bulkhead leaves those
//! set, so a wrapping access is always intercepted.
//!
//! MSR permission map (MSRPM, §15.11): 8 KiB, two bits per MSR, the even
//! bit intercepts RDMSR and the odd bit WRMSR. MSRs outside the three ranges
//! below are always intercepted.
//!
//! | byte offset | MSRs |
//! |---|---|
//! | 0x0000-0x07ff | 0x0000_0000-0x0000_1fff |
//! | 0x0800-0x0fff | 0xc000_0000-0xc000_1fff |
//! | 0x1000-0x17ff | 0xc001_0000-0xc001_1fff |
//! | 0x1800-0x1fff | reserved |

use core::ops::RangeInclusive;

/// The I/O permission map: three page-aligned pages.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct IoPermissionMap(pub [u8; 3 * 4096]);

impl IoPermissionMap {
    /// A map that intercepts every port access.
    pub const fn intercept_all() -> IoPermissionMap {
        IoPermissionMap([0xff; 3 * 4096])
    }

    /// Lets the guest access `ports` directly.
    pub fn allow(&mut self, ports: RangeInclusive<u16>) {
        for port in ports {
            let index = usize::from(port);
            self.0[index / 8] &= !(1 << (index % 8));
        }
    }

    /// Whether an access of `size` bytes (1, 2 or 4) at `port` is
    /// intercepted, as the CPU decides it.
    pub fn intercepts(&self, port: u16, size: u8) -> bool {
        (0..usize::from(size)).any(|offset| {
            let index = usize::from(port) + offset;
            self.0[index / 8] & (1 << (index % 8)) != 0
        })
    }
}

/// An MSR outside the ranges the map covers: always intercepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrOutOfRange(pub u32);

/// The MSR permission map: two page-aligned pages.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct MsrPermissionMap(pub [u8; 2 * 4096]);

impl MsrPermissionMap {
    /// A map that intercepts every RDMSR and WRMSR.
    pub const fn intercept_all() -> MsrPermissionMap {
        MsrPermissionMap([0xff; 2 * 4096])
    }

    /// Lets the guest read `msr` directly.
    ///
    /// # Errors
    /// [`MsrOutOfRange`] for an MSR the map does not cover.
    pub fn allow_read(&mut self, msr: u32) -> Result<(), MsrOutOfRange> {
        let index = Self::read_bit(msr)?;
        self.0[index / 8] &= !(1 << (index % 8));
        Ok(())
    }

    /// Lets the guest write `msr` directly.
    ///
    /// # Errors
    /// [`MsrOutOfRange`] for an MSR the map does not cover.
    pub fn allow_write(&mut self, msr: u32) -> Result<(), MsrOutOfRange> {
        let index = Self::read_bit(msr)? + 1;
        self.0[index / 8] &= !(1 << (index % 8));
        Ok(())
    }

    /// Whether RDMSR of `msr` is intercepted.
    pub fn intercepts_read(&self, msr: u32) -> bool {
        match Self::read_bit(msr) {
            Ok(index) => self.0[index / 8] & (1 << (index % 8)) != 0,
            Err(_) => true,
        }
    }

    /// Whether WRMSR of `msr` is intercepted.
    pub fn intercepts_write(&self, msr: u32) -> bool {
        match Self::read_bit(msr) {
            Ok(index) => self.0[(index + 1) / 8] & (1 << ((index + 1) % 8)) != 0,
            Err(_) => true,
        }
    }

    /// The index of `msr`'s read bit (its write bit is the next one).
    fn read_bit(msr: u32) -> Result<usize, MsrOutOfRange> {
        let (range_byte, offset) = match msr {
            0x0000_0000..=0x0000_1fff => (0x0000, msr),
            0xc000_0000..=0xc000_1fff => (0x0800, msr - 0xc000_0000),
            0xc001_0000..=0xc001_1fff => (0x1000, msr - 0xc001_0000),
            _ => return Err(MsrOutOfRange(msr)),
        };
        Ok(range_byte * 8 + 2 * offset as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<IoPermissionMap>(), 12 * 1024);
        assert_eq!(core::mem::align_of::<IoPermissionMap>(), 4096);
        assert_eq!(core::mem::size_of::<MsrPermissionMap>(), 8 * 1024);
        assert_eq!(core::mem::align_of::<MsrPermissionMap>(), 4096);
    }

    #[test]
    fn io_edges() {
        let mut map = IoPermissionMap::intercept_all();
        map.allow(0..=0);
        map.allow(0x3f8..=0x3ff);
        map.allow(0xfffc..=0xffff);
        assert!(!map.intercepts(0, 1) && map.intercepts(0, 2) && map.intercepts(1, 1));
        assert!(!map.intercepts(0x3f8, 1) && !map.intercepts(0x3fc, 4) && !map.intercepts(0x3f8, 2));
        // Straddling the permitted window on either side.
        assert!(map.intercepts(0x3f7, 1) && map.intercepts(0x3f7, 2) && map.intercepts(0x3f6, 4));
        assert!(map.intercepts(0x3fe, 4) && map.intercepts(0x400, 1));
        // 0xffff allowed; accesses running past it hit the 3 extra bits.
        assert!(!map.intercepts(0xffff, 1) && !map.intercepts(0xfffc, 4));
        assert!(map.intercepts(0xffff, 2) && map.intercepts(0xfffe, 4));
        // Bit positions: port 0x3f8 is byte 0x7f; 0xffff is byte 0x1fff bit 7; extra bits in byte 0x2000.
        assert_eq!(map.0[0x7f], 0x00);
        assert_eq!(map.0[0x1fff], 0x0f);
        assert_eq!(map.0[0x2000] & 0x7, 0x7);
    }

    #[test]
    fn msr_edges() {
        let mut map = MsrPermissionMap::intercept_all();
        // (MSR, byte of its read bit, bit within the byte).
        let edges = [
            (0x0000_0000, 0x0000, 0),
            (0x0000_1fff, 0x07ff, 6),
            (0xc000_0000, 0x0800, 0),
            (0xc000_1fff, 0x0fff, 6),
            (0xc001_0000, 0x1000, 0),
            (0xc001_1fff, 0x17ff, 6),
        ];
        for (msr, byte, bit) in edges {
            assert!(map.intercepts_read(msr) && map.intercepts_write(msr));
            map.allow_read(msr).unwrap();
            assert!(!map.intercepts_read(msr) && map.intercepts_write(msr), "{msr:#x}");
            assert_eq!(map.0[byte], !(1 << bit), "{msr:#x}");
            map.allow_write(msr).unwrap();
            assert!(!map.intercepts_write(msr), "{msr:#x}");
            assert_eq!(map.0[byte], !(3 << bit), "{msr:#x}");
        }
        assert!(map.intercepts_read(1) && map.intercepts_write(0xc001_0001));
        // Outside the ranges: refused, always intercepted; the reserved quarter stays set.
        for msr in [0x2000, 0xbfff_ffff, 0xc000_2000, 0xc000_ffff, 0xc001_2000, 0xc002_0000, 0xffff_ffff] {
            assert_eq!(map.allow_read(msr), Err(MsrOutOfRange(msr)));
            assert_eq!(map.allow_write(msr), Err(MsrOutOfRange(msr)));
            assert!(map.intercepts_read(msr) && map.intercepts_write(msr));
        }
        assert!(map.0[0x1800..].iter().all(|&byte| byte == 0xff));
    }
}
