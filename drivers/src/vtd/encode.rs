//! Pure VT-d encodings: capability decoding, root and context entries,
//! invalidation descriptors, the GCMD one-bit rule. No hardware access, so
//! every function here is a host unit test away from being checked.
//!
//! References: Intel VT-d specification rev. 4.1 — §9.1 root entry, §9.3
//! context entry (legacy mode), §6.5.2 invalidation descriptors, §11.4.2-3
//! CAP/ECAP, §11.4.4 GCMD.

use core::fmt;

/// What a remapping unit can do, decoded from CAP_REG and ECAP_REG
/// (§11.4.2, §11.4.3). Only the fields Bulkhead uses or reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The raw CAP_REG.
    pub cap: u64,
    /// The raw ECAP_REG.
    pub ecap: u64,
}

/// CAP_REG fields (§11.4.2): (lowest bit, width).
mod cap {
    pub const ND: (u32, u32) = (0, 3);
    pub const RWBF: (u32, u32) = (4, 1);
    pub const CM: (u32, u32) = (7, 1);
    pub const SAGAW: (u32, u32) = (8, 5);
    pub const MGAW: (u32, u32) = (16, 6);
    pub const FRO: (u32, u32) = (24, 10);
    pub const SLLPS: (u32, u32) = (34, 4);
    pub const PSI: (u32, u32) = (39, 1);
    pub const MAMV: (u32, u32) = (48, 6);
    pub const NFR: (u32, u32) = (40, 8);
    pub const DWD: (u32, u32) = (54, 1);
    pub const DRD: (u32, u32) = (55, 1);
}

/// ECAP_REG fields (§11.4.3): (lowest bit, width).
mod ecap {
    pub const C: (u32, u32) = (0, 1);
    pub const QI: (u32, u32) = (1, 1);
    pub const DT: (u32, u32) = (2, 1);
    pub const IR: (u32, u32) = (3, 1);
    pub const PT: (u32, u32) = (6, 1);
    pub const SC: (u32, u32) = (7, 1);
    pub const IRO: (u32, u32) = (8, 10);
    pub const SMTS: (u32, u32) = (43, 1);
}

const fn field(value: u64, (shift, width): (u32, u32)) -> u64 {
    (value >> shift) & ((1 << width) - 1)
}

/// Register offsets in CAP.FRO and ECAP.IRO count 16-byte units.
const OFFSET_UNIT: u64 = 16;
/// CAP.SAGAW bit for 39-bit (3-level) and 48-bit (4-level) tables.
const SAGAW_3_LEVEL: u64 = 1 << 1;
const SAGAW_4_LEVEL: u64 = 1 << 2;

impl Capabilities {
    /// Decodes the two registers.
    pub const fn new(cap: u64, ecap: u64) -> Capabilities {
        Capabilities { cap, ecap }
    }

    /// Domain-ID bits (CAP.ND: 4 + 2 × ND bits, §11.4.2).
    pub const fn domain_id_bits(&self) -> u32 {
        4 + 2 * field(self.cap, cap::ND) as u32
    }

    /// Number of domain IDs the unit supports.
    pub const fn domain_count(&self) -> u32 {
        1 << self.domain_id_bits()
    }

    /// The lowest domain ID software may use: with caching mode (CAP.CM),
    /// domain 0 is reserved for the hardware's caching of not-present
    /// entries (§6.1), so Bulkhead always starts at 1.
    pub const fn first_domain_id(&self) -> u16 {
        1
    }

    /// Caching mode (CAP.CM): the unit caches not-present entries, so even
    /// making an entry present needs an invalidation.
    pub const fn caching_mode(&self) -> bool {
        field(self.cap, cap::CM) != 0
    }

    /// Required write-buffer flushing (CAP.RWBF).
    pub const fn write_buffer_flush(&self) -> bool {
        field(self.cap, cap::RWBF) != 0
    }

    /// Supported adjusted guest address widths (CAP.SAGAW bit field:
    /// bit 1 39-bit/3-level, bit 2 48-bit/4-level, bit 3 57-bit/5-level).
    pub const fn sagaw(&self) -> u8 {
        field(self.cap, cap::SAGAW) as u8
    }

    /// Whether 4-level (48-bit) second-level tables are supported.
    pub const fn supports_4_level(&self) -> bool {
        self.sagaw() as u64 & SAGAW_4_LEVEL != 0
    }

