//! Byte-addressed memory the model reads and writes: the register BAR, local memory and guest
//! RAM. Production backends are shared mappings ([`crate::shm`]); tests use [`VecMemory`].
//!
//! Every access is bounds-checked and reports failure instead of panicking, because offsets
//! come from guest-controlled data (GTT entries, command fields, ring registers).

/// A window of memory at offsets `0..size()`.
pub trait Memory {
    /// Size of the window in bytes.
    fn size(&self) -> u64;
    /// Copy `buf.len()` bytes from `offset`. Returns `false` (and leaves `buf` unspecified) if
    /// the range is not inside the window.
    fn read(&self, offset: u64, buf: &mut [u8]) -> bool;
    /// Copy `data` to `offset`. Returns `false` (writing nothing) if the range is not inside the
    /// window.
    fn write(&mut self, offset: u64, data: &[u8]) -> bool;
    /// Set `bits` in the little-endian u32 at `offset`, atomically with respect to another agent
    /// sharing the memory (the guest clears bits with an atomic AND). `false` if out of range.
    fn fetch_or_u32(&mut self, offset: u64, bits: u32) -> bool;

    /// Read a little-endian u32; `None` if out of range.
    fn read_u32(&self, offset: u64) -> Option<u32> {
        let mut b = [0; 4];
        self.read(offset, &mut b).then(|| u32::from_le_bytes(b))
    }
    /// Write a little-endian u32; `false` if out of range.
    fn write_u32(&mut self, offset: u64, value: u32) -> bool {
        self.write(offset, &value.to_le_bytes())
    }
    /// Read a little-endian u64; `None` if out of range.
    fn read_u64(&self, offset: u64) -> Option<u64> {
        let mut b = [0; 8];
        self.read(offset, &mut b).then(|| u64::from_le_bytes(b))
    }
    /// Write a little-endian u64; `false` if out of range.
    fn write_u64(&mut self, offset: u64, value: u64) -> bool {
        self.write(offset, &value.to_le_bytes())
    }
}

/// `offset..offset+len` as a `usize` range if it lies inside `0..size`.
pub fn checked_range(offset: u64, len: usize, size: u64) -> Option<core::ops::Range<usize>> {
    let end = offset.checked_add(u64::try_from(len).ok()?)?;
    if end > size {
        return None;
    }
    Some(usize::try_from(offset).ok()?..usize::try_from(end).ok()?)
}

/// Memory in a plain vector: the fake backend of host tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecMemory(pub Vec<u8>);

impl VecMemory {
    /// `size` zero bytes.
    pub fn zeroed(size: usize) -> Self {
        Self(vec![0; size])
    }
}

impl Memory for VecMemory {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> bool {
        match checked_range(offset, buf.len(), self.size()) {
            Some(r) => {
                buf.copy_from_slice(&self.0[r]);
                true
            }
            None => false,
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> bool {
        match checked_range(offset, data.len(), self.size()) {
            Some(r) => {
                self.0[r].copy_from_slice(data);
                true
            }
            None => false,
        }
    }

    fn fetch_or_u32(&mut self, offset: u64, bits: u32) -> bool {
        // Not shared with anyone in tests, so a plain read-modify-write is atomic enough.
        match self.read_u32(offset) {
            Some(v) => self.write_u32(offset, v | bits),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_are_bounds_checked() {
        let mut m = VecMemory::zeroed(16);
        assert!(m.write_u32(12, 0xdead_beef));
        assert_eq!(m.read_u32(12), Some(0xdead_beef));
        assert!(!m.write_u32(13, 1));
        assert_eq!(m.read_u32(13), None);
        assert_eq!(m.read_u64(u64::MAX - 2), None);
        assert!(!m.write(u64::MAX, &[1]));
        assert!(m.fetch_or_u32(0, 0x10));
        assert!(m.fetch_or_u32(0, 0x01));
        assert_eq!(m.read_u32(0), Some(0x11));
    }
}
