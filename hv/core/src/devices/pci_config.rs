//! The virtual PCI configuration space a partition sees for the functions
//! assigned to it (issue 6 item 4): an ECAM window (bus 0 only, at
//! `VIRTUAL_PCI_ECAM_BASE`) whose device `n` is the partition's `n`-th
//! assigned function.
//!
//! What the guest may do, and what it sees:
//! - identity, class, revision, subsystem and interrupt pin: the real
//!   function's;
//! - command register: only memory-space, I/O-space, bus-master and
//!   INTx-disable reach the device (a bus master can only reach what the
//!   partition's IOMMU domain maps); status reads without the capability bit;
//! - BARs: the guest reads the addresses the hypervisor mapped them at and
//!   can size them (write all-ones, read the size mask); moving a BAR is
//!   refused (the write is dropped): its mapping is fixed at boot;
//! - the capability list is hidden (pointer 0): MSI, MSI-X, power
//!   management and vendor capabilities stay the hypervisor's business
//!   until they are virtualized (legacy INTx is what a partition gets);
//! - expansion ROM, header type beyond type 0, and everything above the
//!   standard header read as zero and ignore writes; functions that do not
//!   exist read as all-ones (vendor ID 0xffff), as on real hardware.

use crate::mmio::{AccessSize, MmioDevice, VcpuId};
use alloc::boxed::Box;
use alloc::vec::Vec;

/// Bytes of one function's configuration space in ECAM.
pub const ECAM_FUNCTION_SIZE: u64 = 4096;

/// Standard header offsets (PCI Local Bus 3.0 §6.1).
mod offset {
    pub const VENDOR_DEVICE: u64 = 0x00;
    pub const COMMAND_STATUS: u64 = 0x04;
    pub const CLASS_REVISION: u64 = 0x08;
    pub const HEADER: u64 = 0x0c;
    pub const BAR0: u64 = 0x10;
    pub const BAR5: u64 = 0x24;
    pub const SUBSYSTEM: u64 = 0x2c;
    pub const CAPABILITIES: u64 = 0x34;
    pub const INTERRUPT: u64 = 0x3c;
}

/// Command register bits a partition may set.
pub const COMMAND_IO: u16 = 1 << 0;
/// Memory space enable.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Bus master enable.
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// INTx disable.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const COMMAND_GUEST_BITS: u16 = COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
/// Status: capability list present.
const STATUS_CAPABILITIES: u32 = 1 << 4;
/// Header type byte: bit 7 multi-function.
const HEADER_MULTIFUNCTION: u32 = 0x80 << 16;

/// The real function's configuration space, as the hypervisor reaches it.
pub trait ConfigAccess: Send {
    /// The 32-bit register at `offset` (4-byte aligned).
    fn read32(&mut self, offset: u16) -> u32;
    /// Writes the 32-bit register at `offset` (4-byte aligned).
    fn write32(&mut self, offset: u16, value: u32);
}

/// What kind of BAR, with its flag bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory BAR.
    Memory32 {
        /// Prefetchable.
        prefetchable: bool,
    },
    /// 64-bit memory BAR (uses the next BAR slot for the high half).
    Memory64 {
        /// Prefetchable.
        prefetchable: bool,
    },
    /// I/O space BAR.
    Io,
}

impl BarKind {
    /// The flag bits in the BAR's low dword.
    pub fn flags(self) -> u32 {
        match self {
            BarKind::Memory32 { prefetchable } => u32::from(prefetchable) << 3,
            BarKind::Memory64 { prefetchable } => (0b10 << 1) | (u32::from(prefetchable) << 3),
            BarKind::Io => 1,
        }
    }
}

/// One BAR as the partition sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtualBar {
    /// BAR slot (0-5); a 64-bit BAR also occupies `index + 1`.
    pub index: u8,
    /// Kind and flags.
    pub kind: BarKind,
    /// The guest address the hypervisor mapped it at.
    pub guest: u64,
    /// Size in bytes (a power of two).
    pub size: u64,
}

