//! Memory attributes: asks the hypervisor to check, with `AT S12E1R`, that
//! each region's combined attribute is the configured one, then performs
//! unaligned loads from Normal-NC and Device memory and reports what happened.

#![no_std]
#![no_main]

use bulkhead_abi::hypercall::{CHECK_ATTRIBUTE, HvError};
use bulkhead_test_guests::fault::probe;
use bulkhead_test_guests::{guest_main, hv, mmu, println};

/// The configuration's regions, one per attribute.
const REGIONS: [(&str, u64); 4] = [
    ("normal-wb", 0x4080_0000),
    ("normal-nc", 0x8000_0000),
    ("device-ngnre", 0x8010_0000),
    ("device-ngnrne", 0x8020_0000),
];

fn unaligned_load(name: &str, base: u64) -> Option<u64> {
    mmu::invalidate_tlb();
    let fault = probe(|| {
        // SAFETY: the address is inside this partition's region; being
        // unaligned is the point of the test.
        let value = unsafe { core::ptr::read_volatile((base + 1) as *const u32) };
        core::hint::black_box(value);
    });
    match fault {
        None => println!("unaligned load from {name}: no fault"),
        Some(f) if f.status() == 0x21 => println!("unaligned load from {name}: alignment fault (ESR_EL1 {:#x})", f.esr),
        Some(f) => println!("unaligned load from {name}: other fault (ESR_EL1 {:#x})", f.esr),
    }
    fault.map(|f| f.esr)
}

fn main() -> Result<(), u64> {
    mmu::enable_identity_map();
    println!("stage 1 on: identity map, Normal write-back");
    for (i, (name, va)) in REGIONS.into_iter().enumerate() {
        let result = HvError::check(hv::call(CHECK_ATTRIBUTE, [va, 0, 0, 0, 0, 0, 0]));
        println!("attribute of {name} at {va:#x}: {result:x?}");
        if result.is_err() {
            return Err(10 + i as u64);
        }
    }
    if unaligned_load("normal-nc", REGIONS[1].1).is_some() {
        return Err(20);
    }
    // On hardware this faults; QEMU TCG may not (DESIGN.md §4): either is
    // recorded, neither fails the test.
    unaligned_load("device-ngnre", REGIONS[2].1);
    hidden_sve()
}

/// SVE is hidden (the hypervisor does not switch its state): the ID
/// register says it is absent, and an SVE instruction is undefined.
fn hidden_sve() -> Result<(), u64> {
    let pfr0: u64;
    // SAFETY: reading an ID register (the hypervisor traps and answers).
    unsafe { core::arch::asm!("mrs {}, id_aa64pfr0_el1", out(reg) pfr0, options(nostack)) };
    let sve = (pfr0 >> 32) & 0xf;
    println!("ID_AA64PFR0_EL1.SVE = {sve}");
    // Enable SVE at EL1 (CPACR_EL1.ZEN = 0b11) so that only the hypervisor's
    // trap stands between the instruction and the hardware.
    // SAFETY: changes this guest's own EL1 trap control.
    unsafe {
        core::arch::asm!("mrs {t}, cpacr_el1", "orr {t}, {t}, #(3 << 16)", "msr cpacr_el1, {t}", "isb", t = out(reg) _, options(nostack));
    }
    let fault = probe(|| {
        // SAFETY: RDVL (SVE) only reads the vector length into x0; here it
        // must be undefined.
        unsafe { core::arch::asm!(".inst 0x04bf5020", out("x0") _, options(nostack)) };
    });
    match fault {
        Some(f) if f.class() == 0 => println!("an SVE instruction is undefined (ESR_EL1 {:#x})", f.esr),
        Some(f) => println!("an SVE instruction faulted oddly (ESR_EL1 {:#x})", f.esr),
        None => println!("an SVE instruction ran"),
    }
    if sve != 0 || fault.is_none_or(|f| f.class() != 0) {
        return Err(30);
    }
    Ok(())
}

guest_main!(main);
