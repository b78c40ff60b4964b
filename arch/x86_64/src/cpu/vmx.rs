//! The VMX instructions the hypervisor executes: turning VMX on (VMXON),
//! VMCS handling (VMCLEAR, VMPTRLD, VMREAD, VMWRITE), INVEPT, and the world
//! switch (VMLAUNCH/VMRESUME to the VM exit at the host RIP).
//!
//! This is the only module with VMX instructions; what they are fed is
//! computed by the host-tested [`crate::vmx`] modules. QEMU TCG does not
//! emulate VMX (DESIGN.md §6): nothing here has executed yet. Written to
//! the Intel SDM Vol. 3C (2023+ numbering, see [`crate::vmx`]); chapter 31
//! is the VMX instruction reference.
//!
//! A VM exit loads RSP, RIP, RFLAGS (cleared but bit 1), control and
//! segment registers, EFER and PAT from the VMCS host-state area (§28.5).
//! The other general-purpose registers — RAX included, unlike SVM — keep the
//! guest's values, so [`enter`] swaps all of them with a
//! [`GuestRegisters`] block. CR2, DR0-DR3/DR6, XCR0 and the SYSCALL MSRs
//! are not switched: the host does not use them (no page faults expected,
//! no debugging, no SSE in the soft-float image, no SYSCALL), and each CPU
//! runs one partition, so the guest keeps its own values there.

use super::svm::{cpuid, rdmsr, wrmsr};
use crate::guest_msr;
use crate::vmx::capabilities::VmxCapabilities;
use crate::vmx::controls::{ControlKind, SecondaryControls, VmxBasic};
use crate::vmx::enable::{
    self, EptVpidCapabilities, FeatureControl, InveptType, MSR_EPT_VPID_CAP, MSR_FEATURE_CONTROL, RegionError,
};
use crate::vmx::guest::HostState;
use crate::vmx::status::{self, InstructionError, Outcome, VmxError};
use crate::vmx::vmcs::{FixedBits, VmcsField};
use core::arch::asm;
use core::mem::offset_of;

/// CPUID leaf 1 ECX bit 5: VMX.
const CPUID_1_ECX_VMX: u32 = 1 << 5;
/// Primary processor-based allowed-1 bit 63 (control bit 31): the secondary
/// controls, and IA32_VMX_PROCBASED_CTLS2, exist (Appendix A.3.2).
const ACTIVATE_SECONDARY_ALLOWED: u64 = 1 << 63;

/// Whether CPUID says this CPU has VMX. Without it the VMX capability MSRs
/// do not exist (RDMSR raises #GP).
pub fn vmx_supported() -> bool {
    cpuid(1, 0)[2] & CPUID_1_ECX_VMX != 0
}

/// The VMX capability MSRs of this CPU (Appendix A), or `None` without
/// VMX.
pub fn capabilities() -> Option<VmxCapabilities> {
    if !vmx_supported() {
        return None;
    }
    // SAFETY: CPUID.1:ECX.VMX is set, so IA32_VMX_BASIC and the MSRs it
    // names exist (Appendix A.1); the secondary MSR is read only when the
    // primary allowed-1 bit 63 says it exists (A.3.3). Reading has no side
    // effect.
    unsafe {
        let basic = VmxBasic(rdmsr(VmxBasic::MSR));
        let primary = rdmsr(ControlKind::PrimaryProcessorBased.capability_msr(basic));
        let secondary = if primary & ACTIVATE_SECONDARY_ALLOWED != 0 {
            rdmsr(ControlKind::SecondaryProcessorBased.capability_msr(basic))
        } else {
            0
        };
        let fixed = |msr: u32| FixedBits { fixed0: rdmsr(msr), fixed1: rdmsr(msr + 1) };
        Some(VmxCapabilities {
            basic,
            pin_based: rdmsr(ControlKind::PinBased.capability_msr(basic)),
            primary,
            secondary,
            exit: rdmsr(ControlKind::Exit.capability_msr(basic)),
            entry: rdmsr(ControlKind::Entry.capability_msr(basic)),
            cr0: fixed(FixedBits::CR0_FIXED0_MSR),
            cr4: fixed(FixedBits::CR4_FIXED0_MSR),
        })
    }
}

