//! DMA isolation with QEMU's `edu` (both architectures): the partition owns
//! the edu (virtual device 0 of its PCI configuration space) and
//!
//! 1. DMAs within its own memory: a page of its RAM → the device buffer →
//!    another page; the data must be exact (QEMU's edu buffer is reachable
//!    by DMA only, so the round trip checks both directions);
//! 2. points the DMA engine at its neighbour's memory (the host address the
//!    neighbour's RAM is backed with) and at the hypervisor's memory, both
//!    ways: writes must leave the neighbour intact (the neighbour checks its
//!    pattern), reads must not bring the neighbour's pattern into the
//!    device buffer (copied back into its own RAM to look).
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
/// (near the top of RAM, where the loader places it; on arm64 its pool,
/// which the boot log lists as "the hypervisor's own ranges").
#[cfg(target_arch = "aarch64")]
const HYPERVISOR_HOST: u64 = 0x7b00_0000;
#[cfg(not(target_arch = "aarch64"))]
const HYPERVISOR_HOST: u64 = 0x3d00_0000;

/// Pages of this partition's own RAM the DMA engine reads and writes (in
/// `.bss`, so in a region with `dma = true` at I/O virtual address =
/// guest-physical address).
#[repr(C, align(4096))]
struct Page([u8; BUFFER_SIZE as usize]);
/// What the device is given to copy.
static mut SOURCE: Page = Page([0; BUFFER_SIZE as usize]);
/// Where the device's copies come back.
static mut TARGET: Page = Page([0; BUFFER_SIZE as usize]);

fn source() -> u64 {
    core::ptr::addr_of!(SOURCE) as u64
}

fn target() -> u64 {
    core::ptr::addr_of!(TARGET) as u64
}

/// Byte `i` of the page at `page` (one of the two above).
fn byte(page: u64, i: usize) -> u8 {
    // SAFETY: a volatile read of this partition's own static, written by DMA.
    unsafe { core::ptr::read_volatile((page as *const u8).add(i)) }
}

fn set_bytes(page: u64, bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        // SAFETY: a volatile write of this partition's own static, read by DMA.
        unsafe { core::ptr::write_volatile((page as *mut u8).add(i), b) };
    }
}

/// Buffer offsets used: the round trip, garbage for the attacks, and the
/// landing place of the attempted read.
const ROUND_TRIP: u64 = 0x800;
const GARBAGE: u64 = 0;
const LANDING: u64 = 0x400;
/// Bytes per transfer.
const LEN: usize = 64;

fn main() -> Result<(), u64> {
    let edu = Edu::find(0).map_err(|e| {
        println!("no edu: {e:?}");
        1u64
    })?;
    println!("edu at BAR {:#x}, identification {:#010x}", edu.bar(), edu.ident());

    // 1. Within its own memory: RAM -> device buffer -> other RAM; the
    //    data coming back proves both directions.
    let message: [u8; LEN] = core::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(3));
    set_bytes(source(), &message);
    edu.dma_from_ram(source(), ROUND_TRIP, LEN as u64).map_err(|_| 2u64)?;
    edu.dma_to_ram(ROUND_TRIP, target(), LEN as u64).map_err(|_| 2u64)?;
    if (0..LEN).any(|i| byte(target(), i) != message[i]) {
        println!("DMA round trip through its own RAM at {:#x}: WRONG data", target());
        return Err(3);
    }
    println!("DMA from its own RAM into the device buffer: correct");
    println!("DMA into its own RAM at {:#x}: {LEN} bytes correct", target());

    // 2. Attacks: foreign memory, both directions.
    let victim = VICTIM_HOST + VICTIM_PATTERN_OFFSET;
    set_bytes(source(), &[0xbd; LEN]);
    edu.dma_from_ram(source(), GARBAGE, LEN as u64).map_err(|_| 4u64)?;
    println!("attack: DMA into the neighbour's memory at {victim:#x}");
    let _ = edu.dma_to_ram(GARBAGE, victim, LEN as u64);
    println!("attack: DMA into the hypervisor's memory at {HYPERVISOR_HOST:#x}");
    let _ = edu.dma_to_ram(GARBAGE, HYPERVISOR_HOST, LEN as u64);
    // Reading the neighbour's pattern into the device buffer, then back
    // into own RAM to look at it: the pattern must not be there.
    set_bytes(source(), &[0; LEN]);
    edu.dma_from_ram(source(), LANDING, LEN as u64).map_err(|_| 4u64)?;
    println!("attack: DMA from the neighbour's memory at {victim:#x}");
    let _ = edu.dma_from_ram(victim, LANDING, LEN as u64);
    set_bytes(target(), &[0xff; LEN]);
    edu.dma_to_ram(LANDING, target(), LEN as u64).map_err(|_| 5u64)?;
    let leaked = (0..LEN / 8).any(|w| {
        let word = u64::from_le_bytes(core::array::from_fn(|i| byte(target(), 8 * w + i)));
        word == pattern::word(w as u64)
    });
    if leaked {
        println!("the neighbour's pattern reached the device: isolation is broken");
        return Err(6);
    }
    println!("every foreign DMA was kept out");
    Ok(())
}

guest_main!(main);
