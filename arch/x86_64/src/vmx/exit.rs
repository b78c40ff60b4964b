//! VM-exit decoding: the exit-reason field, basic exit reasons (SDM Vol. 3D
//! Appendix C) and the exit qualifications Bulkhead acts on (SDM Vol. 3C
//! §28.2.1, Tables 28-3, 28-5 and 28-7).

/// The exit-reason field (VMCS 0x4402; SDM §25.9.1, Table 25-18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitReasonField {
    /// Bits 15:0: the basic exit reason.
    pub basic: ExitReason,
    /// Bit 31: VM-entry failure (the guest never ran; only reasons 33, 34
    /// and 41 occur with it).
    pub entry_failure: bool,
}

impl ExitReasonField {
    /// Decodes the raw 32-bit field.
    pub const fn decode(raw: u32) -> ExitReasonField {
        ExitReasonField { basic: ExitReason::from_basic(raw as u16), entry_failure: raw & (1 << 31) != 0 }
    }
}

/// Basic exit reasons (SDM Vol. 3D Appendix C, Table C-1). Numbers not
/// listed (including reserved 35, 38, 42, 65) decode as
/// [`ExitReason::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // Variant names are the Appendix C names.
pub enum ExitReason {
    ExceptionOrNmi,
    ExternalInterrupt,
    TripleFault,
    InitSignal,
    StartupIpi,
    InterruptWindow,
    NmiWindow,
    TaskSwitch,
    Cpuid,
    Getsec,
    Hlt,
    Invd,
    Invlpg,
    Rdpmc,
    Rdtsc,
    Vmcall,
    /// 19-27, 50, 53: a VMX instruction (VMCLEAR .. VMXON, INVEPT, INVVPID).
    VmxInstruction(u16),
    ControlRegisterAccess,
    MovDr,
    IoInstruction,
    Rdmsr,
    Wrmsr,
    EntryFailureInvalidGuestState,
    EntryFailureMsrLoading,
    Mwait,
    MonitorTrapFlag,
    Monitor,
    Pause,
    EntryFailureMachineCheck,
    TprBelowThreshold,
    ApicAccess,
    VirtualizedEoi,
    GdtrIdtrAccess,
    LdtrTrAccess,
    EptViolation,
    EptMisconfiguration,
    Rdtscp,
    PreemptionTimerExpired,
    Wbinvd,
    Xsetbv,
    ApicWrite,
    Rdrand,
    Invpcid,
    Rdseed,
    Xsaves,
    Xrstors,
    /// Any other basic reason, raw.
    Other(u16),
}

impl ExitReason {
    /// The reason for basic exit-reason number `basic`.
    pub const fn from_basic(basic: u16) -> ExitReason {
        use ExitReason::*;
        match basic {
            0 => ExceptionOrNmi,
            1 => ExternalInterrupt,
            2 => TripleFault,
            3 => InitSignal,
            4 => StartupIpi,
            7 => InterruptWindow,
            8 => NmiWindow,
            9 => TaskSwitch,
            10 => Cpuid,
            11 => Getsec,
            12 => Hlt,
            13 => Invd,
            14 => Invlpg,
            15 => Rdpmc,
            16 => Rdtsc,
            18 => Vmcall,
            19..=27 | 50 | 53 => VmxInstruction(basic),
            28 => ControlRegisterAccess,
            29 => MovDr,
            30 => IoInstruction,
            31 => Rdmsr,
            32 => Wrmsr,
            33 => EntryFailureInvalidGuestState,
            34 => EntryFailureMsrLoading,
            36 => Mwait,
            37 => MonitorTrapFlag,
            39 => Monitor,
            40 => Pause,
            41 => EntryFailureMachineCheck,
            43 => TprBelowThreshold,
            44 => ApicAccess,
            45 => VirtualizedEoi,
            46 => GdtrIdtrAccess,
            47 => LdtrTrAccess,
            48 => EptViolation,
            49 => EptMisconfiguration,
            51 => Rdtscp,
            52 => PreemptionTimerExpired,
            54 => Wbinvd,
            55 => Xsetbv,
            56 => ApicWrite,
            57 => Rdrand,
            58 => Invpcid,
            61 => Rdseed,
            63 => Xsaves,
            64 => Xrstors,
            other => Other(other),
        }
    }
}

