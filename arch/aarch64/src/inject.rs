//! Injecting synchronous exceptions into a guest's EL1.
//!
//! Emulates what the CPU does when it takes an exception to EL1 (Arm ARM
//! D1.3 "Exception entry"): the interrupted PC and PSTATE go to `ELR_EL1` and
//! `SPSR_EL1`, the syndrome to `ESR_EL1`, the faulting address to `FAR_EL1`,
//! and execution continues at the guest's vector (`VBAR_EL1` plus the offset
//! for where the exception came from) in EL1h with D, A, I and F masked.

use crate::esr::Esr;
use crate::exception::{SPSR_EL1H_MASKED, VcpuContext};

/// Exception class of a data abort taken from a lower EL / the same EL.
const EC_DATA_ABORT_LOWER: u64 = 0x24;
const EC_DATA_ABORT_SAME: u64 = 0x25;
const EC_INSTRUCTION_ABORT_LOWER: u64 = 0x20;
const EC_INSTRUCTION_ABORT_SAME: u64 = 0x21;
/// ESR.IL: a 32-bit instruction.
const IL: u64 = 1 << 25;
/// ISS.WnR for data aborts.
const WNR: u64 = 1 << 6;

/// The fault a guest is told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFault {
    /// Synchronous external abort (FSC 0x10): "no memory answered here".
    ExternalAbort,
    /// Alignment fault (FSC 0x21).
    Alignment,
}

impl InjectedFault {
    const fn status_code(self) -> u64 {
        match self {
            InjectedFault::ExternalAbort => 0x10,
            InjectedFault::Alignment => 0x21,
        }
    }
}

/// Where the guest was, from its saved PSTATE (`SPSR_EL2.M`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestMode {
    /// EL0, AArch64.
    El0,
    /// EL1 using `SP_EL0` (EL1t).
    El1Sp0,
    /// EL1 using `SP_EL1` (EL1h).
    El1SpX,
}

impl GuestMode {
    /// Decodes `SPSR_EL2.M[3:0]`; `None` for modes a guest cannot be in.
    pub const fn from_spsr(spsr: u64) -> Option<GuestMode> {
        match spsr & 0xf {
            0b0000 => Some(GuestMode::El0),
            0b0100 => Some(GuestMode::El1Sp0),
            0b0101 => Some(GuestMode::El1SpX),
            _ => None,
        }
    }

    /// Offset of the synchronous vector in the EL1 vector table (Arm ARM D1.3.1, table D1-7).
    pub const fn sync_vector_offset(self) -> u64 {
        match self {
            GuestMode::El1Sp0 => 0x000,
            GuestMode::El1SpX => 0x200,
            GuestMode::El0 => 0x400,
        }
    }
}

/// The `ESR_EL1` value for an abort injected after the stage-2 abort `trapped`.
pub const fn injected_esr(trapped: Esr, mode: GuestMode, fault: InjectedFault) -> u64 {
    let same_level = !matches!(mode, GuestMode::El0);
    let ec = match (trapped.ec(), same_level) {
        (0x20 | 0x21, true) => EC_INSTRUCTION_ABORT_SAME,
        (0x20 | 0x21, false) => EC_INSTRUCTION_ABORT_LOWER,
        (_, true) => EC_DATA_ABORT_SAME,
        (_, false) => EC_DATA_ABORT_LOWER,
    };
    let wnr = if ec == EC_DATA_ABORT_SAME || ec == EC_DATA_ABORT_LOWER { trapped.0 & WNR } else { 0 };
    (ec << 26) | IL | wnr | fault.status_code()
}

/// Why an exception could not be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectError {
    /// The guest's `SPSR_EL2`.
    pub spsr: u64,
}

