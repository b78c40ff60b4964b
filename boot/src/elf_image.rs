//! Loading the hypervisor's position-independent ELF image.
//!
//! The hypervisor is linked as a static PIE, so it runs wherever the
//! firmware's allocator puts it: the loader copies its `PT_LOAD` segments into
//! one hypervisor-owned allocation, zeroes `.bss`, and applies the
//! `R_*_RELATIVE` relocations (the only kind a static PIE has).
//! The image's memory is `EfiLoaderCode`, the only type that firmware with
//! an NX policy leaves executable; `BootInfo::hv_image` marks it as the
//! hypervisor's.

use crate::LoadError;
use crate::esp::alloc_pages;
use alloc::format;
use bulkhead_abi::boot::PhysRange;
use elf::ElfBytes;
use elf::abi::{ET_DYN, PT_LOAD};
use elf::endian::LittleEndian;
use uefi::Status;

/// `EfiLoaderCode`.
const LOADER_CODE: u32 = 1;

#[cfg(target_arch = "aarch64")]
const MACHINE: u16 = elf::abi::EM_AARCH64;
#[cfg(target_arch = "aarch64")]
const RELATIVE: u32 = elf::abi::R_AARCH64_RELATIVE;
#[cfg(target_arch = "x86_64")]
const MACHINE: u16 = elf::abi::EM_X86_64;
#[cfg(target_arch = "x86_64")]
const RELATIVE: u32 = elf::abi::R_X86_64_RELATIVE;

/// A loaded, relocated image.
pub struct LoadedImage {
    /// Where it is (page-granular).
    pub image: PhysRange,
    /// Its relocated entry point.
    pub entry: u64,
}

fn bad(path: &str, what: &str) -> LoadError {
    LoadError::new(Status::LOAD_ERROR, format!("{path}: {what}"))
}

/// Loads `bytes` (read from `path`) and relocates it.
pub fn load(bytes: &[u8], path: &str) -> Result<LoadedImage, LoadError> {
    let file = ElfBytes::<LittleEndian>::minimal_parse(bytes).map_err(|e| bad(path, &format!("not an ELF file ({e})")))?;
    if file.ehdr.e_machine != MACHINE {
        return Err(bad(path, &format!("ELF machine {} is not this CPU's ({MACHINE})", file.ehdr.e_machine)));
    }
    if file.ehdr.e_type != ET_DYN {
        return Err(bad(path, "not a position-independent executable (ELF type is not ET_DYN)"));
    }
    let segments = file.segments().ok_or_else(|| bad(path, "no program headers"))?;
    let mut span_start = u64::MAX;
    let mut span_end = 0u64;
    for ph in segments.iter().filter(|ph| ph.p_type == PT_LOAD) {
        let end = ph.p_vaddr.checked_add(ph.p_memsz).ok_or_else(|| bad(path, "segment wraps"))?;
        if ph.p_filesz > ph.p_memsz || ph.p_offset.checked_add(ph.p_filesz).is_none_or(|e| e > bytes.len() as u64) {
            return Err(bad(path, "segment lies outside the file"));
        }
        span_start = span_start.min(ph.p_vaddr);
        span_end = span_end.max(end);
    }
    if span_start >= span_end {
        return Err(bad(path, "no loadable segment"));
    }
    let span_start = span_start & !0xfff;
    // Loader *code*: firmware with a DXE NX policy maps every data type,
    // including our own OS-defined types, non-executable. The hypervisor
    // finds its image through `BootInfo::hv_image` and keeps it for itself.
    let image = alloc_pages(span_end - span_start, LOADER_CODE, path)?;
    let base = image.base;
    let to_host = |vaddr: u64| base + (vaddr - span_start);

    for ph in segments.iter().filter(|ph| ph.p_type == PT_LOAD) {
        let src = &bytes[ph.p_offset as usize..(ph.p_offset + ph.p_filesz) as usize];
        // SAFETY: the destination lies inside `image`, which was sized to the
        // span of all loadable segments; `.bss` is already zero.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), to_host(ph.p_vaddr) as *mut u8, src.len()) };
    }

    let image_end = base + image.size;
    let mut relocations = 0usize;
    if let Some(shdr) = file.section_header_by_name(".rela.dyn").map_err(|e| bad(path, &format!("{e}")))? {
        let relas = file.section_data_as_relas(&shdr).map_err(|e| bad(path, &format!("{e}")))?;
        for rela in relas {
            if rela.r_type != RELATIVE {
                return Err(bad(path, &format!("unsupported relocation type {}", rela.r_type)));
            }
            let at = to_host(rela.r_offset);
            if rela.r_offset < span_start || at.checked_add(8).is_none_or(|e| e > image_end) {
                return Err(bad(path, "relocation outside the image"));
            }
            let value = to_host(rela.r_addend as u64);
            // SAFETY: `at` was checked to lie inside the loaded image.
            unsafe { core::ptr::write_unaligned(at as *mut u64, value) };
            relocations += 1;
        }
    }
    log::debug!("{path}: {relocations} relocations applied");
    let entry = file.ehdr.e_entry;
    if entry < span_start || entry >= span_end {
        return Err(bad(path, "entry point outside the image"));
    }
    Ok(LoadedImage { image, entry: to_host(entry) })
}

