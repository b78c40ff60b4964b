//! `cargo xtask linux-direct`: boots a Debian kernel and the test initramfs
//! directly under QEMU, without the hypervisor.
//!
//! This proves the guest payload (kernel, busybox, `tests/linux/init`) works
//! on its own, and is the baseline of the boot-time benchmark (DESIGN.md §8:
//! Linux boot to `/init` under Bulkhead ÷ the same kernel booted directly).
//!
//! ```text
//! qemu-system-aarch64 -M virt,gic-version=3 -cpu max -smp N -m M -nographic -no-reboot
//!   -kernel IMAGE -initrd INITRAMFS -append "console=ttyAMA0 bulkhead.cpus=N bulkhead.mem_mib=M"
//!   -nic none
//! ```
//!
//! The run goes through the harness runner (120 s limit, log in
//! `target/xtask/logs/linux-direct-KERNEL.log`). The init's lines are
//! printed, with the wall-clock time from QEMU's start to the `/init
//! reached` line; the exit code is 0 exactly when the init printed `verdict
//! PASS`. The guest powers off with PSCI SYSTEM_OFF, which ends QEMU.
//!
//! With `--shell` the guest gets `bulkhead.shell=1` and QEMU the terminal
//! (no log, no limit): after the checks an interactive shell runs on the
//! console; exiting it powers off.

use crate::initramfs;
use crate::linux::{self, Fetch, KernelChoice};
use crate::paths::Workspace;
use crate::run;
use anyhow::{Context, Result};
use bulkhead_harness::QemuCommand;
use bulkhead_harness::runner::{self, Ending, RunOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Limit on one direct boot.
pub const TIMEOUT: Duration = Duration::from_secs(120);
/// What every line of the init starts with.
pub const LINE_PREFIX: &str = "bulkhead-linux: ";
/// The init's first line (followed by the kernel release).
pub const INIT_REACHED: &str = "bulkhead-linux: /init reached";
/// How often the log is read while waiting for [`INIT_REACHED`].
const WATCH_PERIOD: Duration = Duration::from_millis(5);
/// Log lines shown when a run fails.
const FAILURE_TAIL: usize = 40;

/// Options of `cargo xtask linux-direct`.
#[derive(clap::Args)]
pub struct LinuxDirectArgs {
    /// Which Debian kernel: bookworm (Linux 6.1) or backports (Linux 6.12).
    #[arg(long, value_enum, default_value_t = KernelChoice::Bookworm)]
    pub kernel: KernelChoice,
    /// CPUs of the machine (and the count the guest must see).
    #[arg(long, default_value_t = 2)]
    pub smp: u32,
    /// RAM of the machine in MiB (and what the guest must see).
    #[arg(long, default_value_t = 256)]
    pub mem: u32,
    /// Resolve the package versions again (apt-get update) even when cached.
    #[arg(long)]
    pub refresh: bool,
    /// After the checks, an interactive shell on this terminal (no time limit).
    #[arg(long)]
    pub shell: bool,
}

/// The guest's kernel command line for a machine of `smp` CPUs and
/// `mem_mib` MiB.
pub fn kernel_command_line(smp: u32, mem_mib: u32) -> String {
    format!("console=ttyAMA0 bulkhead.cpus={smp} bulkhead.mem_mib={mem_mib}")
}

/// The QEMU command that boots `image` with `initramfs` directly.
pub fn direct_command(
    image: &Path,
    initramfs: &Path,
    smp: u32,
    mem_mib: u32,
    append: &str,
) -> QemuCommand {
    let words = [
        "-M",
        "virt,gic-version=3",
        "-cpu",
        "max",
        "-smp",
        &smp.to_string(),
        "-m",
        &mem_mib.to_string(),
        "-nographic",
        "-no-reboot",
        "-kernel",
    ]
    .map(String::from);
    let mut args: Vec<std::ffi::OsString> = words.into_iter().map(Into::into).collect();
    args.push(image.into());
    args.push("-initrd".into());
    args.push(initramfs.into());
    args.push("-append".into());
    args.push(append.into());
    args.push("-nic".into());
    args.push("none".into());
    QemuCommand {
        program: "qemu-system-aarch64".into(),
        args,
    }
}

/// The init's lines in a console log, from the prefix on (the kernel may
/// have written onto the same line first).
pub fn init_lines(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|line| line.find(LINE_PREFIX).map(|at| line[at..].trim_end()))
        .collect()
}

