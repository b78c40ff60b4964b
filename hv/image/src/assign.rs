//! PCI function assignment on arm64 (issue 6 item 4): what a partition's
//! `[[partition.pci]]` entries become at boot.
//!
//! For each function, in two phases around the stage-2 build:
//! 1. [`plan`]: the function is looked up in the boot-time enumeration
//!    (refused if absent, a bridge, or already owned), each memory BAR
//!    becomes a device region of the partition's address space at guest
//!    address = host address (prefetchable → `normal-nc`, else
//!    `device-ngnre`, DESIGN.md §1.5), and its legacy INTx line is found in
//!    the host bridge's `interrupt-map` (refused if another partition's
//!    device or the hypervisor uses the same line).
//! 2. [`install`]: the partition's MMIO bus gets a [`VirtualEcam`] at
//!    `VIRTUAL_PCI_ECAM_BASE` (left unmapped in stage 2, so every access
//!    traps) whose device `n` is the `n`-th function, over the real
//!    function's ECAM page; and [`attach_dma`] gives the functions an SMMU
//!    domain holding the partition's `dma = true` regions.
//!
//! Supported: memory BARs, INTx. Not yet: MSI/MSI-X (the capability list is
//! hidden), I/O BARs (arm64 has no port space), functions behind bridges.

use crate::iommu::{self, Owner, SmmuStage2};
use crate::platform::Platform;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_arch_aarch64::stage2::Stage2Geometry;
use bulkhead_config::{Config, FaultPolicy, MemoryAttribute, Permissions, VIRTUAL_PCI_ECAM_BASE, VIRTUAL_PCI_ECAM_SIZE};
use bulkhead_core::address::{Gpa, Hpa};
use bulkhead_core::address_space::{AddressSpace, Region, RegionKind};
use bulkhead_core::devices::pci_config::{BarKind as VirtualBarKind, ConfigAccess, VirtualBar, VirtualEcam, VirtualFunction};
use bulkhead_core::dma::DmaDomain;
use bulkhead_core::partition::Partition;
use bulkhead_core::pinning::PIN_PAGE_SIZE;
use bulkhead_drivers::pci::{BarKind, Bdf, ConfigSpace, Ecam, Function};

/// Configuration-space offset of the interrupt line (7:0) and pin (15:8).
const INTERRUPT_REGISTER: u16 = 0x3c;
/// Shift of the interrupt pin in that register.
const INTERRUPT_PIN_SHIFT: u32 = 8;
/// Header type of an endpoint.
const HEADER_ENDPOINT: u8 = 0;
/// Smallest BAR that can be mapped alone: one stage-2 page.
const PAGE: u64 = 4096;

/// One function of the partition, found and placed.
pub struct Planned {
    /// Its address.
    pub bdf: Bdf,
    /// Its BARs as the guest sees them.
    pub bars: Vec<VirtualBar>,
    /// The SPI its INTx drives, if it has an interrupt pin.
    pub intx: Option<u32>,
}

/// The INTx INTID of `bdf`, if it has a pin and the host bridge maps it.
fn intx_of(platform: &Platform, ecam: &Ecam, bdf: Bdf) -> Option<u32> {
    let pin = (ecam.read32(bdf, INTERRUPT_REGISTER) >> INTERRUPT_PIN_SHIFT) as u8;
    if pin == 0 {
        return None;
    }
    platform.pci.as_ref()?.intx_intid(bdf.rid(), pin)
}

fn bdf_of(text: &str) -> Option<Bdf> {
    text.parse().ok()
}

