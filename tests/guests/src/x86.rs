//! The x86_64 guest runtime: `_start`.
//!
//! The hypervisor enters `_start` in 64-bit long mode at CPL 0 with paging
//! on (an identity map of the partition's RAM, in the top pages of that
//! RAM), interrupts masked, flat segments, and RSP somewhere below the page
//! tables. The runtime moves to its own stack (linked after `.bss`, see
//! `guest-x86_64.ld`), clears `.bss` and calls `bulkhead_guest_main`, which
//! [`guest_main!`](crate::guest_main) defines and which never returns.
//!
//! No IDT is installed: an exception in the guest escalates to a triple
//! fault, which the hypervisor intercepts (SHUTDOWN) and reports as the
//! partition's fault.

#[cfg(target_os = "none")]
core::arch::global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "    cli",
    "    cld",
    "    lea  rsp, [rip + __stack_top]",
    "    lea  rdi, [rip + __bss_start]",
    "    lea  rcx, [rip + __bss_end]",
    "    sub  rcx, rdi",
    "    xor  eax, eax",
    "    rep  stosb",
    "    xor  ebp, ebp",
    "    call bulkhead_guest_main",
    "2:  hlt",
    "    jmp  2b",
);
