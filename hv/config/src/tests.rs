use super::*;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

fn region(guest: u64, size: u64) -> MemoryRegion {
    MemoryRegion {
        guest,
        size,
        backing: Backing::Allocate,
        attr: MemoryAttribute::NormalWb,
        perms: Permissions::parse("rwx").unwrap(),
        dma: false,
        shared: false,
    }
}

fn host_region(guest: u64, size: u64, host: u64, shared: bool) -> MemoryRegion {
    MemoryRegion {
        backing: Backing::Host(host),
        shared,
        perms: Permissions::parse("rw").unwrap(),
        ..region(guest, size)
    }
}

fn partition(name: &str, cpu: u32) -> Partition {
    Partition {
        name: name.into(),
        cpus: vec![cpu],
        image: Image {
            file: "guest.bin".into(),
            kind: ImageKind::Raw,
            load: 0x4000_0000,
            entry: None,
            initrd: None,
            bootargs: String::new(),
        },
        memory: vec![region(0x4000_0000, 0x100_0000)],
        on_fault: FaultPolicy::Stop,
        passthrough: Vec::new(),
        interrupts: Vec::new(),
        console: Console::Hypercall,
        io_ports: Vec::new(),
        pci: Vec::new(),
        gpu: None,
    }
}

fn device(name: &str, base: u64, size: u64, attr: MemoryAttribute, interrupts: &[u32]) -> Device {
    Device {
        name: name.into(),
        base,
        size,
        attr,
        interrupts: interrupts.to_vec(),
    }
}

/// QEMU `virt` with 1 GiB of RAM, the hypervisor at the top, a UART and a
/// write-combining framebuffer.
fn platform() -> Platform {
    Platform {
        name: "qemu-virt".into(),
        cpus: 4,
        ram: vec![PhysRange {
            base: 0x4000_0000,
            size: 0x4000_0000,
        }],
        reserved: vec![ReservedRange {
            base: 0x7f00_0000,
            size: 0x100_0000,
            what: "hypervisor".into(),
        }],
        devices: vec![
            device(
                "uart0",
                0x0900_0000,
                0x1000,
                MemoryAttribute::DeviceNGnRE,
                &[33],
            ),
            device(
                "fb",
                0x1000_0000,
                0x10_0000,
                MemoryAttribute::NormalNc,
                &[40, 41],
            ),
        ],
    }
}

fn passthrough(device: &str) -> Passthrough {
    Passthrough {
        device: device.into(),
        guest: None,
        attr: None,
    }
}

fn config(partitions: Vec<Partition>) -> Config {
    Config {
        platform: platform(),
        partitions,
    }
}

type Found = (Option<usize>, String, ErrorKind);

fn found(config: &Config) -> Vec<Found> {
    validate(config)
        .into_iter()
        .map(|e| (e.partition_index, e.field, e.kind))
        .collect()
}

fn at(index: usize, field: &str, kind: ErrorKind) -> Found {
    (Some(index), field.to_string(), kind)
}

fn global(field: &str, kind: ErrorKind) -> Found {
    (None, field.to_string(), kind)
}

#[test]
fn a_good_configuration_has_no_errors_and_survives_the_blob() {
    let mut a = partition("a", 0);
    a.passthrough.push(Passthrough {
        device: "uart0".into(),
        guest: Some(0x900_0000),
        attr: None,
    });
    a.interrupts.push(100);
    a.memory
        .push(host_region(0x5000_0000, 0x10_0000, 0x6000_0000, true));
    a.on_fault = FaultPolicy::Inject;
    let mut b = partition("b", 1);
    b.passthrough.push(Passthrough {
        device: "fb".into(),
        guest: Some(0x2000_0000),
        attr: Some(MemoryAttribute::DeviceNGnRE),
    });
    b.memory
        .push(host_region(0x5000_0000, 0x10_0000, 0x6000_0000, true));
    b.console = Console::None;
    let config = config(vec![a, b]);
    assert_eq!(validate(&config), vec![]);
    assert_eq!(from_blob(&to_blob(&config)).unwrap(), config);
}

#[test]
fn an_empty_platform_turns_host_checks_off() {
    let mut a = partition("a", 17);
    a.memory
        .push(host_region(0x5000_0000, 0x1000, 0x1_0000_0000, false));
    a.interrupts.push(33);
    let config = Config {
        platform: Platform::default(),
        partitions: vec![a],
    };
    assert!(config.platform.is_empty());
    assert_eq!(validate(&config), vec![]);
}

