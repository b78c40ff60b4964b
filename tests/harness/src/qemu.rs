//! QEMU command lines for the machines Bulkhead runs on (DESIGN.md §6).
//!
//! arm64 `virt` and x86_64 `q35` (OVMF). On `q35` the hypervisor ends the
//! run through `isa-debug-exit`, which turns the value `v` it writes into
//! QEMU's exit status `(v << 1) | 1`; [`hypervisor_exit_code`] maps a
//! status back to the hypervisor's `ExitCode` value so scenarios are judged
//! the same way on both machines.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

/// The UEFI firmware QEMU boots on arm64 `virt` (Debian `qemu-efi-aarch64`).
pub const AARCH64_FIRMWARE: &str = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd";
/// OVMF code for x86_64 `q35` (Debian `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF variable store template for x86_64 `q35`; each run needs its own copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// QEMU options that make the virtual counter count instructions (one tick
/// per instruction, deterministic: DESIGN.md §7, §8), for benchmarks.
pub const ICOUNT: [&str; 2] = ["-icount", "shift=0,align=off,sleep=off"];

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
    /// serial on stdio and no reboot, and QEMU's `edu` PCI DMA engine. One
    /// addition: `acpi=off`, so that the firmware hands over the device tree
    /// (the hypervisor reads the platform from it) instead of ACPI tables.
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
            // A PCI DMA engine behind the SMMU (DESIGN.md §6), for the DMA
            // isolation tests; assigned to no partition it must not DMA.
            "-device",
            "edu,dma_mask=0xffffffffffffffff",
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

    /// The command that boots the ESP folder `esp_dir` on x86_64 `q35`
    /// through OVMF, exactly as DESIGN.md §6 gives it: OVMF code as
    /// read-only pflash, `vars` (a per-run copy of [`OVMF_VARS`], see
    /// [`copy_ovmf_vars`]) as writable pflash, the ESP as a FAT drive,
    /// VT-d (`intel-iommu`) and the `edu` DMA engine behind it,
    /// `isa-debug-exit` at port 0xf4 for the exit code, serial on stdio.
    /// `-smp` is added only for more than one CPU.
    pub fn x86_64_q35(esp_dir: &Path, vars: &Path, smp: u32) -> QemuCommand {
        let mut code = OsString::from("if=pflash,format=raw,readonly=on,file=");
        code.push(OVMF_CODE);
        let mut vars_drive = OsString::from("if=pflash,format=raw,file=");
        vars_drive.push(vars.as_os_str());
        let mut esp = OsString::from("format=raw,file=fat:rw:");
        esp.push(esp_dir.as_os_str());
        let mut args: Vec<OsString> = ["-M", "q35", "-cpu", "max"].into_iter().map(OsString::from).collect();
        if smp > 1 {
            args.extend(["-smp".into(), smp.to_string().into()]);
        }
        args.extend(
            ["-m", "1G", "-nographic", "-no-reboot", "-nodefaults", "-serial", "mon:stdio", "-drive"]
                .into_iter()
                .map(OsString::from),
        );
        args.extend([code, "-drive".into(), vars_drive, "-drive".into(), esp]);
        // VT-d (QEMU wants it before any other PCI device on the command
        // line; without `intremap=on` TCG needs no split irqchip), then the
        // edu DMA engine behind it, assigned to no partition unless the
        // configuration says so.
        args.extend(
            ["-device", "intel-iommu", "-device", "edu,dma_mask=0xffffffffffffffff"].into_iter().map(OsString::from),
        );
        args.extend(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"].into_iter().map(OsString::from));
        QemuCommand {
            program: Arch::X86_64.qemu_binary().into(),
            args,
        }
    }

    /// The command for `arch`. On x86_64 the firmware variable store is
    /// [`ovmf_vars_path`]`(esp_dir)`, which [`copy_ovmf_vars`] must create
    /// before QEMU starts.
    pub fn for_arch(arch: Arch, esp_dir: &Path, smp: u32) -> Option<QemuCommand> {
        match arch {
            Arch::Aarch64 => Some(QemuCommand::aarch64_virt(esp_dir, smp)),
            Arch::X86_64 => Some(QemuCommand::x86_64_q35(esp_dir, &ovmf_vars_path(esp_dir), smp)),
        }
    }

    /// A `std` command ready to spawn (stdio not yet configured).
    pub fn to_command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command
    }
}

