//! Host tests of the per-process GTT: PDP0 loads, PPGTT batches through 4 KiB, 2 MiB and
//! local-memory leaves, faults at every level, the privilege rules of MI_LOAD_REGISTER_IMM, and
//! that a PPGTT batch cannot reach the global GTT. Commands come from `bulkhead_abi::gpu::encode`,
//! the encoders the hypervisor and the guests use.

use bulkhead_abi::gpu::encode::{
    Rect, Surface, load_pdp0, mi_batch_buffer_end, mi_batch_buffer_start, mi_load_register_imm, mi_store_data_imm,
    mi_user_interrupt, xy_color_blt, xy_src_copy_blt,
};
use bulkhead_abi::gpu::ppgtt::{
    self, FAULT_FORBIDDEN_REGISTER, FAULT_PRIVILEGED, LOCAL_MEMORY, PD, PDP, PDP0_LDW, PDP0_UDW, PML4, PRESENT, PS_2M, PT,
};
use gpu_model::gpu::{AddressSpace, Fault, Gpu, Physical};
use gpu_model::memory::{Memory, VecMemory};
use gpu_model::regs::*;

const RAM_BASE: u64 = 0x4000_0000;
const RAM_SIZE: usize = 8 << 20;
const LOCAL_SIZE: usize = 1 << 20;
/// RAM offset where the tests' page tables start (one page each, allocated upwards).
const TABLES: u64 = 0x10_0000;

type TestGpu = Gpu<VecMemory, VecMemory, VecMemory>;

/// A GPU with a one-page ring at global graphics address 0 (RAM offset 0), enabled.
fn with_ring() -> TestGpu {
    let mut g = Gpu::new(
        VecMemory::zeroed(REG_BAR_SIZE as usize),
        VecMemory::zeroed(LOCAL_SIZE),
        VecMemory::zeroed(RAM_SIZE),
        RAM_BASE,
    );
    g.reset();
    ggtt_map(&mut g, 0, RAM_BASE | GTT_PRESENT);
    set(&mut g, RING_START, 0);
    set(&mut g, RING_CTL, RING_CTL_ENABLE);
    g
}

fn ggtt_map(g: &mut TestGpu, graphics: u64, entry: u64) {
    assert!(g.regs_mut().write_u64(GTT_OFFSET + graphics / PAGE_SIZE * GTT_ENTRY_SIZE, entry));
}

fn reg(g: &TestGpu, offset: u64) -> u32 {
    g.regs().read_u32(offset).unwrap()
}

fn set(g: &mut TestGpu, offset: u64, value: u32) {
    assert!(g.regs_mut().write_u32(offset, value));
}

/// Append commands to the ring and advance the tail.
fn submit(g: &mut TestGpu, dwords: &[u32]) {
    let mut tail = u64::from(reg(g, RING_TAIL));
    for d in dwords {
        g.write_graphics(tail, &d.to_le_bytes()).unwrap();
        tail = (tail + 4) % PAGE_SIZE;
    }
    set(g, RING_TAIL, tail as u32);
}

fn write_dwords(g: &mut TestGpu, space: AddressSpace, at: u64, dwords: &[u32]) {
    for (i, d) in dwords.iter().enumerate() {
        g.write_in(space, at + i as u64 * 4, &d.to_le_bytes()).unwrap();
    }
}

/// (FAULT_STATUS, FAULT_ADDRESS, FAULT_COMMAND, FAULT_COMMAND_ADDRESS).
fn fault(g: &TestGpu) -> (u32, u64, u32, u64) {
    let pair = |lo, hi| u64::from(reg(g, hi)) << 32 | u64::from(reg(g, lo));
    (
        reg(g, FAULT_STATUS),
        pair(FAULT_ADDRESS_LO, FAULT_ADDRESS_HI),
        reg(g, FAULT_COMMAND),
        pair(FAULT_COMMAND_ADDRESS_LO, FAULT_COMMAND_ADDRESS_HI),
    )
}

fn ram_u32(g: &TestGpu, offset: u64) -> u32 {
    g.ram().read_u32(offset).unwrap()
}

fn batch(commands: &[&[u32]]) -> Vec<u32> {
    let mut dwords: Vec<u32> = commands.concat();
    dwords.push(mi_batch_buffer_end());
    dwords
}

/// Page tables built in guest RAM, tables allocated from [`TABLES`] upwards.
struct Tables {
    /// RAM offset of the PML4.
    pml4: u64,
    next: u64,
}

impl Tables {
    fn new() -> Self {
        Self { pml4: TABLES, next: TABLES + PAGE_SIZE }
    }

