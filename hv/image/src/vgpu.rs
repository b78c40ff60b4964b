//! The virtual GPUs (DESIGN.md §5), for both architectures: each
//! configured partition's [`VirtualGpu`] (pure state, `bulkhead-core`)
//! joined to the real device ([`crate::gpu_hw`]) and to the partition.
//!
//! ```text
//! guest access to its register BAR (stage 2 / NPT unmapped)
//!   -> RegisterBar (MMIO bus) -> Mediator::write -> VirtualGpu::write
//!        GTT update: written into the partition's slice of the real GTT
//!        submission: queued in the weighted round-robin Scheduler
//! service() (every exit of a partition with a GPU, and the GPU's interrupt)
//!   engine idle -> the running submission completes (VirtualGpu::complete)
//!               -> next submission: shadow batches and ring copied into the
//!                  partition's hypervisor-only area of local memory, run
//!   a partition's interrupt line changed -> CHANGED bit + kick its CPU
//! ```
//!
//! Layout, decided once at boot by [`plan`] from the configuration and
//! checked against the device: each partition gets a consecutive slice of
//! the real GTT after the hypervisor's reserve, a consecutive slice of
//! local memory after the reserve (its memory BAR, mapped directly with its
//! configured attribute), and from the reserve a scratch page of its own
//! (where its refused entries point: a shared one would let one partition
//! read what another wrote through refused entries), a shadow ring
//! ([`SHADOW_RING_BYTES`]) and a shadow batch area ([`SHADOW_BATCH_BYTES`])
//! that only the hypervisor's GTT entries map. Guest graphics addresses are
//! real graphics addresses (no relocation): the scanner keeps every
//! command inside the partition's slice.
//!
//! Per-process page tables: a PDP0 load the scanner accepted gets the
//! address of the context's shadow PML4 ([`bulkhead_core::gpu::ppgtt`]). The
//! shadow pages come from the hypervisor's heap, at most
//! [`SHADOW_TABLE_PAGES`] per partition; the guest's table pages are
//! write-protected through [`crate::page_track`], whose handler
//! ([`tracked_write`]) brings every trapped store here.
//!
//! Lock order: a partition's lock, then [`MEDIATOR`], then the page
//! tracker's, then the CPU tables', then the device's.
//! Nothing here takes a partition's lock: interrupts reach partitions
//! through [`CHANGED`] / [`LEVEL`] and a kick of the CPU that runs them.

use crate::gpu_hw;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use bulkhead_abi::gpu::{cmd, gtt, vgpu};
use bulkhead_config::{
    Config, MemoryAttribute, Permissions, VIRTUAL_GPU_MEMORY_BASE, VIRTUAL_GPU_REGISTERS_BASE,
    VIRTUAL_GPU_REGISTERS_SIZE,
};
use bulkhead_core::address::{Gpa, Hpa};
use bulkhead_core::address_space::{AddressSpace, Region, RegionKind};
use bulkhead_core::devices::pci_config::{BarKind, SyntheticFunction, VirtualBar, VirtualFunction};
use bulkhead_core::gpu::gtt::{LocalMemory, VirtualGtt};
use bulkhead_core::gpu::ppgtt::{Env, PpgttMemory};
use bulkhead_core::page_track::TrackedWrite;
use bulkhead_core::gpu::sched::Scheduler;
use bulkhead_core::gpu::vgpu::{GpuFault, PhysicalReader, Submission, VirtualGpu, WriteContext};
use bulkhead_core::mmio::{AccessSize, MmioDevice, VcpuId};
use bulkhead_core::pinning::PinnedPages;
use core::sync::atomic::{AtomicU32, Ordering};
use spin::{Mutex, Once};

