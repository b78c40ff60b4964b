//! The GPU's formats, shared by the hypervisor's GPU mediator and the GPU
//! model in `tools/` (DESIGN.md §5).
//!
//! The model follows Intel gen8 (Broadwell) conventions; the numbers below
//! are the ones in the gen8 Programmer's Reference Manual (PRM):
//! - GTT entries: Vol. 5 *Memory Views*, "Global Graphics Translation
//!   Table (GGTT)" — 64-bit entries, bit 0 present, page address 38:12.
//! - Commands: Vol. 2a *Command Reference: Instructions* — the header
//!   dword's bits 31:29 name the client (MI, 2D blitter, ...), the opcode
//!   follows, the low bits hold "DWord Length" (total dwords minus 2).
//!
//! Only what Bulkhead's model implements is here; everything else is
//! rejected by the mediator's command scanner.

/// The global GTT (graphics translation table) entry format.
pub mod gtt {
    /// Bytes in one GTT entry.
    pub const ENTRY_SIZE: u64 = 8;
    /// Bytes of memory one entry maps.
    pub const PAGE_SIZE: u64 = 4096;
    /// Bit 0: the entry is valid (PRM Vol. 5, GGTT entry "Valid").
    pub const PRESENT: u64 = 1 << 0;
    /// Bits 38:12: the physical page address (a 39-bit address space).
    pub const ADDRESS_MASK: u64 = ((1 << 39) - 1) & !(PAGE_SIZE - 1);

    /// The page address an entry holds (meaningful only if [`PRESENT`]).
    pub const fn entry_address(entry: u64) -> u64 {
        entry & ADDRESS_MASK
    }

    /// A present entry for `page`, or `None` if `page` is not 4 KiB aligned
    /// or does not fit in bits 38:12.
    pub const fn present_entry(page: u64) -> Option<u64> {
        if page & !ADDRESS_MASK != 0 {
            return None;
        }
        Some(page | PRESENT)
    }
}

/// Ring and batch-buffer commands (PRM Vol. 2a).
pub mod cmd {
    /// Header bits 31:29: the command's client.
    pub const CLIENT_SHIFT: u32 = 29;
    /// Client 0: memory interface (MI_*) commands.
    pub const CLIENT_MI: u32 = 0;
    /// Client 2: 2D (blitter) commands.
    pub const CLIENT_2D: u32 = 2;
    /// Client 3: render (GFXPIPE) commands; not implemented by the model.
    pub const CLIENT_RENDER: u32 = 3;

    /// MI header bits 28:23: the MI opcode.
    pub const MI_OPCODE_SHIFT: u32 = 23;
    /// MI opcode field width mask (after shifting).
    pub const MI_OPCODE_MASK: u32 = 0x3f;
    /// 2D header bits 28:22: the blitter opcode.
    pub const BLT_OPCODE_SHIFT: u32 = 22;
    /// 2D opcode field width mask (after shifting).
    pub const BLT_OPCODE_MASK: u32 = 0x7f;

    /// MI_NOOP (1 dword). Bit 22 would write the NOPID register.
    pub const MI_NOOP: u32 = 0x00;
    /// MI_NOOP bit 22: "Identification Number Register Write Enable".
    pub const MI_NOOP_WRITE_NOPID: u32 = 1 << 22;
    /// MI_USER_INTERRUPT (1 dword): raises the engine's user interrupt.
    pub const MI_USER_INTERRUPT: u32 = 0x02;
    /// MI_WAIT_FOR_EVENT: waits on display events; privileged.
    pub const MI_WAIT_FOR_EVENT: u32 = 0x03;
    /// MI_ARB_ON_OFF: arbitration control; privileged.
    pub const MI_ARB_ON_OFF: u32 = 0x08;
    /// MI_BATCH_BUFFER_END (1 dword): returns from a batch buffer.
    pub const MI_BATCH_BUFFER_END: u32 = 0x0a;
    /// MI_DISPLAY_FLIP: display control; privileged.
    pub const MI_DISPLAY_FLIP: u32 = 0x14;
    /// MI_SET_CONTEXT: switches the hardware context; privileged.
    pub const MI_SET_CONTEXT: u32 = 0x18;
    /// MI_SEMAPHORE_SIGNAL: writes another engine's registers; privileged.
    pub const MI_SEMAPHORE_SIGNAL: u32 = 0x1b;
    /// MI_SEMAPHORE_WAIT: polls memory.
    pub const MI_SEMAPHORE_WAIT: u32 = 0x1c;
    /// MI_STORE_DATA_IMM: stores 1 or 2 immediate dwords to memory.
    pub const MI_STORE_DATA_IMM: u32 = 0x20;
    /// MI_STORE_DATA_INDEX: stores into the hardware status page.
    pub const MI_STORE_DATA_INDEX: u32 = 0x21;
    /// MI_LOAD_REGISTER_IMM: writes registers; privileged.
    pub const MI_LOAD_REGISTER_IMM: u32 = 0x22;
    /// MI_UPDATE_GTT: writes GTT entries; privileged.
    pub const MI_UPDATE_GTT: u32 = 0x23;
    /// MI_STORE_REGISTER_MEM: copies a register to memory.
    pub const MI_STORE_REGISTER_MEM: u32 = 0x24;
    /// MI_FLUSH_DW: flush with an optional post-sync write.
    pub const MI_FLUSH_DW: u32 = 0x26;
    /// MI_LOAD_REGISTER_MEM: loads a register from memory; privileged.
    pub const MI_LOAD_REGISTER_MEM: u32 = 0x29;
    /// MI_LOAD_REGISTER_REG: copies register to register; privileged.
    pub const MI_LOAD_REGISTER_REG: u32 = 0x2a;
    /// MI_BATCH_BUFFER_START: runs commands from a batch buffer.
    pub const MI_BATCH_BUFFER_START: u32 = 0x31;

