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

/// The edu's INTx taken through the partition's virtual GIC.
#[cfg(target_arch = "aarch64")]
mod intx {
    use bulkhead_test_guests::edu::{DMA_DONE, Edu, Interrupts};
    use bulkhead_test_guests::{gic, println, time};
    use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    /// The INTID the edu's INTx arrives as. The interrupt line byte of the
    /// virtual configuration space is guest scratch (as on hardware, where
    /// firmware fills it), so the number is the test's knowledge: QEMU
    /// `virt`'s host bridge maps INTA of device 1, where the edu sits, to
    /// SPI 4 = INTID 36 (its `interrupt-map`, swizzle included). The
    /// hypervisor logs the number it passes through ("INTx of its PCI
    /// function(s) is interrupt 36"), and the scenario expects both.
    pub const INTID: u32 = 36;
    /// Priority given to it (any value above the priority mask 0xff).
    const PRIORITY: u8 = 0x80;
    /// The status bit raised by hand: one the edu never sets itself (it
    /// uses 0x1 for the factorial and [`DMA_DONE`] for transfers).
    const MANUAL: u32 = 1 << 16;
    /// Hand-raised interrupts: the second one can only arrive if the
    /// acknowledge deasserted the level-sensitive line in between.
    const RAISES: u32 = 2;
    /// Seconds to wait for an interrupt before calling it lost (the DMA
    /// completion comes ~100 ms of virtual time after the start).
    const WAIT_SECONDS: u64 = 2;
    /// Milliseconds without a further interrupt after one was taken: a
    /// line left asserted would be taken again at once after the EOI.
    const QUIET_MS: u64 = 20;
    /// Interrupts the handler takes at most before it disables the SPI:
    /// far more than the test raises, so only a line that will not go
    /// down (an interrupt storm) reaches it, and `main` gets to report it
    /// instead of the guest spinning in its handler.
    const STORM: u32 = 64;
    /// Failure codes.
    const FAIL_SETUP: u64 = 7;
    const FAIL_LOST: u64 = 8;
    const FAIL_STATUS: u64 = 9;
    const FAIL_REPEATED: u64 = 10;

    /// The edu's BAR, for the handler (it cannot borrow `main`'s `Edu`).
    static BAR: AtomicU64 = AtomicU64::new(0);
    /// Interrupts taken from the edu. Plain loads and stores, no
    /// read-modify-write atomics: with the MMU off, memory is Device memory,
    /// where exclusives are not guaranteed to work; only the handler
    /// writes while interrupts are unmasked.
    static ARRIVED: AtomicU32 = AtomicU32::new(0);
    /// The status bits the handler found and acknowledged since the last
    /// [`Intx::next`].
    static SEEN: AtomicU32 = AtomicU32::new(0);
    /// The last INTID that was not the edu's (0: none).
    static STRAY: AtomicU32 = AtomicU32::new(0);

    fn on_interrupt(intid: u32) {
        if intid != INTID {
            STRAY.store(intid, Ordering::SeqCst);
            return;
        }
        let edu = Interrupts::at(BAR.load(Ordering::SeqCst));
        let status = edu.status();
        // Acknowledged at the device before the EOI that follows this
        // handler: the line is level-sensitive and forwarded with the
        // hardware bit, so the EOI deactivates the physical SPI too and a
        // line still high would be taken again at once.
        edu.acknowledge(status);
        SEEN.store(SEEN.load(Ordering::SeqCst) | status, Ordering::SeqCst);
        let arrived = ARRIVED.load(Ordering::SeqCst) + 1;
        ARRIVED.store(arrived, Ordering::SeqCst);
        if arrived >= STORM {
            gic::disable_spi(INTID);
        }
    }

    /// The interrupts expected so far.
    pub struct Intx {
        expected: u32,
    }

    impl Intx {
        /// Enables the edu's SPI at the virtual GIC and INTx at the device,
        /// and unmasks IRQs.
        pub fn start(edu: &Edu) -> Result<Intx, u64> {
            BAR.store(edu.bar(), Ordering::SeqCst);
            gic::init(on_interrupt).map_err(|e| {
                println!("GIC: {e}");
                FAIL_SETUP
            })?;
            gic::set_spi_priority(INTID, PRIORITY);
            if !gic::try_enable_spi(INTID) {
                println!("interrupt {INTID} (the edu's INTx) did not stay enabled: not this partition's");
                return Err(FAIL_SETUP);
            }
            edu.enable_intx();
            gic::enable_irqs();
            Ok(Intx { expected: 0 })
        }

