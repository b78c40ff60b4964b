//! Checks that a configuration is safe to start, with errors that name the
//! partition and the field at fault.
//!
//! Nothing is clamped or corrected: every problem becomes a [`ConfigError`].
//! What is checked:
//!
//! | where | check |
//! |---|---|
//! | `partition` | at least one, at most [`MAX_PARTITIONS`] |
//! | `platform.ram/reserved/devices[i]` | page-aligned, non-empty, no wrap; RAM ranges and devices do not overlap each other |
//! | `platform.devices[i]` | unique valid name; interrupts are SPIs |
//! | `name` | valid, unique |
//! | `cpus[i]` | below `platform.cpus` (when set), each CPU in one partition only |
//! | `image` | plain file name; load and entry inside executable memory |
//! | `memory[i]` | page-aligned, non-empty, no wrap, guest ranges disjoint |
//! | `memory[i].backing` (host) | inside `platform.ram` (when set), not reserved, not a device, not another partition's unless both `shared` with the same range and attribute |
//! | `passthrough[i]` | known device, in one partition only, not reserved, guest range free, attribute allowed by [`crate::MemoryAttribute::may_map`] |
//! | `interrupts[i]` | SPI, not a line of a device the partition does not have, in one partition only |
//! | `pci[i].bdf` | `BB:DD.F` on segment 0, each function in one partition only |
//! | `gpu` | `gtt_entries` 1..=131072, `local_memory` page-aligned and at most 64 MiB, `weight` 1..=16, `attr` not `normal-wb` |
//! | `io_ports[i]` | non-empty, below 0x10000, none of [`crate::HYPERVISOR_PORTS`], each port in one partition only |
//!
//! Global errors come first, then each partition's in file order. A
//! conflict between two partitions is reported on the later one.

use crate::error::{ConfigError, ErrorKind, MAX_PARTITIONS, PAGE_SIZE, SPI_INTIDS};
use crate::model::{Backing, Config, MemoryRegion, Partition, Platform};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Checks a configuration; returns every problem found (empty: all good).
pub fn validate(config: &Config) -> Vec<ConfigError> {
    let mut checker = Checker {
        config,
        errors: Vec::new(),
    };
    checker.platform(&config.platform);
    if config.partitions.is_empty() {
        checker.global("partition".into(), ErrorKind::NoPartitions);
    }
    if config.partitions.len() > MAX_PARTITIONS {
        checker.global(
            "partition".into(),
            ErrorKind::TooManyPartitions(config.partitions.len()),
        );
    }
    for (index, partition) in config.partitions.iter().enumerate() {
        checker.partition(index, partition);
    }
    checker.errors
}

/// Whether `name` is 1-32 ASCII letters, digits, `-` or `_`.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

struct Checker<'a> {
    config: &'a Config,
    errors: Vec<ConfigError>,
}

/// Where errors go: the top of the file, or one partition.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Global,
    Partition(usize, &'a Partition),
}

impl<'a> Checker<'a> {
    fn push(&mut self, scope: Scope<'_>, field: String, kind: ErrorKind) {
        let (partition, partition_index) = match scope {
            Scope::Global => (None, None),
            Scope::Partition(index, p) => (Some(p.name.clone()), Some(index)),
        };
        self.errors.push(ConfigError {
            partition,
            partition_index,
            field,
            kind,
        });
    }

    fn global(&mut self, field: String, kind: ErrorKind) {
        self.push(Scope::Global, field, kind);
    }

    /// Checks `base`/`size` of a range named `field` (`platform.ram[0]`,
    /// `memory[1]`); `base_key` is the key holding the base. Returns whether
    /// the range is usable for overlap checks.
    fn range(
        &mut self,
        scope: Scope<'_>,
        field: &str,
        base_key: &str,
        base: u64,
        size: u64,
    ) -> bool {
        let before = self.errors.len();
        if size == 0 {
            self.push(scope, format!("{field}.size"), ErrorKind::ZeroSize);
        } else if !size.is_multiple_of(PAGE_SIZE) {
            self.push(scope, format!("{field}.size"), ErrorKind::Misaligned(size));
        }
        if !base.is_multiple_of(PAGE_SIZE) {
            self.push(
                scope,
                format!("{field}.{base_key}"),
                ErrorKind::Misaligned(base),
            );
        } else if base.checked_add(size).is_none() {
            self.push(scope, format!("{field}.{base_key}"), ErrorKind::Overflow);
        }
        self.errors.len() == before
    }

