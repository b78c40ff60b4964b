//! Building an x86_64 partition from its configuration: its address space
//! (RAM, the BARs of its PCI functions, its virtual GPU's memory BAR; the
//! GPU's register BAR, the virtual ECAM and APIC windows stay out of it and
//! are emulated on its bus), its second-level table (an AMD nested page table or
//! an Intel EPT, whichever back end runs it), its image, and the
//! identity-mapping guest page table that lets it start in long mode.

use super::memory::{self, NptFrames};
use crate::guest_memory::copy_in;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_abi::boot::BootInfo;
use bulkhead_arch_x86_64::{Access as NptAccess, EntryFormat, Ept, MapError, MemoryType, Npt, SecondLevelTable, TableOptions};
use alloc::boxed::Box;
use alloc::sync::Arc;
use bulkhead_config::{
    FaultPolicy, ImageKind, MemoryAttribute, Permissions, VERDICT_REGISTER_BASE, VIRTUAL_GPU_IOAPIC_PIN, VIRTUAL_GPU_MEMORY_BASE,
    VIRTUAL_GPU_REGISTERS_BASE, VIRTUAL_GPU_REGISTERS_SIZE, VIRTUAL_PCI_ECAM_BASE, VIRTUAL_PCI_ECAM_SIZE,
};
use bulkhead_core::devices::pci_config::VirtualEcam;
use bulkhead_core::devices::ioapic::{
    IoApicWindow, LocalApicWindow, VIRTUAL_IOAPIC_BASE, VIRTUAL_IOAPIC_SIZE, VIRTUAL_LAPIC_BASE, VIRTUAL_LAPIC_SIZE, VirtualIoApic,
};
use bulkhead_core::devices::verdict::{VERDICT_MMIO_SIZE, VerdictRegister};
use bulkhead_drivers::ioapic::q35_intx_gsi;
use bulkhead_drivers::pci::Bdf;
use core::ops::RangeInclusive;
use spin::Mutex;
use bulkhead_core::address::{Gpa, Hpa};
use bulkhead_core::address_space::{AddressSpace, CpuView, Region, RegionKind};
use bulkhead_core::memmap::MemoryDescriptor;
use bulkhead_core::partition::Partition;

/// A partition's nested page table (SVM).
pub type NestedTable = SecondLevelTable<Npt, NptFrames>;
/// A partition's extended page table (VMX); its frames come from the same
/// allocator as the NPT's.
pub type ExtendedTable = SecondLevelTable<Ept, NptFrames>;

const PAGE: u64 = 4096;
const PAGE_2M: u64 = 2 << 20;

/// Where a built partition's vCPU starts, and what it may touch.
pub struct Start {
    /// Entry point (guest-virtual = guest-physical).
    pub rip: u64,
    /// Initial stack pointer: just below the guest page tables.
    pub rsp: u64,
    /// Guest CR3: the identity map's PML4.
    pub cr3: u64,
    /// What a fault does to the partition.
    pub on_fault: FaultPolicy,
    /// I/O ports passed through (the configuration's `io_ports`).
    pub io_ports: Vec<RangeInclusive<u16>>,
    /// The last code written to the partition's verdict register.
    pub verdict: Arc<Mutex<Option<u32>>>,
    /// PCI functions assigned to it: if any, its exits poll VT-d faults.
    pub pci_functions: usize,
    /// Its virtual I/O APIC: its functions' INTx lines, if any is routed,
    /// and its virtual GPU's line.
    pub intx: Option<Intx>,
    /// Whether it has a virtual GPU ([`crate::vgpu`]).
    pub gpu: bool,
}

/// A partition's routed INTx lines and the virtual I/O APIC they reach.
#[derive(Clone)]
pub struct Intx {
    /// The virtual I/O APIC and local-APIC EOI state.
    pub apic: Arc<Mutex<VirtualIoApic>>,
    /// The host lines.
    pub routes: Vec<super::intx::Route>,
}

impl Intx {
    /// The [`super::intx::Route::bit`]s of all routes.
    pub fn bits(&self) -> u32 {
        self.routes.iter().fold(0, |bits, route| bits | route.bit())
    }
}

