//! VMX capability MSRs and the control values derived from them.
//!
//! Each VM-execution, VM-exit and VM-entry control field has a capability
//! MSR (SDM Vol. 3D Appendix A.3-A.5): bits 31:0 are the allowed 0-settings
//! (bit X set: control X must be 1) and bits 63:32 the allowed 1-settings
//! (bit 32+X clear: control X must be 0). When IA32_VMX_BASIC bit 55 is set,
//! the TRUE_* MSRs replace the pin-based, primary processor-based, exit and
//! entry ones; they may allow some "default1" controls to be 0 (A.2).
//!
//! [`adjust`] computes the value to VMWRITE, following SDM Vol. 3C §32.5.1
//! "Algorithms for Determining VMX Capabilities": must-be-one bits forced on,
//! default1 bits this crate does not name left at 1, every required control
//! checked against the allowed-1 settings. A required control the CPU does
//! not allow is a [`ControlError`] naming the field and bit, never dropped;
//! optional controls are set only where allowed.

/// IA32_VMX_BASIC (SDM Vol. 3D Appendix A.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxBasic(pub u64);

impl VmxBasic {
    /// The MSR index of IA32_VMX_BASIC.
    pub const MSR: u32 = 0x480;

    /// Bits 30:0: the VMCS revision identifier, written to the first 4 bytes
    /// of the VMXON region and of each VMCS.
    pub const fn revision_id(self) -> u32 {
        (self.0 & 0x7fff_ffff) as u32
    }

    /// Bits 44:32: bytes to allocate for the VMXON region and each VMCS
    /// (at most 4096).
    pub const fn region_size(self) -> u32 {
        ((self.0 >> 32) & 0x1fff) as u32
    }

    /// Bit 48: VMXON region, VMCS and the structures they point to must lie
    /// below 4 GiB.
    pub const fn addresses_limited_to_32_bits(self) -> bool {
        self.0 & (1 << 48) != 0
    }

    /// Bits 53:50: the memory type the CPU uses for the VMCS and the
    /// structures it references (6 = WB is the only one reported today).
    pub const fn memory_type(self) -> u8 {
        ((self.0 >> 50) & 0xf) as u8
    }

    /// Bit 54: VM exits caused by INS/OUTS report VM-exit instruction
    /// information.
    pub const fn reports_ins_outs_info(self) -> bool {
        self.0 & (1 << 54) != 0
    }

    /// Bit 55: the TRUE_* capability MSRs (0x48d-0x490) exist and must be
    /// used for the pin-based, primary processor-based, exit and entry
    /// controls.
    pub const fn true_controls(self) -> bool {
        self.0 & (1 << 55) != 0
    }
}

/// A control field that has a capability MSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlKind {
    /// Pin-based VM-execution controls (SDM §25.6.1; Appendix A.3.1).
    PinBased,
    /// Primary processor-based VM-execution controls (§25.6.2; A.3.2).
    PrimaryProcessorBased,
    /// Secondary processor-based VM-execution controls (§25.6.2; A.3.3).
    /// They apply only when primary control 31 is 1; their MSR exists only
    /// when the primary allowed-1 bit 63 is set, and has no TRUE_ variant.
    SecondaryProcessorBased,
    /// Primary VM-exit controls (§25.7.1; A.4).
    Exit,
    /// VM-entry controls (§25.8.1; A.5).
    Entry,
}

impl ControlKind {
    /// The capability MSR to read for this field, given IA32_VMX_BASIC.
    pub const fn capability_msr(self, basic: VmxBasic) -> u32 {
        let true_controls = basic.true_controls();
        match self {
            ControlKind::PinBased if true_controls => 0x48d, // IA32_VMX_TRUE_PINBASED_CTLS
            ControlKind::PinBased => 0x481,                  // IA32_VMX_PINBASED_CTLS
            ControlKind::PrimaryProcessorBased if true_controls => 0x48e, // IA32_VMX_TRUE_PROCBASED_CTLS
            ControlKind::PrimaryProcessorBased => 0x482,     // IA32_VMX_PROCBASED_CTLS
            ControlKind::SecondaryProcessorBased => 0x48b,   // IA32_VMX_PROCBASED_CTLS2
            ControlKind::Exit if true_controls => 0x48f,     // IA32_VMX_TRUE_EXIT_CTLS
            ControlKind::Exit => 0x483,                      // IA32_VMX_EXIT_CTLS
            ControlKind::Entry if true_controls => 0x490,    // IA32_VMX_TRUE_ENTRY_CTLS
            ControlKind::Entry => 0x484,                     // IA32_VMX_ENTRY_CTLS
        }
    }

