//! Shadow per-process GTTs (DESIGN.md §5): the page-table trees the GPU
//! really walks for a partition's per-process contexts.
//!
//! A guest builds gen8 4-level tables ([`bulkhead_abi::gpu::ppgtt`]) in its
//! own RAM, where the hypervisor cannot trap writes as MMIO. When a context
//! (a PML4 page) is first submitted, its tree is walked: every table page is
//! write-protected in the partition's CPU view ([`PpgttMemory::track`]) and
//! gets a shadow page in hypervisor memory whose entries hold translated
//! and validated addresses. From then on every trapped store to a table
//! page ([`ShadowPpgtt::on_write`]) updates the shadow in place, so the GPU
//! follows the guest's current mapping without ever walking guest memory.
//!
//! - **Keyed by guest page.** A table page referenced from several entries
//!   or contexts has one shadow, reference counted; the level is part of
//!   its identity, so a page reached at two levels (or looping back to an
//!   ancestor) is refused at the second.
//! - **Validated leaves.** A leaf must name a page of the partition's
//!   device view (RAM it may DMA to, read-write; pinned, rule 3) that is not
//!   one of its table pages, or a page of its local-memory share. Anything
//!   else points at the partition's scratch page; a table pointer that is
//!   not a page of its own RAM points at a scratch table whose entries all
//!   lead to the scratch page (i915's scratch PT/PD/PDP). A page that
//!   becomes a table later is taken away from the leaves that mapped it, so
//!   the GPU can never write the tables the shadow is derived from.
//! - **Add before remove.** A changed entry's new target is referenced
//!   (built, tracked, pinned) before the old one is released, so a subtree
//!   the new entry still shares is never torn down in between.
//! - **Partial writes.** A 4-byte half of an entry waits until the other
//!   half has been written; 1- and 2-byte stores, and entries whose new
//!   target could not be shadowed for lack of pages, are parked and
//!   re-read from guest memory by [`ShadowPpgtt::reapply_parked`] before the
//!   next submission. Meanwhile the shadow keeps the old entry (or scratch),
//!   never a mix.
//! - **2 MiB pages.** A PD entry with `PS_2M` is shadowed as a 2 MiB page
//!   when the 512 pages behind it are valid, host-contiguous and 2 MiB
//!   aligned; otherwise it is split into a private shadow PT of 4 KiB
//!   leaves, each validated on its own.
//! - **Reclaim.** When the last reference to a table goes (its parent entry
//!   changed, or its context released or evicted), its shadow page is
//!   freed, its leaves unpinned and the guest page unprotected: writes to it
//!   no longer trap.
//! - **Contexts.** Roots stay cached after their submission, so a context is
//!   built once. [`ShadowPpgtt::release`] drops one (the guest's "PPGTT
//!   destroy" notification); when the shadow pool runs out, the least
//!   recently used context with no work in flight is evicted.

use crate::address::{Gpa, Hpa, Iova};
use crate::address_space::{Access, AddressSpace, RegionKind};
use crate::gpu::gtt::{validate_page, LocalMemory};
use crate::pinning::PinnedPages;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec;
use alloc::vec::Vec;
use bulkhead_abi::gpu::ppgtt::{self, ENTRIES, ENTRY_SIZE, LARGE_PAGE_SIZE, PAGE_SIZE, PML4, PT};

/// Pages under one 2 MiB entry.
const PAGES_PER_LARGE: u64 = LARGE_PAGE_SIZE / PAGE_SIZE;
/// Halves of an entry written since it was last complete.
const LOW_HALF: u8 = 1;
const HIGH_HALF: u8 = 2;
const BOTH_HALVES: u8 = LOW_HALF | HIGH_HALF;
/// A 1- or 2-byte store (or a shadow that could not be built): re-read
/// before the next submission.
const REREAD: u8 = 4;

