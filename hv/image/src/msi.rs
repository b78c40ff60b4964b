//! MSIs on arm64: PCI devices' message-signalled interrupts become LPIs
//! through the GICv3 ITS, taken by the hypervisor and handed to a
//! registered handler.
//!
//! At boot ([`init`], when the device tree has an `arm,gic-v3-its`) the ITS
//! gets flat device and collection tables and a command queue, and one LPI
//! configuration table is shared by every redistributor. Each CPU that
//! initializes its GIC afterwards enables LPIs with a pending table of its
//! own and gets collection number = CPU number ([`enable_on_cpu`]).
//!
//! [`route`] maps one (requester, event) pair to a fresh LPI on a CPU and
//! returns what the device must write where. The device's write reaches
//! the ITS only if the SMMU lets it: see `iommu::allow_msi_only` for a
//! hypervisor-owned device.
//!
//! LPIs are taken where the hypervisor takes interrupts: on IRQ exits of
//! the vCPU the CPU runs (`interrupts.rs`), and, while no guest runs, in a
//! bounded polling window ([`take_interrupts_until`]) that acknowledges
//! through `ICC_IAR1_EL1` with interrupts still masked at EL2 (the
//! hypervisor has no EL2 IRQ vector; nothing else would take them).

use crate::gic::MAX_CPUS;
use crate::platform::Platform;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_arch_aarch64::gic as cpu_if;
use bulkhead_drivers::gicv3::DEFAULT_PRIORITY;
use bulkhead_drivers::gicv3_its::{
    self, COMMAND_QUEUE_BYTES, ITT_ALIGN, Its, ItsCommand, ItsMemory, ItsRegisters, LPI_BASE, LpiConfigTable, MAX_TABLE_PAGES,
    PENDING_TABLE_ALIGN, TABLE_PAGE_SIZE, TableKind,
};
use bulkhead_drivers::smmuv3::DmaRegion;
use spin::{Mutex, Once};

/// INTID bits the LPI tables cover: LPIs 8192..16383 (`GICR_PROPBASER.IDbits`
/// must be at least 13, i.e. 14 bits, for LPIs to exist at all).
const INTID_BITS: u32 = 14;
/// EventID bits of every device's ITT (256 events: MSI-X tables of up to
/// 256 vectors).
const ITT_EVENT_BITS: u32 = 8;
/// DeviceID bits the flat device table covers at most (all of PCI's RIDs).
const DEVICE_ID_BITS: u32 = 16;
/// Collection table: one page (collection n = CPU n, far fewer than fit).
const COLLECTION_TABLE_PAGES: u64 = 1;
/// Unclaimed LPIs logged before going quiet.
const UNCLAIMED_LOG_LIMIT: u32 = 8;
const MS_PER_SECOND: u64 = 1000;

/// Where a device writes to raise one MSI, and the LPI it becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiRoute {
    /// The message address: `GITS_TRANSLATER`.
    pub address: u64,
    /// The message data: the EventID.
    pub data: u32,
    /// The LPI the ITS makes of it.
    pub intid: u32,
}

/// A function called with the LPI's INTID when it is taken (on the CPU it
/// was routed to, with interrupts masked; it must not block).
pub type LpiHandler = fn(u32);

struct State {
    its: Its,
    /// The ITS's phandle, which `msi-map` entries name.
    phandle: Option<u32>,
    /// The PCI host bridge's requester-ID -> DeviceID map.
    host: Option<crate::iommu::PciHost>,
    /// DeviceIDs below this fit the device table.
    device_limit: u32,
    /// EventID bits of each ITT: [`ITT_EVENT_BITS`], or fewer if the ITS has fewer.
    event_bits: u32,
    /// The LPI configuration table every redistributor gets.
    config_table: LpiConfigTable,
    /// The next LPI to hand out.
    next_lpi: u32,
    /// DeviceIDs mapped to an ITT.
    devices: Vec<u32>,
    /// Each CPU's collection's `RDbase`, once it takes LPIs.
    collections: [Option<u64>; MAX_CPUS],
    /// Routes made: `(device_id, event, cpu, intid)`.
    routes: Vec<(u32, u32, usize, u32)>,
}

