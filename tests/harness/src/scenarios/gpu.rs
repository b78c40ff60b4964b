//! The scenarios of mediated GPU use (DESIGN.md §5): partitions with virtual
//! GPUs on the GPU model, two clients sharing it, an attacker against a
//! victim, and the benchmark guest (its figures are `cargo xtask bench`'s;
//! here it only has to run). Every one attaches the model (`gpu: true`),
//! so guest RAM is a file and [`RamCheck`]s can read back what the
//! partitions left.

use crate::qemu::Arch;
use crate::ram::RamCheck;
use crate::scenario::Scenario;
use bulkhead_abi::exit::ExitCode;
use std::time::Duration;

/// Host addresses the configurations back partition RAM with (the victim's
/// is the one `gpu-attacker` aims at).
const CLIENT_A_HOST: u64 = 0x5000_0000;
const CLIENT_B_HOST: u64 = 0x5200_0000;
const VICTIM_HOST: u64 = 0x5000_0000;
const X86_CLIENT_A_HOST: u64 = 0x3000_0000;
const X86_CLIENT_B_HOST: u64 = 0x3200_0000;
const X86_VICTIM_HOST: u64 = 0x3000_0000;

/// Failures no GPU scenario may show.
const FORBID: &[&str] = &["FAILED", "FATAL", "panic", "not started", "stage-2 fault", "stopped by fault", "SMMU global error"];

/// Two `gpu-client`s with weights 2 and 1 share the GPU: both pass their
/// own pixel checks, and each final image in its RAM matches the rule
/// (background + square in its own colour), read back by the harness.
pub const TWO_CLIENTS: Scenario = Scenario {
    name: "gpu-two-clients",
    config: "tests/configs/gpu-two-clients.toml",
    smp: 2,
    timeout: Duration::from_secs(180),
    gpu: true,
    // The two start on two CPUs at once: either may print first.
    expect: &["all 2 partitions passed"],
    expect_anywhere: &[
        "partition client-a: started",
        "partition client-b: started",
        "[client-a] gpu client: round 4 of 4:",
        "[client-b] gpu client: round 4 of 4:",
        "[client-a] gpu client: final image at 0x40c00000",
        "[client-b] gpu client: final image at 0x40c00000",
        "[client-a] gpu client: passed",
        "[client-b] gpu client: passed",
        "partition client-a: passed",
        "partition client-b: passed",
    ],
    forbid: FORBID,
    ram_checks: &[RamCheck::final_image("client-a", CLIENT_A_HOST), RamCheck::final_image("client-b", CLIENT_B_HOST)],
    ..Scenario::DEFAULT
};

/// x86_64: [`TWO_CLIENTS`].
pub const X86_TWO_CLIENTS: Scenario = Scenario {
    name: "x86-gpu-two-clients",
    arch: Arch::X86_64,
    config: "tests/configs/x86-gpu-two-clients.toml",
    expect_exit: Some(ExitCode::Success),
    // The partitions' start lines differ from arm64's; the rest is anywhere.
    expect: &["all 2 partitions passed"],
    expect_anywhere: &[
        "[client-a] gpu client: round 4 of 4:",
        "[client-b] gpu client: round 4 of 4:",
        "[client-a] gpu client: final image at 0xc00000",
        "[client-b] gpu client: final image at 0xc00000",
        "[client-a] gpu client: passed",
        "[client-b] gpu client: passed",
        "partition client-a: passed",
        "partition client-b: passed",
    ],
    ram_checks: &[
        RamCheck::final_image("client-a", X86_CLIENT_A_HOST),
        RamCheck::final_image("client-b", X86_CLIENT_B_HOST),
    ],
    ..TWO_CLIENTS
};

/// The attacker's lines, in order (the same on both architectures).
const ATTACK_LINES: [&str; 11] = [
    "[attacker] gpu attack: graphics base 0x",
    "[attacker] gpu attack: (a) GTT entry at the neighbour's RAM: refused as expected",
    "[attacker] gpu attack: (b) GTT entry at the hypervisor's memory: refused as expected",
    "[attacker] gpu attack: (b) GTT entry at MMIO: refused as expected",
    "[attacker] gpu attack: (b) GTT entry at local memory beyond its share: refused as expected",
    "[attacker] gpu attack: (c) XY_COLOR_BLT beyond its graphics range: rejected as expected",
    "[attacker] gpu attack: (c) XY_COLOR_BLT below its graphics range: rejected as expected",
    "[attacker] gpu attack: (d) MI_LOAD_REGISTER_IMM: rejected as expected",
    "[attacker] gpu attack: (e) a half-written GTT entry: held until its high half came, then applied",
    "[attacker] gpu attack: a good blit after the attacks: correct",
    "[attacker] gpu attack: passed: every attack failed as expected",
];

