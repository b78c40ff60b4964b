//! The VMWRITE plan that sets up a partition's 64-bit guest.
//!
//! Given the control values from [`VmxControls::for_partition`],
//! [`VmcsWrites::for_64bit_guest`] turns them, the
//! partition's second-level table and bitmaps, and the guest's and host's
//! starting state into the list of `(field, value)` pairs the caller
//! VMWRITEs into a freshly VMCLEARed and VMPTRLDed VMCS. The values satisfy
//! the VM-entry checks of SDM Vol. 3C §27.2 (host state) and §27.3.1 (guest
//! state) for a flat 64-bit guest with paging on.

use alloc::vec::Vec;

pub use super::capabilities::{VmxCapabilities, VmxControls};
use super::controls::{ControlKind, EntryControls, ExitControls, PrimaryControls, SecondaryControls};
use super::vmcs::VmcsField;
use crate::ept;

/// The partition's VMX resources, by host-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionVmx {
    /// The EPT PML4 frame (see [`ept::eptp`]).
    pub ept_pml4: u64,
    /// The partition's VPID, 1..=0xffff (0 tags the host's translations).
    pub vpid: u16,
    /// I/O bitmap A (ports 0-0x7fff), 4 KiB aligned.
    pub io_bitmap_a: u64,
    /// I/O bitmap B (ports 0x8000-0xffff), 4 KiB aligned.
    pub io_bitmap_b: u64,
    /// The MSR bitmap, 4 KiB aligned.
    pub msr_bitmap: u64,
}

/// The guest's state at its first entry: 64-bit mode, flat segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestEntry {
    /// Entry point (guest-virtual).
    pub rip: u64,
    /// Initial stack pointer (guest-virtual).
    pub rsp: u64,
    /// Guest CR3 (a guest-physical PML4 address).
    pub cr3: u64,
    /// Guest CR0 before the fixed bits; PE and PG are forced on.
    pub cr0: u64,
    /// Guest CR4 before the fixed bits; PAE is forced on.
    pub cr4: u64,
    /// Guest IA32_EFER; LME and LMA are forced on.
    pub efer: u64,
    /// Guest IA32_PAT.
    pub pat: u64,
    /// GDTR base and limit.
    pub gdtr: (u64, u32),
    /// IDTR base and limit.
    pub idtr: (u64, u32),
}

/// The host state the CPU loads on every VM exit (SDM §25.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // Fields are the host-state registers they are named after.
pub struct HostState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    /// The VM-exit handler.
    pub rip: u64,
    pub rsp: u64,
    pub cs: u16,
    pub ss: u16,
    pub ds: u16,
    pub es: u16,
    pub fs: u16,
    pub gs: u16,
    pub tr: u16,
    pub fs_base: u64,
    pub gs_base: u64,
    pub tr_base: u64,
    pub gdtr_base: u64,
    pub idtr_base: u64,
    pub efer: u64,
    pub pat: u64,
}

/// A plan [`VmcsWrites::for_64bit_guest`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestSetupError {
    /// The controls do not enable what a 64-bit EPT guest needs: the
    /// named control is missing.
    MissingControl {
        /// The field.
        control: ControlKind,
        /// The control's name.
        name: &'static str,
    },
    /// VPID 0 is the host's (VM-entry check, SDM §27.2.1.1).
    ZeroVpid,
    /// A structure address is not 4 KiB aligned or beyond bit 51.
    BadAddress {
        /// The control field that would hold it.
        field: VmcsField,
        /// The address.
        address: u64,
    },
    /// A host selector has RPL or TI set, or CS/TR is null (SDM §27.2.3).
    BadHostSelector {
        /// The field.
        field: VmcsField,
        /// The selector.
        selector: u16,
    },
}

// Guest values (SDM §27.3.1): access rights are the segment descriptor's
// bits 15:8 and 23:20 as bits 7:0 and 15:12, plus bit 16 "unusable".
const CR0_PE: u64 = 1 << 0;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_FIXED: u64 = 1 << 1;
const DR7_INIT: u64 = 0x400;
const CODE_SELECTOR: u64 = 0x08;
const DATA_SELECTOR: u64 = 0x10;
const TR_SELECTOR: u64 = 0x18;
/// Type 11 (execute/read, accessed), S, P, L (bit 13), G (bit 15).
const CODE64_ACCESS_RIGHTS: u64 = 0xa09b;
/// Type 3 (read/write, accessed), S, P, D/B (bit 14), G.
const DATA_ACCESS_RIGHTS: u64 = 0xc093;
/// Type 11 (busy 64-bit TSS), P: the only TR type allowed in IA-32e mode.
const TR_ACCESS_RIGHTS: u64 = 0x008b;
/// Bit 16: unusable.
const UNUSABLE: u64 = 1 << 16;

