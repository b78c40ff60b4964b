//! DMAR (DMA remapping, Intel VT-d spec rev. 4.1 chapter 8) and MCFG (PCI
//! Firmware spec 3.3 §4.1.2): the tables that say where the IOMMUs and the
//! PCI configuration space are.
//!
//! DMAR after the common header (§8.1, Table 8-1):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 36 | 1 | host address width minus one |
//! | 37 | 1 | flags (bit 0 INTR_REMAP, bit 1 X2APIC_OPT_OUT, bit 2 DMA_CTRL_PLATFORM_OPT_IN) |
//! | 38 | 10 | reserved |
//! | 48 | - | remapping structures: type (u16), length (u16), body |
//!
//! Remapping structures read here: DRHD (type 0, §8.3: flags at 4 with
//! bit 0 INCLUDE_PCI_ALL, segment at 6, register base at 8, device scopes
//! from 16) and RMRR (type 1, §8.4: segment at 6, base at 8, limit at 16,
//! device scopes from 24). Others (ATSR, RHSA, ANDD, SATC, SIDP) are counted
//! and skipped. A device scope (§8.3.1): type (u8), length (u8), reserved
//! (u16), enumeration ID (u8), start bus (u8), then (device, function)
//! pairs, one per hop from the start bus down through bridges.

use super::{AcpiError, HEADER_SIZE, u16_at, u64_at};
use alloc::vec::Vec;
use core::fmt;

/// Offset of the first remapping structure in the DMAR.
const DMAR_STRUCTURES: usize = 48;
/// Fixed part of a DRHD before its device scopes.
const DRHD_FIXED: usize = 16;
/// Fixed part of an RMRR before its device scopes.
const RMRR_FIXED: usize = 24;
/// Fixed part of a device scope before its path.
const SCOPE_FIXED: usize = 6;
/// DRHD flag bit 0: the unit covers every PCI device of its segment not
/// claimed by another unit's scope.
const DRHD_INCLUDE_PCI_ALL: u8 = 1 << 0;
/// DMAR remapping structure types (§8.2, Table 8-2).
const TYPE_DRHD: u16 = 0;
const TYPE_RMRR: u16 = 1;
/// Offset of the first allocation in the MCFG (8 reserved bytes after the header).
const MCFG_ENTRIES: usize = 44;
/// Bytes of one MCFG allocation.
const MCFG_ENTRY_SIZE: usize = 16;

/// A PCI function address: bus, device (0..32), function (0..8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bdf {
    /// Bus number.
    pub bus: u8,
    /// Device number, 0..32.
    pub device: u8,
    /// Function number, 0..8.
    pub function: u8,
}

impl Bdf {
    /// The function at `bus:device.function`, or `None` if device or
    /// function is out of range.
    pub const fn new(bus: u8, device: u8, function: u8) -> Option<Bdf> {
        if device < 32 && function < 8 { Some(Bdf { bus, device, function }) } else { None }
    }

    /// The 16-bit requester ID (PCIe source ID): bus in 15:8, device in
    /// 7:3, function in 2:0.
    pub const fn requester_id(self) -> u16 {
        (self.bus as u16) << 8 | (self.device as u16) << 3 | self.function as u16
    }

