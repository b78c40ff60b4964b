//! Running a partition's vCPU under AMD SVM: the per-CPU SVM pages, the
//! VMCB, the VMRUN loop and the #VMEXIT dispatch.
//!
//! QEMU TCG (DESIGN.md §6) has no next-RIP save and no decode assists, so
//! RIP is advanced by the known length of each intercepted instruction:
//! VMMCALL 3 bytes (0f 01 d9), CPUID 2 (0f a2), HLT 1 (f4). Nothing relies
//! on VMCB clean bits (the field stays 0: everything is reloaded) or on
//! flush-by-ASID (the first VMRUN flushes the whole TLB, later ones none:
//! the NPT never changes while the partition runs). EXITINTINFO is not
//! acted on yet: every exit that could interrupt an event delivery stops
//! the partition.
//!
//! Hypercall registers mirror SMCCC (see `tests/guests/src/hv.rs`): x0 =
//! RAX (function ID, result), x1..x3 = RDI, RSI, RDX, x4..x7 = R8..R11.

use super::console::line;
use super::memory::alloc_frames;
use super::partition::{NestedTable, Start};
use super::memory::IdentityMemory;
use alloc::format;
use alloc::string::String;
use bulkhead_arch_x86_64::cpu::svm::{self as cpu, GuestRegisters};
use bulkhead_arch_x86_64::npt;
use bulkhead_arch_x86_64::svm::bitmaps::{IoPermissionMap, MsrPermissionMap};
use bulkhead_arch_x86_64::svm::exit::{IoDirection, IoioInfo, NestedPageFault, SvmExit};
use bulkhead_arch_x86_64::svm::guest::{SvmGuest, fill_64bit_guest};
use bulkhead_arch_x86_64::svm::vmcb::Vmcb;
use bulkhead_core::hypercall::{self, Conduit, Outcome, SingleVcpu};
use bulkhead_core::partition::{ConsoleSink, Partition, StopReason};

/// The power-on PAT value, given to the guest as its gPAT.
const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;
/// The only ASID in use: one partition per CPU, and each CPU has its own TLB.
const ASID: u32 = 1;
/// CR0.NE: native x87 error reporting (what every 64-bit OS sets).
const CR0_NE: u64 = 1 << 5;
/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// Physical-interrupt exits in a row after which the partition is stopped
/// (the host runs with interrupts masked and has no handlers for them).
const INTERRUPT_EXIT_LIMIT: u32 = 1_000_000;

/// Guest console lines on COM1, tagged with the partition's name.
pub struct GuestConsole;

impl ConsoleSink for GuestConsole {
    fn guest_line(&mut self, partition: &str, text: &str) {
        line(format_args!("[{partition}] {text}"));
    }
}

/// One CPU's SVM state: the page holding its own FS, GS, TR and LDTR
/// (VMSAVE), reloaded after every guest.
#[derive(Clone, Copy, Debug)]
pub struct CpuSvm {
    host_state: u64,
}

/// Turns SVM on for this CPU, gives it its host-save page and saves its
/// own VMLOAD/VMSAVE state. Call after this CPU loaded its TSS.
///
/// # Errors
/// Why SVM cannot be used, as text for the boot log.
pub fn enable_svm() -> Result<CpuSvm, String> {
    let host_save = alloc_frames(4096, 4096).ok_or("no memory for the VMRUN host-save page")?;
    let host_state = alloc_frames(4096, 4096).ok_or("no memory for the host VMSAVE page")?.raw();
    // SAFETY: the page was just allocated for this CPU and is never freed;
    // HOST_PAT keeps entries 0-3 as they were, which is what the
    // hypervisor's own tables select (WB for RAM, UC for the APIC).
    unsafe { cpu::enable(host_save.raw(), npt::HOST_PAT) }.map_err(|e| format!("SVM unavailable: {e:?}"))?;
    // SAFETY: SVM is on; the page was just allocated for this CPU, which
    // has loaded its own GDT and TSS (caller's contract).
    unsafe { cpu::vmsave(host_state) };
    log::info!("SVM enabled: EFER.SVME set, host-save area at {host_save:?}, nested paging available");
    Ok(CpuSvm { host_state })
}

