//! Creating partitions from the configuration: memory, stage-2 tables,
//! images and vCPU state.

use crate::memory::Memory;
use crate::platform::Platform;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_abi::boot::BootInfo;
use bulkhead_abi::exit::ExitCode;
use bulkhead_arch_aarch64::el2::{self, GuestSetup};
use bulkhead_arch_aarch64::exception::VcpuContext;
use bulkhead_arch_aarch64::stage2::{GeometryError, Stage2Geometry, Stage2Table};
use bulkhead_config::{
    Config, Console, EMULATED_UART_BASE, FaultPolicy, VERDICT_REGISTER_BASE, VGIC_DISTRIBUTOR_BASE,
    VGIC_REDISTRIBUTOR_BASE,
};
use bulkhead_core::devices::verdict::{VERDICT_MMIO_SIZE, VerdictRegister};
use crate::interrupts::VcpuInterrupts;
use alloc::boxed::Box;
use alloc::sync::Arc;
use bulkhead_core::devices::pl011::{ByteSink, PL011_MMIO_SIZE, Pl011 as EmulatedPl011, UartState};
use crate::interrupts::ConsoleInput;
use bulkhead_core::vgic::Vgic;
use bulkhead_core::vgic::distributor::{Distributor, GICD_SIZE};
use bulkhead_core::vgic::redistributor::Redistributors;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize};
use spin::Mutex;
use crate::guest_image;
use crate::space::{self, Stage2View};
use bulkhead_core::address::Gpa;
use bulkhead_core::address_space::AddressSpace;
use bulkhead_core::partition::{Partition, RunState};
use bulkhead_core::dma::DmaDomain;
use bulkhead_drivers::pci::Function;
use crate::iommu::SmmuStage2;


/// One vCPU's own state, used only by the CPU that runs it.
pub struct Runnable {
    /// EL2 set-up for the vCPU.
    pub setup: GuestSetup,
    /// The vCPU's registers.
    pub vcpu: VcpuContext,
    /// Physical interrupt exits seen so far (for rate-limited logging).
    pub irq_exits: u32,
    /// Faults injected so far (for rate-limited logging).
    pub injected_faults: u32,
    /// The vCPU's interrupts.
    pub interrupts: VcpuInterrupts,
}

/// What the vCPUs of a started partition share, besides the partition.
pub struct Shared {
    /// The stage-2 tables every vCPU's `VTTBR_EL2` points at.
    pub stage2: Mutex<Stage2Table>,
    /// What a stage-2 fault does to this partition.
    pub on_fault: FaultPolicy,
    /// Bytes the guest wrote to its emulated UART, not yet printed.
    pub uart_output: Option<Arc<Mutex<Vec<u8>>>>,
    /// The last code written to the verdict register.
    pub verdict: Arc<Mutex<Option<u32>>>,
    /// The partition's virtual GIC.
    pub vgic: Arc<Mutex<Vgic>>,
    /// Its configuration, to reload the image after a reset.
    pub config: bulkhead_config::Partition,
    /// The loader's boot information (the guest images).
    pub boot_info: &'static BootInfo,
    /// How many times the partition has booted (1 at first).
    pub boots: AtomicU32,
    /// Added to a Linux partition's command line (e.g. `bulkhead.shell=1`).
    pub extra_bootargs: &'static str,
    /// The SMMU domain of its PCI functions, if it has any; detached when
    /// the partition has stopped.
    pub dma: Option<Mutex<DmaDomain<SmmuStage2>>>,
    /// The partition's index if it has a virtual GPU ([`crate::vgpu`]).
    pub gpu: Option<usize>,
}

/// Console input given to a partition being built.
pub struct InputRoute {
    /// A person is at the console.
    pub interactive: bool,
}

/// PSCI state of a vCPU (DEN0022 `AFFINITY_INFO` values, but stored).
pub mod vcpu_state {
    /// Not started, or turned off with `CPU_OFF`.
    pub const OFF: u8 = 0;
    /// `CPU_ON` was called; its CPU has not picked it up yet.
    pub const ON_PENDING: u8 = 1;
    /// Running.
    pub const ON: u8 = 2;
}

/// One vCPU of a partition, pinned to one physical CPU.
pub struct VcpuSlot {
    /// The physical CPU (index in the platform's CPU list).
    pub cpu: usize,
    /// Its affinity.
    pub mpidr: u64,
    /// [`vcpu_state`].
    pub state: AtomicU8,
    /// Entry point and context ID given by `CPU_ON`.
    pub start: Mutex<(u64, u64)>,
    /// The vCPU's own state.
    pub runnable: Mutex<Runnable>,
}

