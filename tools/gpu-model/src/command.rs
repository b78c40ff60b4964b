//! The command decoder: gen8 command dwords to [`Command`]. Pure; faults are returned as
//! `FAULT_*` codes from [`crate::regs`].

use bulkhead_abi::gpu::cmd::{BBS_PPGTT, MI_LOAD_REGISTER_IMM};

use crate::regs::*;

/// A decoded command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// MI_NOOP.
    Noop,
    /// MI_USER_INTERRUPT: bump SEQNO, raise INT_USER.
    UserInterrupt,
    /// MI_BATCH_BUFFER_END: return from the current batch.
    BatchBufferEnd,
    /// MI_STORE_DATA_IMM: write one dword or one qword at a graphics address.
    StoreDataImm {
        /// Graphics address (dword aligned: bits 0..1 are ignored as on hardware).
        address: u64,
        /// The data; `high` is `Some` for the 5-dword qword form.
        low: u32,
        /// Upper dword of a qword store.
        high: Option<u32>,
    },
    /// MI_BATCH_BUFFER_START: call (second level) or jump to a batch.
    BatchBufferStart {
        /// Graphics address of the batch (bits 0..1 ignored).
        address: u64,
        /// Bit 22: second-level batch.
        second_level: bool,
        /// Bit 8 ([`BBS_PPGTT`], "Address Space Indicator"): a non-privileged batch in the
        /// per-process GTT that PDP0 selects.
        ppgtt: bool,
    },
    /// MI_LOAD_REGISTER_IMM: write (register offset, value) pairs, in order. Which registers a
    /// command may load, and where, is the engine's policy ([`crate::gpu`]), not the decoder's.
    LoadRegisterImm {
        /// The (register offset, value) pairs (at least one).
        pairs: Vec<(u32, u32)>,
    },
    /// XY_COLOR_BLT: fill a rectangle.
    ColorBlt {
        /// Destination surface.
        dst: Surface,
        /// Rectangle, x2/y2 exclusive.
        rect: Rect,
        /// Fill colour (the low `cpp` bytes are used).
        color: u32,
    },
    /// XY_SRC_COPY_BLT: copy a rectangle.
    SrcCopyBlt {
        /// Destination surface.
        dst: Surface,
        /// Destination rectangle, x2/y2 exclusive.
        rect: Rect,
        /// Source surface (same depth as the destination).
        src: Surface,
        /// Source top-left corner.
        src_x: u16,
        /// Source top-left corner.
        src_y: u16,
    },
}

/// A linear surface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Surface {
    /// Graphics address of pixel (0, 0).
    pub address: u64,
    /// Bytes per row.
    pub pitch: u32,
    /// Bytes per pixel.
    pub cpp: u32,
}

/// A rectangle, x2/y2 exclusive.
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
    fn from_dwords(top_left: u32, bottom_right: u32) -> Self {
        Self {
            x1: top_left as u16,
            y1: (top_left >> 16) as u16,
            x2: bottom_right as u16,
            y2: (bottom_right >> 16) as u16,
        }
    }

    /// Width in pixels (0 when x2 <= x1: the blit does nothing).
    pub fn width(&self) -> u32 {
        u32::from(self.x2.saturating_sub(self.x1))
    }

    /// Height in rows (0 when y2 <= y1).
    pub fn height(&self) -> u32 {
        u32::from(self.y2.saturating_sub(self.y1))
    }
}

