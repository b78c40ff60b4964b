//! Fatal paths: unexpected exceptions at EL2, and the crash-test hook.

use crate::console::emergency_line;
use crate::platform::finish_quietly;
use bulkhead_abi::exit::ExitCode;
use bulkhead_arch_aarch64::esr::Esr;
use bulkhead_arch_aarch64::exception::{ExceptionFrame, UNEXPECTED_KIND_NAMES};
use bulkhead_core::bootargs::CrashTest;

/// Called by the EL2 vectors for any exception taken at EL2. Prints the
/// syndrome and every register, then ends the run with
/// [`ExitCode::HypervisorFault`].
#[unsafe(no_mangle)]
pub extern "C" fn bulkhead_unexpected_exception(frame: &ExceptionFrame, kind: u64) -> ! {
    let kind_name = UNEXPECTED_KIND_NAMES.get(kind as usize).copied().unwrap_or("unknown");
    emergency_line(format_args!("[bulkhead] FATAL unexpected exception at EL2 ({kind_name})"));
    emergency_line(format_args!("  ESR_EL2   {:#018x}  {:?}", frame.esr, Esr(frame.esr)));
    emergency_line(format_args!("  ELR_EL2   {:#018x}  SPSR_EL2 {:#018x}", frame.elr, frame.spsr));
    emergency_line(format_args!("  FAR_EL2   {:#018x}  HPFAR_EL2 {:#018x}", frame.far, frame.hpfar));
    for pair in 0..15 {
        let (a, b) = (pair * 2, pair * 2 + 1);
        emergency_line(format_args!("  x{a:<2} {:#018x}  x{b:<2} {:#018x}", frame.x[a], frame.x[b]));
    }
    emergency_line(format_args!("  x30 {:#018x}  sp  {:#018x}", frame.x[30], frame.sp));
    finish_quietly(ExitCode::HypervisorFault)
}

/// An address no hypervisor mapping covers (the top of the 48-bit space).
const UNMAPPED: usize = 0xffff_ffff_f000;

/// Performs the crash test the boot arguments asked for.
pub fn trigger(test: CrashTest) -> ! {
    log::warn!("crash test requested by the boot arguments: {test:?}");
    match test {
        CrashTest::Panic => panic!("crash test: deliberate panic requested by boot arguments"),
        CrashTest::Exception => {
            // SAFETY: not safe at all, deliberately: the load faults, and the
            // fault handler ends the run.
            let value = unsafe { core::ptr::read_volatile(UNMAPPED as *const u64) };
            panic!("crash test: load from unmapped {UNMAPPED:#x} returned {value:#x}")
        }
        // These exercise x86_64's page-0 hole and IST stacks; arm64's EL2
        // tables and stack have neither yet, so say so rather than pretend.
        CrashTest::NullPointer | CrashTest::StackOverflow => {
            panic!("crash test: {test:?} is only implemented on x86_64")
        }
    }
}
