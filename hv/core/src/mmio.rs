//! Emulated MMIO: a guest's trapped loads and stores, and the bus that sends
//! each to the device model that owns the address.
//!
//! The bus is sorted-range dispatch (the device with the last base at or
//! below the address, then a length check); inserting refuses empty and
//! overlapping windows. Accesses nobody claims are not the bus's business:
//! the caller applies the partition's fault policy to them.

use crate::address::Gpa;
use alloc::boxed::Box;
use alloc::vec::Vec;

/// The size of one access, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessSize {
    /// 1 byte.
    Byte = 1,
    /// 2 bytes.
    Half = 2,
    /// 4 bytes.
    Word = 4,
    /// 8 bytes.
    Double = 8,
}

impl AccessSize {
    /// Bytes.
    pub const fn bytes(self) -> u64 {
        self as u64
    }

    /// From a byte count.
    pub const fn from_bytes(bytes: u64) -> Option<AccessSize> {
        match bytes {
            1 => Some(AccessSize::Byte),
            2 => Some(AccessSize::Half),
            4 => Some(AccessSize::Word),
            8 => Some(AccessSize::Double),
            _ => None,
        }
    }

    /// A mask of the access's low bits.
    pub const fn mask(self) -> u64 {
        match self {
            AccessSize::Double => u64::MAX,
            other => (1u64 << (other.bytes() * 8)) - 1,
        }
    }
}

/// Which vCPU of the partition made an access.
pub type VcpuId = usize;

/// A device model on the MMIO bus: reads and writes at an offset into its
/// window, nothing more.
pub trait MmioDevice: Send {
    /// Short name, for logs.
    fn name(&self) -> &'static str;

    /// A load of `size` at `offset` by `vcpu`; the value in the low bytes.
    fn read(&mut self, vcpu: VcpuId, offset: u64, size: AccessSize) -> u64;

    /// A store of the low bytes of `value`.
    fn write(&mut self, vcpu: VcpuId, offset: u64, size: AccessSize, value: u64);

    /// A store by a partition whose address space is `space`: devices whose
    /// stores name guest memory (the virtual GPU's GTT) check them through
    /// it (rule 1: one address space gives every view). Others ignore it.
    fn write_in(&mut self, space: &crate::address_space::AddressSpace, vcpu: VcpuId, offset: u64, size: AccessSize, value: u64) {
        let _ = space;
        self.write(vcpu, offset, size, value);
    }
}

/// Why a device could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusError {
    /// A zero-sized window, or one that wraps.
    BadWindow(Gpa),
    /// The window overlaps one already on the bus.
    Overlap(Gpa),
}

struct Slot {
    base: u64,
    size: u64,
    device: Box<dyn MmioDevice>,
}

/// The partition's emulated devices, sorted by base.
#[derive(Default)]
pub struct MmioBus {
    slots: Vec<Slot>,
}

impl core::fmt::Debug for MmioBus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.slots.iter().map(|s| (s.device.name(), s.base, s.size))).finish()
    }
}

impl MmioBus {
    /// An empty bus.
    pub fn new() -> MmioBus {
        MmioBus::default()
    }

    /// Adds `device` at `[base, base + size)`.
    ///
    /// # Errors
    /// See [`BusError`].
    pub fn insert(&mut self, base: Gpa, size: u64, device: Box<dyn MmioDevice>) -> Result<(), BusError> {
        let end = base.raw().checked_add(size).filter(|_| size > 0).ok_or(BusError::BadWindow(base))?;
        if self.slots.iter().any(|s| s.base < end && base.raw() < s.base + s.size) {
            return Err(BusError::Overlap(base));
        }
        let at = self.slots.partition_point(|s| s.base < base.raw());
        self.slots.insert(at, Slot { base: base.raw(), size, device });
        Ok(())
    }

