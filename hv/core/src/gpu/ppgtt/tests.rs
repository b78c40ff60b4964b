use super::*;
use crate::address_space::Region;
use alloc::collections::BTreeSet;
use bulkhead_config::{MemoryAttribute, Permissions};

/// Guest RAM: GPA 0x4000_0000 at host 0x8000_0000 (2 MiB aligned), 15 MiB.
const RAM: u64 = 0x4000_0000;
const RAM_HOST: u64 = 0x8000_0000;
/// More guest RAM whose host backing is only 1 MiB aligned.
const ODD: u64 = 0x6000_0000;
const ODD_HOST: u64 = 0x9010_0000;
/// Guest RAM devices may not reach.
const NO_DMA: u64 = 0x7000_0000;
/// Someone else's memory.
const FOREIGN: u64 = 0xa000_0000;
const SCRATCH_LEAF: u64 = 0x5_0000 | ppgtt::LOCAL_MEMORY | ppgtt::PRESENT;
const LOCAL: LocalMemory = LocalMemory { offset: 0x40_0000, size: 0x40_0000 };
const POOL: u64 = 0xc000_0000;

fn region(gpa: u64, hpa: u64, size: u64, dma: bool) -> Region {
    Region {
        gpa: Gpa::new(gpa),
        hpa: Hpa::new(hpa),
        size,
        attr: MemoryAttribute::NormalWb,
        perms: Permissions::parse("rw").unwrap(),
        kind: RegionKind::Ram,
        dma,
    }
}

/// Guest memory, the shadow pool and the write protection.
#[derive(Default)]
struct Fake {
    /// Host page → its 512 entries (guest tables and shadow pages alike).
    pages: BTreeMap<u64, Vec<u64>>,
    free: Vec<u64>,
    tracked: BTreeSet<u64>,
}

impl PpgttMemory for Fake {
    fn read_guest_entry(&self, table: Hpa, index: usize) -> u64 {
        self.pages.get(&table.raw()).map_or(0, |p| p[index])
    }
    fn allocate(&mut self) -> Option<Hpa> {
        let page = self.free.pop()?;
        self.pages.insert(page, vec![0; ENTRIES]);
        Some(Hpa::new(page))
    }
    fn free(&mut self, page: Hpa) {
        assert!(self.pages.remove(&page.raw()).is_some(), "freed twice");
        self.free.push(page.raw());
    }
    fn write_shadow_entry(&mut self, page: Hpa, index: usize, entry: u64) {
        self.pages.get_mut(&page.raw()).expect("shadow page allocated")[index] = entry;
    }
    fn track(&mut self, page: Gpa) -> bool {
        assert!(self.tracked.insert(page.raw()), "tracked twice");
        true
    }
    fn untrack(&mut self, page: Gpa) {
        assert!(self.tracked.remove(&page.raw()), "untracked an untracked page");
    }
}

struct Rig {
    space: AddressSpace,
    pins: PinnedPages,
    fake: Fake,
    shadow: ShadowPpgtt,
}

fn host_of(gpa: u64) -> u64 {
    if gpa >= ODD { gpa - ODD + ODD_HOST } else { gpa - RAM + RAM_HOST }
}

impl Rig {
    fn new(pool_pages: u64) -> Rig {
        let mut space = AddressSpace::new();
        space.add_region(region(RAM, RAM_HOST, 15 << 20, true)).unwrap();
        space.add_region(region(ODD, ODD_HOST, 4 << 20, true)).unwrap();
        space.add_region(region(NO_DMA, 0xb000_0000, 1 << 20, false)).unwrap();
        let fake = Fake { free: (0..pool_pages).rev().map(|i| POOL + i * PAGE_SIZE).collect(), ..Fake::default() };
        Rig { space, pins: PinnedPages::new("p", 4096), fake, shadow: ShadowPpgtt::new(SCRATCH_LEAF, LOCAL) }
    }

    fn env(&mut self) -> (Env<'_>, &mut ShadowPpgtt) {
        (Env { space: &self.space, pins: &mut self.pins, memory: &mut self.fake }, &mut self.shadow)
    }

    /// The guest writes entry `index` of its table at `table` (no trap).
    fn poke(&mut self, table: u64, index: usize, entry: u64) {
        self.fake.pages.entry(host_of(table)).or_insert_with(|| vec![0; ENTRIES])[index] = entry;
    }

