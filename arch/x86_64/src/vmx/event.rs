//! Events in and out of a VMX guest: the VM-entry interruption-information
//! field that injects an exception (SDM Vol. 3C §25.8.3, Table 25-17;
//! §27.6 "Event Injection"), the IDT-vectoring information that says an
//! exit interrupted an event's delivery (§25.9.3, Table 25-20; §28.2.4),
//! and the guest interruptibility state after an emulated instruction
//! (§25.4.2, Table 25-3).
//!
//! The three interruption-information formats share their low bits:
//!
//! | bits | meaning |
//! |---|---|
//! | 7:0 | vector |
//! | 10:8 | type (see [`InterruptionType`]) |
//! | 11 | an error code is delivered / was valid |
//! | 12 | exit formats: NMI unblocking due to IRET (VM-exit), undefined (IDT-vectoring); entry format: reserved |
//! | 30:13 | reserved |
//! | 31 | valid |

/// Bits 7:0: the vector.
const VECTOR_MASK: u32 = 0xff;
/// Bits 10:8: the type.
const TYPE_SHIFT: u32 = 8;
const TYPE_MASK: u32 = 0x7;
/// Bit 11: error code.
pub const ERROR_CODE_VALID: u32 = 1 << 11;
/// Bit 31: valid.
pub const VALID: u32 = 1 << 31;

/// The interruption type, bits 10:8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptionType {
    /// 0: external interrupt.
    ExternalInterrupt,
    /// 2: non-maskable interrupt.
    Nmi,
    /// 3: hardware exception (faults and aborts, #DB from hardware, ...).
    HardwareException,
    /// 4: software interrupt (INT n).
    SoftwareInterrupt,
    /// 5: privileged software exception (INT1).
    PrivilegedSoftwareException,
    /// 6: software exception (INT3, INTO).
    SoftwareException,
    /// 7: other event (MTF); 1 is reserved.
    Other(u8),
}

impl InterruptionType {
    /// The type in bits 10:8 of `information`.
    pub const fn of(information: u32) -> InterruptionType {
        match (information >> TYPE_SHIFT) & TYPE_MASK {
            0 => InterruptionType::ExternalInterrupt,
            2 => InterruptionType::Nmi,
            3 => InterruptionType::HardwareException,
            4 => InterruptionType::SoftwareInterrupt,
            5 => InterruptionType::PrivilegedSoftwareException,
            6 => InterruptionType::SoftwareException,
            other => InterruptionType::Other(other as u8),
        }
    }

    const fn raw(self) -> u32 {
        match self {
            InterruptionType::ExternalInterrupt => 0,
            InterruptionType::Nmi => 2,
            InterruptionType::HardwareException => 3,
            InterruptionType::SoftwareInterrupt => 4,
            InterruptionType::PrivilegedSoftwareException => 5,
            InterruptionType::SoftwareException => 6,
            InterruptionType::Other(raw) => raw as u32 & TYPE_MASK,
        }
    }

    /// Whether an injected event of this type needs the VM-entry
    /// instruction length (§27.2.1.3: types 4, 5 and 6 push a return
    /// address past the instruction).
    pub const fn needs_instruction_length(self) -> bool {
        matches!(
            self,
            InterruptionType::SoftwareInterrupt
                | InterruptionType::PrivilegedSoftwareException
                | InterruptionType::SoftwareException
        )
    }
}

/// Whether an interruption-information value has its valid bit set.
pub const fn is_valid(information: u32) -> bool {
    information & VALID != 0
}

/// The vector in an interruption-information value.
pub const fn vector(information: u32) -> u8 {
    (information & VECTOR_MASK) as u8
}

/// An event to inject at the next VM entry: the values for the VM-entry
/// interruption-information, exception error code and instruction length
/// fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryEvent {
    /// VM-entry interruption information (valid bit set).
    pub information: u32,
    /// VM-entry exception error code, when bit 11 is set.
    pub error_code: Option<u32>,
    /// VM-entry instruction length, for software interrupts and exceptions.
    pub instruction_length: Option<u32>,
}

impl EntryEvent {
    /// A hardware exception `vector`, with `error_code` if the exception
    /// has one (the caller knows which: #DF, #TS, #NP, #SS, #GP, #PF, #AC
    /// in protected mode, §27.2.1.3).
    pub const fn hardware_exception(vector: u8, error_code: Option<u32>) -> EntryEvent {
        let mut information = VALID | (InterruptionType::HardwareException.raw() << TYPE_SHIFT) | vector as u32;
        if error_code.is_some() {
            information |= ERROR_CODE_VALID;
        }
        EntryEvent { information, error_code, instruction_length: None }
    }

    /// An external interrupt `vector` (type 0, no error code). VM entry
    /// refuses it unless the guest's RFLAGS.IF is 1 and it is not in an
    /// STI or MOV SS shadow (§26.3.1.5): the caller checks first.
    pub const fn external_interrupt(vector: u8) -> EntryEvent {
        let information = VALID | (InterruptionType::ExternalInterrupt.raw() << TYPE_SHIFT) | vector as u32;
        EntryEvent { information, error_code: None, instruction_length: None }
    }

