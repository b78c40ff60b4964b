//! Handling an x86_64 vCPU's exits, whichever virtualization extension
//! caused them: the SVM and VMX back ends translate their exit codes into an
//! [`Exit`] and expose the guest's registers through [`GuestCpu`]; the
//! decisions live here once.
//!
//! Nothing here panics on guest input. Every exit either resumes the guest
//! or stops its partition with a report; a guest access it does not own (a
//! refused MSR, a port outside `io_ports`, memory outside its address space
//! that no emulated device claims) is handled by the partition's
//! `on_fault` policy: `stop`, or `inject`, which gives the guest a general
//! protection fault (#GP(0)) at the faulting instruction — x86 has no
//! synchronous external abort, and #GP is what an OS reports with the
//! faulting RIP.
//!
//! Instruction lengths of intercepted instructions come from the CPU where
//! the back end reports them (VMX), otherwise from decoding the bytes at
//! the guest's RIP (its own page tables walked, then its address space),
//! since QEMU TCG's SVM has no next-RIP (DESIGN.md §6). MMIO emulation
//! always decodes.

use super::svm::GuestConsole;
use super::memory::IdentityMemory;
use bulkhead_core::page_track::TrackedWrite;
use super::partition::Intx;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use bulkhead_arch_x86_64::decode::{self, Bitness, DecodeError, Gpr, Intercepted, MAX_INSTRUCTION_LENGTH, StoreSource};
use bulkhead_arch_x86_64::guest_msr::{self, EferWrite, MsrRule};
use bulkhead_arch_x86_64::guest_paging::{self, GuestPhysicalMemory, PagingMode};
use bulkhead_abi::hypercall::{CHECK_ATTRIBUTE, HvError};
use bulkhead_arch_x86_64::npt::{leaf_pat_index, pat_entry, pat_type_name};
pub use bulkhead_arch_x86_64::exit::Exit;
use bulkhead_config::{FaultPolicy, MemoryAttribute, VIRTUAL_GPU_IOAPIC_PIN};
use bulkhead_core::address::Gpa;
use bulkhead_core::hypercall::{self, Conduit, Outcome, SingleVcpu};
use bulkhead_core::mmio::AccessSize;
use bulkhead_core::partition::{Access, HostMemory, Partition, StopReason, Verdict};
use spin::Mutex;

/// #GP, the exception the `inject` policy delivers.
const VECTOR_GP: u8 = 13;
/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// Injected faults logged per vCPU before going quiet, so a guest that
/// faults in a loop cannot flood the console.
const INJECT_LOG_LIMIT: u32 = 16;
/// Physical-interrupt exits in a row after which the partition is stopped
/// (the host runs with interrupts masked and has no handlers for them).
const INTERRUPT_EXIT_LIMIT: u32 = 1_000_000;
const PAGE: u64 = 4096;

/// The guest state an exit handler reads and changes, whatever the back end
/// keeps it in (VMCB, VMCS, or the register block saved around the entry).
pub trait GuestCpu {
    /// A general-purpose register.
    fn gpr(&self, gpr: Gpr) -> u64;
    /// Sets a general-purpose register.
    fn set_gpr(&mut self, gpr: Gpr, value: u64);
    /// RIP.
    fn rip(&self) -> u64;
    /// Sets RIP.
    fn set_rip(&mut self, rip: u64);
    /// RFLAGS.
    fn rflags(&self) -> u64;
    /// CR3.
    fn cr3(&self) -> u64;
    /// The paging mode (CR0.PG, EFER.LMA, CR4.LA57).
    fn paging_mode(&self) -> PagingMode;
    /// How instructions decode in the current code segment.
    fn bitness(&self) -> Bitness;
    /// The guest's EFER as the CPU holds it.
    fn efer(&self) -> u64;
    /// Sets the guest's EFER to `efer` plus whatever the back end needs.
    fn set_efer(&mut self, efer: u64);
    /// Delivers exception `vector` (with `error_code`) at the next entry.
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>);
    /// Whether [`Self::request_interrupt`] may hand the vCPU an external
    /// interrupt now: SVM: no virtual interrupt is queued already (V_IRQ
    /// clear; the CPU itself waits for the guest's RFLAGS.IF); VMX: the
    /// guest is interruptible at this entry and no event is being injected.
    fn can_take_interrupt(&self) -> bool;
    /// Hands external interrupt `vector` to the vCPU (only after
    /// [`Self::can_take_interrupt`] said yes): SVM queues it as the virtual
    /// interrupt (V_IRQ), which the CPU delivers through the guest's IDT once
    /// RFLAGS.IF is 1; VMX injects it at the next VM entry.
    fn request_interrupt(&mut self, vector: u8);
    /// Whether an interrupt handed over earlier is still queued, not taken.
    fn interrupt_queued(&self) -> bool;
    /// The guest's PAT (the one its own page-table entries index).
    fn guest_pat(&self) -> u64;
    /// The memory type (a `pat_type` value) the live second-level table
    /// gives `gpa`, read back from the table the CPU walks; `None` if
    /// unmapped.
    fn second_level_memory_type(&self, gpa: u64) -> Option<u8>;
    /// The memory type this back end's encoder means for `attr`.
    fn configured_memory_type(&self, attr: MemoryAttribute) -> u8;
    /// The length of the intercepted instruction, if the CPU reported it
    /// for this exit (VMX's VM-exit instruction-length field). `None` means
    /// decode it: SVM under QEMU TCG has no next-RIP (DESIGN.md §6).
    fn instruction_length(&self) -> Option<u64> {
        None
    }
}