    fn platform(&mut self, platform: &Platform) {
        if !platform.name.is_empty() && !valid_name(&platform.name) {
            self.global("platform.name".into(), ErrorKind::BadName);
        }
        for (i, ram) in platform.ram.iter().enumerate() {
            if self.range(
                Scope::Global,
                &format!("platform.ram[{i}]"),
                "base",
                ram.base,
                ram.size,
            ) && let Some(j) = platform.ram[..i]
                .iter()
                .position(|r| overlap(r.base, r.size, ram.base, ram.size))
            {
                self.global(
                    format!("platform.ram[{i}].base"),
                    ErrorKind::PlatformOverlap {
                        other: format!("platform.ram[{j}]"),
                    },
                );
            }
        }
        for (i, reserved) in platform.reserved.iter().enumerate() {
            self.range(
                Scope::Global,
                &format!("platform.reserved[{i}]"),
                "base",
                reserved.base,
                reserved.size,
            );
        }
        for (i, device) in platform.devices.iter().enumerate() {
            if !valid_name(&device.name) {
                self.global(format!("platform.devices[{i}].name"), ErrorKind::BadName);
            } else if platform.devices[..i].iter().any(|d| d.name == device.name) {
                self.global(
                    format!("platform.devices[{i}].name"),
                    ErrorKind::DuplicateDeviceName,
                );
            }
            let field = format!("platform.devices[{i}]");
            if self.range(Scope::Global, &field, "base", device.base, device.size) {
                let clash = platform
                    .ram
                    .iter()
                    .position(|r| overlap(r.base, r.size, device.base, device.size))
                    .map(|j| format!("platform.ram[{j}]"))
                    .or_else(|| {
                        platform.devices[..i]
                            .iter()
                            .position(|d| overlap(d.base, d.size, device.base, device.size))
                            .map(|j| format!("platform.devices[{j}]"))
                    });
                if let Some(other) = clash {
                    self.global(
                        format!("{field}.base"),
                        ErrorKind::PlatformOverlap { other },
                    );
                }
            }
            for (j, &intid) in device.interrupts.iter().enumerate() {
                if !SPI_INTIDS.contains(&intid) {
                    self.global(
                        format!("{field}.interrupts[{j}]"),
                        ErrorKind::BadInterrupt(intid),
                    );
                }
            }
        }
    }

    fn partition(&mut self, index: usize, p: &'a Partition) {
        let scope = Scope::Partition(index, p);
        let earlier = &self.config.partitions[..index];
        if !valid_name(&p.name) {
            self.push(scope, "name".into(), ErrorKind::BadName);
        } else if earlier.iter().any(|q| q.name == p.name) {
            self.push(scope, "name".into(), ErrorKind::DuplicateName);
        }
        self.cpus(scope, p, earlier);
        if p.image.file.is_empty() || p.image.file.contains(['/', '\\']) {
            self.push(scope, "image.file".into(), ErrorKind::BadFileName);
        }
        if let Some(initrd) = &p.image.initrd
            && (initrd.is_empty() || initrd.contains(['/', '\\']))
        {
            self.push(scope, "image.initrd".into(), ErrorKind::BadFileName);
        }
        if p.image.kind == crate::model::ImageKind::Linux && !p.image.load.is_multiple_of(2 << 20) {
            self.push(scope, "image.load".into(), ErrorKind::Misaligned(p.image.load));
        }
        let mut regions_ok = true;
        for (i, region) in p.memory.iter().enumerate() {
            regions_ok &= self.range(
                scope,
                &format!("memory[{i}]"),
                "guest",
                region.guest,
                region.size,
            );
        }
        for (i, region) in p.memory.iter().enumerate() {
            self.host_backing(scope, i, region, earlier);
        }
        if regions_ok {
            for (i, region) in p.memory.iter().enumerate() {
                if let Some(j) = p.memory[..i]
                    .iter()
                    .position(|r| overlap(r.guest, r.size, region.guest, region.size))
                {
                    self.push(
                        scope,
                        format!("memory[{i}].guest"),
                        ErrorKind::GuestOverlap {
                            other: format!("memory[{j}]"),
                        },
                    );
                }
                for (what, base, size) in emulated_windows(p) {
                    if overlap(base, size, region.guest, region.size) {
                        self.push(scope, format!("memory[{i}].guest"), ErrorKind::GuestOverlap { other: what.into() });
                    }
                }
            }
            let load = p.image.load;
            if !p
                .memory
                .iter()
                .any(|r| r.perms.write && r.perms.execute && contains(r, load))
            {
                self.push(
                    scope,
                    "image.load".into(),
                    ErrorKind::ImageOutsideMemory(load),
                );
            }
            let entry = p.image.entry_point();
            if !p
                .memory
                .iter()
                .any(|r| r.perms.execute && contains(r, entry))
            {
                self.push(
                    scope,
                    "image.entry".into(),
                    ErrorKind::EntryOutsideMemory(entry),
                );
            }
        }
        self.passthrough(scope, p, earlier, regions_ok);
        self.interrupts(scope, p, earlier);
        self.io_ports(scope, p, earlier);
        self.pci(scope, p, earlier);
        self.gpu(scope, p);
    }

