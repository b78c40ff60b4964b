//! The decisions behind turning VMX on (SDM Vol. 3C §24.7 "Enabling and
//! Entering VMX Operation", §24.8 "Restrictions on VMX Operation"), kept
//! apart from the instructions (`cpu::vmx`) so that they run as host tests:
//! what to do with IA32_FEATURE_CONTROL, the CR0/CR4 values VMXON needs,
//! whether a VMXON region / VMCS can be used, and what the EPT/VPID
//! capability MSR allows.

use super::controls::VmxBasic;
use super::vmcs::FixedBits;
use crate::{PageSize, TableOptions};

/// IA32_FEATURE_CONTROL (SDM Vol. 4, MSR 0x3a; Vol. 3C §24.7).
pub const MSR_FEATURE_CONTROL: u32 = 0x3a;
/// Bit 0: lock. Once set, the MSR cannot change until reset, and VMXON
/// raises #GP unless the lock is set.
pub const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
/// Bit 2: VMXON allowed outside SMX operation.
pub const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
/// CR4.VMXE (bit 13): VMXON raises #UD without it.
pub const CR4_VMXE: u64 = 1 << 13;
/// IA32_VMX_EPT_VPID_CAP (SDM Vol. 3D Appendix A.10).
pub const MSR_EPT_VPID_CAP: u32 = 0x48c;
/// The memory type the CPU must use for the VMCS and VMXON region:
/// write-back (IA32_VMX_BASIC bits 53:50).
pub const VMCS_MEMORY_TYPE_WB: u8 = 6;
/// Bytes Bulkhead allocates per VMXON region and VMCS: one page, the
/// architectural maximum of IA32_VMX_BASIC bits 44:32.
pub const REGION_BYTES: u32 = 4096;

/// What to do with IA32_FEATURE_CONTROL before VMXON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureControl {
    /// Locked with VMX outside SMX enabled: nothing to do.
    Ready,
    /// Unlocked: write this value (enable VMX outside SMX, then lock), as
    /// firmware would have.
    LockWith(u64),
    /// Locked with VMX outside SMX disabled: only a reset can change it.
    DisabledByFirmware,
}

impl FeatureControl {
    /// The action for the MSR's current `value`.
    pub const fn decide(value: u64) -> FeatureControl {
        let locked = value & FEATURE_CONTROL_LOCK != 0;
        let enabled = value & FEATURE_CONTROL_VMX_OUTSIDE_SMX != 0;
        match (locked, enabled) {
            (true, true) => FeatureControl::Ready,
            (true, false) => FeatureControl::DisabledByFirmware,
            // Keep whatever else firmware set (e.g. SGX or SMX bits).
            (false, _) => FeatureControl::LockWith(value | FEATURE_CONTROL_VMX_OUTSIDE_SMX | FEATURE_CONTROL_LOCK),
        }
    }
}

/// CR0 as VMXON requires it: the current `cr0` with IA32_VMX_CR0_FIXED0/1
/// applied (§24.8: PE, NE and PG are normally fixed to 1).
pub const fn vmxon_cr0(cr0: u64, fixed: FixedBits) -> u64 {
    fixed.apply(cr0)
}

/// CR4 as VMXON requires it: VMXE set, then IA32_VMX_CR4_FIXED0/1 applied.
pub const fn vmxon_cr4(cr4: u64, fixed: FixedBits) -> u64 {
    fixed.apply(cr4 | CR4_VMXE)
}

/// Why a VMXON region or VMCS cannot be set up on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionError {
    /// IA32_VMX_BASIC asks for more than one page (never on real CPUs).
    TooLarge(u32),
    /// The CPU accesses VMX structures with a memory type other than WB,
    /// which Bulkhead's identity-mapped RAM does not provide.
    MemoryType(u8),
    /// The CPU limits VMX structures to 32-bit physical addresses and the
    /// page lies above 4 GiB.
    Above4GiB(u64),
    /// Not 4 KiB aligned.
    Unaligned(u64),
}

