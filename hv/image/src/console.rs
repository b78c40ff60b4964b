//! The hypervisor console: the UART the device tree names, the `log`
//! back end, and the sink for guest console lines.

use bulkhead_core::bootargs::LogLevel;
use bulkhead_core::partition::ConsoleSink;
use bulkhead_drivers::pl011::Pl011;
use spin::Mutex;

/// Where the hypervisor's console output goes.
enum Output {
    /// Nowhere (no console found yet, or the UART was given away without a
    /// semihosting host).
    None,
    /// The UART `/chosen/stdout-path` names. `Pl011` holds a reference to MMIO
    /// registers, only used under the console lock.
    Uart(Pl011),
    /// The semihosting host's console, once a partition owns the UART.
    Semihosting(Semihosting),
}

struct Console(Output);

/// Writes formatted text to the semihosting console.
struct Semihosting;

impl core::fmt::Write for Semihosting {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        bulkhead_arch_aarch64::semihosting::write(s);
        Ok(())
    }
}

impl Console {
    fn out(&mut self) -> Option<&mut dyn core::fmt::Write> {
        match &mut self.0 {
            Output::Uart(uart) => Some(uart),
            Output::Semihosting(host) => Some(host),
            Output::None => None,
        }
    }

    fn uart(&self) -> Option<&Pl011> {
        match &self.0 {
            Output::Uart(uart) => Some(uart),
            _ => None,
        }
    }
}

// SAFETY: the UART registers are only accessed with the mutex held (or, in
// `emergency_line`, when the holder can never run again).
unsafe impl Send for Console {}

static CONSOLE: Mutex<Console> = Mutex::new(Console(Output::None));

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let mut console = CONSOLE.lock();
            if let Some(out) = console.out() {
                let _ = writeln!(out, "[bulkhead] {:<5} {}", record.level(), record.args());
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
        CONSOLE.lock().0 = Output::Uart(unsafe { Pl011::new(base as usize) });
    }
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level.filter());
}

/// Prints a plain line (no log prefix), e.g. the run summary.
pub fn line(args: core::fmt::Arguments<'_>) {
    let mut console = CONSOLE.lock();
    if let Some(out) = console.out() {
        let _ = writeln!(out, "{args}");
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
    CONSOLE.lock().uart().and_then(|uart| uart.read_byte())
}

/// Makes the console UART interrupt while typed input waits.
pub fn enable_input_interrupt() {
    if let Some(uart) = CONSOLE.lock().uart() {
        uart.enable_receive_interrupt();
    }
}

/// Gives the console UART away (a partition owns it now): later output goes
/// to the semihosting host if there is one, else nowhere.
pub fn give_away_uart(semihosting: bool) {
    CONSOLE.lock().0 = if semihosting { Output::Semihosting(Semihosting) } else { Output::None };
}

/// Prints guest console lines as `[partition] line`.
pub struct GuestConsole;

impl ConsoleSink for GuestConsole {
    fn guest_line(&mut self, partition: &str, text: &str) {
        line(format_args!("[{partition}] {text}"));
    }

    fn guest_partial(&mut self, partition: &str, text: &str, continues: bool) {
        let mut console = CONSOLE.lock();
        if let Some(out) = console.out() {
            if continues {
                let _ = write!(out, "{text}");
            } else {
                let _ = write!(out, "[{partition}] {text}");
            }
        }
    }

    fn guest_line_end(&mut self, _partition: &str, rest: &str) {
        line(format_args!("{rest}"));
    }
}