    /// The windows on the bus, `(base, size, name)`.
    pub fn windows(&self) -> impl Iterator<Item = (Gpa, u64, &'static str)> + '_ {
        self.slots.iter().map(|s| (Gpa::new(s.base), s.size, s.device.name()))
    }

    fn find(&mut self, gpa: Gpa, size: AccessSize) -> Option<(&mut Slot, u64)> {
        let index = self.slots.partition_point(|s| s.base <= gpa.raw()).checked_sub(1)?;
        let slot = &mut self.slots[index];
        let offset = gpa.raw() - slot.base;
        // The whole access must lie inside the window.
        if offset.checked_add(size.bytes())? > slot.size {
            return None;
        }
        Some((slot, offset))
    }

    /// Whether an access would be claimed.
    pub fn claims(&mut self, gpa: Gpa, size: AccessSize) -> bool {
        self.find(gpa, size).is_some()
    }

    /// A load; `None` when no device claims the whole access.
    pub fn read(&mut self, vcpu: VcpuId, gpa: Gpa, size: AccessSize) -> Option<u64> {
        let (slot, offset) = self.find(gpa, size)?;
        Some(slot.device.read(vcpu, offset, size) & size.mask())
    }

    /// A store by the partition whose address space is `space` (see
    /// [`MmioDevice::write_in`]); `false` when no device claims the whole
    /// access.
    pub fn write_in(&mut self, space: &crate::address_space::AddressSpace, vcpu: VcpuId, gpa: Gpa, size: AccessSize, value: u64) -> bool {
        match self.find(gpa, size) {
            Some((slot, offset)) => {
                slot.device.write_in(space, vcpu, offset, size, value & size.mask());
                true
            }
            None => false,
        }
    }

    /// A store; `false` when no device claims the whole access.
    pub fn write(&mut self, vcpu: VcpuId, gpa: Gpa, size: AccessSize, value: u64) -> bool {
        match self.find(gpa, size) {
            Some((slot, offset)) => {
                slot.device.write(vcpu, offset, size, value & size.mask());
                true
            }
            None => false,
        }
    }
}

/// A decoded trapped data access (from the exception syndrome).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAccess {
    /// The guest-physical address.
    pub gpa: Gpa,
    /// Its size.
    pub size: AccessSize,
    /// A store (else a load).
    pub write: bool,
    /// The general-purpose register (31 = zero register).
    pub register: u8,
    /// Sign-extend a load to the register width.
    pub sign_extend: bool,
    /// The register is 64-bit (else 32-bit: the upper half is zeroed).
    pub sixty_four: bool,
}

impl DataAccess {
    /// The value a load puts in the register, given what the device returned.
    pub fn load_value(&self, raw: u64) -> u64 {
        let bits = self.size.bytes() * 8;
        let mut value = raw & self.size.mask();
        if self.sign_extend && bits < 64 && value & (1 << (bits - 1)) != 0 {
            value |= !self.size.mask();
        }
        if !self.sixty_four {
            value &= 0xffff_ffff;
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use alloc::vec;
    use core::sync::atomic::{AtomicU64, Ordering};

    struct Recorder(Arc<AtomicU64>, &'static str);

    impl MmioDevice for Recorder {
        fn name(&self) -> &'static str {
            self.1
        }
        fn read(&mut self, _: VcpuId, offset: u64, _: AccessSize) -> u64 {
            0xffff_ffff_ffff_ff00 | offset
        }
        fn write(&mut self, _: VcpuId, offset: u64, _: AccessSize, value: u64) {
            self.0.store(offset << 32 | value, Ordering::SeqCst);
        }
    }

    #[test]
    fn dispatch_by_sorted_range_with_whole_access_checks() {
        let seen = Arc::new(AtomicU64::new(0));
        let mut bus = MmioBus::new();
        bus.insert(Gpa::new(0x900_0000), 0x1000, Box::new(Recorder(seen.clone(), "uart"))).unwrap();
        bus.insert(Gpa::new(0x800_0000), 0x10000, Box::new(Recorder(seen.clone(), "gicd"))).unwrap();
        assert_eq!(bus.insert(Gpa::new(0x900_0800), 0x1000, Box::new(Recorder(seen.clone(), "x"))), Err(BusError::Overlap(Gpa::new(0x900_0800))));
        assert_eq!(bus.insert(Gpa::new(0x1000), 0, Box::new(Recorder(seen.clone(), "x"))), Err(BusError::BadWindow(Gpa::new(0x1000))));
        assert_eq!(bus.insert(Gpa::new(u64::MAX), 2, Box::new(Recorder(seen.clone(), "x"))), Err(BusError::BadWindow(Gpa::new(u64::MAX))));
        let names: vec::Vec<&str> = bus.windows().map(|w| w.2).collect();
        assert_eq!(names, ["gicd", "uart"]);
        assert_eq!(bus.read(0, Gpa::new(0x900_0018), AccessSize::Word), Some(0xffff_ff18));
        assert_eq!(bus.read(0, Gpa::new(0x900_0ffc), AccessSize::Double), None, "crosses the end");
        assert_eq!(bus.read(0, Gpa::new(0x7ff_fffc), AccessSize::Word), None, "below every window");
        assert_eq!(bus.read(0, Gpa::new(0x901_0000), AccessSize::Byte), None, "between windows");
        assert!(bus.write(0, Gpa::new(0x900_0000), AccessSize::Byte, 0x1_41));
        assert_eq!(seen.load(Ordering::SeqCst), 0x41, "value truncated to the access size");
    }

    #[test]
    fn loads_extend_as_the_instruction_says() {
        let access = |size, sign_extend, sixty_four| DataAccess {
            gpa: Gpa::new(0),
            size,
            write: false,
            register: 0,
            sign_extend,
            sixty_four,
        };
        assert_eq!(access(AccessSize::Byte, false, true).load_value(0x1ff), 0xff);
        assert_eq!(access(AccessSize::Byte, true, true).load_value(0x80), 0xffff_ffff_ffff_ff80);
        assert_eq!(access(AccessSize::Half, true, false).load_value(0x8000), 0xffff_8000);
        assert_eq!(access(AccessSize::Double, true, true).load_value(u64::MAX), u64::MAX);
    }
}
