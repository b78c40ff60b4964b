//! The physical side of assigned PCI functions' legacy interrupts (INTx) on
//! x86_64: the host's I/O APICs (from the ACPI MADT), one vector per routed
//! line from [`DEVICE_VECTORS`], and the handler those vectors reach.
//!
//! The hypervisor runs with RFLAGS.IF clear. A routed line's redirection
//! entry is level-triggered, active low, aimed at the CPU running the
//! owning partition and unmasked only while it runs. When the line fires
//! during the guest, the CPU leaves the guest with an INTR #VMEXIT; the
//! exit handler then opens a short window ([`take_interrupts`]: STI, NOP,
//! CLI) in which the CPU delivers the vector through the hypervisor's IDT
//! to [`bulkhead_x86_device_interrupt`], which records it as pending,
//! masks the line at the I/O APIC (it stays asserted until the guest
//! acknowledges the device) and ends it at the local APIC. The exit path
//! then asserts the partition's virtual I/O APIC pin
//! (`bulkhead_core::devices::ioapic`), which becomes the guest's virtual
//! interrupt, and unmasks the host line again once the guest's EOI cleared
//! the pin's remote IRR ([`unmask`]): a line still high fires again.
//!
//! Lines may not be shared between partitions: a GSI already routed to
//! another partition refuses the function.
//!
//! The GPU's MSI has a vector of its own ([`claim_gpu_vector`]), aimed at
//! the boot CPU; the same vector is the virtual GPUs' kick ([`kick`]), a
//! fixed IPI that makes the CPU running a partition look at its virtual
//! GPU's line (it ends a HLT wait or leaves the guest with an INTR exit).

use super::paging::{self, Live};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_arch_x86_64::cpu::ap::LocalApic;
use bulkhead_arch_x86_64::cpu::idt::DEVICE_VECTORS;
use bulkhead_core::acpi::{self, PhysicalMemory};
use bulkhead_core::devices::ioapic::PIN_COUNT;
use bulkhead_drivers::ioapic::{IoApic, entry};
use core::sync::atomic::{AtomicU32, Ordering};
use spin::Mutex;

/// Bytes of an I/O APIC's register page.
const IOAPIC_PAGE: u64 = 0x1000;
/// Device vectors available.
const VECTOR_COUNT: usize = (DEVICE_VECTORS.end - DEVICE_VECTORS.start) as usize;
/// "No GSI" in [`VECTOR_GSI`].
const NO_GSI: u32 = u32::MAX;
/// Owner mark in [`VECTOR_OWNER`] of the vector the hypervisor's own GPU
/// uses (an MSI, no GSI).
const GPU_OWNER: usize = usize::MAX - 1;
/// The GPU's MSI vector (0: none).
static GPU_VECTOR: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);
/// MSI message address: `0xfee` in bits 31:20, destination APIC ID in
/// bits 19:12, physical destination mode, no redirection hint (Intel SDM
/// Vol. 3A §11.11.1, "Message Address Register Format").
const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;
/// MSI address: destination APIC ID shift.
const MSI_DESTINATION_SHIFT: u32 = 12;

/// Claims a device vector for the hypervisor's GPU's MSI, aimed at the CPU
/// with `apic_id` (fixed delivery, edge: message data = the vector, SDM
/// §11.11.2); returns the MSI address and data. Its handler calls
/// [`crate::gpu_hw::on_gpu_interrupt`].
///
/// # Errors
/// No device vector is left.
pub fn claim_gpu_vector(apic_id: u32) -> Result<(u64, u32), String> {
    let mut owners = VECTOR_OWNER.lock();
    let free = owners.iter().position(|&o| o == usize::MAX).ok_or("no device vector left")?;
    owners[free] = GPU_OWNER;
    let vector = DEVICE_VECTORS.start + free as u8;
    GPU_VECTOR.store(vector, Ordering::Release);
    gpu_msi(apic_id).ok_or_else(|| String::from("the GPU vector was not recorded"))
}

/// The MSI address and data of the claimed GPU vector aimed at `apic_id`.
pub fn gpu_msi(apic_id: u32) -> Option<(u64, u32)> {
    gpu_vector().map(|vector| (MSI_ADDRESS_BASE | (u64::from(apic_id as u8) << MSI_DESTINATION_SHIFT), u32::from(vector)))
}

/// The GPU's MSI vector, if [`claim_gpu_vector`] claimed one.
pub fn gpu_vector() -> Option<u8> {
    Some(GPU_VECTOR.load(Ordering::Acquire)).filter(|&v| v != 0)
}

