//! Host tests of the device: GTT translation, each command's effect on (fake) memory, ring
//! wrap, batches, every fault path, and a randomized no-panic run (which also covers PPGTT
//! batches and MI_LOAD_REGISTER_IMM; `tests/ppgtt.rs` tests those).

use gpu_model::command::{Command, decode};
use gpu_model::gpu::{Fault, Gpu, Physical};
use gpu_model::memory::{Memory, VecMemory};
use gpu_model::regs::*;

const RAM_BASE: u64 = 0x4000_0000;
const RAM_SIZE: usize = 1 << 20;
const LOCAL_SIZE: usize = 1 << 20;
/// Graphics address of the ring (one page) and of the first free page after it.
const RING: u64 = 0;
const BATCH: u64 = 0x10_000;
const SURFACE: u64 = 0x20_000;

type TestGpu = Gpu<VecMemory, VecMemory, VecMemory>;

fn gpu() -> TestGpu {
    let mut g = Gpu::new(
        VecMemory::zeroed(REG_BAR_SIZE as usize),
        VecMemory::zeroed(LOCAL_SIZE),
        VecMemory::zeroed(RAM_SIZE),
        RAM_BASE,
    );
    g.reset();
    g
}

fn map(g: &mut TestGpu, graphics: u64, entry: u64) {
    let index = graphics / PAGE_SIZE;
    assert!(g.regs_mut().write_u64(GTT_OFFSET + index * GTT_ENTRY_SIZE, entry));
}

/// Map `pages` graphics pages at `graphics` onto guest RAM at `ram_offset`.
fn map_ram(g: &mut TestGpu, graphics: u64, ram_offset: u64, pages: u64) {
    for i in 0..pages {
        map(g, graphics + i * PAGE_SIZE, (RAM_BASE + ram_offset + i * PAGE_SIZE) | GTT_PRESENT);
    }
}

fn map_local(g: &mut TestGpu, graphics: u64, local_offset: u64, pages: u64) {
    for i in 0..pages {
        map(g, graphics + i * PAGE_SIZE, (local_offset + i * PAGE_SIZE) | GTT_PRESENT | GTT_LOCAL_MEMORY);
    }
}

fn reg(g: &TestGpu, offset: u64) -> u32 {
    g.regs().read_u32(offset).unwrap()
}

fn set(g: &mut TestGpu, offset: u64, value: u32) {
    assert!(g.regs_mut().write_u32(offset, value));
}

/// A one-page ring at graphics 0 backed by RAM offset 0, enabled, head = tail = 0.
fn with_ring() -> TestGpu {
    let mut g = gpu();
    map_ram(&mut g, RING, 0, 1);
    set(&mut g, RING_START, RING as u32);
    set(&mut g, RING_CTL, RING_CTL_ENABLE); // 1 page
    g
}

/// Append commands at the current tail (with wrap) and advance the tail.
fn submit(g: &mut TestGpu, dwords: &[u32]) {
    let mut tail = u64::from(reg(g, RING_TAIL));
    for d in dwords {
        g.write_graphics(RING + tail, &d.to_le_bytes()).unwrap();
        tail = (tail + 4) % PAGE_SIZE;
    }
    set(g, RING_TAIL, tail as u32);
}

fn write_dwords(g: &mut TestGpu, at: u64, dwords: &[u32]) {
    for (i, d) in dwords.iter().enumerate() {
        g.write_graphics(at + i as u64 * 4, &d.to_le_bytes()).unwrap();
    }
}

fn store(address: u64, value: u32) -> [u32; 4] {
    [mi_instr(MI_STORE_DATA_IMM, 2), address as u32, (address >> 32) as u32, value]
}

fn bbs(address: u64, second_level: bool) -> [u32; 3] {
    let flags = if second_level { MI_BATCH_SECOND_LEVEL } else { 0 };
    [mi_instr(MI_BATCH_BUFFER_START, 1) | flags, address as u32, (address >> 32) as u32]
}

const BBE: u32 = mi_instr(MI_BATCH_BUFFER_END, 0);

fn fault(g: &TestGpu) -> (u32, u64, u32) {
    let address = u64::from(reg(g, FAULT_ADDRESS_HI)) << 32 | u64::from(reg(g, FAULT_ADDRESS_LO));
    (reg(g, FAULT_STATUS), address, reg(g, FAULT_COMMAND))
}

