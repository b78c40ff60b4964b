//! What the hypervisor image runs on the bare CPU: the entry point, its own
//! GDT, TSS and IDT, switching to its own page tables (`mmu`), port I/O, the 16550 console UART, QEMU's `isa-debug-exit`,
//! the SVM instructions and MSRs (`svm`) and the VMX instructions (`vmx`).
//!
//! Built only for the bare-metal target (`target_os = "none"`): host tests
//! of this crate run on an x86_64 host too, where none of this may execute.

pub mod ap;
pub mod entry;
pub mod gdt;
pub mod idt;
pub mod mmu;
pub mod port;
pub mod serial;
pub mod svm;
pub mod vmx;

/// Reads CR2, the linear address of the last page fault.
pub fn cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effect (we run at CPL 0).
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Stops this CPU for good: interrupts off, `hlt` forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` only stops the CPU until an NMI, after which we
        // halt again.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// I/O port of QEMU's `isa-debug-exit` device as DESIGN.md §6 configures
/// it (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Ends the QEMU run through `isa-debug-exit`: QEMU exits with status
/// `(value << 1) | 1`. On a machine without the device the write is
/// ignored, and the CPU halts.
pub fn debug_exit(value: u32) -> ! {
    // SAFETY: writing port 0xf4 touches only the debug-exit device (or
    // nothing, on a machine without it).
    unsafe { port::outl(DEBUG_EXIT_PORT, value) };
    halt_forever()
}
