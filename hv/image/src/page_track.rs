//! Write-protect page tracking in a partition's CPU view, for the GPU
//! mediator's shadowing of guest GPU page tables (DESIGN.md §3, §5).
//!
//! "Track guest page P" maps P read-only in the partition's stage 2 (arm64)
//! or NPT (x86_64, SVM); reads and instruction fetches keep working. A guest
//! store to P traps; the exit handler ([`crate::exits`] on arm64,
//! `x86::exits` on x86_64) decodes it, calls [`perform`], which does the
//! store in guest memory and then hands the exact store(s) to the handler
//! the mediator registered with [`set_handler`]; the exit handler advances
//! the PC. "Untrack P" gives P its region's permissions back.
//!
//! The per-partition state lives in a global table indexed by partition
//! index, so any CPU can track pages of any partition: the bookkeeping
//! ([`PageTracker`]), a copy of the partition's address space (its regions
//! never change while it runs; the copy spares taking the partition's lock,
//! which its own CPU holds while the guest runs on x86_64 and while an exit
//! is handled on arm64) and the partition's CPU table.
//!
//! # Lock order
//!
//! partition lock → mediator lock → tracker lock ([`TRACKING`]) → stage-2 /
//! NPT table lock. The mediator may call [`track`] / [`untrack`] from inside
//! a trapped register write of the same partition (partition lock held) or
//! from another CPU. [`perform`] calls the handler after it dropped the
//! tracker lock (the exit handler still holds the partition lock, as for an
//! emulated register write), so the handler may track and untrack.
//!
//! # TLB maintenance
//!
//! - arm64: [`Stage2Table::remap`] breaks, invalidates by IPA and the
//!   stage-1+2 entries of the partition's VMID with broadcast (inner
//!   shareable) TLBIs and waits for them: once [`track`] returns, no CPU of
//!   the partition can write the page. The TLBIs name the VMID in
//!   `VTTBR_EL2`, so the partition's `VTTBR_EL2` is loaded for the change
//!   when another CPU calls.
//! - x86_64: the NPT leaf's write bit changes in place; the partition's CPU
//!   flushes its TLB (VMCB `TLB_CONTROL` = flush all: QEMU TCG has no
//!   flush-by-ASID) before its next VMRUN ([`take_flush_request`]). A call
//!   from another CPU also kicks the partition's CPU (the virtual GPU's
//!   IPI) so that it leaves the guest soon, but [`track`] does not wait:
//!   until that CPU's next VMRUN, a stale writable translation may let a
//!   store through untrapped. The shadow's safety does not depend on it
//!   (the mediator only ever installs translations it validated); the
//!   mediator sees such a store when it next reads the page.

use alloc::vec::Vec;
use bulkhead_core::address::{Gpa, Hpa};
use bulkhead_core::address_space::{Access, AddressSpace};
use bulkhead_core::page_track::{MappingChange, PageTracker};
pub use bulkhead_core::page_track::{TrackError, TrackedWrite};
use core::sync::atomic::Ordering;
#[cfg(target_arch = "x86_64")]
use core::sync::atomic::AtomicBool;
use spin::Mutex;

#[cfg(target_arch = "aarch64")]
use bulkhead_arch_aarch64::stage2::{S2Access, Stage2Table};
#[cfg(target_arch = "x86_64")]
use crate::x86::partition::NestedTable;

/// The mediator's handler: partition index and the stores just performed
/// (one or two, in address order).
pub type Handler = fn(partition_index: usize, writes: &[TrackedWrite]);

/// The partition's CPU table, once it runs.
#[cfg(target_arch = "aarch64")]
struct CpuTable {
    stage2: &'static Mutex<Stage2Table>,
    /// The partition's `VTTBR_EL2` (table and VMID), loaded while its
    /// table changes so that the TLBIs name its VMID.
    vttbr: u64,
}

/// The partition's CPU table, once it runs.
#[cfg(target_arch = "x86_64")]
struct CpuTable {
    npt: &'static Mutex<NestedTable>,
    /// The APIC ID of the CPU that runs the partition.
    apic_id: u32,
}

/// One partition's tracking state.
struct Tracking {
    space: AddressSpace,
    tracker: PageTracker,
    table: Option<CpuTable>,
}

