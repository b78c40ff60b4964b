//! PCI functions assigned to x86_64 partitions (issue 6): their BARs in the
//! partition's address space, their virtual configuration space, their DMA
//! confined by a per-partition VT-d domain, and VT-d faults handled by the
//! owning partition's policy. Plus the DMA map/unmap benchmark
//! (`bench=dma`).
//!
//! At build time ([`prepare`], then [`attach`] once the partition is
//! otherwise complete):
//! - each memory BAR becomes a device region at guest address = host
//!   address (identity), `normal-nc` if prefetchable, else `device-ngnre`;
//!   I/O BARs are not passed (no port assignment for PCI functions yet);
//! - the functions appear as devices 0, 1, ... of a [`VirtualEcam`] at
//!   `VIRTUAL_PCI_ECAM_BASE`, an MMIO device: left unmapped in the NPT, so
//!   every access exits and is emulated over the real function's ECAM page;
//! - a [`DmaDomain`] over a VT-d second-level table ([`VtdTable`]) with
//!   domain ID = partition index + 1: each function's context entry is
//!   pointed at it (attach), then mappings are allowed and the partition's
//!   DMA view (its `dma = true` regions, I/O virtual address = guest
//!   physical address) is mapped and pinned.
//!
//! When the partition stops ([`release`]) its functions are blocked again
//! (context entries cleared, context cache and IOTLB invalidated, bus
//! mastering off) and the domain is detached (mappings removed, pins
//! released).
//!
//! Faults: the host runs with interrupts masked, so fault records are
//! polled. [`poll`] runs at every exit of a partition that owns PCI
//! functions (one FSTS read per unit when nothing happened; partitions
//! without functions never call it). A guest that starts a DMA and then
//! prints (a hypercall) or touches its configuration space (a nested page
//! fault) has the fault reported before its next line. A fault for a
//! function a partition owns is logged with the partition's name, then
//! its `on_fault` policy applies: `inject` keeps it running (x86 has no
//! way to report a refused DMA to the guest: the transfer simply did not
//! happen), `stop` blocks its functions at once and stops it at its next
//! exit (the next poll on its CPU).
//!
//! No interrupts: INTx and MSI of assigned functions are not routed to
//! x86_64 partitions yet (guests poll their devices).

use super::iommu::{self, UnitInfo};
use super::memory;
use super::partition::memory_type;
use super::pci;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_arch_x86_64::cpu::ap::rdtsc;
use bulkhead_arch_x86_64::cpu::mmu::flush_cache_range;
use bulkhead_arch_x86_64::vtd::VtdSecondLevel;
use bulkhead_arch_x86_64::{Access, FrameAllocator, MapError, PageSize, SecondLevelTable, TableOptions, UnmapError};
use bulkhead_config::{FaultPolicy, MemoryAttribute, Permissions};
use bulkhead_core::acpi;
use bulkhead_core::address::{Gpa, Hpa, Iova};
use bulkhead_core::address_space::{AddressSpace, Region, RegionKind};
use bulkhead_core::devices::pci_config::{BarKind as VirtualBarKind, VirtualBar, VirtualEcam, VirtualFunction};
use bulkhead_core::dma::{DmaDomain, DmaTable, DomainState};
use bulkhead_core::pinning::PIN_PAGE_SIZE;
use bulkhead_drivers::pci::{self as pci_regs, BarKind, Bdf, COMMAND, ConfigSpace};
use bulkhead_drivers::vtd::FaultRecord;
use bulkhead_drivers::vtd::encode::address_mask_for;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

const PAGE: u64 = 4096;
/// Unmaps of more leaves than this invalidate the domain's whole IOTLB in
/// one descriptor instead of one page-selective descriptor per leaf.
const PAGE_INVALIDATIONS_MAX: usize = 16;
/// Faults logged per partition before going quiet, so a guest that points
/// its device at foreign memory in a loop cannot flood the console.
const FAULT_LOG_LIMIT: u32 = 16;

// ---- The VT-d second-level table behind a DmaDomain ----

/// Table frames for a VT-d second-level table, from the frame allocator.
/// Every frame written (or handed out zeroed by the CPU) is remembered, so
/// that it can be flushed from the CPU caches before the unit, which does
/// not snoop its table walks on QEMU (ECAP.C = 0), may read it.
#[derive(Default)]
pub struct VtdFrames {
    dirty: Vec<u64>,
}

