//! What the hypervisor's own page tables map: an identity map (virtual =
//! physical) of exactly the memory the hypervisor uses, each range with its
//! permissions and memory type, and holes everywhere else.
//!
//! [`IdentityLayout`] is built by layering: RAM first, then the ranges that
//! need something else (the image's segments, the AP trampoline page, MMIO)
//! on top, then holes cut out (page 0, stack guards). Each [`set`] or
//! [`unmap`](IdentityLayout::unmap) replaces whatever the range held, so the
//! order of the calls is the order of precedence. The result is a sorted
//! list of non-overlapping, page-aligned [`Mapping`]s, adjacent ones with
//! equal protection merged so that the table builder can use 2 MiB and
//! 1 GiB leaves wherever alignment allows ([`IdentityLayout::leaf_counts`]
//! predicts how many of each it uses).
//!
//! The image's permissions come from its own ELF program headers
//! ([`load_segments`]), which the loader copies along with the first
//! segment: code is read-execute, read-only data and RELRO read-only,
//! everything else no-execute.
//!
//! [`set`]: IdentityLayout::set

use crate::table::chunks;
use crate::{Access, MemoryType, PAGE_SIZE_4KIB, PageSize};
use alloc::vec::Vec;

/// Virtual addresses a four-level table can use without becoming
/// non-canonical: the lower half, bits 46:0. Anything above is left out.
pub const IDENTITY_LIMIT: u64 = 1 << 47;

/// How one range is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protection {
    /// Write-back or uncached.
    pub memory: MemoryType,
    /// What the hypervisor may do there.
    pub access: Access,
}

impl Protection {
    /// RAM: read-write, no-execute, write-back.
    pub const RAM: Protection = Protection { memory: MemoryType::NormalWriteBack, access: Access::READ_WRITE };
    /// The image's code: read-execute.
    pub const CODE: Protection = Protection { memory: MemoryType::NormalWriteBack, access: Access::READ_EXECUTE };
    /// The image's constants and relocated pointers: read-only, no-execute.
    pub const READ_ONLY: Protection = Protection { memory: MemoryType::NormalWriteBack, access: Access::READ };
    /// Code that is also written at run time (the AP trampoline page, which
    /// the boot CPU fills with each AP's parameters).
    pub const WRITABLE_CODE: Protection =
        Protection { memory: MemoryType::NormalWriteBack, access: Access::READ_WRITE_EXECUTE };
    /// Device registers: read-write, no-execute, uncached.
    pub const MMIO: Protection = Protection { memory: MemoryType::DeviceNGnRE, access: Access::READ_WRITE };
}

/// One page-aligned range `[base, end)` and how it is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First byte.
    pub base: u64,
    /// One past the last byte.
    pub end: u64,
    /// Permissions and memory type.
    pub protection: Protection,
}

impl Mapping {
    /// Its length in bytes.
    pub const fn size(&self) -> u64 {
        self.end - self.base
    }
}

/// How many leaves of each size a layout needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeafCounts {
    /// 4 KiB leaves.
    pub size_4kib: usize,
    /// 2 MiB leaves.
    pub size_2mib: usize,
    /// 1 GiB leaves.
    pub size_1gib: usize,
}

/// The sorted, non-overlapping ranges of the identity map (see the module
/// documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityLayout {
    mappings: Vec<Mapping>,
}

impl IdentityLayout {
    /// An empty layout: nothing mapped.
    pub fn new() -> IdentityLayout {
        IdentityLayout::default()
    }

    /// The ranges, sorted by address.
    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    /// Maps every page that `[base, end)` touches with `protection`,
    /// replacing what those pages held. The part at or above
    /// [`IDENTITY_LIMIT`] is left out.
    pub fn set(&mut self, base: u64, end: u64, protection: Protection) {
        self.replace(base, end, Some(protection));
    }

    /// Unmaps every page that `[base, end)` touches: accesses there fault.
    pub fn unmap(&mut self, base: u64, end: u64) {
        self.replace(base, end, None);
    }

