//! Arm semihosting (Arm "Semihosting for AArch32 and AArch64", IHI 0058):
//! ending a QEMU run with an exit code, and a console for when the UART
//! belongs to a partition.

/// `SYS_EXIT` operation number.
const SYS_EXIT: u64 = 0x18;
/// `ADP_Stopped_ApplicationExit`: the reason code that carries an exit status.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;

/// Asks the host to end the run with `code`.
///
/// Returns only if semihosting is not enabled in the host, in which case the
/// `HLT` is an undefined instruction: callers must only use this when they
/// know a semihosting host is present.
pub fn exit(code: u32) {
    let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(code)];
    #[cfg(all(target_arch = "aarch64", not(test)))]
    // SAFETY: the semihosting call reads the two-word block and ends the run;
    // the block outlives the call.
    unsafe {
        core::arch::asm!("hlt #0xf000", in("x0") SYS_EXIT, in("x1") block.as_ptr(), options(nostack));
    }
    #[cfg(not(all(target_arch = "aarch64", not(test))))]
    let _ = (block, SYS_EXIT);
}

/// `SYS_WRITE0` operation number: write a NUL-terminated string.
const SYS_WRITE0: u64 = 0x04;

/// Writes `text` to the host's semihosting console (up to 255 bytes at a
/// time; NUL bytes end the text early).
///
/// Callers must only use this when they know a semihosting host is present.
pub fn write(text: &str) {
    for chunk in text.as_bytes().chunks(255) {
        let mut buffer = [0u8; 256];
        buffer[..chunk.len()].copy_from_slice(chunk);
        #[cfg(all(target_arch = "aarch64", not(test)))]
        // SAFETY: the semihosting call reads the NUL-terminated buffer, which
        // outlives the call.
        unsafe {
            core::arch::asm!("hlt #0xf000", inout("x0") SYS_WRITE0 => _, in("x1") buffer.as_ptr(), options(nostack));
        }
        #[cfg(not(all(target_arch = "aarch64", not(test))))]
        let _ = (buffer, SYS_WRITE0);
    }
}
