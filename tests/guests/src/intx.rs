//! A device's level-sensitive interrupt as a test guest takes it, on both
//! architectures: on arm64 an SPI of the partition's virtual GIC, on x86_64
//! a pin of its virtual I/O APIC routed to [`VECTOR`] and ended at the
//! virtual local APIC.
//!
//! The program names the line and an [`Acknowledge`] function: the handler
//! calls it first (it reads the device's status, clears those bits at the
//! device and returns them: the line is level-sensitive, and still high at
//! the EOI it would be taken again at once), accumulates the bits it
//! returned and counts the interrupt. [`Intx::next`] waits for the next
//! one with a bound (arm64: spinning on the count; x86_64: HLT, which the
//! hypervisor ends only with an interrupt, so there the bound is checked
//! between wake-ups); [`Intx::next_alone`] also checks that no further
//! interrupt follows within a quiet period.
//!
//! Statics are written with plain loads and stores, no read-modify-write
//! atomics: with the MMU off (arm64), memory is Device memory, where
//! exclusives are not guaranteed to work; only the handler writes them
//! while interrupts are unmasked.

use crate::time;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Reads the device's interrupt status, acknowledges those bits at the
/// device and returns them. Runs in the interrupt handler.
pub type Acknowledge = fn() -> u32;

/// Why an interrupt was not taken as expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntxError {
    /// The line could not be set up (not this partition's, or no such pin).
    Setup,
    /// The interrupt did not arrive before the deadline.
    Lost,
    /// It was taken this many more times after it was acknowledged.
    Repeated(u32),
    /// An interrupt that was not the device's (arm64 INTID).
    Stray(u32),
}

/// The vector the x86_64 pin is routed to (any of 32-255).
pub const VECTOR: u8 = 0x41;
/// Interrupts the handler takes beyond the one waited for before it masks
/// the line (an interrupt storm: the line will not go down), so that the
/// program gets to report it instead of spinning in the handler.
const STORM: u32 = 64;
/// arm64 priority given to the SPI (any value above the mask 0xff).
#[cfg(target_arch = "aarch64")]
const PRIORITY: u8 = 0x80;

static ACKNOWLEDGE: AtomicUsize = AtomicUsize::new(0);
/// The line: arm64 INTID, x86_64 I/O APIC pin.
static LINE: AtomicU32 = AtomicU32::new(0);
/// Interrupts taken.
static ARRIVED: AtomicU32 = AtomicU32::new(0);
/// The count at which the handler masks the line.
static LIMIT: AtomicU32 = AtomicU32::new(STORM);
/// Status bits acknowledged since the last `take_seen`.
static SEEN: AtomicU32 = AtomicU32::new(0);
/// The last arm64 INTID that was not the line's (0: none).
static STRAY: AtomicU32 = AtomicU32::new(0);

/// Counter ticks to wait for an interrupt by default: 2 s on arm64 (by
/// `CNTFRQ_EL0`); on x86_64, which has no architectural way to ask the
/// TSC's rate (QEMU's runs at the host's, 1-5 GHz), 4 s at 1 GHz.
pub fn default_wait_ticks() -> u64 {
    #[cfg(target_arch = "aarch64")]
    return 2 * time::frequency();
    #[cfg(not(target_arch = "aarch64"))]
    4_000_000_000
}

/// Counter ticks without a further interrupt after one was taken: 20 ms
/// on arm64; at least 20 ms on any TSC up to 5 GHz.
pub fn default_quiet_ticks() -> u64 {
    #[cfg(target_arch = "aarch64")]
    return time::frequency() / 50;
    #[cfg(not(target_arch = "aarch64"))]
    100_000_000
}

