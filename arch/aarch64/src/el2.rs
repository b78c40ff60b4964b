//! EL2 system-register configuration for running partitions.

use crate::stage2::Stage2Geometry;
#[cfg(all(target_arch = "aarch64", not(test)))]
use aarch64_cpu::registers::*;

/// A snapshot of the EL2 state the firmware handed over, for the boot log.
#[derive(Clone, Copy, Debug, Default)]
pub struct FirmwareState {
    /// `CurrentEL` (2 for EL2).
    pub current_el: u64,
    /// `HCR_EL2`.
    pub hcr: u64,
    /// `SCTLR_EL2`.
    pub sctlr: u64,
    /// `ID_AA64MMFR0_EL1.PARange`, decoded into bits.
    pub pa_bits: u32,
    /// `MPIDR_EL1`.
    pub mpidr: u64,
}

/// Decodes `ID_AA64MMFR0_EL1.PARange` (Arm ARM D24.2.64) into address bits.
pub const fn pa_range_bits(pa_range: u64) -> u32 {
    match pa_range {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

/// Reads the state the firmware left.
pub fn firmware_state() -> FirmwareState {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    {
        FirmwareState {
            current_el: CurrentEL.read(CurrentEL::EL),
            hcr: HCR_EL2.get(),
            sctlr: SCTLR_EL2.get(),
            pa_bits: pa_range_bits(ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange)),
            mpidr: MPIDR_EL1.get(),
        }
    }
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    FirmwareState::default()
}

/// How a partition's vCPU is configured at EL2 before its first entry.
#[derive(Clone, Copy, Debug)]
pub struct GuestSetup {
    /// `VTTBR_EL2` value: VMID in bits 63:48 (8-bit VMIDs use 55:48), table base.
    pub vttbr: u64,
    /// `VTCR_EL2` value.
    pub vtcr: u64,
    /// `VMPIDR_EL2` value: the MPIDR the guest reads.
    pub vmpidr: u64,
}

/// `HCR_EL2` while a guest runs (Arm ARM D24.2.48). Bit by bit:
/// VM (0) stage 2 on; SWIO (1) set/way invalidation becomes clean+invalidate;
/// FMO/IMO/AMO (3..5) physical FIQ/IRQ/SError go to EL2; TSC (19) trap SMC so
/// PSCI and firmware calls are ours to answer; RW (31) EL1 is AArch64;
/// TID3 (18) trap the feature ID registers so that what the hypervisor does
/// not support (SVE, SME) is hidden ([`crate::idregs`]);
/// APK/API (40, 41) let the guest use pointer authentication untrapped.
/// E2H and TGE stay 0: Bulkhead runs in the plain (non-VHE) EL2 regime.
pub const HCR_GUEST: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 18)
    | (1 << 19)
    | (1 << 31)
    | (1 << 40)
    | (1 << 41);

/// `VTCR_EL2` for a 4 KiB granule and the given stage-2 geometry,
/// inner-shareable write-back walks, and the output size from `pa_bits`
/// (Arm ARM D24.2.201; SL0 0b01 starts at level 1, 0b10 at level 0).
pub const fn vtcr(geometry: Stage2Geometry, pa_bits: u32) -> u64 {
    let t0sz = (64 - geometry.ipa_bits) as u64;
    let sl0: u64 = if geometry.root_level == 0 { 0b10 << 6 } else { 0b01 << 6 };
    let irgn0_wbwa = 0b01 << 8;
    let orgn0_wbwa = 0b01 << 10;
    let sh0_inner = 0b11 << 12;
    let tg0_4k = 0b00 << 14;
    let ps = output_size_field(pa_bits) << 16;
    let res1 = 1 << 31;
    t0sz | sl0 | irgn0_wbwa | orgn0_wbwa | sh0_inner | tg0_4k | ps | res1
}

/// The `PS` field of `TCR_EL2`/`VTCR_EL2` for the largest output size that
/// fits `pa_bits` (same encoding as `ID_AA64MMFR0_EL1.PARange`, capped at
/// 48 bits: 52-bit output needs FEAT_LPA descriptors, which are not used).
pub const fn output_size_field(pa_bits: u32) -> u64 {
    match pa_bits {
        0..=35 => 0,
        36..=39 => 1,
        40..=41 => 2,
        42..=43 => 3,
        44..=47 => 4,
        _ => 5,
    }
}

