//! What the hypervisor learns about the machine from the boot information and
//! the device tree, and how a run ends.

use bulkhead_abi::boot::BootInfo;
use bulkhead_abi::exit::ExitCode;
use bulkhead_arch_aarch64::el2::{self, FirmwareState};
use bulkhead_arch_aarch64::semihosting;
use bulkhead_arch_aarch64::smp::PsciConduit;
use alloc::vec::Vec;
use bulkhead_core::bootargs::{BootArgs, ExitMethod};
use core::sync::atomic::{AtomicU8, Ordering};
use fdt::Fdt;

/// Facts about the machine.
pub struct Platform {
    /// The console PL011's register base, from `/chosen/stdout-path`.
    pub uart: Option<u64>,
    /// The root node is compatible with QEMU's `virt` machine.
    pub is_qemu_virt: bool,
    /// Boot arguments from the ESP.
    pub bootargs: Option<BootArgs>,
    /// EL2 state the firmware left.
    pub firmware: FirmwareState,
    /// Problems found while reading the device tree, logged once the console runs.
    pub notes: Vec<&'static str>,
    /// Affinity (`reg`) of every CPU in `/cpus`, in device-tree order: the
    /// index into this list is the CPU number configurations use.
    pub cpus: Vec<u64>,
    /// How PSCI calls reach the firmware, if the device tree says.
    pub psci: Option<PsciConduit>,
    /// The GICv3: distributor `(base, size)` and redistributor region `(base, size)`.
    pub gic: Option<((u64, u64), (u64, u64))>,
    /// The console UART's interrupt (an SPI's INTID), if the device tree names one.
    pub uart_intid: Option<u32>,
    /// The SMMUv3, if the device tree has one.
    pub smmu: Option<crate::iommu::SmmuNode>,
    /// The PCIe host bridge (ECAM), if the device tree has one.
    pub pci: Option<crate::iommu::PciHost>,
    /// The GICv3 ITS (`arm,gic-v3-its`), if the device tree has one.
    pub its: Option<ItsNode>,
}

/// The ITS's device-tree node.
#[derive(Clone, Copy, Debug)]
pub struct ItsNode {
    /// Control frame (the translation frame follows 64 KiB above).
    pub base: u64,
    /// Bytes of registers.
    pub size: u64,
    /// Its `phandle`, which `msi-map` entries name.
    pub phandle: Option<u32>,
}

/// The affinity fields of an MPIDR (Aff3, Aff2, Aff1, Aff0).
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// Compatible strings of the UARTs the console can drive.
const PL011_COMPATIBLE: &str = "arm,pl011";

impl Platform {
    /// Reads the device tree and boot arguments.
    pub fn discover(boot_info: &'static BootInfo) -> Platform {
        let mut platform = Platform {
            uart: None,
            is_qemu_virt: false,
            bootargs: None,
            firmware: el2::firmware_state(),
            notes: Vec::new(),
            cpus: Vec::new(),
            psci: None,
            gic: None,
            uart_intid: None,
            smmu: None,
            pci: None,
            its: None,
        };
        platform.bootargs = crate::loaded::bootargs(boot_info);
        if boot_info.device_tree.is_empty() {
            platform.notes.push("no device tree: no console");
            return platform;
        }
        let Ok(fdt) = Fdt::new(crate::loaded::device_tree(boot_info)) else {
            platform.notes.push("the device tree is malformed");
            return platform;
        };
        platform.is_qemu_virt = fdt
            .find_node("/")
            .and_then(|root| root.compatible())
            .is_some_and(|c| c.all().any(|s| s == "linux,dummy-virt"));
        platform.uart = stdout_uart(&fdt);
        platform.uart_intid = stdout_uart_intid(&fdt);
        platform.cpus = cpu_affinities(&fdt);
        platform.psci = fdt.find_node("/psci").and_then(|n| n.property("method")).and_then(|p| p.as_str()).and_then(|m| match m {
            "smc" => Some(PsciConduit::Smc),
            "hvc" => Some(PsciConduit::Hvc),
            _ => None,
        });
        if platform.cpus.is_empty() {
            platform.notes.push("no CPU in /cpus");
        }
        platform.gic = gicv3(&fdt);
        platform.smmu = crate::iommu::discover_smmu(&fdt);
        platform.pci = crate::iommu::discover_pci(&fdt);
        platform.its = its(&fdt);
        if platform.gic.is_none() {
            platform.notes.push("no GICv3 (compatible \"arm,gic-v3\"): partitions get no interrupts");
        }
        if platform.uart.is_none() {
            platform.notes.push("no PL011 named by /chosen/stdout-path");
        }
        platform
    }

