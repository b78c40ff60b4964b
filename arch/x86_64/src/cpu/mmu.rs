//! Switching this CPU to the hypervisor's own page tables, and the CPU
//! capabilities their layout depends on.

use super::svm::cpuid;
use crate::PageSize;
use x86_64::PhysAddr;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr3, Cr3Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::paging::PhysFrame;

/// The largest leaf the CPU supports: 1 GiB if CPUID Fn8000_0001 EDX bit 26
/// (Page1GB) is set, else 2 MiB (always there in long mode).
pub fn largest_page() -> PageSize {
    if cpuid(0x8000_0000, 0)[0] >= 0x8000_0001 && cpuid(0x8000_0001, 0)[3] & (1 << 26) != 0 {
        PageSize::Size1GiB
    } else {
        PageSize::Size2MiB
    }
}

/// MAXPHYADDR: CPUID Fn8000_0008 EAX bits 7:0, or 36 where the leaf is
/// missing (Intel SDM vol. 3A §4.1.4), clamped to what the table builder
/// accepts (32..=52).
pub fn physical_address_bits() -> u32 {
    let bits = if cpuid(0x8000_0000, 0)[0] >= 0x8000_0008 { cpuid(0x8000_0008, 0)[0] & 0xff } else { 36 };
    bits.clamp(32, crate::MAX_HOST_ADDRESS_BITS)
}

/// Makes the table rooted at `pml4` this CPU's translation: EFER.NXE first
/// (the table's NX bits are reserved without it), CR0.WP (so that read-only
/// leaves bind the hypervisor itself), then CR3, then a CR4.PGE toggle so
/// that no global entry of the firmware's tables survives.
///
/// # Safety
/// `pml4` must be the 4 KiB-aligned root of a complete four-level table
/// that maps, with the permissions they need, the code running now, its
/// stack, and everything the CPU touches from here on (GDT, IDT, TSS,
/// stacks, data); and it must stay unchanged while any CPU uses it.
pub unsafe fn activate(pml4: u64) {
    let Ok(frame) = PhysFrame::from_start_address(PhysAddr::new(pml4)) else {
        panic!("page-table root {pml4:#x} is not 4 KiB aligned");
    };
    // SAFETY: NXE and WP only add checks; before CR3 changes they apply to
    // the firmware's tables, which set no NX bit on anything we run on and
    // map our own pages writable. The caller vouches for the new table.
    unsafe {
        Efer::update(|flags| flags.insert(EferFlags::NO_EXECUTE_ENABLE));
        Cr0::update(|flags| flags.insert(Cr0Flags::WRITE_PROTECT));
        Cr3::write(frame, Cr3Flags::empty());
    }
    let cr4 = Cr4::read();
    if cr4.contains(Cr4Flags::PAGE_GLOBAL) {
        // SAFETY: clearing and restoring PGE only flushes the TLB.
        unsafe {
            Cr4::write(cr4 - Cr4Flags::PAGE_GLOBAL);
            Cr4::write(cr4);
        }
    }
}

/// This CPU's CR3 value: the root of the table it runs on.
pub fn current_root() -> u64 {
    Cr3::read().0.start_address().as_u64()
}

/// Writes the cache lines covering `[address, address + len)` back to
/// memory and invalidates them (CLFLUSH, then MFENCE so the flushes are
/// complete before any later store, such as the MMIO write that tells a
/// non-coherent IOMMU to read the data). The stride is the CLFLUSH line
/// size from CPUID leaf 1 EBX bits 15:8 (in 8-byte units).
pub fn flush_cache_range(address: *const u8, len: usize) {
    let line = ((cpuid(1, 0)[1] >> 8) & 0xff) as usize * 8;
    // A CPU that reports no size still flushes at least 8-byte lines.
    let line = line.max(8);
    let start = address as usize & !(line - 1);
    let end = (address as usize).saturating_add(len);
    for at in (start..end).step_by(line) {
        // SAFETY: CLFLUSH changes no data, only where it lives; the caller
        // passes memory it may access, which is mapped (else #PF, as for
        // any access).
        unsafe { core::arch::asm!("clflush [{}]", in(reg) at, options(nostack, preserves_flags)) };
    }
    // SAFETY: a fence has no memory-safety effect.
    unsafe { core::arch::asm!("mfence", options(nostack, preserves_flags)) };
}