impl VtdFrames {
    /// Writes every remembered frame back to memory and forgets them.
    fn flush(&mut self) {
        self.dirty.sort_unstable();
        self.dirty.dedup();
        for &pa in &self.dirty {
            flush_cache_range(pa as *const u8, PAGE as usize);
        }
        self.dirty.clear();
    }

    fn remember(&mut self, pa: u64) {
        if self.dirty.last() != Some(&pa) {
            self.dirty.push(pa);
        }
    }
}

impl FrameAllocator for VtdFrames {
    fn allocate_zeroed_frame(&mut self) -> Option<u64> {
        let pa = memory::alloc_frames(PAGE, PAGE)?.raw();
        // Zeroed by the CPU: the zeros may still sit in its caches.
        self.remember(pa);
        Some(pa)
    }

    fn frame(&self, pa: u64) -> &[u64; 512] {
        // SAFETY: `pa` is a frame this allocator handed out (the builder's
        // promise), identity-mapped and owned by the table.
        unsafe { &*(pa as *const [u64; 512]) }
    }

    fn frame_mut(&mut self, pa: u64) -> &mut [u64; 512] {
        self.remember(pa);
        // SAFETY: as in `frame`; the table is the frame's only writer.
        unsafe { &mut *(pa as *mut [u64; 512]) }
    }
}

/// The table in the format the unit's snoop control allows (DESIGN.md §4:
/// SNP on write-back RAM leaves only where ECAP.SC says the unit has it).
enum Format {
    Snooping(SecondLevelTable<VtdSecondLevel<true>, VtdFrames>),
    Plain(SecondLevelTable<VtdSecondLevel<false>, VtdFrames>),
}

/// Runs `$body` with `$table` bound to whichever format `$format` holds.
macro_rules! with_format {
    ($format:expr, $table:ident => $body:expr) => {
        match $format {
            Format::Snooping($table) => $body,
            Format::Plain($table) => $body,
        }
    };
}

/// Why a VT-d table operation failed.
pub enum VtdTableError {
    /// The table refused the mapping.
    Map(MapError),
    /// The table refused the unmap.
    Unmap(UnmapError),
    /// The unit did not complete an invalidation.
    Invalidation(String),
}

impl core::fmt::Debug for VtdTableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VtdTableError::Map(e) => write!(f, "second-level table refused the mapping: {e:?}"),
            VtdTableError::Unmap(e) => write!(f, "second-level table refused the unmap: {e:?}"),
            VtdTableError::Invalidation(e) => write!(f, "invalidation failed: {e}"),
        }
    }
}

/// One domain's VT-d second-level table on one unit: the [`DmaTable`] a
/// [`DmaDomain`] drives. Every change is flushed from the CPU caches before
/// the call returns; unmaps invalidate the domain's IOTLB (page-selective
/// per leaf where CAP.PSI allows). Maps need no invalidation: a unit
/// without caching mode (CAP.CM) never caches not-present entries (§6.1);
/// with it, the new pages are invalidated too.
pub struct VtdTable {
    unit: usize,
    domain: u16,
    caching_mode: bool,
    format: Format,
}

impl VtdTable {
    /// An empty table for domain `domain` on unit `unit` (nothing mapped:
    /// every DMA through it faults).
    ///
    /// # Errors
    /// A unit that is not on, cannot walk 4-level tables, or no memory.
    pub fn new(unit: &UnitInfo, domain: u16) -> Result<VtdTable, String> {
        let caps = unit.capabilities;
        caps.table_width().ok_or("the VT-d unit cannot walk 4-level second-level tables")?;
        let largest_page = if caps.large_pages_1gib() {
            PageSize::Size1GiB
        } else if caps.large_pages_2mib() {
            PageSize::Size2MiB
        } else {
            PageSize::Size4KiB
        };
        let options = TableOptions { largest_page, host_address_bits: unit.host_address_width.clamp(32, 52) };
        let no_root = "no memory for the VT-d second-level table's root";
        let format = if caps.snoop_control() {
            Format::Snooping(SecondLevelTable::with_options(VtdFrames::default(), options).ok_or(no_root)?)
        } else {
            Format::Plain(SecondLevelTable::with_options(VtdFrames::default(), options).ok_or(no_root)?)
        };
        let mut table = VtdTable { unit: unit.index, domain, caching_mode: caps.caching_mode(), format };
        table.flush();
        Ok(table)
    }