/// A configured partition: the partition, and if it was started, its
/// shared state and vCPUs.
pub struct Slot {
    /// The partition (address space, devices, console, verdict, state).
    pub partition: Mutex<Partition>,
    /// `None` if it was not started.
    pub shared: Option<Shared>,
    /// Its vCPUs (empty if not started).
    pub vcpus: Vec<VcpuSlot>,
    /// vCPU run loops that have not finished yet.
    pub vcpus_alive: AtomicUsize,
    /// Set while one vCPU resets the partition: the others turn off.
    pub resetting: AtomicBool,
}

impl Slot {
    /// The CPUs its vCPUs run on.
    pub fn cpus(&self) -> impl Iterator<Item = usize> + '_ {
        self.vcpus.iter().map(|v| v.cpu)
    }
}

/// The SPI the emulated PL011 is wired to (as on QEMU `virt`).
pub const EMULATED_UART_INTID: u32 = 33;

/// The emulated UART's byte sink: shared with the exit handler, which
/// prints the bytes as console lines.
struct UartBytes(Arc<Mutex<Vec<u8>>>);

impl ByteSink for UartBytes {
    fn byte(&mut self, byte: u8) {
        let mut bytes = self.0.lock();
        // A guest that never exits cannot grow the buffer without bound.
        if bytes.len() < 4096 {
            bytes.push(byte);
        }
    }
}

/// Decodes the configuration blob and validates it again. Ends the run if
/// the blob is unreadable or has errors that concern no single partition;
/// returns the configuration and, per partition, the reason it must not be
/// started (its own validation errors).
pub fn load_config(boot_info: &BootInfo) -> (Config, Vec<Option<String>>) {
    match bulkhead_core::boot_config::check(crate::loaded::config(boot_info)) {
        Some(checked) => checked,
        None => crate::platform::finish(ExitCode::BootFailure),
    }
}

/// Builds every partition whose configuration is sound.
pub fn create_partitions(
    config: &Config,
    refused: Vec<Option<String>>,
    boot_info: &'static BootInfo,
    platform: &Platform,
    memory: &Memory,
    functions: &[Function],
) -> Vec<Slot> {
    let mut slots = Vec::new();
    let whole = config;
    let args = platform.bootargs.clone().unwrap_or_default();
    // Console input goes to the partition the boot arguments name, or to
    // the first with an emulated UART.
    let input_index = match &args.input {
        Some(name) => config.partitions.iter().position(|p| &p.name == name),
        None => config.partitions.iter().position(|p| p.console == Console::Pl011),
    };
    if let Some(name) = &args.input
        && input_index.is_none()
    {
        log::warn!("boot arguments: input={name}: no such partition; console input goes nowhere");
    }
    for ((index, config), refusal) in config.partitions.iter().enumerate().zip(refused) {
        let mut partition = Partition::new(index, &config.name, AddressSpace::new());
        let built = match refusal {
            Some(reason) => Err(reason),
            None => {
                let input = (input_index == Some(index)).then_some(InputRoute { interactive: args.interactive });
                build(index, config, whole, platform, boot_info, memory, functions, &mut partition, input)
            }
        };
        let (shared, vcpus) = match built {
            Ok((shared, vcpus)) => (Some(shared), vcpus),
            Err(reason) => {
                log::error!("partition {}: not started: {reason}", config.name);
                partition.state = RunState::NotStarted(reason);
                (None, Vec::new())
            }
        };
        let alive = vcpus.len();
        slots.push(Slot {
            partition: Mutex::new(partition),
            shared,
            vcpus,
            vcpus_alive: AtomicUsize::new(alive),
            resetting: AtomicBool::new(false),
        });
    }
    slots
}

