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
//! On arm64 it also takes the edu's legacy interrupt (INTx), which the
//! hypervisor passes through as a level SPI forwarded to the virtual GIC:
//! raised by hand twice (each acknowledged at the device before the EOI, so
//! the second proves the line was deasserted and can assert again), then
//! once at the end of each DMA of the round trip. On x86_64 the same
//! interrupts arrive through the partition's virtual I/O APIC (pin = the
//! host GSI) as a virtual interrupt, ended by a write to the virtual local
//! APIC's EOI register; there the program waits for them with HLT.
//!
//! The IOMMU blocks the foreign transfers and the hypervisor reports the
//! faults; what happens to this partition then is its fault policy's
//! business, so after the attacks it only reports what it saw.

#![no_std]
#![no_main]

use bulkhead_test_guests::edu::{BUFFER_SIZE, Edu};
use bulkhead_test_guests::targets::{HYPERVISOR_HOST, VICTIM_PATTERN};
use bulkhead_test_guests::{guest_main, pattern, println};

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

/// The edu's INTx, taken through the shared plumbing of
/// [`bulkhead_test_guests::intx`]: on arm64 as an SPI of the partition's
/// virtual GIC, on x86_64 through its virtual I/O APIC.
mod intx {
    use bulkhead_test_guests::edu::{DMA_DONE, Edu, Interrupts};
    use bulkhead_test_guests::intx::{self as shared, IntxError};
    use bulkhead_test_guests::println;
    use core::sync::atomic::{AtomicU64, Ordering};

    /// The INTID the edu's INTx arrives as on arm64. The interrupt line
    /// byte of the virtual configuration space is guest scratch (as on
    /// hardware, where firmware fills it), so the number is the test's
    /// knowledge: QEMU `virt`'s host bridge maps INTA of device 1, where
    /// the edu sits, to SPI 4 = INTID 36 (its `interrupt-map`, swizzle
    /// included). The hypervisor logs the number it passes through ("INTx
    /// of its PCI function(s) is interrupt 36"), and the scenario expects
    /// both.
    #[cfg(target_arch = "aarch64")]
    pub const LINE: u32 = 36;
    /// The virtual I/O APIC pin the edu's INTx arrives at on x86_64: the
    /// host GSI. QEMU `q35`'s ICH9 routes INTA of device 1, where the edu
    /// sits, to PIRQ F = GSI 21 (the ACPI `_PRT` says so to an OS that
    /// reads AML; this test's knowledge). The hypervisor logs the pin it
    /// wires ("INTA is GSI 21"), and the scenario expects both.
    #[cfg(not(target_arch = "aarch64"))]
    pub const LINE: u32 = 21;
    /// The status bit raised by hand: one the edu never sets itself (it
    /// uses 0x1 for the factorial and [`DMA_DONE`] for transfers).
    const MANUAL: u32 = 1 << 16;
    /// Hand-raised interrupts: the second one can only arrive if the
    /// acknowledge deasserted the level-sensitive line in between.
    const RAISES: u32 = 2;
    /// Failure codes.
    const FAIL_SETUP: u64 = 7;
    const FAIL_LOST: u64 = 8;
    const FAIL_STATUS: u64 = 9;
    const FAIL_REPEATED: u64 = 10;

    /// The edu's BAR, for the handler (it cannot borrow `main`'s `Edu`).
    static BAR: AtomicU64 = AtomicU64::new(0);

    /// Reads and acknowledges the edu's interrupt status.
    fn acknowledge() -> u32 {
        let edu = Interrupts::at(BAR.load(Ordering::SeqCst));
        let status = edu.status();
        edu.acknowledge(status);
        status
    }