/// Where a run's copy of the OVMF variable store lives: next to (not inside)
/// its ESP folder, `<esp_dir>.OVMF_VARS_4M.fd`.
pub fn ovmf_vars_path(esp_dir: &Path) -> PathBuf {
    let mut name = esp_dir.as_os_str().to_owned();
    name.push(".OVMF_VARS_4M.fd");
    PathBuf::from(name)
}

/// Copies the [`OVMF_VARS`] template to [`ovmf_vars_path`]`(esp_dir)`, fresh
/// for each run (firmware writes to it: boot entries, variables).
///
/// # Errors
/// When the template cannot be read or the copy written.
pub fn copy_ovmf_vars(esp_dir: &Path) -> std::io::Result<PathBuf> {
    let path = ovmf_vars_path(esp_dir);
    std::fs::copy(OVMF_VARS, &path)?;
    Ok(path)
}

/// Added to a `q35` exit status that did not come from `isa-debug-exit`
/// (an even status: QEMU shut down on its own, e.g. after a triple fault
/// under `-no-reboot`), so that it can never read as one of the
/// hypervisor's codes.
pub const NOT_FROM_DEBUG_EXIT: i32 = 256;

/// The text the hypervisor prints before it exits with code 0 (see
/// `platform::finish`); on `q35` it tells a real success (status 1) from
/// QEMU failing on its own (also status 1).
pub const SUCCESS_LINE: &str = "run finished: exit code 0 (success)";

/// Maps QEMU's exit status to the hypervisor's exit code value
/// (`bulkhead_abi::exit::ExitCode::code`).
///
/// - arm64 `virt`: semihosting `SYS_EXIT` returns the code itself.
/// - x86_64 `q35`: `isa-debug-exit` returns `(code << 1) | 1`, so an odd
///   status `s` is code `s >> 1` (BootFailure 4 → 9, HypervisorFault 99 →
///   199). Status 1 is code 0 (Success) only if the log has
///   [`SUCCESS_LINE`]; otherwise it is QEMU's own error status and stays 1.
///   An even status becomes `NOT_FROM_DEBUG_EXIT + status`.
pub fn hypervisor_exit_code(arch: Arch, status: i32, lines: &[String]) -> i32 {
    match arch {
        Arch::Aarch64 => status,
        Arch::X86_64 if status == 1 => {
            if lines.iter().any(|line| line.contains(SUCCESS_LINE)) {
                0
            } else {
                1
            }
        }
        Arch::X86_64 if status & 1 == 1 => status >> 1,
        Arch::X86_64 => NOT_FROM_DEBUG_EXIT + status,
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
             -device edu,dma_mask=0xffffffffffffffff -drive if=virtio,format=raw,file=fat:rw:/tmp/esp-x"
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
    fn x86_64_q35_matches_the_design_notes() {
        let command = QemuCommand::for_arch(Arch::X86_64, Path::new("/tmp/esp-x"), 1).unwrap();
        assert_eq!(
            command.to_string(),
            "qemu-system-x86_64 -M q35 -cpu max -m 1G -nographic -no-reboot -nodefaults -serial mon:stdio \
             -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
             -drive if=pflash,format=raw,file=/tmp/esp-x.OVMF_VARS_4M.fd \
             -drive format=raw,file=fat:rw:/tmp/esp-x -device intel-iommu -device edu,dma_mask=0xffffffffffffffff \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04"
        );
        let two = QemuCommand::x86_64_q35(Path::new("/e"), Path::new("/v"), 2).to_string();
        assert!(two.contains("-cpu max -smp 2 -m 1G"), "{two}");
    }

    #[test]
    fn isa_debug_exit_statuses_map_back_to_exit_codes() {
        use bulkhead_abi::exit::ExitCode;
        let success = [format!("[bulkhead] {SUCCESS_LINE}")];
        for code in ExitCode::ALL {
            let status = (i32::from(code.code()) << 1) | 1;
            assert_eq!(hypervisor_exit_code(Arch::X86_64, status, &success), i32::from(code.code()));
        }
        assert_eq!(hypervisor_exit_code(Arch::X86_64, 1, &[]), 1, "QEMU's own error without the success line");
        assert_eq!(hypervisor_exit_code(Arch::X86_64, 0, &[]), NOT_FROM_DEBUG_EXIT);
        assert_eq!(hypervisor_exit_code(Arch::Aarch64, 4, &[]), 4);
    }
}
