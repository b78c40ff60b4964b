//! A bare-metal partition that keeps working for a while: it takes virtual
//! timer interrupts and prints a heartbeat every second for 30 seconds.
//! Beside a Linux partition it shows that Linux stopping (or resetting)
//! leaves it running.

#![no_std]
#![no_main]

use bulkhead_test_guests::{gic, guest_main, println, time};
use core::sync::atomic::{AtomicU32, Ordering};

const TIMER: u32 = 27;
const SECONDS: u32 = 30;

static TICKS: AtomicU32 = AtomicU32::new(0);

fn on_interrupt(intid: u32) {
    if intid == TIMER {
        let n = TICKS.load(Ordering::SeqCst) + 1;
        TICKS.store(n, Ordering::SeqCst);
        if n < SECONDS {
            gic::arm_virtual_timer(time::frequency());
        } else {
            gic::stop_virtual_timer();
        }
    }
}

fn main() -> Result<(), u64> {
    gic::init(on_interrupt).map_err(|_| 1u64)?;
    gic::enable_private(TIMER, 0x80);
    gic::enable_irqs();
    gic::arm_virtual_timer(time::frequency());
    let mut seen = 0;
    let deadline = time::counter() + u64::from(SECONDS + 10) * time::frequency();
    while seen < SECONDS && time::counter() < deadline {
        gic::wait_for_interrupt();
        let now = TICKS.load(Ordering::SeqCst);
        if now != seen {
            seen = now;
            println!("heartbeat {seen}");
        }
    }
    if seen < SECONDS {
        return Err(2);
    }
    Ok(())
}

guest_main!(main);