fn ram_u32(g: &TestGpu, offset: u64) -> u32 {
    g.ram().read_u32(offset).unwrap()
}

#[test]
fn reset_sets_identification_registers() {
    let g = gpu();
    assert_eq!(reg(&g, GPU_ID), GPU_ID_VALUE);
    assert_eq!(reg(&g, GPU_VERSION), GPU_VERSION_VALUE);
    assert_eq!(reg(&g, LMEM_SIZE_LO), LOCAL_SIZE as u32);
    assert_eq!(reg(&g, GTT_BASE), 0x10_0000);
    assert_eq!(reg(&g, GTT_SIZE), 0x2_0000);
    assert_eq!(reg(&g, LMEM_OFFSET), 0x20_0000);
    assert_eq!(shared_bar_size(64 << 20), Some(128 << 20));
    assert_eq!(shared_bar_size(u64::MAX), None);
}

#[test]
fn gtt_translation() {
    let mut g = gpu();
    map(&mut g, 0x5000, (RAM_BASE + 0x3000) | GTT_PRESENT);
    map(&mut g, 0x6000, 0x7000 | GTT_PRESENT | GTT_LOCAL_MEMORY);
    // Bits above 38 and the low flag bits are not part of the address.
    map(&mut g, 0x7000, (1 << 40) | (RAM_BASE + 0x1000) | GTT_PRESENT | 0x4);
    assert_eq!(g.translate(0x5123), Ok(Physical::Ram(0x3123)));
    assert_eq!(g.translate(0x6fff), Ok(Physical::Local(0x7fff)));
    assert_eq!(g.translate(0x7008), Ok(Physical::Ram(0x1008)));
    let f = |code, address| Err(Fault { code, address });
    assert_eq!(g.translate(0x8000), f(FAULT_NOT_PRESENT, 0x8000));
    assert_eq!(g.translate(GRAPHICS_ADDRESS_SPACE), f(FAULT_OUTSIDE_GTT, GRAPHICS_ADDRESS_SPACE));
    assert_eq!(g.translate(u64::MAX), f(FAULT_OUTSIDE_GTT, u64::MAX));
    // Below the RAM base, past its end, past local memory.
    map(&mut g, 0x9000, 0x1000 | GTT_PRESENT);
    map(&mut g, 0xa000, (RAM_BASE + RAM_SIZE as u64) | GTT_PRESENT);
    map(&mut g, 0xb000, LOCAL_SIZE as u64 | GTT_PRESENT | GTT_LOCAL_MEMORY);
    assert_eq!(g.translate(0x9000), f(FAULT_OUTSIDE_MEMORY, 0x9000));
    assert_eq!(g.translate(0xa000), f(FAULT_OUTSIDE_MEMORY, 0xa000));
    assert_eq!(g.translate(0xb000), f(FAULT_OUTSIDE_MEMORY, 0xb000));
}

#[test]
fn graphics_accesses_follow_the_gtt_page_by_page() {
    let mut g = gpu();
    // Two graphics-contiguous pages on non-contiguous, different memories.
    map_ram(&mut g, 0x1000, 0x8000, 1);
    map_local(&mut g, 0x2000, 0x3000, 1);
    g.write_graphics(0x1ffe, &[1, 2, 3, 4]).unwrap();
    assert_eq!(g.ram().0[0x8ffe..0x9000], [1, 2]);
    assert_eq!(g.local().0[0x3000..0x3002], [3, 4]);
    let mut back = [0; 4];
    g.read_graphics(0x1ffe, &mut back).unwrap();
    assert_eq!(back, [1, 2, 3, 4]);
    // A write running into an unmapped page faults at that page.
    assert_eq!(g.write_graphics(0x2ffe, &[0; 4]), Err(Fault { code: FAULT_NOT_PRESENT, address: 0x3000 }));
}

