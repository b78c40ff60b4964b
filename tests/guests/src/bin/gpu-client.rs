//! The virtual GPU as a well-behaved client (both architectures): finds its
//! vGPU, runs a ring in its own RAM through its GTT, and for [`ROUNDS`]
//! rounds, each with colours derived from its GTT's graphics base (so two
//! clients at once use different colours):
//!
//! 1. XY_COLOR_BLT fills surface A (its RAM) with the round's colour, then
//!    a second XY_COLOR_BLT a rectangle of it with a second colour;
//! 2. XY_SRC_COPY_BLT copies A to surface B (its RAM, GTT entries written
//!    as two 4-byte halves), to surface L (its local memory) and L back to
//!    surface C (its RAM);
//! 3. MI_STORE_DATA_IMM writes a marker, MI_USER_INTERRUPT ends the work;
//!
//! then checks every pixel of A, B, C and L (L read through its local
//! memory BAR), the marker, SEQNO (one more) and that the completion came
//! as its interrupt. The CPU poisons every surface before each round, so
//! a blit that did not run cannot pass.
//!
//! Finally it composes the final image in local memory (background, then a
//! square in a colour derived from its graphics base), copies it to
//! [`layout::FINAL_IMAGE`] and checks it: the harness reads it from guest
//! RAM afterwards, by the line `gpu client: final image at ...`.

#![no_std]
#![no_main]

use bulkhead_test_guests::gpu::commands::{
    self, Commands, FINAL_BACKGROUND, FINAL_PITCH, FINAL_SIZE, FINAL_SQUARE, Rect, Surface, xy_color_blt, final_pixel,
    final_square_color, round_color, xy_src_copy_blt, mi_store_data_imm, mi_user_interrupt,
};
use bulkhead_test_guests::gpu::{Gpu, GttWrite, Outcome, check_surface, layout, ram_fill, ram_read32, ram_write32};
use bulkhead_test_guests::{guest_main, println};

/// Rounds of the blit sequence.
const ROUNDS: u32 = 4;
/// Surfaces: 128 × 128 pixels, 32 bpp, 64 KiB = 16 pages each.
const SIZE: u16 = 128;
const PITCH: u32 = SIZE as u32 * commands::BYTES_PER_PIXEL_32;
const SURFACE_BYTES: u64 = PITCH as u64 * SIZE as u64;
const SURFACE_PAGES: u64 = SURFACE_BYTES / 4096;
/// The second colour's rectangle in A.
const INNER: Rect = Rect { x1: 16, y1: 16, x2: 48, y2: 40 };
/// Ring pages.
const RING_PAGES: u32 = 2;

/// RAM of the work area: ring, A, B, C, marker page.
const RING: u64 = layout::WORK;
const SURFACE_A: u64 = layout::WORK + 0x1_0000;
const SURFACE_B: u64 = layout::WORK + 0x2_0000;
const SURFACE_C: u64 = layout::WORK + 0x3_0000;
const MARKER: u64 = layout::WORK + 0x4_0000;
/// Local-memory offsets: L and the final image's composition.
const LOCAL_L: u64 = 0;
const LOCAL_FINAL: u64 = SURFACE_BYTES;

/// GTT entries.
const GTT_RING: u64 = 0;
const GTT_A: u64 = GTT_RING + RING_PAGES as u64;
const GTT_B: u64 = GTT_A + SURFACE_PAGES;
const GTT_C: u64 = GTT_B + SURFACE_PAGES;
const GTT_L: u64 = GTT_C + SURFACE_PAGES;
const GTT_MARKER: u64 = GTT_L + SURFACE_PAGES;
const GTT_LOCAL_FINAL: u64 = GTT_MARKER + 1;
const GTT_FINAL: u64 = GTT_LOCAL_FINAL + SURFACE_PAGES;
const GTT_USED: u64 = GTT_FINAL + SURFACE_PAGES;

/// The marker MI_STORE_DATA_IMM writes in round `round`.
const fn marker(round: u32) -> u32 {
    0x6d6b_0000 | round
}

/// Failure codes.
const FAIL_SETUP: u64 = 2;
const FAIL_RUN: u64 = 3;
const FAIL_OUTCOME: u64 = 4;
const FAIL_PIXELS: u64 = 5;
const FAIL_MARKER: u64 = 6;
const FAIL_SEQNO: u64 = 7;
const FAIL_GTT: u64 = 8;
const FAIL_FINAL: u64 = 9;