/// Bytes of each partition's shadow ring: the largest submission (ring
/// commands) it can run at once, plus the hypervisor's padding.
pub const SHADOW_RING_BYTES: u64 = 64 << 10;
/// Bytes of each partition's shadow batch area (its outstanding
/// submissions' frozen batch buffers together).
pub const SHADOW_BATCH_BYTES: u64 = 256 << 10;
/// Shadow page-table pages (hypervisor heap) each partition may use: 2 MiB,
/// enough for 256 MiB of 4 KiB mappings plus the upper levels.
pub const SHADOW_TABLE_PAGES: u32 = 512;
/// GTT writes refused, submissions rejected and GPU faults logged per
/// partition before going quiet: a guest controls how many there are.
const LOG_LIMIT: u32 = 16;
/// Most partitions the pending-interrupt bits cover.
const MAX_PARTITIONS: usize = 32;
/// Bytes in a dword.
const DWORD: u64 = 4;

/// One partition's share of the GPU, decided at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// First real GTT index of its slice.
    pub gtt_base: u64,
    /// Entries in its slice.
    pub gtt_entries: u64,
    /// Real local-memory offset of its memory BAR.
    pub local_offset: u64,
    /// Bytes of local memory.
    pub local_size: u64,
    /// Host-physical address of its local memory (through BAR2).
    pub local_hpa: u64,
    /// Its memory BAR's attribute.
    pub attr: MemoryAttribute,
    /// Scheduling weight.
    pub weight: u32,
}

/// Splits the GPU among the configured partitions: GTT slices and local
/// memory after the hypervisor's reserve, in configuration order. A share
/// that does not fit the device that is there refuses its partition with
/// a message naming the field (the configuration checks bounds at build
/// time; only the boot knows the device's size).
pub fn plan(config: &Config, info: &gpu_hw::Info) -> Vec<Result<Option<Share>, String>> {
    let mut next_entry = u64::from(gpu_hw::RESERVED_ENTRIES);
    let mut next_local = gpu_hw::RESERVED_BYTES;
    let mut shares = Vec::with_capacity(config.partitions.len());
    for p in &config.partitions {
        let Some(gpu) = &p.gpu else {
            shares.push(Ok(None));
            continue;
        };
        let entries = u64::from(gpu.gtt_entries);
        let gtt_end = next_entry.saturating_add(entries);
        if gtt_end > u64::from(info.gtt_entries) {
            shares.push(Err(format!(
                "gpu.gtt_entries: {entries} entries do not fit: the GPU has {} GTT entries, {} are the hypervisor's \
                 and {} are given to earlier partitions",
                info.gtt_entries,
                gpu_hw::RESERVED_ENTRIES,
                next_entry - u64::from(gpu_hw::RESERVED_ENTRIES)
            )));
            continue;
        }
        let local_end = next_local.saturating_add(gpu.local_memory);
        if local_end > info.local_size {
            shares.push(Err(format!(
                "gpu.local_memory: {:#x} bytes do not fit: the GPU has {:#x} bytes of local memory, {:#x} are the \
                 hypervisor's and {:#x} are given to earlier partitions",
                gpu.local_memory,
                info.local_size,
                gpu_hw::RESERVED_BYTES,
                next_local - gpu_hw::RESERVED_BYTES
            )));
            continue;
        }
        shares.push(Ok(Some(Share {
            gtt_base: next_entry,
            gtt_entries: entries,
            local_offset: next_local,
            local_size: gpu.local_memory,
            local_hpa: info.local_address + next_local,
            attr: gpu.attr,
            weight: gpu.weight,
        })));
        next_entry = gtt_end;
        next_local = local_end;
    }
    shares
}

/// Each partition's share, once [`boot`] decided them.
static SHARES: Once<Vec<Option<Share>>> = Once::new();

/// Decides every partition's share of the GPU and sets the virtual GPUs
/// up. Returns, per partition, why it cannot start (its GPU share cannot
/// be given), to be joined to the other boot-time refusals.
pub fn boot(config: &Config) -> Vec<Option<String>> {
    let wanted = config.partitions.iter().any(|p| p.gpu.is_some());
    let info = gpu_hw::info();
    let (shares, mut refusals): (Vec<Option<Share>>, Vec<Option<String>>) = match &info {
        _ if !wanted => (vec![None; config.partitions.len()], vec![None; config.partitions.len()]),
        None => config
            .partitions
            .iter()
            .map(|p| (None, p.gpu.as_ref().map(|_| String::from("gpu: the machine has no GPU (no gpu-model device on PCI bus 0)"))))
            .unzip(),
        Some(info) => plan(config, info)
            .into_iter()
            .map(|r| match r {
                Ok(share) => (share, None),
                Err(e) => (None, Some(e)),
            })
            .unzip(),
    };
    if let Some(info) = &info
        && wanted
        && let Err(e) = init(config, &shares, info)
    {
        log::error!("virtual GPUs: {e}");
        for (refusal, p) in refusals.iter_mut().zip(&config.partitions) {
            if p.gpu.is_some() && refusal.is_none() {
                *refusal = Some(format!("gpu: the virtual GPUs could not be set up: {e}"));
            }
        }
    }
    SHARES.call_once(|| shares);
    refusals
}

