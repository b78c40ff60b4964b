//! Reading files from the ESP and allocating memory the hypervisor keeps.

use crate::LoadError;
use alloc::format;
use alloc::vec::Vec;
use bulkhead_abi::boot::{MEMORY_TYPE_HYPERVISOR, PhysRange};
use uefi::boot::{self, AllocateType, MemoryType};
use uefi::fs::{Error as FsError, FileSystem, IoErrorContext};
use uefi::{CString16, Status};

const PAGE_SIZE: u64 = 4096;

/// The file system the loader itself was loaded from.
pub struct Esp {
    fs: FileSystem,
}

impl Esp {
    /// Opens the loader's own volume.
    pub fn open() -> Result<Esp, LoadError> {
        let proto = boot::get_image_file_system(boot::image_handle()).map_err(|e| {
            LoadError::new(e.status(), format!("cannot open the loader's own volume: {:?}", e.status()))
        })?;
        Ok(Esp { fs: FileSystem::new(proto) })
    }

    /// Reads a whole file.
    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, LoadError> {
        self.read_optional(path)?.ok_or_else(|| {
            LoadError::new(Status::NOT_FOUND, format!("cannot read {path}: NOT_FOUND (no such file on the ESP)"))
        })
    }

    /// Reads a whole file, or `None` when it does not exist.
    pub fn read_optional(&mut self, path: &str) -> Result<Option<Vec<u8>>, LoadError> {
        let uefi_path = CString16::try_from(path)
            .map_err(|_| LoadError::new(Status::INVALID_PARAMETER, format!("bad path {path}")))?;
        match self.fs.read(uefi_path.as_ref()) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(FsError::Io(io)) if io.uefi_error.status() == Status::NOT_FOUND => Ok(None),
            Err(FsError::Io(io)) if io.context == IoErrorContext::OpenError && io.uefi_error.status() == Status::NOT_FOUND => Ok(None),
            Err(e) => Err(LoadError::new(Status::LOAD_ERROR, format!("cannot read {path}: {e}"))),
        }
    }
}

/// Allocates zeroed pages of `memory_type` for `size` bytes.
pub fn alloc_pages(size: u64, memory_type: u32, what: &str) -> Result<PhysRange, LoadError> {
    let pages = size.div_ceil(PAGE_SIZE).max(1);
    let pages_usize = usize::try_from(pages)
        .map_err(|_| LoadError::new(Status::OUT_OF_RESOURCES, format!("{what}: {size} bytes is too large")))?;
    let ptr = boot::allocate_pages(AllocateType::AnyPages, MemoryType(memory_type), pages_usize)
        .map_err(|e| LoadError::new(e.status(), format!("cannot allocate {pages} pages for {what}: {:?}", e.status())))?;
    let range = PhysRange { base: ptr.as_ptr() as u64, size: pages * PAGE_SIZE };
    // SAFETY: the firmware just gave us these pages; nothing else refers to them.
    unsafe { core::ptr::write_bytes(ptr.as_ptr(), 0, (pages * PAGE_SIZE) as usize) };
    Ok(range)
}

/// Copies `bytes` into fresh pages of `memory_type`; the range has the exact length.
pub fn copy_to(bytes: &[u8], memory_type: u32, what: &str) -> Result<PhysRange, LoadError> {
    let range = alloc_pages(bytes.len() as u64, memory_type, what)?;
    // SAFETY: `range` is freshly allocated and at least `bytes.len()` long.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), range.base as *mut u8, bytes.len()) };
    Ok(PhysRange { base: range.base, size: bytes.len() as u64 })
}

/// Allocates one zeroed `T` in hypervisor-owned memory, for the rest of the boot.
pub fn alloc_hv<T>() -> Result<&'static mut T, LoadError> {
    let range = alloc_pages(core::mem::size_of::<T>() as u64, MEMORY_TYPE_HYPERVISOR, "boot information")?;
    // SAFETY: the pages are fresh, zeroed, page-aligned (enough for any `T`
    // used here) and never freed; `T` is only used with plain-data types for
    // which all-zero is a valid value, and the caller overwrites it at once.
    Ok(unsafe { &mut *(range.base as *mut T) })
}
