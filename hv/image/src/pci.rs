//! PCI on arm64: bus 0 of the ECAM host bridge the device tree names,
//! enumerated once at boot, before any partition runs (BAR sizing briefly
//! turns a function's decoding off).

use crate::platform::Platform;
use alloc::vec::Vec;
use bulkhead_drivers::pci::{self, Ecam, Function};

/// Buses of ECAM the hypervisor maps and reads: bus 0 only (QEMU `virt`
/// puts every device there; bridges are not followed yet).
pub const ECAM_MAPPED_BUSES: u64 = 1;

/// The ECAM accessor, if the machine has a PCIe host bridge.
pub fn ecam(platform: &Platform) -> Option<Ecam> {
    let host = platform.pci.as_ref()?;
    // SAFETY: `memory::init` mapped the first `ECAM_MAPPED_BUSES` MiB of
    // the ECAM window the device tree names as Device memory, and the
    // accessor refuses buses beyond it.
    Some(unsafe { Ecam::new(host.ecam as usize, ECAM_MAPPED_BUSES as u16) })
}

/// Enumerates bus 0 and logs each function with its BARs as firmware left them.
pub fn enumerate(platform: &Platform) -> Vec<Function> {
    let Some(mut ecam) = ecam(platform) else {
        log::info!("PCI: no ECAM host bridge in the device tree");
        return Vec::new();
    };
    let functions = pci::enumerate_bus(&mut ecam, 0);
    for function in &functions {
        log::info!("PCI {function}");
    }
    log::info!("PCI: {} function(s) on bus 0", functions.len());
    functions
}
