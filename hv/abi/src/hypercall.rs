//! The hypercall ABI between partitions and the hypervisor.
//!
//! Calls follow the Arm SMC Calling Convention (DEN0028): the function ID in
//! `x0`, arguments in `x1`..`x7`, results in `x0`..`x3`. Bulkhead's own calls
//! are fast SMC64 calls in the *Vendor Specific Hypervisor Service* range
//! (owning entity 6), made with `HVC #0`. Any other function ID returns
//! [`HvError::NotSupported`] and the guest keeps running.

/// Function ID bit 31: fast call.
const FAST_CALL: u32 = 1 << 31;
/// Function ID bit 30: SMC64 calling convention.
const SMC64: u32 = 1 << 30;
/// Owning entity 6, Vendor Specific Hypervisor Service (DEN0028 table 6-4).
const OWNER_VENDOR_HYP: u32 = 6 << 24;

/// The function ID of Bulkhead hypercall `number`.
pub const fn vendor_hyp_call(number: u16) -> u32 {
    FAST_CALL | SMC64 | OWNER_VENDOR_HYP | number as u32
}

/// Write bytes to the hypervisor console, prefixed with the partition name.
///
/// `x1` = guest-physical address of the bytes, `x2` = length (at most
/// [`CONSOLE_WRITE_MAX`]). Returns the number of bytes written in `x0`.
/// The whole buffer must lie in memory the partition may read.
pub const CONSOLE_WRITE: u32 = vendor_hyp_call(0x0001);

/// Largest buffer one [`CONSOLE_WRITE`] accepts.
pub const CONSOLE_WRITE_MAX: u64 = 4096;

/// Record the partition's test verdict.
///
/// `x1` = 0 for success, anything else is a failure code; `x2` = a detail
/// value printed with the verdict. Returns 0. The last verdict reported
/// before the partition stops is the one the run summary uses.
pub const REPORT_RESULT: u32 = vendor_hyp_call(0x0002);

/// Stop the calling partition. Does not return.
///
/// `x1` = 0 for a normal stop. PSCI `SYSTEM_OFF` has the same effect.
pub const PARTITION_STOP: u32 = vendor_hyp_call(0x0003);

/// Check a guest address's memory attribute (arm64).
///
/// `x1` = a guest virtual address, translated through the guest's own
/// stage 1 and the hypervisor's stage 2 (`AT S1E1R`, `AT S12E1R`). The
/// hypervisor logs both results and checks the combined attribute against
/// the one configured for the region the address falls in. Returns the
/// combined attribute (MAIR encoding, as `PAR_EL1.ATTR`) in `x0`, or
/// [`HvError::InvalidParameter`] when the address does not translate to the
/// partition's memory, or [`HvError::CheckFailed`] when the attribute differs.
pub const CHECK_ATTRIBUTE: u32 = vendor_hyp_call(0x0010);

/// Return the ABI version in `x0`: major in bits 31:16, minor in 15:0.
pub const ABI_VERSION: u32 = vendor_hyp_call(0x0000);

/// The ABI version this crate describes.
pub const ABI_VERSION_VALUE: u64 = 0x0001_0000;

/// PSCI `SYSTEM_OFF` (DEN0022): stops the calling partition only.
pub const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;

/// PSCI `PSCI_VERSION` (DEN0022).
pub const PSCI_VERSION: u32 = 0x8400_0000;

/// Errors returned in `x0`, as negative numbers (SMCCC style).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum HvError {
    /// The function ID is not implemented (SMCCC `NOT_SUPPORTED`).
    NotSupported = -1,
    /// An argument is out of range, or an address is not the partition's own
    /// memory (SMCCC `INVALID_PARAMETER`).
    InvalidParameter = -3,
    /// A check the caller asked for found a difference.
    CheckFailed = -5,
}

impl HvError {
    /// The value placed in `x0`.
    pub const fn to_register(self) -> u64 {
        self as i64 as u64
    }

    /// Decodes `x0` after a call: `Err` for one of the known error values.
    pub const fn check(x0: u64) -> Result<u64, HvError> {
        match x0 as i64 {
            -1 => Err(HvError::NotSupported),
            -3 => Err(HvError::InvalidParameter),
            -5 => Err(HvError::CheckFailed),
            _ => Ok(x0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_ids_are_fast_smc64_vendor_hypervisor_calls() {
        for id in [ABI_VERSION, CONSOLE_WRITE, REPORT_RESULT, PARTITION_STOP, CHECK_ATTRIBUTE] {
            assert_eq!(id >> 24, 0xc6, "{id:#x}");
        }
        assert_eq!(CONSOLE_WRITE, 0xc600_0001);
    }

    #[test]
    fn errors_round_trip_through_x0() {
        assert_eq!(HvError::NotSupported.to_register(), u64::MAX);
        assert_eq!(HvError::check(HvError::NotSupported.to_register()), Err(HvError::NotSupported));
        assert_eq!(
            HvError::check(HvError::InvalidParameter.to_register()),
            Err(HvError::InvalidParameter)
        );
        assert_eq!(HvError::check(HvError::CheckFailed.to_register()), Err(HvError::CheckFailed));
        assert_eq!(HvError::check(12), Ok(12));
    }
}
