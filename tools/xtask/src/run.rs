//! `cargo xtask run`: build, then boot the ESP under QEMU on the terminal.
//!
//! With a terminal on stdin QEMU gets the terminal (the firmware menu and
//! Ctrl-A X work) and no timeout applies. Without one (CI, pipes) stdin is
//! null so nothing can wait for input, the output is copied through and
//! saved to `target/xtask/logs/run.log`, and QEMU is killed after
//! [`NON_INTERACTIVE_TIMEOUT`]. Either way the exit code is the
//! hypervisor's `ExitCode`: 0 when every partition passed. On arm64 that is
//! QEMU's status (semihosting); on x86_64 QEMU's status is `(code << 1) | 1`
//! (`isa-debug-exit`) and is mapped back with
//! [`bulkhead_harness::qemu::hypervisor_exit_code`].

use crate::build::{self, BuildOptions};
use crate::config;
use crate::esp::{self, EspSpec};
use crate::gpu_model::GpuModel;
use crate::paths::Workspace;
use anyhow::{Context, Result};
use bulkhead_config::Config;
use bulkhead_harness::qemu::{OVMF_VARS, copy_ovmf_vars, hypervisor_exit_code};
use bulkhead_harness::{Arch, QemuCommand};
use bulkhead_harness::runner::{self, Ending, RunOptions};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Limit on a run whose stdin is not a terminal.
pub const NON_INTERACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// Exit code when the run timed out (as `timeout(1)` uses).
const TIMED_OUT: u8 = 124;

/// Builds, assembles the ESP for `config_file` and boots it.
///
/// # Errors
/// When the build, the configuration or the ESP fails, or QEMU cannot start.
pub fn run(
    ws: &Workspace,
    options: &BuildOptions,
    config_file: &Path,
    bootargs: Option<&str>,
    gpu: bool,
) -> Result<ExitCode> {
    let compiled = config::compile(&ws.resolve(config_file), &config_file.display().to_string())?;
    let artifacts = build::build_images(ws, options)?;
    // A person at a terminal gets the interactive side of the demo: console
    // input goes to a partition, and a Linux partition's init opens a shell.
    let interactive = std::io::stdin().is_terminal();
    let bootargs: Option<String> = match (bootargs, interactive) {
        (Some(text), true) => Some(format!("{text} interactive=1")),
        (None, true) => Some("interactive=1".into()),
        (text, false) => text.map(String::from),
    };
    let spec = EspSpec::for_config(config_file, &compiled, bootargs.as_deref());
    let esp_dir = esp::assemble(ws, &artifacts, &spec)?;
    let smp = cpus_needed(&compiled.config);
    let mut qemu = QemuCommand::for_arch(options.arch, &esp_dir, smp)
        .with_context(|| format!("{} is not supported yet", options.arch))?;
    // The model starts before QEMU and is stopped when `_model` drops.
    let _model = if gpu {
        let model = GpuModel::for_run(ws, options.arch, "run");
        qemu.args.extend(model.qemu_args());
        Some(model.start(ws)?)
    } else {
        None
    };
    if options.arch == Arch::X86_64 {
        copy_ovmf_vars(&esp_dir).with_context(|| format!("copying {OVMF_VARS}"))?;
    }
    println!("xtask: {qemu}");
    if interactive {
        println!("xtask: interactive: console input goes to the partition with the emulated UART; Ctrl-A X quits QEMU");
        let status = qemu
            .to_command()
            .status()
            .with_context(|| format!("starting {}", qemu.program))?;
        // Interactive runs are not captured, so a q35 status of 1 cannot be
        // told from QEMU's own error: it is passed through as 1.
        return Ok(exit_code(status.code().map(|c| hypervisor_exit_code(options.arch, c, &[]))));
    }
    install_interrupt_handler();
    let arch = options.arch;
    let log = ws.log_path("run");
    let options = RunOptions {
        timeout: Some(NON_INTERACTIVE_TIMEOUT),
        log_path: Some(&log),
        echo: true,
        ..RunOptions::default()
    };
    let outcome = runner::run(&qemu, &options)?;
    Ok(match outcome.ending {
        Ending::Exited(code) => exit_code(code.map(|c| hypervisor_exit_code(arch, c, &outcome.lines))),
        Ending::TimedOut(limit) => {
            eprintln!(
                "xtask: QEMU timed out after {} s and was killed (log: {})",
                limit.as_secs(),
                log.display()
            );
            ExitCode::from(TIMED_OUT)
        }
        Ending::StoppedEarly => ExitCode::SUCCESS,
    })
}

/// CPUs QEMU must emulate: one past the highest CPU any partition names.
pub fn cpus_needed(config: &Config) -> u32 {
    config
        .partitions
        .iter()
        .flat_map(|p| p.cpus.iter())
        .max()
        .map_or(1, |&cpu| cpu.saturating_add(1))
}

/// QEMU's exit status as ours (a death by signal becomes 1).
fn exit_code(code: Option<i32>) -> ExitCode {
    match code.and_then(|c| u8::try_from(c).ok()) {
        Some(code) => ExitCode::from(code),
        None => ExitCode::FAILURE,
    }
}

/// On Ctrl-C, SIGTERM or SIGHUP, kill the QEMU instances (they run in their own process
/// groups, so the terminal's signal does not reach them) and exit.
pub fn install_interrupt_handler() {
    let result = ctrlc::set_handler(|| {
        runner::kill_all();
        eprintln!("\nxtask: interrupted; QEMU killed");
        std::process::exit(130);
    });
    if let Err(err) = result {
        eprintln!("xtask: warning: cannot handle Ctrl-C ({err}); QEMU may outlive an interrupt");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_needed_covers_the_highest_cpu_named() {
        let text = r#"
[[partition]]
name = "a"
cpus = [0, 3]
image = { file = "a.bin", load = 0 }
[[partition]]
name = "b"
cpus = [1]
image = { file = "b.bin", load = 0 }
"#;
        let config: Config = toml::from_str(text).unwrap();
        assert_eq!(cpus_needed(&config), 4);
        assert_eq!(cpus_needed(&Config::default()), 1);
    }
}