    /// Guest physical address of the PML4 (what PDP0 holds).
    fn root(&self) -> u64 {
        RAM_BASE + self.pml4
    }

    fn space(&self) -> AddressSpace {
        AddressSpace::PerProcess { pml4: self.root() }
    }

    /// RAM offset of the entry of `level` for `address`, creating the tables above it.
    fn slot(&mut self, g: &mut TestGpu, address: u64, level: usize) -> u64 {
        let mut table = self.pml4;
        for upper in PML4..level {
            let slot = table + ppgtt::index(address, upper) as u64 * ppgtt::ENTRY_SIZE;
            let entry = g.ram().read_u64(slot).unwrap();
            table = if entry & PRESENT == 0 {
                let new = self.next;
                self.next += PAGE_SIZE;
                assert!(g.ram_mut().write_u64(slot, (RAM_BASE + new) | PRESENT));
                new
            } else {
                ppgtt::entry_address(entry) - RAM_BASE
            };
        }
        table + ppgtt::index(address, level) as u64 * ppgtt::ENTRY_SIZE
    }

    fn set(&mut self, g: &mut TestGpu, address: u64, level: usize, entry: u64) {
        let slot = self.slot(g, address, level);
        assert!(g.ram_mut().write_u64(slot, entry));
    }

    /// Map `pages` 4 KiB pages at `address` onto RAM at `ram_offset`.
    fn map_ram(&mut self, g: &mut TestGpu, address: u64, ram_offset: u64, pages: u64) {
        for i in 0..pages {
            self.set(g, address + i * PAGE_SIZE, PT, (RAM_BASE + ram_offset + i * PAGE_SIZE) | PRESENT);
        }
    }

    /// Map the 4 KiB page at `address` onto local memory at `local_offset`.
    fn map_local(&mut self, g: &mut TestGpu, address: u64, local_offset: u64) {
        self.set(g, address, PT, local_offset | PRESENT | LOCAL_MEMORY);
    }
}

/// PPGTT address of the test batch: PML4 index 2, far above the global GTT's 512 MiB.
const BATCH: u64 = 0x100_0000_0000;
/// RAM offset of the test batch's page.
const BATCH_RAM: u64 = 0x8000;

/// Tables mapping [`BATCH`] (one page) onto [`BATCH_RAM`], the batch written there, and the
/// ring commands that run it: load PDP0, start the batch with bit 8.
fn ppgtt_submission(g: &mut TestGpu, tables: &mut Tables, commands: &[u32]) {
    tables.map_ram(g, BATCH, BATCH_RAM, 1);
    write_dwords(g, tables.space(), BATCH, commands);
    submit(g, &load_pdp0(tables.root()));
    submit(g, &mi_batch_buffer_start(BATCH, true));
}

#[test]
fn pdp0_is_loaded_from_the_ring_and_cleared_by_reset() {
    let mut g = with_ring();
    submit(&mut g, &load_pdp0(0x1_2345_6000));
    submit(&mut g, &[0]); // MI_NOOP: qword-aligned tail
    let out = g.process();
    assert_eq!((out.commands, out.faulted), (2, false), "{:x?}", fault(&g));
    assert_eq!((reg(&g, PDP0_UDW.into()), reg(&g, PDP0_LDW.into())), (1, 0x2345_6000));
    g.reset();
    assert_eq!((reg(&g, PDP0_UDW.into()), reg(&g, PDP0_LDW.into())), (0, 0));
}

