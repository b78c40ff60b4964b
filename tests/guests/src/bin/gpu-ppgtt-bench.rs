//! Benchmark guest for per-process GPU page tables (both architectures), in
//! the guest-visible counter's ticks (CNTPCT on arm64, TSC on x86_64; under
//! `-icount shift=0` deterministic path lengths, DESIGN.md §8). In one
//! context, submitted once so that its tables are tracked:
//!
//! - one trapped page-table write: [`STORES`] 8-byte stores to an entry of
//!   a tracked PT page against [`STORES`] of the same stores to an untracked
//!   page, ticks per store each and the ratio (the INFO_PT_TRAPS each loop
//!   took are printed too);
//! - the traps it takes to map [`MAPPING_BYTES`] with 4 KiB pages in the
//!   already-submitted context, in two orders: each new PT page linked
//!   into the (tracked) PD first and then filled (every entry store traps:
//!   about 16384 + 32), or filled first and then linked (32), each followed
//!   by a batch that stores through the last page of the mapping (checked),
//!   and the shadow pages in use then.

#![no_std]
#![no_main]

use bulkhead_abi::gpu::ppgtt::{ENTRIES, ENTRY_SIZE, LARGE_PAGE_SIZE, PAGE_SIZE, PD, PDP, PT};
use bulkhead_abi::gpu::vgpu;
use bulkhead_test_guests::gpu::commands::Commands;
use bulkhead_test_guests::gpu::ppgtt::{
    Context, Counters, GuestRam, Pool, Store, Tables, mi_store_data_imm, ram_leaf, run_in_context,
};
use bulkhead_test_guests::gpu::{Gpu, Outcome, layout, ram_fill, ram_read32, write64};
use bulkhead_test_guests::{guest_main, println, time};

/// Stores in each timed loop.
const STORES: u64 = 256;
/// The mapping built in the two orders.
const MAPPING_BYTES: u64 = 64 << 20;
/// PT pages it needs.
const PT_PAGES: usize = (MAPPING_BYTES / LARGE_PAGE_SIZE) as usize;
/// RAM pages the mapping's entries cycle through (aliases are fine).
const DATA_PAGES: u64 = 256;

const RING: u64 = layout::PPGTT_AREA;
const POOL: u64 = layout::PPGTT_AREA + 0x1_0000;
const POOL_PAGES: usize = 64;
const BATCH: u64 = layout::PPGTT_AREA + 0x6_0000;
const UNTRACKED: u64 = layout::PPGTT_AREA + 0x6_1000;
const DATA: u64 = layout::PPGTT_AREA + 0x10_0000;
const VA_BATCH: u64 = 0x10_0000;
const VA_TIMED: u64 = 0x10_1000;
/// The mapping: inside one PD (1 GiB), which exists before the context is
/// submitted.
const VA_MAPPING: u64 = 0x4000_0000;

const FAIL_SETUP: u64 = 2;
const FAIL_RUN: u64 = 3;

fn setup_error<E: core::fmt::Debug>(e: E) -> u64 {
    println!("gpu ppgtt bench: setup: {e:?}");
    FAIL_SETUP
}

fn data_leaf(i: u64) -> u64 {
    DATA + (i % DATA_PAGES) * PAGE_SIZE
}

struct Bench {
    gpu: Gpu,
    tables: Tables<GuestRam>,
    context: Context,
}

impl Bench {
    fn traps(&self) -> u32 {
        self.gpu.read(vgpu::INFO_PT_TRAPS)
    }

    /// `STORES` stores alternating two leaves at `slot`; ticks taken.
    fn stores(&self, slot: u64, leaves: [u64; 2]) -> u64 {
        let start = time::counter();
        for i in 0..STORES {
            write64(slot, leaves[(i & 1) as usize]);
        }
        time::counter() - start
    }

    /// A batch that stores `value` in the mapping's last page; checks it.
    fn check_mapping(&mut self, value: u32) -> Result<(), u64> {
        let last = MAPPING_BYTES / PAGE_SIZE - 1;
        let target = data_leaf(last);
        ram_fill(target, 4, 0);
        let mut list = Commands::<8>::new();
        list.push(&mi_store_data_imm(VA_MAPPING + last * PAGE_SIZE, value));
        match run_in_context(&mut self.gpu, self.context, BATCH, VA_BATCH, list.as_slice()) {
            Ok(Outcome::Completed { .. }) if ram_read32(target) == value => Ok(()),
            other => {
                println!("gpu ppgtt bench: a store through the new mapping: {other:?}, found {:#x}, expected {value:#x}", ram_read32(target));
                Err(FAIL_RUN)
            }
        }
    }

    /// Maps `MAPPING_BYTES` with the PT pages `pts`, linking each before
    /// (`link_first`) or after filling it; returns the traps taken.
    fn build(&mut self, pts: &[u64; PT_PAGES], link_first: bool) -> Result<u32, u64> {
        let before = self.traps();
        for (n, &pt) in pts.iter().enumerate() {
            let address = VA_MAPPING + n as u64 * LARGE_PAGE_SIZE;
            if link_first {
                self.tables.link_table(self.context, address, PD, pt, Store::Whole).map_err(setup_error)?;
            }
            for i in 0..ENTRIES as u64 {
                let page = n as u64 * ENTRIES as u64 + i;
                let leaf = ram_leaf(data_leaf(page)).map_err(setup_error)?;
                self.tables.write_entry(pt + i * ENTRY_SIZE, leaf, Store::Whole);
            }
            if !link_first {
                self.tables.link_table(self.context, address, PD, pt, Store::Whole).map_err(setup_error)?;
            }
        }
        Ok(self.traps().wrapping_sub(before))
    }

