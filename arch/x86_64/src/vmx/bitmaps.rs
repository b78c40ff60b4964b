//! VMX I/O bitmaps and MSR bitmap: "intercept everything except these".
//!
//! I/O bitmaps (SDM Vol. 3C §25.6.4): bitmap A has one bit per port for
//! 0x0000-0x7fff, bitmap B for 0x8000-0xffff; a set bit makes the access
//! exit. With "use I/O bitmaps", an access of N bytes exits if the bit of any
//! port it touches is set, and an access that wraps past 0xffff always exits
//! (§26.1.3, "Instructions That Cause VM Exits Conditionally").
//!
//! MSR bitmap (§25.6.9): one 4 KiB page of four 1 KiB bitmaps, one bit per
//! MSR, a set bit makes the access exit. RDMSR/WRMSR of an MSR outside the
//! two ranges always exits (§26.1.3).
//!
//! | bytes | bitmap |
//! |---|---|
//! | 0-1023 | read, MSRs 0x0000_0000-0x0000_1fff |
//! | 1024-2047 | read, MSRs 0xc000_0000-0xc000_1fff |
//! | 2048-3071 | write, MSRs 0x0000_0000-0x0000_1fff |
//! | 3072-4095 | write, MSRs 0xc000_0000-0xc000_1fff |

use core::ops::RangeInclusive;

/// One 4 KiB bitmap page, page aligned so a static or boxed one can be
/// handed to the CPU as is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct BitmapPage(pub [u8; 4096]);

impl BitmapPage {
    /// A page with every bit set (everything intercepted).
    pub const fn all_set() -> BitmapPage {
        BitmapPage([0xff; 4096])
    }

    /// Whether bit `index` is set.
    pub const fn bit(&self, index: usize) -> bool {
        self.0[index / 8] & (1 << (index % 8)) != 0
    }

    /// Clears bit `index`.
    pub fn clear_bit(&mut self, index: usize) {
        self.0[index / 8] &= !(1 << (index % 8));
    }
}

/// I/O bitmaps A and B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoBitmaps {
    /// Bitmap A: ports 0x0000-0x7fff (VMCS field IoBitmapA).
    pub a: BitmapPage,
    /// Bitmap B: ports 0x8000-0xffff (VMCS field IoBitmapB).
    pub b: BitmapPage,
}

impl IoBitmaps {
    /// Bitmaps that make every port access exit.
    pub const fn intercept_all() -> IoBitmaps {
        IoBitmaps { a: BitmapPage::all_set(), b: BitmapPage::all_set() }
    }

    /// Lets the guest access `ports` directly.
    pub fn allow(&mut self, ports: RangeInclusive<u16>) {
        for port in ports {
            let (page, index) = self.page_mut(port);
            page.clear_bit(index);
        }
    }

    /// Whether an access of `size` bytes (1, 2 or 4) at `port` exits, as
    /// the CPU decides it.
    pub fn intercepts(&self, port: u16, size: u8) -> bool {
        (0..u32::from(size)).any(|offset| match u16::try_from(u32::from(port) + offset) {
            Ok(port) => {
                let (page, index) = self.page(port);
                page.bit(index)
            }
            // Wraps past 0xffff.
            Err(_) => true,
        })
    }

    fn page(&self, port: u16) -> (&BitmapPage, usize) {
        if port < 0x8000 { (&self.a, usize::from(port)) } else { (&self.b, usize::from(port - 0x8000)) }
    }

    fn page_mut(&mut self, port: u16) -> (&mut BitmapPage, usize) {
        if port < 0x8000 { (&mut self.a, usize::from(port)) } else { (&mut self.b, usize::from(port - 0x8000)) }
    }
}

/// An MSR outside the ranges a bitmap covers: its accesses always exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrOutOfRange(pub u32);

/// The VMX MSR bitmap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsrBitmap(pub BitmapPage);

impl MsrBitmap {
    /// A bitmap that makes every RDMSR and WRMSR exit.
    pub const fn intercept_all() -> MsrBitmap {
        MsrBitmap(BitmapPage::all_set())
    }

    /// Lets the guest read `msr` directly.
    ///
    /// # Errors
    /// [`MsrOutOfRange`] for an MSR no bitmap covers.
    pub fn allow_read(&mut self, msr: u32) -> Result<(), MsrOutOfRange> {
        let index = Self::read_index(msr)?;
        self.0.clear_bit(index);
        Ok(())
    }

    /// Lets the guest write `msr` directly.
    ///
    /// # Errors
    /// [`MsrOutOfRange`] for an MSR no bitmap covers.
    pub fn allow_write(&mut self, msr: u32) -> Result<(), MsrOutOfRange> {
        let index = Self::read_index(msr)? + 2048 * 8;
        self.0.clear_bit(index);
        Ok(())
    }