#[test]
fn blobs_carry_their_source_name() {
    let config = config(vec![partition("a", 0)]);
    let (decoded, source) = from_blob_with_source(&to_blob_from(&config, "configs/demo.toml")).unwrap();
    assert_eq!(decoded, config);
    assert_eq!(source, "configs/demo.toml");
    assert_eq!(from_blob_with_source(&to_blob(&config)).unwrap().1, "");
}

#[test]
fn blobs_of_another_version_or_garbage_are_refused() {
    let config = config(vec![partition("a", 0)]);
    let mut blob = to_blob(&config);
    blob[4] = 7;
    assert_eq!(from_blob(&blob), Err(BlobError::Version { found: 7 }));
    assert_eq!(from_blob(b"BHCF\x05\xff\xff"), Err(BlobError::Malformed));
    assert_eq!(from_blob(b"BHCF"), Err(BlobError::Malformed));
    assert_eq!(from_blob(&[]), Err(BlobError::NotABlob));
    assert_eq!(
        from_blob(b"this is not a configuration blob"),
        Err(BlobError::NotABlob)
    );
}

#[test]
fn each_broken_field_is_named() {
    let mut dup = config(vec![partition("a", 0), partition("a", 0)]);
    dup.partitions[1].memory[0].backing = Backing::Allocate;
    assert_eq!(
        found(&dup),
        vec![
            at(1, "name", ErrorKind::DuplicateName),
            at(
                1,
                "cpus[0]",
                ErrorKind::CpuTaken {
                    cpu: 0,
                    other: "a".to_string()
                }
            ),
        ]
    );

    let mut p = partition("bad name", 0);
    p.memory.push(region(0x4080_0000, 0x1000));
    p.memory.push(region(0x5000_0001, 0));
    p.image.file = "../x".into();
    assert_eq!(
        found(&config(vec![p])),
        vec![
            at(0, "name", ErrorKind::BadName),
            at(0, "image.file", ErrorKind::BadFileName),
            at(0, "memory[2].size", ErrorKind::ZeroSize),
            at(0, "memory[2].guest", ErrorKind::Misaligned(0x5000_0001)),
        ]
    );
}

#[test]
fn overlaps_and_misplaced_images_are_reported() {
    let mut a = partition("a", 0);
    a.memory.push(region(0x40ff_f000, 0x2000));
    a.memory[0].backing = Backing::Host(0x4000_0000);
    let mut b = partition("b", 1);
    b.memory[0].backing = Backing::Host(0x40ff_f000);
    b.image.load = 0x1000;
    b.image.entry = Some(0x2000);
    assert_eq!(
        found(&config(vec![a, b])),
        vec![
            at(
                0,
                "memory[1].guest",
                ErrorKind::GuestOverlap {
                    other: "memory[0]".to_string()
                }
            ),
            at(
                1,
                "memory[0].backing",
                ErrorKind::HostOverlap {
                    other: "a".to_string(),
                    region: 0
                }
            ),
            at(1, "image.load", ErrorKind::ImageOutsideMemory(0x1000)),
            at(1, "image.entry", ErrorKind::EntryOutsideMemory(0x2000)),
        ]
    );
}

#[test]
fn empty_configurations_and_messages() {
    let errors = validate(&Config::default());
    assert_eq!(errors.len(), 1);
    assert!(errors[0].is_global());
    assert_eq!(
        errors[0].to_string(),
        "field 'partition': the configuration has no partition"
    );
    let mut p = partition("web", 0);
    p.cpus.clear();
    let errors = validate(&config(vec![p]));
    assert_eq!(
        errors[0].to_string(),
        "partition 'web', field 'cpus': a partition needs at least one CPU"
    );
    assert_eq!(errors[0].path(), "partition[0].cpus");
}

