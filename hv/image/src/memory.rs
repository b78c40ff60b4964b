//! Hypervisor memory: the heap in the loader's pool, our own EL2 identity
//! map, and the frame allocator that hands out guest memory.
//!
//! Order matters. The heap comes from the hypervisor-owned pool, so it works
//! before anything else; the identity map is built from the heap and
//! activated before any boot-services memory (which holds the firmware's
//! page tables) is handed to the frame allocator.

use bulkhead_abi::boot::BootInfo;
use bulkhead_arch_aarch64::mmu::{El2IdMap, El2Memory};
use bulkhead_core::address::Hpa;
use bulkhead_core::memmap::{self, MemoryDescriptor, MemoryKind};
use bulkhead_core::partition::HostMemory;
use bulkhead_drivers::pl011::Pl011;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use buddy_system_allocator::{FrameAllocator, LockedHeap};
use core::alloc::Layout;
use spin::Mutex;

use crate::platform::Platform;

/// Bytes at the top of the pool used as the boot CPU's stack (`_start` puts
/// the stack pointer at the pool's end).
pub const STACK_SIZE: u64 = 256 << 10;
/// An unmapped page below the stack, so an overflow faults instead of
/// corrupting the heap.
const GUARD_SIZE: u64 = 4096;
const PAGE_SIZE: u64 = 4096;

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Free host memory, in 4 KiB frames.
static FRAMES: Mutex<FrameAllocator<32>> = Mutex::new(FrameAllocator::new());

/// Starts the heap in the pool below the stack and its guard page.
///
/// # Safety
/// Call once, before any allocation, with the loader's boot information.
pub unsafe fn init_heap(boot_info: &BootInfo) {
    let pool = boot_info.hv_pool;
    let heap_size = pool.size - STACK_SIZE - GUARD_SIZE;
    // SAFETY: the pool is hypervisor-owned memory reserved by the loader for
    // exactly this, and the heap range stays below the guard page and stack.
    unsafe { HEAP.lock().init(pool.base as usize, heap_size as usize) };
}

/// The memory layout once set up.
pub struct Memory {
    /// The firmware memory map.
    pub map: Vec<MemoryDescriptor>,
    /// The hypervisor image, `(base, end)` (its memory type is loader code).
    pub hv_image: (u64, u64),
}

