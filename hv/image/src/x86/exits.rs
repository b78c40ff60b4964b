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
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use bulkhead_arch_x86_64::decode::{self, Bitness, DecodeError, Gpr, Intercepted, MAX_INSTRUCTION_LENGTH, StoreSource};
use bulkhead_arch_x86_64::guest_msr::{self, EferWrite, MsrRule};
use bulkhead_arch_x86_64::guest_paging::{self, GuestPhysicalMemory, PagingMode};
pub use bulkhead_arch_x86_64::exit::Exit;
use bulkhead_config::FaultPolicy;
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
    injected: u32,
    interrupt_exits: u32,
}

impl ExitState {
    /// A vCPU's state before its first entry.
    pub fn new(on_fault: FaultPolicy, verdict: Arc<Mutex<Option<u32>>>) -> ExitState {
        ExitState { on_fault, verdict, exits: 0, injected: 0, interrupt_exits: 0 }
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
    if exit != Exit::Interrupt {
        state.interrupt_exits = 0;
    }
    let result = match exit {
        Exit::Hypercall => hypercall_exit(partition, cpu),
        Exit::Cpuid => cpuid_exit(partition, cpu),
        Exit::Rdmsr => rdmsr_exit(partition, cpu, state),
        Exit::Wrmsr => wrmsr_exit(partition, cpu, state),
        Exit::Hlt => hlt_exit(partition, cpu),
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
fn fetch(partition: &Partition, cpu: &dyn GuestCpu, want: usize) -> Result<([u8; MAX_INSTRUCTION_LENGTH], usize), String> {
    let ram = PartitionRam(partition);
    let (cr3, mode, rip) = (cpu.cr3(), cpu.paging_mode(), cpu.rip());
    let mut bytes = [0u8; MAX_INSTRUCTION_LENGTH];
    let want = want.min(bytes.len());
    let mut done = 0;
    while done < want {
        let va = rip.wrapping_add(done as u64);
        let gpa = match guest_paging::translate(&ram, cr3, mode, va) {
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
fn intercepted_length(partition: &Partition, cpu: &dyn GuestCpu, expected: Intercepted) -> Result<u64, String> {
    if let Some(length) = cpu.instruction_length() {
        return Ok(length);
    }
    let (bytes, len) = fetch(partition, cpu, PLAIN_FETCH)?;
    if let Some(plain) = decode::plain_length(&bytes[..len], expected) {
        return Ok(u64::from(plain));
    }
    let (bytes, len) = fetch(partition, cpu, MAX_INSTRUCTION_LENGTH)?;
    decode::intercepted_length(&bytes[..len], cpu.bitness(), expected)
        .map(u64::from)
        .map_err(|e| format!("{expected:?} exit, but the instruction at RIP {:#x} decodes as {e:?}", cpu.rip()))
}

/// Moves RIP past the intercepted instruction.
fn skip(partition: &Partition, cpu: &mut dyn GuestCpu, expected: Intercepted) -> Result<(), Option<String>> {
    let length = intercepted_length(partition, cpu, expected).map_err(Some)?;
    cpu.set_rip(cpu.rip().wrapping_add(length));
    Ok(())
}

fn hypercall_exit(partition: &mut Partition, cpu: &mut dyn GuestCpu) -> Result<(), Option<String>> {
    skip(partition, cpu, Intercepted::Hypercall)?;
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
    match hypercall::dispatch(partition, &IdentityMemory, &mut GuestConsole, &mut SingleVcpu, Conduit::Hvc, &x) {
        Outcome::Return(value) => cpu.set_gpr(Gpr::RAX, value),
        Outcome::Stop | Outcome::VcpuOff => {}
        Outcome::Reset => return Err(Some(String::from("SYSTEM_RESET: partition reset is not implemented on x86_64 yet"))),
    }
    Ok(())
}

fn cpuid_exit(partition: &Partition, cpu: &mut dyn GuestCpu) -> Result<(), Option<String>> {
    skip(partition, cpu, Intercepted::Cpuid)?;
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
    skip(partition, cpu, Intercepted::Rdmsr)?;
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
                skip(partition, cpu, Intercepted::Wrmsr)?;
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

fn hlt_exit(partition: &Partition, cpu: &mut dyn GuestCpu) -> Result<(), Option<String>> {
    let rip = cpu.rip();
    skip(partition, cpu, Intercepted::Hlt)?;
    // No virtual interrupts yet: nothing can ever wake a halted vCPU.
    Err(Some(if cpu.rflags() & RFLAGS_IF == 0 {
        format!("HLT with interrupts masked at RIP {rip:#x}: the vCPU can never resume")
    } else {
        format!("HLT at RIP {rip:#x}: no virtual interrupts on x86_64 yet, the vCPU can never resume")
    }))
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

enum Mmio {
    /// Emulated; RIP advanced.
    Done,
    /// No emulated device at the address.
    Unclaimed,
    /// A device is there but the instruction cannot be emulated.
    Refused(String),
}

/// Emulates a load or store to an emulated device of the partition.
fn emulate_mmio(partition: &mut Partition, cpu: &mut dyn GuestCpu, state: &ExitState, gpa: u64, write: bool) -> Mmio {
    if !partition.bus.claims(Gpa::new(gpa), AccessSize::Byte) {
        return Mmio::Unclaimed;
    }
    let (bytes, len) = match fetch(partition, cpu, MAX_INSTRUCTION_LENGTH) {
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
            if !partition.bus.write(vcpu, Gpa::new(gpa), size, value) {
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
