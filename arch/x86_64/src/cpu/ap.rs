//! Starting application processors: the local APIC's INIT-SIPI-SIPI and
//! the real-mode trampoline the SIPI points at.
//!
//! A started AP begins in real mode at `vector << 12`. The trampoline
//! ([`install_trampoline`] copies it there) loads its own little GDT,
//! enters 32-bit protected mode, loads the boot CPU's CR4 (less PCIDE),
//! CR3 and EFER (LME, NXE), turns paging on (which activates long mode),
//! far-jumps into a 64-bit segment and calls the entry point with the
//! stack and argument given in its parameter block. The page tables are
//! the boot CPU's (the hypervisor's own identity map, which maps the
//! trampoline page executable, since the 64-bit tail runs from it), so the
//! 64-bit entry can be any hypervisor function. CR3 must lie below 4 GiB
//! (it is loaded in 32-bit mode).
//!
//! Parameter block, at [`PARAMS_OFFSET`] in the trampoline page:
//!
//! | offset | contents |
//! |--------|----------|
//! | 0x00 | GDT: null, 32-bit code (0x08), data (0x10), 64-bit code (0x18) |
//! | 0x20 | GDTR: limit (u16) at 0x22, base (u32) at 0x24 |
//! | 0x30 | far pointer to the 32-bit code: offset (u32), selector (u16) |
//! | 0x38 | far pointer to the 64-bit code: offset (u32), selector (u16) |
//! | 0x40 | CR3, CR4, EFER, CR0 (u32 each) |
//! | 0x50 | stack top, entry, argument (u64 each) |

use core::ptr::addr_of;

/// Where the parameter block lies in the trampoline page.
pub const PARAMS_OFFSET: u64 = 0x800;

core::arch::global_asm!(
    ".pushsection .text.bulkhead_ap_trampoline, \"ax\"",
    ".global bulkhead_ap_trampoline_start",
    ".global bulkhead_ap_trampoline_pm",
    ".global bulkhead_ap_trampoline_lm",
    ".global bulkhead_ap_trampoline_end",
    ".code16",
    "bulkhead_ap_trampoline_start:",
    "    cli",
    "    cld",
    "    movw %cs, %ax",
    "    movw %ax, %ds",
    "    xorl %ebx, %ebx",
    "    movw %ax, %bx",
    "    shll $4, %ebx",
    "    lgdtl 0x822",
    "    movl %cr0, %eax",
    "    orl $1, %eax",
    "    movl %eax, %cr0",
    "    ljmpl *0x830",
    ".code32",
    "bulkhead_ap_trampoline_pm:",
    "    movw $0x10, %ax",
    "    movw %ax, %ds",
    "    movw %ax, %es",
    "    movw %ax, %ss",
    "    movl 0x844(%ebx), %eax",
    "    movl %eax, %cr4",
    "    movl 0x840(%ebx), %eax",
    "    movl %eax, %cr3",
    "    movl $0xc0000080, %ecx",
    "    movl 0x848(%ebx), %eax",
    "    xorl %edx, %edx",
    "    wrmsr",
    "    movl 0x84c(%ebx), %eax",
    "    movl %eax, %cr0",
    "    ljmpl *0x838(%ebx)",
    ".code64",
    "bulkhead_ap_trampoline_lm:",
    "    movl %ebx, %ebx",
    "    movq 0x850(%rbx), %rsp",
    "    movq 0x860(%rbx), %rdi",
    "    movq 0x858(%rbx), %rax",
    "    xorl %ebp, %ebp",
    "    callq *%rax",
    "2:  cli",
    "    hlt",
    "    jmp 2b",
    "bulkhead_ap_trampoline_end:",
    ".popsection",
    options(att_syntax),
);

unsafe extern "C" {
    static bulkhead_ap_trampoline_start: u8;
    static bulkhead_ap_trampoline_pm: u8;
    static bulkhead_ap_trampoline_lm: u8;
    static bulkhead_ap_trampoline_end: u8;
}

