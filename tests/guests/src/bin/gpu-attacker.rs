//! The virtual GPU used against the isolation (both architectures). While
//! running as a normal client it tries:
//!
//! - (a) a GTT entry naming the neighbour's RAM (the host address its
//!   configuration backs it with), then XY_COLOR_BLT through it and
//!   XY_SRC_COPY_BLT from it: INFO_GTT_REFUSED must count it, the entry
//!   must read back as written, the blit must complete (it lands on the
//!   scratch page) and the copy must not bring the neighbour's pattern;
//! - (b) the same at the hypervisor's memory, at MMIO, and at local memory
//!   beyond its share;
//! - (c) an XY_COLOR_BLT outside its graphics range, after an
//!   MI_STORE_DATA_IMM in the same submission: INT_REJECTED with
//!   REJECT_OUTSIDE_SHARE naming the blit, RING_HEAD past the submission,
//!   SEQNO unchanged and the store not done;
//! - (d) MI_LOAD_REGISTER_IMM: REJECT_FORBIDDEN, likewise;
//! - (e) only the low half of a GTT entry: the old mapping must stay in
//!   effect until the high half is written.
//!
//! After each attack it keeps going; finally a good blit proves the GPU
//! still works. It passes if every attack failed as expected.

#![no_std]
#![no_main]

use bulkhead_abi::gpu::{gtt, vgpu};
use bulkhead_test_guests::gpu::commands::{
    Commands, Rect, Surface, xy_color_blt, mi_load_register_imm, round_color, xy_src_copy_blt, mi_store_data_imm, mi_user_interrupt,
};
use bulkhead_test_guests::targets::{self, HYPERVISOR_HOST, MMIO, VICTIM_PATTERN};
use bulkhead_test_guests::gpu::{Gpu, GttWrite, Outcome, check_surface, layout, ram_fill, ram_read32, ram_write32};
use bulkhead_test_guests::{guest_main, pattern, println};


/// One-page surfaces: 32 × 32 pixels, 32 bpp.
const SIZE: u16 = 32;
const PITCH: u32 = 128;
const PAGE: u64 = 4096;
const RING_PAGES: u32 = 1;
/// RAM: ring, own page R1, own page R2, marker page, landing page.
const RING: u64 = layout::WORK;
const R1: u64 = layout::WORK + 0x1000;
const R2: u64 = layout::WORK + 0x2000;
const MARKER: u64 = layout::WORK + 0x3000;
const LANDING: u64 = layout::WORK + 0x4000;
/// GTT entries: ring, marker, landing, the probe entry, the half-write entry.
const GTT_RING: u64 = 0;
const GTT_MARKER: u64 = 1;
const GTT_LANDING: u64 = 2;
const GTT_PROBE: u64 = 3;
const GTT_HALF: u64 = 4;

/// Failure codes: setup, a GPU that stopped working; 16 + n for attack n.
const FAIL_SETUP: u64 = 2;
const FAIL_BROKEN: u64 = 3;

struct Attacker {
    gpu: Gpu,
    tag: u64,
    failed: Option<u64>,
}

impl Attacker {
    fn fail(&mut self, code: u64, what: &str) {
        println!("gpu attack: FAILED: {what}");
        self.failed.get_or_insert(code);
    }

    fn surface(&self, index: u64) -> Surface {
        Surface { address: self.gpu.graphics_address(index), pitch: PITCH }
    }

    fn run(&mut self, commands: &[u32]) -> Result<Outcome, u64> {
        self.gpu.run(commands).map_err(|e| {
            println!("gpu attack: the GPU stopped answering: {e:?}");
            FAIL_BROKEN
        })
    }