/// Per-vCPU state the handler keeps between exits.
pub struct ExitState {
    /// The partition's fault policy.
    pub on_fault: FaultPolicy,
    /// The last code written to the partition's verdict register.
    pub verdict: Arc<Mutex<Option<u32>>>,
    /// Exits so far.
    pub exits: u64,
    /// Whether the partition owns PCI functions: then every exit polls the
    /// VT-d fault records first ([`super::assign::poll`]).
    pub polls_dma_faults: bool,
    /// The partition's routed INTx lines, when its back end delivers them
    /// (SVM); `None`: physical interrupts are not expected.
    pub intx: Option<Intx>,
    /// The partition's index if it has a virtual GPU: every exit then
    /// looks at the GPU ([`crate::vgpu::service`]) and its line drives pin
    /// [`VIRTUAL_GPU_IOAPIC_PIN`] of the virtual I/O APIC.
    pub gpu: Option<usize>,
    /// HLTs that waited for an interrupt and resumed.
    pub halts_woken: u64,
    injected: u32,
    interrupt_exits: u32,
    code_walk: CodeWalkCache,
}

impl ExitState {
    /// A vCPU's state before its first entry.
    pub fn new(on_fault: FaultPolicy, verdict: Arc<Mutex<Option<u32>>>) -> ExitState {
        ExitState {
            on_fault,
            verdict,
            exits: 0,
            polls_dma_faults: false,
            intx: None,
            gpu: None,
            halts_woken: 0,
            injected: 0,
            interrupt_exits: 0,
            code_walk: CodeWalkCache::default(),
        }
    }
}

/// What the vCPU does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Enter the guest again.
    Resume,
    /// The partition has stopped.
    Stop,
}