/// Partition `index`'s share of the GPU, if it has one.
pub fn share(index: usize) -> Option<Share> {
    SHARES.get().and_then(|s| s.get(index).copied().flatten())
}

/// Adds the partition's memory BAR (its local memory, mapped directly with
/// its attribute) to its address space. It is device memory: no DMA view,
/// never executable.
///
/// # Errors
/// The region clashes with another.
pub fn add_memory_region(space: &mut AddressSpace, share: &Share) -> Result<(), String> {
    space
        .add_region(Region {
            gpa: Gpa::new(VIRTUAL_GPU_MEMORY_BASE),
            hpa: Hpa::new(share.local_hpa),
            size: share.local_size,
            attr: share.attr,
            perms: Permissions { read: true, write: true, execute: false },
            kind: RegionKind::Device,
            dma: false,
        })
        .map_err(|e| format!("gpu.local_memory: the memory BAR at {VIRTUAL_GPU_MEMORY_BASE:#x}: {e:?}"))
}

/// The partition's virtual PCI function: the GPU's identity, BAR0 the
/// trapped registers, BAR2 (64-bit, prefetchable) its local memory.
pub fn virtual_function(share: &Share) -> VirtualFunction {
    let registers = VirtualBar {
        index: 0,
        kind: BarKind::Memory32 { prefetchable: false },
        guest: VIRTUAL_GPU_REGISTERS_BASE,
        size: VIRTUAL_GPU_REGISTERS_SIZE,
    };
    let memory = VirtualBar {
        index: 2,
        kind: BarKind::Memory64 { prefetchable: true },
        guest: VIRTUAL_GPU_MEMORY_BASE,
        size: share.local_size.next_power_of_two(),
    };
    VirtualFunction::new(
        Box::new(SyntheticFunction::new(vgpu::VENDOR_ID, vgpu::DEVICE_ID, vgpu::CLASS_CODE)),
        vec![registers, memory],
    )
}

/// How a partition's CPU is made to look at [`CHANGED`]: the arch's kick
/// (arm64: an SGI to the CPU's MPIDR; x86_64: a fixed IPI to its APIC ID).
pub type Kick = fn(u64);

/// A partition's virtual GPU and what the hypervisor keeps for it.
struct Slot {
    name: String,
    vgpu: VirtualGpu,
    pins: PinnedPages,
    /// Local offset (= graphics address, by the reserve's layout) of its
    /// shadow ring.
    ring: u64,
    /// Its shadow batch area and the next free byte in it.
    batches: u64,
    batches_next: u64,
    kick: Option<(Kick, u64)>,
    /// Its address space, kept from its first register write (regions do
    /// not change while it exists): trapped table writes arrive without it.
    space: Option<AddressSpace>,
    /// Shadow page-table pages it holds.
    shadow_pages: u32,
    /// The interrupt line's level last published in [`LEVEL`].
    line: bool,
    logged: u32,
}

struct Mediator {
    slots: Vec<Option<Slot>>,
    scheduler: Scheduler<Submission>,
    /// The partition whose submission the engine runs now.
    running: Option<usize>,
    /// Where local memory is mapped for the hypervisor, and its size.
    local_base: u64,
    local_size: u64,
}

static MEDIATOR: Once<Mutex<Mediator>> = Once::new();
/// A bit per partition: its virtual GPU's interrupt line changed and the
/// partition has not looked yet ([`take_line_change`]).
static CHANGED: AtomicU32 = AtomicU32::new(0);
/// A bit per partition: its virtual GPU's interrupt line level.
static LEVEL: AtomicU32 = AtomicU32::new(0);