    /// The root (SL-PML4) frame, for the context entry.
    pub fn root_address(&self) -> u64 {
        with_format!(&self.format, table => table.root_address())
    }

    /// The domain ID.
    pub fn domain(&self) -> u16 {
        self.domain
    }

    fn flush(&mut self) {
        with_format!(&mut self.format, table => table.allocator_mut().flush());
    }

    fn invalidate(&self, leaves: &[(u64, PageSize)]) -> Result<(), VtdTableError> {
        let result = if leaves.len() > PAGE_INVALIDATIONS_MAX {
            iommu::invalidate_domain(self.unit, self.domain)
        } else {
            leaves.iter().try_for_each(|&(address, size)| {
                iommu::invalidate_pages(self.unit, self.domain, address, address_mask_for(size.bytes()))
            })
        };
        result.map_err(VtdTableError::Invalidation)
    }
}

impl DmaTable for VtdTable {
    type Error = VtdTableError;

    fn map(&mut self, iova: Iova, hpa: Hpa, size: u64, attr: MemoryAttribute, perms: Permissions) -> Result<(), VtdTableError> {
        let access = Access { read: perms.read, write: perms.write, execute: perms.execute };
        let memory = memory_type(attr);
        let result = with_format!(&mut self.format, table => table.map(iova.raw(), hpa.raw(), size, memory, access));
        self.flush();
        result.map_err(VtdTableError::Map)?;
        if self.caching_mode {
            // With caching mode the unit may hold the not-present entries.
            iommu::invalidate_domain(self.unit, self.domain).map_err(VtdTableError::Invalidation)?;
        }
        Ok(())
    }

    fn unmap(&mut self, iova: Iova, size: u64) -> Result<(), VtdTableError> {
        let leaves = with_format!(&mut self.format, table => table.unmap(iova.raw(), size)).map_err(VtdTableError::Unmap)?;
        self.flush();
        self.invalidate(&leaves)
    }
}

// ---- Assignment ----

/// A partition's functions and its domain.
struct Assignment {
    partition: usize,
    name: String,
    policy: FaultPolicy,
    unit: usize,
    functions: Vec<Bdf>,
    domain: DmaDomain<VtdTable>,
    /// Why the partition must stop (a fault under the `stop` policy).
    stop: Option<String>,
    faults_logged: u32,
}

/// Every partition's assignment. Locked before the VT-d units' lock.
static ASSIGNMENTS: Mutex<Vec<Assignment>> = Mutex::new(Vec::new());
/// Bit `n`: partition `n` (< 64) must stop (its reason is in its
/// assignment). Read without the lock on the exit path, so a stop decided
/// on another CPU's poll is seen at the partition's next exit.
static STOP_REQUESTED: AtomicU64 = AtomicU64::new(0);

fn stop_bit(partition: usize) -> u64 {
    1u64.checked_shl(partition as u32).unwrap_or(0)
}

/// Configuration-space offset of the interrupt line (7:0) and pin (15:8).
const INTERRUPT_REGISTER: u16 = 0x3c;
/// Shift of the interrupt pin in that register.
const INTERRUPT_PIN_SHIFT: u32 = 8;

/// What [`prepare`] found: BAR regions for the address space, the virtual
/// configuration space for the MMIO bus, the functions for [`attach`].
pub struct Prepared {
    /// One device region per memory BAR.
    pub regions: Vec<Region>,
    /// The partition's virtual configuration space.
    pub ecam: VirtualEcam,
    /// The functions, in virtual device order.
    pub functions: Vec<Bdf>,
    /// Each function's interrupt pin (1 = INTA .. 4 = INTD; 0: none), as
    /// its configuration header says.
    pub interrupt_pins: Vec<u8>,
}

