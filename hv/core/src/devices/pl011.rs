//! An emulated Arm PL011 UART: what a Linux guest needs for its console.
//!
//! Registers follow the PL011 TRM (DDI 0183) §3.2; the PrimeCell
//! identification registers let Linux's AMBA bus probe it. Transmitted bytes
//! go to the partition's console line buffer (printed with the partition's
//! name). The transmit FIFO never fills and is always empty, so the guest
//! never waits for a transmit interrupt.
//!
//! Receive: bytes the hypervisor routes to this partition's console enter a
//! 32-byte receive FIFO ([`UartState::push_input`]); the receive and
//! receive-timeout interrupts (RXRIS, RTRIS) are raised while it holds data,
//! and [`UartState::interrupt_level`] is the UART's interrupt line.
//!
//! Omitted: baud-rate and line-control effects (the values are stored and
//! read back), DMA, modem lines, error and break conditions, and the
//! transmit interrupt (the FIFO is never full).

use crate::mmio::{AccessSize, MmioDevice, VcpuId};
use alloc::vec::Vec;

/// `UARTFR` bits: RXFE (4) receive FIFO empty, TXFE (7) transmit FIFO empty,
/// RXFF (6) receive FIFO full.
const FR_RXFE: u64 = 1 << 4;
const FR_RXFF: u64 = 1 << 6;
const FR_TXFE: u64 = 1 << 7;
/// Interrupt bits (RIS/MIS/IMSC/ICR): RXIM (4) receive, RTIM (6) receive timeout.
const INT_RX: u64 = 1 << 4;
const INT_RT: u64 = 1 << 6;
/// Depth of the receive FIFO.
pub const RX_FIFO_DEPTH: usize = 32;

/// Register offsets (TRM table 3-1).
mod offset {
    pub const DR: u64 = 0x000;
    pub const RSR: u64 = 0x004;
    pub const FR: u64 = 0x018;
    pub const ILPR: u64 = 0x020;
    pub const IBRD: u64 = 0x024;
    pub const FBRD: u64 = 0x028;
    pub const LCR_H: u64 = 0x02c;
    pub const CR: u64 = 0x030;
    pub const IFLS: u64 = 0x034;
    pub const IMSC: u64 = 0x038;
    pub const RIS: u64 = 0x03c;
    pub const MIS: u64 = 0x040;
    pub const ICR: u64 = 0x044;
    pub const DMACR: u64 = 0x048;
    pub const PERIPH_ID0: u64 = 0xfe0;
}