/// `gpu-attacker` against `isolation-victim`: every attack fails as
/// expected, the attacker's GPU still works, the victim finds its pattern
/// intact, and so does the harness in the victim's RAM.
pub const ATTACK: Scenario = Scenario {
    name: "gpu-attack",
    config: "tests/configs/gpu-attack.toml",
    smp: 2,
    timeout: Duration::from_secs(180),
    gpu: true,
    expect: &ATTACK_LINES,
    expect_anywhere: &[
        "[victim] pattern intact after the attack window",
        "partition attacker: passed",
        "partition victim: passed",
        "all 2 partitions passed",
    ],
    forbid: &[
        "isolation is broken",
        "pattern damaged",
        "the neighbour's pattern came through the GPU",
        "FAILED",
        "FATAL",
        "panic",
        "not started",
        "stage-2 fault",
        "stopped by fault",
        "SMMU global error",
    ],
    ram_checks: &[RamCheck::victim_pattern(VICTIM_HOST)],
    ..Scenario::DEFAULT
};

/// x86_64: [`ATTACK`].
pub const X86_ATTACK: Scenario = Scenario {
    name: "x86-gpu-attack",
    arch: Arch::X86_64,
    config: "tests/configs/x86-gpu-attack.toml",
    expect_exit: Some(ExitCode::Success),
    expect: &ATTACK_LINES,
    ram_checks: &[RamCheck::victim_pattern(X86_VICTIM_HOST)],
    ..ATTACK
};

/// `gpu-bench` with `bench=gpu`: the hypervisor's direct blit figure, then
/// the guest's GTT-write and mediated blit figures, all in one run (the test
/// only checks that they are produced; `cargo xtask bench` runs it under
/// `-icount` for the GTT write and in real time for the blit ratio).
pub const BENCH: Scenario = Scenario {
    name: "gpu-bench",
    config: "tests/configs/gpu-bench.toml",
    bootargs: Some("bench=gpu"),
    timeout: Duration::from_secs(300),
    gpu: true,
    expect: &[
        "bench: gpu bench direct: ",
        " ticks/blit",
        "[gpu-bench] gpu bench: GTT write: ",
        " ticks/entry",
        "[gpu-bench] gpu bench mediated: ",
        " ticks/blit",
        "partition gpu-bench: passed",
        "all 1 partitions passed",
    ],
    forbid: &["not measured", "FAILED", "FATAL", "panic", "not started", "stage-2 fault", "stopped by fault"],
    ..Scenario::DEFAULT
};

/// x86_64: [`BENCH`].
pub const X86_BENCH: Scenario = Scenario {
    name: "x86-gpu-bench",
    arch: Arch::X86_64,
    config: "tests/configs/x86-gpu-bench.toml",
    expect_exit: Some(ExitCode::Success),
    ..BENCH
};

/// The lines one `gpu-ppgtt` partition must print (any order against the
/// other partition's), for partition `$p` whose final image is at `$image`.
macro_rules! ppgtt_client_lines {
    ($p:literal, $image:literal) => {
        [
            concat!("[", $p, "] gpu ppgtt: contexts A (PML4 "),
            concat!("[", $p, "] gpu ppgtt: (1) context A: fill and store through its own tables: correct"),
            concat!("[", $p, "] gpu ppgtt: (2) context B: fill and store through its own tables: correct"),
            concat!("[", $p, "] gpu ppgtt: (3) a page remapped with one 8-byte store (1 trap): the GPU wrote the new page, the old one kept its contents"),
            concat!("[", $p, "] gpu ppgtt: (4) context B: copies RAM -> local memory -> RAM through its tables: correct"),
            concat!("[", $p, "] gpu ppgtt: (5) a 2 MiB page mapped at 0x100000000, then switched to another 2 MiB page: the GPU followed"),
            concat!("[", $p, "] gpu ppgtt: (6) an entry written as two 4-byte halves just before the submission (2 traps): the GPU followed"),
            concat!("[", $p, "] gpu ppgtt: (7) two adjacent entries in "),
            concat!("[", $p, "] gpu ppgtt: (8) a PT page shared by both contexts: one remap in it took effect in both"),
            concat!("[", $p, "] gpu ppgtt: (9) context B released: "),
            concat!("[", $p, "] gpu ppgtt: final image at ", $image),
            concat!("[", $p, "] gpu ppgtt: passed: "),
            concat!("partition ", $p, ": passed"),
        ]
    };
}

