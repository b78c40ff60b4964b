//! Why a guest exited, in terms neither virtualization extension owns: the
//! SVM and VMX back ends translate their exit codes into an [`Exit`], and
//! the image's exit handler decides what each one means for the partition.
//!
//! It lives here rather than in the image so that each back end's
//! translation (e.g. [`crate::vmx::translate`]) runs as a host unit test.

use alloc::string::String;

/// Why the guest exited, in back-end neutral terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// VMMCALL or VMCALL.
    Hypercall,
    /// CPUID.
    Cpuid,
    /// HLT.
    Hlt,
    /// RDMSR (MSR number in RCX).
    Rdmsr,
    /// WRMSR (MSR number in RCX, value in EDX:EAX).
    Wrmsr,
    /// IN, OUT, INS or OUTS to a port the partition does not own.
    Io {
        /// The port.
        port: u16,
        /// Bytes per access.
        size: u8,
        /// IN or INS.
        input: bool,
    },
    /// A guest-physical access the second-level table refused.
    NestedFault {
        /// The guest-physical address.
        gpa: u64,
        /// A store.
        write: bool,
        /// An instruction fetch.
        fetch: bool,
        /// The page is mapped but the access is not allowed.
        present: bool,
        /// It happened while the CPU delivered an event (e.g. the guest's
        /// IDT lies outside its memory): re-injecting would fault again.
        during_event_delivery: bool,
    },
    /// Shutdown: a triple fault.
    TripleFault,
    /// A physical interrupt, NMI, SMI or INIT for the host.
    Interrupt,
    /// Anything else; the text describes it for the stop report.
    Unexpected(String),
}

