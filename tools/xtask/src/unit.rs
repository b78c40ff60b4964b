//! The host unit tests: `cargo test` at the workspace root.
//!
//! The workspace's default members are the crates that build for the host,
//! so plain `cargo test` runs exactly those (`--no-fail-fast`: one failing
//! crate must not hide the others' results). The test guests' crate is not
//! one (its programs build only for bare metal), but its library's pure
//! parts (command builders, pixel rules) are tested on the host too, by a
//! second run with `--lib`. Their output is passed through and the
//! `test result:` lines are added up.

use crate::paths::Workspace;
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

/// What the host unit tests came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed.
    pub failed: usize,
}

/// The passed and failed counts of a `test result: ok. N passed; M failed; …` line.
pub fn parse_result_line(line: &str) -> Option<Counts> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (_, counts) = rest.split_once(". ")?;
    let mut result = Counts::default();
    for part in counts.split(';') {
        let mut words = part.split_whitespace();
        let (Some(number), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(number) = number.parse::<usize>() else {
            continue;
        };
        match what {
            "passed" => result.passed = number,
            "failed" => result.failed = number,
            _ => {}
        }
    }
    Some(result)
}

/// The `cargo` invocations of the host unit tests.
pub const HOST_TEST_RUNS: [&[&str]; 2] = [
    &["test", "--no-fail-fast"],
    &["test", "--no-fail-fast", "-p", "bulkhead-test-guests", "--lib"],
];

/// Runs each of [`HOST_TEST_RUNS`] at the root; a cargo failure with no
/// failed test (a build error, a crashed test binary) counts as one failure.
///
/// # Errors
/// When cargo cannot be started.
pub fn run_host_tests(ws: &Workspace) -> Result<Counts> {
    let mut total = Counts::default();
    for args in HOST_TEST_RUNS {
        let counts = run_cargo_test(ws, args)?;
        total.passed += counts.passed;
        total.failed += counts.failed;
    }
    Ok(total)
}

fn run_cargo_test(ws: &Workspace, args: &[&str]) -> Result<Counts> {
    let shown = args.join(" ");
    println!("xtask: cargo {shown} (host unit tests)");
    let mut child = ws
        .cargo()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running `cargo {shown}`"))?;
    let stdout = child.stdout.take().context("cargo test's stdout")?;
    let mut total = Counts::default();
    let mut out = std::io::stdout();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let _ = writeln!(out, "{line}");
        if let Some(counts) = parse_result_line(&line) {
            total.passed += counts.passed;
            total.failed += counts.failed;
        }
    }
    let status = child.wait()?;
    if !status.success() && total.failed == 0 {
        println!("FAIL host unit tests: `cargo {shown}` failed with {status}");
        total.failed = 1;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_give_passed_and_failed() {
        let ok = "test result: ok. 17 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.30s";
        assert_eq!(
            parse_result_line(ok),
            Some(Counts {
                passed: 17,
                failed: 0
            })
        );
        let bad = "test result: FAILED. 3 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out";
        assert_eq!(
            parse_result_line(bad),
            Some(Counts {
                passed: 3,
                failed: 2
            })
        );
        assert_eq!(parse_result_line("running 3 tests"), None);
        assert_eq!(parse_result_line("test a::b ... ok"), None);
    }
}
