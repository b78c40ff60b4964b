//! A minimal virtual I/O APIC and local-APIC EOI register: how an x86_64
//! partition takes the legacy interrupt (INTx) of the PCI functions it owns.
//!
//! The I/O APIC (82093AA datasheet; Intel ICH9 datasheet §13.5) sits at
//! [`VIRTUAL_IOAPIC_BASE`] with its two windowed registers: IOREGSEL
//! (+0x00) selects, IOWIN (+0x10) reads or writes the selected register.
//! Registers: ID (0x00, bits 27:24), version (0x01: version 0x20, maximum
//! redirection entry [`PIN_COUNT`]` - 1` in bits 23:16), arbitration ID
//! (0x02, reads as the ID) and the redirection table (0x10 + 2n: low dword,
//! 0x11 + 2n: high dword of entry n). An entry keeps what the guest writes
//! to its vector, delivery mode, destination mode, polarity, trigger mode,
//! mask and destination; delivery status and remote IRR are read-only.
//!
//! Inputs are the host's INTx lines of the partition's functions, at the
//! GSI the host uses for each ([`VirtualIoApic::own`]). An INTx line is
//! level-triggered, so every owned pin is delivered with level semantics
//! whatever its trigger-mode bit says: delivery sets remote IRR, and the
//! pin is not delivered again until the guest's EOI of that vector clears
//! it. The host masks its physical pin when the line fires
//! ([`VirtualIoApic::assert`]) and unmasks it after that EOI
//! ([`VirtualIoApic::take_unmask`]); a line still high then fires again —
//! the level behaviour of a real I/O APIC, one interrupt per EOI. Masked
//! pins hold their input until unmasked. A pin may instead carry a line
//! the hypervisor models itself (the virtual GPU's,
//! [`VirtualIoApic::set_level`]): asserted while high, asserted again at
//! each EOI while it stays high, no host line behind it. Pins the
//! partition does not own are stored but never asserted. Delivery modes, destinations and the
//! polarity are not interpreted: the partition has one vCPU, and the input
//! is the line's state as the host saw it.
//!
//! Of the local APIC page at [`VIRTUAL_LAPIC_BASE`] only three registers
//! exist: ID (0x20: 0), version (0x30: [`LAPIC_VERSION`]) and EOI (0xb0);
//! everything else reads as 0 and ignores writes (no TPR, timer, LVT, ICR
//! or in-service registers are visible). In-service vectors are tracked
//! here so that an EOI ends the highest one, as on the real local APIC
//! (Intel SDM Vol. 3A §11.8.5); an EOI with nothing in service is ignored.
//!
//! Nothing a guest writes can make this model panic or misbehave beyond its
//! own interrupts: vectors below 16 (illegal for the APIC, SDM §11.5.3)
//! are never delivered, EOIs beyond the in-service vectors are dropped.

use crate::mmio::{AccessSize, MmioDevice, VcpuId};
use alloc::sync::Arc;
use spin::Mutex;

/// Guest-physical address of the virtual I/O APIC (its usual PC address).
pub use bulkhead_config::VIRTUAL_IOAPIC_BASE;
/// Size of its window.
pub const VIRTUAL_IOAPIC_SIZE: u64 = bulkhead_config::VIRTUAL_APIC_WINDOW_SIZE;
/// Guest-physical address of the local APIC page (the xAPIC default).
pub use bulkhead_config::VIRTUAL_LAPIC_BASE;
/// Size of the local APIC page.
pub const VIRTUAL_LAPIC_SIZE: u64 = bulkhead_config::VIRTUAL_APIC_WINDOW_SIZE;
/// Redirection entries (the 82093AA's and the ICH9's count).
pub const PIN_COUNT: usize = 24;
/// I/O APIC version register value: version 0x20 (PCI-era I/O APIC, as the
/// ICH9's), maximum redirection entry index in bits 23:16.
pub const IOAPIC_VERSION: u32 = 0x20 | (((PIN_COUNT as u32) - 1) << 16);
/// Local APIC version register value: version 0x14 (integrated xAPIC),
/// maximum LVT entry 5 in bits 23:16.
pub const LAPIC_VERSION: u32 = 0x14 | (5 << 16);

