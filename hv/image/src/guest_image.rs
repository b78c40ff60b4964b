//! Putting a partition's guest image into its memory: a flat binary, or an
//! arm64 Linux kernel with its initramfs and a device tree generated for
//! the partition.

use crate::guest_memory::copy_in;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_abi::boot::BootInfo;
use bulkhead_arch_aarch64::cache;
use bulkhead_arch_aarch64::gic::VIRTUAL_TIMER_INTID;
use bulkhead_config::{Console, EMULATED_UART_BASE, ImageKind, VGIC_DISTRIBUTOR_BASE, VGIC_REDISTRIBUTOR_BASE};
use bulkhead_core::address::Gpa;
use bulkhead_core::address_space::RegionKind;
use bulkhead_core::linux;
use bulkhead_core::partition::Partition;
use bulkhead_devicetree::{ArchTimer, GicV3, GuestPlatform, GuestRange, Pl011, PsciConduit};

/// How the vCPU starts: its entry point and `x0`.
pub struct Entry {
    /// Where the vCPU starts.
    pub pc: u64,
    /// Its `x0` (the device tree's address for Linux).
    pub x0: u64,
}

/// Zeroes the partition's RAM (before reloading it after a reset).
pub fn clear_ram(partition: &Partition) {
    for region in partition.space.regions().iter().filter(|r| r.kind == RegionKind::Ram && r.perms.write) {
        // SAFETY: the region is the partition's own RAM, identity-mapped for
        // the hypervisor, and none of its vCPUs runs during a reset.
        unsafe { core::ptr::write_bytes(region.hpa.raw() as *mut u8, 0, region.size as usize) };
        cache::clean_invalidate_to_poc(region.hpa.raw(), region.size);
    }
}

/// Loads the partition's image; returns how its vCPU starts. `boot` counts
/// the partition's boots (1, then 2 after the first reset).
///
/// # Errors
/// A message naming the field at fault.
pub fn load(
    config: &bulkhead_config::Partition,
    partition: &Partition,
    boot_info: &BootInfo,
    vcpu_count: usize,
    boot: u32,
    extra_bootargs: &str,
) -> Result<Entry, String> {
    let image = crate::loaded::module(boot_info, &config.image.file, "image.file")?;
    let entry = match config.image.kind {
        ImageKind::Raw => {
            copy_in(partition, config.image.load, image, "image.file")?;
            Entry { pc: config.image.entry_point(), x0: 0 }
        }
        ImageKind::Linux => load_linux(config, partition, boot_info, image, vcpu_count, boot, extra_bootargs)?,
    };
    cache::invalidate_icache();
    Ok(entry)
}

fn load_linux(
    config: &bulkhead_config::Partition,
    partition: &Partition,
    boot_info: &BootInfo,
    image: &[u8],
    vcpu_count: usize,
    boot: u32,
    extra_bootargs: &str,
) -> Result<Entry, String> {
    let header = linux::parse_header(image).map_err(|e| format!("image.file '{}': {e:?}", config.image.file))?;
    let initrd = match &config.image.initrd {
        Some(name) => crate::loaded::module(boot_info, name, "image.initrd")?,
        None => &[],
    };
    let load = config.image.load;
    let ram = partition
        .space
        .region_at(Gpa::new(load))
        .filter(|r| r.kind == RegionKind::Ram)
        .ok_or_else(|| format!("image.load {load:#x} is not in a RAM region"))?;
    let placed = linux::place(&header, image.len() as u64, initrd.len() as u64, load, ram.gpa.raw(), ram.size)
        .map_err(|e| format!("image: {e:?}"))?;
    let memory: Vec<GuestRange> = partition
        .space
        .regions()
        .iter()
        .filter(|r| r.kind == RegionKind::Ram)
        .map(|r| GuestRange::new(r.gpa.raw(), r.size))
        .collect();
    let platform = GuestPlatform {
        memory,
        cpu_count: vcpu_count as u32,
        psci: PsciConduit::Hvc,
        gic: GicV3 {
            distributor: GuestRange::new(VGIC_DISTRIBUTOR_BASE, 0x1_0000),
            redistributors: GuestRange::new(VGIC_REDISTRIBUTOR_BASE, 0x2_0000 * vcpu_count as u64),
            maintenance_intid: bulkhead_devicetree::GIC_MAINTENANCE_INTID,
        },
        timer: ArchTimer { virtual_intid: VIRTUAL_TIMER_INTID, ..ArchTimer::BSA },
        uart: (config.console == Console::Pl011)
            .then(|| Pl011 { registers: GuestRange::new(EMULATED_UART_BASE, 0x1000), intid: crate::setup::EMULATED_UART_INTID }),
        // Which boot this is, so that a guest can tell a restart apart.
        bootargs: format!("{}{extra_bootargs} bulkhead.boot={boot}", config.image.bootargs),
        initrd: placed.initrd.map(|at| GuestRange::new(at, initrd.len() as u64)),
    };
    let dtb = bulkhead_devicetree::build(&platform).map_err(|e| format!("device tree: {e}"))?;
    copy_in(partition, placed.kernel, image, "image.file")?;
    if let Some(at) = placed.initrd {
        copy_in(partition, at, initrd, "image.initrd")?;
    }
    copy_in(partition, placed.dtb, &dtb, "device tree")?;
    log::info!(
        "partition {}: Linux at {:#x} ({} KiB, text_offset {:#x}), initramfs {} KiB at {:?}, device tree {} bytes at {:#x}",
        config.name,
        placed.kernel,
        header.image_size >> 10,
        header.text_offset,
        initrd.len() >> 10,
        placed.initrd,
        dtb.len(),
        placed.dtb
    );
    Ok(Entry { pc: placed.kernel, x0: placed.dtb })
}
