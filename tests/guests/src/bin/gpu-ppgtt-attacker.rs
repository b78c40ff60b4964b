//! Per-process GPU page tables used against the isolation (both
//! architectures). In a context of its own (submitted once, so that the
//! hypervisor tracks its tables) it tries:
//!
//! - (a)/(b) a leaf at the neighbour's RAM, at the hypervisor's memory and
//!   at MMIO (the addresses `gpu-attacker` uses); (c) a leaf at one of its
//!   own page-table pages (to forge entries with a fill): each time
//!   INFO_PT_REFUSED must grow (`>=`: an entry counts each time it is
//!   shadowed), a fill through the leaf and a copy from it must complete
//!   (on the scratch page), the copy must not bring the neighbour's
//!   pattern and the attacked table page must be intact;
//! - (d) a PD entry naming the neighbour's RAM as a page table: refused,
//!   no pattern comes through (the batch may complete or fault);
//! - (e) MI_LOAD_REGISTER_IMM of PDP0 inside a PPGTT batch: a GPU fault
//!   FAULT_PRIVILEGED, the store after it not done;
//! - (f) a PPGTT batch with no PDP0 load, and a PDP0 load of a PML4 outside
//!   its RAM: REJECT_CONTEXT, nothing of the submission run;
//! - (g) a PT page unlinked (PD entry cleared) and reused as ordinary
//!   memory: INFO_PT_TRACKED one less, its stores do not trap
//!   (INFO_PT_TRAPS unchanged) while stores to a still-linked table page
//!   trap once each.
//!
//! After each attack it keeps going; finally a good batch proves the GPU
//! still works. It passes if every attack failed as expected.

#![no_std]
#![no_main]

use bulkhead_abi::gpu::ppgtt::{self as format, ENTRIES, ENTRY_SIZE, FAULT_PRIVILEGED, PAGE_SIZE, PD, PRESENT, PT};
use bulkhead_abi::gpu::vgpu;
use bulkhead_test_guests::gpu::commands::{
    Commands, Rect, Surface, mi_store_data_imm as global_store, mi_user_interrupt, round_color, xy_color_blt, xy_src_copy_blt,
};
use bulkhead_test_guests::gpu::ppgtt::{
    Context, GuestRam, Pool, Store, Tables, mi_store_data_imm, ram_leaf, run_in_context, write_batch,
};
use bulkhead_test_guests::targets::{self, HYPERVISOR_HOST, MMIO, VICTIM_PATTERN};
use bulkhead_test_guests::gpu::{Gpu, GttWrite, Outcome, check_surface, layout, ram_fill, ram_read32, ram_write32, write64};
use bulkhead_abi::gpu::encode::{load_pdp0, mi_batch_buffer_start};
use bulkhead_test_guests::{guest_main, pattern, println};


/// One-page surfaces: 32 × 32 pixels, 32 bpp.
const SIZE: u16 = 32;
const PITCH: u32 = 128;
const RING_PAGES: u32 = 1;
const POOL_PAGES: usize = 32;
/// Its RAM.
const RING: u64 = layout::PPGTT_AREA;
const POOL: u64 = layout::PPGTT_AREA + 0x1_0000;
const BATCH: u64 = layout::PPGTT_AREA + 0x6_0000;
const MARK: u64 = layout::PPGTT_AREA + 0x6_1000;
const LANDING: u64 = layout::PPGTT_AREA + 0x6_2000;
const OWN: u64 = layout::PPGTT_AREA + 0x6_3000;
/// GTT entries: ring, marker (for the ring's own stores).
const GTT_RING: u64 = 0;
const GTT_MARK: u64 = 1;
/// Graphics (per-process) addresses.
const VA_BATCH: u64 = 0x10_0000;
const VA_MARK: u64 = 0x10_1000;
const VA_LANDING: u64 = 0x10_2000;
const VA_PROBE: u64 = 0x10_3000;
const VA_FREE: u64 = 0x40_0000;
const VA_PROBE_TABLE: u64 = 0x80_0000;

const FAIL_SETUP: u64 = 2;
const FAIL_BROKEN: u64 = 3;

fn setup_error<E: core::fmt::Debug>(e: E) -> u64 {
    println!("gpu ppgtt attack: setup: {e:?}");
    FAIL_SETUP
}

struct Attacker {
    gpu: Gpu,
    tables: Tables<GuestRam>,
    context: Context,
    tag: u64,
    failed: Option<u64>,
}