/// One assigned function's virtual configuration space.
pub struct VirtualFunction {
    device: Box<dyn ConfigAccess>,
    bars: Vec<VirtualBar>,
    /// Slots (0-5) the guest last wrote all-ones to: they read the size mask.
    sizing: [bool; 6],
    /// The guest's interrupt line byte (scratch, as on real hardware).
    interrupt_line: u8,
    /// BAR moves refused so far, for the caller's log.
    pub refused_moves: u32,
}

impl VirtualFunction {
    /// The function behind `device`, with `bars` mapped for the guest.
    pub fn new(device: Box<dyn ConfigAccess>, bars: Vec<VirtualBar>) -> VirtualFunction {
        VirtualFunction { device, bars, sizing: [false; 6], interrupt_line: 0, refused_moves: 0 }
    }

    /// The BAR occupying `slot`, and whether `slot` is its high half.
    fn bar_at(&self, slot: u8) -> Option<(&VirtualBar, bool)> {
        self.bars.iter().find_map(|bar| match bar.kind {
            BarKind::Memory64 { .. } if slot == bar.index + 1 => Some((bar, true)),
            _ if slot == bar.index => Some((bar, false)),
            _ => None,
        })
    }

    /// The 32-bit register at `offset` (aligned) as the guest sees it.
    pub fn read32(&mut self, offset: u64) -> u32 {
        match offset {
            offset::VENDOR_DEVICE | offset::CLASS_REVISION | offset::SUBSYSTEM => self.device.read32(offset as u16),
            offset::COMMAND_STATUS => self.device.read32(offset as u16) & !(STATUS_CAPABILITIES << 16),
            offset::HEADER => self.device.read32(offset as u16) & !(HEADER_MULTIFUNCTION | (0x7f << 16)),
            offset::BAR0..=offset::BAR5 => {
                let slot = ((offset - offset::BAR0) / 4) as u8;
                match self.bar_at(slot) {
                    None => 0,
                    Some((bar, high)) => {
                        let value = if self.sizing[usize::from(slot)] { !(bar.size - 1) } else { bar.guest };
                        if high { (value >> 32) as u32 } else { value as u32 & !0xf | bar.kind.flags() }
                    }
                }
            }
            offset::CAPABILITIES => 0,
            offset::INTERRUPT => {
                let pin = self.device.read32(offset as u16) & 0xff00;
                pin | u32::from(self.interrupt_line)
            }
            _ => 0,
        }
    }

    /// A guest write of `value` to the 32-bit register at `offset`
    /// (aligned), `mask` selecting the bytes written.
    pub fn write32(&mut self, offset: u64, value: u32, mask: u32) {
        match offset {
            offset::COMMAND_STATUS if mask & 0xffff != 0 => {
                let current = self.device.read32(offset as u16) & 0xffff;
                let guest = (value & mask) as u16 & COMMAND_GUEST_BITS;
                let command = (current as u16 & !(COMMAND_GUEST_BITS & mask as u16)) | guest;
                // Status bits are write-1-to-clear: write zeros there.
                self.device.write32(offset as u16, u32::from(command));
            }
            offset::BAR0..=offset::BAR5 => {
                let slot = ((offset - offset::BAR0) / 4) as u8;
                let Some((bar, high)) = self.bar_at(slot) else { return };
                let bar = *bar;
                // Only whole-dword writes size or move a BAR (what every
                // driver does); partial writes are dropped.
                if mask != u32::MAX {
                    return;
                }
                self.sizing[usize::from(slot)] = value == u32::MAX;
                if value == u32::MAX {
                    return;
                }
                let (current, address_bits) =
                    if high { ((bar.guest >> 32) as u32, u32::MAX) } else { (bar.guest as u32, !0xf) };
                if value & address_bits != current & address_bits {
                    self.refused_moves = self.refused_moves.saturating_add(1);
                }
            }
            offset::INTERRUPT if mask & 0xff != 0 => self.interrupt_line = value as u8,
            _ => {}
        }
    }
}

/// The ECAM window: bus 0, device `n` = the `n`-th function, function 0.
pub struct VirtualEcam {
    functions: Vec<VirtualFunction>,
}

