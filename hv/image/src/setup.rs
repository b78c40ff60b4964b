//! Creating partitions from the configuration: memory, stage-2 tables,
//! images and vCPU state.

use crate::memory::{self, Memory};
use crate::platform::Platform;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_abi::boot::BootInfo;
use bulkhead_abi::exit::ExitCode;
use bulkhead_arch_aarch64::cache;
use bulkhead_arch_aarch64::el2::{self, GuestSetup};
use bulkhead_arch_aarch64::exception::VcpuContext;
use bulkhead_arch_aarch64::stage2::{GeometryError, S2Access, S2MemoryType, Stage2Geometry, Stage2Table};
use bulkhead_config::{Backing, Config, Console, FaultPolicy, MemoryAttribute};
use bulkhead_drivers::pl011::Pl011;
use bulkhead_core::address::{Gpa, Hpa};
use bulkhead_core::memmap::{self, MemoryKind};
use bulkhead_core::partition::{Access, Partition, Region, RunState};

/// Largest alignment worth asking the frame allocator for: a level-2 block.
const BLOCK_2M: u64 = 2 << 20;

/// A partition ready to run on this CPU.
pub struct Runnable {
    /// EL2 set-up for its vCPU.
    pub setup: GuestSetup,
    /// The vCPU's registers.
    pub vcpu: VcpuContext,
    /// Its stage-2 tables, which `setup.vttbr` points at.
    pub stage2: Stage2Table,
    /// Physical interrupt exits seen so far (for rate-limited logging).
    pub irq_exits: u32,
    /// What a stage-2 fault does to this partition.
    pub on_fault: FaultPolicy,
    /// Faults injected so far (for rate-limited logging).
    pub injected_faults: u32,
}

/// A configured partition, and its runnable state if it could be started.
pub struct Slot {
    /// The partition.
    pub partition: Partition,
    /// `None` if it was not started.
    pub runnable: Option<Runnable>,
    /// The CPU number (index in the platform's CPU list) that runs it.
    pub cpu: usize,
}

/// Decodes the configuration blob and validates it again. Ends the run if
/// the blob is unreadable or has errors that concern no single partition;
/// returns the configuration and, per partition, the reason it must not be
/// started (its own validation errors).
pub fn load_config(boot_info: &BootInfo) -> (Config, Vec<Option<String>>) {
    // SAFETY: the loader copied the configuration blob into hypervisor memory.
    let blob = unsafe { core::slice::from_raw_parts(boot_info.config.base as *const u8, boot_info.config.size as usize) };
    let config = match bulkhead_config::from_blob(blob) {
        Ok(config) => config,
        Err(e) => {
            log::error!("configuration: {e}");
            crate::platform::finish(ExitCode::BootFailure);
        }
    };
    let errors = bulkhead_config::validate(&config);
    for e in &errors {
        log::error!("configuration: {e}");
    }
    if bulkhead_config::has_global_errors(&errors) {
        log::error!("configuration rejected: errors outside any partition; no partition is started");
        crate::platform::finish(ExitCode::BootFailure);
    }
    let mut refused = alloc::vec![None; config.partitions.len()];
    for e in errors {
        if let Some(slot) = e.partition_index.and_then(|i| refused.get_mut(i)) {
            let text = format!("configuration: {e}");
            slot.get_or_insert(text);
        }
    }
    (config, refused)
}

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

/// Builds every partition whose configuration is sound.
pub fn create_partitions(
    config: &Config,
    refused: Vec<Option<String>>,
    boot_info: &BootInfo,
    platform: &Platform,
    memory: &Memory,
) -> Vec<Slot> {
    let mut slots = Vec::new();
    let whole = config;
    for ((index, config), refusal) in config.partitions.iter().enumerate().zip(refused) {
        let mut partition = Partition::new(index, &config.name, Vec::new());
        let cpu = config.cpus.first().copied().unwrap_or(0) as usize;
        let built = match refusal {
            Some(reason) => Err(reason),
            None => build(index, config, whole, platform, boot_info, memory, &mut partition),
        };
        let runnable = match built {
            Ok(runnable) => Some(runnable),
            Err(reason) => {
                log::error!("partition {}: not started: {reason}", config.name);
                partition.state = RunState::NotStarted(reason);
                None
            }
        };
        slots.push(Slot { partition, runnable, cpu });
    }
    slots
}

