//! Handling a vCPU's exits: hypercalls, trapped SMCs, stage-2 faults and
//! everything else a guest can cause. Nothing here panics on guest input:
//! every case either resumes the guest or stops its partition with a report.

use crate::console::GuestConsole;
use crate::memory::IdentityMemory;
use crate::setup::{Runnable, Shared, Slot};
use bulkhead_core::hypercall::VcpuTopology;
use alloc::format;
use alloc::string::String;
use bulkhead_arch_aarch64::el2;
use bulkhead_arch_aarch64::esr::{self, Esr, ExceptionClass};
use bulkhead_arch_aarch64::exception::ExitKind;
use bulkhead_arch_aarch64::idregs;
use bulkhead_arch_aarch64::inject::{InjectedFault, inject_abort, inject_undefined};
use bulkhead_abi::hypercall::{CHECK_ATTRIBUTE, HvError};
use bulkhead_arch_aarch64::store_decode;
use bulkhead_arch_aarch64::translate::{Stages, combine, s2_memattr, translate};
use bulkhead_core::address_space::{Access, RegionKind};
use bulkhead_core::page_track::TrackedWrite;
use bulkhead_core::partition::HostMemory;
use crate::page_track::PerformError;
use bulkhead_config::FaultPolicy;
use bulkhead_core::address::Gpa;
use bulkhead_core::mmio::{AccessSize, DataAccess};
use bulkhead_arch_aarch64::esr::SysRegAccess;
use bulkhead_arch_aarch64::exception::VcpuContext;
use alloc::vec::Vec;
use crate::space::s2_memory_type;
use bulkhead_core::hypercall::{self, Conduit, Outcome};
use bulkhead_core::partition::{Partition, StopReason, Verdict};

/// Physical interrupt exits logged per partition before going quiet.
const IRQ_LOG_LIMIT: u32 = 4;
/// Injected faults logged per partition before going quiet, so a guest that
/// faults in a loop cannot flood the console.
const INJECT_LOG_LIMIT: u32 = 16;
/// Stage-2 fault status code of an alignment fault.
const FSC_ALIGNMENT: u8 = 0x21;

/// What the vCPU does after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuAction {
    /// Enter the guest again.
    Resume,
    /// The vCPU turned itself off (PSCI `CPU_OFF`); wait for `CPU_ON`.
    Off,
    /// The partition has stopped.
    PartitionStopped,
    /// The partition asked to be reset.
    Reset,
}

/// Handles one exit of a vCPU of the partition in `slot`.
pub fn handle(
    slot: &Slot,
    shared: &Shared,
    topology: &mut dyn VcpuTopology,
    runnable: &mut Runnable,
    exit: ExitKind,
) -> VcpuAction {
    let mut partition = slot.partition.lock();
    let action = handle_exit(&mut partition, shared, topology, runnable, exit);
    if partition.is_stopped() { VcpuAction::PartitionStopped } else { action }
}

fn handle_exit(
    partition: &mut Partition,
    shared: &Shared,
    topology: &mut dyn VcpuTopology,
    runnable: &mut Runnable,
    exit: ExitKind,
) -> VcpuAction {
    match exit {
        ExitKind::Sync => return handle_sync(partition, shared, topology, runnable),
        ExitKind::Irq => runnable.interrupts.on_irq_exit(&partition.name),
        ExitKind::Fiq => {
            runnable.irq_exits = runnable.irq_exits.saturating_add(1);
            if runnable.irq_exits <= IRQ_LOG_LIMIT {
                log::warn!("partition {}: physical FIQ while it ran; FIQs are not used", partition.name);
            }
        }
        ExitKind::SError => stop_for_fault(partition, format!("SError at PC {:#x}", runnable.vcpu.elr)),
        ExitKind::Aarch32 => {
            stop_for_fault(partition, format!("exception from AArch32 state at PC {:#x}", runnable.vcpu.elr))
        }
    }
    VcpuAction::Resume
}

