//! The virtual machine control block (AMD APM Vol. 2 Appendix B): a 4 KiB
//! page holding the control area (Table B-1, offsets 0x000-0x3ff) and the
//! state save area (Table B-2, at offset 0x400). Every offset is checked at
//! compile time. Reserved ranges are named after their offset and must stay
//! zero (APM §15.5.1: VMRUN checks some of them).

use core::mem::{offset_of, size_of};

pub use super::intercepts::{CrIntercepts, DrIntercepts, ExceptionIntercepts, MiscIntercepts1, MiscIntercepts2};

/// A segment register in the state save area (APM Table B-2): selector,
/// attributes (descriptor bits 47:40 in bits 7:0 and 55:52 in bits 11:8),
/// limit, base.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Attributes: type (3:0), S (4), DPL (6:5), P (7), AVL (8), L (9),
    /// D/B (10), G (11).
    pub attrib: u16,
    /// Limit in bytes (already scaled by G).
    pub limit: u32,
    /// Base address.
    pub base: u64,
}

impl Segment {
    const ZERO: Segment = Segment { selector: 0, attrib: 0, limit: 0, base: 0 };
}

/// The control area (APM Table B-1), offsets 0x000-0x3ff.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C)]
#[allow(missing_docs)] // Fields are named after Table B-1; each carries its offset.
pub struct ControlArea {
    /// 0x000.
    pub intercept_cr: CrIntercepts,
    /// 0x004.
    pub intercept_dr: DrIntercepts,
    /// 0x008.
    pub intercept_exceptions: ExceptionIntercepts,
    /// 0x00c.
    pub intercept_misc1: MiscIntercepts1,
    /// 0x010.
    pub intercept_misc2: MiscIntercepts2,
    /// 0x014: INVLPGB, INVPCID, MCOMMIT, TLBSYNC, ... intercepts (unused).
    pub intercept_misc3: u32,
    pub reserved_018: [u8; 0x24],
    /// 0x03c.
    pub pause_filter_threshold: u16,
    /// 0x03e.
    pub pause_filter_count: u16,
    /// 0x040: IOPM_BASE_PA, physical base of the 12 KiB I/O permission map
    /// (bits 11:0 ignored).
    pub iopm_base_pa: u64,
    /// 0x048: MSRPM_BASE_PA, physical base of the 8 KiB MSR permission map
    /// (bits 11:0 ignored).
    pub msrpm_base_pa: u64,
    /// 0x050.
    pub tsc_offset: u64,
    /// 0x058: guest ASID (bits 31:0); 0 is the host's and illegal here.
    pub guest_asid: u32,
    /// 0x05c: TLB_CONTROL (0 nothing, 1 flush all, 3 flush this ASID, 7
    /// flush this ASID's non-global entries).
    pub tlb_control: u8,
    pub reserved_05d: [u8; 3],
    /// 0x060: V_TPR (7:0), V_IRQ (8), VGIF (9), V_INTR_PRIO (19:16),
    /// V_IGN_TPR (20), V_INTR_MASKING (24), AVIC enable (31),
    /// V_INTR_VECTOR (39:32).
    pub virtual_interrupt: u64,
    /// 0x068: INTERRUPT_SHADOW (0), GUEST_INTERRUPT_MASK (1).
    pub interrupt_shadow: u64,
    /// 0x070: EXITCODE.
    pub exitcode: u64,
    /// 0x078: EXITINFO1.
    pub exitinfo1: u64,
    /// 0x080: EXITINFO2.
    pub exitinfo2: u64,
    /// 0x088: EXITINTINFO.
    pub exitintinfo: u64,
    /// 0x090: NP_ENABLE (0), SEV (1), SEV-ES (2), GMET (3), ...
    pub nested_control: u64,
    /// 0x098.
    pub avic_apic_bar: u64,
    /// 0x0a0.
    pub ghcb_pa: u64,
    /// 0x0a8: EVENTINJ.
    pub eventinj: u64,
    /// 0x0b0: N_CR3, the nested page table root.
    pub ncr3: u64,
    /// 0x0b8: LBR virtualization (0), virtualized VMSAVE/VMLOAD (1).
    pub virtualization_extensions: u64,
    /// 0x0c0: VMCB clean bits (31:0); 0 makes the CPU reload everything.
    pub vmcb_clean: u64,
    /// 0x0c8: nRIP, written on #VMEXIT with next-RIP save (absent in QEMU TCG).
    pub next_rip: u64,
    /// 0x0d0: bytes fetched, with decode assists (absent in QEMU TCG).
    pub guest_instruction_bytes_fetched: u8,
    /// 0x0d1.
    pub guest_instruction_bytes: [u8; 15],
    /// 0x0e0.
    pub avic_backing_page: u64,
    pub reserved_0e8: u64,
    /// 0x0f0.
    pub avic_logical_table: u64,
    /// 0x0f8.
    pub avic_physical_table: u64,
    pub reserved_100: u64,
    /// 0x108.
    pub vmsa_pointer: u64,
    pub reserved_110: [u8; 0x2f0],
}

