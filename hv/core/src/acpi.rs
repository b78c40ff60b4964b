//! The few ACPI tables the hypervisor reads itself: RSDP → XSDT (or RSDT)
//! → MADT ("APIC"), for the CPUs' local APIC IDs; DMAR (the Intel VT-d
//! remapping units, [`parse_dmar`]); MCFG (where PCI Express configuration
//! space lies, [`parse_mcfg`]).
//!
//! Layouts follow the ACPI specification 6.5: RSDP §5.2.5.3, system
//! description table header §5.2.6, XSDT §5.2.8, MADT §5.2.12 with its
//! Processor Local APIC (type 0, §5.2.12.2) and Processor Local x2APIC
//! (type 9, §5.2.12.12) entries. DMAR follows the Intel VT-d specification
//! (rev. 4.1) chapter 8; MCFG the PCI Firmware specification 3.3 §4.1.2. Every read goes through [`PhysicalMemory`]
//! and is bounds-checked: tables come from firmware, and a malformed one
//! gives an [`AcpiError`], never a panic or a read past its end.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Largest table read (an MADT for hundreds of CPUs is a few KiB).
pub const MAX_TABLE_SIZE: u32 = 1 << 20;
/// Length of the system description table header.
pub const HEADER_SIZE: usize = 36;
/// Offset of the MADT's first interrupt controller structure.
const MADT_ENTRIES: usize = 44;

/// Read access to host-physical memory.
pub trait PhysicalMemory {
    /// Copies `buffer.len()` bytes from `address`; `false` if that range
    /// cannot be read.
    fn read(&self, address: u64, buffer: &mut [u8]) -> bool;
}

/// What went wrong while reading the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// No RSDP was handed over.
    NoRsdp,
    /// A range could not be read.
    Unreadable(u64),
    /// The structure at this address lacks its signature.
    BadSignature(u64),
    /// The structure at this address fails its checksum.
    BadChecksum(u64),
    /// The table at this address has an impossible length.
    BadLength(u64),
    /// No table with this signature in the XSDT/RSDT.
    NotFound([u8; 4]),
    /// An MADT entry at this offset overruns the table or is shorter than two bytes.
    BadEntry(usize),
    /// A DMAR remapping structure or device scope at this offset overruns
    /// its container or is shorter than its fixed fields.
    BadDmarEntry(usize),
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcpiError::NoRsdp => write!(f, "the loader found no ACPI RSDP"),
            AcpiError::Unreadable(at) => write!(f, "cannot read ACPI data at {at:#x}"),
            AcpiError::BadSignature(at) => write!(f, "ACPI structure at {at:#x} has a wrong signature"),
            AcpiError::BadChecksum(at) => write!(f, "ACPI structure at {at:#x} fails its checksum"),
            AcpiError::BadLength(at) => write!(f, "ACPI table at {at:#x} has an impossible length"),
            AcpiError::NotFound(sig) => {
                write!(f, "no ACPI table '{}'", core::str::from_utf8(sig).unwrap_or("????"))
            }
            AcpiError::BadEntry(offset) => write!(f, "malformed MADT entry at offset {offset}"),
            AcpiError::BadDmarEntry(offset) => write!(f, "malformed DMAR structure at offset {offset}"),
        }
    }
}

/// One CPU the MADT lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtCpu {
    /// Its local APIC ID (x2APIC ID for type-9 entries).
    pub apic_id: u32,
    /// The firmware's processor UID.
    pub uid: u32,
    /// Enabled (flag bit 0).
    pub enabled: bool,
    /// Can be brought online although not enabled (flag bit 1).
    pub online_capable: bool,
}

impl MadtCpu {
    /// Whether the CPU can run (enabled or online-capable).
    pub const fn usable(&self) -> bool {
        self.enabled || self.online_capable
    }
}

/// An I/O APIC the MADT lists (entry type 1, ACPI 6.5 §5.2.12.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtIoApic {
    /// Its I/O APIC ID.
    pub id: u8,
    /// Physical address of its registers.
    pub address: u32,
    /// The first GSI its inputs carry (input n is GSI `gsi_base + n`).
    pub gsi_base: u32,
}

/// An interrupt source override (entry type 2, ACPI 6.5 §5.2.12.5): ISA
/// IRQ `source` arrives at GSI `gsi` with `flags` (MPS INTI flags: bits
/// 1:0 polarity, 3:2 trigger mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtOverride {
    /// The bus (0: ISA).
    pub bus: u8,
    /// The bus-relative IRQ.
    pub source: u8,
    /// The GSI it arrives at.
    pub gsi: u32,
    /// MPS INTI flags.
    pub flags: u16,
}

