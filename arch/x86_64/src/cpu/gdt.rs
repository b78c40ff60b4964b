//! The hypervisor's own GDTs and each CPU's TSS. The firmware's GDT lives
//! in boot-services memory, which stops being ours to trust after
//! `ExitBootServices`.
//!
//! `_start` loads [`BOOT_GDT`] (null, 64-bit code, data), which needs no
//! memory allocation. Once the heap exists, each CPU loads its own GDT with
//! the same two segments plus a descriptor of its own TSS
//! ([`load_cpu_tables`]): the TSS holds the interrupt stack table (IST),
//! fresh stacks that the IDT's gates for #DF, NMI and #MC switch to, so
//! those are reported even when the stack pointer they interrupted is bad.
//! Each CPU needs its own TSS (its own IST stacks, and LTR marks the
//! descriptor busy), hence its own GDT.

use alloc::boxed::Box;
use alloc::vec;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, FS, GS, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::PrivilegeLevel;

/// Selector of the 64-bit code segment.
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of the data segment.
pub const DATA_SELECTOR: u16 = 0x10;
/// Selector of this CPU's TSS in its own GDT (two slots: 0x18 and 0x20).
pub const TSS_SELECTOR: u16 = 0x18;

/// IST slots (1-based, as the IDT gate names them) of the vectors that get
/// a stack of their own.
pub mod ist {
    /// #DF: a fault while delivering a fault, typically on a bad stack.
    pub const DOUBLE_FAULT: u8 = 1;
    /// NMI: may arrive at any instruction, including one that has just
    /// loaded RSP.
    pub const NMI: u8 = 2;
    /// #MC: may arrive at any instruction.
    pub const MACHINE_CHECK: u8 = 3;
}

/// Bytes of each IST stack: enough for the fatal-exception report.
pub const IST_STACK_SIZE: usize = 16 << 10;

/// The descriptors both GDTs share (Intel SDM vol. 3A §3.4.5); their
/// accessed bits are preset, so the CPU never writes them.
const fn with_segments<const N: usize>() -> GlobalDescriptorTable<N> {
    let mut gdt = GlobalDescriptorTable::empty();
    gdt.append(Descriptor::kernel_code_segment());
    gdt.append(Descriptor::kernel_data_segment());
    gdt
}

/// The GDT `_start` loads: no TSS yet.
static BOOT_GDT: GlobalDescriptorTable<3> = with_segments();

/// Reloads every segment register after a GDT load.
///
/// # Safety
/// The loaded GDT must hold the code and data descriptors at
/// [`CODE_SELECTOR`] and [`DATA_SELECTOR`].
unsafe fn reload_segments() {
    let code = SegmentSelector::new(CODE_SELECTOR >> 3, PrivilegeLevel::Ring0);
    let data = SegmentSelector::new(DATA_SELECTOR >> 3, PrivilegeLevel::Ring0);
    // SAFETY: both selectors name valid ring-0 descriptors (caller's
    // contract); CS is reloaded with a far return to the next instruction.
    unsafe {
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        FS::set_reg(data);
        GS::set_reg(data);
    }
}

/// Loads [`BOOT_GDT`] and reloads every segment register from it.
///
/// # Safety
/// Call at CPL 0 with interrupts disabled, in 64-bit mode.
pub unsafe fn load() {
    BOOT_GDT.load();
    // SAFETY: BOOT_GDT holds the two descriptors.
    unsafe { reload_segments() };
}

/// Gives this CPU its own GDT and TSS, with fresh IST stacks for the
/// vectors in [`ist`], and loads both (LTR). Everything is allocated on the
/// heap and never freed: it is this CPU's for good.
///
/// The IDT's gates name these IST slots only after
/// [`super::idt::use_ist_stacks`]; until then the stacks are unused.
///
/// # Safety
/// Call once per CPU, at CPL 0 with interrupts disabled, in 64-bit mode,
/// with a working heap.
pub unsafe fn load_cpu_tables() {
    let mut tss = TaskStateSegment::new();
    for slot in [ist::DOUBLE_FAULT, ist::NMI, ist::MACHINE_CHECK] {
        let stack: &'static mut [u8] = vec![0u8; IST_STACK_SIZE].leak();
        let top = (stack.as_ptr() as u64 + IST_STACK_SIZE as u64) & !0xf;
        tss.interrupt_stack_table[usize::from(slot - 1)] = VirtAddr::new(top);
    }
    let tss: &'static TaskStateSegment = Box::leak(Box::new(tss));
    let mut gdt: GlobalDescriptorTable<5> = with_segments();
    let selector = gdt.append(Descriptor::tss_segment(tss));
    assert_eq!(selector.0, TSS_SELECTOR);
    // The CPU sets the TSS descriptor's busy bit in this memory on LTR:
    // heap memory, writable, and never read by Rust code again.
    let gdt: &'static GlobalDescriptorTable<5> = Box::leak(Box::new(gdt));
    gdt.load();
    // SAFETY: the GDT holds the code and data descriptors at the usual
    // selectors, and an available TSS at TSS_SELECTOR that lives forever.
    unsafe {
        reload_segments();
        load_tss(selector);
    }
}

/// The base address of the TSS this CPU loaded (the descriptor at
/// [`TSS_SELECTOR`] in its current GDT): what a VM exit must reload into TR.
pub fn current_tss_base() -> u64 {
    let gdtr = x86_64::instructions::tables::sgdt();
    let descriptor = gdtr.base.as_u64() + u64::from(TSS_SELECTOR);
    // SAFETY: GDTR points at this CPU's GDT, which `load_cpu_tables` built
    // with a 16-byte TSS descriptor at TSS_SELECTOR and leaked; both words
    // are inside it, and reading them has no side effect.
    let (low, high) = unsafe { ((descriptor as *const u64).read(), ((descriptor + 8) as *const u64).read()) };
    // Base bits 23:0 are in 39:16 of the low word, 31:24 in 63:56, and
    // 63:32 in the high word (SDM Vol. 3A §8.2.3, Figure 8-4).
    ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | ((high & 0xffff_ffff) << 32)
}
