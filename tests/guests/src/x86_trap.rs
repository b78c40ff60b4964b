//! Catching the exceptions an x86_64 test provokes on purpose: the guest's
//! own GDT and IDT, and `try_*` accessors that come back with the exception
//! instead of faulting the partition.
//!
//! Each accessor is one asm block that stores the address of its landing
//! label in [`RECOVER`] before the instruction that may fault. The common
//! exception handler resumes there (recording the vector and error code)
//! when a landing address is armed; any other exception reports failure and
//! stops the partition. The hypervisor gives the guest no GDT (GDTR limit
//! 0), and delivering an exception reloads CS, so [`install`] loads one.

use crate::{Console, FAIL_EXCEPTION, hv};
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

/// Where the handler resumes after an expected exception (0: none armed).
#[unsafe(no_mangle)]
static RECOVER: AtomicU64 = AtomicU64::new(0);
static LAST_VECTOR: AtomicU64 = AtomicU64::new(0);
static LAST_ERROR_CODE: AtomicU64 = AtomicU64::new(0);

/// An exception caught by a `try_*` accessor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    /// The vector (13 = #GP).
    pub vector: u64,
    /// The error code the CPU pushed (0 for vectors without one).
    pub error_code: u64,
}

/// #GP.
pub const GENERAL_PROTECTION: u64 = 13;

/// Null, 64-bit code (0x08), data (0x10).
static GDT: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];

/// Interrupt gates for every vector: 0..32 lead to the exception handler,
/// the rest are absent until [`set_interrupt_handler`] fills one.
static mut IDT: [[u64; 2]; 256] = [[0; 2]; 256];
/// The handler [`set_interrupt_handler`] installed (0: none).
static INTERRUPT_HANDLER: AtomicU64 = AtomicU64::new(0);

#[repr(C, packed)]
struct TablePointer {
    limit: u16,
    base: u64,
}