/// Finds the partition's functions, adds their BARs to `space` and finds
/// their INTx lines.
///
/// # Errors
/// A message naming the `pci[i]` entry at fault.
pub fn plan(
    config: &bulkhead_config::Partition,
    whole: &Config,
    platform: &Platform,
    functions: &[Function],
    space: &mut AddressSpace,
) -> Result<Vec<Planned>, String> {
    if config.pci.is_empty() {
        return Ok(Vec::new());
    }
    let ecam = crate::pci::ecam(platform).ok_or("pci: the machine has no PCIe host bridge")?;
    let emulated = bulkhead_config::emulated_windows(config);
    let mut planned = Vec::new();
    for (i, entry) in config.pci.iter().enumerate() {
        let field = format!("pci[{i}] ({})", entry.bdf);
        let bdf = bdf_of(&entry.bdf).ok_or_else(|| format!("{field}: not a bus:device.function"))?;
        let function = functions
            .iter()
            .find(|f| f.bdf == bdf)
            .ok_or_else(|| format!("{field}: no such function on PCI bus 0"))?;
        if function.header_type != HEADER_ENDPOINT {
            return Err(format!("{field}: a bridge (header type {}), not an endpoint", function.header_type));
        }
        if let Some(owner) = iommu::owner_of(bdf) {
            return Err(format!("{field}: already assigned to partition '{owner}'"));
        }
        let mut bars = Vec::new();
        for bar in function.bars.iter().flatten() {
            let prefetchable = bar.prefetchable;
            let kind = match bar.kind {
                BarKind::Io => {
                    log::warn!("partition {}: {field}: BAR{} is an I/O BAR; not given (no I/O space on arm64)", config.name, bar.index);
                    continue;
                }
                BarKind::Memory32 => VirtualBarKind::Memory32 { prefetchable },
                BarKind::Memory64 => VirtualBarKind::Memory64 { prefetchable },
            };
            if bar.address == 0 {
                return Err(format!("{field}: BAR{} was never assigned an address", bar.index));
            }
            if bar.size < PAGE || !bar.address.is_multiple_of(PAGE) {
                // A smaller BAR shares its page with another device's registers.
                return Err(format!("{field}: BAR{} ({:#x} bytes at {:#x}) does not fill whole pages", bar.index, bar.size, bar.address));
            }
            let inside_window = platform.pci.as_ref().is_some_and(|host| {
                host.windows.iter().any(|&(base, size)| base <= bar.address && bar.address + bar.size <= base + size)
            });
            if !inside_window {
                return Err(format!("{field}: BAR{} at {:#x} is outside the host bridge's memory windows", bar.index, bar.address));
            }
            if let Some((what, ..)) =
                emulated.iter().find(|&&(_, base, size)| bar.address < base + size && base < bar.address + bar.size)
            {
                return Err(format!("{field}: BAR{} at {:#x} collides with {what} in the guest's address space", bar.index, bar.address));
            }
            let attr = if prefetchable { MemoryAttribute::NormalNc } else { MemoryAttribute::DeviceNGnRE };
            space
                .add_region(Region {
                    gpa: Gpa::new(bar.address),
                    hpa: Hpa::new(bar.address),
                    size: bar.size,
                    attr,
                    perms: Permissions { read: true, write: true, execute: false },
                    kind: RegionKind::Device,
                    dma: false,
                })
                .map_err(|e| format!("{field}: BAR{}: {e:?}", bar.index))?;
            log::info!(
                "partition {}: {bdf} BAR{} at IPA {:#x} (+{:#x}, {})",
                config.name,
                bar.index,
                bar.address,
                bar.size,
                attr.as_str()
            );
            bars.push(VirtualBar { index: bar.index as u8, kind, guest: bar.address, size: bar.size });
        }
        let intx = intx_of(platform, &ecam, bdf);
        if let Some(intid) = intx {
            check_line_free(config, whole, platform, &ecam, functions, intid).map_err(|e| format!("{field}: INTx (interrupt {intid}) {e}"))?;
        }
        planned.push(Planned { bdf, bars, intx });
    }
    Ok(planned)
}

/// INTx lines are shared by design; a line may go to one partition only,
/// and never to one the hypervisor itself uses.
fn check_line_free(
    config: &bulkhead_config::Partition,
    whole: &Config,
    platform: &Platform,
    ecam: &Ecam,
    functions: &[Function],
    intid: u32,
) -> Result<(), String> {
    let hypervisor = [platform.uart_intid, platform.smmu.as_ref().and_then(|s| s.eventq_intid), platform.smmu.as_ref().and_then(|s| s.gerror_intid)];
    if hypervisor.contains(&Some(intid)) {
        return Err(String::from("is one of the hypervisor's own interrupts"));
    }
    for other in whole.partitions.iter().filter(|p| p.name != config.name) {
        if other.interrupt_ids(&whole.platform).contains(&intid) {
            return Err(format!("is also partition '{}''s interrupt", other.name));
        }
        let shares = other
            .pci
            .iter()
            .filter_map(|f| bdf_of(&f.bdf))
            .filter(|bdf| functions.iter().any(|f| f.bdf == *bdf))
            .any(|bdf| intx_of(platform, ecam, bdf) == Some(intid));
        if shares {
            return Err(format!("is shared with a function of partition '{}'", other.name));
        }
    }
    Ok(())
}

