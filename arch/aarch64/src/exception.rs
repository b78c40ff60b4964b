//! EL2 exception vectors, guest entry and guest exits.
//!
//! A physical CPU runs one vCPU at a time. [`enter_guest`] saves the
//! hypervisor's callee-saved registers on its own stack, loads the guest's
//! general-purpose and FP/SIMD registers from a [`VcpuContext`] and `ERET`s.
//! Any exception from EL1/EL0 lands in the lower-EL vectors, which store the
//! guest registers back into the context (found through `TPIDR_EL2`),
//! restore the hypervisor stack and return from `enter_guest` with the
//! [`ExitKind`]. Guest EL1 system registers are never touched on this path:
//! they stay resident on the CPU the partition owns.
//!
//! Exceptions taken at EL2 itself are never expected. Their vectors save
//! every register into an [`ExceptionFrame`] on the current stack and call
//! `bulkhead_unexpected_exception(frame, kind)`, which the image defines and
//! which must not return.

use core::mem::offset_of;

/// Why the guest stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// A synchronous exception (hypercall, trapped instruction, abort).
    Sync,
    /// A physical IRQ arrived while the guest ran.
    Irq,
    /// A physical FIQ arrived while the guest ran.
    Fiq,
    /// An SError (asynchronous external abort).
    SError,
    /// An exception from AArch32 code, which Bulkhead guests may not run.
    Aarch32,
}

impl ExitKind {
    /// Decodes the value the vectors pass back.
    pub const fn from_code(code: u64) -> ExitKind {
        match code {
            0 => ExitKind::Sync,
            1 => ExitKind::Irq,
            2 => ExitKind::Fiq,
            3 => ExitKind::SError,
            _ => ExitKind::Aarch32,
        }
    }
}

/// A vCPU's register state that changes on every entry and exit.
#[derive(Clone, Debug)]
#[repr(C, align(16))]
pub struct VcpuContext {
    /// `x0`..`x30`.
    pub x: [u64; 31],
    /// Padding so that the following fields stay 16-byte aligned.
    _pad: u64,
    /// The guest PC: where the next `ERET` resumes (`ELR_EL2`).
    pub elr: u64,
    /// The guest PSTATE (`SPSR_EL2`).
    pub spsr: u64,
    /// The hypervisor's stack pointer while this vCPU runs.
    host_sp: u64,
    /// `FPSR`.
    pub fpsr: u64,
    /// `FPCR`.
    pub fpcr: u64,
    /// Padding, keeps `v` 16-byte aligned.
    _pad2: u64,
    /// `q0`..`q31`.
    pub v: [u128; 32],
}

impl VcpuContext {
    /// A context that enters at `entry` in EL1h with all interrupts masked and
    /// `x0` = `arg`.
    pub const fn new(entry: u64, arg: u64) -> VcpuContext {
        let mut x = [0; 31];
        x[0] = arg;
        VcpuContext { x, _pad: 0, elr: entry, spsr: SPSR_EL1H_MASKED, host_sp: 0, fpsr: 0, fpcr: 0, _pad2: 0, v: [0; 32] }
    }
}

/// `SPSR_EL2` for entering EL1 using `SP_EL1` (M = 0b0101) with D, A, I and F masked.
pub const SPSR_EL1H_MASKED: u64 = 0x3c5;

/// Registers saved when the hypervisor itself takes an exception.
#[derive(Clone, Debug)]
#[repr(C)]
pub struct ExceptionFrame {
    /// `x0`..`x30`.
    pub x: [u64; 31],
    /// The stack pointer before the exception.
    pub sp: u64,
    /// `ELR_EL2`.
    pub elr: u64,
    /// `SPSR_EL2`.
    pub spsr: u64,
    /// `ESR_EL2`.
    pub esr: u64,
    /// `FAR_EL2`.
    pub far: u64,
    /// `HPFAR_EL2`.
    pub hpfar: u64,
    /// Padding to a 16-byte multiple.
    _pad: u64,
}

const _: () = assert!(core::mem::size_of::<ExceptionFrame>().is_multiple_of(16));
const _: () = assert!(offset_of!(VcpuContext, v).is_multiple_of(16));

/// Where an exception at EL2 came from, as passed to the unexpected-exception handler.
pub const UNEXPECTED_KIND_NAMES: [&str; 4] = ["synchronous", "IRQ", "FIQ", "SError"];

