//! The GPU direct-path self-test (`selftest=gpu`) and blit benchmark
//! (`bench=gpu`): before any partition runs, the hypervisor drives the GPU
//! itself through [`crate::gpu_hw`], on its own ring in its own reserve.
//!
//! Self-test: a ring with XY_COLOR_BLT (fill surface A in local memory),
//! XY_SRC_COPY_BLT (A to B), MI_STORE_DATA_IMM into a page of hypervisor
//! RAM mapped through the GTT, a store to the fence page and
//! MI_USER_INTERRUPT; a bounded wait; the pixels and the RAM word checked.
//! Then a blit to a GTT entry made not-present: the fault must be recorded
//! (code, address, HEAD at the command), and after HEAD is moved past it
//! and FAULT_STATUS cleared the rest of the ring must run.

use crate::gpu_hw::{self, FENCE_OFFSET};
use bulkhead_abi::gpu::bench;
use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use alloc::format;
use alloc::string::String;
use bulkhead_abi::gpu::cmd;
use bulkhead_drivers::gpu::PAGE_SIZE;
use bulkhead_abi::gpu::encode::{self as commands, BYTES_PER_PIXEL_32, Rect, Surface};

/// Longest wait for the GPU, in milliseconds. The model also polls its
/// registers every 100 ms, in case a doorbell was lost at start-up.
const TIMEOUT_MS: u64 = 5000;
/// Self-test surfaces: 64 x 64 pixels, 32 bpp.
const SIDE: u16 = 64;
const SURFACE_PITCH: u32 = SIDE as u32 * BYTES_PER_PIXEL_32;
const SURFACE_BYTES: u64 = SURFACE_PITCH as u64 * SIDE as u64;
const FILL: u32 = 0x1122_3344;
const RAM_VALUE: u32 = 0xc0ff_ee01;
const FENCE_FIRST: u32 = 0xfe00_0001;
const FENCE_AFTER_FAULT: u32 = 0xfe00_0002;
/// GTT entries borrowed by the test, just past the reserve, given back to
/// the scratch page afterwards: one maps the RAM page, one is not present.
const RAM_INDEX: u32 = gpu_hw::RESERVED_ENTRIES;
const MISSING_INDEX: u32 = gpu_hw::RESERVED_ENTRIES + 1;
/// Bytes of the test's ring (one page).
const RING_BYTES: u32 = PAGE_SIZE as u32;
/// The model's fault code for a GTT entry that is not present.
const FAULT_NOT_PRESENT: u32 = 1;
#[cfg(target_arch = "aarch64")]
const MS_PER_SECOND: u64 = 1000;

#[cfg(target_arch = "aarch64")]
fn now() -> u64 {
    use aarch64_cpu::registers::{CNTPCT_EL0, Readable};
    CNTPCT_EL0.get()
}

#[cfg(target_arch = "aarch64")]
fn ticks_per_ms() -> u64 {
    use aarch64_cpu::registers::{CNTFRQ_EL0, Readable};
    CNTFRQ_EL0.get().max(MS_PER_SECOND) / MS_PER_SECOND
}

/// Between polls: nothing to do on arm64 (its LPI is taken only at guest exits).
#[cfg(target_arch = "aarch64")]
fn between_polls() {}

#[cfg(target_arch = "x86_64")]
fn now() -> u64 {
    bulkhead_arch_x86_64::cpu::ap::rdtsc()
}

/// The TSC's rate is not measured: timeouts assume up to 4 GHz (as the AP
/// start-up delays do), so they are at least as long as stated.
#[cfg(target_arch = "x86_64")]
fn ticks_per_ms() -> u64 {
    4_000_000
}

/// Between polls: let the GPU's MSI-X vector in.
#[cfg(target_arch = "x86_64")]
fn between_polls() {
    crate::x86::take_device_interrupts();
}

/// Polls until `done` says yes, or [`TIMEOUT_MS`].
fn wait(what: &str, mut done: impl FnMut(&gpu_hw::Completion) -> bool) -> Result<gpu_hw::Completion, String> {
    let limit = TIMEOUT_MS * ticks_per_ms();
    let start = now();
    loop {
        between_polls();
        let completion = gpu_hw::poll().map_err(|e| format!("{e}"))?;
        if done(&completion) {
            return Ok(completion);
        }
        if now().wrapping_sub(start) > limit {
            return Err(format!("{what}: no completion within {TIMEOUT_MS} ms (last state {completion:?})"));
        }
        core::hint::spin_loop();
    }
}