/// Sets the virtual GPUs up from the plan: every partition's real-GTT slice
/// pointed at scratch, its shadow areas reserved.
///
/// # Errors
/// The reserve is exhausted, or a share does not make a valid GTT.
pub fn init(config: &Config, shares: &[Option<Share>], info: &gpu_hw::Info) -> Result<(), String> {
    if gpu_hw::scratch_entry().is_none() {
        return Err(String::from("the GPU is not up"));
    }
    let mut slots = Vec::with_capacity(shares.len());
    let mut weights = Vec::with_capacity(shares.len());
    for (p, share) in config.partitions.iter().zip(shares) {
        let Some(share) = share else {
            slots.push(None);
            weights.push(1);
            continue;
        };
        let field = |what: &str| format!("partition '{}', field 'gpu': {what}", p.name);
        // A scratch page of its own: what a partition's refused entries
        // write must not be readable through another partition's.
        let (scratch_page, _) = gpu_hw::reserve(gtt::PAGE_SIZE).map_err(|e| field(&format!("scratch page: {e}")))?;
        let scratch = gtt::present_entry(scratch_page)
            .map(|e| e | vgpu::GTT_LOCAL_MEMORY)
            .ok_or_else(|| field("scratch page beyond the GTT's reach"))?;
        gpu_hw::fill_local(scratch_page, gtt::PAGE_SIZE, 0).map_err(|e| field(&format!("{e}")))?;
        let gtt = VirtualGtt::new(share.gtt_base, share.gtt_entries, Hpa::new(0))
            .and_then(|g| g.with_scratch_entry(scratch))
            .and_then(|g| g.with_local_memory(LocalMemory { offset: share.local_offset, size: share.local_size }))
            .map_err(|e| field(&format!("{e:?}")))?;
        for i in share.gtt_base..share.gtt_base + share.gtt_entries {
            let i = u32::try_from(i).map_err(|_| field("GTT index beyond 32 bits"))?;
            gpu_hw::write_gtt(i, scratch).map_err(|e| field(&format!("GTT entry {i}: {e}")))?;
        }
        let interrupt = interrupt_number();
        let vgpu = VirtualGpu::new(gtt, interrupt).map_err(|e| field(&format!("{e:?}")))?.with_shadow_limit(SHADOW_TABLE_PAGES);
        let (ring, _) = gpu_hw::reserve(SHADOW_RING_BYTES).map_err(|e| field(&format!("shadow ring: {e}")))?;
        let (batches, _) = gpu_hw::reserve(SHADOW_BATCH_BYTES).map_err(|e| field(&format!("shadow batches: {e}")))?;
        gpu_hw::fill_local(share.local_offset, share.local_size, 0).map_err(|e| field(&format!("{e}")))?;
        log::info!(
            "partition {}: virtual GPU: GTT [{}, {}) = graphics {:#x}..{:#x}, local memory {:#x} bytes at {:#x} ({}), \
             weight {}, shadow ring {ring:#x}, shadow batches {batches:#x}",
            p.name,
            share.gtt_base,
            share.gtt_base + share.gtt_entries,
            share.gtt_base * gtt::PAGE_SIZE,
            (share.gtt_base + share.gtt_entries) * gtt::PAGE_SIZE,
            share.local_size,
            share.local_offset,
            share.attr.as_str(),
            share.weight
        );
        slots.push(Some(Slot {
            name: p.name.clone(),
            vgpu,
            // Every page the guest maps (GTT or per-process tables) is
            // pinned once: its own memory bounds the count.
            pins: PinnedPages::new(&p.name, p.memory.iter().map(|m| (m.size / gtt::PAGE_SIZE) as usize).sum::<usize>().max(1)),
            ring,
            batches,
            batches_next: 0,
            kick: None,
            space: None,
            shadow_pages: 0,
            line: false,
            logged: 0,
        }));
        weights.push(share.weight);
    }
    crate::page_track::set_handler(tracked_write);
    MEDIATOR.call_once(|| {
        Mutex::new(Mediator {
            slots,
            scheduler: Scheduler::new(&weights),
            running: None,
            local_base: info.local_address,
            local_size: info.local_size,
        })
    });
    Ok(())
}