impl Attacker {
    fn fail(&mut self, code: u64, what: &str) {
        println!("gpu ppgtt attack: FAILED: {what}");
        self.failed.get_or_insert(code);
    }

    fn run_batch(&mut self, commands: &[u32]) -> Result<Outcome, u64> {
        run_in_context(&mut self.gpu, self.context, BATCH, VA_BATCH, commands).map_err(|e| {
            println!("gpu ppgtt attack: the GPU stopped answering: {e:?}");
            FAIL_BROKEN
        })
    }

    fn run_ring(&mut self, dwords: &[u32]) -> Result<Outcome, u64> {
        self.gpu.run(dwords).map_err(|e| {
            println!("gpu ppgtt attack: the GPU stopped answering: {e:?}");
            FAIL_BROKEN
        })
    }

    fn probe_slot(&self) -> Result<u64, u64> {
        self.tables.slot(self.context, VA_PROBE, PT).map_err(setup_error)
    }

    /// Whether the landing page holds any of the neighbour's pattern words.
    fn pattern_leaked(&self) -> bool {
        (0..PAGE_SIZE / 8).any(|w| {
            let word = u64::from(ram_read32(LANDING + 8 * w)) | u64::from(ram_read32(LANDING + 8 * w + 4)) << 32;
            (0..pattern::WORDS).step_by(512).any(|first| word == pattern::word(first + w))
        })
    }

    /// A fill of VA_PROBE then a copy VA_PROBE → VA_LANDING.
    fn probe_batch(&self, color: u32) -> Commands<32> {
        let probe = Surface { address: VA_PROBE, pitch: PITCH };
        let landing = Surface { address: VA_LANDING, pitch: PITCH };
        let mut list = Commands::<32>::new();
        list.push(&xy_color_blt(probe, Rect::sized(SIZE, SIZE), color)).push(&xy_src_copy_blt(landing, Rect::sized(SIZE, SIZE), probe, 0, 0));
        list
    }

    /// (a)–(c): the probe leaf set to `leaf` must be refused; the batch
    /// must complete; nothing of the pattern may come back; `guarded`
    /// (a page it can read) must keep its contents.
    fn refused_leaf(&mut self, code: u64, what: &str, leaf: u64, guarded: Option<u64>) -> Result<(), u64> {
        let refused = self.gpu.read(vgpu::INFO_PT_REFUSED);
        let slot = self.probe_slot()?;
        self.tables.write_entry(slot, leaf, Store::Whole);
        let mut snapshot = [0u64; ENTRIES];
        if let Some(page) = guarded {
            for (i, word) in snapshot.iter_mut().enumerate() {
                *word = self.tables.entry(page + i as u64 * ENTRY_SIZE);
            }
        }
        ram_fill(LANDING, PAGE_SIZE, 0);
        // The fill's colour is a forged present entry naming the neighbour.
        let list = self.probe_batch(VICTIM_PATTERN as u32 | PRESENT as u32);
        let outcome = self.run_batch(list.as_slice())?;
        let refused_now = self.gpu.read(vgpu::INFO_PT_REFUSED);
        let mut ok = true;
        if !matches!(outcome, Outcome::Completed { .. }) {
            ok = false;
            println!("gpu ppgtt attack: {what}: the batch ended {outcome:?}, expected to complete on scratch");
            if let Outcome::Faulted { .. } = outcome {
                self.gpu.clear_fault();
            }
        }
        if refused_now.wrapping_sub(refused) < 1 {
            ok = false;
            println!("gpu ppgtt attack: {what}: INFO_PT_REFUSED {refused} -> {refused_now}, expected at least one more");
        }
        if self.pattern_leaked() {
            ok = false;
            println!("gpu ppgtt attack: {what}: the neighbour's pattern came through the GPU");
        }
        if let Some(page) = guarded {
            let changed = (0..ENTRIES).filter(|&i| self.tables.entry(page + i as u64 * ENTRY_SIZE) != snapshot[i]).count();
            if changed != 0 {
                ok = false;
                println!("gpu ppgtt attack: {what}: {changed} entries of its table page at {page:#x} changed: the GPU wrote a page table");
            }
        }
        self.tables.write_entry(slot, ram_leaf(OWN).map_err(setup_error)?, Store::Whole);
        if ok {
            println!("gpu ppgtt attack: {what}: refused as expected (INFO_PT_REFUSED {refused} -> {refused_now}, the batch went to scratch)");
        } else {
            self.fail(code, what);
        }
        Ok(())
    }

