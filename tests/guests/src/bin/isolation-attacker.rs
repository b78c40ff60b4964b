//! The attacking partition: tries to read and write its neighbour's memory
//! (by the host-physical address the neighbour is backed with), an address
//! nobody has, and to make the hypervisor read the neighbour's memory for it.
//! With the `inject` fault policy every access must come back as an abort;
//! the hypercall must be refused.

#![no_std]
#![no_main]

use bulkhead_abi::hypercall::HvError;
use bulkhead_test_guests::fault::probe;
use bulkhead_test_guests::{guest_main, hv, println, time};

/// Host-physical address of the victim's second RAM region (its
/// configuration's `backing`); not mapped in this partition.
const VICTIM_HOST: u64 = 0x5000_0000;
/// An address no partition has.
const NOWHERE: u64 = 0x1_0000_0000;

fn expect_abort(what: &str, access: impl FnOnce()) -> Result<(), u64> {
    match probe(access) {
        Some(fault) if fault.class() == 0x25 && fault.status() == 0x10 => {
            println!("{what}: refused with an external abort (ESR_EL1 {:#x}, FAR_EL1 {:#x})", fault.esr, fault.far);
            Ok(())
        }
        Some(fault) => {
            println!("{what}: unexpected fault ESR_EL1 {:#x}", fault.esr);
            Err(4)
        }
        None => {
            println!("{what}: NOT refused: isolation is broken");
            Err(5)
        }
    }
}

/// Rounds of attacks, spread over the victim's attack window (it waits
/// 1.5 s after writing its pattern): the victim may start later than us.
const ROUNDS: u32 = 3;
const FIRST_ROUND_DELAY_MS: u64 = 400;
const ROUND_GAP_MS: u64 = 250;

fn main() -> Result<(), u64> {
    time::delay_ms(FIRST_ROUND_DELAY_MS);
    for round in 1..=ROUNDS {
        println!("attack round {round} of {ROUNDS}");
        attack()?;
        time::delay_ms(ROUND_GAP_MS);
    }
    println!("every attack was refused");
    Ok(())
}

fn attack() -> Result<(), u64> {
    expect_abort("read of the victim's memory", || {
        // SAFETY: deliberately outside this partition's memory: the
        // hypervisor must turn the access into an abort, which `probe` catches.
        unsafe { core::ptr::read_volatile(VICTIM_HOST as *const u64) };
    })?;
    expect_abort("write to the victim's memory", || {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(VICTIM_HOST as *mut u64, 0xbad) };
    })?;
    expect_abort("read of unassigned memory", || {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(NOWHERE as *const u64) };
    })?;
    let result = hv::console_write_raw(VICTIM_HOST, 64);
    println!("console write from the victim's memory: {result:?}");
    if result != Err(HvError::InvalidParameter) {
        return Err(6);
    }
    Ok(())
}

guest_main!(main);