    /// The function a 16-bit requester ID names.
    pub const fn from_requester_id(id: u16) -> Bdf {
        Bdf { bus: (id >> 8) as u8, device: ((id >> 3) & 0x1f) as u8, function: (id & 0x7) as u8 }
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// What a device scope names (§8.3.1, Table 8-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeKind {
    /// 1: one PCI endpoint.
    PciEndpoint,
    /// 2: a PCI-PCI bridge and every device below it.
    PciSubHierarchy,
    /// 3: an I/O APIC (enumeration ID = its APIC ID).
    IoApic,
    /// 4: an MSI-capable HPET (enumeration ID = its number).
    Hpet,
    /// 5: an ACPI namespace device.
    AcpiNamespace,
    /// Any other value.
    Other(u8),
}

impl ScopeKind {
    fn from_raw(raw: u8) -> ScopeKind {
        match raw {
            1 => ScopeKind::PciEndpoint,
            2 => ScopeKind::PciSubHierarchy,
            3 => ScopeKind::IoApic,
            4 => ScopeKind::Hpet,
            5 => ScopeKind::AcpiNamespace,
            other => ScopeKind::Other(other),
        }
    }
}

/// One device scope of a DRHD or RMRR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceScope {
    /// What it names.
    pub kind: ScopeKind,
    /// I/O APIC ID, HPET number or ACPI device number; 0 for PCI.
    pub enumeration_id: u8,
    /// The bus the path starts on.
    pub start_bus: u8,
    /// (device, function) hops from the start bus.
    pub path: Vec<(u8, u8)>,
}

impl DeviceScope {
    /// The function this scope names. A one-hop path needs nothing more; a
    /// longer one goes through bridges, whose secondary bus number
    /// `secondary_bus` reads from configuration space (`None`: no bridge
    /// there). `None` for an empty path, an out-of-range hop or a missing
    /// bridge.
    pub fn bdf(&self, secondary_bus: impl Fn(Bdf) -> Option<u8>) -> Option<Bdf> {
        let (&last, hops) = self.path.split_last()?;
        let mut bus = self.start_bus;
        for &(device, function) in hops {
            bus = secondary_bus(Bdf::new(bus, device, function)?)?;
        }
        Bdf::new(bus, last.0, last.1)
    }
}

/// A DMA remapping hardware unit (DRHD).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drhd {
    /// Physical address of its 4 KiB register page.
    pub register_base: u64,
    /// PCI segment it serves.
    pub segment: u16,
    /// INCLUDE_PCI_ALL: it serves every device of the segment that no
    /// other unit's scope lists (its own scopes then list only I/O APICs and
    /// HPETs).
    pub include_pci_all: bool,
    /// The devices it serves (besides the INCLUDE_PCI_ALL rest).
    pub scopes: Vec<DeviceScope>,
}

/// A reserved memory region (RMRR): memory the firmware says devices keep
/// using for DMA (USB legacy emulation, graphics stolen memory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rmrr {
    /// PCI segment.
    pub segment: u16,
    /// First byte.
    pub base: u64,
    /// Last byte (inclusive, as the table gives it).
    pub limit: u64,
    /// The devices that use it.
    pub scopes: Vec<DeviceScope>,
}

/// What the DMAR says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dmar {
    /// Host address width: the DMA physical addressability of the platform
    /// (the table stores it minus one).
    pub host_address_width: u8,
    /// Flags byte (bit 0 INTR_REMAP, bit 1 X2APIC_OPT_OUT, bit 2
    /// DMA_CTRL_PLATFORM_OPT_IN).
    pub flags: u8,
    /// The remapping units, in table order.
    pub units: Vec<Drhd>,
    /// The reserved memory regions, in table order.
    pub reserved: Vec<Rmrr>,
    /// Remapping structures of other types (ATSR, RHSA, ANDD, SATC, ...),
    /// skipped.
    pub skipped: usize,
}

/// Parses the device scopes in `bytes` (which start at `base` in the table,
/// for error offsets).
fn parse_scopes(bytes: &[u8], base: usize) -> Result<Vec<DeviceScope>, AcpiError> {
    let mut scopes = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let length = bytes.get(offset + 1).copied().map_or(0, usize::from);
        // The path is whole (device, function) pairs after the fixed part.
        let Some(scope) = bytes
            .get(offset..offset + length)
            .filter(|_| length >= SCOPE_FIXED && (length - SCOPE_FIXED).is_multiple_of(2))
        else {
            return Err(AcpiError::BadDmarEntry(base + offset));
        };
        scopes.push(DeviceScope {
            kind: ScopeKind::from_raw(scope[0]),
            enumeration_id: scope[4],
            start_bus: scope[5],
            path: scope[SCOPE_FIXED..].chunks_exact(2).map(|hop| (hop[0], hop[1])).collect(),
        });
        offset += length;
    }
    Ok(scopes)
}