/// The interrupt the guest is told in INFO_INTERRUPT.
fn interrupt_number() -> u32 {
    #[cfg(target_arch = "aarch64")]
    {
        bulkhead_config::VIRTUAL_GPU_SPI
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        u32::from(bulkhead_config::VIRTUAL_GPU_IOAPIC_PIN)
    }
}

/// Tells the mediator how to wake the CPU that runs partition `index`.
pub fn set_kick(index: usize, kick: Kick, target: u64) {
    if let Some(m) = MEDIATOR.get()
        && let Some(Some(slot)) = m.lock().slots.get_mut(index)
    {
        slot.kick = Some((kick, target));
    }
}

fn partition_bit(index: usize) -> Option<u32> {
    (index < MAX_PARTITIONS).then(|| 1u32 << index)
}

/// If partition `index`'s interrupt line changed since the last call, its
/// level now (arm64 raises its edge SPI on `Some(true)`; x86_64 sets its
/// level-triggered I/O APIC pin to the level).
pub fn take_line_change(index: usize) -> Option<bool> {
    let bit = partition_bit(index)?;
    (CHANGED.fetch_and(!bit, Ordering::AcqRel) & bit != 0).then(|| LEVEL.load(Ordering::Acquire) & bit != 0)
}

/// The partition stopped or restarts: its virtual GPU back to power-on,
/// its queue dropped, its real-GTT slice back at scratch.
pub fn reset(index: usize) {
    let Some(m) = MEDIATOR.get() else { return };
    let mut m = m.lock();
    m.scheduler.drop_partition(index);
    // Its work may be walking the shadow tables freed below: they go back
    // to the heap only once the engine has stopped (else they are kept).
    let mut keep_pages = false;
    if m.running == Some(index) {
        keep_pages = !wait_for_engine();
        m.running = None;
    }
    if let Some(Some(slot)) = m.slots.get_mut(index) {
        let space = slot.space.take().unwrap_or_default();
        if keep_pages {
            log::error!("partition {}: the GPU did not finish its work: its shadow page tables are kept, not freed", slot.name);
        }
        let mut tables = Tables { partition: index, in_use: &mut slot.shadow_pages, keep_pages };
        slot.vgpu.reset(&mut Env { space: &space, pins: &mut slot.pins, memory: &mut tables });
        slot.batches_next = 0;
        slot.line = false;
        if let Some(bit) = partition_bit(index) {
            LEVEL.fetch_and(!bit, Ordering::AcqRel);
        }
        {
            let scratch = slot.vgpu.gtt().scratch_entry();
            for i in slot.vgpu.gtt().real_indices() {
                if let Ok(i) = u32::try_from(i) {
                    let _ = gpu_hw::write_gtt(i, scratch);
                }
            }
        }
    }
}

/// Polls the engine until it is idle (a fault counts: it stopped), then
/// drops what is left of the work; `false` if it did not stop (the model
/// bounds the work of one batch, so it does).
fn wait_for_engine() -> bool {
    const POLLS: u32 = 50_000_000;
    for _ in 0..POLLS {
        match gpu_hw::poll() {
            Ok(completion) if completion.idle || completion.fault.is_some() => {
                if completion.fault.is_some() {
                    let _ = gpu_hw::abandon_after_fault();
                }
                return true;
            }
            Ok(_) => core::hint::spin_loop(),
            Err(_) => return false,
        }
    }
    false
}

/// The shadow page tables' memory and the write protection of the guest's
/// tables, for one partition.
struct Tables<'a> {
    partition: usize,
    in_use: &'a mut u32,
    /// Freed pages stay allocated (the GPU may still walk them).
    keep_pages: bool,
}

/// One shadow page-table page.
const TABLE_LAYOUT: core::alloc::Layout = match core::alloc::Layout::from_size_align(4096, 4096) {
    Ok(layout) => layout,
    Err(_) => panic!("a page layout"),
};

