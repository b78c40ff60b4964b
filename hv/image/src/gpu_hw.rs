//! The hypervisor's own use of the GPU (DESIGN.md §5): the device brought
//! up once at boot, the hypervisor's reserved layout in the GPU's local
//! memory and global GTT, and the small API the mediator builds on.
//!
//! Reserved layout (local memory [0, [`RESERVED_BYTES`]) = 4 MiB):
//!
//! | local offset | GTT entries | what |
//! |---|---|---|
//! | 0x0000 | 0 | scratch page: every GTT entry nobody owns points here |
//! | 0x1000 | 1 | fence page: the hypervisor's MI_STORE_DATA_IMM completion values |
//! | 0x2000.. | 2..1024 | [`reserve`]: page-granular bump allocator (shadow rings, shadow batches, per-partition areas, self-test surfaces) |
//!
//! Real GTT entry `i < 1024` maps local offset `i * 4096` (LM bit), so a
//! reserved block's graphics address equals its local offset. Every entry
//! from 1024 on starts out pointing at the scratch page ([`scratch_entry`]);
//! the mediator hands those ranges to partitions.
//!
//! Completions: on x86_64 the GPU's MSI-X vector 0 is a host vector taken
//! in the same windows as INTx (`x86::intx`), whose handler calls
//! [`on_gpu_interrupt`]. On arm64 it goes through the GICv3 ITS to an LPI
//! (`main.rs::gpu_init`; the SMMU lets the ivshmem write only the ITS
//! doorbell), whose handler calls it too. Either way the completion is read
//! by [`poll`] (from `vgpu::service`), which also covers a machine without
//! an MSI path.



use alloc::format;
use alloc::string::String;
use bulkhead_drivers::gpu::registers::INT;
use bulkhead_drivers::gpu::{self as driver, Fault, Gpu, GpuError, GpuFunction, PAGE_SIZE};
use bulkhead_drivers::pci::{self, COMMAND, ConfigSpace};
use core::sync::atomic::{AtomicU32, Ordering};
use spin::{Mutex, Once};
use tock_registers::LocalRegisterCopy;

/// Bytes of local memory the hypervisor keeps.
pub const RESERVED_BYTES: u64 = 4 << 20;
/// GTT entries mapping the reserve, one per page.
pub const RESERVED_ENTRIES: u32 = (RESERVED_BYTES / PAGE_SIZE) as u32;
/// Local offset of the scratch page.
pub const SCRATCH_OFFSET: u64 = 0;
/// Local offset (and graphics address) of the fence page.
pub const FENCE_OFFSET: u64 = PAGE_SIZE;
/// First local offset [`reserve`] hands out.
const ALLOCATOR_START: u64 = 2 * PAGE_SIZE;

/// What [`init`] found.
#[derive(Clone, Copy, Debug)]
pub struct Info {
    /// The PCI function and its BARs.
    pub function: GpuFunction,
    /// Global GTT entries.
    pub gtt_entries: u32,
    /// Local memory bytes.
    pub local_size: u64,
    /// Host-physical address of local memory (inside BAR2).
    pub local_address: u64,
}

/// One completion check's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The ring has no work left (or is stopped by a fault).
    pub idle: bool,
    /// SEQNO: MI_USER_INTERRUPTs executed so far.
    pub seqno: u32,
    /// The fault that stopped the ring, if any (cleared with [`clear_fault`]).
    pub fault: Option<Fault>,
}

struct State {
    gpu: Gpu,
    info: Info,
    scratch_entry: u64,
    next_free: u64,
    ring: Option<(u64, u32)>,
}

static GPU: Once<Mutex<State>> = Once::new();
/// Interrupts taken (x86_64 MSI-X), for the self-test's report.
static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

