//! Running partitions on their own CPUs: the boot CPU builds every
//! partition, starts the application processor (AP) of each partition that
//! is not its own with INIT-SIPI-SIPI through a real-mode trampoline below
//! 1 MiB, then runs its own partition (if any). Each CPU runs its
//! partition's vCPU until the partition stops; the CPU that finishes last
//! prints the summary and ends the run, the others halt.
//!
//! CPU numbers in the configuration index the usable CPUs of the ACPI MADT
//! in table order (CPU 0 is the first, normally the boot CPU). Every wait
//! is bounded: an AP that does not arrive leaves its partition not started,
//! with a log line, and never hangs the run.

use super::console::{finish, line};
use super::backend;
use super::partition::{CpuTable, Start};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_arch_x86_64::cpu::ap::{self, LocalApic};
use bulkhead_arch_x86_64::cpu::{gdt, halt_forever, idt};
use bulkhead_core::address_space::AddressSpace;
use bulkhead_core::partition::{Partition, RunState};
use bulkhead_core::summary;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use spin::{Mutex, Once};

/// Bytes of stack each AP gets.
const AP_STACK_SIZE: usize = 256 << 10;
/// TSC ticks the boot CPU waits for an AP to reach Rust: 1 s at up to 4 GHz.
const ARRIVAL_TICKS: u64 = 4_000_000_000;

/// Arrival states of a slot's AP.
const AP_WAITING: u8 = 0;
const AP_ARRIVED: u8 = 1;
const AP_ABANDONED: u8 = 2;

/// One partition and what its CPU needs to run it.
pub struct Slot {
    /// The partition (locked by its CPU while it runs).
    pub partition: Mutex<Partition>,
    /// Its second-level table and entry state; `None` if it is not started.
    pub run: Option<(CpuTable, Start)>,
    /// APIC ID of the CPU it runs on.
    pub apic_id: u32,
    arrival: AtomicU8,
}

impl Slot {
    /// A partition ready to run on the CPU `apic_id`.
    pub fn ready(partition: Partition, table: CpuTable, start: Start, apic_id: u32) -> Slot {
        Slot { partition: Mutex::new(partition), run: Some((table, start)), apic_id, arrival: AtomicU8::new(AP_WAITING) }
    }

    /// A partition that is not started, for `reason`.
    pub fn refused(index: usize, name: &str, reason: String) -> Slot {
        log::error!("partition {name}: not started: {reason}");
        let mut partition = Partition::new(index, name, AddressSpace::new());
        partition.state = RunState::NotStarted(reason);
        Slot { partition: Mutex::new(partition), run: None, apic_id: u32::MAX, arrival: AtomicU8::new(AP_ABANDONED) }
    }
}

struct Machine {
    slots: Vec<Slot>,
    /// Partitions still running (or about to).
    running: AtomicUsize,
}

static MACHINE: Once<Machine> = Once::new();

/// Starts every ready partition on its CPU and runs the boot CPU's own;
/// never returns. `trampoline` is a free page below 1 MiB, if the memory
/// map had one; `cpu` is the boot CPU's back-end state, if one is on.
pub fn start(slots: Vec<Slot>, trampoline: Option<u64>, cpu: Option<backend::CpuBackend>) -> ! {
    let started = slots.iter().filter(|s| s.run.is_some()).count();
    let machine = MACHINE.call_once(|| Machine { slots, running: AtomicUsize::new(started) });
    // The NPTs have their final home: page tracking can change them.
    for (index, slot) in machine.slots.iter().enumerate() {
        if let Some((CpuTable::Npt(npt), _)) = &slot.run
            && crate::page_track::enabled(index)
        {
            crate::page_track::attach(index, npt, slot.apic_id);
        }
    }
    if started == 0 {
        summarize_and_finish(&machine.slots);
    }
    // SAFETY: our own tables map the local APIC's page uncached.
    let apic = unsafe { LocalApic::current() };
    let boot_id = apic.id();
    let needs_ap = machine.slots.iter().any(|s| s.run.is_some() && s.apic_id != boot_id);
    let vector = if needs_ap { install(trampoline) } else { Err(String::new()) };
    if needs_ap {
        match &vector {
            Ok(v) => log::info!(
                "SMP: boot CPU APIC ID {boot_id} ({} mode), AP trampoline at {:#x} (SIPI vector {v:#x})",
                if apic.x2apic() { "x2APIC" } else { "xAPIC" },
                u64::from(*v) << 12
            ),
            Err(reason) => log::error!("SMP: {reason}"),
        }
    }
    let mut own = None;
    for (index, slot) in machine.slots.iter().enumerate() {
        if slot.run.is_none() {
            continue;
        }
        if slot.apic_id == boot_id {
            own = Some(index);
            continue;
        }
        let result = match &vector {
            Ok(v) => start_ap(&apic, slot, index, *v),
            Err(reason) => Err(format!("no AP trampoline: {reason}")),
        };
        if let Err(reason) = result {
            let mut partition = slot.partition.lock();
            log::error!("partition {}: not started: {reason}", partition.name);
            partition.state = RunState::NotStarted(reason);
            drop(partition);
            done(machine);
        }
    }
    match (own, cpu) {
        (Some(index), Some(cpu)) => run_slot(machine, index, cpu),
        // Slots are ready only when a back end is on.
        (Some(_), None) => done(machine),
        (None, _) => {}
    }
    halt_forever()
}