/// `UARTPeriphID0..3` and `UARTPCellID0..3` (TRM §3.3.14-15): a PL011 r1p5.
const ID_REGISTERS: [u64; 8] = [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// Size of the register window.
pub const PL011_MMIO_SIZE: u64 = 0x1000;

/// Where transmitted bytes go.
pub trait ByteSink: Send {
    /// One byte written to `UARTDR`.
    fn byte(&mut self, byte: u8);
}

/// Collects transmitted bytes until the hypervisor drains them.
#[derive(Debug, Default)]
pub struct TxBuffer(pub Vec<u8>);

impl ByteSink for TxBuffer {
    fn byte(&mut self, byte: u8) {
        // A guest that never lets the buffer drain cannot grow it for ever.
        if self.0.len() < 4096 {
            self.0.push(byte);
        }
    }
}

/// What the UART shares with the hypervisor: received bytes waiting for the
/// guest, and the interrupt mask that decides the interrupt line.
#[derive(Debug, Default)]
pub struct UartState {
    rx: alloc::collections::VecDeque<u8>,
    imsc: u64,
}

impl UartState {
    /// Queues a received byte; `false` (dropped) when the FIFO is full.
    pub fn push_input(&mut self, byte: u8) -> bool {
        if self.rx.len() >= RX_FIFO_DEPTH {
            return false;
        }
        self.rx.push_back(byte);
        true
    }

    /// Raw interrupt status: receive and receive-timeout while data waits.
    fn raw_status(&self) -> u64 {
        if self.rx.is_empty() { 0 } else { INT_RX | INT_RT }
    }

    /// The UART's interrupt line: a raw interrupt the guest has unmasked.
    pub fn interrupt_level(&self) -> bool {
        self.raw_status() & self.imsc != 0
    }
}

/// The emulated UART: registers a guest may write and read back, plus the
/// state shared with the hypervisor.
#[derive(Debug)]
pub struct Pl011<S: ByteSink> {
    sink: S,
    shared: alloc::sync::Arc<spin::Mutex<UartState>>,
    ilpr: u64,
    ibrd: u64,
    fbrd: u64,
    lcr_h: u64,
    cr: u64,
    ifls: u64,
    dmacr: u64,
}

impl<S: ByteSink> Pl011<S> {
    /// A UART in its reset state (TRM: CR = 0x300, IFLS = 0x12), sharing
    /// `shared` with the hypervisor.
    pub fn new(sink: S, shared: alloc::sync::Arc<spin::Mutex<UartState>>) -> Pl011<S> {
        Pl011 { sink, shared, ilpr: 0, ibrd: 0, fbrd: 0, lcr_h: 0, cr: 0x300, ifls: 0x12, dmacr: 0 }
    }

    /// The byte sink.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }
}

impl<S: ByteSink> MmioDevice for Pl011<S> {
    fn name(&self) -> &'static str {
        "pl011"
    }

    fn read(&mut self, _vcpu: VcpuId, at: u64, _size: AccessSize) -> u64 {
        let mut shared = self.shared.lock();
        match at {
            offset::DR => shared.rx.pop_front().map_or(0, u64::from),
            offset::RSR => 0,
            offset::FR => {
                let rx = if shared.rx.is_empty() { FR_RXFE } else { 0 };
                let full = if shared.rx.len() >= RX_FIFO_DEPTH { FR_RXFF } else { 0 };
                rx | full | FR_TXFE
            }
            offset::RIS => shared.raw_status(),
            offset::MIS => shared.raw_status() & shared.imsc,
            offset::ILPR => self.ilpr,
            offset::IBRD => self.ibrd,
            offset::FBRD => self.fbrd,
            offset::LCR_H => self.lcr_h,
            offset::CR => self.cr,
            offset::IFLS => self.ifls,
            offset::IMSC => shared.imsc,
            offset::DMACR => self.dmacr,
            id if (offset::PERIPH_ID0..PL011_MMIO_SIZE).contains(&id) && id % 4 == 0 => {
                ID_REGISTERS[((id - offset::PERIPH_ID0) / 4) as usize]
            }
            _ => 0,
        }
    }

    fn write(&mut self, _vcpu: VcpuId, at: u64, _size: AccessSize, value: u64) {
        match at {
            offset::DR => self.sink.byte(value as u8),
            offset::ILPR => self.ilpr = value & 0xff,
            offset::IBRD => self.ibrd = value & 0xffff,
            offset::FBRD => self.fbrd = value & 0x3f,
            offset::LCR_H => self.lcr_h = value & 0xff,
            offset::CR => self.cr = value & 0xff87,
            offset::IFLS => self.ifls = value & 0x3f,
            offset::IMSC => self.shared.lock().imsc = value & 0x7ff,
            offset::DMACR => self.dmacr = value & 0x7,
            // The receive interrupts follow the FIFO; clearing them (ICR) or
            // the error status (RSR/ECR) changes nothing else here.
            offset::RSR | offset::ICR => {}
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uart() -> (Pl011<TxBuffer>, alloc::sync::Arc<spin::Mutex<UartState>>) {
        let shared = alloc::sync::Arc::new(spin::Mutex::new(UartState::default()));
        (Pl011::new(TxBuffer::default(), shared.clone()), shared)
    }

    #[test]
    fn receives_with_an_interrupt_while_data_waits() {
        let (mut uart, shared) = uart();
        assert!(shared.lock().push_input(b'a'));
        assert!(!shared.lock().interrupt_level(), "masked");
        uart.write(0, offset::IMSC, AccessSize::Word, INT_RX | INT_RT);
        assert!(shared.lock().interrupt_level());
        assert_eq!(uart.read(0, offset::MIS, AccessSize::Word), INT_RX | INT_RT);
        assert_eq!(uart.read(0, offset::FR, AccessSize::Word) & FR_RXFE, 0);
        assert_eq!(uart.read(0, offset::DR, AccessSize::Word), u64::from(b'a'));
        assert_ne!(uart.read(0, offset::FR, AccessSize::Word) & FR_RXFE, 0);
        assert!(!shared.lock().interrupt_level(), "the line drops with the FIFO empty");
        for _ in 0..RX_FIFO_DEPTH {
            assert!(shared.lock().push_input(b'x'));
        }
        assert!(!shared.lock().push_input(b'y'), "full");
        assert_ne!(uart.read(0, offset::FR, AccessSize::Word) & FR_RXFF, 0);
    }

    #[test]
    fn transmits_and_never_blocks() {
        let (mut uart, _) = uart();
        for b in b"ok\n" {
            assert_eq!(uart.read(0, offset::FR, AccessSize::Word) & (1 << 5), 0, "TXFF never set");
            uart.write(0, offset::DR, AccessSize::Word, u64::from(*b) | 0x100);
        }
        assert_eq!(uart.sink_mut().0, b"ok\n");
    }

    #[test]
    fn identifies_as_a_primecell_pl011() {
        let (mut uart, _) = uart();
        let id: alloc::vec::Vec<u64> = (0..8).map(|i| uart.read(0, 0xfe0 + 4 * i, AccessSize::Word)).collect();
        assert_eq!(id, ID_REGISTERS);
        // AMBA: PeriphID = 0x00341011 (part 0x011, designer 0x41 'A'), CellID = 0xb105f00d.
        assert_eq!(id[0] | id[1] << 8 | id[2] << 16 | id[3] << 24, 0x0034_1011);
        assert_eq!(id[4] | id[5] << 8 | id[6] << 16 | id[7] << 24, 0xb105_f00d);
    }

    #[test]
    fn control_registers_read_back_within_their_width() {
        let (mut uart, _) = uart();
        assert_eq!(uart.read(0, offset::CR, AccessSize::Word), 0x300);
        uart.write(0, offset::CR, AccessSize::Word, 0xffff_ffff);
        assert_eq!(uart.read(0, offset::CR, AccessSize::Word), 0xff87);
        uart.write(0, offset::IBRD, AccessSize::Word, 0x1_0027);
        assert_eq!(uart.read(0, offset::IBRD, AccessSize::Word), 0x27);
        assert_eq!(uart.read(0, 0x800, AccessSize::Word), 0, "unknown offsets read as zero");
    }
}
