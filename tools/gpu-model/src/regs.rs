//! The model's hardware interface: BAR layout, register offsets, GTT entry format and command
//! encodings. This module is the single source of these numbers; the README's "GPU model"
//! section summarises it for driver writers.
//!
//! Sources for the gen8 values (Intel's public PRMs, as mirrored in Linux's i915 driver):
//! - commands: `drivers/gpu/drm/i915/gt/intel_gpu_commands.h` (`MI_INSTR`, `MI_NOOP`,
//!   `MI_USER_INTERRUPT`, `MI_BATCH_BUFFER_END`, `MI_STORE_DWORD_IMM_GEN4`,
//!   `MI_BATCH_BUFFER_START_GEN8`, `XY_COLOR_BLT_CMD`, `XY_SRC_COPY_BLT_CMD`, `BLT_WRITE_RGBA`);
//!   Intel PRM vol. 2a "Command Reference: Instructions" for the dword layouts and field widths;
//! - ring registers: `drivers/gpu/drm/i915/gt/intel_engine_regs.h` (`RING_TAIL` 0x30,
//!   `RING_HEAD` 0x34, `RING_START` 0x38, `RING_CTL` 0x3c) with the blitter engine's base
//!   `BLT_RING_BASE` 0x22000;
//! - GTT entries: `drivers/gpu/drm/i915/gt/intel_gtt.h` (`GEN8_PAGE_PRESENT` bit 0, 39-bit
//!   page address, `GEN12_GGTT_PTE_LM` bit 1 = the page is in local memory on discrete parts).
//!
//! Model-specific (not gen8) choices are marked "model:".
//!
//! The per-process GTT (entry format, PDP0_LDW / PDP0_UDW, MI_LOAD_REGISTER_IMM, the
//! BBS_PPGTT bit, fault codes 9 and 10) is not here: it is the contract with the hypervisor's
//! mediator, in `bulkhead_abi::gpu::{ppgtt, cmd}`, and the model uses those constants directly.

// ---------------------------------------------------------------------------------------------
// Shared-memory BAR (ivshmem BAR2) layout
// ---------------------------------------------------------------------------------------------

/// Size of the register BAR: registers in the lower half, the global GTT in the upper half
/// (gen8 puts the GGTT in the upper half of GTTMMADR the same way).
pub const REG_BAR_SIZE: u64 = 2 << 20;
/// Offset of the global GTT inside the register BAR.
pub const GTT_OFFSET: u64 = REG_BAR_SIZE / 2;
/// Bytes per GTT entry (gen8: 64-bit entries).
pub const GTT_ENTRY_SIZE: u64 = 8;
/// Number of global GTT entries (1 MiB / 8 = 128 Ki entries = 512 MiB of graphics addresses).
pub const GTT_ENTRIES: u64 = (REG_BAR_SIZE - GTT_OFFSET) / GTT_ENTRY_SIZE;
/// GPU page size.
pub const PAGE_SIZE: u64 = 4096;
/// Size of the graphics address space the global GTT maps.
pub const GRAPHICS_ADDRESS_SPACE: u64 = GTT_ENTRIES * PAGE_SIZE;
/// model: offset of local memory in the shared-memory BAR, right after the register BAR.
/// The whole BAR is rounded up to a power of two (a PCI BAR must be one).
pub const LOCAL_MEMORY_OFFSET: u64 = REG_BAR_SIZE;

/// Size of the shared-memory BAR that holds the register BAR and `local_size` bytes of local
/// memory: the sum rounded up to a power of two. `None` if it does not fit in a u64.
pub fn shared_bar_size(local_size: u64) -> Option<u64> {
    LOCAL_MEMORY_OFFSET.checked_add(local_size)?.checked_next_power_of_two()
}

// ---------------------------------------------------------------------------------------------
// GTT entry format
// ---------------------------------------------------------------------------------------------

/// GTT entry bit 0: the entry is valid (gen8 `GEN8_PAGE_PRESENT`).
pub const GTT_PRESENT: u64 = 1 << 0;
/// GTT entry bit 1: the page is in the GPU's local memory and the page address is an offset into
/// it (gen12 discrete `GEN12_GGTT_PTE_LM`); clear = guest RAM, the page address is a guest
/// physical address.
pub const GTT_LOCAL_MEMORY: u64 = 1 << 1;
/// GTT entry bits 12..38: the page address.
pub const GTT_ADDRESS_MASK: u64 = ((1 << 39) - 1) & !(PAGE_SIZE - 1);

