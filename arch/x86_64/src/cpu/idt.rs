//! The hypervisor's own IDT: all 256 vectors lead to one handler.
//!
//! Each vector has a 16-byte stub (`bulkhead_x86_vectors + 16 * n`) that
//! pushes a zero error code where the CPU pushes none, then the vector
//! number, and jumps to a common stub. That one saves the general registers
//! to complete an [`ExceptionFrame`] and calls
//! `bulkhead_x86_exception(&ExceptionFrame)`, which the image defines and
//! which must not return.

use super::gdt::{CODE_SELECTOR, DescriptorTablePointer};
use crate::exception::ExceptionFrame;
use core::cell::UnsafeCell;

const STUB_SIZE: u64 = 16;

core::arch::global_asm!(
    ".pushsection .text.bulkhead_x86_vectors, \"ax\"",
    ".p2align 4",
    ".global bulkhead_x86_vectors",
    "bulkhead_x86_vectors:",
    ".set bulkhead_vector, 0",
    ".rept 256",
    ".p2align 4",
    // Vectors with a CPU-pushed error code: see `has_error_code`.
    ".if (bulkhead_vector - 8) * (bulkhead_vector - 10) * (bulkhead_vector - 11) * (bulkhead_vector - 12) * (bulkhead_vector - 13) * (bulkhead_vector - 14) * (bulkhead_vector - 17) * (bulkhead_vector - 21) * (bulkhead_vector - 29) * (bulkhead_vector - 30)",
    "pushq $0",
    ".endif",
    "pushq $bulkhead_vector",
    "jmp bulkhead_x86_exception_common",
    ".set bulkhead_vector, bulkhead_vector + 1",
    ".endr",
    "bulkhead_x86_exception_common:",
    "pushq %rax",
    "pushq %rbx",
    "pushq %rcx",
    "pushq %rdx",
    "pushq %rsi",
    "pushq %rdi",
    "pushq %rbp",
    "pushq %r8",
    "pushq %r9",
    "pushq %r10",
    "pushq %r11",
    "pushq %r12",
    "pushq %r13",
    "pushq %r14",
    "pushq %r15",
    "movq %rsp, %rdi",
    "andq $-16, %rsp",
    "cld",
    "call {handler}",
    "ud2",
    ".popsection",
    handler = sym bulkhead_x86_exception_trampoline,
    options(att_syntax),
);

unsafe extern "C" {
    /// The first vector stub (see the module documentation).
    static bulkhead_x86_vectors: u8;
}

unsafe extern "Rust" {
    /// The image's handler for every vector; never returns.
    fn bulkhead_x86_exception(frame: &ExceptionFrame) -> !;
}

/// Called by the common stub with the frame's address.
extern "C" fn bulkhead_x86_exception_trampoline(frame: &ExceptionFrame) -> ! {
    // SAFETY: the image defines the handler with this signature; the frame
    // was built on the stack by the stubs and lives until it returns (never).
    unsafe { bulkhead_x86_exception(frame) }
}

/// One interrupt-gate descriptor (Intel SDM vol. 3A §6.14.1).
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const ABSENT: Gate =
        Gate { offset_low: 0, selector: 0, ist: 0, type_attributes: 0, offset_middle: 0, offset_high: 0, reserved: 0 };

    /// A present, DPL 0, 64-bit interrupt gate (type 0xe: interrupts stay
    /// masked in the handler) to `handler`.
    fn interrupt(handler: u64) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: CODE_SELECTOR,
            ist: 0,
            type_attributes: 0x8e,
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[Gate; 256]>);

// SAFETY: written once by `load` on the boot CPU before any other CPU runs
// and before interrupts are enabled; read only by the CPU afterwards.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([Gate::ABSENT; 256]));

/// Fills the IDT with the vector stubs and loads it.
///
/// # Safety
/// Call once, at CPL 0 with interrupts disabled, after [`super::gdt::load`].
pub unsafe fn load() {
    let stubs = core::ptr::addr_of!(bulkhead_x86_vectors) as u64;
    // SAFETY: nothing else touches the table yet (caller's contract).
    let gates = unsafe { &mut *IDT.0.get() };
    for (vector, gate) in gates.iter_mut().enumerate() {
        *gate = Gate::interrupt(stubs + STUB_SIZE * vector as u64);
    }
    let pointer = DescriptorTablePointer { limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16, base: gates.as_ptr() as u64 };
    // SAFETY: the table is static and every gate points at a stub.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags)) };
}

/// Loads the IDT [`load`] filled on the boot CPU into this CPU.
///
/// # Safety
/// [`load`] must have run (on the boot CPU); call at CPL 0 with interrupts
/// disabled.
pub unsafe fn reload() {
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the table is static and was filled by `load`.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags)) };
}
