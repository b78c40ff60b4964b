//! Running a partition's vCPU under Intel VMX: the per-CPU VMXON region,
//! the per-vCPU VMCS (filled from [`VmcsWrites::for_64bit_guest`]), the
//! VMLAUNCH/VMRESUME loop, and the translation of VM exits into the
//! back-end neutral [`Exit`](super::exits::Exit)s that [`super::exits`]
//! handles — the VMX twin of [`super::svm`].
//!
//! **Never executed.** QEMU TCG emulates no VMX and the test host is AMD
//! (DESIGN.md §6), so this file is written to the Intel SDM (Vol. 3C,
//! 2023+ numbering) and only its pure parts are host-tested (in
//! `bulkhead_arch_x86_64::vmx`). Choices, each with its SDM reference:
//!
//! - One VMCS per vCPU, VPID 1 (one partition per CPU, each CPU its own
//!   TLB, like SVM's ASID 1); INVEPT (single context where supported) once
//!   before the first VMLAUNCH, since the EPT never changes while the
//!   partition runs (§29.4.3.1).
//! - Instruction lengths come from the VM-exit instruction-length field for
//!   instruction exits (§28.2.5); MMIO (EPT violations) is still decoded.
//! - External interrupts are acknowledged on exit (the controls ask for it,
//!   §25.7.1) and then retired with an EOI: the host has no interrupt
//!   handlers yet, so the interrupt is dropped, as SVM's never-taken
//!   interrupt effectively is.
//! - An event whose delivery the exit interrupted (IDT-vectoring
//!   information) is re-injected on the next entry unless the handler
//!   injected one of its own (§28.2.4), as SVM does with EXITINTINFO.

use super::exits::{self, ExitState, GuestCpu, Next};
use super::memory::{alloc_frames, frames_holding};
use super::partition::{ExtendedTable, Start};
use super::svm::GuestConsole;
use alloc::format;
use alloc::string::String;
use bulkhead_arch_x86_64::cpu::ap::LocalApic;
use bulkhead_arch_x86_64::cpu::gdt;
use bulkhead_arch_x86_64::cpu::svm::cpuid;
use bulkhead_arch_x86_64::cpu::vmx::{self as cpu, GuestRegisters};
use bulkhead_arch_x86_64::decode::{Bitness, Gpr};
use bulkhead_arch_x86_64::guest_msr;
use bulkhead_arch_x86_64::guest_paging::PagingMode;
use bulkhead_arch_x86_64::passthrough;
use bulkhead_arch_x86_64::vmx::bitmaps::{IoBitmaps, MsrBitmap};
use bulkhead_arch_x86_64::vmx::enable::{self, InveptType};
use bulkhead_arch_x86_64::vmx::event::{self, EntryEvent};
use bulkhead_arch_x86_64::vmx::exit::{ExitReason, ExitReasonField};
use bulkhead_arch_x86_64::vmx::guest::{GuestEntry, PartitionVmx, VmcsWrites, VmxCapabilities, VmxControls};
use bulkhead_arch_x86_64::vmx::status::VmxError;
use bulkhead_arch_x86_64::vmx::translate::{self, ExitInfo};
use bulkhead_arch_x86_64::vmx::vmcs::VmcsField;
use bulkhead_arch_x86_64::{PAGE_SIZE_4KIB, TableOptions, ept};
use bulkhead_config::MemoryAttribute;
use bulkhead_core::partition::{Partition, StopReason};
use core::cell::Cell;

/// The power-on PAT value, given to the guest as its IA32_PAT.
const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;
/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// Guest interruptibility state bits 1:0: blocking by STI, by MOV SS
/// (SDM Vol. 3C Table 25-3).
const INTERRUPTIBILITY_STI_MOV_SS: u64 = 0b11;
/// EPT leaf bits 5:3: the memory type.
const EPT_MEMORY_TYPE_SHIFT: u32 = 3;
const EPT_MEMORY_TYPE_MASK: u64 = 0b111;
/// The only VPID in use: one partition per CPU, each CPU its own TLB.
const VPID: u16 = 1;
/// CR0.ET and CR0.NE, which every 64-bit OS sets (PE, PG and the VMX fixed
/// bits are added by the plan).
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
/// Segment access rights (SDM §25.4.1, Table 25-2): L (bit 13), D/B (14).
const ACCESS_RIGHTS_L: u64 = 1 << 13;
const ACCESS_RIGHTS_DB: u64 = 1 << 14;
/// CPUID leaf whose EAX is the highest extended leaf.
const CPUID_MAX_EXTENDED: u32 = 0x8000_0000;
/// CPUID leaf with the physical-address width (EAX bits 7:0).
const CPUID_ADDRESS_SIZES: u32 = 0x8000_0008;
const ADDRESS_BITS_MASK: u32 = 0xff;
/// MAXPHYADDR to assume when CPUID 0x8000_0008 is missing (SDM Vol. 3A
/// §4.1.4: 36 bits).
const DEFAULT_ADDRESS_BITS: u32 = 36;

