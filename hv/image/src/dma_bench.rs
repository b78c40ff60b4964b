//! The DMA map/unmap benchmark (`bench=dma` boot argument, run by
//! `cargo xtask bench` under `-icount`): before any partition runs, a
//! scratch SMMU domain is attached to a PCI function no partition owns,
//! and `count` 4 KiB pages, then `count` 2 MiB blocks, are mapped one by
//! one and unmapped one by one through [`DmaDomain`] (pinning included).
//! Time comes from the counter, which under `-icount shift=0` ticks once
//! per instruction: a repeatable path length, not wall time. Invalidation
//! commands are counted at the SMMU driver. Nothing transfers: the device
//! is never started, and the domain is torn down afterwards.

use crate::console::line;
use crate::iommu::{self, Owner, SmmuStage2};
use aarch64_cpu::registers::{CNTFRQ_EL0, CNTPCT_EL0, Readable};
use alloc::string::String;
use bulkhead_arch_aarch64::stage2::Stage2Geometry;
use bulkhead_config::{FaultPolicy, MemoryAttribute, Permissions};
use bulkhead_core::address::{Hpa, Iova};
use bulkhead_core::dma::DmaDomain;

/// The scratch domain's VMID: above the 8-bit VMIDs partitions get and not
/// the quarantine's, so no TLB entry is shared with either.
const SCRATCH_VMID: u16 = 0x100;
/// IPA bits of the scratch table (level-1 root).
const SCRATCH_IPA_BITS: u32 = 39;
/// First I/O virtual address mapped (1 GiB-aligned, so blocks fit).
const IOVA_BASE: u64 = 1 << 30;
const PAGE: u64 = 4 << 10;
const BLOCK: u64 = 2 << 20;
/// Operations per kind.
const PAGE_OPS: u64 = 256;
const BLOCK_OPS: u64 = 16;

fn now() -> u64 {
    CNTPCT_EL0.get()
}

/// Runs the benchmark and prints `bench:` lines; a reason on the console
/// if it cannot.
pub fn run(pa_bits: u32) {
    if let Err(reason) = measure(pa_bits) {
        line(format_args!("[bulkhead] bench: DMA map/unmap: not measured: {reason}"));
    }
}

fn measure(pa_bits: u32) -> Result<(), String> {
    if iommu::vmid16() != Some(true) {
        return Err(String::from("needs an SMMU with 16-bit VMIDs"));
    }
    let bdf = iommu::unowned_stream().ok_or("no PCI function to attach a scratch domain to")?;
    let geometry = Stage2Geometry::for_limit(1 << SCRATCH_IPA_BITS, pa_bits).map_err(|e| alloc::format!("{e:?}"))?;
    // Host memory the mappings point at: one block, mapped again and again
    // (its pages are pinned once and counted).
    let scratch = crate::memory::alloc_frames(BLOCK, BLOCK).ok_or("no memory for the scratch block")?;
    let pin_limit = (BLOCK / PAGE) as usize;
    let mut domain = DmaDomain::new("bench", SmmuStage2::new(geometry, pa_bits, SCRATCH_VMID), pin_limit);
    let owner = Owner { partition: String::from("bench"), index: usize::MAX, policy: FaultPolicy::Inject };
    iommu::attach(bdf, owner, &mut domain)?;
    let result = domain.allow_mappings().map_err(|e| alloc::format!("{e}")).and_then(|()| {
        let frequency = CNTFRQ_EL0.get().max(1);
        for (what, size, count) in [("4 KiB pages", PAGE, PAGE_OPS), ("2 MiB blocks", BLOCK, BLOCK_OPS)] {
            time(&mut domain, scratch, what, size, count, frequency)?;
        }
        Ok(())
    });
    iommu::detach(&mut domain);
    result
}

fn time(domain: &mut DmaDomain<SmmuStage2>, scratch: Hpa, what: &str, size: u64, count: u64, frequency: u64) -> Result<(), String> {
    let rw = Permissions { read: true, write: true, execute: false };
    let iova = |i: u64| Iova::new(IOVA_BASE + i * size);
    let hpa = |i: u64| Hpa::new(scratch.raw() + (i * size) % BLOCK);
    let before = iommu::invalidations();
    let start = now();
    for i in 0..count {
        domain.map(iova(i), hpa(i), size, MemoryAttribute::NormalWb, rw).map_err(|e| alloc::format!("map: {e}"))?;
    }
    let mapped = now();
    let after_map = iommu::invalidations();
    for i in 0..count {
        domain.unmap(iova(i), size).map_err(|e| alloc::format!("unmap: {e}"))?;
    }
    let unmapped = now();
    let after = iommu::invalidations();
    let per_op = |ticks: u64| ticks / count;
    let ops_per_second = |ticks: u64| count.saturating_mul(frequency) / ticks.max(1);
    let map_commands = (after_map.tlbi - before.tlbi) + (after_map.sync - before.sync);
    let (tlbi, sync) = (after.tlbi - after_map.tlbi, after.sync - after_map.sync);
    line(format_args!(
        "[bulkhead] bench: DMA map {what}: {} ticks per op, {} ops/s, {:.2} invalidations per op ({count} ops, counter {frequency} Hz)",
        per_op(mapped - start),
        ops_per_second(mapped - start),
        map_commands as f64 / count as f64
    ));
    line(format_args!(
        "[bulkhead] bench: DMA unmap {what}: {} ticks per op, {} ops/s, {:.2} invalidations per op ({tlbi} CMD_TLBI_S2_IPA/S12_VMALL + {sync} CMD_SYNC)",
        per_op(unmapped - mapped),
        ops_per_second(unmapped - mapped),
        (tlbi + sync) as f64 / count as f64
    ));
    Ok(())
}