        /// Waits for the next interrupt, checks it carried `bits` and that
        /// no further one follows; returns the status it carried.
        fn next(&mut self, what: &str, bits: u32) -> Result<u32, u64> {
            self.expected += 1;
            let deadline = time::counter() + WAIT_SECONDS * time::frequency();
            while ARRIVED.load(Ordering::SeqCst) < self.expected {
                if time::counter() > deadline {
                    println!("INTx from the edu did not arrive within {WAIT_SECONDS} s after {what}");
                    return Err(FAIL_LOST);
                }
                core::hint::spin_loop();
            }
            time::delay_ms(QUIET_MS);
            let arrived = ARRIVED.load(Ordering::SeqCst);
            if arrived != self.expected {
                println!("INTx from the edu taken {} more time(s) after {what} was acknowledged", arrived - self.expected);
                return Err(FAIL_REPEATED);
            }
            gic::disable_irqs();
            let status = SEEN.load(Ordering::SeqCst);
            SEEN.store(0, Ordering::SeqCst);
            gic::enable_irqs();
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
                    "INTx from the edu arrived as interrupt {INTID}: raise {round} of {RAISES} (status {status:#x}), acknowledged"
                );
            }
            Ok(())
        }

        /// The interrupt of a transfer started with completion interrupts on.
        pub fn dma_done(&mut self, what: &str) -> Result<(), u64> {
            let status = self.next(what, DMA_DONE)?;
            println!("INTx from the edu arrived as interrupt {INTID}: {what} done (status {status:#x}), acknowledged");
            Ok(())
        }

        /// Masks IRQs again; reports an interrupt that was not the edu's.
        pub fn finish(self) -> Result<(), u64> {
            gic::disable_irqs();
            match STRAY.load(Ordering::SeqCst) {
                0 => Ok(()),
                other => {
                    println!("unexpected interrupt {other}");
                    Err(FAIL_STATUS)
                }
            }
        }
    }
}

/// The edu's INTx taken through the partition's virtual I/O APIC.
#[cfg(target_arch = "x86_64")]
mod intx {
    use bulkhead_test_guests::edu::{DMA_DONE, Edu, Interrupts};
    use bulkhead_test_guests::{println, time, x86_trap};
    use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    /// The virtual I/O APIC pin the edu's INTx arrives at: the host GSI.
    /// QEMU `q35`'s ICH9 routes INTA of device 1, where the edu sits, to
    /// PIRQ F = GSI 21 (the ACPI `_PRT` says so to an OS that reads AML;
    /// this test's knowledge). The hypervisor logs the pin it wires
    /// ("INTA is GSI 21"), and the scenario expects both.
    pub const PIN: u32 = 21;
    /// The vector the guest gives it (any of 32-255).
    pub const VECTOR: u8 = 0x41;
    /// The virtual I/O APIC: IOREGSEL and IOWIN.
    const IOREGSEL: u64 = 0xfec0_0000;
    const IOWIN: u64 = 0xfec0_0010;
    /// I/O APIC registers: version, redirection entry `PIN` (low dword).
    const IOAPIC_VERSION: u32 = 0x01;
    const REDIRECTION_LOW: u32 = 0x10 + 2 * PIN;
    /// Redirection entry bits: active low, remote IRR, level, masked.
    const POLARITY_LOW: u32 = 1 << 13;
    const REMOTE_IRR: u32 = 1 << 14;
    const LEVEL: u32 = 1 << 15;
    const MASKED: u32 = 1 << 16;
    /// The local APIC's EOI register.
    const LAPIC_EOI: u64 = 0xfee0_00b0;
    /// The status bit raised by hand: one the edu never sets itself.
    const MANUAL: u32 = 1 << 16;
    /// Hand-raised interrupts: the second one can only arrive if the
    /// acknowledge deasserted the level-sensitive line in between.
    const RAISES: u32 = 2;
    /// Time-stamp counter ticks to wait for an interrupt: 4 s at 1 GHz
    /// (x86 has no architectural way to ask the TSC's rate; QEMU's runs at
    /// the host's, 1-5 GHz).
    const WAIT_TICKS: u64 = 4_000_000_000;
    /// Ticks without a further interrupt after one was taken: at least
    /// 20 ms on any TSC up to 5 GHz.
    const QUIET_TICKS: u64 = 100_000_000;
    /// Interrupts the handler takes at most before it masks the pin (an
    /// interrupt storm: the line will not go down).
    const STORM: u32 = 64;
    /// Failure codes (as on arm64).
    const FAIL_SETUP: u64 = 7;
    const FAIL_LOST: u64 = 8;
    const FAIL_STATUS: u64 = 9;
    const FAIL_REPEATED: u64 = 10;

    static BAR: AtomicU64 = AtomicU64::new(0);
    static ARRIVED: AtomicU32 = AtomicU32::new(0);
    static SEEN: AtomicU32 = AtomicU32::new(0);