/// IA32_VMX_EPT_VPID_CAP, or `None` when it does not exist (it does only
/// if the secondary controls allow EPT or VPID, Appendix A.10).
pub fn ept_vpid_capabilities(capabilities: &VmxCapabilities) -> Option<EptVpidCapabilities> {
    if !capabilities.allows_secondary(SecondaryControls::ENABLE_EPT)
        && !capabilities.allows_secondary(SecondaryControls::ENABLE_VPID)
    {
        return None;
    }
    // SAFETY: the MSR exists (checked above); reading has no side effect.
    Some(EptVpidCapabilities(unsafe { rdmsr(MSR_EPT_VPID_CAP) }))
}

/// Why VMX could not be turned on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxUnavailable {
    /// CPUID.1:ECX.VMX is clear.
    NotSupported,
    /// IA32_FEATURE_CONTROL is locked with VMX outside SMX disabled.
    DisabledByFirmware,
    /// The VMXON region cannot be used on this CPU.
    Region(RegionError),
    /// VMXON failed.
    Vmxon(VmxError),
}

impl core::fmt::Display for VmxUnavailable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VmxUnavailable::NotSupported => f.write_str("CPUID.1:ECX.VMX is clear"),
            VmxUnavailable::DisabledByFirmware => {
                f.write_str("IA32_FEATURE_CONTROL is locked with VMX outside SMX disabled (firmware setting)")
            }
            VmxUnavailable::Region(error) => write!(f, "the VMXON region cannot be used: {error:?}"),
            VmxUnavailable::Vmxon(error) => write!(f, "VMXON failed: {error}"),
        }
    }
}

/// Turns VMX on for this CPU (SDM §24.7): sets and locks
/// IA32_FEATURE_CONTROL if firmware left it unlocked, applies the CR0/CR4
/// fixed bits (CR4.VMXE included), writes the revision identifier into the
/// VMXON region at `vmxon_region` and executes VMXON.
///
/// # Errors
/// [`VmxUnavailable`] naming why the CPU cannot enter VMX operation.
///
/// # Safety
/// `vmxon_region` must be an identity-mapped, zeroed, 4 KiB-aligned page
/// of write-back RAM reserved for this CPU's VMXON region for good (the
/// CPU may use it until VMXOFF; software must not touch it after VMXON).
/// Call once per CPU, at CPL 0 with interrupts masked; `capabilities` must
/// be this CPU's ([`capabilities`]).
pub unsafe fn enable(vmxon_region: u64, capabilities: &VmxCapabilities) -> Result<(), VmxUnavailable> {
    if !vmx_supported() {
        return Err(VmxUnavailable::NotSupported);
    }
    enable::check_region(capabilities.basic, vmxon_region).map_err(VmxUnavailable::Region)?;
    // SAFETY: IA32_FEATURE_CONTROL exists on every CPU with VMX; writing it
    // while unlocked only enables VMX outside SMX and locks it, as firmware
    // does (§24.7).
    unsafe {
        match FeatureControl::decide(rdmsr(MSR_FEATURE_CONTROL)) {
            FeatureControl::Ready => {}
            FeatureControl::LockWith(value) => wrmsr(MSR_FEATURE_CONTROL, value),
            FeatureControl::DisabledByFirmware => return Err(VmxUnavailable::DisabledByFirmware),
        }
    }
    // SAFETY: the new values only add bits VMX operation requires (in
    // long mode PE and PG are already set; NE and VMXE change nothing the
    // hypervisor relies on) and clear bits it forbids, which a running
    // 64-bit host does not use.
    unsafe {
        write_cr0(enable::vmxon_cr0(read_cr0(), capabilities.cr0));
        write_cr4(enable::vmxon_cr4(read_cr4(), capabilities.cr4));
    }
    // SAFETY: the caller gives us the page; bits 30:0 of its first word take
    // the revision identifier, bit 31 stays 0 (§25.11.5).
    unsafe { (vmxon_region as *mut u32).write_volatile(capabilities.basic.revision_id()) };
    let rflags: u64;
    // SAFETY: CR4.VMXE is set, IA32_FEATURE_CONTROL allows VMXON, CR0/CR4
    // satisfy the fixed bits and the region is the caller's reserved page;
    // VMXON reads the 64-bit physical address from memory.
    unsafe {
        asm!(
            "vmxon [{pa}]",
            "pushfq",
            "pop {rflags}",
            pa = in(reg) &vmxon_region,
            rflags = lateout(reg) rflags,
        );
    }
    check(rflags).map_err(VmxUnavailable::Vmxon)
}