/// What the MADT says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Madt {
    /// Physical address of the local APIC registers.
    pub local_apic_address: u32,
    /// Flags (bit 0: dual 8259 PICs installed).
    pub flags: u32,
    /// The CPUs, in table order.
    pub cpus: Vec<MadtCpu>,
    /// The I/O APICs, in table order.
    pub io_apics: Vec<MadtIoApic>,
    /// The interrupt source overrides, in table order.
    pub overrides: Vec<MadtOverride>,
}

impl Madt {
    /// The I/O APIC whose inputs include `gsi`, and the input number.
    pub fn io_apic_of(&self, gsi: u32, inputs: impl Fn(&MadtIoApic) -> u32) -> Option<(MadtIoApic, u32)> {
        self.io_apics.iter().find_map(|apic| {
            let input = gsi.checked_sub(apic.gsi_base)?;
            (input < inputs(apic)).then_some((*apic, input))
        })
    }
}

fn read_exact(memory: &dyn PhysicalMemory, address: u64, len: usize) -> Result<Vec<u8>, AcpiError> {
    let mut bytes = vec![0; len];
    if address.checked_add(len as u64).is_none() || !memory.read(address, &mut bytes) {
        return Err(AcpiError::Unreadable(address));
    }
    Ok(bytes)
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b)) == 0
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(offset..offset + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(offset..offset + 8)?.try_into().ok()?))
}

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(offset..offset + 2)?.try_into().ok()?))
}

/// The root table named by the RSDP: `(address, entry size)` — the XSDT
/// (8-byte entries) for revision 2+, else the RSDT (4-byte entries).
///
/// # Errors
/// A missing, unreadable or corrupt RSDP.
pub fn root_table(memory: &dyn PhysicalMemory, rsdp: u64) -> Result<(u64, usize), AcpiError> {
    if rsdp == 0 {
        return Err(AcpiError::NoRsdp);
    }
    let head = read_exact(memory, rsdp, 20)?;
    if &head[..8] != b"RSD PTR " {
        return Err(AcpiError::BadSignature(rsdp));
    }
    if !checksum_ok(&head) {
        return Err(AcpiError::BadChecksum(rsdp));
    }
    if head[15] < 2 {
        let rsdt = u32_at(&head, 16).ok_or(AcpiError::BadLength(rsdp))?;
        return Ok((u64::from(rsdt), 4));
    }
    let full = read_exact(memory, rsdp, 36)?;
    let length = u32_at(&full, 20).unwrap_or(0) as usize;
    if length < 36 {
        return Err(AcpiError::BadLength(rsdp));
    }
    if !checksum_ok(&read_exact(memory, rsdp, length.min(1024))?) {
        return Err(AcpiError::BadChecksum(rsdp));
    }
    Ok((u64_at(&full, 24).unwrap_or(0), 8))
}

/// Reads a whole table at `address` (header included), checking its
/// signature (if `signature` is given), length and checksum.
///
/// # Errors
/// Unreadable memory, a wrong signature, an impossible length or a bad checksum.
pub fn read_table(memory: &dyn PhysicalMemory, address: u64, signature: Option<&[u8; 4]>) -> Result<Vec<u8>, AcpiError> {
    let header = read_exact(memory, address, HEADER_SIZE)?;
    if signature.is_some_and(|s| header[..4] != s[..]) {
        return Err(AcpiError::BadSignature(address));
    }
    let length = u32_at(&header, 4).unwrap_or(0);
    if (length as usize) < HEADER_SIZE || length > MAX_TABLE_SIZE {
        return Err(AcpiError::BadLength(address));
    }
    let table = read_exact(memory, address, length as usize)?;
    if !checksum_ok(&table) {
        return Err(AcpiError::BadChecksum(address));
    }
    Ok(table)
}

/// Finds the table with `signature` through the RSDP and returns its bytes.
///
/// # Errors
/// Any problem with the RSDP or root table, or [`AcpiError::NotFound`].
pub fn find_table(memory: &dyn PhysicalMemory, rsdp: u64, signature: &[u8; 4]) -> Result<Vec<u8>, AcpiError> {
    let (root, entry_size) = root_table(memory, rsdp)?;
    let root_signature = if entry_size == 8 { b"XSDT" } else { b"RSDT" };
    let root = read_table(memory, root, Some(root_signature))?;
    for entry in root[HEADER_SIZE..].chunks_exact(entry_size) {
        let address = if entry_size == 8 { u64_at(entry, 0) } else { u32_at(entry, 0).map(u64::from) };
        let Some(address) = address else { continue };
        let mut candidate = [0u8; 4];
        if memory.read(address, &mut candidate) && &candidate == signature {
            return read_table(memory, address, Some(signature));
        }
    }
    Err(AcpiError::NotFound(*signature))
}