/// The hypervisor services the shadow needs: guest table reads, shadow
/// pages, and the CPU view's write protection.
pub trait PpgttMemory {
    /// Entry `index` of the guest table page at host address `table` (a
    /// page of the partition's RAM the caller validated).
    fn read_guest_entry(&self, table: Hpa, index: usize) -> u64;
    /// A zeroed page for a shadow table, from the partition's pool; `None`
    /// when the pool is used up.
    fn allocate(&mut self) -> Option<Hpa>;
    /// Returns a page to the pool.
    fn free(&mut self, page: Hpa);
    /// Writes entry `index` of shadow page `page` (what the GPU walks).
    fn write_shadow_entry(&mut self, page: Hpa, index: usize, entry: u64);
    /// Write-protects guest page `page` in the partition's CPU view, so its
    /// stores trap; `false` if that is refused.
    fn track(&mut self, page: Gpa) -> bool;
    /// Gives the page its write access back.
    fn untrack(&mut self, page: Gpa);
}

/// What a shadow operation works with.
pub struct Env<'a> {
    /// The partition's address space: its device view validates leaves,
    /// its RAM holds the tables.
    pub space: &'a AddressSpace,
    /// The partition's pinned pages (shared with its global GTT).
    pub pins: &'a mut PinnedPages,
    /// Hypervisor services.
    pub memory: &'a mut dyn PpgttMemory,
}

/// Why a context cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextError {
    /// The PML4 address is not a page of the partition's writable RAM, or
    /// the page is already one of its tables at another level.
    NotATable(Gpa),
    /// The shadow pool is used up even after evicting idle contexts.
    ShadowFull,
}

/// What one shadow entry stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// The guest entry is not present: so is the shadow's.
    Empty,
    /// A leaf refused: the scratch page.
    RefusedLeaf,
    /// A table pointer refused: the scratch table of the next level.
    RefusedTable,
    /// The shadow of the guest table at this guest page.
    Table(u64),
    /// A 4 KiB page of RAM (pinned).
    Ram { gpa: u64, hpa: Hpa },
    /// A 4 KiB page at this real local-memory offset.
    Local(u64),
    /// A 2 MiB page of RAM (its 512 pages pinned).
    Ram2M { gpa: u64, hpa: Hpa },
    /// 2 MiB at this real local-memory offset.
    Local2M(u64),
    /// A 2 MiB guest page split into the private shadow PT at this address.
    Split(Hpa),
}

/// [`ShadowPpgtt::holders`] key of a 2 MiB leaf: its (2 MiB aligned) base
/// with bit 0 set, apart from the 4 KiB pages' keys.
const fn large_key(base: u64) -> u64 {
    base | 1
}

/// The shadow of one guest table page.
#[derive(Debug)]
struct Table {
    level: usize,
    /// Host page of the guest's table (what is read).
    host: Hpa,
    /// The shadow page (what the GPU walks).
    shadow: Hpa,
    /// Parent entries and context roots referring to it.
    references: u32,
    slots: Vec<Slot>,
}

/// A cached context.
#[derive(Clone, Copy, Debug)]
struct Root {
    last_used: u64,
    in_flight: u32,
    released: bool,
}

/// A partition's shadow per-process GTTs.
#[derive(Debug)]
pub struct ShadowPpgtt {
    tables: BTreeMap<u64, Table>,
    /// Private PTs of split 2 MiB entries: shadow page → its leaves.
    splits: BTreeMap<u64, Vec<Slot>>,
    /// Which entries map a guest RAM page (its address; a 2 MiB leaf under
    /// [`large_key`]): found at once when the page becomes a table.
    holders: BTreeMap<u64, BTreeSet<(u64, usize)>>,
    roots: BTreeMap<u64, Root>,
    /// (table page, index) → `*_HALF` / `REREAD` bits.
    parked: BTreeMap<(u64, usize), u8>,
    /// Scratch PDP, PD, PT (all leading to the scratch page), once needed.
    scratch_tables: Option<[Hpa; 3]>,
    /// The shadow leaf for the scratch page.
    scratch_leaf: u64,
    local: LocalMemory,
    clock: u64,
    refused: u64,
}