/// The handler's common part: acknowledge at the device, record, mask the
/// line on a storm.
fn take() {
    let acknowledge = ACKNOWLEDGE.load(Ordering::SeqCst);
    if acknowledge != 0 {
        // SAFETY: only `Intx::start` stores here, and it stores an `Acknowledge`.
        let acknowledge: Acknowledge = unsafe { core::mem::transmute::<usize, Acknowledge>(acknowledge) };
        let status = acknowledge();
        SEEN.store(SEEN.load(Ordering::SeqCst) | status, Ordering::SeqCst);
    }
    let arrived = ARRIVED.load(Ordering::SeqCst) + 1;
    ARRIVED.store(arrived, Ordering::SeqCst);
    if arrived >= LIMIT.load(Ordering::SeqCst) {
        arch::mask(LINE.load(Ordering::SeqCst));
    }
}

/// The interrupts expected so far.
pub struct Intx {
    line: u32,
    expected: u32,
}

impl Intx {
    /// Installs the handler for `line` (arm64: SPI INTID; x86_64: I/O APIC
    /// pin, `active_low` as PCI INTx is), enables it and unmasks interrupts
    /// at the CPU. The caller enables the interrupt at the device.
    ///
    /// # Errors
    /// [`IntxError::Setup`] (with the reason printed) when the line is not
    /// this partition's.
    pub fn start(line: u32, active_low: bool, acknowledge: Acknowledge) -> Result<Intx, IntxError> {
        ACKNOWLEDGE.store(acknowledge as usize, Ordering::SeqCst);
        LINE.store(line, Ordering::SeqCst);
        ARRIVED.store(0, Ordering::SeqCst);
        SEEN.store(0, Ordering::SeqCst);
        LIMIT.store(STORM, Ordering::SeqCst);
        arch::start(line, active_low)?;
        Ok(Intx { line, expected: 0 })
    }

    /// The line.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// Interrupts taken so far.
    pub fn taken(&self) -> u32 {
        ARRIVED.load(Ordering::SeqCst)
    }

    /// Counts every interrupt taken so far as expected: the next
    /// [`Intx::next`] waits for one taken after this call (for devices
    /// whose work may raise more than one).
    pub fn resync(&mut self) {
        self.expected = ARRIVED.load(Ordering::SeqCst);
    }

    /// Waits until the next expected interrupt has been taken or `deadline`
    /// (a counter value) passed; returns the status bits acknowledged since
    /// the last call (possibly from more than one interrupt).
    ///
    /// # Errors
    /// [`IntxError::Lost`].
    pub fn next(&mut self, deadline: u64) -> Result<u32, IntxError> {
        self.expected += 1;
        LIMIT.store(self.expected + STORM, Ordering::SeqCst);
        let expected = self.expected;
        while !arch::wait(|| ARRIVED.load(Ordering::SeqCst) >= expected) {
            if time::counter() > deadline {
                return Err(IntxError::Lost);
            }
        }
        Ok(take_seen())
    }

    /// [`Intx::next`] with the default deadline, then checks that no
    /// further interrupt follows within the default quiet period.
    ///
    /// # Errors
    /// [`IntxError::Lost`], [`IntxError::Repeated`].
    pub fn next_alone(&mut self) -> Result<u32, IntxError> {
        let mut status = self.next(time::counter() + default_wait_ticks())?;
        time::wait_ticks(default_quiet_ticks());
        let arrived = ARRIVED.load(Ordering::SeqCst);
        if arrived != self.expected {
            return Err(IntxError::Repeated(arrived - self.expected));
        }
        status |= take_seen();
        Ok(status)
    }

    /// Masks interrupts at the CPU again; reports an interrupt that was not
    /// the line's.
    ///
    /// # Errors
    /// [`IntxError::Stray`].
    pub fn finish(self) -> Result<(), IntxError> {
        arch::disable();
        match STRAY.load(Ordering::SeqCst) {
            0 => Ok(()),
            other => Err(IntxError::Stray(other)),
        }
    }
}

