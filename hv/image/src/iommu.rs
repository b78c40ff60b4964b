//! The SMMUv3 on arm64: found in the device tree, brought up before any
//! partition runs, and serviced afterwards.
//!
//! Policy (DESIGN.md §1 rules 2-3, issue 6): nothing bypasses. Every
//! StreamID starts as `abort`. A StreamID that a PCI function found at boot
//! uses, while no partition owns the function, is quarantined: its STE
//! translates through stage 2 over an empty table (VMID
//! [`QUARANTINE_VMID`], which no partition gets), so its DMA is refused
//! like an abort but also recorded as an event, and the hypervisor can say
//! which device tried what. (An `abort` STE records nothing, IHI 0070 §5.2.)
//!
//! Events and global errors are drained when the SMMU's wired interrupts
//! arrive (routed to the boot CPU, seen as IRQ exits of the vCPU it runs),
//! after the DMA self-test, and at the end of the run.

use crate::platform::Platform;
use alloc::vec::Vec;
use bulkhead_arch_aarch64::{cache, el2};
use bulkhead_arch_aarch64::stage2::Stage2Geometry;
use bulkhead_drivers::pci::{Bdf, Function};
use bulkhead_drivers::smmuv3::ste::{Stage2Config, StreamTableEntry};
use bulkhead_drivers::smmuv3::{self, DmaRegion, Smmu, SmmuMemory, SmmuRegisters};
use alloc::string::String;
use bulkhead_arch_aarch64::stage2::{S2Access, Stage2Error, Stage2Geometry as Geometry, Stage2Table};
use bulkhead_config::{FaultPolicy, MemoryAttribute, Permissions};
use bulkhead_core::address::{Hpa, Iova};
use bulkhead_core::dma::{DmaDomain, DmaTable};
use bulkhead_drivers::smmuv3::SmmuError;
use bulkhead_drivers::smmuv3::command::Command;
use core::sync::atomic::{AtomicBool, Ordering};
use fdt::Fdt;
use spin::{Mutex, Once};

/// The VMID of the quarantine stage 2 (partitions count from 1).
pub const QUARANTINE_VMID: u16 = 0;
/// IPA bits of the quarantine stage 2: any DMA address below this faults
/// as `F_TRANSLATION`, any above as `F_ADDR_SIZE`; both are refused.
const QUARANTINE_IPA_BITS: u32 = 39;
/// Smallest stream table: one PCI bus (256 requester IDs).
const MIN_STREAM_TABLE_LOG2: u32 = 8;
/// Command queue entries (log2): 4 KiB of 16-byte commands.
const COMMAND_QUEUE_LOG2: u32 = 8;
/// Event queue entries (log2): 4 KiB of 32-byte records.
const EVENT_QUEUE_LOG2: u32 = 7;
/// Events logged per drain at most; the rest are counted.
const EVENT_LOG_LIMIT: usize = 16;
const PAGE_SIZE: u64 = 4096;
/// `interrupts` cells of the GICv3 binding: type, number, flags.
const GIC_INTERRUPT_CELLS: usize = 3;
/// First SPI's INTID.
const SPI_BASE: u32 = 32;
/// GIC binding, first cell: an SPI.
const GIC_SPI: u32 = 0;
/// GIC binding, third cell: the trigger type bits.
const GIC_TRIGGER_MASK: u32 = 0xf;
/// Trigger types 1 (rising edge) and 2 (falling edge).
const GIC_EDGE_TRIGGERS: u32 = 0b0011;

/// The SMMU's device-tree node.
#[derive(Clone, Debug)]
pub struct SmmuNode {
    /// Register page 0.
    pub base: u64,
    /// Bytes of registers.
    pub size: u64,
    /// Its `phandle`, which `iommu-map` entries name.
    pub phandle: Option<u32>,
    /// INTID of the `eventq` interrupt.
    pub eventq_intid: Option<u32>,
    /// INTID of the `gerror` interrupt.
    pub gerror_intid: Option<u32>,
    /// Those of its interrupts the device tree calls edge-triggered.
    pub edge_intids: Vec<u32>,
}

/// One `iommu-map` entry: requester IDs `rid_base..rid_base + length` map
/// to StreamIDs from `sid_base` on the IOMMU `iommu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IommuMapEntry {
    /// First requester ID.
    pub rid_base: u32,
    /// The IOMMU's phandle.
    pub iommu: u32,
    /// First StreamID.
    pub sid_base: u32,
    /// Requester IDs covered.
    pub length: u32,
}

