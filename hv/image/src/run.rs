//! Running partitions: one physical CPU per vCPU, each in its own run loop,
//! and the end of the run once the last partition has stopped.
//!
//! The boot CPU starts every other CPU that runs a vCPU (firmware PSCI
//! `CPU_ON`), then runs its own vCPU if it has one. vCPU 0 of each partition
//! starts at the image's entry; the others wait, off, until the guest starts
//! them with PSCI `CPU_ON` ([`Topology`]). Each CPU enters its vCPU and
//! handles its exits ([`crate::exits`]) until the vCPU turns off or the
//! partition stops. When the last vCPU of the last partition finishes, its
//! CPU prints the summary and ends the run; the others park.

use crate::console::{GuestConsole, line};
use crate::guest_image;
use bulkhead_core::partition::StopReason;
use crate::exits::{self, VcpuAction};
use crate::gic;
use crate::platform::{Platform, finish, park};
use crate::setup::{Shared, Slot, VcpuSlot, vcpu_state};
use alloc::boxed::Box;
use alloc::vec::Vec;
use bulkhead_arch_aarch64::cache;
use bulkhead_arch_aarch64::el2;
use bulkhead_arch_aarch64::exception::{self, VcpuContext};
use bulkhead_arch_aarch64::smp::{self, SecondaryBoot};
use bulkhead_core::hypercall::{
    MPIDR_AFFINITY, PSCI_AFFINITY_ON_PENDING, PSCI_ALREADY_ON, PSCI_INVALID_PARAMETERS, PSCI_OFF, PSCI_ON,
    PSCI_ON_PENDING, VcpuTopology,
};
use bulkhead_core::partition::{Partition, RunState};
use bulkhead_core::summary;
use core::sync::atomic::{AtomicUsize, Ordering};
use spin::Once;

/// Bytes of stack each secondary CPU gets.
const SECONDARY_STACK_SIZE: usize = 256 << 10;

/// Every partition, and how many are still running.
struct Machine {
    slots: Vec<Slot>,
    running: AtomicUsize,
}

static MACHINE: Once<Machine> = Once::new();
/// What secondary CPUs need to know about the machine.
static PLATFORM: Once<Platform> = Once::new();

/// Wakes CPUs waiting in `wfe`.
fn send_event() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `sev` only signals an event.
    unsafe {
        core::arch::asm!("dsb ish", "sev", options(nostack));
    }
}

fn wait_for_event() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `wfe` only waits.
    unsafe {
        core::arch::asm!("wfe", options(nostack));
    }
}

