//! The little PCI the x86 image needs today: bus 0 of the ECAM window the
//! ACPI MCFG names, listed function by function (vendor:device, class,
//! BARs as firmware assigned them), and configuration reads and writes
//! for the DMA self-test.
//!
//! Deliberately local and small: the shared ECAM reader
//! (`drivers/src/pci.rs`) is being written on another branch and will
//! replace this when merged. Offsets are the PCI Local Bus spec 3.0 §6.1
//! type 0/1 header.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_core::acpi::{self, Bdf, EcamWindow};

use super::paging::{self, Live};

/// Configuration-space offsets and bits (PCI Local Bus 3.0 §6.1-6.2).
mod config {
    pub const VENDOR_ID: usize = 0x00;
    pub const DEVICE_ID: usize = 0x02;
    pub const COMMAND: usize = 0x04;
    pub const CLASS_REVISION: usize = 0x08;
    pub const HEADER_TYPE: usize = 0x0e;
    pub const BAR0: usize = 0x10;
    /// Header type bit 7: the device has functions 1..8.
    pub const MULTI_FUNCTION: u8 = 1 << 7;
    /// Header type 0 (endpoint) has six BARs, type 1 (bridge) two.
    pub const BARS_ENDPOINT: usize = 6;
    pub const BARS_BRIDGE: usize = 2;
    /// No function there.
    pub const NO_VENDOR: u16 = 0xffff;
    /// Command register: memory space enable, bus master enable.
    pub const MEMORY_SPACE: u16 = 1 << 1;
    pub const BUS_MASTER: u16 = 1 << 2;
    /// BAR bit 0: I/O space; bits 2:1 = 2: a 64-bit memory BAR; bit 3: prefetchable.
    pub const BAR_IO: u32 = 1 << 0;
    pub const BAR_TYPE_64: u32 = 0b10 << 1;
    pub const BAR_TYPE_MASK: u32 = 0b11 << 1;
    pub const BAR_PREFETCHABLE: u32 = 1 << 3;
    pub const BAR_MEMORY_MASK: u32 = !0xf;
    pub const BAR_IO_MASK: u32 = !0x3;
}

/// Devices on bus 0 (ECAM: one 4 KiB page per function, 8 per device).
const DEVICES_PER_BUS: u8 = 32;
const FUNCTIONS_PER_DEVICE: u8 = 8;

/// One function's configuration space, mapped.
#[derive(Clone, Copy)]
pub struct Function {
    /// Where it is.
    pub bdf: Bdf,
    base: usize,
}

impl Function {
    fn read<T: Copy>(&self, offset: usize) -> T {
        // SAFETY: `base` maps this function's 4 KiB configuration page
        // uncached (`Bus0::map`); every offset used is inside it and
        // aligned to `T`.
        unsafe { core::ptr::read_volatile((self.base + offset) as *const T) }
    }

    /// `vendor:device`.
    pub fn id(&self) -> (u16, u16) {
        (self.read(config::VENDOR_ID), self.read(config::DEVICE_ID))
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.read(config::COMMAND)
    }

    /// Sets or clears memory-space decoding and bus mastering.
    pub fn set_memory_and_bus_master(&self, enable: bool) {
        let bits = config::MEMORY_SPACE | config::BUS_MASTER;
        let command = if enable { self.command() | bits } else { self.command() & !bits };
        // SAFETY: as in `read`. The caller is the hypervisor, which owns
        // unassigned devices; letting one master the bus is safe because
        // the IOMMU translates (or blocks) everything it does.
        unsafe { core::ptr::write_volatile((self.base + config::COMMAND) as *mut u16, command) };
    }

    /// The raw BAR registers (six for an endpoint, two for a bridge).
    fn bars(&self) -> Vec<u32> {
        let header = self.read::<u8>(config::HEADER_TYPE) & !config::MULTI_FUNCTION;
        let count = if header == 0 { config::BARS_ENDPOINT } else { config::BARS_BRIDGE };
        (0..count).map(|i| self.read(config::BAR0 + 4 * i)).collect()
    }

    /// The memory address BAR `index` holds (64-bit BARs combined with the
    /// next register), or `None` for an I/O BAR, an unassigned one or an
    /// index beyond the header's BARs.
    pub fn memory_bar(&self, index: usize) -> Option<u64> {
        let bars = self.bars();
        let low = *bars.get(index)?;
        if low & config::BAR_IO != 0 {
            return None;
        }
        let high = if low & config::BAR_TYPE_MASK == config::BAR_TYPE_64 { *bars.get(index + 1)? } else { 0 };
        let address = u64::from(high) << 32 | u64::from(low & config::BAR_MEMORY_MASK);
        (address != 0).then_some(address)
    }

    /// One log line: BDF, ID, class, BARs.
    fn describe(&self) -> String {
        let (vendor, device) = self.id();
        let class = self.read::<u32>(config::CLASS_REVISION) >> 8;
        let mut text = format!("PCI {}: {vendor:04x}:{device:04x} class {class:06x}", self.bdf);
        let bars = self.bars();
        let mut index = 0;
        while index < bars.len() {
            let bar = bars[index];
            if bar & config::BAR_IO != 0 {
                if bar & config::BAR_IO_MASK != 0 {
                    text.push_str(&format!(", BAR{index} I/O {:#x}", bar & config::BAR_IO_MASK));
                }
                index += 1;
                continue;
            }
            let wide = bar & config::BAR_TYPE_MASK == config::BAR_TYPE_64;
            if let Some(address) = self.memory_bar(index) {
                let prefetch = if bar & config::BAR_PREFETCHABLE != 0 { " prefetchable" } else { "" };
                let bits = if wide { 64 } else { 32 };
                text.push_str(&format!(", BAR{index} memory{bits}{prefetch} {address:#x}"));
            }
            index += if wide { 2 } else { 1 };
        }
        text
    }
}

/// Bus 0's configuration space, mapped.
pub struct Bus0 {
    window: EcamWindow,
}

impl Bus0 {
    /// Finds the ECAM window of segment 0 in the MCFG and maps bus 0's
    /// 1 MiB of configuration space uncached.
    ///
    /// # Errors
    /// No MCFG, no segment-0 window covering bus 0, or a mapping failure.
    pub fn map(memory: &dyn acpi::PhysicalMemory, rsdp: u64, live: &Live) -> Result<Bus0, String> {
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
        Ok(Bus0 { window })
    }

    /// The function at `device.function` on bus 0, if one answers.
    fn function(&self, device: u8, function: u8) -> Option<Function> {
        let bdf = Bdf::new(0, device, function)?;
        let found = Function { bdf, base: self.window.function_address(bdf)? as usize };
        (found.id().0 != config::NO_VENDOR).then_some(found)
    }

    /// Every function on bus 0, in BDF order.
    pub fn functions(&self) -> Vec<Function> {
        let mut found = Vec::new();
        for device in 0..DEVICES_PER_BUS {
            let Some(first) = self.function(device, 0) else { continue };
            let multi = first.read::<u8>(config::HEADER_TYPE) & config::MULTI_FUNCTION != 0;
            found.push(first);
            if multi {
                found.extend((1..FUNCTIONS_PER_DEVICE).filter_map(|f| self.function(device, f)));
            }
        }
        found
    }

    /// Logs every function of bus 0 and returns them.
    pub fn log_functions(&self) -> Vec<Function> {
        let functions = self.functions();
        for function in &functions {
            log::info!("{}", function.describe());
        }
        functions
    }
}
