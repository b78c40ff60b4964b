//! A partition: its address space, its run state, its verdict and its console.

use crate::address::{Gpa, Hpa};
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_config::{MemoryAttribute, Permissions};

/// One mapped region of a partition's address space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// First guest-physical address.
    pub gpa: Gpa,
    /// The host-physical address `gpa` maps to.
    pub hpa: Hpa,
    /// Length in bytes.
    pub size: u64,
    /// Memory attribute, copied exactly into the CPU mapping.
    pub attr: MemoryAttribute,
    /// Access rights.
    pub perms: Permissions,
}

/// Kinds of access, for translation checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
}

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
    /// The address space, sorted by guest address.
    pub regions: Vec<Region>,
    /// Run state.
    pub state: RunState,
    /// Last reported verdict.
    pub verdict: Verdict,
    /// Unknown hypercalls made so far.
    pub unknown_calls: u32,
    /// Whether the console hypercall prints (configuration `console`).
    pub console_enabled: bool,
    console_line: Vec<u8>,
}

impl Partition {
    /// A partition in the `Created` state.
    pub fn new(index: usize, name: &str, mut regions: Vec<Region>) -> Partition {
        regions.sort_by_key(|r| r.gpa);
        Partition {
            index,
            name: String::from(name),
            regions,
            state: RunState::Created,
            verdict: Verdict::None,
            unknown_calls: 0,
            console_enabled: true,
            console_line: Vec::new(),
        }
    }

    /// Translates `[gpa, gpa + len)` to host-physical, if the whole range lies
    /// in one region that allows `access`.
    pub fn translate(&self, gpa: Gpa, len: u64, access: Access) -> Option<Hpa> {
        let last = gpa.checked_add(len.checked_sub(1)?)?;
        let region = self.regions.iter().find(|r| gpa >= r.gpa && gpa.offset_from(r.gpa).is_some_and(|o| o < r.size))?;
        if last.offset_from(region.gpa)? >= region.size {
            return None;
        }
        let allowed = match access {
            Access::Read => region.perms.read,
            Access::Write => region.perms.write,
        };
        if !allowed {
            return None;
        }
        region.hpa.checked_add(gpa.offset_from(region.gpa)?)
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
    }

    fn flush_console(&mut self, sink: &mut dyn ConsoleSink) {
        if self.console_line.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(&self.console_line);
        sink.guest_line(&self.name, &line);
        self.console_line.clear();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;

    /// Collects console lines.
    #[derive(Default)]
    pub struct Lines(pub Vec<(String, String)>);

    impl ConsoleSink for Lines {
        fn guest_line(&mut self, partition: &str, line: &str) {
            self.0.push((partition.into(), line.into()));
        }
    }

    pub fn test_partition() -> Partition {
        let rw = Permissions::parse("rw").unwrap();
        let r = Permissions::parse("r").unwrap();
        let w = Permissions::parse("w").unwrap();
        Partition::new(
            0,
            "p",
            vec![
                Region { gpa: Gpa::new(0x8000_0000), hpa: Hpa::new(0x2000), size: 0x1000, attr: MemoryAttribute::NormalWb, perms: r },
                Region { gpa: Gpa::new(0x4000_0000), hpa: Hpa::new(0x10_0000), size: 0x2000, attr: MemoryAttribute::NormalWb, perms: rw },
                Region { gpa: Gpa::new(0x4000_2000), hpa: Hpa::new(0x90_0000), size: 0x1000, attr: MemoryAttribute::NormalWb, perms: w },
            ],
        )
    }

    #[test]
    fn translation_stays_inside_one_region_with_the_right_permission() {
        let p = test_partition();
        assert_eq!(p.regions[0].gpa, Gpa::new(0x4000_0000), "sorted");
        assert_eq!(p.translate(Gpa::new(0x4000_0010), 16, Access::Read), Some(Hpa::new(0x10_0010)));
        assert_eq!(p.translate(Gpa::new(0x4000_1ff0), 16, Access::Read), Some(Hpa::new(0x10_1ff0)));
        assert_eq!(p.translate(Gpa::new(0x4000_1ff0), 17, Access::Read), None, "crosses into another region");
        assert_eq!(p.translate(Gpa::new(0x4000_2000), 1, Access::Read), None, "write-only");
        assert_eq!(p.translate(Gpa::new(0x8000_0000), 1, Access::Write), None, "read-only");
        assert_eq!(p.translate(Gpa::new(0x3fff_ffff), 2, Access::Read), None, "starts outside");
        assert_eq!(p.translate(Gpa::new(0x4000_0000), 0, Access::Read), None, "empty");
        assert_eq!(p.translate(Gpa::new(u64::MAX), 2, Access::Read), None, "wraps");
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

    #[test]
    fn the_first_stop_reason_wins() {
        let mut p = test_partition();
        let mut lines = Lines::default();
        p.stop(StopReason::Fault("boom".into()), &mut lines);
        p.stop(StopReason::Requested, &mut lines);
        assert_eq!(p.state, RunState::Stopped(StopReason::Fault("boom".into())));
    }
}