    /// The guest stores the entry and the store traps.
    fn store(&mut self, table: u64, index: usize, entry: u64) {
        self.poke(table, index, entry);
        let (mut env, shadow) = self.env();
        assert!(shadow.on_write(&mut env, Gpa::new(table + index as u64 * 8), 8));
    }

    /// The guest stores 4 bytes of entry `index` (`high`: bits 63:32).
    fn store_half(&mut self, table: u64, index: usize, value: u32, high: bool) {
        let host = host_of(table);
        let old = self.fake.pages.get(&host).map_or(0, |p| p[index]);
        let new = if high { (old & 0xffff_ffff) | u64::from(value) << 32 } else { (old & !0xffff_ffff) | u64::from(value) };
        self.poke(table, index, new);
        let (mut env, shadow) = self.env();
        let at = table + index as u64 * 8 + if high { 4 } else { 0 };
        assert!(shadow.on_write(&mut env, Gpa::new(at), 4));
    }

    fn begin(&mut self, pml4: u64) -> Result<Hpa, ContextError> {
        let (mut env, shadow) = self.env();
        shadow.begin(&mut env, Gpa::new(pml4))
    }

    fn finish(&mut self, pml4: u64) {
        let (mut env, shadow) = self.env();
        shadow.finish(Gpa::new(pml4));
        shadow.settle(&mut env);
    }

    fn release(&mut self, pml4: u64) -> bool {
        let (mut env, shadow) = self.env();
        shadow.release(&mut env, Gpa::new(pml4))
    }

    fn reapply(&mut self) {
        let (mut env, shadow) = self.env();
        shadow.reapply_parked(&mut env);
    }

    /// What the GPU sees at `va` through the shadow rooted at `root`: the
    /// leaf entry and the byte address (or local offset) it gives.
    fn gpu_view(&self, root: Hpa, va: u64) -> Option<(u64, u64)> {
        let mut table = root.raw();
        for level in 0..ppgtt::LEVELS {
            let entry = self.fake.pages.get(&table)?[ppgtt::index(va, level)];
            if entry & ppgtt::PRESENT == 0 {
                return None;
            }
            if ppgtt::is_leaf(entry, level) {
                let span = ppgtt::entry_span(level);
                return Some((entry, ppgtt::entry_address(entry) & !(span - 1) | (va & (span - 1))));
            }
            table = ppgtt::entry_address(entry);
        }
        None
    }

    fn pool_in_use(&self) -> usize {
        self.fake.pages.keys().filter(|&&p| p >= POOL).count()
    }
}

fn table(gpa: u64) -> u64 {
    gpa | ppgtt::PRESENT
}

/// Guest tables of one context: PML4 → PDP → PD → PT at these pages,
/// mapping VA 0 → `target`.
const PML4_A: u64 = RAM + 0x10_0000;
const PDP_A: u64 = RAM + 0x10_1000;
const PD_A: u64 = RAM + 0x10_2000;
const PT_A: u64 = RAM + 0x10_3000;
const DATA: u64 = RAM + 0x20_0000;

fn context_a(rig: &mut Rig, target: u64) {
    rig.poke(PML4_A, 0, table(PDP_A));
    rig.poke(PDP_A, 0, table(PD_A));
    rig.poke(PD_A, 0, table(PT_A));
    rig.poke(PT_A, 0, target);
}

#[test]
fn a_context_is_shadowed_with_every_table_page_tracked_and_leaves_translated() {
    let mut rig = Rig::new(64);
    context_a(&mut rig, DATA | ppgtt::PRESENT);
    rig.poke(PT_A, 1, 0x3000 | ppgtt::LOCAL_MEMORY | ppgtt::PRESENT);
    let root = rig.begin(PML4_A).unwrap();
    assert_eq!(rig.gpu_view(root, 0x123), Some((host_of(DATA) | ppgtt::PRESENT, host_of(DATA) + 0x123)));
    let (entry, at) = rig.gpu_view(root, 0x1004).unwrap();
    assert_eq!((entry & ppgtt::LOCAL_MEMORY, at), (ppgtt::LOCAL_MEMORY, LOCAL.offset + 0x3004));
    assert_eq!(rig.gpu_view(root, 0x2000), None, "a not-present guest entry is not present in the shadow");
    assert_eq!(rig.fake.tracked, BTreeSet::from([PML4_A, PDP_A, PD_A, PT_A]));
    assert!(rig.pins.is_pinned(Hpa::new(host_of(DATA))));
    assert_eq!(rig.shadow.stats().tables, 4);
    // The same context again: nothing rebuilt.
    assert_eq!(rig.begin(PML4_A).unwrap(), root);
    assert_eq!(rig.pool_in_use(), 4);
}

