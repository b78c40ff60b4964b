//! VMCB intercept vectors (AMD APM Vol. 2 Appendix B, Table B-1, offsets
//! 0x000-0x013) as typed flags. Only the bits Bulkhead sets or tests are
//! named; `from_bits_retain` reaches the rest.

use crate::vmx::bit_flags;

bit_flags! {
    /// Control area offset 0x000: bits 15:0 intercept reads of CR0-CR15,
    /// bits 31:16 intercept writes (APM Table B-1).
    pub struct CrIntercepts {
        /// Reads of CR0.
        const READ_CR0 = 0;
        /// Reads of CR3.
        const READ_CR3 = 3;
        /// Reads of CR4.
        const READ_CR4 = 4;
        /// Reads of CR8 (TPR).
        const READ_CR8 = 8;
        /// Writes of CR0.
        const WRITE_CR0 = 16;
        /// Writes of CR3.
        const WRITE_CR3 = 19;
        /// Writes of CR4.
        const WRITE_CR4 = 20;
        /// Writes of CR8 (TPR).
        const WRITE_CR8 = 24;
    }
}

impl CrIntercepts {
    /// Intercept reads of CR`cr` (0-15).
    pub const fn read(cr: u8) -> CrIntercepts {
        CrIntercepts::from_bits_retain(1 << (cr & 15))
    }

    /// Intercept writes of CR`cr` (0-15).
    pub const fn write(cr: u8) -> CrIntercepts {
        CrIntercepts::from_bits_retain(1 << (16 + (cr & 15)))
    }
}

bit_flags! {
    /// Control area offset 0x004: bits 15:0 intercept reads of DR0-DR15,
    /// bits 31:16 intercept writes (APM Table B-1).
    pub struct DrIntercepts {
        /// Reads of DR7.
        const READ_DR7 = 7;
        /// Writes of DR7.
        const WRITE_DR7 = 23;
    }
}

impl DrIntercepts {
    /// Intercept reads of DR`dr` (0-15).
    pub const fn read(dr: u8) -> DrIntercepts {
        DrIntercepts::from_bits_retain(1 << (dr & 15))
    }

    /// Intercept writes of DR`dr` (0-15).
    pub const fn write(dr: u8) -> DrIntercepts {
        DrIntercepts::from_bits_retain(1 << (16 + (dr & 15)))
    }
}

bit_flags! {
    /// Control area offset 0x008: bit N intercepts exception vector N
    /// (APM Table B-1, §15.12).
    pub struct ExceptionIntercepts {
        /// #DB, vector 1.
        const DEBUG = 1;
        /// #BP, vector 3.
        const BREAKPOINT = 3;
        /// #UD, vector 6.
        const INVALID_OPCODE = 6;
        /// #DF, vector 8.
        const DOUBLE_FAULT = 8;
        /// #GP, vector 13.
        const GENERAL_PROTECTION = 13;
        /// #PF, vector 14.
        const PAGE_FAULT = 14;
        /// #AC, vector 17.
        const ALIGNMENT_CHECK = 17;
        /// #MC, vector 18.
        const MACHINE_CHECK = 18;
    }
}

bit_flags! {
    /// Control area offset 0x00c: the first vector of miscellaneous
    /// intercepts (APM Table B-1).
    pub struct MiscIntercepts1 {
        /// Bit 0: physical INTR (maskable interrupt).
        const INTR = 0;
        /// Bit 1: physical NMI.
        const NMI = 1;
        /// Bit 2: physical SMI.
        const SMI = 2;
        /// Bit 3: physical INIT.
        const INIT = 3;
        /// Bit 4: virtual INTR.
        const VINTR = 4;
        /// Bit 5: CR0 writes that change bits other than CR0.TS or CR0.MP.
        const CR0_SELECTIVE_WRITE = 5;
        /// Bit 14: RDTSC.
        const RDTSC = 14;
        /// Bit 15: RDPMC.
        const RDPMC = 15;
        /// Bit 18: CPUID.
        const CPUID = 18;
        /// Bit 19: RSM.
        const RSM = 19;
        /// Bit 22: INVD.
        const INVD = 22;
        /// Bit 23: PAUSE.
        const PAUSE = 23;
        /// Bit 24: HLT.
        const HLT = 24;
        /// Bit 25: INVLPG.
        const INVLPG = 25;
        /// Bit 26: INVLPGA.
        const INVLPGA = 26;
        /// Bit 27: IN/OUT, through the I/O permission map (IOIO_PROT).
        const IOIO_PROT = 27;
        /// Bit 28: RDMSR/WRMSR, through the MSR permission map (MSR_PROT).
        const MSR_PROT = 28;
        /// Bit 29: task switches.
        const TASK_SWITCH = 29;
        /// Bit 30: FERR_FREEZE (processor freeze during legacy FERR handling).
        const FERR_FREEZE = 30;
        /// Bit 31: shutdown events (e.g. triple fault).
        const SHUTDOWN = 31;
    }
}

bit_flags! {
    /// Control area offset 0x010: the second vector of miscellaneous
    /// intercepts (APM Table B-1).
    pub struct MiscIntercepts2 {
        /// Bit 0: VMRUN. Must be set: VMRUN fails with VMEXIT_INVALID
        /// otherwise (APM §15.5.1).
        const VMRUN = 0;
        /// Bit 1: VMMCALL (the hypercall instruction).
        const VMMCALL = 1;
        /// Bit 2: VMLOAD.
        const VMLOAD = 2;
        /// Bit 3: VMSAVE.
        const VMSAVE = 3;
        /// Bit 4: STGI.
        const STGI = 4;
        /// Bit 5: CLGI.
        const CLGI = 5;
        /// Bit 6: SKINIT.
        const SKINIT = 6;
        /// Bit 7: RDTSCP.
        const RDTSCP = 7;
        /// Bit 8: ICEBP.
        const ICEBP = 8;
        /// Bit 9: WBINVD and WBNOINVD.
        const WBINVD = 9;
        /// Bit 10: MONITOR and MONITORX.
        const MONITOR = 10;
        /// Bit 11: MWAIT and MWAITX, unconditionally.
        const MWAIT = 11;
        /// Bit 13: XSETBV.
        const XSETBV = 13;
    }
}
