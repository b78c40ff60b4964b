//! A passed-through device's interrupt: the partition owns QEMU `virt`'s
//! PL031 real-time clock (registers mapped at stage 2, SPI 2 = INTID 34
//! assigned). It sets the RTC's match register one second ahead and waits
//! for the alarm interrupt, which the hypervisor forwards from the physical
//! GIC through a hardware list register.

#![no_std]
#![no_main]

use bulkhead_test_guests::{gic, guest_main, println, time};
use core::sync::atomic::{AtomicU32, Ordering};

/// The PL031 (passed through at its host address).
const RTC: u64 = 0x0901_0000;
/// PL031 registers (DDI 0224 §3.2): data, match, control, mask, clear.
const RTCDR: u64 = RTC;
const RTCMR: u64 = RTC + 0x04;
const RTCCR: u64 = RTC + 0x0c;
const RTCIMSC: u64 = RTC + 0x10;
const RTCICR: u64 = RTC + 0x1c;
const RTC_INTID: u32 = 34;

static ALARMS: AtomicU32 = AtomicU32::new(0);

fn write(address: u64, value: u32) {
    // SAFETY: the RTC's registers are this partition's (passthrough).
    unsafe { core::ptr::write_volatile(address as *mut u32, value) }
}

fn read(address: u64) -> u32 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(address as *const u32) }
}

fn on_interrupt(intid: u32) {
    if intid == RTC_INTID {
        write(RTCICR, 1);
        ALARMS.store(ALARMS.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
    }
}

fn main() -> Result<(), u64> {
    gic::init(on_interrupt).map_err(|_| 1u64)?;
    if !gic::try_enable_spi(RTC_INTID) {
        println!("SPI {RTC_INTID} did not stay enabled");
        return Err(2);
    }
    gic::enable_irqs();
    write(RTCCR, 1);
    let now = read(RTCDR);
    write(RTCICR, 1);
    write(RTCMR, now + 1);
    write(RTCIMSC, 1);
    println!("RTC reads {now}; alarm set for {}", now + 1);
    let deadline = time::counter() + 4 * time::frequency();
    while ALARMS.load(Ordering::SeqCst) == 0 && time::counter() < deadline {
        gic::wait_for_interrupt();
    }
    write(RTCIMSC, 0);
    println!("RTC alarm interrupts: {}", ALARMS.load(Ordering::SeqCst));
    if ALARMS.load(Ordering::SeqCst) == 0 {
        return Err(3);
    }
    Ok(())
}

guest_main!(main);
