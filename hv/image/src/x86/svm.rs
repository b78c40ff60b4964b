//! Running a partition's vCPU under AMD SVM: the per-CPU SVM pages, the
//! VMCB, the VMRUN loop, and the translation of #VMEXIT codes into the
//! back-end neutral [`Exit`]s that [`super::exits`] handles.
//!
//! QEMU TCG (DESIGN.md §6) has no next-RIP save and no decode assists:
//! [`super::exits`] decodes instructions itself. Nothing relies on VMCB clean
//! bits (the field stays 0: everything is reloaded) or on flush-by-ASID
//! (the first VMRUN flushes the whole TLB; later ones only after page
//! tracking changed an NPT leaf, `crate::page_track`). An event the CPU was delivering when
//! the exit happened (EXITINTINFO) is re-injected on the next VMRUN unless
//! the handler injects one of its own (APM Vol. 2 §15.7.2).

use super::console::line;
use super::exits::{self, Exit, ExitState, GuestCpu, Next};
use super::memory::{alloc_frames, frames_holding};
use super::partition::{NestedTable, Start};
use alloc::format;
use alloc::string::String;
use bulkhead_arch_x86_64::cpu::ap::LocalApic;
use bulkhead_arch_x86_64::cpu::svm::{self as cpu, GuestRegisters};
use bulkhead_arch_x86_64::decode::{Bitness, Gpr};
use bulkhead_arch_x86_64::guest_msr::{self, EFER_SVME};
use bulkhead_arch_x86_64::guest_paging::PagingMode;
use bulkhead_arch_x86_64::npt;
use bulkhead_arch_x86_64::passthrough;
use bulkhead_arch_x86_64::svm::bitmaps::{IoPermissionMap, MsrPermissionMap};
use bulkhead_arch_x86_64::svm::exit::{
    CPUID_EDX_NRIP_SAVE, IoDirection, IoioInfo, NestedPageFault, PendingEvent, SvmExit, next_rip_length,
};
use bulkhead_arch_x86_64::svm::guest::{self as svm_guest, SvmGuest, fill_64bit_guest};
use bulkhead_arch_x86_64::svm::vmcb::Vmcb;
use bulkhead_config::MemoryAttribute;
use bulkhead_core::partition::{ConsoleSink, Partition, StopReason};
use spin::Mutex;

/// CPUID leaf of the SVM feature bits (AMD APM Vol. 3 Appendix E).
const SVM_FEATURES_LEAF: u32 = 0x8000_000a;
/// The power-on PAT value, given to the guest as its gPAT.
const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;
/// ASID 0 is the host's; partition `i` gets ASID `i + 1`, so that no two
/// partitions ever share TLB tags, even once CPUs are shared.
fn asid_of(partition: &Partition) -> u32 {
    partition.index as u32 + 1
}
/// CR0.NE: native x87 error reporting (what every 64-bit OS sets).
const CR0_NE: u64 = 1 << 5;
/// EVENTINJ: valid (bit 31), error code valid (bit 11), type exception (3).
const EVENTINJ_VALID: u64 = 1 << 31;
const EVENTINJ_ERROR_CODE: u64 = 1 << 11;
const EVENTINJ_EXCEPTION: u64 = 3 << 8;
/// Segment attribute bits (APM Table B-2): L and D/B.
const ATTRIB_L: u16 = 1 << 9;
const ATTRIB_DB: u16 = 1 << 10;

/// Guest console lines on COM1, tagged with the partition's name.
pub struct GuestConsole;

impl ConsoleSink for GuestConsole {
    fn guest_line(&mut self, partition: &str, text: &str) {
        line(format_args!("[{partition}] {text}"));
    }
}

/// One CPU's SVM state: the page holding its own FS, GS, TR and LDTR
/// (VMSAVE), reloaded after every guest.
#[derive(Clone, Copy, Debug)]
pub struct CpuSvm {
    host_state: u64,
}

/// Turns SVM on for this CPU, gives it its host-save page and saves its
/// own VMLOAD/VMSAVE state. Call after this CPU loaded its TSS.
///
/// # Errors
/// Why SVM cannot be used, as text for the boot log.
pub fn enable_svm() -> Result<CpuSvm, String> {
    let host_save = alloc_frames(4096, 4096).ok_or("no memory for the VMRUN host-save page")?;
    let host_state = alloc_frames(4096, 4096).ok_or("no memory for the host VMSAVE page")?.raw();
    // SAFETY: the page was just allocated for this CPU and is never freed;
    // HOST_PAT keeps entries 0-3 as they were, which is what the
    // hypervisor's own tables select (WB for RAM, UC for the APIC).
    unsafe { cpu::enable(host_save.raw(), npt::HOST_PAT) }.map_err(|e| format!("SVM unavailable: {e:?}"))?;
    // SAFETY: SVM is on; the page was just allocated for this CPU, which
    // has loaded its own GDT and TSS (caller's contract).
    unsafe { cpu::vmsave(host_state) };
    log::info!("SVM enabled: EFER.SVME set, host-save area at {host_save:?}, nested paging available");
    Ok(CpuSvm { host_state })
}