/// `VTTBR_EL2` for a root table at `root` and 8-bit `vmid`.
pub const fn vttbr(root: u64, vmid: u8) -> u64 {
    ((vmid as u64) << 48) | (root & 0x0000_ffff_ffff_fffe)
}

/// `SCTLR_EL1` a guest starts with: MMU and caches off, the RES1 bits set
/// (bits 11, 20, 22, 23, 28, 29 in Armv8.0).
pub const SCTLR_EL1_RESET: u64 = (1 << 11) | (1 << 20) | (1 << 22) | (1 << 23) | (1 << 28) | (1 << 29);

/// `CPTR_EL2` while a guest runs (E2H = 0 layout, Arm ARM D24.2.34): FP/SIMD
/// untrapped (TFP, 10, clear); SVE (TZ, 8) and SME (TSM, 12) trapped — they
/// are hidden from guests ([`crate::idregs`]) because the hypervisor does
/// not switch their state. RES1 bits 13, 9 and 7:0.
pub const CPTR_EL2_GUEST: u64 = (1 << 13) | (1 << 12) | (1 << 9) | (1 << 8) | 0xff;

/// `HCRX_EL2.MSCEn` (bit 11).
pub const HCRX_EL2_MSCEN: u64 = 1 << 11;

/// Loads the EL2 controls for a guest and invalidates its stale TLB entries.
///
/// # Safety
/// `setup.vttbr` must point at a stage-2 table that maps only memory the
/// partition owns; EL1 state is reset for a fresh guest, so this must only be
/// called before the partition's first entry on this CPU.
pub unsafe fn configure_guest(setup: &GuestSetup) {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    // SAFETY: these registers only affect lower exception levels, which run
    // nothing at this point; the caller vouches for the stage-2 table.
    unsafe {
        VTCR_EL2.set(setup.vtcr);
        VTTBR_EL2.set(setup.vttbr);
        VMPIDR_EL2.set(setup.vmpidr);
        // The guest reads the real MIDR: nothing to hide yet.
        core::arch::asm!("mrs {t}, midr_el1", "msr vpidr_el2, {t}", t = out(reg) _);
        CPTR_EL2.set(CPTR_EL2_GUEST);
        // FEAT_HCX: MSCEn (11) lets EL0/EL1 use the memory-copy (MOPS)
        // instructions, which Linux 6.12 userspace does on `-cpu max`.
        if (ID_AA64MMFR1_EL1.get() >> 40) & 0xf != 0 {
            core::arch::asm!("msr S3_4_C1_C2_2, {}", in(reg) HCRX_EL2_MSCEN);
        }
        // EL1 may read the physical counter (EL1PCTEN) and use the physical
        // timer (EL1PCEN); Linux at EL1 uses the virtual timer.
        CNTHCTL_EL2.set(0b11);
        CNTVOFF_EL2.set(0);
        MDCR_EL2.set(0);
        core::arch::asm!("msr hstr_el2, xzr");
        SCTLR_EL1.set(SCTLR_EL1_RESET);
        HCR_EL2.set(HCR_GUEST);
        core::arch::asm!("isb", "tlbi vmalls12e1", "dsb nsh", "isb");
    }
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    let _ = setup;
}

/// Reads the exit syndrome registers: `ESR_EL2`, `FAR_EL2`, `HPFAR_EL2`.
pub fn exit_syndrome() -> (u64, u64, u64) {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    {
        (ESR_EL2.get(), FAR_EL2.get(), HPFAR_EL2.get())
    }
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    (0, 0, 0)
}

/// The guest stack pointer its PSTATE selects: `SP_EL1` in EL1h
/// (`SPSR_EL2.M` = 0b0101), `SP_EL0` in EL1t and EL0. Both stay resident on
/// the CPU while the hypervisor handles an exit of the guest.
pub fn guest_sp(spsr: u64) -> u64 {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    {
        let value: u64;
        // SAFETY: reading a guest stack pointer register has no side effect.
        unsafe {
            if uses_sp_el1(spsr) {
                core::arch::asm!("mrs {}, sp_el1", out(reg) value, options(nomem, nostack, preserves_flags));
            } else {
                core::arch::asm!("mrs {}, sp_el0", out(reg) value, options(nomem, nostack, preserves_flags));
            }
        }
        value
    }
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    {
        let _ = spsr;
        0
    }
}

