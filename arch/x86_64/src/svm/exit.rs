//! #VMEXIT decoding: EXITCODE (AMD APM Vol. 2 Appendix C, Table C-1) and
//! the EXITINFO1/EXITINFO2/EXITINTINFO fields Bulkhead acts on.
//!
//! QEMU TCG provides neither next-RIP save nor decode assists (DESIGN.md
//! §6), so the decoders here use only what every SVM implementation writes.

/// An EXITCODE value (VMCB offset 0x070; APM Table C-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvmExit {
    /// 0x00-0x0f: read of CR`n`.
    CrRead(u8),
    /// 0x10-0x1f: write of CR`n`.
    CrWrite(u8),
    /// 0x20-0x2f: read of DR`n`.
    DrRead(u8),
    /// 0x30-0x3f: write of DR`n`.
    DrWrite(u8),
    /// 0x40-0x5f: exception vector `n`.
    Exception(u8),
    /// 0x60: physical INTR.
    Intr,
    /// 0x61: physical NMI.
    Nmi,
    /// 0x62: physical SMI.
    Smi,
    /// 0x63: physical INIT.
    Init,
    /// 0x64: virtual INTR.
    Vintr,
    /// 0x65: selective CR0 write.
    Cr0SelectiveWrite,
    /// 0x6e: RDTSC.
    Rdtsc,
    /// 0x6f: RDPMC.
    Rdpmc,
    /// 0x72: CPUID.
    Cpuid,
    /// 0x76: INVD.
    Invd,
    /// 0x77: PAUSE.
    Pause,
    /// 0x78: HLT.
    Hlt,
    /// 0x79: INVLPG.
    Invlpg,
    /// 0x7a: INVLPGA.
    Invlpga,
    /// 0x7b: IN/OUT (EXITINFO1: [`IoioInfo`], EXITINFO2: next RIP).
    Ioio,
    /// 0x7c: RDMSR (EXITINFO1 = 0) or WRMSR (EXITINFO1 = 1).
    Msr,
    /// 0x7d: task switch.
    TaskSwitch,
    /// 0x7e: FERR_FREEZE.
    FerrFreeze,
    /// 0x7f: shutdown (e.g. triple fault in the guest).
    Shutdown,
    /// 0x80: VMRUN.
    Vmrun,
    /// 0x81: VMMCALL.
    Vmmcall,
    /// 0x82: VMLOAD.
    Vmload,
    /// 0x83: VMSAVE.
    Vmsave,
    /// 0x84: STGI.
    Stgi,
    /// 0x85: CLGI.
    Clgi,
    /// 0x86: SKINIT.
    Skinit,
    /// 0x87: RDTSCP.
    Rdtscp,
    /// 0x88: ICEBP.
    Icebp,
    /// 0x89: WBINVD/WBNOINVD.
    Wbinvd,
    /// 0x8a: MONITOR/MONITORX.
    Monitor,
    /// 0x8b: MWAIT/MWAITX.
    Mwait,
    /// 0x8d: XSETBV.
    Xsetbv,
    /// 0x400: nested page fault (EXITINFO1/2: [`NestedPageFault`]).
    NestedPageFault,
    /// -1: VMRUN found invalid guest state (APM §15.5.1).
    Invalid,
    /// -2: VMRUN of a VMSA that is busy (SEV-ES).
    Busy,
    /// Any other code, raw.
    Other(u64),
}

impl SvmExit {
    /// Decodes EXITCODE.
    pub const fn from_code(code: u64) -> SvmExit {
        use SvmExit::*;
        let low = (code & 0xff) as u8;
        match code {
            0x00..=0x0f => CrRead(low),
            0x10..=0x1f => CrWrite(low - 0x10),
            0x20..=0x2f => DrRead(low - 0x20),
            0x30..=0x3f => DrWrite(low - 0x30),
            0x40..=0x5f => Exception(low - 0x40),
            0x60 => Intr,
            0x61 => Nmi,
            0x62 => Smi,
            0x63 => Init,
            0x64 => Vintr,
            0x65 => Cr0SelectiveWrite,
            0x6e => Rdtsc,
            0x6f => Rdpmc,
            0x72 => Cpuid,
            0x76 => Invd,
            0x77 => Pause,
            0x78 => Hlt,
            0x79 => Invlpg,
            0x7a => Invlpga,
            0x7b => Ioio,
            0x7c => Msr,
            0x7d => TaskSwitch,
            0x7e => FerrFreeze,
            0x7f => Shutdown,
            0x80 => Vmrun,
            0x81 => Vmmcall,
            0x82 => Vmload,
            0x83 => Vmsave,
            0x84 => Stgi,
            0x85 => Clgi,
            0x86 => Skinit,
            0x87 => Rdtscp,
            0x88 => Icebp,
            0x89 => Wbinvd,
            0x8a => Monitor,
            0x8b => Mwait,
            0x8d => Xsetbv,
            0x400 => NestedPageFault,
            u64::MAX => Invalid,
            0xffff_ffff_ffff_fffe => Busy,
            other => Other(other),
        }
    }
}

