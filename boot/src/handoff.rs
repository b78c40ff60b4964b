//! The last steps: firmware tables, `ExitBootServices`, and the jump.

use crate::esp::copy_to;
use crate::{LoadError, Prepared};
use alloc::format;
use bulkhead_abi::boot::{BootInfo, MEMORY_TYPE_HYPERVISOR, MemoryMapInfo, PhysRange};
use uefi::mem::memory_map::MemoryMap;
use uefi::table::cfg::ConfigTableEntry;
use uefi::{Guid, Status, boot, guid};

/// `EFI_DTB_TABLE_GUID`: the flattened device tree configuration table.
const DEVICE_TREE_GUID: Guid = guid!("b1b621d5-f19c-41a5-830b-d9152c69aae0");
/// The FDT header's magic number (big-endian in memory).
const FDT_MAGIC: u32 = 0xd00d_feed;
/// Largest device tree we copy.
const FDT_MAX_SIZE: u32 = 2 << 20;

/// What the firmware's configuration tables told us.
pub struct FirmwareTables {
    /// Copy of the device tree, in hypervisor memory.
    pub device_tree: PhysRange,
    /// ACPI 2.0 RSDP, or 0.
    pub acpi_rsdp: u64,
}

/// Finds the device tree (copying it) and the ACPI RSDP.
pub fn firmware_tables() -> Result<FirmwareTables, LoadError> {
    let (dtb, rsdp) = uefi::system::with_config_table(|entries: &[ConfigTableEntry]| {
        let find = |guid: Guid| entries.iter().find(|e| e.guid == guid).map(|e| e.address as u64);
        (find(DEVICE_TREE_GUID), find(ConfigTableEntry::ACPI2_GUID))
    });
    let device_tree = match dtb {
        None => PhysRange::EMPTY,
        Some(address) => {
            // SAFETY: the firmware published a device tree at this address; its
            // header starts with two big-endian words, magic and total size.
            let (magic, size) = unsafe {
                let header = address as *const u32;
                (u32::from_be(header.read_unaligned()), u32::from_be(header.add(1).read_unaligned()))
            };
            if magic != FDT_MAGIC || !(40..=FDT_MAX_SIZE).contains(&size) {
                return Err(LoadError::new(
                    Status::LOAD_ERROR,
                    format!("the firmware's device tree at {address:#x} is malformed (magic {magic:#x}, size {size})"),
                ));
            }
            // SAFETY: the header says the blob is `size` bytes long.
            let bytes = unsafe { core::slice::from_raw_parts(address as *const u8, size as usize) };
            copy_to(bytes, MEMORY_TYPE_HYPERVISOR, "device tree")?
        }
    };
    Ok(FirmwareTables { device_tree, acpi_rsdp: rsdp.unwrap_or(0) })
}

/// Exits boot services and jumps into the hypervisor. Returns only on failure
/// before the exit.
pub fn enter(prepared: Prepared) -> Status {
    let Prepared { entry, boot_info } = prepared;
    crate::say("bulkhead-boot: exiting boot services and entering the hypervisor");
    clean_caches(boot_info);
    // SAFETY: nothing of the firmware's boot services is used after this point:
    // the loader only fills in the boot information and jumps.
    let memory_map = unsafe { boot::exit_boot_services(Some(boot::MemoryType::custom(MEMORY_TYPE_HYPERVISOR))) };
    let meta = memory_map.meta();
    let buffer = memory_map.buffer();
    boot_info.memory_map = MemoryMapInfo {
        buffer: PhysRange { base: buffer.as_ptr() as u64, size: meta.map_size as u64 },
        descriptor_size: meta.desc_size as u64,
        descriptor_version: meta.desc_version,
        reserved: 0,
    };
    // The hypervisor owns the map's buffer from now on.
    core::mem::forget(memory_map);
    // SAFETY: `entry` is the relocated entry point of the image we loaded,
    // which follows the C calling convention and takes the boot information.
    unsafe { jump(entry, boot_info) }
}

/// Makes the loaded code visible to instruction fetch.
fn clean_caches(boot_info: &BootInfo) {
    #[cfg(target_arch = "aarch64")]
    {
        let range = boot_info.hv_image;
        let mut line = range.base & !63;
        while line < range.base + range.size {
            // SAFETY: cache maintenance by address on memory we own has no
            // effect beyond writing back dirty lines.
            unsafe { core::arch::asm!("dc cvau, {}", in(reg) line) };
            line += 64;
        }
        // SAFETY: barriers and invalidating the instruction cache are always safe.
        unsafe { core::arch::asm!("dsb ish", "ic iallu", "dsb ish", "isb") };
    }
    #[cfg(not(target_arch = "aarch64"))]
    let _ = boot_info;
}

/// Jumps to the hypervisor with interrupts masked.
///
/// # Safety
/// `entry` must be a function that takes a `*mut BootInfo` and never returns.
unsafe fn jump(entry: u64, boot_info: &'static mut BootInfo) -> ! {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: masking interrupts is harmless; the caller vouches for `entry`.
    unsafe {
        core::arch::asm!("msr daifset, #0xf", "isb");
        let entry: extern "C" fn(*mut BootInfo) -> ! = core::mem::transmute(entry as usize);
        entry(boot_info)
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("cli");
        let entry: extern "sysv64" fn(*mut BootInfo) -> ! = core::mem::transmute(entry as usize);
        entry(boot_info)
    }
}
