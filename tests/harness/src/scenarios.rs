//! The integration scenarios `cargo xtask test` runs.
//!
//! Adding a test: write a guest in `tests/guests/src/bin/`, a configuration
//! in `tests/configs/`, and add one entry here. Every scenario gets its own
//! ESP folder (`target/xtask/<arch>/esp-<name>/`, QEMU's FAT driver writes
//! to it) and its own log (`target/xtask/logs/<name>.log`).

pub mod gpu;

use crate::qemu::Arch;
use crate::scenario::Scenario;
use std::time::Duration;
use bulkhead_abi::boot::{CONFIG_PATH, HV_IMAGE_PATH};
use bulkhead_abi::exit::ExitCode;

/// Every scenario, in the order they are started.
pub const SCENARIOS: &[Scenario] = &[
    // The default demo (`cargo xtask run` without a terminal): Linux with two
    // vCPUs beside a bare-metal partition.
    Scenario {
        name: "demo",
        config: "configs/qemu-virt-demo.toml",
        timeout: Duration::from_secs(120),
        expect: &[
            "console input goes to partition linux",
            "partition hello: started",
            "[hello] Hello from a Bulkhead partition",
            "[linux] bulkhead-linux: /init reached (kernel 6.12.",
            "[linux] bulkhead-linux: check cpus: ok (online 0-1 = 2",
            "[linux] bulkhead-linux: verdict PASS",
            "partition linux: passed",
            "partition hello: passed",
            "all 2 partitions passed",
        ],
        forbid: &["FAIL", "Kernel panic", "stage-2 fault"],
        ..Scenario::DEFAULT
    },
    // Two bare-metal partitions on two CPUs say hello through the console
    // hypercall, each under its own stage 2 and VMID.
    Scenario {
        name: "hello",
        smp: 2,
        expect: &[
            "Bulkhead",
            "PCI 00:01.0 1234:11e8",
            "SMMU at 0x9050000: IDR0 0x0d44101b",
            "every stream aborts",
            "partition hello: CPUs [0]",
            "VMID 1",
            "partition neighbour: CPUs [1]",
            "VMID 2",
            "CPU 1 (MPIDR 0x1) started",
            "[hello] Hello from a Bulkhead partition",
            "partition hello: passed",
            "partition neighbour: passed",
            "all 2 partitions passed",
        ],
        ..Scenario::DEFAULT
    },
    // An edu PCI device assigned to no partition cannot DMA anywhere: the
    // hypervisor itself makes it write into its own memory before starting
    // the partitions; the page stays intact and the SMMU records the fault.
    // The GPU direct path on arm64 (the self-test polls the engine).
    Scenario {
        name: "gpu-selftest",
        bootargs: Some("selftest=gpu"),
        gpu: true,
        expect: &GPU_SELFTEST_LINES,
        forbid: &["FAILED", "panic", "SMMU global error"],
        ..Scenario::DEFAULT
    },
    // One partition drives its virtual GPU through the mediator.
    Scenario {
        name: "gpu-client",
        config: "tests/configs/gpu-client.toml",
        gpu: true,
        expect: &["virtual GPU: GTT", "gpu client: passed", "all 1 partitions passed"],
        forbid: &["FAILED", "panic", "SMMU global error"],
        ..Scenario::DEFAULT
    },
    // Virtual GPUs on the GPU model (scenarios/gpu.rs): two clients
    // sharing it, an attack that must fail, the benchmark guest.
    gpu::TWO_CLIENTS,
    gpu::ATTACK,
    gpu::BENCH,
    // Per-process GPU page tables (shadowed by the hypervisor).
    gpu::PPGTT_TWO_CLIENTS,
    gpu::PPGTT_ATTACK,
    gpu::PPGTT_BENCH,
    Scenario {
        name: "dma-unassigned",
        bootargs: Some("selftest=dma"),
        expect: &[
            "SMMU at 0x9050000",
            "quarantined (DMA refused and recorded)",
            "DMA self-test: edu at 00:01.0 (StreamID 0x8)",
            "SMMU event (DMA self-test): device 00:01.0 (no partition): F_TRANSLATION (0x10): StreamID 0x8, write",
            "DMA self-test: passed",
            "all 2 partitions passed",
        ],
        forbid: &["FAILED", "SMMU global error"],
        ..Scenario::DEFAULT
    },
    // A PCI MSI reaches the hypervisor: the unassigned edu's MSI is routed
    // through the ITS to an LPI on the boot CPU, its stream allowed only
    // the ITS doorbell frame by the SMMU; two raises arrive as the LPI in a
    // bounded interrupt window, and the edu's DMA is still refused.
    Scenario {
        name: "msi-edu",
        bootargs: Some("selftest=msi"),
        expect: &[
            "GICv3 ITS at 0x8080000",
            "MSI: ITS at 0x8080000",
            "doorbell GITS_TRANSLATER 0x8090040",
            "MSI: CPU 0 takes LPIs",
            "SMMU: StreamID 0x8 (00:01.0) may write only the ITS doorbell frame 0x8090000",
            "MSI self-test: edu at 00:01.0 (StreamID 0x8), MSI capability at",
            "MSI self-test: raise 1 of 2: LPI 8192 arrived at the hypervisor on CPU 0",
            "MSI self-test: raise 2 of 2: LPI 8192 arrived at the hypervisor on CPU 0",
            "SMMU event (MSI self-test): device 00:01.0 (no partition): F_TRANSLATION (0x10): StreamID 0x8, write",
            "MSI self-test: the edu's DMA to",
            "MSI self-test: ok",
            "all 2 partitions passed",
        ],
        forbid: &["FAILED", "SMMU global error", "is nobody's", "has no handler"],
        ..Scenario::DEFAULT
    },
    // The edu assigned to partition `dma` (fault policy inject): its DMA
    // within its own RAM is exact; its DMA at the victim's memory (by host
    // address) and at the hypervisor's is refused by the SMMU, logged with
    // device, address and partition, and the partition runs on; the
    // victim's pattern is intact (its own word-by-word check: the harness
    // cannot read guest RAM). Before the attacks the edu's INTx (QEMU
    // `virt`: device 1's INTA is SPI 4 = INTID 36) reaches the guest
    // through its virtual GIC: two hand-raised interrupts (the second one
    // proves the acknowledge deasserted the level line) and one per DMA of
    // the round trip, each checked for its status and for not coming back.
    Scenario {
        name: "dma-edu",
        config: "tests/configs/dma-edu.toml",
        smp: 2,
        expect: &[
            "partition dma: 00:01.0 BAR0 at IPA 0x10000000 (+0x100000, device-ngnre)",
            "partition dma: INTx of its PCI function(s) is interrupt 36",
            "partition dma: 00:01.0 (StreamID 0x8) attached to its SMMU domain, VMID 1",
            "partition dma: DMA view: 1 region(s), 4096 page(s) pinned",
            "partition dma: interrupt 36 goes to CPU 0",
            "[dma] edu at BAR 0x10000000",
            "[dma] INTx from the edu arrived as interrupt 36: raise 1 of 2 (status 0x10000), acknowledged",
            "[dma] INTx from the edu arrived as interrupt 36: raise 2 of 2 (status 0x10000), acknowledged",
            "[dma] INTx from the edu arrived as interrupt 36: the DMA into the device buffer done (status 0x100), acknowledged",
            "[dma] INTx from the edu arrived as interrupt 36: the DMA into its own RAM done (status 0x100), acknowledged",
            "[dma] DMA from its own RAM into the device buffer: correct",
            "[dma] DMA into its own RAM at 0x",
            "[dma] attack: DMA into the neighbour's memory at 0x50800000",
            "device 00:01.0 of partition 'dma': F_TRANSLATION (0x10): StreamID 0x8, write, input address 0x50800000",
            "partition dma: 16 DMA access(es) of device 00:01.0 refused by the SMMU; the partition keeps running (fault policy: inject)",
            "device 00:01.0 of partition 'dma': F_TRANSLATION (0x10): StreamID 0x8, write, input address 0x7b000000",
            "device 00:01.0 of partition 'dma': F_TRANSLATION (0x10): StreamID 0x8, read, input address 0x50800000",
            "[dma] every foreign DMA was kept out",
            "partition dma: DMA domain detached: 1 device(s) back to quarantine, 4096 pinned page(s) released",
            "partition dma: passed",
            "partition victim: passed",
            "all 2 partitions passed",
        ],
        expect_anywhere: &["[victim] pattern intact after the attack window"],
        forbid: &[
            "isolation is broken",
            "pattern damaged",
            "WRONG",
            "SMMU global error",
            "stage-2 fault",
            "INTx from the edu did not arrive",
            "INTx from the edu taken",
            "unexpected interrupt",
            "is nobody's",
        ],
        ..Scenario::DEFAULT
    },
    // The same attack with `on_fault = "stop"`: the first refused DMA (at
    // the victim's memory) stops the partition and blocks its device; the
    // victim finishes its own test.
    Scenario {
        name: "dma-edu-stop",
        config: "tests/configs/dma-edu-stop.toml",
        smp: 2,
        expect_exit: Some(ExitCode::PartitionFailure),
        expect: &[
            "[dma] DMA from its own RAM into the device buffer: correct",
            "[dma] attack: DMA into the neighbour's memory at 0x50800000",
            "device 00:01.0 of partition 'dma': F_TRANSLATION (0x10): StreamID 0x8, write, input address 0x50800000",
            "partition dma: DMA of device 00:01.0 refused by the SMMU; device blocked, partition stopped (fault policy: stop)",
            "partition dma: stopped (fault policy: stop)",
            "partition dma: DMA domain detached",
            "partition dma: stopped by fault: DMA fault: device 00:01.0 F_TRANSLATION (0x10): StreamID 0x8, write, input address 0x50800000",
            "partition victim: passed",
            "1 of 2 partitions did not pass",
        ],
        expect_anywhere: &["[victim] pattern intact after the attack window"],
        forbid: &["isolation is broken", "pattern damaged", "every foreign DMA was kept out", "attack: DMA into the hypervisor"],
        ..Scenario::DEFAULT
    },
    // The boot-time check of host-backed memory against what only the
    // hypervisor knows (where it lives): the greedy partition is not
    // started, the other one runs.
    Scenario {
        name: "boot-refuses-hypervisor-memory",
        config: "tests/configs/greedy.toml",
        smp: 2,
        expect_exit: Some(ExitCode::PartitionFailure),
        expect: &[
            "partition greedy: not started: memory[0].backing: host range 0x78000000..0x80000000 overlaps the hypervisor's own memory",
            "partition hello: started",
            "---- summary ----",
            "partition greedy: not started",
            "partition hello: passed",
            "1 of 2 partitions did not pass",
        ],
        forbid: &["partition greedy: started"],
        ..Scenario::DEFAULT
    },
    // The hypervisor validates the configuration again at boot: a blob built
    // without the host tool's checks gets the same error, only the faulty
    // partition is refused.
    Scenario {
        name: "boot-validation",
        config: "tests/configs/boot-only/cpu-taken.toml",
        skip_build_validation: true,
        smp: 2,
        expect_exit: Some(ExitCode::PartitionFailure),
        expect: &[
            "tests/configs/boot-only/cpu-taken.toml: partition 'second', field 'cpus[0]': CPU 1 is already given to partition 'first'",
            "partition second: not started: tests/configs/boot-only/cpu-taken.toml: partition 'second', field 'cpus[0]'",
            "partition first: started",
            "---- summary ----",
            "partition first: passed",
            "partition second: not started",
            "1 of 2 partitions did not pass",
        ],
        forbid: &["partition second: started"],
        ..Scenario::DEFAULT
    },
    // An unknown function ID returns NOT_SUPPORTED and the guest goes on.
    Scenario {
        name: "unknown-hypercall",
        config: "tests/configs/unknown-hypercall.toml",
        expect: &[
            "unknown hypercall",
            "partition unknown-hypercall: passed",
            "all 1 partitions passed",
        ],
        ..Scenario::DEFAULT
    },
    // A guest touching an IPA outside its memory is stopped, with a report.
    Scenario {
        name: "stage2-fault",
        config: "tests/configs/stage2-fault.toml",
        expect_exit: Some(ExitCode::PartitionFailure),
        expect: &[
            "stage-2 fault",
            "partition 'stage2-fault'",
            "IPA 0x100000000",
            "partition stage2-fault: stopped by fault",
        ],
        forbid: &["all 1 partitions passed"],
        ..Scenario::DEFAULT
    },
    // Two partitions on two CPUs: the attacker's reads and writes of the
    // victim's memory come back as injected aborts, a hypercall aimed at it is
    // refused, and the victim's pattern survives.
    Scenario {
        name: "isolation-inject",
        config: "tests/configs/isolation-inject.toml",
        smp: 2,
        expect: &[
            "stage-2 fault: partition 'attacker' read at IPA 0x50000000",
            "injecting an external abort",
            "[attacker] read of the victim's memory: refused with an external abort",
            "stage-2 fault: partition 'attacker' write at IPA 0x50000000",
            "[attacker] write to the victim's memory: refused",
            "[attacker] read of unassigned memory: refused",
            "[attacker] console write from the victim's memory: Err(InvalidParameter)",
            "[attacker] every attack was refused",
            "[victim] pattern intact after the attack window",
            "all 2 partitions passed",
        ],
        // The two CPUs start in either order; the victim checks its pattern
        // 1.5 s after writing it, after the attacker's rounds.
        expect_anywhere: &["partition attacker: started", "[victim] pattern written"],
        forbid: &["isolation is broken", "pattern damaged"],
        ..Scenario::DEFAULT
    },
    // The same attack with the `stop` policy: the attacker is stopped at its
    // first fault, the victim finishes its own test.
    Scenario {
        name: "isolation-stop",
        config: "tests/configs/isolation-stop.toml",
        smp: 2,
        expect_exit: Some(ExitCode::PartitionFailure),
        expect: &[
            "stage-2 fault: partition 'attacker' read at IPA 0x50000000",
            "partition attacker: stopped (fault policy: stop)",
            "[victim] pattern intact after the attack window",
            "partition attacker: stopped by fault: stage-2 fault",
            "partition victim: passed",
            "1 of 2 partitions did not pass",
        ],
        forbid: &["isolation is broken", "pattern damaged"],
        ..Scenario::DEFAULT
    },
    // Each configured attribute is what AT S12E1R reports through a Normal-WB
    // stage 1; unaligned loads from Normal-NC work, Device is recorded.
    Scenario {
        name: "attributes",
        config: "tests/configs/attributes.toml",
        smp: 2,
        expect: &[
            "(NormalWb): stage 1 0xff, stages 1+2 0xff, expected 0xff: match",
            "(NormalNc): stage 1 0xff, stages 1+2 0x44, expected 0x44: match",
            "(DeviceNGnRE): stage 1 0xff, stages 1+2 0x04, expected 0x04: match",
            "(DeviceNGnRnE): stage 1 0xff, stages 1+2 0x00, expected 0x00: match",
            "unaligned load from normal-nc: no fault",
            "unaligned load from device-ngnre:",
            "ID_AA64PFR0_EL1.SVE = 0",
            "an SVE instruction is undefined",
            "partition attributes: passed",
        ],
        forbid: &["MISMATCH"],
        ..Scenario::DEFAULT
    },
    // The virtual GIC: a bare-metal guest programs the emulated distributor
    // and redistributor, takes virtual timer interrupts forwarded through
    // HW list registers, and sends itself an SGI (trapped and injected).
    Scenario {
        name: "vgic-timer",
        config: "tests/configs/vgic-timer.toml",
        expect: &[
            "[vgic-timer] GIC architecture revision 3",
            "vGIC: write to INTID 40, which is not this partition's: ignored",
            "[vgic-timer] SPI 40 (not ours) stays disabled",
            "[vgic-timer] virtual timer interrupts: 5",
            "[vgic-timer] SGIs to self: 1",
            "[vgic-timer] burst of 7 SGIs delivered: 7",
            "partition vgic-timer: passed",
        ],
        ..Scenario::DEFAULT
    },
    // Debian's Linux 6.1 reaches /init in its partition with two vCPUs (the
    // second started by Linux through PSCI CPU_ON), its checks pass,
    // it reports through the verdict register, and `poweroff` stops only
    // it; the bare-metal partition beside it finishes its own test.
    Scenario {
        name: "linux-6.1",
        config: "tests/configs/linux-6.1.toml",
        smp: 2,
        timeout: Duration::from_secs(120),
        expect: &[
            "partition linux: Linux at 0x40000000",
            "Booting Linux on physical CPU",
            "partition linux: vCPU 1 started on CPU 1",
            "SMP: Total of 2 processors activated",
            "[linux] bulkhead-linux: /init reached (kernel 6.1.",
            "[linux] bulkhead-linux: check cpus: ok (online 0-1 = 2",
            "[linux] bulkhead-linux: check memory: ok",
            "[linux] bulkhead-linux: check timer: ok",
            "[linux] bulkhead-linux: verdict PASS",
            "partition linux: stopped at its request",
            // The bare-metal partition goes on after Linux has stopped.
            "[baremetal] heartbeat",
            "[baremetal] heartbeat 30",
            "partition linux: passed",
            "partition baremetal: passed",
            "all 2 partitions passed",
        ],
        forbid: &["FAIL", "Kernel panic", "stage-2 fault"],
        ..Scenario::DEFAULT
    },
    // The same with Debian's bookworm-backports kernel, Linux 6.12.
    Scenario {
        name: "linux-6.12",
        config: "tests/configs/linux-6.12.toml",
        smp: 2,
        timeout: Duration::from_secs(120),
        expect: &[
            "partition linux: vCPU 1 started on CPU 1",
            "[linux] bulkhead-linux: /init reached (kernel 6.12.",
            "[linux] bulkhead-linux: check cpus: ok (online 0-1 = 2",
            "[linux] bulkhead-linux: check timer: ok",
            "[linux] bulkhead-linux: check cpus-ticking: ok",
            "[linux] bulkhead-linux: verdict PASS",
            "partition linux: stopped at its request",
            "[baremetal] heartbeat",
            "[baremetal] heartbeat 30",
            "partition baremetal: passed",
            "all 2 partitions passed",
        ],
        forbid: &["FAIL", "Kernel panic", "stage-2 fault"],
        ..Scenario::DEFAULT
    },
    // A Linux partition's `reboot` (PSCI SYSTEM_RESET) restarts it from its
    // image; the second boot reaches /init again; the bare-metal partition
    // beside it is undisturbed.
    Scenario {
        name: "linux-reboot",
        config: "tests/configs/linux-reboot.toml",
        timeout: Duration::from_secs(180),
        expect: &[
            "[linux] bulkhead-linux: /init reached",
            "[linux] bulkhead-linux: verdict PASS",
            "[linux] bulkhead-linux: boot 1: reboot",
            "partition linux: reset requested (PSCI SYSTEM_RESET)",
            "partition linux: restarting from its image (boot 2)",
            "[linux] bulkhead-linux: /init reached",
            "[linux] bulkhead-linux: check timer: ok",
            "[linux] bulkhead-linux: verdict PASS",
            "[linux] bulkhead-linux: boot 2: poweroff",
            "partition linux: passed",
            "partition baremetal: passed",
            "all 2 partitions passed",
        ],
        forbid: &["FAIL", "Kernel panic", "stage-2 fault"],
        ..Scenario::DEFAULT
    },
    // Console input reaches the Linux partition's emulated UART: with a
    // person at the console (`interactive=1`) its init starts a shell; what
    // is typed runs there, and `poweroff` ends it.
    Scenario {
        name: "linux-console-input",
        config: "tests/configs/bench-linux-6.1.toml",
        bootargs: Some("interactive=1"),
        timeout: Duration::from_secs(120),
        input: Some(("bulkhead-linux: shell on the console", "echo ok-$((6*7)); poweroff -f\n")),
        expect: &[
            "console input goes to partition linux",
            "bulkhead.shell=1",
            "[linux] bulkhead-linux: verdict PASS",
            "[linux] bulkhead-linux: shell on the console",
            "ok-42",
            "reboot: Power down",
            "partition linux: passed",
        ],
        forbid: &["FAIL", "Kernel panic"],
        ..Scenario::DEFAULT
    },
    // A passed-through device's interrupt: the PL031 RTC's alarm (physical
    // SPI 34) is routed to the partition's CPU and injected through a HW
    // list register.
    Scenario {
        name: "passthrough-rtc",
        config: "tests/configs/passthrough-rtc.toml",
        expect: &[
            "partition rtc: device 'rtc0' at IPA 0x9010000 (device-ngnre)",
            "partition rtc: interrupt 34 goes to CPU 0",
            "[rtc] RTC alarm interrupts: 1",
            "partition rtc: passed",
        ],
        ..Scenario::DEFAULT
    },
    // A partition owns the physical PL011: the hypervisor's console moves to
    // semihosting, the partition writes to the UART itself (no prefix).
    Scenario {
        name: "uart-owner",
        config: "tests/configs/uart-owner.toml",
        // The last line the hypervisor prints on the UART announces the move;
        // after it the hypervisor's lines travel on semihosting (stderr) and
        // the partition's on the UART (stdout): no order between the two.
        expect: &["console: the UART at 0x9000000 goes to partition owner; the hypervisor's console moves to semihosting"],
        expect_anywhere: &[
            "partition owner: interrupt 33 goes to CPU 0",
            "uart-owner: this line went straight to the PL011",
            "partition owner: passed",
        ],
        forbid: &["[owner] uart-owner"],
        ..Scenario::DEFAULT
    },
    // A hypervisor panic reaches the panic handler and exits with 99.
    Scenario {
        name: "hv-panic",
        bootargs: Some("crash=panic"),
        expect_exit: Some(ExitCode::HypervisorFault),
        expect: &["hypervisor panic"],
        ..Scenario::DEFAULT
    },
    // An unexpected exception at EL2 is reported with its syndrome registers.
    Scenario {
        name: "hv-exception",
        bootargs: Some("crash=exception"),
        expect_exit: Some(ExitCode::HypervisorFault),
        expect: &[
            "unexpected exception",
            "ESR_EL2",
            "ELR_EL2",
            "FAR_EL2",
            "HPFAR_EL2",
        ],
        ..Scenario::DEFAULT
    },
    // The loader names the image it cannot read; the firmware then returns to
    // its boot menu and would wait for ever, so the run is stopped early.
    Scenario {
        name: "missing-image",
        omit_images: true,
        expect_exit: None,
        stop_on: Some("bulkhead-boot: error"),
        expect: &["cannot read", "\\bulkhead\\images\\"],
        ..Scenario::DEFAULT
    },
    // A configuration blob that is not one: the loader says which file and why.
    Scenario {
        name: "malformed-config",
        overwrite: &[(CONFIG_PATH, b"this is not a configuration blob")],
        expect_exit: None,
        stop_on: Some("bulkhead-boot: error"),
        expect: &["bulkhead-boot: error: \\bulkhead\\config.bin", "not a Bulkhead configuration blob"],
        forbid: &["entering the hypervisor"],
        ..Scenario::DEFAULT
    },
    // A hypervisor image that is not an ELF file is refused before the jump.
    Scenario {
        name: "malformed-hv-image",
        overwrite: &[(HV_IMAGE_PATH, b"MZ not an ELF image at all")],
        expect_exit: None,
        stop_on: Some("bulkhead-boot: error"),
        expect: &["bulkhead-boot: error: \\bulkhead\\hv.elf", "not an ELF file"],
        forbid: &["entering the hypervisor"],
        ..Scenario::DEFAULT
    },
    // x86_64 on q35 (OVMF), two CPUs: the loader enters the hypervisor in
    // long mode, which reads the memory map and the ACPI MADT (both CPUs'
    // APIC IDs), turns SVM on and runs the default x86 configuration.
    Scenario {
        name: "x86-boot",
        arch: Arch::X86_64,
        config: X86_CONFIG,
        smp: 2,
        expect_exit: Some(ExitCode::Success),
        expect: &[
            "bulkhead-boot: exiting boot services and entering the hypervisor",
            "Bulkhead",
            "hypervisor starting (x86_64, long mode, own GDT and IDT)",
            "own TSS with IST stacks for #DF, NMI and #MC",
            "memory map:",
            "ACPI RSDP at 0x",
            "ACPI MADT: local APIC at 0xfee00000",
            "2 CPU(s), APIC IDs [0, 1]",
            // The hypervisor's own tables replace OVMF's before any partition
            // is built; boot-services memory then joins the free frames.
            "page tables: own identity map live, root 0x",
            "4 KiB MMIO uncached, page 0 and the stack guard unmapped",
            // QEMU's intel-iommu (DESIGN.md §6), every device blocked.
            "ACPI DMAR: host address width",
            "VT-d unit 0 at 0xfed90000: version 1.0, CAP 0x00d2008c222f0606 ECAP 0x0000000000f00f4a: \
             SAGAW 0x6 (3-level yes, 4-level yes), MGAW 48, 65536 domains (16-bit), large pages 2M yes 1G yes, \
             QI yes, SC no, coherent no",
            // TES, RTPS and QIES.
            "VT-d unit 0: translation on (GSTS 0xc4000000), root table 0x",
            "every device blocked (no context entry present)",
            "boot-services code",
            "SVM enabled",
            "[x86-hello] Hello from an x86_64 Bulkhead partition",
            "all 2 partitions passed",
            "run finished: exit code 0 (success)",
        ],
        expect_anywhere: &["[attacker] every attack was refused and the partition kept running"],
        forbid: &["FATAL", "panic", "not started"],
        ..Scenario::DEFAULT
    },
    // An edu DMA engine assigned to no partition is told to copy its buffer
    // into a page of hypervisor memory: VT-d blocks it (no context entry),
    // the page keeps its pattern, and the fault is decoded and logged.
    // The GPU direct path (`selftest=gpu`): with the GPU model attached,
    // the hypervisor drives it itself on its own ring, in its own reserve
    // of local memory and GTT entries: blits, a store into RAM, a user
    // interrupt, then a deliberate fault it recovers from. MSI-X on x86_64.
    Scenario {
        name: "x86-gpu-selftest",
        arch: Arch::X86_64,
        config: X86_CONFIG,
        bootargs: Some("selftest=gpu"),
        gpu: true,
        expect_exit: Some(ExitCode::Success),
        expect: &GPU_SELFTEST_LINES_X86,
        forbid: &["FAILED", "FATAL", "panic"],
        ..Scenario::DEFAULT
    },
    // A virtual GPU on x86_64: the well-behaved client runs its rounds of
    // blits through its GTT and takes each completion as its level
    // interrupt (pin 20 of its virtual I/O APIC).
    Scenario {
        name: "x86-gpu-client",
        arch: Arch::X86_64,
        config: "tests/configs/x86-gpu-client.toml",
        gpu: true,
        expect_exit: Some(ExitCode::Success),
        expect: &[
            "partition gpu-client: virtual GPU: GTT [",
            "partition gpu-client: virtual GPU is device 0 of its virtual PCI bus",
            "partition gpu-client: virtual GPU interrupt is pin 20 of its virtual I/O APIC",
            "[gpu-client] gpu client: vGPU registers at 0x3e000000, local memory at 0x38000000",
            "[gpu-client] gpu client: round 4 of 4",
            "[gpu-client] gpu client: passed",
        ],
        forbid: &["FAILED", "FATAL", "panic", "refused"],
        ..Scenario::DEFAULT
    },
    gpu::X86_TWO_CLIENTS,
    gpu::X86_ATTACK,
    gpu::X86_BENCH,
    gpu::X86_PPGTT_TWO_CLIENTS,
    gpu::X86_PPGTT_ATTACK,
    gpu::X86_PPGTT_BENCH,
    Scenario {
        name: "x86-dma-unassigned",
        arch: Arch::X86_64,
        config: X86_CONFIG,
        bootargs: Some("selftest=dma"),
        expect_exit: Some(ExitCode::Success),
        expect: &[
            "VT-d unit 0: translation on",
            "ACPI MCFG: ECAM at 0x",
            "PCI 00:00.0 8086:29c0",
            " 1234:11e8 class 00ff00, BAR0 mem32 0x",
            "DMA self-test: edu 00:",
            "assigned to no partition, told to copy 4096 bytes from its buffer to hypervisor page 0x",
            "the edu reports its transfer done after",
            "VT-d fault (after the DMA self-test): unit 0 at 0xfed90000: device 00:",
            "write at 0x",
            "reason 0x2 (context entry not present)",
            "unchanged; VT-d blocked and recorded it: device 00:",
            "DMA self-test: passed",
            "all 2 partitions passed",
        ],
        forbid: &["FAILED", "FATAL", "panic", "NOT remapped"],
        ..Scenario::DEFAULT
    },
    // PCI assignment (issue 6): the edu belongs to `dma-owner`; its DMA
    // within the owner's memory is exact, its DMA at the victim's memory
    // and at the hypervisor's is refused by VT-d and reported with the
    // device, the address and the owner; `inject` keeps the owner running;
    // the victim's pattern is intact. Before the attacks the edu's INTx
    // (q35: INTA of device 1 = GSI 21; every other host I/O APIC input is
    // masked) reaches the owner through its virtual I/O APIC as vector
    // 0x41: raised twice by hand, then once per DMA completion, each taken
    // once (no repeat before the EOI) while the guest waits in HLT.
    Scenario {
        name: "x86-dma-edu",
        arch: Arch::X86_64,
        config: "tests/configs/x86-dma-edu.toml",
        smp: 2,
        expect_exit: Some(ExitCode::Success),
        expect: &[
            "I/O APIC 0 at 0xfec00000: version 0x20, 24 inputs (GSI 0..=23), all masked",
            "partition dma-owner: pci[0] 00:01.0 (1234:11e8): BAR0 mem32 0xc0000000 size 0x100000 at GPA = HPA 0xc0000000, DeviceNGnRE",
            "partition dma-owner: pci[0] 00:01.0 INTA is GSI 21 (host vector 0x30), pin 21 of its virtual I/O APIC at 0xfec00000",
            "partition dma-owner: VT-d domain 1 on unit 0 (0xfed90000): 00:01.0 attached, second-level table 0x",
            "DMA view: 1 region(s), 4096 page(s) pinned",
            "partition dma-owner: 1 INTx line(s) routed to the CPU with APIC ID 0",
            "[dma-owner] edu at BAR 0xc0000000, identification 0x010000ed",
            "[dma-owner] virtual I/O APIC: 24 pins, pin 21 -> vector 0x41, level, unmasked",
            "[dma-owner] INTx from the edu arrived as vector 0x41: raise 1 of 2 (status 0x10000), acknowledged",
            "[dma-owner] INTx from the edu arrived as vector 0x41: raise 2 of 2 (status 0x10000), acknowledged",
            "[dma-owner] INTx from the edu arrived as vector 0x41: the DMA into the device buffer done (status 0x100), acknowledged",
            "[dma-owner] INTx from the edu arrived as vector 0x41: the DMA into its own RAM done (status 0x100), acknowledged",
            "[dma-owner] DMA from its own RAM into the device buffer: correct",
            "[dma-owner] DMA into its own RAM at 0x",
            ": 64 bytes correct",
            "[dma-owner] attack: DMA into the neighbour's memory at 0x30800000",
            "VT-d fault: unit 0 at 0xfed90000: device 00:01.0 write at 0x30800000: reason",
            ": DMA of partition 'dma-owner' refused",
            "partition dma-owner: the DMA write by 00:01.0 at 0x30800000 did not happen; it keeps running (fault policy: inject)",
            "[dma-owner] attack: DMA into the hypervisor's memory at 0x3d000000",
            "VT-d fault: unit 0 at 0xfed90000: device 00:01.0 write at 0x3d000000: reason",
            ": DMA of partition 'dma-owner' refused",
            "[dma-owner] attack: DMA from the neighbour's memory at 0x30800000",
            "VT-d fault: unit 0 at 0xfed90000: device 00:01.0 read at 0x30800000: reason",
            ": DMA of partition 'dma-owner' refused",
            "[dma-owner] every foreign DMA was kept out",
            "HLT(s) waited for an interrupt and resumed)",
            "partition dma-owner: 00:01.0 blocked again (context entry cleared, context cache and IOTLB invalidated); VT-d domain 1 detached, 4096 pinned page(s) released",
            "all 2 partitions passed",
        ],
        expect_anywhere: &[
            "partition victim: memory[0] GPA 0x0 -> HPA 0x30000000",
            "[victim] pattern intact after the attack window",
            "partition victim: passed",
            "partition dma-owner: passed",
        ],
        forbid: &[
            "isolation is broken",
            "pattern damaged",
            "WRONG",
            "FATAL",
            "panic",
            "not started",
            "stopped by fault",
            "NOT remapped",
            "INTx from the edu did not arrive",
            "INTx from the edu taken",
            " (0 HLT(s)",
        ],
        ..Scenario::DEFAULT
    },
    // The same attack under the `stop` policy: the owner is stopped at its
    // first foreign DMA (its edu blocked at once), the victim runs on.
    Scenario {
        name: "x86-dma-edu-stop",
        arch: Arch::X86_64,
        config: "tests/configs/x86-dma-edu-stop.toml",
        smp: 2,
        expect_exit: Some(ExitCode::PartitionFailure),
        expect: &[
            "[dma-owner] DMA into its own RAM at 0x",
            ": 64 bytes correct",
            "[dma-owner] attack: DMA into the neighbour's memory at 0x30800000",
            "VT-d fault: unit 0 at 0xfed90000: device 00:01.0 write at 0x30800000: reason",
            ": DMA of partition 'dma-owner' refused",
            "partition dma-owner: its device 00:01.0 attempted a DMA write at 0x30800000 outside its DMA view",
            "device blocked, partition stopped (fault policy: stop)",
            "partition dma-owner: 00:01.0 blocked again",
        ],
        expect_anywhere: &[
            "[victim] pattern intact after the attack window",
            "partition victim: passed",
        ],
        forbid: &["attack: DMA into the hypervisor's memory", "isolation is broken", "pattern damaged", "FATAL", "panic", "not started"],
        ..Scenario::DEFAULT
    },
    // A hostile x86_64 guest (msr): stopped by policy with a report; the
    // hypervisor keeps running and ends the run with its summary.
    Scenario {
        name: "x86-msr",
        arch: Arch::X86_64,
        config: "tests/configs/x86-msr.toml",
        expect_exit: Some(ExitCode::PartitionFailure),
        expect: &[
            "[x86-msr] FS.base written and read back: 0x12345000",
            "[x86-msr] EFER reads 0x500",
            "[x86-msr] EFER after setting NXE: 0xd00",
            "[x86-msr] attacking",
            "partition x86-msr: stopped by fault: WRMSR of MSR 0xc0010117 (value 0x0)",
            "1 of 1 partitions did not pass",
        ],
        forbid: &["the attack was not stopped", "FATAL"],
        ..Scenario::DEFAULT
    },
    // A hostile x86_64 guest (port): stopped by policy with a report; the
    // hypervisor keeps running and ends the run with its summary.
    Scenario {
        name: "x86-port",
        arch: Arch::X86_64,
        config: "tests/configs/x86-port.toml",
        expect_exit: Some(ExitCode::PartitionFailure),
        expect: &[
            "[x86-port] attacking",
            "partition x86-port: stopped by fault: IN of 1 byte(s) at port 0x40",
            "1 of 1 partitions did not pass",
        ],
        forbid: &["the attack was not stopped", "FATAL"],
        ..Scenario::DEFAULT
    },
    // A hostile x86_64 guest (triple): stopped by policy with a report; the
    // hypervisor keeps running and ends the run with its summary.
    Scenario {
        name: "x86-triple",
        arch: Arch::X86_64,
        config: "tests/configs/x86-triple.toml",
        expect_exit: Some(ExitCode::PartitionFailure),
        expect: &[
            "[x86-triple] attacking",
            "partition x86-triple: stopped by fault: triple fault (shutdown)",
            "1 of 1 partitions did not pass",
        ],
        forbid: &["the attack was not stopped", "FATAL"],
        ..Scenario::DEFAULT
    },
    // x86_64: unknown function IDs and bad arguments through VMMCALL return
    // error codes; the guest keeps running.
    Scenario {
        name: "x86-unknown-hypercall",
        arch: Arch::X86_64,
        config: "tests/configs/x86-unknown-hypercall.toml",
        expect: &[
            "unknown hypercall",
            "[x86-unknown-hypercall] all bad calls were refused and the partition kept running",
            "partition x86-unknown-hypercall: passed",
        ],
        ..Scenario::DEFAULT
    },
    // A triple fault stops only that partition: the one beside it, on the
    // other CPU, finishes its own test.
    Scenario {
        name: "x86-triple-beside",
        arch: Arch::X86_64,
        config: "tests/configs/x86-triple-beside.toml",
        smp: 2,
        expect_exit: Some(ExitCode::PartitionFailure),
        expect: &["partition x86-triple: stopped by fault: triple fault (shutdown)"],
        expect_anywhere: &["partition victim: passed", "1 of 2 partitions did not pass"],
        forbid: &["the attack was not stopped", "FATAL"],
        ..Scenario::DEFAULT
    },
    // The first x86_64 partition: a 64-bit guest entered in long mode under
    // SVM with nested paging makes CONSOLE_WRITE, ABI_VERSION and
    // REPORT_RESULT through VMMCALL, then stops.
    Scenario {
        name: "x86-hello",
        arch: Arch::X86_64,
        config: "tests/configs/x86-hello.toml",
        expect_exit: Some(ExitCode::Success),
        expect: &[
            "SVM enabled",
            "partition x86-hello: image x86-hello.bin",
            "partition x86-hello: entering the guest at RIP 0x200000",
            "[x86-hello] Hello from an x86_64 Bulkhead partition",
            "[x86-hello] hypercall ABI version 1.0 via VMMCALL",
            "partition x86-hello: passed",
            "all 1 partitions passed",
            "run finished: exit code 0 (success)",
        ],
        forbid: &["FATAL", "panic", "stopped by fault"],
        ..Scenario::DEFAULT
    },
    // Two x86_64 partitions at the same time on two CPUs: the victim runs on
    // an application processor started with INIT-SIPI-SIPI. The attacker's
    // hypercall on foreign memory is refused; its read of a guest-physical
    // address outside its RAM is a nested page fault (its guest page table
    // maps the first 4 GiB, its NPT only its RAM) and the `stop` policy
    // stops it; the victim's pattern is intact.
    Scenario {
        name: "x86-isolation",
        arch: Arch::X86_64,
        config: "tests/configs/x86-isolation.toml",
        smp: 2,
        expect_exit: Some(ExitCode::PartitionFailure),
        expect: &[
            "[attacker] console write from 0x30000000: Err(InvalidParameter)",
            "[attacker] reading 0x30000000",
            "partition attacker: nested page fault: partition 'attacker' read at GPA 0x30000000 (RIP 0x",
            "[victim] pattern intact after the attack window",
            "partition attacker: stopped by fault: nested page fault: partition 'attacker' read at GPA 0x30000000",
            "partition victim: passed",
            "1 of 2 partitions did not pass",
        ],
        // The two CPUs run at the same time: these come in either order.
        expect_anywhere: &[
            "SMP: boot CPU APIC ID 0",
            "CPU with APIC ID 1 is up (AP, long mode, own page tables, GDT, TSS and IDT)",
            "partition victim: entering the guest",
            "[victim] pattern written",
        ],
        forbid: &["isolation is broken", "pattern damaged", "FATAL", "not started"],
        ..Scenario::DEFAULT
    },
    // The `inject` policy on x86_64: the attacker's forbidden MSR, port,
    // memory and MMIO accesses each come back to it as #GP(0), which it
    // catches; its own ports (the RTC) and its emulated verdict register
    // work; the victim on the other CPU keeps its pattern.
    Scenario {
        name: "x86-isolation-inject",
        arch: Arch::X86_64,
        config: "tests/configs/x86-isolation-inject.toml",
        smp: 2,
        expect_exit: Some(ExitCode::Success),
        expect: &[
            "[attacker] RTC through its own ports: status B",
            "[attacker] verdict register reads 0xffffffff (byte 0xff) before any write",
            "MMIO access at GPA 0xa000000",
            "[attacker] ADD to the verdict register (not a plain move): #GP(0), as the policy says",
            "WRMSR of MSR 0xc0010117 (value 0x0)",
            "injecting #GP(0) (fault policy: inject)",
            "[attacker] WRMSR VM_HSAVE_PA: #GP(0), as the policy says",
            "[attacker] RDMSR IA32_APIC_BASE: #GP(0), as the policy says",
            "[attacker] WRMSR EFER with SVME: #GP(0), as the policy says",
            "OUT of 1 byte(s) at port 0x64",
            "[attacker] OUT to the reset control register (0xcf9): #GP(0), as the policy says",
            "nested page fault: partition 'attacker' read at GPA 0x30000000",
            "[attacker] write outside its RAM: #GP(0), as the policy says",
            "[attacker] console write from 0x30000000: Err(InvalidParameter)",
            "[attacker] every attack was refused and the partition kept running",
            "partition attacker: passed",
            "all 2 partitions passed",
        ],
        expect_anywhere: &[
            "partition victim: memory[0] GPA 0x0 -> HPA 0x30000000",
            "[victim] pattern intact after the attack window",
            "partition victim: passed",
        ],
        forbid: &["isolation is broken", "pattern damaged", "FATAL", "not started", "stopped by fault"],
        ..Scenario::DEFAULT
    },
    // x86_64: a partition whose host-backed RAM would overlap the
    // hypervisor's own memory is refused at boot; the other one runs.
    Scenario {
        name: "x86-boot-refuses-hypervisor-memory",
        arch: Arch::X86_64,
        config: "tests/configs/x86-greedy.toml",
        smp: 2,
        expect_exit: Some(ExitCode::PartitionFailure),
        expect: &[
            "partition greedy: not started: memory[0].backing: host range 0x3c000000..0x3e000000 overlaps the hypervisor",
            "partition hello: entering the guest",
            "---- summary ----",
            "partition greedy: not started",
            "partition hello: passed",
            "1 of 2 partitions did not pass",
        ],
        forbid: &["partition greedy: entering the guest", "FATAL"],
        ..Scenario::DEFAULT
    },
    // x86_64: the hypervisor validates the configuration again at boot; only
    // the faulty partition is refused.
    Scenario {
        name: "x86-boot-validation",
        arch: Arch::X86_64,
        config: "tests/configs/boot-only/x86-cpu-taken.toml",
        skip_build_validation: true,
        smp: 2,
        expect_exit: Some(ExitCode::PartitionFailure),
        expect: &[
            "tests/configs/boot-only/x86-cpu-taken.toml: partition 'second', field 'cpus[0]': CPU 1 is already given to partition 'first'",
            "partition second: not started: tests/configs/boot-only/x86-cpu-taken.toml: partition 'second', field 'cpus[0]'",
            "partition first: entering the guest",
            "---- summary ----",
            "partition first: passed",
            "partition second: not started",
            "1 of 2 partitions did not pass",
        ],
        forbid: &["partition second: entering the guest", "FATAL"],
        ..Scenario::DEFAULT
    },
    // The loader on OVMF names a missing guest image and returns an error.
    Scenario {
        name: "x86-missing-image",
        arch: Arch::X86_64,
        config: X86_CONFIG,
        omit_images: true,
        expect_exit: None,
        stop_on: Some("bulkhead-boot: error"),
        expect: &["cannot read", "\\bulkhead\\images\\"],
        forbid: &["entering the hypervisor"],
        ..Scenario::DEFAULT
    },
    // A configuration blob that is not one, on OVMF.
    Scenario {
        name: "x86-malformed-config",
        arch: Arch::X86_64,
        config: X86_CONFIG,
        overwrite: &[(CONFIG_PATH, b"this is not a configuration blob")],
        expect_exit: None,
        stop_on: Some("bulkhead-boot: error"),
        expect: &["bulkhead-boot: error: \\bulkhead\\config.bin", "not a Bulkhead configuration blob"],
        forbid: &["entering the hypervisor"],
        ..Scenario::DEFAULT
    },
    // A hypervisor image that is not an ELF file is refused before the jump, on OVMF.
    Scenario {
        name: "x86-malformed-hv-image",
        arch: Arch::X86_64,
        config: X86_CONFIG,
        overwrite: &[(HV_IMAGE_PATH, b"MZ not an ELF image at all")],
        expect_exit: None,
        stop_on: Some("bulkhead-boot: error"),
        expect: &["bulkhead-boot: error: \\bulkhead\\hv.elf", "not an ELF file"],
        forbid: &["entering the hypervisor"],
        ..Scenario::DEFAULT
    },
    // x86_64 memory attributes: the memory type the live NPT gives each
    // region's page (read back through the table the CPU walks) is the one
    // its configured attribute means; an unassigned page is refused.
    Scenario {
        name: "x86-attributes",
        arch: Arch::X86_64,
        config: "tests/configs/x86-attributes.toml",
        expect: &[
            "(NormalWb): guest PAT type WB, second-level type WB, expected WB: match",
            "(NormalNc): guest PAT type WB, second-level type WC, expected WC: match",
            "(DeviceNGnRE): guest PAT type WB, second-level type UC, expected UC: match",
            "(DeviceNGnRnE): guest PAT type WB, second-level type UC, expected UC: match",
            "[x86-attributes] unassigned 0x30000000: Err(InvalidParameter)",
            "partition x86-attributes: passed",
        ],
        forbid: &["MISMATCH", "FATAL"],
        ..Scenario::DEFAULT
    },
    // A hypervisor panic on x86_64 ends the run through isa-debug-exit with 99.
    Scenario {
        name: "x86-panic",
        arch: Arch::X86_64,
        config: X86_CONFIG,
        bootargs: Some("crash=panic"),
        expect_exit: Some(ExitCode::HypervisorFault),
        expect: &["hypervisor starting (x86_64", "hypervisor panic: ", "deliberate panic"],
        ..Scenario::DEFAULT
    },
    // A load from a non-canonical address raises #GP, which our own IDT
    // reports with RIP, CR2 and the registers.
    Scenario {
        name: "x86-exception",
        arch: Arch::X86_64,
        config: X86_CONFIG,
        bootargs: Some("crash=exception"),
        expect_exit: Some(ExitCode::HypervisorFault),
        expect: &[
            "hypervisor starting (x86_64",
            "unexpected exception: vector 13 (#GP general protection)",
            "error code 0x0",
            "RIP 0x",
            "CR2 0x",
            "rax 0x",
            "r15 0x",
        ],
        forbid: &["hypervisor panic"],
        ..Scenario::DEFAULT
    },
    // A load from page 0 faults: the hypervisor's own tables leave it (and
    // every other hole) unmapped.
    Scenario {
        name: "x86-null",
        arch: Arch::X86_64,
        config: X86_CONFIG,
        bootargs: Some("crash=null"),
        expect_exit: Some(ExitCode::HypervisorFault),
        expect: &[
            "page tables: own identity map live",
            "unexpected exception: vector 14 (#PF page fault)",
            // Not present, read, supervisor.
            "error code 0x0",
            "CR2 0x0000000000000000",
        ],
        forbid: &["hypervisor panic"],
        ..Scenario::DEFAULT
    },
    // The stack pointer runs into the unmapped guard page below the boot
    // stack: the #PF cannot be pushed there, so the CPU raises #DF, which
    // its IST stack still reports (without it: a triple fault and a silent
    // reset).
    Scenario {
        name: "x86-double-fault",
        arch: Arch::X86_64,
        config: X86_CONFIG,
        bootargs: Some("crash=stack-overflow"),
        expect_exit: Some(ExitCode::HypervisorFault),
        expect: &[
            "own TSS with IST stacks for #DF, NMI and #MC",
            "crash test requested by the boot arguments: StackOverflow",
            "unexpected exception: vector 8 (#DF double fault)",
            "error code 0x0",
            "RIP 0x",
            "rax 0x",
        ],
        forbid: &["hypervisor panic", "vector 14"],
        ..Scenario::DEFAULT
    },
];

