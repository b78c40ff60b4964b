//! The command scanner: decides whether a partition's ring commands (and
//! the batch buffers they start) may run on the real GPU (DESIGN.md §5).
//!
//! Only the commands the GPU model implements are allowed (encodings in
//! [`bulkhead_abi::gpu::cmd`], gen8 PRM Vol. 2a): MI_NOOP,
//! MI_USER_INTERRUPT, MI_BATCH_BUFFER_START, MI_BATCH_BUFFER_END (in batches
//! only), MI_STORE_DATA_IMM, XY_COLOR_BLT and XY_SRC_COPY_BLT. Every byte
//! range a command touches is computed with checked arithmetic and must lie
//! inside one range of the partition's [`Share`] (graphics addresses).
//! Anything else — register writes, context switches, GTT updates, unknown
//! opcodes, flag bits the scanner does not model (tiling, per-process
//! addressing, negative pitches or coordinates), lengths that do not match
//! — is rejected with the place, the header and the reason.
//!
//! Per-process contexts (gen8 legacy ring mode, [`bulkhead_abi::gpu::ppgtt`]):
//! in the ring, and only there, MI_LOAD_REGISTER_IMM may load exactly the
//! pair PDP0_UDW / PDP0_LDW ([`Accepted::contexts`] says where, so the
//! mediator can put its shadow's address in), and MI_BATCH_BUFFER_START may
//! start a PPGTT batch once such a load came before it in the same scan.
//! PPGTT batches are not scanned: the GPU runs them non-privileged (no
//! register loads, every address through the per-process tables), and the
//! shadow tables let them reach only the partition's own memory.
//!
//! The scanner is strict where the hardware is lenient: it refuses what it
//! cannot bound rather than guessing. It never panics on guest data.
//!
//! The ring is given as one slice of dwords from head to tail: the caller
//! copies the guest's ring out (joining the two parts when it wraps), scans
//! that copy, and copies *the scanned copy* into the shadow ring, so the
//! guest cannot change commands after they were checked. Batch buffers are
//! read through [`BatchMemory`]; [`Accepted::batches`] lists what was
//! scanned so that the caller can make the GPU run exactly that (see the
//! module documentation of [`crate::gpu`]).

use alloc::vec;
use alloc::vec::Vec;
use bulkhead_abi::gpu::{cmd, ppgtt};
use core::fmt;
use core::ops::Range;

/// Batch-buffer nesting the scanner follows: the ring starts first-level
/// batches (depth 1), which may call second-level batches (depth 2), as on
/// gen8 hardware (PRM Vol. 2a, MI_BATCH_BUFFER_START "Second Level Batch
/// Buffer").
pub const MAX_BATCH_DEPTH: u8 = 2;

/// Dwords of batch buffers one scan reads at most, so that a batch that
/// chains to itself cannot make the scan loop (16 MiB of commands).
pub const MAX_SCAN_DWORDS: usize = 4 << 20;

/// Batch memory is fetched page by page: a batch need not be mapped beyond
/// its MI_BATCH_BUFFER_END.
const FETCH_BYTES: u64 = 4096;

/// The graphics addresses a partition's commands may touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    ranges: Vec<Range<u64>>,
}

impl Share {
    /// The partition's GTT range (its slice of graphics addresses, see
    /// [`super::gtt::VirtualGtt::graphics_range`]).
    pub fn new(gtt: Range<u64>) -> Share {
        Share { ranges: vec![gtt] }
    }

    /// Adds another allowed range (e.g. the partition's slice of local
    /// memory, where the GPU addresses it directly).
    pub fn with_range(mut self, range: Range<u64>) -> Share {
        self.ranges.push(range);
        self
    }

    /// Whether `[start, start + len)` lies inside one range (`len > 0`).
    pub fn contains(&self, start: u64, len: u64) -> bool {
        let Some(end) = start.checked_add(len) else { return false };
        len > 0 && self.ranges.iter().any(|r| r.start <= start && end <= r.end)
    }

    /// The end of the range holding `address`, if any.
    fn range_end(&self, address: u64) -> Option<u64> {
        self.ranges.iter().find(|r| r.contains(&address)).map(|r| r.end)
    }
}

/// Reads batch buffers: the caller resolves graphics addresses through the
/// partition's GTT (its pinned pages) and copies the dwords out.
pub trait BatchMemory {
    /// Fills `out` with the dwords at graphics address `address` (already
    /// checked to lie in the share); `false` if that memory is not mapped.
    fn read(&mut self, address: u64, out: &mut [u32]) -> bool;
}

impl<F: FnMut(u64, &mut [u32]) -> bool> BatchMemory for F {
    fn read(&mut self, address: u64, out: &mut [u32]) -> bool {
        self(address, out)
    }
}

/// Where a rejected command is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// In the ring, at this byte offset from the first dword scanned (the
    /// guest's head).
    Ring {
        /// Byte offset.
        offset: u64,
    },
    /// In a batch buffer, at this graphics address.
    Batch {
        /// The command's graphics address.
        address: u64,
        /// 1 for a batch started by the ring, 2 for a second-level batch.
        depth: u8,
    },
}

/// Why a command was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not a command the partition may use (not in the allowed list).
    Unknown,
    /// A privileged command; the text says what it would do.
    Privileged(&'static str),
    /// The DWord Length field does not match the command.
    BadLength {
        /// The field's value.
        found: u32,
    },
    /// Bits the scanner does not allow are set in dword `dword`.
    ReservedBits {
        /// Dword index within the command.
        dword: usize,
        /// The offending bits.
        bits: u32,
    },
    /// The command ends after the last dword given (a ring tail in the
    /// middle of a command).
    Truncated {
        /// Dwords the command needs.
        needed: usize,
        /// Dwords that were left.
        available: usize,
    },
    /// The command touches `[start, start + len)`, not inside the share.
    OutsideShare {
        /// First graphics address.
        start: u64,
        /// Bytes.
        len: u64,
    },
    /// The address arithmetic of the command overflows.
    Overflow,
    /// The address is not aligned as the command needs.
    Misaligned(u64),
    /// Per-process (PPGTT) addressing, which the scanner does not check.
    PerProcessAddressing,
    /// A tiled surface, whose footprint the scanner does not compute.
    Tiled,
    /// A pitch with bit 15 set (negative).
    NegativePitch,
    /// A coordinate with bit 15 set (negative).
    NegativeCoordinate,
    /// A blit rectangle with no pixels (x2 <= x1 or y2 <= y1).
    EmptyRectangle,
    /// MI_BATCH_BUFFER_END outside a batch buffer.
    BatchEndInRing,
    /// A second-level batch started from the ring or beyond
    /// [`MAX_BATCH_DEPTH`].
    NestingTooDeep,
    /// The batch runs past the end of the share without
    /// MI_BATCH_BUFFER_END.
    BatchLeavesShare {
        /// The first address outside.
        address: u64,
    },
    /// [`BatchMemory::read`] could not read the batch here.
    BatchUnreadable {
        /// The graphics address.
        address: u64,
    },
    /// The batches scanned exceed [`MAX_SCAN_DWORDS`] (e.g. a chain loop).
    ScanBudgetExceeded,
    /// A PPGTT batch with no PDP0 load before it in the same submission.
    NoContext,
}

