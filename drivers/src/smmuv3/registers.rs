//! SMMUv3 register pages 0 and 1 (IHI 0070 §6.2, "Register overview";
//! field layouts from §6.3).

use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

register_bitfields! [u32,
    /// `SMMU_IDR0` (§6.3.1).
    pub IDR0 [
        /// Stage-2 translation supported.
        S2P OFFSET(0) NUMBITS(1) [],
        /// Stage-1 translation supported.
        S1P OFFSET(1) NUMBITS(1) [],
        /// Translation table formats: 0b10 AArch64, 0b11 AArch32 and AArch64.
        TTF OFFSET(2) NUMBITS(2) [],
        /// Coherent access to tables and queues.
        COHACC OFFSET(4) NUMBITS(1) [],
        /// Hardware update of the Access flag (0b01) and dirty state (0b10).
        HTTU OFFSET(6) NUMBITS(2) [],
        /// 16-bit ASIDs.
        ASID16 OFFSET(12) NUMBITS(1) [],
        /// MSIs supported.
        MSI OFFSET(13) NUMBITS(1) [],
        /// 16-bit VMIDs.
        VMID16 OFFSET(18) NUMBITS(1) [],
        /// Stream table formats: 0b00 linear only, 0b01 two-level too.
        ST_LEVEL OFFSET(27) NUMBITS(2) []
    ],
    /// `SMMU_IDR1` (§6.3.2).
    pub IDR1 [
        /// StreamID bits.
        SIDSIZE OFFSET(0) NUMBITS(6) [],
        /// log2 of the largest event queue.
        EVENTQS OFFSET(16) NUMBITS(5) [],
        /// log2 of the largest command queue.
        CMDQS OFFSET(21) NUMBITS(5) [],
        /// Queue base registers are fixed (not supported here).
        QUEUES_PRESET OFFSET(29) NUMBITS(1) [],
        /// Table base registers are fixed (not supported here).
        TABLES_PRESET OFFSET(30) NUMBITS(1) []
    ],
    /// `SMMU_IDR5` (§6.3.6).
    pub IDR5 [
        /// Output address size, `ID_AA64MMFR0_EL1.PARange` encoding.
        OAS OFFSET(0) NUMBITS(3) [],
        /// 4 KiB translation granule supported.
        GRAN4K OFFSET(4) NUMBITS(1) []
    ],
    /// `SMMU_CR0` and `SMMU_CR0ACK` (§6.3.9).
    pub CR0 [
        /// Translation enabled (off: `SMMU_GBPA` decides).
        SMMUEN OFFSET(0) NUMBITS(1) [],
        /// Event queue enabled.
        EVENTQEN OFFSET(2) NUMBITS(1) [],
        /// Command queue enabled.
        CMDQEN OFFSET(3) NUMBITS(1) []
    ],
    /// `SMMU_CR1` (§6.3.11): attributes of the SMMU's own accesses to
    /// tables and queues.
    pub CR1 [
        /// Queue accesses, inner cacheability.
        QUEUE_IC OFFSET(0) NUMBITS(2) [WriteBack = 0b01],
        /// Queue accesses, outer cacheability.
        QUEUE_OC OFFSET(2) NUMBITS(2) [WriteBack = 0b01],
        /// Queue accesses, shareability.
        QUEUE_SH OFFSET(4) NUMBITS(2) [InnerShareable = 0b11],
        /// Table accesses, inner cacheability.
        TABLE_IC OFFSET(6) NUMBITS(2) [WriteBack = 0b01],
        /// Table accesses, outer cacheability.
        TABLE_OC OFFSET(8) NUMBITS(2) [WriteBack = 0b01],
        /// Table accesses, shareability.
        TABLE_SH OFFSET(10) NUMBITS(2) [InnerShareable = 0b11]
    ],
    /// `SMMU_CR2` (§6.3.12).
    pub CR2 [
        /// Record `C_BAD_STREAMID` for StreamIDs beyond the stream table.
        RECINVSID OFFSET(1) NUMBITS(1) [],
        /// Private TLB maintenance: broadcast TLBIs from CPUs are ignored.
        PTM OFFSET(2) NUMBITS(1) []
    ],
    /// `SMMU_GBPA` (§6.3.14): what happens to transactions while
    /// `SMMUEN` is 0.
    pub GBPA [
        /// Abort every transaction instead of bypassing.
        ABORT OFFSET(20) NUMBITS(1) [],
        /// Write 1 to apply; reads 1 until applied.
        UPDATE OFFSET(31) NUMBITS(1) []
    ],
    /// `SMMU_IRQ_CTRL` and `SMMU_IRQ_CTRLACK` (§6.3.16).
    pub IRQ_CTRL [
        /// Global error interrupt enabled.
        GERROR_IRQEN OFFSET(0) NUMBITS(1) [],
        /// Event queue interrupt enabled.
        EVENTQ_IRQEN OFFSET(2) NUMBITS(1) []
    ],
    /// `SMMU_STRTAB_BASE_CFG` (§6.3.25).
    pub STRTAB_BASE_CFG [
        /// log2 of the number of STEs (linear format).
        LOG2SIZE OFFSET(0) NUMBITS(6) [],
        /// Table format.
        FMT OFFSET(16) NUMBITS(2) [Linear = 0b00]
    ],
    /// `SMMU_CMDQ_CONS` (§6.3.28).
    pub CMDQ_CONS [
        /// Read index and wrap flag.
        RD OFFSET(0) NUMBITS(20) [],
        /// Why the command at `RD` was not executed.
        ERR OFFSET(24) NUMBITS(7) []
    ],
    /// `SMMU_EVENTQ_PROD` (§6.3.30).
    pub EVENTQ_PROD [
        /// Write index and wrap flag.
        WR OFFSET(0) NUMBITS(20) [],
        /// Toggled by the SMMU when the queue overflowed.
        OVFLG OFFSET(31) NUMBITS(1) []
    ],
    /// `SMMU_EVENTQ_CONS` (§6.3.31).
    pub EVENTQ_CONS [
        /// Read index and wrap flag.
        RD OFFSET(0) NUMBITS(20) [],
        /// Set equal to `EVENTQ_PROD.OVFLG` to acknowledge an overflow.
        OVACKFLG OFFSET(31) NUMBITS(1) []
    ]
];