    /// The "default1" class of this field (Appendix A.2): reserved or
    /// historical controls whose default setting is 1.
    pub const fn default1(self) -> u32 {
        match self {
            // Bits 1, 2, 4.
            ControlKind::PinBased => 0x0000_0016,
            // Bits 1, 4-6, 8, 13-16, 26.
            ControlKind::PrimaryProcessorBased => 0x0401_e172,
            ControlKind::SecondaryProcessorBased => 0,
            // Bits 0-8, 10, 11, 13, 14, 16, 17.
            ControlKind::Exit => 0x0003_6dff,
            // Bits 0-8, 12.
            ControlKind::Entry => 0x0000_11ff,
        }
    }

    /// The SDM name of the field.
    pub const fn name(self) -> &'static str {
        match self {
            ControlKind::PinBased => "pin-based VM-execution controls",
            ControlKind::PrimaryProcessorBased => "primary processor-based VM-execution controls",
            ControlKind::SecondaryProcessorBased => "secondary processor-based VM-execution controls",
            ControlKind::Exit => "VM-exit controls",
            ControlKind::Entry => "VM-entry controls",
        }
    }
}

bit_flags! {
    /// Pin-based VM-execution controls (SDM §25.6.1, Table 25-5).
    pub struct PinBasedControls {
        /// Bit 0: external interrupts cause VM exits.
        const EXTERNAL_INTERRUPT_EXITING = 0;
        /// Bit 3: NMIs cause VM exits.
        const NMI_EXITING = 3;
        /// Bit 5: virtual NMIs (NMI blocking tracked for the guest).
        const VIRTUAL_NMIS = 5;
    }
}

bit_flags! {
    /// Primary processor-based VM-execution controls (SDM §25.6.2,
    /// Table 25-6).
    pub struct PrimaryControls {
        /// Bit 7: HLT causes VM exits.
        const HLT_EXITING = 7;
        /// Bit 15: MOV to CR3 causes VM exits (default1; cleared with EPT).
        const CR3_LOAD_EXITING = 15;
        /// Bit 16: MOV from CR3 causes VM exits (default1; cleared with EPT).
        const CR3_STORE_EXITING = 16;
        /// Bit 24: every I/O instruction causes a VM exit (ignored when
        /// bit 25 is set).
        const UNCONDITIONAL_IO_EXITING = 24;
        /// Bit 25: I/O bitmaps A and B decide which ports exit (§25.6.4).
        const USE_IO_BITMAPS = 25;
        /// Bit 28: the MSR bitmap decides which RDMSR/WRMSR exit (§25.6.9).
        const USE_MSR_BITMAPS = 28;
        /// Bit 31: the secondary processor-based controls apply.
        const ACTIVATE_SECONDARY_CONTROLS = 31;
    }
}

bit_flags! {
    /// Secondary processor-based VM-execution controls (SDM §25.6.2,
    /// Table 25-7).
    pub struct SecondaryControls {
        /// Bit 1: enable EPT.
        const ENABLE_EPT = 1;
        /// Bit 3: RDTSCP runs in the guest (else it raises #UD).
        const ENABLE_RDTSCP = 3;
        /// Bit 5: enable VPID (cached translations tagged per guest).
        const ENABLE_VPID = 5;
        /// Bit 7: unrestricted guest (real mode and unpaged protected mode
        /// run natively; requires EPT).
        const UNRESTRICTED_GUEST = 7;
        /// Bit 12: INVPCID runs in the guest (else it raises #UD).
        const ENABLE_INVPCID = 12;
        /// Bit 20: XSAVES/XRSTORS run in the guest (else they raise #UD).
        const ENABLE_XSAVES_XRSTORS = 20;
    }
}

bit_flags! {
    /// Primary VM-exit controls (SDM §25.7.1, Table 25-13).
    pub struct ExitControls {
        /// Bit 2: save DR7 and IA32_DEBUGCTL on exit (default1).
        const SAVE_DEBUG_CONTROLS = 2;
        /// Bit 9: the host runs in 64-bit mode after the exit.
        const HOST_ADDRESS_SPACE_SIZE = 9;
        /// Bit 15: acknowledge the interrupt controller on an exit due to an
        /// external interrupt and store the vector in the exit
        /// interruption-information field.
        const ACKNOWLEDGE_INTERRUPT_ON_EXIT = 15;
        /// Bit 18: save the guest IA32_PAT.
        const SAVE_IA32_PAT = 18;
        /// Bit 19: load the host IA32_PAT.
        const LOAD_IA32_PAT = 19;
        /// Bit 20: save the guest IA32_EFER.
        const SAVE_IA32_EFER = 20;
        /// Bit 21: load the host IA32_EFER.
        const LOAD_IA32_EFER = 21;
    }
}

