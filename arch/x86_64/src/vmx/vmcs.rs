//! VMCS field encodings (SDM Vol. 3D Appendix B) and the CR0/CR4 fixed bits.
//!
//! An encoding is the 32-bit operand of VMREAD/VMWRITE (SDM Vol. 3C
//! §25.11.2, Table 25-21 "Structure of VMCS Component Encoding"):
//!
//! | bits | meaning |
//! |---|---|
//! | 0 | access type: 0 full, 1 high 32 bits of a 64-bit field |
//! | 9:1 | index |
//! | 11:10 | type: 0 control, 1 VM-exit information (read-only), 2 guest state, 3 host state |
//! | 12 | reserved (0) |
//! | 14:13 | width: 0 16-bit, 1 64-bit, 2 32-bit, 3 natural width |
//! | 31:15 | reserved (0) |
//!
//! Only the fields Bulkhead reads or writes are listed; the rest of
//! Appendix B can be added with the same pattern.

/// A VMCS field, by its encoding. Each variant's value is the full-access
/// encoding from SDM Vol. 3D Appendix B (B.1: 16-bit, B.2: 64-bit, B.3:
/// 32-bit, B.4: natural-width fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(missing_docs)] // Variant names are the SDM field names verbatim.
pub enum VmcsField {
    // B.1.1 16-bit control fields.
    VirtualProcessorId = 0x0000,
    // B.1.2 16-bit guest-state fields.
    GuestEsSelector = 0x0800,
    GuestCsSelector = 0x0802,
    GuestSsSelector = 0x0804,
    GuestDsSelector = 0x0806,
    GuestFsSelector = 0x0808,
    GuestGsSelector = 0x080a,
    GuestLdtrSelector = 0x080c,
    GuestTrSelector = 0x080e,
    // B.1.3 16-bit host-state fields.
    HostEsSelector = 0x0c00,
    HostCsSelector = 0x0c02,
    HostSsSelector = 0x0c04,
    HostDsSelector = 0x0c06,
    HostFsSelector = 0x0c08,
    HostGsSelector = 0x0c0a,
    HostTrSelector = 0x0c0c,
    // B.2.1 64-bit control fields.
    IoBitmapA = 0x2000,
    IoBitmapB = 0x2002,
    MsrBitmap = 0x2004,
    VmExitMsrStoreAddress = 0x2006,
    VmExitMsrLoadAddress = 0x2008,
    VmEntryMsrLoadAddress = 0x200a,
    TscOffset = 0x2010,
    EptPointer = 0x201a,
    // B.2.2 64-bit read-only data field.
    GuestPhysicalAddress = 0x2400,
    // B.2.3 64-bit guest-state fields.
    VmcsLinkPointer = 0x2800,
    GuestIa32Debugctl = 0x2802,
    GuestIa32Pat = 0x2804,
    GuestIa32Efer = 0x2806,
    // B.2.4 64-bit host-state fields.
    HostIa32Pat = 0x2c00,
    HostIa32Efer = 0x2c02,
    // B.3.1 32-bit control fields.
    PinBasedControls = 0x4000,
    PrimaryProcessorBasedControls = 0x4002,
    ExceptionBitmap = 0x4004,
    PageFaultErrorCodeMask = 0x4006,
    PageFaultErrorCodeMatch = 0x4008,
    Cr3TargetCount = 0x400a,
    VmExitControls = 0x400c,
    VmExitMsrStoreCount = 0x400e,
    VmExitMsrLoadCount = 0x4010,
    VmEntryControls = 0x4012,
    VmEntryMsrLoadCount = 0x4014,
    VmEntryInterruptionInformation = 0x4016,
    VmEntryExceptionErrorCode = 0x4018,
    VmEntryInstructionLength = 0x401a,
    SecondaryProcessorBasedControls = 0x401e,
    // B.3.2 32-bit read-only data fields.
    VmInstructionError = 0x4400,
    ExitReason = 0x4402,
    VmExitInterruptionInformation = 0x4404,
    VmExitInterruptionErrorCode = 0x4406,
    IdtVectoringInformation = 0x4408,
    IdtVectoringErrorCode = 0x440a,
    VmExitInstructionLength = 0x440c,
    VmExitInstructionInformation = 0x440e,
    // B.3.3 32-bit guest-state fields.
    GuestEsLimit = 0x4800,
    GuestCsLimit = 0x4802,
    GuestSsLimit = 0x4804,
    GuestDsLimit = 0x4806,
    GuestFsLimit = 0x4808,
    GuestGsLimit = 0x480a,
    GuestLdtrLimit = 0x480c,
    GuestTrLimit = 0x480e,
    GuestGdtrLimit = 0x4810,
    GuestIdtrLimit = 0x4812,
    GuestEsAccessRights = 0x4814,
    GuestCsAccessRights = 0x4816,
    GuestSsAccessRights = 0x4818,
    GuestDsAccessRights = 0x481a,
    GuestFsAccessRights = 0x481c,
    GuestGsAccessRights = 0x481e,
    GuestLdtrAccessRights = 0x4820,
    GuestTrAccessRights = 0x4822,
    GuestInterruptibilityState = 0x4824,
    GuestActivityState = 0x4826,
    GuestIa32SysenterCs = 0x482a,
    // B.3.4 32-bit host-state field.
    HostIa32SysenterCs = 0x4c00,
    // B.4.1 natural-width control fields.
    Cr0GuestHostMask = 0x6000,
    Cr4GuestHostMask = 0x6002,
    Cr0ReadShadow = 0x6004,
    Cr4ReadShadow = 0x6006,
    // B.4.2 natural-width read-only data fields.
    ExitQualification = 0x6400,
    IoRcx = 0x6402,
    IoRsi = 0x6404,
    IoRdi = 0x6406,
    IoRip = 0x6408,
    GuestLinearAddress = 0x640a,
    // B.4.3 natural-width guest-state fields.
    GuestCr0 = 0x6800,
    GuestCr3 = 0x6802,
    GuestCr4 = 0x6804,
    GuestEsBase = 0x6806,
    GuestCsBase = 0x6808,
    GuestSsBase = 0x680a,
    GuestDsBase = 0x680c,
    GuestFsBase = 0x680e,
    GuestGsBase = 0x6810,
    GuestLdtrBase = 0x6812,
    GuestTrBase = 0x6814,
    GuestGdtrBase = 0x6816,
    GuestIdtrBase = 0x6818,
    GuestDr7 = 0x681a,
    GuestRsp = 0x681c,
    GuestRip = 0x681e,
    GuestRflags = 0x6820,
    GuestPendingDebugExceptions = 0x6822,
    GuestIa32SysenterEsp = 0x6824,
    GuestIa32SysenterEip = 0x6826,
    // B.4.4 natural-width host-state fields.
    HostCr0 = 0x6c00,
    HostCr3 = 0x6c02,
    HostCr4 = 0x6c04,
    HostFsBase = 0x6c06,
    HostGsBase = 0x6c08,
    HostTrBase = 0x6c0a,
    HostGdtrBase = 0x6c0c,
    HostIdtrBase = 0x6c0e,
    HostIa32SysenterEsp = 0x6c10,
    HostIa32SysenterEip = 0x6c12,
    HostRsp = 0x6c14,
    HostRip = 0x6c16,
}