    /// (a)/(b): `entry` in the probe slot must be refused and read back as
    /// written; a fill through it must complete; a copy from it must not
    /// bring `secret` words.
    fn refused_entry(&mut self, code: u64, what: &str, entry: u64, secret: Option<u64>) -> Result<(), u64> {
        let refused = self.gpu.read(vgpu::INFO_GTT_REFUSED);
        self.gpu.write_gtt(GTT_PROBE, entry, GttWrite::Whole).map_err(|_| FAIL_SETUP)?;
        let back = self.gpu.read_gtt(GTT_PROBE).map_err(|_| FAIL_SETUP)?;
        let refused_now = self.gpu.read(vgpu::INFO_GTT_REFUSED);
        if refused_now != refused.wrapping_add(1) {
            self.fail(code, what);
            println!("gpu attack: {what}: INFO_GTT_REFUSED {refused} -> {refused_now}, expected one more");
        }
        if back != entry {
            self.fail(code, what);
            println!("gpu attack: {what}: the entry reads back {back:#x}, written {entry:#x}");
        }
        let probe = self.surface(GTT_PROBE);
        let landing = self.surface(GTT_LANDING);
        ram_fill(LANDING, PAGE, 0);
        let mut list = Commands::<32>::new();
        list.push(&xy_color_blt(probe, Rect::sized(SIZE, SIZE), round_color(self.tag, 0xa0)))
            .push(&xy_src_copy_blt(landing, Rect::sized(SIZE, SIZE), probe, 0, 0))
            .push(&[mi_user_interrupt()]);
        match self.run(list.as_slice())? {
            Outcome::Completed { .. } => {}
            other => {
                self.fail(code, what);
                println!("gpu attack: {what}: the blit through a refused entry ended {other:?}, expected to complete on scratch");
                if let Outcome::Faulted { .. } = other {
                    return Err(FAIL_BROKEN);
                }
            }
        }
        if let Some(first_word) = secret {
            let leaked = (0..PAGE / 8).any(|w| {
                let word = u64::from(ram_read32(LANDING + 8 * w)) | u64::from(ram_read32(LANDING + 8 * w + 4)) << 32;
                word == pattern::word(first_word + w)
            });
            if leaked {
                self.fail(code, what);
                println!("gpu attack: {what}: the neighbour's pattern came through the GPU");
            }
        }
        if self.failed != Some(code) {
            println!("gpu attack: {what}: refused as expected (INFO_GTT_REFUSED {refused_now}, entry reads back as written, the blit went to scratch)");
        }
        Ok(())
    }

    /// (c)/(d): a submission of a marker store then `bad` must be rejected
    /// with `reason`, naming `bad`, with nothing run.
    fn rejected(&mut self, code: u64, what: &str, bad: &[u32], reason: u32) -> Result<(), u64> {
        ram_write32(MARKER, 0);
        let seqno = self.gpu.read(vgpu::SEQNO);
        let rejected = self.gpu.read(vgpu::INFO_REJECTED);
        let marker = mi_store_data_imm(self.gpu.graphics_address(GTT_MARKER), 0xbad0_0000 | code as u32);
        let mut list = Commands::<32>::new();
        list.push(&marker).push(bad).push(&[mi_user_interrupt()]);
        let start = self.gpu.ring_tail().unwrap_or(0);
        let outcome = self.run(list.as_slice())?;
        let head = self.gpu.read(vgpu::RING_HEAD) & vgpu::RING_OFFSET_MASK;
        let tail = self.gpu.ring_tail().unwrap_or(0);
        let bad_offset = (start + 4 * marker.len() as u32) % (RING_PAGES * PAGE as u32);
        let mut ok = true;
        match outcome {
            Outcome::Rejected { code: found, offset, header, .. } => {
                if found != reason || offset != bad_offset || header != bad[0] {
                    ok = false;
                    println!(
                        "gpu attack: {what}: rejected with code {found} at ring offset {offset:#x} header {header:#x}; expected code {reason} at {bad_offset:#x} header {:#x}",
                        bad[0]
                    );
                }
            }
            other => {
                ok = false;
                println!("gpu attack: {what}: ended {other:?}, expected a rejection");
            }
        }
        if head != tail {
            ok = false;
            println!("gpu attack: {what}: RING_HEAD {head:#x}, expected it past the submission at {tail:#x}");
        }
        if self.gpu.read(vgpu::SEQNO) != seqno || ram_read32(MARKER) != 0 {
            ok = false;
            println!("gpu attack: {what}: part of the rejected submission ran");
        }
        if self.gpu.read(vgpu::INFO_REJECTED) != rejected.wrapping_add(1) {
            ok = false;
            println!("gpu attack: {what}: INFO_REJECTED did not count it");
        }
        if ok {
            println!("gpu attack: {what}: rejected as expected (code {reason}, RING_HEAD advanced, nothing ran)");
        } else {
            self.fail(code, what);
        }
        Ok(())
    }

    /// (e): only the low half of a new entry must not take effect.
    fn half_entry(&mut self, code: u64) -> Result<(), u64> {
        let what = "(e) a half-written GTT entry";
        let old = gtt::present_entry(R1).ok_or(FAIL_SETUP)?;
        let new = gtt::present_entry(R2).ok_or(FAIL_SETUP)?;
        self.gpu.write_gtt(GTT_HALF, old, GttWrite::Whole).map_err(|_| FAIL_SETUP)?;
        let (first, second) = (round_color(self.tag, 0xe1), round_color(self.tag, 0xe2));
        ram_fill(R1, PAGE, 0);
        ram_fill(R2, PAGE, 0);
        self.gpu.write_gtt_low(GTT_HALF, new as u32).map_err(|_| FAIL_SETUP)?;
        let half = self.surface(GTT_HALF);
        let fill = |color| {
            let mut list = Commands::<16>::new();
            list.push(&xy_color_blt(half, Rect::sized(SIZE, SIZE), color)).push(&[mi_user_interrupt()]);
            list
        };
        let list = fill(first);
        let held = matches!(self.run(list.as_slice())?, Outcome::Completed { .. })
            && ram_read32(R1) == first
            && ram_read32(R2) == 0;
        self.gpu.write(vgpu::GTT_OFFSET + GTT_HALF * gtt::ENTRY_SIZE + 4, (new >> 32) as u32);
        let list = fill(second);
        let applied = matches!(self.run(list.as_slice())?, Outcome::Completed { .. })
            && ram_read32(R2) == second
            && ram_read32(R1) == first
            && self.gpu.read_gtt(GTT_HALF).map_err(|_| FAIL_SETUP)? == new;
        if held && applied {
            println!("gpu attack: {what}: held until its high half came, then applied");
        } else {
            self.fail(code, what);
            println!("gpu attack: {what}: held {held}, applied after the high half {applied}");
        }
        Ok(())
    }
}