/// The I/O permission map: only the partition's own ports pass.
fn io_permissions(start: &Start) -> IoPermissionMap {
    let mut map = IoPermissionMap::intercept_all();
    passthrough::allow_io_ports(&mut map, &start.io_ports);
    map
}

/// The MSR permission map: the guest-state MSRs pass both ways, read-only
/// ones for reads; everything else exits.
fn msr_permissions() -> MsrPermissionMap {
    let mut map = MsrPermissionMap::intercept_all();
    // Every listed MSR lies in a range the map covers (host-tested).
    let _ = passthrough::allow_guest_msrs(&mut map);
    map
}

/// The guest state of one VMRUN: the VMCB and the registers it lacks.
struct SvmCpu<'a> {
    vmcb: &'a mut Vmcb,
    registers: &'a mut GuestRegisters,
    npt: &'a Mutex<NestedTable>,
    /// The CPU writes nRIP on instruction intercepts (never under QEMU TCG).
    nrip_save: bool,
}

impl GuestCpu for SvmCpu<'_> {
    fn gpr(&self, gpr: Gpr) -> u64 {
        let r = &self.registers;
        match gpr.0 {
            0 => self.vmcb.save.rax,
            1 => r.rcx,
            2 => r.rdx,
            3 => r.rbx,
            4 => self.vmcb.save.rsp,
            5 => r.rbp,
            6 => r.rsi,
            7 => r.rdi,
            8 => r.r8,
            9 => r.r9,
            10 => r.r10,
            11 => r.r11,
            12 => r.r12,
            13 => r.r13,
            14 => r.r14,
            _ => r.r15,
        }
    }

    fn set_gpr(&mut self, gpr: Gpr, value: u64) {
        let r = &mut self.registers;
        let slot = match gpr.0 {
            0 => &mut self.vmcb.save.rax,
            1 => &mut r.rcx,
            2 => &mut r.rdx,
            3 => &mut r.rbx,
            4 => &mut self.vmcb.save.rsp,
            5 => &mut r.rbp,
            6 => &mut r.rsi,
            7 => &mut r.rdi,
            8 => &mut r.r8,
            9 => &mut r.r9,
            10 => &mut r.r10,
            11 => &mut r.r11,
            12 => &mut r.r12,
            13 => &mut r.r13,
            14 => &mut r.r14,
            _ => &mut r.r15,
        };
        *slot = value;
    }

    fn rip(&self) -> u64 {
        self.vmcb.save.rip
    }

    fn set_rip(&mut self, rip: u64) {
        self.vmcb.save.rip = rip;
    }

    fn rflags(&self) -> u64 {
        self.vmcb.save.rflags
    }

    fn cr3(&self) -> u64 {
        self.vmcb.save.cr3
    }

    fn paging_mode(&self) -> PagingMode {
        PagingMode::from_registers(self.vmcb.save.cr0, self.vmcb.save.cr4, self.vmcb.save.efer)
    }

    fn bitness(&self) -> Bitness {
        let cs = self.vmcb.save.cs.attrib;
        let lma = self.vmcb.save.efer & guest_msr::EFER_LMA != 0;
        Bitness::of_guest(lma, cs & ATTRIB_L != 0, cs & ATTRIB_DB != 0)
    }

    fn efer(&self) -> u64 {
        self.vmcb.save.efer
    }

    fn set_efer(&mut self, efer: u64) {
        self.vmcb.save.efer = efer | EFER_SVME;
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        let mut event = u64::from(vector) | EVENTINJ_EXCEPTION | EVENTINJ_VALID;
        if let Some(code) = error_code {
            event |= EVENTINJ_ERROR_CODE | (u64::from(code) << 32);
        }
        self.vmcb.control.eventinj = event;
    }

    fn can_take_interrupt(&self) -> bool {
        !self.interrupt_queued()
    }

    fn request_interrupt(&mut self, vector: u8) {
        let control = &mut self.vmcb.control;
        control.virtual_interrupt = svm_guest::with_virtual_interrupt(control.virtual_interrupt, vector);
    }

    fn interrupt_queued(&self) -> bool {
        self.vmcb.control.virtual_interrupt & svm_guest::V_IRQ != 0
    }

    fn guest_pat(&self) -> u64 {
        self.vmcb.save.g_pat
    }

    fn second_level_memory_type(&self, gpa: u64) -> Option<u8> {
        let (_, entry, size) = self.npt.lock().lookup(gpa)?;
        Some(npt::pat_entry(npt::HOST_PAT, npt::leaf_pat_index(entry, size)))
    }

    fn configured_memory_type(&self, attr: MemoryAttribute) -> u8 {
        npt::pat_entry(npt::HOST_PAT, npt::pat_index(super::partition::memory_type(attr)))
    }

    fn instruction_length(&self) -> Option<u64> {
        let exit = SvmExit::from_code(self.vmcb.control.exitcode);
        next_rip_length(exit, self.vmcb.save.rip, self.vmcb.control.next_rip, self.nrip_save)
    }
}

