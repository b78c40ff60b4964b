//! The initramfs of the Linux test guest: a static busybox and
//! `tests/linux/init`, as an uncompressed newc cpio archive (the kernel
//! accepts it as is).
//!
//! Layout:
//!
//! | path | what |
//! |---|---|
//! | `/init` | `tests/linux/init` (mode 0755) |
//! | `/bin/busybox` | Debian's `busybox-static` (mode 0755) |
//! | `/bin/APPLET` | symlinks to `/bin/busybox` for [`APPLETS`] |
//! | `/dev/console` | character device 5:1, so the kernel can give `/init` a console before devtmpfs is mounted |
//! | `/dev /proc /sys /tmp /sbin /etc /root /usr` | empty directories |

use crate::cpio::Archive;
use crate::paths::Workspace;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The init script, relative to the workspace root.
pub const INIT_SCRIPT: &str = "tests/linux/init";
/// The file [`build`] writes, relative to `target/xtask/`.
pub const OUTPUT: &str = "linux/initramfs.cpio";

/// Busybox applets that get a `/bin` symlink: the shell the kernel runs
/// `/init` with (`#!/bin/sh`) and every command the init script calls. The
/// interactive shell (`bulkhead.shell=1`) installs the rest itself.
pub const APPLETS: [&str; 14] = [
    "sh", "cat", "cttyhack", "grep", "head", "mkdir", "mount", "poweroff", "reboot", "setsid",
    "sleep", "uname", "wc", "ls",
];

/// Empty directories of the root file system (besides `bin` and `dev`).
const DIRECTORIES: [&str; 7] = ["etc", "proc", "root", "sbin", "sys", "tmp", "usr"];

/// Linux's device number of `/dev/console` (Documentation/admin-guide/devices.txt).
const CONSOLE_DEVICE: (u32, u32) = (5, 1);

/// The archive's bytes for the given busybox binary and init script.
///
/// # Errors
/// Never for the fixed layout; a cpio error would be a bug in the list.
pub fn archive(busybox: &[u8], init: &[u8]) -> Result<Vec<u8>> {
    let mut archive = Archive::new();
    archive.directory("bin", 0o755)?;
    archive.directory("dev", 0o755)?;
    archive.char_device("dev/console", 0o600, CONSOLE_DEVICE.0, CONSOLE_DEVICE.1)?;
    for directory in DIRECTORIES {
        let permissions = if directory == "tmp" { 0o1777 } else { 0o755 };
        archive.directory(directory, permissions)?;
    }
    archive.file("bin/busybox", 0o755, busybox)?;
    for applet in APPLETS {
        archive.symlink(&format!("bin/{applet}"), "/bin/busybox")?;
    }
    archive.file("init", 0o755, init)?;
    Ok(archive.finish())
}

/// Builds `target/xtask/linux/initramfs.cpio` from `busybox` and
/// [`INIT_SCRIPT`], and returns its path. The file is rewritten only when
/// its content changes.
///
/// # Errors
/// When an input cannot be read or the output cannot be written.
pub fn build(ws: &Workspace, busybox: &Path) -> Result<PathBuf> {
    let init_path = ws.root.join(INIT_SCRIPT);
    let init = std::fs::read(&init_path)
        .with_context(|| format!("reading the init script {}", init_path.display()))?;
    let busybox_bytes =
        std::fs::read(busybox).with_context(|| format!("reading busybox {}", busybox.display()))?;
    let bytes = archive(&busybox_bytes, &init)?;
    let output = ws.xtask_dir().join(OUTPUT);
    if std::fs::read(&output).is_ok_and(|old| old == bytes) {
        return Ok(output);
    }
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&output, &bytes).with_context(|| format!("writing {}", output.display()))?;
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, data) of every entry, read back with a minimal parser.
    fn entries(bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let hex = |at: usize| {
            u32::from_str_radix(std::str::from_utf8(&bytes[at..at + 8]).unwrap(), 16).unwrap()
        };
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let (mode, size, namesize) =
                (hex(at + 14), hex(at + 54) as usize, hex(at + 94) as usize);
            let name =
                String::from_utf8(bytes[at + 110..at + 110 + namesize - 1].to_vec()).unwrap();
            let data_at = (at + 110 + namesize).next_multiple_of(4);
            if name == "TRAILER!!!" {
                return out;
            }
            out.push((name, mode, bytes[data_at..data_at + size].to_vec()));
            at = (data_at + size).next_multiple_of(4);
        }
    }

    #[test]
    fn the_archive_holds_init_busybox_applets_and_directories() {
        let bytes = archive(b"\x7fELF busybox", b"#!/bin/sh\necho hi\n").unwrap();
        let entries = entries(&bytes);
        let find = |name: &str| {
            entries
                .iter()
                .find(|(n, _, _)| n == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        assert_eq!(find("init").1, 0o100_755);
        assert_eq!(find("init").2, b"#!/bin/sh\necho hi\n");
        assert_eq!(find("bin/busybox").2, b"\x7fELF busybox");
        assert_eq!(find("bin/sh").1, 0o120_777);
        assert_eq!(find("bin/sh").2, b"/bin/busybox");
        assert_eq!(find("dev/console").1, 0o020_600);
        assert_eq!(find("tmp").1, 0o041_777);
        for dir in ["dev", "proc", "sys", "tmp", "bin", "sbin", "etc"] {
            assert_eq!(find(dir).1 & 0o170_000, 0o040_000, "{dir} is a directory");
        }
    }

    #[test]
    fn directories_come_before_their_contents() {
        let bytes = archive(b"b", b"i").unwrap();
        let names: Vec<String> = entries(&bytes).into_iter().map(|(n, _, _)| n).collect();
        for (index, name) in names.iter().enumerate() {
            if let Some((parent, _)) = name.rsplit_once('/') {
                let parent_index = names.iter().position(|n| n == parent);
                assert!(
                    parent_index.is_some_and(|p| p < index),
                    "{name} before {parent}"
                );
            }
        }
    }

    #[test]
    fn every_command_the_init_script_calls_has_an_applet_link() {
        let script = include_str!("../../../tests/linux/init");
        let commands = [
            "mount", "mkdir", "uname", "cat", "grep", "head", "wc", "sleep", "setsid", "cttyhack",
            "poweroff", "reboot",
        ];
        for command in commands {
            assert!(script.contains(command), "{command} is used by the script");
            assert!(APPLETS.contains(&command), "{command} has no /bin link");
        }
        assert!(script.starts_with("#!/bin/sh\n"));
    }
}