/// Per partition index: `None` unless tracking was enabled for it.
static TRACKING: Mutex<Vec<Option<Tracking>>> = Mutex::new(Vec::new());
/// The mediator's handler, if registered.
static HANDLER: Mutex<Option<Handler>> = Mutex::new(None);
/// x86_64: partitions whose TLB flushes can be requested (one flag each).
#[cfg(target_arch = "x86_64")]
const FLUSH_SLOTS: usize = 64;
/// x86_64: per partition index, a TLB flush is due before its next VMRUN.
/// Lock-free: the run loop looks before every VMRUN.
#[cfg(target_arch = "x86_64")]
static FLUSH: [AtomicBool; FLUSH_SLOTS] = [const { AtomicBool::new(false) }; FLUSH_SLOTS];

/// Why a trapped store was not performed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PerformError {
    /// A store's page is not tracked (any more: a concurrent untrack); the
    /// page is writable again or the fault is someone else's.
    NotTracked(Gpa),
    /// A store reaches outside its page, or outside writable RAM.
    OutsidePage(Gpa),
}

/// Enables tracking for partition `index`, whose address space `space`
/// must have page-granular RAM ([`AddressSpace::set_page_granular_ram`])
/// before its CPU view is derived. Called while the partition is built.
pub fn enable(index: usize, space: &AddressSpace) {
    let mut all = TRACKING.lock();
    if all.len() <= index {
        all.resize_with(index + 1, || None);
    }
    all[index] = Some(Tracking { space: space.clone(), tracker: PageTracker::new(), table: None });
}

/// Whether tracking is enabled for partition `index`.
pub fn enabled(index: usize) -> bool {
    TRACKING.lock().get(index).is_some_and(|t| t.is_some())
}

/// arm64: gives partition `index` its stage-2 table (once the table has its
/// final, `'static` home) and `VTTBR_EL2` value. Tracking starts working.
#[cfg(target_arch = "aarch64")]
pub fn attach(index: usize, stage2: &'static Mutex<Stage2Table>, vttbr: u64) {
    if let Some(Some(tracking)) = TRACKING.lock().get_mut(index) {
        tracking.table = Some(CpuTable { stage2, vttbr });
    }
}

/// x86_64: gives partition `index` its NPT (once the table has its final,
/// `'static` home) and the APIC ID of its CPU. Tracking starts working.
#[cfg(target_arch = "x86_64")]
pub fn attach(index: usize, npt: &'static Mutex<NestedTable>, apic_id: u32) {
    if index >= FLUSH_SLOTS {
        log::error!("page tracking: partition {index}: only the first {FLUSH_SLOTS} partitions can track pages");
        return;
    }
    if let Some(Some(tracking)) = TRACKING.lock().get_mut(index) {
        tracking.table = Some(CpuTable { npt, apic_id });
    }
}

/// Registers the handler called after each performed store (one handler:
/// the GPU mediator's, at boot). Until then stores are still performed.
pub fn set_handler(handler: Handler) {
    *HANDLER.lock() = Some(handler);
}

/// Tracks `page` of partition `index`: on its first use, maps it read-only
/// in the partition's CPU view. Each successful call needs one [`untrack`].
///
/// # Errors
/// [`TrackError::NotRunning`] if tracking is not enabled or the partition
/// has no table yet; the validation errors of [`PageTracker::check`];
/// [`TrackError::MappingFailed`] if the table refused (nothing changed).
pub fn track(index: usize, page: Gpa) -> Result<(), TrackError> {
    let mut all = TRACKING.lock();
    let tracking = all.get_mut(index).and_then(Option::as_mut).ok_or(TrackError::NotRunning)?;
    let table = tracking.table.as_ref().ok_or(TrackError::NotRunning)?;
    if tracking.tracker.track(&tracking.space, page)? == MappingChange::WriteProtect
        && let Err(e) = set_writable(index, table, &tracking.space, page, false)
    {
        tracking.tracker.forget(page);
        log::error!("page tracking: partition {index}: write-protecting {page:?} failed: {e}");
        return Err(TrackError::MappingFailed(page));
    }
    Ok(())
}

/// Drops one use of `page` of partition `index`; the last gives the page
/// its region's permissions back. Untracking an untracked page does nothing.
pub fn untrack(index: usize, page: Gpa) {
    let mut all = TRACKING.lock();
    let Some(tracking) = all.get_mut(index).and_then(Option::as_mut) else { return };
    if tracking.tracker.untrack(page) == MappingChange::Restore
        && let Some(table) = &tracking.table
        && let Err(e) = set_writable(index, table, &tracking.space, page, true)
    {
        // The page stays read-only: stores keep trapping and, untracked,
        // are treated as faults. Nothing a guest can cause.
        log::error!("page tracking: partition {index}: restoring {page:?} failed: {e}");
    }
}

