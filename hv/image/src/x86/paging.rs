//! The hypervisor's own page tables on x86_64: built once on the boot CPU
//! from the firmware memory map, then loaded into CR3 there and (through
//! the AP trampoline, which copies CR3) on every other CPU.
//!
//! An identity map (virtual = physical), so no address in the hypervisor
//! changes meaning when the tables go live. What it maps
//! ([`bulkhead_arch_x86_64::identity`] has the layout rules):
//!
//! - every RAM range of the UEFI memory map (free, firmware, the
//!   hypervisor's and the guest images' own types; ACPI tables are read in
//!   place from ACPI reclaim/NVS memory): read-write, no-execute,
//!   write-back;
//! - the hypervisor image by its ELF segments: code read-execute, read-only
//!   data and RELRO read-only, the rest read-write no-execute;
//! - the AP trampoline page: read-write-execute (APs run its 64-bit tail
//!   after paging is on; the boot CPU writes each AP's parameters into it);
//! - the local APIC's registers: uncached;
//! - and nothing else: page 0 (null pointers), the guard page below the
//!   boot CPU's stack, MMIO the hypervisor does not drive, and every hole
//!   of the memory map fault.
//!
//! Table frames come from the hypervisor's pool (the heap), except the root,
//! which lies in a free page below 1 MiB: APs load CR3 in 32-bit mode. The
//! frame allocator never hands out either.

use alloc::format;
use alloc::string::String;
use bulkhead_abi::boot::BootInfo;
use bulkhead_arch_x86_64::cpu::mmu;
use bulkhead_arch_x86_64::identity::{self, IdentityLayout, ImageSegments, Protection};
use bulkhead_arch_x86_64::paging::HostPaging;
use bulkhead_arch_x86_64::{FrameAllocator, PAGE_SIZE_4KIB, SecondLevelTable, TableOptions};
use bulkhead_core::memmap::MemoryDescriptor;
use core::alloc::Layout;
use spin::{Mutex, Once};

/// The hypervisor's own table.
type HostTable = SecondLevelTable<HostPaging, PoolFrames>;

/// The live table, kept for later additions (new mappings go into
/// non-present slots, which needs no TLB maintenance).
static TABLE: Once<Mutex<HostTable>> = Once::new();

/// Proof that this CPU runs on the hypervisor's own tables: memory the
/// firmware's tables lived in (boot-services data) may be handed out only
/// once this exists.
pub struct Live(());

/// What the tables must know about the machine besides the memory map.
pub struct Inputs<'a> {
    /// The AP trampoline page, if there is one.
    pub trampoline: Option<u64>,
    /// A free page below 1 MiB for the root.
    pub root: u64,
    /// Local APIC register pages (the MADT's and IA32_APIC_BASE's).
    pub local_apics: &'a [u64],
    /// Ranges to leave unmapped (stack guards).
    pub holes: &'a [(u64, u64)],
}

/// Frames for the table: first the given low root page, then 4 KiB-aligned
/// pages from the heap (the hypervisor's pool).
struct PoolFrames {
    root: Option<u64>,
}