/// Handles one exit of `partition`'s vCPU.
pub fn handle(partition: &mut Partition, cpu: &mut dyn GuestCpu, state: &mut ExitState, exit: Exit) -> Next {
    state.exits += 1;
    // The host takes no interrupts, so a partition's device faults are
    // polled at its exits, before the exit is handled: a guest that started
    // a DMA and then prints (hypercall) or reads its configuration space
    // (nested page fault) finds the fault reported and its policy applied.
    // Partitions without PCI functions never pay for it.
    if state.polls_dma_faults
        && let Some(reason) = super::assign::poll(partition.index)
    {
        log::error!("partition {}: {reason}", partition.name);
        partition.stop(StopReason::Fault(reason), &mut GuestConsole);
        return Next::Stop;
    }
    if exit != Exit::Interrupt {
        state.interrupt_exits = 0;
    }
    let result = match exit {
        Exit::Hypercall => hypercall_exit(partition, cpu, state),
        Exit::Cpuid => cpuid_exit(partition, cpu, state),
        Exit::Rdmsr => rdmsr_exit(partition, cpu, state),
        Exit::Wrmsr => wrmsr_exit(partition, cpu, state),
        Exit::Hlt => hlt_exit(partition, cpu, state),
        Exit::Io { port, size, input } => {
            let direction = if input { "IN" } else { "OUT" };
            let message = format!(
                "{direction} of {size} byte(s) at port {port:#x} at RIP {:#x}: the port is not in the partition's io_ports",
                cpu.rip()
            );
            Err(violation(partition, cpu, state, message))
        }
        Exit::NestedFault { gpa, write, fetch, present, during_event_delivery } => {
            nested_fault(partition, cpu, state, gpa, write, fetch, present, during_event_delivery)
        }
        Exit::TripleFault => Err(Some(format!("triple fault (shutdown) at RIP {:#x}", cpu.rip()))),
        Exit::Interrupt if state.intx.is_some() || super::intx::gpu_vector().is_some() => {
            // A routed line, the GPU's MSI or a virtual GPU kick (the only
            // interrupts aimed at a CPU; each vector's handler ends it):
            // let the CPU deliver it to the hypervisor's handler now;
            // `before_entry` turns it into the guest's interrupt. The GPU
            // is looked at here whichever partition runs on the CPU its
            // MSI reaches, so that other partitions' work moves on.
            super::intx::take_interrupts();
            if state.gpu.is_none() {
                crate::vgpu::service();
            }
            Ok(())
        }
        Exit::Interrupt => {
            state.interrupt_exits += 1;
            if state.interrupt_exits >= INTERRUPT_EXIT_LIMIT {
                Err(Some(String::from("physical interrupt exits in a row: the host cannot take physical interrupts yet")))
            } else {
                Ok(())
            }
        }
        Exit::Unexpected(what) => Err(Some(format!("{what} at RIP {:#x}", cpu.rip()))),
    };
    match result {
        Ok(()) if !partition.is_stopped() => Next::Resume,
        Ok(()) => Next::Stop,
        // The fault was handled by injecting it.
        Err(None) => Next::Resume,
        Err(Some(reason)) => {
            log::error!("partition {}: {reason}", partition.name);
            partition.stop(StopReason::Fault(reason), &mut GuestConsole);
            Next::Stop
        }
    }
}

/// An access the guest does not own: stop (returns the reason) or inject
/// #GP(0) (returns `None`).
fn violation(partition: &Partition, cpu: &mut dyn GuestCpu, state: &mut ExitState, message: String) -> Option<String> {
    match state.on_fault {
        FaultPolicy::Stop => Some(message),
        FaultPolicy::Inject => {
            state.injected = state.injected.saturating_add(1);
            if state.injected <= INJECT_LOG_LIMIT {
                log::warn!("partition {}: {message}; injecting #GP(0) (fault policy: inject)", partition.name);
                if state.injected == INJECT_LOG_LIMIT {
                    log::warn!("partition {}: further injected faults are not logged", partition.name);
                }
            }
            cpu.inject_exception(VECTOR_GP, Some(0));
            None
        }
    }
}

/// The last code-page translation, so that an exit at the same place (a
/// hypercall loop, a polled device register) does not walk the guest's
/// tables again. It is only used while every entry of the walk still holds
/// the value it had: the walk is a function of those entries alone, so the
/// cache can never give a translation the guest's tables no longer give.
#[derive(Clone, Copy, Default)]
pub struct CodeWalkCache {
    valid: bool,
    cr3: u64,
    mode_bits: (bool, bool, bool),
    va_page: u64,
    gpa_page: u64,
    /// Host-physical address and value of each entry the walk read.
    entries: [(u64, u64); 5],
    count: usize,
}

impl CodeWalkCache {
    fn lookup(&self, cr3: u64, mode: PagingMode, va_page: u64) -> Option<u64> {
        let hit = self.valid
            && self.cr3 == cr3
            && self.mode_bits == (mode.paging, mode.long_mode, mode.five_level)
            && self.va_page == va_page
            && self.entries[..self.count]
                .iter()
                .all(|&(hpa, value)| IdentityMemory.read_u64(bulkhead_core::address::Hpa::new(hpa)) == Some(value));
        hit.then_some(self.gpa_page)
    }
}

/// Guest RAM that records the host address and value of every table entry
/// a walk reads, for [`CodeWalkCache`].
struct RecordingRam<'a> {
    ram: PartitionRam<'a>,
    entries: core::cell::RefCell<([(u64, u64); 5], usize)>,
}

impl GuestPhysicalMemory for RecordingRam<'_> {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        let hpa = self.ram.0.translate(Gpa::new(gpa), 8, Access::Read)?;
        let value = IdentityMemory.read_u64(hpa)?;
        let mut entries = self.entries.borrow_mut();
        let (list, count) = &mut *entries;
        if let Some(slot) = list.get_mut(*count) {
            *slot = (hpa.raw(), value);
            *count += 1;
        }
        Some(value)
    }
}

