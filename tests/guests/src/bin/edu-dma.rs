//! DMA isolation with QEMU's `edu` (both architectures): the partition owns
//! the edu (virtual device 0 of its PCI configuration space) and
//!
//! 1. DMAs within its own memory: a page of its RAM → the device's buffer →
//!    another page of its RAM (the buffer is reachable only by DMA); the
//!    data must be exact;
//! 2. points the DMA engine at its neighbour's memory (the host address the
//!    neighbour's RAM is backed with) and at the hypervisor's memory, both
//!    ways: writes must leave the neighbour intact (the neighbour checks its
//!    pattern), reads must not bring the neighbour's pattern into the
//!    device buffer.
//!
//! The IOMMU blocks the foreign transfers and the hypervisor reports the
//! faults; what happens to this partition then is its fault policy's
//! business, so after the attacks it only reports what it saw.

#![no_std]
#![no_main]

use bulkhead_test_guests::edu::{BUFFER_SIZE, Edu};
use bulkhead_test_guests::{guest_main, pattern, println};

/// Host address of the neighbour's RAM (its configuration's `backing`).
#[cfg(target_arch = "aarch64")]
const VICTIM_HOST: u64 = 0x5000_0000;
#[cfg(not(target_arch = "aarch64"))]
const VICTIM_HOST: u64 = 0x3000_0000;
/// Where the neighbour writes its pattern, relative to its RAM.
const VICTIM_PATTERN_OFFSET: u64 = 0x80_0000;
/// An address inside the hypervisor's own memory on the test machines
/// (near the top of RAM, where the loader places it).
#[cfg(target_arch = "aarch64")]
const HYPERVISOR_HOST: u64 = 0x7f00_0000;
#[cfg(not(target_arch = "aarch64"))]
const HYPERVISOR_HOST: u64 = 0x3d00_0000;

/// DMA source and targets in this partition's own RAM (in `.bss`, so in a
/// region with `dma = true` at I/O virtual address = guest-physical
/// address). The edu's buffer is reachable only by DMA, so data goes in
/// from `SOURCE` and comes back out into `TARGET`.
#[repr(C, align(4096))]
struct Page([u8; BUFFER_SIZE as usize]);
static mut SOURCE: Page = Page([0; BUFFER_SIZE as usize]);
static mut TARGET: Page = Page([0; BUFFER_SIZE as usize]);

/// Bytes moved by each transfer.
const LENGTH: usize = 64;
/// Buffer offsets: the message, the garbage the attacks write out, and
/// what the read attack brings in.
const MESSAGE_AT: u64 = 0;
const GARBAGE_AT: u64 = 0x400;
const LOOT_AT: u64 = 0x800;

fn source() -> u64 {
    core::ptr::addr_of!(SOURCE) as u64
}

fn target() -> u64 {
    core::ptr::addr_of!(TARGET) as u64
}

fn set_source(bytes: &[u8]) {
    for (i, &byte) in bytes.iter().enumerate() {
        // SAFETY: a volatile write to this partition's own static, which
        // the device reads by DMA.
        unsafe { core::ptr::write_volatile((source() as *mut u8).add(i), byte) };
    }
}

fn target_byte(i: usize) -> u8 {
    // SAFETY: a volatile read of this partition's own static, written by DMA.
    unsafe { core::ptr::read_volatile((target() as *const u8).add(i)) }
}

fn clear_target() {
    for i in 0..LENGTH {
        // SAFETY: as in `set_source`.
        unsafe { core::ptr::write_volatile((target() as *mut u8).add(i), 0) };
    }
}

fn main() -> Result<(), u64> {
    let edu = Edu::find(0).map_err(|e| {
        println!("no edu: {e:?}");
        1u64
    })?;
    println!("edu at BAR {:#x}, identification {:#010x}", edu.bar(), edu.ident());
    let length = LENGTH as u64;

    // 1. Within its own memory: RAM -> device buffer -> RAM.
    let message: [u8; LENGTH] = core::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(3));
    set_source(&message);
    edu.dma_from_ram(source(), MESSAGE_AT, length).map_err(|_| 2u64)?;
    println!("DMA from its own RAM at {:#x} into the device buffer: done", source());
    edu.dma_to_ram(MESSAGE_AT, target(), length).map_err(|_| 3u64)?;
    if (0..LENGTH).any(|i| target_byte(i) != message[i]) {
        println!("DMA back into its own RAM at {:#x}: WRONG data", target());
        return Err(4);
    }
    println!("DMA back into its own RAM at {:#x}: {LENGTH} bytes correct", target());

    // 2. Attacks: foreign memory, both directions.
    set_source(&[0xbd; LENGTH]);
    edu.dma_from_ram(source(), GARBAGE_AT, length).map_err(|_| 5u64)?;
    let victim = VICTIM_HOST + VICTIM_PATTERN_OFFSET;
    println!("attack: DMA into the neighbour's memory at {victim:#x}");
    let _ = edu.dma_to_ram(GARBAGE_AT, victim, length);
    println!("attack: DMA into the hypervisor's memory at {HYPERVISOR_HOST:#x}");
    let _ = edu.dma_to_ram(GARBAGE_AT, HYPERVISOR_HOST, length);
    // Reading the neighbour's pattern into the device buffer: what comes
    // back out of the buffer must be what was there (zeros).
    set_source(&[0; LENGTH]);
    edu.dma_from_ram(source(), LOOT_AT, length).map_err(|_| 6u64)?;
    println!("attack: DMA from the neighbour's memory at {victim:#x}");
    let _ = edu.dma_from_ram(victim, LOOT_AT, length);
    clear_target();
    edu.dma_to_ram(LOOT_AT, target(), length).map_err(|_| 7u64)?;
    let leaked = (0..LENGTH / 8).any(|w| {
        let word = u64::from_le_bytes(core::array::from_fn(|b| target_byte(8 * w + b)));
        word != 0 && word == pattern::word(w as u64)
    });
    if leaked {
        println!("the neighbour's pattern reached the device: isolation is broken");
        return Err(8);
    }
    println!("every foreign DMA was kept out");
    Ok(())
}

guest_main!(main);
