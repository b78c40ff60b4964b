//! Intel VT-d at run time: every DMA remapping unit the ACPI DMAR lists is
//! turned on with a root table whose context entries are all not present,
//! so every device is blocked until a partition is given it ("unassigned
//! devices are blocked", issue 6). Plus the DMA isolation self-test
//! (`selftest=dma`).
//!
//! Per unit: its register page mapped uncached in our tables; probe
//! (version, CAP/ECAP, one summary line); fault interrupt masked (the
//! hypervisor runs with interrupts masked, so faults are polled: after the
//! self-test ([`report_faults`]), at the exits of partitions owning PCI
//! functions and when the partitions have stopped (`assign`));
//! stale faults drained; root table and bus-0 context table written in
//! hypervisor-pool pages and flushed out of the CPU caches when the unit is
//! not coherent (ECAP.C = 0, QEMU's case); root pointer latched; caches
//! invalidated through the registers; queued invalidation on (where
//! ECAP.QI) and exercised once; translation on, checked in GSTS.
//!
//! RMRRs are logged and honoured by nobody: Bulkhead gives no RMRR memory
//! to any device, so a device that relies on one (USB legacy, integrated
//! graphics) faults like any other unassigned device.
//!
//! For PCI assignment ([`super::assign`]) this module points bus-0 context
//! entries at a domain's second-level table or blocks them again
//! ([`set_context`]), invalidates per domain or per page, and polls and
//! drains the fault records ([`fault_pending`], [`drain_faults`]).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_arch_x86_64::cpu::mmu::flush_cache_range;
use bulkhead_core::acpi::{self, DeviceScope, Drhd, PhysicalMemory, ScopeKind};
use bulkhead_drivers::vtd::{self, FaultRecord, InvalidationQueue, Vtd};
use spin::Mutex;

use super::paging::{self, Live};
use bulkhead_drivers::pci::{self, BarKind, COMMAND, Ecam, Function};

/// Bytes of one table page.
const PAGE: usize = 4096;

/// A zeroed, 4 KiB-aligned page of the hypervisor pool, kept for ever (the
/// unit reads it for as long as the machine runs).
#[repr(C, align(4096))]
struct Page([u8; PAGE]);

fn page() -> &'static mut Page {
    Box::leak(Box::new(Page([0; PAGE])))
}

/// One live unit.
struct Unit {
    index: usize,
    drhd: Drhd,
    vtd: Vtd,
    /// Bus 0's context table (256 entries of 16 bytes, by device.function).
    context: &'static mut Page,
    /// The DMAR's host address width: addresses a second-level table may hold.
    host_address_width: u32,
}

/// Every live unit, for fault polling and domain changes. Lock order:
/// [`super::assign`]'s table of assignments first, then this one; never the
/// other way round.
static UNITS: Mutex<Vec<Unit>> = Mutex::new(Vec::new());

/// The flush the driver uses: a no-op is never chosen, so a coherent unit
/// pays a few CLFLUSHes, which is harmless.
fn flush(address: *const u8, len: usize) {
    flush_cache_range(address, len);
}