/// Translates the code address `va` through the guest's tables, using and
/// refilling `cache` for its page.
fn translate_code(
    partition: &Partition,
    cache: &mut CodeWalkCache,
    cr3: u64,
    mode: PagingMode,
    va: u64,
) -> Result<u64, guest_paging::WalkError> {
    let va_page = va & !(PAGE - 1);
    if let Some(gpa_page) = cache.lookup(cr3, mode, va_page) {
        return Ok(gpa_page | (va & (PAGE - 1)));
    }
    let recording = RecordingRam { ram: PartitionRam(partition), entries: core::cell::RefCell::new(([(0, 0); 5], 0)) };
    let gpa = guest_paging::translate(&recording, cr3, mode, va)?;
    let (entries, count) = recording.entries.into_inner();
    *cache = CodeWalkCache {
        valid: true,
        cr3,
        mode_bits: (mode.paging, mode.long_mode, mode.five_level),
        va_page,
        gpa_page: gpa & !(PAGE - 1),
        entries,
        count,
    };
    Ok(gpa)
}

/// Reads guest-physical memory through the partition's address space.
struct PartitionRam<'a>(&'a Partition);

impl PartitionRam<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        match self.0.translate(Gpa::new(gpa), buf.len() as u64, Access::Read) {
            Some(hpa) => {
                IdentityMemory.read(hpa, buf);
                true
            }
            None => false,
        }
    }
}

impl GuestPhysicalMemory for PartitionRam<'_> {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        let hpa = self.0.translate(Gpa::new(gpa), 8, Access::Read)?;
        IdentityMemory.read_u64(hpa)
    }
}

/// The first `want` (at most 15) instruction bytes at the guest's RIP;
/// fewer where the next page does not translate (the decoder then reports
/// a cut-short instruction).
fn fetch(
    partition: &Partition,
    cpu: &dyn GuestCpu,
    cache: &mut CodeWalkCache,
    want: usize,
) -> Result<([u8; MAX_INSTRUCTION_LENGTH], usize), String> {
    let ram = PartitionRam(partition);
    let (cr3, mode, rip) = (cpu.cr3(), cpu.paging_mode(), cpu.rip());
    let mut bytes = [0u8; MAX_INSTRUCTION_LENGTH];
    let want = want.min(bytes.len());
    let mut done = 0;
    while done < want {
        let va = rip.wrapping_add(done as u64);
        let gpa = match translate_code(partition, cache, cr3, mode, va) {
            Ok(gpa) => gpa,
            Err(e) if done == 0 => return Err(format!("the instruction at RIP {rip:#x} cannot be read: {e:?}")),
            Err(_) => break,
        };
        let chunk = (PAGE - (va & (PAGE - 1))).min((want - done) as u64) as usize;
        if !ram.read(gpa, &mut bytes[done..done + chunk]) {
            if done == 0 {
                return Err(format!("the instruction at RIP {rip:#x} (GPA {gpa:#x}) is not in the partition's RAM"));
            }
            break;
        }
        done += chunk;
    }
    Ok((bytes, done))
}

/// Bytes fetched first for an intercepted instruction: enough for its
/// encoding without prefixes, the common case.
const PLAIN_FETCH: usize = 3;

/// The length of the intercepted instruction at RIP: the CPU's word where
/// the back end has one (cheaper than fetching and decoding, and right even
/// if the guest changed the bytes since), decoded otherwise.
fn intercepted_length(
    partition: &Partition,
    cpu: &dyn GuestCpu,
    cache: &mut CodeWalkCache,
    expected: Intercepted,
) -> Result<u64, String> {
    if let Some(length) = cpu.instruction_length() {
        return Ok(length);
    }
    let (bytes, len) = fetch(partition, cpu, cache, PLAIN_FETCH)?;
    if let Some(plain) = decode::plain_length(&bytes[..len], expected) {
        return Ok(u64::from(plain));
    }
    let (bytes, len) = fetch(partition, cpu, cache, MAX_INSTRUCTION_LENGTH)?;
    decode::intercepted_length(&bytes[..len], cpu.bitness(), expected)
        .map(u64::from)
        .map_err(|e| format!("{expected:?} exit, but the instruction at RIP {:#x} decodes as {e:?}", cpu.rip()))
}