#[test]
fn a_ppgtt_batch_blits_through_4k_2m_and_local_memory_leaves() {
    let mut g = with_ring();
    let mut t = Tables::new();
    // Source: 2 MiB leaf (PML4 index 256) onto RAM 4 MiB; the entry's bits 20:12 are junk.
    let src = Surface { address: 0x8000_0000_0000 + 0x1000, pitch: 256 };
    t.set(&mut g, src.address, PD, (RAM_BASE + (4 << 20) + 0x5000) | PRESENT | PS_2M);
    for y in 0..16u64 {
        for x in 0..64u64 {
            assert!(g.ram_mut().write_u32((4 << 20) + 0x1000 + y * 256 + x * 4, (y << 8 | x) as u32));
        }
    }
    // Destination: two graphics-contiguous local-memory pages, in reverse order in local memory.
    let dst = Surface { address: 0x7_0000_0000, pitch: 512 };
    t.map_local(&mut g, dst.address, 0x3000);
    t.map_local(&mut g, dst.address + PAGE_SIZE, 0x1000);
    // Fill target: a 4 KiB RAM leaf.
    let fill = Surface { address: 0x7_4000_0000, pitch: 64 };
    t.map_ram(&mut g, fill.address, 0x3_0000, 1);
    let commands = batch(&[
        &xy_src_copy_blt(dst, Rect { x1: 2, y1: 3, x2: 34, y2: 15 }, src, 1, 2),
        &xy_color_blt(fill, Rect { x1: 1, y1: 1, x2: 3, y2: 2 }, 0xabcd_ef01),
    ]);
    ppgtt_submission(&mut g, &mut t, &commands);
    submit(&mut g, &[mi_user_interrupt()]);
    let out = g.process();
    assert_eq!((out.commands, out.faulted), (3, false), "{:x?}", fault(&g));
    assert_eq!(reg(&g, SEQNO), 1);
    // Every destination pixel, read from local memory where the leaves put it.
    for y in 0..16u64 {
        for x in 0..64u64 {
            let offset = y * 512 + x * 4;
            let local = if offset < PAGE_SIZE { 0x3000 + offset } else { 0x1000 + offset - PAGE_SIZE };
            let inside = (2..34).contains(&x) && (3..15).contains(&y);
            let expect = if inside { ((y - 3 + 2) << 8 | (x - 2 + 1)) as u32 } else { 0 };
            assert_eq!(g.local().read_u32(local).unwrap(), expect, "({x}, {y})");
        }
    }
    let row: Vec<u32> = (0..4).map(|x| ram_u32(&g, 0x3_0000 + 64 + x * 4)).collect();
    assert_eq!(row, [0, 0xabcd_ef01, 0xabcd_ef01, 0]);
    assert_eq!(ram_u32(&g, 0x3_0000 + 4), 0, "row 0 untouched");
}

#[test]
fn store_data_imm_in_a_ppgtt_batch_ignores_its_global_gtt_bit() {
    let mut g = with_ring();
    let mut t = Tables::new();
    // The same graphics address in both spaces, onto different RAM.
    let target = 0x2_0000;
    t.map_ram(&mut g, target, 0x9000, 1);
    ggtt_map(&mut g, target, (RAM_BASE + 0xa000) | GTT_PRESENT);
    // encode::mi_store_data_imm sets "Use Global GTT".
    ppgtt_submission(&mut g, &mut t, &batch(&[&mi_store_data_imm(target + 8, 0x600d)]));
    assert!(!g.process().faulted, "{:x?}", fault(&g));
    assert_eq!((ram_u32(&g, 0x9008), ram_u32(&g, 0xa008)), (0x600d, 0));
    // From the ring the same command goes through the global GTT.
    submit(&mut g, &mi_store_data_imm(target + 8, 0x0bad));
    submit(&mut g, &[0, 0, 0, 0]);
    assert!(!g.process().faulted, "{:x?}", fault(&g));
    assert_eq!((ram_u32(&g, 0x9008), ram_u32(&g, 0xa008)), (0x600d, 0x0bad));
}

#[test]
fn a_missing_entry_at_each_level_faults_at_the_ppgtt_address() {
    // Below the batch's own PML4 entry (index 2): index 1, so no level is shared with it.
    let target = 0x93_4567_8000 + 0x44;
    let store = mi_store_data_imm(target, 7);
    for level in [PML4, PDP, PD, PT] {
        let mut g = with_ring();
        let mut t = Tables::new();
        t.map_ram(&mut g, target, 0x2_0000, 1);
        ppgtt_submission(&mut g, &mut t, &batch(&[&store]));
        let slot = t.slot(&mut g, target, level);
        let entry = g.ram().read_u64(slot).unwrap();
        assert!(g.ram_mut().write_u64(slot, entry & !PRESENT));
        assert!(g.process().faulted, "level {level}");
        assert_eq!(fault(&g), (FAULT_NOT_PRESENT, target, store[0], BATCH), "level {level}");
        assert_eq!(reg(&g, RING_HEAD), 20, "head at the batch start, after the PDP0 load");
        assert_eq!(ram_u32(&g, 0x2_0044), 0);
        // Made present again (no TLB to flush), the same command runs once the fault is cleared.
        assert!(g.ram_mut().write_u64(slot, entry));
        set(&mut g, FAULT_STATUS, 0);
        assert!(!g.process().faulted, "level {level}: {:x?}", fault(&g));
        assert_eq!(ram_u32(&g, 0x2_0044), 7);
    }
}

