//! Decoding the A64 store instructions the hypervisor performs for a guest
//! when a store to a write-protected (tracked) page traps and the syndrome
//! does not describe it (`ESR_EL2.ISV` = 0: pairs, writeback forms).
//!
//! Encodings follow the Arm ARM (DDI 0487), C4.1.94 "Loads and Stores":
//!
//! | form | bits 29:24 | other fixed bits | offset |
//! |---|---|---|---|
//! | `STR`/`STRB`/`STRH` (unsigned offset) | `111001` | opc 23:22 = 00 | imm12 << size |
//! | `STUR`, `STTR`, `STR` post/pre-index | `111000` | opc = 00, bit 21 = 0, bits 11:10 = 00/10/01/11 | imm9 |
//! | `STR` (register offset) | `111000` | opc = 00, bit 21 = 1, bits 11:10 = 10 | Rm extended, << size if S |
//! | `STNP`/`STP` (W and X) | `101` 29:27, V 26 = 0 | L 22 = 0, bits 24:23 = 00 (STNP), 01 post, 10 offset, 11 pre | imm7 << 2 or 3 |
//!
//! Everything else is refused: SIMD&FP stores (V = 1), exclusives and
//! atomics, `STGP`, tag stores, and the CONSTRAINED UNPREDICTABLE writeback
//! forms whose base is also a source. Register 31 is SP as a base and the
//! zero register as a source or register offset.

/// Register number 31: SP as a base, the zero register elsewhere.
pub const SP_OR_ZR: u8 = 31;

/// How the address is formed from the base register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Indexing {
    /// Address = base + offset; the base is unchanged.
    Offset,
    /// Address = base + offset; the base becomes the address.
    PreIndex,
    /// Address = base; the base becomes base + offset.
    PostIndex,
}

/// The offset added to the base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offset {
    /// A constant, already scaled and sign-extended.
    Immediate(i64),
    /// Register `rm` (31: zero), extended and shifted.
    Register {
        /// The offset register.
        rm: u8,
        /// How it is extended.
        extend: Extend,
        /// Left shift applied after extension (0 or log2 of the access size).
        shift: u8,
    },
}

/// Extension of a register offset (the `option` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extend {
    /// `UXTW`: the low 32 bits, zero-extended.
    Uxtw,
    /// `LSL`/`UXTX`: all 64 bits.
    Lsl,
    /// `SXTW`: the low 32 bits, sign-extended.
    Sxtw,
    /// `SXTX`: all 64 bits.
    Sxtx,
}

/// A decoded store of one or two general-purpose registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedStore {
    /// The base register; 31 is SP.
    pub base: u8,
    /// The offset.
    pub offset: Offset,
    /// How base and offset combine, and whether the base is written back.
    pub indexing: Indexing,
    /// Bytes stored per register: 1, 2, 4 or 8.
    pub width: u8,
    /// The source registers (31: zero); the second only for pairs.
    pub sources: [u8; 2],
    /// 1 for single-register stores, 2 for pairs.
    pub count: u8,
}

/// Why an instruction was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not one of the supported store encodings (loads, SIMD, exclusives,
    /// atomics, system instructions, ...).
    NotAPlainStore,
    /// A writeback form whose base register is also a source:
    /// CONSTRAINED UNPREDICTABLE, not emulated.
    WritebackOverlap,
    /// An unallocated `option` of the register-offset form.
    UnallocatedExtend,
}

/// One store the instruction makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Store {
    /// Virtual address of the first byte.
    pub address: u64,
    /// Bytes: 1, 2, 4 or 8.
    pub width: u8,
    /// The value, in its low `width` bytes.
    pub value: u64,
}

/// What executing a [`DecodedStore`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Execution {
    /// The stores, in address order; only the first `count` are meaningful.
    pub stores: [Store; 2],
    /// 1 or 2.
    pub count: u8,
    /// The base register's new value, for writeback forms.
    pub writeback: Option<u64>,
}

impl Execution {
    /// The meaningful stores.
    pub fn stores(&self) -> &[Store] {
        &self.stores[..usize::from(self.count.min(2))]
    }
}

const fn bits(insn: u32, high: u32, low: u32) -> u32 {
    (insn >> low) & ((1 << (high - low + 1)) - 1)
}

