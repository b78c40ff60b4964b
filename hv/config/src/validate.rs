//! Checks that a configuration is safe to start, with errors that name the
//! partition and the field at fault.

use crate::model::{Backing, Config, MemoryRegion, Partition};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Granule every region is aligned to.
pub const PAGE_SIZE: u64 = 4096;

/// Most partitions one configuration may hold.
pub const MAX_PARTITIONS: usize = 64;

/// One problem found in a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Name of the partition, when the problem is inside one.
    pub partition: Option<String>,
    /// Path of the offending field, e.g. `memory[1].size`.
    pub field: String,
    /// What is wrong.
    pub kind: ErrorKind,
}

/// What is wrong with a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration has no partition.
    NoPartitions,
    /// More than [`MAX_PARTITIONS`] partitions.
    TooManyPartitions(usize),
    /// The name is empty, too long, or has characters other than ASCII
    /// letters, digits, `-` and `_`.
    BadName,
    /// Another partition has the same name.
    DuplicateName,
    /// The partition has no CPU.
    NoCpus,
    /// The CPU is listed twice, or given to two partitions (`other` names the first).
    CpuTaken {
        /// The CPU.
        cpu: u32,
        /// The partition that already has it.
        other: String,
    },
    /// Zero-sized region.
    ZeroSize,
    /// Address or size is not a multiple of [`PAGE_SIZE`].
    Misaligned(u64),
    /// The range wraps around the address space.
    Overflow,
    /// Two guest ranges of one partition overlap.
    GuestOverlap {
        /// Index of the other region.
        other: usize,
    },
    /// Host memory given to two partitions.
    HostOverlap {
        /// The other partition.
        other: String,
    },
    /// The image is not loaded inside one executable, writable region.
    ImageOutsideMemory(u64),
    /// The entry point is not inside an executable region.
    EntryOutsideMemory(u64),
    /// The image file name is empty or has path separators.
    BadFileName,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.partition {
            Some(name) => write!(f, "partition '{name}', field '{}': ", self.field)?,
            None => write!(f, "field '{}': ", self.field)?,
        }
        match &self.kind {
            ErrorKind::NoPartitions => write!(f, "the configuration has no partition"),
            ErrorKind::TooManyPartitions(n) => {
                write!(f, "{n} partitions, at most {MAX_PARTITIONS} are supported")
            }
            ErrorKind::BadName => {
                write!(f, "name must be 1-32 ASCII letters, digits, '-' or '_'")
            }
            ErrorKind::DuplicateName => write!(f, "another partition has the same name"),
            ErrorKind::NoCpus => write!(f, "a partition needs at least one CPU"),
            ErrorKind::CpuTaken { cpu, other } => {
                write!(f, "CPU {cpu} is already given to partition '{other}'")
            }
            ErrorKind::ZeroSize => write!(f, "size is zero"),
            ErrorKind::Misaligned(v) => {
                write!(f, "{v:#x} is not a multiple of the {PAGE_SIZE:#x}-byte page")
            }
            ErrorKind::Overflow => write!(f, "range wraps around the end of the address space"),
            ErrorKind::GuestOverlap { other } => {
                write!(f, "guest range overlaps memory[{other}] of the same partition")
            }
            ErrorKind::HostOverlap { other } => {
                write!(f, "host range overlaps memory of partition '{other}'")
            }
            ErrorKind::ImageOutsideMemory(a) => write!(
                f,
                "image load address {a:#x} is not inside a writable, executable memory region"
            ),
            ErrorKind::EntryOutsideMemory(a) => {
                write!(f, "entry point {a:#x} is not inside an executable memory region")
            }
            ErrorKind::BadFileName => write!(f, "file name must be a plain name without '/' or '\\'"),
        }
    }
}

fn error(partition: Option<&Partition>, field: String, kind: ErrorKind) -> ConfigError {
    ConfigError { partition: partition.map(|p| p.name.clone()), field, kind }
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks a configuration; returns every problem found, in file order.
pub fn validate(config: &Config) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    if config.partitions.is_empty() {
        errors.push(error(None, "partition".into(), ErrorKind::NoPartitions));
    }
    if config.partitions.len() > MAX_PARTITIONS {
        errors.push(error(
            None,
            "partition".into(),
            ErrorKind::TooManyPartitions(config.partitions.len()),
        ));
    }
    for (index, partition) in config.partitions.iter().enumerate() {
        check_partition(config, index, partition, &mut errors);
    }
    errors
}