/// IOREGSEL and IOWIN offsets.
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
/// Register indexes behind IOWIN.
const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_ARBITRATION: u32 = 0x02;
const REG_REDIRECTION: u32 = 0x10;
/// The ID register's field.
const ID_MASK: u32 = 0x0f << 24;
/// Local APIC register offsets (SDM Vol. 3A Table 11-1).
const LAPIC_ID: u64 = 0x20;
const LAPIC_VERSION_OFFSET: u64 = 0x30;
const LAPIC_EOI: u64 = 0xb0;
/// Lowest vector the APIC may deliver (0-15 are illegal).
const FIRST_LEGAL_VECTOR: u8 = 16;

/// One redirection table entry (82093AA §3.2.4), as its 64-bit value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedirectionEntry(pub u64);

impl RedirectionEntry {
    /// Bits 7:0: the interrupt vector.
    pub const VECTOR: u64 = 0xff;
    /// Bits 10:8: delivery mode (000 fixed, 001 lowest priority, ...).
    pub const DELIVERY_MODE: u64 = 0x7 << 8;
    /// Bit 11: destination mode (0 physical, 1 logical).
    pub const DESTINATION_MODE: u64 = 1 << 11;
    /// Bit 12: delivery status (read-only; 1 = send pending).
    pub const DELIVERY_STATUS: u64 = 1 << 12;
    /// Bit 13: input pin polarity (1 = active low).
    pub const POLARITY_LOW: u64 = 1 << 13;
    /// Bit 14: remote IRR (read-only; level interrupts: accepted, no EOI yet).
    pub const REMOTE_IRR: u64 = 1 << 14;
    /// Bit 15: trigger mode (1 = level).
    pub const LEVEL: u64 = 1 << 15;
    /// Bit 16: interrupt mask (1 = masked).
    pub const MASKED: u64 = 1 << 16;
    /// Bits 63:56: destination.
    pub const DESTINATION: u64 = 0xff << 56;
    /// The bits a guest may write; the rest are read-only or reserved.
    pub const WRITABLE: u64 = Self::VECTOR
        | Self::DELIVERY_MODE
        | Self::DESTINATION_MODE
        | Self::POLARITY_LOW
        | Self::LEVEL
        | Self::MASKED
        | Self::DESTINATION;
    /// The reset value: masked, everything else zero.
    pub const RESET: RedirectionEntry = RedirectionEntry(Self::MASKED);

    /// An entry from its fields (the rest zero).
    pub const fn new(vector: u8, level: bool, masked: bool, destination: u8) -> RedirectionEntry {
        let mut value = vector as u64 | ((destination as u64) << 56);
        if level {
            value |= Self::LEVEL;
        }
        if masked {
            value |= Self::MASKED;
        }
        RedirectionEntry(value)
    }

    /// The vector.
    pub const fn vector(self) -> u8 {
        (self.0 & Self::VECTOR) as u8
    }

    /// Whether the pin is masked.
    pub const fn masked(self) -> bool {
        self.0 & Self::MASKED != 0
    }

    /// Whether the trigger mode is level.
    pub const fn level(self) -> bool {
        self.0 & Self::LEVEL != 0
    }

    /// Whether remote IRR is set.
    pub const fn remote_irr(self) -> bool {
        self.0 & Self::REMOTE_IRR != 0
    }

    /// The destination field.
    pub const fn destination(self) -> u8 {
        (self.0 >> 56) as u8
    }

    /// This entry with a guest's write of `value` to its low (`high` false)
    /// or high dword: only the writable bits change.
    const fn written(self, high: bool, value: u32) -> RedirectionEntry {
        let (shift, half) = if high { (32, 0xffff_ffff_0000_0000) } else { (0, 0xffff_ffff) };
        let writable = Self::WRITABLE & half;
        RedirectionEntry((self.0 & !writable) | (((value as u64) << shift) & writable))
    }
}

/// A bit per pin.
type PinSet = u32;