static STATE: Once<Mutex<State>> = Once::new();
static HANDLERS: Mutex<Vec<(u32, LpiHandler)>> = Mutex::new(Vec::new());
static UNCLAIMED: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Zeroed, identity-mapped frames as a [`DmaRegion`].
fn region(bytes: u64, align: u64, what: &str) -> Result<DmaRegion, String> {
    let size = bytes.next_multiple_of(TABLE_PAGE_SIZE);
    let base = crate::memory::alloc_frames(size, align).ok_or_else(|| format!("no memory for the ITS {what} ({size:#x} bytes)"))?;
    // SAFETY: fresh frames from the allocator: zeroed, identity-mapped
    // RAM, aligned, and owned by the ITS from now on.
    Ok(unsafe { DmaRegion::new(base.raw(), size as usize) })
}

/// Brings the ITS up (if the device tree has one) and enables LPIs on the
/// calling CPU `cpu`. Logs one summary line, or why not.
pub fn init(platform: &Platform, cpu: usize) {
    let Some(node) = platform.its else {
        log::info!("MSI: no GICv3 ITS in the device tree: PCI MSIs are not taken");
        return;
    };
    match bring_up(platform, node) {
        Ok(state) => {
            log::info!(
                "MSI: ITS at {:#x}: GITS_TYPER {:#x}, {}-byte ITT entries, DeviceIDs below {:#x}, doorbell GITS_TRANSLATER {:#x}; LPIs {LPI_BASE}..{}",
                node.base,
                state.its.features().typer,
                state.its.features().itt_entry_size,
                state.device_limit,
                state.its.translater(),
                1u32 << INTID_BITS
            );
            STATE.call_once(|| Mutex::new(state));
            enable_on_cpu(cpu);
        }
        Err(e) => log::error!("MSI: ITS at {:#x}: {e}; PCI MSIs are not taken", node.base),
    }
}

fn bring_up(platform: &Platform, node: crate::platform::ItsNode) -> Result<State, String> {
    // SAFETY: the device tree names this ITS; `memory::init` mapped its
    // two frames as Device memory; only this module drives it.
    let registers = unsafe { ItsRegisters::new(node.base as usize) };
    let features = registers.features();
    let mut tables = Vec::new();
    let mut device_limit = 0;
    for slot in registers.tables().collect::<Vec<_>>() {
        match slot.kind {
            TableKind::Devices => {
                let wanted = slot.entry_size << features.device_bits.min(DEVICE_ID_BITS);
                let pages = wanted.div_ceil(TABLE_PAGE_SIZE).min(MAX_TABLE_PAGES);
                device_limit = u32::try_from(pages * TABLE_PAGE_SIZE / slot.entry_size.max(1)).unwrap_or(u32::MAX);
                tables.push((slot.index, region(pages * TABLE_PAGE_SIZE, TABLE_PAGE_SIZE, "device table")?));
            }
            TableKind::Collections => {
                tables.push((slot.index, region(COLLECTION_TABLE_PAGES * TABLE_PAGE_SIZE, TABLE_PAGE_SIZE, "collection table")?));
            }
            TableKind::Other(_) => {}
        }
    }
    if device_limit == 0 {
        return Err("no device table (GITS_BASER of type Devices)".into());
    }
    let command_queue = region(COMMAND_QUEUE_BYTES as u64, TABLE_PAGE_SIZE, "command queue")?;
    let its = Its::init(registers, ItsMemory { command_queue, tables }).map_err(|e| format!("{e}"))?;
    let config_bytes = gicv3_its::lpi_config_table_bytes(INTID_BITS);
    let config_table = LpiConfigTable::new(region(config_bytes, TABLE_PAGE_SIZE, "LPI configuration table")?, INTID_BITS)
        .map_err(|e| format!("{e}"))?;
    Ok(State {
        its,
        phandle: node.phandle,
        host: platform.pci.clone(),
        device_limit,
        event_bits: ITT_EVENT_BITS.min(features.event_bits),
        config_table,
        next_lpi: LPI_BASE,
        devices: Vec::new(),
        collections: [None; MAX_CPUS],
        routes: Vec::new(),
    })
}