/// Counters for the information page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShadowStats {
    /// Guest pages shadowed (and write-protected) as tables.
    pub tables: usize,
    /// Shadow pages in use (tables, split PTs, scratch tables).
    pub shadow_pages: usize,
    /// Leaves and table pointers pointed at scratch so far.
    pub refused: u64,
    /// Contexts cached.
    pub contexts: usize,
}

fn page_of(gpa: u64) -> u64 {
    gpa & !(PAGE_SIZE - 1)
}

impl ShadowPpgtt {
    /// No contexts yet. `scratch_leaf` is the present shadow leaf of the
    /// partition's scratch page; `local` its share of local memory.
    pub fn new(scratch_leaf: u64, local: LocalMemory) -> ShadowPpgtt {
        ShadowPpgtt {
            tables: BTreeMap::new(),
            splits: BTreeMap::new(),
            holders: BTreeMap::new(),
            roots: BTreeMap::new(),
            parked: BTreeMap::new(),
            scratch_tables: None,
            scratch_leaf,
            local,
            clock: 0,
            refused: 0,
        }
    }

    /// Counters.
    pub fn stats(&self) -> ShadowStats {
        ShadowStats {
            tables: self.tables.len(),
            shadow_pages: self.tables.len() + self.splits.len() + self.scratch_tables.map_or(0, |t| t.len()),
            refused: self.refused,
            contexts: self.roots.len(),
        }
    }

    /// Whether guest page `page` is one of the shadowed tables.
    pub fn is_table(&self, page: Gpa) -> bool {
        self.tables.contains_key(&page_of(page.raw()))
    }

    /// The shadow PML4 (what PDP0 must hold) for the context whose guest
    /// PML4 is at `pml4`, building the shadow tree on first use. Also marks
    /// the context as used by one more submission in flight (see
    /// [`ShadowPpgtt::finish`]).
    ///
    /// # Errors
    /// [`ContextError`].
    pub fn begin(&mut self, env: &mut Env<'_>, pml4: Gpa) -> Result<Hpa, ContextError> {
        let key = pml4.raw();
        if !pml4.is_aligned(PAGE_SIZE) {
            return Err(ContextError::NotATable(pml4));
        }
        self.clock += 1;
        if !self.roots.contains_key(&key) {
            loop {
                match self.reference_table(env, key, PML4) {
                    Ok(Slot::Table(_)) => break,
                    Ok(_) => return Err(ContextError::NotATable(pml4)),
                    Err(Full) => {
                        if !self.evict_idle(env) {
                            return Err(ContextError::ShadowFull);
                        }
                    }
                }
            }
            self.roots.insert(key, Root { last_used: 0, in_flight: 0, released: false });
        }
        let clock = self.clock;
        let root = self.roots.get_mut(&key).ok_or(ContextError::NotATable(pml4))?;
        root.last_used = clock;
        root.in_flight += 1;
        root.released = false;
        self.tables.get(&key).map(|t| t.shadow).ok_or(ContextError::NotATable(pml4))
    }

    /// A submission that used the context at `pml4` completed (or was
    /// dropped); a context released meanwhile goes at the next
    /// [`ShadowPpgtt::settle`].
    pub fn finish(&mut self, pml4: Gpa) {
        let Some(root) = self.roots.get_mut(&pml4.raw()) else { return };
        root.in_flight = root.in_flight.saturating_sub(1);
    }

    /// Drops the contexts released while their work was in flight, now
    /// that it is not.
    pub fn settle(&mut self, env: &mut Env<'_>) {
        let done: Vec<u64> = self.roots.iter().filter(|(_, r)| r.released && r.in_flight == 0).map(|(&k, _)| k).collect();
        for key in done {
            self.roots.remove(&key);
            self.drop_reference(env, key);
        }
    }

    /// The guest no longer uses the context at `pml4`: its shadow goes now,
    /// or when its last submission in flight completes. Returns whether it
    /// was a context.
    pub fn release(&mut self, env: &mut Env<'_>, pml4: Gpa) -> bool {
        let key = pml4.raw();
        let Some(root) = self.roots.get_mut(&key) else { return false };
        if root.in_flight > 0 {
            root.released = true;
        } else {
            self.roots.remove(&key);
            self.drop_reference(env, key);
        }
        true
    }