/// A rejected command: where, which, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Where the command is.
    pub location: Location,
    /// Its header dword.
    pub header: u32,
    /// Why it was rejected.
    pub reason: Reason,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Location::Ring { offset } => write!(f, "ring offset {offset:#x}")?,
            Location::Batch { address, depth } => write!(f, "batch (level {depth}) at {address:#x}")?,
        }
        let header = self.header;
        match cmd::client(header) {
            cmd::CLIENT_MI => write!(f, ": header {header:#010x} (MI opcode {:#04x}): ", cmd::mi_opcode(header))?,
            cmd::CLIENT_2D => write!(f, ": header {header:#010x} (2D opcode {:#04x}): ", cmd::blt_opcode(header))?,
            client => write!(f, ": header {header:#010x} (client {client}): ")?,
        }
        match self.reason {
            Reason::Unknown => write!(f, "not an allowed command"),
            Reason::Privileged(what) => write!(f, "privileged: {what}"),
            Reason::BadLength { found } => write!(f, "DWord Length {found} does not match the command"),
            Reason::ReservedBits { dword, bits } => write!(f, "bits {bits:#x} of dword {dword} are not allowed"),
            Reason::Truncated { needed, available } => write!(f, "needs {needed} dwords, {available} left"),
            Reason::OutsideShare { start, len } => {
                write!(f, "touches {start:#x}..+{len:#x}, outside the partition's share")
            }
            Reason::Overflow => write!(f, "address arithmetic overflows"),
            Reason::Misaligned(address) => write!(f, "address {address:#x} is misaligned"),
            Reason::PerProcessAddressing => write!(f, "per-process (PPGTT) addressing is not allowed"),
            Reason::Tiled => write!(f, "tiled surfaces are not allowed"),
            Reason::NegativePitch => write!(f, "negative pitch"),
            Reason::NegativeCoordinate => write!(f, "negative coordinate"),
            Reason::EmptyRectangle => write!(f, "empty or inverted rectangle"),
            Reason::BatchEndInRing => write!(f, "MI_BATCH_BUFFER_END outside a batch"),
            Reason::NestingTooDeep => write!(f, "batch nesting deeper than {MAX_BATCH_DEPTH} levels"),
            Reason::BatchLeavesShare { address } => write!(f, "batch runs out of the share at {address:#x}"),
            Reason::BatchUnreadable { address } => write!(f, "batch memory at {address:#x} cannot be read"),
            Reason::ScanBudgetExceeded => write!(f, "more than {MAX_SCAN_DWORDS} batch dwords"),
            Reason::NoContext => write!(f, "a PPGTT batch with no PDP0 load before it"),
        }
    }
}

/// One batch buffer the scan followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSpan {
    /// Graphics address of its first dword.
    pub address: u64,
    /// Dwords scanned, up to and including the command that ends it
    /// (MI_BATCH_BUFFER_END, or the MI_BATCH_BUFFER_START it chains with).
    pub dwords: usize,
    /// 1 for a batch started by the ring, 2 for a second-level batch.
    pub depth: u8,
}

/// A PDP0 load in the ring: the guest's PML4 address and where its two
/// halves are, for the mediator to replace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextLoad {
    /// The guest-physical address of the PML4 (low 12 bits as loaded).
    pub pml4: u64,
    /// Ring dword index of the value loaded into PDP0_UDW.
    pub upper: usize,
    /// Ring dword index of the value loaded into PDP0_LDW.
    pub lower: usize,
}

/// The commands may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Dwords of ring commands (all that were given): what to copy into
    /// the shadow ring.
    pub dwords: usize,
    /// The batch buffers scanned, in the order they were reached.
    pub batches: Vec<BatchSpan>,
    /// The PDP0 loads in the ring, in order.
    pub contexts: Vec<ContextLoad>,
}

/// What a checked command does to the flow of commands.
enum Flow {
    Next,
    BatchStart { address: u64, second_level: bool },
    BatchEnd,
    /// MI_LOAD_REGISTER_IMM of PDP0: (upper, lower) dword indices of the values.
    ContextLoad { upper: usize, lower: usize },
    /// A batch in the per-process GTT.
    PpgttBatch,
}

/// Dwords of the one MI_LOAD_REGISTER_IMM form allowed: two registers.
const PDP0_LOAD_DWORDS: usize = 5;

fn bits(value: u32, mask: u32) -> u32 {
    value & mask
}

/// Refuses any bit of `value` outside `allowed`.
fn only(value: u32, allowed: u32, dword: usize) -> Result<(), Reason> {
    match bits(value, !allowed) {
        0 => Ok(()),
        bits => Err(Reason::ReservedBits { dword, bits }),
    }
}

/// A 48-bit graphics address from its low and high dwords.
fn address(low: u32, high: u32, dword: usize) -> Result<u64, Reason> {
    only(high, cmd::ADDRESS_HIGH_MASK, dword + 1)?;
    Ok((u64::from(high) << 32) | u64::from(low))
}

fn check_range(share: &Share, start: u64, len: u64) -> Result<(), Reason> {
    start.checked_add(len).ok_or(Reason::Overflow)?;
    if share.contains(start, len) { Ok(()) } else { Err(Reason::OutsideShare { start, len }) }
}