/// Builds and activates the identity map, then fills the frame allocator.
///
/// # Errors
/// A malformed memory map or a mapping failure, as text for the boot log.
/// `host_backed` lists host ranges the configuration assigns by address;
/// they are kept out of the allocator.
pub fn init(boot_info: &BootInfo, platform: &Platform, host_backed: &[(u64, u64)]) -> Result<Memory, String> {
    let map = crate::loaded::memory_map(boot_info)?;

    let pool = boot_info.hv_pool;
    let guard = (pool.base + pool.size - STACK_SIZE - GUARD_SIZE, pool.base + pool.size - STACK_SIZE);
    let mut idmap = El2IdMap::new();
    let mut ram = Vec::new();
    for kind in [MemoryKind::Free, MemoryKind::Hypervisor, MemoryKind::GuestImage, MemoryKind::FirmwareRam] {
        ram.extend(memmap::ranges_of(&map, kind));
    }
    memmap::merge(&mut ram);
    for (base, end) in memmap::subtract(&ram, &[guard]) {
        idmap.map(base, end - base, El2Memory::Normal).map_err(|e| format!("mapping RAM {base:#x}..{end:#x}: {e:?}"))?;
    }
    for (base, end) in memmap::ranges_of(&map, MemoryKind::Mmio) {
        idmap.map(base, end - base, El2Memory::Device).map_err(|e| format!("mapping MMIO {base:#x}..{end:#x}: {e:?}"))?;
    }
    if let Some(uart) = platform.uart {
        idmap.map(uart, Pl011::MMIO_SIZE, El2Memory::Device).map_err(|e| format!("mapping the console: {e:?}"))?;
    }
    if let Some(((gicd, gicd_size), (gicr, gicr_size))) = platform.gic {
        idmap.map(gicd, gicd_size, El2Memory::Device).map_err(|e| format!("mapping the GIC distributor: {e:?}"))?;
        idmap.map(gicr, gicr_size, El2Memory::Device).map_err(|e| format!("mapping the GIC redistributors: {e:?}"))?;
    }
    if let Some(its) = &platform.its {
        idmap.map(its.base, its.size, El2Memory::Device).map_err(|e| format!("mapping the GIC ITS: {e:?}"))?;
    }
    if let Some(smmu) = &platform.smmu {
        idmap.map(smmu.base, smmu.size, El2Memory::Device).map_err(|e| format!("mapping the SMMU: {e:?}"))?;
    }
    if let Some(pci) = &platform.pci {
        let ecam = pci.ecam_size.min(crate::pci::ECAM_MAPPED_BUSES * bulkhead_drivers::pci::ECAM_BUS_SIZE);
        idmap.map(pci.ecam, ecam, El2Memory::Device).map_err(|e| format!("mapping PCI ECAM: {e:?}"))?;
        // BARs the hypervisor itself touches (the DMA self-test's edu, the
        // GPU); a window the map cannot take is skipped.
        // The 64-bit window too: the GPU's 64-bit prefetchable shared-memory
        // BAR lands there (one level-1 table of 1 GiB blocks).
        for &(base, size) in &pci.windows {
            if let Err(e) = idmap.map(base, size, El2Memory::Device) {
                log::warn!("PCI memory window {base:#x}+{size:#x} not mapped: {e:?}");
            }
        }
    }
    // SAFETY: the map covers the image, pool (less the guard page), boot
    // information, guest images, all free RAM and the console, with the
    // attributes the firmware used for them.
    unsafe { idmap.activate(platform.firmware.pa_bits) };

    // The image is `EfiLoaderCode` (see `BootInfo::hv_image`): not free.
    let image = boot_info.hv_image;
    let mut keep_out = alloc::vec![(image.base, image.base + image.size)];
    keep_out.extend_from_slice(host_backed);
    memmap::merge(&mut keep_out);
    let free = memmap::subtract(&memmap::ranges_of(&map, MemoryKind::Free), &keep_out);
    let mut frames = FRAMES.lock();
    let mut total = 0;
    for &(base, end) in &free {
        frames.add_frame((base / PAGE_SIZE) as usize, (end / PAGE_SIZE) as usize);
        total += end - base;
    }
    let hv: u64 = memmap::ranges_of(&map, MemoryKind::Hypervisor).iter().map(|(b, e)| e - b).sum::<u64>() + image.size;
    log::info!(
        "memory: {} MiB free for partitions in {} ranges, {} KiB owned by the hypervisor; own EL2 tables active",
        total >> 20,
        free.len(),
        hv >> 10
    );
    let mut own = memmap::ranges_of(&map, MemoryKind::Hypervisor);
    own.push((image.base, image.base + image.size));
    own.sort_unstable();
    log::info!("memory: the hypervisor's own ranges {own:x?}");
    Ok(Memory { map, hv_image: (image.base, image.base + image.size) })
}

/// Allocates `size` bytes of zeroed, physically contiguous host memory,
/// aligned to `align` (a power of two, at least a page).
pub fn alloc_frames(size: u64, align: u64) -> Option<Hpa> {
    let layout = Layout::from_size_align(size as usize, align.max(PAGE_SIZE) as usize).ok()?;
    let frame = FRAMES.lock().alloc_aligned(layout_in_frames(layout)?)?;
    let base = frame as u64 * PAGE_SIZE;
    // SAFETY: the frames were free RAM, identity-mapped, and are now ours alone.
    unsafe { core::ptr::write_bytes(base as *mut u8, 0, size as usize) };
    Some(Hpa::new(base))
}

fn layout_in_frames(layout: Layout) -> Option<Layout> {
    let size = layout.size().div_ceil(PAGE_SIZE as usize);
    let align = layout.align() / PAGE_SIZE as usize;
    Layout::from_size_align(size, align).ok()
}

/// Host memory through the identity map, read with volatile byte loads: a
/// guest may change it concurrently, so no Rust reference ever points into it.
pub struct IdentityMemory;

impl HostMemory for IdentityMemory {
    fn read(&self, hpa: Hpa, buf: &mut [u8]) {
        let base = hpa.raw() as *const u8;
        for (i, byte) in buf.iter_mut().enumerate() {
            // SAFETY: callers pass ranges a partition's address space
            // translated, which are RAM the identity map covers.
            *byte = unsafe { base.add(i).read_volatile() };
        }
    }
}
