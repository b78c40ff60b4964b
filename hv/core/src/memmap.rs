//! The firmware memory map (UEFI `GetMemoryMap` descriptors).
//!
//! Descriptor layout and type numbers follow the UEFI specification 2.10,
//! section 7.2 (`EFI_MEMORY_DESCRIPTOR`, `EFI_MEMORY_TYPE`). After
//! `ExitBootServices` the loader's and boot services' memory is free; memory
//! of Bulkhead's own types (see `bulkhead_abi::boot`) is the hypervisor's and
//! never becomes guest memory.

use alloc::vec::Vec;
use bulkhead_abi::boot::{MEMORY_TYPE_GUEST_IMAGE, MEMORY_TYPE_HYPERVISOR};

/// UEFI page size.
pub const UEFI_PAGE_SIZE: u64 = 4096;
/// Size of the fields of a version-1 descriptor; real descriptors may be longer.
pub const MIN_DESCRIPTOR_SIZE: usize = 40;

/// What a range of the memory map is, for the hypervisor's purposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// RAM that is free once boot services are gone.
    Free,
    /// RAM owned by the hypervisor (image, pool, boot information).
    Hypervisor,
    /// RAM holding guest images read by the loader.
    GuestImage,
    /// RAM the firmware keeps (runtime services, ACPI tables): mapped, never given away.
    FirmwareRam,
    /// Memory-mapped I/O the firmware described.
    Mmio,
    /// Anything else (reserved, unusable, persistent): left alone.
    Reserved,
}

impl MemoryKind {
    /// Classifies a UEFI memory type.
    pub const fn from_uefi_type(ty: u32) -> MemoryKind {
        match ty {
            // Loader code/data, boot services code/data, conventional memory.
            1 | 2 | 3 | 4 | 7 => MemoryKind::Free,
            // Runtime services code/data, ACPI reclaim and NVS.
            5 | 6 | 9 | 10 => MemoryKind::FirmwareRam,
            // MMIO and MMIO port space.
            11 | 12 => MemoryKind::Mmio,
            MEMORY_TYPE_HYPERVISOR => MemoryKind::Hypervisor,
            MEMORY_TYPE_GUEST_IMAGE => MemoryKind::GuestImage,
            _ => MemoryKind::Reserved,
        }
    }

    /// Whether the hypervisor's identity map covers it as normal memory.
    pub const fn is_ram(self) -> bool {
        matches!(self, MemoryKind::Free | MemoryKind::Hypervisor | MemoryKind::GuestImage | MemoryKind::FirmwareRam)
    }
}

/// One entry of the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryDescriptor {
    /// The raw UEFI type.
    pub uefi_type: u32,
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
    /// The UEFI attribute bits (`EFI_MEMORY_WB` etc.).
    pub attribute: u64,
}

impl MemoryDescriptor {
    /// Its classification.
    pub const fn kind(&self) -> MemoryKind {
        MemoryKind::from_uefi_type(self.uefi_type)
    }

    /// One past the last byte (saturating).
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
}

/// Why a memory map could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryMapError {
    /// The descriptor size is smaller than a descriptor or not 8-byte aligned.
    BadDescriptorSize(usize),
    /// A descriptor's range wraps around the address space or is not page aligned.
    BadRange {
        /// Index of the descriptor.
        index: usize,
    },
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(raw)
}

/// Parses a memory map of `descriptor_size`-byte descriptors.
///
/// # Errors
/// See [`MemoryMapError`].
pub fn parse(bytes: &[u8], descriptor_size: usize) -> Result<Vec<MemoryDescriptor>, MemoryMapError> {
    if descriptor_size < MIN_DESCRIPTOR_SIZE || !descriptor_size.is_multiple_of(8) {
        return Err(MemoryMapError::BadDescriptorSize(descriptor_size));
    }
    let mut out = Vec::with_capacity(bytes.len() / descriptor_size);
    for (index, raw) in bytes.chunks_exact(descriptor_size).enumerate() {
        let uefi_type = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let base = u64_at(raw, 8);
        let pages = u64_at(raw, 24);
        let attribute = u64_at(raw, 32);
        let size = pages.checked_mul(UEFI_PAGE_SIZE).ok_or(MemoryMapError::BadRange { index })?;
        if !base.is_multiple_of(UEFI_PAGE_SIZE) || base.checked_add(size).is_none() {
            return Err(MemoryMapError::BadRange { index });
        }
        out.push(MemoryDescriptor { uefi_type, base, size, attribute });
    }
    Ok(out)
}