/// Moves RIP past the intercepted instruction.
fn skip(
    partition: &Partition,
    cpu: &mut dyn GuestCpu,
    state: &mut ExitState,
    expected: Intercepted,
) -> Result<(), Option<String>> {
    let length = intercepted_length(partition, cpu, &mut state.code_walk, expected).map_err(Some)?;
    cpu.set_rip(cpu.rip().wrapping_add(length));
    Ok(())
}

fn hypercall_exit(partition: &mut Partition, cpu: &mut dyn GuestCpu, state: &mut ExitState) -> Result<(), Option<String>> {
    skip(partition, cpu, state, Intercepted::Hypercall)?;
    let x = [
        Gpr::RAX,
        Gpr::RDI,
        Gpr::RSI,
        Gpr::RDX,
        Gpr(8),
        Gpr(9),
        Gpr(10),
        Gpr(11),
    ]
    .map(|gpr| cpu.gpr(gpr));
    if x[0] as u32 == CHECK_ATTRIBUTE {
        let result = check_attribute(partition, cpu, x[1]);
        cpu.set_gpr(Gpr::RAX, result);
        return Ok(());
    }
    match hypercall::dispatch(partition, &IdentityMemory, &mut GuestConsole, &mut SingleVcpu, Conduit::Hvc, &x) {
        Outcome::Return(value) => cpu.set_gpr(Gpr::RAX, value),
        Outcome::Stop | Outcome::VcpuOff => {}
        Outcome::Reset => return Err(Some(String::from("SYSTEM_RESET: partition reset is not implemented on x86_64 yet"))),
    }
    Ok(())
}

/// `CHECK_ATTRIBUTE`: translates the guest's VA through its own page table,
/// reads back the memory type the live second-level table gives that page,
/// and compares it with the type the configuration's attribute for the
/// region means (DESIGN.md §4). Returns the second-level type on a match.
fn check_attribute(partition: &Partition, cpu: &dyn GuestCpu, va: u64) -> u64 {
    let leaf = match guest_paging::translate_leaf(&PartitionRam(partition), cpu.cr3(), cpu.paging_mode(), va) {
        Ok(leaf) => leaf,
        Err(e) => {
            log::warn!("attribute check: partition '{}': VA {va:#x} does not translate ({e:?})", partition.name);
            return HvError::InvalidParameter.to_register();
        }
    };
    let Some(region) = partition.space.region_at(Gpa::new(leaf.gpa)) else {
        log::warn!("attribute check: partition '{}': VA {va:#x} is GPA {:#x}, in no region", partition.name, leaf.gpa);
        return HvError::InvalidParameter.to_register();
    };
    let guest_type = pat_entry(cpu.guest_pat(), leaf_pat_index(leaf.entry, leaf.size));
    let Some(actual) = cpu.second_level_memory_type(leaf.gpa) else {
        log::warn!("attribute check: partition '{}': GPA {:#x} is not in the second-level table", partition.name, leaf.gpa);
        return HvError::InvalidParameter.to_register();
    };
    let expected = cpu.configured_memory_type(region.attr);
    let verdict = if actual == expected { "match" } else { "MISMATCH" };
    log::info!(
        "attribute check: partition '{}' VA {va:#x} -> GPA {:#x} ({:?}): guest PAT type {}, second-level type {}, expected {}: {verdict}",
        partition.name,
        leaf.gpa,
        region.attr,
        pat_type_name(guest_type),
        pat_type_name(actual),
        pat_type_name(expected)
    );
    if actual == expected { u64::from(actual) } else { HvError::CheckFailed.to_register() }
}

fn cpuid_exit(partition: &Partition, cpu: &mut dyn GuestCpu, state: &mut ExitState) -> Result<(), Option<String>> {
    skip(partition, cpu, state, Intercepted::Cpuid)?;
    let (leaf, subleaf) = (cpu.gpr(Gpr::RAX) as u32, cpu.gpr(Gpr::RCX) as u32);
    let values = guest_cpuid(leaf, subleaf);
    for (gpr, value) in [Gpr::RAX, Gpr::RBX, Gpr::RCX, Gpr::RDX].into_iter().zip(values) {
        cpu.set_gpr(gpr, u64::from(value));
    }
    Ok(())
}

