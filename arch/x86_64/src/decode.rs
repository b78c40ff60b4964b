//! Decoding the guest instruction behind an exit, with `iced-x86`.
//!
//! QEMU TCG gives neither next-RIP nor decode assists (DESIGN.md §6), so
//! the hypervisor reads the instruction bytes at the guest's RIP and
//! decodes them itself:
//!
//! - for an intercepted instruction (VMMCALL, CPUID, RDMSR, WRMSR, HLT),
//!   [`intercepted_length`] checks that the bytes really are that
//!   instruction (prefixes included) and returns its length;
//! - for a nested page fault in an emulated MMIO window, [`decode_mmio`]
//!   turns the access into an [`MmioOperation`]: which register receives a
//!   load (and how it is extended), or which register or immediate a store
//!   writes. Only plain moves are emulated; anything else (string moves,
//!   read-modify-write arithmetic, vector loads) is refused, and the caller
//!   applies the partition's fault policy.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// The longest x86 instruction.
pub const MAX_INSTRUCTION_LENGTH: usize = 15;

/// A general-purpose register by its encoding number (RAX = 0 ... R15 = 15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gpr(pub u8);

impl Gpr {
    /// RAX.
    pub const RAX: Gpr = Gpr(0);
    /// RCX.
    pub const RCX: Gpr = Gpr(1);
    /// RDX.
    pub const RDX: Gpr = Gpr(2);
    /// RBX.
    pub const RBX: Gpr = Gpr(3);
    /// RSP.
    pub const RSP: Gpr = Gpr(4);
    /// RBP.
    pub const RBP: Gpr = Gpr(5);
    /// RSI.
    pub const RSI: Gpr = Gpr(6);
    /// RDI.
    pub const RDI: Gpr = Gpr(7);
}

/// The part of a general-purpose register an instruction names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterSlot {
    /// The full register.
    pub gpr: Gpr,
    /// Operand width in bytes: 1, 2, 4 or 8.
    pub width: u8,
    /// AH, CH, DH or BH: bits 15:8 rather than 7:0.
    pub high_byte: bool,
}

impl RegisterSlot {
    fn from_iced(register: Register) -> Option<RegisterSlot> {
        if !register.is_gpr() {
            return None;
        }
        let high_byte = matches!(register, Register::AH | Register::CH | Register::DH | Register::BH);
        let gpr = Gpr(register.full_register().number() as u8);
        Some(RegisterSlot { gpr, width: register.size() as u8, high_byte })
    }

    /// The value this slot holds in a register whose full value is `full`.
    pub fn read(self, full: u64) -> u64 {
        match (self.width, self.high_byte) {
            (1, true) => (full >> 8) & 0xff,
            (8, _) => full,
            (width, _) => full & ((1u64 << (u32::from(width) * 8)) - 1),
        }
    }

    /// The full register after writing `value` into this slot of `old`,
    /// as the CPU does: a 32-bit write clears bits 63:32, an 8- or 16-bit
    /// write keeps the other bits.
    pub fn merge(self, old: u64, value: u64) -> u64 {
        match (self.width, self.high_byte) {
            (1, true) => (old & !0xff00) | ((value & 0xff) << 8),
            (1, false) => (old & !0xff) | (value & 0xff),
            (2, _) => (old & !0xffff) | (value & 0xffff),
            (4, _) => value & 0xffff_ffff,
            _ => value,
        }
    }
}

/// How a loaded value reaches its register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extension {
    /// The load is as wide as the register (MOV).
    None,
    /// Zero-extended (MOVZX).
    Zero,
    /// Sign-extended (MOVSX, MOVSXD).
    Sign,
}

/// What a store writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreSource {
    /// The low bytes of a register.
    Register(RegisterSlot),
    /// An immediate, already sign-extended to the access size.
    Immediate(u64),
}

/// A decoded guest access to emulated MMIO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioOperation {
    /// A load of `size` bytes into `destination`.
    Load {
        /// The register written.
        destination: RegisterSlot,
        /// Bytes read from the device.
        size: u8,
        /// How the value is widened to the register.
        extension: Extension,
    },
    /// A store of `size` bytes.
    Store {
        /// Where the value comes from.
        source: StoreSource,
        /// Bytes written to the device.
        size: u8,
    },
}

impl MmioOperation {
    /// The device access size in bytes.
    pub fn size(&self) -> u8 {
        match *self {
            MmioOperation::Load { size, .. } | MmioOperation::Store { size, .. } => size,
        }
    }

