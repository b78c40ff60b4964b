//! The GICv3 Interrupt Translation Service (ITS) and the redistributor's
//! LPI registers, as the hypervisor drives them: MSIs of PCI devices become
//! LPIs at the CPU the hypervisor chooses.
//!
//! Register layout and command formats from the GICv3/v4 architecture
//! specification (IHI 0069): §12.19 (ITS registers), §5.3 (ITS commands),
//! §12.11 (`GICR_PROPBASER`, `GICR_PENDBASER`), §5.1.1 (LPI configuration
//! table). The driver keeps every table flat (no `Indirect`), uses one
//! command queue of [`COMMAND_QUEUE_BYTES`], and waits for each batch of
//! commands with a bounded poll of `GITS_CREADR`.
//!
//! The pure parts (command words, `GITS_BASER`/`GITS_CBASER` values, the
//! redistributor's base values and the LPI configuration byte) are
//! host-tested. Omitted: GICv4 (vPEs, VLPIs), indirect tables, `MOVI`,
//! `DISCARD`, two-level device tables, non-shareable (cache-maintained)
//! tables: an ITS that refuses shareable tables is refused.

use crate::gicv3::{GicError, Gicr};
use crate::smmuv3::DmaRegion;
use tock_registers::LocalRegisterCopy;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

register_bitfields! [u32,
    /// `GITS_CTLR` (IHI 0069 §12.19.5).
    GITS_CTLR [
        /// The ITS is quiescent (no translations in flight).
        QUIESCENT OFFSET(31) NUMBITS(1) [],
        /// Translation enabled.
        ENABLED OFFSET(0) NUMBITS(1) []
    ]
];

register_bitfields! [u64,
    /// `GITS_TYPER` (IHI 0069 §12.19.10).
    GITS_TYPER [
        /// Collection IDs are limited by `CIDbits` (else 16 bits).
        CIL OFFSET(36) NUMBITS(1) [],
        /// Collection ID bits - 1 (valid when `CIL`).
        CIDBITS OFFSET(32) NUMBITS(4) [],
        /// Collections held in the ITS without memory.
        HCC OFFSET(24) NUMBITS(8) [],
        /// Target addresses: 1 = redistributor physical address, 0 = processor number.
        PTA OFFSET(19) NUMBITS(1) [],
        /// DeviceID bits - 1.
        DEVBITS OFFSET(13) NUMBITS(5) [],
        /// EventID bits - 1.
        IDBITS OFFSET(8) NUMBITS(5) [],
        /// Bytes per ITT entry - 1.
        ITT_ENTRY_SIZE OFFSET(4) NUMBITS(4) [],
        /// Physical LPIs supported.
        PHYSICAL OFFSET(0) NUMBITS(1) []
    ],
    /// `GITS_CBASER` (IHI 0069 §12.19.2).
    GITS_CBASER [
        /// The command queue is valid.
        VALID OFFSET(63) NUMBITS(1) [],
        /// Inner cacheability (0b111: write-back, read- and write-allocate).
        INNER_CACHE OFFSET(59) NUMBITS(3) [],
        /// Outer cacheability (0: same as inner).
        OUTER_CACHE OFFSET(53) NUMBITS(3) [],
        /// Bits 51:12 of the queue's physical address.
        PHYSICAL_ADDRESS OFFSET(12) NUMBITS(40) [],
        /// Shareability (0b01: inner shareable).
        SHAREABILITY OFFSET(10) NUMBITS(2) [],
        /// 4 KiB pages of queue - 1.
        SIZE OFFSET(0) NUMBITS(8) []
    ],
    /// `GITS_CWRITER` and `GITS_CREADR` (IHI 0069 §12.19.3-4).
    GITS_CQ_OFFSET [
        /// Byte offset of the next command, in 32-byte units.
        OFFSET OFFSET(5) NUMBITS(15) [],
        /// `GITS_CREADR` only: command processing stalled on an error.
        STALLED OFFSET(0) NUMBITS(1) []
    ],
    /// `GITS_BASER<n>` (IHI 0069 §12.19.1).
    GITS_BASER [
        /// The table is valid.
        VALID OFFSET(63) NUMBITS(1) [],
        /// Two-level table.
        INDIRECT OFFSET(62) NUMBITS(1) [],
        /// Inner cacheability.
        INNER_CACHE OFFSET(59) NUMBITS(3) [],
        /// What the table holds (read-only).
        TYPE OFFSET(56) NUMBITS(3) [Unimplemented = 0, Devices = 1, Vpes = 2, Collections = 4],
        /// Outer cacheability.
        OUTER_CACHE OFFSET(53) NUMBITS(3) [],
        /// Bytes per entry - 1 (read-only).
        ENTRY_SIZE OFFSET(48) NUMBITS(5) [],
        /// Bits 47:12 of the table's physical address (4 KiB and 16 KiB pages).
        PHYSICAL_ADDRESS OFFSET(12) NUMBITS(36) [],
        /// Shareability.
        SHAREABILITY OFFSET(10) NUMBITS(2) [],
        /// Page size.
        PAGE_SIZE OFFSET(8) NUMBITS(2) [Size4K = 0, Size16K = 1, Size64K = 2],
        /// Pages - 1.
        SIZE OFFSET(0) NUMBITS(8) []
    ],
    /// `GICR_PROPBASER` (IHI 0069 §12.11.33).
    GICR_PROPBASER [
        /// Outer cacheability.
        OUTER_CACHE OFFSET(56) NUMBITS(3) [],
        /// Bits 51:12 of the LPI configuration table.
        PHYSICAL_ADDRESS OFFSET(12) NUMBITS(40) [],
        /// Shareability.
        SHAREABILITY OFFSET(10) NUMBITS(2) [],
        /// Inner cacheability.
        INNER_CACHE OFFSET(7) NUMBITS(3) [],
        /// INTID bits - 1 (LPIs are 8192 .. 2^(IDbits + 1)).
        IDBITS OFFSET(0) NUMBITS(5) []
    ],
    /// `GICR_PENDBASER` (IHI 0069 §12.11.31).
    GICR_PENDBASER [
        /// The pending table is all zeros: the redistributor need not read it.
        PTZ OFFSET(62) NUMBITS(1) [],
        /// Outer cacheability.
        OUTER_CACHE OFFSET(56) NUMBITS(3) [],
        /// Bits 51:16 of the LPI pending table.
        PHYSICAL_ADDRESS OFFSET(16) NUMBITS(36) [],
        /// Shareability.
        SHAREABILITY OFFSET(10) NUMBITS(2) [],
        /// Inner cacheability.
        INNER_CACHE OFFSET(7) NUMBITS(3) []
    ]
];

