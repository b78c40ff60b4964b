//! The virtual GPU's per-process page tables as a well-behaved client (both
//! architectures, `bulkhead_test_guests::gpu::ppgtt`). It builds two
//! contexts, A and B, that map the same graphics addresses to different
//! pages of its own RAM (and share one PT page), runs batches in each
//! (PDP0 load + PPGTT MI_BATCH_BUFFER_START in its ring) and, after every
//! batch, checks with the CPU that the GPU wrote exactly where the CURRENT
//! mapping points and nowhere else (every target is poisoned first):
//!
//! 1. A: fill + store; INFO_PT_TRACKED = A's table pages afterwards;
//! 2. B: the same at the same graphics addresses, A's pages untouched;
//! 3. A: one page remapped (one 8-byte store: exactly 1 trap);
//! 4. B: copies RAM → local memory → RAM;
//! 5. A: a 2 MiB page mapped at 4 GiB after A was submitted (new PD page
//!    linked, then its entry: 2 traps), then switched to another 2 MiB
//!    (1 trap);
//! 6. B: an entry written as two 4-byte halves just before the submission
//!    (2 traps);
//! 7. A: two adjacent entries in one `stp` (arm64: 1 trap; x86_64: two
//!    8-byte stores, 2 traps);
//! 8. both: a PT page linked in both contexts; one remap in it (1 trap)
//!    takes effect in both;
//! 9. B released (CONTEXT_RELEASE): INFO_PT_TRACKED drops by B's own pages,
//!    and a store to B's old PML4 no longer traps;
//!
//! INFO_PT_REFUSED must not move. Finally it composes an image (in local
//! memory, copied to [`layout::FINAL_IMAGE`], all through context A) that
//! the harness checks in the RAM file by the `gpu ppgtt: final image at`
//! line.

#![no_std]
#![no_main]

use bulkhead_abi::gpu::ppgtt::{LARGE_PAGE_SIZE, PAGE_SIZE, PD};
use bulkhead_abi::gpu::vgpu;
use bulkhead_abi::testdata::final_image;
use bulkhead_test_guests::gpu::commands::{Commands, Rect, Surface, round_color, xy_color_blt, xy_src_copy_blt};
use bulkhead_test_guests::gpu::ppgtt::{
    self, Context, Counters, GuestRam, PAIR_STORES, Pool, Store, Tables, large_ram_leaf, mi_store_data_imm, ram_leaf,
    release_context, run_in_context,
};
use bulkhead_test_guests::gpu::{Gpu, Outcome, check_surface, layout, ram_fill, ram_read32, ram_write32};
use bulkhead_test_guests::{guest_main, println};

/// Surfaces: 64 × 64 pixels, 32 bpp: 16 KiB, 4 pages of 16 rows.
const SIZE: u16 = 64;
const PITCH: u32 = SIZE as u32 * 4;
const SURFACE_PAGES: u64 = 4;
const SURFACE_BYTES: u64 = SURFACE_PAGES * PAGE_SIZE;
const RING_PAGES: u32 = 2;
const POOL_PAGES: usize = 64;

/// Its RAM (guest-physical).
const RING: u64 = layout::PPGTT_AREA;
const POOL: u64 = layout::PPGTT_AREA + 0x1_0000;
const BATCH: [u64; 2] = [layout::PPGTT_AREA + 0x6_0000, layout::PPGTT_AREA + 0x6_1000];
const MARK: [u64; 2] = [layout::PPGTT_AREA + 0x6_2000, layout::PPGTT_AREA + 0x6_3000];
const SHARED: u64 = layout::PPGTT_AREA + 0x6_5000;
const SHARED2: u64 = layout::PPGTT_AREA + 0x6_6000;
const SURF: [u64; 2] = [layout::PPGTT_AREA + 0x7_0000, layout::PPGTT_AREA + 0x7_4000];
const SPARE: u64 = layout::PPGTT_AREA + 0x7_8000;
const COPY: u64 = layout::PPGTT_AREA + 0x7_c000;
const LARGE: [u64; 2] = [layout::WORK, layout::WORK + LARGE_PAGE_SIZE];
/// Local-memory offsets.
const LOCAL_L: u64 = 0;
const LOCAL_FINAL: u64 = 0x1_0000;