bit_flags! {
    /// VM-entry controls (SDM §25.8.1, Table 25-15).
    pub struct EntryControls {
        /// Bit 2: load DR7 and IA32_DEBUGCTL on entry (default1).
        const LOAD_DEBUG_CONTROLS = 2;
        /// Bit 9: the guest is in IA-32e mode after entry; must equal the
        /// guest IA32_EFER.LMA (§27.3.1.1).
        const IA32E_MODE_GUEST = 9;
        /// Bit 14: load the guest IA32_PAT.
        const LOAD_IA32_PAT = 14;
        /// Bit 15: load the guest IA32_EFER.
        const LOAD_IA32_EFER = 15;
    }
}

/// A typed control field: its kind and raw bits.
pub trait VmxControl: Copy {
    /// Which field this is.
    const KIND: ControlKind;
    /// The bits this crate names.
    const KNOWN: u32;
    /// The raw value.
    fn to_bits(self) -> u32;
    /// A value from raw bits, keeping unnamed ones.
    fn from_bits(bits: u32) -> Self;
    /// The name of the control at `bit`, if named.
    fn name_of(bit: u32) -> Option<&'static str>;
}

macro_rules! vmx_control {
    ($type:ident, $kind:ident) => {
        impl VmxControl for $type {
            const KIND: ControlKind = ControlKind::$kind;
            const KNOWN: u32 = $type::ALL.bits();
            fn to_bits(self) -> u32 {
                self.bits()
            }
            fn from_bits(bits: u32) -> Self {
                $type::from_bits_retain(bits)
            }
            fn name_of(bit: u32) -> Option<&'static str> {
                $type::bit_name(bit)
            }
        }
    };
}

vmx_control!(PinBasedControls, PinBased);
vmx_control!(PrimaryControls, PrimaryProcessorBased);
vmx_control!(SecondaryControls, SecondaryProcessorBased);
vmx_control!(ExitControls, Exit);
vmx_control!(EntryControls, Entry);

/// A required control that the CPU's capability MSR does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlError {
    /// The field.
    pub control: ControlKind,
    /// The lowest refused bit.
    pub bit: u32,
    /// The control's name ("ENABLE_EPT"), or `"unnamed"`.
    pub name: &'static str,
}

impl core::fmt::Display for ControlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} bit {} ({}) is not supported by this CPU", self.control.name(), self.bit, self.name)
    }
}

