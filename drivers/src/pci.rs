//! PCI configuration space through ECAM (PCI Express Base Specification
//! §7.2.2, "PCI Express Enhanced Configuration Access Mechanism"), and what
//! the hypervisor reads from a type 0 header (PCI Local Bus Specification
//! 3.0 §6.1-6.2): identity, class, command register, BARs and their sizes.
//!
//! The accessor is a trait, so enumeration and BAR sizing run on the host
//! against a fake configuration space.

use core::fmt;
use core::str::FromStr;
use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

/// The command register's fields, as `tock-registers` generates them.
#[allow(missing_docs, reason = "the macro's generated items carry no docs; the fields below do")]
mod command_register {
    use tock_registers::register_bitfields;

register_bitfields! [u16,
    /// The command register (§6.2.2).
    pub COMMAND [
        /// Responds to I/O space accesses.
        IO_SPACE OFFSET(0) NUMBITS(1) [],
        /// Responds to memory space accesses.
        MEMORY_SPACE OFFSET(1) NUMBITS(1) [],
        /// May master the bus: issue DMA.
        BUS_MASTER OFFSET(2) NUMBITS(1) [],
        /// Legacy interrupt (INTx) disabled.
        INTERRUPT_DISABLE OFFSET(10) NUMBITS(1) []
    ]
];
}
pub use command_register::COMMAND;

register_bitfields! [u32,
    /// A memory or I/O BAR (§6.2.5.1).
    BAR [
        /// 1: I/O space.
        IO OFFSET(0) NUMBITS(1) [],
        /// Memory BAR type: 0b00 32-bit, 0b10 64-bit.
        TYPE OFFSET(1) NUMBITS(2) [Bits32 = 0b00, Bits64 = 0b10],
        /// Memory BAR: prefetchable.
        PREFETCHABLE OFFSET(3) NUMBITS(1) []
    ]
];

/// Configuration register offsets of a type 0 header (§6.1).
pub mod offset {
    /// Vendor ID (low 16 bits) and device ID (high 16).
    pub const ID: u16 = 0x00;
    /// Command (low 16 bits) and status (high 16).
    pub const COMMAND: u16 = 0x04;
    /// Revision ID (bits 7:0) and class code (bits 31:8).
    pub const CLASS: u16 = 0x08;
    /// Cache line size, latency timer, header type (bits 23:16), BIST.
    pub const HEADER_TYPE: u16 = 0x0c;
    /// BAR 0; BAR n is at `BAR0 + 4 * n`.
    pub const BAR0: u16 = 0x10;
    /// Capabilities pointer (bits 7:0) of a type 0 header (§6.7).
    pub const CAPABILITIES: u16 = 0x34;
}

/// Status register bit 4 (the upper half of the command word): the
/// function has a capability list (§6.2.3).
const STATUS_CAPABILITY_LIST: u32 = 1 << (16 + 4);
/// Capability pointers are dword aligned; the low two bits are reserved.
const CAPABILITY_POINTER_MASK: u32 = 0xfc;
/// Capability header: ID bits 7:0, next pointer bits 15:8.
const CAPABILITY_ID_MASK: u32 = 0xff;
/// Shift of the next pointer in a capability header.
const CAPABILITY_NEXT_SHIFT: u32 = 8;
/// At most this many capabilities are walked (a looping list stops here).
const CAPABILITY_LIMIT: usize = 48;
/// MSI-X Table Offset/BIR register: BAR indicator bits 2:0 (§6.8.2.4).
pub const MSIX_BIR_MASK: u32 = 0x7;

/// The configuration offset of `bdf`'s first capability with ID `id`,
/// walking the list (bounded, so a looping list ends).
pub fn find_capability(space: &impl ConfigSpace, bdf: Bdf, id: u8) -> Option<u16> {
    if space.read32(bdf, offset::COMMAND) & STATUS_CAPABILITY_LIST == 0 {
        return None;
    }
    let mut pointer = space.read32(bdf, offset::CAPABILITIES) & CAPABILITY_POINTER_MASK;
    for _ in 0..CAPABILITY_LIMIT {
        if pointer == 0 {
            return None;
        }
        let header = space.read32(bdf, pointer as u16);
        if header & CAPABILITY_ID_MASK == u32::from(id) {
            return Some(pointer as u16);
        }
        pointer = (header >> CAPABILITY_NEXT_SHIFT) & CAPABILITY_POINTER_MASK;
    }
    None
}