/// The neutral exit for the #VMEXIT recorded in `vmcb`.
fn exit_of(vmcb: &Vmcb, registers: &GuestRegisters) -> Exit {
    let control = &vmcb.control;
    match SvmExit::from_code(control.exitcode) {
        SvmExit::Vmmcall => Exit::Hypercall,
        SvmExit::Cpuid => Exit::Cpuid,
        SvmExit::Hlt => Exit::Hlt,
        SvmExit::Msr if control.exitinfo1 == 1 => Exit::Wrmsr,
        SvmExit::Msr => Exit::Rdmsr,
        SvmExit::Ioio => match IoioInfo::decode(control.exitinfo1) {
            Some(io) => Exit::Io { port: io.port, size: io.size, input: io.direction == IoDirection::In },
            None => Exit::Unexpected(format!("port access with a malformed EXITINFO1 {:#x}", control.exitinfo1)),
        },
        SvmExit::NestedPageFault => {
            let fault = NestedPageFault::decode(control.exitinfo1, control.exitinfo2);
            Exit::NestedFault {
                gpa: fault.gpa,
                write: fault.write,
                fetch: fault.fetch,
                present: fault.present,
                during_event_delivery: PendingEvent::from_exitintinfo(control.exitintinfo).is_some(),
            }
        }
        SvmExit::Shutdown => Exit::TripleFault,
        SvmExit::Intr | SvmExit::Nmi | SvmExit::Smi | SvmExit::Init => Exit::Interrupt,
        SvmExit::Invalid => {
            let save = &vmcb.save;
            Exit::Unexpected(format!(
                "VMRUN refused the VMCB (exit code -1, consistency check failed): CR0 {:#x} CR3 {:#x} CR4 {:#x} EFER {:#x} CS attrib {:#x}",
                save.cr0, save.cr3, save.cr4, save.efer, save.cs.attrib
            ))
        }
        other => Exit::Unexpected(format!(
            "unexpected #VMEXIT {other:?} (code {:#x}, EXITINFO1 {:#x}, EXITINFO2 {:#x}, RCX {:#x})",
            control.exitcode, control.exitinfo1, control.exitinfo2, registers.rcx
        )),
    }
}

/// Runs `partition`'s only vCPU on this CPU until the partition stops.
pub fn run(partition: &mut Partition, npt: &Mutex<NestedTable>, start: &Start, svm: CpuSvm) {
    if let Err(reason) = run_vcpu(partition, npt, start, svm) {
        log::error!("partition {}: {reason}", partition.name);
        partition.stop(StopReason::Fault(reason), &mut GuestConsole);
    }
}