#[allow(clippy::too_many_arguments, reason = "one call site; the arguments are the partition's inputs")]
fn build(
    index: usize,
    config: &bulkhead_config::Partition,
    whole: &Config,
    platform: &Platform,
    boot_info: &'static BootInfo,
    memory: &Memory,
    functions: &[Function],
    partition: &mut Partition,
    input: Option<InputRoute>,
) -> Result<(Shared, Vec<VcpuSlot>), String> {
    if !config.io_ports.is_empty() {
        return Err(String::from("io_ports: arm64 has no I/O port space (x86_64 only)"));
    }
    let pa_bits = platform.firmware.pa_bits;
    let cpus: Vec<usize> = config.cpus.iter().map(|&c| c as usize).collect();
    for (i, &cpu) in cpus.iter().enumerate() {
        if cpu >= platform.cpus.len() {
            return Err(format!("cpus[{i}] = {cpu}, but the machine has {} CPU(s)", platform.cpus.len()));
        }
        if cpu >= crate::gic::MAX_CPUS {
            return Err(format!("cpus[{i}] = {cpu}: the hypervisor drives at most {} CPUs", crate::gic::MAX_CPUS));
        }
        if cpu != platform.boot_cpu().unwrap_or(0) && platform.psci.is_none() {
            return Err(format!("CPU {cpu} cannot be started: the device tree names no PSCI method"));
        }
    }
    let vcpu_count = cpus.len().max(1);

    let mut space = space::build(config, whole, platform, memory)?;
    let gpu = crate::vgpu::share(index);
    if let Some(share) = &gpu {
        crate::vgpu::add_memory_region(&mut space, share)?;
        // The mediator write-protects the guest's GPU page tables page by
        // page while the partition runs (`crate::page_track`).
        space.set_page_granular_ram(true);
    }
    // PCI functions: BARs join the address space before the stage 2 is derived.
    let planned = crate::assign::plan(config, whole, platform, functions, &mut space)?;
    let bdfs: Vec<_> = planned.iter().map(|p| p.bdf).collect();
    let intx: Vec<u32> = planned.iter().filter_map(|p| p.intx).collect();
    let geometry = Stage2Geometry::for_limit(space.gpa_limit(), pa_bits).map_err(|e| match e {
        GeometryError::IpaTooLarge { needed, available } => format!(
            "its highest guest address needs a {needed}-bit IPA space; this CPU offers {available} bits"
        ),
    })?;
    let mut stage2 = Stage2Table::new(geometry);
    space
        .derive_cpu_view(&mut Stage2View(&mut stage2))
        .map_err(|e| format!("stage-2 mapping failed: {e:?}"))?;

    *partition = Partition::new(index, &config.name, space);
    if gpu.is_some() {
        crate::page_track::enable(index, &partition.space);
    }
    partition.console_enabled = config.console != Console::None;
    crate::assign::install(planned, gpu.as_ref().map(crate::vgpu::virtual_function), partition, platform)?;
    if gpu.is_some() {
        // Left unmapped in stage 2: every access traps to the mediator.
        partition
            .bus
            .insert(
                Gpa::new(bulkhead_config::VIRTUAL_GPU_REGISTERS_BASE),
                bulkhead_config::VIRTUAL_GPU_REGISTERS_SIZE,
                Box::new(crate::vgpu::RegisterBar { index }),
            )
            .map_err(|e| format!("gpu: the register BAR: {e:?}"))?;
    }

    // Every partition gets a virtual GIC at the QEMU `virt` addresses.
    let mut spis: Vec<u32> = config.interrupt_ids(&whole.platform).into_iter().collect();
    // Assigned PCI functions' INTx lines are passed through like platform
    // devices' SPIs (level-sensitive, forwarded with the HW bit).
    for &intid in &intx {
        if !spis.contains(&intid) {
            spis.push(intid);
            // PCI INTx is level-sensitive by definition; set it rather than
            // trust the trigger the firmware or the GIC's reset left: as an
            // edge SPI, a second cause raised while the line is still high
            // (the first not yet acknowledged at the device) would be lost.
            crate::gic::set_edge_triggered(intid, false);
            log::info!("partition {}: INTx of its PCI function(s) is interrupt {intid}", config.name);
        }
    }
    let device_spis: Vec<u32> = spis.clone();
    if config.console == Console::Pl011 {
        // The emulated UART's line (its device tree names it).
        spis.push(EMULATED_UART_INTID);
    }
    if gpu.is_some() {
        // The virtual GPU's completion interrupt: a software SPI, raised on
        // each rising edge of its line.
        spis.push(bulkhead_config::VIRTUAL_GPU_SPI);
    }
    let vgic = Arc::new(Mutex::new(Vgic::new(vcpu_count, &spis)));
    partition
        .bus
        .insert(Gpa::new(VGIC_DISTRIBUTOR_BASE), GICD_SIZE, Box::new(Distributor(vgic.clone())))
        .map_err(|e| format!("virtual GIC distributor: {e:?}"))?;
    partition
        .bus
        .insert(
            Gpa::new(VGIC_REDISTRIBUTOR_BASE),
            Redistributors::region_size(vcpu_count),
            Box::new(Redistributors(vgic.clone())),
        )
        .map_err(|e| format!("virtual GIC redistributors: {e:?}"))?;
    let verdict = Arc::new(Mutex::new(None));
    partition
        .bus
        .insert(Gpa::new(VERDICT_REGISTER_BASE), VERDICT_MMIO_SIZE, Box::new(VerdictRegister(verdict.clone())))
        .map_err(|e| format!("verdict register: {e:?}"))?;
    let (uart_output, uart_state) = if config.console == Console::Pl011 {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(Mutex::new(UartState::default()));
        partition
            .bus
            .insert(
                Gpa::new(EMULATED_UART_BASE),
                PL011_MMIO_SIZE,
                Box::new(EmulatedPl011::new(UartBytes(bytes.clone()), state.clone())),
            )
            .map_err(|e| format!("emulated UART: {e:?}"))?;
        (Some(bytes), Some(state))
    } else {
        (None, None)
    };
    let console_input = match (&input, &uart_state, platform.uart_intid) {
        (Some(_), Some(uart), Some(physical_intid)) => {
            Some(ConsoleInput { physical_intid, uart: uart.clone(), virtual_intid: EMULATED_UART_INTID })
        }
        _ => None,
    };
    let mut console_input = console_input;
    let mpidrs: Vec<u64> = cpus.iter().map(|&c| platform.cpus.get(c).copied().unwrap_or(0)).collect();
    if gpu.is_some()
        && let Some(&mpidr) = mpidrs.first()
    {
        // Its interrupt goes to vCPU 0 (as passed-through SPIs do).
        crate::vgpu::set_kick(index, crate::gic::kick, mpidr);
    }

    let interactive = input.as_ref().is_some_and(|i| i.interactive);
    partition.eager_console = interactive;
    let extra_bootargs = if interactive { " bulkhead.shell=1" } else { "" };
    let entry = guest_image::load(config, partition, boot_info, vcpu_count, 1, extra_bootargs)?;

    let vmid = u8::try_from(index + 1).map_err(|_| String::from("too many partitions for 8-bit VMIDs"))?;
    let vcpus: Vec<VcpuSlot> = cpus
        .iter()
        .enumerate()
        .map(|(v, &cpu)| {
            let setup = GuestSetup {
                vttbr: el2::vttbr(stage2.root_address(), vmid),
                vtcr: el2::vtcr(geometry, pa_bits.min(48)),
                // vCPU v is the guest's CPU v (Aff0), whichever physical CPU runs it.
                vmpidr: (1 << 31) | v as u64,
            };
            let (state, start) = if v == 0 {
                (vcpu_state::ON_PENDING, (entry.pc, entry.x0))
            } else {
                (vcpu_state::OFF, (0, 0))
            };
            VcpuSlot {
                cpu,
                mpidr: mpidrs[v],
                state: AtomicU8::new(state),
                start: Mutex::new(start),
                runnable: Mutex::new(Runnable {
                    setup,
                    vcpu: VcpuContext::new(start.0, start.1),
                    irq_exits: 0,
                    injected_faults: 0,
                    interrupts: {
                        let mut interrupts = VcpuInterrupts::new(vgic.clone(), v, cpu, mpidrs.clone());
                        if v == 0 {
                            interrupts.console_input = console_input.take();
                            // Passed-through devices' SPIs go to vCPU 0 (the
                            // guest's IROUTER is not followed yet).
                            interrupts.passthrough_spis = device_spis.iter().map(|&spi| (spi, false)).collect();
                        }
                        interrupts
                    },
                }),
            }
        })
        .collect();
    // Last, once nothing else can fail: the device's DMA is confined from
    // here on to what the domain maps.
    let dma = crate::assign::attach_dma(&bdfs, partition, index, geometry, pa_bits, vmid, config.on_fault)?.map(Mutex::new);
    log::info!(
        "partition {}: CPUs {cpus:?}, {} region(s), {}-bit IPA space, {} stage-2 table page(s), image {} ({} bytes), entry {:#x}, VMID {vmid}",
        config.name,
        partition.space.regions().len(),
        geometry.ipa_bits,
        stage2.table_pages(),
        config.image.file,
        boot_info.module(&config.image.file).map_or(0, |m| m.data.size),
        entry.pc
    );
    let shared = Shared {
        stage2: Mutex::new(stage2),
        on_fault: config.on_fault,
        uart_output,
        verdict,
        vgic,
        config: config.clone(),
        boot_info,
        boots: AtomicU32::new(1),
        extra_bootargs,
        dma,
        gpu: gpu.map(|_| index),
    };
    Ok((shared, vcpus))
}