/// Untracks every page of partition `index` (it is being reset).
#[cfg_attr(target_arch = "x86_64", allow(dead_code, reason = "x86_64 partitions are not reset yet"))]
pub fn release_all(index: usize) {
    let pages: Vec<Gpa> = match TRACKING.lock().get(index).and_then(Option::as_ref) {
        Some(tracking) => tracking.tracker.pages().collect(),
        None => return,
    };
    for page in pages {
        while is_tracked(index, page) {
            untrack(index, page);
        }
    }
}

/// Whether the page holding `gpa` of partition `index` is tracked.
pub fn is_tracked(index: usize, gpa: Gpa) -> bool {
    TRACKING.lock().get(index).and_then(Option::as_ref).is_some_and(|t| t.tracker.is_tracked(gpa))
}

/// Performs `writes` (the decoded stores of one trapped instruction, each
/// inside one tracked page) in partition `index`'s memory, then calls the
/// handler. The caller advances the guest's PC on success.
///
/// # Errors
/// [`PerformError::NotTracked`]: nothing was written (a concurrent
/// untrack: the caller lets the guest retry if the page is writable now);
/// [`PerformError::OutsidePage`]: nothing was written, a fault.
pub fn perform(index: usize, writes: &[TrackedWrite]) -> Result<(), PerformError> {
    {
        let Some(first) = writes.first() else { return Ok(()) };
        let all = TRACKING.lock();
        let tracking = all.get(index).and_then(Option::as_ref).ok_or(PerformError::NotTracked(first.gpa))?;
        let mut targets = [Hpa::new(0); 2];
        if writes.len() > targets.len() {
            return Err(PerformError::OutsidePage(first.gpa));
        }
        for (write, target) in writes.iter().zip(targets.iter_mut()) {
            if !tracking.tracker.is_tracked(write.gpa) {
                return Err(PerformError::NotTracked(write.gpa));
            }
            if !write.within_page(write.gpa) || !matches!(write.width, 1 | 2 | 4 | 8) {
                return Err(PerformError::OutsidePage(write.gpa));
            }
            *target = tracking
                .space
                .translate(write.gpa, u64::from(write.width), Access::Write)
                .ok_or(PerformError::OutsidePage(write.gpa))?;
        }
        // A store-release (STLR) must be ordered after the guest's earlier
        // accesses: a full barrier first covers every form.
        core::sync::atomic::fence(Ordering::SeqCst);
        for (write, target) in writes.iter().zip(targets) {
            store(target, write);
        }
        // The page stays tracked until the lock drops: an untrack on another
        // CPU completes after the store, and the mediator sees the store
        // either through the handler or when it reads the page.
    }
    let handler = *HANDLER.lock();
    if let Some(handler) = handler {
        handler(index, writes);
    }
    Ok(())
}

/// Writes one store into guest RAM at `target` through the hypervisor's
/// identity map: one volatile access of the store's width when aligned
/// (single-copy atomic, as the guest's own store would have been), bytes
/// otherwise.
fn store(target: Hpa, write: &TrackedWrite) {
    let address = target.raw();
    let width = u64::from(write.width);
    // SAFETY: `target` came from the partition's address space for a write
    // of `width` bytes inside one page of writable RAM; the identity map
    // covers all RAM; no Rust reference points into guest memory.
    unsafe {
        match write.width {
            8 if address.is_multiple_of(8) => (address as *mut u64).write_volatile(write.value),
            4 if address.is_multiple_of(4) => (address as *mut u32).write_volatile(write.value as u32),
            2 if address.is_multiple_of(2) => (address as *mut u16).write_volatile(write.value as u16),
            _ => {
                for (i, byte) in write.bytes().iter().take(write.width as usize).enumerate() {
                    (address as *mut u8).add(i).write_volatile(*byte);
                }
            }
        }
    }
    // The guest may map the page non-cacheable at stage 1: the store must
    // reach the point of coherency (x86 caches are coherent).
    #[cfg(target_arch = "aarch64")]
    bulkhead_arch_aarch64::cache::clean_invalidate_to_poc(address, width);
    #[cfg(not(target_arch = "aarch64"))]
    let _ = width;
}