/// Vendor ID read from a function that does not exist.
pub const NO_VENDOR: u16 = 0xffff;
/// BARs of a type 0 header.
pub const BAR_COUNT: usize = 6;
/// Devices per bus and functions per device.
pub const DEVICES_PER_BUS: u8 = 32;
/// Functions per device.
pub const FUNCTIONS_PER_DEVICE: u8 = 8;
/// Header type bit 7: the device has more than one function.
const HEADER_MULTI_FUNCTION: u32 = 0x80;
/// Header type bits 6:0.
const HEADER_LAYOUT_MASK: u32 = 0x7f;
/// Bytes of ECAM per function (4 KiB), per device (32 KiB) and per bus (1 MiB).
pub const ECAM_FUNCTION_SIZE: u64 = 1 << 12;
/// Bytes of ECAM per bus.
pub const ECAM_BUS_SIZE: u64 = 1 << 20;
/// Memory BAR address bits (the low four hold the type).
const MEMORY_BAR_ADDRESS: u32 = !0xf;
/// I/O BAR address bits.
const IO_BAR_ADDRESS: u32 = !0x3;

/// Bus, device, function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    bus: u8,
    device: u8,
    function: u8,
}

/// A BDF that does not parse or is out of range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadBdf;

impl Bdf {
    /// `bus:device.function`; `None` if the device or function is out of range.
    pub const fn new(bus: u8, device: u8, function: u8) -> Option<Bdf> {
        if device < DEVICES_PER_BUS && function < FUNCTIONS_PER_DEVICE {
            Some(Bdf { bus, device, function })
        } else {
            None
        }
    }

    /// The BDF of a 16-bit requester ID.
    pub const fn from_rid(rid: u16) -> Bdf {
        Bdf { bus: (rid >> 8) as u8, device: ((rid >> 3) & 0x1f) as u8, function: (rid & 0x7) as u8 }
    }

    /// The requester ID (bus 15:8, device 7:3, function 2:0), the input of
    /// the RID-to-StreamID map.
    pub const fn rid(&self) -> u16 {
        ((self.bus as u16) << 8) | ((self.device as u16) << 3) | self.function as u16
    }

    /// Bus number.
    pub const fn bus(&self) -> u8 {
        self.bus
    }

    /// Device number.
    pub const fn device(&self) -> u8 {
        self.device
    }

    /// Function number.
    pub const fn function(&self) -> u8 {
        self.function
    }

    /// Byte offset of this function's configuration space from the ECAM base
    /// (bus 0 at offset 0).
    pub const fn ecam_offset(&self) -> u64 {
        (self.rid() as u64) * ECAM_FUNCTION_SIZE
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{:x}", self.bus, self.device, self.function)
    }
}

impl FromStr for Bdf {
    type Err = BadBdf;

    /// Parses `bb:dd.f` (hexadecimal, as `lspci` prints it).
    fn from_str(text: &str) -> Result<Bdf, BadBdf> {
        let (bus, rest) = text.split_once(':').ok_or(BadBdf)?;
        let (device, function) = rest.split_once('.').ok_or(BadBdf)?;
        let number = |s: &str, digits: usize| {
            if s.is_empty() || s.len() > digits {
                return Err(BadBdf);
            }
            u8::from_str_radix(s, 16).map_err(|_| BadBdf)
        };
        Bdf::new(number(bus, 2)?, number(device, 2)?, number(function, 1)?).ok_or(BadBdf)
    }
}

/// Reads and writes configuration registers (aligned 32-bit words).
pub trait ConfigSpace {
    /// The word at `offset` (a multiple of 4 below 4096) of `bdf`'s space;
    /// all ones if there is no such function.
    fn read32(&self, bdf: Bdf, offset: u16) -> u32;
    /// Writes the word at `offset` of `bdf`'s space.
    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32);

    /// The 16-bit register at `offset` (a multiple of 2).
    fn read16(&self, bdf: Bdf, offset: u16) -> u16 {
        (self.read32(bdf, offset & !3) >> (8 * (offset & 2))) as u16
    }
}