/// Finds, maps and turns on every unit of the DMAR. Returns how many are
/// on; an error (no DMAR, a unit that fails) is logged and leaves the
/// machine without DMA protection for the units that failed, which the log
/// says plainly.
pub fn init(memory: &dyn PhysicalMemory, rsdp: u64, live: &Live) -> usize {
    let dmar = match acpi::find_table(memory, rsdp, b"DMAR").and_then(|t| acpi::parse_dmar(&t)) {
        Ok(dmar) => dmar,
        Err(err) => {
            log::warn!("ACPI DMAR: {err}: no VT-d, device DMA is not remapped");
            return 0;
        }
    };
    log::info!(
        "ACPI DMAR: host address width {}, flags {:#x}, {} unit(s), {} reserved region(s), {} other structure(s)",
        dmar.host_address_width,
        dmar.flags,
        dmar.units.len(),
        dmar.reserved.len(),
        dmar.skipped
    );
    for rmrr in &dmar.reserved {
        let devices: Vec<String> = rmrr.scopes.iter().map(describe_scope).collect();
        log::warn!(
            "ACPI DMAR: RMRR {:#x}..={:#x} for {devices:?}: not honoured, Bulkhead gives no RMRR memory to any device",
            rmrr.base,
            rmrr.limit
        );
    }
    let mut units = UNITS.lock();
    for (index, drhd) in dmar.units.into_iter().enumerate() {
        match start_unit(index, &drhd, live) {
            Ok((vtd, context)) => units.push(Unit {
                index,
                drhd,
                vtd,
                context,
                host_address_width: u32::from(dmar.host_address_width),
            }),
            Err(message) => log::error!("VT-d unit {index} at {:#x}: {message}: DMA through it is NOT remapped", drhd.register_base),
        }
    }
    units.len()
}

/// A device scope for the log: the BDF of a PCI function (paths through
/// bridges are not resolved yet: only bus 0 is read), the kind and
/// enumeration ID of anything else.
fn describe_scope(scope: &DeviceScope) -> String {
    let at = scope.bdf(|_| None).map_or(String::from("path through bridges"), |b| format!("{b}"));
    match scope.kind {
        ScopeKind::PciEndpoint => at,
        ScopeKind::PciSubHierarchy => format!("{at} and below"),
        kind => format!("{kind:?} {} ({at})", scope.enumeration_id),
    }
}

fn start_unit(index: usize, drhd: &Drhd, live: &Live) -> Result<(Vtd, &'static mut Page), String> {
    let base = drhd.register_base;
    paging::map_mmio(base, vtd::REGISTER_PAGE_SIZE, live)?;
    // SAFETY: the register page was just mapped uncached, and nothing else
    // drives the unit (the firmware is gone).
    let mut unit = unsafe { Vtd::probe(base as usize, flush) }.map_err(|e| format!("{e:?}"))?;
    let caps = unit.capabilities();
    let (major, minor) = unit.version();
    let scope: Vec<String> = drhd.scopes.iter().map(describe_scope).collect();
    log::info!(
        "VT-d unit {index} at {base:#x}: version {major}.{minor}, CAP {:#018x} ECAP {:#018x}: {caps}; segment {}, {}scopes {scope:?}",
        caps.cap,
        caps.ecap,
        drhd.segment,
        if drhd.include_pci_all { "INCLUDE_PCI_ALL, " } else { "" },
    );
    if caps.table_width().is_none() {
        // Blocking needs no second-level table, so the unit is still turned
        // on; only assigning devices behind it will be refused.
        log::warn!(
            "VT-d unit {index}: {:?}: devices behind it can be blocked but not assigned",
            vtd::VtdError::NoFourLevelTables(caps.sagaw())
        );
    }
    if unit.translation_enabled() {
        log::warn!("VT-d unit {index}: firmware left translation on (GSTS {:#x}); replacing its tables", unit.global_status());
    }
    unit.mask_fault_interrupt();
    let stale = drain(index, &unit);
    if stale > 0 {
        log::warn!("VT-d unit {index}: {stale} fault(s) recorded before Bulkhead took over");
    }

    // Root table: bus 0's entry points at an all-zero context table (every
    // device on bus 0 blocked, and ready for assignment); other buses have
    // no root entry, which blocks them as well (fault reason 1).
    let root = page();
    let context = page();
    let context_pa = &raw const *context as u64;
    let entry = vtd::encode::root_entry(context_pa);
    root.0[..16].copy_from_slice(&[entry[0].to_le_bytes(), entry[1].to_le_bytes()].concat());
    flush(context.0.as_ptr(), PAGE);
    flush(root.0.as_ptr(), PAGE);
    let root_pa = &raw const *root as u64;
    unit.set_root_table(root_pa).map_err(|e| format!("root table: {e:?}"))?;
    unit.invalidate_all().map_err(|e| format!("register-based invalidation: {e:?}"))?;

    if caps.queued_invalidation() {
        let queue = page();
        let status = page();
        // SAFETY: both pages are fresh, leaked (live for ever), used by this
        // unit only, and identity-mapped (virtual = physical).
        let queue = unsafe {
            InvalidationQueue::new(
                queue.0.as_mut_ptr(),
                &raw const *queue as u64,
                status.0.as_mut_ptr().cast(),
                &raw const *status as u64,
            )
        };
        unit.enable_queued_invalidation(queue).map_err(|e| format!("queued invalidation: {e:?}"))?;
        unit.invalidate_all().map_err(|e| format!("queued invalidation: {e:?}"))?;
    }
    unit.enable_translation().map_err(|e| format!("translation enable: {e:?}"))?;
    log::info!(
        "VT-d unit {index}: translation on (GSTS {:#x}), root table {root_pa:#x}, {} invalidation, {}; \
         every device blocked (no context entry present), fault interrupt masked (faults are polled)",
        unit.global_status(),
        if unit.queued() { "queued" } else { "register-based" },
        if caps.coherent() { "coherent table walks" } else { "tables flushed from the CPU caches (not coherent)" },
    );
    Ok((unit, context))
}

