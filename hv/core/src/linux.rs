//! The arm64 Linux boot protocol (Documentation/arch/arm64/booting.rst):
//! the `Image` header, and where kernel, initramfs and device tree go in a
//! partition's RAM.

/// `ARM\x64`, at offset 0x38 of every arm64 `Image`.
pub const IMAGE_MAGIC: u32 = 0x644d_5241;
/// The kernel must sit at a 2 MiB-aligned base plus `text_offset`.
pub const KERNEL_ALIGN: u64 = 2 << 20;
/// The device tree may be at most 2 MiB and must not share a 2 MiB block
/// with anything mapped differently; it gets the top 2 MiB of RAM.
pub const DTB_SLOT: u64 = 2 << 20;

/// What the header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset from the 2 MiB-aligned base at which the kernel is loaded.
    pub text_offset: u64,
    /// Bytes the kernel occupies once loaded, `.bss` included.
    pub image_size: u64,
    /// Header flags (bit 0: big-endian kernel).
    pub flags: u64,
}

/// Why an `Image` cannot be booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinuxError {
    /// Shorter than the 64-byte header, or without the `ARM\x64` magic.
    NotAnImage,
    /// A big-endian kernel.
    BigEndian,
    /// Kernel, initramfs and device tree do not fit in the RAM region.
    DoesNotFit {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Reads the header of an `Image`.
///
/// # Errors
/// [`LinuxError::NotAnImage`], [`LinuxError::BigEndian`].
pub fn parse_header(image: &[u8]) -> Result<ImageHeader, LinuxError> {
    if image.len() < 64 || u32::from_le_bytes([image[0x38], image[0x39], image[0x3a], image[0x3b]]) != IMAGE_MAGIC {
        return Err(LinuxError::NotAnImage);
    }
    let mut header = ImageHeader { text_offset: u64_at(image, 0x08), image_size: u64_at(image, 0x10), flags: u64_at(image, 0x18) };
    if header.flags & 1 != 0 {
        return Err(LinuxError::BigEndian);
    }
    // A zero image_size means a kernel older than 3.17: text_offset is 0x80000.
    if header.image_size == 0 {
        header.text_offset = 0x8_0000;
        header.image_size = image.len() as u64;
    }
    Ok(header)
}

/// Where everything goes, as guest-physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Where the kernel is copied and entered.
    pub kernel: u64,
    /// Where the initramfs is copied, if there is one.
    pub initrd: Option<u64>,
    /// Where the device tree is written.
    pub dtb: u64,
}

/// Places a kernel (`header`, `file_size` bytes in the file), an initramfs
/// of `initrd_size` bytes (0: none) and a device tree in the RAM region
/// `[ram_base, ram_base + ram_size)`, the kernel at `load` (2 MiB aligned).
/// The device tree takes the top 2 MiB; the initramfs sits just below it.
///
/// # Errors
/// [`LinuxError::DoesNotFit`].
pub fn place(
    header: &ImageHeader,
    file_size: u64,
    initrd_size: u64,
    load: u64,
    ram_base: u64,
    ram_size: u64,
) -> Result<Placement, LinuxError> {
    let ram_end = ram_base.saturating_add(ram_size);
    let kernel = load.saturating_add(header.text_offset);
    let kernel_end = kernel.saturating_add(header.image_size.max(file_size));
    let dtb = (ram_end.saturating_sub(DTB_SLOT)) & !(KERNEL_ALIGN - 1);
    let initrd = if initrd_size == 0 { None } else { Some(dtb.saturating_sub(initrd_size) & !0xfff) };
    let lowest_above_kernel = initrd.unwrap_or(dtb);
    let needed = kernel_end.saturating_sub(ram_base) + initrd_size + DTB_SLOT;
    if load < ram_base || dtb < ram_base || kernel_end > lowest_above_kernel || dtb + DTB_SLOT > ram_end {
        return Err(LinuxError::DoesNotFit { needed, available: ram_size });
    }
    Ok(Placement { kernel, initrd, dtb })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn image(text_offset: u64, image_size: u64, flags: u64) -> alloc::vec::Vec<u8> {
        let mut bytes = vec![0u8; 4096];
        bytes[0x08..0x10].copy_from_slice(&text_offset.to_le_bytes());
        bytes[0x10..0x18].copy_from_slice(&image_size.to_le_bytes());
        bytes[0x18..0x20].copy_from_slice(&flags.to_le_bytes());
        bytes[0x38..0x3c].copy_from_slice(&IMAGE_MAGIC.to_le_bytes());
        bytes
    }

    #[test]
    fn reads_the_header() {
        let header = parse_header(&image(0, 0x200_0000, 0xa)).unwrap();
        assert_eq!(header, ImageHeader { text_offset: 0, image_size: 0x200_0000, flags: 0xa });
        assert_eq!(parse_header(&image(0, 0, 0)).unwrap().text_offset, 0x8_0000, "pre-3.17 kernels");
        assert_eq!(parse_header(&image(0, 1, 1)), Err(LinuxError::BigEndian));
        assert_eq!(parse_header(&[0; 63]), Err(LinuxError::NotAnImage));
        let mut bad = image(0, 1, 0);
        bad[0x38] = b'X';
        assert_eq!(parse_header(&bad), Err(LinuxError::NotAnImage));
    }

    #[test]
    fn places_kernel_initrd_and_dtb_without_overlap() {
        let header = ImageHeader { text_offset: 0, image_size: 0x300_0000, flags: 0xa };
        let placed = place(&header, 0x200_0000, 0x80_0123, 0x4000_0000, 0x4000_0000, 0x1000_0000).unwrap();
        assert_eq!(placed.kernel, 0x4000_0000);
        assert_eq!(placed.dtb, 0x4fe0_0000);
        let initrd = placed.initrd.unwrap();
        assert!(initrd + 0x80_0123 <= placed.dtb);
        assert!(initrd >= 0x4300_0000);
        assert_eq!(initrd % 4096, 0);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let header = ImageHeader { text_offset: 0, image_size: 0x300_0000, flags: 0 };
        assert!(place(&header, 0, 0, 0x4000_0000, 0x4000_0000, 0x400_0000).is_ok(), "48 MiB kernel + DTB in 64 MiB");
        let big = ImageHeader { image_size: 0x3f0_0000, ..header };
        assert!(matches!(place(&big, 0, 0, 0x4000_0000, 0x4000_0000, 0x400_0000), Err(LinuxError::DoesNotFit { .. })));
        assert!(matches!(place(&header, 0, 0x180_0000, 0x4000_0000, 0x4000_0000, 0x480_0000), Err(LinuxError::DoesNotFit { .. })));
        assert!(place(&header, 0, 0, 0x3fe0_0000, 0x4000_0000, 0x1000_0000).is_err(), "load below RAM");
    }
}
