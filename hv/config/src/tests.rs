use super::*;
use alloc::string::ToString;
use alloc::vec;

fn region(guest: u64, size: u64) -> MemoryRegion {
    MemoryRegion {
        guest,
        size,
        backing: Backing::Allocate,
        attr: MemoryAttribute::NormalWb,
        perms: Permissions::parse("rwx").unwrap(),
        dma: false,
    }
}

fn partition(name: &str, cpu: u32) -> Partition {
    Partition {
        name: name.into(),
        cpus: vec![cpu],
        image: Image { file: "guest.bin".into(), kind: ImageKind::Raw, load: 0x4000_0000, entry: None },
        memory: vec![region(0x4000_0000, 0x100_0000)],
        on_fault: FaultPolicy::Stop,
    }
}

fn kinds(config: &Config) -> alloc::vec::Vec<(Option<alloc::string::String>, alloc::string::String, ErrorKind)> {
    validate(config).into_iter().map(|e| (e.partition, e.field, e.kind)).collect()
}

#[test]
fn a_good_configuration_has_no_errors_and_survives_the_blob() {
    let config = Config { partitions: vec![partition("a", 0), partition("b", 1)] };
    assert!(validate(&config).is_empty());
    assert_eq!(from_blob(&to_blob(&config)).unwrap(), config);
}

#[test]
fn blobs_of_another_version_or_garbage_are_refused() {
    let config = Config { partitions: vec![partition("a", 0)] };
    let mut blob = to_blob(&config);
    blob[4] = 7;
    assert_eq!(from_blob(&blob), Err(BlobError::Version { found: 7 }));
    assert_eq!(from_blob(b"BHCF\x01\xff\xff"), Err(BlobError::Malformed));
    assert_eq!(from_blob(b"BHCF"), Err(BlobError::Malformed));
    assert_eq!(from_blob(&[]), Err(BlobError::NotABlob));
    assert_eq!(from_blob(b"this is not a configuration blob"), Err(BlobError::NotABlob));
}

#[test]
fn each_broken_field_is_named() {
    let mut dup = Config { partitions: vec![partition("a", 0), partition("a", 0)] };
    dup.partitions[1].memory[0].backing = Backing::Allocate;
    assert_eq!(
        kinds(&dup),
        vec![
            (Some("a".to_string()), "name".to_string(), ErrorKind::DuplicateName),
            (
                Some("a".to_string()),
                "cpus[0]".to_string(),
                ErrorKind::CpuTaken { cpu: 0, other: "a".to_string() }
            ),
        ]
    );

    let mut p = partition("bad name", 0);
    p.memory.push(region(0x4080_0000, 0x1000));
    p.memory.push(region(0x5000_0001, 0));
    p.image.file = "../x".into();
    assert_eq!(
        kinds(&Config { partitions: vec![p] }),
        vec![
            (Some("bad name".to_string()), "name".to_string(), ErrorKind::BadName),
            (Some("bad name".to_string()), "image.file".to_string(), ErrorKind::BadFileName),
            (Some("bad name".to_string()), "memory[2].size".to_string(), ErrorKind::ZeroSize),
            (Some("bad name".to_string()), "memory[2].guest".to_string(), ErrorKind::Misaligned(0x5000_0001)),
        ]
    );
}

#[test]
fn overlaps_and_misplaced_images_are_reported() {
    let mut a = partition("a", 0);
    a.memory.push(region(0x40ff_f000, 0x2000));
    a.memory[0].backing = Backing::Host(0x8000_0000);
    let mut b = partition("b", 1);
    b.memory[0].backing = Backing::Host(0x80ff_f000);
    b.image.load = 0x1000;
    b.image.entry = Some(0x2000);
    assert_eq!(
        kinds(&Config { partitions: vec![a, b] }),
        vec![
            (Some("a".to_string()), "memory[1].guest".to_string(), ErrorKind::GuestOverlap { other: 0 }),
            (Some("b".to_string()), "memory[0].backing".to_string(), ErrorKind::HostOverlap { other: "a".to_string() }),
            (Some("b".to_string()), "image.load".to_string(), ErrorKind::ImageOutsideMemory(0x1000)),
            (Some("b".to_string()), "image.entry".to_string(), ErrorKind::EntryOutsideMemory(0x2000)),
        ]
    );
}

#[test]
fn empty_configurations_and_messages() {
    let errors = validate(&Config { partitions: vec![] });
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].to_string(), "field 'partition': the configuration has no partition");
    let mut p = partition("web", 0);
    p.cpus.clear();
    assert_eq!(
        validate(&Config { partitions: vec![p] })[0].to_string(),
        "partition 'web', field 'cpus': a partition needs at least one CPU"
    );
}

#[test]
fn permissions_parse_and_print() {
    assert_eq!(Permissions::parse("rw").unwrap().as_str(), "rw");
    assert_eq!(Permissions::parse("xr").unwrap().as_str(), "rx");
    assert!(Permissions::parse("rr").is_none());
    assert!(Permissions::parse("rwz").is_none());
}