/// ECAM: each function's 4 KiB of configuration space mapped at
/// `base + (bus << 20 | device << 15 | function << 12)`.
pub struct Ecam {
    base: usize,
    bus_count: u16,
}

impl Ecam {
    /// The ECAM window at `base` covering buses `0..bus_count`.
    ///
    /// # Safety
    /// `[base, base + bus_count MiB)` must map ECAM as Device memory for
    /// as long as the accessor is used, by nothing that relies on the
    /// functions' configuration staying as it was.
    pub unsafe fn new(base: usize, bus_count: u16) -> Ecam {
        Ecam { base, bus_count }
    }

    fn address(&self, bdf: Bdf, offset: u16) -> Option<*mut u32> {
        if u16::from(bdf.bus) >= self.bus_count || offset >= ECAM_FUNCTION_SIZE as u16 || !offset.is_multiple_of(4) {
            return None;
        }
        Some((self.base + bdf.ecam_offset() as usize + usize::from(offset)) as *mut u32)
    }
}

impl ConfigSpace for Ecam {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
        match self.address(bdf, offset) {
            // SAFETY: inside the ECAM window `new`'s caller vouched for,
            // aligned (checked in `address`).
            Some(register) => unsafe { register.read_volatile() },
            None => u32::MAX,
        }
    }

    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
        if let Some(register) = self.address(bdf, offset) {
            // SAFETY: as for `read32`.
            unsafe { register.write_volatile(value) };
        }
    }
}

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// Memory, 32-bit address.
    Memory32,
    /// Memory, 64-bit address (takes two BAR slots).
    Memory64,
    /// I/O space.
    Io,
}

/// One implemented BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Slot (0..6); a 64-bit BAR also uses the next.
    pub index: usize,
    /// What it decodes.
    pub kind: BarKind,
    /// Memory BAR: prefetchable (may be mapped Normal-NC, DESIGN.md §1.5).
    pub prefetchable: bool,
    /// The address firmware assigned (0: none).
    pub address: u64,
    /// Size in bytes (a power of two).
    pub size: u64,
}

impl fmt::Display for Bar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            BarKind::Memory32 => "mem32",
            BarKind::Memory64 => "mem64",
            BarKind::Io => "io",
        };
        let prefetch = if self.prefetchable { " prefetchable" } else { "" };
        write!(f, "BAR{} {kind}{prefetch} {:#x} size {:#x}", self.index, self.address, self.size)
    }
}

/// A function found on a bus, with its type 0 header read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    /// Where it is.
    pub bdf: Bdf,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class code: base class, subclass, programming interface (24 bits).
    pub class: u32,
    /// Header layout (0 = endpoint, 1 = PCI-to-PCI bridge).
    pub header_type: u8,
    /// Its BARs, sized (type 0 headers only; empty slots are `None`).
    pub bars: [Option<Bar>; BAR_COUNT],
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:04x}:{:04x} class {:06x}", self.bdf, self.vendor, self.device, self.class)?;
        if self.header_type != 0 {
            write!(f, " header type {}", self.header_type)?;
        }
        for bar in self.bars.iter().flatten() {
            write!(f, ", {bar}")?;
        }
        Ok(())
    }
}

/// The command register of `bdf`.
pub fn command(space: &impl ConfigSpace, bdf: Bdf) -> LocalRegisterCopy<u16, COMMAND::Register> {
    LocalRegisterCopy::new(space.read16(bdf, offset::COMMAND))
}

/// Writes the command register of `bdf` (the status half is written with
/// zeros, which leaves its write-1-to-clear bits alone).
pub fn set_command(space: &mut impl ConfigSpace, bdf: Bdf, value: LocalRegisterCopy<u16, COMMAND::Register>) {
    space.write32(bdf, offset::COMMAND, u32::from(value.get()));
}

