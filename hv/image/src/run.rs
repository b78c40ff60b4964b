//! Running partitions: one CPU per partition, each in its own run loop, and
//! the end of the run once the last partition has stopped.
//!
//! The boot CPU starts every other CPU that owns a partition (PSCI
//! `CPU_ON`), then runs its own partition if it has one. Each CPU enters its
//! partition's vCPU and handles its exits ([`crate::exits`]) until the
//! partition stops. The CPU whose partition stops last prints the summary
//! and ends the run; the others park.

use crate::console::line;
use crate::exits;
use crate::gic;
use crate::platform::{Platform, finish, park};
use crate::setup::Slot;
use alloc::boxed::Box;
use alloc::vec::Vec;
use bulkhead_arch_aarch64::cache;
use bulkhead_arch_aarch64::el2;
use bulkhead_arch_aarch64::exception;
use bulkhead_arch_aarch64::smp::{self, SecondaryBoot};
use bulkhead_core::partition::{Partition, RunState};
use bulkhead_core::summary;
use core::sync::atomic::{AtomicUsize, Ordering};
use spin::{Mutex, Once};

/// Bytes of stack each secondary CPU gets.
const SECONDARY_STACK_SIZE: usize = 256 << 10;

/// Every partition, and how many are still running.
struct Machine {
    slots: Vec<Mutex<Slot>>,
    /// The CPU of each slot, readable without taking the slot's lock (which
    /// its CPU holds for as long as the partition runs).
    cpus: Vec<usize>,
    running: AtomicUsize,
}

static MACHINE: Once<Machine> = Once::new();
/// What secondary CPUs need to know about the machine.
static PLATFORM: Once<Platform> = Once::new();

/// Starts every partition and runs the boot CPU's own; never returns.
pub fn start(slots: Vec<Slot>, platform: Platform) -> ! {
    let platform = PLATFORM.call_once(|| platform);
    let started = slots.iter().filter(|s| s.runnable.is_some()).count();
    let machine = MACHINE.call_once(|| Machine {
        cpus: slots.iter().map(|s| s.cpu).collect(),
        slots: slots.into_iter().map(Mutex::new).collect(),
        running: AtomicUsize::new(started),
    });
    let boot_cpu = platform.boot_cpu().unwrap_or(0);
    let mut own = None;
    for (index, slot) in machine.slots.iter().enumerate() {
        let mut slot = slot.lock();
        if slot.runnable.is_none() {
            continue;
        }
        if slot.cpu == boot_cpu {
            own = Some(index);
        } else if let Err(reason) = start_cpu(platform, slot.cpu) {
            log::error!("partition {}: not started: {reason}", slot.partition.name);
            slot.partition.state = RunState::NotStarted(reason);
            slot.runnable = None;
            machine.running.fetch_sub(1, Ordering::AcqRel);
        }
    }
    if let Some(index) = own {
        run_slot(machine, index);
    } else {
        cpu_idle(machine)
    }
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
    // Only started partitions' CPUs are brought up, so the first slot on
    // this CPU is the one to run (validation gives each CPU one partition).
    match machine.cpus.iter().position(|&c| c == cpu) {
        Some(index) => run_slot(machine, index),
        None => park(),
    }
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

fn run_slot(machine: &'static Machine, index: usize) -> ! {
    {
        let mut guard = machine.slots[index].lock();
        let Slot { partition, runnable, .. } = &mut *guard;
        if let Some(runnable) = runnable.as_mut() {
            // SAFETY: the stage-2 table maps only this partition's memory and
            // stays alive (in the slot) for as long as the partition runs.
            unsafe { el2::configure_guest(&runnable.setup) };
            runnable.stage2.mark_live();
            runnable.interrupts.reset();
            partition.state = RunState::Running;
            log::info!("partition {}: started", partition.name);
            while !partition.is_stopped() {
                runnable.interrupts.before_entry();
                // SAFETY: EL2 was configured for this partition just above.
                let exit = unsafe { exception::enter_guest(&mut runnable.vcpu) };
                exits::handle(partition, runnable, exit);
            }
        }
    }
    if machine.running.fetch_sub(1, Ordering::AcqRel) == 1 {
        end_run(machine)
    }
    park()
}

fn cpu_idle(machine: &'static Machine) -> ! {
    if machine.running.load(Ordering::Acquire) == 0 {
        end_run(machine)
    }
    park()
}

/// Prints the summary and ends the run: called once, by the last CPU.
fn end_run(machine: &'static Machine) -> ! {
    let guards: Vec<_> = machine.slots.iter().map(|slot| slot.lock()).collect();
    let partitions: Vec<&Partition> = guards.iter().map(|slot| &slot.partition).collect();
    let (lines, code) = summary::summarize(partitions);
    line(format_args!("[bulkhead] ---- summary ----"));
    for text in &lines {
        line(format_args!("[bulkhead] {text}"));
    }
    finish(code)
}