// ---- Host TR ----

/// The host TR a VM exit loads: `(selector, base)`: this CPU's own TSS,
/// whose IST stacks carry #DF, NMI and #MC. A VM exit loads TR from these
/// two fields (limit 0x67, busy 64-bit TSS) without reading the GDT
/// (SDM §28.5.2), so they must name the TSS this CPU loaded with LTR.
fn host_tr() -> (u16, u64) {
    (gdt::TSS_SELECTOR, gdt::current_tss_base())
}

// ---- Per-CPU enabling ----

/// This CPU's VMX capabilities, as text for the log when absent.
fn capabilities() -> Result<VmxCapabilities, String> {
    cpu::capabilities().ok_or_else(|| String::from("VMX unavailable: CPUID.1:ECX.VMX is clear"))
}

/// Turns VMX on for this CPU with its own VMXON region.
///
/// # Errors
/// Why VMX cannot be used, as text for the boot log.
pub fn enable_vmx() -> Result<(), String> {
    let capabilities = capabilities()?;
    let region = alloc_frames(PAGE_SIZE_4KIB, PAGE_SIZE_4KIB).ok_or("no memory for the VMXON region")?;
    // SAFETY: the page was just allocated for this CPU's VMXON region and
    // is never freed or touched again; it is zeroed, aligned, identity-mapped
    // write-back RAM; we run at CPL 0 with interrupts masked.
    unsafe { cpu::enable(region.raw(), &capabilities) }.map_err(|e| format!("VMX unavailable: {e}"))?;
    log::info!(
        "VMX enabled: VMXON region at {region:?}, VMCS revision {:#x}, {} capability MSRs",
        capabilities.basic.revision_id(),
        if capabilities.basic.true_controls() { "TRUE" } else { "default" }
    );
    Ok(())
}

/// The EPT limits of this CPU: page sizes from IA32_VMX_EPT_VPID_CAP,
/// host address bits from CPUID.
///
/// # Errors
/// When the CPU's EPT cannot hold the tables Bulkhead builds.
pub fn ept_table_options() -> Result<TableOptions, String> {
    let capabilities = capabilities()?;
    let ept = cpu::ept_vpid_capabilities(&capabilities).ok_or("VMX without EPT (no IA32_VMX_EPT_VPID_CAP)")?;
    if !ept.supports_bulkhead_ept() {
        return Err(format!("EPT without a 4-level walk or write-back tables (IA32_VMX_EPT_VPID_CAP {:#x})", ept.0));
    }
    let address_bits = if cpuid(CPUID_MAX_EXTENDED, 0)[0] >= CPUID_ADDRESS_SIZES {
        cpuid(CPUID_ADDRESS_SIZES, 0)[0] & ADDRESS_BITS_MASK
    } else {
        DEFAULT_ADDRESS_BITS
    };
    Ok(ept.table_options(address_bits))
}

/// The I/O bitmaps: only the partition's own ports pass.
fn io_bitmaps(start: &Start) -> IoBitmaps {
    let mut bitmaps = IoBitmaps::intercept_all();
    passthrough::allow_io_ports(&mut bitmaps, &start.io_ports);
    bitmaps
}

/// The MSR bitmap: the guest-state MSRs pass both ways, read-only ones for
/// reads; everything else exits.
fn msr_bitmap() -> MsrBitmap {
    let mut bitmap = MsrBitmap::intercept_all();
    // Every listed MSR lies in a range the bitmap covers (host-tested).
    let _ = passthrough::allow_guest_msrs(&mut bitmap);
    bitmap
}

// ---- The guest CPU behind the current VMCS ----

/// The guest state of the current VMCS and the registers it lacks, for
/// [`exits::handle`]. Exists only on the CPU that VMPTRLDed the VMCS,
/// between a VM exit and the next entry.
struct VmxCpu<'a> {
    registers: &'a mut GuestRegisters,
    /// The partition's EPT, for reading back memory types.
    ept: &'a ExtendedTable,
    /// The exit reason, to know whether the instruction length is defined.
    reason: u32,
    /// The first VMREAD/VMWRITE failure while the exit was handled;
    /// [`GuestCpu`] has no error path, so the run loop checks this after.
    error: Cell<Option<VmxError>>,
}