    /// (d): a PD entry naming the neighbour's RAM as a PT.
    fn refused_table(&mut self, code: u64, what: &str) -> Result<(), u64> {
        let refused = self.gpu.read(vgpu::INFO_PT_REFUSED);
        let slot = self.tables.link_table(self.context, VA_PROBE_TABLE, PD, VICTIM_PATTERN, Store::Whole).map_err(setup_error)?;
        ram_fill(LANDING, PAGE_SIZE, 0);
        let landing = Surface { address: VA_LANDING, pitch: PITCH };
        let mut list = Commands::<32>::new();
        list.push(&xy_src_copy_blt(landing, Rect::sized(SIZE, SIZE), Surface { address: VA_PROBE_TABLE, pitch: PITCH }, 0, 0));
        let outcome = self.run_batch(list.as_slice())?;
        if let Outcome::Faulted { .. } = outcome {
            self.gpu.clear_fault();
        }
        let refused_now = self.gpu.read(vgpu::INFO_PT_REFUSED);
        let mut ok = matches!(outcome, Outcome::Completed { .. } | Outcome::Faulted { .. });
        if refused_now.wrapping_sub(refused) < 1 {
            ok = false;
            println!("gpu ppgtt attack: {what}: INFO_PT_REFUSED {refused} -> {refused_now}, expected at least one more");
        }
        if self.pattern_leaked() {
            ok = false;
            println!("gpu ppgtt attack: {what}: the neighbour's pattern came through the GPU");
        }
        self.tables.write_entry(slot, 0, Store::Whole);
        if ok {
            println!("gpu ppgtt attack: {what}: refused as expected (INFO_PT_REFUSED {refused} -> {refused_now}, the batch ended {})", match outcome {
                Outcome::Completed { .. } => "on scratch",
                _ => "in a fault",
            });
        } else {
            self.fail(code, what);
            println!("gpu ppgtt attack: {what}: ended {outcome:?}");
        }
        Ok(())
    }

    /// (e): MI_LOAD_REGISTER_IMM of PDP0 in a PPGTT batch.
    fn privileged(&mut self, code: u64, what: &str) -> Result<(), u64> {
        ram_write32(MARK, 0);
        let mut list = Commands::<16>::new();
        list.push(&load_pdp0(VICTIM_PATTERN)).push(&mi_store_data_imm(VA_MARK, 0xbad0_0000 | code as u32));
        let outcome = self.run_batch(list.as_slice())?;
        let ok = matches!(outcome, Outcome::Faulted { fault, .. } if fault == FAULT_PRIVILEGED) && ram_read32(MARK) == 0;
        self.gpu.clear_fault();
        if ok {
            println!("gpu ppgtt attack: {what}: faulted as expected (FAULT_STATUS {FAULT_PRIVILEGED}, nothing after it ran)");
        } else {
            self.fail(code, what);
            println!("gpu ppgtt attack: {what}: ended {outcome:?}, marker {:#x}; expected fault {FAULT_PRIVILEGED} and no marker", ram_read32(MARK));
        }
        Ok(())
    }

    /// (f): a marker store then `bad` in the ring must be rejected with
    /// REJECT_CONTEXT, with nothing run; `named` is the command the
    /// rejection must name (its offset from the start of `bad` and its
    /// header), when the contract fixes it.
    fn rejected(&mut self, code: u64, what: &str, bad: &[u32], named: Option<usize>) -> Result<(), u64> {
        ram_write32(MARK, 0);
        let seqno = self.gpu.read(vgpu::SEQNO);
        let rejected = self.gpu.read(vgpu::INFO_REJECTED);
        let marker = global_store(self.gpu.graphics_address(GTT_MARK), 0xbad0_0000 | code as u32);
        let mut list = Commands::<32>::new();
        list.push(&marker).push(bad).push(&[mi_user_interrupt()]);
        let start = self.gpu.ring_tail().unwrap_or(0);
        let outcome = self.run_ring(list.as_slice())?;
        let head = self.gpu.read(vgpu::RING_HEAD) & vgpu::RING_OFFSET_MASK;
        let tail = self.gpu.ring_tail().unwrap_or(0);
        let mut ok = true;
        match outcome {
            Outcome::Rejected { code: found, offset, header, .. } => {
                let expected = named.map(|i| ((start + 4 * (marker.len() + i) as u32) % (RING_PAGES * PAGE_SIZE as u32), bad[i]));
                if found != vgpu::REJECT_CONTEXT || expected.is_some_and(|e| e != (offset, header)) {
                    ok = false;
                    println!(
                        "gpu ppgtt attack: {what}: rejected with code {found} at ring offset {offset:#x} header {header:#x}; expected code {} at {expected:x?}",
                        vgpu::REJECT_CONTEXT
                    );
                }
            }
            other => {
                ok = false;
                println!("gpu ppgtt attack: {what}: ended {other:?}, expected a rejection");
            }
        }
        if head != tail {
            ok = false;
            println!("gpu ppgtt attack: {what}: RING_HEAD {head:#x}, expected it past the submission at {tail:#x}");
        }
        if self.gpu.read(vgpu::SEQNO) != seqno || ram_read32(MARK) != 0 {
            ok = false;
            println!("gpu ppgtt attack: {what}: part of the rejected submission ran");
        }
        if self.gpu.read(vgpu::INFO_REJECTED) != rejected.wrapping_add(1) {
            ok = false;
            println!("gpu ppgtt attack: {what}: INFO_REJECTED did not count it");
        }
        if ok {
            println!("gpu ppgtt attack: {what}: rejected as expected (code {}, RING_HEAD advanced, nothing ran)", vgpu::REJECT_CONTEXT);
        } else {
            self.fail(code, what);
        }
        Ok(())
    }