/// Checks that a page at host-physical `pa` can hold a VMXON region or VMCS
/// for a CPU reporting `basic` (§24.11.5, §25.2).
///
/// # Errors
/// [`RegionError`] naming the first problem.
pub const fn check_region(basic: VmxBasic, pa: u64) -> Result<(), RegionError> {
    if basic.region_size() > REGION_BYTES {
        return Err(RegionError::TooLarge(basic.region_size()));
    }
    if basic.memory_type() != VMCS_MEMORY_TYPE_WB {
        return Err(RegionError::MemoryType(basic.memory_type()));
    }
    if !pa.is_multiple_of(REGION_BYTES as u64) {
        return Err(RegionError::Unaligned(pa));
    }
    if basic.addresses_limited_to_32_bits() && pa >= 1 << 32 {
        return Err(RegionError::Above4GiB(pa));
    }
    Ok(())
}

/// IA32_VMX_EPT_VPID_CAP (SDM Vol. 3D Appendix A.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptVpidCapabilities(pub u64);

impl EptVpidCapabilities {
    const fn bit(self, n: u32) -> bool {
        self.0 & (1 << n) != 0
    }

    /// Bit 6: a page-walk length of 4 (the only one Bulkhead builds).
    pub const fn walk_length_4(self) -> bool {
        self.bit(6)
    }

    /// Bit 14: EPT paging structures may be write-back (the EPTP memory
    /// type Bulkhead uses, see [`crate::ept::eptp`]).
    pub const fn write_back(self) -> bool {
        self.bit(14)
    }

    /// Bit 16: 2 MiB EPT leaves.
    pub const fn pages_2mib(self) -> bool {
        self.bit(16)
    }

    /// Bit 17: 1 GiB EPT leaves.
    pub const fn pages_1gib(self) -> bool {
        self.bit(17)
    }

    /// Bit 20: INVEPT exists.
    pub const fn invept(self) -> bool {
        self.bit(20)
    }

    /// Bit 25: single-context INVEPT.
    pub const fn invept_single_context(self) -> bool {
        self.invept() && self.bit(25)
    }

    /// Bit 26: all-context INVEPT.
    pub const fn invept_all_contexts(self) -> bool {
        self.invept() && self.bit(26)
    }

    /// What the EPT Bulkhead builds needs: four levels, WB tables.
    pub const fn supports_bulkhead_ept(self) -> bool {
        self.walk_length_4() && self.write_back()
    }

    /// The largest EPT leaf this CPU allows.
    pub const fn largest_page(self) -> PageSize {
        if self.pages_1gib() {
            PageSize::Size1GiB
        } else if self.pages_2mib() {
            PageSize::Size2MiB
        } else {
            PageSize::Size4KiB
        }
    }

    /// The table options for this CPU's EPT, with `host_address_bits` from
    /// CPUID 0x8000_0008 EAX bits 7:0 (clamped to what a table can hold).
    pub fn table_options(self, host_address_bits: u32) -> TableOptions {
        let bits = host_address_bits.clamp(32, crate::MAX_HOST_ADDRESS_BITS);
        TableOptions { largest_page: self.largest_page(), host_address_bits: bits }
    }
}

/// The INVEPT type (§31.3, INVEPT): which cached EPT-derived translations
/// to invalidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum InveptType {
    /// Those of one EPTP.
    SingleContext = 1,
    /// All of them.
    AllContexts = 2,
}