register_structs! {
    /// The ITS control frame, `GITS_*` (the translation frame follows at
    /// [`TRANSLATION_FRAME_OFFSET`]).
    pub GitsRegisters {
        (0x0000 => ctlr: ReadWrite<u32, GITS_CTLR::Register>),
        (0x0004 => iidr: ReadOnly<u32>),
        (0x0008 => typer: ReadOnly<u64, GITS_TYPER::Register>),
        (0x0010 => _reserved0),
        (0x0080 => cbaser: ReadWrite<u64, GITS_CBASER::Register>),
        (0x0088 => cwriter: ReadWrite<u64, GITS_CQ_OFFSET::Register>),
        (0x0090 => creadr: ReadOnly<u64, GITS_CQ_OFFSET::Register>),
        (0x0098 => _reserved1),
        (0x0100 => baser: [ReadWrite<u64, GITS_BASER::Register>; 8]),
        (0x0140 => _reserved2),
        (0x10000 => @END),
    }
}

/// Offset of the translation frame (the MSI doorbell's 64 KiB page) from
/// the ITS base.
pub const TRANSLATION_FRAME_OFFSET: u64 = 0x1_0000;
/// Bytes of the translation frame.
pub const TRANSLATION_FRAME_SIZE: u64 = 0x1_0000;
/// Offset of `GITS_TRANSLATER` in the translation frame: a device writes
/// its EventID here (IHI 0069 §12.19.11).
pub const TRANSLATER_OFFSET: u64 = 0x40;
/// Bytes of ITS registers (control frame and translation frame).
pub const MMIO_SIZE: u64 = 0x2_0000;
/// The first LPI's INTID.
pub const LPI_BASE: u32 = 8192;
/// Bytes of one ITS command.
pub const COMMAND_BYTES: usize = 32;
/// Bytes of the command queue the driver uses (one 4 KiB page, 128 commands).
pub const COMMAND_QUEUE_BYTES: usize = 4096;
/// Alignment of an ITT (`MAPD.ITT_addr` is bits 51:8).
pub const ITT_ALIGN: u64 = 256;
/// Alignment of the LPI pending table (`GICR_PENDBASER` holds bits 51:16).
pub const PENDING_TABLE_ALIGN: u64 = 0x1_0000;
/// Polls of `GITS_CREADR` (or `GITS_CTLR.Quiescent`) before giving up.
const POLL_LIMIT: u32 = 1_000_000;
/// Words per command.
const COMMAND_WORDS: usize = COMMAND_BYTES / 8;
/// Cacheability written to every base register: write-back, read- and
/// write-allocate (`0b111`); the outer field 0 means "same as inner".
const CACHE_RAWAWB: u64 = 0b111;
/// Shareability written to every base register: inner shareable.
const SHARE_INNER: u64 = 0b01;
/// `GICR_TYPER.Processor_Number`, bits 23:8.
const GICR_TYPER_PROCESSOR_SHIFT: u32 = 8;
const GICR_TYPER_PROCESSOR_MASK: u64 = 0xffff;
/// The `RDbase` field of `MAPC` and `SYNC`, bits 50:16 of the third word.
const RDBASE_SHIFT: u32 = 16;
const RDBASE_MASK: u64 = (1 << 35) - 1;
/// Redistributor frames are 64 KiB aligned: `RDbase` with `PTA` = 1 is
/// the physical address shifted by 16.
const RD_FRAME_SHIFT: u32 = 16;
/// `MAPD.ITT_addr`: bits 51:8 of the ITT in bits 51:8 of the third word.
const ITT_ADDRESS_MASK: u64 = ((1 << 52) - 1) & !(ITT_ALIGN - 1);
/// `V` (valid) in the third word of `MAPD` and `MAPC`.
const COMMAND_VALID: u64 = 1 << 63;
/// LPI configuration byte (IHI 0069 §5.1.1): bit 1 is RES1.
const LPI_CONFIG_RES1: u8 = 1 << 1;
/// LPI configuration byte: bit 0 enables the LPI.
const LPI_CONFIG_ENABLE: u8 = 1 << 0;
/// LPI configuration byte: priority is bits 7:2.
const LPI_PRIORITY_MASK: u8 = 0xfc;