fn handle_sync(
    partition: &mut Partition,
    shared: &Shared,
    topology: &mut dyn VcpuTopology,
    runnable: &mut Runnable,
) -> VcpuAction {
    let (esr_value, far, hpfar) = el2::exit_syndrome();
    let esr = Esr(esr_value);
    match esr.class() {
        ExceptionClass::Hvc64 => {
            // A partition with a DMA device may run on a CPU the SMMU's
            // interrupt does not reach: its hypercalls (every console
            // line) drain the events too, so faults are reported close to
            // the guest's own account of them.
            if shared.dma.is_some() {
                crate::iommu::service("hypercall");
            }
            return hypercall_exit(partition, topology, runnable, Conduit::Hvc);
        }
        ExceptionClass::Smc64 => {
            // A trapped SMC returns to the SMC itself (Arm ARM D1.10.x); skip it.
            runnable.vcpu.elr = runnable.vcpu.elr.wrapping_add(4);
            return hypercall_exit(partition, topology, runnable, Conduit::Smc);
        }
        ExceptionClass::DataAbortLower if is_tracked_write_fault(partition, esr, far, hpfar) => {
            tracked_write(partition, shared, runnable, esr, far, hpfar);
        }
        ExceptionClass::DataAbortLower if esr.fault_has_ipa() && esr.has_valid_syndrome() => {
            let access = DataAccess {
                gpa: Gpa::new(esr::fault_ipa(hpfar, far)),
                size: AccessSize::from_bytes(u64::from(esr.access_size())).unwrap_or(AccessSize::Word),
                write: esr.is_write(),
                register: esr.transfer_register(),
                sign_extend: esr.sign_extend(),
                sixty_four: esr.sixty_four_bit_register(),
            };
            if !emulate_mmio(partition, shared, runnable, &access) {
                stage2_fault(partition, shared, runnable, esr, far, hpfar)
            }
        }
        ExceptionClass::DataAbortLower | ExceptionClass::InstructionAbortLower => {
            stage2_fault(partition, shared, runnable, esr, far, hpfar)
        }
        ExceptionClass::SysReg
            if {
                let a = SysRegAccess::decode(esr);
                a.read && idregs::is_id_register(a.encoding.0, a.encoding.1, a.encoding.2, a.encoding.3)
            } =>
        {
            let access = SysRegAccess::decode(esr);
            let (_, _, _, crm, op2) = access.encoding;
            let value = idregs::guest_view(crm, op2, idregs::read(crm, op2));
            if let Some(slot) = runnable.vcpu.x.get_mut(usize::from(access.register)) {
                *slot = value;
            }
            runnable.vcpu.elr = runnable.vcpu.elr.wrapping_add(4);
        }
        ExceptionClass::Other(0x19) | ExceptionClass::Other(0x1d) => {
            // SVE or SME, which the guest was told it does not have.
            if let Err(e) = inject_undefined(&mut runnable.vcpu) {
                stop_for_fault(partition, format!("cannot inject an undefined instruction: PSTATE {:#x}", e.spsr));
            }
        }
        ExceptionClass::SysReg if SysRegAccess::decode(esr).is_sgi1r_write() => {
            let access = SysRegAccess::decode(esr);
            let value = register(&runnable.vcpu, access.register);
            runnable.interrupts.send_sgi(value);
            runnable.vcpu.elr = runnable.vcpu.elr.wrapping_add(4);
        }
        other => {
            let message = format!("unhandled exit {other:?} ({esr:?}) at PC {:#x}", runnable.vcpu.elr);
            log::error!("partition '{}': {message}", partition.name);
            stop_for_fault(partition, message);
        }
    }
    VcpuAction::Resume
}

/// A general-purpose register by number; 31 is the zero register here.
fn register(vcpu: &VcpuContext, n: u8) -> u64 {
    vcpu.x.get(usize::from(n)).copied().unwrap_or(0)
}

