//! A tiny runtime for Bulkhead's bare-metal test guests.
//!
//! Each program in `src/bin` is a flat binary. On arm64 a partition enters
//! it at EL1 with its MMU off; the runtime sets up a stack, FP/SIMD access
//! and EL1 exception vectors (an exception in a guest reports a failure
//! instead of hanging), then calls the program's `guest_main`. On x86_64 the
//! hypervisor enters it in 64-bit long mode at CPL 0, with paging on through
//! an identity map of the partition's RAM that the hypervisor built; the
//! runtime ([`x86`]) sets up a stack, clears `.bss` and calls `guest_main`.
//! Programs talk to the hypervisor only through the hypercalls in [`hv`].
//!
//! The arm64-only modules (`fault`, `gic`, `mmu`) exist only on arm64;
//! programs that use only [`hv`], [`pattern`], [`time`] (its counter),
//! [`println!`] and [`guest_main!`] build for both architectures.

#![cfg_attr(not(test), no_std)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(target_arch = "aarch64")]
pub mod fault;
#[cfg(target_arch = "aarch64")]
pub mod gic;
pub mod edu;
pub mod gpu;
pub mod hv;
pub mod intx;
#[cfg(target_arch = "aarch64")]
pub mod mmu;
pub mod pattern;
pub mod targets;
pub mod time;
#[cfg(target_arch = "x86_64")]
pub mod x86;
#[cfg(target_arch = "x86_64")]
pub mod x86_trap;

use core::fmt::{self, Write};

/// Failure code reported when the guest takes an unexpected exception.
pub const FAIL_EXCEPTION: u64 = 0xe0;
/// Failure code reported when the guest panics.
pub const FAIL_PANIC: u64 = 0xe1;

/// Defines the program's entry: `guest_main!(body)` where `body` is a
/// `fn() -> Result<(), u64>`; `Ok` reports success, `Err(code)` failure,
/// then the partition stops.
#[macro_export]
macro_rules! guest_main {
    ($main:path) => {
        /// Called by the runtime's `_start`.
        #[unsafe(no_mangle)]
        pub extern "C" fn bulkhead_guest_main() -> ! {
            let result: Result<(), u64> = $main();
            $crate::finish(result)
        }
    };
}

/// Reports `result` and stops the partition.
pub fn finish(result: Result<(), u64>) -> ! {
    match result {
        Ok(()) => hv::report_result(0, 0),
        Err(code) => hv::report_result(code.max(1), 0),
    }
    hv::system_off()
}

/// Console writer over the `CONSOLE_WRITE` hypercall.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(bulkhead_abi::hypercall::CONSOLE_WRITE_MAX as usize) {
            hv::console_write(chunk).map_err(|_| fmt::Error)?;
        }
        Ok(())
    }
}

/// Prints formatted text on the hypervisor console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::Console, $($arg)*);
    }};
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = writeln!(Console, "guest panic: {info}");
    hv::report_result(FAIL_PANIC, 0);
    hv::system_off()
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
core::arch::global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "    adrp x9, __stack_top",
    "    add  x9, x9, :lo12:__stack_top",
    "    mov  sp, x9",
    // FP/SIMD untrapped at EL1/EL0 (CPACR_EL1.FPEN = 0b11).
    "    mov  x9, #(3 << 20)",
    "    msr  cpacr_el1, x9",
    "    adrp x9, guest_vectors",
    "    add  x9, x9, :lo12:guest_vectors",
    "    msr  vbar_el1, x9",
    "    isb",
    "    adrp x9, __bss_start",
    "    add  x9, x9, :lo12:__bss_start",
    "    adrp x10, __bss_end",
    "    add  x10, x10, :lo12:__bss_end",
    "1:  cmp  x9, x10",
    "    b.hs 2f",
    "    str  xzr, [x9], #8",
    "    b    1b",
    "2:  bl   bulkhead_guest_main",
    "3:  b    3b",
    // Every vector saves the caller-saved registers and lets Rust decide:
    // `bulkhead_guest_exception(esr, elr, far)` returns where to resume (or
    // never returns, for an unexpected exception).
    ".macro enter_handler vector",
    "    sub  sp, sp, #176",
    "    stp  x0, x1, [sp, #0]",
    "    mov  x0, #\\vector",
    "    b    guest_exception_common",
    ".endm",
    ".balign 2048",
    "guest_vectors:",
    ".irp v, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15",
    ".balign 0x80",
    "enter_handler \\v",
    ".endr",
    "guest_exception_common:",
    "    stp  x2, x3, [sp, #16]",
    "    stp  x4, x5, [sp, #32]",
    "    stp  x6, x7, [sp, #48]",
    "    stp  x8, x9, [sp, #64]",
    "    stp  x10, x11, [sp, #80]",
    "    stp  x12, x13, [sp, #96]",
    "    stp  x14, x15, [sp, #112]",
    "    stp  x16, x17, [sp, #128]",
    "    stp  x18, x29, [sp, #144]",
    "    str  x30, [sp, #160]",
    "    mov  x3, x0",
    "    mrs  x0, esr_el1",
    "    mrs  x1, elr_el1",
    "    mrs  x2, far_el1",
    "    bl   bulkhead_guest_exception",
    "    msr  elr_el1, x0",
    "    ldp  x0, x1, [sp, #0]",
    "    ldp  x2, x3, [sp, #16]",
    "    ldp  x4, x5, [sp, #32]",
    "    ldp  x6, x7, [sp, #48]",
    "    ldp  x8, x9, [sp, #64]",
    "    ldp  x10, x11, [sp, #80]",
    "    ldp  x12, x13, [sp, #96]",
    "    ldp  x14, x15, [sp, #112]",
    "    ldp  x16, x17, [sp, #128]",
    "    ldp  x18, x29, [sp, #144]",
    "    ldr  x30, [sp, #160]",
    "    add  sp, sp, #176",
    "    eret",
);
