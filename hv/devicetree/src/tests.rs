//! Host tests: build trees, parse them back with the `fdt` crate, and check
//! every node and property; then the refusals.

extern crate std;

use std::string::String;
use std::vec::Vec;
use std::{format, vec};

use fdt::Fdt;

use crate::emit::{APB_PCLK_HZ, APB_PCLK_PHANDLE, GIC_PHANDLE};
use crate::*;

/// A partition shaped like QEMU `virt`: 4 vCPUs, RAM below and above 4 GiB.
fn sample() -> GuestPlatform {
    GuestPlatform {
        memory: vec![
            GuestRange::new(0x1_0000_0000, 0x400_0000),
            GuestRange::new(0x4000_0000, 0x1000_0000),
        ],
        cpu_count: 4,
        psci: PsciConduit::Hvc,
        gic: GicV3 {
            distributor: GuestRange::new(0x0800_0000, 0x1_0000),
            redistributors: GuestRange::new(0x080a_0000, 0xf6_0000),
            maintenance_intid: GIC_MAINTENANCE_INTID,
        },
        timer: ArchTimer::BSA,
        uart: Some(Pl011 {
            registers: GuestRange::new(0x0900_0000, 0x1000),
            intid: 33,
        }),
        bootargs: String::from("console=ttyAMA0 earlycon rdinit=/init"),
        initrd: Some(GuestRange::new(0x4800_0000, 0x12_3400)),
    }
}

fn parse(dtb: &[u8]) -> Fdt<'_> {
    Fdt::new(dtb).expect("the output parses as an FDT")
}

/// The raw value of `name` in the node at `path`; panics if either is missing.
fn prop<'a>(fdt: &Fdt<'a>, path: &str, name: &str) -> &'a [u8] {
    let node = fdt.find_node(path).unwrap_or_else(|| panic!("node {path}"));
    node.property(name)
        .unwrap_or_else(|| panic!("property {path}:{name}"))
        .value
}

fn has_prop(fdt: &Fdt<'_>, path: &str, name: &str) -> bool {
    fdt.find_node(path)
        .unwrap_or_else(|| panic!("node {path}"))
        .property(name)
        .is_some()
}

/// Big-endian 32-bit cells.
fn cells(value: &[u8]) -> Vec<u32> {
    assert_eq!(value.len() % 4, 0, "whole cells");
    value
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Big-endian 64-bit values (pairs of cells).
fn u64s(value: &[u8]) -> Vec<u64> {
    assert_eq!(value.len() % 8, 0, "whole pairs of cells");
    value
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

/// A string or string list, split at the NULs.
fn strs(value: &[u8]) -> Vec<&str> {
    assert_eq!(value.last(), Some(&0), "NUL-terminated");
    value[..value.len() - 1]
        .split(|&b| b == 0)
        .map(|s| core::str::from_utf8(s).expect("UTF-8"))
        .collect()
}

fn names_of_children<'a>(fdt: &Fdt<'a>, path: &str) -> Vec<&'a str> {
    fdt.find_node(path)
        .unwrap_or_else(|| panic!("node {path}"))
        .children()
        .map(|n| n.name)
        .collect()
}

#[test]
fn header_and_root_node() {
    let dtb = build(&sample()).unwrap();
    assert_eq!(
        u32::from_be_bytes([dtb[0], dtb[1], dtb[2], dtb[3]]),
        0xd00d_feed
    );
    let fdt = parse(&dtb);
    assert_eq!(fdt.total_size(), dtb.len());
    assert_eq!(strs(prop(&fdt, "/", "compatible")), ["bulkhead,partition"]);
    assert_eq!(strs(prop(&fdt, "/", "model")), ["Bulkhead partition"]);
    assert_eq!(cells(prop(&fdt, "/", "#address-cells")), [2]);
    assert_eq!(cells(prop(&fdt, "/", "#size-cells")), [2]);
    assert_eq!(cells(prop(&fdt, "/", "interrupt-parent")), [GIC_PHANDLE]);
    assert_eq!(fdt.find_phandle(GIC_PHANDLE).unwrap().name, "intc@8000000");
    assert_eq!(
        names_of_children(&fdt, "/"),
        [
            "chosen",
            "aliases",
            "memory@40000000",
            "memory@100000000",
            "cpus",
            "psci",
            "intc@8000000",
            "timer",
            "apb-pclk",
            "serial@9000000",
        ]
    );
}

