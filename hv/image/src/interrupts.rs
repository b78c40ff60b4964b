//! A vCPU's interrupts: physical interrupts taken while it runs, virtual
//! interrupts put into the list registers before it runs again, and SGIs
//! it sends.
//!
//! The EL1 virtual timer is a hardware interrupt: its physical PPI is
//! forwarded through a list register with the HW bit, so the guest's
//! deactivation completes the physical one. While the guest has the
//! virtual PPI disabled, the physical one is disabled too. Everything else
//! (SGIs between vCPUs, emulated devices' SPIs) is a software interrupt
//! taken from the [`Vgic`] state.

use crate::gic::{self, KICK_SGI};
use alloc::sync::Arc;
use alloc::vec::Vec;
use bulkhead_arch_aarch64::gic::{
    self as cpu_if, ICH_HCR_EN, ICH_HCR_UIE, LrState, ListRegister, MAINTENANCE_INTID, SgiRequest,
    VIRTUAL_TIMER_INTID,
};
use bulkhead_core::devices::pl011::UartState;
use bulkhead_core::vgic::Vgic;
use spin::Mutex;

/// Unexpected physical interrupts logged per vCPU before going quiet.
const UNEXPECTED_LOG_LIMIT: u32 = 4;
/// Physical interrupts handled in one exit at most.
const IRQS_PER_EXIT: usize = 16;

/// One vCPU's interrupt plumbing on the CPU that runs it.
pub struct VcpuInterrupts {
    /// The partition's virtual GIC.
    pub vgic: Arc<Mutex<Vgic>>,
    /// This vCPU's index in the partition.
    pub vcpu: usize,
    /// The physical CPU that runs it.
    pub cpu: usize,
    /// Affinity of the physical CPU running each vCPU of the partition.
    pub vcpu_mpidrs: Vec<u64>,
    list_registers: usize,
    vtimer_physically_enabled: bool,
    unexpected: u32,
    /// For the vCPU that receives console input: the physical console
    /// interrupt, the emulated UART it feeds, and that UART's SPI.
    pub console_input: Option<ConsoleInput>,
    /// SPIs of passed-through devices delivered to this vCPU, each with
    /// whether it is unmasked at the physical distributor.
    pub passthrough_spis: Vec<(u32, bool)>,
}

/// Console input routed to one vCPU's emulated UART.
pub struct ConsoleInput {
    /// The physical console UART's INTID.
    pub physical_intid: u32,
    /// The emulated UART's state.
    pub uart: Arc<Mutex<UartState>>,
    /// The emulated UART's SPI in the partition's vGIC.
    pub virtual_intid: u32,
}

impl VcpuInterrupts {
    /// Plumbing for `vcpu` running on `cpu`.
    pub fn new(vgic: Arc<Mutex<Vgic>>, vcpu: usize, cpu: usize, vcpu_mpidrs: Vec<u64>) -> VcpuInterrupts {
        VcpuInterrupts {
            vgic,
            vcpu,
            cpu,
            vcpu_mpidrs,
            list_registers: cpu_if::list_register_count().min(16),
            vtimer_physically_enabled: false,
            unexpected: 0,
            console_input: None,
            passthrough_spis: Vec::new(),
        }
    }