    fn cpus(&mut self, scope: Scope<'_>, p: &Partition, earlier: &[Partition]) {
        if p.cpus.is_empty() {
            self.push(scope, "cpus".into(), ErrorKind::NoCpus);
        }
        let count = self.config.platform.cpus;
        for (i, &cpu) in p.cpus.iter().enumerate() {
            if count > 0 && cpu >= count {
                self.push(
                    scope,
                    format!("cpus[{i}]"),
                    ErrorKind::CpuOutOfRange { cpu, count },
                );
                continue;
            }
            let owner = if p.cpus[..i].contains(&cpu) {
                Some(p.name.clone())
            } else {
                earlier
                    .iter()
                    .find(|q| q.cpus.contains(&cpu))
                    .map(|q| q.name.clone())
            };
            if let Some(other) = owner {
                self.push(
                    scope,
                    format!("cpus[{i}]"),
                    ErrorKind::CpuTaken { cpu, other },
                );
            }
        }
    }

    /// Host-physical checks of one region: `shared` needs a host range, and
    /// a host range must be RAM that nobody else has.
    fn host_backing(
        &mut self,
        scope: Scope<'_>,
        i: usize,
        region: &MemoryRegion,
        earlier: &[Partition],
    ) {
        let Backing::Host(base) = region.backing else {
            if region.shared {
                self.push(
                    scope,
                    format!("memory[{i}].shared"),
                    ErrorKind::SharedNotHost,
                );
            }
            return;
        };
        let field = format!("memory[{i}].backing");
        if !base.is_multiple_of(PAGE_SIZE) {
            self.push(scope, field, ErrorKind::Misaligned(base));
            return;
        }
        if base.checked_add(region.size).is_none() {
            self.push(scope, field, ErrorKind::Overflow);
            return;
        }
        let size = region.size;
        let platform = &self.config.platform;
        if let Some(reserved) = platform
            .reserved
            .iter()
            .find(|r| overlap(r.base, r.size, base, size))
        {
            let what = reserved.what.clone();
            self.push(scope, field, ErrorKind::ReservedMemory { base, size, what });
        } else if let Some(device) = platform
            .devices
            .iter()
            .find(|d| overlap(d.base, d.size, base, size))
        {
            let device = device.name.clone();
            self.push(scope, field, ErrorKind::DeviceMemory { device });
        } else if !platform.ram.is_empty()
            && !platform.ram.iter().any(|r| {
                base >= r.base && base.saturating_add(size) <= r.base.saturating_add(r.size)
            })
        {
            self.push(scope, field, ErrorKind::OutsideRam { base, size });
        } else if let Some(kind) = host_clash(region, base, earlier) {
            let field = match kind {
                ErrorKind::SharedAttrMismatch { .. } => format!("memory[{i}].attr"),
                _ => field,
            };
            self.push(scope, field, kind);
        }
    }

