//! The x86_64 image (QEMU `q35`): boot to the hypervisor's Rust code, the
//! COM1 console, our own GDT/IDT with a fatal-exception report (and a TSS
//! per CPU, whose IST stacks carry #DF, NMI and #MC), the memory map, the
//! ACPI MADT and our own page tables ([`paging`]); VT-d on with every device blocked
//! ([`iommu`], and its `selftest=dma`; PCI bus 0 in [`pci`]); then the partitions of the configuration, built
//! ([`partition`], their PCI functions and DMA domains in [`assign`]) and run at the same time, each on its own CPU ([`smp`]:
//! application processors started with INIT-SIPI-SIPI) under AMD SVM with
//! nested paging ([`svm`]) or Intel VMX with EPT ([`vmx`], never executed:
//! QEMU TCG has no VMX), whichever [`backend`] CPUID selects, exits handled
//! in [`exits`]; then the summary, printed by the CPU that
//! finishes last, whose exit code ends the run through `isa-debug-exit`.
//!
//! Not yet: more than one vCPU per partition, virtual interrupts, device
//! emulation beyond the verdict register.

mod assign;
mod backend;
mod console;
pub(crate) mod intx;
mod iommu;
mod pci;
mod memory;
mod paging;
pub(crate) mod partition;
mod exits;
mod smp;
mod svm;
mod vmx;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use bulkhead_abi::boot::BootInfo;
use bulkhead_config::Config;
use bulkhead_abi::exit::ExitCode;
use bulkhead_arch_x86_64::cpu::ap::LocalApic;
use bulkhead_arch_x86_64::cpu::{gdt, idt};
use bulkhead_arch_x86_64::exception::{ExceptionFrame, vector_name};
use bulkhead_core::acpi::{self, PhysicalMemory};
use bulkhead_core::bootargs::CrashTest;
use bulkhead_core::memmap::{self, MemoryDescriptor, MemoryKind};
use buddy_system_allocator::LockedHeap;
use console::{emergency_line, finish, finish_quietly};

/// Bytes at the top of the pool used as the boot CPU's stack (`_start`
/// puts the stack pointer at the pool's end).
const STACK_SIZE: u64 = 256 << 10;
/// Kept free between heap and stack, and unmapped in our page tables: an
/// overflowing stack faults there.
const GUARD_SIZE: u64 = 4096;

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// A non-canonical address: any access raises #GP.
const NON_CANONICAL: usize = 0x8000_0000_0000_0000;

