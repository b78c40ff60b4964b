//! The hypervisor's own GDT: null, 64-bit code, data. The firmware's GDT
//! lives in boot-services memory, which stops being ours to trust after
//! `ExitBootServices`.

/// Selector of the 64-bit code segment.
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of the data segment.
pub const DATA_SELECTOR: u16 = 0x10;

/// Descriptors (Intel SDM vol. 3A §3.4.5). Access bits are preset, so the
/// CPU never needs to write the table.
static GDT: [u64; 3] = [
    0,
    // Code: present, DPL 0, code, executable/readable, accessed; L=1 (64-bit), G=1.
    0x00af_9b00_0000_ffff,
    // Data: present, DPL 0, data, writable, accessed; D/B=1, G=1.
    0x00cf_9300_0000_ffff,
];

/// The operand of `lgdt`/`lidt`.
#[repr(C, packed)]
pub struct DescriptorTablePointer {
    /// Size of the table minus one.
    pub limit: u16,
    /// Linear address of the table.
    pub base: u64,
}

/// Loads [`GDT`] and reloads every segment register from it.
///
/// # Safety
/// Call at CPL 0 with interrupts disabled, in 64-bit mode.
pub unsafe fn load() {
    let pointer = DescriptorTablePointer { limit: (core::mem::size_of_val(&GDT) - 1) as u16, base: GDT.as_ptr() as u64 };
    // SAFETY: the table is static and valid; CS is reloaded with a far
    // return to the next instruction, data segments with the data selector.
    unsafe {
        core::arch::asm!(
            "lgdt [{pointer}]",
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov {tmp:e}, {data}",
            "mov ds, {tmp:e}",
            "mov es, {tmp:e}",
            "mov ss, {tmp:e}",
            "mov fs, {tmp:e}",
            "mov gs, {tmp:e}",
            pointer = in(reg) &pointer,
            code = const CODE_SELECTOR as u64,
            data = const DATA_SELECTOR as u32,
            tmp = out(reg) _,
        );
    }
}