/// Copies `bytes` into freshly allocated, zeroed, page-aligned frames.
fn frames_holding(bytes: &[u8], what: &str) -> Result<u64, String> {
    let hpa = alloc_frames(bytes.len() as u64, 4096).ok_or_else(|| format!("no memory for the {what}"))?;
    // SAFETY: the frames were just allocated, identity-mapped and unused.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), hpa.raw() as *mut u8, bytes.len()) };
    Ok(hpa.raw())
}

/// Runs `partition`'s only vCPU on this CPU until the partition stops.
pub fn run(partition: &mut Partition, npt: &NestedTable, start: &Start, svm: CpuSvm) {
    let mut sink = GuestConsole;
    if let Err(reason) = run_vcpu(partition, npt, start, svm, &mut sink) {
        log::error!("partition {}: {reason}", partition.name);
        partition.stop(StopReason::Fault(reason), &mut sink);
    }
}

fn run_vcpu(
    partition: &mut Partition,
    npt: &NestedTable,
    start: &Start,
    svm: CpuSvm,
    sink: &mut GuestConsole,
) -> Result<(), String> {
    // Every port and every MSR access exits.
    let iopm = frames_holding(&IoPermissionMap::intercept_all().0, "I/O permission map")?;
    let msrpm = frames_holding(&MsrPermissionMap::intercept_all().0, "MSR permission map")?;
    let vmcb_pa = alloc_frames(4096, 4096).ok_or("no memory for the VMCB")?.raw();
    let vmcb_ptr = vmcb_pa as *mut Vmcb;
    let guest = SvmGuest {
        rip: start.rip,
        rsp: start.rsp,
        cr3: start.cr3,
        cr0: CR0_NE,
        cr4: 0,
        efer: 0,
        pat: DEFAULT_PAT,
        asid: ASID,
        npt_pml4: npt.root_address(),
        iopm,
        msrpm,
    };
    {
        // SAFETY: the VMCB frame was just allocated (zeroed, aligned, identity-mapped).
        let vmcb = unsafe { &mut *vmcb_ptr };
        fill_64bit_guest(vmcb, &guest).map_err(|e| format!("VMCB set-up refused: {e:?}"))?;
    }
    log::info!(
        "partition {}: entering the guest at RIP {:#x} (RSP {:#x}, CR3 {:#x}, nCR3 {:#x}, ASID {ASID})",
        partition.name,
        start.rip,
        start.rsp,
        start.cr3,
        guest.npt_pml4
    );
    let mut registers = GuestRegisters::default();
    let mut interrupt_exits = 0u32;
    let mut exits = 0u64;
    loop {
        // SAFETY: SVM is enabled on this CPU; the VMCB was filled by
        // `fill_64bit_guest` with an NPT mapping only the partition's RAM
        // and permission maps that intercept every port and MSR; `svm`
        // is this CPU's.
        unsafe { cpu::vmrun(vmcb_pa, svm.host_state, &mut registers) };
        exits += 1;
        // SAFETY: the CPU is done with the VMCB until the next VMRUN.
        let vmcb = unsafe { &mut *vmcb_ptr };
        vmcb.control.tlb_control = 0;
        let exit = SvmExit::from_code(vmcb.control.exitcode);
        let rip = vmcb.save.rip;
        if !matches!(exit, SvmExit::Intr | SvmExit::Nmi | SvmExit::Smi | SvmExit::Init) {
            interrupt_exits = 0;
        }
        match exit {
            SvmExit::Vmmcall => {
                let save = &vmcb.save;
                let x = [
                    save.rax,
                    registers.rdi,
                    registers.rsi,
                    registers.rdx,
                    registers.r8,
                    registers.r9,
                    registers.r10,
                    registers.r11,
                ];
                let mut topology = SingleVcpu;
                match hypercall::dispatch(partition, &IdentityMemory, sink, &mut topology, Conduit::Hvc, &x) {
                    Outcome::Return(value) => {
                        vmcb.save.rax = value;
                        vmcb.save.rip = rip.wrapping_add(3);
                    }
                    Outcome::Stop | Outcome::VcpuOff => break,
                    Outcome::Reset => return Err(String::from("SYSTEM_RESET: partition reset is not implemented on x86_64 yet")),
                }
            }
            SvmExit::Cpuid => {
                let (leaf, subleaf) = (vmcb.save.rax as u32, registers.rcx as u32);
                let [eax, ebx, ecx, edx] = guest_cpuid(leaf, subleaf);
                vmcb.save.rax = u64::from(eax);
                registers.rbx = u64::from(ebx);
                registers.rcx = u64::from(ecx);
                registers.rdx = u64::from(edx);
                vmcb.save.rip = rip.wrapping_add(2);
            }
            SvmExit::Hlt => {
                vmcb.save.rip = rip.wrapping_add(1);
                // No virtual interrupts yet: nothing can ever wake a halted
                // vCPU, so HLT ends the partition either way.
                let reason = if vmcb.save.rflags & RFLAGS_IF == 0 {
                    format!("HLT with interrupts masked at RIP {rip:#x}: the vCPU can never resume")
                } else {
                    format!("HLT at RIP {rip:#x}: no virtual interrupts on x86_64 yet, the vCPU can never resume")
                };
                return Err(reason);
            }
            SvmExit::Intr | SvmExit::Nmi | SvmExit::Smi | SvmExit::Init => {
                interrupt_exits += 1;
                if interrupt_exits >= INTERRUPT_EXIT_LIMIT {
                    return Err(format!("{exit:?} exits in a row: the host cannot take physical interrupts yet"));
                }
            }
            SvmExit::Shutdown => {
                return Err(format!("triple fault (SHUTDOWN intercept) at RIP {rip:#x}"));
            }
            SvmExit::NestedPageFault => {
                let fault = NestedPageFault::decode(vmcb.control.exitinfo1, vmcb.control.exitinfo2);
                let access = if fault.fetch {
                    "instruction fetch"
                } else if fault.write {
                    "write"
                } else {
                    "read"
                };
                return Err(format!(
                    "nested page fault: {access} at GPA {:#x} (RIP {rip:#x}, {}, EXITINFO1 {:#x}); no MMIO emulation on x86_64 yet, partition stopped",
                    fault.gpa,
                    if fault.present { "protection" } else { "not mapped" },
                    vmcb.control.exitinfo1
                ));
            }
            SvmExit::Msr => {
                let op = if vmcb.control.exitinfo1 == 1 { "WRMSR" } else { "RDMSR" };
                return Err(format!("{op} of MSR {:#x} at RIP {rip:#x}: MSRs are not emulated on x86_64 yet", registers.rcx as u32));
            }
            SvmExit::Ioio => {
                let what = match IoioInfo::decode(vmcb.control.exitinfo1) {
                    Some(io) => format!(
                        "{} of {} byte(s) at port {:#x}",
                        if io.direction == IoDirection::In { "IN" } else { "OUT" },
                        io.size,
                        io.port
                    ),
                    None => format!("port access (EXITINFO1 {:#x})", vmcb.control.exitinfo1),
                };
                return Err(format!("{what} at RIP {rip:#x}: port I/O is not emulated on x86_64 yet"));
            }
            SvmExit::Invalid => {
                let save = &vmcb.save;
                return Err(format!(
                    "VMRUN refused the VMCB (exit code -1, consistency check failed): CR0 {:#x} CR3 {:#x} CR4 {:#x} EFER {:#x} CS attrib {:#x} RIP {rip:#x}",
                    save.cr0, save.cr3, save.cr4, save.efer, save.cs.attrib
                ));
            }
            other => {
                return Err(format!(
                    "unexpected #VMEXIT {other:?} (code {:#x}, EXITINFO1 {:#x}, EXITINFO2 {:#x}) at RIP {rip:#x}",
                    vmcb.control.exitcode, vmcb.control.exitinfo1, vmcb.control.exitinfo2
                ));
            }
        }
    }
    log::info!("partition {}: stopped after {exits} #VMEXITs", partition.name);
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
            let mut r = cpu::cpuid(leaf, subleaf);
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
