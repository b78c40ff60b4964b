//! Event records (IHI 0070 §7.3): 32 bytes, four little-endian 64-bit
//! words, decoded into what a log line needs.

use core::fmt;
use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

register_bitfields! [u64,
    /// Event record word 0.
    EVT0 [
        /// Event type (§7.3, Table 7-3).
        ID OFFSET(0) NUMBITS(8) [],
        /// `SubstreamID` is valid.
        SSV OFFSET(11) NUMBITS(1) [],
        /// SubstreamID (PASID).
        SSID OFFSET(12) NUMBITS(20) [],
        /// StreamID of the transaction.
        SID OFFSET(32) NUMBITS(32) []
    ],
    /// Event record word 1, for the translation-related faults (0x10..0x13).
    EVT1 [
        /// Privileged (1) or unprivileged (0).
        PNU OFFSET(33) NUMBITS(1) [],
        /// Instruction (1) or data (0).
        IND OFFSET(34) NUMBITS(1) [],
        /// Read (1) or write (0).
        RNW OFFSET(35) NUMBITS(1) [],
        /// The fault happened at stage 2.
        S2 OFFSET(39) NUMBITS(1) [],
        /// What was being accessed: 0 a context descriptor, 1 a
        /// translation table descriptor, 2 the input address.
        CLASS OFFSET(40) NUMBITS(2) []
    ],
    /// Event record word 3 of the translation-related faults.
    EVT3 [
        /// The faulting IPA, bits 51:12 (stage-2 faults).
        IPA OFFSET(12) NUMBITS(40) []
    ]
];

/// Bytes per event record.
pub const EVENT_SIZE: usize = 32;
/// 64-bit words per event record.
pub const EVENT_WORDS: usize = EVENT_SIZE / 8;

/// The event types (§7.3) whose word 1 carries RnW, S2 and CLASS and whose
/// words 2 and 3 carry the input address and IPA.
const TRANSLATION_FAULTS: core::ops::RangeInclusive<u8> = 0x10..=0x13;
/// `F_BAD_ATS_TREQ`, `F_TRANSL_FORBIDDEN` and `F_WALK_EABT` also carry an
/// input address in word 2.
const ADDRESS_EVENTS: [u8; 3] = [0x05, 0x07, 0x0b];

/// The name of event type `id` (§7.3, Table 7-3).
pub fn event_name(id: u8) -> &'static str {
    match id {
        0x01 => "F_UUT",
        0x02 => "C_BAD_STREAMID",
        0x03 => "F_STE_FETCH",
        0x04 => "C_BAD_STE",
        0x05 => "F_BAD_ATS_TREQ",
        0x06 => "F_STREAM_DISABLED",
        0x07 => "F_TRANSL_FORBIDDEN",
        0x08 => "C_BAD_SUBSTREAMID",
        0x09 => "F_CD_FETCH",
        0x0a => "C_BAD_CD",
        0x0b => "F_WALK_EABT",
        0x10 => "F_TRANSLATION",
        0x11 => "F_ADDR_SIZE",
        0x12 => "F_ACCESS",
        0x13 => "F_PERMISSION",
        0x20 => "F_TLB_CONFLICT",
        0x21 => "F_CFG_CONFLICT",
        0x24 => "E_PAGE_REQUEST",
        0x25 => "F_VMS_FETCH",
        _ => "unknown event",
    }
}

/// Direction of the access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The device read memory.
    Read,
    /// The device wrote memory.
    Write,
}

/// What a translation fault tells about the access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultDetail {
    /// Read or write.
    pub access: Access,
    /// The fault was at stage 2.
    pub stage2: bool,
    /// The IPA (stage-2 faults), else 0.
    pub ipa: u64,
}

/// A decoded event record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Event type.
    pub id: u8,
    /// StreamID of the transaction.
    pub stream_id: u32,
    /// SubstreamID, if valid.
    pub substream_id: Option<u32>,
    /// Input address (the device's DMA address, an IOVA), for the event
    /// types that carry one.
    pub input_address: Option<u64>,
    /// Access details, for the translation-related faults.
    pub fault: Option<FaultDetail>,
}