/// The trampoline's GDT (Intel SDM vol. 3A §3.4.5), access bits preset.
const TRAMPOLINE_GDT: [u64; 4] = [0, 0x00cf_9b00_0000_ffff, 0x00cf_9300_0000_ffff, 0x00af_9b00_0000_ffff];
const CODE32: u16 = 0x08;
const CODE64: u16 = 0x18;
/// CR4.PCIDE may not be set outside long mode; CR4.CET needs CR0.WP first;
/// CR4.VMXE (set on the boot CPU by VMX enabling) is each CPU's own to set,
/// after its IA32_FEATURE_CONTROL checks (`cpu::vmx::enable`).
const CR4_DROP: u64 = (1 << 13) | (1 << 17) | (1 << 23);
/// EFER bits the AP takes over from the boot CPU: SCE, LME, NXE.
const EFER_KEEP: u64 = (1 << 0) | (1 << 8) | (1 << 11);

/// Why the trampoline could not be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrampolineError {
    /// The page is not 4 KiB aligned or not below 1 MiB.
    BadPage(u64),
    /// The boot CPU's CR3 lies above 4 GiB.
    HighCr3(u64),
    /// The trampoline's code (this many bytes) would overlap its parameter
    /// block at [`PARAMS_OFFSET`].
    TooLong(u64),
}

/// The 64-bit entry an AP calls: `entry(argument)` on its own stack.
pub type ApEntry = extern "C" fn(u64) -> !;

/// Copies the trampoline to `page` (physical = virtual, below 1 MiB) and
/// fills its parameter block with this CPU's CR0, CR3, CR4 and EFER and
/// the given entry; [`set_stack`] gives each AP its stack and argument.
/// Returns the SIPI vector (`page >> 12`).
///
/// # Errors
/// [`TrampolineError`] when the page or the paging set-up does not fit.
///
/// # Safety
/// `page` must be a 4 KiB page of RAM, identity-mapped, that nothing else
/// uses while APs start.
pub unsafe fn install_trampoline(page: u64, entry: ApEntry) -> Result<u8, TrampolineError> {
    if page & 0xfff != 0 || page >= 1 << 20 || page == 0 {
        return Err(TrampolineError::BadPage(page));
    }
    let (cr0, cr3, cr4): (u64, u64, u64);
    // SAFETY: reading control registers has no side effect at CPL 0.
    unsafe {
        core::arch::asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags));
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags));
        core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
    }
    if cr3 >= 1 << 32 {
        return Err(TrampolineError::HighCr3(cr3));
    }
    // SAFETY: EFER exists on every long-mode CPU.
    let efer = unsafe { super::svm::rdmsr(super::svm::MSR_EFER) };
    let start = addr_of!(bulkhead_ap_trampoline_start) as u64;
    let len = addr_of!(bulkhead_ap_trampoline_end) as u64 - start;
    let pm = addr_of!(bulkhead_ap_trampoline_pm) as u64 - start;
    let lm = addr_of!(bulkhead_ap_trampoline_lm) as u64 - start;
    let params = page + PARAMS_OFFSET;
    if len > PARAMS_OFFSET {
        return Err(TrampolineError::TooLong(len));
    }
    // SAFETY: the caller gives us the page; the code was just checked to end
    // before the parameter block.
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, page as *mut u8, len as usize);
        let p = params as *mut u8;
        for (i, descriptor) in TRAMPOLINE_GDT.iter().enumerate() {
            (p.add(8 * i) as *mut u64).write_volatile(*descriptor);
        }
        (p.add(0x22) as *mut u16).write_unaligned((TRAMPOLINE_GDT.len() * 8 - 1) as u16);
        (p.add(0x24) as *mut u32).write_unaligned(params as u32);
        (p.add(0x30) as *mut u32).write_volatile((page + pm) as u32);
        (p.add(0x34) as *mut u16).write_volatile(CODE32);
        (p.add(0x38) as *mut u32).write_volatile((page + lm) as u32);
        (p.add(0x3c) as *mut u16).write_volatile(CODE64);
        (p.add(0x40) as *mut u32).write_volatile(cr3 as u32);
        (p.add(0x44) as *mut u32).write_volatile((cr4 & !CR4_DROP) as u32);
        (p.add(0x48) as *mut u32).write_volatile((efer & EFER_KEEP) as u32);
        (p.add(0x4c) as *mut u32).write_volatile(cr0 as u32);
        (p.add(0x58) as *mut u64).write_volatile(entry as usize as u64);
    }
    Ok((page >> 12) as u8)
}