/// The dwords a command has, from its header (PRM Vol. 2a: DWord Length is
/// the total minus 2), or why it is refused at sight.
pub(crate) fn command_dwords(header: u32) -> Result<usize, Reason> {
    match cmd::client(header) {
        cmd::CLIENT_MI => match cmd::mi_opcode(header) {
            cmd::MI_NOOP | cmd::MI_USER_INTERRUPT | cmd::MI_BATCH_BUFFER_END => Ok(1),
            cmd::MI_STORE_DATA_IMM => match bits(header, cmd::SDI_LENGTH_MASK) {
                2 => Ok(cmd::MI_STORE_DATA_IMM_DWORDS),
                3 => Ok(cmd::MI_STORE_DATA_IMM_QWORD_DWORDS),
                found => Err(Reason::BadLength { found }),
            },
            cmd::MI_BATCH_BUFFER_START => expect_length(header, cmd::BBS_LENGTH_MASK, cmd::MI_BATCH_BUFFER_START_DWORDS),
            cmd::MI_LOAD_REGISTER_IMM if bits(header, cmd::LRI_LENGTH_MASK) as usize + 2 == PDP0_LOAD_DWORDS => Ok(PDP0_LOAD_DWORDS),
            cmd::MI_LOAD_REGISTER_IMM => Err(Reason::Privileged("MI_LOAD_REGISTER_IMM writes registers")),
            cmd::MI_LOAD_REGISTER_MEM => Err(Reason::Privileged("MI_LOAD_REGISTER_MEM writes registers")),
            cmd::MI_LOAD_REGISTER_REG => Err(Reason::Privileged("MI_LOAD_REGISTER_REG writes registers")),
            cmd::MI_STORE_REGISTER_MEM => Err(Reason::Privileged("MI_STORE_REGISTER_MEM reads registers")),
            cmd::MI_SET_CONTEXT => Err(Reason::Privileged("MI_SET_CONTEXT switches the hardware context")),
            cmd::MI_UPDATE_GTT => Err(Reason::Privileged("MI_UPDATE_GTT writes the GTT")),
            cmd::MI_ARB_ON_OFF => Err(Reason::Privileged("MI_ARB_ON_OFF controls arbitration")),
            cmd::MI_DISPLAY_FLIP => Err(Reason::Privileged("MI_DISPLAY_FLIP controls the display")),
            cmd::MI_WAIT_FOR_EVENT => Err(Reason::Privileged("MI_WAIT_FOR_EVENT waits on display events")),
            cmd::MI_SEMAPHORE_SIGNAL => Err(Reason::Privileged("MI_SEMAPHORE_SIGNAL signals other engines")),
            _ => Err(Reason::Unknown),
        },
        cmd::CLIENT_2D => match cmd::blt_opcode(header) {
            cmd::XY_COLOR_BLT => expect_length(header, cmd::BLT_LENGTH_MASK, cmd::XY_COLOR_BLT_DWORDS),
            cmd::XY_SRC_COPY_BLT => expect_length(header, cmd::BLT_LENGTH_MASK, cmd::XY_SRC_COPY_BLT_DWORDS),
            _ => Err(Reason::Unknown),
        },
        _ => Err(Reason::Unknown),
    }
}

fn expect_length(header: u32, mask: u32, dwords: usize) -> Result<usize, Reason> {
    let found = bits(header, mask);
    if found as usize + 2 == dwords { Ok(dwords) } else { Err(Reason::BadLength { found }) }
}

/// Checks one whole command (`c.len()` is what [`command_dwords`] said);
/// `in_ring`: it is a ring command, not in a batch.
fn check_command(c: &[u32], share: &Share, in_ring: bool) -> Result<Flow, Reason> {
    let header = c[0];
    if cmd::client(header) == cmd::CLIENT_2D {
        return check_blit(c, share).map(|()| Flow::Next);
    }
    match cmd::mi_opcode(header) {
        cmd::MI_NOOP => {
            if header & cmd::MI_NOOP_WRITE_NOPID != 0 {
                return Err(Reason::Privileged("MI_NOOP with bit 22 writes the NOPID register"));
            }
            Ok(Flow::Next)
        }
        cmd::MI_USER_INTERRUPT => only(header, cmd::mi(cmd::MI_USER_INTERRUPT, 0), 0).map(|()| Flow::Next),
        cmd::MI_BATCH_BUFFER_END => only(header, cmd::mi(cmd::MI_BATCH_BUFFER_END, 0), 0).map(|()| Flow::BatchEnd),
        cmd::MI_STORE_DATA_IMM => {
            let qword = c.len() == cmd::MI_STORE_DATA_IMM_QWORD_DWORDS;
            if (header & cmd::SDI_STORE_QWORD != 0) != qword {
                return Err(Reason::BadLength { found: bits(header, cmd::SDI_LENGTH_MASK) });
            }
            if header & cmd::SDI_USE_GLOBAL_GTT == 0 {
                return Err(Reason::PerProcessAddressing);
            }
            let allowed = cmd::mi(cmd::MI_STORE_DATA_IMM, cmd::SDI_USE_GLOBAL_GTT | cmd::SDI_STORE_QWORD | cmd::SDI_LENGTH_MASK);
            only(header, allowed, 0)?;
            let target = address(c[1], c[2], 1)?;
            let len: u64 = if qword { 8 } else { 4 };
            if target % len != 0 {
                return Err(Reason::Misaligned(target));
            }
            check_range(share, target, len)?;
            Ok(Flow::Next)
        }
        cmd::MI_LOAD_REGISTER_IMM => {
            const WRITES: Reason = Reason::Privileged("MI_LOAD_REGISTER_IMM of anything but the PDP0 pair, or in a batch");
            only(header, cmd::mi(cmd::MI_LOAD_REGISTER_IMM, cmd::LRI_LENGTH_MASK), 0).map_err(|_| WRITES)?;
            match (in_ring, c[1], c[3]) {
                (true, ppgtt::PDP0_UDW, ppgtt::PDP0_LDW) => Ok(Flow::ContextLoad { upper: 2, lower: 4 }),
                (true, ppgtt::PDP0_LDW, ppgtt::PDP0_UDW) => Ok(Flow::ContextLoad { upper: 4, lower: 2 }),
                _ => Err(WRITES),
            }
        }
        cmd::MI_BATCH_BUFFER_START if header & cmd::BBS_PPGTT != 0 => {
            if !in_ring || header & cmd::BBS_SECOND_LEVEL != 0 {
                return Err(Reason::PerProcessAddressing);
            }
            only(header, cmd::mi(cmd::MI_BATCH_BUFFER_START, cmd::BBS_PPGTT | cmd::BBS_LENGTH_MASK), 0)?;
            let start = address(c[1], c[2], 1)?;
            if start % 4 != 0 {
                return Err(Reason::Misaligned(start));
            }
            Ok(Flow::PpgttBatch)
        }
        cmd::MI_BATCH_BUFFER_START => {
            only(header, cmd::mi(cmd::MI_BATCH_BUFFER_START, cmd::BBS_SECOND_LEVEL | cmd::BBS_LENGTH_MASK), 0)?;
            let start = address(c[1], c[2], 1)?;
            if start % 4 != 0 {
                return Err(Reason::Misaligned(start));
            }
            // The batch's extent is found by scanning it; its first dword
            // must at least be in the share.
            check_range(share, start, 4)?;
            Ok(Flow::BatchStart { address: start, second_level: header & cmd::BBS_SECOND_LEVEL != 0 })
        }
        // `command_dwords` let nothing else through.
        _ => Err(Reason::Unknown),
    }
}

