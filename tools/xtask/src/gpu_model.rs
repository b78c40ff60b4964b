//! Starting and stopping the GPU model (`tools/gpu-model`) around a QEMU run, and the QEMU
//! arguments that attach it: guest RAM as a shared `memory-backend-file` the model also maps,
//! and an `ivshmem-doorbell` device whose server is the model.
//!
//! Order matters: the model creates the RAM file at the right size and listens on its socket
//! before QEMU starts, because QEMU's chardev connects at start-up and QEMU then reuses the
//! existing RAM file.

use crate::paths::Workspace;
use anyhow::{Context, Result, bail};
use bulkhead_harness::Arch;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the model gets to create its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Guest RAM of the QEMU command lines in `bulkhead_harness::qemu` (`-m 1G`).
pub const QEMU_RAM_MIB: u64 = 1024;

/// Builds the model (host, debug profile) and returns its binary.
///
/// # Errors
/// When cargo fails.
pub fn build(ws: &Workspace) -> Result<PathBuf> {
    let status = ws.cargo().args(["build", "--quiet", "-p", "gpu-model"]).status().context("building gpu-model")?;
    if !status.success() {
        bail!("building gpu-model failed");
    }
    Ok(ws.target_dir().join("debug").join("gpu-model"))
}

/// The chardev / memory-backend IDs on the QEMU command line.
const CHARDEV_ID: &str = "gpu";
const RAM_BACKEND_ID: &str = "gpu-ram";

/// One GPU model instance: its files and sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuModel {
    /// The ivshmem server socket.
    pub socket: PathBuf,
    /// The shared BAR file (registers, GTT, local memory).
    pub bar: PathBuf,
    /// The guest RAM file.
    pub ram: PathBuf,
    /// Guest RAM in MiB; must equal QEMU's `-m`.
    pub ram_mib: u64,
    /// Guest physical address of the RAM file's first byte.
    pub ram_base: u64,
    /// Local memory in MiB.
    pub local_mib: u64,
    /// Interrupt vectors.
    pub vectors: u16,
    /// Where the model's log goes.
    pub log: PathBuf,
}

impl GpuModel {
    /// The model for a QEMU run of `arch` with `ram_mib` of RAM, its files under `dir`. RAM base:
    /// arm64 `virt` puts RAM at 1 GiB; x86 `q35` at 0 (with up to 2 GiB, all below its
    /// low-memory limit, so the file maps 1:1).
    pub fn for_arch(arch: Arch, dir: &Path, ram_mib: u64) -> GpuModel {
        let ram_base = match arch {
            Arch::Aarch64 => 0x4000_0000,
            Arch::X86_64 => 0,
        };
        GpuModel {
            socket: dir.join("gpu.sock"),
            bar: dir.join("gpu-bar"),
            ram: dir.join("guest-ram"),
            ram_mib,
            ram_base,
            local_mib: 64,
            vectors: 1,
            log: dir.join("gpu-model.log"),
        }
    }

    /// The model's command-line arguments.
    pub fn model_args(&self) -> Vec<OsString> {
        vec![
            "--socket".into(),
            self.socket.clone().into(),
            "--bar".into(),
            self.bar.clone().into(),
            "--local-mib".into(),
            self.local_mib.to_string().into(),
            "--ram".into(),
            self.ram.clone().into(),
            "--ram-mib".into(),
            self.ram_mib.to_string().into(),
            "--ram-base".into(),
            format!("{:#x}", self.ram_base).into(),
            "--vectors".into(),
            self.vectors.to_string().into(),
        ]
    }

    /// The QEMU arguments that attach the model (added to a command that has `-m` equal to
    /// [`GpuModel::ram_mib`]; QEMU merges the extra `-machine` into the existing `-M`).
    pub fn qemu_args(&self) -> Vec<OsString> {
        let mut backend = OsString::from(format!("memory-backend-file,id={RAM_BACKEND_ID},mem-path="));
        backend.push(&self.ram);
        backend.push(format!(",share=on,size={}M", self.ram_mib));
        let mut chardev = OsString::from("socket,path=");
        chardev.push(&self.socket);
        chardev.push(format!(",id={CHARDEV_ID}"));
        vec![
            "-object".into(),
            backend,
            "-machine".into(),
            format!("memory-backend={RAM_BACKEND_ID}").into(),
            "-chardev".into(),
            chardev,
            "-device".into(),
            format!("ivshmem-doorbell,chardev={CHARDEV_ID},vectors={}", self.vectors).into(),
        ]
    }

