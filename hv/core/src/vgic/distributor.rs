//! The emulated distributor, `GICD_*` (IHI 0069 §12.9), in affinity-routing
//! mode: only SPIs are configured here; SGIs and PPIs live in the
//! redistributors.

use super::{FIRST_SPI, IIDR, PIDR2_GICV3, Vgic, read_bits, write_bits};
use crate::mmio::{AccessSize, MmioDevice, VcpuId};
use alloc::sync::Arc;
use spin::Mutex;

/// Size of the distributor window.
pub const GICD_SIZE: u64 = 0x1_0000;

mod offset {
    pub const CTLR: u64 = 0x0000;
    pub const TYPER: u64 = 0x0004;
    pub const IIDR: u64 = 0x0008;
    pub const IGROUPR: u64 = 0x0080;
    pub const ISENABLER: u64 = 0x0100;
    pub const ICENABLER: u64 = 0x0180;
    pub const ISPENDR: u64 = 0x0200;
    pub const ICPENDR: u64 = 0x0280;
    pub const ISACTIVER: u64 = 0x0300;
    pub const ICACTIVER_END: u64 = 0x0400;
    pub const IPRIORITYR: u64 = 0x0400;
    pub const IPRIORITYR_END: u64 = 0x0800;
    pub const ICFGR: u64 = 0x0c00;
    pub const ICFGR_END: u64 = 0x0d00;
    pub const IROUTER: u64 = 0x6000;
    pub const IROUTER_END: u64 = 0x7fe0;
    pub const PIDR2: u64 = 0xffe8;
}

/// `GICD_CTLR` bits: EnableGrp1A (1), ARE_NS (4, RAO/WI here), RWP (31, RAZ).
const CTLR_ENABLE_GRP1: u64 = 1 << 1;
const CTLR_ARE: u64 = 1 << 4;

/// The distributor device: a handle on the partition's [`Vgic`].
pub struct Distributor(pub Arc<Mutex<Vgic>>);