/// Parses a DMAR (the bytes [`read_table`](super::read_table) returned).
///
/// # Errors
/// [`AcpiError::BadLength`] for a table too short for its fixed fields,
/// [`AcpiError::BadDmarEntry`] for a structure or scope that overruns its
/// container or is shorter than its fixed fields.
pub fn parse_dmar(table: &[u8]) -> Result<Dmar, AcpiError> {
    if table.len() < DMAR_STRUCTURES {
        return Err(AcpiError::BadLength(0));
    }
    let mut dmar = Dmar {
        host_address_width: table[HEADER_SIZE].saturating_add(1),
        flags: table[HEADER_SIZE + 1],
        units: Vec::new(),
        reserved: Vec::new(),
        skipped: 0,
    };
    let mut offset = DMAR_STRUCTURES;
    while offset < table.len() {
        let kind = u16_at(table, offset);
        let length = u16_at(table, offset + 2).map_or(0, usize::from);
        let (Some(kind), Some(entry)) = (kind, table.get(offset..offset + length).filter(|_| length >= 4)) else {
            return Err(AcpiError::BadDmarEntry(offset));
        };
        match kind {
            TYPE_DRHD => {
                if length < DRHD_FIXED {
                    return Err(AcpiError::BadDmarEntry(offset));
                }
                dmar.units.push(Drhd {
                    register_base: u64_at(entry, 8).unwrap_or(0),
                    segment: u16_at(entry, 6).unwrap_or(0),
                    include_pci_all: entry[4] & DRHD_INCLUDE_PCI_ALL != 0,
                    scopes: parse_scopes(&entry[DRHD_FIXED..], offset + DRHD_FIXED)?,
                });
            }
            TYPE_RMRR => {
                if length < RMRR_FIXED {
                    return Err(AcpiError::BadDmarEntry(offset));
                }
                dmar.reserved.push(Rmrr {
                    segment: u16_at(entry, 6).unwrap_or(0),
                    base: u64_at(entry, 8).unwrap_or(0),
                    limit: u64_at(entry, 16).unwrap_or(0),
                    scopes: parse_scopes(&entry[RMRR_FIXED..], offset + RMRR_FIXED)?,
                });
            }
            _ => dmar.skipped += 1,
        }
        offset += length;
    }
    Ok(dmar)
}

/// One MCFG allocation: the ECAM window of a segment's bus range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcamWindow {
    /// Physical address of bus 0's configuration space in this segment
    /// (the window itself starts at `start_bus`'s 1 MiB).
    pub base: u64,
    /// PCI segment group.
    pub segment: u16,
    /// First bus decoded.
    pub start_bus: u8,
    /// Last bus decoded.
    pub end_bus: u8,
}

impl EcamWindow {
    /// Bytes of configuration space per bus (32 devices × 8 functions × 4 KiB).
    pub const BUS_SIZE: u64 = 1 << 20;

    /// The physical address of `bdf`'s 4 KiB configuration space, or `None`
    /// if its bus is outside the window.
    pub fn function_address(&self, bdf: Bdf) -> Option<u64> {
        (self.start_bus..=self.end_bus).contains(&bdf.bus).then(|| {
            self.base + (u64::from(bdf.bus) << 20 | u64::from(bdf.device) << 15 | u64::from(bdf.function) << 12)
        })
    }
}