/// Enables LPIs on CPU `cpu` (called on that CPU once its redistributor is
/// initialized; nothing without an ITS): a pending table of its own, the
/// shared configuration table, and collection `cpu` mapped to it.
pub fn enable_on_cpu(cpu: usize) {
    let Some(state) = STATE.get() else { return };
    if let Err(e) = try_enable_on_cpu(&mut state.lock(), cpu) {
        log::error!("MSI: CPU {cpu}: {e}; it takes no LPIs");
    }
}

fn try_enable_on_cpu(state: &mut State, cpu: usize) -> Result<(), String> {
    if cpu >= MAX_CPUS {
        return Err("beyond the CPUs the hypervisor supports".into());
    }
    if state.collections[cpu].is_some() {
        return Ok(());
    }
    let pending_bytes = gicv3_its::lpi_pending_table_bytes(INTID_BITS);
    let pending = crate::memory::alloc_frames(pending_bytes.next_multiple_of(TABLE_PAGE_SIZE), PENDING_TABLE_ALIGN)
        .ok_or("no memory for the LPI pending table")?;
    let propbaser = state.config_table.propbaser();
    let rdbase = crate::gic::with_redistributor(cpu, |r| {
        r.enable_lpis(propbaser, gicv3_its::pendbaser_value(pending.raw())).map(|()| state.its.rdbase(r))
    })
    .ok_or("its redistributor is not initialized")?
    .map_err(|e| format!("redistributor: {e:?}"))?;
    let icid = cpu as u16;
    state
        .its
        .submit(&[ItsCommand::mapc(icid, rdbase), ItsCommand::invall(icid), ItsCommand::sync(rdbase)])
        .map_err(|e| format!("{e}"))?;
    state.collections[cpu] = Some(rdbase);
    log::info!("MSI: CPU {cpu} takes LPIs (collection {icid}, RDbase {rdbase:#x})");
    Ok(())
}

/// Routes event `event` of the PCI function with requester ID
/// `requester_id` (its BDF; the ITS DeviceID follows from the host
/// bridge's `msi-map`) to a fresh LPI taken by CPU `cpu`. Returns the
/// message the device must send: write `data` to `address`. Routing the
/// same (requester, event) to the same CPU again returns the same route.
///
/// # Errors
/// A reason: no ITS, a CPU that takes no LPIs, a requester outside the
/// `msi-map` or the device table, an event beyond the ITT, no LPI left, or
/// an ITS command failure.
pub fn route(requester_id: u32, event: u32, cpu: usize) -> Result<MsiRoute, String> {
    let state = STATE.get().ok_or("no ITS is up")?;
    let mut state = state.lock();
    let rdbase = state.collections.get(cpu).copied().flatten().ok_or_else(|| format!("CPU {cpu} takes no LPIs"))?;
    let rid = u16::try_from(requester_id).map_err(|_| format!("requester ID {requester_id:#x} is not a PCI BDF"))?;
    let device_id = state
        .host
        .as_ref()
        .and_then(|h| h.msi_device_id(rid, state.phandle))
        .ok_or_else(|| format!("requester {rid:#06x}'s MSIs do not go to this ITS (msi-map)"))?;
    if device_id >= state.device_limit {
        return Err(format!("DeviceID {device_id:#x} is beyond the device table ({:#x})", state.device_limit));
    }
    if event >= 1 << state.event_bits {
        return Err(format!("event {event} is beyond the {} events of an ITT", 1u32 << state.event_bits));
    }
    let address = state.its.translater();
    if let Some(&(_, _, routed_cpu, intid)) = state.routes.iter().find(|r| r.0 == device_id && r.1 == event) {
        return if routed_cpu == cpu {
            Ok(MsiRoute { address, data: event, intid })
        } else {
            Err(format!("DeviceID {device_id:#x} event {event} already goes to CPU {routed_cpu}"))
        };
    }
    if state.next_lpi >= 1 << INTID_BITS {
        return Err("no LPI left".into());
    }
    let mut commands = Vec::new();
    if !state.devices.contains(&device_id) {
        let bytes = state.its.features().itt_bytes(state.event_bits);
        let itt = crate::memory::alloc_frames(bytes.next_multiple_of(TABLE_PAGE_SIZE), TABLE_PAGE_SIZE.max(ITT_ALIGN))
            .ok_or("no memory for an ITT")?;
        commands.push(ItsCommand::mapd(device_id, itt.raw(), state.event_bits));
    }
    let intid = state.next_lpi;
    // The LPI's configuration byte before the ITS maps it; `submit`
    // orders this store before the commands (the INV among them).
    state.config_table.configure(intid, DEFAULT_PRIORITY, true).map_err(|e| format!("{e}"))?;
    let icid = cpu as u16;
    commands.extend([
        ItsCommand::mapti(device_id, event, intid, icid),
        ItsCommand::inv(device_id, event),
        ItsCommand::sync(rdbase),
    ]);
    state.its.submit(&commands).map_err(|e| format!("DeviceID {device_id:#x} event {event}: {e}"))?;
    if !state.devices.contains(&device_id) {
        state.devices.push(device_id);
    }
    state.next_lpi += 1;
    state.routes.push((device_id, event, cpu, intid));
    Ok(MsiRoute { address, data: event, intid })
}

