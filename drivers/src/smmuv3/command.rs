//! Command queue entries (IHI 0070 §4, "Commands"): 16 bytes, two
//! little-endian 64-bit words, opcode in bits 7:0 of the first.

use tock_registers::register_bitfields;

register_bitfields! [u64,
    /// Word 0 of every command.
    CMD0 [
        /// Command opcode (§4.1, Table 4-1).
        OPCODE OFFSET(0) NUMBITS(8) [
            /// Invalidate the cached STE of one StreamID.
            CfgiSte = 0x03,
            /// Invalidate cached STEs of a range of StreamIDs; `Range` = 31
            /// is `CMD_CFGI_ALL`.
            CfgiSteRange = 0x04,
            /// Invalidate every stage-1 and stage-2 TLB entry of a VMID.
            TlbiS12Vmall = 0x28,
            /// Invalidate the stage-2 TLB entries of one IPA of a VMID.
            TlbiS2Ipa = 0x2a,
            /// Invalidate every non-secure, non-hypervisor TLB entry.
            TlbiNsnhAll = 0x30,
            /// Wait for every earlier command to complete.
            Sync = 0x46
        ],
        /// `CMD_CFGI_STE*`: the StreamID.
        SID OFFSET(32) NUMBITS(32) [],
        /// `CMD_TLBI_S12_VMALL`, `CMD_TLBI_S2_IPA`: the VMID.
        VMID OFFSET(32) NUMBITS(16) [],
        /// `CMD_SYNC`: completion signal (0 = none: completion is seen as
        /// `CMDQ_CONS` moving past the command).
        CS OFFSET(12) NUMBITS(2) [
            /// No signal.
            SigNone = 0
        ]
    ],
    /// Word 1 of the configuration invalidations.
    CMD1 [
        /// `CMD_CFGI_STE`: only the STE itself (no descriptors it points at)
        /// changed. The driver always invalidates everything (0).
        LEAF OFFSET(0) NUMBITS(1) [],
        /// `CMD_CFGI_STE_RANGE`: `2^(Range+1)` StreamIDs.
        RANGE OFFSET(0) NUMBITS(5) []
    ],
    /// Word 1 of `CMD_TLBI_S2_IPA` (§4.4.6). `TG` = 0 (no range: one
    /// address, whatever the size of the entry that maps it) and `TTL` = 0
    /// (level unknown) are left zero.
    TLBI1 [
        /// Only leaf entries need invalidating; walk caches may stay. The
        /// driver clears it: an unmap may also have removed table entries.
        LEAF OFFSET(0) NUMBITS(1) [],
        /// IPA bits 51:12.
        ADDRESS OFFSET(12) NUMBITS(40) []
    ]
];

/// IPA bits below the `CMD_TLBI_S2_IPA` address field.
const TLBI_ADDRESS_SHIFT: u32 = 12;

/// `CMD_CFGI_STE_RANGE.Range` that makes it `CMD_CFGI_ALL`.
const RANGE_ALL: u64 = 31;

/// A command, ready to be copied into the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command(pub [u64; 2]);

impl Command {
    /// `CMD_CFGI_STE`: the SMMU forgets its cached copy of `sid`'s STE.
    pub fn cfgi_ste(sid: u32) -> Command {
        Command([(CMD0::OPCODE::CfgiSte + CMD0::SID.val(u64::from(sid))).value, 0])
    }

    /// `CMD_CFGI_ALL`: every cached STE and context descriptor.
    pub fn cfgi_all() -> Command {
        Command([CMD0::OPCODE::CfgiSteRange.value, CMD1::RANGE.val(RANGE_ALL).value])
    }

    /// `CMD_TLBI_S12_VMALL`: every TLB entry tagged with `vmid`.
    pub fn tlbi_s12_vmall(vmid: u16) -> Command {
        Command([(CMD0::OPCODE::TlbiS12Vmall + CMD0::VMID.val(u64::from(vmid))).value, 0])
    }