/// Finds each of `config`'s PCI functions on bus 0, checks that it can be
/// given (an endpoint, behind a VT-d unit, BARs that are whole pages),
/// turns its decoding and bus mastering off until the guest turns them on,
/// and describes its BARs and virtual configuration space.
///
/// # Errors
/// Why a function cannot be assigned, naming it.
pub fn prepare(config: &bulkhead_config::Partition) -> Result<Prepared, String> {
    let bus = pci::enumerated().ok_or("PCI bus 0 could not be enumerated (see the log above)")?;
    let mut prepared =
        Prepared { regions: Vec::new(), ecam: VirtualEcam::new(Vec::new()), functions: Vec::new(), interrupt_pins: Vec::new() };
    let mut virtual_functions = Vec::new();
    let rw = Permissions { read: true, write: true, execute: false };
    for (i, function) in config.pci.iter().enumerate() {
        let field = format!("pci[{i}]");
        let address = function.address().ok_or_else(|| format!("{field}.bdf: '{}' is not BB:DD.F", function.bdf))?;
        let bdf = Bdf::from_rid(address.requester_id());
        if bdf.bus() != 0 {
            return Err(format!("{field}: {bdf}: only PCI bus 0 is enumerated on x86_64"));
        }
        let found = bus.function(bdf).ok_or_else(|| format!("{field}: there is no PCI function {bdf} on this machine"))?;
        if found.header_type != 0 {
            return Err(format!("{field}: {bdf} has header type {}: only endpoints can be assigned", found.header_type));
        }
        if iommu::unit_for(acpi_bdf(bdf)).is_none() {
            return Err(format!("{field}: no VT-d unit translates {bdf}'s DMA, so it cannot be confined"));
        }
        let mut bars = Vec::new();
        for bar in found.bars.iter().flatten() {
            let kind = match bar.kind {
                BarKind::Io => {
                    log::warn!("partition {}: {field} {bdf}: {bar} not passed (no I/O ports for PCI functions yet)", config.name);
                    continue;
                }
                BarKind::Memory32 => VirtualBarKind::Memory32 { prefetchable: bar.prefetchable },
                BarKind::Memory64 => VirtualBarKind::Memory64 { prefetchable: bar.prefetchable },
            };
            if bar.address == 0 {
                return Err(format!("{field}: {bdf}: {bar} was given no address by the firmware"));
            }
            if bar.size < PAGE || !bar.address.is_multiple_of(PAGE) {
                return Err(format!("{field}: {bdf}: {bar} is smaller than a page: mapping it would expose its neighbours"));
            }
            // DESIGN.md §1.5: prefetchable memory tolerates write-combining.
            let attr = if bar.prefetchable { MemoryAttribute::NormalNc } else { MemoryAttribute::DeviceNGnRE };
            prepared.regions.push(Region {
                gpa: Gpa::new(bar.address),
                hpa: Hpa::new(bar.address),
                size: bar.size,
                attr,
                perms: rw,
                kind: RegionKind::Device,
                dma: false,
            });
            bars.push(VirtualBar { index: bar.index as u8, kind, guest: bar.address, size: bar.size });
            log::info!(
                "partition {}: {field} {bdf} ({:04x}:{:04x}): {bar} at GPA = HPA {:#x}, {attr:?}",
                config.name,
                found.vendor,
                found.device,
                bar.address
            );
        }
        // Quiet until the guest enables it through its virtual config space.
        let mut ecam = bus.ecam();
        let mut command = pci_regs::command(&ecam, bdf);
        command.modify(COMMAND::IO_SPACE::CLEAR + COMMAND::MEMORY_SPACE::CLEAR + COMMAND::BUS_MASTER::CLEAR);
        pci_regs::set_command(&mut ecam, bdf, command);
        virtual_functions.push(VirtualFunction::new(Box::new(bus.config_access(bdf)), bars));
        prepared.functions.push(bdf);
        prepared.interrupt_pins.push((ecam.read32(bdf, INTERRUPT_REGISTER) >> INTERRUPT_PIN_SHIFT) as u8);
    }
    prepared.ecam = VirtualEcam::new(virtual_functions);
    Ok(prepared)
}

fn acpi_bdf(bdf: Bdf) -> acpi::Bdf {
    acpi::Bdf::from_requester_id(bdf.rid())
}

