//! What an integration scenario expects, and how a run is judged.
//!
//! Judging is a pure function of the scenario, how the run ended and the
//! captured log, so it is unit-tested here without QEMU.

use crate::qemu::Arch;
use crate::ram::RamCheck;
use crate::runner::Ending;
use bulkhead_abi::exit::ExitCode;
use std::time::Duration;

/// One integration test: a configuration booted under QEMU and what its
/// serial log and exit code must show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Unique name: used for the filter, the ESP folder and the log file.
    pub name: &'static str,
    /// The machine it boots on: arm64 `virt` or x86_64 `q35`.
    pub arch: Arch,
    /// Configuration TOML, relative to the workspace root.
    pub config: &'static str,
    /// Text for `bulkhead/bootargs.txt`, if any.
    pub bootargs: Option<&'static str>,
    /// Number of CPUs QEMU emulates.
    pub smp: u32,
    /// Hard limit on the run; reaching it is a failure.
    pub timeout: Duration,
    /// The exit code QEMU must end with; `None` for a scenario that is
    /// stopped early by `stop_on` (QEMU is killed, so it has no exit code).
    pub expect_exit: Option<ExitCode>,
    /// Kill QEMU shortly after a line containing this text appears (for runs
    /// that would otherwise never end, e.g. firmware back in its boot menu).
    pub stop_on: Option<&'static str>,
    /// Texts that must appear, in this order (each a substring of a line;
    /// several may share one line).
    pub expect: &'static [&'static str],
    /// Texts that must appear somewhere, in any order (output that reaches
    /// the log through another stream, e.g. semihosting against the UART).
    pub expect_anywhere: &'static [&'static str],
    /// Texts that must not appear anywhere.
    pub forbid: &'static [&'static str],
    /// Leave `bulkhead/images/` empty on the ESP (tests the loader's error path).
    pub omit_images: bool,
    /// Files on the ESP replaced with these bytes after assembly: pairs of
    /// an ESP path from `bulkhead_abi::boot` and the new contents (tests the
    /// loader's handling of malformed files).
    pub overwrite: &'static [(&'static str, &'static [u8])],
    /// Compile the configuration without the build-time validation, to test
    /// that the hypervisor validates it again at boot.
    pub skip_build_validation: bool,
    /// Type this on the console once a line containing the trigger appears:
    /// `(trigger, text)`.
    pub input: Option<(&'static str, &'static str)>,
    /// Attach the GPU model (`tools/gpu-model`) as an `ivshmem-doorbell`
    /// device, with guest RAM in a shared file the model maps; the runner
    /// starts the model before QEMU and stops it afterwards.
    pub gpu: bool,
    /// Regions of guest RAM checked after QEMU exits, when the log passed
    /// (only with `gpu`, whose RAM is a file; see [`crate::ram`]).
    pub ram_checks: &'static [RamCheck],
    /// Run QEMU with `-icount shift=0,align=off,sleep=off` (one virtual
    /// counter tick per instruction: deterministic benchmark figures).
    pub icount: bool,
}

impl Scenario {
    /// Defaults to build entries from with `..Scenario::DEFAULT`: arm64, the
    /// demo two bare-metal partitions, one CPU, 60 s, exit code 0, nothing expected.
    pub const DEFAULT: Scenario = Scenario {
        name: "",
        arch: Arch::Aarch64,
        config: "tests/configs/two-partitions.toml",
        bootargs: None,
        smp: 1,
        timeout: Duration::from_secs(60),
        expect_exit: Some(ExitCode::Success),
        stop_on: None,
        expect: &[],
        expect_anywhere: &[],
        forbid: &[],
        omit_images: false,
        overwrite: &[],
        skip_build_validation: false,
        input: None,
        gpu: false,
        ram_checks: &[],
        icount: false,
    };

    /// Whether `filter` selects this scenario (substring of the name; the
    /// empty filter selects all).
    pub fn matches(&self, filter: &str) -> bool {
        self.name.contains(filter)
    }
}

/// The judgement of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything the scenario expects happened.
    Pass,
    /// Something did not; the text says what, for the report line.
    Fail(String),
}

impl Verdict {
    /// Whether this is [`Verdict::Pass`].
    pub fn passed(&self) -> bool {
        *self == Verdict::Pass
    }
}

