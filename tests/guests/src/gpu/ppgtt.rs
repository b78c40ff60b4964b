//! Per-process GPU page tables (gen8 4-level PPGTT, `bulkhead_abi::gpu::ppgtt`)
//! built by a guest in its own RAM, for both architectures.
//!
//! A [`Tables`] owns a pool of guest pages ([`Pool`]) and builds trees in it:
//! a [`Context`] is a PML4 page; [`Tables::map_4k`] / [`Tables::map_2m`]
//! create the missing PDP / PD / PT pages on the way and write the leaf;
//! [`Tables::unmap`] clears a leaf; [`Tables::unlink_table`] clears the entry
//! pointing at a table page (which the hypervisor then stops tracking) and
//! [`Tables::link_table`] sets one (to share a PT page between contexts, or
//! to link a page filled beforehand). Table pointers and RAM leaves hold
//! guest-physical addresses of the guest's own RAM; leaves with
//! [`ppgtt::LOCAL_MEMORY`] hold offsets into its local-memory BAR.
//!
//! Once a context has been submitted, its table pages are write-protected
//! by the hypervisor and every store instruction to them traps (counted in
//! `vgpu::INFO_PT_TRAPS`). So entries are written with explicit store
//! instructions the hypervisor can decode ([`GuestRam`]): one 8-byte store
//! by default ([`Store::Whole`]), two 4-byte stores on request
//! ([`Store::Halves`]), and [`Tables::write_pair`]: two adjacent entries in
//! one `stp` of two X registers on arm64 (two 8-byte stores on x86_64).
//! New table pages are zeroed before they are linked, while no trap is
//! taken on them.
//!
//! The memory is behind [`Memory`], so the builder is tested on the host.

use super::{Gpu, GpuError, Outcome, ram_read32, ram_write32, write64};
use crate::edu::write32;
use bulkhead_abi::gpu::cmd;
use bulkhead_abi::gpu::encode::{load_pdp0, mi_batch_buffer_end, mi_batch_buffer_start, mi_noop, mi_user_interrupt};
use bulkhead_abi::gpu::ppgtt::{self, ENTRIES, ENTRY_SIZE, LARGE_PAGE_SIZE, PAGE_SIZE, PD, PML4, PRESENT, PS_2M, PT};
use bulkhead_abi::gpu::vgpu;

/// Store instructions [`Tables::write_pair`] takes: one `stp` on arm64, two
/// 8-byte stores elsewhere.
#[cfg(target_arch = "aarch64")]
pub const PAIR_STORES: u64 = 1;
/// Store instructions [`Tables::write_pair`] takes: one `stp` on arm64, two
/// 8-byte stores elsewhere.
#[cfg(not(target_arch = "aarch64"))]
pub const PAIR_STORES: u64 = 2;

/// Where table entries live.
pub trait Memory {
    /// The 8-byte entry at `address`.
    fn read64(&self, address: u64) -> u64;
    /// One 8-byte store.
    fn write64(&mut self, address: u64, value: u64);
    /// One 4-byte store.
    fn write32(&mut self, address: u64, value: u32);
    /// `first` at `address` and `second` at `address + 8` ([`PAIR_STORES`]
    /// store instructions).
    fn write_pair(&mut self, address: u64, first: u64, second: u64);
    /// Zeroes the page at `address` (a page nobody tracks yet).
    fn zero_page(&mut self, address: u64);
}

/// The guest's own RAM, by guest-physical address (identity mapped, or
/// the MMU off on arm64).
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRam;

impl Memory for GuestRam {
    fn read64(&self, address: u64) -> u64 {
        u64::from(ram_read32(address)) | u64::from(ram_read32(address + 4)) << 32
    }

    fn write64(&mut self, address: u64, value: u64) {
        write64(address, value);
    }

    fn write32(&mut self, address: u64, value: u32) {
        write32(address, value);
    }

    fn write_pair(&mut self, address: u64, first: u64, second: u64) {
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `address` is a 16-byte aligned pair of entries in a table
        // page of this partition's RAM, which no Rust object owns; one STP
        // of two X registers (no writeback), the instruction under test.
        unsafe {
            core::arch::asm!("stp {1}, {2}, [{0}]", in(reg) address, in(reg) first, in(reg) second, options(nostack))
        };
        #[cfg(not(target_arch = "aarch64"))]
        {
            write64(address, first);
            write64(address + ENTRY_SIZE, second);
        }
    }