/// Graphics (per-process) addresses, the same in both contexts.
const VA_BATCH: u64 = 0x10_0000;
const VA_MARK: u64 = 0x10_1000;
const VA_SURF: u64 = 0x20_0000;
const VA_COPY: u64 = 0x20_4000;
const VA_LOCAL: u64 = 0x20_8000;
const VA_SHARED: u64 = 0x60_0000;
const VA_LARGE: u64 = 0x1_0000_0000;
/// Where in the 2 MiB page the surface goes.
const LARGE_OFFSET: u64 = 0x10_0000;
const VA_FINAL: u64 = 0x100_0000;
const VA_LOCAL_FINAL: u64 = 0x110_0000;
const FINAL_PAGES: u64 = final_image::BYTES / PAGE_SIZE;

const FAIL_SETUP: u64 = 2;
const FAIL_RUN: u64 = 3;
const FAIL_MEMORY: u64 = 4;
const FAIL_COUNTER: u64 = 5;
const FAIL_FINAL: u64 = 6;

const NAMES: [&str; 2] = ["A", "B"];

struct Client {
    gpu: Gpu,
    tables: Tables<GuestRam>,
    contexts: [Context; 2],
    tag: u64,
    batches: u32,
}

fn surface(address: u64) -> Surface {
    Surface { address, pitch: PITCH }
}

fn whole() -> Rect {
    Rect::sized(SIZE, SIZE)
}

fn setup_error<E: core::fmt::Debug>(e: E) -> u64 {
    println!("gpu ppgtt: setup: {e:?}");
    FAIL_SETUP
}

/// Every word of `bytes` at `address` must be `value`.
fn check_words(what: &str, address: u64, bytes: u64, value: u32) -> Result<(), u64> {
    let bad = (0..bytes / 4).map(|i| address + 4 * i).find(|&a| ram_read32(a) != value);
    if let Some(at) = bad {
        println!("gpu ppgtt: {what}: {at:#x} holds {:#010x}, expected {value:#010x}", ram_read32(at));
        return Err(FAIL_MEMORY);
    }
    Ok(())
}

impl Client {
    fn color(&self, step: u32) -> u32 {
        round_color(self.tag, step)
    }

    /// Runs `commands` as a batch in context `which`; requires completion.
    fn run(&mut self, which: usize, commands: &[u32], what: &str) -> Result<(), u64> {
        let before = self.gpu.read(vgpu::SEQNO);
        let outcome = run_in_context(&mut self.gpu, self.contexts[which], BATCH[which], VA_BATCH, commands).map_err(|e| {
            println!("gpu ppgtt: {what}: {e:?}");
            FAIL_RUN
        })?;
        match outcome {
            Outcome::Completed { seqno, .. } if seqno == before.wrapping_add(1) => {
                self.batches += 1;
                Ok(())
            }
            other => {
                println!("gpu ppgtt: {what}: context {} ended {other:?}, expected a completion (SEQNO {before} + 1)", NAMES[which]);
                Err(FAIL_RUN)
            }
        }
    }

    /// Fills the surface at VA_SURF in context `which` with `color`.
    fn fill_surface(&mut self, which: usize, color: u32, what: &str) -> Result<(), u64> {
        let mut list = Commands::<16>::new();
        list.push(&xy_color_blt(surface(VA_SURF), whole(), color));
        self.run(which, list.as_slice(), what)
    }

    /// INFO_PT_TRAPS must be `before + stores`.
    fn expect_traps(&self, before: u32, stores: u64, what: &str) -> Result<u32, u64> {
        let now = self.gpu.read(vgpu::INFO_PT_TRAPS);
        if u64::from(now.wrapping_sub(before)) != stores {
            println!("gpu ppgtt: {what}: INFO_PT_TRAPS {before} -> {now}, expected {stores} more");
            return Err(FAIL_COUNTER);
        }
        Ok(now)
    }

