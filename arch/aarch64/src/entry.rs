//! The image entry point, `_start`.
//!
//! The loader calls `_start(boot_info)` at EL2 on the firmware's stack and
//! page tables. Before any Rust code runs we install our own exception
//! vectors (so that a fault from here on is reported, not a firmware hang)
//! and move to the stack at the top of the hypervisor-owned pool; then we
//! call `bulkhead_main(boot_info)`, which the image defines.

use bulkhead_abi::boot::{BOOT_INFO_MAGIC, BootInfo};
use core::mem::offset_of;

core::arch::global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "    adrp x9, bulkhead_el2_vectors",
    "    add  x9, x9, :lo12:bulkhead_el2_vectors",
    "    msr  vbar_el2, x9",
    "    isb",
    // Refuse a block that is not ours rather than trusting its pool address.
    "    ldr  x9, [x0, #{magic}]",
    "    ldr  x10, ={magic_value}",
    "    cmp  x9, x10",
    "    b.ne 2f",
    "    msr  spsel, #1",
    "    ldr  x9, [x0, #{pool_base}]",
    "    ldr  x10, [x0, #{pool_size}]",
    "    add  x9, x9, x10",
    "    and  x9, x9, #~0xf",
    "    mov  sp, x9",
    "    mov  x29, xzr",
    "    mov  x30, xzr",
    "    bl   bulkhead_main",
    "2:  wfe",
    "    b    2b",
    magic = const offset_of!(BootInfo, magic),
    magic_value = const BOOT_INFO_MAGIC,
    pool_base = const offset_of!(BootInfo, hv_pool) + offset_of!(bulkhead_abi::boot::PhysRange, base),
    pool_size = const offset_of!(BootInfo, hv_pool) + offset_of!(bulkhead_abi::boot::PhysRange, size),
);
