//! Exit codes of a hypervisor run under QEMU.
//!
//! On arm64 they are returned through semihosting `SYS_EXIT`; on x86_64
//! through `isa-debug-exit`, which turns `value` into `(value << 1) | 1`.
//! The codes avoid 1, which QEMU itself uses for its own errors.

/// Why a hypervisor run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Every partition stopped and every one of them reported success.
    Success = 0,
    /// Every partition stopped, and at least one reported failure, was stopped
    /// by a fault, or never reported a verdict.
    PartitionFailure = 3,
    /// The hypervisor could not start: bad boot information or configuration,
    /// or no partition could be started.
    BootFailure = 4,
    /// The hypervisor itself panicked or took an unexpected exception.
    HypervisorFault = 99,
}

impl ExitCode {
    /// Every code, for tools that decode an exit status.
    pub const ALL: [ExitCode; 4] = [
        ExitCode::Success,
        ExitCode::PartitionFailure,
        ExitCode::BootFailure,
        ExitCode::HypervisorFault,
    ];

    /// The code as the host sees it after QEMU exits on arm64 (semihosting).
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Decodes a QEMU exit status seen on the host, if it is one of ours.
    pub fn from_code(code: i32) -> Option<ExitCode> {
        Self::ALL.into_iter().find(|c| i32::from(c.code()) == code)
    }

    /// A short name for logs and test reports.
    pub const fn name(self) -> &'static str {
        match self {
            ExitCode::Success => "success",
            ExitCode::PartitionFailure => "partition-failure",
            ExitCode::BootFailure => "boot-failure",
            ExitCode::HypervisorFault => "hypervisor-fault",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for code in ExitCode::ALL {
            assert_eq!(ExitCode::from_code(i32::from(code.code())), Some(code));
        }
        assert_eq!(ExitCode::from_code(1), None, "QEMU's own error code is not ours");
        let mut seen = [false; 256];
        for code in ExitCode::ALL {
            assert!(!seen[code.code() as usize]);
            seen[code.code() as usize] = true;
        }
    }
}