/// CPUID as the guest sees it: the host's values with virtualization
/// features hidden (SVM, VMX, MONITOR/MWAIT, which is not intercepted) and
/// the hypervisor-present bit set; the SVM leaf and the hypervisor range
/// read as zero.
fn guest_cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    match leaf {
        0x4000_0000..=0x4fff_ffff | 0x8000_000a => [0; 4],
        _ => {
            let mut r = bulkhead_arch_x86_64::cpu::svm::cpuid(leaf, subleaf);
            match leaf {
                // ECX: bit 3 MONITOR, bit 5 VMX hidden; bit 31 hypervisor present.
                1 => r[2] = (r[2] & !((1 << 3) | (1 << 5))) | (1 << 31),
                // ECX bit 2: SVM.
                0x8000_0001 => r[2] &= !(1 << 2),
                _ => {}
            }
            r
        }
    }
}

fn rdmsr_exit(partition: &Partition, cpu: &mut dyn GuestCpu, state: &mut ExitState) -> Result<(), Option<String>> {
    let msr = cpu.gpr(Gpr::RCX) as u32;
    let value = match guest_msr::rule(msr) {
        MsrRule::Emulated => guest_msr::efer_read(cpu.efer()),
        // Pass-through MSRs never exit; one that does anyway is refused.
        MsrRule::GuestState | MsrRule::ReadOnly | MsrRule::Refused => {
            let message = format!("RDMSR of MSR {msr:#x} at RIP {:#x}: the partition does not own it", cpu.rip());
            return Err(violation(partition, cpu, state, message));
        }
    };
    skip(partition, cpu, state, Intercepted::Rdmsr)?;
    cpu.set_gpr(Gpr::RAX, value & 0xffff_ffff);
    cpu.set_gpr(Gpr::RDX, value >> 32);
    Ok(())
}

fn wrmsr_exit(partition: &Partition, cpu: &mut dyn GuestCpu, state: &mut ExitState) -> Result<(), Option<String>> {
    let msr = cpu.gpr(Gpr::RCX) as u32;
    let value = (cpu.gpr(Gpr::RDX) << 32) | (cpu.gpr(Gpr::RAX) & 0xffff_ffff);
    let refused = |cpu: &dyn GuestCpu, why: &str| {
        format!("WRMSR of MSR {msr:#x} (value {value:#x}) at RIP {:#x}: {why}", cpu.rip())
    };
    match guest_msr::rule(msr) {
        MsrRule::Emulated => match guest_msr::efer_write(guest_msr::efer_read(cpu.efer()), value) {
            EferWrite::Accept(efer) => {
                skip(partition, cpu, state, Intercepted::Wrmsr)?;
                cpu.set_efer(efer);
                Ok(())
            }
            EferWrite::Refuse => {
                let message = refused(cpu, "EFER bits the partition may not change");
                Err(violation(partition, cpu, state, message))
            }
        },
        MsrRule::GuestState | MsrRule::ReadOnly | MsrRule::Refused => {
            let message = refused(cpu, "the partition does not own it");
            Err(violation(partition, cpu, state, message))
        }
    }
}

/// HLT: with interrupts enabled and an interrupt source (an unmasked pin
/// of its virtual I/O APIC: a routed INTx line or its virtual GPU's), the vCPU waits on the host (STI; HLT; CLI)
/// until an interrupt for it can be queued, then resumes after the HLT and
/// takes it. Without any (interrupts masked, no routed line, every pin
/// masked) nothing could ever wake it: the partition stops with a report.
/// The wait has no time bound: a guest that waits for an interrupt its
/// device never raises waits as a halted CPU would.
fn hlt_exit(partition: &Partition, cpu: &mut dyn GuestCpu, state: &mut ExitState) -> Result<(), Option<String>> {
    let rip = cpu.rip();
    skip(partition, cpu, state, Intercepted::Hlt)?;
    if cpu.rflags() & RFLAGS_IF == 0 {
        return Err(Some(format!("HLT with interrupts masked at RIP {rip:#x}: the vCPU can never resume")));
    }
    let Some(intx) = state.intx.clone() else {
        return Err(Some(format!("HLT at RIP {rip:#x}: the partition has no interrupt source, the vCPU can never resume")));
    };
    loop {
        if before_entry(cpu, state) {
            state.halts_woken += 1;
            return Ok(());
        }
        if !intx.apic.lock().can_interrupt() {
            return Err(Some(format!(
                "HLT at RIP {rip:#x} with every interrupt source masked: the vCPU can never resume"
            )));
        }
        super::intx::wait_for_interrupt();
    }
}