const fn sign_extend(value: u32, width: u32) -> i64 {
    let shift = 64 - width;
    ((value as i64) << shift) >> shift
}

/// Decodes `insn` if it is one of the supported stores (module docs).
///
/// # Errors
/// [`Refusal`] for anything else.
pub fn decode(insn: u32) -> Result<DecodedStore, Refusal> {
    let rt = bits(insn, 4, 0) as u8;
    let rn = bits(insn, 9, 5) as u8;
    // Single register, unsigned scaled offset.
    if insn & 0x3fc0_0000 == 0x3900_0000 {
        let size = bits(insn, 31, 30);
        let offset = i64::from(bits(insn, 21, 10)) << size;
        return Ok(single(rn, rt, size, Offset::Immediate(offset), Indexing::Offset));
    }
    // Single register, 9-bit signed offset: STUR, STTR, post- and pre-index.
    if insn & 0x3fe0_0000 == 0x3800_0000 {
        let size = bits(insn, 31, 30);
        let offset = Offset::Immediate(sign_extend(bits(insn, 20, 12), 9));
        let indexing = match bits(insn, 11, 10) {
            0b00 | 0b10 => Indexing::Offset,
            0b01 => Indexing::PostIndex,
            _ => Indexing::PreIndex,
        };
        if indexing != Indexing::Offset && rn == rt && rn != SP_OR_ZR {
            return Err(Refusal::WritebackOverlap);
        }
        return Ok(single(rn, rt, size, offset, indexing));
    }
    // Single register, register offset.
    if insn & 0x3fe0_0c00 == 0x3820_0800 {
        let size = bits(insn, 31, 30);
        let extend = match bits(insn, 15, 13) {
            0b010 => Extend::Uxtw,
            0b011 => Extend::Lsl,
            0b110 => Extend::Sxtw,
            0b111 => Extend::Sxtx,
            _ => return Err(Refusal::UnallocatedExtend),
        };
        let shift = if bits(insn, 12, 12) != 0 { size as u8 } else { 0 };
        let offset = Offset::Register { rm: bits(insn, 20, 16) as u8, extend, shift };
        return Ok(single(rn, rt, size, offset, Indexing::Offset));
    }
    // Pairs of W or X registers: STNP, STP post-index, offset, pre-index.
    if insn & 0x3e40_0000 == 0x2800_0000 {
        let width = match bits(insn, 31, 30) {
            0b00 => 4u8,
            0b10 => 8,
            // 0b01 is STGP, 0b11 unallocated.
            _ => return Err(Refusal::NotAPlainStore),
        };
        let rt2 = bits(insn, 14, 10) as u8;
        let offset = sign_extend(bits(insn, 21, 15), 7) * i64::from(width);
        let indexing = match bits(insn, 24, 23) {
            0b00 | 0b10 => Indexing::Offset,
            0b01 => Indexing::PostIndex,
            _ => Indexing::PreIndex,
        };
        if indexing != Indexing::Offset && (rn == rt || rn == rt2) && rn != SP_OR_ZR {
            return Err(Refusal::WritebackOverlap);
        }
        return Ok(DecodedStore {
            base: rn,
            offset: Offset::Immediate(offset),
            indexing,
            width,
            sources: [rt, rt2],
            count: 2,
        });
    }
    Err(Refusal::NotAPlainStore)
}

fn single(rn: u8, rt: u8, size: u32, offset: Offset, indexing: Indexing) -> DecodedStore {
    DecodedStore { base: rn, offset, indexing, width: 1 << size, sources: [rt, SP_OR_ZR], count: 1 }
}