    fn passthrough(
        &mut self,
        scope: Scope<'_>,
        p: &Partition,
        earlier: &[Partition],
        regions_ok: bool,
    ) {
        let platform = &self.config.platform;
        // Guest ranges already placed, for the overlap check: (field, base, size).
        let mut placed: Vec<(String, u64, u64)> = Vec::new();
        if regions_ok {
            placed.extend(
                p.memory
                    .iter()
                    .enumerate()
                    .map(|(j, r)| (format!("memory[{j}]"), r.guest, r.size)),
            );
        }
        for (i, pass) in p.passthrough.iter().enumerate() {
            let field = format!("passthrough[{i}]");
            let Some(device) = platform.device(&pass.device) else {
                self.push(
                    scope,
                    format!("{field}.device"),
                    ErrorKind::UnknownDevice(pass.device.clone()),
                );
                continue;
            };
            let owner = if p.passthrough[..i].iter().any(|q| q.device == pass.device) {
                Some(p.name.clone())
            } else {
                earlier
                    .iter()
                    .find(|q| q.passthrough.iter().any(|r| r.device == pass.device))
                    .map(|q| q.name.clone())
            };
            if let Some(other) = owner {
                let device = device.name.clone();
                self.push(
                    scope,
                    format!("{field}.device"),
                    ErrorKind::DeviceTaken { device, other },
                );
            } else if let Some(reserved) = platform
                .reserved
                .iter()
                .find(|r| overlap(r.base, r.size, device.base, device.size))
            {
                let (base, size, what) = (device.base, device.size, reserved.what.clone());
                self.push(
                    scope,
                    format!("{field}.device"),
                    ErrorKind::ReservedMemory { base, size, what },
                );
            }
            if let Some(attr) = pass.attr
                && !attr.may_map(device.attr)
            {
                let kind = ErrorKind::AttrMismatch {
                    device: device.name.clone(),
                    asked: attr,
                    platform: device.attr,
                };
                self.push(scope, format!("{field}.attr"), kind);
            }
            let guest = pass.guest_base(device);
            if !guest.is_multiple_of(PAGE_SIZE) {
                self.push(
                    scope,
                    format!("{field}.guest"),
                    ErrorKind::Misaligned(guest),
                );
            } else if guest.checked_add(device.size).is_none() {
                self.push(scope, format!("{field}.guest"), ErrorKind::Overflow);
            } else {
                if let Some((other, ..)) = placed
                    .iter()
                    .find(|(_, b, s)| overlap(*b, *s, guest, device.size))
                {
                    let other = other.clone();
                    self.push(
                        scope,
                        format!("{field}.guest"),
                        ErrorKind::GuestOverlap { other },
                    );
                }
                for (what, base, size) in emulated_windows(p) {
                    if overlap(base, size, guest, device.size) {
                        self.push(scope, format!("{field}.guest"), ErrorKind::GuestOverlap { other: what.into() });
                    }
                }
                placed.push((field, guest, device.size));
            }
        }
    }

    fn pci(&mut self, scope: Scope<'_>, p: &Partition, earlier: &[Partition]) {
        for (i, function) in p.pci.iter().enumerate() {
            let field = format!("pci[{i}].bdf");
            let Some(bdf) = function.address() else {
                self.push(scope, field, ErrorKind::BadBdf(function.bdf.clone()));
                continue;
            };
            let holds = |q: &Partition| q.pci.iter().any(|f| f.address() == Some(bdf));
            let other = if p.pci[..i].iter().any(|f| f.address() == Some(bdf)) {
                Some(p.name.clone())
            } else {
                earlier.iter().find(|q| holds(q)).map(|q| q.name.clone())
            };
            if let Some(other) = other {
                self.push(scope, field, ErrorKind::PciTaken { bdf: format!("{bdf}"), other });
            }
        }
    }

    fn gpu(&mut self, scope: Scope<'_>, p: &Partition) {
        let Some(gpu) = &p.gpu else { return };
        let entries = u64::from(gpu.gtt_entries);
        if entries == 0 || entries > u64::from(crate::model::VIRTUAL_GPU_MAX_GTT_ENTRIES) {
            self.push(scope, "gpu.gtt_entries".into(), ErrorKind::GpuField { value: entries, allowed: "1 to 131072 entries" });
        }
        let memory = gpu.local_memory;
        if memory == 0 || !memory.is_multiple_of(PAGE_SIZE) || memory > crate::model::VIRTUAL_GPU_MEMORY_MAX {
            self.push(scope, "gpu.local_memory".into(), ErrorKind::GpuField {
                value: memory,
                allowed: "a non-zero multiple of 4 KiB, at most 64 MiB",
            });
        }
        let weight = u64::from(gpu.weight);
        if weight == 0 || weight > u64::from(crate::model::VIRTUAL_GPU_MAX_WEIGHT) {
            self.push(scope, "gpu.weight".into(), ErrorKind::GpuField { value: weight, allowed: "1 to 16" });
        }
        if gpu.attr == crate::MemoryAttribute::NormalWb {
            self.push(scope, "gpu.attr".into(), ErrorKind::GpuCacheable);
        }
    }

