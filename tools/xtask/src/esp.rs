//! ESP folders: what the UEFI firmware boots from.
//!
//! ```text
//! esp-<name>/
//!   EFI/BOOT/BOOTAA64.EFI      the loader
//!   bulkhead/hv.elf            the hypervisor
//!   bulkhead/config.bin        the compiled configuration
//!   bulkhead/bootargs.txt      boot arguments, only when given
//!   bulkhead/images/<file>     every partition's image.file
//! ```
//!
//! The `bulkhead/…` paths come from `bulkhead_abi::boot`, the same constants
//! the loader reads. QEMU's FAT driver writes to the folder, so every run
//! gets its own and it is emptied before assembling.

use crate::build::Artifacts;
use crate::config::Compiled;
use crate::paths::Workspace;
use anyhow::{Context, Result, bail};
use bulkhead_abi::boot::{BOOTARGS_PATH, CONFIG_PATH, HV_IMAGE_PATH, IMAGE_DIR};
use bulkhead_config::Config;
use std::path::{Path, PathBuf};

/// What goes on one ESP besides the build artifacts.
pub struct EspSpec<'a> {
    /// Folder name suffix: `esp-<name>`.
    pub name: String,
    /// The configuration file as shown in messages.
    pub config_shown: String,
    /// The configuration.
    pub compiled: &'a Compiled,
    /// Boot arguments, if any.
    pub bootargs: Option<&'a str>,
    /// Leave `bulkhead/images/` empty.
    pub omit_images: bool,
    /// ESP files (paths as in `bulkhead_abi::boot`) replaced with these bytes.
    pub overwrite: &'a [(&'a str, &'a [u8])],
}

impl<'a> EspSpec<'a> {
    /// The ESP for a configuration file, named after its stem.
    pub fn for_config(
        config: &Path,
        compiled: &'a Compiled,
        bootargs: Option<&'a str>,
    ) -> EspSpec<'a> {
        let name = config
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "config".into());
        EspSpec {
            name,
            config_shown: config.display().to_string(),
            compiled,
            bootargs,
            omit_images: false,
            overwrite: &[],
        }
    }
}

/// An ESP path from `bulkhead_abi::boot` (`\bulkhead\hv.elf`) as a relative
/// host path (`bulkhead/hv.elf`).
pub fn esp_path(abi_path: &str) -> PathBuf {
    abi_path
        .split('\\')
        .filter(|part| !part.is_empty())
        .collect()
}

/// Assembles the ESP folder for `spec` and returns it.
///
/// # Errors
/// When a partition's image was not built (naming the configuration file,
/// the partition and `image.file`), or a file cannot be copied.
pub fn assemble(ws: &Workspace, artifacts: &Artifacts, spec: &EspSpec<'_>) -> Result<PathBuf> {
    let dir = ws.esp_dir(artifacts.arch, &spec.name);
    assemble_in(&dir, artifacts, spec, &|name| linux_image(ws, name))?;
    Ok(dir)
}

/// Where fetched Linux images come from (a parameter so that tests need no network).
type LinuxImages<'a> = &'a dyn Fn(&str) -> Result<PathBuf>;

fn assemble_in(dir: &Path, artifacts: &Artifacts, spec: &EspSpec<'_>, linux: LinuxImages<'_>) -> Result<()> {
    let images = if spec.omit_images {
        Vec::new()
    } else {
        image_sources(artifacts, &spec.compiled.config, &spec.config_shown, linux)?
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing the old {}", dir.display()))?;
    }
    let boot_dir = dir.join("EFI").join("BOOT");
    let image_dir = dir.join(esp_path(IMAGE_DIR));
    for folder in [&boot_dir, &image_dir] {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
    }
    copy(
        &artifacts.loader,
        &boot_dir.join(artifacts.arch.removable_boot_file()),
    )?;
    copy(&artifacts.hv_elf, &dir.join(esp_path(HV_IMAGE_PATH)))?;
    write(&dir.join(esp_path(CONFIG_PATH)), &spec.compiled.blob)?;
    if let Some(text) = spec.bootargs {
        write(&dir.join(esp_path(BOOTARGS_PATH)), text.as_bytes())?;
    }
    for (file, source) in images {
        copy(&source, &image_dir.join(file))?;
    }
    for (abi_path, bytes) in spec.overwrite {
        write(&dir.join(esp_path(abi_path)), bytes)?;
    }
    Ok(())
}

/// Each distinct `image.file` of the configuration with the built file it
/// comes from.
/// Guest images that are not built from `tests/guests` but fetched
/// (Debian's kernels) or assembled (the initramfs), by the name a
/// configuration uses for them.
pub const LINUX_IMAGES: [&str; 3] = ["linux-6.1.Image", "linux-6.12.Image", "initramfs.cpio"];

/// Fetches (if needed) the Linux image called `name` and returns its path.
fn linux_image(ws: &Workspace, name: &str) -> Result<PathBuf> {
    let kernels = crate::linux::ensure_kernels(ws)?;
    Ok(match name {
        "linux-6.1.Image" => kernels.get(crate::linux::KernelChoice::Bookworm).image.clone(),
        "linux-6.12.Image" => kernels.get(crate::linux::KernelChoice::Backports).image.clone(),
        _ => crate::initramfs::build(ws, &kernels.busybox)?,
    })
}