    /// Whether 3-level (39-bit) second-level tables are supported.
    pub const fn supports_3_level(&self) -> bool {
        self.sagaw() as u64 & SAGAW_3_LEVEL != 0
    }

    /// Maximum guest (DMA input) address width in bits (CAP.MGAW + 1).
    pub const fn mgaw(&self) -> u32 {
        field(self.cap, cap::MGAW) as u32 + 1
    }

    /// Offset of the first fault recording register (CAP.FRO × 16).
    pub const fn fault_recording_offset(&self) -> u64 {
        field(self.cap, cap::FRO) * OFFSET_UNIT
    }

    /// Number of fault recording registers (CAP.NFR + 1).
    pub const fn fault_record_count(&self) -> u32 {
        field(self.cap, cap::NFR) as u32 + 1
    }

    /// Whether 2 MiB second-level leaves are supported (CAP.SLLPS bit 0).
    pub const fn large_pages_2mib(&self) -> bool {
        field(self.cap, cap::SLLPS) & 1 != 0
    }

    /// Whether 1 GiB second-level leaves are supported (CAP.SLLPS bit 1).
    pub const fn large_pages_1gib(&self) -> bool {
        field(self.cap, cap::SLLPS) & 2 != 0
    }

    /// Page-selective invalidation (CAP.PSI).
    pub const fn page_selective_invalidation(&self) -> bool {
        field(self.cap, cap::PSI) != 0
    }

    /// The largest address mask (CAP.MAMV) a page-selective IOTLB
    /// invalidation may use: it covers `2^MAMV` 4 KiB pages at once.
    pub const fn max_address_mask(&self) -> u8 {
        field(self.cap, cap::MAMV) as u8
    }

    /// Write and read draining (CAP.DWD, CAP.DRD).
    pub const fn draining(&self) -> (bool, bool) {
        (field(self.cap, cap::DWD) != 0, field(self.cap, cap::DRD) != 0)
    }

    /// Page-walk coherency (ECAP.C): the unit snoops the CPU caches when it
    /// reads its tables. Without it, software flushes each table write out
    /// of the CPU caches (clflush) before the unit may see it (§6.6).
    pub const fn coherent(&self) -> bool {
        field(self.ecap, ecap::C) != 0
    }

    /// Queued invalidation (ECAP.QI).
    pub const fn queued_invalidation(&self) -> bool {
        field(self.ecap, ecap::QI) != 0
    }

    /// Device-TLB support (ECAP.DT).
    pub const fn device_tlb(&self) -> bool {
        field(self.ecap, ecap::DT) != 0
    }

    /// Interrupt remapping (ECAP.IR).
    pub const fn interrupt_remapping(&self) -> bool {
        field(self.ecap, ecap::IR) != 0
    }

    /// Pass-through translation type (ECAP.PT). Bulkhead never uses it.
    pub const fn pass_through(&self) -> bool {
        field(self.ecap, ecap::PT) != 0
    }

    /// Snoop control (ECAP.SC): second-level leaves may set SNP.
    pub const fn snoop_control(&self) -> bool {
        field(self.ecap, ecap::SC) != 0
    }

    /// Scalable-mode translation (ECAP.SMTS). Bulkhead uses legacy mode.
    pub const fn scalable_mode(&self) -> bool {
        field(self.ecap, ecap::SMTS) != 0
    }

    /// Offset of the IOTLB registers (ECAP.IRO × 16): IVA_REG, then
    /// IOTLB_REG 8 bytes later.
    pub const fn iotlb_offset(&self) -> u64 {
        field(self.ecap, ecap::IRO) * OFFSET_UNIT
    }

    /// The second-level table depth Bulkhead uses on this unit: four levels
    /// (48-bit), the depth of the x86 crate's `SecondLevelTable` tree, or
    /// `None` if the unit cannot walk four levels.
    pub const fn table_width(&self) -> Option<AddressWidth> {
        if self.supports_4_level() { Some(AddressWidth::Bits48) } else { None }
    }
}

