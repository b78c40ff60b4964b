//! The attacked x86_64 partition (it builds for arm64 too): writes a
//! pattern, lets its neighbour attack for a while (measured with the
//! time-stamp counter), then checks that every word is intact.

#![no_std]
#![no_main]

use bulkhead_test_guests::{guest_main, println};

/// 1 MiB of pattern at 8 MiB, inside this partition's 16 MiB of RAM.
const PATTERN_BASE: u64 = 0x80_0000;
const PATTERN_WORDS: u64 = (1 << 20) / 8;
/// How long the neighbour gets to attack, in time-stamp counter ticks.
const ATTACK_WINDOW_TICKS: u64 = 2_000_000_000;

fn word(i: u64) -> u64 {
    0xb01d_face_0000_0000 ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: RDTSC only reads the counter.
    return unsafe { core::arch::x86_64::_rdtsc() };
    #[cfg(not(target_arch = "x86_64"))]
    return 0;
}

fn main() -> Result<(), u64> {
    for i in 0..PATTERN_WORDS {
        // SAFETY: the range is inside this partition's own RAM.
        unsafe { core::ptr::write_volatile((PATTERN_BASE + 8 * i) as *mut u64, word(i)) };
    }
    println!("pattern written to {PATTERN_BASE:#x}..{:#x}; waiting {ATTACK_WINDOW_TICKS} TSC ticks", PATTERN_BASE + 8 * PATTERN_WORDS);
    let start = ticks();
    while ticks().wrapping_sub(start) < ATTACK_WINDOW_TICKS {
        core::hint::spin_loop();
    }
    let mut bad = 0u64;
    for i in 0..PATTERN_WORDS {
        // SAFETY: as above.
        let value = unsafe { core::ptr::read_volatile((PATTERN_BASE + 8 * i) as *const u64) };
        if value != word(i) {
            if bad < 4 {
                println!("word {i} changed: {value:#x}, expected {:#x}", word(i));
            }
            bad += 1;
        }
    }
    if bad != 0 {
        println!("pattern damaged: {bad} words changed");
        return Err(3);
    }
    println!("pattern intact after the attack window");
    Ok(())
}

guest_main!(main);
