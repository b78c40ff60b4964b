//! QEMU command lines for the machines Bulkhead runs on (DESIGN.md §6).
//!
//! Only arm64 `virt` is wired up today; x86_64 `q35` is named so that adding
//! it is a matter of filling in [`QemuCommand::for_arch`].

use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;

/// The UEFI firmware QEMU boots on arm64 `virt` (Debian `qemu-efi-aarch64`).
pub const AARCH64_FIRMWARE: &str = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd";
/// OVMF code for x86_64 `q35` (Debian `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF variable store template for x86_64 `q35`; each run needs its own copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// A CPU architecture Bulkhead is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// arm64, on QEMU `virt`.
    Aarch64,
    /// x86_64, on QEMU `q35`.
    X86_64,
}

impl Arch {
    /// Every architecture.
    pub const ALL: [Arch; 2] = [Arch::Aarch64, Arch::X86_64];

    /// The name used on the command line and in folder names.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::X86_64 => "x86_64",
        }
    }

    /// The Rust target of the UEFI loader.
    pub const fn uefi_target(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64-unknown-uefi",
            Arch::X86_64 => "x86_64-unknown-uefi",
        }
    }

    /// The Rust target of the hypervisor and the guests.
    pub const fn bare_metal_target(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64-unknown-none",
            Arch::X86_64 => "x86_64-unknown-none",
        }
    }

    /// The file name UEFI boots from removable media, under `EFI/BOOT/`.
    pub const fn removable_boot_file(self) -> &'static str {
        match self {
            Arch::Aarch64 => "BOOTAA64.EFI",
            Arch::X86_64 => "BOOTX64.EFI",
        }
    }

    /// The QEMU system emulator.
    pub const fn qemu_binary(self) -> &'static str {
        match self {
            Arch::Aarch64 => "qemu-system-aarch64",
            Arch::X86_64 => "qemu-system-x86_64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = String;

    fn from_str(s: &str) -> Result<Arch, String> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Arch::ALL.iter().map(|a| a.name()).collect();
                format!(
                    "unknown architecture '{s}', expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

/// A QEMU invocation: program and arguments, inspectable before it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuCommand {
    /// The emulator binary.
    pub program: String,
    /// Its arguments, in order.
    pub args: Vec<OsString>,
}

impl QemuCommand {
    /// The command that boots the ESP folder `esp_dir` on arm64 `virt` with
    /// `smp` CPUs, as DESIGN.md §6 gives it: EL2 available, GICv3, SMMUv3,
    /// semihosting for the exit code, the firmware's boot menu without delay,
    /// serial on stdio and no reboot. One addition: `acpi=off`, so that the
    /// firmware hands over the device tree (the hypervisor reads the
    /// platform from it) instead of ACPI tables.
    pub fn aarch64_virt(esp_dir: &Path, smp: u32) -> QemuCommand {
        let mut drive = OsString::from("if=virtio,format=raw,file=fat:rw:");
        drive.push(esp_dir.as_os_str());
        let args: Vec<OsString> = [
            "-M",
            "virt,virtualization=on,gic-version=3,iommu=smmuv3,acpi=off",
            "-cpu",
            "max",
            "-smp",
            &smp.to_string(),
            "-m",
            "1G",
            "-nographic",
            "-no-reboot",
            "-bios",
            AARCH64_FIRMWARE,
            "-boot",
            "menu=on,splash-time=0",
            "-nic",
            "none",
            "-semihosting-config",
            "enable=on,target=native",
            "-drive",
        ]
        .into_iter()
        .map(OsString::from)
        .chain([drive])
        .collect();
        QemuCommand {
            program: Arch::Aarch64.qemu_binary().into(),
            args,
        }
    }

    /// The command for `arch`, or `None` where the harness cannot boot it yet.
    pub fn for_arch(arch: Arch, esp_dir: &Path, smp: u32) -> Option<QemuCommand> {
        match arch {
            Arch::Aarch64 => Some(QemuCommand::aarch64_virt(esp_dir, smp)),
            // q35 + OVMF (DESIGN.md §6) needs a per-run copy of OVMF_VARS;
            // it comes with the x86_64 port.
            Arch::X86_64 => None,
        }
    }

    /// A `std` command ready to spawn (stdio not yet configured).
    pub fn to_command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command
    }
}

impl fmt::Display for QemuCommand {
    /// The command as one shell-like line, for logs and for copying by hand.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for arg in &self.args {
            write!(f, " {}", arg.to_string_lossy())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aarch64_virt_matches_the_design_notes() {
        let command = QemuCommand::aarch64_virt(Path::new("/tmp/esp-x"), 2);
        assert_eq!(
            command.to_string(),
            "qemu-system-aarch64 -M virt,virtualization=on,gic-version=3,iommu=smmuv3,acpi=off -cpu max \
             -smp 2 -m 1G -nographic -no-reboot -bios /usr/share/qemu-efi-aarch64/QEMU_EFI.fd \
             -boot menu=on,splash-time=0 -nic none -semihosting-config enable=on,target=native \
             -drive if=virtio,format=raw,file=fat:rw:/tmp/esp-x"
        );
    }

    #[test]
    fn arch_names_round_trip_and_unknown_names_are_explained() {
        for arch in Arch::ALL {
            assert_eq!(arch.name().parse::<Arch>(), Ok(arch));
        }
        let err = "riscv64".parse::<Arch>().unwrap_err();
        assert!(err.contains("aarch64, x86_64"), "{err}");
    }

    #[test]
    fn x86_64_is_not_wired_up_yet() {
        assert!(QemuCommand::for_arch(Arch::X86_64, Path::new("/e"), 1).is_none());
        assert!(QemuCommand::for_arch(Arch::Aarch64, Path::new("/e"), 1).is_some());
    }
}
