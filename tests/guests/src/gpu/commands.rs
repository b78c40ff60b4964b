//! Command builders, and the test programs' pixel rules (defined in
//! [`bulkhead_abi::testdata::final_image`], which the harness shares): pure functions,
//! tested on the host (`cargo test -p bulkhead-test-guests --lib`).
//!
//! Dword layouts are the gen8 ones the GPU model decodes
//! (`tools/gpu-model/src/command.rs`): every surface 32 bpp linear,
//! rectangles x2/y2 exclusive, addresses 48-bit graphics addresses split
//! low dword / high dword (bits 47:32).

use bulkhead_abi::gpu::cmd;
use bulkhead_abi::testdata::final_image;

/// Colour depth code for 32 bpp (BR13 bits 25:24).
pub const DEPTH_32: u32 = 3;
/// Raster operation of XY_COLOR_BLT: PATCOPY (the only one the model takes).
pub const ROP_PATCOPY: u32 = 0xf0;
/// Raster operation of XY_SRC_COPY_BLT: SRCCOPY.
pub const ROP_SRCCOPY: u32 = 0xcc;
/// Bytes per 32 bpp pixel.
pub const BYTES_PER_PIXEL: u32 = 4;

/// A 32 bpp linear surface at a graphics address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Surface {
    /// Graphics address of pixel (0, 0).
    pub address: u64,
    /// Bytes per row.
    pub pitch: u32,
}

pub use bulkhead_abi::testdata::final_image::Rect;

const fn low(address: u64) -> u32 {
    address as u32
}

const fn high(address: u64) -> u32 {
    (address >> 32) as u32 & cmd::ADDRESS_HIGH_MASK
}

const fn br13(rop: u32, pitch: u32) -> u32 {
    DEPTH_32 << cmd::BLT_DEPTH_SHIFT | rop << 16 | (pitch & cmd::BLT_PITCH_MASK)
}

/// XY_COLOR_BLT: fills `rect` of `dst` with `color`.
pub const fn color_blt(dst: Surface, rect: Rect, color: u32) -> [u32; cmd::XY_COLOR_BLT_DWORDS] {
    let length = cmd::XY_COLOR_BLT_DWORDS as u32 - 2;
    [
        cmd::blt(cmd::XY_COLOR_BLT, cmd::BLT_WRITE_ALPHA | cmd::BLT_WRITE_RGB | length),
        br13(ROP_PATCOPY, dst.pitch),
        (rect.y1 as u32) << 16 | rect.x1 as u32,
        (rect.y2 as u32) << 16 | rect.x2 as u32,
        low(dst.address),
        high(dst.address),
        color,
    ]
}

/// XY_SRC_COPY_BLT: copies the `rect`-sized rectangle at `(src_x, src_y)`
/// of `src` onto `rect` of `dst`.
pub const fn src_copy_blt(dst: Surface, rect: Rect, src: Surface, src_x: u16, src_y: u16) -> [u32; cmd::XY_SRC_COPY_BLT_DWORDS] {
    let length = cmd::XY_SRC_COPY_BLT_DWORDS as u32 - 2;
    [
        cmd::blt(cmd::XY_SRC_COPY_BLT, cmd::BLT_WRITE_ALPHA | cmd::BLT_WRITE_RGB | length),
        br13(ROP_SRCCOPY, dst.pitch),
        (rect.y1 as u32) << 16 | rect.x1 as u32,
        (rect.y2 as u32) << 16 | rect.x2 as u32,
        low(dst.address),
        high(dst.address),
        (src_y as u32) << 16 | src_x as u32,
        src.pitch & cmd::BLT_PITCH_MASK,
        low(src.address),
        high(src.address),
    ]
}

/// MI_STORE_DATA_IMM of one dword through the global GTT.
pub const fn store_data_imm(address: u64, value: u32) -> [u32; cmd::MI_STORE_DATA_IMM_DWORDS] {
    let length = cmd::MI_STORE_DATA_IMM_DWORDS as u32 - 2;
    [cmd::mi(cmd::MI_STORE_DATA_IMM, cmd::SDI_USE_GLOBAL_GTT | length), low(address), high(address), value]
}

/// MI_USER_INTERRUPT.
pub const fn user_interrupt() -> u32 {
    cmd::mi(cmd::MI_USER_INTERRUPT, 0)
}

/// MI_LOAD_REGISTER_IMM of one register (privileged: the mediator refuses it).
pub const fn load_register_imm(register: u32, value: u32) -> [u32; 3] {
    [cmd::mi(cmd::MI_LOAD_REGISTER_IMM, 1), register, value]
}

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

const _: () = assert!(BYTES_PER_PIXEL == final_image::BYTES_PER_PIXEL);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blits_have_the_model_layout() {
        let dst = Surface { address: 0x1_2345_6000, pitch: 512 };
        let fill = color_blt(dst, Rect { x1: 1, y1: 2, x2: 3, y2: 4 }, 0xff00_00ff);
        assert_eq!(fill, [0x5430_0005, 0x03f0_0200, 0x0002_0001, 0x0004_0003, 0x2345_6000, 0x1, 0xff00_00ff]);
        let src = Surface { address: 0x8000, pitch: 1024 };
        let copy = src_copy_blt(dst, Rect::sized(16, 8), src, 5, 6);
        assert_eq!(copy, [0x54f0_0008, 0x03cc_0200, 0, 0x0008_0010, 0x2345_6000, 0x1, 0x0006_0005, 1024, 0x8000, 0]);
        assert_eq!(cmd::blt_opcode(fill[0]), cmd::XY_COLOR_BLT);
        assert_eq!(cmd::blt_opcode(copy[0]), cmd::XY_SRC_COPY_BLT);
    }

    #[test]
    fn mi_commands_have_the_model_layout() {
        assert_eq!(store_data_imm(0x2_0000_1000, 7), [0x1040_0002, 0x1000, 2, 7]);
        assert_eq!(user_interrupt(), 0x0100_0000);
        assert_eq!(cmd::mi_opcode(load_register_imm(0x2030, 0)[0]), cmd::MI_LOAD_REGISTER_IMM);
        assert_eq!(load_register_imm(0x2030, 9), [0x1100_0001, 0x2030, 9]);
    }

    #[test]
    fn command_lists_append() {
        let mut list = Commands::<16>::new();
        list.push(&store_data_imm(0x1000, 1)).push(&[user_interrupt()]);
        assert_eq!(list.as_slice().len(), 5);
        assert_eq!(list.as_slice()[4], user_interrupt());
    }
}