    fn zero_page(&mut self, address: u64) {
        for offset in (0..PAGE_SIZE).step_by(4) {
            ram_write32(address + offset, 0);
        }
    }
}

/// How an entry is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// One 8-byte store.
    Whole,
    /// Two 4-byte stores, low half first.
    Halves,
}

impl Store {
    /// Store instructions it takes (traps, on a tracked page).
    pub const fn stores(self) -> u64 {
        match self {
            Store::Whole => 1,
            Store::Halves => 2,
        }
    }
}

/// Why a table operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PtError {
    /// No free page left in the pool.
    PoolExhausted,
    /// A page or graphics address not aligned as the operation needs.
    Unaligned(u64),
    /// An address an entry cannot hold, or a graphics address beyond 48 bits.
    Address(u64),
    /// Nothing is mapped there (a table on the way is missing).
    NotMapped(u64),
    /// A 2 MiB page is mapped where a PT would be needed.
    LargePage(u64),
    /// The page is not one of the pool's.
    NotPoolPage(u64),
}

/// A pool of up to [`Pool::MAX_PAGES`] guest pages for table pages.
#[derive(Clone, Debug)]
pub struct Pool {
    base: u64,
    pages: usize,
    used: [u64; Pool::MAX_PAGES / 64],
}

impl Pool {
    /// Most pages one pool manages.
    pub const MAX_PAGES: usize = 256;

    /// `pages` pages from the 4 KiB aligned guest-physical `base`.
    ///
    /// # Errors
    /// [`PtError::Unaligned`]; [`PtError::Address`] for more than
    /// [`Pool::MAX_PAGES`] pages.
    pub const fn new(base: u64, pages: usize) -> Result<Pool, PtError> {
        if !base.is_multiple_of(PAGE_SIZE) {
            return Err(PtError::Unaligned(base));
        }
        if pages > Pool::MAX_PAGES {
            return Err(PtError::Address(base + pages as u64 * PAGE_SIZE));
        }
        Ok(Pool { base, pages, used: [0; Pool::MAX_PAGES / 64] })
    }

    /// Whether `page` is one of the pool's pages.
    pub const fn contains(&self, page: u64) -> bool {
        page >= self.base && page < self.base + self.pages as u64 * PAGE_SIZE && page.is_multiple_of(PAGE_SIZE)
    }

    /// Takes a free page (not zeroed).
    ///
    /// # Errors
    /// [`PtError::PoolExhausted`].
    pub fn take(&mut self) -> Result<u64, PtError> {
        let free = (0..self.pages).find(|&i| self.used[i / 64] & 1 << (i % 64) == 0).ok_or(PtError::PoolExhausted)?;
        self.used[free / 64] |= 1 << (free % 64);
        Ok(self.base + free as u64 * PAGE_SIZE)
    }

    /// Gives `page` back.
    ///
    /// # Errors
    /// [`PtError::NotPoolPage`].
    pub fn give(&mut self, page: u64) -> Result<(), PtError> {
        if !self.contains(page) {
            return Err(PtError::NotPoolPage(page));
        }
        let i = ((page - self.base) / PAGE_SIZE) as usize;
        self.used[i / 64] &= !(1 << (i % 64));
        Ok(())
    }

    /// Pages in use.
    pub fn in_use(&self) -> u32 {
        self.used.iter().map(|w| w.count_ones()).sum()
    }
}

/// One per-process address space: its PML4's guest-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// The PML4 page (what the ring loads into PDP0).
    pub pml4: u64,
}

/// A present PT leaf for RAM page `page` (guest-physical).
///
/// # Errors
/// [`PtError::Unaligned`], [`PtError::Address`].
pub const fn ram_leaf(page: u64) -> Result<u64, PtError> {
    if !page.is_multiple_of(PAGE_SIZE) {
        return Err(PtError::Unaligned(page));
    }
    if page & !ppgtt::ADDRESS_MASK != 0 {
        return Err(PtError::Address(page));
    }
    Ok(page | PRESENT)
}

