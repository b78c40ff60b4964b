//! The SVM instructions and MSRs the hypervisor executes: turning SVM on
//! (EFER.SVME, VM_HSAVE_PA) and entering a guest with VMRUN.
//!
//! VMRUN loads and #VMEXIT saves only the guest state the VMCB holds (RAX,
//! RSP, RIP, RFLAGS, control and segment registers; AMD APM Vol. 2
//! §15.5.1, §15.6). The other general-purpose registers pass through the
//! CPU unchanged, so [`vmrun`] swaps them with a [`GuestRegisters`] block.
//! FS, GS, TR, LDTR, KernelGSBase and the SYSCALL/SYSENTER MSRs are
//! VMLOAD/VMSAVE state (§15.5.2): [`vmrun`] loads the guest's from its VMCB
//! and, after the exit, saves them there and reloads the host's from a page
//! [`vmsave`] filled. The host needs its own TR back: its TSS holds the IST
//! stacks of #DF, NMI and #MC, and a TR the guest loaded would make the CPU
//! take those stack pointers from wherever the guest said.

use core::arch::asm;

/// EFER (AMD APM Vol. 2 §3.1.7).
pub const MSR_EFER: u32 = 0xc000_0080;
/// EFER.NXE: no-execute in page tables (also needed by NPT leaves with NX).
pub const EFER_NXE: u64 = 1 << 11;
/// EFER.SVME: SVM instructions enabled.
pub const EFER_SVME: u64 = 1 << 12;
/// VM_CR (§15.30.1): bit 4 SVMDIS, set when firmware disabled SVM.
pub const MSR_VM_CR: u32 = 0xc001_0114;
/// VM_CR.SVMDIS.
pub const VM_CR_SVMDIS: u64 = 1 << 4;
/// VM_HSAVE_PA (§15.30.4): where VMRUN saves the host state.
pub const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
/// IA32_PAT: the host PAT nested-page leaves index into.
pub const MSR_PAT: u32 = 0x277;

/// Reads an MSR.
///
/// # Safety
/// The MSR must exist (a missing one raises #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller vouches for the MSR; reading has no side effect
    // on the MSRs used here.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags)) };
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes an MSR.
///
/// # Safety
/// The MSR must exist and the value must keep the machine consistent.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller vouches for the MSR and the value.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// CPUID leaf `leaf`, subleaf `subleaf`: `[eax, ebx, ecx, edx]`.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Why SVM could not be turned on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvmUnavailable {
    /// CPUID 0x8000_0001 ECX bit 2 (SVM) is clear.
    NotSupported,
    /// VM_CR.SVMDIS: firmware locked SVM off.
    DisabledByFirmware,
    /// CPUID 0x8000_000A EDX bit 0 (nested paging) is clear.
    NoNestedPaging,
}

/// Turns SVM on for this CPU: checks CPUID and VM_CR, sets EFER.SVME (and
/// EFER.NXE, which nested-page NX bits need), points VM_HSAVE_PA at
/// `host_save_pa` and sets the host PAT to `host_pat`.
///
/// # Errors
/// [`SvmUnavailable`] when the CPU cannot run guests with nested paging.
///
/// # Safety
/// `host_save_pa` must be a 4 KiB-aligned, hypervisor-owned page that
/// stays reserved for this CPU's VMRUN host-save area; `host_pat` must
/// keep the memory types of the mappings the hypervisor runs on.
pub unsafe fn enable(host_save_pa: u64, host_pat: u64) -> Result<(), SvmUnavailable> {
    if cpuid(0x8000_0001, 0)[2] & (1 << 2) == 0 {
        return Err(SvmUnavailable::NotSupported);
    }
    if cpuid(0x8000_0000, 0)[0] < 0x8000_000a || cpuid(0x8000_000a, 0)[3] & 1 == 0 {
        return Err(SvmUnavailable::NoNestedPaging);
    }
    // SAFETY: VM_CR, EFER, VM_HSAVE_PA and PAT exist on every CPU with SVM
    // (checked above); the caller vouches for the host-save page and PAT.
    unsafe {
        if rdmsr(MSR_VM_CR) & VM_CR_SVMDIS != 0 {
            return Err(SvmUnavailable::DisabledByFirmware);
        }
        wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SVME | EFER_NXE);
        wrmsr(MSR_VM_HSAVE_PA, host_save_pa);
        wrmsr(MSR_PAT, host_pat);
    }
    Ok(())
}