    fn replace(&mut self, base: u64, end: u64, protection: Option<Protection>) {
        let base = base & !(PAGE_SIZE_4KIB - 1);
        let end = end.min(IDENTITY_LIMIT).next_multiple_of(PAGE_SIZE_4KIB);
        if base >= end {
            return;
        }
        let mut kept = Vec::with_capacity(self.mappings.len() + 2);
        for mapping in self.mappings.drain(..) {
            if mapping.end <= base || mapping.base >= end {
                kept.push(mapping);
                continue;
            }
            if mapping.base < base {
                kept.push(Mapping { end: base, ..mapping });
            }
            if mapping.end > end {
                kept.push(Mapping { base: end, ..mapping });
            }
        }
        if let Some(protection) = protection {
            kept.push(Mapping { base, end, protection });
        }
        kept.sort_unstable_by_key(|m| m.base);
        for mapping in kept {
            match self.mappings.last_mut() {
                Some(last) if last.end == mapping.base && last.protection == mapping.protection => last.end = mapping.end,
                _ => self.mappings.push(mapping),
            }
        }
    }

    /// Maps the image `[base, end)` page by page: a page gets the union of
    /// the accesses of the `segments` that touch it (so a page two segments
    /// share stays usable by both), where the part of a segment inside
    /// `relro` counts as read-only; a page no segment touches is read-only. Returns the number
    /// of pages that end up both writable and executable (0 for an image
    /// whose segments start on fresh pages).
    pub fn set_image(&mut self, base: u64, end: u64, segments: &[Segment], relro: Option<(u64, u64)>) -> usize {
        let mut writable_code = 0;
        let mut page = base & !(PAGE_SIZE_4KIB - 1);
        while page < end {
            let page_end = page + PAGE_SIZE_4KIB;
            let mut access = Access::READ;
            for segment in segments.iter().filter(|s| s.start < page_end && s.end > page) {
                let (from, to) = (segment.start.max(page), segment.end.min(page_end));
                let relocated_only = relro.is_some_and(|(relro_from, relro_to)| relro_from <= from && to <= relro_to);
                access.write |= segment.access.write && !relocated_only;
                access.execute |= segment.access.execute;
            }
            if access.write && access.execute {
                writable_code += 1;
            }
            self.set(page, page_end, Protection { memory: MemoryType::NormalWriteBack, access });
            page = page_end;
        }
        writable_code
    }

    /// Bytes mapped with exactly `protection`.
    pub fn bytes_with(&self, protection: Protection) -> u64 {
        self.mappings.iter().filter(|m| m.protection == protection).map(Mapping::size).sum()
    }

    /// The leaves a table builder that uses the largest leaf both aligned
    /// and covered (up to `largest_page`) needs for this layout: the same
    /// rule as [`SecondLevelTable::map`](crate::SecondLevelTable::map).
    pub fn leaf_counts(&self, largest_page: PageSize) -> LeafCounts {
        let mut counts = LeafCounts::default();
        for mapping in &self.mappings {
            for (_, _, size) in chunks(largest_page, mapping.base, mapping.base, mapping.size()) {
                match size {
                    PageSize::Size4KiB => counts.size_4kib += 1,
                    PageSize::Size2MiB => counts.size_2mib += 1,
                    PageSize::Size1GiB => counts.size_1gib += 1,
                }
            }
        }
        counts
    }
}

/// One loadable segment of the running image, at its run-time address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// First byte.
    pub start: u64,
    /// One past the last byte (`.bss` included).
    pub end: u64,
    /// From the segment's `p_flags`; read is always granted.
    pub access: Access,
}

/// The loadable segments and the RELRO range of a running image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageSegments {
    /// `PT_LOAD` segments, in header order.
    pub segments: Vec<Segment>,
    /// `PT_GNU_RELRO`: relocated, then never written again.
    pub relro: Option<(u64, u64)>,
}

/// Why an image's program headers could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Not a little-endian 64-bit ELF header.
    NotElf64,
    /// The program headers are not where the header says, or have an
    /// unexpected entry size.
    BadProgramHeaders,
    /// No `PT_PHDR` and no `PT_LOAD` starting at file offset 0, so the
    /// headers' run-time address says nothing about the segments'.
    NoAnchor,
    /// A segment's range wraps around.
    BadSegment,
}