#[test]
fn a_table_shared_by_two_contexts_is_shadowed_once_and_kept_until_both_let_go() {
    let mut rig = Rig::new(64);
    context_a(&mut rig, DATA | ppgtt::PRESENT);
    let (pml4_b, pdp_b, pd_b) = (RAM + 0x11_0000, RAM + 0x11_1000, RAM + 0x11_2000);
    rig.poke(pml4_b, 3, table(pdp_b));
    rig.poke(pdp_b, 0, table(pd_b));
    rig.poke(pd_b, 7, table(PT_A));
    let root_a = rig.begin(PML4_A).unwrap();
    let root_b = rig.begin(pml4_b).unwrap();
    assert_eq!(rig.shadow.stats().tables, 7, "PT_A is one shadow");
    assert_eq!(rig.shadow.tables[&PT_A].references, 2);
    let va_b = (3 << 39) | (7 << 21);
    assert_eq!(rig.gpu_view(root_b, va_b).map(|v| v.1), Some(host_of(DATA)));
    // A change in the shared PT shows in both contexts.
    rig.store(PT_A, 0, (DATA + 0x1000) | ppgtt::PRESENT);
    assert_eq!(rig.gpu_view(root_a, 0).map(|v| v.1), Some(host_of(DATA + 0x1000)));
    assert_eq!(rig.gpu_view(root_b, va_b).map(|v| v.1), Some(host_of(DATA + 0x1000)));
    assert!(!rig.pins.is_pinned(Hpa::new(host_of(DATA))), "the old leaf was unpinned");
    // Releasing A keeps the shared PT for B.
    rig.finish(PML4_A);
    assert!(rig.release(PML4_A));
    assert_eq!(rig.fake.tracked, BTreeSet::from([pml4_b, pdp_b, pd_b, PT_A]));
    assert_eq!(rig.gpu_view(root_b, va_b).map(|v| v.1), Some(host_of(DATA + 0x1000)));
    // Released while in flight: kept until its submission finishes.
    assert!(rig.release(pml4_b));
    assert_eq!(rig.shadow.stats().tables, 4);
    rig.finish(pml4_b);
    assert_eq!(rig.shadow.stats(), ShadowStats { tables: 0, shadow_pages: 0, refused: 0, contexts: 0 });
    assert!(rig.fake.tracked.is_empty());
    assert_eq!(rig.pins.pinned(), 0);
    assert_eq!(rig.pool_in_use(), 0, "every shadow page back in the pool");
    assert!(rig.shadow.holders.is_empty());
}

#[test]
fn halves_wait_for_each_other_and_short_stores_for_the_next_submission() {
    let mut rig = Rig::new(64);
    context_a(&mut rig, DATA | ppgtt::PRESENT);
    let root = rig.begin(PML4_A).unwrap();
    let new = (RAM + 0x30_0000) | ppgtt::PRESENT;
    // Low half first: the shadow keeps the old entry, not a mix.
    rig.store_half(PT_A, 0, new as u32, false);
    assert_eq!(rig.gpu_view(root, 0).map(|v| v.1), Some(host_of(DATA)));
    assert_eq!(rig.shadow.parked(), 1);
    rig.store_half(PT_A, 0, (new >> 32) as u32, true);
    assert_eq!(rig.gpu_view(root, 0).map(|v| v.1), Some(host_of(RAM + 0x30_0000)));
    assert_eq!(rig.shadow.parked(), 0);
    // Only the low half, ever (the high half was already right): applied
    // before the next submission.
    rig.store_half(PT_A, 0, (DATA + 0x5000) as u32 | 1, false);
    assert_eq!(rig.gpu_view(root, 0).map(|v| v.1), Some(host_of(RAM + 0x30_0000)));
    rig.reapply();
    assert_eq!(rig.gpu_view(root, 0).map(|v| v.1), Some(host_of(DATA + 0x5000)));
    // A 2-byte store: parked, then re-read.
    rig.poke(PT_A, 2, (DATA + 0x7000) | ppgtt::PRESENT);
    let (mut env, shadow) = rig.env();
    assert!(shadow.on_write(&mut env, Gpa::new(PT_A + 2 * 8 + 1), 2));
    assert_eq!(rig.gpu_view(root, 0x2000), None);
    rig.reapply();
    assert_eq!(rig.gpu_view(root, 0x2000).map(|v| v.1), Some(host_of(DATA + 0x7000)));
    // A store outside every table is not ours.
    let (mut env, shadow) = rig.env();
    assert!(!shadow.on_write(&mut env, Gpa::new(DATA), 8));
}