/// Routes the INTx line of each of `functions` (interrupt pin `pins[i]`)
/// to partition `index`, wires its virtual GPU's line (if `gpu`) to pin
/// [`VIRTUAL_GPU_IOAPIC_PIN`], and puts the virtual I/O APIC and local APIC
/// on its bus. `None` if there is no line at all.
///
/// # Errors
/// A line that cannot be routed (shared with another partition, no I/O
/// APIC input for it, or the virtual GPU's pin) refuses the partition,
/// naming the function.
fn route_intx(
    index: usize,
    partition: &mut Partition,
    functions: &[Bdf],
    pins: &[u8],
    gpu: bool,
) -> Result<Option<Intx>, String> {
    let mut apic = VirtualIoApic::new();
    let mut routes: Vec<super::intx::Route> = Vec::new();
    let gpu_pin = usize::from(VIRTUAL_GPU_IOAPIC_PIN);
    for (i, (bdf, &pin)) in functions.iter().zip(pins).enumerate() {
        if pin == 0 {
            continue;
        }
        let pin_name = ['A', 'B', 'C', 'D'].get(usize::from(pin) - 1).copied().unwrap_or('?');
        let Some(gsi) = q35_intx_gsi(bdf.device(), pin) else {
            log::warn!("partition {}: pci[{i}] {bdf}: INT{pin_name} has no known GSI: not routed", partition.name);
            continue;
        };
        if gpu && gsi as usize == gpu_pin {
            return Err(format!(
                "pci[{i}] {bdf}: INT{pin_name} is GSI {gsi}, the pin of the partition's virtual GPU (field 'gpu')"
            ));
        }
        let route = super::intx::route(index, gsi).map_err(|e| format!("pci[{i}] {bdf}: INT{pin_name}: {e}"))?;
        apic.own(route.pin());
        if !routes.contains(&route) {
            routes.push(route);
        }
        log::info!(
            "partition {}: pci[{i}] {bdf} INT{pin_name} is GSI {gsi} (host vector {:#x}), pin {} of its virtual I/O APIC at {VIRTUAL_IOAPIC_BASE:#x}",
            partition.name,
            route.vector,
            route.pin()
        );
    }
    if gpu {
        apic.own(gpu_pin);
        log::info!(
            "partition {}: virtual GPU interrupt is pin {gpu_pin} of its virtual I/O APIC at {VIRTUAL_IOAPIC_BASE:#x} (level)",
            partition.name
        );
    }
    if routes.is_empty() && !gpu {
        return Ok(None);
    }
    let apic = Arc::new(Mutex::new(apic));
    partition
        .bus
        .insert(Gpa::new(VIRTUAL_IOAPIC_BASE), VIRTUAL_IOAPIC_SIZE, Box::new(IoApicWindow(apic.clone())))
        .map_err(|e| format!("virtual I/O APIC: {e:?}"))?;
    partition
        .bus
        .insert(Gpa::new(VIRTUAL_LAPIC_BASE), VIRTUAL_LAPIC_SIZE, Box::new(LocalApicWindow(apic.clone())))
        .map_err(|e| format!("virtual local APIC: {e:?}"))?;
    Ok(Some(Intx { apic, routes }))
}

/// The NPT memory type for a configured attribute.
pub fn memory_type(attr: MemoryAttribute) -> MemoryType {
    match attr {
        MemoryAttribute::NormalWb => MemoryType::NormalWriteBack,
        MemoryAttribute::NormalNc => MemoryType::NormalNonCacheable,
        MemoryAttribute::DeviceNGnRE => MemoryType::DeviceNGnRE,
        MemoryAttribute::DeviceNGnRnE => MemoryType::DeviceNGnRnE,
    }
}

// ---- Second-level table: NPT or EPT ----

/// Which second-level format to build, with its limits.
#[derive(Clone, Copy, Debug)]
pub enum TableFormat {
    /// An AMD nested page table (every page size, 52 address bits).
    Npt,
    /// An Intel EPT, limited to what the CPU's IA32_VMX_EPT_VPID_CAP allows.
    Ept(TableOptions),
}

/// A partition's CPU view as its back end consumes it.
pub enum CpuTable {
    /// For the SVM back end; behind a lock because page tracking
    /// (`crate::page_track`) changes leaves while the partition runs.
    Npt(Mutex<NestedTable>),
    /// For the VMX back end.
    Ept(ExtendedTable),
}

impl CpuTable {
    /// The root (PML4) frame, for the log.
    pub fn root_address(&self) -> u64 {
        match self {
            CpuTable::Npt(table) => table.lock().root_address(),
            CpuTable::Ept(table) => table.root_address(),
        }
    }