/// The hypervisor's Rust entry point, called by `_start` on the
/// hypervisor's own stack with our GDT and IDT loaded.
///
/// # Safety
/// `boot_info` must point at the loader's boot information block, and every
/// range it names must be memory the loader prepared for us.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bulkhead_main(boot_info: *const BootInfo) -> ! {
    // SAFETY: `_start` checked the magic; the loader wrote the whole block
    // into hypervisor-owned memory that nothing else uses.
    let boot_info: &'static BootInfo = unsafe { &*boot_info };
    let pool = boot_info.hv_pool;
    // SAFETY: the pool is hypervisor-owned memory reserved by the loader;
    // the heap stays below the guard gap and the stack.
    unsafe { HEAP.lock().init(pool.base as usize, (pool.size - STACK_SIZE - GUARD_SIZE) as usize) };
    // SAFETY: at CPL 0 with interrupts masked, the heap works, and no other
    // CPU runs yet; this CPU's TSS is loaded before the gates use it.
    unsafe {
        gdt::load_cpu_tables();
        idt::use_ist_stacks();
    }
    let stack_bottom = pool.base + pool.size - STACK_SIZE;

    let args = crate::loaded::bootargs(boot_info).unwrap_or_default();
    console::init(args.log_level);
    console::set_exit_method(args.exit);
    log::info!("Bulkhead {} hypervisor starting (x86_64, long mode, own GDT and IDT)", env!("CARGO_PKG_VERSION"));
    for word in &args.unknown {
        log::warn!("boot arguments: unknown word '{word}' ignored");
    }
    if !boot_info.is_compatible() {
        log::error!("boot information version {} is not {}", boot_info.version, bulkhead_abi::boot::BOOT_INFO_VERSION);
        finish(ExitCode::BootFailure);
    }
    log::info!(
        "hypervisor image {:#x} (+{:#x}), pool {:#x} (+{:#x}), {} guest image(s), configuration {} bytes",
        boot_info.hv_image.base,
        boot_info.hv_image.size,
        pool.base,
        pool.size,
        boot_info.modules().len(),
        boot_info.config.size
    );
    log::info!(
        "own TSS with IST stacks for #DF, NMI and #MC ({} KiB each, one set per CPU)",
        gdt::IST_STACK_SIZE >> 10
    );
    let map = match crate::loaded::memory_map(boot_info) {
        Ok(map) if !map.is_empty() => map,
        Ok(_) => {
            log::error!("no memory map from the loader");
            finish(ExitCode::BootFailure);
        }
        Err(message) => {
            log::error!("{message}");
            finish(ExitCode::BootFailure);
        }
    };
    log_memory_map(&map);
    let (cpus, madt_apic) = log_cpus(boot_info.acpi_rsdp);
    let mut low_pages = memory::low_pages(&map);
    let trampoline = low_pages.next();
    let Some(root) = low_pages.next() else {
        log::error!("no free page below 1 MiB for the page-table root");
        finish(ExitCode::BootFailure);
    };
    // SAFETY: OVMF identity-maps the local APIC's page uncached.
    let msr_apic = unsafe { LocalApic::current() }.mmio_base();
    let mut local_apics: Vec<u64> = madt_apic.into_iter().chain(msr_apic).map(|a| a & !0xfff).collect();
    local_apics.dedup();
    let inputs = paging::Inputs {
        trampoline,
        root,
        local_apics: &local_apics,
        holes: &[(stack_bottom - GUARD_SIZE, stack_bottom)],
    };
    let tables = match paging::init(boot_info, &map, &inputs) {
        Ok(tables) => tables,
        Err(message) => {
            log::error!("{message}");
            finish(ExitCode::BootFailure);
        }
    };

    if let Some(test) = args.crash {
        crash(test, stack_bottom);
    }
    // Every device's DMA is blocked before any partition exists.
    iommu::init(&IdentityMapped, boot_info.acpi_rsdp, &tables);
    if args.dma_selftest {
        iommu::dma_selftest(&IdentityMapped, boot_info.acpi_rsdp, &tables);
    }
    gpu_init(boot_info.acpi_rsdp, &tables);
    if args.gpu_selftest
        && let Err(reason) = crate::gpu_selftest::run()
    {
        log::error!("gpu selftest: FAILED: {reason}");
        finish(ExitCode::BootFailure);
    }
    if args.gpu_bench {
        crate::gpu_selftest::bench();
    }
    run_partitions(boot_info, &map, &cpus, trampoline, &tables, args.dma_bench)
}

/// Lets pending device interrupts (the GPU's MSI) in: a short STI window.
pub fn take_device_interrupts() {
    intx::take_interrupts();
}

