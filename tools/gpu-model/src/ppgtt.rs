//! The per-process GTT walker: gen8 4-level page tables (PML4, PDP, PD, PT; 48-bit graphics
//! addresses) in guest RAM, in the format `bulkhead_abi::gpu::ppgtt` fixes (gen8 PRM Vol. 5
//! *Memory Views*, "Per-Process GTT"; i915 `gen8_ppgtt.c` for the PS_2M and gen12 LM bits).
//!
//! | level | address bits | entry | leaf when |
//! |---|---|---|---|
//! | PML4 | 47:39 | table pointer (RAM) | never |
//! | PDP | 38:30 | table pointer (RAM) | never (model: no 1 GiB pages) |
//! | PD | 29:21 | table pointer (RAM) or 2 MiB page | bit 7 `PS_2M` |
//! | PT | 20:12 | 4 KiB page | always |
//!
//! Every entry: bit 0 present, bits 38:12 the address. A leaf with bit 11 (`LOCAL_MEMORY`)
//! addresses local memory (an offset), else guest RAM (a guest physical address); table
//! pointers always address RAM and their bit 11 is ignored.
//!
//! model: there is no TLB. Every access walks the tables in memory, so a change to an entry
//! (the mediator updating its shadow) takes effect at the next access.

use bulkhead_abi::gpu::ppgtt::{
    ADDRESS_LIMIT, ENTRY_SIZE, LOCAL_MEMORY, PML4, PRESENT, entry_address, entry_span, index, is_leaf,
};

use crate::gpu::{Fault, Physical};
use crate::memory::Memory;
use crate::regs::{FAULT_NOT_PRESENT, FAULT_OUTSIDE_GTT, FAULT_OUTSIDE_MEMORY};

/// Translate the graphics `address` through the tables whose PML4 is at guest physical address
/// `pml4` (bits 38:12 are used, as PDP0 holds it). `ram` is guest RAM starting at guest physical
/// address `ram_base`; `local_size` the size of local memory.
///
/// # Errors
///
/// A [`Fault`] carrying `address`: `FAULT_OUTSIDE_GTT` for an address at or above 2^48,
/// `FAULT_OUTSIDE_MEMORY` for a table outside RAM or a leaf outside RAM / local memory,
/// `FAULT_NOT_PRESENT` for an entry without the present bit at any level.
pub fn translate<G: Memory>(ram: &G, ram_base: u64, local_size: u64, pml4: u64, address: u64) -> Result<Physical, Fault> {
    let fault = |code| Err(Fault { code, address });
    if address >= ADDRESS_LIMIT {
        return fault(FAULT_OUTSIDE_GTT);
    }
    let mut table = entry_address(pml4);
    let mut level = PML4;
    loop {
        // `table` < 2^39 and the index < 512: no overflow.
        let slot = table + index(address, level) as u64 * ENTRY_SIZE;
        let Some(entry) = slot.checked_sub(ram_base).and_then(|offset| ram.read_u64(offset)) else {
            return fault(FAULT_OUTSIDE_MEMORY);
        };
        if entry & PRESENT == 0 {
            return fault(FAULT_NOT_PRESENT);
        }
        if is_leaf(entry, level) {
            // A 2 MiB leaf ignores address bits 20:12 of its entry.
            let span = entry_span(level);
            let at = (entry_address(entry) & !(span - 1)) + address % span;
            return if entry & LOCAL_MEMORY != 0 {
                if at < local_size { Ok(Physical::Local(at)) } else { fault(FAULT_OUTSIDE_MEMORY) }
            } else {
                match at.checked_sub(ram_base) {
                    Some(offset) if offset < ram.size() => Ok(Physical::Ram(offset)),
                    _ => fault(FAULT_OUTSIDE_MEMORY),
                }
            };
        }
        // Not a leaf, so not the PT level: the loop ends at the PT at the latest.
        table = entry_address(entry);
        level += 1;
    }
}

#[cfg(test)]
mod tests {
    use bulkhead_abi::gpu::ppgtt::PS_2M;

    use super::*;
    use crate::memory::VecMemory;

    const RAM_BASE: u64 = 0x4000_0000;

    /// RAM with a PML4 at 0x1000, PDP at 0x2000, PD at 0x3000, PT at 0x4000, for address 0.
    fn tables() -> VecMemory {
        let mut ram = VecMemory::zeroed(0x40_0000);
        for (table, next) in [(0x1000, 0x2000), (0x2000, 0x3000), (0x3000, 0x4000)] {
            assert!(ram.write_u64(table, (RAM_BASE + next) | PRESENT));
        }
        ram
    }

    #[test]
    fn a_4k_leaf_maps_ram_or_local_memory() {
        let mut ram = tables();
        ram.write_u64(0x4000, (RAM_BASE + 0x9000) | PRESENT);
        ram.write_u64(0x4008, 0x5000 | PRESENT | LOCAL_MEMORY | PS_2M); // bit 7 means nothing in a PT
        let walk = |ram: &VecMemory, address| translate(ram, RAM_BASE, 0x10_0000, RAM_BASE + 0x1000, address);
        assert_eq!(walk(&ram, 0x123), Ok(Physical::Ram(0x9123)));
        assert_eq!(walk(&ram, 0x1456), Ok(Physical::Local(0x5456)));
        assert_eq!(walk(&ram, 0x2000), Err(Fault { code: FAULT_NOT_PRESENT, address: 0x2000 }));
        // A 2 MiB leaf in the PD: entry address bits 20:12 ignored.
        ram.write_u64(0x3008, (RAM_BASE + 0x20_0000 + 0x5000) | PRESENT | PS_2M);
        assert_eq!(walk(&ram, 0x20_0000 + 0x1_2345), Ok(Physical::Ram(0x21_2345)));
        // Tables outside RAM; a PML4 below the RAM base.
        ram.write_u64(0x3010, (RAM_BASE + 0x1000_0000) | PRESENT);
        assert_eq!(walk(&ram, 0x40_0000), Err(Fault { code: FAULT_OUTSIDE_MEMORY, address: 0x40_0000 }));
        assert_eq!(translate(&ram, RAM_BASE, 0, 0x1000, 0), Err(Fault { code: FAULT_OUTSIDE_MEMORY, address: 0 }));
        assert_eq!(walk(&ram, 1 << 48), Err(Fault { code: FAULT_OUTSIDE_GTT, address: 1 << 48 }));
    }
}