/// Direction of an IN/OUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDirection {
    /// OUT/OUTS.
    Out,
    /// IN/INS.
    In,
}

/// EXITINFO1 of an IOIO intercept (APM §15.10.2, Figure 15-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoioInfo {
    /// Bit 0 TYPE: 1 = IN, 0 = OUT.
    pub direction: IoDirection,
    /// Bit 2 STR: INS/OUTS.
    pub string: bool,
    /// Bit 3 REP: REP prefix.
    pub rep: bool,
    /// Bits 6:4 SZ8/SZ16/SZ32: operand size in bytes (exactly one is set).
    pub size: u8,
    /// Bits 9:7 A16/A32/A64: address size in bits (string forms).
    pub address_bits: u8,
    /// Bits 31:16: the port.
    pub port: u16,
}

impl IoioInfo {
    /// Decodes EXITINFO1, or `None` when the size bits, or for INS/OUTS the
    /// address-size bits, are not one-hot. Plain IN/OUT have no memory
    /// operand; QEMU TCG leaves their address-size bits clear
    /// (`address_bits` is then 0).
    pub const fn decode(exitinfo1: u64) -> Option<IoioInfo> {
        let string = exitinfo1 & (1 << 2) != 0;
        let size = match (exitinfo1 >> 4) & 7 {
            0b001 => 1,
            0b010 => 2,
            0b100 => 4,
            _ => return None,
        };
        let address_bits = match (exitinfo1 >> 7) & 7 {
            0b001 => 16,
            0b010 => 32,
            0b100 => 64,
            0 if !string => 0,
            _ => return None,
        };
        Some(IoioInfo {
            direction: if exitinfo1 & 1 != 0 { IoDirection::In } else { IoDirection::Out },
            string,
            rep: exitinfo1 & (1 << 3) != 0,
            size,
            address_bits,
            port: (exitinfo1 >> 16) as u16,
        })
    }
}

/// A nested page fault (APM §15.25.6): EXITINFO1 is a #PF-style error
/// code plus two walk bits, EXITINFO2 the faulting guest-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NestedPageFault {
    /// EXITINFO2: the guest-physical address.
    pub gpa: u64,
    /// Bit 0 P: the nested entry was present (a protection fault).
    pub present: bool,
    /// Bit 1 RW: a write.
    pub write: bool,
    /// Bit 2 US: a user-mode access (nested walks count as user).
    pub user: bool,
    /// Bit 3 RSV: a reserved bit was set in a nested entry.
    pub reserved_bit: bool,
    /// Bit 4 ID: an instruction fetch.
    pub fetch: bool,
    /// Bit 32: the fault occurred translating the guest's final physical
    /// address.
    pub final_translation: bool,
    /// Bit 33: the fault occurred translating a guest page-table access.
    pub guest_page_table: bool,
}

impl NestedPageFault {
    /// Decodes EXITINFO1 and EXITINFO2.
    pub const fn decode(exitinfo1: u64, exitinfo2: u64) -> NestedPageFault {
        NestedPageFault {
            gpa: exitinfo2,
            present: bit(exitinfo1, 0),
            write: bit(exitinfo1, 1),
            user: bit(exitinfo1, 2),
            reserved_bit: bit(exitinfo1, 3),
            fetch: bit(exitinfo1, 4),
            final_translation: bit(exitinfo1, 32),
            guest_page_table: bit(exitinfo1, 33),
        }
    }
}