impl fmt::Display for Capabilities {
    /// One line: what a boot log needs to know about the unit.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "SAGAW {:#x} (3-level {}, 4-level {}), MGAW {}, {} domains ({}-bit), large pages 2M {} 1G {}, \
             QI {}, SC {}, coherent {}, caching mode {}, {} fault record(s) at {:#x}, IOTLB at {:#x}, \
             pass-through {}, scalable {}, IR {}",
            self.sagaw(),
            yes(self.supports_3_level()),
            yes(self.supports_4_level()),
            self.mgaw(),
            self.domain_count(),
            self.domain_id_bits(),
            yes(self.large_pages_2mib()),
            yes(self.large_pages_1gib()),
            yes(self.queued_invalidation()),
            yes(self.snoop_control()),
            yes(self.coherent()),
            yes(self.caching_mode()),
            self.fault_record_count(),
            self.fault_recording_offset(),
            self.iotlb_offset(),
            yes(self.pass_through()),
            yes(self.scalable_mode()),
            yes(self.interrupt_remapping()),
        )
    }
}

/// The address width a context entry gives (its AW field, §9.3), with the
/// matching table depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum AddressWidth {
    /// AW = 1: 39-bit AGAW, 3-level table.
    Bits39 = 1,
    /// AW = 2: 48-bit AGAW, 4-level table.
    Bits48 = 2,
}

/// A 128-bit table entry or descriptor as two little-endian quadwords
/// (`[low, high]`: bits 63:0, then 127:64), the order they lie in memory.
pub type Quad = [u64; 2];

/// Bit 0 of a root or context entry: present.
const PRESENT: u64 = 1 << 0;
/// Bits 63:12 of a root entry's low half (context-table pointer) or a
/// context entry's low half (second-level table pointer).
const POINTER_MASK: u64 = !0xfff;

/// A root entry (§9.1): present, pointing at the context table of one bus.
///
/// # Panics
/// If `context_table_pa` is not 4 KiB aligned (an internal invariant: the
/// caller's frames are).
pub const fn root_entry(context_table_pa: u64) -> Quad {
    assert!(context_table_pa & !POINTER_MASK == 0);
    [context_table_pa | PRESENT, 0]
}

/// A legacy-mode context entry (§9.3) that translates every DMA request of
/// one device through the second-level table at `table_pa` with `width`, in
/// domain `domain`:
///
/// | bits | field | value |
/// |---|---|---|
/// | 0 | P | 1 |
/// | 1 | FPD (fault processing disable) | 0: faults are recorded |
/// | 3:2 | TT (translation type) | 00: untranslated requests through the second level only; no device-TLB, never pass-through (10) |
/// | 63:12 | SLPTPTR | `table_pa` |
/// | 66:64 | AW | `width` |
/// | 87:72 | DID | `domain` |
///
/// Blocking a device is the all-zero (not present) entry.
///
/// # Panics
/// If `table_pa` is not 4 KiB aligned.
pub const fn context_entry(table_pa: u64, width: AddressWidth, domain: u16) -> Quad {
    assert!(table_pa & !POINTER_MASK == 0);
    const DID_SHIFT: u32 = 8;
    [table_pa | PRESENT, width as u64 | (domain as u64) << DID_SHIFT]
}

/// A global command (GCMD_REG / GSTS_REG bit, §11.4.4-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum GlobalCommand {
    /// TE / TES: translation enable.
    TranslationEnable = 1 << 31,
    /// SRTP / RTPS: set root table pointer (one-shot).
    SetRootTablePointer = 1 << 30,
    /// SFL / FLS: set fault log (one-shot).
    SetFaultLog = 1 << 29,
    /// EAFL / AFLS: advanced fault logging.
    AdvancedFaultLogging = 1 << 28,
    /// WBF / WBFS: write buffer flush (one-shot).
    WriteBufferFlush = 1 << 27,
    /// QIE / QIES: queued invalidation enable.
    QueuedInvalidationEnable = 1 << 26,
    /// IRE / IRES: interrupt remapping enable.
    InterruptRemappingEnable = 1 << 25,
    /// SIRTP / IRTPS: set interrupt remap table pointer (one-shot).
    SetInterruptRemapTablePointer = 1 << 24,
    /// CFI / CFIS: compatibility format interrupts.
    CompatibilityFormatInterrupts = 1 << 23,
}

