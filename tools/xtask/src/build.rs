//! `cargo xtask build`: the three cargo builds and the guests' flat binaries.
//!
//! - `bulkhead-hv` for the bare-metal target: the hypervisor ELF;
//! - `bulkhead-boot` for the UEFI target: the loader, a PE `.efi`;
//! - `bulkhead-test-guests --bins` for the bare-metal target: one ELF per
//!   guest, each turned into `<bin>.bin` with `llvm-objcopy -O binary`.
//!   On arm64 every guest is built (`--bins`); on x86_64 only the programs
//!   of [`X86_GUESTS`], the others use arm64-only parts of the runtime.
//!
//! Artifact paths come from cargo's JSON messages, not from guessing.

use crate::paths::Workspace;
use crate::setup;
use anyhow::{Context, Result, bail};
use bulkhead_harness::Arch;
use serde::Deserialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Cargo profile of the image builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `--release` (the default).
    Release,
    /// The dev profile (`--debug`).
    Debug,
}

impl Profile {
    /// `Debug` when `debug` is set.
    pub fn from_debug(debug: bool) -> Profile {
        if debug {
            Profile::Debug
        } else {
            Profile::Release
        }
    }
}

/// What to build.
#[derive(Clone, Copy, Debug)]
pub struct BuildOptions {
    /// Target architecture.
    pub arch: Arch,
    /// Cargo profile.
    pub profile: Profile,
}

/// The files one build produced.
#[derive(Clone, Debug)]
pub struct Artifacts {
    /// The architecture built for.
    pub arch: Arch,
    /// The hypervisor ELF.
    pub hv_elf: PathBuf,
    /// The UEFI loader.
    pub loader: PathBuf,
    /// The folder holding the guests' `<bin>.bin` flat binaries.
    pub images_dir: PathBuf,
    /// File names of the flat binaries built, e.g. `hello.bin`.
    pub images: Vec<String>,
}

/// Builds the hypervisor, the loader and the guests for `options.arch`.
///
/// # Errors
/// When a cargo build or `llvm-objcopy` fails, or the architecture is not
/// supported yet.
pub fn build_images(ws: &Workspace, options: &BuildOptions) -> Result<Artifacts> {
    let arch = options.arch;
    let bare = arch.bare_metal_target();
    let hv = cargo_build(ws, options, "bulkhead-hv", bare, &[])?;
    let hv_elf = single(hv, "bulkhead-hv")?;
    let boot = cargo_build(ws, options, "bulkhead-boot", arch.uefi_target(), &[])?;
    let loader = single(boot, "bulkhead-boot")?;
    let guest_args: Vec<String> = match arch {
        Arch::X86_64 => X86_GUESTS
            .iter()
            .flat_map(|bin| ["--bin".to_string(), bin.to_string()])
            .collect(),
        _ => vec!["--bins".to_string()],
    };
    let guest_args: Vec<&str> = guest_args.iter().map(String::as_str).collect();
    let guests = cargo_build(ws, options, "bulkhead-test-guests", bare, &guest_args)?;
    let objcopy = setup::objcopy_path(ws)?;
    let mut images = Vec::new();
    for elf in &guests {
        let flat = flat_binary_path(elf);
        let status = Command::new(&objcopy)
            .args(["-O", "binary"])
            .arg(elf)
            .arg(&flat)
            .status()
            .with_context(|| format!("running {}", objcopy.display()))?;
        if !status.success() {
            bail!(
                "llvm-objcopy -O binary {} failed with {status}",
                elf.display()
            );
        }
        images.push(file_name(&flat));
    }
    images.sort();
    let images_dir = match guests.first().and_then(|g| g.parent()) {
        Some(dir) => dir.to_path_buf(),
        None => profile_dir(ws, bare, options.profile),
    };
    Ok(Artifacts {
        arch,
        hv_elf,
        loader,
        images_dir,
        images,
    })
}

/// The guests built for x86_64: programs that use only the arch-neutral
/// runtime (hypercalls, `println!`, `guest_main!`).
pub const X86_GUESTS: &[&str] = &[
    "x86-hello",
    "x86-isolation-attacker",
    "x86-isolation-victim",
    "x86-inject-attacker",
    "x86-attributes",
    "edu-dma",
    "gpu-client",
    "gpu-attacker",
    "gpu-bench",
    "gpu-ppgtt",
    "gpu-ppgtt-attacker",
    "gpu-ppgtt-bench",
    "x86-msr",
    "x86-port",
    "x86-triple",
    "x86-bench-hypercall",
    "x86-unknown-hypercall",
];

/// `target/<target>/<release|debug>`.
fn profile_dir(ws: &Workspace, target: &str, profile: Profile) -> PathBuf {
    let name = match profile {
        Profile::Release => "release",
        Profile::Debug => "debug",
    };
    ws.target_dir().join(target).join(name)
}