/// Logs and clears the faults `unit` recorded; returns how many.
fn drain(index: usize, unit: &Vtd) -> usize {
    let mut count = 0;
    let lost = unit.drain_faults(|fault| {
        count += 1;
        log::warn!("VT-d fault: unit {index}: {fault}");
    });
    if lost {
        log::warn!("VT-d unit {index}: fault recording overflowed: faults were lost");
    }
    count
}

/// Polls every unit's fault recording registers, logs each fault with
/// `when`, and returns the faults (the host runs with interrupts masked, so
/// this is called at fixed points: after the self-test, when the
/// partitions have stopped).
pub fn report_faults(when: &str) -> Vec<FaultRecord> {
    let mut faults = Vec::new();
    for unit in UNITS.lock().iter() {
        let lost = unit.vtd.drain_faults(|fault| {
            log::warn!("VT-d fault ({when}): unit {} at {:#x}: {fault}", unit.index, unit.drhd.register_base);
            faults.push(fault);
        });
        if lost {
            log::warn!("VT-d unit {} ({when}): fault recording overflowed: faults were lost", unit.index);
        }
    }
    faults
}

// ---- What PCI assignment asks of the units ----

/// What a unit offers a DMA domain.
#[derive(Clone, Copy, Debug)]
pub struct UnitInfo {
    /// The unit's number in the DMAR, for logs.
    pub index: usize,
    /// Its register base, for logs.
    pub base: u64,
    /// CAP/ECAP.
    pub capabilities: vtd::Capabilities,
    /// Host address bits a second-level entry may hold (DMAR HAW).
    pub host_address_width: u32,
}

/// The unit (by its DMAR number) that translates `bdf`'s DMA: the one
/// whose device scope names it as an endpoint, else one that has
/// INCLUDE_PCI_ALL for segment 0 (the DMAR's rule, §8.3).
pub fn unit_for(bdf: acpi::Bdf) -> Option<usize> {
    let units = UNITS.lock();
    let named = units.iter().find(|u| {
        u.drhd.segment == 0
            && u.drhd.scopes.iter().any(|s| s.kind == ScopeKind::PciEndpoint && s.bdf(|_| None) == Some(bdf))
    });
    named.or_else(|| units.iter().find(|u| u.drhd.segment == 0 && u.drhd.include_pci_all)).map(|u| u.index)
}

/// The first live unit (the DMA benchmark's).
pub fn first_unit() -> Option<usize> {
    UNITS.lock().first().map(|u| u.index)
}

/// What unit `unit` offers.
pub fn unit_info(unit: usize) -> Option<UnitInfo> {
    UNITS.lock().iter().find(|u| u.index == unit).map(|u| UnitInfo {
        index: u.index,
        base: u.drhd.register_base,
        capabilities: u.vtd.capabilities(),
        host_address_width: u.host_address_width,
    })
}

