//! What the attackers aim at (`edu-dma` with device DMA, `gpu-attacker`
//! with global GTT entries, `gpu-ppgtt-attacker` with per-process ones): the
//! neighbour's pattern (`isolation-victim`), the hypervisor's memory, MMIO;
//! and the wait for the neighbour to start.

use crate::{pattern, time};

/// Host address of the neighbour's RAM (its configuration's `backing`, as
/// in `tests/configs/dma-edu.toml`).
#[cfg(target_arch = "aarch64")]
pub const VICTIM_HOST: u64 = 0x5000_0000;
/// Host address of the neighbour's RAM (its configuration's `backing`).
#[cfg(not(target_arch = "aarch64"))]
pub const VICTIM_HOST: u64 = 0x3000_0000;
/// Where the neighbour keeps its pattern.
pub const VICTIM_PATTERN: u64 = VICTIM_HOST + pattern::RAM_OFFSET;
/// An address inside the hypervisor's own memory on the test machines (see
/// `edu-dma`: its pool near the top of RAM, which the boot log lists). Only
/// addresses outside the attacker's own guest-physical RAM can name it: an
/// entry holds a guest-physical address, and guest 0x10_0000 on x86_64 is
/// the attacker's own RAM, whatever host page backs it.
#[cfg(target_arch = "aarch64")]
pub const HYPERVISOR_HOST: u64 = 0x7b00_0000;
/// An address inside the hypervisor's own memory (see the arm64 twin).
#[cfg(not(target_arch = "aarch64"))]
pub const HYPERVISOR_HOST: u64 = 0x3d00_0000;
/// MMIO: the PL011.
#[cfg(target_arch = "aarch64")]
pub const MMIO: u64 = 0x0900_0000;
/// MMIO: the I/O APIC.
#[cfg(not(target_arch = "aarch64"))]
pub const MMIO: u64 = 0xfec0_0000;

/// Lets the neighbour start and write its pattern before the attacks (the
/// arm64 victim waits 1500 ms before checking; x86_64 has no architectural
/// TSC frequency, and the x86 victim's window is counted in ticks too).
pub fn wait_for_victim() {
    #[cfg(target_arch = "aarch64")]
    time::delay_ms(400);
    #[cfg(target_arch = "x86_64")]
    time::wait_ticks(400_000_000);
}