/// Each distinct guest file of the configuration (`image.file` and
/// `image.initrd`) with the file it is copied from.
fn image_sources(
    artifacts: &Artifacts,
    config: &Config,
    shown: &str,
    linux: LinuxImages<'_>,
) -> Result<Vec<(String, PathBuf)>> {
    let mut sources: Vec<(String, PathBuf)> = Vec::new();
    for partition in &config.partitions {
        let files = std::iter::once(("image.file", &partition.image.file))
            .chain(partition.image.initrd.as_ref().map(|f| ("image.initrd", f)));
        for (field, file) in files {
            if sources.iter().any(|(f, _)| f == file) {
                continue;
            }
            if LINUX_IMAGES.contains(&file.as_str()) {
                sources.push((file.clone(), linux(file)?));
                continue;
            }
            let source = artifacts.images_dir.join(file);
            if !source.is_file() {
                let built = if artifacts.images.is_empty() {
                    "none".to_string()
                } else {
                    artifacts.images.join(", ")
                };
                bail!(
                    "{shown}: partition '{}', field '{field}': no guest image '{file}' in {} \
                     (guest images built: {built}; a guest is a bin in tests/guests/src/bin, \
                     or one of {})",
                    partition.name,
                    artifacts.images_dir.display(),
                    LINUX_IMAGES.join(", ")
                );
            }
            sources.push((file.clone(), source));
        }
    }
    Ok(sources)
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_harness::Arch;

    const CONFIG: &str = r#"
[[partition]]
name = "hello"
cpus = [0]
image = { file = "hello.bin", load = 0x4000_0000 }
[[partition.memory]]
guest = 0x4000_0000
size = 0x10_0000
"#;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("xtask-esp-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("out")).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn fixture(scratch: &Scratch, with_image: bool) -> (Artifacts, Compiled) {
        let out = scratch.0.join("out");
        std::fs::write(out.join("bulkhead-hv"), b"elf").unwrap();
        std::fs::write(out.join("bulkhead-boot.efi"), b"pe").unwrap();
        if with_image {
            std::fs::write(out.join("hello.bin"), b"guest").unwrap();
        }
        let artifacts = Artifacts {
            arch: Arch::Aarch64,
            hv_elf: out.join("bulkhead-hv"),
            loader: out.join("bulkhead-boot.efi"),
            images_dir: out.clone(),
            images: if with_image {
                vec!["hello.bin".into()]
            } else {
                Vec::new()
            },
        };
        let config: Config = toml::from_str(CONFIG).unwrap();
        let blob = bulkhead_config::to_blob(&config);
        (artifacts, Compiled { config, blob })
    }

    fn spec<'a>(
        compiled: &'a Compiled,
        bootargs: Option<&'a str>,
        omit_images: bool,
    ) -> EspSpec<'a> {
        EspSpec {
            name: "t".into(),
            config_shown: "demo.toml".into(),
            compiled,
            bootargs,
            omit_images,
            overwrite: &[],
        }
    }

    #[test]
    fn abi_paths_become_relative_host_paths() {
        assert_eq!(esp_path(HV_IMAGE_PATH), PathBuf::from("bulkhead/hv.elf"));
        assert_eq!(esp_path(IMAGE_DIR), PathBuf::from("bulkhead/images"));
    }

    fn no_linux(name: &str) -> Result<PathBuf> {
        anyhow::bail!("tests fetch no Linux image ({name})")
    }

    #[test]
    fn the_esp_holds_loader_hypervisor_config_bootargs_and_images() {
        let scratch = Scratch::new("full");
        let (artifacts, compiled) = fixture(&scratch, true);
        let esp = scratch.0.join("esp");
        std::fs::create_dir_all(esp.join("stale")).unwrap();
        assemble_in(&esp, &artifacts, &spec(&compiled, Some("crash=panic"), false), &no_linux)
        .unwrap();
        assert_eq!(
            std::fs::read(esp.join("EFI/BOOT/BOOTAA64.EFI")).unwrap(),
            b"pe"
        );
        assert_eq!(std::fs::read(esp.join("bulkhead/hv.elf")).unwrap(), b"elf");
        assert_eq!(
            std::fs::read(esp.join("bulkhead/config.bin")).unwrap(),
            compiled.blob
        );
        assert_eq!(
            std::fs::read_to_string(esp.join("bulkhead/bootargs.txt")).unwrap(),
            "crash=panic"
        );
        assert_eq!(
            std::fs::read(esp.join("bulkhead/images/hello.bin")).unwrap(),
            b"guest"
        );
        assert!(!esp.join("stale").exists(), "stale files are removed");

        assemble_in(&esp, &artifacts, &spec(&compiled, None, true), &no_linux).unwrap();
        assert!(
            !esp.join("bulkhead/bootargs.txt").exists(),
            "no boot args, no file"
        );
        assert_eq!(
            std::fs::read_dir(esp.join("bulkhead/images"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_missing_image_names_file_partition_and_field() {
        let scratch = Scratch::new("missing");
        let (artifacts, compiled) = fixture(&scratch, false);
        let err = assemble_in(&scratch.0.join("esp"), &artifacts, &spec(&compiled, None, false), &no_linux)
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(
                "demo.toml: partition 'hello', field 'image.file': no guest image 'hello.bin'"
            ),
            "{text}"
        );
    }
}
