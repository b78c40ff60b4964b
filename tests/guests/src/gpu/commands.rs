//! Command lists (the encoders are `bulkhead_abi::gpu::encode`, shared
//! with the hypervisor), and the test programs' pixel rules (defined in
//! [`bulkhead_abi::testdata::final_image`], which the harness shares): pure functions,
//! tested on the host (`cargo test -p bulkhead-test-guests --lib`).
//!
//! Dword layouts are the gen8 ones the GPU model decodes
//! (`tools/gpu-model/src/command.rs`): every surface 32 bpp linear,
//! rectangles x2/y2 exclusive, addresses 48-bit graphics addresses split
//! low dword / high dword (bits 47:32).

use bulkhead_abi::testdata::final_image;

pub use bulkhead_abi::gpu::encode::{
    BYTES_PER_PIXEL_32, Rect, Surface, mi_load_register_imm, mi_store_data_imm, mi_user_interrupt, xy_color_blt, xy_src_copy_blt,
};

/// A small command list built in place (no allocator in the guests).
pub struct Commands<const N: usize> {
    dwords: [u32; N],
    length: usize,
}

impl<const N: usize> Default for Commands<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Commands<N> {
    /// An empty list.
    pub const fn new() -> Self {
        Commands { dwords: [0; N], length: 0 }
    }

    /// Appends `command`.
    ///
    /// # Panics
    /// When the list is full: the programs size their lists statically.
    pub fn push(&mut self, command: &[u32]) -> &mut Self {
        self.dwords[self.length..self.length + command.len()].copy_from_slice(command);
        self.length += command.len();
        self
    }

    /// The dwords so far.
    pub fn as_slice(&self) -> &[u32] {
        &self.dwords[..self.length]
    }
}

pub use bulkhead_abi::testdata::final_image::round_color;

/// Width and height of the final image `gpu-client` leaves behind.
pub const FINAL_SIZE: u16 = final_image::SIZE;
/// Bytes per row of the final image.
pub const FINAL_PITCH: u32 = final_image::PITCH;
/// The final image's background colour.
pub const FINAL_BACKGROUND: u32 = final_image::BACKGROUND;
/// The final image's square (its colour is [`final_square_color`]).
pub const FINAL_SQUARE: Rect = final_image::SQUARE;

/// The square's colour ([`final_image::square_color`]).
pub const fn final_square_color(tag: u64) -> u32 {
    final_image::square_color(tag)
}

/// Pixel `(x, y)` of the final image ([`final_image::pixel`]).
pub const fn final_pixel(x: u32, y: u32, tag: u64) -> u32 {
    final_image::pixel(x, y, tag)
}

const _: () = assert!(BYTES_PER_PIXEL_32 == final_image::BYTES_PER_PIXEL);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lists_append() {
        let mut list = Commands::<16>::new();
        list.push(&mi_store_data_imm(0x1000, 1)).push(&[mi_user_interrupt()]);
        assert_eq!(list.as_slice().len(), 5);
        assert_eq!(list.as_slice()[4], mi_user_interrupt());
    }
}
