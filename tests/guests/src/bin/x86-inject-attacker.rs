//! An x86_64 attacker under the `inject` fault policy: every access it does
//! not own must come back as a #GP(0) that its own handler catches, while
//! what it does own keeps working:
//!
//! - its own I/O ports (the CMOS RTC, passed through: no exits) read real
//!   time;
//! - the emulated verdict register answers plain MMIO loads and stores,
//!   decoded by the hypervisor;
//! - refused: MSRs it does not own (VM_HSAVE_PA, the APIC base, EFER.SVME),
//!   ports outside its set (the PIT, the i8042 and 0xcf9 reset ports),
//!   reads and writes of memory outside its RAM, an MMIO instruction that is
//!   not a plain move, and a hypercall on memory it does not own.

#![no_std]
#![no_main]

use bulkhead_test_guests::guest_main;

#[cfg(target_arch = "x86_64")]
mod attacks {
    use bulkhead_abi::hypercall::HvError;
    use bulkhead_test_guests::x86_trap::{self, Exception, GENERAL_PROTECTION};
    use bulkhead_test_guests::{hv, println, time};

    /// Ticks of the time-stamp counter to wait first, so that the victim has
    /// written its pattern.
    const START_DELAY_TICKS: u64 = 50_000_000;

    /// A guest-physical address outside this partition's 16 MiB of RAM.
    const OUTSIDE: u64 = 0x3000_0000;
    /// The verdict register (the hypervisor's emulated MMIO window).
    const VERDICT: u64 = 0x0a00_0000;

    fn expect_gp<T: core::fmt::Debug>(what: &str, result: Result<T, Exception>) -> Result<(), u64> {
        match result {
            Err(Exception { vector: GENERAL_PROTECTION, error_code: 0 }) => {
                println!("{what}: #GP(0), as the policy says");
                Ok(())
            }
            Err(other) => {
                println!("{what}: unexpected {other:?}");
                Err(20)
            }
            Ok(value) => {
                println!("{what}: NOT refused (got {value:?}): isolation is broken");
                Err(21)
            }
        }
    }

    fn cmos(register: u8) -> Result<u8, u64> {
        x86_trap::try_outb(0x70, register).map_err(|_| 30u64)?;
        x86_trap::try_inb(0x71).map_err(|_| 31u64)
    }

    fn bcd_ok(value: u8, max: u8) -> bool {
        value & 0xf <= 9 && value >> 4 <= 9 && value <= max
    }

    /// Reads the RTC through the partition's own ports.
    fn rtc() -> Result<(), u64> {
        let status_b = cmos(0x0b)?;
        let (seconds, minutes, hours) = (cmos(0x00)?, cmos(0x02)?, cmos(0x04)?);
        println!("RTC through its own ports: status B {status_b:#04x}, time {hours:02x}:{minutes:02x}:{seconds:02x}");
        // Binary mode is bit 2 of status B; QEMU's default is BCD.
        if status_b & 0x04 == 0 && !(bcd_ok(seconds, 0x59) && bcd_ok(minutes, 0x59) && bcd_ok(hours & 0x7f, 0x23)) {
            return Err(32);
        }
        Ok(())
    }

    /// Plain loads and stores to the verdict register, emulated.
    fn mmio() -> Result<(), u64> {
        // SAFETY: the verdict register is this partition's emulated device;
        // every access here is a plain move the hypervisor emulates.
        let (before, low_byte) = unsafe {
            (core::ptr::read_volatile(VERDICT as *const u32), core::ptr::read_volatile(VERDICT as *const u8))
        };
        println!("verdict register reads {before:#x} (byte {low_byte:#x}) before any write");
        if before != u32::MAX || low_byte != 0xff {
            return Err(40);
        }
        // An explicit MOV: the compiler may fold a volatile load into a
        // CMP, which the hypervisor does not emulate.
        let other = x86_trap::try_read_u64(VERDICT + 8).map_err(|_| 41u64)?;
        if other != 0 {
            return Err(42);
        }
        // A read-modify-write to the device: not a plain move.
        expect_gp("ADD to the verdict register (not a plain move)", x86_trap::try_add_u32(VERDICT, 1))?;
        Ok(())
    }

    pub fn run() -> Result<(), u64> {
        x86_trap::install();
        time::wait_ticks(START_DELAY_TICKS);
        rtc()?;
        mmio()?;
        expect_gp("WRMSR VM_HSAVE_PA", x86_trap::try_wrmsr(0xc001_0117, 0))?;
        expect_gp("RDMSR IA32_APIC_BASE", x86_trap::try_rdmsr(0x1b))?;
        let efer = x86_trap::try_rdmsr(0xc000_0080).map_err(|_| 50u64)?;
        expect_gp("WRMSR EFER with SVME", x86_trap::try_wrmsr(0xc000_0080, efer | (1 << 12)))?;
        expect_gp("IN from the PIT (port 0x40)", x86_trap::try_inb(0x40))?;
        expect_gp("OUT to the i8042 reset port (0x64)", x86_trap::try_outb(0x64, 0xfe))?;
        expect_gp("OUT to the reset control register (0xcf9)", x86_trap::try_outb(0xcf9, 0x06))?;
        expect_gp("read outside its RAM", x86_trap::try_read_u64(OUTSIDE))?;
        expect_gp("write outside its RAM", x86_trap::try_write_u64(OUTSIDE, 0xbad))?;
        let result = hv::console_write_raw(OUTSIDE, 64);
        println!("console write from {OUTSIDE:#x}: {result:?}");
        if result != Err(HvError::InvalidParameter) {
            return Err(60);
        }
        // Still alive and its RAM still its own.
        rtc()?;
        println!("every attack was refused and the partition kept running");
        Ok(())
    }
}

#[cfg(target_arch = "x86_64")]
fn main() -> Result<(), u64> {
    attacks::run()
}

#[cfg(not(target_arch = "x86_64"))]
fn main() -> Result<(), u64> {
    bulkhead_test_guests::println!("x86_64 only");
    Err(10)
}

guest_main!(main);