    /// Frames the table uses, for the log.
    pub fn table_frame_count(&self) -> usize {
        match self {
            CpuTable::Npt(table) => table.lock().table_frame_count(),
            CpuTable::Ept(table) => table.table_frame_count(),
        }
    }
}

/// The x86 CPU view: an [`AddressSpace`] mapped into a second-level table
/// of format `F`.
pub struct SlatView<'a, F: EntryFormat>(pub &'a mut SecondLevelTable<F, NptFrames>);
/// The CPU view for SVM.
pub type NptView<'a> = SlatView<'a, Npt>;
/// The CPU view for VMX.
pub type EptView<'a> = SlatView<'a, Ept>;

impl<F: EntryFormat> CpuView for SlatView<'_, F> {
    type Error = MapError;

    fn map(
        &mut self,
        gpa: Gpa,
        hpa: Hpa,
        size: u64,
        attr: MemoryAttribute,
        perms: Permissions,
        pages_only: bool,
    ) -> Result<(), MapError> {
        let access = NptAccess { read: perms.read, write: perms.write, execute: perms.execute };
        let memory = memory_type(attr);
        if !pages_only {
            return self.0.map(gpa.raw(), hpa.raw(), size, memory, access);
        }
        // One 4 KiB leaf per page, so that pages can change one by one.
        for offset in (0..size).step_by(PAGE as usize) {
            self.0.map(gpa.raw() + offset, hpa.raw() + offset, PAGE, memory, access)?;
        }
        Ok(())
    }
}

/// The CPU view of `space` in `format`.
fn derive_table(space: &AddressSpace, format: TableFormat) -> Result<CpuTable, String> {
    let refused = |e| format!("second-level table: {e:?}");
    match format {
        TableFormat::Npt => {
            let mut npt = NestedTable::new(NptFrames).ok_or("no memory for the nested page table's root")?;
            let mut view: NptView<'_> = SlatView(&mut npt);
            space.derive_cpu_view(&mut view).map_err(refused)?;
            Ok(CpuTable::Npt(Mutex::new(npt)))
        }
        TableFormat::Ept(options) => {
            let mut ept = ExtendedTable::with_options(NptFrames, options).ok_or("no memory for the EPT's root")?;
            let mut view: EptView<'_> = SlatView(&mut ept);
            space.derive_cpu_view(&mut view).map_err(refused)?;
            Ok(CpuTable::Ept(ept))
        }
    }
}

// ---- The partition ----

