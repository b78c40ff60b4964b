//! The attacked x86_64 partition (it builds for arm64 too): writes a
//! pattern, lets its neighbour attack for a while (measured with the
//! time-stamp counter), then checks that every word is intact.

#![no_std]
#![no_main]

use bulkhead_test_guests::{guest_main, pattern, println, time};

/// 1 MiB of pattern at 8 MiB, inside this partition's 16 MiB of RAM.
const PATTERN_BASE: u64 = pattern::RAM_OFFSET;
const PATTERN_WORDS: u64 = pattern::WORDS;
/// How long the neighbour gets to attack, in time-stamp counter ticks.
const ATTACK_WINDOW_TICKS: u64 = 2_000_000_000;

fn main() -> Result<(), u64> {
    // SAFETY: the range is inside this partition's own RAM, used for nothing else.
    unsafe { pattern::write(PATTERN_BASE, PATTERN_WORDS) };
    println!("pattern written to {PATTERN_BASE:#x}..{:#x}; waiting {ATTACK_WINDOW_TICKS} TSC ticks", PATTERN_BASE + 8 * PATTERN_WORDS);
    time::wait_ticks(ATTACK_WINDOW_TICKS);
    // SAFETY: as above.
    unsafe { pattern::check(PATTERN_BASE, PATTERN_WORDS) }
}

guest_main!(main);