    /// MI_STORE_DATA_IMM bit 22: "Use Global GTT" (else per-process GTT).
    pub const SDI_USE_GLOBAL_GTT: u32 = 1 << 22;
    /// MI_STORE_DATA_IMM bit 21: "Store Qword" (two data dwords).
    pub const SDI_STORE_QWORD: u32 = 1 << 21;
    /// MI_STORE_DATA_IMM bits 9:0: DWord Length (2 = one dword, 3 = qword).
    pub const SDI_LENGTH_MASK: u32 = 0x3ff;

    /// MI_BATCH_BUFFER_START bit 22: "Second Level Batch Buffer" (a call
    /// that returns at MI_BATCH_BUFFER_END; without it, a jump).
    pub const BBS_SECOND_LEVEL: u32 = 1 << 22;
    /// MI_BATCH_BUFFER_START bit 8: "Address Space Indicator" (1 = PPGTT).
    pub const BBS_PPGTT: u32 = 1 << 8;
    /// MI_BATCH_BUFFER_START bits 7:0: DWord Length (1: 3 dwords, 48-bit address).
    pub const BBS_LENGTH_MASK: u32 = 0xff;
    /// MI_LOAD_REGISTER_IMM bits 7:0: DWord Length (2n − 1 for n registers).
    pub const LRI_LENGTH_MASK: u32 = 0xff;

    /// XY_COLOR_BLT: fills a rectangle with a solid colour (7 dwords).
    pub const XY_COLOR_BLT: u32 = 0x50;
    /// XY_SRC_COPY_BLT: copies a rectangle (10 dwords).
    pub const XY_SRC_COPY_BLT: u32 = 0x53;
    /// 2D header bits 7:0: DWord Length.
    pub const BLT_LENGTH_MASK: u32 = 0xff;
    /// 2D header bit 21: write the alpha channel (32 bpp).
    pub const BLT_WRITE_ALPHA: u32 = 1 << 21;
    /// 2D header bit 20: write the RGB channels (32 bpp).
    pub const BLT_WRITE_RGB: u32 = 1 << 20;
    /// 2D header bit 15: source is tiled (XY_SRC_COPY_BLT).
    pub const BLT_SRC_TILED: u32 = 1 << 15;
    /// 2D header bit 11: destination is tiled.
    pub const BLT_DST_TILED: u32 = 1 << 11;
    /// Blit dword 1 bit 30: clipping enabled (only ever shrinks the blit).
    pub const BLT_CLIPPING: u32 = 1 << 30;
    /// Blit dword 1 bits 25:24: colour depth.
    pub const BLT_DEPTH_SHIFT: u32 = 24;
    /// Colour depth field mask (after shifting).
    pub const BLT_DEPTH_MASK: u32 = 0x3;
    /// Blit dword 1 bits 23:16: raster operation.
    pub const BLT_ROP_MASK: u32 = 0xff << 16;
    /// Blit dword 1 / source pitch dword bits 15:0: pitch in bytes (linear).
    pub const BLT_PITCH_MASK: u32 = 0xffff;

    /// Bytes per pixel for each colour depth code: 8 bpp, 16 bpp 565,
    /// 16 bpp 1555, 32 bpp.
    pub const BLT_BYTES_PER_PIXEL: [u32; 4] = [1, 2, 2, 4];

    /// Dwords in each command the model implements (DWord Length + 2).
    pub const MI_STORE_DATA_IMM_DWORDS: usize = 4;
    /// MI_STORE_DATA_IMM with Store Qword.
    pub const MI_STORE_DATA_IMM_QWORD_DWORDS: usize = 5;
    /// MI_BATCH_BUFFER_START (gen8, 48-bit address).
    pub const MI_BATCH_BUFFER_START_DWORDS: usize = 3;
    /// XY_COLOR_BLT (gen8, 48-bit address).
    pub const XY_COLOR_BLT_DWORDS: usize = 7;
    /// XY_SRC_COPY_BLT (gen8, 48-bit addresses).
    pub const XY_SRC_COPY_BLT_DWORDS: usize = 10;

    /// Graphics addresses are 48 bits: the high address dword holds 47:32.
    pub const ADDRESS_HIGH_MASK: u32 = 0xffff;

    /// The client of a command header.
    pub const fn client(header: u32) -> u32 {
        header >> CLIENT_SHIFT
    }

    /// The MI opcode of an MI header.
    pub const fn mi_opcode(header: u32) -> u32 {
        (header >> MI_OPCODE_SHIFT) & MI_OPCODE_MASK
    }

    /// The 2D opcode of a blitter header.
    pub const fn blt_opcode(header: u32) -> u32 {
        (header >> BLT_OPCODE_SHIFT) & BLT_OPCODE_MASK
    }

    /// An MI header with `opcode` and `flags` (flags include the length).
    pub const fn mi(opcode: u32, flags: u32) -> u32 {
        (CLIENT_MI << CLIENT_SHIFT) | (opcode << MI_OPCODE_SHIFT) | flags
    }

    /// A 2D header with `opcode` and `flags` (flags include the length).
    pub const fn blt(opcode: u32, flags: u32) -> u32 {
        (CLIENT_2D << CLIENT_SHIFT) | (opcode << BLT_OPCODE_SHIFT) | flags
    }
}

