//! The Bulkhead hypervisor image.
//!
//! Wiring only: the UEFI loader enters `_start` (in the arch crate), which
//! calls [`bulkhead_main`]. From there: console, memory, partitions, and the
//! run loop, each in its own module. Everything with logic of its own lives
//! in `bulkhead-core`, `bulkhead-arch-aarch64` and `bulkhead-drivers`.
//!
//! On x86_64 the image is only the boot path so far (module `x86`): the
//! arm64 modules are compiled for arm64 only.

#![no_std]
#![no_main]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

#[cfg(target_arch = "aarch64")]
mod assign;
#[cfg(target_arch = "aarch64")]
mod console;
#[cfg(target_arch = "aarch64")]
mod crash;
#[cfg(target_arch = "aarch64")]
mod dma_bench;
#[cfg(target_arch = "aarch64")]
mod dma_selftest;
#[cfg(target_arch = "aarch64")]
mod exits;
#[cfg(target_arch = "aarch64")]
mod gic;
#[cfg(target_arch = "aarch64")]
mod guest_image;
#[cfg(target_arch = "aarch64")]
mod interrupts;
#[cfg(target_arch = "aarch64")]
mod iommu;
#[cfg(target_arch = "aarch64")]
mod memory;
#[cfg(target_arch = "aarch64")]
mod pci;
#[cfg(target_arch = "aarch64")]
mod msi;
#[cfg(target_arch = "aarch64")]
mod msi_selftest;
#[cfg(target_arch = "aarch64")]
mod platform;
#[cfg(target_arch = "aarch64")]
mod run;
#[cfg(target_arch = "aarch64")]
mod setup;
#[cfg(target_arch = "aarch64")]
mod space;
// x86_64 (QEMU `q35`): its own entry path, see the module.
mod gpu_hw;
mod gpu_selftest;
mod vgpu;
mod page_track;
mod guest_memory;
mod host_backing;
mod loaded;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
use bulkhead_abi::boot::BootInfo;
#[cfg(target_arch = "aarch64")]
use bulkhead_abi::exit::ExitCode;

/// The hypervisor's Rust entry point, called by `_start` on the hypervisor's
/// own stack with our exception vectors installed.
///
/// # Safety
/// `boot_info` must point at the loader's boot information block, and every
/// range it names must be memory the loader prepared for us.
#[cfg(target_arch = "aarch64")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bulkhead_main(boot_info: *const BootInfo) -> ! {
    // SAFETY: `_start` checked the magic; the loader wrote the whole block
    // into hypervisor-owned memory that nothing else uses.
    let boot_info: &'static BootInfo = unsafe { &*boot_info };
    // SAFETY: called once, first thing, with the loader's pool.
    unsafe { memory::init_heap(boot_info) };
    let platform = platform::Platform::discover(boot_info);
    let args = platform.bootargs.clone().unwrap_or_default();
    console::init(platform.uart, args.log_level);
    platform::set_exit_method(platform.exit_method(&args));

    log::info!("Bulkhead {} hypervisor starting", env!("CARGO_PKG_VERSION"));
    platform.log_summary();
    for word in &args.unknown {
        log::warn!("boot arguments: unknown word '{word}' ignored");
    }

    let (config, refused) = setup::load_config(boot_info);
    let memory = match memory::init(boot_info, &platform, &host_backing::host_backed_ranges(&config)) {
        Ok(memory) => memory,
        Err(message) => {
            log::error!("memory set-up failed: {message}");
            platform::finish(ExitCode::BootFailure);
        }
    };

    if let Some(test) = args.crash {
        crash::trigger(test);
    }

    gic::init_distributor(&platform);
    gic::init_cpu(&platform, platform.boot_cpu().unwrap_or(0), platform.firmware.mpidr);
    msi::init(&platform, platform.boot_cpu().unwrap_or(0));
    // Devices before partitions: BARs are sized and every stream confined
    // while nothing else runs.
    let functions = pci::enumerate(&platform);
    iommu::init(&platform, &functions);
    if args.dma_selftest
        && let Err(reason) = dma_selftest::run(&platform, &functions)
    {
        log::error!("DMA self-test: FAILED: {reason}");
        platform::finish(ExitCode::BootFailure);
    }
    if args.msi_selftest {
        match msi_selftest::run(&platform, &functions) {
            Ok(()) => log::info!("MSI self-test: ok"),
            Err(reason) => {
                log::error!("MSI self-test: FAILED: {reason}");
                platform::finish(ExitCode::BootFailure);
            }
        }
    }
    if args.dma_bench {
        dma_bench::run(platform.firmware.pa_bits);
    }
    gpu_init(&platform, &functions, &config);
    if args.gpu_selftest
        && let Err(reason) = gpu_selftest::run()
    {
        log::error!("gpu selftest: FAILED: {reason}");
        platform::finish(ExitCode::BootFailure);
    }
    if args.gpu_bench {
        gpu_selftest::bench();
    }
    // Virtual GPUs: shares checked against the device found; a partition
    // whose share cannot be given is refused like any boot-time problem.
    let refused = refused
        .into_iter()
        .zip(vgpu::boot(&config))
        .map(|(earlier, gpu)| earlier.or(gpu))
        .collect();
    let slots = setup::create_partitions(&config, refused, boot_info, &platform, &memory, &functions);
    run::start(slots, platform)
}

