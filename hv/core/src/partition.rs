//! A partition: its address space, its run state, its verdict and its console.

use crate::address::{Gpa, Hpa};
pub use crate::address_space::Access;
use crate::address_space::AddressSpace;
use alloc::string::String;
use alloc::vec::Vec;

/// Why a partition stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest asked to stop (hypercall or PSCI `SYSTEM_OFF`).
    Requested,
    /// The hypervisor stopped it for a fault, described here.
    Fault(String),
}

/// The run state of a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Configured, not yet started.
    Created,
    /// Its vCPUs are running.
    Running,
    /// Not started, for the reason given.
    NotStarted(String),
    /// Stopped.
    Stopped(StopReason),
}

/// The test verdict a partition reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing reported.
    None,
    /// Reported success.
    Passed,
    /// Reported failure with a code and a detail value.
    Failed {
        /// The non-zero failure code.
        code: u64,
        /// Extra information from the guest.
        detail: u64,
    },
}

/// Reads host memory for the hypervisor (implemented by the image with the
/// identity map, and by fakes in tests).
pub trait HostMemory {
    /// Copies `buf.len()` bytes from host-physical `hpa` into `buf`.
    ///
    /// Callers only pass ranges that a partition's address space translated,
    /// i.e. memory that exists and that the hypervisor maps.
    fn read(&self, hpa: Hpa, buf: &mut [u8]);
}

/// Where guest console lines go.
pub trait ConsoleSink {
    /// Prints one complete line written by `partition`.
    fn guest_line(&mut self, partition: &str, line: &str);

    /// Prints part of a line at once (an interactive console, where a
    /// prompt must show before its newline); `continues` when an earlier
    /// part of the same line was printed already.
    fn guest_partial(&mut self, partition: &str, text: &str, continues: bool) {
        let _ = (partition, text, continues);
    }

    /// Ends a line whose start went out through [`ConsoleSink::guest_partial`].
    fn guest_line_end(&mut self, partition: &str, rest: &str) {
        self.guest_line(partition, rest);
    }
}

/// Longest console line a partition can build; longer lines are split.
pub const CONSOLE_LINE_MAX: usize = 256;

/// Most unknown hypercalls that are logged per partition, so a hostile guest
/// cannot flood the console.
pub const UNKNOWN_CALL_LOG_LIMIT: u32 = 8;

/// A statically configured partition.
#[derive(Debug)]
pub struct Partition {
    /// Index in the configuration.
    pub index: usize,
    /// Name from the configuration.
    pub name: String,
    /// The address space every view of its memory is derived from.
    pub space: AddressSpace,
    /// Run state.
    pub state: RunState,
    /// Last reported verdict.
    pub verdict: Verdict,
    /// Unknown hypercalls made so far.
    pub unknown_calls: u32,
    /// Whether the console hypercall prints (configuration `console`).
    pub console_enabled: bool,
    /// The devices emulated for the partition.
    pub bus: crate::mmio::MmioBus,
    /// Print console output at once, without waiting for the end of the
    /// line (the partition a person is typing to).
    pub eager_console: bool,
    console_line: Vec<u8>,
    mid_line: bool,
}

impl Partition {
    /// A partition in the `Created` state.
    pub fn new(index: usize, name: &str, space: AddressSpace) -> Partition {
        Partition {
            index,
            name: String::from(name),
            space,
            state: RunState::Created,
            verdict: Verdict::None,
            unknown_calls: 0,
            console_enabled: true,
            bus: crate::mmio::MmioBus::new(),
            eager_console: false,
            console_line: Vec::new(),
            mid_line: false,
        }
    }

    /// Translates `[gpa, gpa + len)` through the partition's address space
    /// (see [`AddressSpace::translate`]).
    pub fn translate(&self, gpa: Gpa, len: u64, access: Access) -> Option<Hpa> {
        self.space.translate(gpa, len, access)
    }

    /// Back to the state of a freshly started partition after a reset: no
    /// verdict, console line flushed (the address space and devices stay).
    pub fn restart(&mut self, sink: &mut dyn ConsoleSink) {
        self.flush_console(sink);
        self.verdict = Verdict::None;
        self.state = RunState::Running;
    }