/// The PCIe host bridge's node (`pci-host-ecam-generic`).
#[derive(Clone, Debug)]
pub struct PciHost {
    /// ECAM base (bus 0).
    pub ecam: u64,
    /// Bytes of ECAM.
    pub ecam_size: u64,
    /// Memory windows for BARs, `(base, size)` (32- and 64-bit).
    pub windows: Vec<(u64, u64)>,
    /// Its `iommu-map`.
    pub iommu_map: Vec<IommuMapEntry>,
    /// Its `msi-map`: requester ID -> ITS DeviceID (same shape as
    /// `iommu-map`; the `iommu` field holds the MSI controller's phandle).
    pub msi_map: Vec<IommuMapEntry>,
    /// Its `msi-parent`, used when there is no `msi-map` (DeviceID =
    /// requester ID).
    pub msi_parent: Option<u32>,
    /// Its `interrupt-map` (legacy INTx lines), GIC SPIs only.
    pub interrupt_map: Vec<IntxMapEntry>,
    /// Its `interrupt-map-mask`: PCI address `phys.hi` cell and pin cell.
    pub interrupt_map_mask: (u32, u32),
}

/// One `interrupt-map` entry of the host bridge (IEEE 1275 PCI binding):
/// a device's PCI address (`phys.hi`: bus, device, function in bits 23:8)
/// and INTx pin (1 = INTA .. 4 = INTD), after masking, to a GIC SPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntxMapEntry {
    /// `phys.hi` of the child address, masked.
    pub address: u32,
    /// The pin, masked.
    pub pin: u32,
    /// The SPI's INTID.
    pub intid: u32,
}

/// Bit position of the requester ID in a PCI address's `phys.hi` cell.
const PHYS_HI_RID_SHIFT: u32 = 8;
/// Cells of a PCI unit address.
const PCI_ADDRESS_CELLS: usize = 3;

impl PciHost {
    /// The INTID of the legacy interrupt `pin` (1 = INTA) of the function
    /// `rid`. The host bridge's `interrupt-map` already holds the swizzle:
    /// the mask keeps the low device-number bits, and each (device, pin)
    /// entry names the line that pin of a device in that slot drives.
    pub fn intx_intid(&self, rid: u16, pin: u8) -> Option<u32> {
        let (address_mask, pin_mask) = self.interrupt_map_mask;
        let address = (u32::from(rid) << PHYS_HI_RID_SHIFT) & address_mask;
        let pin = u32::from(pin) & pin_mask;
        self.interrupt_map.iter().find(|e| e.address == address && e.pin == pin).map(|e| e.intid)
    }

    /// The ITS DeviceID of requester `rid` on the MSI controller `its`
    /// (its phandle), by `msi-map`, or the requester ID itself under a
    /// plain `msi-parent`; `None` if the function's MSIs go elsewhere.
    pub fn msi_device_id(&self, rid: u16, its: Option<u32>) -> Option<u32> {
        if self.msi_map.is_empty() {
            return (self.msi_parent.is_some() && its.is_none_or(|p| Some(p) == self.msi_parent)).then_some(u32::from(rid));
        }
        let rid = u32::from(rid);
        self.msi_map.iter().find_map(|entry| {
            let inside = rid >= entry.rid_base && rid - entry.rid_base < entry.length;
            (inside && its.is_none_or(|p| p == entry.iommu)).then(|| entry.sid_base + (rid - entry.rid_base))
        })
    }

    /// The StreamID of requester `rid` on the IOMMU `iommu`, if mapped.
    pub fn stream_id(&self, rid: u16, iommu: Option<u32>) -> Option<u32> {
        let rid = u32::from(rid);
        self.iommu_map.iter().find_map(|entry| {
            let inside = rid >= entry.rid_base && rid - entry.rid_base < entry.length;
            (inside && iommu.is_none_or(|p| p == entry.iommu)).then(|| entry.sid_base + (rid - entry.rid_base))
        })
    }
}

fn be_words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The first SMMUv3 node, with its interrupts by name.
pub fn discover_smmu(fdt: &Fdt<'_>) -> Option<SmmuNode> {
    let node = fdt.find_compatible(&["arm,smmu-v3"])?;
    let region = node.reg()?.next()?;
    let phandle = node.property("phandle").and_then(|p| be_words(p.value).next());
    let names: Vec<&str> = node
        .property("interrupt-names")
        .map(|p| p.value.split(|&b| b == 0).filter_map(|s| core::str::from_utf8(s).ok()).collect())
        .unwrap_or_default();
    let specifiers: Vec<u32> = node.property("interrupts").map(|p| be_words(p.value).collect()).unwrap_or_default();
    let line = |name: &str| {
        let index = names.iter().position(|n| *n == name)?;
        let cells = specifiers.get(index * GIC_INTERRUPT_CELLS..(index + 1) * GIC_INTERRUPT_CELLS)?;
        // Type 0 is an SPI; the SMMU's lines are never PPIs.
        (cells[0] == GIC_SPI).then_some((cells[1] + SPI_BASE, cells[2] & GIC_TRIGGER_MASK & GIC_EDGE_TRIGGERS != 0))
    };
    let (eventq, gerror) = (line("eventq"), line("gerror"));
    Some(SmmuNode {
        base: region.starting_address as u64,
        size: region.size.unwrap_or(smmuv3::MMIO_SIZE as usize) as u64,
        phandle,
        eventq_intid: eventq.map(|(intid, _)| intid),
        gerror_intid: gerror.map(|(intid, _)| intid),
        edge_intids: [eventq, gerror].into_iter().flatten().filter(|&(_, edge)| edge).map(|(intid, _)| intid).collect(),
    })
}