/// Per-process GTT (PPGTT): gen8 4-level page tables (PRM Vol. 5 *Memory
/// Views*, "Per-Process GTT", 48-bit addresses), in memory, 512 64-bit entries
/// per 4 KiB table: PML4 (address bits 47:39), PDP (38:30), PD (29:21), PT
/// (20:12).
///
/// - Every entry: bit 0 [`PRESENT`]; bits 38:12 the page address
///   ([`gtt::ADDRESS_MASK`]).
/// - A PD entry with [`PS_2M`] (bit 7, gen8 `GEN8_PDE_PS_2M`) maps 2 MiB
///   directly; its address is 2 MiB aligned. Bit 7 means nothing at the other
///   levels.
/// - A leaf (PT entry, or PD entry with [`PS_2M`]) with [`LOCAL_MEMORY`]
///   (bit 11, gen12 `GEN12_PPGTT_PTE_LM`) addresses local memory; table
///   pointers always address RAM.
///
/// Context selection (gen8 "legacy ring" mode): the ring loads the PML4's
/// address into [`PDP0_LDW`] / [`PDP0_UDW`] with MI_LOAD_REGISTER_IMM, then
/// starts a batch with [`cmd::BBS_PPGTT`]. Such a batch is non-privileged:
/// it is fetched through the PPGTT, every address in it is a PPGTT address
/// (MI_STORE_DATA_IMM's "Use Global GTT" bit is ignored), the batches it
/// calls or chains to are PPGTT batches too, and MI_LOAD_REGISTER_IMM in it
/// faults ([`FAULT_PRIVILEGED`]).
///
/// Under Bulkhead the guest loads the guest-physical address of its PML4
/// (its own RAM); the mediator replaces it with its shadow's address.
pub mod ppgtt {
    /// Bytes in one entry.
    pub const ENTRY_SIZE: u64 = 8;
    /// Entries in one table page.
    pub const ENTRIES: usize = 512;
    /// Bytes a PT entry maps.
    pub const PAGE_SIZE: u64 = 4096;
    /// Bytes a PD entry with [`PS_2M`] maps.
    pub const LARGE_PAGE_SIZE: u64 = 2 << 20;
    /// Levels: PML4, PDP, PD, PT.
    pub const LEVELS: usize = 4;
    /// Graphics addresses are below this.
    pub const ADDRESS_LIMIT: u64 = 1 << 48;
    /// Bit 0: present.
    pub const PRESENT: u64 = 1 << 0;
    /// Bit 7 of a PD entry: a 2 MiB page.
    pub const PS_2M: u64 = 1 << 7;
    /// Bit 11 of a leaf: the page is in local memory.
    pub const LOCAL_MEMORY: u64 = 1 << 11;
    /// Bits 38:12: the page (or table) address.
    pub const ADDRESS_MASK: u64 = super::gtt::ADDRESS_MASK;
    /// Level numbers, for [`index`].
    pub const PML4: usize = 0;
    /// Page-directory-pointer level.
    pub const PDP: usize = 1;
    /// Page-directory level.
    pub const PD: usize = 2;
    /// Page-table level.
    pub const PT: usize = 3;
    /// Blitter ring PDP0 lower dword (gen8 `GEN8_RING_PDP_LDW(0)`: ring base + 0x270).
    pub const PDP0_LDW: u32 = 0x22270;
    /// Blitter ring PDP0 upper dword (ring base + 0x274).
    pub const PDP0_UDW: u32 = 0x22274;
    /// Model fault code: a privileged command (MI_LOAD_REGISTER_IMM) in a
    /// non-privileged (PPGTT) batch.
    pub const FAULT_PRIVILEGED: u32 = 9;
    /// Model fault code: MI_LOAD_REGISTER_IMM of a register the model does
    /// not let commands load (only [`PDP0_LDW`] / [`PDP0_UDW`]).
    pub const FAULT_FORBIDDEN_REGISTER: u32 = 10;

    /// Bytes one entry of `level` maps (PML4 512 GiB ... PT 4 KiB).
    pub const fn entry_span(level: usize) -> u64 {
        PAGE_SIZE << (9 * (LEVELS - 1 - level))
    }

    /// Index into the table of `level` for graphics address `address`.
    pub const fn index(address: u64, level: usize) -> usize {
        ((address / entry_span(level)) % ENTRIES as u64) as usize
    }

    /// The address an entry holds.
    pub const fn entry_address(entry: u64) -> u64 {
        entry & ADDRESS_MASK
    }