#[test]
fn translation_faults_name_the_ppgtt_address() {
    let mut g = with_ring();
    let mut t = Tables::new();
    let f = |code, address| Err(Fault { code, address });
    let space = t.space();
    // The batch itself unmapped: fault in fetching it (no header).
    submit(&mut g, &load_pdp0(t.root()));
    submit(&mut g, &mi_batch_buffer_start(BATCH, true));
    assert!(g.process().faulted);
    assert_eq!(fault(&g), (FAULT_NOT_PRESENT, BATCH, 0, BATCH));
    // Beyond 48 bits; a leaf past local memory; a leaf below RAM; a table outside RAM; a PML4
    // outside RAM.
    assert_eq!(g.translate_in(space, 1 << 48), f(FAULT_OUTSIDE_GTT, 1 << 48));
    t.set(&mut g, 0x5000, PT, LOCAL_SIZE as u64 | PRESENT | LOCAL_MEMORY);
    assert_eq!(g.translate_in(space, 0x5008), f(FAULT_OUTSIDE_MEMORY, 0x5008));
    t.set(&mut g, 0x6000, PT, 0x1000 | PRESENT);
    assert_eq!(g.translate_in(space, 0x6000), f(FAULT_OUTSIDE_MEMORY, 0x6000));
    t.set(&mut g, 0x4000_0000, PDP, (RAM_BASE + RAM_SIZE as u64) | PRESENT);
    assert_eq!(g.translate_in(space, 0x4000_0000), f(FAULT_OUTSIDE_MEMORY, 0x4000_0000));
    assert_eq!(
        g.translate_in(AddressSpace::PerProcess { pml4: RAM_BASE - PAGE_SIZE }, 0),
        f(FAULT_OUTSIDE_MEMORY, 0)
    );
    // A local-memory 2 MiB leaf, and a 4 KiB one with the (meaningless there) PS bit.
    t.set(&mut g, 0x20_0000, PD, PRESENT | LOCAL_MEMORY | PS_2M);
    assert_eq!(g.translate_in(space, 0x2f_ffff), Ok(Physical::Local(0xf_ffff)));
    t.set(&mut g, 0x7000, PT, 0x2000 | PRESENT | LOCAL_MEMORY | PS_2M);
    assert_eq!(g.translate_in(space, 0x7010), Ok(Physical::Local(0x2010)));
}

#[test]
fn load_register_imm_in_a_ppgtt_batch_is_privileged() {
    for command in [load_pdp0(0x7000).to_vec(), mi_load_register_imm(RING_HEAD as u32, 0).to_vec()] {
        let mut g = with_ring();
        let mut t = Tables::new();
        t.map_ram(&mut g, 0x2_0000, 0x2_0000, 1);
        let commands = batch(&[&command, &mi_store_data_imm(0x2_0000, 1)]);
        ppgtt_submission(&mut g, &mut t, &commands);
        assert!(g.process().faulted);
        assert_eq!(fault(&g), (FAULT_PRIVILEGED, BATCH, command[0], BATCH), "{command:x?}");
        let pdp0 = u64::from(reg(&g, PDP0_UDW.into())) << 32 | u64::from(reg(&g, PDP0_LDW.into()));
        assert_eq!(pdp0, t.root(), "PDP0 unchanged");
        assert_eq!(ram_u32(&g, 0x2_0000), 0, "the batch stopped there");
    }
}

#[test]
fn load_register_imm_of_another_register_is_forbidden() {
    // From the ring: one forbidden pair refuses the whole command (PDP0_UDW not written either).
    let mut g = with_ring();
    let lri = [cmd_lri(3), PDP0_UDW, 5, RING_CTL as u32, 0];
    submit(&mut g, &lri);
    submit(&mut g, &[0]);
    assert!(g.process().faulted);
    assert_eq!(fault(&g), (FAULT_FORBIDDEN_REGISTER, 0, lri[0], 0));
    assert_eq!((reg(&g, PDP0_UDW.into()), reg(&g, RING_CTL)), (0, RING_CTL_ENABLE));
    // From a global-GTT batch: PDP0 may be loaded, anything else may not.
    let mut g = with_ring();
    let batch_address = 0x1_0000;
    ggtt_map(&mut g, batch_address, (RAM_BASE + BATCH_RAM) | GTT_PRESENT);
    let forbidden = mi_load_register_imm(INT_ENABLE as u32, 3);
    let commands = batch(&[&load_pdp0(0x4_5000), &forbidden]);
    write_dwords(&mut g, AddressSpace::Global, batch_address, &commands);
    submit(&mut g, &mi_batch_buffer_start(batch_address, false));
    submit(&mut g, &[0]);
    assert!(g.process().faulted);
    assert_eq!(fault(&g), (FAULT_FORBIDDEN_REGISTER, batch_address + 20, forbidden[0], batch_address + 20));
    assert_eq!((reg(&g, PDP0_LDW.into()), reg(&g, INT_ENABLE)), (0x4_5000, 0));
    // A length that is not 2n - 1 is malformed.
    let mut g = with_ring();
    submit(&mut g, &[cmd_lri(2), PDP0_LDW, 0, PDP0_UDW]);
    assert!(g.process().faulted);
    assert_eq!(fault(&g).0, FAULT_MALFORMED_COMMAND);
}