    /// Whether RDMSR of `msr` exits.
    pub fn intercepts_read(&self, msr: u32) -> bool {
        match Self::read_index(msr) {
            Ok(index) => self.0.bit(index),
            Err(_) => true,
        }
    }

    /// Whether WRMSR of `msr` exits.
    pub fn intercepts_write(&self, msr: u32) -> bool {
        match Self::read_index(msr) {
            Ok(index) => self.0.bit(index + 2048 * 8),
            Err(_) => true,
        }
    }

    /// The bit index of `msr` in the read half.
    fn read_index(msr: u32) -> Result<usize, MsrOutOfRange> {
        match msr {
            0x0000_0000..=0x0000_1fff => Ok(msr as usize),
            0xc000_0000..=0xc000_1fff => Ok(1024 * 8 + (msr - 0xc000_0000) as usize),
            _ => Err(MsrOutOfRange(msr)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<BitmapPage>(), 4096);
        assert_eq!(core::mem::align_of::<BitmapPage>(), 4096);
    }

    #[test]
    fn io_edges() {
        let mut bitmaps = IoBitmaps::intercept_all();
        assert!(bitmaps.intercepts(0, 1) && bitmaps.intercepts(0xffff, 1));
        bitmaps.allow(0..=0);
        bitmaps.allow(0x3f8..=0x3ff);
        bitmaps.allow(0x7fff..=0x8000);
        bitmaps.allow(0xffff..=0xffff);
        assert!(!bitmaps.intercepts(0, 1));
        assert!(bitmaps.intercepts(0, 2)); // Port 1 still intercepted.
        assert!(bitmaps.intercepts(1, 1));
        assert!(!bitmaps.intercepts(0x3f8, 1) && !bitmaps.intercepts(0x3fc, 4));
        // Straddling the permitted window.
        assert!(bitmaps.intercepts(0x3f7, 2));
        assert!(bitmaps.intercepts(0x3fe, 4));
        assert!(bitmaps.intercepts(0x3f6, 4));
        // Across bitmaps A and B.
        assert!(!bitmaps.intercepts(0x7fff, 2));
        assert!(!bitmaps.a.bit(0x7fff) && !bitmaps.b.bit(0));
        // 0xffff itself is allowed, but a wider access wraps and exits.
        assert!(!bitmaps.intercepts(0xffff, 1));
        assert!(bitmaps.intercepts(0xffff, 2));
        assert!(bitmaps.intercepts(0xfffe, 2));
        // Bit positions: port 0x3f8 is byte 0x7f bit 0 of A.
        assert_eq!(bitmaps.a.0[0x7f], 0x00);
        assert_eq!(bitmaps.a.0[0x7e], 0xff);
        assert_eq!(bitmaps.b.0[0xfff], 0x7f);
    }

    #[test]
    fn msr_edges() {
        let mut bitmap = MsrBitmap::intercept_all();
        for msr in [0, 0x1fff, 0xc000_0000, 0xc000_1fff] {
            assert!(bitmap.intercepts_read(msr) && bitmap.intercepts_write(msr));
            bitmap.allow_read(msr).unwrap();
            assert!(!bitmap.intercepts_read(msr) && bitmap.intercepts_write(msr), "{msr:#x}");
            bitmap.allow_write(msr).unwrap();
            assert!(!bitmap.intercepts_write(msr), "{msr:#x}");
        }
        // Neighbours untouched.
        assert!(bitmap.intercepts_read(1) && bitmap.intercepts_read(0x1ffe) && bitmap.intercepts_read(0xc000_0001));
        // Bit positions (§25.6.9): MSR 0 read = byte 0 bit 0; 0xc000_1fff write = byte 4095 bit 7.
        assert_eq!(bitmap.0.0[0], 0xfe);
        assert_eq!(bitmap.0.0[1023], 0x7f);
        assert_eq!(bitmap.0.0[1024], 0xfe);
        assert_eq!(bitmap.0.0[2048], 0xfe);
        assert_eq!(bitmap.0.0[4095], 0x7f);
        // Outside the ranges: refused and always intercepted.
        for msr in [0x2000, 0xbfff_ffff, 0xc000_2000, 0xc001_0000, 0xffff_ffff] {
            assert_eq!(bitmap.allow_read(msr), Err(MsrOutOfRange(msr)));
            assert_eq!(bitmap.allow_write(msr), Err(MsrOutOfRange(msr)));
            assert!(bitmap.intercepts_read(msr) && bitmap.intercepts_write(msr));
        }
    }
}