/// Makes the guest take `fault` at its EL1 vector when it next runs.
///
/// Must run on the CPU whose EL1 state belongs to this vCPU (it is resident
/// there), between an exit and the next entry.
///
/// # Errors
/// When the guest's saved mode is not one a guest can be in.
pub fn inject_abort(vcpu: &mut VcpuContext, trapped: Esr, far: u64, fault: InjectedFault) -> Result<(), InjectError> {
    let mode = GuestMode::from_spsr(vcpu.spsr).ok_or(InjectError { spsr: vcpu.spsr })?;
    let esr = injected_esr(trapped, mode, fault);
    #[cfg(all(target_arch = "aarch64", not(test)))]
    let vbar = {
        use aarch64_cpu::registers::{ELR_EL1, ESR_EL1, FAR_EL1, Readable, SPSR_EL1, VBAR_EL1, Writeable};
        ELR_EL1.set(vcpu.elr);
        SPSR_EL1.set(vcpu.spsr);
        ESR_EL1.set(esr);
        FAR_EL1.set(far);
        VBAR_EL1.get()
    };
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    let vbar = {
        let _ = (esr, far);
        0u64
    };
    vcpu.elr = vbar.wrapping_add(mode.sync_vector_offset());
    vcpu.spsr = SPSR_EL1H_MASKED;
    Ok(())
}

/// Makes the guest take an Undefined Instruction exception (EC 0, "unknown
/// reason") at its EL1 vector for the instruction at its PC.
///
/// # Errors
/// When the guest's saved mode is not one a guest can be in.
pub fn inject_undefined(vcpu: &mut VcpuContext) -> Result<(), InjectError> {
    let mode = GuestMode::from_spsr(vcpu.spsr).ok_or(InjectError { spsr: vcpu.spsr })?;
    let esr = IL;
    #[cfg(all(target_arch = "aarch64", not(test)))]
    let vbar = {
        use aarch64_cpu::registers::{ELR_EL1, ESR_EL1, Readable, SPSR_EL1, VBAR_EL1, Writeable};
        ELR_EL1.set(vcpu.elr);
        SPSR_EL1.set(vcpu.spsr);
        ESR_EL1.set(esr);
        VBAR_EL1.get()
    };
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    let vbar = {
        let _ = esr;
        0u64
    };
    vcpu.elr = vbar.wrapping_add(mode.sync_vector_offset());
    vcpu.spsr = SPSR_EL1H_MASKED;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_from_el1h_becomes_a_same_level_data_abort() {
        let trapped = Esr(0x9200_0006); // EC 0x24, IL, read, translation fault
        let esr = injected_esr(trapped, GuestMode::El1SpX, InjectedFault::ExternalAbort);
        assert_eq!(esr, 0x9600_0010);
        let write = Esr(0x9200_0046);
        assert_eq!(injected_esr(write, GuestMode::El1SpX, InjectedFault::ExternalAbort) & WNR, WNR);
        assert_eq!(injected_esr(trapped, GuestMode::El0, InjectedFault::Alignment), 0x9200_0021);
    }

    #[test]
    fn instruction_aborts_stay_instruction_aborts() {
        let trapped = Esr(0x8200_0006);
        assert_eq!(injected_esr(trapped, GuestMode::El1SpX, InjectedFault::ExternalAbort), 0x8600_0010);
    }

    #[test]
    fn vector_offsets_follow_the_mode() {
        assert_eq!(GuestMode::from_spsr(0x3c5), Some(GuestMode::El1SpX));
        assert_eq!(GuestMode::from_spsr(0x3c4), Some(GuestMode::El1Sp0));
        assert_eq!(GuestMode::from_spsr(0x0), Some(GuestMode::El0));
        assert_eq!(GuestMode::from_spsr(0x3c9), None, "EL2 is not a guest mode");
        assert_eq!(GuestMode::El1SpX.sync_vector_offset(), 0x200);
        assert_eq!(GuestMode::El0.sync_vector_offset(), 0x400);
    }

    #[test]
    fn injection_moves_the_vcpu_to_its_vector() {
        let mut vcpu = VcpuContext::new(0x4000_1000, 0);
        vcpu.spsr = 0x3c5;
        inject_abort(&mut vcpu, Esr(0x9200_0006), 0x1234, InjectedFault::ExternalAbort).unwrap();
        assert_eq!(vcpu.elr, 0x200);
        assert_eq!(vcpu.spsr, SPSR_EL1H_MASKED);
        vcpu.spsr = 0x3c9;
        assert!(inject_abort(&mut vcpu, Esr(0x9200_0006), 0, InjectedFault::ExternalAbort).is_err());
    }
}