    /// `CMD_TLBI_S2_IPA`: the stage-2 TLB entries of `vmid` that translate
    /// `ipa` (of any size), and the walk caches on the way to them.
    pub fn tlbi_s2_ipa(vmid: u16, ipa: u64) -> Command {
        Command([
            (CMD0::OPCODE::TlbiS2Ipa + CMD0::VMID.val(u64::from(vmid))).value,
            (TLBI1::LEAF::CLEAR + TLBI1::ADDRESS.val(ipa >> TLBI_ADDRESS_SHIFT)).value,
        ])
    }

    /// `CMD_TLBI_NSNH_ALL`: every non-secure, non-EL2 TLB entry.
    pub fn tlbi_nsnh_all() -> Command {
        Command([CMD0::OPCODE::TlbiNsnhAll.value, 0])
    }

    /// `CMD_SYNC` without a completion signal.
    pub fn sync() -> Command {
        Command([(CMD0::OPCODE::Sync + CMD0::CS::SigNone).value, 0])
    }

    /// The opcode's name, for error reports.
    pub fn name(&self) -> &'static str {
        opcode_name((self.0[0] & 0xff) as u8)
    }
}

/// The name of command opcode `opcode` (§4.1).
pub fn opcode_name(opcode: u8) -> &'static str {
    match opcode {
        0x01 => "CMD_PREFETCH_CONFIG",
        0x02 => "CMD_PREFETCH_ADDR",
        0x03 => "CMD_CFGI_STE",
        0x04 => "CMD_CFGI_STE_RANGE",
        0x05 => "CMD_CFGI_CD",
        0x06 => "CMD_CFGI_CD_ALL",
        0x10 => "CMD_TLBI_NH_ALL",
        0x11 => "CMD_TLBI_NH_ASID",
        0x12 => "CMD_TLBI_NH_VA",
        0x13 => "CMD_TLBI_NH_VAA",
        0x20 => "CMD_TLBI_EL2_ALL",
        0x28 => "CMD_TLBI_S12_VMALL",
        0x2a => "CMD_TLBI_S2_IPA",
        0x30 => "CMD_TLBI_NSNH_ALL",
        0x40 => "CMD_ATC_INV",
        0x41 => "CMD_PRI_RESP",
        0x44 => "CMD_RESUME",
        0x45 => "CMD_STALL_TERM",
        0x46 => "CMD_SYNC",
        _ => "unknown command",
    }
}

/// `SMMU_CMDQ_CONS.ERR` (§7.1, Table 7-1): why the SMMU stopped consuming.
pub fn command_error_name(code: u32) -> &'static str {
    match code {
        0 => "CERROR_NONE",
        1 => "CERROR_ILL (illegal command)",
        2 => "CERROR_ABT (abort reading the command)",
        3 => "CERROR_ATC_INV_SYNC (ATC invalidation timed out)",
        _ => "unknown command error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_spec() {
        assert_eq!(Command::cfgi_ste(0x0008).0, [0x0000_0008_0000_0003, 0]);
        assert_eq!(Command::cfgi_all().0, [0x04, 31]);
        assert_eq!(Command::tlbi_s12_vmall(0x1234).0, [0x0000_1234_0000_0028, 0]);
        assert_eq!(Command::tlbi_nsnh_all().0, [0x30, 0]);
        assert_eq!(Command::tlbi_s2_ipa(2, 0x4080_1234).0, [0x0000_0002_0000_002a, 0x4080_1000]);
        assert_eq!(Command::tlbi_s2_ipa(2, 0).name(), "CMD_TLBI_S2_IPA");
        assert_eq!(Command::sync().0, [0x46, 0]);
        assert_eq!(Command::sync().name(), "CMD_SYNC");
        assert_eq!(opcode_name(0xff), "unknown command");
        assert!(command_error_name(1).starts_with("CERROR_ILL"));
    }
}