/// Total length in dwords of the command whose header is `header`, or a fault code for an
/// unknown client or opcode.
pub fn command_length(header: u32) -> Result<usize, u32> {
    match header >> CLIENT_SHIFT {
        CLIENT_MI => {
            let opcode = (header >> MI_OPCODE_SHIFT) & MI_OPCODE_MASK;
            match opcode {
                MI_NOOP | MI_USER_INTERRUPT | MI_BATCH_BUFFER_END => Ok(1),
                MI_STORE_DATA_IMM | MI_LOAD_REGISTER_IMM | MI_BATCH_BUFFER_START => {
                    debug_assert!(opcode >= MI_FIRST_MULTI_DWORD_OPCODE);
                    Ok((header & MI_LENGTH_MASK) as usize + 2)
                }
                _ => Err(FAULT_UNKNOWN_COMMAND),
            }
        }
        CLIENT_2D => match (header >> BLT_OPCODE_SHIFT) & BLT_OPCODE_MASK {
            XY_COLOR_BLT | XY_SRC_COPY_BLT => Ok((header & BLT_LENGTH_MASK) as usize + 2),
            _ => Err(FAULT_UNKNOWN_COMMAND),
        },
        _ => Err(FAULT_UNKNOWN_COMMAND),
    }
}

/// Decode one complete command (`dwords.len()` is what [`command_length`] said).
pub fn decode(dwords: &[u32]) -> Result<Command, u32> {
    let Some(&header) = dwords.first() else {
        return Err(FAULT_MALFORMED_COMMAND);
    };
    if command_length(header)? != dwords.len() {
        return Err(FAULT_MALFORMED_COMMAND);
    }
    let address = |lo: u32, hi: u32| (u64::from(hi) << 32 | u64::from(lo)) & !3;
    match header >> CLIENT_SHIFT {
        CLIENT_MI => match ((header >> MI_OPCODE_SHIFT) & MI_OPCODE_MASK, dwords) {
            (MI_NOOP, _) => Ok(Command::Noop),
            (MI_USER_INTERRUPT, _) => Ok(Command::UserInterrupt),
            (MI_BATCH_BUFFER_END, _) => Ok(Command::BatchBufferEnd),
            (MI_STORE_DATA_IMM, &[_, lo, hi, data]) => {
                Ok(Command::StoreDataImm { address: address(lo, hi), low: data, high: None })
            }
            (MI_STORE_DATA_IMM, &[_, lo, hi, data_lo, data_hi]) => Ok(Command::StoreDataImm {
                address: address(lo, hi),
                low: data_lo,
                high: Some(data_hi),
            }),
            (MI_BATCH_BUFFER_START, &[_, lo, hi]) => Ok(Command::BatchBufferStart {
                address: address(lo, hi),
                second_level: header & MI_BATCH_SECOND_LEVEL != 0,
                ppgtt: header & BBS_PPGTT != 0,
            }),
            // DWord Length = 2n - 1 for n pairs: an even length (odd pair dwords) is malformed.
            (MI_LOAD_REGISTER_IMM, [_, pairs @ ..]) if pairs.len().is_multiple_of(2) => Ok(Command::LoadRegisterImm {
                pairs: pairs.chunks_exact(2).map(|pair| (pair[0], pair[1])).collect(),
            }),
            _ => Err(FAULT_MALFORMED_COMMAND),
        },
        _ => match ((header >> BLT_OPCODE_SHIFT) & BLT_OPCODE_MASK, dwords) {
            (XY_COLOR_BLT, &[_, br13, tl, br, lo, hi, color]) => {
                let (pitch, cpp) = br13_fields(br13, ROP_PATCOPY)?;
                Ok(Command::ColorBlt {
                    dst: Surface { address: address(lo, hi), pitch, cpp },
                    rect: Rect::from_dwords(tl, br),
                    color,
                })
            }
            (XY_SRC_COPY_BLT, &[_, br13, tl, br, dlo, dhi, src_tl, src_pitch, slo, shi]) => {
                let (pitch, cpp) = br13_fields(br13, ROP_SRCCOPY)?;
                Ok(Command::SrcCopyBlt {
                    dst: Surface { address: address(dlo, dhi), pitch, cpp },
                    rect: Rect::from_dwords(tl, br),
                    src: Surface { address: address(slo, shi), pitch: pitch_of(src_pitch)?, cpp },
                    src_x: src_tl as u16,
                    src_y: (src_tl >> 16) as u16,
                })
            }
            _ => Err(FAULT_MALFORMED_COMMAND),
        },
    }
}

