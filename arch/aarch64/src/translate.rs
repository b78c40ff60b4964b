//! Address translation instructions (`AT`) and what their results mean.
//!
//! `AT S1E1R` runs a guest virtual address through the guest's stage 1 and
//! reports the IPA; `AT S12E1R` runs it through both stages and reports the
//! host-physical address. Either leaves its result in `PAR_EL1` (Arm ARM
//! D24.2.118): F (bit 0) set on a fault; otherwise PA in bits 51:12 and the
//! memory attribute, in `MAIR` encoding, in bits 63:56. `PAR_EL1` belongs to
//! the guest, so it is saved and restored around our use.

use crate::stage2::S2MemoryType;

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Output address (IPA for stage 1, PA for stages 1+2), with the page offset.
    pub address: u64,
    /// Memory attribute in `MAIR` encoding (`PAR_EL1.ATTR`).
    pub attr: u8,
}

/// Decodes `PAR_EL1` for input address `va`.
pub const fn decode_par(par: u64, va: u64) -> Option<Translation> {
    if par & 1 != 0 {
        return None;
    }
    Some(Translation { address: (par & 0x000f_ffff_ffff_f000) | (va & 0xfff), attr: (par >> 56) as u8 })
}

/// Which stages an `AT` instruction walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stages {
    /// `AT S1E1R`: guest stage 1 only.
    Stage1,
    /// `AT S12E1R`: guest stage 1, then stage 2.
    Stage1And2,
}

/// Translates guest VA `va` for a read, with the guest's EL1 state and the
/// stage 2 currently loaded on this CPU.
pub fn translate(va: u64, stages: Stages) -> Option<Translation> {
    #[cfg(all(target_arch = "aarch64", not(test)))]
    {
        let par: u64;
        // SAFETY: `AT` only writes PAR_EL1, which is saved and restored.
        unsafe {
            let saved: u64;
            core::arch::asm!("mrs {}, par_el1", out(reg) saved, options(nostack));
            match stages {
                Stages::Stage1 => core::arch::asm!("at s1e1r, {}", in(reg) va, options(nostack)),
                Stages::Stage1And2 => core::arch::asm!("at s12e1r, {}", in(reg) va, options(nostack)),
            }
            core::arch::asm!("isb", "mrs {}, par_el1", out(reg) par, options(nostack));
            core::arch::asm!("msr par_el1, {}", in(reg) saved, options(nostack));
        }
        decode_par(par, va)
    }
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    {
        let _ = (va, stages);
        None
    }
}

/// Cacheability of one half (inner or outer) of a Normal attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Cacheability {
    NonCacheable,
    WriteThrough,
    WriteBack,
}

/// Cacheability of a `MAIR` nibble (Arm ARM D24.2.109: 0b0100 NC,
/// 0b00RW/0b10RW write-through, 0b01RW/0b11RW write-back).
const fn mair_nibble_cacheability(nibble: u8) -> Cacheability {
    match nibble {
        0b0100 => Cacheability::NonCacheable,
        0b0000..=0b0011 | 0b1000..=0b1011 => Cacheability::WriteThrough,
        _ => Cacheability::WriteBack,
    }
}

/// Cacheability of a stage-2 `MemAttr` half (FWB off: 0b01 NC, 0b10 WT, 0b11 WB).
const fn s2_half_cacheability(bits: u8) -> Cacheability {
    match bits {
        0b01 => Cacheability::NonCacheable,
        0b10 => Cacheability::WriteThrough,
        _ => Cacheability::WriteBack,
    }
}

/// Stage-2 `MemAttr[3:0]` for a memory type (FWB off; DESIGN.md §4).
pub const fn s2_memattr(memory: S2MemoryType) -> u8 {
    match memory {
        S2MemoryType::NormalWriteBack => 0b1111,
        S2MemoryType::NormalNonCacheable => 0b0101,
        S2MemoryType::DeviceNGnRE => 0b0001,
        S2MemoryType::DeviceNGnRnE => 0b0000,
    }
}

/// The attribute (MAIR encoding) of an access whose stage-1 attribute is
/// `s1` (MAIR encoding) and stage-2 `MemAttr` is `s2`, FWB off (Arm ARM
/// D8.6.4 "Combining the stage 1 and stage 2 attributes"): Device wins over
/// Normal and the stricter Device type wins; for Normal memory each of inner
/// and outer takes the less cacheable of the two, keeping stage 1's
/// allocation hints when stage 1's cacheability survives.
pub const fn combine(s1: u8, s2: u8) -> u8 {
    let s1_device = s1 & 0xf0 == 0;
    let s2_device = s2 & 0b1100 == 0;
    if s1_device || s2_device {
        // Device types order nGnRnE (0) < nGnRE (1) < nGRE (2) < GRE (3).
        let s1_type = if s1_device { (s1 >> 2) & 0b11 } else { 0b11 };
        let s2_type = if s2_device { s2 & 0b11 } else { 0b11 };
        let strict = if s1_type < s2_type { s1_type } else { s2_type };
        return strict << 2;
    }
    let outer = combine_half(s1 >> 4, s2_half_cacheability(s2 >> 2));
    let inner = combine_half(s1 & 0xf, s2_half_cacheability(s2 & 0b11));
    (outer << 4) | inner
}

const fn combine_half(s1_nibble: u8, s2: Cacheability) -> u8 {
    let s1 = mair_nibble_cacheability(s1_nibble);
    let weaker = if (s2 as u8) < (s1 as u8) { s2 } else { s1 };
    match weaker {
        Cacheability::NonCacheable => 0b0100,
        // Stage 1's own encoding (with its allocation hints) survives.
        _ if weaker as u8 == s1 as u8 => s1_nibble,
        // Write-through from stage 2 under a write-back stage 1: keep the hints.
        _ => 0b1000 | (s1_nibble & 0b11),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combination_matches_what_qemu_reports() {
        // DESIGN.md §4, measured with AT S12E1R on QEMU 10.0.2.
        assert_eq!(combine(0xff, s2_memattr(S2MemoryType::NormalWriteBack)), 0xff);
        assert_eq!(combine(0xff, s2_memattr(S2MemoryType::NormalNonCacheable)), 0x44);
        assert_eq!(combine(0xff, s2_memattr(S2MemoryType::DeviceNGnRE)), 0x04);
        assert_eq!(combine(0x44, s2_memattr(S2MemoryType::NormalWriteBack)), 0x44);
    }

    #[test]
    fn device_types_take_the_stricter() {
        assert_eq!(combine(0xff, s2_memattr(S2MemoryType::DeviceNGnRnE)), 0x00);
        assert_eq!(combine(0x04, s2_memattr(S2MemoryType::DeviceNGnRnE)), 0x00);
        assert_eq!(combine(0x00, s2_memattr(S2MemoryType::DeviceNGnRE)), 0x00);
        assert_eq!(combine(0x0c, s2_memattr(S2MemoryType::NormalWriteBack)), 0x0c);
        assert_eq!(combine(0x08, s2_memattr(S2MemoryType::DeviceNGnRE)), 0x04);
    }

    #[test]
    fn write_through_from_stage_2_keeps_stage_1_hints() {
        assert_eq!(combine(0xff, 0b1010), 0xbb);
        assert_eq!(combine(0xbb, 0b1111), 0xbb);
    }

    #[test]
    fn par_decoding() {
        assert_eq!(decode_par(1, 0x1234), None);
        let t = decode_par(0x4400_0000_8000_0000, 0x8000_0123).unwrap();
        assert_eq!(t.address, 0x8000_0123);
        assert_eq!(t.attr, 0x44);
    }
}