/// Emulates a trapped load or store if an emulated device claims it;
/// returns whether one did.
fn emulate_mmio(partition: &mut Partition, shared: &Shared, runnable: &mut Runnable, access: &DataAccess) -> bool {
    let vcpu_index = runnable.interrupts.vcpu;
    let claimed = if access.write {
        let value = register(&runnable.vcpu, access.register);
        partition.bus.write_in(&partition.space, vcpu_index, access.gpa, access.size, value)
    } else {
        match partition.bus.read(vcpu_index, access.gpa, access.size) {
            Some(raw) => {
                if let Some(slot) = runnable.vcpu.x.get_mut(usize::from(access.register)) {
                    *slot = access.load_value(raw);
                }
                true
            }
            None => false,
        }
    };
    if claimed {
        // Data aborts with a valid syndrome come from 32-bit instructions.
        runnable.vcpu.elr = runnable.vcpu.elr.wrapping_add(4);
        if access.write
            && let Some(code) = shared.verdict.lock().take()
        {
            partition.verdict = if code == 0 { Verdict::Passed } else { Verdict::Failed { code: u64::from(code), detail: 0 } };
            log::info!("partition {}: verdict register: {code}", partition.name);
        }
        if let Some(bytes) = &shared.uart_output {
            let pending: Vec<u8> = core::mem::take(&mut *bytes.lock());
            if !pending.is_empty() {
                partition.console_write(&pending, &mut GuestConsole);
            }
        }
    }
    claimed
}

/// A stage-2 permission fault on a store (not a stage-1 walk) to a page
/// tracked for the GPU mediator ([`crate::page_track`]).
fn is_tracked_write_fault(partition: &Partition, esr: Esr, far: u64, hpfar: u64) -> bool {
    esr.is_permission_fault()
        && esr.is_write()
        && !esr.on_stage1_walk()
        && crate::page_track::is_tracked(partition.index, Gpa::new(esr::fault_ipa(hpfar, far)))
}

/// Performs a trapped store to a tracked page for the guest: from the
/// syndrome if it describes the access (ISV), else by decoding the
/// instruction at ELR; then advances ELR. A store that cannot be emulated
/// is a stage-2 fault under the partition's policy, named as such.
fn tracked_write(partition: &mut Partition, shared: &Shared, runnable: &mut Runnable, esr: Esr, far: u64, hpfar: u64) {
    let ipa = Gpa::new(esr::fault_ipa(hpfar, far));
    let index = partition.index;
    if esr.is_cache_maintenance() {
        // DC IVAC needs write permission at stage 2; a clean and invalidate
        // keeps the performed stores and satisfies the guest.
        if crate::page_track::clean_line(index, ipa) {
            runnable.vcpu.elr = runnable.vcpu.elr.wrapping_add(4);
        } else {
            stage2_fault(partition, shared, runnable, esr, far, hpfar);
        }
        return;
    }
    let decoded = if esr.has_valid_syndrome() {
        let width = esr.access_size();
        let value = register(&runnable.vcpu, esr.transfer_register()) & width_mask(width);
        Ok((TrackedStores::one(TrackedWrite { gpa: ipa, width, value }), None))
    } else {
        decode_tracked_store(partition, runnable, esr, far, ipa)
    };
    let (writes, writeback) = match decoded {
        Ok(decoded) => decoded,
        Err(why) => {
            log::warn!("partition {}: store to tracked page {:#x} at PC {:#x} not emulated: {why}", partition.name, ipa.raw() & !0xfff, runnable.vcpu.elr);
            stage2_fault(partition, shared, runnable, esr, far, hpfar);
            return;
        }
    };
    match crate::page_track::perform(index, writes.as_slice()) {
        Ok(()) => {
            if let Some((base, value)) = writeback {
                if base == store_decode::SP_OR_ZR {
                    el2::set_guest_sp(runnable.vcpu.spsr, value);
                } else if let Some(slot) = runnable.vcpu.x.get_mut(usize::from(base)) {
                    *slot = value;
                }
            }
            runnable.vcpu.elr = runnable.vcpu.elr.wrapping_add(4);
        }
        // Untracked since the fault: if the page is writable again, the
        // guest simply retries the store.
        Err(PerformError::NotTracked(_)) if crate::page_track::writable_now(index, ipa) => {}
        Err(e) => {
            log::warn!("partition {}: store to tracked page {:#x} at PC {:#x} not performed: {e:?}", partition.name, ipa.raw() & !0xfff, runnable.vcpu.elr);
            stage2_fault(partition, shared, runnable, esr, far, hpfar);
        }
    }
}