    fn io_ports(&mut self, scope: Scope<'_>, p: &Partition, earlier: &[Partition]) {
        // The first port two ranges share, if any.
        let overlap_of = |a: &crate::PortRange, b: &crate::PortRange| {
            let span = |r: &crate::PortRange| (u64::from(r.base), u64::from(r.base) + u64::from(r.size));
            let ((a_start, a_end), (b_start, b_end)) = (span(a), span(b));
            (a_start < b_end && b_start < a_end).then(|| a_start.max(b_start) as u32)
        };
        for (i, range) in p.io_ports.iter().enumerate() {
            let field = format!("io_ports[{i}]");
            if range.ports().is_none() {
                self.push(scope, field, ErrorKind::BadPortRange { base: range.base, size: range.size });
                continue;
            }
            if let Some(&(base, _, what)) = crate::HYPERVISOR_PORTS
                .iter()
                .find(|(base, size, _)| overlap_of(range, &crate::PortRange { base: *base, size: *size }).is_some())
            {
                self.push(scope, field, ErrorKind::HypervisorPorts { base, what });
                continue;
            }
            let mine = p.io_ports[..i].iter().filter_map(|r| overlap_of(range, r)).map(|port| (port, p.name.clone()));
            let theirs = earlier
                .iter()
                .flat_map(|q| q.io_ports.iter().filter_map(|r| overlap_of(range, r)).map(|port| (port, q.name.clone())));
            if let Some((port, other)) = mine.chain(theirs).next() {
                self.push(scope, field, ErrorKind::PortsTaken { port, other });
            }
        }
    }

    fn interrupts(&mut self, scope: Scope<'_>, p: &Partition, earlier: &[Partition]) {
        let platform = &self.config.platform;
        let owner_of = |intid: u32| {
            earlier
                .iter()
                .find(|q| q.interrupt_ids(platform).contains(&intid))
                .map(|q| q.name.clone())
        };
        for (i, &intid) in p.interrupts.iter().enumerate() {
            let field = format!("interrupts[{i}]");
            if !SPI_INTIDS.contains(&intid) {
                self.push(scope, field, ErrorKind::BadInterrupt(intid));
                continue;
            }
            let line_of = platform.devices.iter().find(|d| {
                d.interrupts.contains(&intid)
                    && !p.passthrough.iter().any(|pass| pass.device == d.name)
            });
            if let Some(device) = line_of {
                let device = device.name.clone();
                self.push(scope, field, ErrorKind::InterruptOfDevice { intid, device });
            } else if p.interrupts[..i].contains(&intid) {
                self.push(
                    scope,
                    field,
                    ErrorKind::InterruptTaken {
                        intid,
                        other: p.name.clone(),
                    },
                );
            } else if let Some(other) = owner_of(intid) {
                self.push(scope, field, ErrorKind::InterruptTaken { intid, other });
            }
        }
        // A passed-through device brings its lines; one shared with a device
        // of an earlier partition is a conflict too.
        for (i, pass) in p.passthrough.iter().enumerate() {
            let Some(device) = platform.device(&pass.device) else {
                continue;
            };
            if earlier
                .iter()
                .any(|q| q.passthrough.iter().any(|r| r.device == pass.device))
            {
                continue; // already reported as DeviceTaken
            }
            if let Some((intid, other)) = device
                .interrupts
                .iter()
                .find_map(|&n| owner_of(n).map(|o| (n, o)))
            {
                self.push(
                    scope,
                    format!("passthrough[{i}].device"),
                    ErrorKind::InterruptTaken { intid, other },
                );
            }
        }
    }
}