    /// Handles the physical interrupts pending after an IRQ exit (a bounded
    /// number: a level interrupt that stays asserted waits for the next exit
    /// instead of holding the CPU here).
    pub fn on_irq_exit(&mut self, partition: &str) {
        for _ in 0..IRQS_PER_EXIT {
            let intid = cpu_if::acknowledge();
            if cpu_if::is_special_intid(intid) {
                break;
            }
            if intid == MAINTENANCE_INTID {
                // The underflow condition is level: drop UIE first, or the
                // interrupt is pending again the moment it is completed.
                // `before_entry` sets it again if interrupts still wait.
                cpu_if::write_ich_hcr_el2(ICH_HCR_EN);
            }
            cpu_if::end_of_interrupt(intid);
            match intid {
                VIRTUAL_TIMER_INTID => self.forward_timer(),
                i if self.console_input.as_ref().is_some_and(|c| c.physical_intid == i) => {
                    if let Some(input) = &self.console_input {
                        let mut uart = input.uart.lock();
                        while let Some(byte) = crate::console::read_input() {
                            // A full FIFO drops the byte, as the real UART does.
                            uart.push_input(byte);
                        }
                    }
                    cpu_if::deactivate(i);
                }
                MAINTENANCE_INTID | KICK_SGI => cpu_if::deactivate(intid),
                i if crate::iommu::owns_interrupt(i) => {
                    crate::iommu::service("interrupt");
                    cpu_if::deactivate(i);
                }
                i if self.passthrough_spis.iter().any(|&(spi, _)| spi == i) => self.forward_spi(i),
                // An LPI (a PCI MSI through the ITS): no active state, so
                // nothing to deactivate; an unclaimed one is logged there.
                i if crate::msi::is_lpi(i) => {
                    crate::msi::dispatch(i);
                }
                other => {
                    cpu_if::deactivate(other);
                    self.unexpected = self.unexpected.saturating_add(1);
                    if self.unexpected <= UNEXPECTED_LOG_LIMIT {
                        log::warn!("partition {partition}: physical interrupt {other} is nobody's; ignored");
                    }
                }
            }
        }
    }

    fn forward_timer(&mut self) {
        let (enabled, priority) = {
            let vgic = self.vgic.lock();
            (vgic.private_enabled(self.vcpu, VIRTUAL_TIMER_INTID), vgic.priority(self.vcpu, VIRTUAL_TIMER_INTID))
        };
        let free = self.free_list_register();
        match (enabled, free) {
            (true, Some(lr)) if !self.held(VIRTUAL_TIMER_INTID) => {
                let entry = ListRegister {
                    vintid: VIRTUAL_TIMER_INTID,
                    pintid: Some(VIRTUAL_TIMER_INTID),
                    priority,
                    state: LrState::Pending,
                };
                cpu_if::write_lr(lr, entry.encode());
            }
            (true, _) => {
                // No room (or already there): deactivate; the level-triggered
                // timer fires again once the guest has taken the others.
                cpu_if::deactivate(VIRTUAL_TIMER_INTID);
            }
            (false, _) => {
                cpu_if::deactivate(VIRTUAL_TIMER_INTID);
                gic::set_private(self.cpu, VIRTUAL_TIMER_INTID, false);
                self.vtimer_physically_enabled = false;
            }
        }
    }

    /// A passed-through device's SPI: into a HW list register when the guest
    /// has it enabled (its deactivation completes the physical one); else
    /// masked at the distributor until the guest enables it.
    fn forward_spi(&mut self, intid: u32) {
        let (enabled, priority) = {
            let vgic = self.vgic.lock();
            (vgic.spi(intid).is_some_and(|s| s.irq.enabled), vgic.priority(self.vcpu, intid))
        };
        match (enabled, self.free_list_register()) {
            (true, Some(lr)) if !self.held(intid) => {
                let entry = ListRegister { vintid: intid, pintid: Some(intid), priority, state: LrState::Pending };
                cpu_if::write_lr(lr, entry.encode());
            }
            _ => {
                cpu_if::deactivate(intid);
                gic::set_spi(intid, false);
                if let Some(entry) = self.passthrough_spis.iter_mut().find(|(spi, _)| *spi == intid) {
                    entry.1 = false;
                }
            }
        }
    }

    fn free_list_register(&self) -> Option<usize> {
        let empty = cpu_if::empty_list_registers();
        (0..self.list_registers).find(|&lr| empty & (1 << lr) != 0)
    }

