use super::*;
use crate::vmx::controls::{ControlError, VmxBasic};
use crate::vmx::vmcs::FixedBits;

const fn capability(must_be_one: u32, may_be_one: u32) -> u64 {
    ((may_be_one as u64) << 32) | must_be_one as u64
}

/// A CPU with TRUE controls that allows everything Bulkhead asks for.
fn capabilities() -> VmxCapabilities {
    VmxCapabilities {
        basic: VmxBasic(0x00da_1000_0000_0004),
        pin_based: capability(0x16, 0xff),
        primary: capability(0x0400_6172, 0xfff9_fffe),
        secondary: capability(0, 0x0053_7fff),
        exit: capability(0x0003_6dfb, 0x003f_ffff),
        entry: capability(0x0000_11fb, 0x0000_f3ff),
        cr0: FixedBits { fixed0: 0x8000_0021, fixed1: 0xffff_ffff },
        cr4: FixedBits { fixed0: 0x2000, fixed1: 0x0077_67ff },
    }
}

fn partition() -> PartitionVmx {
    PartitionVmx {
        ept_pml4: 0x1_0000_0000,
        vpid: 3,
        io_bitmap_a: 0x20_0000,
        io_bitmap_b: 0x20_1000,
        msr_bitmap: 0x20_2000,
    }
}

fn guest() -> GuestEntry {
    GuestEntry {
        rip: 0xffff_ffff_8100_0000,
        rsp: 0x8000,
        cr3: 0x10_0000,
        // ET | NE | WP.
        cr0: 0x0001_0030,
        // PGE | OSFXSR, plus bit 31 which FIXED1 forbids.
        cr4: 0x8000_0280,
        efer: 1 << 11,
        pat: 0x0007_0406_0007_0406,
        gdtr: (0x1000, 0x17),
        idtr: (0x2000, 0xfff),
    }
}

fn host() -> HostState {
    HostState {
        cr0: 0x8005_0033,
        cr3: 0x30_0000,
        cr4: 0x2620,
        rip: 0xffff_8000_0010_0000,
        rsp: 0xffff_8000_0020_0000,
        cs: 0x08,
        ss: 0x10,
        ds: 0,
        es: 0,
        fs: 0,
        gs: 0,
        tr: 0x18,
        fs_base: 0,
        gs_base: 0xffff_8000_0030_0000,
        tr_base: 0xffff_8000_0040_0000,
        gdtr_base: 0xffff_8000_0050_0000,
        idtr_base: 0xffff_8000_0060_0000,
        efer: 0xd01,
        pat: 0x0007_0401_0007_0406,
    }
}

fn plan() -> VmcsWrites {
    let capabilities = capabilities();
    let controls = VmxControls::for_partition(&capabilities).unwrap();
    VmcsWrites::for_64bit_guest(&capabilities, &controls, &partition(), &guest(), &host()).unwrap()
}

#[test]
fn controls_for_a_partition() {
    let controls = VmxControls::for_partition(&capabilities()).unwrap();
    // Default1 bits 1, 2, 4, required 0 and 3, optional VIRTUAL_NMIS (5) granted.
    assert_eq!(controls.pin_based.bits(), 0x3f);
    assert_eq!(controls.primary.bits(), 0x0400_6172 | 0x9200_0080);
    // Secondary: EPT, RDTSCP, VPID, unrestricted, INVPCID, XSAVES (bit 20 allowed).
    assert_eq!(controls.secondary.bits(), 0x0010_10aa);
    assert!(controls.exit.contains(ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT | ExitControls::LOAD_IA32_EFER));
    assert!(controls.entry.contains(EntryControls::IA32E_MODE_GUEST | EntryControls::LOAD_IA32_PAT));
}

#[test]
fn missing_ept_names_the_control() {
    let mut capabilities = capabilities();
    capabilities.secondary = capability(0, 0x0053_7ffd); // No bit 1.
    let error = VmxControls::for_partition(&capabilities).unwrap_err();
    assert_eq!(error, ControlError { control: ControlKind::SecondaryProcessorBased, bit: 1, name: "ENABLE_EPT" });
}

#[test]
fn guest_control_registers_get_fixed_bits() {
    let plan = plan();
    // Unrestricted guest granted: PE/PG not pinned by FIXED0, but the plan sets them.
    assert_eq!(plan.get(VmcsField::GuestCr0), Some(0x8001_0031));
    assert_eq!(plan.get(VmcsField::Cr0ReadShadow), Some(0x8001_0031));
    // Without NE in the request, FIXED0 forces it; the shadow keeps the request.
    let capabilities = capabilities();
    let controls = VmxControls::for_partition(&capabilities).unwrap();
    let no_ne = GuestEntry { cr0: 0x0001_0010, ..guest() };
    let plan_no_ne = VmcsWrites::for_64bit_guest(&capabilities, &controls, &partition(), &no_ne, &host()).unwrap();
    assert_eq!(plan_no_ne.get(VmcsField::GuestCr0), Some(0x8001_0031));
    assert_eq!(plan_no_ne.get(VmcsField::Cr0ReadShadow), Some(0x8001_0011));
    assert_eq!(plan.get(VmcsField::Cr0GuestHostMask), Some(0x20 | 0xffff_ffff_0000_0000));
    // VMXE (bit 13) forced, bit 31 cleared, PAE forced.
    assert_eq!(plan.get(VmcsField::GuestCr4), Some(0x2000 | 0x2a0));
    assert_eq!(plan.get(VmcsField::Cr4ReadShadow), Some(0x8000_02a0));
    assert_eq!(plan.get(VmcsField::Cr4GuestHostMask), Some(!0x0077_67ff | 0x2000));
}