    fn write32(address: u64, value: u32) {
        // SAFETY: a volatile store to the partition's emulated APIC windows.
        unsafe { core::ptr::write_volatile(address as *mut u32, value) };
    }

    fn read32(address: u64) -> u32 {
        // SAFETY: a volatile load from the partition's emulated APIC windows.
        unsafe { core::ptr::read_volatile(address as *const u32) }
    }

    fn ioapic_read(register: u32) -> u32 {
        write32(IOREGSEL, register);
        read32(IOWIN)
    }

    fn ioapic_write(register: u32, value: u32) {
        write32(IOREGSEL, register);
        write32(IOWIN, value);
    }

    /// The device vector's handler: acknowledges at the device first (the
    /// line is level-triggered: still high at the EOI, it would be taken
    /// again at once), then ends the interrupt at the local APIC.
    fn on_interrupt() {
        let edu = Interrupts::at(BAR.load(Ordering::SeqCst));
        let status = edu.status();
        edu.acknowledge(status);
        SEEN.store(SEEN.load(Ordering::SeqCst) | status, Ordering::SeqCst);
        let arrived = ARRIVED.load(Ordering::SeqCst) + 1;
        ARRIVED.store(arrived, Ordering::SeqCst);
        if arrived >= STORM {
            ioapic_write(REDIRECTION_LOW, u32::from(VECTOR) | LEVEL | POLARITY_LOW | MASKED);
        }
        write32(LAPIC_EOI, 0);
    }

    /// The interrupts expected so far.
    pub struct Intx {
        expected: u32,
    }

    impl Intx {
        /// Installs the IDT and the handler, programs and unmasks the pin,
        /// enables INTx at the device and interrupts at the CPU.
        pub fn start(edu: &Edu) -> Result<Intx, u64> {
            BAR.store(edu.bar(), Ordering::SeqCst);
            x86_trap::install();
            x86_trap::set_interrupt_handler(VECTOR, on_interrupt);
            let version = ioapic_read(IOAPIC_VERSION);
            let pins = ((version >> 16) & 0xff) + 1;
            if pins <= PIN {
                println!("virtual I/O APIC version register {version:#x}: no pin {PIN}");
                return Err(FAIL_SETUP);
            }
            let entry = u32::from(VECTOR) | LEVEL | POLARITY_LOW;
            ioapic_write(REDIRECTION_LOW + 1, 0);
            ioapic_write(REDIRECTION_LOW, entry);
            let back = ioapic_read(REDIRECTION_LOW);
            if back & !REMOTE_IRR != entry {
                println!("virtual I/O APIC pin {PIN} reads back {back:#x}, not {entry:#x}");
                return Err(FAIL_SETUP);
            }
            println!("virtual I/O APIC: {pins} pins, pin {PIN} -> vector {VECTOR:#x}, level, unmasked");
            edu.enable_intx();
            x86_trap::enable_interrupts();
            Ok(Intx { expected: 0 })
        }

        /// Waits (HLT) for the next interrupt, checks it carried `bits`
        /// and that no further one follows; returns the status it carried.
        fn next(&mut self, what: &str, bits: u32) -> Result<u32, u64> {
            self.expected += 1;
            let expected = self.expected;
            let deadline = time::counter() + WAIT_TICKS;
            while !x86_trap::wait_for_interrupt(|| ARRIVED.load(Ordering::SeqCst) >= expected) {
                if time::counter() > deadline {
                    println!("INTx from the edu did not arrive in time after {what}");
                    return Err(FAIL_LOST);
                }
            }
            time::wait_ticks(QUIET_TICKS);
            let arrived = ARRIVED.load(Ordering::SeqCst);
            if arrived != expected {
                println!("INTx from the edu taken {} more time(s) after {what} was acknowledged", arrived - expected);
                return Err(FAIL_REPEATED);
            }
            x86_trap::disable_interrupts();
            let status = SEEN.swap(0, Ordering::SeqCst);
            x86_trap::enable_interrupts();
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
                    "INTx from the edu arrived as vector {VECTOR:#x}: raise {round} of {RAISES} (status {status:#x}), acknowledged"
                );
            }
            Ok(())
        }

        /// The interrupt of a transfer started with completion interrupts on.
        pub fn dma_done(&mut self, what: &str) -> Result<(), u64> {
            let status = self.next(what, DMA_DONE)?;
            println!("INTx from the edu arrived as vector {VECTOR:#x}: {what} done (status {status:#x}), acknowledged");
            Ok(())
        }

        /// Masks interrupts again.
        pub fn finish(self) -> Result<(), u64> {
            x86_trap::disable_interrupts();
            Ok(())
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