fn run_vcpu(partition: &mut Partition, npt: &Mutex<NestedTable>, start: &Start, svm: CpuSvm) -> Result<(), String> {
    let iopm = frames_holding(&io_permissions(start).0, "I/O permission map")?;
    let msrpm = frames_holding(&msr_permissions().0, "MSR permission map")?;
    let vmcb_pa = alloc_frames(4096, 4096).ok_or("no memory for the VMCB")?.raw();
    let vmcb_ptr = vmcb_pa as *mut Vmcb;
    let guest = SvmGuest {
        rip: start.rip,
        rsp: start.rsp,
        cr3: start.cr3,
        cr0: CR0_NE,
        cr4: 0,
        efer: 0,
        pat: DEFAULT_PAT,
        asid: asid_of(partition),
        npt_pml4: npt.lock().root_address(),
        iopm,
        msrpm,
    };
    {
        // SAFETY: the VMCB frame was just allocated (zeroed, aligned, identity-mapped).
        let vmcb = unsafe { &mut *vmcb_ptr };
        fill_64bit_guest(vmcb, &guest).map_err(|e| format!("VMCB set-up refused: {e:?}"))?;
    }
    log::info!(
        "partition {}: entering the guest at RIP {:#x} (RSP {:#x}, CR3 {:#x}, nCR3 {:#x}, ASID {}, {} I/O port range(s) passed through)",
        partition.name,
        start.rip,
        start.rsp,
        start.cr3,
        guest.npt_pml4,
        guest.asid,
        start.io_ports.len()
    );
    let mut registers = GuestRegisters::default();
    let mut state = ExitState::new(start.on_fault, start.verdict.clone());
    state.polls_dma_faults = start.pci_functions > 0;
    state.intx = start.intx.clone();
    if let Some(intx) = state.intx.as_ref().filter(|intx| !intx.routes.is_empty()) {
        // SAFETY: the hypervisor's page tables map the local APIC uncached.
        let apic_id = unsafe { LocalApic::current() }.id();
        super::intx::activate(&intx.routes, apic_id);
        log::info!("partition {}: {} INTx line(s) routed to the CPU with APIC ID {apic_id}", partition.name, intx.routes.len());
    }
    if start.gpu {
        // SAFETY: the hypervisor's page tables map the local APIC uncached.
        let apic_id = unsafe { LocalApic::current() }.id();
        state.gpu = Some(partition.index);
        match super::intx::gpu_vector() {
            Some(vector) => {
                crate::vgpu::set_kick(partition.index, super::intx::kick, u64::from(apic_id));
                log::info!("partition {}: virtual GPU events kick the CPU with APIC ID {apic_id} (vector {vector:#x})", partition.name);
            }
            None => log::warn!("partition {}: no GPU vector: its virtual GPU is looked at only at its exits", partition.name),
        }
    }
    let result = run_loop(partition, npt, vmcb_pa, svm, &mut registers, &mut state);
    if let Some(intx) = &state.intx {
        super::intx::deactivate(&intx.routes);
    }
    result
}

/// VMRUN until the partition stops.
fn run_loop(
    partition: &mut Partition,
    npt: &Mutex<NestedTable>,
    vmcb_pa: u64,
    svm: CpuSvm,
    registers: &mut GuestRegisters,
    state: &mut ExitState,
) -> Result<(), String> {
    let vmcb_ptr = vmcb_pa as *mut Vmcb;
    let nrip_save = cpu::cpuid(SVM_FEATURES_LEAF, 0)[3] & CPUID_EDX_NRIP_SAVE != 0;
    loop {
        if crate::page_track::take_flush_request(partition.index) {
            // A tracked page's NPT leaf changed: drop this CPU's cached
            // translations at this VMRUN (flush all: QEMU TCG has no
            // flush-by-ASID, DESIGN.md §6).
            // SAFETY: the CPU does not use the VMCB between VMRUNs.
            unsafe { (*vmcb_ptr).control.tlb_control = svm_guest::TLB_FLUSH_ALL };
        }
        // SAFETY: SVM is enabled on this CPU; the VMCB was filled by
        // `fill_64bit_guest` with an NPT mapping only the partition's RAM
        // and permission maps that pass only the partition's own ports and
        // the guest-state MSRs; `svm` is this CPU's.
        unsafe { cpu::vmrun(vmcb_pa, svm.host_state, registers) };
        // SAFETY: the CPU is done with the VMCB until the next VMRUN.
        let vmcb = unsafe { &mut *vmcb_ptr };
        vmcb.control.tlb_control = 0;
        vmcb.control.eventinj = 0;
        let interrupted = PendingEvent::from_exitintinfo(vmcb.control.exitintinfo);
        let exit = exit_of(vmcb, registers);
        let mut guest_cpu = SvmCpu { vmcb, registers, npt, nrip_save };
        if exits::handle(partition, &mut guest_cpu, state, exit) == Next::Stop {
            break;
        }
        if let Some(event) = interrupted
            && guest_cpu.vmcb.control.eventinj == 0
        {
            guest_cpu.vmcb.control.eventinj = event.to_eventinj();
        }
        exits::before_entry(&mut guest_cpu, state);
    }
    if state.intx.is_some() {
        log::info!(
            "partition {}: stopped after {} #VMEXITs ({} HLT(s) waited for an interrupt and resumed)",
            partition.name,
            state.exits,
            state.halts_woken
        );
    } else {
        log::info!("partition {}: stopped after {} #VMEXITs", partition.name, state.exits);
    }
    Ok(())
}
