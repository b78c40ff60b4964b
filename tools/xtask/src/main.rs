//! `cargo xtask`: Bulkhead's host tool.
//!
//! - `setup`: checks for QEMU >= 10, the UEFI firmware, the Rust targets and
//!   `llvm-objcopy`, and installs whatever is missing;
//! - `build`: builds the hypervisor, the UEFI loader and the test guests,
//!   compiles a configuration and assembles an ESP folder;
//! - `run`: builds, then boots the ESP under QEMU with the serial console on
//!   the terminal;
//! - `test`: host unit tests, one build, then every integration scenario
//!   under QEMU, ending with `N passed, N failed`;
//! - `config check`: validates a configuration file;
//! - `linux-direct`: boots a Debian arm64 kernel with the test initramfs
//!   directly under QEMU (no hypervisor), the Linux guest's baseline.
//!
//! `build`, `run` and `test` run the setup check first.

#![forbid(unsafe_code)]

mod apt;
mod bench;
mod build;
mod config;
mod cpio;
mod esp;
// Not wired into `run`/`test` yet (issue 7): the GPU scenarios that need it come next.
#[allow(dead_code)]
mod gpu_model;
mod initramfs;
mod kernel_image;
mod linux;
mod linux_direct;
mod paths;
mod run;
mod setup;
mod test;
mod unit;

use anyhow::Result;
use bulkhead_harness::Arch;
use clap::{Args, Parser, Subcommand};
use paths::Workspace;
use std::path::PathBuf;
use std::process::ExitCode;

/// Bulkhead's build, run and test tool.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check for QEMU, firmware and Rust targets; install what is missing.
    Setup,
    /// Build the images and assemble an ESP folder under target/xtask/.
    Build(BuildArgs),
    /// Build, then boot the ESP under QEMU with serial on the terminal.
    Run(BuildArgs),
    /// Run host unit tests and every integration scenario under QEMU.
    Test(TestArgs),
    /// Configuration file commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the benchmarks (figures and ratios, not pass/fail).
    Bench(TargetArgs),
    /// Boot a Debian arm64 kernel and the test initramfs directly under
    /// QEMU, without the hypervisor (fetches them into target/xtask/).
    LinuxDirect(linux_direct::LinuxDirectArgs),
}

/// Options shared by `build` and `run`.
#[derive(Args)]
struct BuildArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Configuration TOML to compile into the ESP [default:
    /// configs/qemu-virt-demo.toml; configs/qemu-q35.toml on x86_64].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Boot arguments for the hypervisor (written to bulkhead/bootargs.txt).
    #[arg(long, value_name = "TEXT")]
    bootargs: Option<String>,
    /// `run` only: attach the GPU model (tools/gpu-model) as an ivshmem-doorbell device.
    #[arg(long)]
    gpu: bool,
}

/// Architecture and profile.
#[derive(Args, Clone, Copy)]
struct TargetArgs {
    /// Target architecture: aarch64 or x86_64.
    #[arg(long, default_value = "aarch64")]
    arch: Arch,
    /// Build the debug profile instead of release.
    #[arg(long)]
    debug: bool,
}

#[derive(Args)]
struct TestArgs {
    /// Run only this architecture's scenarios (default: aarch64, then x86_64).
    #[arg(long)]
    arch: Option<Arch>,
    /// Build the debug profile instead of release.
    #[arg(long)]
    debug: bool,
    /// Skip the host unit tests.
    #[arg(long)]
    no_unit: bool,
    /// Run only the scenarios whose name contains this text.
    filter: Option<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file; print every problem as
    /// `FILE:LINE: partition 'NAME', field 'FIELD': message`, or a summary.
    Check {
        /// The configuration TOML.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    let ws = Workspace::locate()?;
    match cli.command {
        Command::Setup => {
            setup::ensure(&ws, setup::Verbosity::Report)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Build(args) => {
            let options = build_options(&args.target)?;
            setup::ensure(&ws, setup::Verbosity::Quiet)?;
            let config_file = args.config_file();
            let compiled = config::compile(
                &ws.resolve(&config_file),
                &config_file.display().to_string(),
            )?;
            let artifacts = build::build_images(&ws, &options)?;
            let spec = esp::EspSpec::for_config(&config_file, &compiled, args.bootargs.as_deref());
            let dir = esp::assemble(&ws, &artifacts, &spec)?;
            println!("ESP ready: {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let options = build_options(&args.target)?;
            setup::ensure(&ws, setup::Verbosity::Quiet)?;
            run::run(&ws, &options, &args.config_file(), args.bootargs.as_deref(), args.gpu)
        }
        Command::Bench(target) => {
            let options = build_options(&target)?;
            setup::ensure(&ws, setup::Verbosity::Quiet)?;
            bench::bench(&ws, &options)
        }
        Command::Test(args) => {
            let arches: Vec<Arch> = match args.arch {
                Some(arch) => vec![arch],
                None => Arch::ALL.to_vec(),
            };
            let profile = build::Profile::from_debug(args.debug);
            let filter = args.filter.unwrap_or_default();
            test::test(&ws, &arches, profile, &filter, !args.no_unit)
        }
        Command::LinuxDirect(args) => {
            setup::ensure(&ws, setup::Verbosity::Quiet)?;
            linux_direct::linux_direct(&ws, &args)
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let compiled = config::compile(&ws.resolve(&file), &file.display().to_string())?;
            println!(
                "{}: ok: {} ({}-byte blob)",
                file.display(),
                config::summary(&compiled.config),
                compiled.blob.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

impl BuildArgs {
    /// `--config`, or the architecture's default configuration.
    fn config_file(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(|| {
            PathBuf::from(match self.target.arch {
                Arch::Aarch64 => paths::DEFAULT_CONFIG,
                Arch::X86_64 => paths::DEFAULT_CONFIG_X86_64,
            })
        })
    }
}

/// Turns the command-line target options into build options.
fn build_options(target: &TargetArgs) -> Result<build::BuildOptions> {
    Ok(build::BuildOptions {
        arch: target.arch,
        profile: build::Profile::from_debug(target.debug),
    })
}