/// Capability ID of MSI (PCI Local Bus 3.0 §6.8.1).
pub const CAPABILITY_MSI: u8 = 0x05;
/// Capability ID of MSI-X (PCI Local Bus 3.0 §6.8.2).
pub const CAPABILITY_MSIX: u8 = 0x11;
/// MSI Message Control (bits 31:16 of the capability's first word):
/// MSI Enable.
const MSI_CONTROL_ENABLE: u32 = 1 << 16;
/// Message Control: Multiple Message Enable, bits 6:4 (one vector: 0).
const MSI_CONTROL_MULTIPLE_ENABLE: u32 = 0b111 << (16 + 4);
/// Message Control: 64-bit address capable.
const MSI_CONTROL_64BIT: u32 = 1 << (16 + 7);
/// Message Control: per-vector masking capable.
const MSI_CONTROL_PER_VECTOR_MASK: u32 = 1 << (16 + 8);

/// Why MSI could not be programmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsiError {
    /// The function has no MSI capability.
    NoCapability,
    /// The address needs 64 bits and the function has only 32.
    AddressTooWide(u64),
}

/// Programs `bdf`'s MSI capability at `capability` with one vector:
/// `address` and `data`, vector 0 unmasked, then sets MSI Enable.
///
/// # Errors
/// [`MsiError::AddressTooWide`] for a 32-bit-only function and an address
/// above 4 GiB.
pub fn enable_msi(space: &mut impl ConfigSpace, bdf: Bdf, capability: u16, address: u64, data: u16) -> Result<(), MsiError> {
    let header = space.read32(bdf, capability);
    let wide = header & MSI_CONTROL_64BIT != 0;
    if !wide && address >> 32 != 0 {
        return Err(MsiError::AddressTooWide(address));
    }
    // Disabled while the message changes; one vector.
    space.write32(bdf, capability, header & !(MSI_CONTROL_ENABLE | MSI_CONTROL_MULTIPLE_ENABLE));
    space.write32(bdf, capability + 4, address as u32);
    let data_at = if wide {
        space.write32(bdf, capability + 8, (address >> 32) as u32);
        capability + 12
    } else {
        capability + 8
    };
    space.write32(bdf, data_at, u32::from(data));
    if header & MSI_CONTROL_PER_VECTOR_MASK != 0 {
        space.write32(bdf, data_at + 4, 0);
    }
    space.write32(bdf, capability, (header & !MSI_CONTROL_MULTIPLE_ENABLE) | MSI_CONTROL_ENABLE);
    Ok(())
}

/// Clears MSI Enable of the capability at `capability`.
pub fn disable_msi(space: &mut impl ConfigSpace, bdf: Bdf, capability: u16) {
    let header = space.read32(bdf, capability);
    space.write32(bdf, capability, header & !MSI_CONTROL_ENABLE);
}

/// Reads `bdf`'s header; `None` if no function answers. BARs of a type 0
/// header are sized (see [`size_bars`]).
pub fn probe(space: &mut impl ConfigSpace, bdf: Bdf) -> Option<Function> {
    let id = space.read32(bdf, offset::ID);
    let vendor = id as u16;
    if vendor == NO_VENDOR {
        return None;
    }
    let header_type = ((space.read32(bdf, offset::HEADER_TYPE) >> 16) & HEADER_LAYOUT_MASK) as u8;
    let bars = if header_type == 0 { size_bars(space, bdf) } else { [None; BAR_COUNT] };
    Some(Function {
        bdf,
        vendor,
        device: (id >> 16) as u16,
        class: space.read32(bdf, offset::CLASS) >> 8,
        header_type,
        bars,
    })
}

/// Whether function 0 of a device says it has more functions.
fn multi_function(space: &impl ConfigSpace, device: Bdf) -> bool {
    (space.read32(device, offset::HEADER_TYPE) >> 16) & HEADER_MULTI_FUNCTION != 0
}

/// Every function on `bus`, in BDF order.
pub fn enumerate_bus(space: &mut impl ConfigSpace, bus: u8) -> alloc::vec::Vec<Function> {
    let mut found = alloc::vec::Vec::new();
    for device in 0..DEVICES_PER_BUS {
        let Some(first) = Bdf::new(bus, device, 0) else { continue };
        let Some(function) = probe(space, first) else { continue };
        found.push(function);
        if multi_function(space, first) {
            for number in 1..FUNCTIONS_PER_DEVICE {
                if let Some(function) = Bdf::new(bus, device, number).and_then(|bdf| probe(space, bdf)) {
                    found.push(function);
                }
            }
        }
    }
    found
}