/// Bits 14:13 of an encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldWidth {
    /// 0: 16-bit.
    Bits16,
    /// 1: 64-bit (bit 0 selects the full field or its high half).
    Bits64,
    /// 2: 32-bit.
    Bits32,
    /// 3: natural width (64 bits on a 64-bit host).
    Natural,
}

/// Bits 11:10 of an encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// 0: control.
    Control,
    /// 1: VM-exit information, read-only for VMWRITE unless
    /// IA32_VMX_MISC bit 29 is set.
    ReadOnly,
    /// 2: guest state.
    GuestState,
    /// 3: host state.
    HostState,
}

impl VmcsField {
    /// The encoding passed to VMREAD/VMWRITE.
    pub const fn encoding(self) -> u32 {
        self as u32
    }

    /// The field's width, from encoding bits 14:13.
    pub const fn width(self) -> FieldWidth {
        width_of(self.encoding())
    }

    /// The field's type, from encoding bits 11:10.
    pub const fn field_type(self) -> FieldType {
        type_of(self.encoding())
    }

    /// The encoding that reads or writes the high 32 bits of a 64-bit
    /// field (access type 1), or `None` for other widths.
    pub const fn high_half(self) -> Option<u32> {
        match self.width() {
            FieldWidth::Bits64 => Some(self.encoding() | 1),
            _ => None,
        }
    }