impl PpgttMemory for Tables<'_> {
    fn read_guest_entry(&self, table: Hpa, index: usize) -> u64 {
        // SAFETY: `table` is a page of the partition's own RAM (the shadow
        // validated it through the address space) and `index` < 512; the
        // hypervisor identity-maps all RAM. Volatile: the guest may store
        // to it (that store traps and is performed by us, but another vCPU
        // may be mid-way).
        unsafe { ((table.raw() as usize + index * 8) as *const u64).read_volatile() }
    }

    fn allocate(&mut self) -> Option<Hpa> {
        if *self.in_use >= SHADOW_TABLE_PAGES {
            return None;
        }
        // SAFETY: a non-zero-sized layout.
        let page = unsafe { alloc::alloc::alloc_zeroed(TABLE_LAYOUT) };
        if page.is_null() {
            return None;
        }
        *self.in_use += 1;
        // The heap is identity mapped: its address is the GPU's address.
        Some(Hpa::new(page as u64))
    }

    fn free(&mut self, page: Hpa) {
        *self.in_use = self.in_use.saturating_sub(1);
        if self.keep_pages {
            return;
        }
        // SAFETY: `page` came from `allocate` with this layout, and the
        // shadow frees each page once, after unlinking it.
        unsafe { alloc::alloc::dealloc(page.raw() as usize as *mut u8, TABLE_LAYOUT) }
    }

    fn write_shadow_entry(&mut self, page: Hpa, index: usize, entry: u64) {
        if index < bulkhead_abi::gpu::ppgtt::ENTRIES {
            // SAFETY: `page` is a shadow page from `allocate`, inside it.
            // Volatile: the GPU (another agent) reads it.
            unsafe { ((page.raw() as usize + index * 8) as *mut u64).write_volatile(entry) }
        }
    }

    fn track(&mut self, page: Gpa) -> bool {
        match crate::page_track::track(self.partition, page) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("partition {}: GPU page table at {page}: cannot write-protect it: {e:?}", self.partition);
                false
            }
        }
    }

    fn untrack(&mut self, page: Gpa) {
        crate::page_track::untrack(self.partition, page);
    }
}

/// The page tracker's handler: stores to a partition's GPU page tables,
/// already performed.
fn tracked_write(index: usize, writes: &[TrackedWrite]) {
    let Some(m) = MEDIATOR.get() else { return };
    let mut m = m.lock();
    let Some(Some(slot)) = m.slots.get_mut(index) else { return };
    let Some(space) = &slot.space else { return };
    let refused = slot.vgpu.shadows().stats().refused;
    let mut tables = Tables { partition: index, in_use: &mut slot.shadow_pages, keep_pages: false };
    slot.vgpu.tracked_write(&mut Env { space, pins: &mut slot.pins, memory: &mut tables }, writes.iter().map(|w| (w.gpa, w.width)));
    log_refused(slot, refused, "a store to its page tables");
}

/// Logs (rate-limited) per-process entries pointed at scratch since the
/// count was `before`.
fn log_refused(slot: &mut Slot, before: u64, by: &str) {
    let now = slot.vgpu.shadows().stats().refused;
    if now > before {
        slot.logged = slot.logged.saturating_add(1);
        if slot.logged <= LOG_LIMIT {
            log::warn!("partition {}: {by}: {} per-process GTT entries refused (scratch)", slot.name, now - before);
        }
    }
}

/// Reads machine memory for a virtual GPU: host RAM through the
/// hypervisor's identity map, local memory through its BAR2 mapping.
struct Physical {
    local_base: u64,
    local_size: u64,
}

impl PhysicalReader for Physical {
    fn read_ram(&mut self, hpa: Hpa, buf: &mut [u8]) -> bool {
        // Volatile byte reads: the guest may write the page meanwhile.
        for (i, byte) in buf.iter_mut().enumerate() {
            // SAFETY: the virtual GTT hands out only pages of the
            // partition's own RAM that it has pinned; the hypervisor
            // identity-maps all RAM.
            *byte = unsafe { ((hpa.raw() as usize + i) as *const u8).read_volatile() };
        }
        true
    }