#[test]
fn store_data_imm_writes_a_dword_and_a_qword() {
    let mut g = with_ring();
    map_ram(&mut g, SURFACE, 0x4000, 1);
    map_local(&mut g, SURFACE + 0x1000, 0, 1);
    submit(&mut g, &store(SURFACE + 0x10, 0xcafe_f00d));
    submit(&mut g, &[mi_instr(MI_STORE_DATA_IMM, 3), (SURFACE + 0x1008) as u32, 0, 0x1111_2222, 0x3333_4444]);
    let out = g.process();
    assert_eq!(out.commands, 2);
    assert!(!out.faulted);
    assert_eq!(ram_u32(&g, 0x4010), 0xcafe_f00d);
    assert_eq!(g.local().read_u64(8), Some(0x3333_4444_1111_2222));
    assert_eq!(reg(&g, RING_HEAD), reg(&g, RING_TAIL));
}

// One parameter per field of the command, in its order: clearer than a struct here.
#[allow(clippy::too_many_arguments)]
fn color_blt(depth: u32, pitch: u32, x1: u16, y1: u16, x2: u16, y2: u16, dst: u64, color: u32) -> [u32; 7] {
    [
        blt_instr(XY_COLOR_BLT, 5) | BLT_WRITE_ALPHA | BLT_WRITE_RGB,
        depth << BR13_DEPTH_SHIFT | ROP_PATCOPY << BR13_ROP_SHIFT | pitch,
        u32::from(y1) << 16 | u32::from(x1),
        u32::from(y2) << 16 | u32::from(x2),
        dst as u32,
        (dst >> 32) as u32,
        color,
    ]
}

#[test]
fn color_blt_fills_exactly_the_rectangle() {
    let mut g = with_ring();
    // A 64x64 32bpp surface (pitch 256) = 4 pages, scattered in RAM.
    for i in 0..4 {
        map_ram(&mut g, SURFACE + i * PAGE_SIZE, 0x10_000 + (3 - i) * 0x2000, 1);
    }
    submit(&mut g, &color_blt(DEPTH_32, 256, 2, 3, 10, 40, SURFACE, 0x00ff_8040));
    assert!(!g.process().faulted);
    for y in 0..64u64 {
        for x in 0..64u64 {
            let mut px = [0; 4];
            g.read_graphics(SURFACE + y * 256 + x * 4, &mut px).unwrap();
            let inside = (2..10).contains(&x) && (3..40).contains(&y);
            assert_eq!(u32::from_le_bytes(px), if inside { 0x00ff_8040 } else { 0 }, "({x}, {y})");
        }
    }
    // 8 bpp uses the low byte; an empty rectangle writes nothing.
    submit(&mut g, &color_blt(DEPTH_8, 64, 0, 0, 3, 1, SURFACE, 0x1234_56ab));
    submit(&mut g, &color_blt(DEPTH_32, 64, 5, 5, 5, 9, SURFACE, 0xffff_ffff));
    assert!(!g.process().faulted);
    let mut row = [0; 4];
    g.read_graphics(SURFACE, &mut row).unwrap();
    assert_eq!(row, [0xab, 0xab, 0xab, 0]);
}

#[allow(clippy::too_many_arguments)] // as for color_blt
fn src_copy(pitch: u32, x1: u16, y1: u16, x2: u16, y2: u16, dst: u64, sx: u16, sy: u16, spitch: u32, src: u64) -> [u32; 10] {
    [
        blt_instr(XY_SRC_COPY_BLT, 8) | BLT_WRITE_ALPHA | BLT_WRITE_RGB,
        DEPTH_32 << BR13_DEPTH_SHIFT | ROP_SRCCOPY << BR13_ROP_SHIFT | pitch,
        u32::from(y1) << 16 | u32::from(x1),
        u32::from(y2) << 16 | u32::from(x2),
        dst as u32,
        (dst >> 32) as u32,
        u32::from(sy) << 16 | u32::from(sx),
        spitch,
        src as u32,
        (src >> 32) as u32,
    ]
}