fn main() -> Result<(), u64> {
    let mut gpu = Gpu::find().map_err(|e| {
        println!("gpu attack: no virtual GPU: {e:?}");
        1u64
    })?;
    layout::check_program_below_work().map_err(|_| FAIL_SETUP)?;
    let info = gpu.info();
    let setup = |e| {
        println!("gpu attack: setup: {e:?}");
        FAIL_SETUP
    };
    gpu.enable_interrupts().map_err(setup)?;
    gpu.setup_ring(GTT_RING, RING, RING_PAGES).map_err(setup)?;
    gpu.map_ram(GTT_MARKER, MARKER, 1, GttWrite::Whole).map_err(setup)?;
    gpu.map_ram(GTT_LANDING, LANDING, 1, GttWrite::Whole).map_err(setup)?;
    println!("gpu attack: graphics base {:#x}, {} GTT entries, local memory {:#x} bytes", info.graphics_base, info.gtt_entries, info.local_size);
    targets::wait_for_victim();
    let mut attacker = Attacker { gpu, tag: info.graphics_base, failed: None };

    let entry = |address: u64| address | gtt::PRESENT;
    attacker.refused_entry(16, "(a) GTT entry at the neighbour's RAM", entry(VICTIM_PATTERN), Some(0))?;
    attacker.refused_entry(17, "(b) GTT entry at the hypervisor's memory", entry(HYPERVISOR_HOST), None)?;
    attacker.refused_entry(19, "(b) GTT entry at MMIO", entry(MMIO), None)?;
    let beyond = (info.local_size + PAGE - 1) & !(PAGE - 1);
    attacker.refused_entry(20, "(b) GTT entry at local memory beyond its share", entry(beyond) | vgpu::GTT_LOCAL_MEMORY, None)?;

    let outside = Surface { address: info.graphics_base + info.gtt_entries * PAGE, pitch: PITCH };
    let blit = xy_color_blt(outside, Rect::sized(SIZE, SIZE), round_color(attacker.tag, 0xc0));
    attacker.rejected(21, "(c) XY_COLOR_BLT beyond its graphics range", &blit, vgpu::REJECT_OUTSIDE_SHARE)?;
    if info.graphics_base >= PAGE {
        let below = Surface { address: info.graphics_base - PAGE, pitch: PITCH };
        let blit = xy_color_blt(below, Rect::sized(SIZE, SIZE), round_color(attacker.tag, 0xc1));
        attacker.rejected(22, "(c) XY_COLOR_BLT below its graphics range", &blit, vgpu::REJECT_OUTSIDE_SHARE)?;
    }
    let lri = mi_load_register_imm(vgpu::RING_START as u32, 0);
    attacker.rejected(23, "(d) MI_LOAD_REGISTER_IMM", &lri, vgpu::REJECT_FORBIDDEN)?;
    attacker.half_entry(24)?;

    // The GPU still works for it.
    attacker.gpu.map_ram(GTT_PROBE, R1, 1, GttWrite::Whole).map_err(setup)?;
    ram_fill(R1, PAGE, 0);
    let color = round_color(attacker.tag, 0xf0);
    let mut list = Commands::<16>::new();
    list.push(&xy_color_blt(attacker.surface(GTT_PROBE), Rect::sized(SIZE, SIZE), color)).push(&[mi_user_interrupt()]);
    let outcome = attacker.run(list.as_slice())?;
    let good = matches!(outcome, Outcome::Completed { .. })
        && check_surface(R1, PITCH, u32::from(SIZE), u32::from(SIZE), |_, _| color).is_ok();
    if !good {
        println!("gpu attack: the good blit after the attacks did not work: {outcome:?}");
        return Err(FAIL_BROKEN);
    }
    let taken = attacker.gpu.interrupts_taken();
    let _ = attacker.gpu.finish();
    println!("gpu attack: a good blit after the attacks: correct ({taken} interrupts taken, SEQNO {})", attacker.gpu.read(vgpu::SEQNO));
    match attacker.failed {
        None => {
            println!("gpu attack: passed: every attack failed as expected");
            Ok(())
        }
        Some(code) => Err(code),
    }
}

guest_main!(main);