    /// How the interrupt arrives, as the lines print it.
    fn arrival() -> &'static str {
        if cfg!(target_arch = "aarch64") { "interrupt 36" } else { "vector 0x41" }
    }

    /// The interrupts expected so far.
    pub struct Intx {
        shared: shared::Intx,
    }

    impl Intx {
        /// Enables the edu's line and INTx at the device.
        pub fn start(edu: &Edu) -> Result<Intx, u64> {
            BAR.store(edu.bar(), Ordering::SeqCst);
            let shared = shared::Intx::start(LINE, true, acknowledge).map_err(|_| FAIL_SETUP)?;
            edu.enable_intx();
            Ok(Intx { shared })
        }

        /// Waits for the next interrupt, checks it carried `bits` and that
        /// no further one follows; returns the status it carried.
        fn next(&mut self, what: &str, bits: u32) -> Result<u32, u64> {
            let status = self.shared.next_alone().map_err(|e| match e {
                IntxError::Repeated(more) => {
                    println!("INTx from the edu taken {more} more time(s) after {what} was acknowledged");
                    FAIL_REPEATED
                }
                _ => {
                    println!("INTx from the edu did not arrive in time after {what}");
                    FAIL_LOST
                }
            })?;
            if status != bits {
                println!("INTx from the edu after {what} carried status {status:#x}, not {bits:#x}");
                return Err(FAIL_STATUS);
            }
            Ok(status)
        }

        /// Raises the interrupt by hand [`RAISES`] times, each taken,
        /// acknowledged and ended before the next.
        pub fn raise(&mut self, edu: &Edu) -> Result<(), u64> {
            for round in 1..=RAISES {
                edu.interrupts().raise(MANUAL);
                let status = self.next("a raise", MANUAL)?;
                println!(
                    "INTx from the edu arrived as {}: raise {round} of {RAISES} (status {status:#x}), acknowledged",
                    arrival()
                );
            }
            Ok(())
        }

        /// The interrupt of a transfer started with completion interrupts on.
        pub fn dma_done(&mut self, what: &str) -> Result<(), u64> {
            let status = self.next(what, DMA_DONE)?;
            println!("INTx from the edu arrived as {}: {what} done (status {status:#x}), acknowledged", arrival());
            Ok(())
        }

        /// Masks interrupts again; reports an interrupt that was not the edu's.
        pub fn finish(self) -> Result<(), u64> {
            self.shared.finish().map_err(|e| {
                if let IntxError::Stray(intid) = e {
                    println!("unexpected interrupt {intid}");
                }
                FAIL_STATUS
            })
        }
    }
}

fn main() -> Result<(), u64> {
    let edu = Edu::find(0).map_err(|e| {
        println!("no edu: {e:?}");
        1u64
    })?;
    println!("edu at BAR {:#x}, identification {:#010x}", edu.bar(), edu.ident());
    #[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
    let mut intx = {
        let mut intx = intx::Intx::start(&edu)?;
        intx.raise(&edu)?;
        edu.set_completion_interrupts(true);
        intx
    };

    // 1. Within its own memory: RAM -> device buffer -> other RAM; the
    //    data coming back proves both directions.
    let message: [u8; LEN] = core::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(3));
    set_bytes(source(), &message);
    edu.dma_from_ram(source(), ROUND_TRIP, LEN as u64).map_err(|_| 2u64)?;
    #[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
    intx.dma_done("the DMA into the device buffer")?;
    edu.dma_to_ram(ROUND_TRIP, target(), LEN as u64).map_err(|_| 2u64)?;
    #[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
    {
        intx.dma_done("the DMA into its own RAM")?;
        // The attacks below end without interrupts: what they trigger is
        // the hypervisor's to report.
        edu.set_completion_interrupts(false);
        intx.finish()?;
    }
    if (0..LEN).any(|i| byte(target(), i) != message[i]) {
        println!("DMA round trip through its own RAM at {:#x}: WRONG data", target());
        return Err(3);
    }
    println!("DMA from its own RAM into the device buffer: correct");
    println!("DMA into its own RAM at {:#x}: {LEN} bytes correct", target());

    // 2. Attacks: foreign memory, both directions.
    let victim = VICTIM_PATTERN;
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
