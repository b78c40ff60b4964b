//! A stage-1 identity map for guests that need their MMU on.
//!
//! With the MMU off every data access is Device-nGnRnE whatever stage 2 says;
//! a test of stage-2 attributes therefore turns stage 1 on with Normal
//! write-back everywhere, so that the combined attribute is stage 2's.
//! One level-1 table of 1 GiB blocks covers a 39-bit address space
//! (Arm ARM D8.2, 4 KiB granule, starting level 1).

/// `MAIR_EL1`: index 0 = Normal write-back read/write-allocate.
const MAIR_NORMAL_WB: u64 = 0xff;
/// Block descriptor: valid block (0b01), AttrIndx 0, SH inner (0b11 << 8), AF (1 << 10).
const BLOCK_NORMAL: u64 = 0b01 | (0b11 << 8) | (1 << 10);
/// `TCR_EL1`: T0SZ = 25 (39 bits), IRGN0/ORGN0 write-back, SH0 inner, TG0 4 KiB,
/// EPD1 (no TTBR1 walks), IPS = 40 bits.
const TCR: u64 = 25 | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 23) | (0b010 << 32);
/// `SCTLR_EL1` bits turned on: M (MMU), C (data cache), I (instruction cache).
const SCTLR_MMU_CACHES: u64 = (1 << 0) | (1 << 2) | (1 << 12);

#[repr(C, align(4096))]
struct Table([u64; 512]);

static mut LEVEL1: Table = Table([0; 512]);

/// Maps the first 512 GiB to themselves as Normal write-back and turns the
/// MMU and caches on. Call once, early.
pub fn enable_identity_map() {
    // SAFETY: called once before anything else uses the table; the MMU is
    // off, so nothing walks it yet.
    let table = unsafe { &mut *core::ptr::addr_of_mut!(LEVEL1) };
    for (i, entry) in table.0.iter_mut().enumerate() {
        *entry = ((i as u64) << 30) | BLOCK_NORMAL;
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the table identity-maps everything the guest uses, so turning
    // the MMU on changes no address; barriers order the table writes before
    // the walk.
    unsafe {
        core::arch::asm!(
            "dsb sy",
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            "mrs {tmp}, sctlr_el1",
            "orr {tmp}, {tmp}, {bits}",
            "msr sctlr_el1, {tmp}",
            "isb",
            mair = in(reg) MAIR_NORMAL_WB,
            tcr = in(reg) TCR,
            ttbr = in(reg) table.0.as_ptr() as u64,
            bits = in(reg) SCTLR_MMU_CACHES,
            tmp = out(reg) _,
            options(nostack),
        );
    }
}

/// Invalidates this CPU's stage-1 TLB entries, so the next access walks the
/// tables (and, under QEMU TCG, misses QEMU's own TLB: DESIGN.md §4).
pub fn invalidate_tlb() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: TLB maintenance only drops cached translations.
    unsafe {
        core::arch::asm!("dsb ishst", "tlbi vmalle1", "dsb nsh", "isb", options(nostack));
    }
}