// ---------------------------------------------------------------------------------------------
// Registers (lower half of the register BAR). All 32-bit, little-endian.
// ---------------------------------------------------------------------------------------------

/// model: read-only identification, [`GPU_ID_VALUE`].
pub const GPU_ID: u64 = 0x0000;
/// Value of [`GPU_ID`]: "BHGP" in little-endian bytes.
pub const GPU_ID_VALUE: u32 = u32::from_le_bytes(*b"BHGP");
/// model: read-only interface version, [`GPU_VERSION_VALUE`].
pub const GPU_VERSION: u64 = 0x0004;
/// Value of [`GPU_VERSION`].
pub const GPU_VERSION_VALUE: u32 = 1;
/// model: read-only local memory size in bytes, low / high halves.
pub const LMEM_SIZE_LO: u64 = 0x0008;
/// See [`LMEM_SIZE_LO`].
pub const LMEM_SIZE_HI: u64 = 0x000c;
/// model: read-only offset of the global GTT in the register BAR ([`GTT_OFFSET`]).
pub const GTT_BASE: u64 = 0x0010;
/// model: read-only number of global GTT entries ([`GTT_ENTRIES`]).
pub const GTT_SIZE: u64 = 0x0014;
/// model: read-only offset of local memory in the shared BAR ([`LOCAL_MEMORY_OFFSET`]).
pub const LMEM_OFFSET: u64 = 0x0018;

/// model: interrupt status. The model sets bits with an atomic OR; software clears the bits it
/// has handled with an atomic AND (both agents share the page, so neither may do a plain
/// read-modify-write).
pub const INT_STATUS: u64 = 0x0100;
/// model: interrupt enable, written by software. The model signals the MSI-X vector only for
/// status bits that are enabled here.
pub const INT_ENABLE: u64 = 0x0104;
/// model: completion sequence number: incremented by the model for every MI_USER_INTERRUPT.
pub const SEQNO: u64 = 0x0108;
/// [`INT_STATUS`] bit: an MI_USER_INTERRUPT executed.
pub const INT_USER: u32 = 1 << 0;
/// [`INT_STATUS`] bit: the engine faulted (see [`FAULT_STATUS`]).
pub const INT_FAULT: u32 = 1 << 1;

/// model: fault status, one of the `FAULT_*` codes; 0 = no fault. While it is non-zero the ring
/// is stopped and the model does not touch the fault registers; software clears the fault by
/// writing 0 here (after moving RING_HEAD past the bad command if it wants to skip it).
pub const FAULT_STATUS: u64 = 0x0200;
/// model: header dword of the faulting command (0 if the fault was in fetching it).
pub const FAULT_COMMAND: u64 = 0x0204;
/// model: the graphics address whose access faulted, low / high halves.
pub const FAULT_ADDRESS_LO: u64 = 0x0208;
/// See [`FAULT_ADDRESS_LO`].
pub const FAULT_ADDRESS_HI: u64 = 0x020c;
/// model: graphics address of the faulting command's header, low / high halves.
pub const FAULT_COMMAND_ADDRESS_LO: u64 = 0x0210;
/// See [`FAULT_COMMAND_ADDRESS_LO`].
pub const FAULT_COMMAND_ADDRESS_HI: u64 = 0x0214;

/// Fault code: the GTT entry for the address is not present.
pub const FAULT_NOT_PRESENT: u32 = 1;
/// Fault code: a present GTT entry points outside guest RAM or local memory.
pub const FAULT_OUTSIDE_MEMORY: u32 = 2;
/// Fault code: the graphics address is beyond the GTT.
pub const FAULT_OUTSIDE_GTT: u32 = 3;
/// Fault code: unknown command (client or opcode).
pub const FAULT_UNKNOWN_COMMAND: u32 = 4;
/// Fault code: known command with a bad length or bad field (depth, pitch, ROP).
pub const FAULT_MALFORMED_COMMAND: u32 = 5;
/// Fault code: ring registers are inconsistent (tail/head past the ring, misaligned start) or a
/// command runs past the tail.
pub const FAULT_RING_OVERRUN: u32 = 6;
/// Fault code: MI_BATCH_BUFFER_START nested deeper than [`MAX_BATCH_DEPTH`].
pub const FAULT_BATCH_NESTING: u32 = 7;
/// Fault code: a batch ran longer than [`MAX_BATCH_BYTES`] or the submission executed more than
/// [`MAX_WORK_PER_BATCH`] (a hang watchdog).
pub const FAULT_BATCH_OVERRUN: u32 = 8;
// Codes 9 and 10: `bulkhead_abi::gpu::ppgtt::{FAULT_PRIVILEGED, FAULT_FORBIDDEN_REGISTER}`.