    /// Whether `entry` at `level` is a leaf (PT entry, or 2 MiB PD entry).
    pub const fn is_leaf(entry: u64, level: usize) -> bool {
        level == PT || (level == PD && entry & PS_2M != 0)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn indices_split_a_48_bit_address() {
            let address = (3 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0x123;
            assert_eq!([index(address, PML4), index(address, PDP), index(address, PD), index(address, PT)], [3, 5, 7, 9]);
            assert_eq!(entry_span(PD), LARGE_PAGE_SIZE);
            assert_eq!(entry_span(PML4), 512 << 30);
            assert!(is_leaf(PS_2M, PD) && !is_leaf(PS_2M, PDP) && is_leaf(0, PT));
        }
    }
}

/// The virtual GPU a partition sees (DESIGN.md §5): a PCI function in its
/// virtual configuration space with a trapped register BAR and a memory BAR
/// over its share of the GPU's local memory. Guest drivers and the
/// hypervisor's mediator both use these numbers.
///
/// Register BAR (BAR0, 2 MiB, trapped), 32-bit registers unless noted:
///
/// | offset | name | access | meaning |
/// |---|---|---|---|
/// | 0x0000 | GPU_ID | RO | `"BHGP"` |
/// | 0x0004 | GPU_VERSION | RO | 1 |
/// | 0x0008/0x000c | LMEM_SIZE_LO/HI | RO | bytes of local memory in BAR2 |
/// | 0x0010 | GTT_BASE | RO | offset of its GTT in this BAR (0x10_0000) |
/// | 0x0014 | GTT_SIZE | RO | entries in its GTT |
/// | 0x0100 | INT_STATUS | RW1C | [`INT_USER`], [`INT_FAULT`], [`INT_REJECTED`] |
/// | 0x0104 | INT_ENABLE | RW | status bits that raise its interrupt |
/// | 0x0108 | SEQNO | RO | +1 per completed MI_USER_INTERRUPT of its own |
/// | 0x0200.. | FAULT_* | RO, FAULT_STATUS W0 | a GPU fault while running its work (model codes) |
/// | 0x0300/0x0304 | CONTEXT_RELEASE_LO/HI | WO | drop the shadow of a PML4 it no longer uses |
/// | 0x1000.. | information page | RO | see `INFO_*` |
/// | 0x22030 | RING_TAIL | RW | writing it submits `[RING_HEAD, RING_TAIL)` |
/// | 0x22034 | RING_HEAD | RO | advanced when submitted work completes or is rejected |
/// | 0x22038 | RING_START | RW | graphics address of its ring (inside its range, 4 KiB aligned) |
/// | 0x2203c | RING_CTL | RW | bit 0 enable, bits 12..20 pages − 1 |
/// | 0x10_0000.. | GTT | RW, 4 or 8 bytes | its own GTT entries, read back as written |
///
/// GTT entries: bit 0 present; bit 1 [`GTT_LOCAL_MEMORY`]: the page address
/// (bits 12..38) is an offset into its BAR2 local memory; else it is a
/// guest-physical address of its own RAM. Entries naming anything else
/// are pointed at a scratch page (and counted in [`INFO_GTT_REFUSED`]).
/// Entry `i` translates graphics address `INFO_GRAPHICS_BASE + i * 4096`;
/// commands must use graphics addresses inside
/// `[INFO_GRAPHICS_BASE, INFO_GRAPHICS_BASE + GTT_SIZE * 4096)`.
pub mod vgpu {
    /// PCI vendor ID of the virtual function ("BH", a private ID: the
    /// function exists only inside Bulkhead partitions).
    pub const VENDOR_ID: u16 = 0x4248;
    /// PCI device ID of the virtual function.
    pub const DEVICE_ID: u16 = 0x0001;
    /// PCI class code (display controller, other).
    pub const CLASS_CODE: u32 = 0x03_80_00;
    /// Size of the register BAR (BAR0).
    pub const REGISTER_BAR_SIZE: u64 = 2 << 20;

    /// "BHGP".
    pub const GPU_ID: u64 = 0x0000;
    /// Value of [`GPU_ID`].
    pub const GPU_ID_VALUE: u32 = u32::from_le_bytes(*b"BHGP");
    /// Interface version.
    pub const GPU_VERSION: u64 = 0x0004;
    /// Value of [`GPU_VERSION`].
    pub const GPU_VERSION_VALUE: u32 = 1;
    /// Local memory bytes, low half.
    pub const LMEM_SIZE_LO: u64 = 0x0008;
    /// Local memory bytes, high half.
    pub const LMEM_SIZE_HI: u64 = 0x000c;
    /// Offset of the GTT in the register BAR.
    pub const GTT_BASE: u64 = 0x0010;
    /// Entries in the partition's GTT.
    pub const GTT_SIZE: u64 = 0x0014;
    /// Interrupt status; write 1s to clear.
    pub const INT_STATUS: u64 = 0x0100;
    /// Interrupt enable.
    pub const INT_ENABLE: u64 = 0x0104;
    /// Completed MI_USER_INTERRUPTs of this partition.
    pub const SEQNO: u64 = 0x0108;
    /// INT_STATUS bit 0: work with MI_USER_INTERRUPT completed.
    pub const INT_USER: u32 = 1 << 0;
    /// INT_STATUS bit 1: the GPU faulted on this partition's work (FAULT_*).
    pub const INT_FAULT: u32 = 1 << 1;
    /// INT_STATUS bit 2: the mediator rejected a submission (INFO_SUBMIT_*).
    pub const INT_REJECTED: u32 = 1 << 2;
    /// GPU fault code (the model's codes); write 0 to clear.
    pub const FAULT_STATUS: u64 = 0x0200;
    /// Header of the faulting command.
    pub const FAULT_COMMAND: u64 = 0x0204;
    /// Faulting graphics address, low half.
    pub const FAULT_ADDRESS_LO: u64 = 0x0208;
    /// Faulting graphics address, high half.
    pub const FAULT_ADDRESS_HI: u64 = 0x020c;