/// ITS command opcodes (IHI 0069 Table 5-8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    /// Wait until earlier commands' effects reached a redistributor.
    Sync = 0x05,
    /// DeviceID -> ITT.
    Mapd = 0x08,
    /// Collection -> redistributor.
    Mapc = 0x09,
    /// (DeviceID, EventID) -> (LPI, collection).
    Mapti = 0x0a,
    /// Re-read one LPI's configuration.
    Inv = 0x0c,
    /// Re-read every LPI's configuration of a collection.
    Invall = 0x0d,
}

/// One ITS command, four little-endian 64-bit words (IHI 0069 §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItsCommand(pub [u64; COMMAND_WORDS]);

impl ItsCommand {
    fn with_device(opcode: Opcode, device_id: u32) -> [u64; COMMAND_WORDS] {
        [opcode as u64 | (u64::from(device_id) << 32), 0, 0, 0]
    }

    /// `MAPD`: device `device_id`'s events are translated by the ITT at
    /// `itt` (256-byte aligned) holding `2^event_bits` entries.
    pub fn mapd(device_id: u32, itt: u64, event_bits: u32) -> ItsCommand {
        let mut words = Self::with_device(Opcode::Mapd, device_id);
        words[1] = u64::from(event_bits.clamp(1, 32) - 1);
        words[2] = COMMAND_VALID | (itt & ITT_ADDRESS_MASK);
        ItsCommand(words)
    }

    /// `MAPC`: collection `icid` targets the redistributor `rdbase` (a
    /// processor number or a frame address >> 16, see [`Its::rdbase`]).
    pub fn mapc(icid: u16, rdbase: u64) -> ItsCommand {
        let mut words = [Opcode::Mapc as u64, 0, 0, 0];
        words[2] = COMMAND_VALID | ((rdbase & RDBASE_MASK) << RDBASE_SHIFT) | u64::from(icid);
        ItsCommand(words)
    }

    /// `MAPTI`: event `event_id` of device `device_id` becomes LPI `intid`
    /// in collection `icid`.
    pub fn mapti(device_id: u32, event_id: u32, intid: u32, icid: u16) -> ItsCommand {
        let mut words = Self::with_device(Opcode::Mapti, device_id);
        words[1] = u64::from(event_id) | (u64::from(intid) << 32);
        words[2] = u64::from(icid);
        ItsCommand(words)
    }

    /// `INV`: the LPI of event `event_id` of device `device_id` re-reads
    /// its configuration byte.
    pub fn inv(device_id: u32, event_id: u32) -> ItsCommand {
        let mut words = Self::with_device(Opcode::Inv, device_id);
        words[1] = u64::from(event_id);
        ItsCommand(words)
    }

    /// `INVALL`: every LPI of collection `icid` re-reads its configuration.
    pub fn invall(icid: u16) -> ItsCommand {
        ItsCommand([Opcode::Invall as u64, 0, u64::from(icid), 0])
    }

    /// `SYNC`: earlier commands' effects on redistributor `rdbase` are visible.
    pub fn sync(rdbase: u64) -> ItsCommand {
        ItsCommand([Opcode::Sync as u64, 0, (rdbase & RDBASE_MASK) << RDBASE_SHIFT, 0])
    }

    /// The opcode byte.
    pub fn opcode(&self) -> u8 {
        (self.0[0] & 0xff) as u8
    }
}