/// Blitter (BCS) ring registers: gen8 `BLT_RING_BASE` 0x22000 + the common ring offsets.
pub const BLT_RING_BASE: u64 = 0x22000;
/// Ring tail: byte offset of the first free dword, bits 3..20 (qword aligned); software writes.
pub const RING_TAIL: u64 = BLT_RING_BASE + 0x30;
/// Ring head: byte offset of the next command, bits 2..20; the model writes it as it executes.
pub const RING_HEAD: u64 = BLT_RING_BASE + 0x34;
/// Ring start: graphics address of the ring, 4 KiB aligned.
pub const RING_START: u64 = BLT_RING_BASE + 0x38;
/// Ring control: bit 0 enable, bits 12..20 ring size in pages minus one.
pub const RING_CTL: u64 = BLT_RING_BASE + 0x3c;
/// [`RING_TAIL`] / [`RING_HEAD`] offset field mask.
pub const RING_OFFSET_MASK: u32 = 0x001f_fffc;
/// [`RING_CTL`] enable bit (gen8 `RING_VALID`).
pub const RING_CTL_ENABLE: u32 = 1 << 0;
/// [`RING_CTL`] size field: (pages - 1) << 12 (gen8 `RING_NR_PAGES`).
pub const RING_CTL_PAGES_MASK: u32 = 0x001f_f000;

/// Highest register offset the model defines (everything below [`GTT_OFFSET`] is registers).
pub const REGISTER_SPACE_END: u64 = GTT_OFFSET;

// ---------------------------------------------------------------------------------------------
// Commands (gen8 encodings)
// ---------------------------------------------------------------------------------------------

/// Command header bits 29..31: the client.
pub const CLIENT_SHIFT: u32 = 29;
/// Client of MI_* commands.
pub const CLIENT_MI: u32 = 0;
/// Client of 2D blitter commands.
pub const CLIENT_2D: u32 = 2;
/// MI_* opcode: bits 23..28.
pub const MI_OPCODE_SHIFT: u32 = 23;
/// MI_* opcode field mask (after shifting).
pub const MI_OPCODE_MASK: u32 = 0x3f;
/// MI opcodes below this are one dword long and have no length field.
pub const MI_FIRST_MULTI_DWORD_OPCODE: u32 = 0x10;
/// Length field of MI_* commands (total dwords - 2).
pub const MI_LENGTH_MASK: u32 = 0xff;
/// 2D opcode: bits 22..28.
pub const BLT_OPCODE_SHIFT: u32 = 22;
/// 2D opcode field mask (after shifting).
pub const BLT_OPCODE_MASK: u32 = 0x7f;
/// Length field of 2D commands (total dwords - 2).
pub const BLT_LENGTH_MASK: u32 = 0xff;

/// `MI_NOOP` opcode.
pub const MI_NOOP: u32 = 0x00;
/// `MI_USER_INTERRUPT` opcode.
pub const MI_USER_INTERRUPT: u32 = 0x02;
/// `MI_BATCH_BUFFER_END` opcode.
pub const MI_BATCH_BUFFER_END: u32 = 0x0a;
/// `MI_STORE_DATA_IMM` opcode (gen8: header, address low, address high, 1 or 2 data dwords).
pub const MI_STORE_DATA_IMM: u32 = 0x20;
/// `MI_BATCH_BUFFER_START` opcode (gen8: header, address low, address high).
pub const MI_BATCH_BUFFER_START: u32 = 0x31;
/// MI_BATCH_BUFFER_START bit 22: second-level batch (returns to the calling batch on its
/// MI_BATCH_BUFFER_END) rather than a chain.
pub const MI_BATCH_SECOND_LEVEL: u32 = 1 << 22;