/// Bit `n` of `value`.
const fn bit(value: u64, n: u32) -> bool {
    value & (1 << n) != 0
}

/// The event type of EXITINTINFO and EVENTINJ (bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// 0: external or virtual interrupt (INTR).
    ExternalInterrupt,
    /// 2: NMI.
    Nmi,
    /// 3: exception (fault or trap).
    Exception,
    /// 4: software interrupt (INTn).
    SoftwareInterrupt,
    /// 1, 5-7: reserved.
    Reserved(u8),
}

/// An event being delivered when the #VMEXIT happened (EXITINTINFO, APM
/// §15.7.2), in the EVENTINJ format (§15.20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingEvent {
    /// Bits 7:0: vector.
    pub vector: u8,
    /// Bits 10:8: type.
    pub event_type: EventType,
    /// Bits 63:32 when bit 11 (EV) is set.
    pub error_code: Option<u32>,
}

impl PendingEvent {
    /// Decodes EXITINTINFO: `None` unless bit 31 (V) is set. The CPU may
    /// leave stale vector/type bits with V clear (seen under QEMU TCG,
    /// DESIGN.md §6); they mean nothing.
    pub const fn from_exitintinfo(raw: u64) -> Option<PendingEvent> {
        if raw & (1 << 31) == 0 {
            return None;
        }
        let event_type = match ((raw >> 8) & 7) as u8 {
            0 => EventType::ExternalInterrupt,
            2 => EventType::Nmi,
            3 => EventType::Exception,
            4 => EventType::SoftwareInterrupt,
            other => EventType::Reserved(other),
        };
        let error_code = if raw & (1 << 11) != 0 { Some((raw >> 32) as u32) } else { None };
        Some(PendingEvent { vector: raw as u8, event_type, error_code })
    }

    /// The EVENTINJ value that re-injects this event (V set).
    pub const fn to_eventinj(self) -> u64 {
        let event_type = match self.event_type {
            EventType::ExternalInterrupt => 0,
            EventType::Nmi => 2,
            EventType::Exception => 3,
            EventType::SoftwareInterrupt => 4,
            EventType::Reserved(other) => other as u64 & 7,
        };
        let mut raw = self.vector as u64 | (event_type << 8) | (1 << 31);
        if let Some(code) = self.error_code {
            raw |= (1 << 11) | ((code as u64) << 32);
        }
        raw
    }
}

/// CPUID Fn8000_000A EDX bit 3: the CPU saves the next RIP (nRIP) on
/// instruction intercepts.
pub const CPUID_EDX_NRIP_SAVE: u32 = 1 << 3;

