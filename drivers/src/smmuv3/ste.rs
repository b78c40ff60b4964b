//! Stream table entries (IHI 0070 §5.2, "Stream Table Entry").
//!
//! An STE is 64 bytes, eight little-endian 64-bit words; the driver fills
//! words 0 to 3 and leaves the rest zero. Three kinds are built:
//! - abort (`V = 1`, `Config = 0b000`): every transaction is terminated
//!   with an abort, and no event is recorded (§5.2, `Config`);
//! - stage-2 translate (`Config = 0b110`): stage 1 bypassed, stage 2 walks a
//!   VMSAv8-64 table with the VTCR_EL2-style fields below;
//! - invalid (`V = 0`): terminated, and recorded as `C_BAD_STE`.
//!
//! Bypass (`Config = 0b100`) is never built: nothing bypasses.

use tock_registers::fields::FieldValue;
use tock_registers::register_bitfields;

register_bitfields! [u64,
    /// STE word 0.
    STE0 [
        /// Valid.
        V OFFSET(0) NUMBITS(1) [],
        /// What the SMMU does with the stream's transactions.
        CONFIG OFFSET(1) NUMBITS(3) [
            /// Terminate with an abort, record nothing.
            Abort = 0b000,
            /// Stage 1 and stage 2 bypassed (never used here).
            Bypass = 0b100,
            /// Stage 1 bypassed, stage 2 translates.
            Stage2 = 0b110
        ]
    ],
    /// STE word 1.
    STE1 [
        /// Shareability of the stream's accesses: 0b01 = use the incoming
        /// value (what Linux sets; stage 2 gives the final attribute).
        SHCFG OFFSET(44) NUMBITS(2) [
            /// Use incoming shareability.
            Incoming = 0b01
        ]
    ],
    /// STE word 2: stage-2 configuration. Bits 50:32 hold the same fields,
    /// in the same order, as `VTCR_EL2` bits 18:0.
    STE2 [
        /// The VMID tagging this stream's stage-2 TLB entries.
        S2VMID OFFSET(0) NUMBITS(16) [],
        /// Input (IPA) size, `64 - bits`.
        S2T0SZ OFFSET(32) NUMBITS(6) [],
        /// Starting level (4 KiB granule: 0b10 = level 0, 0b01 = level 1).
        S2SL0 OFFSET(38) NUMBITS(2) [],
        /// Inner cacheability of table walks (0b01 = write-back).
        S2IR0 OFFSET(40) NUMBITS(2) [],
        /// Outer cacheability of table walks.
        S2OR0 OFFSET(42) NUMBITS(2) [],
        /// Shareability of table walks (0b11 = inner).
        S2SH0 OFFSET(44) NUMBITS(2) [],
        /// Granule (0b00 = 4 KiB).
        S2TG OFFSET(46) NUMBITS(2) [],
        /// Output (physical) size, `ID_AA64MMFR0_EL1.PARange` encoding.
        S2PS OFFSET(48) NUMBITS(3) [],
        /// The table is in the AArch64 format.
        S2AA64 OFFSET(51) NUMBITS(1) [],
        /// Access flag faults disabled: a descriptor with AF = 0 is used
        /// as if AF were 1. Not set: the hypervisor's stage-2 descriptors
        /// always carry AF = 1 (QEMU's SMMU has no HTTU to set it).
        S2AFFD OFFSET(53) NUMBITS(1) [],
        /// Stage-2 faults are recorded in the event queue.
        S2R OFFSET(58) NUMBITS(1) []
    ],
    /// STE word 3.
    STE3 [
        /// Stage-2 root table address, bits 51:4.
        S2TTB OFFSET(4) NUMBITS(48) []
    ]
];

/// Bytes per stream table entry.
pub const STE_SIZE: usize = 64;
/// 64-bit words per stream table entry.
pub const STE_WORDS: usize = STE_SIZE / 8;

/// The `VTCR_EL2` bits (18:0) that the STE's stage-2 fields copy.
const VTCR_STAGE2_FIELDS: u64 = (1 << 19) - 1;
/// `VTCR_EL2.PS`, bits 18:16.
const VTCR_PS_SHIFT: u32 = 16;
/// `VTCR_EL2.PS` is three bits.
const VTCR_PS_WIDTH_MASK: u64 = 0b111;

/// A stream's stage-2 translation: the same tables, VMID and geometry the
/// CPU uses for the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2Config {
    /// VMID (the partition's, or the quarantine's).
    pub vmid: u16,
    /// Physical address of the root table (16-byte aligned at least; a
    /// root is a 4 KiB page).
    pub root: u64,
    /// `VTCR_EL2` of the partition: T0SZ, SL0, IRGN0, ORGN0, SH0, TG0, PS.
    pub vtcr: u64,
}

/// One stream table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamTableEntry(pub [u64; STE_WORDS]);

impl StreamTableEntry {
    /// `V = 0`: transactions terminate with `C_BAD_STE` recorded.
    pub const INVALID: StreamTableEntry = StreamTableEntry([0; STE_WORDS]);

    /// Valid, `Config = abort`: transactions terminate, nothing recorded.
    pub fn abort() -> StreamTableEntry {
        let mut words = [0; STE_WORDS];
        words[0] = (STE0::V::SET + STE0::CONFIG::Abort).value;
        StreamTableEntry(words)
    }