const ELF_HEADER_SIZE: usize = 64;
const PROGRAM_HEADER_SIZE: usize = 56;
const PT_LOAD: u32 = 1;
const PT_PHDR: u32 = 6;
const PT_GNU_RELRO: u32 = 0x6474_e552;
const PF_X: u32 = 1;
const PF_W: u32 = 2;

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([bytes[offset], bytes[offset + 1], bytes[offset + 2], bytes[offset + 3]])
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(raw)
}

/// How many bytes from the start of the ELF header `elf_header` (its first
/// 64 bytes) must be read to hold the program headers too.
///
/// # Errors
/// [`ImageError::NotElf64`] or [`ImageError::BadProgramHeaders`].
pub fn headers_len(elf_header: &[u8]) -> Result<usize, ImageError> {
    if elf_header.len() < ELF_HEADER_SIZE || elf_header[..4] != *b"\x7fELF" || elf_header[4] != 2 || elf_header[5] != 1 {
        return Err(ImageError::NotElf64);
    }
    let phoff = usize::try_from(u64_at(elf_header, 0x20)).map_err(|_| ImageError::BadProgramHeaders)?;
    let entry_size = usize::from(u16_at(elf_header, 0x36));
    let count = usize::from(u16_at(elf_header, 0x38));
    if entry_size != PROGRAM_HEADER_SIZE || phoff < ELF_HEADER_SIZE {
        return Err(ImageError::BadProgramHeaders);
    }
    phoff.checked_add(count * entry_size).ok_or(ImageError::BadProgramHeaders)
}