    /// Whether the hypervisor's console can leave the UART (to semihosting,
    /// on QEMU), so that a partition may own the UART.
    pub fn console_movable(&self) -> bool {
        self.exit_method(&self.bootargs.clone().unwrap_or_default()) == ExitMethod::Semihosting
    }

    /// The CPU number of the calling CPU (its index in [`Platform::cpus`]).
    pub fn boot_cpu(&self) -> Option<usize> {
        let mpidr = self.firmware.mpidr & MPIDR_AFFINITY_MASK;
        self.cpus.iter().position(|&reg| reg == mpidr)
    }

    /// How the run should end: boot arguments first, then semihosting on
    /// QEMU `virt` and parking elsewhere.
    pub fn exit_method(&self, args: &BootArgs) -> ExitMethod {
        args.exit.unwrap_or(if self.is_qemu_virt { ExitMethod::Semihosting } else { ExitMethod::Park })
    }

    /// Logs what was found.
    pub fn log_summary(&self) {
        let fw = &self.firmware;
        log::info!(
            "boot CPU MPIDR {:#x}, EL{}, {}-bit physical addresses; firmware left HCR_EL2 {:#x} SCTLR_EL2 {:#x}",
            fw.mpidr,
            fw.current_el,
            fw.pa_bits,
            fw.hcr,
            fw.sctlr
        );
        log::info!("{} CPU(s) in the device tree, PSCI via {:?}", self.cpus.len(), self.psci);
        if let Some(((d, _), (r, r_size))) = self.gic {
            log::info!("GICv3: distributor at {d:#x}, redistributors at {r:#x} (+{r_size:#x})");
        }
        if let Some(uart) = self.uart {
            log::info!("console: PL011 at {uart:#x}");
        }
        if let Some(smmu) = &self.smmu {
            log::info!(
                "SMMUv3 at {:#x} (+{:#x}), event queue interrupt {:?}, global error interrupt {:?}",
                smmu.base,
                smmu.size,
                smmu.eventq_intid,
                smmu.gerror_intid
            );
        }
        if let Some(its) = &self.its {
            log::info!("GICv3 ITS at {:#x} (+{:#x})", its.base, its.size);
        }
        if let Some(pci) = &self.pci {
            log::info!(
                "PCIe: ECAM at {:#x} (+{:#x}), memory windows {:x?}, iommu-map {:x?}",
                pci.ecam,
                pci.ecam_size,
                pci.windows,
                pci.iommu_map.iter().map(|e| (e.rid_base, e.sid_base, e.length)).collect::<Vec<_>>()
            );
        }
        for note in &self.notes {
            log::warn!("device tree: {note}");
        }
    }
}

/// The register base of the PL011 that `/chosen/stdout-path` names (an alias
/// or a path, optionally followed by `:options`).
fn stdout_uart(fdt: &Fdt<'_>) -> Option<u64> {
    let chosen = fdt.find_node("/chosen")?;
    let path = chosen.property("stdout-path").or_else(|| chosen.property("linux,stdout-path"))?.as_str()?;
    let path = path.split(':').next()?;
    let node = if path.starts_with('/') {
        fdt.find_node(path)?
    } else {
        let target = fdt.find_node("/aliases")?.property(path)?.as_str()?;
        fdt.find_node(target)?
    };
    if !node.compatible()?.all().any(|c| c == PL011_COMPATIBLE) {
        return None;
    }
    let region = node.reg()?.next()?;
    Some(region.starting_address as u64)
}

