//! The virtual GICv3 a partition sees: an emulated distributor and
//! redistributors over the state of the partition's own interrupts.
//!
//! The guest's CPU interface is the hardware's virtual interface (the
//! hypervisor fills its list registers); what is emulated here is the
//! memory-mapped part: `GICD_*` ([`distributor`]) and `GICR_*`
//! ([`redistributor`]). A partition owns the SGIs and PPIs of its vCPUs and
//! the SPIs its configuration assigns; every other INTID reads as zero and
//! ignores writes, and the first such access is logged.
//!
//! Not emulated: LPIs and ITS, Group 0 (everything is Group 1), the
//! legacy (non-affinity-routed) mode, and `GICD_SGIR`.

pub mod distributor;
pub mod redistributor;

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

/// The first SPI.
pub const FIRST_SPI: u32 = 32;
/// `GICD_PIDR2` / `GICR_PIDR2`: ArchRev 3 (GICv3) in bits 7:4.
pub const PIDR2_GICV3: u64 = 0x3b;
/// `GICD_IIDR` / `GICR_IIDR`: implementer Arm (0x43b).
pub const IIDR: u64 = 0x43b;
/// Priority the guest reads before it writes one.
const RESET_PRIORITY: u8 = 0;

/// The state of one virtual interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IrqState {
    /// Enabled by the guest.
    pub enabled: bool,
    /// Pending, not yet given to the CPU interface.
    pub pending: bool,
    /// Priority (lower is more urgent).
    pub priority: u8,
    /// Edge-triggered (else level).
    pub edge: bool,
}

/// One vCPU's SGIs and PPIs, and its redistributor's own registers.
#[derive(Clone, Debug)]
pub struct PrivateState {
    /// INTIDs 0..32.
    pub irqs: [IrqState; 32],
    /// `GICR_WAKER.ProcessorSleep`.
    pub asleep: bool,
}

impl Default for PrivateState {
    fn default() -> Self {
        let mut irqs = [IrqState { priority: RESET_PRIORITY, ..IrqState::default() }; 32];
        // SGIs are always edge-triggered.
        for sgi in &mut irqs[..16] {
            sgi.edge = true;
        }
        PrivateState { irqs, asleep: true }
    }
}

/// A shared peripheral interrupt the partition owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SpiState {
    /// Common state.
    pub irq: IrqState,
    /// `GICD_IROUTER<n>`: the target affinity (or IRM, bit 31).
    pub route: u64,
}

/// The partition's virtual GIC state.
#[derive(Clone, Debug)]
pub struct Vgic {
    /// `GICD_CTLR.EnableGrp1A` as the guest set it.
    pub group1_enabled: bool,
    private: Vec<PrivateState>,
    spis: BTreeMap<u32, SpiState>,
    /// Highest INTID the distributor reports (from `GICD_TYPER`).
    line_count: u32,
    /// Accesses to INTIDs the partition does not own (for rate-limited logs).
    pub foreign_accesses: u32,
}

impl Vgic {
    /// A vGIC for `vcpus` vCPUs owning the SPIs `spis`.
    pub fn new(vcpus: usize, spis: &[u32]) -> Vgic {
        let highest = spis.iter().copied().max().unwrap_or(0).max(63);
        Vgic {
            group1_enabled: false,
            private: vec![PrivateState::default(); vcpus.max(1)],
            spis: spis
                .iter()
                .filter(|&&i| (FIRST_SPI..1020).contains(&i))
                .map(|&i| (i, SpiState::default()))
                .collect(),
            line_count: (highest / 32 + 1) * 32,
            foreign_accesses: 0,
        }
    }

    /// Back to reset state (a partition restarting), keeping which SPIs it owns.
    pub fn reset(&mut self) {
        let spis: Vec<u32> = self.spis.keys().copied().collect();
        *self = Vgic::new(self.private.len(), &spis);
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.private.len()
    }

    /// INTIDs below 1020 the distributor reports (a multiple of 32).
    pub fn line_count(&self) -> u32 {
        self.line_count
    }

    /// The state of a private interrupt of `vcpu`.
    pub fn private(&self, vcpu: usize, intid: u32) -> Option<&IrqState> {
        self.private.get(vcpu)?.irqs.get(intid as usize)
    }

    fn private_mut(&mut self, vcpu: usize, intid: u32) -> Option<&mut IrqState> {
        self.private.get_mut(vcpu)?.irqs.get_mut(intid as usize)
    }

    /// The state of an owned SPI.
    pub fn spi(&self, intid: u32) -> Option<&SpiState> {
        self.spis.get(&intid)
    }

    /// The state of interrupt `intid` as `vcpu` sees it (private INTIDs are
    /// per vCPU), if the partition owns it.
    pub fn irq_mut(&mut self, vcpu: usize, intid: u32) -> Option<&mut IrqState> {
        if intid < FIRST_SPI {
            self.private_mut(vcpu, intid)
        } else {
            self.spis.get_mut(&intid).map(|s| &mut s.irq)
        }
    }

    /// Makes SGI `sgi` pending on `target` (sent by the guest through
    /// `ICC_SGI1R_EL1`). Returns whether `target` exists.
    pub fn raise_sgi(&mut self, target: usize, sgi: u8) -> bool {
        match self.private_mut(target, u32::from(sgi & 0xf)) {
            Some(irq) => {
                irq.pending = true;
                true
            }
            None => false,
        }
    }

    /// Makes an owned SPI pending (an emulated device's interrupt).
    pub fn raise_spi(&mut self, intid: u32) -> bool {
        match self.spis.get_mut(&intid) {
            Some(spi) => {
                spi.irq.pending = true;
                true
            }
            None => false,
        }
    }