/// Builds partition `index` from `config`: RAM (allocated or checked),
/// the second-level table in `format`, the image and the guest page table.
///
/// # Errors
/// A message naming what is refused; the partition is then not started.
pub fn build(
    index: usize,
    config: &bulkhead_config::Partition,
    boot_info: &BootInfo,
    host_map: &[MemoryDescriptor],
    format: TableFormat,
) -> Result<(Partition, CpuTable, Start), String> {
    let hv_image = (boot_info.hv_image.base, boot_info.hv_image.base + boot_info.hv_image.size);
    if config.image.kind != ImageKind::Raw {
        return Err(String::from("image.kind: only raw images run on x86_64 so far"));
    }
    if !config.passthrough.is_empty() {
        return Err(String::from("passthrough: device assignment is not implemented on x86_64 yet"));
    }
    let mut space = AddressSpace::new();
    let placed = crate::guest_memory::add_ram_regions(&mut space, config, memory::alloc_frames, |base, end| {
        memory::check_host_backing(host_map, hv_image, base, end)
    })?;
    for (i, (region, hpa)) in config.memory.iter().zip(placed).enumerate() {
        log::info!("partition {}: memory[{i}] GPA {:#x} -> {hpa:?}, {:#x} bytes", config.name, region.guest, region.size);
    }
    // Assigned PCI functions: their BARs join the address space before the
    // CPU view is derived from it.
    let pci = if config.pci.is_empty() { None } else { Some(super::assign::prepare(config)?) };
    for region in pci.iter().flat_map(|p| &p.regions) {
        space.add_region(region.clone()).map_err(|e| {
            format!("pci: BAR at {:?} (+{:#x}): {e:?}: it overlaps the partition's memory", region.gpa, region.size)
        })?;
    }
    // Its virtual GPU's memory BAR (local memory, mapped directly with the
    // configured attribute: `normal-nc` is WC in the NPT); its register
    // BAR stays out of the address space, so every access exits.
    let gpu = crate::vgpu::share(index);
    if gpu.is_some() && matches!(format, TableFormat::Ept(_)) {
        // VMX delivers no virtual interrupts yet (see `vmx::run_vcpu`).
        return Err(String::from("gpu: a virtual GPU needs the SVM back end on x86_64 so far (VMX delivers no interrupts yet)"));
    }
    if let Some(share) = &gpu {
        crate::vgpu::add_memory_region(&mut space, share)?;
        // The mediator write-protects the guest's GPU page tables page by
        // page while the partition runs (`crate::page_track`).
        space.set_page_granular_ram(true);
    }
    let table = derive_table(&space, format)?;
    let mut partition = Partition::new(index, &config.name, space);
    if gpu.is_some() {
        crate::page_track::enable(index, &partition.space);
    }
    let verdict = Arc::new(Mutex::new(None));
    partition
        .bus
        .insert(Gpa::new(VERDICT_REGISTER_BASE), VERDICT_MMIO_SIZE, Box::new(VerdictRegister(verdict.clone())))
        .map_err(|e| format!("verdict register: {e:?}"))?;
    let (ecam, functions, interrupt_pins) = match pci {
        Some(super::assign::Prepared { ecam, functions, interrupt_pins, .. }) => (Some(ecam), functions, interrupt_pins),
        None => (None, Vec::new(), Vec::new()),
    };
    let ecam = match (ecam, &gpu) {
        (ecam, None) => ecam,
        // The virtual GPU is the device after the assigned functions.
        (ecam, Some(share)) => {
            let mut ecam = ecam.unwrap_or_else(|| VirtualEcam::new(Vec::new()));
            let device = ecam
                .push(crate::vgpu::virtual_function(share))
                .ok_or("gpu: no device number left on the virtual PCI bus for the virtual GPU")?;
            log::info!(
                "partition {}: virtual GPU is device {device} of its virtual PCI bus, registers at {VIRTUAL_GPU_REGISTERS_BASE:#x} \
                 (trapped), local memory at {VIRTUAL_GPU_MEMORY_BASE:#x} ({:#x} bytes, {})",
                config.name,
                share.local_size,
                share.attr.as_str()
            );
            partition
                .bus
                .insert(
                    Gpa::new(VIRTUAL_GPU_REGISTERS_BASE),
                    VIRTUAL_GPU_REGISTERS_SIZE,
                    Box::new(crate::vgpu::RegisterBar { index }),
                )
                .map_err(|e| format!("gpu: virtual GPU registers: {e:?}"))?;
            Some(ecam)
        }
    };
    if let Some(ecam) = ecam {
        // Left unmapped in the NPT: every access exits and is emulated.
        partition
            .bus
            .insert(Gpa::new(VIRTUAL_PCI_ECAM_BASE), VIRTUAL_PCI_ECAM_SIZE, Box::new(ecam))
            .map_err(|e| format!("virtual PCI configuration space: {e:?}"))?;
    }
    let io_ports = config
        .io_ports
        .iter()
        .enumerate()
        .map(|(i, range)| range.ports().ok_or_else(|| format!("io_ports[{i}]: not a valid port range")))
        .collect::<Result<Vec<_>, String>>()?;

    let load = config.image.load;
    let bytes = crate::loaded::module(boot_info, &config.image.file, "image")?;
    let (cr3, tables) = build_identity_map(&partition, load)?;
    let image_end = load.checked_add(bytes.len() as u64).ok_or("image: load address + size wraps")?;
    if image_end > tables {
        return Err(format!("image ({} bytes at {load:#x}) overlaps the guest page tables at {tables:#x}", bytes.len()));
    }
    copy_in(&partition, load, bytes, "image")?;
    log::info!(
        "partition {}: image {} ({} bytes) at {load:#x}, guest page tables at {tables:#x}, {} root {:#x} ({} table frames)",
        config.name,
        config.image.file,
        bytes.len(),
        match table {
            CpuTable::Npt(_) => "NPT",
            CpuTable::Ept(_) => "EPT",
        },
        table.root_address(),
        table.table_frame_count()
    );
    let intx = route_intx(index, &mut partition, &functions, &interrupt_pins, gpu.is_some())?;
    // Last, once nothing else can refuse the partition: its functions'
    // DMA domain (context entries pointing at the partition's memory).
    if !functions.is_empty() {
        super::assign::attach(index, config, &partition.space, &functions)?;
    }
    let start = Start {
        rip: config.image.entry.unwrap_or(load),
        rsp: tables,
        cr3,
        on_fault: config.on_fault,
        io_ports,
        verdict,
        pci_functions: functions.len(),
        intx,
        gpu: gpu.is_some(),
    };
    Ok((partition, table, start))
}