#[test]
fn platform_ranges_must_be_aligned_and_disjoint() {
    let mut c = config(vec![partition("a", 0)]);
    c.platform.name = "qemu virt".into();
    c.platform.ram.push(PhysRange {
        base: 0x7000_0000,
        size: 0x1000,
    });
    c.platform.ram.push(PhysRange {
        base: 0x1_0000_0800,
        size: 0x1000,
    });
    c.platform.reserved.push(ReservedRange {
        base: 0x4000_0000,
        size: 0x10,
        what: "firmware".into(),
    });
    c.platform.devices.push(device(
        "uart0",
        0x0900_1000,
        0x1000,
        MemoryAttribute::DeviceNGnRE,
        &[34],
    ));
    c.platform.devices.push(device(
        "bad",
        0x4000_0000,
        0x1000,
        MemoryAttribute::DeviceNGnRE,
        &[31],
    ));
    c.platform.devices.push(device(
        "near-uart",
        0x0900_0000,
        0x2000,
        MemoryAttribute::DeviceNGnRE,
        &[],
    ));
    assert_eq!(
        found(&c),
        vec![
            global("platform.name", ErrorKind::BadName),
            global(
                "platform.ram[1].base",
                ErrorKind::PlatformOverlap {
                    other: "platform.ram[0]".to_string()
                }
            ),
            global("platform.ram[2].base", ErrorKind::Misaligned(0x1_0000_0800)),
            global("platform.reserved[1].size", ErrorKind::Misaligned(0x10)),
            global("platform.devices[2].name", ErrorKind::DuplicateDeviceName),
            global(
                "platform.devices[3].base",
                ErrorKind::PlatformOverlap {
                    other: "platform.ram[0]".to_string()
                }
            ),
            global(
                "platform.devices[3].interrupts[0]",
                ErrorKind::BadInterrupt(31)
            ),
            global(
                "platform.devices[4].base",
                ErrorKind::PlatformOverlap {
                    other: "platform.devices[0]".to_string()
                }
            ),
        ]
    );
    let errors = validate(&c);
    assert!(has_global_errors(&errors));
    assert!(partitions_with_errors(&errors).is_empty());
}

#[test]
fn cpus_must_exist_on_the_platform() {
    let mut a = partition("a", 3);
    a.cpus.push(4);
    assert_eq!(
        found(&config(vec![a])),
        vec![at(
            0,
            "cpus[1]",
            ErrorKind::CpuOutOfRange { cpu: 4, count: 4 }
        )]
    );
    assert_eq!(
        ErrorKind::CpuOutOfRange { cpu: 4, count: 4 }.to_string(),
        "CPU 4 does not exist: the platform has 4 CPUs (0..=3)"
    );
}

#[test]
fn host_memory_must_be_ram_that_is_not_reserved_or_a_device() {
    let mut a = partition("a", 0);
    a.memory
        .push(host_region(0x5000_0000, 0x2000, 0x8000_0000, false));
    a.memory
        .push(host_region(0x5100_0000, 0x2000, 0x3fff_f000, false));
    a.memory
        .push(host_region(0x5200_0000, 0x1000, 0x0900_0000, false));
    a.memory
        .push(host_region(0x5300_0000, 0x2000, 0x7eff_f000, false));
    a.memory
        .push(host_region(0x5400_0000, 0x1000, 0x7000_0800, false));
    a.memory
        .push(host_region(0x5500_0000, 0x1000, 0x7eff_f000, false));
    assert_eq!(
        found(&config(vec![a])),
        vec![
            at(
                0,
                "memory[1].backing",
                ErrorKind::OutsideRam {
                    base: 0x8000_0000,
                    size: 0x2000
                }
            ),
            at(
                0,
                "memory[2].backing",
                ErrorKind::OutsideRam {
                    base: 0x3fff_f000,
                    size: 0x2000
                }
            ),
            at(
                0,
                "memory[3].backing",
                ErrorKind::DeviceMemory {
                    device: "uart0".to_string()
                }
            ),
            at(
                0,
                "memory[4].backing",
                ErrorKind::ReservedMemory {
                    base: 0x7eff_f000,
                    size: 0x2000,
                    what: "hypervisor".to_string()
                }
            ),
            at(0, "memory[5].backing", ErrorKind::Misaligned(0x7000_0800)),
        ]
    );
    let mut b = partition("b", 0);
    b.memory
        .push(host_region(0x5300_0000, 0x2000, 0x7eff_f000, false));
    let message = validate(&config(vec![b]))[0].to_string();
    assert_eq!(
        message,
        "partition 'b', field 'memory[1].backing': host range 0x7efff000..0x7f001000 overlaps reserved memory \
         'hypervisor': hypervisor/firmware memory given to a guest"
    );
}

