//! The verdict register: how a guest that cannot make hypercalls (a Linux
//! userspace with only a shell) reports its test result, by writing the
//! code with `devmem`. A write of 0 is success; any other value is a failure
//! code, as for the `REPORT_RESULT` hypercall.
//!
//! One 32-bit register at offset 0; reads return the last value written
//! (or `u32::MAX` before any), other offsets read as zero and ignore writes.

use crate::mmio::{AccessSize, MmioDevice, VcpuId};
use alloc::sync::Arc;
use spin::Mutex;

/// Size of the register window.
pub const VERDICT_MMIO_SIZE: u64 = 0x1000;

/// The device: the last code written, shared with the exit handler.
pub struct VerdictRegister(pub Arc<Mutex<Option<u32>>>);

impl MmioDevice for VerdictRegister {
    fn name(&self) -> &'static str {
        "verdict"
    }

    fn read(&mut self, _vcpu: VcpuId, offset: u64, _size: AccessSize) -> u64 {
        if offset == 0 { u64::from(self.0.lock().unwrap_or(u32::MAX)) } else { 0 }
    }

    fn write(&mut self, _vcpu: VcpuId, offset: u64, _size: AccessSize, value: u64) {
        if offset == 0 {
            *self.0.lock() = Some(value as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_last_code() {
        let code = Arc::new(Mutex::new(None));
        let mut device = VerdictRegister(code.clone());
        assert_eq!(device.read(0, 0, AccessSize::Word), u64::from(u32::MAX));
        device.write(0, 0, AccessSize::Word, 0);
        assert_eq!(*code.lock(), Some(0));
        device.write(0, 4, AccessSize::Word, 7);
        assert_eq!(*code.lock(), Some(0), "only offset 0");
        device.write(0, 0, AccessSize::Word, 3);
        assert_eq!(device.read(0, 0, AccessSize::Word), 3);
    }
}
