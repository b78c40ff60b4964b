//! x86_64 host memory: the frame allocator that hands out guest RAM, the
//! NPT's table frames and the SVM pages, and host-memory access for the
//! hypercall code.
//!
//! The hypervisor still runs on OVMF's page tables, which identity-map all
//! low RAM (the whole 1 GiB of the q35 test machine), so a host-physical
//! address is also the address to dereference. Those tables live in boot
//! services memory, which `memmap` counts as free once boot services are
//! gone: frames are therefore taken only from `EfiConventionalMemory`
//! (UEFI type 7), never from loader or boot-services memory, and never
//! below 1 MiB (legacy area and a possibly unmapped page 0). Own
//! hypervisor page tables are future work.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_abi::boot::BootInfo;
use bulkhead_arch_x86_64::FrameAllocator as TableFrames;
use bulkhead_core::address::Hpa;
use bulkhead_core::memmap::{self, MemoryDescriptor};
use bulkhead_core::partition::HostMemory;
use buddy_system_allocator::FrameAllocator;
use core::alloc::Layout;
use spin::Mutex;

const PAGE_SIZE: u64 = 4096;
/// UEFI `EfiConventionalMemory`.
const UEFI_CONVENTIONAL: u32 = 7;
/// Frames below this stay unused.
const LOW_LIMIT: u64 = 1 << 20;

/// Free host memory, in 4 KiB frames.
static FRAMES: Mutex<FrameAllocator<32>> = Mutex::new(FrameAllocator::new());

/// Parses the firmware memory map and fills the frame allocator with its
/// conventional memory above 1 MiB, less `keep_out` (host ranges the
/// configuration assigns by address). Returns the map.
///
/// # Errors
/// A malformed memory map, as text for the boot log.
pub fn init(boot_info: &BootInfo, keep_out: &[(u64, u64)]) -> Result<Vec<MemoryDescriptor>, String> {
    let map = crate::loaded::memory_map(boot_info)?;
    let mut conventional: Vec<(u64, u64)> = map
        .iter()
        .filter(|d| d.uefi_type == UEFI_CONVENTIONAL && d.end() > LOW_LIMIT)
        .map(|d| (d.base.max(LOW_LIMIT), d.end()))
        .collect();
    memmap::merge(&mut conventional);
    let image = boot_info.hv_image;
    let mut excluded = alloc::vec![(image.base, image.base + image.size)];
    excluded.extend_from_slice(keep_out);
    memmap::merge(&mut excluded);
    let free = memmap::subtract(&conventional, &excluded);
    let mut frames = FRAMES.lock();
    let mut total = 0;
    for &(base, end) in &free {
        let (first, last) = (base.div_ceil(PAGE_SIZE), end / PAGE_SIZE);
        if first < last {
            frames.add_frame(first as usize, last as usize);
            total += (last - first) * PAGE_SIZE;
        }
    }
    log::info!(
        "memory: {} MiB of conventional memory free for partitions in {} ranges (still on OVMF's identity map)",
        total >> 20,
        free.len()
    );
    Ok(map)
}

/// Allocates `size` bytes of zeroed, physically contiguous host memory,
/// aligned to `align` (a power of two, at least a page).
pub fn alloc_frames(size: u64, align: u64) -> Option<Hpa> {
    let layout = Layout::from_size_align(size.div_ceil(PAGE_SIZE) as usize, (align.max(PAGE_SIZE) / PAGE_SIZE) as usize)
        .ok()?;
    let frame = FRAMES.lock().alloc_aligned(layout)?;
    let base = frame as u64 * PAGE_SIZE;
    // SAFETY: the frames were free conventional memory, identity-mapped by
    // the firmware's tables, and are now ours alone.
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

/// Host memory through the firmware's identity map, read with volatile
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

/// A free 4 KiB page below 1 MiB (and above page 0), from the firmware's
/// conventional memory: where the AP start-up trampoline goes. The frame
/// allocator never hands out memory below 1 MiB, so the page stays ours.
pub fn low_page(map: &[MemoryDescriptor]) -> Option<u64> {
    map.iter()
        .filter(|d| d.uefi_type == UEFI_CONVENTIONAL)
        .map(|d| (d.base.max(PAGE_SIZE).next_multiple_of(PAGE_SIZE), d.end().min(0xa_0000)))
        .find(|(base, end)| base + PAGE_SIZE <= *end)
        .map(|(base, _)| base)
}