/// Runs `f` on unit `unit`.
fn with_unit<R>(unit: usize, f: impl FnOnce(&mut Unit) -> R) -> Result<R, String> {
    let mut units = UNITS.lock();
    let found = units.iter_mut().find(|u| u.index == unit).ok_or_else(|| format!("VT-d unit {unit} is not on"))?;
    Ok(f(found))
}

/// Bit 0 of a context entry's low half: present; bits 87:72 (23:8 of the
/// high half): the domain ID (§9.3, `vtd::encode::context_entry`).
const CONTEXT_PRESENT: u64 = 1 << 0;
const CONTEXT_DID_SHIFT: u32 = 8;
/// Bytes of one context entry.
const CONTEXT_ENTRY_SIZE: usize = 16;

/// Points `bdf`'s context entry at the second-level table `table_pa` in
/// domain `domain` (`Some`), or blocks the device (`None`: entry not
/// present); then invalidates the context cache and IOTLB of the domain
/// the entry had or gets, and waits for that to complete. Only bus 0 has a
/// context table.
///
/// # Errors
/// Bus other than 0, a unit that is not on, a failed invalidation.
pub fn set_context(unit: usize, bdf: acpi::Bdf, target: Option<(u64, u16)>) -> Result<(), String> {
    if bdf.bus != 0 {
        return Err(format!("{bdf}: only bus 0 has a context table"));
    }
    let slot = (usize::from(bdf.device) << 3 | usize::from(bdf.function)) * CONTEXT_ENTRY_SIZE;
    with_unit(unit, |u| {
        let width = u.vtd.capabilities().table_width().ok_or("the unit cannot walk 4-level second-level tables")?;
        let entry = u.context.0[slot..].as_mut_ptr().cast::<u64>();
        // SAFETY: `slot` + 16 lies inside the context table's page (device
        // < 32, function < 8), which is 4 KiB aligned, so both quadwords are
        // aligned; the unit reads the page, hence volatile.
        let (low, high) = unsafe { (entry.read_volatile(), entry.add(1).read_volatile()) };
        let old_domain = (low & CONTEXT_PRESENT != 0).then_some((high >> CONTEXT_DID_SHIFT) as u16);
        // The present bit is in the low half: clear it first when blocking,
        // set it last when pointing, so the unit never sees a half-written
        // present entry.
        // SAFETY: as above.
        unsafe {
            match target {
                Some((table_pa, domain)) => {
                    let [new_low, new_high] = vtd::encode::context_entry(table_pa, width, domain);
                    entry.write_volatile(0);
                    entry.add(1).write_volatile(new_high);
                    entry.write_volatile(new_low);
                }
                None => {
                    entry.write_volatile(0);
                    entry.add(1).write_volatile(0);
                }
            }
        }
        flush(entry.cast(), CONTEXT_ENTRY_SIZE);
        for domain in old_domain.into_iter().chain(target.map(|(_, d)| d)) {
            u.vtd.invalidate_domain(domain).map_err(|e| format!("invalidating domain {domain}: {e:?}"))?;
        }
        Ok(())
    })?
}

/// Invalidates domain `domain`'s IOTLB for the `2^address_mask` pages at
/// `address` on unit `unit` (page-selective where the unit can).
///
/// # Errors
/// A unit that is not on, or a failed invalidation.
pub fn invalidate_pages(unit: usize, domain: u16, address: u64, address_mask: u8) -> Result<(), String> {
    with_unit(unit, |u| u.vtd.invalidate_pages(domain, address, address_mask).map_err(|e| format!("{e:?}")))?
}

/// Invalidates domain `domain`'s context cache and IOTLB on unit `unit`.
///
/// # Errors
/// A unit that is not on, or a failed invalidation.
pub fn invalidate_domain(unit: usize, domain: u16) -> Result<(), String> {
    with_unit(unit, |u| u.vtd.invalidate_domain(domain).map_err(|e| format!("{e:?}")))?
}

