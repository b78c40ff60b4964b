//! The header of an arm64 Linux `Image` (Documentation/arch/arm64/
//! booting.rst), as Debian ships it in `boot/vmlinuz-*`: raw, not
//! compressed, with an EFI stub. Compressed kernels (gzip, EFI zboot) are
//! refused with an error that says so.

use std::fmt;

/// The header of an arm64 `Image` (Documentation/arch/arm64/booting.rst):
///
/// | offset | field |
/// |---|---|
/// | 0x00 | code0 (`MZ` + branch when an EFI stub is present) |
/// | 0x04 | code1 |
/// | 0x08 | text_offset, little endian |
/// | 0x10 | image_size, little endian |
/// | 0x18 | flags: bit 0 big endian, bits 1-2 page size, bit 3 placement |
/// | 0x20 | res2, res3, res4 |
/// | 0x38 | magic `ARM\x64` |
/// | 0x3c | PE header offset |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Where the image must sit above a 2 MiB-aligned base.
    pub text_offset: u64,
    /// Bytes the image occupies once loaded, BSS included.
    pub image_size: u64,
    /// The flags field.
    pub flags: u64,
    /// Whether the image starts with `MZ` (it is also a PE/COFF EFI program).
    pub efi_stub: bool,
}

/// Why a file is not a raw arm64 `Image`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Shorter than the 64-byte header.
    TooShort(usize),
    /// A gzip stream (`Image.gz`).
    Gzip,
    /// An EFI zboot image (`MZ` ... `zimg`): a compressed kernel behind a
    /// decompressor stub.
    EfiZboot,
    /// No `ARM\x64` at offset 0x38; holds the bytes found.
    BadMagic([u8; 4]),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::TooShort(len) => {
                write!(f, "{len} bytes: shorter than the 64-byte arm64 Image header")
            }
            ImageError::Gzip => f.write_str(
                "a gzip-compressed kernel, not a raw arm64 Image (Debian's arm64 vmlinuz is raw)",
            ),
            ImageError::EfiZboot => f.write_str(
                "an EFI zboot (compressed) kernel, not a raw arm64 Image (Debian's arm64 vmlinuz is raw)",
            ),
            ImageError::BadMagic(found) => write!(
                f,
                "no arm64 Image magic \"ARM\\x64\" at offset 0x38 (found {found:02x?})"
            ),
        }
    }
}

impl std::error::Error for ImageError {}

impl ImageHeader {
    /// Size of the header.
    pub const LEN: usize = 64;
    /// Offset of the magic.
    pub const MAGIC_OFFSET: usize = 0x38;
    /// The magic, `0x644d5241` little endian.
    pub const MAGIC: [u8; 4] = *b"ARM\x64";

    /// Parses the first [`Self::LEN`] bytes of a kernel file.
    ///
    /// # Errors
    /// When the bytes are not a raw arm64 `Image` header.
    pub fn parse(bytes: &[u8]) -> Result<ImageHeader, ImageError> {
        if bytes.starts_with(&[0x1f, 0x8b]) {
            return Err(ImageError::Gzip);
        }
        if bytes.len() >= 8 && bytes.starts_with(b"MZ") && &bytes[4..8] == b"zimg" {
            return Err(ImageError::EfiZboot);
        }
        let Some(header) = bytes.get(..Self::LEN) else {
            return Err(ImageError::TooShort(bytes.len()));
        };
        let le64 = |at: usize| {
            let mut field = [0u8; 8];
            field.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(field)
        };
        let mut magic = [0u8; 4];
        magic.copy_from_slice(&header[Self::MAGIC_OFFSET..Self::MAGIC_OFFSET + 4]);
        if magic != Self::MAGIC {
            return Err(ImageError::BadMagic(magic));
        }
        Ok(ImageHeader {
            text_offset: le64(0x08),
            image_size: le64(0x10),
            flags: le64(0x18),
            efi_stub: header.starts_with(b"MZ"),
        })
    }

    /// Flags bit 0: the kernel is big endian.
    pub fn big_endian(&self) -> bool {
        self.flags & 1 != 0
    }

    /// Flags bits 1-2: the kernel's page size in bytes (`None`: unspecified).
    pub fn page_size(&self) -> Option<u32> {
        match (self.flags >> 1) & 0b11 {
            1 => Some(4 << 10),
            2 => Some(16 << 10),
            3 => Some(64 << 10),
            _ => None,
        }
    }
}

impl fmt::Display for ImageHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "raw arm64 Image{}, text_offset {:#x}, image_size {:#x} ({:.1} MiB), {} endian, {} pages",
            if self.efi_stub { " with EFI stub" } else { "" },
            self.text_offset,
            self.image_size,
            self.image_size as f64 / f64::from(1 << 20),
            if self.big_endian() { "big" } else { "little" },
            self.page_size()
                .map_or_else(|| "unspecified".into(), |p| format!("{} KiB", p >> 10)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(magic: &[u8; 4]) -> Vec<u8> {
        let mut bytes = vec![0u8; 64];
        bytes[..2].copy_from_slice(b"MZ");
        bytes[0x08..0x10].copy_from_slice(&0u64.to_le_bytes());
        bytes[0x10..0x18].copy_from_slice(&0x1aa_0000u64.to_le_bytes());
        bytes[0x18..0x20].copy_from_slice(&0xau64.to_le_bytes());
        bytes[0x38..0x3c].copy_from_slice(magic);
        bytes
    }

    #[test]
    fn image_header_fields_are_read_little_endian() {
        let header = ImageHeader::parse(&header_bytes(b"ARM\x64")).unwrap();
        assert_eq!(header.text_offset, 0);
        assert_eq!(header.image_size, 0x1aa_0000);
        assert_eq!(header.page_size(), Some(4096));
        assert!(!header.big_endian());
        assert!(header.efi_stub);
        let text = header.to_string();
        assert!(text.contains("image_size 0x1aa0000 (26.6 MiB)"), "{text}");
    }

    #[test]
    fn image_header_refusals_say_why() {
        assert_eq!(
            ImageHeader::parse(&header_bytes(b"ARMd")).map(|h| h.image_size),
            Ok(0x1aa_0000),
            "ARM\\x64 is ARMd"
        );
        assert_eq!(
            ImageHeader::parse(&header_bytes(b"ARM\0")),
            Err(ImageError::BadMagic(*b"ARM\0"))
        );
        assert_eq!(
            ImageHeader::parse(&[0x1f, 0x8b, 8, 0]),
            Err(ImageError::Gzip)
        );
        let mut zboot = header_bytes(b"\0\0\0\0");
        zboot[4..8].copy_from_slice(b"zimg");
        assert_eq!(ImageHeader::parse(&zboot), Err(ImageError::EfiZboot));
        assert_eq!(ImageHeader::parse(b"MZ"), Err(ImageError::TooShort(2)));
    }
}