/// Exit qualification of an EPT violation (SDM §28.2.1, Table 28-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolation {
    /// Bit 0: the access was a data read.
    pub read: bool,
    /// Bit 1: the access was a data write.
    pub write: bool,
    /// Bit 2: the access was an instruction fetch.
    pub fetch: bool,
    /// Bits 5:3: the EPT read, write and execute permissions of the
    /// translation (AND over the levels walked); all clear when not present.
    pub permitted: crate::Access,
    /// Bit 7: the guest-linear-address field is valid.
    pub guest_linear_valid: bool,
    /// Bit 8, meaningful only with bit 7: the access was to the final
    /// translation of a linear address (true) or to a guest paging-structure
    /// entry during the guest's own page walk (false).
    pub final_translation: bool,
    /// Bit 12: NMI unblocking due to IRET.
    pub nmi_unblocking: bool,
}

impl EptViolation {
    /// Decodes the exit qualification.
    pub const fn decode(qualification: u64) -> EptViolation {
        EptViolation {
            read: bit(qualification, 0),
            write: bit(qualification, 1),
            fetch: bit(qualification, 2),
            permitted: crate::Access {
                read: bit(qualification, 3),
                write: bit(qualification, 4),
                execute: bit(qualification, 5),
            },
            guest_linear_valid: bit(qualification, 7),
            final_translation: bit(qualification, 7) && bit(qualification, 8),
            nmi_unblocking: bit(qualification, 12),
        }
    }

    /// Whether the guest-physical address was not mapped at all.
    pub const fn not_present(self) -> bool {
        !self.permitted.read && !self.permitted.write && !self.permitted.execute
    }
}

/// Bit `n` of `value`.
const fn bit(value: u64, n: u32) -> bool {
    value & (1 << n) != 0
}

/// Direction of an I/O instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDirection {
    /// OUT/OUTS: guest to port.
    Out,
    /// IN/INS: port to guest.
    In,
}

/// Exit qualification of an I/O instruction (SDM §28.2.1, Table 28-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoQualification {
    /// Bits 2:0: access size in bytes (encodings 0, 1, 3 for 1, 2, 4).
    pub size: u8,
    /// Bit 3: direction.
    pub direction: IoDirection,
    /// Bit 4: INS/OUTS.
    pub string: bool,
    /// Bit 5: REP prefix.
    pub rep: bool,
    /// Bit 6: the port was an immediate operand (else DX).
    pub immediate: bool,
    /// Bits 31:16: port number.
    pub port: u16,
}

impl IoQualification {
    /// Decodes the exit qualification, or `None` for the reserved size
    /// encodings (2, 4-7).
    pub const fn decode(qualification: u64) -> Option<IoQualification> {
        let size = match qualification & 7 {
            0 => 1,
            1 => 2,
            3 => 4,
            _ => return None,
        };
        let direction = if qualification & (1 << 3) != 0 { IoDirection::In } else { IoDirection::Out };
        Some(IoQualification {
            size,
            direction,
            string: qualification & (1 << 4) != 0,
            rep: qualification & (1 << 5) != 0,
            immediate: qualification & (1 << 6) != 0,
            port: (qualification >> 16) as u16,
        })
    }
}

/// Access type of a control-register exit (bits 5:4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccess {
    /// 0: MOV to CR from general-purpose register `gpr` (bits 11:8; 0 = RAX,
    /// 1 = RCX, 2 = RDX, 3 = RBX, 4 = RSP, 5 = RBP, 6 = RSI, 7 = RDI, 8-15 =
    /// R8-R15).
    MovTo {
        /// Source register number.
        gpr: u8,
    },
    /// 1: MOV from CR to general-purpose register `gpr`.
    MovFrom {
        /// Destination register number.
        gpr: u8,
    },
    /// 2: CLTS.
    Clts,
    /// 3: LMSW with its 16-bit source data (bits 31:16); `memory` from bit 6.
    Lmsw {
        /// Whether the operand was in memory.
        memory: bool,
        /// The source data.
        data: u16,
    },
}

/// Exit qualification of a control-register access (SDM §28.2.1,
/// Table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrQualification {
    /// Bits 3:0: the control register (0 for CLTS and LMSW).
    pub cr: u8,
    /// Bits 5:4 and their operands.
    pub access: CrAccess,
}