/// The invalidations unit `unit` has issued so far.
pub fn invalidation_counts(unit: usize) -> vtd::InvalidationCounts {
    with_unit(unit, |u| u.vtd.invalidation_counts()).unwrap_or_default()
}

/// Whether any unit has a fault pending or lost: one FSTS read per unit,
/// cheap enough for a vCPU's exit path.
pub fn fault_pending() -> bool {
    UNITS.lock().iter().any(|u| u.vtd.fault_pending())
}

/// Reads and clears every unit's fault records: `(unit, register base,
/// fault)` each. A lost fault (overflow) is logged here.
pub fn drain_faults() -> Vec<(usize, u64, FaultRecord)> {
    let mut faults = Vec::new();
    for unit in UNITS.lock().iter() {
        let lost = unit.vtd.drain_faults(|fault| faults.push((unit.index, unit.drhd.register_base, fault)));
        if lost {
            log::warn!("VT-d unit {}: fault recording overflowed: faults were lost", unit.index);
        }
    }
    faults
}

/// The QEMU `edu` device's ID and DMA registers (QEMU docs/specs/edu.rst).
mod edu {
    /// Vendor and device ID.
    pub const ID: (u16, u16) = (0x1234, 0x11e8);
    /// DMA source address (64-bit).
    pub const DMA_SOURCE: usize = 0x80;
    /// DMA destination address (64-bit).
    pub const DMA_DESTINATION: usize = 0x88;
    /// DMA transfer count in bytes.
    pub const DMA_COUNT: usize = 0x90;
    /// DMA command: bit 0 start (cleared when done), bit 1 direction.
    pub const DMA_COMMAND: usize = 0x98;
    pub const COMMAND_START: u64 = 1 << 0;
    /// Direction 1: from the device's buffer to RAM.
    pub const COMMAND_TO_RAM: u64 = 1 << 1;
    /// The device's 4 KiB DMA buffer, at this address in its own DMA
    /// space and at this offset in BAR0.
    pub const BUFFER: u64 = 0x4_0000;
    pub const BUFFER_SIZE: usize = 4096;
    /// A transfer takes ~100 ms of virtual time; each poll is an MMIO read
    /// (an exit to QEMU under TCG), so this bound is generous seconds.
    pub const POLL_LIMIT: u32 = 50_000_000;
}

/// What the self-test fills the target page with, and the edu's buffer with.
const PATTERN: u8 = 0xa5;
const DEVICE_DATA: u8 = 0x5a;

/// The DMA isolation self-test: the edu, assigned to no partition, is told
/// to copy its buffer into a page of hypervisor RAM; the page must be
/// unchanged and VT-d must have recorded a fault for the edu's requester
/// ID. Returns whether it passed; logs every step.
pub fn dma_selftest(memory: &dyn PhysicalMemory, rsdp: u64, live: &Live) -> bool {
    match run_selftest(memory, rsdp, live) {
        Ok(()) => {
            log::info!("DMA self-test: passed: the unassigned edu could not write hypervisor memory, and VT-d recorded why");
            true
        }
        Err(message) => {
            log::error!("DMA self-test: FAILED: {message}");
            false
        }
    }
}

