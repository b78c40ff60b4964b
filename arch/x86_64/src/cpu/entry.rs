//! The image entry point, `_start`.
//!
//! The loader calls `_start(boot_info)` (System V ABI: `rdi`) in long mode
//! on the firmware's stack, GDT and page tables, with interrupts masked.
//! We check the block's magic, move to the stack at the top of the
//! hypervisor-owned pool, install our own GDT and IDT (so that a fault from
//! here on is reported, not a firmware triple fault), then call
//! `bulkhead_main(boot_info)`, which the image defines.

use bulkhead_abi::boot::{BOOT_INFO_MAGIC, BootInfo, PhysRange};
use core::mem::offset_of;

core::arch::global_asm!(
    ".pushsection .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "    cli",
    "    cld",
    // Refuse a block that is not ours rather than trusting its pool address.
    "    movabsq ${magic_value}, %rax",
    "    cmpq %rax, {magic}(%rdi)",
    "    jne 2f",
    "    movq {pool_base}(%rdi), %rsp",
    "    addq {pool_size}(%rdi), %rsp",
    "    andq $-16, %rsp",
    "    xorl %ebp, %ebp",
    "    movq %rdi, %rbx",
    "    call {tables}",
    "    movq %rbx, %rdi",
    "    call bulkhead_main",
    "2:  cli",
    "    hlt",
    "    jmp 2b",
    ".popsection",
    magic = const offset_of!(BootInfo, magic),
    magic_value = const BOOT_INFO_MAGIC,
    pool_base = const offset_of!(BootInfo, hv_pool) + offset_of!(PhysRange, base),
    pool_size = const offset_of!(BootInfo, hv_pool) + offset_of!(PhysRange, size),
    tables = sym install_tables,
    options(att_syntax),
);

/// Loads the hypervisor's GDT and IDT; called by `_start` on our stack.
extern "C" fn install_tables() {
    // SAFETY: called once by `_start`, at CPL 0 with interrupts masked.
    unsafe {
        super::gdt::load();
        super::idt::load();
    }
}
