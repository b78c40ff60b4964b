//! Catching the faults a test provokes on purpose.
//!
//! [`probe`] runs a closure that is expected to fault (an injected abort, an
//! alignment fault); the exception handler records the syndrome and resumes
//! after the faulting instruction. Any exception outside a probe reports
//! failure and stops the partition.

use crate::{Console, FAIL_EXCEPTION, hv};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static PROBING: AtomicBool = AtomicBool::new(false);
static FAULT_ESR: AtomicU64 = AtomicU64::new(0);
static FAULT_FAR: AtomicU64 = AtomicU64::new(0);
static FAULTED: AtomicBool = AtomicBool::new(false);

/// A fault caught by [`probe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// `ESR_EL1`.
    pub esr: u64,
    /// `FAR_EL1`.
    pub far: u64,
}

impl Fault {
    /// The exception class.
    pub fn class(&self) -> u64 {
        (self.esr >> 26) & 0x3f
    }

    /// The data/instruction fault status code.
    pub fn status(&self) -> u64 {
        self.esr & 0x3f
    }
}

/// Runs `access`, which may fault once at a load or store; returns the fault.
pub fn probe(access: impl FnOnce()) -> Option<Fault> {
    FAULTED.store(false, Ordering::SeqCst);
    PROBING.store(true, Ordering::SeqCst);
    access();
    PROBING.store(false, Ordering::SeqCst);
    FAULTED.load(Ordering::SeqCst).then(|| Fault {
        esr: FAULT_ESR.load(Ordering::SeqCst),
        far: FAULT_FAR.load(Ordering::SeqCst),
    })
}

/// Called by the EL1 vectors with the syndrome and the vector's index (0..16;
/// `index % 4` is 0 synchronous, 1 IRQ, 2 FIQ, 3 SError); returns where to
/// resume.
#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn bulkhead_guest_exception(esr: u64, elr: u64, far: u64, vector: u64) -> u64 {
    if vector % 4 == 1 {
        crate::gic::handle_irq();
        return elr;
    }
    let class = (esr >> 26) & 0x3f;
    // Data aborts (from EL1 or EL0) and undefined instructions inside a
    // probe are expected: skip the faulting instruction.
    if PROBING.load(Ordering::SeqCst) && matches!(class, 0x00 | 0x24 | 0x25) {
        FAULT_ESR.store(esr, Ordering::SeqCst);
        FAULT_FAR.store(far, Ordering::SeqCst);
        FAULTED.store(true, Ordering::SeqCst);
        return elr + 4;
    }
    let _ = writeln!(Console, "guest exception: ESR_EL1 {esr:#x} ELR_EL1 {elr:#x} FAR_EL1 {far:#x}");
    hv::report_result(FAIL_EXCEPTION, esr);
    hv::system_off()
}