/// Parses an MADT (the bytes [`read_table`] returned).
///
/// # Errors
/// [`AcpiError::BadLength`] for a table too short for its fixed fields,
/// [`AcpiError::BadEntry`] for an entry that overruns the table.
pub fn parse_madt(table: &[u8]) -> Result<Madt, AcpiError> {
    if table.len() < MADT_ENTRIES {
        return Err(AcpiError::BadLength(0));
    }
    let mut madt = Madt {
        local_apic_address: u32_at(table, 36).unwrap_or(0),
        flags: u32_at(table, 40).unwrap_or(0),
        cpus: Vec::new(),
        io_apics: Vec::new(),
        overrides: Vec::new(),
    };
    let mut offset = MADT_ENTRIES;
    while offset < table.len() {
        let kind = table[offset];
        let length = table.get(offset + 1).copied().map_or(0, usize::from);
        let Some(entry) = table.get(offset..offset + length).filter(|_| length >= 2) else {
            return Err(AcpiError::BadEntry(offset));
        };
        match (kind, length) {
            (0, 8..) => {
                let flags = u32_at(entry, 4).unwrap_or(0);
                madt.cpus.push(MadtCpu {
                    apic_id: u32::from(entry[3]),
                    uid: u32::from(entry[2]),
                    enabled: flags & 1 != 0,
                    online_capable: flags & 2 != 0,
                });
            }
            (9, 16..) => {
                let flags = u32_at(entry, 8).unwrap_or(0);
                madt.cpus.push(MadtCpu {
                    apic_id: u32_at(entry, 4).unwrap_or(0),
                    uid: u32_at(entry, 12).unwrap_or(0),
                    enabled: flags & 1 != 0,
                    online_capable: flags & 2 != 0,
                });
            }
            (1, 12..) => madt.io_apics.push(MadtIoApic {
                id: entry[2],
                address: u32_at(entry, 4).unwrap_or(0),
                gsi_base: u32_at(entry, 8).unwrap_or(0),
            }),
            (2, 10..) => madt.overrides.push(MadtOverride {
                bus: entry[2],
                source: entry[3],
                gsi: u32_at(entry, 4).unwrap_or(0),
                flags: u16_at(entry, 8).unwrap_or(0),
            }),
            (0 | 1 | 2 | 9, _) => return Err(AcpiError::BadEntry(offset)),
            _ => {}
        }
        offset += length;
    }
    Ok(madt)
}

