//! `cargo xtask test`: host unit tests, one build per architecture, then
//! the scenarios (arm64 `virt` ones, then x86_64 `q35` ones; `--arch`
//! selects one).
//!
//! Every selected scenario gets its own ESP folder and log, runs under a
//! hard timeout, at most [`MAX_PARALLEL`] at a time, and is reported as it
//! finishes: `PASS name (12.3 s)` or `FAIL name: reason` followed by the end
//! of its log. The last line is `N passed, N failed` (host unit tests plus
//! scenarios); the exit status is non-zero on any failure. A GPU scenario's
//! RAM checks (`bulkhead_harness::ram`) read the model's RAM file after QEMU
//! exits, before the model stops.

use crate::build::{self, Artifacts, BuildOptions, Profile};
use crate::config;
use crate::gpu_model::{self, GpuModel};
use crate::esp::{self, EspSpec};
use crate::paths::Workspace;
use crate::run::{cpus_needed, install_interrupt_handler};
use crate::setup;
use crate::unit;
use anyhow::{Context, Result};
use bulkhead_harness::qemu::{ICOUNT, copy_ovmf_vars, hypervisor_exit_code};
use bulkhead_harness::runner::{self, Ending, RunOptions};
use bulkhead_harness::{Arch, QemuCommand, SCENARIOS, Scenario, Verdict, check_ram, judge};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// QEMU instances at once (the test machines have two cores).
pub const MAX_PARALLEL: usize = 2;

/// Log lines shown under a failed scenario.
const TAIL_LINES: usize = 40;

/// Running totals.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
}

impl Tally {
    fn fail(&mut self, name: &str, reason: &str) {
        println!("FAIL {name}: {reason}");
        self.failed += 1;
    }
}

/// A scenario ready to boot.
struct Job {
    scenario: &'static Scenario,
    arch: Arch,
    qemu: QemuCommand,
    log: PathBuf,
    /// The GPU model to start before QEMU, and its binary.
    gpu: Option<(GpuModel, PathBuf)>,
}

/// What one job came to.
struct Finished {
    scenario: &'static Scenario,
    verdict: Verdict,
    elapsed: Duration,
    lines: Vec<String>,
    log: PathBuf,
}

