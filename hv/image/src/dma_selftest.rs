//! The DMA self-test (`selftest=dma` boot argument): proves that a PCI DMA
//! engine assigned to no partition cannot write memory.
//!
//! Before any partition runs, the hypervisor itself drives the unassigned
//! `edu` device: memory decoding and bus mastering on, a 64-byte copy from
//! the device's buffer into a page of hypervisor heap pre-filled with a
//! pattern, a bounded wait for the transfer. It passes if the page is
//! unchanged and the SMMU recorded an event for the edu's StreamID at that
//! page. The device's command register is restored afterwards.

use crate::platform::Platform;
use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use bulkhead_drivers::edu::{EDU_BUFFER_SIZE, EDU_DEVICE, EDU_VENDOR, Edu};
use bulkhead_drivers::pci::{self, Bar, BarKind, COMMAND, Function};

/// The byte the target page is filled with (the edu's buffer holds zeros).
const PATTERN: u8 = 0xa5;
/// Bytes the edu is asked to copy: QEMU's edu writes 4 bytes per access
/// and the SMMU records one event per access, so 64 bytes make 16 events,
/// well within the event queue (QEMU reports a full event queue as the
/// global error `EVENTQ_ABT_ERR`, not as an overflow).
const TRANSFER_BYTES: u64 = 0x40;
/// Longest wait for the transfer (QEMU's edu takes ~100 ms of virtual time).
const TRANSFER_TIMEOUT_MS: u64 = 2000;
const MS_PER_SECOND: u64 = 1000;

/// Runs the test; returns a failure reason, or `Ok` with a summary.
pub fn run(platform: &Platform, functions: &[Function]) -> Result<(), alloc::string::String> {
    use alloc::format;
    let (edu, bar) = find_edu(platform, functions)?;
    let sid = crate::iommu::stream_of(edu.bdf).ok_or("the SMMU is not up, or the edu has no StreamID")?;
    let mut ecam = crate::pci::ecam(platform).ok_or("no ECAM")?;
    log::info!("DMA self-test: edu at {} (StreamID {sid:#x}), BAR 0 at {:#x}, assigned to no partition", edu.bdf, bar.address);

    let layout = Layout::from_size_align(EDU_BUFFER_SIZE as usize, EDU_BUFFER_SIZE as usize).map_err(|_| "layout")?;
    // SAFETY: a non-zero-sized layout.
    let page = unsafe { alloc_zeroed(layout) };
    if page.is_null() {
        return Err("no heap page for the target".into());
    }
    let target = page as u64;
    for i in 0..layout.size() {
        // SAFETY: inside the page just allocated; volatile because the
        // device may (wrongly) write it behind the compiler's back.
        unsafe { page.add(i).write_volatile(PATTERN) };
    }

    let saved = pci::command(&ecam, edu.bdf);
    let mut on = saved;
    on.modify(COMMAND::MEMORY_SPACE::SET + COMMAND::BUS_MASTER::SET);
    pci::set_command(&mut ecam, edu.bdf, on);
    // SAFETY: BAR 0 lies in the mapped 32-bit window (checked above) and
    // memory decoding is on; nothing else drives the edu before partitions run.
    let device = unsafe { Edu::new(bar.address as usize) };
    let outcome = if device.identified() {
        log::info!("DMA self-test: edu DMA of {TRANSFER_BYTES:#x} bytes to hypervisor page {target:#x}");
        device.start_write_to(target, TRANSFER_BYTES);
        wait(|| !device.busy(), TRANSFER_TIMEOUT_MS)
    } else {
        Err("BAR 0 does not read as an edu".into())
    };
    pci::set_command(&mut ecam, edu.bdf, saved);

    let mut changed = 0usize;
    for i in 0..layout.size() {
        // SAFETY: inside the page, as above.
        if unsafe { page.add(i).read_volatile() } != PATTERN {
            changed += 1;
        }
    }
    // SAFETY: allocated above with this layout; the transfer is over (or
    // timed out, in which case the device's bus mastering is off again).
    unsafe { dealloc(page, layout) };
    outcome?;

    let events = crate::iommu::service("DMA self-test");
    let recorded = events.iter().find(|r| r.event.stream_id == sid && r.event.input_address.is_some_and(|a| a & !0xfff == target));
    match (changed, recorded) {
        (0, Some(r)) => {
            log::info!(
                "DMA self-test: passed: the page is intact and the SMMU refused and recorded the edu's DMA ({} at {:#x})",
                r.event.name(),
                r.event.input_address.unwrap_or(0)
            );
            Ok(())
        }
        (0, None) => Err(format!("the page is intact but the SMMU recorded no event for StreamID {sid:#x}")),
        (n, _) => Err(format!("{n} byte(s) of the hypervisor page changed: the DMA got through")),
    }
}

/// The `edu` on bus 0 and its BAR 0, checked to lie in the 32-bit PCI
/// window the hypervisor maps.
///
/// # Errors
/// A reason: no edu, BAR 0 unassigned or outside the mapped window.
pub fn find_edu<'a>(platform: &Platform, functions: &'a [Function]) -> Result<(&'a Function, Bar), alloc::string::String> {
    let edu = functions
        .iter()
        .find(|f| f.vendor == EDU_VENDOR && f.device == EDU_DEVICE)
        .ok_or("no edu device on PCI bus 0 (QEMU: -device edu,dma_mask=0xffffffffffffffff)")?;
    let bar = edu.bars[0].filter(|b| b.kind != BarKind::Io && b.address != 0).ok_or("the edu's BAR 0 is not assigned")?;
    let mapped = platform.pci.as_ref().is_some_and(|host| {
        host.windows.iter().any(|&(base, size)| base < 1 << 32 && base <= bar.address && bar.address + bar.size <= base + size)
    });
    if !mapped {
        return Err(alloc::format!("the edu's BAR 0 at {:#x} is outside the mapped 32-bit window", bar.address));
    }
    Ok((edu, bar))
}

/// Polls `done` until it holds or `timeout_ms` of the generic timer pass.
pub fn wait(mut done: impl FnMut() -> bool, timeout_ms: u64) -> Result<(), alloc::string::String> {
    use aarch64_cpu::registers::{CNTFRQ_EL0, CNTPCT_EL0, Readable};
    let frequency = CNTFRQ_EL0.get().max(1);
    let start = CNTPCT_EL0.get();
    let limit = frequency.saturating_mul(timeout_ms) / MS_PER_SECOND;
    while CNTPCT_EL0.get().wrapping_sub(start) < limit {
        if done() {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    if done() { Ok(()) } else { Err(alloc::format!("the edu's transfer did not finish within {timeout_ms} ms")) }
}
