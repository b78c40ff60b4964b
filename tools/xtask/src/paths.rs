//! Where things are: the workspace root and the folders under `target/`.

use anyhow::{Context, Result};
use bulkhead_harness::Arch;
use std::path::{Path, PathBuf};

/// The configuration `build` and `run` use when none is given.
pub const DEFAULT_CONFIG: &str = "configs/qemu-virt-demo.toml";
/// The configuration `run`/`build` use on x86_64 without `--config`.
pub const DEFAULT_CONFIG_X86_64: &str = bulkhead_harness::scenarios::X86_CONFIG;

/// The Bulkhead workspace this tool belongs to.
pub struct Workspace {
    /// The workspace root (holds the top-level Cargo.toml).
    pub root: PathBuf,
}

impl Workspace {
    /// The workspace that built this binary (two levels above `tools/xtask`).
    pub fn locate() -> Result<Workspace> {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir
            .join("../..")
            .canonicalize()
            .with_context(|| format!("locating the workspace above {}", manifest_dir.display()))?;
        Ok(Workspace { root })
    }

    /// Cargo's target folder.
    pub fn target_dir(&self) -> PathBuf {
        self.root.join("target")
    }

    /// This tool's own output folder, `target/xtask`.
    pub fn xtask_dir(&self) -> PathBuf {
        self.target_dir().join("xtask")
    }

    /// The ESP folder called `name` for `arch`.
    pub fn esp_dir(&self, arch: Arch, name: &str) -> PathBuf {
        self.xtask_dir()
            .join(arch.name())
            .join(format!("esp-{name}"))
    }

    /// The log file of a QEMU run called `name`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.xtask_dir().join("logs").join(format!("{name}.log"))
    }

    /// A file named on the command line: as given if it exists (relative to
    /// the current directory), else relative to the workspace root.
    pub fn resolve(&self, given: &Path) -> PathBuf {
        if given.is_absolute() || given.exists() {
            given.to_path_buf()
        } else {
            self.root.join(given)
        }
    }

    /// A `cargo` command in the workspace root, using the cargo that runs
    /// this tool.
    pub fn cargo(&self) -> std::process::Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        command.current_dir(&self.root);
        command
    }
}