/// arm64: cleans and invalidates the cache line holding `gpa` of partition
/// `index` to the point of coherency: what a trapped `DC IVAC` on a tracked
/// page becomes (a clean is harmless where an invalidate was asked for; an
/// invalidate alone could drop the hypervisor's performed stores). Returns
/// whether `gpa` is tracked RAM.
#[cfg(target_arch = "aarch64")]
pub fn clean_line(index: usize, gpa: Gpa) -> bool {
    let all = TRACKING.lock();
    let Some(tracking) = all.get(index).and_then(Option::as_ref).filter(|t| t.tracker.is_tracked(gpa)) else {
        return false;
    };
    match tracking.space.translate(gpa, 1, Access::Write) {
        Some(hpa) => {
            bulkhead_arch_aarch64::cache::clean_invalidate_to_poc(hpa.raw(), 1);
            true
        }
        None => false,
    }
}

/// Whether the CPU view lets partition `index` write `gpa` now: a write
/// fault on an untracked page that is writable again came from a
/// translation cached before an [`untrack`]; the guest retries.
pub fn writable_now(index: usize, gpa: Gpa) -> bool {
    let all = TRACKING.lock();
    let Some(table) = all.get(index).and_then(Option::as_ref).and_then(|t| t.table.as_ref()) else {
        return false;
    };
    #[cfg(target_arch = "aarch64")]
    {
        table.stage2.lock().is_writable(gpa.raw())
    }
    #[cfg(target_arch = "x86_64")]
    {
        table.npt.lock().lookup(gpa.raw()).is_some_and(|(_, entry, _)| entry & bulkhead_arch_x86_64::npt::WRITABLE != 0)
    }
}

/// x86_64: whether partition `index`'s CPU must flush its TLB before its
/// next VMRUN (a tracked page changed); clears the request.
#[cfg(target_arch = "x86_64")]
pub fn take_flush_request(index: usize) -> bool {
    FLUSH.get(index).is_some_and(|flag| flag.load(Ordering::Relaxed) && flag.swap(false, Ordering::AcqRel))
}

/// Changes the CPU view of `page`: read-only, or the region's own
/// permissions back; same address and memory attribute.
#[cfg(target_arch = "aarch64")]
fn set_writable(_index: usize, table: &CpuTable, space: &AddressSpace, page: Gpa, writable: bool) -> Result<(), alloc::string::String> {
    let region = space.region_at(page).ok_or("not in a region")?;
    let hpa = space.translate(page, 4096, Access::Read).ok_or("not readable RAM")?;
    let access = S2Access { read: region.perms.read, write: writable && region.perms.write, execute: region.perms.execute };
    let memory = crate::space::s2_memory_type(region.attr);
    let mut stage2 = table.stage2.lock();
    bulkhead_arch_aarch64::el2::with_vttbr(table.vttbr, || stage2.remap(page.raw(), hpa.raw(), 4096, memory, access))
        .map_err(|e| alloc::format!("{e:?}"))
}

/// Changes the CPU view of `page`: read-only, or the region's own
/// permissions back; same address and memory attribute. Then asks the
/// partition's CPU to flush its TLB, kicking it if it is another CPU.
#[cfg(target_arch = "x86_64")]
fn set_writable(index: usize, table: &CpuTable, space: &AddressSpace, page: Gpa, writable: bool) -> Result<(), alloc::string::String> {
    use bulkhead_arch_x86_64::Access as NptAccess;
    let region = space.region_at(page).ok_or("not in a region")?;
    let access = NptAccess { read: region.perms.read, write: writable && region.perms.write, execute: region.perms.execute };
    let memory = crate::x86::partition::memory_type(region.attr);
    table.npt.lock().set_page_access(page.raw(), memory, access).map_err(|e| alloc::format!("{e:?}"))?;
    if let Some(flag) = FLUSH.get(index) {
        flag.store(true, Ordering::Release);
    }
    // SAFETY: the hypervisor's page tables map the local APIC uncached.
    let here = unsafe { bulkhead_arch_x86_64::cpu::ap::LocalApic::current() }.id();
    if here != table.apic_id {
        crate::x86::intx::kick(u64::from(table.apic_id));
    }
    Ok(())
}