/// Sets the guest stack pointer its PSTATE selects (see [`guest_sp`]).
pub fn set_guest_sp(spsr: u64, value: u64) {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    // SAFETY: the register belongs to the guest whose exit is being
    // handled; the hypervisor runs on SP_EL2 and never uses it.
    unsafe {
        if uses_sp_el1(spsr) {
            core::arch::asm!("msr sp_el1, {}", in(reg) value, options(nomem, nostack, preserves_flags));
        } else {
            core::arch::asm!("msr sp_el0, {}", in(reg) value, options(nomem, nostack, preserves_flags));
        }
    }
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    let _ = (spsr, value);
}

/// Runs `f` with `VTTBR_EL2` = `vttbr`, then restores the value it had: a
/// partition's stage-2 table may change from a CPU that runs another
/// partition (or none), and the TLB maintenance of the change names the
/// VMID in `VTTBR_EL2`.
pub fn with_vttbr<R>(vttbr: u64, f: impl FnOnce() -> R) -> R {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    {
        let saved = VTTBR_EL2.get();
        if saved == vttbr {
            return f();
        }
        VTTBR_EL2.set(vttbr);
        // SAFETY: a context synchronization event so that the TLBIs in `f`
        // see the new VMID; EL2's own translation does not use VTTBR_EL2,
        // and no guest runs on this CPU until it is restored below.
        unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
        let result = f();
        VTTBR_EL2.set(saved);
        // SAFETY: as above, for the restored value.
        unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
        result
    }
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    {
        let _ = vttbr;
        f()
    }
}

/// Whether `SPSR_EL2.M[3:0]` is EL1h (the only mode using `SP_EL1`; EL0t
/// and EL1t use `SP_EL0`).
pub const fn uses_sp_el1(spsr: u64) -> bool {
    spsr & 0xf == 0b0101
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtcr_for_a_39_bit_ipa_space() {
        let v = vtcr(Stage2Geometry { ipa_bits: 39, root_level: 1 }, 48);
        assert_eq!(v & 0x3f, 25, "T0SZ");
        assert_eq!((v >> 6) & 3, 1, "SL0 = level 1");
        assert_eq!((v >> 16) & 7, 5, "PS = 48 bits");
        assert_eq!(v >> 31 & 1, 1, "RES1");
        let v = vtcr(Stage2Geometry { ipa_bits: 44, root_level: 0 }, 44);
        assert_eq!(v & 0x3f, 20, "T0SZ");
        assert_eq!((v >> 6) & 3, 2, "SL0 = level 0");
        assert_eq!((v >> 16) & 7, 4, "PS = 44 bits");
    }

    #[test]
    fn vttbr_places_the_vmid() {
        assert_eq!(vttbr(0x4000_1000, 7), 0x0007_0000_4000_1000);
    }

    #[test]
    fn hcr_runs_aarch64_guests_under_stage2_and_traps_smc() {
        assert_eq!(HCR_GUEST & 1, 1);
        assert_eq!(HCR_GUEST >> 31 & 1, 1);
        assert_eq!(HCR_GUEST >> 19 & 1, 1);
        assert_eq!(HCR_GUEST >> 34 & 1, 0, "E2H stays clear");
        assert_eq!(HCR_GUEST >> 27 & 1, 0, "TGE stays clear");
    }

    #[test]
    fn output_size_never_exceeds_the_cpu() {
        assert_eq!(output_size_field(32), 0);
        assert_eq!(output_size_field(40), 2);
        assert_eq!(output_size_field(44), 4);
        assert_eq!(output_size_field(52), 5);
    }

    #[test]
    fn the_stack_pointer_follows_the_mode() {
        assert!(uses_sp_el1(crate::exception::SPSR_EL1H_MASKED));
        assert!(!uses_sp_el1(0x3c4), "EL1t");
        assert!(!uses_sp_el1(0x3c0), "EL0t");
    }

    #[test]
    fn pa_range_decodes() {
        assert_eq!(pa_range_bits(2), 40);
        assert_eq!(pa_range_bits(5), 48);
        assert_eq!(pa_range_bits(6), 52);
    }
}
