//! The memory pattern the isolation tests' victims write before an attack
//! and check after it; the words are [`bulkhead_abi::testdata::pattern`]'s,
//! which the harness also reads back from guest RAM after the run.

use crate::println;

pub use bulkhead_abi::testdata::pattern::{RAM_OFFSET, WORDS, word};

/// Writes `words` pattern words from guest address `base`.
///
/// # Safety
/// `[base, base + 8 * words)` must be memory of this partition that nothing
/// else of the program uses.
pub unsafe fn write(base: u64, words: u64) {
    for i in 0..words {
        // SAFETY: the caller vouches for the range.
        unsafe { core::ptr::write_volatile((base + 8 * i) as *mut u64, word(i)) };
    }
}

/// Checks the pattern [`write`] left; prints the first changed words and
/// fails with code 3 if any changed.
///
/// # Safety
/// As for [`write`].
pub unsafe fn check(base: u64, words: u64) -> Result<(), u64> {
    let mut bad = 0u64;
    for i in 0..words {
        // SAFETY: the caller vouches for the range.
        let value = unsafe { core::ptr::read_volatile((base + 8 * i) as *const u64) };
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