#[test]
fn one_memory_node_per_range_lowest_first() {
    let dtb = build(&sample()).unwrap();
    let fdt = parse(&dtb);
    let memory: Vec<_> = fdt
        .all_nodes()
        .filter(|n| n.name.starts_with("memory@"))
        .collect();
    assert_eq!(memory.len(), 2);
    for (node, (base, size)) in memory
        .iter()
        .zip([(0x4000_0000, 0x1000_0000), (0x1_0000_0000, 0x400_0000)])
    {
        assert_eq!(node.name, format!("memory@{base:x}"));
        assert_eq!(
            strs(node.property("device_type").unwrap().value),
            ["memory"]
        );
        assert_eq!(u64s(node.property("reg").unwrap().value), [base, size]);
    }
}

#[test]
fn cpus_have_aff0_regs_and_psci_enable_method() {
    for cpu_count in [1, 4, MAX_CPUS] {
        let platform = GuestPlatform {
            cpu_count,
            ..sample()
        };
        let dtb = build(&platform).unwrap();
        let fdt = parse(&dtb);
        assert_eq!(cells(prop(&fdt, "/cpus", "#address-cells")), [1]);
        assert_eq!(cells(prop(&fdt, "/cpus", "#size-cells")), [0]);
        let cpus: Vec<_> = fdt.find_node("/cpus").unwrap().children().collect();
        assert_eq!(cpus.len(), cpu_count as usize);
        for (index, cpu) in cpus.iter().enumerate() {
            assert_eq!(cpu.name, format!("cpu@{index:x}"));
            assert_eq!(cells(cpu.property("reg").unwrap().value), [index as u32]);
            assert_eq!(strs(cpu.property("device_type").unwrap().value), ["cpu"]);
            assert_eq!(
                strs(cpu.property("compatible").unwrap().value),
                ["arm,armv8"]
            );
            assert_eq!(strs(cpu.property("enable-method").unwrap().value), ["psci"]);
        }
    }
}

#[test]
fn psci_is_1_0_with_the_chosen_conduit() {
    for (conduit, method) in [(PsciConduit::Hvc, "hvc"), (PsciConduit::Smc, "smc")] {
        let dtb = build(&GuestPlatform {
            psci: conduit,
            ..sample()
        })
        .unwrap();
        let fdt = parse(&dtb);
        assert_eq!(
            strs(prop(&fdt, "/psci", "compatible")),
            ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]
        );
        assert_eq!(strs(prop(&fdt, "/psci", "method")), [method]);
    }
}

#[test]
fn gic_v3_node() {
    let dtb = build(&sample()).unwrap();
    let fdt = parse(&dtb);
    let gic = "/intc@8000000";
    assert_eq!(strs(prop(&fdt, gic, "compatible")), ["arm,gic-v3"]);
    assert_eq!(cells(prop(&fdt, gic, "#interrupt-cells")), [3]);
    assert!(prop(&fdt, gic, "interrupt-controller").is_empty());
    assert_eq!(cells(prop(&fdt, gic, "#address-cells")), [2]);
    assert_eq!(cells(prop(&fdt, gic, "#size-cells")), [2]);
    assert!(prop(&fdt, gic, "ranges").is_empty());
    assert_eq!(cells(prop(&fdt, gic, "#redistributor-regions")), [1]);
    assert_eq!(
        u64s(prop(&fdt, gic, "reg")),
        [0x0800_0000, 0x1_0000, 0x080a_0000, 0xf6_0000]
    );
    assert_eq!(cells(prop(&fdt, gic, "interrupts")), [1, 9, 4]);
    assert_eq!(cells(prop(&fdt, gic, "phandle")), [GIC_PHANDLE]);
}

#[test]
fn timer_lists_four_level_high_ppis_in_binding_order() {
    let dtb = build(&sample()).unwrap();
    let fdt = parse(&dtb);
    assert_eq!(
        strs(prop(&fdt, "/timer", "compatible")),
        ["arm,armv8-timer"]
    );
    assert_eq!(
        cells(prop(&fdt, "/timer", "interrupts")),
        [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]
    );
    assert!(!has_prop(&fdt, "/timer", "always-on"));
}

#[test]
fn timer_intids_are_taken_from_the_platform() {
    let timer = ArchTimer {
        secure_phys_intid: 16,
        nonsecure_phys_intid: 31,
        virtual_intid: 20,
        hyp_intid: 21,
    };
    let dtb = build(&GuestPlatform { timer, ..sample() }).unwrap();
    let fdt = parse(&dtb);
    assert_eq!(
        cells(prop(&fdt, "/timer", "interrupts")),
        [1, 0, 4, 1, 15, 4, 1, 4, 4, 1, 5, 4]
    );
}