#[test]
fn guest_entry_state() {
    let plan = plan();
    assert_eq!(plan.get(VmcsField::GuestRip), Some(0xffff_ffff_8100_0000));
    assert_eq!(plan.get(VmcsField::GuestRsp), Some(0x8000));
    assert_eq!(plan.get(VmcsField::GuestCr3), Some(0x10_0000));
    assert_eq!(plan.get(VmcsField::GuestRflags), Some(2));
    assert_eq!(plan.get(VmcsField::GuestIa32Efer), Some(0xd00));
    assert_eq!(plan.get(VmcsField::GuestCsAccessRights), Some(0xa09b));
    assert_eq!(plan.get(VmcsField::GuestSsAccessRights), Some(0xc093));
    assert_eq!(plan.get(VmcsField::GuestTrAccessRights), Some(0x8b));
    assert_eq!(plan.get(VmcsField::GuestLdtrAccessRights), Some(0x1_0000));
    assert_eq!(plan.get(VmcsField::VmcsLinkPointer), Some(u64::MAX));
    assert_eq!(plan.get(VmcsField::GuestIdtrLimit), Some(0xfff));
    // EPTP from ept::eptp: WB, 4-level walk.
    assert_eq!(plan.get(VmcsField::EptPointer), Some(0x1_0000_001e));
    assert_eq!(plan.get(VmcsField::VirtualProcessorId), Some(3));
    assert_eq!(plan.get(VmcsField::MsrBitmap), Some(0x20_2000));
    assert_eq!(plan.get(VmcsField::HostRip), Some(0xffff_8000_0010_0000));
    assert_eq!(plan.get(VmcsField::HostTrSelector), Some(0x18));
    // Each field written once, every value fits its field, no read-only field.
    for (index, (field, value)) in plan.writes().iter().enumerate() {
        assert!(field.is_writable(), "{field:?}");
        assert_eq!(value & !field.value_mask(), 0, "{field:?}");
        assert!(plan.writes()[index + 1..].iter().all(|(other, _)| other != field), "{field:?} twice");
    }
}

#[test]
fn without_unrestricted_guest_fixed0_pins_pe_and_pg() {
    let capabilities = capabilities();
    let mut controls = VmxControls::for_partition(&capabilities).unwrap();
    controls.secondary = SecondaryControls::ENABLE_EPT | SecondaryControls::ENABLE_VPID;
    let plan = VmcsWrites::for_64bit_guest(&capabilities, &controls, &partition(), &guest(), &host()).unwrap();
    assert_eq!(plan.get(VmcsField::Cr0GuestHostMask), Some(0x8000_0021 | 0xffff_ffff_0000_0000));
}

#[test]
fn refuses_bad_plans() {
    let capabilities = capabilities();
    let controls = VmxControls::for_partition(&capabilities).unwrap();
    let setup = |partition: &PartitionVmx, host: &HostState| {
        VmcsWrites::for_64bit_guest(&capabilities, &controls, partition, &guest(), host)
    };
    let zero_vpid = PartitionVmx { vpid: 0, ..partition() };
    assert_eq!(setup(&zero_vpid, &host()), Err(GuestSetupError::ZeroVpid));
    let misaligned = PartitionVmx { msr_bitmap: 0x20_2800, ..partition() };
    assert_eq!(
        setup(&misaligned, &host()),
        Err(GuestSetupError::BadAddress { field: VmcsField::MsrBitmap, address: 0x20_2800 })
    );
    let rpl3 = HostState { ss: 0x13, ..host() };
    assert_eq!(
        setup(&partition(), &rpl3),
        Err(GuestSetupError::BadHostSelector { field: VmcsField::HostSsSelector, selector: 0x13 })
    );
    let null_tr = HostState { tr: 0, ..host() };
    assert!(matches!(setup(&partition(), &null_tr), Err(GuestSetupError::BadHostSelector { .. })));
    let mut no_entry_efer = controls;
    no_entry_efer.entry = EntryControls::IA32E_MODE_GUEST | EntryControls::LOAD_IA32_PAT;
    assert_eq!(
        VmcsWrites::for_64bit_guest(&capabilities, &no_entry_efer, &partition(), &guest(), &host()),
        Err(GuestSetupError::MissingControl { control: ControlKind::Entry, name: "LOAD_IA32_EFER" })
    );
}

#[test]
fn secondary_allowed_one_settings() {
    let capabilities = capabilities();
    assert!(capabilities.allows_secondary(SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST));
    let no_ug = VmxCapabilities { secondary: capability(0, 0x0053_7f7f), ..capabilities };
    assert!(no_ug.allows_secondary(SecondaryControls::ENABLE_EPT));
    assert!(!no_ug.allows_secondary(SecondaryControls::UNRESTRICTED_GUEST));
    // No secondary MSR: nothing allowed.
    let none = VmxCapabilities { secondary: 0, ..capabilities };
    assert!(!none.allows_secondary(SecondaryControls::ENABLE_EPT));
}