    /// Drops everything (partition reset): all pages freed, unpinned and
    /// unprotected.
    pub fn reset(&mut self, env: &mut Env<'_>) {
        for key in core::mem::take(&mut self.roots).into_keys() {
            self.drop_reference(env, key);
        }
        if let Some(pages) = self.scratch_tables.take() {
            for page in pages {
                env.memory.free(page);
            }
        }
        self.parked.clear();
    }

    /// A trapped store of `width` bytes at `gpa` (already performed in guest
    /// memory). Returns whether `gpa` lies in a shadowed table.
    pub fn on_write(&mut self, env: &mut Env<'_>, gpa: Gpa, width: u8) -> bool {
        let page = page_of(gpa.raw());
        if !self.tables.contains_key(&page) {
            return false;
        }
        let offset = gpa.raw() - page;
        let first = (offset / ENTRY_SIZE) as usize;
        let last = ((offset + u64::from(width.max(1)) - 1) / ENTRY_SIZE) as usize;
        for index in first..=last.min(ENTRIES - 1) {
            let within = offset.saturating_sub(index as u64 * ENTRY_SIZE);
            let bits = match (width, within) {
                (8, 0) => BOTH_HALVES,
                (4, 0) => LOW_HALF,
                (4, 4) => HIGH_HALF,
                _ => REREAD,
            };
            let parked = self.parked.entry((page, index)).or_insert(0);
            *parked |= bits;
            if *parked & REREAD == 0 && *parked & BOTH_HALVES == BOTH_HALVES {
                self.parked.remove(&(page, index));
                self.reshadow(env, page, index);
            }
        }
        true
    }

    /// Re-reads every parked entry (half-written, partially written, or not
    /// shadowed for lack of pages). Call before each submission.
    pub fn reapply_parked(&mut self, env: &mut Env<'_>) {
        for (page, index) in core::mem::take(&mut self.parked).into_keys() {
            if self.tables.contains_key(&page) {
                self.reshadow(env, page, index);
            }
        }
    }

    /// Entries waiting for completion or a re-read.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Re-reads entry `index` of table `page` and shadows it: new target
    /// first, then the old one released.
    fn reshadow(&mut self, env: &mut Env<'_>, page: u64, index: usize) {
        let Some(table) = self.tables.get(&page) else { return };
        let (level, host) = (table.level, table.host);
        let guest = env.memory.read_guest_entry(host, index);
        let new = match self.shadow_entry(env, level, guest) {
            Ok(slot) => slot,
            Err(Full) => {
                // Not the old target (the guest changed it) and not a half
                // built one: scratch until the next submission retries.
                self.parked.insert((page, index), REREAD);
                if ppgtt::is_leaf(guest, level) { Slot::RefusedLeaf } else { Slot::RefusedTable }
            }
        };
        self.install(env, page, index, new);
    }

    /// Puts `new` in entry `index` of table `page` (writing the shadow) and
    /// releases what was there.
    fn install(&mut self, env: &mut Env<'_>, page: u64, index: usize, new: Slot) {
        let Some(table) = self.tables.get_mut(&page) else {
            self.release_slot(env, new);
            return;
        };
        let Some(slot) = table.slots.get_mut(index) else { return };
        let old = core::mem::replace(slot, new);
        let (shadow, level) = (table.shadow, table.level);
        let entry = self.encode(new, level);
        env.memory.write_shadow_entry(shadow, index, entry);
        self.note_holder(old, (page, index), false);
        self.note_holder(new, (page, index), true);
        self.release_slot(env, old);
    }