#[test]
fn pl011_with_its_clock() {
    let dtb = build(&sample()).unwrap();
    let fdt = parse(&dtb);
    let uart = "/serial@9000000";
    assert_eq!(
        strs(prop(&fdt, uart, "compatible")),
        ["arm,pl011", "arm,primecell"]
    );
    assert_eq!(u64s(prop(&fdt, uart, "reg")), [0x0900_0000, 0x1000]);
    assert_eq!(cells(prop(&fdt, uart, "interrupts")), [0, 1, 4]);
    assert_eq!(
        cells(prop(&fdt, uart, "clocks")),
        [APB_PCLK_PHANDLE, APB_PCLK_PHANDLE]
    );
    assert_eq!(
        strs(prop(&fdt, uart, "clock-names")),
        ["uartclk", "apb_pclk"]
    );

    let clock = "/apb-pclk";
    assert_eq!(strs(prop(&fdt, clock, "compatible")), ["fixed-clock"]);
    assert_eq!(cells(prop(&fdt, clock, "#clock-cells")), [0]);
    assert_eq!(cells(prop(&fdt, clock, "clock-frequency")), [APB_PCLK_HZ]);
    assert_eq!(APB_PCLK_HZ, 24_000_000);
    assert_eq!(cells(prop(&fdt, clock, "phandle")), [APB_PCLK_PHANDLE]);
    assert_eq!(fdt.find_phandle(APB_PCLK_PHANDLE).unwrap().name, "apb-pclk");
}

#[test]
fn chosen_and_aliases_with_uart_and_initrd() {
    let dtb = build(&sample()).unwrap();
    let fdt = parse(&dtb);
    assert_eq!(
        fdt.chosen().bootargs(),
        Some("console=ttyAMA0 earlycon rdinit=/init")
    );
    assert_eq!(
        u64s(prop(&fdt, "/chosen", "linux,initrd-start")),
        [0x4800_0000]
    );
    assert_eq!(
        u64s(prop(&fdt, "/chosen", "linux,initrd-end")),
        [0x4812_3400]
    );
    assert_eq!(
        strs(prop(&fdt, "/chosen", "stdout-path")),
        ["/serial@9000000"]
    );
    assert_eq!(fdt.chosen().stdout().unwrap().name, "serial@9000000");
    assert_eq!(
        fdt.aliases().unwrap().resolve("serial0"),
        Some("/serial@9000000")
    );
    assert_eq!(fdt.aliases().unwrap().all().count(), 1);
}

#[test]
fn without_uart_or_initrd() {
    let platform = GuestPlatform {
        uart: None,
        initrd: None,
        bootargs: String::new(),
        ..sample()
    };
    let dtb = build(&platform).unwrap();
    let fdt = parse(&dtb);
    assert_eq!(fdt.chosen().bootargs(), Some(""));
    for name in ["stdout-path", "linux,initrd-start", "linux,initrd-end"] {
        assert!(!has_prop(&fdt, "/chosen", name), "{name}");
    }
    assert!(fdt.find_node("/aliases").is_none());
    assert!(fdt.find_node("/apb-pclk").is_none());
    assert!(fdt.find_compatible(&["arm,pl011"]).is_none());
    assert_eq!(
        names_of_children(&fdt, "/"),
        [
            "chosen",
            "memory@40000000",
            "memory@100000000",
            "cpus",
            "psci",
            "intc@8000000",
            "timer"
        ]
    );
}

#[test]
fn output_is_deterministic() {
    assert_eq!(build(&sample()).unwrap(), build(&sample()).unwrap());
    let mut reversed = sample();
    reversed.memory.reverse();
    assert_eq!(build(&reversed).unwrap(), build(&sample()).unwrap());
}

#[test]
fn refuses_bad_cpu_counts() {
    assert_eq!(
        build(&GuestPlatform {
            cpu_count: 0,
            ..sample()
        }),
        Err(DeviceTreeError::NoCpus)
    );
    assert_eq!(
        build(&GuestPlatform {
            cpu_count: MAX_CPUS + 1,
            ..sample()
        }),
        Err(DeviceTreeError::TooManyCpus {
            cpu_count: MAX_CPUS + 1
        })
    );
    assert_eq!(
        build(&GuestPlatform {
            cpu_count: u32::MAX,
            ..sample()
        }),
        Err(DeviceTreeError::TooManyCpus {
            cpu_count: u32::MAX
        })
    );
}