/// The length of the intercepted instruction from the VMCB's nRIP field, on
/// CPUs with next-RIP save (APM Vol. 2 §15.7.1: nRIP is written for
/// instruction intercepts, among them the ones below). `None` when the CPU
/// lacks the feature (QEMU TCG), for other exits, or for a value that
/// cannot be one instruction: the caller then decodes.
pub fn next_rip_length(exit: SvmExit, rip: u64, next_rip: u64, nrip_save: bool) -> Option<u64> {
    let instruction_exit = matches!(
        exit,
        SvmExit::Vmmcall | SvmExit::Cpuid | SvmExit::Hlt | SvmExit::Msr | SvmExit::Ioio
    );
    if !nrip_save || !instruction_exit {
        return None;
    }
    let length = next_rip.wrapping_sub(rip);
    (1..=15).contains(&length).then_some(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_match_table_c1() {
        let table = [
            (0x00, SvmExit::CrRead(0)),
            (0x13, SvmExit::CrWrite(3)),
            (0x27, SvmExit::DrRead(7)),
            (0x37, SvmExit::DrWrite(7)),
            (0x4e, SvmExit::Exception(14)),
            (0x5f, SvmExit::Exception(31)),
            (0x60, SvmExit::Intr),
            (0x61, SvmExit::Nmi),
            (0x72, SvmExit::Cpuid),
            (0x78, SvmExit::Hlt),
            (0x7b, SvmExit::Ioio),
            (0x7c, SvmExit::Msr),
            (0x7f, SvmExit::Shutdown),
            (0x80, SvmExit::Vmrun),
            (0x81, SvmExit::Vmmcall),
            (0x400, SvmExit::NestedPageFault),
            (u64::MAX, SvmExit::Invalid),
            (u64::MAX - 1, SvmExit::Busy),
            (0x8c, SvmExit::Other(0x8c)),
            (0x401, SvmExit::Other(0x401)),
        ];
        for (code, exit) in table {
            assert_eq!(SvmExit::from_code(code), exit, "{code:#x}");
        }
    }

    #[test]
    fn ioio_exitinfo1() {
        // OUT DX, AL to 0x3f8: SZ8, A64.
        let out = IoioInfo::decode(0x03f8_0000 | 0x10 | 0x200).unwrap();
        assert_eq!(
            out,
            IoioInfo { direction: IoDirection::Out, string: false, rep: false, size: 1, address_bits: 64, port: 0x3f8 }
        );
        // REP INSD from 0xffff with 32-bit addressing.
        let ins = IoioInfo::decode(0xffff_0000 | 0x1 | 0x4 | 0x8 | 0x40 | 0x100).unwrap();
        assert_eq!(
            (ins.direction, ins.string, ins.rep, ins.size, ins.address_bits),
            (IoDirection::In, true, true, 4, 32)
        );
        assert_eq!(ins.port, 0xffff);
        // Two size bits, or none.
        assert_eq!(IoioInfo::decode(0x30 | 0x200), None);
        assert_eq!(IoioInfo::decode(0x200), None);
        // IN AL, DX from port 0x40 as QEMU TCG reports it: no address size.
        let plain = IoioInfo::decode(0x0040_0011).unwrap();
        assert_eq!((plain.port, plain.size, plain.address_bits, plain.direction), (0x40, 1, 0, IoDirection::In));
        // INS without an address size is malformed.
        assert_eq!(IoioInfo::decode(0x0040_0015), None);
    }

    #[test]
    fn nested_page_fault() {
        // Write to a present read-only nested page, final translation.
        let fault = NestedPageFault::decode((1 << 32) | 0x7, 0x1234_5000);
        assert!(fault.present && fault.write && fault.user && !fault.fetch);
        assert!(fault.final_translation && !fault.guest_page_table);
        assert_eq!(fault.gpa, 0x1234_5000);
        // Not-present during the guest's own page walk.
        let walk = NestedPageFault::decode((1 << 33) | 0x4, 0x9000);
        assert!(!walk.present && walk.guest_page_table && !walk.final_translation);
        assert!(NestedPageFault::decode(0x10, 0).fetch);
    }

    #[test]
    fn exitintinfo_checks_the_valid_bit() {
        // Stale #PF with error code but V clear: nothing pending.
        assert_eq!(PendingEvent::from_exitintinfo(0x0000_0002_0000_0b0e), None);
        // #PF (vector 14, type 3) with error code 2, valid.
        let raw = 0x0000_0002_8000_0b0e;
        let event = PendingEvent::from_exitintinfo(raw).unwrap();
        assert_eq!(event, PendingEvent { vector: 14, event_type: EventType::Exception, error_code: Some(2) });
        assert_eq!(event.to_eventinj(), raw);
        // External interrupt 0x20, no error code.
        let event = PendingEvent::from_exitintinfo(0x8000_0020).unwrap();
        assert_eq!((event.event_type, event.error_code), (EventType::ExternalInterrupt, None));
        assert_eq!(PendingEvent::from_exitintinfo(0x8000_0502).unwrap().event_type, EventType::Reserved(5));
    }

    #[test]
    fn next_rip_gives_lengths_only_where_defined() {
        assert_eq!(next_rip_length(SvmExit::Vmmcall, 0x1000, 0x1003, true), Some(3));
        assert_eq!(next_rip_length(SvmExit::Cpuid, 0x1000, 0x1003, true), Some(3));
        // No next-RIP save (QEMU TCG): decode instead.
        assert_eq!(next_rip_length(SvmExit::Vmmcall, 0x1000, 0, false), None);
        // Not an instruction intercept, or garbage.
        assert_eq!(next_rip_length(SvmExit::NestedPageFault, 0x1000, 0x1003, true), None);
        assert_eq!(next_rip_length(SvmExit::Hlt, 0x1000, 0x1000, true), None);
        assert_eq!(next_rip_length(SvmExit::Hlt, 0x1000, 0x2000, true), None);
    }
}