    /// Whether VMWRITE may write this field (read-only fields need
    /// IA32_VMX_MISC bit 29, which Bulkhead does not rely on).
    pub const fn is_writable(self) -> bool {
        !matches!(self.field_type(), FieldType::ReadOnly)
    }

    /// The mask of value bits the field holds on a 64-bit host.
    pub const fn value_mask(self) -> u64 {
        match self.width() {
            FieldWidth::Bits16 => 0xffff,
            FieldWidth::Bits32 => 0xffff_ffff,
            FieldWidth::Bits64 | FieldWidth::Natural => u64::MAX,
        }
    }
}

/// The width encoded in bits 14:13 of any encoding.
pub const fn width_of(encoding: u32) -> FieldWidth {
    match (encoding >> 13) & 3 {
        0 => FieldWidth::Bits16,
        1 => FieldWidth::Bits64,
        2 => FieldWidth::Bits32,
        _ => FieldWidth::Natural,
    }
}

/// The type encoded in bits 11:10 of any encoding.
pub const fn type_of(encoding: u32) -> FieldType {
    match (encoding >> 10) & 3 {
        0 => FieldType::Control,
        1 => FieldType::ReadOnly,
        2 => FieldType::GuestState,
        _ => FieldType::HostState,
    }
}

/// IA32_VMX_CR0_FIXED0/1 or IA32_VMX_CR4_FIXED0/1 (SDM Vol. 3D
/// Appendix A.7, A.8): a bit set in `fixed0` must be 1 in VMX operation, a
/// bit clear in `fixed1` must be 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedBits {
    /// IA32_VMX_CR0_FIXED0 (0x486) or IA32_VMX_CR4_FIXED0 (0x488).
    pub fixed0: u64,
    /// IA32_VMX_CR0_FIXED1 (0x487) or IA32_VMX_CR4_FIXED1 (0x489).
    pub fixed1: u64,
}

impl FixedBits {
    /// MSR index of IA32_VMX_CR0_FIXED0; FIXED1 is the next index.
    pub const CR0_FIXED0_MSR: u32 = 0x486;
    /// MSR index of IA32_VMX_CR4_FIXED0; FIXED1 is the next index.
    pub const CR4_FIXED0_MSR: u32 = 0x488;

    /// `value` with the fixed-1 bits set and the fixed-0 bits cleared.
    pub const fn apply(self, value: u64) -> u64 {
        (value | self.fixed0) & self.fixed1
    }

    /// The bits VMX operation pins (either way): the guest/host mask that
    /// makes guest writes to them exit and guest reads see the read shadow.
    pub const fn pinned(self) -> u64 {
        self.fixed0 | !self.fixed1
    }

