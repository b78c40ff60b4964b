//! x86_64 host memory: the frame allocator that hands out guest RAM, the
//! NPT's table frames and the SVM pages, and host-memory access for the
//! hypercall code.
//!
//! The hypervisor runs on its own identity map ([`super::paging`]), which
//! covers all RAM, so a host-physical address is also the address to
//! dereference. Frames come from the memory that is free after
//! `ExitBootServices`: `EfiConventionalMemory` (UEFI type 7) and, since the
//! firmware's page tables that lived there are no longer in use (the
//! [`Live`] witness says so), `EfiBootServicesCode` and
//! `EfiBootServicesData` (types 3 and 4). Never loader memory (types 1 and
//! 2: the hypervisor image and the loader itself), never the hypervisor's
//! or the guest images' own types (pool, boot information, configuration,
//! memory map, guest images; excluded again by address, in case firmware
//! reported them differently), and never below 1 MiB (the legacy area, page
//! 0, the AP trampoline and the page-table root live there). The other
//! table frames of the hypervisor's own tables come from its pool.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_abi::boot::BootInfo;
use bulkhead_arch_x86_64::FrameAllocator as TableFrames;
use bulkhead_core::address::Hpa;
use bulkhead_abi::boot::PhysRange;
use bulkhead_core::memmap::{self, MemoryDescriptor};
use bulkhead_core::partition::HostMemory;
use buddy_system_allocator::FrameAllocator;
use core::alloc::Layout;
use spin::Mutex;
use super::paging::Live;

const PAGE_SIZE: u64 = 4096;
/// UEFI `EfiBootServicesCode`, `EfiBootServicesData` and
/// `EfiConventionalMemory`: free once boot services are gone and the
/// firmware's page tables are no longer in use.
const UEFI_FREE_TYPES: [u32; 3] = [3, 4, 7];
/// UEFI `EfiConventionalMemory`.
const UEFI_CONVENTIONAL: u32 = 7;
/// Frames below this stay unused.
const LOW_LIMIT: u64 = 1 << 20;
/// Below this, low memory is RAM on a PC (the VGA window follows).
const LOW_RAM_END: u64 = 0xa_0000;

/// Free host memory, in 4 KiB frames.
static FRAMES: Mutex<FrameAllocator<32>> = Mutex::new(FrameAllocator::new());
/// The RAM frames may come from (before the host-backed ranges were taken
/// out): host-backed guest RAM must lie inside it too.
static USABLE: spin::Once<Vec<(u64, u64)>> = spin::Once::new();

/// Every range the loader handed over: never guest memory.
fn loader_ranges(boot_info: &BootInfo) -> Vec<PhysRange> {
    let block = PhysRange { base: boot_info as *const BootInfo as u64, size: core::mem::size_of::<BootInfo>() as u64 };
    let mut ranges = alloc::vec![
        boot_info.hv_image,
        boot_info.hv_pool,
        boot_info.memory_map.buffer,
        boot_info.device_tree,
        boot_info.config,
        boot_info.bootargs,
        block,
    ];
    ranges.extend(boot_info.modules().iter().map(|m| m.data));
    ranges
}

/// Fills the frame allocator with the memory of `map` that is free after
/// `ExitBootServices` (see the module documentation), less `keep_out`
/// (host ranges the configuration assigns by address). Needs the
/// hypervisor's own tables to be live.
pub fn init(boot_info: &BootInfo, map: &[MemoryDescriptor], keep_out: &[(u64, u64)], _tables: &Live) {
    let mut usable: Vec<(u64, u64)> = map
        .iter()
        .filter(|d| UEFI_FREE_TYPES.contains(&d.uefi_type) && d.end() > LOW_LIMIT)
        .map(|d| (d.base.max(LOW_LIMIT), d.end()))
        .collect();
    memmap::merge(&mut usable);
    let mut excluded: Vec<(u64, u64)> = loader_ranges(boot_info)
        .into_iter()
        .filter(|r| !r.is_empty())
        .map(|r| (r.base & !(PAGE_SIZE - 1), r.end().unwrap_or(u64::MAX)))
        .collect();
    memmap::merge(&mut excluded);
    USABLE.call_once(|| memmap::subtract(&usable, &excluded));
    excluded.extend_from_slice(keep_out);
    memmap::merge(&mut excluded);
    let free = memmap::subtract(&usable, &excluded);
    let mut frames = FRAMES.lock();
    let mut total = 0;
    for &(base, end) in &free {
        let (first, last) = (base.div_ceil(PAGE_SIZE), end / PAGE_SIZE);
        if first < last {
            frames.add_frame(first as usize, last as usize);
            total += (last - first) * PAGE_SIZE;
        }
    }
    let mib_of = |ty: u32| map.iter().filter(|d| d.uefi_type == ty && d.end() > LOW_LIMIT).map(|d| d.size).sum::<u64>() >> 20;
    log::info!(
        "memory: {} MiB free for partitions in {} ranges (conventional {} MiB, boot-services code {} MiB, data {} MiB)",
        total >> 20,
        free.len(),
        mib_of(7),
        mib_of(3),
        mib_of(4)
    );
}