/// A present PT leaf for the page at byte `offset` of its local memory.
///
/// # Errors
/// As [`ram_leaf`].
pub const fn local_leaf(offset: u64) -> Result<u64, PtError> {
    match ram_leaf(offset) {
        Ok(entry) => Ok(entry | ppgtt::LOCAL_MEMORY),
        Err(e) => Err(e),
    }
}

/// A present 2 MiB PD leaf for the 2 MiB aligned RAM at `address`.
///
/// # Errors
/// As [`ram_leaf`] (alignment: 2 MiB).
pub const fn large_ram_leaf(address: u64) -> Result<u64, PtError> {
    if !address.is_multiple_of(LARGE_PAGE_SIZE) {
        return Err(PtError::Unaligned(address));
    }
    match ram_leaf(address) {
        Ok(entry) => Ok(entry | PS_2M),
        Err(e) => Err(e),
    }
}

/// A table-pointer entry for table page `table`.
const fn table_entry(table: u64) -> u64 {
    table | PRESENT
}

/// The per-process table builder.
pub struct Tables<M: Memory> {
    /// The memory the tables live in.
    pub memory: M,
    pool: Pool,
}

impl<M: Memory> Tables<M> {
    /// A builder over `pool`.
    pub const fn new(memory: M, pool: Pool) -> Tables<M> {
        Tables { memory, pool }
    }

    /// Pool pages in use.
    pub fn pages_in_use(&self) -> u32 {
        self.pool.in_use()
    }

    /// A zeroed table page from the pool.
    ///
    /// # Errors
    /// [`PtError::PoolExhausted`].
    pub fn alloc_table(&mut self) -> Result<u64, PtError> {
        let page = self.pool.take()?;
        self.memory.zero_page(page);
        Ok(page)
    }

    /// Gives a table page back to the pool (unlink it first).
    ///
    /// # Errors
    /// [`PtError::NotPoolPage`].
    pub fn free_table(&mut self, page: u64) -> Result<(), PtError> {
        self.pool.give(page)
    }

    /// A new, empty context.
    ///
    /// # Errors
    /// [`PtError::PoolExhausted`].
    pub fn new_context(&mut self) -> Result<Context, PtError> {
        Ok(Context { pml4: self.alloc_table()? })
    }

    /// Writes `value` at entry address `slot`.
    pub fn write_entry(&mut self, slot: u64, value: u64, how: Store) {
        match how {
            Store::Whole => self.memory.write64(slot, value),
            Store::Halves => {
                self.memory.write32(slot, value as u32);
                self.memory.write32(slot + 4, (value >> 32) as u32);
            }
        }
    }

    /// Writes only the low half of the entry at `slot`.
    pub fn write_low_half(&mut self, slot: u64, value: u64) {
        self.memory.write32(slot, value as u32);
    }

    /// Writes two adjacent entries at the 16-byte aligned `slot` with one
    /// pair store ([`PAIR_STORES`] instructions).
    ///
    /// # Errors
    /// [`PtError::Unaligned`].
    pub fn write_pair(&mut self, slot: u64, first: u64, second: u64) -> Result<(), PtError> {
        if !slot.is_multiple_of(2 * ENTRY_SIZE) {
            return Err(PtError::Unaligned(slot));
        }
        self.memory.write_pair(slot, first, second);
        Ok(())
    }

    /// The entry at `slot`.
    pub fn entry(&self, slot: u64) -> u64 {
        self.memory.read64(slot)
    }

    fn check_address(address: u64) -> Result<(), PtError> {
        if address >= ppgtt::ADDRESS_LIMIT { Err(PtError::Address(address)) } else { Ok(()) }
    }