/// The first generic ECAM host bridge: its ECAM, memory windows (from
/// `ranges`, PCI address space codes 0b10 and 0b11) and `iommu-map`.
pub fn discover_pci(fdt: &Fdt<'_>) -> Option<PciHost> {
    let node = fdt.find_compatible(&["pci-host-ecam-generic"])?;
    let region = node.reg()?.next()?;
    // `ranges`: PCI address (3 cells), CPU address (2 cells on `virt`'s
    // root), size (2 cells).
    const RANGE_CELLS: usize = 7;
    const SPACE_CODE_SHIFT: u32 = 24;
    const SPACE_MEMORY32: u32 = 0b10;
    const SPACE_MEMORY64: u32 = 0b11;
    let ranges: Vec<u32> = node.property("ranges").map(|p| be_words(p.value).collect()).unwrap_or_default();
    let windows = ranges
        .chunks_exact(RANGE_CELLS)
        .filter(|r| matches!((r[0] >> SPACE_CODE_SHIFT) & 0b11, SPACE_MEMORY32 | SPACE_MEMORY64))
        .map(|r| ((u64::from(r[3]) << 32) | u64::from(r[4]), (u64::from(r[5]) << 32) | u64::from(r[6])))
        .collect();
    let map_of = |name: &str| -> Vec<IommuMapEntry> {
        let map: Vec<u32> = node.property(name).map(|p| be_words(p.value).collect()).unwrap_or_default();
        map.chunks_exact(4).map(|e| IommuMapEntry { rid_base: e[0], iommu: e[1], sid_base: e[2], length: e[3] }).collect()
    };
    let iommu_map = map_of("iommu-map");
    let msi_map = map_of("msi-map");
    let msi_parent = node.property("msi-parent").and_then(|p| be_words(p.value).next());
    let (interrupt_map, interrupt_map_mask) = interrupt_map(fdt, &node);
    Some(PciHost {
        ecam: region.starting_address as u64,
        ecam_size: region.size.unwrap_or(0) as u64,
        windows,
        iommu_map,
        msi_map,
        msi_parent,
        interrupt_map,
        interrupt_map_mask,
    })
}

/// The host bridge's `interrupt-map` entries that name GIC SPIs, and its
/// mask. Each entry: child address (3 cells), child pin (1 cell), parent
/// phandle, parent address (`#address-cells` of the parent), parent
/// interrupt (`#interrupt-cells` of the parent: type, number, flags).
fn interrupt_map(fdt: &Fdt<'_>, node: &fdt::node::FdtNode<'_, '_>) -> (Vec<IntxMapEntry>, (u32, u32)) {
    let words = |name: &str| -> Vec<u32> { node.property(name).map(|p| be_words(p.value).collect()).unwrap_or_default() };
    let mask_cells = words("interrupt-map-mask");
    let mask = match mask_cells.as_slice() {
        [hi, _, _, pin] => (*hi, *pin),
        _ => (u32::MAX, u32::MAX),
    };
    let map = words("interrupt-map");
    let mut entries = Vec::new();
    let mut at = 0;
    while let Some(&parent) = map.get(at + PCI_ADDRESS_CELLS + 1) {
        let cells = |name: &str| {
            fdt.find_phandle(parent)
                .and_then(|p| p.property(name))
                .and_then(|p| be_words(p.value).next())
                .map(|v| v as usize)
        };
        let (Some(address_cells), Some(interrupt_cells)) = (cells("#address-cells").or(Some(0)), cells("#interrupt-cells")) else {
            break;
        };
        let specifier = at + PCI_ADDRESS_CELLS + 2 + address_cells;
        let Some(interrupt) = map.get(specifier..specifier + interrupt_cells) else { break };
        if let [GIC_SPI, number, ..] = interrupt {
            entries.push(IntxMapEntry { address: map[at], pin: map[at + PCI_ADDRESS_CELLS], intid: number + SPI_BASE });
        }
        at = specifier + interrupt_cells;
    }
    (entries, mask)
}

/// A StreamID in use, and the function behind it.
#[derive(Clone, Debug)]
pub struct Stream {
    /// The function.
    pub bdf: Bdf,
    /// Its StreamID.
    pub sid: u32,
    /// The partition its DMA domain belongs to, if assigned.
    pub owner: Option<Owner>,
}

/// The partition a stream is assigned to, as the event path needs it
/// (names and policy only: the event path never takes a partition's lock).
#[derive(Clone, Debug)]
pub struct Owner {
    /// The partition's name.
    pub partition: String,
    /// Its index in the configuration.
    pub index: usize,
    /// What a refused DMA does to it.
    pub policy: FaultPolicy,
}

