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

/// Every GPU scenario, for the checks below and the list in `SCENARIOS`.
#[cfg(test)]
pub const ALL: [&Scenario; 6] = [&TWO_CLIENTS, &X86_TWO_CLIENTS, &ATTACK, &X86_ATTACK, &BENCH, &X86_BENCH];

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
