//! `cargo xtask bench`: benchmarks, not tests. They print figures and
//! ratios against a baseline measured in the same run; nothing here passes
//! or fails on a number.
//!
//! 1. Stage-2 table build on the host (`arch/aarch64/examples/stage2-bench.rs`):
//!    table pages per GiB and build time, against 4 KiB-only tables.
//! 2. Guest-visible costs under QEMU with `-icount shift=0,align=off,sleep=off`
//!    (one virtual counter tick per instruction, DESIGN.md §8): the
//!    `bench-hypercall` guest measures a null hypercall round trip against
//!    the same loop without the call. The same run boots with `bench=dma`:
//!    before the partition starts, the hypervisor maps and unmaps 4 KiB
//!    pages and 2 MiB blocks in a scratch SMMU domain and prints DMA
//!    map/unmap throughput and SMMU invalidation commands per operation.
//! 3. Linux boot to `/init` under Bulkhead against the same kernel and
//!    initramfs booted directly by the same QEMU, both under `-icount`: the
//!    kernel's own uptime when `/init` starts (so firmware time counts on
//!    neither side), as a ratio from one run.
//! 4. On x86_64 (q35, SVM): the null VMMCALL round trip in guest TSC ticks
//!    under `-icount`, against the same loop without the call; and, in the
//!    same run (`bench=dma`), DMA map/unmap of 4 KiB and 2 MiB pages in a
//!    scratch VT-d domain: TSC ticks per operation, throughput, and
//!    invalidation descriptors per operation.
//! 5. GPU mediation, on each architecture (the `gpu-bench` scenarios' configuration and
//!    boot arguments, with the GPU model attached; the GTT write under `-icount`, blit
//!    throughput in real time, see [`bench_gpu`]): in each run the hypervisor
//!    (`bench=gpu`) first times a blit workload on its own ring, then the
//!    `gpu-bench` partition times a trapped GTT entry write and the same
//!    workload through its virtual GPU; printed with the ratio mediated/direct
//!    ticks per blit of the real-time run.
//! 6. Per-process GPU page tables, on each architecture (the `gpu-ppgtt-bench`
//!    scenarios, under `-icount`, see [`bench_ppgtt`]): one trapped page-table
//!    write against an untracked store (ticks and ratio), and the traps to map
//!    64 MiB in a submitted context linking each PT page first or filling it
//!    first, with the shadow pages in use.

use crate::build::{self, BuildOptions};
use crate::config;
use crate::esp::{self, EspSpec};
use crate::gpu_model::GpuModel;
use crate::paths::Workspace;
use anyhow::{Context, Result, bail};
use bulkhead_harness::{QemuCommand, Scenario};
use bulkhead_harness::qemu::ICOUNT;
use bulkhead_harness::runner::{self, Ending, RunOptions};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

/// The configuration of the in-partition benchmarks.
const BENCH_CONFIG: &str = "tests/configs/bench.toml";
/// The configuration of the x86_64 in-partition benchmark.
const X86_BENCH_CONFIG: &str = "tests/configs/x86-bench-hypercall.toml";
/// Boot arguments of the benchmark runs (both architectures): the
/// hypervisor's own DMA map/unmap benchmark runs before the partitions.
const DMA_BENCH_BOOTARGS: &str = "bench=dma";