/// The state the vector stubs save, in push order reversed.
#[repr(C)]
struct Frame {
    rbx: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rax: u64,
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

// One stub per vector: those without a CPU error code push 0 so that every
// frame looks alike, then the vector; the common part saves the
// caller-saved registers (and RBX, which it uses) and calls `guest_trap`.
core::arch::global_asm!(
    ".section .text",
    ".macro TRAP_STUB n, has_code",
    "trap_stub_\\n:",
    ".if \\has_code == 0",
    "    push 0",
    ".endif",
    "    push \\n",
    "    jmp trap_common",
    ".endm",
    "TRAP_STUB 0, 0", "TRAP_STUB 1, 0", "TRAP_STUB 2, 0", "TRAP_STUB 3, 0",
    "TRAP_STUB 4, 0", "TRAP_STUB 5, 0", "TRAP_STUB 6, 0", "TRAP_STUB 7, 0",
    "TRAP_STUB 8, 1", "TRAP_STUB 9, 0", "TRAP_STUB 10, 1", "TRAP_STUB 11, 1",
    "TRAP_STUB 12, 1", "TRAP_STUB 13, 1", "TRAP_STUB 14, 1", "TRAP_STUB 15, 0",
    "TRAP_STUB 16, 0", "TRAP_STUB 17, 1", "TRAP_STUB 18, 0", "TRAP_STUB 19, 0",
    "TRAP_STUB 20, 0", "TRAP_STUB 21, 1", "TRAP_STUB 22, 0", "TRAP_STUB 23, 0",
    "TRAP_STUB 24, 0", "TRAP_STUB 25, 0", "TRAP_STUB 26, 0", "TRAP_STUB 27, 0",
    "TRAP_STUB 28, 0", "TRAP_STUB 29, 1", "TRAP_STUB 30, 1", "TRAP_STUB 31, 0",
    "trap_common:",
    "    push rax", "push rcx", "push rdx", "push rsi", "push rdi",
    "    push r8", "push r9", "push r10", "push r11", "push rbx",
    "    mov rdi, rsp",
    "    mov rbx, rsp",
    "    and rsp, -16",
    "    call guest_trap",
    "    mov rsp, rbx",
    "    pop rbx",
    "    pop r11", "pop r10", "pop r9", "pop r8",
    "    pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rax",
    "    add rsp, 16",
    "    iretq",
    ".section .rodata",
    ".balign 8",
    "trap_stubs:",
    ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "    .quad trap_stub_\\n",
    ".endr",
    ".section .text",
);

// The stub of the one external-interrupt vector a test takes: saves the
// caller-saved registers, calls `guest_interrupt`, returns with IRETQ.
core::arch::global_asm!(
    ".section .text",
    "interrupt_stub:",
    "    push rax", "push rcx", "push rdx", "push rsi", "push rdi",
    "    push r8", "push r9", "push r10", "push r11", "push rbx",
    "    mov rbx, rsp",
    "    and rsp, -16",
    "    cld",
    "    call guest_interrupt",
    "    mov rsp, rbx",
    "    pop rbx",
    "    pop r11", "pop r10", "pop r9", "pop r8",
    "    pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rax",
    "    iretq",
);

unsafe extern "C" {
    static trap_stubs: [u64; 32];
    fn interrupt_stub();
}

/// A present, DPL 0, 64-bit interrupt gate (type 0xe, so the CPU clears
/// RFLAGS.IF on entry), selector 0x08, to `offset`.
fn gate(offset: u64) -> [u64; 2] {
    let low = (offset & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | (((offset >> 16) & 0xffff) << 48);
    [low, offset >> 32]
}

/// Sends external-interrupt vector `vector` (32 or above) to `handler`,
/// which runs with interrupts masked and returns to the interrupted code.
/// One handler at a time: a later call replaces it. Call after [`install`].
pub fn set_interrupt_handler(vector: u8, handler: fn()) {
    if vector < 32 {
        return;
    }
    INTERRUPT_HANDLER.store(handler as *const () as u64, Ordering::SeqCst);
    let entry = gate(interrupt_stub as *const () as u64);
    // SAFETY: a plain store into this partition's own IDT; the vector is
    // not delivered before the caller enables interrupts.
    unsafe { (*core::ptr::addr_of_mut!(IDT))[usize::from(vector)] = entry };
}

/// Called by `interrupt_stub`.
#[unsafe(no_mangle)]
extern "C" fn guest_interrupt() {
    let handler = INTERRUPT_HANDLER.load(Ordering::SeqCst);
    if handler != 0 {
        // SAFETY: only `set_interrupt_handler` stores here, a `fn()`.
        let handler: fn() = unsafe { core::mem::transmute::<usize, fn()>(handler as usize) };
        handler();
    }
}

/// Enables interrupts (STI).
pub fn enable_interrupts() {
    // SAFETY: the IDT routes the vectors this partition can receive.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
}

/// Masks interrupts (CLI).
pub fn disable_interrupts() {
    // SAFETY: only masks interrupts.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
}

/// Waits for an interrupt unless `done` already holds: checked with
/// interrupts masked, then STI; HLT (HLT sits in STI's shadow, so an
/// interrupt arriving in between still ends it). Interrupts are enabled on
/// return. Returns `done`'s final answer.
pub fn wait_for_interrupt(done: impl Fn() -> bool) -> bool {
    disable_interrupts();
    if done() {
        enable_interrupts();
        return true;
    }
    // SAFETY: as for `enable_interrupts`; HLT returns after an interrupt.
    unsafe { core::arch::asm!("sti", "hlt", options(nomem, nostack)) };
    done()
}

/// Loads the guest's GDT (reloading every segment) and an IDT whose 32
/// exception vectors go to the common handler (the others absent).
pub fn install() {
    // SAFETY: `trap_stubs` is the table of stub addresses defined above.
    let stubs = unsafe { &*core::ptr::addr_of!(trap_stubs) };
    let gates: [[u64; 2]; 256] = core::array::from_fn(|vector| stubs.get(vector).map_or([0; 2], |&offset| gate(offset)));
    // SAFETY: single-threaded start-up; nothing reads the IDT before `lidt`.
    unsafe { core::ptr::addr_of_mut!(IDT).write(gates) };
    let gdt = TablePointer { limit: (core::mem::size_of_val(&GDT) - 1) as u16, base: GDT.as_ptr() as u64 };
    let idt = TablePointer { limit: (256 * 16 - 1) as u16, base: core::ptr::addr_of!(IDT) as u64 };
    // SAFETY: both tables are static and valid; CS is reloaded by a far
    // return to the next instruction, the data segments with selector 0x10.
    unsafe {
        core::arch::asm!(
            "lgdt [{gdt}]",
            "push 0x08",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov {tmp:e}, 0x10",
            "mov ds, {tmp:e}",
            "mov es, {tmp:e}",
            "mov ss, {tmp:e}",
            "lidt [{idt}]",
            gdt = in(reg) &gdt,
            idt = in(reg) &idt,
            tmp = out(reg) _,
        );
    }
}

/// Called by the stubs with the saved frame.
#[unsafe(no_mangle)]
extern "C" fn guest_trap(frame: &mut Frame) {
    let recover = RECOVER.swap(0, Ordering::SeqCst);
    if recover != 0 {
        LAST_VECTOR.store(frame.vector, Ordering::SeqCst);
        LAST_ERROR_CODE.store(frame.error_code, Ordering::SeqCst);
        frame.rip = recover;
        return;
    }
    let _ = writeln!(
        Console,
        "guest exception: vector {} error code {:#x} at RIP {:#x} (RAX {:#x} RCX {:#x} RDX {:#x})",
        frame.vector, frame.error_code, frame.rip, frame.rax, frame.rcx, frame.rdx
    );
    hv::report_result(FAIL_EXCEPTION, frame.vector);
    hv::system_off()
}

/// The result of an accessor: `value` unless the handler took an exception
/// on the way to the landing label.
fn outcome<T>(value: T) -> Result<T, Exception> {
    // The handler disarms RECOVER; still armed means no exception came.
    if RECOVER.swap(0, Ordering::SeqCst) != 0 {
        Ok(value)
    } else {
        Err(Exception { vector: LAST_VECTOR.load(Ordering::SeqCst), error_code: LAST_ERROR_CODE.load(Ordering::SeqCst) })
    }
}

/// WRMSR `msr` = `value`.
///
/// # Errors
/// The exception it raised.
pub fn try_wrmsr(msr: u32, value: u64) -> Result<(), Exception> {
    // SAFETY: a deliberate probe: the hypervisor either performs it, or
    // injects an exception that the handler turns into a jump to `2:`.
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov [rip + RECOVER], {tmp}",
            "wrmsr",
            "2:",
            tmp = out(reg) _,
            in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
        );
    }
    outcome(())
}

