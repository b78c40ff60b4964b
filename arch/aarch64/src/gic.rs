//! The GICv3 CPU interface at EL2: the physical interface the hypervisor
//! acknowledges interrupts through (`ICC_*`), and the virtual interface it
//! injects them through (`ICH_*`, list registers).
//!
//! Register encodings from the GICv3/v4 architecture specification (IHI 0069)
//! §12; list register layout §12.5.11 (`ICH_LR<n>_EL2`).

/// `ICH_LR<n>_EL2.State` (bits 63:62).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrState {
    /// 0b00: the LR is free.
    Invalid,
    /// 0b01.
    Pending,
    /// 0b10.
    Active,
    /// 0b11.
    PendingActive,
}

/// A list register's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListRegister {
    /// The virtual INTID the guest sees.
    pub vintid: u32,
    /// For a hardware interrupt: the physical INTID deactivated when the guest
    /// deactivates the virtual one (`HW` = 1).
    pub pintid: Option<u32>,
    /// Priority (bits 55:48).
    pub priority: u8,
    /// Its state.
    pub state: LrState,
}

impl ListRegister {
    /// The `ICH_LR<n>_EL2` value, Group 1.
    pub const fn encode(&self) -> u64 {
        let state = match self.state {
            LrState::Invalid => 0,
            LrState::Pending => 1,
            LrState::Active => 2,
            LrState::PendingActive => 3,
        };
        let (hw, pintid) = match self.pintid {
            Some(p) => (1u64, (p as u64) & 0x1fff),
            None => (0, 0),
        };
        (state << 62) | (hw << 61) | (1 << 60) | ((self.priority as u64) << 48) | (pintid << 32) | self.vintid as u64
    }

    /// Decodes an `ICH_LR<n>_EL2` value.
    pub const fn decode(value: u64) -> ListRegister {
        let state = match value >> 62 {
            0 => LrState::Invalid,
            1 => LrState::Pending,
            2 => LrState::Active,
            _ => LrState::PendingActive,
        };
        let pintid = if value & (1 << 61) != 0 { Some(((value >> 32) & 0x1fff) as u32) } else { None };
        ListRegister { vintid: value as u32, pintid, priority: (value >> 48) as u8, state }
    }
}

/// `ICH_HCR_EL2` bits: En (0) enables the virtual CPU interface; UIE (1)
/// raises a maintenance interrupt when at most one LR holds an interrupt.
pub const ICH_HCR_EN: u64 = 1 << 0;
/// See [`ICH_HCR_EN`].
pub const ICH_HCR_UIE: u64 = 1 << 1;

/// The maintenance interrupt's INTID (PPI 9, as QEMU `virt` and Linux use).
pub const MAINTENANCE_INTID: u32 = 25;
/// The EL1 virtual timer's INTID (PPI 11).
pub const VIRTUAL_TIMER_INTID: u32 = 27;
/// INTIDs 1020..=1023 are special: 1023 means "nothing pending".
pub const SPURIOUS_INTID: u32 = 1023;

/// Whether an acknowledged INTID is one of the special INTIDs 1020-1023
/// (IHI 0069 §2.2.1: nothing to handle, no EOI). LPIs (8192 and up) lie
/// above them, so "at least 1020" is not a test for "nothing pending".
pub const fn is_special_intid(intid: u32) -> bool {
    intid >= SPURIOUS_INTID - 3 && intid <= SPURIOUS_INTID
}

macro_rules! sysreg_rw {
    ($read:ident, $write:ident, $name:literal) => {
        /// Reads the register named in the function.
        pub fn $read() -> u64 {
            #[cfg(all(target_arch = "aarch64", not(test)))]
            {
                let value: u64;
                // SAFETY: reading a GIC system register at EL2 has no side effects.
                unsafe { core::arch::asm!(concat!("mrs {}, ", $name), out(reg) value, options(nostack)) };
                value
            }
            #[cfg(not(all(target_arch = "aarch64", not(test))))]
            0
        }

        /// Writes the register named in the function.
        pub fn $write(value: u64) {
            #[cfg(all(target_arch = "aarch64", not(test)))]
            // SAFETY: the callers in this module's users only write values
            // the GIC specification allows for the register.
            unsafe {
                core::arch::asm!(concat!("msr ", $name, ", {}"), in(reg) value, options(nostack))
            };
            #[cfg(not(all(target_arch = "aarch64", not(test))))]
            let _ = value;
        }
    };
}