/// The result of a VMX instruction from the RFLAGS it left.
fn check(rflags: u64) -> Result<(), VmxError> {
    match Outcome::from_rflags(rflags) {
        Outcome::Succeeded => Ok(()),
        Outcome::FailedInvalid => Err(VmxError::FailInvalid),
        Outcome::FailedValid => Err(VmxError::FailValid(instruction_error())),
    }
}

/// The VM-instruction error field of the current VMCS. Only called after
/// VMfailValid, which guarantees a current VMCS (§31.2).
fn instruction_error() -> InstructionError {
    let value: u64;
    let rflags: u64;
    // SAFETY: VMfailValid means this CPU is in VMX root operation with a
    // current VMCS; VMREAD of a read-only field has no side effect.
    unsafe {
        asm!(
            "vmread {value}, {field}",
            "pushfq",
            "pop {rflags}",
            field = in(reg) u64::from(VmcsField::VmInstructionError.encoding()),
            value = lateout(reg) value,
            rflags = lateout(reg) rflags,
            options(nomem),
        );
    }
    match Outcome::from_rflags(rflags) {
        Outcome::Succeeded => InstructionError(value as u32),
        // Cannot happen after VMfailValid; 0 is "no error number".
        Outcome::FailedInvalid | Outcome::FailedValid => InstructionError(0),
    }
}

/// VMCLEAR: makes the VMCS at `vmcs` clear (launch state "clear") and not
/// current, writing any cached data back to memory.
///
/// # Errors
/// [`VmxError`] if the CPU refused (invalid address, VMXON pointer).
///
/// # Safety
/// VMX must be on ([`enable`]); `vmcs` must be a 4 KiB-aligned page of
/// write-back RAM reserved as a VMCS.
pub unsafe fn vmclear(vmcs: u64) -> Result<(), VmxError> {
    let rflags: u64;
    // SAFETY: the caller vouches for VMX operation and the page; VMCLEAR
    // reads the physical address from memory.
    unsafe {
        asm!("vmclear [{pa}]", "pushfq", "pop {rflags}", pa = in(reg) &vmcs, rflags = lateout(reg) rflags);
    }
    check(rflags)
}

/// VMPTRLD: makes the VMCS at `vmcs` the current VMCS of this CPU.
///
/// # Errors
/// [`VmxError`] if the CPU refused (invalid address, wrong revision).
///
/// # Safety
/// As [`vmclear`]; the page's first word must hold the revision identifier.
pub unsafe fn vmptrld(vmcs: u64) -> Result<(), VmxError> {
    let rflags: u64;
    // SAFETY: the caller vouches for VMX operation and the VMCS page.
    unsafe {
        asm!("vmptrld [{pa}]", "pushfq", "pop {rflags}", pa = in(reg) &vmcs, rflags = lateout(reg) rflags);
    }
    check(rflags)
}

/// VMREAD of `field` from the current VMCS.
///
/// # Errors
/// [`VmxError`]: no current VMCS, or a field this CPU does not support.
///
/// # Safety
/// VMX must be on for this CPU (VMREAD outside VMX operation raises #UD).
pub unsafe fn vmread(field: VmcsField) -> Result<u64, VmxError> {
    let value: u64;
    let rflags: u64;
    // SAFETY: in VMX root operation (caller's contract) VMREAD only reads
    // the current VMCS or fails with a flag.
    unsafe {
        asm!(
            "vmread {value}, {field}",
            "pushfq",
            "pop {rflags}",
            field = in(reg) u64::from(field.encoding()),
            value = lateout(reg) value,
            rflags = lateout(reg) rflags,
            options(nomem),
        );
    }
    check(rflags).map(|()| value & field.value_mask())
}

