//! Bulkhead's UEFI loader.
//!
//! Reads the hypervisor ELF image, the compiled configuration and every guest
//! image the configuration names from the EFI system partition; copies the
//! device tree; records the memory map and the ACPI RSDP; exits boot services
//! and enters the hypervisor at the exception level the firmware ran at (EL2
//! on arm64). Everything the hypervisor keeps lives in memory of the types
//! [`bulkhead_abi::boot::MEMORY_TYPE_HYPERVISOR`] and
//! [`bulkhead_abi::boot::MEMORY_TYPE_GUEST_IMAGE`], which the hypervisor never
//! gives to guests.
//!
//! Any failure before `ExitBootServices` prints a line starting with
//! `bulkhead-boot: error:` and returns an error status to the firmware.

#![no_std]
#![no_main]

extern crate alloc;

mod elf_image;
mod esp;
mod handoff;

use alloc::format;
use alloc::string::String;
use bulkhead_abi::boot::{self as abi, BootInfo, Module, PhysRange};
use core::fmt::Write;
use uefi::prelude::*;

/// A loader failure: the status returned to the firmware and what to print.
pub struct LoadError {
    status: Status,
    message: String,
}

impl LoadError {
    fn new(status: Status, message: String) -> LoadError {
        LoadError { status, message }
    }
}

#[entry]
fn main() -> Status {
    if uefi::helpers::init().is_err() {
        return Status::ABORTED;
    }
    say("bulkhead-boot: loading Bulkhead from the ESP");
    match load() {
        Ok(prepared) => handoff::enter(prepared),
        Err(error) => {
            say(&format!("bulkhead-boot: error: {}", error.message));
            say("bulkhead-boot: returning to the firmware");
            error.status
        }
    }
}

/// Prints one line on the firmware console.
fn say(line: &str) {
    uefi::system::with_stdout(|out| {
        let _ = out.write_str(line);
        let _ = out.write_str("\r\n");
    });
}

/// Everything ready for the jump, before boot services are exited.
pub struct Prepared {
    /// Entry point of the relocated hypervisor.
    pub entry: u64,
    /// The boot information block, in hypervisor-owned memory.
    pub boot_info: &'static mut BootInfo,
}

fn load() -> Result<Prepared, LoadError> {
    let mut esp = esp::Esp::open()?;

    let hv_elf = esp.read(abi::HV_IMAGE_PATH)?;
    let hv = elf_image::load(&hv_elf, abi::HV_IMAGE_PATH)?;
    say(&format!(
        "bulkhead-boot: hypervisor at {:#x}..{:#x}, entry {:#x}",
        hv.image.base,
        hv.image.base + hv.image.size,
        hv.entry
    ));

    let boot_info = esp::alloc_hv::<BootInfo>()?;
    *boot_info = BootInfo::new();
    boot_info.hv_image = hv.image;
    boot_info.hv_pool = esp::alloc_pages(abi::HV_POOL_SIZE, abi::MEMORY_TYPE_HYPERVISOR, "hypervisor pool")?;

    let config_bytes = esp.read(abi::CONFIG_PATH)?;
    let config = bulkhead_config::from_blob(&config_bytes).map_err(|e| {
        LoadError::new(Status::LOAD_ERROR, format!("{}: {e}", abi::CONFIG_PATH))
    })?;
    // Errors inside a partition are the hypervisor's to report: it refuses
    // that partition and starts the others. Only errors that concern no
    // single partition stop the boot here.
    let errors = bulkhead_config::validate(&config);
    if bulkhead_config::has_global_errors(&errors) {
        for e in errors.iter().filter(|e| e.is_global()) {
            say(&format!("bulkhead-boot: {}: {e}", abi::CONFIG_PATH));
        }
        return Err(LoadError::new(
            Status::LOAD_ERROR,
            format!("{}: the configuration has errors outside any partition", abi::CONFIG_PATH),
        ));
    }
    let refused = bulkhead_config::partitions_with_errors(&errors);
    boot_info.config = esp::copy_to(&config_bytes, abi::MEMORY_TYPE_HYPERVISOR, "configuration")?;

    for (index, partition) in config.partitions.iter().enumerate() {
        if refused.contains(&index) {
            say(&format!("bulkhead-boot: partition '{}' has configuration errors; the hypervisor will refuse it", partition.name));
            continue;
        }
        let files = core::iter::once(partition.image.file.as_str()).chain(partition.image.initrd.as_deref());
        for name in files {
            if boot_info.module(name).is_some() {
                continue;
            }
            let path = format!("{}\\{name}", abi::IMAGE_DIR);
            let bytes = esp.read(&path)?;
            let data = esp::copy_to(&bytes, abi::MEMORY_TYPE_GUEST_IMAGE, &path)?;
            let module = Module::new(name, data).ok_or_else(|| {
                LoadError::new(Status::LOAD_ERROR, format!("{path}: image name is too long"))
            })?;
            if !boot_info.push_module(module) {
                return Err(LoadError::new(
                    Status::LOAD_ERROR,
                    format!("{path}: more than {} guest images", abi::MAX_MODULES),
                ));
            }
            say(&format!("bulkhead-boot: guest image {path}: {} bytes", bytes.len()));
        }
    }

    if let Some(args) = esp.read_optional(abi::BOOTARGS_PATH)? {
        if core::str::from_utf8(&args).is_err() {
            return Err(LoadError::new(
                Status::LOAD_ERROR,
                format!("{}: boot arguments are not UTF-8", abi::BOOTARGS_PATH),
            ));
        }
        boot_info.bootargs = esp::copy_to(&args, abi::MEMORY_TYPE_HYPERVISOR, "boot arguments")?;
    }

    let tables = handoff::firmware_tables()?;
    boot_info.device_tree = tables.device_tree;
    boot_info.acpi_rsdp = tables.acpi_rsdp;
    if boot_info.device_tree.is_empty() {
        say("bulkhead-boot: warning: the firmware provides no device tree");
    }
    if boot_info.device_tree == PhysRange::EMPTY && boot_info.acpi_rsdp == 0 {
        return Err(LoadError::new(
            Status::UNSUPPORTED,
            "the firmware provides neither a device tree nor ACPI tables".into(),
        ));
    }
    Ok(Prepared { entry: hv.entry, boot_info })
}