    /// Whether the partition has stopped.
    pub fn is_stopped(&self) -> bool {
        matches!(self.state, RunState::Stopped(_))
    }

    /// Stops the partition (the first reason wins) and flushes its console.
    pub fn stop(&mut self, reason: StopReason, sink: &mut dyn ConsoleSink) {
        self.flush_console(sink);
        if !self.is_stopped() {
            self.state = RunState::Stopped(reason);
        }
    }

    /// Appends guest console bytes, printing each complete line. Control
    /// characters other than tab are shown as `?`, so a guest cannot drive
    /// the operator's terminal.
    pub fn console_write(&mut self, bytes: &[u8], sink: &mut dyn ConsoleSink) {
        for &byte in bytes {
            match byte {
                b'\n' => self.flush_console(sink),
                b'\r' => {}
                b'\t' | 0x20..=0x7e | 0x80..=0xff => self.console_line.push(byte),
                _ => self.console_line.push(b'?'),
            }
            if self.console_line.len() >= CONSOLE_LINE_MAX {
                self.flush_console(sink);
            }
        }
        if self.eager_console && !self.console_line.is_empty() {
            let text = String::from_utf8_lossy(&self.console_line);
            sink.guest_partial(&self.name, &text, self.mid_line);
            self.console_line.clear();
            self.mid_line = true;
        }
    }

    fn flush_console(&mut self, sink: &mut dyn ConsoleSink) {
        if self.mid_line {
            let rest = String::from_utf8_lossy(&self.console_line);
            sink.guest_line_end(&self.name, &rest);
            self.mid_line = false;
        } else if !self.console_line.is_empty() {
            let line = String::from_utf8_lossy(&self.console_line);
            sink.guest_line(&self.name, &line);
        }
        self.console_line.clear();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Collects console lines.
    #[derive(Default)]
    pub struct Lines(pub Vec<(String, String)>);

    impl ConsoleSink for Lines {
        fn guest_line(&mut self, partition: &str, line: &str) {
            self.0.push((partition.into(), line.into()));
        }
    }

    pub fn test_partition() -> Partition {
        Partition::new(0, "p", crate::address_space::tests::sample())
    }

    #[test]
    fn console_lines_are_split_and_sanitized() {
        let mut p = test_partition();
        let mut lines = Lines::default();
        p.console_write(b"hello\r\nwor", &mut lines);
        p.console_write(b"ld\x1b[2J\n", &mut lines);
        p.console_write(&[b'x'; CONSOLE_LINE_MAX + 3], &mut lines);
        p.stop(StopReason::Requested, &mut lines);
        let text: Vec<&str> = lines.0.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(text[0], "hello");
        assert_eq!(text[1], "world?[2J");
        assert_eq!(text[2].len(), CONSOLE_LINE_MAX);
        assert_eq!(text[3], "xxx");
        assert!(p.is_stopped());
    }

    #[derive(Default)]
    struct Screen(String);

    impl ConsoleSink for Screen {
        fn guest_line(&mut self, partition: &str, line: &str) {
            self.0 += &alloc::format!("[{partition}] {line}\n");
        }
        fn guest_partial(&mut self, partition: &str, text: &str, continues: bool) {
            if continues {
                self.0 += text;
            } else {
                self.0 += &alloc::format!("[{partition}] {text}");
            }
        }
        fn guest_line_end(&mut self, _: &str, rest: &str) {
            self.0 += &alloc::format!("{rest}\n");
        }
    }

    #[test]
    fn an_eager_console_shows_prompts_before_their_newline() {
        let mut p = test_partition();
        p.eager_console = true;
        let mut screen = Screen::default();
        p.console_write(b"/ # ", &mut screen);
        assert_eq!(screen.0, "[p] / # ");
        p.console_write(b"ls", &mut screen);
        p.console_write(b"\nbin\n", &mut screen);
        assert_eq!(screen.0, "[p] / # ls\n[p] bin\n");
    }

    #[test]
    fn the_first_stop_reason_wins() {
        let mut p = test_partition();
        let mut lines = Lines::default();
        p.stop(StopReason::Fault("boom".into()), &mut lines);
        p.stop(StopReason::Requested, &mut lines);
        assert_eq!(p.state, RunState::Stopped(StopReason::Fault("boom".into())));
    }
}