impl VmxCpu<'_> {
    fn read(&self, field: VmcsField) -> u64 {
        // SAFETY: VMX is on for this CPU and the partition's VMCS is current
        // (see the type's documentation); VMREAD has no side effect.
        match unsafe { cpu::vmread(field) } {
            Ok(value) => value,
            Err(error) => {
                self.note(error);
                0
            }
        }
    }

    fn write(&self, field: VmcsField, value: u64) {
        // SAFETY: as in `read`; only guest-state and event-injection fields
        // are written here, never the EPT pointer, bitmaps or host state.
        if let Err(error) = unsafe { cpu::vmwrite(field, value) } {
            self.note(error);
        }
    }

    fn note(&self, error: VmxError) {
        if self.error.get().is_none() {
            self.error.set(Some(error));
        }
    }
}

impl GuestCpu for VmxCpu<'_> {
    fn gpr(&self, gpr: Gpr) -> u64 {
        let r = &self.registers;
        match gpr.0 {
            0 => r.rax,
            1 => r.rcx,
            2 => r.rdx,
            3 => r.rbx,
            4 => self.read(VmcsField::GuestRsp),
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
            0 => &mut r.rax,
            1 => &mut r.rcx,
            2 => &mut r.rdx,
            3 => &mut r.rbx,
            4 => return self.write(VmcsField::GuestRsp, value),
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
        self.read(VmcsField::GuestRip)
    }

    /// Moves RIP past a completed instruction; STI / MOV-SS blocking ended
    /// with it.
    fn set_rip(&mut self, rip: u64) {
        self.write(VmcsField::GuestRip, rip);
        let state = self.read(VmcsField::GuestInterruptibilityState);
        let after = event::interruptibility_after_skip(state);
        if after != state {
            self.write(VmcsField::GuestInterruptibilityState, after);
        }
    }

    fn rflags(&self) -> u64 {
        self.read(VmcsField::GuestRflags)
    }

    fn cr3(&self) -> u64 {
        self.read(VmcsField::GuestCr3)
    }

    fn paging_mode(&self) -> PagingMode {
        PagingMode::from_registers(
            self.read(VmcsField::GuestCr0),
            self.read(VmcsField::GuestCr4),
            self.read(VmcsField::GuestIa32Efer),
        )
    }

    fn bitness(&self) -> Bitness {
        let cs = self.read(VmcsField::GuestCsAccessRights);
        let lma = self.read(VmcsField::GuestIa32Efer) & guest_msr::EFER_LMA != 0;
        Bitness::of_guest(lma, cs & ACCESS_RIGHTS_L != 0, cs & ACCESS_RIGHTS_DB != 0)
    }

    fn efer(&self) -> u64 {
        self.read(VmcsField::GuestIa32Efer)
    }

    /// The entry loads EFER from the VMCS ("load IA32_EFER", §27.3.2.1) and
    /// the exit saves it back ("save IA32_EFER"); the guest's LMA, which
    /// the "IA-32e mode guest" entry control must match, never changes
    /// (`guest_msr::efer_write` refuses LME changes).
    fn set_efer(&mut self, efer: u64) {
        self.write(VmcsField::GuestIa32Efer, efer);
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        inject(self, EntryEvent::hardware_exception(vector, error_code));
    }

    /// Interruptible now: RFLAGS.IF set, no STI or MOV SS shadow (bits 1:0
    /// of the interruptibility state), no event already in the VM-entry
    /// field. Interrupt-window exiting is not used yet: an interrupt that
    /// finds the guest not interruptible waits for a later exit.
    fn can_take_interrupt(&self) -> bool {
        self.rflags() & RFLAGS_IF != 0
            && self.read(VmcsField::GuestInterruptibilityState) & INTERRUPTIBILITY_STI_MOV_SS == 0
            && !event::is_valid(self.read(VmcsField::VmEntryInterruptionInformation) as u32)
    }

    fn request_interrupt(&mut self, vector: u8) {
        inject(self, EntryEvent::external_interrupt(vector));
    }

    /// An injected event is delivered by the VM entry itself, never left
    /// queued across an exit.
    fn interrupt_queued(&self) -> bool {
        false
    }

    fn guest_pat(&self) -> u64 {
        self.read(VmcsField::GuestIa32Pat)
    }

    /// The EPT leaf's memory type, bits 5:3 (SDM §29.3.7).
    fn second_level_memory_type(&self, gpa: u64) -> Option<u8> {
        let (_, entry, _) = self.ept.lookup(gpa)?;
        Some(((entry >> EPT_MEMORY_TYPE_SHIFT) & EPT_MEMORY_TYPE_MASK) as u8)
    }

    fn configured_memory_type(&self, attr: MemoryAttribute) -> u8 {
        ept::memory_type(super::partition::memory_type(attr)).0 as u8
    }

    fn instruction_length(&self) -> Option<u64> {
        if !translate::reports_instruction_length(self.reason) {
            return None;
        }
        let length = self.read(VmcsField::VmExitInstructionLength);
        // Anything outside 1..=15 is not an instruction: decode instead.
        (1..=bulkhead_arch_x86_64::decode::MAX_INSTRUCTION_LENGTH as u64).contains(&length).then_some(length)
    }
}

