//! Filling a VMCB for a partition's 64-bit guest with nested paging.
//!
//! The result passes the VMRUN consistency checks of AMD APM Vol. 2
//! §15.5.1: EFER.SVME set, long mode with CR0.PG and CR4.PAE, CS.L set and
//! CS.D clear, the VMRUN intercept set, a non-zero ASID. Nothing here relies
//! on VMCB clean bits, next-RIP save, decode assists or flush-by-ASID, which
//! QEMU TCG lacks (DESIGN.md §6).

use super::vmcb::{MiscIntercepts1, MiscIntercepts2, Segment, Vmcb};
use crate::npt;

/// A partition's vCPU at its first VMRUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvmGuest {
    /// Entry point (guest-virtual).
    pub rip: u64,
    /// Initial stack pointer (guest-virtual).
    pub rsp: u64,
    /// Guest CR3 (a guest-physical PML4 address).
    pub cr3: u64,
    /// Extra CR0 bits (e.g. NE, WP); PE, ET and PG are always set.
    pub cr0: u64,
    /// Extra CR4 bits (e.g. PGE, OSFXSR); PAE is always set.
    pub cr4: u64,
    /// Extra EFER bits (e.g. NXE, SCE); LME, LMA and SVME are always set.
    pub efer: u64,
    /// The guest PAT (G_PAT, used while nested paging is on).
    pub pat: u64,
    /// The partition's ASID, non-zero.
    pub asid: u32,
    /// Host-physical root of the partition's nested page table.
    pub npt_pml4: u64,
    /// Host-physical base of the 12 KiB I/O permission map.
    pub iopm: u64,
    /// Host-physical base of the 8 KiB MSR permission map.
    pub msrpm: u64,
}

/// A guest [`fill_64bit_guest`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvmSetupError {
    /// ASID 0 belongs to the host; VMRUN rejects it.
    ZeroAsid,
    /// The IOPM, MSRPM or nested table root is not 4 KiB aligned or lies
    /// beyond bit 51.
    BadAddress(u64),
}

/// CR0.PE, CR0.ET, CR0.PG.
const CR0_REQUIRED: u64 = (1 << 0) | (1 << 4) | (1 << 31);
/// CR4.PAE.
const CR4_PAE: u64 = 1 << 5;
/// EFER.LME (8), EFER.LMA (10), EFER.SVME (12; APM §15.5.1 requires it in
/// the guest's EFER).
const EFER_REQUIRED: u64 = (1 << 8) | (1 << 10) | (1 << 12);
/// Segment attributes (APM Table B-2): type 0xb (code, execute/read,
/// accessed), S, P, L, G.
pub const CODE64_ATTRIB: u16 = 0x0a9b;
/// Type 3 (data, read/write, accessed), S, P, D/B, G.
pub const DATA_ATTRIB: u16 = 0x0c93;
/// Type 0xb (busy 64-bit TSS), P.
pub const TSS_ATTRIB: u16 = 0x008b;
/// V_INTR_MASKING (bit 24 of offset 0x060): the guest's RFLAGS.IF masks
/// only virtual interrupts, so physical ones always reach the host.
pub const V_INTR_MASKING: u64 = 1 << 24;
/// V_IRQ (bit 8): a virtual interrupt is pending; the CPU takes it when the
/// guest's RFLAGS.IF (with V_INTR_MASKING) allows and clears the bit when
/// it does (APM Vol. 2 §15.21.4).
pub const V_IRQ: u64 = 1 << 8;
/// V_INTR_PRIO (bits 19:16): the pending interrupt's priority class.
const V_INTR_PRIO_SHIFT: u32 = 16;
/// V_IGN_TPR (bit 20): the pending interrupt ignores V_TPR (the guest has
/// no TPR to raise: its local APIC model has none).
const V_IGN_TPR: u64 = 1 << 20;
/// V_INTR_VECTOR (bits 39:32).
const V_INTR_VECTOR_SHIFT: u32 = 32;
/// The V_* fields [`with_virtual_interrupt`] sets.
const V_PENDING_FIELDS: u64 = V_IRQ | (0xf << V_INTR_PRIO_SHIFT) | V_IGN_TPR | (0xff << V_INTR_VECTOR_SHIFT);

/// The VMCB's virtual-interrupt word (offset 0x060) `word` with external
/// interrupt `vector` pending: V_IRQ, V_INTR_VECTOR, V_INTR_PRIO = the
/// vector's priority class (bits 7:4), V_IGN_TPR; V_INTR_MASKING and V_TPR
/// unchanged.
pub const fn with_virtual_interrupt(word: u64, vector: u8) -> u64 {
    (word & !V_PENDING_FIELDS)
        | V_IRQ
        | V_IGN_TPR
        | (((vector >> 4) as u64) << V_INTR_PRIO_SHIFT)
        | ((vector as u64) << V_INTR_VECTOR_SHIFT)
}
/// NP_ENABLE (bit 0 of offset 0x090).
const NP_ENABLE: u64 = 1 << 0;
/// TLB_CONTROL 1: flush the whole TLB on this VMRUN (the only flush QEMU
/// TCG provides; the caller sets it to 0 after the first run or whenever an
/// ASID is reused).
pub const TLB_FLUSH_ALL: u8 = 1;

