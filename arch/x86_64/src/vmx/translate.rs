//! Translating a VMX exit, as the VMCS's exit-information fields describe it
//! (SDM Vol. 3C §25.9, §28.2), into the back-end neutral [`Exit`].
//!
//! | basic exit reason (Appendix C) | [`Exit`] |
//! |---|---|
//! | 18 VMCALL | `Hypercall` |
//! | 10 CPUID | `Cpuid` |
//! | 12 HLT | `Hlt` |
//! | 31 RDMSR, 32 WRMSR | `Rdmsr`, `Wrmsr` |
//! | 30 I/O instruction | `Io` from the qualification (Table 28-5) |
//! | 48 EPT violation | `NestedFault` at the guest-physical address (Table 28-7) |
//! | 2 triple fault | `TripleFault` |
//! | 1 external interrupt, 0 with an NMI, 3 INIT | `Interrupt` |
//! | entry failures (bit 31 set: 33, 34, 41) and everything else | `Unexpected`, with reason and qualification |

use super::event::{self, InterruptionType};
use super::exit::{EptViolation, ExitReason, ExitReasonField, IoDirection, IoQualification};
use crate::exit::Exit;
use alloc::format;

/// The exit-information fields a translation reads, VMREAD by the caller
/// after the exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit reason (0x4402).
    pub reason: u32,
    /// Exit qualification (0x6400).
    pub qualification: u64,
    /// Guest-physical address (0x2400); meaningful for EPT violations and
    /// misconfigurations only.
    pub guest_physical: u64,
    /// VM-exit interruption information (0x4404): which exception or NMI
    /// caused an exit with basic reason 0, or the acknowledged vector of an
    /// external interrupt.
    pub interruption: u32,
    /// IDT-vectoring information (0x4408): the event being delivered when
    /// the exit happened, if its valid bit is set.
    pub idt_vectoring: u32,
}

/// The neutral exit for `info`.
pub fn translate(info: &ExitInfo) -> Exit {
    let field = ExitReasonField::decode(info.reason);
    if field.entry_failure {
        return Exit::Unexpected(format!(
            "VM entry failed: {:?} (exit reason {:#x}, qualification {:#x}); see SDM §27.8",
            field.basic, info.reason, info.qualification
        ));
    }
    match field.basic {
        ExitReason::Vmcall => Exit::Hypercall,
        ExitReason::Cpuid => Exit::Cpuid,
        ExitReason::Hlt => Exit::Hlt,
        ExitReason::Rdmsr => Exit::Rdmsr,
        ExitReason::Wrmsr => Exit::Wrmsr,
        ExitReason::IoInstruction => match IoQualification::decode(info.qualification) {
            Some(io) => Exit::Io { port: io.port, size: io.size, input: io.direction == IoDirection::In },
            None => Exit::Unexpected(format!(
                "I/O instruction exit with a malformed qualification {:#x}",
                info.qualification
            )),
        },
        ExitReason::EptViolation => {
            let violation = EptViolation::decode(info.qualification);
            Exit::NestedFault {
                gpa: info.guest_physical,
                write: violation.write,
                fetch: violation.fetch,
                present: !violation.not_present(),
                during_event_delivery: event::is_valid(info.idt_vectoring),
            }
        }
        ExitReason::TripleFault => Exit::TripleFault,
        // The host owns physical interrupts, NMIs and INIT (SVM's INTR,
        // NMI and INIT intercepts map the same way).
        ExitReason::ExternalInterrupt | ExitReason::InitSignal => Exit::Interrupt,
        ExitReason::ExceptionOrNmi if InterruptionType::of(info.interruption) == InterruptionType::Nmi => {
            Exit::Interrupt
        }
        ExitReason::EptMisconfiguration => Exit::Unexpected(format!(
            "EPT misconfiguration at GPA {:#x}: the hypervisor built an invalid EPT entry",
            info.guest_physical
        )),
        other => Exit::Unexpected(format!(
            "unexpected VM exit {other:?} (exit reason {:#x}, qualification {:#x}, interruption information {:#x})",
            info.reason, info.qualification, info.interruption
        )),
    }
}