/// Brings the GPU up: memory decoding and bus mastering on, BAR2 checked,
/// the reserved layout written into the GTT, interrupts off. The caller
/// has mapped BAR0 and BAR2 at their physical addresses (identity).
///
/// # Errors
/// Not a GPU, a bad layout, local memory smaller than the reserve, or called twice.
pub fn init(function: GpuFunction, space: &mut impl ConfigSpace) -> Result<Info, String> {
    if GPU.get().is_some() {
        return Err(String::from("already initialised"));
    }
    let mut command = pci::command(space, function.bdf);
    command.modify(COMMAND::MEMORY_SPACE::SET + COMMAND::BUS_MASTER::SET);
    pci::set_command(space, function.bdf, command);
    // SAFETY: the arch wiring mapped BAR0 (registers) and all of BAR2
    // (shared memory) at their physical addresses before calling us, and
    // only this module drives the function.
    let gpu = unsafe { Gpu::new(function.registers.address as usize, function.shared.address as usize, function.shared.size) }
        .map_err(|e| format!("{} BAR2: {e}", function.bdf))?;
    if gpu.local_size() < RESERVED_BYTES || gpu.gtt_entries() < RESERVED_ENTRIES {
        return Err(format!("{} bytes of local memory / {} GTT entries: less than the hypervisor's reserve", gpu.local_size(), gpu.gtt_entries()));
    }
    gpu.enable_interrupts(LocalRegisterCopy::new(0));
    let scratch_entry = gpu.local_entry(SCRATCH_OFFSET).map_err(|e| format!("{e}"))?;
    for index in 0..gpu.gtt_entries() {
        let entry = if index < RESERVED_ENTRIES { gpu.local_entry(u64::from(index) * PAGE_SIZE) } else { Ok(scratch_entry) };
        entry.and_then(|e| gpu.write_gtt(index, e)).map_err(|e| format!("GTT entry {index}: {e}"))?;
    }
    gpu.fill_local(SCRATCH_OFFSET, 2 * PAGE_SIZE, 0).map_err(|e| format!("{e}"))?;
    let info = Info { function, gtt_entries: gpu.gtt_entries(), local_size: gpu.local_size(), local_address: gpu.local_address() };
    GPU.call_once(|| Mutex::new(State { gpu, info, scratch_entry, next_free: ALLOCATOR_START, ring: None }));
    log::info!(
        "GPU {}: registers BAR0 {:#x}, MSI-X BAR1 {:#x}, shared BAR2 {:#x} (+{:#x}); {} GTT entries, {} MiB local memory; \
         hypervisor reserve: local [0, {:#x}) in GTT [0, {RESERVED_ENTRIES}), the rest at the scratch page",
        function.bdf,
        function.registers.address,
        function.msix.address,
        function.shared.address,
        function.shared.size,
        info.gtt_entries,
        info.local_size >> 20,
        RESERVED_BYTES
    );
    Ok(info)
}

fn state() -> Result<spin::MutexGuard<'static, State>, GpuError> {
    GPU.get().map(Mutex::lock).ok_or(GpuError::MissingBar(driver::SHARED_BAR))
}

/// What [`init`] found, if the GPU is up.
pub fn info() -> Option<Info> {
    GPU.get().map(|s| s.lock().info)
}

/// The GTT entry that points at the scratch page (for entries nobody owns).
pub fn scratch_entry() -> Option<u64> {
    GPU.get().map(|s| s.lock().scratch_entry)
}

/// Writes real GTT entry `index` (store + fence).
///
/// # Errors
/// The GPU is not up, or `index` is beyond the GTT.
pub fn write_gtt(index: u32, value: u64) -> Result<(), GpuError> {
    state()?.gpu.write_gtt(index, value)
}

/// A present GTT entry for the RAM page at host-physical `address`.
///
/// # Errors
/// Not a page address that fits.
pub fn ram_entry(address: u64) -> Result<u64, GpuError> {
    Gpu::ram_entry(address)
}

/// Reserves `bytes` (rounded up to pages) of the hypervisor's local
/// memory; returns `(local_offset, graphics_address)` (equal, by the layout).
///
/// # Errors
/// The GPU is not up, or the reserve is exhausted.
pub fn reserve(bytes: u64) -> Result<(u64, u64), GpuError> {
    let mut state = state()?;
    let len = bytes.div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE;
    let offset = state.next_free;
    if offset.checked_add(len).is_none_or(|end| end > RESERVED_BYTES) {
        return Err(GpuError::LocalRange { offset, len });
    }
    state.next_free = offset + len;
    Ok((offset, offset))
}

/// Runs `[head, tail)` of the ring at graphics address `ring` of
/// `ring_bytes` (whole pages): the ring is (re)programmed with HEAD =
/// `head` if it is not already that ring, then TAIL is published and the
/// doorbell rung.
///
/// # Errors
/// [`GpuError::Busy`] while the ring runs other work; a bad ring or tail.
pub fn submit(ring: u64, ring_bytes: u32, head: u32, tail: u32) -> Result<(), GpuError> {
    let mut state = state()?;
    let pages = ring_bytes / PAGE_SIZE as u32;
    if !u64::from(ring_bytes).is_multiple_of(PAGE_SIZE) {
        return Err(GpuError::BadRing { start: ring, pages });
    }
    let status = state.gpu.status();
    if status.busy() {
        return Err(GpuError::Busy);
    }
    if state.ring != Some((ring, ring_bytes)) || !status.enabled || status.head != head {
        state.gpu.program_ring(ring, pages, head)?;
        state.ring = Some((ring, ring_bytes));
    }
    state.gpu.set_tail(tail)
}