/// Writes `event` into the VM-entry event-injection fields (§25.8.3).
fn inject(cpu: &VmxCpu<'_>, event: EntryEvent) {
    if let Some(code) = event.error_code {
        cpu.write(VmcsField::VmEntryExceptionErrorCode, u64::from(code));
    }
    if let Some(length) = event.instruction_length {
        cpu.write(VmcsField::VmEntryInstructionLength, u64::from(length));
    }
    cpu.write(VmcsField::VmEntryInterruptionInformation, u64::from(event.information));
}

// ---- The run loop ----

/// The exit-information fields of the exit that just happened.
///
/// # Errors
/// A failed VMREAD, as text.
fn read_exit_info() -> Result<ExitInfo, String> {
    let read = |field: VmcsField| {
        // SAFETY: called right after a VM exit on the CPU whose VMCS is
        // current; VMREAD has no side effect.
        unsafe { cpu::vmread(field) }.map_err(|e| format!("VMREAD {field:?} after a VM exit: {e}"))
    };
    Ok(ExitInfo {
        reason: read(VmcsField::ExitReason)? as u32,
        qualification: read(VmcsField::ExitQualification)?,
        guest_physical: read(VmcsField::GuestPhysicalAddress)?,
        interruption: read(VmcsField::VmExitInterruptionInformation)? as u32,
        idt_vectoring: read(VmcsField::IdtVectoringInformation)? as u32,
    })
}

/// Runs `partition`'s only vCPU on this CPU until the partition stops.
pub fn run(partition: &mut Partition, ept: &ExtendedTable, start: &Start) {
    if let Err(reason) = run_vcpu(partition, ept, start) {
        log::error!("partition {}: {reason}", partition.name);
        // The exit handler may have stopped it already, with its own reason.
        if !partition.is_stopped() {
            partition.stop(StopReason::Fault(reason), &mut GuestConsole);
        }
    }
}

/// Allocates, clears, loads and fills the partition's VMCS; returns the
/// EPTP it holds.
fn set_up_vmcs(
    capabilities: &VmxCapabilities,
    ept: &ExtendedTable,
    start: &Start,
) -> Result<u64, String> {
    let controls = VmxControls::for_partition(capabilities).map_err(|e| format!("VMX controls: {e}"))?;
    let io = io_bitmaps(start);
    let vmx = PartitionVmx {
        ept_pml4: ept.root_address(),
        vpid: VPID,
        io_bitmap_a: frames_holding(&io.a.0, "I/O bitmap A")?,
        io_bitmap_b: frames_holding(&io.b.0, "I/O bitmap B")?,
        msr_bitmap: frames_holding(&msr_bitmap().0.0, "MSR bitmap")?,
    };
    let vmcs = alloc_frames(PAGE_SIZE_4KIB, PAGE_SIZE_4KIB).ok_or("no memory for the VMCS")?.raw();
    enable::check_region(capabilities.basic, vmcs).map_err(|e| format!("VMCS at {vmcs:#x}: {e:?}"))?;
    // SAFETY: the page was just allocated (zeroed, aligned, identity-mapped)
    // and is this vCPU's VMCS for good; bits 30:0 of its first word take the
    // revision identifier, bit 31 (shadow VMCS) stays 0 (§25.2).
    unsafe { (vmcs as *mut u32).write_volatile(capabilities.basic.revision_id()) };
    // SAFETY: VMX is on for this CPU (enable_vmx ran on it); the page is
    // the VMCS prepared above. VMCLEAR sets its launch state to clear, as
    // VMLAUNCH needs (§25.11.3).
    unsafe { cpu::vmclear(vmcs) }.map_err(|e| format!("VMCLEAR: {e}"))?;
    // SAFETY: as above; the VMCS becomes this CPU's current one.
    unsafe { cpu::vmptrld(vmcs) }.map_err(|e| format!("VMPTRLD: {e}"))?;
    let (tr, tr_base) = host_tr();
    let host = cpu::current_host_state(tr, tr_base);
    let guest = GuestEntry {
        rip: start.rip,
        rsp: start.rsp,
        cr3: start.cr3,
        cr0: CR0_ET | CR0_NE,
        cr4: 0,
        efer: 0,
        pat: DEFAULT_PAT,
        gdtr: (0, 0),
        idtr: (0, 0),
    };
    let plan = VmcsWrites::for_64bit_guest(capabilities, &controls, &vmx, &guest, &host)
        .map_err(|e| format!("VMCS set-up refused: {e:?}"))?;
    for &(field, value) in plan.writes() {
        // SAFETY: the VMCS is current; the plan's EPT maps only the
        // partition's memory and its bitmaps pass only its own ports and the
        // guest-state MSRs; the host state is this CPU's.
        unsafe { cpu::vmwrite(field, value) }.map_err(|e| format!("VMWRITE {field:?} = {value:#x}: {e}"))?;
    }
    Ok(ept::eptp(vmx.ept_pml4, false))
}