/// Runs every benchmark and prints the figures; with `--arch x86_64`, only
/// the x86_64 ones.
///
/// # Errors
/// When a benchmark cannot be built or run.
pub fn bench(ws: &Workspace, options: &BuildOptions) -> Result<ExitCode> {
    if options.arch == bulkhead_harness::Arch::X86_64 {
        return bench_x86_64(ws, options);
    }
    println!("== stage-2 table build (host) ==");
    let status = Command::new("cargo")
        .current_dir(&ws.root)
        .args(["run", "--quiet", "--release", "-p", "bulkhead-arch-aarch64", "--example", "stage2-bench"])
        .status()
        .context("running the stage-2 benchmark")?;
    if !status.success() {
        bail!("the stage-2 benchmark failed ({status})");
    }

    println!("\n== guest-visible costs (QEMU TCG, -icount shift=0) ==");
    let compiled = config::compile(&ws.root.join(BENCH_CONFIG), BENCH_CONFIG)?;
    let artifacts = build::build_images(ws, options)?;
    let spec = EspSpec::for_config(Path::new(BENCH_CONFIG), &compiled, Some(DMA_BENCH_BOOTARGS));
    let esp_dir = esp::assemble(ws, &artifacts, &spec)?;
    let mut qemu = QemuCommand::for_arch(options.arch, &esp_dir, 1)
        .with_context(|| format!("{} is not supported yet", options.arch))?;
    qemu.args.extend(ICOUNT.iter().map(Into::into));
    let log = ws.log_path("bench");
    let run_options =
        RunOptions { timeout: Some(Duration::from_secs(300)), log_path: Some(&log), ..RunOptions::default() };
    let outcome = runner::run(&qemu, &run_options)?;
    for line in outcome.lines.iter().filter(|l| l.contains("] bench: ")) {
        println!("{}", line.trim_end());
    }
    match outcome.ending {
        Ending::Exited(Some(0)) => {}
        other => bail!("the benchmark run ended with {other:?} (log: {})", log.display()),
    }

    bench_gpu(ws, &artifacts, &bulkhead_harness::scenarios::gpu::BENCH)?;
    bench_ppgtt(ws, &artifacts, &bulkhead_harness::scenarios::gpu::PPGTT_BENCH);

    println!("\n== Linux boot to /init: under Bulkhead / booted directly (QEMU TCG, -icount shift=0) ==");
    let kernels = crate::linux::ensure_kernels(ws)?;
    let initramfs = crate::initramfs::build(ws, &kernels.busybox)?;
    for (choice, config) in [
        (crate::linux::KernelChoice::Bookworm, "tests/configs/bench-linux-6.1.toml"),
        (crate::linux::KernelChoice::Backports, "tests/configs/bench-linux-6.12.toml"),
    ] {
        let kernel = kernels.get(choice);
        let append = crate::linux_direct::kernel_command_line(2, 256);
        let mut direct = crate::linux_direct::direct_command(&kernel.image, &initramfs, 2, 256, &append);
        direct.args.extend(ICOUNT.iter().map(Into::into));
        let direct_uptime = uptime_at_init(&direct, &ws.log_path(&format!("bench-direct-{}", kernel.release)))?;

        let compiled = config::compile(&ws.root.join(config), config)?;
        let spec = EspSpec::for_config(Path::new(config), &compiled, None);
        let esp_dir = esp::assemble(ws, &artifacts, &spec)?;
        let mut hosted = QemuCommand::for_arch(options.arch, &esp_dir, 2)
            .with_context(|| format!("{} is not supported yet", options.arch))?;
        hosted.args.extend(ICOUNT.iter().map(Into::into));
        let hosted_uptime = uptime_at_init(&hosted, &ws.log_path(&format!("bench-bulkhead-{}", kernel.release)))?;
        println!(
            "Linux {}: /init at {hosted_uptime:.2} s under Bulkhead, {direct_uptime:.2} s directly: ratio {:.3} (goal <= 1.10)",
            kernel.release,
            hosted_uptime / direct_uptime
        );
    }
    bench_x86_64(ws, options)
}