#[test]
fn src_copy_blt_copies_between_ram_and_local_memory() {
    let mut g = with_ring();
    let (src, dst) = (SURFACE, SURFACE + 0x10_000);
    map_ram(&mut g, src, 0x20_000, 4); // 32x32, pitch 128 = 1 page... use 4 for slack
    map_local(&mut g, dst, 0x8000, 4);
    for y in 0..32u64 {
        for x in 0..32u64 {
            let v = (y << 8 | x) as u32;
            g.write_graphics(src + y * 128 + x * 4, &v.to_le_bytes()).unwrap();
        }
    }
    // Copy the 8x4 block at (4, 6) of the source to (1, 2) of a pitch-256 destination.
    submit(&mut g, &src_copy(256, 1, 2, 9, 6, dst, 4, 6, 128, src));
    assert!(!g.process().faulted);
    for y in 0..8u64 {
        for x in 0..16u64 {
            let mut px = [0; 4];
            g.read_graphics(dst + y * 256 + x * 4, &mut px).unwrap();
            let inside = (1..9).contains(&x) && (2..6).contains(&y);
            let expect = if inside { ((y - 2 + 6) << 8 | (x - 1 + 4)) as u32 } else { 0 };
            assert_eq!(u32::from_le_bytes(px), expect, "({x}, {y})");
        }
    }
}

#[test]
fn overlapping_copy_within_a_surface_reads_before_it_writes() {
    let mut g = with_ring();
    map_ram(&mut g, SURFACE, 0x20_000, 1);
    for y in 0..8u32 {
        g.write_graphics(SURFACE + u64::from(y) * 16, &y.to_le_bytes()).unwrap();
    }
    // Move rows 0..6 down by two rows (1 pixel wide, pitch 16).
    submit(&mut g, &src_copy(16, 0, 2, 1, 8, SURFACE, 0, 0, 16, SURFACE));
    assert!(!g.process().faulted);
    let rows: Vec<u32> = (0..8).map(|y| ram_u32(&g, 0x20_000 + y * 16)).collect();
    assert_eq!(rows, [0, 1, 0, 1, 2, 3, 4, 5]);
}

#[test]
fn user_interrupt_counts_and_raises_only_enabled_interrupts() {
    let mut g = with_ring();
    submit(&mut g, &[mi_instr(MI_USER_INTERRUPT, 0), mi_instr(MI_NOOP, 0)]);
    let out = g.process();
    assert_eq!((out.commands, out.interrupt), (2, false)); // not enabled
    assert_eq!(reg(&g, SEQNO), 1);
    assert_eq!(reg(&g, INT_STATUS), INT_USER);
    set(&mut g, INT_STATUS, 0);
    set(&mut g, INT_ENABLE, INT_USER);
    submit(&mut g, &[mi_instr(MI_USER_INTERRUPT, 0), mi_instr(MI_USER_INTERRUPT, 0)]);
    assert!(g.process().interrupt);
    assert_eq!(reg(&g, SEQNO), 3);
    // Nothing new to do: no interrupt.
    assert!(!g.process().interrupt);
}

#[test]
fn disabled_ring_does_nothing() {
    let mut g = with_ring();
    set(&mut g, RING_CTL, 0);
    submit(&mut g, &[mi_instr(MI_USER_INTERRUPT, 0)]);
    assert_eq!(g.process().commands, 0);
    assert_eq!(reg(&g, RING_HEAD), 0);
}

#[test]
fn ring_wraps_around_its_end() {
    let mut g = with_ring();
    map_ram(&mut g, SURFACE, 0x4000, 1);
    // Start 8 bytes before the end: the 4-dword store spans the wrap.
    set(&mut g, RING_HEAD, 4088);
    set(&mut g, RING_TAIL, 4088);
    submit(&mut g, &store(SURFACE, 0x55));
    assert_eq!(reg(&g, RING_TAIL), 8);
    let out = g.process();
    assert_eq!((out.commands, out.faulted), (1, false));
    assert_eq!(reg(&g, RING_HEAD), 8);
    assert_eq!(ram_u32(&g, 0x4000), 0x55);
    // A bigger ring (2 pages): size comes from RING_CTL.
    map_ram(&mut g, RING + PAGE_SIZE, 0x1000, 1);
    set(&mut g, RING_CTL, RING_CTL_ENABLE | 1 << 12);
    set(&mut g, RING_HEAD, 4092);
    set(&mut g, RING_TAIL, 4092);
    for d in store(SURFACE + 4, 0x66) {
        let tail = u64::from(reg(&g, RING_TAIL));
        g.write_graphics(RING + tail, &d.to_le_bytes()).unwrap();
        set(&mut g, RING_TAIL, ((tail + 4) % 8192) as u32);
    }
    assert!(!g.process().faulted);
    assert_eq!(ram_u32(&g, 0x4004), 0x66);
    assert_eq!(reg(&g, RING_HEAD), 4108);
}