    /// CR0 fixed bits for a guest with "unrestricted guest" set: PE (bit 0)
    /// and PG (bit 31) are exempt from FIXED0 (SDM §27.3.1.1).
    pub const fn unrestricted_cr0(self) -> FixedBits {
        FixedBits { fixed0: self.fixed0 & !((1 << 0) | (1 << 31)), fixed1: self.fixed1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_appendix_b() {
        use FieldType::*;
        use FieldWidth::*;
        // (field, documented encoding, width, type), Appendix B tables B-1..B-14.
        let table = [
            (VmcsField::VirtualProcessorId, 0x0000, Bits16, Control),
            (VmcsField::GuestCsSelector, 0x0802, Bits16, GuestState),
            (VmcsField::GuestTrSelector, 0x080e, Bits16, GuestState),
            (VmcsField::HostTrSelector, 0x0c0c, Bits16, HostState),
            (VmcsField::IoBitmapA, 0x2000, Bits64, Control),
            (VmcsField::MsrBitmap, 0x2004, Bits64, Control),
            (VmcsField::EptPointer, 0x201a, Bits64, Control),
            (VmcsField::GuestPhysicalAddress, 0x2400, Bits64, ReadOnly),
            (VmcsField::VmcsLinkPointer, 0x2800, Bits64, GuestState),
            (VmcsField::GuestIa32Efer, 0x2806, Bits64, GuestState),
            (VmcsField::HostIa32Efer, 0x2c02, Bits64, HostState),
            (VmcsField::PinBasedControls, 0x4000, Bits32, Control),
            (VmcsField::PrimaryProcessorBasedControls, 0x4002, Bits32, Control),
            (VmcsField::VmExitControls, 0x400c, Bits32, Control),
            (VmcsField::VmEntryControls, 0x4012, Bits32, Control),
            (VmcsField::SecondaryProcessorBasedControls, 0x401e, Bits32, Control),
            (VmcsField::VmInstructionError, 0x4400, Bits32, ReadOnly),
            (VmcsField::ExitReason, 0x4402, Bits32, ReadOnly),
            (VmcsField::VmExitInstructionLength, 0x440c, Bits32, ReadOnly),
            (VmcsField::GuestCsAccessRights, 0x4816, Bits32, GuestState),
            (VmcsField::GuestActivityState, 0x4826, Bits32, GuestState),
            (VmcsField::HostIa32SysenterCs, 0x4c00, Bits32, HostState),
            (VmcsField::Cr0GuestHostMask, 0x6000, Natural, Control),
            (VmcsField::Cr4ReadShadow, 0x6006, Natural, Control),
            (VmcsField::ExitQualification, 0x6400, Natural, ReadOnly),
            (VmcsField::GuestLinearAddress, 0x640a, Natural, ReadOnly),
            (VmcsField::GuestCr0, 0x6800, Natural, GuestState),
            (VmcsField::GuestRsp, 0x681c, Natural, GuestState),
            (VmcsField::GuestRip, 0x681e, Natural, GuestState),
            (VmcsField::GuestRflags, 0x6820, Natural, GuestState),
            (VmcsField::HostCr3, 0x6c02, Natural, HostState),
            (VmcsField::HostRsp, 0x6c14, Natural, HostState),
            (VmcsField::HostRip, 0x6c16, Natural, HostState),
        ];
        for (field, encoding, width, kind) in table {
            assert_eq!(field.encoding(), encoding, "{field:?}");
            assert_eq!(field.width(), width, "{field:?}");
            assert_eq!(field.field_type(), kind, "{field:?}");
            // Bits 12 and 31:15 reserved, access type full.
            assert_eq!(encoding & 0xffff_9001, 0, "{field:?}");
        }
    }

    #[test]
    fn high_half_and_writability() {
        assert_eq!(VmcsField::EptPointer.high_half(), Some(0x201b));
        assert_eq!(VmcsField::GuestRip.high_half(), None);
        assert!(!VmcsField::ExitReason.is_writable());
        assert!(VmcsField::GuestRip.is_writable());
        assert_eq!(VmcsField::GuestCsSelector.value_mask(), 0xffff);
        assert_eq!(width_of(0x6c16), FieldWidth::Natural);
        assert_eq!(type_of(0x6c16), FieldType::HostState);
    }

    #[test]
    fn fixed_bits_force_ones_and_clear_zeros() {
        // Typical CR0: FIXED0 = PE | NE | PG, FIXED1 = all ones in bits 31:0.
        let cr0 = FixedBits { fixed0: 0x8000_0021, fixed1: 0xffff_ffff };
        assert_eq!(cr0.apply(0), 0x8000_0021);
        // A bit above 31 is fixed to 0.
        assert_eq!(cr0.apply(1 << 40 | 0x8000_0001), 0x8000_0021);
        // Typical CR4: VMXE (bit 13) fixed 1; FIXED1 allows bits 0-22 only.
        let cr4 = FixedBits { fixed0: 0x2000, fixed1: 0x007f_ffff };
        assert_eq!(cr4.apply(0x20 | (1 << 23)), 0x2020);
        assert_eq!(cr4.pinned(), 0xffff_ffff_ff80_2000);
        let relaxed = cr0.unrestricted_cr0();
        assert_eq!(relaxed.apply(0), 0x20);
    }
}
