//! Building a partition's address space from its configuration, with the
//! boot-time checks only the hypervisor can make, and deriving its stage 2.

use crate::memory::{self, Memory};
use crate::platform::Platform;
use alloc::format;
use alloc::string::String;
use bulkhead_arch_aarch64::stage2::{S2Access, S2MemoryType, Stage2Error, Stage2Table};
use bulkhead_config::{Config, MemoryAttribute, Permissions};
use bulkhead_core::address::{Gpa, Hpa};
use bulkhead_core::address_space::{AddressSpace, CpuView, Region, RegionKind};
use bulkhead_core::memmap::{self, MemoryKind};
use bulkhead_drivers::pl011::Pl011;

/// The partition's regions: its memory (allocated, or checked when given by
/// host address) and its passed-through devices.
///
/// # Errors
/// A message naming the field at fault.
pub fn build(
    config: &bulkhead_config::Partition,
    whole: &Config,
    platform: &Platform,
    memory: &Memory,
) -> Result<AddressSpace, String> {
    let mut space = AddressSpace::new();
    let placed = crate::guest_memory::add_ram_regions(&mut space, config, memory::alloc_frames, |base, end| {
        check_host_range(memory, base, end)
    })?;
    for (i, (region, hpa)) in config.memory.iter().zip(placed).enumerate() {
        log::debug!("partition {}: memory[{i}] IPA {:#x} -> {hpa:?}, {:#x} bytes", config.name, region.guest, region.size);
    }
    for (i, passthrough) in config.passthrough.iter().enumerate() {
        let device = whole
            .platform
            .device(&passthrough.device)
            .ok_or_else(|| format!("passthrough[{i}].device '{}' is not a platform device", passthrough.device))?;
        let end = device.base.saturating_add(device.size);
        if let Some(uart) = platform.uart
            && uart < end
            && device.base < uart + Pl011::MMIO_SIZE
            && !platform.console_movable()
        {
            return Err(format!(
                "passthrough[{i}].device '{}' is the hypervisor's console UART, and there is no semihosting host to move the console to",
                device.name
            ));
        }
        check_host_range(memory, device.base, end).map_err(|e| format!("passthrough[{i}]: {e}"))?;
        if memmap::ranges_of(&memory.map, MemoryKind::Free).iter().any(|&(b, e)| device.base < e && b < end) {
            return Err(format!("passthrough[{i}].device '{}' lies in RAM, not device memory", device.name));
        }
        let attr = passthrough.attr_for(device);
        let guest = passthrough.guest_base(device);
        space
            .add_region(Region {
                gpa: Gpa::new(guest),
                hpa: Hpa::new(device.base),
                size: device.size,
                attr,
                perms: Permissions { read: true, write: true, execute: false },
                kind: RegionKind::Device,
                dma: false,
            })
            .map_err(|e| format!("passthrough[{i}]: {e:?}"))?;
        log::info!("partition {}: device '{}' at IPA {guest:#x} ({})", config.name, device.name, attr.as_str());
    }
    Ok(space)
}

fn check_host_range(memory: &Memory, base: u64, end: u64) -> Result<(), String> {
    crate::host_backing::check_host_range(&memory.map, memory.hv_image, base, end)
}

/// The stage-2 memory type for a configured attribute: exactly that one.
pub fn s2_memory_type(attr: MemoryAttribute) -> S2MemoryType {
    match attr {
        MemoryAttribute::NormalWb => S2MemoryType::NormalWriteBack,
        MemoryAttribute::NormalNc => S2MemoryType::NormalNonCacheable,
        MemoryAttribute::DeviceNGnRE => S2MemoryType::DeviceNGnRE,
        MemoryAttribute::DeviceNGnRnE => S2MemoryType::DeviceNGnRnE,
    }
}

/// The arm64 CPU view: an [`AddressSpace`] mapped into stage-2 tables.
pub struct Stage2View<'a>(pub &'a mut Stage2Table);

impl CpuView for Stage2View<'_> {
    type Error = Stage2Error;

    fn map(
        &mut self,
        gpa: Gpa,
        hpa: Hpa,
        size: u64,
        attr: MemoryAttribute,
        perms: Permissions,
        pages_only: bool,
    ) -> Result<(), Stage2Error> {
        let access = S2Access { read: perms.read, write: perms.write, execute: perms.execute };
        let memory = s2_memory_type(attr);
        if pages_only {
            self.0.map_pages(gpa.raw(), hpa.raw(), size, memory, access)
        } else {
            self.0.map(gpa.raw(), hpa.raw(), size, memory, access)
        }
    }
}