/// The value to write to a control field.
///
/// `capability` is the MSR that [`ControlKind::capability_msr`] names;
/// `required` controls must be allowed, `optional` ones are set only if
/// allowed. Must-be-one bits are forced on, and default1 bits that the
/// control type does not name are set wherever allowed (they keep their
/// default meaning on CPUs that let them be 0).
///
/// # Errors
/// [`ControlError`] for the lowest required bit whose allowed-1 setting is 0.
pub fn adjust<C: VmxControl>(capability: u64, required: C, optional: C) -> Result<C, ControlError> {
    let must_be_one = capability as u32; // Bits 31:0: allowed 0-settings.
    let may_be_one = (capability >> 32) as u32; // Bits 63:32: allowed 1-settings.
    let refused = required.to_bits() & !may_be_one;
    if refused != 0 {
        let bit = refused.trailing_zeros();
        return Err(ControlError { control: C::KIND, bit, name: C::name_of(bit).unwrap_or("unnamed") });
    }
    let unnamed_default1 = C::KIND.default1() & !C::KNOWN & may_be_one;
    let value = required.to_bits() | (optional.to_bits() & may_be_one) | must_be_one | unnamed_default1;
    Ok(C::from_bits(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bits 31:0 allowed-0, bits 63:32 allowed-1.
    const fn capability(must_be_one: u32, may_be_one: u32) -> u64 {
        ((may_be_one as u64) << 32) | must_be_one as u64
    }

    #[test]
    fn basic_fields() {
        // Revision 4, 4 KiB regions, WB, INS/OUTS info, TRUE controls.
        let basic = VmxBasic(0x00da_1000_0000_0004);
        assert_eq!(basic.revision_id(), 4);
        assert_eq!(basic.region_size(), 0x1000);
        assert_eq!(basic.memory_type(), 6);
        assert!(basic.reports_ins_outs_info());
        assert!(basic.true_controls());
        assert!(!basic.addresses_limited_to_32_bits());
        assert_eq!(ControlKind::PinBased.capability_msr(basic), 0x48d);
        assert_eq!(ControlKind::Entry.capability_msr(basic), 0x490);
        assert_eq!(ControlKind::SecondaryProcessorBased.capability_msr(basic), 0x48b);
        let old = VmxBasic(0x0000_1000_0000_0004);
        assert_eq!(ControlKind::PinBased.capability_msr(old), 0x481);
        assert_eq!(ControlKind::PrimaryProcessorBased.capability_msr(old), 0x482);
        assert_eq!(ControlKind::Exit.capability_msr(old), 0x483);
    }

    #[test]
    fn must_be_one_bits_are_forced_and_optional_ones_dropped_if_unavailable() {
        // Typical IA32_VMX_PINBASED_CTLS: default1 bits 1, 2, 4 forced; 0, 3, 5 allowed.
        let cap = capability(0x16, 0x3f);
        let value = adjust(cap, PinBasedControls::EXTERNAL_INTERRUPT_EXITING, PinBasedControls::empty()).unwrap();
        assert_eq!(value.bits(), 0x17);
        // Virtual NMIs as "if available": granted, then not.
        let value = adjust(cap, PinBasedControls::NMI_EXITING, PinBasedControls::VIRTUAL_NMIS).unwrap();
        assert_eq!(value.bits(), 0x16 | 0x08 | 0x20);
        let value = adjust(capability(0x16, 0x1f), PinBasedControls::NMI_EXITING, PinBasedControls::VIRTUAL_NMIS);
        assert_eq!(value.unwrap().bits(), 0x1e);
    }

    #[test]
    fn unsupported_required_control_is_an_error_naming_it() {
        // Secondary controls allowing everything but unrestricted guest (bit 7).
        let cap = capability(0, 0xffff_ff7f);
        let required = SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST;
        let error = adjust(cap, required, SecondaryControls::empty()).unwrap_err();
        assert_eq!(
            error,
            ControlError { control: ControlKind::SecondaryProcessorBased, bit: 7, name: "UNRESTRICTED_GUEST" }
        );
        // No secondary MSR (primary allowed-1 bit 31 clear): the caller passes 0.
        let error = adjust(0, SecondaryControls::ENABLE_EPT, SecondaryControls::empty()).unwrap_err();
        assert_eq!((error.bit, error.name), (1, "ENABLE_EPT"));
        // Unnamed required bits are reported too.
        let error = adjust(0, PinBasedControls::from_bits_retain(1 << 30), PinBasedControls::empty()).unwrap_err();
        assert_eq!((error.control, error.bit, error.name), (ControlKind::PinBased, 30, "unnamed"));
    }

    #[test]
    fn true_msrs_let_named_default1_controls_be_zero() {
        // TRUE_PROCBASED_CTLS on a CPU where CR3 load/store exiting may be 0
        // (0x0401_e172 minus bits 15, 16), everything allowed.
        let cap = capability(0x0400_6172, 0xffff_ffff);
        let required = PrimaryControls::HLT_EXITING
            | PrimaryControls::USE_IO_BITMAPS
            | PrimaryControls::USE_MSR_BITMAPS
            | PrimaryControls::ACTIVATE_SECONDARY_CONTROLS;
        let value = adjust(cap, required, PrimaryControls::empty()).unwrap();
        assert!(!value.contains(PrimaryControls::CR3_LOAD_EXITING));
        assert!(!value.contains(PrimaryControls::CR3_STORE_EXITING));
        assert_eq!(value.bits(), 0x0400_6172 | 0x9200_0080);
        // The non-TRUE MSR forces them.
        let value = adjust(capability(0x0401_e172, 0xffff_ffff), required, PrimaryControls::empty()).unwrap();
        assert!(value.contains(PrimaryControls::CR3_LOAD_EXITING | PrimaryControls::CR3_STORE_EXITING));
    }

    #[test]
    fn unnamed_default1_controls_stay_one_where_allowed() {
        // TRUE_EXIT_CTLS allowing every default1 bit to be 0: the unnamed
        // ones (0, 1, 3-8, 10, 11, 13, 14, 16, 17) stay 1, bit 2 follows the request.
        let cap = capability(0, 0xffff_ffff);
        let value = adjust(cap, ExitControls::HOST_ADDRESS_SPACE_SIZE, ExitControls::empty()).unwrap();
        assert_eq!(value.bits(), (0x0003_6dff & !(1 << 2)) | (1 << 9));
    }

    #[test]
    fn error_message_names_field_and_bit() {
        let error = ControlError { control: ControlKind::Entry, bit: 15, name: "LOAD_IA32_EFER" };
        let mut text = alloc::string::String::new();
        core::fmt::write(&mut text, format_args!("{error}")).unwrap();
        assert_eq!(text, "VM-entry controls bit 15 (LOAD_IA32_EFER) is not supported by this CPU");
    }
}