impl Event {
    /// Decodes the four words of a record. Any bit pattern decodes: an
    /// unknown type is named "unknown event" with its number.
    pub fn decode(words: [u64; EVENT_WORDS]) -> Event {
        let w0 = LocalRegisterCopy::<u64, EVT0::Register>::new(words[0]);
        let w1 = LocalRegisterCopy::<u64, EVT1::Register>::new(words[1]);
        let w3 = LocalRegisterCopy::<u64, EVT3::Register>::new(words[3]);
        let id = w0.read(EVT0::ID) as u8;
        let translation = TRANSLATION_FAULTS.contains(&id);
        Event {
            id,
            stream_id: w0.read(EVT0::SID) as u32,
            substream_id: w0.is_set(EVT0::SSV).then(|| w0.read(EVT0::SSID) as u32),
            input_address: (translation || ADDRESS_EVENTS.contains(&id)).then_some(words[2]),
            fault: translation.then(|| FaultDetail {
                access: if w1.is_set(EVT1::RNW) { Access::Read } else { Access::Write },
                stage2: w1.is_set(EVT1::S2),
                ipa: w3.read(EVT3::IPA) << 12,
            }),
        }
    }

    /// The type's name.
    pub fn name(&self) -> &'static str {
        event_name(self.id)
    }
}

impl fmt::Display for Event {
    /// `F_TRANSLATION (0x10): StreamID 0x8, write, input address 0x4123_0000, stage 2, IPA 0x4123_0000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#04x}): StreamID {:#x}", self.name(), self.id, self.stream_id)?;
        if let Some(ssid) = self.substream_id {
            write!(f, ", SubstreamID {ssid:#x}")?;
        }
        if let Some(fault) = &self.fault {
            f.write_str(match fault.access {
                Access::Read => ", read",
                Access::Write => ", write",
            })?;
        }
        if let Some(address) = self.input_address {
            write!(f, ", input address {address:#x}")?;
        }
        if let Some(fault) = &self.fault
            && fault.stage2
        {
            write!(f, ", stage 2, IPA {:#x}", fault.ipa)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn a_stage2_translation_fault_on_a_write() {
        // As QEMU records it for an edu DMA write to 0x4123_4000 on
        // StreamID 8 through an empty stage 2.
        let words = [0x0000_0008_0000_0010, (1 << 39) | (2 << 40), 0x4123_4000, 0x4123_4000];
        let event = Event::decode(words);
        assert_eq!(event.name(), "F_TRANSLATION");
        assert_eq!(event.stream_id, 8);
        assert_eq!(event.substream_id, None);
        assert_eq!(event.input_address, Some(0x4123_4000));
        assert_eq!(event.fault, Some(FaultDetail { access: Access::Write, stage2: true, ipa: 0x4123_4000 }));
        assert_eq!(
            event.to_string(),
            "F_TRANSLATION (0x10): StreamID 0x8, write, input address 0x41234000, stage 2, IPA 0x41234000"
        );
    }

    #[test]
    fn reads_configuration_errors_and_unknown_types() {
        let read = Event::decode([0x13, 1 << 35, 0x1000, 0]);
        assert_eq!(read.fault.map(|f| f.access), Some(Access::Read));
        assert_eq!(read.name(), "F_PERMISSION");
        let bad_ste = Event::decode([0x0000_0010_0000_0804 | (5 << 12), 0, 0xdead, 0]);
        assert_eq!(bad_ste.name(), "C_BAD_STE");
        assert_eq!(bad_ste.stream_id, 0x10);
        assert_eq!(bad_ste.substream_id, Some(5));
        assert_eq!(bad_ste.input_address, None, "C_BAD_STE carries no address");
        assert_eq!(bad_ste.to_string(), "C_BAD_STE (0x04): StreamID 0x10, SubstreamID 0x5");
        assert_eq!(Event::decode([0xee, 0, 0, 0]).to_string(), "unknown event (0xee): StreamID 0x0");
        assert_eq!(event_name(0x02), "C_BAD_STREAMID");
    }
}