/// Reads the engine once; acknowledges the user-interrupt status bit.
///
/// # Errors
/// The GPU is not up.
pub fn poll() -> Result<Completion, GpuError> {
    let state = state()?;
    let status = state.gpu.status();
    if status.interrupts.is_set(INT::USER) {
        state.gpu.acknowledge(LocalRegisterCopy::new(INT::USER::SET.value));
    }
    Ok(Completion { idle: !status.busy(), seqno: status.seqno, fault: status.fault })
}

/// Clears a recorded fault, resuming at ring offset `resume_at` if given
/// (to skip the faulting command); acknowledges the fault status bit.
///
/// # Errors
/// The GPU is not up, or `resume_at` is outside the ring.
pub fn clear_fault(resume_at: Option<u32>) -> Result<(), GpuError> {
    let state = state()?;
    state.gpu.acknowledge(LocalRegisterCopy::new(INT::FAULT::SET.value));
    state.gpu.clear_fault(resume_at)
}

/// Clears a recorded fault and drops what is left of the work: the ring
/// resumes at its tail, so nothing more runs until the next submission.
/// (Clearing without moving RING_HEAD would run the faulting command again.)
///
/// # Errors
/// The GPU is not up.
pub fn abandon_after_fault() -> Result<(), GpuError> {
    let state = state()?;
    let tail = state.gpu.status().tail;
    state.gpu.acknowledge(LocalRegisterCopy::new(INT::FAULT::SET.value));
    state.gpu.clear_fault(Some(tail))
}

/// Writes `words` into local memory at `offset`.
///
/// # Errors
/// Not up, or out of range.
pub fn write_local(offset: u64, words: &[u32]) -> Result<(), GpuError> {
    state()?.gpu.write_local(offset, words)
}

/// Fills local memory.
///
/// # Errors
/// Not up, or out of range.
pub fn fill_local(offset: u64, len: u64, word: u32) -> Result<(), GpuError> {
    state()?.gpu.fill_local(offset, len, word)
}

/// Reads one word of local memory.
///
/// # Errors
/// Not up, or out of range.
pub fn read_local(offset: u64) -> Result<u32, GpuError> {
    state()?.gpu.read_local(offset)
}


/// Interrupts taken so far (the x86_64 self-test checks its MSI arrived;
/// arm64 takes the LPI only at guest exits, after the self-test).
#[cfg(target_arch = "x86_64")]
pub fn interrupts() -> u32 {
    INTERRUPTS.load(Ordering::Acquire)
}

/// The GPU's interrupt: counts it and acknowledges the user-interrupt
/// status bit; the completion itself is taken by [`poll`] (the mediator's
/// `vgpu::service`, which the caller's exit path or LPI handler runs).
/// x86_64: called by the MSI-X vector's handler; arm64: by the LPI's.
pub fn on_gpu_interrupt() {
    INTERRUPTS.fetch_add(1, Ordering::AcqRel);
    // The lock may be held by the interrupted code only if interrupts are
    // taken inside it, which they never are (windows open with no lock held).
    if let Some(state) = GPU.get().and_then(|s| s.try_lock()) {
        let status = state.gpu.status();
        if status.interrupts.is_set(INT::USER) {
            state.gpu.acknowledge(LocalRegisterCopy::new(INT::USER::SET.value));
        }
    }
}

/// Enables INT_ENABLE (user interrupt and fault) and MSI-X vector 0 with
/// `address`/`data` (x86_64: a host vector).
///
/// # Errors
/// Not up, or no MSI-X capability at BAR1.
pub fn enable_msi(space: &mut impl ConfigSpace, address: u64, data: u32) -> Result<(), GpuError> {
    let state = state()?;
    let function = state.info.function;
    // SAFETY: the arch wiring mapped BAR1 (the MSI-X table) at its physical address.
    unsafe { driver::enable_msix(space, function.bdf, function.msix.address as usize, address, data) }?;
    state.gpu.enable_interrupts(LocalRegisterCopy::new(INT::USER::SET.value | INT::FAULT::SET.value));
    Ok(())
}