/// An MI_LOAD_REGISTER_IMM header with DWord Length `length`.
fn cmd_lri(length: u32) -> u32 {
    bulkhead_abi::gpu::cmd::mi(bulkhead_abi::gpu::cmd::MI_LOAD_REGISTER_IMM, length)
}

#[test]
fn a_ppgtt_batch_cannot_chain_or_call_into_the_global_gtt() {
    let mut g = with_ring();
    let mut t = Tables::new();
    // `next` is a batch in both spaces: the global one would store 0xbad, the PPGTT one 0x600d.
    let (next, marker) = (0x3_0000, 0x4_0000);
    ggtt_map(&mut g, next, (RAM_BASE + 0xa000) | GTT_PRESENT);
    ggtt_map(&mut g, marker, (RAM_BASE + 0xb000) | GTT_PRESENT);
    write_dwords(&mut g, AddressSpace::Global, next, &batch(&[&mi_store_data_imm(marker, 0xbad)]));
    t.map_ram(&mut g, next, 0xc000, 1);
    t.map_ram(&mut g, marker, 0xd000, 1);
    write_dwords(&mut g, t.space(), next, &batch(&[&mi_store_data_imm(marker + 4, 0x600d)]));
    // Call `next` (second level, bit 8 clear), then chain to it (bit 8 clear).
    let call = mi_batch_buffer_start(next, false);
    let second_level = [call[0] | bulkhead_abi::gpu::cmd::BBS_SECOND_LEVEL, call[1], call[2]];
    let commands = [&second_level[..], &mi_store_data_imm(marker + 8, 2), &call].concat();
    ppgtt_submission(&mut g, &mut t, &commands);
    let out = g.process();
    assert_eq!((out.commands, out.faulted), (2, false), "{:x?}", fault(&g));
    assert_eq!(ram_u32(&g, 0xd004), 0x600d);
    assert_eq!(ram_u32(&g, 0xd008), 2, "back in the PPGTT batch after the call");
    assert_eq!(ram_u32(&g, 0xb000), 0, "the global batch never ran");
    // Chaining to an address mapped only in the global GTT faults at that PPGTT address.
    let mut g = with_ring();
    let mut t = Tables::new();
    ggtt_map(&mut g, next, (RAM_BASE + 0xa000) | GTT_PRESENT);
    ppgtt_submission(&mut g, &mut t, &mi_batch_buffer_start(next, false));
    assert!(g.process().faulted);
    assert_eq!(fault(&g), (FAULT_NOT_PRESENT, next, 0, next));
}

#[test]
fn a_global_batch_calls_a_ppgtt_batch_on_the_pdp0_it_loaded_and_continues_in_the_global_gtt() {
    let mut g = with_ring();
    let mut t = Tables::new();
    let (global_batch, target) = (0x1_0000, 0x2_0000);
    ggtt_map(&mut g, global_batch, (RAM_BASE + 0x6000) | GTT_PRESENT);
    ggtt_map(&mut g, target, (RAM_BASE + 0xa000) | GTT_PRESENT);
    t.map_ram(&mut g, target, 0x9000, 1);
    t.map_ram(&mut g, BATCH, BATCH_RAM, 1);
    write_dwords(&mut g, t.space(), BATCH, &batch(&[&mi_store_data_imm(target, 1)]));
    let call = mi_batch_buffer_start(BATCH, true);
    let second_level = [call[0] | bulkhead_abi::gpu::cmd::BBS_SECOND_LEVEL, call[1], call[2]];
    let commands = batch(&[&load_pdp0(t.root()), &second_level, &mi_store_data_imm(target + 4, 2)]);
    write_dwords(&mut g, AddressSpace::Global, global_batch, &commands);
    // The ring loads another PDP0 first: the batch's own load is the one that counts.
    submit(&mut g, &load_pdp0(RAM_BASE + 0x7f_f000));
    submit(&mut g, &mi_batch_buffer_start(global_batch, false));
    let out = g.process();
    assert_eq!((out.commands, out.faulted), (2, false), "{:x?}", fault(&g));
    assert_eq!((ram_u32(&g, 0x9000), ram_u32(&g, 0xa004)), (1, 2));
    assert_eq!((ram_u32(&g, 0xa000), ram_u32(&g, 0x9004)), (0, 0));
}