struct State {
    smmu: Smmu,
    streams: Vec<Stream>,
    /// What an unassigned stream in use gets (stage 2 over the empty
    /// quarantine table), if it could be built; `abort` otherwise.
    quarantine: StreamTableEntry,
    /// Commands issued for DMA-table invalidation, for the benchmark.
    invalidations: CommandCount,
    /// The CPU's physical address bits (for building stage-2 tables).
    pa_bits: u32,
    /// The MSI-only stage 2 of hypervisor-owned devices, once built, and
    /// the doorbell frame it maps.
    msi_only: Option<(SmmuStage2, u64)>,
}

/// Commands issued to keep DMA tables and the SMMU's TLB in step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandCount {
    /// `CMD_TLBI_S2_IPA` and `CMD_TLBI_S12_VMALL`.
    pub tlbi: u64,
    /// `CMD_SYNC`.
    pub sync: u64,
}

/// A partition stopped by the policy for a refused DMA, waiting for a run
/// loop to stop it (the event path holds no partition's lock).
#[derive(Clone, Debug)]
pub struct DmaStop {
    /// The partition's index.
    pub index: usize,
    /// Why.
    pub reason: String,
}

/// Partitions whose DMA was refused under `on_fault = "stop"`.
static STOPS: Mutex<Vec<DmaStop>> = Mutex::new(Vec::new());
/// Whether [`STOPS`] holds anything (checked on every exit, without a lock).
static STOPS_PENDING: AtomicBool = AtomicBool::new(false);

static SMMU: Once<Mutex<State>> = Once::new();
/// The SMMU's interrupts (eventq, gerror), for the IRQ-exit path.
static INTERRUPTS: Once<[Option<u32>; 2]> = Once::new();

fn dma_region(log2_bytes: u32, what: &str) -> Option<DmaRegion> {
    let size = (1u64 << log2_bytes).max(PAGE_SIZE);
    let Some(base) = crate::memory::alloc_frames(size, size) else {
        log::error!("SMMU: no memory for the {what} ({size:#x} bytes)");
        return None;
    };
    // SAFETY: fresh frames from the allocator: zeroed, identity-mapped RAM,
    // aligned to their size, and owned by the SMMU from now on.
    Some(unsafe { DmaRegion::new(base.raw(), size as usize) })
}

/// Brings the SMMU up with every stream aborting and the StreamIDs of
/// `functions` quarantined. Logs one summary line, or why it could not.
pub fn init(platform: &Platform, functions: &[Function]) {
    let Some(node) = &platform.smmu else {
        log::warn!("SMMU: none in the device tree: device DMA is not confined");
        return;
    };
    // SAFETY: the device tree names this SMMU; `memory::init` mapped its two
    // register pages as Device memory; only this module drives it.
    let registers = unsafe { SmmuRegisters::new(node.base as usize) };
    let features = registers.features();
    let streams: Vec<Stream> = functions
        .iter()
        .filter_map(|f| {
            let sid = platform.pci.as_ref()?.stream_id(f.bdf.rid(), node.phandle)?;
            Some(Stream { bdf: f.bdf, sid, owner: None })
        })
        .collect();
    let highest = streams.iter().map(|s| s.sid).max().unwrap_or(0);
    let needed = 32 - highest.leading_zeros();
    let table_log2 = needed.max(MIN_STREAM_TABLE_LOG2).min(features.sid_bits);
    let command_log2 = COMMAND_QUEUE_LOG2.min(features.cmdq_log2max);
    let event_log2 = EVENT_QUEUE_LOG2.min(features.eventq_log2max);
    let (Some(stream_table), Some(command_queue), Some(event_queue)) = (
        dma_region(table_log2 + smmuv3::ste::STE_SIZE.trailing_zeros(), "stream table"),
        dma_region(command_log2 + 4, "command queue"),
        dma_region(event_log2 + smmuv3::event::EVENT_SIZE.trailing_zeros(), "event queue"),
    ) else {
        return;
    };
    let memory = SmmuMemory {
        stream_table,
        stream_table_log2size: table_log2,
        command_queue,
        command_queue_log2size: command_log2,
        event_queue,
        event_queue_log2size: event_log2,
    };
    let wired = node.eventq_intid.is_some() || node.gerror_intid.is_some();
    let mut smmu = match Smmu::init(registers, memory, wired) {
        Ok(smmu) => smmu,
        Err(e) => {
            log::error!("SMMU at {:#x}: {e}; {features}", node.base);
            return;
        }
    };
    log::info!(
        "SMMU at {:#x}: {}; stream table {} entries (linear), command queue {}, event queue {}; every stream aborts",
        node.base,
        smmu.features(),
        smmu.stream_table_entries(),
        smmu.command_queue_entries(),
        smmu.event_queue_entries()
    );
    let quarantine = quarantine(&mut smmu, &streams, platform.firmware.pa_bits);
    INTERRUPTS.call_once(|| [node.eventq_intid, node.gerror_intid]);
    let boot_mpidr = platform.firmware.mpidr & crate::platform::MPIDR_AFFINITY_MASK;
    for intid in [node.eventq_intid, node.gerror_intid].into_iter().flatten() {
        // QEMU's SMMU pulses its lines: as the device tree says, they are
        // edges, and a level-sensitive SPI would drop them.
        crate::gic::set_edge_triggered(intid, node.edge_intids.contains(&intid));
        crate::gic::route_spi(intid, boot_mpidr);
    }
    let pa_bits = platform.firmware.pa_bits;
    SMMU.call_once(|| {
        Mutex::new(State { smmu, streams, quarantine, invalidations: CommandCount::default(), pa_bits, msi_only: None })
    });
}