/// GSTS bits that report one-shot commands; they must not be echoed back
/// into GCMD, or the command would be issued again (§11.4.4: "reset the
/// one-shot bits", the spec's `0x96FF_FFFF` mask).
const ONE_SHOT_STATUS: u32 = GlobalCommand::SetRootTablePointer as u32
    | GlobalCommand::SetFaultLog as u32
    | GlobalCommand::WriteBufferFlush as u32
    | GlobalCommand::SetInterruptRemapTablePointer as u32;

/// The GCMD_REG value that changes exactly one command from the current
/// GSTS_REG value `gsts` (§11.4.4: software must write one command at a
/// time and preserve the others): the persistent enables as they are, the
/// one-shot statuses cleared, `command` set (or, with `enable` false,
/// cleared — meaningful for persistent commands only).
pub const fn gcmd_value(gsts: u32, command: GlobalCommand, enable: bool) -> u32 {
    let preserved = gsts & !ONE_SHOT_STATUS;
    if enable { preserved | command as u32 } else { preserved & !(command as u32) }
}

/// Invalidation descriptor types (§6.5.2, bits 3:0).
const DESCRIPTOR_CONTEXT_CACHE: u64 = 0x1;
const DESCRIPTOR_IOTLB: u64 = 0x2;
const DESCRIPTOR_WAIT: u64 = 0x5;
/// The granularity field (bits 5:4) of context-cache and IOTLB descriptors.
const GRANULARITY_SHIFT: u32 = 4;
/// Domain-ID field (bits 31:16).
const DID_SHIFT: u32 = 16;

/// Invalidation granularity for context-cache and IOTLB invalidations
/// (descriptor G field, CCMD.CIRG, IOTLB.IIRG share the encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Granularity {
    /// Everything.
    Global = 1,
    /// One domain.
    Domain = 2,
}

/// A context-cache invalidation descriptor (§6.5.2.1).
pub const fn context_cache_invalidation(granularity: Granularity, domain: u16) -> Quad {
    [DESCRIPTOR_CONTEXT_CACHE | (granularity as u64) << GRANULARITY_SHIFT | (domain as u64) << DID_SHIFT, 0]
}

/// An IOTLB invalidation descriptor (§6.5.2.3), draining reads and writes
/// (DR bit 7, DW bit 6) where the unit can (`draining` = (DWD, DRD)), so
/// no request translated with the old entries is still in flight after the
/// following wait.
pub const fn iotlb_invalidation(granularity: Granularity, domain: u16, draining: (bool, bool)) -> Quad {
    const DW: u64 = 1 << 6;
    const DR: u64 = 1 << 7;
    let mut low = DESCRIPTOR_IOTLB | (granularity as u64) << GRANULARITY_SHIFT | (domain as u64) << DID_SHIFT;
    if draining.0 {
        low |= DW;
    }
    if draining.1 {
        low |= DR;
    }
    [low, 0]
}

/// The IOTLB descriptor's and IOTLB_REG's granularity for
/// page-selective-within-domain invalidation (§6.5.2.3: G = 11b; the
/// context-cache descriptor gives the same value another meaning, so it
/// is not a [`Granularity`]).
const IOTLB_PAGE_SELECTIVE: u64 = 0b11;
/// The address-mask field (AM, bits 5:0) of a page-selective invalidation.
const ADDRESS_MASK_BITS: u64 = 0x3f;
/// Bits 63:12 of the invalidated address.
const PAGE_ADDRESS_MASK: u64 = !0xfff;

/// A page-selective IOTLB invalidation descriptor (§6.5.2.3): the
/// `2^address_mask` 4 KiB pages of domain `domain` starting at `address`
/// (which must be aligned to that many pages), draining as in
/// [`iotlb_invalidation`]. The invalidation hint (IH, bit 6 of the high
/// half) stays 0: non-leaf entries may have changed too.
pub const fn iotlb_page_invalidation(domain: u16, address: u64, address_mask: u8, draining: (bool, bool)) -> Quad {
    const DW: u64 = 1 << 6;
    const DR: u64 = 1 << 7;
    let mut low = DESCRIPTOR_IOTLB | IOTLB_PAGE_SELECTIVE << GRANULARITY_SHIFT | (domain as u64) << DID_SHIFT;
    if draining.0 {
        low |= DW;
    }
    if draining.1 {
        low |= DR;
    }
    [low, (address & PAGE_ADDRESS_MASK) | (address_mask as u64 & ADDRESS_MASK_BITS)]
}