/// VMWRITE of `value` to `field` of the current VMCS.
///
/// # Errors
/// [`VmxError`]: no current VMCS, an unsupported or read-only field.
///
/// # Safety
/// VMX must be on for this CPU, and the value must keep the current VMCS
/// safe to enter: it decides what the guest may reach (EPT pointer,
/// bitmaps) and where the host resumes (host-state fields).
pub unsafe fn vmwrite(field: VmcsField, value: u64) -> Result<(), VmxError> {
    let rflags: u64;
    // SAFETY: the caller vouches for VMX operation and the value.
    unsafe {
        asm!(
            "vmwrite {field}, {value}",
            "pushfq",
            "pop {rflags}",
            field = in(reg) u64::from(field.encoding()),
            value = in(reg) value,
            rflags = lateout(reg) rflags,
            options(nomem),
        );
    }
    check(rflags)
}

/// INVEPT of type `kind` for `eptp` (§31.3): drops the translations this
/// CPU cached from that EPT (single context) or from every EPT.
///
/// # Errors
/// [`VmxError`]: an INVEPT type this CPU does not support (error 28).
///
/// # Safety
/// VMX must be on for this CPU, and `kind` must be one the CPU reports
/// ([`InveptType::best`]); otherwise INVEPT raises #UD or #GP.
pub unsafe fn invept(kind: InveptType, eptp: u64) -> Result<(), VmxError> {
    // The 128-bit INVEPT descriptor: the EPTP, then 64 reserved zero bits.
    let descriptor: [u64; 2] = [eptp, 0];
    let rflags: u64;
    // SAFETY: the caller vouches for VMX operation and the type; INVEPT
    // only reads the descriptor and flushes TLB entries.
    unsafe {
        asm!(
            "invept {kind}, [{descriptor}]",
            "pushfq",
            "pop {rflags}",
            kind = in(reg) kind as u64,
            descriptor = in(reg) &descriptor,
            rflags = lateout(reg) rflags,
        );
    }
    check(rflags)
}