#[test]
fn fault_stops_the_ring_until_cleared() {
    let mut g = with_ring();
    map_ram(&mut g, SURFACE, 0x4000, 1);
    set(&mut g, INT_ENABLE, INT_FAULT | INT_USER);
    let bad = SURFACE + 0x10_0000; // not present
    submit(&mut g, &store(SURFACE, 1));
    submit(&mut g, &store(bad, 2));
    submit(&mut g, &store(SURFACE + 4, 3));
    let out = g.process();
    assert_eq!((out.commands, out.faulted, out.interrupt), (1, true, true));
    assert_eq!(fault(&g), (FAULT_NOT_PRESENT, bad, mi_instr(MI_STORE_DATA_IMM, 2)));
    assert_eq!(reg(&g, FAULT_COMMAND_ADDRESS_LO), 16);
    assert_eq!(reg(&g, RING_HEAD), 16, "head stays at the faulting command");
    assert_eq!(reg(&g, INT_STATUS), INT_FAULT);
    // Stopped: nothing runs, the fault registers stay.
    assert_eq!(g.process().commands, 0);
    assert_eq!(ram_u32(&g, 0x4004), 0);
    // Software skips the bad command and clears the fault: the ring resumes.
    set(&mut g, RING_HEAD, 32);
    set(&mut g, FAULT_STATUS, 0);
    assert_eq!(g.process().commands, 1);
    assert_eq!((ram_u32(&g, 0x4000), ram_u32(&g, 0x4004)), (1, 3));
}

#[test]
fn every_fault_code_is_reachable() {
    let cases: Vec<(Vec<u32>, u32)> = vec![
        (store(SURFACE + 0x10_0000, 0).to_vec(), FAULT_NOT_PRESENT),
        (store(SURFACE + 0x1000, 0).to_vec(), FAULT_OUTSIDE_MEMORY),
        (store(GRAPHICS_ADDRESS_SPACE, 0).to_vec(), FAULT_OUTSIDE_GTT),
        (store(1 << 47, 0).to_vec(), FAULT_OUTSIDE_GTT),
        (vec![mi_instr(0x3e, 0)], FAULT_UNKNOWN_COMMAND),
        (vec![3 << 29], FAULT_UNKNOWN_COMMAND),
        (vec![mi_instr(MI_STORE_DATA_IMM, 0), 0], FAULT_MALFORMED_COMMAND),
        (color_blt(DEPTH_32, 0x8000, 0, 0, 1, 1, SURFACE, 0).to_vec(), FAULT_MALFORMED_COMMAND),
        // 4096 x 4097 x 4 bytes: past MAX_BLIT_BYTES.
        (color_blt(DEPTH_32, 0x4000, 0, 0, 4096, 4097, SURFACE, 0).to_vec(), FAULT_MALFORMED_COMMAND),
    ];
    for (dwords, code) in cases {
        let mut g = with_ring();
        map_ram(&mut g, SURFACE, 0x4000, 1);
        map(&mut g, SURFACE + 0x1000, (RAM_BASE + (16 << 20)) | GTT_PRESENT);
        submit(&mut g, &dwords);
        assert!(g.process().faulted, "{dwords:x?}");
        assert_eq!(reg(&g, FAULT_STATUS), code, "{dwords:x?}");
        assert_eq!(reg(&g, RING_HEAD), 0);
    }
}

#[test]
fn ring_overruns_are_faults() {
    // A command longer than what lies before the tail.
    let mut g = with_ring();
    submit(&mut g, &store(SURFACE, 0)[..2]);
    assert!(g.process().faulted);
    assert_eq!(fault(&g).0, FAULT_RING_OVERRUN);
    // Tail past the ring's size; misaligned start; head past the ring.
    for (reg_offset, value) in [(RING_TAIL, 4096), (RING_START, 0x800), (RING_HEAD, 8192)] {
        let mut g = with_ring();
        submit(&mut g, &[0]);
        set(&mut g, reg_offset, value);
        assert!(g.process().faulted);
        assert_eq!(fault(&g).0, FAULT_RING_OVERRUN, "{reg_offset:x}={value:x}");
    }
    // A ring whose page is not mapped.
    let mut g = with_ring();
    set(&mut g, RING_START, 0x40_000);
    set(&mut g, RING_TAIL, 4);
    assert!(g.process().faulted);
    assert_eq!(fault(&g), (FAULT_NOT_PRESENT, 0x40_000, 0));
}