    fn expect_tracked(&self, expected: usize, what: &str) -> Result<(), u64> {
        let tracked = self.gpu.read(vgpu::INFO_PT_TRACKED);
        if tracked as usize != expected {
            println!("gpu ppgtt: {what}: INFO_PT_TRACKED {tracked}, expected {expected}");
            return Err(FAIL_COUNTER);
        }
        Ok(())
    }

    fn table_pages(&self, which: usize) -> usize {
        let mut pages = [0; POOL_PAGES];
        self.tables.table_pages(self.contexts[which], &mut pages)
    }

    fn slot(&self, which: usize, address: u64) -> Result<u64, u64> {
        self.tables.slot(self.contexts[which], address, bulkhead_abi::gpu::ppgtt::PT).map_err(setup_error)
    }
}

fn build_context(tables: &mut Tables<GuestRam>, which: usize) -> Result<Context, ppgtt::PtError> {
    let context = tables.new_context()?;
    tables.map_ram(context, VA_BATCH, BATCH[which], 1, Store::Whole)?;
    tables.map_ram(context, VA_MARK, MARK[which], 1, Store::Whole)?;
    tables.map_ram(context, VA_SURF, SURF[which], SURFACE_PAGES, Store::Whole)?;
    tables.map_ram(context, VA_COPY, COPY, SURFACE_PAGES, Store::Whole)?;
    tables.map_local(context, VA_LOCAL, LOCAL_L, SURFACE_PAGES, Store::Whole)?;
    Ok(context)
}

