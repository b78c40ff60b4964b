//! Fault recording registers (VT-d rev. 4.1 §11.4.14 FRCD_REG, §7.1.3
//! primary fault logging) decoded into readable text, with the fault
//! reasons of Appendix A (legacy-mode DMA remapping and interrupt remapping).
//!
//! One fault record is 128 bits (`[low, high]`):
//!
//! | bits | field |
//! |---|---|
//! | 63:12 | FI: the faulting page address (DMA) or interrupt index |
//! | 79:64 | SID: requester ID (bus 15:8, device 7:3, function 2:0) |
//! | 92 | T2: with T1, the request type (0 for ordinary DMA) |
//! | 93 | PRIV: privileged-mode request |
//! | 94 | EXE: execute request |
//! | 95 | PP: PASID present |
//! | 103:96 | FR: fault reason |
//! | 123:104 | PV: PASID value |
//! | 125:124 | AT: address type |
//! | 126 | T1: 0 write request, 1 read request (T2 = 0) |
//! | 127 | F: fault recorded (write 1 to clear) |

use core::fmt;

/// F: the record holds a fault (bit 127, bit 63 of the high half).
pub const FAULT: u64 = 1 << 63;
/// T1: read request when set (bit 126).
const READ_REQUEST: u64 = 1 << 62;
/// FR: fault reason, bits 103:96 (39:32 of the high half).
const REASON_SHIFT: u32 = 32;
/// FI: the page address, bits 63:12 of the low half.
const ADDRESS_MASK: u64 = !0xfff;

/// A decoded fault record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// Requester ID of the device.
    pub source_id: u16,
    /// Fault reason (Appendix A).
    pub reason: u8,
    /// The faulting DMA address, page-aligned (the record keeps no offset).
    pub address: u64,
    /// A read request (else a write).
    pub read: bool,
}

impl FaultRecord {
    /// The record in the raw register pair, or `None` if its F bit is clear.
    pub const fn decode(raw: [u64; 2]) -> Option<FaultRecord> {
        let [low, high] = raw;
        if high & FAULT == 0 {
            return None;
        }
        Some(FaultRecord {
            source_id: high as u16,
            reason: (high >> REASON_SHIFT) as u8,
            address: low & ADDRESS_MASK,
            read: high & READ_REQUEST != 0,
        })
    }

    /// The requester's bus, device and function.
    pub const fn bdf(&self) -> (u8, u8, u8) {
        ((self.source_id >> 8) as u8, ((self.source_id >> 3) & 0x1f) as u8, (self.source_id & 0x7) as u8)
    }
}

impl fmt::Display for FaultRecord {
    /// `device 00:03.0 write at 0x1234000: reason 0x2 (context entry not present)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (bus, device, function) = self.bdf();
        write!(
            f,
            "device {bus:02x}:{device:02x}.{function} {} at {:#x}: reason {:#x} ({})",
            if self.read { "read" } else { "write" },
            self.address,
            self.reason,
            reason_name(self.reason)
        )
    }
}

/// The name of fault reason `reason` (VT-d Appendix A: legacy-mode DMA
/// remapping 0x1-0xD, interrupt remapping 0x20-0x27).
pub const fn reason_name(reason: u8) -> &'static str {
    match reason {
        0x1 => "root entry not present",
        0x2 => "context entry not present",
        0x3 => "context entry invalid (hardware-detected)",
        0x4 => "address beyond the domain's address width",
        0x5 => "write to a page without write permission",
        0x6 => "read from a page without read permission",
        0x7 => "second-level table entry could not be read",
        0x8 => "root table could not be read",
        0x9 => "context table could not be read",
        0xa => "reserved bit set in a root entry",
        0xb => "reserved bit set in a context entry",
        0xc => "reserved bit set in a second-level entry",
        0xd => "request blocked by the context entry's translation type",
        0x20 => "interrupt index beyond the remap table",
        0x21 => "interrupt remap entry not present",
        0x22 => "interrupt remap table could not be read",
        0x23 => "reserved bit set in an interrupt remap entry",
        0x24 => "compatibility-format interrupt blocked",
        0x25 => "source ID check failed for a remapped interrupt",
        0x26 => "interrupt remap table entry could not be read (posted)",
        0x27 => "interrupt request with a reserved field set",
        _ => "unknown reason",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn records_decode_into_text() {
        // What QEMU records for edu at 00:03.0 writing 0x7ff0_0000 with no
        // context entry: F, FR 2, SID 0x0018, T1 clear (a write).
        let raw = [0x7ff0_0000, FAULT | 2 << 32 | 0x18];
        let record = FaultRecord::decode(raw).unwrap();
        assert_eq!(record, FaultRecord { source_id: 0x18, reason: 2, address: 0x7ff0_0000, read: false });
        assert_eq!(record.bdf(), (0, 3, 0));
        assert_eq!(
            record.to_string(),
            "device 00:03.0 write at 0x7ff00000: reason 0x2 (context entry not present)"
        );
        let read = FaultRecord::decode([0x1234_5678, FAULT | READ_REQUEST | 6 << 32 | 0x1_0a]).unwrap();
        assert_eq!(read.to_string(), "device 01:01.2 read at 0x12345000: reason 0x6 (read from a page without read permission)");
        assert_eq!(FaultRecord::decode([0x1000, 2 << 32]), None, "F clear: no fault");
        assert_eq!(reason_name(0x99), "unknown reason");
    }
}