/// Calls `handler` whenever LPI `intid` is taken (replacing an earlier one).
pub fn set_handler(intid: u32, handler: LpiHandler) {
    let mut handlers = HANDLERS.lock();
    handlers.retain(|&(i, _)| i != intid);
    handlers.push((intid, handler));
}

/// Whether `intid` is an LPI.
pub const fn is_lpi(intid: u32) -> bool {
    intid >= LPI_BASE
}

/// Hands a taken (acknowledged, priority-dropped) LPI to its handler.
/// LPIs have no active state: nothing to deactivate. Returns whether a
/// handler took it (an unclaimed one is logged, a bounded number of times).
pub fn dispatch(intid: u32) -> bool {
    let handler = HANDLERS.lock().iter().find(|&&(i, _)| i == intid).map(|&(_, h)| h);
    match handler {
        Some(handler) => {
            handler(intid);
            true
        }
        None => {
            if UNCLAIMED.fetch_add(1, core::sync::atomic::Ordering::Relaxed) < UNCLAIMED_LOG_LIMIT {
                log::warn!("MSI: LPI {intid} has no handler; ignored");
            }
            false
        }
    }
}

/// An interrupt window while no guest runs: acknowledges and handles every
/// interrupt pending at this CPU (LPIs to their handlers, the SMMU's to the
/// SMMU) until `done` holds or `timeout_ms` of the generic timer pass.
/// Interrupts stay masked at EL2; they are taken by polling `ICC_IAR1_EL1`.
///
/// # Errors
/// A reason if `done` did not hold in time.
pub fn take_interrupts_until(mut done: impl FnMut() -> bool, timeout_ms: u64) -> Result<(), String> {
    use aarch64_cpu::registers::{CNTFRQ_EL0, CNTPCT_EL0, Readable};
    let limit = CNTFRQ_EL0.get().max(1).saturating_mul(timeout_ms) / MS_PER_SECOND;
    let start = CNTPCT_EL0.get();
    loop {
        let intid = cpu_if::acknowledge();
        if !cpu_if::is_special_intid(intid) {
            cpu_if::end_of_interrupt(intid);
            if is_lpi(intid) {
                dispatch(intid);
            } else if crate::iommu::owns_interrupt(intid) {
                crate::iommu::service("interrupt window");
                cpu_if::deactivate(intid);
            } else {
                cpu_if::deactivate(intid);
                log::warn!("interrupt window: interrupt {intid} is nobody's; ignored");
            }
        }
        if done() {
            return Ok(());
        }
        if CNTPCT_EL0.get().wrapping_sub(start) >= limit {
            return Err(format!("not done within {timeout_ms} ms"));
        }
        core::hint::spin_loop();
    }
}
