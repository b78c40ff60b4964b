//! Hypercall dispatch (the ABI is in `bulkhead_abi::hypercall`).
//!
//! Every argument comes from a guest and is checked here: addresses are
//! translated through the caller's own address space, lengths are bounded,
//! unknown calls return `NOT_SUPPORTED`. Nothing a guest passes can make the
//! hypervisor panic or touch another partition's memory.

use crate::address::Gpa;
use crate::partition::{Access, ConsoleSink, HostMemory, Partition, StopReason, UNKNOWN_CALL_LOG_LIMIT, Verdict};
use bulkhead_abi::hypercall::{self as abi, HvError};

/// SMCCC `SMCCC_VERSION` (DEN0028 7.2).
pub const SMCCC_VERSION: u32 = 0x8000_0000;
/// The SMCCC version we implement: 1.1.
pub const SMCCC_VERSION_1_1: u64 = 0x1_0001;
/// The PSCI version reported: 1.1.
pub const PSCI_VERSION_1_1: u64 = 0x1_0001;

/// Arm TRNG `TRNG_VERSION` (DEN0098).
pub const ARM_TRNG_VERSION: u32 = 0x8400_0050;
/// SMCCC "Vendor Specific Hypervisor Service Call UID" (DEN0028 6.2).
pub const VENDOR_HYP_CALL_UID: u32 = 0x8600_ff01;
/// SMCCC `SMCCC_ARCH_FEATURES` (DEN0028 7.3).
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
/// PSCI function IDs (DEN0022 §5): 32-bit and 64-bit forms.
pub const PSCI_CPU_OFF: u32 = 0x8400_0002;
/// See [`PSCI_CPU_OFF`].
pub const PSCI_CPU_ON_32: u32 = 0x8400_0003;
/// See [`PSCI_CPU_OFF`].
pub const PSCI_CPU_ON_64: u32 = 0xc400_0003;
/// See [`PSCI_CPU_OFF`].
pub const PSCI_AFFINITY_INFO_32: u32 = 0x8400_0004;
/// See [`PSCI_CPU_OFF`].
pub const PSCI_AFFINITY_INFO_64: u32 = 0xc400_0004;
/// See [`PSCI_CPU_OFF`].
pub const PSCI_MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// See [`PSCI_CPU_OFF`].
pub const PSCI_FEATURES: u32 = 0x8400_000a;
/// See [`PSCI_CPU_OFF`].
pub const PSCI_SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI return values (DEN0022 §5.2.2) and `AFFINITY_INFO` states.
pub const PSCI_NOT_SUPPORTED: i64 = -1;
/// See [`PSCI_NOT_SUPPORTED`].
pub const PSCI_INVALID_PARAMETERS: i64 = -2;
/// See [`PSCI_NOT_SUPPORTED`].
pub const PSCI_ALREADY_ON: i64 = -4;
/// See [`PSCI_NOT_SUPPORTED`].
pub const PSCI_ON_PENDING: i64 = -5;
/// `AFFINITY_INFO`: on.
pub const PSCI_ON: i64 = 0;
/// `AFFINITY_INFO`: off.
pub const PSCI_OFF: i64 = 1;
/// `AFFINITY_INFO`: on pending.
pub const PSCI_AFFINITY_ON_PENDING: i64 = 2;
/// `MIGRATE_INFO_TYPE`: no trusted OS that needs migration.
const PSCI_NO_TRUSTED_OS: u64 = 2;
/// The affinity fields of an MPIDR.
pub const MPIDR_AFFINITY: u64 = 0xff_00ff_ffff;

/// What the vCPU does after a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Resume the guest with `x0` set to this value.
    Return(u64),
    /// The partition has stopped; do not resume it.
    Stop,
    /// This vCPU turned itself off (PSCI `CPU_OFF`); the partition goes on.
    VcpuOff,
    /// The partition asked to be reset (PSCI `SYSTEM_RESET`): restart it
    /// from its image.
    Reset,
}