    /// Address of the entry of `level` that translates graphics address
    /// `address` in `context`, walking existing tables only.
    ///
    /// # Errors
    /// [`PtError::NotMapped`] when a table above `level` is missing;
    /// [`PtError::LargePage`] when a 2 MiB page is in the way.
    pub fn slot(&self, context: Context, address: u64, level: usize) -> Result<u64, PtError> {
        Self::check_address(address)?;
        let mut table = context.pml4;
        for walked in PML4..level {
            let entry = self.memory.read64(table + ppgtt::index(address, walked) as u64 * ENTRY_SIZE);
            if entry & PRESENT == 0 {
                return Err(PtError::NotMapped(address));
            }
            if ppgtt::is_leaf(entry, walked) {
                return Err(PtError::LargePage(address));
            }
            table = ppgtt::entry_address(entry);
        }
        Ok(table + ppgtt::index(address, level) as u64 * ENTRY_SIZE)
    }

    /// Like [`Tables::slot`], creating the missing tables above `level`
    /// (their pointers written `how`).
    ///
    /// # Errors
    /// [`PtError::PoolExhausted`], [`PtError::LargePage`], [`PtError::Address`].
    pub fn ensure_slot(&mut self, context: Context, address: u64, level: usize, how: Store) -> Result<u64, PtError> {
        Self::check_address(address)?;
        let mut table = context.pml4;
        for walked in PML4..level {
            let slot = table + ppgtt::index(address, walked) as u64 * ENTRY_SIZE;
            let entry = self.memory.read64(slot);
            table = if entry & PRESENT == 0 {
                let new = self.alloc_table()?;
                self.write_entry(slot, table_entry(new), how);
                new
            } else if ppgtt::is_leaf(entry, walked) {
                return Err(PtError::LargePage(address));
            } else {
                ppgtt::entry_address(entry)
            };
        }
        Ok(table + ppgtt::index(address, level) as u64 * ENTRY_SIZE)
    }

    /// Maps the 4 KiB page at graphics `address` with PT entry `leaf` (any
    /// value: tests write bad ones); returns the PT entry's address.
    ///
    /// # Errors
    /// [`PtError::Unaligned`] and as [`Tables::ensure_slot`].
    pub fn map_4k(&mut self, context: Context, address: u64, leaf: u64, how: Store) -> Result<u64, PtError> {
        if !address.is_multiple_of(PAGE_SIZE) {
            return Err(PtError::Unaligned(address));
        }
        let slot = self.ensure_slot(context, address, PT, how)?;
        self.write_entry(slot, leaf, how);
        Ok(slot)
    }

    /// Maps `pages` consecutive RAM pages from `page` at graphics `address`.
    ///
    /// # Errors
    /// As [`Tables::map_4k`] and [`ram_leaf`].
    pub fn map_ram(&mut self, context: Context, address: u64, page: u64, pages: u64, how: Store) -> Result<(), PtError> {
        for i in 0..pages {
            self.map_4k(context, address + i * PAGE_SIZE, ram_leaf(page + i * PAGE_SIZE)?, how)?;
        }
        Ok(())
    }

    /// Maps `pages` consecutive local-memory pages from byte `offset` at
    /// graphics `address`.
    ///
    /// # Errors
    /// As [`Tables::map_4k`] and [`local_leaf`].
    pub fn map_local(&mut self, context: Context, address: u64, offset: u64, pages: u64, how: Store) -> Result<(), PtError> {
        for i in 0..pages {
            self.map_4k(context, address + i * PAGE_SIZE, local_leaf(offset + i * PAGE_SIZE)?, how)?;
        }
        Ok(())
    }

    /// Maps the 2 MiB at graphics `address` with PD entry `leaf` (a
    /// [`PS_2M`] entry); returns the PD entry's address. A PT page linked
    /// there before is unlinked but not freed.
    ///
    /// # Errors
    /// [`PtError::Unaligned`] and as [`Tables::ensure_slot`].
    pub fn map_2m(&mut self, context: Context, address: u64, leaf: u64, how: Store) -> Result<u64, PtError> {
        if !address.is_multiple_of(LARGE_PAGE_SIZE) {
            return Err(PtError::Unaligned(address));
        }
        let slot = self.ensure_slot(context, address, PD, how)?;
        self.write_entry(slot, leaf, how);
        Ok(slot)
    }

