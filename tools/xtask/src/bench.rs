//! `cargo xtask bench`: benchmarks, not tests. They print figures and
//! ratios against a baseline measured in the same run; nothing here passes
//! or fails on a number.
//!
//! 1. Stage-2 table build on the host (`arch/aarch64/examples/stage2-bench.rs`):
//!    table pages per GiB and build time, against 4 KiB-only tables.
//! 2. Guest-visible costs under QEMU with `-icount shift=0,align=off,sleep=off`
//!    (one virtual counter tick per instruction, DESIGN.md §8): the
//!    `bench-hypercall` guest measures a null hypercall round trip against
//!    the same loop without the call.

use crate::build::{self, BuildOptions};
use crate::config;
use crate::esp::{self, EspSpec};
use crate::paths::Workspace;
use anyhow::{Context, Result, bail};
use bulkhead_harness::QemuCommand;
use bulkhead_harness::runner::{self, Ending, RunOptions};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

/// The configuration of the in-partition benchmarks.
const BENCH_CONFIG: &str = "tests/configs/bench.toml";
/// QEMU options that make the virtual counter count instructions.
const ICOUNT: [&str; 2] = ["-icount", "shift=0,align=off,sleep=off"];

/// Runs every benchmark and prints the figures.
///
/// # Errors
/// When a benchmark cannot be built or run.
pub fn bench(ws: &Workspace, options: &BuildOptions) -> Result<ExitCode> {
    println!("== stage-2 table build (host) ==");
    let status = Command::new("cargo")
        .current_dir(&ws.root)
        .args(["run", "--quiet", "--release", "-p", "bulkhead-arch-aarch64", "--example", "stage2-bench"])
        .status()
        .context("running the stage-2 benchmark")?;
    if !status.success() {
        bail!("the stage-2 benchmark failed ({status})");
    }

    println!("\n== guest-visible costs (QEMU TCG, -icount shift=0) ==");
    let compiled = config::compile(&ws.root.join(BENCH_CONFIG), BENCH_CONFIG)?;
    let artifacts = build::build_images(ws, options)?;
    let spec = EspSpec::for_config(Path::new(BENCH_CONFIG), &compiled, None);
    let esp_dir = esp::assemble(ws, &artifacts, &spec)?;
    let mut qemu = QemuCommand::for_arch(options.arch, &esp_dir, 1)
        .with_context(|| format!("{} is not supported yet", options.arch))?;
    qemu.args.extend(ICOUNT.iter().map(Into::into));
    let log = ws.log_path("bench");
    let run_options =
        RunOptions { timeout: Some(Duration::from_secs(300)), log_path: Some(&log), ..RunOptions::default() };
    let outcome = runner::run(&qemu, &run_options)?;
    for line in outcome.lines.iter().filter(|l| l.contains("] bench: ")) {
        println!("{}", line.trim_end());
    }
    match outcome.ending {
        Ending::Exited(Some(0)) => Ok(ExitCode::SUCCESS),
        other => bail!("the benchmark run ended with {other:?} (log: {})", log.display()),
    }
}