/// Judges a run: the exit matches, every expected text appears in order, and
/// no forbidden text appears. A timeout always fails.
pub fn judge(scenario: &Scenario, ending: &Ending, lines: &[String]) -> Verdict {
    if let Some(reason) = check_ending(scenario, ending) {
        return Verdict::Fail(reason);
    }
    if let Some(reason) = check_expected(scenario.expect, lines) {
        return Verdict::Fail(reason);
    }
    for wanted in scenario.expect_anywhere {
        if !lines.iter().any(|line| line.contains(wanted)) {
            return Verdict::Fail(format!("missing '{wanted}'"));
        }
    }
    for forbidden in scenario.forbid {
        if let Some(index) = lines.iter().position(|line| line.contains(forbidden)) {
            return Verdict::Fail(format!(
                "forbidden '{forbidden}' appeared (log line {})",
                index + 1
            ));
        }
    }
    Verdict::Pass
}

/// Describes an exit code for reports: `3 (partition-failure)`.
pub fn describe_code(code: i32) -> String {
    match ExitCode::from_code(code) {
        Some(known) => format!("{code} ({})", known.name()),
        None => code.to_string(),
    }
}

fn check_ending(scenario: &Scenario, ending: &Ending) -> Option<String> {
    match (ending, scenario.expect_exit, scenario.stop_on) {
        (Ending::TimedOut(limit), _, _) => Some(format!("timed out after {} s", limit.as_secs())),
        (Ending::Exited(None), _, _) => Some("QEMU was killed by a signal".into()),
        (Ending::Exited(Some(code)), Some(expected), _) => (*code != i32::from(expected.code()))
            .then(|| {
                format!(
                    "exit code {}, expected {}",
                    describe_code(*code),
                    describe_code(i32::from(expected.code()))
                )
            }),
        (Ending::Exited(Some(code)), None, Some(stop)) => Some(format!(
            "QEMU exited with code {} before '{stop}' appeared",
            describe_code(*code)
        )),
        (Ending::Exited(Some(code)), None, None) => Some(format!(
            "QEMU exited with code {}, but the scenario expects no exit",
            describe_code(*code)
        )),
        (Ending::StoppedEarly, None, _) => None,
        (Ending::StoppedEarly, Some(expected), _) => Some(format!(
            "stopped early on the stop line, expected exit code {}",
            describe_code(i32::from(expected.code()))
        )),
    }
}