#[test]
fn batches_run_and_return() {
    let mut g = with_ring();
    map_ram(&mut g, BATCH, 0x8000, 4);
    map_ram(&mut g, SURFACE, 0x4000, 1);
    let second = BATCH + 0x2000;
    let chained = BATCH + 0x3000;
    // First level: store 1, call the second level, store 3, chain to `chained`.
    let mut first = store(SURFACE, 1).to_vec();
    first.extend(bbs(second, true));
    first.extend(store(SURFACE + 8, 3));
    first.extend(bbs(chained, false));
    write_dwords(&mut g, BATCH, &first);
    let mut level2 = store(SURFACE + 4, 2).to_vec();
    level2.push(BBE);
    write_dwords(&mut g, second, &level2);
    let mut tail = store(SURFACE + 12, 4).to_vec();
    tail.push(BBE);
    write_dwords(&mut g, chained, &tail);
    submit(&mut g, &bbs(BATCH, false));
    submit(&mut g, &store(SURFACE + 16, 5));
    let out = g.process();
    assert_eq!((out.commands, out.faulted), (2, false), "{:?}", fault(&g));
    let values: Vec<u32> = (0..5).map(|i| ram_u32(&g, 0x4000 + i * 4)).collect();
    assert_eq!(values, [1, 2, 3, 4, 5]);
}

#[test]
fn batch_nesting_is_limited() {
    let mut g = with_ring();
    map_ram(&mut g, BATCH, 0x8000, 3);
    let (level2, level3) = (BATCH + 0x1000, BATCH + 0x2000);
    write_dwords(&mut g, BATCH, &bbs(level2, true));
    write_dwords(&mut g, level2, &bbs(level3, true));
    write_dwords(&mut g, level3, &[BBE]);
    submit(&mut g, &bbs(BATCH, false));
    assert!(g.process().faulted);
    let (code, address, header) = fault(&g);
    assert_eq!((code, address), (FAULT_BATCH_NESTING, level2));
    assert_eq!(header, mi_instr(MI_BATCH_BUFFER_START, 1) | MI_BATCH_SECOND_LEVEL);
    assert_eq!(reg(&g, FAULT_COMMAND_ADDRESS_LO) as u64, level2);
    assert_eq!(reg(&g, RING_HEAD), 0);
}

#[test]
fn runaway_batches_are_stopped() {
    // A batch that chains to itself forever: the watchdog.
    let mut g = with_ring();
    map_ram(&mut g, BATCH, 0x8000, 1);
    write_dwords(&mut g, BATCH, &bbs(BATCH, false));
    submit(&mut g, &bbs(BATCH, false));
    assert!(g.process().faulted);
    assert_eq!(fault(&g).0, FAULT_BATCH_OVERRUN);
    // A batch of NOOPs with no end, over more than MAX_BATCH_BYTES of mapped memory.
    let mut g = with_ring();
    let pages = MAX_BATCH_BYTES / PAGE_SIZE + 1;
    for i in 0..pages {
        map_ram(&mut g, BATCH + i * PAGE_SIZE, 0x8000, 1); // all on one zeroed page: MI_NOOP
    }
    submit(&mut g, &bbs(BATCH, false));
    assert!(g.process().faulted);
    assert_eq!(fault(&g), (FAULT_BATCH_OVERRUN, BATCH + MAX_BATCH_BYTES, 0));
    // A batch that runs off its mapping.
    let mut g = with_ring();
    map_ram(&mut g, BATCH, 0x8000, 1);
    submit(&mut g, &bbs(BATCH, false));
    assert!(g.process().faulted);
    assert_eq!(fault(&g), (FAULT_NOT_PRESENT, BATCH + PAGE_SIZE, 0));
}

#[test]
fn decoded_commands_round_trip_through_the_test_encoders() {
    assert_eq!(decode(&store(0x1000, 9)), Ok(Command::StoreDataImm { address: 0x1000, low: 9, high: None }));
    assert_eq!(decode(&bbs(0x2000, false)), Ok(Command::BatchBufferStart { address: 0x2000, second_level: false, ppgtt: false }));
}

