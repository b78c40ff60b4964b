//! The capability MSR values one CPU reports, and the control values
//! Bulkhead runs every partition with (SDM Vol. 3D Appendix A; Vol. 3C
//! §25.6-§25.8 for the controls' meaning).

use super::controls::{
    ControlError, EntryControls, ExitControls, PinBasedControls, PrimaryControls, SecondaryControls, VmxBasic, adjust,
};
use super::vmcs::FixedBits;

/// The VMX capability MSR values the caller read with RDMSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxCapabilities {
    /// IA32_VMX_BASIC.
    pub basic: VmxBasic,
    /// Pin-based capability, from the MSR
    /// [`ControlKind::capability_msr`](super::controls::ControlKind::capability_msr) names.
    pub pin_based: u64,
    /// Primary processor-based capability.
    pub primary: u64,
    /// IA32_VMX_PROCBASED_CTLS2, or 0 when the primary allowed-1 bit 63 is
    /// clear (the MSR then does not exist).
    pub secondary: u64,
    /// VM-exit capability.
    pub exit: u64,
    /// VM-entry capability.
    pub entry: u64,
    /// IA32_VMX_CR0_FIXED0/1.
    pub cr0: FixedBits,
    /// IA32_VMX_CR4_FIXED0/1.
    pub cr4: FixedBits,
}

impl VmxCapabilities {
    /// Whether the CPU lets every control of `controls` be 1 (the allowed-1
    /// settings, bits 63:32 of IA32_VMX_PROCBASED_CTLS2; 0 when that MSR
    /// does not exist).
    pub const fn allows_secondary(&self, controls: SecondaryControls) -> bool {
        let may_be_one = (self.secondary >> 32) as u32;
        controls.bits() & !may_be_one == 0
    }
}

/// The five control values for one VMCS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxControls {
    /// Pin-based VM-execution controls.
    pub pin_based: PinBasedControls,
    /// Primary processor-based VM-execution controls.
    pub primary: PrimaryControls,
    /// Secondary processor-based VM-execution controls.
    pub secondary: SecondaryControls,
    /// VM-exit controls.
    pub exit: ExitControls,
    /// VM-entry controls.
    pub entry: EntryControls,
}

impl VmxControls {
    /// Bulkhead's controls for a partition: external interrupts and NMIs
    /// exit (the host owns them), HLT exits, I/O and MSR accesses go through
    /// bitmaps, EPT and VPID on; unrestricted guest, RDTSCP, INVPCID and
    /// XSAVES pass-through where available; the host returns in 64-bit mode
    /// and acknowledges the interrupt itself; EFER, PAT and the debug
    /// controls are switched on every entry and exit.
    ///
    /// # Errors
    /// [`ControlError`] naming the first required control the CPU lacks.
    pub fn for_partition(capabilities: &VmxCapabilities) -> Result<VmxControls, ControlError> {
        let pin_based = adjust(
            capabilities.pin_based,
            PinBasedControls::EXTERNAL_INTERRUPT_EXITING | PinBasedControls::NMI_EXITING,
            PinBasedControls::VIRTUAL_NMIS,
        )?;
        let primary = adjust(
            capabilities.primary,
            PrimaryControls::HLT_EXITING
                | PrimaryControls::USE_IO_BITMAPS
                | PrimaryControls::USE_MSR_BITMAPS
                | PrimaryControls::ACTIVATE_SECONDARY_CONTROLS,
            PrimaryControls::empty(),
        )?;
        let secondary = adjust(
            capabilities.secondary,
            SecondaryControls::ENABLE_EPT | SecondaryControls::ENABLE_VPID,
            SecondaryControls::UNRESTRICTED_GUEST
                | SecondaryControls::ENABLE_RDTSCP
                | SecondaryControls::ENABLE_INVPCID
                | SecondaryControls::ENABLE_XSAVES_XRSTORS,
        )?;
        let exit = adjust(
            capabilities.exit,
            ExitControls::SAVE_DEBUG_CONTROLS
                | ExitControls::HOST_ADDRESS_SPACE_SIZE
                | ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT
                | ExitControls::SAVE_IA32_PAT
                | ExitControls::LOAD_IA32_PAT
                | ExitControls::SAVE_IA32_EFER
                | ExitControls::LOAD_IA32_EFER,
            ExitControls::empty(),
        )?;
        let entry = adjust(
            capabilities.entry,
            EntryControls::LOAD_DEBUG_CONTROLS
                | EntryControls::IA32E_MODE_GUEST
                | EntryControls::LOAD_IA32_PAT
                | EntryControls::LOAD_IA32_EFER,
            EntryControls::empty(),
        )?;
        Ok(VmxControls { pin_based, primary, secondary, exit, entry })
    }
}