/// The status bits acknowledged since the last call (read and cleared with
/// interrupts masked).
fn take_seen() -> u32 {
    arch::disable();
    let status = SEEN.load(Ordering::SeqCst);
    SEEN.store(0, Ordering::SeqCst);
    arch::enable();
    status
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use super::{IntxError, LINE, PRIORITY, STRAY, take};
    use crate::{gic, println};
    use core::sync::atomic::Ordering;

    fn on_interrupt(intid: u32) {
        if intid != LINE.load(Ordering::SeqCst) {
            STRAY.store(intid, Ordering::SeqCst);
            return;
        }
        take();
    }

    pub(super) fn start(intid: u32, _active_low: bool) -> Result<(), IntxError> {
        gic::init(on_interrupt).map_err(|e| {
            println!("GIC: {e}");
            IntxError::Setup
        })?;
        gic::set_spi_priority(intid, PRIORITY);
        if !gic::try_enable_spi(intid) {
            println!("interrupt {intid} did not stay enabled: not this partition's");
            return Err(IntxError::Setup);
        }
        gic::enable_irqs();
        Ok(())
    }

    pub(super) fn mask(intid: u32) {
        gic::disable_spi(intid);
    }

    /// Spins (interrupts unmasked) while `done` does not hold yet.
    pub(super) fn wait(done: impl Fn() -> bool) -> bool {
        let result = done();
        if !result {
            core::hint::spin_loop();
        }
        result
    }

    pub(super) fn enable() {
        gic::enable_irqs();
    }

    pub(super) fn disable() {
        gic::disable_irqs();
    }
}

#[cfg(target_arch = "x86_64")]
mod arch {
    use super::{IntxError, VECTOR, take};
    use crate::{println, x86_trap};

    /// The virtual I/O APIC: IOREGSEL and IOWIN.
    const IOREGSEL: u64 = 0xfec0_0000;
    const IOWIN: u64 = 0xfec0_0010;
    /// I/O APIC registers: version; redirection entry `pin` is
    /// `0x10 + 2 * pin` (low dword) and the next (high dword).
    const IOAPIC_VERSION: u32 = 0x01;
    const fn redirection_low(pin: u32) -> u32 {
        0x10 + 2 * pin
    }
    /// Redirection entry bits: active low, remote IRR, level, masked.
    const POLARITY_LOW: u32 = 1 << 13;
    const REMOTE_IRR: u32 = 1 << 14;
    const LEVEL: u32 = 1 << 15;
    const MASKED: u32 = 1 << 16;
    /// The local APIC's EOI register.
    const LAPIC_EOI: u64 = 0xfee0_00b0;

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

    /// The vector's handler: the common part, then the EOI.
    fn on_interrupt() {
        take();
        write32(LAPIC_EOI, 0);
    }

    pub(super) fn start(pin: u32, active_low: bool) -> Result<(), IntxError> {
        x86_trap::install();
        x86_trap::set_interrupt_handler(VECTOR, on_interrupt);
        let version = ioapic_read(IOAPIC_VERSION);
        let pins = ((version >> 16) & 0xff) + 1;
        if pins <= pin {
            println!("virtual I/O APIC version register {version:#x}: no pin {pin}");
            return Err(IntxError::Setup);
        }
        let polarity = if active_low { POLARITY_LOW } else { 0 };
        let entry = u32::from(VECTOR) | LEVEL | polarity;
        ioapic_write(redirection_low(pin) + 1, 0);
        ioapic_write(redirection_low(pin), entry);
        let back = ioapic_read(redirection_low(pin));
        if back & !REMOTE_IRR != entry {
            println!("virtual I/O APIC pin {pin} reads back {back:#x}, not {entry:#x}");
            return Err(IntxError::Setup);
        }
        println!("virtual I/O APIC: {pins} pins, pin {pin} -> vector {VECTOR:#x}, level, unmasked");
        x86_trap::enable_interrupts();
        Ok(())
    }

    pub(super) fn mask(pin: u32) {
        let entry = ioapic_read(redirection_low(pin));
        ioapic_write(redirection_low(pin), entry | MASKED);
    }

    /// HLT unless `done` already holds (see `x86_trap::wait_for_interrupt`).
    pub(super) fn wait(done: impl Fn() -> bool) -> bool {
        x86_trap::wait_for_interrupt(done)
    }

    pub(super) fn enable() {
        x86_trap::enable_interrupts();
    }

    pub(super) fn disable() {
        x86_trap::disable_interrupts();
    }
}