/// The I/O APIC's and the local APIC's state, shared by the two MMIO
/// windows and the exit handler.
#[derive(Debug)]
pub struct VirtualIoApic {
    select: u32,
    id: u32,
    entries: [RedirectionEntry; PIN_COUNT],
    /// Pins wired to a host line the partition owns.
    owned: PinSet,
    /// Pins whose line the host saw asserted and not yet delivered.
    asserted: PinSet,
    /// Owned pins driven by a level the hypervisor models itself (the
    /// virtual GPU's line, [`VirtualIoApic::set_level`]) and high now.
    levels: PinSet,
    /// Owned pins driven by [`VirtualIoApic::set_level`], not a host line.
    modelled: PinSet,
    /// Pins whose host line waits to be unmasked (EOI done).
    unmask: PinSet,
    /// The local APIC's in-service vectors.
    in_service: [u64; 4],
}

impl Default for VirtualIoApic {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtualIoApic {
    /// After reset: every entry masked, no pin owned.
    pub const fn new() -> VirtualIoApic {
        VirtualIoApic {
            select: 0,
            id: 0,
            entries: [RedirectionEntry::RESET; PIN_COUNT],
            owned: 0,
            asserted: 0,
            levels: 0,
            modelled: 0,
            unmask: 0,
            in_service: [0; 4],
        }
    }

    /// Wires pin `pin` to a host line the partition owns. Returns false for
    /// a pin this I/O APIC does not have.
    pub fn own(&mut self, pin: usize) -> bool {
        if pin >= PIN_COUNT {
            return false;
        }
        self.owned |= 1 << pin;
        true
    }

    /// The pins wired to host lines.
    pub fn owned(&self) -> PinSet {
        self.owned
    }

    /// Redirection entry `pin` as the guest would read it.
    pub fn entry(&self, pin: usize) -> Option<RedirectionEntry> {
        self.entries.get(pin).copied()
    }

    /// The host saw the line of owned pin `pin` asserted (and masked its
    /// physical pin). Ignored for pins the partition does not own.
    pub fn assert(&mut self, pin: usize) {
        if pin < PIN_COUNT && self.owned & (1 << pin) != 0 {
            self.asserted |= 1 << pin;
        }
    }

    /// Sets the level of owned pin `pin`, whose line the hypervisor models
    /// itself (the virtual GPU's): high asserts it (and, level-triggered,
    /// asserts it again after every EOI while it stays high), low takes back
    /// an assertion not yet delivered. No host line is unmasked for it.
    /// Ignored for pins the partition does not own.
    pub fn set_level(&mut self, pin: usize, high: bool) {
        if pin >= PIN_COUNT || self.owned & (1 << pin) == 0 {
            return;
        }
        let bit = 1 << pin;
        self.modelled |= bit;
        if high {
            self.levels |= bit;
            self.asserted |= bit;
        } else {
            self.levels &= !bit;
            self.asserted &= !bit;
        }
    }

    fn highest_in_service(&self) -> Option<u8> {
        (0..4).rev().find_map(|word| {
            let bits = self.in_service[word];
            (bits != 0).then(|| (word * 64 + 63 - bits.leading_zeros() as usize) as u8)
        })
    }

    /// Whether any owned pin could interrupt the guest without the guest
    /// running first (what a halted vCPU may wait for): unmasked, a legal
    /// vector above every vector in service, no remote IRR (which only the
    /// guest's EOI clears).
    pub fn can_interrupt(&self) -> bool {
        let floor = self.highest_in_service();
        (0..PIN_COUNT).any(|pin| {
            let entry = self.entries[pin];
            self.owned & (1 << pin) != 0
                && !entry.masked()
                && !entry.remote_irr()
                && entry.vector() >= FIRST_LEGAL_VECTOR
                && floor.is_none_or(|floor| entry.vector() > floor)
        })
    }