/// The address mask (AM) for one leaf of `bytes` (a power of two of at
/// least 4 KiB): log2 of its 4 KiB pages.
pub const fn address_mask_for(bytes: u64) -> u8 {
    (bytes.trailing_zeros().saturating_sub(12)) as u8
}

/// An invalidation wait descriptor (§6.5.2.8) that writes `status` to the
/// 4-byte aligned `status_pa` once every earlier descriptor has completed
/// (SW, bit 5; fence FN, bit 6, so later descriptors wait too; no
/// interrupt: the hypervisor polls).
///
/// # Panics
/// If `status_pa` is not 4-byte aligned.
pub const fn invalidation_wait(status_pa: u64, status: u32) -> Quad {
    const STATUS_WRITE: u64 = 1 << 5;
    const FENCE: u64 = 1 << 6;
    const STATUS_DATA_SHIFT: u32 = 32;
    assert!(status_pa & 0x3 == 0);
    [DESCRIPTOR_WAIT | STATUS_WRITE | FENCE | (status as u64) << STATUS_DATA_SHIFT, status_pa]
}

/// CCMD_REG value for a register-based context-cache invalidation (§11.4.7):
/// ICC (bit 63) set, CIRG (62:61), DID (15:0).
pub const fn ccmd_value(granularity: Granularity, domain: u16) -> u64 {
    const ICC: u64 = 1 << 63;
    const CIRG_SHIFT: u32 = 61;
    ICC | (granularity as u64) << CIRG_SHIFT | domain as u64
}

/// IOTLB_REG value for a register-based IOTLB invalidation (§11.4.8.1):
/// IVT (63), IIRG (61:60), DR (49), DW (48), DID (47:32).
pub const fn iotlb_register_value(granularity: Granularity, domain: u16, draining: (bool, bool)) -> u64 {
    const IVT: u64 = 1 << 63;
    const IIRG_SHIFT: u32 = 60;
    const DR: u64 = 1 << 49;
    const DW: u64 = 1 << 48;
    const DID_SHIFT: u32 = 32;
    let mut value = IVT | (granularity as u64) << IIRG_SHIFT | (domain as u64) << DID_SHIFT;
    if draining.0 {
        value |= DW;
    }
    if draining.1 {
        value |= DR;
    }
    value
}

/// IVA_REG value (§11.4.8.2) for a register-based page-selective IOTLB
/// invalidation: ADDR (63:12), IH (6) clear, AM (5:0).
pub const fn iva_value(address: u64, address_mask: u8) -> u64 {
    (address & PAGE_ADDRESS_MASK) | (address_mask as u64 & ADDRESS_MASK_BITS)
}