    /// Clears the leaf translating `address` (a PT entry, or a 2 MiB PD
    /// entry); returns the old entry.
    ///
    /// # Errors
    /// [`PtError::NotMapped`].
    pub fn unmap(&mut self, context: Context, address: u64) -> Result<u64, PtError> {
        let slot = match self.slot(context, address, PT) {
            Ok(slot) => slot,
            Err(PtError::LargePage(_)) => self.slot(context, address, PD)?,
            Err(e) => return Err(e),
        };
        let old = self.memory.read64(slot);
        self.write_entry(slot, 0, Store::Whole);
        Ok(old)
    }

    /// Points the entry of `level` (PML4, PDP or PD) translating `address`
    /// at the table page `table` (missing tables above it are created);
    /// returns the entry's address.
    ///
    /// # Errors
    /// [`PtError::Unaligned`], [`PtError::Address`] for a `level` that holds
    /// no table pointers, and as [`Tables::ensure_slot`].
    pub fn link_table(&mut self, context: Context, address: u64, level: usize, table: u64, how: Store) -> Result<u64, PtError> {
        if level >= PT {
            return Err(PtError::Address(address));
        }
        if !table.is_multiple_of(PAGE_SIZE) {
            return Err(PtError::Unaligned(table));
        }
        let slot = self.ensure_slot(context, address, level, how)?;
        self.write_entry(slot, table_entry(table), how);
        Ok(slot)
    }

    /// Clears the entry of `level` translating `address`, which points at
    /// a table page; returns that page (still allocated: free it, or reuse
    /// it as ordinary memory).
    ///
    /// # Errors
    /// [`PtError::NotMapped`], [`PtError::LargePage`].
    pub fn unlink_table(&mut self, context: Context, address: u64, level: usize) -> Result<u64, PtError> {
        let slot = self.slot(context, address, level)?;
        let entry = self.memory.read64(slot);
        if entry & PRESENT == 0 {
            return Err(PtError::NotMapped(address));
        }
        if ppgtt::is_leaf(entry, level) {
            return Err(PtError::LargePage(address));
        }
        self.write_entry(slot, 0, Store::Whole);
        Ok(ppgtt::entry_address(entry))
    }

    /// The table pages of `context` (its PML4 and every pool page a present
    /// table pointer in its tree names), into `out`; returns how many
    /// (pages beyond `out`'s length are counted but not stored).
    pub fn table_pages(&self, context: Context, out: &mut [u64]) -> usize {
        let mut count = 0;
        let push = |page: u64, count: &mut usize, out: &mut [u64]| {
            if out[..(*count).min(out.len())].contains(&page) {
                return;
            }
            if let Some(slot) = out.get_mut(*count) {
                *slot = page;
            }
            *count += 1;
        };
        push(context.pml4, &mut count, out);
        self.walk(context.pml4, PML4, &mut |page| push(page, &mut count, out));
        count
    }

    fn walk(&self, table: u64, level: usize, visit: &mut dyn FnMut(u64)) {
        if level == PT {
            return;
        }
        for i in 0..ENTRIES as u64 {
            let entry = self.memory.read64(table + i * ENTRY_SIZE);
            if entry & PRESENT == 0 || ppgtt::is_leaf(entry, level) {
                continue;
            }
            let child = ppgtt::entry_address(entry);
            if self.pool.contains(child) {
                visit(child);
                self.walk(child, level + 1, visit);
            }
        }
    }

    /// Gives every table page of `context` back to the pool except those in
    /// `keep` (pages another context still links); call after releasing it.
    pub fn free_context(&mut self, context: Context, keep: &[u64]) {
        let mut pages = [0u64; Pool::MAX_PAGES];
        let count = self.table_pages(context, &mut pages).min(Pool::MAX_PAGES);
        for &page in &pages[..count] {
            if !keep.contains(&page) {
                let _ = self.pool.give(page);
            }
        }
    }
}

/// Dwords of [`context_submission`].
pub const SUBMISSION_DWORDS: usize = (5 + cmd::MI_BATCH_BUFFER_START_DWORDS + 1).next_multiple_of(2);