/// Decodes a signed-looking 16-bit field: bit 15 set is refused.
fn coordinate(value: u32) -> Result<u64, Reason> {
    if value & 0x8000 != 0 { Err(Reason::NegativeCoordinate) } else { Ok(u64::from(value)) }
}

fn pitch(value: u32) -> Result<u64, Reason> {
    if value & 0x8000 != 0 { Err(Reason::NegativePitch) } else { Ok(u64::from(value)) }
}

/// The bytes a linear surface rectangle covers: from its first pixel to one
/// past its last; rows in between (and any gap between rows) lie inside.
fn surface(base: u64, pitch: u64, x: u64, y: u64, width: u64, height: u64, bpp: u64) -> Result<(u64, u64), Reason> {
    let first = y.checked_mul(pitch).and_then(|row| row.checked_add(x.checked_mul(bpp)?)).ok_or(Reason::Overflow)?;
    let last_row = y.checked_add(height - 1).and_then(|r| r.checked_mul(pitch)).ok_or(Reason::Overflow)?;
    let end = x.checked_add(width).and_then(|e| e.checked_mul(bpp)).and_then(|e| e.checked_add(last_row)).ok_or(Reason::Overflow)?;
    let start = base.checked_add(first).ok_or(Reason::Overflow)?;
    let len = end.checked_sub(first).ok_or(Reason::Overflow)?;
    Ok((start, len))
}

/// XY_COLOR_BLT and XY_SRC_COPY_BLT (PRM Vol. 2a; dword layout in
/// [`cmd`]): both rectangles must lie in the share.
fn check_blit(c: &[u32], share: &Share) -> Result<(), Reason> {
    let header = c[0];
    let copy = cmd::blt_opcode(header) == cmd::XY_SRC_COPY_BLT;
    if header & (cmd::BLT_DST_TILED | if copy { cmd::BLT_SRC_TILED } else { 0 }) != 0 {
        return Err(Reason::Tiled);
    }
    only(header, cmd::blt(cmd::blt_opcode(header), cmd::BLT_WRITE_ALPHA | cmd::BLT_WRITE_RGB | cmd::BLT_LENGTH_MASK), 0)?;
    let control = c[1];
    let depth_field = cmd::BLT_DEPTH_MASK << cmd::BLT_DEPTH_SHIFT;
    only(control, cmd::BLT_CLIPPING | depth_field | cmd::BLT_ROP_MASK | cmd::BLT_PITCH_MASK, 1)?;
    let depth = ((control >> cmd::BLT_DEPTH_SHIFT) & cmd::BLT_DEPTH_MASK) as usize;
    let bpp = u64::from(cmd::BLT_BYTES_PER_PIXEL[depth]);
    let dst_pitch = pitch(control & cmd::BLT_PITCH_MASK)?;
    let (x1, y1) = (coordinate(c[2] & 0xffff)?, coordinate(c[2] >> 16)?);
    let (x2, y2) = (coordinate(c[3] & 0xffff)?, coordinate(c[3] >> 16)?);
    if x2 <= x1 || y2 <= y1 {
        return Err(Reason::EmptyRectangle);
    }
    let (width, height) = (x2 - x1, y2 - y1);
    let dst = address(c[4], c[5], 4)?;
    let (start, len) = surface(dst, dst_pitch, x1, y1, width, height, bpp)?;
    check_range(share, start, len)?;
    if copy {
        let (sx, sy) = (coordinate(c[6] & 0xffff)?, coordinate(c[6] >> 16)?);
        only(c[7], cmd::BLT_PITCH_MASK, 7)?;
        let src_pitch = pitch(c[7])?;
        let src = address(c[8], c[9], 8)?;
        let (start, len) = surface(src, src_pitch, sx, sy, width, height, bpp)?;
        check_range(share, start, len)?;
    }
    Ok(())
}

/// A batch buffer being read page by page.
struct Batch {
    address: u64,
    depth: u8,
    dwords: Vec<u32>,
}

struct Scanner<'a, M> {
    share: &'a Share,
    memory: &'a mut M,
    batches: Vec<BatchSpan>,
    budget: usize,
}

impl<M: BatchMemory> Scanner<'_, M> {
    /// Makes `batch` hold at least `count` dwords, fetching whole pages.
    fn fetch(&mut self, batch: &mut Batch, count: usize) -> Result<(), Reason> {
        while batch.dwords.len() < count {
            let offset = (batch.dwords.len() as u64).checked_mul(4).ok_or(Reason::Overflow)?;
            let next = batch.address.checked_add(offset).ok_or(Reason::Overflow)?;
            let share_end = self.share.range_end(next).ok_or(Reason::BatchLeavesShare { address: next })?;
            let page_end = (next / FETCH_BYTES).checked_add(1).and_then(|p| p.checked_mul(FETCH_BYTES)).unwrap_or(u64::MAX);
            let chunk = (page_end.min(share_end) - next) / 4;
            if chunk == 0 {
                // Less than a dword of share left.
                return Err(Reason::BatchLeavesShare { address: next });
            }
            let chunk = chunk as usize;
            if self.budget < chunk {
                return Err(Reason::ScanBudgetExceeded);
            }
            self.budget -= chunk;
            let old = batch.dwords.len();
            batch.dwords.resize(old + chunk, 0);
            if !self.memory.read(next, &mut batch.dwords[old..]) {
                return Err(Reason::BatchUnreadable { address: next });
            }
        }
        Ok(())
    }

    /// Scans a batch (and what it calls or chains to) until it ends.
    fn scan_batch(&mut self, address: u64, depth: u8) -> Result<(), Rejection> {
        let mut batch = Batch { address, depth, dwords: Vec::new() };
        let mut pos = 0usize;
        loop {
            let at = (pos as u64).checked_mul(4).and_then(|o| batch.address.checked_add(o)).unwrap_or(u64::MAX);
            let location = Location::Batch { address: at, depth: batch.depth };
            let reject = |header, reason| Rejection { location, header, reason };
            self.fetch(&mut batch, pos + 1).map_err(|r| reject(0, r))?;
            let header = batch.dwords[pos];
            let len = command_dwords(header).map_err(|r| reject(header, r))?;
            self.fetch(&mut batch, pos + len).map_err(|r| reject(header, r))?;
            let flow = check_command(&batch.dwords[pos..pos + len], self.share, false).map_err(|r| reject(header, r))?;
            pos += len;
            match flow {
                // `check_command` refuses both outside the ring.
                Flow::Next | Flow::ContextLoad { .. } | Flow::PpgttBatch => {}
                Flow::BatchEnd => {
                    self.batches.push(BatchSpan { address: batch.address, dwords: pos, depth: batch.depth });
                    return Ok(());
                }
                Flow::BatchStart { address, second_level: true } => {
                    if batch.depth >= MAX_BATCH_DEPTH {
                        return Err(reject(header, Reason::NestingTooDeep));
                    }
                    self.scan_batch(address, batch.depth + 1)?;
                }
                // A chain: this batch goes on at `address`, at the same
                // level; what follows the command never runs.
                Flow::BatchStart { address, second_level: false } => {
                    self.batches.push(BatchSpan { address: batch.address, dwords: pos, depth: batch.depth });
                    batch = Batch { address, depth: batch.depth, dwords: Vec::new() };
                    pos = 0;
                }
            }
        }
    }
}