/// What one `GITS_BASER<n>` describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// The device table (DeviceID -> ITT).
    Devices,
    /// The collection table (ICID -> redistributor).
    Collections,
    /// Something the driver does not use (vPE tables, reserved types).
    Other(u8),
}

/// One implemented `GITS_BASER<n>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSlot {
    /// `n`.
    pub index: usize,
    /// What it holds.
    pub kind: TableKind,
    /// Bytes per entry.
    pub entry_size: u64,
}

/// The ITS's features, from `GITS_TYPER` and the `GITS_BASER<n>` types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItsFeatures {
    /// Raw `GITS_TYPER`, for the log.
    pub typer: u64,
    /// Physical LPIs supported.
    pub physical: bool,
    /// Bytes per ITT entry.
    pub itt_entry_size: u64,
    /// EventID bits.
    pub event_bits: u32,
    /// DeviceID bits.
    pub device_bits: u32,
    /// `RDbase` is a physical address (else a processor number).
    pub pta: bool,
    /// Collections the ITS holds itself (no memory needed for them).
    pub hardware_collections: u32,
}

impl ItsFeatures {
    /// Decodes `GITS_TYPER`.
    pub fn decode(typer: u64) -> ItsFeatures {
        let t = LocalRegisterCopy::<u64, GITS_TYPER::Register>::new(typer);
        ItsFeatures {
            typer,
            physical: t.is_set(GITS_TYPER::PHYSICAL),
            itt_entry_size: t.read(GITS_TYPER::ITT_ENTRY_SIZE) + 1,
            event_bits: t.read(GITS_TYPER::IDBITS) as u32 + 1,
            device_bits: t.read(GITS_TYPER::DEVBITS) as u32 + 1,
            pta: t.is_set(GITS_TYPER::PTA),
            hardware_collections: t.read(GITS_TYPER::HCC) as u32,
        }
    }

    /// Bytes of an ITT for `2^event_bits` events, rounded up to [`ITT_ALIGN`].
    pub fn itt_bytes(&self, event_bits: u32) -> u64 {
        (self.itt_entry_size << event_bits).next_multiple_of(ITT_ALIGN)
    }
}

/// Table and page size the driver uses for ITS tables: 4 KiB pages.
pub const TABLE_PAGE_SIZE: u64 = 4096;
/// Most pages a flat table can have (`GITS_BASER.Size` is 8 bits).
pub const MAX_TABLE_PAGES: u64 = 256;

/// The `GITS_BASER` value of a flat, valid table of `pages` 4 KiB pages at
/// `address`, inner-shareable write-back.
pub fn baser_value(address: u64, pages: u64) -> u64 {
    (GITS_BASER::VALID::SET
        + GITS_BASER::INNER_CACHE.val(CACHE_RAWAWB)
        + GITS_BASER::PHYSICAL_ADDRESS.val(address >> 12)
        + GITS_BASER::SHAREABILITY.val(SHARE_INNER)
        + GITS_BASER::PAGE_SIZE::Size4K
        + GITS_BASER::SIZE.val(pages.clamp(1, MAX_TABLE_PAGES) - 1))
    .value
}

/// The `GITS_CBASER` value of a valid command queue of `bytes` (a multiple
/// of 4 KiB) at `address`, inner-shareable write-back.
pub fn cbaser_value(address: u64, bytes: u64) -> u64 {
    (GITS_CBASER::VALID::SET
        + GITS_CBASER::INNER_CACHE.val(CACHE_RAWAWB)
        + GITS_CBASER::PHYSICAL_ADDRESS.val(address >> 12)
        + GITS_CBASER::SHAREABILITY.val(SHARE_INNER)
        + GITS_CBASER::SIZE.val((bytes / 4096).clamp(1, 256) - 1))
    .value
}

/// `GICR_PROPBASER` for the LPI configuration table at `address` covering
/// INTIDs below `2^intid_bits`.
pub fn propbaser_value(address: u64, intid_bits: u32) -> u64 {
    (GICR_PROPBASER::PHYSICAL_ADDRESS.val(address >> 12)
        + GICR_PROPBASER::SHAREABILITY.val(SHARE_INNER)
        + GICR_PROPBASER::INNER_CACHE.val(CACHE_RAWAWB)
        + GICR_PROPBASER::IDBITS.val(u64::from(intid_bits.saturating_sub(1))))
    .value
}

/// `GICR_PENDBASER` for the (zeroed) pending table at `address` (64 KiB aligned).
pub fn pendbaser_value(address: u64) -> u64 {
    (GICR_PENDBASER::PTZ::SET
        + GICR_PENDBASER::PHYSICAL_ADDRESS.val(address >> 16)
        + GICR_PENDBASER::SHAREABILITY.val(SHARE_INNER)
        + GICR_PENDBASER::INNER_CACHE.val(CACHE_RAWAWB))
    .value
}