/// A list of VMWRITEs, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmcsWrites {
    writes: Vec<(VmcsField, u64)>,
}

impl VmcsWrites {
    /// The writes that prepare a VMCS for a 64-bit guest entering at
    /// `guest.rip` with EPT and VPID, CR0/CR4 fixed bits applied (writes to
    /// pinned bits exit; the guest reads the value it asked for).
    ///
    /// # Errors
    /// [`GuestSetupError`] when `controls` lack a control the plan relies
    /// on, the VPID is 0, a bitmap or table address is unusable, or a host
    /// selector would fail the VM-entry checks.
    pub fn for_64bit_guest(
        capabilities: &VmxCapabilities,
        controls: &VmxControls,
        partition: &PartitionVmx,
        guest: &GuestEntry,
        host: &HostState,
    ) -> Result<VmcsWrites, GuestSetupError> {
        check_controls(controls)?;
        if partition.vpid == 0 {
            return Err(GuestSetupError::ZeroVpid);
        }
        for (field, address) in [
            (VmcsField::EptPointer, partition.ept_pml4),
            (VmcsField::IoBitmapA, partition.io_bitmap_a),
            (VmcsField::IoBitmapB, partition.io_bitmap_b),
            (VmcsField::MsrBitmap, partition.msr_bitmap),
        ] {
            if address & !ept::ADDRESS_MASK != 0 {
                return Err(GuestSetupError::BadAddress { field, address });
            }
        }
        for (field, selector) in [
            (VmcsField::HostCsSelector, host.cs),
            (VmcsField::HostSsSelector, host.ss),
            (VmcsField::HostDsSelector, host.ds),
            (VmcsField::HostEsSelector, host.es),
            (VmcsField::HostFsSelector, host.fs),
            (VmcsField::HostGsSelector, host.gs),
            (VmcsField::HostTrSelector, host.tr),
        ] {
            let null_forbidden = matches!(field, VmcsField::HostCsSelector | VmcsField::HostTrSelector);
            if selector & 7 != 0 || (null_forbidden && selector == 0) {
                return Err(GuestSetupError::BadHostSelector { field, selector });
            }
        }

        let cr0_fixed = if controls.secondary.contains(SecondaryControls::UNRESTRICTED_GUEST) {
            capabilities.cr0.unrestricted_cr0()
        } else {
            capabilities.cr0
        };
        let cr0 = guest.cr0 | CR0_PE | CR0_PG;
        let cr4 = guest.cr4 | CR4_PAE;

        use VmcsField::*;
        let mut writes = Vec::with_capacity(80);
        writes.extend_from_slice(&[
            (PinBasedControls, u64::from(controls.pin_based.bits())),
            (PrimaryProcessorBasedControls, u64::from(controls.primary.bits())),
            (SecondaryProcessorBasedControls, u64::from(controls.secondary.bits())),
            (VmExitControls, u64::from(controls.exit.bits())),
            (VmEntryControls, u64::from(controls.entry.bits())),
            (ExceptionBitmap, 0),
            (Cr3TargetCount, 0),
            (VmExitMsrStoreCount, 0),
            (VmExitMsrLoadCount, 0),
            (VmEntryMsrLoadCount, 0),
            (VmEntryInterruptionInformation, 0),
            (IoBitmapA, partition.io_bitmap_a),
            (IoBitmapB, partition.io_bitmap_b),
            (MsrBitmap, partition.msr_bitmap),
            (EptPointer, ept::eptp(partition.ept_pml4, false)),
            (VirtualProcessorId, u64::from(partition.vpid)),
            (Cr0GuestHostMask, cr0_fixed.pinned()),
            (Cr0ReadShadow, cr0),
            (Cr4GuestHostMask, capabilities.cr4.pinned()),
            (Cr4ReadShadow, cr4),
            // Guest state (§25.4).
            (GuestCr0, cr0_fixed.apply(cr0)),
            (GuestCr3, guest.cr3),
            (GuestCr4, capabilities.cr4.apply(cr4)),
            (GuestDr7, DR7_INIT),
            (GuestRsp, guest.rsp),
            (GuestRip, guest.rip),
            (GuestRflags, RFLAGS_FIXED),
            (GuestIa32Efer, guest.efer | EFER_LME | EFER_LMA),
            (GuestIa32Pat, guest.pat),
            (GuestIa32Debugctl, 0),
            (GuestCsSelector, CODE_SELECTOR),
            (GuestCsBase, 0),
            (GuestCsLimit, 0xffff_ffff),
            (GuestCsAccessRights, CODE64_ACCESS_RIGHTS),
        ]);
        for (selector, base, limit, rights) in [
            (GuestSsSelector, GuestSsBase, GuestSsLimit, GuestSsAccessRights),
            (GuestDsSelector, GuestDsBase, GuestDsLimit, GuestDsAccessRights),
            (GuestEsSelector, GuestEsBase, GuestEsLimit, GuestEsAccessRights),
            (GuestFsSelector, GuestFsBase, GuestFsLimit, GuestFsAccessRights),
            (GuestGsSelector, GuestGsBase, GuestGsLimit, GuestGsAccessRights),
        ] {
            writes.extend_from_slice(&[
                (selector, DATA_SELECTOR),
                (base, 0),
                (limit, 0xffff_ffff),
                (rights, DATA_ACCESS_RIGHTS),
            ]);
        }
        writes.extend_from_slice(&[
            (GuestTrSelector, TR_SELECTOR),
            (GuestTrBase, 0),
            (GuestTrLimit, 0x67),
            (GuestTrAccessRights, TR_ACCESS_RIGHTS),
            (GuestLdtrSelector, 0),
            (GuestLdtrBase, 0),
            (GuestLdtrLimit, 0),
            (GuestLdtrAccessRights, UNUSABLE),
            (GuestGdtrBase, guest.gdtr.0),
            (GuestGdtrLimit, u64::from(guest.gdtr.1)),
            (GuestIdtrBase, guest.idtr.0),
            (GuestIdtrLimit, u64::from(guest.idtr.1)),
            (GuestInterruptibilityState, 0),
            (GuestActivityState, 0),
            (GuestPendingDebugExceptions, 0),
            (GuestIa32SysenterCs, 0),
            (GuestIa32SysenterEsp, 0),
            (GuestIa32SysenterEip, 0),
            // No shadow VMCS: the link pointer must be all ones (§27.3.1.5).
            (VmcsLinkPointer, u64::MAX),
            // Host state (§25.5).
            (HostCr0, host.cr0),
            (HostCr3, host.cr3),
            (HostCr4, host.cr4),
            (HostRip, host.rip),
            (HostRsp, host.rsp),
            (HostCsSelector, u64::from(host.cs)),
            (HostSsSelector, u64::from(host.ss)),
            (HostDsSelector, u64::from(host.ds)),
            (HostEsSelector, u64::from(host.es)),
            (HostFsSelector, u64::from(host.fs)),
            (HostGsSelector, u64::from(host.gs)),
            (HostTrSelector, u64::from(host.tr)),
            (HostFsBase, host.fs_base),
            (HostGsBase, host.gs_base),
            (HostTrBase, host.tr_base),
            (HostGdtrBase, host.gdtr_base),
            (HostIdtrBase, host.idtr_base),
            (HostIa32Efer, host.efer),
            (HostIa32Pat, host.pat),
            (HostIa32SysenterCs, 0),
            (HostIa32SysenterEsp, 0),
            (HostIa32SysenterEip, 0),
        ]);
        Ok(VmcsWrites { writes })
    }