    fn read_local(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        let Some(end) = offset.checked_add(buf.len() as u64) else { return false };
        if end > self.local_size {
            return false;
        }
        for (i, byte) in buf.iter_mut().enumerate() {
            // SAFETY: inside local memory, which the arch wiring mapped
            // (BAR2) for the hypervisor; bounds checked above.
            *byte = unsafe { ((self.local_base + offset) as usize as *const u8).add(i).read_volatile() };
        }
        true
    }
}

impl Mediator {
    fn read(&mut self, index: usize, offset: u64, size: AccessSize) -> u64 {
        let Some(Some(slot)) = self.slots.get_mut(index) else { return 0 };
        slot.vgpu.read(offset, size.bytes() as u8)
    }

    fn write(&mut self, index: usize, space: &AddressSpace, offset: u64, size: AccessSize, value: u64) {
        let mut physical = Physical { local_base: self.local_base, local_size: self.local_size };
        let Some(Some(slot)) = self.slots.get_mut(index) else { return };
        let (area, used) = (slot.batches, &mut slot.batches_next);
        let mut place = |sizes: &[u64]| -> Option<Vec<u64>> {
            // Bump allocation in the area; space is reused once the
            // partition has nothing outstanding (see `complete`).
            let mut at = *used;
            let mut addresses = Vec::with_capacity(sizes.len());
            for &bytes in sizes {
                let end = at.checked_add(bytes.div_ceil(8) * 8)?;
                if end > SHADOW_BATCH_BYTES {
                    return None;
                }
                addresses.push(area + at);
                at = end;
            }
            *used = at;
            Some(addresses)
        };
        if slot.space.is_none() {
            slot.space = Some(space.clone());
        }
        let mut tables = Tables { partition: index, in_use: &mut slot.shadow_pages, keep_pages: false };
        let mut context =
            WriteContext { space, pins: &mut slot.pins, memory: &mut physical, shadows: &mut place, tables: &mut tables };
        let refused = slot.vgpu.shadows().stats().refused;
        let effect = slot.vgpu.write(&mut context, offset, size.bytes() as u8, value);
        log_refused(slot, refused, "a context it submitted");
        for update in &effect.gtt_updates {
            if let Ok(i) = u32::try_from(update.index)
                && let Err(e) = gpu_hw::write_gtt(i, update.value)
            {
                log::error!("partition {}: GTT entry {i}: {e}", slot.name);
            }
        }
        if let Some(bulkhead_core::gpu::gtt::EntryState::Refused(why)) = &effect.gtt_entry {
            slot.logged = slot.logged.saturating_add(1);
            if slot.logged <= LOG_LIMIT {
                log::warn!("partition {}: GTT entry at offset {:#x} refused ({why:?}): scratch page", slot.name, offset);
            }
        }
        if let Some(rejection) = &effect.rejection {
            slot.logged = slot.logged.saturating_add(1);
            if slot.logged <= LOG_LIMIT {
                log::warn!(
                    "partition {}: GPU submission rejected (code {}, ring offset {:#x}, header {:#010x}): {:?}",
                    slot.name,
                    rejection.code,
                    rejection.offset,
                    rejection.header,
                    rejection.cause
                );
            }
        }
        if let Some(submission) = effect.submission
            && self.scheduler.push(index, submission).is_err()
            && let Some(Some(slot)) = self.slots.get_mut(index)
        {
            // The virtual GPU bounds what it accepts below the scheduler's
            // room; should that ever differ, the work fails visibly.
            slot.vgpu.complete(Some(GpuFault { status: 0, command: 0, address: 0 }));
        }
        self.update_line(index);
        self.start_next();
    }

    /// Publishes partition `index`'s interrupt line if it changed, and
    /// wakes the CPU that runs the partition so it looks.
    fn update_line(&mut self, index: usize) {
        let Some(Some(slot)) = self.slots.get_mut(index) else { return };
        let level = slot.vgpu.interrupt_asserted();
        if level == slot.line {
            return;
        }
        slot.line = level;
        if let Some(bit) = partition_bit(index) {
            if level {
                LEVEL.fetch_or(bit, Ordering::AcqRel);
            } else {
                LEVEL.fetch_and(!bit, Ordering::AcqRel);
            }
            CHANGED.fetch_or(bit, Ordering::AcqRel);
        }
        if let Some((kick, target)) = slot.kick {
            kick(target);
        }
    }

