//! DMA isolation with QEMU's `edu` (both architectures): the partition owns
//! the edu (virtual device 0 of its PCI configuration space) and
//!
//! 1. DMAs within its own memory: device buffer → a page of its RAM, and
//!    back into another part of the buffer; the data must be exact;
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

/// DMA target in this partition's own RAM (in `.bss`, so in a region
/// with `dma = true` at I/O virtual address = guest-physical address).
#[repr(C, align(4096))]
struct Page([u8; BUFFER_SIZE as usize]);
static mut TARGET: Page = Page([0; BUFFER_SIZE as usize]);

fn target() -> u64 {
    core::ptr::addr_of!(TARGET) as u64
}

fn target_byte(i: usize) -> u8 {
    // SAFETY: a volatile read of this partition's own static, written by DMA.
    unsafe { core::ptr::read_volatile((target() as *const u8).add(i)) }
}

fn main() -> Result<(), u64> {
    let edu = Edu::find(0).map_err(|e| {
        println!("no edu: {e:?}");
        1u64
    })?;
    println!("edu at BAR {:#x}, identification {:#010x}", edu.bar(), edu.ident());

    // 1. Within its own memory.
    let message: [u8; 64] = core::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(3));
    edu.fill_buffer(0, &message);
    edu.dma_to_ram(0, target(), message.len() as u64).map_err(|_| 2u64)?;
    if (0..message.len()).any(|i| target_byte(i) != message[i]) {
        println!("DMA into its own RAM at {:#x}: WRONG data", target());
        return Err(3);
    }
    println!("DMA into its own RAM at {:#x}: {} bytes correct", target(), message.len());
    edu.dma_from_ram(target(), 0x800, message.len() as u64).map_err(|_| 4u64)?;
    let back_ok = (0..message.len() / 4).all(|w| {
        let expected = u32::from_le_bytes(message[4 * w..4 * w + 4].try_into().unwrap_or_default());
        edu.buffer_word(0x800 + 4 * w as u64) == expected
    });
    if !back_ok {
        println!("DMA from its own RAM into the device: WRONG data");
        return Err(5);
    }
    println!("DMA from its own RAM into the device buffer: correct");

    // 2. Attacks: foreign memory, both directions.
    let victim = VICTIM_HOST + VICTIM_PATTERN_OFFSET;
    let garbage = [0xbd_u8; 64];
    edu.fill_buffer(0, &garbage);
    println!("attack: DMA into the neighbour's memory at {victim:#x}");
    let _ = edu.dma_to_ram(0, victim, garbage.len() as u64);
    println!("attack: DMA into the hypervisor's memory at {HYPERVISOR_HOST:#x}");
    let _ = edu.dma_to_ram(0, HYPERVISOR_HOST, garbage.len() as u64);
    // Reading the neighbour's pattern into the device buffer: the buffer
    // must keep what was there.
    edu.fill_buffer(0x400, &[0u8; 64]);
    println!("attack: DMA from the neighbour's memory at {victim:#x}");
    let _ = edu.dma_from_ram(victim, 0x400, 64);
    let leaked = (0..8).any(|w| {
        let word = edu.buffer_word(0x400 + 4 * w);
        word != 0 && word == (pattern::word(w / 2) >> (32 * (w % 2))) as u32
    });
    if leaked {
        println!("the neighbour's pattern reached the device: isolation is broken");
        return Err(6);
    }
    println!("every foreign DMA was kept out");
    Ok(())
}

guest_main!(main);