/// Checks that a host-backed range is either RAM reserved for partitions
/// (free memory the allocator was told to skip) or lies outside all RAM
/// (device memory). Anything touching the hypervisor's, the firmware's or
/// the guest images' memory is refused.
fn check_host_range(memory: &Memory, base: u64, end: u64) -> Result<(), String> {
    for (kind, what) in [
        (MemoryKind::Hypervisor, "the hypervisor's own memory"),
        (MemoryKind::GuestImage, "the loaded guest images"),
        (MemoryKind::FirmwareRam, "firmware runtime memory"),
        (MemoryKind::Reserved, "reserved memory"),
    ] {
        if let Some((b, e)) = memmap::ranges_of(&memory.map, kind).into_iter().find(|&(b, e)| base < e && b < end) {
            return Err(format!("host range {base:#x}..{end:#x} overlaps {what} at {b:#x}..{e:#x}"));
        }
    }
    if memory.hv_image.0 < end && base < memory.hv_image.1 {
        return Err(format!("host range {base:#x}..{end:#x} overlaps the hypervisor image"));
    }
    let free = memmap::ranges_of(&memory.map, MemoryKind::Free);
    let inside_free = free.iter().any(|&(b, e)| b <= base && end <= e);
    let touches_free = free.iter().any(|&(b, e)| base < e && b < end);
    if touches_free && !inside_free {
        return Err(format!("host range {base:#x}..{end:#x} is partly RAM and partly not"));
    }
    Ok(())
}

