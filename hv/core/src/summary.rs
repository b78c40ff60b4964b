//! The end-of-run summary and the exit code it implies.

use crate::partition::{Partition, RunState, StopReason, Verdict};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_abi::exit::ExitCode;

/// How one partition ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped after reporting success.
    Passed,
    /// Reported failure.
    Failed {
        /// Failure code.
        code: u64,
        /// Detail value.
        detail: u64,
    },
    /// Stopped by the hypervisor for a fault.
    Faulted(String),
    /// Stopped without reporting a verdict, or still running.
    NoVerdict,
    /// Never started.
    NotStarted(String),
}

impl Outcome {
    /// The outcome of `partition` as it stands.
    pub fn of(partition: &Partition) -> Outcome {
        match (&partition.state, partition.verdict) {
            (RunState::NotStarted(reason), _) => Outcome::NotStarted(reason.clone()),
            (RunState::Stopped(StopReason::Fault(what)), _) => Outcome::Faulted(what.clone()),
            (RunState::Stopped(StopReason::Requested), Verdict::Passed) => Outcome::Passed,
            (_, Verdict::Failed { code, detail }) => Outcome::Failed { code, detail },
            _ => Outcome::NoVerdict,
        }
    }

    /// One summary line for partition `name`.
    pub fn line(&self, name: &str) -> String {
        match self {
            Outcome::Passed => format!("partition {name}: passed"),
            Outcome::Failed { code, detail } => format!("partition {name}: failed (code {code}, detail {detail:#x})"),
            Outcome::Faulted(what) => format!("partition {name}: stopped by fault: {what}"),
            Outcome::NoVerdict => format!("partition {name}: stopped without a verdict"),
            Outcome::NotStarted(why) => format!("partition {name}: not started: {why}"),
        }
    }
}

/// The summary lines and the exit code for a finished run.
pub fn summarize<'a>(partitions: impl IntoIterator<Item = &'a Partition>) -> (Vec<String>, ExitCode) {
    let partitions: Vec<&Partition> = partitions.into_iter().collect();
    let outcomes: Vec<Outcome> = partitions.iter().map(|p| Outcome::of(p)).collect();
    let mut lines: Vec<String> = partitions.iter().zip(&outcomes).map(|(p, o)| o.line(&p.name)).collect();
    let total = outcomes.len();
    let passed = outcomes.iter().filter(|o| **o == Outcome::Passed).count();
    let started = outcomes.iter().filter(|o| !matches!(o, Outcome::NotStarted(_))).count();
    let code = if total > 0 && passed == total {
        lines.push(format!("all {total} partitions passed"));
        ExitCode::Success
    } else if started == 0 {
        lines.push(format!("no partition could be started (of {total})"));
        ExitCode::BootFailure
    } else {
        lines.push(format!("{} of {total} partitions did not pass", total - passed));
        ExitCode::PartitionFailure
    };
    (lines, code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::tests::{Lines, test_partition};

    fn stopped(verdict: Verdict, reason: StopReason) -> Partition {
        let mut p = test_partition();
        p.verdict = verdict;
        p.stop(reason, &mut Lines::default());
        p
    }

    #[test]
    fn all_passed_is_success() {
        let ps = [stopped(Verdict::Passed, StopReason::Requested), stopped(Verdict::Passed, StopReason::Requested)];
        let (lines, code) = summarize(&ps);
        assert_eq!(code, ExitCode::Success);
        assert_eq!(lines, ["partition p: passed", "partition p: passed", "all 2 partitions passed"]);
    }

    #[test]
    fn a_fault_after_a_pass_is_still_a_failure() {
        let ps = [
            stopped(Verdict::Passed, StopReason::Fault("stage-2 fault at IPA 0x100000000".into())),
            stopped(Verdict::Passed, StopReason::Requested),
        ];
        let (lines, code) = summarize(&ps);
        assert_eq!(code, ExitCode::PartitionFailure);
        assert_eq!(lines[0], "partition p: stopped by fault: stage-2 fault at IPA 0x100000000");
        assert_eq!(lines[2], "1 of 2 partitions did not pass");
    }

    #[test]
    fn failures_missing_verdicts_and_unstarted_partitions() {
        let failed = stopped(Verdict::Failed { code: 2, detail: 0x10 }, StopReason::Requested);
        assert_eq!(Outcome::of(&failed).line("x"), "partition x: failed (code 2, detail 0x10)");
        let silent = stopped(Verdict::None, StopReason::Requested);
        assert_eq!(Outcome::of(&silent), Outcome::NoVerdict);
        let mut unstarted = test_partition();
        unstarted.state = RunState::NotStarted("bad image".into());
        let (lines, code) = summarize(core::slice::from_ref(&unstarted));
        assert_eq!(code, ExitCode::BootFailure);
        assert_eq!(lines[0], "partition p: not started: bad image");
        assert_eq!(summarize(&[] as &[Partition]).1, ExitCode::BootFailure);
    }
}