/// Starts every partition and runs the boot CPU's own vCPU; never returns.
pub fn start(slots: Vec<Slot>, platform: Platform) -> ! {
    let platform = PLATFORM.call_once(|| platform);
    let started = slots.iter().filter(|s| s.shared.is_some()).count();
    let machine = MACHINE.call_once(|| Machine { slots, running: AtomicUsize::new(started) });
    // The stage-2 tables have their final home: page tracking can change them.
    for (index, slot) in machine.slots.iter().enumerate() {
        if let (Some(shared), Some(vcpu)) = (&slot.shared, slot.vcpus.first())
            && crate::page_track::enabled(index)
        {
            crate::page_track::attach(index, &shared.stage2, vcpu.runnable.lock().setup.vttbr);
        }
    }
    let boot_cpu = platform.boot_cpu().unwrap_or(0);
    if !give_uart_away(machine, platform) {
        route_console_input(machine, platform);
    }
    route_device_interrupts(machine);
    for slot in &machine.slots {
        if slot.shared.is_none() {
            continue;
        }
        for cpu in slot.cpus().filter(|&cpu| cpu != boot_cpu) {
            if let Err(reason) = start_cpu(platform, cpu) {
                let mut partition = slot.partition.lock();
                log::error!("partition {}: not started: {reason}", partition.name);
                partition.state = RunState::NotStarted(reason);
                drop(partition);
                // The vCPU of a CPU that did not start never runs; the CPUs
                // that did start see the state and leave at once.
                if slot.vcpus_alive.fetch_sub(1, Ordering::AcqRel) == 1 {
                    release_devices(slot);
                    machine.running.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }
    run_cpu(machine, boot_cpu)
}

/// Entered by each secondary CPU from `_secondary_start`.
#[unsafe(no_mangle)]
pub extern "C" fn bulkhead_secondary_main(block: &SecondaryBoot) -> ! {
    let Some(machine) = MACHINE.get() else { park() };
    let cpu = block.cpu_index as usize;
    if let Some(platform) = PLATFORM.get() {
        let mpidr = platform.cpus.get(cpu).copied().unwrap_or(0);
        gic::init_cpu(platform, cpu, mpidr);
    }
    run_cpu(machine, cpu)
}

/// If a started partition owns the console UART, moves the hypervisor's
/// console to semihosting; returns whether it did.
fn give_uart_away(machine: &Machine, platform: &Platform) -> bool {
    let Some(uart) = platform.uart else { return false };
    for slot in machine.slots.iter().filter(|s| s.shared.is_some()) {
        let partition = slot.partition.lock();
        let owns = partition.space.regions().iter().any(|r| {
            r.kind == bulkhead_core::address_space::RegionKind::Device
                && r.hpa.raw() <= uart
                && uart < r.hpa.raw().saturating_add(r.size)
        });
        if owns {
            log::info!(
                "console: the UART at {uart:#x} goes to partition {}; the hypervisor's console moves to semihosting",
                partition.name
            );
            crate::console::give_away_uart(platform.console_movable());
            return true;
        }
    }
    false
}

/// Routes every passed-through device's SPI to the CPU of the vCPU that
/// receives it (masked until the guest enables it).
fn route_device_interrupts(machine: &Machine) {
    for slot in &machine.slots {
        for vcpu in &slot.vcpus {
            let spis: Vec<u32> = vcpu.runnable.lock().interrupts.passthrough_spis.iter().map(|&(spi, _)| spi).collect();
            for spi in spis {
                gic::route_spi(spi, vcpu.mpidr);
                gic::set_spi(spi, false);
                log::info!("partition {}: interrupt {spi} goes to CPU {}", slot.partition.lock().name, vcpu.cpu);
            }
        }
    }
}

/// Sends the console UART's interrupt to the CPU whose vCPU receives input.
fn route_console_input(machine: &Machine, platform: &Platform) {
    for slot in &machine.slots {
        for vcpu in &slot.vcpus {
            let receives = vcpu.runnable.lock().interrupts.console_input.as_ref().map(|c| c.physical_intid);
            if let Some(intid) = receives {
                gic::route_spi(intid, vcpu.mpidr);
                crate::console::enable_input_interrupt();
                log::info!(
                    "console input goes to partition {} (CPU {}, interrupt {intid})",
                    slot.partition.lock().name,
                    vcpu.cpu
                );
                return;
            }
        }
    }
    let _ = platform;
}

fn start_cpu(platform: &Platform, cpu: usize) -> Result<(), alloc::string::String> {
    let mpidr = *platform.cpus.get(cpu).ok_or_else(|| alloc::format!("CPU {cpu} does not exist"))?;
    let conduit = platform.psci.ok_or_else(|| alloc::string::String::from("no PSCI method to start CPUs"))?;
    let stack: &'static mut [u8] = Box::leak(alloc::vec![0u8; SECONDARY_STACK_SIZE].into_boxed_slice());
    let stack_top = (stack.as_ptr() as u64 + SECONDARY_STACK_SIZE as u64) & !0xf;
    let block = Box::leak(Box::new(SecondaryBoot { stack_top, cpu_index: cpu as u64, ..SecondaryBoot::default() }));
    smp::current_translation(block);
    // The new CPU reads the block with its MMU (and so its caches) off.
    cache::clean_invalidate_to_poc(block as *const SecondaryBoot as u64, core::mem::size_of::<SecondaryBoot>() as u64);
    // SAFETY: the block and stack are leaked (never freed or reused) and the
    // block was cleaned to the point of coherency.
    unsafe { smp::cpu_on(conduit, mpidr, block) }
        .map_err(|e| alloc::format!("CPU {cpu} (MPIDR {mpidr:#x}) did not start: PSCI error {}", e.0))?;
    log::info!("CPU {cpu} (MPIDR {mpidr:#x}) started");
    Ok(())
}

/// The vCPU this CPU runs, if any: (partition index, vCPU index).
fn assignment(machine: &Machine, cpu: usize) -> Option<(usize, usize)> {
    machine.slots.iter().enumerate().find_map(|(p, slot)| {
        slot.shared.as_ref()?;
        slot.vcpus.iter().position(|v| v.cpu == cpu).map(|v| (p, v))
    })
}

fn run_cpu(machine: &'static Machine, cpu: usize) -> ! {
    match assignment(machine, cpu) {
        Some((p, v)) => {
            let slot = &machine.slots[p];
            if let Some(shared) = &slot.shared {
                run_vcpu(slot, shared, v);
            }
            // The last vCPU of the partition to leave retires the partition.
            if slot.vcpus_alive.fetch_sub(1, Ordering::AcqRel) == 1 {
                release_devices(slot);
                if machine.running.fetch_sub(1, Ordering::AcqRel) == 1 {
                    end_run(machine)
                }
            }
            park()
        }
        None => {
            if machine.running.load(Ordering::Acquire) == 0 {
                end_run(machine)
            }
            park()
        }
    }
}

fn partition_over(slot: &Slot) -> bool {
    matches!(slot.partition.lock().state, RunState::Stopped(_) | RunState::NotStarted(_))
}

/// Runs vCPU `v` of the partition in `slot` on this CPU until the partition
/// stops: each time it is turned on, from its start entry until it turns off.
fn run_vcpu(slot: &Slot, shared: &Shared, v: usize) {
    let me = &slot.vcpus[v];
    let mut first = true;
    loop {
        // Wait, off, for CPU_ON (vCPU 0 starts pending).
        while me.state.load(Ordering::Acquire) != vcpu_state::ON_PENDING {
            if partition_over(slot) {
                return;
            }
            wait_for_event();
        }
        if partition_over(slot) {
            return;
        }
        let mut runnable = me.runnable.lock();
        let (entry, context) = *me.start.lock();
        runnable.vcpu = VcpuContext::new(entry, context);
        // SAFETY: the stage-2 table maps only this partition's memory and
        // lives in `shared` for as long as the partition's vCPUs run.
        unsafe { el2::configure_guest(&runnable.setup) };
        runnable.interrupts.reset();
        if first {
            shared.stage2.lock().mark_live();
            first = false;
        }
        me.state.store(vcpu_state::ON, Ordering::Release);
        {
            let mut partition = slot.partition.lock();
            if v == 0 {
                partition.state = RunState::Running;
                log::info!("partition {}: started", partition.name);
            } else {
                log::info!("partition {}: vCPU {v} started on CPU {} at {entry:#x}", partition.name, me.cpu);
            }
        }
        loop {
            runnable.interrupts.before_entry();
            // SAFETY: EL2 was configured for this vCPU above.
            let exit = unsafe { exception::enter_guest(&mut runnable.vcpu) };
            let mut topology = Topology { slot, me: v };
            let action = exits::handle(slot, shared, &mut topology, &mut runnable, exit);
            if let Some(index) = shared.gpu {
                // The GPU's completions (its LPI, or polling when there is
                // no ITS) and this partition's interrupt line.
                crate::vgpu::service();
                if crate::vgpu::take_line_change(index) == Some(true) {
                    runnable.interrupts.vgic.lock().raise_spi(bulkhead_config::VIRTUAL_GPU_SPI);
                }
            }
            // Outside every partition's lock: stops the DMA fault policy
            // asked for while this exit drained the SMMU's events.
            apply_dma_stops();
            match action {
                VcpuAction::Resume => {}
                VcpuAction::Off => {
                    me.state.store(vcpu_state::OFF, Ordering::Release);
                    break;
                }
                VcpuAction::PartitionStopped => {
                    stop_other_vcpus(slot, v);
                    return;
                }
                VcpuAction::Reset => {
                    drop(runnable);
                    reset_partition(slot, shared, v);
                    break;
                }
            }
            if partition_over(slot) {
                return;
            }
            if slot.resetting.load(Ordering::Acquire) {
                // Another vCPU resets the partition: turn off and wait.
                me.state.store(vcpu_state::OFF, Ordering::Release);
                send_event();
                break;
            }
        }
    }
}

/// Stops each partition whose device's DMA was refused under
/// `on_fault = "stop"` (the SMMU event path only queues them: it may run
/// inside an exit of that very partition, holding its lock).
fn apply_dma_stops() {
    let stops = crate::iommu::take_stops();
    let Some(machine) = MACHINE.get() else { return };
    for stop in stops {
        let Some(slot) = machine.slots.get(stop.index) else { continue };
        let mut partition = slot.partition.lock();
        if !partition.is_stopped() {
            partition.stop(StopReason::Fault(stop.reason), &mut GuestConsole);
            log::warn!("partition {}: stopped (fault policy: stop)", partition.name);
        }
        drop(partition);
        // Its running vCPUs exit and see it stopped.
        stop_other_vcpus(slot, usize::MAX);
    }
}

/// Once a partition's last vCPU has left: its devices' streams go back to
/// the quarantine and the pages its DMA domain pinned are released.
fn release_devices(slot: &Slot) {
    if let Some(index) = slot.shared.as_ref().and_then(|s| s.gpu) {
        // Its queued GPU work is dropped and its GTT slice points at
        // scratch again: the GPU no longer reaches its pages.
        crate::vgpu::reset(index);
    }
    let Some(dma) = slot.shared.as_ref().and_then(|s| s.dma.as_ref()) else { return };
    let mut domain = dma.lock();
    let (devices, pinned) = (domain.devices().len(), domain.pins().pinned());
    crate::iommu::detach(&mut domain);
    log::info!(
        "partition {}: DMA domain detached: {devices} device(s) back to quarantine, {pinned} pinned page(s) released",
        slot.partition.lock().name
    );
}

/// Restarts the partition from its image, on behalf of vCPU `v` that asked:
/// every other vCPU turns off, the RAM is cleared, the image (with a new
/// device tree) reloaded, the virtual GIC reset, and vCPU 0 started at the
/// entry again.
fn reset_partition(slot: &Slot, shared: &Shared, v: usize) {
    slot.resetting.store(true, Ordering::Release);
    slot.vcpus[v].state.store(vcpu_state::OFF, Ordering::Release);
    stop_other_vcpus(slot, v);
    for vcpu in &slot.vcpus {
        // A vCPU started but not yet running is simply not started.
        let _ = vcpu.state.compare_exchange(vcpu_state::ON_PENDING, vcpu_state::OFF, Ordering::AcqRel, Ordering::Acquire);
        while vcpu.state.load(Ordering::Acquire) == vcpu_state::ON {
            if partition_over(slot) {
                break;
            }
            core::hint::spin_loop();
        }
    }
    let boot = shared.boots.fetch_add(1, Ordering::AcqRel) + 1;
    let mut partition = slot.partition.lock();
    partition.restart(&mut GuestConsole);
    if let Some(index) = shared.gpu {
        crate::vgpu::reset(index);
    }
    // The new boot starts with every page writable, whatever the mediator
    // tracked for the old one.
    crate::page_track::release_all(partition.index);
    guest_image::clear_ram(&partition);
    shared.vgic.lock().reset();
    *shared.verdict.lock() = None;
    match guest_image::load(&shared.config, &partition, shared.boot_info, slot.vcpus.len(), boot, shared.extra_bootargs) {
        Ok(entry) => {
            log::info!("partition {}: restarting from its image (boot {boot})", partition.name);
            *slot.vcpus[0].start.lock() = (entry.pc, entry.x0);
            slot.vcpus[0].state.store(vcpu_state::ON_PENDING, Ordering::Release);
        }
        Err(e) => partition.stop(StopReason::Fault(alloc::format!("reset failed: {e}")), &mut GuestConsole),
    }
    drop(partition);
    slot.resetting.store(false, Ordering::Release);
    send_event();
}

/// Makes the partition's other vCPUs leave their guests: a kick SGI makes a
/// running one exit (and see the partition stopped); an event wakes a
/// waiting one.
fn stop_other_vcpus(slot: &Slot, me: usize) {
    for (v, vcpu) in slot.vcpus.iter().enumerate() {
        if v != me {
            gic::kick(vcpu.mpidr);
        }
    }
    send_event();
}

/// PSCI's view of a partition's vCPUs.
pub struct Topology<'a> {
    slot: &'a Slot,
    me: usize,
}

impl Topology<'_> {
    fn target(&self, mpidr: u64) -> Option<&VcpuSlot> {
        let affinity = mpidr & MPIDR_AFFINITY;
        if affinity > 0xff {
            return None;
        }
        self.slot.vcpus.get(affinity as usize)
    }
}

impl VcpuTopology for Topology<'_> {
    fn cpu_on(&mut self, target: u64, entry: u64, context: u64) -> i64 {
        let Some(vcpu) = self.target(target) else { return PSCI_INVALID_PARAMETERS };
        match vcpu.state.compare_exchange(vcpu_state::OFF, vcpu_state::ON_PENDING, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                *vcpu.start.lock() = (entry, context);
                // Publish the start before the waiting CPU looks again.
                vcpu.state.store(vcpu_state::ON_PENDING, Ordering::Release);
                send_event();
                0
            }
            Err(vcpu_state::ON_PENDING) => PSCI_ON_PENDING,
            Err(_) => PSCI_ALREADY_ON,
        }
    }

    fn affinity_info(&self, target: u64) -> i64 {
        match self.target(target).map(|v| v.state.load(Ordering::Acquire)) {
            Some(vcpu_state::ON) => PSCI_ON,
            Some(vcpu_state::ON_PENDING) => PSCI_AFFINITY_ON_PENDING,
            Some(_) => PSCI_OFF,
            None => PSCI_INVALID_PARAMETERS,
        }
    }

    fn cpu_off(&mut self) -> bool {
        self.slot
            .vcpus
            .iter()
            .enumerate()
            .all(|(v, vcpu)| v == self.me || vcpu.state.load(Ordering::Acquire) == vcpu_state::OFF)
    }
}

/// Prints the summary and ends the run: called once, by the last CPU.
fn end_run(machine: &'static Machine) -> ! {
    // Events recorded since the last interrupt (or with none routed).
    crate::iommu::service("end of run");
    let guards: Vec<_> = machine.slots.iter().map(|slot| slot.partition.lock()).collect();
    let partitions: Vec<&Partition> = guards.iter().map(|p| &**p).collect();
    let (lines, code) = summary::summarize(partitions);
    line(format_args!("[bulkhead] ---- summary ----"));
    for text in &lines {
        line(format_args!("[bulkhead] {text}"));
    }
    finish(code)
}