    /// Information page: "BHVI".
    pub const INFO_MAGIC: u64 = 0x1000;
    /// Value of [`INFO_MAGIC`].
    pub const INFO_MAGIC_VALUE: u32 = u32::from_le_bytes(*b"BHVI");
    /// Graphics address of its GTT entry 0, low half.
    pub const INFO_GRAPHICS_BASE_LO: u64 = 0x1008;
    /// Graphics address of its GTT entry 0, high half.
    pub const INFO_GRAPHICS_BASE_HI: u64 = 0x100c;
    /// Its interrupt: the SPI INTID on arm64, the I/O APIC pin on x86_64.
    pub const INFO_INTERRUPT: u64 = 0x1018;
    /// Reason code of the last rejected submission (0: none); see `REJECT_*`.
    pub const INFO_SUBMIT_ERROR: u64 = 0x1020;
    /// Byte offset in its ring of the rejected command.
    pub const INFO_SUBMIT_ERROR_OFFSET: u64 = 0x1024;
    /// Header dword of the rejected command.
    pub const INFO_SUBMIT_ERROR_HEADER: u64 = 0x1028;
    /// Submissions rejected so far.
    pub const INFO_REJECTED: u64 = 0x102c;
    /// Submissions accepted so far.
    pub const INFO_SUBMITTED: u64 = 0x1030;
    /// GTT writes that were pointed at the scratch page so far.
    pub const INFO_GTT_REFUSED: u64 = 0x1034;

    /// Ring tail (write: submit).
    pub const RING_TAIL: u64 = 0x22030;
    /// Ring head.
    pub const RING_HEAD: u64 = 0x22034;
    /// Ring start (graphics address).
    pub const RING_START: u64 = 0x22038;
    /// Ring control.
    pub const RING_CTL: u64 = 0x2203c;
    /// RING_CTL bit 0.
    pub const RING_CTL_ENABLE: u32 = 1 << 0;
    /// RING_CTL bits 12..20: ring pages − 1.
    pub const RING_CTL_PAGES_MASK: u32 = 0x001f_f000;
    /// RING_HEAD / RING_TAIL byte offset bits.
    pub const RING_OFFSET_MASK: u32 = 0x001f_fffc;

    /// Offset of the GTT in the register BAR.
    pub const GTT_OFFSET: u64 = 0x10_0000;
    /// GTT entry bit 1: the page is in local memory (gen12 `GGTT_PTE_LM`).
    pub const GTT_LOCAL_MEMORY: u64 = 1 << 1;

    /// Rejection: a command the mediator does not allow (privileged or unknown).
    pub const REJECT_FORBIDDEN: u32 = 1;
    /// Rejection: a command addresses memory outside the partition's share.
    pub const REJECT_OUTSIDE_SHARE: u32 = 2;
    /// Rejection: a malformed command (length, depth, truncated).
    pub const REJECT_MALFORMED: u32 = 3;
    /// Rejection: batch nesting or the scan budget exceeded.
    pub const REJECT_TOO_DEEP: u32 = 4;
    /// Rejection: the ring registers are invalid (disabled, start outside
    /// its range, tail beyond the ring, unaligned).
    pub const REJECT_RING: u32 = 5;
    /// Rejection: too much work already queued for this partition.
    pub const REJECT_BUSY: u32 = 6;
    /// Rejection: a PPGTT batch with no PDP0 load before it in the same
    /// submission, or a PML4 address that is not a page of its own RAM (or
    /// is already one of its tables at a lower level). A register load that
    /// is not exactly the pair `PDP0_UDW`/`PDP0_LDW` in the ring is
    /// [`REJECT_FORBIDDEN`].
    pub const REJECT_CONTEXT: u32 = 7;
    /// Rejection: its shadow page-table pages are used up (see
    /// [`INFO_PT_SHADOW_PAGES`]); release contexts it no longer uses.
    pub const REJECT_SHADOW_FULL: u32 = 8;

    /// Trapped CPU writes to its GPU page-table pages so far (each store
    /// instruction counts once).
    pub const INFO_PT_TRAPS: u64 = 0x1038;
    /// Guest pages currently write-protected as GPU page tables.
    pub const INFO_PT_TRACKED: u64 = 0x103c;
    /// Per-process entries pointed at scratch so far (leaf or table pointer
    /// naming anything but its own memory, or a page-table page).
    pub const INFO_PT_REFUSED: u64 = 0x1040;
    /// Shadow page-table pages in use.
    pub const INFO_PT_SHADOW_PAGES: u64 = 0x1044;
    /// Shadow page-table pages it may use at most.
    pub const INFO_PT_SHADOW_LIMIT: u64 = 0x1048;
    /// Write the guest-physical address of a PML4 it will no longer submit
    /// (low half, then [`CONTEXT_RELEASE_HI`]): the shadow tree is dropped,
    /// its pages unprotected (the gen8 GVT-g "PPGTT destroy" notification).
    pub const CONTEXT_RELEASE_LO: u64 = 0x0300;
    /// High half; writing it performs the release.
    pub const CONTEXT_RELEASE_HI: u64 = 0x0304;
}

/// Encoders for the commands the hypervisor, the test guests and the
/// benchmark emit (gen8 layouts, PRM Vol. 2a): 32 bpp linear surfaces,
/// rectangles `x2`/`y2` exclusive, 48-bit graphics addresses split into a
/// low dword and a high dword (bits 47:32). Pure `const fn`s.
pub mod encode {
    use super::cmd;

    /// BR13 bits 23:16: the raster operation ([`cmd::BLT_ROP_MASK`]).
    const ROP_SHIFT: u32 = 16;
    /// ROP PATCOPY (destination = colour), the one XY_COLOR_BLT takes.
    pub const ROP_PATCOPY: u32 = 0xf0;
    /// ROP SRCCOPY (destination = source), the one XY_SRC_COPY_BLT takes.
    pub const ROP_SRCCOPY: u32 = 0xcc;
    /// Colour depth code for 32 bpp.
    pub const DEPTH_32: u32 = 3;
    /// Bytes per pixel at [`DEPTH_32`].
    pub const BYTES_PER_PIXEL_32: u32 = cmd::BLT_BYTES_PER_PIXEL[DEPTH_32 as usize];
    /// "DWord Length" is the command's total dwords minus this.
    const LENGTH_BIAS: usize = 2;