/// RDMSR `msr`.
///
/// # Errors
/// The exception it raised.
pub fn try_rdmsr(msr: u32) -> Result<u64, Exception> {
    let (low, high): (u32, u32);
    // SAFETY: as in `try_wrmsr`.
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov [rip + RECOVER], {tmp}",
            "xor eax, eax",
            "xor edx, edx",
            "rdmsr",
            "2:",
            tmp = out(reg) _,
            in("ecx") msr, out("eax") low, out("edx") high,
        );
    }
    outcome((u64::from(high) << 32) | u64::from(low))
}

/// IN AL from `port`.
///
/// # Errors
/// The exception it raised.
pub fn try_inb(port: u16) -> Result<u8, Exception> {
    let value: u8;
    // SAFETY: as in `try_wrmsr`.
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov [rip + RECOVER], {tmp}",
            "xor eax, eax",
            "in al, dx",
            "2:",
            tmp = out(reg) _,
            in("dx") port, out("al") value,
        );
    }
    outcome(value)
}

/// OUT `value` to `port`.
///
/// # Errors
/// The exception it raised.
pub fn try_outb(port: u16, value: u8) -> Result<(), Exception> {
    // SAFETY: as in `try_wrmsr`.
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov [rip + RECOVER], {tmp}",
            "out dx, al",
            "2:",
            tmp = out(reg) _,
            in("dx") port, in("al") value,
        );
    }
    outcome(())
}

/// A 64-bit load from `address`.
///
/// # Errors
/// The exception it raised.
pub fn try_read_u64(address: u64) -> Result<u64, Exception> {
    let value: u64;
    // SAFETY: as in `try_wrmsr`; the address is the probe's target.
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov [rip + RECOVER], {tmp}",
            "xor {value}, {value}",
            "mov {value}, [{address}]",
            "2:",
            tmp = out(reg) _,
            address = in(reg) address,
            value = out(reg) value,
        );
    }
    outcome(value)
}

/// A 64-bit store of `value` to `address`.
///
/// # Errors
/// The exception it raised.
pub fn try_write_u64(address: u64, value: u64) -> Result<(), Exception> {
    // SAFETY: as in `try_read_u64`.
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov [rip + RECOVER], {tmp}",
            "mov [{address}], {value}",
            "2:",
            tmp = out(reg) _,
            address = in(reg) address,
            value = in(reg) value,
        );
    }
    outcome(())
}

/// `add dword [address], value`: a read-modify-write in one instruction.
///
/// # Errors
/// The exception it raised.
pub fn try_add_u32(address: u64, value: u32) -> Result<(), Exception> {
    // SAFETY: as in `try_read_u64`.
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov [rip + RECOVER], {tmp}",
            "add dword ptr [{address}], {value:e}",
            "2:",
            tmp = out(reg) _,
            address = in(reg) address,
            value = in(reg) value,
        );
    }
    outcome(())
}