/// The state save area (APM Table B-2), at VMCB offset 0x400; offsets in
/// the comments are relative to its start.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C)]
#[allow(missing_docs)] // Fields are the registers they are named after.
pub struct StateSaveArea {
    pub es: Segment,
    pub cs: Segment,
    pub ss: Segment,
    pub ds: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub gdtr: Segment,
    pub ldtr: Segment,
    pub idtr: Segment,
    pub tr: Segment,
    pub reserved_0a0: [u8; 0x2b],
    /// 0x0cb: CPL (the CPU takes the guest's privilege level from here).
    pub cpl: u8,
    pub reserved_0cc: u32,
    /// 0x0d0.
    pub efer: u64,
    pub reserved_0d8: [u8; 0x70],
    /// 0x148.
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    /// 0x178.
    pub rip: u64,
    pub reserved_180: [u8; 0x58],
    /// 0x1d8.
    pub rsp: u64,
    pub s_cet: u64,
    pub ssp: u64,
    pub isst_addr: u64,
    /// 0x1f8.
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    /// 0x240.
    pub cr2: u64,
    pub reserved_248: [u8; 0x20],
    /// 0x268: the guest PAT, used with nested paging.
    pub g_pat: u64,
    pub dbgctl: u64,
    pub br_from: u64,
    pub br_to: u64,
    pub last_excp_from: u64,
    pub last_excp_to: u64,
    pub reserved_298: [u8; 0x48],
    /// 0x2e0.
    pub spec_ctrl: u64,
    pub reserved_2e8: [u8; 0x918],
}

/// A whole VMCB: one page-aligned 4 KiB page.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct Vmcb {
    /// Offsets 0x000-0x3ff.
    pub control: ControlArea,
    /// Offsets 0x400-0xfff.
    pub save: StateSaveArea,
}

impl Vmcb {
    /// An all-zero VMCB.
    pub const fn zeroed() -> Vmcb {
        let z = Segment::ZERO;
        Vmcb {
            control: ControlArea {
                intercept_cr: CrIntercepts::empty(),
                intercept_dr: DrIntercepts::empty(),
                intercept_exceptions: ExceptionIntercepts::empty(),
                intercept_misc1: MiscIntercepts1::empty(),
                intercept_misc2: MiscIntercepts2::empty(),
                intercept_misc3: 0,
                reserved_018: [0; 0x24],
                pause_filter_threshold: 0,
                pause_filter_count: 0,
                iopm_base_pa: 0,
                msrpm_base_pa: 0,
                tsc_offset: 0,
                guest_asid: 0,
                tlb_control: 0,
                reserved_05d: [0; 3],
                virtual_interrupt: 0,
                interrupt_shadow: 0,
                exitcode: 0,
                exitinfo1: 0,
                exitinfo2: 0,
                exitintinfo: 0,
                nested_control: 0,
                avic_apic_bar: 0,
                ghcb_pa: 0,
                eventinj: 0,
                ncr3: 0,
                virtualization_extensions: 0,
                vmcb_clean: 0,
                next_rip: 0,
                guest_instruction_bytes_fetched: 0,
                guest_instruction_bytes: [0; 15],
                avic_backing_page: 0,
                reserved_0e8: 0,
                avic_logical_table: 0,
                avic_physical_table: 0,
                reserved_100: 0,
                vmsa_pointer: 0,
                reserved_110: [0; 0x2f0],
            },
            save: StateSaveArea {
                es: z,
                cs: z,
                ss: z,
                ds: z,
                fs: z,
                gs: z,
                gdtr: z,
                ldtr: z,
                idtr: z,
                tr: z,
                reserved_0a0: [0; 0x2b],
                cpl: 0,
                reserved_0cc: 0,
                efer: 0,
                reserved_0d8: [0; 0x70],
                cr4: 0,
                cr3: 0,
                cr0: 0,
                dr7: 0,
                dr6: 0,
                rflags: 0,
                rip: 0,
                reserved_180: [0; 0x58],
                rsp: 0,
                s_cet: 0,
                ssp: 0,
                isst_addr: 0,
                rax: 0,
                star: 0,
                lstar: 0,
                cstar: 0,
                sfmask: 0,
                kernel_gs_base: 0,
                sysenter_cs: 0,
                sysenter_esp: 0,
                sysenter_eip: 0,
                cr2: 0,
                reserved_248: [0; 0x20],
                g_pat: 0,
                dbgctl: 0,
                br_from: 0,
                br_to: 0,
                last_excp_from: 0,
                last_excp_to: 0,
                reserved_298: [0; 0x48],
                spec_ctrl: 0,
                reserved_2e8: [0; 0x918],
            },
        }
    }
}