/// Brings up the GPU if bus 0 has one: its BARs mapped uncached, the
/// reserved layout written ([`crate::gpu_hw::init`]), MSI-X vector 0 on a
/// host vector aimed at this CPU.
fn gpu_init(rsdp: u64, tables: &paging::Live) {
    let bus = match pci::bus0(&IdentityMapped, rsdp, tables) {
        Ok(bus) => bus,
        Err(reason) => {
            log::info!("GPU: no PCI bus 0 ({reason})");
            return;
        }
    };
    let function = match bulkhead_drivers::gpu::find(bus.functions()) {
        None => return,
        Some(Err(e)) => {
            log::error!("GPU: {e}");
            return;
        }
        Some(Ok(function)) => function,
    };
    const PAGE: u64 = 4096;
    for bar in [function.registers, function.msix, function.shared] {
        let base = bar.address & !(PAGE - 1);
        let end = (bar.address + bar.size).next_multiple_of(PAGE);
        if let Err(reason) = paging::map_mmio(base, end - base, tables) {
            log::error!("GPU {}: BAR{}: {reason}", function.bdf, bar.index);
            return;
        }
    }
    let mut ecam = bus.ecam();
    if let Err(reason) = crate::gpu_hw::init(function, &mut ecam) {
        log::error!("GPU {}: {reason}", function.bdf);
        return;
    }
    // SAFETY: our page tables map the local APIC uncached.
    let apic = unsafe { LocalApic::current() };
    // Software-enable the local APIC now (as `backend::enable_this_cpu`
    // does later, idempotently): the self-test takes the MSI before that.
    apic.set_spurious_vector(idt::SPURIOUS_VECTOR);
    let apic_id = apic.id();
    match intx::claim_gpu_vector(apic_id).map_err(|e| e.to_string()).and_then(|(address, data)| {
        crate::gpu_hw::enable_msi(&mut ecam, address, data).map(|()| (address, data)).map_err(|e| e.to_string())
    }) {
        Ok((address, data)) => log::info!("GPU {}: MSI-X vector 0 -> host vector {data:#x} (address {address:#x}) on APIC {apic_id}", function.bdf),
        Err(reason) => log::error!("GPU {}: MSI-X: {reason}; completions by polling only", function.bdf),
    }
}

/// Aims the GPU's MSI-X vector 0 at the CPU with APIC ID `apic_id`.
fn retarget_gpu_msi(apic_id: u32, rsdp: u64, tables: &paging::Live) {
    let (Some((address, data)), Ok(bus)) = (intx::gpu_msi(apic_id), pci::bus0(&IdentityMapped, rsdp, tables)) else {
        return;
    };
    match crate::gpu_hw::enable_msi(&mut bus.ecam(), address, data) {
        Ok(()) => log::info!("GPU: MSI-X vector 0 -> host vector {data:#x} on APIC {apic_id} (a virtual GPU's CPU)"),
        Err(e) => log::error!("GPU: MSI-X cannot be aimed at APIC {apic_id}: {e}"),
    }
}

/// Loads the configuration, builds and runs every partition, prints the
/// summary and ends the run with its exit code.
fn run_partitions(
    boot_info: &'static BootInfo,
    map: &[MemoryDescriptor],
    cpus: &[u32],
    trampoline: Option<u64>,
    tables: &paging::Live,
    dma_bench: bool,
) -> ! {
    let (config, mut refused) = load_config(boot_info);
    // The GPU is up (`gpu_init`); the virtual GPUs' shares are decided
    // before any partition is built, and a share that cannot be given
    // refuses its partition like the configuration's own checks.
    for (refusal, gpu_refusal) in refused.iter_mut().zip(crate::vgpu::boot(&config)) {
        if refusal.is_none() {
            *refusal = gpu_refusal;
        }
    }
    // The GPU's completions go to a CPU that runs a virtual GPU's
    // partition (the boot CPU may run none, or stop first), which then
    // kicks the others.
    if let Some(apic_id) = config
        .partitions
        .iter()
        .zip(&refused)
        .find(|(p, refusal)| p.gpu.is_some() && refusal.is_none())
        .and_then(|(p, _)| cpu_of(p, cpus).ok())
    {
        retarget_gpu_msi(apic_id, boot_info.acpi_rsdp, tables);
    }
    let host_backed = crate::host_backing::host_backed_ranges(&config);
    memory::init(boot_info, map, &host_backed, tables);
    if config.partitions.iter().any(|p| !p.pci.is_empty())
        && let Err(reason) = pci::bus0(&IdentityMapped, boot_info.acpi_rsdp, tables)
    {
        log::error!("PCI: {reason}: no function can be assigned");
    }
    if config.partitions.iter().any(|p| !p.pci.is_empty()) {
        intx::init(&IdentityMapped, boot_info.acpi_rsdp, tables);
    }
    if dma_bench {
        assign::bench();
    }
    let backend = backend::choose().and_then(|chosen| backend::enable_this_cpu(chosen).map(|cpu| (chosen, cpu)));
    if let Err(reason) = &backend {
        log::error!("{reason}");
    }
    let mut slots = Vec::new();
    for ((index, config), refusal) in config.partitions.iter().enumerate().zip(refused) {
        let built = match (refusal, &backend) {
            (Some(reason), _) => Err(reason),
            (None, Err(reason)) => Err(reason.clone()),
            (None, Ok((chosen, _))) => cpu_of(config, cpus).and_then(|apic_id| {
                let format = backend::table_format(*chosen)?;
                partition::build(index, config, boot_info, map, format).map(|built| (built, apic_id))
            }),
        };
        slots.push(match built {
            Ok(((mut partition, table, start), apic_id)) => {
                partition.console_enabled = config.console != bulkhead_config::Console::None;
                smp::Slot::ready(partition, table, start, apic_id)
            }
            Err(reason) => smp::Slot::refused(index, &config.name, reason),
        });
    }
    smp::start(slots, trampoline, backend.ok().map(|(_, cpu)| cpu))
}