/// Points every stream in use at the empty quarantine stage 2; returns
/// the STE it used (`abort` if no quarantine table could be built).
fn quarantine(smmu: &mut Smmu, streams: &[Stream], pa_bits: u32) -> StreamTableEntry {
    let Ok(geometry) = Stage2Geometry::for_limit(1 << QUARANTINE_IPA_BITS, pa_bits) else {
        log::error!("SMMU: no quarantine stage 2 fits this CPU; streams in use stay at abort (unrecorded)");
        return StreamTableEntry::abort();
    };
    // An all-invalid root table: every walk ends in a translation fault.
    let Some(root) = crate::memory::alloc_frames(PAGE_SIZE, PAGE_SIZE) else {
        log::error!("SMMU: no memory for the quarantine table; streams in use stay at abort (unrecorded)");
        return StreamTableEntry::abort();
    };
    let config = Stage2Config { vmid: QUARANTINE_VMID, root: root.raw(), vtcr: el2::vtcr(geometry, pa_bits) };
    let ste = StreamTableEntry::stage2(config, smmu.features().oas_field);
    for stream in streams {
        match smmu.set_ste(stream.sid, ste) {
            Ok(()) => log::info!(
                "SMMU: StreamID {:#x} ({}) belongs to no partition: quarantined (DMA refused and recorded)",
                stream.sid,
                stream.bdf
            ),
            Err(e) => log::error!("SMMU: StreamID {:#x} ({}): {e}; it stays at abort", stream.sid, stream.bdf),
        }
    }
    if let Err(e) = smmu.submit(&[Command::tlbi_s12_vmall(QUARANTINE_VMID)]) {
        log::error!("SMMU: invalidating the quarantine VMID: {e}");
    }
    ste
}

/// The StreamID of `bdf`, if the SMMU is up and the function has one.
pub fn stream_of(bdf: Bdf) -> Option<u32> {
    SMMU.get()?.lock().streams.iter().find(|s| s.bdf == bdf).map(|s| s.sid)
}

/// Which partition owns `bdf`'s stream, if any.
pub fn owner_of(bdf: Bdf) -> Option<String> {
    SMMU.get()?.lock().streams.iter().find(|s| s.bdf == bdf)?.owner.as_ref().map(|o| o.partition.clone())
}

/// A recorded event, as [`service`] reports it.
#[derive(Clone, Copy, Debug)]
pub struct Recorded {
    /// The decoded record.
    pub event: bulkhead_drivers::smmuv3::event::Event,
}

/// Drains the event queue and the global errors, logging each (`when` says
/// where the drain happens); returns the events.
pub fn service(when: &str) -> Vec<Recorded> {
    let Some(state) = SMMU.get() else { return Vec::new() };
    let mut state = state.lock();
    let errors = state.smmu.take_global_errors();
    if !errors.is_empty() {
        log::error!("SMMU global error ({when}): {errors}");
    }
    let mut events: Vec<Recorded> = Vec::new();
    // A device's faulting transfer records one event per access (QEMU's
    // edu: one per 4 bytes); a run of events of one type, stream and page
    // becomes one line with a count.
    let mut run: Option<(Recorded, usize)> = None;
    let mut lines = 0usize;
    let mut unlogged = 0usize;
    let mut flush = |run: &mut Option<(Recorded, usize)>, streams: &[Stream]| {
        if let Some((first, count)) = run.take() {
            if lines < EVENT_LOG_LIMIT {
                log_event(when, &first, count, streams);
                lines += 1;
            } else {
                unlogged += count;
            }
        }
    };
    while let Some((event, overflowed)) = state.smmu.next_event() {
        if overflowed {
            log::warn!("SMMU: the event queue overflowed; events were lost");
        }
        let recorded = Recorded { event };
        let page = |r: &Recorded| r.event.input_address.map(|a| a & !(PAGE_SIZE - 1));
        match &mut run {
            Some((first, count))
                if first.event.id == event.id && first.event.stream_id == event.stream_id && page(first) == page(&recorded) =>
            {
                *count += 1
            }
            _ => {
                flush(&mut run, &state.streams);
                run = Some((recorded, 1));
            }
        }
        events.push(recorded);
    }
    flush(&mut run, &state.streams);
    if unlogged > 0 {
        log::warn!("SMMU: {unlogged} more event(s) not logged");
    }
    apply_policies(&mut state, &events);
    events
}

