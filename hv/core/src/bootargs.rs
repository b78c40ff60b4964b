//! Boot arguments: a short text file on the ESP, `key=value` words.
//!
//! | word | meaning |
//! |---|---|
//! | `log=error\|warn\|info\|debug\|trace` | console log level (default `info`) |
//! | `exit=semihosting\|park` | how the run ends: semihosting `SYS_EXIT` (QEMU) or parking the CPUs (hardware); default: semihosting on QEMU `virt`, park elsewhere |
//! | `crash=panic\|exception` | test hook: the hypervisor deliberately panics or takes an unexpected exception once booted |
//! | `input=NAME` | the partition that receives console input (default: the first with `console = "pl011"`) |
//! | `interactive=1` | a person is at the console: Linux partitions receiving input get `bulkhead.shell=1` |
//! | `selftest=msi` | arm64: before partitions start, the hypervisor routes an MSI of the unassigned `edu` through the ITS to an LPI (its stream allowed only the ITS doorbell by the SMMU) and checks that the LPI arrives |
//! | `selftest=dma` | before partitions start, the hypervisor makes an unassigned `edu` PCI device DMA into its own memory and checks that the IOMMU (SMMUv3 on arm64, VT-d on x86_64) refused and recorded it |
//! | `selftest=gpu` | before partitions start, the hypervisor drives the GPU model directly (its own ring, GTT entries and memory): blits, a store to RAM, a user interrupt, and a deliberate fault it recovers from; `gpu selftest: ... ok` lines, a failure ends the run |
//! | `bench=gpu` | before partitions start, the hypervisor times direct XY_SRC_COPY_BLTs in the GPU's local memory and prints a `gpu bench direct:` line |
//! | `bench=dma` | before partitions start, the hypervisor times DMA map/unmap in a scratch IOMMU domain (SMMUv3 or VT-d) and prints `bench:` lines |
//!
//! Unknown words are reported, not ignored silently.

use alloc::string::String;
use alloc::vec::Vec;

/// Console log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// The default.
    Info,
    /// Details of every exit.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The `log` crate's filter for this level.
    pub const fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// How a run ends once every partition has stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitMethod {
    /// Semihosting `SYS_EXIT` (QEMU with `-semihosting`).
    Semihosting,
    /// Park every CPU (hardware).
    Park,
}

/// A deliberate failure for testing the crash paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashTest {
    /// `panic!` in the hypervisor.
    Panic,
    /// An unexpected exception at EL2 (a load from an unmapped address).
    Exception,
    /// A load from page 0, which the hypervisor's own tables leave
    /// unmapped (`crash=null`; x86_64).
    NullPointer,
    /// The stack pointer run off the bottom of the boot CPU's stack into
    /// its unmapped guard page (`crash=stack-overflow`; x86_64): the fault
    /// cannot be delivered on that stack, so it becomes a double fault.
    StackOverflow,
}

/// Parsed boot arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootArgs {
    /// Console log level.
    pub log_level: LogLevel,
    /// How to end the run; `None` lets the platform decide.
    pub exit: Option<ExitMethod>,
    /// Crash test requested, if any.
    pub crash: Option<CrashTest>,
    /// The partition that receives console input.
    pub input: Option<String>,
    /// A person is at the console.
    pub interactive: bool,
    /// Run the DMA isolation self-test (`selftest=dma`).
    pub dma_selftest: bool,
    /// Run the MSI self-test (`selftest=msi`, arm64).
    pub msi_selftest: bool,
    /// Run the DMA map/unmap benchmark (`bench=dma`).
    pub dma_bench: bool,
    /// Run the GPU direct-path self-test (`selftest=gpu`).
    pub gpu_selftest: bool,
    /// Run the GPU direct blit benchmark (`bench=gpu`).
    pub gpu_bench: bool,
    /// Words that were not understood, for the boot log.
    pub unknown: Vec<String>,
}

impl Default for BootArgs {
    fn default() -> Self {
        BootArgs { log_level: LogLevel::Info, exit: None, crash: None, input: None, interactive: false, dma_selftest: false, msi_selftest: false, dma_bench: false, gpu_selftest: false, gpu_bench: false, unknown: Vec::new() }
    }
}