impl DecodedStore {
    /// The stores and writeback, given the general-purpose registers
    /// (`x(n)` for n in 0..=30) and the stack pointer in use. Address
    /// arithmetic wraps, as the CPU's does.
    pub fn execute(&self, x: impl Fn(u8) -> u64, sp: u64) -> Execution {
        let gpr = |n: u8| if n == SP_OR_ZR { 0 } else { x(n) };
        let base = if self.base == SP_OR_ZR { sp } else { x(self.base) };
        let offset = match self.offset {
            Offset::Immediate(offset) => offset as u64,
            Offset::Register { rm, extend, shift } => {
                let value = gpr(rm);
                let extended = match extend {
                    Extend::Uxtw => value & 0xffff_ffff,
                    Extend::Sxtw => value as u32 as i32 as i64 as u64,
                    Extend::Lsl | Extend::Sxtx => value,
                };
                extended << shift
            }
        };
        let address = match self.indexing {
            Indexing::PostIndex => base,
            Indexing::Offset | Indexing::PreIndex => base.wrapping_add(offset),
        };
        let writeback = match self.indexing {
            Indexing::Offset => None,
            Indexing::PreIndex => Some(address),
            Indexing::PostIndex => Some(base.wrapping_add(offset)),
        };
        let mask = if self.width >= 8 { u64::MAX } else { (1u64 << (u32::from(self.width) * 8)) - 1 };
        let store = |i: usize| Store {
            address: address.wrapping_add(i as u64 * u64::from(self.width)),
            width: self.width,
            value: gpr(self.sources[i]) & mask,
        };
        Execution { stores: [store(0), store(1)], count: self.count, writeback }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registers x0..x30 hold 0x1000 * (n + 1) + n; SP is 0x8000.
    fn x(n: u8) -> u64 {
        0x1000 * (u64::from(n) + 1) + u64::from(n)
    }
    const SP: u64 = 0x8000;

    fn run(insn: u32) -> Execution {
        decode(insn).unwrap().execute(x, SP)
    }

    fn one(address: u64, width: u8, value: u64) -> Store {
        Store { address, width, value }
    }

    #[test]
    fn unsigned_offset_forms_scale_the_immediate() {
        // str x1, [x2, #16]
        let e = run(0xf900_0841);
        assert_eq!(e.stores(), [one(x(2) + 16, 8, x(1))]);
        assert_eq!(e.writeback, None);
        // str w3, [x4, #8]
        assert_eq!(run(0xb900_0883).stores(), [one(x(4) + 8, 4, x(3) & 0xffff_ffff)]);
        // strh w5, [x6, #2]
        assert_eq!(run(0x7900_04c5).stores(), [one(x(6) + 2, 2, x(5) & 0xffff)]);
        // strb w7, [x8, #1]
        assert_eq!(run(0x3900_0507).stores(), [one(x(8) + 1, 1, x(7) & 0xff)]);
        // str xzr, [sp, #8]: SP as base, zero as source.
        assert_eq!(run(0xf900_07ff).stores(), [one(SP + 8, 8, 0)]);
    }

    #[test]
    fn nine_bit_forms_index_and_write_back() {
        // stur x1, [x2, #-8]
        let e = run(0xf81f_8041);
        assert_eq!(e.stores(), [one(x(2) - 8, 8, x(1))]);
        assert_eq!(e.writeback, None);
        // str x1, [x2], #16 (post-index)
        let e = run(0xf801_0441);
        assert_eq!(e.stores(), [one(x(2), 8, x(1))]);
        assert_eq!(e.writeback, Some(x(2) + 16));
        // str w1, [x2, #-4]! (pre-index)
        let e = run(0xb81f_cc41);
        assert_eq!(e.stores(), [one(x(2) - 4, 4, x(1) & 0xffff_ffff)]);
        assert_eq!(e.writeback, Some(x(2) - 4));
        // str x30, [sp, #-16]! : SP base with writeback is allowed.
        let e = run(0xf81f_0ffe);
        assert_eq!(e.stores(), [one(SP - 16, 8, x(30))]);
        assert_eq!(e.writeback, Some(SP - 16));
        // sttr w1, [x2, #4]: unprivileged, no writeback.
        let e = run(0xb800_4841);
        assert_eq!(e.stores(), [one(x(2) + 4, 4, x(1) & 0xffff_ffff)]);
        assert_eq!(e.writeback, None);
    }

    #[test]
    fn register_offset_forms_extend_and_shift() {
        // str x1, [x2, x3, lsl #3]
        assert_eq!(run(0xf823_7841).stores(), [one(x(2) + (x(3) << 3), 8, x(1))]);
        // str x1, [x2, x3]
        assert_eq!(run(0xf823_6841).stores(), [one(x(2) + x(3), 8, x(1))]);
        // strb w1, [x2, w3, uxtw]
        assert_eq!(run(0x3823_4841).stores(), [one(x(2) + (x(3) & 0xffff_ffff), 1, x(1) & 0xff)]);
        // str w1, [x2, w3, sxtw #2] with w3 negative
        let d = decode(0xb823_d841).unwrap();
        let e = d.execute(|n| if n == 3 { 0xffff_ffff } else { x(n) }, SP);
        assert_eq!(e.stores(), [one(x(2).wrapping_sub(4), 4, x(1) & 0xffff_ffff)]);
        // str x1, [x2, xzr]: register 31 as offset is zero.
        assert_eq!(run(0xf83f_6841).stores(), [one(x(2), 8, x(1))]);
        // option 0b000 is unallocated.
        assert_eq!(decode(0xf823_0841), Err(Refusal::UnallocatedExtend));
    }

    #[test]
    fn pairs_store_two_registers_in_address_order() {
        // stp x1, x2, [x3, #16]
        let e = run(0xa901_0861);
        assert_eq!(e.stores(), [one(x(3) + 16, 8, x(1)), one(x(3) + 24, 8, x(2))]);
        assert_eq!(e.writeback, None);
        // stp w1, w2, [x3, #-8]!
        let e = run(0x29bf_0861);
        assert_eq!(e.stores(), [one(x(3) - 8, 4, x(1) & 0xffff_ffff), one(x(3) - 4, 4, x(2) & 0xffff_ffff)]);
        assert_eq!(e.writeback, Some(x(3) - 8));
        // stp x29, x30, [sp, #-32]!
        let e = run(0xa9be_7bfd);
        assert_eq!(e.stores(), [one(SP - 32, 8, x(29)), one(SP - 24, 8, x(30))]);
        assert_eq!(e.writeback, Some(SP - 32));
        // stp x1, x2, [x3], #32 (post-index)
        let e = run(0xa882_0861);
        assert_eq!(e.stores(), [one(x(3), 8, x(1)), one(x(3) + 8, 8, x(2))]);
        assert_eq!(e.writeback, Some(x(3) + 32));
        // stnp x1, x2, [x3]
        let e = run(0xa800_0861);
        assert_eq!(e.stores(), [one(x(3), 8, x(1)), one(x(3) + 8, 8, x(2))]);
        assert_eq!(e.writeback, None);
        // stp xzr, xzr, [x0]
        assert_eq!(run(0xa900_7c1f).stores(), [one(x(0), 8, 0), one(x(0) + 8, 8, 0)]);
    }

    #[test]
    fn everything_else_is_refused() {
        for (insn, what) in [
            (0xf940_0841, "ldr x1, [x2, #16]"),
            (0xa941_0861, "ldp x1, x2, [x3, #16]"),
            (0xc800_7c41, "stxr w0, x1, [x2]"),
            (0xc89f_fc41, "stlr x1, [x2]"),
            (0xf820_0041, "ldadd x0, x1, [x2]"),
            (0x3d80_0041, "str q1, [x2]"),
            (0xfd00_0041, "str d1, [x2]"),
            (0xad00_0841, "stp q1, q2, [x2]"),
            (0x6900_0841, "stgp x1, x2, [x2]"),
            (0xd50b_7420, "dc zva, x0"),
            (0xd503_201f, "nop"),
            (0xf980_0040, "prfm pldl1keep, [x2]"),
        ] {
            assert_eq!(decode(insn), Err(Refusal::NotAPlainStore), "{what} ({insn:#010x})");
        }
    }

    #[test]
    fn writeback_onto_a_source_is_refused() {
        // str x1, [x1], #8
        assert_eq!(decode(0xf800_8421), Err(Refusal::WritebackOverlap));
        // stp x1, x2, [x2, #16]!
        assert_eq!(decode(0xa981_0841), Err(Refusal::WritebackOverlap));
        // str x1, [x1, #8]: no writeback, fine.
        assert!(decode(0xf900_0421).is_ok());
    }

    #[test]
    fn addresses_wrap_like_the_cpu() {
        let d = decode(0xf81f_8041).unwrap(); // stur x1, [x2, #-8]
        let e = d.execute(|n| if n == 2 { 4 } else { 0 }, 0);
        assert_eq!(e.stores()[0].address, 4u64.wrapping_sub(8));
    }
}