    /// Stage 1 bypassed, stage 2 translating through `config`, faults
    /// recorded. `oas_field` is `SMMU_IDR5.OAS`: an output size larger than
    /// the SMMU's is capped to it (the stage-2 tables never hold addresses
    /// beyond what the machine has).
    pub fn stage2(config: Stage2Config, oas_field: u64) -> StreamTableEntry {
        let vtcr = config.vtcr & VTCR_STAGE2_FIELDS;
        let ps = ((vtcr >> VTCR_PS_SHIFT) & VTCR_PS_WIDTH_MASK).min(oas_field);
        let vtcr = (vtcr & !(VTCR_PS_WIDTH_MASK << VTCR_PS_SHIFT)) | (ps << VTCR_PS_SHIFT);
        let mut words = [0; STE_WORDS];
        words[0] = (STE0::V::SET + STE0::CONFIG::Stage2).value;
        words[1] = STE1::SHCFG::Incoming.value;
        let field = |f: tock_registers::fields::Field<u64, STE2::Register>| {
            // The STE fields sit at VTCR bit + 32 (asserted in the tests).
            FieldValue::<u64, STE2::Register>::new(f.mask, f.shift, (vtcr >> (f.shift - 32)) & f.mask)
        };
        words[2] = (STE2::S2VMID.val(u64::from(config.vmid))
            + field(STE2::S2T0SZ)
            + field(STE2::S2SL0)
            + field(STE2::S2IR0)
            + field(STE2::S2OR0)
            + field(STE2::S2SH0)
            + field(STE2::S2TG)
            + field(STE2::S2PS)
            + STE2::S2AA64::SET
            + STE2::S2R::SET)
            .value;
        words[3] = STE3::S2TTB.val(config.root >> 4).value;
        StreamTableEntry(words)
    }

    /// Whether `V` is set.
    pub fn valid(&self) -> bool {
        self.0[0] & STE0::V::SET.value != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `VTCR_EL2` as `bulkhead-arch-aarch64::el2::vtcr` builds it for a
    /// 39-bit IPA space starting at level 1 on a 48-bit CPU: T0SZ 25,
    /// SL0 0b01, IRGN0/ORGN0 write-back, SH0 inner, TG0 4 KiB, PS 0b101,
    /// RES1 bit 31.
    const VTCR_39_L1_PS48: u64 = 25 | (0b01 << 6) | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (0b101 << 16) | (1 << 31);

    #[test]
    fn abort_is_valid_with_config_zero() {
        let ste = StreamTableEntry::abort();
        assert_eq!(ste.0, [1, 0, 0, 0, 0, 0, 0, 0]);
        assert!(ste.valid());
        assert!(!StreamTableEntry::INVALID.valid());
    }

    #[test]
    fn stage2_copies_the_cpu_geometry_and_caps_the_output_size() {
        let config = Stage2Config { vmid: 3, root: 0x4123_4000, vtcr: VTCR_39_L1_PS48 };
        // QEMU's SMMU: IDR5.OAS = 0b100 (44 bits).
        let ste = StreamTableEntry::stage2(config, 0b100);
        assert_eq!(ste.0[0], 0b1101, "V and Config = 0b110");
        assert_eq!(ste.0[1], 1 << 44, "SHCFG = incoming");
        let w2 = ste.0[2];
        assert_eq!(w2 & 0xffff, 3, "S2VMID");
        assert_eq!((w2 >> 32) & 0x3f, 25, "S2T0SZ");
        assert_eq!((w2 >> 38) & 0b11, 0b01, "S2SL0: level 1");
        assert_eq!((w2 >> 40) & 0b11, 0b01, "S2IR0");
        assert_eq!((w2 >> 42) & 0b11, 0b01, "S2OR0");
        assert_eq!((w2 >> 44) & 0b11, 0b11, "S2SH0");
        assert_eq!((w2 >> 46) & 0b11, 0b00, "S2TG: 4 KiB");
        assert_eq!((w2 >> 48) & 0b111, 0b100, "S2PS capped to the SMMU's OAS");
        assert_eq!((w2 >> 51) & 1, 1, "S2AA64");
        assert_eq!((w2 >> 53) & 1, 0, "S2AFFD clear: descriptors carry AF");
        assert_eq!((w2 >> 58) & 1, 1, "S2R");
        assert_eq!(w2 >> 59, 0);
        assert_eq!(ste.0[3], 0x4123_4000, "S2TTB in place");
        assert_eq!(&ste.0[4..], &[0; 4]);
    }

    #[test]
    fn stage2_fields_are_vtcr_shifted_by_32() {
        // Bits 31 (RES1 in VTCR) and above never leak into the STE.
        let ste = StreamTableEntry::stage2(Stage2Config { vmid: 0, root: 0, vtcr: u64::MAX }, 0b111);
        let fields = (ste.0[2] >> 32) & VTCR_STAGE2_FIELDS;
        assert_eq!(fields, VTCR_STAGE2_FIELDS);
        let smaller = StreamTableEntry::stage2(Stage2Config { vmid: 0, root: 0, vtcr: 0b010 << 16 }, 0b101);
        assert_eq!((smaller.0[2] >> 48) & 0b111, 0b010, "a smaller output size is kept");
    }
}