    /// The vCPU an SPI is routed to (Aff0 of `GICD_IROUTER`; vCPU 0 when the
    /// route names no vCPU of this partition).
    fn spi_target(&self, spi: &SpiState) -> usize {
        let aff0 = (spi.route & 0xff) as usize;
        if aff0 < self.private.len() { aff0 } else { 0 }
    }

    /// Takes the most urgent enabled pending interrupt for `vcpu` out of the
    /// pending state, to be put in a list register: `(intid, priority)`.
    /// Nothing is delivered while the guest has Group 1 disabled.
    pub fn take_pending(&mut self, vcpu: usize) -> Option<(u32, u8)> {
        if !self.group1_enabled {
            return None;
        }
        let mut best: Option<(u32, u8)> = None;
        let private = self.private.get(vcpu)?;
        for (intid, irq) in private.irqs.iter().enumerate() {
            if irq.enabled && irq.pending && best.is_none_or(|(_, p)| irq.priority < p) {
                best = Some((intid as u32, irq.priority));
            }
        }
        for (&intid, spi) in &self.spis {
            if spi.irq.enabled && spi.irq.pending && self.spi_target(spi) == vcpu && best.is_none_or(|(_, p)| spi.irq.priority < p) {
                best = Some((intid, spi.irq.priority));
            }
        }
        let (intid, priority) = best?;
        if let Some(irq) = self.irq_mut(vcpu, intid) {
            irq.pending = false;
        }
        Some((intid, priority))
    }

    /// Whether `vcpu` has an enabled pending interrupt waiting.
    pub fn has_pending(&self, vcpu: usize) -> bool {
        self.group1_enabled
            && (self.private.get(vcpu).is_some_and(|p| p.irqs.iter().any(|i| i.enabled && i.pending))
                || self.spis.values().any(|s| s.irq.enabled && s.irq.pending && self.spi_target(s) == vcpu))
    }

    /// Whether the guest has enabled private interrupt `intid` on `vcpu`.
    pub fn private_enabled(&self, vcpu: usize, intid: u32) -> bool {
        self.private(vcpu, intid).is_some_and(|i| i.enabled)
    }

    /// The priority of `intid` as `vcpu` sees it (0 when not owned).
    pub fn priority(&self, vcpu: usize, intid: u32) -> u8 {
        if intid < FIRST_SPI {
            self.private(vcpu, intid).map_or(0, |i| i.priority)
        } else {
            self.spi(intid).map_or(0, |s| s.irq.priority)
        }
    }
}

/// Foreign-interrupt writes logged per partition before going quiet.
const FOREIGN_LOG_LIMIT: u32 = 4;

/// Applies a 32-bit set-enable / clear-enable / set-pending / clear-pending
/// write over INTIDs `first..first + 32`, to the interrupts `vcpu` owns;
/// bits for interrupts the partition does not own are ignored, and logged
/// when `setting` (enabling or raising another's interrupt; clearing them is
/// what every guest's start-up does and harms nobody).
pub(crate) fn write_bits(vgic: &mut Vgic, vcpu: usize, first: u32, value: u32, setting: bool, apply: fn(&mut IrqState)) {
    for bit in 0..32 {
        if value & (1 << bit) != 0 {
            match vgic.irq_mut(vcpu, first + bit) {
                Some(irq) => apply(irq),
                None if setting => vgic.note_foreign(first + bit),
                None => {}
            }
        }
    }
}

impl Vgic {
    /// Records a write to an interrupt the partition does not own.
    pub(crate) fn note_foreign(&mut self, intid: u32) {
        self.foreign_accesses = self.foreign_accesses.saturating_add(1);
        if self.foreign_accesses <= FOREIGN_LOG_LIMIT {
            log::warn!("vGIC: write to INTID {intid}, which is not this partition's: ignored");
        }
    }
}

/// Reads one state bit of INTIDs `first..first + 32` as `vcpu` sees them.
pub(crate) fn read_bits(vgic: &mut Vgic, vcpu: usize, first: u32, get: fn(&IrqState) -> bool) -> u64 {
    let mut value = 0u64;
    for bit in 0..32 {
        if vgic.irq_mut(vcpu, first + bit).is_some_and(|irq| get(irq)) {
            value |= 1 << bit;
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_interrupts_come_out_most_urgent_first_and_only_when_enabled() {
        let mut vgic = Vgic::new(2, &[40, 41]);
        assert!(vgic.raise_sgi(1, 3));
        assert!(!vgic.raise_sgi(2, 3), "no vCPU 2");
        assert!(vgic.raise_spi(40));
        assert!(!vgic.raise_spi(42), "not the partition's");
        assert_eq!(vgic.take_pending(1), None, "group 1 disabled");
        vgic.group1_enabled = true;
        assert_eq!(vgic.take_pending(1), None, "SGI 3 not enabled");
        vgic.irq_mut(1, 3).unwrap().enabled = true;
        vgic.irq_mut(1, 3).unwrap().priority = 0x80;
        vgic.irq_mut(0, 40).unwrap().enabled = true;
        vgic.irq_mut(0, 40).unwrap().priority = 0x40;
        assert!(vgic.has_pending(1));
        assert_eq!(vgic.take_pending(1), Some((3, 0x80)));
        assert_eq!(vgic.take_pending(1), None);
        assert_eq!(vgic.take_pending(0), Some((40, 0x40)), "SPI routed to vCPU 0 by default");
        assert!(!vgic.has_pending(0));
    }

    #[test]
    fn distributor_reports_enough_lines_for_its_spis() {
        assert_eq!(Vgic::new(1, &[]).line_count(), 64);
        assert_eq!(Vgic::new(1, &[100]).line_count(), 128);
    }
}