mod dmar;
pub use dmar::*;

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory made of byte blocks at fixed addresses.
    struct Fake(Vec<(u64, Vec<u8>)>);

    impl PhysicalMemory for Fake {
        fn read(&self, address: u64, buffer: &mut [u8]) -> bool {
            for (base, bytes) in &self.0 {
                if address >= *base {
                    let start = (address - base) as usize;
                    if let Some(src) = bytes.get(start..start + buffer.len()) {
                        buffer.copy_from_slice(src);
                        return true;
                    }
                }
            }
            false
        }
    }

    fn fix_checksum(bytes: &mut [u8], at: usize, len: usize) {
        bytes[at] = 0;
        let sum = bytes[..len].iter().fold(0u8, |s, &b| s.wrapping_add(b));
        bytes[at] = 0u8.wrapping_sub(sum);
    }

    fn table(signature: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; HEADER_SIZE];
        t[..4].copy_from_slice(signature);
        t.extend_from_slice(body);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        let n = t.len();
        fix_checksum(&mut t, 9, n);
        t
    }

    fn rsdp(xsdt: u64) -> Vec<u8> {
        let mut r = vec![0u8; 36];
        r[..8].copy_from_slice(b"RSD PTR ");
        r[15] = 2;
        r[20..24].copy_from_slice(&36u32.to_le_bytes());
        r[24..32].copy_from_slice(&xsdt.to_le_bytes());
        fix_checksum(&mut r, 8, 20);
        fix_checksum(&mut r, 32, 36);
        r
    }

    fn madt_body(entries: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes());
        for e in entries {
            body.extend_from_slice(e);
        }
        body
    }

    fn machine(madt: Vec<u8>) -> Fake {
        let mut xsdt_body = Vec::new();
        xsdt_body.extend_from_slice(&0x3000u64.to_le_bytes()); // a FACP, skipped
        xsdt_body.extend_from_slice(&0x4000u64.to_le_bytes());
        Fake(vec![
            (0x1000, rsdp(0x2000)),
            (0x2000, table(b"XSDT", &xsdt_body)),
            (0x3000, table(b"FACP", &[0; 8])),
            (0x4000, madt),
        ])
    }

    const LAPIC0: [u8; 8] = [0, 8, 0, 0, 1, 0, 0, 0];
    const LAPIC1_DISABLED: [u8; 8] = [0, 8, 1, 1, 0, 0, 0, 0];
    const IOAPIC: [u8; 12] = [1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0];

    #[test]
    fn the_madt_is_found_through_rsdp_and_xsdt() {
        let x2apic: [u8; 16] = [9, 16, 0, 0, 0x00, 0x01, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0];
        let memory = machine(table(b"APIC", &madt_body(&[&LAPIC0, &IOAPIC, &LAPIC1_DISABLED, &x2apic])));
        let madt = parse_madt(&find_table(&memory, 0x1000, b"APIC").unwrap()).unwrap();
        assert_eq!(madt.local_apic_address, 0xfee0_0000);
        let ids: Vec<(u32, bool)> = madt.cpus.iter().map(|c| (c.apic_id, c.usable())).collect();
        assert_eq!(ids, [(0, true), (1, false), (0x100, true)]);
        assert_eq!(madt.cpus[2].uid, 7);
        assert_eq!(madt.io_apics, [MadtIoApic { id: 0, address: 0xfec0_0000, gsi_base: 0 }]);
        assert_eq!(madt.io_apic_of(21, |_| 24), Some((madt.io_apics[0], 21)));
        assert_eq!(madt.io_apic_of(24, |_| 24), None);
    }

    #[test]
    fn io_apics_and_interrupt_source_overrides() {
        // QEMU q35's: IRQ 0 -> GSI 2 (flags 0), IRQ 9 -> GSI 9 level, active high (0xd).
        let second: [u8; 12] = [1, 12, 5, 0, 0, 0x10, 0xc0, 0xfe, 24, 0, 0, 0];
        let timer: [u8; 10] = [2, 10, 0, 0, 2, 0, 0, 0, 0, 0];
        let sci: [u8; 10] = [2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0];
        let madt = parse_madt(&table(b"APIC", &madt_body(&[&IOAPIC, &second, &timer, &sci]))).unwrap();
        assert_eq!(madt.io_apics[1], MadtIoApic { id: 5, address: 0xfec0_1000, gsi_base: 24 });
        assert_eq!(madt.io_apic_of(30, |_| 24), Some((madt.io_apics[1], 6)));
        assert_eq!(
            madt.overrides,
            [
                MadtOverride { bus: 0, source: 0, gsi: 2, flags: 0 },
                MadtOverride { bus: 0, source: 9, gsi: 9, flags: 0x0d }
            ]
        );
        let short_ioapic = table(b"APIC", &madt_body(&[&[1, 8, 0, 0, 0, 0, 0, 0]]));
        assert_eq!(parse_madt(&short_ioapic), Err(AcpiError::BadEntry(44)));
        let short_override = table(b"APIC", &madt_body(&[&[2, 8, 0, 0, 0, 0, 0, 0]]));
        assert_eq!(parse_madt(&short_override), Err(AcpiError::BadEntry(44)));
    }

    #[test]
    fn corrupt_tables_are_refused_not_trusted() {
        let good = table(b"APIC", &madt_body(&[&LAPIC0]));
        let mut bad_sum = good.clone();
        bad_sum[40] ^= 1;
        assert_eq!(find_table(&machine(bad_sum), 0x1000, b"APIC"), Err(AcpiError::BadChecksum(0x4000)));
        assert_eq!(find_table(&machine(good.clone()), 0x1000, b"HPET"), Err(AcpiError::NotFound(*b"HPET")));
        assert_eq!(find_table(&machine(good.clone()), 0, b"APIC"), Err(AcpiError::NoRsdp));
        assert_eq!(find_table(&machine(good.clone()), 0x1004, b"APIC"), Err(AcpiError::BadSignature(0x1004)));
        // Length beyond readable memory.
        let mut long = good;
        long[4..8].copy_from_slice(&0x8000u32.to_le_bytes());
        assert_eq!(find_table(&machine(long), 0x1000, b"APIC"), Err(AcpiError::Unreadable(0x4000)));
    }

    #[test]
    fn malformed_madt_entries_are_errors() {
        let overrun = table(b"APIC", &madt_body(&[&[0, 20, 0, 0]]));
        assert_eq!(parse_madt(&overrun), Err(AcpiError::BadEntry(44)));
        let zero = table(b"APIC", &madt_body(&[&LAPIC0, &[0, 0]]));
        assert_eq!(parse_madt(&zero), Err(AcpiError::BadEntry(52)));
        let short_lapic = table(b"APIC", &madt_body(&[&[0, 4, 0, 0]]));
        assert_eq!(parse_madt(&short_lapic), Err(AcpiError::BadEntry(44)));
        assert_eq!(parse_madt(&[0; 10]), Err(AcpiError::BadLength(0)));
    }
}
