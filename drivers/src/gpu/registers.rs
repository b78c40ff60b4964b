//! The GPU model's registers (`tools/gpu-model/README.md`, numbers from
//! `bulkhead_abi::gpu` and the model's `src/regs.rs`), the `ivshmem`
//! register BAR that carries its doorbell (QEMU
//! `docs/specs/ivshmem-spec.rst`, "BAR0"), and one MSI-X table entry
//! (PCI Local Bus Specification 3.0 §6.8.2.6-6.8.2.9).
//!
//! The register page is the first 1 MiB of the ivshmem shared-memory BAR
//! (BAR2); the global GTT is the next 1 MiB and local memory follows.

#![allow(missing_docs, reason = "the register macros generate undocumented items; the fields carry docs")]

use bulkhead_abi::gpu::vgpu;
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_bitfields! [u32,
    /// `INT_STATUS` and `INT_ENABLE`.
    pub INT [
        /// An MI_USER_INTERRUPT executed.
        USER OFFSET(0) NUMBITS(1) [],
        /// The engine faulted (`FAULT_*` hold the details).
        FAULT OFFSET(1) NUMBITS(1) []
    ],
    /// `RING_CTL` (gen8 `RING_VALID`, `RING_NR_PAGES`).
    pub RING_CTL [
        /// The ring is enabled.
        ENABLE OFFSET(0) NUMBITS(1) [],
        /// Ring size in 4 KiB pages, minus one.
        PAGES_MINUS_ONE OFFSET(12) NUMBITS(9) []
    ],
    /// `RING_HEAD` / `RING_TAIL`: byte offsets into the ring.
    pub RING_OFFSET [
        /// Byte offset bits 20:2 (the field holds the offset divided by 4).
        DWORD OFFSET(2) NUMBITS(19) []
    ],
    /// ivshmem `Doorbell` (BAR0 + 12): interrupts vector `VECTOR` of peer `PEER`.
    pub DOORBELL [
        /// The vector to signal.
        VECTOR OFFSET(0) NUMBITS(16) [],
        /// The peer to signal (the GPU model is peer 0).
        PEER OFFSET(16) NUMBITS(16) []
    ],
    /// MSI-X table entry "Vector Control" (§6.8.2.9).
    pub MSIX_VECTOR_CONTROL [
        /// The vector is masked.
        MASKED OFFSET(0) NUMBITS(1) []
    ]
];

register_structs! {
    /// The GPU model's register page (BAR2 + 0).
    pub GpuRegisters {
        /// "BHGP".
        (0x0000 => pub gpu_id: ReadOnly<u32>),
        /// Interface version.
        (0x0004 => pub gpu_version: ReadOnly<u32>),
        /// Local memory bytes, low half.
        (0x0008 => pub lmem_size_lo: ReadOnly<u32>),
        /// Local memory bytes, high half.
        (0x000c => pub lmem_size_hi: ReadOnly<u32>),
        /// Offset of the global GTT in the BAR.
        (0x0010 => pub gtt_base: ReadOnly<u32>),
        /// Entries in the global GTT.
        (0x0014 => pub gtt_size: ReadOnly<u32>),
        /// Offset of local memory in the BAR.
        (0x0018 => pub lmem_offset: ReadOnly<u32>),
        (0x001c => _reserved0),
        /// Set by the model (atomic OR), cleared by software (atomic AND):
        /// accessed through `Gpu::acknowledge`, never read-modify-written.
        (0x0100 => pub int_status: ReadWrite<u32, INT::Register>),
        /// Status bits that raise MSI-X vector 0.
        (0x0104 => pub int_enable: ReadWrite<u32, INT::Register>),
        /// +1 per MI_USER_INTERRUPT.
        (0x0108 => pub seqno: ReadOnly<u32>),
        (0x010c => _reserved1),
        /// Fault code, 0 = none; software writes 0 to restart the ring.
        (0x0200 => pub fault_status: ReadWrite<u32>),
        /// Header dword of the faulting command.
        (0x0204 => pub fault_command: ReadOnly<u32>),
        /// Graphics address that faulted, low half.
        (0x0208 => pub fault_address_lo: ReadOnly<u32>),
        /// Graphics address that faulted, high half.
        (0x020c => pub fault_address_hi: ReadOnly<u32>),
        /// Graphics address of the faulting command, low half.
        (0x0210 => pub fault_command_address_lo: ReadOnly<u32>),
        /// Graphics address of the faulting command, high half.
        (0x0214 => pub fault_command_address_hi: ReadOnly<u32>),
        (0x0218 => _reserved2),
        /// Byte offset of the first free dword (qword aligned).
        (0x22030 => pub ring_tail: ReadWrite<u32, RING_OFFSET::Register>),
        /// Byte offset of the next command.
        (0x22034 => pub ring_head: ReadWrite<u32, RING_OFFSET::Register>),
        /// Graphics address of the ring, 4 KiB aligned.
        (0x22038 => pub ring_start: ReadWrite<u32>),
        /// Enable and size.
        (0x2203c => pub ring_ctl: ReadWrite<u32, RING_CTL::Register>),
        (0x22040 => @END),
    }
}