fn surface(gpu: &Gpu, first: u64) -> Surface {
    Surface { address: gpu.graphics_address(first), pitch: PITCH }
}

/// Runs `commands` and requires a completion that advanced SEQNO by one.
fn run_completed(gpu: &mut Gpu, what: &str, commands: &[u32]) -> Result<u32, u64> {
    let before = gpu.read(bulkhead_abi::gpu::vgpu::SEQNO);
    let outcome = gpu.run(commands).map_err(|e| {
        println!("gpu client: {what}: {e:?}");
        FAIL_RUN
    })?;
    let Outcome::Completed { seqno, .. } = outcome else {
        println!("gpu client: {what}: {outcome:?}, expected a completion");
        return Err(FAIL_OUTCOME);
    };
    if seqno != before.wrapping_add(1) {
        println!("gpu client: {what}: SEQNO {seqno}, expected {}", before.wrapping_add(1));
        return Err(FAIL_SEQNO);
    }
    Ok(seqno)
}

fn check(what: &str, address: u64, expected: impl Fn(u32, u32) -> u32) -> Result<(), u64> {
    check_surface(address, PITCH, u32::from(SIZE), u32::from(SIZE), expected).map_err(|bad| {
        println!(
            "gpu client: {what} at {address:#x}: {} wrong pixel(s), first ({}, {}) = {:#010x}, expected {:#010x}",
            bad.count, bad.x, bad.y, bad.found, bad.expected
        );
        FAIL_PIXELS
    })
}