/// A zeroed page of hypervisor RAM (identity-mapped, so its address is physical).
struct RamPage(*mut u8);

impl RamPage {
    const LAYOUT: Layout = match Layout::from_size_align(PAGE_SIZE as usize, PAGE_SIZE as usize) {
        Ok(layout) => layout,
        Err(_) => panic!("page layout"),
    };

    fn new() -> Option<RamPage> {
        // SAFETY: a non-zero-sized layout.
        let page = unsafe { alloc_zeroed(Self::LAYOUT) };
        (!page.is_null()).then_some(RamPage(page))
    }

    fn address(&self) -> u64 {
        self.0 as u64
    }

    fn read(&self, offset: usize) -> u32 {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        // SAFETY: inside the page (callers pass small aligned offsets);
        // volatile because the GPU writes it behind the compiler's back.
        unsafe { self.0.add(offset).cast::<u32>().read_volatile() }
    }
}

impl Drop for RamPage {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the GTT entry that
        // named it is given back to the scratch page before the drop.
        unsafe { dealloc(self.0, Self::LAYOUT) };
    }
}

/// Writes `words` into the ring at byte offset `at`; returns the new offset.
fn emit(ring_local: u64, at: u32, words: &[u32]) -> Result<u32, String> {
    gpu_hw::write_local(ring_local + u64::from(at), words).map_err(|e| format!("ring: {e}"))?;
    let next = at + (words.len() * 4) as u32;
    if next >= RING_BYTES {
        return Err(String::from("ring full"));
    }
    Ok(next)
}

/// Pads the ring with MI_NOOP to a qword (RING_TAIL's alignment).
fn pad(ring_local: u64, at: u32) -> Result<u32, String> {
    if at.is_multiple_of(8) { Ok(at) } else { emit(ring_local, at, &[commands::mi_noop()]) }
}

/// Runs the self-test; `Err` is the failure reason.
pub fn run() -> Result<(), String> {
    let info = gpu_hw::info().ok_or("no GPU (QEMU: the gpu-model's ivshmem-doorbell device)")?;
    log::info!("gpu selftest: device {} found, {} GTT entries, {} MiB local memory ok", info.function.bdf, info.gtt_entries, info.local_size >> 20);
    let page = RamPage::new().ok_or("no RAM page")?;
    let result = direct_path(&page);
    let scratch = gpu_hw::scratch_entry().unwrap_or(0);
    for index in [RAM_INDEX, MISSING_INDEX] {
        gpu_hw::write_gtt(index, scratch).map_err(|e| format!("restoring GTT entry {index}: {e}"))?;
    }
    result
}

