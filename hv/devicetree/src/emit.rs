//! Writes the nodes of a validated [`GuestPlatform`] with `vm-fdt`.
//!
//! Node order follows QEMU `virt`'s tree loosely: `/chosen`, `/aliases`,
//! memory, CPUs, PSCI, GIC, timer, clock, UART. Bindings followed (Linux
//! `Documentation/devicetree/bindings/`): `arm/cpus.yaml`, `arm/psci.yaml`,
//! `interrupt-controller/arm,gic-v3.yaml`, `timer/arm,arch_timer.yaml`,
//! `serial/pl011.yaml`, `clock/fixed-clock.yaml`, and the chosen-node
//! properties of the Devicetree Specification §3.6.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use vm_fdt::FdtWriter;

use crate::error::{DeviceTreeError, Interrupt};
use crate::platform::{GuestPlatform, GuestRange, Pl011};
use crate::validate::{ppi_cell, spi_cell};

/// The root node's `compatible`.
pub(crate) const ROOT_COMPATIBLE: &str = "bulkhead,partition";
/// The root node's `model`.
pub(crate) const ROOT_MODEL: &str = "Bulkhead partition";
/// The vCPU nodes' `compatible`: the generic Armv8 CPU of `arm/cpus.yaml`.
pub(crate) const CPU_COMPATIBLE: &str = "arm,armv8";
/// Frequency of the fixed `apb-pclk` clock that feeds the PL011, as on QEMU `virt`.
pub(crate) const APB_PCLK_HZ: u32 = 24_000_000;

/// `phandle` of the GIC node, the root's `interrupt-parent`.
pub(crate) const GIC_PHANDLE: u32 = 1;
/// `phandle` of the `apb-pclk` clock node.
pub(crate) const APB_PCLK_PHANDLE: u32 = 2;

/// First cell of a GIC interrupt specifier: an SPI (`GIC_SPI` in
/// `include/dt-bindings/interrupt-controller/arm-gic.h`).
const GIC_SPI: u32 = 0;
/// First cell of a GIC interrupt specifier: a PPI (`GIC_PPI`).
const GIC_PPI: u32 = 1;
/// Third cell: active-high level-sensitive (`IRQ_TYPE_LEVEL_HIGH`). The GICv3
/// binding defines only bits [3:0] of this cell; the CPU mask in bits [15:8]
/// that QEMU adds for PPIs exists for GICv2 only, so QEMU's GICv3 trees carry
/// plain 4 as well.
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;

/// Writes the whole tree; `platform` has passed [`crate::validate`].
pub(crate) fn emit(platform: &GuestPlatform) -> Result<Vec<u8>, DeviceTreeError> {
    let mut fdt = FdtWriter::new()?;
    // vCPU 0 is the one that enters the kernel.
    fdt.set_boot_cpuid_phys(0);

    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", ROOT_COMPATIBLE)?;
    fdt.property_string("model", ROOT_MODEL)?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("interrupt-parent", GIC_PHANDLE)?;

    let uart_path = platform
        .uart
        .as_ref()
        .map(|uart| format!("/{}", uart_node_name(uart)));
    chosen(&mut fdt, platform, uart_path.as_deref())?;
    if let Some(path) = &uart_path {
        let aliases = fdt.begin_node("aliases")?;
        fdt.property_string("serial0", path)?;
        fdt.end_node(aliases)?;
    }
    memory(&mut fdt, &platform.memory)?;
    cpus(&mut fdt, platform.cpu_count)?;
    psci(&mut fdt, platform)?;
    gic(&mut fdt, platform)?;
    timer(&mut fdt, platform)?;
    if let Some(uart) = &platform.uart {
        uart_with_clock(&mut fdt, uart)?;
    }

    fdt.end_node(root)?;
    Ok(fdt.finish()?)
}

/// `/chosen`: command line, initrd, console.
fn chosen(
    fdt: &mut FdtWriter,
    platform: &GuestPlatform,
    uart_path: Option<&str>,
) -> Result<(), DeviceTreeError> {
    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", &platform.bootargs)?;
    if let Some(initrd) = platform.initrd {
        // Linux reads either width; 64 bits keeps initrds above 4 GiB describable.
        fdt.property_u64("linux,initrd-start", initrd.base)?;
        fdt.property_u64("linux,initrd-end", end(initrd))?;
    }
    if let Some(path) = uart_path {
        fdt.property_string("stdout-path", path)?;
    }
    fdt.end_node(chosen)?;
    Ok(())
}

/// One `/memory@BASE` node per RAM range, lowest base first.
fn memory(fdt: &mut FdtWriter, ranges: &[GuestRange]) -> Result<(), DeviceTreeError> {
    let mut sorted: Vec<GuestRange> = ranges.to_vec();
    sorted.sort_by_key(|range| range.base);
    for range in sorted {
        let node = fdt.begin_node(&format!("memory@{:x}", range.base))?;
        fdt.property_string("device_type", "memory")?;
        fdt.property_array_u64("reg", &[range.base, range.size])?;
        fdt.end_node(node)?;
    }
    Ok(())
}