/// Parses an MCFG (the bytes [`read_table`](super::read_table) returned).
///
/// # Errors
/// [`AcpiError::BadLength`] if the table is shorter than its fixed fields or
/// its allocations are not whole 16-byte entries.
pub fn parse_mcfg(table: &[u8]) -> Result<Vec<EcamWindow>, AcpiError> {
    let entries = table.get(MCFG_ENTRIES..).ok_or(AcpiError::BadLength(0))?;
    if !entries.len().is_multiple_of(MCFG_ENTRY_SIZE) {
        return Err(AcpiError::BadLength(0));
    }
    Ok(entries
        .chunks_exact(MCFG_ENTRY_SIZE)
        .map(|entry| EcamWindow {
            base: u64_at(entry, 0).unwrap_or(0),
            segment: u16_at(entry, 8).unwrap_or(0),
            start_bus: entry[10],
            end_bus: entry[11],
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    /// A table with `signature` and `body` after a zeroed header (parsers
    /// take bytes; checksums are `read_table`'s business).
    fn table(signature: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; HEADER_SIZE];
        t[..4].copy_from_slice(signature);
        t.extend_from_slice(body);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        t
    }

    fn structure(kind: u16, fixed: &[u8], scopes: &[&[u8]]) -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(&kind.to_le_bytes());
        let length = 4 + fixed.len() + scopes.iter().map(|x| x.len()).sum::<usize>();
        s.extend_from_slice(&(length as u16).to_le_bytes());
        s.extend_from_slice(fixed);
        for scope in scopes {
            s.extend_from_slice(scope);
        }
        s
    }

    fn dmar(structures: &[Vec<u8>]) -> Vec<u8> {
        // Host address width 39 (stored as 38), flags INTR_REMAP, 10 reserved bytes.
        let mut body = vec![38, 1];
        body.extend_from_slice(&[0; 10]);
        for s in structures {
            body.extend_from_slice(s);
        }
        table(b"DMAR", &body)
    }

    /// DRHD fixed part after type/length: flags, size, segment, base.
    fn drhd_fixed(flags: u8, segment: u16, base: u64) -> Vec<u8> {
        let mut f = vec![flags, 0];
        f.extend_from_slice(&segment.to_le_bytes());
        f.extend_from_slice(&base.to_le_bytes());
        f
    }

    // Endpoint 00:1f.0, I/O APIC 0 at 00:1e.7 (enumeration ID 8),
    // and an endpoint behind bridge 00:1c.0 at device 00.1 there.
    const ENDPOINT: [u8; 8] = [1, 8, 0, 0, 0, 0, 0x1f, 0];
    const IOAPIC: [u8; 8] = [3, 8, 0, 0, 8, 0, 0x1e, 7];
    const BEHIND_BRIDGE: [u8; 10] = [1, 10, 0, 0, 0, 0, 0x1c, 0, 0, 1];

    #[test]
    fn units_scopes_and_reserved_regions_are_read() {
        let mut rmrr_fixed = vec![0, 0, 0, 0];
        rmrr_fixed.extend_from_slice(&0x7f00_0000u64.to_le_bytes());
        rmrr_fixed.extend_from_slice(&0x7f0f_ffffu64.to_le_bytes());
        let bytes = dmar(&[
            structure(0, &drhd_fixed(0, 0, 0xfed9_1000), &[&ENDPOINT, &BEHIND_BRIDGE]),
            structure(0, &drhd_fixed(1, 0, 0xfed9_0000), &[&IOAPIC]),
            structure(1, &rmrr_fixed[..], &[&ENDPOINT]),
            structure(3, &[0; 12], &[]), // an RHSA, skipped
        ]);
        let dmar = parse_dmar(&bytes).unwrap();
        assert_eq!((dmar.host_address_width, dmar.flags, dmar.skipped), (39, 1, 1));
        assert_eq!(dmar.units.len(), 2);
        let first = &dmar.units[0];
        assert_eq!((first.register_base, first.include_pci_all, first.segment), (0xfed9_1000, false, 0));
        assert_eq!(first.scopes[0].kind, ScopeKind::PciEndpoint);
        assert_eq!(first.scopes[0].bdf(|_| None), Bdf::new(0, 0x1f, 0));
        // Two hops: the bridge's secondary bus comes from configuration space.
        let bridge = Bdf::new(0, 0x1c, 0).unwrap();
        assert_eq!(first.scopes[1].bdf(|b| (b == bridge).then_some(5)), Bdf::new(5, 0, 1));
        assert_eq!(first.scopes[1].bdf(|_| None), None, "no bridge there");
        let second = &dmar.units[1];
        assert!(second.include_pci_all);
        assert_eq!((second.scopes[0].kind, second.scopes[0].enumeration_id), (ScopeKind::IoApic, 8));
        assert_eq!(dmar.reserved[0].base, 0x7f00_0000);
        assert_eq!(dmar.reserved[0].limit, 0x7f0f_ffff);
        assert_eq!(dmar.reserved[0].scopes[0].bdf(|_| None).unwrap().to_string(), "00:1f.0");
    }

    #[test]
    fn malformed_dmar_structures_are_errors() {
        assert_eq!(parse_dmar(&[0; 40]), Err(AcpiError::BadLength(0)));
        // Structure length 0 (would loop forever if trusted).
        let mut zero = dmar(&[]);
        zero.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(parse_dmar(&zero), Err(AcpiError::BadDmarEntry(48)));
        // A DRHD shorter than its fixed fields.
        assert_eq!(parse_dmar(&dmar(&[structure(0, &[0; 4], &[])])), Err(AcpiError::BadDmarEntry(48)));
        // A scope whose length runs past the DRHD.
        let overrun = [1u8, 40, 0, 0, 0, 0, 0x1f, 0];
        assert_eq!(parse_dmar(&dmar(&[structure(0, &drhd_fixed(0, 0, 0), &[&overrun])])), Err(AcpiError::BadDmarEntry(64)));
        // A scope with half a path hop.
        let odd = [1u8, 7, 0, 0, 0, 0, 0x1f];
        assert_eq!(parse_dmar(&dmar(&[structure(0, &drhd_fixed(0, 0, 0), &[&odd])])), Err(AcpiError::BadDmarEntry(64)));
        // An empty path names nothing.
        let empty = DeviceScope { kind: ScopeKind::PciEndpoint, enumeration_id: 0, start_bus: 0, path: Vec::new() };
        assert_eq!(empty.bdf(|_| Some(1)), None);
    }

    #[test]
    fn mcfg_windows_and_function_addresses() {
        let mut body = vec![0u8; 8];
        body.extend_from_slice(&0xb000_0000u64.to_le_bytes());
        body.extend_from_slice(&[0, 0, 0, 0xff, 0, 0, 0, 0]);
        let windows = parse_mcfg(&table(b"MCFG", &body)).unwrap();
        assert_eq!(windows, [EcamWindow { base: 0xb000_0000, segment: 0, start_bus: 0, end_bus: 0xff }]);
        let edu = Bdf::new(0, 3, 0).unwrap();
        assert_eq!(windows[0].function_address(edu), Some(0xb001_8000));
        assert_eq!(windows[0].function_address(Bdf::new(1, 0, 1).unwrap()), Some(0xb010_1000));
        let narrow = EcamWindow { start_bus: 1, end_bus: 1, ..windows[0] };
        assert_eq!(narrow.function_address(edu), None);
        body.push(0);
        assert_eq!(parse_mcfg(&table(b"MCFG", &body)), Err(AcpiError::BadLength(0)));
        assert_eq!(parse_mcfg(&[0; 40]), Err(AcpiError::BadLength(0)));
    }

    #[test]
    fn requester_ids_round_trip() {
        let bdf = Bdf::new(0x12, 0x1f, 7).unwrap();
        assert_eq!(bdf.requester_id(), 0x12ff);
        assert_eq!(Bdf::from_requester_id(0x12ff), bdf);
        assert_eq!(Bdf::from_requester_id(0x0018).to_string(), "00:03.0");
        assert_eq!(Bdf::new(0, 32, 0), None);
        assert_eq!(Bdf::new(0, 0, 8), None);
    }
}