/// For each assigned stream that had events in this drain: `inject`
/// leaves the partition running (the DMA was refused, nothing more to
/// do), `stop` points the stream back at the quarantine (no further DMA
/// can reach even the partition's own memory) and queues the partition's
/// stop for a run loop ([`take_stops`]).
fn apply_policies(state: &mut State, events: &[Recorded]) {
    let State { smmu, streams, quarantine, .. } = state;
    for stream in streams.iter_mut() {
        let Some(owner) = &stream.owner else { continue };
        let Some(first) = events.iter().find(|r| r.event.stream_id == stream.sid) else { continue };
        let count = events.iter().filter(|r| r.event.stream_id == stream.sid).count();
        match owner.policy {
            FaultPolicy::Inject => log::warn!(
                "partition {}: {count} DMA access(es) of device {} refused by the SMMU; the partition keeps running (fault policy: inject)",
                owner.partition,
                stream.bdf
            ),
            FaultPolicy::Stop => {
                let blocked = match smmu.set_ste(stream.sid, *quarantine) {
                    Ok(()) => "device blocked",
                    Err(e) => {
                        log::error!("SMMU: blocking StreamID {:#x}: {e}", stream.sid);
                        "device NOT blocked"
                    }
                };
                log::warn!(
                    "partition {}: DMA of device {} refused by the SMMU; {blocked}, partition stopped (fault policy: stop)",
                    owner.partition,
                    stream.bdf
                );
                let reason = alloc::format!("DMA fault: device {} {}", stream.bdf, first.event);
                STOPS.lock().push(DmaStop { index: owner.index, reason });
                STOPS_PENDING.store(true, Ordering::Release);
                // Later events of the stream are the quarantine's.
                stream.owner = None;
            }
        }
    }
}

/// Partitions to stop for a refused DMA, if any (cheap when there are none).
pub fn take_stops() -> Vec<DmaStop> {
    if !STOPS_PENDING.swap(false, Ordering::AcqRel) {
        return Vec::new();
    }
    core::mem::take(&mut *STOPS.lock())
}

fn log_event(when: &str, first: &Recorded, count: usize, streams: &[Stream]) {
    let more = if count > 1 { alloc::format!(" (and {} more like it on this page)", count - 1) } else { String::new() };
    match streams.iter().find(|s| s.sid == first.event.stream_id) {
        Some(Stream { bdf, owner: Some(owner), .. }) => {
            log::warn!("SMMU event ({when}): device {bdf} of partition '{}': {}{more}", owner.partition, first.event)
        }
        Some(stream) => log::warn!("SMMU event ({when}): device {} (no partition): {}{more}", stream.bdf, first.event),
        None => log::warn!("SMMU event ({when}): unknown device: {}{more}", first.event),
    }
}

// ---- Per-partition DMA domains -------------------------------------------
//
// Lock order: a partition's domain, then the SMMU (`SMMU`). The event path
// takes only the SMMU's lock.

/// Leaves invalidated one `CMD_TLBI_S2_IPA` each at most; an unmap with
/// more invalidates the whole VMID instead (one command, and the SMMU
/// refills from the table).
const TLBI_BY_IPA_LIMIT: usize = 16;

/// Why a DMA table operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DmaTableError {
    /// The stage-2 table refused.
    Table(Stage2Error),
    /// The SMMU refused an invalidation (the table no longer maps the
    /// range; the SMMU's TLB may, until the VMID is invalidated).
    Smmu(SmmuError),
    /// No SMMU is up.
    NoSmmu,
}

/// A partition's DMA table: a stage-2 table of its own that only the SMMU
/// walks (same format and geometry as the CPU's, DESIGN.md §3: a separate
/// table keeps CPU-only overlays out of the device's view). Every
/// descriptor has AF set, since QEMU's SMMU does not set it and `S2AFFD`
/// is clear; attributes are the regions' own.
pub struct SmmuStage2 {
    table: Stage2Table,
    vmid: u16,
    vtcr: u64,
}

impl SmmuStage2 {
    /// An empty table for `geometry` tagged with `vmid`.
    pub fn new(geometry: Geometry, pa_bits: u32, vmid: u16) -> SmmuStage2 {
        SmmuStage2 { table: Stage2Table::new(geometry), vmid, vtcr: el2::vtcr(geometry, pa_bits.min(48)) }
    }

    /// The STE's stage-2 configuration.
    fn config(&self) -> Stage2Config {
        Stage2Config { vmid: self.vmid, root: self.table.root_address(), vtcr: self.vtcr }
    }

    /// Table pages used, root included.
    pub fn table_pages(&self) -> usize {
        self.table.table_pages()
    }
}

impl DmaTable for SmmuStage2 {
    type Error = DmaTableError;

