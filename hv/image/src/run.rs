//! The run loop: enter a partition's vCPU, handle its exits, and end the run
//! with a summary once every partition has stopped.

use crate::console::{GuestConsole, line};
use crate::memory::IdentityMemory;
use crate::platform::finish;
use crate::setup::{Runnable, Slot};
use alloc::format;
use alloc::vec::Vec;
use bulkhead_arch_aarch64::el2;
use bulkhead_arch_aarch64::esr::{self, Esr, ExceptionClass};
use bulkhead_arch_aarch64::exception::{self, ExitKind};
use bulkhead_core::hypercall::{self, Conduit, Outcome};
use bulkhead_core::partition::{Partition, RunState, StopReason};
use bulkhead_core::summary;

/// Physical IRQ exits logged per partition before going quiet.
const IRQ_LOG_LIMIT: u32 = 4;

/// Runs every started partition to completion, then prints the summary and
/// ends the run.
pub fn run_all(mut slots: Vec<Slot>) -> ! {
    for slot in &mut slots {
        if let Some(runnable) = slot.runnable.as_mut() {
            run_partition(&mut slot.partition, runnable);
        }
    }
    let partitions: Vec<Partition> = slots.into_iter().map(|s| s.partition).collect();
    let (lines, code) = summary::summarize(&partitions);
    line(format_args!("[bulkhead] ---- summary ----"));
    for text in &lines {
        line(format_args!("[bulkhead] {text}"));
    }
    finish(code)
}

fn run_partition(partition: &mut Partition, runnable: &mut Runnable) {
    // SAFETY: the stage-2 table maps only this partition's memory and stays
    // alive (in `runnable`) for as long as the partition runs.
    unsafe { el2::configure_guest(&runnable.setup) };
    partition.state = RunState::Running;
    log::info!("partition {}: started", partition.name);
    let mut irq_exits = 0u32;
    while !partition.is_stopped() {
        // SAFETY: EL2 was configured for this partition just above.
        let exit = unsafe { exception::enter_guest(&mut runnable.vcpu) };
        match exit {
            ExitKind::Sync => handle_sync(partition, runnable),
            ExitKind::Irq | ExitKind::Fiq => {
                irq_exits = irq_exits.saturating_add(1);
                if irq_exits <= IRQ_LOG_LIMIT {
                    log::warn!("partition {}: physical {exit:?} while it ran; no interrupt controller driver yet", partition.name);
                }
            }
            ExitKind::SError => stop_for_fault(partition, format!("SError at PC {:#x}", runnable.vcpu.elr)),
            ExitKind::Aarch32 => stop_for_fault(partition, format!("exception from AArch32 state at PC {:#x}", runnable.vcpu.elr)),
        }
    }
}

fn handle_sync(partition: &mut Partition, runnable: &mut Runnable) {
    let (esr_value, far, hpfar) = el2::exit_syndrome();
    let esr = Esr(esr_value);
    let vcpu = &mut runnable.vcpu;
    match esr.class() {
        ExceptionClass::Hvc64 => hypercall_exit(partition, runnable, Conduit::Hvc),
        ExceptionClass::Smc64 => {
            // A trapped SMC returns to the SMC itself (Arm ARM D1.10.x); skip it.
            vcpu.elr = vcpu.elr.wrapping_add(4);
            hypercall_exit(partition, runnable, Conduit::Smc)
        }
        ExceptionClass::DataAbortLower | ExceptionClass::InstructionAbortLower => {
            let what = if esr.class() == ExceptionClass::InstructionAbortLower {
                "instruction fetch"
            } else if esr.is_write() {
                "write"
            } else {
                "read"
            };
            let ipa = if esr.fault_has_ipa() {
                format!("IPA {:#x}", esr::fault_ipa(hpfar, far))
            } else {
                String::from("IPA unknown")
            };
            let message = format!(
                "stage-2 fault: partition '{}' {what} at {ipa} ({}, ESR {:#x}, FAR {far:#x}, PC {:#x})",
                partition.name,
                esr.fault_name(),
                esr.0,
                vcpu.elr
            );
            log::error!("{message}");
            stop_for_fault(partition, message);
        }
        other => {
            let message = format!("unhandled exit {other:?} ({esr:?}) at PC {:#x}", vcpu.elr);
            log::error!("partition '{}': {message}", partition.name);
            stop_for_fault(partition, message);
        }
    }
}

use alloc::string::String;

fn hypercall_exit(partition: &mut Partition, runnable: &mut Runnable, conduit: Conduit) {
    let vcpu = &mut runnable.vcpu;
    let mut args = [0u64; 8];
    args.copy_from_slice(&vcpu.x[..8]);
    match hypercall::dispatch(partition, &IdentityMemory, &mut GuestConsole, conduit, &args) {
        Outcome::Return(x0) => vcpu.x[0] = x0,
        Outcome::Stop => log::info!("partition {}: stopped at its request", partition.name),
    }
}

fn stop_for_fault(partition: &mut Partition, message: String) {
    partition.stop(StopReason::Fault(message), &mut GuestConsole);
    log::warn!("partition {}: stopped (fault policy: stop)", partition.name);
}
