//! Hypercalls (see `bulkhead_abi::hypercall`).
//!
//! On arm64 a call is `HVC #0` (or a trapped `SMC #0`) with SMCCC registers.
//! On x86_64 it is `VMMCALL` with the same eight values in registers chosen
//! to mirror SMCCC (the hypervisor's `x86::run` reads them the same way):
//!
//! | SMCCC | x86_64 |
//! |-------|--------|
//! | x0 (function ID; result) | rax |
//! | x1..x3 (arguments; results) | rdi, rsi, rdx |
//! | x4..x7 (arguments) | r8, r9, r10, r11 |
//!
//! Results come back in rax, rdi, rsi, rdx; every other register is kept.

use bulkhead_abi::hypercall::{self as abi, HvError};

/// Makes a hypercall with `HVC #0` (`VMMCALL` on x86_64); returns `x0`.
pub fn call(function: u32, args: [u64; 7]) -> u64 {
    call_via(Conduit::Hvc, function, args)
}

/// Which instruction carries a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// `HVC #0` (on x86_64: `VMMCALL`).
    Hvc,
    /// `SMC #0` (trapped by the hypervisor; arm64 only).
    Smc,
}

/// Makes a call through `conduit`; returns `x0`.
pub fn call_via(conduit: Conduit, function: u32, args: [u64; 7]) -> u64 {
    let x0: u64;
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a hypercall only changes x0..x3 (SMCCC), which are declared
    // clobbered; memory it reads is passed by address and outlives the call.
    unsafe {
        match conduit {
            Conduit::Hvc => core::arch::asm!(
                "hvc #0",
                inout("x0") u64::from(function) => x0,
                inout("x1") args[0] => _, inout("x2") args[1] => _, inout("x3") args[2] => _,
                in("x4") args[3], in("x5") args[4], in("x6") args[5], in("x7") args[6],
            ),
            Conduit::Smc => core::arch::asm!(
                "smc #0",
                inout("x0") u64::from(function) => x0,
                inout("x1") args[0] => _, inout("x2") args[1] => _, inout("x3") args[2] => _,
                in("x4") args[3], in("x5") args[4], in("x6") args[5], in("x7") args[6],
            ),
        }
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a hypercall only changes rax, rdi, rsi and rdx (the registers
    // mirroring x0..x3), which are declared clobbered; memory it reads is
    // passed by address and outlives the call.
    unsafe {
        match conduit {
            Conduit::Hvc => core::arch::asm!(
                "vmmcall",
                inout("rax") u64::from(function) => x0,
                inout("rdi") args[0] => _, inout("rsi") args[1] => _, inout("rdx") args[2] => _,
                in("r8") args[3], in("r9") args[4], in("r10") args[5], in("r11") args[6],
            ),
            Conduit::Smc => x0 = HvError::NotSupported.to_register(),
        }
    }
    #[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
    {
        let _ = (conduit, function, args);
        x0 = HvError::NotSupported.to_register();
    }
    x0
}

/// Writes bytes to the console (at most `CONSOLE_WRITE_MAX`).
///
/// # Errors
/// What the hypervisor returned.
pub fn console_write(bytes: &[u8]) -> Result<u64, HvError> {
    console_write_raw(bytes.as_ptr() as u64, bytes.len() as u64)
}

/// `CONSOLE_WRITE` with an arbitrary address and length, for attack tests.
///
/// # Errors
/// What the hypervisor returned.
pub fn console_write_raw(address: u64, length: u64) -> Result<u64, HvError> {
    HvError::check(call(abi::CONSOLE_WRITE, [address, length, 0, 0, 0, 0, 0]))
}

/// Asks the hypervisor to print each `(address, length)` buffer, every one
/// of them bad for this partition; each call must be refused with
/// `InvalidParameter`.
///
/// # Errors
/// `first_code + i` for the first buffer `i` that was not refused so.
pub fn expect_console_writes_refused(bad_writes: &[(u64, u64)], first_code: u64) -> Result<(), u64> {
    for (i, &(address, length)) in bad_writes.iter().enumerate() {
        let result = console_write_raw(address, length);
        crate::println!("console write {address:#x}+{length} -> {result:?}");
        if result != Err(HvError::InvalidParameter) {
            return Err(first_code + i as u64);
        }
    }
    Ok(())
}

/// Reports the partition's verdict: 0 = pass.
pub fn report_result(code: u64, detail: u64) {
    call(abi::REPORT_RESULT, [code, detail, 0, 0, 0, 0, 0]);
}

/// Stops the partition with PSCI `SYSTEM_OFF`.
pub fn system_off() -> ! {
    call(abi::PSCI_SYSTEM_OFF, [0; 7]);
    // The hypervisor never resumes a partition after SYSTEM_OFF.
    loop {
        core::hint::spin_loop();
    }
}
