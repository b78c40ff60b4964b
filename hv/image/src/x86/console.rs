//! The x86_64 hypervisor console: COM1 (16550), the `log` back end, and
//! how a run ends (`isa-debug-exit` on QEMU).

use bulkhead_abi::exit::ExitCode;
use bulkhead_arch_x86_64::cpu::serial::{COM1, Uart16550};
use bulkhead_arch_x86_64::cpu::{debug_exit, halt_forever};
use bulkhead_core::bootargs::{ExitMethod, LogLevel};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

// SAFETY: COM1 is the PC console UART, and only this console drives it.
static CONSOLE: Mutex<Uart16550> = Mutex::new(unsafe { Uart16550::new(COM1) });

/// Whether [`finish`] parks instead of writing `isa-debug-exit`.
static PARK: AtomicBool = AtomicBool::new(false);

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let _ = writeln!(CONSOLE.lock(), "[bulkhead] {:<5} {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

/// Programs COM1 and installs the logger.
pub fn init(level: LogLevel) {
    CONSOLE.lock().init();
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level.filter());
}

/// Prints a plain line (no log prefix).
pub fn line(args: core::fmt::Arguments<'_>) {
    let _ = writeln!(CONSOLE.lock(), "{args}");
}

/// Prints a line even if the console lock is held: for panics and fatal
/// exceptions, after which nothing else runs.
pub fn emergency_line(args: core::fmt::Arguments<'_>) {
    if CONSOLE.is_locked() {
        // SAFETY: the run is ending; whoever held the lock was interrupted by
        // this fatal path and will never resume.
        unsafe { CONSOLE.force_unlock() };
    }
    line(args);
}

/// Chooses how the run ends: `isa-debug-exit` (the default, also on
/// `exit=semihosting`, which x86 does not have) or parking.
pub fn set_exit_method(method: Option<ExitMethod>) {
    PARK.store(method == Some(ExitMethod::Park), Ordering::Relaxed);
}

/// Logs the exit code and ends the run.
pub fn finish(code: ExitCode) -> ! {
    line(format_args!("[bulkhead] run finished: exit code {} ({})", code.code(), code.name()));
    finish_quietly(code)
}

/// Ends the run without printing: `isa-debug-exit` with the exit code, so
/// QEMU exits with status `(code << 1) | 1`.
pub fn finish_quietly(code: ExitCode) -> ! {
    if !PARK.load(Ordering::Relaxed) {
        debug_exit(u32::from(code.code()));
    }
    halt_forever()
}
