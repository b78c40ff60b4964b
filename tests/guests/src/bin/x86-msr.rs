//! An x86_64 guest that uses the MSRs it owns, then writes one it does not
//! (VM_HSAVE_PA, where the CPU saves the hypervisor's state on VMRUN).
//! The guest-state MSRs pass through, EFER is emulated (SVME hidden, NXE
//! changeable); the forbidden write must stop the partition (`on_fault =
//! "stop"`) with a report, and the hypervisor keeps running. Reaching the
//! end is a failure.

#![no_std]
#![no_main]

use bulkhead_test_guests::{guest_main, println};

#[cfg(target_arch = "x86_64")]
fn main() -> Result<(), u64> {
    use bulkhead_test_guests::x86_trap::{install, try_rdmsr, try_wrmsr};
    const FS_BASE: u32 = 0xc000_0100;
    const EFER: u32 = 0xc000_0080;
    const VM_HSAVE_PA: u32 = 0xc001_0117;
    const EFER_LME_LMA: u64 = (1 << 8) | (1 << 10);
    const EFER_NXE: u64 = 1 << 11;
    const EFER_SVME: u64 = 1 << 12;

    install();
    try_wrmsr(FS_BASE, 0x1234_5000).map_err(|_| 1u64)?;
    let fs_base = try_rdmsr(FS_BASE).map_err(|_| 2u64)?;
    println!("FS.base written and read back: {fs_base:#x}");
    if fs_base != 0x1234_5000 {
        return Err(3);
    }
    let efer = try_rdmsr(EFER).map_err(|_| 4u64)?;
    println!("EFER reads {efer:#x}");
    if efer & EFER_LME_LMA != EFER_LME_LMA || efer & EFER_SVME != 0 {
        return Err(5);
    }
    try_wrmsr(EFER, efer | EFER_NXE).map_err(|_| 6u64)?;
    let efer = try_rdmsr(EFER).map_err(|_| 7u64)?;
    println!("EFER after setting NXE: {efer:#x}");
    if efer & EFER_NXE == 0 {
        return Err(8);
    }
    println!("attacking");
    let _ = try_wrmsr(VM_HSAVE_PA, 0);
    println!("the attack was not stopped");
    Err(9)
}

#[cfg(not(target_arch = "x86_64"))]
fn main() -> Result<(), u64> {
    println!("x86_64 only");
    Err(10)
}

guest_main!(main);