    fn map(&mut self, iova: Iova, hpa: Hpa, size: u64, attr: MemoryAttribute, perms: Permissions) -> Result<(), DmaTableError> {
        // A device never executes: XN regardless of the region.
        let access = S2Access { read: perms.read, write: perms.write, execute: false };
        self.table.map(iova.raw(), hpa.raw(), size, crate::space::s2_memory_type(attr), access).map_err(DmaTableError::Table)?;
        // The SMMU walks coherently; the new descriptors must be visible
        // before a device can use them. Entries that were invalid are not
        // cached by the SMMU, so nothing needs invalidating.
        cache::barrier_store();
        Ok(())
    }

    fn unmap(&mut self, iova: Iova, size: u64) -> Result<(), DmaTableError> {
        let mut leaves = Vec::new();
        self.table.for_each_leaf(iova.raw(), size, |ipa, _| leaves.push(ipa)).map_err(DmaTableError::Table)?;
        self.table.unmap(iova.raw(), size).map_err(DmaTableError::Table)?;
        let commands: Vec<Command> = if leaves.len() <= TLBI_BY_IPA_LIMIT {
            leaves.iter().map(|&ipa| Command::tlbi_s2_ipa(self.vmid, ipa)).collect()
        } else {
            alloc::vec![Command::tlbi_s12_vmall(self.vmid)]
        };
        let state = SMMU.get().ok_or(DmaTableError::NoSmmu)?;
        let mut state = state.lock();
        // `submit` publishes the table stores before the commands and ends
        // with CMD_SYNC: when it returns, no walk or TLB entry reaches the
        // pages, and the caller may unpin them.
        state.smmu.submit(&commands).map_err(DmaTableError::Smmu)?;
        state.invalidations.tlbi += commands.len() as u64;
        state.invalidations.sync += 1;
        Ok(())
    }
}

/// Points `bdf`'s stream at `domain`'s table (stage 2 with its VMID, the
/// STE invalidated and synced) and records the device in the domain.
///
/// # Errors
/// A reason naming the device: no SMMU, no StreamID, a stream another
/// partition owns, or an SMMU command failure.
pub fn attach(bdf: Bdf, owner: Owner, domain: &mut DmaDomain<SmmuStage2>) -> Result<u32, String> {
    let state = SMMU.get().ok_or("no SMMU is up: its DMA could not be confined")?;
    let mut state = state.lock();
    let oas = state.smmu.features().oas_field;
    let State { smmu, streams, .. } = &mut *state;
    let stream = streams
        .iter_mut()
        .find(|s| s.bdf == bdf)
        .ok_or_else(|| alloc::format!("{bdf} has no StreamID on the SMMU"))?;
    if let Some(other) = &stream.owner {
        return Err(alloc::format!("{bdf} already belongs to partition '{}'", other.partition));
    }
    let sid = stream.sid;
    let config = domain.table().config();
    smmu.set_ste(sid, StreamTableEntry::stage2(config, oas)).map_err(|e| alloc::format!("StreamID {sid:#x}: {e}"))?;
    // The VMID is fresh for this table; drop whatever an earlier user of
    // the number left in the TLB.
    smmu.submit(&[Command::tlbi_s12_vmall(config.vmid)]).map_err(|e| alloc::format!("StreamID {sid:#x}: {e}"))?;
    domain.attach(sid).map_err(|e| alloc::format!("{e}"))?;
    stream.owner = Some(owner);
    Ok(sid)
}

/// Tears `domain` down: its devices' streams go back to the quarantine
/// first (so no DMA reaches the pages), then every mapping is removed and
/// every pin released.
pub fn detach(domain: &mut DmaDomain<SmmuStage2>) {
    if let Some(state) = SMMU.get() {
        let mut state = state.lock();
        let quarantine = state.quarantine;
        for &sid in domain.devices() {
            if let Err(e) = state.smmu.set_ste(sid, quarantine) {
                log::error!("SMMU: StreamID {sid:#x} back to quarantine: {e}");
            }
            if let Some(stream) = state.streams.iter_mut().find(|s| s.sid == sid) {
                stream.owner = None;
            }
        }
    }
    if let Err(e) = domain.detach() {
        log::error!("{e}");
    }
}

// ---- MSI-only streams of hypervisor-owned devices ------------------------

/// VMID of the MSI-only stage 2: above every partition's (8-bit, from 1)
/// and the quarantine's (0), so it needs 16-bit VMIDs.
pub const MSI_ONLY_VMID: u16 = 0x100;
/// Bytes the MSI-only stage 2 maps: the ITS translation frame.
const MSI_FRAME_SIZE: u64 = bulkhead_drivers::gicv3_its::TRANSLATION_FRAME_SIZE;