/// The x86_64 benchmark: the null VMMCALL round trip, and DMA map/unmap
/// throughput with invalidations per operation, under `-icount`.
fn bench_x86_64(ws: &Workspace, options: &BuildOptions) -> Result<ExitCode> {
    println!("\n== x86_64 guest-visible costs (QEMU TCG q35, AMD SVM, -icount shift=0) ==");
    let x86 = BuildOptions { arch: bulkhead_harness::Arch::X86_64, ..*options };
    let compiled = config::compile(&ws.root.join(X86_BENCH_CONFIG), X86_BENCH_CONFIG)?;
    let artifacts = build::build_images(ws, &x86)?;
    // `bench=dma`: before the partition starts, the hypervisor times DMA
    // map/unmap in a scratch VT-d domain (same run, same -icount clock).
    let spec = EspSpec::for_config(Path::new(X86_BENCH_CONFIG), &compiled, Some(DMA_BENCH_BOOTARGS));
    let esp_dir = esp::assemble(ws, &artifacts, &spec)?;
    bulkhead_harness::qemu::copy_ovmf_vars(&esp_dir)
        .with_context(|| format!("copying {}", bulkhead_harness::qemu::OVMF_VARS))?;
    let mut qemu = QemuCommand::for_arch(x86.arch, &esp_dir, 1).context("no QEMU command for x86_64")?;
    qemu.args.extend(ICOUNT.iter().map(Into::into));
    let log = ws.log_path("bench-x86");
    let run_options =
        RunOptions { timeout: Some(Duration::from_secs(300)), log_path: Some(&log), ..RunOptions::default() };
    let outcome = runner::run(&qemu, &run_options)?;
    let lines: Vec<&String> = outcome.lines.iter().filter(|l| l.contains("] bench: ")).collect();
    if lines.is_empty() {
        bail!("the x86_64 benchmark printed nothing (log: {})", log.display());
    }
    for line in lines {
        println!("{}", line.trim_end());
    }
    bench_gpu(ws, &artifacts, &bulkhead_harness::scenarios::gpu::X86_BENCH)?;
    bench_ppgtt(ws, &artifacts, &bulkhead_harness::scenarios::gpu::X86_PPGTT_BENCH);
    Ok(ExitCode::SUCCESS)
}

/// The GPU mediation benchmark of one architecture: `scenario`'s
/// configuration and boot arguments (`bench=gpu`), the GPU model attached.
/// Two runs: under `-icount` the trapped GTT entry write is counted in
/// guest instructions (deterministic); blit throughput needs real time,
/// because the GPU is a host process outside QEMU's instruction clock (under
/// `-icount sleep=off` a waiter that polls counts ticks while the model
/// works and one that sleeps counts none), so the direct and mediated
/// figures and their ratio come from one run without `-icount`.
fn bench_gpu(ws: &Workspace, artifacts: &build::Artifacts, scenario: &Scenario) -> Result<()> {
    println!("\n== {} GPU mediation (QEMU TCG, GPU model) ==", artifacts.arch);
    let counted = gpu_run(ws, artifacts, scenario, true)?;
    let timed = gpu_run(ws, artifacts, scenario, false)?;
    let figures = gpu_figures(&counted)
        .and_then(|c| gpu_figures(&timed).map(|t| GpuFigures { gtt_write: c.gtt_write, ..t }))
        .map_err(|missing| anyhow::anyhow!("the GPU benchmark printed no {missing} (logs: target/xtask/logs/bench-{}*)", scenario.name))?;
    println!("{}", figures.summary(artifacts.arch));
    Ok(())
}

/// One benchmark run of `scenario` with the GPU model; its log lines.
fn gpu_run(ws: &Workspace, artifacts: &build::Artifacts, scenario: &Scenario, icount: bool) -> Result<Vec<String>> {
    let compiled = config::compile(&ws.root.join(scenario.config), scenario.config)?;
    let spec = EspSpec::for_config(Path::new(scenario.config), &compiled, scenario.bootargs);
    let esp_dir = esp::assemble(ws, artifacts, &spec)?;
    let mut qemu = QemuCommand::for_arch(artifacts.arch, &esp_dir, 1)
        .with_context(|| format!("{} is not supported yet", artifacts.arch))?;
    if artifacts.arch == bulkhead_harness::Arch::X86_64 {
        bulkhead_harness::qemu::copy_ovmf_vars(&esp_dir)
            .with_context(|| format!("copying {}", bulkhead_harness::qemu::OVMF_VARS))?;
    }
    if icount {
        qemu.args.extend(ICOUNT.iter().map(Into::into));
    }
    let name = format!("bench-{}{}", scenario.name, if icount { "-icount" } else { "" });
    let model = GpuModel::for_run(ws, artifacts.arch, &name);
    qemu.args.extend(model.qemu_args());
    let running = model.start(ws)?;
    let log = ws.log_path(&name);
    let run_options =
        RunOptions { timeout: Some(Duration::from_secs(300)), log_path: Some(&log), ..RunOptions::default() };
    let outcome = runner::run(&qemu, &run_options);
    running.stop();
    let outcome = outcome?;
    let clock = if icount { "-icount, ticks = instructions" } else { "real time" };
    for line in outcome.lines.iter().filter(|l| l.contains("gpu bench") || l.contains("gpu ppgtt bench")) {
        println!("{} [{clock}]", line.trim_end());
    }
    Ok(outcome.lines)
}