#[test]
fn refuses_too_small_redistributor_region() {
    let mut platform = sample();
    platform.gic.redistributors.size = 3 * GICR_FRAME_SIZE + GICR_FRAME_SIZE / 2;
    assert_eq!(
        build(&platform),
        Err(DeviceTreeError::RedistributorsTooSmall {
            cpu_count: 4,
            frame_count: 3
        })
    );
    platform.gic.redistributors.size = 4 * GICR_FRAME_SIZE;
    assert!(build(&platform).is_ok());
}

#[test]
fn refuses_missing_empty_and_overflowing_ranges() {
    assert_eq!(
        build(&GuestPlatform {
            memory: vec![],
            ..sample()
        }),
        Err(DeviceTreeError::NoMemory)
    );

    let mut platform = sample();
    platform.memory[1].size = 0;
    assert_eq!(
        build(&platform),
        Err(DeviceTreeError::EmptyRange {
            region: Region::Memory(1),
            base: 0x4000_0000
        })
    );

    let mut platform = sample();
    platform.uart.as_mut().unwrap().registers.size = 0;
    assert_eq!(
        build(&platform),
        Err(DeviceTreeError::EmptyRange {
            region: Region::Uart,
            base: 0x0900_0000
        })
    );

    let mut platform = sample();
    platform
        .memory
        .push(GuestRange::new(u64::MAX - 0xfff, 0x1000));
    assert_eq!(
        build(&platform),
        Err(DeviceTreeError::RangeOverflows {
            region: Region::Memory(2),
            range: GuestRange::new(u64::MAX - 0xfff, 0x1000)
        })
    );

    let mut platform = sample();
    platform.gic.distributor = GuestRange::new(u64::MAX, u64::MAX);
    assert!(matches!(
        build(&platform),
        Err(DeviceTreeError::RangeOverflows {
            region: Region::GicDistributor,
            ..
        })
    ));

    let mut platform = sample();
    platform.initrd = Some(GuestRange::new(0x4800_0000, 0));
    assert_eq!(
        build(&platform),
        Err(DeviceTreeError::EmptyRange {
            region: Region::Initrd,
            base: 0x4800_0000
        })
    );
}

#[test]
fn refuses_overlaps_between_any_two_ranges() {
    let mut platform = sample();
    platform.memory.push(GuestRange::new(0x4fff_f000, 0x2000));
    assert_eq!(
        build(&platform),
        Err(DeviceTreeError::Overlap {
            first: Region::Memory(1),
            second: Region::Memory(2),
            at: 0x4fff_f000
        })
    );

    let mut platform = sample();
    platform.memory.push(GuestRange::new(0x0800_0000, 0x1000));
    assert!(matches!(
        build(&platform),
        Err(DeviceTreeError::Overlap {
            at: 0x0800_0000,
            ..
        })
    ));

    let mut platform = sample();
    platform.uart.as_mut().unwrap().registers.base = 0x3fff_f800;
    assert_eq!(
        build(&platform),
        Err(DeviceTreeError::Overlap {
            first: Region::Uart,
            second: Region::Memory(1),
            at: 0x4000_0000
        })
    );

    let mut platform = sample();
    platform.gic.distributor = GuestRange::new(0x080a_0000, 0x1_0000);
    assert!(matches!(
        build(&platform),
        Err(DeviceTreeError::Overlap {
            at: 0x080a_0000,
            ..
        })
    ));

    // A range that swallows two others is caught on its first neighbour.
    let mut platform = sample();
    platform.memory.push(GuestRange::new(0, 0x1000_0000));
    assert!(matches!(
        build(&platform),
        Err(DeviceTreeError::Overlap {
            first: Region::Memory(2),
            at: 0x0800_0000,
            ..
        })
    ));

    // Touching is not overlapping.
    let mut platform = sample();
    platform.memory.push(GuestRange::new(0x5000_0000, 0x1000));
    assert!(build(&platform).is_ok());
}