fn direct_path(page: &RamPage) -> Result<(), String> {
    let e = |e: bulkhead_drivers::gpu::GpuError| format!("{e}");
    let (ring, ring_gfx) = gpu_hw::reserve(u64::from(RING_BYTES)).map_err(e)?;
    let (a, a_gfx) = gpu_hw::reserve(SURFACE_BYTES).map_err(e)?;
    let (b, b_gfx) = gpu_hw::reserve(SURFACE_BYTES).map_err(e)?;
    gpu_hw::fill_local(a, SURFACE_BYTES, 0).map_err(e)?;
    gpu_hw::fill_local(b, SURFACE_BYTES, 0).map_err(e)?;
    gpu_hw::fill_local(ring, u64::from(RING_BYTES), commands::mi_noop()).map_err(e)?;
    gpu_hw::write_gtt(RAM_INDEX, gpu_hw::ram_entry(page.address()).map_err(e)?).map_err(e)?;
    gpu_hw::write_gtt(MISSING_INDEX, 0).map_err(e)?;
    let ram_gfx = u64::from(RAM_INDEX) * PAGE_SIZE;
    let missing_gfx = u64::from(MISSING_INDEX) * PAGE_SIZE;
    log::info!(
        "gpu selftest: reserve ring {ring_gfx:#x}, surfaces {a_gfx:#x} and {b_gfx:#x}; RAM page {:#x} at graphics {ram_gfx:#x} ok",
        page.address()
    );

    // Part 1: fill, copy, store to RAM, fence, user interrupt.
    let full = Rect { x1: 0, y1: 0, x2: SIDE, y2: SIDE };
    let surface = |address| Surface { address, pitch: SURFACE_PITCH };
    let before = gpu_hw::poll().map_err(e)?.seqno;
    let mut tail = 0;
    tail = emit(ring, tail, &commands::xy_color_blt(surface(a_gfx), full, FILL))?;
    tail = emit(ring, tail, &commands::xy_src_copy_blt(surface(b_gfx), full, surface(a_gfx), 0, 0))?;
    tail = emit(ring, tail, &commands::mi_store_data_imm(ram_gfx, RAM_VALUE))?;
    tail = emit(ring, tail, &commands::mi_store_data_imm(FENCE_OFFSET, FENCE_FIRST))?;
    tail = emit(ring, tail, &[commands::mi_user_interrupt()])?;
    tail = pad(ring, tail)?;
    gpu_hw::submit(ring_gfx, RING_BYTES, 0, tail).map_err(e)?;
    let done = wait("blits", |c| c.seqno != before && c.idle || c.fault.is_some())?;
    if let Some(fault) = done.fault {
        return Err(format!("unexpected fault {fault:x?}"));
    }
    log::info!("gpu selftest: ring ran to its tail, SEQNO {} -> {} ok", before, done.seqno);
    let last = u64::from(SIDE) * u64::from(SIDE) * 4 - 4;
    for (what, offset) in [("XY_COLOR_BLT", a), ("XY_COLOR_BLT", a + last), ("XY_SRC_COPY_BLT", b), ("XY_SRC_COPY_BLT", b + last)] {
        let value = gpu_hw::read_local(offset).map_err(e)?;
        if value != FILL {
            return Err(format!("{what}: local memory {offset:#x} holds {value:#x}, not {FILL:#x}"));
        }
    }
    log::info!("gpu selftest: XY_COLOR_BLT and XY_SRC_COPY_BLT in local memory ok");
    let stored = page.read(0);
    if stored != RAM_VALUE {
        return Err(format!("MI_STORE_DATA_IMM: RAM page holds {stored:#x}, not {RAM_VALUE:#x}"));
    }
    let fence = gpu_hw::read_local(FENCE_OFFSET).map_err(e)?;
    if fence != FENCE_FIRST {
        return Err(format!("fence page holds {fence:#x}, not {FENCE_FIRST:#x}"));
    }
    log::info!("gpu selftest: MI_STORE_DATA_IMM into RAM and the fence page, MI_USER_INTERRUPT ok");
    #[cfg(target_arch = "x86_64")]
    {
        // The MSI follows the status update through QEMU's event loop.
        let (limit, start) = (TIMEOUT_MS * ticks_per_ms(), now());
        while gpu_hw::interrupts() == 0 && now().wrapping_sub(start) < limit {
            between_polls();
        }
        let taken = gpu_hw::interrupts();
        if taken == 0 {
            return Err(String::from("no MSI-X interrupt arrived for MI_USER_INTERRUPT"));
        }
        log::info!("gpu selftest: MSI-X interrupt taken ({taken}) ok");
    }

    // Part 2: a blit to a GTT entry that is not present faults; skip it.
    let fault_at = tail;
    tail = emit(ring, tail, &commands::xy_color_blt(surface(missing_gfx), full, FILL))?;
    let resume_at = tail;
    tail = emit(ring, tail, &commands::mi_store_data_imm(FENCE_OFFSET, FENCE_AFTER_FAULT))?;
    tail = emit(ring, tail, &[commands::mi_user_interrupt()])?;
    tail = pad(ring, tail)?;
    let before = done.seqno;
    gpu_hw::submit(ring_gfx, RING_BYTES, fault_at, tail).map_err(e)?;
    let faulted = wait("fault", |c| c.fault.is_some() || (c.idle && c.seqno != before))?;
    let fault = faulted.fault.ok_or("the blit to a not-present GTT entry did not fault")?;
    if fault.code != FAULT_NOT_PRESENT || fault.address & !(PAGE_SIZE - 1) != missing_gfx || fault.command_address != ring_gfx + u64::from(fault_at) {
        return Err(format!("wrong fault record {fault:x?} (expected code {FAULT_NOT_PRESENT} at {missing_gfx:#x}, command at {:#x})", ring_gfx + u64::from(fault_at)));
    }
    if cmd::client(fault.command) != cmd::CLIENT_2D || cmd::blt_opcode(fault.command) != cmd::XY_COLOR_BLT {
        return Err(format!("fault names command {:#x}, not the XY_COLOR_BLT", fault.command));
    }
    log::info!(
        "gpu selftest: blit to a not-present GTT entry faulted (code {}, address {:#x}, command at {:#x}) ok",
        fault.code,
        fault.address,
        fault.command_address
    );
    gpu_hw::clear_fault(Some(resume_at)).map_err(e)?;
    let recovered = wait("recovery", |c| c.fault.is_some() || (c.idle && c.seqno != before))?;
    if let Some(fault) = recovered.fault {
        return Err(format!("fault again after recovery: {fault:x?}"));
    }
    let fence = gpu_hw::read_local(FENCE_OFFSET).map_err(e)?;
    if fence != FENCE_AFTER_FAULT {
        return Err(format!("after recovery the fence page holds {fence:#x}, not {FENCE_AFTER_FAULT:#x}"));
    }
    log::info!("gpu selftest: fault cleared, HEAD moved past the command, the ring ran on ok");
    Ok(())
}