    /// Records (or forgets) that entry `at` holds the RAM pages of `slot`.
    fn note_holder(&mut self, slot: Slot, at: (u64, usize), holds: bool) {
        let holders = &mut self.holders;
        let mut note = |key: u64| {
            if holds {
                holders.entry(key).or_default().insert(at);
            } else if let Some(set) = holders.get_mut(&key) {
                set.remove(&at);
                if set.is_empty() {
                    holders.remove(&key);
                }
            }
        };
        match slot {
            Slot::Ram { gpa, .. } => note(gpa),
            Slot::Ram2M { gpa, .. } => note(large_key(gpa)),
            Slot::Split(page) => {
                for leaf in self.splits.get(&page.raw()).into_iter().flatten() {
                    if let Slot::Ram { gpa, .. } = leaf {
                        note(*gpa);
                    }
                }
            }
            _ => {}
        }
    }

    /// The shadow slot for guest entry `entry` of a table at `level`,
    /// taking the references it needs.
    fn shadow_entry(&mut self, env: &mut Env<'_>, level: usize, entry: u64) -> Result<Slot, Full> {
        if entry & ppgtt::PRESENT == 0 {
            return Ok(Slot::Empty);
        }
        let slot = if level == PT {
            self.leaf(env, entry)
        } else if ppgtt::is_leaf(entry, level) {
            self.large_leaf(env, entry)?
        } else {
            self.reference_table(env, ppgtt::entry_address(entry), level + 1)?
        };
        if matches!(slot, Slot::RefusedLeaf | Slot::RefusedTable) {
            self.refused += 1;
        }
        if matches!(slot, Slot::RefusedTable) {
            self.scratch_tables(env)?;
        }
        Ok(slot)
    }

    /// A reference to the table at guest page `gpa` on `level`, building
    /// its shadow if it has none.
    fn reference_table(&mut self, env: &mut Env<'_>, gpa: u64, level: usize) -> Result<Slot, Full> {
        if let Some(table) = self.tables.get_mut(&gpa) {
            if table.level != level {
                return Ok(Slot::RefusedTable);
            }
            table.references += 1;
            return Ok(Slot::Table(gpa));
        }
        let Some(host) = own_ram_page(env.space, gpa) else {
            return Ok(Slot::RefusedTable);
        };
        let shadow = env.memory.allocate().ok_or(Full)?;
        if shadow.raw() & !ppgtt::ADDRESS_MASK != 0 || !env.memory.track(Gpa::new(gpa)) {
            env.memory.free(shadow);
            return Ok(Slot::RefusedTable);
        }
        self.tables.insert(gpa, Table { level, host, shadow, references: 1, slots: vec![Slot::Empty; ENTRIES] });
        // The page is a table now: no leaf may let the GPU write it.
        self.take_from_leaves(env, gpa);
        for index in 0..ENTRIES {
            let guest = env.memory.read_guest_entry(host, index);
            match self.shadow_entry(env, level, guest) {
                Ok(slot) => self.install(env, gpa, index, slot),
                Err(Full) => {
                    self.drop_reference(env, gpa);
                    return Err(Full);
                }
            }
        }
        Ok(Slot::Table(gpa))
    }

    /// Re-shadows every leaf that maps guest page `page` (which just became
    /// a table, so the new shadow refuses it).
    fn take_from_leaves(&mut self, env: &mut Env<'_>, page: u64) {
        let mut holders: Vec<(u64, usize)> = Vec::new();
        for key in [page, large_key(page & !(LARGE_PAGE_SIZE - 1))] {
            holders.extend(self.holders.get(&key).into_iter().flatten());
        }
        for (at, index) in holders {
            self.reshadow(env, at, index);
        }
    }

    /// A 4 KiB leaf.
    fn leaf(&mut self, env: &mut Env<'_>, entry: u64) -> Slot {
        let address = ppgtt::entry_address(entry);
        if entry & ppgtt::LOCAL_MEMORY != 0 {
            return match self.local_offset(address, PAGE_SIZE) {
                Some(real) => Slot::Local(real),
                None => Slot::RefusedLeaf,
            };
        }
        self.ram_page(env, address).map_or(Slot::RefusedLeaf, |hpa| Slot::Ram { gpa: address, hpa })
    }