#[test]
fn refuses_initrd_outside_one_ram_range() {
    for initrd in [
        GuestRange::new(0x2000_0000, 0x1000),
        GuestRange::new(0x4fff_f000, 0x2000),
        GuestRange::new(0x1_03ff_ffff, 2),
    ] {
        let mut platform = sample();
        platform.initrd = Some(initrd);
        assert_eq!(
            build(&platform),
            Err(DeviceTreeError::InitrdOutsideMemory { initrd })
        );
    }
    // Across two adjacent RAM ranges is still not inside one.
    let mut platform = sample();
    platform.memory.push(GuestRange::new(0x5000_0000, 0x1000));
    platform.initrd = Some(GuestRange::new(0x4fff_f000, 0x2000));
    assert!(matches!(
        build(&platform),
        Err(DeviceTreeError::InitrdOutsideMemory { .. })
    ));

    // Exactly filling a range is fine.
    let mut platform = sample();
    platform.initrd = Some(GuestRange::new(0x1_0000_0000, 0x400_0000));
    assert!(build(&platform).is_ok());
}

#[test]
fn refuses_interrupts_of_the_wrong_kind() {
    for intid in [0, 15, 32, u32::MAX] {
        let mut platform = sample();
        platform.timer.virtual_intid = intid;
        assert_eq!(
            build(&platform),
            Err(DeviceTreeError::NotAPpi {
                interrupt: Interrupt::VirtualTimer,
                intid
            })
        );
        let mut platform = sample();
        platform.gic.maintenance_intid = intid;
        assert_eq!(
            build(&platform),
            Err(DeviceTreeError::NotAPpi {
                interrupt: Interrupt::GicMaintenance,
                intid
            })
        );
    }
    for intid in [0, 31, 1020, u32::MAX] {
        let mut platform = sample();
        platform.uart.as_mut().unwrap().intid = intid;
        assert_eq!(
            build(&platform),
            Err(DeviceTreeError::NotAnSpi {
                interrupt: Interrupt::Uart,
                intid
            })
        );
    }
    let mut platform = sample();
    platform.uart.as_mut().unwrap().intid = 1019;
    let dtb = build(&platform).unwrap();
    assert_eq!(
        cells(prop(&parse(&dtb), "/serial@9000000", "interrupts")),
        [0, 987, 4]
    );
}

#[test]
fn bootargs_limits() {
    let longest = "x".repeat(MAX_BOOTARGS_LEN);
    let dtb = build(&GuestPlatform {
        bootargs: longest.clone(),
        ..sample()
    })
    .unwrap();
    assert_eq!(parse(&dtb).chosen().bootargs(), Some(longest.as_str()));
    // With its NUL the property is exactly Linux's COMMAND_LINE_SIZE.
    assert_eq!(prop(&parse(&dtb), "/chosen", "bootargs").len(), 2048);

    let too_long = "x".repeat(MAX_BOOTARGS_LEN + 1);
    assert_eq!(
        build(&GuestPlatform {
            bootargs: too_long,
            ..sample()
        }),
        Err(DeviceTreeError::BootargsTooLong { len: 2048 })
    );
    assert_eq!(
        build(&GuestPlatform {
            bootargs: "quiet\0init=/evil".into(),
            ..sample()
        }),
        Err(DeviceTreeError::BootargsContainsNul { offset: 5 })
    );
}

#[test]
fn validate_agrees_with_build() {
    assert_eq!(validate(&sample()), Ok(()));
    assert_eq!(
        validate(&GuestPlatform {
            cpu_count: 0,
            ..sample()
        }),
        Err(DeviceTreeError::NoCpus)
    );
}

#[test]
fn errors_name_the_culprit() {
    let message = format!(
        "{}",
        DeviceTreeError::Overlap {
            first: Region::Uart,
            second: Region::Memory(3),
            at: 0x4000_0000
        }
    );
    assert_eq!(message, "UART and memory range 3 overlap at 0x40000000");
    let message = format!(
        "{}",
        DeviceTreeError::NotAPpi {
            interrupt: Interrupt::HypTimer,
            intid: 40
        }
    );
    assert_eq!(
        message,
        "hypervisor timer interrupt is INTID 40, not a PPI (16..=31)"
    );
    let message = format!("{}", DeviceTreeError::Writer(vm_fdt::Error::InvalidString));
    assert_eq!(message, "FDT writer: Strings cannot contain NUL");
}

/// A deterministic xorshift generator, so the robustness test needs no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[(self.next() % choices.len() as u64) as usize]
    }

    fn address(&mut self) -> u64 {
        let interesting = [
            0,
            1,
            0x1000,
            0x0800_0000,
            0x0900_0000,
            0x4000_0000,
            u64::MAX,
            u64::MAX - 0xfff,
        ];
        if self.next().is_multiple_of(2) {
            self.pick(&interesting)
        } else {
            self.next() & 0xffff_f000
        }
    }

    fn size(&mut self) -> u64 {
        let interesting = [0, 1, 0x1000, 0x2_0000, 0x10_0000, 0x1000_0000, u64::MAX];
        if self.next().is_multiple_of(2) {
            self.pick(&interesting)
        } else {
            self.next() & 0x0fff_f000
        }
    }

    fn range(&mut self) -> GuestRange {
        GuestRange::new(self.address(), self.size())
    }

    fn intid(&mut self) -> u32 {
        let interesting = [0, 15, 16, 25, 27, 31, 32, 33, 1019, 1020, u32::MAX];
        if self.next().is_multiple_of(4) {
            self.next() as u32
        } else {
            self.pick(&interesting)
        }
    }
}