/// The configuration of the x86_64 boot scenarios: one partition running
/// `x86-hello.bin` under SVM.
pub const X86_CONFIG: &str = "configs/qemu-q35.toml";


/// The `selftest=gpu` lines, in order (arm64; x86_64 adds the MSI-X line).
const GPU_SELFTEST_LINES: [&str; 8] = [
    "hypervisor reserve: local [0, 0x400000) in GTT [0, 1024), the rest at the scratch page",
    "gpu selftest: device ",
    "gpu selftest: reserve ring",
    "gpu selftest: ring ran to its tail",
    "gpu selftest: XY_COLOR_BLT and XY_SRC_COPY_BLT in local memory ok",
    "gpu selftest: MI_STORE_DATA_IMM into RAM and the fence page, MI_USER_INTERRUPT ok",
    "gpu selftest: blit to a not-present GTT entry faulted (code 1",
    "gpu selftest: fault cleared, HEAD moved past the command, the ring ran on ok",
];

/// The x86_64 `selftest=gpu` lines, in order.
const GPU_SELFTEST_LINES_X86: [&str; 10] = [
    "hypervisor reserve: local [0, 0x400000) in GTT [0, 1024), the rest at the scratch page",
    "MSI-X vector 0 -> host vector",
    "gpu selftest: device ",
    "gpu selftest: reserve ring",
    "gpu selftest: ring ran to its tail",
    "gpu selftest: XY_COLOR_BLT and XY_SRC_COPY_BLT in local memory ok",
    "gpu selftest: MI_STORE_DATA_IMM into RAM and the fence page, MI_USER_INTERRUPT ok",
    "gpu selftest: MSI-X interrupt taken",
    "gpu selftest: blit to a not-present GTT entry faulted (code 1",
    "gpu selftest: fault cleared, HEAD moved past the command, the ring ran on ok",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_usable_as_file_names() {
        let mut seen = HashSet::new();
        for scenario in SCENARIOS {
            assert!(
                seen.insert(scenario.name),
                "duplicate scenario {}",
                scenario.name
            );
            assert!(!scenario.name.is_empty());
            assert!(
                scenario
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
                "{}",
                scenario.name
            );
        }
    }

    #[test]
    fn every_scenario_can_end_and_checks_something() {
        for scenario in SCENARIOS {
            assert_eq!(
                scenario.expect_exit.is_none(),
                scenario.stop_on.is_some(),
                "{}: a scenario without an exit code must have a stop line, and only then",
                scenario.name
            );
            assert!(
                !scenario.expect.is_empty(),
                "{} expects nothing",
                scenario.name
            );
            assert!(
                scenario.smp >= 1 && !scenario.timeout.is_zero(),
                "{}",
                scenario.name
            );
            assert!(scenario.config.ends_with(".toml"), "{}", scenario.name);
        }
    }
}