impl InveptType {
    /// The narrowest INVEPT the CPU supports, or `None` without INVEPT.
    pub const fn best(capabilities: EptVpidCapabilities) -> Option<InveptType> {
        if capabilities.invept_single_context() {
            Some(InveptType::SingleContext)
        } else if capabilities.invept_all_contexts() {
            Some(InveptType::AllContexts)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_control_actions() {
        assert_eq!(FeatureControl::decide(0x5), FeatureControl::Ready);
        // Locked, VMX only inside SMX (bit 1): firmware said no.
        assert_eq!(FeatureControl::decide(0x3), FeatureControl::DisabledByFirmware);
        assert_eq!(FeatureControl::decide(0x1), FeatureControl::DisabledByFirmware);
        // Unlocked: enable and lock, keeping other bits (bit 18, SGX enable).
        assert_eq!(FeatureControl::decide(0), FeatureControl::LockWith(0x5));
        assert_eq!(FeatureControl::decide(1 << 18), FeatureControl::LockWith((1 << 18) | 0x5));
        assert_eq!(FeatureControl::decide(0x4), FeatureControl::LockWith(0x5));
    }

    #[test]
    fn control_registers_for_vmxon() {
        // Typical FIXED values: CR0 PE | NE | PG fixed 1; CR4 VMXE fixed 1,
        // bits above 22 fixed 0.
        let cr0 = FixedBits { fixed0: 0x8000_0021, fixed1: 0xffff_ffff };
        let cr4 = FixedBits { fixed0: 0x2000, fixed1: 0x007f_ffff };
        // Long mode with NE clear (as firmware may leave it): NE gets set.
        assert_eq!(vmxon_cr0(0x8000_0013, cr0), 0x8000_0033);
        assert_eq!(vmxon_cr4(0x620, cr4), 0x2620);
        // VMXE is set even when FIXED0 does not name it.
        assert_eq!(vmxon_cr4(0x20, FixedBits { fixed0: 0, fixed1: u64::MAX }), 0x2020);
        // A bit FIXED1 forbids is cleared.
        assert_eq!(vmxon_cr4(0x20 | (1 << 24), cr4), 0x2020);
    }

    #[test]
    fn region_checks() {
        // Revision 4, 4 KiB, WB, TRUE controls.
        let basic = VmxBasic(0x00da_1000_0000_0004);
        assert_eq!(check_region(basic, 0x1234_5000), Ok(()));
        assert_eq!(check_region(basic, 0x1_0000_0000), Ok(()));
        assert_eq!(check_region(basic, 0x1234_5800), Err(RegionError::Unaligned(0x1234_5800)));
        let limited = VmxBasic(basic.0 | (1 << 48));
        assert_eq!(check_region(limited, 0x1_0000_0000), Err(RegionError::Above4GiB(0x1_0000_0000)));
        assert_eq!(check_region(limited, 0xffff_f000), Ok(()));
        let uncached = VmxBasic(basic.0 & !(0xf << 50));
        assert_eq!(check_region(uncached, 0x1000), Err(RegionError::MemoryType(0)));
        let huge = VmxBasic((basic.0 & !(0x1fff << 32)) | (0x1800 << 32));
        assert_eq!(check_region(huge, 0x1000), Err(RegionError::TooLarge(0x1800)));
    }

    #[test]
    fn ept_capabilities() {
        // A typical client CPU: execute-only, walk 4, UC, WB, 2M, 1G,
        // INVEPT with single and all contexts, INVVPID.
        let caps = EptVpidCapabilities(0x0f01_0633_4141);
        assert!(caps.walk_length_4() && caps.write_back() && caps.supports_bulkhead_ept());
        assert!(caps.pages_2mib() && caps.pages_1gib());
        assert_eq!(InveptType::best(caps), Some(InveptType::SingleContext));
        assert_eq!(caps.table_options(39), TableOptions { largest_page: PageSize::Size1GiB, host_address_bits: 39 });
        // Only 2 MiB leaves, all-context INVEPT only.
        let caps = EptVpidCapabilities((1 << 6) | (1 << 14) | (1 << 16) | (1 << 20) | (1 << 26));
        assert_eq!(caps.largest_page(), PageSize::Size2MiB);
        assert_eq!(InveptType::best(caps), Some(InveptType::AllContexts));
        // No large leaves, no INVEPT, no WB tables.
        let caps = EptVpidCapabilities(1 << 6);
        assert_eq!(caps.largest_page(), PageSize::Size4KiB);
        assert_eq!(InveptType::best(caps), None);
        assert!(!caps.supports_bulkhead_ept());
        // Single-context without the INVEPT bit means nothing.
        assert_eq!(InveptType::best(EptVpidCapabilities(1 << 25)), None);
        // Address bits clamped to what a table holds.
        assert_eq!(caps.table_options(57).host_address_bits, 52);
        assert_eq!(caps.table_options(0).host_address_bits, 32);
    }
}