register_bitfields! [u64,
    /// `SMMU_STRTAB_BASE` (§6.3.24).
    pub STRTAB_BASE [
        /// Table address bits 51:6.
        ADDR OFFSET(6) NUMBITS(46) [],
        /// Read-allocate hint.
        RA OFFSET(62) NUMBITS(1) []
    ],
    /// `SMMU_CMDQ_BASE` and `SMMU_EVENTQ_BASE` (§6.3.26, §6.3.29).
    pub QUEUE_BASE [
        /// log2 of the number of entries.
        LOG2SIZE OFFSET(0) NUMBITS(5) [],
        /// Queue address bits 51:5.
        ADDR OFFSET(5) NUMBITS(47) [],
        /// Read-allocate (command queue) / write-allocate (event queue) hint.
        ALLOCATE OFFSET(62) NUMBITS(1) []
    ]
];

register_structs! {
    /// Register page 0.
    pub SmmuPage0 {
        (0x0000 => pub idr0: ReadOnly<u32, IDR0::Register>),
        (0x0004 => pub idr1: ReadOnly<u32, IDR1::Register>),
        (0x0008 => pub idr2: ReadOnly<u32>),
        (0x000c => pub idr3: ReadOnly<u32>),
        (0x0010 => pub idr4: ReadOnly<u32>),
        (0x0014 => pub idr5: ReadOnly<u32, IDR5::Register>),
        (0x0018 => pub iidr: ReadOnly<u32>),
        (0x001c => pub aidr: ReadOnly<u32>),
        (0x0020 => pub cr0: ReadWrite<u32, CR0::Register>),
        (0x0024 => pub cr0ack: ReadOnly<u32, CR0::Register>),
        (0x0028 => pub cr1: ReadWrite<u32, CR1::Register>),
        (0x002c => pub cr2: ReadWrite<u32, CR2::Register>),
        (0x0030 => _reserved0),
        (0x0044 => pub gbpa: ReadWrite<u32, GBPA::Register>),
        (0x0048 => _reserved1),
        (0x0050 => pub irq_ctrl: ReadWrite<u32, IRQ_CTRL::Register>),
        (0x0054 => pub irq_ctrlack: ReadOnly<u32, IRQ_CTRL::Register>),
        (0x0058 => _reserved2),
        (0x0060 => pub gerror: ReadOnly<u32>),
        (0x0064 => pub gerrorn: ReadWrite<u32>),
        (0x0068 => _reserved3),
        (0x0080 => pub strtab_base: ReadWrite<u64, STRTAB_BASE::Register>),
        (0x0088 => pub strtab_base_cfg: ReadWrite<u32, STRTAB_BASE_CFG::Register>),
        (0x008c => _reserved4),
        (0x0090 => pub cmdq_base: ReadWrite<u64, QUEUE_BASE::Register>),
        (0x0098 => pub cmdq_prod: ReadWrite<u32>),
        (0x009c => pub cmdq_cons: ReadWrite<u32, CMDQ_CONS::Register>),
        (0x00a0 => pub eventq_base: ReadWrite<u64, QUEUE_BASE::Register>),
        (0x00a8 => _reserved5),
        (0x10000 => @END),
    }
}

register_structs! {
    /// Register page 1, at page 0 + [`PAGE1_OFFSET`]: the event queue's
    /// indices live here, not in page 0 (§6.2, Table 6-1).
    pub SmmuPage1 {
        (0x0000 => _reserved0),
        (0x00a8 => pub eventq_prod: ReadWrite<u32, EVENTQ_PROD::Register>),
        (0x00ac => pub eventq_cons: ReadWrite<u32, EVENTQ_CONS::Register>),
        (0x00b0 => _reserved1),
        (0x10000 => @END),
    }
}

/// Offset of register page 1 from page 0 (64 KiB pages).
pub const PAGE1_OFFSET: usize = 0x1_0000;
/// Bytes of MMIO the two register pages span.
pub const MMIO_SIZE: u64 = 0x2_0000;

/// `SMMU_GERROR` bits (§6.3.17) and their names. An error is active while
/// its bit differs between `SMMU_GERROR` and `SMMU_GERRORN`.
pub const GERROR_NAMES: [(u32, &str); 9] = [
    (0, "CMDQ_ERR"),
    (2, "EVENTQ_ABT_ERR"),
    (3, "PRIQ_ABT_ERR"),
    (4, "MSI_CMDQ_ABT_ERR"),
    (5, "MSI_EVENTQ_ABT_ERR"),
    (6, "MSI_PRIQ_ABT_ERR"),
    (7, "MSI_GERROR_ABT_ERR"),
    (8, "SFM_ERR"),
    (9, "CMDQP_ERR"),
];