/// The partition's vCPUs, as PSCI sees them. Targets are MPIDR values; a
/// partition's vCPU `n` has Aff0 = `n` and the other affinity fields zero.
pub trait VcpuTopology {
    /// `CPU_ON`: start vCPU `target` at `entry` with `x0` = `context`.
    /// Returns a PSCI status: 0, `INVALID_PARAMETERS`, `ALREADY_ON` or `ON_PENDING`.
    fn cpu_on(&mut self, target: u64, entry: u64, context: u64) -> i64;

    /// `AFFINITY_INFO`: 0 on, 1 off, 2 on pending, or `INVALID_PARAMETERS`.
    fn affinity_info(&self, target: u64) -> i64;

    /// `CPU_OFF` of the calling vCPU; returns whether no vCPU is left on.
    fn cpu_off(&mut self) -> bool;
}

/// A one-vCPU partition's topology: vCPU 0 is on, there is no other.
#[derive(Debug, Default)]
pub struct SingleVcpu;

impl VcpuTopology for SingleVcpu {
    fn cpu_on(&mut self, target: u64, _entry: u64, _context: u64) -> i64 {
        if target & MPIDR_AFFINITY == 0 { PSCI_ALREADY_ON } else { PSCI_INVALID_PARAMETERS }
    }

    fn affinity_info(&self, target: u64) -> i64 {
        if target & MPIDR_AFFINITY == 0 { PSCI_ON } else { PSCI_INVALID_PARAMETERS }
    }

    fn cpu_off(&mut self) -> bool {
        true
    }
}

impl Outcome {
    fn error(e: HvError) -> Outcome {
        Outcome::Return(e.to_register())
    }
}

/// The conduit a call arrived through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// `HVC`.
    Hvc,
    /// A trapped `SMC`.
    Smc,
}

/// Handles one call from `partition` with registers `x0`..`x7`.
pub fn dispatch(
    partition: &mut Partition,
    memory: &dyn HostMemory,
    sink: &mut dyn ConsoleSink,
    topology: &mut dyn VcpuTopology,
    conduit: Conduit,
    x: &[u64; 8],
) -> Outcome {
    // SMCCC: the function ID is W0; the upper half of X0 is not part of it.
    let function = x[0] as u32;
    match function {
        abi::ABI_VERSION => Outcome::Return(abi::ABI_VERSION_VALUE),
        abi::CONSOLE_WRITE => console_write(partition, memory, sink, x[1], x[2]),
        abi::REPORT_RESULT => {
            partition.verdict = match x[1] {
                0 => Verdict::Passed,
                code => Verdict::Failed { code, detail: x[2] },
            };
            Outcome::Return(0)
        }
        abi::PARTITION_STOP | abi::PSCI_SYSTEM_OFF => {
            partition.stop(StopReason::Requested, sink);
            Outcome::Stop
        }
        SMCCC_VERSION => Outcome::Return(SMCCC_VERSION_1_1),
        // No firmware workaround is needed or offered (NOT_SUPPORTED is
        // "this mitigation is not required" for the ARCH_WORKAROUND calls).
        SMCCC_ARCH_FEATURES => Outcome::error(HvError::NotSupported),
        abi::PSCI_VERSION => Outcome::Return(PSCI_VERSION_1_1),
        PSCI_FEATURES => {
            let supported = matches!(
                x[1] as u32,
                abi::PSCI_VERSION | abi::PSCI_SYSTEM_OFF | PSCI_SYSTEM_RESET | PSCI_CPU_ON_32 | PSCI_CPU_ON_64 | PSCI_CPU_OFF
                    | PSCI_AFFINITY_INFO_32 | PSCI_AFFINITY_INFO_64 | PSCI_FEATURES | PSCI_MIGRATE_INFO_TYPE
                    | SMCCC_VERSION
            );
            Outcome::Return(if supported { 0 } else { PSCI_NOT_SUPPORTED as u64 })
        }
        PSCI_MIGRATE_INFO_TYPE => Outcome::Return(PSCI_NO_TRUSTED_OS),
        PSCI_SYSTEM_RESET => Outcome::Reset,
        PSCI_CPU_ON_32 => Outcome::Return(topology.cpu_on(x[1] & 0xffff_ffff, x[2] & 0xffff_ffff, x[3] & 0xffff_ffff) as u64),
        PSCI_CPU_ON_64 => Outcome::Return(topology.cpu_on(x[1], x[2], x[3]) as u64),
        PSCI_AFFINITY_INFO_32 | PSCI_AFFINITY_INFO_64 => {
            // Only affinity level 0 is supported (x2 = lowest affinity level).
            if x[2] != 0 {
                return Outcome::Return(PSCI_INVALID_PARAMETERS as u64);
            }
            Outcome::Return(topology.affinity_info(x[1]) as u64)
        }
        PSCI_CPU_OFF => {
            if topology.cpu_off() {
                partition.stop(StopReason::Requested, sink);
                Outcome::Stop
            } else {
                Outcome::VcpuOff
            }
        }
        // Probes every Linux makes (Arm TRNG, the hypervisor-vendor UID):
        // answered NOT_SUPPORTED without a warning.
        ARM_TRNG_VERSION | VENDOR_HYP_CALL_UID => Outcome::error(HvError::NotSupported),
        _ => {
            partition.unknown_calls = partition.unknown_calls.saturating_add(1);
            if partition.unknown_calls <= UNKNOWN_CALL_LOG_LIMIT {
                log::warn!(
                    "partition '{}': unknown hypercall {function:#010x} via {conduit:?}: returning NOT_SUPPORTED",
                    partition.name
                );
                if partition.unknown_calls == UNKNOWN_CALL_LOG_LIMIT {
                    log::warn!("partition '{}': further unknown hypercalls are not logged", partition.name);
                }
            }
            Outcome::error(HvError::NotSupported)
        }
    }
}