    /// The writes, in the order to perform them.
    pub fn writes(&self) -> &[(VmcsField, u64)] {
        &self.writes
    }

    /// The value planned for `field`, if any (the last one if written twice).
    pub fn get(&self, field: VmcsField) -> Option<u64> {
        self.writes.iter().rev().find(|(f, _)| *f == field).map(|(_, value)| *value)
    }
}

/// The controls the plan's guest and host state depend on.
fn check_controls(controls: &VmxControls) -> Result<(), GuestSetupError> {
    let missing = |control: ControlKind, name: &'static str| Err(GuestSetupError::MissingControl { control, name });
    if !controls.primary.contains(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS) {
        return missing(ControlKind::PrimaryProcessorBased, "ACTIVATE_SECONDARY_CONTROLS");
    }
    if !controls.secondary.contains(SecondaryControls::ENABLE_EPT) {
        return missing(ControlKind::SecondaryProcessorBased, "ENABLE_EPT");
    }
    if !controls.secondary.contains(SecondaryControls::ENABLE_VPID) {
        return missing(ControlKind::SecondaryProcessorBased, "ENABLE_VPID");
    }
    if !controls.exit.contains(ExitControls::HOST_ADDRESS_SPACE_SIZE) {
        return missing(ControlKind::Exit, "HOST_ADDRESS_SPACE_SIZE");
    }
    for (flag, name) in [
        (EntryControls::IA32E_MODE_GUEST, "IA32E_MODE_GUEST"),
        (EntryControls::LOAD_IA32_EFER, "LOAD_IA32_EFER"),
        (EntryControls::LOAD_IA32_PAT, "LOAD_IA32_PAT"),
    ] {
        if !controls.entry.contains(flag) {
            return missing(ControlKind::Entry, name);
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "guest_tests.rs"]
mod tests;