fn run_selftest(memory: &dyn PhysicalMemory, rsdp: u64, live: &Live) -> Result<(), String> {
    if UNITS.lock().is_empty() {
        return Err(String::from("no VT-d unit is on"));
    }
    let bus = super::pci::bus0(memory, rsdp, live)?;
    let edu: Function = *bus
        .functions()
        .iter()
        .find(|f| (f.vendor, f.device) == edu::ID)
        .ok_or("no edu device (1234:11e8) on bus 0 (QEMU: -device edu,dma_mask=0xffffffffffffffff)")?;
    let bar = edu.bars[0]
        .filter(|b| b.kind != BarKind::Io && b.address != 0)
        .map(|b| b.address)
        .ok_or("the edu's BAR0 is not assigned")?;
    let mut ecam = bus.ecam();
    let set_memory_and_bus_master = |ecam: &mut Ecam, enable: bool| {
        let mut command = pci::command(ecam, edu.bdf);
        if enable {
            command.modify(COMMAND::MEMORY_SPACE::SET + COMMAND::BUS_MASTER::SET);
        } else {
            command.modify(COMMAND::MEMORY_SPACE::CLEAR + COMMAND::BUS_MASTER::CLEAR);
        }
        pci::set_command(ecam, edu.bdf, command);
    };
    // Its register page and its buffer page.
    paging::map_mmio(bar, PAGE as u64, live)?;
    paging::map_mmio(bar + edu::BUFFER, PAGE as u64, live)?;
    let register = |offset: usize| (bar as usize + offset) as *mut u64;
    let buffer = (bar + edu::BUFFER) as *mut u8;

    let target = page();
    target.0.fill(PATTERN);
    let target_pa = &raw const *target as u64;
    flush(target.0.as_ptr(), PAGE);
    // SAFETY: the buffer page of BAR0 was just mapped uncached; the edu is
    // the hypervisor's (assigned to no partition).
    unsafe { core::ptr::write_bytes(buffer, DEVICE_DATA, edu::BUFFER_SIZE) };
    let stale = report_faults("before the self-test");
    if !stale.is_empty() {
        log::warn!("DMA self-test: {} stale fault(s) cleared first", stale.len());
    }

    log::info!(
        "DMA self-test: edu {} (BAR0 {bar:#x}, requester ID {:#06x}), assigned to no partition, told to copy {} bytes \
         from its buffer to hypervisor page {target_pa:#x}",
        edu.bdf,
        edu.bdf.rid(),
        edu::BUFFER_SIZE
    );
    set_memory_and_bus_master(&mut ecam, true);
    // SAFETY: the edu's register page is mapped uncached; these are its DMA
    // registers, and pointing its DMA at our page is the point: the IOMMU
    // must stop it.
    unsafe {
        register(edu::DMA_SOURCE).write_volatile(edu::BUFFER);
        register(edu::DMA_DESTINATION).write_volatile(target_pa);
        register(edu::DMA_COUNT).write_volatile(edu::BUFFER_SIZE as u64);
        register(edu::DMA_COMMAND).write_volatile(edu::COMMAND_START | edu::COMMAND_TO_RAM);
    }
    let mut polls = 0;
    // SAFETY: as above.
    while unsafe { register(edu::DMA_COMMAND).read_volatile() } & edu::COMMAND_START != 0 {
        polls += 1;
        if polls == edu::POLL_LIMIT {
            set_memory_and_bus_master(&mut ecam, false);
            return Err(format!("the edu's transfer did not finish after {polls} polls"));
        }
        core::hint::spin_loop();
    }
    set_memory_and_bus_master(&mut ecam, false);
    log::info!("DMA self-test: the edu reports its transfer done after {polls} polls; bus mastering off again");

    flush(target.0.as_ptr(), PAGE);
    // SAFETY: our own page; volatile, since a device may have written it.
    let changed = (0..PAGE).filter(|&i| unsafe { core::ptr::read_volatile(&target.0[i]) } != PATTERN).count();
    let faults = report_faults("after the DMA self-test");
    let ours: Vec<&FaultRecord> = faults
        .iter()
        .filter(|f| f.source_id == edu.bdf.rid() && f.address == target_pa && !f.read)
        .collect();
    match (changed, ours.first()) {
        (0, Some(fault)) => {
            log::info!("DMA self-test: page {target_pa:#x} unchanged; VT-d blocked and recorded it: {fault}");
            Ok(())
        }
        (0, None) => Err(format!("page unchanged, but VT-d recorded no write fault for {} at {target_pa:#x}", edu.bdf)),
        (n, _) => Err(format!("{n} byte(s) of hypervisor page {target_pa:#x} were overwritten by DMA")),
    }
}