/// Scans `ring` (the commands between the guest's head and tail, joined if
/// the ring wrapped) and every batch buffer they start, against `share`.
///
/// # Errors
/// The first command that may not run, with where it is and why.
pub fn scan<M: BatchMemory>(ring: &[u32], share: &Share, memory: &mut M) -> Result<Accepted, Rejection> {
    let mut scanner = Scanner { share, memory, batches: Vec::new(), budget: MAX_SCAN_DWORDS };
    let mut contexts: Vec<ContextLoad> = Vec::new();
    let mut pos = 0usize;
    while pos < ring.len() {
        let header = ring[pos];
        let location = Location::Ring { offset: pos as u64 * 4 };
        let reject = |reason| Rejection { location, header, reason };
        let len = command_dwords(header).map_err(reject)?;
        let available = ring.len() - pos;
        if len > available {
            return Err(reject(Reason::Truncated { needed: len, available }));
        }
        match check_command(&ring[pos..pos + len], share, true).map_err(reject)? {
            Flow::Next => {}
            Flow::ContextLoad { upper, lower } => {
                let pml4 = (u64::from(ring[pos + upper]) << 32) | u64::from(ring[pos + lower]);
                contexts.push(ContextLoad { pml4, upper: pos + upper, lower: pos + lower });
            }
            Flow::PpgttBatch if contexts.is_empty() => return Err(reject(Reason::NoContext)),
            Flow::PpgttBatch => {}
            Flow::BatchEnd => return Err(reject(Reason::BatchEndInRing)),
            Flow::BatchStart { second_level: true, .. } => return Err(reject(Reason::NestingTooDeep)),
            Flow::BatchStart { address, second_level: false } => scanner.scan_batch(address, 1)?,
        }
        pos += len;
    }
    Ok(Accepted { dwords: ring.len(), batches: scanner.batches, contexts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use cmd::{blt, mi};

    /// The share: graphics addresses 0x10_0000..0x20_0000.
    const LO: u64 = 0x10_0000;
    const HI: u64 = 0x20_0000;

    fn share() -> Share {
        Share::new(LO..HI)
    }

    /// Batch memory: dwords by graphics address; anything else unreadable.
    #[derive(Default)]
    struct Memory(BTreeMap<u64, u32>);

    impl Memory {
        fn put(&mut self, address: u64, dwords: &[u32]) {
            for (i, d) in dwords.iter().enumerate() {
                self.0.insert(address + 4 * i as u64, *d);
            }
        }
    }

    impl BatchMemory for Memory {
        fn read(&mut self, address: u64, out: &mut [u32]) -> bool {
            // Unwritten dwords of a page read as MI_NOOP.
            for (i, d) in out.iter_mut().enumerate() {
                *d = self.0.get(&(address + 4 * i as u64)).copied().unwrap_or(0);
            }
            true
        }
    }

    fn none() -> impl FnMut(u64, &mut [u32]) -> bool {
        |_, _| false
    }

    fn lo(a: u64) -> u32 {
        a as u32
    }
    fn hi(a: u64) -> u32 {
        (a >> 32) as u32
    }

    fn sdi(a: u64) -> [u32; 4] {
        [mi(cmd::MI_STORE_DATA_IMM, cmd::SDI_USE_GLOBAL_GTT | 2), lo(a), hi(a), 0xdead]
    }
    fn bbs(a: u64, flags: u32) -> [u32; 3] {
        [mi(cmd::MI_BATCH_BUFFER_START, flags | 1), lo(a), hi(a)]
    }
    const BBE: u32 = 0x0500_0000;
    const DEPTH32: u32 = 3 << 24;

    fn color(dst: u64, pitch: u32, x1: u32, y1: u32, x2: u32, y2: u32) -> [u32; 7] {
        [
            blt(cmd::XY_COLOR_BLT, cmd::BLT_WRITE_ALPHA | cmd::BLT_WRITE_RGB | 5),
            DEPTH32 | (0xf0 << 16) | pitch,
            (y1 << 16) | x1,
            (y2 << 16) | x2,
            lo(dst),
            hi(dst),
            0x00ff_00ff,
        ]
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(dst: u64, dpitch: u32, x1: u32, y1: u32, x2: u32, y2: u32, src: u64, spitch: u32, sx: u32, sy: u32) -> [u32; 10] {
        [
            blt(cmd::XY_SRC_COPY_BLT, cmd::BLT_WRITE_ALPHA | cmd::BLT_WRITE_RGB | 8),
            DEPTH32 | (0xcc << 16) | dpitch,
            (y1 << 16) | x1,
            (y2 << 16) | x2,
            lo(dst),
            hi(dst),
            (sy << 16) | sx,
            spitch,
            lo(src),
            hi(src),
        ]
    }

    fn reason(ring: &[u32], memory: &mut impl BatchMemory) -> Reason {
        scan(ring, &share(), memory).unwrap_err().reason
    }

    #[test]
    fn each_allowed_command_is_accepted() {
        let mut ring = alloc::vec![0, mi(cmd::MI_USER_INTERRUPT, 0)];
        ring.extend(sdi(LO));
        ring.extend([mi(cmd::MI_STORE_DATA_IMM, cmd::SDI_USE_GLOBAL_GTT | cmd::SDI_STORE_QWORD | 3), lo(HI - 8), 0, 1, 2]);
        ring.extend(color(LO, 256, 0, 0, 64, 4));
        ring.extend(copy(LO + 0x1000, 256, 0, 0, 64, 4, LO, 256, 0, 0));
        let accepted = scan(&ring, &share(), &mut none()).unwrap();
        assert_eq!(accepted, Accepted { dwords: 2 + 4 + 5 + 7 + 10, batches: Vec::new(), contexts: Vec::new() });
        assert_eq!(scan(&[], &share(), &mut none()).unwrap().dwords, 0);
    }

    #[test]
    fn privileged_and_unknown_commands_are_rejected_with_place_and_reason() {
        let lri = mi(cmd::MI_LOAD_REGISTER_IMM, 1);
        let ring = [0, 0, lri, 0x2030, 0];
        let rejection = scan(&ring, &share(), &mut none()).unwrap_err();
        assert_eq!(
            rejection,
            Rejection {
                location: Location::Ring { offset: 8 },
                header: lri,
                reason: Reason::Privileged("MI_LOAD_REGISTER_IMM writes registers")
            }
        );
        assert_eq!(
            alloc::format!("{rejection}"),
            "ring offset 0x8: header 0x11000001 (MI opcode 0x22): privileged: MI_LOAD_REGISTER_IMM writes registers"
        );
        for opcode in [
            cmd::MI_SET_CONTEXT,
            cmd::MI_LOAD_REGISTER_MEM,
            cmd::MI_LOAD_REGISTER_REG,
            cmd::MI_STORE_REGISTER_MEM,
            cmd::MI_UPDATE_GTT,
            cmd::MI_ARB_ON_OFF,
            cmd::MI_DISPLAY_FLIP,
            cmd::MI_WAIT_FOR_EVENT,
            cmd::MI_SEMAPHORE_SIGNAL,
        ] {
            assert!(matches!(reason(&[mi(opcode, 1), 0, 0, 0], &mut none()), Reason::Privileged(_)), "{opcode:#x}");
        }
        assert!(matches!(reason(&[cmd::MI_NOOP_WRITE_NOPID], &mut none()), Reason::Privileged(_)));
        for header in [mi(cmd::MI_FLUSH_DW, 2), mi(0x3f, 0), blt(0x51, 5), 0x7800_0000, 0x2000_0000, 0xe000_0000] {
            assert_eq!(reason(&[header, 0, 0, 0, 0, 0, 0, 0, 0, 0], &mut none()), Reason::Unknown, "{header:#x}");
        }
        assert_eq!(reason(&[BBE], &mut none()), Reason::BatchEndInRing);
        assert_eq!(reason(&[mi(cmd::MI_USER_INTERRUPT, 1)], &mut none()), Reason::ReservedBits { dword: 0, bits: 1 });
    }

    #[test]
    fn lengths_and_truncation_are_exact() {
        assert_eq!(reason(&[mi(cmd::MI_STORE_DATA_IMM, cmd::SDI_USE_GLOBAL_GTT | 4), 0, 0, 0, 0, 0], &mut none()), Reason::BadLength { found: 4 });
        // A qword length without the Store Qword bit, and the reverse.
        assert_eq!(reason(&[mi(cmd::MI_STORE_DATA_IMM, cmd::SDI_USE_GLOBAL_GTT | 3), lo(LO), 0, 0, 0], &mut none()), Reason::BadLength { found: 3 });
        assert_eq!(
            reason(&[mi(cmd::MI_STORE_DATA_IMM, cmd::SDI_USE_GLOBAL_GTT | cmd::SDI_STORE_QWORD | 2), lo(LO), 0, 0], &mut none()),
            Reason::BadLength { found: 2 }
        );
        assert_eq!(reason(&[blt(cmd::XY_COLOR_BLT, 6)], &mut none()), Reason::BadLength { found: 6 });
        assert_eq!(reason(&[mi(cmd::MI_BATCH_BUFFER_START, 0)], &mut none()), Reason::BadLength { found: 0 });
        let c = color(LO, 256, 0, 0, 64, 4);
        assert_eq!(reason(&c[..6], &mut none()), Reason::Truncated { needed: 7, available: 6 });
        let s = sdi(LO);
        assert_eq!(scan(&[0, s[0], s[1]], &share(), &mut none()).unwrap_err().location, Location::Ring { offset: 4 });
    }

    #[test]
    fn store_data_imm_stays_in_the_share() {
        assert!(scan(&sdi(HI - 4), &share(), &mut none()).is_ok());
        assert_eq!(reason(&sdi(HI), &mut none()), Reason::OutsideShare { start: HI, len: 4 });
        assert_eq!(reason(&sdi(LO - 4), &mut none()), Reason::OutsideShare { start: LO - 4, len: 4 });
        assert_eq!(reason(&sdi(LO + 2), &mut none()), Reason::Misaligned(LO + 2));
        let qword = [mi(cmd::MI_STORE_DATA_IMM, cmd::SDI_USE_GLOBAL_GTT | cmd::SDI_STORE_QWORD | 3), lo(HI - 4), 0, 1, 2];
        assert_eq!(reason(&qword, &mut none()), Reason::Misaligned(HI - 4));
        let mut ppgtt = sdi(LO);
        ppgtt[0] &= !cmd::SDI_USE_GLOBAL_GTT;
        assert_eq!(reason(&ppgtt, &mut none()), Reason::PerProcessAddressing);
        // Address bits above 47 are refused, not wrapped.
        let mut high = sdi(LO);
        high[2] = 0x1_0000;
        assert_eq!(reason(&high, &mut none()), Reason::ReservedBits { dword: 2, bits: 0x1_0000 });
    }

    #[test]
    fn blit_footprints_are_computed_and_checked() {
        // 64x4 pixels at (0,0), 32 bpp, pitch 256: exactly 1024 bytes.
        assert!(scan(&color(HI - 1024, 256, 0, 0, 64, 4), &share(), &mut none()).is_ok());
        assert_eq!(reason(&color(HI - 1020, 256, 0, 0, 64, 4), &mut none()), Reason::OutsideShare { start: HI - 1020, len: 1024 });
        // Offsets by x and y move the footprint: (10, 2) to (20, 5).
        assert_eq!(
            reason(&color(HI - 1024, 256, 10, 2, 20, 5), &mut none()),
            Reason::OutsideShare { start: HI - 1024 + 2 * 256 + 40, len: 2 * 256 + 40 }
        );
        // A pitch smaller than a row still covers every row.
        assert!(scan(&color(LO, 4, 0, 0, 64, 4), &share(), &mut none()).is_ok());
        // Largest coordinates and pitch: no overflow, just outside.
        assert!(matches!(reason(&color(LO, 0x7fff, 0x7ffe, 0x7ffe, 0x7fff, 0x7fff), &mut none()), Reason::OutsideShare { .. }));
        // Base near the top of the 48-bit space: far outside, no wrap.
        assert!(matches!(reason(&color(0xffff_ffff_ffff, 0x7fff, 0, 0, 0x7fff, 0x7fff), &mut none()), Reason::OutsideShare { .. }));
        assert_eq!(reason(&color(LO, 0x8000, 0, 0, 1, 1), &mut none()), Reason::NegativePitch);
        assert_eq!(reason(&color(LO, 256, 0x8000, 0, 1, 1), &mut none()), Reason::NegativeCoordinate);
        assert_eq!(reason(&color(LO, 256, 0, 0, 1, 0x8001), &mut none()), Reason::NegativeCoordinate);
        assert_eq!(reason(&color(LO, 256, 5, 0, 5, 1), &mut none()), Reason::EmptyRectangle);
        assert_eq!(reason(&color(LO, 256, 0, 3, 1, 2), &mut none()), Reason::EmptyRectangle);
        let mut tiled = color(LO, 256, 0, 0, 1, 1);
        tiled[0] |= cmd::BLT_DST_TILED;
        assert_eq!(reason(&tiled, &mut none()), Reason::Tiled);
        let mut flags = color(LO, 256, 0, 0, 1, 1);
        flags[1] |= 1 << 29;
        assert_eq!(reason(&flags, &mut none()), Reason::ReservedBits { dword: 1, bits: 1 << 29 });
        // 8 bpp: one byte a pixel.
        let mut bytes = color(HI - 4, 4, 0, 0, 4, 1);
        bytes[1] &= !DEPTH32;
        assert!(scan(&bytes, &share(), &mut none()).is_ok());
    }

    #[test]
    fn copies_check_the_source_too() {
        assert!(scan(&copy(LO, 256, 0, 0, 64, 4, HI - 1024, 256, 0, 0), &share(), &mut none()).is_ok());
        assert_eq!(
            reason(&copy(LO, 256, 0, 0, 64, 4, HI - 1024, 256, 1, 0), &mut none()),
            Reason::OutsideShare { start: HI - 1020, len: 1024 }
        );
        assert_eq!(reason(&copy(LO, 256, 0, 0, 64, 4, 0, 256, 0, 0), &mut none()), Reason::OutsideShare { start: 0, len: 1024 });
        let mut tiled = copy(LO, 256, 0, 0, 1, 1, LO, 256, 0, 0);
        tiled[0] |= cmd::BLT_SRC_TILED;
        assert_eq!(reason(&tiled, &mut none()), Reason::Tiled);
        assert_eq!(reason(&copy(LO, 256, 0, 0, 1, 1, LO, 0x8000, 0, 0), &mut none()), Reason::NegativePitch);
        let mut pitch_bits = copy(LO, 256, 0, 0, 1, 1, LO, 256, 0, 0);
        pitch_bits[7] |= 1 << 16;
        assert_eq!(reason(&pitch_bits, &mut none()), Reason::ReservedBits { dword: 7, bits: 1 << 16 });
    }

    #[test]
    fn batches_are_scanned_recursively_and_listed() {
        let mut memory = Memory::default();
        let (first, second) = (LO + 0x1000, LO + 0x2ff8);
        let mut batch = alloc::vec![0];
        batch.extend(bbs(second, cmd::BBS_SECOND_LEVEL));
        batch.extend(sdi(LO));
        batch.push(BBE);
        memory.put(first, &batch);
        // The second-level batch straddles a page boundary.
        memory.put(second, &[0, 0, mi(cmd::MI_USER_INTERRUPT, 0), BBE]);
        let mut ring = alloc::vec![0];
        ring.extend(bbs(first, 0));
        ring.push(mi(cmd::MI_USER_INTERRUPT, 0));
        let accepted = scan(&ring, &share(), &mut memory).unwrap();
        assert_eq!(accepted.dwords, 5);
        assert_eq!(
            accepted.batches,
            alloc::vec![BatchSpan { address: second, dwords: 4, depth: 2 }, BatchSpan { address: first, dwords: 9, depth: 1 }]
        );
    }

    #[test]
    fn bad_batches_are_rejected_where_they_fail() {
        // A batch outside the share.
        let r = scan(&bbs(HI, 0), &share(), &mut Memory::default()).unwrap_err();
        assert_eq!((r.location, r.reason), (Location::Ring { offset: 0 }, Reason::OutsideShare { start: HI, len: 4 }));
        assert_eq!(reason(&bbs(LO + 2, 0), &mut Memory::default()), Reason::Misaligned(LO + 2));
        assert_eq!(reason(&bbs(LO, cmd::BBS_PPGTT), &mut Memory::default()), Reason::NoContext);
        assert_eq!(reason(&bbs(LO, cmd::BBS_SECOND_LEVEL), &mut Memory::default()), Reason::NestingTooDeep);
        // A privileged command inside a batch, located by graphics address.
        let mut memory = Memory::default();
        memory.put(LO + 0x100, &[0, mi(cmd::MI_SET_CONTEXT, 0), BBE]);
        let r = scan(&bbs(LO + 0x100, 0), &share(), &mut memory).unwrap_err();
        assert_eq!(r.location, Location::Batch { address: LO + 0x104, depth: 1 });
        assert!(matches!(r.reason, Reason::Privileged(_)));
        // A batch that never ends runs out of the share.
        let mut memory = Memory::default();
        memory.put(HI - 8, &[0, 0]);
        assert_eq!(reason(&bbs(HI - 8, 0), &mut memory), Reason::BatchLeavesShare { address: HI });
        // A command straddling the end of the share.
        memory.put(HI - 8, &[0, mi(cmd::MI_BATCH_BUFFER_START, 1)]);
        assert_eq!(reason(&bbs(HI - 8, 0), &mut memory), Reason::BatchLeavesShare { address: HI });
        // Unreadable batch memory.
        assert_eq!(reason(&bbs(LO, 0), &mut none()), Reason::BatchUnreadable { address: LO });
        // Third level.
        let mut memory = Memory::default();
        memory.put(LO, &bbs(LO + 0x100, cmd::BBS_SECOND_LEVEL));
        memory.put(LO + 0x100, &bbs(LO + 0x200, cmd::BBS_SECOND_LEVEL));
        memory.put(LO + 0x200, &[BBE]);
        let r = scan(&bbs(LO, 0), &share(), &mut memory).unwrap_err();
        assert_eq!((r.location, r.reason), (Location::Batch { address: LO + 0x100, depth: 2 }, Reason::NestingTooDeep));
        // A batch that chains to itself forever exhausts the budget.
        let mut memory = Memory::default();
        memory.put(LO, &bbs(LO, 0));
        assert_eq!(reason(&bbs(LO, 0), &mut memory), Reason::ScanBudgetExceeded);
    }

    #[test]
    fn chained_batches_are_followed_and_what_follows_a_chain_is_not_scanned() {
        let mut memory = Memory::default();
        let mut a = bbs(LO + 0x800, 0).to_vec();
        a.push(mi(cmd::MI_SET_CONTEXT, 0)); // never runs: the chain jumped
        memory.put(LO, &a);
        memory.put(LO + 0x800, &[mi(cmd::MI_USER_INTERRUPT, 0), BBE]);
        let accepted = scan(&bbs(LO, 0), &share(), &mut memory).unwrap();
        assert_eq!(
            accepted.batches,
            alloc::vec![BatchSpan { address: LO, dwords: 3, depth: 1 }, BatchSpan { address: LO + 0x800, dwords: 2, depth: 1 }]
        );
    }

    #[test]
    fn a_second_share_range_is_honoured() {
        let share = Share::new(LO..HI).with_range(0x4000_0000..0x4000_1000);
        assert!(scan(&sdi(0x4000_0ffc), &share, &mut none()).is_ok());
        // Not across two ranges.
        assert!(scan(&color(HI - 4, 8, 0, 0, 2, 1), &Share::new(LO..HI).with_range(HI..HI + 8), &mut none()).is_err());
        assert!(!share.contains(u64::MAX, 2));
        assert!(!share.contains(LO, 0));
    }

    /// Random streams, biased towards real headers, must never panic and
    /// always terminate.
    #[test]
    fn random_streams_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let headers = [
            0,
            mi(cmd::MI_USER_INTERRUPT, 0),
            BBE,
            sdi(LO)[0],
            bbs(LO, 0)[0],
            bbs(LO, cmd::BBS_SECOND_LEVEL)[0],
            color(LO, 0, 0, 0, 0, 0)[0],
            copy(LO, 0, 0, 0, 0, 0, LO, 0, 0, 0)[0],
        ];
        let mut accepted = 0;
        for _ in 0..20_000 {
            let word = |next: &mut dyn FnMut() -> u64| -> u32 {
                let r = next();
                match r % 4 {
                    0 => headers[(r >> 8) as usize % headers.len()],
                    1 => (LO + (r >> 16) % (HI - LO + 64)) as u32 & !3,
                    2 => (r >> 32) as u32 & 0xffff,
                    _ => (r >> 32) as u32,
                }
            };
            let len = (next() % 24) as usize;
            let ring: Vec<u32> = (0..len).map(|_| word(&mut next)).collect();
            let mut batch_seed = next();
            let mut memory = |_: u64, out: &mut [u32]| {
                for d in out.iter_mut() {
                    batch_seed = batch_seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    *d = match batch_seed >> 61 {
                        0 => BBE,
                        1 => headers[(batch_seed >> 40) as usize % headers.len()],
                        2 => (LO + (batch_seed >> 20) % (HI - LO)) as u32 & !3,
                        _ => (batch_seed >> 32) as u32,
                    };
                }
                batch_seed % 16 != 0
            };
            if scan(&ring, &share(), &mut memory).is_ok() {
                accepted += 1;
            }
        }
        assert!(accepted > 0, "the generator should produce some valid streams");
    }

    #[test]
    fn a_pdp0_load_selects_a_context_for_the_ppgtt_batches_after_it() {
        use bulkhead_abi::gpu::encode::{load_pdp0, mi_batch_buffer_start};
        let mut memory = Memory::default();
        let mut ring = Vec::new();
        ring.extend(load_pdp0(0x4010_0000));
        ring.extend(mi_batch_buffer_start(0x7fff_0000_1000, true));
        ring.push(mi(cmd::MI_USER_INTERRUPT, 0));
        // Either order of the pair.
        ring.extend([mi(cmd::MI_LOAD_REGISTER_IMM, 3), ppgtt::PDP0_LDW, 0x4020_0000, ppgtt::PDP0_UDW, 1]);
        ring.extend(mi_batch_buffer_start(0, true));
        let accepted = scan(&ring, &share(), &mut memory).unwrap();
        assert!(accepted.batches.is_empty(), "PPGTT batches are the GPU's to confine, not scanned");
        assert_eq!(
            accepted.contexts,
            [ContextLoad { pml4: 0x4010_0000, upper: 2, lower: 4 }, ContextLoad { pml4: 0x1_4020_0000, upper: 13, lower: 11 }]
        );
    }

    #[test]
    fn ppgtt_batches_need_a_context_and_register_loads_stay_privileged() {
        use bulkhead_abi::gpu::encode::{load_pdp0, mi_batch_buffer_start, mi_load_register_imm};
        let mut memory = Memory::default();
        let reason = |ring: &[u32], memory: &mut Memory| scan(ring, &share(), memory).unwrap_err().reason;
        assert_eq!(reason(&mi_batch_buffer_start(0x1000, true), &mut memory), Reason::NoContext);
        // The PDP0 load must come first.
        let mut ring = Vec::from(mi_batch_buffer_start(0x1000, true));
        ring.extend(load_pdp0(0x4010_0000));
        assert_eq!(reason(&ring, &mut memory), Reason::NoContext);
        // Anything but the PDP0 pair, or one half, is a register write.
        let other = [mi(cmd::MI_LOAD_REGISTER_IMM, 3), ppgtt::PDP0_UDW, 0, 0x2030, 0];
        assert!(matches!(reason(&other, &mut memory), Reason::Privileged(_)));
        let twice = [mi(cmd::MI_LOAD_REGISTER_IMM, 3), ppgtt::PDP0_LDW, 0, ppgtt::PDP0_LDW, 0];
        assert!(matches!(reason(&twice, &mut memory), Reason::Privileged(_)));
        assert!(matches!(reason(&mi_load_register_imm(ppgtt::PDP0_LDW, 0), &mut memory), Reason::Privileged(_)));
        // Not in a global-GTT batch either, and a GGTT batch cannot start a PPGTT one.
        let mut batch = Vec::from(load_pdp0(0x4010_0000));
        batch.push(mi(cmd::MI_BATCH_BUFFER_END, 0));
        memory.put(LO, &batch);
        let start = [mi(cmd::MI_BATCH_BUFFER_START, 1), LO as u32, 0];
        assert!(matches!(reason(&start, &mut memory), Reason::Privileged(_)));
        let mut batch = Vec::from(mi_batch_buffer_start(0x1000, true));
        batch.push(mi(cmd::MI_BATCH_BUFFER_END, 0));
        memory.put(LO, &batch);
        let mut ring = Vec::from(load_pdp0(0x4010_0000));
        ring.extend(start);
        assert_eq!(reason(&ring, &mut memory), Reason::PerProcessAddressing);
        // A second-level PPGTT batch from the ring: refused.
        let mut ring = Vec::from(load_pdp0(0x4010_0000));
        ring.extend([mi(cmd::MI_BATCH_BUFFER_START, cmd::BBS_PPGTT | cmd::BBS_SECOND_LEVEL | 1), 0x1000, 0]);
        assert_eq!(reason(&ring, &mut memory), Reason::PerProcessAddressing);
    }
}
