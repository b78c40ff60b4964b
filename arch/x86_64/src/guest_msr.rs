//! Which model-specific registers a partition's guest may use, and how.
//!
//! Each CPU belongs to one partition (DESIGN.md §1), and the hypervisor
//! itself uses none of the guest's per-thread state MSRs (no SYSCALL, no
//! FS/GS bases), so those pass through without exits. EFER is emulated: the
//! guest may change SCE and NXE, never SVME (which VMRUN needs) or LME
//! (which would need a mode switch). Everything else — machine-wide MSRs
//! such as MTRRs, the APIC base, VM_HSAVE_PA, performance counters — exits
//! and is a fault handled by the partition's `on_fault` policy.

/// IA32_TIME_STAMP_COUNTER.
pub const TSC: u32 = 0x10;
/// IA32_SYSENTER_CS, _ESP, _EIP.
pub const SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP.
pub const SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP.
pub const SYSENTER_EIP: u32 = 0x176;
/// IA32_PAT: with nested paging (or VMX's PAT load/save controls) the
/// guest's own PAT, switched by the CPU.
pub const PAT: u32 = 0x277;
/// EFER.
pub const EFER: u32 = 0xc000_0080;
/// STAR, LSTAR, CSTAR, SFMASK (SYSCALL).
pub const STAR: u32 = 0xc000_0081;
/// LSTAR.
pub const LSTAR: u32 = 0xc000_0082;
/// CSTAR.
pub const CSTAR: u32 = 0xc000_0083;
/// SFMASK.
pub const SFMASK: u32 = 0xc000_0084;
/// FS.base.
pub const FS_BASE: u32 = 0xc000_0100;
/// GS.base.
pub const GS_BASE: u32 = 0xc000_0101;
/// KernelGSbase (SWAPGS).
pub const KERNEL_GS_BASE: u32 = 0xc000_0102;

/// TSC_AUX (RDTSCP, RDPID).
pub const TSC_AUX: u32 = 0xc000_0103;

/// EFER.SCE: SYSCALL enable.
pub const EFER_SCE: u64 = 1 << 0;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active (read-only).
pub const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE: no-execute enable.
pub const EFER_NXE: u64 = 1 << 11;
/// EFER.SVME: SVM enable, the hypervisor's.
pub const EFER_SVME: u64 = 1 << 12;

/// How one MSR is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrRule {
    /// The guest's own state: reads and writes pass through.
    GuestState,
    /// Reads pass through; writes exit and are refused.
    ReadOnly,
    /// Both exit; the hypervisor emulates the register (EFER).
    Emulated,
    /// Both exit and are refused.
    Refused,
}

/// The MSRs that pass through, both ways.
pub const GUEST_STATE_MSRS: [u32; 12] =
    [SYSENTER_CS, SYSENTER_ESP, SYSENTER_EIP, PAT, STAR, LSTAR, CSTAR, SFMASK, FS_BASE, GS_BASE, KERNEL_GS_BASE, TSC_AUX];

/// The rule for `msr`.
pub fn rule(msr: u32) -> MsrRule {
    match msr {
        EFER => MsrRule::Emulated,
        TSC => MsrRule::ReadOnly,
        _ if GUEST_STATE_MSRS.contains(&msr) => MsrRule::GuestState,
        _ => MsrRule::Refused,
    }
}

/// What a guest WRMSR to EFER does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EferWrite {
    /// The guest's new EFER (before the hypervisor adds SVME or whatever
    /// its back end needs).
    Accept(u64),
    /// A bit the guest may not change: a fault, per policy.
    Refuse,
}

/// A guest's WRMSR of `value` to EFER, whose guest-visible value is
/// `current`: SCE and NXE may change, LMA is read-only (writes ignored),
/// LME must stay as it is, every other bit must be zero.
pub fn efer_write(current: u64, value: u64) -> EferWrite {
    let changeable = EFER_SCE | EFER_NXE;
    if value & !(changeable | EFER_LME | EFER_LMA) != 0 || (value ^ current) & EFER_LME != 0 {
        return EferWrite::Refuse;
    }
    EferWrite::Accept((current & !changeable) | (value & changeable))
}

/// The EFER the guest reads: its own, without the hypervisor's SVME.
pub fn efer_read(actual: u64) -> u64 {
    actual & !EFER_SVME
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_per_msr() {
        assert_eq!(rule(FS_BASE), MsrRule::GuestState);
        assert_eq!(rule(SYSENTER_CS), MsrRule::GuestState);
        assert_eq!(rule(EFER), MsrRule::Emulated);
        assert_eq!(rule(TSC), MsrRule::ReadOnly);
        // VM_HSAVE_PA, IA32_APIC_BASE, an MTRR, an unknown number.
        for msr in [0xc001_0117, 0x1b, 0x2ff, 0xdead_beef] {
            assert_eq!(rule(msr), MsrRule::Refused, "{msr:#x}");
        }
    }

    #[test]
    fn efer_writes_keep_the_hypervisor_bits() {
        let long = EFER_LME | EFER_LMA;
        assert_eq!(efer_write(long, EFER_LME | EFER_NXE | EFER_SCE), EferWrite::Accept(long | EFER_NXE | EFER_SCE));
        // LMA written as 0 is ignored, not a change of mode.
        assert_eq!(efer_write(long | EFER_NXE, EFER_LME), EferWrite::Accept(long));
        assert_eq!(efer_write(long, EFER_LME | EFER_SVME), EferWrite::Refuse);
        assert_eq!(efer_write(long, 0), EferWrite::Refuse);
        assert_eq!(efer_write(long, EFER_LME | 1 << 14), EferWrite::Refuse);
        assert_eq!(efer_read(long | EFER_SVME), long);
    }
}