#[test]
fn entries_naming_anything_but_own_memory_or_naming_a_table_go_to_scratch() {
    let mut rig = Rig::new(64);
    context_a(&mut rig, FOREIGN | ppgtt::PRESENT);
    rig.poke(PT_A, 1, NO_DMA | ppgtt::PRESENT);
    rig.poke(PT_A, 2, PD_A | ppgtt::PRESENT); // its own table: forging entries
    rig.poke(PT_A, 3, LOCAL.size | ppgtt::LOCAL_MEMORY | ppgtt::PRESENT);
    rig.poke(PD_A, 1, table(FOREIGN));
    rig.poke(PD_A, 2, table(PML4_A)); // a loop to the root, at another level
    let root = rig.begin(PML4_A).unwrap();
    for va in [0, 0x1000, 0x2000, 0x3000] {
        assert_eq!(rig.gpu_view(root, va).map(|v| v.0), Some(SCRATCH_LEAF), "{va:#x}");
    }
    // Through a scratch table the GPU also reaches only the scratch page.
    assert_eq!(rig.gpu_view(root, 1 << 21).map(|v| v.0), Some(SCRATCH_LEAF));
    assert_eq!(rig.gpu_view(root, (2 << 21) | 0x5000).map(|v| v.0), Some(SCRATCH_LEAF));
    assert_eq!(rig.shadow.stats().refused, 6);
    assert_eq!(rig.pins.pinned(), 0);
    assert_eq!(rig.fake.tracked.len(), 4, "nothing foreign was tracked");
    // A later attempt by a trapped write fares no better.
    rig.store(PT_A, 4, PT_A | ppgtt::PRESENT);
    assert_eq!(rig.gpu_view(root, 0x4000).map(|v| v.0), Some(SCRATCH_LEAF));
}

#[test]
fn a_page_that_becomes_a_table_is_taken_from_the_leaves_that_mapped_it() {
    let mut rig = Rig::new(64);
    let new_pt = RAM + 0x10_5000;
    context_a(&mut rig, new_pt | ppgtt::PRESENT);
    let root = rig.begin(PML4_A).unwrap();
    assert_eq!(rig.gpu_view(root, 0).map(|v| v.1), Some(host_of(new_pt)));
    // Now the guest links that page as a PT.
    rig.store(PD_A, 1, table(new_pt));
    assert!(rig.fake.tracked.contains(&new_pt));
    assert_eq!(rig.gpu_view(root, 0).map(|v| v.0), Some(SCRATCH_LEAF));
    assert!(!rig.pins.is_pinned(Hpa::new(host_of(new_pt))));
    // Inside a 2 MiB page: that page is split around it.
    rig.store(PD_A, 2, (RAM + 0x40_0000) | ppgtt::PS_2M | ppgtt::PRESENT);
    assert_eq!(rig.gpu_view(root, (2 << 21) + 0x5000).unwrap().0 & ppgtt::PS_2M, ppgtt::PS_2M);
    let inner_pt = RAM + 0x40_5000;
    rig.store(PD_A, 3, table(inner_pt));
    assert_eq!(rig.gpu_view(root, (2 << 21) + 0x5000).map(|v| v.0), Some(SCRATCH_LEAF));
    assert_eq!(rig.gpu_view(root, (2 << 21) + 0x6000).map(|v| v.1), Some(host_of(RAM + 0x40_6000)));
    assert_eq!(rig.pins.pinned(), 511);
}

