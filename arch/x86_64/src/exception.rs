//! Exception vectors: names, which ones push an error code, and the frame
//! the vector stubs (in [`crate::cpu::idt`]) build for the handler.
//!
//! Pure data, so the naming and layout are host-tested.

/// Mnemonic and description of the 32 architecturally defined vectors
/// (Intel SDM vol. 3A, table 6-1; AMD APM vol. 2, table 8-1).
pub const VECTOR_NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range exceeded",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack-segment fault",
    "#GP general protection",
    "#PF page fault",
    "reserved (15)",
    "#MF x87 floating-point error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD floating-point",
    "#VE virtualization exception",
    "#CP control protection",
    "reserved (22)",
    "reserved (23)",
    "reserved (24)",
    "reserved (25)",
    "reserved (26)",
    "reserved (27)",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security exception",
    "reserved (31)",
];

/// The name of `vector`: an exception's mnemonic, or "external interrupt"
/// for vectors 32 to 255.
pub fn vector_name(vector: u64) -> &'static str {
    usize::try_from(vector).ok().and_then(|v| VECTOR_NAMES.get(v)).copied().unwrap_or("external interrupt")
}

/// Whether the CPU pushes an error code for `vector` (in long mode):
/// #DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP, #VC and #SX.
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

/// What the vector stubs leave on the stack for the handler, lowest address
/// first: the general registers the common stub pushed, the vector number
/// and error code (0 where the CPU pushes none), then the frame the CPU
/// pushed itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
#[allow(missing_docs)]
pub struct ExceptionFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// The vector number, pushed by the stub.
    pub vector: u64,
    /// The CPU's error code, or 0 pushed by the stub.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl ExceptionFrame {
    /// The general registers as `(name, value)` pairs, in the usual order.
    pub fn registers(&self) -> [(&'static str, u64); 16] {
        [
            ("rax", self.rax),
            ("rbx", self.rbx),
            ("rcx", self.rcx),
            ("rdx", self.rdx),
            ("rsi", self.rsi),
            ("rdi", self.rdi),
            ("rbp", self.rbp),
            ("rsp", self.rsp),
            ("r8", self.r8),
            ("r9", self.r9),
            ("r10", self.r10),
            ("r11", self.r11),
            ("r12", self.r12),
            ("r13", self.r13),
            ("r14", self.r14),
            ("r15", self.r15),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn vectors_are_named_and_error_codes_match_the_manuals() {
        assert_eq!(vector_name(13), "#GP general protection");
        assert_eq!(vector_name(14), "#PF page fault");
        assert_eq!(vector_name(32), "external interrupt");
        assert_eq!(vector_name(u64::MAX), "external interrupt");
        let with_code: Vec<u8> = (0..=255u8).filter(|&v| has_error_code(v)).collect();
        assert_eq!(with_code, [8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
    }

    #[test]
    fn the_frame_matches_the_stub_layout() {
        // 15 general registers pushed by the common stub, vector, error code,
        // then the CPU's five-word frame.
        assert_eq!(core::mem::size_of::<ExceptionFrame>(), 22 * 8);
        assert_eq!(core::mem::offset_of!(ExceptionFrame, vector), 15 * 8);
        assert_eq!(core::mem::offset_of!(ExceptionFrame, rip), 17 * 8);
    }
}