/// Before each entry: the virtual GPU (if any) is looked at and its line's
/// level set on its pin, host lines that fired become asserted pins of the
/// partition's virtual I/O APIC, lines whose interrupt the guest ended
/// (EOI) are unmasked again, and the next deliverable interrupt is handed
/// to the vCPU if it can take one. Returns whether an interrupt is queued
/// for the vCPU now.
pub fn before_entry(cpu: &mut dyn GuestCpu, state: &mut ExitState) -> bool {
    if state.gpu.is_some() {
        // Completes finished work, starts the next, moves interrupt lines.
        crate::vgpu::service();
    }
    let Some(intx) = &state.intx else {
        return false;
    };
    let fired = super::intx::take_pending(intx.bits());
    let mut apic = intx.apic.lock();
    if let Some(index) = state.gpu
        && let Some(level) = crate::vgpu::take_line_change(index)
    {
        apic.set_level(usize::from(VIRTUAL_GPU_IOAPIC_PIN), level);
    }
    for route in &intx.routes {
        if fired & route.bit() != 0 {
            apic.assert(route.pin());
        }
    }
    let unmask = apic.take_unmask();
    for route in &intx.routes {
        if unmask & (1 << route.pin()) != 0 {
            super::intx::unmask(route.gsi);
        }
    }
    if cpu.can_take_interrupt()
        && let Some(vector) = apic.next_delivery()
    {
        cpu.request_interrupt(vector);
    }
    cpu.interrupt_queued()
}

#[allow(clippy::too_many_arguments)]
fn nested_fault(
    partition: &mut Partition,
    cpu: &mut dyn GuestCpu,
    state: &mut ExitState,
    gpa: u64,
    write: bool,
    fetch: bool,
    present: bool,
    during_event_delivery: bool,
) -> Result<(), Option<String>> {
    if write && present && !fetch && !during_event_delivery && crate::page_track::is_tracked(partition.index, Gpa::new(gpa)) {
        return tracked_store(partition, cpu, state, gpa);
    }
    if !fetch && !present && !during_event_delivery {
        match emulate_mmio(partition, cpu, state, gpa, write) {
            Mmio::Done => return Ok(()),
            Mmio::Unclaimed => {}
            Mmio::Refused(why) => {
                let message = format!("MMIO access at GPA {gpa:#x} (RIP {:#x}) not emulated: {why}", cpu.rip());
                return Err(violation(partition, cpu, state, message));
            }
        }
    }
    let access = if fetch {
        "instruction fetch"
    } else if write {
        "write"
    } else {
        "read"
    };
    let message = format!(
        "nested page fault: partition '{}' {access} at GPA {gpa:#x} (RIP {:#x}, {})",
        partition.name,
        cpu.rip(),
        if present { "not permitted" } else { "not mapped" }
    );
    if during_event_delivery {
        return Err(Some(format!("{message} while delivering an event (is the guest's IDT outside its memory?)")));
    }
    Err(violation(partition, cpu, state, message))
}