/// [`PPGTT_TWO_CLIENTS`]'s lines (arm64: RAM at 0x4000_0000).
const PPGTT_CLIENT_LINES: [&str; 26] = {
    let (a, b) = (ppgtt_client_lines!("client-a", "0x40c00000"), ppgtt_client_lines!("client-b", "0x40c00000"));
    let mut lines = [""; 26];
    let mut i = 0;
    while i < 13 {
        lines[i] = a[i];
        lines[13 + i] = b[i];
        i += 1;
    }
    lines
};

/// [`X86_PPGTT_TWO_CLIENTS`]'s lines (x86_64: RAM at 0).
const X86_PPGTT_CLIENT_LINES: [&str; 26] = {
    let (a, b) = (ppgtt_client_lines!("client-a", "0xc00000"), ppgtt_client_lines!("client-b", "0xc00000"));
    let mut lines = [""; 26];
    let mut i = 0;
    while i < 13 {
        lines[i] = a[i];
        lines[13 + i] = b[i];
        i += 1;
    }
    lines
};

/// Two `gpu-ppgtt`s at once, each with two contexts of per-process page
/// tables that the hypervisor write-protects and shadows: every step's
/// CPU check of where the GPU wrote passes in both (remap, 2 MiB switch,
/// halves, pair store, shared PT page, release, exact trap and tracked-page
/// counts), and each final image in its RAM matches `gpu-ppgtt`'s rule.
pub const PPGTT_TWO_CLIENTS: Scenario = Scenario {
    name: "gpu-ppgtt-two-clients",
    config: "tests/configs/gpu-ppgtt-two-clients.toml",
    expect: &["all 2 partitions passed"],
    expect_anywhere: &PPGTT_CLIENT_LINES,
    ram_checks: &[RamCheck::ppgtt_image("client-a", CLIENT_A_HOST), RamCheck::ppgtt_image("client-b", CLIENT_B_HOST)],
    ..TWO_CLIENTS
};

/// x86_64: [`PPGTT_TWO_CLIENTS`].
pub const X86_PPGTT_TWO_CLIENTS: Scenario = Scenario {
    name: "x86-gpu-ppgtt-two-clients",
    arch: Arch::X86_64,
    config: "tests/configs/x86-gpu-ppgtt-two-clients.toml",
    expect_exit: Some(ExitCode::Success),
    expect_anywhere: &X86_PPGTT_CLIENT_LINES,
    ram_checks: &[
        RamCheck::ppgtt_image("client-a", X86_CLIENT_A_HOST),
        RamCheck::ppgtt_image("client-b", X86_CLIENT_B_HOST),
    ],
    ..PPGTT_TWO_CLIENTS
};

/// `gpu-ppgtt-attacker`'s lines, in order (the same on both architectures).
const PPGTT_ATTACK_LINES: [&str; 13] = [
    "[attacker] gpu ppgtt attack: graphics base 0x",
    "[attacker] gpu ppgtt attack: (a) leaf at the neighbour's RAM: refused as expected",
    "[attacker] gpu ppgtt attack: (b) leaf at the hypervisor's memory: refused as expected",
    "[attacker] gpu ppgtt attack: (b) leaf at MMIO: refused as expected",
    "[attacker] gpu ppgtt attack: (c) leaf at its own page-table page: refused as expected",
    "[attacker] gpu ppgtt attack: (d) PD entry naming the neighbour's RAM as a PT: refused as expected",
    "[attacker] gpu ppgtt attack: (e) MI_LOAD_REGISTER_IMM of PDP0 in a PPGTT batch: faulted as expected",
    "[attacker] gpu ppgtt attack: (f) PPGTT batch without a PDP0 load: rejected as expected",
    "[attacker] gpu ppgtt attack: (f) PDP0 load of a PML4 outside its RAM: rejected as expected",
    "[attacker] gpu ppgtt attack: (g) a freed PT page reused as memory: its stores no longer trap",
    "[attacker] gpu ppgtt attack: a good batch after the attacks: correct",
    "[attacker] gpu ppgtt attack: passed: every attack failed as expected",
    "partition attacker: passed",
];