impl MmioDevice for Distributor {
    fn name(&self) -> &'static str {
        "gicd"
    }

    fn read(&mut self, vcpu: VcpuId, at: u64, size: AccessSize) -> u64 {
        let mut vgic = self.0.lock();
        match at {
            offset::CTLR => CTLR_ARE | if vgic.group1_enabled { CTLR_ENABLE_GRP1 } else { 0 },
            offset::TYPER => {
                // IDbits (23:19) = 9: 10-bit INTIDs; CPUNumber (7:5); ITLinesNumber (4:0).
                let cpus = (vgic.vcpu_count() as u64 - 1).min(7);
                (9 << 19) | (cpus << 5) | u64::from(vgic.line_count() / 32 - 1)
            }
            offset::IIDR => IIDR,
            offset::PIDR2 => PIDR2_GICV3,
            a if (offset::IGROUPR..offset::ISENABLER).contains(&a) => {
                // Every interrupt the partition owns is Group 1.
                spi_bits(&mut vgic, vcpu, a - offset::IGROUPR, |_| true)
            }
            a if (offset::ISENABLER..offset::ISPENDR).contains(&a) => {
                spi_bits(&mut vgic, vcpu, (a - offset::ISENABLER) % 0x80, |i| i.enabled)
            }
            a if (offset::ISPENDR..offset::ISACTIVER).contains(&a) => {
                spi_bits(&mut vgic, vcpu, (a - offset::ISPENDR) % 0x80, |i| i.pending)
            }
            // Active state lives in the list registers; reported as inactive.
            a if (offset::ISACTIVER..offset::ICACTIVER_END).contains(&a) => 0,
            a if (offset::IPRIORITYR..offset::IPRIORITYR_END).contains(&a) => {
                let first = (a - offset::IPRIORITYR) as u32;
                let mut value = 0;
                for byte in 0..size.bytes() as u32 {
                    if first + byte >= FIRST_SPI {
                        value |= u64::from(vgic.priority(vcpu, first + byte)) << (8 * byte);
                    }
                }
                value
            }
            a if (offset::ICFGR..offset::ICFGR_END).contains(&a) => {
                let first = ((a - offset::ICFGR) / 4 * 16) as u32;
                let mut value = 0;
                for i in 0..16 {
                    if let Some(spi) = vgic.spi(first + i)
                        && spi.irq.edge
                    {
                        value |= 0b10 << (2 * i);
                    }
                }
                value
            }
            a if (offset::IROUTER..offset::IROUTER_END).contains(&a) => {
                let intid = ((a - offset::IROUTER) / 8) as u32;
                let route = vgic.spi(intid).map_or(0, |s| s.route);
                if a % 8 == 4 { route >> 32 } else { route }
            }
            _ => 0,
        }
    }

    fn write(&mut self, vcpu: VcpuId, at: u64, size: AccessSize, value: u64) {
        let mut vgic = self.0.lock();
        let word = value as u32;
        match at {
            offset::CTLR => vgic.group1_enabled = value & CTLR_ENABLE_GRP1 != 0,
            a if (offset::ISENABLER..offset::ICENABLER).contains(&a) => {
                write_spi_bits(&mut vgic, vcpu, a - offset::ISENABLER, word, true, |i| i.enabled = true)
            }
            a if (offset::ICENABLER..offset::ISPENDR).contains(&a) => {
                write_spi_bits(&mut vgic, vcpu, a - offset::ICENABLER, word, false, |i| i.enabled = false)
            }
            a if (offset::ISPENDR..offset::ICPENDR).contains(&a) => {
                write_spi_bits(&mut vgic, vcpu, a - offset::ISPENDR, word, true, |i| i.pending = true)
            }
            a if (offset::ICPENDR..offset::ISACTIVER).contains(&a) => {
                write_spi_bits(&mut vgic, vcpu, a - offset::ICPENDR, word, false, |i| i.pending = false)
            }
            a if (offset::IPRIORITYR..offset::IPRIORITYR_END).contains(&a) => {
                let first = (a - offset::IPRIORITYR) as u32;
                for byte in 0..size.bytes() as u32 {
                    if first + byte >= FIRST_SPI
                        && let Some(irq) = vgic.irq_mut(vcpu, first + byte)
                    {
                        irq.priority = (value >> (8 * byte)) as u8;
                    }
                }
            }
            a if (offset::ICFGR..offset::ICFGR_END).contains(&a) => {
                let first = ((a - offset::ICFGR) / 4 * 16) as u32;
                for i in 0..16 {
                    if first + i >= FIRST_SPI
                        && let Some(irq) = vgic.irq_mut(vcpu, first + i)
                    {
                        irq.edge = word & (0b10 << (2 * i)) != 0;
                    }
                }
            }
            a if (offset::IROUTER..offset::IROUTER_END).contains(&a) => {
                let intid = ((a - offset::IROUTER) / 8) as u32;
                if let Some(spi) = vgic.spis.get_mut(&intid) {
                    spi.route = match (a % 8, size) {
                        (0, AccessSize::Double) => value,
                        (0, _) => (spi.route & !0xffff_ffff) | u64::from(word),
                        _ => (spi.route & 0xffff_ffff) | (u64::from(word) << 32),
                    };
                }
            }
            // IGROUPR (all Group 1), active state, IGRPMODR, NSACR: ignored.
            _ => {}
        }
    }
}

/// A bit-per-INTID register of SPIs; word 0 (SGIs/PPIs) is RAZ in
/// affinity-routing mode.
fn spi_bits(vgic: &mut Vgic, vcpu: usize, byte_offset: u64, get: fn(&super::IrqState) -> bool) -> u64 {
    let first = (byte_offset / 4 * 32) as u32;
    if first < FIRST_SPI { 0 } else { read_bits(vgic, vcpu, first, get) }
}