/// Bytes of the LPI configuration table for INTIDs below `2^intid_bits`
/// (one byte per LPI, from [`LPI_BASE`]).
pub const fn lpi_config_table_bytes(intid_bits: u32) -> u64 {
    (1u64 << intid_bits).saturating_sub(LPI_BASE as u64)
}

/// Bytes of the LPI pending table for INTIDs below `2^intid_bits` (one bit
/// per INTID, the first 1 KiB covering the non-LPIs).
pub const fn lpi_pending_table_bytes(intid_bits: u32) -> u64 {
    (1u64 << intid_bits) / 8
}

/// One LPI configuration byte: `priority` (bits 7:2 kept) and enable.
pub const fn lpi_config_byte(priority: u8, enabled: bool) -> u8 {
    (priority & LPI_PRIORITY_MASK) | LPI_CONFIG_RES1 | if enabled { LPI_CONFIG_ENABLE } else { 0 }
}

/// The LPI configuration table (IHI 0069 §5.1.1): one byte per LPI from
/// [`LPI_BASE`], shared by every redistributor. Only the CPU writes it;
/// a change reaches a redistributor after `INV`/`INVALL` and `SYNC`
/// (which [`Its::submit`] orders after the store).
pub struct LpiConfigTable {
    region: DmaRegion,
    intid_bits: u32,
}

impl LpiConfigTable {
    /// The table in `region` (4 KiB aligned, zeroed: every LPI disabled)
    /// for INTIDs below `2^intid_bits`.
    ///
    /// # Errors
    /// [`ItsError::Table`] if the region is smaller than
    /// [`lpi_config_table_bytes`] or `intid_bits` gives no LPIs.
    pub fn new(region: DmaRegion, intid_bits: u32) -> Result<LpiConfigTable, ItsError> {
        let bytes = lpi_config_table_bytes(intid_bits);
        if !(14..=32).contains(&intid_bits) || (region.size() as u64) < bytes {
            return Err(ItsError::Table("LPI configuration"));
        }
        Ok(LpiConfigTable { region, intid_bits })
    }

    /// The `GICR_PROPBASER` value naming this table.
    pub fn propbaser(&self) -> u64 {
        propbaser_value(self.region.address(), self.intid_bits)
    }

    /// Sets LPI `intid`'s priority and enable.
    ///
    /// # Errors
    /// [`ItsError::OutOfRange`] for an INTID that is no LPI of this table.
    pub fn configure(&mut self, intid: u32, priority: u8, enabled: bool) -> Result<(), ItsError> {
        if intid < LPI_BASE || u64::from(intid) >= 1u64 << self.intid_bits {
            return Err(ItsError::OutOfRange("LPI", intid));
        }
        let index = (intid - LPI_BASE) as usize;
        let (word, shift) = (index / 8, (index % 8) * 8);
        let value = self.region.read(word) & !(0xff << shift);
        self.region.write(word, value | (u64::from(lpi_config_byte(priority, enabled)) << shift));
        Ok(())
    }
}

/// An ITS operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItsError {
    /// `GITS_TYPER.Physical` is clear: no physical LPIs.
    NoPhysicalLpis,
    /// The ITS did not become quiescent after being disabled.
    NotQuiescent,
    /// The ITS needs a table of this kind that is missing or larger than
    /// a flat table can be.
    Table(&'static str),
    /// The ITS did not accept inner-shareable memory for this table
    /// (its `GITS_BASER`/`GITS_CBASER` read back non-shareable); the driver
    /// does no cache maintenance.
    NotShareable(&'static str),
    /// The command queue did not advance past the command at this byte
    /// offset within the time limit.
    CommandTimeout(u64),
    /// Command processing stalled (`GITS_CREADR.Stalled`) at this offset.
    CommandStalled(u64),
    /// A DeviceID or EventID beyond what the ITS or the ITT holds.
    OutOfRange(&'static str, u32),
    /// The redistributor itself failed.
    Gic(GicError),
}

impl core::fmt::Display for ItsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ItsError::NoPhysicalLpis => write!(f, "the ITS has no physical LPIs"),
            ItsError::NotQuiescent => write!(f, "the ITS did not become quiescent"),
            ItsError::Table(what) => write!(f, "the ITS's {what} table cannot be given flat"),
            ItsError::NotShareable(what) => write!(f, "the ITS refused shareable memory for its {what}"),
            ItsError::CommandTimeout(at) => write!(f, "the ITS command at offset {at:#x} did not complete in time"),
            ItsError::CommandStalled(at) => write!(f, "the ITS stalled on the command at offset {at:#x}"),
            ItsError::OutOfRange(what, value) => write!(f, "{what} {value:#x} is out of range"),
            ItsError::Gic(e) => write!(f, "GIC: {e:?}"),
        }
    }
}