fn console_write(
    partition: &mut Partition,
    memory: &dyn HostMemory,
    sink: &mut dyn ConsoleSink,
    address: u64,
    length: u64,
) -> Outcome {
    if !partition.console_enabled {
        return Outcome::error(HvError::NotSupported);
    }
    if length > abi::CONSOLE_WRITE_MAX {
        return Outcome::error(HvError::InvalidParameter);
    }
    if length == 0 {
        return Outcome::Return(0);
    }
    let Some(hpa) = partition.translate(Gpa::new(address), length, Access::Read) else {
        log::debug!("partition '{}': console write from {address:#x}+{length:#x} outside its memory", partition.name);
        return Outcome::error(HvError::InvalidParameter);
    };
    let mut buffer = [0u8; abi::CONSOLE_WRITE_MAX as usize];
    let bytes = &mut buffer[..length as usize];
    memory.read(hpa, bytes);
    partition.console_write(bytes, sink);
    Outcome::Return(length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Hpa;
    use crate::partition::tests::{Lines, test_partition};
    use crate::partition::RunState;

    /// Host memory where byte at HPA `a` is `a as u8`, recording each read.
    struct PatternMemory(core::cell::RefCell<alloc::vec::Vec<(u64, usize)>>);

    impl HostMemory for PatternMemory {
        fn read(&self, hpa: Hpa, buf: &mut [u8]) {
            self.0.borrow_mut().push((hpa.raw(), buf.len()));
            for (i, b) in buf.iter_mut().enumerate() {
                *b = b'a' + ((hpa.raw() as usize + i) % 26) as u8;
            }
        }
    }

    fn call(p: &mut Partition, lines: &mut Lines, x: [u64; 8]) -> (Outcome, alloc::vec::Vec<(u64, usize)>) {
        let memory = PatternMemory(Default::default());
        let outcome = dispatch(p, &memory, lines, &mut SingleVcpu, Conduit::Hvc, &x);
        (outcome, memory.0.into_inner())
    }

    #[test]
    fn unknown_calls_return_not_supported_and_are_counted() {
        let mut p = test_partition();
        let mut lines = Lines::default();
        for id in [0xc600_ffffu64, 0x8400_00ff, 0, 0xffff_ffff, 0xc500_0001] {
            let (outcome, _) = call(&mut p, &mut lines, [id, 0, 0, 0, 0, 0, 0, 0]);
            assert_eq!(outcome, Outcome::Return(u64::MAX), "{id:#x}");
        }
        assert_eq!(p.unknown_calls, 5);
        assert_eq!(p.state, RunState::Created);
    }

    #[test]
    fn console_write_reads_only_the_callers_own_readable_memory() {
        let mut p = test_partition();
        let mut lines = Lines::default();
        let x = |addr: u64, len: u64| [abi::CONSOLE_WRITE as u64, addr, len, 0, 0, 0, 0, 0];
        let (outcome, reads) = call(&mut p, &mut lines, x(0x4000_0000, 5));
        assert_eq!(outcome, Outcome::Return(5));
        assert_eq!(reads, [(0x10_0000, 5)]);
        for (addr, len) in [(0x4000_2000, 1), (0x3fff_f000, 0x10), (0x4000_1fff, 2), (u64::MAX, 2), (0x4000_0000, 4097)] {
            let (outcome, reads) = call(&mut p, &mut lines, x(addr, len));
            assert_eq!(outcome, Outcome::Return(HvError::InvalidParameter.to_register()), "{addr:#x}+{len}");
            assert!(reads.is_empty());
        }
        assert_eq!(call(&mut p, &mut lines, x(0x4000_0000, 0)).0, Outcome::Return(0));
        p.console_enabled = false;
        let (outcome, reads) = call(&mut p, &mut lines, x(0x4000_0000, 5));
        assert_eq!(outcome, Outcome::Return(HvError::NotSupported.to_register()), "console = none");
        assert!(reads.is_empty());
    }

    #[test]
    fn psci_for_a_one_vcpu_partition() {
        let mut p = test_partition();
        let mut lines = Lines::default();
        let mut psci = |id: u32, a: u64| call(&mut p, &mut lines, [u64::from(id), a, 0, 0, 0, 0, 0, 0]).0;
        assert_eq!(psci(abi::PSCI_VERSION, 0), Outcome::Return(0x1_0001));
        assert_eq!(psci(PSCI_FEATURES, u64::from(PSCI_CPU_ON_64)), Outcome::Return(0));
        assert_eq!(psci(PSCI_FEATURES, 0x8400_0009), Outcome::Return(0), "SYSTEM_RESET offered");
        assert_eq!(psci(PSCI_FEATURES, 0x8400_0012), Outcome::Return(PSCI_NOT_SUPPORTED as u64), "SYSTEM_RESET2 not");
        assert_eq!(psci(PSCI_SYSTEM_RESET, 0), Outcome::Reset);
        assert_eq!(psci(PSCI_CPU_ON_64, 0), Outcome::Return(PSCI_ALREADY_ON as u64));
        assert_eq!(psci(PSCI_CPU_ON_64, 1), Outcome::Return(PSCI_INVALID_PARAMETERS as u64));
        assert_eq!(psci(PSCI_AFFINITY_INFO_64, 0), Outcome::Return(PSCI_ON as u64));
        assert_eq!(psci(PSCI_AFFINITY_INFO_64, 0x100), Outcome::Return(PSCI_INVALID_PARAMETERS as u64));
        assert_eq!(psci(PSCI_MIGRATE_INFO_TYPE, 0), Outcome::Return(2));
        assert_eq!(psci(SMCCC_ARCH_FEATURES, 0x8000_8000), Outcome::Return(u64::MAX));
        assert_eq!(psci(PSCI_CPU_OFF, 0), Outcome::Stop);
    }

    #[test]
    fn verdicts_and_stop() {
        let mut p = test_partition();
        let mut lines = Lines::default();
        call(&mut p, &mut lines, [abi::REPORT_RESULT as u64, 7, 9, 0, 0, 0, 0, 0]);
        assert_eq!(p.verdict, Verdict::Failed { code: 7, detail: 9 });
        call(&mut p, &mut lines, [abi::REPORT_RESULT as u64, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(p.verdict, Verdict::Passed);
        let (outcome, _) = call(&mut p, &mut lines, [abi::PSCI_SYSTEM_OFF as u64 | (0xdead << 32), 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(outcome, Outcome::Stop, "upper half of x0 is ignored");
        assert!(p.is_stopped());
    }
}