fn write_spi_bits(
    vgic: &mut Vgic,
    vcpu: usize,
    byte_offset: u64,
    value: u32,
    setting: bool,
    apply: fn(&mut super::IrqState),
) {
    let first = (byte_offset / 4 * 32) as u32;
    if first >= FIRST_SPI {
        write_bits(vgic, vcpu, first, value, setting, apply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gicd(spis: &[u32]) -> (Distributor, Arc<Mutex<Vgic>>) {
        let vgic = Arc::new(Mutex::new(Vgic::new(2, spis)));
        (Distributor(vgic.clone()), vgic)
    }

    #[test]
    fn identification_and_control() {
        let (mut d, vgic) = gicd(&[40]);
        assert_eq!(d.read(0, offset::PIDR2, AccessSize::Word) >> 4 & 0xf, 3, "GICv3");
        let typer = d.read(0, offset::TYPER, AccessSize::Word);
        assert_eq!(typer & 0x1f, 1, "64 INTIDs");
        assert_eq!((typer >> 19) & 0x1f, 9);
        assert_eq!(d.read(0, offset::CTLR, AccessSize::Word), CTLR_ARE);
        d.write(0, offset::CTLR, AccessSize::Word, 0x12);
        assert!(vgic.lock().group1_enabled);
        assert_eq!(d.read(0, offset::CTLR, AccessSize::Word), 0x12, "RWP reads as zero");
    }

    #[test]
    fn owned_spis_are_configurable_and_others_read_as_zero() {
        let (mut d, vgic) = gicd(&[40]);
        // ISENABLER1 covers INTIDs 32..64: set all, only 40 sticks.
        d.write(0, offset::ISENABLER + 4, AccessSize::Word, u64::from(u32::MAX));
        assert_eq!(d.read(0, offset::ISENABLER + 4, AccessSize::Word), 1 << 8);
        assert_eq!(d.read(0, offset::IGROUPR + 4, AccessSize::Word), 1 << 8);
        assert!(vgic.lock().foreign_accesses >= 31, "enabling another's SPIs is noted");
        let before = vgic.lock().foreign_accesses;
        d.write(0, offset::ICENABLER + 4, AccessSize::Word, u64::from(u32::MAX) & !(1 << 8));
        assert_eq!(vgic.lock().foreign_accesses, before, "disabling them is not");
        d.write(0, offset::ICENABLER + 4, AccessSize::Word, 1 << 8);
        assert_eq!(d.read(0, offset::ISENABLER + 4, AccessSize::Word), 0);
        d.write(0, offset::ISENABLER, AccessSize::Word, u64::from(u32::MAX));
        assert_eq!(d.read(0, offset::ISENABLER, AccessSize::Word), 0, "private word is RAZ/WI");
        d.write(0, offset::IPRIORITYR + 40, AccessSize::Byte, 0x80);
        assert_eq!(d.read(0, offset::IPRIORITYR + 40, AccessSize::Word), 0x80);
        d.write(0, offset::IPRIORITYR + 44, AccessSize::Word, 0xffff_ffff);
        assert_eq!(d.read(0, offset::IPRIORITYR + 44, AccessSize::Word), 0, "not owned");
        d.write(0, offset::ICFGR + 8, AccessSize::Word, 0b10 << 16);
        assert!(vgic.lock().spi(40).unwrap().irq.edge);
        assert_eq!(d.read(0, offset::ICFGR + 8, AccessSize::Word), 0b10 << 16);
        d.write(0, offset::IROUTER + 40 * 8, AccessSize::Double, 1);
        assert_eq!(vgic.lock().spi(40).unwrap().route, 1);
        assert_eq!(d.read(0, offset::IROUTER + 40 * 8, AccessSize::Double), 1);
        d.write(0, offset::ISPENDR + 4, AccessSize::Word, 1 << 8);
        assert_eq!(d.read(0, offset::ISPENDR + 4, AccessSize::Word), 1 << 8);
    }
}
