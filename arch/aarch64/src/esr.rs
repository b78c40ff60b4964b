//! Decoding `ESR_EL2`, the syndrome of an exception taken to EL2.
//!
//! Field positions follow the Arm ARM (DDI 0487), D24.2.41 `ESR_EL2`:
//! EC in bits 31:26, IL in bit 25, ISS in bits 24:0. Data-abort ISS fields
//! follow "ISS encoding for an exception from a Data Abort".

use core::fmt;

/// Exception classes Bulkhead handles or names (`ESR_EL2.EC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    /// 0x00: unknown reason (e.g. an undefined instruction).
    Unknown,
    /// 0x01: trapped `WFI`/`WFE`.
    WfiWfe,
    /// 0x07: trapped SVE, Advanced SIMD or FP access.
    FpAccess,
    /// 0x16: `HVC` from AArch64.
    Hvc64,
    /// 0x17: trapped `SMC` from AArch64.
    Smc64,
    /// 0x18: trapped `MSR`/`MRS`/system instruction.
    SysReg,
    /// 0x20: instruction abort from a lower exception level.
    InstructionAbortLower,
    /// 0x21: instruction abort at EL2.
    InstructionAbortSame,
    /// 0x22: PC alignment fault.
    PcAlignment,
    /// 0x24: data abort from a lower exception level.
    DataAbortLower,
    /// 0x25: data abort at EL2.
    DataAbortSame,
    /// 0x26: SP alignment fault.
    SpAlignment,
    /// 0x2f: SError.
    SError,
    /// 0x3c: `BRK` from AArch64.
    Brk64,
    /// Any other class, with its number.
    Other(u8),
}

impl ExceptionClass {
    /// Decodes the EC field value.
    pub const fn from_ec(ec: u8) -> ExceptionClass {
        match ec {
            0x00 => ExceptionClass::Unknown,
            0x01 => ExceptionClass::WfiWfe,
            0x07 => ExceptionClass::FpAccess,
            0x16 => ExceptionClass::Hvc64,
            0x17 => ExceptionClass::Smc64,
            0x18 => ExceptionClass::SysReg,
            0x20 => ExceptionClass::InstructionAbortLower,
            0x21 => ExceptionClass::InstructionAbortSame,
            0x22 => ExceptionClass::PcAlignment,
            0x24 => ExceptionClass::DataAbortLower,
            0x25 => ExceptionClass::DataAbortSame,
            0x26 => ExceptionClass::SpAlignment,
            0x2f => ExceptionClass::SError,
            0x3c => ExceptionClass::Brk64,
            other => ExceptionClass::Other(other),
        }
    }
}

/// A decoded `ESR_EL2` value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Esr(pub u64);

impl Esr {
    /// The raw EC field.
    pub const fn ec(self) -> u8 {
        ((self.0 >> 26) & 0x3f) as u8
    }

    /// The exception class.
    pub const fn class(self) -> ExceptionClass {
        ExceptionClass::from_ec(self.ec())
    }

    /// IL: the trapped instruction was 32 bits long.
    pub const fn is_32bit_instruction(self) -> bool {
        self.0 & (1 << 25) != 0
    }

    /// The instruction-specific syndrome, bits 24:0.
    pub const fn iss(self) -> u32 {
        (self.0 & 0x1ff_ffff) as u32
    }

    /// For `HVC`/`SMC`: the 16-bit immediate.
    pub const fn call_immediate(self) -> u16 {
        (self.iss() & 0xffff) as u16
    }

    /// For aborts: the fault status code (DFSC/IFSC, bits 5:0).
    pub const fn fault_status(self) -> u8 {
        (self.iss() & 0x3f) as u8
    }

    /// For data aborts: WnR, the access was a write.
    pub const fn is_write(self) -> bool {
        self.iss() & (1 << 6) != 0
    }

    /// For data aborts: ISV, the syndrome describes the access (size, register).
    pub const fn has_valid_syndrome(self) -> bool {
        self.iss() & (1 << 24) != 0
    }