#[test]
fn two_mib_pages_are_kept_whole_where_the_backing_allows_and_split_elsewhere() {
    let mut rig = Rig::new(64);
    context_a(&mut rig, DATA | ppgtt::PRESENT);
    rig.poke(PD_A, 1, (RAM + 0x40_0000) | ppgtt::PS_2M | ppgtt::PRESENT);
    rig.poke(PD_A, 2, ODD | ppgtt::PS_2M | ppgtt::PRESENT); // host only 1 MiB aligned
    rig.poke(PD_A, 3, (RAM + (14 << 20)) | ppgtt::PS_2M | ppgtt::PRESENT); // its last MiB beyond RAM
    rig.poke(PD_A, 4, (RAM + 0x60_0000) | ppgtt::PS_2M | ppgtt::PRESENT); // a table page inside (entry 7)
    rig.poke(PD_A, 5, 0x20_0000 | ppgtt::LOCAL_MEMORY | ppgtt::PS_2M | ppgtt::PRESENT);
    rig.poke(PD_A, 6, LOCAL.size | ppgtt::LOCAL_MEMORY | ppgtt::PS_2M | ppgtt::PRESENT); // beyond the share
    let table_inside = RAM + 0x60_3000;
    rig.poke(PD_A, 7, table(table_inside)); // a PT inside the 2 MiB of entry 4
    let root = rig.begin(PML4_A).unwrap();
    let whole = rig.gpu_view(root, (1 << 21) + 0x1234).unwrap();
    assert_eq!(whole, (host_of(RAM + 0x40_0000) | ppgtt::PS_2M | ppgtt::PRESENT, host_of(RAM + 0x40_1234)));
    let split = rig.gpu_view(root, (2 << 21) + 0x1_2345).unwrap();
    assert_eq!(split.0 & ppgtt::PS_2M, 0, "split into 4 KiB leaves");
    assert_eq!(split.1, ODD_HOST + 0x1_2345);
    assert_eq!(rig.gpu_view(root, (3 << 21) + 0x1000).map(|v| v.1), Some(host_of(RAM + (14 << 20) + 0x1000)));
    assert_eq!(rig.gpu_view(root, (3 << 21) + 0x10_0000).map(|v| v.0), Some(SCRATCH_LEAF), "past RAM: scratch");
    assert_eq!(rig.gpu_view(root, (4 << 21) + 0x3000).map(|v| v.0), Some(SCRATCH_LEAF), "the table page in it");
    assert_eq!(rig.gpu_view(root, (4 << 21) + 0x4000).map(|v| v.1), Some(host_of(RAM + 0x60_4000)));
    let local = rig.gpu_view(root, (5 << 21) + 8).unwrap();
    assert_eq!(local, ((LOCAL.offset + 0x20_0000) | ppgtt::LOCAL_MEMORY | ppgtt::PS_2M | ppgtt::PRESENT, LOCAL.offset + 0x20_0008));
    assert_eq!(rig.gpu_view(root, (6 << 21) + 0x10_0000).map(|v| v.0), Some(SCRATCH_LEAF));
    // Pins: 1 + 512 (whole) + 512 (odd) + 256 (RAM end) + 511 (around the table).
    assert_eq!(rig.pins.pinned(), 1 + 512 + 512 + 256 + 511);
    // Clearing the split entries frees their private PTs.
    let before = rig.pool_in_use();
    for index in 2..=4 {
        rig.store(PD_A, index, 0);
    }
    assert_eq!(rig.pool_in_use(), before - 3);
    assert_eq!(rig.pins.pinned(), 1 + 512);
}

#[test]
fn an_unlinked_table_is_reclaimed_unprotected_and_unpinned() {
    let mut rig = Rig::new(64);
    context_a(&mut rig, DATA | ppgtt::PRESENT);
    let root = rig.begin(PML4_A).unwrap();
    let pages = rig.pool_in_use();
    // Add before remove: point PD entry 0 at a new PT that shares nothing.
    let other_pt = RAM + 0x10_4000;
    rig.poke(other_pt, 0, (DATA + 0x1000) | ppgtt::PRESENT);
    rig.store(PD_A, 0, table(other_pt));
    assert!(!rig.fake.tracked.contains(&PT_A), "the old PT is no longer protected");
    assert!(rig.fake.tracked.contains(&other_pt));
    assert_eq!(rig.gpu_view(root, 0).map(|v| v.1), Some(host_of(DATA + 0x1000)));
    assert!(!rig.pins.is_pinned(Hpa::new(host_of(DATA))));
    assert_eq!(rig.pool_in_use(), pages);
    // The freed page is ordinary memory again: a store to it is not ours.
    let (mut env, shadow) = rig.env();
    assert!(!shadow.on_write(&mut env, Gpa::new(PT_A), 8));
    // Unlink the whole PDP: everything below goes.
    rig.store(PML4_A, 0, 0);
    assert_eq!(rig.fake.tracked, BTreeSet::from([PML4_A]));
    assert_eq!(rig.pins.pinned(), 0);
    assert_eq!(rig.pool_in_use(), 1);
}