/// `<elf>.bin`, next to the ELF.
pub fn flat_binary_path(elf: &Path) -> PathBuf {
    let mut name = elf.file_name().unwrap_or_default().to_os_string();
    name.push(".bin");
    elf.with_file_name(name)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn single(mut executables: Vec<PathBuf>, package: &str) -> Result<PathBuf> {
    match executables.len() {
        1 => Ok(executables.remove(0)),
        n => bail!("cargo built {n} executables for {package}, expected one"),
    }
}

/// One line of `cargo build --message-format=json`.
#[derive(Deserialize)]
struct Message {
    reason: String,
    #[serde(default)]
    package_id: String,
    #[serde(default)]
    target: Option<MessageTarget>,
    #[serde(default)]
    executable: Option<PathBuf>,
}

#[derive(Deserialize)]
struct MessageTarget {
    kind: Vec<String>,
}

/// Runs one `cargo build` and returns the executables of `package`'s bins.
fn cargo_build(
    ws: &Workspace,
    options: &BuildOptions,
    package: &str,
    target: &str,
    extra: &[&str],
) -> Result<Vec<PathBuf>> {
    let mut command = ws.cargo();
    command
        .args(["build", "--package", package, "--target", target])
        .args(extra);
    if options.profile == Profile::Release {
        command.arg("--release");
    }
    command
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let shown = format!(
        "cargo build -p {package} --target {target} {}",
        extra.join(" ")
    );
    println!("xtask: {}", shown.trim_end());
    let mut child = command
        .spawn()
        .with_context(|| format!("running `{shown}`"))?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut executables = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        executables.extend(executable_of(&line, package));
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{}` failed with {status}", shown.trim_end());
    }
    Ok(executables)
}

/// The bin executable a JSON message reports for `package`, if any.
fn executable_of(line: &str, package: &str) -> Option<PathBuf> {
    let message: Message = serde_json::from_str(line).ok()?;
    let is_bin = message
        .target
        .as_ref()
        .is_some_and(|t| t.kind.iter().any(|k| k == "bin"));
    let ours = package_id_names(&message.package_id, package);
    (message.reason == "compiler-artifact" && is_bin && ours)
        .then_some(message.executable)
        .flatten()
}

/// Whether a cargo package ID (`path+file:///…/boot#bulkhead-boot@0.1.0` or
/// the older `name version (source)`) belongs to `package`.
fn package_id_names(id: &str, package: &str) -> bool {
    match id.rsplit_once('#') {
        Some((url, fragment)) => match fragment.split_once('@') {
            Some((name, _version)) => name == package,
            None => url.rsplit('/').next() == Some(package),
        },
        None => id.split_whitespace().next() == Some(package),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_artifacts_of_the_package_are_picked_from_cargo_messages() {
        let bin = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests/guests#bulkhead-test-guests@0.1.0","target":{"kind":["bin"],"name":"hello"},"executable":"/w/target/aarch64-unknown-none/release/hello"}"#;
        let lib = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests/guests#bulkhead-test-guests@0.1.0","target":{"kind":["lib"],"name":"g"},"executable":null}"#;
        let dep = r#"{"reason":"compiler-artifact","package_id":"registry+https://x#log@0.4.0","target":{"kind":["lib"]},"executable":null}"#;
        assert_eq!(
            executable_of(bin, "bulkhead-test-guests"),
            Some(PathBuf::from(
                "/w/target/aarch64-unknown-none/release/hello"
            ))
        );
        assert_eq!(executable_of(bin, "bulkhead-hv"), None);
        assert_eq!(executable_of(lib, "bulkhead-test-guests"), None);
        assert_eq!(executable_of(dep, "log"), None);
        assert_eq!(executable_of("not json", "x"), None);
        assert_eq!(
            executable_of(r#"{"reason":"build-finished","success":true}"#, "x"),
            None
        );
    }

    #[test]
    fn package_ids_in_both_formats() {
        assert!(package_id_names(
            "path+file:///w/boot#bulkhead-boot@0.1.0",
            "bulkhead-boot"
        ));
        assert!(!package_id_names(
            "path+file:///w/boot#bulkhead-boot@0.1.0",
            "bulkhead"
        ));
        assert!(package_id_names("path+file:///w/boot#0.1.0", "boot"));
        assert!(package_id_names(
            "bulkhead-boot 0.1.0 (path+file:///w/boot)",
            "bulkhead-boot"
        ));
    }

    #[test]
    fn flat_binaries_sit_next_to_their_elf() {
        assert_eq!(
            flat_binary_path(Path::new("/t/release/hello")),
            PathBuf::from("/t/release/hello.bin")
        );
    }
}