/// Merges the ranges of every descriptor of `kind` into sorted, disjoint,
/// non-adjacent `(base, end)` ranges.
pub fn ranges_of(descriptors: &[MemoryDescriptor], kind: MemoryKind) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> =
        descriptors.iter().filter(|d| d.kind() == kind && d.size > 0).map(|d| (d.base, d.end())).collect();
    merge(&mut ranges);
    ranges
}

/// Sorts and merges overlapping or adjacent ranges in place.
pub fn merge(ranges: &mut Vec<(u64, u64)>) {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for &(base, end) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if base <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((base, end)),
        }
    }
    *ranges = merged;
}

/// Removes every byte of `holes` from `ranges` (both sorted and disjoint).
pub fn subtract(ranges: &[(u64, u64)], holes: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(mut base, end) in ranges {
        for &(hole_base, hole_end) in holes {
            if hole_end <= base || hole_base >= end {
                continue;
            }
            if hole_base > base {
                out.push((base, hole_base));
            }
            base = base.max(hole_end);
        }
        if base < end {
            out.push((base, end));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(descriptors: &[(u32, u64, u64)], size: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for &(ty, base, pages) in descriptors {
            let mut d = alloc::vec![0u8; size];
            d[0..4].copy_from_slice(&ty.to_le_bytes());
            d[8..16].copy_from_slice(&base.to_le_bytes());
            d[24..32].copy_from_slice(&pages.to_le_bytes());
            d[32..40].copy_from_slice(&0xfu64.to_le_bytes());
            bytes.extend_from_slice(&d);
        }
        bytes
    }

    #[test]
    fn free_memory_excludes_the_hypervisor_and_guest_images() {
        let bytes = raw(
            &[
                (7, 0x4000_0000, 0x100),
                (4, 0x4010_0000, 0x100),
                (MEMORY_TYPE_HYPERVISOR, 0x4020_0000, 0x10),
                (2, 0x4021_0000, 0x10),
                (MEMORY_TYPE_GUEST_IMAGE, 0x4022_0000, 0x1),
                (6, 0x4023_0000, 0x1),
                (11, 0x0900_0000, 0x1),
            ],
            48,
        );
        let map = parse(&bytes, 48).unwrap();
        assert_eq!(map.len(), 7);
        assert_eq!(ranges_of(&map, MemoryKind::Free), [(0x4000_0000, 0x4020_0000), (0x4021_0000, 0x4022_0000)]);
        assert_eq!(ranges_of(&map, MemoryKind::Hypervisor), [(0x4020_0000, 0x4021_0000)]);
        assert_eq!(ranges_of(&map, MemoryKind::Mmio), [(0x0900_0000, 0x0900_1000)]);
        assert!(!MemoryKind::Mmio.is_ram());
        assert!(MemoryKind::FirmwareRam.is_ram());
    }

    #[test]
    fn malformed_maps_are_refused() {
        assert_eq!(parse(&[0; 36], 36), Err(MemoryMapError::BadDescriptorSize(36)));
        let bytes = raw(&[(7, 0x123, 1)], 40);
        assert_eq!(parse(&bytes, 40), Err(MemoryMapError::BadRange { index: 0 }));
        let bytes = raw(&[(7, 0xffff_ffff_ffff_f000, 2)], 40);
        assert_eq!(parse(&bytes, 40), Err(MemoryMapError::BadRange { index: 0 }));
    }

    #[test]
    fn subtract_cuts_holes() {
        let ranges = [(0x1000, 0x9000)];
        assert_eq!(subtract(&ranges, &[(0x2000, 0x3000), (0x8000, 0xa000)]), [(0x1000, 0x2000), (0x3000, 0x8000)]);
        assert_eq!(subtract(&ranges, &[(0, 0x10000)]), []);
        assert_eq!(subtract(&ranges, &[]), [(0x1000, 0x9000)]);
    }
}
