//! The device: register BAR + global GTT, local memory, guest RAM, and the blitter engine that
//! executes the ring. Pure logic over [`Memory`] backends, so host tests drive it with vectors.
//!
//! The register BAR lives in memory shared with the guest, so there is no trap on a register
//! write: the guest writes RING_TAIL (or clears FAULT_STATUS) and rings the doorbell, and
//! [`Gpu::process`] looks at the registers then. Register ownership decides who writes what:
//! software owns RING_START / RING_CTL / RING_TAIL / INT_ENABLE and PDP0 (which the ring also
//! loads with MI_LOAD_REGISTER_IMM); the model owns RING_HEAD (except while the ring is stopped
//! by a fault), SEQNO and the fault registers (until software clears FAULT_STATUS); INT_STATUS
//! is shared through atomic OR (model) / AND (software).
//!
//! Fault policy: a fault stops the ring with RING_HEAD left at the ring command that faulted (or
//! that called the faulting batch); nothing more runs until software writes 0 to FAULT_STATUS.
//!
//! Address spaces (gen8 "legacy ring" mode, `bulkhead_abi::gpu::ppgtt`):
//!
//! | where a command runs | its addresses | MI_LOAD_REGISTER_IMM |
//! |---|---|---|
//! | ring | global GTT | PDP0_LDW / PDP0_UDW only |
//! | batch started without `BBS_PPGTT` from the ring or a global-GTT batch | global GTT | PDP0_LDW / PDP0_UDW only |
//! | batch started with `BBS_PPGTT` from there, and every batch it calls or chains to | PPGTT of the PML4 in PDP0 when the batch started | fault `FAULT_PRIVILEGED` |

use bulkhead_abi::gpu::ppgtt::{FAULT_FORBIDDEN_REGISTER, FAULT_PRIVILEGED, PDP0_LDW, PDP0_UDW};

use crate::command::{command_length, decode, Command, Rect, Surface};
use crate::memory::Memory;
use crate::ppgtt;
use crate::regs::*;

/// Where a graphics address lands after GTT translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Physical {
    /// Byte offset into guest RAM (guest physical address minus the RAM base).
    Ram(u64),
    /// Byte offset into local memory.
    Local(u64),
}

/// A GPU fault: a `FAULT_*` code and the graphics address concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// One of the `FAULT_*` codes.
    pub code: u32,
    /// The graphics address whose access failed (or the command's address).
    pub address: u64,
}

/// The translation a command's addresses go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressSpace {
    /// The global GTT: the ring and privileged batches.
    Global,
    /// A per-process GTT (a non-privileged batch): the 4-level tables whose PML4 is at guest
    /// physical address `pml4` (PDP0 as read when the batch started).
    PerProcess {
        /// PDP0_UDW:PDP0_LDW; bits 38:12 are the PML4's address.
        pml4: u64,
    },
}

/// What one [`Gpu::process`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Ring commands completed.
    pub commands: u64,
    /// A fault was recorded.
    pub faulted: bool,
    /// INT_STATUS bits raised that INT_ENABLE lets through: signal the interrupt vector.
    pub interrupt: bool,
    /// The call stopped at its work budget with commands left: call again.
    pub more: bool,
}

/// The GPU. `R` is the register BAR ([`REG_BAR_SIZE`] bytes), `L` local memory, `G` guest RAM
/// starting at guest physical address `ram_base`.
pub struct Gpu<R, L, G> {
    regs: R,
    local: L,
    ram: G,
    ram_base: u64,
}

/// Where a command was fetched from, for the fault registers.
struct CommandFault {
    fault: Fault,
    header: u32,
    command_address: u64,
}

impl<R: Memory, L: Memory, G: Memory> Gpu<R, L, G> {
    /// A GPU over these backends. Call [`Gpu::reset`] to initialise the registers.
    pub fn new(regs: R, local: L, ram: G, ram_base: u64) -> Self {
        Self { regs, local, ram, ram_base }
    }

    /// The register BAR.
    pub fn regs(&self) -> &R {
        &self.regs
    }
    /// The register BAR, for software-side writes in tests and tools.
    pub fn regs_mut(&mut self) -> &mut R {
        &mut self.regs
    }
    /// Local memory.
    pub fn local(&self) -> &L {
        &self.local
    }
    /// Local memory, writable.
    pub fn local_mut(&mut self) -> &mut L {
        &mut self.local
    }
    /// Guest RAM.
    pub fn ram(&self) -> &G {
        &self.ram
    }
    /// Guest RAM, writable.
    pub fn ram_mut(&mut self) -> &mut G {
        &mut self.ram
    }