/// The intercepts every partition runs with: physical interrupts, NMIs,
/// SMIs and INIT go to the host; CPUID, HLT, INVD, task switches and
/// shutdown exit; port and MSR accesses go through the permission maps; and
/// every SVM instruction exits: VMRUN must, and VMLOAD/VMSAVE would
/// otherwise take a host-physical address from the guest's RAX.
pub const fn partition_intercepts() -> (MiscIntercepts1, MiscIntercepts2) {
    let misc1 = MiscIntercepts1::INTR
        .union(MiscIntercepts1::NMI)
        .union(MiscIntercepts1::SMI)
        .union(MiscIntercepts1::INIT)
        .union(MiscIntercepts1::CPUID)
        .union(MiscIntercepts1::INVD)
        .union(MiscIntercepts1::HLT)
        .union(MiscIntercepts1::INVLPGA)
        .union(MiscIntercepts1::IOIO_PROT)
        .union(MiscIntercepts1::MSR_PROT)
        .union(MiscIntercepts1::TASK_SWITCH)
        .union(MiscIntercepts1::SHUTDOWN);
    let misc2 = MiscIntercepts2::VMRUN
        .union(MiscIntercepts2::VMMCALL)
        .union(MiscIntercepts2::VMLOAD)
        .union(MiscIntercepts2::VMSAVE)
        .union(MiscIntercepts2::STGI)
        .union(MiscIntercepts2::CLGI)
        .union(MiscIntercepts2::SKINIT);
    (misc1, misc2)
}