    /// For data aborts with a valid syndrome: access size in bytes.
    pub const fn access_size(self) -> u8 {
        1 << ((self.iss() >> 22) & 0x3)
    }

    /// For data aborts with a valid syndrome: the transfer register (SRT).
    pub const fn transfer_register(self) -> u8 {
        ((self.iss() >> 16) & 0x1f) as u8
    }

    /// For data aborts with a valid syndrome: SSE, sign-extend the loaded value.
    pub const fn sign_extend(self) -> bool {
        self.iss() & (1 << 21) != 0
    }

    /// For data aborts with a valid syndrome: SF, the register is 64-bit.
    pub const fn sixty_four_bit_register(self) -> bool {
        self.iss() & (1 << 15) != 0
    }

    /// For aborts: S1PTW, the fault happened on a stage-2 walk of a stage-1 table.
    pub const fn on_stage1_walk(self) -> bool {
        self.iss() & (1 << 7) != 0
    }

    /// For aborts: the fault status code is a permission fault (DFSC/IFSC
    /// 0b0011xx, any level).
    pub const fn is_permission_fault(self) -> bool {
        self.fault_status() & 0x3c == 0x0c
    }

    /// For data aborts: FnV, `FAR_EL2` does not hold the faulting address.
    pub const fn far_not_valid(self) -> bool {
        self.iss() & (1 << 10) != 0
    }

    /// For data aborts: CM, the fault came from a cache maintenance or
    /// address translation instruction, not a load or store.
    pub const fn is_cache_maintenance(self) -> bool {
        self.iss() & (1 << 8) != 0
    }

    /// Whether the fault status code is a translation, access-flag or
    /// permission fault: those for which `HPFAR_EL2` holds the faulting IPA.
    pub const fn fault_has_ipa(self) -> bool {
        matches!(self.fault_status() & 0x3c, 0x04 | 0x08 | 0x0c)
    }

    /// A short name for the fault status code.
    pub const fn fault_name(self) -> &'static str {
        match self.fault_status() {
            0x04..=0x07 => "translation fault",
            0x08..=0x0b => "access flag fault",
            0x0c..=0x0f => "permission fault",
            0x10 => "synchronous external abort",
            0x21 => "alignment fault",
            0x30 => "TLB conflict",
            _ => "other fault",
        }
    }
}

impl fmt::Debug for Esr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ESR {:#010x} (EC {:#04x} {:?}, ISS {:#x})", self.0, self.ec(), self.class(), self.iss())
    }
}

/// A trapped `MSR`/`MRS` (EC 0x18), decoded from the ISS (Arm ARM D24.2.41,
/// "ISS encoding for an exception from MSR, MRS, or System instruction").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    /// Op0, Op1, CRn, CRm, Op2: the register's encoding.
    pub encoding: (u8, u8, u8, u8, u8),
    /// The general-purpose register transferred.
    pub register: u8,
    /// A read (`MRS`); else a write (`MSR`).
    pub read: bool,
}

/// `ICC_SGI1R_EL1`: op0 3, op1 0, CRn 12, CRm 11, op2 5.
pub const ICC_SGI1R_EL1: (u8, u8, u8, u8, u8) = (3, 0, 12, 11, 5);

impl SysRegAccess {
    /// Decodes the syndrome of a trapped system-register access.
    pub const fn decode(esr: Esr) -> SysRegAccess {
        let iss = esr.iss();
        SysRegAccess {
            encoding: (
                ((iss >> 20) & 0x3) as u8,
                ((iss >> 14) & 0x7) as u8,
                ((iss >> 10) & 0xf) as u8,
                ((iss >> 1) & 0xf) as u8,
                ((iss >> 17) & 0x7) as u8,
            ),
            register: ((iss >> 5) & 0x1f) as u8,
            read: iss & 1 != 0,
        }
    }

