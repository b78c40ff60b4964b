//! Flattened device trees for the Linux guests of a Bulkhead partition.
//!
//! A partition that boots Linux gets a device tree describing exactly what
//! the hypervisor gives it, and nothing of the host. [`build`] takes that
//! description as plain data ([`GuestPlatform`]), checks it ([`validate`]),
//! and writes a DTB with `vm-fdt`. It never panics on any input: every
//! problem is a [`DeviceTreeError`].
//!
//! | node | contents |
//! |---|---|
//! | `/` | `compatible = "bulkhead,partition"`, `model = "Bulkhead partition"`, 2 address and 2 size cells, `interrupt-parent = <&gic>` |
//! | `/chosen` | `bootargs`; `linux,initrd-start`/`-end` (64-bit) with an initrd; `stdout-path` with a UART |
//! | `/aliases` | `serial0` (only with a UART) |
//! | `/memory@BASE` | one per RAM range, `device_type = "memory"` |
//! | `/cpus/cpu@N` | `reg = <N>` (`MPIDR_EL1.Aff0`), `enable-method = "psci"` |
//! | `/psci` | `arm,psci-1.0`, `arm,psci-0.2`, `arm,psci`; `method = "hvc"` or `"smc"` |
//! | `/intc@DIST` | `arm,gic-v3`, distributor and one redistributor region, maintenance PPI |
//! | `/timer` | `arm,armv8-timer`, secure, non-secure, virtual and hypervisor PPIs |
//! | `/apb-pclk`, `/serial@BASE` | fixed 24 MHz clock and `arm,pl011` (only with a UART) |
//!
//! Interrupt specifiers are `<type number flags>` with `flags = 4`
//! (level-high) for PPIs and SPIs alike: the GICv3 binding has no CPU mask.
//!
//! Not described yet: a PCI host bridge (`pci-host-ecam-generic`), a GIC ITS,
//! virtio-mmio devices, the PMU, and more than one redistributor region.
//!
//! ```
//! use bulkhead_devicetree::{
//!     ArchTimer, GIC_MAINTENANCE_INTID, GicV3, GuestPlatform, GuestRange, Pl011, PsciConduit,
//! };
//!
//! let platform = GuestPlatform {
//!     memory: vec![GuestRange::new(0x4000_0000, 0x1000_0000)],
//!     cpu_count: 2,
//!     psci: PsciConduit::Hvc,
//!     gic: GicV3 {
//!         distributor: GuestRange::new(0x0800_0000, 0x1_0000),
//!         redistributors: GuestRange::new(0x080a_0000, 0xf6_0000),
//!         maintenance_intid: GIC_MAINTENANCE_INTID,
//!     },
//!     timer: ArchTimer::BSA,
//!     uart: Some(Pl011 { registers: GuestRange::new(0x0900_0000, 0x1000), intid: 33 }),
//!     bootargs: "console=ttyAMA0".into(),
//!     initrd: None,
//! };
//! let dtb = bulkhead_devicetree::build(&platform)?;
//! assert_eq!(dtb[..4], [0xd0, 0x0d, 0xfe, 0xed]);
//! # Ok::<(), bulkhead_devicetree::DeviceTreeError>(())
//! ```

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod emit;
mod error;
mod platform;
mod validate;

#[cfg(test)]
mod tests;

use alloc::vec::Vec;

pub use error::{DeviceTreeError, Interrupt, Region};
pub use platform::{
    ArchTimer, GIC_MAINTENANCE_INTID, GICR_FRAME_SIZE, GicV3, GuestPlatform, GuestRange, Pl011,
    PsciConduit,
};
pub use validate::validate;

/// Most vCPUs a partition's tree describes. vCPU `n` has `MPIDR_EL1.Aff0 = n`,
/// and without the GICv3 Range Selector (`ICC_CTLR_EL1.RSS`) an SGI reaches
/// only Aff0 0..=15 (`ICC_SGI1R_EL1.TargetList` has 16 bits): Linux could not
/// send IPIs to a 17th vCPU.
pub const MAX_CPUS: u32 = 16;

/// Longest command line, in bytes: Linux arm64 copies at most
/// `COMMAND_LINE_SIZE` (2048) bytes of `bootargs`, terminating NUL included.
pub const MAX_BOOTARGS_LEN: usize = 2047;

/// Builds the device tree blob for one partition.
///
/// # Errors
///
/// Whatever [`validate`] finds wrong with `platform`; [`DeviceTreeError::Writer`]
/// only if `vm-fdt` refuses something validation let through (a bug).
pub fn build(platform: &GuestPlatform) -> Result<Vec<u8>, DeviceTreeError> {
    validate(platform)?;
    emit::emit(platform)
}