#[test]
fn a_full_pool_refuses_a_context_cleanly_and_evicts_idle_ones() {
    let mut rig = Rig::new(4);
    context_a(&mut rig, DATA | ppgtt::PRESENT);
    rig.poke(PT_A, 1, FOREIGN | ppgtt::PRESENT); // scratch leaf: no scratch tables needed
    let root = rig.begin(PML4_A).unwrap();
    assert_eq!(rig.pool_in_use(), 4);
    // Context B needs 4 pages: A is in flight, so B is refused and nothing leaks.
    let (pml4_b, pdp_b, pd_b, pt_b) = (RAM + 0x11_0000, RAM + 0x11_1000, RAM + 0x11_2000, RAM + 0x11_3000);
    rig.poke(pml4_b, 0, table(pdp_b));
    rig.poke(pdp_b, 0, table(pd_b));
    rig.poke(pd_b, 0, table(pt_b));
    rig.poke(pt_b, 0, DATA | ppgtt::PRESENT);
    assert_eq!(rig.begin(pml4_b), Err(ContextError::ShadowFull));
    assert_eq!(rig.pool_in_use(), 4);
    assert_eq!(rig.fake.tracked.len(), 4);
    assert_eq!(rig.gpu_view(root, 0).map(|v| v.1), Some(host_of(DATA)), "A intact");
    // A completes: it is evicted for B.
    rig.finish(PML4_A);
    let root_b = rig.begin(pml4_b).unwrap();
    assert_eq!(rig.gpu_view(root_b, 0).map(|v| v.1), Some(host_of(DATA)));
    assert_eq!(rig.fake.tracked, BTreeSet::from([pml4_b, pdp_b, pd_b, pt_b]));
    assert_eq!(rig.pins.references(Hpa::new(host_of(DATA))), 1);
    // A trapped write that needs a page the pool lacks: scratch, retried later.
    let pt_c = RAM + 0x11_4000;
    rig.poke(pt_c, 0, (DATA + 0x2000) | ppgtt::PRESENT);
    rig.store(pd_b, 1, table(pt_c));
    assert_eq!(rig.gpu_view(root_b, 1 << 21), None, "no scratch tables either: not present");
    assert_eq!(rig.shadow.parked(), 1);
    rig.store(pd_b, 0, 0);
    rig.reapply();
    assert_eq!(rig.gpu_view(root_b, 1 << 21).map(|v| v.1), Some(host_of(DATA + 0x2000)));
}

#[test]
fn a_context_root_must_be_own_ram_and_reset_drops_everything() {
    let mut rig = Rig::new(64);
    assert_eq!(rig.begin(FOREIGN), Err(ContextError::NotATable(Gpa::new(FOREIGN))));
    assert_eq!(rig.begin(PML4_A + 8), Err(ContextError::NotATable(Gpa::new(PML4_A + 8))));
    context_a(&mut rig, DATA | ppgtt::PRESENT);
    rig.poke(PT_A, 1, FOREIGN | ppgtt::PRESENT);
    rig.poke(PD_A, 1, table(FOREIGN));
    rig.begin(PML4_A).unwrap();
    assert_eq!(rig.begin(PT_A), Err(ContextError::NotATable(Gpa::new(PT_A))), "a PT is no PML4");
    rig.store_half(PT_A, 3, 1, false);
    let (mut env, shadow) = rig.env();
    shadow.reset(&mut env);
    assert_eq!(rig.shadow.stats().shadow_pages, 0);
    assert_eq!(rig.shadow.parked(), 0);
    assert!(rig.shadow.holders.is_empty());
    assert!(rig.fake.tracked.is_empty());
    assert_eq!(rig.pins.pinned(), 0);
    assert_eq!(rig.pool_in_use(), 0);
}
