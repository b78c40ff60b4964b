//! PCI on x86_64: bus 0 of the ECAM window the ACPI MCFG names, mapped
//! uncached once and enumerated once (functions, BARs sized) with the
//! shared ECAM reader ([`bulkhead_drivers::pci`]), before any partition
//! runs (BAR sizing briefly turns a function's decoding off).
//!
//! The enumeration is kept: PCI assignment looks functions up in it, and
//! each assigned function's configuration space reaches the partition's
//! virtual one through [`EcamFunction`].

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_core::acpi::{self, EcamWindow};
use bulkhead_core::devices::pci_config::ConfigAccess;
use bulkhead_drivers::pci::{self, Bdf, ConfigSpace, Ecam, Function};
use spin::Once;

use super::paging::{self, Live};

/// Buses of ECAM the hypervisor maps and reads: bus 0 only (QEMU `q35` puts
/// every device there; bridges are not followed yet).
const MAPPED_BUSES: u16 = 1;

/// Bus 0, mapped and enumerated.
pub struct Bus0 {
    window: EcamWindow,
    functions: Vec<Function>,
}

static BUS0: Once<Result<Bus0, String>> = Once::new();

/// Maps and enumerates bus 0 on the first call (logging the window and
/// every function); later calls return the same result.
///
/// # Errors
/// No MCFG, no segment-0 window covering bus 0, or a mapping failure.
pub fn bus0(memory: &dyn acpi::PhysicalMemory, rsdp: u64, live: &Live) -> Result<&'static Bus0, String> {
    BUS0.call_once(|| Bus0::map(memory, rsdp, live)).as_ref().map_err(Clone::clone)
}

/// Bus 0, if [`bus0`] mapped and enumerated it.
pub fn enumerated() -> Option<&'static Bus0> {
    BUS0.get().and_then(|result| result.as_ref().ok())
}

impl Bus0 {
    fn map(memory: &dyn acpi::PhysicalMemory, rsdp: u64, live: &Live) -> Result<Bus0, String> {
        let table = acpi::find_table(memory, rsdp, b"MCFG").map_err(|e| format!("ACPI MCFG: {e}"))?;
        let windows = acpi::parse_mcfg(&table).map_err(|e| format!("ACPI MCFG: {e}"))?;
        let window = windows
            .iter()
            .copied()
            .find(|w| w.segment == 0 && w.start_bus == 0)
            .ok_or("ACPI MCFG: no ECAM window for segment 0 bus 0")?;
        log::info!(
            "ACPI MCFG: ECAM at {:#x}, segment {}, buses {}..={}",
            window.base,
            window.segment,
            window.start_bus,
            window.end_bus
        );
        paging::map_mmio(window.base, EcamWindow::BUS_SIZE, live)?;
        let mut bus = Bus0 { window, functions: Vec::new() };
        bus.functions = pci::enumerate_bus(&mut bus.ecam(), 0);
        for function in &bus.functions {
            log::info!("PCI {function}");
        }
        Ok(bus)
    }

    /// An accessor for bus 0's configuration space.
    pub fn ecam(&self) -> Ecam {
        // SAFETY: `map` mapped bus 0's 1 MiB of ECAM uncached for good, and
        // the accessor refuses other buses; the hypervisor owns every
        // function's configuration space (partitions reach theirs only
        // through the filtering virtual configuration space).
        unsafe { Ecam::new(self.window.base as usize, MAPPED_BUSES) }
    }

    /// Every function found, in BDF order.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// The function at `bdf`, if it was found.
    pub fn function(&self, bdf: Bdf) -> Option<&Function> {
        self.functions.iter().find(|f| f.bdf == bdf)
    }

    /// The real configuration space of `bdf`, for a partition's virtual one.
    pub fn config_access(&self, bdf: Bdf) -> EcamFunction {
        EcamFunction { ecam: self.ecam(), bdf }
    }
}

/// One function's real configuration space through ECAM: what a
/// partition's [`VirtualFunction`](bulkhead_core::devices::pci_config::VirtualFunction)
/// reads and writes after filtering.
pub struct EcamFunction {
    ecam: Ecam,
    bdf: Bdf,
}

impl ConfigAccess for EcamFunction {
    fn read32(&mut self, offset: u16) -> u32 {
        self.ecam.read32(self.bdf, offset)
    }

    fn write32(&mut self, offset: u16, value: u32) {
        self.ecam.write32(self.bdf, offset, value);
    }
}