fn check_partition(config: &Config, index: usize, p: &Partition, errors: &mut Vec<ConfigError>) {
    let earlier = &config.partitions[..index];
    if !valid_name(&p.name) {
        errors.push(error(Some(p), "name".into(), ErrorKind::BadName));
    } else if earlier.iter().any(|q| q.name == p.name) {
        errors.push(error(Some(p), "name".into(), ErrorKind::DuplicateName));
    }
    if p.cpus.is_empty() {
        errors.push(error(Some(p), "cpus".into(), ErrorKind::NoCpus));
    }
    for (i, &cpu) in p.cpus.iter().enumerate() {
        let owner = if p.cpus[..i].contains(&cpu) {
            Some(p.name.clone())
        } else {
            earlier.iter().find(|q| q.cpus.contains(&cpu)).map(|q| q.name.clone())
        };
        if let Some(other) = owner {
            errors.push(error(Some(p), format!("cpus[{i}]"), ErrorKind::CpuTaken { cpu, other }));
        }
    }
    if p.image.file.is_empty() || p.image.file.contains(['/', '\\']) {
        errors.push(error(Some(p), "image.file".into(), ErrorKind::BadFileName));
    }
    let mut regions_ok = true;
    for (i, region) in p.memory.iter().enumerate() {
        regions_ok &= check_region(p, i, region, errors);
    }
    if !regions_ok {
        return;
    }
    for (i, region) in p.memory.iter().enumerate() {
        if let Some(other) = p.memory[..i].iter().position(|r| ranges_overlap(r.guest, r.size, region.guest, region.size)) {
            errors.push(error(Some(p), format!("memory[{i}].guest"), ErrorKind::GuestOverlap { other }));
        }
        if let Backing::Host(base) = region.backing {
            let clash = earlier.iter().find(|q| {
                q.memory.iter().any(|r| match r.backing {
                    Backing::Host(b) => ranges_overlap(b, r.size, base, region.size),
                    Backing::Allocate => false,
                })
            });
            if let Some(q) = clash {
                errors.push(error(
                    Some(p),
                    format!("memory[{i}].backing"),
                    ErrorKind::HostOverlap { other: q.name.clone() },
                ));
            }
        }
    }
    let load = p.image.load;
    if !p.memory.iter().any(|r| r.perms.write && r.perms.execute && contains(r, load)) {
        errors.push(error(Some(p), "image.load".into(), ErrorKind::ImageOutsideMemory(load)));
    }
    let entry = p.image.entry_point();
    if !p.memory.iter().any(|r| r.perms.execute && contains(r, entry)) {
        errors.push(error(Some(p), "image.entry".into(), ErrorKind::EntryOutsideMemory(entry)));
    }
}

fn check_region(p: &Partition, i: usize, r: &MemoryRegion, errors: &mut Vec<ConfigError>) -> bool {
    let before = errors.len();
    if r.size == 0 {
        errors.push(error(Some(p), format!("memory[{i}].size"), ErrorKind::ZeroSize));
    } else if !r.size.is_multiple_of(PAGE_SIZE) {
        errors.push(error(Some(p), format!("memory[{i}].size"), ErrorKind::Misaligned(r.size)));
    }
    if !r.guest.is_multiple_of(PAGE_SIZE) {
        errors.push(error(Some(p), format!("memory[{i}].guest"), ErrorKind::Misaligned(r.guest)));
    } else if r.guest.checked_add(r.size).is_none() {
        errors.push(error(Some(p), format!("memory[{i}].guest"), ErrorKind::Overflow));
    }
    if let Backing::Host(base) = r.backing {
        if !base.is_multiple_of(PAGE_SIZE) {
            errors.push(error(Some(p), format!("memory[{i}].backing"), ErrorKind::Misaligned(base)));
        } else if base.checked_add(r.size).is_none() {
            errors.push(error(Some(p), format!("memory[{i}].backing"), ErrorKind::Overflow));
        }
    }
    errors.len() == before
}

fn contains(r: &MemoryRegion, address: u64) -> bool {
    address >= r.guest && address - r.guest < r.size
}

fn ranges_overlap(a: u64, a_size: u64, b: u64, b_size: u64) -> bool {
    a_size != 0 && b_size != 0 && a < b.saturating_add(b_size) && b < a.saturating_add(a_size)
}