/// xorshift64*: a fixed-seed generator, so the randomized test is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A dword that is often a real command header or a plausible field.
fn random_dword(r: &mut Rng) -> u32 {
    let headers = [
        mi_instr(MI_NOOP, 0),
        mi_instr(MI_USER_INTERRUPT, 0),
        mi_instr(MI_BATCH_BUFFER_END, 0),
        mi_instr(MI_STORE_DATA_IMM, 2),
        mi_instr(MI_STORE_DATA_IMM, 3),
        mi_instr(MI_BATCH_BUFFER_START, 1),
        mi_instr(MI_BATCH_BUFFER_START, 1) | MI_BATCH_SECOND_LEVEL,
        mi_instr(MI_BATCH_BUFFER_START, 1) | bulkhead_abi::gpu::cmd::BBS_PPGTT,
        mi_instr(bulkhead_abi::gpu::cmd::MI_LOAD_REGISTER_IMM, 1),
        bulkhead_abi::gpu::ppgtt::PDP0_LDW,
        blt_instr(XY_COLOR_BLT, 5),
        blt_instr(XY_SRC_COPY_BLT, 8),
        DEPTH_32 << BR13_DEPTH_SHIFT | ROP_PATCOPY << BR13_ROP_SHIFT | 256,
        DEPTH_32 << BR13_DEPTH_SHIFT | ROP_SRCCOPY << BR13_ROP_SHIFT | 4096,
    ];
    match r.below(4) {
        0 => headers[r.below(headers.len() as u64) as usize],
        1 => r.below(0x40_000) as u32 & !3, // a small graphics address
        2 => (r.below(64) << 16 | r.below(64)) as u32, // a coordinate pair
        _ => r.next() as u32,
    }
}

#[test]
fn random_rings_never_panic() {
    let mut r = Rng(0x5eed_1234_abcd_0001);
    let mut faults = 0;
    let mut commands = 0;
    for _ in 0..300 {
        let mut g = with_ring();
        // Random GTT: some pages to RAM, some to local memory, some garbage, some absent.
        for page in 0..64 {
            let entry = match r.below(5) {
                0 => (RAM_BASE + r.below(RAM_SIZE as u64 / PAGE_SIZE) * PAGE_SIZE) | GTT_PRESENT,
                1 => (r.below(LOCAL_SIZE as u64 / PAGE_SIZE) * PAGE_SIZE) | GTT_PRESENT | GTT_LOCAL_MEMORY,
                2 => r.next(),
                _ => 0,
            };
            if page > 0 {
                map(&mut g, page * PAGE_SIZE, entry);
            }
        }
        // Random memory contents behind them (batches), then a random ring.
        for _ in 0..2048 {
            let at = r.below(RAM_SIZE as u64 / 4) * 4;
            g.ram_mut().write_u32(at, random_dword(&mut r));
        }
        let n = r.below(200) as usize;
        let dwords: Vec<u32> = (0..n).map(|_| random_dword(&mut r)).collect();
        submit(&mut g, &dwords);
        // PDP0: a RAM page (random contents as page tables) or garbage.
        let pdp0 = if r.below(2) == 0 { RAM_BASE + r.below(RAM_SIZE as u64 / PAGE_SIZE) * PAGE_SIZE } else { r.next() };
        set(&mut g, bulkhead_abi::gpu::ppgtt::PDP0_LDW.into(), pdp0 as u32);
        set(&mut g, bulkhead_abi::gpu::ppgtt::PDP0_UDW.into(), (pdp0 >> 32) as u32);
        // Sometimes also random ring registers.
        if r.below(4) == 0 {
            let offset = [RING_HEAD, RING_TAIL, RING_START, RING_CTL][r.below(4) as usize];
            set(&mut g, offset, r.next() as u32);
        }
        for _ in 0..3 {
            let out = g.process();
            commands += out.commands;
            if out.faulted {
                faults += 1;
                let skip = reg(&g, RING_HEAD).wrapping_add(4) & 0xffc;
                set(&mut g, RING_HEAD, skip);
                set(&mut g, FAULT_STATUS, 0);
            }
        }
    }
    // The run exercised both paths.
    assert!(faults > 50 && commands > 100, "faults {faults}, commands {commands}");
}