/// The APIC ID of the one CPU `config` runs on: its CPU number indexes the
/// usable CPUs of the MADT (`cpus`), in table order.
fn cpu_of(config: &bulkhead_config::Partition, cpus: &[u32]) -> Result<u32, String> {
    match config.cpus.as_slice() {
        [cpu] => cpus.get(*cpu as usize).copied().ok_or_else(|| {
            format!("cpus: CPU {cpu} does not exist (the ACPI MADT lists {} usable CPU(s))", cpus.len())
        }),
        _ => Err(String::from("cpus: one vCPU per partition on x86_64 so far (give exactly one CPU)")),
    }
}

/// Decodes and validates the configuration blob. Ends the run if it is
/// unreadable or has errors outside any partition; returns, per partition,
/// the reason it must not be started.
fn load_config(boot_info: &BootInfo) -> (Config, Vec<Option<String>>) {
    match bulkhead_core::boot_config::check(crate::loaded::config(boot_info)) {
        Some(checked) => checked,
        None => finish(ExitCode::BootFailure),
    }
}

/// Summarises the firmware memory map the loader recorded.
fn log_memory_map(descriptors: &[MemoryDescriptor]) {
    for d in descriptors {
        log::debug!("memory map: {:#012x}..{:#012x} UEFI type {:#x}", d.base, d.end(), d.uefi_type);
    }
    let mib = |kind: MemoryKind| memmap::ranges_of(descriptors, kind).iter().map(|(b, e)| e - b).sum::<u64>() >> 20;
    log::info!(
        "memory map: {} descriptors; free RAM {} MiB, hypervisor {} MiB, guest images {} MiB, firmware RAM {} MiB",
        descriptors.len(),
        mib(MemoryKind::Free),
        mib(MemoryKind::Hypervisor),
        mib(MemoryKind::GuestImage),
        mib(MemoryKind::FirmwareRam)
    );
}

/// ACPI tables, read in place: they lie in ACPI reclaim/NVS memory, RAM
/// that both the firmware's and our own page tables identity-map.
struct IdentityMapped;

impl PhysicalMemory for IdentityMapped {
    fn read(&self, address: u64, buffer: &mut [u8]) -> bool {
        if address == 0 || address.checked_add(buffer.len() as u64).is_none_or(|end| end > 1 << 46) {
            return false;
        }
        // SAFETY: ACPI tables lie in firmware RAM that stays mapped and is
        // never written after boot; the range was checked to be canonical.
        unsafe { core::ptr::copy_nonoverlapping(address as *const u8, buffer.as_mut_ptr(), buffer.len()) };
        true
    }
}

