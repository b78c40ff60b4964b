//! What the loader handed over, read from the hypervisor-owned memory it
//! left it in: the configuration blob, boot arguments, device tree, memory
//! map and guest images — for both architectures.
//!
//! Every range here is a field of the [`BootInfo`] that `bulkhead_main`
//! received; its safety contract (the ranges are the loader's copies, in
//! memory nothing else writes) is what makes these reads sound.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_abi::boot::{BootInfo, PhysRange};
use bulkhead_core::bootargs::BootArgs;
use bulkhead_core::memmap::{self, MemoryDescriptor};

fn bytes(range: PhysRange) -> &'static [u8] {
    if range.is_empty() {
        return &[];
    }
    // SAFETY: `range` is one of the boot information's ranges (see the
    // module comment): loader-written, hypervisor-owned, never written again.
    unsafe { core::slice::from_raw_parts(range.base as *const u8, range.size as usize) }
}

/// The compiled configuration blob.
pub fn config(boot_info: &BootInfo) -> &'static [u8] {
    bytes(boot_info.config)
}

/// The device tree copy (empty when the firmware had none).
#[cfg(target_arch = "aarch64")]
pub fn device_tree(boot_info: &BootInfo) -> &'static [u8] {
    bytes(boot_info.device_tree)
}

/// The boot arguments (defaults when there are none; text that is not
/// UTF-8 was refused by the loader).
pub fn bootargs(boot_info: &BootInfo) -> Option<BootArgs> {
    if boot_info.bootargs.is_empty() {
        return None;
    }
    Some(BootArgs::parse(core::str::from_utf8(bytes(boot_info.bootargs)).unwrap_or("")))
}

/// The guest image file `name`.
///
/// # Errors
/// `"{field} '{name}' was not loaded"`.
pub fn module(boot_info: &BootInfo, name: &str, field: &str) -> Result<&'static [u8], String> {
    let module = boot_info.module(name).ok_or_else(|| format!("{field} '{name}' was not loaded"))?;
    Ok(bytes(module.data))
}

/// The firmware memory map.
///
/// # Errors
/// A malformed map, as text for the boot log.
pub fn memory_map(boot_info: &BootInfo) -> Result<Vec<MemoryDescriptor>, String> {
    let map = boot_info.memory_map;
    memmap::parse(bytes(map.buffer), map.descriptor_size as usize).map_err(|e| format!("firmware memory map: {e:?}"))
}