impl FrameAllocator for PoolFrames {
    fn allocate_zeroed_frame(&mut self) -> Option<u64> {
        if let Some(root) = self.root.take() {
            // SAFETY: the root page is free conventional memory below 1 MiB
            // that nothing else uses (see `memory::low_pages`), mapped by the
            // firmware's identity map and by ours.
            unsafe { core::ptr::write_bytes(root as *mut u8, 0, PAGE_SIZE_4KIB as usize) };
            return Some(root);
        }
        let layout = Layout::from_size_align(PAGE_SIZE_4KIB as usize, PAGE_SIZE_4KIB as usize).ok()?;
        // SAFETY: the layout has a non-zero size.
        let frame = unsafe { alloc::alloc::alloc_zeroed(layout) };
        (!frame.is_null()).then_some(frame as u64)
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

unsafe extern "C" {
    /// The image's ELF header, which the loader copied with the first
    /// segment (the linker fails the build if no segment holds it).
    static __ehdr_start: u8;
}

/// The image's segments, from its in-memory program headers, checked to
/// lie inside the image.
fn image_segments(image: (u64, u64)) -> Result<ImageSegments, String> {
    let header = core::ptr::addr_of!(__ehdr_start) as u64;
    let inside = |len: usize| header >= image.0 && header.checked_add(len as u64).is_some_and(|end| end <= image.1);
    let read = |len: usize| -> Result<&'static [u8], String> {
        if !inside(len) {
            return Err(format!("ELF headers at {header:#x} (+{len:#x}) are outside the image"));
        }
        // SAFETY: the range lies inside the loaded image, in its first,
        // read-only segment, which nothing writes.
        Ok(unsafe { core::slice::from_raw_parts(header as *const u8, len) })
    };
    let len = identity::headers_len(read(64)?).map_err(|e| format!("image ELF header: {e:?}"))?;
    identity::load_segments(read(len)?, header).map_err(|e| format!("image program headers: {e:?}"))
}

/// Builds the tables and makes them this CPU's; returns the witness that
/// they are live. Logs one line about them.
///
/// # Errors
/// Why the tables could not be built (the firmware's tables are then still
/// in use), as text for the boot log.
pub fn init(boot_info: &BootInfo, map: &[MemoryDescriptor], inputs: &Inputs<'_>) -> Result<Live, String> {
    let hv = boot_info.hv_image;
    let image = (hv.base, hv.base + hv.size);
    let segments = image_segments(image)?;

    let mut layout = IdentityLayout::new();
    for descriptor in map.iter().filter(|d| d.kind().is_ram()) {
        layout.set(descriptor.base, descriptor.end(), Protection::RAM);
    }
    let writable_code = layout.set_image(image.0, image.1, &segments.segments, segments.relro);
    if let Some(page) = inputs.trampoline {
        layout.set(page, page + PAGE_SIZE_4KIB, Protection::WRITABLE_CODE);
    }
    for &apic in inputs.local_apics {
        layout.set(apic, apic + PAGE_SIZE_4KIB, Protection::MMIO);
    }
    layout.unmap(0, PAGE_SIZE_4KIB);
    for &(base, end) in inputs.holes {
        layout.unmap(base, end);
    }

    let options = TableOptions { largest_page: mmu::largest_page(), host_address_bits: mmu::physical_address_bits() };
    let mut table = HostTable::with_options(PoolFrames { root: Some(inputs.root) }, options)
        .ok_or("no memory for the page-table root")?;
    for mapping in layout.mappings() {
        let p = mapping.protection;
        table
            .map(mapping.base, mapping.base, mapping.size(), p.memory, p.access)
            .map_err(|e| format!("page tables: {:#x}..{:#x}: {e:?}", mapping.base, mapping.end))?;
    }
    let root = table.root_address();
    let frames = table.table_frame_count();
    TABLE.call_once(|| Mutex::new(table));
    // SAFETY: the table maps, with the permissions they need, the image
    // (its code executable), all RAM including the pool (heap, this stack,
    // the AP stacks to come) and the boot information, the trampoline page
    // and the local APIC; it never changes except by filling empty slots.
    unsafe { mmu::activate(root) };

    let leaves = layout.leaf_counts(options.largest_page);
    let kib = |protection: Protection| layout.bytes_with(protection) >> 10;
    log::info!(
        "page tables: own identity map live, root {root:#x}: {} ranges, {} MiB RAM read-write NX write-back, \
         image {} KiB code / {} KiB read-only / {} KiB read-write NX, {} KiB MMIO uncached, page 0 and the stack guard unmapped; \
         {} + {} + {} leaves of 1 GiB + 2 MiB + 4 KiB in {frames} table frames",
        layout.mappings().len(),
        kib(Protection::RAM) >> 10,
        kib(Protection::CODE),
        kib(Protection::READ_ONLY),
        image_data_kib(&layout, image),
        kib(Protection::MMIO),
        leaves.size_1gib,
        leaves.size_2mib,
        leaves.size_4kib,
    );
    if writable_code > 0 {
        log::warn!("page tables: {writable_code} image page(s) are both writable and executable (segments share pages)");
    }
    for mapping in layout.mappings() {
        log::debug!("page tables: {:#014x}..{:#014x} {:?}", mapping.base, mapping.end, mapping.protection);
    }
    Ok(Live(()))
}

/// KiB of the image mapped read-write (its `.data` and `.bss`), which the
/// layout merges with RAM of the same protection around it.
fn image_data_kib(layout: &IdentityLayout, image: (u64, u64)) -> u64 {
    let data = layout.mappings().iter().filter(|m| m.protection == Protection::RAM);
    data.map(|m| m.end.min(image.1).saturating_sub(m.base.max(image.0))).sum::<u64>() >> 10
}

/// Maps `[base, base + size)` (page-aligned) uncached, read-write,
/// no-execute into the live table, for MMIO the hypervisor drives after
/// boot (IOMMU register pages, PCI configuration space, a device BAR).
/// Only empty slots are filled, so no TLB maintenance is needed; a range
/// that is already mapped (e.g. as RAM) is refused.
///
/// # Errors
/// Why the range could not be mapped, as text for the boot log.
pub fn map_mmio(base: u64, size: u64, _live: &Live) -> Result<(), String> {
    let table = TABLE.get().ok_or("page tables are not built")?;
    let p = Protection::MMIO;
    table
        .lock()
        .map(base, base, size, p.memory, p.access)
        .map_err(|e| format!("page tables: MMIO {base:#x}..{:#x}: {e:?}", base.saturating_add(size)))
}