/// Gives partition `index` (named in `config`) a VT-d domain for
/// `functions`: context entries pointed at a fresh second-level table,
/// then the DMA view of `space` mapped and pinned.
///
/// # Errors
/// Why not; the functions are blocked again before returning.
pub fn attach(index: usize, config: &bulkhead_config::Partition, space: &AddressSpace, functions: &[Bdf]) -> Result<(), String> {
    let units: Vec<Option<usize>> = functions.iter().map(|&bdf| iommu::unit_for(acpi_bdf(bdf))).collect();
    let unit = match units.as_slice() {
        [Some(first), rest @ ..] if rest.iter().all(|u| *u == Some(*first)) => *first,
        _ => return Err(String::from("pci: every function of a partition must be behind the same VT-d unit")),
    };
    let info = iommu::unit_info(unit).ok_or("pci: the VT-d unit is not on")?;
    let caps = info.capabilities;
    let domain_id = u16::try_from(index)
        .ok()
        .and_then(|i| caps.first_domain_id().checked_add(i))
        .filter(|&id| u32::from(id) < caps.domain_count())
        .ok_or_else(|| format!("pci: VT-d unit {unit} has only {} domain IDs", caps.domain_count()))?;
    let table = VtdTable::new(&info, domain_id)?;
    let root = table.root_address();
    let pin_limit = space.dma_regions().map(|r| (r.size / PIN_PAGE_SIZE) as usize).sum();
    let mut assignment = Assignment {
        partition: index,
        name: config.name.clone(),
        policy: config.on_fault,
        unit,
        functions: Vec::new(),
        domain: DmaDomain::new(&config.name, table, pin_limit),
        stop: None,
        faults_logged: 0,
    };
    let result = set_up(&mut assignment, functions, root, domain_id, space);
    if let Err(reason) = result {
        block(&mut assignment);
        let _ = assignment.domain.detach();
        return Err(reason);
    }
    log::info!(
        "partition {}: VT-d domain {domain_id} on unit {unit} ({:#x}): {} attached, second-level table {root:#x} \
         (48-bit, {}); DMA view: {} region(s), {} page(s) pinned",
        config.name,
        info.base,
        list(&assignment.functions),
        if caps.snoop_control() { "snoop control: SNP on write-back RAM" } else { "no snoop control" },
        space.dma_regions().count(),
        assignment.domain.pins().pinned()
    );
    if pin_limit == 0 {
        log::warn!("partition {}: no memory with dma = true: its devices can DMA nowhere", config.name);
    }
    ASSIGNMENTS.lock().push(assignment);
    Ok(())
}

/// The domain's lifecycle for a new assignment: each function's context
/// entry pointed at the table (attach), mappings allowed, the DMA view
/// mapped.
fn set_up(assignment: &mut Assignment, functions: &[Bdf], root: u64, domain_id: u16, space: &AddressSpace) -> Result<(), String> {
    for &bdf in functions {
        iommu::set_context(assignment.unit, acpi_bdf(bdf), Some((root, domain_id)))
            .map_err(|e| format!("pci: {bdf}: context entry: {e}"))?;
        assignment.functions.push(bdf);
        assignment.domain.attach(u32::from(bdf.rid())).map_err(|e| format!("pci: {bdf}: {e}"))?;
    }
    assignment.domain.allow_mappings().map_err(|e| format!("pci: {e}"))?;
    assignment.domain.map_dma_view(space).map_err(|e| format!("pci: DMA view: {e}"))
}

/// Blocks every function of `assignment`: context entry cleared (with the
/// invalidations), memory decoding and bus mastering off.
fn block(assignment: &mut Assignment) {
    for &bdf in &assignment.functions {
        if let Err(e) = iommu::set_context(assignment.unit, acpi_bdf(bdf), None) {
            log::error!("partition {}: blocking {bdf}: {e}", assignment.name);
        }
        if let Some(bus) = pci::enumerated() {
            let mut ecam = bus.ecam();
            let mut command = pci_regs::command(&ecam, bdf);
            command.modify(COMMAND::MEMORY_SPACE::CLEAR + COMMAND::BUS_MASTER::CLEAR);
            pci_regs::set_command(&mut ecam, bdf, command);
        }
    }
}

fn list(functions: &[Bdf]) -> String {
    let names: Vec<String> = functions.iter().map(|b| format!("{b}")).collect();
    names.join(", ")
}

/// Takes partition `index`'s functions back once it has stopped: blocked,
/// domain detached, pins released. Does nothing for a partition without
/// functions (or one already released).
pub fn release(index: usize) {
    let mut assignments = ASSIGNMENTS.lock();
    let Some(assignment) = assignments.iter_mut().find(|a| a.partition == index) else { return };
    if assignment.domain.state() == DomainState::Detached {
        return;
    }
    block(assignment);
    let pinned = assignment.domain.pins().pinned();
    match assignment.domain.detach() {
        Ok(_) => log::info!(
            "partition {}: {} blocked again (context entry cleared, context cache and IOTLB invalidated); \
             VT-d domain {} detached, {pinned} pinned page(s) released",
            assignment.name,
            list(&assignment.functions),
            assignment.domain.table().domain()
        ),
        Err(e) => log::error!("partition {}: detaching its DMA domain: {e}", assignment.name),
    }
}

