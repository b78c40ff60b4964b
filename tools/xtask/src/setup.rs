//! `cargo xtask setup`: check for what the build and the QEMU tests need and
//! install only what is missing.
//!
//! System side (needs root): QEMU >= 10 for both architectures and the UEFI
//! firmware, from Debian `bookworm-backports` (DESIGN.md §6). Rust side: the
//! four targets and `llvm-objcopy`, from `rustup toolchain install`, which
//! installs what `rust-toolchain.toml` names.

use crate::apt;
use crate::paths::Workspace;
use anyhow::{Context, Result, bail};
use bulkhead_harness::Arch;
use bulkhead_harness::qemu::{AARCH64_FIRMWARE, OVMF_CODE, OVMF_VARS};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Oldest QEMU major version with SMMUv3 stage 2 (Debian's own 7.2 lacks it).
const QEMU_MIN_MAJOR: u32 = 10;
/// Debian packages that provide the QEMU binaries and the firmware.
const APT_PACKAGES: [&str; 4] = [
    "qemu-system-arm",
    "qemu-system-x86",
    "ovmf",
    "qemu-efi-aarch64",
];
/// Firmware files the QEMU command lines name.
const FIRMWARE: [&str; 3] = [AARCH64_FIRMWARE, OVMF_CODE, OVMF_VARS];

/// Whether to print what is already present.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// One line per item (`cargo xtask setup`).
    Report,
    /// Only what is missing and what gets installed (`build`, `run`, `test`).
    Quiet,
}

/// Checks everything and installs what is missing.
///
/// # Errors
/// When something is missing and cannot be installed (e.g. not root for
/// APT), or is still missing after installing.
pub fn ensure(ws: &Workspace, verbosity: Verbosity) -> Result<()> {
    let system = system_missing(verbosity);
    if !system.is_empty() {
        install_system(&system)?;
        let still = system_missing(Verbosity::Quiet);
        if !still.is_empty() {
            bail!("still missing after installing: {}", still.join("; "));
        }
    }
    let rust = rust_missing(ws, verbosity);
    if !rust.is_empty() {
        println!(
            "setup: missing {}; running `rustup toolchain install`",
            rust.join(", ")
        );
        let status = rustup(ws)
            .args(["toolchain", "install"])
            .status()
            .context("running `rustup toolchain install` (is rustup installed?)")?;
        if !status.success() {
            bail!("`rustup toolchain install` failed with {status}");
        }
        let still = rust_missing(ws, Verbosity::Quiet);
        if !still.is_empty() {
            bail!(
                "still missing after `rustup toolchain install`: {}",
                still.join(", ")
            );
        }
    }
    if verbosity == Verbosity::Report {
        println!("setup: everything is present");
    }
    Ok(())
}

/// The `x.y.z` in `QEMU emulator version x.y.z (...)`.
pub fn parse_qemu_version(text: &str) -> Option<(u32, u32, u32)> {
    let rest = text.split("QEMU emulator version ").nth(1)?;
    let version = rest.split_whitespace().next()?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// Describes what is missing on the system side (empty: nothing).
fn system_missing(verbosity: Verbosity) -> Vec<String> {
    let mut missing = Vec::new();
    for arch in Arch::ALL {
        let binary = arch.qemu_binary();
        let output = Command::new(binary).arg("--version").output();
        let version = output
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        match version.as_deref().map(parse_qemu_version) {
            Some(Some(v)) if v.0 >= QEMU_MIN_MAJOR => {
                if verbosity == Verbosity::Report {
                    println!("ok       {binary} {}.{}.{}", v.0, v.1, v.2);
                }
            }
            Some(Some(v)) => missing.push(format!(
                "{binary} >= {QEMU_MIN_MAJOR} (found {}.{}.{})",
                v.0, v.1, v.2
            )),
            Some(None) => missing.push(format!(
                "{binary} >= {QEMU_MIN_MAJOR} (unrecognized --version output)"
            )),
            None => missing.push(format!("{binary} >= {QEMU_MIN_MAJOR} (not found)")),
        }
    }
    for file in FIRMWARE {
        if Path::new(file).is_file() {
            if verbosity == Verbosity::Report {
                println!("ok       {file}");
            }
        } else {
            missing.push(file.to_string());
        }
    }
    missing
}

fn install_system(missing: &[String]) -> Result<()> {
    let install = format!(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -t {} {}",
        apt::BACKPORTS_SUITE,
        APT_PACKAGES.join(" ")
    );
    println!("setup: missing: {}", missing.join("; "));
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "installing QEMU and the UEFI firmware needs root. Run:\n\n    sudo cargo xtask setup\n\n\
             (if sudo does not find cargo: sudo env \"PATH=$PATH\" cargo xtask setup)\n\
             It adds the Debian '{}' suite to APT (reusing your 'bookworm' entry's URI) as {}, then runs\n    \
             apt-get update\n    {install}",
            apt::BACKPORTS_SUITE,
            apt::BACKPORTS_FILE
        );
    }
    match apt::ensure_backports()? {
        apt::Outcome::Present(path) => println!(
            "setup: APT already has {} ({})",
            apt::BACKPORTS_SUITE,
            path.display()
        ),
        apt::Outcome::Added(path) => println!(
            "setup: added the {} suite to APT: {}",
            apt::BACKPORTS_SUITE,
            path.display()
        ),
    }
    println!("setup: apt-get update");
    run_checked(Command::new("apt-get").arg("update"), "apt-get update")?;
    println!(
        "setup: installing {} from {}",
        APT_PACKAGES.join(" "),
        apt::BACKPORTS_SUITE
    );
    run_checked(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-t", apt::BACKPORTS_SUITE])
            .args(APT_PACKAGES),
        &install,
    )
}

