//! Memory contents the test guests leave behind, defined once so that the
//! guests that write them and the integration harness that reads them back
//! from guest RAM after a run (DESIGN.md §7: "its data must be intact")
//! cannot drift apart.
//!
//! - [`pattern`]: the words an isolation victim writes before an attack and
//!   checks after it;
//! - [`final_image`]: the picture `gpu-client` composes with its virtual GPU
//!   and leaves in its RAM (and `gpu-ppgtt`, through its per-process page
//!   tables, with its own square colour).

/// The isolation victims' memory pattern (`isolation-victim`,
/// `x86-isolation-victim`): [`WORDS`] words `word(0)`, `word(1)`, ... as
/// little-endian `u64`s from [`RAM_OFFSET`] into the victim's RAM region.
pub mod pattern {
    /// Offset of the pattern from the start of the victim's RAM (guest
    /// 0x4000_0000 on arm64, 0 on x86_64).
    pub const RAM_OFFSET: u64 = 0x80_0000;
    /// Words in the pattern (1 MiB).
    pub const WORDS: u64 = (1 << 20) / 8;
    /// Bytes in the pattern.
    pub const BYTES: u64 = WORDS * 8;

    /// The pattern's word `i`.
    pub const fn word(i: u64) -> u64 {
        0xb01d_face_0000_0000 ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// The final image `gpu-client` leaves at [`final_image::RAM_OFFSET`] in its
/// RAM: [`SIZE`](final_image::SIZE) × [`SIZE`](final_image::SIZE) pixels,
/// 32 bpp linear (little-endian `u32`s), pitch [`PITCH`](final_image::PITCH);
/// [`BACKGROUND`](final_image::BACKGROUND) with [`SQUARE`](final_image::SQUARE)
/// in [`square_color`](final_image::square_color) of the client's graphics
/// base (the start of its GTT slice, which its information registers give
/// and its first log line prints).
pub mod final_image {
    pub use crate::gpu::encode::Rect;

    /// Offset of the image from the start of the client's RAM.
    pub const RAM_OFFSET: u64 = 0xc0_0000;
    /// Width and height in pixels.
    pub const SIZE: u16 = 128;
    /// Bytes per pixel.
    pub const BYTES_PER_PIXEL: u32 = crate::gpu::encode::BYTES_PER_PIXEL_32;
    /// Bytes per row.
    pub const PITCH: u32 = SIZE as u32 * BYTES_PER_PIXEL;
    /// Bytes of the image.
    pub const BYTES: u64 = PITCH as u64 * SIZE as u64;
    /// The background colour.
    pub const BACKGROUND: u32 = 0xff20_4060;
    /// The square (its colour is [`square_color`]).
    pub const SQUARE: Rect = Rect { x1: 32, y1: 32, x2: 96, y2: 96 };

    /// The colour of round `round` of a client whose GTT starts at
    /// graphics address `tag`: opaque, never 0, and different for different
    /// partitions (their GTT slices differ) and rounds.
    pub const fn round_color(tag: u64, round: u32) -> u32 {
        let mixed = (tag >> 12).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (round as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        let rgb = (mixed >> 40) as u32 & 0x00ff_ffff;
        0xff00_0000 | if rgb == 0 { 0x0001_0203 } else { rgb }
    }

    /// The square's colour: the client's round colour for round 0xf1.
    pub const fn square_color(tag: u64) -> u32 {
        round_color(tag, 0xf1)
    }

    /// Pixel `(x, y)`: [`SQUARE`] in [`square_color`], the rest [`BACKGROUND`].
    pub const fn pixel(x: u32, y: u32, tag: u64) -> u32 {
        if SQUARE.contains(x, y) { square_color(tag) } else { BACKGROUND }
    }

    /// The square's colour in the image `gpu-ppgtt` composes through its
    /// per-process page tables (same place, size and background): its round
    /// colour for round 0xf2, so that a client image cannot pass for it.
    pub const fn ppgtt_square_color(tag: u64) -> u32 {
        round_color(tag, 0xf2)
    }

    /// Pixel `(x, y)` of `gpu-ppgtt`'s image: [`SQUARE`] in
    /// [`ppgtt_square_color`], the rest [`BACKGROUND`].
    pub const fn ppgtt_pixel(x: u32, y: u32, tag: u64) -> u32 {
        if SQUARE.contains(x, y) { ppgtt_square_color(tag) } else { BACKGROUND }
    }

    const _: () = assert!(BYTES.is_multiple_of(4096), "whole pages");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_words_differ_and_keep_their_values() {
        assert_eq!(pattern::word(0), 0xb01d_face_0000_0000);
        assert_eq!(pattern::word(1), 0xb01d_face_0000_0000 ^ 0x9e37_79b9_7f4a_7c15);
        assert_ne!(pattern::word(2), pattern::word(3));
    }

    #[test]
    fn the_final_image_is_a_square_on_a_background() {
        use final_image::*;
        let tag = 0x4000_0000;
        assert_eq!(pixel(0, 0, tag), BACKGROUND);
        assert_eq!(pixel(32, 32, tag), square_color(tag));
        assert_eq!(pixel(95, 95, tag), square_color(tag));
        assert_eq!(pixel(96, 95, tag), BACKGROUND);
        assert_ne!(square_color(tag), BACKGROUND);
        assert_eq!(BYTES, 0x1_0000);
        assert_eq!(ppgtt_pixel(0, 0, tag), BACKGROUND);
        assert_eq!(ppgtt_pixel(40, 40, tag), ppgtt_square_color(tag));
        assert_ne!(ppgtt_square_color(tag), square_color(tag));
    }

    #[test]
    fn colours_differ_per_partition_and_round() {
        use final_image::round_color;
        let (a, b) = (0x0, 0x100_0000);
        for round in 0..16 {
            assert_ne!(round_color(a, round), round_color(b, round));
            assert_ne!(round_color(a, round), round_color(a, round + 1));
            assert_eq!(round_color(a, round) >> 24, 0xff);
        }
    }
}