/// `/cpus`: vCPU `n` has `reg = <n>`, its `MPIDR_EL1` affinity with only Aff0
/// set, so one address cell suffices (`arm/cpus.yaml`).
fn cpus(fdt: &mut FdtWriter, cpu_count: u32) -> Result<(), DeviceTreeError> {
    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    for index in 0..cpu_count {
        let cpu = fdt.begin_node(&format!("cpu@{index:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", CPU_COMPATIBLE)?;
        fdt.property_u32("reg", index)?;
        fdt.property_string("enable-method", "psci")?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;
    Ok(())
}

/// `/psci`: PSCI 1.0 with the standard function IDs, so no `cpu_on`-style
/// properties (those are for the 0.1 binding only).
fn psci(fdt: &mut FdtWriter, platform: &GuestPlatform) -> Result<(), DeviceTreeError> {
    let psci = fdt.begin_node("psci")?;
    fdt.property_string_list(
        "compatible",
        strings(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]),
    )?;
    fdt.property_string("method", platform.psci.method())?;
    fdt.end_node(psci)?;
    Ok(())
}

/// `/intc@DIST`: a GICv3 with one redistributor region and no ITS.
fn gic(fdt: &mut FdtWriter, platform: &GuestPlatform) -> Result<(), DeviceTreeError> {
    let gic = &platform.gic;
    let node = fdt.begin_node(&format!("intc@{:x}", gic.distributor.base))?;
    fdt.property_string("compatible", "arm,gic-v3")?;
    fdt.property_u32("#interrupt-cells", 3)?;
    fdt.property_null("interrupt-controller")?;
    // Cells and an empty `ranges` for child nodes such as an ITS, as QEMU writes them.
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_null("ranges")?;
    fdt.property_u32("#redistributor-regions", 1)?;
    fdt.property_array_u64(
        "reg",
        &[
            gic.distributor.base,
            gic.distributor.size,
            gic.redistributors.base,
            gic.redistributors.size,
        ],
    )?;
    let maintenance = ppi_cell(Interrupt::GicMaintenance, gic.maintenance_intid)?;
    fdt.property_array_u32("interrupts", &[GIC_PPI, maintenance, IRQ_TYPE_LEVEL_HIGH])?;
    fdt.property_phandle(GIC_PHANDLE)?;
    fdt.end_node(node)?;
    Ok(())
}

/// `/timer`: the four interrupts in the binding's order (secure physical,
/// non-secure physical, virtual, hypervisor). No `always-on` (QEMU writes
/// one): Bulkhead promises nothing about the timer in low-power states, so
/// Linux marks it as stopping there (`C3STOP`), which matters only with idle
/// states, and this tree describes none.
fn timer(fdt: &mut FdtWriter, platform: &GuestPlatform) -> Result<(), DeviceTreeError> {
    let timer = &platform.timer;
    let interrupts = [
        GIC_PPI,
        ppi_cell(Interrupt::SecurePhysTimer, timer.secure_phys_intid)?,
        IRQ_TYPE_LEVEL_HIGH,
        GIC_PPI,
        ppi_cell(Interrupt::NonSecurePhysTimer, timer.nonsecure_phys_intid)?,
        IRQ_TYPE_LEVEL_HIGH,
        GIC_PPI,
        ppi_cell(Interrupt::VirtualTimer, timer.virtual_intid)?,
        IRQ_TYPE_LEVEL_HIGH,
        GIC_PPI,
        ppi_cell(Interrupt::HypTimer, timer.hyp_intid)?,
        IRQ_TYPE_LEVEL_HIGH,
    ];
    let node = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    fdt.property_array_u32("interrupts", &interrupts)?;
    fdt.end_node(node)?;
    Ok(())
}

/// `/apb-pclk` and `/serial@BASE`. Linux's AMBA bus will not probe a
/// PrimeCell without its `apb_pclk` clock, whatever the binding says.
fn uart_with_clock(fdt: &mut FdtWriter, uart: &Pl011) -> Result<(), DeviceTreeError> {
    let clock = fdt.begin_node("apb-pclk")?;
    fdt.property_string("compatible", "fixed-clock")?;
    fdt.property_u32("#clock-cells", 0)?;
    fdt.property_u32("clock-frequency", APB_PCLK_HZ)?;
    fdt.property_string("clock-output-names", "clk24mhz")?;
    fdt.property_phandle(APB_PCLK_PHANDLE)?;
    fdt.end_node(clock)?;

    let node = fdt.begin_node(&uart_node_name(uart))?;
    fdt.property_string_list("compatible", strings(&["arm,pl011", "arm,primecell"]))?;
    fdt.property_array_u64("reg", &[uart.registers.base, uart.registers.size])?;
    let spi = spi_cell(Interrupt::Uart, uart.intid)?;
    fdt.property_array_u32("interrupts", &[GIC_SPI, spi, IRQ_TYPE_LEVEL_HIGH])?;
    fdt.property_array_u32("clocks", &[APB_PCLK_PHANDLE, APB_PCLK_PHANDLE])?;
    fdt.property_string_list("clock-names", strings(&["uartclk", "apb_pclk"]))?;
    fdt.end_node(node)?;
    Ok(())
}

/// The UART's node name, with the generic name the Devicetree Specification
/// recommends (§2.2.2).
fn uart_node_name(uart: &Pl011) -> String {
    format!("serial@{:x}", uart.registers.base)
}

/// One past the end of a validated range.
fn end(range: GuestRange) -> u64 {
    // Validation refused ranges whose end does not fit; saturate rather than
    // panic should that ever change.
    range.base.saturating_add(range.size)
}

/// Owned copies of a string list, the form `vm-fdt` takes.
fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| String::from(*s)).collect()
}
