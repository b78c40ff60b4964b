//! A minimal GICv3 driver for test guests: the distributor and this vCPU's
//! redistributor at the QEMU `virt` addresses the hypervisor emulates, and
//! the (virtual) CPU interface through system registers.

use core::sync::atomic::{AtomicUsize, Ordering};

/// The distributor (`bulkhead_config::VGIC_DISTRIBUTOR_BASE`).
pub const GICD: u64 = 0x0800_0000;
/// vCPU 0's redistributor (`bulkhead_config::VGIC_REDISTRIBUTOR_BASE`).
pub const GICR: u64 = 0x080a_0000;
const GICR_SGI: u64 = GICR + 0x1_0000;

/// An interrupt handler: called with the acknowledged INTID.
pub type Handler = fn(u32);

static HANDLER: AtomicUsize = AtomicUsize::new(0);

fn read32(address: u64) -> u32 {
    // SAFETY: GIC registers at the addresses the hypervisor emulates.
    unsafe { core::ptr::read_volatile(address as *const u32) }
}

fn write32(address: u64, value: u32) {
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(address as *mut u32, value) }
}

/// `GICD_PIDR2.ArchRev`.
pub fn architecture_revision() -> u32 {
    (read32(GICD + 0xffe8) >> 4) & 0xf
}

/// `GICD_TYPER`.
pub fn distributor_type() -> u32 {
    read32(GICD + 0x4)
}

/// Enables Group 1 at the distributor, wakes this vCPU's redistributor, and
/// enables the CPU interface with `handler` for every interrupt.
pub fn init(handler: Handler) -> Result<(), &'static str> {
    HANDLER.store(handler as usize, Ordering::SeqCst);
    write32(GICD, 0x12);
    write32(GICR + 0x14, 0);
    let mut polls = 0;
    while read32(GICR + 0x14) & 0b100 != 0 {
        polls += 1;
        if polls > 1_000_000 {
            return Err("redistributor did not wake");
        }
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: configuring the (virtual) CPU interface of this vCPU.
    unsafe {
        core::arch::asm!(
            "mrs {t}, icc_sre_el1",
            "orr {t}, {t}, #1",
            "msr icc_sre_el1, {t}",
            "isb",
            "msr icc_pmr_el1, {pmr}",
            "msr icc_igrpen1_el1, {one}",
            "isb",
            t = out(reg) _,
            pmr = in(reg) 0xffu64,
            one = in(reg) 1u64,
            options(nostack),
        );
    }
    Ok(())
}

/// Enables SGI or PPI `intid` with `priority` on this vCPU.
pub fn enable_private(intid: u32, priority: u8) {
    let shift = 8 * (intid % 4);
    let register = GICR_SGI + 0x400 + u64::from(intid / 4) * 4;
    write32(register, (read32(register) & !(0xff << shift)) | (u32::from(priority) << shift));
    write32(GICR_SGI + 0x100, 1 << intid);
}

/// Sets SPI `intid`'s priority at the distributor (`GICD_IPRIORITYR<n>`).
pub fn set_spi_priority(intid: u32, priority: u8) {
    let shift = 8 * (intid % 4);
    let register = GICD + 0x400 + u64::from(intid / 4) * 4;
    write32(register, (read32(register) & !(0xff << shift)) | (u32::from(priority) << shift));
}

/// Tries to enable SPI `intid` at the distributor; returns whether it reads
/// back as enabled (never, for an SPI the partition does not own).
pub fn try_enable_spi(intid: u32) -> bool {
    let register = GICD + 0x100 + u64::from(intid / 32) * 4;
    write32(register, 1 << (intid % 32));
    read32(register) & (1 << (intid % 32)) != 0
}

/// Disables SPI `intid` at the distributor (`GICD_ICENABLER<n>`).
pub fn disable_spi(intid: u32) {
    write32(GICD + 0x180 + u64::from(intid / 32) * 4, 1 << (intid % 32));
}

/// Whether `intid` is enabled on this vCPU (`GICR_ISENABLER0`).
pub fn private_enabled(intid: u32) -> bool {
    read32(GICR_SGI + 0x100) & (1 << intid) != 0
}

/// Sends SGI `intid` to this partition's vCPUs in `targets` (Aff0 bits).
pub fn send_sgi(intid: u8, targets: u16) {
    let value = (u64::from(intid & 0xf) << 24) | u64::from(targets);
    #[cfg(target_arch = "aarch64")]
    // SAFETY: generating an SGI; the hypervisor traps and emulates it.
    unsafe {
        core::arch::asm!("msr icc_sgi1r_el1, {}", "isb", in(reg) value, options(nostack));
    }
    #[cfg(not(target_arch = "aarch64"))]
    let _ = value;
}

/// Unmasks IRQs at EL1.
pub fn enable_irqs() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the vectors handle IRQs.
    unsafe {
        core::arch::asm!("msr daifclr, #2", "isb", options(nostack));
    }
}

/// Masks IRQs at EL1.
pub fn disable_irqs() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: masking IRQs only delays them.
    unsafe {
        core::arch::asm!("msr daifset, #2", "isb", options(nostack));
    }
}

/// Waits for an interrupt.
pub fn wait_for_interrupt() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: WFI only waits.
    unsafe {
        core::arch::asm!("wfi", options(nostack));
    }
}

/// Called from the IRQ vector: acknowledge, handle, end.
pub fn handle_irq() {
    #[cfg(target_arch = "aarch64")]
    {
        let intid: u64;
        // SAFETY: acknowledging the virtual interrupt that caused this IRQ.
        unsafe { core::arch::asm!("mrs {}, icc_iar1_el1", out(reg) intid, options(nostack)) };
        let intid = (intid & 0xff_ffff) as u32;
        if intid >= 1020 {
            return;
        }
        let handler = HANDLER.load(Ordering::SeqCst);
        if handler != 0 {
            // SAFETY: only `init` stores here, and it stores a `Handler`.
            let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(handler) };
            handler(intid);
        }
        // SAFETY: ending the interrupt acknowledged above.
        unsafe { core::arch::asm!("msr icc_eoir1_el1, {}", "isb", in(reg) u64::from(intid), options(nostack)) };
    }
}

/// Programs the EL1 virtual timer to fire in `ticks` counter ticks.
pub fn arm_virtual_timer(ticks: u64) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the virtual timer belongs to this vCPU.
    unsafe {
        core::arch::asm!("msr cntv_tval_el0, {}", "msr cntv_ctl_el0, {one}", "isb", in(reg) ticks, one = in(reg) 1u64, options(nostack));
    }
    #[cfg(not(target_arch = "aarch64"))]
    let _ = ticks;
}

/// Stops the EL1 virtual timer.
pub fn stop_virtual_timer() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("msr cntv_ctl_el0, xzr", "isb", options(nostack));
    }
}