    /// Whether a list register already holds `vintid`.
    fn held(&self, vintid: u32) -> bool {
        let empty = cpu_if::empty_list_registers();
        (0..self.list_registers)
            .filter(|&lr| empty & (1 << lr) == 0)
            .any(|lr| ListRegister::decode(cpu_if::read_lr(lr)).vintid == vintid)
    }

    /// Before entering the guest: mirror the timer's enable into the physical
    /// GIC and move pending virtual interrupts into free list registers,
    /// asking for a maintenance interrupt when some do not fit.
    pub fn before_entry(&mut self) {
        let mut vgic = self.vgic.lock();
        let timer_wanted = vgic.private_enabled(self.vcpu, VIRTUAL_TIMER_INTID);
        if timer_wanted != self.vtimer_physically_enabled {
            gic::set_private(self.cpu, VIRTUAL_TIMER_INTID, timer_wanted);
            self.vtimer_physically_enabled = timer_wanted;
        }
        // Passed-through SPIs: unmasked physically while the guest has them
        // enabled (one masked for want of a list register comes back here).
        for (intid, unmasked) in &mut self.passthrough_spis {
            let wanted = vgic.spi(*intid).is_some_and(|s| s.irq.enabled);
            if wanted != *unmasked {
                gic::set_spi(*intid, wanted);
                *unmasked = wanted;
            }
        }
        // The emulated UART's line is level-triggered: while it is high and
        // its SPI is neither pending nor in a list register, raise it again.
        if let Some(input) = &self.console_input
            && input.uart.lock().interrupt_level()
            && !self.held(input.virtual_intid)
        {
            vgic.raise_spi(input.virtual_intid);
        }
        let mut waiting = false;
        while vgic.has_pending(self.vcpu) {
            let Some(lr) = self.free_list_register() else {
                waiting = true;
                break;
            };
            let Some((intid, priority)) = vgic.take_pending(self.vcpu) else { break };
            if self.held(intid) {
                // Still in a list register: an edge interrupt raised again
                // before the guest took it merges with it.
                continue;
            }
            cpu_if::write_lr(lr, ListRegister { vintid: intid, pintid: None, priority, state: LrState::Pending }.encode());
        }
        cpu_if::write_ich_hcr_el2(if waiting { ICH_HCR_EN | ICH_HCR_UIE } else { ICH_HCR_EN });
    }

    /// A guest write of `ICC_SGI1R_EL1`: makes the SGI pending on each
    /// target vCPU of this partition and wakes the CPUs that run them.
    /// Targets outside the partition do not exist for it.
    pub fn send_sgi(&mut self, value: u64) {
        let request = SgiRequest::decode(value);
        let count = self.vcpu_mpidrs.len();
        let targets: Vec<usize> = if request.all_but_self {
            (0..count).filter(|&v| v != self.vcpu).collect()
        } else if request.affinity == 0 && request.range_selector == 0 {
            (0..count.min(16)).filter(|&v| request.target_list & (1 << v) != 0).collect()
        } else {
            Vec::new()
        };
        let mut vgic = self.vgic.lock();
        for target in targets {
            if vgic.raise_sgi(target, request.intid) && target != self.vcpu {
                gic::kick(self.vcpu_mpidrs[target]);
            }
        }
    }

    /// Clears every list register (a vCPU starting afresh on this CPU). A
    /// hardware interrupt still in one is deactivated, or its physical
    /// interrupt would stay active, and silent, for good.
    pub fn reset(&mut self) {
        for lr in 0..self.list_registers {
            let entry = ListRegister::decode(cpu_if::read_lr(lr));
            if entry.state != LrState::Invalid
                && let Some(pintid) = entry.pintid
            {
                cpu_if::deactivate(pintid);
            }
            cpu_if::write_lr(lr, 0);
        }
        cpu_if::write_ich_vmcr_el2(0);
        cpu_if::write_ich_hcr_el2(ICH_HCR_EN);
    }
}
