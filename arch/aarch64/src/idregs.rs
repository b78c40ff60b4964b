//! The ID registers a guest reads, with what Bulkhead does not give it
//! hidden.
//!
//! With `HCR_EL2.TID3` every EL1 read of the feature ID registers (op0 3,
//! op1 0, CRn 0, CRm 1..7) traps to EL2. The hypervisor answers with the
//! CPU's value, except for the features a guest must not use because the
//! hypervisor does not switch their state: SVE and SME (the hypervisor's
//! exit path saves only the 128-bit FP/SIMD registers, and writing those
//! clears the upper part of SVE vectors). Arm ARM D24.2 for the fields.

/// `ID_AA64PFR0_EL1` (CRm 4, op2 0): SVE in bits 35:32.
const ID_AA64PFR0: (u8, u8) = (4, 0);
/// `ID_AA64PFR1_EL1` (CRm 4, op2 1): SME in bits 27:24.
const ID_AA64PFR1: (u8, u8) = (4, 1);
/// `ID_AA64ZFR0_EL1` (CRm 4, op2 4): SVE features.
const ID_AA64ZFR0: (u8, u8) = (4, 4);
/// `ID_AA64SMFR0_EL1` (CRm 4, op2 5): SME features.
const ID_AA64SMFR0: (u8, u8) = (4, 5);

const SVE_FIELD: u64 = 0xf << 32;
const SME_FIELD: u64 = 0xf << 24;

/// Whether a trapped register encoding is one of the TID3 ID registers.
pub const fn is_id_register(op0: u8, op1: u8, crn: u8, crm: u8) -> bool {
    op0 == 3 && op1 == 0 && crn == 0 && crm >= 1 && crm <= 7
}

/// What the guest reads for ID register (`crm`, `op2`) whose real value is `real`.
pub const fn guest_view(crm: u8, op2: u8, real: u64) -> u64 {
    match (crm, op2) {
        ID_AA64PFR0 => real & !SVE_FIELD,
        ID_AA64PFR1 => real & !SME_FIELD,
        ID_AA64ZFR0 | ID_AA64SMFR0 => 0,
        _ => real,
    }
}

#[cfg(all(target_arch = "aarch64", not(test)))]
macro_rules! read_id {
    ($crm:expr, $op2:expr, $(($c:literal, $o:literal)),* $(,)?) => {
        match ($crm, $op2) {
            $(
                ($c, $o) => {
                    let value: u64;
                    // SAFETY: reading an ID register has no side effects; in
                    // the ID space, unallocated encodings read as zero.
                    unsafe {
                        core::arch::asm!(concat!("mrs {}, S3_0_C0_C", $c, "_", $o), out(reg) value, options(nostack))
                    };
                    value
                }
            )*
            _ => 0,
        }
    };
}

/// Reads ID register (`crm`, `op2`) of this CPU at EL2.
pub fn read(crm: u8, op2: u8) -> u64 {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    {
        read_id!(crm, op2,
            (1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (1, 7),
            (2, 0), (2, 1), (2, 2), (2, 3), (2, 4), (2, 5), (2, 6), (2, 7),
            (3, 0), (3, 1), (3, 2), (3, 3), (3, 4), (3, 5), (3, 6), (3, 7),
            (4, 0), (4, 1), (4, 2), (4, 3), (4, 4), (4, 5), (4, 6), (4, 7),
            (5, 0), (5, 1), (5, 2), (5, 3), (5, 4), (5, 5), (5, 6), (5, 7),
            (6, 0), (6, 1), (6, 2), (6, 3), (6, 4), (6, 5), (6, 6), (6, 7),
            (7, 0), (7, 1), (7, 2), (7, 3), (7, 4), (7, 5), (7, 6), (7, 7),
        )
    }
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    {
        let _ = (crm, op2);
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sve_and_sme_are_hidden_and_the_rest_passes_through() {
        let pfr0 = 0x1_1101_0011_1111u64 | SVE_FIELD;
        assert_eq!(guest_view(4, 0, pfr0) & SVE_FIELD, 0);
        assert_eq!(guest_view(4, 0, pfr0) | SVE_FIELD, pfr0, "nothing else changes");
        assert_eq!(guest_view(4, 1, SME_FIELD | 0x21) , 0x21);
        assert_eq!(guest_view(4, 4, u64::MAX), 0);
        assert_eq!(guest_view(4, 5, u64::MAX), 0);
        assert_eq!(guest_view(7, 0, 0x1234), 0x1234, "MMFR0 untouched");
    }

    #[test]
    fn the_tid3_group_is_crm_1_to_7() {
        assert!(is_id_register(3, 0, 0, 1));
        assert!(is_id_register(3, 0, 0, 7));
        assert!(!is_id_register(3, 0, 0, 0), "MIDR/MPIDR are not TID3");
        assert!(!is_id_register(3, 1, 0, 4));
        assert!(!is_id_register(3, 0, 1, 4));
    }
}
