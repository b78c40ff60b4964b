//! The hypervisor's own IDT: all 256 vectors lead to one handler.
//!
//! Each vector has a 16-byte stub (`bulkhead_x86_vectors + 16 * n`) that
//! pushes a zero error code where the CPU pushes none, then the vector
//! number, and jumps to a common stub. That one saves the general registers
//! to complete an [`ExceptionFrame`] and calls
//! `bulkhead_x86_exception(&ExceptionFrame)`, which the image defines and
//! which must not return.
//!
//! Vectors [`DEVICE_VECTORS`] (device interrupts the hypervisor routes, e.g.
//! assigned PCI functions' INTx) have a second set of stubs that return:
//! each pushes its vector, saves the caller-saved registers, calls
//! `bulkhead_x86_device_interrupt(vector)` (defined by the image) and
//! returns with IRETQ. They are only ever taken in the short windows where
//! the hypervisor sets RFLAGS.IF on purpose.
//!
//! #DF, NMI and #MC are delivered on interrupt stacks of their own (IST,
//! see [`super::gdt::ist`]) once [`use_ist_stacks`] has run: a stack
//! overflow that faults while pushing the page-fault frame becomes a #DF,
//! which then still has a stack to report on.

use super::gdt::{CODE_SELECTOR, ist};
use crate::exception::ExceptionFrame;
use core::cell::UnsafeCell;
use x86_64::VirtAddr;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;

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

/// The local APIC's spurious-interrupt vector (programmed on every CPU):
/// its gate returns at once, without an EOI (Intel SDM Vol. 3A §11.9).
pub const SPURIOUS_VECTOR: u8 = 0xff;

core::arch::global_asm!(
    ".pushsection .text.bulkhead_x86_spurious, \"ax\"",
    ".global bulkhead_x86_spurious",
    "bulkhead_x86_spurious:",
    "iretq",
    ".popsection",
);

/// The vectors whose gates lead to the returning device-interrupt stubs.
pub const DEVICE_VECTORS: core::ops::Range<u8> = 0x30..0x40;
/// Bytes per device-interrupt stub.
const DEVICE_STUB_SIZE: u64 = 16;

core::arch::global_asm!(
    ".pushsection .text.bulkhead_x86_device_vectors, \"ax\"",
    ".p2align 4",
    ".global bulkhead_x86_device_vectors",
    "bulkhead_x86_device_vectors:",
    ".set bulkhead_device_vector, {first}",
    ".rept {count}",
    ".p2align 4",
    "pushq $bulkhead_device_vector",
    "jmp bulkhead_x86_device_common",
    ".set bulkhead_device_vector, bulkhead_device_vector + 1",
    ".endr",
    "bulkhead_x86_device_common:",
    // The interrupted code's caller-saved registers; the callee saves the rest.
    "pushq %rax",
    "pushq %rcx",
    "pushq %rdx",
    "pushq %rsi",
    "pushq %rdi",
    "pushq %r8",
    "pushq %r9",
    "pushq %r10",
    "pushq %r11",
    "pushq %rbp",
    "movq %rsp, %rbp",
    "movq 80(%rsp), %rdi",
    "andq $-16, %rsp",
    "cld",
    "call {handler}",
    "movq %rbp, %rsp",
    "popq %rbp",
    "popq %r11",
    "popq %r10",
    "popq %r9",
    "popq %r8",
    "popq %rdi",
    "popq %rsi",
    "popq %rdx",
    "popq %rcx",
    "popq %rax",
    "addq $8, %rsp",
    "iretq",
    ".popsection",
    first = const DEVICE_VECTORS.start,
    count = const DEVICE_VECTORS.end - DEVICE_VECTORS.start,
    handler = sym bulkhead_x86_device_trampoline,
    options(att_syntax),
);

unsafe extern "C" {
    /// The first vector stub (see the module documentation).
    static bulkhead_x86_vectors: u8;
    /// The first device-interrupt stub.
    static bulkhead_x86_device_vectors: u8;
    /// The spurious-interrupt stub.
    static bulkhead_x86_spurious: u8;
}

unsafe extern "Rust" {
    /// The image's handler for a device vector; returns to the interrupted
    /// code. Runs with interrupts masked (interrupt gate).
    fn bulkhead_x86_device_interrupt(vector: u8);
}

/// Called by the device stubs with the vector.
extern "C" fn bulkhead_x86_device_trampoline(vector: u64) {
    // SAFETY: the image defines the handler with this signature.
    unsafe { bulkhead_x86_device_interrupt(vector as u8) }
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

/// Vectors with a stack of their own, and its IST slot.
const IST_VECTORS: [(usize, u8); 3] = [(2, ist::NMI), (8, ist::DOUBLE_FAULT), (18, ist::MACHINE_CHECK)];

#[repr(C, align(16))]
struct Idt(UnsafeCell<[Gate; 256]>);

// SAFETY: written once by `load` on the boot CPU before any other CPU runs
// and before interrupts are enabled; read only by the CPU afterwards.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([Gate::ABSENT; 256]));

/// The `lidt` operand for [`IDT`].
fn pointer() -> DescriptorTablePointer {
    DescriptorTablePointer { limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16, base: VirtAddr::from_ptr(IDT.0.get()) }
}

/// Fills the IDT with the vector stubs and loads it. No gate uses an IST
/// slot yet: the firmware's TSS may still be loaded.
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
    let device_stubs = core::ptr::addr_of!(bulkhead_x86_device_vectors) as u64;
    for (i, vector) in DEVICE_VECTORS.enumerate() {
        gates[usize::from(vector)] = Gate::interrupt(device_stubs + DEVICE_STUB_SIZE * i as u64);
    }
    gates[usize::from(SPURIOUS_VECTOR)] = Gate::interrupt(core::ptr::addr_of!(bulkhead_x86_spurious) as u64);
    // SAFETY: the table is static and every gate points at a stub.
    unsafe { lidt(&pointer()) };
}

/// Points the gates of #DF, NMI and #MC at their IST slots.
///
/// # Safety
/// Call on the boot CPU after [`load`] and after
/// [`super::gdt::load_cpu_tables`], before any other CPU loads the IDT:
/// from here on every CPU that uses the IDT must have loaded its own TSS.
pub unsafe fn use_ist_stacks() {
    // SAFETY: only the boot CPU runs (caller's contract), and a gate is
    // a plain value the CPU reads only when it delivers that vector.
    let gates = unsafe { &mut *IDT.0.get() };
    for (vector, slot) in IST_VECTORS {
        gates[vector].ist = slot;
    }
}

/// Loads the IDT [`load`] filled on the boot CPU into this CPU.
///
/// # Safety
/// [`load`] must have run (on the boot CPU); call at CPL 0 with interrupts
/// disabled, after this CPU loaded its own TSS
/// ([`super::gdt::load_cpu_tables`]) if [`use_ist_stacks`] has run.
pub unsafe fn reload() {
    // SAFETY: the table is static and was filled by `load`.
    unsafe { lidt(&pointer()) };
}
