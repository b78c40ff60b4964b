//! How a VMX instruction reports failure (SDM Vol. 3C §31.2 "Conventions"):
//! VMsucceed clears CF, PF, AF, ZF, SF and OF; VMfailInvalid (no current
//! VMCS, or VMXON itself failed) sets CF; VMfailValid sets ZF and stores an
//! error number in the current VMCS's VM-instruction error field (§31.4,
//! Table 31-1).

/// RFLAGS.CF.
const RFLAGS_CF: u64 = 1 << 0;
/// RFLAGS.ZF.
const RFLAGS_ZF: u64 = 1 << 6;

/// What RFLAGS says after a VMX instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// VMsucceed.
    Succeeded,
    /// VMfailInvalid (CF set).
    FailedInvalid,
    /// VMfailValid (ZF set): the VM-instruction error field says why.
    FailedValid,
}

impl Outcome {
    /// Decodes RFLAGS as the instruction left it. CF wins if both are set
    /// (the SDM never sets both).
    pub const fn from_rflags(rflags: u64) -> Outcome {
        if rflags & RFLAGS_CF != 0 {
            Outcome::FailedInvalid
        } else if rflags & RFLAGS_ZF != 0 {
            Outcome::FailedValid
        } else {
            Outcome::Succeeded
        }
    }
}

/// A VM-instruction error number (VMCS field 0x4400; SDM §31.4, Table 31-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstructionError(pub u32);

impl InstructionError {
    /// VMLAUNCH with non-clear VMCS: the VMCS was launched already, use
    /// VMRESUME.
    pub const VMLAUNCH_NON_CLEAR_VMCS: InstructionError = InstructionError(4);
    /// VMRESUME with non-launched VMCS.
    pub const VMRESUME_NON_LAUNCHED_VMCS: InstructionError = InstructionError(5);
    /// VM entry with invalid control field(s) (§27.2.1).
    pub const INVALID_CONTROL_FIELDS: InstructionError = InstructionError(7);
    /// VM entry with invalid host-state field(s) (§27.2.2, §27.2.3).
    pub const INVALID_HOST_STATE: InstructionError = InstructionError(8);

    /// The SDM's description of the error.
    pub const fn description(self) -> &'static str {
        match self.0 {
            1 => "VMCALL executed in VMX root operation",
            2 => "VMCLEAR with invalid physical address",
            3 => "VMCLEAR with VMXON pointer",
            4 => "VMLAUNCH with non-clear VMCS",
            5 => "VMRESUME with non-launched VMCS",
            6 => "VMRESUME after VMXOFF",
            7 => "VM entry with invalid control field(s)",
            8 => "VM entry with invalid host-state field(s)",
            9 => "VMPTRLD with invalid physical address",
            10 => "VMPTRLD with VMXON pointer",
            11 => "VMPTRLD with incorrect VMCS revision identifier",
            12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
            13 => "VMWRITE to read-only VMCS component",
            15 => "VMXON executed in VMX root operation",
            16 => "VM entry with invalid executive-VMCS pointer",
            17 => "VM entry with non-launched executive VMCS",
            18 => "VM entry with executive-VMCS pointer not VMXON pointer",
            19 => "VMCALL with non-clear VMCS",
            20 => "VMCALL with invalid VM-exit control fields",
            22 => "VMCALL with incorrect MSEG revision identifier",
            23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
            24 => "VMCALL with invalid SMM-monitor features",
            25 => "VM entry with invalid VM-execution control fields in executive VMCS",
            26 => "VM entry with events blocked by MOV SS",
            28 => "invalid operand to INVEPT/INVVPID",
            _ => "unknown VM-instruction error",
        }
    }
}

impl core::fmt::Display for InstructionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "VM-instruction error {} ({})", self.0, self.description())
    }
}

