//! Checks on a [`GuestPlatform`] before anything is written.
//!
//! The first problem found is returned, in this order: vCPU count, command
//! line, interrupts, each range on its own (non-empty, inside 64 bits), RAM
//! present, overlaps between any two ranges, initrd inside RAM, and
//! redistributor capacity.

use alloc::vec::Vec;

use crate::error::{DeviceTreeError, Interrupt, Region};
use crate::platform::{GICR_FRAME_SIZE, GuestPlatform, GuestRange};
use crate::{MAX_BOOTARGS_LEN, MAX_CPUS};

/// INTIDs of private peripheral interrupts (Arm IHI 0069, §2.2, INTIDs).
const PPI_INTIDS: core::ops::RangeInclusive<u32> = 16..=31;
/// INTIDs of shared peripheral interrupts (Arm IHI 0069, §2.2, INTIDs).
const SPI_INTIDS: core::ops::RangeInclusive<u32> = 32..=1019;

/// Checks that [`crate::build`] can describe `platform` to Linux.
///
/// # Errors
///
/// The first problem found; see [`DeviceTreeError`] for the list.
pub fn validate(platform: &GuestPlatform) -> Result<(), DeviceTreeError> {
    if platform.cpu_count == 0 {
        return Err(DeviceTreeError::NoCpus);
    }
    if platform.cpu_count > MAX_CPUS {
        return Err(DeviceTreeError::TooManyCpus {
            cpu_count: platform.cpu_count,
        });
    }

    if let Some(offset) = platform.bootargs.bytes().position(|b| b == 0) {
        return Err(DeviceTreeError::BootargsContainsNul { offset });
    }
    if platform.bootargs.len() > MAX_BOOTARGS_LEN {
        return Err(DeviceTreeError::BootargsTooLong {
            len: platform.bootargs.len(),
        });
    }

    ppi_cell(Interrupt::GicMaintenance, platform.gic.maintenance_intid)?;
    let timer = &platform.timer;
    ppi_cell(Interrupt::SecurePhysTimer, timer.secure_phys_intid)?;
    ppi_cell(Interrupt::NonSecurePhysTimer, timer.nonsecure_phys_intid)?;
    ppi_cell(Interrupt::VirtualTimer, timer.virtual_intid)?;
    ppi_cell(Interrupt::HypTimer, timer.hyp_intid)?;
    if let Some(uart) = &platform.uart {
        spi_cell(Interrupt::Uart, uart.intid)?;
    }

    // Every range that takes guest-physical addresses; the initrd is not
    // among them because it lives inside RAM.
    let mut ranges: Vec<(Region, u64, u64)> =
        Vec::with_capacity(platform.memory.len().saturating_add(3));
    for (index, &range) in platform.memory.iter().enumerate() {
        ranges.push((
            Region::Memory(index),
            range.base,
            checked_end(Region::Memory(index), range)?,
        ));
    }
    let gic = &platform.gic;
    ranges.push((
        Region::GicDistributor,
        gic.distributor.base,
        checked_end(Region::GicDistributor, gic.distributor)?,
    ));
    ranges.push((
        Region::GicRedistributors,
        gic.redistributors.base,
        checked_end(Region::GicRedistributors, gic.redistributors)?,
    ));
    if let Some(uart) = &platform.uart {
        ranges.push((
            Region::Uart,
            uart.registers.base,
            checked_end(Region::Uart, uart.registers)?,
        ));
    }
    let initrd_end = match platform.initrd {
        Some(initrd) => Some(checked_end(Region::Initrd, initrd)?),
        None => None,
    };

    if platform.memory.is_empty() {
        return Err(DeviceTreeError::NoMemory);
    }

    // Sorted by base, two ranges overlap only if some neighbouring pair does.
    ranges.sort_by_key(|&(_, base, _)| base);
    for pair in ranges.windows(2) {
        let [(first, _, first_end), (second, second_base, _)] = pair else {
            continue;
        };
        if *second_base < *first_end {
            return Err(DeviceTreeError::Overlap {
                first: *first,
                second: *second,
                at: *second_base,
            });
        }
    }

    if let (Some(initrd), Some(initrd_end)) = (platform.initrd, initrd_end) {
        let inside = platform.memory.iter().any(|ram| {
            ram.end()
                .is_some_and(|ram_end| ram.base <= initrd.base && initrd_end <= ram_end)
        });
        if !inside {
            return Err(DeviceTreeError::InitrdOutsideMemory { initrd });
        }
    }

    let frame_count = gic.redistributors.size / GICR_FRAME_SIZE;
    if frame_count < u64::from(platform.cpu_count) {
        return Err(DeviceTreeError::RedistributorsTooSmall {
            cpu_count: platform.cpu_count,
            frame_count,
        });
    }
    Ok(())
}

/// One past the end of a non-empty range that fits in 64 bits.
fn checked_end(region: Region, range: GuestRange) -> Result<u64, DeviceTreeError> {
    if range.size == 0 {
        return Err(DeviceTreeError::EmptyRange {
            region,
            base: range.base,
        });
    }
    range
        .end()
        .ok_or(DeviceTreeError::RangeOverflows { region, range })
}

/// The device tree's PPI number (second cell of a GIC specifier) for a PPI
/// INTID: `intid - 16`.
pub(crate) fn ppi_cell(interrupt: Interrupt, intid: u32) -> Result<u32, DeviceTreeError> {
    if PPI_INTIDS.contains(&intid) {
        Ok(intid - PPI_INTIDS.start())
    } else {
        Err(DeviceTreeError::NotAPpi { interrupt, intid })
    }
}

/// The device tree's SPI number (second cell of a GIC specifier) for an SPI
/// INTID: `intid - 32`.
pub(crate) fn spi_cell(interrupt: Interrupt, intid: u32) -> Result<u32, DeviceTreeError> {
    if SPI_INTIDS.contains(&intid) {
        Ok(intid - SPI_INTIDS.start())
    } else {
        Err(DeviceTreeError::NotAnSpi { interrupt, intid })
    }
}