/// Finds each expected text after the end of the previous match (possibly
/// later on the same line); names the first one that is missing.
fn check_expected(expect: &[&str], lines: &[String]) -> Option<String> {
    let mut line = 0;
    let mut column = 0;
    for (index, wanted) in expect.iter().enumerate() {
        let found = lines.iter().enumerate().skip(line).find_map(|(i, text)| {
            let from = if i == line { column } else { 0 };
            text.get(from..)
                .and_then(|rest| rest.find(wanted))
                .map(|at| (i, from + at + wanted.len()))
        });
        match found {
            Some((i, end)) => (line, column) = (i, end),
            None if index == 0 => return Some(format!("missing '{wanted}'")),
            None => {
                let seen_earlier = lines.iter().any(|text| text.contains(wanted));
                let previous = expect[index - 1];
                return Some(if seen_earlier {
                    format!("'{wanted}' appeared, but not after '{previous}'")
                } else {
                    format!("missing '{wanted}' (after '{previous}')")
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: Scenario = Scenario {
        name: "hello",
        expect: &[
            "Bulkhead",
            "partition hello: started",
            "all 1 partitions passed",
        ],
        forbid: &["panic"],
        ..Scenario::DEFAULT
    };

    const STOPPED: Scenario = Scenario {
        name: "stopped",
        expect_exit: None,
        stop_on: Some("boot: error"),
        expect: &["cannot read"],
        ..Scenario::DEFAULT
    };

    fn log(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    const GOOD_LOG: &str =
        "UEFI\nBulkhead 0.1\npartition hello: started\n[hello] hi\nall 1 partitions passed\n";

    #[test]
    fn texts_expected_anywhere_need_no_order_but_must_appear() {
        let scenario = Scenario { name: "any", expect_anywhere: &["[hello] hi", "UEFI"], ..HELLO };
        assert_eq!(judge(&scenario, &Ending::Exited(Some(0)), &log(GOOD_LOG)), Verdict::Pass);
        let missing = Scenario { expect_anywhere: &["nowhere"], ..scenario };
        assert_eq!(
            judge(&missing, &Ending::Exited(Some(0)), &log(GOOD_LOG)),
            Verdict::Fail("missing 'nowhere'".into())
        );
    }

    #[test]
    fn a_good_run_passes() {
        assert_eq!(
            judge(&HELLO, &Ending::Exited(Some(0)), &log(GOOD_LOG)),
            Verdict::Pass
        );
    }

    #[test]
    fn a_wrong_exit_code_fails_with_both_codes_named() {
        let verdict = judge(&HELLO, &Ending::Exited(Some(3)), &log(GOOD_LOG));
        assert_eq!(
            verdict,
            Verdict::Fail("exit code 3 (partition-failure), expected 0 (success)".into())
        );
        let verdict = judge(&HELLO, &Ending::Exited(Some(1)), &log(GOOD_LOG));
        assert_eq!(
            verdict,
            Verdict::Fail("exit code 1, expected 0 (success)".into())
        );
    }

    #[test]
    fn a_timeout_always_fails_even_with_a_perfect_log() {
        let verdict = judge(
            &HELLO,
            &Ending::TimedOut(Duration::from_secs(60)),
            &log(GOOD_LOG),
        );
        assert_eq!(verdict, Verdict::Fail("timed out after 60 s".into()));
        let verdict = judge(
            &STOPPED,
            &Ending::TimedOut(Duration::from_secs(60)),
            &log("boot: error cannot read"),
        );
        assert_eq!(verdict, Verdict::Fail("timed out after 60 s".into()));
    }

    #[test]
    fn expected_lines_must_appear_in_order() {
        let swapped = "partition hello: started\nBulkhead\nall 1 partitions passed\n";
        assert_eq!(
            judge(&HELLO, &Ending::Exited(Some(0)), &log(swapped)),
            Verdict::Fail("'partition hello: started' appeared, but not after 'Bulkhead'".into())
        );
        let missing = "Bulkhead\npartition hello: started\n";
        assert_eq!(
            judge(&HELLO, &Ending::Exited(Some(0)), &log(missing)),
            Verdict::Fail(
                "missing 'all 1 partitions passed' (after 'partition hello: started')".into()
            )
        );
        assert_eq!(
            judge(&HELLO, &Ending::Exited(Some(0)), &[]),
            Verdict::Fail("missing 'Bulkhead'".into())
        );
    }

    #[test]
    fn several_expected_texts_may_share_a_line_but_not_overlap_backwards() {
        let scenario = Scenario {
            expect: &["stage-2 fault", "IPA 0x1000", "stopped"],
            ..HELLO
        };
        let one_line = "x stage-2 fault in partition 'p' at IPA 0x1000 -> stopped\n";
        assert_eq!(
            judge(&scenario, &Ending::Exited(Some(0)), &log(one_line)),
            Verdict::Pass
        );
        let backwards = "IPA 0x1000 then stage-2 fault\nstopped\n";
        assert!(!judge(&scenario, &Ending::Exited(Some(0)), &log(backwards)).passed());
        let repeated = Scenario {
            expect: &["ab", "ab"],
            ..HELLO
        };
        assert!(!judge(&repeated, &Ending::Exited(Some(0)), &log("xab\n")).passed());
        assert!(judge(&repeated, &Ending::Exited(Some(0)), &log("abab\n")).passed());
    }

    #[test]
    fn a_forbidden_line_fails_and_is_located() {
        let text = format!("{GOOD_LOG}kernel panic\n");
        assert_eq!(
            judge(&HELLO, &Ending::Exited(Some(0)), &log(&text)),
            Verdict::Fail("forbidden 'panic' appeared (log line 6)".into())
        );
    }

    #[test]
    fn a_stop_line_scenario_must_be_stopped_not_exit() {
        let text = log("bulkhead boot: error: cannot read \\bulkhead\\images\\x");
        assert_eq!(judge(&STOPPED, &Ending::StoppedEarly, &text), Verdict::Pass);
        assert_eq!(
            judge(&STOPPED, &Ending::Exited(Some(4)), &text),
            Verdict::Fail(
                "QEMU exited with code 4 (boot-failure) before 'boot: error' appeared".into()
            )
        );
        assert!(!judge(&HELLO, &Ending::StoppedEarly, &log(GOOD_LOG)).passed());
        assert!(!judge(&HELLO, &Ending::Exited(None), &log(GOOD_LOG)).passed());
    }

    #[test]
    fn filters_are_substrings_of_the_name() {
        assert!(HELLO.matches(""));
        assert!(HELLO.matches("ell"));
        assert!(!HELLO.matches("stage2"));
    }
}