#[test]
fn host_memory_is_shared_only_when_both_say_so_with_the_same_range_and_attribute() {
    let owner = |shared| {
        let mut p = partition("a", 0);
        p.memory
            .push(host_region(0x5000_0000, 0x2000, 0x6000_0000, shared));
        p
    };
    let with = |host, size, shared, attr| {
        let mut p = partition("b", 1);
        p.memory.push(MemoryRegion {
            attr,
            ..host_region(0x5000_0000, size, host, shared)
        });
        p
    };
    let wb = MemoryAttribute::NormalWb;
    let cases = [
        (owner(true), with(0x6000_0000, 0x2000, true, wb), None),
        (
            owner(false),
            with(0x6000_0000, 0x2000, true, wb),
            Some(ErrorKind::HostOverlap {
                other: "a".into(),
                region: 1,
            }),
        ),
        (
            owner(true),
            with(0x6000_0000, 0x2000, false, wb),
            Some(ErrorKind::HostOverlap {
                other: "a".into(),
                region: 1,
            }),
        ),
        (
            owner(true),
            with(0x6000_1000, 0x1000, true, wb),
            Some(ErrorKind::SharedRangeMismatch {
                other: "a".into(),
                region: 1,
            }),
        ),
        (
            owner(true),
            with(0x6000_0000, 0x1000, true, wb),
            Some(ErrorKind::SharedRangeMismatch {
                other: "a".into(),
                region: 1,
            }),
        ),
        (
            owner(true),
            with(0x6000_0000, 0x2000, true, MemoryAttribute::NormalNc),
            Some(ErrorKind::SharedAttrMismatch {
                other: "a".into(),
                region: 1,
                attr: wb,
            }),
        ),
    ];
    for (a, b, expected) in cases {
        let errors = found(&config(vec![a, b]));
        let expected: Vec<Found> = expected
            .into_iter()
            .map(|k| {
                let field = match k {
                    ErrorKind::SharedAttrMismatch { .. } => "memory[1].attr",
                    _ => "memory[1].backing",
                };
                at(1, field, k)
            })
            .collect();
        assert_eq!(errors, expected);
    }
    let mut c = partition("c", 0);
    c.memory[0].shared = true;
    assert_eq!(
        found(&config(vec![c])),
        vec![at(0, "memory[0].shared", ErrorKind::SharedNotHost)]
    );
}