/// The ITS registers, before initialization.
pub struct ItsRegisters {
    registers: &'static GitsRegisters,
    base: u64,
}

// SAFETY: MMIO registers; the hypervisor serializes all use of the ITS.
unsafe impl Send for ItsRegisters {}

impl ItsRegisters {
    /// The ITS at `base`.
    ///
    /// # Safety
    /// `base` must map an ITS's control and translation frames
    /// ([`MMIO_SIZE`] bytes) as Device memory for the rest of the program,
    /// driven by nothing else.
    pub unsafe fn new(base: usize) -> ItsRegisters {
        // SAFETY: the caller vouches for the mapping.
        ItsRegisters { registers: unsafe { &*(base as *const GitsRegisters) }, base: base as u64 }
    }

    /// Its features.
    pub fn features(&self) -> ItsFeatures {
        ItsFeatures::decode(self.registers.typer.get())
    }

    /// The implemented `GITS_BASER<n>`s.
    pub fn tables(&self) -> impl Iterator<Item = TableSlot> + '_ {
        self.registers.baser.iter().enumerate().filter_map(|(index, baser)| {
            let value = baser.extract();
            let kind = match value.read_as_enum(GITS_BASER::TYPE) {
                Some(GITS_BASER::TYPE::Value::Unimplemented) => return None,
                Some(GITS_BASER::TYPE::Value::Devices) => TableKind::Devices,
                Some(GITS_BASER::TYPE::Value::Collections) => TableKind::Collections,
                _ => TableKind::Other(value.read(GITS_BASER::TYPE) as u8),
            };
            Some(TableSlot { index, kind, entry_size: value.read(GITS_BASER::ENTRY_SIZE) + 1 })
        })
    }

    /// The physical address of `GITS_TRANSLATER`, where devices write MSIs.
    pub fn translater(&self) -> u64 {
        self.base + TRANSLATION_FRAME_OFFSET + TRANSLATER_OFFSET
    }
}

/// Memory handed to the ITS: the command queue and one flat table per
/// `GITS_BASER<n>` of kind Devices or Collections (index, region).
pub struct ItsMemory {
    /// [`COMMAND_QUEUE_BYTES`], 4 KiB aligned.
    pub command_queue: DmaRegion,
    /// `(n, table)` for each `GITS_BASER<n>` to make valid; 4 KiB aligned,
    /// a multiple of 4 KiB, at most [`MAX_TABLE_PAGES`] pages.
    pub tables: alloc::vec::Vec<(usize, DmaRegion)>,
}

/// A running ITS.
pub struct Its {
    registers: ItsRegisters,
    features: ItsFeatures,
    memory: ItsMemory,
    /// Byte offset of the next command slot.
    write_offset: u64,
}

impl Its {
    /// Disables the ITS, waits for quiescence, gives it its tables and
    /// command queue, and enables it.
    ///
    /// # Errors
    /// [`ItsError`]: no physical LPIs, no quiescence, a table or queue the
    /// ITS did not take as shareable.
    pub fn init(registers: ItsRegisters, memory: ItsMemory) -> Result<Its, ItsError> {
        let features = registers.features();
        if !features.physical {
            return Err(ItsError::NoPhysicalLpis);
        }
        let gits = registers.registers;
        gits.ctlr.modify(GITS_CTLR::ENABLED::CLEAR);
        poll(|| gits.ctlr.is_set(GITS_CTLR::QUIESCENT)).map_err(|()| ItsError::NotQuiescent)?;
        for (index, table) in &memory.tables {
            let Some(baser) = gits.baser.get(*index) else { return Err(ItsError::Table("unknown")) };
            let pages = table.size() as u64 / TABLE_PAGE_SIZE;
            if pages == 0 || pages > MAX_TABLE_PAGES {
                return Err(ItsError::Table("oversized"));
            }
            baser.set(baser_value(table.address(), pages));
            if baser.read(GITS_BASER::SHAREABILITY) != SHARE_INNER {
                return Err(ItsError::NotShareable("tables"));
            }
            if baser.read_as_enum(GITS_BASER::PAGE_SIZE) != Some(GITS_BASER::PAGE_SIZE::Value::Size4K) {
                return Err(ItsError::Table("4 KiB-page"));
            }
        }
        gits.cbaser.set(cbaser_value(memory.command_queue.address(), memory.command_queue.size() as u64));
        if gits.cbaser.read(GITS_CBASER::SHAREABILITY) != SHARE_INNER {
            return Err(ItsError::NotShareable("command queue"));
        }
        // Writing CBASER resets CREADR to 0; CWRITER follows it.
        gits.cwriter.set(0);
        gits.ctlr.modify(GITS_CTLR::ENABLED::SET);
        Ok(Its { registers, features, memory, write_offset: 0 })
    }