/// IOTLB_REG value for a register-based page-selective-within-domain
/// invalidation (IIRG = 11b), the address in IVA_REG.
pub const fn iotlb_register_page_value(domain: u16, draining: (bool, bool)) -> u64 {
    const IIRG_SHIFT: u32 = 60;
    const GRANULARITY_FIELD: u64 = 0b11 << IIRG_SHIFT;
    (iotlb_register_value(Granularity::Global, domain, draining) & !GRANULARITY_FIELD) | IOTLB_PAGE_SELECTIVE << IIRG_SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    /// The unit QEMU 10.0.2's `-device intel-iommu` presents (DESIGN.md §6).
    const QEMU: Capabilities = Capabilities::new(0x00d2_008c_222f_0606, 0x0f42);

    #[test]
    fn qemu_capabilities_decode() {
        assert_eq!(QEMU.sagaw(), 0b0110);
        assert!(QEMU.supports_3_level() && QEMU.supports_4_level());
        assert_eq!(QEMU.mgaw(), 48);
        assert_eq!((QEMU.domain_id_bits(), QEMU.domain_count()), (16, 65536));
        assert!(QEMU.large_pages_2mib() && QEMU.large_pages_1gib());
        assert!(QEMU.queued_invalidation());
        assert!(!QEMU.coherent(), "QEMU's unit does not snoop its table reads");
        assert!(!QEMU.snoop_control());
        assert!(!QEMU.caching_mode());
        assert!(QEMU.pass_through());
        assert_eq!(QEMU.fault_recording_offset(), 0x220);
        assert_eq!(QEMU.fault_record_count(), 1);
        assert_eq!(QEMU.iotlb_offset(), 0xf0);
        assert!(QEMU.page_selective_invalidation());
        assert_eq!(QEMU.max_address_mask(), 18);
        assert_eq!(QEMU.draining(), (true, true));
        assert_eq!(QEMU.table_width(), Some(AddressWidth::Bits48));
        let line = QEMU.to_string();
        assert!(line.starts_with("SAGAW 0x6 (3-level yes, 4-level yes), MGAW 48, 65536 domains (16-bit)"), "{line}");
        assert!(line.contains("QI yes, SC no, coherent no"), "{line}");
        // A unit with 3-level tables only is refused (the builder makes four).
        assert_eq!(Capabilities::new(0x0000_0200, 0).table_width(), None);
    }

    #[test]
    fn root_and_context_entries() {
        assert_eq!(root_entry(0x1234_5000), [0x1234_5001, 0]);
        // AW 2 (48-bit) in bits 66:64, DID 7 in bits 87:72, TT 0, FPD 0.
        assert_eq!(context_entry(0x8_0000, AddressWidth::Bits48, 7), [0x8_0001, 0x702]);
        assert_eq!(context_entry(0x8_0000, AddressWidth::Bits39, 0xffff), [0x8_0001, 0xff_ff01]);
    }

    #[test]
    #[should_panic]
    fn misaligned_tables_are_internal_errors() {
        let _ = root_entry(0x1234_5008);
    }

    #[test]
    fn gcmd_writes_one_command_at_a_time() {
        // The spec's example: the one-shot bits of GSTS are masked off
        // (0x96FF_FFFF) before the new command is ORed in.
        assert_eq!(!ONE_SHOT_STATUS, 0x96ff_ffff);
        // After SRTP completed, GSTS shows RTPS: enabling TE must not re-issue SRTP.
        let rtps = GlobalCommand::SetRootTablePointer as u32;
        assert_eq!(gcmd_value(rtps, GlobalCommand::TranslationEnable, true), 1 << 31);
        // QIE stays on when TE is turned on, and stays on when TE goes off.
        let qies = GlobalCommand::QueuedInvalidationEnable as u32;
        assert_eq!(gcmd_value(qies | rtps, GlobalCommand::TranslationEnable, true), (1 << 31) | (1 << 26));
        assert_eq!(gcmd_value((1 << 31) | qies, GlobalCommand::TranslationEnable, false), 1 << 26);
        // A one-shot command from a clean status.
        assert_eq!(gcmd_value(0, GlobalCommand::SetRootTablePointer, true), rtps);
    }

    #[test]
    fn invalidation_descriptors() {
        assert_eq!(context_cache_invalidation(Granularity::Global, 0), [0x11, 0]);
        assert_eq!(context_cache_invalidation(Granularity::Domain, 5), [0x5_0021, 0]);
        assert_eq!(iotlb_invalidation(Granularity::Domain, 5, (true, true)), [0x5_00e2, 0]);
        assert_eq!(iotlb_invalidation(Granularity::Global, 0, (false, false)), [0x12, 0]);
        assert_eq!(invalidation_wait(0x9000_0004, 0xabcd), [0xabcd_0000_0065, 0x9000_0004]);
        assert_eq!(ccmd_value(Granularity::Global, 0), 0xa000_0000_0000_0000);
        assert_eq!(iotlb_register_value(Granularity::Global, 0, (true, true)), 0x9003_0000_0000_0000);
        assert_eq!(iotlb_register_value(Granularity::Domain, 3, (false, false)), 0xa000_0003_0000_0000);
        // Page-selective: G = 11b, DID 5, the 2 MiB page at 0x4020_0000 (AM 9).
        assert_eq!(address_mask_for(0x1000), 0);
        assert_eq!(address_mask_for(0x20_0000), 9);
        assert_eq!(iotlb_page_invalidation(5, 0x4020_0000, 9, (true, true)), [0x5_00f2, 0x4020_0009]);
        assert_eq!(iotlb_page_invalidation(1, 0x1234_5fff, 0, (false, false)), [0x1_0032, 0x1234_5000]);
        assert_eq!(iva_value(0x4020_0000, 9), 0x4020_0009);
        assert_eq!(iotlb_register_page_value(3, (true, true)), 0xb003_0003_0000_0000);
    }
}
