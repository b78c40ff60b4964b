//! The hypervisor console: the UART the device tree names, the `log`
//! back end, and the sink for guest console lines.

use bulkhead_core::bootargs::LogLevel;
use bulkhead_core::partition::ConsoleSink;
use bulkhead_drivers::pl011::Pl011;
use core::fmt::Write;
use spin::Mutex;

/// The console UART. `Pl011` holds a reference to MMIO registers, which is
/// only used under this lock.
struct Console(Option<Pl011>);

// SAFETY: the UART registers are only accessed with the mutex held (or, in
// `emergency_line`, when the holder can never run again).
unsafe impl Send for Console {}

static CONSOLE: Mutex<Console> = Mutex::new(Console(None));

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let mut console = CONSOLE.lock();
            if let Some(uart) = console.0.as_mut() {
                let _ = writeln!(uart, "[bulkhead] {:<5} {}", record.level(), record.args());
            }
        }
    }

    fn flush(&self) {}
}

/// Starts the console on the PL011 at `uart` (identity-mapped as Device by
/// the firmware and later by our own map) and installs the logger.
pub fn init(uart: Option<u64>, level: LogLevel) {
    if let Some(base) = uart {
        // SAFETY: `base` comes from the device tree's `stdout-path` node, a
        // PL011 that only the hypervisor drives.
        CONSOLE.lock().0 = Some(unsafe { Pl011::new(base as usize) });
    }
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(match level {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    });
}

/// Prints a plain line (no log prefix), e.g. the run summary.
pub fn line(args: core::fmt::Arguments<'_>) {
    let mut console = CONSOLE.lock();
    if let Some(uart) = console.0.as_mut() {
        let _ = writeln!(uart, "{args}");
    }
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

/// Takes one byte typed at the console, if any.
pub fn read_input() -> Option<u8> {
    CONSOLE.lock().0.as_ref().and_then(|uart| uart.read_byte())
}

/// Makes the console UART interrupt while typed input waits.
pub fn enable_input_interrupt() {
    if let Some(uart) = CONSOLE.lock().0.as_ref() {
        uart.enable_receive_interrupt();
    }
}

/// Prints guest console lines as `[partition] line`.
pub struct GuestConsole;

impl ConsoleSink for GuestConsole {
    fn guest_line(&mut self, partition: &str, text: &str) {
        line(format_args!("[{partition}] {text}"));
    }

    fn guest_partial(&mut self, partition: &str, text: &str, continues: bool) {
        let mut console = CONSOLE.lock();
        if let Some(uart) = console.0.as_mut() {
            if continues {
                let _ = write!(uart, "{text}");
            } else {
                let _ = write!(uart, "[{partition}] {text}");
            }
        }
    }

    fn guest_line_end(&mut self, _partition: &str, rest: &str) {
        line(format_args!("{rest}"));
    }
}