fn run_vcpu(partition: &mut Partition, ept: &ExtendedTable, start: &Start) -> Result<(), String> {
    let capabilities = capabilities()?;
    let eptp = set_up_vmcs(&capabilities, ept, start)?;
    if let Some(kind) = cpu::ept_vpid_capabilities(&capabilities).and_then(InveptType::best) {
        // SAFETY: VMX is on; the CPU reports this INVEPT type.
        unsafe { cpu::invept(kind, eptp) }.map_err(|e| format!("INVEPT: {e}"))?;
    }
    log::info!(
        "partition {}: entering the guest under VMX at RIP {:#x} (RSP {:#x}, CR3 {:#x}, EPTP {eptp:#x}, VPID {VPID}, {} I/O port range(s) passed through)",
        partition.name,
        start.rip,
        start.rsp,
        start.cr3,
        start.io_ports.len()
    );
    // SAFETY: OVMF identity-maps the local APIC's page uncached.
    let apic = unsafe { LocalApic::current() };
    let mut registers = GuestRegisters::default();
    let mut state = ExitState::new(start.on_fault, start.verdict.clone());
    state.polls_dma_faults = start.pci_functions > 0;
    // `state.intx` stays `None`: INTx lines are not activated under VMX.
    // Its exits acknowledge the interrupt (ACKNOWLEDGE_INTERRUPT_ON_EXIT),
    // so the vector would come from the exit's interruption information,
    // not from the host window `super::intx` opens under SVM; until that
    // path exists (and a VMX machine to test it), the lines stay masked.
    let mut launched = false;
    loop {
        // SAFETY: VMX is on for this CPU, the partition's VMCS is current and
        // was filled by `set_up_vmcs` (EPT of the partition's memory only,
        // bitmaps passing only its ports and guest-state MSRs, this CPU's
        // host state); interrupts are masked.
        unsafe { cpu::enter(&mut registers, launched) }.map_err(|e| {
            format!("{} failed: {e}", if launched { "VMRESUME" } else { "VMLAUNCH" })
        })?;
        launched = true;
        let info = read_exit_info()?;
        let field = ExitReasonField::decode(info.reason);
        if field.basic == ExitReason::ExternalInterrupt && event::is_valid(info.interruption) {
            // Acknowledged on exit: retire it, the host has no handler.
            apic.eoi();
        }
        let exit = translate::translate(&info);
        let mut guest_cpu = VmxCpu { registers: &mut registers, ept, reason: info.reason, error: Cell::new(None) };
        let next = exits::handle(partition, &mut guest_cpu, &mut state, exit);
        if let Some(error) = guest_cpu.error.get() {
            return Err(format!("VMREAD/VMWRITE failed while handling an exit: {error}"));
        }
        if next == Next::Stop {
            break;
        }
        if event::is_valid(info.idt_vectoring) {
            // VM exits clear the entry field's valid bit (§25.8.3): if it is
            // set now, the handler injected an event of its own.
            let pending = guest_cpu.read(VmcsField::VmEntryInterruptionInformation) as u32;
            if !event::is_valid(pending) {
                let error_code = guest_cpu.read(VmcsField::IdtVectoringErrorCode) as u32;
                let length = guest_cpu.read(VmcsField::VmExitInstructionLength) as u32;
                if let Some(event) = EntryEvent::from_idt_vectoring(info.idt_vectoring, error_code, length) {
                    inject(&guest_cpu, event);
                }
            }
            if let Some(error) = guest_cpu.error.get() {
                return Err(format!("VMREAD/VMWRITE failed while re-injecting an event: {error}"));
            }
        }
    }
    log::info!("partition {}: stopped after {} VM exits", partition.name, state.exits);
    Ok(())
}