/// The segments of a running image, from `headers` (its ELF header and
/// program headers, [`headers_len`] bytes) found at run-time address
/// `header_address`. The run-time address of every segment follows from
/// where the headers themselves are: `PT_PHDR` names their link-time
/// address, or else the `PT_LOAD` at file offset 0 holds the ELF header.
///
/// # Errors
/// See [`ImageError`].
pub fn load_segments(headers: &[u8], header_address: u64) -> Result<ImageSegments, ImageError> {
    let len = headers_len(headers)?;
    if headers.len() < len {
        return Err(ImageError::BadProgramHeaders);
    }
    let phoff = u64_at(headers, 0x20) as usize;
    let entries: Vec<&[u8]> = headers[phoff..len].chunks_exact(PROGRAM_HEADER_SIZE).collect();
    let field = |entry: &[u8], offset: usize| u64_at(entry, offset);
    // Run-time address = link-time address + bias.
    let bias = entries
        .iter()
        .find(|e| u32_at(e, 0) == PT_PHDR)
        .map(|e| header_address.wrapping_add(phoff as u64).wrapping_sub(field(e, 0x10)))
        .or_else(|| {
            entries
                .iter()
                .find(|e| u32_at(e, 0) == PT_LOAD && field(e, 0x08) == 0)
                .map(|e| header_address.wrapping_sub(field(e, 0x10)))
        })
        .ok_or(ImageError::NoAnchor)?;
    let range = |entry: &[u8]| -> Result<(u64, u64), ImageError> {
        let start = field(entry, 0x10).wrapping_add(bias);
        let end = start.checked_add(field(entry, 0x28)).ok_or(ImageError::BadSegment)?;
        Ok((start, end))
    };
    let mut image = ImageSegments::default();
    for entry in entries {
        match u32_at(entry, 0) {
            PT_LOAD => {
                let (start, end) = range(entry)?;
                let flags = u32_at(entry, 4);
                let access = Access { read: true, write: flags & PF_W != 0, execute: flags & PF_X != 0 };
                image.segments.push(Segment { start, end, access });
            }
            PT_GNU_RELRO => image.relro = Some(range(entry)?),
            _ => {}
        }
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn ranges(layout: &IdentityLayout) -> Vec<(u64, u64, Protection)> {
        layout.mappings().iter().map(|m| (m.base, m.end, m.protection)).collect()
    }

    #[test]
    fn later_calls_take_precedence_and_equal_neighbours_merge() {
        let mut layout = IdentityLayout::new();
        layout.set(0, 0xa_0000, Protection::RAM);
        layout.set(0x10_0000, 0x800_0000, Protection::RAM);
        // A second descriptor right after the first merges with it.
        layout.set(0x800_0000, 0x4000_0000, Protection::RAM);
        layout.set(0x8000, 0x9000, Protection::WRITABLE_CODE);
        layout.set(0xfee0_0000, 0xfee0_0400, Protection::MMIO);
        layout.unmap(0, 1);
        assert_eq!(
            ranges(&layout),
            [
                (0x1000, 0x8000, Protection::RAM),
                (0x8000, 0x9000, Protection::WRITABLE_CODE),
                (0x9000, 0xa_0000, Protection::RAM),
                (0x10_0000, 0x4000_0000, Protection::RAM),
                (0xfee0_0000, 0xfee0_1000, Protection::MMIO),
            ]
        );
        // Setting a range back to what surrounds it merges it again.
        layout.set(0x8000, 0x9000, Protection::RAM);
        assert_eq!(layout.mappings()[0], Mapping { base: 0x1000, end: 0xa_0000, protection: Protection::RAM });
        assert_eq!(layout.bytes_with(Protection::MMIO), 0x1000);
    }

    #[test]
    fn holes_split_ranges_and_nothing_reaches_the_upper_half() {
        let mut layout = IdentityLayout::new();
        layout.set(0, 4 * GIB, Protection::RAM);
        layout.unmap(0x20_0000, 0x20_1000);
        layout.set(IDENTITY_LIMIT - 0x1000, IDENTITY_LIMIT + 0x1000, Protection::RAM);
        layout.set(IDENTITY_LIMIT, u64::MAX, Protection::RAM);
        assert_eq!(
            ranges(&layout),
            [
                (0, 0x20_0000, Protection::RAM),
                (0x20_1000, 4 * GIB, Protection::RAM),
                (IDENTITY_LIMIT - 0x1000, IDENTITY_LIMIT, Protection::RAM),
            ]
        );
    }

    #[test]
    fn leaf_counts_use_large_pages_where_aligned() {
        let mut layout = IdentityLayout::new();
        layout.set(0, 4 * GIB, Protection::RAM);
        assert_eq!(layout.leaf_counts(PageSize::Size1GiB), LeafCounts { size_4kib: 0, size_2mib: 0, size_1gib: 4 });
        assert_eq!(layout.leaf_counts(PageSize::Size2MiB), LeafCounts { size_4kib: 0, size_2mib: 2048, size_1gib: 0 });
        // Page 0 unmapped: the first 2 MiB goes to 4 KiB pages, the rest of
        // the first GiB to 2 MiB pages.
        layout.unmap(0, 0x1000);
        assert_eq!(layout.leaf_counts(PageSize::Size1GiB), LeafCounts { size_4kib: 511, size_2mib: 511, size_1gib: 3 });
    }

    #[test]
    fn image_pages_take_their_segments_permissions() {
        let base = 0x3e00_0000;
        let segments = [
            Segment { start: base, end: base + 0x5204, access: Access::READ },
            Segment { start: base + 0x6210, end: base + 0x2c9cf, access: Access::READ_EXECUTE },
            Segment { start: base + 0x2d9d0, end: base + 0x2f000, access: Access::READ_WRITE },
            Segment { start: base + 0x2fa58, end: base + 0x30ef0, access: Access::READ_WRITE },
        ];
        let mut layout = IdentityLayout::new();
        layout.set(base - MIB, base + 2 * MIB, Protection::RAM);
        let writable_code = layout.set_image(base, base + 0x31000, &segments, Some((base + 0x2d9d0, base + 0x2f000)));
        assert_eq!(writable_code, 0);
        assert_eq!(
            ranges(&layout),
            [
                (base - MIB, base, Protection::RAM),
                (base, base + 0x6000, Protection::READ_ONLY),
                (base + 0x6000, base + 0x2d000, Protection::CODE),
                // RELRO, and the rest of its first page, which nothing else uses.
                (base + 0x2d000, base + 0x2f000, Protection::READ_ONLY),
                // `.data` and `.bss` are RAM-like, and merge with the RAM above.
                (base + 0x2f000, base + 2 * MIB, Protection::RAM),
            ]
        );
        // Code and data sharing a page: both accesses are kept, and counted.
        let shared = [
            Segment { start: base, end: base + 0x1800, access: Access::READ_EXECUTE },
            Segment { start: base + 0x1800, end: base + 0x2000, access: Access::READ_WRITE },
        ];
        let mut layout = IdentityLayout::new();
        assert_eq!(layout.set_image(base, base + 0x2000, &shared, None), 1);
        assert_eq!(layout.mappings()[1].protection, Protection::WRITABLE_CODE);
    }

    /// An ELF header with the program headers right behind it.
    fn elf(phdrs: &[(u32, u32, u64, u64, u64)]) -> Vec<u8> {
        let mut bytes = alloc::vec![0u8; 64];
        bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
        bytes[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for &(kind, flags, offset, vaddr, memsz) in phdrs {
            let mut entry = [0u8; 56];
            entry[0..4].copy_from_slice(&kind.to_le_bytes());
            entry[4..8].copy_from_slice(&flags.to_le_bytes());
            entry[0x08..0x10].copy_from_slice(&offset.to_le_bytes());
            entry[0x10..0x18].copy_from_slice(&vaddr.to_le_bytes());
            entry[0x28..0x30].copy_from_slice(&memsz.to_le_bytes());
            bytes.extend_from_slice(&entry);
        }
        bytes
    }

    #[test]
    fn segments_are_found_at_their_run_time_addresses() {
        // The layout rust-lld gives the hypervisor: PHDR, R, RX, RW (RELRO), RW.
        let headers = elf(&[
            (PT_PHDR, 4, 0x40, 0x40, 0x1f8),
            (PT_LOAD, 4, 0, 0, 0x5204),
            (PT_LOAD, 5, 0x5210, 0x6210, 0x267bf),
            (PT_LOAD, 6, 0x2b9d0, 0x2d9d0, 0x1630),
            (PT_LOAD, 6, 0x2ca58, 0x2fa58, 0x1498),
            (PT_GNU_RELRO, 4, 0x2b9d0, 0x2d9d0, 0x1630),
            (0x6474_e551, 6, 0, 0, 0),
        ]);
        assert_eq!(headers_len(&headers[..64]), Ok(headers.len()));
        let base = 0x3e00_0000;
        let image = load_segments(&headers, base).unwrap();
        assert_eq!(image.segments.len(), 4);
        assert_eq!(image.segments[1], Segment { start: base + 0x6210, end: base + 0x2c9cf, access: Access::READ_EXECUTE });
        assert_eq!(image.segments[3].access, Access::READ_WRITE);
        assert_eq!(image.relro, Some((base + 0x2d9d0, base + 0x2f000)));
        // Without PT_PHDR the load segment at offset 0 anchors the image.
        let headers = elf(&[(PT_LOAD, 4, 0, 0x1000, 0x2000), (PT_LOAD, 5, 0x2000, 0x3000, 0x1000)]);
        let image = load_segments(&headers, base).unwrap();
        assert_eq!(image.segments[1].start, base + 0x2000);
    }

    #[test]
    fn malformed_headers_are_refused() {
        let mut headers = elf(&[(PT_LOAD, 4, 0, 0, 0x1000)]);
        assert_eq!(load_segments(&headers[..100], 0), Err(ImageError::BadProgramHeaders));
        assert_eq!(load_segments(&elf(&[(PT_LOAD, 4, 0x1000, 0, 0x1000)]), 0), Err(ImageError::NoAnchor));
        assert_eq!(load_segments(&elf(&[(PT_LOAD, 4, 0, 0, u64::MAX)]), 0x1000), Err(ImageError::BadSegment));
        headers[0x36] = 32;
        assert_eq!(headers_len(&headers), Err(ImageError::BadProgramHeaders));
        headers[4] = 1;
        assert_eq!(headers_len(&headers), Err(ImageError::NotElf64));
        assert_eq!(headers_len(&[0; 10]), Err(ImageError::NotElf64));
    }
}