register_structs! {
    /// The ivshmem register BAR (BAR0, 256 bytes).
    pub IvshmemRegisters {
        /// Interrupt mask (pin-based interrupts only).
        (0x00 => pub interrupt_mask: ReadWrite<u32>),
        /// Interrupt status (pin-based interrupts only).
        (0x04 => pub interrupt_status: ReadWrite<u32>),
        /// This peer's ID.
        (0x08 => pub iv_position: ReadOnly<u32>),
        /// Write: signal a peer's vector.
        (0x0c => pub doorbell: WriteOnly<u32, DOORBELL::Register>),
        (0x10 => @END),
    }
}

register_structs! {
    /// One MSI-X table entry (§6.8.2.6).
    pub MsixEntry {
        /// Message address, low half (dword aligned).
        (0x0 => pub message_address_lo: ReadWrite<u32>),
        /// Message address, high half.
        (0x4 => pub message_address_hi: ReadWrite<u32>),
        /// Message data.
        (0x8 => pub message_data: ReadWrite<u32>),
        /// Vector control.
        (0xc => pub vector_control: ReadWrite<u32, MSIX_VECTOR_CONTROL::Register>),
        (0x10 => @END),
    }
}

// The typed layout agrees with the ABI's numbers (compile-time checks).
const _: () = {
    assert!(core::mem::offset_of!(GpuRegisters, gpu_id) as u64 == vgpu::GPU_ID);
    assert!(core::mem::offset_of!(GpuRegisters, lmem_size_lo) as u64 == vgpu::LMEM_SIZE_LO);
    assert!(core::mem::offset_of!(GpuRegisters, gtt_base) as u64 == vgpu::GTT_BASE);
    assert!(core::mem::offset_of!(GpuRegisters, gtt_size) as u64 == vgpu::GTT_SIZE);
    assert!(core::mem::offset_of!(GpuRegisters, int_status) as u64 == vgpu::INT_STATUS);
    assert!(core::mem::offset_of!(GpuRegisters, int_enable) as u64 == vgpu::INT_ENABLE);
    assert!(core::mem::offset_of!(GpuRegisters, seqno) as u64 == vgpu::SEQNO);
    assert!(core::mem::offset_of!(GpuRegisters, fault_status) as u64 == vgpu::FAULT_STATUS);
    assert!(core::mem::offset_of!(GpuRegisters, fault_address_hi) as u64 == vgpu::FAULT_ADDRESS_HI);
    assert!(core::mem::offset_of!(GpuRegisters, ring_tail) as u64 == vgpu::RING_TAIL);
    assert!(core::mem::offset_of!(GpuRegisters, ring_head) as u64 == vgpu::RING_HEAD);
    assert!(core::mem::offset_of!(GpuRegisters, ring_start) as u64 == vgpu::RING_START);
    assert!(core::mem::offset_of!(GpuRegisters, ring_ctl) as u64 == vgpu::RING_CTL);
    assert!(core::mem::size_of::<GpuRegisters>() as u64 <= vgpu::GTT_OFFSET);
    assert!(core::mem::size_of::<MsixEntry>() == 16);
};