    /// Its features.
    pub fn features(&self) -> &ItsFeatures {
        &self.features
    }

    /// The physical address of `GITS_TRANSLATER`.
    pub fn translater(&self) -> u64 {
        self.registers.translater()
    }

    /// The `RDbase` that names `redistributor` in `MAPC` and `SYNC`: its
    /// frame address >> 16 with `GITS_TYPER.PTA`, else its processor number.
    pub fn rdbase(&self, redistributor: &Gicr) -> u64 {
        if self.features.pta {
            redistributor.rd_base_address() >> RD_FRAME_SHIFT
        } else {
            (redistributor.typer() >> GICR_TYPER_PROCESSOR_SHIFT) & GICR_TYPER_PROCESSOR_MASK
        }
    }

    /// Queues `commands` and waits until the ITS has read past all of them.
    ///
    /// # Errors
    /// [`ItsError::CommandStalled`] or [`ItsError::CommandTimeout`].
    pub fn submit(&mut self, commands: &[ItsCommand]) -> Result<(), ItsError> {
        let gits = self.registers.registers;
        let queue_bytes = self.memory.command_queue.size() as u64;
        for command in commands {
            let next = (self.write_offset + COMMAND_BYTES as u64) % queue_bytes;
            // Full when the slot after ours is the one the ITS reads next.
            poll(|| gits.creadr.read(GITS_CQ_OFFSET::OFFSET) << 5 != next)
                .map_err(|()| ItsError::CommandTimeout(self.write_offset))?;
            let first = self.write_offset as usize / 8;
            for (i, &word) in command.0.iter().enumerate() {
                self.memory.command_queue.write(first + i, word);
            }
            self.write_offset = next;
        }
        publish();
        gits.cwriter.write(GITS_CQ_OFFSET::OFFSET.val(self.write_offset >> 5));
        let target = self.write_offset;
        let mut stalled = None;
        poll(|| {
            let creadr = gits.creadr.extract();
            if creadr.is_set(GITS_CQ_OFFSET::STALLED) {
                stalled = Some(creadr.read(GITS_CQ_OFFSET::OFFSET) << 5);
                return true;
            }
            creadr.read(GITS_CQ_OFFSET::OFFSET) << 5 == target
        })
        .map_err(|()| ItsError::CommandTimeout(target))?;
        match stalled {
            Some(at) => Err(ItsError::CommandStalled(at)),
            None => Ok(()),
        }
    }
}