/// Sets the stack top and argument the next AP started through the
/// trampoline at `page` receives.
///
/// # Safety
/// `page` must hold a trampoline installed by [`install_trampoline`], and
/// no AP may be between its SIPI and its entry.
pub unsafe fn set_stack(page: u64, stack_top: u64, argument: u64) {
    let p = (page + PARAMS_OFFSET) as *mut u8;
    // SAFETY: the caller vouches for the page.
    unsafe {
        (p.add(0x50) as *mut u64).write_volatile(stack_top);
        (p.add(0x60) as *mut u64).write_volatile(argument);
    }
}

/// IA32_APIC_BASE.
const MSR_APIC_BASE: u32 = 0x1b;
/// IA32_APIC_BASE.EXTD: x2APIC mode.
const APIC_BASE_X2APIC: u64 = 1 << 10;
/// x2APIC ICR MSR.
const MSR_X2APIC_ICR: u32 = 0x830;
/// x2APIC ID MSR.
const MSR_X2APIC_ID: u32 = 0x802;
/// x2APIC EOI register MSR, and the xAPIC EOI register's MMIO offset
/// (Intel SDM Vol. 3A §11.8.5, Table 11-1 / §11.12.1.2).
const MSR_X2APIC_EOI: u32 = 0x80b;
const XAPIC_EOI_OFFSET: u64 = 0xb0;
/// The spurious-interrupt vector register: x2APIC MSR and xAPIC MMIO
/// offset (Intel SDM Vol. 3A §11.9); bit 8 enables the APIC in software.
const MSR_X2APIC_SVR: u32 = 0x80f;
const XAPIC_SVR_OFFSET: u64 = 0xf0;
const SVR_APIC_ENABLE: u32 = 1 << 8;
/// ICR delivery modes with level assert (bit 14), physical destination.
const ICR_INIT: u32 = 0x0000_4500;
const ICR_STARTUP: u32 = 0x0000_4600;
/// ICR delivery mode fixed (0), level assert (bit 14), physical destination.
const ICR_FIXED: u32 = 0x0000_4000;
/// ICR delivery status: the IPI is not yet sent.
const ICR_PENDING: u32 = 1 << 12;

/// The local APIC of this CPU, in xAPIC (MMIO) or x2APIC (MSR) mode.
pub struct LocalApic {
    mmio: Option<u64>,
}

/// Why an IPI could not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpiTimeout;

impl LocalApic {
    /// This CPU's local APIC, in the mode the firmware left it.
    ///
    /// # Safety
    /// The APIC's MMIO page (xAPIC mode) must be identity-mapped as
    /// uncached device memory, as OVMF and the hypervisor's own tables map
    /// it.
    pub unsafe fn current() -> LocalApic {
        // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU.
        let base = unsafe { super::svm::rdmsr(MSR_APIC_BASE) };
        if base & APIC_BASE_X2APIC != 0 {
            LocalApic { mmio: None }
        } else {
            LocalApic { mmio: Some(base & 0x000f_ffff_ffff_f000) }
        }
    }

    /// The physical address of the register page (xAPIC mode), or `None`
    /// in x2APIC mode, which uses MSRs.
    pub fn mmio_base(&self) -> Option<u64> {
        self.mmio
    }

    /// Whether the APIC is in x2APIC mode.
    pub fn x2apic(&self) -> bool {
        self.mmio.is_none()
    }

    /// This CPU's APIC ID.
    pub fn id(&self) -> u32 {
        match self.mmio {
            // SAFETY: the ID register is read-only state of this APIC.
            Some(base) => unsafe { ((base + 0x20) as *const u32).read_volatile() >> 24 },
            // SAFETY: the x2APIC ID MSR exists in x2APIC mode.
            None => unsafe { super::svm::rdmsr(MSR_X2APIC_ID) as u32 },
        }
    }