/// Runs the host unit tests (unless `unit` is false) and every scenario of
/// `arches` whose name contains `filter`, building the images once per
/// architecture that has a selected scenario.
///
/// # Errors
/// When setup fails; test failures are reported and give a failure status.
pub fn test(ws: &Workspace, arches: &[Arch], profile: Profile, filter: &str, unit: bool) -> Result<ExitCode> {
    let selected: Vec<&'static Scenario> = SCENARIOS
        .iter()
        .filter(|s| arches.contains(&s.arch) && s.matches(filter))
        .collect();
    if selected.is_empty() {
        println!("xtask: no scenario name contains '{filter}'");
    }
    setup::ensure(ws, setup::Verbosity::Quiet)?;
    install_interrupt_handler();
    let mut tally = Tally::default();
    if unit {
        let counts = unit::run_host_tests(ws)?;
        println!(
            "host unit tests: {} passed, {} failed",
            counts.passed, counts.failed
        );
        tally.passed += counts.passed;
        tally.failed += counts.failed;
    }
    let gpu_model = if selected.iter().any(|s| s.gpu) {
        match gpu_model::build(ws) {
            Ok(binary) => Some(binary),
            Err(err) => {
                println!("xtask: {err:#}");
                None
            }
        }
    } else {
        None
    };
    let mut jobs = Vec::new();
    for &arch in arches {
        let of_arch: Vec<&'static Scenario> = selected.iter().copied().filter(|s| s.arch == arch).collect();
        if of_arch.is_empty() {
            continue;
        }
        match build::build_images(ws, &BuildOptions { arch, profile }) {
            Ok(artifacts) => jobs.extend(prepare(ws, &artifacts, &of_arch, gpu_model.as_deref(), &mut tally)),
            Err(err) => {
                println!("xtask: {arch} build failed: {err:#}");
                for scenario in of_arch {
                    tally.fail(scenario.name, "not run: the build failed");
                }
            }
        }
    }
    run_jobs(jobs, &mut tally);
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Compiles each scenario's configuration and assembles its ESP; a scenario
/// that cannot be prepared fails here with the reason.
fn prepare(
    ws: &Workspace,
    artifacts: &Artifacts,
    selected: &[&'static Scenario],
    gpu_model: Option<&Path>,
    tally: &mut Tally,
) -> Vec<Job> {
    let mut jobs = Vec::new();
    for &scenario in selected {
        match prepare_one(ws, artifacts, scenario, gpu_model) {
            Ok(job) => jobs.push(job),
            Err(err) => tally.fail(scenario.name, &format!("{err:#}")),
        }
    }
    jobs
}

fn prepare_one(ws: &Workspace, artifacts: &Artifacts, scenario: &'static Scenario, gpu_model: Option<&Path>) -> Result<Job> {
    let compiled = if scenario.skip_build_validation {
        config::compile_unchecked(&ws.root.join(scenario.config), scenario.config)?
    } else {
        config::compile(&ws.root.join(scenario.config), scenario.config)?
    };
    let spec = EspSpec {
        name: scenario.name.to_string(),
        config_shown: scenario.config.to_string(),
        compiled: &compiled,
        bootargs: scenario.bootargs,
        omit_images: scenario.omit_images,
        overwrite: scenario.overwrite,
    };
    let esp_dir = esp::assemble(ws, artifacts, &spec)?;
    let smp = scenario.smp.max(cpus_needed(&compiled.config));
    let mut qemu = QemuCommand::for_arch(artifacts.arch, &esp_dir, smp)
        .with_context(|| format!("{} is not supported yet", artifacts.arch))?;
    if scenario.icount {
        qemu.args.extend(ICOUNT.iter().map(Into::into));
    }
    if artifacts.arch == Arch::X86_64 {
        copy_ovmf_vars(&esp_dir).context("copying the OVMF variable store")?;
    }
    let gpu = if scenario.gpu {
        let binary = gpu_model.context("the GPU model was not built")?;
        let model = GpuModel::for_run(ws, artifacts.arch, scenario.name);
        qemu.args.extend(model.qemu_args());
        Some((model, binary.to_path_buf()))
    } else {
        None
    };
    Ok(Job {
        scenario,
        arch: artifacts.arch,
        qemu,
        log: ws.log_path(scenario.name),
        gpu,
    })
}

/// Boots the jobs, [`MAX_PARALLEL`] at a time, reporting each as it ends.
fn run_jobs(jobs: Vec<Job>, tally: &mut Tally) {
    if jobs.is_empty() {
        return;
    }
    let workers = MAX_PARALLEL.min(jobs.len());
    println!(
        "xtask: running {} scenarios under QEMU, {workers} at a time",
        jobs.len()
    );
    let queue = Arc::new(Mutex::new(VecDeque::from(jobs)));
    let (sender, receiver) = mpsc::channel();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let queue = Arc::clone(&queue);
            let sender = sender.clone();
            thread::spawn(move || {
                loop {
                    let job = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some(job) = job else { break };
                    if sender.send(run_job(job)).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    drop(sender);
    for finished in receiver {
        report(&finished, tally);
    }
    for handle in handles {
        let _ = handle.join();
    }
}

fn run_job(job: Job) -> Finished {
    let scenario = job.scenario;
    let options = RunOptions {
        timeout: Some(scenario.timeout),
        stop_on: scenario.stop_on,
        log_path: Some(&job.log),
        input: scenario.input.map(|(trigger, text)| (trigger, text.as_bytes())),
        ..RunOptions::default()
    };
    // The model first: it creates the RAM file and listens before QEMU connects.
    let model = match job.gpu.as_ref().map(|(model, binary)| model.start_program(binary)).transpose() {
        Ok(model) => model,
        Err(err) => {
            return Finished {
                scenario,
                verdict: Verdict::Fail(format!("cannot start the GPU model: {err:#}")),
                elapsed: Duration::ZERO,
                lines: Vec::new(),
                log: job.log,
            };
        }
    };
    let result = runner::run(&job.qemu, &options);
    // Judged before the model stops: RAM checks read its RAM file, which
    // QEMU (now exited) left with every byte the partitions wrote.
    let judged = result.map(|outcome| {
        let mut verdict = judge(scenario, &hypervisor_ending(job.arch, outcome.ending.clone(), &outcome.lines), &outcome.lines);
        if verdict.passed() && !scenario.ram_checks.is_empty() {
            verdict = match &job.gpu {
                Some((gpu, _)) => check_ram(scenario.ram_checks, &gpu.ram, gpu.ram_base, &outcome.lines),
                None => Verdict::Fail("RAM checks need the GPU model's RAM file (`gpu: true`)".into()),
            };
        }
        (outcome, verdict)
    });
    if let Some(model) = model {
        model.stop();
    }
    match judged {
        Ok((outcome, verdict)) => Finished {
            scenario,
            verdict,
            elapsed: outcome.elapsed,
            lines: outcome.lines,
            log: job.log,
        },
        Err(err) => Finished {
            scenario,
            verdict: Verdict::Fail(format!("cannot run QEMU: {err}")),
            elapsed: Duration::ZERO,
            lines: Vec::new(),
            log: job.log,
        },
    }
}

fn report(finished: &Finished, tally: &mut Tally) {
    let name = finished.scenario.name;
    match &finished.verdict {
        Verdict::Pass => {
            println!("PASS {name} ({:.1} s)", finished.elapsed.as_secs_f64());
            tally.passed += 1;
        }
        Verdict::Fail(reason) => {
            tally.fail(name, reason);
            let start = finished.lines.len().saturating_sub(TAIL_LINES);
            println!(
                "    --- last {} lines of {} ---",
                finished.lines.len() - start,
                finished.log.display()
            );
            for line in &finished.lines[start..] {
                println!("    | {}", printable(line));
            }
        }
    }
}

/// The ending with QEMU's exit status turned into the hypervisor's exit
/// code (on x86_64, `isa-debug-exit` doubles it and adds one).
fn hypervisor_ending(arch: Arch, ending: Ending, lines: &[String]) -> Ending {
    match ending {
        Ending::Exited(Some(status)) => Ending::Exited(Some(hypervisor_exit_code(arch, status, lines))),
        other => other,
    }
}

/// A log line without terminal escape sequences and control characters, so
/// that firmware screen codes do not garble the report.
pub fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters... final byte in '@'..='~'; other escapes: one more char.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_control_characters_are_dropped() {
        assert_eq!(
            printable("\u{1b}[0m\u{1b}[37m\u{1b}[40mBdsDxe: x\r"),
            "BdsDxe: x"
        );
        assert_eq!(printable("\u{1b}[2J\u{1b}[01;01Hmenu"), "menu");
        assert_eq!(printable("a\tb"), "a\tb");
    }
}