    /// The next interrupt for the vCPU, if one may be delivered now: an
    /// asserted, unmasked pin without remote IRR whose vector is above every
    /// vector in service (the highest such vector wins). Delivery sets its
    /// remote IRR and puts the vector in service; the caller hands the
    /// vector to the CPU. Vectors below 16 never deliver.
    pub fn next_delivery(&mut self) -> Option<u8> {
        let floor = self.highest_in_service();
        let (pin, vector) = (0..PIN_COUNT)
            .filter(|&pin| self.asserted & (1 << pin) != 0)
            .map(|pin| (pin, self.entries[pin]))
            .filter(|(_, entry)| !entry.masked() && !entry.remote_irr() && entry.vector() >= FIRST_LEGAL_VECTOR)
            .filter(|(_, entry)| floor.is_none_or(|floor| entry.vector() > floor))
            .map(|(pin, entry)| (pin, entry.vector()))
            .max_by_key(|&(_, vector)| vector)?;
        self.asserted &= !(1 << pin);
        self.entries[pin].0 |= RedirectionEntry::REMOTE_IRR;
        self.in_service[usize::from(vector / 64)] |= 1 << (vector % 64);
        Some(vector)
    }

    /// The guest's EOI: ends the highest in-service vector and clears the
    /// remote IRR of every pin with that vector, whose host lines are then
    /// due for unmasking ([`Self::take_unmask`]). Returns the vector ended,
    /// `None` (and nothing changes) if none was in service.
    pub fn eoi(&mut self) -> Option<u8> {
        let vector = self.highest_in_service()?;
        self.in_service[usize::from(vector / 64)] &= !(1 << (vector % 64));
        for pin in 0..PIN_COUNT {
            let entry = &mut self.entries[pin];
            if entry.remote_irr() && entry.vector() == vector {
                entry.0 &= !RedirectionEntry::REMOTE_IRR;
                if self.modelled & (1 << pin) == 0 {
                    self.unmask |= 1 << pin;
                } else if self.levels & (1 << pin) != 0 {
                    // Still high: level-triggered, it fires again.
                    self.asserted |= 1 << pin;
                }
            }
        }
        Some(vector)
    }

    /// The owned pins whose host line may be unmasked again (their EOI
    /// came), cleared by the call.
    pub fn take_unmask(&mut self) -> PinSet {
        core::mem::take(&mut self.unmask) & self.owned
    }

    fn read_register(&self) -> u32 {
        match self.select {
            REG_ID | REG_ARBITRATION => self.id,
            REG_VERSION => IOAPIC_VERSION,
            index => match self.redirection(index) {
                Some((pin, true)) => (self.entries[pin].0 >> 32) as u32,
                Some((pin, false)) => self.entries[pin].0 as u32,
                None => 0,
            },
        }
    }

    fn write_register(&mut self, value: u32) {
        match self.select {
            REG_ID => self.id = value & ID_MASK,
            index => {
                if let Some((pin, high)) = self.redirection(index) {
                    let entry = &mut self.entries[pin];
                    *entry = entry.written(high, value);
                    // A level pin whose line was seen high stays asserted
                    // while masked: unmasking delivers it.
                }
            }
        }
    }

    /// The pin and dword (`true`: high) of redirection register `index`.
    fn redirection(&self, index: u32) -> Option<(usize, bool)> {
        let offset = index.checked_sub(REG_REDIRECTION)? as usize;
        (offset / 2 < PIN_COUNT).then_some((offset / 2, offset % 2 == 1))
    }
}

/// The I/O APIC's MMIO window.
pub struct IoApicWindow(pub Arc<Mutex<VirtualIoApic>>);

impl MmioDevice for IoApicWindow {
    fn name(&self) -> &'static str {
        "I/O APIC"
    }

    fn read(&mut self, _vcpu: VcpuId, offset: u64, _size: AccessSize) -> u64 {
        let apic = self.0.lock();
        match offset {
            IOREGSEL => u64::from(apic.select),
            IOWIN => u64::from(apic.read_register()),
            _ => 0,
        }
    }

    fn write(&mut self, _vcpu: VcpuId, offset: u64, _size: AccessSize, value: u64) {
        let mut apic = self.0.lock();
        match offset {
            // IOREGSEL's bits 7:0 select; the rest are reserved.
            IOREGSEL => apic.select = value as u32 & 0xff,
            IOWIN => apic.write_register(value as u32),
            _ => {}
        }
    }
}

/// The local APIC page: ID, version and EOI (see the module documentation).
pub struct LocalApicWindow(pub Arc<Mutex<VirtualIoApic>>);