    /// Validates and pins one RAM page for a leaf.
    fn ram_page(&self, env: &mut Env<'_>, gpa: u64) -> Option<Hpa> {
        if self.tables.contains_key(&gpa) {
            return None;
        }
        let hpa = validate_page(env.space, Iova::new(gpa)).ok()?;
        if hpa.raw() & !ppgtt::ADDRESS_MASK != 0 {
            return None;
        }
        env.pins.pin(hpa).ok()?;
        Some(hpa)
    }

    /// The real local-memory offset of `[offset, offset + size)` of the
    /// share, if it lies inside.
    fn local_offset(&self, offset: u64, size: u64) -> Option<u64> {
        let end = offset.checked_add(size)?;
        (end <= self.local.size).then(|| self.local.offset + offset)
    }

    /// A 2 MiB leaf: one shadow 2 MiB page, or split.
    fn large_leaf(&mut self, env: &mut Env<'_>, entry: u64) -> Result<Slot, Full> {
        let base = ppgtt::entry_address(entry) & !(LARGE_PAGE_SIZE - 1);
        if entry & ppgtt::LOCAL_MEMORY != 0 {
            if let Some(real) = self.local_offset(base, LARGE_PAGE_SIZE)
                && real.is_multiple_of(LARGE_PAGE_SIZE)
            {
                return Ok(Slot::Local2M(real));
            }
        } else if let Some(hpa) = self.contiguous_ram(env, base) {
            return Ok(Slot::Ram2M { gpa: base, hpa });
        }
        let split = env.memory.allocate().ok_or(Full)?;
        let mut leaves = Vec::with_capacity(ENTRIES);
        for page in 0..PAGES_PER_LARGE {
            let address = base + page * PAGE_SIZE;
            let slot = self.leaf(env, (entry & ppgtt::LOCAL_MEMORY) | address | ppgtt::PRESENT);
            if slot == Slot::RefusedLeaf {
                self.refused += 1;
            }
            env.memory.write_shadow_entry(split, page as usize, self.encode(slot, PT));
            leaves.push(slot);
        }
        self.splits.insert(split.raw(), leaves);
        Ok(Slot::Split(split))
    }

    /// The host base of `[gpa, gpa + 2 MiB)` if every page is a valid leaf
    /// target, the host range is contiguous and 2 MiB aligned; pins all.
    fn contiguous_ram(&self, env: &mut Env<'_>, gpa: u64) -> Option<Hpa> {
        let first = validate_page(env.space, Iova::new(gpa)).ok()?;
        if !first.is_aligned(LARGE_PAGE_SIZE) || first.raw() & !ppgtt::ADDRESS_MASK != 0 {
            return None;
        }
        for page in 0..PAGES_PER_LARGE {
            let at = gpa + page * PAGE_SIZE;
            let hpa = validate_page(env.space, Iova::new(at)).ok()?;
            if hpa.raw() != first.raw() + page * PAGE_SIZE || self.tables.contains_key(&at) {
                return None;
            }
        }
        for page in 0..PAGES_PER_LARGE {
            if env.pins.pin(Hpa::new(first.raw() + page * PAGE_SIZE)).is_err() {
                for done in 0..page {
                    let _ = env.pins.unpin(Hpa::new(first.raw() + done * PAGE_SIZE));
                }
                return None;
            }
        }
        Some(first)
    }

    /// The shadow entry for `slot` in a table at `level`.
    fn encode(&self, slot: Slot, level: usize) -> u64 {
        let present = ppgtt::PRESENT;
        match slot {
            Slot::Empty => 0,
            Slot::RefusedLeaf => self.scratch_leaf,
            Slot::RefusedTable => match self.scratch_tables {
                // [PDP, PD, PT]: a PML4 entry leads to the scratch PDP.
                Some(tables) => tables.get(level).map_or(0, |t| t.raw() | present),
                None => 0,
            },
            Slot::Table(gpa) => self.tables.get(&gpa).map_or(0, |t| t.shadow.raw() | present),
            Slot::Ram { hpa, .. } => hpa.raw() | present,
            Slot::Local(real) => real | ppgtt::LOCAL_MEMORY | present,
            Slot::Ram2M { hpa, .. } => hpa.raw() | ppgtt::PS_2M | present,
            Slot::Local2M(real) => real | ppgtt::LOCAL_MEMORY | ppgtt::PS_2M | present,
            Slot::Split(page) => page.raw() | present,
        }
    }