fn main() -> Result<(), u64> {
    let mut gpu = Gpu::find().map_err(|e| {
        println!("gpu ppgtt: no virtual GPU: {e:?}");
        1u64
    })?;
    let info = gpu.info();
    let start = Counters::read(&gpu);
    println!(
        "gpu ppgtt: vGPU registers at {:#x}, local memory at {:#x} ({:#x} bytes), graphics base {:#x}, {} GTT entries, interrupt {}, shadow pages {}/{}",
        gpu.registers(),
        gpu.local(),
        info.local_size,
        info.graphics_base,
        info.gtt_entries,
        info.interrupt,
        start.shadow_pages,
        start.shadow_limit
    );
    layout::check_program_below(layout::PPGTT_AREA).map_err(|end| {
        println!("gpu ppgtt: the program ends at {end:#x}, inside its area at {:#x}", layout::PPGTT_AREA);
        FAIL_SETUP
    })?;
    if info.local_size < LOCAL_FINAL + final_image::BYTES {
        println!("gpu ppgtt: needs {:#x} bytes of local memory", LOCAL_FINAL + final_image::BYTES);
        return Err(FAIL_SETUP);
    }
    gpu.enable_interrupts().map_err(setup_error)?;
    gpu.setup_ring(0, RING, RING_PAGES).map_err(setup_error)?;
    let mut tables = Tables::new(GuestRam, Pool::new(POOL, POOL_PAGES).map_err(setup_error)?);
    let a = build_context(&mut tables, 0).map_err(setup_error)?;
    let b = build_context(&mut tables, 1).map_err(setup_error)?;
    // One PT page for VA_SHARED, linked in both.
    tables.map_ram(a, VA_SHARED, SHARED, 1, Store::Whole).map_err(setup_error)?;
    let shared_pt = tables.slot(a, VA_SHARED, PD).map(|slot| tables.entry(slot) & bulkhead_abi::gpu::ppgtt::ADDRESS_MASK).map_err(setup_error)?;
    tables.link_table(b, VA_SHARED, PD, shared_pt, Store::Whole).map_err(setup_error)?;
    let mut client = Client { gpu, tables, contexts: [a, b], tag: info.graphics_base, batches: 0 };
    let (pages_a, pages_b) = (client.table_pages(0), client.table_pages(1));
    println!(
        "gpu ppgtt: contexts A (PML4 {:#x}, {pages_a} table pages) and B (PML4 {:#x}, {pages_b} table pages) share the PT page at {shared_pt:#x}",
        a.pml4, b.pml4
    );
    for address in [SURF[0], SURF[1], SPARE, COPY] {
        ram_fill(address, SURFACE_BYTES, 0);
    }

    // (1) and (2): each context writes its own pages at the same addresses.
    for which in 0..2 {
        let color = client.color(which as u32);
        ram_fill(SURF[which], SURFACE_BYTES, !color);
        ram_write32(MARK[which], 0);
        let mut list = Commands::<16>::new();
        list.push(&xy_color_blt(surface(VA_SURF), whole(), color)).push(&mi_store_data_imm(VA_MARK, color));
        client.run(which, list.as_slice(), "fill and store")?;
        check_words("the context's surface", SURF[which], SURFACE_BYTES, color)?;
        check_words("the context's marker", MARK[which], 4, color)?;
        if which == 1 {
            check_words("context A's surface after B's batch", SURF[0], SURFACE_BYTES, client.color(0))?;
            check_words("context A's marker after B's batch", MARK[0], 4, client.color(0))?;
        }
        let tracked = if which == 0 { pages_a } else { pages_a + pages_b - 1 };
        client.expect_tracked(tracked, "after the first submission")?;
        println!(
            "gpu ppgtt: ({}) context {}: fill and store through its own tables: correct, {tracked} table pages tracked",
            which + 1,
            NAMES[which]
        );
    }

    // (3) A remaps its surface's page 0 to a spare page.
    let traps = client.gpu.read(vgpu::INFO_PT_TRAPS);
    let slot = client.slot(0, VA_SURF)?;
    client.tables.write_entry(slot, ram_leaf(SPARE).map_err(setup_error)?, Store::Whole);
    let traps = client.expect_traps(traps, 1, "remap")?;
    let color = client.color(3);
    ram_fill(SPARE, PAGE_SIZE, !color);
    client.fill_surface(0, color, "fill after a remap")?;
    check_words("the newly mapped page", SPARE, PAGE_SIZE, color)?;
    check_words("the rest of the surface", SURF[0] + PAGE_SIZE, SURFACE_BYTES - PAGE_SIZE, color)?;
    check_words("the page mapped before", SURF[0], PAGE_SIZE, client.color(0))?;
    check_words("context B's surface", SURF[1], SURFACE_BYTES, client.color(1))?;
    println!("gpu ppgtt: (3) a page remapped with one 8-byte store (1 trap): the GPU wrote the new page, the old one kept its contents");

    // (4) B copies its surface to local memory and back to RAM.
    let local = client.gpu.local() + LOCAL_L;
    ram_fill(local, SURFACE_BYTES, 0);
    ram_fill(COPY, SURFACE_BYTES, 0);
    let mut list = Commands::<32>::new();
    list.push(&xy_src_copy_blt(surface(VA_LOCAL), whole(), surface(VA_SURF), 0, 0))
        .push(&xy_src_copy_blt(surface(VA_COPY), whole(), surface(VA_LOCAL), 0, 0));
    client.run(1, list.as_slice(), "copies")?;
    let expected = client.color(1);
    check_surface(local, PITCH, SIZE.into(), SIZE.into(), |_, _| expected).map_err(|bad| {
        println!("gpu ppgtt: local memory after the copy: {bad:?}");
        FAIL_MEMORY
    })?;
    check_words("the copy back in RAM", COPY, SURFACE_BYTES, expected)?;
    println!("gpu ppgtt: (4) context B: copies RAM -> local memory -> RAM through its tables: correct");

    // (5) A maps a 2 MiB page at 4 GiB (a new PD page: its PDP entry, then
    // its entry, 2 traps), then switches it to another 2 MiB page.
    let large = surface(VA_LARGE + LARGE_OFFSET);
    let mut traps = traps;
    for (step, &target) in LARGE.iter().enumerate() {
        let color = client.color(5 + step as u32);
        ram_fill(target + LARGE_OFFSET, SURFACE_BYTES, !color);
        client.tables.map_2m(a, VA_LARGE, large_ram_leaf(target).map_err(setup_error)?, Store::Whole).map_err(setup_error)?;
        traps = client.expect_traps(traps, if step == 0 { 2 } else { 1 }, "2 MiB mapping")?;
        let mut list = Commands::<16>::new();
        list.push(&xy_color_blt(large, whole(), color));
        client.run(0, list.as_slice(), "fill in a 2 MiB page")?;
        check_words("the current 2 MiB page", target + LARGE_OFFSET, SURFACE_BYTES, color)?;
        if step == 1 {
            check_words("the 2 MiB page mapped before", LARGE[0] + LARGE_OFFSET, SURFACE_BYTES, client.color(5))?;
        }
    }
    println!("gpu ppgtt: (5) a 2 MiB page mapped at {VA_LARGE:#x}, then switched to another 2 MiB page: the GPU followed");

    // (6) B: an entry written as two halves just before the submission.
    let slot = client.slot(1, VA_SURF + PAGE_SIZE)?;
    let target = SPARE + PAGE_SIZE;
    let color = client.color(6);
    ram_fill(target, PAGE_SIZE, !color);
    client.tables.write_entry(slot, ram_leaf(target).map_err(setup_error)?, Store::Halves);
    let traps = client.expect_traps(traps, 2, "two halves")?;
    client.fill_surface(1, color, "fill after a half-written entry")?;
    check_words("the page the completed entry names", target, PAGE_SIZE, color)?;
    check_words("B's page mapped before", SURF[1] + PAGE_SIZE, PAGE_SIZE, client.color(1))?;
    println!("gpu ppgtt: (6) an entry written as two 4-byte halves just before the submission (2 traps): the GPU followed");

    // (7) A: pages 2 and 3 of its surface remapped in one pair store.
    let slot = client.slot(0, VA_SURF + 2 * PAGE_SIZE)?;
    let color = client.color(7);
    let targets = [SPARE + 2 * PAGE_SIZE, SPARE + 3 * PAGE_SIZE];
    ram_fill(targets[0], 2 * PAGE_SIZE, !color);
    let leaves = [ram_leaf(targets[0]).map_err(setup_error)?, ram_leaf(targets[1]).map_err(setup_error)?];
    client.tables.write_pair(slot, leaves[0], leaves[1]).map_err(setup_error)?;
    let traps = client.expect_traps(traps, PAIR_STORES, "pair store")?;
    client.fill_surface(0, color, "fill after a pair store")?;
    check_words("the pages the pair names", targets[0], 2 * PAGE_SIZE, color)?;
    check_words("A's pages mapped before", SURF[0] + 2 * PAGE_SIZE, 2 * PAGE_SIZE, client.color(3))?;
    #[cfg(target_arch = "aarch64")]
    let how = "one stp";
    #[cfg(not(target_arch = "aarch64"))]
    let how = "two 8-byte stores";
    println!("gpu ppgtt: (7) two adjacent entries in {how} ({PAIR_STORES} trap(s)): the GPU followed");

    // (8) The shared PT page: both contexts store through it; one remap
    // in it changes both.
    let mut traps = traps;
    for (round, page) in [SHARED, SHARED2].into_iter().enumerate() {
        ram_fill(page, PAGE_SIZE, 0);
        if round == 1 {
            let slot = client.slot(0, VA_SHARED)?;
            client.tables.write_entry(slot, ram_leaf(SHARED2).map_err(setup_error)?, Store::Whole);
            traps = client.expect_traps(traps, 1, "remap in the shared PT page")?;
        }
        for which in 0..2 {
            let value = client.color(8 + 2 * round as u32 + which as u32);
            let mut list = Commands::<8>::new();
            list.push(&mi_store_data_imm(VA_SHARED + 4 * which as u64, value));
            client.run(which, list.as_slice(), "store through the shared PT page")?;
            check_words("the shared page", page + 4 * which as u64, 4, value)?;
        }
    }
    check_words("the shared page mapped before", SHARED, 4, client.color(8))?;
    println!("gpu ppgtt: (8) a PT page shared by both contexts: one remap in it took effect in both");

    // (9) B released: its own pages are no longer tracked.
    let tracked_before = client.gpu.read(vgpu::INFO_PT_TRACKED) as usize;
    let own_b = client.table_pages(1) - 1;
    release_context(&client.gpu, b.pml4);
    client.expect_tracked(tracked_before - own_b, "after releasing B")?;
    let first = client.tables.entry(b.pml4);
    client.tables.write_entry(b.pml4, first, Store::Whole);
    client.expect_traps(traps, 0, "a store to B's released PML4")?;
    client.tables.free_context(b, &[shared_pt]);
    println!("gpu ppgtt: (9) context B released: {own_b} table pages no longer tracked, its PML4 writable without a trap");

    // The final image, through A.
    client.tables.map_ram(a, VA_FINAL, layout::FINAL_IMAGE, FINAL_PAGES, Store::Whole).map_err(setup_error)?;
    client.tables.map_local(a, VA_LOCAL_FINAL, LOCAL_FINAL, FINAL_PAGES, Store::Whole).map_err(setup_error)?;
    ram_fill(layout::FINAL_IMAGE, final_image::BYTES, 0);
    let square = final_image::ppgtt_square_color(client.tag);
    let local_final = Surface { address: VA_LOCAL_FINAL, pitch: final_image::PITCH };
    let image = Surface { address: VA_FINAL, pitch: final_image::PITCH };
    let full = Rect::sized(final_image::SIZE, final_image::SIZE);
    let mut list = Commands::<32>::new();
    list.push(&xy_color_blt(local_final, full, final_image::BACKGROUND))
        .push(&xy_color_blt(local_final, final_image::SQUARE, square))
        .push(&xy_src_copy_blt(image, full, local_final, 0, 0));
    client.run(0, list.as_slice(), "final image")?;
    let tag = client.tag;
    let size = u32::from(final_image::SIZE);
    check_surface(layout::FINAL_IMAGE, final_image::PITCH, size, size, |x, y| final_image::ppgtt_pixel(x, y, tag)).map_err(|bad| {
        println!("gpu ppgtt: final image: {bad:?}");
        FAIL_FINAL
    })?;
    let end = Counters::read(&client.gpu);
    if end.refused != start.refused {
        println!("gpu ppgtt: INFO_PT_REFUSED {} -> {}, expected no change", start.refused, end.refused);
        return Err(FAIL_COUNTER);
    }
    let taken = client.gpu.interrupts_taken();
    client.gpu.finish().map_err(|e| {
        println!("gpu ppgtt: {e:?}");
        FAIL_RUN
    })?;
    if taken < client.batches {
        println!("gpu ppgtt: only {taken} interrupt(s) taken for {} batches", client.batches);
        return Err(FAIL_RUN);
    }
    println!(
        "gpu ppgtt: final image at {:#x}: {size}x{size} 32bpp pitch {} ({} bytes), background {:#010x}, square ({}, {})-({}, {}) {square:#010x}",
        layout::FINAL_IMAGE,
        final_image::PITCH,
        final_image::BYTES,
        final_image::BACKGROUND,
        final_image::SQUARE.x1,
        final_image::SQUARE.y1,
        final_image::SQUARE.x2,
        final_image::SQUARE.y2
    );
    println!(
        "gpu ppgtt: passed: {} batches in 2 contexts, {} page-table traps, {} refused, {} shadow pages in use, {taken} interrupts taken",
        client.batches,
        end.traps.wrapping_sub(start.traps),
        end.refused.wrapping_sub(start.refused),
        end.shadow_pages
    );
    Ok(())
}

guest_main!(main);