fn main() -> Result<(), u64> {
    let mut gpu = Gpu::find().map_err(|e| {
        println!("gpu client: no virtual GPU: {e:?}");
        1u64
    })?;
    let info = gpu.info();
    println!(
        "gpu client: vGPU registers at {:#x}, local memory at {:#x} ({:#x} bytes), graphics base {:#x}, {} GTT entries, interrupt {}",
        gpu.registers(),
        gpu.local(),
        info.local_size,
        info.graphics_base,
        info.gtt_entries,
        info.interrupt
    );
    layout::check_program_below_work().map_err(|end| {
        println!("gpu client: the program ends at {end:#x}, inside the work area at {:#x}", layout::WORK);
        FAIL_SETUP
    })?;
    if info.gtt_entries < GTT_USED || info.local_size < 2 * SURFACE_BYTES {
        println!("gpu client: needs {GTT_USED} GTT entries and {:#x} bytes of local memory", 2 * SURFACE_BYTES);
        return Err(FAIL_SETUP);
    }
    let setup = |e| {
        println!("gpu client: setup: {e:?}");
        FAIL_SETUP
    };
    gpu.enable_interrupts().map_err(setup)?;
    gpu.setup_ring(GTT_RING, RING, RING_PAGES).map_err(setup)?;
    gpu.map_ram(GTT_A, SURFACE_A, SURFACE_PAGES, GttWrite::Whole).map_err(setup)?;
    gpu.map_ram(GTT_B, SURFACE_B, SURFACE_PAGES, GttWrite::Halves).map_err(setup)?;
    gpu.map_ram(GTT_C, SURFACE_C, SURFACE_PAGES, GttWrite::Whole).map_err(setup)?;
    gpu.map_local(GTT_L, LOCAL_L, SURFACE_PAGES, GttWrite::Whole).map_err(setup)?;
    gpu.map_ram(GTT_MARKER, MARKER, 1, GttWrite::Whole).map_err(setup)?;
    gpu.map_local(GTT_LOCAL_FINAL, LOCAL_FINAL, SURFACE_PAGES, GttWrite::Halves).map_err(setup)?;
    gpu.map_ram(GTT_FINAL, layout::FINAL_IMAGE, SURFACE_PAGES, GttWrite::Whole).map_err(setup)?;
    // Every entry reads back as written.
    for (first, base, local) in [
        (GTT_A, SURFACE_A, false),
        (GTT_B, SURFACE_B, false),
        (GTT_C, SURFACE_C, false),
        (GTT_L, LOCAL_L, true),
        (GTT_LOCAL_FINAL, LOCAL_FINAL, true),
        (GTT_FINAL, layout::FINAL_IMAGE, false),
    ] {
        for page in 0..SURFACE_PAGES {
            let mut entry = (base + page * 4096) | bulkhead_abi::gpu::gtt::PRESENT;
            if local {
                entry |= bulkhead_abi::gpu::vgpu::GTT_LOCAL_MEMORY;
            }
            let back = gpu.read_gtt(first + page).map_err(setup)?;
            if back != entry {
                println!("gpu client: GTT entry {} reads back {back:#x}, written {entry:#x}", first + page);
                return Err(FAIL_GTT);
            }
        }
    }

    let tag = info.graphics_base;
    let (a, b, c, l) = (surface(&gpu, GTT_A), surface(&gpu, GTT_B), surface(&gpu, GTT_C), surface(&gpu, GTT_L));
    let whole = Rect::sized(SIZE, SIZE);
    for round in 0..ROUNDS {
        let color = round_color(tag, round);
        let inner = round_color(tag, round + 0x80);
        for address in [SURFACE_A, SURFACE_B, SURFACE_C, gpu.local() + LOCAL_L] {
            ram_fill(address, SURFACE_BYTES, !color);
        }
        ram_write32(MARKER, 0);
        let mut list = Commands::<64>::new();
        list.push(&xy_color_blt(a, whole, color))
            .push(&xy_color_blt(a, INNER, inner))
            .push(&xy_src_copy_blt(b, whole, a, 0, 0))
            .push(&xy_src_copy_blt(l, whole, a, 0, 0))
            .push(&xy_src_copy_blt(c, whole, l, 0, 0))
            .push(&mi_store_data_imm(gpu.graphics_address(GTT_MARKER), marker(round)))
            .push(&[mi_user_interrupt()]);
        let seqno = run_completed(&mut gpu, "round", list.as_slice())?;
        let expected = |x: u32, y: u32| if INNER.contains(x, y) { inner } else { color };
        check("surface A (its RAM)", SURFACE_A, expected)?;
        check("surface B (its RAM, GTT written in halves)", SURFACE_B, expected)?;
        check("surface L (its local memory)", gpu.local() + LOCAL_L, expected)?;
        check("surface C (its RAM, copied back from local memory)", SURFACE_C, expected)?;
        let found = ram_read32(MARKER);
        if found != marker(round) {
            println!("gpu client: marker {found:#x}, expected {:#x}", marker(round));
            return Err(FAIL_MARKER);
        }
        println!("gpu client: round {} of {ROUNDS}: colours {color:#010x}/{inner:#010x}, every pixel correct, SEQNO {seqno}", round + 1);
    }

    // The final image.
    ram_fill(layout::FINAL_IMAGE, SURFACE_BYTES, 0);
    let local_final = Surface { address: gpu.graphics_address(GTT_LOCAL_FINAL), pitch: FINAL_PITCH };
    let final_image = Surface { address: gpu.graphics_address(GTT_FINAL), pitch: FINAL_PITCH };
    let square = final_square_color(tag);
    let mut list = Commands::<32>::new();
    list.push(&xy_color_blt(local_final, Rect::sized(FINAL_SIZE, FINAL_SIZE), FINAL_BACKGROUND))
        .push(&xy_color_blt(local_final, FINAL_SQUARE, square))
        .push(&xy_src_copy_blt(final_image, Rect::sized(FINAL_SIZE, FINAL_SIZE), local_final, 0, 0))
        .push(&[mi_user_interrupt()]);
    let seqno = run_completed(&mut gpu, "final image", list.as_slice())?;
    check("final image", layout::FINAL_IMAGE, |x, y| final_pixel(x, y, tag)).map_err(|_| FAIL_FINAL)?;
    let taken = gpu.interrupts_taken();
    gpu.finish().map_err(|e| {
        println!("gpu client: {e:?}");
        FAIL_OUTCOME
    })?;
    if taken < ROUNDS + 1 {
        println!("gpu client: only {taken} interrupt(s) taken for {} completions", ROUNDS + 1);
        return Err(FAIL_OUTCOME);
    }
    println!(
        "gpu client: final image at {:#x}: {FINAL_SIZE}x{FINAL_SIZE} 32bpp pitch {FINAL_PITCH} ({SURFACE_BYTES} bytes), background {FINAL_BACKGROUND:#010x}, square ({}, {})-({}, {}) {square:#010x}",
        layout::FINAL_IMAGE,
        FINAL_SQUARE.x1,
        FINAL_SQUARE.y1,
        FINAL_SQUARE.x2,
        FINAL_SQUARE.y2
    );
    println!("gpu client: passed: {ROUNDS} rounds, {taken} interrupts taken, SEQNO {seqno}");
    Ok(())
}

guest_main!(main);
