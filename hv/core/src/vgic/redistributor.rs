//! The emulated redistributors, `GICR_*` (IHI 0069 §12.10-12.11): one pair
//! of 64 KiB frames (RD_base, SGI_base) per vCPU, the last one marked Last.

use super::{IIDR, PIDR2_GICV3, Vgic, read_bits, write_bits};
use crate::mmio::{AccessSize, MmioDevice, VcpuId};
use alloc::sync::Arc;
use spin::Mutex;

/// Bytes of one vCPU's redistributor.
pub const GICR_STRIDE: u64 = 0x2_0000;
const SGI_BASE: u64 = 0x1_0000;

mod offset {
    pub const CTLR: u64 = 0x0000;
    pub const IIDR: u64 = 0x0004;
    pub const TYPER: u64 = 0x0008;
    pub const TYPER_HIGH: u64 = 0x000c;
    pub const WAKER: u64 = 0x0014;
    pub const PIDR2: u64 = 0xffe8;
    // SGI_base frame, relative to it.
    pub const IGROUPR0: u64 = 0x0080;
    pub const ISENABLER0: u64 = 0x0100;
    pub const ICENABLER0: u64 = 0x0180;
    pub const ISPENDR0: u64 = 0x0200;
    pub const ICPENDR0: u64 = 0x0280;
    pub const IPRIORITYR: u64 = 0x0400;
    pub const IPRIORITYR_END: u64 = 0x0420;
    pub const ICFGR0: u64 = 0x0c00;
    pub const ICFGR1: u64 = 0x0c04;
}

/// `GICR_WAKER` bits: ProcessorSleep (1), ChildrenAsleep (2).
const WAKER_PROCESSOR_SLEEP: u64 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u64 = 1 << 2;
/// `GICR_TYPER.Last` (4).
const TYPER_LAST: u64 = 1 << 4;

/// The redistributor region: a handle on the partition's [`Vgic`].
pub struct Redistributors(pub Arc<Mutex<Vgic>>);

impl Redistributors {
    /// The size of the region for `vcpus` vCPUs.
    pub fn region_size(vcpus: usize) -> u64 {
        GICR_STRIDE * vcpus as u64
    }
}

/// `GICR_TYPER` of vCPU `index` of `count`: affinity Aff0 = index, processor
/// number = index.
fn typer(index: usize, count: usize) -> u64 {
    let last = if index + 1 == count { TYPER_LAST } else { 0 };
    ((index as u64) << 32) | ((index as u64) << 8) | last
}