/// Lists the CPUs of the ACPI MADT; returns the usable ones' APIC IDs and
/// the local APIC address the MADT gives.
fn log_cpus(rsdp: u64) -> (Vec<u32>, Option<u64>) {
    log::info!("ACPI RSDP at {rsdp:#x}");
    let madt = acpi::find_table(&IdentityMapped, rsdp, b"APIC").and_then(|table| acpi::parse_madt(&table));
    match madt {
        Ok(madt) => {
            let ids: Vec<u32> = madt.cpus.iter().filter(|c| c.usable()).map(|c| c.apic_id).collect();
            log::info!(
                "ACPI MADT: local APIC at {:#x}, {} CPU(s), APIC IDs {:?}",
                madt.local_apic_address,
                ids.len(),
                ids
            );
            (ids, Some(u64::from(madt.local_apic_address)))
        }
        Err(err) => {
            log::error!("ACPI MADT: {err}");
            (Vec::new(), None)
        }
    }
}

/// Performs the crash test the boot arguments asked for; `stack_bottom` is
/// the lowest address of this CPU's stack, above the unmapped guard page.
fn crash(test: CrashTest, stack_bottom: u64) -> ! {
    log::warn!("crash test requested by the boot arguments: {test:?}");
    match test {
        CrashTest::Panic => panic!("crash test: deliberate panic requested by boot arguments"),
        CrashTest::Exception => {
            // SAFETY: not safe at all, deliberately: a non-canonical load
            // raises #GP, and the exception handler ends the run.
            let value = unsafe { core::ptr::read_volatile(NON_CANONICAL as *const u64) };
            panic!("crash test: load from non-canonical {NON_CANONICAL:#x} returned {value:#x}")
        }
        CrashTest::NullPointer => {
            // SAFETY: not safe at all, deliberately: page 0 is unmapped, the
            // load raises #PF, and the exception handler ends the run.
            let value = unsafe { core::ptr::read_volatile(core::ptr::null::<u64>()) };
            panic!("crash test: load from page 0 returned {value:#x}")
        }
        CrashTest::StackOverflow => {
            // SAFETY: not safe at all, deliberately: what a runaway
            // recursion does as it leaves the stack. The push lands in the
            // unmapped guard page (#PF); delivering the #PF pushes onto the
            // same page and faults again, which makes a #DF, delivered on
            // its IST stack to the exception handler, which ends the run.
            unsafe {
                core::arch::asm!("mov rsp, {bottom}", "push 0", "ud2", bottom = in(reg) stack_bottom, options(noreturn))
            }
        }
    }
}

/// Called by the vector stubs for every vector: prints the vector, error
/// code, RIP, CR2 and the registers, then ends the run with
/// [`ExitCode::HypervisorFault`].
#[unsafe(no_mangle)]
fn bulkhead_x86_exception(frame: &ExceptionFrame) -> ! {
    emergency_line(format_args!(
        "[bulkhead] FATAL unexpected exception: vector {} ({})",
        frame.vector,
        vector_name(frame.vector)
    ));
    emergency_line(format_args!("  error code {:#x}", frame.error_code));
    emergency_line(format_args!(
        "  RIP {:#018x}  CS {:#06x}  RFLAGS {:#010x}  CR2 {:#018x}",
        frame.rip,
        frame.cs,
        frame.rflags,
        bulkhead_arch_x86_64::cpu::cr2()
    ));
    for pair in frame.registers().chunks(2) {
        emergency_line(format_args!("  {:<3} {:#018x}  {:<3} {:#018x}", pair[0].0, pair[0].1, pair[1].0, pair[1].1));
    }
    finish_quietly(ExitCode::HypervisorFault)
}

/// Reports a hypervisor panic and ends the run with [`ExitCode::HypervisorFault`].
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    emergency_line(format_args!("[bulkhead] hypervisor panic: {info}"));
    finish_quietly(ExitCode::HypervisorFault)
}