#[test]
fn arbitrary_platforms_never_panic_and_valid_ones_parse() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut built = 0;
    for _ in 0..3000 {
        let mut platform = sample();
        // Mutate a few fields of a valid platform, so that many results stay valid.
        for _ in 0..=rng.next() % 3 {
            match rng.next() % 9 {
                0 => {
                    let count = rng.next() % 5;
                    platform.memory = (0..count).map(|_| rng.range()).collect();
                }
                1 => platform.cpu_count = rng.pick(&[0, 1, 2, 15, 16, 17, u32::MAX]),
                2 => platform.gic.distributor = rng.range(),
                3 => platform.gic.redistributors = rng.range(),
                4 => platform.gic.maintenance_intid = rng.intid(),
                5 => {
                    platform.timer = ArchTimer {
                        secure_phys_intid: rng.intid(),
                        nonsecure_phys_intid: rng.intid(),
                        virtual_intid: rng.intid(),
                        hyp_intid: rng.intid(),
                    }
                }
                6 => {
                    platform.uart = match rng.next() % 3 {
                        0 => None,
                        _ => Some(Pl011 {
                            registers: rng.range(),
                            intid: rng.intid(),
                        }),
                    }
                }
                7 => {
                    let len = rng.pick(&[0, 1, 100, MAX_BOOTARGS_LEN, MAX_BOOTARGS_LEN + 1]);
                    let mut bootargs = "a".repeat(len);
                    if len > 0 && rng.next().is_multiple_of(4) {
                        bootargs.replace_range(0..1, "\0");
                    }
                    platform.bootargs = bootargs;
                }
                _ => {
                    platform.initrd = if rng.next().is_multiple_of(3) {
                        None
                    } else {
                        Some(rng.range())
                    }
                }
            }
        }
        let result = build(&platform);
        assert_eq!(result.is_ok(), validate(&platform).is_ok());
        if let Ok(dtb) = result {
            built += 1;
            let fdt = parse(&dtb);
            let memory_count = fdt
                .all_nodes()
                .filter(|n| n.name.starts_with("memory@"))
                .count();
            assert_eq!(memory_count, platform.memory.len());
            assert_eq!(fdt.cpus().count(), platform.cpu_count as usize);
        }
    }
    // The mutations keep a fair share valid, so both paths are exercised.
    assert!(built > 300, "only {built} of 3000 built");
}

/// Decompiles the sample with `dtc` when it is installed (Debian package
/// `device-tree-compiler`); passes silently otherwise.
#[test]
fn dtc_accepts_the_output_when_installed() {
    use std::process::Command;

    let dtb = build(&sample()).unwrap();
    let path = std::env::temp_dir().join(format!("bulkhead-devicetree-{}.dtb", std::process::id()));
    std::fs::write(&path, &dtb).unwrap();
    let output = Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts", "-o", "-"])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    let Ok(output) = output else {
        std::eprintln!("dtc not installed; skipped");
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "dtc failed: {stderr}");
    assert!(stderr.is_empty(), "dtc warned: {stderr}");
    // dtc 1.6 prints string lists as "a\0b", later versions as "a", "b".
    let dts = String::from_utf8(output.stdout)
        .unwrap()
        .replace("\\0", "\", \"");
    for expected in [
        "compatible = \"bulkhead,partition\";",
        "compatible = \"arm,psci-1.0\", \"arm,psci-0.2\", \"arm,psci\";",
        "method = \"hvc\";",
        "compatible = \"arm,pl011\", \"arm,primecell\";",
        "clock-names = \"uartclk\", \"apb_pclk\";",
        "stdout-path = \"/serial@9000000\";",
        "interrupts = <0x01 0x0d 0x04 0x01 0x0e 0x04 0x01 0x0b 0x04 0x01 0x0a 0x04>;",
    ] {
        assert!(dts.contains(expected), "{expected} missing from:\n{dts}");
    }
}
