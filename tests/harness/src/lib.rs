//! Bulkhead's integration harness: the host side of the QEMU tests.
//!
//! An integration test boots the real hypervisor image, with a test
//! configuration and tiny guests, under QEMU TCG, reads the serial log and
//! judges the run by QEMU's exit code and the lines that did or did not
//! appear. This crate holds the pieces that do not depend on how the images
//! are built:
//!
//! - [`qemu`]: the QEMU command line for each machine, exactly as DESIGN.md §6
//!   gives it;
//! - [`runner`]: spawns QEMU with stdin closed, captures its output line by
//!   line into a log, enforces a hard timeout and can stop early when a line
//!   appears;
//! - [`scenario`]: what a scenario expects, and the pure judging logic;
//! - [`ram`]: checks of what guests left in guest RAM (GPU scenarios, whose
//!   RAM is a file), against contents computed on the host;
//! - [`scenarios`]: the list of scenarios `cargo xtask test` runs.
//!
//! `cargo xtask` (tools/xtask) builds the images and the ESP folders and
//! drives these pieces.

#![forbid(unsafe_code)]

pub mod qemu;
pub mod ram;
pub mod runner;
pub mod scenario;
pub mod scenarios;

pub use qemu::{Arch, QemuCommand};
pub use ram::{RamCheck, check_ram};
pub use runner::{Ending, RunOptions, RunOutcome};
pub use scenario::{Scenario, Verdict, judge};
pub use scenarios::SCENARIOS;