/// Checks that `base..end`, named by a partition's `backing = { host = … }`,
/// may be given to it: the checks both architectures share
/// ([`crate::host_backing::check_host_range`]), and, where it is RAM, only
/// RAM the frame allocator could have handed out (see the module
/// documentation: never loader memory or anything below 1 MiB).
///
/// # Errors
/// Why the range is refused.
pub fn check_host_backing(map: &[MemoryDescriptor], hv_image: (u64, u64), base: u64, end: u64) -> Result<(), String> {
    crate::host_backing::check_host_range(map, hv_image, base, end)?;
    let ram = memmap::ranges_of(map, memmap::MemoryKind::Free);
    if ram.iter().any(|&(b, e)| base < e && b < end) {
        let usable = USABLE.get().map(Vec::as_slice).unwrap_or_default();
        if !usable.iter().any(|&(b, e)| b <= base && end <= e) {
            return Err(alloc::format!(
                "host range {base:#x}..{end:#x} is not RAM the hypervisor may give to partitions (free memory above 1 MiB outside what the loader handed over)"
            ));
        }
    }
    Ok(())
}

/// Allocates `size` bytes of zeroed, physically contiguous host memory,
/// aligned to `align` (a power of two, at least a page).
pub fn alloc_frames(size: u64, align: u64) -> Option<Hpa> {
    let layout = Layout::from_size_align(size.div_ceil(PAGE_SIZE) as usize, (align.max(PAGE_SIZE) / PAGE_SIZE) as usize)
        .ok()?;
    let frame = FRAMES.lock().alloc_aligned(layout)?;
    let base = frame as u64 * PAGE_SIZE;
    // SAFETY: the frames were free RAM, identity-mapped by the hypervisor's
    // tables, and are now ours alone.
    unsafe { core::ptr::write_bytes(base as *mut u8, 0, size as usize) };
    Some(Hpa::new(base))
}

/// Copies `bytes` into freshly allocated, zeroed, page-aligned frames.
pub fn frames_holding(bytes: &[u8], what: &str) -> Result<u64, String> {
    let hpa = alloc_frames(bytes.len() as u64, 4096).ok_or_else(|| format!("no memory for the {what}"))?;
    // SAFETY: the frames were just allocated, identity-mapped and unused.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), hpa.raw() as *mut u8, bytes.len()) };
    Ok(hpa.raw())
}

/// Table frames for the NPT and EPT builders, from [`alloc_frames`].
pub struct NptFrames;

impl TableFrames for NptFrames {
    fn allocate_zeroed_frame(&mut self) -> Option<u64> {
        alloc_frames(PAGE_SIZE, PAGE_SIZE).map(|hpa| hpa.raw())
    }

    fn frame(&self, pa: u64) -> &[u64; 512] {
        // SAFETY: `pa` is a frame this allocator handed out (the builder's
        // promise), identity-mapped and owned by the table.
        unsafe { &*(pa as *const [u64; 512]) }
    }

    fn frame_mut(&mut self, pa: u64) -> &mut [u64; 512] {
        // SAFETY: as in `frame`; the table is the frame's only user.
        unsafe { &mut *(pa as *mut [u64; 512]) }
    }
}

/// Host memory through the hypervisor's identity map, read with volatile
/// byte loads: a guest may change it concurrently, so no Rust reference
/// ever points into it.
pub struct IdentityMemory;

impl IdentityMemory {
    /// One 8-byte load from 8-byte aligned `hpa` (a guest page-table entry),
    /// or `None` if `hpa` is not aligned.
    pub fn read_u64(&self, hpa: Hpa) -> Option<u64> {
        if !hpa.raw().is_multiple_of(8) {
            return None;
        }
        // SAFETY: callers pass addresses a partition's address space
        // translated: partition RAM, which the identity map covers; the
        // load is aligned and volatile (the guest may change it meanwhile).
        Some(unsafe { (hpa.raw() as *const u64).read_volatile() })
    }
}

impl HostMemory for IdentityMemory {
    fn read(&self, hpa: Hpa, buf: &mut [u8]) {
        let base = hpa.raw() as *const u8;
        for (i, byte) in buf.iter_mut().enumerate() {
            // SAFETY: callers pass ranges a partition's address space
            // translated: partition RAM, which the identity map covers.
            *byte = unsafe { base.add(i).read_volatile() };
        }
    }
}

/// Free 4 KiB pages below 1 MiB (and above page 0), from the firmware's
/// conventional memory, lowest first: the AP start-up trampoline and the
/// root of the hypervisor's page tables go there. The frame allocator never
/// hands out memory below 1 MiB, so they stay the hypervisor's.
pub fn low_pages(map: &[MemoryDescriptor]) -> impl Iterator<Item = u64> + '_ {
    map.iter()
        .filter(|d| d.uefi_type == UEFI_CONVENTIONAL)
        .map(|d| (d.base.max(PAGE_SIZE).next_multiple_of(PAGE_SIZE), d.end().min(LOW_RAM_END)))
        .flat_map(|(base, end)| (base..end.max(base)).step_by(PAGE_SIZE as usize).filter(move |page| page + PAGE_SIZE <= end))
}