/// How host range `base..base+region.size` conflicts with the host memory
/// of the earlier partitions, if it does.
fn host_clash(region: &MemoryRegion, base: u64, earlier: &[Partition]) -> Option<ErrorKind> {
    for q in earlier {
        for (j, r) in q.memory.iter().enumerate() {
            let Backing::Host(other_base) = r.backing else {
                continue;
            };
            if !overlap(other_base, r.size, base, region.size) {
                continue;
            }
            let (other, region_index) = (q.name.clone(), j);
            if !(r.shared && region.shared) {
                return Some(ErrorKind::HostOverlap {
                    other,
                    region: region_index,
                });
            }
            if other_base != base || r.size != region.size {
                return Some(ErrorKind::SharedRangeMismatch {
                    other,
                    region: region_index,
                });
            }
            if r.attr != region.attr {
                return Some(ErrorKind::SharedAttrMismatch {
                    other,
                    region: region_index,
                    attr: r.attr,
                });
            }
        }
    }
    None
}

fn contains(r: &MemoryRegion, address: u64) -> bool {
    address >= r.guest && address - r.guest < r.size
}

fn overlap(a: u64, a_size: u64, b: u64, b_size: u64) -> bool {
    a_size != 0 && b_size != 0 && a < b.saturating_add(b_size) && b < a.saturating_add(a_size)
}

/// The guest-physical windows of the devices the hypervisor emulates for
/// partition `p`: its virtual GIC, the virtual PCI configuration space,
/// APICs and GPU if it has PCI functions or a GPU, and the emulated UART if
/// it has one.
pub fn emulated_windows(p: &Partition) -> Vec<(&'static str, u64, u64)> {
    let vcpus = p.cpus.len().max(1) as u64;
    let mut windows = alloc::vec![
        ("the virtual GIC distributor", crate::model::VGIC_DISTRIBUTOR_BASE, 0x1_0000),
        ("the virtual GIC redistributors", crate::model::VGIC_REDISTRIBUTOR_BASE, 0x2_0000 * vcpus),
        ("the verdict register", crate::model::VERDICT_REGISTER_BASE, 0x1000),
    ];
    if !p.pci.is_empty() || p.gpu.is_some() {
        windows.push(("the virtual PCI configuration space", crate::model::VIRTUAL_PCI_ECAM_BASE, crate::model::VIRTUAL_PCI_ECAM_SIZE));
        // x86_64 takes the functions' INTx through these two; the
        // configuration does not say the architecture, and on arm64 both
        // lie above `virt`'s RAM base (0x4000_0000) in a range its layout
        // leaves unused, so they are reserved for every partition with `pci`.
        windows.push(("the virtual I/O APIC", crate::model::VIRTUAL_IOAPIC_BASE, crate::model::VIRTUAL_APIC_WINDOW_SIZE));
        windows.push(("the virtual local APIC", crate::model::VIRTUAL_LAPIC_BASE, crate::model::VIRTUAL_APIC_WINDOW_SIZE));
    }
    if p.gpu.is_some() {
        windows.push(("the virtual GPU's registers", crate::model::VIRTUAL_GPU_REGISTERS_BASE, crate::model::VIRTUAL_GPU_REGISTERS_SIZE));
        windows.push(("the virtual GPU's memory", crate::model::VIRTUAL_GPU_MEMORY_BASE, crate::model::VIRTUAL_GPU_MEMORY_MAX));
    }
    if p.console == crate::model::Console::Pl011 {
        windows.push(("the emulated UART", crate::model::EMULATED_UART_BASE, 0x1000));
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MemoryAttribute;

    #[test]
    fn attributes_may_only_be_strengthened_from_normal_nc_to_device() {
        use MemoryAttribute::*;
        assert!(DeviceNGnRE.may_map(DeviceNGnRE));
        assert!(DeviceNGnRE.may_map(NormalNc));
        assert!(DeviceNGnRnE.may_map(NormalNc));
        assert!(!NormalWb.may_map(NormalNc));
        assert!(!NormalWb.may_map(DeviceNGnRE));
        assert!(!NormalNc.may_map(DeviceNGnRE));
        assert!(!DeviceNGnRnE.may_map(DeviceNGnRE));
        assert!(!DeviceNGnRE.may_map(DeviceNGnRnE));
    }

    #[test]
    fn overlap_is_half_open_and_ignores_empty_ranges() {
        assert!(overlap(0x1000, 0x1000, 0x1fff, 1));
        assert!(!overlap(0x1000, 0x1000, 0x2000, 0x1000));
        assert!(!overlap(0x1000, 0, 0x1000, 0x1000));
        assert!(overlap(0x1000, 0x3000, 0x2000, 0x1000));
    }
}