    /// Ends the highest-priority in-service interrupt (writes 0 to the EOI
    /// register). Needed after an interrupt was acknowledged without a
    /// handler, e.g. by a VMX exit with "acknowledge interrupt on exit".
    pub fn eoi(&self) {
        match self.mmio {
            // SAFETY: a write of 0 to this APIC's EOI register only retires
            // the in-service interrupt.
            Some(base) => unsafe { ((base + XAPIC_EOI_OFFSET) as *mut u32).write_volatile(0) },
            // SAFETY: the EOI MSR exists in x2APIC mode; writing 0 is the
            // only valid value.
            None => unsafe { super::svm::wrmsr(MSR_X2APIC_EOI, 0) },
        }
    }

    /// Enables the APIC in software with `vector` as its spurious-interrupt
    /// vector, so that a spurious interrupt reaches a gate the hypervisor
    /// chose (one that returns without an EOI, as the SDM requires) rather
    /// than whatever vector the firmware left there.
    pub fn set_spurious_vector(&self, vector: u8) {
        let value = SVR_APIC_ENABLE | u32::from(vector);
        match self.mmio {
            // SAFETY: the SVR of this APIC; the value keeps the APIC enabled
            // and only changes which vector a spurious interrupt uses.
            Some(base) => unsafe { ((base + XAPIC_SVR_OFFSET) as *mut u32).write_volatile(value) },
            // SAFETY: the SVR MSR exists in x2APIC mode; same value.
            None => unsafe { super::svm::wrmsr(MSR_X2APIC_SVR, u64::from(value)) },
        }
    }

    fn send(&self, apic_id: u32, low: u32) -> Result<(), IpiTimeout> {
        match self.mmio {
            Some(base) => {
                // SAFETY: ICR high (0x310) then low (0x300) of this APIC;
                // writing the low half sends the IPI.
                unsafe {
                    ((base + 0x310) as *mut u32).write_volatile(apic_id << 24);
                    ((base + 0x300) as *mut u32).write_volatile(low);
                }
                for _ in 0..1_000_000 {
                    // SAFETY: reading ICR low has no side effect.
                    if unsafe { ((base + 0x300) as *const u32).read_volatile() } & ICR_PENDING == 0 {
                        return Ok(());
                    }
                    core::hint::spin_loop();
                }
                Err(IpiTimeout)
            }
            None => {
                // SAFETY: the ICR MSR exists in x2APIC mode; one write sends.
                unsafe { super::svm::wrmsr(MSR_X2APIC_ICR, (u64::from(apic_id) << 32) | u64::from(low)) };
                Ok(())
            }
        }
    }

    /// Sends a fixed interrupt with `vector` to the CPU `apic_id`: the
    /// hypervisor's way to wake a CPU waiting in HLT or make it leave its
    /// guest, so that it looks at state another CPU changed.
    ///
    /// # Errors
    /// [`IpiTimeout`] when the APIC never reports the IPI as sent.
    pub fn send_fixed(&self, apic_id: u32, vector: u8) -> Result<(), IpiTimeout> {
        self.send(apic_id, ICR_FIXED | u32::from(vector))
    }

    /// Sends INIT, waits, then two STARTUP IPIs with `vector` to the CPU
    /// `apic_id` (Intel SDM vol. 3A §8.4.4.1 / AMD APM vol. 2 §16.5).
    ///
    /// # Errors
    /// [`IpiTimeout`] when the APIC never reports an IPI as sent.
    ///
    /// # Safety
    /// `vector` must point at a trampoline; the target CPU must be an AP
    /// that nothing runs on.
    pub unsafe fn start_ap(&self, apic_id: u32, vector: u8) -> Result<(), IpiTimeout> {
        self.send(apic_id, ICR_INIT)?;
        delay_ticks(INIT_DELAY_TICKS);
        for _ in 0..2 {
            self.send(apic_id, ICR_STARTUP | u32::from(vector))?;
            delay_ticks(SIPI_DELAY_TICKS);
        }
        Ok(())
    }
}

/// TSC ticks waited after INIT: 10 ms at up to 4 GHz.
const INIT_DELAY_TICKS: u64 = 40_000_000;
/// TSC ticks waited after each SIPI: 200 µs at up to 4 GHz.
const SIPI_DELAY_TICKS: u64 = 800_000;

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Spins for at least `ticks` TSC ticks.
pub fn delay_ticks(ticks: u64) {
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}