/// The verdict the init printed: `Some(true)` for PASS, `Some(false)` for
/// FAIL, `None` when it printed none.
pub fn verdict(lines: &[&str]) -> Option<bool> {
    lines.iter().find_map(|line| {
        match line.strip_prefix(LINE_PREFIX)?.strip_prefix("verdict ")? {
            "PASS" => Some(true),
            "FAIL" => Some(false),
            _ => None,
        }
    })
}

/// Fetches (or finds) the kernel and busybox, builds the initramfs and
/// boots it.
///
/// # Errors
/// When fetching, the initramfs or QEMU's start fails.
pub fn linux_direct(ws: &Workspace, args: &LinuxDirectArgs) -> Result<ExitCode> {
    let kernels = if args.refresh {
        linux::ensure_kernels_with(ws, Fetch::Refresh)?
    } else {
        linux::ensure_kernels(ws)?
    };
    let kernel = kernels.get(args.kernel);
    println!(
        "linux-direct: kernel {} ({}): {}",
        kernel.release, kernel.package, kernel.header
    );
    let initramfs = initramfs::build(ws, &kernels.busybox)?;
    println!(
        "linux-direct: initramfs {} (busybox {})",
        initramfs.display(),
        kernels.busybox_package.version
    );
    let mut append = kernel_command_line(args.smp, args.mem);
    if args.shell {
        append.push_str(" bulkhead.shell=1");
    }
    let qemu = direct_command(&kernel.image, &initramfs, args.smp, args.mem, &append);
    println!("linux-direct: {qemu}");
    if args.shell {
        let status = qemu
            .to_command()
            .status()
            .with_context(|| format!("starting {}", qemu.program))?;
        return Ok(if status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }

    run::install_interrupt_handler();
    let log = ws.log_path(&format!("linux-direct-{}", kernel.choice));
    // The watcher must not see the previous run's log.
    let _ = std::fs::remove_file(&log);
    let watch = LogWatch::start(log.clone(), INIT_REACHED);
    let start = Instant::now();
    let options = RunOptions {
        timeout: Some(TIMEOUT),
        log_path: Some(&log),
        ..RunOptions::default()
    };
    let outcome = runner::run(&qemu, &options);
    let reached = watch.stop();
    let outcome = outcome.with_context(|| format!("running {}", qemu.program))?;

    let lines = init_lines(&outcome.lines);
    for line in &lines {
        println!("{line}");
    }
    if let Some(at) = reached {
        println!(
            "linux-direct: boot to /init: {:.2} s (QEMU start to the /init line, host wall clock)",
            at.saturating_duration_since(start).as_secs_f64()
        );
    }
    let verdict = verdict(&lines);
    let ended_well = outcome.ending == Ending::Exited(Some(0));
    if verdict != Some(true) || !ended_well {
        for line in tail(&outcome.lines, FAILURE_TAIL) {
            println!("  | {line}");
        }
    }
    println!(
        "linux-direct: {} on {} CPUs, {} MiB: {}; QEMU {} after {:.1} s (log: {})",
        kernel.release,
        args.smp,
        args.mem,
        match verdict {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "no verdict",
        },
        describe(&outcome.ending),
        outcome.elapsed.as_secs_f64(),
        log.display()
    );
    Ok(if verdict == Some(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn describe(ending: &Ending) -> String {
    match ending {
        Ending::Exited(Some(code)) => format!("exited with {code}"),
        Ending::Exited(None) => "was killed by a signal".into(),
        Ending::StoppedEarly => "was stopped".into(),
        Ending::TimedOut(limit) => format!("timed out after {} s", limit.as_secs()),
    }
}

fn tail(lines: &[String], count: usize) -> &[String] {
    &lines[lines.len().saturating_sub(count)..]
}

/// Notes when a line containing a text first appears in a log file that
/// the harness runner is writing (the runner flushes each line as it
/// arrives; it does not time lines itself).
struct LogWatch {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Option<Instant>>,
}

impl LogWatch {
    fn start(path: PathBuf, needle: &'static str) -> LogWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut searched: usize = 0;
            while !stop_flag.load(Ordering::Relaxed) {
                if let Ok(bytes) = std::fs::read(&path) {
                    // Search from a little before the previous end, so a
                    // needle split across two reads is still found.
                    let from = searched.saturating_sub(needle.len()).min(bytes.len());
                    if bytes[from..]
                        .windows(needle.len())
                        .any(|w| w == needle.as_bytes())
                    {
                        return Some(Instant::now());
                    }
                    searched = bytes.len();
                }
                thread::sleep(WATCH_PERIOD);
            }
            None
        });
        LogWatch { stop, handle }
    }

    /// Stops watching; when the text appeared.
    fn stop(self) -> Option<Instant> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direct_command_matches_the_baseline_recipe() {
        let command = direct_command(
            Path::new("/k/vmlinuz"),
            Path::new("/i.cpio"),
            2,
            256,
            &kernel_command_line(2, 256),
        );
        assert_eq!(
            command.to_string(),
            "qemu-system-aarch64 -M virt,gic-version=3 -cpu max -smp 2 -m 256 -nographic -no-reboot \
             -kernel /k/vmlinuz -initrd /i.cpio \
             -append console=ttyAMA0 bulkhead.cpus=2 bulkhead.mem_mib=256 -nic none"
        );
        let append = command.args.iter().position(|a| a == "-append").unwrap();
        assert_eq!(
            command.args[append + 1],
            "console=ttyAMA0 bulkhead.cpus=2 bulkhead.mem_mib=256",
            "the command line is one argument"
        );
    }

    #[test]
    fn init_lines_are_found_behind_kernel_output() {
        let log: Vec<String> = [
            "[    1.0] Run /init as init process",
            "bulkhead-linux: /init reached (kernel 6.1.0-50-cloud-arm64)",
            "[    2.1] random: crng initbulkhead-linux: check cpus: ok (x)\r",
            "bulkhead-linux: verdict PASS",
        ]
        .map(String::from)
        .to_vec();
        let lines = init_lines(&log);
        assert_eq!(
            lines,
            [
                "bulkhead-linux: /init reached (kernel 6.1.0-50-cloud-arm64)",
                "bulkhead-linux: check cpus: ok (x)",
                "bulkhead-linux: verdict PASS",
            ]
        );
        assert_eq!(verdict(&lines), Some(true));
    }

    #[test]
    fn the_verdict_is_pass_fail_or_missing() {
        assert_eq!(verdict(&["bulkhead-linux: verdict FAIL"]), Some(false));
        assert_eq!(verdict(&["bulkhead-linux: check x: ok ()"]), None);
        assert_eq!(verdict(&["bulkhead-linux: verdict PASSED"]), None);
    }

    #[test]
    fn the_log_watch_notes_a_line_written_later() {
        let dir = std::env::temp_dir().join(format!("xtask-logwatch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.log");
        let watch = LogWatch::start(path.clone(), INIT_REACHED);
        thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "boot\n").unwrap();
        thread::sleep(Duration::from_millis(20));
        let before = Instant::now();
        std::fs::write(&path, "boot\nbulkhead-linux: /init reached (kernel x)\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !watch.handle.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let seen = watch.stop().expect("the line was seen");
        assert!(seen >= before);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
