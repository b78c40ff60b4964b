//! The MSI self-test (`selftest=msi` boot argument): proves that a PCI
//! device's MSI reaches the hypervisor as an LPI through the SMMU and the
//! ITS, and that the same device still cannot DMA.
//!
//! Before any partition runs, the hypervisor drives the unassigned `edu`:
//! routes its event 0 to an LPI on the boot CPU ([`msi::route`]), opens
//! its stream for the ITS doorbell frame only
//! ([`iommu::allow_msi_only`]), programs and enables the edu's MSI
//! capability with the route's address and data, and raises the edu's
//! interrupt [`RAISES`] times; each time the LPI must be taken, in a
//! bounded interrupt window, by the handler registered for it. Then an edu
//! DMA into a hypervisor page must leave the page intact and be recorded
//! by the SMMU. Everything is put back afterwards: MSI off, the command
//! register restored, the stream quarantined again.

use crate::platform::Platform;
use crate::{iommu, msi};
use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use alloc::format;
use alloc::string::String;
use bulkhead_drivers::edu::{EDU_BUFFER_SIZE, Edu};
use bulkhead_drivers::gicv3_its::TRANSLATION_FRAME_SIZE;
use bulkhead_drivers::pci::{self, CAPABILITY_MSI, COMMAND, Function};
use core::sync::atomic::{AtomicU32, Ordering};

/// The EventID the edu's MSI carries.
const EVENT: u32 = 0;
/// How often the edu's interrupt is raised (each must arrive once).
const RAISES: u32 = 2;
/// The edu status bit each raise sets (any bit will do).
const RAISE_STATUS: u32 = 0x1_0000;
/// Longest wait for one LPI.
const LPI_TIMEOUT_MS: u64 = 500;
/// The byte the DMA target page is filled with.
const PATTERN: u8 = 0xa5;
/// Bytes the refused DMA tries to write (16 SMMU events, see `dma_selftest`).
const TRANSFER_BYTES: u64 = 0x40;
/// Longest wait for the edu's DMA.
const TRANSFER_TIMEOUT_MS: u64 = 2000;

/// LPIs the handler took.
static TAKEN: AtomicU32 = AtomicU32::new(0);

fn on_lpi(_intid: u32) {
    TAKEN.fetch_add(1, Ordering::AcqRel);
}

/// Runs the test; returns a failure reason.
pub fn run(platform: &Platform, functions: &[Function]) -> Result<(), String> {
    let (edu, bar) = crate::dma_selftest::find_edu(platform, functions)?;
    let cpu = platform.boot_cpu().unwrap_or(0);
    let route = msi::route(u32::from(edu.bdf.rid()), EVENT, cpu)?;
    msi::set_handler(route.intid, on_lpi);
    let mut ecam = crate::pci::ecam(platform).ok_or("no ECAM")?;
    let capability = pci::find_capability(&ecam, edu.bdf, CAPABILITY_MSI).ok_or("the edu has no MSI capability")?;
    let data = u16::try_from(route.data).map_err(|_| "the event does not fit MSI data")?;
    let sid = iommu::allow_msi_only(edu.bdf, route.address & !(TRANSLATION_FRAME_SIZE - 1))?;
    log::info!(
        "MSI self-test: edu at {} (StreamID {sid:#x}), MSI capability at {capability:#x}: address {:#x}, data {}, LPI {} on CPU {cpu}",
        edu.bdf,
        route.address,
        route.data,
        route.intid
    );

    let saved = pci::command(&ecam, edu.bdf);
    let mut on = saved;
    on.modify(COMMAND::MEMORY_SPACE::SET + COMMAND::BUS_MASTER::SET + COMMAND::INTERRUPT_DISABLE::SET);
    pci::set_command(&mut ecam, edu.bdf, on);
    let outcome = pci::enable_msi(&mut ecam, edu.bdf, capability, route.address, data)
        .map_err(|e| format!("programming the edu's MSI: {e:?}"))
        .and_then(|()| {
            // SAFETY: BAR 0 lies in the mapped 32-bit window (`find_edu`)
            // and memory decoding is on; nothing else drives the edu
            // before partitions run.
            let device = unsafe { Edu::new(bar.address as usize) };
            exercise(&device, route.intid, cpu, sid)
        });
    pci::disable_msi(&mut ecam, edu.bdf, capability);
    pci::set_command(&mut ecam, edu.bdf, saved);
    if let Err(e) = iommu::requarantine(edu.bdf) {
        log::error!("MSI self-test: putting the edu back into quarantine: {e}");
    }
    outcome
}

/// The raises, then the refused DMA.
fn exercise(device: &Edu, intid: u32, cpu: usize, sid: u32) -> Result<(), String> {
    if !device.identified() {
        return Err("BAR 0 does not read as an edu".into());
    }
    for round in 1..=RAISES {
        let before = TAKEN.load(Ordering::Acquire);
        device.raise_interrupt(RAISE_STATUS);
        let arrived = msi::take_interrupts_until(|| TAKEN.load(Ordering::Acquire) > before, LPI_TIMEOUT_MS);
        let status = device.interrupt_status();
        device.acknowledge_interrupt(status);
        arrived.map_err(|e| format!("raise {round} of {RAISES}: LPI {intid} did not arrive: {e}"))?;
        let taken = TAKEN.load(Ordering::Acquire) - before;
        if taken != 1 {
            return Err(format!("raise {round} of {RAISES}: LPI {intid} taken {taken} times"));
        }
        log::info!(
            "MSI self-test: raise {round} of {RAISES}: LPI {intid} arrived at the hypervisor on CPU {cpu} (edu status {status:#x}), acknowledged"
        );
    }
    refused_dma(device, sid)
}

/// An edu DMA into a hypervisor page: the MSI-only stage 2 must refuse it.
fn refused_dma(device: &Edu, sid: u32) -> Result<(), String> {
    let layout = Layout::from_size_align(EDU_BUFFER_SIZE as usize, EDU_BUFFER_SIZE as usize).map_err(|_| "layout")?;
    // SAFETY: a non-zero-sized layout.
    let page = unsafe { alloc_zeroed(layout) };
    if page.is_null() {
        return Err("no heap page for the DMA target".into());
    }
    for i in 0..layout.size() {
        // SAFETY: inside the page just allocated; volatile because the
        // device may (wrongly) write it.
        unsafe { page.add(i).write_volatile(PATTERN) };
    }
    let target = page as u64;
    device.start_write_to(target, TRANSFER_BYTES);
    let finished = crate::dma_selftest::wait(|| !device.busy(), TRANSFER_TIMEOUT_MS);
    // SAFETY: inside the page, as above.
    let changed = (0..layout.size()).filter(|&i| unsafe { page.add(i).read_volatile() } != PATTERN).count();
    if finished.is_ok() {
        // SAFETY: allocated above with this layout; the transfer is over.
        unsafe { dealloc(page, layout) };
    }
    // A transfer that did not finish leaves the page allocated for good:
    // the device might still write it.
    finished?;
    let events = iommu::service("MSI self-test");
    let recorded = events.iter().any(|r| r.event.stream_id == sid && r.event.input_address.is_some_and(|a| a & !0xfff == target));
    match (changed, recorded) {
        (0, true) => {
            log::info!("MSI self-test: the edu's DMA to {target:#x} was refused and recorded; only its MSIs get through");
            Ok(())
        }
        (0, false) => Err(format!("the page is intact but the SMMU recorded no event for StreamID {sid:#x}")),
        (n, _) => Err(format!("{n} byte(s) of the hypervisor page changed: the edu's DMA got through")),
    }
}
