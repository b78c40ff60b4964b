//! The virtual GIC and the virtual timer: programs the distributor and its
//! redistributor (emulated), takes virtual timer interrupts through the
//! hardware's virtual CPU interface, and sends itself an SGI.

#![no_std]
#![no_main]

use bulkhead_test_guests::{gic, guest_main, println, time};
use core::sync::atomic::{AtomicU32, Ordering};

const TIMER: u32 = 27;
const SGI: u32 = 3;
const TICKS_WANTED: u32 = 5;

static TICKS: AtomicU32 = AtomicU32::new(0);
static SGIS: AtomicU32 = AtomicU32::new(0);
/// Bit n set when SGI n arrived (the burst test).
static BURST: AtomicU32 = AtomicU32::new(0);
/// SGIs sent at once in the burst: more than the 4 list registers QEMU has,
/// so the hypervisor must refill them (maintenance interrupt on underflow).
const BURST_SGIS: [u32; 7] = [4, 5, 6, 7, 8, 9, 10];

fn on_interrupt(intid: u32) {
    match intid {
        TIMER => {
            let n = TICKS.load(Ordering::SeqCst) + 1;
            TICKS.store(n, Ordering::SeqCst);
            if n < TICKS_WANTED {
                gic::arm_virtual_timer(time::frequency() / 100);
            } else {
                gic::stop_virtual_timer();
            }
        }
        SGI => SGIS.store(SGIS.load(Ordering::SeqCst) + 1, Ordering::SeqCst),
        sgi if BURST_SGIS.contains(&sgi) => {
            BURST.store(BURST.load(Ordering::SeqCst) | (1 << sgi), Ordering::SeqCst);
        }
        _ => println!("unexpected interrupt {intid}"),
    }
}

fn main() -> Result<(), u64> {
    println!("GIC architecture revision {}, GICD_TYPER {:#x}", gic::architecture_revision(), gic::distributor_type());
    if gic::architecture_revision() != 3 {
        return Err(1);
    }
    gic::init(on_interrupt).map_err(|e| {
        println!("{e}");
        2u64
    })?;
    // SPI 40 belongs to no partition here: enabling it must not stick.
    if gic::try_enable_spi(40) {
        println!("SPI 40 (not ours) reads back enabled");
        return Err(6);
    }
    println!("SPI 40 (not ours) stays disabled");
    gic::enable_private(TIMER, 0x80);
    gic::enable_private(SGI, 0x80);
    if !gic::private_enabled(TIMER) {
        return Err(3);
    }
    gic::enable_irqs();
    gic::arm_virtual_timer(time::frequency() / 100);
    let deadline = time::counter() + 3 * time::frequency();
    while TICKS.load(Ordering::SeqCst) < TICKS_WANTED && time::counter() < deadline {
        gic::wait_for_interrupt();
    }
    println!("virtual timer interrupts: {}", TICKS.load(Ordering::SeqCst));
    gic::send_sgi(SGI as u8, 1);
    let deadline = time::counter() + time::frequency();
    while SGIS.load(Ordering::SeqCst) == 0 && time::counter() < deadline {
        core::hint::spin_loop();
    }
    println!("SGIs to self: {}", SGIS.load(Ordering::SeqCst));
    // A burst: raise every burst SGI with interrupts masked, then unmask.
    for sgi in BURST_SGIS {
        gic::enable_private(sgi, 0x90);
    }
    gic::disable_irqs();
    for sgi in BURST_SGIS {
        gic::send_sgi(sgi as u8, 1);
    }
    gic::enable_irqs();
    let all = BURST_SGIS.iter().fold(0, |acc, s| acc | (1 << s));
    let deadline = time::counter() + time::frequency();
    while BURST.load(Ordering::SeqCst) != all && time::counter() < deadline {
        core::hint::spin_loop();
    }
    println!("burst of {} SGIs delivered: {}", BURST_SGIS.len(), BURST.load(Ordering::SeqCst).count_ones());
    if TICKS.load(Ordering::SeqCst) != TICKS_WANTED {
        return Err(4);
    }
    if BURST.load(Ordering::SeqCst) != all {
        return Err(7);
    }
    if SGIS.load(Ordering::SeqCst) != 1 {
        return Err(5);
    }
    Ok(())
}

guest_main!(main);
