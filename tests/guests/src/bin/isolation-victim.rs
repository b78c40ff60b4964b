//! The attacked partition: writes a pattern, lets its neighbour attack for a
//! while, then checks that every word of the pattern is intact.

#![no_std]
#![no_main]

use bulkhead_test_guests::{guest_main, pattern, println, time};

/// The pattern covers 1 MiB at 8 MiB into its RAM, which
/// the configuration backs with host memory at a fixed address.
const PATTERN_BASE: u64 = 0x4000_0000 + pattern::RAM_OFFSET;
const PATTERN_WORDS: u64 = pattern::WORDS;
/// How long the neighbour gets to attack.
const ATTACK_WINDOW_MS: u64 = 1500;

fn main() -> Result<(), u64> {
    // SAFETY: the range is inside this partition's own RAM, used for nothing else.
    unsafe { pattern::write(PATTERN_BASE, PATTERN_WORDS) };
    println!("pattern written to {PATTERN_BASE:#x}..{:#x}; waiting {ATTACK_WINDOW_MS} ms", PATTERN_BASE + 8 * PATTERN_WORDS);
    time::delay_ms(ATTACK_WINDOW_MS);
    // SAFETY: as above.
    unsafe { pattern::check(PATTERN_BASE, PATTERN_WORDS) }
}

guest_main!(main);