    /// The engine finished (or faulted on) the running submission.
    fn service(&mut self) {
        let Ok(completion) = gpu_hw::poll() else { return };
        if !completion.idle {
            return;
        }
        if let Some(running) = self.running.take() {
            let fault = completion.fault.map(|f| GpuFault { status: f.code, command: f.command, address: f.address });
            if fault.is_some() {
                // Skip what is left of the submission (resuming at the
                // faulting command would fault again).
                let _ = gpu_hw::abandon_after_fault();
            }
            if let Some(Some(slot)) = self.slots.get_mut(running) {
                if let Some(f) = &fault {
                    slot.logged = slot.logged.saturating_add(1);
                    if slot.logged <= LOG_LIMIT {
                        log::warn!("partition {}: the GPU faulted on its work: {f:?}", slot.name);
                    }
                }
                slot.vgpu.complete(fault);
                if slot.vgpu.outstanding() == 0 {
                    slot.batches_next = 0;
                }
            }
            self.update_line(running);
        } else if completion.fault.is_some() {
            let _ = gpu_hw::abandon_after_fault();
        }
        self.start_next();
    }

    /// Runs the next queued submission if the engine is free.
    fn start_next(&mut self) {
        if self.running.is_some() {
            return;
        }
        let Some((partition, submission)) = self.scheduler.next() else { return };
        let Some(Some(slot)) = self.slots.get_mut(partition) else { return };
        match run(slot, &submission) {
            Ok(()) => self.running = Some(partition),
            Err(e) => {
                log::error!("partition {}: cannot run its GPU submission: {e}", slot.name);
                slot.vgpu.complete(Some(GpuFault { status: 0, command: 0, address: 0 }));
                self.update_line(partition);
            }
        }
    }
}

/// Copies a submission's frozen batches and ring commands into the
/// partition's shadow areas and starts the engine on them.
fn run(slot: &Slot, submission: &Submission) -> Result<(), String> {
    for batch in &submission.batches {
        gpu_hw::write_local(batch.address, &batch.dwords).map_err(|e| format!("shadow batch: {e}"))?;
    }
    let mut commands = submission.commands.clone();
    // RING_TAIL is qword aligned: pad with MI_NOOP.
    if commands.len() % 2 == 1 {
        commands.push(cmd::mi(cmd::MI_NOOP, 0));
    }
    let bytes = commands.len() as u64 * DWORD;
    if bytes >= SHADOW_RING_BYTES {
        return Err(format!("{bytes} bytes of ring commands exceed the {SHADOW_RING_BYTES}-byte shadow ring"));
    }
    gpu_hw::write_local(slot.ring, &commands).map_err(|e| format!("shadow ring: {e}"))?;
    gpu_hw::submit(slot.ring, SHADOW_RING_BYTES as u32, 0, bytes as u32).map_err(|e| format!("submit: {e}"))
}

/// Looks at the GPU: completes finished work, starts the next, raises
/// interrupts. Called at every exit of a partition with a virtual GPU.
pub fn service() {
    let Some(m) = MEDIATOR.get() else { return };
    m.lock().service();
}

/// The trapped register BAR of partition `index` on its MMIO bus.
pub struct RegisterBar {
    /// The partition's index.
    pub index: usize,
}

impl MmioDevice for RegisterBar {
    fn name(&self) -> &'static str {
        "virtual GPU registers"
    }

    fn read(&mut self, _vcpu: VcpuId, offset: u64, size: AccessSize) -> u64 {
        MEDIATOR.get().map_or(0, |m| m.lock().read(self.index, offset, size))
    }

    fn write(&mut self, _vcpu: VcpuId, _offset: u64, _size: AccessSize, _value: u64) {
        // Stores come through `write_in`, which knows the address space.
    }

    fn write_in(&mut self, space: &AddressSpace, _vcpu: VcpuId, offset: u64, size: AccessSize, value: u64) {
        if let Some(m) = MEDIATOR.get() {
            m.lock().write(self.index, space, offset, size, value);
        }
    }
}