    /// Power-on state: registers and GTT zeroed (no entry present, ring disabled, PDP0 0), then the
    /// read-only identification registers.
    pub fn reset(&mut self) {
        let zeros = vec![0u8; REG_BAR_SIZE as usize];
        self.regs.write(0, &zeros);
        let local = self.local.size();
        self.set(GPU_ID, GPU_ID_VALUE);
        self.set(GPU_VERSION, GPU_VERSION_VALUE);
        self.set(LMEM_SIZE_LO, local as u32);
        self.set(LMEM_SIZE_HI, (local >> 32) as u32);
        self.set(GTT_BASE, GTT_OFFSET as u32);
        self.set(GTT_SIZE, GTT_ENTRIES as u32);
        self.set(LMEM_OFFSET, LOCAL_MEMORY_OFFSET as u32);
    }

    /// Register read; a register BAR too small for the offset reads 0 (cannot happen with a
    /// correctly sized BAR, and must not panic if it does).
    fn reg(&self, offset: u64) -> u32 {
        self.regs.read_u32(offset).unwrap_or(0)
    }

    fn set(&mut self, offset: u64, value: u32) {
        self.regs.write_u32(offset, value);
    }

    /// Translate a graphics address through the global GTT.
    pub fn translate(&self, address: u64) -> Result<Physical, Fault> {
        self.translate_in(AddressSpace::Global, address)
    }

    /// Translate a graphics address of `space`.
    pub fn translate_in(&self, space: AddressSpace, address: u64) -> Result<Physical, Fault> {
        match space {
            AddressSpace::Global => self.translate_global(address),
            AddressSpace::PerProcess { pml4 } => {
                ppgtt::translate(&self.ram, self.ram_base, self.local.size(), pml4, address)
            }
        }
    }

    fn translate_global(&self, address: u64) -> Result<Physical, Fault> {
        let fault = |code| Err(Fault { code, address });
        if address >= GRAPHICS_ADDRESS_SPACE {
            return fault(FAULT_OUTSIDE_GTT);
        }
        let index = address / PAGE_SIZE;
        let Some(entry) = self.regs.read_u64(GTT_OFFSET + index * GTT_ENTRY_SIZE) else {
            return fault(FAULT_OUTSIDE_GTT);
        };
        if entry & GTT_PRESENT == 0 {
            return fault(FAULT_NOT_PRESENT);
        }
        let page = entry & GTT_ADDRESS_MASK;
        let within = address % PAGE_SIZE;
        if entry & GTT_LOCAL_MEMORY != 0 {
            if page >= self.local.size() {
                return fault(FAULT_OUTSIDE_MEMORY);
            }
            Ok(Physical::Local(page + within))
        } else {
            match page.checked_sub(self.ram_base) {
                Some(offset) if offset < self.ram.size() => Ok(Physical::Ram(offset + within)),
                _ => fault(FAULT_OUTSIDE_MEMORY),
            }
        }
    }

    /// Read `buf.len()` bytes at a graphics address, page by page through the GTT.
    pub fn read_graphics(&self, address: u64, buf: &mut [u8]) -> Result<(), Fault> {
        self.read_in(AddressSpace::Global, address, buf)
    }

    /// Read `buf.len()` bytes at a graphics address of `space`, page by page.
    pub fn read_in(&self, space: AddressSpace, address: u64, buf: &mut [u8]) -> Result<(), Fault> {
        let mut done = 0;
        while done < buf.len() {
            let at = address.checked_add(done as u64).ok_or(Fault { code: FAULT_OUTSIDE_GTT, address })?;
            let chunk = chunk_len(at, buf.len() - done);
            let part = &mut buf[done..done + chunk];
            let ok = match self.translate_in(space, at)? {
                Physical::Ram(offset) => self.ram.read(offset, part),
                Physical::Local(offset) => self.local.read(offset, part),
            };
            if !ok {
                return Err(Fault { code: FAULT_OUTSIDE_MEMORY, address: at });
            }
            done += chunk;
        }
        Ok(())
    }

    /// Write `data` at a graphics address, page by page through the GTT. Pages before a
    /// faulting one have been written (as on hardware, a fault is not a transaction).
    pub fn write_graphics(&mut self, address: u64, data: &[u8]) -> Result<(), Fault> {
        self.write_in(AddressSpace::Global, address, data)
    }