/// The GPU benchmark's figures from one run, in counter ticks.
#[derive(Clone, Copy, Debug, PartialEq)]
struct GpuFigures {
    /// One trapped GTT entry write, less the loop without it.
    gtt_write: u64,
    /// One blit on the hypervisor's own ring.
    direct: u64,
    /// One blit through a partition's virtual GPU.
    mediated: u64,
}

impl GpuFigures {
    /// The figures' summary line, with the ratio mediated/direct.
    fn summary(&self, arch: bulkhead_harness::Arch) -> String {
        let ratio = if self.direct == 0 { f64::NAN } else { self.mediated as f64 / self.direct as f64 };
        format!(
            "GPU {arch}: GTT write {} ticks/entry (-icount); blit {} ticks direct, {} ticks mediated (real time, one run): ratio mediated/direct {ratio:.3}",
            self.gtt_write, self.direct, self.mediated
        )
    }
}

/// Reads [`GpuFigures`] from the hypervisor's `gpu bench direct:` line and
/// the guest's `gpu bench: GTT write:` and `gpu bench mediated:` lines.
///
/// # Errors
/// The figure that is missing.
fn gpu_figures(lines: &[String]) -> Result<GpuFigures, &'static str> {
    let find = |marker: &str, unit: &str| {
        lines.iter().find_map(|line| {
            let (_, rest) = line.split_once(marker)?;
            let (before, _) = rest.split_once(unit)?;
            before.split_whitespace().last()?.parse::<u64>().ok()
        })
    };
    Ok(GpuFigures {
        gtt_write: find("gpu bench: GTT write: ", " ticks/entry").ok_or("GTT write figure")?,
        direct: find("gpu bench direct: ", " ticks/blit").ok_or("direct blit figure")?,
        mediated: find("gpu bench mediated: ", " ticks/blit").ok_or("mediated blit figure")?,
    })
}

/// The per-process page-table benchmark of one architecture: `scenario`
/// (`gpu-ppgtt-bench`) under `-icount`, with the GPU model. A run that
/// fails or prints no figures is reported as not measured, and the other
/// benchmarks go on.
fn bench_ppgtt(ws: &Workspace, artifacts: &build::Artifacts, scenario: &Scenario) {
    println!("\n== {} GPU per-process page tables (QEMU TCG, GPU model, -icount shift=0) ==", artifacts.arch);
    let figures = gpu_run(ws, artifacts, scenario, true).and_then(|lines| {
        ppgtt_figures(&lines).map_err(|missing| {
            anyhow::anyhow!("the benchmark printed no {missing} (log: target/xtask/logs/bench-{}-icount*)", scenario.name)
        })
    });
    match figures {
        Ok(figures) => println!("{}", figures.summary(artifacts.arch)),
        Err(e) => println!("GPU PPGTT {}: not measured: {e:#}", artifacts.arch),
    }
}

/// The per-process page-table benchmark's figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PpgttFigures {
    /// Ticks per store to a tracked (write-protected) table page.
    trapped: u64,
    /// Ticks per store to an untracked page.
    untracked: u64,
    /// Traps to map 64 MiB linking each PT page before filling it.
    linked_first: u64,
    /// Traps to map 64 MiB filling each PT page before linking it.
    filled_first: u64,
    /// Shadow pages in use after the second build.
    shadow_pages: u64,
}

impl PpgttFigures {
    fn summary(&self, arch: bulkhead_harness::Arch) -> String {
        let ratio = if self.untracked == 0 { f64::NAN } else { self.trapped as f64 / self.untracked as f64 };
        format!(
            "GPU PPGTT {arch}: page-table write {} ticks trapped, {} ticks untracked: ratio {ratio:.1} (-icount); 64 MiB mapping: {} traps linking PT pages first, {} filling them first; {} shadow pages",
            self.trapped, self.untracked, self.linked_first, self.filled_first, self.shadow_pages
        )
    }
}