/// Brings up the GPU if bus 0 has one. Its BARs are mapped by
/// `memory::init` (the PCI memory windows, as Device memory). Its MSI-X
/// vector 0 goes through the GICv3 ITS to an LPI on the CPU of the first
/// partition with a virtual GPU (its stream allowed only the ITS doorbell
/// by the SMMU); without an ITS, completions are seen only by polling at
/// exits ([`vgpu::service`]).
#[cfg(target_arch = "aarch64")]
fn gpu_init(platform: &platform::Platform, functions: &[bulkhead_drivers::pci::Function], config: &bulkhead_config::Config) {
    let function = match bulkhead_drivers::gpu::find(functions) {
        None => return,
        Some(Err(e)) => {
            log::error!("GPU: {e}");
            return;
        }
        Some(Ok(function)) => function,
    };
    let mapped = |address: u64, size: u64| {
        platform.pci.as_ref().is_some_and(|host| {
            host.windows.iter().any(|&(base, len)| base <= address && address + size <= base + len)
        })
    };
    for bar in [function.registers, function.msix, function.shared] {
        if !mapped(bar.address, bar.size) {
            log::error!("GPU {}: BAR{} at {:#x} is outside the mapped PCI windows", function.bdf, bar.index, bar.address);
            return;
        }
    }
    let Some(mut ecam) = pci::ecam(platform) else { return };
    if let Err(reason) = gpu_hw::init(function, &mut ecam) {
        log::error!("GPU {}: {reason}", function.bdf);
        return;
    }
    let cpu = config
        .partitions
        .iter()
        .find(|p| p.gpu.is_some())
        .and_then(|p| p.cpus.first())
        .map_or(platform.boot_cpu().unwrap_or(0), |&c| c as usize);
    let routed = msi::route(u32::from(function.bdf.rid()), bulkhead_drivers::gpu::MODEL_VECTOR, cpu).and_then(|route| {
        iommu::allow_msi_only(function.bdf, route.address & !0xffff)?;
        msi::set_handler(route.intid, |_| {
            gpu_hw::on_gpu_interrupt();
            vgpu::service();
        });
        gpu_hw::enable_msi(&mut ecam, route.address, route.data).map_err(|e| alloc::format!("{e}"))?;
        Ok(route)
    });
    match routed {
        Ok(route) => log::info!("GPU {}: MSI-X vector 0 -> LPI {} on CPU {cpu}", function.bdf, route.intid),
        Err(reason) => log::warn!("GPU {}: no MSI ({reason}): completions by polling at exits", function.bdf),
    }
}

/// Reports a hypervisor panic and ends the run with [`ExitCode::HypervisorFault`].
#[cfg(target_arch = "aarch64")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::emergency_line(format_args!("hypervisor panic: {info}"));
    platform::finish_quietly(ExitCode::HypervisorFault)
}
