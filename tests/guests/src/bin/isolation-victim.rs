//! The attacked partition: writes a pattern, lets its neighbour attack for a
//! while, then checks that every word of the pattern is intact.

#![no_std]
#![no_main]

use bulkhead_test_guests::{guest_main, println, time};

/// The pattern covers 1 MiB at the start of this second half of RAM, which
/// the configuration backs with host memory at a fixed address.
const PATTERN_BASE: u64 = 0x4080_0000;
const PATTERN_WORDS: u64 = (1 << 20) / 8;
/// How long the neighbour gets to attack.
const ATTACK_WINDOW_MS: u64 = 1500;

fn word(i: u64) -> u64 {
    0xb01d_face_0000_0000 ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn main() -> Result<(), u64> {
    for i in 0..PATTERN_WORDS {
        // SAFETY: the range is inside this partition's own RAM.
        unsafe { core::ptr::write_volatile((PATTERN_BASE + 8 * i) as *mut u64, word(i)) };
    }
    println!("pattern written to {PATTERN_BASE:#x}..{:#x}; waiting {ATTACK_WINDOW_MS} ms", PATTERN_BASE + 8 * PATTERN_WORDS);
    time::delay_ms(ATTACK_WINDOW_MS);
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