/// `bench=gpu`: times the workload of [`bench`] on the hypervisor's own ring and
/// prints one `gpu bench direct:` line (or why it could not).
pub fn bench() {
    if let Err(reason) = measure() {
        log::warn!("gpu bench direct: not measured: {reason}");
    }
}

fn measure() -> Result<(), String> {
    let e = |e: bulkhead_drivers::gpu::GpuError| format!("{e}");
    gpu_hw::info().ok_or("no GPU")?;
    let ring_bytes = (bench::SUBMISSION_DWORDS as u64 * 4).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let (ring, ring_gfx) = gpu_hw::reserve(ring_bytes).map_err(e)?;
    let (surfaces, surfaces_gfx) = gpu_hw::reserve(bench::LOCAL_MEMORY_BYTES).map_err(e)?;
    gpu_hw::fill_local(surfaces + bench::SOURCE_OFFSET, bench::SURFACE_BYTES, FILL).map_err(e)?;
    let words = bench::submission(surfaces_gfx + bench::SOURCE_OFFSET, surfaces_gfx + bench::DESTINATION_OFFSET);
    gpu_hw::write_local(ring, &words).map_err(e)?;
    let tail = (words.len() * 4) as u32;
    // One submission at a time, each waited for, as the mediated side does;
    // one warm-up submission first, not timed (as there).
    let run = || -> Result<(), String> {
        let before = gpu_hw::poll().map_err(e)?.seqno;
        gpu_hw::submit(ring_gfx, ring_bytes as u32, 0, tail).map_err(e)?;
        let done = wait("bench", |c| c.fault.is_some() || (c.idle && c.seqno != before))?;
        done.fault.map_or(Ok(()), |fault| Err(format!("fault {fault:x?}")))
    };
    run()?;
    let start = now();
    for _ in 0..bench::SUBMISSIONS {
        run()?;
    }
    let ticks = now().wrapping_sub(start);
    let blits = u64::from(bench::BLITS);
    crate::gpu_selftest::report(format_args!(
        "gpu bench direct: {blits} blits of {} bytes: {} ticks/blit ({} ticks per ms)",
        bench::SURFACE_BYTES,
        ticks / blits,
        ticks_per_ms()
    ));
    Ok(())
}

/// Prints a benchmark line the way the DMA benchmark does.
fn report(line: core::fmt::Arguments<'_>) {
    #[cfg(target_arch = "aarch64")]
    crate::console::line(format_args!("[bulkhead] bench: {line}"));
    #[cfg(target_arch = "x86_64")]
    log::info!("bench: {line}");
}