/// Fills `vmcb` (reset to zero first) for `guest`: 64-bit mode at CPL 0
/// with flat segments (CS 0x08, data 0x10, TR 0x18), paging on, nested
/// paging with the given root, the given permission maps and ASID.
///
/// # Errors
/// [`SvmSetupError`] for ASID 0 or an unusable physical address.
pub fn fill_64bit_guest(vmcb: &mut Vmcb, guest: &SvmGuest) -> Result<(), SvmSetupError> {
    if guest.asid == 0 {
        return Err(SvmSetupError::ZeroAsid);
    }
    for address in [guest.npt_pml4, guest.iopm, guest.msrpm] {
        if address & !npt::ADDRESS_MASK != 0 {
            return Err(SvmSetupError::BadAddress(address));
        }
    }
    *vmcb = Vmcb::zeroed();

    let control = &mut vmcb.control;
    (control.intercept_misc1, control.intercept_misc2) = partition_intercepts();
    control.iopm_base_pa = guest.iopm;
    control.msrpm_base_pa = guest.msrpm;
    control.guest_asid = guest.asid;
    control.tlb_control = TLB_FLUSH_ALL;
    control.virtual_interrupt = V_INTR_MASKING;
    control.nested_control = NP_ENABLE;
    control.ncr3 = npt::ncr3(guest.npt_pml4);

    let save = &mut vmcb.save;
    let flat = |selector, attrib| Segment { selector, attrib, limit: 0xffff_ffff, base: 0 };
    save.cs = flat(0x08, CODE64_ATTRIB);
    save.ss = flat(0x10, DATA_ATTRIB);
    save.ds = flat(0x10, DATA_ATTRIB);
    save.es = flat(0x10, DATA_ATTRIB);
    save.fs = flat(0x10, DATA_ATTRIB);
    save.gs = flat(0x10, DATA_ATTRIB);
    save.tr = Segment { selector: 0x18, attrib: TSS_ATTRIB, limit: 0x67, base: 0 };
    save.cpl = 0;
    save.efer = guest.efer | EFER_REQUIRED;
    save.cr0 = guest.cr0 | CR0_REQUIRED;
    save.cr3 = guest.cr3;
    save.cr4 = guest.cr4 | CR4_PAE;
    save.rflags = 1 << 1;
    save.rip = guest.rip;
    save.rsp = guest.rsp;
    save.dr6 = 0xffff_0ff0;
    save.dr7 = 0x400;
    save.g_pat = guest.pat;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svm::vmcb::{CrIntercepts, ExceptionIntercepts};
    use alloc::boxed::Box;

    fn guest() -> SvmGuest {
        SvmGuest {
            rip: 0x10_0000,
            rsp: 0x20_0000,
            cr3: 0x30_0000,
            cr0: 1 << 5,
            cr4: 1 << 7,
            efer: 1 << 11,
            pat: 0x0007_0406_0007_0406,
            asid: 1,
            npt_pml4: 0x4000_0000,
            iopm: 0x4100_0000,
            msrpm: 0x4100_3000,
        }
    }

    #[test]
    fn fills_a_long_mode_guest() {
        let mut vmcb = Box::new(Vmcb::zeroed());
        vmcb.control.exitcode = 0x7b; // Stale state is cleared.
        fill_64bit_guest(&mut vmcb, &guest()).unwrap();
        let control = &vmcb.control;
        assert!(control.intercept_misc2.contains(MiscIntercepts2::VMRUN));
        assert!(control.intercept_misc2.contains(MiscIntercepts2::VMMCALL | MiscIntercepts2::VMLOAD));
        let misc1 = MiscIntercepts1::CPUID
            | MiscIntercepts1::HLT
            | MiscIntercepts1::IOIO_PROT
            | MiscIntercepts1::MSR_PROT
            | MiscIntercepts1::SHUTDOWN
            | MiscIntercepts1::INTR
            | MiscIntercepts1::NMI;
        assert!(control.intercept_misc1.contains(misc1));
        assert_eq!(control.intercept_misc1.bits(), 0xbd44_000f);
        assert_eq!(control.intercept_misc2.bits(), 0x7f);
        assert_eq!(control.intercept_cr, CrIntercepts::empty());
        assert_eq!(control.intercept_exceptions, ExceptionIntercepts::empty());
        assert_eq!((control.iopm_base_pa, control.msrpm_base_pa), (0x4100_0000, 0x4100_3000));
        assert_eq!((control.guest_asid, control.tlb_control), (1, 1));
        assert_eq!(control.nested_control, 1);
        assert_eq!(control.ncr3, 0x4000_0000);
        assert_eq!(control.virtual_interrupt, 1 << 24);
        assert_eq!((control.exitcode, control.vmcb_clean), (0, 0));

        let save = &vmcb.save;
        assert_eq!(save.efer, 0x1d00); // SVME | NXE | LMA | LME.
        assert_eq!(save.cr0, 0x8000_0031); // PG | NE | ET | PE.
        assert_eq!(save.cr4, 0xa0); // PGE | PAE.
        assert_eq!((save.cr3, save.rip, save.rsp, save.rflags), (0x30_0000, 0x10_0000, 0x20_0000, 2));
        assert_eq!(save.cs, Segment { selector: 8, attrib: 0xa9b, limit: 0xffff_ffff, base: 0 });
        // CS.L set, CS.D clear (APM §15.5.1 rejects both set).
        assert_eq!(save.cs.attrib & 0x600, 0x200);
        assert_eq!(save.ss.attrib, 0xc93);
        assert_eq!(save.tr.attrib, 0x8b);
        assert_eq!((save.cpl, save.dr7, save.dr6, save.g_pat), (0, 0x400, 0xffff_0ff0, 0x0007_0406_0007_0406));
    }

    #[test]
    fn refuses_asid_zero_and_bad_addresses() {
        let mut vmcb = Box::new(Vmcb::zeroed());
        let zero_asid = SvmGuest { asid: 0, ..guest() };
        assert_eq!(fill_64bit_guest(&mut vmcb, &zero_asid), Err(SvmSetupError::ZeroAsid));
        let misaligned = SvmGuest { msrpm: 0x4100_3800, ..guest() };
        assert_eq!(fill_64bit_guest(&mut vmcb, &misaligned), Err(SvmSetupError::BadAddress(0x4100_3800)));
        let too_high = SvmGuest { iopm: 1 << 52, ..guest() };
        assert_eq!(fill_64bit_guest(&mut vmcb, &too_high), Err(SvmSetupError::BadAddress(1 << 52)));
        assert_eq!(*vmcb, Vmcb::zeroed());
    }

    #[test]
    fn virtual_interrupt_encoding() {
        let word = with_virtual_interrupt(V_INTR_MASKING, 0x41);
        assert_eq!(word, 0x0000_0041_0114_0100);
        assert_eq!(word & V_IRQ, V_IRQ);
        // A second vector replaces the first, masking bit kept.
        assert_eq!(with_virtual_interrupt(word, 0xfe), 0x0000_00fe_011f_0100);
    }

    #[test]
    fn intercept_vector_bits() {
        assert_eq!(CrIntercepts::read(3), CrIntercepts::READ_CR3);
        assert_eq!(CrIntercepts::write(8).bits(), 1 << 24);
        assert_eq!(MiscIntercepts1::IOIO_PROT.bits(), 1 << 27);
        assert_eq!(MiscIntercepts1::SHUTDOWN.bits(), 1 << 31);
        assert_eq!(MiscIntercepts2::VMMCALL.bits(), 1 << 1);
        assert_eq!(ExceptionIntercepts::PAGE_FAULT.bits(), 1 << 14);
        assert_eq!(MiscIntercepts1::bit_name(18), Some("CPUID"));
    }
}