impl VirtualEcam {
    /// A bus holding `functions`, as devices 0, 1, ...
    pub fn new(functions: Vec<VirtualFunction>) -> VirtualEcam {
        VirtualEcam { functions }
    }

    /// Adds `function` as the next device number; returns that number, or
    /// `None` (and drops nothing else) when all 32 devices are taken.
    pub fn push(&mut self, function: VirtualFunction) -> Option<usize> {
        if self.functions.len() >= 32 {
            return None;
        }
        self.functions.push(function);
        Some(self.functions.len() - 1)
    }

    /// BAR moves refused so far, over all functions.
    pub fn refused_moves(&self) -> u32 {
        self.functions.iter().map(|f| f.refused_moves).sum()
    }

    /// The function at ECAM `offset` and the register offset inside it.
    fn locate(&mut self, offset: u64) -> Option<(&mut VirtualFunction, u64)> {
        let function_number = offset / ECAM_FUNCTION_SIZE;
        let (device, function) = (function_number / 8, function_number % 8);
        if function != 0 || device >= 32 {
            return None;
        }
        let register = offset % ECAM_FUNCTION_SIZE;
        self.functions.get_mut(device as usize).map(|f| (f, register))
    }
}

impl MmioDevice for VirtualEcam {
    fn name(&self) -> &'static str {
        "virtual PCI configuration space"
    }

    fn read(&mut self, _vcpu: VcpuId, offset: u64, size: AccessSize) -> u64 {
        let Some((function, register)) = self.locate(offset) else {
            return size.mask();
        };
        let shift = (register & 3) * 8;
        if (register & 3) + size.bytes() > 4 {
            // A misaligned or 8-byte access: assemble two dwords.
            let low = u64::from(function.read32(register & !3));
            let high = u64::from(function.read32((register & !3) + 4));
            return ((high << 32 | low) >> shift) & size.mask();
        }
        (u64::from(function.read32(register & !3)) >> shift) & size.mask()
    }

    fn write(&mut self, _vcpu: VcpuId, offset: u64, size: AccessSize, value: u64) {
        let Some((function, register)) = self.locate(offset) else { return };
        let shift = (register & 3) * 8;
        if (register & 3) + size.bytes() > 4 {
            if size == AccessSize::Double && register & 3 == 0 {
                function.write32(register, value as u32, u32::MAX);
                function.write32(register + 4, (value >> 32) as u32, u32::MAX);
            }
            return;
        }
        let mask = (size.mask() << shift) as u32;
        function.write32(register & !3, ((value << shift) as u32) & mask, mask);
    }
}

/// The configuration registers of a function that exists only inside a
/// partition (the virtual GPU): fixed identity, a command register the
/// guest owns, one interrupt pin. BARs are the [`VirtualFunction`]'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticFunction {
    vendor: u16,
    device: u16,
    /// Class code (24 bits) and revision.
    class_revision: u32,
    command: u16,
    /// Interrupt pin (1 = INTA#, 0 = none).
    pin: u8,
}

impl SyntheticFunction {
    /// A function with this identity and `class_code` (24 bits), revision 1,
    /// interrupt pin INTA#.
    pub fn new(vendor: u16, device: u16, class_code: u32) -> SyntheticFunction {
        SyntheticFunction { vendor, device, class_revision: (class_code & 0xff_ffff) << 8 | 1, command: 0, pin: 1 }
    }
}

impl ConfigAccess for SyntheticFunction {
    fn read32(&mut self, offset: u16) -> u32 {
        match u64::from(offset) {
            offset::VENDOR_DEVICE => u32::from(self.device) << 16 | u32::from(self.vendor),
            offset::COMMAND_STATUS => u32::from(self.command),
            offset::CLASS_REVISION => self.class_revision,
            offset::SUBSYSTEM => u32::from(self.device) << 16 | u32::from(self.vendor),
            offset::INTERRUPT => u32::from(self.pin) << 8,
            _ => 0,
        }
    }