    /// Write `data` at a graphics address of `space`, page by page (as [`Gpu::write_graphics`]).
    pub fn write_in(&mut self, space: AddressSpace, address: u64, data: &[u8]) -> Result<(), Fault> {
        let mut done = 0;
        while done < data.len() {
            let at = address.checked_add(done as u64).ok_or(Fault { code: FAULT_OUTSIDE_GTT, address })?;
            let chunk = chunk_len(at, data.len() - done);
            let part = &data[done..done + chunk];
            let ok = match self.translate_in(space, at)? {
                Physical::Ram(offset) => self.ram.write(offset, part),
                Physical::Local(offset) => self.local.write(offset, part),
            };
            if !ok {
                return Err(Fault { code: FAULT_OUTSIDE_MEMORY, address: at });
            }
            done += chunk;
        }
        Ok(())
    }

    fn read_dword(&self, space: AddressSpace, address: u64) -> Result<u32, Fault> {
        let mut b = [0; 4];
        self.read_in(space, address, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Run the ring from RING_HEAD to RING_TAIL unless it is disabled or stopped by a fault.
    pub fn process(&mut self) -> Outcome {
        let mut outcome = Outcome::default();
        let status_before = self.reg(INT_STATUS);
        if self.reg(FAULT_STATUS) != 0 || self.reg(RING_CTL) & RING_CTL_ENABLE == 0 {
            return outcome;
        }
        if let Err(f) = self.run_ring(&mut outcome) {
            self.record_fault(f);
            outcome.faulted = true;
        }
        let raised = self.reg(INT_STATUS) & !status_before;
        outcome.interrupt = raised & self.reg(INT_ENABLE) != 0;
        outcome
    }

    fn run_ring(&mut self, outcome: &mut Outcome) -> Result<(), CommandFault> {
        let start = u64::from(self.reg(RING_START));
        let ctl = self.reg(RING_CTL);
        let size = u64::from((ctl & RING_CTL_PAGES_MASK) >> 12) * PAGE_SIZE + PAGE_SIZE;
        let mut head = u64::from(self.reg(RING_HEAD) & RING_OFFSET_MASK);
        let tail = u64::from(self.reg(RING_TAIL) & RING_OFFSET_MASK);
        let ring_fault = |address| CommandFault {
            fault: Fault { code: FAULT_RING_OVERRUN, address },
            header: 0,
            command_address: address,
        };
        if start % PAGE_SIZE != 0 || head >= size || tail >= size {
            return Err(ring_fault(start + head));
        }
        let mut work = RING_WORK_PER_PROCESS;
        while head != tail {
            if work == 0 {
                // Not a fault: the rest runs on the next call, so one wake-up cannot keep the
                // model from its socket for long.
                outcome.more = true;
                return Ok(());
            }
            let command_address = start + head;
            let in_command = |fault| CommandFault { fault, header: 0, command_address };
            let header = self.read_dword(AddressSpace::Global, command_address).map_err(in_command)?;
            let with_header = |fault| CommandFault { fault, header, command_address };
            let length = command_length(header)
                .map_err(|code| with_header(Fault { code, address: command_address }))?;
            // Dwords between head and tail, with wrap: a command may not run past the tail.
            let available = (tail + size - head) % size / 4;
            if length as u64 > available {
                return Err(with_header(Fault { code: FAULT_RING_OVERRUN, address: command_address }));
            }
            let mut dwords = Vec::with_capacity(length);
            for i in 0..length as u64 {
                let at = start + (head + i * 4) % size;
                dwords.push(self.read_dword(AddressSpace::Global, at).map_err(with_header)?);
            }
            let command = decode(&dwords)
                .map_err(|code| with_header(Fault { code, address: command_address }))?;
            let cost = match command {
                Command::BatchBufferStart { address, ppgtt, .. } => {
                    let space = self.batch_space(AddressSpace::Global, ppgtt);
                    self.run_batch(address, space)?
                }
                // A stray batch end in the ring is ignored, as on gen8.
                Command::BatchBufferEnd => 1,
                other => self.execute(other, AddressSpace::Global, command_address).map_err(with_header)?,
            };
            work = work.saturating_sub(cost);
            head = (head + length as u64 * 4) % size;
            self.set(RING_HEAD, head as u32);
            outcome.commands += 1;
        }
        Ok(())
    }

    /// The address space of a batch started from a batch (or the ring) in `caller` with
    /// MI_BATCH_BUFFER_START's [`Command::BatchBufferStart::ppgtt`] bit: a non-privileged batch
    /// stays non-privileged whatever the bit says; a privileged one starts a PPGTT batch on the
    /// PML4 PDP0 holds now.
    fn batch_space(&self, caller: AddressSpace, ppgtt: bool) -> AddressSpace {
        match caller {
            AddressSpace::PerProcess { .. } => caller,
            AddressSpace::Global if ppgtt => {
                let pdp0 = u64::from(self.reg(u64::from(PDP0_UDW))) << 32 | u64::from(self.reg(u64::from(PDP0_LDW)));
                AddressSpace::PerProcess { pml4: pdp0 }
            }
            AddressSpace::Global => AddressSpace::Global,
        }
    }

    /// Run a first-level batch in `space` (and the second-level batches it calls) to its
    /// MI_BATCH_BUFFER_END.
    /// Returns the work it cost (see [`MAX_WORK_PER_BATCH`]).
    fn run_batch(&mut self, first: u64, space: AddressSpace) -> Result<u64, CommandFault> {
        // Return addresses (with their batch's start and address space) of the batches that
        // called a second-level batch.
        let mut returns: Vec<(u64, u64, AddressSpace)> = Vec::new();
        let (mut at, mut batch_start, mut space) = (first, first, space);
        let mut budget = MAX_WORK_PER_BATCH;
        loop {
            let command_address = at;
            let plain = |code| CommandFault { fault: Fault { code, address: command_address }, header: 0, command_address };
            if budget == 0 || at.saturating_sub(batch_start) >= MAX_BATCH_BYTES {
                return Err(plain(FAULT_BATCH_OVERRUN));
            }
            let header = self.read_dword(space, at).map_err(|fault| CommandFault { fault, header: 0, command_address })?;
            let with_header = |fault| CommandFault { fault, header, command_address };
            let length = command_length(header)
                .map_err(|code| with_header(Fault { code, address: command_address }))?;
            let mut dwords = Vec::with_capacity(length);
            for i in 0..length as u64 {
                let address = at.checked_add(i * 4).ok_or(with_header(Fault { code: FAULT_OUTSIDE_GTT, address: at }))?;
                dwords.push(self.read_dword(space, address).map_err(with_header)?);
            }
            let next = at + length as u64 * 4; // read_dword succeeded, so no overflow
            match decode(&dwords).map_err(|code| with_header(Fault { code, address: command_address }))? {
                Command::BatchBufferEnd => match returns.pop() {
                    Some((ret, start, caller)) => (at, batch_start, space) = (ret, start, caller),
                    None => return Ok(MAX_WORK_PER_BATCH - budget),
                },
                Command::BatchBufferStart { address, second_level: true, ppgtt } => {
                    // The ring's call is level 1; each second-level call adds one.
                    if returns.len() + 1 >= MAX_BATCH_DEPTH {
                        return Err(with_header(Fault { code: FAULT_BATCH_NESTING, address: command_address }));
                    }
                    returns.push((next, batch_start, space));
                    (at, batch_start, space) = (address, address, self.batch_space(space, ppgtt));
                }
                // A chain: jump, same level.
                Command::BatchBufferStart { address, second_level: false, ppgtt } => {
                    (at, batch_start, space) = (address, address, self.batch_space(space, ppgtt));
                }
                other => {
                    let cost = self.execute(other, space, command_address).map_err(with_header)?;
                    budget = budget.saturating_sub(cost);
                    at = next;
                    continue;
                }
            }
            budget = budget.saturating_sub(1);
        }
    }

    /// Execute a command that is not batch control, fetched at `command_address` of `space`,
    /// with its addresses in `space`. Returns its work: 1 + pages of blit.
    fn execute(&mut self, command: Command, space: AddressSpace, command_address: u64) -> Result<u64, Fault> {
        match command {
            Command::Noop | Command::BatchBufferEnd | Command::BatchBufferStart { .. } => {}
            Command::LoadRegisterImm { pairs } => self.load_register_imm(&pairs, space, command_address)?,
            Command::UserInterrupt => {
                let seqno = self.reg(SEQNO).wrapping_add(1);
                self.set(SEQNO, seqno);
                self.regs.fetch_or_u32(INT_STATUS, INT_USER);
            }
            // The "Use Global GTT" bit (22) is not decoded: a privileged command's addresses are
            // global-GTT addresses, a non-privileged one's are PPGTT addresses whatever it says.
            Command::StoreDataImm { address, low, high } => match high {
                None => self.write_in(space, address, &low.to_le_bytes())?,
                Some(high) => {
                    let value = u64::from(high) << 32 | u64::from(low);
                    self.write_in(space, address, &value.to_le_bytes())?
                }
            },
            Command::ColorBlt { dst, rect, color } => {
                self.color_blt(space, dst, rect, color)?;
                return Ok(1 + blit_bytes(dst, rect) / PAGE_SIZE);
            }
            Command::SrcCopyBlt { dst, rect, src, src_x, src_y } => {
                self.src_copy_blt(space, dst, rect, src, src_x, src_y)?;
                return Ok(1 + blit_bytes(dst, rect) / PAGE_SIZE);
            }
        }
        Ok(1)
    }

    /// MI_LOAD_REGISTER_IMM: only privileged code may load registers, and only PDP0 (the
    /// context selection). All pairs are checked before any is written, so a refused command
    /// loads nothing.
    fn load_register_imm(&mut self, pairs: &[(u32, u32)], space: AddressSpace, command_address: u64) -> Result<(), Fault> {
        let refuse = |code| Err(Fault { code, address: command_address });
        if let AddressSpace::PerProcess { .. } = space {
            return refuse(FAULT_PRIVILEGED);
        }
        if pairs.iter().any(|&(register, _)| register != PDP0_LDW && register != PDP0_UDW) {
            return refuse(FAULT_FORBIDDEN_REGISTER);
        }
        for &(register, value) in pairs {
            self.set(u64::from(register), value);
        }
        Ok(())
    }

    fn color_blt(&mut self, space: AddressSpace, dst: Surface, rect: Rect, color: u32) -> Result<(), Fault> {
        let row_bytes = check_blit(dst, rect)?;
        let pixel = &color.to_le_bytes()[..dst.cpp as usize];
        let row: Vec<u8> = pixel.iter().copied().cycle().take(row_bytes).collect();
        for y in rect.y1..rect.y2 {
            let at = pixel_address(dst, rect.x1, y)?;
            self.write_in(space, at, &row)?;
        }
        Ok(())
    }

    fn src_copy_blt(&mut self, space: AddressSpace, dst: Surface, rect: Rect, src: Surface, src_x: u16, src_y: u16) -> Result<(), Fault> {
        let row_bytes = check_blit(dst, rect)?;
        let height = rect.height() as u16;
        let mut row = vec![0u8; row_bytes];
        // Copy bottom-up when the destination is after the source so an overlapping copy
        // within one surface reads rows before overwriting them.
        let bottom_up = pixel_address(dst, rect.x1, rect.y1)? > pixel_address(src, src_x, src_y)?;
        for i in 0..height {
            let i = if bottom_up { height - 1 - i } else { i };
            let from = pixel_address(src, src_x, src_y.saturating_add(i))?;
            let to = pixel_address(dst, rect.x1, rect.y1 + i)?;
            self.read_in(space, from, &mut row)?;
            self.write_in(space, to, &row)?;
        }
        Ok(())
    }

    /// Record a fault in the fault registers and raise INT_FAULT.
    fn record_fault(&mut self, f: CommandFault) {
        self.set(FAULT_COMMAND, f.header);
        self.set(FAULT_ADDRESS_LO, f.fault.address as u32);
        self.set(FAULT_ADDRESS_HI, (f.fault.address >> 32) as u32);
        self.set(FAULT_COMMAND_ADDRESS_LO, f.command_address as u32);
        self.set(FAULT_COMMAND_ADDRESS_HI, (f.command_address >> 32) as u32);
        // Status last: software polling FAULT_STATUS sees the other registers complete.
        self.set(FAULT_STATUS, f.fault.code);
        self.regs.fetch_or_u32(INT_STATUS, INT_FAULT);
    }
}

/// Bytes of the access at `at` (of `remaining` bytes) that stay within `at`'s page.
fn chunk_len(at: u64, remaining: usize) -> usize {
    let to_page_end = PAGE_SIZE - at % PAGE_SIZE;
    remaining.min(to_page_end as usize)
}

/// Bytes a blit writes.
fn blit_bytes(dst: Surface, rect: Rect) -> u64 {
    u64::from(rect.width()) * u64::from(dst.cpp) * u64::from(rect.height())
}

/// Bytes per row of a blit, or a malformed-command fault if it is too big.
fn check_blit(dst: Surface, rect: Rect) -> Result<usize, Fault> {
    let row = u64::from(rect.width()) * u64::from(dst.cpp);
    if blit_bytes(dst, rect) > MAX_BLIT_BYTES {
        return Err(Fault { code: FAULT_MALFORMED_COMMAND, address: dst.address });
    }
    Ok(row as usize)
}

/// Graphics address of pixel (x, y) of a surface.
fn pixel_address(surface: Surface, x: u16, y: u16) -> Result<u64, Fault> {
    let offset = u64::from(y) * u64::from(surface.pitch) + u64::from(x) * u64::from(surface.cpp);
    surface
        .address
        .checked_add(offset)
        .ok_or(Fault { code: FAULT_OUTSIDE_GTT, address: surface.address })
}