/// Runs the guest described by `context` until it exits.
///
/// # Safety
/// The caller must have configured EL2 for running a guest (`HCR_EL2`,
/// stage 2 and `VTTBR_EL2` pointing at tables that only map memory the guest
/// may use), and `context` must stay valid and unaliased for the call.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub unsafe fn enter_guest(context: &mut VcpuContext) -> ExitKind {
    // SAFETY: the assembly below saves and restores every callee-saved
    // register around the guest's run, and the caller vouches for the rest.
    let code = unsafe { bulkhead_enter_guest(context) };
    ExitKind::from_code(code)
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
unsafe extern "C" {
    fn bulkhead_enter_guest(context: *mut VcpuContext) -> u64;
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
core::arch::global_asm!(
    // --- enter_guest(x0 = context) -> x0 = exit kind ----------------------
    ".section .text.guest_switch, \"ax\"",
    ".global bulkhead_enter_guest",
    "bulkhead_enter_guest:",
    "    sub  sp, sp, #96",
    "    stp  x19, x20, [sp, #0]",
    "    stp  x21, x22, [sp, #16]",
    "    stp  x23, x24, [sp, #32]",
    "    stp  x25, x26, [sp, #48]",
    "    stp  x27, x28, [sp, #64]",
    "    stp  x29, x30, [sp, #80]",
    "    mov  x1, sp",
    "    str  x1, [x0, #{host_sp}]",
    "    msr  tpidr_el2, x0",
    "    ldp  x1, x2, [x0, #{elr}]",
    "    msr  elr_el2, x1",
    "    msr  spsr_el2, x2",
    "    ldp  x1, x2, [x0, #{fpsr}]",
    "    msr  fpsr, x1",
    "    msr  fpcr, x2",
    "    add  x1, x0, #{v}",
    "    ldp  q0, q1, [x1, #0]",
    "    ldp  q2, q3, [x1, #32]",
    "    ldp  q4, q5, [x1, #64]",
    "    ldp  q6, q7, [x1, #96]",
    "    ldp  q8, q9, [x1, #128]",
    "    ldp  q10, q11, [x1, #160]",
    "    ldp  q12, q13, [x1, #192]",
    "    ldp  q14, q15, [x1, #224]",
    "    ldp  q16, q17, [x1, #256]",
    "    ldp  q18, q19, [x1, #288]",
    "    ldp  q20, q21, [x1, #320]",
    "    ldp  q22, q23, [x1, #352]",
    "    ldp  q24, q25, [x1, #384]",
    "    ldp  q26, q27, [x1, #416]",
    "    ldp  q28, q29, [x1, #448]",
    "    ldp  q30, q31, [x1, #480]",
    "    ldp  x2, x3, [x0, #16]",
    "    ldp  x4, x5, [x0, #32]",
    "    ldp  x6, x7, [x0, #48]",
    "    ldp  x8, x9, [x0, #64]",
    "    ldp  x10, x11, [x0, #80]",
    "    ldp  x12, x13, [x0, #96]",
    "    ldp  x14, x15, [x0, #112]",
    "    ldp  x16, x17, [x0, #128]",
    "    ldp  x18, x19, [x0, #144]",
    "    ldp  x20, x21, [x0, #160]",
    "    ldp  x22, x23, [x0, #176]",
    "    ldp  x24, x25, [x0, #192]",
    "    ldp  x26, x27, [x0, #208]",
    "    ldp  x28, x29, [x0, #224]",
    "    ldr  x30, [x0, #240]",
    "    ldp  x0, x1, [x0, #0]",
    "    eret",

    // --- common guest-exit path: x0 = kind, x1 = context -------------------
    "bulkhead_guest_exit:",
    "    mrs  x2, elr_el2",
    "    mrs  x3, spsr_el2",
    "    stp  x2, x3, [x1, #{elr}]",
    "    mrs  x2, fpsr",
    "    mrs  x3, fpcr",
    "    stp  x2, x3, [x1, #{fpsr}]",
    "    add  x2, x1, #{v}",
    "    stp  q0, q1, [x2, #0]",
    "    stp  q2, q3, [x2, #32]",
    "    stp  q4, q5, [x2, #64]",
    "    stp  q6, q7, [x2, #96]",
    "    stp  q8, q9, [x2, #128]",
    "    stp  q10, q11, [x2, #160]",
    "    stp  q12, q13, [x2, #192]",
    "    stp  q14, q15, [x2, #224]",
    "    stp  q16, q17, [x2, #256]",
    "    stp  q18, q19, [x2, #288]",
    "    stp  q20, q21, [x2, #320]",
    "    stp  q22, q23, [x2, #352]",
    "    stp  q24, q25, [x2, #384]",
    "    stp  q26, q27, [x2, #416]",
    "    stp  q28, q29, [x2, #448]",
    "    stp  q30, q31, [x2, #480]",
    "    ldr  x2, [x1, #{host_sp}]",
    "    mov  sp, x2",
    "    ldp  x19, x20, [sp, #0]",
    "    ldp  x21, x22, [sp, #16]",
    "    ldp  x23, x24, [sp, #32]",
    "    ldp  x25, x26, [sp, #48]",
    "    ldp  x27, x28, [sp, #64]",
    "    ldp  x29, x30, [sp, #80]",
    "    add  sp, sp, #96",
    "    ret",

    // --- the vector table ---------------------------------------------------
    ".macro unexpected kind",
    "    sub  sp, sp, #{frame_size}",
    "    stp  x0, x1, [sp, #0]",
    "    mov  x0, #\\kind",
    "    b    bulkhead_unexpected_common",
    ".endm",
    ".macro guest_exit kind",
    // Free two registers by parking the guest's x0/x1 on the hypervisor
    // stack (SP_EL2, idle while the guest runs).
    "    stp  x0, x1, [sp, #-16]!",
    "    mrs  x0, tpidr_el2",
    "    stp  x2, x3, [x0, #16]",
    "    stp  x4, x5, [x0, #32]",
    "    stp  x6, x7, [x0, #48]",
    "    stp  x8, x9, [x0, #64]",
    "    stp  x10, x11, [x0, #80]",
    "    stp  x12, x13, [x0, #96]",
    "    stp  x14, x15, [x0, #112]",
    "    stp  x16, x17, [x0, #128]",
    "    stp  x18, x19, [x0, #144]",
    "    stp  x20, x21, [x0, #160]",
    "    stp  x22, x23, [x0, #176]",
    "    stp  x24, x25, [x0, #192]",
    "    stp  x26, x27, [x0, #208]",
    "    stp  x28, x29, [x0, #224]",
    "    str  x30, [x0, #240]",
    "    mov  x1, x0",
    "    ldp  x2, x3, [sp], #16",
    "    stp  x2, x3, [x1, #0]",
    "    mov  x0, #\\kind",
    "    b    bulkhead_guest_exit",
    ".endm",

    ".section .text.vectors, \"ax\"",
    ".balign 2048",
    ".global bulkhead_el2_vectors",
    "bulkhead_el2_vectors:",
    // Current EL with SP_EL0.
    ".balign 0x80", "unexpected 0",
    ".balign 0x80", "unexpected 1",
    ".balign 0x80", "unexpected 2",
    ".balign 0x80", "unexpected 3",
    // Current EL with SP_ELx.
    ".balign 0x80", "unexpected 0",
    ".balign 0x80", "unexpected 1",
    ".balign 0x80", "unexpected 2",
    ".balign 0x80", "unexpected 3",
    // Lower EL, AArch64.
    ".balign 0x80", "guest_exit 0",
    ".balign 0x80", "guest_exit 1",
    ".balign 0x80", "guest_exit 2",
    ".balign 0x80", "guest_exit 3",
    // Lower EL, AArch32.
    ".balign 0x80", "guest_exit 4",
    ".balign 0x80", "guest_exit 4",
    ".balign 0x80", "guest_exit 4",
    ".balign 0x80", "guest_exit 4",

    // x0 = kind, guest-free: the frame is on the stack with x0/x1 stored.
    "bulkhead_unexpected_common:",
    "    stp  x2, x3, [sp, #16]",
    "    stp  x4, x5, [sp, #32]",
    "    stp  x6, x7, [sp, #48]",
    "    stp  x8, x9, [sp, #64]",
    "    stp  x10, x11, [sp, #80]",
    "    stp  x12, x13, [sp, #96]",
    "    stp  x14, x15, [sp, #112]",
    "    stp  x16, x17, [sp, #128]",
    "    stp  x18, x19, [sp, #144]",
    "    stp  x20, x21, [sp, #160]",
    "    stp  x22, x23, [sp, #176]",
    "    stp  x24, x25, [sp, #192]",
    "    stp  x26, x27, [sp, #208]",
    "    stp  x28, x29, [sp, #224]",
    "    add  x2, sp, #{frame_size}",
    "    stp  x30, x2, [sp, #240]",
    "    mrs  x2, elr_el2",
    "    mrs  x3, spsr_el2",
    "    stp  x2, x3, [sp, #256]",
    "    mrs  x2, esr_el2",
    "    mrs  x3, far_el2",
    "    stp  x2, x3, [sp, #272]",
    "    mrs  x2, hpfar_el2",
    "    str  x2, [sp, #288]",
    "    mov  x1, x0",
    "    mov  x0, sp",
    "    bl   bulkhead_unexpected_exception",
    "3:  wfe",
    "    b    3b",

    host_sp = const offset_of!(VcpuContext, host_sp),
    elr = const offset_of!(VcpuContext, elr),
    fpsr = const offset_of!(VcpuContext, fpsr),
    v = const offset_of!(VcpuContext, v),
    frame_size = const core::mem::size_of::<ExceptionFrame>(),
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_assembly() {
        assert_eq!(offset_of!(VcpuContext, x), 0);
        assert_eq!(offset_of!(VcpuContext, elr), 256);
        assert_eq!(offset_of!(VcpuContext, spsr), 264);
        assert_eq!(offset_of!(VcpuContext, fpsr) + 8, offset_of!(VcpuContext, fpcr));
        assert_eq!(offset_of!(ExceptionFrame, sp), 248);
        assert_eq!(offset_of!(ExceptionFrame, elr), 256);
        assert_eq!(offset_of!(ExceptionFrame, esr), 272);
        assert_eq!(offset_of!(ExceptionFrame, hpfar), 288);
    }

    #[test]
    fn exit_kinds_decode() {
        assert_eq!(ExitKind::from_code(0), ExitKind::Sync);
        assert_eq!(ExitKind::from_code(3), ExitKind::SError);
        assert_eq!(ExitKind::from_code(4), ExitKind::Aarch32);
    }
}