/// The INTID of the console UART's interrupt: its first `interrupts`
/// specifier, `<type number flags>` in the GICv3 binding (type 0 = SPI).
fn stdout_uart_intid(fdt: &Fdt<'_>) -> Option<u32> {
    let chosen = fdt.find_node("/chosen")?;
    let path = chosen.property("stdout-path")?.as_str()?.split(':').next()?;
    let node = if path.starts_with('/') {
        fdt.find_node(path)?
    } else {
        fdt.find_node(fdt.find_node("/aliases")?.property(path)?.as_str()?)?
    };
    let cells = node.property("interrupts")?.value;
    let word = |i: usize| cells.get(4 * i..4 * i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    match (word(0)?, word(1)?) {
        (0, spi) if spi < 988 => Some(spi + 32),
        _ => None,
    }
}

/// The first two `reg` ranges of the GICv3 node: distributor, redistributors.
fn gicv3(fdt: &Fdt<'_>) -> Option<((u64, u64), (u64, u64))> {
    let node = fdt.find_compatible(&["arm,gic-v3"])?;
    let mut regs = node.reg()?;
    let gicd = regs.next()?;
    let gicr = regs.next()?;
    Some((
        (gicd.starting_address as u64, gicd.size? as u64),
        (gicr.starting_address as u64, gicr.size? as u64),
    ))
}

/// The first `arm,gic-v3-its` node (a child of the GIC, whose `ranges`
/// is the identity on QEMU `virt`).
fn its(fdt: &Fdt<'_>) -> Option<ItsNode> {
    let node = fdt.find_compatible(&["arm,gic-v3-its"])?;
    let region = node.reg()?.next()?;
    let phandle = node.property("phandle").and_then(|p| p.value.get(..4)).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    Some(ItsNode {
        base: region.starting_address as u64,
        size: region.size.map_or(bulkhead_drivers::gicv3_its::MMIO_SIZE, |s| s as u64),
        phandle,
    })
}

/// The `reg` (affinity) of each `/cpus/cpu@*` node of `device_type = "cpu"`.
fn cpu_affinities(fdt: &Fdt<'_>) -> Vec<u64> {
    let Some(cpus) = fdt.find_node("/cpus") else {
        return Vec::new();
    };
    cpus.children()
        .filter(|node| node.property("device_type").and_then(|p| p.as_str()) == Some("cpu"))
        .filter_map(|node| {
            let reg = node.property("reg")?.value;
            let mut value = 0u64;
            for &byte in reg.iter().take(8) {
                value = (value << 8) | u64::from(byte);
            }
            Some(value & MPIDR_AFFINITY_MASK)
        })
        .collect()
}

const EXIT_SEMIHOSTING: u8 = 0;
const EXIT_PARK: u8 = 1;
static EXIT_METHOD: AtomicU8 = AtomicU8::new(EXIT_SEMIHOSTING);

/// Chooses how [`finish`] ends the run.
pub fn set_exit_method(method: ExitMethod) {
    let value = match method {
        ExitMethod::Semihosting => EXIT_SEMIHOSTING,
        ExitMethod::Park => EXIT_PARK,
    };
    EXIT_METHOD.store(value, Ordering::Relaxed);
}

/// Logs the exit code and ends the run.
pub fn finish(code: ExitCode) -> ! {
    crate::console::line(format_args!("[bulkhead] run finished: exit code {} ({})", code.code(), code.name()));
    finish_quietly(code)
}

/// Ends the run without printing (used after a panic or fatal exception has
/// already printed its report).
pub fn finish_quietly(code: ExitCode) -> ! {
    if EXIT_METHOD.load(Ordering::Relaxed) == EXIT_SEMIHOSTING {
        semihosting::exit(u32::from(code.code()));
    }
    park()
}

/// Stops this CPU for good.
pub fn park() -> ! {
    loop {
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `wfe` only waits.
        unsafe {
            core::arch::asm!("wfe");
        }
    }
}