    /// A 32 bpp linear surface in graphics memory.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Surface {
        /// Graphics address of pixel (0, 0).
        pub address: u64,
        /// Bytes per row (a 16-bit field; the model takes 0..=0x7fff).
        pub pitch: u32,
    }

    /// A rectangle of pixels, `x2`/`y2` exclusive (as in the XY_ blits).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Rect {
        /// Left.
        pub x1: u16,
        /// Top.
        pub y1: u16,
        /// Right (exclusive).
        pub x2: u16,
        /// Bottom (exclusive).
        pub y2: u16,
    }

    impl Rect {
        /// `(0, 0)` to `(width, height)`.
        pub const fn sized(width: u16, height: u16) -> Rect {
            Rect { x1: 0, y1: 0, x2: width, y2: height }
        }

        /// Whether pixel `(x, y)` is inside.
        pub const fn contains(&self, x: u32, y: u32) -> bool {
            x >= self.x1 as u32 && x < self.x2 as u32 && y >= self.y1 as u32 && y < self.y2 as u32
        }
    }

    const fn point(x: u16, y: u16) -> u32 {
        ((y as u32) << 16) | x as u32
    }

    const fn low(address: u64) -> u32 {
        address as u32
    }

    const fn high(address: u64) -> u32 {
        (address >> 32) as u32 & cmd::ADDRESS_HIGH_MASK
    }

    const fn length(dwords: usize) -> u32 {
        (dwords - LENGTH_BIAS) as u32
    }

    const fn br13(rop: u32, pitch: u32) -> u32 {
        (DEPTH_32 << cmd::BLT_DEPTH_SHIFT) | (rop << ROP_SHIFT) | (pitch & cmd::BLT_PITCH_MASK)
    }

    /// MI_NOOP.
    pub const fn mi_noop() -> u32 {
        cmd::mi(cmd::MI_NOOP, 0)
    }

    /// MI_USER_INTERRUPT: bumps SEQNO and raises INT_STATUS.USER.
    pub const fn mi_user_interrupt() -> u32 {
        cmd::mi(cmd::MI_USER_INTERRUPT, 0)
    }

    /// MI_STORE_DATA_IMM of one dword at `address` (global GTT).
    pub const fn mi_store_data_imm(address: u64, value: u32) -> [u32; cmd::MI_STORE_DATA_IMM_DWORDS] {
        [
            cmd::mi(cmd::MI_STORE_DATA_IMM, cmd::SDI_USE_GLOBAL_GTT | length(cmd::MI_STORE_DATA_IMM_DWORDS)),
            low(address),
            high(address),
            value,
        ]
    }

    /// The ring commands that select a per-process context: load PDP0 with
    /// the PML4 address `pml4` (upper dword first, as i915 does).
    pub const fn load_pdp0(pml4: u64) -> [u32; 5] {
        [
            cmd::mi(cmd::MI_LOAD_REGISTER_IMM, length(5)),
            super::ppgtt::PDP0_UDW,
            (pml4 >> 32) as u32,
            super::ppgtt::PDP0_LDW,
            pml4 as u32,
        ]
    }
    /// MI_BATCH_BUFFER_START of a first-level batch at `address`, in the
    /// global GTT or (`ppgtt`) the per-process GTT PDP0 selects.
    pub const fn mi_batch_buffer_start(address: u64, ppgtt: bool) -> [u32; cmd::MI_BATCH_BUFFER_START_DWORDS] {
        let space = if ppgtt { cmd::BBS_PPGTT } else { 0 };
        [cmd::mi(cmd::MI_BATCH_BUFFER_START, space | length(cmd::MI_BATCH_BUFFER_START_DWORDS)), low(address), high(address)]
    }
    /// MI_BATCH_BUFFER_END.
    pub const fn mi_batch_buffer_end() -> u32 {
        cmd::mi(cmd::MI_BATCH_BUFFER_END, 0)
    }
    /// MI_LOAD_REGISTER_IMM of one register (privileged: the mediator refuses it).
    pub const fn mi_load_register_imm(register: u32, value: u32) -> [u32; 3] {
        [cmd::mi(cmd::MI_LOAD_REGISTER_IMM, 1), register, value]
    }

    /// XY_COLOR_BLT: fills `rect` of `dst` (32 bpp) with `color`.
    pub const fn xy_color_blt(dst: Surface, rect: Rect, color: u32) -> [u32; cmd::XY_COLOR_BLT_DWORDS] {
        [
            cmd::blt(cmd::XY_COLOR_BLT, cmd::BLT_WRITE_ALPHA | cmd::BLT_WRITE_RGB | length(cmd::XY_COLOR_BLT_DWORDS)),
            br13(ROP_PATCOPY, dst.pitch),
            point(rect.x1, rect.y1),
            point(rect.x2, rect.y2),
            low(dst.address),
            high(dst.address),
            color,
        ]
    }

    /// XY_SRC_COPY_BLT: copies the `rect`-sized rectangle at (`src_x`,
    /// `src_y`) of `src` onto `rect` of `dst` (32 bpp).
    pub const fn xy_src_copy_blt(dst: Surface, rect: Rect, src: Surface, src_x: u16, src_y: u16) -> [u32; cmd::XY_SRC_COPY_BLT_DWORDS] {
        [
            cmd::blt(cmd::XY_SRC_COPY_BLT, cmd::BLT_WRITE_ALPHA | cmd::BLT_WRITE_RGB | length(cmd::XY_SRC_COPY_BLT_DWORDS)),
            br13(ROP_SRCCOPY, dst.pitch),
            point(rect.x1, rect.y1),
            point(rect.x2, rect.y2),
            low(dst.address),
            high(dst.address),
            point(src_x, src_y),
            src.pitch & cmd::BLT_PITCH_MASK,
            low(src.address),
            high(src.address),
        ]
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn encodings_match_the_gen8_layouts() {
            // Values as i915 / the model's decoder tests write them.
            assert_eq!(mi_user_interrupt(), 0x0100_0000);
            assert_eq!(mi_store_data_imm(0x1_0000_1000, 7), [0x1040_0002, 0x1000, 0x1, 7]);
            assert_eq!(mi_store_data_imm(0x2_0000_1000, 7), [0x1040_0002, 0x1000, 2, 7]);
            assert_eq!(cmd::mi_opcode(mi_load_register_imm(0x2030, 0)[0]), cmd::MI_LOAD_REGISTER_IMM);
            assert_eq!(mi_load_register_imm(0x2030, 9), [0x1100_0001, 0x2030, 9]);
            assert_eq!(load_pdp0(0x1_2345_6000), [0x1100_0003, 0x22274, 1, 0x22270, 0x2345_6000]);
            assert_eq!(mi_batch_buffer_start(0x1_0000_2000, true), [0x1880_0101, 0x2000, 1]);
            assert_eq!(mi_batch_buffer_start(0x2000, false), [0x1880_0001, 0x2000, 0]);
            let dst = Surface { address: 0x3000, pitch: 256 };
            let fill = xy_color_blt(dst, Rect { x1: 1, y1: 2, x2: 3, y2: 4 }, 0xff);
            assert_eq!(fill, [0x5430_0005, 0x03f0_0100, 0x0002_0001, 0x0004_0003, 0x3000, 0, 0xff]);
            let src = Surface { address: 0x4000, pitch: 32 };
            let copy = xy_src_copy_blt(dst, Rect { x1: 0, y1: 0, x2: 1, y2: 1 }, src, 6, 5);
            assert_eq!(copy, [0x54f0_0008, 0x03cc_0100, 0, 0x0001_0001, 0x3000, 0, 0x0005_0006, 32, 0x4000, 0]);
            let dst = Surface { address: 0x1_2345_6000, pitch: 512 };
            let fill = xy_color_blt(dst, Rect { x1: 1, y1: 2, x2: 3, y2: 4 }, 0xff00_00ff);
            assert_eq!(fill, [0x5430_0005, 0x03f0_0200, 0x0002_0001, 0x0004_0003, 0x2345_6000, 0x1, 0xff00_00ff]);
            let src = Surface { address: 0x8000, pitch: 1024 };
            let copy = xy_src_copy_blt(dst, Rect::sized(16, 8), src, 5, 6);
            assert_eq!(copy, [0x54f0_0008, 0x03cc_0200, 0, 0x0008_0010, 0x2345_6000, 0x1, 0x0006_0005, 1024, 0x8000, 0]);
            assert_eq!(cmd::blt_opcode(fill[0]), cmd::XY_COLOR_BLT);
            assert_eq!(cmd::blt_opcode(copy[0]), cmd::XY_SRC_COPY_BLT);
        }
    }
}