impl MmioDevice for LocalApicWindow {
    fn name(&self) -> &'static str {
        "local APIC"
    }

    fn read(&mut self, _vcpu: VcpuId, offset: u64, _size: AccessSize) -> u64 {
        match offset {
            // APIC ID 0 in bits 31:24.
            LAPIC_ID => 0,
            LAPIC_VERSION_OFFSET => u64::from(LAPIC_VERSION),
            _ => 0,
        }
    }

    fn write(&mut self, _vcpu: VcpuId, offset: u64, _size: AccessSize, _value: u64) {
        if offset == LAPIC_EOI {
            self.0.lock().eoi();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: AccessSize = AccessSize::Word;

    fn windows() -> (Arc<Mutex<VirtualIoApic>>, IoApicWindow, LocalApicWindow) {
        let state = Arc::new(Mutex::new(VirtualIoApic::new()));
        (state.clone(), IoApicWindow(state.clone()), LocalApicWindow(state))
    }

    fn write_reg(io: &mut IoApicWindow, index: u32, value: u32) {
        io.write(0, IOREGSEL, W, u64::from(index));
        io.write(0, IOWIN, W, u64::from(value));
    }

    fn read_reg(io: &mut IoApicWindow, index: u32) -> u32 {
        io.write(0, IOREGSEL, W, u64::from(index));
        io.read(0, IOWIN, W) as u32
    }

    #[test]
    fn redirection_entry_fields_encode_and_decode() {
        let entry = RedirectionEntry::new(0x41, true, false, 3);
        assert_eq!(entry.0, 0x0300_0000_0000_8041);
        assert_eq!((entry.vector(), entry.level(), entry.masked(), entry.destination()), (0x41, true, false, 3));
        assert!(!entry.remote_irr());
        assert!(RedirectionEntry::RESET.masked());
        // Read-only bits cannot be written.
        let written = RedirectionEntry::RESET.written(false, 0xffff_ffff);
        assert_eq!(written.0 & (RedirectionEntry::REMOTE_IRR | RedirectionEntry::DELIVERY_STATUS), 0);
        assert_eq!(written.0 & 0xffff_ffff, 0x0001_afff);
        assert_eq!(RedirectionEntry(0).written(true, 0xffff_ffff).0, 0xff00_0000_0000_0000);
    }

    #[test]
    fn identification_registers() {
        let (_, mut io, mut lapic) = windows();
        assert_eq!(read_reg(&mut io, REG_VERSION), 0x0017_0020);
        write_reg(&mut io, REG_ID, 0xffff_ffff);
        assert_eq!(read_reg(&mut io, REG_ID), 0x0f00_0000);
        assert_eq!(io.read(0, IOREGSEL, W), 0);
        assert_eq!(read_reg(&mut io, 0x10 + 2 * 23), 0x1_0000, "entries reset masked");
        assert_eq!(read_reg(&mut io, 0x10 + 2 * 24), 0, "beyond the table");
        assert_eq!(read_reg(&mut io, 0xff), 0);
        assert_eq!(lapic.read(0, LAPIC_VERSION_OFFSET, W), 0x0005_0014);
        assert_eq!(lapic.read(0, LAPIC_ID, W), 0);
        assert_eq!(lapic.read(0, 0x80, W), 0, "no TPR");
    }

    #[test]
    fn a_level_interrupt_is_delivered_once_until_eoi() {
        let (state, mut io, mut lapic) = windows();
        assert!(state.lock().own(21));
        write_reg(&mut io, 0x10 + 2 * 21, 0x8040);
        state.lock().assert(21);
        assert!(state.lock().can_interrupt());
        assert_eq!(state.lock().next_delivery(), Some(0x40));
        assert_ne!(read_reg(&mut io, 0x10 + 2 * 21) & 0x4000, 0, "remote IRR set");
        assert!(!state.lock().can_interrupt(), "only the guest's EOI can make it deliver again");
        // The host saw it again before the EOI: held, not delivered.
        state.lock().assert(21);
        assert_eq!(state.lock().next_delivery(), None);
        assert_eq!(state.lock().take_unmask(), 0);
        lapic.write(0, LAPIC_EOI, W, 0);
        assert_eq!(read_reg(&mut io, 0x10 + 2 * 21) & 0x4000, 0, "remote IRR cleared by the EOI");
        assert_eq!(state.lock().take_unmask(), 1 << 21);
        assert_eq!(state.lock().take_unmask(), 0, "taken once");
        assert_eq!(state.lock().next_delivery(), Some(0x40), "still asserted");
    }

    #[test]
    fn masked_pins_hold_their_input() {
        let (state, mut io, _) = windows();
        state.lock().own(5);
        state.lock().assert(5);
        assert_eq!(state.lock().next_delivery(), None, "reset masked");
        assert!(!state.lock().can_interrupt());
        write_reg(&mut io, 0x10 + 2 * 5, 0x8033);
        assert!(state.lock().can_interrupt());
        assert_eq!(state.lock().next_delivery(), Some(0x33));
    }

    #[test]
    fn garbage_is_contained() {
        let (state, mut io, mut lapic) = windows();
        // EOIs with nothing in service change nothing.
        for _ in 0..100 {
            lapic.write(0, LAPIC_EOI, W, 0);
        }
        assert_eq!(state.lock().eoi(), None);
        // Unowned pins never deliver, whatever their entry says.
        write_reg(&mut io, 0x10 + 2 * 3, 0x8050);
        state.lock().assert(3);
        assert_eq!(state.lock().next_delivery(), None);
        assert!(!state.lock().own(24));
        state.lock().assert(99);
        // Illegal vectors never deliver.
        state.lock().own(7);
        write_reg(&mut io, 0x10 + 2 * 7, 0x8005);
        state.lock().assert(7);
        assert!(!state.lock().can_interrupt());
        assert_eq!(state.lock().next_delivery(), None);
        // Offsets outside the two registers read 0 and ignore writes.
        io.write(0, 0x20, W, 0x1234);
        assert_eq!(io.read(0, 0x20, W), 0);
    }

    #[test]
    fn eoi_ends_the_highest_in_service_vector_first() {
        let (state, mut io, _) = windows();
        let mut apic = state.lock();
        apic.own(16);
        apic.own(17);
        drop(apic);
        write_reg(&mut io, 0x10 + 2 * 16, 0x8040);
        write_reg(&mut io, 0x10 + 2 * 17, 0x8060);
        let mut apic = state.lock();
        apic.assert(16);
        assert_eq!(apic.next_delivery(), Some(0x40));
        apic.assert(17);
        assert_eq!(apic.next_delivery(), Some(0x60), "higher vector nests");
        apic.assert(16);
        assert_eq!(apic.next_delivery(), None);
        assert_eq!(apic.eoi(), Some(0x60));
        assert_eq!(apic.take_unmask(), 1 << 17);
        assert_eq!(apic.eoi(), Some(0x40));
        assert_eq!(apic.take_unmask(), 1 << 16);
        assert_eq!(apic.next_delivery(), Some(0x40));
    }

    #[test]
    fn a_modelled_level_pin_fires_while_high_and_again_after_eoi() {
        let (state, mut io, mut lapic) = windows();
        state.lock().own(20);
        write_reg(&mut io, 0x10 + 2 * 20, 0xa050);
        let mut apic = state.lock();
        // Not owned: ignored.
        apic.set_level(21, true);
        assert_eq!(apic.next_delivery(), None);
        apic.set_level(20, true);
        assert_eq!(apic.next_delivery(), Some(0x50));
        assert_eq!(apic.next_delivery(), None, "remote IRR holds it until the EOI");
        drop(apic);
        lapic.write(0, LAPIC_EOI, W, 0);
        let mut apic = state.lock();
        assert_eq!(apic.take_unmask(), 0, "no host line to unmask");
        assert_eq!(apic.next_delivery(), Some(0x50), "still high: fires again");
        // Low before the EOI: nothing more.
        apic.set_level(20, false);
        assert_eq!(apic.eoi(), Some(0x50));
        assert_eq!(apic.next_delivery(), None);
        // High, then low before delivery: the assertion is taken back.
        apic.set_level(20, true);
        apic.set_level(20, false);
        assert_eq!(apic.next_delivery(), None);
        assert!(apic.can_interrupt());
    }
}
