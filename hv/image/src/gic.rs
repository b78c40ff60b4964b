//! The physical GIC, owned by the hypervisor: the distributor, each CPU's
//! redistributor and CPU interface, and the interrupts the hypervisor itself
//! uses (the maintenance interrupt and the SGI that wakes another CPU).

use crate::platform::Platform;
use bulkhead_arch_aarch64::gic::{self, ICH_HCR_EN, MAINTENANCE_INTID};
use bulkhead_drivers::gicv3::{Gicd, Gicr};
use spin::Once;

/// Most CPUs the hypervisor drives.
pub const MAX_CPUS: usize = 16;
/// The SGI one CPU sends another to make it look at its vCPU's pending
/// virtual interrupts.
pub const KICK_SGI: u32 = 0;
/// `ICC_SRE_EL2`: SRE (0), DFB (1), DIB (2), Enable (3, lets EL1 use the
/// system-register interface).
const ICC_SRE_EL2_VALUE: u64 = 0b1111;
/// `ICC_CTLR_EL1.EOImode` (1): EOI only drops priority; deactivation is
/// separate, so a guest's deactivation of a HW list register completes it.
const ICC_CTLR_EOIMODE: u64 = 1 << 1;

static GICD: Once<Gicd> = Once::new();
static GICR: [Once<Gicr>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];

/// Initializes the distributor (once, on the boot CPU).
pub fn init_distributor(platform: &Platform) {
    let Some(((gicd, _), _)) = platform.gic else { return };
    // SAFETY: the device tree names this distributor; the hypervisor's map
    // covers it as Device memory, and only the hypervisor drives it.
    let driver = GICD.call_once(|| unsafe { Gicd::new(gicd as usize) });
    match driver.init() {
        Ok(()) => log::info!("GIC distributor ready: {} interrupt lines", driver.line_count()),
        Err(e) => log::error!("GIC distributor: {e:?}"),
    }
}

/// Initializes this CPU's redistributor and CPU interface.
pub fn init_cpu(platform: &Platform, cpu: usize, mpidr: u64) {
    let Some((_, (gicr, gicr_size))) = platform.gic else { return };
    if cpu >= MAX_CPUS {
        log::error!("CPU {cpu}: beyond the {MAX_CPUS} CPUs the hypervisor supports; no interrupts");
        return;
    }
    // SAFETY: as for the distributor, the region is the device tree's.
    let redistributor = match unsafe { Gicr::find(gicr as usize, gicr_size as usize, mpidr) } {
        Ok(r) => r,
        Err(e) => {
            log::error!("CPU {cpu}: {e:?}");
            return;
        }
    };
    if let Err(e) = redistributor.init() {
        log::error!("CPU {cpu}: redistributor: {e:?}");
        return;
    }
    redistributor.enable_private(MAINTENANCE_INTID);
    redistributor.enable_private(KICK_SGI);
    GICR[cpu].call_once(|| redistributor);
    gic::write_icc_sre_el2(gic::read_icc_sre_el2() | ICC_SRE_EL2_VALUE);
    gic::write_icc_pmr_el1(0xff);
    gic::write_icc_ctlr_el1(gic::read_icc_ctlr_el1() | ICC_CTLR_EOIMODE);
    gic::write_icc_igrpen1_el1(1);
    for lr in 0..gic::list_register_count() {
        gic::write_lr(lr, 0);
    }
    gic::write_ich_vmcr_el2(0);
    gic::write_ich_hcr_el2(ICH_HCR_EN);
    // A CPU brought up after the ITS takes LPIs too (the boot CPU's are
    // enabled by `msi::init`, which runs after this).
    crate::msi::enable_on_cpu(cpu);
}

/// Runs `f` on CPU `cpu`'s redistributor, if it was initialized.
pub fn with_redistributor<R>(cpu: usize, f: impl FnOnce(&Gicr) -> R) -> Option<R> {
    GICR.get(cpu).and_then(|r| r.get()).map(f)
}

/// Routes SPI `intid` to the CPU with affinity `mpidr` and enables it.
pub fn route_spi(intid: u32, mpidr: u64) {
    if let Some(distributor) = GICD.get() {
        distributor.enable_spi(intid, mpidr);
    }
}

/// Makes SPI `intid` edge-triggered or level-sensitive; call it before
/// [`route_spi`] (the SPI must be disabled while its trigger changes).
pub fn set_edge_triggered(intid: u32, edge: bool) {
    if let Some(distributor) = GICD.get() {
        distributor.disable_spi(intid);
        distributor.set_edge_triggered(intid, edge);
    }
}

/// Masks or unmasks an SPI at the distributor.
pub fn set_spi(intid: u32, enabled: bool) {
    if let Some(distributor) = GICD.get() {
        if enabled {
            distributor.unmask_spi(intid);
        } else {
            distributor.disable_spi(intid);
        }
    }
}

/// Enables or disables a private interrupt on this CPU.
pub fn set_private(cpu: usize, intid: u32, enabled: bool) {
    if let Some(redistributor) = GICR.get(cpu).and_then(|r| r.get()) {
        if enabled {
            redistributor.enable_private(intid);
        } else {
            redistributor.disable_private(intid);
        }
    }
}

/// Sends the kick SGI to the CPU with affinity `mpidr`.
pub fn kick(mpidr: u64) {
    let aff0 = (mpidr & 0xff) as u16;
    if aff0 < 16 {
        gic::send_sgi(gic::sgi1r(
            KICK_SGI as u8,
            (mpidr >> 32) as u8,
            (mpidr >> 16) as u8,
            (mpidr >> 8) as u8,
            1 << aff0,
        ));
    }
}
