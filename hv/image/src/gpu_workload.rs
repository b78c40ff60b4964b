//! The GPU blit benchmark's workload, defined once so that the direct
//! benchmark (`bench=gpu`, [`crate::gpu_selftest::bench`]) and a later
//! mediated one (a partition's driver through the virtual GPU) run exactly
//! the same commands: [`BLITS`] XY_SRC_COPY_BLTs of a [`WIDTH`] x
//! [`HEIGHT`] 32 bpp linear surface, alternating direction between two
//! surfaces, then one MI_USER_INTERRUPT.

use alloc::vec::Vec;
use bulkhead_abi::gpu::encode::{self as commands, BYTES_PER_PIXEL_32, Rect, Surface};

/// Surface width in pixels.
pub const WIDTH: u16 = 256;
/// Surface height in rows.
pub const HEIGHT: u16 = 256;
/// Bytes per row.
pub const PITCH: u32 = WIDTH as u32 * BYTES_PER_PIXEL_32;
/// Bytes of one surface.
pub const SURFACE_BYTES: u64 = PITCH as u64 * HEIGHT as u64;
/// Blits per run.
pub const BLITS: u32 = 64;
/// MI_NOOP padding keeps the tail qword aligned.
const TAIL_ALIGN_DWORDS: usize = 2;

/// The ring commands for surfaces at graphics addresses `a` and `b`:
/// blit `i` copies a to b for even `i`, b to a for odd `i`; then
/// MI_USER_INTERRUPT, padded to a qword.
pub fn commands(a: u64, b: u64) -> Vec<u32> {
    let rect = Rect { x1: 0, y1: 0, x2: WIDTH, y2: HEIGHT };
    let mut ring = Vec::new();
    for i in 0..BLITS {
        let (src, dst) = if i % 2 == 0 { (a, b) } else { (b, a) };
        let surface = |address| Surface { address, pitch: PITCH };
        ring.extend_from_slice(&commands::xy_src_copy_blt(surface(dst), rect, surface(src), 0, 0));
    }
    ring.push(commands::mi_user_interrupt());
    while !ring.len().is_multiple_of(TAIL_ALIGN_DWORDS) {
        ring.push(commands::mi_noop());
    }
    ring
}