/// Performs a store to a page tracked for the GPU mediator
/// ([`crate::page_track`]): the instruction at RIP must be a plain MOV
/// store of 1, 2, 4 or 8 bytes inside the page; the store is done in guest
/// memory, the mediator told, RIP advanced. Anything else is a violation
/// whose message names the tracked page.
///
/// The NPF reports the faulting byte's GPA, not the instruction's operand:
/// a misaligned store that starts in the page before and crosses into a
/// tracked one would be performed at the tracked page's first byte. It
/// only ever writes the guest's own bytes into its own page.
fn tracked_store(partition: &mut Partition, cpu: &mut dyn GuestCpu, state: &mut ExitState, gpa: u64) -> Result<(), Option<String>> {
    let rip = cpu.rip();
    let page = gpa & !(PAGE - 1);
    let attempt = (|| -> Result<(u8, TrackedWrite), String> {
        let (bytes, len) = fetch(partition, cpu, &mut state.code_walk, MAX_INSTRUCTION_LENGTH)?;
        let instruction = match decode::decode_mmio(&bytes[..len], cpu.bitness()) {
            Ok(instruction) => instruction,
            Err(DecodeError::Invalid) => return Err(String::from("the instruction does not decode")),
            Err(DecodeError::Unsupported(mnemonic)) => return Err(format!("{mnemonic:?} is not a plain store")),
        };
        let decode::MmioOperation::Store { source, size } = instruction.operation else {
            return Err(String::from("the fault was a write but the instruction loads"));
        };
        let value = match source {
            StoreSource::Register(slot) => slot.read(cpu.gpr(slot.gpr)),
            StoreSource::Immediate(value) => value,
        };
        let mask = if size >= 8 { u64::MAX } else { (1u64 << (u32::from(size) * 8)) - 1 };
        let write = TrackedWrite { gpa: Gpa::new(gpa), width: size, value: value & mask };
        if !write.within_page(Gpa::new(page)) {
            return Err(format!("the {size}-byte store crosses the end of the page"));
        }
        Ok((instruction.length, write))
    })();
    let result = attempt.and_then(|(length, write)| {
        match crate::page_track::perform(partition.index, &[write]) {
            Ok(()) => Ok(Some(length)),
            // Untracked since the fault: if writable again, the guest retries.
            Err(crate::page_track::PerformError::NotTracked(_)) if crate::page_track::writable_now(partition.index, Gpa::new(gpa)) => {
                Ok(None)
            }
            Err(e) => Err(format!("{e:?}")),
        }
    });
    match result {
        Ok(Some(length)) => {
            cpu.set_rip(rip.wrapping_add(u64::from(length)));
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(why) => {
            let message = format!(
                "nested page fault: partition '{}' write at GPA {gpa:#x} (RIP {rip:#x}) in page {page:#x}, tracked for the GPU mediator: not emulated: {why}",
                partition.name
            );
            Err(violation(partition, cpu, state, message))
        }
    }
}

enum Mmio {
    /// Emulated; RIP advanced.
    Done,
    /// No emulated device at the address.
    Unclaimed,
    /// A device is there but the instruction cannot be emulated.
    Refused(String),
}

/// Emulates a load or store to an emulated device of the partition.
fn emulate_mmio(partition: &mut Partition, cpu: &mut dyn GuestCpu, state: &mut ExitState, gpa: u64, write: bool) -> Mmio {
    if !partition.bus.claims(Gpa::new(gpa), AccessSize::Byte) {
        return Mmio::Unclaimed;
    }
    let (bytes, len) = match fetch(partition, cpu, &mut state.code_walk, MAX_INSTRUCTION_LENGTH) {
        Ok(fetched) => fetched,
        Err(why) => return Mmio::Refused(why),
    };
    let instruction = match decode::decode_mmio(&bytes[..len], cpu.bitness()) {
        Ok(instruction) => instruction,
        Err(DecodeError::Invalid) => return Mmio::Refused(String::from("the instruction does not decode")),
        Err(DecodeError::Unsupported(mnemonic)) => {
            return Mmio::Refused(format!("{mnemonic:?} is not a plain load or store"));
        }
    };
    let operation = instruction.operation;
    let Some(size) = AccessSize::from_bytes(u64::from(operation.size())) else {
        return Mmio::Refused(format!("{}-byte access", operation.size()));
    };
    let vcpu = 0;
    match operation {
        decode::MmioOperation::Store { source, .. } => {
            if !write {
                return Mmio::Refused(String::from("the fault was a read but the instruction stores"));
            }
            let value = match source {
                StoreSource::Register(slot) => slot.read(cpu.gpr(slot.gpr)),
                StoreSource::Immediate(value) => value,
            };
            if !partition.bus.write_in(&partition.space, vcpu, Gpa::new(gpa), size, value) {
                return Mmio::Refused(String::from("the access crosses the device's window"));
            }
            if let Some(code) = state.verdict.lock().take() {
                partition.verdict = if code == 0 { Verdict::Passed } else { Verdict::Failed { code: u64::from(code), detail: 0 } };
                log::info!("partition {}: verdict register: {code}", partition.name);
            }
        }
        decode::MmioOperation::Load { destination, .. } => {
            if write {
                return Mmio::Refused(String::from("the fault was a write but the instruction loads"));
            }
            let Some(raw) = partition.bus.read(vcpu, Gpa::new(gpa), size) else {
                return Mmio::Refused(String::from("the access crosses the device's window"));
            };
            let old = cpu.gpr(destination.gpr);
            if let Some(value) = operation.loaded_register(old, raw) {
                cpu.set_gpr(destination.gpr, value);
            }
        }
    }
    cpu.set_rip(cpu.rip().wrapping_add(u64::from(instruction.length)));
    Mmio::Done
}