/// Page-table entry bits of the guest's identity map: P, R/W, A (and D, PS
/// for 2 MiB leaves). U/S stays clear: the guest runs at CPL 0.
const PTE_TABLE: u64 = 0x1 | 0x2 | 0x20;
const PTE_LEAF_2M: u64 = PTE_TABLE | 0x40 | 0x80;
/// The guest page table identity-maps at least this much, RAM or not.
const IDENTITY_LOW: u64 = 1 << 32;

/// Writes a long-mode page table that identity-maps, with 2 MiB pages, the
/// whole first 4 GiB of guest-physical space and every RAM region of the
/// partition, into the top pages of the RAM region holding `home`.
///
/// Mapping all of the low 4 GiB (not just RAM) means a guest access to any
/// guest-physical address there passes its own page table and reaches the
/// nested page table: an address the partition has no memory at becomes a
/// nested page fault the hypervisor sees (and, later, MMIO to emulate),
/// not a guest #PF that escalates to a triple fault. Returns the PML4's guest-physical address
/// (the guest's CR3) and the lowest address the tables use.
fn build_identity_map(partition: &Partition, home: u64) -> Result<(u64, u64), String> {
    let ram: Vec<&Region> = partition.space.regions().iter().filter(|r| r.kind == RegionKind::Ram).collect();
    for region in &ram {
        if !region.gpa.is_aligned(PAGE_2M) || !region.size.is_multiple_of(PAGE_2M) {
            return Err(format!("memory at {:?}: x86_64 guest RAM must be 2 MiB aligned (its page table uses 2 MiB pages)", region.gpa));
        }
        if region.gpa.raw().saturating_add(region.size) > 1 << 47 {
            return Err(format!("memory at {:?}: beyond the 47-bit identity map", region.gpa));
        }
    }
    let home_region = ram
        .iter()
        .find(|r| r.contains(Gpa::new(home)) && r.perms.write)
        .ok_or_else(|| format!("image.load {home:#x} is not in writable RAM"))?;
    // Which PDPTs (per 512 GiB) and PDs (per 1 GiB) the map needs.
    let mut ranges: Vec<(u64, u64)> = alloc::vec![(0, IDENTITY_LOW)];
    ranges.extend(ram.iter().map(|r| (r.gpa.raw(), r.gpa.raw() + r.size)));
    let mut pdpts = BTreeMap::new();
    let mut pds = BTreeMap::new();
    for &(from, to) in &ranges {
        for page in (from..to).step_by(PAGE_2M as usize) {
            pdpts.insert(page >> 39, 0u64);
            pds.insert(page >> 30, 0u64);
        }
    }
    let frames = 1 + pdpts.len() as u64 + pds.len() as u64;
    let top = home_region.gpa.raw() + home_region.size;
    let base = top.checked_sub(frames * PAGE).filter(|&b| b > home).ok_or("no room for the guest page tables")?;
    let mut next = base + PAGE;
    for slot in pdpts.values_mut().chain(pds.values_mut()) {
        *slot = next;
        next += PAGE;
    }
    let mut tables: BTreeMap<u64, [u64; 512]> = BTreeMap::new();
    let mut entry = |table: u64, index: u64, value: u64| tables.entry(table).or_insert([0; 512])[index as usize] = value;
    for (&i, &pdpt) in &pdpts {
        entry(base, i, pdpt | PTE_TABLE);
    }
    for (&i, &pd) in &pds {
        entry(pdpts[&(i >> 9)], i & 511, pd | PTE_TABLE);
    }
    for &(from, to) in &ranges {
        for page in (from..to).step_by(PAGE_2M as usize) {
            entry(pds[&(page >> 30)], (page >> 21) & 511, page | PTE_LEAF_2M);
        }
    }
    for (gpa, table) in &tables {
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
        copy_in(partition, *gpa, &bytes, "guest page table")?;
    }
    Ok((base, base))
}