    /// Build the model and start it; returns once its socket exists.
    ///
    /// # Errors
    /// When the build fails, the model cannot start, exits early or does not create its socket
    /// within [`START_TIMEOUT`].
    pub fn start(&self, ws: &Workspace) -> Result<RunningModel> {
        self.start_program(&build(ws)?)
    }

    /// The model for a scenario or run called `name` on `arch` (QEMU's `-m` is 1 GiB on both
    /// machines), its files under `target/xtask/gpu/NAME/`.
    pub fn for_run(ws: &Workspace, arch: Arch, name: &str) -> GpuModel {
        GpuModel::for_arch(arch, &ws.xtask_dir().join("gpu").join(name), QEMU_RAM_MIB)
    }

    /// Start `program` (the model binary) with [`GpuModel::model_args`].
    ///
    /// # Errors
    /// As [`GpuModel::start`], without the build.
    pub fn start_program(&self, program: &Path) -> Result<RunningModel> {
        for path in [&self.socket, &self.bar, &self.ram, &self.log] {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
        }
        // A stale socket would look like a ready model.
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::File::create(&self.log).with_context(|| format!("creating {}", self.log.display()))?;
        let child = Command::new(program)
            .args(self.model_args())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut running = RunningModel { child, socket: self.socket.clone() };
        let started = Instant::now();
        while !self.socket.exists() {
            if let Some(status) = running.child.try_wait()? {
                bail!("gpu-model exited at start ({status}); see {}", self.log.display());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("gpu-model did not create {} in {START_TIMEOUT:?}", self.socket.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(running)
    }
}

/// A started model; stopped (killed, reaped, socket removed) on [`RunningModel::stop`] or drop.
pub struct RunningModel {
    child: Child,
    socket: PathBuf,
}

impl RunningModel {
    /// The model's process ID.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Stop the model.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        // Killing our own child by its handle: it has no state worth a graceful shutdown.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for RunningModel {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn qemu_arguments_attach_ram_and_the_doorbell_device() {
        let model = GpuModel::for_arch(Arch::Aarch64, Path::new("/t/gpu"), 1024);
        assert_eq!(
            strings(model.qemu_args()),
            [
                "-object",
                "memory-backend-file,id=gpu-ram,mem-path=/t/gpu/guest-ram,share=on,size=1024M",
                "-machine",
                "memory-backend=gpu-ram",
                "-chardev",
                "socket,path=/t/gpu/gpu.sock,id=gpu",
                "-device",
                "ivshmem-doorbell,chardev=gpu,vectors=1",
            ]
        );
    }

    #[test]
    fn model_arguments_carry_the_ram_base_of_each_machine() {
        let arm = strings(GpuModel::for_arch(Arch::Aarch64, Path::new("/t"), 1024).model_args());
        let x86 = strings(GpuModel::for_arch(Arch::X86_64, Path::new("/t"), 512).model_args());
        assert_eq!(
            arm,
            [
                "--socket", "/t/gpu.sock", "--bar", "/t/gpu-bar", "--local-mib", "64", "--ram", "/t/guest-ram",
                "--ram-mib", "1024", "--ram-base", "0x40000000", "--vectors", "1",
            ]
        );
        assert_eq!(x86[9], "512");
        assert_eq!(x86[11], "0x0");
    }

    #[test]
    fn a_model_that_exits_at_start_is_reported() {
        let dir = std::env::temp_dir().join(format!("xtask-gpu-model-{}", std::process::id()));
        let model = GpuModel::for_arch(Arch::X86_64, &dir, 16);
        let error = model.start_program(Path::new("/bin/false")).err().expect("must fail");
        assert!(error.to_string().contains("exited at start"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