    /// The scratch PDP, PD and PT, built on first need.
    fn scratch_tables(&mut self, env: &mut Env<'_>) -> Result<[Hpa; 3], Full> {
        if let Some(tables) = self.scratch_tables {
            return Ok(tables);
        }
        let mut pages = [Hpa::new(0); 3];
        for at in 0..pages.len() {
            match env.memory.allocate() {
                Some(page) => pages[at] = page,
                None => {
                    for page in &pages[..at] {
                        env.memory.free(*page);
                    }
                    return Err(Full);
                }
            }
        }
        let [pdp, pd, pt] = pages;
        for index in 0..ENTRIES {
            env.memory.write_shadow_entry(pt, index, self.scratch_leaf);
            env.memory.write_shadow_entry(pd, index, pt.raw() | ppgtt::PRESENT);
            env.memory.write_shadow_entry(pdp, index, pd.raw() | ppgtt::PRESENT);
        }
        self.scratch_tables = Some(pages);
        Ok(pages)
    }

    /// Releases whatever `slot` referenced.
    fn release_slot(&mut self, env: &mut Env<'_>, slot: Slot) {
        match slot {
            Slot::Table(gpa) => self.drop_reference(env, gpa),
            Slot::Ram { hpa, .. } => {
                let _ = env.pins.unpin(hpa);
            }
            Slot::Ram2M { hpa, .. } => {
                for page in 0..PAGES_PER_LARGE {
                    let _ = env.pins.unpin(Hpa::new(hpa.raw() + page * PAGE_SIZE));
                }
            }
            Slot::Split(page) => {
                for leaf in self.splits.remove(&page.raw()).unwrap_or_default() {
                    self.release_slot(env, leaf);
                }
                env.memory.free(page);
            }
            Slot::Empty | Slot::RefusedLeaf | Slot::RefusedTable | Slot::Local(_) | Slot::Local2M(_) => {}
        }
    }

    /// Drops one reference to the table at `gpa`; the last one reclaims
    /// it: children released, page unprotected, shadow freed.
    fn drop_reference(&mut self, env: &mut Env<'_>, gpa: u64) {
        let Some(table) = self.tables.get_mut(&gpa) else { return };
        table.references = table.references.saturating_sub(1);
        if table.references > 0 {
            return;
        }
        let Some(table) = self.tables.remove(&gpa) else { return };
        for (index, slot) in table.slots.into_iter().enumerate() {
            self.note_holder(slot, (gpa, index), false);
            self.release_slot(env, slot);
        }
        self.parked.retain(|&(page, _), _| page != gpa);
        env.memory.untrack(Gpa::new(gpa));
        env.memory.free(table.shadow);
    }

    /// Evicts the least recently used context with nothing in flight;
    /// `false` if there is none.
    fn evict_idle(&mut self, env: &mut Env<'_>) -> bool {
        let victim = self.roots.iter().filter(|(_, r)| r.in_flight == 0).min_by_key(|(_, r)| r.last_used).map(|(&k, _)| k);
        match victim {
            Some(key) => {
                self.roots.remove(&key);
                self.drop_reference(env, key);
                true
            }
            None => false,
        }
    }
}

/// The shadow pool ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Full;

/// The host page of `gpa` if it is a page of the partition's writable RAM
/// (where a table may live: its stores can be trapped and performed).
fn own_ram_page(space: &AddressSpace, gpa: u64) -> Option<Hpa> {
    let at = Gpa::new(gpa);
    if !at.is_aligned(PAGE_SIZE) || space.region_at(at)?.kind != RegionKind::Ram {
        return None;
    }
    space.translate(at, PAGE_SIZE, Access::Write)
}

#[cfg(test)]
mod tests;