/// One or two stores of one instruction.
struct TrackedStores {
    writes: [TrackedWrite; 2],
    count: usize,
}

impl TrackedStores {
    fn one(write: TrackedWrite) -> TrackedStores {
        TrackedStores { writes: [write, write], count: 1 }
    }

    fn as_slice(&self) -> &[TrackedWrite] {
        &self.writes[..self.count.min(2)]
    }
}

const fn width_mask(width: u8) -> u64 {
    if width >= 8 { u64::MAX } else { (1u64 << (width as u32 * 8)) - 1 }
}

/// Decodes the store at ELR (ISV = 0: pairs, writeback forms): fetched
/// through the guest's stage 1 from its own RAM, decoded by
/// [`store_decode`], each store checked to lie in the faulting page.
/// Returns the stores and the base register's writeback.
fn decode_tracked_store(
    partition: &Partition,
    runnable: &Runnable,
    esr: Esr,
    far: u64,
    ipa: Gpa,
) -> Result<(TrackedStores, Option<(u8, u64)>), String> {
    let vcpu = &runnable.vcpu;
    if esr.far_not_valid() {
        return Err(String::from("FAR_EL2 is not valid for this fault"));
    }
    let pc = vcpu.elr;
    let code = translate(pc, Stages::Stage1).ok_or_else(|| format!("PC {pc:#x} does not translate at stage 1"))?;
    let code_ipa = Gpa::new(code.address);
    let in_ram = partition.space.region_at(code_ipa).is_some_and(|r| r.kind == RegionKind::Ram);
    let hpa = partition
        .space
        .translate(code_ipa, 4, Access::Read)
        .filter(|_| in_ram)
        .ok_or_else(|| format!("the instruction at IPA {code_ipa} is not in readable RAM"))?;
    let mut bytes = [0u8; 4];
    IdentityMemory.read(hpa, &mut bytes);
    let insn = u32::from_le_bytes(bytes);
    let decoded = store_decode::decode(insn).map_err(|e| format!("instruction {insn:#010x} is not emulated ({e:?})"))?;
    let execution = decoded.execute(|n| register(vcpu, n), el2::guest_sp(vcpu.spsr));
    let page = ipa.raw() & !0xfff;
    let mut writes = [TrackedWrite { gpa: ipa, width: 0, value: 0 }; 2];
    for (store, write) in execution.stores().iter().zip(writes.iter_mut()) {
        // Tags (bits 63:56) aside, the store must lie in the faulting VA
        // page; its IPA is then the faulting IPA page plus its offset.
        let same_page = (store.address ^ far) & 0x00ff_ffff_ffff_f000 == 0;
        let offset = store.address & 0xfff;
        if !same_page || offset + u64::from(store.width) > 0x1000 {
            return Err(format!("instruction {insn:#010x} stores at VA {:#x}, outside the faulting page (FAR {far:#x})", store.address));
        }
        *write = TrackedWrite { gpa: Gpa::new(page | offset), width: store.width, value: store.value };
    }
    let writeback = execution.writeback.map(|value| (decoded.base, value));
    Ok((TrackedStores { writes, count: usize::from(execution.count) }, writeback))
}