    fn write32(&mut self, offset: u16, value: u32) {
        if u64::from(offset) == offset::COMMAND_STATUS {
            self.command = value as u16 & COMMAND_GUEST_BITS;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use spin::Mutex;

    /// Register writes that reached the real device: `(offset, value)`.
    type Writes = Arc<Mutex<Vec<(u16, u32)>>>;

    /// The edu device's header, with a capability list, and a record of
    /// what reaches the real registers.
    struct FakeEdu {
        regs: [u32; 16],
        writes: Writes,
    }

    impl ConfigAccess for FakeEdu {
        fn read32(&mut self, offset: u16) -> u32 {
            self.regs.get(usize::from(offset / 4)).copied().unwrap_or(0)
        }

        fn write32(&mut self, offset: u16, value: u32) {
            self.writes.lock().push((offset, value));
            if let Some(reg) = self.regs.get_mut(usize::from(offset / 4)) {
                *reg = value;
            }
        }
    }

    fn ecam() -> (VirtualEcam, Writes) {
        let mut regs = [0u32; 16];
        regs[0] = 0x11e8_1234; // device 0x11e8, vendor 0x1234
        regs[1] = 0x0010_0000; // status: capability list
        regs[2] = 0x00ff_0010; // class ff, revision 0x10
        regs[3] = 0x0080_0000; // multi-function bit set on the real device
        regs[4] = 0xfea0_0000; // real BAR0
        regs[13] = 0x40; // capability pointer
        regs[15] = 0x0000_0100; // interrupt pin A
        let writes = Arc::new(Mutex::new(Vec::new()));
        let device = FakeEdu { regs, writes: writes.clone() };
        let bars = alloc::vec![
            VirtualBar { index: 0, kind: BarKind::Memory32 { prefetchable: false }, guest: 0x1000_0000, size: 0x10_0000 },
            VirtualBar { index: 2, kind: BarKind::Memory64 { prefetchable: true }, guest: 0x8_0000_0000, size: 0x4000 },
        ];
        (VirtualEcam::new(alloc::vec![VirtualFunction::new(Box::new(device), bars)]), writes)
    }

    fn read(e: &mut VirtualEcam, offset: u64, size: AccessSize) -> u64 {
        e.read(0, offset, size)
    }

    #[test]
    fn identity_is_real_and_capabilities_are_hidden() {
        let (mut e, _) = ecam();
        assert_eq!(read(&mut e, 0, AccessSize::Word), 0x11e8_1234);
        assert_eq!(read(&mut e, 2, AccessSize::Half), 0x11e8);
        assert_eq!(read(&mut e, 0x06, AccessSize::Half) & u64::from(STATUS_CAPABILITIES), 0);
        assert_eq!(read(&mut e, 0x34, AccessSize::Byte), 0);
        assert_eq!(read(&mut e, 0x0e, AccessSize::Byte), 0, "single-function type 0 header");
        assert_eq!(read(&mut e, 0x3d, AccessSize::Byte), 1, "interrupt pin A");
        assert_eq!(read(&mut e, 0x40, AccessSize::Word), 0);
        // Other devices and functions do not exist.
        assert_eq!(read(&mut e, ECAM_FUNCTION_SIZE * 8, AccessSize::Word), 0xffff_ffff);
        assert_eq!(read(&mut e, ECAM_FUNCTION_SIZE, AccessSize::Half), 0xffff);
    }

    #[test]
    fn only_safe_command_bits_reach_the_device() {
        let (mut e, writes) = ecam();
        // Memory, bus master, plus SERR (bit 8) and parity (bit 6), which are refused.
        e.write(0, 0x04, AccessSize::Half, 0x0146);
        assert_eq!(writes.lock().last(), Some(&(0x04, 0x0006)));
        e.write(0, 0x04, AccessSize::Word, 0xffff_0000 | u64::from(COMMAND_INTX_DISABLE));
        assert_eq!(writes.lock().last(), Some(&(0x04, u32::from(COMMAND_INTX_DISABLE))));
    }

    #[test]
    fn bars_read_the_guest_address_size_and_refuse_moves() {
        let (mut e, writes) = ecam();
        assert_eq!(read(&mut e, 0x10, AccessSize::Word), 0x1000_0000);
        // 64-bit prefetchable: type 0b10, prefetchable bit 3.
        assert_eq!(read(&mut e, 0x18, AccessSize::Word), 0x0000_000c);
        assert_eq!(read(&mut e, 0x1c, AccessSize::Word), 0x8);
        e.write(0, 0x10, AccessSize::Word, 0xffff_ffff);
        assert_eq!(read(&mut e, 0x10, AccessSize::Word), 0xfff0_0000);
        e.write(0, 0x10, AccessSize::Word, 0x1000_0000);
        assert_eq!(read(&mut e, 0x10, AccessSize::Word), 0x1000_0000);
        e.write(0, 0x18, AccessSize::Word, 0xffff_ffff);
        e.write(0, 0x1c, AccessSize::Word, 0xffff_ffff);
        assert_eq!(read(&mut e, 0x18, AccessSize::Word), 0xffff_c00c);
        assert_eq!(read(&mut e, 0x1c, AccessSize::Word), 0xffff_ffff);
        // Moving a BAR is refused and counted; the device never sees BAR writes.
        e.write(0, 0x10, AccessSize::Word, 0x2000_0000);
        assert_eq!(read(&mut e, 0x10, AccessSize::Word), 0x1000_0000);
        assert_eq!(e.refused_moves(), 1);
        assert!(writes.lock().iter().all(|&(offset, _)| !(0x10..=0x24).contains(&offset)));
        // Empty slots read zero.
        assert_eq!(read(&mut e, 0x14, AccessSize::Word), 0);
    }

    #[test]
    fn the_interrupt_line_is_guest_scratch() {
        let (mut e, writes) = ecam();
        e.write(0, 0x3c, AccessSize::Byte, 0x2a);
        assert_eq!(read(&mut e, 0x3c, AccessSize::Half), 0x012a);
        assert!(writes.lock().is_empty());
    }

    #[test]
    fn a_synthetic_function_shows_its_identity_and_keeps_its_bars_fixed() {
        let bar = VirtualBar { index: 0, kind: BarKind::Memory32 { prefetchable: false }, guest: 0x3e00_0000, size: 0x20_0000 };
        let memory = VirtualBar { index: 2, kind: BarKind::Memory64 { prefetchable: true }, guest: 0x3800_0000, size: 0x40_0000 };
        let mut ecam = VirtualEcam::new(alloc::vec![VirtualFunction::new(
            Box::new(SyntheticFunction::new(0x4248, 0x0001, 0x03_80_00)),
            alloc::vec![bar, memory],
        )]);
        assert_eq!(ecam.read(0, 0x00, AccessSize::Word), 0x0001_4248);
        assert_eq!(ecam.read(0, 0x08, AccessSize::Word), 0x0380_0001);
        assert_eq!(ecam.read(0, 0x3d, AccessSize::Byte), 1, "INTA#");
        ecam.write(0, 0x04, AccessSize::Half, 0xffff);
        assert_eq!(ecam.read(0, 0x04, AccessSize::Half), u64::from(COMMAND_GUEST_BITS));
        assert_eq!(ecam.read(0, 0x10, AccessSize::Word), 0x3e00_0000);
        assert_eq!(ecam.read(0, 0x18, AccessSize::Word), 0x3800_000c);
        ecam.write(0, 0x10, AccessSize::Word, 0x1000_0000);
        assert_eq!(ecam.read(0, 0x10, AccessSize::Word), 0x3e00_0000, "moves are refused");
        assert_eq!(ecam.refused_moves(), 1);
        ecam.write(0, 0x18, AccessSize::Word, 0xffff_ffff);
        assert_eq!(ecam.read(0, 0x18, AccessSize::Word), u64::from(!(0x40_0000u32 - 1) | 0xc), "size mask with the 64-bit prefetchable flags");
        assert_eq!(ecam.read(0, 0x1000, AccessSize::Word), 0xffff_ffff, "no device 1");
    }
}