    /// The event to re-inject after an exit that interrupted its delivery
    /// (the IDT-vectoring information was valid), or `None` if there was
    /// none. The IDT-vectoring format matches the VM-entry one (§28.2.4),
    /// so the event is re-delivered by copying it into the VM-entry field
    /// with its error code and, for software events, the exit's
    /// instruction length (which §28.2.4 defines for such exits). Bit 12
    /// (undefined here, reserved in the entry field) is dropped.
    pub const fn from_idt_vectoring(information: u32, error_code: u32, exit_instruction_length: u32) -> Option<EntryEvent> {
        if !is_valid(information) {
            return None;
        }
        let information = information & (VALID | ERROR_CODE_VALID | (TYPE_MASK << TYPE_SHIFT) | VECTOR_MASK);
        let error_code = if information & ERROR_CODE_VALID != 0 { Some(error_code) } else { None };
        let instruction_length =
            if InterruptionType::of(information).needs_instruction_length() { Some(exit_instruction_length) } else { None };
        Some(EntryEvent { information, error_code, instruction_length })
    }
}

/// Guest interruptibility state bit 0: blocking by STI.
pub const BLOCKING_BY_STI: u64 = 1 << 0;
/// Bit 1: blocking by MOV SS / POP SS.
pub const BLOCKING_BY_MOV_SS: u64 = 1 << 1;

/// The guest interruptibility state after the hypervisor completed the
/// instruction that exited (RIP moved past it): STI and MOV-SS blocking
/// last only until the end of the next instruction, which that was, so
/// both end (as KVM does on every skipped instruction). Keeping STI
/// blocking could also fail the VM-entry check that it is 0 while
/// RFLAGS.IF is 0 (§27.3.1.5). NMI and SMI blocking stay.
pub const fn interruptibility_after_skip(state: u64) -> u64 {
    state & !(BLOCKING_BY_STI | BLOCKING_BY_MOV_SS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_injection_encoding() {
        // #GP(0): vector 13, type 3, error code, valid.
        let gp = EntryEvent::hardware_exception(13, Some(0));
        assert_eq!(gp.information, 0x8000_0b0d);
        assert_eq!((gp.error_code, gp.instruction_length), (Some(0), None));
        // #UD: no error code.
        assert_eq!(EntryEvent::hardware_exception(6, None).information, 0x8000_0306);
        // External interrupt 0x41: type 0, no error code.
        let irq = EntryEvent::external_interrupt(0x41);
        assert_eq!((irq.information, irq.error_code, irq.instruction_length), (0x8000_0041, None, None));
    }

    #[test]
    fn idt_vectoring_reinjection() {
        assert_eq!(EntryEvent::from_idt_vectoring(0x0000_0b0e, 2, 0), None);
        // A #PF with error code 2 was being delivered; bit 12 (undefined) dropped.
        let pf = EntryEvent::from_idt_vectoring(0x8000_1b0e, 2, 3).unwrap();
        assert_eq!(pf, EntryEvent { information: 0x8000_0b0e, error_code: Some(2), instruction_length: None });
        // INT 0x80 (software interrupt, type 4): the instruction length goes along.
        let int = EntryEvent::from_idt_vectoring(0x8000_0480, 0xdead, 2).unwrap();
        assert_eq!(int, EntryEvent { information: 0x8000_0480, error_code: None, instruction_length: Some(2) });
        // INT3 (software exception) and INT1 (privileged software exception) too.
        assert_eq!(EntryEvent::from_idt_vectoring(0x8000_0603, 0, 1).unwrap().instruction_length, Some(1));
        assert_eq!(EntryEvent::from_idt_vectoring(0x8000_0501, 0, 1).unwrap().instruction_length, Some(1));
        // An external interrupt (vector 0x20) needs neither.
        let irq = EntryEvent::from_idt_vectoring(0x8000_0020, 7, 9).unwrap();
        assert_eq!((irq.error_code, irq.instruction_length), (None, None));
        // Reserved bits 30:13 never reach the entry field.
        assert_eq!(EntryEvent::from_idt_vectoring(0xffff_f20e, 0, 0).unwrap().information & 0x7fff_f000, 0);
    }

    #[test]
    fn types_and_fields() {
        assert_eq!(InterruptionType::of(0x8000_0202), InterruptionType::Nmi);
        assert_eq!(InterruptionType::of(0x8000_0030), InterruptionType::ExternalInterrupt);
        assert_eq!(InterruptionType::of(0x8000_0700), InterruptionType::Other(7));
        assert_eq!(InterruptionType::of(0x100), InterruptionType::Other(1));
        assert_eq!(vector(0x8000_0b0d), 13);
        assert!(is_valid(0x8000_0000) && !is_valid(0x7fff_ffff));
    }

    #[test]
    fn skipping_an_instruction_ends_sti_and_mov_ss_blocking() {
        assert_eq!(interruptibility_after_skip(0b1111), 0b1100);
        assert_eq!(interruptibility_after_skip(0b1000), 0b1000);
        assert_eq!(interruptibility_after_skip(0), 0);
    }
}