/// Makes the CPU with APIC ID `apic_id` look at the virtual GPUs: a fixed
/// IPI with the GPU's vector (whose handler flags the GPU's event and ends
/// the interrupt). It wakes the CPU from [`wait_for_interrupt`] or makes
/// its guest leave with an INTR #VMEXIT. The mediator's [`crate::vgpu::Kick`].
pub fn kick(apic_id: u64) {
    let Some(vector) = gpu_vector() else { return };
    // SAFETY: the hypervisor's page tables map the local APIC uncached on
    // every CPU.
    let apic = unsafe { LocalApic::current() };
    if apic.send_fixed(apic_id as u32, vector).is_err() {
        log::warn!("virtual GPU: the IPI to the CPU with APIC ID {apic_id} was not sent");
    }
}

/// One host I/O APIC.
struct HostIoApic {
    apic: IoApic,
    gsi_base: u32,
    inputs: u32,
}

// SAFETY: the I/O APIC's registers are MMIO reachable from every CPU; all
// accesses go through the `HOST` lock, which serialises the select-then-
// access pairs.
unsafe impl Send for HostIoApic {}

/// The host's I/O APICs, once [`init`] found them.
static HOST: Mutex<Vec<HostIoApic>> = Mutex::new(Vec::new());
/// The GSI each device vector is routed from ([`NO_GSI`]: none), for the
/// handler.
static VECTOR_GSI: [AtomicU32; VECTOR_COUNT] = [const { AtomicU32::new(NO_GSI) }; VECTOR_COUNT];
/// The partition each routed vector belongs to (`usize::MAX`: free).
static VECTOR_OWNER: Mutex<[usize; VECTOR_COUNT]> = Mutex::new([usize::MAX; VECTOR_COUNT]);
/// Device vectors taken and not yet collected by their partition, a bit
/// per vector of [`DEVICE_VECTORS`].
static PENDING: AtomicU32 = AtomicU32::new(0);

/// A host line routed to a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The host GSI (also the guest's virtual I/O APIC pin).
    pub gsi: u32,
    /// The host vector it arrives as.
    pub vector: u8,
}

impl Route {
    /// Its bit in [`PENDING`].
    pub fn bit(&self) -> u32 {
        1 << (self.vector - DEVICE_VECTORS.start)
    }

    /// The guest pin.
    pub fn pin(&self) -> usize {
        self.gsi as usize
    }
}

/// Finds the I/O APICs in the MADT, maps their registers and masks every
/// input (the firmware's routing is not the hypervisor's).
pub fn init(memory: &dyn PhysicalMemory, rsdp: u64, live: &Live) {
    let madt = match acpi::find_table(memory, rsdp, b"APIC").and_then(|table| acpi::parse_madt(&table)) {
        Ok(madt) => madt,
        Err(e) => {
            log::error!("I/O APIC: ACPI MADT: {e}: no INTx routing");
            return;
        }
    };
    for over in &madt.overrides {
        log::debug!("ACPI MADT: interrupt source override: bus {} IRQ {} -> GSI {} (flags {:#x})", over.bus, over.source, over.gsi, over.flags);
    }
    let mut host = HOST.lock();
    for found in &madt.io_apics {
        let base = u64::from(found.address);
        if let Err(e) = paging::map_mmio(base, IOAPIC_PAGE, live) {
            log::error!("I/O APIC {} at {base:#x}: {e}", found.id);
            continue;
        }
        // SAFETY: the page was just mapped uncached; from here on only
        // this module drives it, under the `HOST` lock.
        let apic = unsafe { IoApic::new(base as usize) };
        let (version, inputs) = apic.version();
        for input in 0..inputs {
            apic.set_masked(input, true);
        }
        log::info!(
            "I/O APIC {} at {base:#x}: version {version:#x}, {inputs} inputs (GSI {}..={}), all masked",
            found.id,
            found.gsi_base,
            found.gsi_base + inputs - 1
        );
        host.push(HostIoApic { apic, gsi_base: found.gsi_base, inputs });
    }
}

/// Runs `f` on the I/O APIC input carrying `gsi`.
fn with_input<T>(gsi: u32, f: impl FnOnce(&IoApic, u32) -> T) -> Option<T> {
    let host = HOST.lock();
    let (apic, input) = host.iter().find_map(|h| {
        let input = gsi.checked_sub(h.gsi_base).filter(|&i| i < h.inputs)?;
        Some((&h.apic, input))
    })?;
    Some(f(apic, input))
}