// ---- Faults ----

/// Called at every exit of partition `index` if it owns PCI functions:
/// reports new VT-d faults (one FSTS read per unit when there are none)
/// and returns why the partition must stop, if a fault under the `stop`
/// policy says so.
pub fn poll(index: usize) -> Option<String> {
    let bit = stop_bit(index);
    if STOP_REQUESTED.load(Ordering::Acquire) & bit == 0 && !iommu::fault_pending() {
        return None;
    }
    handle_faults("");
    // Partitions beyond the mask's 64 bits have no bit: they find their
    // stop in their assignment at their next poll after a fault.
    if bit != 0 && STOP_REQUESTED.fetch_and(!bit, Ordering::AcqRel) & bit == 0 {
        return None;
    }
    ASSIGNMENTS.lock().iter().find(|a| a.partition == index).and_then(|a| a.stop.clone())
}

/// Reports the faults still recorded (`when`: e.g. "partitions stopped").
pub fn report_faults(when: &str) {
    handle_faults(&format!(" ({when})"));
}

/// Drains every unit's fault records; logs each with the partition owning
/// the device and applies that partition's policy.
fn handle_faults(when: &str) {
    let faults = iommu::drain_faults();
    if faults.is_empty() {
        return;
    }
    let mut assignments = ASSIGNMENTS.lock();
    for (unit, base, fault) in faults {
        let owner = assignments.iter_mut().find(|a| a.functions.iter().any(|b| b.rid() == fault.source_id));
        let Some(assignment) = owner else {
            log::warn!("VT-d fault{when}: unit {unit} at {base:#x}: {fault} (device assigned to no partition)");
            continue;
        };
        assignment.faults_logged = assignment.faults_logged.saturating_add(1);
        let quiet = assignment.faults_logged > FAULT_LOG_LIMIT;
        if !quiet {
            log::warn!(
                "VT-d fault{when}: unit {unit} at {base:#x}: {fault}: DMA of partition '{}' refused",
                assignment.name
            );
            if assignment.faults_logged == FAULT_LOG_LIMIT {
                log::warn!("partition {}: further VT-d faults are not logged", assignment.name);
            }
        }
        apply_policy(assignment, &fault, quiet);
    }
}

fn apply_policy(assignment: &mut Assignment, fault: &FaultRecord, quiet: bool) {
    if assignment.stop.is_some() || assignment.domain.state() == DomainState::Detached {
        return;
    }
    let device = Bdf::from_rid(fault.source_id);
    let access = if fault.read { "read" } else { "write" };
    match assignment.policy {
        FaultPolicy::Inject => {
            if !quiet {
                log::warn!(
                    "partition {}: the DMA {access} by {device} at {:#x} did not happen; it keeps running (fault policy: inject)",
                    assignment.name,
                    fault.address
                );
            }
        }
        FaultPolicy::Stop => {
            block(assignment);
            assignment.stop = Some(format!(
                "its device {device} attempted a DMA {access} at {:#x} outside its DMA view (VT-d fault reason {:#x}); \
                 device blocked, partition stopped (fault policy: stop)",
                fault.address, fault.reason
            ));
            STOP_REQUESTED.fetch_or(stop_bit(assignment.partition), Ordering::AcqRel);
        }
    }
}

// ---- Benchmark (`bench=dma`) ----

/// Mappings timed per page size.
const BENCH_OPERATIONS: u64 = 256;
/// Where the benchmark maps (I/O virtual = host physical): high, page
/// aligned for every size; no context entry points at the scratch domain,
/// so no device can ever reach these addresses. Each page size gets its
/// own 512 GiB (one root entry): tables emptied by unmapping stay linked,
/// and a large leaf is never placed over a linked table.
const BENCH_BASE: u64 = 0x100_0000_0000;
const BENCH_SPAN: u64 = 1 << 39;
/// The pseudo requester ID the scratch domain's lifecycle records as
/// attached: all ones, a function no context entry names.
const BENCH_DEVICE: u32 = u32::MAX;