    fn unlink_all(&mut self) -> Result<(), u64> {
        for n in 0..PT_PAGES as u64 {
            self.tables.unlink_table(self.context, VA_MAPPING + n * LARGE_PAGE_SIZE, PD).map_err(setup_error)?;
        }
        Ok(())
    }
}

fn main() -> Result<(), u64> {
    let mut gpu = Gpu::find().map_err(|e| {
        println!("gpu ppgtt bench: no virtual GPU: {e:?}");
        1u64
    })?;
    layout::check_program_below(layout::PPGTT_AREA).map_err(setup_error)?;
    gpu.enable_interrupts().map_err(setup_error)?;
    gpu.setup_ring(0, RING, 1).map_err(setup_error)?;
    let mut tables = Tables::new(GuestRam, Pool::new(POOL, POOL_PAGES).map_err(setup_error)?);
    let context = tables.new_context().map_err(setup_error)?;
    tables.map_ram(context, VA_BATCH, BATCH, 1, Store::Whole).map_err(setup_error)?;
    tables.map_ram(context, VA_TIMED, DATA, 1, Store::Whole).map_err(setup_error)?;
    let pd = tables.alloc_table().map_err(setup_error)?;
    tables.link_table(context, VA_MAPPING, PDP, pd, Store::Whole).map_err(setup_error)?;
    let mut pts = [0; PT_PAGES];
    for pt in &mut pts {
        *pt = tables.alloc_table().map_err(setup_error)?;
    }
    let mut bench = Bench { gpu, tables, context };
    // Submitted once: its tables are tracked from now on.
    match run_in_context(&mut bench.gpu, context, BATCH, VA_BATCH, &[]) {
        Ok(Outcome::Completed { .. }) => {}
        other => {
            println!("gpu ppgtt bench: the first batch in its context ended {other:?}");
            return Err(FAIL_RUN);
        }
    }
    let start = Counters::read(&bench.gpu);
    println!(
        "gpu ppgtt bench: context PML4 {:#x}: {} table pages tracked, shadow pages {}/{}",
        context.pml4, start.tracked, start.shadow_pages, start.shadow_limit
    );

    // (a) One trapped page-table write against an untracked store.
    let slot = bench.tables.slot(context, VA_TIMED, PT).map_err(setup_error)?;
    let leaves = [ram_leaf(data_leaf(0)).map_err(setup_error)?, ram_leaf(data_leaf(1)).map_err(setup_error)?];
    bench.stores(UNTRACKED, leaves);
    let traps = bench.traps();
    let untracked = bench.stores(UNTRACKED, leaves);
    let untracked_traps = bench.traps().wrapping_sub(traps);
    let traps = bench.traps();
    let trapped = bench.stores(slot, leaves);
    let trapped_traps = bench.traps().wrapping_sub(traps);
    bench.tables.write_entry(slot, leaves[0], Store::Whole);
    let (per_trapped, per_untracked) = (trapped / STORES, untracked / STORES);
    let ratio = trapped * 100 / untracked.max(1);
    println!(
        "gpu ppgtt bench: page-table write: {per_trapped} ticks/store trapped, {per_untracked} ticks/store untracked, ratio {}.{:02} ({STORES} stores each; INFO_PT_TRAPS +{trapped_traps} and +{untracked_traps})",
        ratio / 100,
        ratio % 100
    );

    // (b) 64 MiB in the submitted context, in two orders.
    let linked_first = bench.build(&pts, true)?;
    bench.check_mapping(0x6c69_6e6b)?;
    let shadow_linked = bench.gpu.read(vgpu::INFO_PT_SHADOW_PAGES);
    bench.unlink_all()?;
    let shadow_unlinked = bench.gpu.read(vgpu::INFO_PT_SHADOW_PAGES);
    let filled_first = bench.build(&pts, false)?;
    bench.check_mapping(0x6669_6c6c)?;
    let shadow_filled = bench.gpu.read(vgpu::INFO_PT_SHADOW_PAGES);
    println!(
        "gpu ppgtt bench: {} MiB mapping, PT pages linked first: {linked_first} traps, {shadow_linked} shadow pages",
        MAPPING_BYTES >> 20
    );
    println!(
        "gpu ppgtt bench: {} MiB mapping, PT pages filled first: {filled_first} traps, {shadow_filled} shadow pages ({shadow_unlinked} after unlinking the first build's {PT_PAGES} PT pages)",
        MAPPING_BYTES >> 20
    );
    let taken = bench.gpu.interrupts_taken();
    let _ = bench.gpu.finish();
    println!("gpu ppgtt bench: done ({taken} interrupts taken)");
    Ok(())
}

guest_main!(main);
