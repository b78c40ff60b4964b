//! Benchmark guest for the virtual GPU (both architectures), in the
//! guest-visible counter's ticks (CNTPCT on arm64, TSC on x86_64; under
//! `-icount shift=0` deterministic path lengths, DESIGN.md §8):
//!
//! - the cost of one trapped GTT entry write: `bench::GTT_WRITES` 8-byte
//!   writes against the same loop without them;
//! - mediated blit throughput: the workload of `bulkhead_abi::gpu::bench`
//!   (the hypervisor's direct benchmark runs the same one) through the
//!   partition's virtual GPU, after one warm-up submission; the
//!   destination is checked afterwards, so a run that copied nothing
//!   cannot report a figure.

#![no_std]
#![no_main]

use bulkhead_abi::gpu::bench;
use bulkhead_test_guests::gpu::commands::{Commands, Rect, Surface, mi_user_interrupt, xy_color_blt};
use bulkhead_test_guests::gpu::{Gpu, GttWrite, Outcome, check_surface, layout};
use bulkhead_test_guests::{guest_main, println, time};

const RING_PAGES: u32 = 2;
const RING: u64 = layout::WORK;
/// RAM pages the GTT-write loop maps (over and over).
const TARGET_PAGES: u64 = 64;
const TARGETS: u64 = layout::WORK + 0x1_0000;
/// GTT entries: ring, the surfaces, the GTT-write loop's.
const GTT_RING: u64 = 0;
const GTT_SOURCE: u64 = GTT_RING + RING_PAGES as u64;
const GTT_DESTINATION: u64 = GTT_SOURCE + bench::SURFACE_BYTES / 4096;
const GTT_TIMED: u64 = GTT_DESTINATION + bench::SURFACE_BYTES / 4096;
const SOURCE_COLOR: u32 = 0xff5a_a5c3;
const DESTINATION_COLOR: u32 = 0xff00_0000;

const FAIL_SETUP: u64 = 2;
const FAIL_RUN: u64 = 3;
const FAIL_CHECK: u64 = 4;

fn gtt_writes(gpu: &Gpu, write: bool) -> Result<u64, u64> {
    let start = time::counter();
    for i in 0..u64::from(bench::GTT_WRITES) {
        let page = i % TARGET_PAGES;
        let entry = (TARGETS + page * 4096) | bulkhead_abi::gpu::gtt::PRESENT;
        if write {
            gpu.write_gtt(GTT_TIMED + page, entry, GttWrite::Whole).map_err(|_| FAIL_SETUP)?;
        } else {
            core::hint::black_box(entry);
        }
    }
    Ok(time::counter() - start)
}

fn completed(gpu: &mut Gpu, commands: &[u32]) -> Result<(), u64> {
    match gpu.run(commands) {
        Ok(Outcome::Completed { .. }) => Ok(()),
        other => {
            println!("gpu bench: a submission ended {other:?}");
            Err(FAIL_RUN)
        }
    }
}

fn main() -> Result<(), u64> {
    let mut gpu = Gpu::find().map_err(|e| {
        println!("gpu bench: no virtual GPU: {e:?}");
        1u64
    })?;
    layout::check_program_below_work().map_err(|_| FAIL_SETUP)?;
    let info = gpu.info();
    if info.local_size < bench::LOCAL_MEMORY_BYTES || info.gtt_entries < GTT_TIMED + TARGET_PAGES {
        println!("gpu bench: needs {:#x} bytes of local memory and {} GTT entries", bench::LOCAL_MEMORY_BYTES, GTT_TIMED + TARGET_PAGES);
        return Err(FAIL_SETUP);
    }
    let setup = |e| {
        println!("gpu bench: setup: {e:?}");
        FAIL_SETUP
    };
    gpu.enable_interrupts().map_err(setup)?;
    gpu.setup_ring(GTT_RING, RING, RING_PAGES).map_err(setup)?;
    let pages = bench::SURFACE_BYTES / 4096;
    gpu.map_local(GTT_SOURCE, bench::SOURCE_OFFSET, pages, GttWrite::Whole).map_err(setup)?;
    gpu.map_local(GTT_DESTINATION, bench::DESTINATION_OFFSET, pages, GttWrite::Whole).map_err(setup)?;

    // (a) Trapped GTT writes.
    gtt_writes(&gpu, true)?;
    let baseline = gtt_writes(&gpu, false)?;
    let total = gtt_writes(&gpu, true)?;
    let per_entry = total.saturating_sub(baseline) / u64::from(bench::GTT_WRITES);
    println!(
        "gpu bench: GTT write: {per_entry} ticks/entry ({} writes; loop baseline {} ticks per iteration)",
        bench::GTT_WRITES,
        baseline / u64::from(bench::GTT_WRITES)
    );

    // (b) Mediated blits: source filled, destination cleared, one warm-up.
    let rect = Rect::sized(bench::WIDTH as u16, bench::HEIGHT as u16);
    let source = Surface { address: gpu.graphics_address(GTT_SOURCE), pitch: bench::PITCH };
    let destination = Surface { address: gpu.graphics_address(GTT_DESTINATION), pitch: bench::PITCH };
    let mut list = Commands::<32>::new();
    list.push(&xy_color_blt(source, rect, SOURCE_COLOR)).push(&xy_color_blt(destination, rect, DESTINATION_COLOR)).push(&[mi_user_interrupt()]);
    completed(&mut gpu, list.as_slice())?;
    let batch = bench::submission(source.address, destination.address);
    completed(&mut gpu, &batch)?;
    let mut list = Commands::<16>::new();
    list.push(&xy_color_blt(destination, rect, DESTINATION_COLOR)).push(&[mi_user_interrupt()]);
    completed(&mut gpu, list.as_slice())?;
    let start = time::counter();
    for _ in 0..bench::SUBMISSIONS {
        completed(&mut gpu, &batch)?;
    }
    let ticks = time::counter() - start;
    let copied = gpu.local() + bench::DESTINATION_OFFSET;
    check_surface(copied, bench::PITCH, bench::WIDTH, bench::HEIGHT, |_, _| SOURCE_COLOR).map_err(|bad| {
        println!("gpu bench: the destination is wrong after the blits: {bad:?}");
        FAIL_CHECK
    })?;
    let taken = gpu.interrupts_taken();
    let _ = gpu.finish();
    println!(
        "gpu bench mediated: {} blits of {} bytes: {} ticks/blit ({} submissions of {}, {taken} interrupts taken)",
        bench::BLITS,
        bench::SURFACE_BYTES,
        ticks / u64::from(bench::BLITS),
        bench::SUBMISSIONS,
        bench::BLITS_PER_SUBMISSION
    );
    Ok(())
}

guest_main!(main);
