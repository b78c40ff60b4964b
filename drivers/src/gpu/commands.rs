//! Encoders for the ring commands the hypervisor itself emits (gen8
//! layouts, PRM Vol. 2a; header numbers from `bulkhead_abi::gpu::cmd`).
//! Pure functions, so they run in host tests.

use bulkhead_abi::gpu::cmd;

/// BR13 bits 23:16: the raster operation (`cmd::BLT_ROP_MASK`).
const ROP_SHIFT: u32 = 16;
/// ROP PATCOPY (destination = colour), the one XY_COLOR_BLT takes.
pub const ROP_PATCOPY: u32 = 0xf0;
/// ROP SRCCOPY (destination = source), the one XY_SRC_COPY_BLT takes.
pub const ROP_SRCCOPY: u32 = 0xcc;
/// Colour depth code for 32 bpp (`cmd::BLT_BYTES_PER_PIXEL[3]`).
pub const DEPTH_32: u32 = 3;
/// Bytes per pixel at [`DEPTH_32`].
pub const BYTES_PER_PIXEL_32: u32 = cmd::BLT_BYTES_PER_PIXEL[DEPTH_32 as usize];
/// "DWord Length" is the command's total dwords minus this.
const LENGTH_BIAS: usize = 2;

/// A 32 bpp linear surface in graphics memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Surface {
    /// Graphics address of pixel (0, 0).
    pub address: u64,
    /// Bytes per row (at most 0x7fff: the field is signed 16-bit).
    pub pitch: u16,
}

/// A rectangle, `x2`/`y2` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    /// Left.
    pub x1: u16,
    /// Top.
    pub y1: u16,
    /// Right (exclusive).
    pub x2: u16,
    /// Bottom (exclusive).
    pub y2: u16,
}

const fn point(x: u16, y: u16) -> u32 {
    ((y as u32) << 16) | x as u32
}

const fn low(address: u64) -> u32 {
    address as u32
}

const fn high(address: u64) -> u32 {
    (address >> 32) as u32 & cmd::ADDRESS_HIGH_MASK
}

const fn length(dwords: usize) -> u32 {
    (dwords - LENGTH_BIAS) as u32
}

const fn br13(rop: u32, pitch: u16) -> u32 {
    (DEPTH_32 << cmd::BLT_DEPTH_SHIFT) | (rop << ROP_SHIFT) | (pitch as u32 & cmd::BLT_PITCH_MASK)
}

/// MI_NOOP.
pub const fn mi_noop() -> u32 {
    cmd::mi(cmd::MI_NOOP, 0)
}

/// MI_USER_INTERRUPT: bumps SEQNO and raises INT_STATUS.USER.
pub const fn mi_user_interrupt() -> u32 {
    cmd::mi(cmd::MI_USER_INTERRUPT, 0)
}

/// MI_STORE_DATA_IMM of one dword at `address` (global GTT).
pub const fn mi_store_data_imm(address: u64, value: u32) -> [u32; cmd::MI_STORE_DATA_IMM_DWORDS] {
    [
        cmd::mi(cmd::MI_STORE_DATA_IMM, cmd::SDI_USE_GLOBAL_GTT | length(cmd::MI_STORE_DATA_IMM_DWORDS)),
        low(address),
        high(address),
        value,
    ]
}

/// XY_COLOR_BLT: fills `rect` of `dst` (32 bpp) with `color`.
pub const fn xy_color_blt(dst: Surface, rect: Rect, color: u32) -> [u32; cmd::XY_COLOR_BLT_DWORDS] {
    [
        cmd::blt(cmd::XY_COLOR_BLT, cmd::BLT_WRITE_ALPHA | cmd::BLT_WRITE_RGB | length(cmd::XY_COLOR_BLT_DWORDS)),
        br13(ROP_PATCOPY, dst.pitch),
        point(rect.x1, rect.y1),
        point(rect.x2, rect.y2),
        low(dst.address),
        high(dst.address),
        color,
    ]
}

/// XY_SRC_COPY_BLT: copies `rect` of `dst` from `src` at (`src_x`, `src_y`) (32 bpp).
pub const fn xy_src_copy_blt(dst: Surface, rect: Rect, src: Surface, src_x: u16, src_y: u16) -> [u32; cmd::XY_SRC_COPY_BLT_DWORDS] {
    [
        cmd::blt(cmd::XY_SRC_COPY_BLT, cmd::BLT_WRITE_ALPHA | cmd::BLT_WRITE_RGB | length(cmd::XY_SRC_COPY_BLT_DWORDS)),
        br13(ROP_SRCCOPY, dst.pitch),
        point(rect.x1, rect.y1),
        point(rect.x2, rect.y2),
        low(dst.address),
        high(dst.address),
        point(src_x, src_y),
        src.pitch as u32 & cmd::BLT_PITCH_MASK,
        low(src.address),
        high(src.address),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_gen8_layouts() {
        // Values as i915 / the model's decoder tests write them.
        assert_eq!(mi_user_interrupt(), 0x0100_0000);
        assert_eq!(mi_store_data_imm(0x1_0000_1000, 7), [0x1040_0002, 0x1000, 0x1, 7]);
        let dst = Surface { address: 0x3000, pitch: 256 };
        let fill = xy_color_blt(dst, Rect { x1: 1, y1: 2, x2: 3, y2: 4 }, 0xff);
        assert_eq!(fill, [0x5430_0005, 0x03f0_0100, 0x0002_0001, 0x0004_0003, 0x3000, 0, 0xff]);
        let src = Surface { address: 0x4000, pitch: 32 };
        let copy = xy_src_copy_blt(dst, Rect { x1: 0, y1: 0, x2: 1, y2: 1 }, src, 6, 5);
        assert_eq!(copy, [0x54f0_0008, 0x03cc_0100, 0, 0x0001_0001, 0x3000, 0, 0x0005_0006, 32, 0x4000, 0]);
    }
}