/// The GPU blit benchmark's workload, in one place for both of its sides:
/// the hypervisor's direct run (its own driver on the real GTT and ring)
/// and the guest's mediated run (`gpu-bench` through its virtual GPU).
/// Both do exactly this:
///
/// - two 32 bpp linear surfaces of [`WIDTH`] × [`HEIGHT`] pixels, pitch
///   [`PITCH`], both in GPU local memory: the source at local-memory offset
///   [`SOURCE_OFFSET`], the destination at [`DESTINATION_OFFSET`] (offsets
///   into the local memory the runner owns: the whole of it for the direct
///   side, its BAR2 share for a partition), mapped through consecutive GTT
///   entries;
/// - [`BLITS`] XY_SRC_COPY_BLT (ROP 0xCC) of the whole source onto the
///   whole destination, issued in [`SUBMISSIONS`] submissions of
///   [`BLITS_PER_SUBMISSION`] blits each, every submission followed by one
///   MI_USER_INTERRUPT in the same ring write (one RING_TAIL write per
///   submission); the next submission is written after the previous one's
///   completion interrupt;
/// - timed from the first submission's RING_TAIL write to the last
///   completion, reported per blit.
pub mod bench {
    /// Blits in one measurement.
    pub const BLITS: u32 = 64;
    /// Surface width in pixels.
    pub const WIDTH: u32 = 256;
    /// Surface height in rows.
    pub const HEIGHT: u32 = 256;
    /// Bytes per pixel (32 bpp, colour depth code 3).
    pub const BYTES_PER_PIXEL: u32 = crate::gpu::encode::BYTES_PER_PIXEL_32;
    /// Bytes per row.
    pub const PITCH: u32 = WIDTH * BYTES_PER_PIXEL;
    /// Bytes of one surface, and bytes one blit copies.
    pub const SURFACE_BYTES: u64 = PITCH as u64 * HEIGHT as u64;
    /// Blits per submission (one RING_TAIL write, one completion interrupt).
    pub const BLITS_PER_SUBMISSION: u32 = 16;
    /// Submissions in one measurement.
    pub const SUBMISSIONS: u32 = BLITS / BLITS_PER_SUBMISSION;
    /// Local-memory offset of the source surface.
    pub const SOURCE_OFFSET: u64 = 0;
    /// Local-memory offset of the destination surface.
    pub const DESTINATION_OFFSET: u64 = SURFACE_BYTES;
    /// Local memory the workload needs.
    pub const LOCAL_MEMORY_BYTES: u64 = DESTINATION_OFFSET + SURFACE_BYTES;
    /// GTT entries the two surfaces need.
    pub const GTT_ENTRIES: u64 = LOCAL_MEMORY_BYTES / super::gtt::PAGE_SIZE;
    /// GTT entry writes timed by the guest's trapped-GTT-write measurement.
    pub const GTT_WRITES: u32 = 1024;