fn install(trampoline: Option<u64>) -> Result<u8, String> {
    let page = trampoline.ok_or("no free page below 1 MiB in the memory map")?;
    // SAFETY: the page is conventional memory below 1 MiB, which the frame
    // allocator never hands out, mapped read-write-execute by our tables;
    // nothing else uses it.
    unsafe { ap::install_trampoline(page, ap_main) }.map_err(|e| format!("AP trampoline: {e:?}"))
}

/// Sends INIT-SIPI-SIPI to the slot's CPU and waits (bounded) until it
/// runs Rust code.
fn start_ap(apic: &LocalApic, slot: &Slot, index: usize, vector: u8) -> Result<(), String> {
    let stack: &'static mut [u8] = Vec::leak(alloc::vec![0u8; AP_STACK_SIZE]);
    let top = (stack.as_ptr() as u64 + AP_STACK_SIZE as u64) & !0xf;
    // SAFETY: the trampoline was installed; no other AP is starting (each
    // one is waited for, or abandoned, before the next).
    unsafe { ap::set_stack(u64::from(vector) << 12, top, index as u64) };
    // SAFETY: the vector points at the trampoline; the CPU is an AP of the
    // MADT that nothing runs on yet.
    unsafe { apic.start_ap(slot.apic_id, vector) }
        .map_err(|_| format!("CPU with APIC ID {}: the local APIC did not send the start-up IPIs", slot.apic_id))?;
    let begin = ap::rdtsc();
    while ap::rdtsc().wrapping_sub(begin) < ARRIVAL_TICKS {
        if slot.arrival.load(Ordering::Acquire) == AP_ARRIVED {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    if slot.arrival.compare_exchange(AP_WAITING, AP_ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return Ok(());
    }
    Err(format!("CPU with APIC ID {} did not arrive after INIT-SIPI-SIPI", slot.apic_id))
}

/// The Rust entry of an AP, called by the trampoline in long mode on its
/// own stack with its slot's index.
extern "C" fn ap_main(index: u64) -> ! {
    // SAFETY: at CPL 0 with interrupts masked, on the trampoline's stack
    // and the boot CPU's page tables; the heap works; the boot CPU filled
    // the IDT, whose IST gates need this CPU's own TSS, loaded first.
    unsafe {
        gdt::load_cpu_tables();
        idt::reload();
    }
    let Some(machine) = MACHINE.get() else { halt_forever() };
    let index = index as usize;
    let Some(slot) = machine.slots.get(index) else { halt_forever() };
    if slot.arrival.compare_exchange(AP_WAITING, AP_ARRIVED, Ordering::AcqRel, Ordering::Acquire).is_err() {
        // Given up on by the boot CPU: its partition is not started.
        halt_forever()
    }
    // SAFETY: as in `start`.
    let id = unsafe { LocalApic::current() }.id();
    log::info!("CPU with APIC ID {id} is up (AP, long mode, own page tables, GDT, TSS and IDT)");
    let cpu = match backend::choose().and_then(backend::enable_this_cpu) {
        Ok(cpu) => cpu,
        Err(reason) => {
            let mut partition = slot.partition.lock();
            log::error!("partition {}: not started: {reason}", partition.name);
            partition.state = RunState::NotStarted(reason);
            drop(partition);
            done(machine);
            halt_forever()
        }
    };
    run_slot(machine, index, cpu);
    halt_forever()
}

/// Runs slot `index`'s partition on this CPU, whose back-end state is
/// `cpu`, then reports it done.
fn run_slot(machine: &'static Machine, index: usize, cpu: backend::CpuBackend) {
    let slot = &machine.slots[index];
    if let Some((table, start)) = &slot.run {
        let mut partition = slot.partition.lock();
        partition.state = RunState::Running;
        backend::run(&mut partition, table, start, cpu);
        // Its PCI functions are blocked and its DMA pins released.
        super::assign::release(index);
        // Its virtual GPU back to power-on: queue dropped, GTT slice at
        // scratch, pins released.
        crate::vgpu::reset(index);
    }
    done(machine);
}

/// One partition fewer running; the last one prints the summary and ends
/// the run.
fn done(machine: &'static Machine) {
    if machine.running.fetch_sub(1, Ordering::AcqRel) == 1 {
        summarize_and_finish(&machine.slots);
    }
}

/// Prints the summary and ends the run with its exit code.
pub fn summarize_and_finish(slots: &[Slot]) -> ! {
    // Interrupts are masked, so IOMMU faults are polled here, once every
    // partition has stopped.
    super::assign::report_faults("partitions stopped");
    let guards: Vec<_> = slots.iter().map(|s| s.partition.lock()).collect();
    let (lines, code) = summary::summarize(guards.iter().map(|g| &**g));
    line(format_args!("[bulkhead] ---- summary ----"));
    for text in &lines {
        line(format_args!("[bulkhead] {text}"));
    }
    finish(code)
}