/// The guest's general-purpose registers that the VMCB does not hold (RAX
/// and RSP are in its state-save area). The order is fixed: [`vmrun`]
/// addresses the fields by offset.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestRegisters {
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// RBP.
    pub rbp: u64,
    /// R8.
    pub r8: u64,
    /// R9.
    pub r9: u64,
    /// R10.
    pub r10: u64,
    /// R11.
    pub r11: u64,
    /// R12.
    pub r12: u64,
    /// R13.
    pub r13: u64,
    /// R14.
    pub r14: u64,
    /// R15.
    pub r15: u64,
}

/// Saves this CPU's VMLOAD/VMSAVE state (FS, GS, TR, LDTR and the MSRs
/// listed in the module documentation) into the 4 KiB page at `pa`, for
/// [`vmrun`] to restore after each guest.
///
/// # Safety
/// SVM must be enabled ([`enable`]) on this CPU; `pa` must be a 4 KiB-aligned,
/// identity-mapped page reserved for this CPU. Call after this CPU loaded
/// the TR and segments it keeps.
pub unsafe fn vmsave(pa: u64) {
    // SAFETY: the caller vouches for SVM and the page; VMSAVE writes only it.
    unsafe { asm!("vmsave rax", in("rax") pa, options(nostack, preserves_flags)) };
}

/// Runs the guest of the VMCB at host-physical `vmcb_pa` until its next
/// #VMEXIT, with `registers` loaded into the CPU before and saved back
/// after. Global interrupts are masked (CLGI) around the world switch and
/// unmasked (STGI) after it, so an interrupt or NMI that caused the exit is
/// taken on the host side only when the host allows it, and only once the
/// host's own TR, FS and GS are back (VMLOAD of `host_state_pa`).
///
/// # Safety
/// SVM must be enabled ([`enable`]) on this CPU; `vmcb_pa` must be the
/// identity-mapped, 4 KiB-aligned address of a VMCB that passes VMRUN's
/// consistency checks or fails them cleanly (exit code -1), whose nested
/// page table maps only memory the partition owns, and whose permission
/// maps intercept everything the host must keep; `host_state_pa` must be
/// this CPU's page filled by [`vmsave`].
pub unsafe fn vmrun(vmcb_pa: u64, host_state_pa: u64, registers: &mut GuestRegisters) {
    let registers: *mut GuestRegisters = registers;
    // SAFETY: the caller vouches for the VMCB and the host-state page. RBX
    // and RBP cannot be named as operands, so they are saved on the stack;
    // the host-state page's and the block's addresses are kept there too
    // while the guest's registers occupy RDX and RCX. #VMEXIT restores RAX
    // (the VMCB address), RSP and RIP from the host-save area.
    unsafe {
        asm!(
            "push rbp",
            "push rbx",
            "push rdx",
            "push rcx",
            "mov rbx, [rcx + 0]",
            "mov rdx, [rcx + 16]",
            "mov rsi, [rcx + 24]",
            "mov rdi, [rcx + 32]",
            "mov rbp, [rcx + 40]",
            "mov r8, [rcx + 48]",
            "mov r9, [rcx + 56]",
            "mov r10, [rcx + 64]",
            "mov r11, [rcx + 72]",
            "mov r12, [rcx + 80]",
            "mov r13, [rcx + 88]",
            "mov r14, [rcx + 96]",
            "mov r15, [rcx + 104]",
            "mov rcx, [rcx + 8]",
            "clgi",
            "vmload rax",
            "vmrun rax",
            "vmsave rax",
            "push rcx",
            "mov rcx, [rsp + 8]",
            "mov [rcx + 0], rbx",
            "mov [rcx + 16], rdx",
            "mov [rcx + 24], rsi",
            "mov [rcx + 32], rdi",
            "mov [rcx + 40], rbp",
            "mov [rcx + 48], r8",
            "mov [rcx + 56], r9",
            "mov [rcx + 64], r10",
            "mov [rcx + 72], r11",
            "mov [rcx + 80], r12",
            "mov [rcx + 88], r13",
            "mov [rcx + 96], r14",
            "mov [rcx + 104], r15",
            "pop rax",
            "mov [rcx + 8], rax",
            "add rsp, 8",
            "pop rax",
            "vmload rax",
            "pop rbx",
            "pop rbp",
            "stgi",
            inout("rax") vmcb_pa => _,
            inout("rcx") registers => _,
            inout("rdx") host_state_pa => _,
            out("rsi") _, out("rdi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
        );
    }
}