fn run_checked(command: &mut Command, shown: &str) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed with {status}");
    }
    Ok(())
}

/// `rustup` in the workspace root, with the toolchain file in charge (the
/// `RUSTUP_TOOLCHAIN` cargo's proxy sets would otherwise override it).
fn rustup(ws: &Workspace) -> Command {
    let mut command = Command::new("rustup");
    command
        .current_dir(&ws.root)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTUP_TOOLCHAIN_SOURCE");
    command
}

/// `rustc` of the workspace's toolchain.
fn rustc(ws: &Workspace) -> Command {
    let mut command = Command::new("rustc");
    command
        .current_dir(&ws.root)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTUP_TOOLCHAIN_SOURCE");
    command
}

/// The four Rust targets the images need.
fn required_targets() -> Vec<&'static str> {
    Arch::ALL
        .iter()
        .flat_map(|a| [a.uefi_target(), a.bare_metal_target()])
        .collect()
}

/// Describes what is missing on the Rust side (empty: nothing).
fn rust_missing(ws: &Workspace, verbosity: Verbosity) -> Vec<String> {
    let mut missing = Vec::new();
    let installed = rustup(ws)
        .args(["target", "list", "--installed"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    for target in required_targets() {
        if installed
            .as_deref()
            .is_some_and(|list| list.lines().any(|l| l.trim() == target))
        {
            if verbosity == Verbosity::Report {
                println!("ok       Rust target {target}");
            }
        } else {
            missing.push(format!("Rust target {target}"));
        }
    }
    match objcopy_path(ws) {
        Ok(path) if path.is_file() => {
            if verbosity == Verbosity::Report {
                println!("ok       {}", path.display());
            }
        }
        Ok(path) => missing.push(path.display().to_string()),
        Err(_) => missing.push("rustc (the pinned toolchain)".into()),
    }
    missing
}

/// `$(rustc --print sysroot)/lib/rustlib/<host>/bin/llvm-objcopy`.
///
/// # Errors
/// When `rustc` cannot be run.
pub fn objcopy_path(ws: &Workspace) -> Result<PathBuf> {
    let sysroot = capture(rustc(ws).args(["--print", "sysroot"]))?;
    let verbose = capture(rustc(ws).arg("-vV"))?;
    let host = verbose
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .context("`rustc -vV` printed no host line")?;
    Ok(Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host.trim())
        .join("bin/llvm-objcopy"))
}

fn capture(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed with {}", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_versions_are_read_from_the_banner() {
        let banner =
            "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright";
        assert_eq!(parse_qemu_version(banner), Some((10, 0, 2)));
        assert_eq!(
            parse_qemu_version("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7)"),
            Some((7, 2, 15))
        );
        assert_eq!(
            parse_qemu_version("QEMU emulator version 9.1"),
            Some((9, 1, 0))
        );
        assert_eq!(parse_qemu_version("something else"), None);
    }

    #[test]
    fn the_four_targets_are_required() {
        assert_eq!(
            required_targets(),
            [
                "aarch64-unknown-uefi",
                "aarch64-unknown-none",
                "x86_64-unknown-uefi",
                "x86_64-unknown-none"
            ]
        );
    }
}