    /// The register value after a load of `raw` (the device's value in
    /// its low `size` bytes) into a register that held `old`.
    pub fn loaded_register(&self, old: u64, raw: u64) -> Option<u64> {
        let MmioOperation::Load { destination, size, extension } = *self else { return None };
        let bits = u32::from(size) * 8;
        let raw = if bits >= 64 { raw } else { raw & ((1u64 << bits) - 1) };
        let value = match extension {
            Extension::Sign if bits < 64 => ((raw << (64 - bits)) as i64 >> (64 - bits)) as u64,
            _ => raw,
        };
        Some(destination.merge(old, value))
    }
}

/// A decoded MMIO instruction: its length and what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioInstruction {
    /// Length in bytes, prefixes included: RIP advances by this much.
    pub length: u8,
    /// The access.
    pub operation: MmioOperation,
}

/// Why an instruction was not decoded or not emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a valid instruction (or cut short: fewer bytes than it needs).
    Invalid,
    /// A valid instruction this path does not handle.
    Unsupported(Mnemonic),
}

/// The CPU mode that decides how bytes decode: 16, 32 or 64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bitness(pub u32);

impl Bitness {
    /// From the guest's EFER.LMA and its code segment's L and D/B bits.
    pub fn of_guest(long_mode_active: bool, cs_long: bool, cs_default_32: bool) -> Bitness {
        match (long_mode_active && cs_long, cs_default_32) {
            (true, _) => Bitness(64),
            (false, true) => Bitness(32),
            (false, false) => Bitness(16),
        }
    }
}

fn decode_one(bytes: &[u8], bitness: Bitness) -> Result<Instruction, DecodeError> {
    let mut decoder = Decoder::new(bitness.0, bytes, DecoderOptions::NONE);
    let instruction = decoder.decode();
    if instruction.is_invalid() { Err(DecodeError::Invalid) } else { Ok(instruction) }
}

/// An instruction the hypervisor intercepts by exit reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intercepted {
    /// VMMCALL (AMD) or VMCALL (Intel): a hypercall.
    Hypercall,
    /// CPUID.
    Cpuid,
    /// RDMSR.
    Rdmsr,
    /// WRMSR.
    Wrmsr,
    /// HLT.
    Hlt,
}

impl Intercepted {
    /// The encodings without prefixes, which is how compilers and
    /// assemblers emit them: recognised without the full decoder.
    fn plain_encodings(self) -> &'static [&'static [u8]] {
        match self {
            Intercepted::Hypercall => &[&[0x0f, 0x01, 0xd9], &[0x0f, 0x01, 0xc1]],
            Intercepted::Cpuid => &[&[0x0f, 0xa2]],
            Intercepted::Rdmsr => &[&[0x0f, 0x32]],
            Intercepted::Wrmsr => &[&[0x0f, 0x30]],
            Intercepted::Hlt => &[&[0xf4]],
        }
    }

    fn accepts(self, mnemonic: Mnemonic) -> bool {
        match self {
            Intercepted::Hypercall => matches!(mnemonic, Mnemonic::Vmmcall | Mnemonic::Vmcall),
            Intercepted::Cpuid => mnemonic == Mnemonic::Cpuid,
            Intercepted::Rdmsr => mnemonic == Mnemonic::Rdmsr,
            Intercepted::Wrmsr => mnemonic == Mnemonic::Wrmsr,
            Intercepted::Hlt => mnemonic == Mnemonic::Hlt,
        }
    }
}

/// The length of `expected` if `bytes` start with its encoding without
/// prefixes. None of these opcodes' first bytes is a prefix, so such a
/// match is the whole instruction; `None` means "decode it fully".
pub fn plain_length(bytes: &[u8], expected: Intercepted) -> Option<u8> {
    expected.plain_encodings().iter().find(|plain| bytes.starts_with(plain)).map(|plain| plain.len() as u8)
}

/// The length of the intercepted instruction `expected` at the start of
/// `bytes`.
///
/// # Errors
/// [`DecodeError::Invalid`] for bytes that do not decode,
/// [`DecodeError::Unsupported`] for another instruction than `expected`
/// (the guest changed the bytes after the exit, or the exit reason and the
/// memory disagree).
pub fn intercepted_length(bytes: &[u8], bitness: Bitness, expected: Intercepted) -> Result<u8, DecodeError> {
    if let Some(length) = plain_length(bytes, expected) {
        return Ok(length);
    }
    let instruction = decode_one(bytes, bitness)?;
    if expected.accepts(instruction.mnemonic()) {
        Ok(instruction.len() as u8)
    } else {
        Err(DecodeError::Unsupported(instruction.mnemonic()))
    }
}