/// One past the highest guest-physical address the partition maps.
fn ipa_limit(config: &bulkhead_config::Partition, whole: &Config) -> u64 {
    let memory = config.memory.iter().map(|r| r.guest.saturating_add(r.size));
    let devices = config.passthrough.iter().filter_map(|p| {
        let device = whole.platform.device(&p.device)?;
        Some(p.guest_base(device).saturating_add(device.size))
    });
    memory.chain(devices).max().unwrap_or(0)
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

fn build(
    index: usize,
    config: &bulkhead_config::Partition,
    whole: &Config,
    platform: &Platform,
    boot_info: &BootInfo,
    memory: &Memory,
    partition: &mut Partition,
) -> Result<Runnable, String> {
    let pa_bits = platform.firmware.pa_bits;
    let cpu = config.cpus.first().copied().unwrap_or(0) as usize;
    if cpu >= platform.cpus.len() {
        return Err(format!("cpus[0] = {cpu}, but the machine has {} CPU(s)", platform.cpus.len()));
    }
    if cpu != platform.boot_cpu().unwrap_or(0) && platform.psci.is_none() {
        return Err(format!("CPU {cpu} cannot be started: the device tree names no PSCI method"));
    }
    if config.cpus.len() > 1 {
        log::warn!("partition {}: runs one vCPU on CPU {cpu}; CPUs {:?} stay idle until multi-vCPU partitions exist", config.name, &config.cpus[1..]);
    }

    let geometry = Stage2Geometry::for_limit(ipa_limit(config, whole), pa_bits).map_err(|e| match e {
        GeometryError::IpaTooLarge { needed, available } => format!(
            "its highest guest address needs a {needed}-bit IPA space; this CPU offers {available} bits"
        ),
    })?;
    let mut stage2 = Stage2Table::new(geometry);
    let mut regions = Vec::new();
    for (i, region) in config.memory.iter().enumerate() {
        let hpa = match region.backing {
            Backing::Allocate => {
                let align = region.size.min(BLOCK_2M).next_power_of_two();
                memory::alloc_frames(region.size, align)
                    .ok_or_else(|| format!("memory[{i}]: cannot allocate {:#x} bytes", region.size))?
            }
            Backing::Host(base) => {
                let end = base.checked_add(region.size).ok_or_else(|| format!("memory[{i}].backing wraps"))?;
                check_host_range(memory, base, end).map_err(|e| format!("memory[{i}].backing: {e}"))?;
                Hpa::new(base)
            }
        };
        let memory_type = s2_memory_type(region.attr);
        let access = S2Access { read: region.perms.read, write: region.perms.write, execute: region.perms.execute };
        stage2
            .map(region.guest, hpa.raw(), region.size, memory_type, access)
            .map_err(|e| format!("memory[{i}]: stage-2 mapping failed: {e:?}"))?;
        regions.push(Region { gpa: Gpa::new(region.guest), hpa, size: region.size, attr: region.attr, perms: region.perms });
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
        {
            return Err(format!("passthrough[{i}].device '{}' is the hypervisor's console UART", device.name));
        }
        check_host_range(memory, device.base, end).map_err(|e| format!("passthrough[{i}]: {e}"))?;
        if memmap::ranges_of(&memory.map, MemoryKind::Free).iter().any(|&(b, e)| device.base < e && b < end) {
            return Err(format!("passthrough[{i}].device '{}' lies in RAM, not device memory", device.name));
        }
        let attr = passthrough.attr_for(device);
        let guest = passthrough.guest_base(device);
        let rw = S2Access { read: true, write: true, execute: false };
        stage2
            .map(guest, device.base, device.size, s2_memory_type(attr), rw)
            .map_err(|e| format!("passthrough[{i}]: stage-2 mapping failed: {e:?}"))?;
        regions.push(Region {
            gpa: Gpa::new(guest),
            hpa: Hpa::new(device.base),
            size: device.size,
            attr,
            perms: bulkhead_config::Permissions { read: true, write: true, execute: false },
        });
        log::info!("partition {}: device '{}' at IPA {guest:#x} ({})", config.name, device.name, attr.as_str());
    }
    if !config.interrupts.is_empty() || !config.passthrough.is_empty() {
        log::warn!(
            "partition {}: its interrupts are not delivered yet (no GIC driver): {:?}",
            config.name,
            config.interrupt_ids(&whole.platform)
        );
    }
    *partition = Partition::new(index, &config.name, regions);
    partition.console_enabled = config.console == Console::Hypercall;

    let module = boot_info
        .module(&config.image.file)
        .ok_or_else(|| format!("image.file '{}' was not loaded", config.image.file))?;
    let image_len = module.data.size;
    let load = Gpa::new(config.image.load);
    let target = partition
        .translate(load, image_len.max(1), Access::Write)
        .ok_or_else(|| format!("image.file '{}' ({image_len} bytes) does not fit in writable memory at {load}", config.image.file))?;
    // SAFETY: the module is the loader's copy in guest-image memory; the
    // target range was just allocated for this partition and translated.
    unsafe {
        core::ptr::copy_nonoverlapping(module.data.base as *const u8, target.raw() as *mut u8, image_len as usize);
    }
    cache::clean_invalidate_to_poc(target.raw(), image_len);
    cache::invalidate_icache();

    let vmid = u8::try_from(index + 1).map_err(|_| String::from("too many partitions for 8-bit VMIDs"))?;
    let setup = GuestSetup {
        vttbr: el2::vttbr(stage2.root_address(), vmid),
        vtcr: el2::vtcr(geometry, pa_bits.min(48)),
        // The guest's only vCPU is its CPU 0, whichever physical CPU runs it.
        vmpidr: 1 << 31,
    };
    log::info!(
        "partition {}: CPU {cpu}, {} region(s), {}-bit IPA space, {} stage-2 table page(s), image {} ({} bytes) at {load}, entry {:#x}, VMID {vmid}",
        config.name,
        partition.regions.len(),
        geometry.ipa_bits,
        stage2.table_pages(),
        config.image.file,
        image_len,
        config.image.entry_point()
    );
    Ok(Runnable {
        setup,
        vcpu: VcpuContext::new(config.image.entry_point(), 0),
        stage2,
        irq_exits: 0,
        on_fault: config.on_fault,
        injected_faults: 0,
    })
}