impl BootArgs {
    /// Parses whitespace-separated `key=value` words.
    pub fn parse(text: &str) -> BootArgs {
        let mut args = BootArgs::default();
        for word in text.split_whitespace() {
            let understood = match word.split_once('=') {
                Some(("log", level)) => match parse_level(level) {
                    Some(l) => {
                        args.log_level = l;
                        true
                    }
                    None => false,
                },
                Some(("exit", "semihosting")) => {
                    args.exit = Some(ExitMethod::Semihosting);
                    true
                }
                Some(("exit", "park")) => {
                    args.exit = Some(ExitMethod::Park);
                    true
                }
                Some(("crash", "panic")) => {
                    args.crash = Some(CrashTest::Panic);
                    true
                }
                Some(("crash", "exception")) => {
                    args.crash = Some(CrashTest::Exception);
                    true
                }
                Some(("crash", "null")) => {
                    args.crash = Some(CrashTest::NullPointer);
                    true
                }
                Some(("crash", "stack-overflow")) => {
                    args.crash = Some(CrashTest::StackOverflow);
                    true
                }
                Some(("input", name)) if !name.is_empty() => {
                    args.input = Some(String::from(name));
                    true
                }
                Some(("interactive", "1")) => {
                    args.interactive = true;
                    true
                }
                Some(("selftest", "dma")) => {
                    args.dma_selftest = true;
                    true
                }
                Some(("selftest", "msi")) => {
                    args.msi_selftest = true;
                    true
                }
                Some(("bench", "dma")) => {
                    args.dma_bench = true;
                    true
                }
                Some(("selftest", "gpu")) => {
                    args.gpu_selftest = true;
                    true
                }
                Some(("bench", "gpu")) => {
                    args.gpu_bench = true;
                    true
                }
                _ => false,
            };
            if !understood {
                args.unknown.push(String::from(word));
            }
        }
        args
    }
}

fn parse_level(text: &str) -> Option<LogLevel> {
    Some(match text {
        "error" => LogLevel::Error,
        "warn" => LogLevel::Warn,
        "info" => LogLevel::Info,
        "debug" => LogLevel::Debug,
        "trace" => LogLevel::Trace,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_words_and_keeps_unknown_ones() {
        let args = BootArgs::parse(" log=debug crash=panic\nexit=park  frob=1 log=loud input=linux interactive=1 selftest=dma");
        assert!(args.dma_selftest);
        assert_eq!(args.input.as_deref(), Some("linux"));
        assert!(args.interactive);
        assert_eq!(args.log_level, LogLevel::Debug);
        assert_eq!(args.crash, Some(CrashTest::Panic));
        assert_eq!(args.exit, Some(ExitMethod::Park));
        assert_eq!(args.unknown, ["frob=1", "log=loud"]);
        assert!(!BootArgs::parse("log=debug").dma_selftest);
        assert!(BootArgs::parse("bench=dma").dma_bench);
        assert_eq!(BootArgs::parse("bench=dmax").unknown, ["bench=dmax"]);
        assert!(!BootArgs::parse("selftest=dma").dma_bench);
        assert!(BootArgs::parse("selftest=gpu").gpu_selftest);
        assert!(BootArgs::parse("bench=gpu").gpu_bench);
        assert!(!BootArgs::parse("selftest=dma").gpu_selftest);
    }

    #[test]
    fn msi_selftest_is_its_own_word() {
        let args = BootArgs::parse("selftest=msi");
        assert!(args.msi_selftest);
        assert!(!args.dma_selftest);
        assert!(!BootArgs::parse("selftest=dma").msi_selftest);
    }

    #[test]
    fn dma_selftest_needs_its_exact_word() {
        assert!(BootArgs::parse("selftest=dma").dma_selftest);
        let args = BootArgs::parse("dma-selftest");
        assert!(!args.dma_selftest);
        assert_eq!(args.unknown, ["dma-selftest"]);
    }

    #[test]
    fn parses_every_crash_test() {
        for (word, test) in [
            ("crash=panic", CrashTest::Panic),
            ("crash=exception", CrashTest::Exception),
            ("crash=null", CrashTest::NullPointer),
            ("crash=stack-overflow", CrashTest::StackOverflow),
        ] {
            assert_eq!(BootArgs::parse(word).crash, Some(test), "{word}");
        }
        assert_eq!(BootArgs::parse("crash=bogus").unknown, ["crash=bogus"]);
    }

    #[test]
    fn empty_text_gives_defaults() {
        assert_eq!(BootArgs::parse(""), BootArgs::default());
    }
}