/// `XY_COLOR_BLT` opcode (gen8: 7 dwords).
pub const XY_COLOR_BLT: u32 = 0x50;
/// `XY_SRC_COPY_BLT` opcode (gen8: 10 dwords).
pub const XY_SRC_COPY_BLT: u32 = 0x53;
/// Total dwords of a gen8 XY_COLOR_BLT.
pub const XY_COLOR_BLT_DWORDS: usize = 7;
/// Total dwords of a gen8 XY_SRC_COPY_BLT.
pub const XY_SRC_COPY_BLT_DWORDS: usize = 10;
/// 2D header bit 21: write alpha (`BLT_WRITE_ALPHA`); accepted, the model writes all channels.
pub const BLT_WRITE_ALPHA: u32 = 1 << 21;
/// 2D header bit 20: write RGB (`BLT_WRITE_RGB`).
pub const BLT_WRITE_RGB: u32 = 1 << 20;
/// BR13 (dword 1) bits 0..15: destination pitch in bytes (signed; the model takes only >= 0).
pub const BR13_PITCH_MASK: u32 = 0xffff;
/// BR13 bits 16..23: raster operation.
pub const BR13_ROP_SHIFT: u32 = 16;
/// BR13 bits 24..25: colour depth.
pub const BR13_DEPTH_SHIFT: u32 = 24;
/// Colour depth code: 8 bpp.
pub const DEPTH_8: u32 = 0;
/// Colour depth code: 16 bpp 565.
pub const DEPTH_16_565: u32 = 1;
/// Colour depth code: 16 bpp 1555.
pub const DEPTH_16_1555: u32 = 2;
/// Colour depth code: 32 bpp.
pub const DEPTH_32: u32 = 3;
/// ROP for XY_COLOR_BLT: PATCOPY (destination = colour).
pub const ROP_PATCOPY: u32 = 0xf0;
/// ROP for XY_SRC_COPY_BLT: SRCCOPY (destination = source).
pub const ROP_SRCCOPY: u32 = 0xcc;

/// Build an MI_* command header (i915 `MI_INSTR`).
pub const fn mi_instr(opcode: u32, flags: u32) -> u32 {
    (CLIENT_MI << CLIENT_SHIFT) | (opcode << MI_OPCODE_SHIFT) | flags
}

/// Build a 2D command header.
pub const fn blt_instr(opcode: u32, flags: u32) -> u32 {
    (CLIENT_2D << CLIENT_SHIFT) | (opcode << BLT_OPCODE_SHIFT) | flags
}

// ---------------------------------------------------------------------------------------------
// Engine limits (model)
// ---------------------------------------------------------------------------------------------

/// Batch nesting: the ring calls a first-level batch, which may call one second-level batch
/// (gen8 supports exactly these two levels).
pub const MAX_BATCH_DEPTH: usize = 2;
/// A batch that runs this many bytes without MI_BATCH_BUFFER_END is a fault.
pub const MAX_BATCH_BYTES: u64 = 1 << 20;
/// Work one batch (with the batches it calls) may do before the model declares a hang and
/// faults with [`FAULT_BATCH_OVERRUN`]; bounds chained batches that loop forever. A command
/// costs 1, a blit 1 + its bytes / 4 KiB.
pub const MAX_WORK_PER_BATCH: u64 = 1 << 20;
/// Work one [`crate::gpu::Gpu::process`] call does on the ring before returning to the event
/// loop (not a fault: the ring continues on the next call).
pub const RING_WORK_PER_PROCESS: u64 = 1 << 18;
/// Bytes one blit may touch (destination rectangle); bigger is malformed, so a guest cannot
/// keep the model busy for minutes with one command.
pub const MAX_BLIT_BYTES: u64 = 64 << 20;

// ---------------------------------------------------------------------------------------------
// ivshmem
// ---------------------------------------------------------------------------------------------

/// model: the model's own ivshmem peer ID. The guest rings the model by writing
/// `(MODEL_PEER_ID << 16) | vector` to the ivshmem DOORBELL register (BAR0 offset 12).
pub const MODEL_PEER_ID: u16 = 0;
/// The doorbell vector that means "RING_TAIL moved / fault cleared: look at the registers".
pub const DOORBELL_VECTOR: u16 = 0;
/// The MSI-X vector the model raises for INT_STATUS.
pub const INTERRUPT_VECTOR: u16 = 0;