/// Reads [`PpgttFigures`] from `gpu-ppgtt-bench`'s lines.
///
/// # Errors
/// The figure that is missing.
fn ppgtt_figures(lines: &[String]) -> Result<PpgttFigures, &'static str> {
    // The number just before `unit` in the text after `marker`.
    let find = |marker: &str, unit: &str| {
        lines.iter().find_map(|line| {
            let (_, rest) = line.split_once(marker)?;
            let (before, _) = rest.split_once(unit)?;
            before.split_whitespace().last()?.parse::<u64>().ok()
        })
    };
    let write = "gpu ppgtt bench: page-table write: ";
    let filled = "gpu ppgtt bench: 64 MiB mapping, PT pages filled first: ";
    Ok(PpgttFigures {
        trapped: find(write, " ticks/store trapped").ok_or("trapped write figure")?,
        untracked: find(write, " ticks/store untracked").ok_or("untracked store figure")?,
        linked_first: find("gpu ppgtt bench: 64 MiB mapping, PT pages linked first: ", " traps").ok_or("linked-first trap count")?,
        filled_first: find(filled, " traps").ok_or("filled-first trap count")?,
        shadow_pages: find(filled, " shadow pages").ok_or("shadow page count")?,
    })
}

/// Boots `command` and returns the kernel's uptime, in seconds, when `/init`
/// started (the init script's `uptime at /init` line).
fn uptime_at_init(command: &QemuCommand, log: &Path) -> Result<f64> {
    let run_options =
        RunOptions { timeout: Some(Duration::from_secs(300)), log_path: Some(log), ..RunOptions::default() };
    let outcome = runner::run(command, &run_options)?;
    outcome
        .lines
        .iter()
        .find_map(|line| {
            let rest = line.split("bulkhead-linux: uptime at /init: ").nth(1)?;
            rest.trim_end().trim_end_matches(" s").trim().parse::<f64>().ok()
        })
        .with_context(|| format!("no `uptime at /init` line (log: {})", log.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppgtt_figures_are_read_from_the_bench_lines() {
        let lines: Vec<String> = [
            "[gpu-ppgtt-bench] gpu ppgtt bench: page-table write: 812 ticks/store trapped, 6 ticks/store untracked, ratio 135.33 (256 stores each; INFO_PT_TRAPS +256 and +0)",
            "[gpu-ppgtt-bench] gpu ppgtt bench: 64 MiB mapping, PT pages linked first: 16416 traps, 36 shadow pages",
            "[gpu-ppgtt-bench] gpu ppgtt bench: 64 MiB mapping, PT pages filled first: 32 traps, 36 shadow pages (4 after unlinking the first build's 32 PT pages)",
        ]
        .map(String::from)
        .to_vec();
        let figures = ppgtt_figures(&lines).unwrap();
        assert_eq!(figures, PpgttFigures { trapped: 812, untracked: 6, linked_first: 16416, filled_first: 32, shadow_pages: 36 });
        assert!(figures.summary(bulkhead_harness::Arch::Aarch64).contains("ratio 135.3"));
        assert_eq!(ppgtt_figures(&lines[..1]), Err("linked-first trap count"));
    }

    #[test]
    fn gpu_figures_come_from_the_three_lines_of_one_run() {
        let lines: Vec<String> = [
            "[bulkhead] bench: gpu bench direct: 64 blits of 262144 bytes: 5120 ticks/blit (1000000 ticks per ms)",
            "[gpu-bench] gpu bench: GTT write: 830 ticks/entry (1024 writes; loop baseline 12 ticks per iteration)",
            "[gpu-bench] gpu bench mediated: 64 blits of 262144 bytes: 7680 ticks/blit (4 submissions of 16, 5 interrupts taken)",
        ]
        .map(String::from)
        .into();
        let figures = gpu_figures(&lines).unwrap();
        assert_eq!(figures, GpuFigures { gtt_write: 830, direct: 5120, mediated: 7680 });
        assert_eq!(
            figures.summary(bulkhead_harness::Arch::Aarch64),
            "GPU aarch64: GTT write 830 ticks/entry (-icount); blit 5120 ticks direct, 7680 ticks mediated (real time, one run): ratio mediated/direct 1.500"
        );
        assert_eq!(gpu_figures(&lines[1..]), Err("direct blit figure"));
        let not_measured = ["[bulkhead] WARN  gpu bench direct: not measured: no GPU".to_string()];
        assert_eq!(gpu_figures(&not_measured), Err("GTT write figure"));
    }
}