/// Maps and unmaps [`BENCH_OPERATIONS`] 4 KiB pages, then as many 2 MiB
/// pages, through a [`DmaDomain`] over a scratch VT-d domain (the real
/// path: pinning, table, cache flushes, invalidations), timed with the TSC
/// (under `-icount shift=0`: executed instructions), and prints `bench:`
/// lines with the cost per operation and the invalidations per operation.
pub fn bench() {
    if let Err(reason) = run_bench() {
        log::error!("DMA benchmark: {reason}");
    }
}

fn run_bench() -> Result<(), String> {
    let unit = iommu::first_unit().ok_or("no VT-d unit is on")?;
    let info = iommu::unit_info(unit).ok_or("no VT-d unit is on")?;
    let caps = info.capabilities;
    // The highest domain ID: partitions use the lowest ones.
    let domain_id = u16::try_from(caps.domain_count() - 1).unwrap_or(u16::MAX);
    let sizes = [PageSize::Size4KiB, PageSize::Size2MiB];
    let pin_limit = sizes.iter().map(|s| (BENCH_OPERATIONS * s.bytes() / PIN_PAGE_SIZE) as usize).sum();
    let mut domain = DmaDomain::new("dma-bench", VtdTable::new(&info, domain_id)?, pin_limit);
    domain.attach(BENCH_DEVICE).map_err(|e| format!("{e}"))?;
    domain.allow_mappings().map_err(|e| format!("{e}"))?;
    let rw = Permissions { read: true, write: true, execute: false };
    let line = |text: core::fmt::Arguments<'_>| super::console::line(format_args!("[bulkhead] bench: {text}"));
    line(format_args!(
        "DMA map/unmap through a DMA domain on VT-d unit {unit} (scratch domain {domain_id}, {} operations per size; \
         page-selective invalidation {}, queued invalidation {}, table flushes: {})",
        BENCH_OPERATIONS,
        if caps.page_selective_invalidation() { "yes" } else { "no" },
        if caps.queued_invalidation() { "yes" } else { "no" },
        if caps.coherent() { "no (coherent)" } else { "clflush per written frame" }
    ));
    for (round, size) in (0u64..).zip(sizes) {
        let bytes = size.bytes();
        let name = if size == PageSize::Size4KiB { "4 KiB" } else { "2 MiB" };
        let address = |n: u64| BENCH_BASE + round * BENCH_SPAN + n * bytes;
        let before = iommu::invalidation_counts(unit);
        let start = rdtsc();
        for n in 0..BENCH_OPERATIONS {
            domain
                .map(Iova::new(address(n)), Hpa::new(address(n)), bytes, MemoryAttribute::NormalWb, rw)
                .map_err(|e| format!("map of {name} page {n}: {e}"))?;
        }
        let mapped = rdtsc();
        let middle = iommu::invalidation_counts(unit);
        for n in 0..BENCH_OPERATIONS {
            domain.unmap(Iova::new(address(n)), bytes).map_err(|e| format!("unmap of {name} page {n}: {e}"))?;
        }
        let unmapped = rdtsc();
        let after = iommu::invalidation_counts(unit);
        let per_op = |ticks: u64| ticks / BENCH_OPERATIONS;
        let rate = |count: u64| format!("{}.{:02}", count / BENCH_OPERATIONS, count % BENCH_OPERATIONS * 100 / BENCH_OPERATIONS);
        // Throughput in MiB of mappings per 10^9 ticks (per virtual second
        // when one tick is one nanosecond).
        let throughput = |ticks: u64| ((BENCH_OPERATIONS * bytes) >> 20).saturating_mul(1_000_000_000) / ticks.max(1);
        line(format_args!(
            "DMA map {name}: {} TSC ticks/op ({} MiB per 10^9 ticks), {} invalidation descriptors/op, {} waits/op",
            per_op(mapped.wrapping_sub(start)),
            throughput(mapped.wrapping_sub(start)),
            rate(middle.invalidations - before.invalidations),
            rate(middle.waits - before.waits)
        ));
        line(format_args!(
            "DMA unmap {name}: {} TSC ticks/op ({} MiB per 10^9 ticks), {} invalidation descriptors/op, {} waits/op",
            per_op(unmapped.wrapping_sub(mapped)),
            throughput(unmapped.wrapping_sub(mapped)),
            rate(after.invalidations - middle.invalidations),
            rate(after.waits - middle.waits)
        ));
    }
    domain.detach().map_err(|e| format!("{e}"))?;
    Ok(())
}