/// Decodes the instruction at the start of `bytes` as a load or store to
/// emulated MMIO.
///
/// # Errors
/// [`DecodeError`] for bytes that do not decode or an instruction other
/// than a MOV/MOVZX/MOVSX/MOVSXD between a general-purpose register (or an
/// immediate) and memory.
pub fn decode_mmio(bytes: &[u8], bitness: Bitness) -> Result<MmioInstruction, DecodeError> {
    let instruction = decode_one(bytes, bitness)?;
    let mnemonic = instruction.mnemonic();
    let unsupported = DecodeError::Unsupported(mnemonic);
    if instruction.op_count() != 2 || instruction.has_rep_prefix() || instruction.has_repne_prefix() || instruction.has_lock_prefix() {
        return Err(unsupported);
    }
    let size = instruction.memory_size().size() as u8;
    if !matches!(size, 1 | 2 | 4 | 8) {
        return Err(unsupported);
    }
    let register = |operand: u32| RegisterSlot::from_iced(instruction.op_register(operand)).ok_or(unsupported);
    let operation = match (mnemonic, instruction.op0_kind(), instruction.op1_kind()) {
        (Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd, OpKind::Register, OpKind::Memory) => {
            let destination = register(0)?;
            let extension = match mnemonic {
                Mnemonic::Movzx => Extension::Zero,
                Mnemonic::Movsx | Mnemonic::Movsxd => Extension::Sign,
                _ => Extension::None,
            };
            MmioOperation::Load { destination, size, extension }
        }
        (Mnemonic::Mov, OpKind::Memory, OpKind::Register) => {
            MmioOperation::Store { source: StoreSource::Register(register(1)?), size }
        }
        (
            Mnemonic::Mov,
            OpKind::Memory,
            OpKind::Immediate8 | OpKind::Immediate16 | OpKind::Immediate32 | OpKind::Immediate32to64,
        ) => MmioOperation::Store { source: StoreSource::Immediate(instruction.immediate(1)), size },
        _ => return Err(unsupported),
    };
    Ok(MmioInstruction { length: instruction.len() as u8, operation })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Bitness = Bitness(64);

    fn mmio(bytes: &[u8]) -> MmioInstruction {
        decode_mmio(bytes, LONG).unwrap()
    }

    #[test]
    fn loads_name_their_register_size_and_extension() {
        // mov eax, [rbx]
        assert_eq!(
            mmio(&[0x8b, 0x03]),
            MmioInstruction {
                length: 2,
                operation: MmioOperation::Load {
                    destination: RegisterSlot { gpr: Gpr::RAX, width: 4, high_byte: false },
                    size: 4,
                    extension: Extension::None
                }
            }
        );
        // mov r9, [rdi + 0x10]
        let i = mmio(&[0x4c, 0x8b, 0x4f, 0x10]);
        assert_eq!(i.length, 4);
        assert_eq!(
            i.operation,
            MmioOperation::Load { destination: RegisterSlot { gpr: Gpr(9), width: 8, high_byte: false }, size: 8, extension: Extension::None }
        );
        // movzx ecx, byte [rax]
        let i = mmio(&[0x0f, 0xb6, 0x08]);
        assert_eq!(
            i.operation,
            MmioOperation::Load { destination: RegisterSlot { gpr: Gpr::RCX, width: 4, high_byte: false }, size: 1, extension: Extension::Zero }
        );
        // movsx rdx, word [rax]
        let i = mmio(&[0x48, 0x0f, 0xbf, 0x10]);
        assert_eq!(
            i.operation,
            MmioOperation::Load { destination: RegisterSlot { gpr: Gpr::RDX, width: 8, high_byte: false }, size: 2, extension: Extension::Sign }
        );
        // mov ah, [rbx]
        let i = mmio(&[0x8a, 0x23]);
        assert_eq!(
            i.operation,
            MmioOperation::Load { destination: RegisterSlot { gpr: Gpr::RAX, width: 1, high_byte: true }, size: 1, extension: Extension::None }
        );
    }

    #[test]
    fn stores_name_their_source() {
        // mov [rbx], ecx
        assert_eq!(
            mmio(&[0x89, 0x0b]).operation,
            MmioOperation::Store { source: StoreSource::Register(RegisterSlot { gpr: Gpr::RCX, width: 4, high_byte: false }), size: 4 }
        );
        // mov word [rax], 0x1234 (operand-size prefix: 5 bytes)
        let i = mmio(&[0x66, 0xc7, 0x00, 0x34, 0x12]);
        assert_eq!((i.length, i.operation), (5, MmioOperation::Store { source: StoreSource::Immediate(0x1234), size: 2 }));
        // mov qword [rax], -1 (imm32 sign-extended to 64 bits)
        let i = mmio(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(i.operation, MmioOperation::Store { source: StoreSource::Immediate(u64::MAX), size: 8 });
        // mov dword [rip + 0x100], 7: RIP-relative with a displacement and an immediate.
        let i = mmio(&[0xc7, 0x05, 0x00, 0x01, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00]);
        assert_eq!((i.length, i.operation), (10, MmioOperation::Store { source: StoreSource::Immediate(7), size: 4 }));
    }

    #[test]
    fn anything_but_a_plain_move_is_refused() {
        // add [rax], ecx: read-modify-write.
        assert_eq!(decode_mmio(&[0x01, 0x08], LONG), Err(DecodeError::Unsupported(Mnemonic::Add)));
        // rep movsb.
        assert!(matches!(decode_mmio(&[0xf3, 0xa4], LONG), Err(DecodeError::Unsupported(_))));
        // movdqa xmm0, [rax]: not a general-purpose register.
        assert!(matches!(decode_mmio(&[0x66, 0x0f, 0x6f, 0x00], LONG), Err(DecodeError::Unsupported(_))));
        // mov eax, ebx: no memory operand at all.
        assert!(matches!(decode_mmio(&[0x89, 0xd8], LONG), Err(DecodeError::Unsupported(_))));
        // lock xchg [rax], ecx.
        assert!(decode_mmio(&[0xf0, 0x87, 0x08], LONG).is_err());
        // Cut short, and garbage.
        assert_eq!(decode_mmio(&[0x8b], LONG), Err(DecodeError::Invalid));
        assert_eq!(decode_mmio(&[], LONG), Err(DecodeError::Invalid));
        assert_eq!(decode_mmio(&[0x0f, 0xff], LONG), Err(DecodeError::Invalid));
    }

    #[test]
    fn intercepted_instructions_are_checked_and_measured() {
        assert_eq!(intercepted_length(&[0x0f, 0x01, 0xd9], LONG, Intercepted::Hypercall), Ok(3));
        assert_eq!(intercepted_length(&[0x0f, 0x01, 0xc1], LONG, Intercepted::Hypercall), Ok(3));
        assert_eq!(intercepted_length(&[0x0f, 0xa2], LONG, Intercepted::Cpuid), Ok(2));
        // A redundant prefix changes the length: what next-RIP would give.
        assert_eq!(intercepted_length(&[0x66, 0x0f, 0xa2], LONG, Intercepted::Cpuid), Ok(3));
        assert_eq!(intercepted_length(&[0x0f, 0x30, 0x90], LONG, Intercepted::Wrmsr), Ok(2));
        assert_eq!(intercepted_length(&[0x0f, 0x32], LONG, Intercepted::Rdmsr), Ok(2));
        assert_eq!(intercepted_length(&[0xf4], LONG, Intercepted::Hlt), Ok(1));
        assert_eq!(
            intercepted_length(&[0x90], LONG, Intercepted::Hlt),
            Err(DecodeError::Unsupported(Mnemonic::Nop))
        );
        assert_eq!(intercepted_length(&[0x0f], LONG, Intercepted::Cpuid), Err(DecodeError::Invalid));
    }

    #[test]
    fn register_writes_follow_the_cpu() {
        let eax = RegisterSlot { gpr: Gpr::RAX, width: 4, high_byte: false };
        let ax = RegisterSlot { gpr: Gpr::RAX, width: 2, high_byte: false };
        let al = RegisterSlot { gpr: Gpr::RAX, width: 1, high_byte: false };
        let ah = RegisterSlot { gpr: Gpr::RAX, width: 1, high_byte: true };
        let old = 0x1122_3344_5566_7788;
        assert_eq!(eax.merge(old, 0xaabb_ccdd), 0xaabb_ccdd);
        assert_eq!(ax.merge(old, 0xaabb), 0x1122_3344_5566_aabb);
        assert_eq!(al.merge(old, 0xaa), 0x1122_3344_5566_77aa);
        assert_eq!(ah.merge(old, 0xaa), 0x1122_3344_5566_aa88);
        assert_eq!(ah.read(old), 0x77);
        assert_eq!(ax.read(old), 0x7788);
        let load = MmioOperation::Load { destination: RegisterSlot { gpr: Gpr::RAX, width: 8, high_byte: false }, size: 1, extension: Extension::Sign };
        assert_eq!(load.loaded_register(0, 0x80), Some(0xffff_ffff_ffff_ff80));
        let load = MmioOperation::Load { destination: eax, size: 2, extension: Extension::Zero };
        assert_eq!(load.loaded_register(old, 0xdead_8001), Some(0x8001));
    }

    #[test]
    fn bitness_follows_lma_and_cs() {
        assert_eq!(Bitness::of_guest(true, true, false), Bitness(64));
        assert_eq!(Bitness::of_guest(true, false, true), Bitness(32));
        assert_eq!(Bitness::of_guest(false, false, false), Bitness(16));
        // In 16-bit mode the same bytes mean another instruction length.
        assert_eq!(decode_mmio(&[0x8b, 0x07], Bitness(16)).unwrap().length, 2);
    }
}