/// The guest's general-purpose registers, all of them but RSP (which the
/// VMCS holds). [`enter`] addresses the fields by their offsets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)] // Fields are the registers they are named after.
pub struct GuestRegisters {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

/// Runs the guest of the current VMCS until its next VM exit, with
/// `registers` loaded before and saved back after. VMLAUNCH if `launched`
/// is false (the VMCS is clear), VMRESUME otherwise (§31.3).
///
/// HOST_RSP and HOST_RIP are written here, on every entry: HOST_RSP is this
/// function's stack pointer at the entry (with the register block's address
/// on top), HOST_RIP the VM-exit label inside it, so the exit lands back in
/// this function as if VMLAUNCH/VMRESUME had returned.
///
/// # Errors
/// [`VmxError`] when VMLAUNCH/VMRESUME (or one of the two VMWRITEs) fails
/// and falls through: VMfailValid carries the error number, e.g. 7/8 for
/// invalid control or host-state fields. A VM entry that fails *after*
/// loading guest state (§27.8) is a VM exit with bit 31 of the exit reason
/// set, and returns `Ok` like any other exit.
///
/// # Safety
/// VMX must be on for this CPU with a current VMCS whose host state is this
/// CPU's (CR3, GDT, IDT, selectors: see [`current_host_state`]), whose EPT
/// maps only memory the partition owns and whose bitmaps intercept
/// everything the host must keep. Interrupts must be masked (RFLAGS.IF is
/// 0 after the exit, §28.5.3).
pub unsafe fn enter(registers: &mut GuestRegisters, launched: bool) -> Result<(), VmxError> {
    let registers: *mut GuestRegisters = registers;
    let word: u64;
    // SAFETY: the caller vouches for the VMCS. RBX and RBP cannot be named
    // as operands, so they are saved on the stack with the block's address
    // on top; HOST_RSP points there. `test` sets ZF before the guest
    // registers are loaded (MOV leaves flags alone), choosing VMRESUME or
    // VMLAUNCH. A failed VMWRITE/VMLAUNCH/VMRESUME falls through to label
    // 3 with CF or ZF set and returns RFLAGS; the VM exit lands on label 2
    // with every GPR but RSP holding the guest's value, saves them into the
    // block and returns 0.
    unsafe {
        asm!(
            "push rbp",
            "push rbx",
            "push rcx",
            "mov rbx, {host_rsp_field}",
            "vmwrite rbx, rsp",
            "jbe 3f",
            "lea rax, [rip + 2f]",
            "mov rbx, {host_rip_field}",
            "vmwrite rbx, rax",
            "jbe 3f",
            "test edx, edx",
            "mov rax, [rcx + {o_rax}]",
            "mov rbx, [rcx + {o_rbx}]",
            "mov rdx, [rcx + {o_rdx}]",
            "mov rsi, [rcx + {o_rsi}]",
            "mov rdi, [rcx + {o_rdi}]",
            "mov rbp, [rcx + {o_rbp}]",
            "mov r8, [rcx + {o_r8}]",
            "mov r9, [rcx + {o_r9}]",
            "mov r10, [rcx + {o_r10}]",
            "mov r11, [rcx + {o_r11}]",
            "mov r12, [rcx + {o_r12}]",
            "mov r13, [rcx + {o_r13}]",
            "mov r14, [rcx + {o_r14}]",
            "mov r15, [rcx + {o_r15}]",
            "mov rcx, [rcx + {o_rcx}]",
            "jnz 4f",
            "vmlaunch",
            "jmp 3f",
            "4:",
            "vmresume",
            // Fall-through: the entry failed; RFLAGS says how.
            "3:",
            "pushfq",
            "pop rax",
            "add rsp, 8",
            "pop rbx",
            "pop rbp",
            "jmp 5f",
            // VM exit: RSP = HOST_RSP, the block's address at [rsp].
            "2:",
            "push rcx",
            "mov rcx, [rsp + 8]",
            "mov [rcx + {o_rax}], rax",
            "mov [rcx + {o_rbx}], rbx",
            "mov [rcx + {o_rdx}], rdx",
            "mov [rcx + {o_rsi}], rsi",
            "mov [rcx + {o_rdi}], rdi",
            "mov [rcx + {o_rbp}], rbp",
            "mov [rcx + {o_r8}], r8",
            "mov [rcx + {o_r9}], r9",
            "mov [rcx + {o_r10}], r10",
            "mov [rcx + {o_r11}], r11",
            "mov [rcx + {o_r12}], r12",
            "mov [rcx + {o_r13}], r13",
            "mov [rcx + {o_r14}], r14",
            "mov [rcx + {o_r15}], r15",
            "pop rax",
            "mov [rcx + {o_rcx}], rax",
            "add rsp, 8",
            "pop rbx",
            "pop rbp",
            "xor eax, eax",
            "5:",
            host_rsp_field = const VmcsField::HostRsp.encoding(),
            host_rip_field = const VmcsField::HostRip.encoding(),
            o_rax = const offset_of!(GuestRegisters, rax),
            o_rbx = const offset_of!(GuestRegisters, rbx),
            o_rcx = const offset_of!(GuestRegisters, rcx),
            o_rdx = const offset_of!(GuestRegisters, rdx),
            o_rsi = const offset_of!(GuestRegisters, rsi),
            o_rdi = const offset_of!(GuestRegisters, rdi),
            o_rbp = const offset_of!(GuestRegisters, rbp),
            o_r8 = const offset_of!(GuestRegisters, r8),
            o_r9 = const offset_of!(GuestRegisters, r9),
            o_r10 = const offset_of!(GuestRegisters, r10),
            o_r11 = const offset_of!(GuestRegisters, r11),
            o_r12 = const offset_of!(GuestRegisters, r12),
            o_r13 = const offset_of!(GuestRegisters, r13),
            o_r14 = const offset_of!(GuestRegisters, r14),
            o_r15 = const offset_of!(GuestRegisters, r15),
            inout("rcx") registers => _,
            inout("rdx") u64::from(launched) => _,
            out("rax") word,
            out("rsi") _, out("rdi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
        );
    }
    status::entry_result(word, instruction_error)
}

/// Reads CR0.
pub fn read_cr0() -> u64 {
    let value: u64;
    // SAFETY: reading CR0 has no side effect (we run at CPL 0).
    unsafe { asm!("mov {}, cr0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR3.
pub fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effect (we run at CPL 0).
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR4.
pub fn read_cr4() -> u64 {
    let value: u64;
    // SAFETY: reading CR4 has no side effect (we run at CPL 0).
    unsafe { asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR0.
///
/// # Safety
/// The value must keep the running host valid (paging, protection).
unsafe fn write_cr0(value: u64) {
    // SAFETY: the caller vouches for the value.
    unsafe { asm!("mov cr0, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Writes CR4.
///
/// # Safety
/// The value must keep the running host valid (PAE, paging features).
unsafe fn write_cr4(value: u64) {
    // SAFETY: the caller vouches for the value.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// The base of the descriptor table SGDT or SIDT stores.
fn descriptor_table_base(gdt: bool) -> u64 {
    // SGDT/SIDT store a 2-byte limit followed by the 8-byte base.
    let mut pointer = [0u8; 10];
    // SAFETY: SGDT/SIDT only write the 10-byte buffer.
    unsafe {
        if gdt {
            asm!("sgdt [{}]", in(reg) pointer.as_mut_ptr(), options(nostack, preserves_flags));
        } else {
            asm!("sidt [{}]", in(reg) pointer.as_mut_ptr(), options(nostack, preserves_flags));
        }
    }
    let mut base = [0u8; 8];
    base.copy_from_slice(&pointer[2..]);
    u64::from_le_bytes(base)
}

/// The segment selectors this CPU runs with: CS, SS, DS, ES, FS, GS.
fn selectors() -> [u16; 6] {
    let (cs, ss, ds, es, fs, gs): (u16, u16, u16, u16, u16, u16);
    // SAFETY: reading segment registers has no side effect.
    unsafe {
        asm!(
            "mov {cs:x}, cs",
            "mov {ss:x}, ss",
            "mov {ds:x}, ds",
            "mov {es:x}, es",
            "mov {fs:x}, fs",
            "mov {gs:x}, gs",
            cs = out(reg) cs, ss = out(reg) ss, ds = out(reg) ds,
            es = out(reg) es, fs = out(reg) fs, gs = out(reg) gs,
            options(nomem, nostack, preserves_flags),
        );
    }
    [cs, ss, ds, es, fs, gs]
}

/// The host state a VM exit should restore, read from this CPU (§25.5,
/// checked by §27.2.3): its control registers, selectors, FS/GS bases,
/// GDT/IDT bases, EFER and PAT, with TR given by the caller (`tr`
/// selector, `tr_base`) since the hypervisor decides what its TSS is.
/// RIP and RSP are left 0: [`enter`] writes them on every entry.
///
/// Read after [`enable`], which changes CR0/CR4.
pub fn current_host_state(tr: u16, tr_base: u64) -> HostState {
    let [cs, ss, ds, es, fs, gs] = selectors();
    // SAFETY: FS.base, GS.base, EFER and PAT exist on every x86_64 CPU;
    // reading them has no side effect.
    let (fs_base, gs_base, efer, pat) = unsafe {
        (rdmsr(guest_msr::FS_BASE), rdmsr(guest_msr::GS_BASE), rdmsr(guest_msr::EFER), rdmsr(guest_msr::PAT))
    };
    HostState {
        cr0: read_cr0(),
        cr3: read_cr3(),
        cr4: read_cr4(),
        rip: 0,
        rsp: 0,
        cs,
        ss,
        ds,
        es,
        fs,
        gs,
        tr,
        fs_base,
        gs_base,
        tr_base,
        gdtr_base: descriptor_table_base(true),
        idtr_base: descriptor_table_base(false),
        efer,
        pat,
    }
}