    /// (g): a freed PT page reused as memory does not trap; a used one does.
    fn freed_table(&mut self, code: u64, what: &str) -> Result<(), u64> {
        const STORES: u64 = 16;
        let mut ok = true;
        let traps = self.gpu.read(vgpu::INFO_PT_TRAPS);
        // A store to the linked (tracked) PT page: one trap.
        self.tables.map_4k(self.context, VA_FREE + PAGE_SIZE, ram_leaf(OWN).map_err(setup_error)?, Store::Whole).map_err(setup_error)?;
        let after_store = self.gpu.read(vgpu::INFO_PT_TRAPS);
        let tracked = self.gpu.read(vgpu::INFO_PT_TRACKED);
        let freed = self.tables.unlink_table(self.context, VA_FREE, PD).map_err(setup_error)?;
        let after_unlink = self.gpu.read(vgpu::INFO_PT_TRAPS);
        let tracked_now = self.gpu.read(vgpu::INFO_PT_TRACKED);
        if after_store != traps.wrapping_add(1) || after_unlink != after_store.wrapping_add(1) || tracked_now != tracked.wrapping_sub(1) {
            ok = false;
            println!(
                "gpu ppgtt attack: {what}: INFO_PT_TRAPS {traps} -> {after_store} (PT store) -> {after_unlink} (PD entry cleared), INFO_PT_TRACKED {tracked} -> {tracked_now}; expected +1, +1, -1"
            );
        }
        // Ordinary memory now: 8-byte stores as to a table, then 4-byte ones.
        for i in 0..STORES {
            write64(freed + i * ENTRY_SIZE, 0x0dd0_0000_0000_0000 | i);
        }
        ram_fill(freed + STORES * ENTRY_SIZE, PAGE_SIZE - STORES * ENTRY_SIZE, 0x5a5a_5a5a);
        let after_reuse = self.gpu.read(vgpu::INFO_PT_TRAPS);
        let reads_back = (0..STORES).all(|i| self.tables.entry(freed + i * ENTRY_SIZE) == 0x0dd0_0000_0000_0000 | i)
            && ram_read32(freed + PAGE_SIZE - 4) == 0x5a5a_5a5a;
        if after_reuse != after_unlink || !reads_back {
            ok = false;
            println!("gpu ppgtt attack: {what}: INFO_PT_TRAPS {after_unlink} -> {after_reuse} over stores to the freed page (expected no change), reads back {reads_back}");
        }
        // Stores to a still-linked table page: one trap each.
        let slot = self.probe_slot()?;
        let leaf = ram_leaf(OWN).map_err(setup_error)?;
        for _ in 0..3 {
            self.tables.write_entry(slot, leaf, Store::Whole);
        }
        let after_used = self.gpu.read(vgpu::INFO_PT_TRAPS);
        if after_used != after_reuse.wrapping_add(3) {
            ok = false;
            println!("gpu ppgtt attack: {what}: INFO_PT_TRAPS {after_reuse} -> {after_used} over 3 stores to a used table page, expected +3");
        }
        if ok {
            println!(
                "gpu ppgtt attack: {what}: its stores no longer trap ({} stores, INFO_PT_TRAPS stays {after_reuse}), a used table page's still do (+3 for 3)",
                STORES + (PAGE_SIZE - STORES * ENTRY_SIZE) / 4
            );
        } else {
            self.fail(code, what);
        }
        Ok(())
    }