/// Pitch and bytes per pixel from BR13, checking the ROP the command supports.
fn br13_fields(br13: u32, rop: u32) -> Result<(u32, u32), u32> {
    if (br13 >> BR13_ROP_SHIFT) & 0xff != rop {
        // model: only the copy ROPs; anything else would silently do the wrong thing.
        return Err(FAULT_MALFORMED_COMMAND);
    }
    let cpp = match (br13 >> BR13_DEPTH_SHIFT) & 3 {
        DEPTH_8 => 1,
        DEPTH_16_565 | DEPTH_16_1555 => 2,
        _ => 4, // DEPTH_32
    };
    Ok((pitch_of(br13)?, cpp))
}

/// A 16-bit signed pitch; negative (bottom-up) pitches are not modelled.
fn pitch_of(dword: u32) -> Result<u32, u32> {
    let pitch = dword & BR13_PITCH_MASK;
    if pitch & 0x8000 != 0 {
        return Err(FAULT_MALFORMED_COMMAND);
    }
    Ok(pitch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_follow_the_gen8_encodings() {
        assert_eq!(command_length(mi_instr(MI_NOOP, 0)), Ok(1));
        assert_eq!(mi_instr(MI_USER_INTERRUPT, 0), 0x0100_0000); // i915 MI_USER_INTERRUPT
        assert_eq!(command_length(mi_instr(MI_USER_INTERRUPT, 0)), Ok(1));
        assert_eq!(command_length(mi_instr(MI_BATCH_BUFFER_END, 0)), Ok(1));
        assert_eq!(mi_instr(MI_STORE_DATA_IMM, 2), 0x1000_0002); // MI_STORE_DWORD_IMM_GEN4
        assert_eq!(command_length(mi_instr(MI_STORE_DATA_IMM, 2)), Ok(4));
        assert_eq!(mi_instr(MI_BATCH_BUFFER_START, 1), 0x1880_0001); // ..._START_GEN8
        assert_eq!(command_length(mi_instr(MI_BATCH_BUFFER_START, 1)), Ok(3));
        assert_eq!(mi_instr(MI_LOAD_REGISTER_IMM, 1), 0x1100_0001); // MI_LOAD_REGISTER_IMM(1)
        assert_eq!(command_length(mi_instr(MI_LOAD_REGISTER_IMM, 3)), Ok(5));
        assert_eq!(blt_instr(XY_COLOR_BLT, 0), 0x5400_0000); // XY_COLOR_BLT_CMD
        assert_eq!(command_length(blt_instr(XY_COLOR_BLT, 5)), Ok(7));
        assert_eq!(blt_instr(XY_SRC_COPY_BLT, 0), 0x54c0_0000); // XY_SRC_COPY_BLT_CMD
        assert_eq!(command_length(blt_instr(XY_SRC_COPY_BLT, 8)), Ok(10));
        assert_eq!(command_length(mi_instr(0x3f, 0)), Err(FAULT_UNKNOWN_COMMAND));
        assert_eq!(command_length(3 << 29), Err(FAULT_UNKNOWN_COMMAND));
        assert_eq!(command_length(blt_instr(0x01, 0)), Err(FAULT_UNKNOWN_COMMAND));
    }

    #[test]
    fn decodes_each_command() {
        assert_eq!(decode(&[0]), Ok(Command::Noop));
        assert_eq!(
            decode(&[mi_instr(MI_STORE_DATA_IMM, 2), 0x1003, 0x1, 7]),
            Ok(Command::StoreDataImm { address: 0x1_0000_1000, low: 7, high: None })
        );
        assert_eq!(
            decode(&[mi_instr(MI_STORE_DATA_IMM, 3), 0x1000, 0, 7, 8]),
            Ok(Command::StoreDataImm { address: 0x1000, low: 7, high: Some(8) })
        );
        assert_eq!(
            decode(&[mi_instr(MI_BATCH_BUFFER_START, 1) | MI_BATCH_SECOND_LEVEL, 0x2000, 0]),
            Ok(Command::BatchBufferStart { address: 0x2000, second_level: true, ppgtt: false })
        );
        assert_eq!(
            decode(&[mi_instr(MI_BATCH_BUFFER_START, 1) | BBS_PPGTT, 0x3000, 1]),
            Ok(Command::BatchBufferStart { address: 0x1_0000_3000, second_level: false, ppgtt: true })
        );
        assert_eq!(
            decode(&[mi_instr(MI_LOAD_REGISTER_IMM, 3), 0x22274, 1, 0x22270, 0x2000]),
            Ok(Command::LoadRegisterImm { pairs: vec![(0x22274, 1), (0x22270, 0x2000)] })
        );
        let br13 = DEPTH_32 << BR13_DEPTH_SHIFT | ROP_PATCOPY << BR13_ROP_SHIFT | 256;
        assert_eq!(
            decode(&[blt_instr(XY_COLOR_BLT, 5) | BLT_WRITE_RGB | BLT_WRITE_ALPHA, br13, 2 << 16 | 1, 4 << 16 | 3, 0x3000, 0, 0xff]),
            Ok(Command::ColorBlt {
                dst: Surface { address: 0x3000, pitch: 256, cpp: 4 },
                rect: Rect { x1: 1, y1: 2, x2: 3, y2: 4 },
                color: 0xff,
            })
        );
        let br13 = DEPTH_8 << BR13_DEPTH_SHIFT | ROP_SRCCOPY << BR13_ROP_SHIFT | 64;
        assert_eq!(
            decode(&[blt_instr(XY_SRC_COPY_BLT, 8), br13, 0, 1 << 16 | 1, 0x3000, 0, 5 << 16 | 6, 32, 0x4000, 0]),
            Ok(Command::SrcCopyBlt {
                dst: Surface { address: 0x3000, pitch: 64, cpp: 1 },
                rect: Rect { x1: 0, y1: 0, x2: 1, y2: 1 },
                src: Surface { address: 0x4000, pitch: 32, cpp: 1 },
                src_x: 6,
                src_y: 5,
            })
        );
    }

    #[test]
    fn malformed_commands_are_faults() {
        // Wrong lengths.
        assert_eq!(decode(&[mi_instr(MI_STORE_DATA_IMM, 1), 0, 0]), Err(FAULT_MALFORMED_COMMAND));
        assert_eq!(decode(&[mi_instr(MI_BATCH_BUFFER_START, 2), 0, 0, 0]), Err(FAULT_MALFORMED_COMMAND));
        assert_eq!(decode(&[blt_instr(XY_COLOR_BLT, 4), 0, 0, 0, 0, 0]), Err(FAULT_MALFORMED_COMMAND));
        // MI_LOAD_REGISTER_IMM: DWord Length must be 2n - 1 (0 would be half a pair).
        assert_eq!(decode(&[mi_instr(MI_LOAD_REGISTER_IMM, 0), 0x22270]), Err(FAULT_MALFORMED_COMMAND));
        assert_eq!(decode(&[mi_instr(MI_LOAD_REGISTER_IMM, 2), 0x22270, 0, 0x22274]), Err(FAULT_MALFORMED_COMMAND));
        // Slice shorter than the header says.
        assert_eq!(decode(&[mi_instr(MI_STORE_DATA_IMM, 2)]), Err(FAULT_MALFORMED_COMMAND));
        assert_eq!(decode(&[]), Err(FAULT_MALFORMED_COMMAND));
        // Bad ROP, negative pitch.
        let bad_rop = DEPTH_32 << BR13_DEPTH_SHIFT | 0x66 << BR13_ROP_SHIFT | 64;
        assert_eq!(decode(&[blt_instr(XY_COLOR_BLT, 5), bad_rop, 0, 0, 0, 0, 0]), Err(FAULT_MALFORMED_COMMAND));
        let negative = DEPTH_32 << BR13_DEPTH_SHIFT | ROP_PATCOPY << BR13_ROP_SHIFT | 0x8000;
        assert_eq!(decode(&[blt_instr(XY_COLOR_BLT, 5), negative, 0, 0, 0, 0, 0]), Err(FAULT_MALFORMED_COMMAND));
    }
}