    /// Whether this is a write of `ICC_SGI1R_EL1` (a guest sending an SGI).
    pub const fn is_sgi1r_write(&self) -> bool {
        !self.read
            && self.encoding.0 == ICC_SGI1R_EL1.0
            && self.encoding.1 == ICC_SGI1R_EL1.1
            && self.encoding.2 == ICC_SGI1R_EL1.2
            && self.encoding.3 == ICC_SGI1R_EL1.3
            && self.encoding.4 == ICC_SGI1R_EL1.4
    }
}

/// The intermediate physical address of a stage-2 fault: `HPFAR_EL2.FIPA`
/// (bits 47:4 hold IPA bits 55:12 with FEAT_LPA2; bits 43:4 otherwise) plus
/// the page offset from `FAR_EL2`.
pub const fn fault_ipa(hpfar: u64, far: u64) -> u64 {
    ((hpfar >> 4) & 0xfff_ffff_ffff) << 12 | (far & 0xfff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_hypercall() {
        let esr = Esr(0x5a00_0000);
        assert_eq!(esr.class(), ExceptionClass::Hvc64);
        assert!(esr.is_32bit_instruction());
        assert_eq!(esr.call_immediate(), 0);
    }

    #[test]
    fn decodes_a_stage2_translation_fault_on_a_load() {
        // EC 0x24, IL, ISV, SAS=3 (8 bytes), SRT=1, WnR=0, DFSC=0x06 (level 2 translation).
        let esr = Esr(0x9200_0000 | (1 << 24) | (3 << 22) | (1 << 16) | 0x06);
        assert_eq!(esr.class(), ExceptionClass::DataAbortLower);
        assert!(!esr.is_write());
        assert!(esr.has_valid_syndrome());
        assert_eq!(esr.access_size(), 8);
        assert_eq!(esr.transfer_register(), 1);
        assert!(esr.fault_has_ipa());
        assert_eq!(esr.fault_name(), "translation fault");
        let write = Esr(0x9200_0000 | (1 << 6) | 0x0f);
        assert!(write.is_write());
        assert_eq!(write.fault_name(), "permission fault");
        assert!(!Esr(0x9200_0021).fault_has_ipa());
        assert!(write.is_permission_fault());
        assert!(!esr.is_permission_fault());
        assert!(!write.is_cache_maintenance());
        assert!(Esr(0x9200_0000 | (1 << 8) | (1 << 6) | 0x0f).is_cache_maintenance());
    }

    #[test]
    fn computes_the_faulting_ipa() {
        // IPA 0x1_0000_0123: HPFAR holds IPA[47:12] in bits 43:4.
        assert_eq!(fault_ipa(0x100_0000, 0xffff_0123), 0x1_0000_0123);
        assert_eq!(fault_ipa(0x4_0000, 0x8), 0x400_0008);
    }

    #[test]
    fn decodes_a_trapped_sgi1r_write() {
        // MSR ICC_SGI1R_EL1, x3: Op0=3 Op2=5 Op1=0 CRn=12 Rt=3 CRm=11 write.
        let iss = (3 << 20) | (5 << 17) | (12 << 10) | (3 << 5) | (11 << 1);
        let access = SysRegAccess::decode(Esr((0x18 << 26) | (1 << 25) | iss));
        assert_eq!(access.encoding, ICC_SGI1R_EL1);
        assert_eq!(access.register, 3);
        assert!(access.is_sgi1r_write());
        assert!(!SysRegAccess::decode(Esr((0x18 << 26) | iss | 1)).is_sgi1r_write(), "a read");
    }

    #[test]
    fn data_abort_register_width_and_sign() {
        let esr = Esr(0x9200_0000 | (1 << 24) | (1 << 21) | (1 << 15));
        assert!(esr.sign_extend());
        assert!(esr.sixty_four_bit_register());
    }

    #[test]
    fn names_unknown_classes() {
        assert_eq!(Esr(0x3f << 26).class(), ExceptionClass::Other(0x3f));
        assert_eq!(Esr(0).class(), ExceptionClass::Unknown);
    }
}
