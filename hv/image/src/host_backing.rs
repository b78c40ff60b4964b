//! Guest memory assigned by host address (`backing = { host = … }`), on
//! both architectures: which ranges the frame allocator must skip, and
//! whether a range may be given to a partition at all.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_config::{Backing, Config};
use bulkhead_core::memmap::{self, MemoryDescriptor, MemoryKind};

/// Every host range the configuration assigns by address: the frame
/// allocator must never hand these out.
pub fn host_backed_ranges(config: &Config) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = config
        .partitions
        .iter()
        .flat_map(|p| p.memory.iter())
        .filter_map(|r| match r.backing {
            Backing::Host(base) => base.checked_add(r.size).map(|end| (base, end)),
            Backing::Allocate => None,
        })
        .collect();
    memmap::merge(&mut ranges);
    ranges
}

/// Checks that host range `base..end` is either RAM free for partitions
/// (the allocator was told to skip it) or lies outside all RAM (device
/// memory). Anything touching the hypervisor's image (`hv_image`) or its
/// other memory, the firmware's, or the guest images' is refused.
pub fn check_host_range(map: &[MemoryDescriptor], hv_image: (u64, u64), base: u64, end: u64) -> Result<(), String> {
    for (kind, what) in [
        (MemoryKind::Hypervisor, "the hypervisor's own memory"),
        (MemoryKind::GuestImage, "the loaded guest images"),
        (MemoryKind::FirmwareRam, "firmware runtime memory"),
        (MemoryKind::Reserved, "reserved memory"),
    ] {
        if let Some((b, e)) = memmap::ranges_of(map, kind).into_iter().find(|&(b, e)| base < e && b < end) {
            return Err(format!("host range {base:#x}..{end:#x} overlaps {what} at {b:#x}..{e:#x}"));
        }
    }
    if hv_image.0 < end && base < hv_image.1 {
        return Err(format!("host range {base:#x}..{end:#x} overlaps the hypervisor image"));
    }
    let free = memmap::ranges_of(map, MemoryKind::Free);
    let inside_free = free.iter().any(|&(b, e)| b <= base && end <= e);
    let touches_free = free.iter().any(|&(b, e)| base < e && b < end);
    if touches_free && !inside_free {
        return Err(format!("host range {base:#x}..{end:#x} is partly RAM and partly not"));
    }
    Ok(())
}