impl CrQualification {
    /// Decodes the exit qualification.
    pub const fn decode(qualification: u64) -> CrQualification {
        let gpr = ((qualification >> 8) & 0xf) as u8;
        let access = match (qualification >> 4) & 3 {
            0 => CrAccess::MovTo { gpr },
            1 => CrAccess::MovFrom { gpr },
            2 => CrAccess::Clts,
            _ => CrAccess::Lmsw { memory: qualification & (1 << 6) != 0, data: (qualification >> 16) as u16 },
        };
        CrQualification { cr: (qualification & 0xf) as u8, access }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reason_field() {
        assert_eq!(
            ExitReasonField::decode(48),
            ExitReasonField { basic: ExitReason::EptViolation, entry_failure: false }
        );
        let failed = ExitReasonField::decode(0x8000_0021);
        assert_eq!(failed, ExitReasonField { basic: ExitReason::EntryFailureInvalidGuestState, entry_failure: true });
        // Bits 30:16 do not leak into the basic reason.
        assert_eq!(ExitReasonField::decode(0x1000_001e).basic, ExitReason::IoInstruction);
    }

    #[test]
    fn basic_reasons_match_appendix_c() {
        let table = [
            (0, ExitReason::ExceptionOrNmi),
            (1, ExitReason::ExternalInterrupt),
            (2, ExitReason::TripleFault),
            (10, ExitReason::Cpuid),
            (12, ExitReason::Hlt),
            (18, ExitReason::Vmcall),
            (20, ExitReason::VmxInstruction(20)),
            (28, ExitReason::ControlRegisterAccess),
            (30, ExitReason::IoInstruction),
            (31, ExitReason::Rdmsr),
            (32, ExitReason::Wrmsr),
            (34, ExitReason::EntryFailureMsrLoading),
            (41, ExitReason::EntryFailureMachineCheck),
            (48, ExitReason::EptViolation),
            (49, ExitReason::EptMisconfiguration),
            (52, ExitReason::PreemptionTimerExpired),
            (55, ExitReason::Xsetbv),
            (35, ExitReason::Other(35)),
            (0xffff, ExitReason::Other(0xffff)),
        ];
        for (raw, reason) in table {
            assert_eq!(ExitReason::from_basic(raw), reason, "{raw}");
        }
    }

    #[test]
    fn ept_violation_qualification() {
        // Write to a read-only page through a linear address: W, R perm, GLA valid + final.
        let violation = EptViolation::decode(0x182 | 0x08);
        assert!(violation.write && !violation.read && !violation.fetch);
        assert_eq!(violation.permitted, crate::Access::READ);
        assert!(violation.guest_linear_valid && violation.final_translation && !violation.not_present());
        // Fetch from an unmapped page during a guest page walk.
        let violation = EptViolation::decode(0x84);
        assert!(violation.fetch && violation.not_present() && !violation.final_translation);
        // Bit 8 without bit 7 means nothing.
        assert!(!EptViolation::decode(0x101).final_translation);
        assert!(EptViolation::decode(1 << 12).nmi_unblocking);
    }

    #[test]
    fn io_qualification() {
        // OUT DX, AL to 0x3f8.
        let out = IoQualification::decode(0x03f8_0000).unwrap();
        assert_eq!((out.size, out.direction, out.port, out.immediate), (1, IoDirection::Out, 0x3f8, false));
        // IN EAX, 0x71 (immediate).
        let inl = IoQualification::decode(0x0071_0000 | 0x40 | 0x08 | 3).unwrap();
        assert_eq!((inl.size, inl.direction, inl.port, inl.immediate), (4, IoDirection::In, 0x71, true));
        // REP OUTSW to 0xffff.
        let rep = IoQualification::decode(0xffff_0000 | 0x30 | 1).unwrap();
        assert!(rep.string && rep.rep && rep.size == 2 && rep.port == 0xffff);
        assert_eq!(IoQualification::decode(2), None);
    }

    #[test]
    fn cr_qualification() {
        // MOV CR3, RBX.
        assert_eq!(CrQualification::decode(0x303), CrQualification { cr: 3, access: CrAccess::MovTo { gpr: 3 } });
        // MOV R12, CR8.
        assert_eq!(CrQualification::decode(0xc18), CrQualification { cr: 8, access: CrAccess::MovFrom { gpr: 12 } });
        assert_eq!(CrQualification::decode(0x20).access, CrAccess::Clts);
        // LMSW from memory with data 0x0011.
        assert_eq!(
            CrQualification::decode(0x0011_0070),
            CrQualification { cr: 0, access: CrAccess::Lmsw { memory: true, data: 0x11 } }
        );
    }
}
