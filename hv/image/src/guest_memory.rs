//! A partition's RAM before it runs, for both architectures: its regions
//! from the configuration, and writes into it.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_config::Backing;
use bulkhead_core::address::{Gpa, Hpa};
use bulkhead_core::address_space::{Access, AddressSpace, Region, RegionKind};
use bulkhead_core::partition::Partition;

/// Largest alignment asked of the frame allocator for allocated RAM: 2 MiB
/// lets both second-level formats use 2 MiB leaves.
const RAM_ALIGN_MAX: u64 = 2 << 20;

/// Adds the configuration's `memory` regions to `space` as RAM: allocated
/// with `allocate(size, align)`, or at the host address `backing` names once
/// `check_host(base, end)` accepts it. Returns each region's host address,
/// in configuration order, for the caller's log.
///
/// # Errors
/// A message naming `memory[i]` and what is wrong.
pub fn add_ram_regions(
    space: &mut AddressSpace,
    config: &bulkhead_config::Partition,
    allocate: impl Fn(u64, u64) -> Option<Hpa>,
    check_host: impl Fn(u64, u64) -> Result<(), String>,
) -> Result<Vec<Hpa>, String> {
    let mut placed = Vec::with_capacity(config.memory.len());
    for (i, region) in config.memory.iter().enumerate() {
        let hpa = match region.backing {
            Backing::Allocate => allocate(region.size, region.size.min(RAM_ALIGN_MAX).next_power_of_two())
                .ok_or_else(|| format!("memory[{i}]: cannot allocate {:#x} bytes", region.size))?,
            Backing::Host(base) => {
                let end = base.checked_add(region.size).ok_or_else(|| format!("memory[{i}].backing wraps"))?;
                check_host(base, end).map_err(|e| format!("memory[{i}].backing: {e}"))?;
                Hpa::new(base)
            }
        };
        space
            .add_region(Region {
                gpa: Gpa::new(region.guest),
                hpa,
                size: region.size,
                attr: region.attr,
                perms: region.perms,
                kind: RegionKind::Ram,
                dma: region.dma,
            })
            .map_err(|e| format!("memory[{i}]: {e:?}"))?;
        placed.push(hpa);
    }
    Ok(placed)
}

/// Copies `bytes` to guest-physical `at` of `partition`, which must be
/// writable memory of the partition.
///
/// # Errors
/// `"{what} ({len} bytes) does not fit in writable memory at {at:#x}"`.
pub fn copy_in(partition: &Partition, at: u64, bytes: &[u8], what: &str) -> Result<(), String> {
    if bytes.is_empty() {
        return Ok(());
    }
    let target = partition
        .translate(Gpa::new(at), bytes.len() as u64, Access::Write)
        .ok_or_else(|| format!("{what} ({} bytes) does not fit in writable memory at {at:#x}", bytes.len()))?;
    // SAFETY: `target` is the partition's own RAM, just translated and
    // identity-mapped for the hypervisor; the partition does not run yet.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), target.raw() as *mut u8, bytes.len()) };
    // An arm64 guest may start with its MMU and caches off (Linux does), so
    // the bytes must reach the point of coherency; x86 caches are coherent.
    #[cfg(target_arch = "aarch64")]
    bulkhead_arch_aarch64::cache::clean_invalidate_to_poc(target.raw(), bytes.len() as u64);
    Ok(())
}