/// The ring commands that run the PPGTT batch at graphics address `batch`
/// in the context whose PML4 is `pml4`: PDP0 load, MI_BATCH_BUFFER_START
/// (PPGTT), MI_USER_INTERRUPT, padding.
pub const fn context_submission(pml4: u64, batch: u64) -> [u32; SUBMISSION_DWORDS] {
    let load = load_pdp0(pml4);
    let start = mi_batch_buffer_start(batch, true);
    let mut dwords = [mi_noop(); SUBMISSION_DWORDS];
    let mut i = 0;
    while i < load.len() {
        dwords[i] = load[i];
        i += 1;
    }
    let mut j = 0;
    while j < start.len() {
        dwords[i + j] = start[j];
        j += 1;
    }
    dwords[i + j] = mi_user_interrupt();
    dwords
}

/// MI_STORE_DATA_IMM of one dword at per-process graphics address `address`
/// (without "Use Global GTT", the form for a PPGTT batch).
pub const fn mi_store_data_imm(address: u64, value: u32) -> [u32; cmd::MI_STORE_DATA_IMM_DWORDS] {
    let global = bulkhead_abi::gpu::encode::mi_store_data_imm(address, value);
    [global[0] & !cmd::SDI_USE_GLOBAL_GTT, global[1], global[2], global[3]]
}

/// Writes `commands` and MI_BATCH_BUFFER_END at guest-physical `memory`
/// (the page a batch's graphics address maps to); returns the dwords
/// written.
pub fn write_batch(memory: u64, commands: &[u32]) -> usize {
    for (i, &dword) in commands.iter().chain(core::iter::once(&mi_batch_buffer_end())).enumerate() {
        ram_write32(memory + 4 * i as u64, dword);
    }
    commands.len() + 1
}

/// Writes the batch `commands` (MI_BATCH_BUFFER_END appended) at
/// guest-physical `batch_memory`, which `context` maps at graphics address
/// `batch_address`, and runs it in `context` ([`context_submission`]),
/// waiting as [`Gpu::run`] does.
///
/// # Errors
/// As [`Gpu::run`].
pub fn run_in_context(gpu: &mut Gpu, context: Context, batch_memory: u64, batch_address: u64, commands: &[u32]) -> Result<Outcome, GpuError> {
    write_batch(batch_memory, commands);
    gpu.run(&context_submission(context.pml4, batch_address))
}

/// Tells the hypervisor that the context whose PML4 is `pml4` will not be
/// submitted again (`CONTEXT_RELEASE_LO`, then `_HI`, which performs it).
pub fn release_context(gpu: &Gpu, pml4: u64) {
    gpu.write(vgpu::CONTEXT_RELEASE_LO, pml4 as u32);
    gpu.write(vgpu::CONTEXT_RELEASE_HI, (pml4 >> 32) as u32);
}

/// The PPGTT counters of the information page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// INFO_PT_TRAPS.
    pub traps: u32,
    /// INFO_PT_TRACKED.
    pub tracked: u32,
    /// INFO_PT_REFUSED.
    pub refused: u32,
    /// INFO_PT_SHADOW_PAGES.
    pub shadow_pages: u32,
    /// INFO_PT_SHADOW_LIMIT.
    pub shadow_limit: u32,
}