/// Routes `gsi` to partition `partition`: a vector of its own, the entry
/// programmed level-triggered, active low, masked until [`activate`]. A
/// GSI the partition already has keeps its vector (functions sharing it).
///
/// # Errors
/// No I/O APIC input carries the GSI, the guest's I/O APIC has no such
/// pin, another partition has the line, or no device vector is left.
pub fn route(partition: usize, gsi: u32) -> Result<Route, String> {
    if gsi as usize >= PIN_COUNT {
        return Err(format!("GSI {gsi} is beyond the virtual I/O APIC's {PIN_COUNT} pins"));
    }
    let mut owners = VECTOR_OWNER.lock();
    for (i, owner) in owners.iter().enumerate() {
        if *owner != usize::MAX && VECTOR_GSI[i].load(Ordering::Relaxed) == gsi {
            if *owner != partition {
                return Err(format!("GSI {gsi} is already routed to another partition (partition {owner})"));
            }
            return Ok(Route { gsi, vector: DEVICE_VECTORS.start + i as u8 });
        }
    }
    let free = owners.iter().position(|&o| o == usize::MAX).ok_or("no device vector left")?;
    let vector = DEVICE_VECTORS.start + free as u8;
    with_input(gsi, |apic, input| apic.set_entry(input, entry::fixed(vector, 0, true, true)))
        .ok_or_else(|| format!("no I/O APIC input carries GSI {gsi}"))?;
    owners[free] = partition;
    VECTOR_GSI[free].store(gsi, Ordering::Release);
    Ok(Route { gsi, vector })
}

/// Aims `routes` at the CPU with APIC ID `apic_id` (the caller's) and
/// unmasks them: called when the partition starts running there.
pub fn activate(routes: &[Route], apic_id: u32) {
    for route in routes {
        let value = entry::fixed(route.vector, apic_id as u8, true, false);
        with_input(route.gsi, |apic, input| apic.set_entry(input, value));
    }
}

/// Masks `routes` for good: the partition stopped.
pub fn deactivate(routes: &[Route]) {
    for route in routes {
        with_input(route.gsi, |apic, input| apic.set_masked(input, true));
    }
}

/// Unmasks `gsi` again (the guest's EOI ended its interrupt).
pub fn unmask(gsi: u32) {
    with_input(gsi, |apic, input| apic.set_masked(input, false));
}

/// The pending vectors among `bits` (a [`Route::bit`] set), collected.
pub fn take_pending(bits: u32) -> u32 {
    PENDING.fetch_and(!bits, Ordering::AcqRel) & bits
}

/// Lets the CPU deliver the interrupts it holds: STI, one instruction
/// (STI's shadow ends after it), CLI. Call with no lock held.
pub fn take_interrupts() {
    // SAFETY: only the device vectors can be pending at this CPU (nothing
    // else is routed to it), and their handler returns; interrupts are
    // masked again before this returns.
    unsafe { core::arch::asm!("sti", "nop", "cli", options(nomem, nostack)) };
}

/// Waits for the next interrupt: STI; HLT (atomic: HLT sits in STI's
/// shadow, so an interrupt that arrives in between still ends the HLT);
/// CLI. Call with no lock held.
pub fn wait_for_interrupt() {
    // SAFETY: as for `take_interrupts`; HLT returns after the handler ran.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}

/// The handler of every device vector (see the module documentation).
#[unsafe(no_mangle)]
fn bulkhead_x86_device_interrupt(vector: u8) {
    if vector != 0 && vector == GPU_VECTOR.load(Ordering::Acquire) {
        crate::gpu_hw::on_gpu_interrupt();
    } else if DEVICE_VECTORS.contains(&vector) {
        let index = usize::from(vector - DEVICE_VECTORS.start);
        let gsi = VECTOR_GSI[index].load(Ordering::Acquire);
        if gsi != NO_GSI {
            // Level-triggered: masked until the guest's EOI, or the line
            // (still asserted until the guest acknowledges its device)
            // fires again as soon as the local APIC's EOI below reaches
            // the I/O APIC.
            with_input(gsi, |apic, input| apic.set_masked(input, true));
        }
        PENDING.fetch_or(1 << index, Ordering::AcqRel);
    }
    // SAFETY: the hypervisor's page tables map the local APIC uncached.
    unsafe { LocalApic::current() }.eoi();
}
