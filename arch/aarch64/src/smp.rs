//! Starting secondary CPUs at EL2.
//!
//! The boot CPU asks the firmware (PSCI `CPU_ON`) to start a CPU at
//! `_secondary_start` with a pointer to a [`SecondaryBoot`] block. The new
//! CPU arrives at EL2 with its MMU off; the assembly installs our vectors,
//! loads the boot CPU's EL2 translation settings (so it shares the
//! hypervisor's identity map), turns the MMU on, moves to its own stack and
//! calls `bulkhead_secondary_main(block)`, which the image defines.

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
use core::mem::offset_of;

/// Everything a secondary CPU needs before it can run Rust code.
#[derive(Clone, Debug, Default)]
#[repr(C)]
pub struct SecondaryBoot {
    /// Top of this CPU's stack (16-byte aligned).
    pub stack_top: u64,
    /// `MAIR_EL2` to load.
    pub mair: u64,
    /// `TCR_EL2` to load.
    pub tcr: u64,
    /// `TTBR0_EL2` to load.
    pub ttbr0: u64,
    /// `SCTLR_EL2` to load (turns the MMU on).
    pub sctlr: u64,
    /// The CPU's index in the platform's CPU list, for the image.
    pub cpu_index: u64,
}

/// `CPTR_EL2` with nothing trapped (RES1 bits 13:12 and 9:0): the hypervisor
/// itself may use FP/SIMD registers, which compiled Rust does.
pub const CPTR_EL2_NO_TRAPS: u64 = 0x33ff;

/// Fills in the EL2 translation settings of the calling CPU.
pub fn current_translation(block: &mut SecondaryBoot) {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    {
        use aarch64_cpu::registers::{MAIR_EL2, Readable, SCTLR_EL2, TCR_EL2, TTBR0_EL2};
        block.mair = MAIR_EL2.get();
        block.tcr = TCR_EL2.get();
        block.ttbr0 = TTBR0_EL2.get();
        block.sctlr = SCTLR_EL2.get();
    }
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    let _ = block;
}

/// How PSCI calls reach the firmware (the device tree's `/psci` `method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    /// `SMC #0`.
    Smc,
    /// `HVC #0`.
    Hvc,
}

/// Why a CPU did not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuOnError(pub i64);

/// Starts the CPU with affinity `mpidr` at `_secondary_start` with `block`.
///
/// # Safety
/// `block` must stay valid and unchanged until the CPU has read it, have a
/// stack that nothing else uses, and its data must be cleaned to the point of
/// coherency (the new CPU reads it with its MMU off).
pub unsafe fn cpu_on(conduit: PsciConduit, mpidr: u64, block: &SecondaryBoot) -> Result<(), CpuOnError> {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    {
        unsafe extern "C" {
            fn _secondary_start();
        }
        let entry = _secondary_start as *const () as u64;
        let context = block as *const SecondaryBoot as u64;
        let result = match conduit {
            PsciConduit::Smc => smccc::psci::cpu_on::<smccc::Smc>(mpidr, entry, context),
            PsciConduit::Hvc => smccc::psci::cpu_on::<smccc::Hvc>(mpidr, entry, context),
        };
        result.map_err(|e| CpuOnError(i64::from(e)))
    }
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    {
        let _ = (conduit, mpidr, block);
        Err(CpuOnError(-1))
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
core::arch::global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _secondary_start",
    "_secondary_start:",
    "    adrp x9, bulkhead_el2_vectors",
    "    add  x9, x9, :lo12:bulkhead_el2_vectors",
    "    msr  vbar_el2, x9",
    "    ldr  x9, ={cptr}",
    "    msr  cptr_el2, x9",
    "    ldr  x9, [x0, #{mair}]",
    "    msr  mair_el2, x9",
    "    ldr  x9, [x0, #{tcr}]",
    "    msr  tcr_el2, x9",
    "    ldr  x9, [x0, #{ttbr0}]",
    "    msr  ttbr0_el2, x9",
    "    isb",
    "    tlbi alle2",
    "    dsb  nsh",
    "    isb",
    "    ldr  x9, [x0, #{sctlr}]",
    "    msr  sctlr_el2, x9",
    "    isb",
    "    msr  spsel, #1",
    "    ldr  x9, [x0, #{stack_top}]",
    "    mov  sp, x9",
    "    mov  x29, xzr",
    "    mov  x30, xzr",
    "    bl   bulkhead_secondary_main",
    "4:  wfe",
    "    b    4b",
    cptr = const CPTR_EL2_NO_TRAPS,
    mair = const offset_of!(SecondaryBoot, mair),
    tcr = const offset_of!(SecondaryBoot, tcr),
    ttbr0 = const offset_of!(SecondaryBoot, ttbr0),
    sctlr = const offset_of!(SecondaryBoot, sctlr),
    stack_top = const offset_of!(SecondaryBoot, stack_top),
);