/// `gpu-ppgtt-attacker` against `isolation-victim`: every per-process
/// page-table attack fails as expected, the attacker's GPU still works,
/// the victim finds its pattern intact, and so does the harness.
pub const PPGTT_ATTACK: Scenario = Scenario {
    name: "gpu-ppgtt-attack",
    config: "tests/configs/gpu-ppgtt-attack.toml",
    expect: &PPGTT_ATTACK_LINES,
    ..ATTACK
};

/// x86_64: [`PPGTT_ATTACK`].
pub const X86_PPGTT_ATTACK: Scenario = Scenario {
    name: "x86-gpu-ppgtt-attack",
    config: "tests/configs/x86-gpu-ppgtt-attack.toml",
    expect: &PPGTT_ATTACK_LINES,
    ..X86_ATTACK
};

/// `gpu-ppgtt-bench`: its figures are produced (`cargo xtask bench` runs
/// it under `-icount` and prints them).
pub const PPGTT_BENCH: Scenario = Scenario {
    name: "gpu-ppgtt-bench",
    config: "tests/configs/gpu-ppgtt-bench.toml",
    bootargs: None,
    expect: &[
        "[gpu-ppgtt-bench] gpu ppgtt bench: context PML4 ",
        "[gpu-ppgtt-bench] gpu ppgtt bench: page-table write: ",
        " ticks/store trapped, ",
        "[gpu-ppgtt-bench] gpu ppgtt bench: 64 MiB mapping, PT pages linked first: ",
        "[gpu-ppgtt-bench] gpu ppgtt bench: 64 MiB mapping, PT pages filled first: ",
        "partition gpu-ppgtt-bench: passed",
        "all 1 partitions passed",
    ],
    ..BENCH
};

/// x86_64: [`PPGTT_BENCH`].
pub const X86_PPGTT_BENCH: Scenario = Scenario {
    name: "x86-gpu-ppgtt-bench",
    arch: Arch::X86_64,
    config: "tests/configs/x86-gpu-ppgtt-bench.toml",
    expect_exit: Some(ExitCode::Success),
    ..PPGTT_BENCH
};

/// Every GPU scenario, for the checks below and the list in `SCENARIOS`.
#[cfg(test)]
pub const ALL: [&Scenario; 12] = [
    &TWO_CLIENTS,
    &X86_TWO_CLIENTS,
    &ATTACK,
    &X86_ATTACK,
    &BENCH,
    &X86_BENCH,
    &PPGTT_TWO_CLIENTS,
    &X86_PPGTT_TWO_CLIENTS,
    &PPGTT_ATTACK,
    &X86_PPGTT_ATTACK,
    &PPGTT_BENCH,
    &X86_PPGTT_BENCH,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ram::Expected;

    #[test]
    fn gpu_scenarios_attach_the_model_and_check_ram_only_with_it() {
        for scenario in crate::SCENARIOS {
            assert!(scenario.ram_checks.is_empty() || scenario.gpu, "{}: RAM checks need `gpu: true`", scenario.name);
        }
        for scenario in ALL {
            assert!(scenario.gpu, "{}", scenario.name);
            assert!(crate::SCENARIOS.contains(scenario), "{} is not in SCENARIOS", scenario.name);
        }
    }

    #[test]
    fn ram_checks_name_the_configured_host_backings() {
        // The host addresses here must be the configurations' `backing`s.
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        for scenario in ALL {
            let config = std::fs::read_to_string(format!("{root}/{}", scenario.config)).unwrap();
            for check in scenario.ram_checks {
                let offset = match check.expected {
                    Expected::Pattern => bulkhead_abi::testdata::pattern::RAM_OFFSET,
                    Expected::FinalImage { .. } | Expected::PpgttImage { .. } => bulkhead_abi::testdata::final_image::RAM_OFFSET,
                };
                let host = check.host - offset;
                let spelled = format!("{:x}", host);
                let spelled = format!("0x{}_{}", &spelled[..spelled.len() - 4], &spelled[spelled.len() - 4..]);
                assert!(
                    config.contains(&format!("backing = {{ host = {spelled} }}")),
                    "{}: {} expects RAM backed at {spelled}",
                    scenario.name,
                    check.what
                );
            }
        }
    }
}