#[test]
fn the_later_partition_carries_a_conflict_so_the_earlier_one_can_start() {
    let mut a = partition("a", 0);
    a.passthrough.push(passthrough("uart0"));
    let mut b = partition("b", 1);
    b.passthrough.push(passthrough("uart0"));
    let c = partition("c", 2);
    let errors = validate(&config(vec![a, b, c]));
    assert_eq!(
        errors
            .iter()
            .map(|e| (e.partition_index, e.field.as_str()))
            .collect::<Vec<_>>(),
        vec![(Some(1), "passthrough[0].device")]
    );
    assert_eq!(errors[0].partition.as_deref(), Some("b"));
    assert!(!has_global_errors(&errors));
    assert_eq!(
        partitions_with_errors(&errors)
            .into_iter()
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(
        errors[0].to_string(),
        "partition 'b', field 'passthrough[0].device': device 'uart0' is already given to partition 'a'"
    );
}

#[test]
fn passthrough_names_a_free_known_device_at_a_free_guest_range() {
    let mut a = partition("a", 0);
    a.passthrough.push(passthrough("nope"));
    a.passthrough.push(passthrough("uart0"));
    a.passthrough.push(passthrough("uart0"));
    a.passthrough.push(Passthrough {
        device: "fb".into(),
        guest: Some(0x40ff_0000),
        attr: None,
    });
    a.passthrough.push(Passthrough {
        device: "fb".into(),
        guest: Some(0x0900_0800),
        attr: None,
    });
    assert_eq!(
        found(&config(vec![a])),
        vec![
            at(
                0,
                "passthrough[0].device",
                ErrorKind::UnknownDevice("nope".to_string())
            ),
            at(
                0,
                "passthrough[2].device",
                ErrorKind::DeviceTaken {
                    device: "uart0".into(),
                    other: "a".into()
                }
            ),
            at(
                0,
                "passthrough[2].guest",
                ErrorKind::GuestOverlap {
                    other: "passthrough[1]".to_string()
                }
            ),
            at(
                0,
                "passthrough[3].guest",
                ErrorKind::GuestOverlap {
                    other: "memory[0]".to_string()
                }
            ),
            at(
                0,
                "passthrough[4].device",
                ErrorKind::DeviceTaken {
                    device: "fb".into(),
                    other: "a".into()
                }
            ),
            at(
                0,
                "passthrough[4].guest",
                ErrorKind::Misaligned(0x0900_0800)
            ),
        ]
    );
    let mut c = config(vec![partition("a", 0)]);
    c.platform.reserved.push(ReservedRange {
        base: 0x0900_0000,
        size: 0x1000,
        what: "hypervisor console".into(),
    });
    c.partitions[0].passthrough.push(passthrough("uart0"));
    assert_eq!(
        found(&c),
        vec![at(
            0,
            "passthrough[0].device",
            ErrorKind::ReservedMemory {
                base: 0x0900_0000,
                size: 0x1000,
                what: "hypervisor console".into()
            }
        )]
    );
}

#[test]
fn passthrough_attributes_are_never_weaker_than_the_platform_says() {
    let attempt = |device: &str, attr| {
        let mut a = partition("a", 0);
        a.passthrough.push(Passthrough {
            device: device.into(),
            guest: Some(0x2000_0000),
            attr: Some(attr),
        });
        found(&config(vec![a]))
    };
    use MemoryAttribute::*;
    assert_eq!(attempt("uart0", DeviceNGnRE), vec![]);
    assert_eq!(attempt("fb", NormalNc), vec![]);
    assert_eq!(attempt("fb", DeviceNGnRnE), vec![]);
    let mismatch = |device: &str, asked, platform| {
        vec![at(
            0,
            "passthrough[0].attr",
            ErrorKind::AttrMismatch {
                device: device.into(),
                asked,
                platform,
            },
        )]
    };
    assert_eq!(
        attempt("uart0", NormalWb),
        mismatch("uart0", NormalWb, DeviceNGnRE)
    );
    assert_eq!(
        attempt("uart0", NormalNc),
        mismatch("uart0", NormalNc, DeviceNGnRE)
    );
    assert_eq!(
        attempt("uart0", DeviceNGnRnE),
        mismatch("uart0", DeviceNGnRnE, DeviceNGnRE)
    );
    assert_eq!(attempt("fb", NormalWb), mismatch("fb", NormalWb, NormalNc));
    assert_eq!(
        ErrorKind::AttrMismatch {
            device: "uart0".into(),
            asked: NormalWb,
            platform: DeviceNGnRE
        }
        .to_string(),
        "attribute normal-wb is weaker than device 'uart0''s device-ngnre"
    );
}

#[test]
fn interrupts_are_spis_owned_by_one_partition() {
    let mut a = partition("a", 0);
    a.passthrough.push(passthrough("uart0"));
    a.interrupts = vec![33, 100, 100, 15, 1020];
    let mut b = partition("b", 1);
    b.interrupts = vec![33, 100, 101, 40];
    assert_eq!(
        found(&config(vec![a, b])),
        vec![
            at(
                0,
                "interrupts[2]",
                ErrorKind::InterruptTaken {
                    intid: 100,
                    other: "a".into()
                }
            ),
            at(0, "interrupts[3]", ErrorKind::BadInterrupt(15)),
            at(0, "interrupts[4]", ErrorKind::BadInterrupt(1020)),
            at(
                1,
                "interrupts[0]",
                ErrorKind::InterruptOfDevice {
                    intid: 33,
                    device: "uart0".into()
                }
            ),
            at(
                1,
                "interrupts[1]",
                ErrorKind::InterruptTaken {
                    intid: 100,
                    other: "a".into()
                }
            ),
            at(
                1,
                "interrupts[3]",
                ErrorKind::InterruptOfDevice {
                    intid: 40,
                    device: "fb".into()
                }
            ),
        ]
    );
}

#[test]
fn a_device_line_shared_with_an_earlier_partitions_device_is_a_conflict() {
    let mut c = config(Vec::new());
    c.platform.devices.push(device(
        "timer",
        0x0b00_0000,
        0x1000,
        MemoryAttribute::DeviceNGnRE,
        &[33],
    ));
    let mut a = partition("a", 0);
    a.passthrough.push(passthrough("uart0"));
    let mut b = partition("b", 1);
    b.passthrough.push(passthrough("timer"));
    c.partitions = vec![a, b];
    assert_eq!(
        found(&c),
        vec![at(
            1,
            "passthrough[0].device",
            ErrorKind::InterruptTaken {
                intid: 33,
                other: "a".into()
            }
        )]
    );
    assert_eq!(c.partitions[0].interrupt_ids(&c.platform), vec![33]);
}

#[test]
fn interrupt_ids_merge_explicit_and_device_lines() {
    let mut a = partition("a", 0);
    a.interrupts = vec![100, 40];
    a.passthrough.push(passthrough("fb"));
    a.passthrough.push(passthrough("missing"));
    assert_eq!(a.interrupt_ids(&platform()), vec![40, 41, 100]);
}

#[test]
fn permissions_parse_and_print() {
    assert_eq!(Permissions::parse("rw").unwrap().as_str(), "rw");
    assert_eq!(Permissions::parse("xr").unwrap().as_str(), "rx");
    assert!(Permissions::parse("rr").is_none());
    assert!(Permissions::parse("rwz").is_none());
}

#[test]
fn io_ports_are_checked_for_range_reservation_and_owner() {
    let range = |base, size| PortRange { base, size };
    assert_eq!(range(0xffff, 1).ports(), Some(0xffff..=0xffff));
    assert_eq!(range(0x70, 2).ports(), Some(0x70..=0x71));
    assert_eq!(range(0x70, 0).ports(), None);
    assert_eq!(range(0xffff, 2).ports(), None);
    assert_eq!(range(u32::MAX, 2).ports(), None);

    let mut a = partition("a", 0);
    a.io_ports = vec![range(0x70, 2), range(0x60, 8)];
    let mut b = partition("b", 1);
    b.io_ports = vec![range(0x2f8, 8), range(0x6f, 2), range(0x80, 0)];
    let c = config(vec![a, b]);
    assert_eq!(
        found(&c),
        vec![
            at(0, "io_ports[1]", ErrorKind::HypervisorPorts { base: 0x64, what: HYPERVISOR_PORTS[3].2 }),
            at(1, "io_ports[1]", ErrorKind::PortsTaken { port: 0x70, other: "a".into() }),
            at(1, "io_ports[2]", ErrorKind::BadPortRange { base: 0x80, size: 0 }),
        ]
    );
}

#[test]
fn pci_functions_parse_and_belong_to_one_partition() {
    assert_eq!(Bdf::parse("00:02.0"), Some(Bdf { bus: 0, device: 2, function: 0 }));
    assert_eq!(Bdf::parse("0000:1f:1f.7"), Some(Bdf { bus: 0x1f, device: 0x1f, function: 7 }));
    for bad in ["", "00:02", "00:20.0", "00:02.8", "0001:00:02.0", "100:00.0", "0:2.x", "00:02.0.1"] {
        assert_eq!(Bdf::parse(bad), None, "{bad}");
    }
    assert_eq!(Bdf::parse("01:02.3").unwrap().requester_id(), 0x0113);
    assert_eq!(Bdf::parse("01:02.3").unwrap().to_string(), "01:02.3");

    let function = |bdf: &str| PciFunction { bdf: bdf.into() };
    let mut a = partition("a", 0);
    a.pci = vec![function("00:02.0"), function("0000:00:02.0")];
    let mut b = partition("b", 1);
    b.pci = vec![function("00:02.0"), function("zz"), function("00:03.0")];
    assert_eq!(
        found(&config(vec![a, b])),
        vec![
            at(0, "pci[1].bdf", ErrorKind::PciTaken { bdf: "00:02.0".into(), other: "a".into() }),
            at(1, "pci[0].bdf", ErrorKind::PciTaken { bdf: "00:02.0".into(), other: "a".into() }),
            at(1, "pci[1].bdf", ErrorKind::BadBdf("zz".into())),
        ]
    );
}

#[test]
fn partitions_with_pci_functions_reserve_the_virtual_apic_windows() {
    let function = |bdf: &str| PciFunction { bdf: bdf.into() };
    // RAM over the virtual I/O APIC and local APIC: fine without `pci`.
    let mut plain = partition("plain", 0);
    plain.memory.push(region(0xfe00_0000, 0x200_0000));
    assert_eq!(found(&config(vec![plain.clone()])), vec![]);
    // With `pci`, both windows are the partition's emulated devices.
    let mut with_pci = plain;
    with_pci.pci = vec![function("00:01.0")];
    assert_eq!(
        found(&config(vec![with_pci])),
        vec![
            at(0, "memory[1].guest", ErrorKind::GuestOverlap { other: "the virtual I/O APIC".into() }),
            at(0, "memory[1].guest", ErrorKind::GuestOverlap { other: "the virtual local APIC".into() }),
        ]
    );
}