sysreg_rw!(read_icc_sre_el2, write_icc_sre_el2, "icc_sre_el2");
sysreg_rw!(read_icc_ctlr_el1, write_icc_ctlr_el1, "icc_ctlr_el1");
sysreg_rw!(read_icc_pmr_el1, write_icc_pmr_el1, "icc_pmr_el1");
sysreg_rw!(read_icc_igrpen1_el1, write_icc_igrpen1_el1, "icc_igrpen1_el1");
sysreg_rw!(read_ich_hcr_el2, write_ich_hcr_el2, "ich_hcr_el2");
sysreg_rw!(read_ich_vmcr_el2, write_ich_vmcr_el2, "ich_vmcr_el2");

/// `ICH_VTR_EL2`: bits 4:0 are the number of list registers minus one.
pub fn list_register_count() -> usize {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    {
        let value: u64;
        // SAFETY: reading ICH_VTR_EL2 has no side effects.
        unsafe { core::arch::asm!("mrs {}, ich_vtr_el2", out(reg) value, options(nostack)) };
        (value & 0x1f) as usize + 1
    }
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    4
}

/// `ICH_ELRSR_EL2`: bit n set when LR n holds no interrupt.
pub fn empty_list_registers() -> u64 {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    {
        let value: u64;
        // SAFETY: reading ICH_ELRSR_EL2 has no side effects.
        unsafe { core::arch::asm!("mrs {}, ich_elrsr_el2", out(reg) value, options(nostack)) };
        value
    }
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    0xf
}

macro_rules! lr_access {
    ($($n:literal => $name:literal),* $(,)?) => {
        /// Reads list register `n` (0..16).
        pub fn read_lr(n: usize) -> u64 {
            match n {
                $(
                    #[cfg(all(target_arch = "aarch64", not(test)))]
                    $n => {
                        let value: u64;
                        // SAFETY: reading a list register has no side effects.
                        unsafe { core::arch::asm!(concat!("mrs {}, ", $name), out(reg) value, options(nostack)) };
                        value
                    }
                )*
                _ => 0,
            }
        }

        /// Writes list register `n` (0..16); others are ignored.
        pub fn write_lr(n: usize, value: u64) {
            match n {
                $(
                    #[cfg(all(target_arch = "aarch64", not(test)))]
                    // SAFETY: a list register only affects the guest's
                    // virtual interrupts on this CPU.
                    $n => unsafe { core::arch::asm!(concat!("msr ", $name, ", {}"), in(reg) value, options(nostack)) },
                )*
                _ => { let _ = value; }
            }
        }
    };
}

lr_access!(
    0 => "ich_lr0_el2", 1 => "ich_lr1_el2", 2 => "ich_lr2_el2", 3 => "ich_lr3_el2",
    4 => "ich_lr4_el2", 5 => "ich_lr5_el2", 6 => "ich_lr6_el2", 7 => "ich_lr7_el2",
    8 => "ich_lr8_el2", 9 => "ich_lr9_el2", 10 => "ich_lr10_el2", 11 => "ich_lr11_el2",
    12 => "ich_lr12_el2", 13 => "ich_lr13_el2", 14 => "ich_lr14_el2", 15 => "ich_lr15_el2",
);

/// Acknowledges the highest-priority pending Group 1 interrupt
/// (`ICC_IAR1_EL1`); [`SPURIOUS_INTID`] when there is none.
pub fn acknowledge() -> u32 {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    {
        let value: u64;
        // SAFETY: acknowledging changes the interrupt's state, which the caller
        // then completes with `end_of_interrupt`.
        unsafe { core::arch::asm!("mrs {}, icc_iar1_el1", out(reg) value, options(nostack)) };
        (value & 0xff_ffff) as u32
    }
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    SPURIOUS_INTID
}

