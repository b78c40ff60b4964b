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
use bulkhead_arch_aarch64::el2;
use bulkhead_arch_aarch64::stage2::Stage2Geometry;
use bulkhead_drivers::pci::{Bdf, Function};
use bulkhead_drivers::smmuv3::ste::{Stage2Config, StreamTableEntry};
use bulkhead_drivers::smmuv3::{self, DmaRegion, Smmu, SmmuMemory, SmmuRegisters};
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
}

impl PciHost {
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
    let intid = |name: &str| {
        let index = names.iter().position(|n| *n == name)?;
        let cells = specifiers.get(index * GIC_INTERRUPT_CELLS..index * GIC_INTERRUPT_CELLS + 2)?;
        // Type 0 is an SPI; the SMMU's lines are never PPIs.
        (cells[0] == 0).then_some(cells[1] + SPI_BASE)
    };
    Some(SmmuNode {
        base: region.starting_address as u64,
        size: region.size.unwrap_or(smmuv3::MMIO_SIZE as usize) as u64,
        phandle,
        eventq_intid: intid("eventq"),
        gerror_intid: intid("gerror"),
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
    let map: Vec<u32> = node.property("iommu-map").map(|p| be_words(p.value).collect()).unwrap_or_default();
    let iommu_map = map
        .chunks_exact(4)
        .map(|e| IommuMapEntry { rid_base: e[0], iommu: e[1], sid_base: e[2], length: e[3] })
        .collect();
    Some(PciHost {
        ecam: region.starting_address as u64,
        ecam_size: region.size.unwrap_or(0) as u64,
        windows,
        iommu_map,
    })
}

/// A StreamID in use, and the function behind it.
#[derive(Clone, Copy, Debug)]
pub struct Stream {
    /// The function.
    pub bdf: Bdf,
    /// Its StreamID.
    pub sid: u32,
}

struct State {
    smmu: Smmu,
    streams: Vec<Stream>,
}

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
            Some(Stream { bdf: f.bdf, sid })
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
    quarantine(&mut smmu, &streams, platform.firmware.pa_bits);
    INTERRUPTS.call_once(|| [node.eventq_intid, node.gerror_intid]);
    let boot_mpidr = platform.firmware.mpidr & crate::platform::MPIDR_AFFINITY_MASK;
    for intid in [node.eventq_intid, node.gerror_intid].into_iter().flatten() {
        crate::gic::route_spi(intid, boot_mpidr);
    }
    SMMU.call_once(|| Mutex::new(State { smmu, streams }));
}

/// Points every stream in use at the empty quarantine stage 2.
fn quarantine(smmu: &mut Smmu, streams: &[Stream], pa_bits: u32) {
    let Ok(geometry) = Stage2Geometry::for_limit(1 << QUARANTINE_IPA_BITS, pa_bits) else {
        log::error!("SMMU: no quarantine stage 2 fits this CPU; streams in use stay at abort (unrecorded)");
        return;
    };
    // An all-invalid root table: every walk ends in a translation fault.
    let Some(root) = crate::memory::alloc_frames(PAGE_SIZE, PAGE_SIZE) else {
        log::error!("SMMU: no memory for the quarantine table; streams in use stay at abort (unrecorded)");
        return;
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
    if let Err(e) = smmu.submit(&[bulkhead_drivers::smmuv3::command::Command::tlbi_s12_vmall(QUARANTINE_VMID)]) {
        log::error!("SMMU: invalidating the quarantine VMID: {e}");
    }
}

/// The StreamID of `bdf`, if the SMMU is up and the function has one.
pub fn stream_of(bdf: Bdf) -> Option<u32> {
    SMMU.get()?.lock().streams.iter().find(|s| s.bdf == bdf).map(|s| s.sid)
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
    events
}

fn log_event(when: &str, first: &Recorded, count: usize, streams: &[Stream]) {
    let more = if count > 1 { alloc::format!(" (and {} more like it on this page)", count - 1) } else { alloc::string::String::new() };
    match streams.iter().find(|s| s.sid == first.event.stream_id) {
        Some(stream) => log::warn!("SMMU event ({when}): device {} (no partition): {}{more}", stream.bdf, first.event),
        None => log::warn!("SMMU event ({when}): unknown device: {}{more}", first.event),
    }
}

/// Whether `intid` is one of the SMMU's interrupts.
pub fn owns_interrupt(intid: u32) -> bool {
    INTERRUPTS.get().is_some_and(|lines| lines.contains(&Some(intid)))
}