fn stage2_fault(partition: &mut Partition, shared: &Shared, runnable: &mut Runnable, esr: Esr, far: u64, hpfar: u64) {
    // QEMU TCG (DESIGN.md §4) may report a guest's unaligned access to Device
    // memory as a stage-2 alignment fault at EL2: it is the guest's own fault,
    // so it gets it, whatever the policy for stage-2 violations.
    if esr.fault_status() == FSC_ALIGNMENT {
        log::debug!("partition {}: alignment fault at FAR {far:#x} forwarded to the guest", partition.name);
        inject(partition, runnable, esr, far, InjectedFault::Alignment);
        return;
    }
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
    let tracked = if esr.fault_has_ipa() && crate::page_track::is_tracked(partition.index, Gpa::new(esr::fault_ipa(hpfar, far))) {
        ", a page tracked for the GPU mediator"
    } else {
        ""
    };
    let message = format!(
        "stage-2 fault: partition '{}' {what} at {ipa}{tracked} ({}, ESR {:#x}, FAR {far:#x}, PC {:#x})",
        partition.name,
        esr.fault_name(),
        esr.0,
        vcpu.elr
    );
    match shared.on_fault {
        FaultPolicy::Stop => {
            log::error!("{message}");
            stop_for_fault(partition, message);
        }
        FaultPolicy::Inject => {
            runnable.injected_faults = runnable.injected_faults.saturating_add(1);
            if runnable.injected_faults <= INJECT_LOG_LIMIT {
                log::warn!("{message}; injecting an external abort (fault policy: inject)");
                if runnable.injected_faults == INJECT_LOG_LIMIT {
                    log::warn!("partition {}: further injected faults are not logged", partition.name);
                }
            }
            inject(partition, runnable, esr, far, InjectedFault::ExternalAbort);
        }
    }
}

fn inject(partition: &mut Partition, runnable: &mut Runnable, esr: Esr, far: u64, fault: InjectedFault) {
    if let Err(e) = inject_abort(&mut runnable.vcpu, esr, far, fault) {
        stop_for_fault(partition, format!("cannot inject a fault: guest PSTATE {:#x} is not an EL1/EL0 mode", e.spsr));
    }
}

fn hypercall_exit(
    partition: &mut Partition,
    topology: &mut dyn VcpuTopology,
    runnable: &mut Runnable,
    conduit: Conduit,
) -> VcpuAction {
    let vcpu = &mut runnable.vcpu;
    let mut args = [0u64; 8];
    args.copy_from_slice(&vcpu.x[..8]);
    if args[0] as u32 == CHECK_ATTRIBUTE {
        vcpu.x[0] = check_attribute(partition, args[1]);
        return VcpuAction::Resume;
    }
    match hypercall::dispatch(partition, &IdentityMemory, &mut GuestConsole, topology, conduit, &args) {
        Outcome::Return(x0) => vcpu.x[0] = x0,
        Outcome::Stop => log::info!("partition {}: stopped at its request", partition.name),
        Outcome::Reset => {
            log::info!("partition {}: reset requested (PSCI SYSTEM_RESET)", partition.name);
            return VcpuAction::Reset;
        }
        Outcome::VcpuOff => {
            log::info!("partition {}: vCPU {} turned off", partition.name, runnable.interrupts.vcpu);
            return VcpuAction::Off;
        }
    }
    VcpuAction::Resume
}

/// `CHECK_ATTRIBUTE`: translates the guest's VA through its stage 1 and
/// through both stages, and compares the combined attribute with the one the
/// configuration gives the region (DESIGN.md §4).
fn check_attribute(partition: &Partition, va: u64) -> u64 {
    let (Some(stage1), Some(both)) = (translate(va, Stages::Stage1), translate(va, Stages::Stage1And2)) else {
        log::warn!("attribute check: partition '{}': VA {va:#x} does not translate", partition.name);
        return HvError::InvalidParameter.to_register();
    };
    let ipa = Gpa::new(stage1.address);
    let Some(region) = partition.space.region_at(ipa) else {
        log::warn!("attribute check: partition '{}': VA {va:#x} is IPA {ipa}, in no region", partition.name);
        return HvError::InvalidParameter.to_register();
    };
    let expected = combine(stage1.attr, s2_memattr(s2_memory_type(region.attr)));
    let verdict = if both.attr == expected { "match" } else { "MISMATCH" };
    log::info!(
        "attribute check: partition '{}' VA {va:#x} -> IPA {ipa} ({:?}): stage 1 {:#04x}, stages 1+2 {:#04x}, expected {expected:#04x}: {verdict}",
        partition.name,
        region.attr,
        stage1.attr,
        both.attr
    );
    if both.attr == expected { u64::from(both.attr) } else { HvError::CheckFailed.to_register() }
}

fn stop_for_fault(partition: &mut Partition, message: String) {
    partition.stop(StopReason::Fault(message), &mut GuestConsole);
    log::warn!("partition {}: stopped (fault policy: stop)", partition.name);
}