impl Counters {
    /// Reads them.
    pub fn read(gpu: &Gpu) -> Counters {
        Counters {
            traps: gpu.read(vgpu::INFO_PT_TRAPS),
            tracked: gpu.read(vgpu::INFO_PT_TRACKED),
            refused: gpu.read(vgpu::INFO_PT_REFUSED),
            shadow_pages: gpu.read(vgpu::INFO_PT_SHADOW_PAGES),
            shadow_limit: gpu.read(vgpu::INFO_PT_SHADOW_LIMIT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Sparse RAM that records every store instruction.
    #[derive(Default)]
    struct FakeRam {
        bytes: HashMap<u64, u8>,
        stores: Vec<(u64, u8)>,
    }

    impl FakeRam {
        fn put(&mut self, address: u64, value: u64, size: u8) {
            for i in 0..u64::from(size) {
                self.bytes.insert(address + i, (value >> (8 * i)) as u8);
            }
        }
    }

    impl Memory for FakeRam {
        fn read64(&self, address: u64) -> u64 {
            (0..8).map(|i| u64::from(*self.bytes.get(&(address + i)).unwrap_or(&0)) << (8 * i)).sum()
        }
        fn write64(&mut self, address: u64, value: u64) {
            self.put(address, value, 8);
            self.stores.push((address, 8));
        }
        fn write32(&mut self, address: u64, value: u32) {
            self.put(address, value.into(), 4);
            self.stores.push((address, 4));
        }
        fn write_pair(&mut self, address: u64, first: u64, second: u64) {
            self.put(address, first, 8);
            self.put(address + 8, second, 8);
            self.stores.push((address, 16));
        }
        fn zero_page(&mut self, address: u64) {
            for i in 0..PAGE_SIZE {
                self.bytes.insert(address + i, 0);
            }
        }
    }

    const POOL: u64 = 0x4040_0000;

    fn tables() -> Tables<FakeRam> {
        Tables::new(FakeRam::default(), Pool::new(POOL, 16).unwrap())
    }

    fn entry_at(t: &Tables<FakeRam>, table: u64, index: usize) -> u64 {
        t.memory.read64(table + index as u64 * ENTRY_SIZE)
    }

    #[test]
    fn a_4k_mapping_builds_four_levels_at_the_address_indices() {
        let mut t = tables();
        let c = t.new_context().unwrap();
        let va = (1 << 39) | (2 << 30) | (3 << 21) | (4 << 12);
        let slot = t.map_4k(c, va, ram_leaf(0x4080_1000).unwrap(), Store::Whole).unwrap();
        assert_eq!(t.pages_in_use(), 4);
        let pdp = ppgtt::entry_address(entry_at(&t, c.pml4, 1));
        let pd = ppgtt::entry_address(entry_at(&t, pdp, 2));
        let pt = ppgtt::entry_address(entry_at(&t, pd, 3));
        assert_eq!(slot, pt + 4 * ENTRY_SIZE);
        assert_eq!(entry_at(&t, pt, 4), 0x4080_1001);
        assert_eq!(t.slot(c, va, PT), Ok(slot));
        let mut pages = [0; 8];
        assert_eq!(t.table_pages(c, &mut pages), 4);
        assert_eq!(pages[..4], [c.pml4, pdp, pd, pt]);
        // A second page in the same PT allocates nothing.
        t.map_4k(c, va + PAGE_SIZE, local_leaf(0x2000).unwrap(), Store::Whole).unwrap();
        assert_eq!(t.pages_in_use(), 4);
        assert_eq!(entry_at(&t, pt, 5), 0x2000 | ppgtt::LOCAL_MEMORY | PRESENT);
    }

    #[test]
    fn large_pages_and_unmapping() {
        let mut t = tables();
        let c = t.new_context().unwrap();
        let va = 0x4000_0000;
        assert_eq!(large_ram_leaf(0x4080_1000), Err(PtError::Unaligned(0x4080_1000)));
        let slot = t.map_2m(c, va, large_ram_leaf(0x4080_0000).unwrap(), Store::Whole).unwrap();
        assert_eq!(t.entry(slot), 0x4080_0000 | PS_2M | PRESENT);
        assert_eq!(t.pages_in_use(), 3, "PML4, PDP, PD");
        assert_eq!(t.map_4k(c, va + PAGE_SIZE, ram_leaf(0x1000).unwrap(), Store::Whole), Err(PtError::LargePage(va + PAGE_SIZE)));
        assert_eq!(t.unmap(c, va + 0x1234), Ok(0x4080_0000 | PS_2M | PRESENT));
        assert_eq!(t.entry(slot), 0);
        assert_eq!(t.unmap(c, 0x8000_0000), Err(PtError::NotMapped(0x8000_0000)));
        assert_eq!(t.map_2m(c, va + PAGE_SIZE, 0, Store::Whole), Err(PtError::Unaligned(va + PAGE_SIZE)));
    }

    #[test]
    fn stores_are_whole_halves_or_pairs() {
        let mut t = tables();
        let c = t.new_context().unwrap();
        let slot = t.map_4k(c, 0x1000, ram_leaf(0x4080_0000).unwrap(), Store::Whole).unwrap();
        t.memory.stores.clear();
        t.write_entry(slot, 0x1_2345_6001, Store::Halves);
        assert_eq!(t.memory.stores, [(slot, 4), (slot + 4, 4)]);
        assert_eq!(t.entry(slot), 0x1_2345_6001);
        t.memory.stores.clear();
        t.write_low_half(slot, 0x4080_2001);
        assert_eq!(t.entry(slot), 0x1_4080_2001, "the high half stays");
        assert_eq!(t.write_pair(slot, 1, 2), Err(PtError::Unaligned(slot)), "entry 1 is not 16-byte aligned");
        t.write_pair(slot - 8, 0x4080_3001, 0x4080_4001).unwrap();
        assert_eq!(t.memory.stores, [(slot, 4), (slot - 8, 16)]);
        assert_eq!((t.entry(slot - 8), t.entry(slot)), (0x4080_3001, 0x4080_4001));
        assert_eq!(Store::Halves.stores() + Store::Whole.stores(), 3);
    }

    #[test]
    fn tables_are_linked_shared_unlinked_and_freed() {
        let mut t = tables();
        let (a, b) = (t.new_context().unwrap(), t.new_context().unwrap());
        let va = 0x60_0000;
        t.map_4k(a, va, ram_leaf(0x4080_0000).unwrap(), Store::Whole).unwrap();
        let shared = ppgtt::entry_address(t.entry(t.slot(a, va, PD).unwrap()));
        let slot = t.link_table(b, va, PD, shared, Store::Whole).unwrap();
        assert_eq!(t.entry(slot), shared | PRESENT);
        assert_eq!(t.slot(b, va, PT), t.slot(a, va, PT), "one PT page, two contexts");
        assert_eq!(t.link_table(b, va, PT, shared, Store::Whole), Err(PtError::Address(va)));
        let in_use = t.pages_in_use();
        assert_eq!(t.unlink_table(b, va, PD), Ok(shared));
        assert_eq!(t.slot(b, va, PT), Err(PtError::NotMapped(va)));
        assert_eq!(t.unlink_table(b, va, PD), Err(PtError::NotMapped(va)));
        t.free_context(b, &[shared]);
        assert_eq!(t.pages_in_use(), in_use - 3, "b's PML4, PDP and PD");
        assert_eq!(t.free_table(0x1000), Err(PtError::NotPoolPage(0x1000)));
    }

    #[test]
    fn the_pool_runs_out_and_refills() {
        let mut pool = Pool::new(POOL, 2).unwrap();
        let (p, q) = (pool.take().unwrap(), pool.take().unwrap());
        assert_eq!((p, q), (POOL, POOL + PAGE_SIZE));
        assert_eq!(pool.take(), Err(PtError::PoolExhausted));
        pool.give(p).unwrap();
        assert_eq!(pool.take(), Ok(p));
        assert!(Pool::new(POOL + 8, 1).is_err() && Pool::new(POOL, Pool::MAX_PAGES + 1).is_err());
        let mut t = Tables::new(FakeRam::default(), Pool::new(POOL, 3).unwrap());
        let c = t.new_context().unwrap();
        assert_eq!(t.map_4k(c, 0, ram_leaf(0).unwrap(), Store::Whole), Err(PtError::PoolExhausted));
        assert_eq!(t.map_4k(c, ppgtt::ADDRESS_LIMIT, 0, Store::Whole), Err(PtError::Address(ppgtt::ADDRESS_LIMIT)));
    }

    #[test]
    fn a_context_submission_loads_pdp0_then_starts_a_ppgtt_batch() {
        let dwords = context_submission(0x4040_3000, 0x10_0000);
        assert_eq!(dwords[..5], load_pdp0(0x4040_3000));
        assert_eq!(dwords[5..8], mi_batch_buffer_start(0x10_0000, true));
        assert_eq!(dwords[8], mi_user_interrupt());
        assert!(dwords[9..].iter().all(|&d| d == mi_noop()));
        assert!(SUBMISSION_DWORDS.is_multiple_of(2));
        let store = mi_store_data_imm(0x1_0000_1000, 7);
        assert_eq!(store, [0x1000_0002, 0x1000, 1, 7]);
        assert_eq!(cmd::mi_opcode(store[0]), cmd::MI_STORE_DATA_IMM);
    }
}
