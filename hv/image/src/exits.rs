//! Handling a vCPU's exits: hypercalls, trapped SMCs, stage-2 faults and
//! everything else a guest can cause. Nothing here panics on guest input:
//! every case either resumes the guest or stops its partition with a report.

use crate::console::GuestConsole;
use crate::memory::IdentityMemory;
use crate::setup::Runnable;
use alloc::format;
use alloc::string::String;
use bulkhead_arch_aarch64::el2;
use bulkhead_arch_aarch64::esr::{self, Esr, ExceptionClass};
use bulkhead_arch_aarch64::exception::ExitKind;
use bulkhead_core::hypercall::{self, Conduit, Outcome};
use bulkhead_core::partition::{Partition, StopReason};

/// Physical interrupt exits logged per partition before going quiet.
const IRQ_LOG_LIMIT: u32 = 4;

/// Handles one exit of `partition`'s vCPU.
pub fn handle(partition: &mut Partition, runnable: &mut Runnable, exit: ExitKind) {
    match exit {
        ExitKind::Sync => handle_sync(partition, runnable),
        ExitKind::Irq | ExitKind::Fiq => {
            runnable.irq_exits = runnable.irq_exits.saturating_add(1);
            if runnable.irq_exits <= IRQ_LOG_LIMIT {
                log::warn!("partition {}: physical {exit:?} while it ran; no interrupt controller driver yet", partition.name);
            }
        }
        ExitKind::SError => stop_for_fault(partition, format!("SError at PC {:#x}", runnable.vcpu.elr)),
        ExitKind::Aarch32 => {
            stop_for_fault(partition, format!("exception from AArch32 state at PC {:#x}", runnable.vcpu.elr))
        }
    }
}

fn handle_sync(partition: &mut Partition, runnable: &mut Runnable) {
    let (esr_value, far, hpfar) = el2::exit_syndrome();
    let esr = Esr(esr_value);
    match esr.class() {
        ExceptionClass::Hvc64 => hypercall_exit(partition, runnable, Conduit::Hvc),
        ExceptionClass::Smc64 => {
            // A trapped SMC returns to the SMC itself (Arm ARM D1.10.x); skip it.
            runnable.vcpu.elr = runnable.vcpu.elr.wrapping_add(4);
            hypercall_exit(partition, runnable, Conduit::Smc)
        }
        ExceptionClass::DataAbortLower | ExceptionClass::InstructionAbortLower => {
            stage2_fault(partition, runnable, esr, far, hpfar)
        }
        other => {
            let message = format!("unhandled exit {other:?} ({esr:?}) at PC {:#x}", runnable.vcpu.elr);
            log::error!("partition '{}': {message}", partition.name);
            stop_for_fault(partition, message);
        }
    }
}

fn stage2_fault(partition: &mut Partition, runnable: &mut Runnable, esr: Esr, far: u64, hpfar: u64) {
    let vcpu = &mut runnable.vcpu;
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