// Table B-1 offsets.
const _: () = {
    assert!(size_of::<ControlArea>() == 0x400);
    assert!(offset_of!(ControlArea, intercept_dr) == 0x004);
    assert!(offset_of!(ControlArea, intercept_exceptions) == 0x008);
    assert!(offset_of!(ControlArea, intercept_misc1) == 0x00c);
    assert!(offset_of!(ControlArea, intercept_misc2) == 0x010);
    assert!(offset_of!(ControlArea, pause_filter_threshold) == 0x03c);
    assert!(offset_of!(ControlArea, iopm_base_pa) == 0x040);
    assert!(offset_of!(ControlArea, msrpm_base_pa) == 0x048);
    assert!(offset_of!(ControlArea, tsc_offset) == 0x050);
    assert!(offset_of!(ControlArea, guest_asid) == 0x058);
    assert!(offset_of!(ControlArea, tlb_control) == 0x05c);
    assert!(offset_of!(ControlArea, virtual_interrupt) == 0x060);
    assert!(offset_of!(ControlArea, exitcode) == 0x070);
    assert!(offset_of!(ControlArea, exitinfo1) == 0x078);
    assert!(offset_of!(ControlArea, exitinfo2) == 0x080);
    assert!(offset_of!(ControlArea, exitintinfo) == 0x088);
    assert!(offset_of!(ControlArea, nested_control) == 0x090);
    assert!(offset_of!(ControlArea, eventinj) == 0x0a8);
    assert!(offset_of!(ControlArea, ncr3) == 0x0b0);
    assert!(offset_of!(ControlArea, vmcb_clean) == 0x0c0);
    assert!(offset_of!(ControlArea, next_rip) == 0x0c8);
    assert!(offset_of!(ControlArea, guest_instruction_bytes) == 0x0d1);
    assert!(offset_of!(ControlArea, avic_backing_page) == 0x0e0);
    assert!(offset_of!(ControlArea, vmsa_pointer) == 0x108);
};

// Table B-2 offsets, relative to the state save area.
const _: () = {
    assert!(size_of::<Segment>() == 16);
    assert!(size_of::<StateSaveArea>() == 0xc00);
    assert!(offset_of!(StateSaveArea, cs) == 0x010);
    assert!(offset_of!(StateSaveArea, gdtr) == 0x060);
    assert!(offset_of!(StateSaveArea, tr) == 0x090);
    assert!(offset_of!(StateSaveArea, cpl) == 0x0cb);
    assert!(offset_of!(StateSaveArea, efer) == 0x0d0);
    assert!(offset_of!(StateSaveArea, cr4) == 0x148);
    assert!(offset_of!(StateSaveArea, cr3) == 0x150);
    assert!(offset_of!(StateSaveArea, cr0) == 0x158);
    assert!(offset_of!(StateSaveArea, dr7) == 0x160);
    assert!(offset_of!(StateSaveArea, dr6) == 0x168);
    assert!(offset_of!(StateSaveArea, rflags) == 0x170);
    assert!(offset_of!(StateSaveArea, rip) == 0x178);
    assert!(offset_of!(StateSaveArea, rsp) == 0x1d8);
    assert!(offset_of!(StateSaveArea, rax) == 0x1f8);
    assert!(offset_of!(StateSaveArea, star) == 0x200);
    assert!(offset_of!(StateSaveArea, kernel_gs_base) == 0x220);
    assert!(offset_of!(StateSaveArea, sysenter_eip) == 0x238);
    assert!(offset_of!(StateSaveArea, cr2) == 0x240);
    assert!(offset_of!(StateSaveArea, g_pat) == 0x268);
    assert!(offset_of!(StateSaveArea, dbgctl) == 0x270);
    assert!(offset_of!(StateSaveArea, last_excp_to) == 0x290);
    assert!(offset_of!(StateSaveArea, spec_ctrl) == 0x2e0);
    assert!(size_of::<Vmcb>() == 0x1000);
    assert!(offset_of!(Vmcb, save) == 0x400);
};