/// Polls `done` up to [`POLL_LIMIT`] times.
fn poll(mut done: impl FnMut() -> bool) -> Result<(), ()> {
    for _ in 0..POLL_LIMIT {
        if done() {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    if done() { Ok(()) } else { Err(()) }
}

/// Orders stores to tables and the command queue before the register write
/// that hands them over (`DSB ST`).
fn publish() {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    // SAFETY: a barrier only orders memory accesses.
    unsafe {
        core::arch::asm!("dsb st", options(nostack, preserves_flags));
    }
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_offsets_match_the_specification() {
        assert_eq!(core::mem::offset_of!(GitsRegisters, cbaser), 0x80);
        assert_eq!(core::mem::offset_of!(GitsRegisters, cwriter), 0x88);
        assert_eq!(core::mem::offset_of!(GitsRegisters, creadr), 0x90);
        assert_eq!(core::mem::offset_of!(GitsRegisters, baser), 0x100);
        assert_eq!(core::mem::size_of::<GitsRegisters>(), 0x10000);
    }

    #[test]
    fn mapd_names_the_device_the_itt_and_its_size() {
        let c = ItsCommand::mapd(0x0008, 0x4123_4500, 8);
        assert_eq!(c.0[0], 0x08 | (0x8 << 32));
        assert_eq!(c.0[1], 7, "Size = EventID bits - 1");
        assert_eq!(c.0[2], (1 << 63) | 0x4123_4500, "V and ITT_addr bits 51:8");
        assert_eq!(c.0[3], 0);
        // Low bits of a misaligned ITT address never leak into the command.
        assert_eq!(ItsCommand::mapd(0, 0x1ff, 1).0[2], (1 << 63) | 0x100);
    }

    #[test]
    fn mapc_puts_the_rdbase_at_bit_16_and_the_icid_low() {
        let c = ItsCommand::mapc(3, 1);
        assert_eq!(c.0[0], 0x09);
        assert_eq!(c.0[2], (1 << 63) | (1 << 16) | 3);
        // A physical RDbase (PTA = 1): frame 0x080a_0000 >> 16.
        assert_eq!(ItsCommand::mapc(0, 0x080a_0000 >> 16).0[2], (1 << 63) | 0x080a_0000);
    }

    #[test]
    fn mapti_inv_invall_and_sync_layouts() {
        let m = ItsCommand::mapti(0x10, 5, 8192, 2);
        assert_eq!(m.0, [0x0a | (0x10 << 32), 5 | (8192 << 32), 2, 0]);
        assert_eq!(m.opcode(), 0x0a);
        assert_eq!(ItsCommand::inv(0x10, 5).0, [0x0c | (0x10 << 32), 5, 0, 0]);
        assert_eq!(ItsCommand::invall(7).0, [0x0d, 0, 7, 0]);
        assert_eq!(ItsCommand::sync(1).0, [0x05, 0, 1 << 16, 0]);
    }

    #[test]
    fn features_decode_qemu_typer() {
        // QEMU's ITS: Physical, ITT entries of 12 bytes, 16 EventID and
        // DeviceID bits, PTA = 0, CIL = 0, HCC = 0.
        let typer = 1 | (11 << 4) | (15 << 8) | (15 << 13);
        let f = ItsFeatures::decode(typer);
        assert!(f.physical);
        assert_eq!(f.itt_entry_size, 12);
        assert_eq!(f.event_bits, 16);
        assert_eq!(f.device_bits, 16);
        assert!(!f.pta);
        assert_eq!(f.hardware_collections, 0);
        assert_eq!(f.itt_bytes(8), 3072);
        assert_eq!(f.itt_bytes(1), 256, "rounded up to the ITT alignment");
    }

    #[test]
    fn base_register_values() {
        let b = baser_value(0x4020_0000, 2);
        assert_eq!(b >> 63, 1, "Valid");
        assert_eq!((b >> 62) & 1, 0, "flat");
        assert_eq!((b >> 59) & 0b111, 0b111, "inner write-back");
        assert_eq!(b & 0x0000_ffff_ffff_f000, 0x4020_0000);
        assert_eq!((b >> 10) & 0b11, 0b01, "inner shareable");
        assert_eq!((b >> 8) & 0b11, 0, "4 KiB pages");
        assert_eq!(b & 0xff, 1, "two pages");
        assert_eq!(baser_value(0, 1000) & 0xff, 0xff, "clamped to 256 pages");

        let c = cbaser_value(0x4030_0000, 4096);
        assert_eq!(c, (1 << 63) | (0b111 << 59) | 0x4030_0000 | (0b01 << 10));

        let p = propbaser_value(0x4040_0000, 14);
        assert_eq!(p, 0x4040_0000 | (0b01 << 10) | (0b111 << 7) | 13);
        let q = pendbaser_value(0x4050_0000);
        assert_eq!(q, (1 << 62) | 0x4050_0000 | (0b01 << 10) | (0b111 << 7));
    }

    #[test]
    fn the_configuration_table_sets_one_byte_per_lpi() {
        extern crate std;
        let mut backing = std::vec![0u64; 8192 / 8];
        // SAFETY: host memory owned by the test for the table's lifetime.
        let region = unsafe { DmaRegion::new(backing.as_mut_ptr() as u64, 8192) };
        assert!(LpiConfigTable::new(unsafe_region_copy(&region), 13).is_err(), "13 INTID bits hold no LPIs");
        let mut table = LpiConfigTable::new(region, 14).unwrap();
        table.configure(8192, 0xa0, true).unwrap();
        table.configure(8194, 0x80, false).unwrap();
        table.configure(8192 + 9, 0x10, true).unwrap();
        assert_eq!(table.configure(8191, 0, true), Err(ItsError::OutOfRange("LPI", 8191)));
        assert_eq!(table.configure(16384, 0, true), Err(ItsError::OutOfRange("LPI", 16384)));
        assert_eq!(table.propbaser() & 0x1f, 13);
        assert_eq!(backing[0], 0xa3 | (0x82 << 16));
        assert_eq!(backing[1], 0x13 << 8, "priority 0x10, RES1, enabled");
    }

    /// A second handle on the same memory (the refused constructor never uses it).
    fn unsafe_region_copy(region: &DmaRegion) -> DmaRegion {
        // SAFETY: test only; the copy is dropped unused.
        unsafe { DmaRegion::new(region.address(), region.size()) }
    }

    #[test]
    fn lpi_tables_and_configuration_byte() {
        assert_eq!(lpi_config_table_bytes(14), 8192);
        assert_eq!(lpi_pending_table_bytes(14), 2048);
        assert_eq!(lpi_config_byte(0xa0, true), 0xa3);
        assert_eq!(lpi_config_byte(0xa3, false), 0xa2, "priority bits 1:0 dropped");
    }
}
