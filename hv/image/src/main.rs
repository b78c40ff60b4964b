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
    let slots = setup::create_partitions(&config, refused, boot_info, &platform, &memory, &functions);
    run::start(slots, platform)
}

/// Reports a hypervisor panic and ends the run with [`ExitCode::HypervisorFault`].
#[cfg(target_arch = "aarch64")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::emergency_line(format_args!("hypervisor panic: {info}"));
    platform::finish_quietly(ExitCode::HypervisorFault)
}