/// Why a VMX instruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxError {
    /// VMfailInvalid: no current VMCS (or VMXON failed outright).
    FailInvalid,
    /// VMfailValid, with the error the current VMCS recorded.
    FailValid(InstructionError),
    /// VMLAUNCH/VMRESUME fell through with RFLAGS showing neither failure;
    /// the SDM never does this, so it is reported rather than trusted.
    FellThrough {
        /// RFLAGS as the instruction left it.
        rflags: u64,
    },
}

impl core::fmt::Display for VmxError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VmxError::FailInvalid => f.write_str("VMfailInvalid (no current VMCS, or VMX is not on)"),
            VmxError::FailValid(error) => write!(f, "VMfailValid: {error}"),
            VmxError::FellThrough { rflags } => {
                write!(f, "VM entry fell through without a failure flag (RFLAGS {rflags:#x})")
            }
        }
    }
}

/// The world switch's result word: 0 after a VM exit, otherwise the RFLAGS
/// the failed VMWRITE/VMLAUNCH/VMRESUME left (never 0: bit 1 is always set).
pub const ENTERED: u64 = 0;

/// Decodes the world switch's result word into `Ok` (the guest ran and
/// exited) or how the entry failed; `error` reads the VM-instruction
/// error field for a VMfailValid.
///
/// # Errors
/// [`VmxError`] when the entry instruction failed.
pub fn entry_result(word: u64, error: impl FnOnce() -> InstructionError) -> Result<(), VmxError> {
    if word == ENTERED {
        return Ok(());
    }
    match Outcome::from_rflags(word) {
        Outcome::FailedInvalid => Err(VmxError::FailInvalid),
        Outcome::FailedValid => Err(VmxError::FailValid(error())),
        Outcome::Succeeded => Err(VmxError::FellThrough { rflags: word }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn rflags_decode() {
        // Bit 1 is always set in RFLAGS.
        assert_eq!(Outcome::from_rflags(0x2), Outcome::Succeeded);
        assert_eq!(Outcome::from_rflags(0x3), Outcome::FailedInvalid);
        assert_eq!(Outcome::from_rflags(0x42), Outcome::FailedValid);
        assert_eq!(Outcome::from_rflags(0x43), Outcome::FailedInvalid);
        // Other arithmetic flags do not matter (VMsucceed clears them anyway).
        assert_eq!(Outcome::from_rflags(0x2 | 0x4 | 0x80 | 0x800), Outcome::Succeeded);
    }

    #[test]
    fn entry_result_reads_the_error_only_for_fail_valid() {
        assert_eq!(entry_result(ENTERED, || unreachable!()), Ok(()));
        assert_eq!(entry_result(0x3, || unreachable!()), Err(VmxError::FailInvalid));
        assert_eq!(
            entry_result(0x46, || InstructionError::INVALID_HOST_STATE),
            Err(VmxError::FailValid(InstructionError(8)))
        );
        assert_eq!(entry_result(0x202, || unreachable!()), Err(VmxError::FellThrough { rflags: 0x202 }));
    }

    #[test]
    fn error_numbers_match_table_31_1() {
        assert_eq!(InstructionError(4), InstructionError::VMLAUNCH_NON_CLEAR_VMCS);
        assert_eq!(InstructionError(7).description(), "VM entry with invalid control field(s)");
        assert_eq!(InstructionError(8).description(), "VM entry with invalid host-state field(s)");
        assert_eq!(InstructionError(11).description(), "VMPTRLD with incorrect VMCS revision identifier");
        assert_eq!(InstructionError(26).description(), "VM entry with events blocked by MOV SS");
        // 14, 21 and 27 are not assigned.
        for unassigned in [0, 14, 21, 27, 29, 0xffff_ffff] {
            assert_eq!(InstructionError(unassigned).description(), "unknown VM-instruction error");
        }
        assert_eq!(
            format!("{}", VmxError::FailValid(InstructionError(5))),
            "VMfailValid: VM-instruction error 5 (VMRESUME with non-launched VMCS)"
        );
    }
}