    /// A good batch through the probe leaf at its own page.
    fn good_batch(&mut self, color: u32) -> Result<bool, u64> {
        ram_fill(OWN, PAGE_SIZE, 0);
        let mut list = Commands::<16>::new();
        list.push(&xy_color_blt(Surface { address: VA_PROBE, pitch: PITCH }, Rect::sized(SIZE, SIZE), color));
        let outcome = self.run_batch(list.as_slice())?;
        Ok(matches!(outcome, Outcome::Completed { .. }) && check_surface(OWN, PITCH, SIZE.into(), SIZE.into(), |_, _| color).is_ok())
    }
}

fn main() -> Result<(), u64> {
    let mut gpu = Gpu::find().map_err(|e| {
        println!("gpu ppgtt attack: no virtual GPU: {e:?}");
        1u64
    })?;
    layout::check_program_below(layout::PPGTT_AREA).map_err(setup_error)?;
    let info = gpu.info();
    gpu.enable_interrupts().map_err(setup_error)?;
    gpu.setup_ring(GTT_RING, RING, RING_PAGES).map_err(setup_error)?;
    gpu.map_ram(GTT_MARK, MARK, 1, GttWrite::Whole).map_err(setup_error)?;
    let mut tables = Tables::new(GuestRam, Pool::new(POOL, POOL_PAGES).map_err(setup_error)?);
    let context = tables.new_context().map_err(setup_error)?;
    for (address, page) in [(VA_BATCH, BATCH), (VA_MARK, MARK), (VA_LANDING, LANDING), (VA_PROBE, OWN), (VA_FREE, OWN)] {
        tables.map_ram(context, address, page, 1, Store::Whole).map_err(setup_error)?;
    }
    println!(
        "gpu ppgtt attack: graphics base {:#x}, {} GTT entries, local memory {:#x} bytes, context PML4 {:#x}",
        info.graphics_base, info.gtt_entries, info.local_size, context.pml4
    );
    targets::wait_for_victim();
    let mut attacker = Attacker { gpu, tables, context, tag: info.graphics_base, failed: None };
    // Submitted once: from now on its table pages are tracked.
    if !attacker.good_batch(round_color(attacker.tag, 0x10))? {
        println!("gpu ppgtt attack: the first batch in its context did not work");
        return Err(FAIL_BROKEN);
    }

    let leaf = |address: u64| address | PRESENT;
    attacker.refused_leaf(16, "(a) leaf at the neighbour's RAM", leaf(VICTIM_PATTERN), None)?;
    attacker.refused_leaf(17, "(b) leaf at the hypervisor's memory", leaf(HYPERVISOR_HOST), None)?;
    attacker.refused_leaf(18, "(b) leaf at MMIO", leaf(MMIO), None)?;
    let probe_table = attacker.probe_slot()? & format::ADDRESS_MASK;
    attacker.refused_leaf(19, "(c) leaf at its own page-table page", leaf(probe_table), Some(probe_table))?;
    attacker.refused_table(20, "(d) PD entry naming the neighbour's RAM as a PT")?;
    attacker.privileged(21, "(e) MI_LOAD_REGISTER_IMM of PDP0 in a PPGTT batch")?;
    write_batch(BATCH, &[]);
    let start = mi_batch_buffer_start(VA_BATCH, true);
    attacker.rejected(22, "(f) PPGTT batch without a PDP0 load", &start, Some(0))?;
    let mut outside = Commands::<16>::new();
    outside.push(&load_pdp0(VICTIM_PATTERN)).push(&start);
    attacker.rejected(23, "(f) PDP0 load of a PML4 outside its RAM", outside.as_slice(), None)?;
    attacker.freed_table(24, "(g) a freed PT page reused as memory")?;

    let color = round_color(attacker.tag, 0xf0);
    if !attacker.good_batch(color)? {
        println!("gpu ppgtt attack: the good batch after the attacks did not work");
        return Err(FAIL_BROKEN);
    }
    let taken = attacker.gpu.interrupts_taken();
    let _ = attacker.gpu.finish();
    println!(
        "gpu ppgtt attack: a good batch after the attacks: correct ({taken} interrupts taken, SEQNO {}, INFO_PT_REFUSED {})",
        attacker.gpu.read(vgpu::SEQNO),
        attacker.gpu.read(vgpu::INFO_PT_REFUSED)
    );
    match attacker.failed {
        None => {
            println!("gpu ppgtt attack: passed: every attack failed as expected");
            Ok(())
        }
        Some(code) => Err(code),
    }
}

guest_main!(main);