/// Gives `bdf`'s stream a stage 2 that maps exactly the 64 KiB frame at
/// `doorbell_frame` (the ITS translation frame holding `GITS_TRANSLATER`),
/// identity, write-only, Device-nGnRE: the device's MSIs reach the ITS,
/// every other DMA is refused and recorded as a translation fault. For a
/// device the hypervisor itself drives (owned by no partition). All such
/// devices share one table (VMID [`MSI_ONLY_VMID`]). Returns the StreamID.
///
/// # Errors
/// A reason: no SMMU, no StreamID, a stream a partition owns, an SMMU
/// without 16-bit VMIDs, a doorbell other than the one already mapped, a
/// table or SMMU command failure.
pub fn allow_msi_only(bdf: Bdf, doorbell_frame: u64) -> Result<u32, String> {
    let state = SMMU.get().ok_or("no SMMU is up")?;
    let mut state = state.lock();
    if !state.smmu.features().vmid16 {
        return Err("the SMMU has 8-bit VMIDs: no VMID is free for the MSI-only stage 2".into());
    }
    let doorbell_frame = doorbell_frame & !(MSI_FRAME_SIZE - 1);
    let oas = state.smmu.features().oas_field;
    let pa_bits = state.pa_bits;
    let State { smmu, streams, msi_only, .. } = &mut *state;
    let stream = streams.iter().find(|s| s.bdf == bdf).ok_or_else(|| alloc::format!("{bdf} has no StreamID on the SMMU"))?;
    if let Some(owner) = &stream.owner {
        return Err(alloc::format!("{bdf} belongs to partition '{}'", owner.partition));
    }
    let sid = stream.sid;
    match msi_only {
        Some((_, frame)) if *frame != doorbell_frame => {
            return Err(alloc::format!("the MSI-only stage 2 maps the doorbell {frame:#x}, not {doorbell_frame:#x}"));
        }
        Some(_) => {}
        None => {
            let geometry = Stage2Geometry::for_limit(1 << QUARANTINE_IPA_BITS, pa_bits)
                .map_err(|e| alloc::format!("no MSI-only stage 2 fits this CPU: {e:?}"))?;
            let mut table = SmmuStage2::new(geometry, pa_bits, MSI_ONLY_VMID);
            let write_only = Permissions { read: false, write: true, execute: false };
            table
                .map(Iova::new(doorbell_frame), Hpa::new(doorbell_frame), MSI_FRAME_SIZE, MemoryAttribute::DeviceNGnRE, write_only)
                .map_err(|e| alloc::format!("mapping the doorbell {doorbell_frame:#x}: {e:?}"))?;
            smmu.submit(&[Command::tlbi_s12_vmall(MSI_ONLY_VMID)]).map_err(|e| alloc::format!("{e}"))?;
            *msi_only = Some((table, doorbell_frame));
        }
    }
    let config = msi_only.as_ref().map(|(table, _)| table.config()).ok_or("no MSI-only stage 2")?;
    smmu.set_ste(sid, StreamTableEntry::stage2(config, oas)).map_err(|e| alloc::format!("StreamID {sid:#x}: {e}"))?;
    log::info!(
        "SMMU: StreamID {sid:#x} ({bdf}) may write only the ITS doorbell frame {doorbell_frame:#x} (+{MSI_FRAME_SIZE:#x}); other DMA refused and recorded"
    );
    Ok(sid)
}

/// Puts `bdf`'s stream back into the quarantine (after
/// [`allow_msi_only`]); a stream a partition owns is left alone.
///
/// # Errors
/// A reason: no SMMU, no StreamID, a partition's stream, a command failure.
pub fn requarantine(bdf: Bdf) -> Result<(), String> {
    let state = SMMU.get().ok_or("no SMMU is up")?;
    let mut state = state.lock();
    let quarantine = state.quarantine;
    let State { smmu, streams, .. } = &mut *state;
    let stream = streams.iter().find(|s| s.bdf == bdf).ok_or_else(|| alloc::format!("{bdf} has no StreamID on the SMMU"))?;
    if let Some(owner) = &stream.owner {
        return Err(alloc::format!("{bdf} belongs to partition '{}'", owner.partition));
    }
    smmu.set_ste(stream.sid, quarantine).map_err(|e| alloc::format!("StreamID {:#x}: {e}", stream.sid))
}

/// The SMMU's features, if it is up (the benchmark's VMID width).
pub fn vmid16() -> Option<bool> {
    SMMU.get().map(|s| s.lock().smmu.features().vmid16)
}

/// Invalidation commands issued so far.
pub fn invalidations() -> CommandCount {
    SMMU.get().map(|s| s.lock().invalidations).unwrap_or_default()
}

/// A stream in use that no partition owns (the benchmark's device).
pub fn unowned_stream() -> Option<Bdf> {
    SMMU.get()?.lock().streams.iter().find(|s| s.owner.is_none()).map(|s| s.bdf)
}

/// Whether `intid` is one of the SMMU's interrupts.
pub fn owns_interrupt(intid: u32) -> bool {
    INTERRUPTS.get().is_some_and(|lines| lines.contains(&Some(intid)))
}