/// Sizes the BARs of a type 0 header (§6.2.5.1): with memory and I/O
/// decoding off, each BAR is written with all ones and read back, then
/// restored. The command register is restored at the end. Must run before
/// anything (a partition) uses the function.
pub fn size_bars(space: &mut impl ConfigSpace, bdf: Bdf) -> [Option<Bar>; BAR_COUNT] {
    let saved = command(space, bdf);
    let mut quiet = saved;
    quiet.modify(COMMAND::IO_SPACE::CLEAR + COMMAND::MEMORY_SPACE::CLEAR);
    set_command(space, bdf, quiet);
    let mut bars = [None; BAR_COUNT];
    let mut index = 0;
    while index < BAR_COUNT {
        let register = offset::BAR0 + 4 * index as u16;
        let original = space.read32(bdf, register);
        let low = LocalRegisterCopy::<u32, BAR::Register>::new(original);
        let is_64 = !low.is_set(BAR::IO) && low.matches_all(BAR::TYPE::Bits64) && index + 1 < BAR_COUNT;
        space.write32(bdf, register, u32::MAX);
        let low_mask = space.read32(bdf, register);
        space.write32(bdf, register, original);
        let (kind, address, mask) = if low.is_set(BAR::IO) {
            (BarKind::Io, u64::from(original & IO_BAR_ADDRESS), u64::from(low_mask & IO_BAR_ADDRESS) | !0xffff_ffff)
        } else if is_64 {
            let high_register = register + 4;
            let original_high = space.read32(bdf, high_register);
            space.write32(bdf, high_register, u32::MAX);
            let high_mask = space.read32(bdf, high_register);
            space.write32(bdf, high_register, original_high);
            (
                BarKind::Memory64,
                (u64::from(original_high) << 32) | u64::from(original & MEMORY_BAR_ADDRESS),
                (u64::from(high_mask) << 32) | u64::from(low_mask & MEMORY_BAR_ADDRESS),
            )
        } else {
            (BarKind::Memory32, u64::from(original & MEMORY_BAR_ADDRESS), u64::from(low_mask & MEMORY_BAR_ADDRESS) | !0xffff_ffff)
        };
        // No writable address bit: the BAR is not implemented. Else the
        // size is the lowest writable address bit.
        let implemented = match kind {
            BarKind::Io => low_mask & IO_BAR_ADDRESS != 0,
            BarKind::Memory32 => low_mask & MEMORY_BAR_ADDRESS != 0,
            BarKind::Memory64 => mask != 0,
        };
        let size = (!mask).wrapping_add(1);
        if implemented && size != 0 {
            bars[index] = Some(Bar {
                index,
                kind,
                prefetchable: kind != BarKind::Io && low.is_set(BAR::PREFETCHABLE),
                address,
                size,
            });
        }
        index += if kind == BarKind::Memory64 { 2 } else { 1 };
    }
    set_command(space, bdf, saved);
    bars
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::collections::BTreeMap;
    use std::string::ToString;
    use std::vec::Vec;

    /// A fake configuration space: per function, 1024 words with a
    /// writable mask each; BARs behave as hardware does (the low bits
    /// are read-only).
    #[derive(Default)]
    struct FakeSpace {
        functions: BTreeMap<Bdf, ([u32; 1024], [u32; 1024])>,
        writes: Vec<(Bdf, u16, u32)>,
    }

    impl FakeSpace {
        fn add(&mut self, bdf: Bdf, vendor: u16, device: u16, class: u32, header: u32, bars: &[(u32, u32)]) {
            let mut words = [0u32; 1024];
            let mut writable = [0u32; 1024];
            words[0] = u32::from(vendor) | (u32::from(device) << 16);
            words[1] = 0x0010_0006; // status: capabilities; memory + bus master on
            writable[1] = 0xffff;
            words[2] = (class << 8) | 0x10;
            words[3] = header << 16;
            for (i, &(value, mask)) in bars.iter().enumerate() {
                words[4 + i] = value;
                writable[4 + i] = mask;
            }
            self.functions.insert(bdf, (words, writable));
        }
    }

    impl ConfigSpace for FakeSpace {
        fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
            self.functions.get(&bdf).map_or(u32::MAX, |(words, _)| words[usize::from(offset / 4)])
        }

        fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
            self.writes.push((bdf, offset, value));
            if let Some((words, writable)) = self.functions.get_mut(&bdf) {
                let i = usize::from(offset / 4);
                words[i] = (words[i] & !writable[i]) | (value & writable[i]);
            }
        }
    }

    fn bdf(text: &str) -> Bdf {
        text.parse().unwrap()
    }

    #[test]
    fn bdf_parses_prints_and_maps_to_a_requester_id() {
        let edu = bdf("00:02.0");
        assert_eq!(edu, Bdf::new(0, 2, 0).unwrap());
        assert_eq!(edu.to_string(), "00:02.0");
        assert_eq!(edu.rid(), 0x10);
        assert_eq!(Bdf::from_rid(0x10), edu);
        let far = bdf("ff:1f.7");
        assert_eq!((far.rid(), far.to_string().as_str()), (0xffff, "ff:1f.7"));
        assert_eq!(far.ecam_offset(), 0xfff_f000);
        for bad in ["", "00:02", "00.02:0", "00:20.0", "00:02.8", "100:00.0", "0g:00.0", "00:02.00"] {
            assert_eq!(bad.parse::<Bdf>(), Err(BadBdf), "{bad}");
        }
    }

    #[test]
    fn finds_the_msi_capability_and_programs_a_64_bit_message() {
        let mut space = FakeSpace::default();
        let edu = bdf("00:01.0");
        space.add(edu, 0x1234, 0x11e8, 0x00_ff_00, 0, &[]);
        let (words, writable) = space.functions.get_mut(&edu).unwrap();
        words[0x34 / 4] = 0x40;
        // 0x40: power management, next 0x50; 0x50: MSI, 64-bit, last.
        words[0x40 / 4] = 0x0001_5001;
        words[0x50 / 4] = 0x0080_0005;
        writable[0x50 / 4] = 0x0071_0000;
        writable[0x54 / 4..=0x5c / 4].fill(u32::MAX);
        assert_eq!(find_capability(&space, edu, CAPABILITY_MSI), Some(0x50));
        assert_eq!(find_capability(&space, edu, CAPABILITY_MSIX), None);
        enable_msi(&mut space, edu, 0x50, 0x0809_0040, 3).unwrap();
        let words = &space.functions[&edu].0;
        assert_eq!(words[0x54 / 4], 0x0809_0040);
        assert_eq!(words[0x58 / 4], 0);
        assert_eq!(words[0x5c / 4], 3);
        assert_eq!(words[0x50 / 4], 0x0081_0005, "enabled, one vector");
        disable_msi(&mut space, edu, 0x50);
        assert_eq!(space.functions[&edu].0[0x50 / 4], 0x0080_0005);
    }

    #[test]
    fn a_capability_loop_ends_and_32_bit_msi_refuses_high_addresses() {
        let mut space = FakeSpace::default();
        let f = bdf("00:02.0");
        space.add(f, 0x1234, 0x0001, 0, 0, &[]);
        let (words, _) = space.functions.get_mut(&f).unwrap();
        words[0x34 / 4] = 0x40;
        words[0x40 / 4] = 0x0000_4009; // vendor-specific, pointing at itself
        assert_eq!(find_capability(&space, f, CAPABILITY_MSI), None);
        let (words, _) = space.functions.get_mut(&f).unwrap();
        words[0x40 / 4] = 0x0000_0005; // 32-bit MSI
        assert_eq!(enable_msi(&mut space, f, 0x40, 1 << 32, 0), Err(MsiError::AddressTooWide(1 << 32)));
    }

    #[test]
    fn enumerates_and_sizes_bars() {
        let mut space = FakeSpace::default();
        // The host bridge: no BARs.
        space.add(bdf("00:00.0"), 0x1b36, 0x0008, 0x06_00_00, 0, &[]);
        // edu: BAR0 32-bit memory, 1 MiB, at 0x1000_0000.
        space.add(bdf("00:01.0"), 0x1234, 0x11e8, 0x00_ff_00, 0, &[(0x1000_0000, 0xfff0_0000)]);
        // A multi-function device: function 0 with a 64-bit prefetchable
        // 16 KiB BAR and an I/O BAR; function 3 exists too.
        space.add(
            bdf("00:03.0"),
            0x8086,
            0x1234,
            0x02_00_00,
            0x80,
            &[(0x8000_000c, 0xffff_c000), (0x80, 0xffff_ffff), (0xc001, 0xffff_ffe0)],
        );
        space.add(bdf("00:03.3"), 0x8086, 0x1235, 0x0c_03_30, 0, &[]);
        let found = enumerate_bus(&mut space, 0);
        let names: Vec<_> = found.iter().map(|f| f.bdf.to_string()).collect();
        assert_eq!(names, ["00:00.0", "00:01.0", "00:03.0", "00:03.3"]);
        let edu = found[1];
        assert_eq!(
            edu.bars[0],
            Some(Bar { index: 0, kind: BarKind::Memory32, prefetchable: false, address: 0x1000_0000, size: 0x10_0000 })
        );
        assert_eq!(edu.to_string(), "00:01.0 1234:11e8 class 00ff00, BAR0 mem32 0x10000000 size 0x100000");
        let nic = found[2];
        assert_eq!(
            nic.bars[0],
            Some(Bar { index: 0, kind: BarKind::Memory64, prefetchable: true, address: 0x80_8000_0000, size: 0x4000 })
        );
        assert_eq!(nic.bars[1], None, "the upper half of a 64-bit BAR is not a BAR");
        assert_eq!(nic.bars[2], Some(Bar { index: 2, kind: BarKind::Io, prefetchable: false, address: 0xc000, size: 0x20 }));
        assert!(nic.bars[3..].iter().all(Option::is_none));
        // Every BAR was restored, and so was the command register.
        assert_eq!(space.read32(bdf("00:01.0"), offset::BAR0), 0x1000_0000);
        assert_eq!(space.read32(bdf("00:03.0"), offset::BAR0 + 4), 0x80);
        assert!(command(&space, bdf("00:01.0")).is_set(COMMAND::MEMORY_SPACE));
        // Sizing happened with decoding off.
        let edu_writes: Vec<_> = space.writes.iter().filter(|w| w.0 == bdf("00:01.0")).collect();
        assert_eq!(edu_writes[0], &(bdf("00:01.0"), offset::COMMAND, 0x4), "memory and I/O decode off, bus master kept");
    }

    #[test]
    fn capabilities_are_found_and_loops_end() {
        let mut space = FakeSpace::default();
        space.add(bdf("00:02.0"), 0x1af4, 0x1110, 0x05_00_00, 0, &[]);
        let (words, _) = space.functions.get_mut(&bdf("00:02.0")).unwrap();
        words[0x34 / 4] = 0x40;
        words[0x40 / 4] = 0x0000_5009; // vendor-specific, next 0x50
        words[0x50 / 4] = 0x0001_4011; // MSI-X, next 0x40: a loop
        assert_eq!(find_capability(&space, bdf("00:02.0"), 0x11), Some(0x50));
        assert_eq!(find_capability(&space, bdf("00:02.0"), 0x05), None, "the loop ends");
        assert_eq!(find_capability(&space, bdf("00:03.0"), 0x11), None);
    }

    #[test]
    fn command_register_round_trips() {
        let mut space = FakeSpace::default();
        space.add(bdf("00:01.0"), 0x1234, 0x11e8, 0, 0, &[]);
        let mut value = command(&space, bdf("00:01.0"));
        value.modify(COMMAND::BUS_MASTER::CLEAR);
        set_command(&mut space, bdf("00:01.0"), value);
        assert_eq!(command(&space, bdf("00:01.0")).get(), 0x2);
        assert_eq!(space.read16(bdf("00:01.0"), 6), 0x0010, "status untouched");
        assert!(probe(&mut space, bdf("00:05.0")).is_none());
    }
}