impl MmioDevice for Redistributors {
    fn name(&self) -> &'static str {
        "gicr"
    }

    fn read(&mut self, _accessor: VcpuId, at: u64, size: AccessSize) -> u64 {
        let mut vgic = self.0.lock();
        let vcpu = (at / GICR_STRIDE) as usize;
        let at = at % GICR_STRIDE;
        let count = vgic.vcpu_count();
        if vcpu >= count {
            return 0;
        }
        match at {
            offset::CTLR => 0,
            offset::IIDR => IIDR,
            offset::TYPER if size == AccessSize::Double => typer(vcpu, count),
            offset::TYPER => typer(vcpu, count) & 0xffff_ffff,
            offset::TYPER_HIGH => typer(vcpu, count) >> 32,
            offset::WAKER if vgic.private[vcpu].asleep => WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP,
            offset::WAKER => 0,
            offset::PIDR2 => PIDR2_GICV3,
            a if a >= SGI_BASE => match a - SGI_BASE {
                offset::IGROUPR0 => u64::from(u32::MAX),
                offset::ISENABLER0 | offset::ICENABLER0 => read_bits(&mut vgic, vcpu, 0, |i| i.enabled),
                offset::ISPENDR0 | offset::ICPENDR0 => read_bits(&mut vgic, vcpu, 0, |i| i.pending),
                b if (offset::IPRIORITYR..offset::IPRIORITYR_END).contains(&b) => {
                    let first = (b - offset::IPRIORITYR) as u32;
                    (0..size.bytes() as u32)
                        .map(|byte| u64::from(vgic.priority(vcpu, first + byte)) << (8 * byte))
                        .fold(0, |acc, v| acc | v)
                }
                // SGIs are edge-triggered (0b10 per INTID); PPIs as configured.
                offset::ICFGR0 => 0xaaaa_aaaa,
                offset::ICFGR1 => (0..16)
                    .filter(|&i| vgic.private(vcpu, 16 + i).is_some_and(|irq| irq.edge))
                    .fold(0, |acc, i| acc | (0b10 << (2 * i))),
                _ => 0,
            },
            _ => 0,
        }
    }

    fn write(&mut self, _accessor: VcpuId, at: u64, size: AccessSize, value: u64) {
        let mut vgic = self.0.lock();
        let vcpu = (at / GICR_STRIDE) as usize;
        let at = at % GICR_STRIDE;
        if vcpu >= vgic.vcpu_count() {
            return;
        }
        let word = value as u32;
        match at {
            offset::WAKER => vgic.private[vcpu].asleep = value & WAKER_PROCESSOR_SLEEP != 0,
            a if a >= SGI_BASE => match a - SGI_BASE {
                offset::ISENABLER0 => write_bits(&mut vgic, vcpu, 0, word, true, |i| i.enabled = true),
                offset::ICENABLER0 => write_bits(&mut vgic, vcpu, 0, word, false, |i| i.enabled = false),
                offset::ISPENDR0 => write_bits(&mut vgic, vcpu, 0, word, true, |i| i.pending = true),
                offset::ICPENDR0 => write_bits(&mut vgic, vcpu, 0, word, false, |i| i.pending = false),
                b if (offset::IPRIORITYR..offset::IPRIORITYR_END).contains(&b) => {
                    let first = (b - offset::IPRIORITYR) as u32;
                    for byte in 0..size.bytes() as u32 {
                        if let Some(irq) = vgic.irq_mut(vcpu, first + byte) {
                            irq.priority = (value >> (8 * byte)) as u8;
                        }
                    }
                }
                offset::ICFGR1 => {
                    for i in 0..16 {
                        if let Some(irq) = vgic.irq_mut(vcpu, 16 + i) {
                            irq.edge = word & (0b10 << (2 * i)) != 0;
                        }
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vcpu_has_a_frame_and_the_last_says_so() {
        let vgic = Arc::new(Mutex::new(Vgic::new(2, &[])));
        let mut r = Redistributors(vgic.clone());
        let t0 = r.read(0, offset::TYPER, AccessSize::Double);
        let t1 = r.read(0, GICR_STRIDE + offset::TYPER, AccessSize::Double);
        assert_eq!(t0 >> 32, 0);
        assert_eq!(t1 >> 32, 1);
        assert_eq!(t0 & TYPER_LAST, 0);
        assert_eq!(t1 & TYPER_LAST, TYPER_LAST);
        assert_eq!(r.read(0, GICR_STRIDE + offset::TYPER_HIGH, AccessSize::Word), 1);
        assert_eq!(r.read(0, 2 * GICR_STRIDE + offset::TYPER, AccessSize::Double), 0, "beyond the last vCPU");
        assert_eq!(r.read(0, offset::PIDR2, AccessSize::Word) >> 4 & 0xf, 3);
    }

    #[test]
    fn waking_and_private_interrupts() {
        let vgic = Arc::new(Mutex::new(Vgic::new(2, &[])));
        let mut r = Redistributors(vgic.clone());
        assert_eq!(r.read(1, GICR_STRIDE + offset::WAKER, AccessSize::Word), 0b110);
        r.write(1, GICR_STRIDE + offset::WAKER, AccessSize::Word, 0);
        assert_eq!(r.read(1, GICR_STRIDE + offset::WAKER, AccessSize::Word), 0);
        r.write(1, GICR_STRIDE + SGI_BASE + offset::ISENABLER0, AccessSize::Word, 1 << 27);
        assert!(vgic.lock().private_enabled(1, 27));
        assert!(!vgic.lock().private_enabled(0, 27), "per vCPU");
        r.write(1, GICR_STRIDE + SGI_BASE + offset::IPRIORITYR + 24, AccessSize::Word, 0xa0a0_a0a0);
        assert_eq!(vgic.lock().priority(1, 27), 0xa0);
        assert_eq!(r.read(0, GICR_STRIDE + SGI_BASE + offset::ISENABLER0, AccessSize::Word), 1 << 27);
        r.write(1, GICR_STRIDE + SGI_BASE + offset::ICENABLER0, AccessSize::Word, 1 << 27);
        assert!(!vgic.lock().private_enabled(1, 27));
        assert_eq!(r.read(0, SGI_BASE + offset::ICFGR0, AccessSize::Word), 0xaaaa_aaaa);
    }
}
