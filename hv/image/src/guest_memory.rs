//! Writes into a partition's RAM before it runs, for both architectures.

use alloc::format;
use alloc::string::String;
use bulkhead_core::address::Gpa;
use bulkhead_core::address_space::Access;
use bulkhead_core::partition::Partition;

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