/// Priority drop (`ICC_EOIR1_EL1`); with `EOImode` = 1 the interrupt stays
/// active until [`deactivate`] or a guest's deactivation of a HW list register.
pub fn end_of_interrupt(intid: u32) {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    // SAFETY: completes an interrupt this CPU acknowledged.
    unsafe {
        core::arch::asm!("msr icc_eoir1_el1, {}", "isb", in(reg) u64::from(intid), options(nostack))
    };
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    let _ = intid;
}

/// Deactivation (`ICC_DIR_EL1`).
pub fn deactivate(intid: u32) {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    // SAFETY: deactivates an interrupt this CPU acknowledged.
    unsafe {
        core::arch::asm!("msr icc_dir_el1, {}", "isb", in(reg) u64::from(intid), options(nostack))
    };
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    let _ = intid;
}

/// `ICC_SGI1R_EL1` value sending SGI `intid` to the CPUs whose MPIDR Aff0 is
/// in `target_list` within affinity `aff3.aff2.aff1` (IHI 0069 §12.2.23).
pub const fn sgi1r(intid: u8, aff3: u8, aff2: u8, aff1: u8, target_list: u16) -> u64 {
    ((aff3 as u64) << 48) | ((aff2 as u64) << 32) | (((intid & 0xf) as u64) << 24) | ((aff1 as u64) << 16) | target_list as u64
}

/// Sends a physical SGI.
pub fn send_sgi(value: u64) {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    // SAFETY: generating an SGI only raises an interrupt at the targets.
    unsafe {
        core::arch::asm!("dsb ishst", "msr icc_sgi1r_el1, {}", "isb", in(reg) value, options(nostack))
    };
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    let _ = value;
}

/// A guest's `ICC_SGI1R_EL1` write, decoded (IHI 0069 §12.2.23).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SgiRequest {
    /// The SGI (0..16).
    pub intid: u8,
    /// IRM: to every PE but the sender (the target list is ignored).
    pub all_but_self: bool,
    /// Aff3.Aff2.Aff1 of the targets, packed as `aff3 << 16 | aff2 << 8 | aff1`.
    pub affinity: u32,
    /// Aff0 values, as a bit set.
    pub target_list: u16,
    /// RS: the target list covers Aff0 values `16 * rs ..`.
    pub range_selector: u8,
}

impl SgiRequest {
    /// Decodes the written value.
    pub const fn decode(value: u64) -> SgiRequest {
        SgiRequest {
            intid: ((value >> 24) & 0xf) as u8,
            all_but_self: value & (1 << 40) != 0,
            affinity: ((((value >> 48) & 0xff) << 16) | (((value >> 32) & 0xff) << 8) | ((value >> 16) & 0xff)) as u32,
            target_list: value as u16,
            range_selector: ((value >> 44) & 0xf) as u8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_registers_round_trip() {
        let lr = ListRegister { vintid: 27, pintid: Some(27), priority: 0xa0, state: LrState::Pending };
        let value = lr.encode();
        assert_eq!(value, (1 << 62) | (1 << 61) | (1 << 60) | (0xa0 << 48) | (27 << 32) | 27);
        assert_eq!(ListRegister::decode(value), lr);
        let soft = ListRegister { vintid: 3, pintid: None, priority: 0x80, state: LrState::PendingActive };
        assert_eq!(ListRegister::decode(soft.encode()), soft);
        assert_eq!(ListRegister::decode(0).state, LrState::Invalid);
    }

    #[test]
    fn sgi_requests_decode() {
        let value = sgi1r(5, 0, 0, 0, 0b10);
        let request = SgiRequest::decode(value);
        assert_eq!(request.intid, 5);
        assert_eq!(request.target_list, 0b10);
        assert!(!request.all_but_self);
        assert!(SgiRequest::decode(1 << 40).all_but_self);
        assert_eq!(SgiRequest::decode(sgi1r(1, 1, 2, 3, 0)).affinity, 0x01_0203);
    }
}

#[cfg(test)]
mod special_intid_tests {
    use super::*;

    #[test]
    fn special_intids_are_1020_to_1023_and_lpis_are_not() {
        assert!(!is_special_intid(1019));
        assert!((1020..=1023).all(is_special_intid));
        assert!(!is_special_intid(8192));
        assert!(!is_special_intid(27));
    }
}