/// Whether the VM-exit instruction-length field holds the length of the
/// instruction that caused an exit with this `reason` (§28.2.5: exits due
/// to instruction execution). For other exits (EPT violations, interrupts)
/// the field is undefined and the instruction must be decoded.
pub const fn reports_instruction_length(reason: u32) -> bool {
    let field = ExitReasonField::decode(reason);
    !field.entry_failure
        && matches!(
            field.basic,
            ExitReason::Vmcall
                | ExitReason::Cpuid
                | ExitReason::Hlt
                | ExitReason::Rdmsr
                | ExitReason::Wrmsr
                | ExitReason::IoInstruction
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(reason: u32, qualification: u64) -> Exit {
        translate(&ExitInfo { reason, qualification, ..ExitInfo::default() })
    }

    fn unexpected(exit: Exit) -> alloc::string::String {
        match exit {
            Exit::Unexpected(text) => text,
            other => panic!("expected Unexpected, got {other:?}"),
        }
    }

    #[test]
    fn instruction_exits() {
        assert_eq!(exit(18, 0), Exit::Hypercall);
        assert_eq!(exit(10, 0), Exit::Cpuid);
        assert_eq!(exit(12, 0), Exit::Hlt);
        assert_eq!(exit(31, 0), Exit::Rdmsr);
        assert_eq!(exit(32, 0), Exit::Wrmsr);
        // Bits 30:16 of the reason field never change the basic reason.
        assert_eq!(exit(0x0800_0012, 0), Exit::Hypercall);
    }

    #[test]
    fn io_exits() {
        // OUT DX, AL to 0x3f8.
        assert_eq!(exit(30, 0x03f8_0000), Exit::Io { port: 0x3f8, size: 1, input: false });
        // IN EAX, 0x71.
        assert_eq!(exit(30, 0x0071_0000 | 0x40 | 0x08 | 3), Exit::Io { port: 0x71, size: 4, input: true });
        // Reserved size encoding 2.
        assert!(unexpected(exit(30, 2)).contains("malformed qualification 0x2"));
    }

    #[test]
    fn ept_violations() {
        // Read of an unmapped page.
        let info = ExitInfo { reason: 48, qualification: 0x181, guest_physical: 0x3000_0000, ..ExitInfo::default() };
        assert_eq!(
            translate(&info),
            Exit::NestedFault { gpa: 0x3000_0000, write: false, fetch: false, present: false, during_event_delivery: false }
        );
        // Write to a read/execute page while delivering a #PF.
        let info = ExitInfo {
            reason: 48,
            qualification: 0x182 | 0x08 | 0x20,
            guest_physical: 0x4000_1008,
            idt_vectoring: 0x8000_0b0e,
            ..ExitInfo::default()
        };
        assert_eq!(
            translate(&info),
            Exit::NestedFault { gpa: 0x4000_1008, write: true, fetch: false, present: true, during_event_delivery: true }
        );
        // Instruction fetch; IDT-vectoring without its valid bit is no event.
        let info = ExitInfo { reason: 48, qualification: 0x84, guest_physical: 0x10, idt_vectoring: 0x0b0e, ..ExitInfo::default() };
        assert_eq!(
            translate(&info),
            Exit::NestedFault { gpa: 0x10, write: false, fetch: true, present: false, during_event_delivery: false }
        );
        let misconfigured = ExitInfo { reason: 49, guest_physical: 0x5000, ..ExitInfo::default() };
        assert!(unexpected(translate(&misconfigured)).contains("EPT misconfiguration at GPA 0x5000"));
    }

    #[test]
    fn host_events_and_shutdown() {
        assert_eq!(exit(2, 0), Exit::TripleFault);
        assert_eq!(exit(1, 0), Exit::Interrupt);
        assert_eq!(exit(3, 0), Exit::Interrupt);
        // Reason 0 with an NMI (type 2) is the host's; with an exception it is unexpected
        // (the exception bitmap is 0, so it should not happen).
        let nmi = ExitInfo { reason: 0, interruption: 0x8000_0202, ..ExitInfo::default() };
        assert_eq!(translate(&nmi), Exit::Interrupt);
        let ud = ExitInfo { reason: 0, interruption: 0x8000_0306, ..ExitInfo::default() };
        assert!(unexpected(translate(&ud)).contains("ExceptionOrNmi"));
    }

    #[test]
    fn entry_failures_and_the_rest_are_unexpected() {
        // Invalid guest state, qualification 0 (no detail).
        let text = unexpected(exit(0x8000_0021, 0));
        assert!(text.contains("VM entry failed: EntryFailureInvalidGuestState"), "{text}");
        assert!(text.contains("exit reason 0x80000021"), "{text}");
        // MSR loading failed at entry 3 (the qualification is its index).
        assert!(unexpected(exit(0x8000_0022, 3)).contains("qualification 0x3"));
        // MOV to CR0 touching a pinned bit: CR access, reported with its qualification.
        let text = unexpected(exit(28, 0x300));
        assert!(text.contains("ControlRegisterAccess") && text.contains("qualification 0x300"), "{text}");
        assert!(unexpected(exit(55, 0)).contains("Xsetbv"));
        assert!(unexpected(exit(0xffff, 0)).contains("Other(65535)"));
    }

    #[test]
    fn instruction_length_only_for_instruction_exits() {
        for reason in [10, 12, 18, 30, 31, 32] {
            assert!(reports_instruction_length(reason), "{reason}");
        }
        for reason in [0, 1, 2, 48, 49, 28, 0x8000_0021] {
            assert!(!reports_instruction_length(reason), "{reason}");
        }
    }
}