    /// Dwords of one submission: its blits, MI_USER_INTERRUPT, and MI_NOOP
    /// padding to a qword (RING_TAIL is qword aligned).
    pub const SUBMISSION_DWORDS: usize =
        (BLITS_PER_SUBMISSION as usize * super::cmd::XY_SRC_COPY_BLT_DWORDS + 1).next_multiple_of(2);

    /// One submission's commands, for surfaces at graphics addresses
    /// `source` and `destination`: [`BLITS_PER_SUBMISSION`] whole-surface
    /// copies source → destination, MI_USER_INTERRUPT, padding.
    pub fn submission(source: u64, destination: u64) -> [u32; SUBMISSION_DWORDS] {
        use super::encode::{Rect, Surface, mi_noop, mi_user_interrupt, xy_src_copy_blt};
        let surface = |address| Surface { address, pitch: PITCH };
        let copy = xy_src_copy_blt(surface(destination), Rect::sized(WIDTH as u16, HEIGHT as u16), surface(source), 0, 0);
        let mut dwords = [mi_noop(); SUBMISSION_DWORDS];
        for (slot, dword) in dwords.iter_mut().zip(copy.iter().cycle().take(BLITS_PER_SUBMISSION as usize * copy.len())) {
            *slot = *dword;
        }
        dwords[BLITS_PER_SUBMISSION as usize * copy.len()] = mi_user_interrupt();
        dwords
    }

    const _: () = assert!(BLITS.is_multiple_of(BLITS_PER_SUBMISSION), "whole submissions");
    const _: () = assert!(SURFACE_BYTES.is_multiple_of(super::gtt::PAGE_SIZE), "whole pages");
    const _: () = assert!(WIDTH <= 0x7fff && HEIGHT <= 0x7fff && PITCH <= 0x7fff, "fits the blit fields");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_benchmark_submission_is_its_copies_then_one_user_interrupt() {
        let dwords = bench::submission(0x1000, 0x9_0000);
        let copies = bench::BLITS_PER_SUBMISSION as usize;
        for i in 0..copies {
            let blit = &dwords[i * cmd::XY_SRC_COPY_BLT_DWORDS..(i + 1) * cmd::XY_SRC_COPY_BLT_DWORDS];
            assert_eq!(cmd::blt_opcode(blit[0]), cmd::XY_SRC_COPY_BLT, "blit {i}");
            assert_eq!((blit[4], blit[8]), (0x9_0000, 0x1000), "destination, source");
        }
        let rest = &dwords[copies * cmd::XY_SRC_COPY_BLT_DWORDS..];
        assert_eq!(rest[0], encode::mi_user_interrupt());
        assert!(rest[1..].iter().all(|&d| d == encode::mi_noop()));
        assert!(bench::SUBMISSION_DWORDS.is_multiple_of(2));
    }

    #[test]
    fn gtt_entries_hold_39_bit_page_addresses() {
        assert_eq!(gtt::ADDRESS_MASK, 0x7f_ffff_f000);
        assert_eq!(gtt::present_entry(0x12_3456_7000), Some(0x12_3456_7001));
        assert_eq!(gtt::present_entry(0x80_0000_0000), None, "bit 39");
        assert_eq!(gtt::present_entry(0x1001), None, "unaligned");
        assert_eq!(gtt::entry_address(0xffff_ffff_ffff_ffff), 0x7f_ffff_f000);
    }

    #[test]
    fn headers_match_the_prm_encodings() {
        // Values as i915 emits them for gen8.
        assert_eq!(cmd::mi(cmd::MI_BATCH_BUFFER_START, 1), 0x1880_0001);
        assert_eq!(cmd::mi(cmd::MI_STORE_DATA_IMM, cmd::SDI_USE_GLOBAL_GTT | 2), 0x1040_0002);
        assert_eq!(cmd::mi(cmd::MI_USER_INTERRUPT, 0), 0x0100_0000);
        assert_eq!(cmd::mi(cmd::MI_BATCH_BUFFER_END, 0), 0x0500_0000);
        assert_eq!(cmd::blt(cmd::XY_COLOR_BLT, 5), 0x5400_0005);
        assert_eq!(cmd::blt(cmd::XY_SRC_COPY_BLT, 8), 0x54c0_0008);
        assert_eq!(cmd::mi_opcode(0x1100_0001), cmd::MI_LOAD_REGISTER_IMM);
        assert_eq!(cmd::blt_opcode(0x54c0_0008), cmd::XY_SRC_COPY_BLT);
    }

    #[test]
    fn the_bench_workload_is_whole_submissions_of_one_surface_each() {
        assert_eq!(bench::SURFACE_BYTES, 256 * 1024);
        assert_eq!(bench::SUBMISSIONS * bench::BLITS_PER_SUBMISSION, bench::BLITS);
        assert_eq!(bench::GTT_ENTRIES, 128);
    }
}
