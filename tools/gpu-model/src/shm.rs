//! Shared file mappings: the ivshmem BAR file and the guest's RAM file. Together with the
//! SCM_RIGHTS receive in [`crate::ivshmem`], the crate's only `unsafe`: mapping, unmapping and
//! accessing memory another process (QEMU, hence the guest) writes concurrently.
//!
//! Accesses are volatile and byte-wise (no Rust references into the mapping), because the guest
//! may change any byte at any time; the one read-modify-write (INT_STATUS) is an atomic OR.

use std::fs::{File, OpenOptions};
use std::num::NonZeroUsize;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use crate::memory::{checked_range, Memory};

/// A shared, read-write mapping of a whole file.
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
    file: File,
}

// SAFETY: the mapping is plain shared memory; every access goes through volatile or atomic
// operations on raw pointers, so using it from another thread is no different from the other
// process using it.
unsafe impl Send for Mapping {}
// SAFETY: as for Send: no references into the memory are ever handed out.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Open (creating if needed) `path`, set its size to `len` (growing or shrinking it) and map
    /// it shared.
    pub fn create(path: &Path, len: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        file.set_len(len)?;
        Self::map(file, len)
    }

    /// Map an existing file shared, at its current size.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        Self::map(file, len)
    }

    fn map(file: File, len: u64) -> std::io::Result<Self> {
        let too_big = || std::io::Error::other("mapping size does not fit in usize");
        let len = usize::try_from(len).map_err(|_| too_big())?;
        let length = NonZeroUsize::new(len).ok_or_else(|| std::io::Error::other("empty file"))?;
        // SAFETY: a fresh mapping chosen by the kernel (no address hint), so it aliases no Rust
        // object; it is unmapped only in Drop, after which no view can exist (views hold an Arc).
        let base = unsafe {
            mmap(None, length, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, &file, 0)
        }?;
        Ok(Self { base: base.cast(), len, file })
    }

    /// The mapped file (its descriptor is what the ivshmem server hands to QEMU).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Whether the mapping is empty (never: `map` refuses empty files).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned; no views remain (they own Arcs).
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}

/// A window `offset..offset+len` of a [`Mapping`], usable as [`Memory`].
#[derive(Clone)]
pub struct View {
    mapping: Arc<Mapping>,
    offset: usize,
    len: u64,
}

impl View {
    /// The window `offset..offset+len`, or `None` if it is not inside the mapping.
    pub fn new(mapping: Arc<Mapping>, offset: u64, len: u64) -> Option<Self> {
        let range = checked_range(offset, usize::try_from(len).ok()?, mapping.len())?;
        Some(Self { mapping, offset: range.start, len })
    }

    /// The whole mapping.
    pub fn whole(mapping: Arc<Mapping>) -> Self {
        let len = mapping.len();
        Self { mapping, offset: 0, len }
    }

    fn ptr(&self, at: usize) -> *mut u8 {
        // SAFETY: callers pass `at` from `checked_range` against `self.len`, and the view lies
        // inside the mapping, so the offset pointer stays in bounds of the mapped allocation.
        unsafe { self.mapping.base.as_ptr().add(self.offset + at) }
    }
}

impl Memory for View {
    fn size(&self) -> u64 {
        self.len
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> bool {
        let Some(range) = checked_range(offset, buf.len(), self.len) else { return false };
        for (i, byte) in buf.iter_mut().enumerate() {
            // SAFETY: in bounds (checked above); volatile because the guest writes concurrently.
            *byte = unsafe { self.ptr(range.start + i).read_volatile() };
        }
        true
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> bool {
        let Some(range) = checked_range(offset, data.len(), self.len) else { return false };
        for (i, byte) in data.iter().enumerate() {
            // SAFETY: in bounds (checked above); the mapping is writable and shared.
            unsafe { self.ptr(range.start + i).write_volatile(*byte) };
        }
        true
    }

    fn fetch_or_u32(&mut self, offset: u64, bits: u32) -> bool {
        let Some(range) = checked_range(offset, 4, self.len) else { return false };
        let ptr = self.ptr(range.start);
        if !ptr.cast::<u32>().is_aligned() {
            return false;
        }
        // SAFETY: in bounds, 4-byte aligned, and the memory is only ever accessed through
        // volatile or atomic operations by this process.
        let atomic = unsafe { AtomicU32::from_ptr(ptr.cast()) };
        // Little-endian hosts only (x86_64 / aarch64), where the register's byte order matches.
        atomic.fetch_or(bits, Ordering::SeqCst);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_of_a_shared_file_see_each_other() {
        let dir = std::env::temp_dir().join(format!("gpu-model-shm-{}", std::process::id()));
        let m = Arc::new(Mapping::create(&dir, 8192).unwrap());
        let mut a = View::new(m.clone(), 4096, 4096).unwrap();
        let b = View::whole(m.clone());
        assert!(a.write_u32(8, 0x1234_5678));
        assert_eq!(b.read_u32(4096 + 8), Some(0x1234_5678));
        assert!(a.fetch_or_u32(8, 0x8000_0000));
        assert_eq!(b.read_u32(4096 + 8), Some(0x9234_5678));
        assert!(!a.write_u32(4094, 0));
        assert!(View::new(m, 4096, 4097).is_none());
        std::fs::remove_file(&dir).unwrap();
    }
}