/// The real function's configuration space, through ECAM.
struct RealFunction {
    ecam: Ecam,
    bdf: Bdf,
}

impl ConfigAccess for RealFunction {
    fn read32(&mut self, offset: u16) -> u32 {
        self.ecam.read32(self.bdf, offset)
    }

    fn write32(&mut self, offset: u16, value: u32) {
        self.ecam.write32(self.bdf, offset, value);
    }
}

/// Puts the partition's virtual configuration space on its MMIO bus: its
/// assigned functions, then `synthetic` (its virtual GPU) if any.
///
/// # Errors
/// When the window is taken (validation keeps it free).
pub fn install(
    planned: Vec<Planned>,
    synthetic: Option<VirtualFunction>,
    partition: &mut Partition,
    platform: &Platform,
) -> Result<(), String> {
    if planned.is_empty() && synthetic.is_none() {
        return Ok(());
    }
    let mut virtual_functions = Vec::new();
    for function in planned {
        let ecam = crate::pci::ecam(platform).ok_or("pci: the machine has no PCIe host bridge")?;
        virtual_functions.push(VirtualFunction::new(Box::new(RealFunction { ecam, bdf: function.bdf }), function.bars));
    }
    // Functions that exist only in the partition (its virtual GPU) follow
    // the assigned ones.
    virtual_functions.extend(synthetic);
    partition
        .bus
        .insert(Gpa::new(VIRTUAL_PCI_ECAM_BASE), VIRTUAL_PCI_ECAM_SIZE, Box::new(VirtualEcam::new(virtual_functions)))
        .map_err(|e| format!("virtual PCI configuration space: {e:?}"))
}

/// The partition's DMA domain: created over its own SMMU stage-2 table,
/// every function's stream attached, mappings allowed, then its DMA view
/// (`dma = true` regions at I/O virtual address = guest address) mapped.
/// `None` if the partition has no functions.
///
/// # Errors
/// A refused attach or mapping (the domain is then torn down again).
#[allow(clippy::too_many_arguments, reason = "one call site; the partition's inputs")]
pub fn attach_dma(
    bdfs: &[Bdf],
    partition: &Partition,
    index: usize,
    geometry: Stage2Geometry,
    pa_bits: u32,
    vmid: u8,
    policy: FaultPolicy,
) -> Result<Option<DmaDomain<SmmuStage2>>, String> {
    if bdfs.is_empty() {
        return Ok(None);
    }
    let space = &partition.space;
    // Exactly the pages of the DMA view may be pinned.
    let pin_limit = space.dma_regions().map(|r| (r.size / PIN_PAGE_SIZE) as usize).sum();
    let table = SmmuStage2::new(geometry, pa_bits, u16::from(vmid));
    let mut domain = DmaDomain::new(&partition.name, table, pin_limit);
    for &bdf in bdfs {
        let owner = Owner { partition: partition.name.clone(), index, policy };
        match iommu::attach(bdf, owner, &mut domain) {
            Ok(sid) => log::info!("partition {}: {bdf} (StreamID {sid:#x}) attached to its SMMU domain, VMID {vmid}", partition.name),
            Err(e) => {
                iommu::detach(&mut domain);
                return Err(format!("pci {bdf}: {e}"));
            }
        }
    }
    let mapped = domain.allow_mappings().and_then(|()| domain.map_dma_view(space));
    if let Err(e) = mapped {
        iommu::detach(&mut domain);
        return Err(format!("DMA view: {e}"));
    }
    log::info!(
        "partition {}: DMA view: {} region(s), {} page(s) pinned, {} SMMU table page(s)",
        partition.name,
        space.dma_regions().count(),
        domain.pins().pinned(),
        domain.table().table_pages()
    );
    Ok(Some(domain))
}
